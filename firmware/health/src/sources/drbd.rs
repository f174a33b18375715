//! DRBD 8.4's `/proc/drbd`: the replica pair's connection, roles, disk
//! states and resync progress (issue 13). A pure parser; absent file or
//! unknown lines give nothing, never an error.
//!
//! The form (drbd-8.4 `drbd_proc.c`), one resource per minor:
//!
//! ```text
//!  0: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----
//!     ns:1024 nr:0 dw:1024 dr:2048 al:1 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:523264
//!         [>....................] sync'ed:  0.4% (511/512)M
//!         finish: 0:00:25 speed: 20,480 (20,480) K/sec
//! ```

use crate::sysroot::SysRoot;
use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DrbdResource {
    pub minor: u32,
    /// Connection state: Connected, WFConnection, StandAlone, SyncSource, ...
    pub connection: String,
    /// This node's role (Primary, Secondary) and the peer's (Unknown when
    /// not connected).
    pub role: String,
    pub peer_role: String,
    /// Disk states: UpToDate, Inconsistent, Outdated, DUnknown, Diskless, ...
    pub disk: String,
    pub peer_disk: String,
    /// KiB the peers differ by (what a resync still has to copy): the lag.
    pub out_of_sync_kib: u64,
    /// Tenths of a percent of the running resync.
    pub sync_permille: Option<u32>,
    /// Seconds left of the running resync, DRBD's own estimate.
    pub sync_eta_secs: Option<u64>,
    pub sync_speed_kib: Option<u64>,
}

impl DrbdResource {
    pub fn connected(&self) -> bool {
        matches!(
            self.connection.as_str(),
            "Connected"
                | "SyncSource"
                | "SyncTarget"
                | "PausedSyncS"
                | "PausedSyncT"
                | "VerifyS"
                | "VerifyT"
                | "WFBitMapS"
                | "WFBitMapT"
                | "WFSyncUUID"
        )
    }

    pub fn in_sync(&self) -> bool {
        self.connection == "Connected"
            && self.disk == "UpToDate"
            && self.peer_disk == "UpToDate"
            && self.out_of_sync_kib == 0
    }

    pub fn syncing(&self) -> bool {
        self.connection.starts_with("Sync") || self.connection.starts_with("PausedSync")
    }
}

/// Reads `proc/drbd` under the root; empty when DRBD is not loaded.
pub fn read(root: &SysRoot) -> Vec<DrbdResource> {
    root.table("/proc/drbd")
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// The promotion history the board script keeps in the data folder.
pub const HISTORY_FILE: &str = "replica-history.log";

/// The last line of the promotion history (its last 4 KiB are read).
pub fn last_promotion(data_dir: &std::path::Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(data_dir.join(HISTORY_FILE)).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut buf = Vec::with_capacity(4096);
    f.take(4096).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.lines()
        .rfind(|l| !l.trim().is_empty())
        .map(str::to_string)
}

pub fn parse(text: &str) -> Vec<DrbdResource> {
    let mut out: Vec<DrbdResource> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some((minor, rest)) = t.split_once(": cs:")
            && let Ok(minor) = minor.parse::<u32>()
        {
            let mut r = DrbdResource {
                minor,
                ..Default::default()
            };
            let mut words = rest.split_whitespace();
            r.connection = words.next().unwrap_or_default().to_string();
            for w in words {
                if let Some(v) = w.strip_prefix("ro:") {
                    let (a, b) = v.split_once('/').unwrap_or((v, "Unknown"));
                    (r.role, r.peer_role) = (a.into(), b.into());
                } else if let Some(v) = w.strip_prefix("ds:") {
                    let (a, b) = v.split_once('/').unwrap_or((v, "DUnknown"));
                    (r.disk, r.peer_disk) = (a.into(), b.into());
                }
            }
            out.push(r);
            continue;
        }
        let Some(r) = out.last_mut() else { continue };
        if t.starts_with("ns:") {
            if let Some(v) = t
                .split_whitespace()
                .find_map(|w| w.strip_prefix("oos:"))
                .and_then(|v| v.parse().ok())
            {
                r.out_of_sync_kib = v;
            }
        } else if let Some((_, v)) = t.split_once("sync'ed:") {
            // " 0.4% (511/512)M"
            let pct = v.trim().split('%').next().unwrap_or_default();
            r.sync_permille = parse_permille(pct);
        } else if let Some(v) = t.strip_prefix("finish:") {
            let mut w = v.split_whitespace();
            r.sync_eta_secs = w.next().and_then(parse_hms);
            if w.next() == Some("speed:") {
                r.sync_speed_kib = w.next().and_then(|s| s.replace(',', "").parse().ok());
            }
        }
    }
    out
}

/// "12.3" -> 123.
fn parse_permille(s: &str) -> Option<u32> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, "0"));
    let whole: u32 = whole.trim().parse().ok()?;
    let tenth: u32 = frac.chars().next()?.to_digit(10)?;
    Some((whole * 10 + tenth).min(1000))
}

/// "1:02:03" -> 3723.
fn parse_hms(s: &str) -> Option<u64> {
    s.split(':')
        .try_fold(0u64, |acc, p| Some(acc * 60 + p.parse::<u64>().ok()?))
}

/// One line for people, and whether the pair is whole (connected, both
/// disks up to date).
pub fn summary(d: &DrbdResource) -> (String, bool) {
    if d.in_sync() {
        return (
            "in sync: every write is on both appliances' disks".into(),
            true,
        );
    }
    if d.syncing() {
        let pct = d
            .sync_permille
            .map(|p| format!("{}.{}%", p / 10, p % 10))
            .unwrap_or_else(|| "?".into());
        let eta = d
            .sync_eta_secs
            .map(|s| format!(", {} s left", s))
            .unwrap_or_default();
        return (
            format!(
                "resyncing ({}): {pct} done, {} MiB to copy{eta}",
                if d.connection.ends_with('S') || d.connection == "SyncSource" {
                    "to the peer"
                } else {
                    "from the peer"
                },
                d.out_of_sync_kib.div_ceil(1024)
            ),
            false,
        );
    }
    let why = match d.connection.as_str() {
        "StandAlone" => {
            "not connected and not trying (StandAlone: a split brain or a refused \
             connection; see README, Replica)"
        }
        "WFConnection" => "waiting for the peer to connect",
        "Connected" => "connected, disks not both up to date",
        _ => "not connected",
    };
    (
        format!(
            "{why}; {} MiB written here since the peer last had everything",
            d.out_of_sync_kib.div_ceil(1024)
        ),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYNCING: &str = "version: 8.4.11 (api:1/proto:86-101)
srcversion: 211FB288A383ED945B83420
 0: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----
    ns:1024 nr:0 dw:1024 dr:2048 al:1 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:523264
\t[>....................] sync'ed: 12.4% (511/512)M
\tfinish: 0:01:25 speed: 20,480 (20,480) K/sec
";

    #[test]
    fn a_first_sync_reads_with_its_progress() {
        let r = &parse(SYNCING)[0];
        assert_eq!(r.connection, "SyncSource");
        assert_eq!(
            (r.role.as_str(), r.peer_role.as_str()),
            ("Primary", "Secondary")
        );
        assert_eq!(
            (r.disk.as_str(), r.peer_disk.as_str()),
            ("UpToDate", "Inconsistent")
        );
        assert_eq!(r.out_of_sync_kib, 523_264);
        assert_eq!(r.sync_permille, Some(124));
        assert_eq!(r.sync_eta_secs, Some(85));
        assert_eq!(r.sync_speed_kib, Some(20_480));
        assert!(r.connected() && r.syncing() && !r.in_sync());
        assert!(
            summary(r)
                .0
                .starts_with("resyncing (to the peer): 12.4% done, 511 MiB")
        );
    }

    #[test]
    fn a_lost_peer_and_a_whole_pair() {
        let lost = parse(
            " 0: cs:WFConnection ro:Primary/Unknown ds:UpToDate/DUnknown C r-----\n    ns:0 nr:0 dw:4096 oos:4096\n",
        );
        assert!(!lost[0].connected());
        assert_eq!(lost[0].peer_role, "Unknown");
        assert_eq!(
            summary(&lost[0]).0,
            "waiting for the peer to connect; 4 MiB written here since the peer last had everything"
        );
        let whole = parse(
            " 0: cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate C r-----\n    ns:0 nr:12 dw:12 dr:0 al:0 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0\n",
        );
        assert!(whole[0].in_sync());
        assert!(summary(&whole[0]).1);
        assert!(parse(" 0: cs:Unconfigured\n")[0].role.is_empty());
        assert!(parse("garbage\n:\n 0: cs\n").is_empty());
    }
}
