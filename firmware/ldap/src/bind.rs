//! Bind (RFC 4511 4.2, RFC 4513 5) and Who am I (RFC 4532).
//!
//! Only simple binds with a password, as `cn=NAME,ou=auth,BASE` where NAME
//! is a mailbox address or an account name, checked against that record's
//! LDAP password (separate from the mail password, as in the seed). An
//! anonymous bind (empty DN and password, RFC 4513 5.1.1) succeeds, as
//! `ldapsearch -x` expects, and grants nothing but the root DSE and
//! `cn=Subschema` (`access.rs`: anonymous reads no book). An unauthenticated
//! bind (a DN without a password) is refused; a password is accepted only
//! inside TLS unless `ldap.allow_plaintext_bind` says otherwise.

use crate::LdapService;
use crate::access::Identity;
use crate::handler::{Kind, Session, parse_dn, respond, result, store_refusal, success};
use crate::tree::{Place, bind_dn, place};
use ldap3_proto::proto::{
    LdapBindCred, LdapBindRequest, LdapExtendedResponse, LdapMsg, LdapOp, LdapResultCode,
};
use mxrack_auth::{Protocol, Verdict};

pub fn bind(
    svc: &LdapService,
    session: &mut Session,
    msgid: i32,
    req: LdapBindRequest,
) -> Vec<LdapMsg> {
    use LdapResultCode as C;
    let answer =
        |code: LdapResultCode, message: &str| respond(Kind::Bind, msgid, result(code, "", message));
    // RFC 4513 4: a bind first drops the current authentication.
    session.identity = Identity::Anonymous;
    if req.version != 3 {
        return answer(C::ProtocolError, "only LDAP version 3 is supported");
    }
    let password = match req.cred {
        LdapBindCred::Simple(p) => p,
        LdapBindCred::SASL(_) | LdapBindCred::Unsupported => {
            return answer(
                C::AuthMethodNotSupported,
                "only simple binds (DN and password) are supported",
            );
        }
    };
    if req.dn.is_empty() && password.is_empty() {
        // RFC 4513 5.1.1: anonymous. The identity stays Anonymous, which
        // reads the root DSE and the subschema and nothing else.
        return respond(Kind::Bind, msgid, success());
    }
    if password.is_empty() {
        // RFC 4513 5.1.2: the unauthenticated mechanism.
        return answer(
            C::UnwillingToPerform,
            "a bind without a password is not allowed",
        );
    }
    if !session.tls && !svc.limits.allow_plaintext_bind {
        return answer(
            C::ConfidentialityRequired,
            "use StartTLS (port 389) or LDAPS (port 636) before sending a password",
        );
    }
    let name = match parse_dn(&req.dn).map(|dn| place(&dn, &svc.base)) {
        Ok(Place::Bind(name)) => Some(name),
        _ => None,
    };
    // The one limiter counts the attempt under the name bound as (or the DN
    // as given when it names nobody), then the check runs on the pool.
    let account = name.clone().unwrap_or_else(|| req.dn.to_lowercase());
    let mut store_error = None;
    let verdict = svc
        .auth
        .check_blocking(Protocol::Ldap, session.peer, &account, || match &name {
            Some(name) => svc.verifier.verify(name, &password).map_err(|e| {
                let shown = e.to_string();
                store_error = Some(e);
                shown
            }),
            None => Ok(false),
        });
    let verified = match verdict {
        Verdict::Accepted => true,
        Verdict::Rejected => false,
        // RFC 4511 A.2: busy, "too busy to perform the requested operation".
        Verdict::Limited(_) => {
            return answer(C::Busy, "too many bind attempts; try again later");
        }
        Verdict::Unavailable => {
            let r = store_error.as_ref().map(store_refusal).unwrap_or_else(|| {
                crate::entry::refuse(C::Unavailable, "cannot check the password now")
            });
            return answer(r.code, &r.message);
        }
    };
    let principal = if verified {
        match name.as_deref().map(|n| svc.store.ldap_principal(n)) {
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                let r = store_refusal(&e);
                return answer(r.code, &r.message);
            }
            None => None,
        }
    } else {
        None
    };
    match principal {
        Some(p) => {
            let canonical = p.name().to_string();
            tracing::info!(client = %session.peer, name = %canonical, "LDAP bind");
            session.identity = Identity::Bound {
                dn: bind_dn(&canonical, &svc.base),
                name: canonical,
            };
            respond(Kind::Bind, msgid, success())
        }
        None => {
            tracing::info!(client = %session.peer, dn = %req.dn, "LDAP bind failed");
            answer(C::InvalidCredentials, "invalid credentials")
        }
    }
}

/// RFC 4532: the authorization identity, `dn:...`, or empty when anonymous.
pub fn who_am_i(session: &Session, msgid: i32) -> Vec<LdapMsg> {
    let value = match &session.identity {
        Identity::Anonymous => Vec::new(),
        Identity::Bound { dn, .. } => format!("dn:{dn}").into_bytes(),
    };
    vec![LdapMsg {
        msgid,
        op: LdapOp::ExtendedResponse(LdapExtendedResponse {
            res: success(),
            name: None,
            value: Some(value),
        }),
        ctrl: vec![],
    }]
}
