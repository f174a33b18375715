//! The appliance configuration: one TOML file, parsed with unknown keys
//! rejected, then validated as a whole before anything is started.
//!
//! Every limit the services enforce lives here with a named default, so an
//! operator can see all of them in one place (`mxrack config show`).
//! Validation errors name the key (`smtp.max_recipients`) and say what is wrong.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

mod auth;
mod forward;
mod health;
mod imap;
mod ldap;
mod mailauth;
mod memory;
mod pop3;
mod relay;
mod replica;
mod update;
mod validate;
mod web;

pub use auth::Auth;
pub use forward::{
    FORWARD_STRICT_DESTINATIONS, FORWARD_THRESHOLD_CEILING, FORWARD_THRESHOLD_FLOOR, Forward,
    SPAM_TRUSTED_NETWORKS_MAX, Spam, SpamJoin, parse_network,
};
pub use health::{Health, PID_MAX_LIMIT, RAISABLE_SYSCTLS};
pub use imap::{
    EMBEDDED_IMAP_ADDR, EMBEDDED_IMAPS_ADDR, IMAP_COMMAND_TIMEOUT_SECS, IMAP_IDLE_TIMEOUT_SECS_MIN,
    IMAP_MAX_CONNECTIONS_PER_CLIENT, Imap,
};
pub use ldap::{EMBEDDED_LDAP_ADDR, EMBEDDED_LDAPS_ADDR, LDAP_MAX_CONNECTIONS_PER_CLIENT, Ldap};
pub use mailauth::{
    DNS_NEGATIVE_TTL_MAX_SECS, DNS_NEGATIVE_TTL_SECS, DNS_TIMEOUT_MS, Dns,
    MAIL_AUTH_CHECK_TIMEOUT_SECS, MAIL_AUTH_DKIM_SIGNATURES_MAX, MailAuth,
};
pub use memory::{MEMORY_CLIENT_DATA_BYTES, MEMORY_WAIT_SECS, Memory};
pub use pop3::{
    EMBEDDED_POP3_ADDR, EMBEDDED_POP3S_ADDR, POP3_COMMAND_TIMEOUT_SECS, POP3_IDLE_TIMEOUT_SECS_MIN,
    POP3_LOGIN_TIMEOUT_SECS, POP3_MAX_CONNECTIONS_PER_CLIENT, Pop3,
};
pub use relay::Relay;
pub use replica::{
    REPLICA_AUTO_PROMOTE_AFTER_SECS, REPLICA_PEER_WAIT_SECS, REPLICA_PORT, REPLICA_RESYNC_MAX_MIB,
    Replica, ReplicaNode, parse_cidr, same_network,
};
pub use update::{UPDATE_KEYS_DIR, UPDATE_TRIAL_SECS, UPDATE_TRIES, Update};
pub use validate::ConfigError;
pub use web::{EMBEDDED_HTTP_ADDR, EMBEDDED_HTTPS_ADDR, WEB_MAX_CONNECTIONS_PER_CLIENT, Web};

/// SMTP sessions from one client network per kind of listener (Postfix's
/// `smtpd_client_connection_count_limit` is 50 too).
pub const SMTP_MAX_CONNECTIONS_PER_CLIENT: usize = 50;
/// A command line is a few hundred bytes, sent in one segment by any real
/// client: a minute from its first byte is generous.
pub const SMTP_COMMAND_TIMEOUT_SECS: u64 = 60;
/// EHLO to DATA takes a real sender a few round trips.
pub const SMTP_ENVELOPE_TIMEOUT_SECS: u64 = 300;
/// Connection to successful AUTH on submission.
pub const SMTP_LOGIN_TIMEOUT_SECS: u64 = 120;

/// Ports of the embedded default (see DESIGN.md "Services and ports").
pub const EMBEDDED_MX_ADDR: &str = "127.0.0.1:2525";
pub const EMBEDDED_SUBMISSION_ADDR: &str = "127.0.0.1:2587";
pub const EMBEDDED_SUBMISSIONS_ADDR: &str = "127.0.0.1:2465";
/// Demo domain and mailbox created by the embedded default.
pub const DEMO_DOMAIN: &str = "example.net";
pub const DEMO_ACCOUNT: &str = "demo";
pub const DEMO_MAILBOX: &str = "demo@example.net";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub appliance: Appliance,
    #[serde(default)]
    pub tls: Tls,
    #[serde(default)]
    pub smtp: Smtp,
    /// The one login limiter of every service (budgets per network, account
    /// and pair; the delay of a failed attempt).
    #[serde(default)]
    pub auth: Auth,
    /// IMAP for the mailboxes' folders; no listener unless configured.
    #[serde(default)]
    pub imap: Imap,
    /// The LDAP address books; no listener unless configured.
    #[serde(default)]
    pub ldap: Ldap,
    /// POP3 for the mailboxes' INBOX; no listener unless configured.
    #[serde(default)]
    pub pop3: Pop3,
    /// Forwarded mail: discard thresholds per destination, complaint
    /// feedback and its adaptive policy, SRS, the forward transport.
    #[serde(default)]
    pub forward: Forward,
    /// The spam scorer (rules file).
    #[serde(default)]
    pub spam: Spam,
    /// Outbound delivery of the queue.
    #[serde(default)]
    pub relay: Relay,
    /// The one DNS resolver (relay MX lookups, mail authentication).
    #[serde(default)]
    pub dns: Dns,
    /// DKIM signing, ARC sealing, inbound SPF/DKIM/DMARC.
    #[serde(default)]
    pub mail_auth: MailAuth,
    /// The watch over disks, RAID arrays, kernel limits and space.
    #[serde(default)]
    pub health: Health,
    /// The status page and metrics over HTTPS; no listener unless configured.
    #[serde(default)]
    pub web: Web,
    /// The one budget for client data in flight, shared by all services.
    #[serde(default)]
    pub memory: Memory,
    #[serde(default)]
    pub log: Log,
    /// A/B firmware updates: trusted keys, trial boots, the ready deadline.
    #[serde(default)]
    pub update: Update,
    /// A replica pair (DRBD under /data); absent: a single appliance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<Replica>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Appliance {
    /// The name this appliance gives in its SMTP banner, EHLO and Received headers.
    pub hostname: String,
    /// The primary mail domain; the LDAP base DN derives from it.
    pub primary_domain: String,
    /// Where the store keeps its database and message files.
    pub data_dir: PathBuf,
    /// Create the demo account, domain and mailbox on first start.
    #[serde(default)]
    pub demo: bool,
    /// The console login's credential while the data volume is not
    /// mounted (a replica standby, a storage failure): an Argon2id PHC
    /// string from `mxrack admin hash`. Once /data is mounted the console
    /// takes the provider's `admin` password (the Manager's) instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_password_hash: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain. When both `cert` and `key` are absent, a
    /// self-signed certificate is generated into `DATA/tls/` on first start.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Smtp {
    /// Inbound MX listeners (port 25): mail for hosted domains only.
    pub mx: Vec<SocketAddr>,
    /// Submission listeners (port 587): STARTTLS, then AUTH.
    pub submission: Vec<SocketAddr>,
    /// Submissions listeners (port 465): implicit TLS (RFC 8314).
    pub submissions: Vec<SocketAddr>,
    /// Largest message accepted, advertised with SIZE (RFC 1870).
    pub max_message_bytes: u64,
    /// Recipients per transaction; RFC 5321 4.5.3.1.8 requires at least 100.
    pub max_recipients: usize,
    /// Longest command line, CRLF included; RFC 5321 4.5.3.1.4 sets 512 as the minimum.
    pub max_command_line_bytes: usize,
    /// DATA is read in pieces of at most this many bytes, CRLF included
    /// (RFC 5321 4.5.3.1.6 sets 1000 as the minimum line length); a longer
    /// line is stored as it is, never refused: only `max_message_bytes` applies.
    pub max_data_line_bytes: usize,
    /// Commands between MAIL FROM and the end of DATA.
    pub max_commands_per_transaction: usize,
    /// Unknown or malformed commands before the session is closed with 421.
    pub max_bad_commands: usize,
    /// SMTP sessions open at once on each kind of listener: `mx`,
    /// `submission` and `submissions` each have a pool of this size, so
    /// connections to the MX port never lock customers out of submission.
    /// Beyond it new ones get 421 4.7.0 (inside TLS on `submissions`).
    pub max_connections: usize,
    /// SMTP sessions open at once from one client network (an IPv4 address,
    /// an IPv6 /64) on each kind of listener; beyond it new ones get 421 4.7.0.
    pub max_connections_per_client: usize,
    /// How long the server waits for the first byte of the next command
    /// (RFC 5321 4.5.3.2.7: 5 minutes).
    pub idle_timeout_secs: u64,
    /// How long a whole command line may take to arrive, from its first
    /// byte (a client trickling bytes is cut here, whatever it sends).
    pub command_timeout_secs: u64,
    /// How long the commands before DATA may take altogether, from the
    /// greeting or the end of the previous message to the DATA command.
    pub envelope_timeout_secs: u64,
    /// On submission: how long a session may take from its connection to
    /// a successful AUTH (EHLO, STARTTLS, AUTH and its challenges included).
    pub login_timeout_secs: u64,
    /// How long the whole DATA phase may take, from the DATA command to the
    /// final dot.
    pub data_timeout_secs: u64,
    /// Free space the data file system must keep; below it SMTP answers 452.
    pub min_free_bytes: u64,
    /// Allow AUTH on a connection without TLS. Off by default: credentials
    /// cross the wire only inside TLS (invariant 4).
    pub allow_plaintext_auth: bool,
    /// How long open sessions get to finish after SIGTERM before they are cut.
    pub shutdown_grace_secs: u64,
}

impl Default for Smtp {
    fn default() -> Self {
        Smtp {
            mx: vec![],
            submission: vec![],
            submissions: vec![],
            max_message_bytes: 25 * 1024 * 1024,
            max_recipients: 100,
            max_command_line_bytes: 2048,
            max_data_line_bytes: 8192,
            max_commands_per_transaction: 200,
            max_bad_commands: 10,
            max_connections: 500,
            max_connections_per_client: SMTP_MAX_CONNECTIONS_PER_CLIENT,
            idle_timeout_secs: 300,
            command_timeout_secs: SMTP_COMMAND_TIMEOUT_SECS,
            envelope_timeout_secs: SMTP_ENVELOPE_TIMEOUT_SECS,
            login_timeout_secs: SMTP_LOGIN_TIMEOUT_SECS,
            data_timeout_secs: 600,
            min_free_bytes: 64 * 1024 * 1024,
            allow_plaintext_auth: false,
            shutdown_grace_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// A tracing filter: "info", "debug", "mxrack_smtp=debug,info".
    pub level: String,
    /// The persistent log (`<data_dir>/log/`, written by `mxrack logs
    /// collect` on the appliance): `mxrack.log` is rotated when it would
    /// pass this size.
    pub file_max_bytes: u64,
    /// Files kept, `mxrack.log` included: the folder holds at most
    /// keep_files x file_max_bytes.
    pub keep_files: u32,
}

/// 8 files of 8 MiB: 64 MiB of the data array at most.
pub const LOG_FILE_MAX_BYTES: u64 = 8 * 1024 * 1024;
pub const LOG_KEEP_FILES: u32 = 8;

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
            file_max_bytes: LOG_FILE_MAX_BYTES,
            keep_files: LOG_KEEP_FILES,
        }
    }
}

impl Config {
    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            message: e.message().to_string(),
            at: e.span(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read(path.display().to_string(), e.to_string()))?;
        Config::from_toml(&text)
    }

    /// The embedded default of `mxrack run` with no configuration: loopback
    /// only, unprivileged ports, a data folder, a self-signed certificate and
    /// a demo mailbox.
    pub fn embedded_default(data_dir: PathBuf) -> Config {
        let addr = |s: &str| s.parse::<SocketAddr>().into_iter().collect::<Vec<_>>();
        Config {
            appliance: Appliance {
                hostname: "localhost".into(),
                primary_domain: DEMO_DOMAIN.into(),
                data_dir,
                demo: true,
                console_password_hash: None,
            },
            tls: Tls::default(),
            auth: Auth::default(),
            smtp: Smtp {
                mx: addr(EMBEDDED_MX_ADDR),
                submission: addr(EMBEDDED_SUBMISSION_ADDR),
                submissions: addr(EMBEDDED_SUBMISSIONS_ADDR),
                ..Smtp::default()
            },
            imap: Imap::embedded_default(),
            ldap: Ldap::embedded_default(),
            pop3: Pop3::embedded_default(),
            forward: Forward::default(),
            spam: Spam::default(),
            relay: Relay {
                enabled: false,
                ..Relay::default()
            },
            health: Health::default(),
            web: Web::embedded_default(),
            dns: Dns::default(),
            mail_auth: MailAuth::default(),
            memory: Memory::default(),
            log: Log::default(),
            update: Update::default(),
            replica: None,
        }
    }

    /// Every listener list of every service, with the key that holds it. A
    /// new service adds its lists here, so the check that no address is
    /// configured for two listeners covers it.
    pub fn listeners(&self) -> Vec<(&'static str, &[SocketAddr])> {
        vec![
            ("smtp.mx", &self.smtp.mx),
            ("smtp.submission", &self.smtp.submission),
            ("smtp.submissions", &self.smtp.submissions),
            ("imap.imap", &self.imap.imap),
            ("imap.imaps", &self.imap.imaps),
            ("ldap.ldap", &self.ldap.ldap),
            ("ldap.ldaps", &self.ldap.ldaps),
            ("pop3.pop3", &self.pop3.pop3),
            ("pop3.pop3s", &self.pop3.pop3s),
            ("web.http", &self.web.http),
            ("web.https", &self.web.https),
        ]
    }

    /// The configuration as TOML, for `mxrack config show`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// The configuration as TOML for the Manager's read-only page: the
    /// smarthost password replaced, so it is not on a web page.
    pub fn to_toml_shown(&self) -> String {
        let mut c = self.clone();
        if c.relay.smarthost_password.is_some() {
            c.relay.smarthost_password = Some("(hidden)".into());
        }
        c.to_toml()
    }
}

#[cfg(test)]
mod tests;

/// A mailbox quota as people write it (the CLI and the Manager): bytes with
/// an optional K, M or G suffix (powers of 1024), or `none` to lift it.
pub fn parse_quota(text: &str) -> Result<Option<u64>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size"))?;
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(format!("{text:?}: the unit must be K, M or G")),
    };
    n.checked_mul(mult)
        .map(Some)
        .ok_or_else(|| format!("{text:?} is too large"))
}
