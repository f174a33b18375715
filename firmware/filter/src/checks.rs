//! The built-in checks: what a regular expression cannot say well (a
//! header missing, a date that does not parse, a sender that looks
//! forged, the shape of the MIME tree). Each has a name the rules file
//! gives a score to (`kind = "builtin"`). Pure functions of the parsed
//! message, the envelope sender and the time of scoring.

use crate::message::{MailView, uri_host};

/// Every built-in check: (name, what it detects).
pub const BUILTIN_CHECKS: [(&str, &str); 29] = [
    ("MISSING_DATE", "no Date header"),
    (
        "INVALID_DATE",
        "a Date header that does not parse as an RFC 5322 date",
    ),
    (
        "DATE_IN_FUTURE",
        "Date more than 12 hours after the message was received",
    ),
    (
        "DATE_IN_PAST",
        "Date more than 4 days before the message was received",
    ),
    ("MISSING_MID", "no Message-ID header"),
    ("INVALID_MSGID", "a Message-ID that is not <left@right>"),
    ("MISSING_FROM", "no From header"),
    (
        "FROM_NO_ADDRESS",
        "a From header without a readable address",
    ),
    ("MISSING_TO", "neither To nor Cc"),
    ("MISSING_SUBJECT", "no Subject header, or an empty one"),
    (
        "SUBJ_ALL_CAPS",
        "a Subject of several words, all in capitals",
    ),
    (
        "BODY_EXCESS_CAPS",
        "more than half of the body's letters in capitals",
    ),
    ("HTML_ONLY", "HTML without a text/plain alternative"),
    ("HTML_MESSAGE", "has an HTML part"),
    (
        "HTML_IMAGE_ONLY",
        "HTML with images and under 400 characters of text",
    ),
    ("MIME_NO_TEXT", "no text part at all"),
    ("BASE64_TEXT", "a text part sent in base64"),
    ("EMPTY_BODY", "a text body with no words"),
    (
        "FROM_DISPLAY_FORGED",
        "the From display name holds an address other than the sender's",
    ),
    (
        "FROM_ENVELOPE_MISMATCH",
        "From domain unrelated to the envelope sender's domain",
    ),
    (
        "FROM_LOCAL_DIGITS",
        "From local part with a long run of digits",
    ),
    (
        "REPLYTO_FREEMAIL_DIFFERS",
        "Reply-To at a free-mail domain unlike the From domain",
    ),
    ("CHARSET_FARAWAY", "an East Asian or Cyrillic charset"),
    ("HEADER_8BIT", "raw 8-bit bytes in the header section"),
    ("URI_NUMERIC_IP", "a link to a bare IP address"),
    (
        "URI_OBFUSCATED",
        "a link whose host is escaped or hides behind user@",
    ),
    (
        "TO_UNDISCLOSED",
        "To is undisclosed-recipients or empty group",
    ),
    (
        "DMARC_REJECT",
        "DMARC fails and the From domain publishes p=reject (set by the MX's checks)",
    ),
    (
        "DMARC_QUARANTINE",
        "DMARC fails and the From domain publishes p=quarantine (set by the MX's checks)",
    ),
];

/// Free-mail domains (for the Reply-To check).
const FREEMAIL: [&str; 12] = [
    "hotmail.com",
    "msn.com",
    "live.com",
    "outlook.com",
    "yahoo.com",
    "gmail.com",
    "aol.com",
    "mail.com",
    "gmx.net",
    "gmx.com",
    "yandex.ru",
    "mail.ru",
];

const FARAWAY_CHARSETS: [&str; 12] = [
    "big5",
    "gb2312",
    "gbk",
    "gb18030",
    "euc-kr",
    "ks_c_5601-1987",
    "iso-2022-jp",
    "shift_jis",
    "euc-jp",
    "koi8-r",
    "windows-1251",
    "iso-2022-kr",
];

/// The organisational part of a domain, roughly: its last two labels, or
/// three under a two-letter country code with a short second level
/// (`mail.example.co.uk` -> `example.co.uk`). No public suffix list: this
/// only has to say "related or not" for a small score.
pub fn org_domain(domain: &str) -> String {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    let n = labels.len();
    if n <= 2 {
        return domain;
    }
    let take = if labels[n - 1].len() == 2 && labels[n - 2].len() <= 3 {
        3
    } else {
        2
    };
    labels[n - take.min(n)..].join(".")
}

fn domain_of(address: &str) -> Option<&str> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty())
}

fn looks_like_address(s: &str) -> Option<String> {
    s.split(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '(' | ')' | '"' | '\'' | ','))
        .find(|w| {
            w.split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
        })
        .map(|w| w.to_ascii_lowercase())
}

/// A numeric zone no place on Earth uses (beyond +14:00 / -12:00, or
/// minutes of 60 and more), as in SpamAssassin's INVALID_DATE_TZ_ABSURD.
fn absurd_zone(raw: &str) -> bool {
    let Some(zone) = raw
        .split_whitespace()
        .rev()
        .find(|t| t.len() == 5 && (t.starts_with('+') || t.starts_with('-')))
    else {
        return false;
    };
    let (Some(Ok(hours)), Some(Ok(minutes))) = (
        zone.get(1..3).map(str::parse::<u32>),
        zone.get(3..5).map(str::parse::<u32>),
    ) else {
        return false;
    };
    let limit = if zone.starts_with('+') { 14 } else { 12 };
    hours > limit || minutes >= 60
}

/// Runs one built-in check. `now` (Unix seconds) is the reference when the
/// message has no Received header. Unknown names are false (the rules
/// parser refuses them first).
pub fn run(name: &str, v: &MailView, envelope_from: &str, now: i64) -> bool {
    let arrival = v.received_date.unwrap_or(now);
    match name {
        "MISSING_DATE" => v.date_raw.is_none(),
        "INVALID_DATE" => v
            .date_raw
            .as_deref()
            .is_some_and(|raw| v.date.is_none() || absurd_zone(raw)),
        "DATE_IN_FUTURE" => v.date.is_some_and(|d| d - arrival > 12 * 3600),
        "DATE_IN_PAST" => v.date.is_some_and(|d| arrival - d > 96 * 3600),
        "MISSING_MID" => v.message_id_raw.is_none(),
        "INVALID_MSGID" => v.message_id_raw.as_deref().is_some_and(|m| {
            let m = m.trim();
            !(m.starts_with('<')
                && m.ends_with('>')
                && m[1..m.len() - 1]
                    .split_once('@')
                    .is_some_and(|(l, r)| !l.is_empty() && !r.is_empty() && !r.contains('@')))
        }),
        "MISSING_FROM" => !v.has_from,
        "FROM_NO_ADDRESS" => {
            v.has_from
                && !v
                    .from_address
                    .as_deref()
                    .is_some_and(|a| a.contains('@') && domain_of(a).is_some())
        }
        "MISSING_TO" => !v.has_to_or_cc,
        "MISSING_SUBJECT" => v.subject.as_deref().is_none_or(|s| s.trim().is_empty()),
        "SUBJ_ALL_CAPS" => v.subject.as_deref().is_some_and(|s| {
            let letters: Vec<char> = s.chars().filter(|c| c.is_alphabetic()).collect();
            s.split_whitespace().count() >= 3
                && letters.len() >= 10
                && letters.iter().all(|c| c.is_uppercase())
        }),
        "BODY_EXCESS_CAPS" => {
            let (upper, letters) = v
                .text
                .chars()
                .filter(|c| c.is_alphabetic())
                .fold((0usize, 0usize), |(u, l), c| {
                    (u + usize::from(c.is_uppercase()), l + 1)
                });
            letters >= 200 && upper * 2 > letters
        }
        "HTML_ONLY" => v.has_html && !v.has_text_plain,
        "HTML_MESSAGE" => v.has_html,
        "HTML_IMAGE_ONLY" => {
            v.has_html
                && v.html_images > 0
                && v.text.chars().filter(|c| !c.is_whitespace()).count() < 400
        }
        "MIME_NO_TEXT" => !v.has_html && !v.has_text_plain,
        "BASE64_TEXT" => v.base64_text,
        "EMPTY_BODY" => {
            (v.has_text_plain || v.has_html) && !v.text.chars().any(char::is_alphanumeric)
        }
        "FROM_DISPLAY_FORGED" => match (&v.from_name, &v.from_address) {
            (Some(name), Some(addr)) => {
                looks_like_address(name).is_some_and(|shown| !shown.eq_ignore_ascii_case(addr))
            }
            _ => false,
        },
        "FROM_ENVELOPE_MISMATCH" => {
            let envelope_domain = domain_of(envelope_from.trim_matches(['<', '>']));
            let from_domain = v.from_address.as_deref().and_then(domain_of);
            match (envelope_domain, from_domain) {
                (Some(e), Some(f)) => org_domain(e) != org_domain(f),
                _ => false,
            }
        }
        "FROM_LOCAL_DIGITS" => v.from_address.as_deref().is_some_and(|a| {
            let local = a.split('@').next().unwrap_or("");
            let mut run = 0;
            let mut longest = 0;
            for c in local.chars() {
                run = if c.is_ascii_digit() { run + 1 } else { 0 };
                longest = longest.max(run);
            }
            longest >= 4
        }),
        "REPLYTO_FREEMAIL_DIFFERS" => {
            let reply = v.header("Reply-To").and_then(looks_like_address);
            let reply_domain = reply.as_deref().and_then(domain_of).map(org_domain);
            let from_domain = v
                .from_address
                .as_deref()
                .and_then(domain_of)
                .map(org_domain);
            match (reply_domain, from_domain) {
                (Some(r), Some(f)) => r != f && FREEMAIL.contains(&r.as_str()),
                _ => false,
            }
        }
        "CHARSET_FARAWAY" => v
            .charsets
            .iter()
            .any(|c| FARAWAY_CHARSETS.contains(&c.as_str())),
        "HEADER_8BIT" => v.header_8bit,
        "URI_NUMERIC_IP" => v.uris.iter().any(|u| {
            uri_host(u)
                .is_some_and(|h| h.parse::<std::net::Ipv4Addr>().is_ok() || h.starts_with('['))
        }),
        // Not read from the message: the MX's own checks (mxrack-mailauth)
        // hand their outcome in, so a forged header cannot set them.
        "DMARC_REJECT" | "DMARC_QUARANTINE" => v.auth_marks.iter().any(|m| m == name),
        "URI_OBFUSCATED" => v.uris.iter().any(|u| {
            let Some(i) = u.find("://") else { return false };
            let authority = u[i + 3..].split(['/', '?', '#']).next().unwrap_or("");
            authority.contains('%') || authority.contains('@') || authority.contains("&#")
        }),
        "TO_UNDISCLOSED" => v.header("To").is_some_and(|t| {
            let t = t.trim().to_ascii_lowercase();
            t.is_empty() || t.contains("undisclosed") || t == ":;" || t.ends_with(":;")
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_030_018_700; // 2002-08-22 12:18:20 UTC

    /// A clean message; each test changes one thing.
    fn base() -> String {
        "From: Jo Smith <jo@example.org>\r\nTo: you@example.net\r\nSubject: Lunch on Friday\r\nDate: Thu, 22 Aug 2002 13:17:22 +0100\r\nMessage-ID: <1@example.org>\r\n\r\nShall we meet at noon? The usual place.\r\n".to_string()
    }

    fn hits(msg: &str, envelope: &str) -> Vec<&'static str> {
        let v = MailView::parse(msg.as_bytes());
        BUILTIN_CHECKS
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| run(n, &v, envelope, NOW))
            .collect()
    }

    fn check(change: (&str, &str), envelope: &str, expected: &[&str]) {
        let msg = base().replacen(change.0, change.1, 1);
        assert_eq!(hits(&msg, envelope), expected, "change {change:?}");
    }

    #[test]
    fn a_clean_message_hits_nothing() {
        assert_eq!(hits(&base(), "jo@example.org"), Vec::<&str>::new());
        assert_eq!(
            hits(&base(), "bounce@lists.example.org"),
            Vec::<&str>::new()
        );
        assert_eq!(hits(&base(), ""), Vec::<&str>::new());
    }

    #[test]
    fn each_check_fires_on_its_case() {
        let date = "Date: Thu, 22 Aug 2002 13:17:22 +0100\r\n";
        check((date, ""), "", &["MISSING_DATE"]);
        check((date, "Date: yesterday-ish\r\n"), "", &["INVALID_DATE"]);
        check(
            (date, "Date: Wed, 21 Aug 2002 20:31:57 -1600\r\n"),
            "",
            &["INVALID_DATE"],
        );
        check(
            (date, "Date: Sat, 24 Aug 2002 13:17:22 +0100\r\n"),
            "",
            &["DATE_IN_FUTURE"],
        );
        check(
            (date, "Date: Thu, 01 Aug 2002 13:17:22 +0100\r\n"),
            "",
            &["DATE_IN_PAST"],
        );
        let mid = "Message-ID: <1@example.org>\r\n";
        check((mid, ""), "", &["MISSING_MID"]);
        check((mid, "Message-ID: 12345\r\n"), "", &["INVALID_MSGID"]);
        let from = "From: Jo Smith <jo@example.org>\r\n";
        check((from, ""), "", &["MISSING_FROM"]);
        check((from, "From: Jo Smith\r\n"), "", &["FROM_NO_ADDRESS"]);
        check(
            (from, "From: \"service@paypal.com\" <x@evil.example>\r\n"),
            "",
            &["FROM_DISPLAY_FORGED"],
        );
        check(
            (from, "From: <jo48213@example.org>\r\n"),
            "",
            &["FROM_LOCAL_DIGITS"],
        );
        check(
            (from, from),
            "spammer@elsewhere.example",
            &["FROM_ENVELOPE_MISMATCH"],
        );
        check(
            (
                "To: you@example.net\r\n",
                "To: undisclosed-recipients:;\r\n",
            ),
            "",
            &["TO_UNDISCLOSED"],
        );
        check(("To: you@example.net\r\n", ""), "", &["MISSING_TO"]);
        check(
            ("Subject: Lunch on Friday\r\n", ""),
            "",
            &["MISSING_SUBJECT"],
        );
        check(
            ("Subject: Lunch on Friday", "Subject: MAKE MONEY FAST NOW"),
            "",
            &["SUBJ_ALL_CAPS"],
        );
        check(
            (
                "Subject: Lunch",
                "Reply-To: claims@yahoo.com\r\nSubject: Lunch",
            ),
            "",
            &["REPLYTO_FREEMAIL_DIFFERS"],
        );
        check(
            ("Subject: Lunch on Friday", "Subject: =?big5?B?pKSk5Q==?="),
            "",
            &["CHARSET_FARAWAY"],
        );
        check(
            ("Subject: Lunch", "Subject: L\u{fc}nch"),
            "",
            &["HEADER_8BIT"],
        );
        check(
            (
                "Shall we meet at noon? The usual place.",
                &"SHALL WE MEET AT NOON ".repeat(20),
            ),
            "",
            &["BODY_EXCESS_CAPS"],
        );
        check(
            ("Shall we meet at noon? The usual place.", " ... "),
            "",
            &["EMPTY_BODY"],
        );
        check(
            ("The usual place.", "See http://192.168.10.1/x"),
            "",
            &["URI_NUMERIC_IP"],
        );
        check(
            (
                "The usual place.",
                "See http://www.bank.example@evil.example/x",
            ),
            "",
            &["URI_OBFUSCATED"],
        );
    }

    #[test]
    fn mime_checks() {
        let head = "From: Jo <jo@example.org>\r\nTo: you@example.net\r\nSubject: Hi there\r\nDate: Thu, 22 Aug 2002 13:17:22 +0100\r\nMessage-ID: <1@example.org>\r\n";
        let html = format!(
            "{head}Content-Type: text/html\r\n\r\n<html><body><p>{}</p></body></html>\r\n",
            "words ".repeat(100)
        );
        assert_eq!(hits(&html, ""), ["HTML_ONLY", "HTML_MESSAGE"]);
        let image = format!(
            "{head}Content-Type: text/html\r\n\r\n<html><img src=\"cid:x\"><p>Buy</p></html>\r\n"
        );
        assert_eq!(
            hits(&image, ""),
            ["HTML_ONLY", "HTML_MESSAGE", "HTML_IMAGE_ONLY"]
        );
        let b64 = format!(
            "{head}Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nSGVsbG8gdGhlcmUsIGZyaWVuZA==\r\n"
        );
        assert_eq!(hits(&b64, ""), ["BASE64_TEXT"]);
        let binary = format!(
            "{head}Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n"
        );
        assert_eq!(hits(&binary, ""), ["MIME_NO_TEXT"]);
    }

    #[test]
    fn organisational_domains() {
        assert_eq!(org_domain("mail.example.com"), "example.com");
        assert_eq!(org_domain("a.b.example.co.uk"), "example.co.uk");
        assert_eq!(org_domain("example.com."), "example.com");
        assert_eq!(org_domain("localhost"), "localhost");
    }
}
