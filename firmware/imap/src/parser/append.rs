//! The APPEND command after its mailbox, one token at a time (RFC 3501
//! 6.3.11, MULTIAPPEND RFC 3502 6.3.11, CATENATE RFC 4469 5, literal8 RFC
//! 3516 4.2). Pure. An APPEND is not parsed whole: its messages are
//! literals the session streams to the store, so the session feeds this
//! lexer one wire line at a time (the line up to a literal announcement, or
//! the end of the command), reads each announced literal itself, and goes
//! on with the next line.
//!
//! ```text
//! append         = "APPEND" SP mailbox 1*append-message
//! append-message = [SP flag-list] [SP date-time] SP append-data
//! append-data    = literal / literal8 / "CATENATE" SP "(" cat-part *(SP cat-part) ")"
//! cat-part       = "TEXT" SP (literal / literal8) / "URL" SP astring
//! ```

use super::{Cursor, Section, parse_date_time};

/// A literal announced at the end of a line: `{n}`, `{n+}`, `~{n}`, `~{n+}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    pub size: u64,
    /// The client waits for "+" (RFC 3501 7.5).
    pub sync: bool,
    /// literal8 (RFC 3516 4.2): may hold NUL bytes.
    pub binary: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendToken {
    /// A message given whole; its literal follows the line.
    Message {
        flags: Vec<String>,
        date: Option<i64>,
        literal: Announced,
    },
    /// A message built from parts (RFC 4469): `CATENATE (` was read.
    Catenate {
        flags: Vec<String>,
        date: Option<i64>,
    },
    /// `TEXT` part; its literal follows the line.
    Text(Announced),
    /// `URL` part given as a quoted string or atom.
    Url(Vec<u8>),
    /// `URL` part given as a literal, which follows the line.
    UrlLiteral(Announced),
    /// The `)` closing a CATENATE.
    CatenateEnd,
    /// The end of the command.
    End,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    /// Right after the mailbox: a message must follow.
    #[default]
    First,
    /// After a message: the end, or another message (MULTIAPPEND).
    AfterMessage,
    /// Right after `CATENATE (`.
    CatFirst,
    /// After a part: `)` or another part.
    CatAfterPart,
}

/// Where the lexer is in an APPEND; see the module documentation.
#[derive(Debug, Default)]
pub struct AppendLexer {
    state: State,
}

fn at_eol(c: &Cursor<'_>) -> bool {
    matches!(&c.buf[c.pos..], b"\r\n" | b"\n")
}

/// A literal announcement that must end the line.
fn announced(c: &mut Cursor<'_>) -> Result<Announced, String> {
    let binary = c.eat(b'~');
    if !c.eat(b'{') {
        return Err("expected a literal".into());
    }
    let size = c.number()?;
    let sync = !c.eat(b'+');
    if !c.eat(b'}') || !at_eol(c) {
        return Err("bad literal announcement".into());
    }
    c.pos = c.buf.len();
    Ok(Announced { size, sync, binary })
}

impl AppendLexer {
    /// The next token of `line` from `*pos` (a line as read, CRLF
    /// included). After a token that announces a literal, `*pos` is at the
    /// end of the line: the literal comes next, then a new line (from 0).
    pub fn next(&mut self, line: &[u8], pos: &mut usize) -> Result<AppendToken, String> {
        let mut c = Cursor {
            buf: line,
            pos: *pos,
            depth: 0,
        };
        let token = self.token(&mut c);
        *pos = c.pos;
        token
    }

    fn token(&mut self, c: &mut Cursor<'_>) -> Result<AppendToken, String> {
        match self.state {
            State::First | State::AfterMessage => {
                if self.state == State::AfterMessage && at_eol(c) {
                    c.pos = c.buf.len();
                    return Ok(AppendToken::End);
                }
                c.sp()?;
                let mut flags = Vec::new();
                if c.peek() == Some(b'(') {
                    flags = c.flag_list()?;
                    c.sp()?;
                }
                let mut date = None;
                if c.peek() == Some(b'"') {
                    let d = c.quoted()?;
                    date = Some(parse_date_time(&d).ok_or("bad APPEND date-time")?);
                    c.sp()?;
                }
                if c.keyword("CATENATE") {
                    c.sp()?;
                    if !c.eat(b'(') {
                        return Err("expected ( after CATENATE".into());
                    }
                    self.state = State::CatFirst;
                    return Ok(AppendToken::Catenate { flags, date });
                }
                let literal = announced(c)?;
                self.state = State::AfterMessage;
                Ok(AppendToken::Message {
                    flags,
                    date,
                    literal,
                })
            }
            State::CatFirst | State::CatAfterPart => {
                if self.state == State::CatAfterPart {
                    if c.eat(b')') {
                        self.state = State::AfterMessage;
                        return Ok(AppendToken::CatenateEnd);
                    }
                    c.sp()?;
                }
                self.state = State::CatAfterPart;
                if c.keyword("TEXT") {
                    c.sp()?;
                    return Ok(AppendToken::Text(announced(c)?));
                }
                if c.keyword("URL") {
                    c.sp()?;
                    if matches!(c.peek(), Some(b'{' | b'~')) {
                        return Ok(AppendToken::UrlLiteral(announced(c)?));
                    }
                    return Ok(AppendToken::Url(c.astring()?));
                }
                Err("expected TEXT or URL in CATENATE".into())
            }
        }
    }
}

/// A `section` of an IMAP URL (RFC 5092 `enc-section`, after percent
/// decoding): what BODY[...] takes, e.g. `HEADER`, `1.2.MIME`, `TEXT`.
pub fn parse_section(text: &[u8]) -> Option<Section> {
    let mut buf = text.to_vec();
    buf.push(b']');
    let mut c = Cursor {
        buf: &buf,
        pos: 0,
        depth: 0,
    };
    let s = c.section().ok()?;
    (c.pos == buf.len()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the lexer over lines, as the session does (literals skipped).
    fn lex(lines: &[&[u8]]) -> Result<Vec<AppendToken>, String> {
        let mut lexer = AppendLexer::default();
        let mut out = Vec::new();
        for line in lines {
            let mut pos = 0;
            loop {
                let t = lexer.next(line, &mut pos)?;
                let ends_line = matches!(
                    t,
                    AppendToken::Message { .. }
                        | AppendToken::Text(_)
                        | AppendToken::UrlLiteral(_)
                        | AppendToken::End
                );
                out.push(t);
                if ends_line {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn lit(size: u64, sync: bool, binary: bool) -> Announced {
        Announced { size, sync, binary }
    }

    #[test]
    fn append_tokens() {
        use AppendToken::*;
        let seen = vec!["\\Seen".to_string()];
        let table: Vec<(Vec<&[u8]>, Vec<AppendToken>)> = vec![
            (
                vec![b" {5}\r\n", b"\r\n"],
                vec![
                    Message {
                        flags: vec![],
                        date: None,
                        literal: lit(5, true, false),
                    },
                    End,
                ],
            ),
            // MULTIAPPEND: a second message after the first literal.
            (
                vec![
                    b" (\\Seen) ~{3+}\r\n",
                    b" \"17-Jul-1996 02:44:25 -0700\" {4}\r\n",
                    b"\r\n",
                ],
                vec![
                    Message {
                        flags: seen.clone(),
                        date: None,
                        literal: lit(3, false, true),
                    },
                    Message {
                        flags: vec![],
                        date: parse_date_time(b"17-Jul-1996 02:44:25 -0700"),
                        literal: lit(4, true, false),
                    },
                    End,
                ],
            ),
            // CATENATE with URL parts only: no literal at all.
            (
                vec![b" CATENATE (URL \"/INBOX;UIDVALIDITY=9/;UID=1\" URL ;UID=2)\r\n"],
                vec![
                    Catenate {
                        flags: vec![],
                        date: None,
                    },
                    Url(b"/INBOX;UIDVALIDITY=9/;UID=1".to_vec()),
                    Url(b";UID=2".to_vec()),
                    CatenateEnd,
                    End,
                ],
            ),
            // TEXT parts split the command into lines; then a plain message.
            (
                vec![
                    b" (\\Seen) catenate (text {7}\r\n",
                    b" url {9}\r\n",
                    b" TEXT ~{2+}\r\n",
                    b") {3}\r\n",
                    b"\r\n",
                ],
                vec![
                    Catenate {
                        flags: seen.clone(),
                        date: None,
                    },
                    Text(lit(7, true, false)),
                    UrlLiteral(lit(9, true, false)),
                    Text(lit(2, false, true)),
                    CatenateEnd,
                    Message {
                        flags: vec![],
                        date: None,
                        literal: lit(3, true, false),
                    },
                    End,
                ],
            ),
        ];
        for (lines, want) in table {
            assert_eq!(lex(&lines), Ok(want), "{lines:?}");
        }
    }

    #[test]
    fn append_errors() {
        for lines in [
            vec![&b"\r\n"[..]],                    // no message at all
            vec![b" (\\Seen {9}\r\n"],             // unclosed flags
            vec![b" \"32-Foo-2020\" {9}\r\n"],     // bad date
            vec![b" junk {9}\r\n"],                // stray atom
            vec![b" {9} x\r\n"],                   // literal not at the end
            vec![b" CATENATE ()\r\n"],             // empty CATENATE
            vec![b" CATENATE (BODY {3}\r\n"],      // unknown part
            vec![b" CATENATE (URL \"/a\"\r\n"],    // unclosed
            vec![b" {3}\r\n", b"junk\r\n"],        // garbage after a message
            vec![b" CATENATE (TEXT \"abc\")\r\n"], // TEXT takes a literal
        ] {
            assert!(lex(&lines).is_err(), "{lines:?}");
        }
    }

    #[test]
    fn url_sections() {
        assert_eq!(
            parse_section(b"HEADER").and_then(|s| s.text),
            Some(super::super::SectionText::Header)
        );
        assert_eq!(parse_section(b"1.2").map(|s| s.part), Some(vec![1, 2]));
        assert_eq!(parse_section(b"bogus"), None);
        assert_eq!(parse_section(b"1]x"), None);
    }
}
