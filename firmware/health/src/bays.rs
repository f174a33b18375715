//! The board's bay map: where a disk sits, in the words printed on the
//! chassis. The kernel knows a disk by its SCSI address (host:channel:
//! target:lun), its by-path name and, behind an SES enclosure, the
//! enclosure's slot number; a technician knows "bay 2". Each board ships
//! its map as `/etc/mxrack/bays.toml` (`board/<board>/rootfs-overlay/`):
//!
//! ```toml
//! board = "qemu-x86_64"
//! [[bay]]
//! label = "1"
//! scsi = "*:0:0:0"        # host:channel:target:lun, "*" matches any number
//! [[bay]]
//! label = "2"
//! by_path = "pci-0000:00:02.0-scsi-0:0:1:0"
//! [[bay]]
//! label = "3"
//! enclosure_slot = 3      # the SES slot number (/sys/class/enclosure/*/*/slot)
//! ```
//!
//! A rule names exactly one of `scsi`, `by_path` and `enclosure_slot`; the
//! first rule that matches gives the label. A disk no rule matches has no
//! bay and is shown with its kernel path instead.

use serde::Deserialize;
use std::path::Path;

/// Most rules in a map, and the longest file read.
pub const BAYS_MAX: usize = 256;
pub const BAY_MAP_BYTES_MAX: u64 = 64 * 1024;
/// Longest bay label (it goes into every message about the disk).
pub const LABEL_CHARS_MAX: usize = 32;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BayMap {
    pub board: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    label: String,
    place: Place,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// host, channel, target, lun; `None` matches any.
    Scsi([Option<u32>; 4]),
    ByPath(String),
    EnclosureSlot(u32),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    board: String,
    #[serde(default)]
    bay: Vec<FileBay>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBay {
    label: String,
    scsi: Option<String>,
    by_path: Option<String>,
    enclosure_slot: Option<u32>,
}

/// Where the kernel puts one disk, as the map's rules match it.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskPlace<'a> {
    /// "0:0:1:0"
    pub scsi: Option<&'a str>,
    /// by-path name (or the one derived from sysfs).
    pub path: &'a str,
    pub enclosure_slot: Option<u32>,
}

fn parse_scsi(s: &str) -> Option<[Option<u32>; 4]> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut out = [None; 4];
    for (o, p) in out.iter_mut().zip(&parts) {
        *o = match *p {
            "*" => None,
            n => Some(n.parse().ok()?),
        };
    }
    Some(out)
}

impl BayMap {
    /// Parses a map; the error names the rule and what is wrong.
    pub fn parse(text: &str) -> Result<BayMap, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.bay.len() > BAYS_MAX {
            return Err(format!("more than {BAYS_MAX} bays"));
        }
        let mut rules = Vec::with_capacity(file.bay.len());
        for (i, b) in file.bay.into_iter().enumerate() {
            let n = i + 1;
            let label = b.label.trim().to_string();
            if label.is_empty()
                || label.chars().count() > LABEL_CHARS_MAX
                || label.chars().any(char::is_control)
            {
                return Err(format!(
                    "bay {n}: label must be 1 to {LABEL_CHARS_MAX} printable characters"
                ));
            }
            let place = match (b.scsi, b.by_path, b.enclosure_slot) {
                (Some(s), None, None) => Place::Scsi(parse_scsi(&s).ok_or_else(|| {
                    format!("bay {n} ({label}): scsi must be host:channel:target:lun (numbers or *), not {s:?}")
                })?),
                (None, Some(p), None) if !p.is_empty() => Place::ByPath(p),
                (None, None, Some(slot)) => Place::EnclosureSlot(slot),
                _ => {
                    return Err(format!(
                        "bay {n} ({label}): give exactly one of scsi, by_path, enclosure_slot"
                    ));
                }
            };
            rules.push(Rule { label, place });
        }
        Ok(BayMap {
            board: file.board,
            rules,
        })
    }

    /// Reads the map at `path`: no file is an empty map; a bad one is an
    /// empty map and the reason (logged by the caller).
    pub fn load(path: &Path) -> (BayMap, Option<String>) {
        use std::io::Read;
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (BayMap::default(), None),
            Err(e) => return (BayMap::default(), Some(format!("{}: {e}", path.display()))),
        };
        let mut text = String::new();
        if let Err(e) = f.take(BAY_MAP_BYTES_MAX + 1).read_to_string(&mut text) {
            return (BayMap::default(), Some(format!("{}: {e}", path.display())));
        }
        if text.len() as u64 > BAY_MAP_BYTES_MAX {
            return (
                BayMap::default(),
                Some(format!(
                    "{}: longer than {BAY_MAP_BYTES_MAX} bytes",
                    path.display()
                )),
            );
        }
        match BayMap::parse(&text) {
            Ok(m) => (m, None),
            Err(e) => (BayMap::default(), Some(format!("{}: {e}", path.display()))),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The bay label of a disk at `place`, from the first matching rule.
    pub fn bay_for(&self, place: &DiskPlace<'_>) -> Option<&str> {
        let scsi = place.scsi.and_then(parse_scsi);
        self.rules
            .iter()
            .find(|r| match &r.place {
                Place::Scsi(want) => scsi.is_some_and(|got| {
                    want.iter()
                        .zip(got.iter())
                        .all(|(w, g)| w.is_none() || w == g)
                }),
                Place::ByPath(p) => p == place.path,
                Place::EnclosureSlot(s) => place.enclosure_slot == Some(*s),
            })
            .map(|r| r.label.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = r#"
board = "test"
[[bay]]
label = "1"
scsi = "*:0:0:0"
[[bay]]
label = "2"
by_path = "pci-0000:00:02.0-scsi-0:0:1:0"
[[bay]]
label = "front 3"
enclosure_slot = 3
"#;

    #[test]
    fn rules_match_by_address_path_and_enclosure_slot() {
        let m = BayMap::parse(MAP).expect("map");
        assert_eq!(m.board, "test");
        let at = |scsi, path, slot| DiskPlace {
            scsi,
            path,
            enclosure_slot: slot,
        };
        assert_eq!(m.bay_for(&at(Some("0:0:0:0"), "x", None)), Some("1"));
        assert_eq!(
            m.bay_for(&at(Some("7:0:0:0"), "x", None)),
            Some("1"),
            "any host"
        );
        assert_eq!(m.bay_for(&at(Some("0:0:0:1"), "x", None)), None, "lun 1");
        assert_eq!(
            m.bay_for(&at(Some("0:0:1:0"), "pci-0000:00:02.0-scsi-0:0:1:0", None)),
            Some("2")
        );
        assert_eq!(
            m.bay_for(&at(Some("1:0:9:0"), "y", Some(3))),
            Some("front 3")
        );
        assert_eq!(m.bay_for(&at(None, "y", Some(4))), None);
    }

    #[test]
    fn bad_maps_say_which_rule() {
        let e = BayMap::parse("[[bay]]\nlabel = \"1\"\nscsi = \"0:0:x:0\"\n").expect_err("bad");
        assert!(e.contains("bay 1 (1): scsi"), "{e}");
        let e = BayMap::parse("[[bay]]\nlabel = \"1\"\nscsi = \"0:0:0:0\"\nenclosure_slot = 1\n")
            .expect_err("two places");
        assert!(e.contains("exactly one"), "{e}");
        let e = BayMap::parse("[[bay]]\nlabel = \"\"\nenclosure_slot = 1\n").expect_err("label");
        assert!(e.contains("label"), "{e}");
        assert!(
            BayMap::parse("[[bay]]\nlabel = \"1\"\nslot = 1\n").is_err(),
            "unknown key"
        );
        let (m, err) = BayMap::load(Path::new("/nonexistent/bays.toml"));
        assert!(m.is_empty() && err.is_none(), "no file: no bays, no error");
    }

    /// The maps shipped in board/*/ parse, and the QEMU one names the
    /// three disks as image/qemu and hil-tests attach them (virtio-scsi,
    /// scsi-id = disk index, lun 0).
    #[test]
    fn the_boards_maps_parse() {
        let boards = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../board");
        for board in ["qemu-x86_64", "x86_64"] {
            let p = boards.join(format!("{board}/rootfs-overlay/etc/mxrack/bays.toml"));
            let (m, err) = BayMap::load(&p);
            assert!(err.is_none(), "{err:?}");
            assert_eq!(m.board, board);
            assert!(!m.is_empty(), "{}", p.display());
        }
        let (qemu, _) =
            BayMap::load(&boards.join("qemu-x86_64/rootfs-overlay/etc/mxrack/bays.toml"));
        for (target, bay) in [(0, "1"), (1, "2"), (2, "3")] {
            let scsi = format!("0:0:{target}:0");
            let place = DiskPlace {
                scsi: Some(&scsi),
                path: "",
                enclosure_slot: None,
            };
            assert_eq!(qemu.bay_for(&place), Some(bay));
        }
    }
}
