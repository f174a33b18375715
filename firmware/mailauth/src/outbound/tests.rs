use super::*;
use crate::inbound::{Envelope, Inbound};
use crate::testutil::{put_dkim, put_dmarc, put_spf, silent_resolver};

const MSG: &str = "Authentication-Results: mx.fwd.example;\r\n\tspf=pass smtp.mailfrom=alice@origin.example;\r\n\tdmarc=pass header.from=origin.example\r\nFrom: Alice <alice@origin.example>\r\nTo: bob@fwd.example\r\nSubject: lunch\r\nDate: Mon, 1 Jun 2026 10:00:00 +0000\r\nMessage-ID: <1@origin.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nSee you at noon.\r\n";

#[test]
fn aar_payload_is_ours_and_first_only() {
    assert_eq!(
        aar_payload(MSG.as_bytes(), "mx.fwd.example"),
        "mx.fwd.example; spf=pass smtp.mailfrom=alice@origin.example; dmarc=pass header.from=origin.example"
    );
    assert_eq!(
        aar_payload(MSG.as_bytes(), "other.example"),
        "other.example; none"
    );
    let forged_below = format!("Authentication-Results: elsewhere.example; dkim=pass\r\n{MSG}");
    assert_eq!(
        aar_payload(forged_below.as_bytes(), "mx.fwd.example"),
        "mx.fwd.example; none"
    );
}

#[test]
fn from_domain() {
    assert_eq!(
        header_from_domain(MSG.as_bytes()).as_deref(),
        Some("origin.example")
    );
    assert_eq!(
        header_from_domain(b"From: x@Y.Example\r\n\r\n").as_deref(),
        Some("y.example")
    );
    assert_eq!(header_from_domain(b"Subject: no from\r\n\r\n"), None);
}

#[tokio::test]
async fn forwarded_copy_gets_dkim_and_an_arc_set_that_verify() {
    let dir = tempfile::tempdir().unwrap();
    let ks = KeyStore::new(dir.path());
    let rsa = ks.create("fwd.example", "r1", Algorithm::Rsa, 0).unwrap();
    let ed = ks
        .create("fwd.example", "e1", Algorithm::Ed25519, 0)
        .unwrap();
    let (resolver, _guard) = silent_resolver();
    let signer = Signer::new(
        ks.clone(),
        resolver.clone(),
        "mx.fwd.example".into(),
        "fwd.example".into(),
        Duration::from_secs(2),
    );
    let headers = signer
        .sign(Outgoing {
            transport: "forward",
            mail_from: "SRS0=abcd=XY=origin.example=alice@fwd.example",
            message: MSG.as_bytes(),
        })
        .await;
    assert!(
        headers.starts_with("ARC-Seal: i=1; a=rsa-sha256;"),
        "{headers}"
    );
    assert!(headers.contains("ARC-Authentication-Results: i=1; mx.fwd.example; spf=pass"));
    assert_eq!(headers.matches("DKIM-Signature:").count(), 2);
    assert!(headers.contains("a=ed25519-sha256"));
    assert!(!folds_before_end(&headers), "{headers}");
    let sent = format!("{headers}{MSG}");

    // mail-auth's own verifier, with the published records.
    let inbound = Inbound::new(resolver, "mx.dest.example".into(), &Default::default());
    let c = inbound.txt_cache();
    put_dkim(c, &rsa.dns_name(), &rsa.txt_record());
    put_dkim(c, &ed.dns_name(), &ed.txt_record());
    put_spf(c, "mail.fwd.example", "v=spf1 -all");
    put_spf(c, "fwd.example", "v=spf1 -all");
    put_dmarc(c, "origin.example", "v=DMARC1; p=reject");
    let v = inbound
        .check(
            &Envelope {
                ip: "192.0.2.9".parse().unwrap(),
                helo: "mail.fwd.example".into(),
                mail_from: "SRS0=abcd=XY=origin.example=alice@fwd.example".into(),
            },
            sent.as_bytes(),
            true,
            tokio::time::Instant::now() + Duration::from_secs(10),
        )
        .await;
    assert_eq!(v.header.matches("dkim=pass").count(), 2, "{}", v.header);
    assert!(v.header.contains("arc=pass"), "{}", v.header);

    // Not a forward, From not ours: nothing to sign with.
    let none = signer
        .sign(Outgoing {
            transport: "outbound",
            mail_from: "alice@origin.example",
            message: MSG.as_bytes(),
        })
        .await;
    assert_eq!(none, "");
}

#[tokio::test]
async fn keys_are_cached_and_a_new_key_is_used_at_the_next_message() {
    let dir = tempfile::tempdir().unwrap();
    let ks = KeyStore::new(dir.path());
    let (resolver, _guard) = silent_resolver();
    let signer = Signer::new(
        ks.clone(),
        resolver,
        "mx.fwd.example".into(),
        "fwd.example".into(),
        Duration::from_secs(2),
    );
    let out = || Outgoing {
        transport: "outbound",
        mail_from: "bob@fwd.example",
        message: b"From: bob@fwd.example\r\nSubject: x\r\n\r\nhi\r\n",
    };
    // No key yet: unsigned.
    assert_eq!(signer.sign(out()).await, "");
    ks.create("fwd.example", "e1", Algorithm::Ed25519, 0)
        .unwrap();
    // A folder changed just now is read at every message (its time may not
    // mark the change yet): the new key signs at once.
    let one = signer.sign(out()).await;
    assert_eq!(one.matches("DKIM-Signature:").count(), 1, "{one}");
    assert!(one.contains("s=e1"), "{one}");
    // Once the folder's time has settled, a read is cached: the key file
    // rewritten in place (the folder's time unchanged) is not read again.
    let folder = dir.path().join("dkim/fwd.example");
    let old = std::time::SystemTime::now() - Duration::from_secs(30);
    std::fs::File::open(&folder)
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert_eq!(
        signer.sign(out()).await.matches("DKIM-Signature:").count(),
        1
    );
    std::fs::write(folder.join("e1.json"), b"not json").unwrap();
    let again = signer.sign(out()).await;
    assert_eq!(again.matches("DKIM-Signature:").count(), 1, "{again}");
    // A second key changes the folder: read again; the new key signs and
    // the damaged file is skipped.
    ks.create("fwd.example", "r1", Algorithm::Rsa, 0).unwrap();
    let two = signer.sign(out()).await;
    assert_eq!(two.matches("DKIM-Signature:").count(), 1, "{two}");
    assert!(two.contains("s=r1"), "{two}");
}
