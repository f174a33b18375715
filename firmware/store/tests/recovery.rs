//! Recovery (issue 12): the metadata comes back from the journal and the
//! message files whatever happens to meta.redb; nothing is ever deleted.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use mxrack_store::{Delivery, FlagOp, Store, StoreError, recovery};

/// Everything a user would see: per mailbox, per folder (with UIDVALIDITY),
/// each message's UID, flags and body; plus the queue.
type View = BTreeMap<String, BTreeMap<String, (u32, Vec<(u32, Vec<String>, Vec<u8>)>)>>;

fn view(store: &Store) -> (View, Vec<(String, Vec<String>, bool)>) {
    let mut v = View::new();
    // The address book travels with the mail (as a pseudo-folder).
    for mb in store.mailbox_list(None).unwrap() {
        let book = store.ldap_book_load(&mb.address).unwrap();
        let mut folders = BTreeMap::new();
        folders.insert(
            "(address book)".to_string(),
            (
                0u32,
                book.entries
                    .iter()
                    .map(|(k, e)| (0u32, vec![k.clone()], e.rdn.clone().into_bytes()))
                    .collect::<Vec<_>>(),
            ),
        );
        v.insert(format!("ldap {}", mb.address), folders);
    }
    for mb in store.mailbox_list(None).unwrap() {
        let mut folders = BTreeMap::new();
        for f in store.folder_list(&mb.address).unwrap() {
            let mut msgs = Vec::new();
            for m in store.messages(&mb.address, &f.name).unwrap() {
                let mut flags = m.flags.clone();
                flags.sort();
                msgs.push((m.uid, flags, store.read_blob(m.blob).unwrap()));
            }
            folders.insert(f.name.clone(), (f.uidvalidity, msgs));
        }
        v.insert(mb.address.clone(), folders);
    }
    let q = store
        .queue_list()
        .unwrap()
        .into_iter()
        .map(|q| (q.mail_from, q.recipients, q.held))
        .collect();
    (v, q)
}

fn delivery(local: &[&str], remote: &[&str], body: &str) -> Delivery {
    Delivery {
        mail_from: "sender@remote.example".into(),
        local: local.iter().map(|s| s.to_string()).collect(),
        remote: remote.iter().map(|s| s.to_string()).collect(),
        body: body.as_bytes().to_vec(),
        copies: vec![],
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Mail in several folders with flags, a move, an expunge and a queued
/// message, for two mailboxes.
fn fill(dir: &Path) -> Arc<Store> {
    let store = Store::open(dir).unwrap();
    store.account_add("acme").unwrap();
    store.domain_add("acme.example", "acme").unwrap();
    store
        .mailbox_add("jo@acme.example", "pw-jo", false)
        .unwrap();
    store.mailbox_add("al@acme.example", "pw-al", true).unwrap();
    store
        .ldap_set_password("jo@acme.example", "ldap-pw")
        .unwrap();
    store
        .mailbox_set_quota("al@acme.example", Some(1 << 20))
        .unwrap();
    let rt = rt();
    for i in 0..6 {
        let id = store.next_id();
        let to: &[&str] = if i % 2 == 0 {
            &["jo@acme.example", "al@acme.example"]
        } else {
            &["jo@acme.example"]
        };
        rt.block_on(store.deliver(
            delivery(to, &[], &format!("Subject: {i}\r\n\r\nbody {i}\r\n")),
            id,
        ))
        .unwrap();
    }
    let id = store.next_id();
    rt.block_on(store.deliver(
        delivery(
            &["al@acme.example"],
            &["out@remote.example"],
            "Subject: out\r\n\r\nx\r\n",
        ),
        id,
    ))
    .unwrap();
    store
        .append(
            "jo@acme.example",
            "Sent",
            b"Subject: sent\r\n\r\nhi\r\n",
            &["\\Seen".into()],
            Some(1_700_000_000),
        )
        .unwrap();
    store
        .folder_create("jo@acme.example", "Projects/2026")
        .unwrap();
    store
        .set_flags(
            "jo@acme.example",
            "INBOX",
            &[1, 2],
            FlagOp::Add,
            &["\\Seen".into(), "$Work".into()],
        )
        .unwrap();
    store
        .copy_messages("jo@acme.example", "INBOX", &[3], "Projects/2026", true)
        .unwrap();
    store
        .set_flags(
            "jo@acme.example",
            "INBOX",
            &[4],
            FlagOp::Add,
            &["\\Deleted".into()],
        )
        .unwrap();
    store.expunge("jo@acme.example", "INBOX", None).unwrap();
    store
        .copy_messages("al@acme.example", "INBOX", &[1], "Trash", false)
        .unwrap();
    store
}

fn needs_reconstruct(dir: &Path) {
    match Store::open(dir) {
        Err(StoreError::NeedsReconstruct(why)) => {
            assert!(!why.is_empty());
        }
        other => panic!("expected NeedsReconstruct, got {:?}", other.map(|_| ())),
    }
}

fn reconstruct(dir: &Path) -> mxrack_store::ReconstructReport {
    recovery::reconstruct(dir, None, &mut |_, _, _| {}).expect("reconstruct")
}

#[test]
fn a_missing_database_is_refused_then_rebuilt_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let before = {
        let store = fill(tmp.path());
        let v = view(&store);
        store.shutdown();
        v
    };
    let files_before = std::fs::read_dir(tmp.path().join("msg")).unwrap().count();
    std::fs::remove_file(tmp.path().join("meta.redb")).unwrap();
    needs_reconstruct(tmp.path());
    // The refusal changed nothing.
    assert!(!tmp.path().join("meta.redb").exists());
    assert_eq!(
        std::fs::read_dir(tmp.path().join("msg")).unwrap().count(),
        files_before
    );

    let report = reconstruct(tmp.path());
    assert_eq!(report.source, "journal");
    assert_eq!(report.missing_files, 0);
    assert_eq!(report.lost_found, 0);
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(view(&store), before);
    // Passwords and quotas came back too.
    assert!(store.verify_password("jo@acme.example", "pw-jo").unwrap());
    assert!(
        store
            .ldap_verify_password("jo@acme.example", "ldap-pw")
            .unwrap()
    );
    assert_eq!(
        store.mailbox_get("al@acme.example").unwrap().quota_bytes,
        Some(1 << 20)
    );
    let v = store.verify(&mut |_, _, _| {}).unwrap();
    assert_eq!(v.problems, Vec::<String>::new());
    assert!(v.journal_agrees);
    // And the store goes on: new mail gets the next UID.
    let id = store.next_id();
    rt().block_on(store.deliver(
        delivery(&["jo@acme.example"], &[], "Subject: after\r\n\r\n"),
        id,
    ))
    .unwrap();
    let inbox = store.messages("jo@acme.example", "INBOX").unwrap();
    assert_eq!(inbox.last().unwrap().uid, 7);
}

#[test]
fn a_corrupt_database_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let before = {
        let store = fill(tmp.path());
        let v = view(&store);
        store.shutdown();
        v
    };
    // Garbage over the database's pages, keeping its length.
    let path = tmp.path().join("meta.redb");
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    let mut bytes = std::fs::read(&path).unwrap();
    for (i, b) in bytes.iter_mut().enumerate().take(len).skip(512) {
        *b = (i as u8).wrapping_mul(31) ^ 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    match Store::open(tmp.path()) {
        Err(StoreError::NeedsReconstruct(_)) => {}
        other => panic!(
            "a damaged database must be refused, got {:?}",
            other.map(|_| ())
        ),
    }
    let report = reconstruct(tmp.path());
    assert!(report.old_database.is_some());
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(view(&store), before);
}

#[test]
fn an_older_database_copy_is_refused_then_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let store = fill(tmp.path());
    store.checkpoint().unwrap();
    store.shutdown();
    drop(store);
    let old = std::fs::read(tmp.path().join("meta.redb")).unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let id = store.next_id();
    rt().block_on(store.deliver(
        delivery(&["jo@acme.example"], &[], "Subject: new\r\n\r\n"),
        id,
    ))
    .unwrap();
    store.checkpoint().unwrap();
    let id = store.next_id();
    rt().block_on(store.deliver(
        delivery(&["al@acme.example"], &[], "Subject: newer\r\n\r\n"),
        id,
    ))
    .unwrap();
    let before = view(&store);
    store.shutdown();
    drop(store);
    // Last night's copy of meta.redb put back over today's.
    std::fs::write(tmp.path().join("meta.redb"), old).unwrap();
    needs_reconstruct(tmp.path());
    reconstruct(tmp.path());
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(view(&store), before);
}

#[test]
fn files_alone_bring_mail_back_to_its_mailboxes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = fill(tmp.path());
    let inbox_jo = store.messages("jo@acme.example", "INBOX").unwrap().len();
    store.shutdown();
    drop(store);
    // The journal and the database are both lost; the accounts survive in
    // neither, so a restored backup of them is what an operator has.
    let backup = tempfile::tempdir().unwrap();
    {
        // Only accounts, domains and mailboxes: a store with no mail.
        let s = Store::open(backup.path()).unwrap();
        s.account_add("acme").unwrap();
        s.domain_add("acme.example", "acme").unwrap();
        s.mailbox_add("jo@acme.example", "pw-jo", false).unwrap();
        s.mailbox_add("al@acme.example", "pw-al", true).unwrap();
        s.shutdown();
    }
    std::fs::remove_dir_all(tmp.path().join("recovery")).unwrap();
    std::fs::copy(
        backup.path().join("meta.redb"),
        tmp.path().join("meta.redb"),
    )
    .unwrap();
    let report = reconstruct(tmp.path());
    assert!(report.from_files > 0, "{report:?}");
    let store = Store::open(tmp.path()).unwrap();
    // jo: 6 delivered (one moved, one expunged: the expunged file is gone,
    // the moved one comes back where it was delivered).
    let inbox = store.messages("jo@acme.example", "INBOX").unwrap();
    assert_eq!(inbox.len(), inbox_jo + 1);
    let sent = store.messages("jo@acme.example", "Sent").unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].flags, vec!["\\Seen".to_string()]);
    assert_eq!(sent[0].internal_date, 1_700_000_000);
    // The queued message is back, held for the operator.
    let q = store.queue_list().unwrap();
    assert_eq!(q.len(), 1);
    assert!(q[0].held);
}

#[test]
fn backup_then_restore_keeps_newer_mail_from_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let bdir = tempfile::tempdir().unwrap();
    let store = fill(tmp.path());
    let at_backup = view(&store);
    let b = store.backup(bdir.path(), &mut |_, _, _| {}).unwrap();
    assert!(b.files > 0);
    // A second backup is incremental: nothing new to copy.
    let b2 = store.backup(bdir.path(), &mut |_, _, _| {}).unwrap();
    assert_eq!(b2.files_copied, 0);
    assert_eq!(b2.files, b.files);
    let id = store.next_id();
    rt().block_on(store.deliver(
        delivery(
            &["jo@acme.example"],
            &[],
            "Subject: newer\r\n\r\nafter the backup\r\n",
        ),
        id,
    ))
    .unwrap();
    // Restore refuses over a running store.
    assert!(recovery::restore(bdir.path(), tmp.path(), &mut |_, _, _| {}).is_err());
    store.shutdown();
    drop(store);
    let report = recovery::restore(bdir.path(), tmp.path(), &mut |_, _, _| {}).unwrap();
    assert_eq!(report.from_files, 1, "{report:?}");
    let store = Store::open(tmp.path()).unwrap();
    let (mut now, _) = view(&store);
    // Everything of the backup is there, and the newer message on top.
    let inbox = now
        .get_mut("jo@acme.example")
        .unwrap()
        .get_mut("INBOX")
        .unwrap();
    let newest = inbox.1.pop().unwrap();
    assert!(String::from_utf8_lossy(&newest.2).contains("after the backup"));
    assert_eq!(now, at_backup.0);
}

#[test]
fn verify_finds_a_damaged_file_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = fill(tmp.path());
    let r = store.verify(&mut |_, _, _| {}).unwrap();
    assert_eq!(r.problems, Vec::<String>::new());
    let m = &store.messages("jo@acme.example", "INBOX").unwrap()[0];
    let path = tmp.path().join("msg").join(mxrack_store::id_hex(m.blob));
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n.min(3)] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let r = store.verify(&mut |_, _, _| {}).unwrap();
    // The file is shared by jo's INBOX, al's INBOX and al's Trash copy.
    assert_eq!(r.problem_count, 3, "{:?}", r.problems);
    assert!(
        r.problems.iter().all(|p| p.contains("hash")),
        "{:?}",
        r.problems
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn orphan_files_go_to_lost_and_found_never_away() {
    let tmp = tempfile::tempdir().unwrap();
    let store = fill(tmp.path());
    store.shutdown();
    drop(store);
    let stray = tmp.path().join("msg").join("00000000000000ff");
    std::fs::write(&stray, b"Subject: stray\r\n\r\n").unwrap();
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(store.opened_lost_found(), 1);
    assert!(!stray.exists());
    assert_eq!(
        std::fs::read(tmp.path().join("lost+found").join("00000000000000ff")).unwrap(),
        b"Subject: stray\r\n\r\n"
    );
}

#[test]
fn a_crash_between_journal_and_commit_rolls_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let store = fill(tmp.path());
    store.shutdown();
    drop(store);
    let db = std::fs::read(tmp.path().join("meta.redb")).unwrap();
    let store = Store::open(tmp.path()).unwrap();
    store.folder_create("al@acme.example", "Later").unwrap();
    let before = view(&store);
    store.shutdown();
    drop(store);
    // The journal has the frame; the database lost the commit.
    std::fs::write(tmp.path().join("meta.redb"), db).unwrap();
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(view(&store), before);
}

#[test]
fn one_mailbox_is_rebuilt_the_rest_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let store = fill(tmp.path());
    let before = view(&store);
    store.shutdown();
    drop(store);
    // jo's records in the database are damaged (here: removed by hand,
    // as a bad redb page would lose them); the journal still has them.
    {
        let db = redb::Database::open(tmp.path().join("meta.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let folders: redb::TableDefinition<(&str, &str), &[u8]> =
                redb::TableDefinition::new("folders");
            let mut t = txn.open_table(folders).unwrap();
            t.remove(("jo@acme.example", "Sent")).unwrap();
        }
        txn.commit().unwrap();
    }
    // verify sees the row the database lost and the journal still has.
    {
        let store = Store::open(tmp.path()).unwrap();
        let v = store.verify(&mut |_, _, _| {}).unwrap();
        assert!(!v.journal_agrees, "{v:?}");
        assert!(v.problems.iter().any(|p| p.contains("journal")), "{v:?}");
        store.shutdown();
    }
    let report = recovery::reconstruct(tmp.path(), Some("jo@acme.example"), &mut |_, _, _| {})
        .expect("reconstruct --mailbox");
    assert!(report.source.contains("for jo@acme.example"), "{report:?}");
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(view(&store), before);
}

#[test]
fn an_empty_store_without_its_database_just_starts_again() {
    let tmp = tempfile::tempdir().unwrap();
    Store::open(tmp.path()).unwrap().shutdown();
    std::fs::remove_file(tmp.path().join("meta.redb")).unwrap();
    let store = Store::open(tmp.path()).expect("nothing to lose: no refusal");
    store.account_add("acme").unwrap();
}

/// A forwarded copy the spam gate held (issue 16) comes back from the
/// journal with its hold, reason, expiry and mailbox; from its file alone
/// too (held, reason and expiry kept, so the retention still applies).
#[test]
fn a_gate_held_copy_keeps_its_reason_through_reconstruct() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    let store = Store::open(tmp.path()).unwrap();
    store.account_add("acme").unwrap();
    store.domain_add("acme.example", "acme").unwrap();
    store
        .mailbox_add("jo@acme.example", "pw-jo", false)
        .unwrap();
    let (id, copy_id) = (store.next_id(), store.next_id());
    let reason = "spam gate: score 7.2 at or over 1.0 for hotmail.com";
    let mut d = delivery(&[], &[], "Subject: spam\r\n\r\nbuy now\r\n");
    d.copies = vec![mxrack_store::QueuedCopy {
        id: copy_id,
        mail_from: "SRS0=a=b=remote.example=sender@acme.example".into(),
        recipients: vec!["jo@hotmail.com".into()],
        transport: "forward".into(),
        prepend: String::new(),
        hold: Some(mxrack_store::CopyHold {
            reason: reason.into(),
            expires: 1_900_000_000,
            mailbox: Some("jo@acme.example".into()),
        }),
    }];
    rt.block_on(store.deliver(d, id)).unwrap();
    let before = store.queue_get(copy_id).unwrap();
    assert!(before.gate_held());
    store.shutdown();
    drop(store);

    // The database lost: the journal brings the entry back unchanged.
    std::fs::remove_file(tmp.path().join("meta.redb")).unwrap();
    assert_eq!(reconstruct(tmp.path()).source, "journal");
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(store.queue_list().unwrap(), vec![before.clone()]);
    store.shutdown();
    drop(store);

    // Database and journal lost, the accounts from a backup: the message
    // file's record brings it back, still held with its reason and expiry.
    let backup = tempfile::tempdir().unwrap();
    {
        let s = Store::open(backup.path()).unwrap();
        s.account_add("acme").unwrap();
        s.domain_add("acme.example", "acme").unwrap();
        s.mailbox_add("jo@acme.example", "pw-jo", false).unwrap();
        s.shutdown();
    }
    std::fs::remove_dir_all(tmp.path().join("recovery")).unwrap();
    std::fs::copy(
        backup.path().join("meta.redb"),
        tmp.path().join("meta.redb"),
    )
    .unwrap();
    let report = reconstruct(tmp.path());
    assert_eq!(report.queue_from_files, 1, "{report:?}");
    let store = Store::open(tmp.path()).unwrap();
    let q = store.queue_list().unwrap();
    assert_eq!(q.len(), 1);
    assert!(q[0].gate_held());
    assert_eq!(q[0].hold_reason.as_deref(), Some(reason));
    assert_eq!(q[0].expires, Some(1_900_000_000));
    assert_eq!(q[0].origin_mailbox.as_deref(), Some("jo@acme.example"));
    assert_eq!(
        store.read_blob(q[0].blob).unwrap(),
        b"Subject: spam\r\n\r\nbuy now\r\n"
    );
}
