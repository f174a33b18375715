//! Reading and changing a mailbox's folders and messages: what IMAP and POP3
//! need beyond delivery. Every change is one durable redb transaction that
//! bumps the folder's modseq, keeps the mailbox's usage (quota) and blob
//! reference counts right, and is announced to other sessions after commit.

use std::collections::HashMap;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable};

use crate::ids::now_secs;
use crate::journal::{JTable, JTxn};
use crate::ldap::LDAP_BOOKS;
use crate::names::normalize_address;
use crate::schema::{
    self, BLOBS, COUNTERS, FOLDER_ID_COUNTER, FOLDERS, Folder, INBOX, MAILBOXES, MESSAGES, Mailbox,
    MessageMeta, UIDVALIDITY_COUNTER, USAGE,
};
use crate::{Id, Store, StoreError, blobs};

mod many;
pub use many::AppendedFile;

/// Longest folder name, in bytes, and deepest hierarchy.
pub const FOLDER_NAME_BYTES_MAX: usize = 512;
pub const FOLDER_DEPTH_MAX: usize = 16;
/// Most folders one mailbox may have.
pub const FOLDERS_PER_MAILBOX_MAX: usize = 1_000;
/// Most distinct flags on one message, and longest flag.
pub const FLAGS_PER_MESSAGE_MAX: usize = 64;
pub const FLAG_BYTES_MAX: usize = 128;

/// A folder and its messages, read in one transaction.
#[derive(Debug, Clone)]
pub struct FolderSnapshot {
    pub folder: Folder,
    pub messages: Vec<MessageMeta>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Add,
    Remove,
    Replace,
}

/// IMAP folder names use "/" as hierarchy delimiter; names are UTF-8.
pub fn folder_name_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= FOLDER_NAME_BYTES_MAX
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.contains("//")
        && name.split('/').count() <= FOLDER_DEPTH_MAX
        && !name.chars().any(|c| c.is_control() || c == '*' || c == '%')
}

/// INBOX is case-insensitive (RFC 3501 5.1), also as a hierarchy prefix.
pub(crate) fn canonical_folder(name: &str) -> Result<String, StoreError> {
    if !folder_name_valid(name) {
        return Err(StoreError::Invalid {
            what: "folder name",
            why: format!("{name:?}"),
        });
    }
    if name.eq_ignore_ascii_case(INBOX) {
        return Ok(INBOX.to_string());
    }
    // get(), not [..6]: byte 6 of a client's name need not be a char boundary.
    if let Some(rest) = name
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case("INBOX/"))
        .and(name.get(6..))
        .filter(|r| !r.is_empty())
    {
        return Ok(format!("INBOX/{rest}"));
    }
    Ok(name.to_string())
}

fn not_found(kind: &'static str, name: String) -> StoreError {
    StoreError::NotFound { kind, name }
}

type FolderTable<'t> = JTable<'t, (&'static str, &'static str), &'static [u8]>;
type MessageTable<'t> = JTable<'t, (u64, u32), &'static [u8]>;

fn get_folder(
    folders: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    mailbox: &str,
    name: &str,
) -> Result<Folder, StoreError> {
    match folders.get((mailbox, name))? {
        Some(g) => schema::decode(g.value(), "folder"),
        None => Err(not_found("folder", format!("{mailbox}/{name}"))),
    }
}

/// The special-use role (RFC 6154) a folder named `name` gets: the role
/// its name stands for in [`schema::SPECIAL_USE_NAMES`] ("Junk": \Junk),
/// unless another folder of the mailbox holds that role already. So a Junk
/// folder deleted and created again is the Junk folder again (clients
/// find it, and moves into it train the spam filter), and a Junk renamed
/// away keeps the role without a namesake taking it twice.
fn role_for_name(
    folders: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    mailbox: &str,
    name: &str,
) -> Result<Option<String>, StoreError> {
    let Some((_, role)) = schema::SPECIAL_USE_NAMES.iter().find(|(n, _)| *n == name) else {
        return Ok(None);
    };
    for item in folders.range((mailbox, "")..)? {
        let (k, v) = item?;
        if k.value().0 != mailbox {
            break;
        }
        let f: Folder = schema::decode(v.value(), "folder")?;
        if f.special_use.as_deref() == Some(*role) {
            return Ok(None);
        }
    }
    Ok(Some(role.to_string()))
}

fn put_folder(folders: &mut FolderTable<'_>, f: &Folder) -> Result<(), StoreError> {
    folders.insert(
        (f.mailbox.as_str(), f.name.as_str()),
        schema::encode(f)?.as_slice(),
    )?;
    Ok(())
}

fn adjust_usage(
    usage: &mut JTable<'_, &'static str, u64>,
    mailbox: &str,
    delta: i64,
) -> Result<(), StoreError> {
    let used = usage.get(mailbox)?.map(|g| g.value()).unwrap_or(0);
    let new = if delta >= 0 {
        used.saturating_add(delta.unsigned_abs())
    } else {
        used.saturating_sub(delta.unsigned_abs())
    };
    usage.insert(mailbox, new)?;
    Ok(())
}

fn read_messages(
    messages: &impl ReadableTable<(u64, u32), &'static [u8]>,
    folder_id: u64,
) -> Result<Vec<MessageMeta>, StoreError> {
    let mut out = Vec::new();
    for item in messages.range((folder_id, 0u32)..=(folder_id, u32::MAX))? {
        let (_, v) = item?;
        out.push(schema::decode(v.value(), "message")?);
    }
    Ok(out)
}

fn new_uidvalidity(counters: &mut JTable<'_, &'static str, u64>) -> Result<u32, StoreError> {
    let now = u64::try_from(now_secs()).unwrap_or(1);
    let last = counters
        .get(UIDVALIDITY_COUNTER)?
        .map(|g| g.value())
        .unwrap_or(0);
    let next = now.max(last + 1);
    counters.insert(UIDVALIDITY_COUNTER, next)?;
    u32::try_from(next).map_err(|_| StoreError::Invalid {
        what: "UIDVALIDITY",
        why: "the counter exceeds 32 bits".into(),
    })
}

fn new_folder_id(counters: &mut JTable<'_, &'static str, u64>) -> Result<u64, StoreError> {
    let next = counters
        .get(FOLDER_ID_COUNTER)?
        .map(|g| g.value())
        .unwrap_or(0)
        + 1;
    counters.insert(FOLDER_ID_COUNTER, next)?;
    Ok(next)
}

fn check_flags(flags: &[String]) -> Result<(), StoreError> {
    if flags.len() > FLAGS_PER_MESSAGE_MAX
        || flags
            .iter()
            .any(|f| f.is_empty() || f.len() > FLAG_BYTES_MAX)
    {
        return Err(StoreError::Invalid {
            what: "flags",
            why: format!("at most {FLAGS_PER_MESSAGE_MAX} flags of at most {FLAG_BYTES_MAX} bytes"),
        });
    }
    Ok(())
}

/// Flags compare case-insensitively (RFC 3501 2.3.2); the first spelling wins.
fn flags_contain(flags: &[String], flag: &str) -> bool {
    flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
}

/// Adds `bytes` to a mailbox's usage inside `txn`, refusing with
/// [`StoreError::OverQuota`] when that would pass its quota (APPEND, COPY).
/// The quota covers mail and the mailbox's address book together.
fn charge_usage(txn: &JTxn<'_>, mailbox: &str, bytes: u64) -> Result<(), StoreError> {
    let record = match txn.open_table(MAILBOXES)?.get(mailbox)? {
        Some(g) => schema::decode::<Mailbox>(g.value(), "mailbox")?,
        None => return Err(not_found("mailbox", mailbox.to_string())),
    };
    let contacts = crate::ldap::contacts_bytes(&*txn.open_table(LDAP_BOOKS)?, mailbox)?;
    let mut usage = txn.open_table(USAGE)?;
    let used = usage.get(mailbox)?.map(|g| g.value()).unwrap_or(0);
    if let Some(q) = record.quota_bytes
        && used.saturating_add(contacts).saturating_add(bytes) > q
    {
        return Err(StoreError::OverQuota {
            mailbox: mailbox.to_string(),
            larger_than_quota: bytes > q,
        });
    }
    usage.insert(mailbox, used.saturating_add(bytes))?;
    Ok(())
}

/// Recomputes every mailbox's usage from its messages (at open: cheap next
/// to the blob reconciliation, and it makes the counter self-healing).
pub(crate) fn recount_usage(db: &Database) -> Result<(), StoreError> {
    let mut totals: HashMap<String, u64> = HashMap::new();
    {
        let txn = db.begin_read()?;
        let folders = txn.open_table(FOLDERS)?;
        let mut owner: HashMap<u64, String> = HashMap::new();
        for item in folders.iter()? {
            let (_, v) = item?;
            let f: Folder = schema::decode(v.value(), "folder")?;
            totals.entry(f.mailbox.clone()).or_default();
            owner.insert(f.id, f.mailbox);
        }
        for item in txn.open_table(MESSAGES)?.iter()? {
            let (k, v) = item?;
            if let Some(mailbox) = owner.get(&k.value().0) {
                let m: MessageMeta = schema::decode(v.value(), "message")?;
                *totals.entry(mailbox.clone()).or_default() += m.size;
            }
        }
    }
    let txn = crate::deliver::durable_write(db)?;
    {
        let mut usage = txn.open_table(USAGE)?;
        let stale: Vec<String> = usage
            .iter()?
            .filter_map(|i| i.ok().map(|(k, _)| k.value().to_string()))
            .filter(|k| !totals.contains_key(k))
            .collect();
        for k in stale {
            usage.remove(k.as_str())?;
        }
        for (mailbox, bytes) in &totals {
            usage.insert(mailbox.as_str(), *bytes)?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// What a mailbox uses against its quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailboxUsage {
    /// Message bytes over all its folders.
    pub mail: u64,
    /// Its address book's stored bytes (`ldap_books`).
    pub contacts: u64,
}

impl MailboxUsage {
    pub fn total(&self) -> u64 {
        self.mail.saturating_add(self.contacts)
    }
}

impl Store {
    /// A receiver of change notices: the address of each mailbox whose
    /// folders or messages changed, sent after the change committed.
    pub fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<Arc<str>> {
        self.changes.subscribe()
    }

    pub(crate) fn notify_change(&self, mailbox: &str) {
        // No receiver is fine: nobody has the mailbox open.
        let _ = self.changes.send(Arc::from(mailbox));
    }

    /// One folder's record.
    pub fn folder_get(&self, mailbox: &str, name: &str) -> Result<Folder, StoreError> {
        let mailbox = normalize_address(mailbox)?;
        let name = canonical_folder(name)?;
        let txn = self.read_txn()?;
        get_folder(&txn.open_table(FOLDERS)?, &mailbox, &name)
    }

    /// A folder and all its messages, consistent with each other.
    pub fn folder_snapshot(&self, mailbox: &str, name: &str) -> Result<FolderSnapshot, StoreError> {
        let mailbox = normalize_address(mailbox)?;
        let name = canonical_folder(name)?;
        let txn = self.read_txn()?;
        let folder = get_folder(&txn.open_table(FOLDERS)?, &mailbox, &name)?;
        let messages = read_messages(&txn.open_table(MESSAGES)?, folder.id)?;
        Ok(FolderSnapshot { folder, messages })
    }

    /// Creates a folder; its parents need not exist (IMAP allows that).
    pub fn folder_create(&self, mailbox: &str, name: &str) -> Result<Folder, StoreError> {
        let mailbox = normalize_address(mailbox)?;
        let name = canonical_folder(name)?;
        let txn = self.jtxn()?;
        let folder;
        {
            if txn.open_table(MAILBOXES)?.get(mailbox.as_str())?.is_none() {
                return Err(not_found("mailbox", mailbox));
            }
            let mut folders = txn.open_table(FOLDERS)?;
            if folders.get((mailbox.as_str(), name.as_str()))?.is_some() {
                return Err(StoreError::Duplicate {
                    kind: "folder",
                    name,
                });
            }
            let count = folders
                .range((mailbox.as_str(), "")..)?
                .take_while(|i| {
                    i.as_ref()
                        .map(|(k, _)| k.value().0 == mailbox)
                        .unwrap_or(false)
                })
                .count();
            if count >= FOLDERS_PER_MAILBOX_MAX {
                return Err(StoreError::Invalid {
                    what: "folder",
                    why: format!("a mailbox holds at most {FOLDERS_PER_MAILBOX_MAX} folders"),
                });
            }
            let special_use = role_for_name(&*folders, &mailbox, &name)?;
            let mut counters = txn.open_table(COUNTERS)?;
            folder = Folder {
                id: new_folder_id(&mut counters)?,
                mailbox: mailbox.clone(),
                name: name.clone(),
                uidvalidity: new_uidvalidity(&mut counters)?,
                uidnext: 1,
                special_use,
                highestmodseq: 1,
                first_recent_uid: 1,
            };
            put_folder(&mut folders, &folder)?;
        }
        txn.commit()?;
        self.notify_change(&mailbox);
        Ok(folder)
    }

    /// Deletes a folder and its messages. INBOX cannot be deleted; a folder
    /// with children is refused (as Dovecot does), so no name is orphaned.
    pub fn folder_delete(&self, mailbox: &str, name: &str) -> Result<(), StoreError> {
        let mailbox = normalize_address(mailbox)?;
        let name = canonical_folder(name)?;
        if name == INBOX {
            return Err(StoreError::Invalid {
                what: "folder",
                why: "INBOX cannot be deleted".into(),
            });
        }
        let mut freed: Vec<Id> = Vec::new();
        let txn = self.jtxn()?;
        {
            let mut folders = txn.open_table(FOLDERS)?;
            let folder = get_folder(&*folders, &mailbox, &name)?;
            let prefix = format!("{name}/");
            let has_children = folders
                .range((mailbox.as_str(), prefix.as_str())..)?
                .next()
                .transpose()?
                .is_some_and(|(k, _)| k.value().0 == mailbox && k.value().1.starts_with(&prefix));
            if has_children {
                return Err(StoreError::InUse {
                    kind: "folder",
                    name,
                    by: "its child folders".into(),
                });
            }
            folders.remove((mailbox.as_str(), name.as_str()))?;
            let mut messages = txn.open_table(MESSAGES)?;
            let doomed = read_messages(&*messages, folder.id)?;
            let mut blob_refs = txn.open_table(BLOBS)?;
            let mut bytes = 0u64;
            for m in &doomed {
                messages.remove((folder.id, m.uid))?;
                bytes += m.size;
                if blobs::release(&mut blob_refs, m.blob)? {
                    freed.push(m.blob);
                }
            }
            adjust_usage(&mut txn.open_table(USAGE)?, &mailbox, -(bytes as i64))?;
        }
        txn.commit()?;
        self.delete_blob_files_after_grace(&freed);
        self.notify_change(&mailbox);
        Ok(())
    }

    /// Renames a folder and its children. Renaming INBOX moves its messages
    /// to the new folder and leaves INBOX empty (RFC 3501 6.3.5).
    pub fn folder_rename(&self, mailbox: &str, from: &str, to: &str) -> Result<(), StoreError> {
        let mailbox = normalize_address(mailbox)?;
        let from = canonical_folder(from)?;
        let to = canonical_folder(to)?;
        let txn = self.jtxn()?;
        {
            let mut folders = txn.open_table(FOLDERS)?;
            let source = get_folder(&*folders, &mailbox, &from)?;
            if folders.get((mailbox.as_str(), to.as_str()))?.is_some() {
                return Err(StoreError::Duplicate {
                    kind: "folder",
                    name: to,
                });
            }
            if to == INBOX || to.starts_with(&format!("{from}/")) {
                return Err(StoreError::Invalid {
                    what: "folder",
                    why: format!("cannot rename {from} to {to}"),
                });
            }
            let mut counters = txn.open_table(COUNTERS)?;
            if from == INBOX {
                let mut target = Folder {
                    id: new_folder_id(&mut counters)?,
                    mailbox: mailbox.clone(),
                    name: to.clone(),
                    uidvalidity: new_uidvalidity(&mut counters)?,
                    uidnext: 1,
                    special_use: None,
                    highestmodseq: 1,
                    first_recent_uid: 1,
                };
                let mut messages = txn.open_table(MESSAGES)?;
                let moving = read_messages(&*messages, source.id)?;
                for mut m in moving {
                    messages.remove((source.id, m.uid))?;
                    m.uid = target.uidnext;
                    target.uidnext += 1;
                    m.modseq = target.highestmodseq;
                    messages.insert((target.id, m.uid), schema::encode(&m)?.as_slice())?;
                }
                put_folder(&mut folders, &target)?;
                let mut inbox = source;
                inbox.highestmodseq += 1;
                put_folder(&mut folders, &inbox)?;
            } else {
                let prefix = format!("{from}/");
                let mut renames = vec![(from.clone(), to.clone())];
                for item in folders.range((mailbox.as_str(), prefix.as_str())..)? {
                    let (k, _) = item?;
                    let (m, n) = k.value();
                    if m != mailbox || !n.starts_with(&prefix) {
                        break;
                    }
                    renames.push((n.to_string(), format!("{to}/{}", &n[prefix.len()..])));
                }
                // Every new name must be free before anything moves (RFC 3501
                // 6.3.5), or a child would overwrite an existing folder.
                for (_, new) in renames.iter().skip(1) {
                    if folders.get((mailbox.as_str(), new.as_str()))?.is_some() {
                        return Err(StoreError::Duplicate {
                            kind: "folder",
                            name: new.clone(),
                        });
                    }
                }
                crate::subscriptions::rename(&txn, &mailbox, &renames)?;
                for (old, new) in renames {
                    if !folder_name_valid(&new) {
                        return Err(StoreError::Invalid {
                            what: "folder name",
                            why: format!("{new:?}"),
                        });
                    }
                    let mut f = get_folder(&*folders, &mailbox, &old)?;
                    folders.remove((mailbox.as_str(), old.as_str()))?;
                    if f.special_use.is_none() {
                        // Renamed to "Junk" while no folder is Junk: it is now.
                        f.special_use = role_for_name(&*folders, &mailbox, &new)?;
                    }
                    f.name = new;
                    put_folder(&mut folders, &f)?;
                }
            }
        }
        txn.commit()?;
        self.notify_change(&mailbox);
        Ok(())
    }

    /// Appends a message (IMAP APPEND). Durable before it returns, like
    /// delivery: body file fsynced, directory fsynced, metadata committed.
    /// Returns (UIDVALIDITY, UID) for APPENDUID (RFC 4315). A message that
    /// arrives over the network goes through [`Store::append_incoming`]
    /// instead, written as it comes.
    pub fn append(
        &self,
        mailbox: &str,
        folder: &str,
        body: &[u8],
        flags: &[String],
        internal_date: Option<i64>,
    ) -> Result<(u32, u32), StoreError> {
        let size = body.len() as u64;
        // Check before writing the file, and again inside the transaction.
        let (mailbox, folder_name) = self.append_check(mailbox, folder, flags, size)?;
        let id = self.next_id();
        let path = blobs::blob_path(self.msg_dir(), id);
        let date = internal_date.unwrap_or_else(now_secs);
        let header = append_header(&mailbox, &folder_name, flags, date);
        blobs::write_blob(&path, &header, body)?;
        self.append_commit(id, &mailbox, &folder_name, size, flags, date)
    }

    /// What APPEND checks before a byte of the message is written, with the
    /// size the client announced: the names, the flags, that the folder
    /// exists ([`StoreError::NotFound`] `"folder"`: TRYCREATE) and that the
    /// quota can take `size` more. Returns the normalised mailbox and
    /// folder names. [`Store::append_incoming`] checks again with the real
    /// size, and the commit once more inside its transaction.
    pub fn append_check(
        &self,
        mailbox: &str,
        folder: &str,
        flags: &[String],
        size: u64,
    ) -> Result<(String, String), StoreError> {
        let mailbox = normalize_address(mailbox)?;
        let folder_name = canonical_folder(folder)?;
        check_flags(flags)?;
        {
            let txn = self.read_txn()?;
            get_folder(&txn.open_table(FOLDERS)?, &mailbox, &folder_name)?;
        }
        self.check_quota(&mailbox, size)?;
        Ok((mailbox, folder_name))
    }

    /// [`Store::append`] for a message written as it arrived
    /// ([`Store::begin_message`]): checks the quota with its real size,
    /// finishes its file (recovery record, `fdatasync`) and commits it, the
    /// store work on blocking threads. Same durability and records as
    /// `append`; on error the file is removed and nothing is stored.
    pub async fn append_incoming(
        self: &Arc<Self>,
        incoming: crate::IncomingMessage,
        mailbox: &str,
        folder: &str,
        flags: &[String],
        internal_date: Option<i64>,
    ) -> Result<(u32, u32), StoreError> {
        // One message is a MULTIAPPEND of one (mailstore/many.rs).
        let file = self
            .append_finish(incoming, mailbox, folder, flags, internal_date)
            .await?;
        let (validity, uids) = self.append_commit_all(vec![file]).await?;
        let uid = uids
            .first()
            .copied()
            .ok_or_else(|| StoreError::Db("an APPEND of one message committed no UID".into()))?;
        Ok((validity, uid))
    }

    /// Commits an appended message whose file `id` is written and fsynced:
    /// directory fsync, then one journaled transaction. On error the file
    /// is removed.
    fn append_commit(
        &self,
        id: Id,
        mailbox: &str,
        folder_name: &str,
        size: u64,
        flags: &[String],
        internal_date: i64,
    ) -> Result<(u32, u32), StoreError> {
        let result = (|| {
            blobs::sync_dir(self.msg_dir()).map_err(StoreError::from_io)?;
            let txn = self.jtxn()?;
            let ids;
            {
                charge_usage(&txn, mailbox, size)?;
                let mut folders = txn.open_table(FOLDERS)?;
                let mut f = get_folder(&*folders, mailbox, folder_name)?;
                let uid = f.uidnext;
                f.uidnext = f
                    .uidnext
                    .checked_add(1)
                    .ok_or_else(|| StoreError::Invalid {
                        what: "folder",
                        why: "every UID is used".into(),
                    })?;
                f.highestmodseq += 1;
                let meta = MessageMeta {
                    uid,
                    blob: id,
                    size,
                    internal_date,
                    flags: dedup_flags(flags),
                    modseq: f.highestmodseq,
                };
                txn.open_table(MESSAGES)?
                    .insert((f.id, uid), schema::encode(&meta)?.as_slice())?;
                txn.open_table(BLOBS)?.insert(id, 1)?;
                put_folder(&mut folders, &f)?;
                ids = (f.uidvalidity, uid);
            }
            txn.commit()?;
            Ok(ids)
        })();
        match result {
            Ok(ids) => {
                self.notify_change(mailbox);
                Ok(ids)
            }
            Err(e) => {
                blobs::remove_blob_file(&blobs::blob_path(self.msg_dir(), id));
                Err(e)
            }
        }
    }

    fn check_quota(&self, mailbox: &str, size: u64) -> Result<(), StoreError> {
        let record = self.mailbox_get(mailbox)?;
        if let Some(q) = record.quota_bytes
            && self.mailbox_usage(mailbox)? + size > q
        {
            return Err(StoreError::OverQuota {
                mailbox: mailbox.to_string(),
                larger_than_quota: size > q,
            });
        }
        Ok(())
    }

    /// Bytes a mailbox uses against its quota: its mail over all its
    /// folders plus its address book (what IMAP GETQUOTA reports).
    pub fn mailbox_usage(&self, address: &str) -> Result<u64, StoreError> {
        Ok(self.mailbox_usage_parts(address)?.total())
    }

    /// [`Store::mailbox_usage`] in its two parts, read in one transaction.
    pub fn mailbox_usage_parts(&self, address: &str) -> Result<MailboxUsage, StoreError> {
        let address = normalize_address(address)?;
        let txn = self.read_txn()?;
        let mail = txn
            .open_table(USAGE)?
            .get(address.as_str())?
            .map(|g| g.value())
            .unwrap_or(0);
        let contacts = crate::ldap::book_bytes_read(&txn, &address)?;
        Ok(MailboxUsage { mail, contacts })
    }

    /// Sets (or with `None` lifts) a mailbox's storage quota.
    pub fn mailbox_set_quota(
        &self,
        address: &str,
        quota_bytes: Option<u64>,
    ) -> Result<(), StoreError> {
        let address = normalize_address(address)?;
        let txn = self.jtxn()?;
        {
            let mut mailboxes = txn.open_table(MAILBOXES)?;
            let mut record: Mailbox = match mailboxes.get(address.as_str())? {
                Some(g) => schema::decode(g.value(), "mailbox")?,
                None => return Err(not_found("mailbox", address)),
            };
            record.quota_bytes = quota_bytes;
            mailboxes.insert(address.as_str(), schema::encode(&record)?.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Changes flags of the messages with these UIDs (missing UIDs are
    /// skipped). Returns the messages whose flags changed, as they are now.
    pub fn set_flags(
        &self,
        mailbox: &str,
        folder: &str,
        uids: &[u32],
        op: FlagOp,
        flags: &[String],
    ) -> Result<Vec<MessageMeta>, StoreError> {
        let mailbox = normalize_address(mailbox)?;
        let folder = canonical_folder(folder)?;
        check_flags(flags)?;
        let txn = self.jtxn()?;
        let mut changed = Vec::new();
        {
            let mut folders = txn.open_table(FOLDERS)?;
            let mut f = get_folder(&*folders, &mailbox, &folder)?;
            let mut messages = txn.open_table(MESSAGES)?;
            let modseq = f.highestmodseq + 1;
            for &uid in uids {
                let Some(mut m) = messages
                    .get((f.id, uid))?
                    .map(|g| schema::decode::<MessageMeta>(g.value(), "message"))
                    .transpose()?
                else {
                    continue;
                };
                let new = match op {
                    FlagOp::Replace => dedup_flags(flags),
                    FlagOp::Add => {
                        let mut n = m.flags.clone();
                        for fl in flags {
                            if !flags_contain(&n, fl) {
                                n.push(fl.clone());
                            }
                        }
                        n
                    }
                    FlagOp::Remove => m
                        .flags
                        .iter()
                        .filter(|x| !flags_contain(flags, x))
                        .cloned()
                        .collect(),
                };
                if new.len() > FLAGS_PER_MESSAGE_MAX {
                    return Err(StoreError::Invalid {
                        what: "flags",
                        why: format!("at most {FLAGS_PER_MESSAGE_MAX} flags per message"),
                    });
                }
                if same_flags(&new, &m.flags) {
                    continue;
                }
                m.flags = new;
                m.modseq = modseq;
                messages.insert((f.id, uid), schema::encode(&m)?.as_slice())?;
                changed.push(m);
            }
            if !changed.is_empty() {
                f.highestmodseq = modseq;
                put_folder(&mut folders, &f)?;
            }
        }
        if changed.is_empty() {
            txn.abort()?;
            return Ok(changed);
        }
        txn.commit()?;
        self.notify_change(&mailbox);
        Ok(changed)
    }

    /// Removes the messages flagged `\Deleted` (all, or only those among
    /// `only`). Returns the UIDs removed, ascending.
    pub fn expunge(
        &self,
        mailbox: &str,
        folder: &str,
        only: Option<&[u32]>,
    ) -> Result<Vec<u32>, StoreError> {
        self.remove_where(mailbox, folder, |m| {
            flags_contain(&m.flags, "\\Deleted") && only.is_none_or(|u| u.contains(&m.uid))
        })
    }

    /// Removes the messages with these UIDs whatever their flags (POP3 DELE
    /// applied at QUIT). Returns the UIDs removed.
    pub fn remove_messages(
        &self,
        mailbox: &str,
        folder: &str,
        uids: &[u32],
    ) -> Result<Vec<u32>, StoreError> {
        self.remove_where(mailbox, folder, |m| uids.contains(&m.uid))
    }

    fn remove_where(
        &self,
        mailbox: &str,
        folder: &str,
        doomed: impl Fn(&MessageMeta) -> bool,
    ) -> Result<Vec<u32>, StoreError> {
        let mailbox = normalize_address(mailbox)?;
        let folder = canonical_folder(folder)?;
        let mut freed = Vec::new();
        let mut removed = Vec::new();
        let txn = self.jtxn()?;
        {
            let mut folders = txn.open_table(FOLDERS)?;
            let mut f = get_folder(&*folders, &mailbox, &folder)?;
            let mut messages = txn.open_table(MESSAGES)?;
            let all = read_messages(&*messages, f.id)?;
            let mut blob_refs = txn.open_table(BLOBS)?;
            let mut bytes = 0u64;
            for m in all.iter().filter(|m| doomed(m)) {
                messages.remove((f.id, m.uid))?;
                bytes += m.size;
                removed.push(m.uid);
                if blobs::release(&mut blob_refs, m.blob)? {
                    freed.push(m.blob);
                }
            }
            if !removed.is_empty() {
                f.highestmodseq += 1;
                put_folder(&mut folders, &f)?;
                adjust_usage(&mut txn.open_table(USAGE)?, &mailbox, -(bytes as i64))?;
            }
        }
        if removed.is_empty() {
            txn.abort()?;
            return Ok(removed);
        }
        txn.commit()?;
        self.delete_blob_files_after_grace(&freed);
        self.notify_change(&mailbox);
        Ok(removed)
    }

    /// Copies (or with `remove_source`, moves) messages to another folder of
    /// the same mailbox, in one transaction. The bodies are shared (reference
    /// counts), not copied. Returns the target's UIDVALIDITY and the
    /// (source UID, new UID) pairs for COPYUID (RFC 4315).
    pub fn copy_messages(
        &self,
        mailbox: &str,
        from: &str,
        uids: &[u32],
        to: &str,
        remove_source: bool,
    ) -> Result<(u32, Vec<(u32, u32)>), StoreError> {
        let mailbox = normalize_address(mailbox)?;
        let from = canonical_folder(from)?;
        let to = canonical_folder(to)?;
        let txn = self.jtxn()?;
        let mut pairs = Vec::new();
        let uidvalidity;
        {
            let mut folders = txn.open_table(FOLDERS)?;
            let mut src = get_folder(&*folders, &mailbox, &from)?;
            let mut dst = get_folder(&*folders, &mailbox, &to)?;
            // Into the same folder (RFC 6851 3.3 allows MOVE there; COPY
            // too): the copies get new UIDs after every existing one, and
            // `dst` is the one record written.
            let same = src.id == dst.id;
            let mut messages: MessageTable<'_> = txn.open_table(MESSAGES)?;
            let mut blob_refs = txn.open_table(BLOBS)?;
            let mut added = 0u64;
            dst.highestmodseq += 1;
            for &uid in uids {
                let Some(m) = messages
                    .get((src.id, uid))?
                    .map(|g| schema::decode::<MessageMeta>(g.value(), "message"))
                    .transpose()?
                else {
                    continue;
                };
                let new_uid = dst.uidnext;
                dst.uidnext = dst
                    .uidnext
                    .checked_add(1)
                    .ok_or_else(|| StoreError::Invalid {
                        what: "folder",
                        why: "every UID is used".into(),
                    })?;
                let copy = MessageMeta {
                    uid: new_uid,
                    modseq: dst.highestmodseq,
                    ..m.clone()
                };
                messages.insert((dst.id, new_uid), schema::encode(&copy)?.as_slice())?;
                if remove_source {
                    messages.remove((src.id, uid))?;
                } else {
                    let refs = blob_refs.get(m.blob)?.map(|g| g.value()).unwrap_or(0);
                    blob_refs.insert(m.blob, refs + 1)?;
                    added += m.size;
                }
                pairs.push((uid, new_uid));
            }
            if !remove_source && added > 0 {
                charge_usage(&txn, &mailbox, added)?;
            }
            if remove_source && !pairs.is_empty() && !same {
                src.highestmodseq += 1;
                put_folder(&mut folders, &src)?;
            }
            put_folder(&mut folders, &dst)?;
            uidvalidity = dst.uidvalidity;
        }
        txn.commit()?;
        self.notify_change(&mailbox);
        Ok((uidvalidity, pairs))
    }
}

/// The recovery record of an appended message.
fn append_header(mailbox: &str, folder: &str, flags: &[String], date: i64) -> blobs::BlobHeader {
    blobs::BlobHeader {
        date,
        owners: vec![mailbox.to_string()],
        folder: folder.to_string(),
        flags: dedup_flags(flags),
        ..Default::default()
    }
}

/// Runs store work on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    crate::offload::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::Db(format!("store task failed: {e}"))))
}

fn dedup_flags(flags: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in flags {
        if !flags_contain(&out, f) {
            out.push(f.clone());
        }
    }
    out
}

fn same_flags(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().all(|f| flags_contain(b, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        s.account_add("a").expect("account");
        s.domain_add("example.net", "a").expect("domain");
        s.mailbox_add("jo@example.net", "pw", false)
            .expect("mailbox");
        (dir, s)
    }

    const MB: &str = "jo@example.net";

    #[test]
    fn append_flags_copy_move_expunge_keep_uids_and_usage_right() {
        let (_d, s) = store();
        let (v1, u1) = s
            .append(MB, "INBOX", b"a\r\n", &["\\Seen".into()], Some(1000))
            .expect("append");
        let (_, u2) = s.append(MB, "inbox", b"bb\r\n", &[], None).expect("append");
        assert_eq!((u1, u2), (1, 2));
        assert_eq!(v1, s.folder_get(MB, "INBOX").expect("f").uidvalidity);
        assert_eq!(s.mailbox_usage(MB).expect("usage"), 7);

        let changed = s
            .set_flags(MB, "INBOX", &[1, 2, 99], FlagOp::Add, &["\\deleted".into()])
            .expect("flags");
        assert_eq!(changed.len(), 2);
        let again = s
            .set_flags(MB, "INBOX", &[1], FlagOp::Add, &["\\Deleted".into()])
            .expect("flags");
        assert!(again.is_empty(), "flags compare case-insensitively");

        let (_, pairs) = s
            .copy_messages(MB, "INBOX", &[1, 2], "Trash", false)
            .expect("copy");
        assert_eq!(pairs, vec![(1, 1), (2, 2)]);
        assert_eq!(s.mailbox_usage(MB).expect("usage"), 14);
        assert_eq!(
            s.expunge(MB, "INBOX", Some(&[2])).expect("expunge"),
            vec![2]
        );
        assert_eq!(s.expunge(MB, "INBOX", None).expect("expunge"), vec![1]);
        assert_eq!(s.mailbox_usage(MB).expect("usage"), 7);
        // The bodies are still there for the copies in Trash.
        let trash = s.folder_snapshot(MB, "Trash").expect("snapshot");
        assert_eq!(s.read_blob(trash.messages[0].blob).expect("blob"), b"a\r\n");

        let (_, moved) = s
            .copy_messages(MB, "Trash", &[2], "Junk", true)
            .expect("move");
        assert_eq!(moved, vec![(2, 1)]);
        assert_eq!(s.folder_snapshot(MB, "Trash").expect("t").messages.len(), 1);
        assert_eq!(s.mailbox_usage(MB).expect("usage"), 7);
        // UIDs never go back, even after expunge.
        let (_, u3) = s.append(MB, "INBOX", b"c\r\n", &[], None).expect("append");
        assert_eq!(u3, 3);
    }

    #[test]
    fn folders_create_rename_delete_with_the_inbox_rule() {
        let (_d, s) = store();
        s.folder_create(MB, "Work").expect("create");
        s.folder_create(MB, "Work/2026").expect("create child");
        assert!(s.folder_create(MB, "work/../x").is_ok());
        assert!(matches!(
            s.folder_create(MB, "Work"),
            Err(StoreError::Duplicate { .. })
        ));
        assert!(matches!(
            s.folder_create(MB, "bad//name"),
            Err(StoreError::Invalid { .. })
        ));
        assert!(matches!(
            s.folder_delete(MB, "Work"),
            Err(StoreError::InUse { .. })
        ));
        s.folder_rename(MB, "Work", "Jobs").expect("rename");
        // A child's new name that exists already refuses the whole rename.
        s.folder_create(MB, "Jobs2/2026").expect("create");
        assert!(matches!(
            s.folder_rename(MB, "Jobs", "Jobs2"),
            Err(StoreError::Duplicate { .. })
        ));
        assert!(s.folder_get(MB, "Jobs/2026").is_ok());
        assert!(s.folder_get(MB, "Work/2026").is_err());

        s.append(MB, "INBOX", b"x\r\n", &[], None).expect("append");
        s.folder_rename(MB, "INBOX", "Old").expect("rename inbox");
        assert_eq!(s.folder_snapshot(MB, "Old").expect("old").messages.len(), 1);
        assert!(
            s.folder_snapshot(MB, "INBOX")
                .expect("inbox")
                .messages
                .is_empty()
        );
        assert!(matches!(
            s.folder_delete(MB, "INBOX"),
            Err(StoreError::Invalid { .. })
        ));
        s.folder_delete(MB, "Old").expect("delete");
        assert_eq!(s.mailbox_usage(MB).expect("usage"), 0);
    }

    #[test]
    fn quota_refuses_append_and_copy_beyond_it() {
        let (_d, s) = store();
        s.mailbox_set_quota(MB, Some(10)).expect("quota");
        s.append(MB, "INBOX", b"12345678", &[], None).expect("fits");
        match s.append(MB, "INBOX", b"12345", &[], None) {
            Err(StoreError::OverQuota {
                larger_than_quota, ..
            }) => assert!(!larger_than_quota),
            other => panic!("{other:?}"),
        }
        match s.append(MB, "INBOX", &[b'x'; 11], &[], None) {
            Err(StoreError::OverQuota {
                larger_than_quota, ..
            }) => assert!(larger_than_quota),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.copy_messages(MB, "INBOX", &[1], "Trash", false),
            Err(StoreError::OverQuota { .. })
        ));
        // A move does not add usage.
        s.copy_messages(MB, "INBOX", &[1], "Trash", true)
            .expect("move fits");
    }

    #[test]
    fn delivery_notifies_and_bumps_modseq() {
        let (_d, s) = store();
        let mut rx = s.subscribe_changes();
        let before = s.folder_get(MB, "INBOX").expect("f").highestmodseq;
        let d = crate::Delivery {
            mail_from: "a@b.example".into(),
            local: vec![MB.into()],
            remote: vec![],
            body: b"hi\r\n".to_vec(),
            copies: vec![],
        };
        // Only the delivery runs in the runtime: the test's own store calls
        // stay on this thread, outside it (the check refuses them inside).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            s.deliver(d, s.next_id()).await.expect("deliver");
            assert_eq!(&*rx.recv().await.expect("notice"), MB);
        });
        let snap = s.folder_snapshot(MB, "INBOX").expect("snap");
        assert!(snap.folder.highestmodseq > before);
        assert_eq!(snap.messages[0].modseq, snap.folder.highestmodseq);
        assert_eq!(s.mailbox_usage(MB).expect("usage"), 4);
    }
}
