//! IMAP4rev2 (RFC 9051) after `ENABLE IMAP4rev2`, and NOTIFY (RFC 5465),
//! as tables of exact exchanges: each step is what the client sends and
//! every line the server answers, in order, over an in-memory duplex
//! stream against a real store in a temporary folder.

mod common;

use common::*;
use mxrack_imap::session::NOTIFY_PENDING_EVENTS_MAX;

fn uidvalidity(h: &Harness, folder: &str) -> u32 {
    off(|| {
        h.store
            .folder_get(USER, folder)
            .expect("folder")
            .uidvalidity
    })
}

fn modseq(h: &Harness, folder: &str) -> u64 {
    off(|| {
        h.store
            .folder_get(USER, folder)
            .expect("folder")
            .highestmodseq
    })
}

fn lines(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn rev2_is_advertised_and_enabled() {
    let h = harness();
    let mut c = Client::login(&h).await;
    c.send("c CAPABILITY\r\n").await;
    let caps = c.text_line().await;
    assert!(
        caps.starts_with("* CAPABILITY IMAP4rev1 IMAP4rev2 LITERAL+ ")
            && caps.contains(" APPENDLIMIT=65536")
            && caps.contains(" NOTIFY"),
        "{caps}"
    );
    c.text_line().await;
    c.table(&[
        (
            "e ENABLE IMAP4rev2",
            lines(&["* ENABLED IMAP4rev2", "e OK ENABLE completed"]),
        ),
        // Enabling again is harmless.
        (
            "e2 ENABLE imap4rev2 CONDSTORE",
            lines(&["* ENABLED IMAP4rev2 CONDSTORE", "e2 OK ENABLE completed"]),
        ),
    ])
    .await;
}

#[tokio::test]
async fn rev2_select_search_and_names() {
    let h = harness();
    deliver(&h, "Subject: one\r\n\r\nfirst\r\n").await;
    deliver(&h, "Subject: two\r\n\r\nsecond\r\n").await;
    let v = uidvalidity(&h, "INBOX");
    let m = modseq(&h, "INBOX");
    let flags = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";
    // IMAP4rev1 first: RECENT (EXAMINE shows the messages no session has
    // taken) and OK [UNSEEN], SEARCH, modified UTF-7.
    let mut c = Client::login(&h).await;
    c.table(&[
        (
            "s EXAMINE INBOX",
            vec![
                format!("* FLAGS ({flags})"),
                "* OK [PERMANENTFLAGS ()] Read-only mailbox".into(),
                "* 2 EXISTS".into(),
                "* 2 RECENT".into(),
                "* OK [UNSEEN 1] First unseen".into(),
                format!("* OK [UIDVALIDITY {v}] UIDs valid"),
                "* OK [UIDNEXT 3] Predicted next UID".into(),
                format!("* OK [HIGHESTMODSEQ {m}] Highest"),
                "s OK [READ-ONLY] EXAMINE completed".into(),
            ],
        ),
        (
            "f SEARCH ALL",
            lines(&["* SEARCH 1 2", "f OK SEARCH completed"]),
        ),
        ("k CREATE K\u{f6}rbe", lines(&["k OK CREATE completed"])),
        (
            "l LIST \"\" K*",
            lines(&[
                "* LIST (\\HasNoChildren) \"/\" K&APY-rbe",
                "l OK LIST completed",
            ]),
        ),
    ])
    .await;
    // IMAP4rev2: no RECENT, no UNSEEN code, the mailbox's LIST; ESEARCH
    // with the tag; UTF-8 names.
    c.table(&[
        // ENABLE only before a mailbox is selected (RFC 5161 3.1).
        ("c CLOSE", lines(&["c OK CLOSE completed"])),
        (
            "e ENABLE IMAP4rev2",
            lines(&["* ENABLED IMAP4rev2", "e OK ENABLE completed"]),
        ),
        (
            "s SELECT INBOX",
            vec![
                format!("* FLAGS ({flags})"),
                format!("* OK [PERMANENTFLAGS ({flags} \\*)] Flags permitted"),
                "* 2 EXISTS".into(),
                "* LIST () \"/\" INBOX".into(),
                format!("* OK [UIDVALIDITY {v}] UIDs valid"),
                "* OK [UIDNEXT 3] Predicted next UID".into(),
                format!("* OK [HIGHESTMODSEQ {m}] Highest"),
                "s OK [READ-WRITE] SELECT completed".into(),
            ],
        ),
        (
            "f SEARCH ALL",
            lines(&["* ESEARCH (TAG \"f\") ALL 1:2", "f OK SEARCH completed"]),
        ),
        (
            "g UID SEARCH SUBJECT two",
            lines(&["* ESEARCH (TAG \"g\") UID ALL 2", "g OK SEARCH completed"]),
        ),
        (
            "h SEARCH SUBJECT nothing",
            lines(&["* ESEARCH (TAG \"h\")", "h OK SEARCH completed"]),
        ),
        (
            "i SEARCH RETURN (COUNT) ALL",
            lines(&["* ESEARCH (TAG \"i\") COUNT 2", "i OK SEARCH completed"]),
        ),
        (
            "l LIST \"\" K*",
            lines(&[
                // 8-bit names go as literals (valid in every mode).
                "* LIST (\\HasNoChildren) \"/\" {6}",
                "K\u{f6}rbe",
                "l OK LIST completed",
            ]),
        ),
        (
            "m CREATE \"\u{e9}t\u{e9}/\u{e0}\"",
            lines(&["m OK CREATE completed"]),
        ),
        (
            "n LIST \"\" \"\u{e9}t\u{e9}*\" RETURN (STATUS (MESSAGES SIZE DELETED))",
            lines(&[
                "* LIST (\\HasChildren) \"/\" {5}",
                "\u{e9}t\u{e9}",
                "* STATUS {5}",
                "\u{e9}t\u{e9} (MESSAGES 0 SIZE 0 DELETED 0)",
                "* LIST (\\HasNoChildren) \"/\" {8}",
                "\u{e9}t\u{e9}/\u{e0}",
                "* STATUS {8}",
                "\u{e9}t\u{e9}/\u{e0} (MESSAGES 0 SIZE 0 DELETED 0)",
                "n OK LIST completed",
            ]),
        ),
        (
            "o NAMESPACE",
            lines(&[
                "* NAMESPACE ((\"\" \"/\")) NIL NIL",
                "o OK NAMESPACE completed",
            ]),
        ),
        ("u UNSELECT", lines(&["u OK UNSELECT completed"])),
    ])
    .await;
}

#[tokio::test]
async fn notify_set_checks_its_events() {
    let h = harness();
    let mut c = Client::login(&h).await;
    let bad = "n NO [BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)] Unsupported event";
    c.table(&[
        (
            "n NOTIFY SET (personal (MessageNew MessageExpunge AnnotationChange))",
            lines(&[bad]),
        ),
        (
            "n NOTIFY SET (selected (MessageNew MessageExpunge)) (personal (MailboxMetadataChange))",
            lines(&[bad]),
        ),
        (
            "b NOTIFY SET (personal (MessageNew))",
            lines(&["b BAD [CLIENTBUG] MessageNew and MessageExpunge go together (RFC 5465 5)"]),
        ),
        (
            "b NOTIFY SET (personal (FlagChange))",
            lines(&["b BAD [CLIENTBUG] FlagChange needs MessageNew and MessageExpunge (RFC 5465 5)"]),
        ),
        (
            "b NOTIFY SET (personal (MessageNew (UID) MessageExpunge))",
            lines(&["b BAD [CLIENTBUG] MessageNew fetch attributes are only for the selected mailbox"]),
        ),
        (
            "b NOTIFY SET (elsewhere (MessageNew MessageExpunge))",
            lines(&["b BAD [CLIENTBUG] unknown NOTIFY filter ELSEWHERE"]),
        ),
        (
            "b NOTIFY",
            lines(&["b BAD [CLIENTBUG] expected a space"]),
        ),
        ("o NOTIFY NONE", lines(&["o OK NOTIFY completed"])),
        (
            "o NOTIFY SET (selected NONE) (personal NONE)",
            lines(&["o OK NOTIFY completed"]),
        ),
    ])
    .await;
    // More than NOTIFY_MAILBOXES_MAX names.
    let names: Vec<String> = (0..101).map(|i| format!("m{i}")).collect();
    c.send(&format!(
        "x NOTIFY SET (mailboxes ({}) (MessageNew MessageExpunge))\r\n",
        names.join(" ")
    ))
    .await;
    assert_eq!(
        c.text_line().await,
        "x BAD [LIMIT] at most 100 mailbox names in NOTIFY"
    );
}

/// imaptest's notify script: the STATUS indicator reports the current
/// state of each mailbox named, HIGHESTMODSEQ too with FlagChange, and
/// nothing without it.
#[tokio::test]
async fn notify_set_status_reports_the_current_state() {
    let h = harness();
    let mut c = Client::login(&h).await;
    c.table(&[
        ("c CREATE box2", lines(&["c OK CREATE completed"])),
        ("a APPEND box2 {18}\r\nSubject: x\r\n\r\nbody", vec![]),
    ])
    .await;
    assert!(c.text_line().await.starts_with("+ "));
    assert!(c.text_line().await.starts_with("a OK [APPENDUID"));
    let v = uidvalidity(&h, "box2");
    let m = modseq(&h, "box2");
    c.table(&[
        (
            "n NOTIFY SET STATUS (mailboxes box2 (MessageNew MessageExpunge))",
            vec![
                format!("* STATUS box2 (MESSAGES 1 UIDNEXT 2 UIDVALIDITY {v})"),
                "n OK NOTIFY completed".into(),
            ],
        ),
        (
            "n NOTIFY SET STATUS (mailboxes box2 (MessageNew MessageExpunge FlagChange))",
            vec![
                format!("* STATUS box2 (MESSAGES 1 UIDNEXT 2 UIDVALIDITY {v} HIGHESTMODSEQ {m})"),
                "n OK NOTIFY completed".into(),
            ],
        ),
        (
            "n NOTIFY SET (mailboxes box2 (MessageNew MessageExpunge FlagChange))",
            lines(&["n OK NOTIFY completed"]),
        ),
        // Never a STATUS for the selected mailbox.
        ("s SELECT box2", vec![]),
    ])
    .await;
    loop {
        if c.text_line().await.starts_with("s OK") {
            break;
        }
    }
    c.table(&[(
        "n NOTIFY SET STATUS (mailboxes box2 (MessageNew MessageExpunge))",
        lines(&["n OK NOTIFY completed"]),
    )])
    .await;
}

/// Changes in other mailboxes of the account are pushed while the client
/// waits between commands: STATUS for messages, LIST for names and
/// subscriptions.
#[tokio::test]
async fn notify_pushes_other_mailboxes_between_commands() {
    let h = harness();
    let mut a = Client::login(&h).await;
    let mut b = Client::login(&h).await;
    b.table(&[("c CREATE box2", lines(&["c OK CREATE completed"]))])
        .await;
    let v = uidvalidity(&h, "box2");
    a.table(&[(
        "n NOTIFY SET (personal (MessageNew MessageExpunge MailboxName SubscriptionChange))",
        lines(&["n OK NOTIFY completed"]),
    )])
    .await;
    b.send("a APPEND box2 {18}\r\n").await;
    assert!(b.text_line().await.starts_with("+ "));
    b.send("Subject: x\r\n\r\nbody\r\n").await;
    assert!(b.text_line().await.starts_with("a OK [APPENDUID"));
    a.table(&[(
        "",
        vec![format!(
            "* STATUS box2 (MESSAGES 1 UIDNEXT 2 UIDVALIDITY {v} UNSEEN 1)"
        )],
    )])
    .await;
    // A flag change is not followed (no FlagChange): nothing.
    b.table(&[("s SELECT box2", vec![])]).await;
    while !b.text_line().await.starts_with("s OK") {}
    b.table(&[(
        "f STORE 1 +FLAGS.SILENT (\\Seen)",
        lines(&["f OK STORE completed"]),
    )])
    .await;
    a.quiet().await;
    // Each change of B, then what A is told of it.
    let steps: Vec<(&str, Vec<&str>, Vec<String>)> = vec![
        (
            "x STORE 1 +FLAGS.SILENT (\\Deleted)",
            vec!["x OK STORE completed"],
            vec![],
        ),
        (
            "e EXPUNGE",
            vec!["* 1 EXPUNGE", "e OK EXPUNGE completed"],
            vec![format!(
                "* STATUS box2 (MESSAGES 0 UIDNEXT 2 UIDVALIDITY {v} UNSEEN 0)"
            )],
        ),
        (
            "c CREATE new",
            vec!["c OK CREATE completed"],
            vec!["* LIST () \"/\" new".into()],
        ),
        (
            "u SUBSCRIBE new",
            vec!["u OK completed"],
            vec!["* LIST (\\Subscribed) \"/\" new".into()],
        ),
        (
            "r RENAME new newer",
            vec!["r OK RENAME completed"],
            vec!["* LIST () \"/\" newer (\"OLDNAME\" (new))".into()],
        ),
        (
            "d DELETE newer",
            vec!["d OK completed"],
            vec!["* LIST (\\NonExistent) \"/\" newer".into()],
        ),
    ];
    for (send, b_says, a_hears) in steps {
        b.table(&[(send, lines(&b_says))]).await;
        a.table(&[("", a_hears)]).await;
        a.quiet().await;
    }
    // NOTIFY NONE: quiet again.
    a.table(&[("o NOTIFY NONE", lines(&["o OK NOTIFY completed"]))])
        .await;
    b.table(&[("c CREATE other", lines(&["c OK CREATE completed"]))])
        .await;
    a.quiet().await;
}

/// The selected mailbox: new messages are pushed with the fetch
/// attributes asked for, expunges at once with `selected`, and a
/// `mailboxes` group with NONE keeps one mailbox quiet.
#[tokio::test]
async fn notify_selected_mailbox_and_idle() {
    let h = harness();
    deliver(&h, "Subject: one\r\n\r\nfirst\r\n").await;
    let mut a = Client::login(&h).await;
    let mut b = Client::login(&h).await;
    b.table(&[
        ("c CREATE quiet", lines(&["c OK CREATE completed"])),
        ("c CREATE loud", lines(&["c OK CREATE completed"])),
    ])
    .await;
    let v = uidvalidity(&h, "loud");
    a.send("s SELECT INBOX\r\n").await;
    while !a.text_line().await.starts_with("s OK") {}
    a.table(&[(
        "n NOTIFY SET (selected (MessageNew (UID FLAGS) MessageExpunge FlagChange)) (personal (MessageNew MessageExpunge)) (mailboxes quiet NONE)",
        lines(&["n OK NOTIFY completed"]),
    )])
    .await;
    deliver(&h, "Subject: two\r\n\r\nsecond\r\n").await;
    // The new message is \Recent in this session, the one that saw it
    // arrive (RFC 3501 2.3.2).
    a.table(&[(
        "",
        lines(&[
            "* 2 EXISTS",
            "* 2 RECENT",
            "* 2 FETCH (UID 2 FLAGS (\\Recent))",
        ]),
    )])
    .await;
    b.send("s SELECT INBOX\r\n").await;
    while !b.text_line().await.starts_with("s OK") {}
    b.table(&[(
        "f STORE 1 +FLAGS.SILENT (\\Flagged)",
        lines(&["f OK STORE completed"]),
    )])
    .await;
    // Message 1 is \Recent here: this session's SELECT took it.
    a.table(&[("", lines(&["* 1 FETCH (UID 1 FLAGS (\\Recent \\Flagged))"]))])
        .await;
    b.table(&[(
        "x STORE 1 +FLAGS.SILENT (\\Deleted)",
        lines(&["x OK STORE completed"]),
    )])
    .await;
    a.table(&[(
        "",
        lines(&["* 1 FETCH (UID 1 FLAGS (\\Recent \\Flagged \\Deleted))"]),
    )])
    .await;
    b.table(&[(
        "e EXPUNGE",
        lines(&["* 1 EXPUNGE", "e OK EXPUNGE completed"]),
    )])
    .await;
    a.table(&[("", lines(&["* 1 EXPUNGE", "* 1 EXISTS"]))])
        .await;
    a.quiet().await;
    // During IDLE too; the quiet mailbox says nothing.
    a.table(&[("i IDLE", lines(&["+ idling"]))]).await;
    b.send("a APPEND quiet {18}\r\n").await;
    assert!(b.text_line().await.starts_with("+ "));
    b.send("Subject: x\r\n\r\nbody\r\n").await;
    assert!(b.text_line().await.starts_with("a OK [APPENDUID"));
    b.send("a APPEND loud {18}\r\n").await;
    assert!(b.text_line().await.starts_with("+ "));
    b.send("Subject: x\r\n\r\nbody\r\n").await;
    assert!(b.text_line().await.starts_with("a OK [APPENDUID"));
    a.table(&[
        (
            "",
            vec![format!(
                "* STATUS loud (MESSAGES 1 UIDNEXT 2 UIDVALIDITY {v} UNSEEN 1)"
            )],
        ),
        ("DONE", lines(&["i OK IDLE terminated"])),
    ])
    .await;
}

/// More changes in one round than NOTIFY_PENDING_EVENTS_MAX: one
/// NOTIFICATIONOVERFLOW, then NOTIFY is off (RFC 5465 5.8).
#[tokio::test]
async fn notify_overflow_turns_notify_off() {
    let h = harness();
    let mut a = Client::login(&h).await;
    a.table(&[(
        "n NOTIFY SET (personal (MailboxName))",
        lines(&["n OK NOTIFY completed"]),
    )])
    .await;
    // All created before the session can run (one runtime thread): one round.
    off(|| {
        for i in 0..=NOTIFY_PENDING_EVENTS_MAX {
            h.store
                .folder_create(USER, &format!("f{i}"))
                .expect("create");
        }
    });
    a.table(&[(
        "",
        lines(&["* OK [NOTIFICATIONOVERFLOW] Too many events; NOTIFY is off"]),
    )])
    .await;
    off(|| h.store.folder_create(USER, "after").expect("create"));
    a.quiet().await;
    // The session goes on.
    a.table(&[("z NOOP", lines(&["z OK NOOP completed"]))])
        .await;
}

/// SEARCHRES (RFC 5182, part of rev2): RETURN (SAVE) keeps the result,
/// `$` uses it in FETCH, STORE, UID commands and search keys; an expunge
/// takes messages out of it; a new SELECT forgets it.
#[tokio::test]
async fn searchres_saves_and_dollar_uses_the_result() {
    let h = harness();
    for s in ["a", "b", "a", "c"] {
        deliver(&h, &format!("Subject: {s}\r\n\r\nbody\r\n")).await;
    }
    let mut c = Client::login(&h).await;
    c.table(&[(
        "e ENABLE IMAP4rev2",
        lines(&["* ENABLED IMAP4rev2", "e OK ENABLE completed"]),
    )])
    .await;
    c.send("s SELECT INBOX\r\n").await;
    while !c.text_line().await.starts_with("s OK") {}
    c.table(&[
        ("f FETCH $ UID", lines(&["f OK FETCH completed"])),
        (
            "a SEARCH RETURN (SAVE) SUBJECT a",
            lines(&["a OK SEARCH completed"]),
        ),
        (
            "f FETCH $ (UID)",
            lines(&[
                "* 1 FETCH (UID 1)",
                "* 3 FETCH (UID 3)",
                "f OK FETCH completed",
            ]),
        ),
        (
            "g UID SEARCH UID $ NOT 1",
            lines(&["* ESEARCH (TAG \"g\") UID ALL 3", "g OK SEARCH completed"]),
        ),
        (
            "b SEARCH RETURN (SAVE MIN COUNT) OR SUBJECT b SUBJECT c",
            lines(&[
                "* ESEARCH (TAG \"b\") MIN 2 COUNT 2",
                "b OK SEARCH completed",
            ]),
        ),
        (
            "d STORE $ +FLAGS.SILENT (\\Deleted)",
            lines(&["d OK STORE completed"]),
        ),
        (
            "x EXPUNGE",
            lines(&["* 4 EXPUNGE", "* 2 EXPUNGE", "x OK EXPUNGE completed"]),
        ),
        (
            "h SEARCH $",
            lines(&["* ESEARCH (TAG \"h\")", "h OK SEARCH completed"]),
        ),
        (
            "c SEARCH RETURN (SAVE) ALL",
            lines(&["c OK SEARCH completed"]),
        ),
        (
            "u UID FETCH $ UID",
            lines(&[
                "* 1 FETCH (UID 1)",
                "* 2 FETCH (UID 3)",
                "u OK FETCH completed",
            ]),
        ),
    ])
    .await;
    c.send("s SELECT INBOX\r\n").await;
    while !c.text_line().await.starts_with("s OK") {}
    c.table(&[("f FETCH $ UID", lines(&["f OK FETCH completed"]))])
        .await;
}

/// Reads a SELECT's untagged lines up to its tagged OK.
async fn select(c: &mut Client, tag: &str, name: &str) {
    c.send(&format!("{tag} SELECT {name}\r\n")).await;
    let ok = format!("{tag} OK");
    while !c.text_line().await.starts_with(&ok) {}
}

/// NOTIFY's STATUS baseline: the mailbox that was selected at NOTIFY SET
/// reports its first change after it is left; a mailbox created and
/// filled within one round reports its mail; MessageNew's fetch
/// attributes never set \Seen (RFC 5465 5.2).
#[tokio::test]
async fn notify_baseline_and_peek() {
    let h = harness();
    let mut a = Client::login(&h).await;
    let mut b = Client::login(&h).await;
    b.table(&[("c CREATE box2", lines(&["c OK CREATE completed"]))])
        .await;
    let v = uidvalidity(&h, "box2");
    select(&mut a, "s", "box2").await;
    a.table(&[
        (
            "n NOTIFY SET (selected (MessageNew (UID BODY[TEXT] RFC822.TEXT) MessageExpunge)) (personal (MessageNew MessageExpunge))",
            lines(&["n OK NOTIFY completed"]),
        ),
        ("u UNSELECT", lines(&["u OK UNSELECT completed"])),
    ])
    .await;
    off(|| {
        h.store
            .append(USER, "box2", b"Subject: x\r\n\r\nbody\r\n", &[], None)
            .expect("append")
    });
    a.table(&[(
        "",
        vec![format!(
            "* STATUS box2 (MESSAGES 1 UIDNEXT 2 UIDVALIDITY {v} UNSEEN 1)"
        )],
    )])
    .await;
    // Created and filled before the session runs again: one round.
    off(|| {
        h.store.folder_create(USER, "box3").expect("create");
        h.store
            .append(USER, "box3", b"Subject: y\r\n\r\nbody\r\n", &[], None)
            .expect("append");
    });
    let v3 = uidvalidity(&h, "box3");
    a.table(&[(
        "",
        vec![format!(
            "* STATUS box3 (MESSAGES 1 UIDNEXT 2 UIDVALIDITY {v3} UNSEEN 1)"
        )],
    )])
    .await;
    a.quiet().await;
    // The selected mailbox: the body goes out, the message stays unseen.
    select(&mut a, "s", "box3").await;
    off(|| {
        h.store
            .append(USER, "box3", b"Subject: z\r\n\r\nnew\r\n", &[], None)
            .expect("append")
    });
    a.table(&[(
        "",
        lines(&[
            "* 2 EXISTS",
            "* 2 RECENT",
            "* 2 FETCH (UID 2 BODY[TEXT] {5}",
            "new",
            " RFC822.TEXT {5}",
            "new",
            ")",
        ]),
    )])
    .await;
    a.quiet().await;
    a.table(&[(
        "f FETCH 2 FLAGS",
        lines(&["* 2 FETCH (FLAGS (\\Recent))", "f OK FETCH completed"]),
    )])
    .await;
}

/// IMAP4rev2 mode drops \Recent: the RECENT/NEW/OLD search keys and the
/// STATUS item RECENT are BAD (RFC 9051 Appendix E), no RECENT response
/// and no \Recent flag; ENABLE is refused once a mailbox is selected
/// (RFC 5161 3.1) and the session goes on.
#[tokio::test]
async fn rev2_drops_recent_and_enable_needs_authenticated_state() {
    let h = harness();
    deliver(&h, "Subject: one\r\n\r\nfirst\r\n").await;
    let mut c = Client::login(&h).await;
    select(&mut c, "s", "INBOX").await;
    c.table(&[
        (
            "e ENABLE IMAP4rev2",
            lines(&["e BAD [CLIENTBUG] Not allowed in this state"]),
        ),
        (
            "r SEARCH RECENT",
            lines(&["* SEARCH 1", "r OK SEARCH completed"]),
        ),
        ("u UNSELECT", lines(&["u OK UNSELECT completed"])),
        (
            "e ENABLE IMAP4rev2",
            lines(&["* ENABLED IMAP4rev2", "e OK ENABLE completed"]),
        ),
        (
            "t STATUS INBOX (MESSAGES RECENT)",
            lines(&["t BAD [CLIENTBUG] STATUS RECENT is not in IMAP4rev2"]),
        ),
        (
            "l LIST \"\" INBOX RETURN (STATUS (RECENT))",
            lines(&["l BAD [CLIENTBUG] STATUS RECENT is not in IMAP4rev2"]),
        ),
        (
            "t STATUS INBOX (MESSAGES)",
            lines(&["* STATUS INBOX (MESSAGES 1)", "t OK STATUS completed"]),
        ),
    ])
    .await;
    select(&mut c, "s", "INBOX").await;
    for key in ["RECENT", "NEW", "OLD", "OR SEEN NOT (NEW)"] {
        c.table(&[(
            &format!("k SEARCH {key}"),
            lines(&["k BAD [CLIENTBUG] RECENT, NEW and OLD are not search keys in IMAP4rev2"]),
        )])
        .await;
    }
    c.table(&[(
        "k SORT (DATE) UTF-8 NEW",
        lines(&["k BAD [CLIENTBUG] RECENT, NEW and OLD are not search keys in IMAP4rev2"]),
    )])
    .await;
    deliver(&h, "Subject: two\r\n\r\nsecond\r\n").await;
    c.table(&[
        ("n NOOP", lines(&["* 2 EXISTS", "n OK NOOP completed"])),
        (
            "f FETCH 1:* FLAGS",
            lines(&[
                "* 1 FETCH (FLAGS ())",
                "* 2 FETCH (FLAGS ())",
                "f OK FETCH completed",
            ]),
        ),
    ])
    .await;
}

/// QRESYNC: UID in every FETCH (with MODSEQ when \Seen is set by it),
/// HIGHESTMODSEQ on the tagged OK of EXPUNGE, UID EXPUNGE and CLOSE
/// (RFC 7162 3.2.4, 3.2.7 to 3.2.9).
#[tokio::test]
async fn qresync_uid_in_fetch_and_highestmodseq_on_expunge() {
    let h = harness();
    for s in ["a", "b", "c"] {
        deliver(&h, &format!("Subject: {s}\r\n\r\nbody\r\n")).await;
    }
    let mut c = Client::login(&h).await;
    c.table(&[(
        "e ENABLE QRESYNC",
        lines(&["* ENABLED QRESYNC", "e OK ENABLE completed"]),
    )])
    .await;
    select(&mut c, "s", "INBOX").await;
    c.table(&[(
        "f FETCH 2 RFC822.SIZE",
        lines(&["* 2 FETCH (UID 2 RFC822.SIZE 20)", "f OK FETCH completed"]),
    )])
    .await;
    c.send("g FETCH 1 BODY[TEXT]\r\n").await;
    let got = c.text_line().await;
    assert!(got.starts_with("* 1 FETCH (UID 1 BODY[TEXT] {6}"), "{got}");
    assert_eq!(c.text_line().await, "body");
    let flags = c.text_line().await;
    assert_eq!(c.text_line().await, "g OK FETCH completed");
    let m = modseq(&h, "INBOX");
    assert_eq!(flags, format!(" FLAGS (\\Recent \\Seen) MODSEQ ({m}))"));
    c.send("t STORE 1:3 +FLAGS (\\Deleted)\r\n").await;
    for i in 1..=3 {
        let got = c.text_line().await;
        assert!(got.starts_with(&format!("* {i} FETCH (FLAGS (")), "{got}");
        assert!(got.contains(&format!(") UID {i} MODSEQ (")), "{got}");
    }
    assert_eq!(c.text_line().await, "t OK STORE completed");
    c.send("x UID EXPUNGE 3\r\n").await;
    assert_eq!(c.text_line().await, "* VANISHED 3");
    let m = modseq(&h, "INBOX");
    c.table(&[(
        "",
        vec![format!("x OK [HIGHESTMODSEQ {m}] EXPUNGE completed")],
    )])
    .await;
    c.send("y EXPUNGE\r\n").await;
    assert_eq!(c.text_line().await, "* VANISHED 1:2");
    let m = modseq(&h, "INBOX");
    c.table(&[(
        "",
        vec![format!("y OK [HIGHESTMODSEQ {m}] EXPUNGE completed")],
    )])
    .await;
    deliver(&h, "Subject: d\r\n\r\nbody\r\n").await;
    c.send("n NOOP\r\n").await;
    while !c.text_line().await.starts_with("n OK") {}
    c.table(&[(
        "z STORE 1 +FLAGS.SILENT (\\Deleted)",
        lines(&["z OK STORE completed"]),
    )])
    .await;
    c.send("c CLOSE\r\n").await;
    let got = c.text_line().await;
    let m = modseq(&h, "INBOX");
    assert_eq!(got, format!("c OK [HIGHESTMODSEQ {m}] CLOSE completed"));
    assert_eq!(
        off(|| h
            .store
            .folder_snapshot(USER, "INBOX")
            .expect("inbox")
            .messages
            .len()),
        0
    );
}

/// SORT RETURN (SAVE) keeps the result for `$` (SEARCHRES with ESORT);
/// with MIN it keeps the first in sort order. Search contexts end at a
/// re-SELECT of the same mailbox (RFC 5267 4.3); ADDTO's position is 0.
#[tokio::test]
async fn sort_save_and_contexts_end_at_reselect() {
    let h = harness();
    for s in ["c", "a", "b"] {
        deliver(&h, &format!("Subject: {s}\r\n\r\nbody\r\n")).await;
    }
    let mut c = Client::login(&h).await;
    select(&mut c, "s", "INBOX").await;
    c.table(&[
        (
            "a SORT RETURN (SAVE) (SUBJECT) UTF-8 ALL",
            lines(&["a OK SORT completed"]),
        ),
        (
            "f FETCH $ (UID)",
            lines(&[
                "* 1 FETCH (UID 1)",
                "* 2 FETCH (UID 2)",
                "* 3 FETCH (UID 3)",
                "f OK FETCH completed",
            ]),
        ),
        (
            "b SORT RETURN (SAVE MIN) (SUBJECT) UTF-8 ALL",
            lines(&["* ESEARCH (TAG \"b\") MIN 2", "b OK SORT completed"]),
        ),
        (
            "f FETCH $ (UID)",
            lines(&["* 2 FETCH (UID 2)", "f OK FETCH completed"]),
        ),
        (
            "t THREAD ORDEREDSUBJECT UTF-8 $",
            lines(&["* THREAD (2)", "t OK THREAD completed"]),
        ),
        (
            "u SEARCH RETURN (UPDATE) SEEN",
            lines(&["* ESEARCH (TAG \"u\")", "u OK SEARCH completed"]),
        ),
        (
            "v STORE 3 +FLAGS.SILENT (\\Seen)",
            lines(&["* ESEARCH (TAG \"u\") ADDTO (0 3)", "v OK STORE completed"]),
        ),
    ])
    .await;
    select(&mut c, "s", "INBOX").await;
    c.table(&[
        (
            "w STORE 1 +FLAGS.SILENT (\\Seen)",
            lines(&["w OK STORE completed"]),
        ),
        (
            "x CANCELUPDATE \"u\"",
            lines(&["x BAD [CLIENTBUG] No search context u"]),
        ),
    ])
    .await;
}
