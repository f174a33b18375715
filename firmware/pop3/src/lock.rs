//! The maildrop lock (RFC 1939 8: "the POP3 server then acquires an
//! exclusive-access lock on the maildrop"): a set of mailbox addresses held
//! by POP3 sessions of this process. The lock is a guard: it is released
//! when the session's state is dropped, whether the session quits, loses
//! its connection or panics.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

/// The mailboxes held by POP3 sessions; one per service, shared by its sessions.
#[derive(Debug, Clone, Default)]
pub struct MaildropLocks {
    held: Arc<Mutex<HashSet<String>>>,
}

/// Holds one mailbox's maildrop until dropped.
#[derive(Debug)]
pub struct MaildropLock {
    held: Arc<Mutex<HashSet<String>>>,
    mailbox: String,
}

impl MaildropLocks {
    /// The lock on `mailbox` (a normalized address), or `None` when another
    /// session holds it.
    pub fn try_lock(&self, mailbox: &str) -> Option<MaildropLock> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if !held.insert(mailbox.to_string()) {
            return None;
        }
        Some(MaildropLock {
            held: self.held.clone(),
            mailbox: mailbox.to_string(),
        })
    }

    pub fn is_locked(&self, mailbox: &str) -> bool {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(mailbox)
    }
}

impl MaildropLock {
    pub fn mailbox(&self) -> &str {
        &self.mailbox
    }
}

impl Drop for MaildropLock {
    fn drop(&mut self) {
        // A poisoned mutex still holds a valid set: the lock must go, or the
        // mailbox stays locked until restart.
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.mailbox);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_per_mailbox_until_dropped() {
        let locks = MaildropLocks::default();
        let a = locks.try_lock("jo@example.net").expect("free");
        assert!(locks.try_lock("jo@example.net").is_none());
        let b = locks
            .try_lock("al@example.net")
            .expect("another mailbox is free");
        assert_eq!(b.mailbox(), "al@example.net");
        drop(a);
        assert!(!locks.is_locked("jo@example.net"));
        assert!(locks.try_lock("jo@example.net").is_some());
        assert!(locks.is_locked("al@example.net"));
    }

    #[test]
    fn a_panicking_holder_releases_the_lock() {
        let locks = MaildropLocks::default();
        let inside = locks.clone();
        let result = std::thread::spawn(move || {
            let _lock = inside.try_lock("jo@example.net").expect("free");
            panic!("session crashed while holding the maildrop");
        })
        .join();
        assert!(result.is_err(), "the thread panicked");
        assert!(!locks.is_locked("jo@example.net"));
        assert!(locks.try_lock("jo@example.net").is_some());
    }
}
