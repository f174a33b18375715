//! Message body files (`DATA/msg/<id hex>`) and their reference counts.
//!
//! A blob is written once, fsynced, and never modified. The `blobs` table
//! counts the messages and queue entries using it; when the count reaches 0
//! the record goes in the same transaction and the file is deleted after the
//! commit. A crash between those two steps, or between writing a file and
//! committing its delivery, only leaves an orphan file, which
//! [`reconcile`] removes at the next open.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, Table};

use crate::ids::{id_hex, parse_id_hex};
use crate::schema::{self, BLOBS, MESSAGES, MessageMeta, QUEUE, QueueEntry};
use crate::{Id, StoreError};

/// The file of blob `id` inside `msg_dir`.
pub(crate) fn blob_path(msg_dir: &Path, id: Id) -> PathBuf {
    msg_dir.join(id_hex(id))
}

/// Writes a new blob file and flushes it to stable storage (data and the
/// size, via `fdatasync`). The directory entry is made durable separately,
/// once per batch, by the commit thread. A partial file is removed on error;
/// an existing file is never touched (`create_new`).
pub(crate) fn write_blob(path: &Path, body: &[u8]) -> Result<(), StoreError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(StoreError::from_io)?;
    let written = file.write_all(body).and_then(|()| file.sync_data());
    if let Err(e) = written {
        drop(file);
        remove_blob_file(path);
        return Err(StoreError::from_io(e));
    }
    Ok(())
}

/// Deletes a blob file, logging (not failing) on errors other than "absent":
/// a file left behind is only an orphan, collected at the next open.
pub(crate) fn remove_blob_file(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove blob file");
    }
}

/// `fsync` of a directory, making the entries created in it durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Drops one reference to blob `id` in the `blobs` table. Returns true when
/// that was the last one (the record is gone; the caller deletes the file
/// after committing).
pub(crate) fn release(blobs: &mut Table<'_, u64, u64>, id: Id) -> Result<bool, StoreError> {
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
/// deletes blob files nothing refers to, and reports blobs that are
/// referenced but missing. Returns the largest blob id seen, to seed the id
/// generator above it.
pub(crate) fn reconcile(db: &Database, msg_dir: &Path) -> Result<Id, StoreError> {
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
            // released but not yet deleted: nobody acknowledged it or needs it.
            remove_blob_file(&entry.path());
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(removed, "removed orphan blob files");
        sync_dir(msg_dir)?;
    }
    let missing = counted.keys().filter(|id| !present.contains(*id)).count();
    if missing > 0 {
        tracing::error!(
            missing,
            "blob files referenced by messages or the queue are missing"
        );
    }
    Ok(largest)
}
