//! One book, two protocols: how a vCard (RFC 6350, and 3.0 of RFC 2426)
//! maps to the LDAP attributes Thunderbird and Outlook read, and back.
//!
//! Pure. The card is parsed by `calcard` (Stalwart's parser). What a client
//! PUTs is stored as it was sent ([`LdapEntry::vcard`]) beside the
//! attributes it maps to; it is served back as sent (converted when the
//! client asks for the other version) as long as LDAP has not changed those
//! attributes since. When it has, the card's mapped properties are rebuilt
//! from the attributes and everything else in it (photo, custom `X-`
//! fields, UID, categories) is kept. An entry made over LDAP is served as a
//! vCard 3.0 built from its attributes (RFC 6352 5.1: 3.0 is the version
//! every server must offer).
//!
//! | vCard            | LDAP                                              |
//! |------------------|---------------------------------------------------|
//! | FN               | cn (from N, EMAIL or ORG when there is no FN)    |
//! | N                | sn; givenName                                     |
//! | NICKNAME         | mozillaNickname                                   |
//! | EMAIL            | mail (every address)                              |
//! | TEL              | telephoneNumber; CELL mobile; HOME homePhone; FAX facsimileTelephoneNumber; PAGER pager |
//! | ORG              | o; ou                                             |
//! | TITLE, NOTE      | title, description                                |
//! | ADR (work)       | street, l, st, postalCode, c                      |
//! | ADR;TYPE=HOME    | mozillaHome{Street,LocalityName,State,PostalCode,CountryName} |
//! | URL, URL home    | labeledURI, mozillaHomeUrl                        |
//! | BDAY             | birthyear, birthmonth, birthday                   |
//!
//! Kept only in the vCard: PHOTO (an LDAP-made entry's jpegPhoto is shown
//! as PHOTO, but a card's PHOTO is not copied into jpegPhoto, so a photo is
//! stored once), UID, and every other property. Kept only in LDAP: any
//! other attribute an LDAP client wrote (seeAlso, roomNumber, ...). A value
//! LDAP's schema refuses (an e-mail address that is not ASCII) stays in the
//! card only.

use calcard::vcard::{
    VCard, VCardEntry, VCardParameterName, VCardParameterValue, VCardProperty, VCardType,
    VCardValue, VCardVersion,
};
use calcard::{Entry, Parser};
use mxrack_ldap::entry::{Contact, Refusal};
use mxrack_ldap::schema;
use mxrack_store::LdapEntry;

/// The LDAP attributes the mapping owns: written from a card, and compared
/// to tell whether LDAP changed an entry since its card was stored.
pub const MAPPED: &[&str] = &[
    "cn",
    "sn",
    "givenName",
    "mozillaNickname",
    "mail",
    "telephoneNumber",
    "mobile",
    "homePhone",
    "facsimileTelephoneNumber",
    "pager",
    "o",
    "ou",
    "title",
    "description",
    "street",
    "l",
    "st",
    "postalCode",
    "c",
    "mozillaHomeStreet",
    "mozillaHomeLocalityName",
    "mozillaHomeState",
    "mozillaHomePostalCode",
    "mozillaHomeCountryName",
    "labeledURI",
    "mozillaHomeUrl",
    "birthyear",
    "birthmonth",
    "birthday",
];

/// The object classes of an entry made from a card.
pub const OBJECT_CLASSES: &[&str] = &["top", "person", "organizationalPerson", "inetOrgPerson"];

fn mapped(name: &str) -> bool {
    MAPPED.iter().any(|m| m.eq_ignore_ascii_case(name))
}

fn mapped_property(p: &VCardProperty) -> bool {
    matches!(
        p,
        VCardProperty::Fn
            | VCardProperty::N
            | VCardProperty::Nickname
            | VCardProperty::Email
            | VCardProperty::Tel
            | VCardProperty::Org
            | VCardProperty::Title
            | VCardProperty::Note
            | VCardProperty::Adr
            | VCardProperty::Url
            | VCardProperty::Bday
    )
}

/// Why a body is not one vCard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardError(pub String);

/// Parses a body that must hold exactly one vCard.
pub fn parse_one(text: &str) -> Result<VCard, CardError> {
    // RFC 6350 3.3: a vCard ends with END:VCARD (the parser would accept
    // a body cut short).
    let last = text.trim_end().rsplit(['\n', '\r']).next().unwrap_or("");
    if !last.trim().eq_ignore_ascii_case("END:VCARD") {
        return Err(CardError("the vCard does not end with END:VCARD".into()));
    }
    let mut parser = Parser::new(text);
    let card = match parser.entry() {
        Entry::VCard(card) => card,
        Entry::ICalendar(_) => return Err(CardError("an iCalendar object, not a vCard".into())),
        other => return Err(CardError(format!("not a vCard: {other:?}"))),
    };
    match parser.entry() {
        Entry::Eof => Ok(card),
        _ => Err(CardError(
            "more than one object (RFC 6352 5.1: one vCard per resource)".into(),
        )),
    }
}

/// The version a card says it is (3.0 when it does not say: RFC 6352 5.1).
pub fn version_of(card: &VCard) -> VCardVersion {
    card.version().unwrap_or(VCardVersion::V3_0)
}

/// The text of a value (a comma list joined back).
fn value_text(v: &VCardValue) -> Option<String> {
    match v {
        VCardValue::Text(s) => Some(s.clone()),
        VCardValue::Component(parts) => Some(parts.join(",")),
        VCardValue::Integer(i) => Some(i.to_string()),
        VCardValue::Float(f) => Some(f.to_string()),
        VCardValue::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Component `i` of a structured value (N, ADR, ORG).
fn component(e: &VCardEntry, i: usize) -> String {
    e.values
        .get(i)
        .and_then(value_text)
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn first_text(e: &VCardEntry) -> String {
    e.values
        .first()
        .and_then(value_text)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Whether a property carries TYPE=`t` (as a known type or as text).
fn has_type(e: &VCardEntry, t: VCardType, text: &str) -> bool {
    e.params.iter().any(|p| {
        p.name == VCardParameterName::Type
            && match &p.value {
                VCardParameterValue::Type(x) => *x == t,
                VCardParameterValue::Text(s) => s.eq_ignore_ascii_case(text),
                _ => false,
            }
    })
}

/// The (attribute, value) pairs a card maps to, in card order.
pub fn attributes_of(card: &VCard) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    let mut push = |attr: &'static str, value: String| {
        if !value.trim().is_empty() {
            out.push((attr, value));
        }
    };
    let mut cn = None;
    let mut fallback_cn = Vec::new();
    for e in &card.entries {
        match e.name {
            VCardProperty::Fn if cn.is_none() => {
                cn = Some(first_text(e)).filter(|s| !s.is_empty());
            }
            VCardProperty::N => {
                let (family, given) = (component(e, 0), component(e, 1));
                let whole = format!("{given} {family}").trim().to_string();
                if !whole.is_empty() {
                    fallback_cn.push(whole);
                }
                push("sn", family);
                push("givenName", given);
            }
            VCardProperty::Nickname => push("mozillaNickname", first_text(e)),
            VCardProperty::Email => {
                let a = first_text(e);
                fallback_cn.push(a.clone());
                push("mail", a);
            }
            VCardProperty::Tel => {
                let number = first_text(e);
                let number = number
                    .strip_prefix("tel:")
                    .map(str::to_string)
                    .unwrap_or(number);
                let attr = if has_type(e, VCardType::Fax, "fax") {
                    "facsimileTelephoneNumber"
                } else if has_type(e, VCardType::Cell, "cell") {
                    "mobile"
                } else if has_type(e, VCardType::Pager, "pager") {
                    "pager"
                } else if has_type(e, VCardType::Home, "home") {
                    "homePhone"
                } else {
                    "telephoneNumber"
                };
                push(attr, number);
            }
            VCardProperty::Org => {
                let o = component(e, 0);
                fallback_cn.push(o.clone());
                push("o", o);
                push("ou", component(e, 1));
            }
            VCardProperty::Title => push("title", first_text(e)),
            VCardProperty::Note => push("description", first_text(e)),
            VCardProperty::Adr => {
                let home = has_type(e, VCardType::Home, "home");
                let names = if home {
                    [
                        "mozillaHomeStreet",
                        "mozillaHomeLocalityName",
                        "mozillaHomeState",
                        "mozillaHomePostalCode",
                        "mozillaHomeCountryName",
                    ]
                } else {
                    ["street", "l", "st", "postalCode", "c"]
                };
                // ADR: post office box; extended; street; locality; region;
                // postal code; country (RFC 6350 6.3.1).
                for (i, attr) in names.into_iter().enumerate() {
                    push(attr, component(e, i + 2));
                }
            }
            VCardProperty::Url => {
                let attr = if has_type(e, VCardType::Home, "home") {
                    "mozillaHomeUrl"
                } else {
                    "labeledURI"
                };
                push(attr, first_text(e));
            }
            VCardProperty::Bday => {
                if let Some(VCardValue::PartialDateTime(d)) = e.values.first() {
                    if let Some(y) = d.year {
                        push("birthyear", y.to_string());
                    }
                    if let Some(m) = d.month {
                        push("birthmonth", format!("{m:02}"));
                    }
                    if let Some(day) = d.day {
                        push("birthday", format!("{day:02}"));
                    }
                } else {
                    let t = first_text(e);
                    let digits: String = t.chars().filter(char::is_ascii_digit).collect();
                    if digits.len() == 8 {
                        push("birthyear", digits[..4].to_string());
                        push("birthmonth", digits[4..6].to_string());
                        push("birthday", digits[6..8].to_string());
                    }
                }
            }
            _ => {}
        }
    }
    let cn = cn
        .or_else(|| fallback_cn.into_iter().find(|s| !s.is_empty()))
        .unwrap_or_else(|| "(no name)".to_string());
    out.insert(0, ("cn", cn));
    out
}

/// The LDAP contact a card makes: the mapped attributes (a value LDAP's
/// schema refuses, or a duplicate, stays in the card only), the object
/// classes, and every other attribute of `keep` (an existing entry's
/// attributes the mapping does not own). The caller finishes it with the
/// RDN and checks it.
pub fn contact_of(card: &VCard, keep: Option<&LdapEntry>) -> Result<Contact, Refusal> {
    let mut contact = Contact::default();
    let oc = mxrack_ldap::entry::contact_def("objectClass")?;
    for class in OBJECT_CLASSES {
        contact.add_value(oc, class.as_bytes().to_vec())?;
    }
    if let Some(entry) = keep {
        for a in &entry.attributes {
            if mapped(&a.name) || a.name.eq_ignore_ascii_case("objectClass") {
                continue;
            }
            if let Ok(def) = mxrack_ldap::entry::contact_def(&a.name) {
                for v in &a.values {
                    let _ = contact.add_value(def, v.0.clone());
                }
            }
        }
    }
    for (attr, value) in attributes_of(card) {
        let def = mxrack_ldap::entry::contact_def(attr)?;
        if def.single && contact.attributes.iter().any(|(d, _)| d.oid == def.oid) {
            continue;
        }
        let _ = contact.add_value(def, value.into_bytes());
    }
    Ok(contact)
}

/// The mapped attributes of a stored entry, normalised for comparison.
fn mapped_now(attrs: impl Iterator<Item = (String, Vec<Vec<u8>>)>) -> Vec<(String, Vec<Vec<u8>>)> {
    let mut out: Vec<(String, Vec<Vec<u8>>)> = attrs
        .filter(|(name, _)| mapped(name))
        .map(|(name, mut values)| {
            let syntax = schema::lookup(&name).map(|d| d.syntax);
            if let Some(syntax) = syntax {
                for v in &mut values {
                    *v = schema::normalize(syntax, v).into_bytes();
                }
            }
            values.sort();
            (name.to_ascii_lowercase(), values)
        })
        .collect();
    out.sort();
    out
}

/// Whether the card stored with `entry` still says what its attributes say.
fn card_is_current(card: &VCard, entry: &LdapEntry) -> bool {
    let Ok(from_card) = contact_of(card, None) else {
        return false;
    };
    let a = mapped_now(
        from_card
            .attributes
            .into_iter()
            .map(|(d, v)| (d.name.to_string(), v)),
    );
    let b = mapped_now(entry.attributes.iter().map(|a| {
        (
            a.name.clone(),
            a.values.iter().map(|v| v.0.clone()).collect(),
        )
    }));
    a == b
}

/// Escapes a vCard text value (RFC 6350 3.4).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ',' => out.push_str("\\,"),
            ';' => out.push_str("\\;"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// The mapped properties of an entry's attributes, as vCard 3.0 lines.
fn lines_from_attributes(entry: &LdapEntry, with_photo: bool) -> String {
    let get = |name: &str| -> Vec<String> {
        entry
            .attributes
            .iter()
            .filter(|a| a.name.eq_ignore_ascii_case(name))
            .flat_map(|a| a.values.iter())
            .filter_map(|v| std::str::from_utf8(&v.0).ok().map(str::to_string))
            .collect()
    };
    let one = |name: &str| get(name).into_iter().next().unwrap_or_default();
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push_str("\r\n");
    };
    line(format!("FN:{}", esc(&one("cn"))));
    let (sn, given) = (one("sn"), one("givenName"));
    line(format!("N:{};{};;;", esc(&sn), esc(&given)));
    for v in get("mozillaNickname") {
        line(format!("NICKNAME:{}", esc(&v)));
    }
    for v in get("mail") {
        line(format!("EMAIL;TYPE=INTERNET:{}", esc(&v)));
    }
    for (attr, types) in [
        ("telephoneNumber", "WORK,VOICE"),
        ("mobile", "CELL"),
        ("homePhone", "HOME,VOICE"),
        ("facsimileTelephoneNumber", "WORK,FAX"),
        ("pager", "PAGER"),
    ] {
        for v in get(attr) {
            line(format!("TEL;TYPE={types}:{}", esc(&v)));
        }
    }
    let (o, ou) = (one("o"), one("ou"));
    if !o.is_empty() || !ou.is_empty() {
        line(format!("ORG:{};{}", esc(&o), esc(&ou)));
    }
    for v in get("title") {
        line(format!("TITLE:{}", esc(&v)));
    }
    for v in get("description") {
        line(format!("NOTE:{}", esc(&v)));
    }
    for (types, attrs) in [
        ("WORK", ["street", "l", "st", "postalCode", "c"]),
        (
            "HOME",
            [
                "mozillaHomeStreet",
                "mozillaHomeLocalityName",
                "mozillaHomeState",
                "mozillaHomePostalCode",
                "mozillaHomeCountryName",
            ],
        ),
    ] {
        let parts: Vec<String> = attrs.iter().map(|a| esc(&one(a))).collect();
        if parts.iter().any(|p| !p.is_empty()) {
            line(format!("ADR;TYPE={types}:;;{}", parts.join(";")));
        }
    }
    for v in get("labeledURI") {
        // labeledURI is "URI [label]" (RFC 2079).
        let uri = v.split_whitespace().next().unwrap_or_default().to_string();
        line(format!("URL;TYPE=WORK:{uri}"));
    }
    for v in get("mozillaHomeUrl") {
        line(format!("URL;TYPE=HOME:{v}"));
    }
    let (y, m, d) = (one("birthyear"), one("birthmonth"), one("birthday"));
    if let (Ok(y), Ok(m), Ok(d)) = (y.parse::<u16>(), m.parse::<u8>(), d.parse::<u8>()) {
        line(format!("BDAY:{y:04}-{m:02}-{d:02}"));
    }
    if with_photo {
        use base64::Engine;
        for a in entry
            .attributes
            .iter()
            .filter(|a| a.name.eq_ignore_ascii_case("jpegPhoto"))
        {
            for v in a.values.iter().take(1) {
                let b64 = base64::engine::general_purpose::STANDARD.encode(&v.0);
                line(format!("PHOTO;ENCODING=b;TYPE=JPEG:{b64}"));
            }
        }
    }
    out
}

/// The vCard of an entry, in `want` (its own version when `None`), and the
/// version it is in. `uid` is the UID given to an entry made over LDAP.
pub fn render(entry: &LdapEntry, uid: &str, want: Option<VCardVersion>) -> (String, VCardVersion) {
    if let Some(stored) = &entry.vcard
        && let Ok(card) = parse_one(stored)
    {
        let own = version_of(&card);
        if card_is_current(&card, entry) {
            if want.is_none_or(|w| w == own) {
                return (stored.clone(), own);
            }
            let want = want.unwrap_or(own);
            return (write(&card, want), want);
        }
        // LDAP changed the entry since: the mapped properties from the
        // attributes, everything else from the card.
        let lines = lines_from_attributes(entry, false);
        let fresh = parse_one(&format!(
            "BEGIN:VCARD\r\nVERSION:3.0\r\n{lines}END:VCARD\r\n"
        ))
        .unwrap_or_default();
        let mut merged = VCard {
            entries: card
                .entries
                .into_iter()
                .filter(|e| !mapped_property(&e.name))
                .collect(),
        };
        merged.entries.extend(
            fresh
                .entries
                .into_iter()
                .filter(|e| mapped_property(&e.name)),
        );
        let want = want.unwrap_or(own);
        return (write(&merged, want), want);
    }
    let text = format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{}\r\n{}END:VCARD\r\n",
        esc(uid),
        lines_from_attributes(entry, true)
    );
    match want {
        Some(VCardVersion::V4_0) => match parse_one(&text) {
            Ok(card) => (write(&card, VCardVersion::V4_0), VCardVersion::V4_0),
            Err(_) => (text, VCardVersion::V3_0),
        },
        _ => (text, VCardVersion::V3_0),
    }
}

fn write(card: &VCard, version: VCardVersion) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = card.write_to(&mut out, version);
    out
}

/// The text values of a property of a card, for addressbook-query's
/// text-match (RFC 6352 10.5.4).
pub fn property_texts(card: &VCard, name: &str) -> Vec<String> {
    card.entries
        .iter()
        .filter(|e| e.name.as_str().eq_ignore_ascii_case(name))
        .map(|e| {
            e.values
                .iter()
                .filter_map(value_text)
                .collect::<Vec<_>>()
                .join(";")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxrack_store::{LdapAttribute, LdapValue};

    const JO: &str = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:jo-1\r\nFN:Jo Smith\r\nN:Smith;Jo;;;\r\n\
EMAIL;TYPE=INTERNET:jo@acme.example\r\nEMAIL;TYPE=HOME:jo@home.example\r\nTEL;TYPE=CELL:+1 555 0100\r\n\
TEL;TYPE=WORK:+1 555 0199\r\nORG:Acme;Sales\r\nADR;TYPE=WORK:;;1 Main St;Springfield;IL;62701;US\r\n\
X-CUSTOM:kept\r\nEND:VCARD\r\n";

    fn stored(card: &str) -> LdapEntry {
        let parsed = parse_one(card).unwrap();
        let contact = contact_of(&parsed, None).unwrap();
        LdapEntry {
            rdn: "uid=jo-1".into(),
            attributes: contact
                .attributes
                .into_iter()
                .map(|(d, v)| LdapAttribute {
                    name: d.name.to_string(),
                    values: v.into_iter().map(LdapValue).collect(),
                })
                .collect(),
            created: 0,
            modified: 0,
            generation: 1,
            vcard: Some(card.to_string()),
        }
    }

    fn values(e: &LdapEntry, name: &str) -> Vec<String> {
        e.attributes
            .iter()
            .filter(|a| a.name == name)
            .flat_map(|a| a.values.iter())
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .collect()
    }

    #[test]
    fn a_card_maps_to_the_attributes_thunderbird_reads() {
        let e = stored(JO);
        assert_eq!(values(&e, "cn"), ["Jo Smith"]);
        assert_eq!(values(&e, "sn"), ["Smith"]);
        assert_eq!(values(&e, "givenName"), ["Jo"]);
        assert_eq!(values(&e, "mail"), ["jo@acme.example", "jo@home.example"]);
        assert_eq!(values(&e, "mobile"), ["+1 555 0100"]);
        assert_eq!(values(&e, "telephoneNumber"), ["+1 555 0199"]);
        assert_eq!(values(&e, "o"), ["Acme"]);
        assert_eq!(values(&e, "ou"), ["Sales"]);
        assert_eq!(values(&e, "l"), ["Springfield"]);
        assert_eq!(values(&e, "postalCode"), ["62701"]);
    }

    #[test]
    fn a_stored_card_comes_back_as_sent_until_ldap_changes_it() {
        let mut e = stored(JO);
        let (text, v) = render(&e, "ignored", None);
        assert_eq!(text, JO);
        assert_eq!(v, VCardVersion::V3_0);
        let (v4, _) = render(&e, "ignored", Some(VCardVersion::V4_0));
        assert!(v4.contains("VERSION:4.0"), "{v4}");
        // LDAP replaces the mail addresses: the card shows them, and keeps
        // its custom field and UID.
        for a in &mut e.attributes {
            if a.name == "mail" {
                a.values = vec![LdapValue(b"jo@new.example".to_vec())];
            }
        }
        let (text, _) = render(&e, "ignored", None);
        assert!(text.contains("jo@new.example"), "{text}");
        assert!(!text.contains("jo@home.example"), "{text}");
        assert!(text.contains("X-CUSTOM:kept"), "{text}");
        assert!(text.contains("UID:jo-1"), "{text}");
    }

    #[test]
    fn an_ldap_entry_renders_as_a_card_that_maps_back_to_itself() {
        let mut e = stored(JO);
        e.vcard = None;
        let (text, v) = render(&e, "~abc", None);
        assert_eq!(v, VCardVersion::V3_0);
        assert!(
            text.starts_with("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:~abc\r\n"),
            "{text}"
        );
        let back = stored(&text);
        for attr in MAPPED {
            assert_eq!(values(&back, attr), values(&e, attr), "{attr}");
        }
    }

    #[test]
    fn a_card_without_fn_gets_a_cn_and_bad_bodies_are_refused() {
        let card =
            parse_one("BEGIN:VCARD\r\nVERSION:4.0\r\nEMAIL:x@y.example\r\nEND:VCARD\r\n").unwrap();
        assert_eq!(attributes_of(&card)[0], ("cn", "x@y.example".to_string()));
        assert!(parse_one("hello").is_err());
        assert!(parse_one("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:No End\r\n").is_err());
        assert!(parse_one("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n").is_err());
        let two = "BEGIN:VCARD\r\nFN:a\r\nEND:VCARD\r\nBEGIN:VCARD\r\nFN:b\r\nEND:VCARD\r\n";
        assert!(parse_one(two).is_err());
    }
}
