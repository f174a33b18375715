#![no_main]
//! Whatever the bytes, the parser returns a request or an error: no panic,
//! no unbounded recursion, and a literal announcement is read consistently.

use libfuzzer_sys::fuzz_target;
use mxrack_imap::parser::{literal_announced, parse_request};

fuzz_target!(|data: &[u8]| {
    let _ = parse_request(data);
    let _ = literal_announced(data);
});
