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

/// Password checks run at once. Each Argon2id check needs its memory cost
/// (19 MiB by default) as working memory; a fixed pool of threads, each
/// reusing its own buffer, keeps a burst of logins from growing the process
/// by that much per login (the allocator keeps freed arenas).
const VERIFY_THREADS: usize = 2;
/// Largest Argon2 memory cost accepted from a stored hash, in KiB.
const MEMORY_COST_KIB_MAX: u32 = 256 * 1024;

type Job = Box<dyn FnOnce(&mut Vec<argon2::Block>) + Send>;

fn pool() -> &'static std::sync::Mutex<std::sync::mpsc::Sender<Job>> {
    static POOL: OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Job>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..VERIFY_THREADS {
            let rx = rx.clone();
            let _ = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    let mut memory: Vec<argon2::Block> = Vec::new();
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(p) => p.into_inner().recv(),
                        };
                        match job {
                            Ok(job) => job(&mut memory),
                            Err(_) => return,
                        }
                    }
                });
        }
        std::sync::Mutex::new(tx)
    })
}

/// Checks a password on the pool with a reused buffer. Blocks the caller
/// (callers are blocking tasks already).
fn verify_on_pool(password: &str, phc: &str) -> Option<bool> {
    let (reply_tx, reply_rx) = std::sync::mpsc::sync_channel(1);
    let (password, phc) = (password.to_string(), phc.to_string());
    let job: Job = Box::new(move |memory| {
        let _ = reply_tx.send(verify_with_memory(&password, &phc, memory));
    });
    let sent = match pool().lock() {
        Ok(tx) => tx.send(job).is_ok(),
        Err(p) => p.into_inner().send(job).is_ok(),
    };
    if !sent {
        return None;
    }
    reply_rx.recv().ok()
}

fn verify_with_memory(password: &str, phc: &str, memory: &mut Vec<argon2::Block>) -> bool {
    let parsed = match PasswordHash::new(phc) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "stored password hash does not parse");
            return false;
        }
    };
    let (Ok(params), Some(salt), Some(expected)) =
        (argon2::Params::try_from(&parsed), parsed.salt, parsed.hash)
    else {
        tracing::warn!("stored password hash lacks parameters, salt or hash");
        return false;
    };
    if params.m_cost() > MEMORY_COST_KIB_MAX {
        tracing::warn!(
            m_cost = params.m_cost(),
            "stored password hash asks for too much memory"
        );
        return false;
    }
    let algorithm = argon2::Algorithm::try_from(parsed.algorithm).unwrap_or_default();
    let version = parsed
        .version
        .and_then(|v| argon2::Version::try_from(v).ok())
        .unwrap_or_default();
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, argon2::Block::default());
    }
    let argon = Argon2::new(algorithm, version, params);
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    if argon
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..blocks])
        .is_err()
    {
        return false;
    }
    // Output's equality is constant-time.
    argon2::password_hash::Output::new(&out).is_ok_and(|computed| computed == expected)
}

/// True if `password` matches the PHC string `phc`. A malformed stored hash
/// never matches (and is logged: it means a damaged record).
pub(crate) fn verify(password: &str, phc: &str) -> bool {
    if password.len() > MAX_PASSWORD_LEN {
        return false;
    }
    match verify_on_pool(password, phc) {
        Some(ok) => ok,
        // No pool thread could be started: check here, allocating as usual.
        None => PasswordHash::new(phc).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        }),
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
