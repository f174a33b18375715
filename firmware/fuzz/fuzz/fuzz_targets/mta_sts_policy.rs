#![no_main]
//! A policy host's answer through the MTA-STS parsers (HTTP response,
//! policy, MX patterns, TXT record). See `mxrack_fuzz::mta_sts_policy`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mxrack_fuzz::mta_sts_policy(data);
});
