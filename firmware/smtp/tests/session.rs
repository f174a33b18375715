//! Whole SMTP sessions over an in-memory duplex stream, against a real store
//! in a temporary folder. Each test reads as the exchange it checks.

use mxrack_net::Shutdown;
use mxrack_smtp::{Mode, SmtpService, run_session};
use mxrack_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    svc: Arc<SmtpService>,
    shutdown: Shutdown,
}

fn harness() -> Harness {
    harness_with_limit(65_536)
}

fn harness_with_limit(max_message_bytes: u64) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = off(|| {
        let store = Store::open(dir.path()).expect("store");
        store.account_add("acme").expect("account");
        store.domain_add("example.net", "acme").expect("domain");
        store
            .mailbox_add("jo@example.net", "pw-jo-123", false)
            .expect("mailbox");
        store
            .alias_add("sales@example.net", &["jo@example.net".to_string()])
            .expect("alias");
        store
    });
    let limits = mxrack_config::Smtp {
        max_message_bytes,
        max_bad_commands: 3,
        ..mxrack_config::Smtp::default()
    };
    let svc = Arc::new(SmtpService {
        hostname: "mx.example.net".into(),
        primary_domain: "example.net".into(),
        limits,
        store: store.clone(),
        tls: None,
        auth: test_auth(),
        outbound: None,
    });
    Harness {
        _dir: dir,
        store,
        svc,
        shutdown: Shutdown::new(),
    }
}

struct Client {
    stream: DuplexStream,
    pending: Vec<u8>,
}

impl Client {
    fn start(h: &Harness, mode: Mode) -> Client {
        let (client, server) = tokio::io::duplex(1 << 16);
        let peer = "192.0.2.7:40000".parse().expect("addr");
        tokio::spawn(run_session(
            h.svc.clone(),
            mode,
            Box::new(server),
            peer,
            h.shutdown.signal(),
        ));
        Client {
            stream: client,
            pending: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &str) {
        self.stream
            .write_all(bytes.as_bytes())
            .await
            .expect("write");
    }

    /// Reads one whole reply (all its continuation lines) and returns it.
    async fn reply(&mut self) -> String {
        loop {
            if let Some(end) = find_reply_end(&self.pending) {
                let reply: Vec<u8> = self.pending.drain(..end).collect();
                return String::from_utf8(reply).expect("utf8 reply");
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buf))
                .await
                .expect("reply in time")
                .expect("read");
            if n == 0 {
                return String::from_utf8_lossy(&self.pending).into_owned();
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    async fn expect(&mut self, code: &str) -> String {
        let r = self.reply().await;
        assert!(r.starts_with(code), "expected {code}, got {r:?}");
        r
    }

    async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// End of the first complete reply: the first line whose 4th byte is a space.
fn find_reply_end(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(i) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = &buf[start..start + i + 1];
        start += i + 1;
        if line.len() >= 4 && line[3] == b' ' {
            return Some(start);
        }
    }
    None
}

fn stored(h: &Harness, mailbox: &str) -> Vec<Vec<u8>> {
    off(|| {
        h.store
            .messages(mailbox, "INBOX")
            .expect("messages")
            .iter()
            .map(|m| h.store.read_blob(m.blob).expect("blob"))
            .collect()
    })
}

/// Store calls block: the test's own run on a plain thread, off the
/// runtime (the store's debug-build check refuses them on an async worker).
fn off<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| s.spawn(f).join().expect("store call"))
}

/// The files in the store's msg/ folder.
fn msg_files(h: &Harness) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(h._dir.path().join("msg"))
        .expect("msg dir")
        .map(|e| e.expect("entry").path())
        .collect()
}

fn body_after_trace(message: &[u8]) -> &[u8] {
    // Return-Path, then Received folded over lines that begin with a tab.
    let text = message;
    let mut pos = 0;
    let mut lines = 0;
    while pos < text.len() {
        let end = text[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| pos + i + 1)
            .unwrap_or(text.len());
        let line = &text[pos..end];
        if lines >= 2 && !line.starts_with(b"\t") {
            break;
        }
        lines += 1;
        pos = end;
    }
    &text[pos..]
}

#[tokio::test]
async fn mail_for_a_hosted_mailbox_is_stored_with_trace_headers() {
    let h = harness();
    let mut c = Client::start(&h, Mode::Mx);
    c.expect("220 mx.example.net ESMTP").await;
    c.send("EHLO client.example\r\n").await;
    let ehlo = c.expect("250-mx.example.net").await;
    for ext in [
        "PIPELINING",
        "SIZE 65536",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(ehlo.contains(ext), "{ext} missing in {ehlo}");
    }
    assert!(!ehlo.contains("AUTH"), "no AUTH on the MX port");
    c.send("MAIL FROM:<a@sender.example>\r\n").await;
    c.expect("250 2.1.0").await;
    c.send("RCPT TO:<Jo@Example.NET>\r\n").await;
    c.expect("250 2.1.5").await;
    c.send("DATA\r\n").await;
    c.expect("354").await;
    c.send("Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n").await;
    c.expect("250 2.0.0 OK: queued as").await;
    c.send("QUIT\r\n").await;
    c.expect("221").await;
    let msgs = stored(&h, "jo@example.net");
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].starts_with(
        b"Return-Path: <a@sender.example>\r\nReceived: from client.example ([192.0.2.7])"
    ));
    assert_eq!(
        body_after_trace(&msgs[0]),
        b"Subject: hi\r\n\r\n.dot\r\nbody\r\n"
    );
}

#[tokio::test]
async fn a_pipelined_group_gets_its_replies_in_order() {
    let h = harness();
    let mut c = Client::start(&h, Mode::Mx);
    c.expect("220").await;
    c.send("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<jo@example.net>\r\nRCPT TO:<nobody@example.net>\r\nRCPT TO:<sales@example.net>\r\nDATA\r\n")
        .await;
    c.expect("250-").await;
    c.expect("250 2.1.0").await;
    c.expect("250 2.1.5").await;
    c.expect("550 5.1.1").await;
    c.expect("250 2.1.5").await;
    c.expect("354").await;
    c.send("x\r\n.\r\n").await;
    c.expect("250").await;
    // jo and sales@ (an alias of jo) are the same mailbox: one copy.
    assert_eq!(stored(&h, "jo@example.net").len(), 1);
}

#[tokio::test]
async fn relaying_is_refused_on_the_mx_port() {
    let h = harness();
    let mut c = Client::start(&h, Mode::Mx);
    c.expect("220").await;
    c.send("HELO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@elsewhere.example>\r\n")
        .await;
    c.expect("250").await;
    c.expect("250").await;
    c.expect("554 5.7.1").await;
    c.send("DATA\r\n").await;
    c.expect("503").await;
}

#[tokio::test]
async fn a_bare_lf_in_data_refuses_the_message_and_closes() {
    let h = harness();
    let mut c = Client::start(&h, Mode::Mx);
    c.expect("220").await;
    c.send("HELO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<jo@example.net>\r\nDATA\r\n")
        .await;
    for code in ["250", "250", "250", "354"] {
        c.expect(code).await;
    }
    // The smuggling shape: a bare-LF "." that another server might take as the end.
    c.send("a\r\n\n.\nMAIL FROM:<evil@b.example>\r\n.\r\n")
        .await;
    c.expect("521 5.5.2").await;
    assert!(c.closed().await);
    assert!(stored(&h, "jo@example.net").is_empty());
}

#[tokio::test]
async fn an_oversized_message_is_refused_and_the_session_goes_on() {
    let h = harness();
    let mut c = Client::start(&h, Mode::Mx);
    c.expect("220").await;
    c.send("EHLO c\r\nMAIL FROM:<a@b.example> SIZE=70000\r\n")
        .await;
    c.expect("250").await;
    c.expect("552 5.3.4").await;
    c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<jo@example.net>\r\nDATA\r\n")
        .await;
    for code in ["250", "250", "354"] {
        c.expect(code).await;
    }
    let line = format!("{}\r\n", "x".repeat(998));
    for _ in 0..70 {
        c.send(&line).await;
    }
    c.send(".\r\n").await;
    c.expect("552 5.3.4").await;
    // The file went when the message passed the limit.
    assert!(msg_files(&h).is_empty(), "{:?}", msg_files(&h));
    c.send("NOOP\r\n").await;
    c.expect("250").await;
    assert!(stored(&h, "jo@example.net").is_empty());
}

/// A message of `lines` lines that start with dots now and then, so that
/// unstuffing happens across the store's write buffers.
fn dotted_message(lines: usize) -> (String, Vec<u8>) {
    let mut wire = String::from("Subject: big\r\n\r\n");
    let mut stored = b"Subject: big\r\n\r\n".to_vec();
    for i in 0..lines {
        let line = if i % 7 == 0 {
            format!(".line {i} starts with a dot {}", "y".repeat(i % 50))
        } else {
            format!("line {i} {}", "x".repeat(i % 90))
        };
        stored.extend_from_slice(line.as_bytes());
        stored.extend_from_slice(b"\r\n");
        if line.starts_with('.') {
            wire.push('.');
        }
        wire.push_str(&line);
        wire.push_str("\r\n");
    }
    (wire, stored)
}

#[tokio::test]
async fn a_message_larger_than_every_buffer_is_stored_byte_for_byte() {
    let h = harness_with_limit(4 << 20);
    let (wire, want) = dotted_message(40_000);
    assert!(
        want.len() > 2 << 20,
        "bigger than the prefix and many chunks"
    );
    let mut c = Client::start(&h, Mode::Mx);
    c.expect("220").await;
    c.send("EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<jo@example.net>\r\nDATA\r\n")
        .await;
    for code in ["250", "250", "250", "354"] {
        c.expect(code).await;
    }
    c.send(&wire).await;
    c.send(".\r\n").await;
    c.expect("250 2.0.0").await;
    let msgs = stored(&h, "jo@example.net");
    assert_eq!(msgs.len(), 1);
    assert!(body_after_trace(&msgs[0]) == want.as_slice());
    assert_eq!(msg_files(&h).len(), 1);
}

#[tokio::test]
async fn a_client_gone_mid_data_leaves_no_file() {
    let h = harness_with_limit(4 << 20);
    let (wire, _) = dotted_message(20_000);
    let mut c = Client::start(&h, Mode::Mx);
    c.expect("220").await;
    c.send("EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<jo@example.net>\r\nDATA\r\n")
        .await;
    for code in ["250", "250", "250", "354"] {
        c.expect(code).await;
    }
    c.send(&wire).await;
    // Past the prefix: the file exists and grows.
    c.send("NOOP\r\n").await;
    assert_eq!(msg_files(&h).len(), 1);
    c.stream.shutdown().await.expect("shutdown");
    // The session removes the file, then closes its side.
    assert!(c.closed().await);
    assert!(msg_files(&h).is_empty(), "{:?}", msg_files(&h));
    assert!(stored(&h, "jo@example.net").is_empty());
}

#[tokio::test]
async fn bad_commands_are_answered_then_the_session_is_closed() {
    let h = harness();
    let mut c = Client::start(&h, Mode::Mx);
    c.expect("220").await;
    c.send("FOO\r\n").await;
    c.expect("500 5.5.2").await;
    c.send(&format!("NOOP {}\r\n", "y".repeat(5000))).await;
    c.expect("500 5.5.2 Line too long").await;
    c.send("MAIL FROM:<no-brackets@x.example\r\n").await;
    c.expect("501").await;
    c.expect("421 4.7.0").await;
    assert!(c.closed().await);
}

#[tokio::test]
async fn submission_refuses_auth_and_mail_before_tls() {
    let h = harness();
    let mut c = Client::start(&h, Mode::Submission);
    c.expect("220").await;
    c.send("EHLO c\r\n").await;
    let ehlo = c.expect("250").await;
    assert!(
        !ehlo.contains("AUTH"),
        "AUTH must not be offered before TLS: {ehlo}"
    );
    c.send("AUTH PLAIN AGpvQGV4YW1wbGUubmV0AHB3LWpvLTEyMw==\r\n")
        .await;
    c.expect("530 5.7.0").await;
    c.send("MAIL FROM:<jo@example.net>\r\n").await;
    c.expect("530 5.7.0").await;
}

#[tokio::test]
async fn shutdown_answers_421_to_an_idle_session() {
    let h = harness();
    let mut c = Client::start(&h, Mode::Mx);
    c.expect("220").await;
    h.shutdown.trigger();
    c.expect("421 4.3.2").await;
    assert!(c.closed().await);
}

#[tokio::test]
async fn garbage_never_panics_the_session() {
    // A deterministic stream of hostile lines: every one must get a reply
    // (or close the session) and the store must stay intact.
    let h = harness();
    let mut seed: u64 = 0x5eed_1234;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let verbs = [
        "MAIL FROM:",
        "RCPT TO:",
        "EHLO",
        "AUTH",
        "DATA",
        "BDAT",
        "STARTTLS",
        "\u{0}",
        "RSET",
    ];
    for _ in 0..20 {
        let mut c = Client::start(&h, Mode::Mx);
        c.expect("220").await;
        for _ in 0..2 {
            let verb = verbs[(next() % verbs.len() as u64) as usize];
            let junk: String = (0..(next() % 40))
                .map(|_| char::from(32 + (next() % 95) as u8))
                .collect();
            c.send(&format!("{verb}{junk}\r\n")).await;
            let r = c.reply().await;
            assert!(r.is_empty() || r.as_bytes()[0].is_ascii_digit(), "{r:?}");
        }
    }
    assert!(stored(&h, "jo@example.net").is_empty());
}

/// The appliance's authentication service with small budgets: 3 attempts
/// per (network, account) pair, no failure delay.
fn test_auth() -> Arc<mxrack_auth::AuthService> {
    Arc::new(mxrack_auth::AuthService::new(mxrack_config::Auth {
        pair_attempts_max: 3,
        failure_delay_ms: 0,
        ..mxrack_config::Auth::default()
    }))
}

/// An alias pointing outside makes a forwarded copy (the "forward"
/// transport), never an entry of the outbound relay with the original
/// sender (issue 11).
#[tokio::test]
async fn an_alias_to_an_outside_address_is_queued_as_a_forward() {
    let h = harness();
    off(|| {
        h.store
            .alias_add("out@example.net", &["someone@external.example".to_string()])
            .expect("alias")
    });
    let mut c = Client::start(&h, Mode::Mx);
    c.expect("220").await;
    c.send("EHLO c\r\n").await;
    c.expect("250").await;
    c.send("MAIL FROM:<a@remote.example>\r\n").await;
    c.expect("250").await;
    c.send("RCPT TO:<out@example.net>\r\n").await;
    c.expect("250").await;
    c.send("DATA\r\n").await;
    c.expect("354").await;
    c.send("Subject: hi\r\n\r\nbody\r\n.\r\n").await;
    c.expect("250").await;
    let queue = off(|| h.store.queue_list().expect("queue"));
    assert_eq!(queue.len(), 1, "{queue:?}");
    assert_eq!(queue[0].transport, "forward");
    assert_eq!(queue[0].recipients, vec!["someone@external.example"]);
}

// --- Deadlines per command and per phase (issue 10) -------------------------

/// Sends `chunks` over and over with `pause` between them until the server
/// closes; returns everything the server wrote and the time from the first
/// chunk to the close. Time is paused: the runtime jumps to the next timer,
/// so minutes pass in no time.
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

const TIMEOUT_421: &str = "421 4.4.2 mx.example.net timeout exceeded, closing connection\r\n";

#[tokio::test(start_paused = true)]
async fn a_command_trickled_a_byte_every_20_s_is_cut_60_s_after_its_first_byte() {
    let h = harness();
    let mut c = Client::start(&h, Mode::Mx);
    c.expect("220").await;
    let bytes: &[&str] = &["E", "H", "L", "O", " ", "a", ".", "e", "x", "\r", "\n"];
    let (got, took) = trickle_until_closed(c, bytes, Duration::from_secs(20)).await;
    assert_eq!(got, TIMEOUT_421);
    assert!(took <= Duration::from_secs(61), "cut after {took:?}");
}

#[tokio::test(start_paused = true)]
async fn mx_commands_before_data_are_cut_at_the_envelope_deadline() {
    let h = harness();
    let mut c = Client::start(&h, Mode::Mx);
    c.expect("220").await;
    // Whole lines, each well within the command and idle deadlines.
    let (got, took) = trickle_until_closed(c, &["NOOP\r\n"], Duration::from_secs(50)).await;
    assert!(got.ends_with(TIMEOUT_421), "{got:?}");
    assert_eq!(got.matches("250 ").count(), 6, "NOOPs at 0, 50, ... 250 s");
    assert!(
        (Duration::from_secs(300)..=Duration::from_secs(301)).contains(&took),
        "cut after {took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn submission_before_auth_is_cut_at_the_login_deadline() {
    let h = harness();
    let mut c = Client::start(&h, Mode::Submission);
    c.expect("220").await;
    let (got, took) = trickle_until_closed(
        c,
        &["EHLO a.example\r\n", "NOOP\r\n"],
        Duration::from_secs(30),
    )
    .await;
    assert!(got.ends_with(TIMEOUT_421), "{got:?}");
    assert!(
        (Duration::from_secs(120)..=Duration::from_secs(121)).contains(&took),
        "cut after {took:?}"
    );
}

#[tokio::test]
async fn each_message_starts_a_new_envelope_phase() {
    // Real time (deliveries run on blocking threads), a 2 s envelope phase.
    let mut h = harness();
    h.svc = Arc::new(SmtpService {
        hostname: h.svc.hostname.clone(),
        primary_domain: h.svc.primary_domain.clone(),
        limits: mxrack_config::Smtp {
            envelope_timeout_secs: 2,
            ..h.svc.limits.clone()
        },
        store: h.store.clone(),
        tls: None,
        auth: h.svc.auth.clone(),
        outbound: None,
    });
    let mut c = Client::start(&h, Mode::Mx);
    c.expect("220").await;
    c.send("EHLO a.example\r\n").await;
    c.expect("250").await;
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<jo@example.net>\r\nDATA\r\n")
            .await;
        c.expect("250").await;
        c.expect("250").await;
        c.expect("354").await;
        c.send(&format!("Subject: {i}\r\n\r\nhello\r\n.\r\n")).await;
        c.expect("250").await;
    }
    // 4.5 s in all, no envelope phase over 2 s: the session is still served.
    c.send("NOOP\r\n").await;
    c.expect("250").await;
    assert_eq!(stored(&h, "jo@example.net").len(), 3);
    // Then an envelope phase left idle ends the session at its deadline.
    c.expect("421 4.4.2").await;
    assert!(c.closed().await);
}

/// DATA is streamed to the message file as it arrives (`incoming.rs`); its
/// whole phase is still under `data_timeout_secs` from the DATA command:
/// body lines trickled in, each well within the idle and command
/// deadlines, are cut at the phase's end with 421, and the unfinished
/// file is removed. Real time (the message file is written on blocking
/// threads), a 2 s DATA phase.
#[tokio::test]
async fn a_message_trickled_in_is_cut_at_the_data_deadline_and_leaves_no_file() {
    let mut h = harness();
    h.svc = Arc::new(SmtpService {
        hostname: h.svc.hostname.clone(),
        primary_domain: h.svc.primary_domain.clone(),
        limits: mxrack_config::Smtp {
            data_timeout_secs: 2,
            ..h.svc.limits.clone()
        },
        store: h.store.clone(),
        tls: None,
        auth: h.svc.auth.clone(),
        outbound: None,
    });
    let mut c = Client::start(&h, Mode::Mx);
    c.expect("220").await;
    c.send("EHLO a.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<jo@example.net>\r\nDATA\r\n")
        .await;
    c.expect("250").await;
    c.expect("250").await;
    c.expect("250").await;
    c.expect("354").await;
    let start = tokio::time::Instant::now();
    c.send("Subject: slow\r\n\r\n").await;
    let mut got = String::new();
    for i in 0..40 {
        if c.stream
            .write_all(format!("line {i}\r\n").as_bytes())
            .await
            .is_err()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        if start.elapsed() > Duration::from_secs(2) {
            got = c.reply().await;
            break;
        }
    }
    let took = start.elapsed();
    assert!(got.starts_with("421 4.4.2"), "{got:?}");
    assert!(took < Duration::from_secs(4), "cut after {took:?}");
    assert!(c.closed().await);
    assert!(stored(&h, "jo@example.net").is_empty());
    assert!(msg_files(&h).is_empty(), "{:?}", msg_files(&h));
}
