//! Where mail for a domain goes: a configured route for the domain, else the
//! smarthost, else the domain's MX records (RFC 5321 5.1), with the implicit
//! MX (the domain's own address) and null MX (RFC 7505) rules. MX hosts of
//! equal preference are tried in random order (RFC 5321 5.1). A
//! `Destination` names where sessions go, so messages for one destination
//! share sessions. A domain's MTA-STS policy (RFC 8461, [`crate::mta_sts`])
//! in enforce mode narrows its MX hosts to those the policy names and asks
//! for verified TLS; routes and the smarthost are the operator's own
//! choice and are not subject to it.

use crate::client::Credentials;
use crate::mta_sts::{Applied, Mode, StsResolver};
use hickory_resolver::TokioResolver;
use rand::Rng;
use rand::seq::SliceRandom;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// Most servers tried for one domain in one attempt.
pub const SERVERS_PER_DOMAIN_MAX: usize = 8;
const SMTP_PORT: u16 = 25;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// DNS trouble: try later.
    Temporary(String),
    /// The domain does not exist or accepts no mail: bounce.
    Permanent(String),
}

/// One server to try and the name to present in TLS SNI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub addr: SocketAddr,
    pub name: String,
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
    mx_port: u16,
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
            mx_port: SMTP_PORT,
        }
    }

    /// Applies the MTA-STS policies `sts` finds to MX deliveries.
    pub fn with_mta_sts(self, sts: Arc<StsResolver>) -> Router {
        Router {
            sts: Some(sts),
            ..self
        }
    }

    /// MX hosts are reached on `port` instead of 25 (tests).
    pub fn with_mx_port(self, port: u16) -> Router {
        Router {
            mx_port: port,
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
        let (hosts, servers) = self.mx(&domain).await?;
        let policy = match &self.sts {
            Some(sts) => sts.policy(&domain).await,
            None => Applied::NoPolicy,
        };
        apply_policy(&domain, hosts, servers, &policy)
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

    /// The MX hosts' names (sorted, joined: the destination key) and the
    /// servers in the order to try.
    async fn mx(&self, domain: &str) -> Result<(String, Vec<Server>), RouteError> {
        let resolver = self.resolver().await?;
        let mut hosts: Vec<(u16, String)> = match resolver.mx_lookup(format!("{domain}.")).await {
            Ok(mx) => mx
                .iter()
                .map(|r| (r.preference(), r.exchange().to_utf8()))
                .collect(),
            Err(e) if e.is_nx_domain() => {
                return Err(RouteError::Permanent(format!(
                    "domain {domain} does not exist"
                )));
            }
            // No MX: the domain itself is the implicit MX (RFC 5321 5.1).
            Err(e) if e.is_no_records_found() => vec![(0, domain.to_string())],
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
        let mut names: Vec<String> = hosts
            .iter()
            .map(|(_, h)| h.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        names.sort();
        names.dedup();
        let mut out = Vec::new();
        for (_, host) in hosts {
            let host = host.trim_end_matches('.').to_string();
            if let Ok(ips) = resolver.lookup_ip(format!("{host}.")).await {
                for ip in ips.iter() {
                    out.push(Server {
                        addr: SocketAddr::new(ip, self.mx_port),
                        name: host.clone(),
                    });
                }
            }
            if out.len() >= SERVERS_PER_DOMAIN_MAX {
                break;
            }
        }
        out.truncate(SERVERS_PER_DOMAIN_MAX);
        if out.is_empty() {
            return Err(RouteError::Temporary(format!(
                "no address for the mail servers of {domain}"
            )));
        }
        Ok((names.join(","), out))
    }
}

/// The destination for `domain`'s MX `servers` (`hosts`: their names, the
/// session key) under its MTA-STS policy (RFC 8461 5): enforce keeps the
/// servers whose MX name the policy names and asks for verified TLS, and
/// defers when none is left; testing logs what enforce would refuse and
/// changes nothing. An enforced destination's sessions are kept apart from
/// opportunistic ones to the same hosts.
pub fn apply_policy(
    domain: &str,
    hosts: String,
    servers: Vec<Server>,
    policy: &Applied,
) -> Result<Destination, RouteError> {
    let plain = |hosts: String, servers| Destination {
        key: format!("mx {hosts}"),
        servers,
        auth: None,
        tls: TlsLevel::Opportunistic,
    };
    let Applied::Policy(policy) = policy else {
        return Ok(plain(hosts, servers));
    };
    match policy.mode {
        Mode::None => Ok(plain(hosts, servers)),
        Mode::Testing => {
            let unnamed: Vec<&str> = servers
                .iter()
                .filter(|s| !policy.matches(&s.name))
                .map(|s| s.name.as_str())
                .collect();
            if !unnamed.is_empty() {
                tracing::warn!(domain, hosts = ?unnamed,
                    "MTA-STS (testing): MX hosts the policy does not name; delivered anyway");
            }
            Ok(plain(hosts, servers))
        }
        Mode::Enforce => {
            let named: Vec<Server> = servers
                .into_iter()
                .filter(|s| policy.matches(&s.name))
                .collect();
            if named.is_empty() {
                return Err(RouteError::Temporary(format!(
                    "MTA-STS: the policy of {domain} names none of its MX hosts ({hosts})"
                )));
            }
            Ok(Destination {
                key: format!("mx {hosts} mta-sts"),
                servers: named,
                auth: None,
                tls: TlsLevel::Verified,
            })
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
        return Ok(vec![Server { addr, name }]);
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
