//! `[auth]`: the one login limiter of the appliance (`mxrack-auth`), shared by
//! SMTP AUTH, IMAP LOGIN/AUTHENTICATE, POP3 USER/PASS/AUTH and LDAP bind.
//!
//! Three budgets of attempts per window: per client network (an IPv4 /32,
//! an IPv6 /64), per account name, and per (network, account) pair. An
//! attempt is counted when it starts; a successful one gives its count back
//! to the network and the account and clears its own pair, so a stale
//! password on one phone behind an office NAT locks out that phone's
//! mailbox only, until the office's network budget itself is spent.

use crate::validate::{ConfigError, invalid};
use serde::{Deserialize, Serialize};

pub const AUTH_WINDOW_SECS: u64 = 900;
pub const AUTH_NETWORK_ATTEMPTS_MAX: u32 = 30;
pub const AUTH_ACCOUNT_ATTEMPTS_MAX: u32 = 20;
pub const AUTH_PAIR_ATTEMPTS_MAX: u32 = 5;
pub const AUTH_FAILURE_DELAY_MS: u64 = 1_000;
pub const AUTH_FAILURE_DELAY_MAX_MS: u64 = 15_000;
pub const AUTH_TRACKED_KEYS_MAX: usize = 65_536;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Length of the window each budget counts over; a budget starts again
    /// once its first counted attempt is this old.
    pub window_secs: u64,
    /// Attempts per client network (IPv4 /32, IPv6 /64) per window, over
    /// all accounts and services.
    pub network_attempts_max: u32,
    /// Attempts per account name per window, over all networks and services.
    pub account_attempts_max: u32,
    /// Attempts per (network, account) pair per window.
    pub pair_attempts_max: u32,
    /// Delay before a wrong password is answered; doubles with each failure
    /// of the same pair (Dovecot's auth penalty), up to the maximum.
    pub failure_delay_ms: u64,
    pub failure_delay_max_ms: u64,
    /// Networks, accounts and pairs tracked at once (bounded memory).
    pub tracked_keys_max: usize,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            window_secs: AUTH_WINDOW_SECS,
            network_attempts_max: AUTH_NETWORK_ATTEMPTS_MAX,
            account_attempts_max: AUTH_ACCOUNT_ATTEMPTS_MAX,
            pair_attempts_max: AUTH_PAIR_ATTEMPTS_MAX,
            failure_delay_ms: AUTH_FAILURE_DELAY_MS,
            failure_delay_max_ms: AUTH_FAILURE_DELAY_MAX_MS,
            tracked_keys_max: AUTH_TRACKED_KEYS_MAX,
        }
    }
}

impl Auth {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=86_400).contains(&self.window_secs) {
            return Err(invalid("auth.window_secs", "must be between 1 and 86400"));
        }
        for (key, v) in [
            ("auth.network_attempts_max", self.network_attempts_max),
            ("auth.account_attempts_max", self.account_attempts_max),
            ("auth.pair_attempts_max", self.pair_attempts_max),
        ] {
            if !(1..=100_000).contains(&v) {
                return Err(invalid(key, "must be between 1 and 100000"));
            }
        }
        if self.pair_attempts_max > self.network_attempts_max
            || self.pair_attempts_max > self.account_attempts_max
        {
            return Err(invalid(
                "auth.pair_attempts_max",
                "must not be above auth.network_attempts_max or auth.account_attempts_max",
            ));
        }
        if self.failure_delay_max_ms > 60_000 {
            return Err(invalid(
                "auth.failure_delay_max_ms",
                "must be at most 60000",
            ));
        }
        if self.failure_delay_ms > self.failure_delay_max_ms {
            return Err(invalid(
                "auth.failure_delay_ms",
                "must not be above auth.failure_delay_max_ms",
            ));
        }
        if !(1_024..=10_000_000).contains(&self.tracked_keys_max) {
            return Err(invalid(
                "auth.tracked_keys_max",
                "must be between 1024 and 10000000",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_mistakes_name_their_key() {
        assert_eq!(Auth::default().validate(), Ok(()));
        for (auth, key) in [
            (
                Auth {
                    window_secs: 0,
                    ..Auth::default()
                },
                "auth.window_secs",
            ),
            (
                Auth {
                    network_attempts_max: 0,
                    ..Auth::default()
                },
                "auth.network_attempts_max",
            ),
            (
                Auth {
                    pair_attempts_max: 50,
                    ..Auth::default()
                },
                "auth.pair_attempts_max",
            ),
            (
                Auth {
                    failure_delay_ms: 20_000,
                    ..Auth::default()
                },
                "auth.failure_delay_ms",
            ),
        ] {
            match auth.validate() {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        }
    }
}
