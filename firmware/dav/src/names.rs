//! URLs and card names. Pure.
//!
//! ```text
//! /.well-known/carddav              301 -> /dav/ (RFC 6764 5)
//! /dav/                             context path: current-user-principal
//! /dav/principals/<mailbox>/        the principal (RFC 3744)
//! /dav/books/<mailbox>/             its address-book home (RFC 6352 7.1.1)
//! /dav/books/<mailbox>/personal/    its personal book (LDAP ou=<mailbox>)
//! /dav/books/<mailbox>/account/     its account's book (LDAP ou=<account>)
//! /dav/books/<mailbox>/<book>/<name>.vcf   a card (an LDAP entry)
//! ```
//!
//! A card's name and its entry's key are one another's image, so no index
//! is kept: a card PUT as `<n>.vcf` becomes the entry `uid=<n>` (the name a
//! client chose, usually its UID, is kept), and an entry made over LDAP
//! with another RDN is named `~<hex of its key>.vcf`. Names starting with
//! `~` are the server's: a client cannot create one.

use mxrack_ldap::dn::{self, Rdn};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

pub const WELL_KNOWN: &str = "/.well-known/carddav";
pub const ROOT: &str = "/dav/";
/// Longest card name accepted (before `.vcf`).
pub const CARD_NAME_MAX: usize = 200;

/// Characters escaped in a path segment we write (RFC 3986 3.3: `@` is a
/// valid pchar and stays).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']');

pub fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookSel {
    Personal,
    Account,
}

impl BookSel {
    pub fn segment(self) -> &'static str {
        match self {
            BookSel::Personal => "personal",
            BookSel::Account => "account",
        }
    }
}

/// What a path names, for the user `user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Root,
    Principal,
    Home,
    Book(BookSel),
    Card(BookSel, String),
    /// Anything else, another mailbox's resources included.
    Missing,
}

pub fn principal_href(user: &str) -> String {
    format!("/dav/principals/{}/", seg(user))
}

pub fn home_href(user: &str) -> String {
    format!("/dav/books/{}/", seg(user))
}

pub fn book_href(user: &str, book: BookSel) -> String {
    format!("{}{}/", home_href(user), book.segment())
}

pub fn card_href(user: &str, book: BookSel, name: &str) -> String {
    format!("{}{}", book_href(user, book), seg(name))
}

/// Reads a path (or an absolute URL, as a multiget's href may be) for
/// `user`. Percent-escapes are decoded per segment; `.` and `..` segments
/// name nothing (no traversal).
pub fn target(path: &str, user: &str) -> Target {
    let path = match path.find("://") {
        Some(i) => match path[i + 3..].find('/') {
            Some(j) => &path[i + 3 + j..],
            None => "/",
        },
        None => path,
    };
    let Some(rest) = path.strip_prefix("/dav") else {
        return Target::Missing;
    };
    let trailing = rest.ends_with('/');
    let mut segs = Vec::new();
    for raw in rest.split('/').filter(|s| !s.is_empty()) {
        let Ok(s) = percent_decode_str(raw).decode_utf8() else {
            return Target::Missing;
        };
        if s == "." || s == ".." || s.contains('/') {
            return Target::Missing;
        }
        segs.push(s.into_owned());
    }
    let mine = |s: &str| s.eq_ignore_ascii_case(user);
    match segs.as_slice() {
        [] => Target::Root,
        [p, who] if p == "principals" && mine(who) => Target::Principal,
        [b, who] if b == "books" && mine(who) => Target::Home,
        [b, who, book] if b == "books" && mine(who) => match book_sel(book) {
            Some(sel) => Target::Book(sel),
            None => Target::Missing,
        },
        [b, who, book, name] if b == "books" && mine(who) && !trailing => match book_sel(book) {
            Some(sel) => Target::Card(sel, name.clone()),
            None => Target::Missing,
        },
        _ => Target::Missing,
    }
}

fn book_sel(s: &str) -> Option<BookSel> {
    match s {
        "personal" => Some(BookSel::Personal),
        "account" => Some(BookSel::Account),
        _ => None,
    }
}

/// Whether a client may create a card by this name: `<1..200 of
/// A-Za-z0-9 _ . - + @>.vcf`, not starting with `~`.
fn client_name_base(name: &str) -> Option<&str> {
    let base = name.strip_suffix(".vcf")?;
    let ok = !base.is_empty()
        && base.len() <= CARD_NAME_MAX
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-+@".contains(&b));
    ok.then_some(base)
}

/// The entry a card name designates: its key, and the RDN a new entry by
/// that name gets (`None` for the server's `~` names, which only name
/// existing entries).
pub fn entry_for(name: &str) -> Option<(String, Option<Rdn>)> {
    if let Some(hex) = name.strip_prefix('~').and_then(|n| n.strip_suffix(".vcf")) {
        let key = decode_hex(hex)?;
        return Some((key, None));
    }
    let base = client_name_base(name)?;
    let rdn = Rdn::single("uid", base);
    Some((mxrack_ldap::entry::entry_key(&rdn), Some(rdn)))
}

/// The name of the card of an entry (`key`, `rdn` as stored).
pub fn card_name(key: &str, rdn: &str) -> String {
    if let Ok(parsed) = dn::parse(rdn)
        && let [only] = parsed.rdns.as_slice()
        && let [ava] = only.avas.as_slice()
        && ava.attr_id() == "uid"
    {
        let name = format!("{}.vcf", ava.value);
        if client_name_base(&name).is_some() && entry_for(&name).is_some_and(|(k, _)| k == key) {
            return name;
        }
    }
    format!("~{}.vcf", encode_hex(key))
}

fn encode_hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) || s.len() > 2 * dn::DN_BYTES_MAX {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "jo@acme.example";

    #[test]
    fn paths_name_only_the_users_own_resources() {
        assert_eq!(target("/dav/", ME), Target::Root);
        assert_eq!(target("/dav", ME), Target::Root);
        assert_eq!(
            target("/dav/principals/jo@acme.example/", ME),
            Target::Principal
        );
        assert_eq!(target("/dav/books/jo%40acme.example/", ME), Target::Home);
        assert_eq!(
            target("/dav/books/JO@acme.example/personal/", ME),
            Target::Book(BookSel::Personal)
        );
        assert_eq!(
            target(
                "https://h:8443/dav/books/jo@acme.example/account/a%20b.vcf",
                ME
            ),
            Target::Card(BookSel::Account, "a b.vcf".into())
        );
        for other in [
            "/dav/books/al@acme.example/personal/",
            "/dav/principals/al@acme.example/",
            "/dav/books/jo@acme.example/../al@acme.example/personal/",
            "/dav/books/jo@acme.example/%2e%2e/x/",
            "/dav/books/jo@acme.example/other/",
            "/dav/books/jo@acme.example/personal/a.vcf/",
            "/dav/books/jo@acme.example/personal/a/b",
            "/status",
            "/davx/",
        ] {
            assert_eq!(target(other, ME), Target::Missing, "{other}");
        }
    }

    #[test]
    fn card_names_and_entry_keys_map_both_ways() {
        let (key, rdn) = entry_for("4f1c-AB.vcf").unwrap();
        let rdn = rdn.unwrap();
        assert_eq!(card_name(&key, &rdn.to_string()), "4f1c-AB.vcf");
        // An LDAP entry named by cn gets a server name that finds it.
        let name = card_name("cn=jo smith", "cn=Jo Smith");
        assert!(name.starts_with('~'));
        assert_eq!(entry_for(&name), Some(("cn=jo smith".to_string(), None)));
        // Clients cannot pick server names or odd ones.
        assert_eq!(entry_for("~zz.vcf"), None);
        assert_eq!(entry_for("a,b.vcf"), None);
        assert_eq!(entry_for("noext"), None);
        assert_eq!(entry_for(&format!("{}.vcf", "a".repeat(201))), None);
    }
}
