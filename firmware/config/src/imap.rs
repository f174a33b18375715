//! `[imap]`: the IMAP service (RFC 3501 / RFC 9051) and its limits.

use crate::validate::ConfigError;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Ports of the embedded default (see DESIGN.md "Services and ports").
pub const EMBEDDED_IMAP_ADDR: &str = "127.0.0.1:1143";
pub const EMBEDDED_IMAPS_ADDR: &str = "127.0.0.1:1993";

/// RFC 9051 5.4: an authenticated session's inactivity timer "MUST be at
/// least 30 minutes".
pub const IMAP_IDLE_TIMEOUT_SECS_MIN: u64 = 1800;

/// IMAP sessions from one client network per kind of listener.
pub const IMAP_MAX_CONNECTIONS_PER_CLIENT: usize = 100;
/// A whole command with its literals, from its first byte: 50 MiB at about
/// 1 Mbit/s.
pub const IMAP_COMMAND_TIMEOUT_SECS: u64 = 600;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Imap {
    /// IMAP listeners (port 143): STARTTLS, LOGINDISABLED until TLS.
    pub imap: Vec<SocketAddr>,
    /// IMAPS listeners (port 993): TLS from the first byte (RFC 8314).
    pub imaps: Vec<SocketAddr>,
    /// Longest command line (without literals), CRLF included.
    pub max_line_bytes: usize,
    /// Largest literal (and so largest APPENDed message); a bigger one is
    /// refused before any of it is read.
    pub max_literal_bytes: u64,
    /// Inactivity timeout once logged in (RFC 9051 5.4: at least 30 minutes).
    pub idle_timeout_secs: u64,
    /// How long the not-authenticated state may last altogether, from the
    /// connection to a successful LOGIN/AUTHENTICATE (STARTTLS included).
    pub login_timeout_secs: u64,
    /// How long a whole command (its lines and literals) may take to
    /// arrive, from its first byte: an APPEND of `max_literal_bytes` must fit.
    pub command_timeout_secs: u64,
    /// IMAP sessions open at once on each kind of listener (`imap` and
    /// `imaps` each have a pool of this size); beyond it `* BYE [UNAVAILABLE]`.
    pub max_connections: usize,
    /// IMAP sessions from one client network (IPv4 address, IPv6 /64) on
    /// each kind of listener. Higher than the other services': a mail client
    /// keeps several connections (IDLE per folder) and an office shares one
    /// address.
    pub max_connections_per_client: usize,
    /// BAD commands before the session is closed.
    pub max_bad_commands: usize,
    /// Allow LOGIN/AUTHENTICATE without TLS (invariant 4: off by default).
    pub allow_plaintext_auth: bool,
}

impl Default for Imap {
    fn default() -> Self {
        Imap {
            imap: vec![],
            imaps: vec![],
            max_line_bytes: 64 * 1024,
            max_literal_bytes: 50 * 1024 * 1024,
            idle_timeout_secs: IMAP_IDLE_TIMEOUT_SECS_MIN,
            login_timeout_secs: 60,
            command_timeout_secs: IMAP_COMMAND_TIMEOUT_SECS,
            max_connections: 1000,
            max_connections_per_client: IMAP_MAX_CONNECTIONS_PER_CLIENT,
            max_bad_commands: 20,
            allow_plaintext_auth: false,
        }
    }
}

impl Imap {
    /// The embedded default: loopback listeners on unprivileged ports.
    pub fn embedded_default() -> Imap {
        let addr = |s: &str| s.parse::<SocketAddr>().into_iter().collect::<Vec<_>>();
        Imap {
            imap: addr(EMBEDDED_IMAP_ADDR),
            imaps: addr(EMBEDDED_IMAPS_ADDR),
            ..Imap::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, why: &str| ConfigError::Invalid {
            key,
            why: why.to_string(),
        };
        if !(1024..=1024 * 1024).contains(&self.max_line_bytes) {
            return Err(invalid(
                "imap.max_line_bytes",
                "must be between 1024 and 1048576",
            ));
        }
        if !(64 * 1024..=1 << 30).contains(&self.max_literal_bytes) {
            return Err(invalid(
                "imap.max_literal_bytes",
                "must be between 65536 and 1 GiB",
            ));
        }
        if !(IMAP_IDLE_TIMEOUT_SECS_MIN..=86_400).contains(&self.idle_timeout_secs) {
            return Err(invalid(
                "imap.idle_timeout_secs",
                "must be between 1800 (RFC 9051 5.4: at least 30 minutes) and 86400",
            ));
        }
        if !(10..=3600).contains(&self.login_timeout_secs) {
            return Err(invalid(
                "imap.login_timeout_secs",
                "must be between 10 and 3600",
            ));
        }
        if !(10..=7200).contains(&self.command_timeout_secs) {
            return Err(invalid(
                "imap.command_timeout_secs",
                "must be between 10 and 7200",
            ));
        }
        if !(1..=100_000).contains(&self.max_connections) {
            return Err(invalid(
                "imap.max_connections",
                "must be between 1 and 100000",
            ));
        }
        if !(1..=100_000).contains(&self.max_connections_per_client) {
            return Err(invalid(
                "imap.max_connections_per_client",
                "must be between 1 and 100000",
            ));
        }
        if !(1..=1000).contains(&self.max_bad_commands) {
            return Err(invalid(
                "imap.max_bad_commands",
                "must be between 1 and 1000",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    fn with_imap(extra: &str) -> String {
        format!(
            "[appliance]\nhostname = \"mx1.example.net\"\nprimary_domain = \"example.net\"\ndata_dir = \"/d\"\n\n[smtp]\nmx = [\"0.0.0.0:25\"]\n\n[imap]\nimap = [\"0.0.0.0:143\"]\nimaps = [\"0.0.0.0:993\"]\n{extra}\n"
        )
    }

    #[test]
    fn imap_listeners_and_errors_naming_the_key() {
        let c = Config::from_toml(&with_imap("")).expect("valid");
        assert_eq!(c.imap.imaps.len(), 1);
        assert_eq!(c.imap.idle_timeout_secs, 1800);
        for (line, key) in [
            ("idle_timeout_secs = 600", "imap.idle_timeout_secs"),
            ("max_literal_bytes = 10", "imap.max_literal_bytes"),
            ("max_connections = 0", "imap.max_connections"),
            (
                "max_connections_per_client = 0",
                "imap.max_connections_per_client",
            ),
            ("max_line_bytes = 10", "imap.max_line_bytes"),
            ("command_timeout_secs = 5", "imap.command_timeout_secs"),
        ] {
            let e = Config::from_toml(&with_imap(line))
                .expect_err("refused")
                .to_string();
            assert!(e.starts_with(key), "{line}: {e}");
        }
        let e = Config::from_toml(&with_imap("").replace("0.0.0.0:993", "0.0.0.0:143"))
            .expect_err("dup")
            .to_string();
        assert!(e.starts_with("imap.imaps"), "{e}");
    }
}
