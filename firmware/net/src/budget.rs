//! The one memory budget for client data in flight, shared by every service
//! (issue 10, `[memory]`). A connection's fixed buffers are bounded by its
//! own limits; whatever a client can make larger (a message read whole for
//! IMAP FETCH, POP3 RETR/TOP or the relay, an SMTP DATA's scorer prefix and
//! write buffer, an APPEND's buffers) is leased from here first and given
//! back when the lease is dropped. When the budget is spent, a request waits
//! up to the configured time in line (first come, first served), then gets
//! `None`: the caller answers with its protocol's temporary error. Nothing
//! aborts and nothing is over-committed.
//!
//! The process has one budget, [`global`], sized once by [`configure`] from
//! `memory.client_data_bytes` before the listeners start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget counts in units of this many bytes (a semaphore permit each),
/// so a budget of up to 4 TiB fits the semaphore's `u32` requests.
pub const UNIT_BYTES: u64 = 1024;

/// A budget of bytes with a waiting line.
#[derive(Debug)]
pub struct MemoryBudget {
    units: Arc<Semaphore>,
    total_units: u32,
    wait: Duration,
    refused: AtomicU64,
}

/// Bytes held from a [`MemoryBudget`]; given back on drop.
#[derive(Debug)]
pub struct Lease {
    _permit: OwnedSemaphorePermit,
    bytes: u64,
}

impl Lease {
    /// Bytes this lease holds (rounded up to [`UNIT_BYTES`]).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl MemoryBudget {
    /// A budget of `bytes` (at least one unit) whose requests wait at most `wait`.
    pub fn new(bytes: u64, wait: Duration) -> MemoryBudget {
        let total_units = bytes.div_ceil(UNIT_BYTES).clamp(1, u64::from(u32::MAX)) as u32;
        MemoryBudget {
            units: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
            wait,
            refused: AtomicU64::new(0),
        }
    }

    fn units_for(&self, bytes: u64) -> u32 {
        bytes.div_ceil(UNIT_BYTES).max(1).min(u64::from(u32::MAX)) as u32
    }

    /// Takes `bytes` now if there is room and nobody is waiting ahead.
    pub fn try_lease(&self, bytes: u64) -> Option<Lease> {
        let units = self.units_for(bytes);
        match self.units.clone().try_acquire_many_owned(units) {
            Ok(permit) => Some(Lease {
                _permit: permit,
                bytes: u64::from(units) * UNIT_BYTES,
            }),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Takes `bytes`, waiting in line up to the budget's wait. `None` when
    /// the wait ran out, or at once when `bytes` is more than the whole
    /// budget (it could never be served).
    pub async fn lease(&self, bytes: u64) -> Option<Lease> {
        let units = self.units_for(bytes);
        if units > self.total_units {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let acquire = self.units.clone().acquire_many_owned(units);
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => Some(Lease {
                _permit: permit,
                bytes: u64::from(units) * UNIT_BYTES,
            }),
            _ => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// The budget's size in bytes.
    pub fn total_bytes(&self) -> u64 {
        u64::from(self.total_units) * UNIT_BYTES
    }

    /// Bytes leased right now.
    pub fn used_bytes(&self) -> u64 {
        let free = self.units.available_permits() as u64;
        (u64::from(self.total_units) - free.min(u64::from(self.total_units))) * UNIT_BYTES
    }

    /// Requests refused since the start (the wait ran out or too large).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

static GLOBAL: OnceLock<MemoryBudget> = OnceLock::new();

/// Sizes the process's budget. Only the first call counts (the supervisor
/// makes it from `[memory]` before any listener starts); false if it was
/// already sized, by an earlier call or a first use of [`global`].
pub fn configure(bytes: u64, wait: Duration) -> bool {
    let mut fresh = false;
    GLOBAL.get_or_init(|| {
        fresh = true;
        MemoryBudget::new(bytes, wait)
    });
    fresh
}

/// The process's budget, shared by every service (the embedded default's
/// size when [`configure`] was not called: tests, fuzzing, tools).
pub fn global() -> &'static MemoryBudget {
    GLOBAL.get_or_init(|| MemoryBudget::new(DEFAULT_BYTES, Duration::from_secs(DEFAULT_WAIT_SECS)))
}

/// `mxrack_config::MEMORY_CLIENT_DATA_BYTES` (this crate does not depend on
/// the configuration crate; a test in mxrack checks they agree).
pub const DEFAULT_BYTES: u64 = 256 * 1024 * 1024;
/// `mxrack_config::MEMORY_WAIT_SECS`.
pub const DEFAULT_WAIT_SECS: u64 = 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn leases_are_given_back_and_a_full_budget_makes_work_wait_then_refuses() {
        let b = MemoryBudget::new(10 * UNIT_BYTES, Duration::from_secs(5));
        let a = b.lease(6 * UNIT_BYTES).await.expect("room");
        assert_eq!(b.used_bytes(), 6 * UNIT_BYTES);
        // 5 units more do not fit: the request waits its 5 s, then is refused.
        assert!(b.lease(5 * UNIT_BYTES).await.is_none());
        assert_eq!(b.refused(), 1);
        // Freed room serves a waiting request.
        let waiting = b.lease(5 * UNIT_BYTES);
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), &mut waiting)
                .await
                .is_err()
        );
        drop(a);
        let c = waiting.await.expect("room after the drop");
        assert_eq!(c.bytes(), 5 * UNIT_BYTES);
        assert_eq!(b.used_bytes(), 5 * UNIT_BYTES);
        drop(c);
        assert_eq!(b.used_bytes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn more_than_the_whole_budget_is_refused_at_once() {
        let b = MemoryBudget::new(4 * UNIT_BYTES, Duration::from_secs(600));
        let start = tokio::time::Instant::now();
        assert!(b.lease(5 * UNIT_BYTES).await.is_none());
        assert_eq!(start.elapsed(), Duration::ZERO);
        // Small requests round up to one unit; try_lease never waits.
        let one = b.try_lease(1).expect("one unit");
        assert_eq!(one.bytes(), UNIT_BYTES);
        let _rest = b.try_lease(3 * UNIT_BYTES).expect("the rest");
        assert!(b.try_lease(1).is_none());
    }
}
