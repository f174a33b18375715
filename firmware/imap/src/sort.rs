//! SORT (RFC 5256 3) and SORT=DISPLAY (RFC 5957): the sort keys of one
//! message, read from its parsed header, and the order they give. Pure.
//!
//! Only the keys a command asks for are kept, each bounded
//! ([`SORT_TEXT_BYTES_MAX`]), so a SORT holds a few hundred bytes per
//! message whatever the messages carry; the parsed message is dropped as
//! soon as its keys are read.

use crate::collate;
use crate::fetch::address;
use mail_parser::{Address, HeaderValue, Message};
use std::cmp::Ordering;

/// Longest collation key kept for a text sort key (subject, address,
/// display name), in bytes: messages that agree on this prefix compare
/// equal and fall back to the next key, then to the sequence number.
pub const SORT_TEXT_BYTES_MAX: usize = 256;
/// Most sort keys in one SORT program.
pub const SORT_KEYS_MAX: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Arrival,
    Cc,
    Date,
    From,
    Size,
    Subject,
    To,
    /// RFC 5957.
    DisplayFrom,
    DisplayTo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortCriterion {
    pub reverse: bool,
    pub key: SortKey,
}

impl SortKey {
    pub fn from_atom(a: &str) -> Option<SortKey> {
        Some(match a.to_ascii_uppercase().as_str() {
            "ARRIVAL" => SortKey::Arrival,
            "CC" => SortKey::Cc,
            "DATE" => SortKey::Date,
            "FROM" => SortKey::From,
            "SIZE" => SortKey::Size,
            "SUBJECT" => SortKey::Subject,
            "TO" => SortKey::To,
            "DISPLAYFROM" => SortKey::DisplayFrom,
            "DISPLAYTO" => SortKey::DisplayTo,
            _ => return None,
        })
    }

    /// Whether the key is read from the message's header (the others come
    /// from the store's metadata).
    pub fn needs_header(self) -> bool {
        !matches!(self, SortKey::Arrival | SortKey::Size)
    }
}

/// One key's value for one message.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyValue {
    Number(i64),
    Text(String),
}

/// A message as SORT sees it: its sequence number (the final tie-break,
/// RFC 5256 3) and one value per key of the program.
#[derive(Debug, Clone)]
pub struct Sortable {
    pub seq: u32,
    pub uid: u32,
    pub modseq: u64,
    pub values: Vec<KeyValue>,
}

/// Cuts a collation key to [`SORT_TEXT_BYTES_MAX`] at a char boundary.
fn bounded(mut s: String) -> String {
    if s.len() > SORT_TEXT_BYTES_MAX {
        let mut end = SORT_TEXT_BYTES_MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The sent date (RFC 5256 2.2): the Date: field in UTC, or the internal
/// date when the field is missing or cannot be parsed.
pub fn sent_date(parsed: Option<&Message<'_>>, internal_date: i64) -> i64 {
    parsed
        .and_then(|p| p.date())
        .filter(|d| d.is_valid())
        .map(|d| d.to_timestamp())
        .unwrap_or(internal_date)
}

/// RFC 5256 3: FROM, TO and CC sort on the addr-mailbox of the first
/// address, as ENVELOPE shows it (a group's first entry is its name).
fn first_mailbox(parsed: Option<&Message<'_>>, field: &str) -> String {
    let Some(value) = parsed.and_then(|p| p.header_raw(field)) else {
        return String::new();
    };
    let addrs = address::parse(&mxrack_mime::unfold(value));
    addrs
        .first()
        .and_then(|a| a.mailbox.clone())
        .unwrap_or_default()
}

/// RFC 5957 3: the display name of the first address (decoded, RFC 2047),
/// or its addr-spec when it has none; for a group, the group's name.
fn display(parsed: Option<&Message<'_>>, field: &str) -> String {
    let Some(p) = parsed else {
        return String::new();
    };
    match p.header(field) {
        Some(HeaderValue::Address(Address::List(list))) => list
            .first()
            .map(|a| {
                a.name
                    .as_deref()
                    .filter(|n| !n.trim().is_empty())
                    .or(a.address.as_deref())
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_default(),
        Some(HeaderValue::Address(Address::Group(groups))) => groups
            .first()
            .map(|g| match &g.name {
                Some(n) => n.to_string(),
                None => g
                    .addresses
                    .first()
                    .and_then(|a| a.name.as_deref().or(a.address.as_deref()))
                    .unwrap_or_default()
                    .to_string(),
            })
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// The values of `program`'s keys for one message. `parsed` is the parsed
/// header (None when no key needs it or it does not parse: text keys are
/// then empty, DATE falls back to the internal date).
pub fn values(
    program: &[SortCriterion],
    parsed: Option<&Message<'_>>,
    internal_date: i64,
    size: u64,
) -> Vec<KeyValue> {
    program
        .iter()
        .map(|c| match c.key {
            SortKey::Arrival => KeyValue::Number(internal_date),
            SortKey::Size => KeyValue::Number(i64::try_from(size).unwrap_or(i64::MAX)),
            SortKey::Date => KeyValue::Number(sent_date(parsed, internal_date)),
            SortKey::Subject => {
                let subject = parsed.and_then(|p| p.subject()).unwrap_or_default();
                KeyValue::Text(bounded(collate::key(&base_subject(subject).0)))
            }
            SortKey::From => KeyValue::Text(bounded(collate::key(&first_mailbox(parsed, "From")))),
            SortKey::To => KeyValue::Text(bounded(collate::key(&first_mailbox(parsed, "To")))),
            SortKey::Cc => KeyValue::Text(bounded(collate::key(&first_mailbox(parsed, "Cc")))),
            SortKey::DisplayFrom => KeyValue::Text(bounded(collate::key(&display(parsed, "From")))),
            SortKey::DisplayTo => KeyValue::Text(bounded(collate::key(&display(parsed, "To")))),
        })
        .collect()
}

/// Orders messages by the program; REVERSE turns one key's order only,
/// and equal messages keep ascending sequence order (RFC 5256 3).
pub fn sort(program: &[SortCriterion], items: &mut [Sortable]) {
    items.sort_by(|a, b| {
        for (i, c) in program.iter().enumerate() {
            let o = a.values[i].cmp(&b.values[i]);
            let o = if c.reverse { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        a.seq.cmp(&b.seq)
    });
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Length of a subj-blob at the start of `s` ("[" *BLOBCHAR "]" *WSP).
fn blob_len(s: &[u8]) -> Option<usize> {
    if s.first() != Some(&b'[') {
        return None;
    }
    let close = s[1..].iter().position(|&b| b == b']' || b == b'[')? + 1;
    if s[close] != b']' {
        return None;
    }
    let mut end = close + 1;
    while end < s.len() && is_wsp(s[end]) {
        end += 1;
    }
    Some(end)
}

/// Length of a subj-refwd at the start of `s`:
/// ("re" / ("fw" ["d"])) *WSP [subj-blob] ":".
fn refwd_len(s: &[u8]) -> Option<usize> {
    let lower = |i: usize| s.get(i).map(u8::to_ascii_lowercase);
    let mut i = match (lower(0), lower(1)) {
        (Some(b'r'), Some(b'e')) => 2,
        (Some(b'f'), Some(b'w')) => {
            if lower(2) == Some(b'd') {
                3
            } else {
                2
            }
        }
        _ => return None,
    };
    while i < s.len() && is_wsp(s[i]) {
        i += 1;
    }
    if let Some(n) = blob_len(&s[i..]) {
        i += n;
    }
    (s.get(i) == Some(&b':')).then_some(i + 1)
}

/// Length of a subj-leader at the start of `s`:
/// (*subj-blob subj-refwd) / WSP.
fn leader_len(s: &[u8]) -> Option<usize> {
    if s.first().copied().is_some_and(is_wsp) {
        return Some(1);
    }
    let mut i = 0;
    loop {
        if let Some(n) = refwd_len(&s[i..]) {
            return Some(i + n);
        }
        i += blob_len(&s[i..])?;
    }
}

/// The base subject (RFC 5256 2.1) of a decoded subject, and whether the
/// subject marked a reply or forward (a removed Re:/Fwd:/(fwd)/[fwd: ]).
/// Every step shortens the text, so the loops end.
pub fn base_subject(subject: &str) -> (String, bool) {
    // (1) Runs of white space (folding included) become one space.
    let mut s = String::with_capacity(subject.len());
    for w in subject.split([' ', '\t', '\r', '\n']) {
        if w.is_empty() {
            continue;
        }
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(w);
    }
    if subject.starts_with([' ', '\t', '\r', '\n']) && !s.is_empty() {
        s.insert(0, ' ');
    }
    let mut reply = false;
    loop {
        // (2) Trailing subj-trailer: "(fwd)" and white space.
        loop {
            let t = s.trim_end_matches([' ', '\t']);
            // Compared as bytes: the subject is a message's, and a cut at
            // len - 5 may fall inside a character.
            if t.len() >= 5 && t.as_bytes()[t.len() - 5..].eq_ignore_ascii_case(b"(fwd)") {
                s.truncate(t.len() - 5);
                reply = true;
            } else {
                s.truncate(t.len());
                break;
            }
        }
        // (3) leaders, (4) a blob when something is left, (5) repeated.
        loop {
            let b = s.as_bytes();
            if let Some(n) = leader_len(b) {
                if n > 1 || !is_wsp(b[0]) {
                    reply = true;
                }
                s.drain(..n);
                continue;
            }
            if let Some(n) = blob_len(b)
                && n < b.len()
            {
                s.drain(..n);
                continue;
            }
            break;
        }
        // (6) "[fwd:" ... "]" around the whole: unwrap and start again.
        // Bytes again: byte 5 may fall inside a character ("[fwdé]").
        if s.len() >= 6 && s.as_bytes()[..5].eq_ignore_ascii_case(b"[fwd:") && s.ends_with(']') {
            s.truncate(s.len() - 1);
            s.drain(..5);
            reply = true;
            continue;
        }
        break;
    }
    (s, reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_subjects_per_rfc5256() {
        let table = [
            ("a", "a", false),
            ("", "", false),
            (" ", "", false),
            ("Re: hello", "hello", true),
            ("RE:  hello  world ", "hello world", true),
            ("[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)", "b", true),
            ("Re: [FWD: c]", "c", true),
            ("[xyz]", "[xyz]", false),
            // Multi-byte characters where a byte cut would land inside one
            // (a panic before: the subject is the sender's).
            ("a\u{20ac}\u{20ac}", "a\u{20ac}\u{20ac}", false),
            ("[fwd\u{e9}]", "[fwd\u{e9}]", false),
            ("x \u{e9}(fwd)", "x \u{e9}", true),
            ("[list] topic", "topic", false),
            ("Ad: Re: Ad: Re: Ad: x", "Ad: Re: Ad: Re: Ad: x", false),
            ("re: [fwd: [fwd: re: [fwd: babylon]]]", "babylon", true),
            ("Re[2]: counted", "counted", true),
            ("Fw: x", "x", true),
            ("Fwd:x", "x", true),
            ("Ref: not a reply", "Ref: not a reply", false),
            ("[a][b]", "[b]", false),
            ("[unclosed subject", "[unclosed subject", false),
        ];
        for (subject, base, reply) in table {
            assert_eq!(
                base_subject(subject),
                (base.to_string(), reply),
                "{subject}"
            );
        }
    }

    fn msg(raw: &[u8]) -> Message<'_> {
        crate::fetch::parse(raw).expect("parse")
    }

    #[test]
    fn keys_and_order() {
        let program = |s: &[(bool, SortKey)]| -> Vec<SortCriterion> {
            s.iter()
                .map(|&(reverse, key)| SortCriterion { reverse, key })
                .collect()
        };
        let raws: [&[u8]; 4] = [
            b"From: Zed <z@x.org>\r\nTo: g: b@x.org;\r\nSubject: Re: beta\r\nDate: Fri, 22 Feb 2008 00:00:00 +0200\r\n\r\n1",
            b"From: a@x.org\r\nTo: =?iso-8859-1?q?foo_aar?= <e@f.g>\r\nSubject: alpha\r\n\r\n22",
            b"From: m@x.org\r\nSubject: [list] Beta\r\nDate: Thu, 21 Feb 2008 23:30:00 +0000\r\n\r\n333",
            b"Subject: =?utf-8?q?=C3=A9t=C3=A9?=\r\n\r\n4",
        ];
        let internal = [500, 300, 100, 1_203_700_000];
        let sizes = [10, 20, 30, 40];
        let run = |p: &[SortCriterion]| -> Vec<u32> {
            let mut items: Vec<Sortable> = raws
                .iter()
                .enumerate()
                .map(|(i, r)| Sortable {
                    seq: i as u32 + 1,
                    uid: i as u32 + 1,
                    modseq: 1,
                    values: values(p, Some(&msg(r)), internal[i], sizes[i]),
                })
                .collect();
            sort(p, &mut items);
            items.iter().map(|s| s.seq).collect()
        };
        use SortKey::*;
        assert_eq!(run(&program(&[(false, Arrival)])), [3, 2, 1, 4]);
        assert_eq!(run(&program(&[(true, Arrival)])), [4, 1, 2, 3]);
        assert_eq!(run(&program(&[(false, Size)])), [1, 2, 3, 4]);
        // Missing Date: the internal date (300, 1970) sorts first; 23:30 UTC
        // on the 21st is 01:30 +0200 on the 22nd, after midnight +0200.
        assert_eq!(run(&program(&[(false, Date)])), [2, 1, 3, 4]);
        // alpha, beta, beta (tie: sequence order), été (É after B).
        assert_eq!(run(&program(&[(false, Subject)])), [2, 1, 3, 4]);
        assert_eq!(run(&program(&[(true, Subject)])), [4, 1, 3, 2]);
        assert_eq!(
            run(&program(&[(false, Subject), (true, Size)])),
            [2, 3, 1, 4]
        );
        // No From sorts first (empty); a < m < z.
        assert_eq!(run(&program(&[(false, From)])), [4, 2, 3, 1]);
        // DISPLAYFROM: "Zed" against addr-specs a@x.org, m@x.org.
        assert_eq!(run(&program(&[(false, DisplayFrom)])), [4, 2, 3, 1]);
        // TO: the group's name "g" is the first mailbox; DISPLAYTO: "foo aar".
        assert_eq!(run(&program(&[(false, To)])), [3, 4, 2, 1]);
        assert_eq!(run(&program(&[(false, DisplayTo)])), [3, 4, 2, 1]);
        assert_eq!(run(&program(&[(true, DisplayTo)])), [1, 2, 3, 4]);
    }
}
