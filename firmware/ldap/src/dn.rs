//! Distinguished names: parsing (RFC 4514, leniently), normalising and
//! printing. Pure: no I/O, no store.
//!
//! A DN is kept as its RDNs, leaf first, each value unescaped and in the case
//! the client wrote it. Two DNs name the same entry when their normalised
//! forms are equal: attribute types go through the schema's aliases and are
//! lower-cased (`commonName` = `CN` = `cn`), values are compared with
//! caseIgnoreMatch (case folded, inner runs of spaces made one, outer spaces
//! dropped), and the AVAs of a multi-valued RDN are sorted.

use crate::schema;
use std::fmt;

/// Longest DN accepted, in bytes (a limit on input, nothing more).
pub const DN_BYTES_MAX: usize = 4096;
/// Most RDNs in one DN.
pub const DN_RDNS_MAX: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ava {
    /// The attribute type as written (`CN`, `commonName`, `2.5.4.3`).
    pub attr: String,
    /// The value, unescaped, in its own case.
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rdn {
    pub avas: Vec<Ava>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dn {
    /// Leaf first: `cn=a,ou=b` is `[cn=a, ou=b]`.
    pub rdns: Vec<Rdn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnError(pub String);

impl fmt::Display for DnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(why: impl Into<String>) -> DnError {
    DnError(why.into())
}

/// Parses a DN string. Accepts RFC 4514 strings, spaces around `,` `+` `=`
/// (as RFC 2253-era clients write them), `;` as a separator and quoted
/// values (RFC 1779). The empty string is the root DSE's DN.
pub fn parse(input: &str) -> Result<Dn, DnError> {
    if input.len() > DN_BYTES_MAX {
        return Err(err(format!("DN longer than {DN_BYTES_MAX} bytes")));
    }
    let mut p = Parser {
        s: input.as_bytes(),
        i: 0,
    };
    let mut dn = Dn::default();
    p.skip_spaces();
    if p.at_end() {
        return Ok(dn);
    }
    loop {
        let mut rdn = Rdn { avas: Vec::new() };
        loop {
            rdn.avas.push(p.ava()?);
            p.skip_spaces();
            if p.peek() == Some(b'+') {
                p.i += 1;
                continue;
            }
            break;
        }
        dn.rdns.push(rdn);
        if dn.rdns.len() > DN_RDNS_MAX {
            return Err(err(format!("more than {DN_RDNS_MAX} RDNs")));
        }
        match p.peek() {
            None => break,
            Some(b',') | Some(b';') => p.i += 1,
            Some(c) => {
                return Err(err(format!(
                    "unexpected {:?} at byte {}",
                    char::from(c),
                    p.i
                )));
            }
        }
    }
    Ok(dn)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }

    fn ava(&mut self) -> Result<Ava, DnError> {
        self.skip_spaces();
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == b'-' || c == b'.' {
                self.i += 1;
            } else {
                break;
            }
        }
        let attr = std::str::from_utf8(&self.s[start..self.i])
            .map_err(|_| err("attribute type is not ASCII"))?
            .to_string();
        if attr.is_empty() {
            return Err(err(format!("missing attribute type at byte {start}")));
        }
        let first = attr.as_bytes()[0];
        let is_oid = first.is_ascii_digit();
        let valid = if is_oid {
            attr.split('.')
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
        } else {
            first.is_ascii_alphabetic() && !attr.contains('.')
        };
        if !valid {
            return Err(err(format!("{attr:?} is not an attribute type")));
        }
        self.skip_spaces();
        if self.peek() != Some(b'=') {
            return Err(err(format!("'=' expected after {attr:?}")));
        }
        self.i += 1;
        self.skip_spaces();
        let value = match self.peek() {
            Some(b'"') => self.quoted()?,
            Some(b'#') => self.hex_string()?,
            _ => self.string()?,
        };
        Ok(Ava { attr, value })
    }

    /// An RFC 4514 string value up to an unescaped `,` `;` `+` or the end;
    /// unescaped trailing spaces are dropped.
    fn string(&mut self) -> Result<String, DnError> {
        let mut out: Vec<u8> = Vec::new();
        // Length of `out` that must be kept (ends with an escaped char).
        let mut keep = 0;
        while let Some(c) = self.peek() {
            match c {
                b',' | b';' | b'+' => break,
                b'\\' => {
                    self.i += 1;
                    let Some(next) = self.peek() else {
                        return Err(err("DN ends inside an escape"));
                    };
                    if next.is_ascii_hexdigit() {
                        let hi = hex_val(next);
                        let lo = self
                            .s
                            .get(self.i + 1)
                            .copied()
                            .filter(u8::is_ascii_hexdigit)
                            .map(hex_val)
                            .ok_or_else(|| err("bad hex escape in DN"))?;
                        out.push(hi << 4 | lo);
                        self.i += 2;
                    } else if b" \"#+,;<=>\\".contains(&next) {
                        out.push(next);
                        self.i += 1;
                    } else {
                        return Err(err(format!(
                            "\\{} is not an escape in a DN",
                            char::from(next)
                        )));
                    }
                    keep = out.len();
                }
                b'"' | b'<' | b'>' | 0 => {
                    return Err(err(format!(
                        "{:?} must be escaped in a DN value",
                        char::from(c)
                    )));
                }
                _ => {
                    out.push(c);
                    self.i += 1;
                    if c != b' ' {
                        keep = out.len();
                    }
                }
            }
        }
        out.truncate(keep);
        String::from_utf8(out).map_err(|_| err("DN value is not UTF-8"))
    }

    fn quoted(&mut self) -> Result<String, DnError> {
        self.i += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            match self.peek() {
                None => return Err(err("unterminated quoted value in DN")),
                Some(b'"') => {
                    self.i += 1;
                    break;
                }
                Some(b'\\') => {
                    let next = self
                        .s
                        .get(self.i + 1)
                        .copied()
                        .ok_or_else(|| err("DN ends inside an escape"))?;
                    out.push(next);
                    self.i += 2;
                }
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
        self.skip_spaces();
        String::from_utf8(out).map_err(|_| err("DN value is not UTF-8"))
    }

    /// `#` followed by the hex of a BER value: kept as written (lower-cased).
    fn hex_string(&mut self) -> Result<String, DnError> {
        let start = self.i;
        self.i += 1;
        while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
            self.i += 1;
        }
        let len = self.i - start - 1;
        if len == 0 || !len.is_multiple_of(2) {
            return Err(err("bad #hex value in DN"));
        }
        let text = String::from_utf8_lossy(&self.s[start..self.i]).to_ascii_lowercase();
        self.skip_spaces();
        Ok(text)
    }
}

fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

/// Escapes a value for a DN string (RFC 4514 2.4).
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
    out
}

/// caseIgnoreMatch's form of a value: case folded, runs of white space made
/// one space, outer white space dropped.
pub fn fold_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for word in value.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        for c in word.chars() {
            out.extend(c.to_lowercase());
        }
    }
    out
}

impl Ava {
    /// The attribute's canonical lower-case name (through the schema's
    /// aliases and OIDs; unknown types are just lower-cased).
    pub fn attr_id(&self) -> String {
        schema::canonical_id(&self.attr)
    }

    fn normalized(&self) -> String {
        format!(
            "{}={}",
            self.attr_id(),
            escape_value(&fold_value(&self.value))
        )
    }
}

impl Rdn {
    /// A single-AVA RDN.
    pub fn single(attr: &str, value: &str) -> Rdn {
        Rdn {
            avas: vec![Ava {
                attr: attr.to_string(),
                value: value.to_string(),
            }],
        }
    }

    /// The normalised form: each AVA normalised, sorted, joined by `+`.
    pub fn normalized(&self) -> String {
        let mut parts: Vec<String> = self.avas.iter().map(Ava::normalized).collect();
        parts.sort();
        parts.join("+")
    }

    /// The value of `attr_id` (canonical name) in this RDN, if any.
    pub fn value_of(&self, attr_id: &str) -> Option<&str> {
        self.avas
            .iter()
            .find(|a| a.attr_id() == attr_id)
            .map(|a| a.value.as_str())
    }
}

impl fmt::Display for Rdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, ava) in self.avas.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            write!(f, "{}={}", ava.attr, escape_value(&ava.value))?;
        }
        Ok(())
    }
}

impl fmt::Display for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rdn) in self.rdns.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{rdn}")?;
        }
        Ok(())
    }
}

impl Dn {
    pub fn is_root(&self) -> bool {
        self.rdns.is_empty()
    }

    /// The normalised form (see the module documentation).
    pub fn normalized(&self) -> String {
        self.rdns
            .iter()
            .map(Rdn::normalized)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// If `self` is `base` or under it, the RDNs above `base` (leaf first).
    pub fn relative_to<'a>(&'a self, base: &Dn) -> Option<&'a [Rdn]> {
        let n = base.rdns.len();
        if self.rdns.len() < n {
            return None;
        }
        let split = self.rdns.len() - n;
        let same = self.rdns[split..]
            .iter()
            .zip(&base.rdns)
            .all(|(a, b)| a.normalized() == b.normalized());
        same.then(|| &self.rdns[..split])
    }

    /// `dc=example,dc=net` for `example.net`.
    pub fn from_domain(domain: &str) -> Dn {
        Dn {
            rdns: domain
                .split('.')
                .filter(|l| !l.is_empty())
                .map(|label| Rdn::single("dc", label))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        parse(s).expect(s).normalized()
    }

    #[test]
    fn equal_dns_normalise_alike() {
        let same = [
            "cn=Jo Smith,ou=jo@acme.example,ou=ab,dc=example,dc=net",
            "CN=jo  smith , OU=Jo@Acme.Example,ou=AB,DC=Example,DC=Net",
            "commonName=JO SMITH;ou=jo@acme.example;ou=ab;dc=example;dc=net",
            "2.5.4.3=jo smith,ou=jo@acme.example,ou=ab,dc=example,dc=net",
            "cn=\"Jo Smith\",ou=jo@acme.example,ou=ab,dc=example,dc=net",
        ];
        for s in same {
            assert_eq!(norm(s), norm(same[0]), "{s}");
        }
        assert_eq!(
            norm(same[0]),
            "cn=jo smith,ou=jo@acme.example,ou=ab,dc=example,dc=net"
        );
    }

    #[test]
    fn escapes_round_trip() {
        let table = [
            (r"cn=Smith\, Jo,dc=net", "Smith, Jo"),
            (r"cn=a\+b,dc=net", "a+b"),
            (r"cn=\#1,dc=net", "#1"),
            (r"cn=\ lead,dc=net", " lead"),
            (r"cn=caf\C3\A9,dc=net", "café"),
            (r"cn=back\\slash,dc=net", r"back\slash"),
        ];
        for (text, value) in table {
            let dn = parse(text).expect(text);
            assert_eq!(dn.rdns[0].avas[0].value, value, "{text}");
            let printed = dn.to_string();
            assert_eq!(parse(&printed).expect(&printed), dn, "{printed}");
        }
    }

    #[test]
    fn multi_valued_rdns_sort() {
        assert_eq!(norm("cn=a+sn=b,dc=net"), norm("sn=B + cn=A,dc=net"));
    }

    #[test]
    fn bad_dns_are_refused() {
        for bad in [
            "cn",
            "=x",
            "cn=a,",
            "cn=a,,dc=net",
            "c n=a",
            "cn=a\"b",
            "cn=a\\",
            "cn=a\\zq",
            "1.=x",
            "cn=\"open",
            "cn=#abc",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse(&"cn=x,".repeat(40)).is_err());
        assert!(parse(&format!("cn={}", "x".repeat(DN_BYTES_MAX))).is_err());
    }

    #[test]
    fn the_root_and_relative_names() {
        assert!(parse("").expect("root").is_root());
        assert!(parse("  ").expect("root").is_root());
        let base = Dn::from_domain("example.net");
        assert_eq!(base.to_string(), "dc=example,dc=net");
        let dn = parse("cn=x,ou=ab,DC=example,dc=NET").expect("dn");
        let rel = dn.relative_to(&base).expect("under base");
        assert_eq!(rel.len(), 2);
        assert!(
            parse("dc=other,dc=net")
                .expect("dn")
                .relative_to(&base)
                .is_none()
        );
        assert!(parse("dc=net").expect("dn").relative_to(&base).is_none());
    }
}
