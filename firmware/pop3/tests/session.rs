//! Whole POP3 sessions over an in-memory duplex stream (plain, and TLS
//! after STLS), against a real store in a temporary folder. Each test reads
//! as the exchange it checks.

use mxrack_net::{BoxStream, Shutdown};
use mxrack_pop3::{Mode, Pop3Service, run_session};
use mxrack_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const JO: &str = "jo@example.net";
const JO_PW: &str = "pw-jo-123";
const AL: &str = "al@example.net";
const AL_PW: &str = "pw-al-456";
/// Replies come within this, or the test fails (not a sleep: a bound).
const REPLY_TIMEOUT_SECS: u64 = 20;

/// A message with lines that need byte-stuffing: one starting with ".",
/// one with "..", one that is only ".".
const DOTTED: &[u8] = b"From: <a@sender.example>\r\nSubject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nlast line\r\n";
const PLAIN: &[u8] = b"Subject: second\r\n\r\nhello\r\n";

struct Harness {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    shutdown: Shutdown,
}

/// Store calls block: the test's own run on a plain thread, off the
/// runtime (the store's debug-build check refuses them on an async worker).
fn off<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| s.spawn(f).join().expect("store call"))
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = off(|| {
        let store = Store::open(dir.path()).expect("store");
        store.account_add("acme").expect("account");
        store.domain_add("example.net", "acme").expect("domain");
        store.mailbox_add(JO, JO_PW, false).expect("mailbox");
        store.mailbox_add(AL, AL_PW, false).expect("mailbox");
        store
    });
    Harness {
        dir,
        store,
        shutdown: Shutdown::new(),
    }
}

fn limits() -> mxrack_config::Pop3 {
    mxrack_config::Pop3 {
        max_bad_commands: 4,
        allow_plaintext_auth: true,
        ..mxrack_config::Pop3::default()
    }
}

fn service(h: &Harness, limits: mxrack_config::Pop3) -> Arc<Pop3Service> {
    Arc::new(Pop3Service::new(
        "pop.example.net".into(),
        limits,
        h.store.clone(),
        None,
        test_auth(),
    ))
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

/// The INBOX of `mailbox` as (UIDVALIDITY, [UID]).
fn inbox(h: &Harness, mailbox: &str) -> (u32, Vec<u32>) {
    let snap = off(|| h.store.folder_snapshot(mailbox, "INBOX").expect("snapshot"));
    (
        snap.folder.uidvalidity,
        snap.messages.iter().map(|m| m.uid).collect(),
    )
}

struct Client {
    stream: Option<BoxStream>,
    pending: Vec<u8>,
}

impl Client {
    fn start(h: &Harness, svc: &Arc<Pop3Service>, mode: Mode) -> Client {
        let (client, server) = tokio::io::duplex(1 << 16);
        let peer = "192.0.2.9:40000".parse().expect("addr");
        tokio::spawn(run_session(
            svc.clone(),
            mode,
            Box::new(server),
            peer,
            h.shutdown.signal(),
        ));
        Client {
            stream: Some(Box::new(client)),
            pending: Vec::new(),
        }
    }

    fn stream(&mut self) -> &mut BoxStream {
        self.stream.as_mut().expect("stream")
    }

    async fn send(&mut self, text: &str) {
        self.stream()
            .write_all(text.as_bytes())
            .await
            .expect("write");
    }

    /// Reads more bytes; false at end of stream.
    async fn fill(&mut self) -> bool {
        let mut buf = [0u8; 8192];
        let read = tokio::time::timeout(
            Duration::from_secs(REPLY_TIMEOUT_SECS),
            self.stream().read(&mut buf),
        )
        .await
        .expect("reply in time");
        match read {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    /// One status line, CRLF included.
    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.pending.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.pending.drain(..i + 2).collect();
                return String::from_utf8(line).expect("utf8 status line");
            }
            if !self.fill().await {
                panic!(
                    "connection closed, pending {:?}",
                    String::from_utf8_lossy(&self.pending)
                );
            }
        }
    }

    /// A status line that starts with `prefix`.
    async fn expect(&mut self, prefix: &str) -> String {
        let line = self.line().await;
        assert!(
            line.starts_with(prefix),
            "expected {prefix:?}, got {line:?}"
        );
        line
    }

    /// The raw bytes of a multi-line body, up to and including "\r\n.\r\n"
    /// (or ".\r\n" for an empty body), still byte-stuffed.
    async fn multiline_raw(&mut self) -> Vec<u8> {
        loop {
            if self.pending.starts_with(b".\r\n") {
                return self.pending.drain(..3).collect();
            }
            if let Some(i) = self.pending.windows(5).position(|w| w == b"\r\n.\r\n") {
                return self.pending.drain(..i + 5).collect();
            }
            assert!(
                self.fill().await,
                "connection closed inside a multi-line body"
            );
        }
    }

    /// A multi-line body as lines without CRLF, unstuffed, terminator removed.
    async fn multiline(&mut self) -> Vec<String> {
        let raw = self.multiline_raw().await;
        let text = String::from_utf8(raw).expect("utf8 body");
        let mut lines: Vec<String> = text
            .split("\r\n")
            .map(|l| l.strip_prefix('.').unwrap_or(l).to_string())
            .collect();
        // The terminator "." became "" and the split left one "" after it.
        assert_eq!(lines.pop().as_deref(), Some(""));
        assert_eq!(lines.pop().as_deref(), Some(""));
        lines
    }

    /// Sends `cmd` and expects a status line starting with `prefix`.
    async fn cmd(&mut self, cmd: &str, prefix: &str) -> String {
        self.send(&format!("{cmd}\r\n")).await;
        self.expect(prefix).await
    }

    async fn login(&mut self, user: &str, password: &str) -> String {
        self.expect("+OK pop.example.net POP3 mxrack ready").await;
        self.cmd(&format!("USER {user}"), "+OK").await;
        self.cmd(&format!("PASS {password}"), "+OK").await
    }

    /// The server closed the connection; returns what it sent before.
    async fn closed(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.pending)
    }

    async fn capa(&mut self) -> Vec<String> {
        self.cmd("CAPA", "+OK").await;
        self.multiline().await
    }
}

#[tokio::test]
async fn login_then_stat_list_uidl_and_quit() {
    let h = harness();
    off(|| {
        h.store
            .append(JO, "INBOX", DOTTED, &[], None)
            .expect("append")
    });
    off(|| {
        h.store
            .append(JO, "INBOX", PLAIN, &[], None)
            .expect("append")
    });
    let (uidvalidity, uids) = inbox(&h, JO);
    let svc = service(&h, limits());
    let mut c = Client::start(&h, &svc, Mode::Pop3);
    let total = DOTTED.len() + PLAIN.len();
    let greeting = c.login("Jo@Example.NET", JO_PW).await;
    assert_eq!(
        greeting,
        format!("+OK maildrop has 2 messages ({total} octets)\r\n")
    );
    assert!(svc.locks.is_locked(JO));
    c.cmd("STAT", &format!("+OK 2 {total}\r\n")).await;
    c.cmd("LIST", &format!("+OK 2 messages ({total} octets)"))
        .await;
    assert_eq!(
        c.multiline().await,
        vec![format!("1 {}", DOTTED.len()), format!("2 {}", PLAIN.len())]
    );
    c.cmd("LIST 2", &format!("+OK 2 {}\r\n", PLAIN.len())).await;
    c.cmd("LIST 3", "-ERR no such message").await;
    c.cmd("LIST 0", "-ERR no such message").await;
    c.cmd("UIDL", "+OK").await;
    assert_eq!(
        c.multiline().await,
        vec![
            format!("1 {uidvalidity}.{}", uids[0]),
            format!("2 {uidvalidity}.{}", uids[1])
        ]
    );
    c.cmd("UIDL 1", &format!("+OK 1 {uidvalidity}.{}\r\n", uids[0]))
        .await;
    c.cmd("NOOP", "+OK").await;
    c.cmd(
        "QUIT",
        "+OK pop.example.net POP3 server signing off (2 messages left)",
    )
    .await;
    assert!(c.closed().await.is_empty());
    assert!(!svc.locks.is_locked(JO));
    assert_eq!(
        inbox(&h, JO).1.len(),
        2,
        "QUIT without DELE removes nothing"
    );
}

#[tokio::test]
async fn unique_ids_stay_the_same_in_the_next_session() {
    let h = harness();
    off(|| {
        h.store
            .append(JO, "INBOX", PLAIN, &[], None)
            .expect("append")
    });
    off(|| {
        h.store
            .append(JO, "INBOX", PLAIN, &[], None)
            .expect("append")
    });
    let svc = service(&h, limits());
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut c = Client::start(&h, &svc, Mode::Pop3);
        c.login(JO, JO_PW).await;
        c.cmd("UIDL", "+OK").await;
        ids.push(c.multiline().await);
        c.cmd("QUIT", "+OK").await;
        c.closed().await;
    }
    assert_eq!(ids[0], ids[1]);
    assert_ne!(ids[0][0], ids[0][1]);
}

#[tokio::test]
async fn retr_and_top_send_the_stored_bytes_dot_stuffed() {
    let h = harness();
    off(|| {
        h.store
            .append(JO, "INBOX", DOTTED, &[], None)
            .expect("append")
    });
    let svc = service(&h, limits());
    let mut c = Client::start(&h, &svc, Mode::Pop3);
    c.login(JO, JO_PW).await;
    c.cmd("RETR 1", &format!("+OK {} octets\r\n", DOTTED.len()))
        .await;
    assert_eq!(
        c.multiline_raw().await,
        b"From: <a@sender.example>\r\nSubject: dots\r\n\r\n..leading dot\r\n...two dots\r\n..\r\nlast line\r\n.\r\n"
    );
    c.cmd("TOP 1 0", "+OK").await;
    assert_eq!(
        c.multiline_raw().await,
        b"From: <a@sender.example>\r\nSubject: dots\r\n\r\n.\r\n"
    );
    c.cmd("TOP 1 2", "+OK").await;
    assert_eq!(
        c.multiline().await,
        vec![
            "From: <a@sender.example>",
            "Subject: dots",
            "",
            ".leading dot",
            "..two dots"
        ]
    );
    c.cmd("RETR 2", "-ERR no such message").await;
    c.cmd("TOP 1", "-ERR syntax error").await;
    // Pipelined commands get their replies in order.
    c.send("STAT\r\nTOP 1 0\r\nNOOP\r\n").await;
    c.expect("+OK 1 ").await;
    c.expect("+OK top of message follows").await;
    c.multiline_raw().await;
    c.expect("+OK").await;
}

#[tokio::test]
async fn dele_then_rset_keeps_everything() {
    let h = harness();
    off(|| {
        h.store
            .append(JO, "INBOX", DOTTED, &[], None)
            .expect("append")
    });
    off(|| {
        h.store
            .append(JO, "INBOX", PLAIN, &[], None)
            .expect("append")
    });
    let svc = service(&h, limits());
    let mut c = Client::start(&h, &svc, Mode::Pop3);
    c.login(JO, JO_PW).await;
    c.cmd("DELE 1", "+OK message 1 deleted").await;
    c.cmd("DELE 1", "-ERR message 1 already deleted").await;
    c.cmd("RETR 1", "-ERR message 1 already deleted").await;
    c.cmd("STAT", &format!("+OK 1 {}\r\n", PLAIN.len())).await;
    c.cmd("LIST", "+OK 1 messages").await;
    assert_eq!(c.multiline().await, vec![format!("2 {}", PLAIN.len())]);
    c.cmd("RSET", "+OK maildrop has 2 messages").await;
    c.cmd("STAT", "+OK 2 ").await;
    c.cmd("QUIT", "+OK").await;
    c.closed().await;
    assert_eq!(inbox(&h, JO).1.len(), 2);
}

#[tokio::test]
async fn dele_then_quit_removes_the_marked_messages_only() {
    let h = harness();
    for _ in 0..3 {
        off(|| {
            h.store
                .append(JO, "INBOX", PLAIN, &[], None)
                .expect("append")
        });
    }
    let (_, uids) = inbox(&h, JO);
    let svc = service(&h, limits());
    let mut c = Client::start(&h, &svc, Mode::Pop3);
    c.login(JO, JO_PW).await;
    c.cmd("DELE 1", "+OK").await;
    c.cmd("DELE 3", "+OK").await;
    // Not yet: deletes wait for QUIT.
    assert_eq!(inbox(&h, JO).1.len(), 3);
    c.cmd(
        "QUIT",
        "+OK pop.example.net POP3 server signing off (1 messages left)",
    )
    .await;
    c.closed().await;
    assert_eq!(inbox(&h, JO).1, vec![uids[1]]);
    assert_eq!(
        off(|| h.store.mailbox_usage(JO).expect("usage")),
        PLAIN.len() as u64
    );
}

#[tokio::test]
async fn dele_then_a_dropped_connection_removes_nothing() {
    let h = harness();
    off(|| {
        h.store
            .append(JO, "INBOX", PLAIN, &[], None)
            .expect("append")
    });
    let svc = service(&h, limits());
    let mut c = Client::start(&h, &svc, Mode::Pop3);
    c.login(JO, JO_PW).await;
    c.cmd("DELE 1", "+OK").await;
    drop(c);
    // The session ends when it next runs and reads the end of the stream;
    // its lock goes with it (bounded by scheduler turns, not by time).
    for _ in 0..10_000 {
        if !svc.locks.is_locked(JO) {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        !svc.locks.is_locked(JO),
        "the dropped session released its lock"
    );
    assert_eq!(inbox(&h, JO).1.len(), 1, "no UPDATE without QUIT");
    let mut c = Client::start(&h, &svc, Mode::Pop3);
    assert_eq!(
        c.login(JO, JO_PW).await,
        format!("+OK maildrop has 1 messages ({} octets)\r\n", PLAIN.len())
    );
}

#[tokio::test]
async fn a_second_login_to_a_locked_maildrop_gets_in_use() {
    let h = harness();
    off(|| {
        h.store
            .append(JO, "INBOX", PLAIN, &[], None)
            .expect("append")
    });
    let svc = service(&h, limits());
    let mut first = Client::start(&h, &svc, Mode::Pop3);
    first.login(JO, JO_PW).await;
    let mut second = Client::start(&h, &svc, Mode::Pop3);
    second.expect("+OK").await;
    second.cmd(&format!("USER {JO}"), "+OK").await;
    second.cmd(&format!("PASS {JO_PW}"), "-ERR [IN-USE] ").await;
    // Another mailbox is not locked by it.
    let mut other = Client::start(&h, &svc, Mode::Pop3);
    other.login(AL, AL_PW).await;
    // The second session stays in AUTHORIZATION and may try again after
    // the first has quit.
    second.cmd("STAT", "-ERR").await;
    first.cmd("QUIT", "+OK").await;
    first.closed().await;
    second.cmd(&format!("USER {JO}"), "+OK").await;
    second
        .cmd(&format!("PASS {JO_PW}"), "+OK maildrop has 1 messages")
        .await;
}

#[tokio::test]
async fn auth_plain_with_initial_response_and_with_continuation() {
    let h = harness();
    off(|| {
        h.store
            .append(JO, "INBOX", PLAIN, &[], None)
            .expect("append")
    });
    let svc = service(&h, limits());
    // "\0jo@example.net\0pw-jo-123"
    let token = "AGpvQGV4YW1wbGUubmV0AHB3LWpvLTEyMw==";

    let mut c = Client::start(&h, &svc, Mode::Pop3);
    c.expect("+OK").await;
    c.cmd("AUTH", "+OK").await;
    assert_eq!(c.multiline().await, vec!["PLAIN"]);
    c.cmd("AUTH CRAM-MD5", "-ERR unsupported SASL mechanism")
        .await;
    c.cmd(
        &format!("AUTH PLAIN {token}"),
        "+OK maildrop has 1 messages",
    )
    .await;
    c.cmd("AUTH PLAIN", "-ERR command not valid now").await;
    c.cmd("QUIT", "+OK").await;
    c.closed().await;

    let mut c = Client::start(&h, &svc, Mode::Pop3);
    c.expect("+OK").await;
    c.cmd("AUTH PLAIN", "+ \r\n").await;
    c.cmd("*", "-ERR authentication cancelled").await;
    c.cmd("AUTH PLAIN", "+ ").await;
    c.cmd("not base64!", "-ERR cannot decode").await;
    c.cmd("AUTH PLAIN", "+ ").await;
    c.cmd(token, "+OK maildrop has 1 messages").await;
    c.cmd("STAT", "+OK 1 ").await;
}

#[tokio::test]
async fn failed_logins_are_limited_per_network_and_account() {
    let h = harness();
    let svc = service(&h, limits());
    let mut c = Client::start(&h, &svc, Mode::Pop3);
    c.expect("+OK").await;
    c.cmd("PASS x", "-ERR command not valid now: send USER first")
        .await;
    for _ in 0..3 {
        c.cmd(&format!("USER {JO}"), "+OK").await;
        c.cmd("PASS wrong", "-ERR [AUTH] invalid user name or password")
            .await;
    }
    // Now even the right password is refused for this pair.
    c.cmd(&format!("USER {JO}"), "+OK").await;
    c.cmd(
        &format!("PASS {JO_PW}"),
        "-ERR [SYS/TEMP] too many login attempts",
    )
    .await;
    let mut other = Client::start(&h, &svc, Mode::Pop3);
    other.expect("+OK").await;
    other
        .cmd(
            "AUTH PLAIN AGpvQGV4YW1wbGUubmV0AHB3LWpvLTEyMw==",
            "-ERR [SYS/TEMP] too many login attempts",
        )
        .await;
}

#[tokio::test]
async fn credentials_are_refused_before_tls_unless_allowed() {
    let h = harness();
    let svc = service(
        &h,
        mxrack_config::Pop3 {
            allow_plaintext_auth: false,
            ..limits()
        },
    );
    let mut c = Client::start(&h, &svc, Mode::Pop3);
    c.expect("+OK").await;
    let capa = c.capa().await;
    assert!(capa.contains(&"UIDL".to_string()), "{capa:?}");
    for hidden in ["USER", "SASL PLAIN", "STLS"] {
        assert!(!capa.iter().any(|l| l == hidden), "{hidden} in {capa:?}");
    }
    c.cmd(
        &format!("USER {JO}"),
        "-ERR [AUTH] credentials only inside TLS",
    )
    .await;
    c.cmd(
        "AUTH PLAIN AGpvQGV4YW1wbGUubmV0AHB3LWpvLTEyMw==",
        "-ERR [AUTH]",
    )
    .await;
    c.cmd("STLS", "-ERR TLS not available").await;
}

#[tokio::test]
async fn bad_commands_and_long_lines_are_answered_then_the_session_closes() {
    let h = harness();
    let svc = service(&h, limits());
    let mut c = Client::start(&h, &svc, Mode::Pop3);
    c.expect("+OK").await;
    c.cmd("HELO x", "-ERR unknown command").await;
    c.cmd(&format!("USER {}", "a".repeat(300)), "-ERR line too long")
        .await;
    // A long PASS line is allowed (passwords may be long), and just wrong.
    c.cmd(
        &format!("PASS {}", "p".repeat(600)),
        "-ERR command not valid now",
    )
    .await;
    c.cmd("RETR 1", "-ERR command not valid now: log in first")
        .await;
    c.expect("-ERR too many bad commands").await;
    assert!(c.closed().await.is_empty());
}

#[tokio::test]
async fn an_idle_session_gets_the_shutdown_line_and_nothing_is_deleted() {
    let h = harness();
    off(|| {
        h.store
            .append(JO, "INBOX", PLAIN, &[], None)
            .expect("append")
    });
    let svc = service(&h, limits());
    let mut c = Client::start(&h, &svc, Mode::Pop3);
    c.login(JO, JO_PW).await;
    c.cmd("DELE 1", "+OK").await;
    h.shutdown.trigger();
    c.expect("-ERR [SYS/TEMP] server shutting down\r\n").await;
    assert!(c.closed().await.is_empty());
    assert_eq!(inbox(&h, JO).1.len(), 1, "no UPDATE at shutdown");
    assert!(!svc.locks.is_locked(JO));
}

#[tokio::test(start_paused = true)]
async fn the_idle_timeout_closes_without_a_reply() {
    let h = harness();
    let svc = service(&h, limits());
    let mut c = Client::start(&h, &svc, Mode::Pop3);
    c.expect("+OK").await;
    // Paused time: the runtime jumps to the next timer, the server's
    // 600 s idle timeout, before the client's own read deadline.
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(601), c.stream().read(&mut buf))
        .await
        .expect("closed at the idle timeout")
        .expect("read");
    assert_eq!(n, 0, "RFC 1939 3: no response at the autologout timer");
}

#[tokio::test]
async fn garbage_never_panics_the_session() {
    // A deterministic stream of hostile lines: every one must get a status
    // line (or close the session) and the store must stay intact.
    let h = harness();
    off(|| {
        h.store
            .append(JO, "INBOX", PLAIN, &[], None)
            .expect("append")
    });
    let svc = service(&h, limits());
    let mut seed: u64 = 0x5eed_1939;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let verbs = [
        "LIST ",
        "UIDL ",
        "TOP ",
        "RETR ",
        "DELE ",
        "AUTH ",
        "AUTH PLAIN ",
        "USER ",
        "STAT",
        "\u{0}",
        "CAPA ",
    ];
    for _ in 0..10 {
        let mut c = Client::start(&h, &svc, Mode::Pop3);
        c.login(JO, JO_PW).await;
        for _ in 0..3 {
            let verb = verbs[(next() % verbs.len() as u64) as usize];
            let junk: String = (0..(next() % 30))
                .map(|_| char::from(32 + (next() % 95) as u8))
                .collect();
            c.send(&format!("{verb}{junk}\r\n")).await;
            let line = c.line().await;
            assert!(
                line.starts_with("+OK") || line.starts_with("-ERR"),
                "{line:?}"
            );
            let multiline = line.starts_with("+OK")
                && (line.contains(" follow")
                    || line.ends_with(" octets\r\n")
                    || line.ends_with(" octets)\r\n"));
            if multiline {
                c.multiline_raw().await;
            }
        }
        drop(c);
    }
    assert_eq!(inbox(&h, JO).1.len(), 1);
}

#[tokio::test]
async fn a_connection_over_the_cap_gets_the_busy_line() {
    let h = harness();
    let svc = service(&h, limits());
    let listener = Arc::new(
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind"),
    );
    let addr = listener.local_addr().expect("addr");
    // No permit at all: every connection is over the cap.
    let sessions = mxrack_net::Pool::new(0, 1);
    tokio::spawn(mxrack_pop3::serve(
        listener,
        Mode::Pop3,
        svc,
        sessions,
        h.shutdown.signal(),
    ));
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut got = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(REPLY_TIMEOUT_SECS),
        socket.read_to_end(&mut got),
    )
    .await
    .expect("in time")
    .expect("read");
    assert_eq!(
        got,
        b"-ERR [SYS/TEMP] too many connections, try again later\r\n"
    );
}

// --- STLS over an in-memory stream ----------------------------------------

/// A TLS client that trusts the self-signed certificate made in the data folder.
fn tls_connector(cert_path: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert_path).expect("cert file") {
        roots.add(cert.expect("cert")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn stls_then_login_inside_tls_and_retr() {
    let h = harness();
    off(|| {
        h.store
            .append(JO, "INBOX", DOTTED, &[], None)
            .expect("append")
    });
    let tls =
        mxrack_net::load_or_create_tls(None, None, h.dir.path(), "pop.example.net").expect("tls");
    let svc = Arc::new(Pop3Service::new(
        "pop.example.net".into(),
        mxrack_config::Pop3 {
            allow_plaintext_auth: false,
            ..limits()
        },
        h.store.clone(),
        Some(tls.acceptor.clone()),
        test_auth(),
    ));
    let mut c = Client::start(&h, &svc, Mode::Pop3);
    c.expect("+OK").await;
    let capa = c.capa().await;
    assert!(capa.iter().any(|l| l == "STLS"), "{capa:?}");
    assert!(!capa.iter().any(|l| l == "USER"), "{capa:?}");
    // A command pipelined in plaintext after STLS must be dropped, not
    // read as if it came inside TLS (CVE-2011-0411).
    c.send("STLS\r\nUSER injected@example.net\r\n").await;
    c.expect("+OK Begin TLS negotiation\r\n").await;
    assert!(c.pending.is_empty());
    let plain = c.stream.take().expect("stream");
    let name = rustls_pki_types::ServerName::try_from("pop.example.net").expect("name");
    let tls_stream = tls_connector(&tls.cert_path)
        .connect(name, plain)
        .await
        .expect("TLS handshake");
    c.stream = Some(Box::new(tls_stream));
    let capa = c.capa().await;
    for shown in ["USER", "SASL PLAIN"] {
        assert!(capa.iter().any(|l| l == shown), "{shown} not in {capa:?}");
    }
    assert!(!capa.iter().any(|l| l == "STLS"), "{capa:?}");
    // The injected USER was dropped: PASS has no user to go with.
    c.cmd(
        &format!("PASS {JO_PW}"),
        "-ERR command not valid now: send USER first",
    )
    .await;
    c.cmd("STLS", "-ERR TLS already active").await;
    c.cmd("AUTH PLAIN", "+ ").await;
    c.cmd(
        "AGpvQGV4YW1wbGUubmV0AHB3LWpvLTEyMw==",
        "+OK maildrop has 1 messages",
    )
    .await;
    c.cmd("RETR 1", "+OK").await;
    let raw = c.multiline_raw().await;
    assert!(raw.starts_with(b"From: <a@sender.example>\r\n"));
    assert!(raw.ends_with(b"\r\n..\r\nlast line\r\n.\r\n"));
    c.cmd("DELE 1", "+OK").await;
    c.cmd("QUIT", "+OK").await;
    c.closed().await;
    assert!(inbox(&h, JO).1.is_empty());
}

#[tokio::test]
async fn pop3s_is_tls_from_the_first_byte() {
    let h = harness();
    let tls =
        mxrack_net::load_or_create_tls(None, None, h.dir.path(), "pop.example.net").expect("tls");
    let svc = Arc::new(Pop3Service::new(
        "pop.example.net".into(),
        mxrack_config::Pop3 {
            allow_plaintext_auth: false,
            ..limits()
        },
        h.store.clone(),
        Some(tls.acceptor.clone()),
        test_auth(),
    ));
    let mut c = Client::start(&h, &svc, Mode::Pop3s);
    let plain = c.stream.take().expect("stream");
    let name = rustls_pki_types::ServerName::try_from("pop.example.net").expect("name");
    let tls_stream = tls_connector(&tls.cert_path)
        .connect(name, plain)
        .await
        .expect("TLS handshake");
    c.stream = Some(Box::new(tls_stream));
    c.expect("+OK pop.example.net POP3 mxrack ready").await;
    let capa = c.capa().await;
    assert!(capa.iter().any(|l| l == "USER"), "{capa:?}");
    assert!(!capa.iter().any(|l| l == "STLS"), "{capa:?}");
    c.cmd(&format!("USER {JO}"), "+OK").await;
    c.cmd(
        &format!("PASS {JO_PW}"),
        "+OK maildrop has 0 messages (0 octets)",
    )
    .await;
}

// --- Deadlines per command and per phase (issue 10) -------------------------

/// Sends `chunks` over and over with `pause` between them until the server
/// closes; returns what it wrote and the time from the first chunk to the
/// close (paused time: minutes pass in no time).
async fn trickle_until_closed(
    mut c: Client,
    chunks: &'static [&'static str],
    pause: Duration,
) -> (String, Duration) {
    let stream = c.stream.take().expect("stream");
    let (mut from_server, mut to_server) = tokio::io::split(stream);
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
async fn a_command_trickled_a_byte_every_20_s_is_cut_60_s_after_its_first_byte() {
    let h = harness();
    let svc = service(&h, limits());
    let mut c = Client::start(&h, &svc, Mode::Pop3);
    c.expect("+OK").await;
    let bytes: &[&str] = &["C", "A", "P", "A", "\r", "\n"];
    let (got, took) = trickle_until_closed(c, bytes, Duration::from_secs(20)).await;
    assert_eq!(got, "", "closed without a reply (RFC 1939 3)");
    assert!(took <= Duration::from_secs(61), "cut after {took:?}");
}

#[tokio::test(start_paused = true)]
async fn authorization_is_cut_at_the_login_deadline() {
    let h = harness();
    let svc = service(&h, limits());
    let mut c = Client::start(&h, &svc, Mode::Pop3);
    c.expect("+OK").await;
    // Whole commands, each within the command and idle deadlines.
    let (got, took) = trickle_until_closed(c, &["CAPA\r\n"], Duration::from_secs(30)).await;
    assert_eq!(
        got.matches("+OK").count(),
        4,
        "CAPA at 0, 30, 60, 90 s: {got:?}"
    );
    assert!(
        (Duration::from_secs(120)..=Duration::from_secs(121)).contains(&took),
        "cut after {took:?}"
    );
}
