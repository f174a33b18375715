#![no_main]
//! One message scored with SpamAssassin's rule files joined with mxrack's
//! own rules, from a client whose HELO is the input's first line. See
//! `mxrack_fuzz::spam_rules`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mxrack_fuzz::spam_rules(data);
});
