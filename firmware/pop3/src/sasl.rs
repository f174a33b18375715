//! SASL PLAIN (RFC 4616) decoding for POP3 AUTH (RFC 5034). Pure.

pub use mxrack_net::sasl::{Credentials, SaslError};

/// Decodes one PLAIN client response (base64 text, as on the wire).
/// An authzid other than the authcid is refused: this server does not let
/// one user act as another. (RFC 5034 4: "=" is an empty initial response,
/// which PLAIN cannot use: it is refused as malformed.)
pub fn decode_plain(response: &str) -> Result<Credentials, SaslError> {
    mxrack_net::sasl::decode_plain_response(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    fn b64(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    #[test]
    fn plain_responses_decode() {
        let c = decode_plain(&b64(b"\0jo@example.net\0s3cret pw")).expect("valid");
        assert_eq!(c.username, "jo@example.net");
        assert_eq!(c.password, "s3cret pw");
        assert!(decode_plain(&b64(b"jo@example.net\0JO@example.net\0x")).is_ok());
    }

    #[test]
    fn bad_responses_are_refused() {
        let table: [(String, SaslError); 8] = [
            ("*".into(), SaslError::Cancelled),
            (" * ".into(), SaslError::Cancelled),
            ("=".into(), SaslError::Malformed),
            ("!!not base64".into(), SaslError::Malformed),
            (
                b64(b"other@example.net\0jo@example.net\0pw"),
                SaslError::Malformed,
            ),
            (b64(b"\0jo@example.net"), SaslError::Malformed),
            (b64(b"\0\0pw"), SaslError::Malformed),
            (b64(b"\0jo\xff\0pw"), SaslError::Malformed),
        ];
        for (response, want) in table {
            assert_eq!(decode_plain(&response).err(), Some(want), "{response:?}");
        }
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let c = decode_plain(&b64(b"\0jo\0hunter2")).expect("valid");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
