//! The running system's side: the boot disk's EFI system partition (found
//! by its GPT partition name, mounted only while it is read or written),
//! systemd-boot's EFI variables, and the one lock of update operations.

use crate::UpdateError;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The GPT partition name of the boot disk's EFI system partition
/// (board/*/genimage.cfg).
pub const ESP_PARTNAME: &str = "mxrack-esp";
/// systemd-boot's vendor GUID for its variables (the Boot Loader Interface).
pub const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// Where the partition is mounted while an operation runs.
pub const MOUNT_POINT: &str = "/run/mxrack/esp";
pub const LOCK_FILE: &str = "/run/mxrack/update.lock";

/// The device of the EFI system partition: the block device whose uevent
/// says `PARTNAME=mxrack-esp`. Exactly one must exist.
pub fn find_esp(sys_block: &Path) -> Result<PathBuf, UpdateError> {
    let rd = std::fs::read_dir(sys_block)
        .map_err(UpdateError::io(format!("reading {}", sys_block.display())))?;
    let mut found = Vec::new();
    for e in rd.filter_map(Result::ok).take(4096) {
        let Ok(text) = std::fs::read_to_string(e.path().join("uevent")) else {
            continue;
        };
        if text
            .lines()
            .any(|l| l == format!("PARTNAME={ESP_PARTNAME}"))
        {
            let dev = text
                .lines()
                .find_map(|l| l.strip_prefix("DEVNAME="))
                .unwrap_or_default();
            if !dev.is_empty() {
                found.push(PathBuf::from("/dev").join(dev));
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(UpdateError::System(format!(
            "no boot partition named {ESP_PARTNAME:?}: this appliance was not started from its \
             boot disk (or the disk predates A/B updates: reflash it with disk.img)"
        ))),
        _ => Err(UpdateError::System(format!(
            "{} partitions are named {ESP_PARTNAME:?} ({}): remove the extra boot disk",
            found.len(),
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// A string EFI variable: 4 bytes of attributes, then UTF-16LE up to NUL.
pub fn decode_efi_string(raw: &[u8]) -> Option<String> {
    let body = raw.get(4..)?;
    let units: Vec<u16> = body
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16(&units).ok()
}

/// systemd-boot's LoaderEntrySelected: the entry it started, or `None`
/// when the system was not started by systemd-boot (QEMU's -kernel, an
/// older boot disk) or efivarfs is not mounted.
pub fn loader_entry_selected(efivars: &Path) -> Option<String> {
    let p = efivars.join(format!("LoaderEntrySelected-{LOADER_GUID}"));
    let raw = std::fs::read(p).ok()?;
    decode_efi_string(&raw[..raw.len().min(4096)])
}

/// The board this image was built for (`BOARD=` in /etc/mxrack/board.conf).
pub fn board(board_conf: &Path) -> Result<String, UpdateError> {
    let text = std::fs::read_to_string(board_conf)
        .map_err(UpdateError::io(format!("reading {}", board_conf.display())))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("BOARD="))
        .map(|b| b.trim().trim_matches('"').to_string())
        .filter(|b| !b.is_empty())
        .ok_or_else(|| UpdateError::System(format!("no BOARD= in {}", board_conf.display())))
}

/// Holds the update lock (one install, bless or status at a time).
pub struct Lock {
    _file: File,
}

pub fn lock(path: &Path) -> Result<Lock, UpdateError> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let file =
        File::create(path).map_err(UpdateError::io(format!("creating {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(Lock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(UpdateError::System(
            "another update operation is running".into(),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(UpdateError::Io {
            what: format!("locking {}", path.display()),
            err: e,
        }),
    }
}

/// The partition mounted at a folder; unmounted when dropped.
pub struct Mounted {
    pub dir: PathBuf,
}

impl Mounted {
    /// Mounts `dev` (vfat) at `dir`, read-only unless `write`.
    pub fn new(dev: &Path, dir: &Path, write: bool) -> Result<Mounted, UpdateError> {
        std::fs::create_dir_all(dir)
            .map_err(UpdateError::io(format!("creating {}", dir.display())))?;
        // A mount left by a killed operation (the lock is held by us now).
        let _ = Command::new("umount").arg(dir).output();
        let opts = if write {
            "rw,noatime,nodev,nosuid,noexec"
        } else {
            "ro,nodev,nosuid,noexec"
        };
        let out = Command::new("mount")
            .args(["-t", "vfat", "-o", opts])
            .arg(dev)
            .arg(dir)
            .output()
            .map_err(UpdateError::io("running mount"))?;
        if !out.status.success() {
            return Err(UpdateError::System(format!(
                "mount {} on {}: {}",
                dev.display(),
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(Mounted {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).output();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efi_strings_decode() {
        let mut raw = vec![6, 0, 0, 0];
        for u in "mxrack-1.0+1-1.efi".encode_utf16() {
            raw.extend_from_slice(&u.to_le_bytes());
        }
        raw.extend_from_slice(&[0, 0]);
        assert_eq!(
            decode_efi_string(&raw).as_deref(),
            Some("mxrack-1.0+1-1.efi")
        );
        assert_eq!(decode_efi_string(&[1, 2]), None);
    }

    #[test]
    fn the_esp_is_found_by_its_partition_name() {
        let d = tempfile::tempdir().unwrap();
        let add = |name: &str, uevent: &str| {
            std::fs::create_dir_all(d.path().join(name)).unwrap();
            std::fs::write(d.path().join(name).join("uevent"), uevent).unwrap();
        };
        add("vda", "MAJOR=254\nDEVNAME=vda\nDEVTYPE=disk\n");
        add("sda", "DEVNAME=sda\nDEVTYPE=disk\n");
        let e = find_esp(d.path()).unwrap_err();
        assert!(e.to_string().contains("no boot partition"), "{e}");
        add(
            "vda1",
            "DEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=mxrack-esp\n",
        );
        assert_eq!(find_esp(d.path()).unwrap(), PathBuf::from("/dev/vda1"));
        add("sdb1", "DEVNAME=sdb1\nPARTNAME=mxrack-esp\n");
        assert!(
            find_esp(d.path())
                .unwrap_err()
                .to_string()
                .contains("2 partitions")
        );
    }

    #[test]
    fn the_board_is_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("board.conf");
        std::fs::write(&p, "# facts\nBOARD=qemu-x86_64\nMODULES=\"a b\"\n").unwrap();
        assert_eq!(board(&p).unwrap(), "qemu-x86_64");
    }
}
