//! Recovery: `reconstruct` (metadata rebuilt from the recovery journal, the
//! message files' own records and whatever of `meta.redb` still reads),
//! `verify` (every record against its file, read only), `backup` (an online,
//! consistent, incremental copy) and `restore`.
//!
//! Sources, in order of trust (see `journal.rs` and `blobs.rs`):
//! 1. the journaled tables of `meta.redb`, when it opens, belongs to the
//!    journal's generation and is not behind it;
//! 2. otherwise the snapshot plus the journal (`DATA/recovery/`);
//! 3. for message files neither knows (newer than a restored backup, or
//!    both damaged), the file's own [`BlobHeader`]: its mailboxes, folder,
//!    date, flags and queue entries. A file no mailbox claims goes to
//!    `DATA/lost+found/`; nothing is deleted.
//!
//! What a rebuild can lose (as Cyrus's reconstruct can): with the journal
//! intact, nothing of the mail tables. From a file's header alone: later flag
//! changes and moves (the message comes back where it was delivered, with
//! its delivery flags), and the file's UID (it gets the next one in its
//! folder). The other tables (spam data, events) come from
//! whatever of the old database reads; a table that does not is rebuilt
//! empty and named in the report.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use redb::{Database, Key, ReadableDatabase, ReadableTable, TableDefinition, TableHandle, Value};
use serde::Serialize;

use crate::blobs::{self, BlobHeader, blob_path, split_blob, sync_dir};
use crate::ids::{id_hex, now_secs, parse_id_hex};
use crate::journal::{self, HEADER_LEN, JOURNAL_GEN, JOURNAL_POS, Record, table_index};
use crate::schema::{
    self, COUNTERS, FOLDERS, Folder, INBOX, MAILBOXES, MESSAGES, MessageMeta, QueueEntry,
};
use crate::{Id, Store, StoreError};

/// Progress of a long operation: (phase, done, total).
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, u64);

/// What `mxrack reconstruct` did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ReconstructReport {
    /// Where the mail tables came from: "meta.redb", "journal" or "files".
    pub source: String,
    pub mailboxes: usize,
    pub folders: usize,
    pub messages: usize,
    pub queue_entries: usize,
    /// Messages put back from their file's own record (not in the journal).
    pub from_files: usize,
    /// Queue entries put back from files, held for the operator.
    pub queue_from_files: usize,
    /// Message files no mailbox claims, moved to lost+found.
    pub lost_found: usize,
    /// Records whose message file is gone (left out).
    pub missing_files: usize,
    /// Bytes of the journal that could not be read.
    pub journal_damaged_bytes: u64,
    /// Tables of the old database that could not be read (rebuilt empty).
    pub tables_lost: Vec<String>,
    /// The old database, kept aside (when there was one).
    pub old_database: Option<String>,
    pub seconds: f64,
}

/// The blob a journaled message or queue row refers to.
pub(crate) fn record_blob(r: &Record) -> Option<Id> {
    row_blob(r.table, r.value.as_ref()?)
}

/// The blob a row of journaled table `table` with value `v` refers to.
fn row_blob(table: u8, v: &[u8]) -> Option<Id> {
    match *journal::JOURNALED.get(usize::from(table))? {
        "messages" => serde_json::from_slice::<MessageMeta>(v)
            .ok()
            .map(|m| m.blob),
        "queue" => serde_json::from_slice::<QueueEntry>(v).ok().map(|q| q.blob),
        _ => None,
    }
}

/// A row as bytes: (key, value).
type RawRow = (Vec<u8>, Vec<u8>);
/// The old database's (journal generation, position) and mail tables.
type OldMail = ((Option<u64>, Option<u64>), Vec<Vec<Record>>);

/// Rows of the journaled tables: (table, key bytes) -> value bytes.
type Rows = BTreeMap<(u8, Vec<u8>), Vec<u8>>;

fn apply_rows(rows: &mut Rows, seen: &mut HashSet<Id>, records: &[Record]) {
    for r in records {
        if let Some(blob) = record_blob(r) {
            seen.insert(blob);
        }
        match &r.value {
            Some(v) => {
                rows.insert((r.table, r.key.clone()), v.clone());
            }
            None => {
                rows.remove(&(r.table, r.key.clone()));
            }
        }
    }
}

/// Every table besides the journaled ones, with its types, so a rebuild can
/// copy what of it still reads.
fn copy_other_tables(
    old: &Database,
    new: &Database,
    lost: &mut Vec<String>,
) -> Result<(), StoreError> {
    fn copy<K: Key + 'static, V: Value + 'static>(
        old: &Database,
        new: &Database,
        def: TableDefinition<K, V>,
        lost: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        let read = || -> Result<Vec<RawRow>, StoreError> {
            let txn = old.begin_read()?;
            let table = match txn.open_table(def) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut rows = Vec::new();
            for item in table.iter()? {
                let (k, v) = item?;
                rows.push((
                    K::as_bytes(&k.value()).as_ref().to_vec(),
                    V::as_bytes(&v.value()).as_ref().to_vec(),
                ));
            }
            Ok(rows)
        };
        match catch_unwind(AssertUnwindSafe(read))
            .unwrap_or_else(|_| Err(StoreError::Db("reading it panicked".into())))
        {
            Ok(rows) => {
                let txn = crate::deliver::durable_write(new)?;
                {
                    let mut t = txn.open_table(def)?;
                    for (k, v) in &rows {
                        t.insert(K::from_bytes(k), V::from_bytes(v))?;
                    }
                }
                txn.commit()?;
            }
            Err(e) => {
                tracing::error!(table = def.name(), error = %e, "table of the old database unreadable");
                lost.push(def.name().to_string());
            }
        }
        Ok(())
    }
    use crate::events::{EVENTS, STATUS_ENTRIES, STATUS_OPEN};
    use crate::filterdata::*;
    use crate::relaydata::BLOCKED_SENDERS;
    copy(old, new, EVENTS, lost)?;
    copy(old, new, STATUS_ENTRIES, lost)?;
    copy(old, new, STATUS_OPEN, lost)?;
    copy(old, new, BLOCKED_SENDERS, lost)?;
    copy(old, new, BAYES_TOKENS, lost)?;
    copy(old, new, BAYES_SEEN, lost)?;
    copy(old, new, FORWARD_LOG, lost)?;
    copy(old, new, FORWARD_BY_MESSAGE_ID, lost)?;
    copy(old, new, FORWARD_DAYS, lost)?;
    copy(old, new, FORWARD_THRESHOLDS, lost)?;
    copy(old, new, FORWARD_CHANGES, lost)?;
    copy(old, new, COMPLAINT_SAMPLES, lost)?;
    copy(old, new, crate::webadmin::SETTINGS, lost)?;
    copy(old, new, crate::webadmin::WEB_SESSIONS, lost)?;
    copy(old, new, crate::webadmin::AUDIT, lost)?;
    copy(old, new, crate::webadmin::QUEUE_SAMPLES, lost)?;
    Ok(())
}

/// The record of a blob file and the message's length, reading only its end.
fn read_blob_header(path: &Path) -> Result<(Option<BlobHeader>, u64), String> {
    use std::io::{Seek, SeekFrom};
    let mut f = File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let tail_len = blobs::TRAILER_TAIL as u64;
    if len < tail_len {
        return Ok((None, len));
    }
    let mut tail = [0u8; blobs::TRAILER_TAIL];
    f.seek(SeekFrom::Start(len - tail_len))
        .map_err(|e| e.to_string())?;
    f.read_exact(&mut tail).map_err(|e| e.to_string())?;
    let Some(jlen) = blobs::trailer_len(&tail) else {
        return Ok((None, len));
    };
    let whole = (jlen + blobs::TRAILER_TAIL) as u64;
    if whole > len {
        return Err("message file record length out of range".into());
    }
    let mut buf = vec![0u8; jlen + blobs::TRAILER_TAIL];
    f.seek(SeekFrom::Start(len - whole))
        .map_err(|e| e.to_string())?;
    f.read_exact(&mut buf).map_err(|e| e.to_string())?;
    let header: BlobHeader = serde_json::from_slice(&buf[..jlen])
        .map_err(|e| format!("message file record does not decode: {e}"))?;
    let body_len = len - whole;
    if header.size != body_len {
        return Err(format!(
            "message file holds {body_len} bytes, its record says {}",
            header.size
        ));
    }
    Ok((Some(header), body_len))
}

fn blob_files(msg_dir: &Path) -> Result<Vec<Id>, StoreError> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(msg_dir).map_err(StoreError::from_io)? {
        let entry = entry.map_err(StoreError::from_io)?;
        if let Some(id) = entry.file_name().to_str().and_then(parse_id_hex) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// True when a data folder has mail but no database (the server must not
/// start on an empty one: that would hide the mail).
pub(crate) fn has_mail_without_db(data_dir: &Path) -> Result<Option<String>, StoreError> {
    if data_dir.join("meta.redb").exists() {
        return Ok(None);
    }
    let msg_dir = data_dir.join("msg");
    let files = if msg_dir.is_dir() {
        blob_files(&msg_dir)?.len()
    } else {
        0
    };
    let journal = journal::scan_file(&journal::journal_path(data_dir), false)
        .ok()
        .flatten()
        .is_some_and(|s| !s.frames.is_empty());
    let snapshot = journal::scan_file(&journal::snapshot_path(data_dir), true)
        .ok()
        .flatten()
        .is_some_and(|s| !s.frames.is_empty());
    if files > 0 || journal || snapshot {
        return Ok(Some(format!(
            "meta.redb is missing but {} holds {files} message files and a recovery journal{}",
            data_dir.display(),
            if journal || snapshot { "" } else { " (empty)" }
        )));
    }
    Ok(None)
}

/// True when another process (a running mxrack) holds the database open.
fn in_use(db_path: &Path) -> bool {
    db_path.exists()
        && matches!(
            catch_unwind(AssertUnwindSafe(|| Database::open(db_path))),
            Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen))
        )
}

/// Opens the old database if it reads at all.
fn open_old(path: &Path) -> Option<Database> {
    if !path.exists() {
        return None;
    }
    match catch_unwind(AssertUnwindSafe(|| Database::open(path))).ok()? {
        Ok(db) => Some(db),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => None,
        Err(e) => {
            tracing::error!(error = %e, "the old meta.redb does not open");
            None
        }
    }
}

/// Rebuilds `DATA/meta.redb`. The store must not be open (the CLI checks the
/// admin socket; redb's own lock refuses a second opener too).
///
/// With `only`, just that mailbox's folders and messages are rebuilt (from
/// the journal and its files); everything else is kept from the old
/// database, which must then read.
pub fn reconstruct(
    data_dir: &Path,
    only: Option<&str>,
    progress: Progress<'_>,
) -> Result<ReconstructReport, StoreError> {
    let only = only.map(crate::names::normalize_address).transpose()?;
    let started = std::time::Instant::now();
    let mut report = ReconstructReport::default();
    let db_path = data_dir.join("meta.redb");
    let msg_dir = data_dir.join("msg");
    fs::DirBuilder::new()
        .recursive(true)
        .create(&msg_dir)
        .map_err(StoreError::from_io)?;
    if in_use(&db_path) {
        return Err(StoreError::InUse {
            kind: "store",
            name: data_dir.display().to_string(),
            by: "a running mxrack (stop it first)".into(),
        });
    }
    progress("reading the journal", 0, 1);
    let old = open_old(&db_path);
    let snapshot =
        journal::scan_file(&journal::snapshot_path(data_dir), true).unwrap_or_else(|e| {
            tracing::error!(error = %e, "recovery snapshot unreadable");
            None
        });
    let jscan = journal::scan_file(&journal::journal_path(data_dir), false).unwrap_or_else(|e| {
        tracing::error!(error = %e, "recovery journal unreadable");
        None
    });
    report.journal_damaged_bytes = jscan.as_ref().map_or(0, |s| s.damaged_bytes);

    // Which source holds the newest complete state of the mail tables.
    let mut rows = Rows::new();
    let mut seen: HashSet<Id> = HashSet::new();
    let old_state = old.as_ref().and_then(|db| {
        catch_unwind(AssertUnwindSafe(|| old_mail_tables(db)))
            .ok()
            .flatten()
    });
    fn old_mail_tables(db: &Database) -> Option<OldMail> {
        let txn = db.begin_read().ok()?;
        let gen_pos = txn.open_table(COUNTERS).ok().map(|c| {
            (
                c.get(JOURNAL_GEN).ok().flatten().map(|g| g.value()),
                c.get(JOURNAL_POS).ok().flatten().map(|g| g.value()),
            )
        });
        let dump = journal::dump_all(&txn).ok()?;
        Some((gen_pos.unwrap_or((None, None)), dump))
    }
    // The journal (snapshot + frames) is the record of the mail tables; the
    // old database wins only where the journal is incomplete: missing, or
    // cut short behind what the database committed. A database whose pages
    // lost rows silently is thereby repaired from the journal.
    let journal_complete = snapshot.is_some() && jscan.is_some();
    let db_ahead = match (&old_state, &jscan) {
        (Some(((Some(g), Some(p)), _)), Some(j)) => *g == j.generation && *p > j.valid_end,
        _ => false,
    };
    let db_current = old_state.is_some() && (!journal_complete || db_ahead);
    if let (true, Some((_, dump))) = (db_current, &old_state) {
        report.source = "meta.redb".into();
        for frame in dump {
            apply_rows(&mut rows, &mut seen, frame);
        }
        // What the journal ever named was seen too (a file it released is
        // not resurrected from its header).
        for s in [&snapshot, &jscan].into_iter().flatten() {
            for (_, frame) in &s.frames {
                for r in frame {
                    if let Some(b) = record_blob(r) {
                        seen.insert(b);
                    }
                }
            }
        }
    } else if snapshot.is_some() || jscan.is_some() {
        report.source = "journal".into();
        if snapshot.is_none()
            && let Some((_, dump)) = &old_state
        {
            // No snapshot: start from whatever the old database had.
            for frame in dump {
                apply_rows(&mut rows, &mut seen, frame);
            }
        }
        for s in [&snapshot, &jscan].into_iter().flatten() {
            for (_, frame) in &s.frames {
                apply_rows(&mut rows, &mut seen, frame);
            }
        }
    } else {
        report.source = "files".into();
    }
    if let Some(addr) = &only {
        let Some((_, dump)) = &old_state else {
            return Err(StoreError::Invalid {
                what: "reconstruct --mailbox",
                why: "the old database does not read: run a full reconstruct".into(),
            });
        };
        let mut kept = Rows::new();
        let mut unused = HashSet::new();
        for frame in dump {
            apply_rows(&mut kept, &mut unused, frame);
        }
        rows = merge_mailbox(kept, rows, addr);
        report.source = format!("{} for {addr}, meta.redb for the rest", report.source);
    }

    // Leave out rows whose message file is gone.
    let present: HashSet<Id> = blob_files(&msg_dir)?.into_iter().collect();
    let mi = table_index("messages").unwrap_or(5);
    let qi = table_index("queue").unwrap_or(6);
    rows.retain(|(t, _), v| {
        if *t != mi && *t != qi {
            return true;
        }
        match row_blob(*t, v) {
            Some(b) if present.contains(&b) => true,
            _ => {
                report.missing_files += 1;
                false
            }
        }
    });

    // The new database, beside the old one until it is complete.
    let new_path = data_dir.join("meta.redb.rebuild");
    if new_path.exists() {
        fs::remove_file(&new_path).map_err(StoreError::from_io)?;
    }
    let new = crate::create_db(&new_path)?;
    schema::prepare(&new)?;
    if let Some(old) = &old {
        progress("copying what reads of the old database", 0, 1);
        copy_other_tables(old, &new, &mut report.tables_lost)?;
    } else if db_path.exists() {
        report
            .tables_lost
            .push("every table (meta.redb does not open)".into());
    }
    drop(old);

    progress("writing the mail tables", 0, rows.len() as u64);
    let records: Vec<Record> = rows
        .into_iter()
        .map(|((table, key), value)| Record {
            table,
            key,
            value: Some(value),
        })
        .collect();
    for (i, chunk) in records.chunks(50_000).enumerate() {
        let txn = crate::deliver::durable_write(&new)?;
        journal::apply_records(&txn, chunk)?;
        txn.commit()?;
        progress(
            "writing the mail tables",
            ((i + 1) * 50_000).min(records.len()) as u64,
            records.len() as u64,
        );
    }
    let referenced: HashSet<Id> = records.iter().filter_map(record_blob).collect();
    drop(records);
    {
        // Rows a version 1 store journaled are upgraded as at open.
        let txn = crate::deliver::durable_write(&new)?;
        crate::subscriptions::upgrade_v1_folders_plain(&txn)?;
        txn.commit()?;
    }

    // Files nobody's record names: their own header says where they go.
    let unknown: Vec<Id> = present
        .iter()
        .copied()
        .filter(|b| !referenced.contains(b) && !seen.contains(b))
        .collect();
    place_from_headers(
        &new,
        &msg_dir,
        &unknown,
        only.as_deref(),
        &mut report,
        progress,
    )?;

    // Derived state: id counters, UID next above every UID, journal position.
    fix_counters(&new, jscan.as_ref())?;
    count(&new, &mut report)?;
    drop(new);

    // Swap: the old database is kept aside, never deleted.
    if db_path.exists() {
        let aside = data_dir.join(format!("meta.redb.before-reconstruct-{}", now_secs()));
        fs::rename(&db_path, &aside).map_err(StoreError::from_io)?;
        report.old_database = Some(aside.display().to_string());
    }
    fs::rename(&new_path, &db_path).map_err(StoreError::from_io)?;
    sync_dir(data_dir).map_err(StoreError::from_io)?;

    // Opening the store recounts blob references and usage, moves files no
    // record names to lost+found, and lines the journal up (a new snapshot).
    progress("checking the result", 0, 1);
    let store = Store::open(data_dir)?;
    store.checkpoint()?;
    report.lost_found += store.opened_lost_found();
    store.shutdown();
    drop(store);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// `kept` with the folders and messages of `addr` taken from `rebuilt`.
fn merge_mailbox(mut kept: Rows, rebuilt: Rows, addr: &str) -> Rows {
    let fi = table_index("folders").unwrap_or(4);
    let mi = table_index("messages").unwrap_or(5);
    let si = table_index("subscriptions").unwrap_or(11);
    let sub_of = |k: &[u8]| -> bool { <(&str, &str) as Value>::from_bytes(k).0 == addr };
    let ids_of = |rows: &Rows| -> HashSet<u64> {
        rows.iter()
            .filter(|((t, _), _)| *t == fi)
            .filter_map(|(_, v)| serde_json::from_slice::<Folder>(v).ok())
            .filter(|f| f.mailbox == addr)
            .map(|f| f.id)
            .collect()
    };
    let folder_id_of_key = |k: &[u8]| -> Option<u64> {
        let (id, _) = <(u64, u32) as Value>::from_bytes(k);
        Some(id)
    };
    let old_ids = ids_of(&kept);
    let new_ids = ids_of(&rebuilt);
    kept.retain(|(t, k), v| {
        if *t == fi {
            serde_json::from_slice::<Folder>(v).map_or(true, |f| f.mailbox != addr)
        } else if *t == mi {
            folder_id_of_key(k).is_none_or(|id| !old_ids.contains(&id))
        } else if *t == si {
            !sub_of(k)
        } else {
            true
        }
    });
    for ((t, k), v) in rebuilt {
        let mine = if t == fi {
            serde_json::from_slice::<Folder>(&v).is_ok_and(|f| f.mailbox == addr)
        } else if t == mi {
            folder_id_of_key(&k).is_some_and(|id| new_ids.contains(&id))
        } else if t == si {
            sub_of(&k)
        } else {
            false
        };
        if mine {
            kept.insert((t, k), v);
        }
    }
    kept
}

/// Puts files known only by their header into their mailboxes' folders.
fn place_from_headers(
    db: &Database,
    msg_dir: &Path,
    unknown: &[Id],
    only: Option<&str>,
    report: &mut ReconstructReport,
    progress: Progress<'_>,
) -> Result<(), StoreError> {
    if unknown.is_empty() {
        return Ok(());
    }
    let txn = crate::deliver::durable_write(db)?;
    {
        let mailboxes = txn.open_table(MAILBOXES)?;
        let mut folders = txn.open_table(FOLDERS)?;
        let mut messages = txn.open_table(MESSAGES)?;
        let mut queue = txn.open_table(schema::QUEUE)?;
        let mut counters = txn.open_table(COUNTERS)?;
        let mut next_folder_id = {
            let mut max = 0;
            for item in folders.iter()? {
                let (_, v) = item?;
                let f: Folder = schema::decode(v.value(), "folder")?;
                max = max.max(f.id);
            }
            max
        };
        let mut cache: HashMap<(String, String), Folder> = HashMap::new();
        for (i, &blob) in unknown.iter().enumerate() {
            if i % 1000 == 0 {
                progress(
                    "placing files by their own record",
                    i as u64,
                    unknown.len() as u64,
                );
            }
            let (header, size) = match read_blob_header(&blob_path(msg_dir, blob)) {
                Ok((Some(h), size)) => (h, size),
                Ok((None, _)) => continue, // lost+found at open
                Err(e) => {
                    tracing::warn!(blob = %id_hex(blob), error = %e, "damaged message file header");
                    continue;
                }
            };
            if only.is_some_and(|a| !header.owners.iter().any(|o| o == a)) {
                continue;
            }
            for owner in &header.owners {
                if mailboxes.get(owner.as_str())?.is_none() || only.is_some_and(|a| a != owner) {
                    continue;
                }
                let wanted = if header.folder.is_empty() {
                    INBOX.to_string()
                } else {
                    header.folder.clone()
                };
                let mut folder = None;
                for name in [wanted.as_str(), INBOX] {
                    if let Some(f) = cache.get(&(owner.clone(), name.to_string())) {
                        folder = Some(f.clone());
                        break;
                    }
                    if let Some(g) = folders.get((owner.as_str(), name))? {
                        folder = Some(schema::decode::<Folder>(g.value(), "folder")?);
                        break;
                    }
                }
                let mut f = match folder {
                    Some(f) => f,
                    None => {
                        // Not even an INBOX: make one (new UIDVALIDITY).
                        next_folder_id += 1;
                        Folder {
                            id: next_folder_id,
                            mailbox: owner.clone(),
                            name: INBOX.into(),
                            uidvalidity: u32::try_from(now_secs()).unwrap_or(1),
                            uidnext: 1,
                            special_use: None,
                            highestmodseq: 1,
                            first_recent_uid: 1,
                        }
                    }
                };
                // UIDs already handed out stay: the file gets the next one.
                let mut uid = f.uidnext.max(1);
                while messages.get((f.id, uid))?.is_some() {
                    uid += 1;
                }
                f.uidnext = uid + 1;
                f.highestmodseq += 1;
                let meta = MessageMeta {
                    uid,
                    blob,
                    size,
                    internal_date: header.date,
                    flags: header.flags.clone(),
                    modseq: f.highestmodseq,
                };
                messages.insert((f.id, uid), schema::encode(&meta)?.as_slice())?;
                folders.insert(
                    (f.mailbox.as_str(), f.name.as_str()),
                    schema::encode(&f)?.as_slice(),
                )?;
                cache.insert((f.mailbox.clone(), f.name.clone()), f);
                report.from_files += 1;
            }
            for q in header.queue.iter().filter(|_| only.is_none()) {
                if queue.get(q.id)?.is_none() {
                    // Maybe sent already: held until the operator looks.
                    let mut entry = q.clone();
                    entry.blob = blob;
                    entry.held = true;
                    entry.last_error = Some("restored by mxrack reconstruct; held".into());
                    queue.insert(entry.id, schema::encode(&entry)?.as_slice())?;
                    report.queue_from_files += 1;
                }
            }
        }
        counters.insert(schema::FOLDER_ID_COUNTER, next_folder_id)?;
    }
    txn.commit()?;
    Ok(())
}

fn fix_counters(db: &Database, jscan: Option<&journal::FileScan>) -> Result<(), StoreError> {
    let txn = crate::deliver::durable_write(db)?;
    {
        let mut folders = txn.open_table(FOLDERS)?;
        let messages = txn.open_table(MESSAGES)?;
        let mut max_id = 0u64;
        let mut max_validity = 0u64;
        let mut fixes = Vec::new();
        for item in folders.iter()? {
            let (_, v) = item?;
            let mut f: Folder = schema::decode(v.value(), "folder")?;
            max_id = max_id.max(f.id);
            max_validity = max_validity.max(u64::from(f.uidvalidity));
            let last = messages
                .range((f.id, 0u32)..=(f.id, u32::MAX))?
                .next_back()
                .transpose()?
                .map(|(k, _)| k.value().1);
            if let Some(last) = last
                && f.uidnext <= last
            {
                f.uidnext = last.saturating_add(1);
                fixes.push(f);
            }
        }
        for f in fixes {
            folders.insert(
                (f.mailbox.as_str(), f.name.as_str()),
                schema::encode(&f)?.as_slice(),
            )?;
        }
        let mut c = txn.open_table(COUNTERS)?;
        let old_id = c.get(schema::FOLDER_ID_COUNTER)?.map_or(0, |g| g.value());
        c.insert(schema::FOLDER_ID_COUNTER, max_id.max(old_id))?;
        let old_v = c.get(schema::UIDVALIDITY_COUNTER)?.map_or(0, |g| g.value());
        c.insert(schema::UIDVALIDITY_COUNTER, max_validity.max(old_v))?;
        // Address-book generations only grow (the LDAP server's cache key).
        let mut max_gen = c
            .get(crate::ldap::LDAP_GENERATION_COUNTER)?
            .map_or(0, |g| g.value());
        for item in txn.open_table(crate::ldap::LDAP_BOOKS)?.iter()? {
            let (_, v) = item?;
            let meta: crate::LdapBookMeta = schema::decode(v.value(), "address book")?;
            max_gen = max_gen.max(meta.generation);
        }
        c.insert(crate::ldap::LDAP_GENERATION_COUNTER, max_gen)?;
        // The new database holds the journal's state: say so, so that the
        // open after the swap (even after a crash here) accepts the pair.
        match jscan {
            Some(j) => {
                c.insert(JOURNAL_GEN, j.generation)?;
                c.insert(JOURNAL_POS, j.valid_end)?;
            }
            None => {
                c.remove(JOURNAL_GEN)?;
                c.insert(JOURNAL_POS, HEADER_LEN)?;
            }
        }
    }
    txn.commit()?;
    Ok(())
}

fn count(db: &Database, report: &mut ReconstructReport) -> Result<(), StoreError> {
    let txn = db.begin_read()?;
    report.mailboxes = txn.open_table(MAILBOXES)?.len()? as usize;
    report.folders = txn.open_table(FOLDERS)?.len()? as usize;
    report.messages = txn.open_table(MESSAGES)?.len()? as usize;
    report.queue_entries = txn.open_table(schema::QUEUE)?.len()? as usize;
    Ok(())
}

use redb::ReadableTableMetadata;

/// What `mxrack verify` found. Nothing is changed.
#[derive(Debug, Default, Clone, Serialize)]
pub struct VerifyReport {
    pub mailboxes: usize,
    pub folders: usize,
    pub messages: usize,
    pub queue_entries: usize,
    pub files: usize,
    pub bytes_hashed: u64,
    /// Problems, at most [`VERIFY_PROBLEMS_MAX`] listed; `problem_count` is
    /// the total.
    pub problems: Vec<String>,
    pub problem_count: usize,
    /// Files in msg/ that no record names.
    pub unreferenced_files: usize,
    /// The journal replays to exactly the database's mail tables.
    pub journal_agrees: bool,
    pub seconds: f64,
}

pub const VERIFY_PROBLEMS_MAX: usize = 200;

impl VerifyReport {
    fn problem(&mut self, p: String) {
        self.problem_count += 1;
        if self.problems.len() < VERIFY_PROBLEMS_MAX {
            self.problems.push(p);
        }
    }
}

impl Store {
    /// Checks every record against its file and the journal against the
    /// database, as mox's verifydata does; changes nothing. Safe while the
    /// store serves (the journal comparison holds the write lock briefly).
    pub fn verify(&self, progress: Progress<'_>) -> Result<VerifyReport, StoreError> {
        let started = std::time::Instant::now();
        let mut r = VerifyReport::default();
        // 1. The journal against the database, with writers held off.
        progress("comparing the journal with the database", 0, 1);
        {
            let wtxn = self.write_txn()?;
            let rtxn = self.read_txn()?;
            let dump = journal::dump_all(&rtxn)?;
            let end = self.journal.len();
            let mut db_rows = Rows::new();
            let mut seen = HashSet::new();
            for f in &dump {
                apply_rows(&mut db_rows, &mut seen, f);
            }
            let mut j_rows = Rows::new();
            let snap = journal::scan_file(&journal::snapshot_path(&self.dir), true)?;
            let jn = journal::scan_file(&journal::journal_path(&self.dir), false)?;
            let same_gen = snap.as_ref().map(|s| s.generation) == Some(self.journal.generation());
            for (_, f) in snap.iter().flat_map(|s| &s.frames) {
                apply_rows(&mut j_rows, &mut seen, f);
            }
            for (pos, f) in jn.iter().flat_map(|s| &s.frames) {
                if *pos > end {
                    break;
                }
                apply_rows(&mut j_rows, &mut seen, f);
            }
            r.journal_agrees = same_gen && j_rows == db_rows;
            if !r.journal_agrees {
                let differ = db_rows
                    .iter()
                    .filter(|(k, v)| j_rows.get(*k) != Some(*v))
                    .count()
                    + j_rows.keys().filter(|k| !db_rows.contains_key(*k)).count();
                r.problem(format!(
                    "the recovery journal does not replay to the database ({differ} rows differ{})",
                    if same_gen {
                        ""
                    } else {
                        "; snapshot generation differs"
                    }
                ));
            }
            drop(rtxn);
            wtxn.abort()?;
        }
        // 2. Records against files, from one consistent read.
        let txn = self.read_txn()?;
        let mut refs: HashMap<Id, u64> = HashMap::new();
        let mut mailboxes = HashSet::new();
        for item in txn.open_table(MAILBOXES)?.iter()? {
            let (k, _) = item?;
            mailboxes.insert(k.value().to_string());
        }
        r.mailboxes = mailboxes.len();
        let mut folder_of: HashMap<u64, Folder> = HashMap::new();
        for item in txn.open_table(FOLDERS)?.iter()? {
            let (_, v) = item?;
            let f: Folder = schema::decode(v.value(), "folder")?;
            if !mailboxes.contains(&f.mailbox) {
                r.problem(format!(
                    "folder {}/{} belongs to no mailbox",
                    f.mailbox, f.name
                ));
            }
            folder_of.insert(f.id, f);
        }
        r.folders = folder_of.len();
        let mut usage: HashMap<String, u64> = HashMap::new();
        let mut expected: Vec<(Id, u64, String)> = Vec::new();
        for item in txn.open_table(MESSAGES)?.iter()? {
            let (k, v) = item?;
            let (fid, uid) = k.value();
            let m: MessageMeta = schema::decode(v.value(), "message")?;
            r.messages += 1;
            match folder_of.get(&fid) {
                Some(f) => {
                    if uid >= f.uidnext {
                        r.problem(format!(
                            "{}/{} UID {uid} is not below UIDNEXT {}",
                            f.mailbox, f.name, f.uidnext
                        ));
                    }
                    *usage.entry(f.mailbox.clone()).or_default() += m.size;
                    expected.push((
                        m.blob,
                        m.size,
                        format!("{}/{} UID {uid}", f.mailbox, f.name),
                    ));
                }
                None => r.problem(format!(
                    "message UID {uid} in folder id {fid} that does not exist"
                )),
            }
            *refs.entry(m.blob).or_default() += 1;
        }
        for item in txn.open_table(schema::QUEUE)?.iter()? {
            let (_, v) = item?;
            let q: QueueEntry = schema::decode(v.value(), "queue")?;
            r.queue_entries += 1;
            *refs.entry(q.blob).or_default() += 1;
            expected.push((q.blob, q.size, format!("queue entry {}", id_hex(q.id))));
        }
        for item in txn.open_table(schema::BLOBS)?.iter()? {
            let (k, v) = item?;
            let (id, n) = (k.value(), v.value());
            if refs.get(&id).copied().unwrap_or(0) != n {
                r.problem(format!(
                    "blob {} counts {n} references, records name it {} times",
                    id_hex(id),
                    refs.get(&id).copied().unwrap_or(0)
                ));
            }
        }
        for (mailbox, used) in &usage {
            let stored = txn
                .open_table(schema::USAGE)?
                .get(mailbox.as_str())?
                .map_or(0, |g| g.value());
            if stored != *used {
                r.problem(format!(
                    "{mailbox}: usage {stored} but its messages hold {used} bytes"
                ));
            }
        }
        for problem in crate::ldap::check_books(&txn)? {
            r.problem(problem);
        }
        drop(txn);
        // 3. Each file: there, the right size, the recorded hash.
        let mut checked: HashMap<Id, Result<u64, String>> = HashMap::new();
        let total = expected.len() as u64;
        for (i, (blob, size, what)) in expected.iter().enumerate() {
            if i % 1000 == 0 {
                progress("checking message files", i as u64, total);
            }
            let outcome = checked.entry(*blob).or_insert_with(|| {
                let bytes =
                    fs::read(blob_path(self.msg_dir(), *blob)).map_err(|e| e.to_string())?;
                let (header, body_len) = split_blob(&bytes)?;
                let body = &bytes[..body_len];
                if let Some(h) = header
                    && (h.size != body.len() as u64 || h.hash != blobs::body_hash(body))
                {
                    return Err("content does not match the hash in its header".into());
                }
                Ok(body.len() as u64)
            });
            match outcome {
                Ok(len) => {
                    if *len != *size {
                        r.problem(format!("{what}: recorded size {size}, file holds {len}"));
                    }
                }
                Err(e) => r.problem(format!("{what}: message file {}: {e}", id_hex(*blob))),
            }
        }
        r.bytes_hashed = checked.values().filter_map(|v| v.as_ref().ok()).sum();
        let files = blob_files(self.msg_dir())?;
        r.files = files.len();
        r.unreferenced_files = files.iter().filter(|b| !refs.contains_key(b)).count();
        r.seconds = started.elapsed().as_secs_f64();
        Ok(r)
    }

    /// A consistent online copy into `dir` (created if needed): the database
    /// and the recovery journal copied while no transaction can commit, and
    /// the message files hard-linked (or copied across file systems). Files
    /// already in `dir` are kept (incremental); those no longer referenced
    /// are removed from the backup.
    pub fn backup(&self, dir: &Path, progress: Progress<'_>) -> Result<BackupReport, StoreError> {
        let started = std::time::Instant::now();
        let mut report = BackupReport::default();
        let bmsg = dir.join("msg");
        let brec = dir.join("recovery");
        for d in [dir, &bmsg, &brec] {
            fs::DirBuilder::new()
                .recursive(true)
                .create(d)
                .map_err(StoreError::from_io)?;
        }
        let have: HashSet<Id> = blob_files(&bmsg)?.into_iter().collect();
        // Pass 1, without the lock: every file there now.
        let files = blob_files(self.msg_dir())?;
        // Released files waiting out their grace are gone for the store:
        // not worth copying (one released later is dropped below).
        let released = self.released_ids();
        for (i, id) in files.iter().enumerate() {
            if i % 1000 == 0 {
                progress("copying message files", i as u64, files.len() as u64);
            }
            if !have.contains(id)
                && !released.contains(id)
                && copy_or_link(&blob_path(self.msg_dir(), *id), &blob_path(&bmsg, *id))?
            {
                report.files_copied += 1;
            }
        }
        // The consistent part, with writers held off.
        progress("copying the database", 0, 1);
        let referenced: HashSet<Id>;
        {
            let wtxn = self.write_txn()?;
            let tmp = dir.join("meta.redb.tmp");
            fs::copy(self.dir.join("meta.redb"), &tmp).map_err(StoreError::from_io)?;
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(StoreError::from_io)?;
            fs::rename(&tmp, dir.join("meta.redb")).map_err(StoreError::from_io)?;
            for name in ["snapshot", "journal"] {
                let src = journal::recovery_dir(&self.dir).join(name);
                let dst = brec.join(name);
                let tmp = brec.join(format!("{name}.tmp"));
                fs::copy(&src, &tmp).map_err(StoreError::from_io)?;
                File::open(&tmp)
                    .and_then(|f| f.sync_all())
                    .map_err(StoreError::from_io)?;
                fs::rename(&tmp, &dst).map_err(StoreError::from_io)?;
            }
            let rtxn = self.read_txn()?;
            let mut set = HashSet::new();
            for item in rtxn.open_table(MESSAGES)?.iter()? {
                let (_, v) = item?;
                set.insert(schema::decode::<MessageMeta>(v.value(), "message")?.blob);
            }
            for item in rtxn.open_table(schema::QUEUE)?.iter()? {
                let (_, v) = item?;
                set.insert(schema::decode::<QueueEntry>(v.value(), "queue")?.blob);
            }
            referenced = set;
            // Files written since pass 1 (no one can release them now).
            for id in &referenced {
                let dst = blob_path(&bmsg, *id);
                if !dst.exists() && copy_or_link(&blob_path(self.msg_dir(), *id), &dst)? {
                    report.files_copied += 1;
                }
            }
            drop(rtxn);
            wtxn.abort()?;
        }
        for id in blob_files(&bmsg)? {
            if referenced.contains(&id) {
                report.files += 1;
            } else {
                fs::remove_file(blob_path(&bmsg, id)).map_err(StoreError::from_io)?;
                report.files_dropped += 1;
            }
        }
        sync_dir(&bmsg).map_err(StoreError::from_io)?;
        sync_dir(&brec).map_err(StoreError::from_io)?;
        sync_dir(dir).map_err(StoreError::from_io)?;
        report.seconds = started.elapsed().as_secs_f64();
        let info = serde_json::json!({"created": now_secs(), "files": report.files});
        fs::write(dir.join("backup.json"), info.to_string()).map_err(StoreError::from_io)?;
        Ok(report)
    }

    /// Takes a checkpoint now (snapshot + empty journal).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.journal.checkpoint(&self.db)
    }
}

/// What a backup did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct BackupReport {
    /// Message files in the backup.
    pub files: usize,
    /// Copied or linked this time (the rest were there already).
    pub files_copied: usize,
    /// Removed from the backup: no longer referenced.
    pub files_dropped: usize,
    pub seconds: f64,
}

/// Hard link, or copy across file systems; false if the source is gone.
fn copy_or_link(src: &Path, dst: &Path) -> Result<bool, StoreError> {
    match fs::hard_link(src, dst) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(_) => {
            let tmp = dst.with_extension("tmp");
            match fs::copy(src, &tmp) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(StoreError::from_io(e)),
            }
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(StoreError::from_io)?;
            fs::rename(&tmp, dst).map_err(StoreError::from_io)?;
            Ok(true)
        }
    }
}

/// Puts a backup back into `data_dir` (the store must not be running): the
/// current database and journal are kept aside, the backup's copied in,
/// its message files added to those present (none is removed), then
/// [`reconstruct`] brings back the mail newer than the backup from its
/// files.
pub fn restore(
    backup: &Path,
    data_dir: &Path,
    progress: Progress<'_>,
) -> Result<ReconstructReport, StoreError> {
    for need in ["meta.redb", "recovery/journal", "recovery/snapshot", "msg"] {
        if !backup.join(need).exists() {
            return Err(StoreError::Invalid {
                what: "backup",
                why: format!("{} has no {need}", backup.display()),
            });
        }
    }
    let db_path = data_dir.join("meta.redb");
    if in_use(&db_path) {
        return Err(StoreError::InUse {
            kind: "store",
            name: data_dir.display().to_string(),
            by: "a running mxrack (stop it first)".into(),
        });
    }
    let msg_dir = data_dir.join("msg");
    let rec = journal::recovery_dir(data_dir);
    fs::DirBuilder::new()
        .recursive(true)
        .create(&msg_dir)
        .map_err(StoreError::from_io)?;
    let stamp = now_secs();
    if db_path.exists() {
        fs::rename(
            &db_path,
            data_dir.join(format!("meta.redb.before-restore-{stamp}")),
        )
        .map_err(StoreError::from_io)?;
    }
    if rec.exists() {
        fs::rename(
            &rec,
            data_dir.join(format!("recovery.before-restore-{stamp}")),
        )
        .map_err(StoreError::from_io)?;
    }
    fs::DirBuilder::new()
        .recursive(true)
        .create(&rec)
        .map_err(StoreError::from_io)?;
    let bfiles = blob_files(&backup.join("msg"))?;
    for (i, id) in bfiles.iter().enumerate() {
        if i % 1000 == 0 {
            progress("restoring message files", i as u64, bfiles.len() as u64);
        }
        let dst = blob_path(&msg_dir, *id);
        if !dst.exists() {
            copy_or_link(&blob_path(&backup.join("msg"), *id), &dst)?;
        }
    }
    sync_dir(&msg_dir).map_err(StoreError::from_io)?;
    for (src, dst) in [
        (backup.join("meta.redb"), db_path.clone()),
        (backup.join("recovery/journal"), rec.join("journal")),
        (backup.join("recovery/snapshot"), rec.join("snapshot")),
    ] {
        let tmp: PathBuf = dst.with_extension("tmp");
        fs::copy(&src, &tmp).map_err(StoreError::from_io)?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(StoreError::from_io)?;
        fs::rename(&tmp, &dst).map_err(StoreError::from_io)?;
    }
    sync_dir(&rec).map_err(StoreError::from_io)?;
    sync_dir(data_dir).map_err(StoreError::from_io)?;
    reconstruct(data_dir, None, progress)
}
