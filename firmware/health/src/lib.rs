//! mxrack-health: the appliance watches its own disks, RAID arrays, kernel
//! limits and space, acts where acting is safe, and tells the operator and
//! the technician what to do (issue 6).
//!
//! - `sysroot`: the one interface to sysfs and procfs (a fixture tree in tests).
//! - `bays`: the board's bay map (SCSI address / by-path / enclosure slot ->
//!   the bay label printed on the chassis).
//! - `failed`: disks failed for I/O errors, remembered in the data folder.
//! - `locate`: `mxrack disk locate` (SES locate LED, or a read rhythm on the
//!   activity LED).
//! - `sources`: what is read (md, SCSI disks, kernel limits, file systems).
//! - `policy`: pure decisions from an observation and the previous state.
//! - `actions`: the writes (sysfs `faulty`/`remove`, mdadm, sysctls), only on
//!   the real root and only when the configuration allows.
//! - `monitor`: the loop (timer + poll on md's notifying attributes and on
//!   kernel hot-plug events), the technician's commands, the snapshot.
//! - `status`: the status page model and its terminal form.
//! - `doctor`: the self-check (every configured service answers from
//!   outside, certificate, data folder writable, clock).

pub mod actions;
pub mod bays;
pub mod cert;
pub mod doctor;
pub mod failed;
pub mod fixture;
pub mod locate;
pub mod monitor;
pub mod policy;
pub mod snapshot;
pub mod sources;
pub mod status;
pub mod sysroot;
pub mod time;

pub use monitor::{HealthHandle, Monitor, start};
pub use snapshot::Snapshot;
pub use sysroot::SysRoot;
