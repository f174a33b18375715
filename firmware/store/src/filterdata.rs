//! What the spam filter and the forward gate keep (issue 5), for
//! `mxrack-filter`: the statistical classifier's token counts, the log of
//! forwarded copies, per destination per day counters, the adapted discard
//! thresholds with their history, and complaint samples.
//!
//! The store only keeps and bounds these records; every decision (what a
//! token is, what a threshold should become) is made in `mxrack-filter`.
//! Every write is one durable redb transaction; one message learned is one
//! transaction, however many tokens it has.
//!
//! The tables are declared here and created on first write; reads treat a
//! missing table as empty, so a store made before this module works as is.
//! Every table is bounded (the `*_MAX` and `*_DAYS` constants): old records
//! are pruned in the transaction that adds new ones.
//!
//! Token counts are the one exception to "records are JSON": a classifier
//! holds hundreds of thousands of them, so each is a fixed-width tuple
//! `(spam, ham, last_day)` keyed by a 64-bit hash of the token.

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition, TableError};
use serde::{Deserialize, Serialize};

use crate::ids::now_secs;
use crate::schema::{self, COUNTERS};
use crate::{Id, Store, StoreError};

/// Most tokens the classifier keeps. Above it, learning prunes the table
/// back to [`BAYES_TOKENS_PRUNE_TO`] (rare and old tokens first).
pub const BAYES_TOKENS_MAX: u64 = 300_000;
/// What pruning leaves, so pruning is rare (not once per learned message).
pub const BAYES_TOKENS_PRUNE_TO: u64 = BAYES_TOKENS_MAX * 9 / 10;
/// Most learned-message signatures remembered (to relearn a message moved
/// out of Junk instead of counting it twice); the oldest go first.
pub const BAYES_SEEN_MAX: u64 = 100_000;
/// Forwarded copies are remembered this many days (a complaint about an
/// older one can no longer be matched)...
pub const FORWARD_LOG_DAYS: i64 = 30;
/// ...and at most this many.
pub const FORWARD_LOG_MAX: u64 = 500_000;
/// Per destination per day counters are kept this many days.
pub const FORWARD_DAYS_KEPT: i64 = 400;
/// Threshold changes kept (newest).
pub const THRESHOLD_CHANGES_MAX: u64 = 1_000;
/// Complaint samples kept (newest).
pub const COMPLAINT_SAMPLES_MAX: u64 = 100;
/// Records removed per pruning pass of a log table, so one write never
/// turns into a long scan.
const PRUNE_BATCH_MAX: usize = 1_000;

/// `bayes_tokens`: token hash -> (messages learned as spam with it, as ham,
/// last day (since the epoch) it was learned or seen in a learned message).
pub(crate) const BAYES_TOKENS: TableDefinition<u64, (u32, u32, u32)> =
    TableDefinition::new("bayes_tokens");
/// `bayes_seen`: message signature -> [`SeenRecord`].
pub(crate) const BAYES_SEEN: TableDefinition<&str, &[u8]> = TableDefinition::new("bayes_seen");
/// Counters (in `counters`): messages learned as spam / as ham.
const BAYES_SPAM_COUNTER: &str = "bayes_spam_learned";
const BAYES_HAM_COUNTER: &str = "bayes_ham_learned";
/// Counter (in `counters`): the token format the learned data is in (the
/// filter's `tokens::TOKEN_FORMAT`). Absent in a store made before formats
/// were recorded: [`BAYES_FORMAT_UNRECORDED`].
const BAYES_FORMAT_COUNTER: &str = "bayes_token_format";
/// The token format of learned data from before the format was recorded.
pub const BAYES_FORMAT_UNRECORDED: u64 = 1;

/// `forward_log`: trace id -> [`ForwardRecord`]. Ids increase with time, so
/// the oldest are first.
pub(crate) const FORWARD_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("forward_log");
/// `forward_by_message_id`: Message-ID of a forwarded copy -> its newest trace id.
pub(crate) const FORWARD_BY_MESSAGE_ID: TableDefinition<&str, u64> =
    TableDefinition::new("forward_by_message_id");
/// `forward_days`: (destination, day) -> [`ForwardDayCounters`].
pub(crate) const FORWARD_DAYS: TableDefinition<(&str, i64), &[u8]> =
    TableDefinition::new("forward_days");
/// `forward_thresholds`: destination -> [`ThresholdState`].
pub(crate) const FORWARD_THRESHOLDS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("forward_thresholds");
/// `forward_threshold_changes`: change id -> [`ThresholdChangeRecord`].
pub(crate) const FORWARD_CHANGES: TableDefinition<u64, &[u8]> =
    TableDefinition::new("forward_threshold_changes");
/// `complaint_samples`: sample id -> [`ComplaintSample`].
pub(crate) const COMPLAINT_SAMPLES: TableDefinition<u64, &[u8]> =
    TableDefinition::new("complaint_samples");

/// Learned-message record: its class and when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct SeenRecord {
    spam: bool,
    day: i64,
}

/// The classifier's counts for a set of tokens, read in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BayesCounts {
    /// Messages learned as spam / as ham, in total.
    pub spam_learned: u64,
    pub ham_learned: u64,
    /// For each token asked, in order: (spam messages, ham messages) it was in.
    pub tokens: Vec<(u32, u32)>,
}

/// What learning one message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnOutcome {
    /// Counted for the first time.
    Learned,
    /// It had been learned as the other class; that was undone first.
    Relearned,
    /// Already learned as this class; nothing changed.
    AlreadyLearned,
}

/// A forwarded copy that left the appliance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ForwardRecord {
    /// The destination (a configured destination domain, or the recipient's domain).
    pub destination: String,
    /// Days since the Unix epoch.
    pub day: i64,
    pub message_id: Option<String>,
    pub score: f32,
    /// Complaints already counted about this copy (only the first counts).
    #[serde(default)]
    pub complaints: u32,
}

/// Per destination per day counters.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ForwardDayCounters {
    pub forwards: u64,
    pub discards: u64,
    pub complaints: u64,
}

/// A destination's adapted threshold.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ThresholdState {
    pub threshold: f32,
    /// The configured initial threshold when this state was written; when
    /// the configuration changes it, the configured value wins again.
    pub initial: f32,
    /// The last day the policy ran for this destination.
    pub last_evaluated_day: i64,
    /// The day of the last change (None: never changed).
    pub last_change_day: Option<i64>,
}

/// One threshold change and why it was made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ThresholdChangeRecord {
    /// Assigned by the store.
    #[serde(default)]
    pub id: Id,
    pub day: i64,
    pub destination: String,
    pub from: f32,
    pub to: f32,
    pub reason: String,
    /// The evidence: forwards and complaints in the window, and their rate.
    pub forwards: u64,
    pub complaints: u64,
    pub complaint_rate: f64,
}

/// A complaint report kept for the operator to read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ComplaintSample {
    /// Assigned by the store.
    #[serde(default)]
    pub id: Id,
    /// Unix seconds it was received.
    pub received: i64,
    /// The destination it was counted for (None: unmatched, not counted).
    pub destination: Option<String>,
    pub trace_id: Option<String>,
    pub message_id: Option<String>,
    /// RFC 5965 Feedback-Type (abuse, fraud, ...).
    pub feedback_type: String,
    pub user_agent: Option<String>,
    pub reporting_mta: Option<String>,
    pub original_rcpt_to: Option<String>,
    /// Arrival-Date of the reported message (Unix seconds), when given.
    pub arrival_date: Option<i64>,
    /// The forwarded copy's score, when matched.
    pub score: Option<f32>,
    /// True when it was counted (matched and not a repeat).
    pub counted: bool,
    /// The reported message's header section (truncated).
    pub headers: String,
}

/// The outcome of [`Store::forward_complaint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComplaintCount {
    /// Counted against the destination on the given day.
    Counted,
    /// The copy was already complained about; kept as a sample only.
    Repeat,
    /// No trace id given or no such forwarded copy; kept as a sample only.
    Unmatched,
}

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

fn day_u32(day: i64) -> u32 {
    u32::try_from(day.max(0)).unwrap_or(u32::MAX)
}

fn counter(counters: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64, StoreError> {
    Ok(counters.get(key)?.map_or(0, |g| g.value()))
}

/// Adds `delta` (which may be negative) to every token of `tokens` for one
/// class, saturating at 0.
fn add_tokens(
    table: &mut redb::Table<'_, u64, (u32, u32, u32)>,
    tokens: &[u64],
    spam: bool,
    delta: i32,
    day: u32,
) -> Result<(), StoreError> {
    for &token in tokens {
        let (mut s, mut h, last) = table.get(token)?.map_or((0, 0, 0), |g| g.value());
        let slot = if spam { &mut s } else { &mut h };
        *slot = slot.saturating_add_signed(delta);
        if s == 0 && h == 0 {
            table.remove(token)?;
        } else {
            table.insert(token, (s, h, last.max(day)))?;
        }
    }
    Ok(())
}

/// Prunes the token table down to [`BAYES_TOKENS_PRUNE_TO`] when it is
/// above [`BAYES_TOKENS_MAX`]: the tokens with the oldest "last day" go
/// first, a token's age counting less the more messages it was in (a token
/// seen in one message goes before a common one of the same age).
fn prune_tokens(table: &mut redb::Table<'_, u64, (u32, u32, u32)>) -> Result<usize, StoreError> {
    let len = table.len()?;
    if len <= BAYES_TOKENS_MAX {
        return Ok(0);
    }
    let mut ranked: Vec<(i64, u64)> = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    for item in table.iter()? {
        let (k, v) = item?;
        let (s, h, last) = v.value();
        let weight = i64::from(s.saturating_add(h).min(10)) * 7;
        ranked.push((i64::from(last) + weight, k.value()));
    }
    ranked.sort_unstable();
    let excess = usize::try_from(len - BAYES_TOKENS_PRUNE_TO).unwrap_or(usize::MAX);
    for (_, key) in ranked.iter().take(excess) {
        table.remove(*key)?;
    }
    Ok(excess.min(ranked.len()))
}

/// Removes the first (oldest) records of an id-keyed table beyond `max`.
fn prune_oldest(table: &mut redb::Table<'_, u64, &[u8]>, max: u64) -> Result<(), StoreError> {
    let len = table.len()?;
    if len <= max {
        return Ok(());
    }
    let excess = usize::try_from(len - max).unwrap_or(usize::MAX);
    let mut keys = Vec::new();
    for item in table.iter()?.take(excess.min(PRUNE_BATCH_MAX)) {
        keys.push(item?.0.value());
    }
    for key in keys {
        table.remove(key)?;
    }
    Ok(())
}

fn add_day(
    txn: &redb::WriteTransaction,
    destination: &str,
    day: i64,
    f: impl FnOnce(&mut ForwardDayCounters),
) -> Result<(), StoreError> {
    let mut days = txn.open_table(FORWARD_DAYS)?;
    let mut counters: ForwardDayCounters = match days.get((destination, day))? {
        Some(g) => schema::decode(g.value(), "forward day")?,
        None => ForwardDayCounters::default(),
    };
    f(&mut counters);
    days.insert((destination, day), schema::encode(&counters)?.as_slice())?;
    Ok(())
}

fn check_destination(destination: &str) -> Result<(), StoreError> {
    if destination.is_empty() || destination.len() > 255 {
        return Err(StoreError::Invalid {
            what: "destination",
            why: format!("{destination:?}"),
        });
    }
    Ok(())
}

/// Longest Message-ID kept in the forward log index.
const MESSAGE_ID_BYTES_MAX: usize = 998;

impl Store {
    /// The token format the learned data is in.
    fn bayes_format(counters: &impl ReadableTable<&'static str, u64>) -> Result<u64, StoreError> {
        Ok(counters
            .get(BAYES_FORMAT_COUNTER)?
            .map_or(BAYES_FORMAT_UNRECORDED, |g| g.value()))
    }

    /// The classifier's totals and the counts of `tokens` (hashes), in
    /// order. Data learned in another token format than `format` is not
    /// read: totals and counts are then 0 (the classifier starts again).
    pub fn bayes_counts(&self, format: u64, tokens: &[u64]) -> Result<BayesCounts, StoreError> {
        let txn = self.read_txn()?;
        let counters = txn.open_table(COUNTERS)?;
        if Self::bayes_format(&counters)? != format {
            return Ok(BayesCounts {
                spam_learned: 0,
                ham_learned: 0,
                tokens: vec![(0, 0); tokens.len()],
            });
        }
        let mut out = BayesCounts {
            spam_learned: counter(&counters, BAYES_SPAM_COUNTER)?,
            ham_learned: counter(&counters, BAYES_HAM_COUNTER)?,
            tokens: Vec::with_capacity(tokens.len()),
        };
        match open_read(&txn, BAYES_TOKENS)? {
            Some(table) => {
                for &token in tokens {
                    let (s, h, _) = table.get(token)?.map_or((0, 0, 0), |g| g.value());
                    out.tokens.push((s, h));
                }
            }
            None => out.tokens.resize(tokens.len(), (0, 0)),
        }
        Ok(out)
    }

    /// (messages learned as spam, as ham) in token format `format` (0, 0
    /// for data of another format): two counter reads, so a scorer can skip
    /// tokenising while the classifier has too little to go on.
    pub fn bayes_learned(&self, format: u64) -> Result<(u64, u64), StoreError> {
        let txn = self.read_txn()?;
        let counters = txn.open_table(COUNTERS)?;
        if Self::bayes_format(&counters)? != format {
            return Ok((0, 0));
        }
        Ok((
            counter(&counters, BAYES_SPAM_COUNTER)?,
            counter(&counters, BAYES_HAM_COUNTER)?,
        ))
    }

    /// (messages learned as spam, as ham, distinct tokens kept, token
    /// format), whatever the format.
    pub fn bayes_totals(&self) -> Result<(u64, u64, u64, u64), StoreError> {
        let txn = self.read_txn()?;
        let counters = txn.open_table(COUNTERS)?;
        let tokens = match open_read(&txn, BAYES_TOKENS)? {
            Some(t) => t.len()?,
            None => 0,
        };
        Ok((
            counter(&counters, BAYES_SPAM_COUNTER)?,
            counter(&counters, BAYES_HAM_COUNTER)?,
            tokens,
            Self::bayes_format(&counters)?,
        ))
    }

    /// Learns one message, identified by `signature`, with its distinct
    /// token hashes (in token format `format`), as spam or ham on `day`:
    /// one durable transaction. Data learned in another format cannot be
    /// mixed with these tokens (their hashes mean other things), and the
    /// messages are not kept to tokenize again: it is dropped in this same
    /// transaction (tokens, signatures, both totals) and the format
    /// recorded, so the classifier relearns from the Junk moves that follow.
    /// A message already learned as the other class is unlearned first (a
    /// message moved out of Junk); one already learned as this class is
    /// left alone. Prunes the token and signature tables to their bounds.
    pub fn bayes_learn(
        &self,
        format: u64,
        signature: &str,
        tokens: &[u64],
        spam: bool,
        day: i64,
    ) -> Result<LearnOutcome, StoreError> {
        if signature.is_empty() || signature.len() > 255 {
            return Err(StoreError::Invalid {
                what: "message signature",
                why: format!("{} bytes", signature.len()),
            });
        }
        let txn = self.write_txn()?;
        {
            let mut counters = txn.open_table(COUNTERS)?;
            let old = Self::bayes_format(&counters)?;
            if old != format {
                txn.delete_table(BAYES_TOKENS)?;
                txn.delete_table(BAYES_SEEN)?;
                counters.insert(BAYES_SPAM_COUNTER, 0)?;
                counters.insert(BAYES_HAM_COUNTER, 0)?;
                counters.insert(BAYES_FORMAT_COUNTER, format)?;
                tracing::info!(
                    old,
                    new = format,
                    "classifier data of an older token format dropped"
                );
            }
        }
        let outcome = {
            let mut seen = txn.open_table(BAYES_SEEN)?;
            let previous: Option<SeenRecord> = match seen.get(signature)? {
                Some(g) => Some(schema::decode(g.value(), "bayes seen")?),
                None => None,
            };
            let mut counters = txn.open_table(COUNTERS)?;
            let mut table = txn.open_table(BAYES_TOKENS)?;
            let key = |spam: bool| {
                if spam {
                    BAYES_SPAM_COUNTER
                } else {
                    BAYES_HAM_COUNTER
                }
            };
            let outcome = match previous {
                Some(p) if p.spam == spam => LearnOutcome::AlreadyLearned,
                Some(p) => {
                    add_tokens(&mut table, tokens, p.spam, -1, day_u32(day))?;
                    let n = counter(&counters, key(p.spam))?.saturating_sub(1);
                    counters.insert(key(p.spam), n)?;
                    LearnOutcome::Relearned
                }
                None => LearnOutcome::Learned,
            };
            if outcome != LearnOutcome::AlreadyLearned {
                add_tokens(&mut table, tokens, spam, 1, day_u32(day))?;
                let n = counter(&counters, key(spam))?.saturating_add(1);
                counters.insert(key(spam), n)?;
                seen.insert(
                    signature,
                    schema::encode(&SeenRecord { spam, day })?.as_slice(),
                )?;
                let pruned = prune_tokens(&mut table)?;
                if pruned > 0 {
                    tracing::info!(pruned, "classifier tokens pruned");
                }
                if seen.len()? > BAYES_SEEN_MAX {
                    prune_seen(&mut seen)?;
                }
            }
            outcome
        };
        txn.commit()?;
        Ok(outcome)
    }

    /// Records a forwarded copy leaving for `record.destination` and counts
    /// it for its day; returns its trace id. Prunes the log to its bounds.
    pub fn forward_log_add(&self, record: &ForwardRecord) -> Result<Id, StoreError> {
        check_destination(&record.destination)?;
        let id = self.next_id();
        let txn = self.counters_txn()?;
        {
            let mut log = txn.open_table(FORWARD_LOG)?;
            let mut by_mid = txn.open_table(FORWARD_BY_MESSAGE_ID)?;
            log.insert(id, schema::encode(record)?.as_slice())?;
            if let Some(mid) = &record.message_id
                && !mid.is_empty()
                && mid.len() <= MESSAGE_ID_BYTES_MAX
            {
                by_mid.insert(mid.as_str(), id)?;
            }
            // Drop what is too old or beyond the count, oldest first.
            let cutoff = record.day - FORWARD_LOG_DAYS;
            let len = log.len()?;
            let mut over = len.saturating_sub(FORWARD_LOG_MAX);
            let mut drop = Vec::new();
            for item in log.iter()?.take(PRUNE_BATCH_MAX) {
                let (k, v) = item?;
                let old: ForwardRecord = schema::decode(v.value(), "forward log")?;
                if old.day >= cutoff && over == 0 {
                    break;
                }
                over = over.saturating_sub(1);
                drop.push((k.value(), old.message_id));
            }
            for (key, mid) in drop {
                log.remove(key)?;
                if let Some(mid) = mid {
                    let points_here = by_mid.get(mid.as_str())?.map(|g| g.value()) == Some(key);
                    if points_here {
                        by_mid.remove(mid.as_str())?;
                    }
                }
            }
        }
        add_day(&txn, &record.destination, record.day, |c| {
            c.forwards = c.forwards.saturating_add(1);
        })?;
        txn.commit()?;
        Ok(id)
    }

    /// Counts a forwarded copy discarded by the gate.
    pub fn forward_count_discard(&self, destination: &str, day: i64) -> Result<(), StoreError> {
        check_destination(destination)?;
        let txn = self.counters_txn()?;
        add_day(&txn, destination, day, |c| {
            c.discards = c.discards.saturating_add(1);
        })?;
        txn.commit()?;
        Ok(())
    }

    /// The forwarded copy with trace id `trace`, or else the newest one
    /// with Message-ID `message_id`.
    pub fn forward_find(
        &self,
        trace: Option<Id>,
        message_id: Option<&str>,
    ) -> Result<Option<(Id, ForwardRecord)>, StoreError> {
        let txn = self.read_txn()?;
        let Some(log) = open_read(&txn, FORWARD_LOG)? else {
            return Ok(None);
        };
        let mut id = trace.filter(|t| log.get(*t).ok().flatten().is_some());
        if id.is_none()
            && let Some(mid) =
                message_id.filter(|m| !m.is_empty() && m.len() <= MESSAGE_ID_BYTES_MAX)
            && let Some(index) = open_read(&txn, FORWARD_BY_MESSAGE_ID)?
        {
            id = index.get(mid)?.map(|g| g.value());
        }
        let Some(id) = id else { return Ok(None) };
        match log.get(id)? {
            Some(g) => Ok(Some((id, schema::decode(g.value(), "forward log")?))),
            None => Ok(None),
        }
    }

    /// Records a complaint: when `trace` names a forwarded copy not yet
    /// complained about, counts it for `sample.destination` (which the
    /// caller took from that copy) on `day`; keeps `sample` either way
    /// (the newest [`COMPLAINT_SAMPLES_MAX`]). One transaction.
    pub fn forward_complaint(
        &self,
        trace: Option<Id>,
        mut sample: ComplaintSample,
        day: i64,
    ) -> Result<ComplaintCount, StoreError> {
        let txn = self.write_txn()?;
        let outcome = {
            let mut log = txn.open_table(FORWARD_LOG)?;
            let record: Option<ForwardRecord> = match trace {
                Some(t) => match log.get(t)? {
                    Some(g) => Some(schema::decode(g.value(), "forward log")?),
                    None => None,
                },
                None => None,
            };
            match (trace, record) {
                (Some(t), Some(mut record)) => {
                    record.complaints = record.complaints.saturating_add(1);
                    log.insert(t, schema::encode(&record)?.as_slice())?;
                    sample.destination = Some(record.destination.clone());
                    sample.score = Some(record.score);
                    if record.complaints == 1 {
                        ComplaintCount::Counted
                    } else {
                        ComplaintCount::Repeat
                    }
                }
                _ => ComplaintCount::Unmatched,
            }
        };
        sample.counted = outcome == ComplaintCount::Counted;
        if sample.counted
            && let Some(dest) = &sample.destination
        {
            add_day(&txn, dest, day, |c| {
                c.complaints = c.complaints.saturating_add(1);
            })?;
        }
        {
            let mut samples = txn.open_table(COMPLAINT_SAMPLES)?;
            sample.id = self.next_id();
            if sample.received == 0 {
                sample.received = now_secs();
            }
            samples.insert(sample.id, schema::encode(&sample)?.as_slice())?;
            prune_oldest(&mut samples, COMPLAINT_SAMPLES_MAX)?;
        }
        txn.commit()?;
        Ok(outcome)
    }

    /// Every destination's counters for the days `from_day..=to_day`.
    pub fn forward_days(
        &self,
        from_day: i64,
        to_day: i64,
    ) -> Result<Vec<(String, i64, ForwardDayCounters)>, StoreError> {
        let txn = self.read_txn()?;
        let Some(days) = open_read(&txn, FORWARD_DAYS)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in days.iter()? {
            let (k, v) = item?;
            let (dest, day) = k.value();
            if (from_day..=to_day).contains(&day) {
                out.push((
                    dest.to_string(),
                    day,
                    schema::decode(v.value(), "forward day")?,
                ));
            }
        }
        Ok(out)
    }

    /// Every destination with an adapted threshold state.
    pub fn forward_thresholds(&self) -> Result<Vec<(String, ThresholdState)>, StoreError> {
        let txn = self.read_txn()?;
        let Some(table) = open_read(&txn, FORWARD_THRESHOLDS)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            out.push((
                k.value().to_string(),
                schema::decode(v.value(), "threshold")?,
            ));
        }
        Ok(out)
    }

    /// One destination's adapted threshold state, if any.
    pub fn forward_threshold(
        &self,
        destination: &str,
    ) -> Result<Option<ThresholdState>, StoreError> {
        let txn = self.read_txn()?;
        let Some(table) = open_read(&txn, FORWARD_THRESHOLDS)? else {
            return Ok(None);
        };
        match table.get(destination)? {
            Some(g) => Ok(Some(schema::decode(g.value(), "threshold")?)),
            None => Ok(None),
        }
    }

    /// Writes the outcome of one policy run for `day` in one transaction:
    /// `states` are the new states of the destinations evaluated, `changes`
    /// the threshold changes among them. A destination already evaluated
    /// for `day` or later by a concurrent run is skipped with its change.
    /// Returns the changes kept (with their ids). Prunes the history and
    /// the day counters to their bounds.
    pub fn forward_apply(
        &self,
        day: i64,
        states: &[(String, ThresholdState)],
        changes: &[ThresholdChangeRecord],
    ) -> Result<Vec<ThresholdChangeRecord>, StoreError> {
        let txn = self.write_txn()?;
        let mut kept = Vec::new();
        {
            let mut table = txn.open_table(FORWARD_THRESHOLDS)?;
            let mut history = txn.open_table(FORWARD_CHANGES)?;
            for (dest, state) in states {
                check_destination(dest)?;
                let current: Option<ThresholdState> = match table.get(dest.as_str())? {
                    Some(g) => Some(schema::decode(g.value(), "threshold")?),
                    None => None,
                };
                if current.is_some_and(|c| c.last_evaluated_day >= day) {
                    continue;
                }
                table.insert(dest.as_str(), schema::encode(state)?.as_slice())?;
                for change in changes.iter().filter(|c| &c.destination == dest) {
                    let mut change = change.clone();
                    change.id = self.next_id();
                    history.insert(change.id, schema::encode(&change)?.as_slice())?;
                    kept.push(change);
                }
            }
            prune_oldest(&mut history, THRESHOLD_CHANGES_MAX)?;
            // Day counters older than the kept span.
            let mut days = txn.open_table(FORWARD_DAYS)?;
            let mut old = Vec::new();
            for item in days.iter()? {
                let (k, _) = item?;
                let (dest, d) = k.value();
                if d < day - FORWARD_DAYS_KEPT {
                    old.push((dest.to_string(), d));
                    if old.len() >= PRUNE_BATCH_MAX {
                        break;
                    }
                }
            }
            for (dest, d) in old {
                days.remove((dest.as_str(), d))?;
            }
        }
        txn.commit()?;
        Ok(kept)
    }

    /// The newest threshold changes, newest first.
    pub fn forward_changes(&self, limit: usize) -> Result<Vec<ThresholdChangeRecord>, StoreError> {
        self.newest(FORWARD_CHANGES, limit, "threshold change")
    }

    /// The newest complaint samples, newest first.
    pub fn forward_samples(&self, limit: usize) -> Result<Vec<ComplaintSample>, StoreError> {
        self.newest(COMPLAINT_SAMPLES, limit, "complaint sample")
    }

    fn newest<T: serde::de::DeserializeOwned>(
        &self,
        def: TableDefinition<u64, &[u8]>,
        limit: usize,
        what: &str,
    ) -> Result<Vec<T>, StoreError> {
        let txn = self.read_txn()?;
        let Some(table) = open_read(&txn, def)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in table.iter()?.rev().take(limit) {
            let (_, v) = item?;
            out.push(schema::decode(v.value(), what)?);
        }
        Ok(out)
    }
}

/// Removes the oldest learned-message signatures down to 90% of the bound.
fn prune_seen(seen: &mut redb::Table<'_, &str, &[u8]>) -> Result<(), StoreError> {
    let mut all = Vec::new();
    for item in seen.iter()? {
        let (k, v) = item?;
        let record: SeenRecord = schema::decode(v.value(), "bayes seen")?;
        all.push((record.day, k.value().to_string()));
    }
    all.sort_unstable();
    let excess = all
        .len()
        .saturating_sub(usize::try_from(BAYES_SEEN_MAX * 9 / 10).unwrap_or(0));
    for (_, key) in all.into_iter().take(excess) {
        seen.remove(key.as_str())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, std::sync::Arc<Store>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        (dir, store)
    }

    #[test]
    fn learning_counts_once_and_relearns() {
        let (_dir, store) = store();
        let empty = store.bayes_counts(2, &[1, 2]).expect("counts");
        assert_eq!(empty.tokens, vec![(0, 0), (0, 0)]);
        assert_eq!(
            store
                .bayes_learn(2, "m1", &[1, 2], true, 100)
                .expect("learn"),
            LearnOutcome::Learned
        );
        assert_eq!(
            store
                .bayes_learn(2, "m1", &[1, 2], true, 100)
                .expect("learn"),
            LearnOutcome::AlreadyLearned
        );
        store
            .bayes_learn(2, "m2", &[2, 3], false, 100)
            .expect("learn");
        let c = store.bayes_counts(2, &[1, 2, 3, 4]).expect("counts");
        assert_eq!((c.spam_learned, c.ham_learned), (1, 1));
        assert_eq!(c.tokens, vec![(1, 0), (1, 1), (0, 1), (0, 0)]);
        // Moved out of Junk: m1 becomes ham.
        assert_eq!(
            store
                .bayes_learn(2, "m1", &[1, 2], false, 101)
                .expect("learn"),
            LearnOutcome::Relearned
        );
        let c = store.bayes_counts(2, &[1, 2, 3]).expect("counts");
        assert_eq!((c.spam_learned, c.ham_learned), (0, 2));
        assert_eq!(c.tokens, vec![(0, 1), (0, 2), (0, 1)]);
        assert_eq!(store.bayes_totals().expect("totals"), (0, 2, 3, 2));
    }

    #[test]
    fn another_token_format_is_dropped_when_learning() {
        let (_dir, store) = store();
        // Data of the unrecorded (first) format, as a store before formats.
        store
            .bayes_learn(BAYES_FORMAT_UNRECORDED, "m1", &[1, 2], true, 100)
            .expect("learn");
        assert_eq!(
            store.bayes_learned(BAYES_FORMAT_UNRECORDED).expect("n"),
            (1, 0)
        );
        // Format 2 reads nothing of it...
        assert_eq!(store.bayes_learned(2).expect("n"), (0, 0));
        let c = store.bayes_counts(2, &[1, 2]).expect("counts");
        assert_eq!((c.spam_learned, c.tokens), (0, vec![(0, 0), (0, 0)]));
        // ...and learning in format 2 drops it: m1 is learned anew.
        assert_eq!(
            store.bayes_learn(2, "m1", &[3], false, 101).expect("learn"),
            LearnOutcome::Learned
        );
        assert_eq!(store.bayes_totals().expect("totals"), (0, 1, 1, 2));
        let c = store.bayes_counts(2, &[1, 2, 3]).expect("counts");
        assert_eq!(c.tokens, vec![(0, 0), (0, 0), (0, 1)]);
        assert_eq!(
            store.bayes_learned(BAYES_FORMAT_UNRECORDED).expect("n"),
            (0, 0)
        );
    }

    #[test]
    fn forward_log_find_and_complaints() {
        let (_dir, store) = store();
        let record = ForwardRecord {
            destination: "hotmail.com".into(),
            day: 20_000,
            message_id: Some("<a@b>".into()),
            score: 0.5,
            complaints: 0,
        };
        let id = store.forward_log_add(&record).expect("add");
        store
            .forward_count_discard("hotmail.com", 20_000)
            .expect("discard");
        let (found, r) = store
            .forward_find(None, Some("<a@b>"))
            .expect("find")
            .expect("found");
        assert_eq!((found, r.score), (id, 0.5));
        assert!(
            store
                .forward_find(Some(id + 1), None)
                .expect("find")
                .is_none()
        );
        let sample = ComplaintSample {
            id: 0,
            received: 0,
            destination: None,
            trace_id: None,
            message_id: None,
            feedback_type: "abuse".into(),
            user_agent: None,
            reporting_mta: None,
            original_rcpt_to: None,
            arrival_date: None,
            score: None,
            counted: false,
            headers: String::new(),
        };
        assert_eq!(
            store
                .forward_complaint(Some(id), sample.clone(), 20_001)
                .expect("c"),
            ComplaintCount::Counted
        );
        assert_eq!(
            store
                .forward_complaint(Some(id), sample.clone(), 20_001)
                .expect("c"),
            ComplaintCount::Repeat
        );
        assert_eq!(
            store.forward_complaint(None, sample, 20_001).expect("c"),
            ComplaintCount::Unmatched
        );
        let days = store.forward_days(20_000, 20_001).expect("days");
        assert_eq!(
            days,
            vec![
                (
                    "hotmail.com".to_string(),
                    20_000,
                    ForwardDayCounters {
                        forwards: 1,
                        discards: 1,
                        complaints: 0
                    }
                ),
                (
                    "hotmail.com".to_string(),
                    20_001,
                    ForwardDayCounters {
                        forwards: 0,
                        discards: 0,
                        complaints: 1
                    }
                ),
            ]
        );
        let samples = store.forward_samples(10).expect("samples");
        assert_eq!(samples.len(), 3);
        assert!(!samples[0].counted && samples[2].counted);
        assert_eq!(samples[2].destination.as_deref(), Some("hotmail.com"));
    }

    #[test]
    fn apply_skips_a_day_already_evaluated() {
        let (_dir, store) = store();
        let state = ThresholdState {
            threshold: 0.5,
            initial: 1.0,
            last_evaluated_day: 10,
            last_change_day: Some(10),
        };
        let change = ThresholdChangeRecord {
            id: 0,
            day: 10,
            destination: "hotmail.com".into(),
            from: 1.0,
            to: 0.5,
            reason: "test".into(),
            forwards: 10,
            complaints: 1,
            complaint_rate: 0.1,
        };
        let kept = store
            .forward_apply(
                10,
                &[("hotmail.com".into(), state.clone())],
                std::slice::from_ref(&change),
            )
            .expect("apply");
        assert_eq!(kept.len(), 1);
        let again = store
            .forward_apply(10, &[("hotmail.com".into(), state.clone())], &[change])
            .expect("apply");
        assert!(again.is_empty());
        assert_eq!(
            store.forward_threshold("hotmail.com").expect("get"),
            Some(state)
        );
        assert_eq!(store.forward_changes(10).expect("changes").len(), 1);
    }
}
