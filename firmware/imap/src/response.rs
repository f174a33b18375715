//! IMAP response building blocks (RFC 3501 9 "response" grammar): strings
//! as quoted or literal, NIL, lists. Pure.

/// Longest string sent quoted; longer ones go as literals.
const QUOTED_BYTES_MAX: usize = 1024;

/// Appends `bytes` as an IMAP string: quoted when it can be, else a literal.
pub fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    let quotable =
        bytes.len() <= QUOTED_BYTES_MAX && bytes.iter().all(|&b| (0x20..0x7f).contains(&b));
    if quotable {
        out.push(b'"');
        for &b in bytes {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        literal(out, bytes);
    }
}

pub fn literal(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", bytes.len()).as_bytes());
    out.extend_from_slice(bytes);
}

pub fn nstring(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => string(out, b),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// A mailbox name as astring: an atom when it is one, else a string.
pub fn mailbox(out: &mut Vec<u8>, name: &str) {
    let atom = !name.is_empty()
        && name.bytes().all(|b| {
            b > 0x20 && b < 0x7f && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\')
        });
    if atom {
        out.extend_from_slice(name.as_bytes());
    } else {
        string(out, name.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_quote_or_go_literal() {
        let mut out = Vec::new();
        string(&mut out, b"a \"b\" \\c");
        assert_eq!(out, b"\"a \\\"b\\\" \\\\c\"");
        out.clear();
        string(&mut out, b"line\r\nbreak");
        assert_eq!(out, b"{11}\r\nline\r\nbreak");
        out.clear();
        mailbox(&mut out, "Sent Items");
        assert_eq!(out, b"\"Sent Items\"");
        out.clear();
        nstring(&mut out, None);
        assert_eq!(out, b"NIL");
    }
}
