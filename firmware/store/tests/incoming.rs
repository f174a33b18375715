//! Messages written as they arrive (`Store::begin_message`): the file they
//! make, their commit, and what an unfinished one leaves behind (nothing).

use std::path::Path;
use std::sync::Arc;

use mxrack_store::{DeliveryMeta, INCOMING_CHUNK_BYTES, Store, StoreError, id_hex, split_blob};

const BOB: &str = "bob@example.com";

fn populated(dir: &Path) -> Arc<Store> {
    let store = Store::open(dir).expect("open store");
    store.account_add("acme").expect("account");
    store.domain_add("example.com", "acme").expect("domain");
    store
        .mailbox_add(BOB, "bob-secret", false)
        .expect("mailbox");
    store
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn msg_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("msg"))
        .expect("msg dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A message of `len` bytes that is not periodic in the chunk size.
fn body(len: usize) -> Vec<u8> {
    let mut out = b"Subject: streamed\r\n\r\n".to_vec();
    let mut i = 0u32;
    while out.len() < len {
        out.extend_from_slice(format!("line {i} of the streamed message\r\n").as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

#[test]
fn a_message_written_in_pieces_is_delivered_byte_for_byte() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = populated(tmp.path());
    let message = body(5 * INCOMING_CHUNK_BYTES + 12_345);
    let id = store.next_id();
    runtime().block_on(async {
        let mut incoming = store.begin_message(id).await.expect("begin");
        // Pieces of odd sizes, some larger than the buffer.
        let mut rest = &message[..];
        let mut n = 1;
        while !rest.is_empty() {
            let take = (n * 7919 % 100_000 + 1).min(rest.len());
            incoming.write(&rest[..take]).await.expect("write");
            rest = &rest[take..];
            n += 1;
        }
        assert_eq!(incoming.len(), message.len() as u64);
        let meta = DeliveryMeta {
            mail_from: "a@remote.example".into(),
            local: vec![BOB.into()],
            remote: vec!["z@far.example".into()],
            copies: vec![],
        };
        store
            .deliver_incoming(incoming, meta)
            .await
            .expect("deliver");
    });
    assert_eq!(store.read_blob(id).expect("read"), message);
    // Read back in chunks (POP3 RETR), the record is never part of it.
    let mut reader = store.open_blob(id).expect("open");
    assert_eq!(reader.len(), message.len() as u64);
    let mut chunks = Vec::new();
    loop {
        let chunk = reader.read_chunk(50_000).expect("chunk");
        if chunk.is_empty() {
            break;
        }
        assert!(chunk.len() <= 50_000);
        chunks.extend_from_slice(&chunk);
    }
    assert_eq!(chunks, message);
    // The file is the message, then its recovery record with size and hash.
    let file = std::fs::read(tmp.path().join("msg").join(id_hex(id))).expect("file");
    let (header, len) = split_blob(&file).expect("split");
    let header = header.expect("record");
    assert_eq!(len, message.len());
    assert_eq!(header.size, message.len() as u64);
    assert_eq!(header.hash, mxrack_store::body_hash(&message));
    assert_eq!(header.owners, vec![BOB.to_string()]);
    assert_eq!(header.queue.len(), 1);
    assert_eq!(header.queue[0].size, message.len() as u64);
    let inbox = store.folder_snapshot(BOB, "INBOX").expect("inbox");
    assert_eq!(inbox.messages.len(), 1);
    assert_eq!(inbox.messages[0].size, message.len() as u64);
    assert_eq!(store.queue_list().expect("queue").len(), 1);
    assert_eq!(
        store.mailbox_usage(BOB).expect("usage"),
        message.len() as u64
    );
}

#[test]
fn an_unfinished_or_refused_message_leaves_no_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = populated(tmp.path());
    let rt = runtime();
    let (dropped, refused) = rt.block_on(async {
        // Dropped half written: the client went away.
        let dropped = store.next_id();
        let mut incoming = store.begin_message(dropped).await.expect("begin");
        incoming
            .write(&body(3 * INCOMING_CHUNK_BYTES))
            .await
            .expect("write");
        assert_eq!(msg_files(tmp.path()), vec![id_hex(dropped)]);
        drop(incoming);
        // Refused at commit: no recipients.
        let refused = store.next_id();
        let mut incoming = store.begin_message(refused).await.expect("begin");
        incoming.write(b"x\r\n").await.expect("write");
        let r = store
            .deliver_incoming(incoming, DeliveryMeta::default())
            .await;
        assert!(matches!(r, Err(StoreError::Invalid { .. })), "{r:?}");
        (dropped, refused)
    });
    // Dropping the runtime waits for its blocking tasks (the removals).
    drop(rt);
    let files = msg_files(tmp.path());
    assert!(!files.contains(&id_hex(dropped)), "{files:?}");
    assert!(!files.contains(&id_hex(refused)), "{files:?}");
    drop(store);
    let store = Store::open(tmp.path()).expect("reopen");
    assert_eq!(store.opened_lost_found(), 0);
}

#[test]
fn append_incoming_checks_the_real_size_against_the_quota() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = populated(tmp.path());
    store.mailbox_set_quota(BOB, Some(100_000)).expect("quota");
    let rt = runtime();
    // The announced size fits; the checks before the first byte pass.
    store
        .append_check(BOB, "INBOX", &[], 10)
        .expect("announced size fits");
    assert!(matches!(
        store.append_check(BOB, "Nope", &[], 10),
        Err(StoreError::NotFound { kind: "folder", .. })
    ));
    let message = body(70_000);
    rt.block_on(async {
        let mut incoming = store.begin_message(store.next_id()).await.expect("begin");
        incoming.write(&message).await.expect("write");
        let (_, uid) = store
            .append_incoming(incoming, BOB, "inbox", &["\\Seen".into()], Some(1000))
            .await
            .expect("append");
        assert_eq!(uid, 1);
        // Read back on a blocking thread, as a session would.
        let (s, m) = (Arc::clone(&store), message.clone());
        mxrack_store::spawn_blocking(move || {
            let snap = s.folder_snapshot(BOB, "INBOX").expect("snapshot");
            assert_eq!(snap.messages[0].flags, vec!["\\Seen".to_string()]);
            assert_eq!(snap.messages[0].internal_date, 1000);
            assert_eq!(s.read_blob(snap.messages[0].blob).expect("read"), m);
        })
        .await
        .expect("read back");
        // A second one would pass the quota by its real size: refused.
        let mut incoming = store.begin_message(store.next_id()).await.expect("begin");
        incoming.write(&message).await.expect("write");
        let r = store
            .append_incoming(incoming, BOB, "INBOX", &[], None)
            .await;
        assert!(matches!(r, Err(StoreError::OverQuota { .. })), "{r:?}");
    });
    drop(rt);
    assert_eq!(msg_files(tmp.path()).len(), 1);
    assert_eq!(store.mailbox_usage(BOB).expect("usage"), 70_000);
}
