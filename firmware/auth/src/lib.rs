//! `mxrack-auth`: the one authentication service every protocol asks.
//!
//! SMTP AUTH, IMAP LOGIN/AUTHENTICATE, POP3 USER/PASS/AUTH and LDAP bind
//! hand a login to [`AuthService::check`] (or [`AuthService::check_blocking`]
//! from a blocking thread) with a closure that does the lookup and the
//! Argon2 check (the store's, which runs on this crate's one pool,
//! [`argon`]). The service asks the one [`limiter::Limiter`] first, counts
//! the attempt when it starts, has the caller start the check on a blocking
//! thread, delays a
//! failure, and keeps the figures per protocol for `/metrics`. Each protocol
//! turns [`Verdict::Limited`] into its own temporary error (SMTP 454 4.7.0,
//! IMAP `NO [UNAVAILABLE]`, POP3 `-ERR [SYS/TEMP]`, LDAP busy).

pub mod argon;
pub mod limiter;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use limiter::{Limiter, Network, Spent};

/// The services that authenticate, in the order the metrics list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Smtp,
    Imap,
    Pop3,
    Ldap,
    /// CardDAV on the web port (issue 18).
    Dav,
}

impl Protocol {
    pub const ALL: [Protocol; 5] = [
        Protocol::Smtp,
        Protocol::Imap,
        Protocol::Pop3,
        Protocol::Ldap,
        Protocol::Dav,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Smtp => "smtp",
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
            Protocol::Ldap => "ldap",
            Protocol::Dav => "carddav",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The answer to one login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The password is right.
    Accepted,
    /// Wrong password or unknown name (the two are not told apart).
    Rejected,
    /// A budget is spent: answer with the protocol's temporary error; no
    /// password was checked.
    Limited(Spent),
    /// The check itself failed (store error): a temporary error too.
    Unavailable,
}

/// Counters of one protocol, as `/metrics` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub accepted: u64,
    pub rejected: u64,
    pub limited: u64,
    pub unavailable: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    rejected: AtomicU64,
    limited: AtomicU64,
    unavailable: AtomicU64,
}

pub struct AuthService {
    limiter: Mutex<Limiter>,
    figures: [Counters; 5],
}

impl AuthService {
    pub fn new(budgets: mxrack_config::Auth) -> AuthService {
        AuthService {
            limiter: Mutex::new(Limiter::new(budgets)),
            figures: Default::default(),
        }
    }

    /// Checks a login from an async session: admits it (or not), then
    /// calls `start`, which starts the check on a blocking thread and
    /// returns its handle (the caller's `mxrack_store::spawn_blocking`, so
    /// that the store's lookup is marked as off the async workers), and
    /// sleeps the failure delay before answering Rejected. `start` is not
    /// called for a refused attempt. `account` is the name as the client
    /// gave it; it is lower-cased here for the budgets.
    pub async fn check<F, Fut, E>(
        &self,
        protocol: Protocol,
        ip: IpAddr,
        account: &str,
        start: F,
    ) -> Verdict
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Result<bool, E>, tokio::task::JoinError>>,
        E: std::fmt::Display,
    {
        let ticket = match self.begin(protocol, ip, account) {
            Ok(t) => t,
            Err(v) => return v,
        };
        let result = start()
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let (verdict, delay) = self.finish(protocol, ticket, result);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        verdict
    }

    /// [`check`](Self::check) for a caller on a blocking thread (LDAP):
    /// `verify` runs here and the failure delay is slept here.
    pub fn check_blocking<E: std::fmt::Display>(
        &self,
        protocol: Protocol,
        ip: IpAddr,
        account: &str,
        verify: impl FnOnce() -> Result<bool, E>,
    ) -> Verdict {
        let ticket = match self.begin(protocol, ip, account) {
            Ok(t) => t,
            Err(v) => return v,
        };
        let result = verify().map_err(|e| e.to_string());
        let (verdict, delay) = self.finish(protocol, ticket, result);
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        verdict
    }

    fn begin(
        &self,
        protocol: Protocol,
        ip: IpAddr,
        account: &str,
    ) -> Result<limiter::Ticket, Verdict> {
        let account = account.to_lowercase();
        let admitted = self
            .limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .begin(ip, &account, Instant::now());
        admitted.map_err(|spent| {
            self.figures[protocol.index()]
                .limited
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                protocol = protocol.name(),
                client = %ip,
                account = %account,
                budget = ?spent,
                "login refused: attempt budget spent"
            );
            Verdict::Limited(spent)
        })
    }

    fn finish(
        &self,
        protocol: Protocol,
        ticket: limiter::Ticket,
        result: Result<bool, String>,
    ) -> (Verdict, Duration) {
        let counters = &self.figures[protocol.index()];
        let mut limiter = self.limiter.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(true) => {
                counters.accepted.fetch_add(1, Ordering::Relaxed);
                (Verdict::Accepted, limiter.finish(ticket, true))
            }
            Ok(false) => {
                counters.rejected.fetch_add(1, Ordering::Relaxed);
                (Verdict::Rejected, limiter.finish(ticket, false))
            }
            Err(e) => {
                // Not the client's fault: the attempt is given back.
                counters.unavailable.fetch_add(1, Ordering::Relaxed);
                tracing::error!(protocol = protocol.name(), error = %e, "password check failed");
                limiter.finish(ticket, true);
                (Verdict::Unavailable, Duration::ZERO)
            }
        }
    }

    /// The figures of each protocol, in [`Protocol::ALL`] order.
    pub fn figures(&self) -> Vec<(Protocol, Figures)> {
        Protocol::ALL
            .iter()
            .map(|&p| {
                let c = &self.figures[p.index()];
                (
                    p,
                    Figures {
                        accepted: c.accepted.load(Ordering::Relaxed),
                        rejected: c.rejected.load(Ordering::Relaxed),
                        limited: c.limited.load(Ordering::Relaxed),
                        unavailable: c.unavailable.load(Ordering::Relaxed),
                    },
                )
            })
            .collect()
    }

    /// The budgets in force.
    pub fn budgets(&self) -> mxrack_config::Auth {
        self.limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .budgets()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn service() -> Arc<AuthService> {
        Arc::new(AuthService::new(mxrack_config::Auth {
            window_secs: 60,
            network_attempts_max: 6,
            account_attempts_max: 6,
            pair_attempts_max: 3,
            failure_delay_ms: 20,
            failure_delay_max_ms: 50,
            tracked_keys_max: 1_024,
        }))
    }

    fn ip() -> IpAddr {
        "192.0.2.1".parse().expect("ip")
    }

    /// One budget across protocols: guesses over SMTP, IMAP and POP3 for
    /// one account share the pair budget, and the figures say so.
    #[tokio::test]
    async fn one_budget_for_every_protocol() {
        let auth = service();
        let wrong = || tokio::task::spawn_blocking(|| Ok::<bool, String>(false));
        assert_eq!(
            auth.check(Protocol::Smtp, ip(), "Jo@acme.example", wrong)
                .await,
            Verdict::Rejected
        );
        assert_eq!(
            auth.check(Protocol::Imap, ip(), "jo@acme.example", wrong)
                .await,
            Verdict::Rejected
        );
        assert_eq!(
            auth.check(Protocol::Pop3, ip(), "jo@acme.example", wrong)
                .await,
            Verdict::Rejected
        );
        assert_eq!(
            auth.check_blocking(
                Protocol::Ldap,
                ip(),
                "jo@acme.example",
                || Ok::<bool, String>(true)
            ),
            Verdict::Limited(Spent::Pair)
        );
        // Another mailbox from the same network still logs in.
        assert_eq!(
            auth.check(Protocol::Imap, ip(), "boss@acme.example", || {
                tokio::task::spawn_blocking(|| Ok::<bool, String>(true))
            })
            .await,
            Verdict::Accepted
        );
        let f = auth.figures();
        assert_eq!(f[0].1.rejected, 1);
        assert_eq!(
            f[1].1,
            Figures {
                accepted: 1,
                rejected: 1,
                limited: 0,
                unavailable: 0
            }
        );
        assert_eq!(f[3].1.limited, 1);
    }

    /// A hundred logins at once: only the pair budget's worth is checked.
    #[tokio::test]
    async fn parallel_attempts_past_the_budget_are_limited() {
        let auth = service();
        let checked = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (auth, checked) = (auth.clone(), checked.clone());
                tokio::spawn(async move {
                    auth.check(Protocol::Smtp, ip(), "jo@acme.example", move || {
                        tokio::task::spawn_blocking(move || {
                            checked.fetch_add(1, Ordering::SeqCst);
                            Ok::<bool, String>(false)
                        })
                    })
                    .await
                })
            })
            .collect();
        let mut limited = 0;
        for t in tasks {
            if matches!(t.await.expect("join"), Verdict::Limited(_)) {
                limited += 1;
            }
        }
        assert_eq!(checked.load(Ordering::SeqCst), 3);
        assert_eq!(limited, 97);
    }

    /// A failure is answered after the delay, a success at once.
    #[tokio::test]
    async fn failures_wait() {
        let auth = service();
        let start = Instant::now();
        auth.check(Protocol::Smtp, ip(), "a", || {
            tokio::task::spawn_blocking(|| Ok::<bool, String>(false))
        })
        .await;
        assert!(start.elapsed() >= Duration::from_millis(20));
        let start = Instant::now();
        auth.check(Protocol::Smtp, ip(), "b", || {
            tokio::task::spawn_blocking(|| Ok::<bool, String>(true))
        })
        .await;
        assert!(start.elapsed() < Duration::from_millis(20));
        // A store error is Unavailable and gives its attempt back.
        assert_eq!(
            auth.check(Protocol::Smtp, ip(), "c", || {
                tokio::task::spawn_blocking(|| Err::<bool, String>("disk".into()))
            })
            .await,
            Verdict::Unavailable
        );
    }
}
