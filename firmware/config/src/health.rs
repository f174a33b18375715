//! `[health]`: the watch over disks, RAID arrays, kernel limits and space
//! (mxrack-health), and what it may do about them on its own.
//!
//! Every acting switch (`auto_fail`, `auto_add`, `raise_limits`) is off
//! unless the configuration turns it on, and the monitor acts only when
//! `sys_root` is "/" as well: a development machine or a test pointed at a
//! fixture tree never has its disks or sysctls touched.

use crate::validate::ConfigError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The sysctls the monitor may raise live (`raise_bounds` keys). Each is a
/// single number whose larger value only allows more; paired or triple
/// values (`ip_local_port_range`, `tcp_mem`) are reported, never changed.
pub const RAISABLE_SYSCTLS: [&str; 8] = [
    "fs.file-max",
    "fs.inotify.max_user_watches",
    "fs.inotify.max_user_instances",
    "kernel.pid_max",
    "kernel.threads-max",
    "net.core.somaxconn",
    "net.ipv4.tcp_max_orphans",
    "net.netfilter.nf_conntrack_max",
];

/// Largest value `kernel.pid_max` can take on 64-bit Linux (PID_MAX_LIMIT).
pub const PID_MAX_LIMIT: u64 = 4_194_304;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Health {
    /// Run the monitor at all.
    pub enabled: bool,
    /// Where sysfs and procfs are read: "/" on the appliance; a fixture tree
    /// in tests (ROOT/proc/mdstat, ROOT/sys/block/...). The monitor acts
    /// (fails disks out, runs mdadm, writes sysctls) only when this is "/".
    pub sys_root: PathBuf,
    /// Seconds between two full observations. md attributes that the kernel
    /// announces (array_state, degraded, sync_action, member state) and disk
    /// hot-plug wake the monitor at once in between.
    pub interval_secs: u64,
    /// Seconds between the costlier scans (inotify watches, ephemeral ports).
    pub slow_interval_secs: u64,
    /// I/O errors plus timeouts (the disk's ioerr_cnt + iotmo_cnt, md's
    /// corrected read errors) that fail a disk when they accumulate within
    /// `disk_error_window_secs`.
    pub disk_error_threshold: u64,
    pub disk_error_window_secs: u64,
    /// Fail a disk whose errors pass the threshold out of its array (sysfs
    /// `faulty`, then `remove`) so the hot spare takes over, when the array
    /// stays redundant enough to lose it.
    pub auto_fail: bool,
    /// Make a blank disk that appears the rebuild target of a degraded array
    /// or the spare of an array without one (through mdadm).
    pub auto_add: bool,
    /// mdadm, which writes the md superblock of a disk being added.
    pub mdadm: PathBuf,
    /// The board's bay map (TOML: SCSI address, by-path name or enclosure
    /// slot -> the bay label printed on the chassis; `board/*/` in the
    /// repository). Read from the file system as it is, not under
    /// `sys_root`; a missing file leaves disks named by their kernel path.
    pub bay_map: PathBuf,
    /// sg_ses (sg3-utils), which lights an SES enclosure's locate LED for
    /// `mxrack disk locate`; when it is absent the enclosure's sysfs
    /// `locate` attribute (the kernel's ses driver) is written instead.
    pub sg_ses: PathBuf,
    /// A rebuild's progress is recorded every this many percent.
    pub rebuild_progress_step_percent: u64,
    /// Kernel limits: warn at this share of the limit, alert at the second.
    pub limit_warn_percent: u64,
    pub limit_alert_percent: u64,
    /// Raise a limit live when it reaches the alert level, up to the bound
    /// given for it in `raise_bounds` (sysctl name -> highest value).
    pub raise_limits: bool,
    pub raise_bounds: BTreeMap<String, u64>,
    /// Space and inodes of the data file system: warn above this share used.
    pub space_warn_percent: u64,
    /// Refuse new mail (SMTP 452, IMAP APPEND NO) when free space falls
    /// below the larger of these two ...
    pub space_refuse_free_percent: u64,
    pub space_refuse_free_bytes: u64,
    /// ... and take it again once free space is back above the larger of
    /// these (hysteresis, so the answer does not flap).
    pub space_resume_free_percent: u64,
    pub space_resume_free_bytes: u64,
    /// Free inodes below this share refuse new mail too.
    pub inodes_refuse_free_percent: u64,
    /// Run the self-check (`mxrack doctor`) once the services are up.
    pub self_check_at_start: bool,
    /// Events kept in the store; older ones are trimmed.
    pub events_max: u64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            enabled: true,
            sys_root: PathBuf::from("/"),
            interval_secs: 10,
            slow_interval_secs: 60,
            disk_error_threshold: 10,
            disk_error_window_secs: 600,
            auto_fail: false,
            auto_add: false,
            mdadm: PathBuf::from("/sbin/mdadm"),
            bay_map: PathBuf::from("/etc/mxrack/bays.toml"),
            sg_ses: PathBuf::from("/usr/bin/sg_ses"),
            rebuild_progress_step_percent: 10,
            limit_warn_percent: 80,
            limit_alert_percent: 90,
            raise_limits: false,
            raise_bounds: BTreeMap::new(),
            space_warn_percent: 85,
            space_refuse_free_percent: 3,
            // The byte floors match smtp.min_free_bytes, so a small data
            // disk (a test rig's 256 MiB array) is not "full" from the start.
            space_refuse_free_bytes: 64 * 1024 * 1024,
            space_resume_free_percent: 5,
            space_resume_free_bytes: 128 * 1024 * 1024,
            inodes_refuse_free_percent: 2,
            self_check_at_start: true,
            events_max: 10_000,
        }
    }
}

impl Health {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, why: String| ConfigError::Invalid { key, why };
        if self.sys_root.as_os_str().is_empty() || !self.sys_root.is_absolute() {
            return Err(invalid(
                "health.sys_root",
                "must be an absolute path (\"/\" on the appliance)".into(),
            ));
        }
        if !(1..=3600).contains(&self.interval_secs) {
            return Err(invalid(
                "health.interval_secs",
                "must be between 1 and 3600".into(),
            ));
        }
        if !(self.interval_secs..=86_400).contains(&self.slow_interval_secs) {
            return Err(invalid(
                "health.slow_interval_secs",
                "must be between health.interval_secs and 86400".into(),
            ));
        }
        if !(1..=1_000_000).contains(&self.disk_error_threshold) {
            return Err(invalid(
                "health.disk_error_threshold",
                "must be between 1 and 1000000".into(),
            ));
        }
        if !(10..=7 * 86_400).contains(&self.disk_error_window_secs) {
            return Err(invalid(
                "health.disk_error_window_secs",
                "must be between 10 and 604800".into(),
            ));
        }
        if !self.mdadm.is_absolute() {
            return Err(invalid("health.mdadm", "must be an absolute path".into()));
        }
        if !(1..=50).contains(&self.rebuild_progress_step_percent) {
            return Err(invalid(
                "health.rebuild_progress_step_percent",
                "must be between 1 and 50".into(),
            ));
        }
        if !(1..=99).contains(&self.limit_warn_percent) {
            return Err(invalid(
                "health.limit_warn_percent",
                "must be between 1 and 99".into(),
            ));
        }
        if !(self.limit_warn_percent + 1..=100).contains(&self.limit_alert_percent) {
            return Err(invalid(
                "health.limit_alert_percent",
                "must be above health.limit_warn_percent and at most 100".into(),
            ));
        }
        for (key, bound) in &self.raise_bounds {
            if !RAISABLE_SYSCTLS.contains(&key.as_str()) {
                return Err(invalid(
                    "health.raise_bounds",
                    format!(
                        "{key:?} is not a sysctl the monitor raises (one of {})",
                        RAISABLE_SYSCTLS.join(", ")
                    ),
                ));
            }
            if *bound == 0 || (key == "kernel.pid_max" && *bound > PID_MAX_LIMIT) {
                return Err(invalid(
                    "health.raise_bounds",
                    format!("{key} = {bound} is out of range"),
                ));
            }
        }
        if !(1..=100).contains(&self.space_warn_percent) {
            return Err(invalid(
                "health.space_warn_percent",
                "must be between 1 and 100".into(),
            ));
        }
        if self.space_refuse_free_percent > 100 {
            return Err(invalid(
                "health.space_refuse_free_percent",
                "must be at most 100".into(),
            ));
        }
        if !(self.space_refuse_free_percent..=100).contains(&self.space_resume_free_percent) {
            return Err(invalid(
                "health.space_resume_free_percent",
                "must be between health.space_refuse_free_percent and 100".into(),
            ));
        }
        if self.space_resume_free_bytes < self.space_refuse_free_bytes {
            return Err(invalid(
                "health.space_resume_free_bytes",
                "must be at least health.space_refuse_free_bytes".into(),
            ));
        }
        if self.inodes_refuse_free_percent > 50 {
            return Err(invalid(
                "health.inodes_refuse_free_percent",
                "must be at most 50".into(),
            ));
        }
        if !(100..=1_000_000).contains(&self.events_max) {
            return Err(invalid(
                "health.events_max",
                "must be between 100 and 1000000".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    fn with_health(extra: &str) -> String {
        format!(
            "[appliance]\nhostname = \"mx1.example.net\"\nprimary_domain = \"example.net\"\ndata_dir = \"/d\"\n\n[smtp]\nmx = [\"0.0.0.0:25\"]\n\n[health]\n{extra}\n"
        )
    }

    #[test]
    fn health_defaults_do_not_act_and_errors_name_the_key() {
        let c = Config::from_toml(&with_health("")).expect("valid");
        assert!(!c.health.auto_fail && !c.health.auto_add && !c.health.raise_limits);
        assert_eq!(c.health.sys_root, std::path::PathBuf::from("/"));
        assert_eq!(
            (c.health.limit_warn_percent, c.health.limit_alert_percent),
            (80, 90)
        );
        let c = Config::from_toml(&with_health(
            "auto_fail = true\nraise_limits = true\n[health.raise_bounds]\n\"fs.file-max\" = 4000000\n",
        ))
        .expect("valid");
        assert_eq!(c.health.raise_bounds.get("fs.file-max"), Some(&4_000_000));
        for (line, key) in [
            ("sys_root = \"relative\"", "health.sys_root"),
            ("interval_secs = 0", "health.interval_secs"),
            ("limit_alert_percent = 70", "health.limit_alert_percent"),
            (
                "space_resume_free_percent = 1",
                "health.space_resume_free_percent",
            ),
            (
                "space_resume_free_bytes = 1",
                "health.space_resume_free_bytes",
            ),
            (
                "[health.raise_bounds]\n\"vm.swappiness\" = 10",
                "health.raise_bounds",
            ),
            (
                "[health.raise_bounds]\n\"kernel.pid_max\" = 99999999",
                "health.raise_bounds",
            ),
        ] {
            let e = Config::from_toml(&with_health(line))
                .expect_err("refused")
                .to_string();
            assert!(e.starts_with(key), "{line}: {e}");
        }
    }
}
