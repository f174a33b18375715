//! Search filters: checked against the limits and compiled once per search
//! ([`compile`]), then evaluated per entry ([`Compiled::eval`]). Pure.
//!
//! RFC 4511 4.5.1.7: evaluation is three-valued. An assertion on an attribute
//! type the server does not know is Undefined, and so is its negation; an
//! entry is returned only when the whole filter is True. Every filter type
//! works on every attribute, substrings included (address-book clients
//! search `cn`, `mail`, `givenName`, `sn` and more with `*jo*`). Approximate
//! match is case-insensitive equality. Extensible match is refused with
//! inappropriateMatching: no client of an address book sends it.

use crate::schema::{self, AttrDef, Syntax};
use ldap3_proto::proto::{LdapFilter, LdapSubstringFilter};

/// Limits on a filter's shape (from `[ldap]`).
#[derive(Debug, Clone, Copy)]
pub struct FilterLimits {
    /// Deepest nesting of and/or/not.
    pub depth_max: usize,
    /// Most terms in one and/or, and in the whole filter.
    pub terms_max: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterError {
    /// Nesting or size over the limits: adminLimitExceeded.
    TooComplex(String),
    /// Extensible match: inappropriateMatching.
    Unsupported(String),
}

/// The result of a filter on one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tri {
    True,
    False,
    Undefined,
}

impl Tri {
    fn not(self) -> Tri {
        match self {
            Tri::True => Tri::False,
            Tri::False => Tri::True,
            Tri::Undefined => Tri::Undefined,
        }
    }

    fn from_bool(b: bool) -> Tri {
        if b { Tri::True } else { Tri::False }
    }
}

/// What a filter reads from an entry: an attribute's values in their
/// matching form (see [`schema::normalize`]). Attributes are named by their
/// schema definition, compared by address: no string compare per entry.
pub trait AttributeSource {
    fn normalized_values(&self, def: &'static AttrDef) -> Option<&[String]>;
}

/// An attribute named in a filter, resolved once.
#[derive(Debug, Clone, PartialEq)]
pub struct Attr {
    pub def: &'static AttrDef,
    pub syntax: Syntax,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Compiled {
    And(Vec<Compiled>),
    Or(Vec<Compiled>),
    Not(Box<Compiled>),
    Equal(Attr, String),
    Substring {
        attr: Attr,
        initial: Option<String>,
        any: Vec<String>,
        last: Option<String>,
    },
    GreaterOrEqual(Attr, String),
    LessOrEqual(Attr, String),
    Present(Attr),
    /// An assertion on an attribute type the server does not know.
    Undefined,
}

/// Checks `filter` against `limits` and prepares it for evaluation.
pub fn compile(filter: &LdapFilter, limits: FilterLimits) -> Result<Compiled, FilterError> {
    let mut terms = 0;
    compile_at(filter, limits, 0, &mut terms)
}

fn resolve(name: &str) -> Option<Attr> {
    schema::lookup(name).map(|def| Attr {
        def,
        syntax: def.syntax,
    })
}

fn compile_at(
    filter: &LdapFilter,
    limits: FilterLimits,
    depth: usize,
    terms: &mut usize,
) -> Result<Compiled, FilterError> {
    *terms += 1;
    if *terms > limits.terms_max {
        return Err(FilterError::TooComplex(format!(
            "the filter has more than {} terms",
            limits.terms_max
        )));
    }
    let children = |items: &[LdapFilter], terms: &mut usize| {
        if depth + 1 > limits.depth_max {
            return Err(FilterError::TooComplex(format!(
                "the filter nests deeper than {}",
                limits.depth_max
            )));
        }
        items
            .iter()
            .map(|f| compile_at(f, limits, depth + 1, terms))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(match filter {
        LdapFilter::And(items) => Compiled::And(children(items, terms)?),
        LdapFilter::Or(items) => Compiled::Or(children(items, terms)?),
        LdapFilter::Not(inner) => {
            let mut v = children(std::slice::from_ref(inner.as_ref()), terms)?;
            Compiled::Not(Box::new(v.remove(0)))
        }
        LdapFilter::Equality(name, value) | LdapFilter::Approx(name, value) => {
            match resolve(name) {
                Some(attr) => {
                    let v = schema::normalize(attr.syntax, value.as_bytes());
                    Compiled::Equal(attr, v)
                }
                None => Compiled::Undefined,
            }
        }
        LdapFilter::Substring(name, sub) => match resolve(name) {
            Some(attr) => compile_substring(attr, sub),
            None => Compiled::Undefined,
        },
        LdapFilter::GreaterOrEqual(name, value) => match resolve(name) {
            Some(attr) => {
                let v = schema::normalize(attr.syntax, value.as_bytes());
                Compiled::GreaterOrEqual(attr, v)
            }
            None => Compiled::Undefined,
        },
        LdapFilter::LessOrEqual(name, value) => match resolve(name) {
            Some(attr) => {
                let v = schema::normalize(attr.syntax, value.as_bytes());
                Compiled::LessOrEqual(attr, v)
            }
            None => Compiled::Undefined,
        },
        LdapFilter::Present(name) => match resolve(name) {
            Some(attr) => Compiled::Present(attr),
            None => Compiled::Undefined,
        },
        LdapFilter::Extensible(_) => {
            return Err(FilterError::Unsupported(
                "extensible match filters are not supported".into(),
            ));
        }
    })
}

fn compile_substring(attr: Attr, sub: &LdapSubstringFilter) -> Compiled {
    if attr.syntax == Syntax::Binary {
        // octetStringMatch has no substring rule: Undefined, never an error.
        return Compiled::Undefined;
    }
    let norm = |s: &str| schema::normalize(attr.syntax, s.as_bytes());
    // Folding drops outer spaces of each piece; that is what
    // caseIgnoreSubstringsMatch does too (RFC 4518 2.6.1).
    let initial = sub.initial.as_deref().map(norm).filter(|s| !s.is_empty());
    let any = sub
        .any
        .iter()
        .map(|s| norm(s))
        .filter(|s| !s.is_empty())
        .collect();
    let last = sub.final_.as_deref().map(norm).filter(|s| !s.is_empty());
    Compiled::Substring {
        attr,
        initial,
        any,
        last,
    }
}

/// True if `value` has `initial` at its start, then each of `any` in order
/// without overlap, and `last` at its end after them.
pub fn substring_matches(
    value: &str,
    initial: Option<&str>,
    any: &[String],
    last: Option<&str>,
) -> bool {
    let mut rest = value;
    if let Some(i) = initial {
        match rest.strip_prefix(i) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    for piece in any {
        match find_bytes(rest.as_bytes(), piece.as_bytes()) {
            // A match of a UTF-8 needle starts and ends on char boundaries.
            Some(at) => rest = rest.get(at + piece.len()..).unwrap_or_default(),
            None => return false,
        }
    }
    match last {
        Some(l) => rest.ends_with(l),
        None => true,
    }
}

/// The first position of `needle` in `hay`. Values and pieces are short
/// (names, addresses), so a first-byte scan beats a general searcher's setup.
fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let Some((&first, tail)) = needle.split_first() else {
        return Some(0);
    };
    let last_start = hay.len().checked_sub(needle.len())?;
    let mut from = 0;
    while from <= last_start {
        let at = from + hay[from..=last_start].iter().position(|&b| b == first)?;
        if &hay[at + 1..at + needle.len()] == tail {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

impl Compiled {
    /// Evaluates the filter on one entry.
    pub fn eval(&self, entry: &dyn AttributeSource) -> Tri {
        match self {
            Compiled::And(items) => {
                let mut result = Tri::True;
                for f in items {
                    match f.eval(entry) {
                        Tri::False => return Tri::False,
                        Tri::Undefined => result = Tri::Undefined,
                        Tri::True => {}
                    }
                }
                result
            }
            Compiled::Or(items) => {
                let mut result = Tri::False;
                for f in items {
                    match f.eval(entry) {
                        Tri::True => return Tri::True,
                        Tri::Undefined => result = Tri::Undefined,
                        Tri::False => {}
                    }
                }
                result
            }
            Compiled::Not(inner) => inner.eval(entry).not(),
            Compiled::Equal(attr, v) => any_value(entry, attr.def, |x| x == v),
            Compiled::Substring {
                attr,
                initial,
                any,
                last,
            } => any_value(entry, attr.def, |x| {
                substring_matches(x, initial.as_deref(), any, last.as_deref())
            }),
            Compiled::GreaterOrEqual(attr, v) => {
                any_value(entry, attr.def, |x| x.as_str() >= v.as_str())
            }
            Compiled::LessOrEqual(attr, v) => {
                any_value(entry, attr.def, |x| x.as_str() <= v.as_str())
            }
            Compiled::Present(attr) => Tri::from_bool(
                entry
                    .normalized_values(attr.def)
                    .is_some_and(|v| !v.is_empty()),
            ),
            Compiled::Undefined => Tri::Undefined,
        }
    }

    /// True when the filter is True for the entry.
    pub fn matches(&self, entry: &dyn AttributeSource) -> bool {
        self.eval(entry) == Tri::True
    }
}

fn any_value(
    entry: &dyn AttributeSource,
    def: &'static AttrDef,
    test: impl Fn(&String) -> bool,
) -> Tri {
    match entry.normalized_values(def) {
        Some(values) => Tri::from_bool(values.iter().any(test)),
        None => Tri::False,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3_proto::proto::LdapMatchingRuleAssertion;
    use std::collections::HashMap;

    /// RFC 4515 filter strings, for the tables below (ldap3_proto's own
    /// parser does not take spaces in values).
    pub fn parse_ldap_filter_str(s: &str) -> Result<LdapFilter, String> {
        let (f, rest) = parse_one(s)?;
        if rest.is_empty() {
            Ok(f)
        } else {
            Err(format!("trailing {rest:?}"))
        }
    }

    fn list(mut s: &str) -> Result<(Vec<LdapFilter>, &str), String> {
        let mut items = Vec::new();
        while !s.starts_with(')') {
            let (f, rest) = parse_one(s)?;
            items.push(f);
            s = rest;
        }
        Ok((items, &s[1..]))
    }

    fn parse_one(s: &str) -> Result<(LdapFilter, &str), String> {
        let s = s.strip_prefix('(').ok_or("expected (")?;
        if let Some(rest) = s.strip_prefix('&') {
            let (items, rest) = list(rest)?;
            return Ok((LdapFilter::And(items), rest));
        }
        if let Some(rest) = s.strip_prefix('|') {
            let (items, rest) = list(rest)?;
            return Ok((LdapFilter::Or(items), rest));
        }
        if let Some(rest) = s.strip_prefix('!') {
            let (inner, rest) = parse_one(rest)?;
            let rest = rest.strip_prefix(')').ok_or("expected )")?;
            return Ok((LdapFilter::Not(Box::new(inner)), rest));
        }
        let end = s.find(')').ok_or("expected )")?;
        let (item, rest) = (&s[..end], &s[end + 1..]);
        let eq = item.find('=').ok_or("expected =")?;
        let (left, value) = (&item[..eq], item[eq + 1..].to_string());
        let f = if let Some(attr) = left.strip_suffix('~') {
            LdapFilter::Approx(attr.into(), value)
        } else if let Some(attr) = left.strip_suffix('>') {
            LdapFilter::GreaterOrEqual(attr.into(), value)
        } else if let Some(attr) = left.strip_suffix('<') {
            LdapFilter::LessOrEqual(attr.into(), value)
        } else if let Some(left) = left.strip_suffix(':') {
            let mut parts = left.split(':');
            LdapFilter::Extensible(LdapMatchingRuleAssertion {
                type_: parts.next().map(str::to_string),
                matching_rule: parts.next().map(str::to_string),
                match_value: value,
                dn_attributes: false,
            })
        } else if value == "*" {
            LdapFilter::Present(left.into())
        } else if value.contains('*') {
            LdapFilter::Substring(left.into(), value.as_str().into())
        } else {
            LdapFilter::Equality(left.into(), value)
        };
        Ok((f, rest))
    }

    struct Entry(HashMap<String, Vec<String>>);

    impl AttributeSource for Entry {
        fn normalized_values(&self, def: &'static AttrDef) -> Option<&[String]> {
            self.0.get(&def.id()).map(Vec::as_slice)
        }
    }

    fn entry(pairs: &[(&str, &str)]) -> Entry {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        for (name, value) in pairs {
            let def = schema::lookup(name).expect(name);
            m.entry(def.id())
                .or_default()
                .push(schema::normalize(def.syntax, value.as_bytes()));
        }
        Entry(m)
    }

    const LIMITS: FilterLimits = FilterLimits {
        depth_max: 10,
        terms_max: 64,
    };

    fn check(filter: &str, e: &Entry) -> Tri {
        let f = parse_ldap_filter_str(filter).expect(filter);
        compile(&f, LIMITS).expect(filter).eval(e)
    }

    #[test]
    fn filters_on_a_contact() {
        let jo = entry(&[
            ("objectClass", "inetOrgPerson"),
            ("cn", "Jo Smith"),
            ("sn", "Smith"),
            ("givenName", "Jo"),
            ("mail", "Jo.Smith@Example.org"),
            ("telephoneNumber", "+33 1 23 45 67 89"),
            ("description", "met at  the   fair"),
        ]);
        use Tri::*;
        let table = [
            // Thunderbird's autocomplete and Outlook's.
            ("(|(cn=*jo*)(mail=*jo*)(givenName=*jo*)(sn=*jo*))", True),
            (
                "(&(mail=*)(|(mail=jo*)(cn=jo*)(sn=jo*)(givenName=jo*)))",
                True,
            ),
            ("(&(mail=*)(|(mail=xy*)(cn=xy*)))", False),
            ("(cn=JO SMITH)", True),
            ("(cn=jo  smith)", True),
            ("(cn~=jo smith)", True),
            ("(cn=jo)", False),
            ("(cn=*smi*)", True),
            ("(cn=j*s*h)", True),
            ("(cn=j*h*s)", False),
            ("(cn=*o*o*)", False),
            ("(description=*the fair*)", True),
            ("(telephoneNumber=+33123456789)", True),
            ("(telephoneNumber=*45-67*)", True),
            ("(objectClass=INETORGPERSON)", True),
            ("(objectClass=*)", True),
            ("(mobile=*)", False),
            ("(!(mobile=*))", True),
            ("(sn>=s)", True),
            ("(sn<=s)", False),
            ("(unknownAttr=x)", Undefined),
            ("(!(unknownAttr=x))", Undefined),
            ("(|(unknownAttr=x)(cn=jo smith))", True),
            ("(&(unknownAttr=x)(cn=nobody))", False),
            ("(&)", True),
            ("(|)", False),
        ];
        for (filter, want) in table {
            assert_eq!(check(filter, &jo), want, "{filter}");
        }
    }

    #[test]
    fn substring_rules() {
        let s = |v: &str, i: Option<&str>, any: &[&str], l: Option<&str>| {
            let any: Vec<String> = any.iter().map(|x| x.to_string()).collect();
            substring_matches(v, i, &any, l)
        };
        assert!(s("abcabc", Some("ab"), &["ca"], Some("bc")));
        assert!(!s("abc", Some("ab"), &[], Some("bc")), "no overlap");
        assert!(s("aaa", None, &["a", "a"], Some("a")));
        assert!(!s("aa", None, &["a", "a"], Some("a")));
        assert!(s("zoë müller", None, &["ë m"], None));
        assert!(s("abcab", None, &["cab"], None));
        assert!(!s("ab", None, &["abc"], None));
        assert_eq!(find_bytes(b"xxjojo", b"jo"), Some(2));
        assert_eq!(find_bytes(b"xj", b"jo"), None);
        assert_eq!(find_bytes(b"", b""), Some(0));
    }

    #[test]
    fn limits_are_enforced() {
        let deep = format!("{}(cn=x){}", "(!".repeat(11), ")".repeat(11));
        let f = parse_ldap_filter_str(&deep).expect("parse");
        assert!(matches!(
            compile(&f, LIMITS),
            Err(FilterError::TooComplex(_))
        ));
        let ok = format!("{}(cn=x){}", "(!".repeat(10), ")".repeat(10));
        let f = parse_ldap_filter_str(&ok).expect("parse");
        assert!(compile(&f, LIMITS).is_ok());

        let wide = format!("(|{})", "(cn=x)".repeat(64));
        let f = parse_ldap_filter_str(&wide).expect("parse");
        assert!(matches!(
            compile(&f, LIMITS),
            Err(FilterError::TooComplex(_))
        ));
        let fits = format!("(|{})", "(cn=x)".repeat(63));
        let f = parse_ldap_filter_str(&fits).expect("parse");
        assert!(compile(&f, LIMITS).is_ok());
    }

    #[test]
    fn extensible_match_is_refused() {
        let f = parse_ldap_filter_str("(cn:caseExactMatch:=Jo)").expect("parse");
        assert!(matches!(
            compile(&f, LIMITS),
            Err(FilterError::Unsupported(_))
        ));
    }

    #[test]
    fn photos_match_exactly_and_never_by_substring() {
        let mut m = HashMap::new();
        m.insert(
            "jpegphoto".to_string(),
            vec![schema::normalize(Syntax::Binary, &[0xff, 0xd8])],
        );
        let e = Entry(m);
        let f = compile(
            &LdapFilter::Equality("jpegPhoto".into(), "\u{ff}".into()),
            LIMITS,
        )
        .expect("compile");
        assert_eq!(f.eval(&e), Tri::False);
        let f = compile(&LdapFilter::Present("jpegPhoto".into()), LIMITS).expect("compile");
        assert_eq!(f.eval(&e), Tri::True);
        let f = compile(
            &LdapFilter::Substring("jpegPhoto".into(), "*d8*".into()),
            LIMITS,
        )
        .expect("compile");
        assert_eq!(f.eval(&e), Tri::Undefined);
    }
}
