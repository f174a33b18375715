//! The stable smoke run of the fuzz targets (what CI can afford without
//! cargo-fuzz): each target's committed corpus (`fuzz/corpus/<target>/`),
//! then deterministic mutations of it (fixed seed, `mxrack_fuzz::mutate`),
//! through the very harness functions the cargo-fuzz targets call.
//!
//! Mutations run until `MXRACK_FUZZ_SMOKE_MUTATIONS` (default: 5000 per
//! session target, 50000 for `mime_structure`) or
//! `MXRACK_FUZZ_SMOKE_SECS` seconds (default 20) per target, whichever
//! comes first; the sequence is the same on every machine, a slower one
//! just stops earlier. One input taking over `MXRACK_FUZZ_SMOKE_INPUT_SECS`
//! (default 10) fails the run. An input that fails is written to
//! `target/fuzz-smoke-failures/<target>-<n>` (replay it with
//! `cargo fuzz run <target> FILE`) before the test fails.

use mxrack_fuzz::mutate::{Rng, mutate};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The targets share process-wide pieces (the panic counter, the runtime):
/// they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "corpus {} has too few seeds",
        dir.display()
    );
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read seed"))
        })
        .collect()
}

fn save_failure(target: &str, n: usize, input: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-smoke-failures");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{target}-{n}"));
    let _ = std::fs::write(&path, input);
    path
}

fn run_one(target: &str, n: usize, input: &[u8], harness: fn(&[u8]) -> usize) -> usize {
    match std::panic::catch_unwind(|| harness(input)) {
        Ok(received) => received,
        Err(e) => {
            let path = save_failure(target, n, input);
            eprintln!(
                "{target}: input {n} failed; saved to {} ({} bytes)",
                path.display(),
                input.len()
            );
            std::panic::resume_unwind(e);
        }
    }
}

fn smoke(target: &str, seed: u64, mutations: u64, harness: fn(&[u8]) -> usize) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let seeds = corpus(target);
    let started = Instant::now();
    for (n, (name, input)) in seeds.iter().enumerate() {
        let received = run_one(target, n, input, harness);
        eprintln!("{target}: seed {name}: {received} bytes back");
        // Every seed is a session the server answers (or a message that
        // renders): nothing back means the harness drove nothing.
        assert!(received > 0, "{target}: seed {name} got no answer");
    }
    let seeds_took = started.elapsed();
    let max = env_or("MXRACK_FUZZ_SMOKE_MUTATIONS", mutations) as usize;
    let budget = Duration::from_secs(env_or("MXRACK_FUZZ_SMOKE_SECS", 20));
    let slow = Duration::from_secs(env_or("MXRACK_FUZZ_SMOKE_INPUT_SECS", 10));
    let mut rng = Rng::new(seed);
    let mut done = 0;
    while done < max && started.elapsed() < budget {
        let base = &seeds[rng.below(seeds.len())].1;
        let other = &seeds[rng.below(seeds.len())].1;
        let input = mutate(&mut rng, base, other);
        let t = Instant::now();
        run_one(target, seeds.len() + done, &input, harness);
        // One input is one message or one session of at most 64 KiB: a
        // slow one is a bug (a multipart cycle once took 445 s here).
        if t.elapsed() > slow {
            let path = save_failure(target, seeds.len() + done, &input);
            panic!(
                "{target}: input took {:?} (over {slow:?}); saved to {}",
                t.elapsed(),
                path.display()
            );
        }
        done += 1;
    }
    eprintln!(
        "{target}: {} seeds in {:.1}s, {done} mutations, {:.1}s in all",
        seeds.len(),
        seeds_took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        done > 0 || max == 0,
        "{target}: no mutation ran within the budget"
    );
}

#[test]
fn dav_session() {
    smoke("dav_session", 0xda5_0018, 5000, |d| {
        mxrack_fuzz::dav_session(d).received
    });
}

#[test]
fn smtp_session() {
    smoke("smtp_session", 0x5e55_1011, 5000, |d| {
        mxrack_fuzz::smtp_session(d).received
    });
}

#[test]
fn imap_session() {
    smoke("imap_session", 0x1a3a_9001, 5000, |d| {
        mxrack_fuzz::imap_session(d).received
    });
}

#[test]
fn pop3_session() {
    smoke("pop3_session", 0x9093_0003, 5000, |d| {
        mxrack_fuzz::pop3_session(d).received
    });
}

#[test]
fn ldap_session() {
    smoke("ldap_session", 0x1da9_0389, 5000, |d| {
        mxrack_fuzz::ldap_session(d).received
    });
}

#[test]
fn mime_structure() {
    smoke(
        "mime_structure",
        0x3133_2045,
        50_000,
        mxrack_fuzz::mime_structure,
    );
}

#[test]
fn spam_rules() {
    // About 50 ms per message with SpamAssassin's ~2,400 rules in a debug
    // build: the 20 s budget is the bound, the count only on fast machines.
    // The rules are read (about 4 s) before the clock starts.
    mxrack_fuzz::spam_rules(b"");
    smoke("spam_rules", 0x5341_5255, 20_000, mxrack_fuzz::spam_rules);
}

#[test]
fn update_bundle() {
    smoke(
        "update_bundle",
        0x4d58_424e,
        20_000,
        mxrack_fuzz::update_bundle,
    );
}

#[test]
fn mta_sts_policy() {
    smoke(
        "mta_sts_policy",
        0x5354_5331,
        50_000,
        mxrack_fuzz::mta_sts_policy,
    );
}
