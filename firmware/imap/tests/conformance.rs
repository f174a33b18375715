//! IMAP state the conformance tests (imaptest's list, listext, subscribe,
//! select, copy, move, search-flags, fetch scripts) exercise, as our own
//! exchanges: subscriptions that outlive folders, special-use roles,
//! \Recent, COPY/MOVE into the selected mailbox, new keywords announced,
//! NUL bytes in bodies, modified UTF-7 names. Same harness as session.rs:
//! a whole session over an in-memory stream against a real store.

mod common;

use common::*;

/// Sends `cmd` (its first word is the tag) and returns every line up to and
/// including the tagged one.
async fn run(c: &mut Client, cmd: &str) -> String {
    let tag = format!("{} ", cmd.split(' ').next().expect("tag"));
    c.send(&format!("{cmd}\r\n")).await;
    let mut all = String::new();
    loop {
        let l = c.line().await;
        assert!(!l.is_empty(), "closed during {cmd:?}: {all}");
        all.push_str(&l);
        if l.starts_with(&tag) {
            return all;
        }
    }
}

/// Runs a table of (command, exact answer).
async fn table(c: &mut Client, rows: &[(&str, &str)]) {
    for (cmd, want) in rows {
        let got = run(c, cmd).await;
        assert_eq!(got, *want, "{cmd}");
    }
}

/// RFC 3501 6.3.6: DELETE does not remove the subscription; LSUB still
/// shows the name (\Noselect: there is no folder), LIST (SUBSCRIBED) with
/// \NonExistent (RFC 5258 3.4), and a plain LIST does not.
#[tokio::test]
async fn delete_keeps_the_subscription() {
    let h = harness();
    let mut c = Client::login(&h).await;
    table(
        &mut c,
        &[
            ("a CREATE box/t6", "a OK CREATE completed\r\n"),
            ("b SUBSCRIBE box/t6", "b OK completed\r\n"),
            ("c DELETE box/t6", "c OK completed\r\n"),
            (
                "d LSUB \"\" box/*",
                "* LSUB (\\Noselect) \"/\" box/t6\r\nd OK LSUB completed\r\n",
            ),
            (
                "e LIST (SUBSCRIBED) \"\" box/*",
                "* LIST (\\NonExistent \\Subscribed) \"/\" box/t6\r\ne OK LIST completed\r\n",
            ),
            ("f LIST \"\" box/*", "f OK LIST completed\r\n"),
            // Subscribing a name without a folder is allowed, as Dovecot does.
            ("g SUBSCRIBE never/was", "g OK completed\r\n"),
            ("h UNSUBSCRIBE never/was", "h OK completed\r\n"),
            (
                "i UNSUBSCRIBE never/was",
                "i NO [NONEXISTENT] Not subscribed\r\n",
            ),
            // Created again, it is subscribed still.
            ("j CREATE box/t6", "j OK CREATE completed\r\n"),
            (
                "k LIST \"\" box/t6 RETURN (SUBSCRIBED)",
                "* LIST (\\HasNoChildren \\Subscribed) \"/\" box/t6\r\nk OK LIST completed\r\n",
            ),
        ],
    )
    .await;
}

/// A Junk folder deleted and created again is \Junk again (RFC 6154).
#[tokio::test]
async fn a_recreated_junk_folder_gets_its_role_back() {
    let h = harness();
    let mut c = Client::login(&h).await;
    table(
        &mut c,
        &[
            ("a DELETE Junk", "a OK completed\r\n"),
            ("b CREATE Junk", "b OK CREATE completed\r\n"),
            (
                "c LIST (SPECIAL-USE) \"\" J*",
                "* LIST (\\HasNoChildren \\Junk) \"/\" Junk\r\nc OK LIST completed\r\n",
            ),
        ],
    )
    .await;
}

/// LIST-EXTENDED (RFC 5258) as imaptest's listext script drives it.
#[tokio::test]
async fn list_extended_selection_and_return_options() {
    let h = harness();
    deliver(&h, "Subject: one\r\n\r\nfirst\r\n").await;
    let mut c = Client::login(&h).await;
    for (i, name) in [
        "b/t1", "b/t2/t1", "b/t3", "b/t4/t5", "b/t6", "b/t7/t7", "b/t8/t8", "b/t8/t9",
    ]
    .iter()
    .enumerate()
    {
        run(&mut c, &format!("c{i} CREATE {name}")).await;
    }
    for (i, name) in ["b/t1", "b/t2/t1", "b/t6", "b/t7/t7", "b/t8/t8", "b/t8/t9"]
        .iter()
        .enumerate()
    {
        run(&mut c, &format!("s{i} SUBSCRIBE {name}")).await;
    }
    table(
        &mut c,
        &[
            ("d DELETE b/t6", "d OK completed\r\n"),
            (
                "e LIST (RECURSIVEMATCH) \"\" \"\"",
                "e BAD [CLIENTBUG] RECURSIVEMATCH needs another selection option\r\n",
            ),
            (
                "f LIST (RECURSIVEMATCH REMOTE) \"\" \"\"",
                "f BAD [CLIENTBUG] RECURSIVEMATCH needs another selection option\r\n",
            ),
            ("g LIST (REMOTE) \"\" b", "* LIST (\\HasChildren) \"/\" b\r\ng OK LIST completed\r\n"),
            (
                "h LIST (SUBSCRIBED RECURSIVEMATCH) \"\" b/t2% RETURN (CHILDREN)",
                "* LIST (\\HasChildren) \"/\" b/t2 (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\nh OK LIST completed\r\n",
            ),
            (
                "i LIST (SUBSCRIBED RECURSIVEMATCH) \"\" b*t7",
                "* LIST (\\HasNoChildren \\Subscribed) \"/\" b/t7/t7\r\ni OK LIST completed\r\n",
            ),
            (
                "j LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (b/t2 b/t2/t1)",
                "* LIST (\\HasNoChildren \\Subscribed) \"/\" b/t2/t1\r\nj OK LIST completed\r\n",
            ),
            (
                "k LIST \"\" b/% RETURN (CHILDREN SUBSCRIBED)",
                "* LIST (\\HasNoChildren \\Subscribed) \"/\" b/t1\r\n\
                 * LIST (\\HasChildren) \"/\" b/t2\r\n\
                 * LIST (\\HasNoChildren) \"/\" b/t3\r\n\
                 * LIST (\\HasChildren) \"/\" b/t4\r\n\
                 * LIST (\\HasChildren) \"/\" b/t7\r\n\
                 * LIST (\\HasChildren) \"/\" b/t8\r\n\
                 k OK LIST completed\r\n",
            ),
            (
                "l LIST \"\" INBOX RETURN (STATUS (MESSAGES UNSEEN) SPECIAL-USE)",
                "* LIST (\\HasNoChildren) \"/\" INBOX\r\n* STATUS INBOX (MESSAGES 1 UNSEEN 1)\r\nl OK LIST completed\r\n",
            ),
        ],
    )
    .await;
}

/// The UIDVALIDITY of a folder, for exchanges that name it.
async fn uidvalidity(c: &mut Client, folder: &str) -> String {
    let s = run(c, &format!("v STATUS {folder} (UIDVALIDITY)")).await;
    s.split("UIDVALIDITY ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .expect("UIDVALIDITY")
        .to_string()
}

/// RFC 3501 2.3.2 as Dovecot does it: \Recent in exactly one session, the
/// first to SELECT (not EXAMINE) after the message arrived, or the selected
/// session that notices new mail first; SEARCH RECENT/NEW/OLD and STATUS
/// (RECENT: not yet claimed by any session) follow.
#[tokio::test]
async fn recent_belongs_to_one_session() {
    let h = harness();
    deliver(&h, "Subject: one\r\n\r\n1\r\n").await;
    deliver(&h, "Subject: two\r\n\r\n2\r\n").await;
    let mut a = Client::login(&h).await;
    let mut b = Client::login(&h).await;
    let mut e = Client::login(&h).await;
    table(
        &mut e,
        &[(
            "s STATUS INBOX (MESSAGES RECENT)",
            "* STATUS INBOX (MESSAGES 2 RECENT 2)\r\ns OK STATUS completed\r\n",
        )],
    )
    .await;
    // EXAMINE shows what no session took as recent, and takes nothing.
    let mut x = Client::login(&h).await;
    let sel = run(&mut x, "x EXAMINE INBOX").await;
    assert!(sel.contains("* 2 EXISTS\r\n* 2 RECENT\r\n"), "{sel}");
    run(&mut x, "c CLOSE").await;
    let sel = run(&mut a, "s SELECT INBOX").await;
    assert!(sel.contains("* 2 EXISTS\r\n* 2 RECENT\r\n"), "{sel}");
    let sel = run(&mut b, "s SELECT INBOX").await;
    assert!(sel.contains("* 2 EXISTS\r\n* 0 RECENT\r\n"), "{sel}");
    table(
        &mut a,
        &[
            (
                "f FETCH 1:2 FLAGS",
                "* 1 FETCH (FLAGS (\\Recent))\r\n* 2 FETCH (FLAGS (\\Recent))\r\nf OK FETCH completed\r\n",
            ),
            (
                "t STORE 1 +FLAGS (\\Seen)",
                "* 1 FETCH (FLAGS (\\Recent \\Seen))\r\nt OK STORE completed\r\n",
            ),
        ],
    )
    .await;
    deliver(&h, "Subject: three\r\n\r\n3\r\n").await;
    table(
        &mut e,
        &[(
            "s STATUS INBOX (RECENT)",
            "* STATUS INBOX (RECENT 1)\r\ns OK STATUS completed\r\n",
        )],
    )
    .await;
    // The first selected session to notice new mail has it as \Recent.
    table(
        &mut a,
        &[
            (
                "n NOOP",
                "* 3 EXISTS\r\n* 3 RECENT\r\nn OK NOOP completed\r\n",
            ),
            (
                "r SEARCH RECENT",
                "* SEARCH 1 2 3\r\nr OK SEARCH completed\r\n",
            ),
            ("w SEARCH NEW", "* SEARCH 2 3\r\nw OK SEARCH completed\r\n"),
            ("o SEARCH OLD", "* SEARCH\r\no OK SEARCH completed\r\n"),
        ],
    )
    .await;
    table(
        &mut b,
        &[
            ("n NOOP", "* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n* 3 EXISTS\r\n* 0 RECENT\r\nn OK NOOP completed\r\n"),
            ("r SEARCH RECENT", "* SEARCH\r\nr OK SEARCH completed\r\n"),
            ("o SEARCH OLD", "* SEARCH 1 2 3\r\no OK SEARCH completed\r\n"),
            (
                "s STATUS INBOX (RECENT)",
                "* STATUS INBOX (RECENT 0)\r\ns OK STATUS completed\r\n",
            ),
        ],
    )
    .await;
}

/// COPY and MOVE into the selected mailbox (RFC 6851 3.3: MOVE to the
/// same mailbox gives the messages new UIDs); the copies are \Recent in
/// this session.
#[tokio::test]
async fn copy_and_move_into_the_selected_mailbox() {
    let h = harness();
    deliver(&h, "Subject: one\r\n\r\n1\r\n").await;
    deliver(&h, "Subject: two\r\n\r\n2\r\n").await;
    let mut c = Client::login(&h).await;
    let v = uidvalidity(&mut c, "INBOX").await;
    run(&mut c, "s SELECT INBOX").await;
    table(
        &mut c,
        &[
            (
                "c COPY 1 INBOX",
                &format!("* 3 EXISTS\r\n* 3 RECENT\r\nc OK [COPYUID {v} 1 3] COPY completed\r\n"),
            ),
            (
                "m MOVE 1 INBOX",
                &format!(
                    "* OK [COPYUID {v} 1 4] Moved\r\n* 1 EXPUNGE\r\n* 3 EXISTS\r\n* 3 RECENT\r\nm OK MOVE completed\r\n"
                ),
            ),
            (
                "u UID MOVE 2 INBOX",
                &format!(
                    "* OK [COPYUID {v} 2 5] Moved\r\n* 1 EXPUNGE\r\n* 3 EXISTS\r\n* 3 RECENT\r\nu OK MOVE completed\r\n"
                ),
            ),
            (
                "f FETCH 1:* (UID FLAGS)",
                "* 1 FETCH (UID 3 FLAGS (\\Recent))\r\n* 2 FETCH (UID 4 FLAGS (\\Recent))\r\n* 3 FETCH (UID 5 FLAGS (\\Recent))\r\nf OK FETCH completed\r\n",
            ),
        ],
    )
    .await;
}

/// RFC 3501 4.3: no NUL in a literal. As Dovecot, each NUL of the message
/// goes out as 0x80, byte for byte, so RFC822.SIZE and the literal agree.
#[tokio::test]
async fn nul_bytes_are_never_sent_raw() {
    let h = harness();
    deliver(&h, "Subject: nul\r\n\r\na\0b\0\r\n").await;
    let mut c = Client::login(&h).await;
    run(&mut c, "s SELECT INBOX").await;
    let f = run(
        &mut c,
        "f FETCH 1 (RFC822.SIZE BODY.PEEK[] BODY.PEEK[TEXT] RFC822.TEXT)",
    )
    .await;
    assert!(!f.contains('\0'), "{f:?}");
    let size: usize = f
        .split("RFC822.SIZE ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("size");
    assert!(f.contains(&format!("BODY[] {{{size}}}\r\n")), "{f:?}");
    // 0x80 is not UTF-8: the test client shows it as U+FFFD.
    assert!(
        f.contains("BODY[TEXT] {6}\r\na\u{FFFD}b\u{FFFD}\r\n")
            && f.contains("RFC822.TEXT {6}\r\na\u{FFFD}b\u{FFFD}\r\n"),
        "{f:?}"
    );
}

/// A name in modified UTF-7 that is not the canonical form (RFC 3501
/// 5.1.3) is refused as Dovecot refuses it, not silently rewritten.
#[tokio::test]
async fn non_canonical_modified_utf7_is_refused() {
    let h = harness();
    let mut c = Client::login(&h).await;
    let no = "NO [CANNOT] Mailbox name is not valid modified UTF-7\r\n";
    table(
        &mut c,
        &[
            ("a CREATE &AGE-", &format!("a {no}")),
            ("b CREATE &AOQ-&APY-", &format!("b {no}")),
            ("c SELECT Entw&APw-&AGE-", &format!("c {no}")),
            ("d CREATE &AOQA9g-", "d OK CREATE completed\r\n"),
            (
                "e LIST \"\" &AOQA9g-",
                "* LIST (\\HasNoChildren) \"/\" &AOQA9g-\r\ne OK LIST completed\r\n",
            ),
        ],
    )
    .await;
}

/// RFC 3501 7.2.6: a keyword new to the mailbox is announced by `* FLAGS`
/// and `* OK [PERMANENTFLAGS]` before the FETCH that shows it, in the
/// session that stored it and in one that sees it arrive.
#[tokio::test]
async fn a_new_keyword_is_announced_before_it_is_used() {
    let h = harness();
    deliver(&h, "Subject: one\r\n\r\n1\r\n").await;
    let mut a = Client::login(&h).await;
    let mut b = Client::login(&h).await;
    run(&mut a, "s SELECT INBOX").await;
    run(&mut b, "s EXAMINE INBOX").await;
    let sys = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";
    table(
        &mut a,
        &[
            (
                "t STORE 1 +FLAGS ($Work)",
                &format!(
                    "* FLAGS ({sys} $Work)\r\n* OK [PERMANENTFLAGS ({sys} $Work \\*)] Flags permitted\r\n\
                     * 1 FETCH (FLAGS (\\Recent $Work))\r\nt OK STORE completed\r\n"
                ),
            ),
            // Known now: no second announcement.
            (
                "u STORE 1 FLAGS ($Work)",
                "* 1 FETCH (FLAGS (\\Recent $Work))\r\nu OK STORE completed\r\n",
            ),
        ],
    )
    .await;
    table(
        &mut b,
        &[(
            "n NOOP",
            &format!(
                "* FLAGS ({sys} $Work)\r\n* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n\
                 * 1 FETCH (UID 1 FLAGS ($Work))\r\nn OK NOOP completed\r\n"
            ),
        )],
    )
    .await;
}
