use super::*;

thread_local! {
    /// Containers `bounded` had to cut on this thread: 0 while `scan` and
    /// mail-parser agree.
    pub(crate) static CUTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn cuts() -> usize {
    CUTS.with(|c| c.get())
}

/// `depth` levels of `message/rfc822`, each one a header block.
fn nested_rfc822(depth: usize) -> Vec<u8> {
    let mut m = b"From: a@example.net\r\nSubject: deep\r\n".to_vec();
    for _ in 0..depth {
        m.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
    }
    m.extend_from_slice(b"Subject: bottom\r\n\r\nthe end\r\n");
    m
}

/// `depth` levels of multipart/mixed, each with its own boundary.
fn nested_multipart(depth: usize) -> Vec<u8> {
    let mut m = b"From: a@example.net\r\n".to_vec();
    for i in 0..depth {
        m.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n")
                .as_bytes(),
        );
    }
    m.extend_from_slice(b"Content-Type: text/plain\r\n\r\nleaf\r\n");
    for i in (0..depth).rev() {
        m.extend_from_slice(format!("--b{i}--\r\n").as_bytes());
    }
    m
}

/// The deepest level of the parsed tree, counted without recursion.
fn tree_depth(m: &Message<'_>) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(m, 1usize)];
    while let Some((m, base)) = stack.pop() {
        let mut level = vec![base; m.parts.len()];
        for (i, part) in m.parts.iter().enumerate() {
            deepest = deepest.max(level[i]);
            match &part.body {
                PartType::Multipart(children) => {
                    for &c in children {
                        level[c as usize] = level[i] + 1;
                    }
                }
                PartType::Message(inner) => stack.push((inner, level[i] + 1)),
                _ => {}
            }
        }
    }
    deepest
}

#[test]
fn forty_thousand_nested_messages_parse_within_the_limit() {
    let raw = nested_rfc822(40_000);
    assert!(raw.len() > 1_000_000);
    let s = scan(&raw);
    assert!(s.limited);
    assert_eq!(s.depth, NESTING_MAX);
    let m = parse(&raw).expect("parsed");
    assert_eq!(tree_depth(&m), NESTING_MAX);
    assert_eq!(m.subject(), Some("deep"));
    // The innermost kept level is an opaque leaf holding the rest, raw.
    let mut cur = &m;
    let mut opaque = None;
    while opaque.is_none() {
        let part = cur.parts.last().expect("a part");
        match &part.body {
            PartType::Message(inner) => cur = inner,
            _ => opaque = Some(part),
        }
    }
    let part = opaque.expect("opaque part");
    assert!(is_opaque(part));
    let body = &raw[part.offset_body as usize..part.offset_end as usize];
    assert!(
        body.starts_with(b"Content-Type: message/rfc822\r\n"),
        "the original bytes"
    );
    assert!(body.ends_with(b"the end\r\n"));
    assert!(m.raw_message.as_ref() == raw.as_slice());
    assert_eq!(cuts(), 0, "scan and mail-parser disagreed");
}

#[test]
fn deep_multipart_and_digests_are_bounded() {
    let raw = nested_multipart(5_000);
    let m = parse(&raw).expect("parsed");
    assert_eq!(tree_depth(&m), NESTING_MAX);
    // A digest's children are messages without a Content-Type header.
    let mut raw = b"From: a@example.net\r\n".to_vec();
    for i in 0..3_000 {
        raw.extend_from_slice(
            format!("Content-Type: multipart/digest; boundary=\"d{i}\"\r\n\r\n--d{i}\r\n\r\n")
                .as_bytes(),
        );
    }
    raw.extend_from_slice(b"Subject: x\r\n\r\nbody\r\n");
    let m = parse(&raw).expect("parsed");
    assert!(tree_depth(&m) <= NESTING_MAX, "{}", tree_depth(&m));
    assert_eq!(cuts(), 0, "scan and mail-parser disagreed");
}

#[test]
fn an_encoded_message_part_is_opaque() {
    use std::io::Write;
    let inner = nested_rfc822(10_000);
    let mut b64 = Vec::new();
    for chunk in inner.chunks(57) {
        let mut line = String::new();
        base64_line(chunk, &mut line);
        writeln!(b64, "{line}\r").unwrap();
    }
    let mut raw = b"From: a@example.net\r\nContent-Type: multipart/mixed; boundary=\"x\"\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nhello\r\n--x\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    raw.extend_from_slice(&b64);
    raw.extend_from_slice(b"--x--\r\n");
    let m = parse(&raw).expect("parsed");
    assert_eq!(tree_depth(&m), 2);
    let part = &m.parts[2];
    assert!(is_opaque(part));
    match &part.body {
        PartType::Binary(bytes) => assert_eq!(bytes.as_ref(), inner.as_slice()),
        other => panic!("{other:?}"),
    }
    assert_eq!(cuts(), 0, "scan and mail-parser disagreed");
}

fn base64_line(bytes: &[u8], out: &mut String) {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
}

#[test]
fn too_many_parts_make_the_body_one_opaque_part() {
    let mut raw =
        b"From: a@example.net\r\nContent-Type: multipart/mixed; boundary=\"p\"\r\n\r\n".to_vec();
    for _ in 0..PARTS_MAX + 10 {
        raw.extend_from_slice(b"--p\r\n\r\nx\r\n");
    }
    raw.extend_from_slice(b"--p--\r\n");
    let s = scan(&raw);
    assert!(s.limited);
    let m = parse(&raw).expect("parsed");
    assert_eq!(m.parts.len(), 1);
    assert!(is_opaque(&m.parts[0]));
    // Just under the limit, every part is there.
    let mut raw =
        b"From: a@example.net\r\nContent-Type: multipart/mixed; boundary=\"p\"\r\n\r\n".to_vec();
    for _ in 0..100 {
        raw.extend_from_slice(b"--p\r\n\r\nx\r\n");
    }
    raw.extend_from_slice(b"--p--\r\n");
    assert_eq!(parse(&raw).expect("parsed").parts.len(), 101);
    assert_eq!(cuts(), 0, "scan and mail-parser disagreed");
}

#[test]
fn ordinary_messages_parse_as_mail_parser_parses_them() {
    let samples: Vec<Vec<u8>> = vec![
        b"Subject: plain\r\n\r\nhello\r\n".to_vec(),
        nested_rfc822(3),
        nested_multipart(NESTING_MAX - 1),
        b"From: a@example.net\r\nContent-Type: multipart/alternative; boundary=\"a\"\r\n\r\npreamble\r\n--a\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nh=C3=A9\r\n--a\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\nPGI+aGk8L2I+\r\n--a--\r\nepilogue\r\n".to_vec(),
        b"From: a@example.net\r\nContent-Type: multipart/mixed; boundary=\"m\"\r\n\r\n--m\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--m\r\nContent-Type: message/rfc822\r\n\r\nFrom: b@example.org\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=\"i\"\r\n\r\n--i\r\nContent-Type: text/plain\r\n\r\ninner text\r\n--i--\r\n--m--\r\n".to_vec(),
        b"From: a@example.net\r\nContent-Type: multipart/mixed; boundary=\"broken\"\r\n\r\n--broken\r\nContent-Type: text/plain\r\n\r\nno end".to_vec(),
    ];
    for raw in samples {
        let s = scan(&raw);
        assert!(!s.limited, "{}", String::from_utf8_lossy(&raw));
        assert!(s.masks.is_empty());
        let ours = parse(&raw).expect("ours");
        let theirs = MessageParser::default().parse(&raw).expect("theirs");
        assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(&raw));
    }
    assert_eq!(cuts(), 0, "scan and mail-parser disagreed");
}

#[test]
fn header_values_are_read_without_byte_slicing() {
    let raw = "Subject: aé test\r\nMessage-ID:\r\n <x@example.net>\r\n\r\nbody ü\r\n".as_bytes();
    assert_eq!(
        header_raw(raw, "Message-ID").as_deref(),
        Some("<x@example.net>")
    );
    assert_eq!(header_raw(raw, "subject").as_deref(), Some("aé test"));
    assert_eq!(header_raw(raw, "X-None"), None);
    assert_eq!(header_raw("é: x\r\n\r\n".as_bytes(), "Message-ID"), None);
}

#[test]
fn a_tree_deeper_than_the_limit_is_cut_without_recursion() {
    // Not through `scan`: the guarantee behind it.
    let raw = nested_rfc822(200);
    let deep = MessageParser::default().parse(&raw).expect("parsed");
    assert_eq!(tree_depth(&deep), 201);
    let before = cuts();
    let cut = bounded(deep);
    assert_eq!(cuts() - before, 1);
    assert_eq!(tree_depth(&cut), NESTING_MAX);
}

/// Found by the mime_structure fuzz target: these bytes reach a
/// `debug_assert!(false)` inside mail-parser 0.11.9. The binary ships without
/// debug assertions, and the workspace's dev profile builds mail-parser the
/// same way (root Cargo.toml), so the parse must return the message.
#[test]
fn the_mail_parser_debug_assertion_input_parses() {
    let raw =
        include_bytes!("../../fuzz/fuzz/corpus/mime_structure/crash-mail-parser-debug-assert");
    let m = parse(raw).expect("parsed");
    assert_eq!(m.subject(), Some("fwd: report"));
    assert!(!m.parts.is_empty());
}

/// Found by the mime_structure fuzz target: mail-parser left part 2 a
/// multipart with children `[0, 1, 2, 3]` (itself and its parent), so IMAP
/// BODYSTRUCTURE walked 4^32 paths. After `parse` every message's parts are
/// a tree: each child comes after its multipart and has one parent.
#[test]
fn multipart_children_form_a_tree() {
    let raw = include_bytes!("../../fuzz/fuzz/corpus/mime_structure/crash-multipart-child-cycle");
    let m = parse(raw).expect("parsed");
    let mut stack = vec![&m];
    let mut multiparts = 0;
    while let Some(m) = stack.pop() {
        let mut parent = vec![None; m.parts.len()];
        for (i, part) in m.parts.iter().enumerate() {
            match &part.body {
                PartType::Multipart(children) => {
                    multiparts += 1;
                    for &c in children {
                        let c = c as usize;
                        assert!(c > i && c < m.parts.len(), "child {c} of part {i}");
                        assert_eq!(parent[c], None, "part {c} has two parents");
                        parent[c] = Some(i);
                    }
                }
                PartType::Message(inner) => stack.push(inner),
                _ => {}
            }
        }
    }
    assert!(multiparts >= 2);
}
