//! Request bodies of WebDAV (RFC 4918 14) and CardDAV (RFC 6352 10) as a
//! small element tree, and the escaping of what we write back.
//!
//! Pure. quick-xml reads the bytes as events (it never expands entities
//! other than the five predefined ones and character references, and a
//! DOCTYPE is refused, so no "billion laughs"); the tree is built with an
//! explicit stack, never by recursion, and is at most [`DEPTH_MAX`] deep
//! and [`NODES_MAX`] elements large: no request decides the depth of a call
//! stack or holds more than a bounded tree.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

/// `DAV:` (RFC 4918).
pub const DAV: &str = "DAV:";
/// CardDAV (RFC 6352 10.1).
pub const CARDDAV: &str = "urn:ietf:params:xml:ns:carddav";
/// Apple's CalendarServer namespace, for `getctag` (clients still ask).
pub const CS: &str = "http://calendarserver.org/ns/";

/// Deepest element nesting accepted in a request body (a multiget is 4
/// deep, a query with a text-match 5).
pub const DEPTH_MAX: usize = 32;
/// Most elements in one request body (a multiget of 10,000 hrefs is
/// about 10,000).
pub const NODES_MAX: usize = 20_000;

/// An element: its namespace, local name, attributes (unqualified, as
/// CardDAV uses them), children, and its text (concatenated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub ns: String,
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a body is not a request we can read (answered 400 Bad Request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError(pub String);

impl std::fmt::Display for XmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(why: impl Into<String>) -> XmlError {
    XmlError(why.into())
}

/// Parses a whole body into its root element.
pub fn parse(body: &[u8]) -> Result<Element, XmlError> {
    let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8"))?;
    let mut reader = NsReader::from_str(text);
    reader.config_mut().trim_text(false);
    // Open elements; the root's finished form lands in `root`.
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut nodes = 0usize;
    loop {
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|e| bad(format!("malformed XML: {e}")))?;
        let namespace = match ns {
            ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
            ResolveResult::Unbound => String::new(),
            ResolveResult::Unknown(p) => {
                return Err(bad(format!(
                    "undeclared namespace prefix {:?}",
                    String::from_utf8_lossy(&p)
                )));
            }
        };
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                let empty = matches!(event, Event::Empty(_));
                if root.is_some() {
                    return Err(bad("content after the root element"));
                }
                nodes += 1;
                if nodes > NODES_MAX {
                    return Err(bad(format!("more than {NODES_MAX} elements")));
                }
                if stack.len() >= DEPTH_MAX {
                    return Err(bad(format!("elements nested deeper than {DEPTH_MAX}")));
                }
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                let mut attrs = Vec::new();
                for a in start.attributes() {
                    let a = a.map_err(|e| bad(format!("malformed attribute: {e}")))?;
                    let key = a.key.as_ref();
                    if key.starts_with(b"xmlns") {
                        continue;
                    }
                    let value = a
                        .unescape_value()
                        .map_err(|e| bad(format!("malformed attribute value: {e}")))?;
                    attrs.push((
                        String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned(),
                        value.into_owned(),
                    ));
                }
                let element = Element {
                    ns: namespace,
                    name,
                    attrs,
                    children: Vec::new(),
                    text: String::new(),
                };
                stack.push(element);
                if empty {
                    close(&mut stack, &mut root);
                }
            }
            Event::End(_) => close(&mut stack, &mut root),
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    let s = t.decode().map_err(|e| bad(format!("bad text: {e}")))?;
                    top.text.push_str(&s);
                } else if !t.iter().all(u8::is_ascii_whitespace) {
                    return Err(bad("text outside the root element"));
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::GeneralRef(r) => {
                let name = r.decode().map_err(|e| bad(format!("bad reference: {e}")))?;
                let c = reference(&name)?;
                if let Some(top) = stack.last_mut() {
                    top.text.push(c);
                }
            }
            Event::DocType(_) => return Err(bad("a DOCTYPE is not accepted")),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(bad("the body ends inside an element"));
    }
    root.ok_or_else(|| bad("the body has no element"))
}

/// Pops the open element into its parent (or makes it the root).
fn close(stack: &mut Vec<Element>, root: &mut Option<Element>) {
    if let Some(done) = stack.pop() {
        match stack.last_mut() {
            Some(parent) => parent.children.push(done),
            None => *root = Some(done),
        }
    }
}

/// The character an entity or character reference stands for (XML 1.0
/// 4.1, 4.6): the five predefined entities and numeric references only.
fn reference(name: &str) -> Result<char, XmlError> {
    let c = match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => {
            let code = if let Some(hex) = name.strip_prefix("#x") {
                u32::from_str_radix(hex, 16).ok()
            } else if let Some(dec) = name.strip_prefix('#') {
                dec.parse().ok()
            } else {
                None
            };
            code.and_then(char::from_u32)
                .ok_or_else(|| bad(format!("unknown reference &{name};")))?
        }
    };
    Ok(c)
}

/// Escapes text for element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0 (2.2).
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_propfind_reads_as_a_tree_with_namespaces() {
        let body = br#"<?xml version="1.0"?>
            <d:propfind xmlns:d="DAV:" xmlns:card="urn:ietf:params:xml:ns:carddav">
              <d:prop><d:getetag/><card:address-data content-type="text/vcard" version="4.0"/></d:prop>
            </d:propfind>"#;
        let root = parse(body).unwrap();
        assert!(root.is(DAV, "propfind"));
        let prop = root.child(DAV, "prop").unwrap();
        assert_eq!(prop.children.len(), 2);
        assert!(prop.children[0].is(DAV, "getetag"));
        let data = &prop.children[1];
        assert!(data.is(CARDDAV, "address-data"));
        assert_eq!(data.attr("version"), Some("4.0"));
    }

    #[test]
    fn text_and_references_are_decoded() {
        let root = parse(br#"<D:href xmlns:D="DAV:">/a&amp;b&#x41;&#66;</D:href>"#).unwrap();
        assert_eq!(root.text, "/a&bAB");
    }

    #[test]
    fn hostile_bodies_are_refused_not_followed() {
        let deep = format!("{}{}", "<a>".repeat(100_000), "</a>".repeat(100_000));
        assert!(parse(deep.as_bytes()).unwrap_err().0.contains("deeper"));
        let wide = format!("<a>{}</a>", "<b/>".repeat(NODES_MAX + 1));
        assert!(parse(wide.as_bytes()).unwrap_err().0.contains("elements"));
        let laughs = br#"<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>"#;
        assert!(parse(laughs).is_err());
        assert!(parse(b"<a><b></a>").is_err());
        assert!(parse(b"<x:a/>").is_err());
        assert!(parse(b"").is_err());
        assert!(parse(b"<a/><b/>").is_err());
        assert!(parse(b"\xff\xfe").is_err());
    }
}
