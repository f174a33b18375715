//! SMTP for mxrack: the MX (RFC 5321), submission with STARTTLS (RFC 6409,
//! RFC 3207) and submissions with implicit TLS (RFC 8314).
//!
//! - `parser`: command lines to `Command`, pure.
//! - `data`: the DATA phase (dot-unstuffing, bare CR/LF, size), pure.
//! - `incoming`: the message streamed to its file, with the prefix kept for
//!   the scorer and the forwarding rules.
//! - `sasl`: AUTH PLAIN/LOGIN decoding, pure.
//! - `reply`: every reply the server sends, and errors mapped to replies.
//! - `session`: one SMTP session over any `BoxStream`.
//! - `server`: the accept loop with its connection limit and panic containment.

pub mod data;
pub mod forwarding;
pub mod incoming;
pub mod parser;
pub mod reply;
pub use mxrack_net::sasl;
pub mod server;
pub mod session;

pub use server::serve;
pub use session::{Mode, SmtpService, run_session};
