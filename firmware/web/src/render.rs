//! The status page as HTML, JSON and an Atom feed. Pure functions of the
//! page model (`mxrack_health::status::StatusPage`): every text from the
//! store or the machine is escaped; the HTML loads nothing from anywhere
//! (inline style, no script, no image).

use mxrack_health::policy::human_bytes;
use mxrack_health::status::{StatusPage, entry_state, heading_time, update_time};
use mxrack_health::time;
use mxrack_store::{EntryKind, StatusEntry};

/// Escapes text for HTML and XML (element content and quoted attributes).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:1.5rem auto;padding:0 1rem;color:#222;line-height:1.45}\
h1{font-size:1.4rem;margin-bottom:.2rem}\
.summary{padding:.7rem 1rem;border-radius:.3rem;font-weight:600;margin:1rem 0}\
.ok{background:#e3f4e1;color:#1d5e1a}.warning{background:#fff3d6;color:#7a5200}.critical{background:#fde2e1;color:#8a1c17}\
.entry{border-top:1px solid #ddd;padding:.8rem 0}\
.entry h2{font-size:1.05rem;margin:.1rem 0}\
.when{font-family:ui-monospace,monospace;white-space:pre}\
.state{font-size:.8rem;padding:.05rem .4rem;border-radius:.2rem;margin-left:.5rem}\
.open{background:#fde2e1;color:#8a1c17}.resolved{background:#e3f4e1;color:#1d5e1a}.maintenance{background:#e1ecfd;color:#173f8a}\
ul.updates{list-style:none;padding-left:0}ul.updates li{margin:.3rem 0}\
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left}td:first-child{white-space:nowrap}\
footer{color:#777;font-size:.8rem;margin-top:2rem}";

fn entry_class(e: &StatusEntry) -> &'static str {
    match (e.kind, e.resolved) {
        (EntryKind::Maintenance, _) => "maintenance",
        (_, None) => "open",
        _ => "resolved",
    }
}

/// The page for browsers.
pub fn html(page: &StatusPage) -> String {
    let mut b = String::with_capacity(8192);
    b.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    b.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    b.push_str("<meta http-equiv=\"refresh\" content=\"60\">");
    b.push_str(&format!(
        "<title>{} status</title><link rel=\"alternate\" type=\"application/atom+xml\" href=\"/status.atom\" title=\"Status feed\"><style>{STYLE}</style></head><body>\n",
        escape(&page.hostname)
    ));
    b.push_str(&format!(
        "<h1>{} status</h1><div class=\"when\">{} {}</div>\n",
        escape(&page.hostname),
        time::date(page.generated),
        time::hm_utc(page.generated)
    ));
    b.push_str(&format!(
        "<div class=\"summary {}\" id=\"summary\">{}</div>\n",
        escape(&page.level),
        escape(&page.summary)
    ));
    if let Some(r) = &page.intake_refusal {
        b.push_str(&format!(
            "<p class=\"summary critical\">New mail is refused for now (SMTP 452, IMAP APPEND): {}</p>\n",
            escape(r)
        ));
    }
    if !page.conditions.is_empty() {
        b.push_str("<ul class=\"conditions\">");
        for c in &page.conditions {
            b.push_str(&format!(
                "<li><b>{}</b> {}</li>",
                escape(&c.severity),
                escape(&c.text)
            ));
        }
        b.push_str("</ul>\n");
    }
    b.push_str("<section id=\"entries\">\n");
    if page.entries.is_empty() {
        b.push_str("<p>No incidents or maintenance notes.</p>\n");
    }
    for e in &page.entries {
        b.push_str(&format!(
            "<article class=\"entry\" id=\"entry-{}\"><h2><span class=\"when\">{}</span>&nbsp;&nbsp;&nbsp;&nbsp;{}<span class=\"state {}\">{}</span></h2><ul class=\"updates\">",
            e.id,
            escape(&heading_time(e.opened)),
            escape(&e.title),
            entry_class(e),
            escape(&entry_state(e))
        ));
        for u in e.updates.iter().rev() {
            b.push_str(&format!(
                "<li><span class=\"when\">{}</span> {}</li>",
                escape(&update_time(e.opened, u.time)),
                escape(&u.text)
            ));
        }
        b.push_str("</ul></article>\n");
    }
    b.push_str("</section>\n");
    if let Some(s) = &page.snapshot {
        if !s.arrays.is_empty() {
            b.push_str("<h3>RAID arrays</h3><table><tr><th>array</th><th>level</th><th>state</th><th>in sync</th><th>spares</th><th>sync</th><th>members</th></tr>");
            for a in &s.arrays {
                let members: Vec<String> = a
                    .members
                    .iter()
                    .map(|m| match &m.bay {
                        Some(b) => format!("{} in bay {b} ({})", m.disk, m.role),
                        None => format!("{} ({})", m.disk, m.role),
                    })
                    .collect();
                b.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&a.name),
                    escape(&a.level),
                    escape(&a.array_state),
                    a.in_sync,
                    a.raid_disks,
                    a.spares,
                    a.sync_permille
                        .map(|p| {
                            let left = a
                                .sync_eta_secs
                                .map(|s| format!(", {} left", mxrack_health::policy::eta(s)))
                                .unwrap_or_default();
                            format!("{} {}.{}%{left}", escape(&a.sync_action), p / 10, p % 10)
                        })
                        .unwrap_or_else(|| escape(&a.sync_action)),
                    escape(&members.join(", "))
                ));
            }
            b.push_str("</table>\n");
        }
        if let Some(r) = &s.replica {
            b.push_str(&format!(
                "<h3>Replica pair</h3><p class=\"replica\">{}</p>\n",
                escape(&mxrack_health::snapshot::replica_line(r))
            ));
            if let Some(p) = &s.replica_last_promotion {
                b.push_str(&format!("<p>Last promotion: {}</p>\n", escape(p)));
            }
        }
        if !s.disks.is_empty() {
            b.push_str("<h3>Disks</h3><table><tr><th>serial</th><th>WWN</th><th>model</th><th>bay</th><th>condition</th><th>arrays</th><th>errors</th></tr>");
            for d in &s.disks {
                b.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&d.id),
                    escape(d.wwn.as_deref().unwrap_or("-")),
                    escape(&d.vendor),
                    escape(&d.model),
                    escape(&d.location()),
                    escape(&d.condition),
                    escape(&d.arrays.join(", ")),
                    d.errors
                ));
            }
            b.push_str("</table>\n");
        }
        if !s.filesystems.is_empty() {
            b.push_str("<h3>Space</h3><table><tr><th>file system</th><th>free</th><th>size</th><th>used</th><th>inodes free</th></tr>");
            for f in &s.filesystems {
                b.push_str(&format!(
                    "<tr><td>{} ({})</td><td>{}</td><td>{}</td><td>{}.{}%</td><td>{}</td></tr>",
                    escape(&f.name),
                    escape(&f.path),
                    human_bytes(f.free_bytes),
                    human_bytes(f.size_bytes),
                    f.used_permille / 10,
                    f.used_permille % 10,
                    f.inodes_free
                ));
            }
            b.push_str("</table>\n");
        }
        if !s.limits.is_empty() {
            b.push_str("<h3>Kernel limits</h3><table><tr><th>sysctl</th><th>what</th><th>in use</th><th>limit</th><th>share</th></tr>");
            for l in &s.limits {
                b.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}.{}%</td></tr>",
                    escape(&l.key),
                    escape(&l.what),
                    l.used,
                    l.max,
                    l.permille / 10,
                    l.permille % 10
                ));
            }
            b.push_str("</table>\n");
        }
    }
    b.push_str("<footer>Also as <a href=\"/status.json\">JSON</a>, an <a href=\"/status.atom\">Atom feed</a> and <a href=\"/metrics\">Prometheus metrics</a>. Times are UTC.</footer>\n</body></html>\n");
    b
}

/// The page as JSON (the model as is).
pub fn json(page: &StatusPage) -> String {
    serde_json::to_string_pretty(page)
        .unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
}

/// The entries as an Atom feed (RFC 4287). `base` is "https://host[:port]".
pub fn atom(page: &StatusPage, base: &str) -> String {
    let updated = page
        .entries
        .iter()
        .map(StatusEntry::last_activity)
        .max()
        .unwrap_or(page.generated);
    let host = escape(&page.hostname);
    let mut b = String::with_capacity(4096);
    b.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">\n");
    b.push_str(&format!("  <id>urn:mxrack:{host}:status</id>\n"));
    b.push_str(&format!("  <title>{host} status</title>\n"));
    b.push_str(&format!(
        "  <updated>{}</updated>\n",
        time::rfc3339(updated)
    ));
    b.push_str(&format!(
        "  <link rel=\"self\" type=\"application/atom+xml\" href=\"{}/status.atom\"/>\n",
        escape(base)
    ));
    b.push_str(&format!(
        "  <link rel=\"alternate\" type=\"text/html\" href=\"{}/status\"/>\n",
        escape(base)
    ));
    b.push_str(&format!("  <author><name>{host}</name></author>\n"));
    for e in &page.entries {
        let mut text = format!(
            "{}     {}\n({})\n",
            heading_time(e.opened),
            e.title,
            entry_state(e)
        );
        for u in e.updates.iter().rev() {
            text.push_str(&format!("{} {}\n", update_time(e.opened, u.time), u.text));
        }
        let kind = match e.kind {
            EntryKind::Incident => "incident",
            EntryKind::Maintenance => "maintenance",
        };
        b.push_str("  <entry>\n");
        b.push_str(&format!("    <id>urn:mxrack:{host}:status:{}</id>\n", e.id));
        b.push_str(&format!("    <title>{}</title>\n", escape(&e.title)));
        b.push_str(&format!(
            "    <published>{}</published>\n",
            time::rfc3339(e.opened)
        ));
        b.push_str(&format!(
            "    <updated>{}</updated>\n",
            time::rfc3339(e.last_activity())
        ));
        b.push_str(&format!("    <category term=\"{kind}\"/>\n"));
        b.push_str(&format!(
            "    <link rel=\"alternate\" type=\"text/html\" href=\"{}/status#entry-{}\"/>\n",
            escape(base),
            e.id
        ));
        b.push_str(&format!(
            "    <content type=\"text\">{}</content>\n",
            escape(&text)
        ));
        b.push_str("  </entry>\n");
    }
    b.push_str("</feed>\n");
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxrack_store::{Severity, StatusUpdate};

    fn page() -> StatusPage {
        StatusPage {
            hostname: "mx1.example.net".into(),
            generated: time::unix_of(2026, 11, 29, 12, 0, 0),
            summary: "1 open incident: <Disk> & co".into(),
            level: "critical".into(),
            open_incidents: 1,
            intake_refusal: None,
            conditions: vec![],
            entries: vec![StatusEntry {
                id: 7,
                kind: EntryKind::Incident,
                key: Some("disk:SN-1".into()),
                title: "Disk SN-1 failing <script>alert(1)</script>".into(),
                component: "disk SN-1".into(),
                opened: time::unix_of(2026, 11, 29, 11, 0, 0),
                resolved: None,
                severity: Severity::Critical,
                updates: vec![
                    StatusUpdate {
                        time: time::unix_of(2026, 11, 29, 11, 0, 0),
                        text: "errors \"rising\"".into(),
                    },
                    StatusUpdate {
                        time: time::unix_of(2026, 11, 29, 11, 5, 0),
                        text: "failed out of md0".into(),
                    },
                ],
            }],
            snapshot: None,
        }
    }

    #[test]
    fn html_is_escaped_and_newest_update_first() {
        let h = html(&page());
        assert!(!h.contains("<script>"), "{h}");
        assert!(h.contains("&lt;script&gt;"));
        assert!(h.contains("&lt;Disk&gt; &amp; co"));
        assert!(h.contains("2026-11-29: 11:00 UTC"));
        let newer = h.find("failed out of md0").expect("update");
        let older = h.find("errors &quot;rising&quot;").expect("update");
        assert!(newer < older);
        assert!(
            !h.contains("http://") && !h.contains("src="),
            "no external resources"
        );
    }

    #[test]
    fn atom_and_json() {
        let a = atom(&page(), "https://mx1.example.net:8443");
        assert!(a.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">"));
        assert!(a.contains("<updated>2026-11-29T11:05:00Z</updated>"));
        assert!(a.contains("<id>urn:mxrack:mx1.example.net:status:7</id>"));
        assert!(a.contains("&lt;script&gt;"));
        let j: serde_json::Value = serde_json::from_str(&json(&page())).expect("json");
        assert_eq!(j["entries"][0]["updates"][1]["text"], "failed out of md0");
        assert_eq!(j["level"], "critical");
    }
}
