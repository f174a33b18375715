//! Complaint reports in the Abuse Reporting Format (RFC 5965): a
//! `multipart/report; report-type=feedback-report` with a human part, a
//! `message/feedback-report` part (parsed by mail-auth) and the reported
//! message (`message/rfc822`) or its header section
//! (`text/rfc822-headers`). What we need from it: the feedback type, and
//! the keys that find the forwarded copy it complains about: our trace
//! header, else its Message-ID.

use mail_auth::report::{Feedback, FeedbackType};
use mail_parser::{MimeHeaders, PartType};

use crate::{FilterError, TRACE_HEADER};

/// Most bytes of the reported message's header section kept in a sample.
pub const SAMPLE_HEADERS_BYTES_MAX: usize = 8 * 1024;

/// What a report says, as far as the gate is concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct ArfReport {
    /// RFC 5965 3.5 / RFC 6430 / RFC 6591: abuse, fraud, virus, other,
    /// not-spam, auth-failure.
    pub feedback_type: String,
    pub user_agent: Option<String>,
    pub reporting_mta: Option<String>,
    pub original_rcpt_to: Option<String>,
    /// Unix seconds.
    pub arrival_date: Option<i64>,
    /// Value of our trace header in the reported message.
    pub trace_id: Option<String>,
    /// Message-ID of the reported message, without angle brackets.
    pub message_id: Option<String>,
    /// The reported message's header section (truncated).
    pub headers: String,
}

impl ArfReport {
    /// A complaint about unwanted mail (counted), as opposed to a not-spam
    /// or authentication-failure report (kept as a sample only).
    pub fn is_complaint(&self) -> bool {
        matches!(
            self.feedback_type.as_str(),
            "abuse" | "fraud" | "virus" | "other"
        )
    }
}

fn feedback_type_name(t: FeedbackType) -> &'static str {
    match t {
        FeedbackType::Abuse => "abuse",
        FeedbackType::AuthFailure => "auth-failure",
        FeedbackType::Fraud => "fraud",
        FeedbackType::NotSpam => "not-spam",
        FeedbackType::Other => "other",
        FeedbackType::Virus => "virus",
    }
}

/// Normalises a Message-ID for matching: trimmed, without `<` `>`.
pub fn normalize_message_id(raw: &str) -> Option<String> {
    let id = raw
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    (!id.is_empty() && id.len() <= 998).then(|| id.to_string())
}

/// The header section of a message (up to the first empty line).
fn header_section(message: &str) -> &str {
    let end = message
        .find("\r\n\r\n")
        .into_iter()
        .chain(message.find("\n\n"))
        .min()
        .unwrap_or(message.len());
    &message[..end]
}

/// The unfolded value of the first header `name` in a header section.
pub fn find_header(headers: &str, name: &str) -> Option<String> {
    let mut value: Option<String> = None;
    for line in headers.split('\n') {
        let line = line.trim_end_matches('\r');
        if let Some(v) = value.as_mut() {
            if line.starts_with([' ', '\t']) {
                v.push(' ');
                v.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some((n, v)) = line.split_once(':')
            && n.trim_end().eq_ignore_ascii_case(name)
        {
            value = Some(v.trim().to_string());
        }
    }
    value.map(|v| v.trim().to_string())
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The text of the report's `text/rfc822-headers` part, if any.
fn headers_part(report: &[u8]) -> Option<String> {
    let message = mxrack_mime::parse(report)?;
    message.parts.iter().find_map(|part| match &part.body {
        PartType::Text(text) if part.is_content_type("text", "rfc822-headers") => {
            Some(text.to_string())
        }
        _ => None,
    })
}

/// Parses an ARF report. Refuses a message that is not one.
pub fn parse(report: &[u8]) -> Result<ArfReport, FilterError> {
    // mail-auth parses the report with mail-parser itself (recursing into an
    // encoded message/rfc822 part): a report is a shallow message, so one
    // that the bounded walk would have to cut or make opaque is not one.
    let scan = mxrack_mime::scan(report);
    if scan.limited || !scan.masks.is_empty() {
        return Err(FilterError::NotArf("MIME structure over the limits".into()));
    }
    let feedback =
        Feedback::parse_rfc5322(report).map_err(|e| FilterError::NotArf(format!("{e:?}")))?;
    // mail-auth 0.7's `Feedback::headers()` returns the message slot, so a
    // report with `text/rfc822-headers` (no whole message) is read here.
    let rfc822_headers;
    let reported = match feedback.message() {
        Some(m) => m,
        None => {
            rfc822_headers = headers_part(report).unwrap_or_default();
            rfc822_headers.as_str()
        }
    };
    let headers = header_section(reported);
    let trace_id = find_header(headers, TRACE_HEADER)
        .and_then(|v| v.split_whitespace().next().map(str::to_ascii_lowercase));
    let message_id = find_header(headers, "Message-ID").and_then(|v| normalize_message_id(&v));
    Ok(ArfReport {
        feedback_type: feedback_type_name(feedback.feedback_type()).to_string(),
        user_agent: feedback.user_agent().map(str::to_string),
        reporting_mta: feedback.reporting_mta().map(str::to_string),
        original_rcpt_to: feedback.original_rcpt_to().map(str::to_string),
        arrival_date: feedback.arrival_date(),
        trace_id,
        message_id,
        headers: truncate(headers, SAMPLE_HEADERS_BYTES_MAX),
    })
}

/// Test material: RFC 5965 Appendix B.2's complete example, with the
/// reported message's headers replaced by `reported_headers` and the
/// feedback type by `feedback_type`.
#[cfg(test)]
pub(crate) fn sample_report(feedback_type: &str, reported_headers: &str) -> Vec<u8> {
    let head = r#"From: <abusedesk@example.com>
Date: Thu, 8 Mar 2005 17:40:36 EDT
Subject: FW: Earn money
To: <abuse@example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
     boundary="part1_13d.2e68ed54_boundary"

--part1_13d.2e68ed54_boundary
Content-Type: text/plain; charset="US-ASCII"
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP
192.0.2.1 on Thu, 8 Mar 2005 14:00:00 EDT.  For more information
about this format please see http://www.mipassoc.org/arf/.

--part1_13d.2e68ed54_boundary
Content-Type: message/feedback-report

Feedback-Type: FEEDBACK_TYPE
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <somespammer@example.net>
Original-Rcpt-To: <user@example.com>
Arrival-Date: Thu, 8 Mar 2005 14:00:00 EDT
Reporting-MTA: dns; mail.example.com
Source-IP: 192.0.2.1
Authentication-Results: mail.example.com;
               spf=fail smtp.mail=somespammer@example.com
Reported-Domain: example.net
Reported-Uri: http://example.net/earn_money.html
Reported-Uri: mailto:user@example.com
Removal-Recipient: user@example.com

--part1_13d.2e68ed54_boundary
Content-Type: message/rfc822
Content-Disposition: inline

"#;
    let tail = "\nSpam Spam Spam\nSpam Spam Spam\n--part1_13d.2e68ed54_boundary--\n";
    let text = format!(
        "{}{}{tail}",
        head.replace("FEEDBACK_TYPE", feedback_type),
        reported_headers
    );
    text.replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORTED: &str = "From: <somespammer@example.net>
Received: from mailserver.example.net (mailserver.example.net
        [192.0.2.1]) by example.com with ESMTP id M63d4137594e46;
        Thu, 08 Mar 2005 14:00:00 -0400
To: <Undisclosed Recipients>
Subject: Earn money
MIME-Version: 1.0
Content-type: text/plain
X-Mxrack-Forward-Id: 00062A1B2C3D4E5F
Message-ID: 8787KJKJ3K4J3K4J3K4J3.mail@example.net
Date: Thu, 02 Sep 2004 12:31:03 -0500
";

    #[test]
    fn parses_the_rfc5965_example() {
        let r = parse(&sample_report("abuse", REPORTED)).expect("ARF");
        assert_eq!(r.feedback_type, "abuse");
        assert!(r.is_complaint());
        assert_eq!(r.user_agent.as_deref(), Some("SomeGenerator/1.0"));
        assert_eq!(r.original_rcpt_to.as_deref(), Some("<user@example.com>"));
        assert_eq!(r.reporting_mta.as_deref(), Some("mail.example.com"));
        assert!(r.arrival_date.is_some());
        assert_eq!(r.trace_id.as_deref(), Some("00062a1b2c3d4e5f"));
        assert_eq!(
            r.message_id.as_deref(),
            Some("8787KJKJ3K4J3K4J3K4J3.mail@example.net")
        );
        assert!(r.headers.starts_with("From: <somespammer@example.net>"));
        assert!(r.headers.contains("Subject: Earn money"));
        assert!(!r.headers.contains("Spam Spam"));
    }

    #[test]
    fn feedback_types_and_headers_only_reports() {
        let r = parse(&sample_report("not-spam", REPORTED)).expect("ARF");
        assert_eq!(r.feedback_type, "not-spam");
        assert!(!r.is_complaint());
        // text/rfc822-headers instead of the whole message.
        let headers_only = String::from_utf8(sample_report("fraud", REPORTED))
            .expect("utf8")
            .replace(
                "Content-Type: message/rfc822\r\nContent-Disposition: inline",
                "Content-Type: text/rfc822-headers",
            );
        let r = parse(headers_only.as_bytes()).expect("ARF");
        assert_eq!(r.feedback_type, "fraud");
        assert_eq!(r.trace_id.as_deref(), Some("00062a1b2c3d4e5f"));
    }

    #[test]
    fn not_a_report() {
        let e = parse(b"From: a@b\r\nSubject: hi\r\n\r\nhello\r\n").expect_err("not ARF");
        assert!(matches!(e, FilterError::NotArf(_)), "{e:?}");
    }

    #[test]
    fn header_helpers() {
        let h = "A: 1\r\nMessage-ID:\r\n <x@y>\r\nB: 2\r\n";
        assert_eq!(find_header(h, "message-id").as_deref(), Some("<x@y>"));
        assert_eq!(find_header(h, "b").as_deref(), Some("2"));
        assert_eq!(find_header(h, "c"), None);
        assert_eq!(normalize_message_id(" <x@y> ").as_deref(), Some("x@y"));
        assert_eq!(normalize_message_id("<>"), None);
    }
}
