//! The schema the server enforces and publishes: attribute types with their
//! names, aliases and matching, the object classes of address-book entries,
//! and the two discovery entries (the root DSE and `cn=Subschema`).
//!
//! Entries are inetOrgPerson (RFC 2798, with person/organizationalPerson of
//! RFC 4519) plus Thunderbird's auxiliary class mozillaAbPersonAlpha, which
//! together hold every field Thunderbird, Outlook and Apple Contacts map.
//! One relaxation against RFC 4519: `sn` is not required (a contact known only
//! by a company or a nickname is normal in an address book).

use std::collections::HashMap;
use std::sync::OnceLock;

/// How values of an attribute compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// caseIgnoreMatch / caseIgnoreSubstringsMatch on UTF-8 text.
    Text,
    /// IA5 text (mail addresses): caseIgnoreIA5Match.
    Ia5,
    /// telephoneNumberMatch: case, spaces and hyphens do not count.
    Telephone,
    /// Octet strings (photos, certificates): exact bytes, no substrings.
    Binary,
    /// Object identifiers and descriptors (objectClass): case-insensitive.
    Oid,
    /// TRUE / FALSE.
    Boolean,
}

impl Syntax {
    fn oid(self) -> &'static str {
        match self {
            Syntax::Text => "1.3.6.1.4.1.1466.115.121.1.15",
            Syntax::Ia5 => "1.3.6.1.4.1.1466.115.121.1.26",
            Syntax::Telephone => "1.3.6.1.4.1.1466.115.121.1.50",
            Syntax::Binary => "1.3.6.1.4.1.1466.115.121.1.40",
            Syntax::Oid => "1.3.6.1.4.1.1466.115.121.1.38",
            Syntax::Boolean => "1.3.6.1.4.1.1466.115.121.1.7",
        }
    }

    fn matching(self) -> (&'static str, Option<&'static str>) {
        match self {
            Syntax::Text => ("caseIgnoreMatch", Some("caseIgnoreSubstringsMatch")),
            Syntax::Ia5 => ("caseIgnoreIA5Match", Some("caseIgnoreIA5SubstringsMatch")),
            Syntax::Telephone => (
                "telephoneNumberMatch",
                Some("telephoneNumberSubstringsMatch"),
            ),
            Syntax::Binary => ("octetStringMatch", None),
            Syntax::Oid => ("objectIdentifierMatch", None),
            Syntax::Boolean => ("booleanMatch", None),
        }
    }
}

/// Where an attribute may appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A field of an address-book entry: clients write it.
    Contact,
    /// Held by the fixed entries of the tree (containers, root DSE,
    /// subschema); clients cannot write it.
    System,
    /// Computed by the server; returned only when asked for by name or `+`.
    Operational,
}

#[derive(Debug, PartialEq)]
pub struct AttrDef {
    /// The name the server returns.
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub oid: &'static str,
    pub syntax: Syntax,
    pub single: bool,
    pub usage: Usage,
}

impl AttrDef {
    /// The canonical id: the lower-cased name.
    pub fn id(&self) -> String {
        self.name.to_ascii_lowercase()
    }
}

const fn a(
    name: &'static str,
    aliases: &'static [&'static str],
    oid: &'static str,
    syntax: Syntax,
    single: bool,
    usage: Usage,
) -> AttrDef {
    AttrDef {
        name,
        aliases,
        oid,
        syntax,
        single,
        usage,
    }
}

use Syntax::*;
use Usage::*;

/// Every attribute type the server knows.
pub static ATTRIBUTES: &[AttrDef] = &[
    a("objectClass", &[], "2.5.4.0", Oid, false, Contact),
    // person, organizationalPerson (RFC 4519)
    a("cn", &["commonName"], "2.5.4.3", Text, false, Contact),
    a("sn", &["surname"], "2.5.4.4", Text, false, Contact),
    a("description", &[], "2.5.4.13", Text, false, Contact),
    a(
        "telephoneNumber",
        &[],
        "2.5.4.20",
        Telephone,
        false,
        Contact,
    ),
    a("seeAlso", &[], "2.5.4.34", Text, false, Contact),
    a("title", &[], "2.5.4.12", Text, false, Contact),
    a(
        "facsimileTelephoneNumber",
        &["fax"],
        "2.5.4.23",
        Telephone,
        false,
        Contact,
    ),
    a(
        "street",
        &["streetAddress"],
        "2.5.4.9",
        Text,
        false,
        Contact,
    ),
    a("postOfficeBox", &[], "2.5.4.18", Text, false, Contact),
    a("postalCode", &[], "2.5.4.17", Text, false, Contact),
    a("postalAddress", &[], "2.5.4.16", Text, false, Contact),
    a(
        "physicalDeliveryOfficeName",
        &[],
        "2.5.4.19",
        Text,
        false,
        Contact,
    ),
    a(
        "ou",
        &["organizationalUnitName"],
        "2.5.4.11",
        Text,
        false,
        Contact,
    ),
    a(
        "st",
        &["stateOrProvinceName"],
        "2.5.4.8",
        Text,
        false,
        Contact,
    ),
    a("l", &["localityName"], "2.5.4.7", Text, false, Contact),
    // inetOrgPerson (RFC 2798) and its friends
    a("businessCategory", &[], "2.5.4.15", Text, false, Contact),
    a(
        "carLicense",
        &[],
        "2.16.840.1.113730.3.1.1",
        Text,
        false,
        Contact,
    ),
    a(
        "departmentNumber",
        &[],
        "2.16.840.1.113730.3.1.2",
        Text,
        false,
        Contact,
    ),
    a(
        "displayName",
        &[],
        "2.16.840.1.113730.3.1.241",
        Text,
        true,
        Contact,
    ),
    a(
        "employeeNumber",
        &[],
        "2.16.840.1.113730.3.1.3",
        Text,
        true,
        Contact,
    ),
    a(
        "employeeType",
        &[],
        "2.16.840.1.113730.3.1.4",
        Text,
        false,
        Contact,
    ),
    a("givenName", &["gn"], "2.5.4.42", Text, false, Contact),
    a(
        "homePhone",
        &["homeTelephoneNumber"],
        "0.9.2342.19200300.100.1.20",
        Telephone,
        false,
        Contact,
    ),
    a(
        "homePostalAddress",
        &[],
        "0.9.2342.19200300.100.1.39",
        Text,
        false,
        Contact,
    ),
    a("initials", &[], "2.5.4.43", Text, false, Contact),
    a(
        "jpegPhoto",
        &[],
        "0.9.2342.19200300.100.1.60",
        Binary,
        false,
        Contact,
    ),
    a(
        "labeledURI",
        &[],
        "1.3.6.1.4.1.250.1.57",
        Text,
        false,
        Contact,
    ),
    a(
        "mail",
        &["rfc822Mailbox"],
        "0.9.2342.19200300.100.1.3",
        Ia5,
        false,
        Contact,
    ),
    a(
        "manager",
        &[],
        "0.9.2342.19200300.100.1.10",
        Text,
        false,
        Contact,
    ),
    a(
        "mobile",
        &["mobileTelephoneNumber"],
        "0.9.2342.19200300.100.1.41",
        Telephone,
        false,
        Contact,
    ),
    a("o", &["organizationName"], "2.5.4.10", Text, false, Contact),
    a(
        "pager",
        &["pagerTelephoneNumber"],
        "0.9.2342.19200300.100.1.42",
        Telephone,
        false,
        Contact,
    ),
    a(
        "roomNumber",
        &[],
        "0.9.2342.19200300.100.1.6",
        Text,
        false,
        Contact,
    ),
    a(
        "secretary",
        &[],
        "0.9.2342.19200300.100.1.21",
        Text,
        false,
        Contact,
    ),
    a(
        "uid",
        &["userid"],
        "0.9.2342.19200300.100.1.1",
        Text,
        false,
        Contact,
    ),
    a("userCertificate", &[], "2.5.4.36", Binary, false, Contact),
    a(
        "preferredLanguage",
        &[],
        "2.16.840.1.113730.3.1.39",
        Text,
        true,
        Contact,
    ),
    a(
        "userSMIMECertificate",
        &[],
        "2.16.840.1.113730.3.1.40",
        Binary,
        false,
        Contact,
    ),
    a("c", &["countryName"], "2.5.4.6", Text, true, Contact),
    // mozillaAbPersonAlpha (Thunderbird). The OIDs are in Mozilla's arc;
    // clients go by the names.
    a(
        "mozillaNickname",
        &["xmozillanickname"],
        "1.3.6.1.4.1.13769.2.1",
        Text,
        true,
        Contact,
    ),
    a(
        "mozillaUseHtmlMail",
        &["xmozillausehtmlmail"],
        "1.3.6.1.4.1.13769.2.2",
        Boolean,
        true,
        Contact,
    ),
    a(
        "mozillaSecondEmail",
        &["xmozillasecondemail"],
        "1.3.6.1.4.1.13769.2.3",
        Ia5,
        true,
        Contact,
    ),
    a(
        "mozillaHomeStreet",
        &[],
        "1.3.6.1.4.1.13769.3.1",
        Text,
        true,
        Contact,
    ),
    a(
        "mozillaHomeStreet2",
        &[],
        "1.3.6.1.4.1.13769.3.2",
        Text,
        true,
        Contact,
    ),
    a(
        "mozillaHomeLocalityName",
        &[],
        "1.3.6.1.4.1.13769.3.3",
        Text,
        true,
        Contact,
    ),
    a(
        "mozillaHomeState",
        &[],
        "1.3.6.1.4.1.13769.3.4",
        Text,
        true,
        Contact,
    ),
    a(
        "mozillaHomePostalCode",
        &[],
        "1.3.6.1.4.1.13769.3.5",
        Text,
        true,
        Contact,
    ),
    a(
        "mozillaHomeCountryName",
        &[],
        "1.3.6.1.4.1.13769.3.6",
        Text,
        true,
        Contact,
    ),
    a(
        "mozillaHomeUrl",
        &[],
        "1.3.6.1.4.1.13769.3.7",
        Text,
        true,
        Contact,
    ),
    a(
        "mozillaWorkStreet2",
        &[],
        "1.3.6.1.4.1.13769.3.8",
        Text,
        true,
        Contact,
    ),
    a(
        "mozillaWorkUrl",
        &[],
        "1.3.6.1.4.1.13769.3.9",
        Text,
        true,
        Contact,
    ),
    a(
        "mozillaCustom1",
        &[],
        "1.3.6.1.4.1.13769.4.1",
        Text,
        true,
        Contact,
    ),
    a(
        "mozillaCustom2",
        &[],
        "1.3.6.1.4.1.13769.4.2",
        Text,
        true,
        Contact,
    ),
    a(
        "mozillaCustom3",
        &[],
        "1.3.6.1.4.1.13769.4.3",
        Text,
        true,
        Contact,
    ),
    a(
        "mozillaCustom4",
        &[],
        "1.3.6.1.4.1.13769.4.4",
        Text,
        true,
        Contact,
    ),
    a(
        "nsAIMid",
        &[],
        "2.16.840.1.113730.3.1.2013",
        Text,
        true,
        Contact,
    ),
    a(
        "birthyear",
        &[],
        "1.3.6.1.4.1.13769.5.1",
        Text,
        true,
        Contact,
    ),
    a(
        "birthmonth",
        &[],
        "1.3.6.1.4.1.13769.5.2",
        Text,
        true,
        Contact,
    ),
    a(
        "birthday",
        &[],
        "1.3.6.1.4.1.13769.5.3",
        Text,
        true,
        Contact,
    ),
    // The fixed entries of the tree.
    a(
        "dc",
        &["domainComponent"],
        "0.9.2342.19200300.100.1.25",
        Ia5,
        true,
        System,
    ),
    a(
        "namingContexts",
        &[],
        "1.3.6.1.4.1.1466.101.120.5",
        Text,
        false,
        System,
    ),
    a(
        "supportedLDAPVersion",
        &[],
        "1.3.6.1.4.1.1466.101.120.15",
        Text,
        false,
        System,
    ),
    a(
        "supportedExtension",
        &[],
        "1.3.6.1.4.1.1466.101.120.7",
        Oid,
        false,
        System,
    ),
    a(
        "supportedControl",
        &[],
        "1.3.6.1.4.1.1466.101.120.13",
        Oid,
        false,
        System,
    ),
    a(
        "supportedFeatures",
        &[],
        "1.3.6.1.4.1.4203.1.3.5",
        Oid,
        false,
        System,
    ),
    a(
        "supportedSASLMechanisms",
        &[],
        "1.3.6.1.4.1.1466.101.120.14",
        Text,
        false,
        System,
    ),
    a("vendorName", &[], "1.3.6.1.1.4", Text, true, System),
    a("vendorVersion", &[], "1.3.6.1.1.5", Text, true, System),
    a("attributeTypes", &[], "2.5.21.5", Text, false, System),
    a("objectClasses", &[], "2.5.21.6", Text, false, System),
    a(
        "ldapSyntaxes",
        &[],
        "1.3.6.1.4.1.1466.101.120.16",
        Text,
        false,
        System,
    ),
    a("matchingRules", &[], "2.5.21.4", Text, false, System),
    // Operational attributes of every entry.
    a(
        "subschemaSubentry",
        &[],
        "2.5.18.10",
        Text,
        true,
        Operational,
    ),
    a("entryDN", &[], "1.3.6.1.1.20", Text, true, Operational),
    a(
        "hasSubordinates",
        &[],
        "2.5.18.9",
        Boolean,
        true,
        Operational,
    ),
    a(
        "structuralObjectClass",
        &[],
        "2.5.21.9",
        Oid,
        true,
        Operational,
    ),
    a("createTimestamp", &[], "2.5.18.1", Text, true, Operational),
    a("modifyTimestamp", &[], "2.5.18.2", Text, true, Operational),
];

/// The object classes an address-book entry may have.
pub const CONTACT_OBJECT_CLASSES: &[&str] = &[
    "top",
    "person",
    "organizationalPerson",
    "inetOrgPerson",
    "mozillaAbPersonAlpha",
];

/// Object classes published in the subschema entry.
const OBJECT_CLASSES: &[&str] = &[
    "( 2.5.6.0 NAME 'top' ABSTRACT MUST objectClass )",
    "( 2.5.6.6 NAME 'person' SUP top STRUCTURAL MUST cn MAY ( sn $ telephoneNumber $ seeAlso $ description ) )",
    "( 2.5.6.7 NAME 'organizationalPerson' SUP person STRUCTURAL MAY ( title $ telephoneNumber $ facsimileTelephoneNumber $ street $ postOfficeBox $ postalCode $ postalAddress $ physicalDeliveryOfficeName $ ou $ st $ l ) )",
    "( 2.16.840.1.113730.3.2.2 NAME 'inetOrgPerson' SUP organizationalPerson STRUCTURAL MAY ( businessCategory $ carLicense $ departmentNumber $ displayName $ employeeNumber $ employeeType $ givenName $ homePhone $ homePostalAddress $ initials $ jpegPhoto $ labeledURI $ mail $ manager $ mobile $ o $ pager $ roomNumber $ secretary $ uid $ userCertificate $ preferredLanguage $ userSMIMECertificate ) )",
    "( 1.3.6.1.4.1.13769.9.1 NAME 'mozillaAbPersonAlpha' SUP top AUXILIARY MUST cn MAY ( c $ description $ displayName $ facsimileTelephoneNumber $ givenName $ homePhone $ l $ mail $ mobile $ mozillaCustom1 $ mozillaCustom2 $ mozillaCustom3 $ mozillaCustom4 $ mozillaHomeCountryName $ mozillaHomeLocalityName $ mozillaHomePostalCode $ mozillaHomeState $ mozillaHomeStreet $ mozillaHomeStreet2 $ mozillaHomeUrl $ mozillaNickname $ mozillaSecondEmail $ mozillaUseHtmlMail $ mozillaWorkStreet2 $ mozillaWorkUrl $ nsAIMid $ o $ ou $ pager $ postalCode $ postOfficeBox $ sn $ st $ street $ telephoneNumber $ title $ birthyear $ birthmonth $ birthday ) )",
    "( 2.5.6.5 NAME 'organizationalUnit' SUP top STRUCTURAL MUST ou MAY description )",
    "( 2.5.6.4 NAME 'organization' SUP top STRUCTURAL MUST o MAY description )",
    "( 1.3.6.1.4.1.1466.344 NAME 'dcObject' SUP top AUXILIARY MUST dc )",
    "( 2.5.20.1 NAME 'subschema' AUXILIARY MAY ( attributeTypes $ objectClasses $ ldapSyntaxes $ matchingRules ) )",
    "( 2.5.17.0 NAME 'subentry' SUP top STRUCTURAL MUST cn )",
];

/// The DN of the subschema entry.
pub const SUBSCHEMA_DN: &str = "cn=Subschema";

pub const OID_STARTTLS: &str = "1.3.6.1.4.1.1466.20037";
pub const OID_NOTICE_OF_DISCONNECTION: &str = "1.3.6.1.4.1.1466.20036";
pub const OID_PAGED_RESULTS: &str = "1.2.840.113556.1.4.319";
pub const OID_MANAGE_DSA_IT: &str = "2.16.840.1.113730.3.4.2";

fn by_name() -> &'static HashMap<String, &'static AttrDef> {
    static MAP: OnceLock<HashMap<String, &'static AttrDef>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut m = HashMap::new();
        for def in ATTRIBUTES {
            m.insert(def.name.to_ascii_lowercase(), def);
            m.insert(def.oid.to_string(), def);
            for alias in def.aliases {
                m.insert(alias.to_ascii_lowercase(), def);
            }
        }
        m
    })
}

/// The attribute type named `name` (any case, alias or OID; options such
/// as `;binary` are ignored).
pub fn lookup(name: &str) -> Option<&'static AttrDef> {
    let base = name.split(';').next().unwrap_or(name);
    by_name().get(&base.to_ascii_lowercase()).copied()
}

/// The canonical id of an attribute name: the known type's lower-cased
/// name, or the given name lower-cased (without options) when unknown.
pub fn canonical_id(name: &str) -> String {
    match lookup(name) {
        Some(def) => def.id(),
        None => name.split(';').next().unwrap_or(name).to_ascii_lowercase(),
    }
}

/// The form of a value that matching rules compare.
pub fn normalize(syntax: Syntax, value: &[u8]) -> String {
    match syntax {
        Binary => {
            let mut out = String::with_capacity(value.len() * 2);
            for b in value {
                out.push_str(&format!("{b:02x}"));
            }
            out
        }
        Telephone => String::from_utf8_lossy(value)
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .flat_map(char::to_lowercase)
            .collect(),
        Text | Ia5 | Oid | Boolean => crate::dn::fold_value(&String::from_utf8_lossy(value)),
    }
}

/// The `attributeTypes` value of one definition (RFC 4512 4.1.2).
fn attribute_type_description(def: &AttrDef) -> String {
    let mut names: Vec<&str> = vec![def.name];
    names.extend(def.aliases.iter().copied());
    let names = if names.len() == 1 {
        format!("'{}'", names[0])
    } else {
        format!(
            "( {} )",
            names
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    let (eq, sub) = def.syntax.matching();
    let mut text = format!("( {} NAME {names} EQUALITY {eq}", def.oid);
    if let Some(sub) = sub {
        text.push_str(&format!(" SUBSTR {sub}"));
    }
    text.push_str(&format!(" SYNTAX {}", def.syntax.oid()));
    if def.single {
        text.push_str(" SINGLE-VALUE");
    }
    if def.usage != Usage::Contact {
        text.push_str(" NO-USER-MODIFICATION");
    }
    if def.usage == Usage::Operational {
        text.push_str(" USAGE directoryOperation");
    }
    text.push_str(" )");
    text
}

/// The attributes of `cn=Subschema`.
pub fn subschema_attributes() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let types = ATTRIBUTES
        .iter()
        .map(|d| attribute_type_description(d).into_bytes())
        .collect();
    let classes = OBJECT_CLASSES
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    let mut syntaxes = Vec::new();
    let mut rules: Vec<String> = Vec::new();
    for syntax in [Text, Ia5, Telephone, Binary, Oid, Boolean] {
        syntaxes.push(format!("( {} )", syntax.oid()).into_bytes());
        let (eq, sub) = syntax.matching();
        for rule in [Some(eq), sub].into_iter().flatten() {
            let line = format!("( NAME '{rule}' SYNTAX {} )", syntax.oid());
            if !rules.contains(&line) {
                rules.push(line);
            }
        }
    }
    vec![
        (
            "objectClass",
            vec![b"top".to_vec(), b"subentry".to_vec(), b"subschema".to_vec()],
        ),
        ("cn", vec![b"Subschema".to_vec()]),
        ("attributeTypes", types),
        ("objectClasses", classes),
        ("ldapSyntaxes", syntaxes),
        (
            "matchingRules",
            rules.into_iter().map(String::into_bytes).collect(),
        ),
    ]
}

/// The attributes of the root DSE (RFC 4512 5.1).
pub fn root_dse_attributes(base_dn: &str) -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let v = |items: &[&str]| items.iter().map(|s| s.as_bytes().to_vec()).collect();
    vec![
        ("objectClass", v(&["top", "extensibleObject"])),
        ("namingContexts", vec![base_dn.as_bytes().to_vec()]),
        ("supportedLDAPVersion", v(&["3"])),
        (
            "supportedExtension",
            v(&[
                OID_STARTTLS,
                ldap3_proto::proto::OID_PASSWORD_MODIFY,
                ldap3_proto::proto::OID_WHOAMI,
            ]),
        ),
        (
            "supportedControl",
            v(&[OID_PAGED_RESULTS, OID_MANAGE_DSA_IT]),
        ),
        (
            "supportedFeatures",
            // All operational attributes ("+"), absolute true and false filters.
            v(&["1.3.6.1.4.1.4203.1.5.1", "1.3.6.1.4.1.4203.1.5.3"]),
        ),
        ("subschemaSubentry", v(&[SUBSCHEMA_DN])),
        // No vendorVersion: the root DSE answers anyone, and a version
        // tells a scanner which advisories to try.
        ("vendorName", v(&["mxrack"])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive_with_aliases_and_oids() {
        for (name, id) in [
            ("CN", "cn"),
            ("commonName", "cn"),
            ("2.5.4.3", "cn"),
            ("SURNAME", "sn"),
            ("mobileTelephoneNumber", "mobile"),
            ("userCertificate;binary", "usercertificate"),
            ("xmozillasecondemail", "mozillasecondemail"),
            ("someThingElse", "somethingelse"),
        ] {
            assert_eq!(canonical_id(name), id, "{name}");
        }
    }

    #[test]
    fn every_name_is_defined_once() {
        let mut seen = std::collections::HashSet::new();
        for def in ATTRIBUTES {
            for n in std::iter::once(&def.name).chain(def.aliases) {
                assert!(seen.insert(n.to_ascii_lowercase()), "{n} twice");
            }
            assert!(seen.insert(def.oid.to_string()), "{} twice", def.oid);
        }
    }

    #[test]
    fn matching_forms() {
        assert_eq!(normalize(Text, b"  Jo   SMITH "), "jo smith");
        assert_eq!(normalize(Telephone, b"+33 1-23 45"), "+3312345");
        assert_eq!(normalize(Binary, &[0xff, 0x01]), "ff01");
    }

    #[test]
    fn published_descriptions_read_well() {
        let cn = lookup("cn").expect("cn");
        assert_eq!(
            attribute_type_description(cn),
            "( 2.5.4.3 NAME ( 'cn' 'commonName' ) EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )"
        );
    }
}
