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
use crate::schema::{self, ACCOUNTS, Account, COUNTERS, MAILBOXES, Mailbox};
use crate::{Store, StoreError, password};

/// `ldap_entries`: (book, entry key) -> [`LdapEntry`].
pub(crate) const LDAP_ENTRIES: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("ldap_entries");
/// `ldap_books`: book -> [`LdapBookMeta`].
pub(crate) const LDAP_BOOKS: TableDefinition<&str, &[u8]> = TableDefinition::new("ldap_books");
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

/// Gives `book` a new generation and adds `entries_delta` to its count.
fn touch_book(txn: &JTxn<'_>, book: &str, entries_delta: i64) -> Result<(), StoreError> {
    let mut counters = txn.open_table(COUNTERS)?;
    let last = counters
        .get(LDAP_GENERATION_COUNTER)?
        .map_or(0, |g| g.value());
    let generation = last.saturating_add(1);
    counters.insert(LDAP_GENERATION_COUNTER, generation)?;
    let mut books = txn.open_table(LDAP_BOOKS)?;
    let mut meta = read_meta(&*books, book)?;
    meta.generation = generation;
    meta.entries = meta.entries.saturating_add_signed(entries_delta);
    books.insert(book, schema::encode(&meta)?.as_slice())?;
    Ok(())
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
        let mut snapshot = LdapBookSnapshot {
            generation,
            entries: Vec::new(),
        };
        if let Some(table) = open_read(&txn, LDAP_ENTRIES)? {
            for item in table.range((book, "")..)? {
                let (k, v) = item?;
                let (b, key) = k.value();
                if b != book {
                    break;
                }
                snapshot.entries.push((
                    key.to_string(),
                    schema::decode(v.value(), "address book entry")?,
                ));
            }
        }
        Ok(snapshot)
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

    /// Adds an entry. [`StoreError::Duplicate`] if the key is taken,
    /// [`StoreError::Invalid`] (what = "address book") when the book already
    /// holds `max_entries`.
    pub fn ldap_entry_add(
        &self,
        book: &str,
        key: &str,
        entry: &LdapEntry,
        max_entries: usize,
    ) -> Result<(), StoreError> {
        let mut entry = entry.clone();
        let now = now_secs();
        entry.created = now;
        entry.modified = now;
        let bytes = schema::encode(&entry)?;
        let txn = self.jtxn()?;
        {
            let count = read_meta(&*txn.open_table(LDAP_BOOKS)?, book)?.entries;
            if count >= u64::try_from(max_entries).unwrap_or(u64::MAX) {
                return Err(StoreError::Invalid {
                    what: "address book",
                    why: format!("it is full ({max_entries} entries)"),
                });
            }
            let mut entries = txn.open_table(LDAP_ENTRIES)?;
            if entries.get((book, key))?.is_some() {
                return Err(StoreError::Duplicate {
                    kind: "address book entry",
                    name: entry.rdn.clone(),
                });
            }
            entries.insert((book, key), bytes.as_slice())?;
        }
        touch_book(&txn, book, 1)?;
        txn.commit()?;
        Ok(())
    }

    /// Changes an entry in place with `change`, which sees the stored entry
    /// and may refuse (its error is returned and nothing is written).
    /// [`StoreError::NotFound`] when the entry does not exist.
    pub fn ldap_entry_update<E: From<StoreError>>(
        &self,
        book: &str,
        key: &str,
        change: impl FnOnce(&mut LdapEntry) -> Result<(), E>,
    ) -> Result<(), E> {
        self.ldap_entry_rename(book, key, key, change)
    }

    /// Moves an entry to `new_key` in the same book (the same key: an update)
    /// and changes it with `change` in the same transaction.
    /// [`StoreError::Duplicate`] if `new_key` is another entry's.
    pub fn ldap_entry_rename<E: From<StoreError>>(
        &self,
        book: &str,
        old_key: &str,
        new_key: &str,
        change: impl FnOnce(&mut LdapEntry) -> Result<(), E>,
    ) -> Result<(), E> {
        let txn = self.jtxn()?;
        {
            let mut entries = txn.open_table(LDAP_ENTRIES)?;
            let mut entry: LdapEntry =
                match entries.get((book, old_key)).map_err(StoreError::from)? {
                    Some(g) => schema::decode(g.value(), "address book entry")?,
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
            change(&mut entry)?;
            entry.modified = now_secs();
            let bytes = schema::encode(&entry)?;
            if new_key != old_key {
                entries.remove((book, old_key))?;
            }
            entries.insert((book, new_key), bytes.as_slice())?;
        }
        touch_book(&txn, book, 0)?;
        txn.commit()?;
        Ok(())
    }

    /// Deletes an entry; [`StoreError::NotFound`] if it does not exist.
    pub fn ldap_entry_delete(&self, book: &str, key: &str) -> Result<(), StoreError> {
        let txn = self.jtxn()?;
        {
            let mut entries = txn.open_table(LDAP_ENTRIES)?;
            if entries.remove((book, key))?.is_none() {
                return Err(not_found("address book entry", key));
            }
        }
        touch_book(&txn, book, -1)?;
        txn.commit()?;
        Ok(())
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
