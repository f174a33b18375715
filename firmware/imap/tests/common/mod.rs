//! The harness of the in-memory IMAP session tests (session.rs,
//! conformance.rs, notify_rev2.rs): a real store in a temporary folder, the
//! real session over a duplex stream, and a line-level client.

// Each test file uses its own part of the harness.
#![allow(dead_code)]

use mxrack_imap::{ImapService, Mode, run_session};
use mxrack_net::Shutdown;
use mxrack_store::{Delivery, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

pub const USER: &str = "jo@example.net";
pub const PASS: &str = "pw-jo-123";

pub struct Harness {
    pub _dir: tempfile::TempDir,
    pub store: Arc<Store>,
    pub svc: Arc<ImapService>,
    pub shutdown: Shutdown,
}

pub fn harness() -> Harness {
    harness_with_literal_max(65_536)
}

pub fn harness_with_literal_max(max_literal_bytes: u64) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = off(|| {
        let store = Store::open(dir.path()).expect("store");
        store.account_add("acme").expect("account");
        store.domain_add("example.net", "acme").expect("domain");
        store.mailbox_add(USER, PASS, false).expect("mailbox");
        store
    });
    let limits = mxrack_config::Imap {
        // The in-memory tests run without TLS.
        allow_plaintext_auth: true,
        max_literal_bytes,
        ..mxrack_config::Imap::default()
    };
    let svc = Arc::new(ImapService {
        hostname: "mx.example.net".into(),
        limits,
        store: store.clone(),
        tls: None,
        auth: test_auth(),
        scorer: None,
    });
    Harness {
        _dir: dir,
        store,
        svc,
        shutdown: Shutdown::new(),
    }
}

/// The appliance's authentication service with small budgets: 3 attempts
/// per (network, account) pair, no failure delay.
pub fn test_auth() -> Arc<mxrack_auth::AuthService> {
    Arc::new(mxrack_auth::AuthService::new(mxrack_config::Auth {
        pair_attempts_max: 3,
        failure_delay_ms: 0,
        ..mxrack_config::Auth::default()
    }))
}

/// Store calls block: the test's own run on a plain thread, off the
/// runtime (the store's debug-build check refuses them on an async worker).
pub fn off<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| s.spawn(f).join().expect("store call"))
}

pub async fn deliver(h: &Harness, body: &str) {
    let d = Delivery {
        mail_from: "a@sender.example".into(),
        local: vec![USER.into()],
        remote: vec![],
        body: body.as_bytes().to_vec(),
        copies: vec![],
    };
    h.store
        .deliver(d, h.store.next_id())
        .await
        .expect("deliver");
}

pub struct Client {
    pub stream: DuplexStream,
    pub pending: Vec<u8>,
}

impl Client {
    /// A session started, its greeting read.
    pub async fn start(h: &Harness) -> Client {
        let (client, server) = tokio::io::duplex(1 << 16);
        let peer = "192.0.2.7:40000".parse().expect("addr");
        tokio::spawn(run_session(
            h.svc.clone(),
            Mode::Plain,
            Box::new(server),
            peer,
            h.shutdown.signal(),
        ));
        let mut c = Client {
            stream: client,
            pending: Vec::new(),
        };
        let greeting = c.line().await;
        assert!(
            greeting.starts_with("* OK [CAPABILITY IMAP4rev1 "),
            "{greeting}"
        );
        c
    }

    pub async fn login(h: &Harness) -> Client {
        let mut c = Client::start(h).await;
        c.send(&format!("l LOGIN {USER} {PASS}\r\n")).await;
        c.until("l OK").await;
        c
    }

    pub async fn send(&mut self, s: &str) {
        self.stream.write_all(s.as_bytes()).await.expect("write");
    }

    /// The next line with its CRLF; empty when the server closed.
    pub async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return String::from_utf8_lossy(&line).into_owned();
            }
            let mut buf = [0u8; 8192];
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buf))
                .await
                .expect("response in time")
                .expect("read");
            if n == 0 {
                return String::new();
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// The next line without its CRLF; the server must not have closed.
    pub async fn text_line(&mut self) -> String {
        let l = self.line().await;
        assert!(!l.is_empty(), "connection closed");
        l.trim_end_matches("\r\n").to_string()
    }

    /// Every line up to and including the one starting with `prefix`.
    pub async fn until(&mut self, prefix: &str) -> String {
        let mut all = String::new();
        loop {
            let l = self.line().await;
            assert!(
                !l.is_empty(),
                "connection closed before {prefix:?}; got {all}"
            );
            all.push_str(&l);
            if l.starts_with(prefix) {
                return all;
            }
            if l.starts_with(&prefix[..prefix.find(' ').unwrap_or(0) + 1]) && prefix.contains(" OK")
            {
                panic!("expected {prefix:?}, got {l:?} after {all}");
            }
        }
    }

    /// Nothing arrives within a short while.
    pub async fn quiet(&mut self) {
        assert!(self.pending.is_empty(), "{:?}", self.pending);
        let mut buf = [0u8; 256];
        let r = tokio::time::timeout(Duration::from_millis(300), self.stream.read(&mut buf)).await;
        assert!(
            r.is_err(),
            "unexpected: {:?}",
            r.map(|n| String::from_utf8_lossy(&buf[..n.unwrap_or(0)]).into_owned())
        );
    }

    /// One table: each step's command (may be empty: only read) and every
    /// line of the answer, exactly (without CRLF).
    pub async fn table(&mut self, steps: &[(&str, Vec<String>)]) {
        for (send, want) in steps {
            if !send.is_empty() {
                self.send(&format!("{send}\r\n")).await;
            }
            let mut got = Vec::new();
            for _ in 0..want.len() {
                got.push(self.text_line().await);
            }
            assert_eq!(&got, want, "after {send:?}");
        }
    }
}
