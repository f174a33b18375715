//! SEARCHRES (RFC 5182, part of IMAP4rev2 per RFC 9051 6.4.4.1):
//! `SEARCH RETURN (SAVE ...)` keeps the matching messages (as UIDs, so an
//! expunge removes them from the result by itself), and `$` in a later
//! command's sequence set stands for them. The result lives in the
//! selected mailbox's state and dies with it (RFC 5182 2.1: a new SELECT,
//! CLOSE or UNSELECT forgets it).

use super::Session;
use super::sort::Hit;
use crate::parser::{Command, ReturnOpts, SearchKey, saved_result};
use crate::sequence::{Bound, RANGES_MAX, SequenceSet};

/// What `save_result` makes of a SEARCH's RETURN options.
pub(super) enum Saved {
    /// Answer with these options (None: the rev1 SEARCH response).
    Answer(Option<ReturnOpts>),
    /// SAVE alone: saved, no ESEARCH response (RFC 5182 2.1).
    Quiet,
    /// More than `RANGES_MAX` ranges: not saved, the saved result is empty
    /// (RFC 5182 2.1, NOTSAVED of RFC 5530), so `$` never costs more than
    /// a sequence set a client may send.
    Refused,
}

/// Sorted numbers as ranges of consecutive ones.
fn ranges(numbers: &[u32]) -> Vec<(Bound, Bound)> {
    let mut out: Vec<(Bound, Bound)> = Vec::new();
    for &n in numbers {
        match out.last_mut() {
            Some((_, Bound::Num(hi))) if hi.checked_add(1) == Some(n) => *hi = n,
            _ => out.push((Bound::Num(n), Bound::Num(n))),
        }
    }
    out
}

impl Session {
    /// Puts the saved result in the place of each `$` of the command:
    /// UIDs for UID commands and UID search keys, the messages' current
    /// sequence numbers otherwise. No saved result is the empty set.
    pub(super) fn substitute_saved(&self, cmd: &mut Command) {
        let saved = saved_result();
        let (uids, seqs) = match self.selected.as_ref() {
            Some(sel) => {
                let uids: Vec<u32> = sel
                    .messages
                    .iter()
                    .map(|m| m.uid)
                    .filter(|u| sel.saved.binary_search(u).is_ok())
                    .collect();
                let seqs: Vec<u32> = sel
                    .messages
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| sel.saved.binary_search(&m.uid).is_ok())
                    .map(|(i, _)| i as u32 + 1)
                    .collect();
                (uids, seqs)
            }
            None => (Vec::new(), Vec::new()),
        };
        let set_of = |numbers: &[u32]| SequenceSet(ranges(numbers));
        let fix = |set: &mut SequenceSet, uid: bool| {
            if *set == saved {
                *set = set_of(if uid { &uids } else { &seqs });
            }
        };
        match cmd {
            Command::Fetch { uid, set, .. }
            | Command::Store { uid, set, .. }
            | Command::Copy { uid, set, .. }
            | Command::Move { uid, set, .. } => fix(set, *uid),
            Command::UidExpunge(set) => fix(set, true),
            Command::Search { criteria, .. }
            | Command::Sort { criteria, .. }
            | Command::Thread { criteria, .. } => {
                // Keys are nested at most NESTING_DEPTH_MAX deep (parser);
                // walked with a stack all the same.
                let mut stack = vec![criteria];
                while let Some(key) = stack.pop() {
                    match key {
                        SearchKey::And(keys) => stack.extend(keys.iter_mut()),
                        SearchKey::Or(a, b) => {
                            stack.push(a);
                            stack.push(b);
                        }
                        SearchKey::Not(a) => stack.push(a),
                        SearchKey::Sequence(set) => fix(set, false),
                        SearchKey::Uid(set) => fix(set, true),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// After a SEARCH or SORT: keeps the result when RETURN has SAVE. With
    /// MIN and/or MAX and neither ALL nor COUNT, only those messages are
    /// kept (RFC 5182 2.1); for SORT, `hits` are in sort order, so they
    /// are the first and last in that order (RFC 5267 3, RFC 5182 2.1:
    /// SORT RETURN (SAVE) saves the messages, not their order, since `$`
    /// is a set).
    pub(super) fn save_result(&mut self, esearch: Option<ReturnOpts>, hits: &[Hit]) -> Saved {
        let Some(mut opts) = esearch else {
            return Saved::Answer(None);
        };
        if !opts.save {
            return Saved::Answer(Some(opts));
        }
        let kept: Vec<&Hit> = if (opts.min || opts.max) && !(opts.all || opts.count) {
            let mut k = Vec::new();
            if opts.min {
                k.extend(hits.first());
            }
            if opts.max && !(opts.min && hits.len() == 1) {
                k.extend(hits.last());
            }
            k
        } else {
            hits.iter().collect()
        };
        if let Some(sel) = self.selected.as_mut() {
            // Sorted, UIDs and sequence numbers are in the same order:
            // `ranges` counts what `$` would be for UID and sequence
            // commands alike.
            let mut uids: Vec<u32> = kept.iter().map(|h| h.uid).collect();
            let mut seqs: Vec<u32> = kept.iter().map(|h| h.seq).collect();
            uids.sort_unstable();
            seqs.sort_unstable();
            if ranges(&uids).len().max(ranges(&seqs).len()) > RANGES_MAX {
                sel.saved.clear();
                return Saved::Refused;
            }
            sel.saved = uids;
        }
        opts.save = false;
        if !(opts.min
            || opts.max
            || opts.all
            || opts.count
            || opts.update
            || opts.partial.is_some())
        {
            return Saved::Quiet;
        }
        Saved::Answer(Some(opts))
    }
}
