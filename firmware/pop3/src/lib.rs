//! POP3 for mxrack: RFC 1939 with CAPA and response codes (RFC 2449), STLS
//! (RFC 2595) and AUTH PLAIN (RFC 5034), on port 110 (STLS) and 995
//! (implicit TLS, RFC 8314). It serves each mailbox's INBOX.
//!
//! - `parser`: command lines to `Command`, pure.
//! - `sasl`: AUTH PLAIN decoding, pure.
//! - `reply`: every status line, byte-stuffing of multi-line responses, the
//!   cut of a message for TOP; pure.
//! - `lock`: the maildrop lock, one POP3 session per mailbox.
//! - `session`: one POP3 session over any `BoxStream`.
//! - `server`: the accept loop with its connection limit and panic containment.

pub mod lock;
pub mod parser;
pub mod reply;
pub mod sasl;
pub mod server;
pub mod session;

pub use lock::{MaildropLock, MaildropLocks};
pub use server::serve;
pub use session::{Mode, Pop3Service, run_session};
