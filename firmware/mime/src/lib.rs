//! The one bounded MIME walk: every place that parses a message (IMAP FETCH
//! and SEARCH, the spam scorer, ARF reports, forwarding) calls [`parse`] or
//! [`header_raw`] here, never mail-parser directly.
//!
//! mail-parser 0.11 parses nesting iteratively but builds a tree as deep as
//! the input (each `message/rfc822` level a nested `Message`), drops it
//! recursively, and recurses (through `into_owned`) into an encoded
//! `message/rfc822` part. A 1.3 MB message nesting 40,000 levels overflows
//! any thread's stack. So before mail-parser sees a message, [`scan`] walks
//! its structure with mail-parser's own stream functions (the same header
//! parser and boundary search, in the same order, with an explicit stack)
//! and decides which container parts become opaque:
//!
//! - a multipart or `message/*` part at nesting level [`NESTING_MAX`] (the
//!   top-level message is level 1), a `multipart/digest` one level earlier
//!   (its children are implicit messages);
//! - every `message/*` part with a content transfer encoding (RFC 2046
//!   5.2.1 forbids it; mail-parser would recurse into it);
//! - the whole body when the message has more than [`PARTS_MAX`] parts.
//!
//! An opaque part is parsed from a copy whose `Content-Type` type token is
//! overwritten with `x` (same length, so every offset stays true); it is a
//! leaf whose body is its raw bytes, and [`is_opaque`] recognises it. After
//! parsing, [`parse`] checks the tree's depth again without recursion and cuts
//! anything deeper (defence in depth), so no caller ever walks more than
//! [`NESTING_MAX`] levels, and dropping the tree is bounded too.

use mail_parser::parsers::MessageStream;
use mail_parser::{Header, HeaderName, HeaderValue, Message, MessageParser, MessagePart, PartType};

/// The last `name` header's value, as mail-parser's `GetHeader` picks it.
fn last_value<'h, 'x>(
    headers: &'h [Header<'x>],
    name: &HeaderName<'_>,
) -> Option<&'h HeaderValue<'x>> {
    headers
        .iter()
        .rev()
        .find(|h| &h.name == name)
        .map(|h| &h.value)
}
use std::borrow::Cow;

/// Deepest nesting level of a part (the message itself is level 1); a
/// container at this level is opaque. Dovecot and Stalwart use 32 as well.
pub const NESTING_MAX: usize = 32;

/// Most parts in one message, nested messages included; over it the
/// message's body is one opaque part.
pub const PARTS_MAX: usize = 10_000;

/// What [`scan`] found out about a message's structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Deepest level reached by the (bounded) walk.
    pub depth: usize,
    /// Parts seen, up to `PARTS_MAX + 1`; `usize::MAX` when the walk could
    /// not make a part opaque (then only the header section is parsed).
    pub parts: usize,
    /// Byte ranges overwritten with `x` for the parse.
    pub masks: Vec<(usize, usize)>,
    /// The structure was over a limit (some part was made opaque).
    pub limited: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// A message: the top level, `message/rfc822|global`, a digest's child.
    Message,
    Digest,
    Multipart,
    Leaf,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cte {
    None,
    Base64,
    QuotedPrintable,
}

struct State {
    kind: Kind,
    boundary: Option<Vec<u8>>,
}

/// mail-parser's classification (`parsers/message.rs`, `mime_type`).
fn classify(headers: &[Header<'_>], parent: Kind) -> (Kind, Option<Vec<u8>>) {
    let ct = last_value(headers, &HeaderName::ContentType).and_then(|v| v.as_content_type());
    match ct {
        Some(ct) => match ct.ctype() {
            "multipart" => {
                let kind = if ct.subtype() == Some("digest") {
                    Kind::Digest
                } else {
                    Kind::Multipart
                };
                (
                    kind,
                    ct.attribute("boundary").map(|b| b.as_bytes().to_vec()),
                )
            }
            "message" if matches!(ct.subtype(), Some("rfc822") | Some("global")) => {
                (Kind::Message, None)
            }
            _ => (Kind::Leaf, None),
        },
        None if parent == Kind::Digest => (Kind::Message, None),
        None => (Kind::Leaf, None),
    }
}

fn cte(headers: &[Header<'_>]) -> Cte {
    match last_value(headers, &HeaderName::ContentTransferEncoding) {
        Some(HeaderValue::Text(e)) if e.eq_ignore_ascii_case("base64") => Cte::Base64,
        Some(HeaderValue::Text(e)) if e.eq_ignore_ascii_case("quoted-printable") => {
            Cte::QuotedPrintable
        }
        _ => Cte::None,
    }
}

/// The first case-insensitive occurrence of one of `tokens` in the value of
/// each `name` header, as byte ranges of `raw`.
fn token_ranges(
    raw: &[u8],
    headers: &[Header<'_>],
    name: &HeaderName<'_>,
    tokens: &[&[u8]],
) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for h in headers.iter().filter(|h| &h.name == name) {
        let (s, e) = (
            h.offset_start as usize,
            (h.offset_end as usize).min(raw.len()),
        );
        let Some(value) = raw.get(s..e) else { continue };
        let found = tokens.iter().find_map(|t| {
            value
                .windows(t.len())
                .position(|w| w.eq_ignore_ascii_case(t))
                .map(|p| (s + p, s + p + t.len()))
        });
        out.extend(found);
    }
    out
}

/// Walks the structure of `raw` exactly as mail-parser will, without
/// recursion, and decides which parts are opaque.
pub fn scan(raw: &[u8]) -> Scan {
    let conf = MessageParser::default();
    let mut stream = MessageStream::new(raw);
    let mut state = State {
        kind: Kind::Message,
        boundary: None,
    };
    // (state of the enclosing level, whether a message was entered)
    let mut stack: Vec<(State, bool)> = Vec::new();
    let mut out = Scan {
        depth: 0,
        parts: 0,
        masks: Vec::new(),
        limited: false,
    };
    let mut root_type: Vec<(usize, usize)> = Vec::new();
    let mut unmaskable = false;
    let mut headers: Vec<Header<'_>> = Vec::new();
    'outer: loop {
        headers.clear();
        if !stream.parse_headers(&conf, &mut headers) {
            break;
        }
        out.parts += 1;
        let level = stack.len() + 1;
        out.depth = out.depth.max(level);
        if out.parts > PARTS_MAX {
            // The whole body becomes one opaque part.
            out.limited = true;
            out.masks = root_type;
            if out.masks.is_empty() {
                unmaskable = true;
            }
            break;
        }
        let type_tokens: &[&[u8]] = &[b"multipart", b"message"];
        let ct_ranges = token_ranges(raw, &headers, &HeaderName::ContentType, type_tokens);
        if level == 1 {
            root_type = ct_ranges.clone();
        }
        let (mut kind, boundary) = classify(&headers, state.kind);
        let mut encoding = cte(&headers);
        let container = matches!(kind, Kind::Multipart | Kind::Digest) && boundary.is_some();
        if container && (level >= NESTING_MAX || (kind == Kind::Digest && level + 1 >= NESTING_MAX))
        {
            out.limited = true;
            out.masks.extend(&ct_ranges);
            unmaskable |= ct_ranges.is_empty();
            kind = Kind::Leaf;
        }
        if kind == Kind::Message && (encoding != Cte::None || level >= NESTING_MAX) {
            out.limited |= level >= NESTING_MAX;
            if !ct_ranges.is_empty() {
                out.masks.extend(&ct_ranges);
                kind = Kind::Leaf;
            } else if level < NESTING_MAX {
                // A digest's implicit message with an encoding: parsed as
                // not encoded (so never recursively).
                let cte_ranges = token_ranges(
                    raw,
                    &headers,
                    &HeaderName::ContentTransferEncoding,
                    &[b"base64", b"quoted-printable"],
                );
                unmaskable |= cte_ranges.is_empty();
                out.masks.extend(cte_ranges);
                encoding = Cte::None;
            } else {
                unmaskable = true;
            }
        }
        if let (Kind::Multipart | Kind::Digest, Some(b)) = (kind, &boundary) {
            if stream.seek_next_part(b) {
                let next = State {
                    kind,
                    boundary: boundary.clone(),
                };
                stack.push((std::mem::replace(&mut state, next), false));
                stream.skip_crlf();
                continue;
            }
            kind = Kind::Leaf;
        }
        if kind == Kind::Message && encoding == Cte::None {
            let next = State {
                kind: Kind::Message,
                boundary: state.boundary.take(),
            };
            stack.push((std::mem::replace(&mut state, next), true));
            continue;
        }
        let boundary = state.boundary.clone().unwrap_or_default();
        let (end, _) = match encoding {
            Cte::Base64 => stream.decode_base64_mime(&boundary),
            Cte::QuotedPrintable => stream.decode_quoted_printable_mime(&boundary),
            Cte::None => stream.mime_part(&boundary),
        };
        if end == usize::MAX {
            let (_, found) = stream.seek_part_end(state.boundary.as_deref());
            if !found {
                state.boundary = None;
            }
        }
        if state.boundary.is_some() {
            loop {
                if state.kind == Kind::Message {
                    match stack.pop() {
                        Some((mut prev, true)) => {
                            prev.boundary = state.boundary.take();
                            state = prev;
                        }
                        _ => break 'outer,
                    }
                }
                if !stream.is_multipart_end() {
                    break;
                }
                match stack.pop() {
                    Some((prev, _)) => {
                        state = prev;
                        let next = state
                            .boundary
                            .as_deref()
                            .and_then(|b| stream.seek_next_part_offset(b));
                        if next.is_none() {
                            break 'outer;
                        }
                    }
                    None => break 'outer,
                }
            }
        } else if stream.offset() >= raw.len() {
            break;
        }
    }
    if unmaskable {
        // The walk and mail-parser could disagree; nothing of the structure
        // is trusted. Parsing the headers only is always safe.
        out.limited = true;
        out.masks.clear();
        out.parts = usize::MAX;
    }
    out.masks.sort_unstable();
    out.masks.dedup();
    out
}

/// Parses a message with the limits above. `None` when it has no headers.
pub fn parse(raw: &[u8]) -> Option<Message<'_>> {
    let s = scan(raw);
    let parser = MessageParser::default();
    let message = if s.parts == usize::MAX {
        parser.parse_headers(raw)?
    } else if s.masks.is_empty() {
        parser.parse(raw)?
    } else {
        let mut copy = raw.to_vec();
        for &(a, b) in &s.masks {
            copy[a..b].fill(b'x');
        }
        let mut m = parser.parse(&copy[..])?;
        // Not one nested message was encoded (they are all opaque), so every
        // offset is into the whole message: point them at the original.
        for_each_message(&mut m, &mut |m| m.raw_message = Cow::Borrowed(&[]));
        let mut m: Message<'_> = m.into_owned();
        for_each_message(&mut m, &mut |m| m.raw_message = Cow::Borrowed(raw));
        m
    };
    let mut message = message;
    for_each_message(&mut message, &mut untangle);
    Some(bounded(message))
}

/// Makes each message's parts a tree: a multipart keeps only children that
/// come after it and that no other multipart claimed. On some malformed
/// input mail-parser 0.11 leaves a multipart listing itself or an ancestor
/// (found by the mime_structure fuzz target: a part `[0, 1, 2, 3]` at index
/// 2), and a walk down the children then never ends.
fn untangle(m: &mut Message<'_>) {
    let len = m.parts.len();
    let mut claimed = vec![false; len];
    if let Some(root) = claimed.first_mut() {
        *root = true;
    }
    for (i, part) in m.parts.iter_mut().enumerate() {
        if let PartType::Multipart(children) = &mut part.body {
            children.retain(|&c| {
                let c = c as usize;
                let keep = c > i && c < len && !claimed[c];
                if keep {
                    claimed[c] = true;
                }
                keep
            });
        }
    }
}

/// Calls `f` on a message and each nested one, with a loop and an explicit
/// stack, so a tree of any depth is fine.
fn for_each_message<'x>(m: &mut Message<'x>, f: &mut dyn FnMut(&mut Message<'x>)) {
    let mut stack: Vec<&mut Message<'x>> = vec![m];
    while let Some(m) = stack.pop() {
        f(m);
        for part in m.parts.iter_mut() {
            if let PartType::Message(inner) = &mut part.body {
                stack.push(inner);
            }
        }
    }
}

/// Cuts every container deeper than `NESTING_MAX` (a leaf with its raw
/// bytes instead), without recursion. After `scan` nothing is cut; this is
/// the guarantee, should the walk and mail-parser ever disagree.
fn bounded(mut message: Message<'_>) -> Message<'_> {
    let mut stack: Vec<(&mut Message<'_>, usize)> = vec![(&mut message, 1)];
    while let Some((m, base)) = stack.pop() {
        let mut level = vec![base; m.parts.len()];
        let raw = &m.raw_message;
        for (i, part) in m.parts.iter_mut().enumerate() {
            let l = level[i];
            let container = matches!(part.body, PartType::Multipart(_) | PartType::Message(_));
            if container && l >= NESTING_MAX {
                let body = raw
                    .get(part.offset_body as usize..part.offset_end as usize)
                    .unwrap_or_default()
                    .to_vec();
                let old = std::mem::replace(&mut part.body, PartType::Binary(Cow::Owned(body)));
                drop_iteratively(old);
                #[cfg(test)]
                tests::CUTS.with(|c| c.set(c.get() + 1));
                continue;
            }
            match &mut part.body {
                PartType::Multipart(children) => {
                    for &c in children.iter() {
                        if let Some(slot) = level.get_mut(c as usize)
                            && c as usize > i
                        {
                            *slot = l + 1;
                        }
                    }
                }
                PartType::Message(inner) => stack.push((inner, l + 1)),
                _ => {}
            }
        }
    }
    message
}

/// Drops a part body holding a tree of any depth without recursion.
fn drop_iteratively(body: PartType<'_>) {
    let PartType::Message(m) = body else { return };
    let mut stack = vec![m];
    while let Some(mut m) = stack.pop() {
        for part in m.parts.iter_mut() {
            if matches!(part.body, PartType::Message(_))
                && let PartType::Message(inner) = std::mem::take(&mut part.body)
            {
                stack.push(inner);
            }
        }
    }
}

/// An opaque part (see the module documentation): its type was masked.
pub fn is_opaque(part: &MessagePart<'_>) -> bool {
    use mail_parser::MimeHeaders;
    part.content_type().is_some_and(|ct| {
        let t = ct.ctype();
        (t.len() == 9 || t.len() == 7) && t.bytes().all(|b| b == b'x')
    })
}

/// Unfolds a raw header value and trims it (RFC 5322 2.2.3).
pub fn unfold(value: &str) -> String {
    value
        .replace("\r\n", "")
        .replace('\n', "")
        .trim()
        .to_string()
}

/// The raw value of a message's `name` header (unfolded, trimmed, not
/// decoded), read by mail-parser from the header section only.
pub fn header_raw(raw: &[u8], name: &str) -> Option<String> {
    let m = MessageParser::default().parse_headers(raw)?;
    m.header_raw(name).map(unfold)
}

#[cfg(test)]
mod tests;
