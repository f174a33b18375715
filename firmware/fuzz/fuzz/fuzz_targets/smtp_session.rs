#![no_main]
//! A whole SMTP session over an in-memory stream against a real store: the
//! first input byte picks MX or submission, the rest is what the client
//! sends. See `mxrack_fuzz::smtp_session`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mxrack_fuzz::smtp_session(data);
});
