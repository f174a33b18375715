//! Password Modify (RFC 3062): a bound identity sets its own LDAP password.
//! Like a bind, it carries passwords, so it needs TLS unless
//! `ldap.allow_plaintext_bind` is set. When the request has no new password
//! the server makes one and returns it.
//!
//! The response carries a value only when a password was generated (RFC 3062
//! 2: "If the server does not generate a new password, the responseValue
//! field ... SHOULD be absent"), as OpenLDAP does: an empty value (`30 00`)
//! makes `ldappasswd` print `ber_scanf` errors and python ldap3 fail to
//! decode the answer.

use crate::LdapService;
use crate::access::Identity;
use crate::entry::{Refusal, refuse};
use crate::handler::{Session, parse_dn, refusal_result, success};
use crate::tree::{Place, place};
use ldap3_proto::proto::{
    LdapExtendedRequest, LdapExtendedResponse, LdapMsg, LdapOp, LdapPasswordModifyRequest,
    LdapPasswordModifyResponse, LdapResultCode,
};
use rand::Rng;

/// Length of a password the server makes.
const GENERATED_PASSWORD_LEN: usize = 20;
const GENERATED_PASSWORD_CHARS: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

pub fn password_modify(
    svc: &LdapService,
    session: &Session,
    msgid: i32,
    req: &LdapExtendedRequest,
) -> Vec<LdapMsg> {
    let response: LdapExtendedResponse = match try_modify(svc, session, req) {
        Ok(Some(generated)) => LdapPasswordModifyResponse {
            res: success(),
            gen_password: Some(generated),
        }
        .into(),
        Ok(None) => LdapExtendedResponse {
            res: success(),
            name: None,
            value: None,
        },
        Err(r) => LdapExtendedResponse {
            res: refusal_result(&r),
            name: None,
            value: None,
        },
    };
    vec![LdapMsg {
        msgid,
        op: LdapOp::ExtendedResponse(response),
        ctrl: vec![],
    }]
}

fn try_modify(
    svc: &LdapService,
    session: &Session,
    req: &LdapExtendedRequest,
) -> Result<Option<String>, Refusal> {
    let Identity::Bound { name, .. } = &session.identity else {
        return Err(refuse(
            LdapResultCode::InsufficentAccessRights,
            "bind first: the LDAP password is changed by its owner",
        ));
    };
    if !session.tls && !svc.limits.allow_plaintext_bind {
        return Err(refuse(
            LdapResultCode::ConfidentialityRequired,
            "use StartTLS or LDAPS before sending passwords",
        ));
    }
    let parsed = match &req.value {
        None => LdapPasswordModifyRequest {
            user_identity: None,
            old_password: None,
            new_password: None,
        },
        Some(_) => LdapPasswordModifyRequest::try_from(req).map_err(|_| {
            refuse(
                LdapResultCode::ProtocolError,
                "the password modify request does not decode",
            )
        })?,
    };
    if let Some(user) = &parsed.user_identity {
        let target = match parse_dn(user).map(|dn| place(&dn, &svc.base)) {
            Ok(Place::Bind(n)) => n,
            _ => user.strip_prefix("u:").unwrap_or(user).to_string(),
        };
        if !target.eq_ignore_ascii_case(name) {
            return Err(refuse(
                LdapResultCode::InsufficentAccessRights,
                "only your own LDAP password can be changed here",
            ));
        }
    }
    if let Some(old) = &parsed.old_password {
        // The old password is a guess like a bind's: the one limiter counts it.
        let verdict =
            svc.auth
                .check_blocking(mxrack_auth::Protocol::Ldap, session.peer, name, || {
                    svc.verifier.verify(name, old)
                });
        match verdict {
            mxrack_auth::Verdict::Accepted => {}
            mxrack_auth::Verdict::Rejected => {
                return Err(refuse(
                    LdapResultCode::InvalidCredentials,
                    "the old password is wrong",
                ));
            }
            mxrack_auth::Verdict::Limited(_) => {
                return Err(refuse(
                    LdapResultCode::Busy,
                    "too many password attempts; try again later",
                ));
            }
            mxrack_auth::Verdict::Unavailable => {
                return Err(refuse(
                    LdapResultCode::Unavailable,
                    "cannot check the password now",
                ));
            }
        }
    }
    let (new, generated) = match parsed.new_password {
        Some(p) => (p, None),
        None => {
            let mut rng = rand::thread_rng();
            let p: String = (0..GENERATED_PASSWORD_LEN)
                .map(|_| {
                    char::from(
                        GENERATED_PASSWORD_CHARS[rng.gen_range(0..GENERATED_PASSWORD_CHARS.len())],
                    )
                })
                .collect();
            (p.clone(), Some(p))
        }
    };
    svc.store.ldap_set_password(name, &new)?;
    tracing::info!(client = %session.peer, %name, "LDAP password changed by its owner");
    Ok(generated)
}
