//! `handle`: one client message in, the replies out. No network I/O: the
//! connection loop runs it on a blocking thread (binds hash passwords, writes
//! commit to disk) and writes what it returns. Each operation lives in its
//! own module; this one checks controls, dispatches, and holds what the
//! operations share (results, refusals, locating an entry).

use crate::access::{BookRight, Identity, Rights};
use crate::codec::Frame;
use crate::dn::{self, Rdn};
use crate::entry::{Refusal, book_dn, refuse};
use crate::schema::{OID_NOTICE_OF_DISCONNECTION, OID_STARTTLS};
use crate::tree::{Place, place};
use crate::{LdapService, add, bind, compare, delete, modify, modrdn, password, search};
use ldap3_proto::control::LdapControl;
use ldap3_proto::proto::{
    LdapBindResponse, LdapExtendedResponse, LdapMsg, LdapOp, LdapResult, LdapResultCode,
    OID_PASSWORD_MODIFY, OID_WHOAMI,
};
use mxrack_store::StoreError;
use std::net::IpAddr;

/// The state of one connection.
#[derive(Debug, Clone)]
pub struct Session {
    pub peer: IpAddr,
    /// Inside TLS (LDAPS, or after StartTLS).
    pub tls: bool,
    pub identity: Identity,
}

impl Session {
    pub fn new(peer: IpAddr, tls: bool) -> Session {
        Session {
            peer,
            tls,
            identity: Identity::Anonymous,
        }
    }
}

/// What the connection does after writing the replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    Continue,
    /// Start TLS on the same connection (the success reply is sent first).
    StartTls,
    Close,
}

#[derive(Debug)]
pub struct Outcome {
    pub replies: Vec<LdapMsg>,
    pub then: Then,
}

impl Outcome {
    pub fn reply(replies: Vec<LdapMsg>) -> Outcome {
        Outcome {
            replies,
            then: Then::Continue,
        }
    }
}

/// The kind of a request, to answer it with the matching response type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bind,
    Unbind,
    Search,
    Modify,
    Add,
    Delete,
    ModDn,
    Compare,
    Abandon,
    Extended,
    /// A response or something else a client must not send.
    Other,
}

impl Kind {
    fn of(op: &LdapOp) -> Kind {
        match op {
            LdapOp::BindRequest(_) => Kind::Bind,
            LdapOp::UnbindRequest => Kind::Unbind,
            LdapOp::SearchRequest(_) => Kind::Search,
            LdapOp::ModifyRequest(_) => Kind::Modify,
            LdapOp::AddRequest(_) => Kind::Add,
            LdapOp::DelRequest(_) => Kind::Delete,
            LdapOp::ModifyDNRequest(_) => Kind::ModDn,
            LdapOp::CompareRequest(_) => Kind::Compare,
            LdapOp::AbandonRequest(_) => Kind::Abandon,
            LdapOp::ExtendedRequest(_) => Kind::Extended,
            _ => Kind::Other,
        }
    }

    /// From the BER tag byte of the operation (RFC 4511 appendix B).
    fn of_tag(tag: u8) -> Kind {
        match tag {
            0x60 => Kind::Bind,
            0x42 => Kind::Unbind,
            0x63 => Kind::Search,
            0x66 => Kind::Modify,
            0x68 => Kind::Add,
            0x4a => Kind::Delete,
            0x6c => Kind::ModDn,
            0x6e => Kind::Compare,
            0x50 => Kind::Abandon,
            0x77 => Kind::Extended,
            _ => Kind::Other,
        }
    }
}

pub fn result(code: LdapResultCode, matched: &str, message: &str) -> LdapResult {
    LdapResult {
        code,
        matcheddn: matched.to_string(),
        message: message.to_string(),
        referral: vec![],
    }
}

pub fn success() -> LdapResult {
    result(LdapResultCode::Success, "", "")
}

pub fn refusal_result(r: &Refusal) -> LdapResult {
    result(r.code.clone(), &r.matched, &r.message)
}

/// The response of `kind` carrying `res` (none for abandon and unbind).
pub fn respond(kind: Kind, msgid: i32, res: LdapResult) -> Vec<LdapMsg> {
    let op = match kind {
        Kind::Bind => LdapOp::BindResponse(LdapBindResponse {
            res,
            saslcreds: None,
        }),
        Kind::Search => LdapOp::SearchResultDone(res),
        Kind::Modify => LdapOp::ModifyResponse(res),
        Kind::Add => LdapOp::AddResponse(res),
        Kind::Delete => LdapOp::DelResponse(res),
        Kind::ModDn => LdapOp::ModifyDNResponse(res),
        Kind::Compare => LdapOp::CompareResult(res),
        Kind::Extended => LdapOp::ExtendedResponse(LdapExtendedResponse {
            res,
            name: None,
            value: None,
        }),
        Kind::Abandon | Kind::Unbind => return vec![],
        Kind::Other => return vec![notice(res.code, &res.message)],
    };
    vec![LdapMsg {
        msgid,
        op,
        ctrl: vec![],
    }]
}

/// A Notice of Disconnection (RFC 4511 4.4.1): message id 0, then close.
pub fn notice(code: LdapResultCode, message: &str) -> LdapMsg {
    LdapMsg {
        msgid: 0,
        op: LdapOp::ExtendedResponse(LdapExtendedResponse {
            res: result(code, "", message),
            name: Some(OID_NOTICE_OF_DISCONNECTION.to_string()),
            value: None,
        }),
        ctrl: vec![],
    }
}

/// How a store failure reads to a client.
pub fn store_refusal(e: &StoreError) -> Refusal {
    use LdapResultCode as C;
    match e {
        StoreError::Duplicate { .. } => refuse(C::EntryAlreadyExists, "the entry already exists"),
        StoreError::NotFound { .. } => refuse(C::NoSuchObject, "no such entry"),
        StoreError::Invalid {
            what: "address book",
            why,
        } => refuse(C::AdminLimitExceeded, format!("the address book is {why}")),
        // RFC 4511 4.1.9 / Appendix A.2: adminLimitExceeded, "a limit set
        // by an administrative authority", with the figures as the
        // diagnostic message so the user sees which limit and how far.
        StoreError::AddressBookOverLimit { .. } => refuse(C::AdminLimitExceeded, e.to_string()),
        StoreError::Invalid { what, why } => {
            refuse(C::ConstraintViolation, format!("invalid {what}: {why}"))
        }
        StoreError::NoSpace => refuse(
            C::UnwillingToPerform,
            "the appliance is out of disk space; nothing was changed",
        ),
        StoreError::Closed => refuse(C::Unavailable, "the server is shutting down"),
        other => {
            tracing::error!(error = %other, "LDAP: store failure");
            refuse(C::Other, "internal error; nothing was changed")
        }
    }
}

/// Handles one message; the entries of a search come first in `replies`.
/// The connection uses `handle_streaming` instead, so a search never holds
/// its result set.
pub fn handle(svc: &LdapService, session: &mut Session, frame: Frame) -> Outcome {
    let mut entries = Vec::new();
    let mut outcome = handle_streaming(svc, session, frame, &mut |m| {
        entries.push(m);
        true
    });
    entries.append(&mut outcome.replies);
    outcome.replies = entries;
    outcome
}

/// Handles one message. A search hands each entry to `stream` as soon as it
/// is made (`stream` returns false when the client is gone, and the search
/// stops); `replies` then holds what follows them (SearchResultDone).
pub fn handle_streaming(
    svc: &LdapService,
    session: &mut Session,
    frame: Frame,
    stream: &mut dyn FnMut(LdapMsg) -> bool,
) -> Outcome {
    let msg = match frame {
        Frame::Msg(msg) => *msg,
        Frame::Malformed { msgid, op_tag } => {
            let kind = op_tag.map_or(Kind::Other, Kind::of_tag);
            let res = result(
                LdapResultCode::ProtocolError,
                "",
                "the request could not be decoded",
            );
            let replies = respond(kind, msgid, res);
            let then = if kind == Kind::Other || replies.is_empty() {
                Then::Close
            } else {
                Then::Continue
            };
            return Outcome {
                replies: if replies.is_empty() {
                    vec![notice(LdapResultCode::ProtocolError, "undecodable request")]
                } else {
                    replies
                },
                then,
            };
        }
    };
    let LdapMsg { msgid, op, ctrl } = msg;
    let kind = Kind::of(&op);
    if kind == Kind::Other {
        return Outcome {
            replies: vec![notice(
                LdapResultCode::ProtocolError,
                "a client sent a server's message",
            )],
            then: Then::Close,
        };
    }
    if let Some(oid) = unsupported_critical_control(&ctrl) {
        let res = result(
            LdapResultCode::UnavailableCriticalExtension,
            "",
            &format!("critical control {oid} is not supported"),
        );
        return Outcome::reply(respond(kind, msgid, res));
    }
    match op {
        LdapOp::BindRequest(req) => Outcome::reply(bind::bind(svc, session, msgid, req)),
        LdapOp::UnbindRequest => Outcome {
            replies: vec![],
            then: Then::Close,
        },
        LdapOp::SearchRequest(req) => {
            Outcome::reply(search::search(svc, session, msgid, req, &ctrl, stream))
        }
        LdapOp::ModifyRequest(req) => Outcome::reply(modify::modify(svc, session, msgid, req)),
        LdapOp::AddRequest(req) => Outcome::reply(add::add(svc, session, msgid, req)),
        LdapOp::DelRequest(dn) => Outcome::reply(delete::delete(svc, session, msgid, &dn)),
        LdapOp::ModifyDNRequest(req) => Outcome::reply(modrdn::modify_dn(svc, session, msgid, req)),
        LdapOp::CompareRequest(req) => Outcome::reply(compare::compare(svc, session, msgid, req)),
        // Operations run one at a time in order, so by the time an abandon
        // is read the operation it names has already been answered
        // (RFC 4511 4.11: the server may have completed it).
        LdapOp::AbandonRequest(_) => Outcome::reply(vec![]),
        LdapOp::ExtendedRequest(req) => match req.name.as_str() {
            OID_STARTTLS => start_tls(svc, session, msgid),
            OID_WHOAMI => Outcome::reply(bind::who_am_i(session, msgid)),
            OID_PASSWORD_MODIFY => {
                Outcome::reply(password::password_modify(svc, session, msgid, &req))
            }
            other => Outcome::reply(respond(
                Kind::Extended,
                msgid,
                result(
                    LdapResultCode::ProtocolError,
                    "",
                    &format!("extended operation {other} is not supported"),
                ),
            )),
        },
        _ => Outcome {
            replies: vec![notice(LdapResultCode::ProtocolError, "unexpected message")],
            then: Then::Close,
        },
    }
}

/// The OID of a critical control this server cannot honour.
fn unsupported_critical_control(ctrl: &[LdapControl]) -> Option<String> {
    for c in ctrl {
        let (oid, critical) = match c {
            // The paged results control is what this server implements; its
            // decoded form has no criticality, so on other operations it is
            // taken as non-critical and ignored.
            LdapControl::SimplePagedResults { .. } => continue,
            LdapControl::ManageDsaIT { .. } => continue,
            LdapControl::Unknown {
                oid, criticality, ..
            } => (oid.clone(), *criticality),
            LdapControl::SyncRequest { criticality, .. } => {
                ("1.3.6.1.4.1.4203.1.9.1.1".to_string(), *criticality)
            }
            LdapControl::PasswordPolicyRequest { criticality } => {
                ("1.3.6.1.4.1.42.2.27.8.5.1".to_string(), *criticality)
            }
            LdapControl::SearchOptions { criticality, .. } => {
                ("1.2.840.113556.1.4.1340".to_string(), *criticality)
            }
            LdapControl::ShowDeleted { criticality } => {
                ("1.2.840.113556.1.4.417".to_string(), *criticality)
            }
            LdapControl::SdFlags { criticality, .. } => {
                ("1.2.840.113556.1.4.801".to_string(), *criticality)
            }
            LdapControl::ExtendedDn { criticality, .. } => {
                ("1.2.840.113556.1.4.529".to_string(), *criticality)
            }
            _ => continue,
        };
        if critical {
            return Some(oid);
        }
    }
    None
}

/// RFC 4511 4.14 / RFC 4513 3: StartTLS on a plain connection.
fn start_tls(svc: &LdapService, session: &Session, msgid: i32) -> Outcome {
    let refuse_with = |code: LdapResultCode, message: &str| {
        Outcome::reply(vec![LdapMsg {
            msgid,
            op: LdapOp::ExtendedResponse(LdapExtendedResponse {
                res: result(code, "", message),
                name: Some(OID_STARTTLS.to_string()),
                value: None,
            }),
            ctrl: vec![],
        }])
    };
    if session.tls {
        return refuse_with(LdapResultCode::OperationsError, "TLS is already active");
    }
    if svc.tls.is_none() {
        return refuse_with(LdapResultCode::Unavailable, "TLS is not configured");
    }
    Outcome {
        replies: vec![LdapMsg {
            msgid,
            op: LdapOp::ExtendedResponse(LdapExtendedResponse {
                res: success(),
                name: Some(OID_STARTTLS.to_string()),
                value: None,
            }),
            ctrl: vec![],
        }],
        then: Then::StartTls,
    }
}

/// A bound identity's rights, or insufficientAccessRights before a bind.
pub(crate) fn bound_rights(svc: &LdapService, session: &Session) -> Result<Rights, Refusal> {
    if session.identity == Identity::Anonymous {
        return Err(refuse(
            LdapResultCode::InsufficentAccessRights,
            "authentication required: bind as cn=NAME,ou=auth,BASE first",
        ));
    }
    Rights::resolve(&svc.store, &session.identity).map_err(|e| store_refusal(&e))
}

/// Parses a DN from a request; invalidDNSyntax when it does not parse.
pub(crate) fn parse_dn(text: &str) -> Result<dn::Dn, Refusal> {
    dn::parse(text).map_err(|e| refuse(LdapResultCode::InvalidDNSyntax, e.0))
}

/// An address-book entry named by a request, with the book it is in.
pub(crate) struct Located {
    pub right: BookRight,
    pub rdn: Rdn,
    pub book_dn: String,
}

/// Finds the entry `dn` names among the books the session may write (or
/// read, with `write` false). The refusals say no more than the identity
/// may know: a book it cannot read is noSuchObject, as if it did not exist.
pub(crate) fn locate_entry(
    svc: &LdapService,
    session: &Session,
    dn_text: &str,
    write: bool,
) -> Result<Located, Refusal> {
    let rights = bound_rights(svc, session)?;
    let dn = parse_dn(dn_text)?;
    let base = svc.base_dn();
    let ab = format!("ou=ab,{base}");
    match place(&dn, &svc.base) {
        Place::Entry { book, rdn } => {
            let Some(right) = rights.book(&book).cloned() else {
                return Err(
                    refuse(LdapResultCode::NoSuchObject, "no such address book").matched(ab)
                );
            };
            if write && !right.write {
                return Err(refuse(
                    LdapResultCode::InsufficentAccessRights,
                    "this address book is read-only for you (the account book needs full management access)",
                ));
            }
            let book_dn = book_dn(&right.book, &svc.base);
            Ok(Located {
                right,
                rdn,
                book_dn,
            })
        }
        Place::BelowEntry { book } if rights.book(&book).is_some() => Err(refuse(
            LdapResultCode::NamingViolation,
            "an address book is flat: entries go directly under ou=NAME,ou=ab,BASE",
        )),
        Place::Book(book) if rights.book(&book).is_none() => {
            Err(refuse(LdapResultCode::NoSuchObject, "no such address book").matched(ab))
        }
        Place::Base | Place::AbContainer | Place::Book(_) => Err(refuse(
            LdapResultCode::UnwillingToPerform,
            "the containers and address books are fixed; only entries in a book can change",
        )),
        Place::RootDse | Place::Subschema => Err(refuse(
            LdapResultCode::UnwillingToPerform,
            "the root DSE and the schema cannot change",
        )),
        Place::BelowEntry { .. } => {
            Err(refuse(LdapResultCode::NoSuchObject, "no such address book").matched(ab))
        }
        Place::AuthContainer | Place::Bind(_) | Place::UnderBase => {
            Err(refuse(LdapResultCode::NoSuchObject, "no such entry").matched(base))
        }
        Place::Outside => Err(refuse(
            LdapResultCode::NoSuchObject,
            format!("this server holds {base} only"),
        )),
    }
}
