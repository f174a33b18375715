//! The recovery journal: a redo log of the mail tables, kept beside redb.
//!
//! The seed's worst day was lost IMAP metadata that Cyrus could rebuild from
//! its message files. Here every change to the tables that say where mail is
//! and who owns it ([`JOURNALED`]: accounts, domains, mailboxes, aliases,
//! forwarding rules, folders, messages, the outbound queue, the LDAP address
//! books and their deletion records, IMAP subscriptions) is also written,
//! as the rows it puts and deletes, to `DATA/recovery/journal`, and made
//! durable (`fdatasync`) *before* the redb transaction commits. A snapshot
//! (`DATA/recovery/snapshot`, the same tables dumped whole) lets the journal
//! be cut short now and then (a checkpoint).
//!
//! So the state of those tables is always `snapshot + journal`, whatever
//! happens to `meta.redb`: `mxrack reconstruct` replays them into a new
//! database. Derived tables (blob reference counts, usage, id counters) are
//! recomputed; the other tables (spam data, events) are copied
//! from whatever of the old database still reads.
//!
//! Format. Both files start with an 8-byte magic and the 8-byte generation
//! (random, new at every checkpoint; redb records the generation and the
//! journal offset it has committed up to, see [`JOURNAL_GEN`]). Then
//! frames: `"MXJF"`, payload length (u32 LE), CRC-32 of the payload (u32
//! LE), payload. A payload is records: op (1 put, 2 delete), table index
//! into [`JOURNALED`], key length (u32 LE) and bytes, and for a put the value
//! length and bytes, keys and values in redb's own byte form. One frame is
//! one committed transaction; a torn or damaged frame ends the readable part.
//!
//! Ordering. Writers of journaled tables go through [`JTxn`]; redb has one
//! writer at a time, so frames are appended in commit order. A frame whose
//! redb commit then fails is cut off again; a crash between the journal's
//! fsync and redb's commit leaves one frame ahead of redb, rolled forward at
//! the next open (the change was never acknowledged; applying it is what the
//! client asked for).

use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use redb::{
    AccessGuard, Database, Key, ReadTransaction, ReadableDatabase, ReadableTable, Table,
    TableDefinition, TableHandle, Value, WriteTransaction,
};

use crate::StoreError;
use crate::blobs::sync_dir;
use crate::ldap::{LDAP_BOOKS, LDAP_ENTRIES, LDAP_TOMBSTONES};
use crate::relaydata::FORWARDS;
use crate::schema::{ACCOUNTS, ALIASES, COUNTERS, DOMAINS, FOLDERS, MAILBOXES, MESSAGES, QUEUE};
use crate::subscriptions::SUBSCRIPTIONS;

/// The tables the journal covers, by index (the index is on disk: append only).
pub(crate) const JOURNALED: [&str; 12] = [
    "accounts",
    "domains",
    "mailboxes",
    "aliases",
    "folders",
    "messages",
    "queue",
    "forwards",
    "ldap_entries",
    "ldap_books",
    "ldap_tombstones",
    "subscriptions",
];

/// Counters in redb: the journal generation it belongs to, and the journal
/// offset up to which its state includes the frames.
pub(crate) const JOURNAL_GEN: &str = "journal_generation";
pub(crate) const JOURNAL_POS: &str = "journal_position";

const JOURNAL_MAGIC: &[u8; 8] = b"MXRKJRNL";
const SNAPSHOT_MAGIC: &[u8; 8] = b"MXRKSNAP";
const FRAME_MAGIC: &[u8; 4] = b"MXJF";
/// Magic + generation.
pub(crate) const HEADER_LEN: u64 = 16;
const FRAME_HEADER_LEN: usize = 12;
/// Largest frame accepted when reading (a delivery batch of 512 messages with
/// their folders and queue entries is far below).
const FRAME_MAX: usize = 256 << 20;
/// A checkpoint is taken once the journal passes this size.
pub(crate) const CHECKPOINT_BYTES: u64 = 64 << 20;

const OP_PUT: u8 = 1;
const OP_DEL: u8 = 2;

/// One row change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub table: u8,
    pub key: Vec<u8>,
    /// `None`: the row was deleted.
    pub value: Option<Vec<u8>>,
}

pub(crate) fn table_index(name: &str) -> Option<u8> {
    JOURNALED.iter().position(|t| *t == name).map(|i| i as u8)
}

pub(crate) fn recovery_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("recovery")
}
pub(crate) fn journal_path(data_dir: &Path) -> PathBuf {
    recovery_dir(data_dir).join("journal")
}
pub(crate) fn snapshot_path(data_dir: &Path) -> PathBuf {
    recovery_dir(data_dir).join("snapshot")
}

fn encode_records(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.iter().map(|r| 16 + r.key.len()).sum());
    for r in records {
        out.push(if r.value.is_some() { OP_PUT } else { OP_DEL });
        out.push(r.table);
        out.extend_from_slice(&(r.key.len() as u32).to_le_bytes());
        out.extend_from_slice(&r.key);
        if let Some(v) = &r.value {
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
    }
    out
}

fn frame(records: &[Record]) -> Vec<u8> {
    let payload = encode_records(records);
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(FRAME_MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if buf.len() < n {
        return None;
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Some(head)
}

fn take_u32(buf: &mut &[u8]) -> Option<u32> {
    take(buf, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Decodes one frame's payload; `None` if it does not parse (a damaged frame
/// whose checksum still matched cannot happen in practice, but no byte read
/// from disk may panic).
fn decode_records(mut buf: &[u8]) -> Option<Vec<Record>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let op = take(&mut buf, 1)?[0];
        let table = take(&mut buf, 1)?[0];
        if usize::from(table) >= JOURNALED.len() {
            return None;
        }
        let klen = take_u32(&mut buf)? as usize;
        let key = take(&mut buf, klen)?.to_vec();
        let value = match op {
            OP_PUT => {
                let vlen = take_u32(&mut buf)? as usize;
                Some(take(&mut buf, vlen)?.to_vec())
            }
            OP_DEL => None,
            _ => return None,
        };
        out.push(Record { table, key, value });
    }
    Some(out)
}

/// What reading a journal or snapshot file found.
#[derive(Debug, Default)]
pub(crate) struct FileScan {
    pub generation: u64,
    /// Frames in order, each with the offset just after it.
    pub frames: Vec<(u64, Vec<Record>)>,
    /// Offset after the last good frame.
    pub valid_end: u64,
    /// Bytes after `valid_end` that could not be read as frames.
    pub damaged_bytes: u64,
}

/// Reads a journal or snapshot file. `Ok(None)` when it does not exist; an
/// unreadable header is an error.
pub(crate) fn scan_file(path: &Path, snapshot: bool) -> Result<Option<FileScan>, StoreError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::from_io(e)),
    };
    let len = file.metadata().map_err(StoreError::from_io)?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; HEADER_LEN as usize];
    if r.read_exact(&mut header).is_err() {
        return Err(StoreError::Db(format!(
            "{}: too short for a recovery file header",
            path.display()
        )));
    }
    let magic = if snapshot {
        SNAPSHOT_MAGIC
    } else {
        JOURNAL_MAGIC
    };
    if &header[..8] != magic {
        return Err(StoreError::Db(format!(
            "{}: not a recovery file (bad magic)",
            path.display()
        )));
    }
    let mut gen_bytes = [0u8; 8];
    gen_bytes.copy_from_slice(&header[8..]);
    let mut scan = FileScan {
        generation: u64::from_le_bytes(gen_bytes),
        valid_end: HEADER_LEN,
        ..FileScan::default()
    };
    let mut pos = HEADER_LEN;
    loop {
        let mut fh = [0u8; FRAME_HEADER_LEN];
        if r.read_exact(&mut fh).is_err() {
            break;
        }
        let plen = u32::from_le_bytes([fh[4], fh[5], fh[6], fh[7]]) as usize;
        let crc = u32::from_le_bytes([fh[8], fh[9], fh[10], fh[11]]);
        if &fh[..4] != FRAME_MAGIC
            || plen > FRAME_MAX
            || pos + (FRAME_HEADER_LEN + plen) as u64 > len
        {
            break;
        }
        let mut payload = vec![0u8; plen];
        if r.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != crc {
            break;
        }
        let Some(records) = decode_records(&payload) else {
            break;
        };
        pos += (FRAME_HEADER_LEN + plen) as u64;
        scan.frames.push((pos, records));
        scan.valid_end = pos;
    }
    scan.damaged_bytes = len.saturating_sub(scan.valid_end);
    Ok(Some(scan))
}

/// The open journal file of a running store.
#[derive(Debug)]
pub(crate) struct Journal {
    dir: PathBuf,
    inner: Mutex<JournalFile>,
}

#[derive(Debug)]
struct JournalFile {
    file: File,
    generation: u64,
    /// Current end (where the next frame goes).
    end: u64,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .open(path)
}

/// Writes a new recovery file (`tmp` then rename, fsynced) with `frames`.
fn write_recovery_file(
    path: &Path,
    magic: &[u8; 8],
    generation: u64,
    frames: impl Iterator<Item = Vec<Record>>,
) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(StoreError::from_io)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        w.write_all(magic).map_err(StoreError::from_io)?;
        w.write_all(&generation.to_le_bytes())
            .map_err(StoreError::from_io)?;
        for records in frames {
            w.write_all(&frame(&records)).map_err(StoreError::from_io)?;
        }
        let file = w
            .into_inner()
            .map_err(|e| StoreError::from_io(e.into_error()))?;
        file.sync_all().map_err(StoreError::from_io)?;
    }
    fs::rename(&tmp, path).map_err(StoreError::from_io)?;
    sync_dir(path.parent().unwrap_or(Path::new("."))).map_err(StoreError::from_io)?;
    Ok(())
}

/// Rows of one journaled table from a read transaction, as records.
fn dump_table<K: Key + 'static, V: Value + 'static>(
    txn: &ReadTransaction,
    def: TableDefinition<K, V>,
    out: &mut Vec<Record>,
) -> Result<(), StoreError> {
    let Some(index) = table_index(def.name()) else {
        return Ok(());
    };
    let table = match txn.open_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for item in table.iter()? {
        let (k, v) = item?;
        out.push(Record {
            table: index,
            key: K::as_bytes(&k.value()).as_ref().to_vec(),
            value: Some(V::as_bytes(&v.value()).as_ref().to_vec()),
        });
    }
    Ok(())
}

/// Every journaled row of the database as seen by `txn`, in frames of
/// bounded size.
pub(crate) fn dump_all(txn: &ReadTransaction) -> Result<Vec<Vec<Record>>, StoreError> {
    let mut all = Vec::new();
    dump_table(txn, ACCOUNTS, &mut all)?;
    dump_table(txn, DOMAINS, &mut all)?;
    dump_table(txn, MAILBOXES, &mut all)?;
    dump_table(txn, ALIASES, &mut all)?;
    dump_table(txn, FORWARDS, &mut all)?;
    dump_table(txn, FOLDERS, &mut all)?;
    dump_table(txn, MESSAGES, &mut all)?;
    dump_table(txn, QUEUE, &mut all)?;
    dump_table(txn, LDAP_ENTRIES, &mut all)?;
    dump_table(txn, LDAP_BOOKS, &mut all)?;
    dump_table(txn, LDAP_TOMBSTONES, &mut all)?;
    dump_table(txn, SUBSCRIPTIONS, &mut all)?;
    let mut frames = Vec::new();
    let mut it = all.into_iter().peekable();
    while it.peek().is_some() {
        frames.push(it.by_ref().take(4096).collect());
    }
    Ok(frames)
}

/// Applies records to one journaled table of `txn`.
fn apply_to<K: Key + 'static, V: Value + 'static>(
    txn: &WriteTransaction,
    def: TableDefinition<K, V>,
    records: &[&Record],
) -> Result<(), StoreError> {
    let mut table = txn.open_table(def)?;
    for r in records {
        let key = K::from_bytes(&r.key);
        match &r.value {
            Some(v) => {
                table.insert(key, V::from_bytes(v))?;
            }
            None => {
                table.remove(key)?;
            }
        }
    }
    Ok(())
}

/// Applies records (in order) to the journaled tables of `txn`.
pub(crate) fn apply_records(txn: &WriteTransaction, records: &[Record]) -> Result<(), StoreError> {
    // Group by table keeping each table's order: rows of different tables
    // are independent, so only the order within a table matters.
    for (index, name) in JOURNALED.iter().enumerate() {
        let mine: Vec<&Record> = records
            .iter()
            .filter(|r| usize::from(r.table) == index)
            .collect();
        if mine.is_empty() {
            continue;
        }
        match *name {
            "accounts" => apply_to(txn, ACCOUNTS, &mine)?,
            "domains" => apply_to(txn, DOMAINS, &mine)?,
            "mailboxes" => apply_to(txn, MAILBOXES, &mine)?,
            "aliases" => apply_to(txn, ALIASES, &mine)?,
            "folders" => apply_to(txn, FOLDERS, &mine)?,
            "messages" => apply_to(txn, MESSAGES, &mine)?,
            "queue" => apply_to(txn, QUEUE, &mine)?,
            "forwards" => apply_to(txn, FORWARDS, &mine)?,
            "ldap_entries" => apply_to(txn, LDAP_ENTRIES, &mine)?,
            "ldap_books" => apply_to(txn, LDAP_BOOKS, &mine)?,
            "ldap_tombstones" => apply_to(txn, LDAP_TOMBSTONES, &mine)?,
            "subscriptions" => apply_to(txn, SUBSCRIPTIONS, &mine)?,
            _ => unreachable!("every journaled table is listed"),
        }
    }
    Ok(())
}

fn counter(txn: &ReadTransaction, name: &str) -> Result<Option<u64>, StoreError> {
    match txn.open_table(COUNTERS) {
        Ok(t) => Ok(t.get(name)?.map(|g| g.value())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What [`Journal::open`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct JournalOpen {
    /// Frames applied to redb because it was behind the journal.
    pub rolled_forward: usize,
    /// A checkpoint was taken (new journal, or journal behind redb).
    pub checkpointed: bool,
}

impl Journal {
    /// Opens the journal of the store in `data_dir` whose database is `db`,
    /// bringing the two into agreement or refusing
    /// ([`StoreError::NeedsReconstruct`]) when they do not belong together.
    pub(crate) fn open(
        data_dir: &Path,
        db: &Database,
    ) -> Result<(Journal, JournalOpen), StoreError> {
        let dir = recovery_dir(data_dir);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(StoreError::from_io)?;
        let (db_gen, db_pos) = {
            let txn = db.begin_read()?;
            (counter(&txn, JOURNAL_GEN)?, counter(&txn, JOURNAL_POS)?)
        };
        let scan = scan_file(&journal_path(data_dir), false)?;
        let mut outcome = JournalOpen::default();
        let journal = Journal {
            dir: data_dir.to_path_buf(),
            inner: Mutex::new(JournalFile {
                file: File::open("/dev/null").map_err(StoreError::from_io)?,
                generation: 0,
                end: 0,
            }),
        };
        match (scan, db_gen) {
            (None, None) => {
                // A new store, or one from before the journal: start it.
                journal.checkpoint(db)?;
                outcome.checkpointed = true;
            }
            (None, Some(_)) => {
                tracing::warn!("the recovery journal is missing; writing a new snapshot");
                journal.checkpoint(db)?;
                outcome.checkpointed = true;
            }
            (Some(scan), db_gen) => {
                let snapshot = scan_file(&snapshot_path(data_dir), true).ok().flatten();
                let snapshot_gen = snapshot.as_ref().map(|s| s.generation);
                let nothing_recorded =
                    scan.frames.is_empty() && snapshot.as_ref().is_none_or(|s| s.frames.is_empty());
                if db_gen.is_none() && nothing_recorded {
                    // A new database beside an empty journal: nothing to lose.
                    journal.checkpoint(db)?;
                    outcome.checkpointed = true;
                } else if db_gen == Some(scan.generation) {
                    let pos = db_pos.unwrap_or(HEADER_LEN);
                    if pos < scan.valid_end {
                        outcome.rolled_forward = journal.roll_forward(db, &scan, pos)?;
                    } else if pos > scan.valid_end {
                        tracing::warn!(
                            committed = pos,
                            readable = scan.valid_end,
                            "the recovery journal is shorter than the database; writing a new snapshot"
                        );
                        journal.checkpoint(db)?;
                        outcome.checkpointed = true;
                    }
                    if scan.damaged_bytes > 0 && !outcome.checkpointed {
                        tracing::warn!(
                            bytes = scan.damaged_bytes,
                            "cutting an unreadable tail off the recovery journal"
                        );
                    }
                    if !outcome.checkpointed {
                        let file =
                            open_append(&journal_path(data_dir)).map_err(StoreError::from_io)?;
                        file.set_len(scan.valid_end).map_err(StoreError::from_io)?;
                        file.sync_all().map_err(StoreError::from_io)?;
                        let mut inner = journal.lock();
                        *inner = JournalFile {
                            file,
                            generation: scan.generation,
                            end: scan.valid_end,
                        };
                    }
                } else if db_gen.is_some() && db_gen == snapshot_gen {
                    // A checkpoint committed its generation to redb but did
                    // not switch the journal: the snapshot is the database.
                    journal.checkpoint(db)?;
                    outcome.checkpointed = true;
                } else {
                    return Err(StoreError::NeedsReconstruct(format!(
                        "meta.redb (journal generation {}) does not belong to the recovery journal \
                         (generation {:016x}): it is missing, an older copy or another store's",
                        db_gen.map_or("none".to_string(), |g| format!("{g:016x}")),
                        scan.generation
                    )));
                }
            }
        }
        Ok((journal, outcome))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JournalFile> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies the frames after `pos` to redb (they were written but their
    /// commit did not happen). Messages and queue entries whose body file is
    /// missing are left out: their delivery failed and removed the file.
    fn roll_forward(&self, db: &Database, scan: &FileScan, pos: u64) -> Result<usize, StoreError> {
        let msg_dir = self.dir.join("msg");
        let mut records = Vec::new();
        let mut n = 0;
        for (end, frame) in &scan.frames {
            if *end <= pos {
                continue;
            }
            n += 1;
            for r in frame {
                if r.value.is_some()
                    && let Some(blob) = crate::recovery::record_blob(r)
                    && !crate::blobs::blob_path(&msg_dir, blob).exists()
                {
                    continue;
                }
                records.push(r.clone());
            }
        }
        let txn = crate::deliver::durable_write(db)?;
        apply_records(&txn, &records)?;
        {
            let mut c = txn.open_table(COUNTERS)?;
            c.insert(JOURNAL_POS, scan.valid_end)?;
        }
        txn.commit()?;
        tracing::warn!(
            frames = n,
            "rolled the database forward from the recovery journal"
        );
        Ok(n)
    }

    /// Writes a snapshot of every journaled table and starts an empty
    /// journal with a new generation. Holds redb's write lock throughout, so
    /// no change can fall between the snapshot and the new journal.
    pub(crate) fn checkpoint(&self, db: &Database) -> Result<(), StoreError> {
        let wtxn = crate::deliver::durable_write(db)?;
        let frames = {
            let rtxn = db.begin_read()?;
            dump_all(&rtxn)?
        };
        let generation: u64 = rand::random::<u64>() | 1;
        write_recovery_file(
            &snapshot_path(&self.dir),
            SNAPSHOT_MAGIC,
            generation,
            frames.into_iter(),
        )?;
        {
            let mut c = wtxn.open_table(COUNTERS)?;
            c.insert(JOURNAL_GEN, generation)?;
            c.insert(JOURNAL_POS, HEADER_LEN)?;
        }
        // Hold the journal's lock across the switch: nothing appends to it
        // without redb's write lock, which we hold, but be explicit.
        let mut inner = self.lock();
        wtxn.commit()?;
        let path = journal_path(&self.dir);
        write_recovery_file(&path, JOURNAL_MAGIC, generation, std::iter::empty())?;
        let file = open_append(&path).map_err(StoreError::from_io)?;
        *inner = JournalFile {
            file,
            generation,
            end: HEADER_LEN,
        };
        Ok(())
    }

    /// Appends one frame and makes it durable. Returns (offset before,
    /// offset after).
    fn append(&self, records: &[Record]) -> Result<(u64, u64), StoreError> {
        let bytes = frame(records);
        let mut inner = self.lock();
        let start = inner.end;
        let written = inner
            .file
            .seek(SeekFrom::Start(start))
            .and_then(|_| inner.file.write_all(&bytes))
            .and_then(|()| inner.file.sync_data());
        if let Err(e) = written {
            let _ = inner.file.set_len(start);
            return Err(StoreError::from_io(e));
        }
        inner.end = start + bytes.len() as u64;
        Ok((start, inner.end))
    }

    /// Cuts the journal back to `end` (a frame whose commit failed).
    fn truncate(&self, end: u64) {
        let mut inner = self.lock();
        if let Err(e) = inner
            .file
            .set_len(end)
            .and_then(|()| inner.file.sync_data())
        {
            tracing::error!(error = %e, "cannot cut a failed frame off the recovery journal");
        }
        inner.end = end;
    }

    pub(crate) fn len(&self) -> u64 {
        self.lock().end
    }

    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }
}

/// A durable write transaction whose changes to journaled tables are
/// journaled. Reads and other tables behave as in a plain transaction.
pub(crate) struct JTxn<'j> {
    txn: WriteTransaction,
    journal: &'j Journal,
    /// Given by the store: a checkpoint follows a commit that passed the bound.
    db: Option<&'j Database>,
    records: RefCell<Vec<Record>>,
}

impl<'j> JTxn<'j> {
    pub(crate) fn new(
        txn: WriteTransaction,
        journal: &'j Journal,
        db: Option<&'j Database>,
    ) -> Self {
        JTxn {
            txn,
            journal,
            db,
            records: RefCell::new(Vec::new()),
        }
    }

    /// Opens a table; writes to a journaled one are recorded.
    pub(crate) fn open_table<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<JTable<'_, K, V>, StoreError> {
        Ok(JTable {
            index: table_index(def.name()),
            table: self.txn.open_table(def)?,
            records: &self.records,
        })
    }

    /// Journals the recorded changes (durably), then commits.
    pub(crate) fn commit(self) -> Result<(), StoreError> {
        let records = self.records.take();
        if records.is_empty() {
            self.txn.commit()?;
            return Ok(());
        }
        let (start, end) = self.journal.append(&records)?;
        let committed = (|| -> Result<(), StoreError> {
            {
                let mut c = self.txn.open_table(COUNTERS)?;
                c.insert(JOURNAL_POS, end)?;
            }
            self.txn.commit()?;
            Ok(())
        })();
        if let Err(e) = committed {
            self.journal.truncate(start);
            return Err(e);
        }
        if end > CHECKPOINT_BYTES
            && let Some(db) = self.db
            && let Err(e) = self.journal.checkpoint(db)
        {
            // The commit stands; the journal only stays long.
            tracing::error!(error = %e, "recovery checkpoint failed");
        }
        Ok(())
    }

    pub(crate) fn abort(self) -> Result<(), StoreError> {
        self.txn.abort()?;
        Ok(())
    }
}

impl std::ops::Deref for JTxn<'_> {
    type Target = WriteTransaction;
    fn deref(&self) -> &WriteTransaction {
        &self.txn
    }
}

/// A table of a [`JTxn`]. Only `insert`, `remove` and `retain` change it, and
/// each is recorded; reads go to the table (`Deref`, no `DerefMut`, so no
/// write can bypass the journal).
pub(crate) struct JTable<'t, K: Key + 'static, V: Value + 'static> {
    index: Option<u8>,
    table: Table<'t, K, V>,
    records: &'t RefCell<Vec<Record>>,
}

impl<K: Key + 'static, V: Value + 'static> JTable<'_, K, V> {
    pub(crate) fn insert<'k, 'v>(
        &mut self,
        key: impl std::borrow::Borrow<K::SelfType<'k>>,
        value: impl std::borrow::Borrow<V::SelfType<'v>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StoreError> {
        if let Some(table) = self.index {
            self.records.borrow_mut().push(Record {
                table,
                key: K::as_bytes(key.borrow()).as_ref().to_vec(),
                value: Some(V::as_bytes(value.borrow()).as_ref().to_vec()),
            });
        }
        Ok(self.table.insert(key, value)?)
    }

    pub(crate) fn remove<'k>(
        &mut self,
        key: impl std::borrow::Borrow<K::SelfType<'k>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StoreError> {
        let key_bytes = self
            .index
            .map(|_| K::as_bytes(key.borrow()).as_ref().to_vec());
        let old = self.table.remove(key)?;
        if let (Some(table), Some(key), true) = (self.index, key_bytes, old.is_some()) {
            self.records.borrow_mut().push(Record {
                table,
                key,
                value: None,
            });
        }
        Ok(old)
    }
}

impl<'t, K: Key + 'static, V: Value + 'static> std::ops::Deref for JTable<'t, K, V> {
    type Target = Table<'t, K, V>;
    fn deref(&self) -> &Table<'t, K, V> {
        &self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let recs = vec![
            Record {
                table: 5,
                key: vec![1, 2, 3],
                value: Some(b"{\"uid\":1}".to_vec()),
            },
            Record {
                table: 0,
                key: b"acme".to_vec(),
                value: None,
            },
        ];
        write_recovery_file(
            &path,
            JOURNAL_MAGIC,
            7,
            [recs.clone(), recs.clone()].into_iter(),
        )
        .unwrap();
        let full = fs::metadata(&path).unwrap().len();
        let scan = scan_file(&path, false).unwrap().unwrap();
        assert_eq!(scan.generation, 7);
        assert_eq!(scan.frames.len(), 2);
        assert_eq!(scan.frames[0].1, recs);
        assert_eq!(scan.valid_end, full);
        // A torn last frame: only the first is read.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 3).unwrap();
        let scan = scan_file(&path, false).unwrap().unwrap();
        assert_eq!(scan.frames.len(), 1);
        assert!(scan.damaged_bytes > 0);
        // A flipped byte in the first frame: nothing is read.
        let mut bytes = fs::read(&path).unwrap();
        bytes[HEADER_LEN as usize + 20] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let scan = scan_file(&path, false).unwrap().unwrap();
        assert_eq!(scan.frames.len(), 0);
        assert_eq!(scan.valid_end, HEADER_LEN);
    }

    #[test]
    fn garbage_never_panics_the_decoder() {
        for seed in 0u8..=255 {
            let junk: Vec<u8> = (0..64u8)
                .map(|i| i.wrapping_mul(seed).wrapping_add(7))
                .collect();
            let _ = decode_records(&junk);
        }
    }
}
