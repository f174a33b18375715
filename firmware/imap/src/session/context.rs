//! Search contexts (RFC 5267 4.3, CONTEXT=SEARCH): a SEARCH with RETURN
//! (UPDATE) keeps its result, and after each command the session reports
//! what joined it (ADDTO) and what left it (REMOVEFROM) until CANCELUPDATE
//! or the mailbox is left. Also the CONDSTORE-enabling commands (RFC 7162
//! 3.1).

use super::{Conn, Session};
use crate::parser::{Command, FetchAtt, SearchKey, StatusItem};
use crate::search::{self, Candidate};
use crate::sequence::SequenceSet;
use std::collections::BTreeSet;

/// Search contexts one session keeps; a further UPDATE is answered with
/// the NOUPDATE response code (RFC 5267 4.3) and gets no updates.
pub(super) const UPDATE_CONTEXTS_MAX: usize = 4;

pub(super) struct UpdateContext {
    tag: String,
    uid: bool,
    folder: String,
    criteria: SearchKey,
    /// UIDs in the result.
    result: BTreeSet<u32>,
    /// Messages at or below this mod-sequence were evaluated already.
    modseq: u64,
}

impl Session {
    /// A CONDSTORE-enabling command (RFC 7162 3.1: FETCH with MODSEQ or
    /// CHANGEDSINCE, STORE UNCHANGEDSINCE, STATUS HIGHESTMODSEQ, SEARCH/SORT
    /// with the MODSEQ key)
    /// turns CONDSTORE on for the session; with a mailbox selected, the
    /// first one reports its HIGHESTMODSEQ (RFC 7162 3.1.2).
    pub(super) fn condstore_enabling(&mut self, command: &Command, conn: &mut Conn) {
        if self.condstore {
            return;
        }
        let enabling = match command {
            Command::Fetch {
                items,
                changed_since,
                ..
            } => changed_since.is_some() || items.contains(&FetchAtt::ModSeq),
            Command::Store {
                unchanged_since, ..
            } => unchanged_since.is_some(),
            Command::Status { items, .. } => items.contains(&StatusItem::HighestModSeq),
            Command::Search { criteria, .. }
            | Command::Sort { criteria, .. }
            | Command::Thread { criteria, .. } => super::sort::uses_modseq(criteria),
            _ => false,
        };
        if !enabling {
            return;
        }
        self.condstore = true;
        if let Some(sel) = self.selected.as_ref() {
            // The session's own STOREs move its messages past `sel.modseq`
            // (which follows other sessions' changes): the higher counts.
            let highest = sel
                .messages
                .iter()
                .map(|m| m.modseq)
                .fold(sel.modseq, u64::max);
            conn.write(format!("* OK [HIGHESTMODSEQ {highest}] Highest\r\n").as_bytes());
        }
    }

    /// Keeps the result of `SEARCH RETURN (UPDATE)` tagged `tag`.
    pub(super) fn start_update(
        &mut self,
        tag: &str,
        uid: bool,
        criteria: SearchKey,
        hits: &[super::sort::Hit],
        conn: &mut Conn,
    ) {
        let Some(sel) = self.selected.as_ref() else {
            return;
        };
        self.contexts.retain(|c| c.tag != tag);
        if self.contexts.len() >= UPDATE_CONTEXTS_MAX {
            conn.write(
                format!("* NO [NOUPDATE \"{tag}\"] Too many search contexts\r\n").as_bytes(),
            );
            return;
        }
        self.contexts.push(UpdateContext {
            tag: tag.to_string(),
            uid,
            folder: sel.name.clone(),
            criteria,
            result: hits.iter().map(|h| h.uid).collect(),
            modseq: sel.messages.iter().map(|m| m.modseq).max().unwrap_or(0),
        });
    }

    /// CANCELUPDATE (RFC 5267 4.3): the named contexts stop; an unknown
    /// tag is a BAD.
    pub(super) fn cancel_update(&mut self, tag: &str, tags: &[String]) -> String {
        if let Some(t) = tags
            .iter()
            .find(|t| !self.contexts.iter().any(|c| &c.tag == *t))
        {
            return format!("{tag} BAD [CLIENTBUG] No search context {t}\r\n");
        }
        self.contexts.retain(|c| !tags.contains(&c.tag));
        format!("{tag} OK CANCELUPDATE completed\r\n")
    }

    /// Before EXPUNGE responses for `removed` (UIDs) are sent: REMOVEFROM
    /// for those in a result, with the sequence numbers they still have.
    pub(super) fn context_expunging(&mut self, removed: &[u32], conn: &mut Conn) {
        let Some(sel) = self.selected.as_ref() else {
            return;
        };
        for c in &mut self.contexts {
            let mut gone: Vec<u32> = Vec::new();
            for (i, m) in sel.messages.iter().enumerate() {
                if removed.contains(&m.uid) && c.result.remove(&m.uid) {
                    gone.push(if c.uid { m.uid } else { i as u32 + 1 });
                }
            }
            if !gone.is_empty() {
                conn.write(context_line(c, "REMOVEFROM", &gone).as_bytes());
            }
        }
    }

    /// Before the tagged reply: evaluates the messages that changed since
    /// each context last looked (new or flag-changed: a higher
    /// mod-sequence) and reports ADDTO/REMOVEFROM.
    pub(super) async fn context_updates(&mut self, conn: &mut Conn) {
        if self.contexts.is_empty() {
            return;
        }
        let Some(sel) = self.selected.as_ref() else {
            self.contexts.clear();
            return;
        };
        let folder = sel.name.clone();
        self.contexts.retain(|c| c.folder == folder);
        let messages = sel
            .messages
            .iter()
            .map(|m| super::recent::with_recent(m, &sel.recent))
            .collect::<Vec<_>>();
        let store = self.svc.store.clone();
        let mut contexts = std::mem::take(&mut self.contexts);
        let joined = mxrack_store::spawn_blocking(move || {
            let max_seq = messages.len() as u32;
            let max_uid = messages.last().map(|m| m.uid).unwrap_or(0);
            let mut lines = String::new();
            for c in &mut contexts {
                let content = search::needs_content(&c.criteria);
                let (mut add, mut remove) = (Vec::new(), Vec::new());
                // The lowest mod-sequence of a message that could not be
                // read: the context's mark stays below it, so it is looked
                // at again with the next change.
                let mut skipped: Option<u64> = None;
                for (i, meta) in messages.iter().enumerate() {
                    if meta.modseq <= c.modseq {
                        continue;
                    }
                    // A message that cannot be read keeps its membership:
                    // no REMOVEFROM (or ADDTO) on a guess. One that is gone
                    // is left to its EXPUNGE.
                    let raw = if content {
                        match super::sort::read_for_search(&store, meta) {
                            Ok(Some(raw)) => Some(raw),
                            Ok(None) => continue,
                            Err(e) => {
                                tracing::warn!(error = %e, uid = meta.uid,
                                    "CONTEXT update: message not readable; its membership is kept");
                                skipped = Some(skipped.map_or(meta.modseq, |m| m.min(meta.modseq)));
                                continue;
                            }
                        }
                    } else {
                        None
                    };
                    let parsed = raw.as_deref().and_then(crate::fetch::parse);
                    let cand = Candidate {
                        seq: i as u32 + 1,
                        max_seq,
                        max_uid,
                        meta,
                        raw: raw.as_deref(),
                        parsed: parsed.as_ref(),
                    };
                    let number = if c.uid { meta.uid } else { i as u32 + 1 };
                    let now = search::matches(&c.criteria, &cand);
                    if now && c.result.insert(meta.uid) {
                        add.push(number);
                    } else if !now && c.result.remove(&meta.uid) {
                        remove.push(number);
                    }
                }
                let newest = messages.iter().map(|m| m.modseq).max().unwrap_or(c.modseq);
                c.modseq = match skipped {
                    Some(m) => c.modseq.max(m.saturating_sub(1)),
                    None => newest,
                };
                if !remove.is_empty() {
                    lines.push_str(&context_line(c, "REMOVEFROM", &remove));
                }
                if !add.is_empty() {
                    lines.push_str(&context_line(c, "ADDTO", &add));
                }
            }
            (contexts, lines)
        })
        .await;
        if let Ok((contexts, lines)) = joined {
            self.contexts = contexts;
            conn.write(lines.as_bytes());
        }
    }
}

/// `* ESEARCH (TAG "t") [UID] ADDTO (0 set)` (and REMOVEFROM): position
/// is always 0. RFC 5267 4.3 gives ADDTO/REMOVEFROM a position in the
/// result, which only means something for a sorted result (CONTEXT=SORT,
/// not offered: SORT refuses UPDATE); a SEARCH result is ordered by
/// sequence number, so the client places the numbers itself, and 4.3's
/// own SEARCH examples send 0 (as Dovecot does). Contexts end when their
/// mailbox is left, re-SELECT of the same name included
/// (`Session::leave_selected`).
fn context_line(c: &UpdateContext, what: &str, numbers: &[u32]) -> String {
    let mut sorted = numbers.to_vec();
    sorted.sort_unstable();
    format!(
        "* ESEARCH (TAG \"{}\"){} {what} (0 {})\r\n",
        c.tag,
        if c.uid { " UID" } else { "" },
        SequenceSet::compact(&sorted)
    )
}
