//! The appliance's own events and its status page (issue 6).
//!
//! * An *event* is one observation that changed state: a disk's errors
//!   rising, an array going degraded, a rebuild's progress, a kernel limit at
//!   90 %, the data disk filling up, a self-check failing. It has a time, a
//!   severity, a component (a disk by its serial number, never by its kernel
//!   name: invariant 5) and a text.
//! * A *status entry* is what the status page shows, in the seed's form: a
//!   date and time, a title, then updates. Incidents are opened, updated and
//!   resolved by events that carry an incident key (`array:md0`,
//!   `disk:SN-0001`); maintenance notes are written by the operator.
//!
//! Each event, with the incident change it carries, is one durable redb
//! transaction. Both tables are bounded: the oldest events and entries are
//! trimmed in the same transaction that adds a new one.
//!
//! The three tables are declared here and created on first write; reads
//! treat a missing table as empty, so a store made before this module works
//! as is.

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition, TableError};
use serde::{Deserialize, Serialize};

use crate::schema::{self, COUNTERS};
use crate::{Store, StoreError};

/// `events`: event id -> [`Event`].
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// `status_entries`: entry id -> [`StatusEntry`].
pub(crate) const STATUS_ENTRIES: TableDefinition<u64, &[u8]> =
    TableDefinition::new("status_entries");
/// `status_open`: incident key -> id of its open entry.
pub(crate) const STATUS_OPEN: TableDefinition<&str, u64> = TableDefinition::new("status_open");
/// Counters: the last event id and the last status entry id handed out.
const EVENT_ID_COUNTER: &str = "last_event_id";
const STATUS_ID_COUNTER: &str = "last_status_id";

/// Status entries kept (incidents and notes); older ones are trimmed.
pub const STATUS_ENTRIES_KEPT: u64 = 1_000;
/// Updates kept per entry; a long incident keeps its first and newest ones.
pub const STATUS_UPDATES_MAX: usize = 200;
/// Longest event or update text, title and component, in bytes.
pub const EVENT_TEXT_BYTES_MAX: usize = 2_048;
pub const STATUS_TITLE_BYTES_MAX: usize = 200;
pub const COMPONENT_BYTES_MAX: usize = 200;
/// Fewest events a caller may ask to keep.
pub const EVENTS_KEPT_MIN: u64 = 100;

/// How bad an event is. Ordered: `Critical` is the worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Notice,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    /// Unix seconds.
    pub time: i64,
    pub severity: Severity,
    /// What it is about: `disk SN-0001`, `md0`, `limit fs.file-max`, ...
    pub component: String,
    pub text: String,
    /// The status entry this event opened or updated.
    #[serde(default)]
    pub entry: Option<u64>,
}

/// What an event does to the status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncidentAction {
    /// Only recorded as an event.
    None,
    /// Opens the incident `key` with `title` (or, when it is open already,
    /// adds the event's text as an update).
    Open { key: String, title: String },
    /// Adds an update to the open incident `key`; nothing when none is open.
    Update { key: String },
    /// Adds the final update and closes the open incident `key`; nothing
    /// when none is open.
    Resolve { key: String },
}

/// An event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Unix seconds.
    pub time: i64,
    pub severity: Severity,
    pub component: String,
    pub text: String,
    pub incident: IncidentAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// Opened and updated by the appliance's own events.
    Incident,
    /// Written by the operator (`mxrack status note`).
    Maintenance,
}

/// One update of a status entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusUpdate {
    /// Unix seconds.
    pub time: i64,
    pub text: String,
}

/// One entry of the status page: date, time, title, then updates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusEntry {
    pub id: u64,
    pub kind: EntryKind,
    /// The incident key (`array:md0`); `None` for notes.
    pub key: Option<String>,
    pub title: String,
    pub component: String,
    /// Unix seconds.
    pub opened: i64,
    /// When the incident was resolved; always `None` for notes.
    pub resolved: Option<i64>,
    /// The worst severity of its events (`Notice` for notes).
    pub severity: Severity,
    /// Oldest first, as stored.
    pub updates: Vec<StatusUpdate>,
}

impl StatusEntry {
    /// Time of the newest update (or the opening).
    pub fn last_activity(&self) -> i64 {
        self.updates.last().map_or(self.opened, |u| u.time)
    }

    pub fn is_open_incident(&self) -> bool {
        self.kind == EntryKind::Incident && self.resolved.is_none()
    }
}

/// Cuts text to `max` bytes on a character boundary.
fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
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

fn next_counter(
    counters: &mut redb::Table<'_, &'static str, u64>,
    key: &str,
) -> Result<u64, StoreError> {
    let next = counters
        .get(key)?
        .map_or(0, |g| g.value())
        .saturating_add(1);
    counters.insert(key, next)?;
    Ok(next)
}

fn push_update(entry: &mut StatusEntry, time: i64, text: &str) {
    entry.updates.push(StatusUpdate {
        time,
        text: bounded(text, EVENT_TEXT_BYTES_MAX),
    });
    if entry.updates.len() > STATUS_UPDATES_MAX {
        // Keep the first update (what happened) and the newest ones.
        entry.updates.remove(1);
    }
}

fn read_entry(
    table: &impl ReadableTable<u64, &'static [u8]>,
    id: u64,
) -> Result<Option<StatusEntry>, StoreError> {
    match table.get(id)? {
        Some(g) => Ok(Some(schema::decode(g.value(), "status entry")?)),
        None => Ok(None),
    }
}

/// Trims the oldest status entries beyond [`STATUS_ENTRIES_KEPT`], forgetting
/// an open incident key that pointed at a trimmed entry.
fn trim_entries(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut entries = txn.open_table(STATUS_ENTRIES)?;
    let mut open = txn.open_table(STATUS_OPEN)?;
    while entries.len()? > STATUS_ENTRIES_KEPT {
        let Some((_, v)) = entries.pop_first()? else {
            break;
        };
        let old: StatusEntry = schema::decode(v.value(), "status entry")?;
        drop(v);
        if let Some(key) = &old.key
            && open.get(key.as_str())?.map(|g| g.value()) == Some(old.id)
        {
            open.remove(key.as_str())?;
        }
    }
    Ok(())
}

impl Store {
    /// Records an event and what it does to the status page in one durable
    /// transaction, keeping at most `events_kept` events (at least
    /// [`EVENTS_KEPT_MIN`]). Returns the event as stored.
    pub fn event_record(&self, new: &NewEvent, events_kept: u64) -> Result<Event, StoreError> {
        let keep = events_kept.max(EVENTS_KEPT_MIN);
        let text = bounded(&new.text, EVENT_TEXT_BYTES_MAX);
        let component = bounded(&new.component, COMPONENT_BYTES_MAX);
        let txn = self.write_txn()?;
        let event;
        {
            let mut counters = txn.open_table(COUNTERS)?;
            let id = next_counter(&mut counters, EVENT_ID_COUNTER)?;
            let mut entries = txn.open_table(STATUS_ENTRIES)?;
            let mut open = txn.open_table(STATUS_OPEN)?;
            let open_entry = |key: &str,
                              entries: &redb::Table<'_, u64, &'static [u8]>,
                              open: &redb::Table<'_, &'static str, u64>|
             -> Result<Option<StatusEntry>, StoreError> {
                match open.get(key)?.map(|g| g.value()) {
                    Some(id) => read_entry(entries, id),
                    None => Ok(None),
                }
            };
            let mut touched: Option<StatusEntry> = None;
            match &new.incident {
                IncidentAction::None => {}
                IncidentAction::Open { key, title } => {
                    let mut entry = match open_entry(key, &entries, &open)? {
                        Some(e) => e,
                        None => {
                            let entry_id = next_counter(&mut counters, STATUS_ID_COUNTER)?;
                            open.insert(key.as_str(), entry_id)?;
                            StatusEntry {
                                id: entry_id,
                                kind: EntryKind::Incident,
                                key: Some(key.clone()),
                                title: bounded(title, STATUS_TITLE_BYTES_MAX),
                                component: component.clone(),
                                opened: new.time,
                                resolved: None,
                                severity: new.severity,
                                updates: Vec::new(),
                            }
                        }
                    };
                    entry.severity = entry.severity.max(new.severity);
                    push_update(&mut entry, new.time, &text);
                    touched = Some(entry);
                }
                IncidentAction::Update { key } => {
                    if let Some(mut entry) = open_entry(key, &entries, &open)? {
                        entry.severity = entry.severity.max(new.severity);
                        push_update(&mut entry, new.time, &text);
                        touched = Some(entry);
                    }
                }
                IncidentAction::Resolve { key } => {
                    if let Some(mut entry) = open_entry(key, &entries, &open)? {
                        push_update(&mut entry, new.time, &text);
                        entry.resolved = Some(new.time);
                        open.remove(key.as_str())?;
                        touched = Some(entry);
                    }
                }
            }
            if let Some(entry) = &touched {
                entries.insert(entry.id, schema::encode(entry)?.as_slice())?;
            }
            event = Event {
                id,
                time: new.time,
                severity: new.severity,
                component,
                text,
                entry: touched.map(|e| e.id),
            };
            let mut events = txn.open_table(EVENTS)?;
            events.insert(id, schema::encode(&event)?.as_slice())?;
            while events.len()? > keep {
                if events.pop_first()?.is_none() {
                    break;
                }
            }
        }
        trim_entries(&txn)?;
        txn.commit()?;
        Ok(event)
    }

    /// The newest `limit` events, newest first.
    pub fn events_recent(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        let txn = self.read_txn()?;
        let Some(table) = open_read(&txn, EVENTS)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in table.iter()?.rev().take(limit) {
            let (_, v) = item?;
            out.push(schema::decode(v.value(), "event")?);
        }
        Ok(out)
    }

    /// The newest `limit` status entries, newest opened first (the status
    /// page's order).
    pub fn status_entries(&self, limit: usize) -> Result<Vec<StatusEntry>, StoreError> {
        let txn = self.read_txn()?;
        let Some(table) = open_read(&txn, STATUS_ENTRIES)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in table.iter()?.rev().take(limit) {
            let (_, v) = item?;
            out.push(schema::decode(v.value(), "status entry")?);
        }
        Ok(out)
    }

    /// The open incidents: (key, entry), in key order.
    pub fn status_open_incidents(&self) -> Result<Vec<(String, StatusEntry)>, StoreError> {
        let txn = self.read_txn()?;
        let (Some(open), Some(entries)) = (
            open_read(&txn, STATUS_OPEN)?,
            open_read(&txn, STATUS_ENTRIES)?,
        ) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in open.iter()? {
            let (k, v) = item?;
            if let Some(entry) = read_entry(&entries, v.value())? {
                out.push((k.value().to_string(), entry));
            }
        }
        Ok(out)
    }

    /// An operator's maintenance note: a new entry titled `title` (with
    /// `text` as its first update), or, with `to`, an update to entry `to`
    /// (a note or an incident). One durable transaction.
    pub fn status_note(
        &self,
        time: i64,
        title: &str,
        text: Option<&str>,
        to: Option<u64>,
    ) -> Result<StatusEntry, StoreError> {
        let title = title.trim();
        if to.is_none() && title.is_empty() {
            return Err(StoreError::Invalid {
                what: "status note",
                why: "the title is empty".into(),
            });
        }
        if title.len() > STATUS_TITLE_BYTES_MAX
            || text.is_some_and(|t| t.len() > EVENT_TEXT_BYTES_MAX)
        {
            return Err(StoreError::Invalid {
                what: "status note",
                why: format!(
                    "titles hold at most {STATUS_TITLE_BYTES_MAX} bytes and texts {EVENT_TEXT_BYTES_MAX}"
                ),
            });
        }
        let txn = self.write_txn()?;
        let entry;
        {
            let mut entries = txn.open_table(STATUS_ENTRIES)?;
            let mut e = match to {
                Some(id) => read_entry(&entries, id)?.ok_or_else(|| StoreError::NotFound {
                    kind: "status entry",
                    name: id.to_string(),
                })?,
                None => {
                    let mut counters = txn.open_table(COUNTERS)?;
                    StatusEntry {
                        id: next_counter(&mut counters, STATUS_ID_COUNTER)?,
                        kind: EntryKind::Maintenance,
                        key: None,
                        title: title.to_string(),
                        component: "operator".into(),
                        opened: time,
                        resolved: None,
                        severity: Severity::Notice,
                        updates: Vec::new(),
                    }
                }
            };
            // An update given with --to: the title argument is its text when
            // no separate text is given.
            let update = match (to, text) {
                (_, Some(t)) if !t.trim().is_empty() => Some(t.trim()),
                (Some(_), _) if !title.is_empty() => Some(title),
                _ => None,
            };
            if let Some(u) = update {
                push_update(&mut e, time, u);
            }
            entries.insert(e.id, schema::encode(&e)?.as_slice())?;
            entry = e;
        }
        trim_entries(&txn)?;
        txn.commit()?;
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, std::sync::Arc<Store>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        (dir, store)
    }

    fn ev(time: i64, severity: Severity, text: &str, incident: IncidentAction) -> NewEvent {
        NewEvent {
            time,
            severity,
            component: "disk SN-0001".into(),
            text: text.into(),
            incident,
        }
    }

    #[test]
    fn an_incident_is_opened_updated_and_resolved_by_events() {
        let (_d, s) = store();
        let key = "disk:SN-0001".to_string();
        let open = IncidentAction::Open {
            key: key.clone(),
            title: "Disk SN-0001 failing".into(),
        };
        let e1 = s
            .event_record(
                &ev(100, Severity::Warning, "errors rising", open.clone()),
                1000,
            )
            .expect("record");
        // Opening an open incident again only adds an update.
        let e2 = s
            .event_record(&ev(160, Severity::Critical, "failed out", open), 1000)
            .expect("record");
        assert_eq!(e1.entry, e2.entry);
        assert_eq!(s.status_open_incidents().expect("open").len(), 1);
        s.event_record(
            &ev(
                200,
                Severity::Info,
                "disk removed",
                IncidentAction::Resolve { key: key.clone() },
            ),
            1000,
        )
        .expect("record");
        assert!(s.status_open_incidents().expect("open").is_empty());
        let entries = s.status_entries(10).expect("entries");
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!(e.severity, Severity::Critical);
        assert_eq!(e.resolved, Some(200));
        assert_eq!(
            e.updates
                .iter()
                .map(|u| u.text.as_str())
                .collect::<Vec<_>>(),
            ["errors rising", "failed out", "disk removed"]
        );
        // Updating or resolving a closed key records the event only.
        let e4 = s
            .event_record(
                &ev(300, Severity::Info, "late", IncidentAction::Update { key }),
                1000,
            )
            .expect("record");
        assert_eq!(e4.entry, None);
        let events = s.events_recent(10).expect("events");
        assert_eq!(events.len(), 4);
        assert_eq!(events[0].text, "late", "newest first");
    }

    #[test]
    fn events_are_bounded_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Store::open(dir.path()).expect("open");
            for i in 0..(EVENTS_KEPT_MIN + 25) {
                s.event_record(
                    &ev(
                        i as i64,
                        Severity::Info,
                        &format!("e{i}"),
                        IncidentAction::None,
                    ),
                    EVENTS_KEPT_MIN,
                )
                .expect("record");
            }
            s.shutdown();
        }
        let s = Store::open(dir.path()).expect("reopen");
        let events = s.events_recent(1000).expect("events");
        assert_eq!(events.len() as u64, EVENTS_KEPT_MIN);
        assert_eq!(events[0].text, format!("e{}", EVENTS_KEPT_MIN + 24));
        assert_eq!(events.last().expect("oldest").text, "e25");
    }

    #[test]
    fn notes_are_entries_and_can_be_updated() {
        let (_d, s) = store();
        let n = s
            .status_note(
                10,
                "Kernel update maintenance",
                Some("Reboot at 22:00 UTC"),
                None,
            )
            .expect("note");
        assert_eq!(n.kind, EntryKind::Maintenance);
        let n2 = s
            .status_note(20, "Back up at 22:06 UTC", None, Some(n.id))
            .expect("update");
        assert_eq!(n2.updates.len(), 2);
        assert_eq!(n2.updates[1].text, "Back up at 22:06 UTC");
        assert!(s.status_note(30, "", None, None).is_err());
        assert!(matches!(
            s.status_note(30, "x", None, Some(999)),
            Err(StoreError::NotFound { .. })
        ));
        // A fresh store (no table yet) lists nothing instead of failing.
        let (_d2, empty) = store();
        assert!(empty.status_entries(10).expect("entries").is_empty());
        assert!(empty.events_recent(10).expect("events").is_empty());
    }

    #[test]
    fn long_incidents_keep_their_first_and_newest_updates() {
        let (_d, s) = store();
        let open = IncidentAction::Open {
            key: "array:md0".into(),
            title: "md0 degraded".into(),
        };
        for i in 0..(STATUS_UPDATES_MAX + 10) {
            s.event_record(
                &ev(i as i64, Severity::Warning, &format!("u{i}"), open.clone()),
                1000,
            )
            .expect("record");
        }
        let e = &s.status_entries(1).expect("entries")[0];
        assert_eq!(e.updates.len(), STATUS_UPDATES_MAX);
        assert_eq!(e.updates[0].text, "u0");
        assert_eq!(
            e.updates.last().expect("newest").text,
            format!("u{}", STATUS_UPDATES_MAX + 9)
        );
    }
}
