//! mxrack-mailauth: mail authentication with Stalwart's mail-auth (issue 16).
//!
//! * [`keys`]: DKIM keys per domain under `DATA/dkim/` and the TXT record
//!   to publish (`mxrack dkim create|show|list`).
//! * [`outbound`]: the relay's signing hook: DKIM-Signature on mail that
//!   leaves, plus an ARC set (RFC 8617) on forwarded copies, made when the
//!   copy is sent (ARCHITECTURE.md says why).
//! * [`inbound`]: SPF, DKIM and DMARC of mail arriving at the MX, one
//!   Authentication-Results header (RFC 8601) and the marks the spam
//!   scorer counts (`DMARC_REJECT`, `DMARC_QUARANTINE`), under a deadline.
//! * [`dns`]: the one hickory resolver (`[dns]`), shared with the relay.

pub mod dns;
pub mod inbound;
pub mod keys;
pub mod outbound;
#[cfg(test)]
mod testutil;

pub use MailAuthError as Error;
pub use inbound::{Inbound, Verdict};
pub use keys::{Algorithm, DkimKey, KeyStore};
pub use mail_auth::hickory_resolver;
pub use outbound::Signer;

#[derive(Debug, thiserror::Error)]
pub enum MailAuthError {
    /// Bad input from the operator (domain, selector, existing key).
    #[error("{0}")]
    Invalid(String),
    /// A key that cannot be made, read or used.
    #[error("DKIM key: {0}")]
    Key(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The organizational domain (RFC 7489 3.2) by the Public Suffix List.
pub fn organizational_domain(domain: &str) -> &str {
    psl::domain_str(domain).unwrap_or(domain)
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
