//! `SysRoot`: the one interface through which the monitor reads sysfs and
//! procfs. On the appliance the root is "/"; tests and the benchmark point it
//! at a fixture tree laid out the same way (ROOT/proc/mdstat,
//! ROOT/sys/block/md0/md/array_state, ...).
//!
//! Reads are bounded (a sysfs attribute is at most a page; procfs tables are
//! capped) so a strange file cannot make the monitor allocate without limit.
//! Writes exist only for `actions` and refuse any root but "/" unless a test
//! asks for a fixture explicitly (`SysRoot::writable_fixture`).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest sysfs attribute read (the kernel's own limit is one page).
pub const ATTR_BYTES_MAX: u64 = 4096;
/// Largest procfs table read (/proc/mdstat, /proc/net/netstat, /proc/net/tcp).
pub const TABLE_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Most directory entries listed at once (disks, arrays, md members).
pub const DIR_ENTRIES_MAX: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysRoot {
    root: PathBuf,
    /// Writes allowed: the real root, or a fixture a test made writable.
    writable: bool,
}

impl SysRoot {
    /// A root to read from. Writes are allowed only when `root` is "/".
    pub fn new(root: impl Into<PathBuf>) -> SysRoot {
        let root = root.into();
        let writable = root == Path::new("/");
        SysRoot { root, writable }
    }

    /// A fixture root that `actions` may write to (tests of the actions
    /// themselves, on a temporary tree).
    pub fn writable_fixture(root: impl Into<PathBuf>) -> SysRoot {
        SysRoot {
            root: root.into(),
            writable: true,
        }
    }

    /// True on the appliance's real sysfs and procfs.
    pub fn is_real(&self) -> bool {
        self.root == Path::new("/")
    }

    /// True when `write_attr` and the actions may change things here.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of `abs` (an absolute path such as "/proc/mdstat") under the root.
    pub fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// A sysfs attribute, trimmed; `None` when it cannot be read.
    pub fn attr(&self, abs: &str) -> Option<String> {
        read_bounded(&self.path(abs), ATTR_BYTES_MAX)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
    }

    /// A sysfs attribute's raw bytes (binary VPD pages).
    pub fn attr_bytes(&self, abs: &str) -> Option<Vec<u8>> {
        read_bounded(&self.path(abs), ATTR_BYTES_MAX).ok()
    }

    /// An attribute parsed as a decimal number.
    pub fn attr_u64(&self, abs: &str) -> Option<u64> {
        self.attr(abs).and_then(|s| s.parse().ok())
    }

    /// A procfs table (larger than an attribute).
    pub fn table(&self, abs: &str) -> Option<String> {
        read_bounded(&self.path(abs), TABLE_BYTES_MAX)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// Names in a directory, sorted; empty when it cannot be read.
    pub fn list(&self, abs: &str) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.path(abs)) else {
            return Vec::new();
        };
        let mut names: Vec<String> = dir
            .filter_map(|e| e.ok())
            .take(DIR_ENTRIES_MAX)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    pub fn exists(&self, abs: &str) -> bool {
        self.path(abs).exists()
    }

    /// The target of a symbolic link, as written in the link.
    pub fn link(&self, abs: &str) -> Option<String> {
        std::fs::read_link(self.path(abs))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    /// Writes an attribute (sysfs `faulty`, a sysctl). Refused unless the
    /// root is writable (the real "/" or a test's writable fixture).
    pub fn write_attr(&self, abs: &str, value: &str) -> std::io::Result<()> {
        if !self.writable {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{} is a read-only fixture root; not writing {abs}",
                    self.root.display()
                ),
            ));
        }
        // sysfs wants the whole value in one write(2).
        std::fs::write(self.path(abs), value.as_bytes())
    }
}

fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)?.take(max).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_roots_are_read_only_and_paths_nest() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("sys/block/md0/md")).expect("mkdir");
        std::fs::write(dir.path().join("sys/block/md0/md/degraded"), "1\n").expect("write");
        let root = SysRoot::new(dir.path());
        assert!(!root.is_real());
        assert_eq!(root.attr_u64("/sys/block/md0/md/degraded"), Some(1));
        assert_eq!(root.list("/sys/block"), ["md0"]);
        assert!(root.attr("/sys/block/nothing").is_none());
        let e = root
            .write_attr("/sys/block/md0/md/degraded", "0")
            .expect_err("read-only");
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
        assert_eq!(
            root.attr("/sys/block/md0/md/degraded").as_deref(),
            Some("1")
        );
        let w = SysRoot::writable_fixture(dir.path());
        w.write_attr("/sys/block/md0/md/degraded", "0")
            .expect("write");
        assert_eq!(w.attr("/sys/block/md0/md/degraded").as_deref(), Some("0"));
        assert!(SysRoot::new("/").is_real());
    }
}
