//! The classifier's tokens: words of the visible text, words of selected
//! headers (prefixed by the header so "free" in a Subject differs from
//! "free" in the body), header names present, URI hosts, MIME facts. Each
//! message yields a set: a token counts once per message, as in
//! SpamAssassin's Bayes. Pure.
//!
//! Headers that say how a message travelled to *this* mailbox (Received,
//! Delivered-To, Return-Path, our own trace and score headers) are left out:
//! they describe the path, not the message, and would teach the classifier
//! our own infrastructure.
//!
//! [`TOKEN_FORMAT`] names these forms: the store keeps learned counts by
//! token hash, so a change of forms must raise it, and the store then
//! drops data of the older format when the next message is learned.

use std::collections::BTreeSet;

use crate::message::{MailView, uri_host};

/// The version of the token forms below. The forms of the first release
/// are 1, which is also what the store assumes of data learned before the
/// format was recorded. Raise it with any change to what `tokenize` yields.
pub const TOKEN_FORMAT: u64 = 1;

/// Most distinct tokens taken from one message.
pub const TOKENS_PER_MESSAGE_MAX: usize = 5_000;
/// Words shorter than this are skipped (too common to mean anything).
const WORD_CHARS_MIN: usize = 3;
/// Words longer than this become a "skip" token of their start and length.
const WORD_CHARS_MAX: usize = 15;

/// Headers whose names and values are not tokenized (lowercase).
const IGNORED_HEADERS: [&str; 17] = [
    "received",
    "delivered-to",
    "return-path",
    "x-original-to",
    "envelope-to",
    "status",
    "x-status",
    "x-keywords",
    "x-uid",
    "content-length",
    "lines",
    "x-mxrack-forward-id",
    "x-spam-score",
    "x-spam-status",
    "x-spam-level",
    "x-spam-flag",
    "x-spam-checker-version",
];

/// Headers whose values are tokenized word by word (lowercase name -> prefix).
const WORD_HEADERS: [(&str, &str); 11] = [
    ("subject", "S"),
    ("from", "F"),
    ("to", "T"),
    ("cc", "C"),
    ("reply-to", "R"),
    ("x-mailer", "XM"),
    ("user-agent", "UA"),
    ("content-type", "CT"),
    ("list-id", "LI"),
    ("organization", "O"),
    ("precedence", "P"),
];

/// FNV-1a, 64 bits: a stable hash (the store keys tokens by it, so it must
/// never change between versions; `std`'s hashers may).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Splits text into words: runs of letters, digits and a few characters
/// that belong inside words ('$' of prices, '\'' of contractions, '-' and
/// '.' and '!' inside words), trimmed of punctuation at their ends.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| {
        !(c.is_alphanumeric() || matches!(c, '$' | '\'' | '-' | '.' | '!' | '%' | '@' | '_'))
    })
    .map(|w| w.trim_matches(|c: char| matches!(c, '.' | '\'' | '-' | '!' | '_')))
    .filter(|w| !w.is_empty())
}

struct Collector {
    tokens: BTreeSet<String>,
}

impl Collector {
    fn add(&mut self, token: String) {
        if self.tokens.len() < TOKENS_PER_MESSAGE_MAX {
            self.tokens.insert(token);
        }
    }

    /// Adds the words of `text`, each with `prefix` (empty for body text).
    fn add_words(&mut self, prefix: &str, text: &str) {
        for word in words(text) {
            if self.tokens.len() >= TOKENS_PER_MESSAGE_MAX {
                return;
            }
            let lower = word.to_lowercase();
            let chars = lower.chars().count();
            if let Some((_, domain)) = lower.split_once('@') {
                // An address: its domain, whole and by parent.
                for d in domain_and_parents(domain) {
                    self.add(format!("{prefix}email:{d}"));
                }
                continue;
            }
            if chars < WORD_CHARS_MIN {
                continue;
            }
            if chars > WORD_CHARS_MAX {
                let start: String = lower.chars().take(7).collect();
                self.add(format!("{prefix}sk:{start}:{}", chars / 10 * 10));
                continue;
            }
            self.add(format!("{prefix}{lower}"));
        }
    }
}

/// `a.b.example.com` -> `a.b.example.com`, `b.example.com`, `example.com`.
fn domain_and_parents(domain: &str) -> Vec<&str> {
    let domain = domain.trim_matches('.');
    let mut out = Vec::new();
    let mut rest = domain;
    while rest.contains('.') {
        out.push(rest);
        rest = rest.split_once('.').map_or("", |(_, r)| r);
        if out.len() >= 4 {
            break;
        }
    }
    if out.is_empty() && !domain.is_empty() {
        out.push(domain);
    }
    out
}

/// The distinct tokens of a message, sorted.
pub fn tokenize(view: &MailView) -> Vec<String> {
    let mut c = Collector {
        tokens: BTreeSet::new(),
    };
    for header in &view.headers {
        let name = header.name.to_ascii_lowercase();
        if IGNORED_HEADERS.contains(&name.as_str()) || name.starts_with("x-spam-") {
            continue;
        }
        c.add(format!("H:{name}"));
        if let Some((_, prefix)) = WORD_HEADERS.iter().find(|(n, _)| *n == name) {
            c.add_words(&format!("{prefix}:"), &header.value);
        }
    }
    if let Some(mid) = &view.message_id_raw
        && let Some((_, domain)) = mid.trim_matches(['<', '>', ' ']).rsplit_once('@')
    {
        c.add(format!("MID:{}", domain.to_ascii_lowercase()));
    }
    for cs in &view.charsets {
        c.add(format!("charset:{cs}"));
    }
    c.add(
        match (view.has_text_plain, view.has_html) {
            (true, true) => "mime:alternative",
            (false, true) => "mime:html-only",
            (true, false) => "mime:text-only",
            (false, false) => "mime:no-text",
        }
        .to_string(),
    );
    if view.html_images > 0 {
        c.add("mime:images".to_string());
    }
    if view.attachments > 0 {
        c.add("mime:attachment".to_string());
    }
    for uri in &view.uris {
        if let Some(host) = uri_host(uri) {
            for d in domain_and_parents(&host) {
                c.add(format!("url:{d}"));
            }
        }
    }
    c.add_words("", &view.text);
    c.tokens.into_iter().collect()
}

/// The stable hashes of tokens, sorted and without duplicates.
pub fn hashes(tokens: &[String]) -> Vec<u64> {
    let mut out: Vec<u64> = tokens.iter().map(|t| fnv1a64(t.as_bytes())).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// A message's identity for "already learned": its Message-ID and a hash
/// of its visible text (a message moved between folders keeps both).
pub fn signature(view: &MailView) -> String {
    let mut bytes = view
        .message_id_raw
        .as_deref()
        .unwrap_or("")
        .as_bytes()
        .to_vec();
    bytes.push(0);
    bytes.extend_from_slice(view.text.as_bytes());
    if view.text.is_empty() {
        bytes.extend_from_slice(view.full.as_bytes());
    }
    format!("v1:{:016x}", fnv1a64(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens_of(msg: &str) -> Vec<String> {
        tokenize(&MailView::parse(msg.as_bytes()))
    }

    #[test]
    fn fnv_is_stable() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn words_headers_and_uris() {
        let t = tokens_of(
            "Subject: FREE Money!!\r\nFrom: Bob <bob@mail.Example.com>\r\nReceived: from secret.host\r\nX-Mailer: Mass Sender 2\r\n\r\nClick here: http://www.spam.example/x now, it's an extraordinarilylongword ok $100 a\r\n",
        );
        for want in [
            "S:free",
            "S:money",
            "F:bob",
            "F:email:mail.example.com",
            "F:email:example.com",
            "H:subject",
            "H:x-mailer",
            "XM:mass",
            "XM:sender",
            "click",
            "here",
            "now",
            "it's",
            "$100",
            "sk:extraor:20",
            "url:www.spam.example",
            "url:spam.example",
            "mime:text-only",
        ] {
            assert!(t.contains(&want.to_string()), "{want} missing from {t:?}");
        }
        // Short words, Received and its content are not tokens.
        for absent in ["ok", "a", "H:received", "secret.host", "secret"] {
            assert!(!t.contains(&absent.to_string()), "{absent} in {t:?}");
        }
        // A set: sorted, distinct.
        let mut sorted = t.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, t);
    }

    #[test]
    fn bounded_per_message() {
        let mut body = String::from("Subject: x\r\n\r\n");
        for i in 0..20_000 {
            body.push_str(&format!("w{i:05} "));
        }
        assert_eq!(tokens_of(&body).len(), TOKENS_PER_MESSAGE_MAX);
    }

    #[test]
    fn signature_ignores_the_path_but_not_the_text() {
        let a = MailView::parse(b"Message-ID: <1@x>\r\nReceived: a\r\n\r\nhello\r\n");
        let b = MailView::parse(b"Received: b\r\nMessage-ID: <1@x>\r\n\r\nhello\r\n");
        let c = MailView::parse(b"Message-ID: <1@x>\r\n\r\nhello there\r\n");
        assert_eq!(signature(&a), signature(&b));
        assert_ne!(signature(&a), signature(&c));
        assert!(signature(&a).starts_with("v1:"));
    }

    #[test]
    fn hashes_sorted_distinct() {
        let h = hashes(&["a".into(), "b".into(), "a".into()]);
        assert_eq!(h.len(), 2);
        assert!(h[0] < h[1]);
    }
}
