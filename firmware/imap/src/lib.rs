//! IMAP4rev1 (RFC 3501) with the IMAP4rev2 (RFC 9051) behaviour clients
//! expect, over the mxrack store.

pub mod collate;
pub mod fetch;
pub mod mutf7;
pub mod nul;
pub mod parser;
pub mod response;
pub mod search;
pub mod sequence;
pub mod server;
pub mod session;
pub mod sort;
pub mod thread;

pub use server::serve;
pub use session::{ImapService, Mode, run_session};
