//! SASL PLAIN (RFC 4616) and LOGIN decoding, shared by SMTP AUTH (RFC 4954),
//! POP3 AUTH (RFC 5034) and IMAP AUTHENTICATE (RFC 3501 6.2.2). Pure.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

#[derive(PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// The password never reaches a log line through `{:?}`.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum SaslError {
    /// The client sent "*" (RFC 4954 4).
    Cancelled,
    /// Not base64, not UTF-8, or not the mechanism's shape.
    Malformed,
}

pub fn decode_base64(text: &str) -> Result<Vec<u8>, SaslError> {
    let text = text.trim();
    if text == "*" {
        return Err(SaslError::Cancelled);
    }
    // RFC 4954 4: "=" stands for an empty initial response.
    if text == "=" {
        return Ok(Vec::new());
    }
    STANDARD.decode(text).map_err(|_| SaslError::Malformed)
}

pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// One PLAIN response as sent on the wire (base64 text, or "*" to cancel).
pub fn decode_plain_response(response: &str) -> Result<Credentials, SaslError> {
    decode_base64(response).and_then(|m| decode_plain(&m))
}

/// `[authzid] NUL authcid NUL passwd`. An authzid other than the authcid is
/// refused: this server does not let one user act as another.
pub fn decode_plain(message: &[u8]) -> Result<Credentials, SaslError> {
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

    #[test]
    fn plain_messages_decode() {
        let c = decode_plain(b"\0demo@example.net\0secret").unwrap();
        assert_eq!(c.username, "demo@example.net");
        assert_eq!(c.password, "secret");
        assert!(decode_plain(b"demo@example.net\0demo@example.net\0s").is_ok());
        assert_eq!(decode_plain(b"other\0demo\0s"), Err(SaslError::Malformed));
        assert_eq!(decode_plain(b"\0demo"), Err(SaslError::Malformed));
        assert_eq!(decode_plain(b"\0\0pw"), Err(SaslError::Malformed));
    }

    #[test]
    fn base64_cancel_and_empty() {
        assert_eq!(decode_base64("*"), Err(SaslError::Cancelled));
        assert_eq!(decode_base64("="), Ok(vec![]));
        assert_eq!(decode_base64("!!"), Err(SaslError::Malformed));
        assert_eq!(decode_base64("AGRlbW8AcHc="), Ok(b"\0demo\0pw".to_vec()));
    }
}
