//! Everything the server sends, in one place: the status lines (`+OK` and
//! `-ERR` with RFC 2449 response codes), the framing of multi-line
//! responses (byte-stuffing, RFC 1939 3) and the cut of a message for TOP.
//! Sessions never format a status line ad hoc.

use crate::parser::ParseError;

/// An extended response code (RFC 2449 8, RFC 3206), sent in brackets
/// right after `-ERR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The maildrop is locked by another POP3 session (RFC 2449 8.1.2).
    InUse,
    /// The credentials are wrong or refused by policy (RFC 3206 4).
    Auth,
    /// A passing problem on the server's side (RFC 3206 5).
    SysTemp,
}

impl Code {
    fn text(self) -> &'static str {
        match self {
            Code::InUse => "IN-USE",
            Code::Auth => "AUTH",
            Code::SysTemp => "SYS/TEMP",
        }
    }
}

/// One status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub ok: bool,
    pub code: Option<Code>,
    pub text: String,
}

impl Reply {
    pub fn ok(text: impl Into<String>) -> Reply {
        Reply {
            ok: true,
            code: None,
            text: text.into(),
        }
    }

    pub fn err(text: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            code: None,
            text: text.into(),
        }
    }

    pub fn err_code(code: Code, text: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            code: Some(code),
            text: text.into(),
        }
    }

    /// Appends the wire form: `+OK text` or `-ERR [CODE] text`, then CRLF.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.ok { b"+OK" } else { b"-ERR" });
        if let Some(code) = self.code {
            out.extend_from_slice(b" [");
            out.extend_from_slice(code.text().as_bytes());
            out.push(b']');
        }
        if !self.text.is_empty() {
            out.push(b' ');
            // A status line is one line, whatever the text holds.
            out.extend(
                self.text
                    .bytes()
                    .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
            );
        }
        out.extend_from_slice(b"\r\n");
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() + 16);
        self.write_to(&mut out);
        out
    }

    // --- the catalogue ---------------------------------------------------

    pub fn greeting(host: &str) -> Reply {
        Reply::ok(format!("{host} POP3 mxrack ready"))
    }
    pub fn capabilities_follow() -> Reply {
        Reply::ok("Capability list follows")
    }
    pub fn begin_tls() -> Reply {
        Reply::ok("Begin TLS negotiation")
    }
    pub fn user_accepted() -> Reply {
        Reply::ok("send PASS")
    }
    pub fn mechanisms_follow() -> Reply {
        Reply::ok("SASL mechanisms follow")
    }
    pub fn maildrop(messages: usize, octets: u64) -> Reply {
        Reply::ok(format!(
            "maildrop has {messages} messages ({octets} octets)"
        ))
    }
    pub fn stat(messages: usize, octets: u64) -> Reply {
        Reply::ok(format!("{messages} {octets}"))
    }
    pub fn scan_listing_follows(messages: usize, octets: u64) -> Reply {
        Reply::ok(format!("{messages} messages ({octets} octets)"))
    }
    pub fn scan_listing(msg: usize, octets: u64) -> Reply {
        Reply::ok(format!("{msg} {octets}"))
    }
    pub fn unique_ids_follow() -> Reply {
        Reply::ok("unique-id listing follows")
    }
    pub fn unique_id(msg: usize, uid: &str) -> Reply {
        Reply::ok(format!("{msg} {uid}"))
    }
    pub fn message_follows(octets: u64) -> Reply {
        Reply::ok(format!("{octets} octets"))
    }
    pub fn top_follows() -> Reply {
        Reply::ok("top of message follows")
    }
    pub fn deleted(msg: usize) -> Reply {
        Reply::ok(format!("message {msg} deleted"))
    }
    pub fn noop() -> Reply {
        Reply::ok("")
    }
    pub fn bye(host: &str) -> Reply {
        Reply::ok(format!("{host} POP3 server signing off"))
    }
    pub fn bye_after_update(host: &str, left: usize) -> Reply {
        if left == 0 {
            Reply::ok(format!("{host} POP3 server signing off (maildrop empty)"))
        } else {
            Reply::ok(format!(
                "{host} POP3 server signing off ({left} messages left)"
            ))
        }
    }

    pub fn no_such_message() -> Reply {
        Reply::err("no such message")
    }
    pub fn already_deleted(msg: usize) -> Reply {
        Reply::err(format!("message {msg} already deleted"))
    }
    pub fn message_gone() -> Reply {
        Reply::err("message was removed by another session")
    }
    pub fn wrong_state(why: &str) -> Reply {
        Reply::err(format!("command not valid now: {why}"))
    }
    pub fn line_too_long() -> Reply {
        Reply::err("line too long")
    }
    pub fn too_many_bad_commands() -> Reply {
        Reply::err("too many bad commands, closing connection")
    }
    pub fn tls_required() -> Reply {
        // RFC 2595 4 and invariant 4: credentials only inside TLS.
        Reply::err_code(Code::Auth, "credentials only inside TLS: use STLS first")
    }
    pub fn tls_unavailable() -> Reply {
        Reply::err("TLS not available")
    }
    pub fn tls_active() -> Reply {
        Reply::err("TLS already active")
    }
    pub fn auth_failed() -> Reply {
        Reply::err_code(Code::Auth, "invalid user name or password")
    }
    /// RFC 3206 SYS/TEMP: a budget of the login limiter is spent.
    pub fn auth_rate_limited() -> Reply {
        Reply::err_code(Code::SysTemp, "too many login attempts, try again later")
    }
    /// RFC 3206 SYS/TEMP: the shared memory budget for client data is spent
    /// (issue 10); the client retries later.
    pub fn memory_busy() -> Reply {
        Reply::err_code(Code::SysTemp, "server busy, try again later")
    }
    pub fn auth_unavailable() -> Reply {
        Reply::err_code(Code::SysTemp, "temporary authentication failure")
    }
    pub fn auth_cancelled() -> Reply {
        Reply::err("authentication cancelled")
    }
    pub fn auth_malformed() -> Reply {
        Reply::err("cannot decode the AUTH response")
    }
    pub fn mechanism_unknown() -> Reply {
        Reply::err("unsupported SASL mechanism, use PLAIN")
    }
    pub fn in_use() -> Reply {
        Reply::err_code(
            Code::InUse,
            "maildrop is in use by another POP3 session, try again later",
        )
    }
    pub fn maildrop_unavailable() -> Reply {
        Reply::err_code(Code::SysTemp, "cannot open the maildrop, try again later")
    }
    pub fn update_failed() -> Reply {
        Reply::err_code(
            Code::SysTemp,
            "deleted messages were not removed, try again later",
        )
    }
    pub fn read_failed() -> Reply {
        Reply::err_code(Code::SysTemp, "cannot read the message, try again later")
    }
    pub fn too_many_connections() -> Reply {
        Reply::err_code(Code::SysTemp, "too many connections, try again later")
    }
    pub fn shutting_down() -> Reply {
        Reply::err_code(Code::SysTemp, "server shutting down")
    }
}

impl From<ParseError> for Reply {
    fn from(e: ParseError) -> Reply {
        match e {
            ParseError::UnknownCommand => Reply::err("unknown command"),
            ParseError::BadSyntax(why) => Reply::err(format!("syntax error: {why}")),
        }
    }
}

/// Byte-stuffing of a multi-line response body (RFC 1939 3): every line
/// that begins with "." gets another "." in front. The body can be pushed
/// in pieces of any size (a large message goes out in chunks).
///
/// A line begins at the start of the body and after every LF, bare or
/// not, so a stored message with a bare LF cannot end the response early
/// for a client that splits lines on LF.
#[derive(Debug)]
pub struct DotStuffer {
    at_line_start: bool,
    /// The last two body bytes pushed, to know whether it ended with CRLF.
    tail: [u8; 2],
    empty: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer::new()
    }
}

impl DotStuffer {
    pub fn new() -> DotStuffer {
        DotStuffer {
            at_line_start: true,
            tail: [0, 0],
            empty: true,
        }
    }

    pub fn push(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        out.reserve(bytes.len() + 16);
        for &b in bytes {
            if self.at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            self.at_line_start = b == b'\n';
        }
        match bytes {
            [] => {}
            [one] => self.tail = [self.tail[1], *one],
            [.., a, b] => self.tail = [*a, *b],
        }
        if !bytes.is_empty() {
            self.empty = false;
        }
    }

    /// Ends the response: ".\r\n" on a line of its own, adding the CRLF
    /// first when the body did not end with one.
    pub fn finish(self, out: &mut Vec<u8>) {
        if !self.empty && self.tail != *b"\r\n" {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// A whole multi-line response body made of short text lines (CAPA, LIST,
/// UIDL), stuffed and terminated.
pub fn write_multiline<S: AsRef<str>>(out: &mut Vec<u8>, lines: &[S]) {
    let mut stuffer = DotStuffer::new();
    for line in lines {
        stuffer.push(out, line.as_ref().as_bytes());
        stuffer.push(out, b"\r\n");
    }
    stuffer.finish(out);
}

/// What TOP sends of a message (RFC 1939 7): the header, the blank line
/// that ends it, then at most `body_lines` lines of the body. A message
/// without a blank line is all header.
pub fn message_top(message: &[u8], body_lines: u64) -> &[u8] {
    let mut pos = 0;
    let mut in_header = true;
    let mut left = body_lines;
    while pos < message.len() {
        if !in_header && left == 0 {
            break;
        }
        let end = message[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |i| pos + i + 1);
        let line = &message[pos..end];
        if in_header {
            if line == b"\r\n" || line == b"\n" {
                in_header = false;
            }
        } else {
            left -= 1;
        }
        pos = end;
    }
    &message[..pos]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_render_with_response_codes() {
        let table = [
            (Reply::ok("2 320"), "+OK 2 320\r\n"),
            (Reply::noop(), "+OK\r\n"),
            (Reply::err("no such message"), "-ERR no such message\r\n"),
            (
                Reply::in_use(),
                "-ERR [IN-USE] maildrop is in use by another POP3 session, try again later\r\n",
            ),
            (
                Reply::shutting_down(),
                "-ERR [SYS/TEMP] server shutting down\r\n",
            ),
            (
                Reply::auth_failed(),
                "-ERR [AUTH] invalid user name or password\r\n",
            ),
            (Reply::err("a\r\nb"), "-ERR a  b\r\n"),
        ];
        for (reply, wire) in table {
            assert_eq!(String::from_utf8(reply.to_bytes()).expect("ascii"), wire);
        }
    }

    fn stuffed(pieces: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = DotStuffer::new();
        for p in pieces {
            s.push(&mut out, p);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn bodies_are_dot_stuffed_and_terminated() {
        let table: [(&[&[u8]], &[u8]); 8] = [
            (&[b""], b".\r\n"),
            (&[b"a\r\n"], b"a\r\n.\r\n"),
            (&[b".\r\n"], b"..\r\n.\r\n"),
            (
                &[b"S: x\r\n\r\n.lead\r\n..two\r\nmid.dle\r\n.\r\n"],
                b"S: x\r\n\r\n..lead\r\n...two\r\nmid.dle\r\n..\r\n.\r\n",
            ),
            // Pieces split anywhere give the same bytes.
            (&[b"a\r", b"\n", b".", b"b\r\n"], b"a\r\n..b\r\n.\r\n"),
            // No final CRLF: one is added before the terminator.
            (&[b"a\r\nno end"], b"a\r\nno end\r\n.\r\n"),
            (&[b"a\n"], b"a\n\r\n.\r\n"),
            // A bare LF starts a line too.
            (&[b"a\n.b\r\n"], b"a\n..b\r\n.\r\n"),
        ];
        for (pieces, want) in table {
            assert_eq!(
                stuffed(pieces),
                want,
                "{:?}",
                pieces
                    .iter()
                    .map(|p| String::from_utf8_lossy(p))
                    .collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn multiline_text_responses_end_with_a_dot_line() {
        let mut out = Vec::new();
        write_multiline(&mut out, &["TOP", "UIDL", ".odd"]);
        assert_eq!(out, b"TOP\r\nUIDL\r\n..odd\r\n.\r\n");
        out.clear();
        write_multiline::<&str>(&mut out, &[]);
        assert_eq!(out, b".\r\n");
    }

    #[test]
    fn top_cuts_after_the_header_and_n_body_lines() {
        let msg: &[u8] = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n";
        let table: [(&[u8], u64, &[u8]); 7] = [
            (msg, 0, b"A: 1\r\nB: 2\r\n\r\n"),
            (msg, 1, b"A: 1\r\nB: 2\r\n\r\nl1\r\n"),
            (msg, 3, msg),
            (msg, u64::MAX, msg),
            (b"A: 1\r\nB: 2\r\n", 5, b"A: 1\r\nB: 2\r\n"),
            (
                b"A: 1\r\n\r\nno final crlf",
                1,
                b"A: 1\r\n\r\nno final crlf",
            ),
            (b"", 3, b""),
        ];
        for (message, n, want) in table {
            assert_eq!(
                message_top(message, n),
                want,
                "{} with {n}",
                String::from_utf8_lossy(message)
            );
        }
    }
}
