//! The on-disk format: every redb table, every record type, the schema version.
//!
//! This is the only place that declares tables, so the whole format can be
//! read here. Records are `serde_json` bytes: readable with any redb dump
//! tool, and tolerant of added optional fields.
//!
//! Bump [`SCHEMA_VERSION`] on any change an older binary would misread; an
//! older binary then refuses the folder ([`StoreError::Schema`]) instead of
//! damaging it. The `meta` table and its `schema_version` key must never
//! change type, or that refusal could not be made.

use redb::{Database, ReadableDatabase, TableDefinition, TableError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Id, StoreError};

/// The format this binary reads and writes.
///
/// 2: subscriptions in their own table (`subscriptions.rs`), no longer a
/// flag in the folder record, and each folder's recent high-water UID
/// (`Folder::first_recent_uid`). A version 1 store is upgraded when it is
/// opened (`subscriptions::upgrade_v1_folders`, journaled) or reconstructed.
pub const SCHEMA_VERSION: u32 = 2;
/// The oldest format this binary upgrades.
pub(crate) const SCHEMA_VERSION_OLDEST: u32 = 1;

/// `meta`: format facts. Key [`SCHEMA_VERSION_KEY`] holds the schema version.
pub(crate) const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
pub(crate) const SCHEMA_VERSION_KEY: &str = "schema_version";

/// `accounts`: account name -> [`Account`].
pub(crate) const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
/// `domains`: domain -> [`Domain`].
pub(crate) const DOMAINS: TableDefinition<&str, &[u8]> = TableDefinition::new("domains");
/// `mailboxes`: address -> [`Mailbox`].
pub(crate) const MAILBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("mailboxes");
/// `aliases`: address -> [`Alias`].
pub(crate) const ALIASES: TableDefinition<&str, &[u8]> = TableDefinition::new("aliases");
/// `folders`: (mailbox address, folder name) -> [`Folder`].
pub(crate) const FOLDERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("folders");
/// `messages`: (folder id, uid) -> [`MessageMeta`].
pub(crate) const MESSAGES: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("messages");
/// `blobs`: blob id -> reference count (messages + queue entries using it).
pub(crate) const BLOBS: TableDefinition<u64, u64> = TableDefinition::new("blobs");
/// `queue`: queue id -> [`QueueEntry`].
pub(crate) const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("queue");
/// `usage`: mailbox address -> bytes stored over all its folders (quota).
pub(crate) const USAGE: TableDefinition<&str, u64> = TableDefinition::new("usage");
/// `counters`: name -> value, see the `*_COUNTER` keys.
pub(crate) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

/// Counter: the last folder id handed out.
pub(crate) const FOLDER_ID_COUNTER: &str = "last_folder_id";
/// Counter: the last UIDVALIDITY handed out (so a mailbox removed and added
/// again within one second still gets a new UIDVALIDITY).
pub(crate) const UIDVALIDITY_COUNTER: &str = "last_uidvalidity";

/// The name of the folder deliveries go to.
pub const INBOX: &str = "INBOX";

/// The special-use role (RFC 6154) that a folder of this name gets when it
/// is created (again) and no other folder of the mailbox has the role: the
/// names the defaults below use, and Archive.
pub(crate) const SPECIAL_USE_NAMES: [(&str, &str); 5] = [
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
];

/// The folders every new mailbox gets: (name, RFC 6154 special use).
pub(crate) const DEFAULT_FOLDERS: [(&str, Option<&str>); 5] = [
    (INBOX, None),
    ("Sent", Some("\\Sent")),
    ("Drafts", Some("\\Drafts")),
    ("Trash", Some("\\Trash")),
    ("Junk", Some("\\Junk")),
];

/// A customer of the hosting provider; owns domains.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Account {
    pub name: String,
    /// Unix seconds.
    pub created: i64,
    /// Password for LDAP binds as the account (writes the account book).
    #[serde(default)]
    pub ldap_password_hash: Option<String>,
}

/// A hosted domain and the account that owns it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Domain {
    pub name: String,
    pub account: String,
}

/// A mailbox: an address that stores mail and can log in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Mailbox {
    pub address: String,
    /// The account owning the mailbox's domain (when it was created).
    pub account: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// May manage the account (account address book, other mailboxes).
    pub full_management: bool,
    /// Separate password for LDAP binds, when set in the Manager.
    pub ldap_password_hash: Option<String>,
    pub quota_bytes: Option<u64>,
    /// Unix seconds.
    pub created: i64,
}

/// An address in a hosted domain that forwards to other addresses
/// (mailboxes, other aliases, or external addresses).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Alias {
    pub address: String,
    pub targets: Vec<String>,
}

/// An IMAP folder of a mailbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Folder {
    /// Unique over the store; key prefix of the folder's messages.
    pub id: u64,
    pub mailbox: String,
    pub name: String,
    pub uidvalidity: u32,
    pub uidnext: u32,
    /// RFC 6154 attribute such as `"\\Sent"`.
    pub special_use: Option<String>,
    /// Bumped by every change in the folder (RFC 7162 HIGHESTMODSEQ); a
    /// session compares it to know whether to look for changes.
    #[serde(default)]
    pub highestmodseq: u64,
    /// The recent high-water UID (RFC 3501 2.3.2, as Dovecot keeps it):
    /// messages with this UID or above are \Recent for the next session
    /// that SELECTs the folder, which moves it to UIDNEXT.
    #[serde(default)]
    pub first_recent_uid: u32,
}

/// One message in a folder. The body is the blob `blob` (shared between the
/// copies of one delivery).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MessageMeta {
    pub uid: u32,
    pub blob: Id,
    pub size: u64,
    /// Unix seconds.
    pub internal_date: i64,
    pub flags: Vec<String>,
    /// The folder's modseq when this message last changed.
    #[serde(default)]
    pub modseq: u64,
}

/// A message waiting to leave for external recipients.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueueEntry {
    pub id: Id,
    pub mail_from: String,
    pub recipients: Vec<String>,
    pub blob: Id,
    pub size: u64,
    /// Unix seconds.
    pub created: i64,
    pub attempts: u32,
    /// Unix seconds.
    pub next_attempt: i64,
    pub last_error: Option<String>,
    pub held: bool,
    /// Which path the copy leaves by: "outbound" (customers' own mail),
    /// "forward" (forwarded copies, their own source address and EHLO, as
    /// the seed's forwarding-only servers) or "bounce" (DSNs).
    #[serde(default = "default_transport")]
    pub transport: String,
    /// Header lines sent before the stored body (the forward trace header),
    /// so one body file serves every copy.
    #[serde(default)]
    pub prepend: String,
    /// Why the entry is held when something other than an operator held it:
    /// the forward gate keeps the copies it discards here instead of
    /// dropping them ("spam gate: score 7.2 at or over 5.0 for
    /// hotmail.com"). None for an operator's hold and a reconstruct's.
    #[serde(default)]
    pub hold_reason: Option<String>,
    /// Unix seconds at which a held entry is removed (the gate's copies:
    /// `forward.discard_keep_days` after delivery); None: kept until an
    /// operator releases or deletes it.
    #[serde(default)]
    pub expires: Option<i64>,
    /// The local mailbox whose forwarding rule made this copy (None for an
    /// alias's outside target), so a user's held copies can be listed.
    #[serde(default)]
    pub origin_mailbox: Option<String>,
}

impl QueueEntry {
    /// Held by the forward gate (a reason and an expiry), as opposed to an
    /// operator's or a reconstruct's hold.
    pub fn gate_held(&self) -> bool {
        self.held && self.hold_reason.is_some() && self.expires.is_some()
    }
}

fn default_transport() -> String {
    "outbound".into()
}

/// Serialises a record.
pub(crate) fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record).map_err(|e| StoreError::Db(format!("cannot encode record: {e}")))
}

/// Deserialises a record; a record that does not decode is a database fault.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Db(format!("corrupt {what} record: {e}")))
}

/// Checks the schema version of `db` and creates every table (and the
/// version) if missing. Refuses a folder written by a newer binary before
/// touching anything else in it. Returns the version found (this binary's
/// for a new database): below [`SCHEMA_VERSION`], the caller upgrades.
pub(crate) fn prepare(db: &Database) -> Result<u32, StoreError> {
    let found = {
        let txn = db.begin_read()?;
        match txn.open_table(META) {
            Ok(meta) => meta.get(SCHEMA_VERSION_KEY)?.map(|v| v.value()),
            Err(TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        }
    };
    if let Some(found) = found
        && !(SCHEMA_VERSION_OLDEST..=SCHEMA_VERSION).contains(&found)
    {
        return Err(StoreError::Schema {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    {
        let mut meta = txn.open_table(META)?;
        if found.is_none() {
            meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)?;
        }
        // Opening a table in a write transaction creates it.
        txn.open_table(ACCOUNTS)?;
        txn.open_table(DOMAINS)?;
        txn.open_table(MAILBOXES)?;
        txn.open_table(ALIASES)?;
        txn.open_table(FOLDERS)?;
        txn.open_table(crate::subscriptions::SUBSCRIPTIONS)?;
        txn.open_table(MESSAGES)?;
        txn.open_table(BLOBS)?;
        txn.open_table(QUEUE)?;
        txn.open_table(COUNTERS)?;
        txn.open_table(USAGE)?;
        crate::Store::create_relay_tables(&txn)?;
    }
    txn.commit()?;
    Ok(found.unwrap_or(SCHEMA_VERSION))
}
