//! The monitor's latest view of the machine, as the status page, the JSON,
//! the metrics and `mxrack disks` show it. Built after every look from the
//! observation and the policies' state; shared as `Arc<Snapshot>`.

use serde::Serialize;
use std::collections::BTreeSet;

use crate::policy::{self, Level, PolicyState};
use crate::sources::{FsObs, MemObs, Observation};

#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// Unix seconds of the look (0: none yet).
    pub time: i64,
    pub sys_root: String,
    /// True when the monitor may act (sys_root is "/").
    pub acting: bool,
    pub arrays: Vec<ArrayView>,
    pub disks: Vec<DiskView>,
    pub limits: Vec<LimitView>,
    pub listen_overflows: u64,
    pub listen_drops: u64,
    pub sockets_used: u64,
    pub filesystems: Vec<FsView>,
    pub memory: Option<MemObs>,
    /// Why new mail is refused, when it is.
    pub intake_refusal: Option<String>,
    /// Current warnings that are not incidents (no spare, a limit at 80 %).
    pub conditions: Vec<Condition>,
    /// The replica pair as DRBD sees it (None: a single appliance).
    pub replica: Option<crate::sources::drbd::DrbdResource>,
    pub replica_last_promotion: Option<String>,
    pub monitor: MonitorStats,
}

/// The pair in one line, the same in `mxrack status` and the status page.
pub fn replica_line(r: &crate::sources::drbd::DrbdResource) -> String {
    let role = if r.role == "Primary" {
        "active"
    } else {
        "standby"
    };
    let (summary, _) = crate::sources::drbd::summary(r);
    format!(
        "replica: this appliance is the {role} ({}), peer {} ({}): {summary}",
        r.role, r.peer_role, r.connection
    )
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ArrayView {
    pub name: String,
    pub level: String,
    pub uuid: Option<String>,
    pub array_state: String,
    pub degraded: u32,
    pub raid_disks: u32,
    pub sync_action: String,
    /// Tenths of a percent while syncing.
    pub sync_permille: Option<u32>,
    pub sync_speed_kib: Option<u64>,
    /// Seconds left of the running sync, from md's own figures.
    pub sync_eta_secs: Option<u64>,
    pub in_sync: u32,
    pub spares: u32,
    pub members: Vec<MemberView>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MemberView {
    /// The disk's serial (or WWN).
    pub disk: String,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    /// The bay label on the chassis (None: the board's map has no bay
    /// for it, or the disk is gone).
    pub bay: Option<String>,
    pub dev: String,
    pub role: String,
    /// md's role number of the member (`slot` in md's sysfs), None for a
    /// spare. Not a bay.
    pub member_index: Option<u32>,
    pub errors: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DiskView {
    /// Serial number, or WWN when the disk reports no serial.
    pub id: String,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    pub vendor: String,
    pub model: String,
    pub rev: String,
    /// Kernel name right now (changes on a swap; never an identity).
    pub kernel: String,
    /// The bay label printed on the chassis, from the board's bay map.
    pub bay: Option<String>,
    /// Where the kernel sees it (by-path name): for a disk without a bay.
    pub path: String,
    pub scsi_address: Option<String>,
    pub state: String,
    pub size_bytes: u64,
    /// The SCSI layer's raw counters since boot (ioerr_cnt counts every
    /// command that did not succeed, unit attentions included).
    pub ioerr: u64,
    pub iotmo: u64,
    pub iodone: u64,
    /// I/O errors and timeouts counted since the monitor first saw the
    /// disk, bus notices excluded: what the policy judges.
    pub errors: u64,
    /// Counter increments from before the first look (the probe at boot).
    pub errors_at_first_sight: u64,
    /// Counter increments excused as unit attentions of a hot-plug on the
    /// same SCSI bus.
    pub bus_notices: u64,
    pub errors_in_window: u64,
    /// ok, failing, faulty, offline, rebuilding, spare, blank, unused,
    /// ready to remove.
    pub condition: String,
    /// "md0:in_sync", ...
    pub arrays: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LimitView {
    pub key: String,
    pub what: String,
    pub used: u64,
    pub max: u64,
    pub permille: u64,
    /// ok, warn, alert
    pub level: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FsView {
    pub name: String,
    pub path: String,
    pub size_bytes: u64,
    pub free_bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
    pub used_permille: u64,
    /// Free space below which new mail is refused, and where it resumes.
    pub refuse_below_bytes: u64,
    pub resume_above_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Condition {
    pub severity: String,
    pub component: String,
    pub text: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MonitorStats {
    pub looks: u64,
    /// Looks started by a kernel notification (md sysfs, hot-plug) rather
    /// than the timer.
    pub woken_by_kernel: u64,
    pub last_look_micros: u64,
    /// CPU time of the monitor thread so far.
    pub cpu_seconds: f64,
    pub events_recorded: u64,
    pub actions_taken: u64,
}

impl DiskView {
    /// "bay 2", or the kernel path of a disk the bay map does not place.
    pub fn location(&self) -> String {
        match &self.bay {
            Some(b) => format!("bay {b}"),
            None => format!("unmapped bay (path {})", self.path),
        }
    }
}

/// One line per array, the same in `mxrack disks`, `mxrack status` and
/// the status page: md's own `array_state` word (clean, active, ...: md
/// says "active" while writes are pending and "clean" once it has marked
/// the superblock clean, a few hundred ms after the last write; both are
/// healthy), members, spares, and a running sync with md's time left.
pub fn array_line(a: &ArrayView) -> String {
    let sync = a
        .sync_permille
        .map(|p| {
            let left = a
                .sync_eta_secs
                .map(|s| format!(", {} left", policy::eta(s)))
                .unwrap_or_default();
            format!(", {} {}.{}%{left}", a.sync_action, p / 10, p % 10)
        })
        .unwrap_or_default();
    format!(
        "{} {} {}: {}/{} in sync, {} spare{}{sync}",
        a.name,
        a.level,
        a.array_state,
        a.in_sync,
        a.raid_disks,
        a.spares,
        if a.spares == 1 { "" } else { "s" }
    )
}

fn level_name(l: Level) -> &'static str {
    match l {
        Level::Ok => "ok",
        Level::Warn => "warn",
        Level::Alert => "alert",
    }
}

/// Builds the snapshot of one look.
pub fn build(
    obs: &Observation,
    state: &PolicyState,
    policy: &policy::Policy,
    blank: &BTreeSet<String>,
    sys_root: &str,
    acting: bool,
) -> Snapshot {
    let id_of = |kernel: &str| {
        obs.disk_by_kernel(kernel)
            .map(|d| d.id())
            .or_else(|| state.kernel_ids.get(kernel).cloned())
            .unwrap_or_else(|| format!("kernel-{kernel}"))
    };
    let arrays: Vec<ArrayView> = obs
        .arrays
        .iter()
        .map(|a| ArrayView {
            name: a.name.clone(),
            level: a.level.clone(),
            uuid: a.uuid.clone(),
            array_state: a.array_state.clone(),
            degraded: a.degraded,
            raid_disks: a.raid_disks,
            sync_action: a.sync_action.clone(),
            sync_permille: a.is_syncing().then(|| a.progress_permille()).flatten(),
            sync_speed_kib: a.is_syncing().then_some(a.sync_speed_kib).flatten(),
            sync_eta_secs: a.sync_eta_secs(),
            in_sync: a.in_sync_count(),
            spares: a.idle_spares().count() as u32,
            members: a
                .members
                .iter()
                .map(|m| {
                    let d = obs.disk_by_kernel(&m.disk);
                    MemberView {
                        disk: id_of(&m.disk),
                        serial: d.and_then(|d| d.serial.clone()),
                        wwn: d.and_then(|d| d.wwn.clone()),
                        bay: d.and_then(|d| d.bay.clone()),
                        dev: m.dev.clone(),
                        role: m.role(),
                        member_index: m.slot,
                        errors: m.errors,
                    }
                })
                .collect(),
        })
        .collect();
    let disks = obs
        .disks
        .iter()
        .map(|d| {
            let id = d.id();
            let track = state.disks.get(&id);
            let memberships = obs.memberships(&d.kernel);
            let roles: Vec<String> = memberships.iter().map(|(_, m)| m.role()).collect();
            let condition = if !d.is_running() {
                format!("offline ({})", d.state)
            } else if roles.iter().any(|r| r == "faulty") {
                if track.is_some_and(|t| t.replacing) {
                    "replaced (leaving its array)".into()
                } else {
                    "faulty".into()
                }
            } else if memberships
                .iter()
                .any(|(_, m)| m.is_in_sync() && m.has("want_replacement"))
            {
                "being replaced".into()
            } else if memberships.is_empty() && track.is_some_and(|t| !t.left_arrays.is_empty()) {
                // Out of its arrays: what the technician looks for.
                if track.is_some_and(|t| t.failing) {
                    "ready to remove (failing)".into()
                } else {
                    "ready to remove".into()
                }
            } else if track.is_some_and(|t| t.failing) {
                "failing".into()
            } else if roles.iter().any(|r| r == "rebuilding") {
                "rebuilding".into()
            } else if roles.iter().any(|r| r == "in_sync") {
                "ok".into()
            } else if roles.iter().any(|r| r == "spare") {
                "spare".into()
            } else if blank.contains(&id) {
                "blank".into()
            } else {
                "unused".into()
            };
            DiskView {
                serial: d.serial.clone(),
                wwn: d.wwn.clone(),
                vendor: d.vendor.clone(),
                model: d.model.clone(),
                rev: d.rev.clone(),
                kernel: d.kernel.clone(),
                bay: d.bay.clone(),
                path: d.path.clone(),
                scsi_address: d.scsi_address.clone(),
                state: d.state.clone(),
                size_bytes: d.size_bytes,
                ioerr: d.ioerr,
                iotmo: d.iotmo,
                iodone: d.iodone,
                errors: track.map_or(0, |t| t.errors),
                errors_at_first_sight: track.map_or(0, |t| t.errors_at_first_sight),
                bus_notices: track.map_or(0, |t| t.bus_notices),
                errors_in_window: track.map_or(0, |t| t.errors_in_window),
                condition,
                arrays: memberships
                    .iter()
                    .map(|(a, m)| format!("{}:{}", a.name, m.role()))
                    .collect(),
                id,
            }
        })
        .collect();
    let limits = obs
        .limits
        .iter()
        .map(|l| LimitView {
            key: l.key.clone(),
            what: l.what.clone(),
            used: l.used,
            max: l.max,
            permille: l.permille(),
            level: level_name(state.limits.get(&l.key).copied().unwrap_or_default()).into(),
        })
        .collect::<Vec<_>>();
    let filesystems = obs
        .filesystems
        .iter()
        .map(|f: &FsObs| {
            let (refuse, resume) = policy::space_thresholds(f, policy);
            FsView {
                name: f.name.clone(),
                path: f.path.clone(),
                size_bytes: f.size_bytes,
                free_bytes: f.free_bytes,
                inodes: f.inodes,
                inodes_free: f.inodes_free,
                used_permille: f.used_permille(),
                refuse_below_bytes: refuse,
                resume_above_bytes: resume,
            }
        })
        .collect::<Vec<_>>();
    let mut conditions = Vec::new();
    for a in &arrays {
        if a.degraded == 0 && a.spares == 0 && a.sync_permille.is_none() && a.raid_disks > 1 {
            conditions.push(Condition {
                severity: "warning".into(),
                component: a.name.clone(),
                text: format!("{} has no hot spare", a.name),
            });
        }
    }
    for l in &limits {
        if l.level != "ok" {
            conditions.push(Condition {
                severity: if l.level == "alert" {
                    "critical"
                } else {
                    "warning"
                }
                .into(),
                component: format!("limit {}", l.key),
                text: format!(
                    "{} at {}.{}% ({} of {} {})",
                    l.key,
                    l.permille / 10,
                    l.permille % 10,
                    l.used,
                    l.max,
                    l.what
                ),
            });
        }
    }
    for f in &filesystems {
        if f.used_permille >= policy.space_warn_permille {
            conditions.push(Condition {
                severity: "warning".into(),
                component: format!("space {}", f.name),
                text: format!(
                    "{} file system {}.{}% used",
                    f.name,
                    f.used_permille / 10,
                    f.used_permille % 10
                ),
            });
        }
    }
    Snapshot {
        time: obs.time,
        sys_root: sys_root.into(),
        acting,
        arrays,
        disks,
        limits,
        listen_overflows: obs.net.listen_overflows,
        listen_drops: obs.net.listen_drops,
        sockets_used: obs.net.sockets_used,
        filesystems,
        memory: obs.memory,
        intake_refusal: None,
        conditions,
        replica: obs.drbd.iter().find(|r| !r.role.is_empty()).cloned(),
        replica_last_promotion: obs.replica_last_promotion.clone(),
        monitor: MonitorStats::default(),
    }
}
