//! `[relay]`: outbound delivery of the queue (customers' submitted mail,
//! forwarded copies, bounces): routes, smarthost, retries and limits.

use crate::validate::ConfigError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Relay {
    /// Deliver the queue. Off in the embedded default, so a demo on a
    /// laptop never sends mail to the Internet: it waits in the queue.
    pub enabled: bool,
    /// Next hop per destination domain, "host:port" (tests point these at a
    /// sink on 127.0.0.1); checked before the smarthost and MX records.
    pub routes: BTreeMap<String, String>,
    /// Next hop for every other domain, "host:port"; without it, MX lookup.
    pub smarthost: Option<String>,
    /// Credentials for the smarthost (AUTH PLAIN or LOGIN, RFC 4954), given
    /// only inside TLS: a smarthost without STARTTLS gets no mail.
    pub smarthost_username: Option<String>,
    pub smarthost_password: Option<String>,
    /// Source address and EHLO name of customers' outbound mail.
    pub source_address: Option<IpAddr>,
    pub ehlo: Option<String>,
    /// Only deliver over TLS (defer when the server offers none).
    pub require_tls: bool,
    /// Apply destination domains' MTA-STS policies (RFC 8461) to MX
    /// delivery: in enforce mode only the MX hosts a policy names, over TLS
    /// with a certificate valid for their names, else the mail waits.
    pub mta_sts: bool,
    /// Apply DANE (RFC 7672) to MX delivery: an MX host with TLSA records
    /// that DNSSEC proves gets mail only over TLS those records
    /// authenticate. Needs DNS servers that pass DNSSEC records on (the
    /// relay checks the root zone's signatures itself, every 5 minutes,
    /// and goes on without DANE, logged, when they do not). Off by
    /// default, as in Postfix: the validator is hickory's 0.26 alpha,
    /// screened for the gaps we know (relay/src/dnssec.rs) but not proved
    /// against the Internet's signed zones.
    pub dane: bool,
    /// PEM certificates trusted besides Mozilla's roots when a certificate
    /// is verified (MTA-STS policy and MX hosts): a private CA.
    pub tls_trust_file: Option<std::path::PathBuf>,
    /// How often the queue is looked at without being woken.
    pub queue_interval_secs: u64,
    /// First retry after this; doubles per attempt up to `retry_max_secs`.
    pub retry_base_secs: u64,
    pub retry_max_secs: u64,
    /// A message still undelivered after this bounces (Postfix: 5 days).
    pub max_age_secs: u64,
    /// Sessions at once per destination (route, smarthost or MX host set),
    /// and over all (Postfix: default_destination_concurrency_limit 20,
    /// default_process_limit 100).
    pub per_destination_concurrency: usize,
    pub total_concurrency: usize,
    /// How long an idle session waits for the next message to its
    /// destination before it is closed (Postfix:
    /// smtp_connection_cache_time_limit, 2 s); 0: one message per session.
    pub connection_cache_secs: u64,
    pub connect_timeout_secs: u64,
    /// Per SMTP command (RFC 5321 4.5.3.2 suggests minutes).
    pub command_timeout_secs: u64,
    pub data_timeout_secs: u64,
}

impl Default for Relay {
    fn default() -> Self {
        Relay {
            enabled: true,
            routes: BTreeMap::new(),
            smarthost: None,
            smarthost_username: None,
            smarthost_password: None,
            source_address: None,
            ehlo: None,
            require_tls: false,
            mta_sts: true,
            dane: false,
            tls_trust_file: None,
            queue_interval_secs: 30,
            retry_base_secs: 300,
            retry_max_secs: 4 * 3600,
            max_age_secs: 5 * 86_400,
            per_destination_concurrency: 20,
            total_concurrency: 100,
            connection_cache_secs: 2,
            connect_timeout_secs: 30,
            command_timeout_secs: 300,
            data_timeout_secs: 600,
        }
    }
}

/// Longest smarthost user name or password (RFC 4616 2: 255 octets).
const CREDENTIAL_BYTES_MAX: usize = 255;
/// Longest idle time of a cached session: past a minute a server has
/// usually closed it (RFC 5321 4.5.3.2.7 lets it after 5 minutes).
const CONNECTION_CACHE_SECS_MAX: u64 = 60;

fn hop_ok(hop: &str) -> bool {
    match hop.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

impl Relay {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, why: String| ConfigError::Invalid { key, why };
        for (domain, hop) in &self.routes {
            if !hop_ok(hop) {
                return Err(invalid(
                    "relay.routes",
                    format!("{domain} = {hop:?}: expected \"host:port\""),
                ));
            }
        }
        if let Some(h) = &self.smarthost
            && !hop_ok(h)
        {
            return Err(invalid(
                "relay.smarthost",
                format!("{h:?}: expected \"host:port\""),
            ));
        }
        match (&self.smarthost_username, &self.smarthost_password) {
            (None, None) => {}
            (Some(u), Some(p)) => {
                if self.smarthost.is_none() {
                    return Err(invalid(
                        "relay.smarthost_username",
                        "credentials need relay.smarthost".into(),
                    ));
                }
                // RFC 4616 2: the authentication identity and password are
                // 1 to 255 octets, NUL-free; CR and LF would break the line.
                for (key, v) in [
                    ("relay.smarthost_username", u),
                    ("relay.smarthost_password", p),
                ] {
                    if v.is_empty()
                        || v.len() > CREDENTIAL_BYTES_MAX
                        || v.contains(['\0', '\r', '\n'])
                    {
                        return Err(invalid(
                            key,
                            format!("1 to {CREDENTIAL_BYTES_MAX} bytes, no NUL, CR or LF"),
                        ));
                    }
                }
            }
            _ => {
                return Err(invalid(
                    "relay.smarthost_username",
                    "relay.smarthost_username and relay.smarthost_password go together".into(),
                ));
            }
        }
        if self.connection_cache_secs > CONNECTION_CACHE_SECS_MAX {
            return Err(invalid(
                "relay.connection_cache_secs",
                format!("must be at most {CONNECTION_CACHE_SECS_MAX}"),
            ));
        }
        if !(1..=86_400).contains(&self.queue_interval_secs) {
            return Err(invalid(
                "relay.queue_interval_secs",
                "must be between 1 and 86400".into(),
            ));
        }
        if self.retry_base_secs == 0 || self.retry_base_secs > self.retry_max_secs {
            return Err(invalid(
                "relay.retry_base_secs",
                "must be at least 1 and at most relay.retry_max_secs".into(),
            ));
        }
        if !(60..=30 * 86_400).contains(&self.max_age_secs) {
            return Err(invalid(
                "relay.max_age_secs",
                "must be between 60 and 30 days".into(),
            ));
        }
        if !(1..=1000).contains(&self.per_destination_concurrency) {
            return Err(invalid(
                "relay.per_destination_concurrency",
                "must be between 1 and 1000".into(),
            ));
        }
        if self.total_concurrency < self.per_destination_concurrency
            || self.total_concurrency > 10_000
        {
            return Err(invalid(
                "relay.total_concurrency",
                "must be at least relay.per_destination_concurrency and at most 10000".into(),
            ));
        }
        for (key, v) in [
            ("relay.connect_timeout_secs", self.connect_timeout_secs),
            ("relay.command_timeout_secs", self.command_timeout_secs),
            ("relay.data_timeout_secs", self.data_timeout_secs),
        ] {
            if !(1..=3600).contains(&v) {
                return Err(invalid(key, "must be between 1 and 3600".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    fn with(extra: &str) -> String {
        format!(
            "[appliance]\nhostname = \"mx1.example.net\"\nprimary_domain = \"example.net\"\ndata_dir = \"/d\"\n\n[smtp]\nmx = [\"0.0.0.0:25\"]\n\n[relay]\n{extra}\n"
        )
    }

    #[test]
    fn routes_and_errors_naming_the_key() {
        let c = Config::from_toml(&with(
            "smarthost = \"127.0.0.1:2626\"\nroutes = { \"hotmail.com\" = \"127.0.0.1:2727\" }",
        ))
        .expect("valid");
        assert_eq!(c.relay.routes.len(), 1);
        for (line, key) in [
            ("smarthost = \"nohost\"", "relay.smarthost"),
            ("routes = { \"a.example\" = \"x:0\" }", "relay.routes"),
            ("retry_base_secs = 0", "relay.retry_base_secs"),
            ("max_age_secs = 1", "relay.max_age_secs"),
            ("total_concurrency = 1", "relay.total_concurrency"),
            ("connection_cache_secs = 61", "relay.connection_cache_secs"),
            ("smarthost_username = \"u\"", "relay.smarthost_username"),
            (
                "smarthost_username = \"u\"\nsmarthost_password = \"p\"",
                "relay.smarthost_username",
            ),
            (
                "smarthost = \"h:25\"\nsmarthost_username = \"u\"\nsmarthost_password = \"a\\r\\nb\"",
                "relay.smarthost_password",
            ),
        ] {
            let e = Config::from_toml(&with(line))
                .expect_err("refused")
                .to_string();
            assert!(e.starts_with(key), "{line}: {e}");
        }
    }
}
