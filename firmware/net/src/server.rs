//! The accept loop every TCP service uses (after mini-redis's `server::run`):
//! each listener kind has its own [`Pool`] of sessions (so 500 idle
//! connections on the MX port never lock customers out of submission), a
//! pool also caps the sessions of one client network (an IPv4 /32, an IPv6
//! /64), a connection over either cap gets the protocol's "busy" line and is
//! closed (inside TLS on an implicit-TLS port), accept errors back off
//! instead of spinning, each session runs in its own task so a panic ends
//! that connection only, and the loop ends on shutdown.

use crate::{BoxStream, ShutdownSignal};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, warn};

/// Longest pause after repeated accept errors (EMFILE and friends).
const ACCEPT_BACKOFF_MAX_MS: u64 = 2_000;

/// Refusals being written at once per pool. Past it a connection over the
/// cap is closed without a word: a flood of refused connections must not
/// cost a task (and, on a TLS port, a handshake) each.
pub const REFUSALS_AT_ONCE_MAX: usize = 64;

/// How long a refused client gets to finish the TLS handshake (implicit-TLS
/// ports) and take the busy line.
pub const REFUSAL_TIMEOUT_SECS: u64 = 10;

/// The network a client address counts against: the address itself for
/// IPv4 (and IPv4-mapped IPv6), the /64 for IPv6 (one customer site gets a
/// /64 or more, so a per-address cap alone would not cap anyone).
pub fn client_network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        },
    }
}

/// The sessions of one listener kind (e.g. `smtp.mx`, over all its
/// addresses): at most `capacity` at once, at most `per_client_max` from one
/// client network. Memory: one counter per client network with a session
/// open, so at most `capacity` entries.
pub struct Pool {
    sessions: Arc<Semaphore>,
    capacity: usize,
    per_client_max: usize,
    clients: Mutex<HashMap<IpAddr, usize>>,
    refusals: Arc<Semaphore>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The pool is full.
    PoolFull,
    /// The client's network already has `per_client_max` sessions.
    ClientCap,
}

/// A session's place in its pool; given back on drop (also when the
/// session panics, since the admission lives in the task around it).
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    pool: Arc<Pool>,
    network: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut clients = self.pool.lock_clients();
        if let Some(n) = clients.get_mut(&self.network) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                clients.remove(&self.network);
            }
        }
    }
}

impl Pool {
    pub fn new(capacity: usize, per_client_max: usize) -> Arc<Pool> {
        Arc::new(Pool {
            sessions: Arc::new(Semaphore::new(capacity)),
            capacity,
            per_client_max,
            clients: Mutex::new(HashMap::new()),
            refusals: Arc::new(Semaphore::new(REFUSALS_AT_ONCE_MAX)),
        })
    }

    fn lock_clients(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // A panic while holding this lock cannot leave a half-made change
        // (each change is one map operation), so a poisoned lock is used as is.
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place for a session from `ip`, or says which cap it is over.
    pub fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, Refused> {
        let network = client_network(ip);
        let mut clients = self.lock_clients();
        let open = clients.get(&network).copied().unwrap_or(0);
        if open >= self.per_client_max {
            return Err(Refused::ClientCap);
        }
        let permit = self
            .sessions
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::PoolFull)?;
        clients.insert(network, open + 1);
        drop(clients);
        Ok(Admission {
            _permit: permit,
            pool: self.clone(),
            network,
        })
    }

    /// Sessions open now.
    pub fn open(&self) -> usize {
        self.capacity - self.sessions.available_permits().min(self.capacity)
    }

    /// Sessions open now from `ip`'s client network.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.lock_clients()
            .get(&client_network(ip))
            .copied()
            .unwrap_or(0)
    }

    /// Waits until every session of the pool has ended, at most until
    /// `deadline`; false when some are still open then.
    pub async fn drained_by(&self, deadline: tokio::time::Instant) -> bool {
        let all = u32::try_from(self.capacity).unwrap_or(u32::MAX);
        tokio::time::timeout_at(deadline, self.sessions.acquire_many(all))
            .await
            .is_ok()
    }
}

/// What a client over a cap receives: the protocol's busy line (SMTP 421,
/// IMAP BYE, POP3 -ERR [SYS/TEMP], an LDAP notice of disconnection), inside
/// TLS when the port speaks TLS from the first byte.
#[derive(Clone)]
pub struct Refusal {
    pub busy_line: Arc<[u8]>,
    /// Set on implicit-TLS ports (465, 993, 995, 636, 443): the refusal
    /// runs the handshake first, so the client's TLS stack reads the line.
    pub tls: Option<TlsAcceptor>,
}

impl Refusal {
    pub fn plain(busy_line: impl Into<Arc<[u8]>>) -> Refusal {
        Refusal {
            busy_line: busy_line.into(),
            tls: None,
        }
    }

    async fn send(&self, socket: TcpStream) {
        let mut stream: BoxStream = match &self.tls {
            None => Box::new(socket),
            Some(acceptor) => match acceptor.accept(socket).await {
                Ok(tls) => Box::new(tls),
                Err(e) => {
                    debug!(error = %e, "TLS handshake of a refused connection failed");
                    return;
                }
            },
        };
        let _ = stream.write_all(&self.busy_line).await;
        let _ = stream.shutdown().await;
    }
}

/// Accepts connections until shutdown; `pool` decides who is admitted,
/// `refusal` what the others receive.
pub async fn accept_loop<F, Fut>(
    service: &'static str,
    listener: Arc<TcpListener>,
    pool: Arc<Pool>,
    mut shutdown: ShutdownSignal,
    refusal: Refusal,
    handler: F,
) where
    F: Fn(BoxStream, SocketAddr, ShutdownSignal) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff_ms = 10;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait() => return,
            a = listener.accept() => a,
        };
        let (socket, peer) = match accepted {
            Ok(a) => {
                backoff_ms = 10;
                a
            }
            Err(e) => {
                // Out of file descriptors, usually: wait for sessions to end.
                warn!(service, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(ACCEPT_BACKOFF_MAX_MS);
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let admission = match pool.try_admit(peer.ip()) {
            Ok(a) => a,
            Err(why) => {
                debug!(service, client = %peer, ?why, "connection refused: busy");
                // Over the refusal budget the socket is just dropped.
                if let Ok(slot) = pool.refusals.clone().try_acquire_owned() {
                    let refusal = refusal.clone();
                    tokio::spawn(async move {
                        let _slot = slot;
                        let _ = tokio::time::timeout(
                            Duration::from_secs(REFUSAL_TIMEOUT_SECS),
                            refusal.send(socket),
                        )
                        .await;
                    });
                }
                continue;
            }
        };
        let session = handler(Box::new(socket), peer, shutdown.clone());
        tokio::spawn(async move {
            // The admission lives in this outer task, so it is returned even
            // when the session task panics.
            let _admission = admission;
            if let Err(e) = tokio::spawn(session).await
                && e.is_panic()
            {
                error!(service, client = %peer, "session panicked; connection closed, service goes on");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn client_networks_are_the_v4_address_and_the_v6_slash_64() {
        for (addr, network) in [
            ("192.0.2.7", "192.0.2.7"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
            ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::"),
            ("2001:db8:1:2::1", "2001:db8:1:2::"),
            ("2001:db8:1:3::1", "2001:db8:1:3::"),
        ] {
            assert_eq!(client_network(ip(addr)), ip(network), "{addr}");
        }
    }

    #[test]
    fn a_pool_caps_its_sessions_and_each_client_network() {
        let pool = Pool::new(4, 2);
        let a1 = pool.try_admit(ip("2001:db8::1")).expect("first");
        let _a2 = pool.try_admit(ip("2001:db8::2")).expect("same /64, second");
        assert_eq!(
            pool.try_admit(ip("2001:db8::3")).err(),
            Some(Refused::ClientCap),
            "third from the same /64"
        );
        let _b1 = pool.try_admit(ip("192.0.2.1")).expect("other client");
        let _c1 = pool.try_admit(ip("192.0.2.2")).expect("other client");
        assert_eq!(pool.open(), 4);
        assert_eq!(
            pool.try_admit(ip("192.0.2.3")).err(),
            Some(Refused::PoolFull)
        );
        drop(a1);
        assert_eq!(pool.open_from(ip("2001:db8::9")), 1);
        let _a3 = pool
            .try_admit(ip("2001:db8::3"))
            .expect("a place came back");
        assert_eq!(pool.open(), 4);
    }

    #[test]
    fn counters_go_when_their_last_session_ends() {
        let pool = Pool::new(10, 10);
        let sessions: Vec<_> = (0..5)
            .map(|i| pool.try_admit(IpAddr::from([10, 0, 0, i])).expect("admit"))
            .collect();
        assert_eq!(pool.lock_clients().len(), 5);
        drop(sessions);
        assert!(pool.lock_clients().is_empty());
        assert_eq!(pool.open(), 0);
    }
}

#[cfg(test)]
mod loop_tests {
    use super::*;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use tokio::io::AsyncReadExt;

    const BUSY: &[u8] = b"421 4.7.0 busy\r\n";

    async fn listen(pool: Arc<Pool>, refusal: Refusal) -> (SocketAddr, crate::Shutdown) {
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
        let addr = listener.local_addr().expect("addr");
        let shutdown = crate::Shutdown::new();
        tokio::spawn(accept_loop(
            "test",
            listener,
            pool,
            shutdown.signal(),
            refusal,
            |mut stream: BoxStream, _peer, _signal| async move {
                let _ = stream.write_all(b"220 hello\r\n").await;
                // Held open until the client goes.
                let mut sink = [0u8; 16];
                let _ = stream.read(&mut sink).await;
            },
        ));
        (addr, shutdown)
    }

    async fn read_all(mut s: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
            .await
            .expect("in time")
            .expect("read");
        got
    }

    #[tokio::test]
    async fn over_the_client_cap_gets_the_busy_line_and_a_place_comes_back() {
        let pool = Pool::new(10, 1);
        let (addr, _shutdown) = listen(pool.clone(), Refusal::plain(BUSY)).await;
        let mut first = TcpStream::connect(addr).await.expect("connect");
        let mut hello = [0u8; 11];
        first.read_exact(&mut hello).await.expect("greeting");
        assert_eq!(&hello, b"220 hello\r\n");
        let second = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(read_all(second).await, BUSY);
        drop(first);
        for _ in 0..200 {
            if pool.open() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(pool.open(), 0);
        let mut third = TcpStream::connect(addr).await.expect("connect");
        third.read_exact(&mut hello).await.expect("greeting");
        assert_eq!(&hello, b"220 hello\r\n");
    }

    #[tokio::test]
    async fn on_a_tls_port_the_refusal_is_sent_inside_tls() {
        let dir = std::env::temp_dir().join(format!("mxrack-refusal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tls = crate::load_or_create_tls(None, None, &dir, "mx.example.net").expect("tls");
        let refusal = Refusal {
            busy_line: BUSY.into(),
            tls: Some(tls.acceptor.clone()),
        };
        let (addr, _shutdown) = listen(Pool::new(0, 1), refusal).await;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&tls.cert_path).expect("cert") {
            roots.add(cert.expect("cert")).expect("root");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = rustls_pki_types::ServerName::try_from("mx.example.net").expect("name");
        let stream = connector.connect(name, tcp).await.expect("handshake");
        assert_eq!(read_all(stream).await, BUSY);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
