#![no_main]
//! A whole POP3 session over an in-memory stream against a real store: the
//! input is what the client sends. See `mxrack_fuzz::pop3_session`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mxrack_fuzz::pop3_session(data);
});
