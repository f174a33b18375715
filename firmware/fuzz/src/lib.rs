//! Whole-session fuzz harnesses (issue 10).
//!
//! Each `pub fn` here takes arbitrary bytes and drives one thing a client
//! can reach with them: a whole SMTP, IMAP, POP3 or LDAP session over an
//! in-memory duplex stream against a real [`Store`] in a temporary folder
//! (the bytes are what the client sends), or one message through the bounded
//! MIME walk, IMAP FETCH and SEARCH rendering and the spam scorer.
//!
//! The same functions are called by the cargo-fuzz targets in `fuzz/` (on a
//! nightly toolchain) and by the stable smoke run in `tests/smoke.rs`, which
//! replays the committed corpora plus deterministic mutations of them; so
//! the smoke run exercises exactly what the fuzzer does.
//!
//! What counts as a failure (each one a panic, which libFuzzer reports as a
//! crash and the smoke run as a failed test):
//! - a panic anywhere in the process while the input runs, including inside
//!   the session's task and on blocking threads (a panic hook counts them,
//!   since tokio would otherwise turn a task's panic into a `JoinError`);
//! - a session that has not ended [`SESSION_BUDGET`] after the client sent
//!   its last byte and closed its side (a hang).
//!
//! Inputs are cut to [`INPUT_BYTES_MAX`] (sessions) or [`MESSAGE_BYTES_MAX`]
//! (messages), and logins are bounded by small limiter budgets (at most
//! [`AUTH_ATTEMPTS_MAX`] Argon2 checks per input), so no single input can
//! take the fuzzer for long.

pub mod mutate;

use mail_parser::Message;
use mxrack_imap::fetch;
use mxrack_imap::parser::{SearchKey, Section, SectionText};
use mxrack_net::{BoxStream, Shutdown};
use mxrack_store::{Delivery, MessageMeta, Store};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Client bytes per session input; the rest is cut.
pub const INPUT_BYTES_MAX: usize = 64 * 1024;
/// Message bytes per `mime_structure` input; the rest is cut.
pub const MESSAGE_BYTES_MAX: usize = 256 * 1024;
/// Time a session gets to end once the client has closed its side.
pub const SESSION_BUDGET: Duration = Duration::from_secs(30);
/// Login attempts (each an Argon2 check) one input can start: the limiter's
/// network budget of the fixture.
pub const AUTH_ATTEMPTS_MAX: u32 = 6;

/// The fixture's mailboxes and passwords (the seed corpora use them).
pub const JO: &str = "jo@example.net";
pub const JO_PASSWORD: &str = "pw-jo-123";
pub const BOSS: &str = "boss@example.net";
pub const BOSS_PASSWORD: &str = "pw-boss-456";
/// LDAP passwords are not mail passwords: `NAME-ldap`.
pub const LDAP_PASSWORD_SUFFIX: &str = "-ldap";

const PEER: &str = "192.0.2.7:40000";
/// A fixed "now" for the scorer, so a run does not depend on the date.
const SCORE_NOW: i64 = 1_700_000_000;

/// Messages in jo's INBOX (and one in Archive) of every session fixture:
/// plain, alternative, nested multipart with an attached message, 8-bit.
pub const FIXTURE_MESSAGES: [&str; 4] = [
    "From: Al <al@remote.example>\r\nTo: jo@example.net\r\nSubject: hello\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\nMessage-ID: <1@remote.example>\r\n\r\nHello Jo,\r\n.dot line\r\nbye\r\n",
    "From: news@list.example\r\nTo: jo@example.net\r\nSubject: =?utf-8?q?caf=C3=A9?= news\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain part\r\n--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>html <a href=\"http://x.example/\">part</a></p>\r\n--b1--\r\n",
    "From: Bo <bo@remote.example>\r\nTo: jo@example.net\r\nSubject: fwd: report\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n--outer\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--outer\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@remote.example\r\nSubject: inner\r\nContent-Type: multipart/mixed; boundary=\"inner\"\r\n\r\n--inner\r\nContent-Type: text/plain\r\n\r\ninner text\r\n--inner\r\nContent-Type: application/pdf; name=\"r.pdf\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"r.pdf\"\r\n\r\nJVBERi0xLjQK\r\n--inner--\r\n--outer--\r\n",
    "From: =?iso-8859-1?q?J=F6rg?= <joerg@remote.example>\r\nTo: jo@example.net, sales@example.net\r\nCc: \"Boss\" <boss@example.net>\r\nSubject: a\u{e9} 8bit\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\u{fc}\u{df}e\r\n",
];

// ---------------------------------------------------------------------------
// Process-wide pieces: the runtime, the panic counter, the store template.

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

static PANICS: AtomicUsize = AtomicUsize::new(0);
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

/// Counts every panic of the process (then calls the hook that was there:
/// libFuzzer's, which aborts, or the default one, which prints).
fn watch_panics() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            *LAST_PANIC.lock().unwrap_or_else(|p| p.into_inner()) = info.to_string();
            previous(info);
        }));
    });
}

/// Runs `f`, then fails if anything in the process panicked meanwhile.
fn checked<T>(f: impl FnOnce() -> T) -> T {
    watch_panics();
    let before = PANICS.load(Ordering::SeqCst);
    let out = f();
    if PANICS.load(Ordering::SeqCst) != before {
        let last = LAST_PANIC.lock().unwrap_or_else(|p| p.into_inner()).clone();
        panic!("a panic happened while the input ran: {last}");
    }
    out
}

/// A data folder on tmpfs when there is one (the store fsyncs a lot).
fn temp_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let builder = tempfile::Builder::new()
        .prefix("mxrack-fuzz-")
        .tempdir_in(shm);
    builder.unwrap_or_else(|_| tempfile::tempdir().expect("tempdir"))
}

/// The fixture every session starts from, built once per process (the
/// Argon2 hashing of its passwords is the slow part) and copied per input,
/// so each input runs against the same fresh store.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<tempfile::TempDir> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            // Argon2's smallest cost: the harness measures the sessions, not
            // the hash (a default check under ASan takes most of a second).
            mxrack_auth::argon::set_hash_cost(8, 1);
            let dir = temp_dir();
            let store = Store::open(dir.path()).expect("template store");
            store.account_add("acme").expect("account");
            store.domain_add("example.net", "acme").expect("domain");
            store.mailbox_add(JO, JO_PASSWORD, false).expect("jo");
            store.mailbox_add(BOSS, BOSS_PASSWORD, true).expect("boss");
            store
                .alias_add("sales@example.net", &[JO.to_string()])
                .expect("alias");
            for name in [JO, BOSS, "acme"] {
                store
                    .ldap_set_password(name, &format!("{name}{LDAP_PASSWORD_SUFFIX}"))
                    .expect("ldap password");
            }
            runtime().block_on(async {
                for body in FIXTURE_MESSAGES {
                    let d = Delivery {
                        mail_from: "a@remote.example".into(),
                        local: vec![JO.into()],
                        remote: vec![],
                        body: body.as_bytes().to_vec(),
                        copies: vec![],
                    };
                    store.deliver(d, store.next_id()).await.expect("deliver");
                }
            });
            store.folder_create(JO, "Archive").expect("folder");
            store.shutdown();
            drop(store);
            dir
        })
        .path()
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read template") {
        let entry = entry.expect("template entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            std::fs::create_dir(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            copy_file(&entry.path(), &target);
        }
    }
}

/// Copies one file, again when a signal interrupted the copy (libFuzzer's
/// own timer signals reach this process: one EINTR stopped a 30-minute run).
fn copy_file(from: &Path, to: &Path) {
    for _ in 0..100 {
        match std::fs::copy(from, to) {
            Ok(_) => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("copy {}: {e}", from.display()),
        }
    }
    panic!("copy {}: interrupted 100 times", from.display());
}

/// A fresh copy of the fixture store.
fn fresh_store() -> (tempfile::TempDir, Arc<Store>) {
    let template = template();
    let dir = temp_dir();
    copy_dir(template, dir.path());
    let store = Store::open(dir.path()).expect("store copy");
    (dir, store)
}

/// The one authentication service with small budgets and no failure delay.
fn auth() -> Arc<mxrack_auth::AuthService> {
    Arc::new(mxrack_auth::AuthService::new(mxrack_config::Auth {
        network_attempts_max: AUTH_ATTEMPTS_MAX,
        account_attempts_max: AUTH_ATTEMPTS_MAX,
        pair_attempts_max: 3,
        failure_delay_ms: 0,
        failure_delay_max_ms: 0,
        ..mxrack_config::Auth::default()
    }))
}

/// What one session input did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRun {
    /// Bytes of client input used (after the cut).
    pub sent: usize,
    /// Bytes the server wrote back.
    pub received: usize,
}

/// Sends `data` as the client (then closes the client's writing side) while
/// reading everything the server writes, and waits for the session to end.
async fn drive<F>(data: &[u8], session: impl FnOnce(BoxStream) -> F) -> SessionRun
where
    F: Future<Output = ()> + Send + 'static,
{
    let (client, server) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(session(Box::new(server)));
    let (mut rd, mut wr) = tokio::io::split(client);
    // For writing seeds: MXRACK_FUZZ_ECHO=1 prints what the server wrote.
    let echo = std::env::var_os("MXRACK_FUZZ_ECHO").is_some();
    let reader = async {
        let mut received = 0usize;
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
            received += n;
            if echo {
                eprint!("{}", String::from_utf8_lossy(&buf[..n]));
            }
        }
        received
    };
    let writer = async {
        // A session may close before reading everything: that is fine.
        let _ = wr.write_all(data).await;
        let _ = wr.shutdown().await;
        // Keep the write half alive (dropping it is not an EOF on a split
        // duplex until both halves go) until the session ends.
        wr
    };
    let all = async {
        let (received, wr) = tokio::join!(reader, writer);
        (received, wr)
    };
    let (received, _wr) = match tokio::time::timeout(SESSION_BUDGET, all).await {
        Ok(r) => r,
        Err(_) => panic!(
            "the session did not end within {SESSION_BUDGET:?} after the client closed (a hang)"
        ),
    };
    match tokio::time::timeout(SESSION_BUDGET, task).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(Err(e)) => panic!("session task failed: {e}"),
        Err(_) => panic!("the session task did not end after closing its stream (a hang)"),
    }
    SessionRun {
        sent: data.len(),
        received,
    }
}

fn cut(data: &[u8], max: usize) -> &[u8] {
    &data[..data.len().min(max)]
}

fn peer() -> SocketAddr {
    PEER.parse().expect("peer")
}

/// Runs one input as a session against a fresh fixture store.
fn session_input<F>(data: &[u8], start: impl FnOnce(Arc<Store>, BoxStream) -> F) -> SessionRun
where
    F: Future<Output = ()> + Send + 'static,
{
    checked(|| {
        let (_dir, store) = fresh_store();
        let run = runtime().block_on(drive(cut(data, INPUT_BYTES_MAX), |stream| {
            start(store.clone(), stream)
        }));
        store.shutdown();
        run
    })
}

// ---------------------------------------------------------------------------
// The targets.

/// One SMTP session. The first byte picks the mode: `S` (or any odd byte
/// but `M`) is submission on port 587 without TLS and with
/// `allow_plaintext_auth`, so AUTH is reachable; anything else is MX. The
/// rest is what the client sends.
pub fn smtp_session(data: &[u8]) -> SessionRun {
    let (mode, rest) = match data.split_first() {
        Some((&b'S', rest)) => (mxrack_smtp::Mode::Submission, rest),
        Some((&b'M', rest)) => (mxrack_smtp::Mode::Mx, rest),
        Some((&b, rest)) if b % 2 == 1 => (mxrack_smtp::Mode::Submission, rest),
        Some((_, rest)) => (mxrack_smtp::Mode::Mx, rest),
        None => (mxrack_smtp::Mode::Mx, data),
    };
    session_input(rest, move |store, stream| {
        let svc = Arc::new(mxrack_smtp::SmtpService {
            hostname: "mx.example.net".into(),
            primary_domain: "example.net".into(),
            limits: mxrack_config::Smtp {
                max_message_bytes: 65_536,
                allow_plaintext_auth: true,
                ..mxrack_config::Smtp::default()
            },
            store,
            tls: None,
            auth: auth(),
            outbound: None,
        });
        let shutdown = Shutdown::new();
        let signal = shutdown.signal();
        async move {
            mxrack_smtp::run_session(svc, mode, stream, peer(), signal).await;
            drop(shutdown);
        }
    })
}

/// One IMAP session (plaintext login allowed) on a mailbox with messages
/// in its INBOX and a second folder; the spam scorer learns from moves.
pub fn imap_session(data: &[u8]) -> SessionRun {
    session_input(data, |store, stream| {
        let svc = Arc::new(mxrack_imap::ImapService {
            hostname: "mx.example.net".into(),
            limits: mxrack_config::Imap {
                allow_plaintext_auth: true,
                max_literal_bytes: 65_536,
                ..mxrack_config::Imap::default()
            },
            // The session only trains the classifier (moves into and out of
            // Junk), which reads no rules: compiling the embedded rules for
            // every input cost a third of this target's speed.
            scorer: Some(Arc::new(
                mxrack_filter::Scorer::new("", store.clone()).expect("no rules"),
            )),
            store,
            tls: None,
            auth: auth(),
        });
        let shutdown = Shutdown::new();
        let signal = shutdown.signal();
        async move {
            mxrack_imap::run_session(svc, mxrack_imap::Mode::Plain, stream, peer(), signal).await;
            drop(shutdown);
        }
    })
}

/// One POP3 session (plaintext USER/PASS and AUTH allowed) on jo's INBOX.
pub fn pop3_session(data: &[u8]) -> SessionRun {
    session_input(data, |store, stream| {
        let svc = Arc::new(mxrack_pop3::Pop3Service::new(
            "pop.example.net".into(),
            mxrack_config::Pop3 {
                allow_plaintext_auth: true,
                ..mxrack_config::Pop3::default()
            },
            store,
            None,
            auth(),
        ));
        let shutdown = Shutdown::new();
        let signal = shutdown.signal();
        async move {
            mxrack_pop3::run_session(svc, mxrack_pop3::Mode::Pop3, stream, peer(), signal).await;
            drop(shutdown);
        }
    })
}

/// One LDAP connection (the real connection loop: framing, `handle` on a
/// blocking thread, replies) on port 389 without TLS and with
/// `allow_plaintext_bind`, base `dc=example,dc=net`.
pub fn ldap_session(data: &[u8]) -> SessionRun {
    session_input(data, |store, stream| {
        let svc = Arc::new(mxrack_ldap::LdapService::new(
            mxrack_config::Ldap {
                allow_plaintext_bind: true,
                max_message_bytes: 65_536,
                ..mxrack_config::Ldap::default()
            },
            "example.net",
            store,
            None,
            auth(),
        ));
        let shutdown = Shutdown::new();
        let signal = shutdown.signal();
        async move {
            mxrack_ldap::run_connection(svc, mxrack_ldap::Mode::StartTls, stream, peer(), signal)
                .await;
            drop(shutdown);
        }
    })
}

/// One HTTP/1.1 connection to CardDAV (issue 18): hyper reads the client's
/// requests (the input, several may be pipelined) and each goes to
/// `mxrack_dav::handle` as the web port's HTTPS listener hands it over,
/// against the fixture store (jo's and boss's books; seeds log in with
/// Basic credentials of the fixture passwords).
pub fn dav_session(data: &[u8]) -> SessionRun {
    session_input(data, |store, stream| {
        let svc = Arc::new(mxrack_dav::DavService::new(
            store,
            auth(),
            mxrack_config::Ldap {
                max_message_bytes: 65_536,
                ..mxrack_config::Ldap::default()
            },
            Duration::from_secs(5),
        ));
        async move {
            let service = hyper::service::service_fn(move |req| {
                let svc = svc.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(mxrack_dav::handle(svc, req, peer()).await)
                }
            });
            // half_close: the harness shuts its writing side after the
            // last request, and that request still gets its answer.
            let _ = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .max_buf_size(16 * 1024)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        }
    })
}

/// The spam scorer on a store of its own (it only reads the classifier's
/// tables when scoring), made once.
fn scorer() -> &'static mxrack_filter::Scorer {
    static SCORER: OnceLock<(tempfile::TempDir, mxrack_filter::Scorer)> = OnceLock::new();
    &SCORER
        .get_or_init(|| {
            let dir = temp_dir();
            let store = Store::open(dir.path()).expect("scorer store");
            (dir, mxrack_filter::Scorer::embedded(store))
        })
        .1
}

/// SpamAssassin's rule files the `spam_rules` target scores with: Debian's
/// package (firmware/scripts/test.sh installs it).
pub const SA_RULES_DIR: &str = "/usr/share/spamassassin";

/// The scorer of `[spam] spamassassin_rules = SA_RULES_DIR` as the server
/// makes it (joined with mxrack's own rules, the default), made once.
fn sa_scorer() -> &'static mxrack_filter::Scorer {
    static SCORER: OnceLock<(tempfile::TempDir, mxrack_filter::Scorer)> = OnceLock::new();
    &SCORER
        .get_or_init(|| {
            let dir = temp_dir();
            let store = Store::open(dir.path()).expect("scorer store");
            let config = mxrack_config::Spam {
                spamassassin_rules: Some(SA_RULES_DIR.into()),
                ..mxrack_config::Spam::default()
            };
            let scorer = mxrack_filter::Scorer::from_config(&config, store)
                .unwrap_or_else(|e| panic!("{SA_RULES_DIR}: {e} (apt-get install spamassassin)"));
            (dir, scorer)
        })
        .1
}

/// One message scored with SpamAssassin's rule files joined with mxrack's
/// own (issue 16): the rule reader's patterns over the body paragraphs,
/// raw chunks, URIs and headers, the eval tests, the Received parser and
/// the metas. The input's first line is the client's HELO (at most 255
/// bytes, as the SMTP session allows), the rest the message from
/// 203.0.113.7; a first byte of `D` adds the MX's DMARC reject mark.
/// Returns the length of the scorer's header.
pub fn spam_rules(data: &[u8]) -> usize {
    let data = cut(data, MESSAGE_BYTES_MAX);
    let (helo, message) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let helo = String::from_utf8_lossy(cut(helo, 255)).into_owned();
    let marks: Vec<String> = if data.first() == Some(&b'D') {
        vec!["DMARC_REJECT".to_string()]
    } else {
        Vec::new()
    };
    checked(|| {
        let hop = mxrack_filter::relays::Relay::hop(
            std::net::IpAddr::from([203, 0, 113, 7]),
            &helo,
            "mx.example.net",
            "4f2a9c",
        );
        let score = sa_scorer().score_with_auth_at(
            message,
            "sender@remote.example",
            &marks,
            Some(hop),
            SCORE_NOW,
        );
        assert!(score.value.is_finite(), "a score that is not a number");
        score.header().len()
    })
}

/// Sections asked of every message: the whole, its header and text, and
/// the first parts two and three levels down with each section text.
fn sections() -> Vec<Section> {
    let texts = [
        None,
        Some(SectionText::Header),
        Some(SectionText::Text),
        Some(SectionText::Mime),
        Some(SectionText::HeaderFields {
            not: false,
            fields: vec!["Subject".into(), "From".into()],
        }),
        Some(SectionText::HeaderFields {
            not: true,
            fields: vec!["Received".into()],
        }),
    ];
    let paths: [&[u32]; 8] = [&[], &[1], &[2], &[3], &[1, 1], &[2, 1], &[2, 2], &[2, 1, 2]];
    let mut out = Vec::new();
    for path in paths {
        for text in &texts {
            if path.is_empty() && text == &Some(SectionText::Mime) {
                continue;
            }
            out.push(Section {
                part: path.to_vec(),
                text: text.clone(),
            });
        }
    }
    out
}

/// SEARCH keys that read the message (the others only read metadata).
fn search_keys() -> Vec<SearchKey> {
    let day = SCORE_NOW / 86_400;
    vec![
        SearchKey::Body("hello".into()),
        SearchKey::Text("caf\u{e9}".into()),
        SearchKey::Header("Subject".into(), "report".into()),
        SearchKey::Header("X-Absent".into(), String::new()),
        SearchKey::SentBefore(day),
        SearchKey::SentOn(day),
        SearchKey::SentSince(day),
        SearchKey::Or(
            Box::new(SearchKey::Not(Box::new(SearchKey::Body("".into())))),
            Box::new(SearchKey::Larger(100)),
        ),
    ]
}

/// Renders everything IMAP renders of a message; returns the bytes rendered.
fn render(raw: &[u8], msg: &Message<'_>) -> usize {
    let structure = fetch::Structure::of(msg);
    assert!(
        structure.bodystructure.starts_with(b"(") && structure.bodystructure.ends_with(b")"),
        "BODYSTRUCTURE is not a parenthesized list"
    );
    let mut rendered =
        structure.envelope.len() + structure.body.len() + structure.bodystructure.len();
    for section in sections() {
        rendered += fetch::section_bytes(raw, msg, &section).map_or(0, |b| b.len());
    }
    let header_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |i| i + 4);
    rendered += fetch::header_fields(&raw[..header_end], &["Subject".into()], false).len();
    let meta = MessageMeta {
        uid: 1,
        blob: 1,
        size: raw.len() as u64,
        internal_date: SCORE_NOW,
        flags: vec!["\\Seen".into()],
        modseq: 1,
    };
    let candidate = mxrack_imap::search::Candidate {
        seq: 1,
        max_seq: 1,
        max_uid: 1,
        meta: &meta,
        raw: Some(raw),
        parsed: Some(msg),
    };
    for key in search_keys() {
        let _ = mxrack_imap::search::matches(&key, &candidate);
    }
    rendered
}

/// One message through everything that parses a message: the bounded MIME
/// walk, IMAP ENVELOPE/BODY/BODYSTRUCTURE and BODY[section] rendering,
/// SEARCH keys that read the content, header lookups and the spam scorer.
/// Returns the bytes IMAP rendered (0 when the message did not parse) plus
/// the length of the scorer's header.
pub fn mime_structure(data: &[u8]) -> usize {
    let raw = cut(data, MESSAGE_BYTES_MAX);
    checked(|| {
        let scan = mxrack_mime::scan(raw);
        drop(scan);
        let _ = mxrack_mime::header_raw(raw, "Message-ID");
        let _ = mxrack_mime::header_raw(raw, "Subject");
        let rendered = fetch::parse(raw).map_or(0, |msg| render(raw, &msg));
        let score = scorer().score_at(raw, "sender@remote.example", SCORE_NOW);
        rendered + score.header().len()
    })
}

/// The update bundles' signing key of the fuzz target: a fixed seed, so
/// the committed seeds verify and mutations reach the image copy.
fn update_key() -> mxrack_update::bundle::SigningKey {
    mxrack_update::bundle::SigningKey::from_seed_unchecked(&[0x6d; 32]).expect("fixed seed")
}

/// A bundle of `payload` signed with the fuzz target's key (the seeds).
pub fn update_bundle_seed(payload: &[u8], version: &str) -> Vec<u8> {
    let mut out = Vec::new();
    mxrack_update::bundle::write_bundle(
        &mut out,
        payload,
        "qemu-x86_64",
        version,
        None,
        &update_key(),
    )
    .expect("seed bundle");
    out
}

/// One update bundle (issue 14) through what reads it on the appliance:
/// the header, the signature check against a keyring, the image copy with
/// its hash; the same bytes as a UKI's `.osrel` lookup and as boot entry
/// names. Returns how far it got (0: refused at the header).
pub fn update_bundle(data: &[u8]) -> usize {
    use mxrack_update::{bundle, entries};
    let data = cut(data, MESSAGE_BYTES_MAX);
    checked(|| {
        let key = update_key();
        let trusted = vec![bundle::public_key(&bundle::public_of(&key), "fuzz").expect("key")];
        let mut reader = data;
        let mut reached = match bundle::read_header(&mut reader, &trusted) {
            Ok(v) => match bundle::copy_payload(&mut reader, &mut std::io::sink(), &v.manifest) {
                Ok(()) => 3,
                Err(_) => 2,
            },
            Err(_) => 0,
        };
        if let Ok(osrel) = bundle::osrel_of(data) {
            reached += usize::from(bundle::osrel_value(&osrel, "IMAGE_VERSION").is_some());
        }
        let names = String::from_utf8_lossy(data);
        let listed: Vec<_> = names.lines().take(64).filter_map(entries::parse).collect();
        reached
            + entries::Assessment::new(listed, names.lines().next())
                .entries
                .len()
    })
}

/// A policy host's HTTPS answer (issue 16, MTA-STS): the HTTP response
/// parser, the policy parser on its body and on the raw bytes, every
/// policy's MX matching, and the TXT record parser. Returns how far it got
/// (0: the answer was refused).
pub fn mta_sts_policy(data: &[u8]) -> usize {
    use mxrack_relay::mta_sts;
    let data = cut(data, 128 * 1024);
    checked(|| {
        let text = String::from_utf8_lossy(data);
        let mut reached = usize::from(mta_sts::parse_txt(&text).is_some());
        for body in [mta_sts::parse_response(data).ok(), Some(data)]
            .into_iter()
            .flatten()
        {
            reached += 1;
            if let Ok(policy) = mta_sts::parse_policy(&String::from_utf8_lossy(body)) {
                reached += 1 + text
                    .split(['\n', ' '])
                    .take(256)
                    .filter(|host| policy.matches(host))
                    .count();
            }
        }
        reached
    })
}
