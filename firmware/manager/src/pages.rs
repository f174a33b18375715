//! The Manager's pages, server-rendered with maud (every text escaped by
//! the template engine). Each page checks its role first ([`crate::access`])
//! and answers 403 otherwise, whatever link was or was not shown.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use hyper::header::{self, HeaderValue};
use maud::{DOCTYPE, Markup, html};

use crate::{Ctx, FLASH_COOKIE, Manager, blocking, state};

fn page(status: StatusCode, title: &str, ctx: Option<&Ctx>, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " - mxrack Manager" }
                link rel="stylesheet" href="/manager/static/manager.css";
            }
            body {
                header {
                    nav {
                        a href="/manager/" { "Manager" }
                        @if let Some(c) = ctx {
                            @if c.role.mailbox().is_some() { a href="/manager/me" { "My mailbox" } }
                            @if let Some(a) = c.role.managed_account() {
                                a href={ "/manager/accounts/" (a) } { "Account " (a) }
                            }
                            @if c.role.is_provider() {
                                a href="/manager/accounts" { "Accounts" }
                                a href="/manager/queue" { "Queue" }
                                a href="/manager/gate" { "Forward gate" }
                                a href="/manager/disks" { "Disks" }
                                a href="/manager/notes" { "Status notes" }
                                a href="/manager/audit" { "Audit" }
                                a href="/manager/config" { "Configuration" }
                            }
                        }
                    }
                    @if let Some(c) = ctx {
                        div {
                            span #who { (c.role.label()) }
                            form.inline method="post" action="/manager/logout" {
                                input type="hidden" name="csrf" value=(c.session.csrf);
                                button #logout type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    @if let Some(c) = ctx {
                        @if let Some((ok, text)) = &c.flash {
                            p class=(if *ok { "notice" } else { "error" }) { (text) }
                        }
                    }
                    (body)
                }
            }
        }
    };
    let mut r = (status, Html(markup.into_string())).into_response();
    if ctx.is_some_and(|c| c.flash.is_some())
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{FLASH_COOKIE}=; Path=/manager/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"
        ))
    {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

pub fn not_found() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Not found",
        None,
        html! { p { "There is no such page." } },
    )
}

pub fn forbidden(why: &str) -> Response {
    page(
        StatusCode::FORBIDDEN,
        "Not allowed",
        None,
        html! { p.error { (why) } p { a href="/manager/" { "Back to the Manager" } } },
    )
}

pub fn failure(why: &str) -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again",
        None,
        html! { p.error { (why) } },
    )
}

/// The flash cookie's value: `1` or `0`, then the text in hex (a cookie
/// value cannot hold every character).
pub fn encode_flash(ok: bool, text: &str) -> String {
    let text: String = text.chars().take(300).collect();
    let hex: String = text.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{}{hex}", if ok { '1' } else { '0' })
}

pub fn decode_flash(v: &str) -> Option<(bool, String)> {
    let ok = match v.as_bytes().first()? {
        b'1' => true,
        b'0' => false,
        _ => return None,
    };
    let hex = &v[1..];
    if !hex.len().is_multiple_of(2) || hex.len() > 2400 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    Some((ok, String::from_utf8(bytes?).ok()?))
}

/// A book's contacts (cn, mail, phone) and the forms to add and remove
/// them; `action` is where the forms post (`.../contacts`).
fn contacts(ctx: &Ctx, action: &str, rows: &[(String, mxrack_store::LdapEntry)]) -> Markup {
    let first = |e: &mxrack_store::LdapEntry, name: &str| {
        e.attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
            .and_then(|a| a.values.first())
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .unwrap_or_default()
    };
    html! {
        table #contacts {
            tr { th { "Name" } th { "E-mail" } th { "Phone" } th {} }
            @for (key, e) in rows {
                tr {
                    td { (first(e, "cn")) } td { (first(e, "mail")) } td { (first(e, "telephoneNumber")) }
                    td { form.inline method="post" action={ (action) "/remove" } {
                        (csrf(ctx)) input type="hidden" name="key" value=(key);
                        button.remove type="submit" { "Remove" }
                    } }
                }
            }
        }
        form #contact-add .box method="post" action=(action) {
            (csrf(ctx))
            label { "Name " input type="text" name="cn" required; }
            label { "E-mail " input type="text" name="mail"; }
            label { "Phone " input type="text" name="phone"; }
            button type="submit" { "Add contact" }
        }
    }
}

fn csrf(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.session.csrf); }
}

pub async fn login_page() -> Response {
    login_form(StatusCode::OK, None)
}

pub fn login_form(status: StatusCode, error: Option<&str>) -> Response {
    page(
        status,
        "Log in",
        None,
        html! {
            @if let Some(e) = error { p.error { (e) } }
            form #login .box method="post" action="/manager/login" {
                p { label { "User " input type="text" name="user" autocomplete="username" required; } }
                p { label { "Password " input type="password" name="password" autocomplete="current-password" required; } }
                button #login-submit type="submit" { "Log in" }
            }
            p { "The provider logs in as " code { "admin" } "; a mailbox with its address and mail password." }
        },
    )
}

pub async fn home(ctx: Ctx) -> Response {
    let body = html! {
        p { "Logged in as " strong { (ctx.role.label()) } "." }
        ul {
            @if ctx.role.mailbox().is_some() {
                li { a href="/manager/me" { "My mailbox" } ": password, LDAP password, forwarding" }
            }
            @if let Some(a) = ctx.role.managed_account() {
                li { a href={ "/manager/accounts/" (a) } { "Account " (a) } ": mailboxes, aliases, LDAP password" }
            }
            @if ctx.role.is_provider() {
                li { a href="/manager/accounts" { "Accounts and domains" } }
                li { a href="/manager/queue" { "Outbound queue" } }
                li { a href="/manager/gate" { "Forward gate" } ": thresholds, complaints and discards per destination" }
                li { a href="/manager/disks" { "Disks and arrays" } ": the bays, what to swap" }
                li { a href="/manager/notes" { "Status page notes" } }
                li { a href="/manager/audit" { "Audit trail" } }
                li { a href="/manager/config" { "Configuration" } " (read only)" }
            }
        }
    };
    page(StatusCode::OK, "Manager", Some(&ctx), body)
}

pub async fn me(m: State<Arc<Manager>>, ctx: Ctx) -> Response {
    let m = state(&m);
    let Some(address) = ctx.role.mailbox().map(str::to_string) else {
        return forbidden("The provider administrator has no mailbox.");
    };
    let store = m.store.clone();
    let a = address.clone();
    let (forward, usage, quota, book, held) = match blocking(move || {
        let forward = store
            .forward_list()?
            .into_iter()
            .find(|f| f.mailbox.eq_ignore_ascii_case(&a));
        let usage = store.mailbox_usage_parts(&a)?;
        let quota = store.mailbox_get(&a)?.quota_bytes;
        let book = store.ldap_book_load(&a)?.entries;
        // The held copies are one section: a queue record that does not
        // decode must not cost the user the rest of the page.
        let held = held_copies(&store, &a).unwrap_or_else(|e| {
            tracing::warn!(mailbox = %a, error = %e, "held forwarded copies not listed");
            Vec::new()
        });
        Ok((forward, usage, quota, book, held))
    })
    .await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let body = html! {
        p { "Storage: " (usage.total()) " bytes used (" (usage.mail) " mail, " (usage.contacts) " contacts)"
            @if let Some(q) = quota { " of " (q) } "." }
        h2 { "Password" }
        form #password .box method="post" action="/manager/me/password" {
            (csrf(&ctx))
            label { "Current " input type="password" name="old" autocomplete="current-password" required; }
            label { "New " input type="password" name="new" autocomplete="new-password" required; }
            button type="submit" { "Change password" }
        }
        h2 { "LDAP password" }
        p { "For the address books over LDAP: bind as " code { "cn=" (address) ",ou=auth," (m.ldap_base) } "." }
        form #ldap-password .box method="post" action="/manager/me/ldap-password" {
            (csrf(&ctx))
            label { "New LDAP password " input type="password" name="new" autocomplete="new-password" required; }
            button type="submit" { "Set LDAP password" }
        }
        h2 { "Forwarding" }
        table #forwards {
            tr { th { "Forwards to" } th { "Local copy" } }
            @if let Some(f) = &forward {
                @for t in &f.targets {
                    tr { td { (t) } td { (if f.keep_copy { "kept" } else { "not kept" }) } }
                }
            }
        }
        @if forward.is_some() {
            form.inline method="post" action="/manager/me/forwards/remove" {
                (csrf(&ctx))
                button.remove type="submit" { "Stop forwarding" }
            }
        }
        form #forward-set .box method="post" action="/manager/me/forwards" {
            (csrf(&ctx))
            label { "Forward to (comma separated) " input type="text" name="targets" required; }
            label { input type="checkbox" name="keep_copy" value="on" checked; " keep a copy here" }
            button type="submit" { "Set forwarding" }
        }
        h2 { "Forwarded copies held back" }
        p { "Copies of mail for this mailbox that the spam gate did not forward. \
             Each is kept until the date shown, then removed; release one to send it now." }
        @if held.is_empty() {
            p #held-none { "None." }
        } @else {
            table #held {
                tr { th { "From" } th { "Subject" } th { "Forwarded to" } th { "Why" } th { "Kept until (UTC)" } th {} }
                @for h in &held {
                    tr {
                        td { (h.from) } td { (h.subject) } td { (h.entry.recipients.join(", ")) }
                        td { (h.entry.hold_reason.as_deref().unwrap_or("")) }
                        td { (h.entry.expires.map(utc).unwrap_or_default()) }
                        td {
                            form.inline method="post" action="/manager/me/held/release" {
                                (csrf(&ctx))
                                input type="hidden" name="id" value=(mxrack_store::id_hex(h.entry.id));
                                button.release type="submit" { "release" }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Personal address book" }
        p { "The same contacts over LDAP and CardDAV." }
        (contacts(&ctx, "/manager/me/contacts", &book))
    };
    page(
        StatusCode::OK,
        &format!("Mailbox {address}"),
        Some(&ctx),
        body,
    )
}

/// A forwarded copy the spam gate held, with what its owner recognises it
/// by (the original From and Subject, from the start of the message).
pub struct HeldCopy {
    pub entry: mxrack_store::QueueEntry,
    pub from: String,
    pub subject: String,
}

/// How much of a held copy is read for its From and Subject.
const HELD_HEADER_BYTES_MAX: usize = 16 * 1024;
/// Held copies listed on one page (older ones beyond it are not).
const HELD_LISTED_MAX: usize = 200;

/// The gate's held copies made by `mailbox`'s forwarding rule, newest first,
/// at most [`HELD_LISTED_MAX`]. Blocking (store reads).
pub fn held_copies(
    store: &mxrack_store::Store,
    mailbox: &str,
) -> Result<Vec<HeldCopy>, mxrack_store::StoreError> {
    let entries = store.queue_held_copies(mailbox, HELD_LISTED_MAX)?;
    Ok(entries
        .into_iter()
        .map(|entry| {
            let head = store
                .open_blob(entry.blob)
                .and_then(|mut r| r.read_chunk(HELD_HEADER_BYTES_MAX))
                .unwrap_or_default();
            let parsed = mail_parser::MessageParser::new().parse_headers(&head[..]);
            let from = parsed
                .as_ref()
                .and_then(|m| m.from())
                .and_then(|a| a.first())
                .map(|a| match (a.name(), a.address()) {
                    (Some(n), Some(e)) => format!("{n} <{e}>"),
                    (None, Some(e)) => e.to_string(),
                    (Some(n), None) => n.to_string(),
                    (None, None) => String::new(),
                })
                .unwrap_or_default();
            let subject = parsed
                .as_ref()
                .and_then(|m| m.subject())
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect();
            HeldCopy {
                entry,
                from,
                subject,
            }
        })
        .collect())
}

pub async fn accounts(m: State<Arc<Manager>>, ctx: Ctx) -> Response {
    if !ctx.role.is_provider() {
        return forbidden("Only the provider administrator manages accounts.");
    }
    let m = state(&m);
    let store = m.store.clone();
    let (accounts, domains) =
        match blocking(move || Ok((store.account_list()?, store.domain_list()?))).await {
            Ok(v) => v,
            Err(r) => return r,
        };
    let body = html! {
        table #accounts {
            tr { th { "Account" } th { "Domains" } th {} }
            @for a in &accounts {
                tr {
                    td { a href={ "/manager/accounts/" (a.name) } { (a.name) } }
                    td { @for d in domains.iter().filter(|d| d.account == a.name) { (d.name) " " } }
                    td {
                        form.inline method="post" action="/manager/accounts/remove" {
                            (csrf(&ctx))
                            input type="hidden" name="name" value=(a.name);
                            button.remove type="submit" { "Remove" }
                        }
                    }
                }
            }
        }
        form #account-add .box method="post" action="/manager/accounts" {
            (csrf(&ctx))
            label { "New account " input type="text" name="name" required; }
            button type="submit" { "Add account" }
        }
    };
    page(StatusCode::OK, "Accounts", Some(&ctx), body)
}

pub async fn account(m: State<Arc<Manager>>, ctx: Ctx, Path(account): Path<String>) -> Response {
    // Account names are kept in lower case.
    let account = account.to_ascii_lowercase();
    if !ctx.role.manages(&account) {
        return forbidden("You do not manage this account.");
    }
    let m = state(&m);
    let store = m.store.clone();
    let acc = account.clone();
    let data = blocking(move || {
        if !store.account_list()?.iter().any(|a| a.name == acc) {
            return Ok(None);
        }
        let domains: Vec<String> = store
            .domain_list()?
            .into_iter()
            .filter(|d| d.account == acc)
            .map(|d| d.name)
            .collect();
        let mut mailboxes = Vec::new();
        for mb in store
            .mailbox_list(None)?
            .into_iter()
            .filter(|mb| mb.account == acc)
        {
            let used = store.mailbox_usage_parts(&mb.address)?.total();
            mailboxes.push((mb, used));
        }
        let aliases: Vec<_> = store
            .alias_list()?
            .into_iter()
            .filter(|a| {
                crate::access::domain_of(&a.address)
                    .is_some_and(|d| domains.iter().any(|x| x.eq_ignore_ascii_case(&d)))
            })
            .collect();
        let blocks: Vec<String> = store
            .block_list()?
            .into_iter()
            .filter(|b| b.account.as_deref() == Some(acc.as_str()))
            .map(|b| b.domain)
            .collect();
        let book = store.ldap_book_load(&acc)?.entries;
        let forwards: Vec<_> = store
            .forward_list()?
            .into_iter()
            .filter(|f| {
                mailboxes
                    .iter()
                    .any(|(mb, _)| mb.address.eq_ignore_ascii_case(&f.mailbox))
            })
            .collect();
        Ok(Some((domains, mailboxes, aliases, blocks, book, forwards)))
    })
    .await;
    let (domains, mailboxes, aliases, blocks, book, forwards) = match data {
        Ok(Some(v)) => v,
        Ok(None) => return not_found(),
        Err(r) => return r,
    };
    let base = format!("/manager/accounts/{account}");
    let provider = ctx.role.is_provider();
    let body = html! {
        h2 { "Domains" }
        table #domains {
            tr { th { "Domain" } @if provider { th {} } }
            @for d in &domains {
                tr {
                    td { (d) }
                    @if provider {
                        td { form.inline method="post" action={ (base) "/domains/remove" } {
                            (csrf(&ctx)) input type="hidden" name="domain" value=(d);
                            button.remove type="submit" { "Remove" }
                        } }
                    }
                }
            }
        }
        @if provider {
            form #domain-add .box method="post" action={ (base) "/domains" } {
                (csrf(&ctx))
                label { "New domain " input type="text" name="domain" required; }
                button type="submit" { "Add domain" }
            }
        }
        h2 { "Mailboxes" }
        table #mailboxes {
            tr { th { "Address" } th { "Full management" } th { "Quota" } th { "Used" } th { "Change" } }
            @for (mb, used) in &mailboxes {
                tr {
                    td { (mb.address) }
                    td {
                        form.inline method="post" action={ (base) "/mailboxes/full-management" } {
                            (csrf(&ctx)) input type="hidden" name="address" value=(mb.address);
                            input type="hidden" name="on" value=(if mb.full_management { "off" } else { "on" });
                            (if mb.full_management { "on " } else { "off " })
                            button type="submit" { (if mb.full_management { "Revoke" } else { "Grant" }) }
                        }
                    }
                    td { (mb.quota_bytes.map(|q| q.to_string()).unwrap_or_else(|| "none".into())) }
                    td { (used) }
                    td {
                        form.inline method="post" action={ (base) "/mailboxes/password" } {
                            (csrf(&ctx)) input type="hidden" name="address" value=(mb.address);
                            input type="password" name="password" placeholder="new password" autocomplete="new-password";
                            button type="submit" { "Set password" }
                        }
                        form.inline method="post" action={ (base) "/mailboxes/ldap-password" } {
                            (csrf(&ctx)) input type="hidden" name="address" value=(mb.address);
                            input type="password" name="password" placeholder="LDAP password" autocomplete="new-password";
                            button type="submit" { "Set LDAP password" }
                        }
                        form.inline method="post" action={ (base) "/mailboxes/quota" } {
                            (csrf(&ctx)) input type="hidden" name="address" value=(mb.address);
                            input type="text" name="quota" placeholder="e.g. 2G or none" size="8";
                            button type="submit" { "Set quota" }
                        }
                        form.inline method="post" action={ (base) "/mailboxes/remove" } {
                            (csrf(&ctx)) input type="hidden" name="address" value=(mb.address);
                            button.remove type="submit" { "Remove" }
                        }
                    }
                }
            }
        }
        form #mailbox-add .box method="post" action={ (base) "/mailboxes" } {
            (csrf(&ctx))
            label { "Address " input type="text" name="address" required; }
            label { "Password " input type="password" name="password" autocomplete="new-password" required; }
            label { input type="checkbox" name="full_management" value="on"; " full management" }
            button type="submit" { "Add mailbox" }
        }
        h2 { "Aliases" }
        table #aliases {
            tr { th { "Alias" } th { "Delivers to" } th {} }
            @for a in &aliases {
                tr {
                    td { (a.address) } td { (a.targets.join(", ")) }
                    td { form.inline method="post" action={ (base) "/aliases/remove" } {
                        (csrf(&ctx)) input type="hidden" name="address" value=(a.address);
                        button.remove type="submit" { "Remove" }
                    } }
                }
            }
        }
        form #alias-add .box method="post" action={ (base) "/aliases" } {
            (csrf(&ctx))
            label { "Alias " input type="text" name="address" required; }
            label { "Delivers to (comma separated) " input type="text" name="targets" required; }
            button type="submit" { "Add alias" }
        }
        h2 { "Forwarding" }
        table #account-forwards {
            tr { th { "Mailbox" } th { "Forwards to" } th { "Local copy" } th {} }
            @for fw in &forwards {
                tr {
                    td { (fw.mailbox) } td { (fw.targets.join(", ")) }
                    td { (if fw.keep_copy { "kept" } else { "not kept" }) }
                    td { form.inline method="post" action={ (base) "/forwards/remove" } {
                        (csrf(&ctx)) input type="hidden" name="address" value=(fw.mailbox);
                        button.remove type="submit" { "Stop" }
                    } }
                }
            }
        }
        form #account-forward-set .box method="post" action={ (base) "/forwards" } {
            (csrf(&ctx))
            label { "Mailbox " input type="text" name="address" required; }
            label { "Forward to (comma separated) " input type="text" name="targets" required; }
            label { input type="checkbox" name="keep_copy" value="on" checked; " keep a copy" }
            button type="submit" { "Set forwarding" }
        }
        h2 { "Blocked sender domains" }
        p { "Mail from these domains to the account's mailboxes is refused." }
        table #blocks {
            tr { th { "Domain" } th {} }
            @for d in &blocks {
                tr { td { (d) } td { form.inline method="post" action={ (base) "/blocks/remove" } {
                    (csrf(&ctx)) input type="hidden" name="domain" value=(d);
                    button.remove type="submit" { "Remove" }
                } } }
            }
        }
        form #block-add .box method="post" action={ (base) "/blocks" } {
            (csrf(&ctx))
            label { "Block domain " input type="text" name="domain" required; }
            button type="submit" { "Block" }
        }
        h2 { "Account address book" }
        p { "Every mailbox of the account reads it over LDAP and CardDAV." }
        (contacts(&ctx, &format!("{base}/contacts"), &book))
        h2 { "Account LDAP password" }
        p { "Binds as " code { "cn=" (account) ",ou=auth," (m.ldap_base) } " write the account address book." }
        form #account-ldap-password .box method="post" action={ (base) "/ldap-password" } {
            (csrf(&ctx))
            label { "New LDAP password " input type="password" name="password" autocomplete="new-password" required; }
            button type="submit" { "Set account LDAP password" }
        }
    };
    page(
        StatusCode::OK,
        &format!("Account {account}"),
        Some(&ctx),
        body,
    )
}

pub async fn queue(m: State<Arc<Manager>>, ctx: Ctx) -> Response {
    if !ctx.role.is_provider() {
        return forbidden("Only the provider administrator sees the queue.");
    }
    let m = state(&m);
    let store = m.store.clone();
    let since = (now_secs() - 86_400).max(0) as u64;
    let (entries, samples) =
        match blocking(move || Ok((store.queue_list()?, store.queue_samples(since)?))).await {
            Ok(v) => v,
            Err(r) => return r,
        };
    let lengths: Vec<f64> = samples.iter().map(|(_, n)| *n as f64).collect();
    let (first, last) = match (samples.first(), samples.last()) {
        (Some(a), Some(b)) => (utc(a.0 as i64), utc(b.0 as i64)),
        _ => (String::new(), String::new()),
    };
    let body = html! {
        (crate::charts::bars("Queue length over the last 24 hours (every 5 minutes)", &lengths, &first, &last, "#1565c0"))
        p { (entries.len()) " messages waiting." }
        form.inline method="post" action="/manager/queue/flush" {
            (csrf(&ctx)) button #flush type="submit" { "Try all now" }
        }
        table #queue {
            tr { th { "Id" } th { "From" } th { "To" } th { "Attempts" } th { "State" } th {} }
            @for q in &entries {
                @let id = mxrack_store::id_hex(q.id);
                tr {
                    td { code { (id) } } td { (q.mail_from) } td { (q.recipients.join(", ")) }
                    td { (q.attempts) }
                    td { (if q.held { "held" } else { "waiting" })
                         @if let Some(r) = &q.hold_reason { br; small { (r) } }
                         @if let Some(e) = &q.last_error { br; small { (e) } } }
                    td {
                        @for verb in (if q.held { ["release", "delete"] } else { ["hold", "delete"] }) {
                            form.inline method="post" action={ "/manager/queue/" (verb) } {
                                (csrf(&ctx)) input type="hidden" name="id" value=(id);
                                button class=(verb) type="submit" { (verb) }
                            }
                        }
                    }
                }
            }
        }
    };
    page(StatusCode::OK, "Outbound queue", Some(&ctx), body)
}

pub async fn audit(m: State<Arc<Manager>>, ctx: Ctx) -> Response {
    if !ctx.role.is_provider() {
        return forbidden("Only the provider administrator sees the audit trail.");
    }
    let m = state(&m);
    let store = m.store.clone();
    let records = match blocking(move || store.audit_recent(500)).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let body = html! {
        p { "Every change made in the Manager, newest first (the last 500)." }
        table #audit {
            tr { th { "When (UTC)" } th { "Who" } th { "From" } th { "What" } }
            @for r in &records {
                tr { td { (utc(r.at)) } td { (r.who) } td { (r.client) } td { (r.what) } }
            }
        }
    };
    page(StatusCode::OK, "Audit trail", Some(&ctx), body)
}

pub async fn config(m: State<Arc<Manager>>, ctx: Ctx) -> Response {
    if !ctx.role.is_provider() {
        return forbidden("Only the provider administrator sees the configuration.");
    }
    let m = state(&m);
    let body = html! {
        p { "Read only: the appliance's configuration file as it was loaded." }
        pre #config { (m.config_text) }
    };
    page(StatusCode::OK, "Configuration", Some(&ctx), body)
}

pub async fn gate(m: State<Arc<Manager>>, ctx: Ctx) -> Response {
    if !ctx.role.is_provider() {
        return forbidden("Only the provider administrator sees the forward gate.");
    }
    let m = state(&m);
    let store = m.store.clone();
    let today = now_secs().div_euclid(86_400);
    const DAYS: i64 = 30;
    let data = blocking(move || {
        Ok((
            store.forward_thresholds()?,
            store.forward_days(today - DAYS + 1, today)?,
            store.forward_samples(20)?,
        ))
    })
    .await;
    let (thresholds, days, samples) = match data {
        Ok(v) => v,
        Err(r) => return r,
    };
    // Per destination: forwards, discards, complaints per day, oldest first.
    let mut per: std::collections::BTreeMap<String, Vec<(u64, u64, u64)>> = Default::default();
    for (dest, day, c) in &days {
        let row = per
            .entry(dest.clone())
            .or_insert_with(|| vec![(0, 0, 0); DAYS as usize]);
        let i = (day - (today - DAYS + 1)).clamp(0, DAYS - 1) as usize;
        row[i] = (c.forwards, c.discards, c.complaints);
    }
    let first = utc((today - DAYS + 1) * 86_400)[..10].to_string();
    let last = utc(today * 86_400)[..10].to_string();
    let body = html! {
        p { "Forwarded mail per destination over the last " (DAYS) " days: complaints per 1,000 forwards and copies the gate held back." }
        h2 { "Thresholds" }
        table #thresholds {
            tr { th { "Destination" } th { "Threshold" } th { "Initial" } th { "Last change" } }
            @for (dest, t) in &thresholds {
                tr { td { (dest) } td { (format!("{:.1}", t.threshold)) } td { (format!("{:.1}", t.initial)) }
                     td { (t.last_change_day.map(|d| utc(d * 86_400)[..10].to_string()).unwrap_or_else(|| "never".into())) } }
            }
        }
        @for (dest, row) in &per {
            h2 { (dest) }
            @let rate: Vec<f64> = row.iter().map(|(f, _, c)| if *f > 0 { *c as f64 * 1000.0 / *f as f64 } else { 0.0 }).collect();
            @let discards: Vec<f64> = row.iter().map(|(_, d, _)| *d as f64).collect();
            div.charts {
                (crate::charts::bars(&format!("{dest}: complaints per 1,000 forwards"), &rate, &first, &last, "#c62828"))
                (crate::charts::bars(&format!("{dest}: copies held back"), &discards, &first, &last, "#546e7a"))
            }
        }
        @if per.is_empty() { p { "Nothing forwarded in that time." } }
        h2 { "Newest complaint samples" }
        table #samples {
            tr { th { "Received (UTC)" } th { "Destination" } th { "Type" } th { "Message-ID" } }
            @for s in &samples {
                tr { td { (utc(s.received)) } td { (s.destination.as_deref().unwrap_or("(unmatched)")) }
                     td { (s.feedback_type) } td { (s.message_id.as_deref().unwrap_or("")) } }
            }
        }
    };
    page(StatusCode::OK, "Forward gate", Some(&ctx), body)
}

pub async fn disks(m: State<Arc<Manager>>, ctx: Ctx) -> Response {
    if !ctx.role.is_provider() {
        return forbidden("Only the provider administrator sees the disks.");
    }
    let m = state(&m);
    let Some(health) = &m.health else {
        return page(
            StatusCode::OK,
            "Disks and arrays",
            Some(&ctx),
            html! { p { "The health monitor is off (health.enabled = false)." } },
        );
    };
    let snap = health.snapshot();
    let mut disks = snap.disks.clone();
    disks.sort_by(|a, b| (&a.bay, &a.path).cmp(&(&b.bay, &b.path)));
    let bays: Vec<crate::charts::Bay> = disks
        .iter()
        .map(|d| crate::charts::Bay {
            label: d.location(),
            serial: d.id.clone(),
            condition: d.condition.clone(),
        })
        .collect();
    let body = html! {
        (crate::charts::chassis(&bays))
        h2 { "Arrays" }
        table #arrays {
            tr { th { "Array" } th { "Level" } th { "State" } th { "In sync" } th { "Spares" } th { "Rebuild" } }
            @for a in &snap.arrays {
                tr { td { (a.name) } td { (a.level) } td { (a.array_state) @if a.degraded > 0 { " (degraded)" } }
                     td { (a.in_sync) "/" (a.raid_disks) } td { (a.spares) }
                     td { @if let Some(p) = a.sync_permille { (a.sync_action) " " (p / 10) "." (p % 10) " %" } } }
            }
        }
        h2 { "Disks" }
        table #disks {
            tr { th { "Bay" } th { "Serial" } th { "WWN" } th { "Model" } th { "Condition" } th { "Errors" } th { "Arrays" } th { "What to do" } }
            @for d in &disks {
                tr {
                    td { (d.location()) } td { (d.id) } td { (d.wwn.as_deref().unwrap_or("")) } td { (d.vendor) " " (d.model) }
                    td { (d.condition) } td { (d.errors) } td { (d.arrays.join(", ")) }
                    td {
                        @if d.condition == "ok" && !d.arrays.is_empty() {
                            form.inline method="post" action="/manager/disks/replace" {
                                (csrf(&ctx)) input type="hidden" name="serial" value=(d.id);
                                button type="submit" { "Take out for replacement" }
                            }
                        } @else if d.arrays.is_empty() && matches!(d.condition.as_str(), "unused" | "blank") {
                            form.inline method="post" action="/manager/disks/add" {
                                (csrf(&ctx)) input type="hidden" name="serial" value=(d.id);
                                button type="submit" { "Add to an array" }
                            }
                        } @else if matches!(d.condition.as_str(), "failing" | "faulty" | "offline" | "ready to remove") {
                            ol.steps {
                                li { "Take disk " (d.id) " out: the button, or " code { "mxrack disk replace " (d.id) } }
                                li { "Pull it from " (d.location()) " (light its LED: " code { "mxrack disk locate " (d.id) } ")" }
                                li { "Insert the new disk, then " code { "mxrack disk add NEW-SERIAL" } " (or its button here)" }
                            }
                        }
                    }
                }
            }
        }
    };
    page(StatusCode::OK, "Disks and arrays", Some(&ctx), body)
}

pub async fn notes(m: State<Arc<Manager>>, ctx: Ctx) -> Response {
    if !ctx.role.is_provider() {
        return forbidden("Only the provider administrator writes status notes.");
    }
    let _ = state(&m);
    let body = html! {
        p { "A maintenance note appears on the public status page (" a href="/status" { "/status" } ") as the seed's notes did." }
        form #note .box method="post" action="/manager/notes" {
            (csrf(&ctx))
            p { label { "Title " input type="text" name="title" size="60" required; } }
            p { label { "Text " textarea name="text" rows="4" cols="60" {} } }
            button type="submit" { "Publish note" }
        }
    };
    page(StatusCode::OK, "Status page notes", Some(&ctx), body)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `YYYY-MM-DD HH:MM:SS` of Unix seconds, in UTC.
pub fn utc(secs: i64) -> String {
    let (y, m, d) = mxrack_health::time::civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_round_trips_and_refuses_junk() {
        let v = encode_flash(true, "mailbox al@acme.example added; <b>");
        assert_eq!(
            decode_flash(&v),
            Some((true, "mailbox al@acme.example added; <b>".into()))
        );
        assert_eq!(decode_flash("2abc"), None);
        assert_eq!(decode_flash("1zz"), None);
        assert_eq!(decode_flash(""), None);
    }

    #[test]
    fn utc_times() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20");
    }
}
