//! Password hashing with Argon2id (PHC strings, parameters stored in the hash).
//!
//! Verification reads the parameters from the stored hash, so hashes made
//! with other parameters keep verifying if the defaults change. Both
//! operations cost tens of milliseconds of CPU on purpose: async callers run
//! them in `spawn_blocking`.

use std::sync::OnceLock;

use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use rand::rngs::OsRng;

use crate::StoreError;

/// Longest password accepted, in bytes (a limit on input, nothing more).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Checks the length limits of a new password.
pub(crate) fn check_new(password: &str) -> Result<(), StoreError> {
    if password.is_empty() {
        return Err(StoreError::Invalid {
            what: "password",
            why: "empty".into(),
        });
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(StoreError::Invalid {
            what: "password",
            why: format!("longer than {MAX_PASSWORD_LEN} bytes"),
        });
    }
    Ok(())
}

/// Hashes a password with a fresh random salt into a PHC string.
pub(crate) fn hash(password: &str) -> Result<String, StoreError> {
    check_new(password)?;
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Invalid {
            what: "password",
            why: e.to_string(),
        })
}

/// True if `password` matches the PHC string `phc`. A malformed stored hash
/// never matches (and is logged: it means a damaged record).
pub(crate) fn verify(password: &str, phc: &str) -> bool {
    if password.len() > MAX_PASSWORD_LEN {
        return false;
    }
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(e) => {
            tracing::warn!(error = %e, "stored password hash does not parse");
            false
        }
    }
}

/// Spends the same work as [`verify`] against a hash nobody can match, so
/// that answering "no" for an unknown user takes as long as for a known one.
pub(crate) fn verify_dummy(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let phc = DUMMY.get_or_init(|| {
        let random: u64 = rand::random();
        hash(&format!("dummy-{random:016x}")).unwrap_or_default()
    });
    let _ = verify(password, phc);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("correct horse", &h));
        assert!(!verify("Correct horse", &h));
        assert!(!verify("correct horse", "not a phc string"));
        assert!(hash("").is_err());
        assert!(hash(&"x".repeat(MAX_PASSWORD_LEN + 1)).is_err());
        // Two hashes of one password differ (random salt).
        assert_ne!(h, hash("correct horse").expect("hash"));
    }
}
