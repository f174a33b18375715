//! What the web Manager keeps (issue 15): the appliance's admin credential,
//! login sessions, and the audit trail of changes made through it.
//!
//! - `settings`: key -> value; `admin_password_hash` is the provider
//!   administrator's Argon2id hash (`mxrack admin passwd`).
//! - `web_sessions`: BLAKE2b-256 of the session token (hex) -> [`WebSession`].
//!   The token itself is only in the browser's cookie: a copy of the
//!   database gives no session away. Each session has its own CSRF token.
//! - `audit`: sequence -> [`AuditRecord`] (who, from where, what, when),
//!   trimmed to [`AUDIT_KEPT`] in the transaction that adds one.
//!
//! None is journaled (the recovery journal covers where mail is and who owns
//! it): a reconstruct copies them from the old database when it reads, and
//! otherwise the provider sets the admin password again and logs in again.

use blake2::{Blake2b, Digest, digest::consts::U32};
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, TableError};
use serde::{Deserialize, Serialize};

use crate::ids::now_secs;
use crate::schema::{self, COUNTERS};
use crate::{Store, StoreError, password};

pub(crate) const SETTINGS: TableDefinition<&str, &str> = TableDefinition::new("settings");
pub(crate) const WEB_SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("web_sessions");
pub(crate) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// `queue_samples`: Unix seconds -> outbound queue length then.
pub(crate) const QUEUE_SAMPLES: TableDefinition<u64, u64> = TableDefinition::new("queue_samples");
/// Queue-length samples kept (a week at one per 5 minutes).
pub const QUEUE_SAMPLES_KEPT: usize = 2016;
const ADMIN_PASSWORD: &str = "admin_password_hash";
const AUDIT_COUNTER: &str = "last_audit_id";

/// Audit records kept; older ones are trimmed.
pub const AUDIT_KEPT: u64 = 10_000;
/// Sessions kept at once; past it the oldest go (a login flood cannot grow
/// the table).
pub const WEB_SESSIONS_MAX: u64 = 10_000;
/// Longest audit text, in bytes.
pub const AUDIT_TEXT_BYTES_MAX: usize = 1_024;

/// One login session of the Manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebSession {
    /// `admin` or a mailbox address (its role is resolved at every request).
    pub who: String,
    /// The token forms must carry (a random hex string).
    pub csrf: String,
    /// Unix seconds.
    pub created: i64,
    pub last_seen: i64,
}

/// One change made through the Manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: u64,
    /// Unix seconds.
    pub at: i64,
    pub who: String,
    /// The client's address.
    pub client: String,
    pub what: String,
}

/// The key a session token is stored under.
pub fn session_key(token: &str) -> String {
    let digest = Blake2b::<U32>::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl Store {
    /// Sets the provider administrator's password (Argon2id, on the one
    /// pool). CPU heavy: async callers use `spawn_blocking`.
    pub fn admin_set_password(&self, password: &str) -> Result<(), StoreError> {
        let hash = password::hash(password)?;
        let txn = self.write_txn()?;
        txn.open_table(SETTINGS)?
            .insert(ADMIN_PASSWORD, hash.as_str())?;
        txn.commit()?;
        Ok(())
    }

    /// Whether an admin password has been set.
    pub fn admin_password_set(&self) -> Result<bool, StoreError> {
        Ok(self.admin_password_hash()?.is_some())
    }

    /// The admin password's stored hash, if one is set.
    pub fn admin_password_hash(&self) -> Result<Option<String>, StoreError> {
        let txn = self.read_txn()?;
        let table = match txn.open_table(SETTINGS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(table.get(ADMIN_PASSWORD)?.map(|g| g.value().to_string()))
    }

    /// Checks the admin password (the same work when none is set).
    pub fn admin_verify_password(&self, password: &str) -> Result<bool, StoreError> {
        match self.admin_password_hash()? {
            Some(hash) => Ok(password::verify(password, &hash)),
            None => {
                password::verify_dummy(password);
                Ok(false)
            }
        }
    }

    /// Opens a session for `who`; returns its token (for the cookie) and
    /// the session. The oldest sessions go past [`WEB_SESSIONS_MAX`].
    pub fn web_session_create(&self, who: &str) -> Result<(String, WebSession), StoreError> {
        let token = random_hex(32);
        let now = now_secs();
        let session = WebSession {
            who: who.to_string(),
            csrf: random_hex(32),
            created: now,
            last_seen: now,
        };
        let txn = self.write_txn()?;
        {
            let mut table = txn.open_table(WEB_SESSIONS)?;
            if table.len()? >= WEB_SESSIONS_MAX {
                let mut oldest: Option<(String, i64)> = None;
                for item in table.iter()? {
                    let (k, v) = item?;
                    let s: WebSession = schema::decode(v.value(), "web session")?;
                    if oldest.as_ref().is_none_or(|(_, at)| s.last_seen < *at) {
                        oldest = Some((k.value().to_string(), s.last_seen));
                    }
                }
                if let Some((k, _)) = oldest {
                    table.remove(k.as_str())?;
                }
            }
            table.insert(
                session_key(&token).as_str(),
                schema::encode(&session)?.as_slice(),
            )?;
        }
        txn.commit()?;
        Ok((token, session))
    }

    /// The session of a token if it is still valid (idle for less than
    /// `idle_secs`, younger than `max_secs`); a valid one is marked seen
    /// (written at most once a minute), an expired one is removed.
    pub fn web_session_get(
        &self,
        token: &str,
        idle_secs: i64,
        max_secs: i64,
    ) -> Result<Option<WebSession>, StoreError> {
        let key = session_key(token);
        let now = now_secs();
        let found: Option<WebSession> = {
            let txn = self.read_txn()?;
            let table = match txn.open_table(WEB_SESSIONS) {
                Ok(t) => t,
                Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            table
                .get(key.as_str())?
                .map(|g| schema::decode(g.value(), "web session"))
                .transpose()?
        };
        let Some(mut session) = found else {
            return Ok(None);
        };
        if now - session.last_seen >= idle_secs || now - session.created >= max_secs {
            self.web_session_delete(token)?;
            return Ok(None);
        }
        if now - session.last_seen >= 60 {
            session.last_seen = now;
            let txn = self.write_txn()?;
            txn.open_table(WEB_SESSIONS)?
                .insert(key.as_str(), schema::encode(&session)?.as_slice())?;
            txn.commit()?;
        }
        Ok(Some(session))
    }

    /// Ends a session (logout).
    pub fn web_session_delete(&self, token: &str) -> Result<(), StoreError> {
        let txn = self.write_txn()?;
        txn.open_table(WEB_SESSIONS)?
            .remove(session_key(token).as_str())?;
        txn.commit()?;
        Ok(())
    }

    /// Ends every session of `who` (its password changed or it went away).
    pub fn web_sessions_end_for(&self, who: &str) -> Result<usize, StoreError> {
        let txn = self.write_txn()?;
        let n = {
            let mut table = txn.open_table(WEB_SESSIONS)?;
            let mut keys = Vec::new();
            for item in table.iter()? {
                let (k, v) = item?;
                let s: WebSession = schema::decode(v.value(), "web session")?;
                if s.who.eq_ignore_ascii_case(who) {
                    keys.push(k.value().to_string());
                }
            }
            for k in &keys {
                table.remove(k.as_str())?;
            }
            keys.len()
        };
        txn.commit()?;
        Ok(n)
    }

    /// Records a change made through the Manager.
    pub fn audit_add(&self, who: &str, client: &str, what: &str) -> Result<(), StoreError> {
        let txn = self.write_txn()?;
        {
            let mut counters = txn.open_table(COUNTERS)?;
            let id = counters.get(AUDIT_COUNTER)?.map_or(0, |g| g.value()) + 1;
            counters.insert(AUDIT_COUNTER, id)?;
            let record = AuditRecord {
                id,
                at: now_secs(),
                who: truncate(who, 320),
                client: truncate(client, 64),
                what: truncate(what, AUDIT_TEXT_BYTES_MAX),
            };
            let mut table = txn.open_table(AUDIT)?;
            table.insert(id, schema::encode(&record)?.as_slice())?;
            if id > AUDIT_KEPT {
                table.remove(id - AUDIT_KEPT)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Records the outbound queue's length now (the supervisor does it
    /// every [`QUEUE_SAMPLES_KEPT`]-th of a week), trimming the oldest.
    pub fn queue_sample(&self, at: u64) -> Result<u64, StoreError> {
        let txn = self.write_txn()?;
        let n = {
            let n = txn.open_table(crate::schema::QUEUE)?.len()?;
            let mut t = txn.open_table(QUEUE_SAMPLES)?;
            t.insert(at, n)?;
            while t.len()? > QUEUE_SAMPLES_KEPT as u64 {
                let oldest = match t.iter()?.next() {
                    Some(item) => item?.0.value(),
                    None => break,
                };
                t.remove(oldest)?;
            }
            n
        };
        txn.commit()?;
        Ok(n)
    }

    /// Queue-length samples since `from` (Unix seconds), oldest first.
    pub fn queue_samples(&self, from: u64) -> Result<Vec<(u64, u64)>, StoreError> {
        let txn = self.read_txn()?;
        let table = match txn.open_table(QUEUE_SAMPLES) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for item in table.range(from..)? {
            let (k, v) = item?;
            out.push((k.value(), v.value()));
        }
        Ok(out)
    }

    /// The newest audit records, newest first.
    pub fn audit_recent(&self, max: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let txn = self.read_txn()?;
        let table = match txn.open_table(AUDIT) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for item in table.iter()?.rev().take(max) {
            let (_, v) = item?;
            out.push(schema::decode(v.value(), "audit record")?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, std::sync::Arc<Store>) {
        let d = tempfile::tempdir().expect("tmp");
        let s = Store::open(d.path()).expect("open");
        (d, s)
    }

    #[test]
    fn the_admin_password_is_a_hash_checked_on_the_pool() {
        let (_d, s) = store();
        assert!(!s.admin_password_set().unwrap());
        assert!(!s.admin_verify_password("x").unwrap());
        s.admin_set_password("s3cret-admin").unwrap();
        assert!(
            s.admin_password_hash()
                .unwrap()
                .unwrap()
                .starts_with("$argon2id$")
        );
        assert!(s.admin_verify_password("s3cret-admin").unwrap());
        assert!(!s.admin_verify_password("s3cret-Admin").unwrap());
    }

    #[test]
    fn sessions_are_found_by_token_only_and_expire() {
        let (_d, s) = store();
        let (token, made) = s.web_session_create("admin").unwrap();
        assert_eq!(token.len(), 64);
        let got = s.web_session_get(&token, 1800, 43_200).unwrap().unwrap();
        assert_eq!(got, made);
        assert!(s.web_session_get("nope", 1800, 43_200).unwrap().is_none());
        // The stored key is a hash, not the token.
        assert_ne!(session_key(&token), token);
        // Past its idle time it is gone, and stays gone.
        assert!(s.web_session_get(&token, 0, 43_200).unwrap().is_none());
        assert!(s.web_session_get(&token, 1800, 43_200).unwrap().is_none());
        let (t2, _) = s.web_session_create("jo@acme.example").unwrap();
        assert_eq!(s.web_sessions_end_for("JO@acme.example").unwrap(), 1);
        assert!(s.web_session_get(&t2, 1800, 43_200).unwrap().is_none());
    }

    #[test]
    fn queue_samples_are_kept_for_a_week() {
        let (_d, s) = store();
        for i in 0..(QUEUE_SAMPLES_KEPT as u64 + 5) {
            assert_eq!(s.queue_sample(1_000 + i).unwrap(), 0);
        }
        let all = s.queue_samples(0).unwrap();
        assert_eq!(all.len(), QUEUE_SAMPLES_KEPT);
        assert_eq!(all[0].0, 1_005);
        assert_eq!(
            s.queue_samples(1_000 + QUEUE_SAMPLES_KEPT as u64)
                .unwrap()
                .len(),
            5
        );
    }

    #[test]
    fn the_audit_trail_is_newest_first() {
        let (_d, s) = store();
        s.audit_add("admin", "127.0.0.1", "account acme added")
            .unwrap();
        s.audit_add("admin", "127.0.0.1", "domain acme.example added")
            .unwrap();
        let a = s.audit_recent(10).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].what, "domain acme.example added");
        assert_eq!(a[1].who, "admin");
    }
}
