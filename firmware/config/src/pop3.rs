//! `[pop3]`: the POP3 service (RFC 1939) and its limits.

use crate::validate::ConfigError;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Ports of the embedded default (see DESIGN.md "Services and ports").
pub const EMBEDDED_POP3_ADDR: &str = "127.0.0.1:1110";
pub const EMBEDDED_POP3S_ADDR: &str = "127.0.0.1:1995";

/// RFC 1939 3: the autologout timer "MUST be of at least 10 minutes".
pub const POP3_IDLE_TIMEOUT_SECS_MIN: u64 = 600;

/// POP3 sessions from one client network per kind of listener.
pub const POP3_MAX_CONNECTIONS_PER_CLIENT: usize = 50;
/// A whole command line, from its first byte.
pub const POP3_COMMAND_TIMEOUT_SECS: u64 = 60;
/// Connection to a successful login.
pub const POP3_LOGIN_TIMEOUT_SECS: u64 = 120;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Pop3 {
    /// POP3 listeners (port 110): STLS (RFC 2595), then USER/PASS or AUTH.
    pub pop3: Vec<SocketAddr>,
    /// POP3S listeners (port 995): TLS from the first byte (RFC 8314).
    pub pop3s: Vec<SocketAddr>,
    /// How long the server waits for the next command (RFC 1939 3: at
    /// least 10 minutes). On expiry the connection is closed and no message
    /// is deleted.
    pub idle_timeout_secs: u64,
    /// How long a whole command line may take to arrive, from its first byte.
    pub command_timeout_secs: u64,
    /// How long the AUTHORIZATION state may last altogether, from the
    /// connection to a successful login (STLS and AUTH included).
    pub login_timeout_secs: u64,
    /// POP3 sessions open at once on each kind of listener (`pop3` and
    /// `pop3s` each have a pool of this size); beyond it new ones get
    /// `-ERR [SYS/TEMP] too many connections` (inside TLS on `pop3s`).
    pub max_connections: usize,
    /// POP3 sessions from one client network (IPv4 address, IPv6 /64) on
    /// each kind of listener.
    pub max_connections_per_client: usize,
    /// Unknown, malformed or out-of-state commands before the session is closed.
    pub max_bad_commands: usize,
    /// Allow USER/PASS and AUTH on a connection without TLS. Off by default:
    /// credentials cross the wire only inside TLS (invariant 4).
    pub allow_plaintext_auth: bool,
}

impl Default for Pop3 {
    fn default() -> Self {
        Pop3 {
            pop3: vec![],
            pop3s: vec![],
            idle_timeout_secs: POP3_IDLE_TIMEOUT_SECS_MIN,
            command_timeout_secs: POP3_COMMAND_TIMEOUT_SECS,
            login_timeout_secs: POP3_LOGIN_TIMEOUT_SECS,
            max_connections: 500,
            max_connections_per_client: POP3_MAX_CONNECTIONS_PER_CLIENT,
            max_bad_commands: 10,
            allow_plaintext_auth: false,
        }
    }
}

impl Pop3 {
    /// The embedded default: loopback listeners on unprivileged ports.
    pub fn embedded_default() -> Pop3 {
        let addr = |s: &str| s.parse::<SocketAddr>().into_iter().collect::<Vec<_>>();
        Pop3 {
            pop3: addr(EMBEDDED_POP3_ADDR),
            pop3s: addr(EMBEDDED_POP3S_ADDR),
            ..Pop3::default()
        }
    }

    /// Checks the `[pop3]` limits. Addresses bound twice are caught by the
    /// check over every service's listeners (`Config::listeners`).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, why: &str| ConfigError::Invalid {
            key,
            why: why.to_string(),
        };
        if !(POP3_IDLE_TIMEOUT_SECS_MIN..=3600).contains(&self.idle_timeout_secs) {
            return Err(invalid(
                "pop3.idle_timeout_secs",
                "must be between 600 (RFC 1939 3: at least 10 minutes) and 3600",
            ));
        }
        if !(10..=3600).contains(&self.command_timeout_secs) {
            return Err(invalid(
                "pop3.command_timeout_secs",
                "must be between 10 and 3600",
            ));
        }
        if !(10..=3600).contains(&self.login_timeout_secs) {
            return Err(invalid(
                "pop3.login_timeout_secs",
                "must be between 10 and 3600",
            ));
        }
        if !(1..=100_000).contains(&self.max_connections) {
            return Err(invalid(
                "pop3.max_connections",
                "must be between 1 and 100000",
            ));
        }
        if !(1..=100_000).contains(&self.max_connections_per_client) {
            return Err(invalid(
                "pop3.max_connections_per_client",
                "must be between 1 and 100000",
            ));
        }
        if !(1..=1000).contains(&self.max_bad_commands) {
            return Err(invalid(
                "pop3.max_bad_commands",
                "must be between 1 and 1000",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    fn with_pop3(extra: &str) -> String {
        format!(
            r#"
[appliance]
hostname = "mx1.example.net"
primary_domain = "example.net"
data_dir = "/data/mxrack"

[smtp]
mx = ["0.0.0.0:25"]

[pop3]
pop3 = ["0.0.0.0:110"]
pop3s = ["0.0.0.0:995", "[::]:995"]
{extra}
"#
        )
    }

    #[test]
    fn pop3_listeners_and_defaults() {
        let c = Config::from_toml(&with_pop3("")).expect("valid");
        assert_eq!(c.pop3.pop3.len(), 1);
        assert_eq!(c.pop3.pop3s.len(), 2);
        assert_eq!(c.pop3.idle_timeout_secs, 600);
        assert!(!c.pop3.allow_plaintext_auth);
        let without = Config::from_toml(&with_pop3("").replace("[pop3]", "[unused]"));
        assert!(without.is_err(), "unknown sections are refused");
    }

    #[test]
    fn pop3_is_optional() {
        let text = with_pop3("").replace(
            "[pop3]\npop3 = [\"0.0.0.0:110\"]\npop3s = [\"0.0.0.0:995\", \"[::]:995\"]\n",
            "",
        );
        let c = Config::from_toml(&text).expect("valid without [pop3]");
        assert!(c.pop3.pop3.is_empty() && c.pop3.pop3s.is_empty());
    }

    #[test]
    fn pop3_errors_name_the_key() {
        for (line, key) in [
            ("idle_timeout_secs = 599", "pop3.idle_timeout_secs"),
            ("idle_timeout_secs = 3601", "pop3.idle_timeout_secs"),
            ("command_timeout_secs = 5", "pop3.command_timeout_secs"),
            ("login_timeout_secs = 5", "pop3.login_timeout_secs"),
            ("max_connections = 0", "pop3.max_connections"),
            (
                "max_connections_per_client = 0",
                "pop3.max_connections_per_client",
            ),
            ("max_bad_commands = 0", "pop3.max_bad_commands"),
            ("max_bad_comands = 3", "max_bad_comands"),
        ] {
            let e = Config::from_toml(&with_pop3(line))
                .expect_err("must be refused")
                .to_string();
            assert!(e.starts_with(key) || e.contains(key), "{line:?} gave {e}");
        }
    }

    #[test]
    fn the_embedded_default_has_loopback_pop3_listeners() {
        let c = Config::embedded_default("data".into());
        c.validate().expect("valid");
        assert_eq!(c.pop3.pop3, vec!["127.0.0.1:1110".parse().expect("addr")]);
        assert_eq!(c.pop3.pop3s, vec!["127.0.0.1:1995".parse().expect("addr")]);
        assert_eq!(Config::from_toml(&c.to_toml()).expect("round trip"), c);
    }

    #[test]
    fn an_address_on_two_listeners_of_any_services_is_refused() {
        let table = [
            // POP3 on an SMTP address.
            ("0.0.0.0:110", "0.0.0.0:25", "pop3.pop3"),
            // POP3 and POP3S on one address.
            (
                "0.0.0.0:995\", \"[::]:995",
                "0.0.0.0:110\", \"[::]:995",
                "pop3.pop3s",
            ),
        ];
        for (from, to, key) in table {
            let text = with_pop3("").replace(from, to);
            let e = Config::from_toml(&text).expect_err("refused").to_string();
            assert!(e.starts_with(key), "{to}: {e}");
        }
    }
}
