//! mxrack-manager: the web Manager (issue 15) for providers, customers'
//! account administrators and mailbox users, under `/manager/` on the web
//! port's HTTPS listener.
//!
//! Server-rendered HTML (maud, compiled into the binary), no JavaScript, no
//! external resource, on axum. The rooms:
//!
//! - `lib.rs` (this file): the router, the session extractor ([`Ctx`]:
//!   cookie -> session in the store -> role resolved from the store at every
//!   request), the CSRF and same-origin checks every POST passes, and the
//!   security headers of every answer.
//! - `access.rs`: who may do what, pure: the only place the rules live.
//! - `pages.rs`: the pages (maud).
//! - `actions.rs`: every change. Each one is the CLI's own operation: an
//!   `AdminRequest` (the admin socket's JSON form) run by the same
//!   `execute` the CLI and the admin socket use ([`AdminFn`]), then an audit
//!   record (who, from where, what).
//!
//! Security as a web application for the Internet: the session token is in
//! a `Secure; HttpOnly; SameSite=Strict` cookie and only its BLAKE2b hash is
//! stored; each session has a CSRF token every form carries; a POST whose
//! Origin (or Referer) is another site is refused; logins go through the one
//! `AuthService` (the shared limiter and Argon2 pool); a strict Content
//! Security Policy; no secret ever in a URL.

pub mod access;
mod actions;
pub mod charts;
mod pages;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode};
use mxrack_auth::AuthService;
use mxrack_store::{Store, StoreError, WebSession};
use subtle::ConstantTimeEq;
use tower::ServiceExt;

pub use access::Role;

/// A session ends after this long without a request.
pub const SESSION_IDLE_SECS: i64 = 30 * 60;
/// And after this long in any case.
pub const SESSION_MAX_SECS: i64 = 12 * 3600;
/// Largest form body read.
pub const FORM_BYTES_MAX: usize = 64 * 1024;
/// Most bytes of an oversized form read and dropped before its 413, and
/// the longest that may take.
const DRAIN_BYTES_MAX: u64 = 8 << 20;
const DRAIN_TIME_MAX: std::time::Duration = std::time::Duration::from_secs(30);
/// The session cookie.
pub const SESSION_COOKIE: &str = "mxrack_session";
/// The one-shot message shown after a change.
pub const FLASH_COOKIE: &str = "mxrack_flash";
/// The provider administrator's user name.
pub const ADMIN_USER: &str = "admin";

/// Runs one administration request (the admin socket's JSON form of
/// `AdminRequest`) with the CLI's own `execute`; returns what it printed.
/// Called on a blocking thread.
pub type AdminFn = Arc<dyn Fn(serde_json::Value) -> Result<String, String> + Send + Sync>;

/// What the Manager shares between requests.
pub struct Manager {
    pub store: Arc<Store>,
    pub auth: Arc<AuthService>,
    pub admin: AdminFn,
    /// The configuration as the provider sees it (read only).
    pub config_text: String,
    pub hostname: String,
    /// The LDAP base DN (for the hints next to LDAP passwords).
    pub ldap_base: String,
    /// The running health monitor (disks and arrays), when there is one.
    pub health: Option<Arc<mxrack_health::HealthHandle>>,
    /// `ldap.max_entries_per_book` and `ldap.max_book_bytes`: a contact
    /// added here meets the limits an LDAP add meets.
    pub book_limits: (usize, u64),
    router: OnceLock<Router>,
}

/// What the Manager shows of the appliance's configuration.
pub struct Site {
    /// The configuration as loaded (read only on its page).
    pub config_text: String,
    pub hostname: String,
    /// The LDAP base DN.
    pub ldap_base: String,
    /// `ldap.max_entries_per_book` and `ldap.max_book_bytes`.
    pub book_limits: (usize, u64),
}

/// The client's address, put in the request by [`handle`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Client(pub(crate) SocketAddr);

impl Manager {
    pub fn new(
        store: Arc<Store>,
        auth: Arc<AuthService>,
        admin: AdminFn,
        health: Option<Arc<mxrack_health::HealthHandle>>,
        site: Site,
    ) -> Arc<Manager> {
        Arc::new(Manager {
            store,
            auth,
            admin,
            config_text: site.config_text,
            hostname: site.hostname,
            ldap_base: site.ldap_base,
            health,
            book_limits: site.book_limits,
            router: OnceLock::new(),
        })
    }

    fn router(self: &Arc<Self>) -> Router {
        self.router
            .get_or_init(|| {
                Router::new()
                    .route("/manager", get(|| async { Redirect::to("/manager/") }))
                    .route("/manager/", get(pages::home))
                    .route("/manager/static/manager.css", get(stylesheet))
                    .route(
                        "/manager/login",
                        get(pages::login_page).post(actions::login),
                    )
                    .route("/manager/logout", post(actions::logout))
                    .route("/manager/me", get(pages::me))
                    .route("/manager/me/{what}", post(actions::me))
                    .route("/manager/me/{what}/{verb}", post(actions::me_verb))
                    .route(
                        "/manager/accounts",
                        get(pages::accounts).post(actions::account_add),
                    )
                    .route("/manager/accounts/remove", post(actions::account_remove))
                    .route("/manager/accounts/{account}", get(pages::account))
                    .route(
                        "/manager/accounts/{account}/{what}",
                        post(actions::account_what),
                    )
                    .route(
                        "/manager/accounts/{account}/{what}/{verb}",
                        post(actions::account_what_verb),
                    )
                    .route("/manager/queue", get(pages::queue))
                    .route("/manager/queue/{verb}", post(actions::queue))
                    .route("/manager/audit", get(pages::audit))
                    .route("/manager/gate", get(pages::gate))
                    .route("/manager/disks", get(pages::disks))
                    .route("/manager/disks/{verb}", post(actions::disks))
                    .route("/manager/notes", get(pages::notes).post(actions::note))
                    .route("/manager/config", get(pages::config))
                    .fallback(|| async { pages::not_found() })
                    .layer(DefaultBodyLimit::max(FORM_BYTES_MAX))
                    .with_state(self.clone())
            })
            .clone()
    }
}

/// Whether a path is the Manager's (the web service routes it here).
pub fn is_manager_path(path: &str) -> bool {
    path == "/manager" || path.starts_with("/manager/")
}

/// Answers one request on the HTTPS listener.
pub async fn handle(
    m: Arc<Manager>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> hyper::Response<Full<Bytes>> {
    // A form over the limit by its Content-Length: read and drop the body
    // (bounded in bytes and time) so the client, still sending, reads the
    // 413 instead of a reset connection (RFC 9112 9.6).
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > FORM_BYTES_MAX as u64) {
        let mut body = req.into_body();
        let mut seen = 0u64;
        let _ = tokio::time::timeout(DRAIN_TIME_MAX, async {
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                if seen > DRAIN_BYTES_MAX {
                    break;
                }
            }
        })
        .await;
        let mut r = hyper::Response::new(Full::new(Bytes::from_static(
            b"the form is larger than the Manager accepts\n",
        )));
        *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
        secure_headers(r.headers_mut());
        return r;
    }
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(Client(peer));
    let req = Request::from_parts(parts, axum::body::Body::new(body));
    let resp = match m.router().oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let (parts, body) = resp.into_parts();
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut r = hyper::Response::from_parts(parts, Full::new(bytes));
    secure_headers(r.headers_mut());
    r
}

/// The headers of every answer (CSP: nothing but our own stylesheet; no
/// script, no frame, forms only to us).
fn secure_headers(h: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "same-origin");
    set(h, header::CACHE_CONTROL, "no-store");
    set(h, header::STRICT_TRANSPORT_SECURITY, "max-age=31536000");
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("manager.css"),
    )
        .into_response()
}

/// Runs store work on a blocking thread (the store's entry points check
/// they are not on the async workers).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    match mxrack_store::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "Manager: store error");
            Err(pages::failure(
                "The appliance could not read its data; try again.",
            ))
        }
        Err(_) => Err(pages::failure("Internal error; try again.")),
    }
}

/// A value of the request's `Cookie` header.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A POST from another site (its Origin, or failing that its Referer, is
/// not this host) is refused: with SameSite=Strict and the CSRF token, a
/// third lock on the door.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let from = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    match from {
        // A browser sends Origin with every POST; a client without either
        // is no browser, and carries no cookie a site could have abused.
        None => true,
        Some("null") => false,
        Some(o) => {
            let rest = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"))
                .unwrap_or("");
            rest.split('/').next() == Some(host)
        }
    }
}

/// A logged-in request: its session and the role resolved now.
pub struct Ctx {
    pub token: String,
    pub session: WebSession,
    pub role: Role,
    pub client: String,
    pub ip: std::net::IpAddr,
    /// The one-shot message of the previous change, if any.
    pub flash: Option<(bool, String)>,
}

impl Ctx {
    pub fn who(&self) -> &str {
        &self.session.who
    }

    /// Whether a form's `csrf` field is this session's token.
    pub fn csrf_ok(&self, form: &HashMap<String, String>) -> bool {
        form.get("csrf")
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(self.session.csrf.as_bytes())))
    }
}

impl FromRequestParts<Arc<Manager>> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        m: &Arc<Manager>,
    ) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<Client>()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        let client = ip.to_string();
        if parts.method == Method::POST && !same_origin(&parts.headers) {
            return Err(pages::forbidden("This form was sent from another site."));
        }
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE)
            .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        else {
            return Err(Redirect::to("/manager/login").into_response());
        };
        let store = m.store.clone();
        let t = token.clone();
        let found = blocking(move || {
            let Some(s) = store.web_session_get(&t, SESSION_IDLE_SECS, SESSION_MAX_SECS)? else {
                return Ok(None);
            };
            let role = access::resolve(&store, &s.who)?;
            Ok(role.map(|r| (s, r)))
        })
        .await?;
        let Some((session, role)) = found else {
            return Err(Redirect::to("/manager/login").into_response());
        };
        let flash = cookie(&parts.headers, FLASH_COOKIE).and_then(|v| pages::decode_flash(&v));
        Ok(Ctx {
            token,
            session,
            role,
            client,
            ip,
            flash,
        })
    }
}

/// A form's fields.
pub(crate) type Fields = HashMap<String, String>;

/// What a change answers: back to its page with a message.
pub(crate) fn back(to: &str, ok: bool, message: &str) -> Response {
    let mut r = Redirect::to(to).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{FLASH_COOKIE}={}; Path=/manager/; Secure; HttpOnly; SameSite=Strict; Max-Age=60",
        pages::encode_flash(ok, message)
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    *r.status_mut() = StatusCode::SEE_OTHER;
    r
}

pub(crate) fn state(m: &State<Arc<Manager>>) -> Arc<Manager> {
    m.0.clone()
}
