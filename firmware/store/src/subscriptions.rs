//! IMAP subscriptions: the names a mailbox's user subscribed to, kept apart
//! from the folders (table `subscriptions`, journaled), because a
//! subscription outlives its folder: "the subscription is not removed" when
//! the folder is deleted (RFC 3501 6.3.6), and LSUB still shows the name
//! (6.3.9); LIST (SUBSCRIBED) marks it `\NonExistent` (RFC 5258 3.4).
//!
//! Schema version 1 kept a `subscribed` flag in each folder record;
//! [`upgrade_v1_folders`] moves it here (and gives each folder its recent
//! high-water UID) when a version 1 store is opened or reconstructed.

use redb::{ReadableTable, TableDefinition};

use crate::journal::JTxn;
use crate::names::normalize_address;
use crate::schema::{self, FOLDERS, Folder, MAILBOXES};
use crate::{Store, StoreError};

/// `subscriptions`: (mailbox address, folder name) -> nothing.
pub(crate) const SUBSCRIPTIONS: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("subscriptions");

/// Most subscribed names one mailbox may have: every folder it may hold
/// (`FOLDERS_PER_MAILBOX_MAX`) and as many names whose folder is gone.
pub const SUBSCRIPTIONS_PER_MAILBOX_MAX: usize = 2_000;

/// A folder record as schema version 1 wrote it: the folder, and whether
/// it was subscribed.
#[derive(serde::Deserialize)]
struct V1Folder {
    #[serde(flatten)]
    folder: Folder,
    #[serde(default)]
    subscribed: Option<bool>,
}

/// The folder rows of a version 1 store that need rewriting: each folder
/// without its `subscribed` flag and with its recent high-water UID set to
/// UIDNEXT (what was there before the upgrade is not new), and whether it
/// was subscribed. A row already in the version 2 form is left alone, so
/// running this twice changes nothing.
pub(crate) fn v1_rows(
    folders: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
) -> Result<Vec<(Folder, bool)>, StoreError> {
    let mut out = Vec::new();
    for item in folders.iter()? {
        let (_, v) = item?;
        let old: V1Folder = schema::decode(v.value(), "folder")?;
        if let Some(subscribed) = old.subscribed {
            let mut folder = old.folder;
            folder.first_recent_uid = folder.uidnext;
            out.push((folder, subscribed));
        }
    }
    Ok(out)
}

/// Upgrades a version 1 store's folders inside a journaled transaction (so
/// the journal and the snapshot hold the version 2 rows). Returns how many
/// folder rows it rewrote.
pub(crate) fn upgrade_v1_folders(txn: &JTxn<'_>) -> Result<usize, StoreError> {
    let mut folders = txn.open_table(FOLDERS)?;
    let rows = v1_rows(&*folders)?;
    let mut subs = txn.open_table(SUBSCRIPTIONS)?;
    for (f, subscribed) in &rows {
        folders.insert(
            (f.mailbox.as_str(), f.name.as_str()),
            schema::encode(f)?.as_slice(),
        )?;
        if *subscribed {
            subs.insert((f.mailbox.as_str(), f.name.as_str()), ())?;
        }
    }
    Ok(rows.len())
}

/// The same upgrade on a plain transaction: reconstruct's new database,
/// which the snapshot taken after it records whole.
pub(crate) fn upgrade_v1_folders_plain(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut folders = txn.open_table(FOLDERS)?;
    let rows = v1_rows(&folders)?;
    let mut subs = txn.open_table(SUBSCRIPTIONS)?;
    for (f, subscribed) in &rows {
        folders.insert(
            (f.mailbox.as_str(), f.name.as_str()),
            schema::encode(f)?.as_slice(),
        )?;
        if *subscribed {
            subs.insert((f.mailbox.as_str(), f.name.as_str()), ())?;
        }
    }
    Ok(())
}

/// The subscribed names of a mailbox, from a table.
fn names_of(
    subs: &impl ReadableTable<(&'static str, &'static str), ()>,
    mailbox: &str,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for item in subs.range((mailbox, "")..)? {
        let (k, _) = item?;
        let (m, name) = k.value();
        if m != mailbox {
            break;
        }
        out.push(name.to_string());
    }
    Ok(out)
}

/// Removes every subscription of `mailbox` (the mailbox is being removed).
pub(crate) fn remove_all(txn: &JTxn<'_>, mailbox: &str) -> Result<(), StoreError> {
    let mut subs = txn.open_table(SUBSCRIPTIONS)?;
    for name in names_of(&*subs, mailbox)? {
        subs.remove((mailbox, name.as_str()))?;
    }
    Ok(())
}

/// Moves the subscriptions of renamed folders to their new names (a folder
/// renamed keeps its subscription, as its children do).
pub(crate) fn rename(
    txn: &JTxn<'_>,
    mailbox: &str,
    renames: &[(String, String)],
) -> Result<(), StoreError> {
    let mut subs = txn.open_table(SUBSCRIPTIONS)?;
    for (old, new) in renames {
        if subs.remove((mailbox, old.as_str()))?.is_some() {
            subs.insert((mailbox, new.as_str()), ())?;
        }
    }
    Ok(())
}

/// Subscribes the default folders of a new mailbox.
pub(crate) fn subscribe_defaults(
    txn: &JTxn<'_>,
    mailbox: &str,
    names: &[&str],
) -> Result<(), StoreError> {
    let mut subs = txn.open_table(SUBSCRIPTIONS)?;
    for name in names {
        subs.insert((mailbox, *name), ())?;
    }
    Ok(())
}

impl Store {
    /// Adds (`on`) or removes a name from the mailbox's subscriptions. A
    /// name needs no folder to be subscribed or stay subscribed (RFC 3501
    /// 6.3.6: the server "MUST NOT unilaterally remove an existing mailbox
    /// name from the subscription list"); removing a name that is not
    /// subscribed is [`StoreError::NotFound`].
    pub fn folder_subscribe(&self, mailbox: &str, name: &str, on: bool) -> Result<(), StoreError> {
        let mailbox = normalize_address(mailbox)?;
        let name = crate::mailstore::canonical_folder(name)?;
        let txn = self.jtxn()?;
        {
            if txn.open_table(MAILBOXES)?.get(mailbox.as_str())?.is_none() {
                return Err(StoreError::NotFound {
                    kind: "mailbox",
                    name: mailbox,
                });
            }
            let mut subs = txn.open_table(SUBSCRIPTIONS)?;
            let key = (mailbox.as_str(), name.as_str());
            if on {
                if subs.get(key)?.is_none()
                    && names_of(&*subs, &mailbox)?.len() >= SUBSCRIPTIONS_PER_MAILBOX_MAX
                {
                    return Err(StoreError::Invalid {
                        what: "subscription",
                        why: format!(
                            "a mailbox holds at most {SUBSCRIPTIONS_PER_MAILBOX_MAX} subscriptions"
                        ),
                    });
                }
                subs.insert(key, ())?;
            } else if subs.remove(key)?.is_none() {
                return Err(StoreError::NotFound {
                    kind: "subscription",
                    name: format!("{mailbox}/{name}"),
                });
            }
        }
        txn.commit()?;
        // IMAP NOTIFY reports subscription changes (RFC 5465 5.5).
        self.notify_change(&mailbox);
        Ok(())
    }

    /// The mailbox's subscribed names, sorted; some may name no folder.
    pub fn subscriptions(&self, mailbox: &str) -> Result<Vec<String>, StoreError> {
        let mailbox = normalize_address(mailbox)?;
        let txn = self.read_txn()?;
        names_of(&txn.open_table(SUBSCRIPTIONS)?, &mailbox)
    }
}
