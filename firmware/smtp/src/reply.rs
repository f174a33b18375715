//! Every reply the server sends, in one place: code, enhanced status code
//! (RFC 3463, RFC 5248) and text. Sessions never format replies ad hoc; typed
//! errors become replies through `From` impls here.

use crate::incoming::SinkError;
use crate::parser::ParseError;
use mxrack_store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Enhanced status code, sent when ENHANCEDSTATUSCODES is in effect.
    pub enhanced: &'static str,
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, enhanced: &'static str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced,
            text: text.into(),
        }
    }

    /// Appends the wire form. Multi-line texts use the `250-` continuation form.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let lines: Vec<&str> = self.text.split('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            if self.enhanced.is_empty() {
                out.extend_from_slice(format!("{}{}{}\r\n", self.code, sep, line).as_bytes());
            } else {
                out.extend_from_slice(
                    format!("{}{}{} {}\r\n", self.code, sep, self.enhanced, line).as_bytes(),
                );
            }
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    // --- the catalogue ---------------------------------------------------

    pub fn ok() -> Reply {
        Reply::new(250, "2.0.0", "OK")
    }
    pub fn sender_ok() -> Reply {
        Reply::new(250, "2.1.0", "Sender OK")
    }
    pub fn recipient_ok() -> Reply {
        Reply::new(250, "2.1.5", "Recipient OK")
    }
    pub fn queued(id: &str) -> Reply {
        Reply::new(250, "2.0.0", format!("OK: queued as {id}"))
    }
    pub fn start_data() -> Reply {
        Reply::new(354, "", "End data with <CR><LF>.<CR><LF>")
    }
    pub fn bye(host: &str) -> Reply {
        Reply::new(221, "2.0.0", format!("{host} closing connection"))
    }
    pub fn ready_for_tls() -> Reply {
        Reply::new(220, "2.0.0", "Ready to start TLS")
    }
    pub fn auth_ok() -> Reply {
        Reply::new(235, "2.7.0", "Authentication successful")
    }
    pub fn vrfy_disabled() -> Reply {
        Reply::new(502, "5.5.1", "VRFY command is disabled")
    }
    pub fn expn_disabled() -> Reply {
        Reply::new(502, "5.5.1", "EXPN command is disabled")
    }
    pub fn help() -> Reply {
        Reply::new(214, "2.0.0", "See RFC 5321")
    }
    pub fn bad_sequence(why: &str) -> Reply {
        Reply::new(503, "5.5.1", format!("Bad sequence of commands: {why}"))
    }
    pub fn line_too_long() -> Reply {
        Reply::new(500, "5.5.2", "Line too long")
    }
    pub fn too_many_errors() -> Reply {
        Reply::new(421, "4.7.0", "Too many errors, closing connection")
    }
    pub fn too_many_commands() -> Reply {
        Reply::new(
            421,
            "4.7.0",
            "Too many commands in one transaction, closing connection",
        )
    }
    pub fn too_many_connections(host: &str) -> Reply {
        Reply::new(
            421,
            "4.7.0",
            format!("{host} too many connections, try again later"),
        )
    }
    pub fn timeout(host: &str) -> Reply {
        Reply::new(
            421,
            "4.4.2",
            format!("{host} timeout exceeded, closing connection"),
        )
    }
    pub fn shutting_down(host: &str) -> Reply {
        Reply::new(
            421,
            "4.3.2",
            format!("{host} service shutting down, closing connection"),
        )
    }
    pub fn too_many_recipients() -> Reply {
        // RFC 5321 4.5.3.1.10: 452 so the client sends the rest in another transaction.
        Reply::new(452, "4.5.3", "Too many recipients")
    }
    pub fn message_too_big(max: u64) -> Reply {
        Reply::new(
            552,
            "5.3.4",
            format!("Message size exceeds fixed limit of {max} bytes"),
        )
    }
    pub fn insufficient_storage() -> Reply {
        Reply::new(452, "4.3.1", "Insufficient system storage, try again later")
    }
    /// The shared memory budget for client data is spent (issue 10), or
    /// the spam scorer's queue is full: the message is not taken now; the
    /// sender retries later (RFC 5321 4.2.5: 451 to DATA; RFC 3463 4.3.2,
    /// the system is not taking messages now).
    pub fn server_busy() -> Reply {
        Reply::new(451, "4.3.2", "Server busy, try again later")
    }
    pub fn temporary_failure() -> Reply {
        Reply::new(451, "4.3.0", "Local error in processing, try again later")
    }
    pub fn bare_newline() -> Reply {
        // RFC 5321 2.3.8: only CRLF ends a line. Accepting bare LF or CR lets
        // a client smuggle a second message past another server's idea of
        // where DATA ends (SMTP smuggling), so the session is refused.
        Reply::new(
            521,
            "5.5.2",
            "Bare <LF> or <CR> received, closing connection",
        )
    }
    pub fn relay_denied() -> Reply {
        Reply::new(554, "5.7.1", "Relay access denied")
    }
    pub fn unknown_user() -> Reply {
        Reply::new(
            550,
            "5.1.1",
            "Recipient address rejected: no such user here",
        )
    }
    pub fn utf8_needs_smtputf8() -> Reply {
        Reply::new(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
    }
    pub fn auth_required() -> Reply {
        Reply::new(530, "5.7.0", "Authentication required")
    }
    pub fn tls_required() -> Reply {
        Reply::new(530, "5.7.0", "Must issue a STARTTLS command first")
    }
    pub fn auth_failed() -> Reply {
        Reply::new(535, "5.7.8", "Authentication credentials invalid")
    }
    /// The null sender from an authenticated user for anything but a DSN,
    /// MDN or ARF report (`mxrack_filter::report`).
    pub fn null_sender_not_report() -> Reply {
        Reply::new(
            553,
            "5.7.1",
            "The null sender is allowed only for delivery, disposition or feedback reports (multipart/report)",
        )
    }
    /// RFC 4954 6: 454 4.7.0, a temporary authentication failure: a budget
    /// of the appliance's login limiter is spent.
    pub fn auth_rate_limited() -> Reply {
        Reply::new(
            454,
            "4.7.0",
            "Too many authentication attempts, try again later",
        )
    }
    /// 454 4.7.0 as well: the password could not be checked now.
    pub fn auth_unavailable() -> Reply {
        Reply::new(
            454,
            "4.7.0",
            "Temporary authentication failure, try again later",
        )
    }
    pub fn auth_cancelled() -> Reply {
        Reply::new(501, "5.0.0", "Authentication cancelled")
    }
    pub fn auth_mechanism_unknown() -> Reply {
        Reply::new(504, "5.5.4", "Unrecognized authentication mechanism")
    }
    pub fn already_authenticated() -> Reply {
        Reply::new(503, "5.5.1", "Already authenticated")
    }
    pub fn sender_not_owned() -> Reply {
        Reply::new(
            553,
            "5.7.1",
            "Sender address rejected: not owned by the authenticated user",
        )
    }
    pub fn tls_unavailable() -> Reply {
        Reply::new(454, "4.7.0", "TLS not available")
    }
    pub fn foreign_protocol() -> Reply {
        Reply::new(521, "5.7.0", "This is an SMTP server, closing connection")
    }
}

impl From<ParseError> for Reply {
    fn from(e: ParseError) -> Reply {
        match e {
            ParseError::UnknownCommand => Reply::new(500, "5.5.2", "Command unrecognized"),
            ParseError::BadSyntax(why) => Reply::new(501, "5.5.4", format!("Syntax error: {why}")),
            ParseError::UnsupportedParameter(p) => {
                Reply::new(555, "5.5.4", format!("Unsupported parameter {p}"))
            }
        }
    }
}

/// Store failures at delivery: nothing is acknowledged, the client retries.
impl From<&SinkError> for Reply {
    fn from(e: &SinkError) -> Reply {
        match e {
            SinkError::Store(e) => Reply::from(e),
            SinkError::NotScored(_) => Reply::server_busy(),
        }
    }
}

impl From<&StoreError> for Reply {
    fn from(e: &StoreError) -> Reply {
        match e {
            StoreError::NoSpace => Reply::insufficient_storage(),
            // RFC 3463: 4.2.2 mailbox full; 5.2.3 message larger than the mailbox can ever hold.
            StoreError::OverQuota {
                larger_than_quota: true,
                ..
            } => Reply::new(552, "5.2.3", "Message exceeds the mailbox's quota"),
            StoreError::OverQuota { .. } => {
                Reply::new(452, "4.2.2", "Mailbox full, try again later")
            }
            _ => Reply::temporary_failure(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_render_with_enhanced_codes_and_continuations() {
        let mut out = Vec::new();
        Reply::new(250, "", "mx.example\nPIPELINING\nSIZE 10").write_to(&mut out);
        assert_eq!(out, b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
        out.clear();
        Reply::unknown_user().write_to(&mut out);
        assert_eq!(
            out,
            b"550 5.1.1 Recipient address rejected: no such user here\r\n"
        );
    }

    #[test]
    fn a_message_not_scored_now_is_tried_again_later() {
        use mxrack_filter::NotScored;
        for why in [
            NotScored::QueueFull,
            NotScored::TimedOut,
            NotScored::Dropped,
        ] {
            let mut out = Vec::new();
            Reply::from(&SinkError::NotScored(why)).write_to(&mut out);
            assert_eq!(out, b"451 4.3.2 Server busy, try again later\r\n");
        }
        let mut out = Vec::new();
        Reply::from(&SinkError::Store(StoreError::NoSpace)).write_to(&mut out);
        assert!(out.starts_with(b"452 4.3.1 "));
    }
}
