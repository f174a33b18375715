//! Several appended messages committed together (IMAP MULTIAPPEND, RFC 3502
//! 6.3.11: "the server MUST NOT append any of the messages" when one
//! fails). Each message is written as it arrives ([`Store::begin_message`])
//! and finished into an [`AppendedFile`] (checked, recovery record written,
//! fdatasync'ed) as soon as its literal ends, so a session holds one write
//! buffer whatever the number of messages; [`Store::append_commit_all`]
//! then commits all of them in one journaled transaction, or none. A file
//! dropped uncommitted is removed.

use std::path::PathBuf;
use std::sync::Arc;

use super::{append_header, blocking, charge_usage, dedup_flags, get_folder, put_folder};
use crate::ids::now_secs;
use crate::schema::{self, BLOBS, FOLDERS, MESSAGES, MessageMeta};
use crate::{Id, Store, StoreError, blobs};

/// A message file finished but not yet in a folder.
#[derive(Debug)]
pub struct AppendedFile {
    id: Id,
    path: Option<PathBuf>,
    size: u64,
    mailbox: String,
    folder: String,
    flags: Vec<String>,
    date: i64,
}

impl AppendedFile {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Gives the message up: its file is removed before this returns.
    pub async fn discard(mut self) {
        if let Some(path) = self.path.take() {
            let _ = crate::offload::spawn_blocking(move || blobs::remove_blob_file(&path)).await;
        }
    }
}

impl Drop for AppendedFile {
    /// Uncommitted: the file goes (on a blocking thread when a runtime is
    /// there), so a refused MULTIAPPEND leaves nothing in `msg/`.
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    crate::offload::spawn_blocking_on(&rt, move || blobs::remove_blob_file(&path));
                }
                Err(_) => blobs::remove_blob_file(&path),
            }
        }
    }
}

impl Store {
    /// Checks a message written as it arrived (names, flags, folder, quota
    /// with its real size) and finishes its file: recovery record,
    /// `fdatasync`. Nothing is in the folder until
    /// [`Store::append_commit_all`]. On error the file is removed.
    pub async fn append_finish(
        self: &Arc<Self>,
        incoming: crate::IncomingMessage,
        mailbox: &str,
        folder: &str,
        flags: &[String],
        internal_date: Option<i64>,
    ) -> Result<AppendedFile, StoreError> {
        let size = incoming.len();
        let id = incoming.id();
        let store = Arc::clone(self);
        let (mailbox, folder, flags) = (mailbox.to_string(), folder.to_string(), flags.to_vec());
        let (mailbox, folder, flags) = blocking(move || {
            let (m, f) = store.append_check(&mailbox, &folder, &flags, size)?;
            Ok((m, f, flags))
        })
        .await?;
        let date = internal_date.unwrap_or_else(now_secs);
        incoming
            .finish(append_header(&mailbox, &folder, &flags, date))
            .await?;
        Ok(AppendedFile {
            id,
            path: Some(blobs::blob_path(self.msg_dir(), id)),
            size,
            mailbox,
            folder,
            flags,
            date,
        })
    }

    /// Commits finished files, all into one folder, in one transaction:
    /// the quota is charged with their total, UIDs are given in order.
    /// Returns (UIDVALIDITY, UIDs) for APPENDUID (RFC 4315 3). On error
    /// nothing is stored and the files are removed.
    pub async fn append_commit_all(
        self: &Arc<Self>,
        files: Vec<AppendedFile>,
    ) -> Result<(u32, Vec<u32>), StoreError> {
        let store = Arc::clone(self);
        blocking(move || store.append_commit_all_sync(files)).await
    }

    fn append_commit_all_sync(
        &self,
        mut files: Vec<AppendedFile>,
    ) -> Result<(u32, Vec<u32>), StoreError> {
        let Some(first) = files.first() else {
            return Err(StoreError::Invalid {
                what: "append",
                why: "no message".into(),
            });
        };
        let (mailbox, folder_name) = (first.mailbox.clone(), first.folder.clone());
        if files
            .iter()
            .any(|f| f.mailbox != mailbox || f.folder != folder_name)
        {
            return Err(StoreError::Invalid {
                what: "append",
                why: "messages for different folders".into(),
            });
        }
        blobs::sync_dir(self.msg_dir()).map_err(StoreError::from_io)?;
        let txn = self.jtxn()?;
        let result;
        {
            let total = files.iter().map(|f| f.size).sum();
            charge_usage(&txn, &mailbox, total)?;
            let mut folders = txn.open_table(FOLDERS)?;
            let mut f = get_folder(&*folders, &mailbox, &folder_name)?;
            let mut messages = txn.open_table(MESSAGES)?;
            let mut refs = txn.open_table(BLOBS)?;
            f.highestmodseq += 1;
            let mut uids = Vec::with_capacity(files.len());
            for file in &files {
                let uid = f.uidnext;
                f.uidnext = f
                    .uidnext
                    .checked_add(1)
                    .ok_or_else(|| StoreError::Invalid {
                        what: "folder",
                        why: "every UID is used".into(),
                    })?;
                let meta = MessageMeta {
                    uid,
                    blob: file.id,
                    size: file.size,
                    internal_date: file.date,
                    flags: dedup_flags(&file.flags),
                    modseq: f.highestmodseq,
                };
                messages.insert((f.id, uid), schema::encode(&meta)?.as_slice())?;
                refs.insert(file.id, 1)?;
                uids.push(uid);
            }
            put_folder(&mut folders, &f)?;
            result = (f.uidvalidity, uids);
        }
        txn.commit()?;
        // Committed: the files belong to the folder now.
        for file in &mut files {
            file.path = None;
        }
        self.notify_change(&mailbox);
        Ok(result)
    }
}
