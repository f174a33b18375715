use super::*;

fn parse(s: &[u8]) -> Request {
    parse_request(s).unwrap_or_else(|e| panic!("{:?}: {e:?}", String::from_utf8_lossy(s)))
}

fn cmd(s: &str) -> Command {
    parse(s.as_bytes()).command
}

#[test]
fn simple_commands() {
    let r = parse(b"a001 CAPABILITY\r\n");
    assert_eq!(r.tag, "a001");
    assert_eq!(r.command, Command::Capability);
    assert_eq!(cmd("x noop\r\n"), Command::Noop);
    assert_eq!(cmd("x LOGOUT\r\n"), Command::Logout);
    assert_eq!(cmd("x ID NIL\r\n"), Command::Id);
    assert_eq!(
        cmd("x ID (\"name\" \"mutt\" \"version\" NIL)\r\n"),
        Command::Id
    );
    assert_eq!(
        cmd("x ENABLE UTF8=ACCEPT CONDSTORE\r\n"),
        Command::Enable(vec!["UTF8=ACCEPT".into(), "CONDSTORE".into()])
    );
}

#[test]
fn login_with_quoted_strings_and_escapes() {
    assert_eq!(
        cmd("a LOGIN \"jo@example.net\" \"p\\\"w\\\\d\"\r\n"),
        Command::Login {
            user: b"jo@example.net".to_vec(),
            password: b"p\"w\\d".to_vec()
        }
    );
    assert_eq!(
        cmd("a LOGIN jo secret\r\n"),
        Command::Login {
            user: b"jo".to_vec(),
            password: b"secret".to_vec()
        }
    );
}

#[test]
fn literals_synchronizing_and_non_synchronizing() {
    assert_eq!(
        cmd("a LOGIN {2}\r\njo {6+}\r\nsecret\r\n"),
        Command::Login {
            user: b"jo".to_vec(),
            password: b"secret".to_vec()
        }
    );
    assert_eq!(literal_announced(b"a LOGIN {2}\r\n"), Some((2, true)));
    assert_eq!(
        literal_announced(b"a APPEND INBOX {310+}\r\n"),
        Some((310, false))
    );
    assert_eq!(literal_announced(b"a LOGIN jo secret\r\n"), None);
    assert_eq!(literal_announced(b"a LOGIN {x}\r\n"), None);
    // A literal shorter than announced is BAD, not a panic.
    assert!(parse_request(b"a LOGIN {10}\r\njo\r\n").is_err());
}

#[test]
fn mailbox_names_8bit_utf8_and_mutf7() {
    assert_eq!(
        cmd("a SELECT Entw&APw-rfe\r\n"),
        Command::Select {
            mailbox: b"Entw&APw-rfe".to_vec(),
            condstore: false
        }
    );
    assert_eq!(
        cmd("a CREATE \"Entwürfe\"\r\n"),
        Command::Create("Entwürfe".as_bytes().to_vec())
    );
    assert_eq!(
        cmd("a CREATE Entwürfe\r\n"),
        Command::Create("Entwürfe".as_bytes().to_vec())
    );
    assert_eq!(
        cmd("a EXAMINE inbox (CONDSTORE)\r\n"),
        Command::Examine {
            mailbox: b"inbox".to_vec(),
            condstore: true
        }
    );
}

#[test]
fn list_forms() {
    let Command::List(a) = cmd("a LIST \"\" *\r\n") else {
        panic!()
    };
    assert_eq!(a.patterns, vec![b"*".to_vec()]);
    let Command::List(a) =
        cmd("a LIST \"\" \"%\" RETURN (SPECIAL-USE STATUS (MESSAGES UNSEEN))\r\n")
    else {
        panic!()
    };
    assert!(a.return_special_use);
    assert_eq!(
        a.return_status,
        Some(vec![StatusItem::Messages, StatusItem::Unseen])
    );
    let Command::List(a) = cmd("a LIST (SUBSCRIBED) \"\" (INBOX Sent*)\r\n") else {
        panic!()
    };
    assert!(a.select_subscribed);
    assert_eq!(a.patterns.len(), 2);
}

#[test]
fn fetch_items_sections_and_partials() {
    let Command::Fetch {
        uid, set, items, ..
    } = cmd("a UID FETCH 1:* (FLAGS UID RFC822.SIZE)\r\n")
    else {
        panic!()
    };
    assert!(uid);
    assert!(set.contains(7, 7));
    assert_eq!(
        items,
        vec![FetchAtt::Flags, FetchAtt::Uid, FetchAtt::Rfc822Size]
    );
    let Command::Fetch { items, .. } = cmd(
        "a FETCH 2 (BODY.PEEK[1.2.HEADER.FIELDS (From Subject)]<0.100> BODY[TEXT] BODY[] BODYSTRUCTURE)\r\n",
    ) else {
        panic!()
    };
    assert_eq!(
        items[0],
        FetchAtt::Section {
            peek: true,
            section: Section {
                part: vec![1, 2],
                text: Some(SectionText::HeaderFields {
                    not: false,
                    fields: vec!["From".into(), "Subject".into()]
                })
            },
            partial: Some((0, 100)),
        }
    );
    assert_eq!(
        items[1],
        FetchAtt::Section {
            peek: false,
            section: Section {
                part: vec![],
                text: Some(SectionText::Text)
            },
            partial: None
        }
    );
    assert_eq!(
        items[2],
        FetchAtt::Section {
            peek: false,
            section: Section::default(),
            partial: None
        }
    );
    assert_eq!(items[3], FetchAtt::BodyStructure);
    let Command::Fetch { items, .. } = cmd("a FETCH 1 FAST\r\n") else {
        panic!()
    };
    assert_eq!(items.len(), 3);
    let Command::Fetch { items, .. } = cmd("a FETCH *:4 BODY\r\n") else {
        panic!()
    };
    assert_eq!(items, vec![FetchAtt::Body]);
}

#[test]
fn search_keys() {
    let Command::Search { criteria, .. } =
        cmd("a SEARCH CHARSET UTF-8 OR FROM \"jo\" NOT SEEN SINCE 1-Feb-1994 UID 2:4\r\n")
    else {
        panic!()
    };
    let SearchKey::And(keys) = criteria else {
        panic!()
    };
    assert_eq!(keys.len(), 3);
    assert!(matches!(keys[0], SearchKey::Or(..)));
    assert_eq!(keys[1], SearchKey::Since(days_from_civil(1994, 2, 1)));
    let Command::Search { criteria, .. } = cmd("a SEARCH BODY {5}\r\nhello\r\n") else {
        panic!()
    };
    assert_eq!(criteria, SearchKey::Body("hello".into()));
    let Command::Search { criteria, .. } = cmd("a SEARCH (1:3 DELETED) LARGER 100\r\n") else {
        panic!()
    };
    assert!(matches!(criteria, SearchKey::And(_)));
    assert!(matches!(
        parse_request(b"a SEARCH CHARSET KOI8-R ALL\r\n"),
        Err(ParseError::No { ref text, .. }) if text.starts_with("[BADCHARSET")
    ));
}

#[test]
fn store_copy_move_append() {
    assert!(matches!(
        cmd("a STORE 1:3 +FLAGS.SILENT (\\Seen \\Deleted)\r\n"),
        Command::Store { op: StoreOp::Add, silent: true, ref flags, .. } if flags == &["\\Seen", "\\Deleted"]
    ));
    assert!(matches!(
        cmd("a UID STORE 5 -FLAGS \\Seen\r\n"),
        Command::Store {
            uid: true,
            op: StoreOp::Remove,
            ..
        }
    ));
    assert!(matches!(
        cmd("a UID MOVE 1:* Trash\r\n"),
        Command::Move { uid: true, .. }
    ));
    let Command::Append {
        mailbox,
        flags,
        date,
        message,
    } = cmd("a APPEND Sent (\\Seen) \"17-Jul-1996 02:44:25 -0700\" {5+}\r\nhello\r\n")
    else {
        panic!()
    };
    assert_eq!(
        (mailbox, flags, message),
        (
            b"Sent".to_vec(),
            vec!["\\Seen".to_string()],
            b"hello".to_vec()
        )
    );
    assert_eq!(date, Some(837_596_665));
}

#[test]
fn bad_input_is_bad_with_the_tag() {
    let table: &[&[u8]] = &[
        b"a FOO\r\n",
        b"a FETCH 0 FLAGS\r\n",
        b"a FETCH 1:x FLAGS\r\n",
        b"a FETCH 1 (FLAGS\r\n",
        b"a SELECT\r\n",
        b"a LOGIN \"unterminated\r\n",
        b"a STORE 1 FLAGS.LOUD (\\Seen)\r\n",
        b"a SEARCH NOTAKEY\r\n",
        b"a NOOP trailing\r\n",
    ];
    for line in table {
        match parse_request(line) {
            Err(ParseError::Bad { tag, .. }) => assert_eq!(tag, "a"),
            other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(line)),
        }
    }
    assert_eq!(parse_request(b"\r\n"), Err(ParseError::NoTag));
    assert_eq!(parse_request(b"* NOOP\r\n"), Err(ParseError::NoTag));
}

#[test]
fn deep_nesting_is_refused() {
    let deep = format!("a SEARCH {}ALL{}\r\n", "(".repeat(40), ")".repeat(40));
    assert!(parse_request(deep.as_bytes()).is_err());
    let nots = format!("a SEARCH {}ALL\r\n", "NOT ".repeat(40));
    assert!(parse_request(nots.as_bytes()).is_err());
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap, deterministic stand-in for the cargo-fuzz target in
    // firmware/imap/fuzz: mutations of real commands plus random bytes.
    let seeds: &[&[u8]] = &[
        b"a FETCH 1:* (BODY.PEEK[1.2.HEADER.FIELDS (A B)]<0.10> FLAGS)\r\n",
        b"a SEARCH OR (FROM x NOT SEEN) UID 1:*,5 BODY {3}\r\nabc\r\n",
        b"a APPEND INBOX (\\Seen) \"17-Jul-1996 02:44:25 -0700\" {5+}\r\nhello\r\n",
        b"a LIST (SUBSCRIBED) \"\" (\"*\" %) RETURN (STATUS (MESSAGES))\r\n",
        b"a UID STORE 1:3 (UNCHANGEDSINCE 5) +FLAGS.SILENT (\\Deleted)\r\n",
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..20_000 {
        let seed = seeds[(rand() % seeds.len() as u64) as usize];
        let mut input = seed.to_vec();
        for _ in 0..(rand() % 6) {
            let i = (rand() % input.len() as u64) as usize;
            match rand() % 3 {
                0 => input[i] = rand() as u8,
                1 => {
                    input.remove(i);
                }
                _ => input.insert(i, b"{}()[]<>\"* %:0123456789"[(rand() % 17) as usize]),
            }
            if input.is_empty() {
                break;
            }
        }
        let _ = parse_request(&input);
        let _ = literal_announced(&input);
    }
}

#[test]
fn append_heads_stop_after_the_mailbox() {
    let head = |s: &[u8]| parse_append_head(s);
    assert_eq!(
        head(b"a APPEND INBOX {10485760}\r\n"),
        Some(AppendHead {
            tag: "a".into(),
            mailbox: b"INBOX".to_vec(),
            rest: b" {10485760}\r\n".to_vec(),
        })
    );
    let h = head(b"b append \"Sent Items\" (\\Seen) CATENATE (URL \"/INBOX/;UID=1\")\r\n")
        .expect("append");
    assert_eq!(h.mailbox, b"Sent Items");
    assert_eq!(h.rest, b" (\\Seen) CATENATE (URL \"/INBOX/;UID=1\")\r\n");
    // The mailbox as a literal: its own announcement is not the message...
    assert_eq!(head(b"c APPEND {5}\r\n"), None);
    // ...and once it is inline, the next one is.
    let h = head(b"c APPEND {5}\r\nDraft (\\Draft) {12+}\r\n").expect("append");
    assert_eq!(h.mailbox, b"Draft");
    assert_eq!(h.rest, b" (\\Draft) {12+}\r\n");
    // Other commands, and an APPEND without arguments, take the usual path.
    assert_eq!(head(b"d LOGIN {3}\r\n"), None);
    assert_eq!(head(b"e SEARCH TEXT {100}\r\n"), None);
    assert_eq!(head(b"f APPEND INBOX\r\n"), None);
}

/// RFC 5258 3.1: RECURSIVEMATCH needs another selection option (REMOTE does
/// not count); unknown options are BAD too.
#[test]
fn list_extended_selection_options() {
    let Command::List(a) = cmd("a LIST (SUBSCRIBED RECURSIVEMATCH) \"\" %\r\n") else {
        panic!()
    };
    assert!(a.select_subscribed && a.select_recursivematch);
    let Command::List(a) = cmd("a LIST (REMOTE) \"\" %\r\n") else {
        panic!()
    };
    assert!(!a.select_subscribed);
    for line in [
        "a LIST (RECURSIVEMATCH) \"\" \"\"\r\n",
        "a LIST (recursivematch remote) \"\" \"\"\r\n",
        "a LIST (imaptest) \"\" \"\"\r\n",
        "a LIST \"\" \"\" RETURN (imaptest)\r\n",
    ] {
        assert!(
            matches!(parse_request(line.as_bytes()), Err(ParseError::Bad { .. })),
            "{line}"
        );
    }
}
