//! SCSI disks: /sys/block/sdX and its device/ folder. A disk is known by its
//! serial number (VPD page 0x80) or WWN (`wwid` "naa.*"), never by its
//! kernel name, which the next swap gives to another disk (invariant 5).
//!
//! Formats (drivers/scsi/scsi_sysfs.c): `state` is running, offline,
//! blocked, quiesce, transport-offline, created, cancel or deleted;
//! `ioerr_cnt`, `iotmo_cnt`, `iodone_cnt` are hexadecimal ("0x1b0");
//! `vpd_pg80` is the raw page: 4 header bytes (byte 1 = 0x80, bytes 2-3 the
//! length), then the serial, space padded.

use crate::bays::{BayMap, DiskPlace};
use crate::sysroot::SysRoot;
use serde::Serialize;

/// Most disks looked at.
pub const DISKS_MAX: usize = 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScsiDisk {
    /// Kernel name (sda): only for the moment, never as an identity.
    pub kernel: String,
    pub serial: Option<String>,
    /// "naa.5000c500a0b0c000" when the disk has a NAA WWN.
    pub wwn: Option<String>,
    pub vendor: String,
    pub model: String,
    pub rev: String,
    /// SCSI device state: running, offline, blocked, ...
    pub state: String,
    pub ioerr: u64,
    pub iotmo: u64,
    pub iodone: u64,
    pub timeout_secs: Option<u64>,
    pub size_bytes: u64,
    /// Where the kernel sees it: the /dev/disk/by-path name, else the
    /// controller's PCI address and the SCSI address.
    pub path: String,
    /// SCSI address host:channel:target:lun ("0:0:1:0").
    pub scsi_address: Option<String>,
    /// The bay label on the chassis, from the board's bay map.
    pub bay: Option<String>,
    /// The SES enclosure slot holding it, when there is an enclosure.
    pub enclosure: Option<EnclosureSlot>,
    /// Devices built on it (md0, ...), from holders/.
    pub holders: Vec<String>,
    /// Partitions on it (sda1, ...).
    pub partitions: Vec<String>,
}

/// A disk's place in an SES enclosure (/sys/class/enclosure/ENC/COMPONENT).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EnclosureSlot {
    /// The enclosure's folder name under /sys/class/enclosure (its SCSI
    /// address, "0:0:5:0").
    pub enclosure: String,
    /// The component's folder name ("Slot 03", "1", ...).
    pub component: String,
    /// The SES slot number (`slot` attribute).
    pub slot: Option<u32>,
    /// The enclosure's SCSI generic device (sg3), for sg_ses.
    pub sg: Option<String>,
}

impl ScsiDisk {
    /// The identity the appliance uses for this disk: serial, else WWN,
    /// else (a disk that tells neither) its kernel name, marked as such.
    pub fn id(&self) -> String {
        self.serial
            .clone()
            .or_else(|| self.wwn.clone())
            .unwrap_or_else(|| format!("kernel-{}", self.kernel))
    }

    pub fn is_running(&self) -> bool {
        self.state == "running"
    }

    /// Commands the SCSI layer completed with an error or timed out since
    /// boot. `ioerr_cnt` counts every command whose result was not zero
    /// (drivers/scsi/scsi_lib.c `scsi_complete`): a CHECK CONDITION carrying
    /// a unit attention (power-on reset at probe, "REPORTED LUNS DATA HAS
    /// CHANGED" after a hot-plug on the bus) or an unsupported command is
    /// counted like a media error. The policy therefore counts only what
    /// grows after the disk was first seen, less the bus notices it expects
    /// (see `policy::disks`).
    pub fn error_count(&self) -> u64 {
        self.ioerr.saturating_add(self.iotmo)
    }

    /// SCSI host number (the controller), from the address.
    pub fn host(&self) -> Option<u32> {
        self.scsi_address
            .as_deref()
            .and_then(|a| a.split(':').next())
            .and_then(|h| h.parse().ok())
    }

    /// Where a technician finds it: "bay 2", or its kernel path when the
    /// board's map has no bay for it.
    pub fn location(&self) -> String {
        match &self.bay {
            Some(b) => format!("bay {b}"),
            None => format!("unmapped bay (path {})", self.path),
        }
    }

    /// The disk as every message names it: serial, WWN when known, bay.
    /// "MXHIL-0000 (WWN naa.5000c500a0b0c000) in bay 1".
    pub fn describe(&self) -> String {
        describe(&self.id(), self.wwn.as_deref(), &self.location())
    }
}

/// "ID (WWN w) in LOCATION"; the WWN is left out when it is the id.
pub fn describe(id: &str, wwn: Option<&str>, location: &str) -> String {
    match wwn {
        Some(w) if w != id => format!("{id} (WWN {w}) in {location}"),
        _ => format!("{id} in {location}"),
    }
}

/// "0x1b0" (or a decimal string, as some drivers write) to a number.
pub fn parse_counter(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The serial number in a raw VPD page 0x80.
pub fn parse_vpd_pg80(page: &[u8]) -> Option<String> {
    if page.len() < 4 || page[1] != 0x80 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([page[2], page[3]]));
    let body = page.get(4..4 + len.min(page.len() - 4))?;
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// The by-path name of each disk: /dev/disk/by-path/<name> -> ../../sdX.
fn by_path(root: &SysRoot) -> Vec<(String, String)> {
    root.list("/dev/disk/by-path")
        .into_iter()
        .filter(|n| !n.contains("-part"))
        .filter_map(|n| {
            let target = root.link(&format!("/dev/disk/by-path/{n}"))?;
            let kernel = target.rsplit('/').next()?.to_string();
            Some((kernel, n))
        })
        .collect()
}

/// The disk's SCSI address (host:channel:target:lun) from its sysfs path.
fn scsi_address(root: &SysRoot, kernel: &str) -> Option<String> {
    let link = root
        .link(&format!("/sys/block/{kernel}"))
        .unwrap_or_default();
    let parts: Vec<&str> = link.split('/').collect();
    root.link(&format!("/sys/block/{kernel}/device"))
        .and_then(|l| l.rsplit('/').next().map(str::to_string))
        .filter(|s| s.split(':').count() == 4)
        .or_else(|| {
            parts
                .iter()
                .rev()
                .find(|p| {
                    p.split(':').count() == 4 && p.split(':').all(|n| n.parse::<u32>().is_ok())
                })
                .map(|s| s.to_string())
        })
}

/// Without udev (the appliance's busybox image), a by-path-like name from
/// the sysfs device path: the last PCI address and the SCSI address,
/// e.g. `pci-0000:00:02.0-scsi-0:0:1:0`.
fn derived_path(root: &SysRoot, kernel: &str, scsi: Option<&str>) -> String {
    let link = root
        .link(&format!("/sys/block/{kernel}"))
        .unwrap_or_default();
    let parts: Vec<&str> = link.split('/').collect();
    let pci = parts.iter().rev().find(|p| is_pci_address(p));
    match (pci, scsi) {
        (Some(p), Some(s)) => format!("pci-{p}-scsi-{s}"),
        (None, Some(s)) => format!("scsi-{s}"),
        (Some(p), None) => format!("pci-{p}"),
        (None, None) => "unknown".into(),
    }
}

fn is_pci_address(s: &str) -> bool {
    // 0000:00:02.0
    let b = s.as_bytes();
    b.len() == 12 && b[4] == b':' && b[7] == b':' && b[10] == b'.'
}

/// Most enclosure components looked at.
pub const ENCLOSURE_SLOTS_MAX: usize = 1024;

/// The slots of every SES enclosure (/sys/class/enclosure/ENC/COMPONENT,
/// drivers/misc/enclosure.c): SCSI address of the disk in it -> the slot.
pub fn read_enclosures(root: &SysRoot) -> Vec<(String, EnclosureSlot)> {
    let mut out = Vec::new();
    for enc in root.list("/sys/class/enclosure") {
        let base = format!("/sys/class/enclosure/{enc}");
        let sg = root
            .list(&format!("{base}/device/scsi_generic"))
            .into_iter()
            .next();
        for comp in root.list(&base) {
            if out.len() >= ENCLOSURE_SLOTS_MAX {
                return out;
            }
            let dir = format!("{base}/{comp}");
            // A component has a `slot` attribute; the enclosure's own
            // files (device, power, subsystem, uevent, ...) do not.
            let Some(slot_attr) = root.attr(&format!("{dir}/slot")) else {
                continue;
            };
            let Some(addr) = root
                .link(&format!("{dir}/device"))
                .and_then(|l| l.rsplit('/').next().map(str::to_string))
            else {
                continue;
            };
            out.push((
                addr,
                EnclosureSlot {
                    enclosure: enc.clone(),
                    component: comp,
                    slot: slot_attr.parse().ok(),
                    sg: sg.clone(),
                },
            ));
        }
    }
    out
}

/// Every SCSI disk (sd*) under /sys/block, placed in its bay by `bays`.
pub fn read_disks(root: &SysRoot, bays: &BayMap) -> Vec<ScsiDisk> {
    let paths = by_path(root);
    let enclosures = read_enclosures(root);
    root.list("/sys/block")
        .into_iter()
        .filter(|n| n.starts_with("sd"))
        .take(DISKS_MAX)
        .map(|kernel| {
            let dev = format!("/sys/block/{kernel}/device");
            let attr = |a: &str| root.attr(&format!("{dev}/{a}"));
            let counter = |a: &str| attr(a).and_then(|s| parse_counter(&s)).unwrap_or(0);
            let wwid = attr("wwid");
            let serial = root
                .attr_bytes(&format!("{dev}/vpd_pg80"))
                .and_then(|p| parse_vpd_pg80(&p))
                .or_else(|| attr("serial").filter(|s| !s.is_empty()));
            let scsi = scsi_address(root, &kernel);
            let path = paths
                .iter()
                .find(|(k, _)| *k == kernel)
                .map(|(_, p)| p.clone())
                .unwrap_or_else(|| derived_path(root, &kernel, scsi.as_deref()));
            // With udev and no readable sysfs link, the by-path name ends
            // in the address ("...-scsi-0:0:1:0").
            let scsi = scsi.or_else(|| {
                path.rsplit_once("-scsi-")
                    .map(|(_, a)| a.to_string())
                    .filter(|a| {
                        a.split(':').count() == 4 && a.split(':').all(|n| n.parse::<u32>().is_ok())
                    })
            });
            let enclosure = scsi.as_ref().and_then(|a| {
                enclosures
                    .iter()
                    .find(|(addr, _)| addr == a)
                    .map(|(_, e)| e.clone())
            });
            let bay = bays
                .bay_for(&DiskPlace {
                    scsi: scsi.as_deref(),
                    path: &path,
                    enclosure_slot: enclosure.as_ref().and_then(|e| e.slot),
                })
                .map(str::to_string)
                // An enclosure names its own slots.
                .or_else(|| enclosure.as_ref().map(|e| e.component.clone()));
            ScsiDisk {
                serial,
                wwn: wwid.filter(|w| w.starts_with("naa.") || w.starts_with("eui.")),
                vendor: attr("vendor").unwrap_or_default(),
                model: attr("model").unwrap_or_default(),
                rev: attr("rev").unwrap_or_default(),
                state: attr("state").unwrap_or_else(|| "unknown".into()),
                ioerr: counter("ioerr_cnt"),
                iotmo: counter("iotmo_cnt"),
                iodone: counter("iodone_cnt"),
                timeout_secs: attr("timeout").and_then(|s| s.parse().ok()),
                size_bytes: root
                    .attr_u64(&format!("/sys/block/{kernel}/size"))
                    .unwrap_or(0)
                    .saturating_mul(512),
                path,
                scsi_address: scsi,
                bay,
                enclosure,
                holders: root.list(&format!("/sys/block/{kernel}/holders")),
                partitions: root
                    .list(&format!("/sys/block/{kernel}"))
                    .into_iter()
                    .filter(|n| n.starts_with(kernel.as_str()) && n.len() > kernel.len())
                    .collect(),
                kernel,
            }
        })
        .collect()
}

/// Bytes read at each end of a disk to decide it is blank.
pub const BLANK_CHECK_BYTES: u64 = 1 << 20;

/// True when the disk's first and last MiB are all zero: no partition
/// table, no md superblock (v0.90/1.0 at the end, 1.1/1.2 at the start),
/// no file system. Only such a disk is ever added without being asked.
/// On a fixture root, /dev/sdX is an ordinary file.
pub fn is_blank(root: &SysRoot, disk: &ScsiDisk) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    if !disk.holders.is_empty() || !disk.partitions.is_empty() {
        return false;
    }
    let Ok(mut f) = std::fs::File::open(root.path(&format!("/dev/{}", disk.kernel))) else {
        return false;
    };
    let len = match f.seek(SeekFrom::End(0)) {
        Ok(l) if l > 0 => l,
        _ => return false,
    };
    let mut buf = vec![0u8; 64 * 1024];
    for start in [0, len.saturating_sub(BLANK_CHECK_BYTES)] {
        if f.seek(SeekFrom::Start(start)).is_err() {
            return false;
        }
        let mut left = BLANK_CHECK_BYTES.min(len - start);
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            match f.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => {
                    if buf[..n].iter().any(|&b| b != 0) {
                        return false;
                    }
                    left -= n as u64;
                }
                Err(_) => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_vpd() {
        assert_eq!(parse_counter("0x1b0"), Some(0x1b0));
        assert_eq!(parse_counter("0x2\n"), Some(2));
        assert_eq!(parse_counter("17"), Some(17));
        assert_eq!(parse_counter("0xzz"), None);
        // Real page 0x80 of QEMU's scsi-hd with serial=MXHIL-0000.
        let page = [
            0x00, 0x80, 0x00, 0x0a, 0x4d, 0x58, 0x48, 0x49, 0x4c, 0x2d, 0x30, 0x30, 0x30, 0x30,
        ];
        assert_eq!(parse_vpd_pg80(&page).as_deref(), Some("MXHIL-0000"));
        assert_eq!(
            parse_vpd_pg80(b"\x00\x80\x00\x08  S1   "),
            Some("S1".into())
        );
        assert_eq!(parse_vpd_pg80(&[0, 0x83, 0, 1, 0x41]), None, "wrong page");
        assert_eq!(parse_vpd_pg80(&[0, 0x80, 0, 0]), None, "empty serial");
        assert_eq!(
            parse_vpd_pg80(&[0, 0x80, 0xff, 0xff, 0x41]),
            Some("A".into())
        );
    }

    #[test]
    fn pci_addresses() {
        assert!(is_pci_address("0000:00:02.0"));
        assert!(!is_pci_address("pci0000:00"));
        assert!(!is_pci_address("0:0:1:0"));
    }
}
