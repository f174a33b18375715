//! FETCH data from a message: ENVELOPE, BODYSTRUCTURE and BODY[section]
//! (RFC 3501 6.4.5 and 7.4.2), computed from the stored bytes with
//! mail-parser. Pure: bytes in, response bytes out.
//!
//! mail-parser gives each (nested) `Message` its own `raw_message`, and the
//! offsets of that message's parts index into it; the code below always
//! pairs a message with its own raw bytes. Messages are parsed by the
//! bounded MIME walk (`mxrack_mime`): the tree is at most
//! `mxrack_mime::NESTING_MAX` levels deep, and a part made opaque there is
//! shown as APPLICATION/OCTET-STREAM.

use crate::parser::{Section, SectionText};
use crate::response::{nstring, string};
use base64::Engine;
use mail_parser::{HeaderValue, Message, MessagePart, MimeHeaders, PartType};

/// Deepest MIME nesting rendered in BODYSTRUCTURE (the parsed tree is
/// never deeper; this keeps the renderer bounded on its own).
const MIME_DEPTH_MAX: usize = mxrack_mime::NESTING_MAX;

/// ENVELOPE, BODY and BODYSTRUCTURE of one message body, rendered once.
#[derive(Debug)]
pub struct Structure {
    pub envelope: Vec<u8>,
    pub body: Vec<u8>,
    pub bodystructure: Vec<u8>,
}

impl Structure {
    pub fn of(msg: &Message<'_>) -> Structure {
        let (mut envelope, mut body, mut bodystructure) = (Vec::new(), Vec::new(), Vec::new());
        self::envelope(&mut envelope, msg);
        self::bodystructure(&mut body, msg, false);
        self::bodystructure(&mut bodystructure, msg, true);
        Structure {
            envelope,
            body,
            bodystructure,
        }
    }
}

/// Structures kept in memory, by blob id. A body file never changes once
/// written, so an entry never goes stale; the map is cleared when full.
const STRUCTURE_CACHE_ENTRIES_MAX: usize = 50_000;

fn structure_cache()
-> &'static std::sync::Mutex<std::collections::HashMap<u64, std::sync::Arc<Structure>>> {
    static CACHE: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<u64, std::sync::Arc<Structure>>>,
    > = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

pub fn cached_structure(blob: u64) -> Option<std::sync::Arc<Structure>> {
    structure_cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&blob)
        .cloned()
}

pub fn remember_structure(blob: u64, s: Structure) -> std::sync::Arc<Structure> {
    let s = std::sync::Arc::new(s);
    let mut cache = structure_cache().lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= STRUCTURE_CACHE_ENTRIES_MAX {
        cache.clear();
    }
    cache.insert(blob, s.clone());
    s
}

pub fn parse(raw: &[u8]) -> Option<Message<'_>> {
    mxrack_mime::parse(raw)
}

fn raw_of<'m>(msg: &'m Message<'_>) -> &'m [u8] {
    msg.raw_message.as_ref()
}

fn slice(raw: &[u8], start: u32, end: u32) -> &[u8] {
    let (s, e) = (start as usize, (end as usize).min(raw.len()));
    if s <= e { &raw[s..e] } else { &[] }
}

use mxrack_mime::unfold;

/// RFC 2047 encoded-word for a non-ASCII display name.
fn encode_word(s: &str) -> String {
    if s.is_ascii() {
        return s.to_string();
    }
    format!(
        "=?UTF-8?B?{}?=",
        base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
    )
}

fn raw_header(msg: &Message<'_>, name: &str) -> Option<String> {
    msg.header_raw(name).map(unfold)
}

/// An ENVELOPE address list from the raw header field (RFC 3501 7.4.2),
/// NIL when the field is absent or holds no address.
fn address_list(out: &mut Vec<u8>, addrs: &[address::Addr]) {
    if addrs.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for a in addrs {
        out.push(b'(');
        nstring(
            out,
            a.name
                .as_deref()
                .map(encode_word)
                .as_deref()
                .map(str::as_bytes),
        );
        out.push(b' ');
        nstring(out, a.adl.as_deref().map(str::as_bytes));
        out.push(b' ');
        nstring(out, a.mailbox.as_deref().map(str::as_bytes));
        out.push(b' ');
        nstring(out, a.host.as_deref().map(str::as_bytes));
        out.push(b')');
    }
    out.push(b')');
}

pub fn envelope(out: &mut Vec<u8>, msg: &Message<'_>) {
    out.push(b'(');
    let text = |out: &mut Vec<u8>, name: &str| {
        nstring(out, raw_header(msg, name).as_deref().map(str::as_bytes))
    };
    text(out, "Date");
    out.push(b' ');
    text(out, "Subject");
    out.push(b' ');
    let addrs = |name: &str| {
        raw_header(msg, name)
            .map(|v| address::parse(&v))
            .unwrap_or_default()
    };
    let from = addrs("From");
    // Sender and Reply-To absent or empty are the From list (RFC 3501 7.4.2).
    let or_from = |list: Vec<address::Addr>| if list.is_empty() { from.clone() } else { list };
    address_list(out, &from);
    out.push(b' ');
    address_list(out, &or_from(addrs("Sender")));
    out.push(b' ');
    address_list(out, &or_from(addrs("Reply-To")));
    out.push(b' ');
    address_list(out, &addrs("To"));
    out.push(b' ');
    address_list(out, &addrs("Cc"));
    out.push(b' ');
    address_list(out, &addrs("Bcc"));
    out.push(b' ');
    text(out, "In-Reply-To");
    out.push(b' ');
    text(out, "Message-ID");
    out.push(b')');
}

fn params(
    out: &mut Vec<u8>,
    attrs: Option<&Vec<mail_parser::Attribute<'_>>>,
    default: &[(&str, &str)],
) {
    let mut pairs: Vec<(String, String)> = attrs
        .map(|a| {
            a.iter()
                .map(|x| (x.name.to_string(), x.value.to_string()))
                .collect()
        })
        .unwrap_or_default();
    if pairs.is_empty() {
        pairs = default
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }
    if pairs.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        string(out, k.to_ascii_uppercase().as_bytes());
        out.push(b' ');
        string(out, encode_word(v).as_bytes());
    }
    out.push(b')');
}

fn disposition_language_location(out: &mut Vec<u8>, part: &MessagePart<'_>) {
    match part.content_disposition() {
        Some(d) => {
            out.push(b'(');
            string(out, d.c_type.to_ascii_uppercase().as_bytes());
            out.push(b' ');
            params(out, d.attributes.as_ref(), &[]);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    match part.content_language() {
        HeaderValue::Text(t) => {
            out.push(b'(');
            string(out, t.as_bytes());
            out.push(b')');
        }
        HeaderValue::TextList(list) if !list.is_empty() => {
            out.push(b'(');
            for (i, t) in list.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                string(out, t.as_bytes());
            }
            out.push(b')');
        }
        _ => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    nstring(out, part.content_location().map(str::as_bytes));
}

/// BODYSTRUCTURE (extensible) or BODY (not) of a message.
pub fn bodystructure(out: &mut Vec<u8>, msg: &Message<'_>, extensible: bool) {
    part_structure(out, msg, 0, extensible, 0);
}

fn part_structure(out: &mut Vec<u8>, msg: &Message<'_>, index: usize, ext: bool, depth: usize) {
    let Some(part) = msg.parts.get(index) else {
        out.extend_from_slice(b"NIL");
        return;
    };
    let raw = raw_of(msg);
    let opaque = mxrack_mime::is_opaque(part);
    let ct = part.content_type().filter(|_| !opaque);
    if let (PartType::Multipart(children), true) = (&part.body, depth < MIME_DEPTH_MAX) {
        out.push(b'(');
        for &child in children {
            part_structure(out, msg, child as usize, ext, depth + 1);
        }
        if children.is_empty() {
            // RFC 3501 requires at least one part; an empty multipart shows as empty text.
            out.extend_from_slice(b"(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 0 0)");
        }
        out.push(b' ');
        let subtype = ct.and_then(|c| c.c_subtype.as_deref()).unwrap_or("MIXED");
        string(out, subtype.to_ascii_uppercase().as_bytes());
        if ext {
            out.push(b' ');
            params(out, ct.and_then(|c| c.attributes.as_ref()), &[]);
            out.push(b' ');
            disposition_language_location(out, part);
        }
        out.push(b')');
        return;
    }
    let (ctype, subtype) = match ct {
        Some(c) => (
            c.c_type.to_ascii_uppercase(),
            c.c_subtype
                .as_deref()
                .unwrap_or(if c.c_type.eq_ignore_ascii_case("text") {
                    "PLAIN"
                } else {
                    "OCTET-STREAM"
                })
                .to_ascii_uppercase(),
        ),
        None if opaque => ("APPLICATION".to_string(), "OCTET-STREAM".to_string()),
        None => ("TEXT".to_string(), "PLAIN".to_string()),
    };
    let body = slice(raw, part.offset_body, part.offset_end);
    out.push(b'(');
    string(out, ctype.as_bytes());
    out.push(b' ');
    string(out, subtype.as_bytes());
    out.push(b' ');
    let default_charset: &[(&str, &str)] = if ctype == "TEXT" {
        &[("CHARSET", "us-ascii")]
    } else {
        &[]
    };
    params(out, ct.and_then(|c| c.attributes.as_ref()), default_charset);
    out.push(b' ');
    nstring(
        out,
        part.content_id()
            .map(|s| s.to_string())
            .map(|s| format!("<{s}>"))
            .as_deref()
            .map(str::as_bytes),
    );
    out.push(b' ');
    nstring(out, part.content_description().map(str::as_bytes));
    out.push(b' ');
    let encoding = part
        .content_transfer_encoding()
        .unwrap_or("7BIT")
        .to_ascii_uppercase();
    string(out, encoding.as_bytes());
    out.extend_from_slice(format!(" {}", body.len()).as_bytes());
    let lines = body.iter().filter(|&&b| b == b'\n').count()
        + usize::from(!body.is_empty() && !body.ends_with(b"\n"));
    if ctype == "MESSAGE" && (subtype == "RFC822" || subtype == "GLOBAL") {
        if let (PartType::Message(inner), true) = (&part.body, depth < MIME_DEPTH_MAX) {
            out.push(b' ');
            envelope(out, inner);
            out.push(b' ');
            part_structure(out, inner, 0, ext, depth + 1);
        } else {
            out.extend_from_slice(b" NIL NIL");
        }
        out.extend_from_slice(format!(" {lines}").as_bytes());
    } else if ctype == "TEXT" {
        out.extend_from_slice(format!(" {lines}").as_bytes());
    }
    if ext {
        out.extend_from_slice(b" NIL ");
        disposition_language_location(out, part);
    }
    out.push(b')');
}

/// The bytes of `BODY[section]`, or `None` when the section does not exist
/// (the client gets an empty string, as RFC 3501 6.4.5 allows).
pub fn section_bytes(raw: &[u8], msg: &Message<'_>, section: &Section) -> Option<Vec<u8>> {
    // Walk the part path; `cur` is a message (with its own raw bytes) and a part index in it.
    let mut cur_msg: &Message<'_> = msg;
    let mut cur_raw: &[u8] = raw;
    let mut cur_part: Option<usize> = None; // None: the message itself
    for &n in &section.part {
        let n = n as usize;
        // Descending from a part that is a message/rfc822 enters that message.
        if let Some(pi) = cur_part {
            let part = cur_msg.parts.get(pi)?;
            match &part.body {
                PartType::Message(inner) => {
                    cur_msg = inner;
                    cur_raw = raw_of(inner);
                    cur_part = None;
                }
                PartType::Multipart(_) => {}
                _ => return None,
            }
        }
        let container = cur_part.unwrap_or(0);
        let part = cur_msg.parts.get(container)?;
        cur_part = match &part.body {
            PartType::Multipart(children) => Some(*children.get(n.checked_sub(1)?)? as usize),
            // A non-multipart message has exactly one part: its body (RFC 3501 6.4.5).
            _ if n == 1 && cur_part.is_none() => Some(0),
            _ => return None,
        };
    }
    let header_block = |m: &Message<'_>, r: &[u8]| -> Vec<u8> {
        let root = &m.parts[0];
        slice(r, root.offset_header, root.offset_body).to_vec()
    };
    match (&section.text, cur_part) {
        (None, None) => Some(cur_raw.to_vec()),
        (None, Some(pi)) => {
            let p = cur_msg.parts.get(pi)?;
            Some(slice(cur_raw, p.offset_body, p.offset_end).to_vec())
        }
        (Some(SectionText::Mime), Some(pi)) => {
            let p = cur_msg.parts.get(pi)?;
            Some(slice(cur_raw, p.offset_header, p.offset_body).to_vec())
        }
        (Some(text), pi) => {
            // HEADER, HEADER.FIELDS, TEXT of a message: the top one, or an
            // encapsulated message/rfc822 part.
            // `end`: where that message's bytes end. A nested message's
            // offsets index into the bytes of the message holding it, and
            // its root part ends at its closing boundary; its TEXT runs to
            // the end of the enclosing part, epilogue included (RFC 3501
            // 6.4.5: TEXT is the body of the message, after the header).
            let (m, r, end): (&Message<'_>, &[u8], u32) = match pi {
                None => (cur_msg, cur_raw, cur_raw.len() as u32),
                Some(pi) => {
                    let part = cur_msg.parts.get(pi)?;
                    match &part.body {
                        PartType::Message(inner) => (inner, raw_of(inner), part.offset_end),
                        _ if pi == 0 && section.part.len() == 1 => {
                            (cur_msg, cur_raw, cur_raw.len() as u32)
                        }
                        _ => return None,
                    }
                }
            };
            let root = m.parts.first()?;
            match text {
                SectionText::Header => Some(header_block(m, r)),
                SectionText::Text => Some(slice(r, root.offset_body, end).to_vec()),
                SectionText::HeaderFields { not, fields } => {
                    Some(header_fields(&header_block(m, r), fields, *not))
                }
                SectionText::Mime => None,
            }
        }
    }
}

/// The header lines (with their continuations) whose names are (or with
/// `not`, are not) in `fields`, then the blank line.
pub fn header_fields(header: &[u8], fields: &[String], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut keep = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !line.starts_with(b" ") && !line.starts_with(b"\t") {
            let name = line.split(|&b| b == b':').next().unwrap_or(b"");
            let name = String::from_utf8_lossy(name);
            let listed = fields.iter().any(|f| f.eq_ignore_ascii_case(name.trim()));
            keep = listed != not;
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

pub mod address;
pub mod binary;

#[cfg(test)]
mod tests;
