//! The LDAP service driven in memory: `handle` on a real store in a
//! temporary folder, and whole connections over an in-memory duplex.

use futures_util::{SinkExt, StreamExt};
use ldap3_proto::control::LdapControl;
use ldap3_proto::proto::{
    LdapAddRequest, LdapBindCred, LdapBindRequest, LdapDerefAliases, LdapExtendedRequest,
    LdapFilter, LdapModify, LdapModifyRequest, LdapModifyType, LdapMsg, LdapOp,
    LdapPartialAttribute, LdapResultCode, LdapSearchRequest, LdapSearchScope,
};
use mxrack_ldap::codec::{Frame, MxCodec};
use mxrack_ldap::{LdapService, Mode, Session, Then, handle, handle_streaming};
use mxrack_store::Store;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Framed;

const BASE: &str = "dc=example,dc=net";
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct Fixture {
    _dir: tempfile::TempDir,
    svc: Arc<LdapService>,
}

/// Store calls block: the test's own run on a plain thread, off the
/// runtime (the store's debug-build check refuses them on an async worker).
fn off<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| s.spawn(f).join().expect("store call"))
}

/// Account acme with jo (plain) and boss (full management); account other
/// with eve. LDAP passwords NAME-ldap.
fn fixture(limits: mxrack_config::Ldap) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = off(|| {
        let store = Store::open(dir.path()).expect("store");
        store.account_add("acme").expect("account");
        store.account_add("other").expect("account");
        store.domain_add("acme.example", "acme").expect("domain");
        store.domain_add("other.example", "other").expect("domain");
        store
            .mailbox_add("jo@acme.example", "m", false)
            .expect("jo");
        store
            .mailbox_add("boss@acme.example", "m", true)
            .expect("boss");
        store
            .mailbox_add("eve@other.example", "m", false)
            .expect("eve");
        for name in [
            "jo@acme.example",
            "boss@acme.example",
            "eve@other.example",
            "acme",
        ] {
            store
                .ldap_set_password(name, &format!("{name}-ldap"))
                .expect("password");
        }
        Arc::new(LdapService::new(
            limits,
            "example.net",
            store,
            None,
            Arc::new(mxrack_auth::AuthService::new(mxrack_config::Auth {
                failure_delay_ms: 0,
                ..mxrack_config::Auth::default()
            })),
        ))
    });
    Fixture { svc, _dir: dir }
}

fn msg(msgid: i32, op: LdapOp, ctrl: Vec<LdapControl>) -> Frame {
    Frame::Msg(Box::new(LdapMsg { msgid, op, ctrl }))
}

fn code_of(m: &LdapMsg) -> LdapResultCode {
    match &m.op {
        LdapOp::BindResponse(r) => r.res.code.clone(),
        LdapOp::SearchResultDone(r)
        | LdapOp::AddResponse(r)
        | LdapOp::ModifyResponse(r)
        | LdapOp::DelResponse(r)
        | LdapOp::ModifyDNResponse(r)
        | LdapOp::CompareResult(r) => r.code.clone(),
        LdapOp::ExtendedResponse(r) => r.res.code.clone(),
        other => panic!("not a result: {other:?}"),
    }
}

fn bind_req(name: &str, password: &str) -> LdapOp {
    LdapOp::BindRequest(LdapBindRequest {
        version: 3,
        dn: format!("cn={name},ou=auth,{BASE}"),
        cred: LdapBindCred::Simple(password.to_string()),
    })
}

/// A session inside TLS bound as `name`.
fn bound(f: &Fixture, name: &str) -> Session {
    let mut s = Session::new(PEER, true);
    let out = handle(
        &f.svc,
        &mut s,
        msg(1, bind_req(name, &format!("{name}-ldap")), vec![]),
    );
    assert_eq!(
        code_of(&out.replies[0]),
        LdapResultCode::Success,
        "bind {name}"
    );
    s
}

fn search_req(base: &str, scope: LdapSearchScope, filter: LdapFilter, sizelimit: i32) -> LdapOp {
    LdapOp::SearchRequest(LdapSearchRequest {
        base: base.to_string(),
        scope,
        aliases: LdapDerefAliases::Never,
        sizelimit,
        timelimit: 0,
        typesonly: false,
        filter,
        attrs: vec!["cn".into()],
    })
}

fn add_req(dn: &str, cn: &str) -> LdapOp {
    let attr = |t: &str, v: &[&str]| LdapPartialAttribute {
        atype: t.to_string(),
        vals: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
    };
    LdapOp::AddRequest(LdapAddRequest {
        dn: dn.to_string(),
        attributes: vec![
            attr("objectClass", &["top", "inetOrgPerson"]),
            attr("cn", &[cn]),
            attr("sn", &["Test"]),
        ],
    })
}

fn book(name: &str) -> String {
    format!("ou={name},ou=ab,{BASE}")
}

/// (entries' DNs, final result code, response controls).
fn run_search(
    f: &Fixture,
    s: &mut Session,
    op: LdapOp,
    ctrl: Vec<LdapControl>,
) -> (Vec<String>, LdapResultCode, Vec<LdapControl>) {
    let mut out = handle(&f.svc, s, msg(2, op, ctrl)).replies;
    let done = out.pop().expect("done");
    let dns = out
        .into_iter()
        .map(|m| match m.op {
            LdapOp::SearchResultEntry(e) => e.dn,
            other => panic!("not an entry: {other:?}"),
        })
        .collect();
    (dns, code_of(&done), done.ctrl)
}

#[test]
fn the_rights_matrix_in_memory() {
    let f = fixture(mxrack_config::Ldap::default());
    use LdapResultCode::*;
    // (who, book, search code, add code)
    let table = [
        ("jo@acme.example", "jo@acme.example", Success, Success),
        ("jo@acme.example", "acme", Success, InsufficentAccessRights),
        (
            "jo@acme.example",
            "boss@acme.example",
            NoSuchObject,
            NoSuchObject,
        ),
        ("jo@acme.example", "other", NoSuchObject, NoSuchObject),
        ("boss@acme.example", "acme", Success, Success),
        ("acme", "acme", Success, Success),
        ("acme", "jo@acme.example", NoSuchObject, NoSuchObject),
        ("eve@other.example", "acme", NoSuchObject, NoSuchObject),
    ];
    for (i, (who, name, read, write)) in table.into_iter().enumerate() {
        let mut s = bound(&f, who);
        let (_, code, _) = run_search(
            &f,
            &mut s,
            search_req(
                &book(name),
                LdapSearchScope::Base,
                LdapFilter::Present("objectClass".into()),
                0,
            ),
            vec![],
        );
        assert_eq!(code, read, "{who} reads {name}");
        let dn = format!("cn=Probe {i},{}", book(name));
        let out = handle(
            &f.svc,
            &mut s,
            msg(3, add_req(&dn, &format!("Probe {i}")), vec![]),
        );
        assert_eq!(code_of(&out.replies[0]), write, "{who} writes {name}");
    }
    // Nothing before a bind.
    let mut anonymous = Session::new(PEER, true);
    let (_, code, _) = run_search(
        &f,
        &mut anonymous,
        search_req(
            BASE,
            LdapSearchScope::Subtree,
            LdapFilter::Present("objectClass".into()),
            0,
        ),
        vec![],
    );
    assert_eq!(code, InsufficentAccessRights);
}

/// An anonymous bind succeeds and reads the root DSE and the subschema,
/// and nothing else; the root DSE names no version.
#[test]
fn an_anonymous_bind_reads_only_the_root_dse_and_subschema() {
    let f = fixture(mxrack_config::Ldap::default());
    // Over plaintext too: an anonymous bind carries no password.
    let mut s = Session::new(PEER, false);
    let out = handle(
        &f.svc,
        &mut s,
        msg(
            1,
            LdapOp::BindRequest(LdapBindRequest {
                version: 3,
                dn: String::new(),
                cred: LdapBindCred::Simple(String::new()),
            }),
            vec![],
        ),
    );
    assert_eq!(code_of(&out.replies[0]), LdapResultCode::Success);
    let any = || LdapFilter::Present("objectClass".into());
    let mut dse_req = search_req("", LdapSearchScope::Base, any(), 0);
    if let LdapOp::SearchRequest(r) = &mut dse_req {
        r.attrs = vec!["*".into(), "+".into()];
    }
    let out = handle(&f.svc, &mut s, msg(2, dse_req, vec![]));
    assert_eq!(
        code_of(out.replies.last().expect("done")),
        LdapResultCode::Success
    );
    let LdapOp::SearchResultEntry(dse) = &out.replies[0].op else {
        panic!("no root DSE entry: {:?}", out.replies[0]);
    };
    let names: Vec<&str> = dse.attributes.iter().map(|a| a.atype.as_str()).collect();
    assert!(names.contains(&"namingContexts"), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.eq_ignore_ascii_case("vendorVersion")),
        "{names:?}"
    );
    let (_, code, _) = run_search(
        &f,
        &mut s,
        search_req("cn=Subschema", LdapSearchScope::Base, any(), 0),
        vec![],
    );
    assert_eq!(code, LdapResultCode::Success);
    for base in [BASE.to_string(), book("jo@acme.example"), book("acme")] {
        let (dns, code, _) = run_search(
            &f,
            &mut s,
            search_req(&base, LdapSearchScope::Subtree, any(), 0),
            vec![],
        );
        assert!(dns.is_empty(), "{base}: {dns:?}");
        assert_ne!(code, LdapResultCode::Success, "{base}");
    }
    // A DN without a password is the unauthenticated mechanism: refused.
    let out = handle(&f.svc, &mut s, msg(3, bind_req("acme", ""), vec![]));
    assert_eq!(code_of(&out.replies[0]), LdapResultCode::UnwillingToPerform);
}

/// RFC 3062: no response value unless the server generated the password.
#[test]
fn password_modify_answers_a_value_only_for_a_generated_password() {
    let f = fixture(mxrack_config::Ldap::default());
    let mut s = bound(&f, "jo@acme.example");
    let request = |new: Option<&str>| {
        LdapOp::ExtendedRequest(
            ldap3_proto::proto::LdapPasswordModifyRequest {
                user_identity: None,
                old_password: None,
                new_password: new.map(str::to_string),
            }
            .into(),
        )
    };
    let out = handle(&f.svc, &mut s, msg(2, request(Some("next-ldap")), vec![]));
    let LdapOp::ExtendedResponse(r) = &out.replies[0].op else {
        panic!("{:?}", out.replies[0]);
    };
    assert_eq!(r.res.code, LdapResultCode::Success);
    assert_eq!((r.name.as_deref(), r.value.as_deref()), (None, None));
    let out = handle(&f.svc, &mut s, msg(3, request(None), vec![]));
    let LdapOp::ExtendedResponse(r) = &out.replies[0].op else {
        panic!("{:?}", out.replies[0]);
    };
    assert_eq!(r.res.code, LdapResultCode::Success);
    assert!(r.value.as_ref().is_some_and(|v| v.len() > 20), "{r:?}");
}

#[test]
fn size_limits_and_pages() {
    let f = fixture(mxrack_config::Ldap::default());
    let mut s = bound(&f, "jo@acme.example");
    for i in 0..10 {
        let dn = format!("cn=Person {i:02},{}", book("jo@acme.example"));
        let out = handle(
            &f.svc,
            &mut s,
            msg(5, add_req(&dn, &format!("Person {i:02}")), vec![]),
        );
        assert_eq!(code_of(&out.replies[0]), LdapResultCode::Success);
    }
    let all = || LdapFilter::Substring("cn".into(), "person*".into());
    let mine = book("jo@acme.example");
    let (dns, code, _) = run_search(
        &f,
        &mut s,
        search_req(&mine, LdapSearchScope::OneLevel, all(), 2),
        vec![],
    );
    assert_eq!((dns.len(), code), (2, LdapResultCode::SizeLimitExceeded));
    let (dns, code, _) = run_search(
        &f,
        &mut s,
        search_req(&mine, LdapSearchScope::OneLevel, all(), 0),
        vec![],
    );
    assert_eq!((dns.len(), code), (10, LdapResultCode::Success));

    let mut cookie = Vec::new();
    let mut pages = Vec::new();
    let mut seen = Vec::new();
    loop {
        let (dns, code, ctrl) = run_search(
            &f,
            &mut s,
            search_req(&mine, LdapSearchScope::Subtree, all(), 0),
            vec![LdapControl::SimplePagedResults {
                size: 3,
                cookie: cookie.clone(),
            }],
        );
        assert_eq!(code, LdapResultCode::Success);
        pages.push(dns.len());
        seen.extend(dns);
        cookie = match ctrl.first() {
            Some(LdapControl::SimplePagedResults { cookie, .. }) => cookie.clone(),
            other => panic!("no paged control in the answer: {other:?}"),
        };
        if cookie.is_empty() {
            break;
        }
        assert!(pages.len() < 10);
    }
    assert_eq!(pages, [3, 3, 3, 1]);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 10);
    // A cookie from another search is refused.
    let (_, code, _) = run_search(
        &f,
        &mut s,
        search_req(&mine, LdapSearchScope::OneLevel, all(), 0),
        vec![LdapControl::SimplePagedResults {
            size: 3,
            cookie: vec![0; 16],
        }],
    );
    assert_eq!(code, LdapResultCode::UnwillingToPerform);
}

#[test]
fn modify_keeps_the_entry_whole_or_changes_nothing() {
    let f = fixture(mxrack_config::Ldap::default());
    let mut s = bound(&f, "jo@acme.example");
    let dn = format!("cn=Whole,{}", book("jo@acme.example"));
    handle(&f.svc, &mut s, msg(2, add_req(&dn, "Whole"), vec![]));
    let change = |op, t: &str, v: &[&str]| LdapModify {
        operation: op,
        modification: LdapPartialAttribute {
            atype: t.into(),
            vals: v.iter().map(|x| x.as_bytes().to_vec()).collect(),
        },
    };
    // The second change fails, so the first must not be applied.
    let out = handle(
        &f.svc,
        &mut s,
        msg(
            3,
            LdapOp::ModifyRequest(LdapModifyRequest {
                dn: dn.clone(),
                changes: vec![
                    change(LdapModifyType::Add, "mail", &["whole@example.org"]),
                    change(LdapModifyType::Delete, "mobile", &[]),
                ],
            }),
            vec![],
        ),
    );
    assert_eq!(code_of(&out.replies[0]), LdapResultCode::NoSuchAttribute);
    let (dns, _, _) = run_search(
        &f,
        &mut s,
        search_req(
            &dn,
            LdapSearchScope::Base,
            LdapFilter::Present("mail".into()),
            0,
        ),
        vec![],
    );
    assert!(dns.is_empty(), "the failed modify changed the entry");
}

#[test]
fn binds_need_tls_unless_configured() {
    let f = fixture(mxrack_config::Ldap::default());
    let mut plain = Session::new(PEER, false);
    let out = handle(
        &f.svc,
        &mut plain,
        msg(1, bind_req("acme", "acme-ldap"), vec![]),
    );
    assert_eq!(
        code_of(&out.replies[0]),
        LdapResultCode::ConfidentialityRequired
    );

    let f = fixture(mxrack_config::Ldap {
        allow_plaintext_bind: true,
        ..mxrack_config::Ldap::default()
    });
    let out = handle(
        &f.svc,
        &mut plain,
        msg(1, bind_req("acme", "acme-ldap"), vec![]),
    );
    assert_eq!(code_of(&out.replies[0]), LdapResultCode::Success);
    // StartTLS without a certificate is refused cleanly, and the session goes on.
    let out = handle(
        &f.svc,
        &mut plain,
        msg(
            2,
            LdapOp::ExtendedRequest(LdapExtendedRequest {
                name: "1.3.6.1.4.1.1466.20037".into(),
                value: None,
            }),
            vec![],
        ),
    );
    assert_eq!(code_of(&out.replies[0]), LdapResultCode::Unavailable);
    assert_eq!(out.then, Then::Continue);
    // A critical control the server does not know.
    let out = handle(
        &f.svc,
        &mut plain,
        msg(
            3,
            search_req(
                BASE,
                LdapSearchScope::Base,
                LdapFilter::Present("objectClass".into()),
                0,
            ),
            vec![LdapControl::Unknown {
                oid: "1.2.3.4".into(),
                criticality: true,
                value: None,
            }],
        ),
    );
    assert_eq!(
        code_of(&out.replies[0]),
        LdapResultCode::UnavailableCriticalExtension
    );
}

#[test]
fn a_remembered_bind_never_outlives_a_password_change() {
    let f = fixture(mxrack_config::Ldap::default());
    let bind = |password: &str| {
        let mut s = Session::new(PEER, true);
        let out = handle(&f.svc, &mut s, msg(1, bind_req("acme", password), vec![]));
        code_of(&out.replies[0])
    };
    assert_eq!(bind("acme-ldap"), LdapResultCode::Success);
    assert_eq!(bind("acme-ldap"), LdapResultCode::Success, "remembered");
    assert_eq!(bind("wrong"), LdapResultCode::InvalidCredentials);
    f.svc
        .store
        .ldap_set_password("acme", "changed-ldap")
        .expect("change");
    assert_eq!(bind("acme-ldap"), LdapResultCode::InvalidCredentials);
    assert_eq!(bind("changed-ldap"), LdapResultCode::Success);
    // Remembering can be turned off, and binds still work.
    let f = fixture(mxrack_config::Ldap {
        bind_cache_secs: 0,
        ..mxrack_config::Ldap::default()
    });
    let mut s = Session::new(PEER, true);
    let out = handle(
        &f.svc,
        &mut s,
        msg(1, bind_req("acme", "acme-ldap"), vec![]),
    );
    assert_eq!(code_of(&out.replies[0]), LdapResultCode::Success);
}

/// A whole connection over an in-memory duplex: the codec loop, a bad
/// message answered without losing the connection, an oversized one
/// closing it with a notice.
#[tokio::test]
async fn a_connection_over_a_duplex() {
    let f = fixture(mxrack_config::Ldap {
        allow_plaintext_bind: true,
        max_message_bytes: 32 * 1024,
        ..mxrack_config::Ldap::default()
    });
    let (client, server) = tokio::io::duplex(64 * 1024);
    let shutdown = mxrack_net::Shutdown::new();
    let peer = SocketAddr::new(PEER, 40000);
    let task = tokio::spawn(mxrack_ldap::run_connection(
        f.svc.clone(),
        Mode::StartTls,
        Box::new(server),
        peer,
        shutdown.signal(),
    ));
    let mut c = Framed::new(client, MxCodec::new(1 << 20));
    let next = |frame: Option<Result<Frame, _>>| match frame {
        Some(Ok(Frame::Msg(m))) => *m,
        other => panic!("expected a message, got {other:?}"),
    };
    c.send(LdapMsg {
        msgid: 1,
        op: bind_req("jo@acme.example", "jo@acme.example-ldap"),
        ctrl: vec![],
    })
    .await
    .expect("send");
    let reply = next(c.next().await);
    assert_eq!((reply.msgid, code_of(&reply)), (1, LdapResultCode::Success));

    // A search request cut short after its scope: it does not decode.
    let bad: [u8; 12] = [
        0x30, 0x0a, 0x02, 0x01, 0x02, 0x63, 0x05, 0x04, 0x00, 0x0a, 0x01, 0x00,
    ];
    c.get_mut()
        .write_all_buf(&mut &bad[..])
        .await
        .expect("write");
    let reply = next(c.next().await);
    assert_eq!(
        (reply.msgid, code_of(&reply)),
        (2, LdapResultCode::ProtocolError)
    );

    c.send(LdapMsg {
        msgid: 3,
        op: LdapOp::ExtendedRequest(LdapExtendedRequest {
            name: ldap3_proto::proto::OID_WHOAMI.into(),
            value: None,
        }),
        ctrl: vec![],
    })
    .await
    .expect("send");
    let reply = next(c.next().await);
    match reply.op {
        LdapOp::ExtendedResponse(r) => assert_eq!(
            r.value.as_deref(),
            Some(format!("dn:cn=jo@acme.example,ou=auth,{BASE}").as_bytes())
        ),
        other => panic!("{other:?}"),
    }

    // Over the limit: a notice of disconnection, then the end.
    let header = [0x30u8, 0x83, 0x01, 0x00, 0x00];
    c.get_mut()
        .write_all_buf(&mut &header[..])
        .await
        .expect("write");
    let reply = next(c.next().await);
    assert_eq!(reply.msgid, 0);
    assert_eq!(code_of(&reply), LdapResultCode::AdminLimitExceeded);
    assert!(c.next().await.is_none(), "the connection is closed");
    task.await.expect("connection task");
}

#[test]
fn search_entries_are_handed_out_one_by_one_and_stop_when_the_client_is_gone() {
    let f = fixture(mxrack_config::Ldap::default());
    let mut s = bound(&f, "jo@acme.example");
    for i in 0..20 {
        let dn = format!("cn=Person {i:02},{}", book("jo@acme.example"));
        let out = handle(
            &f.svc,
            &mut s,
            msg(5, add_req(&dn, &format!("Person {i:02}")), vec![]),
        );
        assert_eq!(code_of(&out.replies[0]), LdapResultCode::Success);
    }
    let all = || LdapFilter::Substring("cn".into(), "person*".into());
    let mine = book("jo@acme.example");
    // Each entry reaches the stream before the next one is made; the
    // outcome holds only SearchResultDone.
    let mut streamed = 0;
    let out = handle_streaming(
        &f.svc,
        &mut s,
        msg(
            6,
            search_req(&mine, LdapSearchScope::OneLevel, all(), 0),
            vec![],
        ),
        &mut |m| {
            assert!(matches!(m.op, LdapOp::SearchResultEntry(_)));
            streamed += 1;
            true
        },
    );
    assert_eq!(streamed, 20);
    assert_eq!(out.replies.len(), 1);
    assert_eq!(code_of(&out.replies[0]), LdapResultCode::Success);
    // The connection is gone after 3 entries: no fourth one is made.
    let mut made = 0;
    handle_streaming(
        &f.svc,
        &mut s,
        msg(
            7,
            search_req(&mine, LdapSearchScope::OneLevel, all(), 0),
            vec![],
        ),
        &mut |_| {
            made += 1;
            made < 3
        },
    );
    assert_eq!(made, 3);
}
