use super::*;
use crate::keys::{Algorithm, KeyStore};
use crate::testutil::{put_dkim, put_dmarc, put_spf, silent_resolver};

const MSG: &str = "From: Alice <alice@origin.example>\r\nTo: bob@here.example\r\nSubject: lunch\r\nDate: Mon, 1 Jun 2026 10:00:00 +0000\r\nMessage-ID: <1@origin.example>\r\n\r\nSee you at noon.\r\n";

fn cfg() -> mxrack_config::MailAuth {
    mxrack_config::MailAuth::default()
}

fn env(from: &str) -> Envelope {
    Envelope {
        ip: "192.0.2.7".parse().unwrap(),
        helo: "mail.origin.example".into(),
        mail_from: from.into(),
    }
}

fn far() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(30)
}

#[tokio::test]
async fn failing_dmarc_with_reject_policy_is_marked() {
    let (resolver, _guard) = silent_resolver();
    let inbound = Inbound::new(resolver, "mx.here.example".into(), &cfg());
    let c = inbound.txt_cache();
    put_spf(c, "mail.origin.example", "v=spf1 -all");
    put_spf(c, "origin.example", "v=spf1 ip4:198.51.100.1 -all");
    put_dmarc(c, "origin.example", "v=DMARC1; p=reject");
    let v = inbound
        .check(&env("alice@origin.example"), MSG.as_bytes(), true, far())
        .await;
    assert!(
        v.header
            .starts_with("Authentication-Results: mx.here.example;"),
        "{}",
        v.header
    );
    assert!(v.header.contains("spf=fail"), "{}", v.header);
    assert!(v.header.contains("dmarc=fail"), "{}", v.header);
    assert!(v.header.contains("policy.dmarc=reject"), "{}", v.header);
    assert_eq!(v.marks, vec!["DMARC_REJECT".to_string()]);

    // Quarantine gives the other mark; p=none none.
    put_dmarc(c, "origin.example", "v=DMARC1; p=quarantine");
    let v = inbound
        .check(&env("alice@origin.example"), MSG.as_bytes(), true, far())
        .await;
    assert_eq!(v.marks, vec!["DMARC_QUARANTINE".to_string()]);
    put_dmarc(c, "origin.example", "v=DMARC1; p=none");
    let v = inbound
        .check(&env("alice@origin.example"), MSG.as_bytes(), true, far())
        .await;
    assert!(v.marks.is_empty());
}

#[tokio::test]
async fn aligned_dkim_passes_dmarc_and_a_changed_body_fails() {
    let dir = tempfile::tempdir().unwrap();
    let ks = KeyStore::new(dir.path());
    let key = ks
        .create("origin.example", "s1", Algorithm::Ed25519, 0)
        .unwrap();
    let signed = format!(
        "{}{MSG}",
        crate::outbound::dkim_signature(&key, MSG.as_bytes()).unwrap()
    );
    let (resolver, _guard) = silent_resolver();
    let inbound = Inbound::new(resolver, "mx.here.example".into(), &cfg());
    let c = inbound.txt_cache();
    put_dkim(c, &key.dns_name(), &key.txt_record());
    put_spf(c, "mail.origin.example", "v=spf1 -all");
    // Forwarded: SPF fails, DKIM carries DMARC (RFC 7489 4.2).
    put_spf(c, "origin.example", "v=spf1 ip4:198.51.100.1 -all");
    put_dmarc(c, "origin.example", "v=DMARC1; p=reject");
    let v = inbound
        .check(&env("alice@origin.example"), signed.as_bytes(), true, far())
        .await;
    assert!(v.header.contains("dkim=pass"), "{}", v.header);
    assert!(v.header.contains("header.d=origin.example"), "{}", v.header);
    assert!(v.header.contains("dmarc=pass"), "{}", v.header);
    assert!(v.marks.is_empty());

    let tampered = signed.replace("noon", "one");
    let v = inbound
        .check(
            &env("alice@origin.example"),
            tampered.as_bytes(),
            true,
            far(),
        )
        .await;
    assert!(
        v.header.contains("dkim=neutral") || v.header.contains("dkim=fail"),
        "{}",
        v.header
    );
    assert_eq!(v.marks, vec!["DMARC_REJECT".to_string()]);

    // Only the start of a longer message: signatures are not held against it.
    let v = inbound
        .check(
            &env("alice@origin.example"),
            tampered.as_bytes(),
            false,
            far(),
        )
        .await;
    assert!(
        v.header.contains("body larger than the checked part"),
        "{}",
        v.header
    );
    assert!(v.marks.is_empty());
}

#[tokio::test]
async fn signatures_over_the_limit_are_not_verified() {
    let (resolver, _guard) = silent_resolver();
    let mut c = cfg();
    c.dkim_signatures_max = 1;
    let inbound = Inbound::new(resolver, "mx.here.example".into(), &c);
    let sig =
        "DKIM-Signature: v=1; a=rsa-sha256; d=origin.example; s=x; h=from; bh=AAAA; b=AAAA\r\n";
    let msg = format!("{sig}{sig}{sig}{MSG}");
    let v = inbound
        .check(&env("alice@origin.example"), msg.as_bytes(), true, far())
        .await;
    assert!(
        v.header
            .contains("dkim=policy (2 more signatures not checked)"),
        "{}",
        v.header
    );
}

#[tokio::test]
async fn a_silent_dns_server_costs_the_deadline_and_gives_temperror() {
    let (resolver, _guard) = silent_resolver();
    let inbound = Inbound::new(resolver, "mx.here.example".into(), &cfg());
    let started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(150);
    let v = inbound
        .check(&env("alice@origin.example"), MSG.as_bytes(), true, deadline)
        .await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(v.header.contains("temperror"), "{}", v.header);
    assert!(v.marks.is_empty());
}

#[test]
fn submission_header_cannot_be_injected_into() {
    let (resolver, _guard) = silent_resolver();
    let inbound = Inbound::new(resolver, "mx.here.example".into(), &cfg());
    assert_eq!(
        inbound.submission_header("bob@here.example; dkim=pass"),
        "Authentication-Results: mx.here.example; auth=pass smtp.auth=bob@here.exampledkim=pass\r\n"
    );
}

/// A DNS server on 127.0.0.1 that answers every query NXDOMAIN without an
/// SOA (as the resolver that slowed the relay bench did), SERVFAIL for
/// names containing "servfail", or, for names in `spf`, with that TXT
/// record; it counts the queries per name.
struct NxServer {
    addr: std::net::SocketAddr,
    asked: Arc<Mutex<HashMap<String, usize>>>,
}

impl NxServer {
    fn start(spf: &'static [(&'static str, &'static str)]) -> NxServer {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let asked: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let seen = asked.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, peer)) = sock.recv_from(&mut buf) {
                let q = &buf[..n];
                if n < 17 {
                    continue;
                }
                // The question's name: labels from byte 12 to the zero.
                let (mut i, mut labels) = (12, Vec::new());
                while i < n && q[i] != 0 {
                    let len = q[i] as usize;
                    labels.push(String::from_utf8_lossy(&q[i + 1..i + 1 + len]).to_lowercase());
                    i += 1 + len;
                }
                let end = i + 5; // zero, QTYPE, QCLASS
                let name = format!("{}.", labels.join("."));
                *seen.lock().unwrap().entry(name.clone()).or_default() += 1;
                let mut r = q[..2].to_vec();
                let record = spf.iter().find(|(d, _)| format!("{d}.") == name);
                // QR, RD, RA; rcode NXDOMAIN (3), SERVFAIL (2) for names
                // with "servfail" in them, or NOERROR with one answer.
                r.extend_from_slice(if record.is_some() {
                    &[0x81, 0x80]
                } else if name.contains("servfail") {
                    &[0x81, 0x82]
                } else {
                    &[0x81, 0x83]
                });
                r.extend_from_slice(&[0, 1, 0, u8::from(record.is_some()), 0, 0, 0, 0]);
                r.extend_from_slice(&q[12..end]);
                if let Some((_, txt)) = record {
                    r.extend_from_slice(&[0xc0, 12, 0, 16, 0, 1, 0, 0, 1, 44]);
                    r.extend_from_slice(&((txt.len() + 1) as u16).to_be_bytes());
                    r.push(txt.len() as u8);
                    r.extend_from_slice(txt.as_bytes());
                }
                let _ = sock.send_to(&r, peer);
            }
        });
        NxServer { addr, asked }
    }

    fn asked(&self, name: &str) -> usize {
        self.asked.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    fn resolver(&self) -> mail_auth::hickory_resolver::TokioResolver {
        crate::dns::resolver(&mxrack_config::Dns {
            servers: vec![self.addr],
            timeout_ms: 500,
            attempts: 1,
            ..Default::default()
        })
        .unwrap()
    }
}

/// Waits for the negative answers' background lookups to land.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_domain_without_spf_or_dmarc_is_asked_once_not_per_message() {
    let dns = NxServer::start(&[("relay.nosuch.example", "v=spf1 -all")]);
    let inbound = Inbound::new(dns.resolver(), "mx.here.example".into(), &cfg());
    let msg = "From: a@nosuch.example\r\nSubject: x\r\n\r\nhi\r\n";
    let env = Envelope {
        ip: "192.0.2.7".parse().unwrap(),
        helo: "relay.nosuch.example".into(),
        mail_from: "a@nosuch.example".into(),
    };
    let first = inbound.check(&env, msg.as_bytes(), true, far()).await;
    settle().await;
    for _ in 0..5 {
        let v = inbound.check(&env, msg.as_bytes(), true, far()).await;
        // The same verdict from the remembered answers.
        assert_eq!(v, first);
    }
    settle().await;
    assert!(first.header.contains("spf=none"), "{}", first.header);
    assert!(first.header.contains("dmarc=none"), "{}", first.header);
    // Once by the first check, once more to learn it is "no such record".
    for name in [
        "nosuch.example.",
        "_dmarc.nosuch.example.",
        "_dmarc.example.",
    ] {
        assert_eq!(dns.asked(name), 2, "{name}: {:?}", dns.asked);
    }
    // A record that exists is kept by mail-auth itself: asked once.
    assert_eq!(dns.asked("relay.nosuch.example."), 1, "{:?}", dns.asked);
}

#[tokio::test]
async fn negative_answers_are_not_kept_when_turned_off_or_after_their_time() {
    let dns = NxServer::start(&[]);
    let env = env("a@nosuch.example");
    let msg = "From: a@nosuch.example\r\nSubject: x\r\n\r\nhi\r\n";
    let off = Inbound::new(dns.resolver(), "mx".into(), &cfg()).with_negative_ttl(Duration::ZERO);
    for _ in 0..3 {
        off.check(&env, msg.as_bytes(), true, far()).await;
    }
    settle().await;
    assert_eq!(dns.asked("nosuch.example."), 3);

    let short = Inbound::new(dns.resolver(), "mx".into(), &cfg())
        .with_negative_ttl(Duration::from_millis(400));
    short.check(&env, msg.as_bytes(), true, far()).await;
    settle().await;
    short.check(&env, msg.as_bytes(), true, far()).await;
    assert_eq!(dns.asked("nosuch.example."), 5, "kept: no query");
    tokio::time::sleep(Duration::from_millis(500)).await;
    short.check(&env, msg.as_bytes(), true, far()).await;
    settle().await;
    assert_eq!(dns.asked("nosuch.example."), 7, "expired: asked again");
}

#[tokio::test]
async fn a_server_that_does_not_answer_is_never_remembered() {
    // Timeouts are temperror each time, never kept as "no such record".
    let (resolver, _guard) = silent_resolver();
    let inbound = Inbound::new(resolver, "mx".into(), &cfg());
    let msg = "From: a@nosuch.example\r\nSubject: x\r\n\r\nhi\r\n";
    let v = inbound
        .check(&env("a@nosuch.example"), msg.as_bytes(), true, far())
        .await;
    assert!(v.header.contains("spf=temperror"), "{}", v.header);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(inbound.txt_cache().get("nosuch.example.").is_none());
}

#[tokio::test]
async fn a_server_failure_is_never_kept_as_no_such_record() {
    // hickory reports SERVFAIL as "no records found" too; a resolver in
    // trouble must not turn a p=reject domain into "no DMARC" for a minute.
    let dns = NxServer::start(&[]);
    let inbound = Inbound::new(dns.resolver(), "mx".into(), &cfg());
    let msg = "From: a@servfail.example\r\nSubject: x\r\n\r\nhi\r\n";
    for _ in 0..2 {
        inbound
            .check(&env("a@servfail.example"), msg.as_bytes(), true, far())
            .await;
        settle().await;
    }
    let c = inbound.txt_cache();
    assert!(c.get("servfail.example.").is_none());
    assert!(c.get("_dmarc.servfail.example.").is_none());
    // The NXDOMAIN of the TLD's DMARC name is kept.
    assert!(c.get("_dmarc.example.").is_some());
    // Asked again by the second message: not taken from a cache.
    assert!(dns.asked("servfail.example.") >= 2, "{:?}", dns.asked);
}
