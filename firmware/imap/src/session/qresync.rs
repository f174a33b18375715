//! QRESYNC (RFC 7162 3.2): ENABLE QRESYNC, SELECT/EXAMINE with the QRESYNC
//! parameter, VANISHED instead of EXPUNGE, UID FETCH (CHANGEDSINCE m
//! VANISHED).
//!
//! The store keeps each message's modseq and the folder's HIGHESTMODSEQ
//! but not the UIDs of expunged messages. RFC 7162 3.2.5.2 and 3.2.6 allow
//! a server that does not remember them to report as vanished every UID in
//! the client's known range that no longer exists (the client discards
//! what it does not hold), so VANISHED (EARLIER) is exactly that: the
//! range, clipped to below UIDNEXT, minus the UIDs that exist, computed
//! range by range (never UID by UID). It can name UIDs expunged before the
//! client's modseq; that costs a few bytes and is never wrong. The
//! sequence-match data of the SELECT parameter is then not needed.

use mxrack_net::Conn;
use mxrack_store::{MessageMeta, StoreError};

use super::{Session, blocking, flag_list};
use crate::parser::QresyncArgs;
use crate::sequence::{Bound, SequenceSet};

/// The UID ranges of `set` (`*` = `uid_max`, the folder's UIDNEXT - 1)
/// that hold no message of `existing` (ascending UIDs), merged, ascending.
pub(super) fn missing_ranges(set: &SequenceSet, existing: &[u32], uid_max: u32) -> Vec<(u32, u32)> {
    let mut ranges: Vec<(u32, u32)> = set
        .0
        .iter()
        .filter_map(|&(a, b)| {
            let v = |b: Bound| match b {
                Bound::Num(n) => n,
                Bound::Star => uid_max,
            };
            let (lo, hi) = (v(a).min(v(b)).max(1), v(a).max(v(b)).min(uid_max));
            (lo <= hi).then_some((lo, hi))
        })
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::new();
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    let mut out = Vec::new();
    for (lo, hi) in merged {
        // Walk the existing UIDs inside [lo, hi]; the gaps are missing.
        let start = existing.partition_point(|&u| u < lo);
        let mut next = u64::from(lo);
        for &u in existing[start..].iter().take_while(|&&u| u <= hi) {
            if u64::from(u) > next {
                out.push((next as u32, u - 1));
            }
            next = u64::from(u) + 1;
        }
        if next <= u64::from(hi) {
            out.push((next as u32, hi));
        }
    }
    out
}

/// `1:3,7` for ranges.
pub(super) fn format_ranges(ranges: &[(u32, u32)]) -> String {
    ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}:{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// What a session says about messages it removes from its view: `* n
/// EXPUNGE` each (highest first, as given), or with QRESYNC one `*
/// VANISHED uids` (RFC 7162 3.2.10). `removed`: (sequence number, UID),
/// highest sequence number first.
pub(super) fn expunged_lines(out: &mut String, qresync: bool, removed: &[(usize, u32)]) {
    if removed.is_empty() {
        return;
    }
    if qresync {
        let mut uids: Vec<u32> = removed.iter().map(|&(_, u)| u).collect();
        uids.sort_unstable();
        out.push_str(&format!("* VANISHED {}\r\n", SequenceSet::compact(&uids)));
    } else {
        for (seq, _) in removed {
            out.push_str(&format!("* {seq} EXPUNGE\r\n"));
        }
    }
}

impl Session {
    /// SELECT/EXAMINE (QRESYNC (...)): the usual SELECT responses, then,
    /// when the client's UIDVALIDITY is the folder's, `VANISHED (EARLIER)`
    /// and a FETCH (UID FLAGS MODSEQ) of each message changed since the
    /// client's modseq (RFC 7162 3.2.5.1).
    pub(super) async fn select_qresync(
        &mut self,
        tag: &str,
        mailbox: &[u8],
        read_only: bool,
        args: QresyncArgs,
        conn: &mut Conn,
    ) -> Result<String, StoreError> {
        if !self.qresync {
            // RFC 7162 3.2.5: the parameter is only valid after ENABLE QRESYNC.
            return Ok(format!(
                "{tag} BAD [CLIENTBUG] ENABLE QRESYNC before using the QRESYNC parameter\r\n"
            ));
        }
        let reply = self.select(tag, mailbox, read_only, true, conn).await?;
        let Some(sel) = self.selected.as_ref() else {
            return Ok(reply);
        };
        let (user, name) = (self.user.clone().unwrap_or_default(), sel.name.clone());
        let folder = blocking(&self.svc.store, move |s| s.folder_get(&user, &name)).await?;
        let Some(sel) = self.selected.as_ref() else {
            return Ok(reply);
        };
        if folder.uidvalidity != args.uidvalidity {
            // The client's cache is void; it resynchronises from scratch.
            return Ok(reply);
        }
        let known = args
            .known_uids
            .clone()
            .unwrap_or_else(|| SequenceSet(vec![(Bound::Num(1), Bound::Star)]));
        let uid_max = folder.uidnext.saturating_sub(1);
        let existing: Vec<u32> = sel.messages.iter().map(|m| m.uid).collect();
        let mut out = String::new();
        let gone = missing_ranges(&known, &existing, uid_max);
        if !gone.is_empty() {
            out.push_str(&format!(
                "* VANISHED (EARLIER) {}\r\n",
                format_ranges(&gone)
            ));
        }
        for (i, m) in sel.messages.iter().enumerate() {
            if m.modseq > args.modseq && known.contains(m.uid, uid_max) {
                out.push_str(&changed_line(i + 1, m));
            }
        }
        conn.write(out.as_bytes());
        Ok(reply)
    }

    /// `* VANISHED (EARLIER) uids` for UID FETCH (CHANGEDSINCE m VANISHED)
    /// (RFC 7162 3.2.6): the UIDs of `set` that no longer exist.
    pub(super) async fn fetch_vanished(
        &mut self,
        set: &SequenceSet,
        conn: &mut Conn,
    ) -> Result<(), StoreError> {
        let Some(sel) = self.selected.as_ref() else {
            return Ok(());
        };
        let (user, name) = (self.user.clone().unwrap_or_default(), sel.name.clone());
        let folder = blocking(&self.svc.store, move |s| s.folder_get(&user, &name)).await?;
        let Some(sel) = self.selected.as_ref() else {
            return Ok(());
        };
        let existing: Vec<u32> = sel.messages.iter().map(|m| m.uid).collect();
        let gone = missing_ranges(set, &existing, folder.uidnext.saturating_sub(1));
        if !gone.is_empty() {
            conn.write(format!("* VANISHED (EARLIER) {}\r\n", format_ranges(&gone)).as_bytes());
        }
        Ok(())
    }
}

fn changed_line(seq: usize, m: &MessageMeta) -> String {
    format!(
        "* {seq} FETCH (UID {} FLAGS {} MODSEQ ({}))\r\n",
        m.uid,
        flag_list(&m.flags),
        m.modseq
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> SequenceSet {
        SequenceSet::parse(s.as_bytes()).expect("set")
    }

    #[test]
    fn missing_ranges_are_the_gaps() {
        let table: [(&str, &[u32], u32, &str); 8] = [
            ("1:*", &[2, 3, 7], 9, "1,4:6,8:9"),
            ("1:*", &[], 0, ""),
            ("1:*", &[1, 2, 3], 3, ""),
            ("5:2", &[3], 10, "2,4:5"),
            ("1:3,2:6", &[4], 10, "1:3,5:6"),
            // Beyond UIDNEXT - 1 there is nothing to report.
            ("8:4000000000", &[9], 10, "8,10"),
            ("*", &[], 4, "4"),
            ("3,1", &[1, 2, 3], 3, ""),
        ];
        for (s, existing, max, want) in table {
            assert_eq!(
                format_ranges(&missing_ranges(&set(s), existing, max)),
                want,
                "{s} {existing:?} {max}"
            );
        }
    }

    #[test]
    fn expunges_or_vanished() {
        let mut out = String::new();
        expunged_lines(&mut out, false, &[(5, 12), (2, 4)]);
        assert_eq!(out, "* 5 EXPUNGE\r\n* 2 EXPUNGE\r\n");
        out.clear();
        expunged_lines(&mut out, true, &[(5, 12), (3, 5), (2, 4)]);
        assert_eq!(out, "* VANISHED 4:5,12\r\n");
    }
}
