//! `mxrack update`: A/B updates of the firmware image (issue 14). The
//! mechanism is in the mxrack-update crate; this file is its command line
//! and the boot-time trial check.

use crate::cli::CliError;
use mxrack_config::Config;
use mxrack_update::bundle::{self, Verified};
use mxrack_update::entries::{Assessment, State};
use mxrack_update::{UpdateError, esp, system};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const BOARD_CONF: &str = "/etc/mxrack/board.conf";
/// The image's own configuration: `[update]` is read from it alone.
pub const IMAGE_CONFIG: &str = "/etc/mxrack/mxrack.toml";
const SYS_CLASS_BLOCK: &str = "/sys/class/block";
/// The supervisor writes this when mxrack first reports ready.
const READY_FILE: &str = "/run/mxrack/ready";
/// The boot script writes the storage state here ("standby" on a replica
/// standby, which by design never starts the services).
const STORAGE_FILE: &str = "/run/mxrack/storage";

impl From<UpdateError> for CliError {
    fn from(e: UpdateError) -> Self {
        CliError::Admin(e.to_string())
    }
}

fn open_bundle(path: &Path) -> Result<Box<dyn Read>, CliError> {
    if path == Path::new("-") {
        return Ok(Box::new(std::io::stdin().lock()));
    }
    let f = std::fs::File::open(path)
        .map_err(|e| CliError::Admin(format!("cannot open {}: {e}", path.display())))?;
    Ok(Box::new(std::io::BufReader::with_capacity(256 * 1024, f)))
}

fn describe(v: &Verified) -> String {
    let m = &v.manifest;
    format!(
        "mxrack {} for board {}{} ({} bytes), signed by {} (key {})",
        m.version,
        m.board,
        m.revision
            .as_deref()
            .map(|r| format!(", revision {r}"))
            .unwrap_or_default(),
        m.payload_size,
        v.signer,
        m.key_id
    )
}

/// `mxrack update verify FILE`: the signature and the image's hash,
/// nothing written.
pub fn verify(config: &Config, path: &Path, keys: Option<&Path>) -> Result<String, CliError> {
    let keyring = bundle::load_keyring(keys.unwrap_or(&config.update.keys_dir))?;
    let mut r = open_bundle(path)?;
    let v = bundle::read_header(&mut r, &keyring)?;
    bundle::copy_payload(&mut r, &mut std::io::sink(), &v.manifest)?;
    Ok(format!("{}: valid\n  {}\n", path.display(), describe(&v)))
}

/// `mxrack update FILE`: verify and install as the next image to boot.
pub fn install(
    config: &Config,
    path: &Path,
    tries: Option<u32>,
    reboot: bool,
) -> Result<String, CliError> {
    let tries = tries.unwrap_or(config.update.tries);
    if !(1..=5).contains(&tries) {
        return Err(CliError::Admin("--tries: between 1 and 5".into()));
    }
    let keyring = bundle::load_keyring(&config.update.keys_dir)?;
    let board = system::board(Path::new(BOARD_CONF))?;
    let mut r = open_bundle(path)?;
    // The signature first: an untrusted bundle touches nothing.
    let v = bundle::read_header(&mut r, &keyring)?;
    let selected = system::loader_entry_selected(Path::new(system::EFIVARS));
    let dev = system::find_esp(Path::new(SYS_CLASS_BLOCK))?;
    let _lock = system::lock(Path::new(system::LOCK_FILE))?;
    let mounted = system::Mounted::new(&dev, Path::new(system::MOUNT_POINT), true)?;
    esp::clean(&mounted.dir);
    let done = esp::install(&mounted.dir, &mut r, &v, &board, selected.as_deref(), tries)?;
    drop(mounted);
    let mut out = format!("installed {}\n", describe(&v));
    out.push_str(&format!(
        "  boot entry {} on {}\n",
        done.entry.file,
        dev.display()
    ));
    for f in &done.removed {
        out.push_str(&format!("  removed {f}\n"));
    }
    let back = done
        .fallback
        .as_ref()
        .map(|f| f.version.clone())
        .unwrap_or_else(|| "?".into());
    out.push_str(&format!(
        "  it starts at the next restart; it has {} s and {tries} boot(s) to reach ready, \
         else the appliance returns to {back}\n",
        config.update.trial_secs
    ));
    if reboot {
        out.push_str("  restarting now\n");
        print!("{out}");
        run_reboot()?;
        return Ok(String::new());
    }
    out.push_str("  restart with: reboot\n");
    Ok(out)
}

fn run_reboot() -> Result<(), CliError> {
    let st = std::process::Command::new("reboot")
        .status()
        .map_err(|e| CliError::Admin(format!("cannot run reboot: {e}")))?;
    if !st.success() {
        return Err(CliError::Admin(format!("reboot failed ({st})")));
    }
    Ok(())
}

fn assess() -> Result<(Assessment, PathBuf), CliError> {
    let selected = system::loader_entry_selected(Path::new(system::EFIVARS));
    let dev = system::find_esp(Path::new(SYS_CLASS_BLOCK))?;
    let _lock = system::lock(Path::new(system::LOCK_FILE))?;
    let mounted = system::Mounted::new(&dev, Path::new(system::MOUNT_POINT), false)?;
    let entries = esp::list(&mounted.dir)?;
    Ok((Assessment::new(entries, selected.as_deref()), dev))
}

fn state_words(s: State) -> String {
    match s {
        State::Good => "good".into(),
        State::Trial { left, .. } => format!("on trial ({left} boot(s) left)"),
        State::Failed { done } => format!("failed: did not reach ready in {done} boot(s)"),
    }
}

/// `mxrack update status`.
pub fn status(config: &Config, json: bool) -> Result<String, CliError> {
    let (a, dev) = assess()?;
    let keys = bundle::load_keyring(&config.update.keys_dir)
        .map(|k| k.iter().map(|k| k.id()).collect::<Vec<_>>())
        .unwrap_or_default();
    if json {
        let v = serde_json::json!({
            "boot_partition": dev.display().to_string(),
            "running": a.booted,
            "on_trial": a.on_trial(),
            "fallback": a.fallback(),
            "entries": a.entries,
            "rolled_back": a.failed_newer,
            "trial_secs": config.update.trial_secs,
            "tries": config.update.tries,
            "trusted_keys": keys,
        });
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&v).expect("json")
        ));
    }
    let mut out = String::new();
    match &a.booted {
        Some(b) => out.push_str(&format!(
            "running: mxrack {} ({})\n",
            b.version,
            state_words(b.state)
        )),
        None => out.push_str("running: not started by the boot disk's boot manager\n"),
    }
    if a.on_trial() {
        out.push_str(&format!(
            "  it must reach ready within {} s of boot, else the appliance restarts into {}\n",
            config.update.trial_secs,
            a.fallback()
                .map(|f| f.version.as_str())
                .unwrap_or("nothing older")
        ));
    }
    for f in &a.failed_newer {
        out.push_str(&format!(
            "rolled back: the update to {} did not reach ready; the appliance returned to the previous image\n",
            f.version
        ));
    }
    out.push_str(&format!("boot partition {}:\n", dev.display()));
    for e in &a.entries {
        let running = a.booted.as_ref().is_some_and(|b| b.version == e.version);
        out.push_str(&format!(
            "  {:<40} {}{}\n",
            e.file,
            state_words(e.state),
            if running { " (running)" } else { "" }
        ));
    }
    out.push_str(&format!(
        "trusted keys in {}: {}\n",
        config.update.keys_dir.display(),
        if keys.is_empty() {
            "none".to_string()
        } else {
            keys.join(", ")
        }
    ));
    Ok(out)
}

fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|u| u.parse().ok()))
        .unwrap_or(0.0)
}

fn say(line: &str) {
    println!("mxrack-update: {line}");
}

fn ready() -> bool {
    Path::new(READY_FILE).exists()
}

/// A replica standby never starts mxrack by design: its trial waits,
/// with its clock stopped, until the node is promoted.
fn standby() -> bool {
    std::fs::read_to_string(STORAGE_FILE).is_ok_and(|s| s.trim() == "standby")
}

/// Tries `f` every 2 s until it works or `until` (uptime) passes; the
/// last error is returned then. A status command holding the lock, a boot
/// disk that appears late: the trial must not give up on a first failure.
fn retrying<T>(until: f64, mut f: impl FnMut() -> Result<T, CliError>) -> Result<T, CliError> {
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if uptime() + 2.0 >= until => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_secs(2)),
        }
    }
}

/// `mxrack update trial`, started at boot: when the running image is on
/// trial, blesses it once it reaches ready, or restarts the appliance when
/// it has not within `[update] trial_secs` of boot (systemd-boot then
/// counts the boot as failed). It never restarts without a good image to
/// return to.
pub fn trial(config: &Config) -> Result<String, CliError> {
    let Some(selected) = system::loader_entry_selected(Path::new(system::EFIVARS)) else {
        return Ok("mxrack-update: not started by systemd-boot: no trial to watch\n".into());
    };
    let mut deadline = config.update.trial_secs as f64;
    let (a, dev) = retrying(deadline, assess)?;
    for f in &a.failed_newer {
        say(&format!(
            "the update to {} did not reach ready in its trial boots: running the previous image {}",
            f.version,
            a.booted.as_ref().map(|b| b.version.as_str()).unwrap_or("?")
        ));
    }
    let Some(booted) = a.booted.clone() else {
        return Ok(format!(
            "mxrack-update: the running entry {selected:?} is not on {}\n",
            dev.display()
        ));
    };
    if !a.on_trial() {
        return Ok(format!(
            "mxrack-update: running mxrack {} (confirmed)\n",
            booted.version
        ));
    }
    let fallback = a.fallback().map(|f| f.version.clone());
    say(&format!(
        "mxrack {} is on trial: it must reach ready within {:.0} s of boot, else the appliance restarts into {}",
        booted.version,
        deadline,
        fallback.as_deref().unwrap_or("nothing older")
    ));
    let mut said_standby = false;
    loop {
        if ready() {
            let blessed = retrying(uptime() + 60.0, || {
                let _lock = system::lock(Path::new(system::LOCK_FILE))?;
                let mounted = system::Mounted::new(&dev, Path::new(system::MOUNT_POINT), true)?;
                Ok(esp::bless(&mounted.dir, &selected)?)
            })?;
            return Ok(format!(
                "mxrack-update: mxrack {} reached ready after {:.1} s: confirmed{}\n",
                booted.version,
                uptime(),
                blessed.map(|n| format!(" ({n})")).unwrap_or_default()
            ));
        }
        if standby() {
            if !said_standby {
                say("replica standby: the trial waits for this node's promotion");
                said_standby = true;
            }
            deadline = uptime() + config.update.trial_secs as f64;
        } else if uptime() >= deadline {
            let Some(back) = &fallback else {
                say(&format!(
                    "mxrack {} did not reach ready within {deadline:.0} s, and the boot partition has no good image to return to: staying up",
                    booted.version
                ));
                return Ok(String::new());
            };
            say(&format!(
                "mxrack {} did not reach ready within {deadline:.0} s: restarting; the boot manager counts this boot as failed (then {back})",
                booted.version
            ));
            run_reboot()?;
            return Ok(String::new());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `mxrack update keygen --out PREFIX`: PREFIX.key (private, 0600) and
/// PREFIX.pub (for the image's keyring).
pub fn keygen(out: &Path) -> Result<String, CliError> {
    let key = out.with_extension("key");
    let public = out.with_extension("pub");
    for p in [&key, &public] {
        if p.exists() {
            return Err(CliError::Admin(format!(
                "{} exists: not overwritten",
                p.display()
            )));
        }
    }
    let (private_text, public_text) = bundle::keygen()?;
    write_new(&key, &private_text)?;
    write_new(&public, &public_text)?;
    let id = bundle::public_key(&public_text, "new")?.id();
    Ok(format!(
        "signing key {} (keep it secret), public key {} (id {id}): put it in the image's keyring\n",
        key.display(),
        public.display()
    ))
}

fn write_new(path: &Path, text: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| CliError::Admin(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| CliError::Admin(format!("cannot write {}: {e}", path.display())))
}

fn read_key(path: &Path) -> Result<bundle::SigningKey, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Admin(format!("cannot read {}: {e}", path.display())))?;
    Ok(bundle::signing_key(&text, &path.display().to_string())?)
}

/// `mxrack update pubkey KEY`: the public key file text of a signing key.
pub fn pubkey(key: &Path) -> Result<String, CliError> {
    Ok(bundle::public_of(&read_key(key)?))
}

/// `mxrack update bundle --key KEY --out FILE UKI`: the image's version and
/// board come from its `.osrel`, so the bundle cannot disagree with what
/// systemd-boot will sort by.
pub fn make_bundle(
    key: &Path,
    uki: &Path,
    out: &Path,
    revision: Option<&str>,
) -> Result<String, CliError> {
    let key = read_key(key)?;
    let meta =
        std::fs::metadata(uki).map_err(|e| CliError::Admin(format!("{}: {e}", uki.display())))?;
    if meta.len() > bundle::PAYLOAD_MAX {
        return Err(CliError::Admin(format!(
            "{} is larger than {} bytes",
            uki.display(),
            bundle::PAYLOAD_MAX
        )));
    }
    let payload =
        std::fs::read(uki).map_err(|e| CliError::Admin(format!("{}: {e}", uki.display())))?;
    let osrel = bundle::osrel_of(&payload)?;
    let field = |k: &str| {
        bundle::osrel_value(&osrel, k)
            .ok_or_else(|| CliError::Admin(format!("{}: its .osrel has no {k}", uki.display())))
    };
    let version = field("IMAGE_VERSION")?;
    let board = field("MXRACK_BOARD")?;
    let tmp = out.with_extension("tmp");
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(&tmp)
            .map_err(|e| CliError::Admin(format!("{}: {e}", tmp.display())))?,
    );
    let m = bundle::write_bundle(&mut f, &payload, &board, &version, revision, &key)?;
    drop(f);
    std::fs::rename(&tmp, out).map_err(|e| CliError::Admin(format!("{}: {e}", out.display())))?;
    Ok(format!(
        "{}: mxrack {} for board {}, {} bytes, key {}\n",
        out.display(),
        m.version,
        m.board,
        m.payload_size,
        m.key_id
    ))
}
