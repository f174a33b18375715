//! The MX's checks of arriving mail: SPF of the HELO name and of MAIL FROM
//! (RFC 7208), DKIM signatures (RFC 6376), ARC chain (RFC 8617), DMARC
//! (RFC 7489); one Authentication-Results header (RFC 8601) with the
//! appliance's authserv-id, and the marks the spam scorer counts.
//!
//! Bounded work: at most `mail_auth.dkim_signatures_max` signatures are
//! verified; SPF stops at 10 DNS-querying terms (RFC 7208 4.6.4, enforced
//! by mail-auth, which also gives up after 20 s); the resolver answers
//! within `dns.timeout_ms` x `dns.attempts` per server; the whole check
//! within `mail_auth.check_timeout_secs` and never past the DATA phase's
//! deadline: whatever is missing then is reported as temperror.

use mail_auth::common::headers::HeaderWriter;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DmarcResult, MX, MessageAuthenticator, Parameters,
    ResolverCache, Txt,
};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::organizational_domain;

/// Parsed TXT records (DKIM keys, SPF and DMARC records) kept between
/// messages; the resolver below caches the raw answers too.
pub const TXT_CACHE_ENTRIES: usize = 2048;

/// The outcome of the checks of one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// `Authentication-Results: ...\r\n`, to put above the message.
    pub header: String,
    /// What the scorer counts: `DMARC_REJECT` or `DMARC_QUARANTINE`.
    pub marks: Vec<String>,
}

/// What the SMTP session knows of the sender.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub ip: IpAddr,
    pub helo: String,
    /// The MAIL FROM address; empty for the null sender.
    pub mail_from: String,
}

/// Parsed TXT records by name, bounded; also how tests hand in fixed
/// records without a DNS server.
#[derive(Default)]
pub struct TxtCache {
    map: Mutex<HashMap<String, (Txt, Instant)>>,
}

impl TxtCache {
    /// Puts a record in, valid for `ttl`. The name is a FQDN with its
    /// final dot (`sel._domainkey.example.org.`), as mail-auth asks.
    pub fn put(&self, name: &str, record: Txt, ttl: Duration) {
        self.insert(name.to_string(), record, Instant::now() + ttl);
    }
}

impl ResolverCache<String, Txt> for TxtCache {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        String: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let map = self.map.lock().ok()?;
        let (txt, until) = map.get(name)?;
        (*until > Instant::now()).then(|| txt.clone())
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        String: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.lock().ok()?.remove(name).map(|(t, _)| t)
    }

    fn insert(&self, key: String, value: Txt, valid_until: Instant) {
        let Ok(mut map) = self.map.lock() else { return };
        if map.len() >= TXT_CACHE_ENTRIES {
            let now = Instant::now();
            map.retain(|_, (_, until)| *until > now);
            if map.len() >= TXT_CACHE_ENTRIES {
                // Still full of live entries: start over rather than grow.
                map.clear();
            }
        }
        map.insert(key, (value, valid_until));
    }
}

type NoCache<K, V> = mail_auth::common::cache::NoCache<K, V>;
type Params<'x, P> = Parameters<
    'x,
    P,
    TxtCache,
    NoCache<String, Arc<Vec<MX>>>,
    NoCache<String, Arc<Vec<Ipv4Addr>>>,
    NoCache<String, Arc<Vec<Ipv6Addr>>>,
    NoCache<IpAddr, Arc<Vec<String>>>,
>;

/// The checker the SMTP service shares.
pub struct Inbound {
    auth: MessageAuthenticator,
    txt: TxtCache,
    authserv_id: String,
    timeout: Duration,
    dkim_signatures_max: usize,
}

impl Inbound {
    pub fn new(
        resolver: mail_auth::hickory_resolver::TokioResolver,
        authserv_id: String,
        cfg: &mxrack_config::MailAuth,
    ) -> Inbound {
        Inbound {
            auth: MessageAuthenticator(resolver),
            txt: TxtCache::default(),
            authserv_id,
            timeout: Duration::from_secs(cfg.check_timeout_secs),
            dkim_signatures_max: cfg.dkim_signatures_max,
        }
    }

    pub fn authserv_id(&self) -> &str {
        &self.authserv_id
    }

    /// The cache of parsed records (tests fill it with fixed records).
    pub fn txt_cache(&self) -> &TxtCache {
        &self.txt
    }

    fn params<P>(&self, p: P) -> Params<'_, P> {
        Parameters::new(p).with_txt_cache(&self.txt)
    }

    /// The header an authenticated submission gets (RFC 8601 2.7.4): no
    /// DNS, the login is the authentication.
    pub fn submission_header(&self, user: &str) -> String {
        format!(
            "Authentication-Results: {}; auth=pass smtp.auth={}\r\n",
            self.authserv_id,
            sanitize(user)
        )
    }

    /// Checks one message. `message` is the message as received (no trace
    /// headers of ours); `complete` is false when it is only the first part
    /// of a longer message (the body hash of DKIM cannot be checked then).
    /// Returns by `deadline` at the latest.
    pub async fn check(
        &self,
        env: &Envelope,
        message: &[u8],
        complete: bool,
        deadline: tokio::time::Instant,
    ) -> Verdict {
        let deadline = deadline.min(tokio::time::Instant::now() + self.timeout);
        match tokio::time::timeout_at(deadline, self.check_unbounded(env, message, complete)).await
        {
            Ok(v) => v,
            Err(_) => {
                tracing::info!(client = %env.ip, "authentication checks over their deadline: temperror");
                Verdict {
                    header: format!(
                        "Authentication-Results: {};\r\n\tspf=temperror (checks timed out) smtp.mailfrom={};\r\n\tdkim=temperror (checks timed out);\r\n\tdmarc=temperror (checks timed out)\r\n",
                        self.authserv_id,
                        if env.mail_from.is_empty() {
                            "<>".to_string()
                        } else {
                            sanitize(&env.mail_from)
                        }
                    ),
                    marks: Vec::new(),
                }
            }
        }
    }

    async fn check_unbounded(&self, env: &Envelope, message: &[u8], complete: bool) -> Verdict {
        let id = self.authserv_id.as_str();
        let helo = env.helo.as_str();
        let spf_helo = self
            .auth
            .verify_spf(self.params(SpfParameters::verify_ehlo(env.ip, helo, id)))
            .await;
        let spf_mail = if env.mail_from.is_empty() {
            spf_helo.clone()
        } else {
            self.auth
                .verify_spf(self.params(SpfParameters::verify_mail_from(
                    env.ip,
                    helo,
                    id,
                    &env.mail_from,
                )))
                .await
        };
        // DMARC's SPF identity: MAIL FROM's domain, the HELO name for the
        // null sender (RFC 7489 3.1.2 / RFC 7208 2.4).
        let spf_domain = env
            .mail_from
            .rsplit_once('@')
            .map_or(helo, |(_, d)| d)
            .to_ascii_lowercase();
        let mut results = AuthenticationResults::new(id)
            .with_spf_ehlo_result(&spf_helo, env.ip, helo)
            .with_spf_mailfrom_result(&spf_mail, env.ip, &env.mail_from, helo);
        let Some(mut msg) = AuthenticatedMessage::parse(message) else {
            let text = format!("{results};\r\n\tdkim=none (message not parsed);\r\n\tdmarc=none");
            return Verdict {
                header: format!("Authentication-Results: {text}\r\n"),
                marks: Vec::new(),
            };
        };
        let header_from = msg.from().to_string();
        let signatures = msg.dkim_headers.len();
        let mut extra = String::new();
        let dkim = if complete {
            msg.dkim_headers.truncate(self.dkim_signatures_max);
            if signatures > self.dkim_signatures_max {
                extra = format!(
                    ";\r\n\tdkim=policy ({} more signatures not checked)",
                    signatures - self.dkim_signatures_max
                );
            }
            self.auth.verify_dkim(self.params(&msg)).await
        } else {
            if signatures > 0 {
                extra = ";\r\n\tdkim=neutral (body larger than the checked part)".to_string();
            }
            msg.dkim_headers.clear();
            Vec::new()
        };
        results = results.with_dkim_results(&dkim, &header_from);
        if complete {
            let arc = self.auth.verify_arc(self.params(&msg)).await;
            results = results.with_arc_result(&arc, env.ip);
        }
        let dmarc = self
            .auth
            .verify_dmarc(
                self.params(
                    DmarcParameters::new(&msg, &dkim, &spf_domain, &spf_mail)
                        .with_domain_suffix_fn(organizational_domain),
                ),
            )
            .await;
        // mail-auth leaves both results None when neither identifier
        // passed; a policy record was still found (its p= is set): that
        // is a DMARC failure (RFC 7489 6.6.2).
        let pass =
            dmarc.spf_result() == &DmarcResult::Pass || dmarc.dkim_result() == &DmarcResult::Pass;
        let error = [dmarc.spf_result(), dmarc.dkim_result()]
            .into_iter()
            .find(|r| matches!(r, DmarcResult::TempError(_) | DmarcResult::PermError(_)));
        let found = dmarc.policy() != Policy::Unspecified;
        let dmarc_text = match (pass, error, found) {
            (true, _, _) => "pass",
            (false, Some(DmarcResult::TempError(_)), _) => "temperror",
            (false, Some(_), _) => "permerror",
            (false, None, true) => "fail",
            (false, None, false) => "none",
        };
        let mut marks = Vec::new();
        // A message whose signatures could not be checked is not held
        // against its domain's policy.
        let judged = complete || signatures == 0;
        if dmarc_text == "fail" && judged {
            match dmarc.policy() {
                Policy::Reject => marks.push("DMARC_REJECT".to_string()),
                Policy::Quarantine => marks.push("DMARC_QUARANTINE".to_string()),
                Policy::None | Policy::Unspecified => {}
            }
        }
        let policy = match dmarc.policy() {
            Policy::Reject => "reject",
            Policy::Quarantine => "quarantine",
            Policy::None => "none",
            Policy::Unspecified => "",
        };
        extra.push_str(&format!(";\r\n\tdmarc={dmarc_text}"));
        if !dmarc.domain().is_empty() {
            extra.push_str(&format!(" header.from={}", sanitize(dmarc.domain())));
        }
        if !policy.is_empty() {
            extra.push_str(&format!(" policy.dmarc={policy}"));
        }
        if dmarc_text == "fail" && !judged {
            extra.push_str(" (signatures not checked: not scored)");
        }
        let mut header = results.to_header();
        if !extra.is_empty() {
            // After the last result, before the header's line end.
            header.truncate(header.len() - 2);
            header.push_str(&extra);
            header.push_str("\r\n");
        }
        Verdict { header, marks }
    }
}

/// A value from the client put into a header: printable ASCII without
/// ';' or parentheses, so it cannot add a result of its own, and bounded.
fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() && !matches!(c, ';' | '(' | ')' | '"' | '\\'))
        .take(256)
        .collect()
}

#[cfg(test)]
mod tests;
