#![no_main]
//! A whole HTTP connection to CardDAV over an in-memory stream against a
//! real store: the input is what the client sends. See
//! `mxrack_fuzz::dav_session`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mxrack_fuzz::dav_session(data);
});
