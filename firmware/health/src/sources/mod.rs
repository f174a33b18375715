//! What the monitor reads, each through [`SysRoot`] so that tests and the
//! benchmark can point it at a fixture tree. No decision is made here.

pub mod drbd;
pub mod fs;
pub mod limits;
pub mod md;
pub mod scsi;

use crate::bays::BayMap;
use crate::sysroot::SysRoot;
use serde::Serialize;
use std::path::Path;

pub use fs::{FsObs, MemObs, MemSource};
pub use limits::{LimitObs, NetCounters};
pub use md::{MdArray, MdMember};
pub use scsi::ScsiDisk;

/// Everything one look at the machine gave.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Observation {
    /// Unix seconds.
    pub time: i64,
    pub arrays: Vec<MdArray>,
    pub disks: Vec<ScsiDisk>,
    /// Fast limits of this look and slow ones of the last slow scan.
    pub limits: Vec<LimitObs>,
    pub net: NetCounters,
    /// "data" (the store's folder) and "root".
    pub filesystems: Vec<FsObs>,
    pub memory: Option<MemObs>,
    /// DRBD resources of a replica pair (empty: DRBD not loaded or down).
    pub drbd: Vec<drbd::DrbdResource>,
    /// The last line of the pair's promotion history (on the replicated
    /// volume), when DRBD is up.
    pub replica_last_promotion: Option<String>,
}

impl Observation {
    /// The disk with this identity (serial or WWN).
    pub fn disk(&self, id: &str) -> Option<&ScsiDisk> {
        self.disks.iter().find(|d| d.id() == id)
    }

    /// The disk whose kernel name is `kernel` right now.
    pub fn disk_by_kernel(&self, kernel: &str) -> Option<&ScsiDisk> {
        self.disks.iter().find(|d| d.kernel == kernel)
    }

    /// (array, member) pairs of the disk `kernel`.
    pub fn memberships(&self, kernel: &str) -> Vec<(&MdArray, &MdMember)> {
        self.arrays
            .iter()
            .flat_map(|a| a.members.iter().map(move |m| (a, m)))
            .filter(|(_, m)| m.disk == kernel)
            .collect()
    }
}

/// Reads md, SCSI, the fast limits and the file systems. `slow` limits are
/// passed in from the caller's last slow scan (see `limits::read_slow`).
pub fn observe(
    root: &SysRoot,
    data_dir: &Path,
    time: i64,
    slow: &[LimitObs],
    mem: Option<&mut MemSource>,
    bays: &BayMap,
) -> Observation {
    let (mut limits, net) = limits::read_fast(root);
    limits.extend(slow.iter().cloned());
    let mut filesystems = Vec::new();
    for (name, path) in [("data", data_dir), ("root", root.root())] {
        match fs::statvfs(name, path) {
            Ok(f) => filesystems.push(f),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "statvfs failed"),
        }
    }
    let drbd = drbd::read(root);
    Observation {
        time,
        arrays: md::read_arrays(root),
        disks: scsi::read_disks(root, bays),
        limits,
        net,
        filesystems,
        memory: mem.map(|m| m.read()),
        replica_last_promotion: drbd
            .iter()
            .any(|r| !r.role.is_empty())
            .then(|| drbd::last_promotion(data_dir))
            .flatten(),
        drbd,
    }
}
