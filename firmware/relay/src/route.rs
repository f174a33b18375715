//! Where mail for a domain goes: a configured route for the domain, else the
//! smarthost, else the domain's MX records (RFC 5321 5.1), with the implicit
//! MX (the domain's own address) and null MX (RFC 7505) rules. MX hosts of
//! equal preference are tried in random order (RFC 5321 5.1). A
//! `Destination` names where sessions go, so messages for one destination
//! share sessions. A domain's MTA-STS policy (RFC 8461, [`crate::mta_sts`])
//! in enforce mode narrows its MX hosts to those the policy names and asks
//! for verified TLS; routes and the smarthost are the operator's own
//! choice and are not subject to it.
//!
//! DANE (RFC 7672, [`crate::dane`]): with `[relay] dane`, unless the DNS
//! servers are seen to strip DNSSEC (the root's SOA answered but not
//! validated, asked afresh every [`DNSSEC_PROBE_TTL`]), MX records, the
//! MX hosts' addresses and their `_25._tcp` TLSA records are looked up
//! through the validator ([`crate::dnssec`]). A host whose MX RRset (or
//! the implicit MX) and address records are secure, with a secure TLSA
//! RRset, gets mail only over TLS authenticated by those records (2.2); a
//! forged (bogus) answer makes the domain wait or the host unused. An
//! enforced MTA-STS policy still chooses the hosts and its certificate
//! check still applies (RFC 8461 2: a policy never overrides a failing
//! DANE check; DANE does not loosen a policy either).

use crate::client::Credentials;
use crate::dane::{self, HostDane};
use crate::dnssec::{self, Validator};
use crate::mta_sts::{Applied, Mode, StsResolver};
use hickory_resolver::TokioResolver;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::dnssec::Proof;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use rand::Rng;
use rand::seq::SliceRandom;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// Most servers tried for one domain in one attempt.
pub const SERVERS_PER_DOMAIN_MAX: usize = 8;
/// Most MX hosts looked up for one domain in one attempt (a domain naming
/// hundreds of hosts without addresses would otherwise cost a lookup
/// each, three with DANE; Postfix stops at smtp_mx_address_limit 5).
pub const MX_HOSTS_LOOKED_UP_MAX: usize = 16;
const SMTP_PORT: u16 = 25;
/// How long the answer to "does the resolver prove DNSSEC?" is kept.
pub const DNSSEC_PROBE_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// DNS trouble: try later.
    Temporary(String),
    /// The domain does not exist or accepts no mail: bounce.
    Permanent(String),
}

/// One server to try, the name to present in TLS SNI (and to verify the
/// certificate against), and whether DANE applies to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub addr: SocketAddr,
    pub name: String,
    pub dane: HostDane,
}

/// Where one domain's mail goes: the servers in the order to try, the key
/// sessions are shared under (the route or smarthost, or the set of MX
/// hosts: two domains with the same MX hosts share sessions), and the
/// credentials to give (the smarthost's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub key: String,
    pub servers: Vec<Server>,
    pub auth: Option<Credentials>,
    pub tls: TlsLevel,
}

/// What TLS a destination's sessions need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsLevel {
    /// STARTTLS when offered, any certificate (`[relay] require_tls` can
    /// still demand it).
    Opportunistic,
    /// STARTTLS required, with a certificate valid for the server's name
    /// (an enforced MTA-STS policy).
    Verified,
}

pub struct Router {
    routes: HashMap<String, String>,
    smarthost: Option<String>,
    smarthost_auth: Option<Credentials>,
    resolver: OnceCell<Result<TokioResolver, String>>,
    sts: Option<Arc<StsResolver>>,
    dane: Option<Dnssec>,
}

/// The validator DANE looks up through, whether the DNS servers pass
/// DNSSEC on (with when that was last asked), and an enforced MTA-STS
/// policy's certificate check, which DANE hosts must pass too.
struct Dnssec {
    validator: Validator,
    probed: Mutex<Option<(Instant, bool)>>,
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
}

impl Router {
    /// `routes`: domain -> "host:port"; `smarthost`: "host:port" for the
    /// rest, with the credentials it wants (given only over TLS).
    pub fn new(
        routes: HashMap<String, String>,
        smarthost: Option<String>,
        smarthost_auth: Option<Credentials>,
    ) -> Router {
        let routes = routes
            .into_iter()
            .map(|(d, h)| (d.to_ascii_lowercase(), h))
            .collect();
        Router {
            routes,
            smarthost,
            smarthost_auth,
            resolver: OnceCell::new(),
            sts: None,
            dane: None,
        }
    }

    /// Applies DANE (RFC 7672) to MX delivery, looking up through
    /// `validator`; `webpki`: the certificate check of enforced MTA-STS
    /// policies (what [`crate::verified_tls`] verifies with), which a DANE
    /// host of such a domain must pass as well.
    pub fn with_dane(
        self,
        validator: Validator,
        webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    ) -> Router {
        Router {
            dane: Some(Dnssec {
                validator,
                probed: Mutex::new(None),
                webpki,
            }),
            ..self
        }
    }

    /// The MTA-STS certificate check a DANE host of a domain with an
    /// enforced policy must pass too.
    pub fn policy_webpki(&self) -> Option<Arc<rustls::client::WebPkiServerVerifier>> {
        self.dane.as_ref().and_then(|d| d.webpki.clone())
    }

    /// Applies the MTA-STS policies `sts` finds to MX deliveries.
    pub fn with_mta_sts(self, sts: Arc<StsResolver>) -> Router {
        Router {
            sts: Some(sts),
            ..self
        }
    }

    /// The certificate-verifying TLS configuration for
    /// [`TlsLevel::Verified`] destinations (`None` without MTA-STS).
    pub fn verified_tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.sts.as_ref().map(|s| s.tls())
    }

    /// MX lookups through `resolver` (the appliance's one resolver,
    /// `[dns]`) instead of one made from the system's settings.
    pub fn with_resolver(self, resolver: TokioResolver) -> Router {
        Router {
            resolver: OnceCell::new_with(Some(Ok(resolver))),
            ..self
        }
    }

    pub async fn servers(&self, domain: &str) -> Result<Vec<Server>, RouteError> {
        Ok(self.destination(domain).await?.servers)
    }

    pub async fn destination(&self, domain: &str) -> Result<Destination, RouteError> {
        let domain = domain.to_ascii_lowercase();
        if let Some(hop) = self.routes.get(&domain) {
            return Ok(Destination {
                key: format!("route {hop}"),
                servers: resolve_hop(hop).await?,
                auth: None,
                tls: TlsLevel::Opportunistic,
            });
        }
        if let Some(hop) = &self.smarthost {
            return Ok(Destination {
                key: format!("smarthost {hop}"),
                servers: resolve_hop(hop).await?,
                auth: self.smarthost_auth.clone(),
                tls: TlsLevel::Opportunistic,
            });
        }
        let dnssec = self.dnssec().await;
        let (hosts, mx_secure) = self.mx_hosts(&domain, dnssec).await?;
        let policy = match &self.sts {
            Some(sts) => sts.policy(&domain).await,
            None => Applied::NoPolicy,
        };
        // The policy chooses among the MX hosts before any address is
        // looked up or the list is cut to SERVERS_PER_DOMAIN_MAX.
        let (hosts, tls) = apply_policy(&domain, hosts, &policy)?;
        // RFC 7672 2.2.1: DANE only for MX hosts a secure MX RRset names.
        let servers = self
            .addresses(&domain, &hosts, dnssec.filter(|_| mx_secure), tls)
            .await?;
        let key = servers_key(&servers, tls);
        Ok(Destination {
            key,
            servers,
            auth: None,
            tls,
        })
    }

    /// The validator when DANE is on and the DNS servers pass DNSSEC on.
    /// Servers that strip it would make every answer bogus: when the root
    /// zone's SOA is answered but does not validate, that means no DANE
    /// (logged), as Postfix without a validating resolver, not
    /// undeliverable mail. No answer at all is no evidence: what was known
    /// stands (at first: DANE on). Someone who can forge that one answer
    /// can turn DANE off, as one who strips the AD bit between Postfix and
    /// a remote resolver can.
    async fn dnssec(&self) -> Option<&Validator> {
        let d = self.dane.as_ref()?;
        let cached = *d.probed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, ok)) = cached
            && at.elapsed() < DNSSEC_PROBE_TTL
        {
            return ok.then_some(&d.validator);
        }
        // One probe at a time: the deliveries that come while it runs go
        // by what was known (at first: DANE on).
        let before = cached.is_none_or(|(_, was)| was);
        {
            let mut probed = d.probed.lock().unwrap_or_else(|p| p.into_inner());
            if *probed != cached {
                drop(probed);
                return before.then_some(&d.validator);
            }
            *probed = Some((Instant::now(), before));
        }
        let ok = match d.validator.root_validates().await {
            Ok(ok) => ok,
            Err(e) => {
                tracing::debug!(error = %e, "DNSSEC probe: no answer for the root SOA");
                before
            }
        };
        *d.probed.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), ok));
        if cached.map(|(_, was)| was) != Some(ok) {
            if ok {
                tracing::info!("DANE on: the DNS resolver proves DNSSEC");
            } else {
                tracing::warn!(
                    "DANE off: the DNS resolver does not prove DNSSEC (it answers the root zone's SOA without a signature); MX delivery goes on without DANE"
                );
            }
        }
        ok.then_some(&d.validator)
    }

    async fn resolver(&self) -> Result<&TokioResolver, RouteError> {
        let r = self
            .resolver
            .get_or_init(|| async {
                TokioResolver::builder_tokio()
                    .map(|b| b.build())
                    .map_err(|e| e.to_string())
            })
            .await;
        r.as_ref()
            .map_err(|e| RouteError::Temporary(format!("no DNS resolver: {e}")))
    }

    /// The MX hosts' names in the order to try (lower case, A-labels, no
    /// final dot), with the implicit MX and null MX rules, and whether
    /// DNSSEC proved them (`dnssec`: the validating resolver, else not).
    async fn mx_hosts(
        &self,
        domain: &str,
        dnssec: Option<&Validator>,
    ) -> Result<(Vec<String>, bool), RouteError> {
        let name = format!("{domain}.");
        let (answer, secure) = match dnssec {
            Some(v) => match v.lookup(&name, RecordType::MX).await {
                Ok(l) => {
                    let records =
                        dnssec::answer_chain(l.records(), l.query().name(), RecordType::MX);
                    if records.iter().any(|r| r.proof() == Proof::Bogus) {
                        return Err(RouteError::Temporary(format!(
                            "the MX records of {domain} fail DNSSEC validation"
                        )));
                    }
                    let mx = records
                        .iter()
                        .filter_map(|r| match r.data() {
                            RData::MX(mx) => Some((mx.preference(), mx.exchange().to_ascii())),
                            _ => None,
                        })
                        .collect();
                    (Ok(mx), records.iter().all(|r| r.proof().is_secure()))
                }
                Err(e) => (Err(e), true),
            },
            None => (
                self.resolver().await?.mx_lookup(name).await.map(|mx| {
                    mx.iter()
                        .map(|r| (r.preference(), r.exchange().to_ascii()))
                        .collect()
                }),
                false,
            ),
        };
        let mut hosts: Vec<(u16, String)> = match answer {
            Ok(mx) => mx,
            Err(e) if e.is_nx_domain() => {
                return Err(RouteError::Permanent(format!(
                    "domain {domain} does not exist"
                )));
            }
            // No MX at an existing name: the domain itself is the implicit
            // MX (RFC 5321 5.1). Only a NOERROR answer says so: hickory
            // reports SERVFAIL and REFUSED as "no records" too. DANE then
            // rests on the address records (RFC 7672 2.2.2); a forged
            // denial in a signed zone is the validator's error, not this.
            Err(e) if no_data(&e) => vec![(0, domain.to_string())],
            Err(e) => {
                return Err(RouteError::Temporary(format!(
                    "MX lookup for {domain} failed: {e}"
                )));
            }
        };
        order_by_preference(&mut hosts, &mut rand::thread_rng());
        if hosts.len() == 1 && (hosts[0].1 == "." || hosts[0].1.is_empty()) {
            return Err(RouteError::Permanent(format!(
                "{domain} accepts no mail (null MX, RFC 7505)"
            )));
        }
        let hosts = hosts
            .into_iter()
            .map(|(_, h)| h.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        Ok((hosts, secure))
    }

    /// The addresses of `hosts`, in their order, at most
    /// SERVERS_PER_DOMAIN_MAX, each with what DANE asks of it when
    /// `dnssec` (the validating resolver, given only for a secure MX
    /// RRset) is there. A host whose addresses or TLSA records are bogus,
    /// or whose TLSA lookup fails, is left out (RFC 7672 2.2); when that
    /// leaves none, the reasons are the domain's temporary error.
    async fn addresses(
        &self,
        domain: &str,
        hosts: &[String],
        dnssec: Option<&Validator>,
        tls: TlsLevel,
    ) -> Result<Vec<Server>, RouteError> {
        let mut out = Vec::new();
        let mut unusable = Vec::new();
        for host in hosts.iter().take(MX_HOSTS_LOOKED_UP_MAX) {
            let (ips, name, dane) = match dnssec {
                None => match self.resolver().await?.lookup_ip(format!("{host}.")).await {
                    Ok(ips) => (ips.iter().collect(), host.clone(), HostDane::None),
                    Err(_) => continue,
                },
                Some(v) => match dane_host(v, host, tls).await {
                    Ok(Some(found)) => found,
                    Ok(None) => continue,
                    Err(why) => {
                        unusable.push(why);
                        continue;
                    }
                },
            };
            for ip in ips {
                out.push(Server {
                    addr: SocketAddr::new(ip, SMTP_PORT),
                    name: name.clone(),
                    dane: dane.clone(),
                });
            }
            if out.len() >= SERVERS_PER_DOMAIN_MAX {
                break;
            }
        }
        out.truncate(SERVERS_PER_DOMAIN_MAX);
        if out.is_empty() {
            if !unusable.is_empty() {
                return Err(RouteError::Temporary(unusable.join("; ")));
            }
            return Err(RouteError::Temporary(format!(
                "no address for the mail servers of {domain}"
            )));
        }
        for why in unusable {
            tracing::warn!(domain, "{why}; the host is skipped");
        }
        Ok(out)
    }
}

/// An MX host's addresses through the validator (A, else AAAA), the name
/// to verify its certificate against and what DANE asks of it (RFC 7672
/// 2.2.2, 2.2.3): with secure addresses, its TLSA records, first at the
/// end of a (secure) CNAME chain, whose name is then the one the
/// certificate is checked for, else at the host's own name. `None`: no
/// address. `Err`: the host must not be used (bogus addresses, a TLSA
/// lookup that failed or was forged).
async fn dane_host(
    v: &Validator,
    host: &str,
    tls: TlsLevel,
) -> Result<Option<(Vec<IpAddr>, String, HostDane)>, String> {
    // A, else AAAA (hickory's default order); a failed lookup is no
    // address (the host is not used).
    let mut records: Vec<Record> = Vec::new();
    for rtype in [RecordType::A, RecordType::AAAA] {
        if let Ok(l) = v.lookup(&format!("{host}."), rtype).await {
            records.extend(
                dnssec::answer_chain(l.records(), l.query().name(), rtype)
                    .into_iter()
                    .cloned(),
            );
        }
        if records.iter().any(|r| r.record_type() == rtype) {
            break;
        }
    }
    let ips: Vec<IpAddr> = records
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    if ips.is_empty() {
        return Ok(None);
    }
    if any_bogus(&records) {
        return Err(format!("the addresses of {host} fail DNSSEC validation"));
    }
    if !records.iter().all(|r| r.proof().is_secure()) {
        return Ok(Some((ips, host.to_string(), HostDane::None)));
    }
    let target = records
        .iter()
        .find(|r| matches!(r.data(), RData::A(_) | RData::AAAA(_)))
        .map(|r| {
            r.name()
                .to_ascii()
                .trim_end_matches('.')
                .to_ascii_lowercase()
        })
        .filter(|t| t != host)
        // An enforced MTA-STS policy checks the MX host's own name (RFC
        // 8461 4.1), so the name to verify stays that one.
        .filter(|_| tls != TlsLevel::Verified);
    if let Some(target) = target {
        let dane = tlsa(v, &target).await?;
        if dane != HostDane::None {
            return Ok(Some((ips, target, dane)));
        }
    }
    let dane = tlsa(v, host).await?;
    Ok(Some((ips, host.to_string(), dane)))
}

/// The TLSA records of `host`'s SMTP service (RFC 7672 2.2, 3), asked
/// once its addresses are proved: no records, by a denial whose SOA is
/// proved and encloses the name, is no DANE; any other answer (an
/// unproved denial, SERVFAIL, a forged denial) makes the host unusable.
async fn tlsa(v: &Validator, host: &str) -> Result<HostDane, String> {
    let name = format!("_25._tcp.{host}.");
    match v.lookup(&name, RecordType::TLSA).await {
        Ok(l) => {
            let chain = dnssec::answer_chain(l.records(), l.query().name(), RecordType::TLSA);
            dane::tlsa_rrset(&chain).map_err(|why| format!("DANE: {host}: {why}"))
        }
        Err(e) if e.is_nx_domain() || no_data(&e) => {
            // The denial must be of the name asked: after a (possibly
            // forged) CNAME it is the target's, and says nothing of it.
            let asked = hickory_resolver::proto::rr::Name::from_ascii(&name).ok();
            let proved = match (e.kind(), asked) {
                (ProtoErrorKind::NoRecordsFound(no), Some(asked)) => {
                    no.query.name() == &asked
                        && no.soa.as_ref().is_some_and(|soa| {
                            soa.proof().is_secure() && soa.name().zone_of(&asked)
                        })
                }
                _ => false,
            };
            if proved {
                Ok(HostDane::None)
            } else {
                Err(format!(
                    "DANE: {host}: the denial of its TLSA records is not proved by DNSSEC"
                ))
            }
        }
        Err(e) => Err(format!("DANE: {host}: TLSA lookup failed: {e}")),
    }
}

fn any_bogus(records: &[Record]) -> bool {
    records.iter().any(|r| r.proof() == Proof::Bogus)
}

/// The session key of an MX destination from the servers it was given
/// (not the hosts named: one left out, or cut at SERVERS_PER_DOMAIN_MAX,
/// must not share sessions with a domain that kept it), with the TLSA
/// records each DANE host is held to: a session opened without DANE, or
/// under other records, never carries this destination's mail.
pub fn servers_key(servers: &[Server], tls: TlsLevel) -> String {
    let names: Vec<String> = servers.iter().map(|s| s.name.clone()).collect();
    let mut key = mx_key(&names, tls);
    let dane: BTreeSet<String> = servers
        .iter()
        .filter_map(|s| match &s.dane {
            HostDane::None => None,
            HostDane::Required(tlsa) => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                tlsa.hash(&mut h);
                Some(format!("{}#{:016x}", s.name, h.finish()))
            }
        })
        .collect();
    if !dane.is_empty() {
        key.push_str(" dane ");
        key.push_str(&dane.into_iter().collect::<Vec<_>>().join(","));
    }
    key
}

/// The session key of an MX destination: the hosts mail may go to (after
/// the policy chose) and the TLS level. Two domains share sessions only
/// when they go to the same hosts at the same level, so a session opened
/// for one domain's policy never carries another's mail to a host that
/// policy does not name.
pub fn mx_key(hosts: &[String], tls: TlsLevel) -> String {
    let mut names = hosts.to_vec();
    names.sort();
    names.dedup();
    let level = match tls {
        TlsLevel::Verified => " mta-sts",
        TlsLevel::Opportunistic => "",
    };
    format!("mx {}{level}", names.join(","))
}

/// A DNS answer that says the name exists but has no record of the type
/// (NOERROR, no data), as opposed to NXDOMAIN or a server failure, which
/// hickory reports as "no records found" too.
pub fn no_data(e: &hickory_resolver::proto::ProtoError) -> bool {
    matches!(
        e.kind(),
        hickory_resolver::proto::ProtoErrorKind::NoRecordsFound(no)
            if no.response_code == hickory_resolver::proto::op::ResponseCode::NoError
    )
}

/// The MX hosts (in the order to try) that `domain`'s MTA-STS policy lets
/// mail go to, and the TLS they need (RFC 8461 5): enforce keeps the hosts
/// the policy names and asks for verified TLS, and defers when none is
/// left; testing logs what enforce would refuse and changes nothing.
pub fn apply_policy(
    domain: &str,
    hosts: Vec<String>,
    policy: &Applied,
) -> Result<(Vec<String>, TlsLevel), RouteError> {
    let Applied::Policy(policy) = policy else {
        return Ok((hosts, TlsLevel::Opportunistic));
    };
    match policy.mode {
        Mode::None => Ok((hosts, TlsLevel::Opportunistic)),
        Mode::Testing => {
            let unnamed: Vec<&String> = hosts.iter().filter(|h| !policy.matches(h)).collect();
            if !unnamed.is_empty() {
                tracing::warn!(domain, hosts = ?unnamed,
                    "MTA-STS (testing): MX hosts the policy does not name; delivered anyway");
            }
            Ok((hosts, TlsLevel::Opportunistic))
        }
        Mode::Enforce => {
            let named: Vec<String> = hosts
                .iter()
                .filter(|h| policy.matches(h))
                .cloned()
                .collect();
            if named.is_empty() {
                return Err(RouteError::Temporary(format!(
                    "MTA-STS: the policy of {domain} names none of its MX hosts ({})",
                    hosts.join(",")
                )));
            }
            Ok((named, TlsLevel::Verified))
        }
    }
}

/// Lowest preference first; hosts of equal preference in random order, so
/// the load spreads over them (RFC 5321 5.1: "the SMTP client SHOULD pick
/// one at random").
pub fn order_by_preference<R: Rng>(hosts: &mut [(u16, String)], rng: &mut R) {
    hosts.sort_by_key(|(p, _)| *p);
    let mut start = 0;
    while start < hosts.len() {
        let pref = hosts[start].0;
        let end = hosts[start..]
            .iter()
            .position(|(p, _)| *p != pref)
            .map_or(hosts.len(), |n| start + n);
        hosts[start..end].shuffle(rng);
        start = end;
    }
}

async fn resolve_hop(hop: &str) -> Result<Vec<Server>, RouteError> {
    let name = hop
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(hop)
        .trim_matches(['[', ']'])
        .to_string();
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Ok(vec![Server {
            addr,
            name,
            dane: HostDane::None,
        }]);
    }
    let with_port = if hop.contains(':') {
        hop.to_string()
    } else {
        format!("{hop}:{SMTP_PORT}")
    };
    let addrs = tokio::net::lookup_host(with_port)
        .await
        .map_err(|e| RouteError::Temporary(format!("cannot resolve {hop}: {e}")))?;
    let out: Vec<Server> = addrs
        .take(SERVERS_PER_DOMAIN_MAX)
        .map(|addr| Server {
            addr,
            name: name.clone(),
            dane: HostDane::None,
        })
        .collect();
    if out.is_empty() {
        return Err(RouteError::Temporary(format!("no address for {hop}")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn routes_then_smarthost() {
        let routes = HashMap::from([("Example.org".to_string(), "127.0.0.1:2626".to_string())]);
        let auth = Credentials {
            username: "u".into(),
            password: "p".into(),
        };
        let r = Router::new(routes, Some("127.0.0.1:2727".into()), Some(auth.clone()));
        assert_eq!(
            r.servers("example.ORG").await.unwrap()[0].addr,
            "127.0.0.1:2626".parse().unwrap()
        );
        assert_eq!(
            r.servers("other.example").await.unwrap()[0].addr,
            "127.0.0.1:2727".parse().unwrap()
        );
        // Credentials go to the smarthost only; one key per next hop.
        let routed = r.destination("example.org").await.unwrap();
        let smart = r.destination("other.example").await.unwrap();
        assert_eq!(routed.auth, None);
        assert_eq!(smart.auth, Some(auth));
        assert_eq!(smart.key, r.destination("third.example").await.unwrap().key);
        assert_ne!(routed.key, smart.key);
    }

    fn policy(mode: &str, mx: &[&str]) -> Applied {
        let text = format!(
            "version: STSv1\nmode: {mode}\n{}max_age: 86400\n",
            mx.iter().map(|m| format!("mx: {m}\n")).collect::<String>()
        );
        Applied::Policy(Arc::new(crate::mta_sts::parse_policy(&text).unwrap()))
    }

    fn hosts(h: &[&str]) -> Vec<String> {
        h.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_enforced_policy_keeps_the_hosts_it_names_in_order() {
        let mx = hosts(&["mx2.a.example", "evil.example", "mx1.a.example"]);
        let (kept, tls) = apply_policy(
            "a.example",
            mx.clone(),
            &policy("enforce", &["*.a.example"]),
        )
        .unwrap();
        assert_eq!(
            (kept, tls),
            (
                hosts(&["mx2.a.example", "mx1.a.example"]),
                TlsLevel::Verified
            )
        );
        let e = apply_policy(
            "a.example",
            mx.clone(),
            &policy("enforce", &["other.example"]),
        )
        .unwrap_err();
        assert_eq!(
            e,
            RouteError::Temporary(
                "MTA-STS: the policy of a.example names none of its MX hosts (mx2.a.example,evil.example,mx1.a.example)".into()
            )
        );
        // Testing, none and no policy change nothing.
        for p in [
            policy("testing", &["other.example"]),
            policy("none", &[]),
            Applied::NoPolicy,
        ] {
            assert_eq!(
                apply_policy("a.example", mx.clone(), &p).unwrap(),
                (mx.clone(), TlsLevel::Opportunistic)
            );
        }
    }

    #[test]
    fn sessions_are_shared_only_for_the_same_hosts_and_tls_level() {
        // Two domains with the same MX set and different policies: each
        // key names only the hosts its policy kept.
        let mx = hosts(&["mx.shared.example", "attacker.example"]);
        let (a, ta) = apply_policy(
            "a.example",
            mx.clone(),
            &policy("enforce", &["mx.shared.example"]),
        )
        .unwrap();
        let (b, tb) = apply_policy(
            "b.example",
            mx.clone(),
            &policy("enforce", &["attacker.example"]),
        )
        .unwrap();
        assert_ne!(mx_key(&a, ta), mx_key(&b, tb));
        assert_eq!(mx_key(&a, ta), "mx mx.shared.example mta-sts");
        // The same hosts: opportunistic and verified apart; order ignored.
        assert_ne!(
            mx_key(&a, TlsLevel::Opportunistic),
            mx_key(&a, TlsLevel::Verified)
        );
        assert_eq!(
            mx_key(&hosts(&["b.x", "a.x", "b.x"]), TlsLevel::Opportunistic),
            mx_key(&hosts(&["a.x", "b.x"]), TlsLevel::Opportunistic)
        );
    }

    #[test]
    fn sessions_are_keyed_by_the_servers_given_and_their_tlsa_records() {
        let server = |name: &str, dane: HostDane| Server {
            addr: "192.0.2.1:25".parse().unwrap(),
            name: name.into(),
            dane,
        };
        let records = |d: u8| {
            HostDane::Required(vec![crate::dane::Tlsa::usable(3, 1, 1, &[d; 32]).unwrap()].into())
        };
        let plain = [server("a.x", HostDane::None), server("b.x", HostDane::None)];
        let dane = [server("a.x", records(1)), server("b.x", HostDane::None)];
        let other = [server("a.x", records(2)), server("b.x", HostDane::None)];
        let only_b = [server("b.x", HostDane::None)];
        let keys: Vec<String> = [&plain[..], &dane, &other, &only_b]
            .iter()
            .map(|s| servers_key(s, TlsLevel::Opportunistic))
            .collect();
        // Four different keys: without DANE, under other records, and a
        // host left out (its TLSA lookup failed) are never shared.
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 4, "{keys:?}");
        assert_eq!(keys[0], "mx a.x,b.x");
        assert!(keys[1].starts_with("mx a.x,b.x dane a.x#"), "{}", keys[1]);
        assert_eq!(keys[1], servers_key(&dane, TlsLevel::Opportunistic));
    }

    #[test]
    fn equal_preference_hosts_are_shuffled_and_preferences_kept() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(16);
        let hosts = vec![
            (20, "c".to_string()),
            (10, "a".to_string()),
            (10, "b".to_string()),
            (30, "d".to_string()),
        ];
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..64 {
            let mut h = hosts.clone();
            order_by_preference(&mut h, &mut rng);
            let prefs: Vec<u16> = h.iter().map(|(p, _)| *p).collect();
            assert_eq!(prefs, [10, 10, 20, 30]);
            assert_eq!((h[2].1.as_str(), h[3].1.as_str()), ("c", "d"));
            firsts.insert(h[0].1.clone());
        }
        // Both hosts of preference 10 come first sometimes (the chance
        // that one never does in 64 fair draws is 2^-63).
        assert_eq!(firsts.len(), 2, "{firsts:?}");
    }
}
