//! Install and bless on a mounted EFI system partition.
//!
//! The new image is written under a dot name systemd-boot skips
//! (`EFI/Linux/.mxrack-new.tmp`), hashed while written, flushed to the
//! disk, and only then renamed to its trial name: a power cut at any point
//! leaves the running image's entry untouched and bootable. Entries other
//! than the running one are removed only after the new one is complete, so
//! the partition holds at most three images for a moment (its size allows
//! for that). FAT has no journal; the running image is never rewritten,
//! only renamed once when its trial succeeds.

use crate::UpdateError;
use crate::bundle::{self, Verified};
use crate::entries::{self, Assessment, Entry, LINUX_DIR, State};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

const TMP_NAME: &str = ".mxrack-new.tmp";

fn linux_dir(esp: &Path) -> PathBuf {
    esp.join(LINUX_DIR)
}

/// Every mxrack entry on the partition (other files are left alone).
pub fn list(esp: &Path) -> Result<Vec<Entry>, UpdateError> {
    let dir = linux_dir(esp);
    let rd = fs::read_dir(&dir).map_err(UpdateError::io(format!("reading {}", dir.display())))?;
    Ok(rd
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(entries::parse))
        .take(64)
        .collect())
}

fn sync_dir(dir: &Path) -> Result<(), UpdateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(UpdateError::io(format!("flushing {}", dir.display())))
}

/// What an install did.
#[derive(Debug)]
pub struct Installed {
    pub entry: Entry,
    pub removed: Vec<String>,
    pub fallback: Option<Entry>,
}

/// Installs the payload that follows a verified header in `r` as a trial
/// entry with `tries` boots. `board` is this appliance's board; `selected`
/// is systemd-boot's LoaderEntrySelected (the running entry).
pub fn install(
    esp: &Path,
    r: &mut impl Read,
    verified: &Verified,
    board: &str,
    selected: Option<&str>,
    tries: u32,
) -> Result<Installed, UpdateError> {
    let m = &verified.manifest;
    if m.board != board {
        return Err(UpdateError::Refused(format!(
            "the bundle is for board {:?}, this appliance is {board:?}",
            m.board
        )));
    }
    let a = Assessment::new(list(esp)?, selected);
    let Some(booted) = a.booted.clone() else {
        return Err(UpdateError::Refused(
            "the running image was not started by the boot disk's boot manager (systemd-boot \
             names no mxrack entry): reflash the boot disk with a current disk.img"
                .into(),
        ));
    };
    if a.on_trial() {
        return Err(UpdateError::Refused(format!(
            "the running image {} is itself on trial: it must reach ready first",
            booted.version
        )));
    }
    if entries::version_cmp(&m.version, &booted.version) != std::cmp::Ordering::Greater {
        return Err(UpdateError::Refused(format!(
            "version {} is not newer than the running {} (systemd-boot starts the newest image)",
            m.version, booted.version
        )));
    }
    let dir = linux_dir(esp);
    let tmp = dir.join(TMP_NAME);
    let mut out =
        File::create(&tmp).map_err(UpdateError::io(format!("creating {}", tmp.display())))?;
    let copied = bundle::copy_payload(r, &mut out, m).and_then(|()| {
        out.sync_all()
            .map_err(UpdateError::io(format!("flushing {}", tmp.display())))
    });
    drop(out);
    // The signature vouches for the bytes; the image itself must also say
    // the version and board the manifest does, since systemd-boot sorts by
    // what the image says (a bundle not made by `mxrack update bundle`).
    let checked = copied.and_then(|()| {
        let osrel = bundle::osrel_of_file(&tmp)?;
        let says = |k| bundle::osrel_value(&osrel, k).unwrap_or_default();
        if says("IMAGE_VERSION") != m.version || says("MXRACK_BOARD") != m.board {
            return Err(UpdateError::Refused(format!(
                "the image says version {:?} for board {:?}, its manifest {} for {}",
                says("IMAGE_VERSION"),
                says("MXRACK_BOARD"),
                m.version,
                m.board
            )));
        }
        Ok(())
    });
    if let Err(e) = checked {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // The new image is whole and verified: now make room, then make it
    // bootable. The running entry is kept: it is the fallback.
    let mut removed = Vec::new();
    for e in list(esp)? {
        if e.version != booted.version {
            fs::remove_file(dir.join(&e.file))
                .map_err(UpdateError::io(format!("removing {}", e.file)))?;
            removed.push(e.file);
        }
    }
    let name = entries::trial_name(&m.version, tries);
    fs::rename(&tmp, dir.join(&name)).map_err(UpdateError::io(format!("renaming to {name}")))?;
    sync_dir(&dir)?;
    Ok(Installed {
        entry: entries::parse(&name).expect("our own name parses"),
        removed,
        fallback: Some(booted),
    })
}

/// Blesses the running entry (its trial succeeded): its counter is
/// dropped from its name. Returns the new name, or `None` when it already
/// was good.
pub fn bless(esp: &Path, selected: &str) -> Result<Option<String>, UpdateError> {
    let a = Assessment::new(list(esp)?, Some(selected));
    let Some(booted) = a.booted else {
        return Err(UpdateError::System(format!(
            "the booted entry {selected:?} is not on the boot partition"
        )));
    };
    if booted.state == State::Good {
        return Ok(None);
    }
    let dir = linux_dir(esp);
    let good = booted.good_name();
    fs::rename(dir.join(&booted.file), dir.join(&good)).map_err(UpdateError::io(format!(
        "renaming {} to {good}",
        booted.file
    )))?;
    sync_dir(&dir)?;
    Ok(Some(good))
}

/// Removes a leftover partial image (a power cut during an install).
pub fn clean(esp: &Path) -> bool {
    fs::remove_file(linux_dir(esp).join(TMP_NAME)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::testutil::image;
    use crate::bundle::{keygen, public_key, read_header, signing_key, write_bundle};

    fn esp_with(files: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tmp");
        fs::create_dir_all(d.path().join(LINUX_DIR)).expect("mkdir");
        for f in files {
            fs::write(d.path().join(LINUX_DIR).join(f), b"old image").expect("write");
        }
        d
    }

    fn bundle_of(version: &str, board: &str) -> (Vec<u8>, Vec<crate::bundle::PublicKey>) {
        bundle_with(&image(version, board), version, board)
    }

    fn bundle_with(
        payload: &[u8],
        version: &str,
        board: &str,
    ) -> (Vec<u8>, Vec<crate::bundle::PublicKey>) {
        let (private, public) = keygen().expect("keygen");
        let k = signing_key(&private, "k").expect("key");
        let mut out = Vec::new();
        write_bundle(&mut out, payload, board, version, None, &k).expect("bundle");
        (out, vec![public_key(&public, "k.pub").expect("pub")])
    }

    fn names(esp: &Path) -> Vec<String> {
        let mut v: Vec<_> = fs::read_dir(linux_dir(esp))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    /// Verifies the bundle's header, then installs it as this appliance
    /// (qemu-x86_64, two tries) booted from `selected`.
    fn try_install(
        esp: &Path,
        data: &[u8],
        keys: &[crate::bundle::PublicKey],
        selected: Option<&str>,
    ) -> Result<Installed, UpdateError> {
        let mut r = data;
        let v = read_header(&mut r, keys).expect("verified");
        install(esp, &mut r, &v, "qemu-x86_64", selected, 2)
    }

    #[test]
    fn install_keeps_the_running_image_and_removes_older_ones() {
        let esp = esp_with(&["mxrack-1.0.efi", "mxrack-2.0.efi", "mxrack-2.5+0-2.efi"]);
        let (data, keys) = bundle_of("3.0", "qemu-x86_64");
        let done =
            try_install(esp.path(), &data, &keys, Some("mxrack-2.0.efi")).expect("installed");
        assert_eq!(done.entry.file, "mxrack-3.0+2.efi");
        assert_eq!(
            names(esp.path()),
            vec!["mxrack-2.0.efi", "mxrack-3.0+2.efi"]
        );
        assert_eq!(
            fs::read(linux_dir(esp.path()).join("mxrack-3.0+2.efi")).unwrap(),
            image("3.0", "qemu-x86_64")
        );
        // The new image boots; its trial succeeds.
        assert_eq!(
            bless(esp.path(), "mxrack-3.0+2-0.efi")
                .expect("bless")
                .as_deref(),
            Some("mxrack-3.0.efi")
        );
        assert_eq!(names(esp.path()), vec!["mxrack-2.0.efi", "mxrack-3.0.efi"]);
        assert_eq!(bless(esp.path(), "mxrack-3.0.efi").expect("again"), None);
    }

    #[test]
    fn refusals_leave_the_partition_as_it_was() {
        let esp = esp_with(&["mxrack-2.0.efi"]);
        let cases = [
            ("3.0", "x86_64", Some("mxrack-2.0.efi"), "board"),
            ("2.0", "qemu-x86_64", Some("mxrack-2.0.efi"), "not newer"),
            ("1.0", "qemu-x86_64", Some("mxrack-2.0.efi"), "not newer"),
            ("3.0", "qemu-x86_64", None, "boot manager"),
        ];
        for (version, board, selected, why) in cases {
            let (data, keys) = bundle_of(version, board);
            let e = try_install(esp.path(), &data, &keys, selected).unwrap_err();
            assert!(e.to_string().contains(why), "{version} {board}: {e}");
            assert_eq!(names(esp.path()), vec!["mxrack-2.0.efi"]);
        }
        // While on trial, no second update.
        let esp = esp_with(&["mxrack-2.0.efi", "mxrack-3.0+1-1.efi"]);
        let (data, keys) = bundle_of("4.0", "qemu-x86_64");
        let e = try_install(esp.path(), &data, &keys, Some("mxrack-3.0+2-0.efi")).unwrap_err();
        assert!(e.to_string().contains("on trial"), "{e}");
    }

    #[test]
    fn a_corrupt_payload_is_never_made_bootable() {
        let esp = esp_with(&["mxrack-1.0.efi", "mxrack-2.0.efi"]);
        let (mut data, keys) = bundle_of("3.0", "qemu-x86_64");
        let last = data.len() - 1;
        data[last] ^= 0x20;
        let e = try_install(esp.path(), &data, &keys, Some("mxrack-2.0.efi")).unwrap_err();
        assert!(e.to_string().contains("SHA-256"), "{e}");
        // Nothing removed, nothing added, no partial file left.
        assert_eq!(names(esp.path()), vec!["mxrack-1.0.efi", "mxrack-2.0.efi"]);
    }

    #[test]
    fn an_image_that_names_another_version_or_board_is_refused() {
        // Signed, hash intact, but the image itself says something else
        // than its manifest: systemd-boot would sort it by the image.
        for (inside, why) in [
            (image("9.0", "qemu-x86_64"), "version \"9.0\""),
            (image("3.0", "x86_64"), "board \"x86_64\""),
            (b"not an EFI program".to_vec(), "not a unified kernel image"),
        ] {
            let esp = esp_with(&["mxrack-1.0.efi", "mxrack-2.0.efi"]);
            let (data, keys) = bundle_with(&inside, "3.0", "qemu-x86_64");
            let e = try_install(esp.path(), &data, &keys, Some("mxrack-2.0.efi")).unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
            assert_eq!(names(esp.path()), vec!["mxrack-1.0.efi", "mxrack-2.0.efi"]);
        }
    }
}
