//! Every change the Manager makes. Each checks, in this order: the session
//! (the [`Ctx`] extractor), the CSRF token, the role (`access`), that the
//! mailbox or alias named belongs to the account of the URL; then runs the
//! CLI's own operation ([`crate::AdminFn`]: the `AdminRequest` the admin
//! socket takes, run by the same `execute`) and writes the audit record.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use hyper::header::{self, HeaderMap, HeaderValue};
use serde_json::{Value, json};

use crate::access::{address_in_account, domain_of};
use crate::pages::{forbidden, login_form, not_found};
use crate::{ADMIN_USER, Ctx, Fields, Manager, SESSION_COOKIE, back, blocking, state};

fn field<'a>(f: &'a Fields, name: &str) -> &'a str {
    f.get(name).map(|s| s.trim()).unwrap_or("")
}

/// A password field as typed: never trimmed (a password may start or end
/// with a space, and the CLI takes it as given).
fn secret<'a>(f: &'a Fields, name: &str) -> &'a str {
    f.get(name).map(String::as_str).unwrap_or("")
}

fn list(text: &str) -> Vec<String> {
    text.split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The checks every change starts with: the form's CSRF token, then the
/// role (`allowed`, from `access`); `Some` is the refusal to answer.
fn guard(ctx: &Ctx, f: &Fields, allowed: bool, why: &str) -> Option<Response> {
    if !ctx.csrf_ok(f) {
        return Some(csrf_refused());
    }
    (!allowed).then(|| forbidden(why))
}

fn csrf_refused() -> Response {
    forbidden(
        "The form is out of date or was not sent from this page (CSRF token missing or wrong). Reload the page and try again.",
    )
}

/// Runs one operation as the CLI would, and audits it when it succeeds.
/// `what` is the audit text; the answer goes back to `to`.
async fn run(m: &Arc<Manager>, ctx: &Ctx, to: &str, what: String, op: Value) -> Response {
    let (m2, who, client) = (m.clone(), ctx.who().to_string(), ctx.client.clone());
    let w = what.clone();
    let result = mxrack_store::spawn_blocking(move || {
        let out = (m2.admin)(op);
        if out.is_ok()
            && let Err(e) = m2.store.audit_add(&who, &client, &w)
        {
            tracing::error!(error = %e, "Manager: audit record not written");
        }
        out
    })
    .await;
    match result {
        Ok(Ok(_)) => {
            tracing::info!(who = %ctx.who(), client = %ctx.client, what = %what, "Manager change");
            back(to, true, &what)
        }
        Ok(Err(e)) => back(to, false, &format!("Not done: {e}")),
        Err(_) => back(to, false, "Not done: internal error"),
    }
}

/// POST /manager/login: the credentials through the one auth service,
/// then a session. A cross-site login form is refused like any POST.
pub async fn login(
    m: State<Arc<Manager>>,
    axum::Extension(client): axum::Extension<crate::Client>,
    headers: HeaderMap,
    Form(f): Form<Fields>,
) -> Response {
    if !crate::same_origin(&headers) {
        return forbidden("This form was sent from another site.");
    }
    do_login(state(&m), client.0, f).await
}

pub async fn logout(m: State<Arc<Manager>>, ctx: Ctx, Form(f): Form<Fields>) -> Response {
    if !ctx.csrf_ok(&f) {
        return csrf_refused();
    }
    let m = state(&m);
    let store = m.store.clone();
    let token = ctx.token.clone();
    let _ = blocking(move || store.web_session_delete(&token)).await;
    let mut r = Redirect::to("/manager/login").into_response();
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}=; Path=/manager/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

pub async fn me(
    m: State<Arc<Manager>>,
    ctx: Ctx,
    Path(what): Path<String>,
    Form(f): Form<Fields>,
) -> Response {
    me_change(m, ctx, what, None, f).await
}

pub async fn me_verb(
    m: State<Arc<Manager>>,
    ctx: Ctx,
    Path((what, verb)): Path<(String, String)>,
    Form(f): Form<Fields>,
) -> Response {
    me_change(m, ctx, what, Some(verb), f).await
}

async fn me_change(
    m: State<Arc<Manager>>,
    ctx: Ctx,
    what: String,
    verb: Option<String>,
    f: Fields,
) -> Response {
    if !ctx.csrf_ok(&f) {
        return csrf_refused();
    }
    let m = state(&m);
    let Some(address) = ctx.role.mailbox().map(str::to_string) else {
        return forbidden("The provider administrator has no mailbox.");
    };
    const TO: &str = "/manager/me";
    match (what.as_str(), verb.as_deref()) {
        ("password", None) => {
            // The current password first, checked like a login.
            // Through the one limiter, as a login: a session cannot be used
            // to guess the password without bound.
            let (store, a, old) = (
                m.store.clone(),
                address.clone(),
                secret(&f, "old").to_string(),
            );
            let verdict = m
                .auth
                .check(mxrack_auth::Protocol::Web, ctx.ip, &address, move || {
                    mxrack_store::spawn_blocking(move || store.verify_password(&a, &old))
                })
                .await;
            match verdict {
                mxrack_auth::Verdict::Accepted => {}
                mxrack_auth::Verdict::Limited(_) => {
                    return back(TO, false, "Not done: too many attempts; try again later");
                }
                _ => return back(TO, false, "Not done: the current password is wrong"),
            }
            run(
                &m,
                &ctx,
                TO,
                format!("password of {address} changed"),
                json!({"op": "mailbox_passwd", "address": address, "password": secret(&f, "new")}),
            )
            .await
        }
        ("ldap-password", None) => {
            run(
                &m,
                &ctx,
                TO,
                format!("LDAP password of {address} set"),
                json!({"op": "ldap_passwd", "name": address, "password": secret(&f, "new")}),
            )
            .await
        }
        ("forwards", v) => {
            let (audit, op) = forward_op(&address, v, &f);
            if op.is_null() {
                return not_found();
            }
            run(&m, &ctx, TO, audit, op).await
        }
        ("held", Some("release")) => {
            // Only a copy this mailbox's own rule made, and only one the
            // gate held (an operator's hold is the operator's): checked by
            // the store in the release's own transaction.
            let Some(id) = mxrack_store::parse_id_hex(field(&f, "id")) else {
                return back(TO, false, "Not done: no such held copy");
            };
            let id = mxrack_store::id_hex(id);
            run(
                &m,
                &ctx,
                TO,
                format!("held copy {id} of {address} released"),
                json!({"op": "forward_release", "id": id, "mailbox": address}),
            )
            .await
        }
        ("contacts", v) => {
            let (audit, op) = contact_op(&m, &address, v, &f);
            if op.is_null() {
                return not_found();
            }
            run(&m, &ctx, TO, audit, op).await
        }
        _ => not_found(),
    }
}

/// POST /manager/accounts (add) and /manager/accounts/remove.
pub async fn account_add(m: State<Arc<Manager>>, ctx: Ctx, Form(f): Form<Fields>) -> Response {
    accounts_change(m, ctx, "add", f).await
}

pub async fn account_remove(m: State<Arc<Manager>>, ctx: Ctx, Form(f): Form<Fields>) -> Response {
    accounts_change(m, ctx, "remove", f).await
}

async fn accounts_change(m: State<Arc<Manager>>, ctx: Ctx, verb: &str, f: Fields) -> Response {
    let provider = ctx.role.is_provider();
    if let Some(refused) = guard(
        &ctx,
        &f,
        provider,
        "Only the provider administrator adds and removes accounts.",
    ) {
        return refused;
    }
    let name = field(&f, "name").to_string();
    let done = if verb == "add" { "added" } else { "removed" };
    run(
        &state(&m),
        &ctx,
        "/manager/accounts",
        format!("account {name} {done}"),
        json!({"op": format!("account_{verb}"), "name": name}),
    )
    .await
}

pub async fn account_what(
    m: State<Arc<Manager>>,
    ctx: Ctx,
    Path((account, what)): Path<(String, String)>,
    Form(f): Form<Fields>,
) -> Response {
    account_change(m, ctx, account, what, None, f).await
}

pub async fn account_what_verb(
    m: State<Arc<Manager>>,
    ctx: Ctx,
    Path((account, what, verb)): Path<(String, String, String)>,
    Form(f): Form<Fields>,
) -> Response {
    account_change(m, ctx, account, what, Some(verb), f).await
}

async fn account_change(
    m: State<Arc<Manager>>,
    ctx: Ctx,
    account: String,
    what: String,
    verb: Option<String>,
    f: Fields,
) -> Response {
    let account = account.to_ascii_lowercase();
    if let Some(refused) = guard(
        &ctx,
        &f,
        ctx.role.manages(&account),
        "You do not manage this account.",
    ) {
        return refused;
    }
    let m = state(&m);
    let to = format!("/manager/accounts/{account}");
    let address = field(&f, "address").to_ascii_lowercase();
    // A mailbox or alias named in the form must be of this account.
    let belongs = {
        let (store, a, acc) = (m.store.clone(), address.clone(), account.clone());
        match blocking(move || address_in_account(&store, &a, &acc)).await {
            Ok(b) => b,
            Err(r) => return r,
        }
    };
    let needs_address = matches!(what.as_str(), "mailboxes" | "aliases" | "forwards");
    if needs_address && !belongs {
        return back(
            &to,
            false,
            &format!(
                "Not done: {address:?} is not in a domain of account {account} ({})",
                domain_of(&address).unwrap_or_default()
            ),
        );
    }
    let (audit, op) = match (what.as_str(), verb.as_deref()) {
        ("domains", v) => {
            if !ctx.role.is_provider() {
                return forbidden("Only the provider administrator adds and removes domains.");
            }
            let domain = field(&f, "domain").to_ascii_lowercase();
            match v {
                None => (
                    format!("domain {domain} added to account {account}"),
                    json!({"op": "domain_add", "domain": domain, "account": account}),
                ),
                Some("remove") => {
                    // Only a domain of this account.
                    let (store, d, acc) = (m.store.clone(), domain.clone(), account.clone());
                    let ours = blocking(move || {
                        Ok(store
                            .domain_list()?
                            .iter()
                            .any(|x| x.name == d && x.account == acc))
                    })
                    .await;
                    if !matches!(ours, Ok(true)) {
                        return back(
                            &to,
                            false,
                            &format!("Not done: {domain} is not a domain of {account}"),
                        );
                    }
                    (
                        format!("domain {domain} removed"),
                        json!({"op": "domain_remove", "domain": domain}),
                    )
                }
                _ => return not_found(),
            }
        }
        ("mailboxes", None) => (
            format!("mailbox {address} added"),
            json!({"op": "mailbox_add", "address": address, "password": secret(&f, "password"),
                   "full_management": f.get("full_management").is_some_and(|v| v == "on")}),
        ),
        ("mailboxes", Some("remove")) => (
            format!("mailbox {address} removed"),
            json!({"op": "mailbox_remove", "address": address}),
        ),
        ("mailboxes", Some("password")) => (
            format!("password of {address} changed"),
            json!({"op": "mailbox_passwd", "address": address, "password": secret(&f, "password")}),
        ),
        ("mailboxes", Some("ldap-password")) => (
            format!("LDAP password of {address} set"),
            json!({"op": "ldap_passwd", "name": address, "password": secret(&f, "password")}),
        ),
        ("mailboxes", Some("quota")) => match mxrack_config::parse_quota(field(&f, "quota")) {
            Ok(q) => (
                format!(
                    "quota of {address} set to {}",
                    q.map_or_else(|| "none".to_string(), |b| format!("{b} bytes"))
                ),
                json!({"op": "mailbox_quota", "address": address, "set": Some(q)}),
            ),
            Err(e) => return back(&to, false, &format!("Not done: {e}")),
        },
        ("mailboxes", Some("full-management")) => {
            let on = field(&f, "on") == "on";
            (
                format!(
                    "full management access of {address} {}",
                    if on { "granted" } else { "revoked" }
                ),
                json!({"op": "mailbox_full_management", "address": address, "on": on}),
            )
        }
        ("aliases", None) => {
            let targets = list(field(&f, "targets"));
            (
                format!("alias {address} -> {}", targets.join(", ")),
                json!({"op": "alias_add", "address": address, "targets": targets}),
            )
        }
        ("aliases", Some("remove")) => (
            format!("alias {address} removed"),
            json!({"op": "alias_remove", "address": address}),
        ),
        ("forwards", v) => {
            let (audit, op) = forward_op(&address, v, &f);
            if op.is_null() {
                return not_found();
            }
            (audit, op)
        }
        ("blocks", v) => {
            let domain = field(&f, "domain").to_ascii_lowercase();
            match v {
                None => (
                    format!("{domain} blocked for account {account}"),
                    json!({"op": "block_add", "domain": domain, "account": account}),
                ),
                Some("remove") => (
                    format!("{domain} unblocked for account {account}"),
                    json!({"op": "block_remove", "domain": domain, "account": account}),
                ),
                _ => return not_found(),
            }
        }
        ("contacts", v) => {
            let (audit, op) = contact_op(&m, &account, v, &f);
            if op.is_null() {
                return not_found();
            }
            (audit, op)
        }
        ("ldap-password", None) => (
            format!("LDAP password of account {account} set"),
            json!({"op": "ldap_passwd", "name": account, "password": secret(&f, "password")}),
        ),
        _ => return not_found(),
    };
    run(&m, &ctx, &to, audit, op).await
}

pub async fn queue(
    m: State<Arc<Manager>>,
    ctx: Ctx,
    Path(verb): Path<String>,
    Form(f): Form<Fields>,
) -> Response {
    if let Some(refused) = guard(
        &ctx,
        &f,
        ctx.role.is_provider(),
        "Only the provider administrator manages the queue.",
    ) {
        return refused;
    }
    let id = field(&f, "id").to_string();
    let (audit, op) = match verb.as_str() {
        "hold" => (
            format!("queue entry {id} held"),
            json!({"op": "queue_hold", "id": id, "hold": true}),
        ),
        "release" => (
            format!("queue entry {id} released"),
            json!({"op": "queue_hold", "id": id, "hold": false}),
        ),
        "delete" => (
            format!("queue entry {id} deleted"),
            json!({"op": "queue_delete", "id": id}),
        ),
        "flush" => (
            "queue flushed".to_string(),
            json!({"op": "queue_flush", "id": null}),
        ),
        _ => return not_found(),
    };
    run(&state(&m), &ctx, "/manager/queue", audit, op).await
}

pub async fn disks(
    m: State<Arc<Manager>>,
    ctx: Ctx,
    Path(verb): Path<String>,
    Form(f): Form<Fields>,
) -> Response {
    if let Some(refused) = guard(
        &ctx,
        &f,
        ctx.role.is_provider(),
        "Only the provider administrator swaps disks.",
    ) {
        return refused;
    }
    let serial = field(&f, "serial").to_string();
    let (audit, op) = match verb.as_str() {
        "replace" => (
            format!("disk {serial} taken out for replacement"),
            json!({"op": "disk_replace", "serial": serial}),
        ),
        "add" => (
            format!("disk {serial} added to an array"),
            json!({"op": "disk_add", "serial": serial}),
        ),
        _ => return not_found(),
    };
    run(&state(&m), &ctx, "/manager/disks", audit, op).await
}

pub async fn note(m: State<Arc<Manager>>, ctx: Ctx, Form(f): Form<Fields>) -> Response {
    if let Some(refused) = guard(
        &ctx,
        &f,
        ctx.role.is_provider(),
        "Only the provider administrator writes status notes.",
    ) {
        return refused;
    }
    let title = field(&f, "title").to_string();
    let text = Some(field(&f, "text").to_string()).filter(|t| !t.is_empty());
    run(
        &state(&m),
        &ctx,
        "/manager/notes",
        format!("status note \"{title}\" published"),
        json!({"op": "status_note", "title": title, "text": text, "to": null}),
    )
    .await
}

/// Setting (`verb` none) or stopping the forwarding of `address`: the
/// CLI's `forward set|remove`. Null when the verb is unknown.
fn forward_op(address: &str, verb: Option<&str>, f: &Fields) -> (String, Value) {
    match verb {
        None => {
            let targets = list(field(f, "targets"));
            let keep = f.get("keep_copy").is_some_and(|v| v == "on");
            (
                format!(
                    "{address} forwards to {} ({})",
                    targets.join(", "),
                    if keep {
                        "local copy kept"
                    } else {
                        "no local copy"
                    }
                ),
                json!({"op": "forward_set", "address": address, "targets": targets, "keep_copy": keep}),
            )
        }
        Some("remove") => (
            format!("forwarding of {address} removed"),
            json!({"op": "forward_remove", "address": address}),
        ),
        _ => (String::new(), Value::Null),
    }
}

/// Adding (`verb` none) or removing a contact of `book`: the CLI's
/// `ldap contact add|remove`. Null when the verb is unknown.
fn contact_op(m: &Manager, book: &str, verb: Option<&str>, f: &Fields) -> (String, Value) {
    match verb {
        None => {
            let cn = field(f, "cn").to_string();
            let opt = |name: &str| Some(field(f, name).to_string()).filter(|v| !v.is_empty());
            (
                format!("contact {cn} added to the book of {book}"),
                json!({"op": "contact_add", "book": book, "cn": cn, "mail": opt("mail"),
                       "phone": opt("phone"), "max_entries": m.book_limits.0, "max_bytes": m.book_limits.1}),
            )
        }
        Some("remove") => {
            let key = field(f, "key").to_string();
            (
                format!("contact {key} removed from the book of {book}"),
                json!({"op": "contact_remove", "book": book, "key": key}),
            )
        }
        _ => (String::new(), Value::Null),
    }
}

/// The session cookie of a new login.
fn session_cookie(token: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/manager/; Secure; HttpOnly; SameSite=Strict"
    ))
    .ok()
}

async fn do_login(m: Arc<Manager>, client: std::net::SocketAddr, f: Fields) -> Response {
    let user = field(&f, "user").to_ascii_lowercase();
    let password = secret(&f, "password").to_string();
    if user.is_empty() || password.is_empty() || user.len() > 320 {
        return login_form(StatusCode::OK, Some("wrong user name or password"));
    }
    let (store, u, p) = (m.store.clone(), user.clone(), password);
    let verdict = m
        .auth
        .check(mxrack_auth::Protocol::Web, client.ip(), &user, move || {
            mxrack_store::spawn_blocking(move || {
                if u == ADMIN_USER {
                    store.admin_verify_password(&p)
                } else {
                    store.verify_password(&u, &p)
                }
            })
        })
        .await;
    match verdict {
        mxrack_auth::Verdict::Accepted => {}
        mxrack_auth::Verdict::Rejected => {
            return login_form(StatusCode::OK, Some("wrong user name or password"));
        }
        mxrack_auth::Verdict::Limited(_) => {
            return login_form(
                StatusCode::TOO_MANY_REQUESTS,
                Some("too many login attempts; try again later"),
            );
        }
        mxrack_auth::Verdict::Unavailable => {
            return login_form(StatusCode::SERVICE_UNAVAILABLE, Some("try again shortly"));
        }
    }
    let store = m.store.clone();
    let who = user.clone();
    let made = blocking(move || store.web_session_create(&who)).await;
    let (token, _) = match made {
        Ok(v) => v,
        Err(r) => return r,
    };
    tracing::info!(user = %user, client = %client.ip(), "Manager login");
    let mut r = Redirect::to("/manager/").into_response();
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Some(v) = session_cookie(&token) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}
