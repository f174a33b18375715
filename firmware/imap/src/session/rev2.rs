//! IMAP4rev2 (RFC 9051) beside IMAP4rev1: both are advertised, and a
//! client that sends `ENABLE IMAP4rev2` (RFC 9051 6.3.1) gets the rev2 rules
//! where they differ from RFC 3501 (RFC 9051 Appendix E). Everything here
//! is a switch the rest of the session reads; the rules themselves:
//!
//! - No `\Recent` and no RECENT response (Appendix E item 11): SELECT and
//!   EXAMINE send no `* n RECENT`, and no `OK [UNSEEN n]` either (6.3.2
//!   lists the untagged responses a rev2 SELECT sends; UNSEEN is gone).
//!   A rev2 session claims no message as \Recent (`recent_allowed`), so
//!   none shows the flag and new mail sends no RECENT; the messages stay
//!   recent for a rev1 session.
//! - The RECENT, NEW and OLD search keys and the STATUS (and LIST-STATUS)
//!   item RECENT are not in rev2's grammar (Appendix E item 11; 6.4.4,
//!   6.3.11): a command with one is a BAD (`rev2_refusal`), as any
//!   command outside the grammar.
//! - SELECT/EXAMINE send the mailbox's LIST response (6.3.2: "The server
//!   MUST return a LIST response with the mailbox name").
//! - SEARCH answers with ESEARCH, with the tag correlator, never with the
//!   rev1 SEARCH response (Appendix E item 13; 7.3.4): a SEARCH without
//!   RETURN is `RETURN (ALL)`.
//! - Mailbox names are UTF-8 on the wire, never modified UTF-7 (5.1; as
//!   after `ENABLE UTF8=ACCEPT`, RFC 6855 3).
//! - Already rev1 extensions of this server that rev2 folds in: LITERAL-
//!   before login (LITERAL+ after, a superset), NAMESPACE, UNSELECT,
//!   UIDPLUS, ESEARCH, ENABLE, IDLE, SASL-IR, LIST-EXTENDED, LIST-STATUS
//!   (`LIST ... RETURN (STATUS ...)`), MOVE, STATUS=SIZE, STATUS DELETED,
//!   SPECIAL-USE attributes, `OK [CLOSED]`.
//! - FETCH BINARY (RFC 3516's fetch half, part of rev2 per 6.4.5): added
//!   with the BINARY extension on its own branch. The hook is the comment
//!   at IMAP4rev2 in `capabilities()`: when that work lands, BINARY is
//!   listed there and FETCH BINARY answers in both modes; nothing here
//!   changes.

use super::Session;
use crate::parser::{Command, ReturnOpts, SearchKey, StatusItem};

impl Session {
    /// `ENABLE IMAP4rev2`: rev2 rules from now on, UTF-8 names included.
    pub(super) fn enable_rev2(&mut self) {
        self.rev2 = true;
        self.utf8 = true;
    }

    /// `\Recent` and the RECENT response exist only in IMAP4rev1
    /// (RFC 9051 Appendix E item 11).
    pub(super) fn recent_allowed(&self) -> bool {
        !self.rev2
    }

    /// In rev2 mode, why `command` is outside RFC 9051's grammar: a
    /// RECENT/NEW/OLD search key or a RECENT status item (Appendix E
    /// item 11). `None` when it is fine (and always in rev1 mode).
    pub(super) fn rev2_refusal(&self, command: &Command) -> Option<&'static str> {
        if !self.rev2 {
            return None;
        }
        let recent_item = |items: &[StatusItem]| items.contains(&StatusItem::Recent);
        match command {
            Command::Status { items, .. } if recent_item(items) => {
                Some("STATUS RECENT is not in IMAP4rev2")
            }
            Command::List(args) if args.return_status.as_deref().is_some_and(recent_item) => {
                Some("STATUS RECENT is not in IMAP4rev2")
            }
            Command::Search { criteria, .. }
            | Command::Sort { criteria, .. }
            | Command::Thread { criteria, .. }
                if uses_recent(criteria) =>
            {
                Some("RECENT, NEW and OLD are not search keys in IMAP4rev2")
            }
            _ => None,
        }
    }

    /// A SEARCH's RETURN options as rev2 reads them: none given means the
    /// ESEARCH response anyway, as `RETURN (ALL)` (RFC 9051 6.4.4).
    pub(super) fn search_return(&self, esearch: Option<ReturnOpts>) -> Option<ReturnOpts> {
        if self.rev2 {
            esearch.or_else(|| {
                Some(ReturnOpts {
                    all: true,
                    ..ReturnOpts::default()
                })
            })
        } else {
            esearch
        }
    }

    /// The untagged responses of a rev2 SELECT/EXAMINE that rev1 does not
    /// have (the LIST of the mailbox), or those rev1 has and rev2 drops
    /// (RECENT, OK [UNSEEN]): `rev1_only` is what rev1 sends there.
    pub(super) fn select_extras(&self, name: &str, rev1_only: String) -> Vec<u8> {
        if !self.rev2 {
            return rev1_only.into_bytes();
        }
        let mut out = b"* LIST () \"/\" ".to_vec();
        out.extend_from_slice(&self.quoted_name(name));
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// True when a RECENT, NEW or OLD key is anywhere in `key`. Keys nest at
/// most `parser::NESTING_DEPTH_MAX` deep; walked with a stack all the same.
fn uses_recent(key: &SearchKey) -> bool {
    let mut stack = vec![key];
    while let Some(k) = stack.pop() {
        match k {
            SearchKey::Recent | SearchKey::New | SearchKey::Old => return true,
            SearchKey::And(keys) => stack.extend(keys.iter()),
            SearchKey::Or(a, b) => {
                stack.push(a);
                stack.push(b);
            }
            SearchKey::Not(a) => stack.push(a),
            _ => {}
        }
    }
    false
}
