//! The self-check (`mxrack doctor`, and once at start): does every
//! configured service answer on its port as a client outside would reach it,
//! is the certificate valid and not about to expire, is the data folder
//! writable, is the clock sane?
//!
//! The seed's port-80 outage was a firewall that let 443 through and not 80:
//! every service was running and nothing looked wrong from inside. So each
//! listener is checked by connecting to it: a wildcard listener (0.0.0.0,
//! [::]) through the machine's own outward address, a specific one through
//! its address, and each must answer with its protocol's greeting.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mxrack_config::Config;
use mxrack_store::{IncidentAction, NewEvent, Severity, Store};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::cert::{self, CertFacts};
use crate::time;

/// How long one listener gets to connect and greet.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// A certificate expiring sooner than this fails the check.
pub const CERT_EXPIRY_MARGIN_SECS: i64 = 14 * 86_400;
/// Clocks before this are wrong (the firmware was built after it).
pub const CLOCK_EARLIEST: i64 = 1_767_225_600; // 2026-01-01
pub const CLOCK_LATEST: i64 = 4_102_444_800; // 2100-01-01
/// A file written now must carry a time this close to the clock.
const CLOCK_SKEW_MAX_SECS: i64 = 120;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    /// "smtp.mx 0.0.0.0:25", "certificate", "data folder", "clock".
    pub name: String,
    pub pass: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.pass)
    }

    /// One line per check: "PASS  name: detail" / "FAIL  name: detail".
    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&format!(
                "{}  {}: {}\n",
                if c.pass { "PASS" } else { "FAIL" },
                c.name,
                c.detail
            ));
        }
        let failed = self.checks.iter().filter(|c| !c.pass).count();
        out.push_str(&format!(
            "{} passed, {} failed\n",
            self.checks.len() - failed,
            failed
        ));
        out
    }
}

fn check(name: impl Into<String>, pass: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        pass,
        detail: detail.into(),
    }
}

/// An interface address as `outward_address` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    pub name: String,
    pub addr: IpAddr,
    pub up: bool,
    pub loopback: bool,
}

/// The address a client outside would use for a wildcard listener of this
/// family: the first up, non-loopback, non-link-local address.
pub fn outward_address(ifaces: &[IfAddr], v6: bool) -> Option<IpAddr> {
    ifaces
        .iter()
        .filter(|i| i.up && !i.loopback)
        .map(|i| i.addr)
        .find(|a| match a {
            IpAddr::V4(a) => !v6 && !a.is_loopback() && !a.is_link_local(),
            IpAddr::V6(a) => v6 && !a.is_loopback() && (a.segments()[0] & 0xffc0) != 0xfe80,
        })
}

/// The machine's interface addresses.
pub fn interfaces() -> Vec<IfAddr> {
    use nix::net::if_::InterfaceFlags;
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|i| {
            let a = i.address?;
            let ip = if let Some(v4) = a.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else {
                IpAddr::V6(a.as_sockaddr_in6()?.ip())
            };
            Some(IfAddr {
                name: i.interface_name,
                addr: ip,
                up: i.flags.contains(InterfaceFlags::IFF_UP),
                loopback: i.flags.contains(InterfaceFlags::IFF_LOOPBACK),
            })
        })
        .collect()
}

/// An address a user can connect to for a listener: the listener's own,
/// or for a wildcard (`0.0.0.0`, `[::]`) the machine's outward address,
/// else loopback. What the ready hints print (`swaks --server ...`).
pub fn connect_address(listen: SocketAddr, ifaces: &[IfAddr]) -> SocketAddr {
    target_of(listen, ifaces).0
}

/// Where to connect to reach `listen` from outside, and a note.
fn target_of(listen: SocketAddr, ifaces: &[IfAddr]) -> (SocketAddr, String) {
    if !listen.ip().is_unspecified() {
        return (listen, String::new());
    }
    match outward_address(ifaces, listen.is_ipv6()) {
        Some(ip) => (SocketAddr::new(ip, listen.port()), String::new()),
        None => {
            let lo = if listen.is_ipv6() {
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            } else {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            };
            (
                SocketAddr::new(lo, listen.port()),
                " (no outward address on this machine: checked on loopback)".into(),
            )
        }
    }
}

/// What a listener key speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// Greeting line starting with this, optionally after TLS; the QUIT
    /// command to leave politely.
    Greeting {
        tls: bool,
        prefix: &'static str,
        quit: &'static str,
    },
    Http {
        tls: bool,
    },
    /// Connect (and TLS) only: the client speaks first (LDAP).
    Connect {
        tls: bool,
    },
}

fn probe_of(key: &str) -> Probe {
    match key {
        "smtp.mx" | "smtp.submission" => Probe::Greeting {
            tls: false,
            prefix: "220",
            quit: "QUIT\r\n",
        },
        "smtp.submissions" => Probe::Greeting {
            tls: true,
            prefix: "220",
            quit: "QUIT\r\n",
        },
        "imap.imap" => Probe::Greeting {
            tls: false,
            prefix: "* OK",
            quit: "a LOGOUT\r\n",
        },
        "imap.imaps" => Probe::Greeting {
            tls: true,
            prefix: "* OK",
            quit: "a LOGOUT\r\n",
        },
        "pop3.pop3" => Probe::Greeting {
            tls: false,
            prefix: "+OK",
            quit: "QUIT\r\n",
        },
        "pop3.pop3s" => Probe::Greeting {
            tls: true,
            prefix: "+OK",
            quit: "QUIT\r\n",
        },
        "web.http" => Probe::Http { tls: false },
        "web.https" => Probe::Http { tls: true },
        "ldap.ldaps" => Probe::Connect { tls: true },
        _ => Probe::Connect { tls: false },
    }
}

/// Accepts any certificate: the check looks at the certificate itself
/// separately; here it only needs the connection and the served chain.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS client that accepts any certificate (the self-check looks at the
/// certificate itself separately).
pub fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The greeting (or HTTP status line) and, over TLS, the served certificate.
async fn probe(
    target: SocketAddr,
    hostname: &str,
    probe: Probe,
) -> Result<(String, Option<Vec<u8>>), String> {
    let tcp = TcpStream::connect(target)
        .await
        .map_err(|e| format!("no answer from {target}: {e}"))?;
    let tls = match probe {
        Probe::Greeting { tls, .. } | Probe::Http { tls } | Probe::Connect { tls } => tls,
    };
    if !tls {
        return converse(tcp, hostname, probe).await.map(|l| (l, None));
    }
    let name = ServerName::try_from(hostname.to_string())
        .unwrap_or_else(|_| ServerName::try_from("localhost").expect("a valid name"));
    let stream = tls_connector()?
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {target} failed: {e}"))?;
    let served = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec());
    converse(stream, hostname, probe).await.map(|l| (l, served))
}

async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    hostname: &str,
    probe: Probe,
) -> Result<String, String> {
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    match probe {
        Probe::Connect { .. } => Ok("accepts connections".into()),
        Probe::Greeting { prefix, quit, .. } => {
            stream
                .read_line(&mut line)
                .await
                .map_err(|e| format!("no greeting: {e}"))?;
            let _ = stream.get_mut().write_all(quit.as_bytes()).await;
            let line = line.trim_end().to_string();
            if line.starts_with(prefix) {
                Ok(line)
            } else if line.is_empty() {
                Err("connected, but the service said nothing".into())
            } else {
                Err(format!("unexpected greeting {line:?}"))
            }
        }
        Probe::Http { tls } => {
            let req = format!(
                "GET /status HTTP/1.1\r\nHost: {hostname}\r\nUser-Agent: mxrack-doctor\r\nConnection: close\r\n\r\n"
            );
            stream
                .get_mut()
                .write_all(req.as_bytes())
                .await
                .map_err(|e| format!("cannot send a request: {e}"))?;
            stream
                .read_line(&mut line)
                .await
                .map_err(|e| format!("no HTTP answer: {e}"))?;
            let line = line.trim_end().to_string();
            let code: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let ok = if tls {
                code == 200
            } else {
                (300..400).contains(&code)
            };
            if ok {
                Ok(line)
            } else {
                Err(format!("unexpected HTTP answer {line:?}"))
            }
        }
    }
}

/// The configured (or self-signed) certificate file.
pub fn cert_path(config: &Config) -> PathBuf {
    config
        .tls
        .cert
        .clone()
        .unwrap_or_else(|| config.appliance.data_dir.join("tls/cert.pem"))
}

fn cert_check(config: &Config, now: i64) -> (Check, Option<Vec<u8>>) {
    let path = cert_path(config);
    let self_signed = config.tls.cert.is_none();
    let der = match CertificateDer::pem_file_iter(&path)
        .map_err(|e| e.to_string())
        .and_then(|mut it| {
            it.next()
                .ok_or_else(|| "no certificate in it".to_string())?
                .map_err(|e| e.to_string())
        }) {
        Ok(d) => d.as_ref().to_vec(),
        Err(e) => {
            return (
                check(
                    "certificate",
                    false,
                    format!("cannot read {}: {e}", path.display()),
                ),
                None,
            );
        }
    };
    let Some(facts) = cert::parse(&der) else {
        return (
            check(
                "certificate",
                false,
                format!("{} does not parse", path.display()),
            ),
            Some(der),
        );
    };
    (
        cert_verdict(&facts, &config.appliance.hostname, self_signed, now, &path),
        Some(der),
    )
}

/// Is the certificate valid now, for long enough, and for the host name?
pub fn cert_verdict(
    facts: &CertFacts,
    hostname: &str,
    self_signed: bool,
    now: i64,
    path: &Path,
) -> Check {
    let days_left = (facts.not_after - now).div_euclid(86_400);
    let until = format!("valid until {}", time::date(facts.not_after));
    if now < facts.not_before {
        return check(
            "certificate",
            false,
            format!(
                "{} is not valid before {} (is the clock behind?)",
                path.display(),
                time::rfc3339(facts.not_before)
            ),
        );
    }
    if now >= facts.not_after {
        return check(
            "certificate",
            false,
            format!(
                "{} expired on {}",
                path.display(),
                time::date(facts.not_after)
            ),
        );
    }
    if facts.not_after - now < CERT_EXPIRY_MARGIN_SECS {
        return check(
            "certificate",
            false,
            format!(
                "{} expires in {days_left} days ({until}): renew it",
                path.display()
            ),
        );
    }
    let covered = facts
        .dns_names
        .iter()
        .any(|p| cert::name_matches(p, hostname));
    if !covered && !self_signed {
        return check(
            "certificate",
            false,
            format!(
                "{} does not name {hostname} (it names {})",
                path.display(),
                facts.dns_names.join(", ")
            ),
        );
    }
    check(
        "certificate",
        true,
        format!(
            "{}: {until}, {days_left} days left{}",
            path.display(),
            if self_signed {
                "; self-signed (clients will warn until a real certificate is configured)"
            } else {
                ""
            }
        ),
    )
}

/// Writes, syncs, reads back and removes a file in the data folder.
pub fn data_writable(data_dir: &Path, now: i64) -> (Check, Option<Check>) {
    use std::io::Write;
    let path = data_dir.join(format!(".doctor-{}", std::process::id()));
    let payload = format!("mxrack doctor {now}\n");
    let result = (|| -> std::io::Result<i64> {
        let mut f = std::fs::File::create(&path)?;
        f.write_all(payload.as_bytes())?;
        f.sync_all()?;
        let back = std::fs::read_to_string(&path)?;
        if back != payload {
            return Err(std::io::Error::other("read back something else"));
        }
        let mtime = std::fs::metadata(&path)?
            .modified()?
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
            .unwrap_or(0);
        Ok(mtime)
    })();
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(mtime) => {
            let skew = (mtime - now).abs();
            let clock = (skew > CLOCK_SKEW_MAX_SECS).then(|| {
                check(
                    "clock",
                    false,
                    format!("a file written now is dated {skew} s away from the clock"),
                )
            });
            (
                check(
                    "data folder",
                    true,
                    format!(
                        "{} is writable (written, synced, read back)",
                        data_dir.display()
                    ),
                ),
                clock,
            )
        }
        Err(e) => (
            check(
                "data folder",
                false,
                format!("cannot write in {}: {e}", data_dir.display()),
            ),
            None,
        ),
    }
}

/// Is the clock plausible (after the firmware was made, before 2100, not
/// behind the store's last write)?
pub fn clock_check(data_dir: &Path, now: i64) -> Check {
    if !(CLOCK_EARLIEST..CLOCK_LATEST).contains(&now) {
        return check(
            "clock",
            false,
            format!("the clock says {}: set the time (NTP)", time::rfc3339(now)),
        );
    }
    let meta = data_dir.join("meta.redb");
    if let Ok(m) = std::fs::metadata(&meta)
        && let Ok(t) = m.modified()
        && let Ok(d) = t.duration_since(std::time::UNIX_EPOCH)
    {
        let written = i64::try_from(d.as_secs()).unwrap_or(0);
        if written > now + 300 {
            return check(
                "clock",
                false,
                format!(
                    "the store was last written at {}, after now ({}): the clock went back",
                    time::rfc3339(written),
                    time::rfc3339(now)
                ),
            );
        }
    }
    check("clock", true, time::rfc3339(now))
}

/// Every check, as `mxrack doctor` prints them.
pub async fn run(config: &Config) -> Report {
    let now = time::now();
    let ifaces = interfaces();
    let hostname = config.appliance.hostname.clone();
    let (cert_result, file_der) = cert_check(config, now);
    let mut checks = Vec::new();
    let mut served_mismatch: Option<Check> = None;
    let mut probes = Vec::new();
    for (key, addrs) in config.listeners() {
        for &listen in addrs {
            let (target, note) = target_of(listen, &ifaces);
            let hostname = hostname.clone();
            probes.push(tokio::spawn(async move {
                let r =
                    tokio::time::timeout(PROBE_TIMEOUT, probe(target, &hostname, probe_of(key)))
                        .await
                        .unwrap_or_else(|_| {
                            Err(format!(
                                "no answer from {target} within {} s",
                                PROBE_TIMEOUT.as_secs()
                            ))
                        });
                (key, listen, target, note, r)
            }));
        }
    }
    for p in probes {
        let Ok((key, listen, target, note, r)) = p.await else {
            continue;
        };
        let name = format!("{key} {listen}");
        match r {
            Ok((greeting, served)) => {
                if let (Some(served), Some(file)) = (&served, &file_der)
                    && served != file
                    && served_mismatch.is_none()
                {
                    served_mismatch = Some(check(
                        "served certificate",
                        false,
                        format!(
                            "{key} {listen} serves another certificate than {}: restart mxrack after renewing it",
                            cert_path(config).display()
                        ),
                    ));
                }
                checks.push(check(
                    name,
                    true,
                    format!("answers from {target}{note}: {greeting}"),
                ));
            }
            Err(e) => checks.push(check(
                name,
                false,
                format!(
                    "{e}{note}. Clients cannot reach it: check that mxrack runs with this configuration and that no firewall blocks port {}",
                    listen.port()
                ),
            )),
        }
    }
    checks.push(cert_result);
    if let Some(m) = served_mismatch {
        checks.push(m);
    }
    // A probe file written and fsynced, a walk of the whole data folder:
    // blocking work, off the async workers (the self-check at start runs
    // while sessions are served).
    let data_dir = config.appliance.data_dir.clone();
    let local = mxrack_store::spawn_blocking(move || {
        let (data, skew) = data_writable(&data_dir, now);
        let modes = file_modes_check(&data_dir);
        let clock = skew.unwrap_or_else(|| clock_check(&data_dir, now));
        vec![data, modes, clock]
    })
    .await
    .unwrap_or_else(|e| {
        vec![check(
            "data folder",
            false,
            format!("the check failed: {e}"),
        )]
    });
    checks.extend(local);
    Report { checks }
}

/// Wrong modes shown by name, at most (the count is always given).
const WRONG_MODES_SHOWN_MAX: usize = 5;

/// "file modes": the data folder and everything in it private to the
/// service (folders 0700, files 0600); `mxrack run` repairs them at start.
pub fn file_modes_check(data_dir: &Path) -> Check {
    match mxrack_net::perms::audit(data_dir) {
        Ok(wrong) if wrong.is_empty() => check(
            "file modes",
            true,
            format!(
                "{} and everything in it are private (folders 0700, files 0600)",
                data_dir.display()
            ),
        ),
        Ok(wrong) => {
            let shown: Vec<String> = wrong
                .iter()
                .take(WRONG_MODES_SHOWN_MAX)
                .map(ToString::to_string)
                .collect();
            check(
                "file modes",
                false,
                format!(
                    "{} wrong: {}{}; other local users may read them. `mxrack run` repairs them at start",
                    wrong.len(),
                    shown.join(", "),
                    if wrong.len() > shown.len() {
                        ", ..."
                    } else {
                        ""
                    }
                ),
            )
        }
        Err(e) => check(
            "file modes",
            false,
            format!("cannot check {}: {e}", data_dir.display()),
        ),
    }
}

/// The start-up self-check: logs each failure and records an event (an
/// incident per failing check); a check that passes again resolves it.
pub async fn run_at_start(config: &Config, store: Arc<Store>) -> Report {
    let report = run(config).await;
    let (r, events_max) = (report.clone(), config.health.events_max);
    let _ = mxrack_store::spawn_blocking(move || record(&r, &store, events_max)).await;
    if report.passed() {
        tracing::info!(checks = report.checks.len(), "self-check passed");
    }
    report
}

/// Records the self-check's failures (and recoveries) as events.
fn record(report: &Report, store: &Store, events_max: u64) {
    let open: std::collections::BTreeSet<String> = store
        .status_open_incidents()
        .map(|v| v.into_iter().map(|(k, _)| k).collect())
        .unwrap_or_default();
    for c in &report.checks {
        let key = format!("selfcheck:{}", c.name);
        let event = if !c.pass {
            tracing::warn!(check = %c.name, "self-check failed: {}", c.detail);
            Some(NewEvent {
                time: time::now(),
                severity: Severity::Critical,
                component: format!("self-check {}", c.name),
                text: format!("Self-check failed: {}: {}", c.name, c.detail),
                incident: IncidentAction::Open {
                    key,
                    title: format!("Self-check failed: {}", c.name),
                },
            })
        } else if open.contains(&key) {
            Some(NewEvent {
                time: time::now(),
                severity: Severity::Notice,
                component: format!("self-check {}", c.name),
                text: format!("Self-check passes again: {}: {}", c.name, c.detail),
                incident: IncidentAction::Resolve { key },
            })
        } else {
            None
        };
        if let Some(e) = event
            && let Err(err) = store.event_record(&e, events_max)
        {
            tracing::error!(error = %err, "cannot record a self-check event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, addr: &str, up: bool, loopback: bool) -> IfAddr {
        IfAddr {
            name: name.into(),
            addr: addr.parse().expect("ip"),
            up,
            loopback,
        }
    }

    #[test]
    fn a_connectable_address_for_the_ready_hints() {
        let ifaces = [
            iface("lo", "127.0.0.1", true, true),
            iface("eth0", "10.0.2.15", true, false),
        ];
        let at = |s: &str| connect_address(s.parse().expect("addr"), &ifaces).to_string();
        assert_eq!(at("0.0.0.0:25"), "10.0.2.15:25");
        assert_eq!(
            at("192.0.2.7:587"),
            "192.0.2.7:587",
            "a specific address as it is"
        );
        assert_eq!(
            at("[::]:25"),
            "[::1]:25",
            "no IPv6 outward address: loopback"
        );
        assert_eq!(
            connect_address("0.0.0.0:25".parse().expect("addr"), &ifaces[..1]).to_string(),
            "127.0.0.1:25",
            "loopback only"
        );
    }

    #[test]
    fn the_outward_address_of_a_wildcard_listener() {
        let ifaces = [
            iface("lo", "127.0.0.1", true, true),
            iface("eth1", "192.0.2.9", false, false),
            iface("eth0", "169.254.1.1", true, false),
            iface("eth0", "10.0.2.15", true, false),
            iface("eth0", "fe80::1", true, false),
            iface("eth0", "2001:db8::15", true, false),
        ];
        assert_eq!(
            outward_address(&ifaces, false),
            Some("10.0.2.15".parse().expect("ip"))
        );
        assert_eq!(
            outward_address(&ifaces, true),
            Some("2001:db8::15".parse().expect("ip"))
        );
        let (t, note) = target_of("0.0.0.0:80".parse().expect("addr"), &ifaces);
        assert_eq!(t, "10.0.2.15:80".parse().expect("addr"));
        assert!(note.is_empty());
        let (t, _) = target_of("127.0.0.1:8080".parse().expect("addr"), &ifaces);
        assert_eq!(t, "127.0.0.1:8080".parse().expect("addr"));
        let (t, note) = target_of("0.0.0.0:80".parse().expect("addr"), &ifaces[..1]);
        assert_eq!(t, "127.0.0.1:80".parse().expect("addr"));
        assert!(note.contains("loopback"));
    }

    #[test]
    fn certificate_verdicts() {
        let p = Path::new("/etc/mxrack/cert.pem");
        let now = time::unix_of(2026, 11, 29, 12, 0, 0);
        let facts = |nb: i64, na: i64| CertFacts {
            not_before: nb,
            not_after: na,
            dns_names: vec!["*.example.net".into()],
        };
        let year = 365 * 86_400;
        assert!(
            cert_verdict(
                &facts(now - year, now + year),
                "mx1.example.net",
                false,
                now,
                p
            )
            .pass
        );
        let c = cert_verdict(
            &facts(now - year, now + 3 * 86_400),
            "mx1.example.net",
            false,
            now,
            p,
        );
        assert!(!c.pass && c.detail.contains("expires in 3 days"), "{c:?}");
        let c = cert_verdict(
            &facts(now - year, now - 1),
            "mx1.example.net",
            false,
            now,
            p,
        );
        assert!(!c.pass && c.detail.contains("expired"), "{c:?}");
        let c = cert_verdict(
            &facts(now + 3600, now + year),
            "mx1.example.net",
            false,
            now,
            p,
        );
        assert!(!c.pass && c.detail.contains("clock"), "{c:?}");
        let c = cert_verdict(
            &facts(now - year, now + year),
            "mail.other.org",
            false,
            now,
            p,
        );
        assert!(!c.pass && c.detail.contains("does not name"), "{c:?}");
        assert!(
            cert_verdict(
                &facts(now - year, now + year),
                "mail.other.org",
                true,
                now,
                p
            )
            .pass
        );
    }

    #[test]
    fn data_folder_and_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, skew) = data_writable(dir.path(), time::now());
        assert!(c.pass, "{c:?}");
        assert!(skew.is_none());
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            0,
            "cleaned up"
        );
        let (c, _) = data_writable(&dir.path().join("missing"), time::now());
        assert!(!c.pass);
        assert!(clock_check(dir.path(), time::now()).pass);
        assert!(!clock_check(dir.path(), time::unix_of(2001, 1, 1, 0, 0, 0)).pass);
        std::fs::write(dir.path().join("meta.redb"), "x").expect("write");
        let c = clock_check(dir.path(), CLOCK_EARLIEST + 10);
        assert!(!c.pass && c.detail.contains("clock went back"), "{c:?}");
    }

    #[tokio::test]
    async fn a_listener_that_does_not_answer_fails_like_port_80_behind_a_firewall() {
        // A greeting service, and a configured port nothing listens on.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let smtp = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(b"220 mx.test ESMTP\r\n").await;
            }
        });
        let closed = {
            let t = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            t.local_addr().expect("addr")
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let toml = format!(
            "[appliance]\nhostname = \"mx.test\"\nprimary_domain = \"example.net\"\ndata_dir = {:?}\n[smtp]\nmx = [\"{smtp}\"]\n[web]\nhttp = [\"{closed}\"]\nhttps = [\"127.0.0.1:1\"]\n",
            dir.path().display().to_string()
        );
        let config = Config::from_toml(&toml).expect("config");
        mxrack_net::load_or_create_tls(None, None, dir.path(), "mx.test").expect("tls");
        // (The test process has no umask 0077: made private as `mxrack run` does.)
        mxrack_net::perms::repair(dir.path()).expect("modes");
        let report = run(&config).await;
        let text = report.render();
        assert!(!report.passed(), "{text}");
        let mx = report
            .checks
            .iter()
            .find(|c| c.name.starts_with("smtp.mx"))
            .expect(&text);
        assert!(mx.pass && mx.detail.contains("220 mx.test ESMTP"), "{text}");
        let http = report
            .checks
            .iter()
            .find(|c| c.name.starts_with("web.http "))
            .expect(&text);
        assert!(!http.pass, "{text}");
        assert!(
            http.detail.contains(&format!("port {}", closed.port())),
            "{text}"
        );
        assert!(text.contains("PASS  certificate"), "{text}");
        assert!(text.contains("PASS  data folder"), "{text}");
        assert!(text.contains("PASS  file modes"), "{text}");
        assert!(text.contains("PASS  clock"), "{text}");
        assert!(text.ends_with("5 passed, 2 failed\n"), "{text}");

        // At start, each failure becomes an incident; passing again resolves it.
        // (Store calls run off the runtime, as the check requires.)
        let store_dir = dir.path().join("store");
        let store = mxrack_store::spawn_blocking(move || Store::open(&store_dir).expect("store"))
            .await
            .expect("open");
        run_at_start(&config, store.clone()).await;
        let s = store.clone();
        let open = mxrack_store::spawn_blocking(move || s.status_open_incidents())
            .await
            .expect("task")
            .expect("open");
        assert!(
            open.iter()
                .any(|(k, _)| *k == format!("selfcheck:web.http {closed}")),
            "{open:?}"
        );
    }
}
