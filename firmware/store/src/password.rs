//! Password hashing with Argon2id (PHC strings, parameters stored in the
//! hash), on the appliance's one Argon2 pool (`mxrack_auth::argon`): hashing
//! for `mailbox add` and checks for every login share its fixed threads and
//! buffers, so neither grows the process. Both block the caller for tens of
//! milliseconds: async callers run them in `mxrack_store::spawn_blocking`.

use crate::StoreError;

/// Longest password accepted, in bytes (a limit on input, nothing more).
pub const MAX_PASSWORD_LEN: usize = mxrack_auth::argon::PASSWORD_BYTES_MAX;

fn invalid(e: mxrack_auth::argon::HashError) -> StoreError {
    StoreError::Invalid {
        what: "password",
        why: e.to_string(),
    }
}

/// Hashes a password with a fresh random salt into a PHC string.
pub(crate) fn hash(password: &str) -> Result<String, StoreError> {
    mxrack_auth::argon::hash(password).map_err(invalid)
}

/// True if `password` matches the PHC string `phc`. A malformed stored hash
/// never matches (and is logged: it means a damaged record).
pub(crate) fn verify(password: &str, phc: &str) -> bool {
    mxrack_auth::argon::verify(password, phc)
}

/// Spends the same work as [`verify`] against a hash nobody can match, so
/// that answering "no" for an unknown user takes as long as for a known one.
pub(crate) fn verify_dummy(password: &str) {
    mxrack_auth::argon::verify_dummy(password);
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
        assert!(hash("").is_err());
        assert!(hash(&"x".repeat(MAX_PASSWORD_LEN + 1)).is_err());
    }
}
