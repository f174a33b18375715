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
