//! Whole-configuration validation: run before anything is applied, so a
//! mistake (the seed's port-80 firewall error is the classic) is reported
//! with the key that holds it instead of surfacing as a dead service.

use crate::Config;
use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(String, String),
    #[error("TOML error: {message}{}", at.as_ref().map(|r| format!(" (at bytes {}..{})", r.start, r.end)).unwrap_or_default())]
    Parse {
        message: String,
        at: Option<std::ops::Range<usize>>,
    },
    #[error("{key}: {why}")]
    Invalid { key: &'static str, why: String },
}

pub(crate) fn invalid(key: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        why: why.into(),
    }
}

fn is_domain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl Config {
    /// Checks every rule that serde's types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let a = &self.appliance;
        if !is_domain_name(&a.hostname) {
            return Err(invalid(
                "appliance.hostname",
                format!("{:?} is not a host name", a.hostname),
            ));
        }
        if !is_domain_name(&a.primary_domain) || !a.primary_domain.contains('.') {
            return Err(invalid(
                "appliance.primary_domain",
                format!(
                    "{:?} is not a domain name with at least two labels",
                    a.primary_domain
                ),
            ));
        }
        // "$argon2id$v=19$m=..,t=..,p=..$SALT$HASH": six fields.
        if let Some(h) = &a.console_password_hash
            && (!h.starts_with("$argon2id$")
                || h.split('$').count() != 6
                || h.split('$').skip(1).any(str::is_empty))
        {
            return Err(invalid(
                "appliance.console_password_hash",
                "must be an Argon2id PHC string ($argon2id$...): see `mxrack admin hash`",
            ));
        }
        if a.data_dir.as_os_str().is_empty() {
            return Err(invalid("appliance.data_dir", "must not be empty"));
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => {
                return Err(invalid(
                    "tls.key",
                    "tls.cert is set, so tls.key must be set too",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "tls.cert",
                    "tls.key is set, so tls.cert must be set too",
                ));
            }
            _ => {}
        }
        let s = &self.smtp;
        if s.mx.is_empty() && s.submission.is_empty() && s.submissions.is_empty() {
            return Err(invalid(
                "smtp.mx",
                "no SMTP listener is configured (smtp.mx, smtp.submission, smtp.submissions)",
            ));
        }
        // Over every service's listeners, not only SMTP's.
        let mut seen = HashSet::new();
        for (key, addrs) in self.listeners() {
            for addr in addrs {
                if !seen.insert(*addr) {
                    return Err(invalid(
                        key,
                        format!("{addr} is configured for more than one listener"),
                    ));
                }
            }
        }
        if s.max_message_bytes < 64 * 1024 {
            return Err(invalid("smtp.max_message_bytes", "must be at least 65536"));
        }
        if s.max_message_bytes > 1 << 30 {
            return Err(invalid("smtp.max_message_bytes", "must be at most 1 GiB"));
        }
        if !(100..=10_000).contains(&s.max_recipients) {
            return Err(invalid(
                "smtp.max_recipients",
                "must be between 100 (RFC 5321 4.5.3.1.8) and 10000",
            ));
        }
        if !(512..=65_536).contains(&s.max_command_line_bytes) {
            return Err(invalid(
                "smtp.max_command_line_bytes",
                "must be between 512 (RFC 5321 4.5.3.1.4) and 65536",
            ));
        }
        if !(1000..=1_048_576).contains(&s.max_data_line_bytes) {
            return Err(invalid(
                "smtp.max_data_line_bytes",
                "must be between 1000 (RFC 5321 4.5.3.1.6) and 1048576",
            ));
        }
        if s.max_commands_per_transaction < s.max_recipients + 3 {
            return Err(invalid(
                "smtp.max_commands_per_transaction",
                format!(
                    "must leave room for MAIL, RCPT x{} and DATA",
                    s.max_recipients
                ),
            ));
        }
        if s.max_bad_commands == 0 {
            return Err(invalid("smtp.max_bad_commands", "must be at least 1"));
        }
        if !(1..=100_000).contains(&s.max_connections) {
            return Err(invalid(
                "smtp.max_connections",
                "must be between 1 and 100000",
            ));
        }
        if !(1..=100_000).contains(&s.max_connections_per_client) {
            return Err(invalid(
                "smtp.max_connections_per_client",
                "must be between 1 and 100000",
            ));
        }
        if !(10..=3600).contains(&s.idle_timeout_secs) {
            return Err(invalid(
                "smtp.idle_timeout_secs",
                "must be between 10 and 3600",
            ));
        }
        if !(10..=3600).contains(&s.command_timeout_secs) {
            return Err(invalid(
                "smtp.command_timeout_secs",
                "must be between 10 and 3600",
            ));
        }
        if !(10..=3600).contains(&s.envelope_timeout_secs) {
            return Err(invalid(
                "smtp.envelope_timeout_secs",
                "must be between 10 and 3600",
            ));
        }
        if !(10..=3600).contains(&s.login_timeout_secs) {
            return Err(invalid(
                "smtp.login_timeout_secs",
                "must be between 10 and 3600",
            ));
        }
        if !(10..=7200).contains(&s.data_timeout_secs) {
            return Err(invalid(
                "smtp.data_timeout_secs",
                "must be between 10 and 7200",
            ));
        }
        if s.shutdown_grace_secs > 600 {
            return Err(invalid("smtp.shutdown_grace_secs", "must be at most 600"));
        }
        let smtp_addrs: Vec<_> =
            s.mx.iter()
                .chain(&s.submission)
                .chain(&s.submissions)
                .copied()
                .collect();
        self.ldap.validate(&smtp_addrs)?;
        self.pop3.validate()?;
        self.auth.validate()?;
        self.relay.validate()?;
        self.dns.validate()?;
        if let Some(r) = &self.replica {
            r.validate()?;
        }
        self.mail_auth.validate(self.smtp.data_timeout_secs)?;
        self.imap.validate()?;
        self.forward.validate(is_domain_name)?;
        self.spam.validate()?;
        self.health.validate()?;
        self.web.validate()?;
        self.update.validate()?;
        let largest = self.smtp.max_message_bytes.max(self.imap.max_literal_bytes);
        self.memory.validate(largest)?;
        if !(64 * 1024..=1024 * 1024 * 1024).contains(&self.log.file_max_bytes) {
            return Err(invalid(
                "log.file_max_bytes",
                "between 65536 and 1073741824",
            ));
        }
        if !(2..=100).contains(&self.log.keep_files) {
            return Err(invalid("log.keep_files", "between 2 and 100"));
        }
        if tracing_filter_is_plausible(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                format!("{:?} is not a log filter", self.log.level),
            ));
        }
        Ok(())
    }
}

/// A cheap syntax check for the tracing filter; the real parse happens when
/// logging starts, this catches typos at `config check` time.
fn tracing_filter_is_plausible(filter: &str) -> Result<(), ()> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    if filter.trim().is_empty() {
        return Err(());
    }
    for directive in filter.split(',') {
        let level = directive.rsplit('=').next().unwrap_or("").trim();
        let bare = !directive.contains('=');
        let known_level = LEVELS.contains(&level.to_ascii_lowercase().as_str());
        if !(known_level || (bare && is_target(level))) {
            return Err(());
        }
    }
    Ok(())
}

fn is_target(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}
