//! The embedded default's demo account: account `demo`, domain example.net,
//! mailbox demo@example.net with a random password kept in
//! `DATA/demo-password` (mode 0600) so it is the same on every start, and
//! the Manager's `admin` password, random, in `DATA/admin-password`.

use mxrack_config::{DEMO_ACCOUNT, DEMO_DOMAIN, DEMO_MAILBOX};
use mxrack_store::{Store, StoreError};
use rand::Rng;

const DEMO_PASSWORD_CHARS: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const DEMO_PASSWORD_LEN: usize = 16;

/// Creates what is missing of the demo set-up; returns the demo password.
pub fn ensure(store: &Store) -> Result<String, String> {
    let path = store.data_dir().join("demo-password");
    let password = match std::fs::read_to_string(&path) {
        Ok(p) if !p.trim().is_empty() => p.trim().to_string(),
        _ => {
            let mut rng = rand::thread_rng();
            let p: String = (0..DEMO_PASSWORD_LEN)
                .map(|_| DEMO_PASSWORD_CHARS[rng.gen_range(0..DEMO_PASSWORD_CHARS.len())] as char)
                .collect();
            mxrack_net::write_durably(&path, p.as_bytes(), 0o600)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            p
        }
    };
    let ignore_dup = |r: Result<(), StoreError>| match r {
        Ok(()) | Err(StoreError::Duplicate { .. }) => Ok(()),
        Err(e) => Err(e.to_string()),
    };
    ignore_dup(store.account_add(DEMO_ACCOUNT))?;
    ignore_dup(store.domain_add(DEMO_DOMAIN, DEMO_ACCOUNT))?;
    match store.mailbox_get(DEMO_MAILBOX) {
        Ok(_) => {}
        Err(StoreError::NotFound { .. }) => {
            ignore_dup(store.mailbox_add(DEMO_MAILBOX, &password, true))?
        }
        Err(e) => return Err(e.to_string()),
    }
    // The Manager's `admin` login: a random password kept beside the demo
    // mailbox's, set once.
    let admin_path = store.data_dir().join("admin-password");
    if !store.admin_password_set().map_err(|e| e.to_string())? {
        let mut rng = rand::thread_rng();
        let p: String = (0..DEMO_PASSWORD_LEN)
            .map(|_| DEMO_PASSWORD_CHARS[rng.gen_range(0..DEMO_PASSWORD_CHARS.len())] as char)
            .collect();
        mxrack_net::write_durably(&admin_path, p.as_bytes(), 0o600)
            .map_err(|e| format!("cannot write {}: {e}", admin_path.display()))?;
        store.admin_set_password(&p).map_err(|e| e.to_string())?;
    }
    // RFC 5321 4.5.1: every domain has a postmaster.
    let postmaster = format!("postmaster@{DEMO_DOMAIN}");
    match store.alias_add(&postmaster, &[DEMO_MAILBOX.to_string()]) {
        Ok(()) | Err(StoreError::Duplicate { .. }) => {}
        Err(e) => return Err(e.to_string()),
    }
    Ok(password)
}
