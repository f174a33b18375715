//! Network plumbing shared by every protocol service: a boxed stream type so
//! one session can be upgraded to TLS in place, a line-oriented connection
//! with hard limits, the TLS set-up (a given certificate or a self-signed one),
//! the per-address failed-login limiter and the shutdown signal.
//!
//! Nothing here knows a mail protocol; each protocol crate builds on it.

mod conn;
pub mod date;
mod limiter;
mod server;
mod shutdown;
mod tls;

pub use conn::{Conn, LineError};
pub use limiter::AuthLimiter;
pub use server::accept_loop;
pub use shutdown::{Shutdown, ShutdownSignal};
pub use tls::{TlsError, TlsSetup, load_or_create_tls};

use tokio::io::{AsyncRead, AsyncWrite};

/// Any byte stream a session can run over: TCP, TLS over TCP, or an in-memory
/// duplex in tests.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

pub type BoxStream = Box<dyn Stream>;
