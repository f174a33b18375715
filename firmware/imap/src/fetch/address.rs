//! The address structures of an ENVELOPE (RFC 3501 7.4.2) read from a raw
//! address header (RFC 5322 3.4, with the obsolete forms of 4.4). Pure.
//!
//! Each address is `(name adl mailbox host)`. A group is a start marker
//! `(NIL NIL "group name" NIL)`, its members, and an end marker
//! `(NIL NIL NIL NIL)` (RFC 3501 7.4.2: a NIL host means group syntax), so
//! an ordinary address never has a NIL host: an address without a domain
//! gets the host `MISSING_DOMAIN` and one without a local part the mailbox
//! `MISSING_MAILBOX`, the placeholders Dovecot sends (lib-mail
//! message-address.c, `MESSAGE_ADDRESS_PARSE_FLAG_FILL_MISSING`).

/// Addresses (group markers included) kept from one header field; the rest
/// are dropped. The header itself is bounded by the message parse.
pub const ADDRESSES_MAX: usize = 1_000;

/// Placeholder host of an address written without `@domain`.
pub const MISSING_DOMAIN: &str = "MISSING_DOMAIN";
/// Placeholder mailbox of an address written without a local part (`<>`).
pub const MISSING_MAILBOX: &str = "MISSING_MAILBOX";

/// One ENVELOPE address structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub name: Option<String>,
    /// The source route (RFC 5322 4.4 obs-route), as `@a,@b`.
    pub adl: Option<String>,
    pub mailbox: Option<String>,
    pub host: Option<String>,
}

impl Addr {
    fn group_start(name: String) -> Addr {
        Addr {
            name: None,
            adl: None,
            mailbox: Some(name),
            host: None,
        }
    }
    fn group_end() -> Addr {
        Addr {
            name: None,
            adl: None,
            mailbox: None,
            host: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A run of atext and dots (RFC 5322 3.2.3 dot-atom, obs-phrase).
    Atom(String),
    /// A quoted-string's content, escapes removed (3.2.4).
    Quoted(String),
    /// A domain literal, brackets kept (3.4.1).
    Literal(String),
    /// A comment's text (3.2.2); comments are white space except where an
    /// addr-spec's trailing comment names it.
    Comment(String),
    Special(char),
}

impl Tok {
    fn word(&self) -> Option<&str> {
        match self {
            Tok::Atom(s) | Tok::Quoted(s) => Some(s),
            _ => None,
        }
    }
}

fn tokens(value: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\r' | '\n' => {}
            '"' => {
                let mut s = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => s.extend(chars.next()),
                        '\r' | '\n' => {}
                        c => s.push(c),
                    }
                }
                out.push(Tok::Quoted(s));
            }
            '(' => {
                // Comments nest (3.2.2); a counter, not recursion.
                let (mut depth, mut s) = (1usize, String::new());
                while let Some(c) = chars.next() {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        '\\' => {
                            s.extend(chars.next());
                            continue;
                        }
                        _ => {}
                    }
                    if depth == 0 {
                        break;
                    }
                    s.push(c);
                }
                out.push(Tok::Comment(s));
            }
            '[' => {
                let mut s = String::from("[");
                for c in chars.by_ref() {
                    s.push(c);
                    if c == ']' {
                        break;
                    }
                }
                out.push(Tok::Literal(s));
            }
            '<' | '>' | '@' | ',' | ';' | ':' | ')' | ']' | '\\' => out.push(Tok::Special(c)),
            c => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || "\"()<>[]@,;:\\".contains(n) {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                out.push(Tok::Atom(s));
            }
        }
    }
    out
}

struct Parser {
    toks: Vec<Tok>,
    i: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i)
    }
    fn skip_comments(&mut self) {
        while matches!(self.peek(), Some(Tok::Comment(_))) {
            self.i += 1;
        }
    }
    fn at(&mut self, c: char) -> bool {
        self.skip_comments();
        self.peek() == Some(&Tok::Special(c))
    }
    /// A phrase (3.2.5): words, comments skipped, joined by one space.
    fn phrase(&mut self) -> Vec<String> {
        let mut words = Vec::new();
        loop {
            self.skip_comments();
            match self.peek().and_then(Tok::word) {
                Some(w) => {
                    words.push(w.to_string());
                    self.i += 1;
                }
                None => return words,
            }
        }
    }
    /// Everything up to `stop` (or the end), as written: a local part or
    /// a domain, whose dots are inside atoms.
    fn text_until(&mut self, stop: &[char]) -> String {
        let mut s = String::new();
        while let Some(t) = self.peek() {
            match t {
                Tok::Special(c) if stop.contains(c) => break,
                Tok::Comment(_) => {}
                Tok::Atom(w) | Tok::Quoted(w) | Tok::Literal(w) => s.push_str(w),
                Tok::Special(c) => s.push(*c),
            }
            self.i += 1;
        }
        s
    }
}

/// The addresses of one header value (unfolded), group markers included.
pub fn parse(value: &str) -> Vec<Addr> {
    let mut p = Parser {
        toks: tokens(value),
        i: 0,
    };
    let mut out = Vec::new();
    while out.len() < ADDRESSES_MAX {
        // Empty list elements are allowed (RFC 5322 4.4 obs-addr-list).
        while p.at(',') {
            p.i += 1;
        }
        p.skip_comments();
        if p.peek().is_none() {
            break;
        }
        let start = p.i;
        let words = p.phrase();
        if !words.is_empty() && p.at(':') {
            // group = display-name ":" [group-list] ";" (3.4)
            p.i += 1;
            out.push(Addr::group_start(words.join(" ")));
            loop {
                while p.at(',') {
                    p.i += 1;
                }
                if p.at(';') {
                    p.i += 1;
                    break;
                }
                if p.peek().is_none() || out.len() >= ADDRESSES_MAX - 1 {
                    break;
                }
                out.push(mailbox(&mut p, &[',', ';']));
            }
            out.push(Addr::group_end());
        } else {
            p.i = start;
            out.push(mailbox(&mut p, &[',']));
        }
    }
    out
}

/// mailbox = name-addr / addr-spec (3.4); reads up to a separator in
/// `stop` (not consumed) and always moves forward.
fn mailbox(p: &mut Parser, stop: &[char]) -> Addr {
    let begin = p.i;
    let words = p.phrase();
    let mut addr = Addr {
        name: None,
        adl: None,
        mailbox: None,
        host: None,
    };
    if p.at('<') {
        // name-addr = [display-name] "<" [obs-route] addr-spec ">" (3.4, 4.4)
        p.i += 1;
        addr.name = Some(words.join(" ")).filter(|n| !n.is_empty());
        if p.at('@') {
            let route = p.text_until(&[':', '>']);
            if p.at(':') {
                p.i += 1;
            }
            addr.adl = Some(route).filter(|r| !r.is_empty());
        }
        let local = p.text_until(&['@', '>']);
        addr.mailbox = Some(local).filter(|l| !l.is_empty());
        if p.at('@') {
            p.i += 1;
            addr.host = Some(p.text_until(&['>'])).filter(|h| !h.is_empty());
        }
        if p.at('>') {
            p.i += 1;
        }
    } else {
        // addr-spec = local-part "@" domain, its name in a trailing comment.
        p.i = begin;
        let mut comment = None;
        let mut local = String::new();
        let mut words = Vec::new();
        while let Some(t) = p.peek() {
            match t {
                Tok::Special('@') | Tok::Special('<') => break,
                Tok::Special(c) if stop.contains(c) => break,
                Tok::Comment(c) => comment = Some(c.trim().to_string()),
                Tok::Atom(w) | Tok::Quoted(w) | Tok::Literal(w) => {
                    local.push_str(w);
                    words.push(w.clone());
                }
                Tok::Special(c) => local.push(*c),
            }
            p.i += 1;
        }
        if p.at('@') {
            p.i += 1;
            let mut host = String::new();
            while let Some(t) = p.peek() {
                match t {
                    Tok::Special(c) if stop.contains(c) => break,
                    Tok::Comment(c) => comment = Some(c.trim().to_string()),
                    Tok::Atom(w) | Tok::Quoted(w) | Tok::Literal(w) => host.push_str(w),
                    Tok::Special(c) => host.push(*c),
                }
                p.i += 1;
            }
            addr.mailbox = Some(local).filter(|l| !l.is_empty());
            addr.host = Some(host).filter(|h| !h.is_empty());
        } else if words.len() > 1 {
            // Words and no address: a display name alone (Dovecot's reading).
            addr.name = Some(words.join(" "));
        } else {
            // `From: broken`: a local part without a domain.
            addr.mailbox = Some(local).filter(|l| !l.is_empty());
        }
        addr.name = addr.name.or(comment.filter(|c| !c.is_empty()));
    }
    // Whatever is left of this element up to the separator is dropped.
    while let Some(t) = p.peek() {
        if matches!(t, Tok::Special(c) if stop.contains(c)) {
            break;
        }
        p.i += 1;
    }
    if p.i == begin {
        p.i += 1;
    }
    addr.mailbox = addr.mailbox.or(Some(MISSING_MAILBOX.to_string()));
    addr.host = addr.host.or(Some(MISSING_DOMAIN.to_string()));
    addr
}
