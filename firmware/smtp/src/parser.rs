//! The SMTP command parser: pure, no I/O, table-tested.
//!
//! It turns one command line (without its CRLF) into a `Command`. Syntax is
//! RFC 5321 section 4.1 with the leniencies real clients need: verbs in any
//! case, an optional space after `FROM:`/`TO:`, source routes accepted and
//! dropped (RFC 5321 4.1.1.3, "MUST accept ... SHOULD ignore").

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail {
        from: String,
        params: MailParams,
    },
    Rcpt {
        to: String,
    },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    /// Commands of other protocols sent to an SMTP port (cross-protocol
    /// attacks): the session closes at once (as Postfix does).
    Foreign,
}

/// ESMTP parameters of MAIL FROM that this server implements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// SIZE= (RFC 1870).
    pub size: Option<u64>,
    /// BODY=8BITMIME (RFC 6152); BODY=7BIT gives false.
    pub eight_bit: bool,
    /// SMTPUTF8 (RFC 6531 3.4).
    pub smtputf8: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not a command this server knows (500 5.5.2).
    UnknownCommand,
    /// A known command with bad arguments (501 5.5.4).
    BadSyntax(&'static str),
    /// A MAIL/RCPT parameter this server does not implement (555 5.5.4).
    UnsupportedParameter(String),
}

/// Longest local part and domain (RFC 5321 4.5.3.1.1 and 4.5.3.1.2).
pub const LOCAL_PART_BYTES_MAX: usize = 64;
pub const DOMAIN_BYTES_MAX: usize = 255;

pub fn parse_command(line: &[u8]) -> Result<Command, ParseError> {
    let line =
        std::str::from_utf8(line).map_err(|_| ParseError::BadSyntax("command is not UTF-8"))?;
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let verb = verb.to_ascii_uppercase();
    let no_args = |cmd: Command| {
        if rest.trim().is_empty() {
            Ok(cmd)
        } else {
            Err(ParseError::BadSyntax("this command takes no arguments"))
        }
    };
    match verb.as_str() {
        "EHLO" => Ok(Command::Ehlo(parse_client_name(rest)?)),
        "HELO" => Ok(Command::Helo(parse_client_name(rest)?)),
        "MAIL" => parse_mail(rest),
        "RCPT" => parse_rcpt(rest),
        "DATA" => no_args(Command::Data),
        "RSET" => no_args(Command::Rset),
        // RFC 5321 4.1.1.9: NOOP may carry a string, which is ignored.
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_args(Command::Quit),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" => Ok(Command::Expn),
        "HELP" => Ok(Command::Help),
        "STARTTLS" => no_args(Command::StartTls),
        "AUTH" => parse_auth(rest),
        "GET" | "POST" | "PUT" | "HEAD" | "CONNECT" | "USER" | "PASS" => Ok(Command::Foreign),
        _ => Err(ParseError::UnknownCommand),
    }
}

fn parse_client_name(rest: &str) -> Result<String, ParseError> {
    let name = rest.trim();
    if name.is_empty() {
        return Err(ParseError::BadSyntax("a host name is required"));
    }
    if name.len() > DOMAIN_BYTES_MAX || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ParseError::BadSyntax("invalid host name"));
    }
    Ok(name.to_string())
}

/// Splits `FROM:<path> params` after the keyword, allowing one space after the colon.
fn after_keyword<'a>(rest: &'a str, keyword: &str) -> Result<&'a str, ParseError> {
    let (head, tail) = rest
        .split_at_checked(keyword.len())
        .ok_or(ParseError::BadSyntax("missing FROM:/TO:"))?;
    if !head.eq_ignore_ascii_case(keyword) {
        return Err(ParseError::BadSyntax("missing FROM:/TO:"));
    }
    Ok(tail.trim_start_matches(' '))
}

/// Takes `<...>` from the front, returning the path inside and what follows.
fn take_path(s: &str) -> Result<(&str, &str), ParseError> {
    let s = s.strip_prefix('<').ok_or(ParseError::BadSyntax(
        "the address must be in angle brackets",
    ))?;
    // '>' may appear inside a quoted local part; find the closing bracket outside quotes.
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Ok((&s[..i], &s[i + 1..])),
            _ => {}
        }
    }
    Err(ParseError::BadSyntax("unterminated address"))
}

fn parse_mail(rest: &str) -> Result<Command, ParseError> {
    let (path, params) = take_path(after_keyword(rest, "FROM:")?)?;
    let from = if path.is_empty() {
        String::new()
    } else {
        parse_mailbox(path)?
    };
    let mut p = MailParams::default();
    for param in params.split(' ').filter(|s| !s.is_empty()) {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (param, None),
        };
        match (key.to_ascii_uppercase().as_str(), value) {
            ("SIZE", Some(v)) => {
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ParseError::BadSyntax("SIZE must be a number"));
                }
                // A number too large for u64 is simply too large a message (552).
                let n = v.parse::<u64>().unwrap_or(u64::MAX);
                p.size = Some(n);
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => p.eight_bit = true,
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => p.eight_bit = false,
            ("SMTPUTF8", None) => p.smtputf8 = true,
            _ => return Err(ParseError::UnsupportedParameter(param.to_string())),
        }
    }
    Ok(Command::Mail { from, params: p })
}

fn parse_rcpt(rest: &str) -> Result<Command, ParseError> {
    let (path, params) = take_path(after_keyword(rest, "TO:")?)?;
    if let Some(param) = params.split(' ').find(|s| !s.is_empty()) {
        return Err(ParseError::UnsupportedParameter(param.to_string()));
    }
    // RFC 5321 4.5.1: <postmaster> without a domain must be accepted.
    if path.eq_ignore_ascii_case("postmaster") {
        return Ok(Command::Rcpt {
            to: "postmaster".into(),
        });
    }
    Ok(Command::Rcpt {
        to: parse_mailbox(path)?,
    })
}

/// Validates `[@route,@route:]local@domain` and returns `local@domain`.
/// The local part keeps its case (RFC 5321 2.4); the domain is lower-cased.
pub fn parse_mailbox(path: &str) -> Result<String, ParseError> {
    let path = if path.starts_with('@') {
        path.split_once(':')
            .ok_or(ParseError::BadSyntax("bad source route"))?
            .1
    } else {
        path
    };
    let at =
        last_at_outside_quotes(path).ok_or(ParseError::BadSyntax("the address has no domain"))?;
    let (local, domain) = (&path[..at], &path[at + 1..]);
    if local.is_empty() || local.len() > LOCAL_PART_BYTES_MAX {
        return Err(ParseError::BadSyntax("bad local part length"));
    }
    if local
        .chars()
        .any(|c| c.is_control() || (c == ' ' && !local.starts_with('"')))
    {
        return Err(ParseError::BadSyntax("bad character in local part"));
    }
    if !is_domain(domain) {
        return Err(ParseError::BadSyntax("bad domain"));
    }
    Ok(format!("{local}@{}", domain.to_lowercase()))
}

fn last_at_outside_quotes(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    let mut at = None;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '@' if !quoted => at = Some(i),
            _ => {}
        }
    }
    at
}

/// A domain name (labels of letters, digits, hyphens, or UTF-8 under
/// SMTPUTF8) or an address literal like `[192.0.2.1]`.
fn is_domain(d: &str) -> bool {
    if d.is_empty() || d.len() > DOMAIN_BYTES_MAX {
        return false;
    }
    if let Some(lit) = d.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        return lit.parse::<std::net::Ipv4Addr>().is_ok()
            || lit
                .strip_prefix("IPv6:")
                .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok());
    }
    d.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-')
    })
}

fn parse_auth(rest: &str) -> Result<Command, ParseError> {
    let mut parts = rest.split(' ').filter(|s| !s.is_empty());
    let mechanism = parts
        .next()
        .ok_or(ParseError::BadSyntax("AUTH needs a mechanism"))?
        .to_ascii_uppercase();
    let initial = parts.next().map(str::to_string);
    if parts.next().is_some() {
        return Err(ParseError::BadSyntax("too many AUTH arguments"));
    }
    Ok(Command::Auth { mechanism, initial })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        parse_command(line.as_bytes()).unwrap_or_else(|e| panic!("{line:?}: {e:?}"))
    }

    fn mail(from: &str) -> Command {
        Command::Mail {
            from: from.into(),
            params: MailParams::default(),
        }
    }

    #[test]
    fn commands_parse() {
        let table: Vec<(&str, Command)> = vec![
            (
                "EHLO client.example",
                Command::Ehlo("client.example".into()),
            ),
            ("ehlo [192.0.2.1]", Command::Ehlo("[192.0.2.1]".into())),
            ("HELO x", Command::Helo("x".into())),
            ("MAIL FROM:<a@example.net>", mail("a@example.net")),
            ("mail from: <a@Example.NET>", mail("a@example.net")),
            ("MAIL FROM:<>", mail("")),
            (
                "MAIL FROM:<@relay.example,@r2.example:Joe@example.net>",
                mail("Joe@example.net"),
            ),
            (
                "MAIL FROM:<\"a b@c\"@example.net>",
                mail("\"a b@c\"@example.net"),
            ),
            (
                "MAIL FROM:<a@example.net> SIZE=2048 BODY=8BITMIME SMTPUTF8",
                Command::Mail {
                    from: "a@example.net".into(),
                    params: MailParams {
                        size: Some(2048),
                        eight_bit: true,
                        smtputf8: true,
                    },
                },
            ),
            (
                "MAIL FROM:<ü@bücher.example> SMTPUTF8",
                Command::Mail {
                    from: "ü@bücher.example".into(),
                    params: MailParams {
                        smtputf8: true,
                        ..MailParams::default()
                    },
                },
            ),
            (
                "RCPT TO:<b@example.net>",
                Command::Rcpt {
                    to: "b@example.net".into(),
                },
            ),
            (
                "RCPT TO:<Postmaster>",
                Command::Rcpt {
                    to: "postmaster".into(),
                },
            ),
            (
                "RCPT TO:<a@[192.0.2.1]>",
                Command::Rcpt {
                    to: "a@[192.0.2.1]".into(),
                },
            ),
            ("DATA", Command::Data),
            ("rset", Command::Rset),
            ("NOOP anything", Command::Noop),
            ("QUIT", Command::Quit),
            ("VRFY root", Command::Vrfy),
            ("STARTTLS", Command::StartTls),
            (
                "AUTH PLAIN",
                Command::Auth {
                    mechanism: "PLAIN".into(),
                    initial: None,
                },
            ),
            (
                "AUTH login dXNlcg==",
                Command::Auth {
                    mechanism: "LOGIN".into(),
                    initial: Some("dXNlcg==".into()),
                },
            ),
            ("GET / HTTP/1.1", Command::Foreign),
        ];
        for (line, want) in table {
            assert_eq!(ok(line), want, "{line:?}");
        }
    }

    #[test]
    fn bad_commands_get_the_right_class_of_error() {
        use ParseError::*;
        type Check = fn(&ParseError) -> bool;
        let table: Vec<(&[u8], Check)> = vec![
            (b"FOO", |e| *e == UnknownCommand),
            (b"", |e| *e == UnknownCommand),
            (b"EHLO", |e| matches!(e, BadSyntax(_))),
            (b"MAIL FROM:a@example.net", |e| matches!(e, BadSyntax(_))),
            (b"MAIL TO:<a@example.net>", |e| matches!(e, BadSyntax(_))),
            (b"MAIL FROM:<a@example.net", |e| matches!(e, BadSyntax(_))),
            (b"MAIL FROM:<noat>", |e| matches!(e, BadSyntax(_))),
            (b"MAIL FROM:<a@bad_domain.example>", |e| {
                matches!(e, BadSyntax(_))
            }),
            (b"MAIL FROM:<a@-x.example>", |e| matches!(e, BadSyntax(_))),
            (b"MAIL FROM:<a@example.net> SIZE=big", |e| {
                matches!(e, BadSyntax(_))
            }),
            (b"MAIL FROM:<a@example.net> RET=FULL", |e| {
                matches!(e, UnsupportedParameter(_))
            }),
            (b"RCPT TO:<a@example.net> NOTIFY=NEVER", |e| {
                matches!(e, UnsupportedParameter(_))
            }),
            (b"RCPT TO:<@example.net>", |e| matches!(e, BadSyntax(_))),
            (b"DATA now", |e| matches!(e, BadSyntax(_))),
            (b"MAIL FROM:<\xff@example.net>", |e| {
                matches!(e, BadSyntax(_))
            }),
            (b"AUTH", |e| matches!(e, BadSyntax(_))),
        ];
        for (line, check) in table {
            let e = parse_command(line).expect_err(&String::from_utf8_lossy(line));
            assert!(check(&e), "{:?} gave {e:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn a_local_part_over_64_bytes_is_refused() {
        let long = format!("MAIL FROM:<{}@example.net>", "a".repeat(65));
        assert!(parse_command(long.as_bytes()).is_err());
        let fits = format!("MAIL FROM:<{}@example.net>", "a".repeat(64));
        assert!(parse_command(fits.as_bytes()).is_ok());
    }
}
