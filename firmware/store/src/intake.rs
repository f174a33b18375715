//! The intake gate: a process-wide "refuse new mail" switch with its reason,
//! closed by the health monitor before the data file system is full and
//! opened again once space is back (with hysteresis, decided there).
//!
//! SMTP answers MAIL with 452 4.3.1 and IMAP refuses APPEND while it is
//! closed; deliveries already accepted are unaffected (invariant 1: nothing
//! acknowledged is lost). Reading the gate is one atomic load when open.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::Store;

#[derive(Debug, Default)]
pub(crate) struct IntakeGate {
    closed: AtomicBool,
    reason: RwLock<Option<Arc<str>>>,
}

impl Store {
    /// Why new mail is refused right now, or `None` when it is taken.
    pub fn intake_refusal(&self) -> Option<Arc<str>> {
        if !self.intake.closed.load(Ordering::Acquire) {
            return None;
        }
        self.intake
            .reason
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Closes the gate with a reason (`Some`) or opens it (`None`). Returns
    /// true when this changed whether mail is refused.
    pub fn set_intake_refusal(&self, reason: Option<&str>) -> bool {
        let mut slot = self
            .intake
            .reason
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let was_closed = slot.is_some();
        *slot = reason.map(Arc::from);
        self.intake.closed.store(slot.is_some(), Ordering::Release);
        was_closed != slot.is_some()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_gate_closes_and_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = crate::Store::open(dir.path()).expect("open");
        assert!(s.intake_refusal().is_none());
        assert!(s.set_intake_refusal(Some("data file system 98% full")));
        assert!(!s.set_intake_refusal(Some("still full")), "no change");
        assert_eq!(s.intake_refusal().as_deref(), Some("still full"));
        assert!(s.set_intake_refusal(None));
        assert!(s.intake_refusal().is_none());
    }
}
