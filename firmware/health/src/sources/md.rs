//! md RAID arrays: /proc/mdstat (the list and a summary) and
//! /sys/block/mdX/md/ (the authoritative detail: array_state, degraded,
//! sync_action, sync_completed, sync_speed, and per member dev-*/state,
//! errors, slot).
//!
//! Formats, as the kernel writes them (drivers/md/md.c, Linux 6.1):
//!
//! ```text
//! md0 : active raid1 sdc[2](S) sdb[1] sda[0](F)
//!       64512 blocks super 1.2 [2/1] [_U]
//!       [>....................]  recovery =  3.1% (2048/64512) finish=1.0min speed=1024K/sec
//!       bitmap: 1/1 pages [4KB], 65536KB chunk
//! ```
//!
//! `sync_completed` is "none" or "DONE / TOTAL" in sectors, `sync_speed`
//! "none" or KiB/s, member `state` a comma list (in_sync, faulty, spare,
//! write_mostly, blocked, want_replacement, replacement, ...), `slot` a
//! number or "none". A spare being rebuilt reads `spare` with a slot number.

use crate::sysroot::SysRoot;
use serde::Serialize;

/// Most arrays and members per array the monitor looks at.
pub const ARRAYS_MAX: usize = 256;
pub const MEMBERS_MAX: usize = 64;

/// One array as /proc/mdstat shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MdstatArray {
    pub name: String,
    pub active: bool,
    pub read_only: bool,
    pub level: Option<String>,
    pub members: Vec<MdstatMember>,
    pub blocks: Option<u64>,
    /// `[raid_disks/working]`
    pub raid_disks: Option<u32>,
    pub working: Option<u32>,
    /// `[UU_]`
    pub map: Option<String>,
    pub progress: Option<MdstatProgress>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MdstatMember {
    pub dev: String,
    pub index: u32,
    pub faulty: bool,
    pub spare: bool,
    pub write_mostly: bool,
    pub replacement: bool,
}

/// The progress line of a resync, recovery, reshape or check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MdstatProgress {
    /// "recovery", "resync", "reshape", "check", "repair".
    pub action: String,
    /// Tenths of a percent.
    pub permille: u32,
    pub done: u64,
    pub total: u64,
    pub speed_kib: Option<u64>,
    /// md's own estimate, `finish=1.0min`, in seconds.
    pub finish_secs: Option<u64>,
}

/// Parses /proc/mdstat. Unknown lines are skipped; a malformed array line
/// gives what could be read.
pub fn parse_mdstat(text: &str) -> Vec<MdstatArray> {
    let mut out: Vec<MdstatArray> = Vec::new();
    for line in text.lines() {
        if out.len() >= ARRAYS_MAX {
            break;
        }
        let trimmed = line.trim();
        if trimmed.is_empty()
            || trimmed.starts_with("Personalities")
            || trimmed.starts_with("unused devices")
        {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            if let Some((name, rest)) = line.split_once(" : ") {
                out.push(parse_array_line(name.trim(), rest));
            }
            continue;
        }
        let Some(current) = out.last_mut() else {
            continue;
        };
        if trimmed.contains(" blocks") {
            parse_blocks_line(current, trimmed);
        } else if let Some(p) = parse_progress_line(trimmed) {
            current.progress = Some(p);
        }
    }
    out
}

fn parse_array_line(name: &str, rest: &str) -> MdstatArray {
    let mut a = MdstatArray {
        name: name.to_string(),
        ..MdstatArray::default()
    };
    for word in rest.split_whitespace() {
        match word {
            "active" => a.active = true,
            "inactive" => a.active = false,
            "(read-only)" | "(auto-read-only)" => a.read_only = true,
            w if w.contains('[') => {
                if a.members.len() < MEMBERS_MAX
                    && let Some(m) = parse_member(w)
                {
                    a.members.push(m);
                }
            }
            w if a.level.is_none() && is_level(w) => a.level = Some(w.to_string()),
            _ => {}
        }
    }
    a
}

fn is_level(w: &str) -> bool {
    w.starts_with("raid")
        || matches!(w, "linear" | "multipath" | "faulty")
        || w.starts_with("level")
}

/// `sda[0](F)`, `sdc1[2](S)`, `sdb[1](W)`, `sdd[3](R)`.
fn parse_member(w: &str) -> Option<MdstatMember> {
    let (dev, rest) = w.split_once('[')?;
    let (index, flags) = rest.split_once(']')?;
    Some(MdstatMember {
        dev: dev.to_string(),
        index: index.parse().ok()?,
        faulty: flags.contains("(F)"),
        spare: flags.contains("(S)"),
        write_mostly: flags.contains("(W)"),
        replacement: flags.contains("(R)"),
    })
}

fn parse_blocks_line(a: &mut MdstatArray, line: &str) {
    let mut words = line.split_whitespace();
    a.blocks = words.next().and_then(|w| w.parse().ok());
    for w in line.split_whitespace() {
        if let Some(inner) = w.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
            if let Some((n, m)) = inner.split_once('/') {
                a.raid_disks = n.parse().ok();
                a.working = m.parse().ok();
            } else if !inner.is_empty() && inner.chars().all(|c| c == 'U' || c == '_') {
                a.map = Some(inner.to_string());
            }
        }
    }
}

/// `[==>....]  recovery = 12.6% (8192/64512) finish=0.9min speed=1024K/sec`
/// (also `resync=DELAYED`, which has no figures and is skipped).
fn parse_progress_line(line: &str) -> Option<MdstatProgress> {
    let eq = line.find(" = ")?;
    let action = line[..eq].split_whitespace().last()?.to_string();
    let rest = &line[eq + 3..];
    let mut words = rest.split_whitespace();
    let pct = words.next()?.strip_suffix('%')?;
    let (whole, frac) = pct.split_once('.').unwrap_or((pct, "0"));
    let permille = whole.parse::<u32>().ok()? * 10 + frac.get(..1)?.parse::<u32>().ok()?;
    let counts = words.next()?;
    let (done, total) = counts
        .strip_prefix('(')?
        .strip_suffix(')')?
        .split_once('/')?;
    let speed_kib = rest
        .split_whitespace()
        .find_map(|w| w.strip_prefix("speed="))
        .and_then(|s| s.strip_suffix("K/sec"))
        .and_then(|s| s.parse().ok());
    // md prints finish= in tenths of a minute (drivers/md/md.c
    // status_resync: "finish=%lu.%lumin").
    let finish_secs = rest
        .split_whitespace()
        .find_map(|w| w.strip_prefix("finish="))
        .and_then(|s| s.strip_suffix("min"))
        .and_then(|s| {
            let (whole, frac) = s.split_once('.').unwrap_or((s, "0"));
            let tenths =
                whole.parse::<u64>().ok()?.checked_mul(10)? + frac.get(..1)?.parse::<u64>().ok()?;
            tenths.checked_mul(6)
        });
    Some(MdstatProgress {
        action,
        permille,
        done: done.parse().ok()?,
        total: total.parse().ok()?,
        speed_kib,
        finish_secs,
    })
}

/// One array as sysfs shows it (with mdstat filling gaps).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MdArray {
    pub name: String,
    pub level: String,
    /// clean, active, readonly, inactive, broken, ...
    pub array_state: String,
    pub degraded: u32,
    pub raid_disks: u32,
    /// idle, resync, recover, check, repair, reshape, frozen
    pub sync_action: String,
    /// (done, total) sectors while syncing.
    pub sync_completed: Option<(u64, u64)>,
    pub sync_speed_kib: Option<u64>,
    /// /proc/mdstat's finish= estimate (seconds), when it shows one.
    pub mdstat_finish_secs: Option<u64>,
    pub component_size_kib: Option<u64>,
    pub uuid: Option<String>,
    pub members: Vec<MdMember>,
}

/// One member (a `dev-*` directory).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MdMember {
    /// Kernel name of the member device: `sda` or a partition `sda1`.
    pub dev: String,
    /// Kernel name of the whole disk holding it.
    pub disk: String,
    pub state: Vec<String>,
    pub slot: Option<u32>,
    /// Read errors md corrected on it.
    pub errors: u64,
    /// Data offset (sectors) and size used on the member (KiB).
    pub offset_sectors: Option<u64>,
    pub size_kib: Option<u64>,
}

impl MdMember {
    pub fn has(&self, flag: &str) -> bool {
        self.state.iter().any(|s| s == flag)
    }
    pub fn is_faulty(&self) -> bool {
        self.has("faulty")
    }
    pub fn is_in_sync(&self) -> bool {
        self.has("in_sync") && !self.is_faulty()
    }
    /// An idle hot spare (not the target of a running rebuild).
    pub fn is_idle_spare(&self) -> bool {
        self.has("spare") && !self.is_faulty() && self.slot.is_none()
    }
    /// A spare being rebuilt into a slot.
    pub fn is_rebuilding(&self) -> bool {
        self.has("spare") && !self.is_faulty() && self.slot.is_some()
    }
    /// One word for lists: in_sync, rebuilding, spare, faulty, or the raw state.
    pub fn role(&self) -> String {
        if self.is_faulty() {
            "faulty".into()
        } else if self.is_rebuilding() {
            "rebuilding".into()
        } else if self.is_idle_spare() {
            "spare".into()
        } else if self.is_in_sync() {
            "in_sync".into()
        } else {
            self.state.join(",")
        }
    }
}

impl MdArray {
    /// How many members the array can lose and still serve (its level).
    pub fn failures_tolerated(&self) -> u32 {
        match self.level.as_str() {
            "raid1" => self.raid_disks.saturating_sub(1),
            "raid4" | "raid5" => 1,
            "raid6" => 2,
            // raid10 tolerates one per mirror set; one is always safe.
            "raid10" => 1,
            _ => 0,
        }
    }

    /// True for levels that keep redundancy (and so want a hot spare).
    pub fn is_redundant(&self) -> bool {
        self.failures_tolerated() > 0
    }

    pub fn in_sync_count(&self) -> u32 {
        self.members.iter().filter(|m| m.is_in_sync()).count() as u32
    }

    pub fn idle_spares(&self) -> impl Iterator<Item = &MdMember> {
        self.members.iter().filter(|m| m.is_idle_spare())
    }

    pub fn is_syncing(&self) -> bool {
        matches!(
            self.sync_action.as_str(),
            "recover" | "resync" | "reshape" | "check" | "repair"
        )
    }

    /// Rebuild progress in tenths of a percent.
    pub fn progress_permille(&self) -> Option<u32> {
        let (done, total) = self.sync_completed?;
        if total == 0 {
            return None;
        }
        Some((done.min(total).saturating_mul(1000) / total) as u32)
    }

    /// Seconds left of the running sync, from md's own figures: what is
    /// left of `sync_completed` (sectors) at md's current `sync_speed`
    /// (KiB/s, md's average over its last few seconds), else /proc/mdstat's
    /// `finish=` (the same figures, rounded to 6 s).
    pub fn sync_eta_secs(&self) -> Option<u64> {
        if !self.is_syncing() {
            return None;
        }
        let from_sysfs = match (self.sync_completed, self.sync_speed_kib) {
            (Some((done, total)), Some(speed)) if speed > 0 => {
                Some(total.saturating_sub(done).div_ceil(2).div_ceil(speed))
            }
            _ => None,
        };
        from_sysfs.or(self.mdstat_finish_secs)
    }

    /// True when failing one more in-sync member leaves the array serving
    /// with its data intact: never the last good copy.
    pub fn can_lose_one(&self) -> bool {
        if !self.is_redundant() || self.array_state == "inactive" {
            return false;
        }
        match self.level.as_str() {
            "raid1" => self.in_sync_count() >= 2,
            _ => self.degraded < self.failures_tolerated(),
        }
    }

    /// Bytes a disk needs to become a member (data offset + used size of
    /// an existing member, or the component size plus 1 MiB of metadata).
    pub fn member_bytes_needed(&self) -> Option<u64> {
        let from_member = self
            .members
            .iter()
            .find_map(|m| Some(m.offset_sectors? * 512 + m.size_kib? * 1024));
        from_member.or_else(|| self.component_size_kib.map(|k| k * 1024 + (1 << 20)))
    }
}

/// Parses "DONE / TOTAL" (sync_completed); "none" and garbage give None.
pub fn parse_sync_completed(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once('/')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// The whole disk behind a member, from its `block` link
/// (`.../block/sda` or `.../block/sda/sda1`).
fn disk_of(root: &SysRoot, array: &str, dev: &str) -> String {
    if let Some(link) = root.link(&format!("/sys/block/{array}/md/dev-{dev}/block")) {
        let parts: Vec<&str> = link.split('/').collect();
        if let Some(i) = parts.iter().rposition(|p| *p == "block")
            && let Some(disk) = parts.get(i + 1)
        {
            return disk.to_string();
        }
    }
    // No link (a fixture without one): a partition name ends in digits
    // after a letter, a whole SCSI disk does not.
    if root.exists(&format!("/sys/block/{dev}")) {
        return dev.to_string();
    }
    dev.trim_end_matches(|c: char| c.is_ascii_digit())
        .to_string()
}

fn read_members(root: &SysRoot, name: &str) -> Vec<MdMember> {
    let base = format!("/sys/block/{name}/md");
    root.list(&base)
        .into_iter()
        .filter_map(|e| e.strip_prefix("dev-").map(str::to_string))
        .take(MEMBERS_MAX)
        .map(|dev| {
            let d = format!("{base}/dev-{dev}");
            MdMember {
                disk: disk_of(root, name, &dev),
                state: root
                    .attr(&format!("{d}/state"))
                    .map(|s| {
                        s.split(',')
                            .map(|f| f.trim().to_string())
                            .filter(|f| !f.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
                slot: root.attr_u64(&format!("{d}/slot")).map(|s| s as u32),
                errors: root.attr_u64(&format!("{d}/errors")).unwrap_or(0),
                offset_sectors: root.attr_u64(&format!("{d}/offset")),
                size_kib: root.attr_u64(&format!("{d}/size")),
                dev,
            }
        })
        .collect()
}

/// Every md array: those in /proc/mdstat and those with a sysfs md folder,
/// read from sysfs, with mdstat filling what sysfs lacks.
pub fn read_arrays(root: &SysRoot) -> Vec<MdArray> {
    let mdstat = root
        .table("/proc/mdstat")
        .map(|t| parse_mdstat(&t))
        .unwrap_or_default();
    let mut names: Vec<String> = mdstat.iter().map(|a| a.name.clone()).collect();
    for n in root.list("/sys/block") {
        if n.starts_with("md") && root.exists(&format!("/sys/block/{n}/md")) && !names.contains(&n)
        {
            names.push(n);
        }
    }
    names.sort();
    names.truncate(ARRAYS_MAX);
    names
        .into_iter()
        .map(|name| {
            let st = mdstat.iter().find(|a| a.name == name);
            let base = format!("/sys/block/{name}/md");
            let attr = |a: &str| root.attr(&format!("{base}/{a}"));
            let mut members = read_members(root, &name);
            if members.is_empty()
                && let Some(st) = st
            {
                members = st
                    .members
                    .iter()
                    .map(|m| MdMember {
                        dev: m.dev.clone(),
                        disk: disk_of(root, &name, &m.dev),
                        state: vec![
                            if m.faulty {
                                "faulty"
                            } else if m.spare {
                                "spare"
                            } else {
                                "in_sync"
                            }
                            .to_string(),
                        ],
                        slot: (!m.spare && !m.faulty).then_some(m.index),
                        ..MdMember::default()
                    })
                    .collect();
            }
            let st_progress = st.and_then(|s| s.progress.as_ref());
            MdArray {
                level: attr("level")
                    .or_else(|| st.and_then(|s| s.level.clone()))
                    .unwrap_or_default(),
                array_state: attr("array_state").unwrap_or_else(|| {
                    if st.is_some_and(|s| s.active) {
                        "active".into()
                    } else {
                        "inactive".into()
                    }
                }),
                degraded: attr("degraded")
                    .and_then(|s| s.parse().ok())
                    .or_else(|| st.and_then(|s| Some(s.raid_disks?.saturating_sub(s.working?))))
                    .unwrap_or(0),
                raid_disks: attr("raid_disks")
                    .and_then(|s| s.parse().ok())
                    .or_else(|| st.and_then(|s| s.raid_disks))
                    .unwrap_or(0),
                sync_action: attr("sync_action").unwrap_or_else(|| match st_progress {
                    Some(p) if p.action == "recovery" => "recover".into(),
                    Some(p) => p.action.clone(),
                    None => "idle".into(),
                }),
                // sysfs moves in checkpoints and mdstat (KiB) in between:
                // take whichever is further along, in sectors.
                sync_completed: match (
                    attr("sync_completed").and_then(|s| parse_sync_completed(&s)),
                    st_progress.map(|p| (p.done * 2, p.total * 2)),
                ) {
                    (Some(a), Some(b)) if a.1 == b.1 => Some(a.max(b)),
                    (a, b) => a.or(b),
                },
                sync_speed_kib: attr("sync_speed")
                    .and_then(|s| s.parse().ok())
                    .or_else(|| st_progress.and_then(|p| p.speed_kib)),
                mdstat_finish_secs: st_progress.and_then(|p| p.finish_secs),
                component_size_kib: attr("component_size").and_then(|s| s.parse().ok()),
                uuid: attr("uuid"),
                members,
                name,
            }
        })
        .collect()
}

/// The sysfs attributes of `arrays` that md announces with sysfs_notify,
/// which the monitor polls to wake at once on a change.
pub fn notify_paths(arrays: &[MdArray]) -> Vec<String> {
    let mut out = Vec::new();
    for a in arrays {
        for attr in ["array_state", "degraded", "sync_action", "sync_completed"] {
            out.push(format!("/sys/block/{}/md/{attr}", a.name));
        }
        for m in &a.members {
            out.push(format!("/sys/block/{}/md/dev-{}/state", a.name, m.dev));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real /proc/mdstat from the appliance image under QEMU (Linux 6.1,
    /// mdadm 4.2): RAID1 with a hot spare, then sda set faulty.
    const CLEAN: &str = "Personalities : [raid1] \nmd0 : active raid1 sdc[2](S) sdb[1] sda[0]\n      64512 blocks super 1.2 [2/2] [UU]\n      bitmap: 1/1 pages [4KB], 65536KB chunk\n\nunused devices: <none>\n";
    const RECOVERING: &str = "Personalities : [raid1] \nmd0 : active raid1 sdc[2] sdb[1] sda[0](F)\n      64512 blocks super 1.2 [2/1] [_U]\n      [>....................]  recovery =  3.1% (2048/64512) finish=1.0min speed=1024K/sec\n      bitmap: 1/1 pages [4KB], 65536KB chunk\n\nunused devices: <none>\n";

    #[test]
    fn mdstat_clean_with_spare() {
        let a = parse_mdstat(CLEAN);
        assert_eq!(a.len(), 1);
        let md0 = &a[0];
        assert_eq!(md0.name, "md0");
        assert!(md0.active);
        assert_eq!(md0.level.as_deref(), Some("raid1"));
        assert_eq!(md0.blocks, Some(64512));
        assert_eq!((md0.raid_disks, md0.working), (Some(2), Some(2)));
        assert_eq!(md0.map.as_deref(), Some("UU"));
        assert_eq!(md0.members.len(), 3);
        assert!(md0.members[0].spare && md0.members[0].dev == "sdc");
        assert!(md0.progress.is_none());
    }

    #[test]
    fn mdstat_recovering_with_a_faulty_member() {
        let md0 = &parse_mdstat(RECOVERING)[0];
        assert_eq!((md0.raid_disks, md0.working), (Some(2), Some(1)));
        assert_eq!(md0.map.as_deref(), Some("_U"));
        let sda = md0.members.iter().find(|m| m.dev == "sda").expect("sda");
        assert!(sda.faulty && sda.index == 0);
        let p = md0.progress.as_ref().expect("progress");
        assert_eq!(p.action, "recovery");
        assert_eq!(p.permille, 31);
        assert_eq!((p.done, p.total), (2048, 64512));
        assert_eq!(p.speed_kib, Some(1024));
    }

    #[test]
    fn mdstat_odd_lines() {
        let text = "Personalities : [raid1] [raid6] [raid5] [raid4]\n\
            md127 : inactive sdb[1](S)\n      1046528 blocks super 1.2\n\n\
            md1 : active (auto-read-only) raid5 sdf1[3] sde1[1] sdd1[0]\n      2093056 blocks super 1.2 level 5, 512k chunk, algorithm 2 [3/3] [UUU]\n      \tresync=PENDING\n\n\
            md2 : active raid6 sdg[0] sdh[1] sdi[2] sdj[3]\n      2093056 blocks super 1.2 level 6, 512k chunk, algorithm 2 [4/4] [UUUU]\n      [=======>.............]  resync = 37.5% (393216/1046528) finish=0.1min speed=196608K/sec\n\n\
            unused devices: <none>\n";
        let a = parse_mdstat(text);
        assert_eq!(a.len(), 3);
        assert!(!a[0].active && a[0].members[0].spare);
        assert!(a[1].read_only && a[1].level.as_deref() == Some("raid5"));
        assert_eq!(a[1].members[0].dev, "sdf1");
        assert!(a[1].progress.is_none(), "PENDING has no figures");
        let p = a[2].progress.as_ref().expect("resync");
        assert_eq!((p.action.as_str(), p.permille), ("resync", 375));
        // Garbage does not panic.
        for junk in [
            "md0 :",
            " : x",
            "md0 : active raid1 sda[",
            "   [>] recovery = x%",
        ] {
            let _ = parse_mdstat(junk);
        }
    }

    #[test]
    fn sync_completed_values() {
        assert_eq!(parse_sync_completed("0 / 129024"), Some((0, 129024)));
        assert_eq!(parse_sync_completed("none"), None);
    }

    fn member(state: &str, slot: Option<u32>) -> MdMember {
        MdMember {
            dev: "sdx".into(),
            disk: "sdx".into(),
            state: state.split(',').map(str::to_string).collect(),
            slot,
            ..MdMember::default()
        }
    }

    #[test]
    fn member_roles_and_array_safety() {
        assert_eq!(member("in_sync", Some(0)).role(), "in_sync");
        assert_eq!(member("spare", None).role(), "spare");
        assert_eq!(member("spare", Some(0)).role(), "rebuilding");
        assert_eq!(member("faulty", Some(0)).role(), "faulty");
        assert_eq!(member("in_sync,write_mostly", Some(1)).role(), "in_sync");
        let mut a = MdArray {
            name: "md0".into(),
            level: "raid1".into(),
            array_state: "clean".into(),
            raid_disks: 2,
            members: vec![member("in_sync", Some(0)), member("in_sync", Some(1))],
            ..MdArray::default()
        };
        assert!(a.can_lose_one());
        a.members[1] = member("faulty", Some(1));
        a.degraded = 1;
        assert!(!a.can_lose_one(), "the last in-sync member is never failed");
        let r0 = MdArray {
            level: "raid0".into(),
            ..a.clone()
        };
        assert!(!r0.is_redundant() && !r0.can_lose_one());
    }
}
