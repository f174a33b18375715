use super::*;

const SIMPLE: &[u8] = b"From: Jo Smith <jo@example.net>\r\nTo: a@example.org, \"B, Second\" <b@example.org>\r\nSubject: Hello\r\n there\r\nDate: Mon, 8 Jan 2007 17:46:00 +0000\r\nMessage-ID: <1@example.net>\r\n\r\nline one\r\nline two\r\n";

const MULTI: &[u8] = b"From: a@example.net\r\nSubject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nfirst part\r\n--XX\r\nContent-Type: message/rfc822\r\n\r\nFrom: inner@example.net\r\nSubject: inner\r\n\r\ninner body\r\n--XX\r\nContent-Type: application/pdf; name=\"x.pdf\"\r\nContent-Disposition: attachment; filename=\"x.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nQUJD\r\n--XX--\r\n";

fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).expect("utf8")
}

#[test]
fn envelope_of_a_simple_message() {
    let m = parse(SIMPLE).expect("parse");
    let mut out = Vec::new();
    envelope(&mut out, &m);
    assert_eq!(
        text(out),
        "(\"Mon, 8 Jan 2007 17:46:00 +0000\" \"Hello there\" ((\"Jo Smith\" NIL \"jo\" \"example.net\")) ((\"Jo Smith\" NIL \"jo\" \"example.net\")) ((\"Jo Smith\" NIL \"jo\" \"example.net\")) ((NIL NIL \"a\" \"example.org\")(\"B, Second\" NIL \"b\" \"example.org\")) NIL NIL NIL \"<1@example.net>\")"
    );
}

#[test]
fn bodystructure_of_a_simple_message() {
    let m = parse(SIMPLE).expect("parse");
    let mut out = Vec::new();
    bodystructure(&mut out, &m, false);
    assert_eq!(
        text(out),
        "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 20 2)"
    );
}

#[test]
fn bodystructure_of_a_multipart_with_a_nested_message() {
    let m = parse(MULTI).expect("parse");
    let mut out = Vec::new();
    bodystructure(&mut out, &m, true);
    let s = text(out);
    assert!(
        s.starts_with(
            "((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 10 1 NIL NIL NIL NIL)"
        ),
        "{s}"
    );
    assert!(
        s.contains("(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" "),
        "{s}"
    );
    assert!(s.contains("\"inner\""), "{s}");
    assert!(s.contains("(\"APPLICATION\" \"PDF\" (\"NAME\" \"x.pdf\") NIL NIL \"BASE64\" 4 NIL (\"ATTACHMENT\" (\"FILENAME\" \"x.pdf\")) NIL NIL)"), "{s}");
    assert!(
        s.ends_with(" \"MIXED\" (\"BOUNDARY\" \"XX\") NIL NIL NIL)"),
        "{s}"
    );
}

#[test]
fn sections() {
    let m = parse(MULTI).expect("parse");
    let sec = |part: Vec<u32>, t: Option<SectionText>| {
        section_bytes(MULTI, &m, &Section { part, text: t }).map(text)
    };
    assert_eq!(sec(vec![1], None).as_deref(), Some("first part"));
    assert_eq!(
        sec(vec![1], Some(SectionText::Mime)).as_deref(),
        Some("Content-Type: text/plain; charset=utf-8\r\n\r\n")
    );
    assert_eq!(sec(vec![2, 1], None).as_deref(), Some("inner body"));
    assert_eq!(
        sec(vec![2], Some(SectionText::Header)).as_deref(),
        Some("From: inner@example.net\r\nSubject: inner\r\n\r\n")
    );
    assert_eq!(sec(vec![3], None).as_deref(), Some("QUJD"));
    assert_eq!(sec(vec![4], None), None);
    assert_eq!(
        sec(vec![], None).as_deref().map(str::len),
        Some(MULTI.len())
    );
    assert!(
        sec(vec![], Some(SectionText::Text))
            .expect("text")
            .starts_with("preamble")
    );

    let s = parse(SIMPLE).expect("parse");
    let h = section_bytes(
        SIMPLE,
        &s,
        &Section {
            part: vec![],
            text: Some(SectionText::HeaderFields {
                not: false,
                fields: vec!["subject".into(), "To".into()],
            }),
        },
    );
    assert_eq!(
        text(h.expect("fields")),
        "To: a@example.org, \"B, Second\" <b@example.org>\r\nSubject: Hello\r\n there\r\n\r\n"
    );
    assert_eq!(
        section_bytes(
            SIMPLE,
            &s,
            &Section {
                part: vec![1],
                text: None
            }
        )
        .map(text)
        .as_deref(),
        Some("line one\r\nline two\r\n")
    );
}

/// 20,000 levels of message/rfc822: BODYSTRUCTURE, ENVELOPE and BODY[section]
/// used to recurse once per level (and drop the tree recursively) and killed
/// the process with a stack overflow.
#[test]
fn deeply_nested_messages_stay_within_the_nesting_limit() {
    let mut raw = b"From: a@example.net\r\nSubject: deep\r\n".to_vec();
    for _ in 0..20_000 {
        raw.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
    }
    raw.extend_from_slice(b"Subject: bottom\r\n\r\nthe end\r\n");
    let m = parse(&raw).expect("parse");
    let s = Structure::of(&m);
    let bs = text(s.bodystructure);
    // One "MESSAGE" "RFC822" per level kept, then the opaque rest.
    assert_eq!(
        bs.matches("\"MESSAGE\" \"RFC822\"").count(),
        mxrack_mime::NESTING_MAX - 1
    );
    assert_eq!(bs.matches("\"APPLICATION\" \"OCTET-STREAM\"").count(), 1);
    // The deepest section still there is the opaque part, with its raw bytes.
    let path = vec![1u32; mxrack_mime::NESTING_MAX - 1];
    let section = Section {
        part: path,
        text: None,
    };
    let bytes = section_bytes(&raw, &m, &section).expect("section");
    assert!(bytes.starts_with(b"Content-Type: message/rfc822\r\n"));
    assert!(bytes.ends_with(b"the end\r\n"));
}

/// ENVELOPE address structures (RFC 3501 7.4.2, RFC 5322 3.4): one header
/// field in, the address list a client reads out.
#[test]
fn envelope_addresses_table() {
    let table: &[(&str, &str)] = &[
        (
            "Kim <kim@example.org>",
            "((\"Kim\" NIL \"kim\" \"example.org\"))",
        ),
        ("<kim@example.org>", "((NIL NIL \"kim\" \"example.org\"))"),
        (
            "kim@example.org (Kim Lee)",
            "((\"Kim Lee\" NIL \"kim\" \"example.org\"))",
        ),
        (
            "\"Lee, Kim\" <kim@example.org>, bo@example.net",
            "((\"Lee, Kim\" NIL \"kim\" \"example.org\")(NIL NIL \"bo\" \"example.net\"))",
        ),
        // A source route goes to the adl field (RFC 5322 4.4 obs-route).
        (
            "<@relay.example:kim@example.org>",
            "((NIL \"@relay.example\" \"kim\" \"example.org\"))",
        ),
        (
            "Kim <@a.example,@b.example:kim@example.org>",
            "((\"Kim\" \"@a.example,@b.example\" \"kim\" \"example.org\"))",
        ),
        // Groups: a start marker with the name as mailbox, the members, an
        // end marker; a comment inside an empty group is white space.
        (
            "team: kim@example.org, bo@example.net;, solo: (nobody here) ;",
            "((NIL NIL \"team\" NIL)(NIL NIL \"kim\" \"example.org\")(NIL NIL \"bo\" \"example.net\")(NIL NIL NIL NIL)(NIL NIL \"solo\" NIL)(NIL NIL NIL NIL))",
        ),
        (
            "undisclosed-recipients:;",
            "((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL))",
        ),
        // No domain: an address, never a group marker (Dovecot's placeholder host).
        ("broken", "((NIL NIL \"broken\" \"MISSING_DOMAIN\"))"),
        ("<>", "((NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\"))"),
        ("", "NIL"),
        (", ,", "NIL"),
    ];
    for (value, want) in table {
        let raw = format!("From: {value}\r\nSubject: t\r\n\r\nbody\r\n");
        let m = parse(raw.as_bytes()).expect("parse");
        let mut out = Vec::new();
        envelope(&mut out, &m);
        let env = text(out);
        let from_list = format!("\"t\" {want} {want} {want} NIL NIL NIL NIL NIL)");
        assert!(
            env.ends_with(&from_list),
            "From: {value}\n got {env}\nwant {from_list}"
        );
    }
}

/// Sender and Reply-To present but empty are the From list (RFC 3501 7.4.2).
#[test]
fn empty_sender_and_reply_to_are_the_from_list() {
    let raw = b"From: kim@example.org\r\nSender: \r\nReply-To: \r\nTo: team:;\r\n\r\nx\r\n";
    let m = parse(raw).expect("parse");
    let mut out = Vec::new();
    envelope(&mut out, &m);
    let k = "((NIL NIL \"kim\" \"example.org\"))";
    assert_eq!(
        text(out),
        format!("(NIL NIL {k} {k} {k} ((NIL NIL \"team\" NIL)(NIL NIL NIL NIL)) NIL NIL NIL NIL)")
    );
}

/// BODY[1.TEXT] of an attached multipart message is its whole body, the
/// epilogue after the closing boundary included (RFC 3501 6.4.5), as
/// BODY[1] has it after the header.
#[test]
fn text_of_an_attached_multipart_message_keeps_its_epilogue() {
    let inner_head =
        "From: b@example.org\r\nContent-Type: multipart/digest; boundary=\"d\"\r\n\r\n";
    let inner_body = "preamble\r\n\r\n--d \r\n\r\nFrom: m1@example.org\r\n\r\nm1 body\r\n\r\n--d \r\nX-Part: two\r\n\r\nFrom: m2@example.org\r\n\r\nm2 body\r\n\r\n--d--\r\n\r\nepilogue\r\n";
    let raw = format!(
        "From: a@example.org\r\nContent-Type: message/rfc822\r\n\r\n{inner_head}{inner_body}"
    );
    let m = parse(raw.as_bytes()).expect("parse");
    let table: Vec<(Vec<u32>, Option<SectionText>, String)> = vec![
        (vec![1], None, format!("{inner_head}{inner_body}")),
        (vec![1], Some(SectionText::Text), inner_body.to_string()),
        (
            vec![],
            Some(SectionText::Text),
            format!("{inner_head}{inner_body}"),
        ),
        (
            vec![1, 1],
            None,
            "From: m1@example.org\r\n\r\nm1 body\r\n".into(),
        ),
        (
            vec![1, 2],
            Some(SectionText::Mime),
            "X-Part: two\r\n\r\n".into(),
        ),
        (vec![1, 2], Some(SectionText::Text), "m2 body\r\n".into()),
        (
            vec![1, 2],
            Some(SectionText::Header),
            "From: m2@example.org\r\n\r\n".into(),
        ),
    ];
    for (part, t, want) in table {
        let got = section_bytes(
            raw.as_bytes(),
            &m,
            &Section {
                part: part.clone(),
                text: t.clone(),
            },
        );
        assert_eq!(
            got.map(text).as_deref(),
            Some(want.as_str()),
            "BODY[{part:?} {t:?}]"
        );
    }
}
