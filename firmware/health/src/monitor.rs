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
        reply: mpsc::Sender<Result<String, String>>,
    },
    AddDisk {
        id: String,
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

    /// `mxrack disk replace ID`: takes the disk out of its arrays so it can
    /// be pulled. Blocks until done.
    pub fn replace_disk(&self, id: &str) -> Result<String, String> {
        let id = id.to_string();
        self.command(|reply| Request::ReplaceDisk { id, reply })
    }

    /// `mxrack disk add ID`: makes the disk a rebuild target or spare.
    pub fn add_disk(&self, id: &str) -> Result<String, String> {
        let id = id.to_string();
        self.command(|reply| Request::AddDisk { id, reply })
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
        Monitor {
            store,
            root: SysRoot::new(&config.sys_root),
            data_dir: data_dir.to_path_buf(),
            policy: Policy::from_config(config),
            mdadm: config.mdadm.clone(),
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
                                "Disk {disk} failed out of {array}: its error counters passed the threshold; the hot spare takes over."
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
                        let slot = obs
                            .disk(&disk)
                            .map(|d| format!(" from slot {}", d.slot))
                            .unwrap_or_default();
                        self.note(
                            Severity::Notice,
                            &component,
                            format!("Disk {disk} removed from {array}; it can be pulled{slot}."),
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
            Decision::AddDisk {
                array,
                kernel,
                disk,
                rebuild,
            } => {
                if let Err(e) = self.add_to(&array, &kernel, &disk, rebuild, "automatically") {
                    self.report_once(
                        format!("add {array} {disk}"),
                        Severity::Warning,
                        &disk_component(&disk),
                        format!("Could not add blank disk {disk} to {array}: {e}."),
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

    /// `mxrack disk replace ID`: takes a healthy or failing disk out of
    /// every array so it can be pulled; refuses when it holds the last good
    /// copy of an array.
    pub fn replace_disk(&mut self, id: &str) -> Result<String, String> {
        let obs = self.observe();
        let disk = Self::find_disk(&obs, id)?.clone();
        let id = disk.id();
        let memberships: Vec<(sources::MdArray, sources::MdMember)> = obs
            .memberships(&disk.kernel)
            .into_iter()
            .map(|(a, m)| (a.clone(), m.clone()))
            .collect();
        if memberships.is_empty() {
            return Ok(format!(
                "disk {id} is in no array: it can be pulled from slot {} now\n",
                disk.slot
            ));
        }
        for (a, m) in &memberships {
            if m.is_in_sync() && !a.can_lose_one() {
                return Err(format!(
                    "disk {id} holds the last good copy of {} ({}): not taking it out. Add a disk and let it rebuild first (mxrack disk add SERIAL).",
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
                "Disk {id} taken out of {} for replacement by the operator; it can be pulled from slot {}.",
                arrays.join(", "),
                disk.slot
            ),
            IncidentAction::Open {
                key: disk_key(&id),
                title: format!("Disk {id} being replaced (slot {})", disk.slot),
            },
        );
        out.push_str(&format!(
            "pull disk {id} from slot {} ({} right now), then insert the new disk\n",
            disk.slot, disk.kernel
        ));
        self.look(false);
        Ok(out)
    }

    /// `mxrack disk add ID`: adds a disk that is in no array, in use by
    /// nothing, to the array that needs it most.
    pub fn add_disk(&mut self, id: &str) -> Result<String, String> {
        let obs = self.observe();
        let disk = Self::find_disk(&obs, id)?.clone();
        let id = disk.id();
        if let Some((a, m)) = obs.memberships(&disk.kernel).first() {
            return Err(format!(
                "disk {id} is already in {} as {}",
                a.name,
                m.role()
            ));
        }
        if !disk.holders.is_empty() || !disk.partitions.is_empty() {
            return Err(format!(
                "disk {id} is in use (holders: {}; partitions: {}): not adding it",
                disk.holders.join(","),
                disk.partitions.join(",")
            ));
        }
        if !disk.is_running() {
            return Err(format!("disk {id} is {}", disk.state));
        }
        let mounts = self.root.table("/proc/mounts").unwrap_or_default();
        let dev = format!("/dev/{}", disk.kernel);
        if mounts
            .lines()
            .any(|l| l.split_whitespace().next() == Some(dev.as_str()))
        {
            return Err(format!("disk {id} ({dev}) is mounted: not adding it"));
        }
        let (array, rebuild) = policy::array_for(&obs, &disk).ok_or_else(|| {
            "no array needs a disk (every redundant array has its members and a hot spare, or the disk is too small)".to_string()
        })?;
        let text = self.add_to(&array, &disk.kernel, &id, rebuild, "by the operator")?;
        if let Some(t) = self.state.disks.get_mut(&id) {
            t.add_considered = true;
        }
        self.look(false);
        Ok(format!("{text}\n"))
    }

    fn handle(&mut self, req: Request) {
        match req {
            Request::ReplaceDisk { id, reply } => {
                let _ = reply.send(self.replace_disk(&id));
            }
            Request::AddDisk { id, reply } => {
                let _ = reply.send(self.add_disk(&id));
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
    let obs = sources::observe(
        &root,
        &config.appliance.data_dir,
        time::now(),
        &slow,
        Some(&mut MemSource::default()),
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
        "SLOT".into(),
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
            d.slot.clone(),
            d.kernel.clone(),
            d.state.clone(),
            d.condition.clone(),
            if d.arrays.is_empty() {
                "-".into()
            } else {
                d.arrays.join(",")
            },
            format!("{} ({} in window)", d.ioerr + d.iotmo, d.errors_in_window),
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
        let sync = a
            .sync_permille
            .map(|p| format!(", {} {}.{}%", a.sync_action, p / 10, p % 10))
            .unwrap_or_default();
        out.push_str(&format!(
            "{} {} {}: {}/{} in sync, {} spare{}{sync}\n",
            a.name,
            a.level,
            a.array_state,
            a.in_sync,
            a.raid_disks,
            a.spares,
            if a.spares == 1 { "" } else { "s" }
        ));
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
