//! mxrack-store: the mail store of the appliance.
//!
//! Layout of the data folder:
//!
//! * `DATA/meta.redb`: all metadata (accounts, domains, mailboxes, aliases,
//!   folders, messages, the outbound queue, blob reference counts). Only this
//!   crate opens redb (ARCHITECTURE invariant 7); the format is declared in
//!   [`schema`] and carries a schema version.
//! * `DATA/msg/<id as 16 lowercase hex>`: one file per message body ("blob"),
//!   written once and shared by every copy of one delivery.
//!
//! Mail comes in through [`Store::deliver`], which keeps invariant 1
//! ("acknowledged means durable", with group commit): see its documentation
//! and the `deliver` module (`src/deliver.rs`). Administration calls are
//! synchronous and each is one durable redb write transaction.
//!
//! Every synchronous call that opens a redb transaction or touches a file
//! blocks: async code makes it inside [`spawn_blocking`] (module
//! [`offload`]), never on an async worker; debug builds panic otherwise.

mod admin;
mod blobs;
mod deliver;
mod error;
mod events;
mod filterdata;
mod folders;
mod ids;
mod incoming;
mod intake;
mod journal;
mod ldap;
mod mailstore;
mod names;
pub mod offload;
mod password;
mod queue;
mod recent;
pub mod recovery;
mod relaydata;
mod resolve;
pub mod schema;
mod subscriptions;
mod webadmin;

use std::fs::{self, DirBuilder};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;

use redb::{Database, ReadTransaction, ReadableDatabase, WriteTransaction};

pub use blobs::{BlobHeader, body_hash, split_blob};
pub use deliver::{CommitStats, CopyHold, Delivery, DeliveryMeta, QueuedCopy};
pub use error::StoreError;
pub use events::{
    EVENTS_KEPT_MIN, EntryKind, Event, IncidentAction, NewEvent, STATUS_ENTRIES_KEPT, Severity,
    StatusEntry, StatusUpdate,
};
pub use filterdata::{
    BAYES_FORMAT_UNRECORDED, BAYES_SEEN_MAX, BAYES_TOKENS_MAX, BayesCounts, COMPLAINT_SAMPLES_MAX,
    ComplaintCount, ComplaintSample, FORWARD_DAYS_KEPT, FORWARD_LOG_DAYS, FORWARD_LOG_MAX,
    ForwardDayCounters, ForwardRecord, LearnOutcome, THRESHOLD_CHANGES_MAX, ThresholdChangeRecord,
    ThresholdState,
};
pub use ids::{Id, id_hex, parse_id_hex};
pub use incoming::{INCOMING_CHUNK_BYTES, IncomingMessage};
pub use journal::JournalOpen;
pub use ldap::{
    BookChanges, BookLimits, LdapAttribute, LdapBookMeta, LdapBookSnapshot, LdapEntry,
    LdapPrincipal, LdapValue, TOMBSTONES_PER_BOOK_MAX, Tombstone,
};
pub use mailstore::AppendedFile;
pub use mailstore::MailboxUsage;
pub use mailstore::{FlagOp, FolderSnapshot, folder_name_valid};
pub use names::{normalize_address, normalize_domain};
pub use offload::spawn_blocking;
pub use password::MAX_PASSWORD_LEN;
pub use recovery::{BackupReport, ReconstructReport, VerifyReport};
pub use relaydata::{BlockedSender, ForwardRule};
pub use resolve::{Resolution, Resolved};
pub use schema::{
    Account, Alias, Domain, Folder, INBOX, Mailbox, MessageMeta, QueueEntry, SCHEMA_VERSION,
};
pub use subscriptions::SUBSCRIPTIONS_PER_MAILBOX_MAX;
pub use webadmin::{
    AUDIT_KEPT, AuditRecord, QUEUE_SAMPLES_KEPT, WEB_SESSIONS_MAX, WebSession, session_key,
};

/// Change notices buffered per listener; a session that falls behind gets
/// `Lagged` and simply re-reads its folder.
const CHANGE_CHANNEL_CAPACITY: usize = 1024;

/// How long the file of a released message stays readable after the
/// transaction that released it. An IMAP session that has not yet synced
/// still shows the message (RFC 3501 7.4.1: EXPUNGE is reported only
/// between commands); within this grace its FETCH gets the data, as
/// Dovecot serves it, instead of `NO [EXPUNGEISSUED]` (RFC 2180 4.1.3).
pub const RELEASED_FILE_GRACE: std::time::Duration = std::time::Duration::from_secs(120);
/// At most this many released files wait out their grace; past it the
/// oldest go at once (memory: one id and one instant each).
pub const RELEASED_FILES_MAX: usize = 4096;

/// The mail store. `Send + Sync`; share it as `Arc<Store>`.
///
/// Dropping the last reference shuts it down (see [`Store::shutdown`]).
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    msg_dir: PathBuf,
    db: Arc<Database>,
    ids: ids::IdGen,
    closed: AtomicBool,
    /// Requests to the commit thread; `None` once shut down.
    commit_tx: Mutex<Option<mpsc::Sender<deliver::Request>>>,
    committer: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<deliver::Stats>,
    /// Tells sessions that a mailbox changed (its address), after commit.
    changes: tokio::sync::broadcast::Sender<Arc<str>>,
    /// Closed by the health monitor when new mail must be refused.
    intake: intake::IntakeGate,
    /// The recovery journal of the mail tables (`journal.rs`).
    journal: Arc<journal::Journal>,
    /// Message files moved to lost+found at open.
    lost_found_at_open: usize,
    /// Files of released blobs waiting out [`RELEASED_FILE_GRACE`], oldest
    /// first. Their release is committed: a crash leaves them to the next
    /// open, which moves them to lost+found like any file without a record.
    released: Mutex<std::collections::VecDeque<(std::time::Instant, Id)>>,
    /// The grace in milliseconds: [`RELEASED_FILE_GRACE`] unless a test set
    /// another with [`Store::set_released_file_grace`].
    grace_ms: std::sync::atomic::AtomicU64,
    /// Queue removals committed together (`queue.rs`).
    removals: queue::RemovalGroup,
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir`: creates the
    /// folders and `meta.redb`, checks the schema version (refusing a newer
    /// one with [`StoreError::Schema`]), lines the database up with the
    /// recovery journal (rolling it forward, or refusing with
    /// [`StoreError::NeedsReconstruct`] when they do not belong together),
    /// recounts blob references and moves orphan blob files (in `msg/` but
    /// used by no message nor queue entry) to `lost+found/`, then starts the
    /// commit thread.
    ///
    /// A data folder holding mail but no `meta.redb` is refused
    /// ([`StoreError::NeedsReconstruct`]): an empty database would hide it.
    pub fn open(data_dir: &Path) -> Result<Arc<Store>, StoreError> {
        offload::check("open");
        // redb panics on some damaged pages: that is a damaged database,
        // which the operator repairs with reconstruct, not a crash loop.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Store::open_inner(data_dir)))
            .unwrap_or_else(|_| {
                Err(StoreError::NeedsReconstruct(
                    "meta.redb is damaged (reading it failed)".into(),
                ))
            })
    }

    fn open_inner(data_dir: &Path) -> Result<Arc<Store>, StoreError> {
        if let Some(why) = recovery::has_mail_without_db(data_dir)? {
            return Err(StoreError::NeedsReconstruct(why));
        }
        let msg_dir = data_dir.join("msg");
        let fresh = !msg_dir.is_dir();
        // Mail is private: only the appliance user may read the folder.
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&msg_dir)
            .map_err(StoreError::from_io)?;
        if fresh {
            blobs::sync_dir(data_dir).map_err(StoreError::from_io)?;
        }
        let db = create_db(&data_dir.join("meta.redb")).map_err(|e| match e {
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(why)) => {
                StoreError::NeedsReconstruct(format!("meta.redb is damaged ({why})"))
            }
            other => other.into(),
        })?;
        let found_version = schema::prepare(&db)?;
        let (journal, journal_open) = journal::Journal::open(data_dir, &db)?;
        let journal = Arc::new(journal);
        if journal_open.rolled_forward > 0 {
            tracing::warn!(
                frames = journal_open.rolled_forward,
                "meta.redb was behind the recovery journal; rolled forward"
            );
        }
        {
            // Books written before their size was kept get it now (once;
            // a store that has it reads `ldap_books` only).
            let txn = journal::JTxn::new(deliver::durable_write(&db)?, &journal, None);
            let counted = ldap::count_uncounted_books(&txn)?;
            txn.commit()?;
            if counted > 0 {
                tracing::info!(books = counted, "address books counted for quotas");
            }
        }
        if found_version < schema::SCHEMA_VERSION {
            // The upgrade is journaled like any change of the mail tables;
            // the version moves in the same transaction.
            let txn = journal::JTxn::new(deliver::durable_write(&db)?, &journal, None);
            let rewritten = subscriptions::upgrade_v1_folders(&txn)?;
            txn.open_table(schema::META)?
                .insert(schema::SCHEMA_VERSION_KEY, schema::SCHEMA_VERSION)?;
            txn.commit()?;
            tracing::info!(
                from = found_version,
                to = schema::SCHEMA_VERSION,
                folders = rewritten,
                "store format upgraded"
            );
        }
        let reconciled = blobs::reconcile(&db, &msg_dir)?;
        let largest_blob = reconciled.largest;
        let db = Arc::new(db);
        let stats = Arc::new(deliver::Stats::default());
        let (commit_tx, committer) = deliver::spawn_committer(
            Arc::clone(&db),
            msg_dir.clone(),
            Arc::clone(&stats),
            Arc::clone(&journal),
        )
        .map_err(StoreError::Io)?;
        mailstore::recount_usage(&db)?;
        tracing::info!(dir = %data_dir.display(), "store opened");
        Ok(Arc::new(Store {
            dir: data_dir.to_path_buf(),
            msg_dir,
            db,
            ids: ids::IdGen::new(ids::now_micros().max(largest_blob)),
            closed: AtomicBool::new(false),
            commit_tx: Mutex::new(Some(commit_tx)),
            committer: Mutex::new(Some(committer)),
            stats,
            changes: tokio::sync::broadcast::channel(CHANGE_CHANNEL_CAPACITY).0,
            intake: intake::IntakeGate::default(),
            journal,
            lost_found_at_open: reconciled.lost_found,
            released: Mutex::new(std::collections::VecDeque::new()),
            grace_ms: std::sync::atomic::AtomicU64::new(RELEASED_FILE_GRACE.as_millis() as u64),
            removals: queue::RemovalGroup::default(),
        }))
    }

    /// The data folder given to [`Store::open`].
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// A new id for a delivery (its blob, its queue entry, its `Received:`
    /// header): unique and increasing, across restarts too (`max(now in µs,
    /// last + 1)`, seeded above the largest blob id on disk).
    pub fn next_id(&self) -> Id {
        self.ids.next()
    }

    /// Message files moved to `lost+found/` when this store was opened.
    pub fn opened_lost_found(&self) -> usize {
        self.lost_found_at_open
    }

    /// The body of blob `blob`, as delivered (CRLF line ends), without the
    /// file's recovery record.
    pub fn read_blob(&self, blob: Id) -> Result<Vec<u8>, StoreError> {
        offload::check("read a message file");
        let mut bytes =
            fs::read(blobs::blob_path(&self.msg_dir, blob)).map_err(|e| blob_io_error(blob, e))?;
        let (_, body_len) = blobs::split_blob(&bytes).map_err(|why| damaged_blob(blob, &why))?;
        bytes.truncate(body_len);
        Ok(bytes)
    }

    /// Blob `blob` opened for reading in chunks (POP3 RETR streams a
    /// message this way: memory is one chunk, whatever the message's size).
    pub fn open_blob(&self, blob: Id) -> Result<BlobReader, StoreError> {
        offload::check("open a message file");
        let mut file = fs::File::open(blobs::blob_path(&self.msg_dir, blob))
            .map_err(|e| blob_io_error(blob, e))?;
        let len = blobs::message_len(&mut file).map_err(|why| damaged_blob(blob, &why))?;
        Ok(BlobReader {
            file,
            remaining: len,
            len,
        })
    }

    /// Space left on the data file system for an unprivileged writer:
    /// `(bytes available, inodes available)`.
    pub fn free_space(&self) -> Result<(u64, u64), StoreError> {
        offload::check("statvfs");
        let st = nix::sys::statvfs::statvfs(&self.dir)
            .map_err(|e| StoreError::from_io(std::io::Error::from(e)))?;
        #[allow(clippy::useless_conversion)] // the widths differ between targets
        let bytes = u64::from(st.blocks_available()).saturating_mul(u64::from(st.fragment_size()));
        #[allow(clippy::useless_conversion)]
        let inodes = u64::from(st.files_available());
        Ok((bytes, inodes))
    }

    /// Stops accepting deliveries ([`Store::deliver`] then returns
    /// [`StoreError::Closed`]), lets the commit thread commit and answer
    /// everything already submitted, and waits for it to end. Idempotent.
    /// Reads and administration keep working.
    pub fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // Dropping the only sender ends the thread once the queue is drained.
        drop(
            self.commit_tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let handle = self
            .committer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("the store commit thread panicked");
            } else {
                tracing::info!("store commit thread stopped");
            }
        }
        self.delete_released_now();
    }

    /// Counters of the group commit, for metrics.
    pub fn commit_stats(&self) -> CommitStats {
        self.stats.snapshot()
    }

    /// A durable write transaction (the default, made explicit: every
    /// administrative change is acknowledged only once on disk).
    pub(crate) fn write_txn(&self) -> Result<WriteTransaction, StoreError> {
        deliver::durable_write(&self.db)
    }

    /// A write transaction for counters that no message depends on (the
    /// forward log and the gate's per-day counts): its commit is not synced
    /// by itself (redb `Durability::None`) but with the next durable
    /// commit, which every delivery makes. A power cut can lose the last
    /// few records (a count a few low, a complaint about such a copy not
    /// traced to it); it saves each forwarded message a synced commit of
    /// its own on the one writer (the relay benchmark: about two
    /// fdatasync calls per message).
    pub(crate) fn counters_txn(&self) -> Result<WriteTransaction, StoreError> {
        offload::check("redb write transaction");
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        Ok(txn)
    }

    /// A durable write transaction whose changes to the mail tables are
    /// written to the recovery journal before it commits.
    pub(crate) fn jtxn(&self) -> Result<journal::JTxn<'_>, StoreError> {
        let txn = journal::JTxn::new(
            deliver::durable_write(&self.db)?,
            &self.journal,
            Some(&self.db),
        );
        Ok(txn)
    }

    pub(crate) fn read_txn(&self) -> Result<ReadTransaction, StoreError> {
        offload::check("redb read transaction");
        Ok(self.db.begin_read()?)
    }

    pub(crate) fn msg_dir(&self) -> &Path {
        &self.msg_dir
    }

    /// Deletes the files of blobs whose last reference went in a committed
    /// transaction (queue entries, removed mailboxes: nothing an IMAP
    /// session may still show), and any released file past its grace.
    pub(crate) fn delete_blob_files(&self, freed: &[Id]) {
        for id in freed {
            blobs::remove_blob_file(&blobs::blob_path(&self.msg_dir, *id));
        }
        self.delete_blob_files_after_grace(&[]);
    }

    /// Like [`Store::delete_blob_files`] for expunged messages: `freed`
    /// joins the waiting line, and the files past [`RELEASED_FILE_GRACE`]
    /// go now, so a session that has not synced can still FETCH them.
    pub(crate) fn delete_blob_files_after_grace(&self, freed: &[Id]) {
        let now = std::time::Instant::now();
        let grace = std::time::Duration::from_millis(self.grace_ms.load(Ordering::Relaxed));
        let due: Vec<Id> = {
            let mut line = self.released.lock().unwrap_or_else(PoisonError::into_inner);
            line.extend(freed.iter().map(|id| (now, *id)));
            let mut due = Vec::new();
            while let Some(&(at, id)) = line.front() {
                if line.len() > RELEASED_FILES_MAX || now.duration_since(at) >= grace {
                    due.push(id);
                    line.pop_front();
                } else {
                    break;
                }
            }
            due
        };
        for id in due {
            blobs::remove_blob_file(&blobs::blob_path(&self.msg_dir, id));
        }
    }

    /// Sets how long expunged message files stay readable (tests that
    /// check a file is gone right after its expunge set zero).
    pub fn set_released_file_grace(&self, grace: std::time::Duration) {
        self.grace_ms
            .store(grace.as_millis() as u64, Ordering::Relaxed);
    }

    /// Blobs whose files are waiting out [`RELEASED_FILE_GRACE`].
    pub(crate) fn released_ids(&self) -> std::collections::HashSet<Id> {
        let line = self.released.lock().unwrap_or_else(PoisonError::into_inner);
        line.iter().map(|(_, id)| *id).collect()
    }

    /// Deletes every released file still waiting out its grace (shutdown).
    fn delete_released_now(&self) {
        let line: Vec<(std::time::Instant, Id)> = self
            .released
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        // Not `remove_blob_file`: shutdown may run on an async worker (the
        // store's last owner dropped there), and this runs once, at the end.
        for (_, id) in line {
            let path = blobs::blob_path(&self.msg_dir, id);
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove blob file");
            }
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// Store is shared between tasks and threads as Arc<Store>.
const _: () = {
    const fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Store>();
};

/// A message file open for reading, the message only (its recovery record
/// is never returned). Blocking: read it on a blocking thread.
#[derive(Debug)]
pub struct BlobReader {
    file: fs::File,
    remaining: u64,
    len: u64,
}

/// A message file that cannot be opened or read: gone (expunged meanwhile)
/// or an I/O fault.
fn blob_io_error(blob: Id, e: std::io::Error) -> StoreError {
    if e.kind() == std::io::ErrorKind::NotFound {
        StoreError::NotFound {
            kind: "message blob",
            name: id_hex(blob),
        }
    } else {
        StoreError::from_io(e)
    }
}

/// A message file whose recovery record does not agree with it.
fn damaged_blob(blob: Id, why: &str) -> StoreError {
    StoreError::Db(format!("message file {}: {why}", id_hex(blob)))
}

/// Memory redb may use for its page cache (reads and the write buffer).
/// redb's own default is up to 1 GiB, which a long-running appliance fills
/// as `meta.redb` grows: the soak benchmark saw RSS follow the file. A named
/// bound keeps the process's memory a sum of stated limits
/// (ARCHITECTURE.md); 64 MiB holds the hot tables of a large store.
pub const DB_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Opens (or creates) a redb file with the store's bounded cache.
pub(crate) fn create_db(path: &Path) -> Result<Database, redb::DatabaseError> {
    redb::Builder::new()
        .set_cache_size(DB_CACHE_BYTES)
        .create(path)
}

impl BlobReader {
    /// The message's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty message.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next at most `max` bytes of the message; empty at its end.
    pub fn read_chunk(&mut self, max: usize) -> Result<Vec<u8>, StoreError> {
        use std::io::Read;
        offload::check("read a message file in chunks");
        let n = (max as u64).min(self.remaining) as usize;
        let mut buf = vec![0u8; n];
        self.file
            .read_exact(&mut buf)
            .map_err(StoreError::from_io)?;
        self.remaining -= n as u64;
        Ok(buf)
    }
}
