//! SASL PLAIN (RFC 4616) decoding for POP3 AUTH (RFC 5034). Pure.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

#[derive(PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum SaslError {
    /// The client sent "*" (RFC 5034 4: the server MUST reject the AUTH).
    Cancelled,
    /// Not base64, not UTF-8, or not `[authzid] NUL authcid NUL passwd`.
    Malformed,
}

/// Decodes one PLAIN client response (base64 text, as on the wire).
/// An authzid other than the authcid is refused: this server does not let
/// one user act as another.
pub fn decode_plain(response: &str) -> Result<Credentials, SaslError> {
    let response = response.trim();
    if response == "*" {
        return Err(SaslError::Cancelled);
    }
    // RFC 5034 4: "=" is an empty initial response, which PLAIN cannot use.
    let message = STANDARD
        .decode(response)
        .map_err(|_| SaslError::Malformed)?;
    let mut parts = message.split(|&b| b == 0);
    let (authz, user, pass) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(u), Some(p), None) => (a, u, p),
        _ => return Err(SaslError::Malformed),
    };
    let utf8 = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| SaslError::Malformed);
    let (authz, username, password) = (utf8(authz)?, utf8(user)?, utf8(pass)?);
    if username.is_empty() || (!authz.is_empty() && !authz.eq_ignore_ascii_case(&username)) {
        return Err(SaslError::Malformed);
    }
    Ok(Credentials { username, password })
}

#[cfg(test)]
mod tests {
    use super::*;

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
