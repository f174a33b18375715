//! The POP3 command parser: pure, no I/O, table-tested.
//!
//! It turns one command line (without its line end) into a `Command`.
//! Syntax is RFC 1939 section 3 (a keyword of 3 or 4 characters, case
//! insensitive, then arguments separated by spaces) with the extensions this
//! server offers: CAPA (RFC 2449), STLS (RFC 2595) and AUTH (RFC 5034).

use std::fmt;

/// Longest command line, CRLF included (RFC 2449 4: "the maximum length of
/// a command is increased from 47 characters ... to 255 octets, including
/// the terminating CRLF").
pub const COMMAND_LINE_BYTES_MAX: usize = 255;

/// Longest line that carries credentials: AUTH with its initial response,
/// an AUTH continuation (RFC 5034 4: a client response may be up to 12288
/// octets), and PASS, whose argument is a password of up to
/// `mxrack_store::MAX_PASSWORD_LEN` bytes, more than 255 allows.
pub const CREDENTIALS_LINE_BYTES_MAX: usize = 12_288 + 2;

/// Longest POP3 number accepted, in digits (a u32 message number has 10).
const NUMBER_DIGITS_MAX: usize = 20;

/// A string that must not end up in a log line (a password or a SASL
/// response): its `Debug` form hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A parsed command. Message numbers are as the client sent them (1-based;
/// 0 is parsed and then answered "no such message").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Capa,
    User(String),
    Pass(Secret),
    /// `AUTH` alone asks for the mechanism list (what Outlook and Dovecot
    /// do beyond RFC 5034); `AUTH mech [initial-response]` starts SASL.
    Auth {
        mechanism: Option<String>,
        initial: Option<Secret>,
    },
    Stls,
    Stat,
    List(Option<u32>),
    Uidl(Option<u32>),
    Retr(u32),
    Top {
        msg: u32,
        lines: u64,
    },
    Dele(u32),
    Rset,
    Noop,
    Quit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not a command this server knows.
    UnknownCommand,
    /// A known command with bad arguments.
    BadSyntax(&'static str),
}

/// The longest line allowed for a command that starts with these bytes:
/// credentials lines may be longer than ordinary commands.
pub fn line_limit_for(line: &[u8]) -> usize {
    let verb_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let verb = &line[..verb_end];
    if verb.eq_ignore_ascii_case(b"AUTH") || verb.eq_ignore_ascii_case(b"PASS") {
        CREDENTIALS_LINE_BYTES_MAX
    } else {
        COMMAND_LINE_BYTES_MAX
    }
}

/// Strips the CRLF (or a bare LF) that ends a line.
pub fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

pub fn parse_command(line: &[u8]) -> Result<Command, ParseError> {
    let line =
        std::str::from_utf8(line).map_err(|_| ParseError::BadSyntax("command is not UTF-8"))?;
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let args: Vec<&str> = rest.split_ascii_whitespace().collect();
    let no_args = |cmd: Command| {
        if args.is_empty() {
            Ok(cmd)
        } else {
            Err(ParseError::BadSyntax("this command takes no arguments"))
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        "CAPA" => no_args(Command::Capa),
        "STLS" => no_args(Command::Stls),
        "STAT" => no_args(Command::Stat),
        "RSET" => no_args(Command::Rset),
        "NOOP" => no_args(Command::Noop),
        "QUIT" => no_args(Command::Quit),
        "USER" => match args.as_slice() {
            [name] => Ok(Command::User((*name).to_string())),
            _ => Err(ParseError::BadSyntax(
                "USER takes one argument, the mailbox",
            )),
        },
        // RFC 1939 7: "a POP3 server may treat spaces in the argument as
        // part of the password", so the whole rest of the line is the password.
        "PASS" if rest.is_empty() => Err(ParseError::BadSyntax("PASS needs a password")),
        "PASS" => Ok(Command::Pass(Secret(rest.to_string()))),
        "AUTH" => match args.as_slice() {
            [] => Ok(Command::Auth {
                mechanism: None,
                initial: None,
            }),
            [mechanism] => Ok(Command::Auth {
                mechanism: Some(mechanism.to_ascii_uppercase()),
                initial: None,
            }),
            [mechanism, initial] => Ok(Command::Auth {
                mechanism: Some(mechanism.to_ascii_uppercase()),
                initial: Some(Secret((*initial).to_string())),
            }),
            _ => Err(ParseError::BadSyntax("too many AUTH arguments")),
        },
        "LIST" => Ok(Command::List(optional_msg(&args)?)),
        "UIDL" => Ok(Command::Uidl(optional_msg(&args)?)),
        "RETR" => Ok(Command::Retr(one_msg(&args)?)),
        "DELE" => Ok(Command::Dele(one_msg(&args)?)),
        "TOP" => match args.as_slice() {
            [msg, lines] => Ok(Command::Top {
                msg: msg_number(msg)?,
                // A line count beyond u64 means "all of it".
                lines: number(lines)?.unwrap_or(u64::MAX),
            }),
            _ => Err(ParseError::BadSyntax(
                "TOP takes a message number and a line count",
            )),
        },
        _ => Err(ParseError::UnknownCommand),
    }
}

/// Digits only (no sign, no space): `Ok(None)` when the value overflows u64.
fn number(s: &str) -> Result<Option<u64>, ParseError> {
    if s.is_empty() || s.len() > NUMBER_DIGITS_MAX || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadSyntax("not a number"));
    }
    Ok(s.parse::<u64>().ok())
}

fn msg_number(s: &str) -> Result<u32, ParseError> {
    number(s)?
        .and_then(|n| u32::try_from(n).ok())
        .ok_or(ParseError::BadSyntax("message number out of range"))
}

fn one_msg(args: &[&str]) -> Result<u32, ParseError> {
    match args {
        [msg] => msg_number(msg),
        _ => Err(ParseError::BadSyntax(
            "this command takes one message number",
        )),
    }
}

fn optional_msg(args: &[&str]) -> Result<Option<u32>, ParseError> {
    match args {
        [] => Ok(None),
        [msg] => msg_number(msg).map(Some),
        _ => Err(ParseError::BadSyntax(
            "this command takes at most one message number",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret(s.to_string())
    }

    #[test]
    fn commands_parse() {
        let table: Vec<(&str, Command)> = vec![
            ("CAPA", Command::Capa),
            ("capa", Command::Capa),
            ("STLS", Command::Stls),
            (
                "USER jo@example.net",
                Command::User("jo@example.net".into()),
            ),
            (
                "user  Jo@Example.NET ",
                Command::User("Jo@Example.NET".into()),
            ),
            ("PASS secret", Command::Pass(secret("secret"))),
            ("PASS with  spaces ", Command::Pass(secret("with  spaces "))),
            (
                "AUTH",
                Command::Auth {
                    mechanism: None,
                    initial: None,
                },
            ),
            (
                "AUTH plain",
                Command::Auth {
                    mechanism: Some("PLAIN".into()),
                    initial: None,
                },
            ),
            (
                "AUTH PLAIN AGpvAHB3",
                Command::Auth {
                    mechanism: Some("PLAIN".into()),
                    initial: Some(secret("AGpvAHB3")),
                },
            ),
            (
                "AUTH PLAIN =",
                Command::Auth {
                    mechanism: Some("PLAIN".into()),
                    initial: Some(secret("=")),
                },
            ),
            ("STAT", Command::Stat),
            ("LIST", Command::List(None)),
            ("LIST 2", Command::List(Some(2))),
            ("list 0", Command::List(Some(0))),
            ("UIDL", Command::Uidl(None)),
            ("UIDL 4294967295", Command::Uidl(Some(u32::MAX))),
            ("RETR 1", Command::Retr(1)),
            ("TOP 1 0", Command::Top { msg: 1, lines: 0 }),
            ("TOP 3 10", Command::Top { msg: 3, lines: 10 }),
            (
                "TOP 1 99999999999999999999",
                Command::Top {
                    msg: 1,
                    lines: u64::MAX,
                },
            ),
            ("DELE 7", Command::Dele(7)),
            ("RSET", Command::Rset),
            ("NOOP", Command::Noop),
            ("QUIT", Command::Quit),
        ];
        for (line, want) in table {
            let got = parse_command(line.as_bytes()).unwrap_or_else(|e| panic!("{line:?}: {e:?}"));
            assert_eq!(got, want, "{line:?}");
        }
    }

    #[test]
    fn bad_commands_get_the_right_class_of_error() {
        use ParseError::*;
        type Check = fn(&ParseError) -> bool;
        let syntax: Check = |e| matches!(e, BadSyntax(_));
        let unknown: Check = |e| *e == UnknownCommand;
        let table: Vec<(&[u8], Check)> = vec![
            (b"", unknown),
            (b"FOO", unknown),
            (b"APOP jo 0123456789abcdef", unknown),
            (b"EHLO x", unknown),
            (b" STAT", unknown),
            (b"STAT 1", syntax),
            (b"QUIT now", syntax),
            (b"USER", syntax),
            (b"USER a b", syntax),
            (b"PASS", syntax),
            (b"PASS ", syntax),
            (b"AUTH PLAIN a b", syntax),
            (b"LIST x", syntax),
            (b"LIST 1 2", syntax),
            (b"LIST -1", syntax),
            (b"LIST +1", syntax),
            (b"LIST 4294967296", syntax),
            (b"RETR", syntax),
            (b"RETR 1.5", syntax),
            (b"DELE", syntax),
            (b"TOP 1", syntax),
            (b"TOP 1 -1", syntax),
            (b"TOP x 1", syntax),
            (b"TOP 1 123456789012345678901", syntax),
            (b"USER \xff@example.net", syntax),
        ];
        for (line, check) in table {
            let e = parse_command(line).expect_err(&String::from_utf8_lossy(line));
            assert!(check(&e), "{:?} gave {e:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn credentials_lines_get_the_longer_limit() {
        let table: [(&[u8], usize); 6] = [
            (b"AUTH PLAIN abc", CREDENTIALS_LINE_BYTES_MAX),
            (b"auth", CREDENTIALS_LINE_BYTES_MAX),
            (b"Pass x", CREDENTIALS_LINE_BYTES_MAX),
            (b"USER jo", COMMAND_LINE_BYTES_MAX),
            (b"AUTHX", COMMAND_LINE_BYTES_MAX),
            (b"", COMMAND_LINE_BYTES_MAX),
        ];
        for (line, want) in table {
            assert_eq!(
                line_limit_for(line),
                want,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn line_ends_are_trimmed() {
        assert_eq!(trim_line_end(b"STAT\r\n"), b"STAT");
        assert_eq!(trim_line_end(b"STAT\n"), b"STAT");
        assert_eq!(trim_line_end(b"STAT"), b"STAT");
        assert_eq!(trim_line_end(b"PASS a\r\r\n"), b"PASS a\r");
    }

    #[test]
    fn a_password_never_shows_in_debug_output() {
        let shown = format!("{:?}", parse_command(b"PASS hunter2").expect("parses"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
