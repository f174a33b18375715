//! Where mail for a domain goes: a configured route for the domain, else the
//! smarthost, else the domain's MX records (RFC 5321 5.1), with the implicit
//! MX (the domain's own address) and null MX (RFC 7505) rules.

use hickory_resolver::TokioResolver;
use std::collections::HashMap;
use std::net::SocketAddr;
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

pub struct Router {
    routes: HashMap<String, String>,
    smarthost: Option<String>,
    resolver: OnceCell<Result<TokioResolver, String>>,
}

impl Router {
    /// `routes`: domain -> "host:port"; `smarthost`: "host:port" for the rest.
    pub fn new(routes: HashMap<String, String>, smarthost: Option<String>) -> Router {
        let routes = routes
            .into_iter()
            .map(|(d, h)| (d.to_ascii_lowercase(), h))
            .collect();
        Router {
            routes,
            smarthost,
            resolver: OnceCell::new(),
        }
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
        let domain = domain.to_ascii_lowercase();
        if let Some(hop) = self.routes.get(&domain).or(self.smarthost.as_ref()) {
            return resolve_hop(hop).await;
        }
        self.mx(&domain).await
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

    async fn mx(&self, domain: &str) -> Result<Vec<Server>, RouteError> {
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
        hosts.sort_by_key(|(p, _)| *p);
        if hosts.len() == 1 && (hosts[0].1 == "." || hosts[0].1.is_empty()) {
            return Err(RouteError::Permanent(format!(
                "{domain} accepts no mail (null MX, RFC 7505)"
            )));
        }
        let mut out = Vec::new();
        for (_, host) in hosts {
            let host = host.trim_end_matches('.').to_string();
            if let Ok(ips) = resolver.lookup_ip(format!("{host}.")).await {
                for ip in ips.iter() {
                    out.push(Server {
                        addr: SocketAddr::new(ip, SMTP_PORT),
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
        Ok(out)
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
        let r = Router::new(routes, Some("127.0.0.1:2727".into()));
        assert_eq!(
            r.servers("example.ORG").await.unwrap()[0].addr,
            "127.0.0.1:2626".parse().unwrap()
        );
        assert_eq!(
            r.servers("other.example").await.unwrap()[0].addr,
            "127.0.0.1:2727".parse().unwrap()
        );
    }
}
