//! Writes the seed corpora of the fuzz targets into `fuzz/corpus/<target>/`
//! (committed; run again after changing a seed here):
//!
//! ```text
//! cargo run -p mxrack-fuzz --example write_seeds
//! ```
//!
//! Realistic sessions against the fixture of `mxrack_fuzz` (jo's mailbox
//! with four messages, boss with full management, LDAP passwords
//! `NAME-ldap`), and messages with nested multiparts and attached messages.
//! Files other than these (inputs a fuzzer found and someone committed) are
//! left alone.

use bytes::BytesMut;
use ldap3_proto::proto::{
    LdapAddRequest, LdapBindCred, LdapBindRequest, LdapCompareRequest, LdapDerefAliases,
    LdapExtendedRequest, LdapFilter, LdapModify, LdapModifyRequest, LdapModifyType, LdapMsg,
    LdapOp, LdapPartialAttribute, LdapSearchRequest, LdapSearchScope, LdapSubstringFilter,
};
use mxrack_fuzz::{BOSS, BOSS_PASSWORD, FIXTURE_MESSAGES, JO, JO_PASSWORD, LDAP_PASSWORD_SUFFIX};
use std::path::Path;
use tokio_util::codec::Encoder;

const BASE: &str = "dc=example,dc=net";

fn b64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                out.push(T[(v >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn crlf(lines: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn smtp() -> Vec<(&'static str, Vec<u8>)> {
    let plain = b64(format!("\0{JO}\0{JO_PASSWORD}").as_bytes());
    let message = FIXTURE_MESSAGES[2].replace("\r\n.", "\r\n..");
    let mut mx = b"M".to_vec();
    mx.extend(crlf(&[
        "EHLO client.remote.example",
        "MAIL FROM:<al@remote.example> SIZE=900 BODY=8BITMIME",
        "RCPT TO:<jo@example.net>",
        "RCPT TO:<sales@example.net>",
        "RCPT TO:<nobody@example.net>",
        "DATA",
    ]));
    mx.extend_from_slice(message.as_bytes());
    mx.extend(crlf(&[".", "QUIT"]));

    let mut two = b"M".to_vec();
    two.extend(crlf(&[
        "HELO old.remote.example",
        "NOOP",
        "MAIL FROM:<>",
        "RCPT TO:<JO@Example.NET>",
        "DATA",
        "Subject: bounce",
        "",
        "..leading dot",
        "a long line ".repeat(100).as_str(),
        ".",
        "RSET",
        "VRFY jo",
        "HELP",
        "MAIL FROM:<a@remote.example>",
        "RCPT TO:<postmaster@example.net>",
        "RCPT TO:<outside@elsewhere.example>",
        "DATA",
        "From: a@remote.example",
        "Subject: a\u{e9} test",
        "Message-ID: <x@remote.example>",
        "",
        "body",
        ".",
        "QUIT",
    ]));

    let mut sub_plain = b"S".to_vec();
    sub_plain.extend(crlf(&[
        "EHLO laptop",
        &format!("AUTH PLAIN {plain}"),
        "MAIL FROM:<jo@example.net>",
        "RCPT TO:<friend@elsewhere.example>",
        "RCPT TO:<boss@example.net>",
        "DATA",
        "From: jo@example.net",
        "To: friend@elsewhere.example",
        "Subject: lunch",
        "",
        "at noon?",
        ".",
        "QUIT",
    ]));

    let mut sub_login = b"S".to_vec();
    sub_login.extend(crlf(&[
        "EHLO laptop",
        "MAIL FROM:<jo@example.net>",
        "AUTH LOGIN",
        &b64(JO.as_bytes()),
        &b64(b"wrong password"),
        "AUTH LOGIN",
        &b64(JO.as_bytes()),
        &b64(JO_PASSWORD.as_bytes()),
        "AUTH PLAIN",
        &plain,
        "MAIL FROM:<jo@example.net>",
        "RCPT TO:<jo@example.net>",
        "DATA",
        ".",
        "QUIT",
    ]));

    let mut garbage = b"M".to_vec();
    garbage.extend(crlf(&[
        "EHLO x",
        "STARTTLS",
        "MAIL FROM:<@route,@path:user@remote.example>",
        "RCPT TO:<\"quoted local\"@example.net> NOTIFY=NEVER",
        "XYZZY",
        "DATA",
        "RCPT TO:<jo@example.net",
    ]));
    vec![
        ("mx_transaction", mx),
        ("mx_two_transactions", two),
        ("submission_auth_plain", sub_plain),
        ("submission_auth_login", sub_login),
        ("mx_bad_commands", garbage),
    ]
}

fn imap() -> Vec<(&'static str, Vec<u8>)> {
    let appended = "From: jo@example.net\r\nSubject: draft\r\n\r\nnot yet\r\n";
    let plain = b64(format!("\0{JO}\0{JO_PASSWORD}").as_bytes());
    let fetch = crlf(&[
        "a1 CAPABILITY",
        &format!("a2 LOGIN {JO} {JO_PASSWORD}"),
        "a3 SELECT INBOX (CONDSTORE)",
        "a4 FETCH 1:* (FLAGS UID RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)",
        "a5 FETCH 3 (BODY.PEEK[] BODY[1] BODY[2.1.2] BODY[2.MIME] BODY[HEADER.FIELDS (Subject From)] BODY[TEXT]<0.10>)",
        "a6 UID FETCH 1:* (BODY FLAGS MODSEQ) (CHANGEDSINCE 1)",
        "a7 SEARCH TEXT hello",
        "a8 UID SEARCH OR SUBJECT report FROM bo NOT SEEN",
        "a9 SEARCH CHARSET UTF-8 BODY caf\u{e9} SENTSINCE 1-Jan-2020 LARGER 10",
        "a10 LOGOUT",
    ]);
    let mut append = crlf(&[
        &format!("b1 LOGIN \"{JO}\" \"{JO_PASSWORD}\""),
        "b2 LIST \"\" \"*\"",
        "b3 STATUS INBOX (MESSAGES UIDNEXT UNSEEN HIGHESTMODSEQ)",
        &format!("b4 APPEND Archive (\\Seen) {{{}}}", appended.len()),
    ]);
    append.extend_from_slice(appended.as_bytes());
    append.extend(crlf(&[
        "",
        "b5 SELECT INBOX",
        "b6 IDLE",
        "DONE",
        "b7 STORE 1 +FLAGS (\\Deleted \\Flagged)",
        "b8 COPY 2 Archive",
        "b9 MOVE 3 Junk",
        "b10 EXPUNGE",
        "b11 CREATE Projects/2024",
        "b12 RENAME Projects/2024 Old",
        "b13 DELETE Old",
        "b14 LSUB \"\" \"%\"",
        "b15 GETQUOTAROOT INBOX",
        "b16 UNSELECT",
        "b17 LOGOUT",
    ]));
    let mut auth = crlf(&[
        "c1 ID (\"name\" \"fuzz\")",
        "c2 AUTHENTICATE PLAIN",
        &plain,
        "c3 ENABLE UTF8=ACCEPT CONDSTORE",
        "c4 NAMESPACE",
        "c5 EXAMINE INBOX",
        "c6 UID STORE 1:* FLAGS.SILENT (\\Seen)",
        "c7 CLOSE",
        "c8 SELECT \"&AOk-t&AOk-\"",
        &format!("c9 APPEND INBOX {{{}+}}", appended.len()),
    ]);
    auth.extend_from_slice(appended.as_bytes());
    auth.extend(crlf(&["", "c10 LOGOUT"]));
    let mut literal_login = crlf(&[&format!("d1 LOGIN {{{}}}", JO.len())]);
    literal_login.extend_from_slice(JO.as_bytes());
    literal_login.extend(crlf(&[
        " wrong",
        "d2 LOGIN jo@example.net {50000000}",
        "d3 LIST \"\" \"%*%*%*%*x\"",
        "d4 SELECT INBOX",
        "* BAD",
        "d5 LOGOUT",
    ]));
    // SORT, THREAD, ESORT/ESEARCH RETURN, SEARCHRES, CONTEXT=SEARCH.
    let sort_thread = crlf(&[
        &format!("e1 LOGIN {JO} {JO_PASSWORD}"),
        "e2 SELECT INBOX",
        "e3 SORT (REVERSE DATE SUBJECT) UTF-8 ALL",
        "e4 UID SORT (DISPLAYFROM TO CC SIZE ARRIVAL) UTF-8 OR SEEN SUBJECT re",
        "e5 SORT RETURN (MIN MAX COUNT PARTIAL 1:2) (SUBJECT) UTF-8 ALL",
        "e6 THREAD REFERENCES UTF-8 ALL",
        "e7 UID THREAD ORDEREDSUBJECT US-ASCII NOT DELETED",
        "e8 SEARCH RETURN (SAVE MIN) TEXT hello",
        "e9 FETCH $ (UID FLAGS)",
        "e10 SORT RETURN (SAVE) (SIZE) UTF-8 $",
        "e11 SEARCH RETURN (UPDATE COUNT) UNSEEN",
        "e12 STORE 1:2 +FLAGS (\\Seen)",
        "e13 CANCELUPDATE \"e11\"",
        "e14 UID SEARCH RETURN (PARTIAL 1:3) MODSEQ 1",
        "e15 LOGOUT",
    ]);
    // NOTIFY, then ENABLE QRESYNC and SELECT (QRESYNC ...), IMAP4rev2.
    let notify_qresync = crlf(&[
        &format!("f1 LOGIN {JO} {JO_PASSWORD}"),
        "f2 NOTIFY SET STATUS (selected (MessageNew (UID BODY.PEEK[HEADER] FLAGS) MessageExpunge FlagChange)) (personal (MessageNew MessageExpunge MailboxName SubscriptionChange)) (mailboxes (Junk Archive) NONE)",
        "f3 ENABLE QRESYNC",
        "f4 SELECT INBOX (QRESYNC (1 1 1:10 (1:3 1:3)))",
        "f5 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)",
        "f6 STORE 2 +FLAGS (\\Deleted)",
        "f7 UID EXPUNGE 2",
        "f8 CREATE Box",
        "f9 SUBSCRIBE Box",
        "f10 NOTIFY NONE",
        "f11 CLOSE",
        "f12 ENABLE IMAP4rev2",
        "f13 SELECT INBOX",
        "f14 SEARCH RECENT",
        "f15 STATUS INBOX (MESSAGES RECENT)",
        "f16 LOGOUT",
    ]);
    // MULTIAPPEND, CATENATE (TEXT and URL parts), literal8, BINARY.
    let mut append_ext = crlf(&[
        &format!("g1 LOGIN {JO} {JO_PASSWORD}"),
        &format!("g2 APPEND Archive (\\Seen) {{{}+}}", appended.len()),
    ]);
    append_ext.extend_from_slice(appended.as_bytes());
    append_ext.extend_from_slice(
        format!(
            " (\\Flagged) \"14-Nov-2023 22:13:20 +0000\" {{{}+}}\r\n",
            appended.len()
        )
        .as_bytes(),
    );
    append_ext.extend_from_slice(appended.as_bytes());
    append_ext.extend(crlf(&[""]));
    let binary = b"Subject: nul\r\n\r\na\0b\r\n";
    append_ext.extend_from_slice(format!("g3 APPEND INBOX ~{{{}+}}\r\n", binary.len()).as_bytes());
    append_ext.extend_from_slice(binary);
    append_ext.extend(crlf(&[
        "",
        "g4 APPEND Archive CATENATE (TEXT {14+}",
        "Subject: cat",
        " URL \"/INBOX;UIDVALIDITY=1/;UID=3/;SECTION=1\" URL \"/INBOX/;UID=1/;PARTIAL=0.5\" TEXT {2+}",
        "",
        ")",
        "g5 SELECT INBOX",
        "g6 APPEND INBOX CATENATE (URL \";UID=2/;SECTION=HEADER\" URL {13+}",
        "/INBOX/;UID=9)",
        "g7 FETCH 1:* (BINARY.PEEK[1] BINARY.SIZE[1] BINARY.PEEK[2.1]<0.4> BINARY[])",
        "g8 UID FETCH 3 (BINARY.PEEK[2] BINARY.SIZE[2.1])",
        "g9 LOGOUT",
    ]));
    vec![
        ("login_select_fetch_search", fetch),
        ("append_idle_store_move", append),
        ("authenticate_enable_examine", auth),
        ("literal_login_and_errors", literal_login),
        ("sort_thread_esearch_searchres", sort_thread),
        ("notify_qresync_rev2", notify_qresync),
        ("multiappend_catenate_binary", append_ext),
    ]
}

fn pop3() -> Vec<(&'static str, Vec<u8>)> {
    let plain = b64(format!("\0{JO}\0{JO_PASSWORD}").as_bytes());
    vec![
        (
            "user_pass_retr_dele",
            crlf(&[
                "CAPA",
                &format!("USER {JO}"),
                &format!("PASS {JO_PASSWORD}"),
                "STAT",
                "LIST",
                "UIDL",
                "LIST 2",
                "RETR 1",
                "TOP 3 2",
                "DELE 2",
                "RETR 2",
                "NOOP",
                "QUIT",
            ]),
        ),
        (
            "auth_plain_rset",
            crlf(&[
                "AUTH PLAIN",
                &plain,
                "UIDL 1",
                "DELE 1",
                "DELE 1",
                "RSET",
                "TOP 1 0",
                "QUIT",
            ]),
        ),
        (
            "errors_before_login",
            crlf(&[
                "STAT",
                "USER nobody@example.net",
                "PASS nope",
                "APOP jo@example.net c4c9334bac560ecc979e58001b3e22fb",
                "STLS",
                &format!("AUTH PLAIN {plain}"),
                "LIST 99",
                "RETR 0",
                "TOP 1 -1",
                "QUIT",
            ]),
        ),
    ]
}

fn ber(msgs: Vec<LdapMsg>) -> Vec<u8> {
    let mut codec = mxrack_ldap::codec::MxCodec::new(1 << 20);
    let mut buf = BytesMut::new();
    for m in msgs {
        codec.encode(m, &mut buf).expect("encode");
    }
    buf.to_vec()
}

fn msg(msgid: i32, op: LdapOp) -> LdapMsg {
    LdapMsg {
        msgid,
        op,
        ctrl: vec![],
    }
}

fn bind(msgid: i32, name: &str) -> LdapMsg {
    msg(
        msgid,
        LdapOp::BindRequest(LdapBindRequest {
            version: 3,
            dn: format!("cn={name},ou=auth,{BASE}"),
            cred: LdapBindCred::Simple(format!("{name}{LDAP_PASSWORD_SUFFIX}")),
        }),
    )
}

fn search(msgid: i32, base: &str, scope: LdapSearchScope, filter: LdapFilter) -> LdapMsg {
    msg(
        msgid,
        LdapOp::SearchRequest(LdapSearchRequest {
            base: base.to_string(),
            scope,
            aliases: LdapDerefAliases::Never,
            sizelimit: 0,
            timelimit: 0,
            typesonly: false,
            filter,
            attrs: vec![],
        }),
    )
}

fn attr(name: &str, values: &[&str]) -> LdapPartialAttribute {
    LdapPartialAttribute {
        atype: name.to_string(),
        vals: values.iter().map(|v| v.as_bytes().to_vec()).collect(),
    }
}

fn ldap() -> Vec<(&'static str, Vec<u8>)> {
    let book = format!("ou={JO},ou=ab,{BASE}");
    let entry = format!("cn=Al Smith,{book}");
    let anonymous = ber(vec![
        search(
            1,
            "",
            LdapSearchScope::Base,
            LdapFilter::Present("objectClass".into()),
        ),
        search(
            2,
            "cn=Subschema",
            LdapSearchScope::Base,
            LdapFilter::Equality("objectClass".into(), "subschema".into()),
        ),
        search(
            3,
            BASE,
            LdapSearchScope::Subtree,
            LdapFilter::Present("cn".into()),
        ),
        msg(4, LdapOp::UnbindRequest),
    ]);
    let jo_book = ber(vec![
        bind(1, JO),
        msg(
            2,
            LdapOp::AddRequest(LdapAddRequest {
                dn: entry.clone(),
                attributes: vec![
                    attr("objectClass", &["inetOrgPerson"]),
                    attr("cn", &["Al Smith"]),
                    attr("sn", &["Smith"]),
                    attr("mail", &["al@remote.example"]),
                    attr("telephoneNumber", &["+1 555 0100"]),
                ],
            }),
        ),
        search(
            3,
            &book,
            LdapSearchScope::OneLevel,
            LdapFilter::And(vec![
                LdapFilter::Equality("objectClass".into(), "inetOrgPerson".into()),
                LdapFilter::Or(vec![
                    LdapFilter::Substring(
                        "mail".into(),
                        LdapSubstringFilter {
                            initial: Some("al".into()),
                            any: vec!["remote".into()],
                            final_: None,
                        },
                    ),
                    LdapFilter::Not(Box::new(LdapFilter::Present("sn".into()))),
                ]),
            ]),
        ),
        msg(
            4,
            LdapOp::ModifyRequest(LdapModifyRequest {
                dn: entry.clone(),
                changes: vec![LdapModify {
                    operation: LdapModifyType::Replace,
                    modification: attr("telephoneNumber", &["+1 555 0199"]),
                }],
            }),
        ),
        msg(
            5,
            LdapOp::CompareRequest(LdapCompareRequest {
                dn: entry.clone(),
                atype: "sn".into(),
                val: b"Smith".to_vec(),
            }),
        ),
        msg(
            6,
            LdapOp::ExtendedRequest(LdapExtendedRequest {
                name: "1.3.6.1.4.1.4203.1.11.3".into(),
                value: None,
            }),
        ),
        msg(7, LdapOp::DelRequest(entry)),
        msg(8, LdapOp::UnbindRequest),
    ]);
    let boss = ber(vec![
        bind(1, "nobody@example.net"),
        bind(2, BOSS),
        search(
            3,
            &format!("ou=ab,{BASE}"),
            LdapSearchScope::Subtree,
            LdapFilter::Or(vec![
                LdapFilter::Equality("cn".into(), "x".into()),
                LdapFilter::Present("mail".into()),
            ]),
        ),
        search(
            4,
            &format!("ou=acme,ou=ab,{BASE}"),
            LdapSearchScope::Subtree,
            LdapFilter::Present("objectClass".into()),
        ),
        bind(5, "acme"),
        msg(6, LdapOp::UnbindRequest),
    ]);
    // A request that does not decode, then a good one (the connection goes on).
    let mut broken = vec![
        0x30, 0x0a, 0x02, 0x01, 0x02, 0x63, 0x05, 0x04, 0x00, 0x0a, 0x01, 0x00,
    ];
    broken.extend(ber(vec![search(
        3,
        "",
        LdapSearchScope::Base,
        LdapFilter::Present("objectClass".into()),
    )]));
    vec![
        ("anonymous_root_dse", anonymous),
        ("bind_add_search_modify_delete", jo_book),
        ("full_management_search", boss),
        ("undecodable_then_search", broken),
    ]
}

fn mime() -> Vec<(&'static str, Vec<u8>)> {
    let mut out: Vec<(&'static str, Vec<u8>)> = vec![
        ("plain", FIXTURE_MESSAGES[0].as_bytes().to_vec()),
        ("alternative", FIXTURE_MESSAGES[1].as_bytes().to_vec()),
        (
            "nested_with_rfc822",
            FIXTURE_MESSAGES[2].as_bytes().to_vec(),
        ),
        (
            "eight_bit_encoded_words",
            FIXTURE_MESSAGES[3].as_bytes().to_vec(),
        ),
    ];
    // Eight levels of message/rfc822 around a multipart/related.
    let mut deep = String::from(
        "Content-Type: multipart/related; boundary=r\r\n\r\n--r\r\nContent-Type: text/html\r\n\r\n<img src=cid:a>\r\n--r\r\nContent-Type: image/png\r\nContent-ID: <a>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--r--\r\n",
    );
    for i in 0..8 {
        deep = format!("Subject: level {i}\r\nContent-Type: message/rfc822\r\n\r\n{deep}");
    }
    out.push(("eight_rfc822_levels", deep.into_bytes()));
    out.push((
        "quoted_printable_digest",
        b"From: list@list.example\r\nDate: Mon, 01 Jan 2024 10:00:00 +0100\r\nContent-Type: multipart/digest; boundary=\"d d\"\r\n\r\npreamble\r\n--d d\r\n\r\nSubject: first\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nsoft=\r\nbreak =C3=A9\r\n--d d\r\nContent-Type: message/rfc822; charset=us-ascii\r\nContent-Transfer-Encoding: base64\r\n\r\nU3ViamVjdDogZW5jb2RlZA0KDQpib2R5DQo=\r\n--d d--\r\nepilogue\r\n"
            .to_vec(),
    ));
    out.push((
        "spammy_html",
        b"From: \"PayPal\" <service@paypa1.example>\r\nReply-To: x@freemail.example\r\nSubject: =?utf-8?b?VVJHRU5UOiB2ZXJpZnkgeW91ciBhY2NvdW50?=\r\nContent-Type: text/html\r\n\r\n<html><body><a href=\"http://192.0.2.1/login\">http://paypal.com</a> <img src=\"http://t.example/p.gif\"> Click here now! 100% free $$$</body></html>\r\n"
            .to_vec(),
    ));
    out
}

/// One HTTP/1.1 request with Basic credentials (and Content-Length when it
/// has a body or a method that takes one).
fn http(method: &str, path: &str, login: (&str, &str), headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: mx.example.net\r\nAuthorization: Basic {}\r\n",
        b64(format!("{}:{}", login.0, login.1).as_bytes())
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    if !body.is_empty() || ["PUT", "PROPFIND", "REPORT", "PROPPATCH"].contains(&method) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

fn dav() -> Vec<(&'static str, Vec<u8>)> {
    let jo = (JO, JO_PASSWORD);
    let boss = (BOSS, BOSS_PASSWORD);
    let card: &[u8] = b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:c1\r\nFN:Ann Lee\r\nN:Lee;Ann;;;\r\n\
EMAIL;TYPE=INTERNET:ann@example.org\r\nTEL;TYPE=CELL:+1 555 0100\r\nORG:Acme;Sales\r\n\
ADR;TYPE=HOME:;;1 Main St;Town;ST;12345;US\r\nX-FOO:bar\r\nEND:VCARD\r\n";
    let card4: &[u8] = b"BEGIN:VCARD\r\nVERSION:4.0\r\nUID:urn:uuid:1\r\nFN:Bo\r\n\
EMAIL:bo@example.org\r\nBDAY:19800102\r\nEND:VCARD\r\n";
    let propfind: &[u8] = br#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:carddav" xmlns:cs="http://calendarserver.org/ns/"><d:prop><d:resourcetype/><d:getetag/><cs:getctag/><d:sync-token/><c:addressbook-home-set/><d:current-user-principal/><c:supported-address-data/></d:prop></d:propfind>"#;
    let sync = |token: &str| {
        format!(
            r#"<d:sync-collection xmlns:d="DAV:"><d:sync-token>{token}</d:sync-token><d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>"#
        )
        .into_bytes()
    };
    let personal = format!("/dav/books/{JO}/personal/");
    let c1 = format!("{personal}c1.vcf");
    let c2 = format!("{personal}c2.vcf");
    let d1 = ["Depth: 1"];
    let d0 = ["Depth: 0"];
    let vcard = ["Content-Type: text/vcard"];
    let discovery = [
        http("PROPFIND", "/.well-known/carddav", jo, &d0, propfind),
        http("PROPFIND", "/dav/", jo, &d0, propfind),
        http(
            "PROPFIND",
            &format!("/dav/principals/{JO}/"),
            jo,
            &d0,
            propfind,
        ),
        http("PROPFIND", &format!("/dav/books/{JO}/"), jo, &d1, propfind),
        http("OPTIONS", &personal, jo, &[], b""),
    ]
    .concat();
    let put_get_sync_delete = [
        http(
            "PUT",
            &c1,
            jo,
            &["Content-Type: text/vcard", "If-None-Match: *"],
            card,
        ),
        http("GET", &c1, jo, &["Accept: text/vcard; version=4.0"], b""),
        http("REPORT", &personal, jo, &d1, &sync("")),
        http(
            "PUT",
            &c1,
            jo,
            &["Content-Type: text/vcard", "If-Match: \"g1\""],
            card4,
        ),
        http("DELETE", &c1, jo, &[], b""),
        http("REPORT", &personal, jo, &d1, &sync("urn:x-mxrack:sync:1")),
    ]
    .concat();
    let multiget = format!(
        r#"<c:addressbook-multiget xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:carddav"><d:prop><d:getetag/><c:address-data version="3.0"/></d:prop><d:href>{c2}</d:href><d:href>{personal}none.vcf</d:href></c:addressbook-multiget>"#
    );
    let query = br#"<c:addressbook-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:carddav"><d:prop><d:getetag/></d:prop><c:filter test="anyof"><c:prop-filter name="EMAIL"><c:text-match collation="i;unicode-casemap" match-type="contains">bo@</c:text-match></c:prop-filter><c:prop-filter name="FN"><c:is-not-defined/></c:prop-filter></c:filter><c:limit><c:nresults>5</c:nresults></c:limit></c:addressbook-query>"#;
    let multiget_query = [
        http("PUT", &c2, jo, &vcard, card4),
        http("REPORT", &personal, jo, &d1, multiget.as_bytes()),
        http("REPORT", &personal, jo, &d1, query),
    ]
    .concat();
    let proppatch = br#"<d:propertyupdate xmlns:d="DAV:"><d:set><d:prop><d:displayname>x</d:displayname></d:prop></d:set></d:propertyupdate>"#;
    let account = [
        http(
            "PUT",
            &format!("/dav/books/{BOSS}/account/x.vcf"),
            boss,
            &vcard,
            card,
        ),
        http(
            "PROPFIND",
            &format!("/dav/books/{BOSS}/account/"),
            boss,
            &d1,
            b"",
        ),
        http("PROPPATCH", &personal, jo, &[], proppatch),
        http(
            "PUT",
            &format!("/dav/books/{JO}/account/y.vcf"),
            jo,
            &vcard,
            card,
        ),
        http("MKCOL", &format!("/dav/books/{JO}/new/"), jo, &[], b""),
    ]
    .concat();
    vec![
        ("discovery", discovery),
        ("put_get_sync_delete", put_get_sync_delete),
        ("multiget_query", multiget_query),
        ("account_book_and_proppatch", account),
    ]
}

fn write(target: &str, seeds: Vec<(&'static str, Vec<u8>)>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    for (name, bytes) in seeds {
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
    }
}

fn main() {
    write("smtp_session", smtp());
    write("imap_session", imap());
    write("pop3_session", pop3());
    write("ldap_session", ldap());
    write("mime_structure", mime());
    write("dav_session", dav());
    write("update_bundle", update());
    write("mta_sts_policy", mta_sts());
    write("spam_rules", spam_rules());
}

/// `spam_rules`: the first line is the client's HELO; `D` first adds the
/// MX's DMARC reject mark.
fn spam_rules() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("reply", b"mail.remote.example\nReceived: from relay.remote.example (relay.remote.example [198.51.100.20])\r\n\tby mail.remote.example (Postfix) with ESMTP id 1A2B3C\r\n\tfor <jo@example.net>; Tue, 14 Nov 2023 22:10:00 +0000 (UTC)\r\nFrom: Al <al@remote.example>\r\nTo: jo@example.net\r\nSubject: Re: minutes\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\nMessage-ID: <1@remote.example>\r\nIn-Reply-To: <0@example.net>\r\nReferences: <0@example.net>\r\n\r\n> the minutes of Tuesday\r\nLook right to me.\r\n".to_vec()),
        ("html-spam", b"[203.0.113.7]\nFrom: \"PayPal\" <win@lotto.example>\r\nTo: undisclosed-recipients:;\r\nSubject: YOU ARE A WINNER!!! $$$\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nCLICK HERE to claim your prize of $5,000,000 http://prize.example/now mailto:claim@lotto.example\r\n--b\r\nContent-Type: text/html; charset=us-ascii\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<html><body bgcolor=3D\"#ffffff\"><font size=3D7 color=3D\"red\">WINNER</font><a href=3D\"http://192.0.2.9/x?id=3D1\">click</a><img src=3D\"http://img.example/a.gif\" width=3D1 height=3D1></body></html>\r\n--b--\r\n".to_vec()),
        ("base64-dmarc", b"Dlocalhost\nReceived: from [10.0.0.5] (helo=pc) by smtp.remote.example with esmtpa (Exim 4.96) id 1rA-000B-Cd; Tue, 14 Nov 2023 22:00:00 +0100\r\nReceived: from qmail by remote.example with SMTP; 14 Nov 2023 21:59:00 -0000\r\nFrom: ceo@example.net\r\nReply-To: ceo.private@freemail.example\r\nSubject: =?utf-8?b?VXJnZW50IHdpcmUgdHJhbnNmZXI=?=\r\nMessage-ID: <ABCDEF0123456789@remote.example>\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nUGxlYXNlIHdpcmUgJDQ5LDAwMCB0byB0aGUgYWNjb3VudCBiZWxvdyB0b2RheS4K\r\n".to_vec()),
        ("gtube", b"gtube.example\nSubject: test\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n".to_vec()),
    ]
}

fn mta_sts() -> Vec<(&'static str, Vec<u8>)> {
    let policy = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n";
    vec![
        ("policy", policy.as_bytes().to_vec()),
        (
            "response",
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{policy}",
                policy.len()
            )
            .into_bytes(),
        ),
        ("txt", b"v=STSv1; id=20160831085700Z;".to_vec()),
        (
            "redirect",
            b"HTTP/1.1 301 Moved\r\nLocation: https://x/\r\n\r\n".to_vec(),
        ),
    ]
}

fn update() -> Vec<(&'static str, Vec<u8>)> {
    let good = mxrack_fuzz::update_bundle_seed(b"an image of a few bytes", "0.1.0.20261204120000");
    let mut cut = good.clone();
    cut.truncate(good.len() - 5);
    vec![
        ("bundle", good),
        ("bundle-cut", cut),
        (
            "entries",
            b"mxrack-0.1.0.7+1-1.efi\nmxrack-0.1.0.6.efi\nmxrack-0.1.0.8+0-2.efi\n".to_vec(),
        ),
    ]
}
