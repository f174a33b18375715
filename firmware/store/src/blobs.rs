//! Message body files (`DATA/msg/<id hex>`) and their reference counts.
//!
//! A blob is written once, fsynced, and never modified. The `blobs` table
//! counts the messages and queue entries using it; when the count reaches 0
//! the record goes in the same transaction and the file is deleted after the
//! commit. A crash between those two steps, or between writing a file and
//! committing its delivery, only leaves an orphan file, which
//! [`reconcile`] moves to `DATA/lost+found/` at the next open: no code path
//! deletes a file it cannot account for.
//!
//! Every blob file carries its own recovery record in front of the message
//! ([`BlobHeader`]: the mailboxes and folder it was delivered to, its date,
//! flags, queue entries, size and BLAKE2b hash), so a message file alone says
//! where it belongs (`mxrack reconstruct`, `mxrack verify`). Files written
//! before that (no magic) are read whole.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable};

use blake2::Digest;
use serde::{Deserialize, Serialize};

use crate::ids::{id_hex, parse_id_hex};
use crate::schema::{self, BLOBS, MESSAGES, MessageMeta, QUEUE, QueueEntry};
use crate::{Id, StoreError};

/// The file of blob `id` inside `msg_dir`.
pub(crate) fn blob_path(msg_dir: &Path, id: Id) -> PathBuf {
    msg_dir.join(id_hex(id))
}

/// The magic at the end of a blob file that carries a [`BlobHeader`].
pub(crate) const BLOB_MAGIC: &[u8; 8] = b"MXRKBLOB";
/// Length of the fixed end of a trailer: JSON length (u32 LE) + magic.
pub(crate) const TRAILER_TAIL: usize = 12;
/// Largest record accepted when reading one back.
pub(crate) const BLOB_HEADER_MAX: usize = 1 << 20;

/// A blob file's own recovery record, written with it in the same durable
/// step: where the message was delivered, and what it was. It follows the
/// message in the file (a trailer: `message ‖ JSON ‖ u32 LE length ‖
/// "MXRKBLOB"`), so a message can be written as it arrives and the record,
/// with its size and hash, appended at the end.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BlobHeader {
    /// Format of this record.
    pub v: u32,
    /// Unix seconds: the internal date of the copies.
    pub date: i64,
    /// Mailboxes (addresses) that got a copy at delivery.
    #[serde(default)]
    pub owners: Vec<String>,
    /// The folder of those copies (INBOX for delivery, the target of APPEND).
    #[serde(default)]
    pub folder: String,
    /// Flags given at APPEND.
    #[serde(default)]
    pub flags: Vec<String>,
    /// Queue entries made with the delivery (external recipients, forwards).
    #[serde(default)]
    pub queue: Vec<crate::schema::QueueEntry>,
    /// The message's length, without this record.
    pub size: u64,
    /// BLAKE2b-128 of the message, hex.
    pub hash: String,
}

type Hasher = blake2::Blake2b<blake2::digest::consts::U16>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hash recorded in a [`BlobHeader`].
pub fn body_hash(body: &[u8]) -> String {
    hex(&Hasher::digest(body))
}

impl BlobHeader {
    /// The trailer bytes that follow the message.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(TRAILER_TAIL + json.len());
        out.extend_from_slice(&json);
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(BLOB_MAGIC);
        out
    }
}

/// Reads the end of a blob file: `Some(JSON length)` when it ends with a
/// trailer's fixed part.
pub(crate) fn trailer_len(tail: &[u8]) -> Option<usize> {
    if tail.len() < TRAILER_TAIL || &tail[tail.len() - 8..] != BLOB_MAGIC {
        return None;
    }
    let n = tail.len();
    let len = u32::from_le_bytes([tail[n - 12], tail[n - 11], tail[n - 10], tail[n - 9]]) as usize;
    (len <= BLOB_HEADER_MAX).then_some(len)
}

/// Splits a blob file's bytes into its record (if it has one) and the
/// length of the message (which starts at 0). A file written before the
/// records (no trailer) is all message. A trailer that does not decode, or
/// whose size disagrees with the file, is reported as `Err` (damaged).
pub fn split_blob(bytes: &[u8]) -> Result<(Option<BlobHeader>, usize), String> {
    let Some(len) = trailer_len(bytes) else {
        return Ok((None, bytes.len()));
    };
    if len + TRAILER_TAIL > bytes.len() {
        return Err("message file record length out of range".into());
    }
    let body_len = bytes.len() - TRAILER_TAIL - len;
    let header: BlobHeader = serde_json::from_slice(&bytes[body_len..body_len + len])
        .map_err(|e| format!("message file record does not decode: {e}"))?;
    if header.size != body_len as u64 {
        return Err(format!(
            "message file holds {body_len} bytes, its record says {}",
            header.size
        ));
    }
    Ok((Some(header), body_len))
}

/// Length of the message in an open blob file, from its end alone (the
/// record's fixed tail, then the record): the message is not read. A file
/// written before the records is all message.
pub(crate) fn message_len(file: &mut File) -> Result<u64, String> {
    use std::io::{Read, Seek, SeekFrom};
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    let tail_len = (TRAILER_TAIL as u64).min(file_len);
    let mut tail = vec![0u8; tail_len as usize];
    file.seek(SeekFrom::Start(file_len - tail_len))
        .and_then(|_| file.read_exact(&mut tail))
        .map_err(|e| e.to_string())?;
    let Some(len) = trailer_len(&tail) else {
        return Ok(file_len);
    };
    let record_start = file_len
        .checked_sub((TRAILER_TAIL + len) as u64)
        .ok_or("message file record length out of range")?;
    let mut record = vec![0u8; len];
    file.seek(SeekFrom::Start(record_start))
        .and_then(|_| file.read_exact(&mut record))
        .map_err(|e| e.to_string())?;
    let header: BlobHeader = serde_json::from_slice(&record)
        .map_err(|e| format!("message file record does not decode: {e}"))?;
    if header.size != record_start {
        return Err(format!(
            "message file holds {record_start} bytes, its record says {}",
            header.size
        ));
    }
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    Ok(record_start)
}

/// A blob file being written: the message as it arrives (hashed on the
/// way), then [`BlobWriter::finish`] appends the record and flushes.
pub(crate) struct BlobWriter {
    path: PathBuf,
    file: Option<File>,
    hasher: Hasher,
    size: u64,
}

impl BlobWriter {
    /// Creates the file (`create_new`: an existing file is never touched).
    pub(crate) fn create(path: &Path) -> Result<BlobWriter, StoreError> {
        crate::offload::check("create a message file");
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(StoreError::from_io)?;
        Ok(BlobWriter {
            path: path.to_path_buf(),
            file: Some(file),
            hasher: Hasher::new(),
            size: 0,
        })
    }

    pub(crate) fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        crate::offload::check("write a message file");
        let Some(file) = self.file.as_mut() else {
            return Err(StoreError::Closed);
        };
        file.write_all(chunk).map_err(StoreError::from_io)?;
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        Ok(())
    }

    /// Appends the record (with the size and hash of what was written) and
    /// flushes the file to stable storage (`fdatasync`). The directory
    /// entry is made durable by the caller (once per batch).
    pub(crate) fn finish(mut self, header: &BlobHeader) -> Result<(), StoreError> {
        crate::offload::check("fdatasync a message file");
        let mut header = header.clone();
        header.v = 1;
        header.size = self.size;
        header.hash = hex(&std::mem::take(&mut self.hasher).finalize());
        let Some(mut file) = self.file.take() else {
            return Err(StoreError::Closed);
        };
        file.write_all(&header.encode())
            .and_then(|()| file.sync_data())
            .map_err(StoreError::from_io)
    }
}

impl Drop for BlobWriter {
    /// A writer dropped before `finish` (error, cancelled delivery) leaves
    /// nothing behind: the file was never acknowledged.
    fn drop(&mut self) {
        if self.file.take().is_some() {
            remove_blob_file(&self.path);
        }
    }
}

/// Writes a new blob file (the message, then its record) and flushes it to
/// stable storage. A partial file is removed on error.
pub(crate) fn write_blob(path: &Path, header: &BlobHeader, body: &[u8]) -> Result<(), StoreError> {
    let mut w = BlobWriter::create(path)?;
    w.write(body)?;
    let finished = w.finish(header);
    if finished.is_err() {
        remove_blob_file(path);
    }
    finished
}

/// Deletes a blob file, logging (not failing) on errors other than "absent":
/// a file left behind is only an orphan, collected at the next open.
pub(crate) fn remove_blob_file(path: &Path) {
    crate::offload::check("remove a message file");
    if let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove blob file");
    }
}

/// `fsync` of a directory, making the entries created in it durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    crate::offload::check("fsync a folder");
    File::open(dir)?.sync_all()
}

/// Drops one reference to blob `id` in the `blobs` table. Returns true when
/// that was the last one (the record is gone; the caller deletes the file
/// after committing).
pub(crate) fn release(
    blobs: &mut crate::journal::JTable<'_, u64, u64>,
    id: Id,
) -> Result<bool, StoreError> {
    let refs = blobs.get(id)?.map(|g| g.value());
    match refs {
        Some(n) if n > 1 => {
            blobs.insert(id, n - 1)?;
            Ok(false)
        }
        Some(_) => {
            blobs.remove(id)?;
            Ok(true)
        }
        None => {
            // Already gone: counts were repaired or a record was damaged.
            // The file has no other owner we know of, so let it go too.
            tracing::warn!(blob = %id_hex(id), "released a blob with no reference count");
            Ok(true)
        }
    }
}

/// Run at open, before any delivery: recounts blob references from the
/// messages and the queue (repairing the `blobs` table if it disagrees),
/// moves blob files nothing refers to into `lost+found`, and reports blobs
/// that are referenced but missing. Returns the largest blob id seen, to seed
/// the id generator above it.
pub(crate) fn reconcile(db: &Database, msg_dir: &Path) -> Result<Reconciled, StoreError> {
    let mut counted: HashMap<Id, u64> = HashMap::new();
    let stored: HashMap<Id, u64> = {
        let txn = db.begin_read()?;
        for item in txn.open_table(MESSAGES)?.iter()? {
            let (_, v) = item?;
            let m: MessageMeta = schema::decode(v.value(), "message")?;
            *counted.entry(m.blob).or_default() += 1;
        }
        for item in txn.open_table(QUEUE)?.iter()? {
            let (_, v) = item?;
            let q: QueueEntry = schema::decode(v.value(), "queue")?;
            *counted.entry(q.blob).or_default() += 1;
        }
        let mut stored = HashMap::new();
        for item in txn.open_table(BLOBS)?.iter()? {
            let (k, v) = item?;
            stored.insert(k.value(), v.value());
        }
        stored
    };
    if stored != counted {
        tracing::warn!(
            stored = stored.len(),
            counted = counted.len(),
            "blob reference counts disagree with messages and queue; rebuilding them"
        );
        let mut txn = db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        {
            let mut blobs = txn.open_table(BLOBS)?;
            blobs.retain(|_, _| false)?;
            for (id, n) in &counted {
                blobs.insert(*id, *n)?;
            }
        }
        txn.commit()?;
    }

    let mut largest: Id = counted.keys().copied().max().unwrap_or(0);
    let mut present = HashSet::new();
    let mut removed = 0usize;
    for entry in fs::read_dir(msg_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(parse_id_hex) else {
            tracing::warn!(file = ?name, dir = %msg_dir.display(), "ignoring a file that is not a blob");
            continue;
        };
        largest = largest.max(id);
        if counted.contains_key(&id) {
            present.insert(id);
        } else {
            // Written but never committed (crash or failed delivery), or
            // released but not yet deleted. Most likely nobody needs it, but
            // that is not known for sure (an older meta.redb?): keep it.
            move_to_lost_found(msg_dir, &entry.path())?;
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::warn!(
            files = removed,
            "message files without a record moved to lost+found (see mxrack reconstruct)"
        );
        sync_dir(msg_dir)?;
    }
    let missing = counted.keys().filter(|id| !present.contains(*id)).count();
    if missing > 0 {
        tracing::error!(
            missing,
            "blob files referenced by messages or the queue are missing"
        );
    }
    Ok(Reconciled {
        largest,
        lost_found: removed,
    })
}

/// What [`reconcile`] found.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reconciled {
    pub largest: Id,
    pub lost_found: usize,
}

/// `DATA/lost+found`, beside `msg_dir`.
pub(crate) fn lost_found_dir(msg_dir: &Path) -> PathBuf {
    msg_dir
        .parent()
        .unwrap_or(Path::new("."))
        .join("lost+found")
}

/// Moves a file nothing refers to into `DATA/lost+found/` (same file system:
/// a rename), never deleting it.
pub(crate) fn move_to_lost_found(msg_dir: &Path, path: &Path) -> io::Result<()> {
    let dir = lost_found_dir(msg_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let name = path.file_name().unwrap_or_default();
    let mut target = dir.join(name);
    let mut n = 1;
    while target.exists() {
        target = dir.join(format!("{}.{n}", name.to_string_lossy()));
        n += 1;
    }
    fs::rename(path, &target)?;
    sync_dir(&dir)
}
