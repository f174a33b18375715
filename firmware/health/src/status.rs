//! The status page, in the seed's own form: each entry is a date, a UTC
//! time and a title, then its updates, newest first. Incidents are opened
//! and updated by the appliance's own events; maintenance notes are the
//! operator's (`mxrack status note`). This module builds the page's model
//! (shared by the HTML, JSON and Atom forms in mxrack-web) and renders it
//! for a terminal (`mxrack status`).

use serde::Serialize;
use std::sync::Arc;

use mxrack_store::{EntryKind, StatusEntry, Store, StoreError};

use crate::policy::human_bytes;
use crate::snapshot::{Condition, Snapshot};
use crate::time;

/// Entries shown on the page (the store keeps more).
pub const PAGE_ENTRIES_MAX: usize = 50;

#[derive(Debug, Clone, Serialize)]
pub struct StatusPage {
    pub hostname: String,
    /// Unix seconds.
    pub generated: i64,
    /// One line: "All systems operational" or what is wrong now.
    pub summary: String,
    /// ok, warning, critical
    pub level: String,
    pub open_incidents: usize,
    pub intake_refusal: Option<String>,
    pub conditions: Vec<Condition>,
    pub entries: Vec<StatusEntry>,
    /// The monitor's latest figures (absent when it does not run).
    pub snapshot: Option<Arc<Snapshot>>,
}

/// Builds the page from the store's entries and the latest snapshot.
pub fn build(
    hostname: &str,
    store: &Store,
    snapshot: Option<Arc<Snapshot>>,
    entries_max: usize,
) -> Result<StatusPage, StoreError> {
    let entries = store.status_entries(entries_max)?;
    let open = store.status_open_incidents()?;
    let intake_refusal = store
        .intake_refusal()
        .map(|r| r.to_string())
        .or_else(|| snapshot.as_ref().and_then(|s| s.intake_refusal.clone()));
    let conditions = snapshot
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let critical = open
        .iter()
        .any(|(_, e)| e.severity == mxrack_store::Severity::Critical)
        || intake_refusal.is_some();
    let (level, summary) = if !open.is_empty() {
        let titles: Vec<&str> = open.iter().map(|(_, e)| e.title.as_str()).collect();
        (
            if critical { "critical" } else { "warning" },
            format!(
                "{} open incident{}: {}",
                open.len(),
                if open.len() == 1 { "" } else { "s" },
                titles.join("; ")
            ),
        )
    } else if !conditions.is_empty() {
        (
            "warning",
            format!(
                "Operational, with {} warning{}",
                conditions.len(),
                if conditions.len() == 1 { "" } else { "s" }
            ),
        )
    } else {
        ("ok", "All systems operational".to_string())
    };
    Ok(StatusPage {
        hostname: hostname.to_string(),
        generated: time::now(),
        summary,
        level: level.into(),
        open_incidents: open.len(),
        intake_refusal,
        conditions,
        entries,
        snapshot,
    })
}

/// "2006-03-21: 15:30 UTC" (the seed's heading form).
pub fn heading_time(unix: i64) -> String {
    format!("{}: {}", time::date(unix), time::hm_utc(unix))
}

/// An update's time: "15:30 UTC", with the date when it is not the entry's.
pub fn update_time(entry_opened: i64, unix: i64) -> String {
    if time::date(unix) == time::date(entry_opened) {
        time::hm_utc(unix)
    } else {
        format!("{} {}", time::date(unix), time::hm_utc(unix))
    }
}

/// The entry's state for people: "open", "resolved 16:02 UTC", "maintenance".
pub fn entry_state(e: &StatusEntry) -> String {
    match (e.kind, e.resolved) {
        (EntryKind::Maintenance, _) => "maintenance".into(),
        (EntryKind::Incident, None) => "open".into(),
        (EntryKind::Incident, Some(t)) => format!("resolved {}", update_time(e.opened, t)),
    }
}

/// The page for a terminal.
pub fn render_text(page: &StatusPage) -> String {
    let mut out = format!(
        "{} status, {} {}\n{}\n",
        page.hostname,
        time::date(page.generated),
        time::hm_utc(page.generated),
        page.summary
    );
    if let Some(r) = &page.intake_refusal {
        out.push_str(&format!("NEW MAIL REFUSED: {r}\n"));
    }
    for c in &page.conditions {
        out.push_str(&format!("  {}: {}\n", c.severity, c.text));
    }
    if let Some(s) = &page.snapshot {
        out.push('\n');
        for a in &s.arrays {
            out.push_str(&crate::snapshot::array_line(a));
            out.push('\n');
        }
        if let Some(r) = &s.replica {
            out.push_str(&crate::snapshot::replica_line(r));
            out.push('\n');
            if let Some(p) = &s.replica_last_promotion {
                out.push_str(&format!("replica: last promotion {p}\n"));
            }
        }
        for f in &s.filesystems {
            out.push_str(&format!(
                "{} file system {}: {} free of {} ({}.{}% used)\n",
                f.name,
                f.path,
                human_bytes(f.free_bytes),
                human_bytes(f.size_bytes),
                f.used_permille / 10,
                f.used_permille % 10
            ));
        }
    }
    for e in &page.entries {
        out.push('\n');
        out.push_str(&format!("{}     {}\n", heading_time(e.opened), e.title));
        out.push_str(&format!("({})\n", entry_state(e)));
        for u in e.updates.iter().rev() {
            out.push_str(&format!("{} {}\n", update_time(e.opened, u.time), u.text));
        }
    }
    if page.entries.is_empty() {
        out.push_str("\nNo incidents or maintenance notes.\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxrack_store::{IncidentAction, NewEvent, Severity};

    #[test]
    fn the_page_in_the_seeds_form_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let t0 = time::unix_of(2006, 3, 21, 15, 30, 0);
        let key = "array:md0".to_string();
        let ev = |t: i64, text: &str, incident: IncidentAction| NewEvent {
            time: t,
            severity: Severity::Critical,
            component: "md0".into(),
            text: text.into(),
            incident,
        };
        store
            .event_record(
                &ev(
                    t0,
                    "md0 is degraded",
                    IncidentAction::Open {
                        key: key.clone(),
                        title: "Raid array issues".into(),
                    },
                ),
                1000,
            )
            .expect("event");
        let page = build("mx1.example.net", &store, None, 10).expect("page");
        assert_eq!(page.level, "critical");
        assert!(
            page.summary
                .starts_with("1 open incident: Raid array issues")
        );
        store
            .event_record(
                &ev(
                    t0 + 5 * 3600 + 50 * 60,
                    "Web services restored",
                    IncidentAction::Resolve { key },
                ),
                1000,
            )
            .expect("event");
        store
            .status_note(
                time::unix_of(2006, 4, 9, 19, 10, 0),
                "Kernel update maintenance",
                Some("Reboot between 22:00 and 22:10 UTC."),
                None,
            )
            .expect("note");
        let page = build("mx1.example.net", &store, None, 10).expect("page");
        assert_eq!(page.summary, "All systems operational");
        let text = render_text(&page);
        let note = text
            .find("2006-04-09: 19:10 UTC     Kernel update maintenance")
            .expect(&text);
        let incident = text
            .find("2006-03-21: 15:30 UTC     Raid array issues")
            .expect(&text);
        assert!(note < incident, "newest entry first:\n{text}");
        let restored = text.find("21:20 UTC Web services restored").expect(&text);
        let degraded = text.find("15:30 UTC md0 is degraded").expect(&text);
        assert!(restored < degraded, "newest update first:\n{text}");
        assert!(text.contains("(resolved 21:20 UTC)"), "{text}");
    }
}
