//! Add (RFC 4511 4.7): a new entry directly under a book the identity may
//! write. Acknowledged only once the store's transaction is durable.

use crate::LdapService;
use crate::entry::{Contact, Refusal, entry_key};
use crate::handler::{Kind, Session, locate_entry, refusal_result, respond, success};
use ldap3_proto::proto::{LdapAddRequest, LdapMsg};

pub fn add(svc: &LdapService, session: &Session, msgid: i32, req: LdapAddRequest) -> Vec<LdapMsg> {
    let res = match try_add(svc, session, &req) {
        Ok(()) => success(),
        Err(r) => refusal_result(&r),
    };
    respond(Kind::Add, msgid, res)
}

fn try_add(svc: &LdapService, session: &Session, req: &LdapAddRequest) -> Result<(), Refusal> {
    let at = locate_entry(svc, session, &req.dn, true)?;
    let mut contact = Contact::from_client(
        req.attributes
            .iter()
            .map(|a| (a.atype.as_str(), a.vals.as_slice())),
    )?;
    contact.finish(&at.rdn)?;
    let entry = contact.into_stored(&at.rdn, 0);
    svc.store.ldap_entry_add(
        &at.right.book,
        &entry_key(&at.rdn),
        &entry,
        &svc.book_limits(),
    )?;
    tracing::info!(client = %session.peer, book = %at.right.book, entry = %entry.rdn, "LDAP add");
    Ok(())
}
