//! Failed-login limiter per client address, shared by SMTP AUTH, IMAP LOGIN,
//! POP3 PASS and LDAP bind: after `max_failures` failures inside the window,
//! that address is refused until the window has passed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses tracked at once; past it the oldest entries are dropped, so a
/// flood of addresses cannot grow memory without bound.
const TRACKED_ADDRESSES_MAX: usize = 65_536;

pub struct AuthLimiter {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl AuthLimiter {
    pub fn new(max_failures: u32, window: Duration) -> AuthLimiter {
        AuthLimiter {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// True when this address may try to authenticate now.
    pub fn allowed(&self, ip: IpAddr) -> bool {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&ip) {
            Some((count, since)) => *count < self.max_failures || since.elapsed() >= self.window,
            None => true,
        }
    }

    pub fn record_failure(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= TRACKED_ADDRESSES_MAX {
            let window = self.window;
            map.retain(|_, (_, since)| since.elapsed() < window);
            if map.len() >= TRACKED_ADDRESSES_MAX {
                map.clear();
            }
        }
        let entry = map.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    pub fn record_success(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_the_limit_and_others_are_not() {
        let l = AuthLimiter::new(3, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.allowed(a));
            l.record_failure(a);
        }
        assert!(!l.allowed(a));
        assert!(l.allowed(b));
    }

    #[test]
    fn the_window_expires() {
        let l = AuthLimiter::new(1, Duration::from_millis(0));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        l.record_failure(a);
        assert!(l.allowed(a));
    }
}
