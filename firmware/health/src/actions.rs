//! The monitor's writes to the machine: md member state (`faulty`,
//! `remove`), mdadm to add a disk (it writes the v1.2 superblock a blank
//! disk needs before md takes it), and sysctls.
//!
//! Each refuses to run unless the root is writable: the real "/" (and the
//! monitor calls these only when the configuration allows the action) or a
//! test's explicitly writable fixture. Every action is bounded in time.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::sources::limits::sysctl_file;
use crate::sysroot::SysRoot;

/// Longest an mdadm run may take before it is killed.
pub const MDADM_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `remove` is retried while md still holds a member it just failed.
pub const REMOVE_RETRY: Duration = Duration::from_secs(5);

fn member_state(array: &str, dev: &str) -> String {
    format!("/sys/block/{array}/md/dev-{dev}/state")
}

/// md stops using the member (the hot spare, if any, starts rebuilding).
pub fn fail_member(root: &SysRoot, array: &str, dev: &str) -> Result<(), String> {
    root.write_attr(&member_state(array, dev), "faulty")
        .map_err(|e| format!("cannot write faulty to {}: {e}", member_state(array, dev)))
}

/// Takes a faulty member or an idle spare out of the array, retrying for a
/// few seconds while md finishes failing it.
pub fn remove_member(root: &SysRoot, array: &str, dev: &str) -> Result<(), String> {
    let deadline = Instant::now() + REMOVE_RETRY;
    loop {
        match root.write_attr(&member_state(array, dev), "remove") {
            Ok(()) => return Ok(()),
            // EBUSY while md is still busy with the member.
            Err(e) if e.raw_os_error() == Some(16) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                return Err(format!(
                    "cannot write remove to {}: {e}",
                    member_state(array, dev)
                ));
            }
        }
    }
}

/// `mdadm --manage /dev/ARRAY --add /dev/DISK`: writes the superblock and
/// adds the disk (as the rebuild target of a degraded array, else a spare).
pub fn mdadm_add(
    root: &SysRoot,
    mdadm: &Path,
    array: &str,
    kernel: &str,
) -> Result<String, String> {
    if !root.is_writable() {
        return Err(format!(
            "{} is a read-only fixture root; mdadm not run",
            root.root().display()
        ));
    }
    let valid = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric());
    if !valid(array) || !valid(kernel) {
        return Err(format!("refusing odd device names {array:?} {kernel:?}"));
    }
    let dev = |n: &str| root.path(&format!("/dev/{n}")).display().to_string();
    run_bounded(
        Command::new(mdadm)
            .arg("--manage")
            .arg(dev(array))
            .arg("--add")
            .arg(dev(kernel)),
        MDADM_TIMEOUT,
    )
}

/// md's hot replace of a member: md copies it onto a spare (the rebuild
/// target marked `replacement`) while it stays in service, so the array
/// keeps every copy until the new one is in sync; then md marks the old
/// member faulty by itself (Documentation/admin-guide/md.rst,
/// `want_replacement`).
pub fn want_replacement(root: &SysRoot, array: &str, dev: &str) -> Result<(), String> {
    root.write_attr(&member_state(array, dev), "want_replacement")
        .map_err(|e| {
            format!(
                "cannot write want_replacement to {}: {e}",
                member_state(array, dev)
            )
        })
}

/// `mdadm /dev/ARRAY --replace /dev/OLD --with /dev/NEW`: the hot replace
/// onto a named disk (already the array's spare).
pub fn mdadm_replace(
    root: &SysRoot,
    mdadm: &Path,
    array: &str,
    old: &str,
    new: &str,
) -> Result<String, String> {
    if !root.is_writable() {
        return Err(format!(
            "{} is a read-only fixture root; mdadm not run",
            root.root().display()
        ));
    }
    let valid = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric());
    if !valid(array) || !valid(old) || !valid(new) {
        return Err(format!(
            "refusing odd device names {array:?} {old:?} {new:?}"
        ));
    }
    let dev = |n: &str| root.path(&format!("/dev/{n}")).display().to_string();
    run_bounded(
        Command::new(mdadm)
            .arg(dev(array))
            .arg("--replace")
            .arg(dev(old))
            .arg("--with")
            .arg(dev(new)),
        MDADM_TIMEOUT,
    )
}

/// Runs a command with no input, killing it at the deadline; its output
/// (stdout and stderr) on success, or why it failed.
pub(crate) fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<String, String> {
    let out_file = tempfile_in_tmp()?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(out_file.try_clone().map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{:?} did not finish within {} s; killed",
                    cmd.get_program(),
                    timeout.as_secs()
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let output = read_back(out_file);
    if status.success() {
        Ok(output)
    } else {
        Err(format!(
            "{:?} failed ({status}): {}",
            cmd.get_program(),
            output.trim()
        ))
    }
}

fn tempfile_in_tmp() -> Result<std::fs::File, String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "mxrack-action-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    // Unlinked at once: the open handle is all that is needed.
    let _ = std::fs::remove_file(&path);
    Ok(f)
}

fn read_back(mut f: std::fs::File) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut s = String::new();
    if f.seek(SeekFrom::Start(0)).is_ok() {
        let _ = f.take(64 * 1024).read_to_string(&mut s);
    }
    s
}

/// Writes a sysctl (`fs.file-max` -> /proc/sys/fs/file-max).
pub fn write_sysctl(root: &SysRoot, key: &str, value: u64) -> Result<(), String> {
    root.write_attr(&sysctl_file(key), &value.to_string())
        .map_err(|e| format!("cannot set {key} = {value}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{Fixture, FixtureArray, FixtureDisk, FixtureMember};

    #[test]
    fn actions_write_only_to_writable_roots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = Fixture::new(dir.path()).expect("fixture");
        f.disk(&FixtureDisk::new("sda", "SN-0", 0)).expect("disk");
        f.array(&FixtureArray::raid1(
            "md0",
            vec![FixtureMember::new("sda", "in_sync", Some(0))],
        ))
        .expect("array");
        let ro = SysRoot::new(dir.path());
        assert!(fail_member(&ro, "md0", "sda").is_err());
        assert!(write_sysctl(&ro, "fs.file-max", 5).is_err());
        assert!(mdadm_add(&ro, Path::new("/bin/true"), "md0", "sdb").is_err());
        let state = || ro.attr("/sys/block/md0/md/dev-sda/state");
        assert_eq!(state().as_deref(), Some("in_sync"), "nothing written");

        let rw = SysRoot::writable_fixture(dir.path());
        fail_member(&rw, "md0", "sda").expect("faulty");
        assert_eq!(state().as_deref(), Some("faulty"));
        remove_member(&rw, "md0", "sda").expect("remove");
        assert_eq!(state().as_deref(), Some("remove"));
        write_sysctl(&rw, "fs.file-max", 200_000).expect("sysctl");
        assert_eq!(ro.attr("/proc/sys/fs/file-max").as_deref(), Some("200000"));
    }

    #[test]
    fn mdadm_gets_the_array_and_disk_and_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rw = SysRoot::writable_fixture(dir.path());
        let script = dir.path().join("mdadm");
        let log = dir.path().join("args");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$@\" > {}\necho added\n", log.display()),
        )
        .expect("script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let out = mdadm_add(&rw, &script, "md0", "sdd").expect("run");
        assert_eq!(out.trim(), "added");
        let args = std::fs::read_to_string(&log).expect("args");
        assert_eq!(
            args.trim(),
            format!(
                "--manage {}/dev/md0 --add {}/dev/sdd",
                dir.path().display(),
                dir.path().display()
            )
        );
        assert!(mdadm_add(&rw, &script, "md0", "../sda").is_err());
        let e = run_bounded(
            Command::new("sh").args(["-c", "echo no >&2; exit 3"]),
            MDADM_TIMEOUT,
        )
        .expect_err("fails");
        assert!(e.contains("no"), "{e}");
        let e = run_bounded(Command::new("sleep").arg("5"), Duration::from_millis(200))
            .expect_err("killed");
        assert!(e.contains("killed"), "{e}");
    }
}
