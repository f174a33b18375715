//! Modify DN (RFC 4511 4.9): renames an entry inside its book. Moving an
//! entry to another book (newSuperior elsewhere) is refused: a book is a
//! unit of access, and a move would be a delete in one and an add in the
//! other.

use crate::LdapService;
use crate::dn::{self, Rdn};
use crate::entry::{Contact, Refusal, contact_def, entry_key, refuse};
use crate::handler::{Kind, Session, locate_entry, parse_dn, refusal_result, respond, success};
use ldap3_proto::proto::{LdapModifyDNRequest, LdapMsg, LdapResultCode};
use mxrack_store::LdapEntry;

pub fn modify_dn(
    svc: &LdapService,
    session: &Session,
    msgid: i32,
    req: LdapModifyDNRequest,
) -> Vec<LdapMsg> {
    let res = match try_modify_dn(svc, session, &req) {
        Ok(()) => success(),
        Err(r) => refusal_result(&r),
    };
    respond(Kind::ModDn, msgid, res)
}

fn try_modify_dn(
    svc: &LdapService,
    session: &Session,
    req: &LdapModifyDNRequest,
) -> Result<(), Refusal> {
    let at = locate_entry(svc, session, &req.dn, true)?;
    let new_dn = parse_dn(&req.newrdn)?;
    let [new_rdn]: [Rdn; 1] = new_dn.rdns.try_into().map_err(|_| {
        refuse(
            LdapResultCode::InvalidDNSyntax,
            "the new RDN must be one RDN, such as cn=New Name",
        )
    })?;
    if let Some(superior) = &req.new_superior {
        let same = dn::parse(&at.book_dn).map(|d| d.normalized()).ok()
            == Some(parse_dn(superior)?.normalized());
        if !same {
            return Err(refuse(
                LdapResultCode::UnwillingToPerform,
                "entries move only within their address book",
            ));
        }
    }
    let old_key = entry_key(&at.rdn);
    let new_key = entry_key(&new_rdn);
    let old_rdn = at.rdn.clone();
    let result: Result<(), Refusal> = svc.store.ldap_entry_rename(
        &at.right.book,
        &old_key,
        &new_key,
        &svc.book_limits(),
        |entry: &mut LdapEntry| {
            let mut contact = Contact::from_stored(entry);
            if req.deleteoldrdn {
                for ava in &old_rdn.avas {
                    let def = contact_def(&ava.attr)?;
                    let kept = new_rdn.avas.iter().any(|n| {
                        contact_def(&n.attr).is_ok_and(|d| d.oid == def.oid)
                            && dn::fold_value(&n.value) == dn::fold_value(&ava.value)
                    });
                    if !kept && contact.has_value(def, ava.value.as_bytes()) {
                        contact.delete_values(def, &[ava.value.as_bytes().to_vec()])?;
                    }
                }
            }
            contact.finish(&new_rdn)?;
            let created = entry.created;
            *entry = contact.into_stored(&new_rdn, created);
            Ok(())
        },
    );
    match result {
        Ok(()) => {
            tracing::info!(client = %session.peer, book = %at.right.book, from = %at.rdn, to = %new_rdn, "LDAP rename");
            Ok(())
        }
        Err(r) if r.code == LdapResultCode::NoSuchObject => Err(r.matched(at.book_dn)),
        Err(r) => Err(r),
    }
}
