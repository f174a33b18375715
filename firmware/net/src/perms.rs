//! The modes of the data folder: it holds every Argon2 hash, every message,
//! the TLS key and the SRS secret, so no other local user may read it.
//! Folders are 0700 and everything else 0600, checked and repaired when
//! `mxrack run` starts (before the store opens) and reported by `mxrack
//! doctor`. The process umask (0077, set in `main`) keeps new files that way.
//!
//! The walk never follows a symbolic link (a link planted in the data
//! folder cannot make the repair chmod a file elsewhere) and looks at a
//! bounded number of entries.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Mode of every folder inside the data folder, and of the folder itself.
pub const DATA_FOLDER_MODE: u32 = 0o700;
/// Mode of every other entry (redb, message files, keys, sockets).
pub const DATA_FILE_MODE: u32 = 0o600;
/// Entries looked at, at most (a bound on the walk, far above any real store's
/// folder count; message files are looked at too).
pub const ENTRIES_MAX: usize = 10_000_000;
/// Folder depth walked, at most.
const DEPTH_MAX: usize = 16;

/// An entry whose mode is not what it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongMode {
    pub path: PathBuf,
    /// The permission bits found (`mode & 0o7777`).
    pub found: u32,
    pub expected: u32,
}

impl std::fmt::Display for WrongMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is {:04o}, should be {:04o}",
            self.path.display(),
            self.found,
            self.expected
        )
    }
}

/// Every entry of `data_dir` (and the folder itself) whose mode differs from
/// 0700 (folders) / 0600 (anything else). Symbolic links are not followed
/// and not reported (their own mode means nothing).
pub fn audit(data_dir: &Path) -> io::Result<Vec<WrongMode>> {
    let mut wrong = Vec::new();
    let mut seen = 0usize;
    walk(data_dir, 0, &mut seen, &mut |path, meta| {
        let expected = if meta.is_dir() {
            DATA_FOLDER_MODE
        } else {
            DATA_FILE_MODE
        };
        let found = meta.permissions().mode() & 0o7777;
        if found != expected {
            wrong.push(WrongMode {
                path: path.to_path_buf(),
                found,
                expected,
            });
        }
    })?;
    Ok(wrong)
}

/// Sets every wrong mode [`audit`] finds; returns what was repaired.
pub fn repair(data_dir: &Path) -> io::Result<Vec<WrongMode>> {
    let wrong = audit(data_dir)?;
    for w in &wrong {
        // set_permissions follows links, but audit never reports one.
        std::fs::set_permissions(&w.path, std::fs::Permissions::from_mode(w.expected))?;
    }
    Ok(wrong)
}

fn walk(
    path: &Path,
    depth: usize,
    seen: &mut usize,
    visit: &mut dyn FnMut(&Path, &std::fs::Metadata),
) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    *seen += 1;
    if *seen > ENTRIES_MAX {
        return Ok(());
    }
    visit(path, &meta);
    if meta.is_dir() && depth < DEPTH_MAX {
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            match walk(&entry.path(), depth + 1, seen, visit) {
                Ok(()) => {}
                // Removed while we looked (a message expunged, a temporary file).
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p)
            .expect("meta")
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn wrong_modes_are_found_and_repaired_and_links_are_left_alone() {
        let base = tempfile::tempdir().expect("tempdir");
        let data = base.path().join("data");
        std::fs::create_dir_all(data.join("msg")).expect("mkdir");
        std::fs::write(data.join("meta.redb"), b"x").expect("write");
        std::fs::write(data.join("msg/0001"), b"x").expect("write");
        let outside = base.path().join("outside");
        std::fs::write(&outside, b"x").expect("write");
        std::os::unix::fs::symlink(&outside, data.join("link")).expect("symlink");
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
        };
        set(&data, 0o755);
        set(&data.join("msg"), 0o700);
        set(&data.join("meta.redb"), 0o644);
        set(&data.join("msg/0001"), 0o600);
        set(&outside, 0o644);

        let mut wrong = audit(&data).expect("audit");
        wrong.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(
            wrong,
            vec![
                WrongMode {
                    path: data.clone(),
                    found: 0o755,
                    expected: 0o700
                },
                WrongMode {
                    path: data.join("meta.redb"),
                    found: 0o644,
                    expected: 0o600
                },
            ]
        );
        assert_eq!(
            wrong[1].to_string(),
            format!("{}/meta.redb is 0644, should be 0600", data.display())
        );
        assert_eq!(repair(&data).expect("repair").len(), 2);
        assert!(audit(&data).expect("audit").is_empty());
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("meta.redb")), 0o600);
        // The link's target, outside the data folder, was not touched.
        assert_eq!(mode(&outside), 0o644);
    }
}
