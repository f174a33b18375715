//! NUL bytes in message text sent as a literal. RFC 3501 4.3 forbids NUL
//! in a literal (only BINARY's literal8 may carry one, RFC 3516); a client
//! may cut the message there (NeoMutt does). As Dovecot does for every
//! non-BINARY fetch, each NUL is sent as 0x80: one byte for one byte, so
//! RFC822.SIZE, the literal's length and partial fetches stay as they are.
//! BINARY fetches must not call this.

use std::borrow::Cow;

/// `bytes` with each NUL replaced by 0x80 (borrowed when there is none).
pub fn literal_safe(bytes: &[u8]) -> Cow<'_, [u8]> {
    if !bytes.contains(&0) {
        return Cow::Borrowed(bytes);
    }
    Cow::Owned(
        bytes
            .iter()
            .map(|&b| if b == 0 { 0x80 } else { b })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nuls_become_0x80_and_the_length_stays() {
        assert!(matches!(literal_safe(b"plain"), Cow::Borrowed(_)));
        let out = literal_safe(b"a\0b\0\0");
        assert_eq!(&*out, b"a\x80b\x80\x80");
    }
}
