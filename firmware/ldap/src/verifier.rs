//! Password checks for binds on a few dedicated threads.
//!
//! An Argon2id check takes tens of milliseconds of CPU and 19 MiB of memory.
//! Run on whichever blocking thread handles the request, those 19 MiB
//! blocks land in every thread's malloc arena and fragment it: measured with
//! a bind per search (Thunderbird's pattern), the server's RSS kept growing,
//! past 1 GiB in ten seconds. On a fixed set of threads it levels off (about
//! 350 MiB in the same test: glibc raises its mmap threshold after the first
//! 19 MiB block is freed, so every arena keeps more), and binds cannot take
//! more than those threads' worth of CPU away from searches.
//!
//! Successful binds are remembered for `ldap.bind_cache_secs`: Thunderbird
//! opens a connection and binds for every lookup, and an Argon2 check per
//! keystroke is what limits a bind-per-search load (see the benchmark). What
//! is kept is a keyed BLAKE2b tag of (name, password, stored hash) under a
//! random per-process key, never the password: a password change gives a new
//! stored hash (fresh salt), so an old password can never match; failures
//! are never remembered, so every wrong guess costs a full check and counts
//! against the per-address limit. The cache is keyed by the name and the tag
//! is compared in constant time (a map keyed by the tag itself would compare
//! secret bytes with a short-circuiting `==`).

use blake2::Blake2bMac512;
use blake2::digest::{KeyInit, Mac};
use mxrack_store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Successful binds remembered at once (bounded memory).
const REMEMBERED_BINDS_MAX: usize = 4096;

type Tag = [u8; 64];

struct Job {
    name: String,
    password: String,
    reply: SyncSender<Result<bool, StoreError>>,
}

pub struct BindVerifier {
    jobs: Mutex<Sender<Job>>,
    store: Arc<Store>,
    remember_for: Duration,
    key: [u8; 32],
    /// Name (lower case) -> the tag of its last successful bind, and when.
    remembered: Mutex<HashMap<String, (Tag, Instant)>>,
}

impl BindVerifier {
    /// Starts `threads` verifier threads; they end when the verifier is
    /// dropped. Successful binds are remembered for `remember_for` (zero:
    /// never).
    pub fn new(store: Arc<Store>, threads: usize, remember_for: Duration) -> BindVerifier {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let (store, rx) = (store.clone(), rx.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("ldap-bind-{i}"))
                .spawn(move || work(&store, &rx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start an LDAP bind thread");
            }
        }
        BindVerifier {
            jobs: Mutex::new(tx),
            store,
            remember_for,
            key: rand::random(),
            remembered: Mutex::new(HashMap::new()),
        }
    }

    /// Checks an LDAP password: a bind remembered as successful answers at
    /// once, anything else is checked on a verifier thread. Call from a
    /// blocking context.
    pub fn verify(&self, name: &str, password: &str) -> Result<bool, StoreError> {
        if self.remember_for.is_zero() {
            return self.check(name, password);
        }
        let Some(stored) = self.store.ldap_password_hash(name)? else {
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

    /// The Argon2 check, on a verifier thread.
    fn check(&self, name: &str, password: &str) -> Result<bool, StoreError> {
        let (reply, answer) = sync_channel(1);
        let job = Job {
            name: name.to_string(),
            password: password.to_string(),
            reply,
        };
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(job);
        if sent.is_err() {
            return Err(StoreError::Closed);
        }
        answer.recv().unwrap_or(Err(StoreError::Closed))
    }
}

fn work(store: &Store, jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(PoisonError::into_inner);
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let result = store.ldap_verify_password(&job.name, &job.password);
        let _ = job.reply.send(result);
    }
}
