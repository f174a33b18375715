//! Identifiers of blobs and queue entries, and the clock.
//!
//! An [`Id`] names a message body file (`msg/<16 hex digits>`) and, for mail
//! going out, its queue entry. Ids come from the wall clock in microseconds,
//! forced to increase: unique within a run, and across restarts as long as the
//! clock does not jump back further than the largest id still on disk (the
//! generator is seeded from that, see [`crate::Store::open`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A blob / queue id. Shown as 16 lowercase hex digits, see [`id_hex`].
pub type Id = u64;

/// The canonical text form of an id: 16 lowercase hex digits. This is the
/// blob's file name and what appears in `Received:` headers.
pub fn id_hex(id: Id) -> String {
    format!("{id:016x}")
}

/// The inverse of [`id_hex`]; `None` unless `s` is exactly 16 lowercase hex
/// digits (so stray files in `msg/` are never mistaken for blobs).
pub fn parse_id_hex(s: &str) -> Option<Id> {
    if s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        u64::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Hands out strictly increasing ids: `max(now in µs, last + 1)`.
#[derive(Debug)]
pub(crate) struct IdGen {
    last: AtomicU64,
}

impl IdGen {
    /// A generator whose ids are all greater than `floor`.
    pub(crate) fn new(floor: Id) -> IdGen {
        IdGen {
            last: AtomicU64::new(floor),
        }
    }

    pub(crate) fn next(&self) -> Id {
        let mut prev = self.last.load(Ordering::Acquire);
        loop {
            let next = now_micros().max(prev.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(prev, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return next,
                Err(seen) => prev = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        assert_eq!(id_hex(0x1f), "000000000000001f");
        assert_eq!(parse_id_hex("000000000000001f"), Some(0x1f));
        assert_eq!(parse_id_hex(&id_hex(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_id_hex("000000000000001F"), None);
        assert_eq!(parse_id_hex("1f"), None);
        assert_eq!(parse_id_hex("000000000000001f.tmp"), None);
        assert_eq!(parse_id_hex("+00000000000001f"), None);
    }

    #[test]
    fn ids_increase_past_floor_and_clock() {
        let far = now_micros() + 10_000_000_000;
        let ids = IdGen::new(far);
        let a = ids.next();
        let b = ids.next();
        assert_eq!(a, far + 1);
        assert_eq!(b, far + 2);
        let ids = IdGen::new(0);
        let first = ids.next();
        assert!(first >= now_micros() - 60_000_000, "seeded from the clock");
        let mut last = first;
        for _ in 0..1000 {
            let n = ids.next();
            assert!(n > last);
            last = n;
        }
    }
}
