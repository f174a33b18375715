//! A/B updates of the firmware image (issue 14).
//!
//! The appliance runs from RAM: its whole system (kernel, initramfs with
//! every program and the image configuration, kernel command line) is one
//! EFI program, a unified kernel image (UKI). An update is therefore one
//! file, and the two "slots" are two UKIs on the boot disk's EFI system
//! partition, `EFI/Linux/mxrack-<version>.efi`, chosen by systemd-boot:
//!
//! - A new image is written as `mxrack-<version>+<tries>.efi`: the Boot
//!   Loader Specification's boot counter. systemd-boot boots the newest
//!   entry first, and renames it to `+<tries-1>-<done+1>` before each boot.
//! - When the new image reaches ready within `[update] trial_secs`, the
//!   trial check renames it to `mxrack-<version>.efi` (blessed, "good").
//! - When it does not, the trial check restarts the appliance; once its
//!   tries are used up systemd-boot sorts it after every good entry, so the
//!   previous image boots again. A kernel that panics restarts by itself
//!   (`panic=` on the command line) and counts the same way.
//!
//! Rooms: [`bundle`] (the signed file: format, signing, verification; pure
//! apart from its reader and writer), [`entries`] (entry names, versions,
//! what is booted and what failed; pure), [`esp`] (install and bless on a
//! mounted EFI system partition) and [`system`] (finding and mounting that
//! partition, systemd-boot's EFI variables, the trial check's wait).

pub mod bundle;
pub mod entries;
pub mod esp;
pub mod system;

/// Everything that can refuse an update, a bundle or a status.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("not an mxrack update bundle: {0}")]
    Format(String),
    #[error("bundle signature: {0}")]
    Signature(String),
    #[error("bundle refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Key(String),
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
    #[error("{0}")]
    System(String),
}

impl UpdateError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> UpdateError {
        let what = what.into();
        move |err| UpdateError::Io { what, err }
    }
}
