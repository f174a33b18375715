//! Whole IMAP sessions over an in-memory duplex stream against a real store
//! in a temporary folder, written as the exchanges they check.

mod common;

use common::*;
use mxrack_imap::ImapService;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_literal_split_across_reads_is_assembled() {
    let h = harness();
    let mut c = Client::start(&h).await;
    c.send("a LOGIN {14}\r\n").await;
    assert!(c.line().await.starts_with("+ "));
    // The literal arrives in pieces, the rest of the line after it.
    c.send("jo@exam").await;
    tokio::task::yield_now().await;
    c.send("ple.net {9+}\r\npw-jo").await;
    c.send("-123\r\n").await;
    c.until("a OK [CAPABILITY").await;
}

#[tokio::test]
async fn select_fetch_store_expunge() {
    let h = harness();
    deliver(&h, "Subject: one\r\n\r\nfirst\r\n").await;
    deliver(&h, "Subject: two\r\n\r\nsecond\r\n").await;
    let mut c = Client::login(&h).await;
    c.send("s SELECT INBOX\r\n").await;
    let sel = c.until("s OK [READ-WRITE]").await;
    assert!(sel.contains("* 2 EXISTS\r\n"), "{sel}");
    assert!(sel.contains("* OK [UIDNEXT 3]"), "{sel}");
    c.send("f FETCH 1:* (UID FLAGS)\r\n").await;
    let f = c.until("f OK").await;
    assert!(
        f.contains("* 1 FETCH (UID 1 FLAGS (\\Recent))")
            && f.contains("* 2 FETCH (UID 2 FLAGS (\\Recent))"),
        "{f}"
    );
    c.send("b FETCH 2 BODY[TEXT]\r\n").await;
    let b = c.until("b OK").await;
    assert!(b.contains("BODY[TEXT] {8}\r\nsecond\r\n"), "{b}");
    assert!(
        b.contains("FLAGS (\\Recent \\Seen)"),
        "BODY[] sets \\Seen: {b}"
    );
    c.send("t STORE 1 +FLAGS (\\Deleted)\r\n").await;
    assert!(
        c.until("t OK")
            .await
            .contains("* 1 FETCH (FLAGS (\\Recent \\Deleted))")
    );
    c.send("e EXPUNGE\r\n").await;
    let e = c.until("e OK").await;
    assert!(e.starts_with("* 1 EXPUNGE\r\n"), "{e}");
    c.send("u UID FETCH 1:* UID\r\n").await;
    let u = c.until("u OK").await;
    assert!(
        u.contains("* 1 FETCH (UID 2)") && !u.contains("UID 1)"),
        "{u}"
    );
}

#[tokio::test]
async fn another_sessions_changes_arrive_and_idle_wakes() {
    let h = harness();
    deliver(&h, "Subject: one\r\n\r\nfirst\r\n").await;
    let mut a = Client::login(&h).await;
    let mut b = Client::login(&h).await;
    a.send("s SELECT INBOX\r\n").await;
    a.until("s OK").await;
    b.send("s SELECT INBOX\r\n").await;
    b.until("s OK").await;
    b.send("i IDLE\r\n").await;
    assert!(b.line().await.starts_with("+ "));
    deliver(&h, "Subject: two\r\n\r\nsecond\r\n").await;
    assert_eq!(b.line().await, "* 2 EXISTS\r\n");
    // B saw it arrive first: it is \Recent in B (RFC 3501 2.3.2).
    assert_eq!(b.line().await, "* 1 RECENT\r\n");
    a.send("t STORE 1 +FLAGS.SILENT (\\Flagged)\r\n").await;
    a.until("t OK").await;
    assert_eq!(b.line().await, "* 1 FETCH (UID 1 FLAGS (\\Flagged))\r\n");
    b.send("DONE\r\n").await;
    b.until("i OK").await;
    a.send("x STORE 1 +FLAGS.SILENT (\\Deleted)\r\nx2 EXPUNGE\r\n")
        .await;
    a.until("x2 OK").await;
    b.send("n NOOP\r\n").await;
    let n = b.until("n OK").await;
    assert!(n.contains("* 1 EXPUNGE\r\n"), "{n}");
}

#[tokio::test]
async fn no_expunge_responses_during_fetch() {
    let h = harness();
    deliver(&h, "Subject: one\r\n\r\nfirst\r\n").await;
    deliver(&h, "Subject: two\r\n\r\nsecond\r\n").await;
    let mut a = Client::login(&h).await;
    let mut b = Client::login(&h).await;
    for c in [&mut a, &mut b] {
        c.send("s SELECT INBOX\r\n").await;
        c.until("s OK").await;
    }
    a.send("x STORE 1 +FLAGS.SILENT (\\Deleted)\r\nx2 EXPUNGE\r\n")
        .await;
    a.until("x2 OK").await;
    // RFC 3501 7.4.1: not during FETCH; sequence numbers stay as B knows them.
    b.send("f FETCH 2 (UID)\r\n").await;
    let f = b.until("f OK").await;
    assert!(
        !f.contains("EXPUNGE") && f.contains("* 2 FETCH (UID 2)"),
        "{f}"
    );
    b.send("n NOOP\r\n").await;
    assert!(b.until("n OK").await.contains("* 1 EXPUNGE"));
}

#[tokio::test]
async fn bad_input_gets_bad_and_limits_hold() {
    let h = harness();
    deliver(&h, "Subject: one\r\n\r\nfirst\r\n").await;
    let mut c = Client::login(&h).await;
    c.send("s SELECT INBOX\r\n").await;
    c.until("s OK").await;
    for (cmd, want) in [
        ("a FOO\r\n", "a BAD"),
        ("b FETCH 0 FLAGS\r\n", "b BAD"),
        ("c FETCH 5 FLAGS\r\n", "c BAD"),
        ("d FETCH 1 (FLAGS\r\n", "d BAD"),
        ("e SELECT\r\n", "e BAD"),
    ] {
        c.send(cmd).await;
        let got = c.line().await;
        assert!(got.starts_with(want), "{cmd:?} gave {got:?}");
    }
    // A synchronizing literal over the limit is refused before it is sent.
    c.send("f APPEND INBOX {70000}\r\n").await;
    assert!(c.line().await.starts_with("f NO [TOOBIG]"));
    c.send("g NOOP\r\n").await;
    c.until("g OK").await;
    // Nonexistent UIDs are not an error.
    c.send("h UID FETCH 99 FLAGS\r\n").await;
    assert_eq!(c.line().await, "h OK FETCH completed\r\n");
}

#[tokio::test]
async fn login_failures_are_limited_per_network_and_account() {
    let h = harness();
    let mut c = Client::start(&h).await;
    for i in 0..3 {
        c.send(&format!("f{i} LOGIN {USER} wrong\r\n")).await;
        assert!(c.line().await.contains("NO [AUTHENTICATIONFAILED]"));
    }
    c.send(&format!("g LOGIN {USER} {PASS}\r\n")).await;
    assert!(c.line().await.starts_with("g NO [UNAVAILABLE]"));
}

#[tokio::test]
async fn append_copy_and_the_inbox_rename_rule() {
    let h = harness();
    let mut c = Client::login(&h).await;
    c.send("a APPEND INBOX (\\Seen) \"17-Jul-1996 02:44:25 -0700\" {21+}\r\nSubject: x\r\n\r\nhello\r\n\r\n").await;
    let a = c.until("a OK").await;
    assert!(a.contains("[APPENDUID "), "{a}");
    c.send("m APPEND Nowhere {3+}\r\nabc\r\n").await;
    assert!(c.line().await.starts_with("m NO [TRYCREATE]"));
    c.send("s SELECT INBOX\r\n").await;
    c.until("s OK").await;
    c.send("f FETCH 1 (INTERNALDATE FLAGS BODY.PEEK[])\r\n")
        .await;
    let f = c.until("f OK").await;
    assert!(
        f.contains("INTERNALDATE \"17-Jul-1996 09:44:25 +0000\""),
        "{f}"
    );
    assert!(
        f.contains("BODY[] {21}\r\nSubject: x\r\n\r\nhello\r\n)"),
        "{f}"
    );
    c.send("c COPY 1 Trash\r\n").await;
    assert!(c.until("c OK").await.contains("[COPYUID "));
    c.send("u UNSELECT\r\nr RENAME INBOX Old\r\n").await;
    c.until("r OK").await;
    c.send("t STATUS INBOX (MESSAGES)\r\nt2 STATUS Old (MESSAGES)\r\n")
        .await;
    let t = c.until("t2 OK").await;
    assert!(
        t.contains("* STATUS INBOX (MESSAGES 0)") && t.contains("* STATUS Old (MESSAGES 1)"),
        "{t}"
    );
}

#[tokio::test]
async fn shutdown_says_bye() {
    let h = harness();
    let mut c = Client::login(&h).await;
    h.shutdown.trigger();
    assert!(c.line().await.starts_with("* BYE [UNAVAILABLE]"));
}

/// Before login a literal is limited to what LOGIN/AUTHENTICATE can need
/// (8 KiB, 4096 bytes non-synchronizing: LITERAL-), refused before a byte of
/// it is read; `a LOGIN {50000000+}` used to buffer 50 MB per connection.
#[tokio::test]
async fn literals_before_login_are_small() {
    let h = harness();
    let mut c = Client::start(&h).await;
    c.send("c CAPABILITY\r\n").await;
    let caps = c.until("c OK").await;
    assert!(
        caps.contains(" LITERAL- ") && !caps.contains("LITERAL+"),
        "{caps}"
    );
    // Synchronizing, over 8 KiB (but under max_literal_bytes): NO, no "+".
    c.send("a LOGIN {8193}\r\n").await;
    let l = c.line().await;
    assert!(l.starts_with("a NO [TOOBIG]"), "{l}");
    // At 8 KiB it is read.
    c.send("b LOGIN {8192}\r\n").await;
    assert!(c.line().await.starts_with("+ "));
    c.send(&"x".repeat(8192)).await;
    c.send(" y\r\n").await;
    let l = c.line().await;
    assert!(l.starts_with("b NO"), "{l}");
    // Still a working session: a real login, then LITERAL+ and large literals.
    c.send(&format!("l LOGIN {USER} {{{}+}}\r\n{PASS}\r\n", PASS.len()))
        .await;
    let ok = c.until("l OK").await;
    assert!(ok.contains("LITERAL+"), "{ok}");
    c.send("p APPEND INBOX {20000}\r\n").await;
    assert!(c.line().await.starts_with("+ "));
    c.send(&format!(
        "Subject: x\r\n\r\n{}\r\n\r\n",
        "y".repeat(20000 - 16)
    ))
    .await;
    c.until("p OK").await;

    // Non-synchronizing over LITERAL-'s 4096 before login: BAD, then BYE.
    let mut c = Client::start(&h).await;
    c.send("z LOGIN {50000000+}\r\nxxxxxxxx").await;
    let l = c.line().await;
    assert!(l.starts_with("z BAD [TOOBIG]"), "{l}");
    assert!(c.line().await.starts_with("* BYE"));
    assert_eq!(c.line().await, "", "closed");
    // 4096 non-synchronizing is fine.
    let mut c = Client::start(&h).await;
    c.send(&format!("l LOGIN {{4096+}}\r\n{} x\r\n", "u".repeat(4096)))
        .await;
    assert!(c.line().await.starts_with("l NO"));
}

/// The files in the store's msg/ folder.
fn msg_files(h: &Harness) -> usize {
    std::fs::read_dir(h._dir.path().join("msg"))
        .expect("msg dir")
        .count()
}

/// A message of `len` bytes, CRLF lines, not periodic in any chunk size.
fn message(len: usize) -> Vec<u8> {
    let mut out = b"Subject: streamed\r\n\r\n".to_vec();
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(format!("line {i} {}\r\n", "z".repeat(i % 97)).as_bytes());
        i += 1;
    }
    out.truncate(len - 2);
    out.extend_from_slice(b"\r\n");
    out
}

/// APPEND's message goes to the store in chunks: a message far larger
/// than any buffer (and than other commands' 64 KiB literals) arrives
/// byte for byte, synchronizing or not, sent in odd pieces.
#[tokio::test]
async fn a_large_append_is_streamed_byte_for_byte() {
    let h = harness_with_literal_max(8 << 20);
    let mut c = Client::login(&h).await;
    let big = message(3 << 20);
    c.send(&format!("a APPEND INBOX (\\Flagged) {{{}}}\r\n", big.len()))
        .await;
    assert!(c.line().await.starts_with("+ "));
    for piece in big.chunks(77_777) {
        c.stream.write_all(piece).await.expect("write");
    }
    c.send("\r\n").await;
    let a = c.until("a OK").await;
    assert!(a.contains("[APPENDUID "), "{a}");
    let small = message(100_000);
    c.send("b APPEND {5}\r\n").await;
    assert!(c.line().await.starts_with("+ "));
    c.send(&format!("Draft {{{}+}}\r\n", small.len())).await;
    // Drafts does not exist yet: refused, the literal read and dropped.
    c.stream.write_all(&small).await.expect("write");
    c.send("\r\n").await;
    assert!(c.line().await.starts_with("b NO [TRYCREATE]"));
    c.send("c CREATE Draft\r\n").await;
    c.until("c OK").await;
    c.send("d APPEND {5}\r\n").await;
    assert!(c.line().await.starts_with("+ "));
    c.send(&format!("Draft {{{}+}}\r\n", small.len())).await;
    c.stream.write_all(&small).await.expect("write");
    c.send("\r\n").await;
    c.until("d OK").await;
    off(|| {
        let inbox = h.store.folder_snapshot(USER, "INBOX").expect("inbox");
        assert_eq!(inbox.messages.len(), 1);
        assert_eq!(inbox.messages[0].flags, vec!["\\Flagged".to_string()]);
        assert!(h.store.read_blob(inbox.messages[0].blob).expect("read") == big);
        let draft = h.store.folder_snapshot(USER, "Draft").expect("draft");
        assert!(h.store.read_blob(draft.messages[0].blob).expect("read") == small);
    });
    assert_eq!(msg_files(&h), 2);
    // Other commands keep small literals.
    c.send("s SELECT INBOX\r\ne SEARCH TEXT {70000}\r\n").await;
    let e = c.until("e ").await;
    assert!(e.contains("e NO [TOOBIG]"), "{e}");
}

#[tokio::test]
async fn an_append_is_refused_before_its_message_is_read() {
    let h = harness_with_literal_max(8 << 20);
    off(|| {
        h.store
            .mailbox_set_quota(USER, Some(1 << 20))
            .expect("quota")
    });
    let mut c = Client::login(&h).await;
    // Over the quota by its announced size: NO instead of "+".
    c.send("a APPEND INBOX {2000000}\r\n").await;
    assert!(c.line().await.starts_with("a NO [OVERQUOTA]"));
    // Malformed arguments: BAD instead of "+".
    c.send("b APPEND INBOX (\\Seen {10}\r\n").await;
    assert!(c.line().await.starts_with("b BAD"));
    // Over imap.max_literal_bytes: TOOBIG.
    c.send("c APPEND INBOX {9000000}\r\n").await;
    assert!(c.line().await.starts_with("c NO [TOOBIG]"));
    // Something after the message: BAD, nothing stored.
    c.send("d APPEND INBOX {12+}\r\nSubject: x\r\n junk\r\n")
        .await;
    let d = c.line().await;
    assert!(d.starts_with("d BAD"), "{d}");
    c.send("e NOOP\r\n").await;
    c.until("e OK").await;
    assert_eq!(msg_files(&h), 0);
    assert!(off(|| h
        .store
        .folder_snapshot(USER, "INBOX")
        .expect("inbox")
        .messages
        .is_empty()));
}

#[tokio::test]
async fn a_client_gone_mid_append_leaves_no_file() {
    let h = harness_with_literal_max(8 << 20);
    let mut c = Client::login(&h).await;
    c.send("a APPEND INBOX {5000000}\r\n").await;
    assert!(c.line().await.starts_with("+ "));
    c.stream.write_all(&message(1 << 20)).await.expect("write");
    c.stream.shutdown().await.expect("shutdown");
    // The session removes the file, then closes.
    assert_eq!(c.line().await, "");
    assert_eq!(msg_files(&h), 0);
    assert!(off(|| h
        .store
        .folder_snapshot(USER, "INBOX")
        .expect("inbox")
        .messages
        .is_empty()));
}

// --- Deadlines per command and per phase (issue 10) -------------------------

/// Sends `chunks` over and over with `pause` between them until the server
/// closes; returns what it wrote and the time from the first chunk to the
/// close (paused time: minutes pass in no time).
async fn trickle_until_closed(
    c: Client,
    chunks: &'static [&'static str],
    pause: Duration,
) -> (String, Duration) {
    let (mut from_server, mut to_server) = tokio::io::split(c.stream);
    let start = tokio::time::Instant::now();
    tokio::spawn(async move {
        for chunk in chunks.iter().cycle() {
            if to_server.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(pause).await;
        }
    });
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(3600), from_server.read_to_end(&mut got))
        .await
        .expect("closed within the hour")
        .expect("read");
    (String::from_utf8_lossy(&got).into_owned(), start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn the_not_authenticated_state_is_cut_at_the_login_deadline() {
    let h = harness();
    let c = Client::start(&h).await;
    // Whole commands, each well within the idle and command deadlines.
    let (got, took) = trickle_until_closed(c, &["a NOOP\r\n"], Duration::from_secs(20)).await;
    assert_eq!(
        got.matches("a OK").count(),
        3,
        "NOOPs at 0, 20, 40 s: {got}"
    );
    assert!(
        got.ends_with("* BYE Autologout; idle for too long\r\n"),
        "{got}"
    );
    assert!(
        (Duration::from_secs(60)..=Duration::from_secs(61)).contains(&took),
        "cut after {took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_literal_trickled_before_login_is_cut_at_the_login_deadline() {
    let h = harness();
    let c = Client::start(&h).await;
    // Two NOOPs (0 and 20 s), then at 40 s a LOGIN whose literal trickles:
    // cut at 60 s from the connection, not 60 s from the LOGIN.
    let bytes: &[&str] = &[
        "a NOOP\r\n",
        "a NOOP\r\n",
        "b LOGIN {12}\r\n",
        "j",
        "o",
        "@",
        "e",
        "x",
    ];
    let (got, took) = trickle_until_closed(c, bytes, Duration::from_secs(20)).await;
    assert!(got.contains("+ "), "{got}");
    assert!(
        got.ends_with("* BYE Autologout; idle for too long\r\n"),
        "{got}"
    );
    assert!(took <= Duration::from_secs(61), "cut after {took:?}");
}

/// The APPEND message literal is streamed to the store in chunks
/// (`append.rs`), outside `read_command`: it is still part of the command,
/// so a message trickled in, each piece well within the idle time, is cut
/// at the command deadline from the command's first byte, and nothing of it
/// stays. Real time (the login runs on the Argon2 pool), a 2 s deadline.
#[tokio::test]
async fn an_append_message_trickled_in_is_cut_at_the_command_deadline() {
    let mut h = harness_with_literal_max(8 << 20);
    h.svc = Arc::new(ImapService {
        hostname: h.svc.hostname.clone(),
        limits: mxrack_config::Imap {
            command_timeout_secs: 2,
            ..h.svc.limits.clone()
        },
        store: h.store.clone(),
        tls: None,
        auth: h.svc.auth.clone(),
        scorer: None,
    });
    let mut c = Client::login(&h).await;
    // Within the deadline an APPEND goes through as before.
    let small = message(10_000);
    c.send(&format!("a APPEND INBOX {{{}+}}\r\n", small.len()))
        .await;
    c.stream.write_all(&small).await.expect("write");
    c.send("\r\n").await;
    c.until("a OK").await;
    assert_eq!(msg_files(&h), 1);
    let start = tokio::time::Instant::now();
    c.send("b APPEND INBOX {300000}\r\n").await;
    assert!(c.line().await.starts_with("+ "));
    let piece = message(1000);
    let mut rest = Vec::new();
    for _ in 0..40 {
        if c.stream.write_all(&piece).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1), c.stream.read_buf(&mut rest)).await
            && n == 0
        {
            break;
        }
    }
    let mut tail = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.stream.read_to_end(&mut tail))
        .await
        .expect("closed in time")
        .expect("read");
    rest.extend_from_slice(&tail);
    let took = start.elapsed();
    let got = String::from_utf8_lossy(&rest);
    assert_eq!(got, "* BYE Autologout; command took too long\r\n");
    assert!(
        (Duration::from_secs(2)..Duration::from_secs(4)).contains(&took),
        "cut after {took:?}"
    );
    // The unfinished message's file is gone; the first one stays.
    assert_eq!(msg_files(&h), 1);
    assert_eq!(
        off(|| h
            .store
            .folder_snapshot(USER, "INBOX")
            .expect("inbox")
            .messages
            .len()),
        1
    );
}

/// RFC 3501 6.3.9: a subscribed child whose parent is not subscribed shows
/// the parent with \Noselect to LSUB "%" (which cannot reach the child);
/// "*" reaches the child itself. Lines come in folder creation order.
#[tokio::test]
async fn lsub_shows_an_unsubscribed_parent_as_noselect() {
    let h = harness();
    let mut c = Client::login(&h).await;
    for (t, cmd) in [
        ("c1", "CREATE Lists/Rust"),
        ("c2", "CREATE Lists/Go/Old"),
        ("c3", "CREATE Notes"),
        ("s1", "SUBSCRIBE Lists/Rust"),
        ("s2", "SUBSCRIBE Lists/Go/Old"),
        ("s3", "SUBSCRIBE Notes"),
    ] {
        c.send(&format!("{t} {cmd}\r\n")).await;
        c.until(&format!("{t} OK")).await;
    }
    // The default folders (INBOX, Sent, ...) are subscribed and come first.
    c.send("l1 LSUB \"\" %\r\n").await;
    let l1 = c.until("l1 OK").await;
    assert!(
        l1.starts_with("* LSUB () \"/\" INBOX\r\n")
            && l1.ends_with(
                "* LSUB () \"/\" Junk\r\n* LSUB (\\Noselect) \"/\" Lists\r\n* LSUB () \"/\" Notes\r\nl1 OK LSUB completed\r\n"
            ),
        "{l1}"
    );
    c.send("l2 LSUB \"\" Lists/%\r\n").await;
    assert_eq!(
        c.until("l2 OK").await,
        "* LSUB () \"/\" Lists/Rust\r\n* LSUB (\\Noselect) \"/\" Lists/Go\r\nl2 OK LSUB completed\r\n"
    );
    c.send("l3 LSUB \"\" Lists*\r\n").await;
    assert_eq!(
        c.until("l3 OK").await,
        "* LSUB () \"/\" Lists/Rust\r\n* LSUB () \"/\" Lists/Go/Old\r\nl3 OK LSUB completed\r\n"
    );
}

/// Odd but valid atoms as mailbox names (RFC 3501 9 atom-char): a name that
/// is not modified UTF-7 ("&'" starts no valid base64 run, RFC 3501 5.1.3)
/// cannot exist, so SELECT gets NO, not BAD, and LIST answers nothing.
#[tokio::test]
async fn odd_atoms_as_mailbox_names_get_no_not_bad() {
    let h = harness();
    let mut c = Client::login(&h).await;
    let table = [
        ("a1 LIST \"\" ~foo", "a1 OK LIST completed\r\n"),
        ("a2 SELECT ~foo", "a2 NO [NONEXISTENT]"),
        (
            "a3 SELECT !#$&'+,-.0123456789:;<=>?@^_`|[}",
            "a3 NO [CANNOT] Mailbox name is not valid modified UTF-7\r\n",
        ),
        (
            "a4 LIST \"\" !#$&'+,-.0123456789:;<=>?@^_`|[}%*",
            "a4 OK LIST completed\r\n",
        ),
        (
            "a5 STATUS &' (MESSAGES)",
            "a5 NO [CANNOT] Mailbox name is not valid modified UTF-7\r\n",
        ),
    ];
    for (cmd, want) in table {
        c.send(&format!("{cmd}\r\n")).await;
        let tag = &cmd[..3];
        let got = c.until(tag).await;
        assert!(got.starts_with(want), "{cmd}\n got {got:?}\nwant {want:?}");
    }
}

/// A message file that cannot be read fails SEARCH (and SORT) criteria
/// that need its content with NO; it never just drops out of the result as
/// "no match". SORT and THREAD keys and criteria that need no content
/// still answer.
#[tokio::test]
async fn a_message_that_cannot_be_read_fails_search_not_silently() {
    let h = harness();
    deliver(&h, "Subject: one\r\n\r\nneedle here\r\n").await;
    deliver(&h, "Subject: two\r\n\r\nneedle too\r\n").await;
    let mut c = Client::login(&h).await;
    c.send("s SELECT INBOX\r\n").await;
    c.until("s OK").await;
    c.send("a SEARCH BODY needle\r\n").await;
    assert!(c.until("a OK").await.contains("* SEARCH 1 2\r\n"));
    // The second message's file cannot be read (a fault, not "gone"): a
    // folder stands where the file was.
    let mut files: Vec<_> = std::fs::read_dir(h._dir.path().join("msg"))
        .expect("msg dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let second = files.last().expect("a file");
    std::fs::remove_file(second).expect("remove");
    std::fs::create_dir(second).expect("a folder in its place");
    for (cmd, tag) in [
        ("b SEARCH BODY needle\r\n", "b "),
        ("e UID SEARCH TEXT needle\r\n", "e "),
        ("g SORT (SUBJECT) UTF-8 BODY needle\r\n", "g "),
    ] {
        c.send(cmd).await;
        let out = c.until(tag).await;
        let last = out.lines().last().unwrap_or_default();
        assert!(last.starts_with(&format!("{tag}NO")), "{cmd}: {out}");
        assert!(
            !out.contains("* SEARCH 1\r\n") && !out.contains("* SORT"),
            "{out}"
        );
    }
    // No content needed: still answered.
    c.send("f SEARCH ALL\r\n").await;
    assert!(c.until("f OK").await.contains("* SEARCH 1 2\r\n"));
    // SORT and THREAD on header keys only still list the folder: the
    // unreadable message is sorted by what the index knows.
    c.send("c SORT (SUBJECT) UTF-8 ALL\r\n").await;
    let sorted = c.until("c OK").await;
    assert!(
        sorted.contains("* SORT 2 1\r\n") || sorted.contains("* SORT 1 2\r\n"),
        "{sorted}"
    );
    c.send("d THREAD REFERENCES UTF-8 ALL\r\n").await;
    assert!(c.until("d OK").await.contains("* THREAD "));
}
