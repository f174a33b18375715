//! The health commands: `mxrack status`, `mxrack status note`, `mxrack
//! disks`, `mxrack disk replace|add|locate`, `mxrack doctor` and `mxrack health
//! bench`. While `mxrack run` is up they go over the admin socket to the
//! running monitor; otherwise they work on the data folder and the
//! configured sys_root directly.

use crate::admin::{self, AdminRequest};
use mxrack_config::Config;
use mxrack_health::{HealthHandle, Monitor, monitor, status, time};
use mxrack_store::Store;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The running appliance's monitor, set once by the supervisor.
struct Running {
    handle: Arc<HealthHandle>,
    hostname: String,
}

static RUNNING: OnceLock<Running> = OnceLock::new();

/// Called by the supervisor once the monitor is set up.
pub fn set_running(handle: Arc<HealthHandle>, hostname: &str) {
    let _ = RUNNING.set(Running {
        handle,
        hostname: hostname.to_string(),
    });
}

/// Answers a health request inside the running appliance (admin socket).
pub fn execute(store: &Store, request: &AdminRequest) -> Result<Vec<u8>, String> {
    let running = RUNNING.get();
    let text = match request {
        AdminRequest::Status => {
            let (hostname, snapshot) = match running {
                Some(r) => (r.hostname.as_str(), Some(r.handle.snapshot())),
                None => ("mxrack", None),
            };
            let page = status::build(hostname, store, snapshot, status::PAGE_ENTRIES_MAX)
                .map_err(|e| e.to_string())?;
            status::render_text(&page)
        }
        AdminRequest::StatusNote { title, text, to } => {
            let e = store
                .status_note(time::now(), title, text.as_deref(), *to)
                .map_err(|e| e.to_string())?;
            format!(
                "status entry {} \"{}\": {} update{}\n",
                e.id,
                e.title,
                e.updates.len(),
                if e.updates.len() == 1 { "" } else { "s" }
            )
        }
        AdminRequest::Disks => match running {
            Some(r) => monitor::render_disks(&r.handle.snapshot()),
            None => {
                return Err("the health monitor is not running (health.enabled = false?)".into());
            }
        },
        AdminRequest::DiskReplace { serial, with } => match running {
            Some(r) => r.handle.replace_disk(serial, with.as_deref())?,
            None => {
                return Err("the health monitor is not running (health.enabled = false?)".into());
            }
        },
        AdminRequest::DiskAdd { serial, force } => match running {
            Some(r) => r.handle.add_disk(serial, *force)?,
            None => {
                return Err("the health monitor is not running (health.enabled = false?)".into());
            }
        },
        AdminRequest::DiskLocate { serial, off, secs } => match running {
            Some(r) => r.handle.locate(
                serial,
                *off,
                secs.unwrap_or(mxrack_health::locate::LOCATE_SECS_DEFAULT),
            )?,
            None => {
                return Err("the health monitor is not running (health.enabled = false?)".into());
            }
        },
        _ => return Err("not a health request".into()),
    };
    Ok(text.into_bytes())
}

/// Runs a health request: through the running appliance when there is one,
/// else directly on the data folder and the configured sys_root.
pub fn submit(config: &Config, request: &AdminRequest) -> Result<Vec<u8>, String> {
    let data_dir = &config.appliance.data_dir;
    if std::os::unix::net::UnixStream::connect(admin::socket_path(data_dir)).is_ok() {
        return admin::submit(data_dir, request);
    }
    let open = || {
        Store::open(data_dir).map_err(|e| {
            format!(
                "cannot open the store in {} ({e}); is another mxrack using it?",
                data_dir.display()
            )
        })
    };
    match request {
        AdminRequest::Status => {
            let store = open()?;
            let page = status::build(
                &config.appliance.hostname,
                &store,
                None,
                status::PAGE_ENTRIES_MAX,
            )
            .map_err(|e| e.to_string())?;
            store.shutdown();
            Ok(format!(
                "{}\n(mxrack is not running: no live figures)\n",
                status::render_text(&page).trim_end()
            )
            .into_bytes())
        }
        AdminRequest::StatusNote { .. } => {
            let store = open()?;
            let r = execute(&store, request);
            store.shutdown();
            r
        }
        AdminRequest::Disks => {
            Ok(monitor::render_disks(&monitor::observe_only(config)).into_bytes())
        }
        AdminRequest::DiskReplace { .. }
        | AdminRequest::DiskAdd { .. }
        | AdminRequest::DiskLocate { .. } => {
            let store = open()?;
            let mut m = Monitor::new(store.clone(), &config.health, data_dir);
            m.look(false);
            let r = match request {
                AdminRequest::DiskReplace { serial, with } => {
                    m.replace_disk(serial, with.as_deref())
                }
                AdminRequest::DiskAdd { serial, force } => m.add_disk(serial, *force),
                AdminRequest::DiskLocate { serial, off, secs } => m.locate(
                    serial,
                    *off,
                    secs.unwrap_or(mxrack_health::locate::LOCATE_SECS_DEFAULT),
                    true,
                ),
                _ => Err("not a disk request".into()),
            };
            drop(m);
            store.shutdown();
            r.map(String::into_bytes)
        }
        _ => Err("not a health request".into()),
    }
}

/// `mxrack doctor`: prints each check; false when one failed.
pub fn doctor(config: &Config) -> Result<bool, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let report = rt.block_on(mxrack_health::doctor::run(config));
    print!("{}", report.render());
    Ok(report.passed())
}

/// `mxrack health bench`: the monitor's own cost over a fixture tree.
pub fn bench(
    config: &Config,
    sys_root: Option<&std::path::Path>,
    disks: usize,
    arrays: usize,
    seconds: u64,
    interval_secs: u64,
) -> Result<String, String> {
    let work = std::env::temp_dir().join(format!("mxrack-health-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let root = match sys_root {
        Some(r) => r.to_path_buf(),
        None => {
            let r = work.join("root");
            mxrack_health::fixture::Fixture::generate(&r, disks, arrays)
                .map_err(|e| format!("cannot generate the fixture tree: {e}"))?;
            r
        }
    };
    let mut config = config.clone();
    config.appliance.data_dir = work.join("data");
    config.health.sys_root = root.clone();
    config.health.interval_secs = interval_secs;
    config.health.slow_interval_secs = config.health.slow_interval_secs.max(interval_secs);
    std::fs::create_dir_all(&config.appliance.data_dir).map_err(|e| e.to_string())?;
    let store = Store::open(&config.appliance.data_dir).map_err(|e| e.to_string())?;
    let (handle, task) = mxrack_health::start(&config, store.clone())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let before = monitor::process_usage();
    let started = Instant::now();
    let join = rt.spawn(task.run());
    std::thread::sleep(Duration::from_secs(seconds));
    handle.stop();
    let _ = rt.block_on(join);
    let wall = started.elapsed().as_secs_f64();
    let after = monitor::process_usage();
    let snap = handle.snapshot();
    store.shutdown();
    let _ = std::fs::remove_dir_all(&work);
    let cpu = after.0 - before.0;
    let looks = snap.monitor.looks.max(1);
    let per_look = cpu / looks as f64;
    Ok(format!(
        "health monitor benchmark: {} disks, {} arrays under {}\n\
         wall_seconds: {wall:.1}\n\
         looks: {}\n\
         cpu_seconds: {cpu:.3}\n\
         cpu_seconds_per_minute: {:.4}\n\
         cpu_ms_per_look: {:.3}\n\
         cpu_seconds_per_minute_at_default_interval: {:.4}\n\
         last_look_ms: {:.3}\n\
         peak_rss_kib: {}\n",
        snap.disks.len(),
        snap.arrays.len(),
        root.display(),
        snap.monitor.looks,
        cpu * 60.0 / wall,
        per_look * 1000.0,
        per_look * 60.0 / mxrack_config::Health::default().interval_secs as f64,
        snap.monitor.last_look_micros as f64 / 1000.0,
        after.1,
    ))
}
