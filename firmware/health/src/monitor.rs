//! The monitor: one blocking loop (in a thread of tokio's blocking pool,
//! restarted by the supervisor if it panics) that looks at the machine on a
//! timer and at once when the kernel announces a change: md's notifying
//! sysfs attributes (array_state, degraded, sync_action, sync_completed,
//! member state) through poll(2), and disk hot-plug through the kernel's
//! uevent netlink socket. Kernel-triggered looks are spaced by at least
//! `KERNEL_LOOK_GAP` so a storm of notifications costs a bounded amount.
//!
//! Each look: observe -> `policy::evaluate` -> record events, take actions
//! (only on the real root, only when the configuration allows) -> publish a
//! new [`Snapshot`]. The technician's commands (`mxrack disk replace`,
//! `mxrack disk add`) reach the loop through a channel and a wake-up pipe.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use mxrack_store::{IncidentAction, NewEvent, Severity, Store};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use tracing::{error, info, warn};

use crate::actions;
use crate::bays::BayMap;
use crate::failed::{FailedDisk, FailedDisks};
use crate::locate;
use crate::policy::{self, Decision, Policy, PolicyState, disk_component, disk_key};
use crate::snapshot::{self, Snapshot};
use crate::sources::{self, LimitObs, MemSource, Observation, ScsiDisk, scsi};
use crate::sysroot::SysRoot;
use crate::time;

/// Least time between two looks started by kernel notifications.
pub const KERNEL_LOOK_GAP: Duration = Duration::from_millis(200);
/// Most sysfs attributes polled at once.
pub const WATCHED_MAX: usize = 512;
/// Longest a CLI command waits for the monitor's answer.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a member set faulty may take to show it before `remove`.
const FAULTY_WAIT: Duration = Duration::from_secs(5);

/// A technician's command for the running monitor.
pub enum Request {
    ReplaceDisk {
        id: String,
        with: Option<String>,
        reply: mpsc::Sender<Result<String, String>>,
    },
    AddDisk {
        id: String,
        force: bool,
        reply: mpsc::Sender<Result<String, String>>,
    },
    Locate {
        id: String,
        off: bool,
        secs: u64,
        reply: mpsc::Sender<Result<String, String>>,
    },
}

/// What the monitor and its users share.
#[derive(Default)]
struct Shared {
    snapshot: RwLock<Arc<Snapshot>>,
    stop: AtomicBool,
}

/// The running monitor as the rest of the appliance sees it: the latest
/// snapshot, the technician's commands, stop.
pub struct HealthHandle {
    shared: Arc<Shared>,
    requests: Mutex<mpsc::Sender<Request>>,
    wake: OwnedFd,
    config: mxrack_config::Health,
}

impl HealthHandle {
    /// The latest look at the machine.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared
            .snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn config(&self) -> &mxrack_config::Health {
        &self.config
    }

    fn wake(&self) {
        // A full pipe already means "wake up".
        let _ = nix::unistd::write(self.wake.as_fd(), b"w");
    }

    /// Ends the monitor loop (after its current look).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.wake();
    }

    fn command(
        &self,
        make: impl FnOnce(mpsc::Sender<Result<String, String>>) -> Request,
    ) -> Result<String, String> {
        let (tx, rx) = mpsc::channel();
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(make(tx))
            .map_err(|_| "the health monitor is not running".to_string())?;
        self.wake();
        rx.recv_timeout(COMMAND_TIMEOUT)
            .map_err(|_| "the health monitor did not answer in time".to_string())?
    }

    /// `mxrack disk replace ID [--with NEW]`: md's hot replace onto a spare
    /// (or NEW), else takes the disk out of its arrays so it can be pulled.
    pub fn replace_disk(&self, id: &str, with: Option<&str>) -> Result<String, String> {
        let id = id.to_string();
        let with = with.map(str::to_string);
        self.command(|reply| Request::ReplaceDisk { id, with, reply })
    }

    /// `mxrack disk add ID [--force]`: makes the disk a rebuild target or spare.
    pub fn add_disk(&self, id: &str, force: bool) -> Result<String, String> {
        let id = id.to_string();
        self.command(|reply| Request::AddDisk { id, force, reply })
    }

    /// `mxrack disk locate ID [--off]`: the bay's locate LED, or a blink of
    /// the disk's activity LED in the background.
    pub fn locate(&self, id: &str, off: bool, secs: u64) -> Result<String, String> {
        let id = id.to_string();
        self.command(|reply| Request::Locate {
            id,
            off,
            secs,
            reply,
        })
    }
}

/// The monitor loop's parts, kept across restarts by the supervisor.
pub struct MonitorTask {
    store: Arc<Store>,
    config: mxrack_config::Health,
    data_dir: PathBuf,
    shared: Arc<Shared>,
    requests: Mutex<mpsc::Receiver<Request>>,
    wake: OwnedFd,
}

impl MonitorTask {
    /// Runs the loop in a blocking thread until stopped; a panic in it is
    /// passed on so the supervisor restarts the task (invariant 6).
    pub async fn run(self: Arc<Self>) {
        let task = self.clone();
        match mxrack_store::spawn_blocking(move || task.run_blocking()).await {
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            _ => {}
        }
    }

    fn run_blocking(&self) {
        let mut monitor = Monitor::new(self.store.clone(), &self.config, &self.data_dir);
        let requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        monitor.run_loop(&requests, &self.wake, &self.shared);
    }
}

/// Sets up the monitor for `config`: the handle for the rest of the
/// appliance and the task for the supervisor to run.
pub fn start(
    config: &mxrack_config::Config,
    store: Arc<Store>,
) -> Result<(Arc<HealthHandle>, Arc<MonitorTask>), String> {
    let (wake_r, wake_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("cannot make the monitor's wake-up pipe: {e}"))?;
    let (tx, rx) = mpsc::channel();
    let shared = Arc::new(Shared::default());
    let handle = Arc::new(HealthHandle {
        shared: shared.clone(),
        requests: Mutex::new(tx),
        wake: wake_w,
        config: config.health.clone(),
    });
    let task = Arc::new(MonitorTask {
        store,
        config: config.health.clone(),
        data_dir: config.appliance.data_dir.clone(),
        shared,
        requests: Mutex::new(rx),
        wake: wake_r,
    });
    Ok((handle, task))
}

/// The monitor's state and its work, callable without the loop (the CLI
/// runs one look, or one command, when no appliance is running).
pub struct Monitor {
    store: Arc<Store>,
    root: SysRoot,
    data_dir: PathBuf,
    policy: Policy,
    mdadm: PathBuf,
    sg_ses: PathBuf,
    bays: BayMap,
    failed: FailedDisks,
    /// Disk id -> the blink running for `mxrack disk locate`.
    locates: BTreeMap<String, (Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
    events_max: u64,
    interval: Duration,
    slow_interval: Duration,
    state: PolicyState,
    slow: Vec<LimitObs>,
    last_slow: Option<Instant>,
    mem: MemSource,
    /// Disk id -> (kernel name when checked, blank).
    blank_cache: BTreeMap<String, (String, bool)>,
    /// Failed or skipped actions already reported (so they are not
    /// reported every look).
    reported: BTreeSet<String>,
    stats: snapshot::MonitorStats,
    last_obs: Observation,
    snapshot: Arc<Snapshot>,
}

impl Monitor {
    pub fn new(store: Arc<Store>, config: &mxrack_config::Health, data_dir: &Path) -> Monitor {
        let mut state = PolicyState::default();
        match store.status_open_incidents() {
            Ok(open) => state.open = open.into_iter().map(|(k, _)| k).collect(),
            Err(e) => error!(error = %e, "cannot read the open incidents"),
        }
        let (bays, why) = BayMap::load(&config.bay_map);
        if let Some(why) = why {
            error!(error = %why, "the bay map is unusable; disks are named by their kernel path");
        }
        let (failed, why) = FailedDisks::load(data_dir);
        if let Some(why) = why {
            error!(error = %why, "cannot read the disks failed for errors");
        }
        Monitor {
            store,
            root: SysRoot::new(&config.sys_root),
            data_dir: data_dir.to_path_buf(),
            policy: Policy::from_config(config),
            mdadm: config.mdadm.clone(),
            sg_ses: config.sg_ses.clone(),
            bays,
            failed,
            locates: BTreeMap::new(),
            events_max: config.events_max,
            interval: Duration::from_secs(config.interval_secs),
            slow_interval: Duration::from_secs(config.slow_interval_secs),
            state,
            slow: Vec::new(),
            last_slow: None,
            mem: MemSource::default(),
            blank_cache: BTreeMap::new(),
            reported: BTreeSet::new(),
            stats: snapshot::MonitorStats::default(),
            last_obs: Observation::default(),
            snapshot: Arc::new(Snapshot::default()),
        }
    }

    /// True when the monitor may change the machine (real root).
    pub fn acting(&self) -> bool {
        self.root.is_real()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.clone()
    }

    fn observe(&mut self) -> Observation {
        let slow_due = self
            .last_slow
            .is_none_or(|t| t.elapsed() >= self.slow_interval);
        if slow_due {
            self.slow = sources::limits::read_slow(&self.root);
            self.last_slow = Some(Instant::now());
        }
        sources::observe(
            &self.root,
            &self.data_dir,
            time::now(),
            &self.slow,
            Some(&mut self.mem),
            &self.bays,
        )
    }

    /// Disks that are blank (checked once per disk and kernel name).
    fn blank_disks(&mut self, obs: &Observation) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let present: BTreeSet<String> = obs.disks.iter().map(ScsiDisk::id).collect();
        self.blank_cache.retain(|id, _| present.contains(id));
        for d in &obs.disks {
            if !obs.memberships(&d.kernel).is_empty() || !d.holders.is_empty() {
                continue;
            }
            let id = d.id();
            let fresh = self
                .blank_cache
                .get(&id)
                .is_none_or(|(kernel, _)| *kernel != d.kernel);
            if fresh {
                let blank = scsi::is_blank(&self.root, d);
                self.blank_cache
                    .insert(id.clone(), (d.kernel.clone(), blank));
            }
            if self.blank_cache.get(&id).is_some_and(|(_, b)| *b) {
                out.insert(id);
            }
        }
        out
    }

    /// One look: observe, decide, act, record; returns the new snapshot.
    pub fn look(&mut self, woken_by_kernel: bool) -> Arc<Snapshot> {
        let started = Instant::now();
        let obs = self.observe();
        let blank = self.blank_disks(&obs);
        let decisions = policy::evaluate(&obs, &mut self.state, &self.policy, &blank);
        for d in decisions {
            self.execute(d, &obs);
        }
        self.stats.looks += 1;
        if woken_by_kernel {
            self.stats.woken_by_kernel += 1;
        }
        self.stats.last_look_micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(0);
        self.stats.cpu_seconds = thread_cpu_seconds();
        self.publish(&obs, &blank);
        self.last_obs = obs;
        self.snapshot.clone()
    }

    fn publish(&mut self, obs: &Observation, blank: &BTreeSet<String>) {
        let mut snap = snapshot::build(
            obs,
            &self.state,
            &self.policy,
            blank,
            &self.root.root().display().to_string(),
            self.acting(),
        );
        snap.intake_refusal = self.store.intake_refusal().map(|r| r.to_string());
        snap.monitor = self.stats.clone();
        self.snapshot = Arc::new(snap);
    }

    /// Records an event (and keeps the set of open incidents current).
    pub fn record(&mut self, e: NewEvent) {
        match e.severity {
            Severity::Critical => error!(component = %e.component, "{}", e.text),
            Severity::Warning => warn!(component = %e.component, "{}", e.text),
            _ => info!(component = %e.component, "{}", e.text),
        }
        match self.store.event_record(&e, self.events_max) {
            Ok(_) => {
                self.stats.events_recorded += 1;
                match &e.incident {
                    IncidentAction::Open { key, .. } => {
                        self.state.open.insert(key.clone());
                    }
                    IncidentAction::Resolve { key } => {
                        self.state.open.remove(key);
                    }
                    _ => {}
                }
            }
            Err(err) => error!(error = %err, "cannot record a health event"),
        }
    }

    fn note(
        &mut self,
        severity: Severity,
        component: &str,
        text: String,
        incident: IncidentAction,
    ) {
        self.record(NewEvent {
            time: time::now(),
            severity,
            component: component.into(),
            text,
            incident,
        });
    }

    /// Reports a failed or skipped action once (until it succeeds).
    fn report_once(
        &mut self,
        tag: String,
        severity: Severity,
        component: &str,
        text: String,
        key: String,
    ) {
        if self.reported.len() > 1000 {
            self.reported.clear();
        }
        if self.reported.insert(tag) {
            self.note(severity, component, text, IncidentAction::Update { key });
        }
    }

    fn not_acting(&self) -> String {
        format!(
            "the monitor acts only on the real sysfs (health.sys_root = \"/\"), not on {}",
            self.root.root().display()
        )
    }

    fn execute(&mut self, d: Decision, obs: &Observation) {
        match d {
            Decision::Event(e) => self.record(e),
            Decision::SetIntake(reason) => {
                self.store.set_intake_refusal(reason.as_deref());
            }
            Decision::FailMember { array, dev, disk } => {
                let component = disk_component(&disk);
                let tag = format!("fail {array} {disk}");
                if !self.acting() {
                    let why = self.not_acting();
                    self.report_once(
                        tag,
                        Severity::Warning,
                        &component,
                        format!("Would fail disk {disk} out of {array}, but {why}."),
                        disk_key(&disk),
                    );
                    return;
                }
                match actions::fail_member(&self.root, &array, &dev) {
                    Ok(()) => {
                        self.stats.actions_taken += 1;
                        self.reported.remove(&tag);
                        self.note(
                            Severity::Critical,
                            &component,
                            format!(
                                "Disk {} failed out of {array}: its error counters passed the threshold; the hot spare takes over.",
                                policy::name_of(obs, &self.state, &disk)
                            ),
                            IncidentAction::Update { key: disk_key(&disk) },
                        );
                    }
                    Err(e) => self.report_once(
                        tag,
                        Severity::Critical,
                        &component,
                        format!("Could not fail disk {disk} out of {array}: {e}."),
                        disk_key(&disk),
                    ),
                }
            }
            Decision::RemoveMember { array, dev, disk } => {
                let component = disk_component(&disk);
                let tag = format!("remove {array} {disk}");
                if !self.acting() {
                    let why = self.not_acting();
                    self.report_once(
                        tag,
                        Severity::Warning,
                        &component,
                        format!("Would remove disk {disk} from {array}, but {why}."),
                        disk_key(&disk),
                    );
                    return;
                }
                match actions::remove_member(&self.root, &array, &dev) {
                    Ok(()) => {
                        self.stats.actions_taken += 1;
                        self.reported.remove(&tag);
                        if let Some(t) = self.state.disks.get_mut(&disk) {
                            t.left_arrays.insert(array.clone());
                        }
                        let name = policy::name_of(obs, &self.state, &disk);
                        self.note(
                            Severity::Notice,
                            &component,
                            format!("Disk {name} removed from {array}; it can be pulled."),
                            IncidentAction::Update {
                                key: disk_key(&disk),
                            },
                        );
                    }
                    Err(e) => self.report_once(
                        tag,
                        Severity::Warning,
                        &component,
                        format!("Could not remove disk {disk} from {array} yet: {e}."),
                        disk_key(&disk),
                    ),
                }
            }
            Decision::RememberFailed {
                id,
                serial,
                wwn,
                reason,
            } => {
                let record = FailedDisk {
                    id: id.clone(),
                    serial,
                    wwn,
                    time: obs.time,
                    reason,
                };
                if let Err(e) = self.failed.remember(record) {
                    error!(disk = %id, error = %e, "cannot remember a disk failed for errors");
                }
            }
            Decision::AddDisk {
                array,
                kernel,
                disk,
                rebuild,
            } => {
                let known = obs
                    .disk(&disk)
                    .and_then(|d| self.failed.find(d.serial.as_deref(), d.wwn.as_deref()))
                    .cloned();
                if let Some(f) = known {
                    self.report_once(
                        format!("add {array} {disk}"),
                        Severity::Warning,
                        &disk_component(&disk),
                        format!(
                            "Blank disk {} is not added to {array}: {}. Run `mxrack disk add {disk} --force` to add it anyway.",
                            policy::name_of(obs, &self.state, &disk),
                            failed_why(&f)
                        ),
                        policy::array_key(&array),
                    );
                    return;
                }
                let name = policy::name_of(obs, &self.state, &disk);
                if let Err(e) = self.add_to(&array, &kernel, &name, rebuild, "automatically") {
                    self.report_once(
                        format!("add {array} {disk}"),
                        Severity::Warning,
                        &disk_component(&disk),
                        format!("Could not add blank disk {name} to {array}: {e}."),
                        policy::array_key(&array),
                    );
                }
            }
            Decision::RaiseSysctl { key, from, to } => {
                let component = format!("limit {key}");
                let tag = format!("raise {key} {to}");
                if !self.acting() {
                    let why = self.not_acting();
                    self.report_once(
                        tag,
                        Severity::Warning,
                        &component,
                        format!("Would raise {key} from {from} to {to}, but {why}."),
                        policy::limit_key(&key),
                    );
                    return;
                }
                match actions::write_sysctl(&self.root, &key, to) {
                    Ok(()) => {
                        self.stats.actions_taken += 1;
                        self.note(
                            Severity::Notice,
                            &component,
                            format!(
                                "Raised {key} from {from} to {to} live (bound in health.raise_bounds); add it to /etc/sysctl.conf to keep it after a reboot."
                            ),
                            IncidentAction::Update {
                                key: policy::limit_key(&key),
                            },
                        );
                    }
                    Err(e) => self.report_once(
                        tag,
                        Severity::Critical,
                        &component,
                        format!("Could not raise {key}: {e}."),
                        policy::limit_key(&key),
                    ),
                }
            }
        }
    }

    /// mdadm --add, then the event. `how`: "automatically" or "by the operator".
    fn add_to(
        &mut self,
        array: &str,
        kernel: &str,
        disk: &str,
        rebuild: bool,
        how: &str,
    ) -> Result<String, String> {
        if !self.acting() {
            return Err(self.not_acting());
        }
        actions::mdadm_add(&self.root, &self.mdadm, array, kernel)?;
        self.stats.actions_taken += 1;
        let role = if rebuild {
            "rebuild target"
        } else {
            "hot spare"
        };
        let text = format!("Disk {disk} added to {array} as its {role} ({how}).");
        self.note(
            Severity::Notice,
            &disk_component(disk),
            text.clone(),
            IncidentAction::Update {
                key: policy::array_key(array),
            },
        );
        Ok(text)
    }

    fn find_disk<'o>(obs: &'o Observation, id: &str) -> Result<&'o ScsiDisk, String> {
        obs.disks
            .iter()
            .find(|d| {
                d.id() == id
                    || d.serial.as_deref() == Some(id)
                    || d.wwn.as_deref() == Some(id)
                    || d.wwn.as_deref().and_then(|w| w.strip_prefix("naa.")) == Some(id)
            })
            .ok_or_else(|| {
                let known: Vec<String> = obs.disks.iter().map(ScsiDisk::id).collect();
                format!(
                    "no disk with serial or WWN {id:?} (disks: {})",
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                )
            })
    }

    /// `mxrack disk replace ID [--with NEW]`. A healthy member of an array
    /// that has a hot spare (or a named new disk) is hot-replaced: md copies
    /// it onto the spare while it stays in service, so the array keeps all
    /// its copies until the new one is in sync; md then marks the old one
    /// faulty, the monitor removes it, and it can be pulled. Otherwise (a
    /// failing or faulty member, or no spare) the disk is taken out of its
    /// arrays at once, never when it holds the last good copy.
    pub fn replace_disk(&mut self, id: &str, with: Option<&str>) -> Result<String, String> {
        let obs = self.observe();
        let disk = Self::find_disk(&obs, id)?.clone();
        let id = disk.id();
        let name = disk.describe();
        let memberships: Vec<(sources::MdArray, sources::MdMember)> = obs
            .memberships(&disk.kernel)
            .into_iter()
            .map(|(a, m)| (a.clone(), m.clone()))
            .collect();
        if memberships.is_empty() {
            return Ok(format!(
                "disk {name} is in no array: it can be pulled now\n"
            ));
        }
        let new_disk = match with {
            Some(w) => {
                let n = Self::find_disk(&obs, w)?.clone();
                if n.kernel == disk.kernel {
                    return Err(format!("disk {name} cannot replace itself"));
                }
                Some(n)
            }
            None => None,
        };
        let failing = self.state.disks.get(&id).is_some_and(|t| t.failing);
        let hot = !failing
            && memberships.iter().all(|(a, m)| {
                // A degraded array's spare goes to its missing member first.
                m.is_in_sync()
                    && a.is_redundant()
                    && a.degraded == 0
                    && (new_disk.is_some() || a.idle_spares().next().is_some())
            });
        if hot {
            return self.hot_replace(&obs, &disk, &memberships, new_disk.as_ref());
        }
        if let Some(n) = &new_disk {
            // Say which condition of md's replace is not met.
            let (a, m) = &memberships[0];
            let why = if failing {
                format!("failing in {}", a.name)
            } else if !m.is_in_sync() {
                format!("not in sync in {}", a.name)
            } else {
                format!("in {}, which is degraded or has no redundancy", a.name)
            };
            return Err(format!(
                "disk {name} is {why}: md's replace copies only a healthy in-sync member of a redundant array; run `mxrack disk replace {id}` without --with, then `mxrack disk add {}`",
                n.id()
            ));
        }
        for (a, m) in &memberships {
            if m.is_in_sync() && !a.can_lose_one() {
                return Err(format!(
                    "disk {name} holds the last good copy of {} ({}): not taking it out. Add a disk and let it rebuild first (mxrack disk add SERIAL).",
                    a.name, a.level
                ));
            }
        }
        if !self.acting() {
            return Err(format!("nothing changed: {}", self.not_acting()));
        }
        let mut out = String::new();
        for (a, m) in &memberships {
            if !m.is_faulty() && !m.is_idle_spare() {
                actions::fail_member(&self.root, &a.name, &m.dev)?;
                let state = format!("/sys/block/{}/md/dev-{}/state", a.name, m.dev);
                let deadline = Instant::now() + FAULTY_WAIT;
                while Instant::now() < deadline
                    && !self.root.attr(&state).is_some_and(|s| s.contains("faulty"))
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            actions::remove_member(&self.root, &a.name, &m.dev)?;
            self.stats.actions_taken += 1;
            out.push_str(&format!(
                "disk {id} is out of {} (it was {})\n",
                a.name,
                m.role()
            ));
        }
        if let Some(t) = self.state.disks.get_mut(&id) {
            t.left_arrays
                .extend(memberships.iter().map(|(a, _)| a.name.clone()));
        }
        let arrays: Vec<&str> = memberships.iter().map(|(a, _)| a.name.as_str()).collect();
        self.note(
            Severity::Notice,
            &disk_component(&id),
            format!(
                "Disk {name} taken out of {} for replacement by the operator; it can be pulled.",
                arrays.join(", ")
            ),
            IncidentAction::Open {
                key: disk_key(&id),
                title: format!("Disk {id} being replaced ({})", disk.location()),
            },
        );
        out.push_str(&format!(
            "pull disk {name} ({} right now), then insert the new disk\n",
            disk.kernel
        ));
        self.look(false);
        Ok(out)
    }

    /// md's hot replace of every membership of `disk` (all in sync, each
    /// array with a spare or `new` given).
    fn hot_replace(
        &mut self,
        obs: &Observation,
        disk: &ScsiDisk,
        memberships: &[(sources::MdArray, sources::MdMember)],
        new: Option<&ScsiDisk>,
    ) -> Result<String, String> {
        let id = disk.id();
        let name = disk.describe();
        if !self.acting() {
            return Err(format!("nothing changed: {}", self.not_acting()));
        }
        let mut out = String::new();
        for (a, m) in memberships {
            let onto = match new {
                Some(n) => {
                    let in_array = obs
                        .memberships(&n.kernel)
                        .iter()
                        .any(|(na, nm)| na.name == a.name && nm.is_idle_spare());
                    if !in_array {
                        self.check_addable(obs, n, false)?;
                        actions::mdadm_add(&self.root, &self.mdadm, &a.name, &n.kernel)?;
                        self.stats.actions_taken += 1;
                    }
                    actions::mdadm_replace(&self.root, &self.mdadm, &a.name, &m.dev, &n.kernel)?;
                    n.describe()
                }
                None => {
                    actions::want_replacement(&self.root, &a.name, &m.dev)?;
                    a.idle_spares()
                        .next()
                        .and_then(|s| obs.disk_by_kernel(&s.disk))
                        .map_or_else(|| "its hot spare".to_string(), ScsiDisk::describe)
                }
            };
            self.stats.actions_taken += 1;
            out.push_str(&format!(
                "{}: md copies disk {name} onto {onto}; {} keeps both copies until the new one is in sync\n",
                a.name, a.name
            ));
            self.note(
                Severity::Notice,
                &disk_component(&id),
                format!(
                    "Hot replace of disk {name} started by the operator: {} copies it onto disk {onto} and stays redundant; when the copy is in sync it leaves {} and can be pulled.",
                    a.name, a.name
                ),
                IncidentAction::Open {
                    key: disk_key(&id),
                    title: format!("Disk {id} being replaced ({})", disk.location()),
                },
            );
        }
        if let Some(t) = self.state.disks.get_mut(&id) {
            t.replacing = true;
        }
        out.push_str(&format!(
            "leave disk {name} in place until `mxrack disks` shows it \"ready to remove\" (the status page says so too)\n"
        ));
        self.look(false);
        Ok(out)
    }

    /// Why a disk cannot be added (in an array, in use, not running,
    /// mounted, failed for errors before unless `force`).
    fn check_addable(&self, obs: &Observation, disk: &ScsiDisk, force: bool) -> Result<(), String> {
        let id = disk.id();
        let name = disk.describe();
        if let Some((a, m)) = obs.memberships(&disk.kernel).first() {
            return Err(format!(
                "disk {name} is already in {} as {}",
                a.name,
                m.role()
            ));
        }
        if !disk.holders.is_empty() || !disk.partitions.is_empty() {
            return Err(format!(
                "disk {name} is in use (holders: {}; partitions: {}): not adding it",
                disk.holders.join(","),
                disk.partitions.join(",")
            ));
        }
        if !disk.is_running() {
            return Err(format!("disk {name} is {}", disk.state));
        }
        let mounts = self.root.table("/proc/mounts").unwrap_or_default();
        let dev = format!("/dev/{}", disk.kernel);
        if mounts
            .lines()
            .any(|l| l.split_whitespace().next() == Some(dev.as_str()))
        {
            return Err(format!("disk {name} ({dev}) is mounted: not adding it"));
        }
        if !force
            && let Some(f) = self
                .failed
                .find(disk.serial.as_deref(), disk.wwn.as_deref())
        {
            return Err(format!(
                "not adding disk {name}: {}. A disk failed for errors is likely to fail again; test it first, and run `mxrack disk add {id} --force` to add it anyway.",
                failed_why(f)
            ));
        }
        Ok(())
    }

    /// `mxrack disk add ID [--force]`: adds a disk that is in no array, in
    /// use by nothing, to the array that needs it most. A disk failed out
    /// for I/O errors before is refused unless `force`.
    pub fn add_disk(&mut self, id: &str, force: bool) -> Result<String, String> {
        let obs = self.observe();
        let disk = Self::find_disk(&obs, id)?.clone();
        let id = disk.id();
        self.check_addable(&obs, &disk, force)?;
        let (array, rebuild) = policy::array_for(&obs, &disk).ok_or_else(|| {
            "no array needs a disk (every redundant array has its members and a hot spare, or the disk is too small)".to_string()
        })?;
        let how = match self
            .failed
            .find(disk.serial.as_deref(), disk.wwn.as_deref())
        {
            Some(f) => format!("by the operator with --force; {}", failed_why(f)),
            None => "by the operator".to_string(),
        };
        let text = self.add_to(&array, &disk.kernel, &disk.describe(), rebuild, &how)?;
        if let Some(t) = self.state.disks.get_mut(&id) {
            t.add_considered = true;
        }
        self.look(false);
        Ok(format!("{text}\n"))
    }

    /// `mxrack disk locate ID [--off]`. `wait`: blink in this thread until
    /// done (the CLI when no appliance runs) rather than in the background.
    pub fn locate(&mut self, id: &str, off: bool, secs: u64, wait: bool) -> Result<String, String> {
        let obs = self.observe();
        let disk = Self::find_disk(&obs, id)?.clone();
        let id = disk.id();
        let name = disk.describe();
        if let Some(enc) = &disk.enclosure {
            if !self.root.is_writable() {
                return Err(format!("nothing changed: {}", self.not_acting()));
            }
            let how = locate::enclosure_led(&self.root, &self.sg_ses, enc, !off)?;
            return Ok(format!(
                "disk {name}: bay locate LED {} ({how})\n",
                if off { "off" } else { "on" }
            ));
        }
        let running = self.locates.remove(&id);
        if let Some((stop, handle)) = running {
            stop.store(true, Ordering::SeqCst);
            let _ = handle.join();
            if off {
                return Ok(format!("disk {name}: activity LED blink stopped\n"));
            }
        } else if off {
            return Ok(format!("disk {name}: no locate was running\n"));
        }
        self.locates.retain(|_, (_, h)| !h.is_finished());
        if self.locates.len() >= locate::LOCATES_MAX {
            return Err(format!(
                "{} locates are running already; stop one with --off",
                self.locates.len()
            ));
        }
        let dev = self.root.path(&format!("/dev/{}", disk.kernel));
        let pattern = locate::Blink::for_secs(secs);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let who = name.clone();
        let handle = std::thread::Builder::new()
            .name("mxrack-locate".into())
            .spawn(move || match locate::blink_reads(&dev, pattern, &flag) {
                Ok(s) => info!(disk = %who, bursts = s.bursts, bytes = s.bytes_read, "locate blink ended"),
                Err(e) => warn!(disk = %who, error = %e, "locate blink failed"),
            })
            .map_err(|e| format!("cannot start the blink: {e}"))?;
        let text = format!(
            "disk {name}: no enclosure LED; its activity LED blinks ({} s of reads, {} s rest) for {} s{}\n",
            pattern.on.as_secs(),
            pattern.off.as_secs(),
            pattern.total.as_secs(),
            if wait {
                ""
            } else {
                "; `mxrack disk locate ID --off` stops it"
            }
        );
        if wait {
            let _ = handle.join();
        } else {
            self.locates.insert(id, (stop, handle));
        }
        Ok(text)
    }

    fn handle(&mut self, req: Request) {
        match req {
            Request::ReplaceDisk { id, with, reply } => {
                let _ = reply.send(self.replace_disk(&id, with.as_deref()));
            }
            Request::AddDisk { id, force, reply } => {
                let _ = reply.send(self.add_disk(&id, force));
            }
            Request::Locate {
                id,
                off,
                secs,
                reply,
            } => {
                let _ = reply.send(self.locate(&id, off, secs, false));
            }
        }
    }

    /// The loop: looks on the timer and on kernel notifications, answers
    /// commands, until stopped.
    fn run_loop(&mut self, requests: &mpsc::Receiver<Request>, wake: &OwnedFd, shared: &Shared) {
        let interval = self.interval;
        let uevents = if self.root.is_real() {
            match open_uevents() {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(error = %e, "no kernel hot-plug events; disks are seen at the next timed look");
                    None
                }
            }
        } else {
            None
        };
        let mut watched: Vec<(String, File)> = Vec::new();
        // The attributes asked for (some may not exist; those are not polled).
        let mut watched_paths: Vec<String> = Vec::new();
        let mut next_look = Instant::now();
        let mut last_look = Instant::now();
        let mut by_kernel = false;
        info!(
            sys_root = %self.root.root().display(),
            acting = self.acting(),
            interval_secs = interval.as_secs(),
            "health monitor started"
        );
        while !shared.stop.load(Ordering::SeqCst) {
            if Instant::now() >= next_look {
                let snap = self.look(by_kernel);
                *shared
                    .snapshot
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = snap;
                by_kernel = false;
                last_look = Instant::now();
                next_look = last_look + interval;
                let mut paths = sources::md::notify_paths(&self.last_obs.arrays);
                paths.truncate(WATCHED_MAX);
                if paths != watched_paths {
                    watched = arm(&self.root, &paths);
                    watched_paths = paths;
                }
            }
            let timeout = next_look.saturating_duration_since(Instant::now());
            let mut fds = vec![PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
            if let Some(u) = &uevents {
                fds.push(PollFd::new(u.as_fd(), PollFlags::POLLIN));
            }
            for (_, f) in &watched {
                fds.push(PollFd::new(
                    f.as_fd(),
                    PollFlags::POLLPRI | PollFlags::POLLERR,
                ));
            }
            let t = PollTimeout::try_from(timeout.max(Duration::from_millis(1)))
                .unwrap_or(PollTimeout::MAX);
            if let Err(e) = nix::poll::poll(&mut fds, t)
                && e != nix::errno::Errno::EINTR
            {
                warn!(error = %e, "poll failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            let mut i = 0;
            if ready[i] {
                drain(wake);
            }
            i += 1;
            let mut kernel = false;
            if let Some(u) = &uevents {
                if ready[i] && drain_uevents(u) {
                    kernel = true;
                }
                i += 1;
            }
            for (n, (_, f)) in watched.iter_mut().enumerate() {
                if ready[i + n] {
                    // Reading again re-arms the notification.
                    let mut buf = [0u8; 64];
                    let _ = f.seek(SeekFrom::Start(0));
                    let _ = f.read(&mut buf);
                    kernel = true;
                }
            }
            if kernel {
                let soon =
                    (Instant::now() + Duration::from_millis(20)).max(last_look + KERNEL_LOOK_GAP);
                if soon < next_look {
                    next_look = soon;
                    by_kernel = true;
                }
            }
            while let Ok(req) = requests.try_recv() {
                self.handle(req);
                *shared
                    .snapshot
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = self.snapshot.clone();
            }
        }
        info!("health monitor stopped");
    }
}

/// "failed out for I/O errors on 2024-05-01 12:00 UTC (6 I/O errors ...)".
fn failed_why(f: &FailedDisk) -> String {
    format!(
        "it was failed out for I/O errors on {} {} ({})",
        time::date(f.time),
        time::hm_utc(f.time),
        f.reason
    )
}

/// Opens the notifying attributes to poll (those that exist).
fn arm(root: &SysRoot, paths: &[String]) -> Vec<(String, File)> {
    paths
        .iter()
        .take(WATCHED_MAX)
        .filter_map(|p| {
            let mut f = File::open(root.path(p)).ok()?;
            let mut buf = [0u8; 64];
            // The first read arms sysfs_notify.
            let _ = f.read(&mut buf);
            Some((p.clone(), f))
        })
        .collect()
}

fn drain(fd: &OwnedFd) {
    let mut buf = [0u8; 64];
    while matches!(nix::unistd::read(fd.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
}

/// The kernel's uevent multicast group (hot-plug of disks).
fn open_uevents() -> nix::Result<OwnedFd> {
    use nix::sys::socket::{
        AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, socket,
    };
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkKObjectUEvent,
    )?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1))?;
    Ok(fd)
}

/// Reads pending uevents; true when one concerns a block or SCSI device.
fn drain_uevents(fd: &OwnedFd) -> bool {
    use nix::sys::socket::{MsgFlags, recv};
    let mut buf = vec![0u8; 8192];
    let mut relevant = false;
    for _ in 0..256 {
        match recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) if n > 0 => {
                let msg = &buf[..n];
                if msg
                    .split(|&b| b == 0)
                    .any(|f| f == b"SUBSYSTEM=block" || f == b"SUBSYSTEM=scsi")
                {
                    relevant = true;
                }
            }
            _ => break,
        }
    }
    relevant
}

/// CPU time (user + system) of the calling thread, in seconds.
pub fn thread_cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    match getrusage(UsageWho::RUSAGE_THREAD) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        }
        Err(_) => 0.0,
    }
}

/// A look without the policies and without the store (no event is
/// recorded): what `mxrack disks` shows when no appliance runs.
pub fn observe_only(config: &mxrack_config::Config) -> Snapshot {
    let root = SysRoot::new(&config.health.sys_root);
    let mut slow = sources::limits::read_slow(&root);
    slow.retain(|l| l.max > 0);
    let (bays, _) = BayMap::load(&config.health.bay_map);
    let obs = sources::observe(
        &root,
        &config.appliance.data_dir,
        time::now(),
        &slow,
        Some(&mut MemSource::default()),
        &bays,
    );
    let blank: BTreeSet<String> = obs
        .disks
        .iter()
        .filter(|d| obs.memberships(&d.kernel).is_empty() && scsi::is_blank(&root, d))
        .map(ScsiDisk::id)
        .collect();
    let policy = Policy::from_config(&config.health);
    let mut state = PolicyState::default();
    // The levels of limits and space, without recording anything.
    let _ = policy::evaluate(
        &obs,
        &mut state,
        &Policy {
            auto_fail: false,
            auto_add: false,
            raise_limits: false,
            ..policy.clone()
        },
        &blank,
    );
    snapshot::build(
        &obs,
        &state,
        &policy,
        &blank,
        &root.root().display().to_string(),
        root.is_real(),
    )
}

/// `mxrack disks`: one line per disk, by serial.
pub fn render_disks(s: &Snapshot) -> String {
    let mut rows = vec![[
        "SERIAL".to_string(),
        "WWN".into(),
        "MODEL".into(),
        "BAY".into(),
        "DEV".into(),
        "STATE".into(),
        "CONDITION".into(),
        "ARRAYS".into(),
        "ERRORS".into(),
    ]];
    for d in &s.disks {
        rows.push([
            d.id.clone(),
            d.wwn.clone().unwrap_or_else(|| "-".into()),
            format!("{} {}", d.vendor, d.model).trim().to_string(),
            d.bay.clone().unwrap_or_else(|| format!("? ({})", d.path)),
            d.kernel.clone(),
            d.state.clone(),
            d.condition.clone(),
            if d.arrays.is_empty() {
                "-".into()
            } else {
                d.arrays.join(",")
            },
            format!("{} ({} in window)", d.errors, d.errors_in_window),
        ]);
    }
    let widths: Vec<usize> = (0..9)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for a in &s.arrays {
        out.push_str(&snapshot::array_line(a));
        out.push('\n');
    }
    if s.time == 0 {
        out.push_str(
            "the health monitor has not finished its first look yet: try again in a moment\n",
        );
    } else if s.disks.is_empty() {
        out.push_str(&format!(
            "no SCSI disks under {}/sys/block\n",
            s.sys_root.trim_end_matches('/')
        ));
    }
    out
}

/// (CPU seconds of this process, peak RSS in KiB), for the benchmark.
pub fn process_usage() -> (f64, i64) {
    use nix::sys::resource::{UsageWho, getrusage};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            (t(u.user_time()) + t(u.system_time()), u.max_rss())
        }
        Err(_) => (0.0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{Fixture, FixtureArray, FixtureDisk, FixtureMember};

    /// A disk failed for errors is refused by `mxrack disk add` with when
    /// and why, and how to add it anyway; `--force` passes that check.
    #[test]
    fn add_refuses_a_disk_failed_for_errors_unless_forced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data");
        let mut f = Fixture::new(&root).expect("fixture");
        f.disk(&FixtureDisk::new("sda", "SN-0", 0)).expect("disk");
        f.disk(&FixtureDisk::new("sdb", "SN-1", 1)).expect("disk");
        f.array(&FixtureArray::raid1(
            "md0",
            vec![FixtureMember::new("sda", "in_sync", Some(0))],
        ))
        .expect("array");
        let (mut failed, _) = FailedDisks::load(&data);
        failed
            .remember(FailedDisk {
                id: "SN-1".into(),
                serial: Some("SN-1".into()),
                wwn: Some("naa.5000c500a0b00001".into()),
                time: time::unix_of(2026, 5, 1, 12, 0, 0),
                reason: "7 I/O errors and timeouts within 10 min".into(),
            })
            .expect("remember");
        let store = Store::open(&data).expect("store");
        let config = mxrack_config::Health {
            sys_root: root.clone(),
            bay_map: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../board/qemu-x86_64/rootfs-overlay/etc/mxrack/bays.toml"),
            ..mxrack_config::Health::default()
        };
        let mut m = Monitor::new(store.clone(), &config, &data);
        m.look(false);
        let e = m.add_disk("SN-1", false).expect_err("refused");
        assert!(
            e.starts_with("not adding disk SN-1 (WWN naa.5000c500a0b00001) in bay 2: it was failed out for I/O errors on 2026-05-01 12:00 UTC (7 I/O errors and timeouts within 10 min)"),
            "{e}"
        );
        assert!(e.contains("mxrack disk add SN-1 --force"), "{e}");
        // By WWN too, and forced past the record (then this fixture root
        // is why nothing happens).
        let e = m
            .add_disk("naa.5000c500a0b00001", false)
            .expect_err("refused");
        assert!(e.contains("failed out for I/O errors"), "{e}");
        let e = m.add_disk("SN-1", true).expect_err("fixture root");
        assert!(e.contains("acts only on the real sysfs"), "{e}");
        // md's replace needs a redundant array: this one runs on one disk,
        // and the refusal says so (not "not in sync": SN-0 is in sync).
        let e = m.replace_disk("SN-0", Some("SN-1")).expect_err("degraded");
        assert!(
            e.contains("in md0, which is degraded or has no redundancy"),
            "{e}"
        );
        drop(m);
        store.shutdown();
    }
}
