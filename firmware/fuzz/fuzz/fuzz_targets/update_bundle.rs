#![no_main]
//! One update bundle through the header, signature and image checks, the
//! `.osrel` reader and the boot entry names. See `mxrack_fuzz::update_bundle`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mxrack_fuzz::update_bundle(data);
});
