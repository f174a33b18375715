//! One function per method (RFC 4918 9, RFC 6352 8, RFC 6578 3), run on a
//! blocking thread: the store is read and written here. Each takes the
//! request and answers a [`Reply`] or a [`DavError`] (mapped to the wire in
//! `reply`).

use hyper::StatusCode;
use hyper::header;
use mxrack_ldap::dn;
use mxrack_store::{LdapEntry, LdapPrincipal};

use crate::names::{self, BookSel, Target};
use crate::reply::{DavError, Reply};
use crate::vcard;
use crate::xml::{self, CARDDAV, CS, DAV, Element, escape};
use crate::{DavRequest, DavService};
use calcard::vcard::VCardVersion;

/// The sync token of a book at a generation (RFC 6578 3.2: a URI).
const SYNC_TOKEN_PREFIX: &str = "urn:x-mxrack:sync:";

/// Who is asking, and the books they have.
struct Ctx {
    user: String,
    account: String,
    account_write: bool,
}

impl Ctx {
    fn load(svc: &DavService, user: &str) -> Result<Ctx, DavError> {
        match svc.store.ldap_principal(user)? {
            Some(LdapPrincipal::Mailbox {
                address,
                account,
                full_management,
            }) => Ok(Ctx {
                user: address,
                account,
                account_write: full_management,
            }),
            // The mailbox went away since its password was checked.
            _ => Err(DavError::Unauthenticated),
        }
    }

    /// The store's name of a book.
    fn book(&self, sel: BookSel) -> &str {
        match sel {
            BookSel::Personal => &self.user,
            BookSel::Account => &self.account,
        }
    }

    fn writable(&self, sel: BookSel) -> bool {
        match sel {
            BookSel::Personal => true,
            BookSel::Account => self.account_write,
        }
    }
}

pub fn dispatch(svc: &DavService, req: &DavRequest) -> Reply {
    match run(svc, req) {
        Ok(r) => r,
        Err(e) => crate::reply::error(&e),
    }
}

fn run(svc: &DavService, req: &DavRequest) -> Result<Reply, DavError> {
    let ctx = Ctx::load(svc, &req.user)?;
    let target = names::target(&req.path, &ctx.user);
    // RFC 4918 9.3.1: collections cannot be made anywhere here (403); on
    // an existing resource MKCOL is 405, as for the other methods below.
    if req.method.as_str() == "MKCOL" && target == Target::Missing {
        return Err(DavError::Forbidden(
            "address books are the LDAP books; no collection can be made here",
        ));
    }
    if target == Target::Missing {
        return Err(DavError::NotFound);
    }
    match req.method.as_str() {
        "PROPFIND" => propfind(svc, &ctx, req, &target),
        "REPORT" => report(svc, &ctx, req, &target),
        "GET" | "HEAD" => get(svc, &ctx, req, &target),
        "PUT" => put(svc, &ctx, req, &target),
        "DELETE" => delete(svc, &ctx, req, &target),
        "PROPPATCH" => proppatch(req),
        _ => Err(DavError::NotAllowed),
    }
}

// ---------------------------------------------------------------------------
// Properties

type QName = (String, String);

/// A resource a multistatus describes.
enum Res<'a> {
    Root,
    Principal,
    Home,
    Book(BookSel, u64),
    Card(BookSel, &'a str, &'a LdapEntry),
}

/// What a PROPFIND or REPORT asks for.
enum PropReq {
    All,
    Names,
    Some(Vec<QName>),
}

/// The version `address-data` (or an Accept header) asks for.
fn version_wanted(attr: Option<&str>) -> Option<VCardVersion> {
    match attr?.trim() {
        "4.0" => Some(VCardVersion::V4_0),
        "3.0" => Some(VCardVersion::V3_0),
        _ => None,
    }
}

fn prop_request(parent: Option<&Element>) -> (PropReq, Option<VCardVersion>) {
    let Some(parent) = parent else {
        return (PropReq::All, None);
    };
    if parent.child(DAV, "allprop").is_some() {
        return (PropReq::All, None);
    }
    if parent.child(DAV, "propname").is_some() {
        return (PropReq::Names, None);
    }
    let mut version = None;
    let names = parent
        .child(DAV, "prop")
        .map(|p| {
            p.children
                .iter()
                .map(|c| {
                    if c.is(CARDDAV, "address-data") {
                        version = version_wanted(c.attr("version"));
                    }
                    (c.ns.clone(), c.name.clone())
                })
                .collect()
        })
        .unwrap_or_default();
    (PropReq::Some(names), version)
}

/// The properties `allprop` gives (RFC 4918 9.1; RFC 6352 10.4: not
/// address-data).
fn all_props(res: &Res<'_>) -> Vec<QName> {
    let q = |ns: &str, n: &str| (ns.to_string(), n.to_string());
    let mut v = vec![
        q(DAV, "resourcetype"),
        q(DAV, "current-user-principal"),
        q(DAV, "current-user-privilege-set"),
    ];
    match res {
        Res::Root => v.push(q(DAV, "displayname")),
        Res::Principal => v.extend([
            q(DAV, "displayname"),
            q(DAV, "principal-URL"),
            q(CARDDAV, "addressbook-home-set"),
        ]),
        Res::Home => v.extend([q(DAV, "displayname"), q(DAV, "owner")]),
        Res::Book(..) => v.extend([
            q(DAV, "displayname"),
            q(DAV, "owner"),
            q(CS, "getctag"),
            q(DAV, "sync-token"),
            q(DAV, "supported-report-set"),
            q(CARDDAV, "supported-address-data"),
            q(CARDDAV, "max-resource-size"),
            q(CARDDAV, "addressbook-description"),
        ]),
        Res::Card(..) => v.extend([
            q(DAV, "getetag"),
            q(DAV, "getcontenttype"),
            q(DAV, "getcontentlength"),
        ]),
    }
    v
}

/// An entity tag for an entry (RFC 7232 2.3): its generation, or for an
/// entry written before entries carried one, a hash of what it holds.
pub fn etag(entry: &LdapEntry) -> String {
    if entry.generation > 0 {
        return format!("\"g{}\"", entry.generation);
    }
    // FNV-1a over the RDN, times and values.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
    };
    eat(entry.rdn.as_bytes());
    eat(&entry.modified.to_le_bytes());
    for a in &entry.attributes {
        eat(a.name.as_bytes());
        for v in &a.values {
            eat(&v.0);
        }
    }
    if let Some(c) = &entry.vcard {
        eat(c.as_bytes());
    }
    format!("\"h{h:016x}\"")
}

fn sync_token(generation: u64) -> String {
    format!("{SYNC_TOKEN_PREFIX}{generation}")
}

fn href(s: &str) -> String {
    format!("<D:href>{}</D:href>", escape(s))
}

fn privileges(write: bool) -> String {
    let mut s = String::from("<D:privilege><D:read/></D:privilege>");
    if write {
        for p in [
            "write",
            "write-content",
            "write-properties",
            "bind",
            "unbind",
        ] {
            s.push_str(&format!("<D:privilege><D:{p}/></D:privilege>"));
        }
    }
    s
}

/// The value of one property of a resource, as XML content; `None` when
/// the resource does not have it.
fn prop_value(
    svc: &DavService,
    ctx: &Ctx,
    res: &Res<'_>,
    (ns, name): (&str, &str),
    version: Option<VCardVersion>,
) -> Option<String> {
    let principal = names::principal_href(&ctx.user);
    match (ns, name, res) {
        (DAV, "resourcetype", Res::Root | Res::Home) => Some("<D:collection/>".into()),
        (DAV, "resourcetype", Res::Principal) => Some("<D:collection/><D:principal/>".into()),
        (DAV, "resourcetype", Res::Book(..)) => Some("<D:collection/><C:addressbook/>".into()),
        (DAV, "resourcetype", Res::Card(..)) => Some(String::new()),
        (DAV, "current-user-principal", _) => Some(href(&principal)),
        (DAV, "principal-URL", Res::Principal) => Some(href(&principal)),
        (DAV, "owner", Res::Home | Res::Book(..)) => Some(href(&principal)),
        (CARDDAV, "addressbook-home-set", Res::Principal) => {
            Some(href(&names::home_href(&ctx.user)))
        }
        (DAV, "displayname", Res::Root) => Some("mxrack".into()),
        (DAV, "displayname", Res::Principal) => Some(escape(&ctx.user)),
        (DAV, "displayname", Res::Home) => Some(escape(&format!("Address books of {}", ctx.user))),
        (DAV, "displayname", Res::Book(BookSel::Personal, _)) => Some("Personal".into()),
        (DAV, "displayname", Res::Book(BookSel::Account, _)) => {
            Some(escape(&format!("{} (shared)", ctx.account)))
        }
        (CARDDAV, "addressbook-description", Res::Book(sel, _)) => Some(escape(&format!(
            "LDAP book ou={} (the same contacts over LDAP)",
            ctx.book(*sel)
        ))),
        (CS, "getctag", Res::Book(_, generation)) => Some(generation.to_string()),
        (DAV, "sync-token", Res::Book(_, generation)) => Some(sync_token(*generation)),
        (DAV, "supported-report-set", Res::Book(..)) => Some(
            [
                "<C:addressbook-multiget/>",
                "<C:addressbook-query/>",
                "<D:sync-collection/>",
            ]
            .iter()
            .map(|r| format!("<D:supported-report><D:report>{r}</D:report></D:supported-report>"))
            .collect(),
        ),
        (CARDDAV, "supported-address-data", Res::Book(..)) => Some(
            "<C:address-data-type content-type=\"text/vcard\" version=\"3.0\"/>\
             <C:address-data-type content-type=\"text/vcard\" version=\"4.0\"/>"
                .into(),
        ),
        (CARDDAV, "max-resource-size", Res::Book(..)) => Some(svc.card_bytes_max().to_string()),
        (DAV, "current-user-privilege-set", Res::Book(sel, _) | Res::Card(sel, ..)) => {
            Some(privileges(ctx.writable(*sel)))
        }
        (DAV, "current-user-privilege-set", _) => Some(privileges(false)),
        (DAV, "getetag", Res::Card(_, _, entry)) => Some(escape(&etag(entry))),
        (DAV, "getcontenttype", Res::Card(..)) => Some("text/vcard; charset=utf-8".into()),
        (DAV, "getcontentlength", Res::Card(_, key, entry)) => {
            let name = names::card_name(key, &entry.rdn);
            Some(
                vcard::render(entry, uid_of(&name), version)
                    .0
                    .len()
                    .to_string(),
            )
        }
        (CARDDAV, "address-data", Res::Card(_, key, entry)) => {
            let name = names::card_name(key, &entry.rdn);
            Some(escape(&vcard::render(entry, uid_of(&name), version).0))
        }
        _ => None,
    }
}

fn uid_of(name: &str) -> &str {
    name.strip_suffix(".vcf").unwrap_or(name)
}

fn res_href(ctx: &Ctx, res: &Res<'_>) -> String {
    match res {
        Res::Root => names::ROOT.to_string(),
        Res::Principal => names::principal_href(&ctx.user),
        Res::Home => names::home_href(&ctx.user),
        Res::Book(sel, _) => names::book_href(&ctx.user, *sel),
        Res::Card(sel, key, entry) => {
            names::card_href(&ctx.user, *sel, &names::card_name(key, &entry.rdn))
        }
    }
}

/// A multistatus body being written (RFC 4918 13).
struct Multistatus {
    out: String,
}

fn qname_xml((ns, name): (&str, &str), content: Option<&str>) -> String {
    let (open, close) = match ns {
        DAV => (format!("D:{name}"), format!("D:{name}")),
        CARDDAV => (format!("C:{name}"), format!("C:{name}")),
        CS => (format!("CS:{name}"), format!("CS:{name}")),
        other => (
            format!("X:{name} xmlns:X=\"{}\"", escape(other)),
            format!("X:{name}"),
        ),
    };
    match content {
        Some(c) if !c.is_empty() => format!("<{open}>{c}</{close}>"),
        _ => format!("<{open}/>"),
    }
}

impl Multistatus {
    fn new() -> Multistatus {
        Multistatus {
            out: format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:multistatus xmlns:D=\"{DAV}\" xmlns:C=\"{CARDDAV}\" xmlns:CS=\"{CS}\">\n"
            ),
        }
    }

    fn props(&mut self, href_path: &str, found: &[(QName, String)], missing: &[QName]) {
        self.out.push_str("<D:response>");
        self.out.push_str(&href(href_path));
        if !found.is_empty() {
            self.out.push_str("<D:propstat><D:prop>");
            for ((ns, name), value) in found {
                self.out.push_str(&qname_xml((ns, name), Some(value)));
            }
            self.out
                .push_str("</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>");
        }
        if !missing.is_empty() {
            self.out.push_str("<D:propstat><D:prop>");
            for (ns, name) in missing {
                self.out.push_str(&qname_xml((ns, name), None));
            }
            self.out
                .push_str("</D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>");
        }
        self.out.push_str("</D:response>\n");
    }

    fn status(&mut self, href_path: &str, status: &str) {
        self.out.push_str(&format!(
            "<D:response>{}<D:status>HTTP/1.1 {status}</D:status></D:response>\n",
            href(href_path)
        ));
    }

    fn finish(mut self, sync: Option<String>) -> Reply {
        if let Some(token) = sync {
            self.out.push_str(&format!(
                "<D:sync-token>{}</D:sync-token>\n",
                escape(&token)
            ));
        }
        self.out.push_str("</D:multistatus>\n");
        Reply::multistatus(self.out)
    }
}

/// Adds one resource to a multistatus as `want` asks.
fn describe(
    svc: &DavService,
    ctx: &Ctx,
    ms: &mut Multistatus,
    res: &Res<'_>,
    want: &PropReq,
    version: Option<VCardVersion>,
) {
    let path = res_href(ctx, res);
    match want {
        PropReq::Names => {
            let found: Vec<(QName, String)> = all_props(res)
                .into_iter()
                .map(|q| (q, String::new()))
                .collect();
            ms.props(&path, &found, &[]);
        }
        PropReq::All | PropReq::Some(_) => {
            let names = match want {
                PropReq::Some(n) => n.clone(),
                _ => all_props(res),
            };
            let mut found = Vec::new();
            let mut missing = Vec::new();
            for q in names {
                match prop_value(svc, ctx, res, (&q.0, &q.1), version) {
                    Some(v) => found.push((q, v)),
                    None => missing.push(q),
                }
            }
            ms.props(&path, &found, &missing);
        }
    }
}

fn parse_body(body: &[u8]) -> Result<Option<Element>, DavError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    xml::parse(body)
        .map(Some)
        .map_err(|e| DavError::BadRequest(format!("unreadable XML body: {e}")))
}

// ---------------------------------------------------------------------------
// PROPFIND (RFC 4918 9.1)

fn propfind(
    svc: &DavService,
    ctx: &Ctx,
    req: &DavRequest,
    target: &Target,
) -> Result<Reply, DavError> {
    // A missing Depth means infinity (RFC 4918 10.2), which we refuse as
    // 9.1 allows, naming the precondition.
    let depth_one = match req.depth.as_deref() {
        Some("0") => false,
        Some("1") => true,
        Some(d) if d.eq_ignore_ascii_case("infinity") => {
            return Err(DavError::Dav(
                StatusCode::FORBIDDEN,
                "propfind-finite-depth",
            ));
        }
        None => {
            return Err(DavError::Dav(
                StatusCode::FORBIDDEN,
                "propfind-finite-depth",
            ));
        }
        Some(_) => {
            return Err(DavError::BadRequest(
                "Depth must be 0, 1 or infinity".into(),
            ));
        }
    };
    let body = parse_body(&req.body)?;
    if let Some(root) = &body
        && !root.is(DAV, "propfind")
    {
        return Err(DavError::BadRequest(
            "the body is not a DAV:propfind".into(),
        ));
    }
    let (want, version) = prop_request(body.as_ref());
    let mut ms = Multistatus::new();
    match target {
        Target::Root => describe(svc, ctx, &mut ms, &Res::Root, &want, version),
        Target::Principal => describe(svc, ctx, &mut ms, &Res::Principal, &want, version),
        Target::Home => {
            describe(svc, ctx, &mut ms, &Res::Home, &want, version);
            if depth_one {
                for sel in [BookSel::Personal, BookSel::Account] {
                    let generation = svc.store.ldap_book_generation(ctx.book(sel))?;
                    describe(
                        svc,
                        ctx,
                        &mut ms,
                        &Res::Book(sel, generation),
                        &want,
                        version,
                    );
                }
            }
        }
        Target::Book(sel) => {
            let snapshot = svc.store.ldap_book_load(ctx.book(*sel))?;
            describe(
                svc,
                ctx,
                &mut ms,
                &Res::Book(*sel, snapshot.generation),
                &want,
                version,
            );
            if depth_one {
                for (key, entry) in &snapshot.entries {
                    describe(
                        svc,
                        ctx,
                        &mut ms,
                        &Res::Card(*sel, key, entry),
                        &want,
                        version,
                    );
                }
            }
        }
        Target::Card(sel, name) => {
            let (key, entry) = find_card(svc, ctx, *sel, name)?.ok_or(DavError::NotFound)?;
            describe(
                svc,
                ctx,
                &mut ms,
                &Res::Card(*sel, &key, &entry),
                &want,
                version,
            );
        }
        Target::Missing => return Err(DavError::NotFound),
    }
    Ok(ms.finish(None))
}

/// The entry behind a card name, if there is one.
fn find_card(
    svc: &DavService,
    ctx: &Ctx,
    sel: BookSel,
    name: &str,
) -> Result<Option<(String, LdapEntry)>, DavError> {
    let Some((key, _)) = names::entry_for(name) else {
        return Ok(None);
    };
    Ok(svc
        .store
        .ldap_entry_get(ctx.book(sel), &key)?
        .filter(|e| names::card_name(&key, &e.rdn).eq_ignore_ascii_case(name))
        .map(|e| (key, e)))
}

// ---------------------------------------------------------------------------
// REPORT (RFC 6352 8.6, 8.7; RFC 6578 3)

fn report(
    svc: &DavService,
    ctx: &Ctx,
    req: &DavRequest,
    target: &Target,
) -> Result<Reply, DavError> {
    let root = parse_body(&req.body)?
        .ok_or_else(|| DavError::BadRequest("a REPORT needs a body".into()))?;
    let Target::Book(sel) = target else {
        return Err(DavError::Dav(StatusCode::FORBIDDEN, "supported-report"));
    };
    let book = ctx.book(*sel).to_string();
    if root.is(CARDDAV, "addressbook-multiget") {
        let (want, version) = prop_request(Some(&root));
        let mut ms = Multistatus::new();
        for h in root.children_named(DAV, "href") {
            let path = h.text.trim();
            match names::target(path, &ctx.user) {
                Target::Card(s, name) if s == *sel => match find_card(svc, ctx, s, &name)? {
                    Some((key, entry)) => describe(
                        svc,
                        ctx,
                        &mut ms,
                        &Res::Card(s, &key, &entry),
                        &want,
                        version,
                    ),
                    None => ms.status(path, "404 Not Found"),
                },
                _ => ms.status(path, "404 Not Found"),
            }
        }
        return Ok(ms.finish(None));
    }
    if root.is(CARDDAV, "addressbook-query") {
        return query(svc, ctx, *sel, &book, &root);
    }
    if root.is(DAV, "sync-collection") {
        return sync_collection(svc, ctx, req, *sel, &book, &root);
    }
    Err(DavError::Dav(StatusCode::FORBIDDEN, "supported-report"))
}

/// addressbook-query (RFC 6352 8.6, 10.5): prop-filters with text-match
/// over the rendered cards, `anyof` or `allof`, and a result limit.
fn query(
    svc: &DavService,
    ctx: &Ctx,
    sel: BookSel,
    book: &str,
    root: &Element,
) -> Result<Reply, DavError> {
    let (want, version) = prop_request(Some(root));
    let filter = root.child(CARDDAV, "filter");
    let limit = root
        .child(CARDDAV, "limit")
        .and_then(|l| l.child(CARDDAV, "nresults"))
        .and_then(|n| n.text.trim().parse::<usize>().ok());
    let snapshot = svc.store.ldap_book_load(book)?;
    let mut ms = Multistatus::new();
    let mut matched = 0usize;
    let mut truncated = false;
    for (key, entry) in &snapshot.entries {
        let name = names::card_name(key, &entry.rdn);
        let (text, _) = vcard::render(entry, uid_of(&name), None);
        let Ok(card) = vcard::parse_one(&text) else {
            continue;
        };
        if let Some(f) = filter
            && !filter_matches(f, &card)?
        {
            continue;
        }
        if limit.is_some_and(|n| matched >= n) {
            truncated = true;
            break;
        }
        matched += 1;
        describe(
            svc,
            ctx,
            &mut ms,
            &Res::Card(sel, key, entry),
            &want,
            version,
        );
    }
    if truncated {
        // RFC 6352 8.6.1: the request-URI with 507 says the results were cut.
        ms.status(
            &names::book_href(&ctx.user, sel),
            "507 Insufficient Storage",
        );
    }
    Ok(ms.finish(None))
}

fn filter_matches(filter: &Element, card: &calcard::vcard::VCard) -> Result<bool, DavError> {
    let all = filter.attr("test") == Some("allof");
    let mut any_filter = false;
    for pf in filter.children_named(CARDDAV, "prop-filter") {
        any_filter = true;
        let m = prop_filter_matches(pf, card)?;
        if all && !m {
            return Ok(false);
        }
        if !all && m {
            return Ok(true);
        }
    }
    Ok(all || !any_filter)
}

fn prop_filter_matches(pf: &Element, card: &calcard::vcard::VCard) -> Result<bool, DavError> {
    let name = pf
        .attr("name")
        .ok_or_else(|| DavError::BadRequest("prop-filter without a name".into()))?;
    let values = vcard::property_texts(card, name);
    if pf.child(CARDDAV, "is-not-defined").is_some() {
        return Ok(values.is_empty());
    }
    let all = pf.attr("test") == Some("allof");
    let mut tests = 0;
    for tm in pf.children_named(CARDDAV, "text-match") {
        tests += 1;
        let m = text_match(tm, &values)?;
        if all && !m {
            return Ok(false);
        }
        if !all && m {
            return Ok(true);
        }
    }
    if tests == 0 {
        return Ok(!values.is_empty());
    }
    Ok(all)
}

/// text-match (RFC 6352 10.5.4) with the i;unicode-casemap (default) and
/// i;ascii-casemap collations (RFC 4790), or i;octet.
fn text_match(tm: &Element, values: &[String]) -> Result<bool, DavError> {
    let collation = tm.attr("collation").unwrap_or("i;unicode-casemap");
    let fold = |s: &str| -> String {
        match collation {
            "i;octet" => s.to_string(),
            "i;ascii-casemap" => s.to_ascii_lowercase(),
            "i;unicode-casemap" => s.to_lowercase(),
            _ => s.to_lowercase(),
        }
    };
    if !matches!(
        collation,
        "i;octet" | "i;ascii-casemap" | "i;unicode-casemap"
    ) {
        return Err(DavError::Card(
            StatusCode::FORBIDDEN,
            "supported-collation",
            format!("collation {collation} is not supported"),
        ));
    }
    let needle = fold(tm.text.trim());
    let kind = tm.attr("match-type").unwrap_or("contains");
    let hit = values.iter().any(|v| {
        let v = fold(v);
        match kind {
            "equals" => v == needle,
            "starts-with" => v.starts_with(&needle),
            "ends-with" => v.ends_with(&needle),
            _ => v.contains(&needle),
        }
    });
    let negate = tm.attr("negate-condition") == Some("yes");
    Ok(hit != negate)
}

/// sync-collection (RFC 6578 3): what changed since the token, deletions as
/// 404 responses, and the new token.
fn sync_collection(
    svc: &DavService,
    ctx: &Ctx,
    req: &DavRequest,
    sel: BookSel,
    book: &str,
    root: &Element,
) -> Result<Reply, DavError> {
    // RFC 6578 3.2 answers a token the server cannot use with 403 and
    // DAV:valid-sync-token, which DAVx5 and iOS take as "start over";
    // Thunderbird starts over only on 400 (its CardDAV directory expects
    // 207 or 400 from a sync-collection), so it gets 400 with the same body.
    let stale_status = if req
        .user_agent
        .as_deref()
        .is_some_and(|ua| ua.contains("Thunderbird"))
    {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::FORBIDDEN
    };
    let stale = DavError::Dav(stale_status, "valid-sync-token");
    let token = root
        .child(DAV, "sync-token")
        .map(|t| t.text.trim().to_string())
        .unwrap_or_default();
    let since = if token.is_empty() {
        0
    } else {
        token
            .strip_prefix(SYNC_TOKEN_PREFIX)
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| stale.clone())?
    };
    let changes = svc.store.ldap_book_changes(book, since)?;
    // A token older than the deletions we still remember, or newer than the
    // book, was not given for this book's current history (RFC 6578 3.2:
    // 403 with DAV:valid-sync-token; the client starts over).
    if since > 0 && (since < changes.floor || since > changes.generation) {
        return Err(stale);
    }
    let (want, version) = prop_request(Some(root));
    let mut ms = Multistatus::new();
    let mut present = std::collections::HashSet::new();
    for (key, entry) in &changes.changed {
        present.insert(names::card_name(key, &entry.rdn).to_ascii_lowercase());
        describe(
            svc,
            ctx,
            &mut ms,
            &Res::Card(sel, key, entry),
            &want,
            version,
        );
    }
    let mut gone = std::collections::HashSet::new();
    for stone in &changes.deleted {
        let name = names::card_name(&stone.key, &stone.rdn);
        let folded = name.to_ascii_lowercase();
        if present.contains(&folded) || !gone.insert(folded) {
            continue;
        }
        // Still there (deleted then made again, unchanged since)? Not gone.
        if svc.store.ldap_entry_get(book, &stone.key)?.is_some() {
            continue;
        }
        ms.status(&names::card_href(&ctx.user, sel, &name), "404 Not Found");
    }
    Ok(ms.finish(Some(sync_token(changes.generation))))
}

// ---------------------------------------------------------------------------
// GET, PUT, DELETE, PROPPATCH

fn get(svc: &DavService, ctx: &Ctx, req: &DavRequest, target: &Target) -> Result<Reply, DavError> {
    match target {
        Target::Card(sel, name) => {
            let (key, entry) = find_card(svc, ctx, *sel, name)?.ok_or(DavError::NotFound)?;
            let want = req.accept.as_deref().and_then(|a| {
                a.split(',')
                    .filter(|part| part.contains("vcard"))
                    .find_map(|part| {
                        part.split(';')
                            .filter_map(|p| p.trim().strip_prefix("version="))
                            .find_map(|v| version_wanted(Some(v.trim_matches('"'))))
                    })
            });
            let (text, _) =
                vcard::render(&entry, uid_of(&names::card_name(&key, &entry.rdn)), want);
            Ok(Reply::new(StatusCode::OK)
                .with_body("text/vcard; charset=utf-8", text)
                .header(header::ETAG, etag(&entry)))
        }
        _ => Ok(Reply::text(
            StatusCode::OK,
            "mxrack CardDAV: point a CardDAV client (iOS, DAVx5, Thunderbird) at this address",
        )),
    }
}

/// If-Match / If-None-Match (RFC 7232 3.1, 3.2) against the current ETag.
fn preconditions(req: &DavRequest, current: Option<&str>) -> Result<(), DavError> {
    let listed = |header: &str, tag: &str| {
        header
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || t == tag)
    };
    if let Some(m) = &req.if_match {
        match current {
            Some(tag) if listed(m, tag) => {}
            _ => return Err(DavError::PreconditionFailed),
        }
    }
    if let Some(n) = &req.if_none_match
        && let Some(tag) = current
        && listed(n, tag)
    {
        return Err(DavError::PreconditionFailed);
    }
    Ok(())
}

fn put(svc: &DavService, ctx: &Ctx, req: &DavRequest, target: &Target) -> Result<Reply, DavError> {
    let Target::Card(sel, name) = target else {
        return Err(DavError::NotAllowed);
    };
    if !ctx.writable(*sel) {
        return Err(DavError::Dav(StatusCode::FORBIDDEN, "need-privileges"));
    }
    // RFC 6352 6.3.2.1: supported-address-data, valid-address-data.
    if let Some(ct) = &req.content_type {
        let media = ct.split(';').next().unwrap_or_default().trim();
        if !media.eq_ignore_ascii_case("text/vcard") && !media.eq_ignore_ascii_case("text/x-vcard")
        {
            return Err(DavError::Card(
                StatusCode::FORBIDDEN,
                "supported-address-data",
                format!("{media} is not text/vcard"),
            ));
        }
    }
    let text = std::str::from_utf8(&req.body).map_err(|_| {
        DavError::Card(
            StatusCode::FORBIDDEN,
            "valid-address-data",
            "the card is not UTF-8".into(),
        )
    })?;
    let card = vcard::parse_one(text)
        .map_err(|e| DavError::Card(StatusCode::FORBIDDEN, "valid-address-data", e.0))?;
    let Some((key, new_rdn)) = names::entry_for(name) else {
        return Err(DavError::Dav(StatusCode::FORBIDDEN, "need-privileges"));
    };
    let book = ctx.book(*sel);
    let limits = svc.book_limits();
    let existing = svc.store.ldap_entry_get(book, &key)?;
    let created = match existing {
        None => {
            preconditions(req, None)?;
            let Some(rdn) = new_rdn else {
                // A server name that names nothing: clients cannot make one.
                return Err(DavError::Dav(StatusCode::FORBIDDEN, "need-privileges"));
            };
            let mut contact = vcard::contact_of(&card, None)?;
            contact.finish(&rdn)?;
            let mut entry = contact.into_stored(&rdn, 0);
            entry.vcard = Some(text.to_string());
            svc.store.ldap_entry_add(book, &key, &entry, &limits)?;
            true
        }
        Some(old) => {
            let rdn = dn::parse(&old.rdn)
                .ok()
                .and_then(|d| d.rdns.into_iter().next())
                .ok_or_else(|| DavError::Internal(format!("stored RDN {:?}", old.rdn)))?;
            let mut contact = vcard::contact_of(&card, Some(&old))?;
            contact.finish(&rdn)?;
            let attributes = contact.into_stored(&rdn, 0).attributes;
            svc.store
                .ldap_entry_update(book, &key, &limits, |e: &mut LdapEntry| {
                    // Checked again inside the write: no lost update.
                    preconditions(req, Some(&etag(e)))?;
                    e.attributes = attributes;
                    e.vcard = Some(text.to_string());
                    Ok::<(), DavError>(())
                })?;
            false
        }
    };
    let tag = svc
        .store
        .ldap_entry_get(book, &key)?
        .map(|e| etag(&e))
        .unwrap_or_default();
    tracing::info!(user = %ctx.user, book, card = %name, created, "CardDAV PUT");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    };
    Ok(Reply::new(status).header(header::ETAG, tag))
}

fn delete(
    svc: &DavService,
    ctx: &Ctx,
    req: &DavRequest,
    target: &Target,
) -> Result<Reply, DavError> {
    let Target::Card(sel, name) = target else {
        return Err(DavError::Dav(StatusCode::FORBIDDEN, "need-privileges"));
    };
    let (key, entry) = find_card(svc, ctx, *sel, name)?.ok_or(DavError::NotFound)?;
    if !ctx.writable(*sel) {
        return Err(DavError::Dav(StatusCode::FORBIDDEN, "need-privileges"));
    }
    preconditions(req, Some(&etag(&entry)))?;
    svc.store.ldap_entry_delete(ctx.book(*sel), &key)?;
    tracing::info!(user = %ctx.user, book = ctx.book(*sel), card = %name, "CardDAV DELETE");
    Ok(Reply::new(StatusCode::NO_CONTENT))
}

/// PROPPATCH (RFC 4918 9.2): no property can be set here (no dead
/// properties are kept), each is answered 403 in one multistatus.
fn proppatch(req: &DavRequest) -> Result<Reply, DavError> {
    let root = parse_body(&req.body)?
        .ok_or_else(|| DavError::BadRequest("a PROPPATCH needs a body".into()))?;
    if !root.is(DAV, "propertyupdate") {
        return Err(DavError::BadRequest(
            "the body is not a DAV:propertyupdate".into(),
        ));
    }
    let mut ms = Multistatus::new();
    ms.out.push_str("<D:response>");
    ms.out.push_str(&href(&req.path));
    ms.out.push_str("<D:propstat><D:prop>");
    for op in root.children.iter().filter(|c| c.ns == DAV) {
        if let Some(prop) = op.child(DAV, "prop") {
            for p in &prop.children {
                ms.out.push_str(&qname_xml((&p.ns, &p.name), None));
            }
        }
    }
    ms.out.push_str(
        "</D:prop><D:status>HTTP/1.1 403 Forbidden</D:status></D:propstat></D:response>\n",
    );
    Ok(ms.finish(None))
}
