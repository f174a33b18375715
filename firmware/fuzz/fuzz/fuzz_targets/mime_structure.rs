#![no_main]
//! One message through the bounded MIME walk, IMAP FETCH and SEARCH
//! rendering and the spam scorer. See `mxrack_fuzz::mime_structure`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mxrack_fuzz::mime_structure(data);
});
