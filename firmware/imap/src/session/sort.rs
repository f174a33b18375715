//! SEARCH evaluation shared by SEARCH, SORT and THREAD, the ESEARCH
//! response (RFC 4731, RFC 5267 ESORT and PARTIAL, RFC 7162 MODSEQ), and
//! the SORT and THREAD commands (RFC 5256, RFC 5957).

use super::{Conn, Session};
use crate::fetch;
use crate::parser::{ReturnOpts, SearchKey};
use crate::search::{self, Candidate};
use crate::sequence::SequenceSet;
use crate::sort::{self, SortCriterion, Sortable};
use crate::thread::{self, Algorithm, ThreadMsg};
use mail_parser::Message;
use mxrack_store::{MessageMeta, Store, StoreError};
use std::sync::Arc;

/// What SORT, THREAD, ESORT and CONTEXT add to CAPABILITY.
pub(super) const CAPABILITIES: &str =
    "SORT SORT=DISPLAY THREAD=ORDEREDSUBJECT THREAD=REFERENCES ESORT CONTEXT=SEARCH";

/// One message a search found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Hit {
    pub seq: u32,
    pub uid: u32,
    pub modseq: u64,
}

/// True when the criteria use the MODSEQ key: the results then carry the
/// highest mod-sequence (RFC 7162 3.1.5).
pub(super) fn uses_modseq(key: &SearchKey) -> bool {
    match key {
        SearchKey::ModSeq(_) => true,
        SearchKey::And(keys) => keys.iter().any(uses_modseq),
        SearchKey::Or(a, b) => uses_modseq(a) || uses_modseq(b),
        SearchKey::Not(k) => uses_modseq(k),
        _ => false,
    }
}

/// The header block of a message (up to the first empty line), which is
/// all SORT and THREAD read: the same bounded parse, on less text.
fn header_block(raw: &[u8]) -> &[u8] {
    match raw.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &raw[..i + 4],
        None => match raw.windows(2).position(|w| w == b"\n\n") {
            Some(i) => &raw[..i + 2],
            None => raw,
        },
    }
}

/// A message's file for SEARCH, SORT, THREAD and CONTEXT updates: `None`
/// when it is gone (expunged by another session and past the grace that
/// keeps files for sessions still showing it: it matches nothing, as it no
/// longer exists); any other failure is the command's, never "no match"
/// (a message that cannot be read must not silently drop out of a result).
pub(super) fn read_for_search(
    store: &Store,
    meta: &MessageMeta,
) -> Result<Option<Vec<u8>>, StoreError> {
    match store.read_blob(meta.blob) {
        Ok(raw) => Ok(Some(raw)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Runs `criteria` over `messages` (sequence order) on the calling
/// (blocking) thread; for each hit, `keep` gets the hit and the parsed
/// header when `header` is true (None if it could not be parsed). Messages
/// are read one at a time and dropped after their keys are taken. A
/// message that cannot be read fails the whole evaluation when the
/// criteria read its content ([`read_for_search`]); for header keys only
/// (SORT, THREAD) it is kept with no header.
pub(super) fn evaluate<T>(
    store: &Store,
    messages: &[MessageMeta],
    criteria: &SearchKey,
    header: bool,
    mut keep: impl FnMut(Hit, &MessageMeta, Option<&Message<'_>>) -> T,
) -> Result<Vec<T>, StoreError> {
    let content = search::needs_content(criteria);
    let max_seq = messages.len() as u32;
    let max_uid = messages.last().map(|m| m.uid).unwrap_or(0);
    let mut out = Vec::new();
    for (i, meta) in messages.iter().enumerate() {
        let raw = if content {
            match read_for_search(store, meta)? {
                Some(raw) => Some(raw),
                None => continue,
            }
        } else if header {
            // SORT and THREAD keys only: a message whose file cannot be
            // read is sorted by what the index knows (its date and size),
            // so one damaged file does not cost a client its folder list.
            match read_for_search(store, meta) {
                Ok(Some(raw)) => Some(raw),
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(uid = meta.uid, error = %e,
                        "message not readable: sorted without its headers");
                    None
                }
            }
        } else {
            None
        };
        let parsed = if content {
            raw.as_deref().and_then(fetch::parse)
        } else {
            None
        };
        let c = Candidate {
            seq: i as u32 + 1,
            max_seq,
            max_uid,
            meta,
            raw: raw.as_deref(),
            parsed: parsed.as_ref(),
        };
        if !search::matches(criteria, &c) {
            continue;
        }
        let hit = Hit {
            seq: i as u32 + 1,
            uid: meta.uid,
            modseq: meta.modseq,
        };
        if !header {
            out.push(keep(hit, meta, None));
        } else if parsed.is_some() {
            out.push(keep(hit, meta, parsed.as_ref()));
        } else {
            let head = raw.as_deref().map(header_block).and_then(fetch::parse);
            out.push(keep(hit, meta, head.as_ref()));
        }
    }
    Ok(out)
}

/// The ESEARCH response (RFC 4731 3.1) for `hits` in result order:
/// ascending for SEARCH, sort order for SORT (RFC 5267 3: MIN and MAX are
/// then the first and last in that order, ALL and PARTIAL keep it). With
/// `modseq`, the highest mod-sequence of what is returned (RFC 7162
/// 3.1.10: of the MIN/MAX messages when only they are asked for).
pub(super) fn esearch_line(
    tag: &str,
    uid: bool,
    opts: &ReturnOpts,
    hits: &[Hit],
    sorted: bool,
    modseq: bool,
) -> String {
    let num = |h: &Hit| if uid { h.uid } else { h.seq };
    let mut line = format!("* ESEARCH (TAG \"{tag}\"){}", if uid { " UID" } else { "" });
    let (first, last) = if sorted {
        (hits.first(), hits.last())
    } else {
        (
            hits.iter().min_by_key(|h| num(h)),
            hits.iter().max_by_key(|h| num(h)),
        )
    };
    if let (true, Some(h)) = (opts.min, first) {
        line.push_str(&format!(" MIN {}", num(h)));
    }
    if let (true, Some(h)) = (opts.max, last) {
        line.push_str(&format!(" MAX {}", num(h)));
    }
    if opts.all && !hits.is_empty() {
        let nums: Vec<u32> = hits.iter().map(num).collect();
        line.push_str(&format!(" ALL {}", SequenceSet::compact(&nums)));
    }
    if opts.count {
        line.push_str(&format!(" COUNT {}", hits.len()));
    }
    if let Some((from, to)) = opts.partial {
        // RFC 5267 4.4: positions from..=to of the result, NIL when none.
        let start = (from as usize).saturating_sub(1);
        let end = (to as usize).min(hits.len());
        let part: Vec<u32> = if start < end {
            hits[start..end].iter().map(num).collect()
        } else {
            Vec::new()
        };
        let set = if part.is_empty() {
            "NIL".to_string()
        } else {
            SequenceSet::compact(&part)
        };
        line.push_str(&format!(" PARTIAL ({from}:{to} {set})"));
    }
    if modseq && !hits.is_empty() {
        let only_ends = !(opts.all || opts.count || opts.partial.is_some());
        let highest = if only_ends {
            [opts.min.then_some(first), opts.max.then_some(last)]
                .into_iter()
                .flatten()
                .flatten()
                .map(|h| h.modseq)
                .max()
        } else {
            hits.iter().map(|h| h.modseq).max()
        };
        if let Some(m) = highest {
            line.push_str(&format!(" MODSEQ {m}"));
        }
    }
    line.push_str("\r\n");
    line
}

/// `* SEARCH`/`* SORT` data: the numbers, then `(MODSEQ n)` when the
/// MODSEQ key was used and something matched (RFC 7162 3.1.5).
pub(super) fn number_list(word: &str, uid: bool, hits: &[Hit], modseq: bool) -> String {
    let mut line = format!("* {word}");
    for h in hits {
        line.push(' ');
        line.push_str(&(if uid { h.uid } else { h.seq }).to_string());
    }
    if modseq && let Some(m) = hits.iter().map(|h| h.modseq).max() {
        line.push_str(&format!(" (MODSEQ {m})"));
    }
    line.push_str("\r\n");
    line
}

impl Session {
    /// The selected messages, for a search on a blocking thread, with
    /// \Recent among the flags of this session's recent ones.
    pub(super) fn selected_messages(&self) -> Option<Vec<MessageMeta>> {
        self.selected.as_ref().map(|s| {
            s.messages
                .iter()
                .map(|m| super::recent::with_recent(m, &s.recent))
                .collect()
        })
    }

    /// SORT (RFC 5256 3), UID SORT, and with RETURN, ESORT (RFC 5267).
    pub(super) async fn sort(
        &mut self,
        tag: &str,
        uid: bool,
        program: Vec<SortCriterion>,
        criteria: SearchKey,
        ret: Option<ReturnOpts>,
        conn: &mut Conn,
    ) -> Result<String, StoreError> {
        let Some(messages) = self.selected_messages() else {
            return Ok(format!("{tag} BAD No mailbox selected\r\n"));
        };
        if ret.as_ref().is_some_and(|r| r.update) {
            // CONTEXT=SORT is not offered: sorted updates are not kept.
            return Ok(format!("{tag} BAD UPDATE is not supported for SORT\r\n"));
        }
        let modseq = uses_modseq(&criteria);
        let header = program.iter().any(|c| c.key.needs_header());
        let store: Arc<Store> = self.svc.store.clone();
        let sorted = mxrack_store::spawn_blocking(move || {
            let mut items = evaluate(&store, &messages, &criteria, header, |hit, meta, parsed| {
                Sortable {
                    seq: hit.seq,
                    uid: hit.uid,
                    modseq: hit.modseq,
                    values: sort::values(&program, parsed, meta.internal_date, meta.size),
                }
            })?;
            sort::sort(&program, &mut items);
            Ok::<_, StoreError>(items)
        })
        .await
        .map_err(|e| StoreError::Db(format!("sort failed: {e}")))??;
        let hits: Vec<Hit> = sorted
            .iter()
            .map(|s| Hit {
                seq: s.seq,
                uid: s.uid,
                modseq: s.modseq,
            })
            .collect();
        // RETURN (SAVE) with SEARCHRES keeps the result for `$` as SEARCH
        // does (RFC 5182 2.1, with ESORT); SAVE alone sends no ESEARCH response.
        let ret = match self.save_result(ret, &hits) {
            super::searchres::Saved::Answer(r) => r,
            super::searchres::Saved::Quiet => return Ok(format!("{tag} OK SORT completed\r\n")),
            super::searchres::Saved::Refused => {
                return Ok(format!(
                    "{tag} NO [NOTSAVED] Result too fragmented to save\r\n"
                ));
            }
        };
        let line = match ret {
            Some(opts) => esearch_line(tag, uid, &opts, &hits, true, modseq),
            None => number_list("SORT", uid, &hits, modseq),
        };
        conn.write(line.as_bytes());
        Ok(format!("{tag} OK SORT completed\r\n"))
    }

    /// THREAD (RFC 5256 4) and UID THREAD.
    pub(super) async fn thread(
        &mut self,
        tag: &str,
        uid: bool,
        algorithm: Algorithm,
        criteria: SearchKey,
        conn: &mut Conn,
    ) -> Result<String, StoreError> {
        let Some(messages) = self.selected_messages() else {
            return Ok(format!("{tag} BAD No mailbox selected\r\n"));
        };
        let store: Arc<Store> = self.svc.store.clone();
        let data = mxrack_store::spawn_blocking(move || {
            let msgs = evaluate(&store, &messages, &criteria, true, |hit, meta, parsed| {
                let number = if uid { hit.uid } else { hit.seq };
                ThreadMsg::of(number, parsed, meta.internal_date)
            })?;
            Ok::<_, StoreError>(thread::thread(algorithm, &msgs))
        })
        .await
        .map_err(|e| StoreError::Db(format!("thread failed: {e}")))??;
        let sep = if data.is_empty() { "" } else { " " };
        conn.write(format!("* THREAD{sep}{data}\r\n").as_bytes());
        Ok(format!("{tag} OK THREAD completed\r\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(v: &[(u32, u32, u64)]) -> Vec<Hit> {
        v.iter()
            .map(|&(seq, uid, modseq)| Hit { seq, uid, modseq })
            .collect()
    }

    fn opts(s: &str) -> ReturnOpts {
        use crate::parser::{Command, parse_request};
        match parse_request(format!("t SEARCH RETURN ({s}) ALL\r\n").as_bytes())
            .expect("parse")
            .command
        {
            Command::Search {
                esearch: Some(o), ..
            } => o,
            _ => panic!(),
        }
    }

    #[test]
    fn esearch_lines() {
        // Sort order 5 3 4 2 1 (reverse arrival with a tie, RFC 5256).
        let sorted = hits(&[(5, 50, 9), (3, 30, 2), (4, 40, 3), (2, 20, 1), (1, 10, 4)]);
        let asc = hits(&[(1, 10, 4), (2, 20, 1), (3, 30, 2)]);
        // (RETURN options, UID, hits, sorted, MODSEQ, line)
        type Case<'a> = (&'a str, bool, &'a [Hit], bool, bool, &'a str);
        let table: &[Case<'_>] = &[
            (
                "",
                false,
                &asc,
                false,
                false,
                "* ESEARCH (TAG \"t\") ALL 1:3",
            ),
            (
                "MIN MAX COUNT",
                true,
                &asc,
                false,
                false,
                "* ESEARCH (TAG \"t\") UID MIN 10 MAX 30 COUNT 3",
            ),
            ("MIN", false, &[], false, false, "* ESEARCH (TAG \"t\")"),
            (
                "COUNT",
                false,
                &[],
                false,
                false,
                "* ESEARCH (TAG \"t\") COUNT 0",
            ),
            (
                "MIN MAX",
                false,
                &sorted,
                true,
                false,
                "* ESEARCH (TAG \"t\") MIN 5 MAX 1",
            ),
            (
                "ALL",
                false,
                &sorted,
                true,
                false,
                "* ESEARCH (TAG \"t\") ALL 5,3:4,2,1",
            ),
            (
                "PARTIAL 2:4",
                false,
                &sorted,
                true,
                false,
                "* ESEARCH (TAG \"t\") PARTIAL (2:4 3:4,2)",
            ),
            (
                "PARTIAL 4:2",
                false,
                &asc,
                false,
                false,
                "* ESEARCH (TAG \"t\") PARTIAL (2:4 2:3)",
            ),
            (
                "PARTIAL 6:6",
                false,
                &asc,
                false,
                false,
                "* ESEARCH (TAG \"t\") PARTIAL (6:6 NIL)",
            ),
            // MODSEQ: of the one message MIN names; of all for ALL.
            (
                "MIN",
                false,
                &asc,
                false,
                true,
                "* ESEARCH (TAG \"t\") MIN 1 MODSEQ 4",
            ),
            (
                "MAX",
                false,
                &asc,
                false,
                true,
                "* ESEARCH (TAG \"t\") MAX 3 MODSEQ 2",
            ),
            (
                "MIN MAX",
                false,
                &asc[1..],
                false,
                true,
                "* ESEARCH (TAG \"t\") MIN 2 MAX 3 MODSEQ 2",
            ),
            (
                "ALL",
                false,
                &asc,
                false,
                true,
                "* ESEARCH (TAG \"t\") ALL 1:3 MODSEQ 4",
            ),
            ("ALL", false, &[], false, true, "* ESEARCH (TAG \"t\")"),
        ];
        for (o, uid, h, sorted, modseq, want) in table {
            assert_eq!(
                esearch_line("t", *uid, &opts(o), h, *sorted, *modseq),
                format!("{want}\r\n"),
                "{o}"
            );
        }
        assert_eq!(
            number_list("SEARCH", false, &asc, true),
            "* SEARCH 1 2 3 (MODSEQ 4)\r\n"
        );
        assert_eq!(
            number_list("SORT", true, &sorted[..2], false),
            "* SORT 50 30\r\n"
        );
        assert_eq!(number_list("SEARCH", false, &[], true), "* SEARCH\r\n");
    }
}
