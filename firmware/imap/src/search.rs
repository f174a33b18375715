//! SEARCH evaluation (RFC 3501 6.4.4) over one message: metadata first, the
//! parsed message only when a key needs it. Pure.

use crate::parser::SearchKey;
use mail_parser::Message;
use mxrack_store::MessageMeta;

/// What a key needs to look at, so the caller parses messages only when a
/// key asks for headers or bodies.
pub fn needs_content(key: &SearchKey) -> bool {
    match key {
        SearchKey::And(keys) => keys.iter().any(needs_content),
        SearchKey::Or(a, b) => needs_content(a) || needs_content(b),
        SearchKey::Not(k) => needs_content(k),
        SearchKey::Header(..)
        | SearchKey::Body(_)
        | SearchKey::Text(_)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_) => true,
        _ => false,
    }
}

/// One message as SEARCH sees it.
pub struct Candidate<'a> {
    pub seq: u32,
    pub max_seq: u32,
    pub max_uid: u32,
    pub meta: &'a MessageMeta,
    pub raw: Option<&'a [u8]>,
    pub parsed: Option<&'a Message<'a>>,
}

fn has_flag(meta: &MessageMeta, flag: &str) -> bool {
    meta.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
}

/// Substring match under i;unicode-casemap (RFC 5051), the collation
/// SORT and THREAD compare with too.
fn contains_ci(haystack: &str, needle: &str) -> bool {
    crate::collate::contains(haystack, needle)
}

fn days(unix: i64) -> i64 {
    unix.div_euclid(86_400)
}

/// The Date: field's own calendar date, its zone ignored: RFC 3501 6.4.4
/// compares SENTBEFORE/SENTON/SENTSINCE "disregarding time and timezone",
/// so "Mon, 1 Jan 2024 23:30 -0500" is sent on 1 January, not on the
/// 2nd as it is in UTC.
fn sent_days(c: &Candidate<'_>) -> Option<i64> {
    let d = c.parsed?.date()?;
    // The same day count as the key's date (parser::parse_date).
    Some(crate::parser::days_from_civil(
        i64::from(d.year),
        i64::from(d.month),
        i64::from(d.day),
    ))
}

/// Every text of a message: each text part, attachment or not, and the
/// parts of attached messages (RFC 3501 6.4.4: BODY searches the body).
fn body_text(m: &Message<'_>) -> String {
    let mut out = String::new();
    collect_text(m, &mut out, 0);
    out
}

fn collect_text(m: &Message<'_>, out: &mut String, depth: usize) {
    use mail_parser::PartType;
    for part in &m.parts {
        match &part.body {
            PartType::Text(t) => out.push_str(t),
            PartType::Html(h) => out.push_str(h),
            PartType::Message(inner) if depth < 8 => {
                if let Some(s) = inner.subject() {
                    out.push_str(s);
                    out.push('\n');
                }
                collect_text(inner, out, depth + 1);
            }
            _ => {}
        }
        out.push('\n');
    }
}

pub fn matches(key: &SearchKey, c: &Candidate<'_>) -> bool {
    let m = c.meta;
    match key {
        SearchKey::All => true,
        SearchKey::And(keys) => keys.iter().all(|k| matches(k, c)),
        SearchKey::Or(a, b) => matches(a, c) || matches(b, c),
        SearchKey::Not(k) => !matches(k, c),
        SearchKey::Sequence(set) => set.contains(c.seq, c.max_seq),
        SearchKey::Uid(set) => set.contains(m.uid, c.max_uid),
        SearchKey::Flag(f) => has_flag(m, f),
        SearchKey::Unflag(f) => !has_flag(m, f),
        // The session adds \Recent to the flags of its recent messages
        // (session/recent.rs); NEW is RECENT UNSEEN (RFC 3501 6.4.4).
        SearchKey::Recent => has_flag(m, "\\Recent"),
        SearchKey::New => has_flag(m, "\\Recent") && !has_flag(m, "\\Seen"),
        SearchKey::Old => !has_flag(m, "\\Recent"),
        SearchKey::Larger(n) => m.size > *n,
        SearchKey::Smaller(n) => m.size < *n,
        SearchKey::Before(d) => days(m.internal_date) < *d,
        SearchKey::On(d) => days(m.internal_date) == *d,
        SearchKey::Since(d) => days(m.internal_date) >= *d,
        SearchKey::SentBefore(d) => sent_days(c).is_some_and(|s| s < *d),
        SearchKey::SentOn(d) => sent_days(c).is_some_and(|s| s == *d),
        SearchKey::SentSince(d) => sent_days(c).is_some_and(|s| s >= *d),
        SearchKey::ModSeq(n) => m.modseq >= *n,
        SearchKey::Header(name, value) => c.parsed.is_some_and(|p| header_matches(p, name, value)),
        SearchKey::Body(text) => c.parsed.is_some_and(|p| contains_ci(&body_text(p), text)),
        SearchKey::Text(text) => {
            let header = c.raw.map(|r| {
                let end = r
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .unwrap_or(r.len());
                String::from_utf8_lossy(&r[..end]).into_owned()
            });
            header.is_some_and(|h| contains_ci(&h, text))
                || c.parsed.is_some_and(|p| contains_ci(&body_text(p), text))
        }
    }
}

/// HEADER name value (RFC 3501 6.4.4): true when any field of that name
/// (a message may carry several, e.g. X-Extra or Received) contains the
/// value; an empty value matches any message having the field. Each field
/// is tried raw, decoded where mail-parser decodes it, and as
/// "Name addr, ..." for address fields so FROM "Jo" and FROM "jo@x" match.
fn header_matches(p: &Message<'_>, name: &str, value: &str) -> bool {
    let raw = p.raw_message.as_ref();
    p.headers()
        .iter()
        .filter(|h| h.name.as_str().eq_ignore_ascii_case(name))
        .any(|h| {
            let (s, e) = (h.offset_start as usize, h.offset_end as usize);
            let field = raw.get(s..e.min(raw.len())).unwrap_or_default();
            let texts = [
                Some(mxrack_mime::unfold(&String::from_utf8_lossy(field))),
                h.value.as_text().map(str::to_string),
                h.value.as_address().map(address_text),
            ];
            texts.iter().flatten().any(|t| contains_ci(t, value))
        })
}

fn address_text(addr: &mail_parser::Address<'_>) -> String {
    let mut out = String::new();
    for a in addr.iter() {
        if let Some(n) = &a.name {
            out.push_str(n);
            out.push(' ');
        }
        if let Some(e) = &a.address {
            out.push_str(e);
        }
        out.push_str(", ");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::{Command, parse_request};

    fn key(s: &str) -> SearchKey {
        match parse_request(format!("a SEARCH {s}\r\n").as_bytes())
            .expect("parse")
            .command
        {
            Command::Search { criteria, .. } => criteria,
            _ => panic!(),
        }
    }

    fn candidate<'a>(
        raw: &'a [u8],
        parsed: &'a Message<'a>,
        meta: &'a MessageMeta,
    ) -> Candidate<'a> {
        Candidate {
            seq: 1,
            max_seq: 1,
            max_uid: meta.uid,
            meta,
            raw: Some(raw),
            parsed: Some(parsed),
        }
    }

    /// SENT* keys take the Date: field's date as written, whatever its zone
    /// (RFC 3501 6.4.4); HEADER matches any of several fields of one name.
    #[test]
    fn sent_dates_as_written_and_repeated_header_fields() {
        let raw: &[u8] = b"From: kim@example.org\r\nDate: Mon, 1 Jan 2024 23:30:00 -0500\r\nX-Extra: first\r\nX-Extra: hello there\r\nX-Extra: third\r\n\r\nbody\r\n";
        let parsed = mail_parser::MessageParser::default()
            .parse(raw)
            .expect("parse");
        let meta = MessageMeta {
            uid: 1,
            blob: 1,
            size: raw.len() as u64,
            internal_date: 1_704_153_600,
            flags: vec![],
            modseq: 1,
        };
        let c = candidate(raw, &parsed, &meta);
        let table = [
            // 23:30 -0500 is 2 January in UTC; the message was sent on the 1st.
            ("SENTON 1-Jan-2024", true),
            ("SENTON 2-Jan-2024", false),
            ("SENTBEFORE 2-Jan-2024", true),
            ("SENTBEFORE 1-Jan-2024", false),
            ("SENTSINCE 1-Jan-2024", true),
            ("SENTSINCE 2-Jan-2024", false),
            ("HEADER X-Extra first", true),
            ("HEADER x-extra hello", true),
            ("HEADER X-EXTRA third", true),
            ("HEADER X-Extra fourth", false),
            ("HEADER X-Extra \"\"", true),
            ("HEADER X-Other \"\"", false),
        ];
        for (k, want) in table {
            assert_eq!(matches(&key(k), &c), want, "{k}");
        }
        let zone_ahead: &[u8] = b"Date: Tue, 2 Jan 2024 00:30:00 +0900\r\n\r\nx\r\n";
        let parsed = mail_parser::MessageParser::default()
            .parse(zone_ahead)
            .expect("parse");
        let c = candidate(zone_ahead, &parsed, &meta);
        assert!(matches(&key("SENTON 2-Jan-2024"), &c));
        assert!(!matches(&key("SENTON 1-Jan-2024"), &c));
    }

    #[test]
    fn keys_match_metadata_and_content() {
        let raw: &[u8] = b"From: Jo Smith <jo@example.net>\r\nSubject: Quarterly report\r\nDate: Mon, 8 Jan 2007 17:46:00 +0000\r\n\r\nThe numbers are in.\r\n";
        let parsed = mail_parser::MessageParser::default()
            .parse(raw)
            .expect("parse");
        let meta = MessageMeta {
            uid: 7,
            blob: 1,
            size: raw.len() as u64,
            internal_date: 1_168_278_360,
            flags: vec!["\\Seen".into()],
            modseq: 3,
        };
        let c = Candidate {
            seq: 2,
            max_seq: 5,
            max_uid: 9,
            meta: &meta,
            raw: Some(raw),
            parsed: Some(&parsed),
        };
        let table = [
            ("ALL", true),
            ("SEEN", true),
            ("UNSEEN", false),
            ("FROM jo", true),
            ("FROM \"Jo Smith\"", true),
            ("FROM nobody", false),
            ("SUBJECT quarterly", true),
            ("BODY numbers", true),
            ("BODY missing", false),
            ("TEXT report", true),
            ("HEADER Subject \"\"", true),
            ("HEADER X-None \"\"", false),
            ("SENTON 8-Jan-2007", true),
            ("SENTBEFORE 8-Jan-2007", false),
            ("ON 8-Jan-2007", true),
            ("SINCE 9-Jan-2007", false),
            ("UID 7", true),
            ("UID 8:*", false),
            ("2", true),
            ("3:*", false),
            ("OR UNSEEN FROM jo", true),
            ("NOT SEEN", false),
            ("LARGER 10 SMALLER 100000", true),
            ("(SEEN UNFLAGGED) NOT DELETED", true),
            ("KEYWORD $Junk", false),
            ("NEW", false),
        ];
        for (k, want) in table {
            assert_eq!(matches(&key(k), &c), want, "{k}");
        }
        assert!(needs_content(&key("OR SEEN BODY x")));
        assert!(!needs_content(&key("UID 1:* UNSEEN")));
    }
}
