//! Administration: accounts, domains, mailboxes, aliases, passwords.
//!
//! Every change is one durable redb write transaction, checked inside that
//! transaction (so two administrators cannot both create the same name).
//! Names are normalised by [`crate::names`] first.

use std::collections::HashSet;

use redb::ReadableTable;

use crate::ids::now_secs;
use crate::names::{domain_of, normalize_account, normalize_address, normalize_domain};
use crate::schema::{
    self, ACCOUNTS, ALIASES, Account, Alias, BLOBS, COUNTERS, DEFAULT_FOLDERS, DOMAINS, Domain,
    FOLDER_ID_COUNTER, FOLDERS, Folder, MAILBOXES, MESSAGES, Mailbox, MessageMeta,
    UIDVALIDITY_COUNTER,
};
use crate::{Id, Store, StoreError, blobs, password};

/// Most targets one alias may have.
pub(crate) const MAX_ALIAS_TARGETS: usize = 256;

fn not_found(kind: &'static str, name: &str) -> StoreError {
    StoreError::NotFound {
        kind,
        name: name.to_string(),
    }
}

fn duplicate(kind: &'static str, name: &str) -> StoreError {
    StoreError::Duplicate {
        kind,
        name: name.to_string(),
    }
}

/// Every record of a `&str -> json` table, in key order.
fn list_table<T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    what: &str,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for item in table.iter()? {
        let (_, v) = item?;
        out.push(schema::decode(v.value(), what)?);
    }
    Ok(out)
}

/// Keys of a `&str -> json` table whose address is in `domain`.
fn keys_in_domain(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    domain: &str,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for item in table.iter()? {
        let (k, _) = item?;
        if domain_of(k.value()) == domain {
            out.push(k.value().to_string());
        }
    }
    Ok(out)
}

/// Increments a counter and returns the new value, at least `floor`.
fn bump_counter(
    counters: &mut crate::journal::JTable<'_, &'static str, u64>,
    name: &str,
    floor: u64,
) -> Result<u64, StoreError> {
    let last = counters.get(name)?.map_or(0, |g| g.value());
    let next = last.saturating_add(1).max(floor);
    counters.insert(name, next)?;
    Ok(next)
}

/// "2 mailboxes and 1 alias" style list for [`StoreError::InUse`].
fn users_text(parts: &[(usize, &str, &str)]) -> String {
    parts
        .iter()
        .filter(|(n, _, _)| *n > 0)
        .map(|(n, one, many)| format!("{n} {}", if *n == 1 { one } else { many }))
        .collect::<Vec<_>>()
        .join(" and ")
}

impl Store {
    /// Creates an account (`[a-z0-9._-]`, 1..=64 bytes, lower-cased).
    pub fn account_add(&self, name: &str) -> Result<(), StoreError> {
        let name = normalize_account(name)?;
        let txn = self.jtxn()?;
        {
            let mut accounts = txn.open_table(ACCOUNTS)?;
            if accounts.get(name.as_str())?.is_some() {
                return Err(duplicate("account", &name));
            }
            let record = Account {
                name: name.clone(),
                created: now_secs(),
                ldap_password_hash: None,
            };
            accounts.insert(name.as_str(), schema::encode(&record)?.as_slice())?;
        }
        txn.commit()?;
        tracing::info!(account = %name, "account added");
        Ok(())
    }

    /// All accounts, by name.
    pub fn account_list(&self) -> Result<Vec<Account>, StoreError> {
        let txn = self.read_txn()?;
        list_table(&txn.open_table(ACCOUNTS)?, "account")
    }

    /// Removes an account; [`StoreError::InUse`] while it owns a domain.
    pub fn account_remove(&self, name: &str) -> Result<(), StoreError> {
        let name = normalize_account(name)?;
        let txn = self.jtxn()?;
        {
            let mut accounts = txn.open_table(ACCOUNTS)?;
            if accounts.get(name.as_str())?.is_none() {
                return Err(not_found("account", &name));
            }
            let domains: Vec<Domain> = list_table(&*txn.open_table(DOMAINS)?, "domain")?;
            let owned: Vec<&str> = domains
                .iter()
                .filter(|d| d.account == name)
                .map(|d| d.name.as_str())
                .collect();
            if !owned.is_empty() {
                return Err(StoreError::InUse {
                    kind: "account",
                    name,
                    by: format!("domain(s) {}", owned.join(", ")),
                });
            }
            accounts.remove(name.as_str())?;
            crate::ldap::remove_book(&txn, &name)?;
        }
        txn.commit()?;
        tracing::info!(account = %name, "account removed");
        Ok(())
    }

    /// Hosts `domain` for `account` (which must exist).
    pub fn domain_add(&self, domain: &str, account: &str) -> Result<(), StoreError> {
        let domain = normalize_domain(domain)?;
        let account = normalize_account(account)?;
        let txn = self.jtxn()?;
        {
            if txn.open_table(ACCOUNTS)?.get(account.as_str())?.is_none() {
                return Err(not_found("account", &account));
            }
            let mut domains = txn.open_table(DOMAINS)?;
            if domains.get(domain.as_str())?.is_some() {
                return Err(duplicate("domain", &domain));
            }
            let record = Domain {
                name: domain.clone(),
                account: account.clone(),
            };
            domains.insert(domain.as_str(), schema::encode(&record)?.as_slice())?;
        }
        txn.commit()?;
        tracing::info!(%domain, %account, "domain added");
        Ok(())
    }

    /// All hosted domains, by name.
    pub fn domain_list(&self) -> Result<Vec<Domain>, StoreError> {
        let txn = self.read_txn()?;
        list_table(&txn.open_table(DOMAINS)?, "domain")
    }

    /// Stops hosting a domain; [`StoreError::InUse`] while mailboxes or
    /// aliases exist in it.
    pub fn domain_remove(&self, domain: &str) -> Result<(), StoreError> {
        let domain = normalize_domain(domain)?;
        let txn = self.jtxn()?;
        {
            let mut domains = txn.open_table(DOMAINS)?;
            if domains.get(domain.as_str())?.is_none() {
                return Err(not_found("domain", &domain));
            }
            let mailboxes = keys_in_domain(&*txn.open_table(MAILBOXES)?, &domain)?.len();
            let aliases = keys_in_domain(&*txn.open_table(ALIASES)?, &domain)?.len();
            if mailboxes + aliases > 0 {
                return Err(StoreError::InUse {
                    kind: "domain",
                    name: domain,
                    by: users_text(&[
                        (mailboxes, "mailbox", "mailboxes"),
                        (aliases, "alias", "aliases"),
                    ]),
                });
            }
            domains.remove(domain.as_str())?;
        }
        txn.commit()?;
        tracing::info!(%domain, "domain removed");
        Ok(())
    }

    /// True if the appliance hosts `domain` (false for a malformed name).
    pub fn is_hosted_domain(&self, domain: &str) -> Result<bool, StoreError> {
        let Ok(domain) = normalize_domain(domain) else {
            return Ok(false);
        };
        let txn = self.read_txn()?;
        Ok(txn.open_table(DOMAINS)?.get(domain.as_str())?.is_some())
    }

    /// Creates a mailbox in a hosted domain, with the folders INBOX, Sent,
    /// Drafts, Trash and Junk (special-use attributes set, all subscribed,
    /// UIDNEXT 1, a UIDVALIDITY from the clock that never repeats).
    pub fn mailbox_add(
        &self,
        address: &str,
        password: &str,
        full_management: bool,
    ) -> Result<(), StoreError> {
        let address = normalize_address(address)?;
        // Hash before the transaction: it takes CPU time, and redb has one
        // writer at a time.
        let password_hash = password::hash(password)?;
        let domain = domain_of(&address).to_string();
        let txn = self.jtxn()?;
        {
            let account = match txn.open_table(DOMAINS)?.get(domain.as_str())? {
                Some(g) => schema::decode::<Domain>(g.value(), "domain")?.account,
                None => return Err(not_found("domain", &domain)),
            };
            if txn.open_table(ALIASES)?.get(address.as_str())?.is_some() {
                return Err(duplicate("alias", &address));
            }
            let mut mailboxes = txn.open_table(MAILBOXES)?;
            if mailboxes.get(address.as_str())?.is_some() {
                return Err(duplicate("mailbox", &address));
            }
            let now = now_secs();
            let record = Mailbox {
                address: address.clone(),
                account,
                password_hash,
                full_management,
                ldap_password_hash: None,
                quota_bytes: None,
                created: now,
            };
            mailboxes.insert(address.as_str(), schema::encode(&record)?.as_slice())?;

            let mut counters = txn.open_table(COUNTERS)?;
            let uidvalidity = bump_counter(
                &mut counters,
                UIDVALIDITY_COUNTER,
                u64::try_from(now).unwrap_or(1),
            )?;
            let uidvalidity = u32::try_from(uidvalidity).map_err(|_| StoreError::Invalid {
                what: "UIDVALIDITY",
                why: "the counter exceeds 32 bits".into(),
            })?;
            let mut folders = txn.open_table(FOLDERS)?;
            for (name, special_use) in DEFAULT_FOLDERS {
                let id = bump_counter(&mut counters, FOLDER_ID_COUNTER, 1)?;
                let folder = Folder {
                    id,
                    mailbox: address.clone(),
                    name: name.to_string(),
                    uidvalidity,
                    uidnext: 1,
                    special_use: special_use.map(str::to_string),
                    highestmodseq: 1,
                    first_recent_uid: 1,
                };
                folders.insert(
                    (address.as_str(), name),
                    schema::encode(&folder)?.as_slice(),
                )?;
            }
            let names: Vec<&str> = DEFAULT_FOLDERS.iter().map(|(n, _)| *n).collect();
            crate::subscriptions::subscribe_defaults(&txn, &address, &names)?;
        }
        txn.commit()?;
        tracing::info!(mailbox = %address, "mailbox added");
        Ok(())
    }

    /// One mailbox.
    pub fn mailbox_get(&self, address: &str) -> Result<Mailbox, StoreError> {
        let address = normalize_address(address)?;
        let txn = self.read_txn()?;
        let table = txn.open_table(MAILBOXES)?;
        let record = table.get(address.as_str())?;
        match record {
            Some(g) => schema::decode(g.value(), "mailbox"),
            None => Err(not_found("mailbox", &address)),
        }
    }

    /// All mailboxes, or those of one hosted domain ([`StoreError::NotFound`]
    /// if that domain is not hosted), by address.
    pub fn mailbox_list(&self, domain: Option<&str>) -> Result<Vec<Mailbox>, StoreError> {
        let domain = domain.map(normalize_domain).transpose()?;
        let txn = self.read_txn()?;
        if let Some(d) = &domain
            && txn.open_table(DOMAINS)?.get(d.as_str())?.is_none()
        {
            return Err(not_found("domain", d));
        }
        let all: Vec<Mailbox> = list_table(&txn.open_table(MAILBOXES)?, "mailbox")?;
        Ok(match domain {
            Some(d) => all
                .into_iter()
                .filter(|m| domain_of(&m.address) == d)
                .collect(),
            None => all,
        })
    }

    /// Removes a mailbox with its folders and messages. Blob files no longer
    /// used by anything are deleted once the removal is committed.
    pub fn mailbox_remove(&self, address: &str) -> Result<(), StoreError> {
        let address = normalize_address(address)?;
        let mut freed: Vec<Id> = Vec::new();
        let txn = self.jtxn()?;
        let removed_messages;
        {
            if txn
                .open_table(MAILBOXES)?
                .remove(address.as_str())?
                .is_none()
            {
                return Err(not_found("mailbox", &address));
            }
            txn.open_table(crate::schema::USAGE)?
                .remove(address.as_str())?;
            crate::ldap::remove_book(&txn, &address)?;
            txn.open_table(crate::relaydata::FORWARDS)?
                .remove(address.as_str())?;
            crate::subscriptions::remove_all(&txn, &address)?;
            let mut folders = txn.open_table(FOLDERS)?;
            let mut folder_ids = Vec::new();
            let mut folder_names = Vec::new();
            for item in folders.range((address.as_str(), "")..)? {
                let (k, v) = item?;
                let (mailbox, name) = k.value();
                if mailbox != address {
                    break;
                }
                folder_names.push(name.to_string());
                folder_ids.push(schema::decode::<Folder>(v.value(), "folder")?.id);
            }
            for name in &folder_names {
                folders.remove((address.as_str(), name.as_str()))?;
            }

            let mut messages = txn.open_table(MESSAGES)?;
            let mut doomed: Vec<((u64, u32), Id)> = Vec::new();
            for fid in folder_ids {
                for item in messages.range((fid, 0u32)..=(fid, u32::MAX))? {
                    let (k, v) = item?;
                    let meta: MessageMeta = schema::decode(v.value(), "message")?;
                    doomed.push((k.value(), meta.blob));
                }
            }
            removed_messages = doomed.len();
            let mut blob_refs = txn.open_table(BLOBS)?;
            for (key, blob) in doomed {
                messages.remove(key)?;
                if blobs::release(&mut blob_refs, blob)? {
                    freed.push(blob);
                }
            }
        }
        txn.commit()?;
        self.delete_blob_files(&freed);
        tracing::info!(
            mailbox = %address,
            messages = removed_messages,
            blobs_freed = freed.len(),
            "mailbox removed"
        );
        Ok(())
    }

    fn mailbox_update(
        &self,
        address: &str,
        change: impl FnOnce(&mut Mailbox),
    ) -> Result<(), StoreError> {
        let address = normalize_address(address)?;
        let txn = self.jtxn()?;
        {
            let mut mailboxes = txn.open_table(MAILBOXES)?;
            let mut record: Mailbox = match mailboxes.get(address.as_str())? {
                Some(g) => schema::decode(g.value(), "mailbox")?,
                None => return Err(not_found("mailbox", &address)),
            };
            change(&mut record);
            mailboxes.insert(address.as_str(), schema::encode(&record)?.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Sets a mailbox's login password.
    pub fn mailbox_set_password(&self, address: &str, password: &str) -> Result<(), StoreError> {
        let hash = password::hash(password)?;
        self.mailbox_update(address, |m| m.password_hash = hash)?;
        tracing::info!(mailbox = %address, "mailbox password changed");
        Ok(())
    }

    /// Grants or revokes full management access.
    pub fn mailbox_set_full_management(&self, address: &str, on: bool) -> Result<(), StoreError> {
        self.mailbox_update(address, |m| m.full_management = on)
    }

    /// Creates an alias in a hosted domain (not an existing mailbox or
    /// alias) forwarding to 1..=256 addresses: mailboxes, other aliases or
    /// external addresses. Targets are lower-cased and deduplicated.
    pub fn alias_add(&self, address: &str, targets: &[String]) -> Result<(), StoreError> {
        let address = normalize_address(address)?;
        if targets.is_empty() {
            return Err(StoreError::Invalid {
                what: "alias targets",
                why: "none given".into(),
            });
        }
        if targets.len() > MAX_ALIAS_TARGETS {
            return Err(StoreError::Invalid {
                what: "alias targets",
                why: format!("more than {MAX_ALIAS_TARGETS}"),
            });
        }
        let mut seen = HashSet::new();
        let mut clean = Vec::with_capacity(targets.len());
        for t in targets {
            let t = normalize_address(t)?;
            if t == address {
                return Err(StoreError::Invalid {
                    what: "alias targets",
                    why: format!("{address} cannot point to itself"),
                });
            }
            if seen.insert(t.clone()) {
                clean.push(t);
            }
        }
        let domain = domain_of(&address).to_string();
        let txn = self.jtxn()?;
        {
            if txn.open_table(DOMAINS)?.get(domain.as_str())?.is_none() {
                return Err(not_found("domain", &domain));
            }
            if txn.open_table(MAILBOXES)?.get(address.as_str())?.is_some() {
                return Err(duplicate("mailbox", &address));
            }
            let mut aliases = txn.open_table(ALIASES)?;
            if aliases.get(address.as_str())?.is_some() {
                return Err(duplicate("alias", &address));
            }
            let record = Alias {
                address: address.clone(),
                targets: clean,
            };
            aliases.insert(address.as_str(), schema::encode(&record)?.as_slice())?;
        }
        txn.commit()?;
        tracing::info!(alias = %address, "alias added");
        Ok(())
    }

    /// All aliases, by address.
    pub fn alias_list(&self) -> Result<Vec<Alias>, StoreError> {
        let txn = self.read_txn()?;
        list_table(&txn.open_table(ALIASES)?, "alias")
    }

    /// Removes an alias.
    pub fn alias_remove(&self, address: &str) -> Result<(), StoreError> {
        let address = normalize_address(address)?;
        let txn = self.jtxn()?;
        {
            if txn.open_table(ALIASES)?.remove(address.as_str())?.is_none() {
                return Err(not_found("alias", &address));
            }
        }
        txn.commit()?;
        tracing::info!(alias = %address, "alias removed");
        Ok(())
    }

    /// The stored hash of a mailbox's login password (`None`: no such
    /// mailbox), for a cache of successful checks keyed on it.
    pub fn mailbox_password_hash(&self, address: &str) -> Result<Option<String>, StoreError> {
        let Ok(address) = normalize_address(address) else {
            return Ok(None);
        };
        let txn = self.read_txn()?;
        let table = txn.open_table(MAILBOXES)?;
        let record = table.get(address.as_str())?;
        record
            .map(|g| schema::decode::<Mailbox>(g.value(), "mailbox").map(|m| m.password_hash))
            .transpose()
    }

    /// Checks a mailbox's login password. `false` for an unknown or
    /// malformed address too, after the same hashing work, so the answer
    /// time does not tell whether the mailbox exists.
    ///
    /// CPU heavy (Argon2id): async callers run it in [`crate::spawn_blocking`].
    pub fn verify_password(&self, address: &str, password: &str) -> Result<bool, StoreError> {
        let hash = match normalize_address(address) {
            Ok(address) => {
                let txn = self.read_txn()?;
                let table = txn.open_table(MAILBOXES)?;
                let record = table.get(address.as_str())?;
                match record {
                    Some(g) => Some(schema::decode::<Mailbox>(g.value(), "mailbox")?.password_hash),
                    None => None,
                }
            }
            Err(_) => None,
        };
        // The read transaction is closed here: hashing holds no database state.
        match hash {
            Some(hash) => Ok(password::verify(password, &hash)),
            None => {
                password::verify_dummy(password);
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::users_text;

    #[test]
    fn in_use_text() {
        assert_eq!(
            users_text(&[(2, "mailbox", "mailboxes"), (1, "alias", "aliases")]),
            "2 mailboxes and 1 alias"
        );
        assert_eq!(
            users_text(&[(0, "mailbox", "mailboxes"), (3, "alias", "aliases")]),
            "3 aliases"
        );
    }
}
