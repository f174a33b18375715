//! Behaviour of the store through its public API, on temporary folders.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use redb::ReadableTable;

use mxrack_store::{
    Delivery, FlagOp, Id, RELEASED_FILE_GRACE, Resolution, Resolved, SCHEMA_VERSION, Store,
    StoreError, id_hex,
};

fn open(dir: &Path) -> Arc<Store> {
    Store::open(dir).expect("open store")
}

/// A store with account "acme", domains example.com and example.org, and
/// mailboxes bob@example.com, carol@example.com.
fn populated(dir: &Path) -> Arc<Store> {
    let store = open(dir);
    store.account_add("acme").expect("account");
    store.domain_add("example.com", "acme").expect("domain");
    store.domain_add("example.org", "acme").expect("domain");
    store
        .mailbox_add("bob@example.com", "bob-secret", false)
        .expect("mailbox bob");
    store
        .mailbox_add("carol@example.com", "carol-secret", true)
        .expect("mailbox carol");
    store
}

/// A runtime for the async calls (deliveries); the test's own store calls
/// run outside it, on the test thread (the store's debug-build check
/// refuses them on an async worker).
fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime")
}

fn delivery(local: &[&str], remote: &[&str], body: &[u8]) -> Delivery {
    Delivery {
        mail_from: "sender@remote.example".into(),
        local: local.iter().map(|s| s.to_string()).collect(),
        remote: remote.iter().map(|s| s.to_string()).collect(),
        body: body.to_vec(),
        copies: vec![],
    }
}

fn blob_file(dir: &Path, id: Id) -> std::path::PathBuf {
    dir.join("msg").join(id_hex(id))
}

fn local(addrs: &[&str]) -> Resolution {
    Resolution::Deliver(Resolved {
        local: addrs.iter().map(|s| s.to_string()).collect(),
        remote: Vec::new(),
    })
}

#[test]
fn admin_duplicates_and_unknown_names() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = populated(tmp.path());

    let dup = |r: Result<(), StoreError>, k: &str, n: &str| match r {
        Err(StoreError::Duplicate { kind, name }) => {
            assert_eq!((kind, name.as_str()), (k, n));
        }
        other => panic!("expected Duplicate {k} {n}, got {other:?}"),
    };
    let nf = |r: Result<(), StoreError>, k: &str, n: &str| match r {
        Err(StoreError::NotFound { kind, name }) => {
            assert_eq!((kind, name.as_str()), (k, n));
        }
        other => panic!("expected NotFound {k} {n}, got {other:?}"),
    };

    dup(store.account_add("ACME"), "account", "acme");
    dup(
        store.domain_add("Example.COM", "acme"),
        "domain",
        "example.com",
    );
    dup(
        store.mailbox_add("Bob@Example.com", "x", false),
        "mailbox",
        "bob@example.com",
    );
    nf(
        store.domain_add("new.example", "nobody"),
        "account",
        "nobody",
    );
    nf(
        store.mailbox_add("a@unhosted.example", "x", false),
        "domain",
        "unhosted.example",
    );
    nf(store.account_remove("nobody"), "account", "nobody");
    nf(
        store.domain_remove("unhosted.example"),
        "domain",
        "unhosted.example",
    );
    nf(
        store.mailbox_remove("nobody@example.com"),
        "mailbox",
        "nobody@example.com",
    );
    nf(
        store.alias_remove("nobody@example.com"),
        "alias",
        "nobody@example.com",
    );
    nf(
        store.mailbox_set_password("nobody@example.com", "pw"),
        "mailbox",
        "nobody@example.com",
    );
    nf(
        store.alias_add("x@unhosted.example", &["bob@example.com".into()]),
        "domain",
        "unhosted.example",
    );
    assert!(matches!(
        store.mailbox_get("nobody@example.com"),
        Err(StoreError::NotFound {
            kind: "mailbox",
            ..
        })
    ));

    // Mailboxes and aliases share one name space.
    dup(
        store.alias_add("bob@example.com", &["carol@example.com".into()]),
        "mailbox",
        "bob@example.com",
    );
    store
        .alias_add("info@example.com", &["bob@example.com".into()])
        .expect("alias");
    dup(
        store.alias_add("info@example.com", &["carol@example.com".into()]),
        "alias",
        "info@example.com",
    );
    dup(
        store.mailbox_add("info@example.com", "pw", false),
        "alias",
        "info@example.com",
    );

    // In use.
    match store.account_remove("acme") {
        Err(StoreError::InUse {
            kind: "account",
            name,
            by,
        }) => {
            assert_eq!(name, "acme");
            assert!(by.contains("example.com"), "{by}");
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    match store.domain_remove("example.com") {
        Err(StoreError::InUse {
            kind: "domain", by, ..
        }) => {
            assert_eq!(by, "2 mailboxes and 1 alias");
        }
        other => panic!("expected InUse, got {other:?}"),
    }

    // Invalid input.
    for r in [
        store.account_add("a b"),
        store.domain_add("bad_domain.example", "acme"),
        store.mailbox_add("no-at-sign", "pw", false),
        store.mailbox_add("x y@example.com", "pw", false),
        store.mailbox_add("new@example.com", "", false),
        store.alias_add("list@example.com", &[]),
        store.alias_add("list@example.com", &["not an address".into()]),
    ] {
        assert!(
            matches!(r, Err(StoreError::Invalid { .. })),
            "expected Invalid, got {r:?}"
        );
    }

    // Removal in the right order works, and lists follow.
    store
        .domain_remove("example.org")
        .expect("empty domain removed");
    let domains: Vec<String> = store
        .domain_list()
        .expect("list")
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(domains, ["example.com"]);
    assert!(store.is_hosted_domain("EXAMPLE.com").expect("hosted"));
    assert!(!store.is_hosted_domain("example.org").expect("hosted"));
    assert!(!store.is_hosted_domain("not a domain").expect("hosted"));
    store
        .alias_remove("info@example.com")
        .expect("alias removed");
    assert!(store.alias_list().expect("list").is_empty());
    store.mailbox_remove("bob@example.com").expect("removed");
    store.mailbox_remove("carol@example.com").expect("removed");
    store.domain_remove("example.com").expect("removed");
    store.account_remove("acme").expect("removed");
    assert!(store.account_list().expect("list").is_empty());
}

#[test]
fn mailbox_records_folders_and_passwords() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = populated(tmp.path());

    let carol = store.mailbox_get("CAROL@example.com").expect("get");
    assert_eq!(carol.address, "carol@example.com");
    assert_eq!(carol.account, "acme");
    assert!(carol.full_management);
    assert!(carol.password_hash.starts_with("$argon2id$"));
    assert!(!carol.password_hash.contains("carol-secret"));

    let folders = store.folder_list("bob@example.com").expect("folders");
    let names: Vec<&str> = folders.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["INBOX", "Sent", "Drafts", "Trash", "Junk"]);
    let uses: Vec<Option<&str>> = folders.iter().map(|f| f.special_use.as_deref()).collect();
    assert_eq!(
        uses,
        [
            None,
            Some("\\Sent"),
            Some("\\Drafts"),
            Some("\\Trash"),
            Some("\\Junk")
        ]
    );
    for f in &folders {
        assert_eq!(f.mailbox, "bob@example.com");
        assert_eq!(f.uidnext, 1);
        assert!(f.uidvalidity > 1_600_000_000, "{}", f.uidvalidity);
    }
    assert_eq!(
        store
            .subscriptions("bob@example.com")
            .expect("subscriptions"),
        ["Drafts", "INBOX", "Junk", "Sent", "Trash"],
        "the defaults are subscribed"
    );
    let mut ids: Vec<u64> = folders.iter().map(|f| f.id).collect();
    ids.extend(
        store
            .folder_list("carol@example.com")
            .expect("folders")
            .iter()
            .map(|f| f.id),
    );
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 10, "folder ids are unique over the store");
    assert!(
        store
            .messages("bob@example.com", "INBOX")
            .expect("msgs")
            .is_empty()
    );
    assert!(matches!(
        store.messages("bob@example.com", "Nope"),
        Err(StoreError::NotFound { kind: "folder", .. })
    ));

    // A mailbox removed and added again gets a new UIDVALIDITY.
    let before = folders[0].uidvalidity;
    store.mailbox_remove("bob@example.com").expect("remove");
    store
        .mailbox_add("bob@example.com", "pw2", false)
        .expect("re-add");
    let after = store.folder_list("bob@example.com").expect("folders")[0].uidvalidity;
    assert!(after > before, "{after} > {before}");

    assert!(
        store
            .verify_password("bob@example.com", "pw2")
            .expect("verify")
    );
    assert!(
        !store
            .verify_password("bob@example.com", "bob-secret")
            .expect("verify")
    );
    assert!(
        !store
            .verify_password("nobody@example.com", "pw2")
            .expect("verify")
    );
    assert!(!store.verify_password("garbage", "pw2").expect("verify"));
    store
        .mailbox_set_password("Bob@example.com", "new-pw")
        .expect("set");
    assert!(
        store
            .verify_password("bob@example.com", "new-pw")
            .expect("verify")
    );
    assert!(
        !store
            .verify_password("bob@example.com", "pw2")
            .expect("verify")
    );
    store
        .mailbox_set_full_management("bob@example.com", true)
        .expect("set");
    assert!(
        store
            .mailbox_get("bob@example.com")
            .expect("get")
            .full_management
    );

    let in_com = store.mailbox_list(Some("example.com")).expect("list");
    assert_eq!(in_com.len(), 2);
    assert!(
        store
            .mailbox_list(Some("example.org"))
            .expect("list")
            .is_empty()
    );
    assert!(matches!(
        store.mailbox_list(Some("other.example")),
        Err(StoreError::NotFound { kind: "domain", .. })
    ));
}

#[test]
fn alias_expansion() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = populated(tmp.path());
    let alias = |a: &str, t: &[&str]| {
        let targets: Vec<String> = t.iter().map(|s| s.to_string()).collect();
        store.alias_add(a, &targets).expect("alias");
    };

    assert_eq!(
        store.resolve_recipient("Bob@Example.com").expect("resolve"),
        local(&["bob@example.com"])
    );
    assert_eq!(
        store
            .resolve_recipient("nobody@example.com")
            .expect("resolve"),
        Resolution::UnknownUser
    );
    assert_eq!(
        store
            .resolve_recipient("bob@elsewhere.example")
            .expect("resolve"),
        Resolution::NotHosted
    );
    assert!(matches!(
        store.resolve_recipient("not an address"),
        Err(StoreError::Invalid { .. })
    ));

    // To a mailbox; through a chain across domains.
    alias("info@example.com", &["bob@example.com"]);
    assert_eq!(
        store
            .resolve_recipient("info@example.com")
            .expect("resolve"),
        local(&["bob@example.com"])
    );
    alias("a@example.org", &["b@example.org"]);
    alias("b@example.org", &["c@example.com"]);
    alias("c@example.com", &["carol@example.com"]);
    assert_eq!(
        store.resolve_recipient("a@example.org").expect("resolve"),
        local(&["carol@example.com"])
    );

    // A loop ends, each mailbox once.
    alias(
        "loop1@example.com",
        &["loop2@example.com", "bob@example.com"],
    );
    alias(
        "loop2@example.com",
        &["loop1@example.com", "bob@example.com", "carol@example.com"],
    );
    assert_eq!(
        store
            .resolve_recipient("loop1@example.com")
            .expect("resolve"),
        local(&["bob@example.com", "carol@example.com"])
    );
    // A pure loop delivers nowhere.
    alias("p1@example.com", &["p2@example.com"]);
    alias("p2@example.com", &["p1@example.com"]);
    assert_eq!(
        store.resolve_recipient("p1@example.com").expect("resolve"),
        Resolution::UnknownUser
    );

    // External, and mixed with a missing target.
    alias("fwd@example.com", &["Someone@Gmail.example"]);
    assert_eq!(
        store.resolve_recipient("fwd@example.com").expect("resolve"),
        Resolution::Deliver(Resolved {
            local: vec![],
            remote: vec!["someone@gmail.example".into()]
        })
    );
    alias(
        "team@example.com",
        &[
            "gone@example.com",
            "x@partner.example",
            "info@example.com",
            "carol@example.com",
        ],
    );
    assert_eq!(
        store
            .resolve_recipient("team@example.com")
            .expect("resolve"),
        Resolution::Deliver(Resolved {
            local: vec!["bob@example.com".into(), "carol@example.com".into()],
            remote: vec!["x@partner.example".into()]
        })
    );

    // Depth limit: d1 -> d2 -> ... -> d9 -> bob needs 9 alias levels (> 8).
    for i in 1..=9 {
        let next = if i == 9 {
            "bob@example.com".to_string()
        } else {
            format!("d{}@example.com", i + 1)
        };
        alias(&format!("d{i}@example.com"), &[next.as_str()]);
    }
    assert_eq!(
        store.resolve_recipient("d1@example.com").expect("resolve"),
        Resolution::UnknownUser
    );
    // Eight levels are still followed.
    assert_eq!(
        store.resolve_recipient("d2@example.com").expect("resolve"),
        local(&["bob@example.com"])
    );
}

#[test]
fn concurrent_deliveries_are_durable_and_ordered() {
    let rt = runtime(4);
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = populated(tmp.path());
    const N: usize = 200;

    let mut sent: HashMap<Id, Vec<u8>> = HashMap::new();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for n in 0..N {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let id = store.next_id();
                // Bodies of different sizes, each unique.
                let body = format!(
                    "Subject: message {n}\r\n\r\n{}\r\n",
                    format!("line {n} of the body\r\n").repeat(n % 17 + 1)
                )
                .into_bytes();
                store
                    .deliver(delivery(&["Bob@example.com"], &[], &body), id)
                    .await
                    .map(|()| (id, body))
            }));
        }
        for t in tasks {
            let (id, body) = t.await.expect("task").expect("deliver");
            assert!(sent.insert(id, body).is_none(), "ids are unique");
        }
    });
    let stats = store.commit_stats();
    assert_eq!(stats.deliveries, N as u64);
    assert_eq!(stats.failed, 0);
    // 200 concurrent deliveries cannot each have waited for their own commit.
    assert!(
        stats.batches >= 1 && stats.batches < N as u64,
        "no group commit: {stats:?}"
    );
    eprintln!("group commit: {stats:?}");

    // Reopen: everything acknowledged is there.
    store.shutdown();
    drop(store);
    let store = open(tmp.path());
    let msgs = store
        .messages("bob@example.com", "INBOX")
        .expect("messages");
    assert_eq!(msgs.len(), N);
    let uids: Vec<u32> = msgs.iter().map(|m| m.uid).collect();
    let expected: Vec<u32> = (1..=N as u32).collect();
    assert_eq!(uids, expected, "UIDs 1..=200 in order");
    let mut seen = std::collections::HashSet::new();
    for m in &msgs {
        assert!(seen.insert(m.blob), "blob {} stored twice", id_hex(m.blob));
        let body = sent.get(&m.blob).expect("a blob we delivered");
        assert_eq!(m.size, body.len() as u64);
        assert!(m.flags.is_empty());
        assert_eq!(&store.read_blob(m.blob).expect("read"), body);
    }
    assert_eq!(seen.len(), sent.len());
    let inbox = &store.folder_list("bob@example.com").expect("folders")[0];
    assert_eq!(inbox.uidnext, N as u32 + 1);
    // Nothing else was touched.
    assert!(
        store
            .messages("carol@example.com", "INBOX")
            .expect("m")
            .is_empty()
    );
    assert!(store.queue_list().expect("queue").is_empty());
    // New ids stay above every id on disk.
    let max = sent.keys().copied().max().expect("ids");
    assert!(store.next_id() > max);
}

#[test]
fn remote_delivery_is_queued_and_released() {
    let rt = runtime(2);
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = populated(tmp.path());
    let id = store.next_id();
    let body = b"Subject: hi\r\n\r\nout and in\r\n";
    rt.block_on(store.deliver(
        delivery(
            &["carol@example.com"],
            &["a@far.example", "b@far.example"],
            body,
        ),
        id,
    ))
    .expect("deliver");

    let queue = store.queue_list().expect("queue");
    assert_eq!(queue.len(), 1);
    let q = &queue[0];
    assert_eq!(q.id, id);
    assert_eq!(q.blob, id);
    assert_eq!(q.mail_from, "sender@remote.example");
    assert_eq!(q.recipients, ["a@far.example", "b@far.example"]);
    assert_eq!(q.size, body.len() as u64);
    assert_eq!((q.attempts, q.held, q.last_error.clone()), (0, false, None));
    assert!(q.next_attempt >= q.created);
    let inbox = store.messages("carol@example.com", "INBOX").expect("inbox");
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].blob, id);

    // A sender's retry bookkeeping.
    let mut retry = q.clone();
    retry.recipients = vec!["b@far.example".into()];
    retry.attempts = 1;
    retry.last_error = Some("451 try later".into());
    store.queue_update(&retry).expect("update");
    assert_eq!(store.queue_get(id).expect("get"), retry);
    let mut bad = retry.clone();
    bad.recipients.clear();
    assert!(matches!(
        store.queue_update(&bad),
        Err(StoreError::Invalid { .. })
    ));

    // The blob is shared: removing the queue entry keeps it for the mailbox,
    // removing the mailbox then frees it.
    store.queue_remove(id).expect("remove");
    assert!(store.queue_list().expect("queue").is_empty());
    assert!(blob_file(tmp.path(), id).exists());
    store.mailbox_remove("carol@example.com").expect("remove");
    assert!(!blob_file(tmp.path(), id).exists());
    assert!(matches!(
        store.queue_remove(id),
        Err(StoreError::NotFound {
            kind: "queue entry",
            ..
        })
    ));
    assert!(matches!(
        store.read_blob(id),
        Err(StoreError::NotFound { .. })
    ));

    // Remote only.
    let id2 = store.next_id();
    rt.block_on(store.deliver(delivery(&[], &["z@far.example"], b"x\r\n"), id2))
        .expect("deliver");
    assert_eq!(
        store.queue_get(id2).expect("queued").recipients,
        ["z@far.example"]
    );
    store.queue_remove(id2).expect("remove");
    assert!(!blob_file(tmp.path(), id2).exists());
}

#[test]
fn a_released_file_stays_readable_for_its_grace_and_goes_at_shutdown() {
    let rt = runtime(2);
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = populated(tmp.path());
    assert_eq!(RELEASED_FILE_GRACE.as_secs(), 120);
    let id = store.next_id();
    rt.block_on(store.deliver(delivery(&["bob@example.com"], &[], b"late reader\r\n"), id))
        .expect("deliver");
    store
        .set_flags(
            "bob@example.com",
            "INBOX",
            &[1],
            FlagOp::Add,
            &["\\Deleted".to_string()],
        )
        .expect("flag");
    assert_eq!(
        store
            .expunge("bob@example.com", "INBOX", None)
            .expect("expunge"),
        [1]
    );
    // Expunged, but a session that has not synced can still read it.
    assert_eq!(store.read_blob(id).expect("read"), b"late reader\r\n");
    // With no grace the next expunge takes the waiting file with it.
    store.set_released_file_grace(std::time::Duration::ZERO);
    let other = store.next_id();
    rt.block_on(store.deliver(delivery(&["carol@example.com"], &[], b"other\r\n"), other))
        .expect("deliver");
    store
        .set_flags(
            "carol@example.com",
            "INBOX",
            &[1],
            FlagOp::Add,
            &["\\Deleted".to_string()],
        )
        .expect("flag");
    store
        .expunge("carol@example.com", "INBOX", None)
        .expect("expunge");
    assert!(!blob_file(tmp.path(), id).exists());
    assert!(!blob_file(tmp.path(), other).exists());
    let id = store.next_id();
    rt.block_on(store.deliver(delivery(&["carol@example.com"], &[], b"third\r\n"), id))
        .expect("deliver");
    store.set_released_file_grace(RELEASED_FILE_GRACE);
    store
        .set_flags(
            "carol@example.com",
            "INBOX",
            &[2],
            FlagOp::Add,
            &["\\Deleted".to_string()],
        )
        .expect("flag");
    store
        .expunge("carol@example.com", "INBOX", None)
        .expect("expunge");
    assert!(blob_file(tmp.path(), id).exists());
    // Shutdown deletes what is still waiting: nothing is left for the next
    // open to put in lost+found.
    store.shutdown();
    assert!(!blob_file(tmp.path(), id).exists());
    drop(store);
    let store = open(tmp.path());
    assert_eq!(store.opened_lost_found(), 0);
}

#[test]
fn removing_a_mailbox_frees_blobs_only_when_unused() {
    let rt = runtime(2);
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = populated(tmp.path());
    let shared = store.next_id();
    rt.block_on(store.deliver(
        delivery(
            &["bob@example.com", "carol@example.com", "bob@example.com"],
            &[],
            b"both\r\n",
        ),
        shared,
    ))
    .expect("deliver");
    let own = store.next_id();
    rt.block_on(store.deliver(delivery(&["bob@example.com"], &[], b"bob only\r\n"), own))
        .expect("deliver");
    // Duplicated recipients get one copy.
    let bob = store.messages("bob@example.com", "INBOX").expect("m");
    assert_eq!(
        bob.iter().map(|m| (m.uid, m.blob)).collect::<Vec<_>>(),
        [(1, shared), (2, own)]
    );

    store.mailbox_remove("bob@example.com").expect("remove");
    assert!(!blob_file(tmp.path(), own).exists(), "bob's own blob freed");
    assert!(
        blob_file(tmp.path(), shared).exists(),
        "carol still uses it"
    );
    assert_eq!(store.read_blob(shared).expect("read"), b"both\r\n");
    store.mailbox_remove("carol@example.com").expect("remove");
    assert!(!blob_file(tmp.path(), shared).exists());

    // And a reopen finds nothing to repair or collect.
    drop(store);
    let _store = open(tmp.path());
    assert_eq!(
        std::fs::read_dir(tmp.path().join("msg"))
            .expect("dir")
            .count(),
        0
    );
}

#[test]
fn a_bad_delivery_does_not_fail_its_batch() {
    let rt = runtime(2);
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = populated(tmp.path());
    let mut ok = 0;
    rt.block_on(async {
        let mut tasks = Vec::new();
        for n in 0..40u32 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let id = store.next_id();
                let to = if n % 4 == 0 {
                    "ghost@example.com"
                } else {
                    "carol@example.com"
                };
                let r = store.deliver(delivery(&[to], &[], b"x\r\n"), id).await;
                (n, id, r)
            }));
        }
        for t in tasks {
            let (n, id, r) = t.await.expect("task");
            if n % 4 == 0 {
                assert!(
                    matches!(&r, Err(StoreError::NotFound { kind: "mailbox", name }) if name == "ghost@example.com"),
                    "{r:?}"
                );
                assert!(!blob_file(tmp.path(), id).exists(), "refused blob removed");
            } else {
                r.expect("good delivery");
                ok += 1;
            }
        }
    });
    assert_eq!(ok, 30);
    assert_eq!(
        store
            .messages("carol@example.com", "INBOX")
            .expect("m")
            .len(),
        30
    );
    assert_eq!(store.commit_stats().failed, 10);

    // No recipients at all is the caller's mistake.
    let r = rt.block_on(store.deliver(delivery(&[], &[], b"x"), store.next_id()));
    assert!(matches!(r, Err(StoreError::Invalid { .. })), "{r:?}");
    // A reused id is refused before anything is overwritten.
    let id = store.next_id();
    rt.block_on(store.deliver(delivery(&["bob@example.com"], &[], b"first"), id))
        .expect("deliver");
    let r = rt.block_on(store.deliver(delivery(&["carol@example.com"], &[], b"second"), id));
    assert!(r.is_err(), "{r:?}");
    assert_eq!(store.read_blob(id).expect("read"), b"first");
}

#[test]
fn shutdown_refuses_new_deliveries() {
    let rt = runtime(2);
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = populated(tmp.path());
    store.shutdown();
    store.shutdown(); // idempotent
    let id = store.next_id();
    let r = rt.block_on(store.deliver(delivery(&["bob@example.com"], &[], b"late"), id));
    assert!(matches!(r, Err(StoreError::Closed)), "{r:?}");
    assert!(r.as_ref().err().is_some_and(StoreError::is_temporary));
    assert!(!blob_file(tmp.path(), id).exists());
    // Reads still work.
    assert_eq!(store.mailbox_list(None).expect("list").len(), 2);
}

#[test]
fn orphan_blobs_are_removed_at_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = populated(tmp.path());
    let orphan = store.next_id();
    drop(store);
    let msg = tmp.path().join("msg");
    std::fs::write(blob_file(tmp.path(), orphan), b"never committed").expect("write");
    std::fs::write(msg.join("README"), b"not a blob").expect("write");

    let store = open(tmp.path());
    assert!(!blob_file(tmp.path(), orphan).exists(), "orphan removed");
    assert!(msg.join("README").exists(), "non-blob files are left alone");
    assert!(store.next_id() > orphan, "ids stay above what was on disk");
}

#[test]
fn referenced_blobs_survive_reopen() {
    let rt = runtime(2);
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = populated(tmp.path());
    let id = store.next_id();
    rt.block_on(store.deliver(
        delivery(&["bob@example.com"], &["r@far.example"], b"keep me\r\n"),
        id,
    ))
    .expect("deliver");
    drop(store);
    let store = open(tmp.path());
    assert_eq!(store.read_blob(id).expect("read"), b"keep me\r\n");
    assert_eq!(store.queue_list().expect("queue").len(), 1);
    // Both references are counted: dropping one keeps the file.
    store.queue_remove(id).expect("remove");
    assert_eq!(store.read_blob(id).expect("read"), b"keep me\r\n");
}

#[test]
fn newer_schema_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    drop(open(tmp.path()));
    {
        // What a future binary would leave behind.
        const META: redb::TableDefinition<&str, u32> = redb::TableDefinition::new("meta");
        let db = redb::Database::create(tmp.path().join("meta.redb")).expect("redb");
        let txn = db.begin_write().expect("txn");
        {
            let mut meta = txn.open_table(META).expect("meta");
            let v = meta.get("schema_version").expect("get").map(|g| g.value());
            assert_eq!(v, Some(SCHEMA_VERSION), "open wrote the version");
            meta.insert("schema_version", SCHEMA_VERSION + 1)
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    match Store::open(tmp.path()) {
        Err(StoreError::Schema { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        Err(e) => panic!("expected a schema error, got {e}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

#[test]
fn free_space_reports_the_file_system() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(tmp.path());
    let (bytes, inodes) = store.free_space().expect("statvfs");
    assert!(bytes > 0);
    // Some file systems (btrfs, tmpfs without nr_inodes) report no inode limit as 0.
    let _ = inodes;
    assert_eq!(store.data_dir(), tmp.path());
}

#[test]
fn folder_names_with_non_ascii_at_byte_six() {
    // "abcdeé": byte 6 is inside "é"; the INBOX-prefix check sliced there
    // and panicked (issue 10).
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = populated(tmp.path());
    for name in ["abcdeé", "abcdeé/x", "inboxé", "inbox/é", "é"] {
        store
            .folder_create("bob@example.com", name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let err = store.folder_create("bob@example.com", "INBOX/é");
    assert!(err.is_err(), "INBOX/é is inbox/é, which exists");
}

/// A forwarded copy the gate discarded, queued held with a reason and an
/// expiry for the mailbox whose rule made it.
fn held_copy(store: &Store, to: &str, expires: i64) -> mxrack_store::QueuedCopy {
    mxrack_store::QueuedCopy {
        id: store.next_id(),
        mail_from: "SRS0=x=y=remote.example=sender@example.com".into(),
        recipients: vec![to.to_string()],
        transport: "forward".into(),
        prepend: String::new(),
        hold: Some(mxrack_store::CopyHold {
            reason: format!("spam gate: score 7.2 at or over 1.0 for {to}"),
            expires,
            mailbox: Some("bob@example.com".into()),
        }),
    }
}

#[test]
fn gate_held_copy_round_trip_expiry_and_release() {
    let rt = runtime(2);
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = populated(tmp.path());
    let now = 1_900_000_000;
    // Two deliveries whose only copy is held (no local copy), one of them
    // with an expiry already past, and one plain copy beside a held one.
    let (a, b) = (store.next_id(), store.next_id());
    let soon = held_copy(&store, "x@hotmail.com", now - 1);
    let later = held_copy(&store, "y@hotmail.com", now + 86_400);
    let (soon_id, later_id) = (soon.id, later.id);
    for (id, copy) in [(a, soon), (b, later)] {
        let mut d = delivery(&[], &[], b"Subject: spam\r\n\r\nbuy\r\n");
        d.copies = vec![copy];
        rt.block_on(store.deliver(d, id)).expect("deliver");
    }
    let q = store.queue_get(later_id).expect("held entry");
    assert!(q.held && q.gate_held());
    assert_eq!(
        q.hold_reason.as_deref(),
        Some("spam gate: score 7.2 at or over 1.0 for y@hotmail.com")
    );
    assert_eq!(q.expires, Some(now + 86_400));
    assert_eq!(q.origin_mailbox.as_deref(), Some("bob@example.com"));
    assert_eq!(q.blob, b);
    // The blob's recovery record carries the hold too.
    let file = std::fs::read(blob_file(tmp.path(), b)).expect("blob");
    let header = mxrack_store::split_blob(&file)
        .expect("split")
        .0
        .expect("record");
    assert_eq!(header.queue.len(), 1);
    let h = &header.queue[0];
    assert_eq!(
        (h.id, h.held, &h.hold_reason, h.expires, &h.origin_mailbox),
        (q.id, true, &q.hold_reason, q.expires, &q.origin_mailbox)
    );

    // An operator's hold has no expiry and is never removed by the sweep.
    let c = store.next_id();
    rt.block_on(store.deliver(
        delivery(&[], &["z@far.example"], b"Subject: s\r\n\r\nb\r\n"),
        c,
    ))
    .expect("deliver");
    let mut op = store.queue_get(c).expect("entry");
    op.held = true;
    store.queue_update(&op).expect("hold");

    // Expiry: only the expired gate hold goes, with its blob.
    assert!(store.queue_expire(now - 10).expect("expire").is_empty());
    let gone = store.queue_expire(now).expect("expire");
    assert_eq!(gone.iter().map(|e| e.id).collect::<Vec<_>>(), [soon_id]);
    assert!(gone[0].hold_reason.is_some());
    assert!(!blob_file(tmp.path(), a).exists());
    let left: Vec<Id> = store
        .queue_list()
        .expect("queue")
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(left, [later_id, c]);
    assert!(store.queue_expire(now + 10 * 86_400).expect("expire").len() == 1);
    assert!(store.queue_get(c).expect("operator hold kept").held);

    // Release: not held, no reason, no expiry, due now, age from now.
    let d = store.next_id();
    let copy = held_copy(&store, "w@hotmail.com", now + 86_400);
    let copy_id = copy.id;
    let mut del = delivery(&["carol@example.com"], &[], b"Subject: s2\r\n\r\nb\r\n");
    del.copies = vec![copy];
    rt.block_on(store.deliver(del, d)).expect("deliver");
    let old = store.queue_release(copy_id, now + 5).expect("release");
    assert!(old.gate_held());
    let r = store.queue_get(copy_id).expect("entry");
    assert!(!r.held && !r.gate_held());
    assert_eq!((r.hold_reason, r.expires), (None, None));
    assert_eq!((r.next_attempt, r.created), (now + 5, now + 5));
    assert_eq!(r.origin_mailbox.as_deref(), Some("bob@example.com"));
    // Released, it is no longer the sweep's business.
    assert!(
        store
            .queue_expire(now + 100 * 86_400)
            .expect("expire")
            .is_empty()
    );
    // An operator's hold released keeps its retry time and age.
    let op = store.queue_get(c).expect("operator hold");
    assert!(
        !store
            .queue_release(c, now + 5)
            .expect("release")
            .gate_held()
    );
    let r = store.queue_get(c).expect("entry");
    assert!(!r.held);
    assert_eq!((r.next_attempt, r.created), (op.next_attempt, op.created));
    assert!(matches!(
        store.queue_release(12345, now),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn queue_removals_from_many_threads_are_grouped_and_each_answered() {
    // The relay settles deliveries from many blocking threads at once:
    // their removals share commits, and each caller gets its own result.
    let rt = runtime(2);
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = populated(tmp.path());
    let ids: Vec<Id> = (0..64)
        .map(|i| {
            let id = store.next_id();
            rt.block_on(store.deliver(
                delivery(&[], &["z@far.example"], format!("m{i}\r\n").as_bytes()),
                id,
            ))
            .expect("deliver");
            id
        })
        .collect();
    assert_eq!(store.queue_list().expect("queue").len(), 64);
    let results: Vec<(Id, Result<(), StoreError>)> = std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .chain(ids.iter().take(8)) // 8 removed twice: one of each pair fails
            .map(|&id| {
                let store = store.clone();
                s.spawn(move || (id, store.queue_remove(id)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for id in &ids {
        let mine: Vec<_> = results.iter().filter(|(i, _)| i == id).collect();
        let ok = mine.iter().filter(|(_, r)| r.is_ok()).count();
        assert_eq!(ok, 1, "{id}: {mine:?}");
        for (_, r) in &mine {
            if let Err(e) = r {
                assert!(
                    matches!(
                        e,
                        StoreError::NotFound {
                            kind: "queue entry",
                            ..
                        }
                    ),
                    "{e}"
                );
            }
        }
    }
    assert!(store.queue_list().expect("queue").is_empty());
    // Remote only: each blob went with its entry, after the grace.
    store.shutdown();
    for id in &ids {
        assert!(!blob_file(tmp.path(), *id).exists());
    }
}

#[test]
fn a_user_lists_and_releases_only_their_own_gate_held_copies() {
    let rt = runtime(2);
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = populated(tmp.path());
    let now = 1_900_000_000;
    let mut ids = Vec::new();
    for to in ["x@hotmail.com", "y@hotmail.com", "z@hotmail.com"] {
        let id = store.next_id();
        let copy = held_copy(&store, to, now + 86_400);
        ids.push(copy.id);
        let mut d = delivery(&[], &[], b"Subject: spam\r\n\r\nbuy\r\n");
        d.copies = vec![copy];
        rt.block_on(store.deliver(d, id)).expect("deliver");
    }
    // Newest first, bounded; another mailbox has none.
    let listed: Vec<_> = store
        .queue_held_copies("Bob@example.com", 2)
        .expect("list")
        .iter()
        .map(|q| q.id)
        .collect();
    assert_eq!(listed, [ids[2], ids[1]]);
    assert!(
        store
            .queue_held_copies("carol@example.com", 10)
            .expect("list")
            .is_empty()
    );
    // Another mailbox's user cannot release it: "not found", still held.
    assert!(matches!(
        store.queue_release_held_copy(ids[0], "carol@example.com", now),
        Err(StoreError::NotFound { .. })
    ));
    assert!(store.queue_get(ids[0]).expect("entry").gate_held());
    // An operator's hold (no expiry) is not the user's to release.
    let mut op = store.queue_get(ids[1]).expect("entry");
    op.expires = None;
    store.queue_update(&op).expect("operator hold");
    assert!(matches!(
        store.queue_release_held_copy(ids[1], "bob@example.com", now),
        Err(StoreError::NotFound { .. })
    ));
    // Its owner releases it: due now, no hold left.
    let old = store
        .queue_release_held_copy(ids[0], "bob@example.com", now)
        .expect("release");
    assert!(old.gate_held());
    let q = store.queue_get(ids[0]).expect("entry");
    assert!(!q.held && q.hold_reason.is_none() && q.expires.is_none());
    assert_eq!(q.next_attempt, now);
}
