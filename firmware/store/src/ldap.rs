//! LDAP address books and LDAP passwords (issue 4).
//!
//! A *book* is named by its owner: a mailbox address (the mailbox's personal
//! book) or an account name (the account book). The two never collide: an
//! address always has an `@`, an account name never does. An entry is keyed
//! inside its book by a normalised RDN that the LDAP service computes (the
//! store does not interpret it); the record keeps the RDN as the client wrote
//! it and the attributes with their values byte for byte.
//!
//! Every change is one durable redb write transaction (invariant 1: the LDAP
//! service answers success only after it returned). Each change also gives
//! its book a new *generation* (from a store-wide counter, so it never
//! repeats, even after a book is removed and made again): the LDAP service
//! caches decoded books and reloads one only when its generation moved.
//!
//! Size. A book's *bytes* are the sum over its entries of the stored record
//! (the JSON bytes) plus its key, kept in its `ldap_books` record beside the
//! entry count and changed in the same transaction as the entry, so the
//! figure is journaled with it and `mxrack reconstruct` brings it back. A
//! write that makes a book larger is checked, inside its transaction, against
//! [`BookLimits::max_bytes`] (`ldap.max_book_bytes`, every book) and, for a
//! mailbox's personal book, against the mailbox's quota, which counts mail
//! and contacts together (issue 10: a 1 MiB mailbox stored 100 MB of photos
//! when contacts were outside it). A write that shrinks or keeps the size is
//! never refused, so an owner over a lowered limit can always clean up.
//!
//! LDAP passwords are separate from mail passwords (as in the seed): a
//! mailbox's is `Mailbox::ldap_password_hash`, an account's is
//! `Account::ldap_password_hash`, both Argon2id like the mail passwords.
//!
//! The two tables are declared here and created on first write; reads treat
//! a missing table as empty, so a store made before this module works as is.

use redb::{ReadTransaction, ReadableTable, TableDefinition, TableError};
use serde::de::Deserializer;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::ids::now_secs;
use crate::journal::JTxn;
use crate::names::{normalize_account, normalize_address};
use crate::schema::{self, ACCOUNTS, Account, COUNTERS, MAILBOXES, Mailbox, USAGE};
use crate::{Store, StoreError, password};

/// `ldap_entries`: (book, entry key) -> [`LdapEntry`].
pub(crate) const LDAP_ENTRIES: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("ldap_entries");
/// `ldap_books`: book -> [`LdapBookMeta`].
pub(crate) const LDAP_BOOKS: TableDefinition<&str, &[u8]> = TableDefinition::new("ldap_books");
/// `ldap_tombstones`: (book, generation of the deletion) -> [`Tombstone`]:
/// what CardDAV's sync-collection (RFC 6578) reports as gone since a token.
pub(crate) const LDAP_TOMBSTONES: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("ldap_tombstones");
/// Deletion records kept per book; past it the oldest go and a sync token
/// older than them is no longer valid (the client syncs from scratch).
pub const TOMBSTONES_PER_BOOK_MAX: u64 = 10_000;
/// Counter: the last book generation handed out.
pub(crate) const LDAP_GENERATION_COUNTER: &str = "last_ldap_generation";

/// One address-book entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LdapEntry {
    /// The RDN as the client wrote it, e.g. `cn=Jo Smith`.
    pub rdn: String,
    pub attributes: Vec<LdapAttribute>,
    /// Unix seconds.
    #[serde(default)]
    pub created: i64,
    /// Unix seconds.
    #[serde(default)]
    pub modified: i64,
    /// The book generation of the entry's last write (0: written before
    /// entries carried one): CardDAV's ETag and what sync-collection
    /// compares with a token.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    /// The vCard as a CardDAV client last sent it (issue 18), kept beside
    /// the LDAP attributes it maps to, so what only a vCard can say (a
    /// photo, custom fields, parameters) is served back as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcard: Option<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// What is left of a deleted (or renamed) entry: enough for CardDAV to name
/// the resource that went away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The entry's key and RDN when it went.
    pub key: String,
    pub rdn: String,
}

/// What changed in a book since a generation, read in one transaction.
#[derive(Debug, Clone, Default)]
pub struct BookChanges {
    /// The book's generation now (the next sync token).
    pub generation: u64,
    /// Deletions older than this are forgotten: a token below it is stale.
    pub floor: u64,
    /// Entries written after `since` (every entry when `since` is 0).
    pub changed: Vec<(String, LdapEntry)>,
    /// Entries deleted after `since` (not when `since` is 0).
    pub deleted: Vec<Tombstone>,
}

/// An attribute with its name as the client first wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LdapAttribute {
    pub name: String,
    pub values: Vec<LdapValue>,
}

/// A value, byte for byte. Stored as a JSON string when it is UTF-8 and as
/// `{"b64": "..."}` otherwise (a photo), so records stay readable and small.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LdapValue(pub Vec<u8>);

impl Serialize for LdapValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                use base64::Engine;
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry(
                    "b64",
                    &base64::engine::general_purpose::STANDARD.encode(&self.0),
                )?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for LdapValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Binary { b64: String },
        }
        match Repr::deserialize(d)? {
            Repr::Text(t) => Ok(LdapValue(t.into_bytes())),
            Repr::Binary { b64 } => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map(LdapValue)
                    .map_err(serde::de::Error::custom)
            }
        }
    }
}

/// What the store keeps about a book besides its entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LdapBookMeta {
    /// Changes with every write to the book; 0 for a book never written.
    pub generation: u64,
    pub entries: u64,
    /// The book's stored size ([`entry_cost`] summed over its entries).
    /// `None` in a record written before books were counted: filled in at
    /// open ([`count_uncounted_books`]) and, failing that, counted from the
    /// entries by the next write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Deletion records kept in `ldap_tombstones` for this book.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tombstones: u64,
    /// The generation of the newest deletion record dropped (oldest first,
    /// past [`TOMBSTONES_PER_BOOK_MAX`]): sync tokens below it are stale.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sync_floor: u64,
}

/// What bounds every book besides its owner's quota: `ldap.max_entries_per_book`
/// and `ldap.max_book_bytes`. An account's book has no mailbox quota, so
/// these two are its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookLimits {
    pub max_entries: usize,
    pub max_bytes: u64,
}

impl BookLimits {
    /// No bound but the store's own (tests and tools).
    pub const UNLIMITED: BookLimits = BookLimits {
        max_entries: usize::MAX,
        max_bytes: u64::MAX,
    };
}

/// The bytes an entry counts for: its record as stored plus its key.
pub(crate) fn entry_cost(key: &str, record: &[u8]) -> u64 {
    (key.len() + record.len()) as u64
}

/// A book's stored size summed from its entries (one range scan: values are
/// read, not decoded).
pub(crate) fn sum_book_bytes(
    entries: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    book: &str,
) -> Result<u64, StoreError> {
    let mut total = 0u64;
    for item in entries.range((book, "")..)? {
        let (k, v) = item?;
        let (b, key) = k.value();
        if b != book {
            break;
        }
        total = total.saturating_add(entry_cost(key, v.value()));
    }
    Ok(total)
}

/// The size of `book` read in `txn` (counted from its entries if its record
/// has none yet).
pub(crate) fn book_bytes_read(txn: &ReadTransaction, book: &str) -> Result<u64, StoreError> {
    let Some(books) = open_read(txn, LDAP_BOOKS)? else {
        return Ok(0);
    };
    match read_meta(&books, book)?.bytes {
        Some(b) => Ok(b),
        None => match open_read(txn, LDAP_ENTRIES)? {
            Some(entries) => sum_book_bytes(&entries, book),
            None => Ok(0),
        },
    }
}

/// What `mxrack verify` finds wrong with the books' records: a count or a
/// size that is not what the entries add up to.
pub(crate) fn check_books(txn: &ReadTransaction) -> Result<Vec<String>, StoreError> {
    let mut problems = Vec::new();
    let (Some(books), Some(entries)) = (open_read(txn, LDAP_BOOKS)?, open_read(txn, LDAP_ENTRIES)?)
    else {
        return Ok(problems);
    };
    for item in books.iter()? {
        let (k, v) = item?;
        let book = k.value();
        let meta: LdapBookMeta = schema::decode(v.value(), "address book")?;
        let mut count = 0u64;
        for item in entries.range((book, "")..)? {
            if item?.0.value().0 != book {
                break;
            }
            count += 1;
        }
        if count != meta.entries {
            problems.push(format!(
                "address book {book}: counts {} entries, holds {count}",
                meta.entries
            ));
        }
        let bytes = sum_book_bytes(&entries, book)?;
        if let Some(kept) = meta.bytes
            && kept != bytes
        {
            problems.push(format!(
                "address book {book}: size {kept} but its entries hold {bytes} bytes"
            ));
        }
    }
    Ok(problems)
}

/// The bytes of the personal book of `mailbox` as its `ldap_books` record
/// says (0 when it has none): what mail deliveries and APPEND add to the
/// mailbox's usage before comparing with its quota.
pub(crate) fn contacts_bytes(
    books: &impl ReadableTable<&'static str, &'static [u8]>,
    mailbox: &str,
) -> Result<u64, StoreError> {
    Ok(read_meta(books, mailbox)?.bytes.unwrap_or(0))
}

/// A whole book read in one transaction.
#[derive(Debug, Clone, Default)]
pub struct LdapBookSnapshot {
    pub generation: u64,
    /// (entry key, entry), in key order.
    pub entries: Vec<(String, LdapEntry)>,
}

/// Who an LDAP bind name designates, with what the access rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LdapPrincipal {
    Mailbox {
        /// Normalised address; also the name of its personal book.
        address: String,
        /// The account it belongs to; also the name of the account book.
        account: String,
        full_management: bool,
    },
    Account {
        name: String,
    },
}

impl LdapPrincipal {
    /// The normalised name: the mailbox address or the account name.
    pub fn name(&self) -> &str {
        match self {
            LdapPrincipal::Mailbox { address, .. } => address,
            LdapPrincipal::Account { name } => name,
        }
    }
}

/// Which kind of record a bind name points at.
enum NameKind {
    Mailbox(String),
    Account(String),
}

fn name_kind(name: &str) -> Result<NameKind, StoreError> {
    if name.contains('@') {
        Ok(NameKind::Mailbox(normalize_address(name)?))
    } else {
        Ok(NameKind::Account(normalize_account(name)?))
    }
}

fn not_found(kind: &'static str, name: &str) -> StoreError {
    StoreError::NotFound {
        kind,
        name: name.to_string(),
    }
}

/// Opens a table for reading; `None` when it was never created.
fn open_read<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, StoreError> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn read_meta(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    book: &str,
) -> Result<LdapBookMeta, StoreError> {
    match table.get(book)? {
        Some(g) => schema::decode(g.value(), "address book"),
        None => Ok(LdapBookMeta::default()),
    }
}

/// The entries of `book` that `keep` accepts, in key order, read in `txn`.
fn book_entries(
    txn: &ReadTransaction,
    book: &str,
    keep: impl Fn(&LdapEntry) -> bool,
) -> Result<Vec<(String, LdapEntry)>, StoreError> {
    let mut out = Vec::new();
    if let Some(table) = open_read(txn, LDAP_ENTRIES)? {
        for item in table.range((book, "")..)? {
            let (k, v) = item?;
            let (b, key) = k.value();
            if b != book {
                break;
            }
            let entry: LdapEntry = schema::decode(v.value(), "address book entry")?;
            if keep(&entry) {
                out.push((key.to_string(), entry));
            }
        }
    }
    Ok(out)
}

/// Gives `book` a new generation, adds `entries_delta` to its count and
/// `bytes_delta` to its size. Called before the entry itself is written, so
/// a size still unknown (`None`) is counted from the entries as they were.
/// A change that makes the book larger is refused with
/// [`StoreError::AddressBookOverLimit`] (nothing written: the caller drops
/// the transaction) when it would pass `limits.max_bytes` or, for a
/// mailbox's book, the mailbox's quota with its mail.
/// The generation the next write will give its book (the write transaction
/// is the only writer, so it is the one [`charge_book`] then records).
fn next_generation(txn: &JTxn<'_>) -> Result<u64, StoreError> {
    let counters = txn.open_table(COUNTERS)?;
    let last = counters
        .get(LDAP_GENERATION_COUNTER)?
        .map_or(0, |g| g.value());
    Ok(last.saturating_add(1))
}

fn charge_book(
    txn: &JTxn<'_>,
    book: &str,
    entries_delta: i64,
    bytes_delta: i64,
    limits: &BookLimits,
) -> Result<u64, StoreError> {
    let mut books = txn.open_table(LDAP_BOOKS)?;
    let mut meta = read_meta(&*books, book)?;
    let before = match meta.bytes {
        Some(b) => b,
        None => sum_book_bytes(&*txn.open_table(LDAP_ENTRIES)?, book)?,
    };
    let after = before.saturating_add_signed(bytes_delta);
    if bytes_delta > 0 {
        let adds = bytes_delta.unsigned_abs();
        // The owner's quota first: it is the figure the user knows (IMAP
        // GETQUOTA shows the same sum).
        if book.contains('@')
            && let Some(g) = txn.open_table(MAILBOXES)?.get(book)?
        {
            let m: Mailbox = schema::decode(g.value(), "mailbox")?;
            if let Some(quota) = m.quota_bytes {
                let mail = txn.open_table(USAGE)?.get(book)?.map_or(0, |g| g.value());
                if mail.saturating_add(after) > quota {
                    return Err(StoreError::AddressBookOverLimit {
                        limit: "mailbox quota",
                        owner: book.to_string(),
                        allowed: quota,
                        mail,
                        contacts: before,
                        adds,
                    });
                }
            }
        }
        if after > limits.max_bytes {
            return Err(StoreError::AddressBookOverLimit {
                limit: "address book size limit (ldap.max_book_bytes)",
                owner: book.to_string(),
                allowed: limits.max_bytes,
                mail: 0,
                contacts: before,
                adds,
            });
        }
    }
    let mut counters = txn.open_table(COUNTERS)?;
    let last = counters
        .get(LDAP_GENERATION_COUNTER)?
        .map_or(0, |g| g.value());
    let generation = last.saturating_add(1);
    counters.insert(LDAP_GENERATION_COUNTER, generation)?;
    if meta.generation == 0 {
        // A new book (or one made again after its owner was removed): sync
        // tokens of an earlier book by this name are not valid for it.
        meta.sync_floor = generation;
    }
    meta.generation = generation;
    meta.entries = meta.entries.saturating_add_signed(entries_delta);
    meta.bytes = Some(after);
    books.insert(book, schema::encode(&meta)?.as_slice())?;
    Ok(generation)
}

/// Records that the entry `key` (`rdn`) left `book` at `generation`, and
/// drops the oldest records past [`TOMBSTONES_PER_BOOK_MAX`], raising the
/// book's sync floor. Tombstones are not counted in the book's size: they
/// are a few dozen bytes, bounded in number.
fn bury(
    txn: &JTxn<'_>,
    book: &str,
    key: &str,
    rdn: &str,
    generation: u64,
) -> Result<(), StoreError> {
    let stone = schema::encode(&Tombstone {
        key: key.to_string(),
        rdn: rdn.to_string(),
    })?;
    let mut stones = txn.open_table(LDAP_TOMBSTONES)?;
    stones.insert((book, generation), stone.as_slice())?;
    let mut books = txn.open_table(LDAP_BOOKS)?;
    let mut meta = read_meta(&*books, book)?;
    meta.tombstones = meta.tombstones.saturating_add(1);
    while meta.tombstones > TOMBSTONES_PER_BOOK_MAX {
        let oldest = match stones.range((book, 0)..=(book, u64::MAX))?.next() {
            Some(item) => item?.0.value().1,
            None => break,
        };
        stones.remove((book, oldest))?;
        meta.tombstones -= 1;
        meta.sync_floor = meta.sync_floor.max(oldest);
    }
    books.insert(book, schema::encode(&meta)?.as_slice())?;
    Ok(())
}

/// Counts the size of every book whose record has none (written by a
/// binary from before books were counted), in one journaled transaction.
/// At open: a store that has counted all its books reads `ldap_books` only.
pub(crate) fn count_uncounted_books(txn: &JTxn<'_>) -> Result<usize, StoreError> {
    let mut books = txn.open_table(LDAP_BOOKS)?;
    let mut uncounted = Vec::new();
    for item in books.iter()? {
        let (k, v) = item?;
        let meta: LdapBookMeta = schema::decode(v.value(), "address book")?;
        if meta.bytes.is_none() {
            uncounted.push((k.value().to_string(), meta));
        }
    }
    let entries = txn.open_table(LDAP_ENTRIES)?;
    for (book, meta) in &mut uncounted {
        meta.bytes = Some(sum_book_bytes(&*entries, book)?);
        books.insert(book.as_str(), schema::encode(&meta)?.as_slice())?;
    }
    Ok(uncounted.len())
}

/// Removes a book and its entries inside `txn` (a mailbox or an account
/// being removed takes its book with it, so a later namesake starts empty).
pub(crate) fn remove_book(txn: &JTxn<'_>, book: &str) -> Result<(), StoreError> {
    let mut entries = txn.open_table(LDAP_ENTRIES)?;
    let mut keys = Vec::new();
    for item in entries.range((book, "")..)? {
        let (k, _) = item?;
        let (b, key) = k.value();
        if b != book {
            break;
        }
        keys.push(key.to_string());
    }
    for key in &keys {
        entries.remove((book, key.as_str()))?;
    }
    let mut stones = txn.open_table(LDAP_TOMBSTONES)?;
    let mut buried = Vec::new();
    for item in stones.range((book, 0)..=(book, u64::MAX))? {
        buried.push(item?.0.value().1);
    }
    for generation in buried {
        stones.remove((book, generation))?;
    }
    txn.open_table(LDAP_BOOKS)?.remove(book)?;
    Ok(())
}

impl Store {
    /// The generation of `book` (0 when it was never written or was removed).
    pub fn ldap_book_generation(&self, book: &str) -> Result<u64, StoreError> {
        let txn = self.read_txn()?;
        match open_read(&txn, LDAP_BOOKS)? {
            Some(t) => Ok(read_meta(&t, book)?.generation),
            None => Ok(0),
        }
    }

    /// Every entry of `book` and its generation, read in one transaction.
    pub fn ldap_book_load(&self, book: &str) -> Result<LdapBookSnapshot, StoreError> {
        let txn = self.read_txn()?;
        let generation = match open_read(&txn, LDAP_BOOKS)? {
            Some(t) => read_meta(&t, book)?.generation,
            None => 0,
        };
        Ok(LdapBookSnapshot {
            generation,
            entries: book_entries(&txn, book, |_| true)?,
        })
    }

    /// One entry, if it exists.
    pub fn ldap_entry_get(&self, book: &str, key: &str) -> Result<Option<LdapEntry>, StoreError> {
        let txn = self.read_txn()?;
        let Some(table) = open_read(&txn, LDAP_ENTRIES)? else {
            return Ok(None);
        };
        let record = table.get((book, key))?;
        record
            .map(|g| schema::decode(g.value(), "address book entry"))
            .transpose()
    }

    /// The size of `book` in bytes ([`entry_cost`] summed), as its record
    /// keeps it (0 for a book never written).
    pub fn ldap_book_bytes(&self, book: &str) -> Result<u64, StoreError> {
        book_bytes_read(&self.read_txn()?, book)
    }

    /// Adds an entry. [`StoreError::Duplicate`] if the key is taken,
    /// [`StoreError::Invalid`] (what = "address book") when the book already
    /// holds `limits.max_entries`, [`StoreError::AddressBookOverLimit`] when
    /// it would take the book past `limits.max_bytes` or its mailbox past
    /// its quota.
    pub fn ldap_entry_add(
        &self,
        book: &str,
        key: &str,
        entry: &LdapEntry,
        limits: &BookLimits,
    ) -> Result<(), StoreError> {
        let max_entries = limits.max_entries;
        let mut entry = entry.clone();
        let now = now_secs();
        entry.created = now;
        entry.modified = now;
        let txn = self.jtxn()?;
        entry.generation = next_generation(&txn)?;
        let bytes = schema::encode(&entry)?;
        {
            let count = read_meta(&*txn.open_table(LDAP_BOOKS)?, book)?.entries;
            if count >= u64::try_from(max_entries).unwrap_or(u64::MAX) {
                return Err(StoreError::Invalid {
                    what: "address book",
                    why: format!("it is full ({max_entries} entries)"),
                });
            }
            if txn.open_table(LDAP_ENTRIES)?.get((book, key))?.is_some() {
                return Err(StoreError::Duplicate {
                    kind: "address book entry",
                    name: entry.rdn.clone(),
                });
            }
        }
        let cost = entry_cost(key, &bytes);
        charge_book(
            &txn,
            book,
            1,
            i64::try_from(cost).unwrap_or(i64::MAX),
            limits,
        )?;
        txn.open_table(LDAP_ENTRIES)?
            .insert((book, key), bytes.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Changes an entry in place with `change`, which sees the stored entry
    /// and may refuse (its error is returned and nothing is written).
    /// [`StoreError::NotFound`] when the entry does not exist; a change that
    /// makes the entry larger is checked as [`Store::ldap_entry_add`] checks
    /// an add.
    pub fn ldap_entry_update<E: From<StoreError>>(
        &self,
        book: &str,
        key: &str,
        limits: &BookLimits,
        change: impl FnOnce(&mut LdapEntry) -> Result<(), E>,
    ) -> Result<(), E> {
        self.ldap_entry_rename(book, key, key, limits, change)
    }

    /// Moves an entry to `new_key` in the same book (the same key: an update)
    /// and changes it with `change` in the same transaction.
    /// [`StoreError::Duplicate`] if `new_key` is another entry's. A move
    /// leaves a tombstone for the old key (CardDAV sees a delete and an add).
    pub fn ldap_entry_rename<E: From<StoreError>>(
        &self,
        book: &str,
        old_key: &str,
        new_key: &str,
        limits: &BookLimits,
        change: impl FnOnce(&mut LdapEntry) -> Result<(), E>,
    ) -> Result<(), E> {
        let txn = self.jtxn()?;
        let (old_cost, new_cost, bytes, old_rdn) = {
            let entries = txn.open_table(LDAP_ENTRIES)?;
            let (mut entry, old_cost): (LdapEntry, u64) =
                match entries.get((book, old_key)).map_err(StoreError::from)? {
                    Some(g) => (
                        schema::decode(g.value(), "address book entry")?,
                        entry_cost(old_key, g.value()),
                    ),
                    None => return Err(not_found("address book entry", old_key).into()),
                };
            if new_key != old_key
                && entries
                    .get((book, new_key))
                    .map_err(StoreError::from)?
                    .is_some()
            {
                return Err(StoreError::Duplicate {
                    kind: "address book entry",
                    name: new_key.to_string(),
                }
                .into());
            }
            let old_rdn = entry.rdn.clone();
            change(&mut entry)?;
            entry.modified = now_secs();
            entry.generation = next_generation(&txn)?;
            let bytes = schema::encode(&entry)?;
            (old_cost, entry_cost(new_key, &bytes), bytes, old_rdn)
        };
        let delta = i64::try_from(new_cost)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(old_cost).unwrap_or(i64::MAX));
        let generation = charge_book(&txn, book, 0, delta, limits)?;
        {
            let mut entries = txn.open_table(LDAP_ENTRIES)?;
            if new_key != old_key {
                entries.remove((book, old_key))?;
            }
            entries.insert((book, new_key), bytes.as_slice())?;
        }
        if new_key != old_key {
            bury(&txn, book, old_key, &old_rdn, generation)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Deletes an entry; [`StoreError::NotFound`] if it does not exist.
    pub fn ldap_entry_delete(&self, book: &str, key: &str) -> Result<(), StoreError> {
        let txn = self.jtxn()?;
        let (cost, rdn) = match txn.open_table(LDAP_ENTRIES)?.get((book, key))? {
            Some(g) => (
                entry_cost(key, g.value()),
                schema::decode::<LdapEntry>(g.value(), "address book entry")?.rdn,
            ),
            None => return Err(not_found("address book entry", key)),
        };
        let generation = charge_book(
            &txn,
            book,
            -1,
            -i64::try_from(cost).unwrap_or(i64::MAX),
            &BookLimits::UNLIMITED,
        )?;
        txn.open_table(LDAP_ENTRIES)?.remove((book, key))?;
        bury(&txn, book, key, &rdn, generation)?;
        txn.commit()?;
        Ok(())
    }

    /// What changed in `book` after generation `since` (0: everything), in
    /// one read transaction, for CardDAV's sync-collection.
    pub fn ldap_book_changes(&self, book: &str, since: u64) -> Result<BookChanges, StoreError> {
        let txn = self.read_txn()?;
        let meta = match open_read(&txn, LDAP_BOOKS)? {
            Some(t) => read_meta(&t, book)?,
            None => LdapBookMeta::default(),
        };
        let mut changes = BookChanges {
            generation: meta.generation,
            floor: meta.sync_floor,
            changed: book_entries(&txn, book, |e| since == 0 || e.generation > since)?,
            ..BookChanges::default()
        };
        if since > 0
            && let Some(table) = open_read(&txn, LDAP_TOMBSTONES)?
        {
            for item in table.range((book, since.saturating_add(1))..=(book, u64::MAX))? {
                let (_, v) = item?;
                changes
                    .deleted
                    .push(schema::decode(v.value(), "address book tombstone")?);
            }
        }
        Ok(changes)
    }

    /// The mailbox (a name with `@`) or account (without) named `name`,
    /// with what the LDAP access rules need; `None` if it does not exist or
    /// the name is malformed.
    pub fn ldap_principal(&self, name: &str) -> Result<Option<LdapPrincipal>, StoreError> {
        let Ok(kind) = name_kind(name) else {
            return Ok(None);
        };
        let txn = self.read_txn()?;
        Ok(match kind {
            NameKind::Mailbox(address) => {
                let table = txn.open_table(MAILBOXES)?;
                let record = table.get(address.as_str())?;
                match record {
                    Some(g) => {
                        let m: Mailbox = schema::decode(g.value(), "mailbox")?;
                        Some(LdapPrincipal::Mailbox {
                            address: m.address,
                            account: m.account,
                            full_management: m.full_management,
                        })
                    }
                    None => None,
                }
            }
            NameKind::Account(name) => {
                let table = txn.open_table(ACCOUNTS)?;
                let found = table.get(name.as_str())?.is_some();
                found.then_some(LdapPrincipal::Account { name })
            }
        })
    }

    /// Sets the LDAP password of a mailbox (a name with `@`) or an account.
    pub fn ldap_set_password(&self, name: &str, password: &str) -> Result<(), StoreError> {
        let kind = name_kind(name)?;
        // Hash before the transaction: it takes CPU time, and redb has one
        // writer at a time.
        let hash = password::hash(password)?;
        let txn = self.jtxn()?;
        let shown = match kind {
            NameKind::Mailbox(address) => {
                let mut table = txn.open_table(MAILBOXES)?;
                let mut m: Mailbox = match table.get(address.as_str())? {
                    Some(g) => schema::decode(g.value(), "mailbox")?,
                    None => return Err(not_found("mailbox", &address)),
                };
                m.ldap_password_hash = Some(hash);
                table.insert(address.as_str(), schema::encode(&m)?.as_slice())?;
                address
            }
            NameKind::Account(name) => {
                let mut table = txn.open_table(ACCOUNTS)?;
                let mut a: Account = match table.get(name.as_str())? {
                    Some(g) => schema::decode(g.value(), "account")?,
                    None => return Err(not_found("account", &name)),
                };
                a.ldap_password_hash = Some(hash);
                table.insert(name.as_str(), schema::encode(&a)?.as_slice())?;
                name
            }
        };
        txn.commit()?;
        tracing::info!(name = %shown, "LDAP password changed");
        Ok(())
    }

    /// Checks an LDAP password. `false` for an unknown name or one without
    /// an LDAP password, after the same hashing work, so the answer time
    /// does not tell which.
    ///
    /// CPU heavy (Argon2id): async callers run it in [`crate::spawn_blocking`].
    pub fn ldap_verify_password(&self, name: &str, password: &str) -> Result<bool, StoreError> {
        match self.ldap_password_hash(name)? {
            Some(hash) => Ok(password::verify(password, &hash)),
            None => {
                password::verify_dummy(password);
                Ok(false)
            }
        }
    }

    /// The stored LDAP password hash (PHC string) of a mailbox or account;
    /// `None` when the name is unknown or has no LDAP password. It changes
    /// with every password change (fresh salt), so a cache keyed on it can
    /// never accept an old password.
    pub fn ldap_password_hash(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(match name_kind(name) {
            Err(_) => None,
            Ok(kind) => {
                let txn = self.read_txn()?;
                match kind {
                    NameKind::Mailbox(address) => {
                        let table = txn.open_table(MAILBOXES)?;
                        let record = table.get(address.as_str())?;
                        match record {
                            Some(g) => {
                                schema::decode::<Mailbox>(g.value(), "mailbox")?.ldap_password_hash
                            }
                            None => None,
                        }
                    }
                    NameKind::Account(name) => {
                        let table = txn.open_table(ACCOUNTS)?;
                        let record = table.get(name.as_str())?;
                        match record {
                            Some(g) => {
                                schema::decode::<Account>(g.value(), "account")?.ldap_password_hash
                            }
                            None => None,
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const MB: &str = "jo@example.net";
    const LIMITS: BookLimits = BookLimits {
        max_entries: 1000,
        max_bytes: 1 << 30,
    };

    fn store() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        s.account_add("acme").expect("account");
        s.domain_add("example.net", "acme").expect("domain");
        s.mailbox_add(MB, "pw", false).expect("mailbox");
        (dir, s)
    }

    /// A contact with a `photo_bytes` long binary jpegPhoto.
    fn contact(cn: &str, photo_bytes: usize) -> LdapEntry {
        let mut photo = vec![0xffu8, 0xd8, 0xff];
        photo.resize(photo_bytes.max(3), 0x80);
        LdapEntry {
            rdn: format!("cn={cn}"),
            attributes: vec![
                LdapAttribute {
                    name: "cn".into(),
                    values: vec![LdapValue(cn.as_bytes().to_vec())],
                },
                LdapAttribute {
                    name: "jpegPhoto".into(),
                    values: vec![LdapValue(photo)],
                },
            ],
            created: 0,
            modified: 0,
            generation: 0,
            vcard: None,
        }
    }

    fn key(cn: &str) -> String {
        format!("cn={}", cn.to_lowercase())
    }

    fn add(s: &Store, book: &str, cn: &str, photo: usize) -> Result<(), StoreError> {
        s.ldap_entry_add(book, &key(cn), &contact(cn, photo), &LIMITS)
    }

    /// The size the book's record keeps, checked against its entries.
    fn book_bytes(s: &Store, book: &str) -> u64 {
        let kept = s.ldap_book_bytes(book).expect("bytes");
        let txn = s.read_txn().expect("txn");
        let summed =
            sum_book_bytes(&txn.open_table(LDAP_ENTRIES).expect("table"), book).expect("sum");
        assert_eq!(kept, summed, "the kept size is what the entries hold");
        kept
    }

    fn over_limit(r: Result<(), StoreError>) -> StoreError {
        match r {
            Err(e @ StoreError::AddressBookOverLimit { .. }) => e,
            other => panic!("expected AddressBookOverLimit, got {other:?}"),
        }
    }

    /// CardDAV's sync-collection reads entries written after a generation
    /// and the tombstones of those deleted or renamed since.
    #[test]
    fn changes_since_a_generation_name_writes_and_deletions() {
        let (_d, s) = store();
        add(&s, MB, "Ann", 10).expect("add");
        add(&s, MB, "Bob", 10).expect("add");
        let all = s.ldap_book_changes(MB, 0).expect("changes");
        assert_eq!(all.changed.len(), 2);
        assert!(all.deleted.is_empty());
        let token = all.generation;
        assert!(
            all.changed
                .iter()
                .all(|(_, e)| e.generation > 0 && e.generation <= token)
        );

        s.ldap_entry_update(MB, &key("Ann"), &BookLimits::UNLIMITED, |e| {
            e.vcard = Some("BEGIN:VCARD".into());
            Ok::<(), StoreError>(())
        })
        .expect("update");
        s.ldap_entry_delete(MB, &key("Bob")).expect("delete");
        let since = s.ldap_book_changes(MB, token).expect("changes");
        assert_eq!(since.changed.len(), 1);
        assert_eq!(since.changed[0].0, key("Ann"));
        assert_eq!(since.changed[0].1.vcard.as_deref(), Some("BEGIN:VCARD"));
        assert_eq!(since.deleted.len(), 1);
        assert_eq!(since.deleted[0].key, key("Bob"));
        assert!(since.generation > token);
        let none = s.ldap_book_changes(MB, since.generation).expect("changes");
        assert!(none.changed.is_empty() && none.deleted.is_empty());
    }

    #[test]
    fn the_oldest_tombstones_go_and_raise_the_sync_floor() {
        let (_d, s) = store();
        let before = s.ldap_book_changes(MB, 0).expect("changes");
        assert_eq!(before.floor, 0);
        // Fill past the bound with add+delete pairs (test the cut, not the
        // count: TOMBSTONES_PER_BOOK_MAX + 3 deletions).
        for i in 0..TOMBSTONES_PER_BOOK_MAX + 3 {
            let name = format!("c{i}");
            add(&s, MB, &name, 1).expect("add");
            s.ldap_entry_delete(MB, &key(&name)).expect("delete");
        }
        let now = s.ldap_book_changes(MB, 1).expect("changes");
        assert!(
            now.floor > 1,
            "the oldest tombstones went: floor {}",
            now.floor
        );
        assert_eq!(now.deleted.len() as u64, TOMBSTONES_PER_BOOK_MAX);
    }

    #[test]
    fn a_mailbox_quota_counts_its_contacts() {
        let (_d, s) = store();
        s.mailbox_set_quota(MB, Some(100_000)).expect("quota");
        add(&s, MB, "Small", 10).expect("within the quota");
        let one = book_bytes(&s, MB);
        assert!(one > 10 && one < 500, "{one}");
        assert_eq!(s.mailbox_usage_parts(MB).expect("usage").contacts, one);
        assert_eq!(s.mailbox_usage(MB).expect("usage"), one, "mail + contacts");

        // Binary photos are stored as base64: 60,000 bytes count ~80,000.
        add(&s, MB, "Photo1", 60_000).expect("within the quota");
        let two = book_bytes(&s, MB);
        assert!(two > 80_000 && two < 100_000, "{two}");
        let e = over_limit(add(&s, MB, "Photo2", 60_000));
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "mailbox quota of {MB} exceeded: 100000 bytes allowed, {two} in use (0 mail, {two} contacts), the change adds "
            )),
            "{text}"
        );
        assert_eq!(book_bytes(&s, MB), two, "nothing stored");
        assert!(s.ldap_entry_get(MB, &key("Photo2")).expect("get").is_none());
        assert_eq!(s.ldap_book_load(MB).expect("load").entries.len(), 2);

        // A modify that makes an entry larger is refused, one that makes it
        // smaller is not (even over a lowered quota).
        let grow = s.ldap_entry_update(MB, &key("Small"), &LIMITS, |e: &mut LdapEntry| {
            e.attributes[1].values[0].0.resize(30_000, 1);
            Ok::<(), StoreError>(())
        });
        over_limit(grow);
        assert_eq!(book_bytes(&s, MB), two);
        s.mailbox_set_quota(MB, Some(1_000)).expect("lower quota");
        s.ldap_entry_update(MB, &key("Photo1"), &LIMITS, |e: &mut LdapEntry| {
            e.attributes[1].values[0].0.truncate(1_000);
            Ok::<(), StoreError>(())
        })
        .expect("shrinking is allowed over the quota");
        let shrunk = book_bytes(&s, MB);
        assert!(shrunk < 2_000, "{shrunk}");
        s.mailbox_set_quota(MB, Some(100_000)).expect("quota");

        // A rename counts its new key.
        s.ldap_entry_rename(
            MB,
            &key("Small"),
            &key("Tiny"),
            &LIMITS,
            |e: &mut LdapEntry| {
                e.rdn = "cn=Tiny".into();
                Ok::<(), StoreError>(())
            },
        )
        .expect("rename");
        let renamed = book_bytes(&s, MB);

        // A delete frees room: the refused photo fits now.
        s.ldap_entry_delete(MB, &key("Photo1")).expect("delete");
        assert!(book_bytes(&s, MB) < renamed);
        add(&s, MB, "Photo2", 60_000).expect("room again");
        book_bytes(&s, MB);
    }

    #[test]
    fn mail_and_contacts_share_the_quota() {
        let (_d, s) = store();
        s.mailbox_set_quota(MB, Some(50_000)).expect("quota");
        add(&s, MB, "Photo", 30_000).expect("contacts");
        let contacts = book_bytes(&s, MB);
        // APPEND sees the contacts.
        let body = vec![b'x'; 20_000];
        assert!(matches!(
            s.append(MB, "INBOX", &body, &[], None),
            Err(StoreError::OverQuota { .. })
        ));
        s.append(MB, "INBOX", &body[..5_000], &[], None)
            .expect("fits");
        assert_eq!(
            s.mailbox_usage_parts(MB).expect("usage"),
            crate::MailboxUsage {
                mail: 5_000,
                contacts
            }
        );
        // And an LDAP add sees the mail.
        let e = over_limit(add(&s, MB, "Again", 6_000));
        assert!(e.to_string().contains("(5000 mail, "), "{e}");
    }

    #[test]
    fn deliveries_count_the_contacts() {
        // Store calls outside the runtime; only the deliveries run in it.
        let (_d, s) = store();
        s.mailbox_set_quota(MB, Some(50_000)).expect("quota");
        add(&s, MB, "Photo", 30_000).expect("contacts");
        let delivery = |n: usize| crate::Delivery {
            mail_from: "a@example.org".into(),
            local: vec![MB.into()],
            remote: vec![],
            body: vec![b'y'; n],
            copies: vec![],
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let id = s.next_id();
            assert!(matches!(
                s.deliver(delivery(20_000), id).await,
                Err(StoreError::OverQuota { .. })
            ));
            let id = s.next_id();
            s.deliver(delivery(1_000), id).await.expect("fits");
        });
    }

    #[test]
    fn an_account_book_is_bounded_by_max_book_bytes() {
        let (_d, s) = store();
        let limits = BookLimits {
            max_entries: 1000,
            max_bytes: 10_000,
        };
        s.ldap_entry_add("acme", &key("A"), &contact("A", 5_000), &limits)
            .expect("fits");
        let e = over_limit(s.ldap_entry_add("acme", &key("B"), &contact("B", 5_000), &limits));
        let used = book_bytes(&s, "acme");
        assert!(
            e.to_string().starts_with(&format!(
                "address book size limit (ldap.max_book_bytes) of the address book of acme exceeded: 10000 bytes allowed, {used} in use, the change adds "
            )),
            "{e}"
        );
        // The same bound holds for a mailbox without a quota.
        over_limit(s.ldap_entry_add(MB, &key("B"), &contact("B", 20_000), &limits));
    }

    #[test]
    fn the_size_survives_a_restart_and_a_reconstruct() {
        let dir = tempfile::tempdir().expect("tempdir");
        let used = {
            let s = Store::open(dir.path()).expect("open");
            s.account_add("acme").expect("account");
            s.domain_add("example.net", "acme").expect("domain");
            s.mailbox_add(MB, "pw", false).expect("mailbox");
            s.mailbox_set_quota(MB, Some(100_000)).expect("quota");
            add(&s, MB, "A", 20_000).expect("add");
            add(&s, MB, "B", 20_000).expect("add");
            s.ldap_entry_delete(MB, &key("A")).expect("delete");
            book_bytes(&s, MB)
        };
        let s = Store::open(dir.path()).expect("reopen");
        assert_eq!(book_bytes(&s, MB), used);
        assert_eq!(s.mailbox_usage(MB).expect("usage"), used);
        assert!(
            s.verify(&mut |_, _, _| {})
                .expect("verify")
                .problems
                .is_empty()
        );
        drop(s);
        crate::recovery::reconstruct(dir.path(), None, &mut |_, _, _| {}).expect("reconstruct");
        let s = Store::open(dir.path()).expect("open rebuilt");
        assert_eq!(book_bytes(&s, MB), used, "the size is journaled");
        over_limit(add(&s, MB, "Big", 60_000));
    }

    #[test]
    fn a_book_from_before_sizes_is_counted_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let used = {
            let s = Store::open(dir.path()).expect("open");
            s.account_add("acme").expect("account");
            add(&s, "acme", "A", 1_000).expect("add");
            // Write the book's record as an older binary did: no size.
            let txn = s.jtxn().expect("txn");
            {
                let mut books = txn.open_table(LDAP_BOOKS).expect("books");
                let mut meta = read_meta(&*books, "acme").expect("meta");
                meta.bytes = None;
                let bytes = schema::encode(&meta).expect("encode");
                assert!(!String::from_utf8_lossy(&bytes).contains("bytes"));
                books.insert("acme", bytes.as_slice()).expect("insert");
            }
            txn.commit().expect("commit");
            let txn = s.read_txn().expect("txn");
            sum_book_bytes(&txn.open_table(LDAP_ENTRIES).expect("t"), "acme").expect("sum")
        };
        let s = Store::open(dir.path()).expect("reopen");
        let txn = s.read_txn().expect("txn");
        let meta = read_meta(&txn.open_table(LDAP_BOOKS).expect("t"), "acme").expect("meta");
        assert_eq!(meta.bytes, Some(used));
    }

    #[test]
    fn values_are_text_when_they_can_be_and_base64_otherwise() {
        let text = LdapValue(b"Jo Smith".to_vec());
        let binary = LdapValue(vec![0xff, 0xd8, 0xff, 0x00]);
        let json = serde_json::to_string(&vec![text.clone(), binary.clone()]).expect("encode");
        assert_eq!(json, r#"["Jo Smith",{"b64":"/9j/AA=="}]"#);
        let back: Vec<LdapValue> = serde_json::from_str(&json).expect("decode");
        assert_eq!(back, vec![text, binary]);
    }
}
