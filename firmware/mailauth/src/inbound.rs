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
use mail_auth::hickory_resolver::Name;
use mail_auth::hickory_resolver::proto::ProtoErrorKind;
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DmarcResult, IprevOutput, IprevResult, MX,
    MessageAuthenticator, Parameters, ResolverCache, Txt,
};
use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::organizational_domain;

/// Parsed TXT records (DKIM keys, SPF and DMARC records) kept between
/// messages; the resolver below caches the raw answers too.
pub const TXT_CACHE_ENTRIES: usize = 2048;
/// Names probed for a negative answer at once, over all checks.
const PROBES_IN_FLIGHT_MAX: usize = 64;

/// Takes a probe's names out of the in-flight set when it ends (or is
/// dropped with the runtime).
struct ProbesDone {
    probing: Arc<Mutex<HashSet<String>>>,
    names: Vec<String>,
}

impl Drop for ProbesDone {
    fn drop(&mut self) {
        if let Ok(mut p) = self.probing.lock() {
            for n in &self.names {
                p.remove(n);
            }
        }
    }
}

/// Cache misses one check records for the negative cache (SPF's 10
/// querying terms, DKIM keys, the DMARC walk: well under this).
const MISSED_NAMES_MAX: usize = 64;

tokio::task_local! {
    /// What one check asked [`TxtCache`] for and did not find there, by
    /// hash, and the names the check expects to be asked for. mail-auth
    /// stores every answer it parsed, but returns early, storing nothing,
    /// when the resolver gives an error; hickory keeps a "no such record"
    /// answer only when it carries an SOA. So a sender domain without SPF
    /// or DMARC records was asked again for every message (three queries
    /// each). [`Inbound::remember_negatives`] keeps those answers.
    static LOOKUPS: Arc<Mutex<Lookups>>;
}

/// See [`LOOKUPS`]. The cache is asked with a generic borrowed key, so a
/// miss is recorded by the key's hash; the names come from the check.
#[derive(Default)]
struct Lookups {
    missed: Vec<u64>,
    expected: Vec<String>,
}

/// The hash of a cache key as `get` sees it (`str` and `String` hash alike,
/// the `Borrow` contract).
fn key_hash<Q: Hash + ?Sized>(key: &Q) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// The TXT names an SPF and DMARC check of this envelope and `From:`
/// domain asks first, as mail-auth writes them (lower case, final dot):
/// the HELO name and MAIL FROM domain (RFC 7208 2.3, 2.4), then DMARC's
/// walk up the From domain (`_dmarc.a.b.example.`, `_dmarc.b.example.`,
/// `_dmarc.example.`). Names SPF reaches through include or redirect
/// terms are not here: they are looked up again each time.
fn expected_names(env: &Envelope, from_domain: &str) -> Vec<String> {
    let fqdn = |d: &str| format!("{}.", d.trim_end_matches('.').to_lowercase());
    let mut names = Vec::new();
    if env.helo.contains('.') {
        names.push(fqdn(&env.helo));
    }
    if let Some((_, d)) = env.mail_from.rsplit_once('@') {
        names.push(fqdn(d));
    }
    let labels: Vec<&str> = from_domain.split('.').filter(|l| !l.is_empty()).collect();
    if labels.len() > 1 {
        for start in 0..labels.len().min(MISSED_NAMES_MAX) {
            names.push(fqdn(&format!("_dmarc.{}", labels[start..].join("."))));
        }
    }
    names
}

/// How long the iprev lookups (PTR, then A/AAAA of the names) may take.
pub const IPREV_TIMEOUT: Duration = Duration::from_secs(3);

/// The outcome of the checks of one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// `Authentication-Results: ...\r\n`, to put above the message.
    pub header: String,
    /// What the scorer counts: `DMARC_REJECT` or `DMARC_QUARANTINE`.
    pub marks: Vec<String>,
    /// The client's reverse DNS name, forward-confirmed (RFC 8601 iprev):
    /// `Some("")` when it has none (or one that does not point back),
    /// `None` when the lookup failed or timed out.
    pub rdns: Option<String>,
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
        let found = self.map.lock().ok().and_then(|map| {
            let (txt, until) = map.get(name)?;
            (*until > Instant::now()).then(|| txt.clone())
        });
        if found.is_none() {
            // Outside a check (no task-local), nothing is tracked.
            let _ = LOOKUPS.try_with(|lookups| {
                let Ok(mut lookups) = lookups.lock() else {
                    return;
                };
                let hash = key_hash(name);
                if lookups.missed.len() < MISSED_NAMES_MAX && !lookups.missed.contains(&hash) {
                    lookups.missed.push(hash);
                }
            });
        }
        found
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        String: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.lock().ok()?.remove(name).map(|(t, _)| t)
    }

    fn insert(&self, key: String, value: Txt, valid_until: Instant) {
        let _ = LOOKUPS.try_with(|lookups| {
            if let Ok(mut lookups) = lookups.lock() {
                let hash = key_hash(key.as_str());
                lookups.missed.retain(|h| *h != hash);
            }
        });
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
    txt: Arc<TxtCache>,
    /// Names a negative-answer probe is asking now.
    probing: Arc<Mutex<HashSet<String>>>,
    /// How long a "no such record" answer without an SOA is kept
    /// (`dns.negative_ttl_secs`; zero: not kept).
    negative_ttl: Duration,
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
            txt: Arc::new(TxtCache::default()),
            probing: Arc::default(),
            negative_ttl: Duration::from_secs(mxrack_config::DNS_NEGATIVE_TTL_SECS),
            authserv_id,
            timeout: Duration::from_secs(cfg.check_timeout_secs),
            dkim_signatures_max: cfg.dkim_signatures_max,
        }
    }

    /// Keeps "no such record" answers without an SOA for `ttl` (see
    /// [`mxrack_config::DNS_NEGATIVE_TTL_SECS`]); zero keeps none.
    pub fn with_negative_ttl(mut self, ttl: Duration) -> Inbound {
        self.negative_ttl = ttl;
        self
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
        let lookups = Arc::new(Mutex::new(Lookups::default()));
        let checked = LOOKUPS.scope(
            lookups.clone(),
            tokio::time::timeout_at(deadline, self.check_unbounded(env, message, complete)),
        );
        let verdict = checked.await;
        // A check cut by its deadline says the resolver is struggling:
        // asking it more now would not help.
        if verdict.is_ok() {
            self.remember_negatives(&lookups);
        }
        match verdict {
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
                    rdns: None,
                }
            }
        }
    }

    /// The names a check asked for that mail-auth did not store: their
    /// lookups failed. Each is asked once more, off the SMTP reply's path,
    /// and a "no such record" answer (NXDOMAIN or no TXT at the name) is
    /// kept as that error, so the next message's lookup gives the same
    /// result without a query: for the answer's own negative TTL when it
    /// has an SOA (at most [`mxrack_config::DNS_NEGATIVE_TTL_MAX_SECS`]),
    /// else for `dns.negative_ttl_secs`. RFC 2308 5 advises resolvers
    /// against caching answers without an SOA because two servers could
    /// pass one back and forth forever; this cache is at the end of the
    /// chain and gives nothing to any other server. A timeout or a server
    /// failure is never kept.
    fn remember_negatives(&self, lookups: &Mutex<Lookups>) {
        let names: Vec<String> = match lookups.lock() {
            Ok(mut l) => {
                let missed = std::mem::take(&mut l.missed);
                std::mem::take(&mut l.expected)
                    .into_iter()
                    .filter(|n| missed.contains(&key_hash(n.as_str())))
                    .collect()
            }
            Err(_) => return,
        };
        if names.is_empty() || self.negative_ttl.is_zero() {
            return;
        }
        // Each name asked by one probe at a time, and at most
        // PROBES_IN_FLIGHT_MAX names at once over all checks: messages
        // from one domain arriving together do not each ask again.
        let names: Vec<String> = match self.probing.lock() {
            Ok(mut probing) => names
                .into_iter()
                .filter(|n| {
                    probing.len() < PROBES_IN_FLIGHT_MAX
                        && self.txt.get(n.as_str()).is_none()
                        && probing.insert(n.clone())
                })
                .collect(),
            Err(_) => return,
        };
        if names.is_empty() {
            return;
        }
        let resolver = self.auth.0.clone();
        let cache = self.txt.clone();
        let probing = self.probing.clone();
        let floor = self.negative_ttl;
        tokio::spawn(async move {
            let _done = ProbesDone {
                probing,
                names: names.clone(),
            };
            for name in names {
                let Ok(query) = Name::from_str_relaxed(&name) else {
                    continue;
                };
                let Err(e) = resolver.txt_lookup(query).await else {
                    continue;
                };
                let ttl = match e.kind() {
                    // NXDOMAIN, or NOERROR with no TXT: "no such record".
                    // hickory gives SERVFAIL and REFUSED this kind too;
                    // those are the server's trouble and are not kept.
                    ProtoErrorKind::NoRecordsFound(no)
                        if matches!(
                            no.response_code,
                            ResponseCode::NXDomain | ResponseCode::NoError
                        ) =>
                    {
                        no.negative_ttl.map_or(floor, |t| {
                            Duration::from_secs(
                                u64::from(t).min(mxrack_config::DNS_NEGATIVE_TTL_MAX_SECS),
                            )
                        })
                    }
                    _ => continue,
                };
                cache.put(&name, Txt::Error(mail_auth::Error::from(e)), ttl);
            }
        });
    }

    async fn check_unbounded(&self, env: &Envelope, message: &[u8], complete: bool) -> Verdict {
        let id = self.authserv_id.as_str();
        let helo = env.helo.as_str();
        // iprev (RFC 8601 3): the client's PTR name, confirmed by its A or
        // AAAA records; the spam rules read it as the relay's reverse DNS.
        // Asked beside the HELO's SPF, not after it, and given up after
        // IPREV_TIMEOUT: a sender's slow reverse zone must not cost the
        // whole check its deadline (and DMARC its verdict).
        let iprev = async {
            tokio::time::timeout(IPREV_TIMEOUT, self.auth.verify_iprev(self.params(env.ip)))
                .await
                .unwrap_or_else(|_| IprevOutput {
                    result: IprevResult::TempError(mail_auth::Error::DnsError("timed out".into())),
                    ptr: None,
                })
        };
        let (iprev, spf_helo) = tokio::join!(
            iprev,
            self.auth
                .verify_spf(self.params(SpfParameters::verify_ehlo(env.ip, helo, id)))
        );
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
        let rdns = match &iprev.result {
            IprevResult::Pass => iprev
                .ptr
                .as_ref()
                .and_then(|p| p.first())
                .map(|n| n.trim_end_matches('.').to_ascii_lowercase()),
            IprevResult::TempError(_) => None,
            _ => Some(String::new()),
        };
        let mut results = AuthenticationResults::new(id)
            .with_iprev_result(&iprev, env.ip)
            .with_spf_ehlo_result(&spf_helo, env.ip, helo)
            .with_spf_mailfrom_result(&spf_mail, env.ip, &env.mail_from, helo);
        let Some(mut msg) = AuthenticatedMessage::parse(message) else {
            let text = format!("{results};\r\n\tdkim=none (message not parsed);\r\n\tdmarc=none");
            return Verdict {
                header: format!("Authentication-Results: {text}\r\n"),
                marks: Vec::new(),
                rdns,
            };
        };
        let header_from = msg.from().to_string();
        let _ = LOOKUPS.try_with(|lookups| {
            if let Ok(mut l) = lookups.lock() {
                l.expected =
                    expected_names(env, header_from.rsplit_once('@').map_or("", |(_, d)| d));
            }
        });
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
        Verdict {
            header,
            marks,
            rdns,
        }
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
