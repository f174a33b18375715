//! Network plumbing shared by every protocol service: a boxed stream type so
//! one session can be upgraded to TLS in place, a line-oriented connection
//! with hard limits, the TLS set-up (a given certificate or a self-signed one),
//! the data folder's modes and the shutdown signal. Logins are checked and
//! limited by `mxrack-auth`.
//!
//! Nothing here knows a mail protocol; each protocol crate builds on it.

pub mod budget;
mod conn;
pub mod date;
pub mod perms;
pub mod sasl;
mod server;
mod shutdown;
mod tls;

pub use conn::{Conn, Deadlines, LineError};
pub use server::{
    Admission, Pool, REFUSAL_TIMEOUT_SECS, REFUSALS_AT_ONCE_MAX, Refusal, Refused, accept_loop,
    client_network,
};
pub use shutdown::{Shutdown, ShutdownSignal};
pub use tls::{TLS_HANDSHAKE_TIMEOUT_SECS, TlsError, TlsSetup, accept_tls, load_or_create_tls};

use tokio::io::{AsyncRead, AsyncWrite};

/// Any byte stream a session can run over: TCP, TLS over TCP, or an in-memory
/// duplex in tests.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

pub type BoxStream = Box<dyn Stream>;

/// Writes `bytes` to `path` atomically and durably: a temporary file,
/// fsync, rename, fsync of the folder. After a power cut the file is either
/// absent or whole, never empty (the appliance's own small state files:
/// certificate, demo password, SRS secret).
pub fn write_durably(path: &std::path::Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}
