//! FETCH BINARY[part] and BINARY.SIZE[part] (RFC 3516 4.1): a part's body
//! with its Content-Transfer-Encoding undone. Pure. The part is found by
//! the same bounded walk as BODY[section] (`section_bytes`); its MIME
//! header gives the encoding.

use super::{header_fields, section_bytes};
use crate::parser::{Section, SectionText};
use mail_parser::Message;

/// The part's encoding is not one this server can undo: the FETCH fails
/// with `NO [UNKNOWN-CTE]` (RFC 3516 4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownCte(pub String);

/// The decoded bytes of `part` (empty: the whole message, as stored).
/// A part that does not exist is empty, as BODY[] answers it.
pub fn decoded(raw: &[u8], msg: Option<&Message<'_>>, part: &[u32]) -> Result<Vec<u8>, UnknownCte> {
    let Some(msg) = msg else {
        return Ok(if part.is_empty() {
            raw.to_vec()
        } else {
            Vec::new()
        });
    };
    let body = Section {
        part: part.to_vec(),
        text: None,
    };
    let Some(bytes) = section_bytes(raw, msg, &body) else {
        return Ok(Vec::new());
    };
    if part.is_empty() {
        return Ok(bytes);
    }
    let mime = Section {
        part: part.to_vec(),
        text: Some(SectionText::Mime),
    };
    let header = section_bytes(raw, msg, &mime).unwrap_or_default();
    let cte = transfer_encoding(&header);
    match cte.as_str() {
        "" | "7bit" | "8bit" | "binary" => Ok(bytes),
        "base64" => Ok(base64_lenient(&bytes)),
        "quoted-printable" => Ok(quoted_printable(&bytes)),
        _ => Err(UnknownCte(cte)),
    }
}

/// The Content-Transfer-Encoding token of a header block, lower case
/// ("" when absent).
fn transfer_encoding(header: &[u8]) -> String {
    let field = header_fields(header, &["Content-Transfer-Encoding".to_string()], false);
    let text = String::from_utf8_lossy(&field);
    let value = text.split_once(':').map(|(_, v)| v).unwrap_or("");
    let value = value.split([';', '(']).next().unwrap_or("");
    value.trim().to_ascii_lowercase()
}

/// Base64 (RFC 2045 6.8) as readers decode it: characters outside the
/// alphabet are ignored, decoding stops at padding, a last partial group
/// gives what bytes it holds.
pub fn base64_lenient(input: &[u8]) -> Vec<u8> {
    fn value(b: u8) -> Option<u32> {
        Some(match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let (mut acc, mut n) = (0u32, 0);
    for &b in input {
        if b == b'=' {
            break;
        }
        let Some(v) = value(b) else { continue };
        acc = acc << 6 | v;
        n += 1;
        if n == 4 {
            out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
            (acc, n) = (0, 0);
        }
    }
    match n {
        2 => out.push((acc >> 4) as u8),
        3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
        _ => {}
    }
    out
}

/// Quoted-printable (RFC 2045 6.7): `=XX` is a byte, `=` at the end of a
/// line (after trailing white space, rule 3) joins it to the next, white
/// space at the end of a line (the last one too) is dropped; line ends are kept as they are.
/// A `=` not followed by two hex digits is kept as it is (rule 4's
/// robustness advice).
pub fn quoted_printable(input: &[u8]) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let mut out = Vec::with_capacity(input.len());
    for segment in input.split_inclusive(|&b| b == b'\n') {
        let (mut line, ending): (&[u8], &[u8]) = if let Some(l) = segment.strip_suffix(b"\r\n") {
            (l, b"\r\n")
        } else if let Some(l) = segment.strip_suffix(b"\n") {
            (l, b"\n")
        } else {
            (segment, b"")
        };
        while let [rest @ .., b' ' | b'\t'] = line {
            line = rest;
        }
        let soft = !ending.is_empty() && line.last() == Some(&b'=');
        if soft {
            line = &line[..line.len() - 1];
        }
        let mut i = 0;
        while i < line.len() {
            if line[i] == b'='
                && let (Some(h), Some(l)) = (
                    line.get(i + 1).copied().and_then(hex),
                    line.get(i + 2).copied().and_then(hex),
                )
            {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            out.push(line[i]);
            i += 1;
        }
        if !soft {
            out.extend_from_slice(ending);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_leniently() {
        let table: [(&[u8], &[u8]); 5] = [
            (b"aGVsbG8=", b"hello"),
            (b"aGVs\r\nbG8gd29y\r\nbGQ=\r\n", b"hello world"),
            (b"AC0A", b"\0-\0"),
            (b"aGk*!", b"hi"),
            (b"", b""),
        ];
        for (input, want) in table {
            assert_eq!(base64_lenient(input), want, "{input:?}");
        }
    }

    #[test]
    fn quoted_printable_decodes_like_rfc_2045() {
        let table: [(&[u8], &[u8]); 6] = [
            (b"hello  \r\nbar=\r\n\r\n", b"hello\r\nbar\r\n"),
            (b"foo\t \t= \r\n=62\r\n", b"foo\t \tb\r\n"),
            (b"a=3Db=3d", b"a=b="),
            (b"=00x", b"\0x"),
            (b"50=%\n", b"50=%\n"),
            (b"foo_bar", b"foo_bar"),
        ];
        for (input, want) in table {
            assert_eq!(quoted_printable(input), want, "{input:?}");
        }
    }

    #[test]
    fn parts_are_decoded_by_their_encoding() {
        let raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
Content-Transfer-Encoding: base64\r\n\r\nAC1h\r\n--b\r\n\
Content-Transfer-Encoding: Quoted-Printable\r\n\r\nx=3Dy=\r\nz\r\n--b\r\n\
Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n--b\r\n\
Content-Type: text/plain\r\n\r\nplain\r\n--b--\r\n";
        let msg = crate::fetch::parse(raw);
        let d = |part: &[u32]| decoded(raw, msg.as_ref(), part);
        assert_eq!(d(&[1]), Ok(b"\0-a".to_vec()));
        assert_eq!(d(&[2]), Ok(b"x=yz".to_vec()));
        assert_eq!(d(&[3]), Err(UnknownCte("x-uuencode".into())));
        assert_eq!(d(&[4]), Ok(b"plain".to_vec()));
        assert_eq!(d(&[9]), Ok(Vec::new()));
        assert_eq!(d(&[]), Ok(raw.to_vec()));
        // A single-part message: part 1 is its body, decoded.
        let single = b"Content-Transfer-Encoding: base64\r\n\r\naGk=\r\n";
        let m = crate::fetch::parse(single);
        assert_eq!(decoded(single, m.as_ref(), &[1]), Ok(b"hi".to_vec()));
    }
}
