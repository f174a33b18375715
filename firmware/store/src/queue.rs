//! The outbound queue: messages for external recipients.
//!
//! Entries are created by [`Store::deliver`] (group-committed with the local
//! copies). The sender updates an entry after each attempt (remaining
//! recipients, attempts, next attempt, last error) with
//! [`Store::queue_update`] and removes it when done with
//! [`Store::queue_remove`], which releases the blob.
//!
//! A held entry is never sent. The forward gate's discarded copies are
//! queued held with a reason and an expiry ([`QueueEntry::gate_held`]):
//! [`Store::queue_release`] sends one, [`Store::queue_expire`] removes the
//! ones whose `forward.discard_keep_days` have passed (the relay's pass
//! calls it and logs each removal), so no forwarded copy is dropped
//! without the retention the configuration states.

use redb::ReadableTable;
use std::sync::Mutex;

use crate::schema::{self, BLOBS, QUEUE, QueueEntry};
use crate::{Id, Store, StoreError, blobs, id_hex};

/// Most expired held entries removed in one transaction; the rest go at
/// the next pass.
pub const EXPIRE_BATCH_MAX: usize = 1000;

/// Queue removals waiting for the next grouped commit
/// ([`Store::queue_remove`]), and the lock its committer holds.
/// One removal's result, and where it goes.
type Removal = Result<(), StoreError>;
type Waiting = (Id, std::sync::mpsc::Sender<Removal>);

#[derive(Debug, Default)]
pub(crate) struct RemovalGroup {
    pending: Mutex<Vec<Waiting>>,
    leader: Mutex<()>,
}

/// A lock that a panic elsewhere did not make unusable: the data behind
/// these locks is a list of waiters, valid whatever the panic was.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn not_found(id: Id) -> StoreError {
    StoreError::NotFound {
        kind: "queue entry",
        name: id_hex(id),
    }
}

impl Store {
    /// Every queue entry, oldest id first.
    pub fn queue_list(&self) -> Result<Vec<QueueEntry>, StoreError> {
        let txn = self.read_txn()?;
        let mut out = Vec::new();
        for item in txn.open_table(QUEUE)?.iter()? {
            let (_, v) = item?;
            out.push(schema::decode(v.value(), "queue")?);
        }
        Ok(out)
    }

    /// One queue entry.
    pub fn queue_get(&self, id: Id) -> Result<QueueEntry, StoreError> {
        let txn = self.read_txn()?;
        let table = txn.open_table(QUEUE)?;
        let record = table.get(id)?;
        match record {
            Some(g) => schema::decode(g.value(), "queue"),
            None => Err(not_found(id)),
        }
    }

    /// Replaces a queue entry's state (recipients left, attempts,
    /// next_attempt, last_error, held). Its `id`, `blob` and `size` cannot
    /// change, and recipients must not be empty (use
    /// [`Store::queue_remove`]).
    pub fn queue_update(&self, entry: &QueueEntry) -> Result<(), StoreError> {
        if entry.recipients.is_empty() {
            return Err(StoreError::Invalid {
                what: "queue entry",
                why: "no recipients left; remove the entry instead".into(),
            });
        }
        let txn = self.jtxn()?;
        {
            let mut queue = txn.open_table(QUEUE)?;
            let old: QueueEntry = match queue.get(entry.id)? {
                Some(g) => schema::decode(g.value(), "queue")?,
                None => return Err(not_found(entry.id)),
            };
            if old.blob != entry.blob || old.size != entry.size {
                return Err(StoreError::Invalid {
                    what: "queue entry",
                    why: "blob and size cannot change".into(),
                });
            }
            queue.insert(entry.id, schema::encode(entry)?.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Makes every entry that is not held (or only `only`) due now, in one
    /// transaction; returns how many. (`mxrack queue flush`.)
    pub fn queue_make_due(&self, only: Option<Id>, now: i64) -> Result<usize, StoreError> {
        let txn = self.jtxn()?;
        let mut n = 0;
        {
            let mut queue = txn.open_table(QUEUE)?;
            let mut due: Vec<QueueEntry> = Vec::new();
            for item in queue.iter()? {
                let (k, v) = item?;
                if only.is_some_and(|o| o != k.value()) {
                    continue;
                }
                let e: QueueEntry = schema::decode(v.value(), "queue")?;
                if !e.held && e.next_attempt > now {
                    due.push(e);
                } else if !e.held {
                    n += 1;
                }
            }
            for mut e in due {
                e.next_attempt = now;
                queue.insert(e.id, schema::encode(&e)?.as_slice())?;
                n += 1;
            }
        }
        txn.commit()?;
        Ok(n)
    }

    /// Releases a held entry: not held, no reason, no expiry. A copy the
    /// gate held is due now and starts its `relay.max_age` from now (it
    /// waited on a policy, not on its destination); an operator's hold keeps
    /// its retry time (`mxrack queue flush` makes it due). Returns the entry as it was,
    /// so the caller can tell a gate's hold (and count its release).
    pub fn queue_release(&self, id: Id, now: i64) -> Result<QueueEntry, StoreError> {
        self.release_if(id, now, |_| true)
    }

    /// [`Store::queue_release`] of a copy the gate held for `mailbox`'s
    /// own forwarding rule, checked in the same transaction: anything else
    /// (another mailbox's copy, an operator's hold, an entry gone) is
    /// `NotFound`, so a user learns nothing of other entries.
    pub fn queue_release_held_copy(
        &self,
        id: Id,
        mailbox: &str,
        now: i64,
    ) -> Result<QueueEntry, StoreError> {
        self.release_if(id, now, |q| {
            q.gate_held()
                && q.origin_mailbox
                    .as_deref()
                    .is_some_and(|o| o.eq_ignore_ascii_case(mailbox))
        })
    }

    /// The gate's held copies of `mailbox`'s forwarding rule, newest first,
    /// at most `limit`; a record that does not decode is skipped (logged).
    pub fn queue_held_copies(
        &self,
        mailbox: &str,
        limit: usize,
    ) -> Result<Vec<QueueEntry>, StoreError> {
        let txn = self.read_txn()?;
        let mut newest = std::collections::VecDeque::with_capacity(limit.min(1024));
        for item in txn.open_table(QUEUE)?.iter()? {
            let (k, v) = item?;
            let q: QueueEntry = match schema::decode(v.value(), "queue") {
                Ok(q) => q,
                Err(e) => {
                    tracing::warn!(id = %id_hex(k.value()), error = %e, "queue record skipped");
                    continue;
                }
            };
            let mine = q
                .origin_mailbox
                .as_deref()
                .is_some_and(|o| o.eq_ignore_ascii_case(mailbox));
            if q.gate_held() && mine {
                // Ids grow with time: the last ones kept are the newest.
                if newest.len() == limit {
                    newest.pop_front();
                }
                if limit > 0 {
                    newest.push_back(q);
                }
            }
        }
        Ok(newest.into_iter().rev().collect())
    }

    fn release_if(
        &self,
        id: Id,
        now: i64,
        allowed: impl Fn(&QueueEntry) -> bool,
    ) -> Result<QueueEntry, StoreError> {
        let txn = self.jtxn()?;
        let old = {
            let mut queue = txn.open_table(QUEUE)?;
            let old: QueueEntry = match queue.get(id)? {
                Some(g) => schema::decode(g.value(), "queue")?,
                None => return Err(not_found(id)),
            };
            if !allowed(&old) {
                return Err(not_found(id));
            }
            let mut e = old.clone();
            if old.gate_held() {
                e.created = now;
                e.next_attempt = now;
            }
            e.held = false;
            e.hold_reason = None;
            e.expires = None;
            queue.insert(id, schema::encode(&e)?.as_slice())?;
            old
        };
        txn.commit()?;
        Ok(old)
    }

    /// Removes the held entries whose expiry is at or before `now` (the
    /// forward gate's copies after `forward.discard_keep_days`), at most
    /// [`EXPIRE_BATCH_MAX`] per call, releasing their blobs; returns them
    /// so the caller logs each removal with its reason. Entries without an
    /// expiry (an operator's hold, a reconstruct's) are never touched.
    pub fn queue_expire(&self, now: i64) -> Result<Vec<QueueEntry>, StoreError> {
        let txn = self.jtxn()?;
        let mut gone = Vec::new();
        let mut freed = Vec::new();
        {
            let mut queue = txn.open_table(QUEUE)?;
            for item in queue.iter()? {
                let (_, v) = item?;
                let e: QueueEntry = schema::decode(v.value(), "queue")?;
                if e.held && e.expires.is_some_and(|t| t <= now) {
                    gone.push(e);
                    if gone.len() >= EXPIRE_BATCH_MAX {
                        break;
                    }
                }
            }
            let mut refs = txn.open_table(BLOBS)?;
            for e in &gone {
                queue.remove(e.id)?;
                if blobs::release(&mut refs, e.blob)? {
                    freed.push(e.blob);
                }
            }
        }
        if gone.is_empty() {
            txn.abort()?;
            return Ok(gone);
        }
        txn.commit()?;
        self.delete_blob_files(&freed);
        Ok(gone)
    }

    /// Removes a queue entry (delivered, bounced or deleted by an operator)
    /// and releases its blob; the file goes once nothing else uses it.
    pub fn queue_remove(&self, id: Id) -> Result<(), StoreError> {
        // Group commit: removals that arrive while one commits wait for the
        // lock and go together in the next transaction, one synced commit
        // for all (the relay settles many deliveries at once). A removal
        // finds its result ready if the leader before it took it along.
        crate::offload::check("queue removal");
        let (tx, rx) = std::sync::mpsc::channel();
        lock(&self.removals.pending).push((id, tx));
        let _leader = lock(&self.removals.leader);
        if let Ok(result) = rx.try_recv() {
            return result;
        }
        let group = std::mem::take(&mut *lock(&self.removals.pending));
        if group.is_empty() {
            // Taken by a leader that has not answered yet: cannot happen
            // while the leader lock is held, but never commit nothing.
            return rx.recv().unwrap_or(Err(StoreError::Closed));
        }
        let ids: Vec<Id> = group.iter().map(|(id, _)| *id).collect();
        // A panic in the group must not leave its callers guessing: each
        // gets an error, and nothing of the group is known to be removed
        // (a retry finds an entry or reports it gone).
        let results =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.remove_group(&ids)))
                .unwrap_or_else(|_| {
                    tracing::error!(entries = ids.len(), "queue removal group panicked");
                    ids.iter()
                        .map(|_| Err(StoreError::Db("queue removal failed".into())))
                        .collect()
                });
        for ((_, reply), result) in group.into_iter().zip(results) {
            let _ = reply.send(result);
        }
        rx.try_recv().unwrap_or(Err(StoreError::Closed))
    }

    /// Removes queue entries `ids` in one journaled transaction and
    /// releases their blobs; a result per id (an unknown or unreadable
    /// entry fails alone; a failed commit fails them all).
    fn remove_group(&self, ids: &[Id]) -> Vec<Removal> {
        type Done = (Vec<Removal>, Vec<Id>);
        let attempt = || -> Result<Done, StoreError> {
            let txn = self.jtxn()?;
            let mut results = Vec::with_capacity(ids.len());
            let mut freed = Vec::new();
            {
                let mut queue = txn.open_table(QUEUE)?;
                let mut refs = txn.open_table(BLOBS)?;
                for &id in ids {
                    let old: Result<QueueEntry, StoreError> = match queue.get(id)? {
                        Some(g) => schema::decode(g.value(), "queue"),
                        None => Err(not_found(id)),
                    };
                    match old {
                        Ok(old) => {
                            queue.remove(id)?;
                            if blobs::release(&mut refs, old.blob)? {
                                freed.push(old.blob);
                            }
                            results.push(Ok(()));
                        }
                        Err(e) => results.push(Err(e)),
                    }
                }
            }
            txn.commit()?;
            Ok((results, freed))
        };
        match attempt() {
            Ok((results, freed)) => {
                if !freed.is_empty() {
                    self.delete_blob_files(&freed);
                }
                results
            }
            Err(e) => ids.iter().map(|_| Err(e.duplicate())).collect(),
        }
    }
}
