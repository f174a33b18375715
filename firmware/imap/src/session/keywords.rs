//! The keywords a selected session has announced (RFC 3501 7.2.6): a FETCH
//! must not show a keyword the session's last `* FLAGS` did not list, so
//! when a STORE (this session's or another's) or new mail brings one the
//! mailbox did not have, `* FLAGS` and `* OK [PERMANENTFLAGS]` go out first
//! (as Dovecot sends them).

use mxrack_store::MessageMeta;

use super::{SYSTEM_FLAGS, Selected};

/// The FLAGS and PERMANENTFLAGS responses for these keywords, as SELECT
/// sends them.
pub(super) fn flags_lines(keywords: &[String], read_only: bool) -> String {
    let kw: String = keywords.iter().map(|k| format!(" {k}")).collect();
    let mut out = format!("* FLAGS ({SYSTEM_FLAGS}{kw})\r\n");
    if read_only {
        out.push_str("* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n");
    } else {
        out.push_str(&format!(
            "* OK [PERMANENTFLAGS ({SYSTEM_FLAGS}{kw} \\*)] Flags permitted\r\n"
        ));
    }
    out
}

/// Adds the keywords of `messages` the session has not announced to its
/// set and returns the responses announcing the new set (empty when
/// nothing is new). Send them before any FETCH showing those messages.
pub(super) fn announce<'a>(
    sel: &mut Selected,
    messages: impl IntoIterator<Item = &'a MessageMeta>,
) -> String {
    let before = sel.keywords.len();
    for m in messages {
        for f in &m.flags {
            if !f.starts_with('\\') && !sel.keywords.iter().any(|k| k.eq_ignore_ascii_case(f)) {
                sel.keywords.push(f.clone());
            }
        }
    }
    if sel.keywords.len() == before {
        return String::new();
    }
    flags_lines(&sel.keywords, sel.read_only)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_new_keyword_is_announced() {
        let meta = |flags: &[&str]| MessageMeta {
            uid: 1,
            blob: 1,
            size: 1,
            internal_date: 0,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            modseq: 1,
        };
        let mut sel = Selected {
            name: "INBOX".into(),
            read_only: false,
            messages: vec![],
            modseq: 1,
            recent: Default::default(),
            saved: Vec::new(),
            keywords: vec!["$Work".into()],
        };
        assert_eq!(announce(&mut sel, &[meta(&["\\Seen", "$work"])]), "");
        assert_eq!(
            announce(&mut sel, &[meta(&["$Label1"])]),
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work $Label1)\r\n\
             * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work $Label1 \\*)] Flags permitted\r\n"
        );
    }
}
