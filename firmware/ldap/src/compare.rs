//! Compare (RFC 4511 4.10) on any entry the identity may read.

use crate::LdapService;
use crate::entry::{Refusal, refuse};
use crate::handler::{
    Kind, Session, bound_rights, parse_dn, refusal_result, respond, result, store_refusal,
};
use crate::schema;
use crate::tree::{Place, place};
use ldap3_proto::proto::{LdapCompareRequest, LdapMsg, LdapResultCode};

pub fn compare(
    svc: &LdapService,
    session: &Session,
    msgid: i32,
    req: LdapCompareRequest,
) -> Vec<LdapMsg> {
    let res = match try_compare(svc, session, &req) {
        Ok(true) => result(LdapResultCode::CompareTrue, "", ""),
        Ok(false) => result(LdapResultCode::CompareFalse, "", ""),
        Err(r) => refusal_result(&r),
    };
    respond(Kind::Compare, msgid, res)
}

fn try_compare(
    svc: &LdapService,
    session: &Session,
    req: &LdapCompareRequest,
) -> Result<bool, Refusal> {
    let rights = bound_rights(svc, session)?;
    let dn = parse_dn(&req.dn)?;
    let ab = format!("ou=ab,{}", svc.base_dn());
    let Place::Entry { book, rdn } = place(&dn, &svc.base) else {
        return Err(refuse(
            LdapResultCode::UnwillingToPerform,
            "compare works on address-book entries",
        ));
    };
    let Some(right) = rights.book(&book) else {
        return Err(refuse(LdapResultCode::NoSuchObject, "no such address book").matched(ab));
    };
    let cached = svc
        .books
        .get(&svc.store, &right.book, &svc.base)
        .map_err(|e| store_refusal(&e))?;
    let Some(entry) = cached.get(&rdn) else {
        return Err(refuse(LdapResultCode::NoSuchObject, "no such entry")
            .matched(crate::entry::book_dn(&right.book, &svc.base)));
    };
    let Some(def) = schema::lookup(&req.atype) else {
        return Err(refuse(
            LdapResultCode::UndefinedAttributeType,
            format!("unknown attribute type {:?}", req.atype),
        ));
    };
    let Some(attr) = entry.attribute(&def.id()) else {
        return Err(refuse(
            LdapResultCode::NoSuchAttribute,
            format!("the entry has no {}", def.name),
        ));
    };
    let wanted = schema::normalize(def.syntax, &req.val);
    Ok(attr.normalized.contains(&wanted))
}
