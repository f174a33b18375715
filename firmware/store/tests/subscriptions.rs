//! Subscriptions kept apart from folders (RFC 3501 6.3.6: DELETE keeps the
//! subscription), special-use roles given back to a recreated folder, and
//! the upgrade of a schema version 1 store (subscribed flags in folder rows).

use std::path::Path;
use std::sync::Arc;

use mxrack_store::{Store, recovery};

const MB: &str = "jo@example.net";

fn store(dir: &Path) -> Arc<Store> {
    let s = Store::open(dir).expect("open");
    s.account_add("acme").expect("account");
    s.domain_add("example.net", "acme").expect("domain");
    s.mailbox_add(MB, "pw-jo-123", false).expect("mailbox");
    s
}

fn role(s: &Store, name: &str) -> Option<String> {
    s.folder_get(MB, name).expect("folder").special_use
}

#[test]
fn delete_keeps_the_subscription_rename_moves_it() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    s.folder_create(MB, "Lists").unwrap();
    s.folder_create(MB, "Lists/Rust").unwrap();
    s.folder_subscribe(MB, "Lists/Rust", true).unwrap();
    s.folder_subscribe(MB, "Gone/Never", true).unwrap();
    s.folder_delete(MB, "Lists/Rust").unwrap();
    let subs = s.subscriptions(MB).unwrap();
    assert!(subs.contains(&"Lists/Rust".to_string()), "{subs:?}");
    assert!(subs.contains(&"Gone/Never".to_string()), "{subs:?}");
    // A renamed folder takes its subscription (and its children's) along.
    s.folder_create(MB, "Lists/Go").unwrap();
    s.folder_subscribe(MB, "Lists/Go", true).unwrap();
    s.folder_rename(MB, "Lists", "Old").unwrap();
    let subs = s.subscriptions(MB).unwrap();
    assert!(subs.contains(&"Old/Go".to_string()) && !subs.contains(&"Lists/Go".to_string()));
    // Unsubscribing what is not subscribed is refused, then it is gone.
    s.folder_subscribe(MB, "Gone/Never", false).unwrap();
    assert!(s.folder_subscribe(MB, "Gone/Never", false).is_err());
    // The journal replays to the database, subscriptions included.
    let report = s.verify(&mut |_, _, _| {}).expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    // Removing the mailbox removes its subscriptions.
    s.mailbox_remove(MB).unwrap();
    s.mailbox_add(MB, "pw-jo-123", false).unwrap();
    assert_eq!(
        s.subscriptions(MB).unwrap(),
        ["Drafts", "INBOX", "Junk", "Sent", "Trash"]
    );
    s.shutdown();
    drop(s);
    // Reconstruct from the journal brings the subscriptions back.
    recovery::reconstruct(tmp.path(), None, &mut |_, _, _| {}).expect("reconstruct");
    let s = Store::open(tmp.path()).unwrap();
    assert_eq!(s.subscriptions(MB).unwrap().len(), 5);
}

#[test]
fn a_recreated_junk_folder_is_junk_again() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    s.folder_delete(MB, "Junk").unwrap();
    s.folder_create(MB, "Junk").unwrap();
    assert_eq!(role(&s, "Junk").as_deref(), Some("\\Junk"));
    // Archive is a role name too; "junk" (another spelling) is not.
    s.folder_create(MB, "Archive").unwrap();
    assert_eq!(role(&s, "Archive").as_deref(), Some("\\Archive"));
    s.folder_create(MB, "junk").unwrap();
    assert_eq!(role(&s, "junk"), None);
    // The role stays with a renamed Junk; a new namesake does not take it twice.
    s.folder_rename(MB, "Junk", "Spam").unwrap();
    assert_eq!(role(&s, "Spam").as_deref(), Some("\\Junk"));
    s.folder_create(MB, "Junk").unwrap();
    assert_eq!(role(&s, "Junk"), None);
    // Trash deleted, then another folder renamed to Trash: that is Trash now.
    s.folder_delete(MB, "Trash").unwrap();
    s.folder_create(MB, "Bin").unwrap();
    s.folder_rename(MB, "Bin", "Trash").unwrap();
    assert_eq!(role(&s, "Trash").as_deref(), Some("\\Trash"));
}

/// A version 1 store (subscribed flags in the folder rows, no recent
/// high-water UID) is upgraded at open: same subscriptions, journaled, and
/// `verify` agrees.
#[test]
fn a_version_1_store_is_upgraded_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = store(tmp.path());
        s.folder_create(MB, "Notes").unwrap();
        s.folder_subscribe(MB, "Drafts", false).unwrap();
        s.append(MB, "INBOX", b"Subject: x\r\n\r\nx\r\n", &[], None)
            .unwrap();
        s.shutdown();
    }
    // Write the rows back as version 1 did.
    {
        let db = redb::Database::open(tmp.path().join("meta.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let folders: redb::TableDefinition<(&str, &str), &[u8]> =
                redb::TableDefinition::new("folders");
            let subs: redb::TableDefinition<(&str, &str), ()> =
                redb::TableDefinition::new("subscriptions");
            let meta: redb::TableDefinition<&str, u32> = redb::TableDefinition::new("meta");
            let mut t = txn.open_table(folders).unwrap();
            let mut rows = Vec::new();
            for item in redb::ReadableTable::iter(&t).unwrap() {
                let (k, v) = item.unwrap();
                let (m, n) = k.value();
                let mut json: serde_json::Value = serde_json::from_slice(v.value()).unwrap();
                let o = json.as_object_mut().unwrap();
                o.remove("first_recent_uid");
                o.insert("subscribed".into(), (n != "Drafts" && n != "Notes").into());
                rows.push((
                    m.to_string(),
                    n.to_string(),
                    serde_json::to_vec(&json).unwrap(),
                ));
            }
            for (m, n, v) in &rows {
                t.insert((m.as_str(), n.as_str()), v.as_slice()).unwrap();
            }
            let mut s = txn.open_table(subs).unwrap();
            for (m, n, _) in &rows {
                s.remove((m.as_str(), n.as_str())).unwrap();
            }
            txn.open_table(meta)
                .unwrap()
                .insert("schema_version", 1)
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let s = Store::open(tmp.path()).expect("upgraded");
    assert_eq!(
        s.subscriptions(MB).unwrap(),
        ["INBOX", "Junk", "Sent", "Trash"]
    );
    // What was there before the upgrade is not recent.
    assert_eq!(s.folder_get(MB, "INBOX").unwrap().first_recent_uid, 2);
    let report = s.verify(&mut |_, _, _| {}).expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}
