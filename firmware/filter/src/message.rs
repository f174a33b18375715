//! One parse of a message into what the rules and the tokenizer look at:
//! decoded headers, the visible text of the body (HTML rendered to text),
//! the raw decoded parts, the URIs, and the MIME facts. Pure (no I/O), with
//! a bound on every piece so a huge message costs no more than a big one.

use std::borrow::Cow;

use mail_parser::{HeaderValue, MimeHeaders, PartType};
use regex::Regex;
use std::sync::LazyLock;

/// Most bytes of rendered text, of raw decoded parts and of the raw
/// message that rules and the tokenizer look at (SpamAssassin also scans
/// only the start of a large body).
pub const TEXT_BYTES_MAX: usize = 256 * 1024;
/// Most URIs collected from one message.
pub const URIS_MAX: usize = 200;
/// Most headers looked at.
pub const HEADERS_MAX: usize = 500;
/// Most MIME part headers kept for `mimeheader` rules, all parts together.
pub const MIME_HEADERS_MAX: usize = 500;
/// Longest raw MIME part header value kept (longer ones are cut).
const MIME_HEADER_BYTES_MAX: usize = 8 * 1024;

/// A header as the rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderField {
    /// As written, e.g. `Subject`.
    pub name: String,
    /// Decoded (RFC 2047) and unfolded where mail-parser understands the
    /// field; otherwise the raw value, unfolded.
    pub value: String,
    /// The raw value, unfolded.
    pub raw: String,
}

/// A header of one MIME part (the message itself is part 0), for
/// SpamAssassin's `mimeheader` rules.
#[derive(Debug, Clone, PartialEq)]
pub struct PartHeader {
    /// The part's place in the walk (0: the message's own header).
    pub part: usize,
    /// As written, e.g. `Content-Type`.
    pub name: String,
    /// Unfolded, encoded words decoded (as SpamAssassin's `get_header`).
    pub value: String,
    /// As written: folding kept, line ends as LF (as SpamAssassin keeps
    /// them), blanks after the colon and the last line end trimmed.
    pub raw: String,
}

/// The parts of a message the scorer uses.
#[derive(Debug, Clone, Default)]
pub struct MailView {
    pub headers: Vec<HeaderField>,
    pub subject: Option<String>,
    /// From: display name and address (first mailbox).
    pub from_name: Option<String>,
    pub from_address: Option<String>,
    /// A From header is present (even if no address could be read).
    pub has_from: bool,
    pub has_to_or_cc: bool,
    /// Raw Date value, and its time as Unix seconds when it parses.
    pub date_raw: Option<String>,
    pub date: Option<i64>,
    /// Time of the newest Received header (when the message arrived at its
    /// last hop), Unix seconds.
    pub received_date: Option<i64>,
    /// The date of every Received header that has one, newest first (at
    /// most [`crate::relays::RECEIVED_MAX`]).
    pub received_dates: Vec<i64>,
    pub message_id_raw: Option<String>,
    /// Visible text of every text part, HTML rendered to text.
    pub text: String,
    /// Decoded text parts as they are (HTML source included).
    pub raw_parts: String,
    /// The whole raw message (lossy UTF-8, bounded).
    pub full: String,
    pub uris: Vec<String>,
    /// Lowercase charsets of the text parts and of RFC 2047 words.
    pub charsets: Vec<String>,
    pub has_text_plain: bool,
    pub has_html: bool,
    /// HTML has images (`<img`).
    pub html_images: usize,
    /// Some text part was sent base64-encoded.
    pub base64_text: bool,
    /// A text part in base64 without a charset or in US-ASCII
    /// (SpamAssassin's `mime_base64_encoded_text`).
    pub base64_ascii_text: bool,
    /// The length of the HTML parts' source (SpamAssassin's HTML length).
    pub html_len: usize,
    /// The HTML parts' source alone (bounded as `raw_parts`), for tag tests.
    pub html_raw: String,
    /// Some part is in base64 / in quoted-printable.
    pub base64_parts: bool,
    pub qp_parts: bool,
    /// The header section has raw 8-bit bytes (not RFC 2047 encoded).
    pub header_8bit: bool,
    pub attachments: usize,
    /// Outcomes of the MX's SPF/DKIM/DMARC checks that are scored
    /// (`DMARC_REJECT`, `DMARC_QUARANTINE`); empty unless the caller set them.
    pub auth_marks: Vec<String>,
    /// The hand-over to mxrack (client address, HELO, reverse DNS), when
    /// the caller knows it: the newest relay of SpamAssassin's rules.
    pub hop: Option<crate::relays::Relay>,
    /// Every MIME part's headers, the message's own first, at most
    /// [`MIME_HEADERS_MAX`] in all.
    pub mime_headers: Vec<PartHeader>,
}

static URI_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)(?:\b(?:https?|ftp)://[^\s<>"'()\\]+|\bwww\.[a-z0-9-]+\.[a-z0-9.-]+[^\s<>"'()\\]*|\bhref\s*=\s*["']?([^"'\s>]+))"#,
    )
    .expect("static regex")
});
static CHARSET_WORD_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"=\?([A-Za-z0-9_.:-]+)(?:\*[^?]*)?\?[BbQq]\?").expect("static regex")
});

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn push_bounded(out: &mut String, s: &str) {
    let room = TEXT_BYTES_MAX.saturating_sub(out.len());
    if room > 0 {
        out.push_str(truncate(s, room));
        out.push('\n');
    }
}

/// Joins folded lines: CRLF/LF followed by white space is one space.
fn unfold(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' || c == '\n' {
            while chars.peek().is_some_and(|c| matches!(c, '\r' | '\n')) {
                chars.next();
            }
            if chars.peek().is_some_and(|c| c.is_whitespace()) {
                while chars.peek().is_some_and(|c| matches!(c, ' ' | '\t')) {
                    chars.next();
                }
                out.push(' ');
            }
            continue;
        }
        out.push(c);
    }
    out
}

fn render_value(value: &HeaderValue<'_>, raw: &str) -> String {
    match value {
        HeaderValue::Text(t) => t.to_string(),
        HeaderValue::TextList(list) => list.join(", "),
        HeaderValue::Address(a) => a
            .iter()
            .map(|addr| match (addr.name(), addr.address()) {
                (Some(n), Some(a)) => format!("{n} <{a}>"),
                (None, Some(a)) => a.to_string(),
                (Some(n), None) => n.to_string(),
                (None, None) => String::new(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => raw.to_string(),
    }
}

/// Strips a URI to what the rules and tokens want: no trailing punctuation.
fn clean_uri(uri: &str) -> String {
    uri.trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']', '>'])
        .to_string()
}

/// The host of a URI (`http://user@Host:80/x` -> `host`), lowercase.
pub fn uri_host(uri: &str) -> Option<String> {
    let rest = match uri.find("://") {
        Some(i) => &uri[i + 3..],
        None if uri.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("www.")) => uri,
        None => return None,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    let host = host.split(':').next().unwrap_or("");
    if host.is_empty() {
        None
    } else {
        Some(host.to_ascii_lowercase())
    }
}

impl MailView {
    /// Parses a message (CRLF or LF line ends). Never fails: what cannot be
    /// parsed is simply absent, which the missing-header checks then see.
    pub fn parse(message: &[u8]) -> MailView {
        let mut view = MailView {
            full: truncate(&String::from_utf8_lossy(message), TEXT_BYTES_MAX).to_string(),
            ..MailView::default()
        };
        let header_end = find_header_end(message);
        view.header_8bit = message[..header_end].iter().any(|b| *b >= 0x80);
        let Some(parsed) = mxrack_mime::parse(message) else {
            return view;
        };
        let raw = parsed.raw_message();
        for header in parsed.headers().iter().take(HEADERS_MAX) {
            let start = usize::try_from(header.offset_start()).unwrap_or(0);
            let end = usize::try_from(header.offset_end()).unwrap_or(0);
            let raw_value = raw
                .get(start..end)
                .map(String::from_utf8_lossy)
                .unwrap_or(Cow::Borrowed(""));
            let raw_value = unfold(&raw_value);
            view.headers.push(HeaderField {
                name: header.name().to_string(),
                value: unfold(&render_value(header.value(), &raw_value)),
                raw: raw_value,
            });
        }
        for caps in CHARSET_WORD_RE.captures_iter(&String::from_utf8_lossy(&message[..header_end]))
        {
            view.charsets.push(caps[1].to_ascii_lowercase());
        }
        view.subject = parsed.subject().map(str::to_string);
        if let Some(from) = parsed.from() {
            view.has_from = true;
            if let Some(first) = from.first() {
                view.from_name = first.name().map(str::to_string);
                view.from_address = first.address().map(str::to_ascii_lowercase);
            }
        } else {
            view.has_from = view.header("From").is_some();
        }
        view.has_to_or_cc = parsed.to().is_some()
            || parsed.cc().is_some()
            || view.header("To").is_some_and(|v| !v.trim().is_empty())
            || view.header("Cc").is_some_and(|v| !v.trim().is_empty());
        view.date_raw = view.header_raw("Date").map(str::to_string);
        view.date = parsed
            .date()
            .filter(|d| d.is_valid())
            .map(|d| d.to_timestamp());
        view.received_date = parsed
            .received()
            .and_then(|r| r.date())
            .filter(|d| d.is_valid())
            .map(|d| d.to_timestamp());
        view.received_dates = parsed
            .header_values("Received")
            .filter_map(|v| v.as_received())
            .filter_map(|r| r.date())
            .filter(|d| d.is_valid())
            .map(|d| d.to_timestamp())
            .take(crate::relays::RECEIVED_MAX)
            .collect();
        view.message_id_raw = view.header_raw("Message-ID").map(str::to_string);

        'parts: for (i, part) in parsed.parts.iter().enumerate() {
            for header in &part.headers {
                if view.mime_headers.len() >= MIME_HEADERS_MAX {
                    break 'parts;
                }
                let start = usize::try_from(header.offset_start()).unwrap_or(0);
                let end = usize::try_from(header.offset_end()).unwrap_or(0);
                let written = raw
                    .get(start..end.min(start.saturating_add(MIME_HEADER_BYTES_MAX)))
                    .map(String::from_utf8_lossy)
                    .unwrap_or(Cow::Borrowed(""));
                let folded = written.replace("\r\n", "\n");
                let unfolded = unfold(&folded);
                // SpamAssassin's decoded value is the text with encoded
                // words decoded, nothing parsed away (Content-ID keeps its
                // angle brackets): the parsed value only when there are
                // encoded words to decode.
                let value = if unfolded.contains("=?") {
                    unfold(&render_value(header.value(), &unfolded))
                } else {
                    unfolded
                };
                view.mime_headers.push(PartHeader {
                    part: i,
                    name: header.name().to_string(),
                    value,
                    raw: folded
                        .trim_start_matches([' ', '\t'])
                        .trim_end()
                        .to_string(),
                });
            }
        }
        for (i, part) in parsed.parts.iter().enumerate() {
            let charset = part.content_type().and_then(|ct| ct.attribute("charset"));
            let base64 = part
                .content_transfer_encoding()
                .is_some_and(|e| e.eq_ignore_ascii_case("base64"));
            view.base64_parts |= base64;
            view.qp_parts |= part
                .content_transfer_encoding()
                .is_some_and(|e| e.eq_ignore_ascii_case("quoted-printable"));
            match &part.body {
                PartType::Text(text) => {
                    if parsed
                        .attachments
                        .contains(&u32::try_from(i).unwrap_or(u32::MAX))
                    {
                        view.attachments += 1;
                        continue;
                    }
                    view.has_text_plain = true;
                    view.base64_text |= base64;
                    view.base64_ascii_text |= base64 && ascii_or_none(charset);
                    push_bounded(&mut view.raw_parts, text);
                }
                PartType::Html(html) => {
                    if parsed
                        .attachments
                        .contains(&u32::try_from(i).unwrap_or(u32::MAX))
                    {
                        view.attachments += 1;
                        continue;
                    }
                    view.has_html = true;
                    view.base64_text |= base64;
                    view.base64_ascii_text |= base64 && ascii_or_none(charset);
                    view.html_images += count_ci(html, "<img");
                    view.html_len = view.html_len.saturating_add(html.len());
                    push_bounded(&mut view.html_raw, html);
                    push_bounded(&mut view.raw_parts, html);
                }
                PartType::Binary(_) | PartType::InlineBinary(_) => view.attachments += 1,
                PartType::Message(_) => view.attachments += 1,
                PartType::Multipart(_) => continue,
            }
            if let Some(cs) = charset {
                view.charsets.push(cs.to_ascii_lowercase());
            }
        }
        for i in 0..parsed.text_body_count() {
            if let Some(text) = parsed.body_text(i) {
                push_bounded(&mut view.text, &text);
            }
        }
        // An HTML part that has a text alternative is not in text_body;
        // its rendered text is body text all the same.
        if parsed.text_body_count() > 0 {
            for i in 0..parsed.html_body_count() {
                let is_text_alternative = parsed
                    .html_body
                    .get(i)
                    .is_some_and(|id| parsed.text_body.contains(id));
                if !is_text_alternative && let Some(html) = parsed.body_html(i) {
                    let rendered = mail_parser::decoders::html::html_to_text(&html);
                    if !view.text.contains(truncate(rendered.trim(), 64)) {
                        push_bounded(&mut view.text, &rendered);
                    }
                }
            }
        }
        for m in URI_RE.captures_iter(&view.raw_parts) {
            if view.uris.len() >= URIS_MAX {
                break;
            }
            let uri = m.get(1).or_else(|| m.get(0)).map_or("", |g| g.as_str());
            let uri = clean_uri(uri);
            if !uri.is_empty() && !view.uris.contains(&uri) {
                view.uris.push(uri);
            }
        }
        view
    }

    /// The first header `name` (case-insensitive), decoded.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The first header `name` (case-insensitive), raw (unfolded).
    pub fn header_raw(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.raw.as_str())
    }

    /// Every header `name`, decoded.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The header section as `Name: value` lines (decoded), for `ALL` rules.
    pub fn all_headers(&self) -> String {
        self.header_lines(false)
    }

    /// The header section as `Name: value` lines, each value decoded or
    /// (`raw`) as written, unfolded.
    pub fn header_lines(&self, raw: bool) -> String {
        let mut out = String::new();
        for h in &self.headers {
            out.push_str(&h.name);
            out.push_str(": ");
            out.push_str(if raw { &h.raw } else { &h.value });
            out.push('\n');
        }
        out
    }
}

/// No charset, or US-ASCII by one of its names.
fn ascii_or_none(charset: Option<&str>) -> bool {
    charset.is_none_or(|c| {
        let c = c.to_ascii_lowercase();
        c == "us-ascii" || c == "ascii" || c == "ansi_x3.4-1968"
    })
}

/// Counts case-insensitive occurrences of an ASCII needle.
fn count_ci(haystack: &str, needle: &str) -> usize {
    let needle = needle.as_bytes();
    haystack
        .as_bytes()
        .windows(needle.len())
        .filter(|w| w.eq_ignore_ascii_case(needle))
        .count()
}

/// Where the header section ends (the empty line), or the whole message.
fn find_header_end(message: &[u8]) -> usize {
    let crlf = message.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = message.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => message.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = "From: \"Jo Smith\" <Jo@Example.org>\r\nTo: you@example.net\r\nSubject: =?utf-8?q?caf=C3=A9?= time\r\nDate: Thu, 22 Aug 2002 13:17:22 +0100\r\nMessage-ID: <1@example.org>\r\nReceived: from a by b; Thu, 22 Aug 2002 13:18:00 +0100\r\nX-Long: one\r\n two\r\n\r\nHello, see http://www.example.com/page. Bye.\r\n";

    #[test]
    fn headers_decoded_and_unfolded() {
        let v = MailView::parse(PLAIN.as_bytes());
        assert_eq!(v.subject.as_deref(), Some("café time"));
        assert_eq!(v.header("subject"), Some("café time"));
        assert_eq!(v.header_raw("Subject"), Some("=?utf-8?q?caf=C3=A9?= time"));
        assert_eq!(v.header("X-Long"), Some("one two"));
        assert_eq!(v.from_name.as_deref(), Some("Jo Smith"));
        assert_eq!(v.from_address.as_deref(), Some("jo@example.org"));
        assert!(v.has_from && v.has_to_or_cc);
        assert_eq!(v.date, Some(1_030_018_642));
        assert_eq!(v.received_date, Some(1_030_018_680));
        assert_eq!(v.charsets, vec!["utf-8".to_string()]);
        assert!(v.has_text_plain && !v.has_html && !v.header_8bit);
        assert_eq!(v.uris, vec!["http://www.example.com/page".to_string()]);
        assert!(v.text.contains("Hello"));
    }

    #[test]
    fn html_alternative_and_uris() {
        let msg = "From: a@b.example\r\nContent-Type: multipart/alternative; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nplain words\r\n--XX\r\nContent-Type: text/html; charset=windows-1252\r\nContent-Transfer-Encoding: base64\r\n\r\nPGEgaHJlZj0iaHR0cDovLzEuMi4zLjQveCI+PGltZyBzcmM9ImEiPnJlbmRlcmVkPC9hPg==\r\n--XX--\r\n";
        let v = MailView::parse(msg.as_bytes());
        assert!(v.has_text_plain && v.has_html);
        assert!(v.base64_text);
        assert_eq!(v.html_images, 1);
        assert!(
            v.uris.contains(&"http://1.2.3.4/x".to_string()),
            "{:?}",
            v.uris
        );
        assert!(v.charsets.contains(&"windows-1252".to_string()));
        assert!(v.text.contains("plain words"));
        assert!(v.raw_parts.contains("<img"));
    }

    #[test]
    fn mime_part_headers_are_bounded() {
        // Hundreds of parts with three headers each, one header of 20 KiB:
        // at most MIME_HEADERS_MAX kept, each at most MIME_HEADER_BYTES_MAX.
        let mut msg = String::from(
            "From: a@b.example\r\nContent-Type: multipart/mixed; boundary=\"B\"\r\n\r\n",
        );
        msg.push_str(&format!(
            "--B\r\nContent-Type: text/plain; x=\"{}\"\r\n\r\nfirst\r\n",
            "y".repeat(20 * 1024)
        ));
        for i in 0..400 {
            msg.push_str(&format!(
                "--B\r\nContent-Type: text/plain\r\nContent-ID: <{i}@x>\r\nX-N: {i}\r\n\r\npart {i}\r\n"
            ));
        }
        msg.push_str("--B--\r\n");
        let v = MailView::parse(msg.as_bytes());
        assert_eq!(v.mime_headers.len(), MIME_HEADERS_MAX);
        assert!(
            v.mime_headers
                .iter()
                .all(|h| h.raw.len() <= MIME_HEADER_BYTES_MAX)
        );
        assert!(v.mime_headers.iter().any(|h| h.raw.len() > 8000));
        // The message's own header comes first, as part 0.
        assert_eq!(v.mime_headers[0].part, 0);
        assert_eq!(v.mime_headers[0].name, "From");
    }

    #[test]
    fn deep_nesting_is_scored_without_overflow() {
        // 40,000 levels of message/rfc822 (1.3 MB) overflowed the stack.
        let mut raw = b"From: a@b.example\r\nSubject: deep\r\n".to_vec();
        for _ in 0..40_000 {
            raw.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
        }
        raw.extend_from_slice(b"Subject: bottom\r\n\r\nthe end\r\n");
        let v = MailView::parse(&raw);
        assert_eq!(v.subject.as_deref(), Some("deep"));
        assert!(v.attachments >= 1);
    }

    #[test]
    fn garbage_and_limits() {
        let v = MailView::parse(b"");
        assert!(!v.has_from && v.subject.is_none());
        let v = MailView::parse(b"no headers at all\n");
        assert!(v.date.is_none());
        let mut big = String::from("Subject: x\r\n\r\n");
        big.push_str(&"word ".repeat(200_000));
        let v = MailView::parse(big.as_bytes());
        assert!(v.text.len() <= TEXT_BYTES_MAX + 1);
        assert!(v.full.len() <= TEXT_BYTES_MAX);
        let v = MailView::parse("Subject: caf\u{e9}\r\n\r\nx".as_bytes());
        assert!(v.header_8bit);
    }

    #[test]
    fn uri_hosts() {
        assert_eq!(
            uri_host("http://user@WWW.Example.com:80/x?y").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(
            uri_host("www.example.com/a").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(uri_host("mailto:x@y"), None);
        // Multi-byte characters where a prefix is looked at.
        assert_eq!(uri_host("./\u{5ee3}\u{544a}.files/x.xml"), None);
        assert_eq!(uri_host("w\u{e9}w.x"), None);
    }
}
