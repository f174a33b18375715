//! Boot entries on the EFI system partition and what they say.
//!
//! `EFI/Linux/mxrack-<version>[+<left>[-<done>]].efi`: a Boot Loader
//! Specification type #2 entry with its boot counter in the name
//! (systemd's "Automatic Boot Assessment"). No counter: a good image. A
//! counter with tries left: an image on trial. `+0-<done>`: an image whose
//! tries are used up, which systemd-boot sorts after every good entry.
//!
//! Versions are dotted numbers (`0.1.0.20261204193000`); for such strings
//! systemd-boot's version order (strverscmp_improved) is the numeric order
//! of the parts, which [`version_cmp`] is.

use serde::Serialize;
use std::cmp::Ordering;

pub const PREFIX: &str = "mxrack-";
pub const SUFFIX: &str = ".efi";
/// Where systemd-boot finds type #2 entries, relative to the partition.
pub const LINUX_DIR: &str = "EFI/Linux";

/// Dotted decimal numbers, 1 to 8 parts of 1 to 18 digits.
pub fn valid_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    (1..=8).contains(&parts.len())
        && parts
            .iter()
            .all(|p| (1..=18).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Numeric order of dotted versions (both valid).
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    let nums = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    nums(a).cmp(&nums(b))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Blessed: it reached ready once (or was flashed).
    Good,
    /// On trial: systemd-boot boots it `left` more times at most.
    Trial { left: u32, done: u32 },
    /// Its tries are used up: it never reached ready.
    Failed { done: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The file name in `EFI/Linux`.
    pub file: String,
    pub version: String,
    #[serde(flatten)]
    pub state: State,
}

impl Entry {
    /// The name of the entry once blessed.
    pub fn good_name(&self) -> String {
        good_name(&self.version)
    }
}

pub fn good_name(version: &str) -> String {
    format!("{PREFIX}{version}{SUFFIX}")
}

pub fn trial_name(version: &str, tries: u32) -> String {
    format!("{PREFIX}{version}+{tries}{SUFFIX}")
}

/// Parses a file name; `None` for anything that is not one of our entries.
pub fn parse(file: &str) -> Option<Entry> {
    let lower = file.to_ascii_lowercase();
    let core = lower.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (version, state) = match core.split_once('+') {
        None => (core, State::Good),
        Some((v, counter)) => {
            let (left, done) = match counter.split_once('-') {
                Some((l, d)) => (l.parse().ok()?, d.parse().ok()?),
                None => (counter.parse().ok()?, 0),
            };
            let state = if left == 0 {
                State::Failed { done }
            } else {
                State::Trial { left, done }
            };
            (v, state)
        }
    };
    valid_version(version).then(|| Entry {
        file: file.to_string(),
        version: version.to_string(),
        state,
    })
}

/// The version named by systemd-boot's LoaderEntrySelected (the entry id:
/// the file name, lower-cased, with the counter it had when listed).
pub fn selected_version(selected: &str) -> Option<String> {
    parse(selected).map(|e| e.version)
}

/// What the partition and the boot manager say together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assessment {
    /// The entry running now, when systemd-boot named it.
    pub booted: Option<Entry>,
    /// Every entry, newest first (systemd-boot's order among good ones).
    pub entries: Vec<Entry>,
    /// Newer entries that used up their tries: updates that rolled back.
    pub failed_newer: Vec<Entry>,
}

impl Assessment {
    pub fn new(mut entries: Vec<Entry>, selected: Option<&str>) -> Assessment {
        entries.sort_by(|a, b| version_cmp(&b.version, &a.version));
        let booted_version = selected.and_then(selected_version);
        let booted = booted_version
            .as_deref()
            .and_then(|v| entries.iter().find(|e| e.version == v).cloned());
        let failed_newer = entries
            .iter()
            .filter(|e| matches!(e.state, State::Failed { .. }))
            .filter(|e| {
                booted
                    .as_ref()
                    .is_none_or(|b| version_cmp(&e.version, &b.version) == Ordering::Greater)
            })
            .cloned()
            .collect();
        Assessment {
            booted,
            entries,
            failed_newer,
        }
    }

    /// Whether the running image is on trial (not yet blessed).
    pub fn on_trial(&self) -> bool {
        matches!(
            self.booted.as_ref().map(|b| b.state),
            Some(State::Trial { .. }) | Some(State::Failed { .. })
        )
    }

    /// The good image the appliance returns to when the running one fails
    /// its trial: the newest good entry other than the booted one.
    pub fn fallback(&self) -> Option<&Entry> {
        self.entries.iter().find(|e| {
            e.state == State::Good && Some(&e.version) != self.booted.as_ref().map(|b| &b.version)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_counters_parse() {
        let e = parse("mxrack-0.1.0.5.efi").expect("good");
        assert_eq!((e.version.as_str(), e.state), ("0.1.0.5", State::Good));
        assert_eq!(
            parse("mxrack-0.1.0.5+2.efi").unwrap().state,
            State::Trial { left: 2, done: 0 }
        );
        assert_eq!(
            parse("mxrack-0.1.0.5+1-1.efi").unwrap().state,
            State::Trial { left: 1, done: 1 }
        );
        assert_eq!(
            parse("MXRACK-0.1.0.5+0-2.EFI").unwrap().state,
            State::Failed { done: 2 }
        );
        for not_ours in [
            "BOOTX64.EFI",
            "mxrack-.efi",
            "mxrack-1.2.x.efi",
            "mxrack-1.2+a.efi",
            "mxrack-1.2+1-.efi",
            ".mxrack-1.2.tmp",
            "other-1.2.efi",
        ] {
            assert_eq!(parse(not_ours), None, "{not_ours}");
        }
        assert_eq!(trial_name("1.2", 2), "mxrack-1.2+2.efi");
        assert_eq!(
            parse(&trial_name("1.2", 2)).unwrap().good_name(),
            "mxrack-1.2.efi"
        );
    }

    #[test]
    fn versions_order_numerically() {
        assert_eq!(
            version_cmp("0.1.0.20261204193000", "0.1.0.20261204201500"),
            Ordering::Less
        );
        assert_eq!(version_cmp("0.10.0", "0.9.9"), Ordering::Greater);
        assert_eq!(version_cmp("1.0", "1.0"), Ordering::Equal);
        assert!(valid_version("0.1.0.20261204193000"));
        assert!(!valid_version("0.1.0-rc1"));
        assert!(!valid_version(""));
        assert!(!valid_version("1..2"));
    }

    #[test]
    fn a_trial_boot_is_recognised_with_its_fallback() {
        let entries = vec![
            parse("mxrack-1.0.efi").unwrap(),
            parse("mxrack-2.0+1-1.efi").unwrap(),
        ];
        // systemd-boot names the entry as listed, before its rename.
        let a = Assessment::new(entries, Some("mxrack-2.0+2-0.efi"));
        assert_eq!(a.booted.as_ref().unwrap().version, "2.0");
        assert!(a.on_trial());
        assert_eq!(a.fallback().unwrap().version, "1.0");
        assert!(a.failed_newer.is_empty());
    }

    #[test]
    fn a_rolled_back_update_is_named() {
        let entries = vec![
            parse("mxrack-3.0+0-2.efi").unwrap(),
            parse("mxrack-2.0.efi").unwrap(),
        ];
        let a = Assessment::new(entries, Some("mxrack-2.0.efi"));
        assert!(!a.on_trial());
        assert_eq!(a.failed_newer.len(), 1);
        assert_eq!(a.failed_newer[0].version, "3.0");
        assert_eq!(a.entries[0].version, "3.0", "newest first");
    }
}
