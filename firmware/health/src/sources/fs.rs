//! File systems (statvfs: space and inodes of the data folder and the root)
//! and memory, swap and load (sysinfo).

use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FsObs {
    /// "data" or "root".
    pub name: String,
    pub path: String,
    pub size_bytes: u64,
    /// Free for an unprivileged writer (f_bavail): what the store can use.
    pub free_bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

impl FsObs {
    /// Share used, in tenths of a percent.
    pub fn used_permille(&self) -> u64 {
        if self.size_bytes == 0 {
            return 0;
        }
        self.size_bytes
            .saturating_sub(self.free_bytes)
            .saturating_mul(1000)
            / self.size_bytes
    }

    /// Free inodes as a share of all, in tenths of a percent (1000 when the
    /// file system has no inode limit).
    pub fn inodes_free_permille(&self) -> u64 {
        if self.inodes == 0 {
            return 1000;
        }
        self.inodes_free.saturating_mul(1000) / self.inodes
    }
}

/// statvfs of `path`.
pub fn statvfs(name: &str, path: &Path) -> std::io::Result<FsObs> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    #[allow(clippy::useless_conversion)] // the widths differ between targets
    let frag = u64::from(st.fragment_size());
    #[allow(clippy::useless_conversion)]
    let (blocks, avail, files, files_avail) = (
        u64::from(st.blocks()),
        u64::from(st.blocks_available()),
        u64::from(st.files()),
        u64::from(st.files_available()),
    );
    Ok(FsObs {
        name: name.into(),
        path: path.display().to_string(),
        size_bytes: blocks.saturating_mul(frag),
        free_bytes: avail.saturating_mul(frag),
        inodes: files,
        inodes_free: files_avail,
    })
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct MemObs {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
}

/// Memory, swap and load of the machine (always the real one: sysinfo reads
/// /proc itself, so a fixture root does not change these figures).
pub struct MemSource {
    sys: sysinfo::System,
}

impl Default for MemSource {
    fn default() -> Self {
        MemSource {
            sys: sysinfo::System::new(),
        }
    }
}

impl MemSource {
    pub fn read(&mut self) -> MemObs {
        self.sys.refresh_memory();
        let load = sysinfo::System::load_average();
        MemObs {
            total_bytes: self.sys.total_memory(),
            available_bytes: self.sys.available_memory(),
            swap_total_bytes: self.sys.total_swap(),
            swap_free_bytes: self.sys.free_swap(),
            load1: load.one,
            load5: load.five,
            load15: load.fifteen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statvfs_of_a_real_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = statvfs("data", dir.path()).expect("statvfs");
        assert!(fs.size_bytes > 0 && fs.free_bytes <= fs.size_bytes);
        assert!(fs.used_permille() <= 1000);
        let full = FsObs {
            size_bytes: 1000,
            free_bytes: 10,
            inodes: 100,
            inodes_free: 1,
            ..FsObs::default()
        };
        assert_eq!(full.used_permille(), 990);
        assert_eq!(full.inodes_free_permille(), 10);
        let mem = MemSource::default().read();
        assert!(mem.total_bytes > 0);
    }
}
