//! Modify (RFC 4511 4.6): add, delete and replace values of an entry of a
//! book the identity may write. The changes apply in order, all or none,
//! inside one store transaction; the result is checked as a whole entry
//! (object classes, single values, the RDN's values kept) before it is
//! committed, and acknowledged only once the commit is durable.

use crate::LdapService;
use crate::entry::{Contact, Refusal, contact_def, entry_key, refuse};
use crate::handler::{Kind, Session, locate_entry, refusal_result, respond, success};
use ldap3_proto::proto::{LdapModifyRequest, LdapModifyType, LdapMsg, LdapResultCode};
use mxrack_store::LdapEntry;

pub fn modify(
    svc: &LdapService,
    session: &Session,
    msgid: i32,
    req: LdapModifyRequest,
) -> Vec<LdapMsg> {
    let res = match try_modify(svc, session, &req) {
        Ok(()) => success(),
        Err(r) => refusal_result(&r),
    };
    respond(Kind::Modify, msgid, res)
}

fn try_modify(
    svc: &LdapService,
    session: &Session,
    req: &LdapModifyRequest,
) -> Result<(), Refusal> {
    let at = locate_entry(svc, session, &req.dn, true)?;
    let key = entry_key(&at.rdn);
    let rdn = at.rdn.clone();
    let result = svc.store.ldap_entry_update(
        &at.right.book,
        &key,
        &svc.book_limits(),
        |entry: &mut LdapEntry| {
            let mut contact = Contact::from_stored(entry);
            for change in &req.changes {
                let def = contact_def(&change.modification.atype)?;
                let values = &change.modification.vals;
                match change.operation {
                    LdapModifyType::Add => {
                        if values.is_empty() {
                            return Err(refuse(
                                LdapResultCode::ProtocolError,
                                format!("add of {} without values", def.name),
                            ));
                        }
                        for v in values {
                            contact.add_value(def, v.clone())?;
                        }
                    }
                    LdapModifyType::Delete => contact.delete_values(def, values)?,
                    LdapModifyType::Replace => contact.replace(def, values)?,
                    LdapModifyType::Increment => {
                        return Err(refuse(
                            LdapResultCode::UnwillingToPerform,
                            "modify-increment is not supported",
                        ));
                    }
                }
            }
            for ava in &rdn.avas {
                let def = contact_def(&ava.attr)?;
                if !contact.has_value(def, ava.value.as_bytes()) {
                    return Err(refuse(
                        LdapResultCode::NotALlowedOnRDN,
                        format!("{} is the entry's RDN: rename the entry instead", def.name),
                    ));
                }
            }
            contact.check()?;
            entry.attributes = contact.into_stored(&rdn, entry.created).attributes;
            Ok(())
        },
    );
    match result {
        Ok(()) => {
            tracing::info!(client = %session.peer, book = %at.right.book, entry = %at.rdn, "LDAP modify");
            Ok(())
        }
        Err(r) if r.code == LdapResultCode::NoSuchObject => Err(r.matched(at.book_dn)),
        Err(r) => Err(r),
    }
}
