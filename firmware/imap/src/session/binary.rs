//! FETCH BINARY, BINARY.PEEK and BINARY.SIZE (RFC 3516) as response bytes:
//! the decoding is `fetch::binary`; here the part's bytes become
//! `BINARY[part]<origin> literal` (a literal8 `~{n}` when they hold a NUL,
//! RFC 3516 4.2, since a plain literal must not) or `BINARY.SIZE[part] n`.

use crate::fetch::{self, binary::UnknownCte};
use crate::parser::FetchAtt;
use crate::response;
use mail_parser::Message;

fn part_name(part: &[u32]) -> String {
    part.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// Writes one BINARY item of a FETCH response (nothing for other items).
/// A part whose encoding is unknown gives an empty value here; the
/// session checks that first (`unknown_cte`) and sends no response for it.
pub(super) fn render(out: &mut Vec<u8>, item: &FetchAtt, raw: &[u8], parsed: Option<&Message<'_>>) {
    match item {
        FetchAtt::Binary { part, partial, .. } => {
            let bytes = fetch::binary::decoded(raw, parsed, part).unwrap_or_default();
            out.extend_from_slice(format!("BINARY[{}]", part_name(part)).as_bytes());
            let bytes = match partial {
                Some((start, len)) => {
                    out.extend_from_slice(format!("<{start}>").as_bytes());
                    let s = (*start as usize).min(bytes.len());
                    let e = s.saturating_add(*len as usize).min(bytes.len());
                    &bytes[s..e]
                }
                None => &bytes[..],
            };
            out.push(b' ');
            if bytes.contains(&0) {
                out.push(b'~');
            }
            response::literal(out, bytes);
        }
        FetchAtt::BinarySize { part } => {
            let size = fetch::binary::decoded(raw, parsed, part)
                .map(|b| b.len())
                .unwrap_or(0);
            out.extend_from_slice(format!("BINARY.SIZE[{}] {size}", part_name(part)).as_bytes());
        }
        _ => {}
    }
}

/// Whether `items` hold a BINARY item.
pub(super) fn wanted(items: &[FetchAtt]) -> bool {
    items
        .iter()
        .any(|i| matches!(i, FetchAtt::Binary { .. } | FetchAtt::BinarySize { .. }))
}

/// The first BINARY item of `items` whose part has an encoding this server
/// cannot undo, for `NO [UNKNOWN-CTE]` (RFC 3516 4.3).
pub(super) fn unknown_cte(items: &[FetchAtt], raw: &[u8]) -> Option<UnknownCte> {
    let parsed = fetch::parse(raw);
    items.iter().find_map(|i| match i {
        FetchAtt::Binary { part, .. } | FetchAtt::BinarySize { part } => {
            fetch::binary::decoded(raw, parsed.as_ref(), part).err()
        }
        _ => None,
    })
}
