//! `[update]`: A/B updates of the firmware image (issue 14): where the
//! trusted signing keys live, how many trial boots a new image gets and how
//! long it has to reach "ready" before the appliance returns to the image
//! it came from.

use crate::validate::{ConfigError, invalid};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The image's keyring: one `*.pub` file per trusted signing key.
pub const UPDATE_KEYS_DIR: &str = "/etc/mxrack/update-keys";
/// Seconds a new image has, from boot, to reach ready. Generous: a first
/// boot after an update may resync an array or replay a journal.
pub const UPDATE_TRIAL_SECS: u64 = 600;
/// Boots a new image gets before the boot manager gives up on it. Two, so
/// that a power cut during the first trial is not a verdict.
pub const UPDATE_TRIES: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Update {
    /// Folder of trusted public keys (`*.pub`, `mxrack update keygen`).
    pub keys_dir: PathBuf,
    /// Seconds from boot a new image has to reach ready; then it restarts
    /// and the boot manager counts the boot as failed.
    pub trial_secs: u64,
    /// Trial boots of a new image (systemd-boot's boot counter).
    pub tries: u32,
}

impl Default for Update {
    fn default() -> Self {
        Update {
            keys_dir: PathBuf::from(UPDATE_KEYS_DIR),
            trial_secs: UPDATE_TRIAL_SECS,
            tries: UPDATE_TRIES,
        }
    }
}

impl Update {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(30..=86_400).contains(&self.trial_secs) {
            return Err(invalid("update.trial_secs", "between 30 and 86400 seconds"));
        }
        if !(1..=5).contains(&self.tries) {
            return Err(invalid("update.tries", "between 1 and 5"));
        }
        if self.keys_dir.as_os_str().is_empty() {
            return Err(invalid("update.keys_dir", "must not be empty"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_limits_refused() {
        Update::default().validate().expect("default");
        let mut u = Update {
            trial_secs: 10,
            ..Update::default()
        };
        assert!(
            u.validate()
                .unwrap_err()
                .to_string()
                .contains("update.trial_secs")
        );
        u.trial_secs = 60;
        u.tries = 0;
        assert!(
            u.validate()
                .unwrap_err()
                .to_string()
                .contains("update.tries")
        );
    }
}
