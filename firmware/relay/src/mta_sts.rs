//! MTA-STS (RFC 8461): a destination domain's statement that its MX hosts
//! take TLS with certificates valid for their names, so a sender must not
//! fall back to plaintext or to an unverified certificate for it.
//!
//! * Discovery (3.1): the TXT record `_mta-sts.<domain>`, `v=STSv1; id=…`.
//! * The policy (3.2, 3.3): `https://mta-sts.<domain>/.well-known/mta-sts.txt`
//!   over HTTPS whose certificate is valid for that name, status 200 only
//!   (redirects are not followed), `text/plain`, at most
//!   [`POLICY_BYTES_MAX`].
//! * Caching (5.1): a policy is kept for its `max_age`; it is fetched again
//!   when the TXT record's id changes; while a cached policy is unexpired a
//!   missing TXT record or a failed fetch leaves it in force. With no
//!   cached policy a failed fetch means "no policy" (3.3: "as though the
//!   domain has not implemented MTA-STS").
//! * Application (4, 5): in `enforce` mode only MX hosts that match one of
//!   the policy's `mx` patterns are used, and only over STARTTLS with a
//!   certificate valid for the MX host's name (WebPKI roots plus
//!   `[relay] tls_trust_file`); otherwise the mail waits (deferred), never
//!   sent in plaintext. `testing` mode sends as before and logs what
//!   `enforce` would have refused.
//!
//! The parsers are pure; [`StsResolver`] does the I/O.

use hickory_resolver::TokioResolver;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

/// A policy body larger than this is refused (RFC 8461 3.3 lets senders
/// limit it; 64 KiB is its suggestion).
pub const POLICY_BYTES_MAX: usize = 64 * 1024;
/// The HTTP response head (status line and header fields) read at most.
const RESPONSE_HEAD_BYTES_MAX: usize = 8 * 1024;
/// The longest `max_age` (RFC 8461 3.2: 31557600 seconds, about a year).
pub const MAX_AGE_MAX_SECS: u64 = 31_557_600;
/// Time for the whole policy fetch: connect, TLS, request and response.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to connect to one address of the policy host and finish TLS
/// there, so a silent address leaves time for the next.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// After a failed fetch with no policy cached, the domain counts as having
/// none for this long before the fetch is tried again.
pub const FAILED_FETCH_RETRY: Duration = Duration::from_secs(300);
/// Domains whose policy (or absence of one) is remembered.
pub const CACHE_ENTRIES_MAX: usize = 4096;
/// `mx` patterns taken from one policy.
const MX_PATTERNS_MAX: usize = 64;
/// The policy host's port (RFC 8461 3.3: HTTPS).
const HTTPS_PORT: u16 = 443;
/// Addresses of `mta-sts.<domain>` tried.
const POLICY_HOST_ADDRESSES_MAX: usize = 4;

/// A policy's mode (RFC 8461 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Testing,
    None,
}

/// A parsed policy (RFC 8461 3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// Lower-case patterns: `mx.example.com` or `*.example.com`.
    pub mx: Vec<String>,
    pub max_age: u64,
}

impl Policy {
    /// Whether MX host `host` is one the policy names (RFC 8461 4.1): equal
    /// without regard to case, or `*.` followed by the host's name without
    /// its leftmost label (a wildcard stands for exactly one label).
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(suffix) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
                None => *pattern == host,
            })
    }
}

/// The `id` of an MTA-STS TXT record (RFC 8461 3.1): `v=STSv1` first, then
/// `id=` of 1 to 32 letters and digits; other fields are ignored. `None`
/// for a record that is not one.
pub fn parse_txt(record: &str) -> Option<String> {
    let mut fields = record.split(';').map(str::trim);
    if fields.next()? != "v=STSv1" {
        return None;
    }
    let mut id = None;
    for field in fields {
        if let Some(value) = field.strip_prefix("id=") {
            let ok =
                (1..=32).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric());
            if !ok || id.is_some() {
                return None;
            }
            id = Some(value.to_string());
        }
    }
    id
}

/// Parses a policy body (RFC 8461 3.2): `key: value` lines ended by CRLF or
/// LF; `version: STSv1`, `mode`, `max_age` and (unless the mode is none) at
/// least one `mx` are required; unknown keys are ignored.
pub fn parse_policy(body: &str) -> Result<Policy, String> {
    let (mut version, mut mode, mut max_age) = (None, None, None);
    let mut mx = Vec::new();
    for line in body.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("line without a key: {}", printable(line)));
        };
        let value = value.trim_matches([' ', '\t']);
        match key {
            "version" => version = Some(value.to_string()),
            "mode" => {
                mode = Some(match value {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    other => return Err(format!("unknown mode {}", printable(other))),
                })
            }
            "max_age" => {
                // 1 to 10 digits (the ABNF), at most a year.
                let n: u64 = value
                    .parse()
                    .ok()
                    .filter(|_| {
                        (1..=10).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit())
                    })
                    .ok_or_else(|| format!("max_age {} is not a number", printable(value)))?;
                max_age = Some(n.min(MAX_AGE_MAX_SECS));
            }
            "mx" => {
                if mx.len() >= MX_PATTERNS_MAX {
                    return Err(format!("more than {MX_PATTERNS_MAX} mx patterns"));
                }
                if !valid_pattern(value) {
                    return Err(format!(
                        "mx pattern {} is not a host name",
                        printable(value)
                    ));
                }
                mx.push(value.trim_end_matches('.').to_ascii_lowercase());
            }
            _ => {}
        }
    }
    if version.as_deref() != Some("STSv1") {
        return Err("no version: STSv1".into());
    }
    let mode = mode.ok_or("no mode")?;
    let max_age = max_age.ok_or("no max_age")?;
    if mx.is_empty() && mode != Mode::None {
        return Err("no mx pattern".into());
    }
    Ok(Policy { mode, mx, max_age })
}

/// A host name, optionally with a leading `*.` (RFC 8461 3.2's mx value).
fn valid_pattern(p: &str) -> bool {
    let name = p.strip_prefix("*.").unwrap_or(p).trim_end_matches('.');
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A value from the network as it may go into a log line or a reason.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(80)
        .collect()
}

/// Splits an HTTP response (RFC 9112) into its status, Content-Type and
/// body. Only `200` with a `text/plain` body is a policy; a redirect is an
/// error (RFC 8461 3.3). The request was HTTP/1.0, so the body is not
/// chunked: it runs to Content-Length or to the end of the stream.
pub fn parse_response(response: &[u8]) -> Result<&[u8], String> {
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of the response head")?;
    let head = std::str::from_utf8(&response[..head_end]).map_err(|_| "response head not text")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split(' ').nth(1).unwrap_or_default();
    if !status.starts_with("HTTP/1.") || code != "200" {
        return Err(format!("answered {}", printable(status)));
    }
    let (mut content_type, mut length) = (None, None);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.to_ascii_lowercase());
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| "bad Content-Length".to_string())?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("a transfer coding in an HTTP/1.0 answer".into());
        }
    }
    let media = content_type.unwrap_or_default();
    if media.split(';').next().map(str::trim) != Some("text/plain") {
        return Err(format!(
            "media type {} is not text/plain",
            printable(&media)
        ));
    }
    let body = &response[head_end + 4..];
    match length {
        Some(n) if n > body.len() => Err("the body ended before its Content-Length".into()),
        Some(n) => Ok(&body[..n]),
        None => Ok(body),
    }
}

/// Whether a response head carries a Content-Length field.
fn has_content_length(response: &[u8]) -> bool {
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(response.len());
    String::from_utf8_lossy(&response[..head_end])
        .split("\r\n")
        .any(|l| {
            l.split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        })
}

/// One delivery's place in line for a domain's policy fetch. The last one
/// out (however it leaves: answered from the cache, fetched, or dropped
/// with its delivery) takes the domain's lock out of the map, so the map
/// holds only domains with a delivery waiting.
struct FetchTurn<'a> {
    map: &'a Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    domain: &'a str,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for FetchTurn<'_> {
    fn drop(&mut self) {
        if let Ok(mut f) = self.map.lock()
            // The map's reference and this one: nobody else is waiting.
            && Arc::strong_count(&self.lock) <= 2
        {
            f.remove(self.domain);
        }
    }
}

/// What the relay does for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// No policy in force (none published, or none could be fetched and
    /// none is cached). A policy of mode none is a `Policy`.
    NoPolicy,
    Policy(Arc<Policy>),
}

enum Cached {
    /// No policy in force until `until`: the domain publishes no MTA-STS
    /// record, or its policy could not be fetched and none was cached
    /// (RFC 8461 3.3: delivery goes on as without MTA-STS; the fetch is
    /// not tried again for every message).
    Absent { until: Instant },
    Policy {
        id: String,
        policy: Arc<Policy>,
        expires: Instant,
    },
}

/// Finds, fetches and caches domains' policies. Shared by the relay's
/// deliveries (`Send + Sync`).
pub struct StsResolver {
    resolver: TokioResolver,
    tls: Arc<rustls::ClientConfig>,
    absent_ttl: Duration,
    cache: Mutex<HashMap<String, Cached>>,
    /// Domains whose policy is being fetched, each with the lock the
    /// deliveries to it wait on.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl StsResolver {
    /// `tls` verifies certificates (see [`crate::verified_tls`]);
    /// `absent_ttl`: how long "this domain publishes no record" is
    /// remembered (`dns.negative_ttl_secs`; the TXT lookup itself is cached
    /// by the resolver).
    pub fn new(
        resolver: TokioResolver,
        tls: Arc<rustls::ClientConfig>,
        absent_ttl: Duration,
    ) -> StsResolver {
        StsResolver {
            resolver,
            tls,
            absent_ttl,
            cache: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashMap::new()),
        }
    }

    /// The configuration that verifies certificates, for the sessions to MX
    /// hosts of a domain with an enforced policy.
    pub fn tls(&self) -> Arc<rustls::ClientConfig> {
        self.tls.clone()
    }

    /// The policy in force for `domain` (lower case, no final dot).
    pub async fn policy(&self, domain: &str) -> Applied {
        let now = Instant::now();
        let cached = self.cached(domain, now);
        if let Some(Applied::NoPolicy) = &cached {
            return Applied::NoPolicy;
        }
        let id = match self.txt_id(domain).await {
            Ok(Some(id)) => id,
            Ok(None) => {
                // No record: a cached policy stays in force until it
                // expires (RFC 8461 5.1); else remember the absence.
                if let Some(Applied::Policy(p)) = cached {
                    return Applied::Policy(p);
                }
                self.store(
                    domain,
                    Cached::Absent {
                        until: now + self.absent_ttl,
                    },
                );
                return Applied::NoPolicy;
            }
            Err(why) => {
                tracing::debug!(domain, %why, "MTA-STS record lookup failed");
                return cached.unwrap_or(Applied::NoPolicy);
            }
        };
        if let Some(p) = self.cached_with_id(domain, &id, now) {
            return Applied::Policy(p);
        }
        // One fetch per domain at a time: deliveries to the same domain
        // wait for it and then take its result from the cache.
        let gate = match self.fetching.lock() {
            Ok(mut f) => FetchTurn {
                map: &self.fetching,
                domain,
                lock: f.entry(domain.to_string()).or_default().clone(),
            },
            Err(_) => return cached.unwrap_or(Applied::NoPolicy),
        };
        let _turn = gate.lock.lock().await;
        if let Some(p) = self.cached_with_id(domain, &id, Instant::now()) {
            return Applied::Policy(p);
        }
        if let Some(Applied::NoPolicy) = self.cached(domain, Instant::now()) {
            return Applied::NoPolicy;
        }
        let fetched = timeout(FETCH_TIMEOUT, self.fetch(domain)).await;
        match fetched {
            Ok(Ok(policy)) => {
                let policy = Arc::new(policy);
                tracing::info!(domain, id = %id, mode = ?policy.mode, max_age = policy.max_age,
                    "MTA-STS policy fetched");
                self.store(
                    domain,
                    Cached::Policy {
                        id,
                        policy: policy.clone(),
                        expires: now + Duration::from_secs(policy.max_age),
                    },
                );
                Applied::Policy(policy)
            }
            failed => {
                let why = match failed {
                    Ok(Err(why)) => why,
                    _ => "timed out".to_string(),
                };
                tracing::warn!(domain, %why, "MTA-STS policy fetch failed");
                match cached {
                    Some(policy) => policy,
                    None => {
                        self.store(
                            domain,
                            Cached::Absent {
                                until: Instant::now() + FAILED_FETCH_RETRY,
                            },
                        );
                        Applied::NoPolicy
                    }
                }
            }
        }
    }

    /// The unexpired cache entry: `Some(NoPolicy)` for a remembered absence.
    fn cached(&self, domain: &str, now: Instant) -> Option<Applied> {
        let cache = self.cache.lock().ok()?;
        match cache.get(domain)? {
            Cached::Absent { until } if *until > now => Some(Applied::NoPolicy),
            Cached::Policy {
                policy, expires, ..
            } if *expires > now => Some(Applied::Policy(policy.clone())),
            _ => None,
        }
    }

    fn cached_with_id(&self, domain: &str, id: &str, now: Instant) -> Option<Arc<Policy>> {
        let cache = self.cache.lock().ok()?;
        match cache.get(domain)? {
            Cached::Policy {
                id: cached,
                policy,
                expires,
            } if cached == id && *expires > now => Some(policy.clone()),
            _ => None,
        }
    }

    fn store(&self, domain: &str, entry: Cached) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= CACHE_ENTRIES_MAX && !cache.contains_key(domain) {
            let now = Instant::now();
            cache.retain(|_, c| match c {
                Cached::Absent { until } => *until > now,
                Cached::Policy { expires, .. } => *expires > now,
            });
            if cache.len() >= CACHE_ENTRIES_MAX {
                // Full of live entries: an absence first, then the policy
                // that protects least (not enforce) and expires soonest.
                let victim = cache
                    .iter()
                    .min_by_key(|(_, c)| match c {
                        Cached::Absent { .. } => (0, None),
                        Cached::Policy {
                            policy, expires, ..
                        } => (
                            if policy.mode == Mode::Enforce { 2 } else { 1 },
                            Some(*expires),
                        ),
                    })
                    .map(|(d, _)| d.clone());
                if let Some(victim) = victim {
                    cache.remove(&victim);
                }
            }
        }
        cache.insert(domain.to_string(), entry);
    }

    /// The id of the domain's one MTA-STS TXT record; `Ok(None)` when there
    /// is none or more than one (RFC 8461 3.1).
    async fn txt_id(&self, domain: &str) -> Result<Option<String>, String> {
        let answer = match self
            .resolver
            .txt_lookup(format!("_mta-sts.{domain}."))
            .await
        {
            Ok(answer) => answer,
            // Only NXDOMAIN and NOERROR-without-data say "no record";
            // hickory reports SERVFAIL and REFUSED as "no records" too.
            Err(e) if e.is_nx_domain() || crate::route::no_data(&e) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let mut records = answer.iter().map(|txt| {
            txt.txt_data()
                .iter()
                .flat_map(|part| part.iter().copied())
                .collect::<Vec<u8>>()
        });
        // RFC 8461 3.1: records not beginning with "v=STSv1;" are
        // discarded; more than one left, or a malformed one, is no record.
        let sts: Vec<Vec<u8>> = records
            .by_ref()
            .filter(|r| r.starts_with(b"v=STSv1;"))
            .take(2)
            .collect();
        match sts.as_slice() {
            [one] => Ok(parse_txt(&String::from_utf8_lossy(one))),
            _ => Ok(None),
        }
    }

    /// One HTTPS GET of the policy (RFC 8461 3.3).
    async fn fetch(&self, domain: &str) -> Result<Policy, String> {
        let host = format!("mta-sts.{domain}");
        let ips = self
            .resolver
            .lookup_ip(format!("{host}."))
            .await
            .map_err(|e| format!("{host}: {e}"))?;
        let mut last = format!("{host} has no address");
        for ip in ips.iter().take(POLICY_HOST_ADDRESSES_MAX) {
            match self.get(SocketAddr::new(ip, HTTPS_PORT), &host).await {
                Ok(body) => {
                    let text = std::str::from_utf8(&body).map_err(|_| "policy not UTF-8")?;
                    return parse_policy(text).map_err(|e| format!("policy of {domain}: {e}"));
                }
                Err(e) => last = format!("{host} ({ip}): {e}"),
            }
        }
        Err(last)
    }

    async fn get(&self, addr: SocketAddr, host: &str) -> Result<Vec<u8>, String> {
        let name = rustls_pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| format!("bad host name: {e}"))?;
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let mut tls = timeout(CONNECT_TIMEOUT, async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))
        })
        .await
        .map_err(|_| "connection and TLS timed out".to_string())??;
        let request = format!(
            "GET /.well-known/mta-sts.txt HTTP/1.0\r\nHost: {host}\r\nUser-Agent: mxrack\r\nConnection: close\r\n\r\n"
        );
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("cannot send the request: {e}"))?;
        let limit = RESPONSE_HEAD_BYTES_MAX + POLICY_BYTES_MAX;
        let mut response = Vec::new();
        let mut buf = [0u8; 8192];
        let mut clean_end = true;
        loop {
            match tls.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    response.extend_from_slice(&buf[..n]);
                    if response.len() > limit {
                        return Err(format!("answer larger than {limit} bytes"));
                    }
                }
                // A server that closes without TLS close_notify: what came
                // counts only when a Content-Length says it is whole.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    clean_end = false;
                    break;
                }
                Err(e) => return Err(format!("cannot read the answer: {e}")),
            }
        }
        let body = parse_response(&response)?;
        if !clean_end && !has_content_length(&response) {
            return Err("the answer ended without close_notify or a Content-Length".into());
        }
        if body.len() > POLICY_BYTES_MAX {
            return Err(format!("policy larger than {POLICY_BYTES_MAX} bytes"));
        }
        Ok(body.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n";

    #[test]
    fn the_rfc_example_policy_parses() {
        // RFC 8461 3.2's example.
        let p = parse_policy(POLICY).unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 604_800);
        assert_eq!(
            p.mx,
            ["mail.example.com", "*.example.net", "backupmx.example.com"]
        );
        // LF line ends, unknown keys, spaces after the colon.
        let p = parse_policy(
            "version: STSv1\nmode:testing\nfuture: x\nmx:  A.Example.ORG.\nmax_age: 86400\n",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Testing);
        assert_eq!(p.mx, ["a.example.org"]);
        // mode none needs no mx.
        assert_eq!(
            parse_policy("version: STSv1\nmode: none\nmax_age: 1\n")
                .unwrap()
                .mode,
            Mode::None
        );
        // max_age above a year is cut to a year.
        let p =
            parse_policy("version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 9999999999\n").unwrap();
        assert_eq!(p.max_age, MAX_AGE_MAX_SECS);
    }

    #[test]
    fn bad_policies_are_refused_with_the_reason() {
        for (body, why) in [
            ("mode: enforce\nmx: a.b\nmax_age: 1\n", "no version"),
            (
                "version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1\n",
                "no version",
            ),
            ("version: STSv1\nmx: a.b\nmax_age: 1\n", "no mode"),
            (
                "version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1\n",
                "unknown mode",
            ),
            ("version: STSv1\nmode: enforce\nmx: a.b\n", "no max_age"),
            (
                "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1\n",
                "not a number",
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 12345678901\n",
                "not a number",
            ),
            ("version: STSv1\nmode: enforce\nmax_age: 1\n", "no mx"),
            (
                "version: STSv1\nmode: enforce\nmx: a..b\nmax_age: 1\n",
                "not a host name",
            ),
            (
                "version: STSv1\nmode: enforce\nmx: **.b\nmax_age: 1\n",
                "not a host name",
            ),
            ("version: STSv1\nmode: enforce\n<html>\n", "without a key"),
        ] {
            let e = parse_policy(body).expect_err(body);
            assert!(e.contains(why), "{body:?}: {e}");
        }
        let many = format!(
            "version: STSv1\nmode: enforce\nmax_age: 1\n{}",
            "mx: a.b\n".repeat(MX_PATTERNS_MAX + 1)
        );
        assert!(parse_policy(&many).unwrap_err().contains("more than"));
    }

    #[test]
    fn wildcards_stand_for_exactly_one_label() {
        // RFC 8461 4.1.
        let p = parse_policy(POLICY).unwrap();
        assert!(p.matches("mail.example.com"));
        assert!(p.matches("MAIL.Example.com."));
        assert!(p.matches("mx1.example.net"));
        assert!(!p.matches("example.net"));
        assert!(!p.matches("a.mx1.example.net"));
        assert!(!p.matches(".example.net"));
        assert!(!p.matches("mail.example.com.evil.example"));
        assert!(!p.matches("other.example.com"));
    }

    #[test]
    fn txt_records() {
        assert_eq!(
            parse_txt("v=STSv1; id=20160831085700Z;"),
            Some("20160831085700Z".into())
        );
        assert_eq!(parse_txt("v=STSv1;id=abc"), Some("abc".into()));
        assert_eq!(parse_txt("v=STSv1; id=abc; ext=1"), Some("abc".into()));
        for bad in [
            "v=STSv2; id=a",
            "id=a; v=STSv1",
            "v=STSv1",
            "v=STSv1; id=",
            "v=STSv1; id=a-b",
            "v=STSv1; id=a; id=b",
            &format!("v=STSv1; id={}", "a".repeat(33)),
        ] {
            assert_eq!(parse_txt(bad), None, "{bad}");
        }
    }

    #[test]
    fn http_answers() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\nhelloEXTRA";
        assert_eq!(parse_response(ok).unwrap(), b"hello");
        let to_end = b"HTTP/1.0 200 OK\r\ncontent-type: TEXT/PLAIN\r\n\r\nall of it";
        assert_eq!(parse_response(to_end).unwrap(), b"all of it");
        for (bad, why) in [
            (&b"HTTP/1.1 301 Moved\r\nLocation: https://x/\r\n\r\n"[..], "answered HTTP/1.1 301"),
            (b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\r\n", "404"),
            (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\nx", "not text/plain"),
            (b"HTTP/1.1 200 OK\r\n\r\nx", "not text/plain"),
            (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nshort", "before its Content-Length"),
            (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "transfer coding"),
            (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n", "no end"),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "answered SSH"),
        ] {
            let e = parse_response(bad).expect_err(why);
            assert!(e.contains(why), "{why}: {e}");
        }
    }
}
