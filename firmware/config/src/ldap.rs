//! `[ldap]`: the LDAP address-book service (issue 4) and its limits.

use crate::validate::ConfigError;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Ports of the embedded default (see DESIGN.md "Services and ports").
pub const EMBEDDED_LDAP_ADDR: &str = "127.0.0.1:3389";
pub const EMBEDDED_LDAPS_ADDR: &str = "127.0.0.1:3636";

/// Default of `ldap.max_book_bytes`: 64 MiB, 10,000 contacts of 6 KiB or
/// about 190 with a 250 KiB photo.
pub const LDAP_MAX_BOOK_BYTES: u64 = 64 << 20;

/// LDAP connections from one client network per kind of listener.
pub const LDAP_MAX_CONNECTIONS_PER_CLIENT: usize = 50;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Ldap {
    /// LDAP listeners (port 389): StartTLS, then bind.
    pub ldap: Vec<SocketAddr>,
    /// LDAPS listeners (port 636): TLS from the first byte.
    pub ldaps: Vec<SocketAddr>,
    /// Largest LDAP message read, in bytes. A contact with a 100 KiB
    /// jpegPhoto needs a little over 100 KiB.
    pub max_message_bytes: usize,
    /// Deepest nesting of and/or/not in a search filter.
    pub max_filter_depth: usize,
    /// Most terms in one and/or of a search filter, and in the whole filter.
    pub max_filter_terms: usize,
    /// Most entries one address book may hold; an add beyond it gets
    /// adminLimitExceeded (11).
    pub max_entries_per_book: usize,
    /// Largest an address book may grow, in bytes as stored (each entry's
    /// record, a binary value such as a jpegPhoto in base64, plus its key);
    /// a write past it gets adminLimitExceeded (11). It bounds every book:
    /// an account's book, which no mailbox quota covers, and a personal book
    /// of a mailbox without a quota. A mailbox's personal book also counts
    /// in the mailbox's quota, with its mail.
    pub max_book_bytes: u64,
    /// Most entries one search returns, whatever the client asks; past it the
    /// search ends with sizeLimitExceeded (4) after the entries up to it.
    pub max_search_entries: usize,
    /// Longest a search may run; past it the search ends with
    /// timeLimitExceeded (3) after the entries found so far.
    pub search_time_limit_secs: u64,
    /// LDAP connections open at once on each kind of listener (`ldap` and
    /// `ldaps` each have a pool of this size); beyond it a notice of
    /// disconnection with `busy` (inside TLS on `ldaps`).
    pub max_connections: usize,
    /// LDAP connections from one client network (IPv4 address, IPv6 /64)
    /// on each kind of listener.
    pub max_connections_per_client: usize,
    /// How long an idle connection is kept.
    pub idle_timeout_secs: u64,
    /// How long one LDAP message may take to arrive, from its first byte (a
    /// client trickling bytes is cut here, whatever it sends; as the other
    /// services' command deadlines).
    pub command_timeout_secs: u64,
    /// How long a successful bind is remembered, so that the same name and
    /// password bind again without a new Argon2 check (Thunderbird opens a
    /// connection, and binds, for every lookup). A changed password is never
    /// matched by a remembered one; failed binds are never remembered.
    /// 0 turns it off.
    pub bind_cache_secs: u64,
    /// Accept a bind with a password on a connection without TLS. Off by
    /// default: credentials cross the wire only inside TLS (invariant 4).
    pub allow_plaintext_bind: bool,
}

impl Default for Ldap {
    fn default() -> Self {
        Ldap {
            ldap: vec![],
            ldaps: vec![],
            max_message_bytes: 256 * 1024,
            max_filter_depth: 10,
            max_filter_terms: 64,
            max_entries_per_book: 10_000,
            max_book_bytes: LDAP_MAX_BOOK_BYTES,
            max_search_entries: 10_000,
            search_time_limit_secs: 10,
            max_connections: 500,
            max_connections_per_client: LDAP_MAX_CONNECTIONS_PER_CLIENT,
            idle_timeout_secs: 300,
            command_timeout_secs: 60,
            bind_cache_secs: 300,
            allow_plaintext_bind: false,
        }
    }
}

impl Ldap {
    /// The embedded default: loopback listeners on the unprivileged ports.
    pub fn embedded_default() -> Ldap {
        let addr = |s: &str| s.parse::<SocketAddr>().into_iter().collect::<Vec<_>>();
        Ldap {
            ldap: addr(EMBEDDED_LDAP_ADDR),
            ldaps: addr(EMBEDDED_LDAPS_ADDR),
            ..Ldap::default()
        }
    }

    /// Checks the `[ldap]` rules; `taken` are the addresses other services
    /// already listen on.
    pub(crate) fn validate(&self, taken: &[SocketAddr]) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, why: String| ConfigError::Invalid { key, why };
        let mut seen: Vec<SocketAddr> = taken.to_vec();
        for (key, addrs) in [("ldap.ldap", &self.ldap), ("ldap.ldaps", &self.ldaps)] {
            for addr in addrs {
                if seen.contains(addr) {
                    return Err(invalid(
                        key,
                        format!("{addr} is configured for more than one listener"),
                    ));
                }
                seen.push(*addr);
            }
        }
        if !(32 * 1024..=16 * 1024 * 1024).contains(&self.max_message_bytes) {
            return Err(invalid(
                "ldap.max_message_bytes",
                "must be between 32768 and 16777216".into(),
            ));
        }
        if !(1..=32).contains(&self.max_filter_depth) {
            return Err(invalid(
                "ldap.max_filter_depth",
                "must be between 1 and 32".into(),
            ));
        }
        if !(4..=4096).contains(&self.max_filter_terms) {
            return Err(invalid(
                "ldap.max_filter_terms",
                "must be between 4 and 4096".into(),
            ));
        }
        if !(1..=1_000_000).contains(&self.max_entries_per_book) {
            return Err(invalid(
                "ldap.max_entries_per_book",
                "must be between 1 and 1000000".into(),
            ));
        }
        if !(64 * 1024..=1 << 40).contains(&self.max_book_bytes) {
            return Err(invalid(
                "ldap.max_book_bytes",
                "must be between 65536 and 1099511627776".into(),
            ));
        }
        if !(1..=1_000_000).contains(&self.max_search_entries) {
            return Err(invalid(
                "ldap.max_search_entries",
                "must be between 1 and 1000000".into(),
            ));
        }
        if !(1..=600).contains(&self.search_time_limit_secs) {
            return Err(invalid(
                "ldap.search_time_limit_secs",
                "must be between 1 and 600".into(),
            ));
        }
        if !(1..=100_000).contains(&self.max_connections) {
            return Err(invalid(
                "ldap.max_connections",
                "must be between 1 and 100000".into(),
            ));
        }
        if !(1..=100_000).contains(&self.max_connections_per_client) {
            return Err(invalid(
                "ldap.max_connections_per_client",
                "must be between 1 and 100000".into(),
            ));
        }
        if !(10..=3600).contains(&self.idle_timeout_secs) {
            return Err(invalid(
                "ldap.idle_timeout_secs",
                "must be between 10 and 3600".into(),
            ));
        }
        if !(1..=3600).contains(&self.command_timeout_secs) {
            return Err(invalid(
                "ldap.command_timeout_secs",
                "must be between 1 and 3600".into(),
            ));
        }
        if self.bind_cache_secs > 3600 {
            return Err(invalid(
                "ldap.bind_cache_secs",
                "must be at most 3600".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    fn with_ldap(extra: &str) -> String {
        format!(
            r#"
[appliance]
hostname = "mx1.example.net"
primary_domain = "example.net"
data_dir = "/data/mxrack"

[smtp]
mx = ["0.0.0.0:25"]

[ldap]
ldap = ["0.0.0.0:389"]
ldaps = ["0.0.0.0:636"]
{extra}
"#
        )
    }

    #[test]
    fn ldap_listeners_and_defaults() {
        let c = Config::from_toml(&with_ldap("")).expect("valid");
        assert_eq!(c.ldap.ldap.len(), 1);
        assert_eq!(c.ldap.ldaps.len(), 1);
        assert!(!c.ldap.allow_plaintext_bind);
        assert!(
            c.ldap.max_message_bytes > 100 * 1024,
            "a 100 KiB photo fits"
        );
    }

    #[test]
    fn ldap_errors_name_the_key() {
        for (line, key) in [
            ("max_message_bytes = 1000", "ldap.max_message_bytes"),
            ("max_filter_depth = 0", "ldap.max_filter_depth"),
            ("max_filter_terms = 1", "ldap.max_filter_terms"),
            ("max_entries_per_book = 0", "ldap.max_entries_per_book"),
            ("max_book_bytes = 1000", "ldap.max_book_bytes"),
            ("search_time_limit_secs = 0", "ldap.search_time_limit_secs"),
            ("max_connections = 0", "ldap.max_connections"),
            (
                "max_connections_per_client = 0",
                "ldap.max_connections_per_client",
            ),
            ("bind_cache_secs = 86400", "ldap.bind_cache_secs"),
            ("max_filter_dept = 3", "max_filter_dept"),
        ] {
            let e = Config::from_toml(&with_ldap(line))
                .expect_err("must be refused")
                .to_string();
            assert!(e.contains(key), "{line:?} gave {e}");
        }
    }

    #[test]
    fn an_ldap_listener_on_an_smtp_address_is_refused() {
        let text = with_ldap("").replace("0.0.0.0:389", "0.0.0.0:25");
        let e = Config::from_toml(&text).expect_err("refused").to_string();
        assert!(e.starts_with("ldap.ldap"), "{e}");
    }
}
