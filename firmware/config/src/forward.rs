//! `[forward]`: forwarded mail: the discard threshold per destination
//! domain, the adaptive complaint policy that moves it, the feedback
//! address for complaint (ARF) reports, SRS and the forward transport.
//! `[spam]`: the spam scorer's rules file.
//!
//! Defaults follow the seed: forwards scoring 6.0 or more are discarded
//! (2006-03-10), 1.0 or more to Hotmail and MSN (2006-09-27); thresholds move
//! with complaint rates, within bounds.

use crate::validate::ConfigError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

/// Destinations that start at 1.0 (the seed's Hotmail/MSN entry, with
/// Microsoft's other consumer domains).
pub const FORWARD_STRICT_DESTINATIONS: [&str; 4] =
    ["hotmail.com", "msn.com", "live.com", "outlook.com"];

/// Default and range of `forward.discard_keep_days`.
pub const FORWARD_DISCARD_KEEP_DAYS_DEFAULT: u32 = 14;
pub const FORWARD_DISCARD_KEEP_DAYS_MAX: u32 = 365;

/// Lowest and highest threshold a configuration may name at all.
pub const FORWARD_THRESHOLD_FLOOR: f32 = -10.0;
pub const FORWARD_THRESHOLD_CEILING: f32 = 100.0;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Forward {
    /// Discard threshold for destinations not in `thresholds`: a forwarded
    /// copy scoring this or more is discarded.
    pub default_threshold: f32,
    /// Initial threshold per destination domain (a key also covers its
    /// subdomains). The adaptive policy moves it from there.
    pub thresholds: BTreeMap<String, f32>,
    /// Bounds the adaptive policy keeps every threshold within. A
    /// destination that never sent a complaint is not raised above its
    /// initial threshold, whatever `max_threshold` says.
    pub min_threshold: f32,
    pub max_threshold: f32,
    /// Per-destination bounds `[min, max]`, overriding the two above.
    pub bounds: BTreeMap<String, [f32; 2]>,
    /// Complaints per forwarded copy the policy aims at (0.001 = 0.1%).
    /// Above it the threshold goes down by `step`; at half of it or less
    /// (with at least `min_forwards` copies as evidence) it goes back up.
    pub target_complaint_rate: f64,
    /// Days of counters the complaint rate is measured over.
    pub window_days: u32,
    /// How far one evaluation moves a threshold.
    pub step: f32,
    /// Forwards below which a rate is not trusted: complaints are divided
    /// by at least this many, and a threshold is raised only with this many
    /// forwards measured since its last change.
    pub min_forwards: u64,
    /// Address on the appliance that receives complaint (ARF, RFC 5965)
    /// reports, e.g. `abuse-feedback@example.net`; None: no feedback loop.
    pub feedback_address: Option<String>,
    /// Secret for SRS addresses of forwarded mail (at least 16 bytes when
    /// set; required once forwarding is used).
    pub srs_secret: String,
    /// Domain of SRS addresses; default: `appliance.primary_domain`.
    pub srs_domain: Option<String>,
    /// Source address of the forward transport (the seed's forwarding-only
    /// servers); default: the system's choice.
    pub source_address: Option<IpAddr>,
    /// EHLO name of the forward transport; default: `appliance.hostname`.
    pub ehlo: Option<String>,
    /// Days a forwarded copy the gate discards is kept, held in the queue
    /// (`mxrack forward held`, `mxrack queue release ID`), before it is
    /// removed: nothing the gate discards is lost unaccounted for.
    pub discard_keep_days: u32,
}

impl Default for Forward {
    fn default() -> Self {
        Forward {
            default_threshold: 6.0,
            thresholds: FORWARD_STRICT_DESTINATIONS
                .iter()
                .map(|d| (d.to_string(), 1.0))
                .collect(),
            min_threshold: 0.0,
            max_threshold: 10.0,
            bounds: BTreeMap::new(),
            target_complaint_rate: 0.001,
            window_days: 7,
            step: 0.5,
            min_forwards: 20,
            feedback_address: None,
            srs_secret: String::new(),
            srs_domain: None,
            source_address: None,
            ehlo: None,
            discard_keep_days: FORWARD_DISCARD_KEEP_DAYS_DEFAULT,
        }
    }
}

/// The configured entry a destination domain falls under: the longest key
/// of `keys` equal to `domain` or a parent of it.
fn matching_key<'a>(keys: impl Iterator<Item = &'a String>, domain: &str) -> Option<&'a str> {
    keys.filter(|k| {
        domain == k.as_str()
            || (domain.len() > k.len()
                && domain.ends_with(k.as_str())
                && domain.as_bytes()[domain.len() - k.len() - 1] == b'.')
    })
    .max_by_key(|k| k.len())
    .map(String::as_str)
}

impl Forward {
    /// The destination a recipient domain is counted under: the configured
    /// domain it equals or belongs to (`mail.hotmail.com` -> `hotmail.com`),
    /// or else the domain itself. Lowercase, without a trailing dot.
    pub fn destination(&self, domain: &str) -> String {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let keys = self.thresholds.keys().chain(self.bounds.keys());
        match matching_key(keys, &domain) {
            Some(k) => k.to_string(),
            None => domain,
        }
    }

    /// The configured initial threshold of a destination (see [`Forward::destination`]).
    pub fn initial_threshold(&self, destination: &str) -> f32 {
        match matching_key(self.thresholds.keys(), destination) {
            Some(k) => self.thresholds[k],
            None => self.default_threshold,
        }
    }

    /// `(min, max)` the policy keeps a destination's threshold within.
    pub fn bounds_of(&self, destination: &str) -> (f32, f32) {
        match matching_key(self.bounds.keys(), destination) {
            Some(k) => (self.bounds[k][0], self.bounds[k][1]),
            None => (self.min_threshold, self.max_threshold),
        }
    }

    pub(crate) fn validate(&self, is_domain_name: fn(&str) -> bool) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, why: String| ConfigError::Invalid { key, why };
        let in_range = |v: f32| {
            v.is_finite() && (FORWARD_THRESHOLD_FLOOR..=FORWARD_THRESHOLD_CEILING).contains(&v)
        };
        let range_text =
            format!("between {FORWARD_THRESHOLD_FLOOR} and {FORWARD_THRESHOLD_CEILING}");
        if !in_range(self.min_threshold) {
            return Err(invalid(
                "forward.min_threshold",
                format!("must be {range_text}"),
            ));
        }
        if !in_range(self.max_threshold) || self.max_threshold < self.min_threshold {
            return Err(invalid(
                "forward.max_threshold",
                format!("must be {range_text} and at least forward.min_threshold"),
            ));
        }
        for (domain, [lo, hi]) in &self.bounds {
            if !is_domain_name(domain) || domain.to_ascii_lowercase() != *domain {
                return Err(invalid(
                    "forward.bounds",
                    format!("{domain:?} is not a lowercase domain name"),
                ));
            }
            if !in_range(*lo) || !in_range(*hi) || lo > hi {
                return Err(invalid(
                    "forward.bounds",
                    format!(
                        "{domain}: [{lo}, {hi}] must be [min, max] with min <= max, {range_text}"
                    ),
                ));
            }
        }
        let check_initial = |key: &'static str, dest: &str, v: f32| {
            let (lo, hi) = self.bounds_of(dest);
            if !v.is_finite() || v < lo || v > hi {
                return Err(invalid(
                    key,
                    format!("{dest}: {v} is outside the bounds [{lo}, {hi}]"),
                ));
            }
            Ok(())
        };
        check_initial(
            "forward.default_threshold",
            "(default)",
            self.default_threshold,
        )?;
        for (domain, v) in &self.thresholds {
            if !is_domain_name(domain) || domain.to_ascii_lowercase() != *domain {
                return Err(invalid(
                    "forward.thresholds",
                    format!("{domain:?} is not a lowercase domain name"),
                ));
            }
            check_initial("forward.thresholds", domain, *v)?;
        }
        if !(self.target_complaint_rate > 0.0 && self.target_complaint_rate < 1.0) {
            return Err(invalid(
                "forward.target_complaint_rate",
                "must be above 0 and below 1 (0.001 is 0.1%)".into(),
            ));
        }
        if !(1..=90).contains(&self.window_days) {
            return Err(invalid(
                "forward.window_days",
                "must be between 1 and 90".into(),
            ));
        }
        if !(self.step.is_finite() && self.step > 0.0 && self.step <= 10.0) {
            return Err(invalid(
                "forward.step",
                "must be above 0 and at most 10".into(),
            ));
        }
        if !(1..=1_000_000).contains(&self.min_forwards) {
            return Err(invalid(
                "forward.min_forwards",
                "must be between 1 and 1000000".into(),
            ));
        }
        if !(1..=FORWARD_DISCARD_KEEP_DAYS_MAX).contains(&self.discard_keep_days) {
            return Err(invalid(
                "forward.discard_keep_days",
                format!("must be between 1 and {FORWARD_DISCARD_KEEP_DAYS_MAX}"),
            ));
        }
        if let Some(address) = &self.feedback_address {
            let ok = address.rsplit_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && local.len() <= 64
                    && !local
                        .chars()
                        .any(|c| c.is_whitespace() || c == '<' || c == '>')
                    && is_domain_name(domain)
            });
            if !ok {
                return Err(invalid(
                    "forward.feedback_address",
                    format!("{address:?} is not a mail address"),
                ));
            }
        }
        if !self.srs_secret.is_empty() && self.srs_secret.len() < 16 {
            return Err(invalid(
                "forward.srs_secret",
                "must be at least 16 bytes".into(),
            ));
        }
        if let Some(domain) = &self.srs_domain
            && (!is_domain_name(domain) || !domain.contains('.'))
        {
            return Err(invalid(
                "forward.srs_domain",
                format!("{domain:?} is not a domain name"),
            ));
        }
        if let Some(ehlo) = &self.ehlo
            && !is_domain_name(ehlo)
        {
            return Err(invalid(
                "forward.ehlo",
                format!("{ehlo:?} is not a host name"),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Spam {
    /// The scorer's rules file (TOML); default: the rules built into the
    /// binary (`firmware/filter/rules/default.toml`).
    pub rules_file: Option<PathBuf>,
    /// A folder of SpamAssassin rule files (`*.cf`, e.g. Debian's
    /// /usr/share/spamassassin) to score with: its rules, its scores and
    /// its Bayes bands over mxrack's classifier (`mxrack_filter::sa`), joined
    /// with mxrack's own rules as `spamassassin_join` says.
    pub spamassassin_rules: Option<PathBuf>,
    /// How SpamAssassin's rules join mxrack's own (`rules_file`, else the
    /// built-in rules): `mean` (the default: the score is the mean of the
    /// two sets' scores, each with its classifier band; on the README's
    /// spam benchmark it loses less ham and misses less spam than
    /// SpamAssassin at 5 and 6) or `alone` (SpamAssassin's rules only).
    /// Only with `spamassassin_rules`.
    pub spamassassin_join: Option<SpamJoin>,
    /// SpamAssassin's `trusted_networks`: the relays, by address or
    /// network (`192.0.2.25`, `203.0.113.0/24`, `2001:db8::/32`), that are
    /// trusted not to forge the Received headers they add, such as a
    /// provider's own front MX that hands mail to this appliance. Set, a
    /// relay is trusted when its address is listed (loopback always is)
    /// or it authenticated, and trust ends at the first that is neither;
    /// the rules about the sender's relay (no reverse DNS, dynamic-looking
    /// names, ALL_TRUSTED) then look past the listed ones. Empty (the
    /// default): trust is inferred as SpamAssassin does without it
    /// (private, loopback and authenticated relays). Only with
    /// `spamassassin_rules`: mxrack's own rules do not read the relays.
    pub trusted_networks: Vec<String>,
}

/// Most entries of `[spam] trusted_networks`.
pub const SPAM_TRUSTED_NETWORKS_MAX: usize = 256;

/// A `trusted_networks` entry: `ip` (a whole address) or `ip/prefix`.
pub fn parse_network(s: &str) -> Option<(IpAddr, u8)> {
    match s.split_once('/') {
        Some(_) => crate::parse_cidr(s),
        None => {
            let ip: IpAddr = s.parse().ok()?;
            Some((ip, if ip.is_ipv4() { 32 } else { 128 }))
        }
    }
}

/// `[spam] spamassassin_join`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SpamJoin {
    #[default]
    Mean,
    Alone,
}

impl Spam {
    /// `spamassassin_join`, its default filled in.
    pub fn join(&self) -> SpamJoin {
        self.spamassassin_join.unwrap_or_default()
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(path) = &self.spamassassin_rules {
            if path.as_os_str().is_empty() {
                return Err(ConfigError::Invalid {
                    key: "spam.spamassassin_rules",
                    why: "must not be empty".into(),
                });
            }
            if self.rules_file.is_some() && self.join() == SpamJoin::Alone {
                return Err(ConfigError::Invalid {
                    key: "spam.rules_file",
                    why: "is not used with spam.spamassassin_join = \"alone\": set one of them"
                        .into(),
                });
            }
        }
        if self.spamassassin_rules.is_none() && self.spamassassin_join.is_some() {
            return Err(ConfigError::Invalid {
                key: "spam.spamassassin_join",
                why: "joins spam.spamassassin_rules, which is not set".into(),
            });
        }
        if let Some(path) = &self.rules_file
            && path.as_os_str().is_empty()
        {
            return Err(ConfigError::Invalid {
                key: "spam.rules_file",
                why: "must not be empty".into(),
            });
        }
        if self.trusted_networks.len() > SPAM_TRUSTED_NETWORKS_MAX {
            return Err(ConfigError::Invalid {
                key: "spam.trusted_networks",
                why: format!("at most {SPAM_TRUSTED_NETWORKS_MAX} entries"),
            });
        }
        if let Some(bad) = self
            .trusted_networks
            .iter()
            .find(|n| parse_network(n).is_none())
        {
            return Err(ConfigError::Invalid {
                key: "spam.trusted_networks",
                why: format!("{bad:?} is not an address or address/prefix"),
            });
        }
        if !self.trusted_networks.is_empty() && self.spamassassin_rules.is_none() {
            // Only SpamAssassin's rules read the relays; mxrack's own do not.
            return Err(ConfigError::Invalid {
                key: "spam.trusted_networks",
                why: "is read by SpamAssassin's rules (spam.spamassassin_rules), which are not set"
                    .into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::SpamJoin;
    use crate::Config;

    fn with_forward(extra: &str) -> String {
        format!(
            "[appliance]\nhostname = \"mx1.example.net\"\nprimary_domain = \"example.net\"\ndata_dir = \"/d\"\n\n[smtp]\nmx = [\"0.0.0.0:25\"]\n\n[forward]\n{extra}\n"
        )
    }

    #[test]
    fn defaults_follow_the_seed() {
        let c = Config::from_toml(&with_forward("")).expect("valid");
        let f = &c.forward;
        assert_eq!(f.default_threshold, 6.0);
        for d in ["hotmail.com", "msn.com", "live.com", "outlook.com"] {
            assert_eq!(f.initial_threshold(d), 1.0, "{d}");
        }
        assert_eq!(f.initial_threshold("example.org"), 6.0);
        assert_eq!(f.destination("MX4.Hotmail.COM."), "hotmail.com");
        assert_eq!(f.destination("nothotmail.com"), "nothotmail.com");
        assert_eq!(f.initial_threshold("nothotmail.com"), 6.0);
        assert_eq!(f.bounds_of("hotmail.com"), (0.0, 10.0));
        assert_eq!(c.spam.rules_file, None);
        assert_eq!(f.discard_keep_days, 14);
    }

    #[test]
    fn per_destination_bounds_and_thresholds() {
        let c = Config::from_toml(&with_forward(
            "thresholds = { \"hotmail.com\" = 1.5, \"gmail.com\" = 4.0 }\nbounds = { \"hotmail.com\" = [0.5, 3.0] }\nfeedback_address = \"abuse-feedback@example.net\"\nsrs_secret = \"0123456789abcdef\"",
        ))
        .expect("valid");
        assert_eq!(c.forward.initial_threshold("hotmail.com"), 1.5);
        assert_eq!(c.forward.initial_threshold("msn.com"), 6.0);
        assert_eq!(c.forward.bounds_of("hotmail.com"), (0.5, 3.0));
        assert_eq!(c.forward.bounds_of("gmail.com"), (0.0, 10.0));
    }

    #[test]
    fn errors_name_the_key() {
        for (line, key) in [
            ("default_threshold = 11.0", "forward.default_threshold"),
            ("min_threshold = 2.0", "forward.thresholds"),
            ("max_threshold = -1.0", "forward.max_threshold"),
            ("min_threshold = -20.0", "forward.min_threshold"),
            (
                "thresholds = { \"hotmail.com\" = 12.0 }",
                "forward.thresholds",
            ),
            (
                "thresholds = { \"Hotmail.com\" = 1.0 }",
                "forward.thresholds",
            ),
            (
                "bounds = { \"hotmail.com\" = [3.0, 2.0] }",
                "forward.bounds",
            ),
            (
                "bounds = { \"hotmail.com\" = [2.0, 3.0] }",
                "forward.thresholds",
            ),
            (
                "target_complaint_rate = 0.0",
                "forward.target_complaint_rate",
            ),
            (
                "target_complaint_rate = 1.5",
                "forward.target_complaint_rate",
            ),
            ("window_days = 0", "forward.window_days"),
            ("step = 0.0", "forward.step"),
            ("min_forwards = 0", "forward.min_forwards"),
            ("discard_keep_days = 0", "forward.discard_keep_days"),
            ("discard_keep_days = 366", "forward.discard_keep_days"),
            ("feedback_address = \"nobody\"", "forward.feedback_address"),
            ("srs_secret = \"short\"", "forward.srs_secret"),
            ("srs_domain = \"bad domain\"", "forward.srs_domain"),
            ("ehlo = \"-bad\"", "forward.ehlo"),
        ] {
            let e = Config::from_toml(&with_forward(line))
                .expect_err(line)
                .to_string();
            assert!(e.starts_with(key), "{line}: {e}");
        }
        let e = Config::from_toml(
            &with_forward("").replace("[forward]\n", "[spam]\nrules_file = \"\"\n"),
        )
        .expect_err("empty rules file")
        .to_string();
        assert!(e.starts_with("spam.rules_file"), "{e}");
        let both =
            "[spam]\nrules_file = \"/a.toml\"\nspamassassin_rules = \"/usr/share/spamassassin\"\n";
        let c = Config::from_toml(&with_forward("").replace("[forward]\n", both))
            .expect("both rule sources joined");
        assert_eq!(c.spam.join(), SpamJoin::Mean);
        let e = Config::from_toml(
            &with_forward("").replace("[forward]\n", "[spam]\nspamassassin_join = \"mean\"\n"),
        )
        .expect_err("a join without SpamAssassin's rules")
        .to_string();
        assert!(e.starts_with("spam.spamassassin_join"), "{e}");
        let e = Config::from_toml(&with_forward("").replace(
            "[forward]\n",
            &format!("{both}spamassassin_join = \"alone\"\n"),
        ))
        .expect_err("a rules file with SpamAssassin's rules alone")
        .to_string();
        assert!(e.starts_with("spam.rules_file"), "{e}");
        let e = Config::from_toml(&with_forward("").replace(
            "[forward]\n",
            &format!("{both}spamassassin_join = \"sum\"\n"),
        ))
        .expect_err("an unknown join")
        .to_string();
        assert!(e.contains("sum"), "{e}");
        let spam = |list: &str| {
            Config::from_toml(&with_forward("").replace(
                "[forward]\n",
                &format!("[spam]\nspamassassin_rules = \"/sa\"\ntrusted_networks = {list}\n"),
            ))
        };
        let c = spam(r#"["192.0.2.25", "203.0.113.0/24", "2001:db8::/32"]"#).expect("networks");
        assert_eq!(c.spam.trusted_networks.len(), 3);
        for bad in [
            r#"["203.0.113.0/33"]"#,
            r#"["mx.example.net"]"#,
            r#"["10.0.0."]"#,
        ] {
            let e = spam(bad).expect_err(bad).to_string();
            assert!(e.starts_with("spam.trusted_networks"), "{bad}: {e}");
        }
        let e = Config::from_toml(&with_forward("").replace(
            "[forward]\n",
            "[spam]\ntrusted_networks = [\"203.0.113.0/24\"]\n",
        ))
        .expect_err("trusted networks without SpamAssassin's rules")
        .to_string();
        assert!(
            e.starts_with("spam.trusted_networks") && e.contains("spamassassin_rules"),
            "{e}"
        );
        let e = Config::from_toml(&with_forward("unknown = 1"))
            .expect_err("unknown key")
            .to_string();
        assert!(e.contains("unknown"), "{e}");
    }
}
