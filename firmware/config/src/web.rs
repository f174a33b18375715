//! `[web]`: the appliance's web port: HTTPS serving the status page, its
//! JSON and Atom forms and the Prometheus metrics, and a plain HTTP listener
//! that only redirects to HTTPS.

use crate::validate::ConfigError;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Ports of the embedded default (see DESIGN.md "Services and ports").
pub const EMBEDDED_HTTP_ADDR: &str = "127.0.0.1:8080";
pub const EMBEDDED_HTTPS_ADDR: &str = "127.0.0.1:8443";

/// Web connections from one client network per kind of listener.
pub const WEB_MAX_CONNECTIONS_PER_CLIENT: usize = 50;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Web {
    /// Plain HTTP listeners (port 80): every request is redirected to HTTPS.
    pub http: Vec<SocketAddr>,
    /// HTTPS listeners (port 443): /status, /status.json, /status.atom,
    /// /metrics, and CardDAV under /dav/ (with /.well-known/carddav).
    pub https: Vec<SocketAddr>,
    /// Serve the LDAP address books over CardDAV (RFC 6352) on the HTTPS
    /// listeners, to mailboxes logging in with their mail password.
    pub carddav: bool,
    /// Serve the web Manager under /manager/ on the HTTPS listeners.
    pub manager: bool,
    /// Web connections open at once on each kind of listener (`http` and
    /// `https` each have a pool of this size); beyond it 503 (inside TLS on
    /// `https`).
    pub max_connections: usize,
    /// Web connections from one client network (IPv4 address, IPv6 /64) on
    /// each kind of listener.
    pub max_connections_per_client: usize,
    /// Time a client gets to send a request's head, and a connection's
    /// longest idle time between requests.
    pub request_timeout_secs: u64,
    /// The HTTPS port clients reach from outside, when a port forward or
    /// NAT in front of the appliance maps another one to `https` (the HTTP
    /// redirect names it; by default the first `https` listener's port).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_https_port: Option<u16>,
}

impl Default for Web {
    fn default() -> Self {
        Web {
            http: vec![],
            https: vec![],
            max_connections: 200,
            max_connections_per_client: WEB_MAX_CONNECTIONS_PER_CLIENT,
            request_timeout_secs: 30,
            carddav: true,
            manager: true,
            public_https_port: None,
        }
    }
}

impl Web {
    /// The embedded default: loopback listeners on unprivileged ports.
    pub fn embedded_default() -> Web {
        let addr = |s: &str| s.parse::<SocketAddr>().into_iter().collect::<Vec<_>>();
        Web {
            http: addr(EMBEDDED_HTTP_ADDR),
            https: addr(EMBEDDED_HTTPS_ADDR),
            ..Web::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, why: &str| ConfigError::Invalid {
            key,
            why: why.to_string(),
        };
        if self.public_https_port == Some(0) {
            return Err(invalid("web.public_https_port", "must not be 0"));
        }
        if !self.http.is_empty() && self.https.is_empty() {
            return Err(invalid(
                "web.http",
                "plain HTTP only redirects to HTTPS, so web.https must be set too",
            ));
        }
        if !(1..=100_000).contains(&self.max_connections) {
            return Err(invalid(
                "web.max_connections",
                "must be between 1 and 100000",
            ));
        }
        if !(1..=100_000).contains(&self.max_connections_per_client) {
            return Err(invalid(
                "web.max_connections_per_client",
                "must be between 1 and 100000",
            ));
        }
        if !(1..=3600).contains(&self.request_timeout_secs) {
            return Err(invalid(
                "web.request_timeout_secs",
                "must be between 1 and 3600",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    fn with_web(extra: &str) -> String {
        format!(
            "[appliance]\nhostname = \"mx1.example.net\"\nprimary_domain = \"example.net\"\ndata_dir = \"/d\"\n\n[smtp]\nmx = [\"0.0.0.0:25\"]\n\n[web]\n{extra}\n"
        )
    }

    #[test]
    fn web_listeners_and_errors_naming_the_key() {
        let c = Config::from_toml(&with_web(
            "http = [\"0.0.0.0:80\"]\nhttps = [\"0.0.0.0:443\"]",
        ))
        .expect("valid");
        assert_eq!(c.web.https.len(), 1);
        for (line, key) in [
            ("http = [\"0.0.0.0:80\"]", "web.http"),
            ("max_connections = 0", "web.max_connections"),
            (
                "max_connections_per_client = 0",
                "web.max_connections_per_client",
            ),
            ("request_timeout_secs = 0", "web.request_timeout_secs"),
            ("public_https_port = 0", "web.public_https_port"),
            // An address another service already listens on names this key.
            ("https = [\"0.0.0.0:25\"]", "web.https"),
        ] {
            let e = Config::from_toml(&with_web(line))
                .expect_err("refused")
                .to_string();
            assert!(e.starts_with(key), "{line}: {e}");
        }
        // Beyond a port number: refused by the parser.
        assert!(Config::from_toml(&with_web("public_https_port = 70000")).is_err());
        let d = Config::embedded_default("/tmp/x".into());
        assert_eq!(d.web.http[0].port(), 8080);
        assert_eq!(d.web.https[0].port(), 8443);
    }
}
