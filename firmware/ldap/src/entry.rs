//! Entries as the server serves them: a stored address-book entry or one of
//! the fixed entries of the tree, with each attribute's values both as
//! stored (returned to clients byte for byte) and in matching form (what
//! filters compare), plus the checks an entry must pass before it is stored.

use crate::dn::{Dn, Rdn};
use crate::filter::AttributeSource;
use crate::schema::{self, AttrDef, Usage};
use ldap3_proto::proto::{LdapPartialAttribute, LdapResultCode};
use mxrack_store::{LdapAttribute, LdapEntry, LdapValue};

/// Most values of one attribute in an entry.
pub const VALUES_PER_ATTRIBUTE_MAX: usize = 64;
/// Most attributes in an entry.
pub const ATTRIBUTES_PER_ENTRY_MAX: usize = 128;

/// One attribute of a served entry.
#[derive(Debug, Clone)]
pub struct Attribute {
    /// The schema's definition (none for a type it does not know).
    pub def: Option<&'static AttrDef>,
    /// The canonical id (lower-cased name).
    pub id: String,
    /// The name returned to clients.
    pub name: String,
    pub usage: Usage,
    pub values: Vec<Vec<u8>>,
    pub normalized: Vec<String>,
}

/// An entry ready to be matched and returned.
#[derive(Debug, Clone)]
pub struct Served {
    pub dn: String,
    pub attributes: Vec<Attribute>,
    /// The address of each attribute's schema definition (0 for none), in
    /// the order of `attributes`: a filter scans these few words instead of
    /// the attributes themselves (5,000 entries per search, each looked up
    /// several times).
    slots: Vec<usize>,
}

fn slot(def: Option<&'static AttrDef>) -> usize {
    def.map_or(0, |d| d as *const AttrDef as usize)
}

impl AttributeSource for Served {
    fn normalized_values(&self, def: &'static AttrDef) -> Option<&[String]> {
        let want = slot(Some(def));
        self.slots
            .iter()
            .position(|&s| s == want)
            .map(|i| self.attributes[i].normalized.as_slice())
    }
}

fn attribute(def_or_name: Result<&'static AttrDef, &str>, values: Vec<Vec<u8>>) -> Attribute {
    match def_or_name {
        Ok(def) => Attribute {
            def: Some(def),
            id: def.id(),
            name: def.name.to_string(),
            usage: def.usage,
            normalized: values
                .iter()
                .map(|v| schema::normalize(def.syntax, v))
                .collect(),
            values,
        },
        Err(name) => Attribute {
            def: None,
            id: name.to_ascii_lowercase(),
            name: name.to_string(),
            usage: Usage::Contact,
            normalized: values
                .iter()
                .map(|v| schema::normalize(schema::Syntax::Text, v))
                .collect(),
            values,
        },
    }
}

impl Served {
    /// A fixed entry from (name, values) pairs; `subordinates` tells
    /// whether entries can sit below it.
    pub fn fixed(dn: String, attrs: Vec<(&str, Vec<Vec<u8>>)>, subordinates: bool) -> Served {
        let mut attributes: Vec<Attribute> = attrs
            .into_iter()
            .map(|(name, values)| attribute(schema::lookup(name).ok_or(name), values))
            .collect();
        push_operational(&mut attributes, &dn, subordinates, None);
        Served::new(dn, attributes)
    }

    fn new(dn: String, attributes: Vec<Attribute>) -> Served {
        let slots = attributes.iter().map(|a| slot(a.def)).collect();
        Served {
            dn,
            attributes,
            slots,
        }
    }

    /// A stored address-book entry under `book_dn`.
    pub fn from_stored(entry: &LdapEntry, book_dn: &str) -> Served {
        let dn = format!("{},{book_dn}", entry.rdn);
        let mut attributes: Vec<Attribute> = entry
            .attributes
            .iter()
            .map(|a| {
                attribute(
                    schema::lookup(&a.name).ok_or(a.name.as_str()),
                    a.values.iter().map(|v| v.0.clone()).collect(),
                )
            })
            .collect();
        push_operational(
            &mut attributes,
            &dn,
            false,
            Some((entry.created, entry.modified)),
        );
        Served::new(dn, attributes)
    }

    pub fn attribute(&self, id: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.id == id)
    }
}

fn push_operational(
    attributes: &mut Vec<Attribute>,
    dn: &str,
    subordinates: bool,
    times: Option<(i64, i64)>,
) {
    let structural = attributes
        .iter()
        .find(|a| a.id == "objectclass")
        .and_then(|a| structural_class(&a.values));
    let mut add = |name: &str, value: Vec<u8>| {
        if let Some(def) = schema::lookup(name)
            && !attributes.iter().any(|a| a.id == def.id())
        {
            attributes.push(attribute(Ok(def), vec![value]));
        }
    };
    add("entryDN", dn.as_bytes().to_vec());
    add(
        "subschemaSubentry",
        schema::SUBSCHEMA_DN.as_bytes().to_vec(),
    );
    add(
        "hasSubordinates",
        if subordinates {
            b"TRUE".to_vec()
        } else {
            b"FALSE".to_vec()
        },
    );
    if let Some(s) = structural {
        add("structuralObjectClass", s.into_bytes());
    }
    if let Some((created, modified)) = times {
        add("createTimestamp", generalized_time(created).into_bytes());
        add("modifyTimestamp", generalized_time(modified).into_bytes());
    }
}

/// The most specific structural class among the values.
fn structural_class(values: &[Vec<u8>]) -> Option<String> {
    const ORDER: [&str; 6] = [
        "inetOrgPerson",
        "organizationalPerson",
        "person",
        "organizationalUnit",
        "organization",
        "subentry",
    ];
    ORDER
        .iter()
        .find(|c| values.iter().any(|v| v.eq_ignore_ascii_case(c.as_bytes())))
        .map(|c| c.to_string())
}

/// `YYYYMMDDHHMMSSZ` for Unix seconds (RFC 4517 3.3.13).
pub fn generalized_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Which attributes a search asked for (RFC 4511 4.5.1.8).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    all_user: bool,
    all_operational: bool,
    ids: Vec<String>,
}

impl Selection {
    pub fn new(attrs: &[String]) -> Selection {
        let mut s = Selection::default();
        for a in attrs {
            match a.as_str() {
                "*" => s.all_user = true,
                "+" => s.all_operational = true,
                "1.1" => {}
                other => s.ids.push(schema::canonical_id(other)),
            }
        }
        // No list means every user attribute; "1.1" alone means none.
        if attrs.is_empty() {
            s.all_user = true;
        }
        s
    }

    fn wants(&self, a: &Attribute) -> bool {
        match a.usage {
            Usage::Operational => self.all_operational || self.ids.contains(&a.id),
            Usage::Contact | Usage::System => self.all_user || self.ids.contains(&a.id),
        }
    }

    /// The attributes of `entry` to return.
    pub fn apply(&self, entry: &Served, types_only: bool) -> Vec<LdapPartialAttribute> {
        entry
            .attributes
            .iter()
            .filter(|a| self.wants(a))
            .map(|a| LdapPartialAttribute {
                atype: a.name.clone(),
                vals: if types_only {
                    Vec::new()
                } else {
                    a.values.clone()
                },
            })
            .collect()
    }
}

/// An LDAP error with its result code, for the operations to return.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub code: LdapResultCode,
    /// The deepest existing (and visible) entry above a missing one.
    pub matched: String,
    pub message: String,
}

pub fn refuse(code: LdapResultCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        matched: String::new(),
        message: message.into(),
    }
}

impl Refusal {
    pub fn matched(mut self, dn: impl Into<String>) -> Refusal {
        self.matched = dn.into();
        self
    }
}

impl From<mxrack_store::StoreError> for Refusal {
    fn from(e: mxrack_store::StoreError) -> Refusal {
        crate::handler::store_refusal(&e)
    }
}

/// A contact's attributes as a map from canonical id to (name, values),
/// in first-seen order.
#[derive(Debug, Clone, Default)]
pub struct Contact {
    pub attributes: Vec<(&'static AttrDef, Vec<Vec<u8>>)>,
}

impl Contact {
    /// Reads (name, values) pairs from a client: each name must be a
    /// contact attribute; values of one name are merged.
    pub fn from_client<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a [Vec<u8>])>,
    ) -> Result<Contact, Refusal> {
        let mut c = Contact::default();
        for (name, values) in pairs {
            let def = contact_def(name)?;
            for v in values {
                c.add_value(def, v.clone())?;
            }
        }
        Ok(c)
    }

    pub fn from_stored(entry: &LdapEntry) -> Contact {
        let mut c = Contact::default();
        for a in &entry.attributes {
            if let Some(def) = schema::lookup(&a.name) {
                let values = a.values.iter().map(|v| v.0.clone()).collect();
                c.attributes.push((def, values));
            }
        }
        c
    }

    fn position(&self, def: &AttrDef) -> Option<usize> {
        self.attributes.iter().position(|(d, _)| d.oid == def.oid)
    }

    /// Adds a value; attributeOrValueExists if an equal one is there.
    pub fn add_value(&mut self, def: &'static AttrDef, value: Vec<u8>) -> Result<(), Refusal> {
        check_value(def, &value)?;
        let norm = schema::normalize(def.syntax, &value);
        match self.position(def) {
            Some(i) => {
                let values = &mut self.attributes[i].1;
                if values
                    .iter()
                    .any(|v| schema::normalize(def.syntax, v) == norm)
                {
                    return Err(refuse(
                        LdapResultCode::AttributeOrValueExists,
                        format!("{} already has that value", def.name),
                    ));
                }
                values.push(value);
            }
            None => self.attributes.push((def, vec![value])),
        }
        Ok(())
    }

    /// Removes the given values, or the whole attribute when `values` is
    /// empty; noSuchAttribute if it (or a value) is not there.
    pub fn delete_values(
        &mut self,
        def: &'static AttrDef,
        values: &[Vec<u8>],
    ) -> Result<(), Refusal> {
        let Some(i) = self.position(def) else {
            return Err(refuse(
                LdapResultCode::NoSuchAttribute,
                format!("the entry has no {}", def.name),
            ));
        };
        if values.is_empty() {
            self.attributes.remove(i);
            return Ok(());
        }
        for value in values {
            let norm = schema::normalize(def.syntax, value);
            let held = &mut self.attributes[i].1;
            match held
                .iter()
                .position(|v| schema::normalize(def.syntax, v) == norm)
            {
                Some(at) => {
                    held.remove(at);
                }
                None => {
                    return Err(refuse(
                        LdapResultCode::NoSuchAttribute,
                        format!("{} has no such value", def.name),
                    ));
                }
            }
        }
        if self.attributes[i].1.is_empty() {
            self.attributes.remove(i);
        }
        Ok(())
    }

    /// Replaces every value (none: removes the attribute).
    pub fn replace(&mut self, def: &'static AttrDef, values: &[Vec<u8>]) -> Result<(), Refusal> {
        if let Some(i) = self.position(def) {
            self.attributes.remove(i);
        }
        for v in values {
            self.add_value(def, v.clone())?;
        }
        Ok(())
    }

    pub fn has_value(&self, def: &AttrDef, value: &[u8]) -> bool {
        let norm = schema::normalize(def.syntax, value);
        self.position(def).is_some_and(|i| {
            self.attributes[i]
                .1
                .iter()
                .any(|v| schema::normalize(def.syntax, v) == norm)
        })
    }

    /// Makes sure the RDN's values are in the entry (RFC 4511 4.7 lets the
    /// server add them) and checks the whole entry.
    pub fn finish(&mut self, rdn: &Rdn) -> Result<(), Refusal> {
        for ava in &rdn.avas {
            let def = contact_def(&ava.attr)?;
            if !self.has_value(def, ava.value.as_bytes()) {
                self.add_value(def, ava.value.as_bytes().to_vec())?;
            }
        }
        self.check()
    }

    /// The rules of a whole entry: object classes, `cn`, counts, single values.
    pub fn check(&self) -> Result<(), Refusal> {
        let oc = schema::lookup("objectClass")
            .map(|d| d.oid)
            .unwrap_or_default();
        let Some((_, classes)) = self.attributes.iter().find(|(d, _)| d.oid == oc) else {
            return Err(refuse(
                LdapResultCode::ObjectClassViolation,
                "an entry needs objectClass (inetOrgPerson)",
            ));
        };
        for class in classes {
            if !schema::CONTACT_OBJECT_CLASSES
                .iter()
                .any(|c| c.as_bytes().eq_ignore_ascii_case(class))
            {
                return Err(refuse(
                    LdapResultCode::ObjectClassViolation,
                    format!(
                        "object class {:?} is not one of {}",
                        String::from_utf8_lossy(class),
                        schema::CONTACT_OBJECT_CLASSES.join(", ")
                    ),
                ));
            }
        }
        let structural = ["person", "organizationalPerson", "inetOrgPerson"];
        if !classes.iter().any(|class| {
            structural
                .iter()
                .any(|s| s.as_bytes().eq_ignore_ascii_case(class))
        }) {
            return Err(refuse(
                LdapResultCode::ObjectClassViolation,
                "an entry needs a structural object class (inetOrgPerson)",
            ));
        }
        if !self.attributes.iter().any(|(d, _)| d.name == "cn") {
            return Err(refuse(
                LdapResultCode::ObjectClassViolation,
                "an entry needs cn",
            ));
        }
        if self.attributes.len() > ATTRIBUTES_PER_ENTRY_MAX {
            return Err(refuse(
                LdapResultCode::AdminLimitExceeded,
                format!("more than {ATTRIBUTES_PER_ENTRY_MAX} attributes"),
            ));
        }
        for (def, values) in &self.attributes {
            if def.single && values.len() > 1 {
                return Err(refuse(
                    LdapResultCode::ConstraintViolation,
                    format!("{} is single-valued", def.name),
                ));
            }
            if values.len() > VALUES_PER_ATTRIBUTE_MAX {
                return Err(refuse(
                    LdapResultCode::AdminLimitExceeded,
                    format!(
                        "{} has more than {VALUES_PER_ATTRIBUTE_MAX} values",
                        def.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The record the store keeps.
    pub fn into_stored(self, rdn: &Rdn, created: i64) -> LdapEntry {
        LdapEntry {
            rdn: rdn.to_string(),
            attributes: self
                .attributes
                .into_iter()
                .map(|(def, values)| LdapAttribute {
                    name: def.name.to_string(),
                    values: values.into_iter().map(LdapValue).collect(),
                })
                .collect(),
            created,
            modified: created,
            generation: 0,
            vcard: None,
        }
    }
}

/// The definition of a contact attribute a client names.
pub fn contact_def(name: &str) -> Result<&'static AttrDef, Refusal> {
    match schema::lookup(name) {
        Some(def) if def.usage == Usage::Contact => Ok(def),
        Some(def) => Err(refuse(
            LdapResultCode::ConstraintViolation,
            format!("{} cannot be written", def.name),
        )),
        None => Err(refuse(
            LdapResultCode::UndefinedAttributeType,
            format!("unknown attribute type {name:?}"),
        )),
    }
}

fn check_value(def: &AttrDef, value: &[u8]) -> Result<(), Refusal> {
    use schema::Syntax;
    let bad = |why: &str| {
        Err(refuse(
            LdapResultCode::InvalidAttributeSyntax,
            format!("{}: {why}", def.name),
        ))
    };
    match def.syntax {
        Syntax::Binary => {
            if value.is_empty() {
                return bad("empty value");
            }
        }
        _ => {
            let Ok(text) = std::str::from_utf8(value) else {
                return bad("value is not UTF-8");
            };
            if text.trim().is_empty() {
                return bad("empty value");
            }
            if def.syntax == Syntax::Ia5 && !text.is_ascii() {
                return bad("value is not ASCII");
            }
            if def.syntax == Syntax::Boolean && text != "TRUE" && text != "FALSE" {
                return bad("value is not TRUE or FALSE");
            }
        }
    }
    Ok(())
}

/// The normalised RDN that keys an entry in its book.
pub fn entry_key(rdn: &Rdn) -> String {
    rdn.normalized()
}

/// `ou=NAME,ou=ab,BASE`.
pub fn book_dn(name: &str, base: &Dn) -> String {
    format!("ou={},ou=ab,{base}", crate::dn::escape_value(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generalized_times() {
        assert_eq!(generalized_time(0), "19700101000000Z");
        assert_eq!(generalized_time(951_782_400), "20000229000000Z");
        assert_eq!(generalized_time(1_764_374_400 + 3661), "20251129010101Z");
    }

    fn jo() -> Contact {
        let oc = vec![b"top".to_vec(), b"inetOrgPerson".to_vec()];
        let cn = vec![b"Jo Smith".to_vec()];
        let mail = vec![b"jo@example.org".to_vec()];
        Contact::from_client([
            ("objectClass", oc.as_slice()),
            ("CN", cn.as_slice()),
            ("mail", mail.as_slice()),
        ])
        .expect("valid")
    }

    #[test]
    fn contact_rules() {
        let rdn = Rdn::single("cn", "Jo Smith");
        let mut c = jo();
        c.finish(&rdn).expect("valid");
        let def = contact_def("mail").expect("mail");
        assert_eq!(
            c.add_value(def, b"JO@example.org".to_vec())
                .expect_err("dup")
                .code,
            LdapResultCode::AttributeOrValueExists
        );
        assert_eq!(
            c.delete_values(def, &[b"x@y".to_vec()])
                .expect_err("none")
                .code,
            LdapResultCode::NoSuchAttribute
        );
        c.delete_values(def, &[]).expect("delete all");
        assert!(!c.has_value(def, b"jo@example.org"));
        assert_eq!(
            contact_def("entryDN").expect_err("operational").code,
            LdapResultCode::ConstraintViolation
        );
        assert_eq!(
            contact_def("foo").expect_err("unknown").code,
            LdapResultCode::UndefinedAttributeType
        );
        let dn = contact_def("displayName").expect("displayName");
        c.add_value(dn, b"A".to_vec()).expect("one");
        c.add_value(dn, b"B".to_vec())
            .expect("two, checked at the end");
        assert_eq!(
            c.check().expect_err("single").code,
            LdapResultCode::ConstraintViolation
        );
    }

    #[test]
    fn the_rdn_value_is_added_and_classes_checked() {
        let mut c = jo();
        c.finish(&Rdn::single("mail", "other@example.org"))
            .expect("rdn value added");
        assert!(c.has_value(contact_def("mail").expect("mail"), b"other@example.org"));
        let oc = vec![b"posixAccount".to_vec()];
        let cn = vec![b"x".to_vec()];
        let c = Contact::from_client([("objectClass", oc.as_slice()), ("cn", cn.as_slice())])
            .expect("parsed");
        assert_eq!(
            c.check().expect_err("class").code,
            LdapResultCode::ObjectClassViolation
        );
    }

    #[test]
    fn selections() {
        let served = Served::fixed(
            "ou=ab,dc=example,dc=net".into(),
            vec![
                ("objectClass", vec![b"organizationalUnit".to_vec()]),
                ("ou", vec![b"ab".to_vec()]),
            ],
            true,
        );
        let names = |attrs: &[&str]| -> Vec<String> {
            let attrs: Vec<String> = attrs.iter().map(|s| s.to_string()).collect();
            Selection::new(&attrs)
                .apply(&served, false)
                .into_iter()
                .map(|a| a.atype)
                .collect()
        };
        assert_eq!(names(&[]), ["objectClass", "ou"]);
        assert_eq!(names(&["OU"]), ["ou"]);
        assert_eq!(names(&["1.1"]), Vec::<String>::new());
        assert!(names(&["+"]).contains(&"entryDN".to_string()));
        assert!(!names(&["*"]).contains(&"entryDN".to_string()));
        assert_eq!(names(&["hasSubordinates"]), ["hasSubordinates"]);
    }
}
