//! CATENATE URL parts (RFC 4469 5, IMAP URLs of RFC 5092): a message of
//! this user's mailboxes, or a section or a range of it, copied into the
//! message being appended. Accepted forms, parameters case-insensitive:
//!
//! - `imap://[user[;AUTH=...]@]host[:port]/mailbox[;UIDVALIDITY=n]/;UID=m...`
//!   when the host is this server's name and the user (if named) is the
//!   session's;
//! - `/mailbox[;UIDVALIDITY=n]/;UID=m...` (absolute path, this server);
//! - `;UID=m...` relative to the selected mailbox (RFC 4469 5: the base URL
//!   is the selected mailbox);
//!
//! then `[/;SECTION=section][/;PARTIAL=offset[.length]]`. Anything else
//! (URLAUTH, another server or user, a UIDVALIDITY that does not match, a
//! message or section that does not exist) is `NO [BADURL url]`.
//!
//! The referenced message is read whole, like FETCH does, under a lease of
//! the shared memory budget (twice its size) held until its bytes are
//! written into the new message.

use mxrack_store::IncomingMessage;
use tracing::warn;

use super::{Session, blocking, store_error};
use crate::fetch;
use crate::parser::parse_section;

/// Longest URL accepted in a CATENATE part (RFC 4469 sets none).
pub(super) const URL_BYTES_MAX: u64 = 8 * 1024;

/// An IMAP URL naming a message of this server, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MessageUrl {
    /// `None`: the selected mailbox.
    pub mailbox: Option<String>,
    pub uidvalidity: Option<u32>,
    pub uid: u32,
    pub section: Option<Vec<u8>>,
    pub partial: Option<(u64, Option<u64>)>,
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Strips `prefix` (ASCII, case-insensitive) from `s`.
fn strip_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Parses a URL of a CATENATE part; `None` is BADURL.
pub(super) fn parse_url(url: &str, user: &str, hostname: &str) -> Option<MessageUrl> {
    let path = if let Some(rest) = strip_ci(url, "imap://") {
        let (authority, path) = rest.split_at(rest.find('/')?);
        let host = match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                let name = userinfo.split(';').next()?;
                if !percent_decode(name)?.eq_ignore_ascii_case(user) {
                    return None;
                }
                host
            }
            None => authority,
        };
        let host = host.split(':').next()?;
        if !host.eq_ignore_ascii_case(hostname) {
            return None;
        }
        path
    } else {
        url
    };
    let (mailbox, uidvalidity, rest) = if let Some(abs) = path.strip_prefix('/') {
        // The mailbox runs to "/;UID=" (it may hold "/" itself).
        let lower = abs.to_ascii_lowercase();
        let at = lower.find("/;uid=")?;
        let (mut name, rest) = (&abs[..at], &abs[at + 1..]);
        let mut validity = None;
        if let Some(p) = name.to_ascii_lowercase().rfind(";uidvalidity=") {
            validity = Some(name[p + ";uidvalidity=".len()..].parse::<u32>().ok()?);
            name = &name[..p];
        }
        let name = percent_decode(name)?;
        if name.is_empty() {
            return None;
        }
        (Some(name), validity, rest)
    } else {
        (None, None, path)
    };
    let rest = strip_ci(rest, ";uid=")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let uid: u32 = rest[..digits].parse().ok().filter(|&u| u > 0)?;
    let mut rest = &rest[digits..];
    let mut section = None;
    if let Some(r) = strip_ci(rest, "/;section=") {
        let end = r.find("/;").unwrap_or(r.len());
        section = Some(percent_decode(&r[..end])?.into_bytes());
        rest = &r[end..];
    }
    let mut partial = None;
    if let Some(r) = strip_ci(rest, "/;partial=") {
        let (offset, length) = match r.split_once('.') {
            Some((o, l)) => (o.parse().ok()?, Some(l.parse().ok()?)),
            None => (r.parse().ok()?, None),
        };
        partial = Some((offset, length));
        rest = "";
    }
    // URLAUTH and anything unknown are refused.
    rest.is_empty().then_some(MessageUrl {
        mailbox,
        uidvalidity,
        uid,
        section,
        partial,
    })
}

/// The tagged BADURL answer (RFC 4469 6: the URL as the client sent it;
/// `]` cannot appear in the code's text).
fn bad_url(tag: &str, url: &str) -> String {
    let shown: String = url
        .chars()
        .filter(|c| !matches!(c, ']' | '\r' | '\n'))
        .collect();
    format!("{tag} NO [BADURL {shown}] URL does not name a message here\r\n")
}

impl Session {
    /// Copies what `url` names into `file`. `room` is how many bytes the
    /// message may still take (the max message size less what it holds);
    /// more is `NO [TOOBIG]`. `Err` is the tagged answer.
    pub(super) async fn catenate_url(
        &self,
        tag: &str,
        url: &[u8],
        file: &mut IncomingMessage,
        room: u64,
    ) -> Result<(), String> {
        let text = String::from_utf8_lossy(url).into_owned();
        let user = self.user.clone().unwrap_or_default();
        let Some(parsed) = parse_url(&text, &user, &self.svc.hostname) else {
            return Err(bad_url(tag, &text));
        };
        let Some(folder) = parsed
            .mailbox
            .clone()
            .or_else(|| self.selected.as_ref().map(|s| s.name.clone()))
        else {
            return Err(bad_url(tag, &text));
        };
        let snap = match blocking(&self.svc.store, move |s| s.folder_snapshot(&user, &folder)).await
        {
            Ok(snap) => snap,
            Err(mxrack_store::StoreError::NotFound { .. }) => return Err(bad_url(tag, &text)),
            Err(e) => return Err(store_error(tag, &e)),
        };
        if parsed
            .uidvalidity
            .is_some_and(|v| v != snap.folder.uidvalidity)
        {
            return Err(bad_url(tag, &text));
        }
        let Some(meta) = snap.messages.iter().find(|m| m.uid == parsed.uid).cloned() else {
            return Err(bad_url(tag, &text));
        };
        let section = match &parsed.section {
            Some(s) => Some(parse_section(s).ok_or_else(|| bad_url(tag, &text))?),
            None => None,
        };
        if section.is_none() && parsed.partial.is_none() && meta.size > room {
            return Err(too_big(tag));
        }
        let Some(_lease) = mxrack_net::budget::global()
            .lease(meta.size.saturating_mul(2))
            .await
        else {
            warn!("CATENATE refused: the memory budget for client data is spent");
            return Err(format!(
                "{tag} NO [UNAVAILABLE] Server busy, try again later\r\n"
            ));
        };
        let raw = blocking(&self.svc.store, move |s| s.read_blob(meta.blob))
            .await
            .map_err(|_| bad_url(tag, &text))?;
        let bytes = match &section {
            None => raw,
            Some(section) => {
                let msg = fetch::parse(&raw).ok_or_else(|| bad_url(tag, &text))?;
                fetch::section_bytes(&raw, &msg, section).ok_or_else(|| bad_url(tag, &text))?
            }
        };
        let bytes = match parsed.partial {
            None => &bytes[..],
            Some((offset, length)) => {
                let s = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let e = match length {
                    Some(l) => s.saturating_add(usize::try_from(l).unwrap_or(usize::MAX)),
                    None => bytes.len(),
                }
                .min(bytes.len());
                &bytes[s..e]
            }
        };
        if bytes.len() as u64 > room {
            return Err(too_big(tag));
        }
        file.write(bytes).await.map_err(|e| store_error(tag, &e))
    }
}

pub(super) fn too_big(tag: &str) -> String {
    format!("{tag} NO [TOOBIG] Message larger than the server accepts\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(
        mailbox: Option<&str>,
        uidvalidity: Option<u32>,
        uid: u32,
        section: Option<&str>,
        partial: Option<(u64, Option<u64>)>,
    ) -> MessageUrl {
        MessageUrl {
            mailbox: mailbox.map(str::to_string),
            uidvalidity,
            uid,
            section: section.map(|s| s.as_bytes().to_vec()),
            partial,
        }
    }

    #[test]
    fn urls_of_this_server() {
        let p = |s: &str| parse_url(s, "bob@example.org", "mx.example.org");
        let table = [
            (
                "/INBOX/;UID=3",
                Some(url(Some("INBOX"), None, 3, None, None)),
            ),
            (
                "/Sent%20Items;UIDVALIDITY=77/;uid=5/;section=HEADER",
                Some(url(Some("Sent Items"), Some(77), 5, Some("HEADER"), None)),
            ),
            (
                "/a/b/;UID=1/;SECTION=1.2.MIME/;PARTIAL=10.20",
                Some(url(
                    Some("a/b"),
                    None,
                    1,
                    Some("1.2.MIME"),
                    Some((10, Some(20))),
                )),
            ),
            (
                "/INBOX/;uid=2/;partial=100000.1",
                Some(url(Some("INBOX"), None, 2, None, Some((100_000, Some(1))))),
            ),
            (
                ";UID=9/;SECTION=TEXT",
                Some(url(None, None, 9, Some("TEXT"), None)),
            ),
            (
                "imap://bob%40example.org;AUTH=*@MX.example.org:143/INBOX;UIDVALIDITY=4/;UID=8",
                Some(url(Some("INBOX"), Some(4), 8, None, None)),
            ),
            (
                "imap://mx.example.org/Caf%C3%A9/;UID=1",
                Some(url(Some("Café"), None, 1, None, None)),
            ),
            // Another server, another user, URLAUTH, junk: BADURL.
            ("imap://other.example/INBOX/;UID=1", None),
            ("imap://eve@mx.example.org/INBOX/;UID=1", None),
            ("/INBOX/;UID=1;URLAUTH=anonymous", None),
            ("/INBOX/;UID=0", None),
            ("/INBOX", None),
            ("//;UID=1", None),
            ("/INBOX;UIDVALIDITY=x/;UID=1", None),
            ("/IN%ZZBOX/;UID=1", None),
            ("http://mx.example.org/INBOX/;UID=1", None),
        ];
        for (s, want) in table {
            assert_eq!(p(s), want, "{s}");
        }
    }
}
