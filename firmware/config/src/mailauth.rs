//! `[dns]`: the one resolver (relay MX lookups and mail authentication);
//! `[mail_auth]`: DKIM signing, ARC sealing of forwarded copies, and the
//! SPF/DKIM/DMARC checks of inbound mail (issue 16).

use crate::validate::{ConfigError, invalid};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Answers a DNS server gets to give before the next is asked.
pub const DNS_TIMEOUT_MS: u64 = 3_000;
/// How long a "no such record" answer without an SOA (so without a
/// negative TTL of its own, RFC 2308 5) is remembered by the inbound
/// checks' record cache; one with an SOA is kept for its own TTL, at most
/// [`DNS_NEGATIVE_TTL_MAX_SECS`].
pub const DNS_NEGATIVE_TTL_SECS: u64 = 60;
/// The longest a negative answer is remembered, whatever its SOA says
/// (RFC 2308 5: 1 to 3 hours are usual maxima).
pub const DNS_NEGATIVE_TTL_MAX_SECS: u64 = 3_600;
/// Everything the inbound checks may take for one message (SPF, DKIM and
/// DMARC lookups together); then the results still missing are temperror.
pub const MAIL_AUTH_CHECK_TIMEOUT_SECS: u64 = 10;
/// DKIM signatures verified per message (RFC 6376 6.1: a verifier MAY
/// limit them); later ones are reported as not checked.
pub const MAIL_AUTH_DKIM_SIGNATURES_MAX: usize = 5;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    /// Recursive resolvers to ask, "ip:port"; empty: the system's
    /// (/etc/resolv.conf). Tests point this at a server on 127.0.0.1.
    pub servers: Vec<SocketAddr>,
    /// Per query and server.
    pub timeout_ms: u64,
    /// Tries per query and server.
    pub attempts: usize,
    /// See [`DNS_NEGATIVE_TTL_SECS`]; 0 turns remembering such answers off.
    pub negative_ttl_secs: u64,
    /// DNSSEC trust anchors (DNSKEY records, one a line) for DANE's
    /// validating lookups instead of the root zone's built-in keys: a
    /// private signed root in tests, or an island of trust.
    pub trust_anchor_file: Option<std::path::PathBuf>,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            servers: Vec::new(),
            timeout_ms: DNS_TIMEOUT_MS,
            attempts: 2,
            negative_ttl_secs: DNS_NEGATIVE_TTL_SECS,
            trust_anchor_file: None,
        }
    }
}

impl Dns {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.servers.len() > 8 {
            return Err(invalid("dns.servers", "at most 8 servers"));
        }
        if !(100..=30_000).contains(&self.timeout_ms) {
            return Err(invalid("dns.timeout_ms", "must be between 100 and 30000"));
        }
        if !(1..=5).contains(&self.attempts) {
            return Err(invalid("dns.attempts", "must be between 1 and 5"));
        }
        if self.negative_ttl_secs > DNS_NEGATIVE_TTL_MAX_SECS {
            return Err(invalid(
                "dns.negative_ttl_secs",
                "must be at most 3600 (RFC 2308 5)",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MailAuth {
    /// Check SPF, DKIM and DMARC on mail arriving at the MX and add an
    /// Authentication-Results header (RFC 8601).
    pub verify_inbound: bool,
    /// DKIM-sign mail leaving through the relay with the key of its domain
    /// (`mxrack dkim create`), and ARC-seal forwarded copies.
    pub sign_outbound: bool,
    /// The authserv-id of Authentication-Results and ARC-Authentication-
    /// Results; default: `appliance.hostname`.
    pub authserv_id: Option<String>,
    /// See [`MAIL_AUTH_CHECK_TIMEOUT_SECS`].
    pub check_timeout_secs: u64,
    /// See [`MAIL_AUTH_DKIM_SIGNATURES_MAX`].
    pub dkim_signatures_max: usize,
}

impl Default for MailAuth {
    fn default() -> Self {
        MailAuth {
            verify_inbound: true,
            sign_outbound: true,
            authserv_id: None,
            check_timeout_secs: MAIL_AUTH_CHECK_TIMEOUT_SECS,
            dkim_signatures_max: MAIL_AUTH_DKIM_SIGNATURES_MAX,
        }
    }
}

impl MailAuth {
    pub(crate) fn validate(&self, data_timeout_secs: u64) -> Result<(), ConfigError> {
        // The checks run inside the DATA phase: they must leave it time.
        if self.check_timeout_secs == 0 || self.check_timeout_secs >= data_timeout_secs {
            return Err(invalid(
                "mail_auth.check_timeout_secs",
                "must be at least 1 and below smtp.data_timeout_secs",
            ));
        }
        if !(1..=20).contains(&self.dkim_signatures_max) {
            return Err(invalid(
                "mail_auth.dkim_signatures_max",
                "must be between 1 and 20",
            ));
        }
        if let Some(id) = &self.authserv_id
            && (id.is_empty()
                || id.len() > 253
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b)))
        {
            return Err(invalid(
                "mail_auth.authserv_id",
                "must be a host name (letters, digits, '.', '-', '_')",
            ));
        }
        Ok(())
    }
}
