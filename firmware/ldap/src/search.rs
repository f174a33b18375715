//! Search (RFC 4511 4.5) with the simple paged results control (RFC 2696).
//!
//! The root DSE and `cn=Subschema` answer anyone (clients read them before
//! binding); everything else needs a bind and shows only the books the
//! identity may read. Scopes base, one, sub and children work from any
//! point of the tree. Limits: the client's size and time limits, capped by
//! `ldap.max_search_entries` and `ldap.search_time_limit_secs`; past the size
//! limit the search ends with sizeLimitExceeded (4) after the entries up to
//! it (Thunderbird takes 4 as success), past the time limit with
//! timeLimitExceeded (3) after the entries found so far.
//!
//! Paging is stateless: the cookie carries the number of matches already
//! returned and a fingerprint of the search, and the next page runs the
//! search again and skips them. Entries are in a stable order (the store's
//! key order), so pages neither repeat nor miss entries while the book does
//! not change.

use crate::LdapService;
use crate::access::{BookKind, BookRight, Rights};
use crate::entry::{Refusal, Selection, Served, book_dn, refuse};
use crate::filter::{self, FilterError};
use crate::handler::{Session, bound_rights, parse_dn, refusal_result, result, store_refusal};
use crate::schema;
use crate::tree::{Place, place};
use ldap3_proto::control::LdapControl;
use ldap3_proto::proto::{
    LdapMsg, LdapOp, LdapResultCode, LdapSearchRequest, LdapSearchResultEntry, LdapSearchScope,
};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often (in candidates) the time limit is checked.
const TIME_CHECK_EVERY: usize = 128;

/// A node of the tree a search walks.
enum Node {
    Base,
    Ab,
    Book(BookRight),
    Entry(Arc<Served>),
}

struct Walk<'a> {
    svc: &'a LdapService,
    rights: &'a Rights,
}

impl Walk<'_> {
    fn served(&self, node: &Node) -> Arc<Served> {
        let svc = self.svc;
        let v = |items: &[&str]| {
            items
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect::<Vec<_>>()
        };
        match node {
            Node::Base => {
                let first = svc
                    .base
                    .rdns
                    .first()
                    .map(|r| r.avas[0].value.clone())
                    .unwrap_or_default();
                let domain: Vec<String> = svc
                    .base
                    .rdns
                    .iter()
                    .map(|r| r.avas[0].value.clone())
                    .collect();
                Arc::new(Served::fixed(
                    svc.base_dn(),
                    vec![
                        ("objectClass", v(&["top", "dcObject", "organization"])),
                        ("dc", vec![first.into_bytes()]),
                        ("o", vec![domain.join(".").into_bytes()]),
                    ],
                    true,
                ))
            }
            Node::Ab => Arc::new(Served::fixed(
                format!("ou=ab,{}", svc.base_dn()),
                vec![
                    ("objectClass", v(&["top", "organizationalUnit"])),
                    ("ou", v(&["ab"])),
                    ("description", v(&["Address books"])),
                ],
                true,
            )),
            Node::Book(right) => {
                let what = match right.kind {
                    BookKind::Personal => "Personal address book of",
                    BookKind::Account => "Account address book of",
                };
                Arc::new(Served::fixed(
                    book_dn(&right.book, &svc.base),
                    vec![
                        ("objectClass", v(&["top", "organizationalUnit"])),
                        ("ou", vec![right.book.as_bytes().to_vec()]),
                        (
                            "description",
                            vec![format!("{what} {}", right.book).into_bytes()],
                        ),
                    ],
                    true,
                ))
            }
            Node::Entry(served) => served.clone(),
        }
    }

    fn children(&self, node: &Node) -> Result<Vec<Node>, Refusal> {
        Ok(match node {
            Node::Base => vec![Node::Ab],
            Node::Ab => self.rights.books.iter().cloned().map(Node::Book).collect(),
            Node::Book(right) => self
                .svc
                .books
                .get(&self.svc.store, &right.book, &self.svc.base)
                .map_err(|e| store_refusal(&e))?
                .entries
                .iter()
                .cloned()
                .map(Node::Entry)
                .collect(),
            Node::Entry(_) => vec![],
        })
    }

    /// Every node of the subtree at `node`, in order (the node first).
    fn subtree(&self, node: Node, out: &mut Vec<Arc<Served>>) -> Result<(), Refusal> {
        out.push(self.served(&node));
        for child in self.children(&node)? {
            self.subtree(child, out)?;
        }
        Ok(())
    }

    /// The candidates of a search at `node` with `scope`.
    fn candidates(&self, node: Node, scope: &LdapSearchScope) -> Result<Vec<Arc<Served>>, Refusal> {
        let mut out = Vec::new();
        match scope {
            LdapSearchScope::Base => out.push(self.served(&node)),
            LdapSearchScope::OneLevel => {
                for child in self.children(&node)? {
                    out.push(self.served(&child));
                }
            }
            LdapSearchScope::Subtree => self.subtree(node, &mut out)?,
            LdapSearchScope::Children => {
                for child in self.children(&node)? {
                    self.subtree(child, &mut out)?;
                }
            }
        }
        Ok(out)
    }
}

/// Where a search starts, for a bound identity.
fn start(svc: &LdapService, rights: &Rights, at: Place) -> Result<Node, Refusal> {
    let base = svc.base_dn();
    let ab = format!("ou=ab,{base}");
    let no_such =
        |matched: String| refuse(LdapResultCode::NoSuchObject, "no such entry").matched(matched);
    match at {
        Place::Base => Ok(Node::Base),
        Place::AbContainer => Ok(Node::Ab),
        Place::Book(name) => match rights.book(&name) {
            Some(r) => Ok(Node::Book(r.clone())),
            None => Err(no_such(ab)),
        },
        Place::Entry { book, rdn } => {
            let Some(right) = rights.book(&book) else {
                return Err(no_such(ab));
            };
            let cached = svc
                .books
                .get(&svc.store, &right.book, &svc.base)
                .map_err(|e| store_refusal(&e))?;
            match cached.get(&rdn) {
                Some(e) => Ok(Node::Entry(e.clone())),
                None => Err(no_such(book_dn(&right.book, &svc.base))),
            }
        }
        Place::BelowEntry { book } => match rights.book(&book) {
            Some(r) => Err(no_such(book_dn(&r.book, &svc.base))),
            None => Err(no_such(ab)),
        },
        Place::AuthContainer | Place::Bind(_) | Place::UnderBase => Err(no_such(base)),
        Place::Outside | Place::RootDse | Place::Subschema => Err(refuse(
            LdapResultCode::NoSuchObject,
            format!("this server holds {base} only"),
        )),
    }
}

fn fingerprint(req: &LdapSearchRequest, session: &Session) -> u64 {
    let mut h = DefaultHasher::new();
    req.base.to_ascii_lowercase().hash(&mut h);
    req.scope.hash(&mut h);
    req.filter.hash(&mut h);
    req.attrs.hash(&mut h);
    req.typesonly.hash(&mut h);
    format!("{:?}", session.identity).hash(&mut h);
    h.finish()
}

fn cookie(offset: usize, print: u64) -> Vec<u8> {
    let mut c = (offset as u64).to_be_bytes().to_vec();
    c.extend_from_slice(&print.to_be_bytes());
    c
}

fn read_cookie(c: &[u8], print: u64) -> Option<usize> {
    if c.len() != 16 || c[8..] != print.to_be_bytes() {
        return None;
    }
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&c[..8]);
    usize::try_from(u64::from_be_bytes(offset)).ok()
}

pub fn search(
    svc: &LdapService,
    session: &Session,
    msgid: i32,
    req: LdapSearchRequest,
    ctrl: &[LdapControl],
    stream: &mut dyn FnMut(LdapMsg) -> bool,
) -> Vec<LdapMsg> {
    let done = |res, ctrl| LdapMsg {
        msgid,
        op: LdapOp::SearchResultDone(res),
        ctrl,
    };
    let fail = |r: Refusal| vec![done(refusal_result(&r), vec![])];

    let dn = match parse_dn(&req.base) {
        Ok(dn) => dn,
        Err(r) => return fail(r),
    };
    let filter = match filter::compile(&req.filter, svc.filter_limits()) {
        Ok(f) => f,
        Err(FilterError::TooComplex(m)) => {
            return fail(refuse(LdapResultCode::AdminLimitExceeded, m));
        }
        Err(FilterError::Unsupported(m)) => {
            return fail(refuse(LdapResultCode::InappropriateMatching, m));
        }
    };
    let selection = Selection::new(&req.attrs);
    let at = place(&dn, &svc.base);

    // The discovery entries answer anyone.
    let discovery = match (&at, &req.scope) {
        (Place::RootDse, LdapSearchScope::Base) => Some(Served::fixed(
            String::new(),
            schema::root_dse_attributes(&svc.base_dn()),
            true,
        )),
        (Place::Subschema, LdapSearchScope::Base | LdapSearchScope::Subtree) => {
            Some(Served::fixed(
                schema::SUBSCHEMA_DN.to_string(),
                schema::subschema_attributes(),
                false,
            ))
        }
        (Place::Subschema, _) => {
            return vec![done(result(LdapResultCode::Success, "", ""), vec![])];
        }
        _ => None,
    };
    let candidates: Vec<Arc<Served>> = match discovery {
        Some(entry) => vec![Arc::new(entry)],
        None => {
            let rights = match bound_rights(svc, session) {
                Ok(r) => r,
                Err(r) => return fail(r),
            };
            let node = match start(svc, &rights, at) {
                Ok(n) => n,
                Err(r) => return fail(r),
            };
            let walk = Walk {
                svc,
                rights: &rights,
            };
            match walk.candidates(node, &req.scope) {
                Ok(c) => c,
                Err(r) => return fail(r),
            }
        }
    };

    let server_max = svc.limits.max_search_entries;
    let size_limit = match usize::try_from(req.sizelimit) {
        Ok(n) if n > 0 => n.min(server_max),
        _ => server_max,
    };
    let server_time = Duration::from_secs(svc.limits.search_time_limit_secs);
    let time_limit = match u64::try_from(req.timelimit) {
        Ok(n) if n > 0 => Duration::from_secs(n).min(server_time),
        _ => server_time,
    };
    let paged = ctrl.iter().find_map(|c| match c {
        LdapControl::SimplePagedResults { size, cookie } => Some((*size, cookie.clone())),
        _ => None,
    });
    let print = fingerprint(&req, session);
    let (page_size, offset) = match &paged {
        None => (usize::MAX, 0),
        Some((size, c)) => {
            let offset = if c.is_empty() {
                0
            } else {
                match read_cookie(c, print) {
                    Some(o) => o,
                    None => {
                        return fail(refuse(
                            LdapResultCode::UnwillingToPerform,
                            "the paged results cookie does not belong to this search",
                        ));
                    }
                }
            };
            let size = usize::try_from(*size).unwrap_or(0);
            if size == 0 {
                // RFC 2696 3: a page size of 0 abandons the paged search.
                return vec![done(
                    result(LdapResultCode::Success, "", ""),
                    vec![LdapControl::SimplePagedResults {
                        size: 0,
                        cookie: vec![],
                    }],
                )];
            }
            (size, offset)
        }
    };

    let started = Instant::now();
    // Entries go out one by one as they are made (the candidates are
    // pointers into the book cache): a search never holds its results.
    let mut sent = 0usize;
    let mut seen = 0usize;
    let mut code = LdapResultCode::Success;
    let mut message = "";
    let mut more = false;
    for (i, entry) in candidates.iter().enumerate() {
        if i % TIME_CHECK_EVERY == 0 && i > 0 && started.elapsed() > time_limit {
            code = LdapResultCode::TimeLimitExceeded;
            message = "the search ran out of time";
            break;
        }
        if !filter.matches(entry.as_ref()) {
            continue;
        }
        seen += 1;
        if seen <= offset {
            continue;
        }
        if seen > size_limit {
            code = LdapResultCode::SizeLimitExceeded;
            message = "more entries match than the size limit";
            break;
        }
        if sent == page_size {
            more = true;
            break;
        }
        let entry = LdapMsg {
            msgid,
            op: LdapOp::SearchResultEntry(LdapSearchResultEntry {
                dn: entry.dn.clone(),
                attributes: selection.apply(entry, req.typesonly),
            }),
            ctrl: vec![],
        };
        if !stream(entry) {
            // The client is gone: nothing more to make.
            break;
        }
        sent += 1;
    }
    let response_ctrl = match paged {
        Some(_) => vec![LdapControl::SimplePagedResults {
            size: 0,
            cookie: if more && code == LdapResultCode::Success {
                cookie(offset + sent, print)
            } else {
                vec![]
            },
        }],
        None => vec![],
    };
    vec![done(result(code, "", message), response_ctrl)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_carry_the_offset_and_belong_to_one_search() {
        let c = cookie(42, 7);
        assert_eq!(read_cookie(&c, 7), Some(42));
        assert_eq!(read_cookie(&c, 8), None);
        assert_eq!(read_cookie(b"junk", 7), None);
    }
}
