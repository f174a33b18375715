//! Is a message a machine-generated report that may travel with the null
//! sender? The policy for `MAIL FROM:<>` from an authenticated user (issue
//! 11): only a top-level `multipart/report` (RFC 6522) whose `report-type` is
//! a delivery status notification (RFC 3464, `delivery-status`), a message
//! disposition notification (RFC 8098, `disposition-notification`) or an
//! abuse feedback report (RFC 5965, `feedback-report`). Anything else with
//! the null sender would skip the sender-ownership check and could not be
//! bounced, so it is refused.

use mail_parser::{MessageParser, MimeHeaders};

/// The `report-type` values a null sender is allowed for.
pub const NULL_SENDER_REPORT_TYPES: [&str; 3] = [
    "delivery-status",
    "disposition-notification",
    "feedback-report",
];

/// The message's report type when it is one of [`NULL_SENDER_REPORT_TYPES`]
/// (lower case); `None` for anything else. Reads the header only.
pub fn null_sender_report_type(message: &[u8]) -> Option<&'static str> {
    let parsed = MessageParser::default().parse_headers(message)?;
    let ct = parsed.content_type()?;
    if !ct.ctype().eq_ignore_ascii_case("multipart")
        || !ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("report"))
    {
        return None;
    }
    let report_type = ct.attribute("report-type")?;
    NULL_SENDER_REPORT_TYPES
        .into_iter()
        .find(|t| t.eq_ignore_ascii_case(report_type.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dsn_mdn_and_arf_reports() {
        let table: [(&str, Option<&str>); 8] = [
            (
                "Content-Type: multipart/report; report-type=delivery-status;\r\n boundary=\"b\"\r\n\r\n--b--\r\n",
                Some("delivery-status"),
            ),
            (
                "From: a@b\r\nContent-Type: Multipart/Report; report-type=\"disposition-notification\"; boundary=b\r\n\r\n",
                Some("disposition-notification"),
            ),
            (
                "Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n",
                Some("feedback-report"),
            ),
            (
                "Content-Type: multipart/report; report-type=something-else; boundary=b\r\n\r\n",
                None,
            ),
            ("Content-Type: multipart/report; boundary=b\r\n\r\n", None),
            ("Content-Type: multipart/mixed; boundary=b\r\n\r\n", None),
            (
                "Content-Type: text/plain\r\n\r\nreport-type=delivery-status\r\n",
                None,
            ),
            ("Subject: no content type\r\n\r\nhello\r\n", None),
        ];
        for (message, want) in table {
            assert_eq!(
                null_sender_report_type(message.as_bytes()),
                want,
                "{message}"
            );
        }
    }
}
