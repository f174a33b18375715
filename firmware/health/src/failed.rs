//! Disks failed out for I/O errors, remembered across restarts in the
//! data folder (`DATA/health/failed-disks.json`, on the RAID, written
//! durably), so a technician who puts such a disk back is told before it
//! becomes a member again (`mxrack disk add` refuses it unless `--force`).
//!
//! A disk is known by its serial and its WWN: either matching is enough (a
//! disk whose serial reads differently through another controller keeps
//! its WWN).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Most disks remembered; the oldest record is dropped past it.
pub const FAILED_DISKS_MAX: usize = 256;
/// Longest file read back.
pub const FAILED_FILE_BYTES_MAX: u64 = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedDisk {
    /// The id the appliance used (serial, else WWN).
    pub id: String,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    /// Unix seconds of the failure.
    pub time: i64,
    pub reason: String,
}

impl FailedDisk {
    pub fn matches(&self, serial: Option<&str>, wwn: Option<&str>) -> bool {
        (serial.is_some() && self.serial.as_deref() == serial)
            || (wwn.is_some() && self.wwn.as_deref() == wwn)
    }
}

/// The remembered disks and where they are kept.
#[derive(Debug, Clone, Default)]
pub struct FailedDisks {
    path: PathBuf,
    pub disks: Vec<FailedDisk>,
}

impl FailedDisks {
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join("health").join("failed-disks.json")
    }

    /// Reads the list (empty when there is none; an unreadable one is
    /// reported and read as empty, so the watch keeps running).
    pub fn load(data_dir: &Path) -> (FailedDisks, Option<String>) {
        use std::io::Read;
        let path = Self::path_in(data_dir);
        let mut out = FailedDisks {
            path: path.clone(),
            disks: Vec::new(),
        };
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (out, None),
            Err(e) => return (out, Some(format!("{}: {e}", path.display()))),
        };
        let mut text = String::new();
        if let Err(e) = f.take(FAILED_FILE_BYTES_MAX).read_to_string(&mut text) {
            return (out, Some(set_aside(&path, &e.to_string())));
        }
        match serde_json::from_str::<Vec<FailedDisk>>(&text) {
            Ok(mut d) => {
                // The newest records are the last ones: keep those.
                let over = d.len().saturating_sub(FAILED_DISKS_MAX);
                d.drain(..over);
                out.disks = d;
                (out, None)
            }
            Err(e) => (out, Some(set_aside(&path, &e.to_string()))),
        }
    }

    /// The record of a disk, by serial or WWN.
    pub fn find(&self, serial: Option<&str>, wwn: Option<&str>) -> Option<&FailedDisk> {
        self.disks.iter().rev().find(|d| d.matches(serial, wwn))
    }

    /// Adds (or refreshes) a record and writes the file durably.
    pub fn remember(&mut self, disk: FailedDisk) -> std::io::Result<()> {
        self.disks
            .retain(|d| !d.matches(disk.serial.as_deref(), disk.wwn.as_deref()) && d.id != disk.id);
        self.disks.push(disk);
        if self.disks.len() > FAILED_DISKS_MAX {
            let extra = self.disks.len() - FAILED_DISKS_MAX;
            self.disks.drain(..extra);
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let json = serde_json::to_vec_pretty(&self.disks).map_err(std::io::Error::other)?;
        mxrack_net::write_durably(&self.path, &json, 0o600)
    }
}

/// An unreadable list is renamed aside (`failed-disks.json.bad-UNIX`), never
/// written over: the next record starts a new list and the old history is
/// kept for the operator. Returns the message to report.
fn set_aside(path: &Path, why: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = path.with_extension(format!("json.bad-{secs}"));
    match std::fs::rename(path, &aside) {
        Ok(()) => format!(
            "{}: {why}; kept as {} and a new list started",
            path.display(),
            aside.display()
        ),
        Err(e) => format!("{}: {why}; cannot set it aside: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_across_loads_by_serial_or_wwn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut f, err) = FailedDisks::load(dir.path());
        assert!(err.is_none() && f.disks.is_empty());
        f.remember(FailedDisk {
            id: "SN-1".into(),
            serial: Some("SN-1".into()),
            wwn: Some("naa.5000c500a0b00001".into()),
            time: 1_700_000_000,
            reason: "6 I/O errors and timeouts within 10 min".into(),
        })
        .expect("write");
        let (f, err) = FailedDisks::load(dir.path());
        assert!(err.is_none());
        assert_eq!(
            f.find(Some("SN-1"), None).map(|d| d.time),
            Some(1_700_000_000)
        );
        assert!(
            f.find(None, Some("naa.5000c500a0b00001")).is_some(),
            "by WWN"
        );
        assert!(f.find(Some("SN-2"), Some("naa.x")).is_none());
        assert!(f.find(None, None).is_none());

        std::fs::write(FailedDisks::path_in(dir.path()), "{not json").expect("garble");
        let (f, err) = FailedDisks::load(dir.path());
        assert!(
            f.disks.is_empty() && err.is_some(),
            "a bad file reads as empty, reported"
        );
        // ... and is kept aside, not written over by the next record.
        assert!(!FailedDisks::path_in(dir.path()).exists());
        let aside: Vec<_> = std::fs::read_dir(dir.path().join("health"))
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("failed-disks.json.bad-")
            })
            .collect();
        assert_eq!(aside.len(), 1, "{err:?}");
        assert_eq!(
            std::fs::read_to_string(aside[0].path()).expect("read"),
            "{not json"
        );
    }

    #[test]
    fn a_long_file_keeps_its_newest_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disks: Vec<FailedDisk> = (0..FAILED_DISKS_MAX + 5)
            .map(|i| FailedDisk {
                id: format!("SN-{i}"),
                serial: Some(format!("SN-{i}")),
                wwn: None,
                time: i as i64,
                reason: "test".into(),
            })
            .collect();
        std::fs::create_dir_all(dir.path().join("health")).expect("dir");
        std::fs::write(
            FailedDisks::path_in(dir.path()),
            serde_json::to_string(&disks).expect("json"),
        )
        .expect("write");
        let (f, err) = FailedDisks::load(dir.path());
        assert!(err.is_none());
        assert_eq!(f.disks.len(), FAILED_DISKS_MAX);
        assert!(f.find(Some("SN-0"), None).is_none(), "oldest dropped");
        assert!(
            f.find(Some(&format!("SN-{}", FAILED_DISKS_MAX + 4)), None)
                .is_some(),
            "newest kept"
        );
    }

    #[test]
    fn bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut f, _) = FailedDisks::load(dir.path());
        for i in 0..FAILED_DISKS_MAX + 3 {
            f.remember(FailedDisk {
                id: format!("SN-{i}"),
                serial: Some(format!("SN-{i}")),
                wwn: None,
                time: i as i64,
                reason: "test".into(),
            })
            .expect("write");
        }
        let (f, _) = FailedDisks::load(dir.path());
        assert_eq!(f.disks.len(), FAILED_DISKS_MAX);
        assert!(f.find(Some("SN-0"), None).is_none(), "oldest dropped");
    }
}
