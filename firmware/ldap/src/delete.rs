//! Delete (RFC 4511 4.8): an entry of a book the identity may write.
//! Acknowledged only once the store's transaction is durable.

use crate::LdapService;
use crate::entry::{Refusal, entry_key, refuse};
use crate::handler::{Kind, Session, locate_entry, refusal_result, respond, success};
use ldap3_proto::proto::{LdapMsg, LdapResultCode};
use mxrack_store::StoreError;

pub fn delete(svc: &LdapService, session: &Session, msgid: i32, dn: &str) -> Vec<LdapMsg> {
    let res = match try_delete(svc, session, dn) {
        Ok(()) => success(),
        Err(r) => refusal_result(&r),
    };
    respond(Kind::Delete, msgid, res)
}

fn try_delete(svc: &LdapService, session: &Session, dn: &str) -> Result<(), Refusal> {
    let at = locate_entry(svc, session, dn, true)?;
    match svc
        .store
        .ldap_entry_delete(&at.right.book, &entry_key(&at.rdn))
    {
        Ok(()) => {
            tracing::info!(client = %session.peer, book = %at.right.book, entry = %at.rdn, "LDAP delete");
            Ok(())
        }
        Err(StoreError::NotFound { .. }) => {
            Err(refuse(LdapResultCode::NoSuchObject, "no such entry").matched(at.book_dn))
        }
        Err(e) => Err(e.into()),
    }
}
