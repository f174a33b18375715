//! Delivery status notifications (RFC 3464 in a multipart/report, RFC 6522)
//! for mail that cannot be delivered. Pure: the queue runner stores and
//! sends what this builds.

use base64::Engine;

/// Original headers quoted in a DSN are cut at this size.
const QUOTED_HEADERS_BYTES_MAX: usize = 64 * 1024;

pub struct Failure {
    pub recipient: String,
    /// The server that refused, for Remote-MTA (RFC 3464 2.3.5).
    pub remote: Option<String>,
    /// The remote server's reply or our reason, as one line.
    pub diagnostic: String,
    /// An enhanced status code such as "5.1.1".
    pub status: String,
}

/// Splits a relay reason such as "192.0.2.1:25 said 550 5.1.1 No such user"
/// into the remote server and the server's own reply, the Diagnostic-Code
/// (RFC 3464 2.3.6). A reason with no reply (a timeout) is kept whole.
pub fn split_reason(reason: &str) -> (Option<String>, String) {
    let remote = reason
        .split_whitespace()
        .next()
        .filter(|w| w.parse::<std::net::SocketAddr>().is_ok())
        .map(|w| w.trim_end_matches(':').to_string());
    let bytes = reason.as_bytes();
    for i in 0..bytes.len().saturating_sub(3) {
        let at_word = i == 0 || bytes[i - 1] == b' ';
        if at_word
            && matches!(bytes[i], b'2'..=b'5')
            && bytes[i + 1].is_ascii_digit()
            && bytes[i + 2].is_ascii_digit()
            && bytes.get(i + 3).is_none_or(|&b| b == b' ' || b == b'-')
            && (i == 0 || remote.is_some())
        {
            return (remote, reason[i..].to_string());
        }
    }
    (remote, reason.to_string())
}

/// The enhanced status code in a reply text ("550 5.1.1 No such user"), or
/// a generic one.
pub fn status_of(diagnostic: &str, permanent: bool) -> String {
    for word in diagnostic.split_whitespace() {
        let parts: Vec<&str> = word.split('.').collect();
        if parts.len() == 3
            && matches!(parts[0], "4" | "5")
            && parts[1..]
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        {
            return if permanent && parts[0] == "4" {
                format!("5.{}.{}", parts[1], parts[2])
            } else {
                word.to_string()
            };
        }
    }
    if permanent {
        "5.0.0".into()
    } else {
        "4.0.0".into()
    }
}

fn header_block(original: &[u8]) -> &[u8] {
    let end = original
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 2)
        .unwrap_or(original.len());
    &original[..end.min(QUOTED_HEADERS_BYTES_MAX)]
}

/// Builds the DSN message to `to` (the original envelope sender).
pub fn build(
    reporting_host: &str,
    to: &str,
    failures: &[Failure],
    original: &[u8],
    date: &str,
    unique: &str,
) -> Vec<u8> {
    let boundary = format!("{unique}/{reporting_host}");
    let mut out = String::new();
    out.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{reporting_host}>\r\n"
    ));
    out.push_str(&format!("To: <{to}>\r\n"));
    out.push_str("Subject: Undelivered Mail Returned to Sender\r\n");
    out.push_str(&format!("Date: {date}\r\n"));
    out.push_str(&format!("Message-ID: <{unique}@{reporting_host}>\r\n"));
    // RFC 3834: an automatic reply; nothing should answer it.
    out.push_str("Auto-Submitted: auto-replied\r\n");
    out.push_str("MIME-Version: 1.0\r\n");
    out.push_str(&format!("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"));
    out.push_str("This is a MIME-encapsulated message.\r\n\r\n");
    out.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ));
    out.push_str(&format!(
        "This is the mail system at host {reporting_host}.\r\n\r\n"
    ));
    out.push_str("I'm sorry to have to inform you that your message could not\r\nbe delivered to one or more recipients.\r\n\r\n");
    for f in failures {
        out.push_str(&format!(
            "<{}>: {}\r\n",
            f.recipient,
            f.diagnostic.replace(['\r', '\n'], " ")
        ));
    }
    out.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
    ));
    out.push_str(&format!(
        "Reporting-MTA: dns; {reporting_host}\r\nArrival-Date: {date}\r\n"
    ));
    for f in failures {
        out.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {}\r\n",
            f.recipient, f.status
        ));
        if let Some(remote) = &f.remote {
            out.push_str(&format!("Remote-MTA: dns; {remote}\r\n"));
        }
        out.push_str(&format!(
            "Diagnostic-Code: smtp; {}\r\n",
            f.diagnostic.replace(['\r', '\n'], " ")
        ));
    }
    out.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n"
    ));
    let headers = header_block(original);
    let mut bytes = out.into_bytes();
    if headers.is_ascii() {
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(headers);
    } else {
        // 8-bit headers (SMTPUTF8 mail) go base64-encoded so the DSN itself stays 7-bit.
        bytes.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n\r\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(headers);
        for chunk in b64.as_bytes().chunks(76) {
            bytes.extend_from_slice(chunk);
            bytes.extend_from_slice(b"\r\n");
        }
    }
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_split_into_server_and_reply() {
        assert_eq!(
            split_reason("127.0.0.1:2626 said 550 5.1.1 no such user"),
            (
                Some("127.0.0.1:2626".into()),
                "550 5.1.1 no such user".into()
            )
        );
        assert_eq!(
            split_reason("192.0.2.1:25 refused MAIL FROM: 553 5.7.1 no"),
            (Some("192.0.2.1:25".into()), "553 5.7.1 no".into())
        );
        assert_eq!(
            split_reason("domain x.example does not exist"),
            (None, "domain x.example does not exist".into())
        );
    }

    #[test]
    fn status_codes_come_from_the_reply() {
        assert_eq!(
            status_of("mx.example said 550 5.1.1 No such user", true),
            "5.1.1"
        );
        assert_eq!(status_of("451 4.7.1 greylisted", true), "5.7.1");
        assert_eq!(status_of("connection refused", true), "5.0.0");
        assert_eq!(status_of("connection refused", false), "4.0.0");
    }

    #[test]
    fn a_dsn_has_the_three_parts() {
        let original = b"From: a@example.net\r\nSubject: hi\r\n\r\nbody\r\n";
        let f = Failure {
            recipient: "x@dest.example".into(),
            remote: Some("192.0.2.25:25".into()),
            diagnostic: "550 5.1.1 no such user".into(),
            status: "5.1.1".into(),
        };
        let dsn = String::from_utf8(build(
            "mx.example.net",
            "a@example.net",
            &[f],
            original,
            "Mon, 8 Jan 2007 17:46:00 +0000",
            "q1",
        ))
        .unwrap();
        assert!(dsn.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(dsn.contains(
            "Final-Recipient: rfc822; x@dest.example\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; 192.0.2.25:25\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n"
        ));
        assert!(dsn.contains(
            "Content-Type: text/rfc822-headers\r\n\r\nFrom: a@example.net\r\nSubject: hi\r\n"
        ));
        assert!(!dsn.contains("body\r\n"), "the body is not returned");
        let parsed_parts = dsn.matches("--q1/mx.example.net").count();
        assert_eq!(parsed_parts, 4);
    }
}
