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
    if !svc.bind_limiter.allowed(session.peer) {
        return answer(
            C::UnwillingToPerform,
            "too many failed binds from this address; try again later",
        );
    }
    let name = match parse_dn(&req.dn).map(|dn| place(&dn, &svc.base)) {
        Ok(Place::Bind(name)) => Some(name),
        _ => None,
    };
    let verified = match &name {
        Some(name) => match svc.verifier.verify(name, &password) {
            Ok(ok) => ok,
            Err(e) => {
                let r = store_refusal(&e);
                return answer(r.code, &r.message);
            }
        },
        None => false,
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
            svc.bind_limiter.record_success(session.peer);
            let canonical = p.name().to_string();
            tracing::info!(client = %session.peer, name = %canonical, "LDAP bind");
            session.identity = Identity::Bound {
                dn: bind_dn(&canonical, &svc.base),
                name: canonical,
            };
            respond(Kind::Bind, msgid, success())
        }
        None => {
            svc.bind_limiter.record_failure(session.peer);
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
