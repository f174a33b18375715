//! Delivery: blob write in the caller's context, then one commit thread that
//! commits concurrent deliveries together ("group commit").
//!
//! This is where ARCHITECTURE invariant 1 ("acknowledged means durable")
//! is kept for incoming mail. A delivery is durable when
//!
//! 1. its blob file's data is on disk: written as it arrived
//!    ([`crate::IncomingMessage`]), then the recovery record and `fdatasync`
//!    (`IncomingMessage::finish`, on a blocking thread),
//! 2. the directory entry of that file is on disk (`fsync` of `msg/`),
//! 3. the redb transaction referencing it committed with
//!    [`Durability::Immediate`],
//!
//! in that order, so a committed message never points at a missing file (a
//! crash in between leaves only an orphan file, removed at the next open).
//! [`Store::deliver`] returns `Ok` only after step 3.
//!
//! Step 1 runs in parallel, on blocking threads, per delivery. Steps 2 and 3 are
//! shared: the commit thread takes every request queued at that moment (up to
//! [`MAX_BATCH`]) and pays for one directory fsync and one commit for all of
//! them, so durability costs latency but not throughput.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, mpsc};
use std::thread::{self, JoinHandle};

use redb::{Database, Durability, ReadableTable, WriteTransaction};
use tokio::sync::oneshot;

use crate::blobs::{self, blob_path, remove_blob_file, sync_dir};
use crate::ids::{id_hex, now_secs};
use crate::incoming::IncomingMessage;
use crate::journal::{JTable, JTxn, Journal};
use crate::schema::{
    self, BLOBS, FOLDERS, Folder, INBOX, MAILBOXES, MESSAGES, Mailbox, MessageMeta, QUEUE,
    QueueEntry, USAGE,
};
use crate::{Id, Store, StoreError};

/// Most deliveries committed in one transaction.
pub(crate) const MAX_BATCH: usize = 512;

/// A message to store: for local mailboxes, for the outbound queue, or both.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Envelope sender (empty for a bounce).
    pub mail_from: String,
    /// Mailbox addresses (as resolved by [`Store::resolve_recipient`]); the
    /// message goes to each one's INBOX.
    pub local: Vec<String>,
    /// External recipients: one queue entry carries them all.
    pub remote: Vec<String>,
    /// The whole message as it will be stored, CRLF line ends.
    pub body: Vec<u8>,
    /// Further queue entries sharing the body: forwarded copies, each with
    /// its own envelope sender (SRS), transport and trace header.
    pub copies: Vec<QueuedCopy>,
}

/// Where a message written as it arrived goes ([`Store::deliver_incoming`]):
/// a [`Delivery`] without its body.
#[derive(Debug, Clone, Default)]
pub struct DeliveryMeta {
    /// Envelope sender (empty for a bounce).
    pub mail_from: String,
    /// Mailbox addresses; the message goes to each one's INBOX.
    pub local: Vec<String>,
    /// External recipients: one queue entry carries them all.
    pub remote: Vec<String>,
    /// Further queue entries sharing the body (forwarded copies).
    pub copies: Vec<QueuedCopy>,
}

impl DeliveryMeta {
    fn check_recipients(&self) -> Result<(), StoreError> {
        let copies = self.copies.iter().any(|c| !c.recipients.is_empty());
        if self.local.is_empty() && self.remote.is_empty() && !copies {
            return Err(StoreError::Invalid {
                what: "delivery",
                why: "no recipients".into(),
            });
        }
        Ok(())
    }
}

/// A queue entry besides the one for `remote` (see [`Delivery::copies`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedCopy {
    /// From [`Store::next_id`]; names the queue entry.
    pub id: Id,
    pub mail_from: String,
    pub recipients: Vec<String>,
    pub transport: String,
    pub prepend: String,
    /// Set when the copy is queued held: a forwarded copy the spam gate
    /// discarded is kept, not dropped (nothing is deleted that cannot be
    /// accounted for), until released or expired.
    pub hold: Option<CopyHold>,
}

/// Why a [`QueuedCopy`] is queued held, until when, and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyHold {
    pub reason: String,
    /// Unix seconds at which the held entry is removed.
    pub expires: i64,
    /// The mailbox whose forwarding rule made the copy.
    pub mailbox: Option<String>,
}

impl QueuedCopy {
    /// The queue entry this copy becomes: the same in the blob's recovery
    /// record and in the queue table, so reconstruct brings a hold back
    /// with its reason and expiry.
    fn entry(&self, blob: Id, size: u64, now: i64) -> QueueEntry {
        let mut e = queue_entry(
            self.id,
            blob,
            &self.mail_from,
            &self.recipients,
            size,
            now,
            &self.transport,
            &self.prepend,
        );
        if let Some(h) = &self.hold {
            e.held = true;
            e.hold_reason = Some(h.reason.clone());
            e.expires = Some(h.expires);
            e.origin_mailbox = h.mailbox.clone();
        }
        e
    }
}

/// Group-commit counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Redb transactions committed for deliveries.
    pub batches: u64,
    /// Deliveries committed (acknowledged).
    pub deliveries: u64,
    /// Deliveries answered with an error by the commit thread.
    pub failed: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    batches: AtomicU64,
    deliveries: AtomicU64,
    failed: AtomicU64,
}

impl Stats {
    pub(crate) fn snapshot(&self) -> CommitStats {
        CommitStats {
            batches: self.batches.load(Ordering::Relaxed),
            deliveries: self.deliveries.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// What the commit thread needs of a delivery whose blob is already written.
#[derive(Debug)]
pub(crate) struct Request {
    id: Id,
    mail_from: String,
    local: Vec<String>,
    remote: Vec<String>,
    copies: Vec<QueuedCopy>,
    size: u64,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

impl Store {
    /// Stores one message for its local mailboxes (each INBOX gets the next
    /// UID) and, if `remote` is not empty, queues it for the external
    /// recipients. `id` comes from [`Store::next_id`] (the caller shows it in
    /// the `Received:` header); it names the blob and the queue entry.
    ///
    /// **Durability invariant** (ARCHITECTURE invariant 1, "acknowledged means
    /// durable"): this returns `Ok` only once the body file is fsynced, the
    /// `msg/` directory is fsynced, and the redb transaction recording the
    /// message committed with immediate durability. A caller may answer
    /// "250" (or "OK") exactly when this returns `Ok`. Concurrent calls share
    /// the directory fsync and the commit (group commit, see the module
    /// docs).
    ///
    /// Errors: [`StoreError::NotFound`] if a local mailbox does not exist (at
    /// commit time; other deliveries of the same batch are not affected),
    /// [`StoreError::Invalid`] without recipients, [`StoreError::NoSpace`]
    /// when the disk is full, [`StoreError::Closed`] after
    /// [`Store::shutdown`]. On error nothing is stored.
    ///
    /// Must run inside a Tokio runtime (the file work runs in
    /// [`crate::spawn_blocking`], the commit on the commit thread). If the future is dropped after the blob is
    /// written, the commit still happens or the file is collected at the
    /// next open.
    pub async fn deliver(&self, delivery: Delivery, id: Id) -> Result<(), StoreError> {
        let Delivery {
            mail_from,
            local,
            remote,
            body,
            copies,
        } = delivery;
        let meta = DeliveryMeta {
            mail_from,
            local,
            remote,
            copies,
        };
        meta.check_recipients()?;
        let mut incoming = self.begin_message(id).await?;
        incoming.write_owned(body).await?;
        self.deliver_incoming(incoming, meta).await
    }

    /// [`Store::deliver`] for a message written as it arrived
    /// ([`Store::begin_message`]): finishes its file (recovery record with
    /// the real size and hash, `fdatasync`, on a blocking thread) and
    /// commits it with the group commit. Same durability, same errors, same
    /// records as [`Store::deliver`]; on error the file is removed and
    /// nothing is stored.
    pub async fn deliver_incoming(
        &self,
        incoming: IncomingMessage,
        meta: DeliveryMeta,
    ) -> Result<(), StoreError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        meta.check_recipients()?;
        let DeliveryMeta {
            mail_from,
            local,
            remote,
            copies,
        } = meta;
        let copies: Vec<QueuedCopy> = copies
            .into_iter()
            .filter(|c| !c.recipients.is_empty())
            .collect();
        let local = dedup(local.iter().map(|a| a.to_ascii_lowercase()));
        let remote = dedup(remote.into_iter());
        let id = incoming.id();
        let size = incoming.len();
        let path = blob_path(self.msg_dir(), id);
        // The file's own recovery record: where this delivery goes.
        let now = now_secs();
        let mut header = blobs::BlobHeader {
            date: now,
            owners: local.clone(),
            folder: INBOX.to_string(),
            ..Default::default()
        };
        if !remote.is_empty() {
            header.queue.push(queue_entry(
                id, id, &mail_from, &remote, size, now, "outbound", "",
            ));
        }
        for c in &copies {
            header.queue.push(c.entry(id, size, now));
        }

        // Step 1, in parallel with other deliveries: the file's last bytes
        // and its record, then fdatasync, on a blocking thread.
        incoming.finish(header).await?;

        // Steps 2 and 3, on the commit thread.
        let (reply, answer) = oneshot::channel();
        let notify = local.clone();
        let request = Request {
            id,
            mail_from,
            local,
            remote,
            copies,
            size,
            reply,
        };
        let sent = {
            let guard = self
                .commit_tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match guard.as_ref() {
                Some(tx) => tx.send(request).is_ok(),
                None => false,
            }
        };
        if !sent {
            let _ = crate::offload::spawn_blocking(move || remove_blob_file(&path)).await;
            return Err(StoreError::Closed);
        }
        // A dropped reply means the commit thread died mid-batch: nothing was
        // acknowledged, the blob is an orphan for the next open.
        let result = answer.await.unwrap_or(Err(StoreError::Closed));
        if result.is_ok() {
            for mailbox in &notify {
                self.notify_change(mailbox);
            }
        }
        result
    }
}

#[allow(clippy::too_many_arguments)]
fn queue_entry(
    id: Id,
    blob: Id,
    mail_from: &str,
    recipients: &[String],
    size: u64,
    now: i64,
    transport: &str,
    prepend: &str,
) -> QueueEntry {
    QueueEntry {
        id,
        mail_from: mail_from.to_string(),
        recipients: recipients.to_vec(),
        blob,
        size,
        created: now,
        attempts: 0,
        next_attempt: now,
        last_error: None,
        held: false,
        transport: transport.to_string(),
        prepend: prepend.to_string(),
        hold_reason: None,
        expires: None,
        origin_mailbox: None,
    }
}

/// Removes duplicates, keeping the first occurrence's position.
fn dedup(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    items.filter(|a| seen.insert(a.clone())).collect()
}

/// A write transaction that commits with [`Durability::Immediate`].
pub(crate) fn durable_write(db: &Database) -> Result<WriteTransaction, StoreError> {
    crate::offload::check("redb write transaction");
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    Ok(txn)
}

/// Starts the commit thread. It ends when every sender is dropped and the
/// queue is drained ([`Store::shutdown`]).
pub(crate) fn spawn_committer(
    db: Arc<Database>,
    msg_dir: PathBuf,
    stats: Arc<Stats>,
    journal: Arc<Journal>,
) -> std::io::Result<(mpsc::Sender<Request>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel();
    let handle = thread::Builder::new()
        .name("store-commit".into())
        .spawn(move || commit_loop(&db, &msg_dir, &stats, &journal, &rx))?;
    Ok((tx, handle))
}

fn commit_loop(
    db: &Database,
    msg_dir: &Path,
    stats: &Stats,
    journal: &Journal,
    rx: &mpsc::Receiver<Request>,
) {
    // Block for one request, then take whatever else is already waiting:
    // the batch grows by itself with the load, with no timer.
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::with_capacity(16);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(req) => batch.push(req),
                Err(_) => break,
            }
        }
        let n = batch.len();
        // A panic must not end the thread (every later delivery would fail):
        // the batch's reply senders are dropped, so its callers get Closed
        // and nothing of it was acknowledged.
        if catch_unwind(AssertUnwindSafe(|| {
            commit_batch(db, msg_dir, stats, journal, batch)
        }))
        .is_err()
        {
            stats.failed.fetch_add(n as u64, Ordering::Relaxed);
            tracing::error!(deliveries = n, "store commit batch panicked");
        }
        if journal.len() > crate::journal::CHECKPOINT_BYTES
            && let Err(e) = journal.checkpoint(db)
        {
            tracing::error!(error = %e, "recovery checkpoint failed");
        }
    }
}

/// Steps 2 and 3 for a batch, then the answers.
fn commit_batch(
    db: &Database,
    msg_dir: &Path,
    stats: &Stats,
    journal: &Journal,
    batch: Vec<Request>,
) {
    let outcome = sync_dir(msg_dir)
        .map_err(StoreError::from_io)
        .and_then(|()| apply_batch(db, journal, &batch));
    match outcome {
        Ok(results) => {
            stats.batches.fetch_add(1, Ordering::Relaxed);
            for (req, result) in batch.into_iter().zip(results) {
                if let Err(e) = &result {
                    tracing::info!(id = %id_hex(req.id), error = %e, "delivery refused at commit");
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    remove_blob_file(&blob_path(msg_dir, req.id));
                } else {
                    stats.deliveries.fetch_add(1, Ordering::Relaxed);
                }
                // The caller may have gone away; the mail is stored anyway.
                let _ = req.reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(deliveries = batch.len(), error = %e, "store commit failed");
            stats
                .failed
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            for req in batch {
                remove_blob_file(&blob_path(msg_dir, req.id));
                let _ = req.reply.send(Err(e.duplicate()));
            }
        }
    }
}

/// The tables a delivery writes.
struct Tables<'t> {
    mailboxes: JTable<'t, &'static str, &'static [u8]>,
    folders: JTable<'t, (&'static str, &'static str), &'static [u8]>,
    messages: JTable<'t, (u64, u32), &'static [u8]>,
    blobs: JTable<'t, u64, u64>,
    queue: JTable<'t, u64, &'static [u8]>,
    usage: JTable<'t, &'static str, u64>,
    /// Read only: a mailbox's quota counts its address book too.
    books: JTable<'t, &'static str, &'static [u8]>,
}

/// One transaction for the whole batch. The outer error fails the whole
/// batch (nothing committed); the inner results are per delivery: an invalid
/// delivery is skipped without writing anything, the others go on.
fn apply_batch(
    db: &Database,
    journal: &Journal,
    batch: &[Request],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let txn = JTxn::new(durable_write(db)?, journal, None);
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut t = Tables {
            mailboxes: txn.open_table(MAILBOXES)?,
            folders: txn.open_table(FOLDERS)?,
            messages: txn.open_table(MESSAGES)?,
            blobs: txn.open_table(BLOBS)?,
            queue: txn.open_table(QUEUE)?,
            usage: txn.open_table(USAGE)?,
            books: txn.open_table(crate::ldap::LDAP_BOOKS)?,
        };
        let now = now_secs();
        for req in batch {
            // Validate everything first, so that apply() writes all or nothing
            // of a delivery; its errors are storage errors and fail the batch.
            if let Err(e) = check(req, &t) {
                results.push(Err(e));
                continue;
            }
            apply(req, now, &mut t)?;
            results.push(Ok(()));
        }
    }
    txn.commit()?;
    Ok(results)
}

fn inbox(t: &Tables<'_>, mailbox: &str) -> Result<Option<Folder>, StoreError> {
    match t.folders.get((mailbox, INBOX))? {
        Some(g) => Ok(Some(schema::decode(g.value(), "folder")?)),
        None => Ok(None),
    }
}

fn check(req: &Request, t: &Tables<'_>) -> Result<(), StoreError> {
    for id in std::iter::once(req.id).chain(req.copies.iter().map(|c| c.id)) {
        if t.blobs.get(id)?.is_some() || t.queue.get(id)?.is_some() {
            return Err(StoreError::Duplicate {
                kind: "message id",
                name: id_hex(id),
            });
        }
    }
    for mailbox in &req.local {
        let not_found = || StoreError::NotFound {
            kind: "mailbox",
            name: mailbox.clone(),
        };
        let record = match t.mailboxes.get(mailbox.as_str())? {
            Some(g) => schema::decode::<Mailbox>(g.value(), "mailbox")?,
            None => return Err(not_found()),
        };
        // Quota (RFC 9208 STORAGE): the whole delivery is refused when one
        // local mailbox cannot take it, so nothing is half delivered. It
        // counts the mailbox's mail and its address book together.
        if let Some(quota) = record.quota_bytes {
            let used = t
                .usage
                .get(mailbox.as_str())?
                .map(|g| g.value())
                .unwrap_or(0)
                .saturating_add(crate::ldap::contacts_bytes(&*t.books, mailbox)?);
            if used.saturating_add(req.size) > quota {
                return Err(StoreError::OverQuota {
                    mailbox: mailbox.clone(),
                    larger_than_quota: req.size > quota,
                });
            }
        }
        let folder = inbox(t, mailbox)?.ok_or_else(not_found)?;
        if folder.uidnext == u32::MAX {
            return Err(StoreError::Invalid {
                what: "delivery",
                why: format!("the INBOX of {mailbox} has used every UID"),
            });
        }
    }
    Ok(())
}

fn apply(req: &Request, now: i64, t: &mut Tables<'_>) -> Result<(), StoreError> {
    let refs = req.local.len() as u64 + u64::from(!req.remote.is_empty()) + req.copies.len() as u64;
    t.blobs.insert(req.id, refs)?;
    for mailbox in &req.local {
        let mut folder = inbox(t, mailbox)?.ok_or_else(|| StoreError::NotFound {
            kind: "mailbox",
            name: mailbox.clone(),
        })?;
        let uid = folder.uidnext;
        folder.uidnext += 1;
        folder.highestmodseq += 1;
        let modseq = folder.highestmodseq;
        let used = t
            .usage
            .get(mailbox.as_str())?
            .map(|g| g.value())
            .unwrap_or(0);
        t.usage
            .insert(mailbox.as_str(), used.saturating_add(req.size))?;
        t.folders.insert(
            (mailbox.as_str(), INBOX),
            schema::encode(&folder)?.as_slice(),
        )?;
        let meta = MessageMeta {
            uid,
            blob: req.id,
            size: req.size,
            internal_date: now,
            flags: Vec::new(),
            modseq,
        };
        t.messages
            .insert((folder.id, uid), schema::encode(&meta)?.as_slice())?;
    }
    if !req.remote.is_empty() {
        let entry = queue_entry(
            req.id,
            req.id,
            &req.mail_from,
            &req.remote,
            req.size,
            now,
            "outbound",
            "",
        );
        t.queue.insert(req.id, schema::encode(&entry)?.as_slice())?;
    }
    for copy in &req.copies {
        let entry = copy.entry(req.id, req.size, now);
        t.queue
            .insert(copy.id, schema::encode(&entry)?.as_slice())?;
    }
    Ok(())
}
