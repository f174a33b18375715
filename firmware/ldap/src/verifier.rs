//! Password checks for binds, and the bind cache.
//!
//! The Argon2 check itself runs on the appliance's one pool
//! (`mxrack_auth::argon`, through the store): run on whichever blocking
//! thread handles the request, its 19 MiB blocks landed in every thread's
//! malloc arena (measured with a bind per search, Thunderbird's pattern: past
//! 1 GiB in ten seconds); on the pool's fixed threads and buffers the memory
//! stays put, and binds cannot take more than those threads' CPU from
//! searches. Attempts are admitted and counted by the one limiter
//! (`bind.rs` asks `mxrack_auth::AuthService`).
//!
//! Successful binds are remembered for `ldap.bind_cache_secs`: Thunderbird
//! opens a connection and binds for every lookup, and an Argon2 check per
//! keystroke is what limits a bind-per-search load (see the benchmark). What
//! is kept is a keyed BLAKE2b tag of (name, password, stored hash) under a
//! random per-process key, never the password: a password change gives a new
//! stored hash (fresh salt), so an old password can never match; failures
//! are never remembered, so every wrong guess costs a full check and counts
//! against the limiter's budgets. The cache is keyed by the name and the tag
//! is compared in constant time (a map keyed by the tag itself would compare
//! secret bytes with a short-circuiting `==`).

use blake2::Blake2bMac512;
use blake2::digest::{KeyInit, Mac};
use mxrack_store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Successful binds remembered at once (bounded memory).
const REMEMBERED_BINDS_MAX: usize = 4096;

type Tag = [u8; 64];

/// Which password a verifier checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    /// The LDAP password of a mailbox or account (LDAP binds).
    Ldap,
    /// A mailbox's login password (CardDAV, which sends it with every
    /// request: vdirsyncer's first sync of 5,000 cards is 5,000 requests).
    Mail,
}

pub struct BindVerifier {
    store: Arc<Store>,
    secret: Secret,
    remember_for: Duration,
    key: [u8; 32],
    /// Name (lower case) -> the tag of its last successful bind, and when.
    remembered: Mutex<HashMap<String, (Tag, Instant)>>,
}

impl BindVerifier {
    /// Successful binds are remembered for `remember_for` (zero: never).
    pub fn new(store: Arc<Store>, remember_for: Duration) -> BindVerifier {
        BindVerifier::of(Secret::Ldap, store, remember_for)
    }

    /// A verifier of `secret` passwords.
    pub fn of(secret: Secret, store: Arc<Store>, remember_for: Duration) -> BindVerifier {
        BindVerifier {
            secret,
            store,
            remember_for,
            key: rand::random(),
            remembered: Mutex::new(HashMap::new()),
        }
    }

    /// Checks a password: a bind remembered as successful answers at
    /// once, anything else is checked on the Argon2 pool. Call from a
    /// blocking context.
    pub fn verify(&self, name: &str, password: &str) -> Result<bool, StoreError> {
        if self.remember_for.is_zero() {
            return self.check(name, password);
        }
        let stored = match self.secret {
            Secret::Ldap => self.store.ldap_password_hash(name)?,
            Secret::Mail => self.store.mailbox_password_hash(name)?,
        };
        let Some(stored) = stored else {
            // Unknown name: the full (dummy) work, so timing tells nothing.
            return self.check(name, password);
        };
        let tag = self.tag(name, password, &stored);
        let now = Instant::now();
        {
            let remembered = self
                .remembered
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if remembered
                .get(&name.to_ascii_lowercase())
                .is_some_and(|(known, at)| {
                    now.duration_since(*at) < self.remember_for && bool::from(known.ct_eq(&tag))
                })
            {
                return Ok(true);
            }
        }
        let ok = self.check(name, password)?;
        if ok {
            let mut remembered = self
                .remembered
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if remembered.len() >= REMEMBERED_BINDS_MAX {
                let ttl = self.remember_for;
                remembered.retain(|_, (_, at)| now.duration_since(*at) < ttl);
                if remembered.len() >= REMEMBERED_BINDS_MAX {
                    remembered.clear();
                }
            }
            remembered.insert(name.to_ascii_lowercase(), (tag, now));
        }
        Ok(ok)
    }

    fn tag(&self, name: &str, password: &str, stored: &str) -> Tag {
        let mut mac = <Blake2bMac512 as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| <Blake2bMac512 as KeyInit>::new(&Default::default()));
        for part in [name.as_bytes(), password.as_bytes(), stored.as_bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// The Argon2 check (on the pool, through the store).
    fn check(&self, name: &str, password: &str) -> Result<bool, StoreError> {
        match self.secret {
            Secret::Ldap => self.store.ldap_verify_password(name, password),
            Secret::Mail => self.store.verify_password(name, password),
        }
    }
}
