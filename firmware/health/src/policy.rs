//! The policies: pure functions from an observation, the state kept since
//! the previous one and the configuration to decisions (events to record,
//! actions to take). Nothing here reads or writes the machine, so each
//! decision is table-tested on fixture observations.
//!
//! Every observation that changes state becomes an event; conditions that
//! need someone (a degraded array, a failing disk, a kernel limit at its
//! alert level, a full data disk) open an incident on the status page under
//! a key (`array:md0`, `disk:SERIAL`, `limit:fs.file-max`, `space:data`)
//! that later events update and resolve. Disks are named by serial number or
//! WWN, never by kernel name (invariant 5).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use mxrack_store::{IncidentAction, NewEvent, Severity};

use crate::sources::{FsObs, LimitObs, MdArray, NetCounters, Observation, ScsiDisk};

/// Error samples kept per disk (one per look; the window prunes them first).
pub const ERROR_SAMPLES_MAX: usize = 4096;
/// A level is left only this far (tenths of a percent) below its threshold,
/// so a value hovering at the threshold does not flap.
pub const HYSTERESIS_PERMILLE: u64 = 20;
/// Bus notices (unit attentions after a hot-plug on the same SCSI host)
/// a disk may have pending at once; each excuses one counted error.
pub const BUS_NOTICES_PENDING_MAX: u64 = 4;
/// Listen-queue overflows are reported at most this often.
pub const OVERFLOW_REPORT_SECS: i64 = 600;

/// The thresholds and switches the policies use (from `[health]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub disk_error_threshold: u64,
    pub disk_error_window_secs: i64,
    pub auto_fail: bool,
    pub auto_add: bool,
    pub rebuild_step_percent: u64,
    pub limit_warn_permille: u64,
    pub limit_alert_permille: u64,
    pub raise_limits: bool,
    pub raise_bounds: BTreeMap<String, u64>,
    pub space_warn_permille: u64,
    pub space_refuse_free_permille: u64,
    pub space_refuse_free_bytes: u64,
    pub space_resume_free_permille: u64,
    pub space_resume_free_bytes: u64,
    pub inodes_refuse_free_permille: u64,
}

impl Policy {
    pub fn from_config(h: &mxrack_config::Health) -> Policy {
        Policy {
            disk_error_threshold: h.disk_error_threshold,
            disk_error_window_secs: i64::try_from(h.disk_error_window_secs).unwrap_or(i64::MAX),
            auto_fail: h.auto_fail,
            auto_add: h.auto_add,
            rebuild_step_percent: h.rebuild_progress_step_percent.max(1),
            limit_warn_permille: h.limit_warn_percent * 10,
            limit_alert_permille: h.limit_alert_percent * 10,
            raise_limits: h.raise_limits,
            raise_bounds: h.raise_bounds.clone(),
            space_warn_permille: h.space_warn_percent * 10,
            space_refuse_free_permille: h.space_refuse_free_percent * 10,
            space_refuse_free_bytes: h.space_refuse_free_bytes,
            space_resume_free_permille: h.space_resume_free_percent * 10,
            space_resume_free_bytes: h.space_resume_free_bytes,
            inodes_refuse_free_permille: h.inodes_refuse_free_percent * 10,
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::from_config(&mxrack_config::Health::default())
    }
}

/// What the monitor is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Record this event (and its incident change).
    Event(NewEvent),
    /// Write `faulty` to the member's state so md stops using it.
    FailMember {
        array: String,
        dev: String,
        disk: String,
    },
    /// Write `remove` to a faulty (or idle spare) member's state.
    RemoveMember {
        array: String,
        dev: String,
        disk: String,
    },
    /// Add a blank disk to an array through mdadm (`rebuild`: it becomes the
    /// rebuild target of a degraded array; otherwise a hot spare).
    AddDisk {
        array: String,
        kernel: String,
        disk: String,
        rebuild: bool,
    },
    /// Remember, in the appliance's persistent state, that this disk was
    /// failed for I/O errors (so `mxrack disk add` refuses it later).
    RememberFailed {
        id: String,
        serial: Option<String>,
        wwn: Option<String>,
        reason: String,
    },
    /// Write a higher value to a sysctl.
    RaiseSysctl { key: String, from: u64, to: u64 },
    /// Close (`Some(reason)`) or open (`None`) the store's intake gate.
    SetIntake(Option<String>),
}

/// A kernel limit's or a file system's level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    #[default]
    Ok,
    Warn,
    Alert,
}

/// What the policies remember about one disk, by serial/WWN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskTrack {
    pub kernel: String,
    /// The disk as messages name it (serial, WWN, bay), as of the last look.
    pub name: String,
    /// Where it was as of the last look ("bay 2").
    pub location: String,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    /// SCSI host (controller) number, to tell its bus neighbours.
    pub host: Option<u32>,
    pub state: String,
    /// The raw counters (ioerr + iotmo + md's corrected errors) at the last
    /// look; at the first look they are the errors from before it (boot:
    /// QEMU's scsi-hd answers the probe's first TEST UNIT READY with the
    /// power-on unit attention, and the kernel counts every CHECK
    /// CONDITION), never counted.
    pub last_raw: Option<u64>,
    pub errors_at_first_sight: u64,
    /// Errors counted since the disk was first seen, bus notices excluded.
    pub errors: u64,
    /// Counter increments excused as bus notices so far, and how many are
    /// still expected (a hot-plug on its SCSI host gives each neighbour one
    /// "REPORTED LUNS DATA HAS CHANGED" unit attention) until when.
    pub bus_notices: u64,
    pub bus_notices_pending: u64,
    pub bus_notices_until: i64,
    /// The operator started md's hot replace of this disk.
    pub replacing: bool,
    /// (time, errors so far) looks within the window, plus the last one
    /// before it as the baseline.
    pub samples: VecDeque<(i64, u64)>,
    /// Errors within the window as of the last look.
    pub errors_in_window: u64,
    /// Errors passed the threshold (until the disk goes away).
    pub failing: bool,
    /// Arrays it was told to leave or has left: the technician may pull it.
    pub left_arrays: BTreeSet<String>,
    /// An auto-add (or the hint to add it) was decided already.
    pub add_considered: bool,
}

/// What the policies remember about one array.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArrayTrack {
    pub array_state: String,
    pub degraded: u32,
    pub sync_action: String,
    /// Progress steps reported for the running sync.
    pub step: u64,
    pub spare_missing: bool,
    /// Member disk id -> role (in_sync, spare, rebuilding, faulty, ...).
    pub members: BTreeMap<String, String>,
    /// Members whose faulty state was reported.
    pub faulty_reported: BTreeSet<String>,
}

/// Everything the policies carry from one look to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyState {
    /// True after the first look.
    pub started: bool,
    /// Incident keys open on the status page (loaded from the store at start,
    /// kept up to date by the monitor as it records events).
    pub open: BTreeSet<String>,
    pub disks: BTreeMap<String, DiskTrack>,
    /// Kernel name -> disk id as of the last look (to name a member whose
    /// disk is gone).
    pub kernel_ids: BTreeMap<String, String>,
    pub arrays: BTreeMap<String, ArrayTrack>,
    pub limits: BTreeMap<String, Level>,
    pub space: BTreeMap<String, Level>,
    pub intake_refused: bool,
    pub net: Option<NetCounters>,
    pub overflows_pending: u64,
    pub overflows_reported_at: i64,
    /// The replica pair's facts at the last look ("connected/peer has a
    /// copy/refused").
    pub replica_connection: Option<String>,
}

pub fn disk_component(id: &str) -> String {
    format!("disk {id}")
}

pub fn disk_key(id: &str) -> String {
    format!("disk:{id}")
}

pub fn array_key(name: &str) -> String {
    format!("array:{name}")
}

pub fn limit_key(key: &str) -> String {
    format!("limit:{key}")
}

/// The one incident of the replica pair: its peer is not connected.
pub const REPLICA_KEY: &str = "replica:peer";

pub fn space_key(fs: &str) -> String {
    format!("space:{fs}")
}

fn event(
    time: i64,
    severity: Severity,
    component: impl Into<String>,
    text: impl Into<String>,
    incident: IncidentAction,
) -> Decision {
    Decision::Event(NewEvent {
        time,
        severity,
        component: component.into(),
        text: text.into(),
        incident,
    })
}

fn open(key: String, title: impl Into<String>) -> IncidentAction {
    IncidentAction::Open {
        key,
        title: title.into(),
    }
}

/// Bytes for people: 1.5 GiB, 300 MiB, 12 KiB.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn percent(permille: u64) -> String {
    format!("{}.{}%", permille / 10, permille % 10)
}

/// A time left for people, as precise as it is worth: "about 40 s",
/// "about 3 min", "about 2 h 5 min".
pub fn eta(secs: u64) -> String {
    if secs < 90 {
        format!("about {} s", secs.max(1))
    } else if secs < 2 * 3600 {
        format!("about {} min", (secs + 30) / 60)
    } else {
        let mins = (secs + 30) / 60;
        format!("about {} h {} min", mins / 60, mins % 60)
    }
}

fn span(secs: i64) -> String {
    if secs % 3600 == 0 {
        format!("{} h", secs / 3600)
    } else if secs % 60 == 0 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// Runs every policy on one observation. `blank` holds the ids of disks
/// found blank (all zero at both ends; the monitor reads that, at most once
/// per disk).
pub fn evaluate(
    obs: &Observation,
    state: &mut PolicyState,
    policy: &Policy,
    blank: &BTreeSet<String>,
) -> Vec<Decision> {
    let mut out = Vec::new();
    disks(obs, state, policy, &mut out);
    arrays(obs, state, policy, &mut out);
    additions(obs, state, policy, blank, &mut out);
    limits(obs, state, policy, &mut out);
    listen_overflows(obs, state, &mut out);
    space(obs, state, policy, &mut out);
    replica(obs, state, &mut out);
    state.kernel_ids = obs
        .disks
        .iter()
        .map(|d| (d.kernel.clone(), d.id()))
        .collect();
    state.started = true;
    out
}

/// The replica pair (issue 13): losing the peer opens an incident (mail
/// is then on this appliance's disks only), a refused connection (split
/// brain, unrelated data) makes it critical, and it is resolved once DRBD
/// reports both copies up to date again. Only on the active node: the
/// standby runs no monitor.
fn replica(obs: &Observation, state: &mut PolicyState, out: &mut Vec<Decision>) {
    let Some(r) = obs.drbd.iter().find(|r| !r.role.is_empty()) else {
        return;
    };
    // What the page says depends on three facts, not on DRBD's many
    // transient connection states (BrokenPipe, Unconnected, WFConnection
    // ... would each be news otherwise): is the peer connected, does it
    // hold (or receive) a good copy, and is the connection refused.
    let connected = r.connected();
    // The handshake states (WFBitMapS/T, WFSyncUUID) come before every
    // resync: no news either way.
    let peer_copy =
        connected && (r.syncing() || r.peer_disk == "UpToDate" || r.connection.starts_with("WF"));
    let refused = r.connection == "StandAlone";
    let now = format!("{connected}/{peer_copy}/{refused}");
    let prev = state.replica_connection.replace(now.clone());
    let open_now = state.open.contains(REPLICA_KEY);
    let resolve = |text: &str| {
        event(
            obs.time,
            Severity::Info,
            "replica",
            text,
            IncidentAction::Resolve {
                key: REPLICA_KEY.into(),
            },
        )
    };
    if prev.as_deref() == Some(now.as_str()) {
        // Same facts: only the end of a resync is news.
        if r.in_sync() && open_now {
            out.push(resolve(
                "The peer holds every message again (both copies UpToDate)",
            ));
        }
        return;
    }
    if !connected || !peer_copy {
        let (severity, text) = if refused {
            (
                Severity::Critical,
                "DRBD is not connecting to the peer (StandAlone: disconnected by an \
                 operator, or a split brain or unrelated data refused): nothing was \
                 discarded; an operator decides which copy wins (README, Replica pair)"
                    .to_string(),
            )
        } else if connected {
            (
                Severity::Warning,
                format!(
                    "The peer appliance is connected but holds no good copy (its disk: {}): \
                     new mail is stored on this appliance only",
                    r.peer_disk
                ),
            )
        } else {
            (
                Severity::Warning,
                format!(
                    "The peer appliance is not connected ({}): new mail is stored on \
                     this appliance only until it returns",
                    r.connection
                ),
            )
        };
        out.push(event(
            obs.time,
            severity,
            "replica",
            text,
            open(REPLICA_KEY.into(), "Replica peer unreachable"),
        ));
        return;
    }
    if !open_now {
        return;
    }
    if r.in_sync() {
        out.push(resolve(
            "The peer is connected and holds every message again",
        ));
    } else {
        out.push(event(
            obs.time,
            Severity::Notice,
            "replica",
            format!(
                "The peer is connected again; copying the {} MiB it missed",
                r.out_of_sync_kib.div_ceil(1024)
            ),
            IncidentAction::Update {
                key: REPLICA_KEY.into(),
            },
        ));
    }
}

/// The id of the disk behind member device `kernel` (or, when that disk is
/// gone, the id it had at the last look).
fn member_id(obs: &Observation, state: &PolicyState, kernel: &str) -> String {
    obs.disk_by_kernel(kernel)
        .map(ScsiDisk::id)
        .or_else(|| state.kernel_ids.get(kernel).cloned())
        .unwrap_or_else(|| format!("kernel-{kernel}"))
}

/// The disk `id` as messages name it: serial, WWN and bay from this look,
/// else from the last look it was seen in.
pub fn name_of(obs: &Observation, state: &PolicyState, id: &str) -> String {
    obs.disk(id)
        .map(ScsiDisk::describe)
        .or_else(|| {
            state
                .disks
                .get(id)
                .map(|t| t.name.clone())
                .filter(|n| !n.is_empty())
        })
        .unwrap_or_else(|| id.to_string())
}

/// Disk presence, SCSI state and error counters.
pub fn disks(obs: &Observation, state: &mut PolicyState, policy: &Policy, out: &mut Vec<Decision>) {
    let now = obs.time;
    let first = !state.started;
    let window = policy.disk_error_window_secs;
    // SCSI hosts where a disk came or went since the last look: its bus
    // neighbours get a unit attention that is no I/O error of theirs.
    let mut plugged_hosts: Vec<u32> = Vec::new();
    if !first {
        for disk in &obs.disks {
            if !state.disks.contains_key(&disk.id())
                && let Some(h) = disk.host()
            {
                plugged_hosts.push(h);
            }
        }
        for (id, t) in &state.disks {
            if obs.disk(id).is_none()
                && let Some(h) = t.host
            {
                plugged_hosts.push(h);
            }
        }
    }
    let mut present = BTreeSet::new();
    for disk in &obs.disks {
        let id = disk.id();
        present.insert(id.clone());
        let component = disk_component(&id);
        let key = disk_key(&id);
        let is_new = !state.disks.contains_key(&id);
        let track = state.disks.entry(id.clone()).or_default();
        if is_new && !first {
            out.push(event(
                now,
                Severity::Notice,
                &component,
                format!(
                    "Disk {} appeared ({} {}, {}, {}).",
                    disk.describe(),
                    disk.vendor,
                    disk.model,
                    human_bytes(disk.size_bytes),
                    disk.kernel
                ),
                IncidentAction::None,
            ));
        }
        track.kernel = disk.kernel.clone();
        track.name = disk.describe();
        track.location = disk.location();
        track.serial = disk.serial.clone();
        track.wwn = disk.wwn.clone();
        track.host = disk.host();

        // The SCSI layer took the disk offline (or it came back).
        let was_running = track.state.is_empty() || track.state == "running";
        if !disk.is_running() && was_running && !(first && state.open.contains(&key)) {
            out.push(event(
                now,
                Severity::Critical,
                &component,
                format!(
                    "Disk {} is {}: the SCSI layer stopped using it.",
                    disk.describe(),
                    disk.state
                ),
                open(
                    key.clone(),
                    format!("Disk {id} offline ({})", disk.location()),
                ),
            ));
        } else if disk.is_running() && !was_running {
            out.push(event(
                now,
                Severity::Notice,
                &component,
                format!(
                    "Disk {} is running again (it was {}).",
                    disk.describe(),
                    track.state
                ),
                IncidentAction::Update { key: key.clone() },
            ));
        }
        track.state = disk.state.clone();

        // Error counters: the SCSI layer's errors and timeouts plus the read
        // errors md corrected on its members, against the window.
        let md_errors: u64 = obs
            .memberships(&disk.kernel)
            .iter()
            .map(|(_, m)| m.errors)
            .sum();
        let raw = disk.error_count().saturating_add(md_errors);
        if track.bus_notices_until < now {
            track.bus_notices_pending = 0;
        }
        if !is_new && let Some(host) = disk.host() {
            let plugs = plugged_hosts.iter().filter(|&&h| h == host).count() as u64;
            if plugs > 0 {
                track.bus_notices_pending =
                    (track.bus_notices_pending + plugs).min(BUS_NOTICES_PENDING_MAX);
                track.bus_notices_until = now.saturating_add(window);
            }
        }
        match track.last_raw {
            // Errors from before the first look (boot) are not counted.
            None => track.errors_at_first_sight = raw,
            // Counters went back (driver reloaded): nothing new.
            Some(last) if raw < last => {}
            Some(last) => {
                let delta = raw - last;
                let notices = delta.min(track.bus_notices_pending);
                track.bus_notices_pending -= notices;
                track.bus_notices += notices;
                track.errors += delta - notices;
            }
        }
        track.last_raw = Some(raw);
        let total = track.errors;
        track.samples.push_back((now, total));
        while track.samples.len() >= 2 && track.samples[1].0 <= now - window {
            track.samples.pop_front();
        }
        while track.samples.len() > ERROR_SAMPLES_MAX {
            track.samples.pop_front();
        }
        let baseline = track.samples.front().map_or(total, |&(_, v)| v);
        track.errors_in_window = total - baseline;
        if track.errors_in_window >= policy.disk_error_threshold && !track.failing {
            track.failing = true;
            out.push(event(
                now,
                Severity::Warning,
                &component,
                format!(
                    "Disk {}: {} I/O errors and timeouts within {} (threshold {}).",
                    disk.describe(),
                    track.errors_in_window,
                    span(window),
                    policy.disk_error_threshold
                ),
                open(
                    key.clone(),
                    format!("Disk {id} failing ({})", disk.location()),
                ),
            ));
            out.push(Decision::RememberFailed {
                id: id.clone(),
                serial: disk.serial.clone(),
                wwn: disk.wwn.clone(),
                reason: format!(
                    "{} I/O errors and timeouts within {}",
                    track.errors_in_window,
                    span(window)
                ),
            });
            for (array, member) in obs.memberships(&disk.kernel) {
                if member.is_faulty() {
                    continue;
                }
                if !policy.auto_fail {
                    out.push(event(
                        now,
                        Severity::Warning,
                        &component,
                        format!(
                            "health.auto_fail is off: run `mxrack disk replace {id}` to take it out of {}.",
                            array.name
                        ),
                        IncidentAction::Update { key: key.clone() },
                    ));
                } else if member.is_idle_spare() {
                    // A failing spare protects nothing: take it out.
                    out.push(Decision::RemoveMember {
                        array: array.name.clone(),
                        dev: member.dev.clone(),
                        disk: id.clone(),
                    });
                } else if member.is_in_sync() && !array.can_lose_one() {
                    out.push(event(
                        now,
                        Severity::Critical,
                        &component,
                        format!(
                            "Not failing disk {id} out of {}: it holds the last good copy. Add a disk and let it rebuild first.",
                            array.name
                        ),
                        IncidentAction::Update { key: key.clone() },
                    ));
                } else {
                    out.push(Decision::FailMember {
                        array: array.name.clone(),
                        dev: member.dev.clone(),
                        disk: id.clone(),
                    });
                }
            }
        }
    }
    // Disks that went away (a technician pulled them).
    let gone: Vec<String> = state
        .disks
        .keys()
        .filter(|id| !present.contains(*id))
        .cloned()
        .collect();
    for id in gone {
        if let Some(track) = state.disks.remove(&id) {
            out.push(event(
                now,
                Severity::Notice,
                disk_component(&id),
                format!("Disk {} was removed.", track.name),
                IncidentAction::Resolve { key: disk_key(&id) },
            ));
        }
    }
    if first {
        // Incidents of disks that are no longer here (swapped while the
        // appliance was off) are over.
        for key in state.open.clone() {
            if let Some(id) = key.strip_prefix("disk:")
                && !present.contains(id)
            {
                out.push(event(
                    now,
                    Severity::Notice,
                    disk_component(id),
                    format!("Disk {id} is no longer in the appliance."),
                    IncidentAction::Resolve { key: key.clone() },
                ));
            }
        }
    }
}

/// A one-line description of an array for event texts.
fn array_summary(a: &MdArray) -> String {
    let spares = a.idle_spares().count();
    format!(
        "{} of {} members in sync, {} spare{}",
        a.in_sync_count(),
        a.raid_disks,
        spares,
        if spares == 1 { "" } else { "s" }
    )
}

/// Array state, members, rebuilds and spares.
pub fn arrays(
    obs: &Observation,
    state: &mut PolicyState,
    policy: &Policy,
    out: &mut Vec<Decision>,
) {
    let now = obs.time;
    let mut seen = BTreeSet::new();
    for a in &obs.arrays {
        seen.insert(a.name.clone());
        let key = array_key(&a.name);
        let prev = state.arrays.get(&a.name).cloned();
        let first_sight = prev.is_none();
        let prev = prev.unwrap_or_default();
        let mut track = ArrayTrack {
            array_state: a.array_state.clone(),
            degraded: a.degraded,
            sync_action: a.sync_action.clone(),
            step: prev.step,
            spare_missing: prev.spare_missing,
            members: BTreeMap::new(),
            faulty_reported: BTreeSet::new(),
        };
        let rebuild_target = a
            .members
            .iter()
            .find(|m| m.is_rebuilding())
            .map(|m| name_of(obs, state, &member_id(obs, state, &m.disk)));

        // Members.
        for m in &a.members {
            let id = member_id(obs, state, &m.disk);
            let role = m.role();
            let component = disk_component(&id);
            let name = name_of(obs, state, &id);
            // md's hot replace finished only when the array is whole and
            // nothing rebuilds: then md set the old member faulty itself.
            // A member that fails mid-copy leaves the array degraded (md
            // turns the copy into a rebuild): that is a failure.
            let copy_done = a.degraded == 0 && !a.members.iter().any(|x| x.is_rebuilding());
            let replacing = state.disks.get(&id).is_some_and(|t| t.replacing);
            if m.is_faulty() && replacing && copy_done {
                // Not a failure.
                if !prev.faulty_reported.contains(&id) {
                    out.push(event(
                        now,
                        Severity::Notice,
                        &component,
                        format!(
                            "{}: the copy of disk {name} is complete; it leaves {} and can be pulled.",
                            a.name, a.name
                        ),
                        IncidentAction::Update { key: disk_key(&id) },
                    ));
                }
                track.faulty_reported.insert(id.clone());
                out.push(Decision::RemoveMember {
                    array: a.name.clone(),
                    dev: m.dev.clone(),
                    disk: id.clone(),
                });
            } else if m.is_faulty() {
                let known = prev.faulty_reported.contains(&id)
                    || (first_sight && state.open.contains(&disk_key(&id)));
                if !known {
                    let d = obs.disk(&id);
                    out.push(Decision::RememberFailed {
                        id: id.clone(),
                        serial: d.and_then(|d| d.serial.clone()),
                        wwn: d.and_then(|d| d.wwn.clone()),
                        reason: format!("marked faulty in {} (I/O errors)", a.name),
                    });
                    out.push(event(
                        now,
                        Severity::Critical,
                        &component,
                        format!(
                            "{}: disk {name} ({}) is marked faulty; md no longer uses it.",
                            a.name, m.dev
                        ),
                        open(
                            disk_key(&id),
                            format!(
                                "Disk {id} failed in {} ({})",
                                a.name,
                                state
                                    .disks
                                    .get(&id)
                                    .map_or("bay unknown", |t| t.location.as_str())
                            ),
                        ),
                    ));
                    if !policy.auto_fail {
                        out.push(event(
                            now,
                            Severity::Warning,
                            &component,
                            format!(
                                "health.auto_fail is off: run `mxrack disk replace {id}` to remove it from {}.",
                                a.name
                            ),
                            IncidentAction::Update { key: disk_key(&id) },
                        ));
                    }
                }
                track.faulty_reported.insert(id.clone());
                if policy.auto_fail {
                    // Removed once faulty, so the technician can pull it
                    // (repeated each look until md lets it go).
                    out.push(Decision::RemoveMember {
                        array: a.name.clone(),
                        dev: m.dev.clone(),
                        disk: id.clone(),
                    });
                }
            } else if !first_sight && !prev.members.contains_key(&id) {
                out.push(event(
                    now,
                    Severity::Notice,
                    &component,
                    format!("Disk {name} joined {} as {role}.", a.name),
                    IncidentAction::Update { key: key.clone() },
                ));
            }
            track.members.insert(id, role);
        }
        for (id, role) in &prev.members {
            if track.members.contains_key(id) {
                continue;
            }
            let name = name_of(obs, state, id);
            let text = match obs.disk(id) {
                Some(_) => format!(
                    "Disk {name} left {} (it was {role}); it can be pulled.",
                    a.name
                ),
                None => format!("Disk {name} left {} (it was {role}).", a.name),
            };
            // The monitor records its own removals as it makes them.
            let announced = state
                .disks
                .get_mut(id)
                .is_some_and(|t| !t.left_arrays.insert(a.name.clone()));
            if announced {
                continue;
            }
            out.push(event(
                now,
                Severity::Notice,
                disk_component(id),
                text,
                IncidentAction::Update { key: disk_key(id) },
            ));
        }

        // Degraded.
        let open_before = state.open.contains(&key);
        if a.degraded > 0 && (prev.degraded == 0 || first_sight) && !(first_sight && open_before) {
            let next = match (&rebuild_target, a.idle_spares().count()) {
                (Some(t), _) => format!("; rebuilding onto disk {t}"),
                (None, 0) => "; no spare to rebuild onto: add a disk".into(),
                (None, _) => "; a spare is there but no rebuild runs".into(),
            };
            out.push(event(
                now,
                Severity::Critical,
                &a.name,
                format!(
                    "{} ({}) is degraded: {}{next}.",
                    a.name,
                    a.level,
                    array_summary(a)
                ),
                open(key.clone(), format!("RAID array {} degraded", a.name)),
            ));
        }

        // Resync, recovery, reshape: start, progress, end.
        let was_syncing = !first_sight && is_sync(&prev.sync_action);
        let syncing = a.is_syncing();
        if syncing && (!was_syncing || prev.sync_action != a.sync_action) {
            track.step = 0;
            let onto = rebuild_target
                .as_ref()
                .map(|t| format!(" onto disk {t}"))
                .unwrap_or_default();
            out.push(event(
                now,
                Severity::Notice,
                &a.name,
                format!("{}: {} started{onto}.", a.name, a.sync_action),
                IncidentAction::Update { key: key.clone() },
            ));
        }
        if syncing && let Some(pm) = a.progress_permille() {
            let step = u64::from(pm) / (policy.rebuild_step_percent * 10);
            if step > track.step {
                track.step = step;
                let speed = a
                    .sync_speed_kib
                    .map(|s| format!(" at {s} KiB/s"))
                    .unwrap_or_default();
                let left = a
                    .sync_eta_secs()
                    .map(|secs| format!(", {} left", eta(secs)))
                    .unwrap_or_default();
                let rate = format!("{speed}{left}");
                out.push(event(
                    now,
                    Severity::Info,
                    &a.name,
                    format!(
                        "{}: {} {} done{rate}.",
                        a.name,
                        a.sync_action,
                        percent(u64::from(pm))
                    ),
                    IncidentAction::Update { key: key.clone() },
                ));
            }
        }
        if was_syncing && !syncing {
            let (severity, text) = if a.degraded > 0 {
                (
                    Severity::Warning,
                    format!(
                        "{}: {} stopped before the array was whole: {}.",
                        a.name,
                        prev.sync_action,
                        array_summary(a)
                    ),
                )
            } else {
                (
                    Severity::Notice,
                    format!(
                        "{}: {} finished: {}.",
                        a.name,
                        prev.sync_action,
                        array_summary(a)
                    ),
                )
            };
            out.push(event(
                now,
                severity,
                &a.name,
                text,
                IncidentAction::Update { key: key.clone() },
            ));
        }
        if a.degraded == 0 && (prev.degraded > 0 || (first_sight && open_before)) {
            out.push(event(
                now,
                Severity::Notice,
                &a.name,
                format!("{} is redundant again: {}.", a.name, array_summary(a)),
                IncidentAction::Resolve { key: key.clone() },
            ));
        }

        // Hot spare.
        let spare_missing =
            a.is_redundant() && a.degraded == 0 && !syncing && a.idle_spares().next().is_none();
        if spare_missing && (!prev.spare_missing || first_sight) {
            out.push(event(
                now,
                Severity::Warning,
                &a.name,
                format!(
                    "{} has no hot spare: one more failure leaves it degraded. Insert a blank disk (added automatically when health.auto_add is on, else `mxrack disk add SERIAL`).",
                    a.name
                ),
                IncidentAction::None,
            ));
        } else if !spare_missing && prev.spare_missing && a.idle_spares().next().is_some() {
            let spare = a
                .idle_spares()
                .next()
                .map(|m| name_of(obs, state, &member_id(obs, state, &m.disk)))
                .unwrap_or_default();
            out.push(event(
                now,
                Severity::Info,
                &a.name,
                format!("{} has a hot spare again: disk {spare}.", a.name),
                IncidentAction::None,
            ));
        }
        track.spare_missing = spare_missing;
        state.arrays.insert(a.name.clone(), track);
    }
    let gone: Vec<String> = state
        .arrays
        .keys()
        .filter(|n| !seen.contains(*n))
        .cloned()
        .collect();
    for name in gone {
        state.arrays.remove(&name);
        out.push(event(
            now,
            Severity::Warning,
            &name,
            format!("Array {name} is gone (stopped or disassembled)."),
            IncidentAction::None,
        ));
    }
}

fn is_sync(action: &str) -> bool {
    matches!(
        action,
        "recover" | "resync" | "reshape" | "check" | "repair"
    )
}

/// What a disk would be for an array: 2 = its rebuild target (degraded, no
/// rebuild running, no spare), 1 = its hot spare (none yet), 0 = nothing.
pub fn need_of(a: &MdArray) -> u8 {
    if !a.is_redundant() || a.array_state == "inactive" {
        return 0;
    }
    let spare = a.idle_spares().next().is_some();
    let rebuilding = a.members.iter().any(|m| m.is_rebuilding());
    if a.degraded > 0 && !rebuilding && !spare {
        2
    } else if !spare {
        1
    } else {
        0
    }
}

/// The array a disk should join: the neediest that it is large enough for.
pub fn array_for(obs: &Observation, disk: &ScsiDisk) -> Option<(String, bool)> {
    obs.arrays
        .iter()
        .filter(|a| need_of(a) > 0)
        .filter(|a| {
            a.member_bytes_needed()
                .is_none_or(|need| disk.size_bytes >= need)
        })
        .max_by_key(|a| (need_of(a), std::cmp::Reverse(a.name.clone())))
        .map(|a| (a.name.clone(), need_of(a) == 2))
}

/// A blank disk becomes a degraded array's rebuild target or an array's
/// hot spare (when `auto_add`; otherwise the operator is told how).
pub fn additions(
    obs: &Observation,
    state: &mut PolicyState,
    policy: &Policy,
    blank: &BTreeSet<String>,
    out: &mut Vec<Decision>,
) {
    for disk in &obs.disks {
        let id = disk.id();
        if !blank.contains(&id) || !disk.is_running() || !obs.memberships(&disk.kernel).is_empty() {
            continue;
        }
        let Some(track) = state.disks.get_mut(&id) else {
            continue;
        };
        if track.add_considered {
            continue;
        }
        let Some((array, rebuild)) = array_for(obs, disk) else {
            continue;
        };
        track.add_considered = true;
        let role = if rebuild {
            "rebuild target"
        } else {
            "hot spare"
        };
        if policy.auto_add {
            out.push(Decision::AddDisk {
                array,
                kernel: disk.kernel.clone(),
                disk: id,
                rebuild,
            });
        } else {
            out.push(event(
                obs.time,
                Severity::Notice,
                disk_component(&id),
                format!(
                    "Blank disk {} can be {array}'s {role}: run `mxrack disk add {id}` (health.auto_add is off).",
                    disk.describe()
                ),
                IncidentAction::None,
            ));
        }
    }
}

fn level_of(permille: u64, warn: u64, alert: u64) -> Level {
    if permille >= alert {
        Level::Alert
    } else if permille >= warn {
        Level::Warn
    } else {
        Level::Ok
    }
}

/// The new level, leaving a level only `HYSTERESIS_PERMILLE` below it.
fn level_with_hysteresis(prev: Level, permille: u64, warn: u64, alert: u64) -> Level {
    let up = level_of(permille, warn, alert);
    let down = level_of(permille + HYSTERESIS_PERMILLE, warn, alert);
    up.max(down.min(prev))
}

/// A value that brings use to about half of the new limit.
pub fn suggested_limit(l: &LimitObs) -> u64 {
    let s = l.max.saturating_mul(2).max(l.used.saturating_mul(2));
    if l.key == "kernel.pid_max" {
        s.min(mxrack_config::PID_MAX_LIMIT)
    } else {
        s
    }
}

/// Kernel limits: warn at 80 %, alert (incident) at 90 %, raise live within
/// the configured bound when allowed.
pub fn limits(
    obs: &Observation,
    state: &mut PolicyState,
    policy: &Policy,
    out: &mut Vec<Decision>,
) {
    let now = obs.time;
    for l in &obs.limits {
        if l.max == 0 {
            continue;
        }
        let key = limit_key(&l.key);
        let pm = l.permille();
        let prev = state.limits.get(&l.key).copied().unwrap_or(
            if !state.started && state.open.contains(&key) {
                Level::Alert
            } else {
                Level::Ok
            },
        );
        let level = level_with_hysteresis(
            prev,
            pm,
            policy.limit_warn_permille,
            policy.limit_alert_permille,
        );
        state.limits.insert(l.key.clone(), level);
        if level == prev {
            continue;
        }
        let component = format!("limit {}", l.key);
        let suggest = suggested_limit(l);
        let usage = format!(
            "{}: {} of {} in use ({})",
            l.what,
            l.used,
            l.max,
            percent(pm)
        );
        let raise_hint = format!(
            "raise it with `sysctl -w {}={suggest}` (and in /etc/sysctl.conf to keep it)",
            l.key
        );
        match (prev, level) {
            (_, Level::Alert) => {
                let mut text = format!("{} at {}. {usage}; {raise_hint}.", l.key, percent(pm));
                let bound = policy.raise_bounds.get(&l.key).copied();
                let raisable = mxrack_config::RAISABLE_SYSCTLS.contains(&l.key.as_str());
                let mut raise = None;
                if policy.raise_limits && raisable {
                    match bound {
                        Some(b) if b > l.max => raise = Some(Decision::RaiseSysctl {
                            key: l.key.clone(),
                            from: l.max,
                            to: suggest.min(b),
                        }),
                        Some(b) => text.push_str(&format!(
                            " It is at its bound ({b}, health.raise_bounds): raise the bound or lower the load."
                        )),
                        None => text.push_str(&format!(
                            " Not raised: health.raise_bounds has no bound for {}.",
                            l.key
                        )),
                    }
                }
                out.push(event(
                    now,
                    Severity::Critical,
                    component,
                    text,
                    open(key, format!("Kernel limit {} at {}", l.key, percent(pm))),
                ));
                out.extend(raise);
            }
            (Level::Ok, Level::Warn) => out.push(event(
                now,
                Severity::Warning,
                component,
                format!("{} at {}. {usage}; {raise_hint}.", l.key, percent(pm)),
                IncidentAction::None,
            )),
            (Level::Alert, _) => out.push(event(
                now,
                Severity::Notice,
                component,
                format!("{} is back to {}. {usage}.", l.key, percent(pm)),
                IncidentAction::Resolve { key },
            )),
            _ => out.push(event(
                now,
                Severity::Info,
                component,
                format!("{} is back to {}. {usage}.", l.key, percent(pm)),
                IncidentAction::None,
            )),
        }
    }
}

/// Connections dropped because a listen queue was full.
pub fn listen_overflows(obs: &Observation, state: &mut PolicyState, out: &mut Vec<Decision>) {
    if let Some(prev) = state.net {
        let delta = obs
            .net
            .listen_overflows
            .saturating_sub(prev.listen_overflows);
        state.overflows_pending += delta;
        if state.overflows_pending > 0
            && obs.time - state.overflows_reported_at >= OVERFLOW_REPORT_SECS
        {
            let somaxconn = obs
                .limits
                .iter()
                .find(|l| l.key == "net.core.somaxconn")
                .map(|l| format!(" (now {})", l.max))
                .unwrap_or_default();
            out.push(event(
                obs.time,
                Severity::Warning,
                "limit net.core.somaxconn",
                format!(
                    "{} connections were dropped because a listen queue was full (TcpExt ListenOverflows); raise net.core.somaxconn{somaxconn}.",
                    state.overflows_pending
                ),
                IncidentAction::None,
            ));
            state.overflows_pending = 0;
            state.overflows_reported_at = obs.time;
        }
    }
    state.net = Some(obs.net);
}

/// Free space below which new mail is refused, and above which it is taken
/// again, for this file system.
pub fn space_thresholds(fs: &FsObs, policy: &Policy) -> (u64, u64) {
    let of = |pm: u64| {
        u64::try_from(u128::from(fs.size_bytes) * u128::from(pm) / 1000).unwrap_or(u64::MAX)
    };
    (
        policy
            .space_refuse_free_bytes
            .max(of(policy.space_refuse_free_permille)),
        policy
            .space_resume_free_bytes
            .max(of(policy.space_resume_free_permille)),
    )
}

/// Space and inodes: warn, then (data file system) refuse new mail before
/// it is full, and take it again once space is back.
pub fn space(obs: &Observation, state: &mut PolicyState, policy: &Policy, out: &mut Vec<Decision>) {
    let now = obs.time;
    let first = !state.started;
    for fs in &obs.filesystems {
        if fs.size_bytes == 0 {
            // ramfs/rootfs of an initramfs, and other file systems without
            // a size: nothing to fill, nothing to watch.
            continue;
        }
        let key = space_key(&fs.name);
        let component = format!("space {}", fs.name);
        let used = fs.used_permille();
        let prev = state.space.get(&fs.name).copied().unwrap_or_default();
        let warn = level_with_hysteresis(
            prev.min(Level::Warn),
            used,
            policy.space_warn_permille,
            1001,
        )
        .min(Level::Warn);
        if warn != prev.min(Level::Warn) {
            out.push(event(
                now,
                if warn == Level::Warn {
                    Severity::Warning
                } else {
                    Severity::Info
                },
                &component,
                format!(
                    "The {} file system ({}) is {} used: {} of {} free.",
                    fs.name,
                    fs.path,
                    percent(used),
                    human_bytes(fs.free_bytes),
                    human_bytes(fs.size_bytes)
                ),
                IncidentAction::None,
            ));
        }
        let (refuse_at, resume_at) = space_thresholds(fs, policy);
        let inodes_low = fs.inodes_free_permille() < policy.inodes_refuse_free_permille;
        let inodes_back = fs.inodes_free_permille() >= policy.inodes_refuse_free_permille + 10;
        let full = fs.free_bytes < refuse_at || inodes_low;
        let back = fs.free_bytes >= resume_at && inodes_back;
        let was_full = prev == Level::Alert || (first && state.open.contains(&key));
        let now_full = if was_full { !back } else { full };
        let what = if inodes_low && fs.free_bytes >= refuse_at {
            format!("only {} of {} inodes free", fs.inodes_free, fs.inodes)
        } else {
            format!(
                "only {} free of {} ({} used)",
                human_bytes(fs.free_bytes),
                human_bytes(fs.size_bytes),
                percent(used)
            )
        };
        if now_full && !was_full {
            let (title, consequence) = if fs.name == "data" {
                (
                    "Data disk nearly full: new mail refused".to_string(),
                    format!(
                        "SMTP answers 452 and IMAP APPEND is refused until {} are free; mail already accepted is safe.",
                        human_bytes(resume_at)
                    ),
                )
            } else {
                (
                    format!("The {} file system is nearly full", fs.name),
                    "free space on it.".into(),
                )
            };
            out.push(event(
                now,
                Severity::Critical,
                &component,
                format!(
                    "The {} file system ({}) has {what}: {consequence}",
                    fs.name, fs.path
                ),
                open(key.clone(), title),
            ));
        } else if was_full && !now_full {
            let then = if fs.name == "data" {
                " New mail is accepted again."
            } else {
                ""
            };
            out.push(event(
                now,
                Severity::Notice,
                &component,
                format!(
                    "Space is back on the {} file system: {} free.{then}",
                    fs.name,
                    human_bytes(fs.free_bytes)
                ),
                IncidentAction::Resolve { key: key.clone() },
            ));
        }
        if fs.name == "data" {
            if now_full && !state.intake_refused {
                state.intake_refused = true;
                out.push(Decision::SetIntake(Some(format!(
                    "data file system has {what}"
                ))));
            } else if !now_full && state.intake_refused {
                state.intake_refused = false;
                out.push(Decision::SetIntake(None));
            }
        }
        state
            .space
            .insert(fs.name.clone(), if now_full { Level::Alert } else { warn });
    }
}

#[cfg(test)]
mod tests;
