//! The one Argon2id pool of the appliance: every password check (mail and
//! LDAP, every service) and every new hash (`mailbox add`, `mailbox passwd`,
//! `ldap passwd`, LDAP Password Modify) runs on [`POOL_THREADS`] threads,
//! each reusing one buffer of the default memory cost.
//!
//! Why: an Argon2id computation needs its memory cost (19 MiB by default) as
//! working memory. Allocated per call on whichever thread runs it, those
//! blocks land in per-thread malloc arenas and stay: each `mailbox add` grew
//! the server by about 19 MiB that never came back, and a burst of LDAP
//! binds grew it past 1 GiB. On a fixed pool the memory is the pool's
//! buffers and nothing more, and hashing cannot take more than the pool's
//! CPU from the services.
//!
//! PHC strings carry their parameters, so hashes made with other parameters
//! keep verifying; a stored hash that asks for more than the default memory
//! is computed in a buffer freed right after (bounded by
//! [`MEMORY_COST_KIB_MAX`]).

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Mutex, OnceLock, PoisonError};

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::rngs::OsRng;

/// Threads of the pool (each holds one buffer of the default memory cost).
pub const POOL_THREADS: usize = 2;
/// Jobs waiting at most; a caller past it waits for room (the limiter keeps
/// the queue short in practice).
const QUEUE_MAX: usize = 256;
/// Largest Argon2 memory cost accepted from a stored hash, in KiB.
pub const MEMORY_COST_KIB_MAX: u32 = 256 * 1024;
/// Longest password accepted, in bytes (a limit on input, nothing more).
pub const PASSWORD_BYTES_MAX: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashError {
    Empty,
    TooLong,
    /// The pool is gone (cannot happen while the process runs) or Argon2
    /// refused its input.
    Failed(String),
}

impl std::fmt::Display for HashError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashError::Empty => write!(f, "empty"),
            HashError::TooLong => write!(f, "longer than {PASSWORD_BYTES_MAX} bytes"),
            HashError::Failed(e) => write!(f, "{e}"),
        }
    }
}

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// Parameters of new hashes when not the default: set once, before the first
/// hash, by [`set_hash_cost`].
static HASH_PARAMS: OnceLock<Params> = OnceLock::new();

/// Makes new hashes (and the unknown-user dummy) use `m_kib` KiB and
/// `iterations` passes instead of the default (RFC 9106 section 4's second
/// recommended option, 19 MiB and 2 passes). Only the fuzz harnesses call it:
/// under AddressSanitizer a default hash takes most of a second, and a
/// session input tries several logins. The appliance never does. False when
/// a hash was already made with other parameters or they are invalid.
pub fn set_hash_cost(m_kib: u32, iterations: u32) -> bool {
    let Ok(params) = Params::new(m_kib, iterations, 1, None) else {
        return false;
    };
    HASH_PARAMS.get_or_init(|| params.clone()) == &params
}

fn hash_params() -> Params {
    HASH_PARAMS.get_or_init(Params::default).clone()
}

fn pool() -> &'static Mutex<SyncSender<Job>> {
    static POOL: OnceLock<Mutex<SyncSender<Job>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = sync_channel::<Job>(QUEUE_MAX);
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for i in 0..POOL_THREADS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || work(&rx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start an Argon2 thread");
            }
        }
        Mutex::new(tx)
    })
}

fn work(jobs: &Mutex<Receiver<Job>>) {
    let default_blocks = Params::default().block_count();
    let mut memory: Vec<Block> = Vec::new();
    loop {
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else { return };
        job(&mut memory);
        if memory.len() > default_blocks {
            // A stored hash with a larger memory cost: give it back now, so
            // the pool stays at its default size.
            memory = Vec::new();
        }
    }
}

/// Runs `f` on the pool with a reused buffer and waits for its answer. `None`
/// when the pool cannot take it (no thread could be started).
fn on_pool<T: Send + 'static>(f: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static) -> Option<T> {
    let (reply_tx, reply_rx) = sync_channel(1);
    let job: Job = Box::new(move |memory| {
        let _ = reply_tx.send(f(memory));
    });
    let sender = pool()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    sender.send(job).ok()?;
    reply_rx.recv().ok()
}

fn compute(
    argon: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    memory: &mut Vec<Block>,
) -> Result<(), argon2::Error> {
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    argon.hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
}

/// Checks the length limits of a new password.
pub fn check_new(password: &str) -> Result<(), HashError> {
    if password.is_empty() {
        return Err(HashError::Empty);
    }
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(HashError::TooLong);
    }
    Ok(())
}

/// Hashes a password with a fresh random salt into a PHC string (Argon2id,
/// default parameters), on the pool. Blocks the caller.
pub fn hash(password: &str) -> Result<String, HashError> {
    check_new(password)?;
    let password = password.to_string();
    on_pool(move |memory| hash_with_memory(&password, memory))
        .unwrap_or_else(|| Err(HashError::Failed("no Argon2 thread".into())))
}

fn hash_with_memory(password: &str, memory: &mut Vec<Block>) -> Result<String, HashError> {
    let failed = |e: &dyn std::fmt::Display| HashError::Failed(e.to_string());
    let params = hash_params();
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_raw = salt.decode_b64(&mut salt_bytes).map_err(|e| failed(&e))?;
    let mut out = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    compute(
        &argon,
        &params,
        password.as_bytes(),
        salt_raw,
        &mut out,
        memory,
    )
    .map_err(|e| failed(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params).try_into().map_err(|e| failed(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(phc.to_string())
}

/// True if `password` matches the PHC string `phc`, checked on the pool.
/// A malformed stored hash never matches (and is logged: a damaged record).
/// Blocks the caller.
pub fn verify(password: &str, phc: &str) -> bool {
    if password.len() > PASSWORD_BYTES_MAX {
        return false;
    }
    let (password, phc) = (password.to_string(), phc.to_string());
    on_pool(move |memory| verify_with_memory(&password, &phc, memory)).unwrap_or(false)
}

fn verify_with_memory(password: &str, phc: &str, memory: &mut Vec<Block>) -> bool {
    let parsed = match PasswordHash::new(phc) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "stored password hash does not parse");
            return false;
        }
    };
    let (Ok(params), Some(salt), Some(expected)) =
        (Params::try_from(&parsed), parsed.salt, parsed.hash)
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
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = parsed
        .version
        .and_then(|v| Version::try_from(v).ok())
        .unwrap_or_default();
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let argon = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    if compute(&argon, &params, password.as_bytes(), salt, &mut out, memory).is_err() {
        return false;
    }
    use subtle::ConstantTimeEq;
    bool::from(out.as_slice().ct_eq(expected.as_bytes()))
}

/// Spends the same work as [`verify`] against a hash nobody can match, so
/// that answering "no" for an unknown user takes as long as for a known one.
pub fn verify_dummy(password: &str) {
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
    fn hash_and_verify_on_the_pool() {
        let h = hash("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("correct horse", &h));
        assert!(!verify("Correct horse", &h));
        assert!(!verify("correct horse", "not a phc string"));
        assert_eq!(hash(""), Err(HashError::Empty));
        assert_eq!(
            hash(&"x".repeat(PASSWORD_BYTES_MAX + 1)),
            Err(HashError::TooLong)
        );
        // Two hashes of one password differ (random salt).
        assert_ne!(h, hash("correct horse").expect("hash"));
    }

    /// Hashes made by the argon2 crate's own API (as the store made them
    /// before the pool hashed) verify here, and ours verify there.
    #[test]
    fn interoperates_with_the_argon2_crate() {
        use argon2::{PasswordHasher, PasswordVerifier};
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"s3cret", &salt)
            .expect("hash")
            .to_string();
        assert!(verify("s3cret", &theirs));
        assert!(!verify("s3cre", &theirs));
        let ours = hash("s3cret").expect("hash");
        let parsed = PasswordHash::new(&ours).expect("parse");
        assert!(
            Argon2::default()
                .verify_password(b"s3cret", &parsed)
                .is_ok()
        );
        // Other parameters (cheaper here) keep verifying.
        let cheap = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, None).expect("params"),
        )
        .hash_password(b"s3cret", &salt)
        .expect("hash")
        .to_string();
        assert!(verify("s3cret", &cheap));
    }
}
