//! Modified UTF-7 for mailbox names (RFC 3501 5.1.3), used with clients that
//! have not enabled UTF8=ACCEPT (RFC 6855). Pure.

use base64::Engine;
use base64::alphabet::IMAP_MUTF7;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};

const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &IMAP_MUTF7,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
);

pub fn encode(name: &str) -> String {
    let mut out = String::new();
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if !pending.is_empty() {
            let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
            out.push('&');
            out.push_str(&ENGINE.encode(bytes));
            out.push('-');
            pending.clear();
        }
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// Decodes a name; `None` when it is not valid modified UTF-7, or not in
/// its one canonical form (RFC 3501 5.1.3: printable ASCII, "&" excepted,
/// stands for itself, a run of other characters is one base64 run): an
/// "a" written "&AGE-", or two runs back to back, would name the same
/// folder another way, so such a name is refused, not rewritten (as
/// Dovecot refuses it).
pub fn decode(name: &str) -> Option<String> {
    let decoded = decode_any(name)?;
    (encode(&decoded) == name).then_some(decoded)
}

/// Decodes valid modified UTF-7, canonical or not.
fn decode_any(name: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = name;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after.find('-')?;
        let chunk = &after[..end];
        if chunk.is_empty() {
            out.push('&');
        } else {
            let bytes = ENGINE.decode(chunk).ok()?;
            if bytes.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = bytes
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            out.push_str(&String::from_utf16(&units).ok()?);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for (utf8, wire) in [
            ("Entwürfe", "Entw&APw-rfe"),
            ("A & B", "A &- B"),
            ("日本語", "&ZeVnLIqe-"),
            ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
            ("plain", "plain"),
        ] {
            assert_eq!(encode(utf8), wire);
            assert_eq!(decode(wire).as_deref(), Some(utf8));
        }
        assert_eq!(decode("bad&abc"), None);
    }

    #[test]
    fn only_the_canonical_form_is_accepted() {
        for wire in [
            "&AGE-",          // "a", which stands for itself
            "&AOQ-&APY-",     // two runs back to back: one run "&AOQA9g-"
            "Entw&APw-&AGE-", // ASCII inside a run
            "&AOQ",           // unterminated
            "&AOR-",          // trailing bits set
        ] {
            assert_eq!(decode(wire), None, "{wire}");
        }
        assert_eq!(decode("&AOQA9g-").as_deref(), Some("äö"));
    }
}
