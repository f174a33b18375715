//! The one login limiter of the appliance (pure state; the clock is passed
//! in, so the tests drive time). See `mxrack_config::Auth` for the budgets.
//!
//! - An attempt is counted against its network, its account and its pair
//!   when it *starts* ([`Limiter::begin`]), so a hundred parallel attempts
//!   cannot all pass the check before the first one fails.
//! - A refused attempt counts nowhere: a phone retrying a stale password
//!   past its pair's budget does not use up its office's network budget.
//! - A success ([`Limiter::finish`] with `true`) clears its own pair and
//!   gives its one count back to the network and the account; the failures
//!   counted there stay. So "four wrong guesses, one good login as another
//!   mailbox, repeat" still spends the network budget.
//! - A failure is answered after a delay that doubles with each failure of
//!   the pair, as Dovecot's auth penalty does.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use mxrack_config::Auth as Budgets;

/// A client network: the IPv4 address, or the IPv6 /64 (an IPv4-mapped
/// IPv6 address is its IPv4 address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl Network {
    pub fn of(ip: IpAddr) -> Network {
        match ip {
            IpAddr::V4(v4) => Network::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Network::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&o[..8]);
                    Network::V6(prefix)
                }
            },
        }
    }
}

/// Which budget refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spent {
    Network,
    Account,
    Pair,
}

/// An admitted attempt; hand it back to [`Limiter::finish`].
#[derive(Debug)]
pub struct Ticket {
    network: Network,
    account: String,
}

#[derive(Debug, Clone, Copy)]
struct Count {
    attempts: u32,
    failures: u32,
    since: Instant,
}

/// One budget's counters, bounded in number.
struct Counters<K> {
    map: HashMap<K, Count>,
}

impl<K: Eq + Hash + Clone> Counters<K> {
    fn new() -> Self {
        Counters {
            map: HashMap::new(),
        }
    }

    fn current(&self, key: &K, now: Instant, window: Duration) -> Option<Count> {
        self.map
            .get(key)
            .copied()
            .filter(|c| now.duration_since(c.since) < window)
    }

    fn attempts(&self, key: &K, now: Instant, window: Duration) -> u32 {
        self.current(key, now, window).map_or(0, |c| c.attempts)
    }

    fn add(&mut self, key: &K, now: Instant, window: Duration, max: usize) {
        if !self.map.contains_key(key) && self.map.len() >= max {
            self.map.retain(|_, c| now.duration_since(c.since) < window);
            if self.map.len() >= max {
                // Still full of live entries: forget those with a single
                // attempt first (they hold the least information), then all.
                self.map.retain(|_, c| c.attempts > 1);
                if self.map.len() >= max {
                    self.map.clear();
                }
            }
        }
        let c = self.map.entry(key.clone()).or_insert(Count {
            attempts: 0,
            failures: 0,
            since: now,
        });
        if now.duration_since(c.since) >= window {
            *c = Count {
                attempts: 0,
                failures: 0,
                since: now,
            };
        }
        c.attempts = c.attempts.saturating_add(1);
    }

    /// Gives one attempt back (a success).
    fn refund(&mut self, key: &K) {
        if let Some(c) = self.map.get_mut(key) {
            c.attempts = c.attempts.saturating_sub(1);
            if c.attempts == 0 && c.failures == 0 {
                self.map.remove(key);
            }
        }
    }

    fn fail(&mut self, key: &K) -> u32 {
        match self.map.get_mut(key) {
            Some(c) => {
                c.failures = c.failures.saturating_add(1);
                c.failures
            }
            None => 1,
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

pub struct Limiter {
    budgets: Budgets,
    networks: Counters<Network>,
    accounts: Counters<String>,
    pairs: Counters<(Network, String)>,
}

impl Limiter {
    pub fn new(budgets: Budgets) -> Limiter {
        Limiter {
            budgets,
            networks: Counters::new(),
            accounts: Counters::new(),
            pairs: Counters::new(),
        }
    }

    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.budgets.window_secs)
    }

    /// Admits an attempt (and counts it against all three budgets) or says
    /// which budget is spent. `account` is compared as given: callers pass
    /// the name lower-cased, as the store looks it up.
    pub fn begin(&mut self, ip: IpAddr, account: &str, now: Instant) -> Result<Ticket, Spent> {
        let window = self.window();
        let network = Network::of(ip);
        let pair = (network, account.to_string());
        let b = &self.budgets;
        // The pair first: a stale phone is told about its own budget.
        if self.pairs.attempts(&pair, now, window) >= b.pair_attempts_max {
            return Err(Spent::Pair);
        }
        if self.networks.attempts(&network, now, window) >= b.network_attempts_max {
            return Err(Spent::Network);
        }
        if self.accounts.attempts(&pair.1, now, window) >= b.account_attempts_max {
            return Err(Spent::Account);
        }
        let max = b.tracked_keys_max;
        self.networks.add(&network, now, window, max);
        self.accounts.add(&pair.1, now, window, max);
        self.pairs.add(&pair, now, window, max);
        Ok(Ticket {
            network,
            account: pair.1,
        })
    }

    /// Ends an admitted attempt. A success clears its pair and gives its
    /// count back to the network and the account; a failure stays counted.
    /// Returns how long to wait before answering (zero for a success).
    pub fn finish(&mut self, ticket: Ticket, ok: bool) -> Duration {
        let pair = (ticket.network, ticket.account);
        if ok {
            self.pairs.map.remove(&pair);
            self.networks.refund(&pair.0);
            self.accounts.refund(&pair.1);
            return Duration::ZERO;
        }
        self.networks.fail(&pair.0);
        self.accounts.fail(&pair.1);
        let failures = self.pairs.fail(&pair);
        failure_delay(&self.budgets, failures)
    }

    /// Networks, accounts and pairs tracked now (for tests and metrics).
    pub fn tracked(&self) -> (usize, usize, usize) {
        (self.networks.len(), self.accounts.len(), self.pairs.len())
    }
}

/// `failure_delay_ms * 2^(failures-1)`, at most `failure_delay_max_ms`.
pub fn failure_delay(b: &Budgets, failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(20);
    let ms = b
        .failure_delay_ms
        .saturating_mul(1u64 << shift)
        .min(b.failure_delay_max_ms);
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets() -> Budgets {
        Budgets {
            window_secs: 60,
            network_attempts_max: 10,
            account_attempts_max: 8,
            pair_attempts_max: 3,
            failure_delay_ms: 100,
            failure_delay_max_ms: 1_000,
            tracked_keys_max: 1_024,
        }
    }

    const OFFICE: &str = "192.0.2.7";

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    /// One attempt from start to end.
    fn attempt(
        l: &mut Limiter,
        from: &str,
        account: &str,
        ok: bool,
        now: Instant,
    ) -> Result<(), Spent> {
        let t = l.begin(ip(from), account, now)?;
        l.finish(t, ok);
        Ok(())
    }

    #[test]
    fn networks_are_ipv4_addresses_and_ipv6_64s() {
        assert_eq!(
            Network::of(ip("192.0.2.1")),
            Network::of(ip("::ffff:192.0.2.1"))
        );
        assert_ne!(Network::of(ip("192.0.2.1")), Network::of(ip("192.0.2.2")));
        assert_eq!(
            Network::of(ip("2001:db8:1:2::1")),
            Network::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            Network::of(ip("2001:db8:1:2::1")),
            Network::of(ip("2001:db8:1:3::1"))
        );
    }

    /// The exploit: 4 wrong guesses, 1 good login as another
    /// mailbox, repeated. The good logins give back only their own count;
    /// the guesses spend the network budget.
    #[test]
    fn a_success_does_not_reset_the_network() {
        let mut l = Limiter::new(budgets());
        let now = Instant::now();
        let mut guesses = 0;
        'outer: for round in 0..10 {
            for k in 0..4 {
                let victim = format!("victim{round}-{k}@acme.example");
                if attempt(&mut l, OFFICE, &victim, false, now).is_err() {
                    break 'outer;
                }
                guesses += 1;
            }
            let _ = attempt(&mut l, OFFICE, "mine@acme.example", true, now);
        }
        assert_eq!(guesses, 10, "the network budget bounds the guesses");
        assert_eq!(
            attempt(&mut l, OFFICE, "other@acme.example", true, now),
            Err(Spent::Network)
        );
    }

    /// The NAT office: a stale password for one mailbox spends that pair,
    /// not the others, until the network budget is gone.
    #[test]
    fn a_stale_password_locks_out_its_own_mailbox_only() {
        let mut l = Limiter::new(budgets());
        let now = Instant::now();
        for _ in 0..3 {
            attempt(&mut l, OFFICE, "phone@acme.example", false, now).expect("admitted");
        }
        // Retries past the pair budget are refused and count nowhere.
        for _ in 0..20 {
            assert_eq!(
                attempt(&mut l, OFFICE, "phone@acme.example", true, now),
                Err(Spent::Pair)
            );
        }
        for i in 0..50 {
            attempt(
                &mut l,
                OFFICE,
                &format!("user{}@acme.example", i % 5),
                true,
                now,
            )
            .expect("colleagues log in");
        }
        // Another network reaches the phone's mailbox.
        attempt(&mut l, "198.51.100.1", "phone@acme.example", true, now).expect("home");
        // Once the window has passed, the phone's pair may try again.
        let later = now + Duration::from_secs(61);
        attempt(&mut l, OFFICE, "phone@acme.example", true, later).expect("after the window");
    }

    /// Counted at start: parallel attempts cannot all pass before one fails.
    #[test]
    fn attempts_count_when_they_start() {
        let mut l = Limiter::new(budgets());
        let now = Instant::now();
        let tickets: Vec<_> = (0..100)
            .filter_map(|_| l.begin(ip(OFFICE), "jo@acme.example", now).ok())
            .collect();
        assert_eq!(tickets.len(), 3);
        for t in tickets {
            l.finish(t, false);
        }
    }

    /// Guessing one account from many networks stops at the account budget;
    /// a success resets only its own pair.
    #[test]
    fn the_account_budget_holds_across_networks() {
        let mut l = Limiter::new(budgets());
        let now = Instant::now();
        for i in 0..8 {
            attempt(
                &mut l,
                &format!("203.0.113.{i}"),
                "boss@acme.example",
                false,
                now,
            )
            .expect("admitted");
        }
        assert_eq!(
            attempt(&mut l, "203.0.113.99", "boss@acme.example", true, now),
            Err(Spent::Account)
        );
        attempt(&mut l, "203.0.113.99", "jo@acme.example", true, now).expect("other account");
    }

    #[test]
    fn failures_are_delayed_more_each_time() {
        let b = budgets();
        let delays: Vec<u64> = (1..=6)
            .map(|n| failure_delay(&b, n).as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
        let mut l = Limiter::new(b);
        let now = Instant::now();
        let t = l
            .begin(ip(OFFICE), "jo@acme.example", now)
            .expect("admitted");
        assert_eq!(l.finish(t, false), Duration::from_millis(100));
        let t = l
            .begin(ip(OFFICE), "jo@acme.example", now)
            .expect("admitted");
        assert_eq!(l.finish(t, false), Duration::from_millis(200));
        let t = l
            .begin(ip(OFFICE), "jo@acme.example", now)
            .expect("admitted");
        assert_eq!(l.finish(t, true), Duration::ZERO);
    }

    #[test]
    fn memory_is_bounded() {
        let mut l = Limiter::new(Budgets {
            tracked_keys_max: 1_024,
            network_attempts_max: 100,
            account_attempts_max: 100,
            pair_attempts_max: 100,
            ..budgets()
        });
        let now = Instant::now();
        for i in 0..5_000u32 {
            let [a, b, c, d] = i.to_be_bytes();
            let from = format!("{}.{}.{}.{}", a.max(10), b, c, d);
            let _ = attempt(&mut l, &from, &format!("u{i}"), false, now);
        }
        let (n, a, p) = l.tracked();
        assert!(n <= 1_024 && a <= 1_024 && p <= 1_024, "{n} {a} {p}");
    }
}
