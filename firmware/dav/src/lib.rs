//! mxrack-dav: CardDAV (RFC 6352 on WebDAV, RFC 4918) over the LDAP address
//! books (issue 18), on the web port's HTTPS listener.
//!
//! One book, two protocols: a collection is an LDAP book (`mxrack-store`'s
//! `ldap_entries`), a card is an entry, and the rights are LDAP's
//! (`mxrack_ldap::access::Rights`): a mailbox reads and writes its personal
//! book and reads its account's book, which it writes only with full
//! management access; nothing else exists for it.
//!
//! - `xml`: request bodies as a bounded tree; escaping.
//! - `vcard`: the vCard <-> LDAP attribute mapping, rendering and versions.
//! - `names`: URLs, card names <-> entry keys.
//! - `methods`: one function per method, blocking (the store), pure of
//!   HTTP plumbing: a [`Reply`] out.
//! - `reply`: every error's status and body, in one place.
//!
//! This file is the async edge: the well-known redirect, OPTIONS, Basic
//! authentication through the one auth service (with a cache of successful
//! checks, as LDAP binds have), the body read under a size limit and a
//! lease of the shared memory budget, then the method on a blocking thread.

pub mod methods;
pub mod names;
pub mod reply;
pub mod vcard;
pub mod xml;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request, Response, StatusCode};
use mxrack_auth::{AuthService, Protocol, Verdict};
use mxrack_ldap::verifier::{BindVerifier, Secret};
use mxrack_store::Store;

pub use reply::{DavError, Reply};

/// Largest PROPFIND, PROPPATCH or REPORT body read (a multiget of 5,000
/// hrefs is about 400 KiB).
pub const REQUEST_BYTES_MAX: usize = 1 << 20;
/// Longest `Authorization` header read.
pub const AUTHORIZATION_BYTES_MAX: usize = 1024;
/// How long a successful password check is remembered (every request of a
/// sync carries the password; see `mxrack_ldap::verifier`).
pub const CREDENTIALS_REMEMBERED_SECS: u64 = 300;

/// What the CardDAV service shares between requests.
pub struct DavService {
    pub store: Arc<Store>,
    pub auth: Arc<AuthService>,
    verifier: BindVerifier,
    /// The LDAP limits: a book's entry count and size, and a card's size
    /// (`max_message_bytes`: a contact is at most what LDAP would carry,
    /// whichever protocol writes it).
    pub ldap: mxrack_config::Ldap,
    /// Longest a request body may take to arrive (the web port's request
    /// deadline): a client trickling a body is cut, whatever it sends.
    pub body_timeout: Duration,
}

impl DavService {
    pub fn new(
        store: Arc<Store>,
        auth: Arc<AuthService>,
        ldap: mxrack_config::Ldap,
        body_timeout: Duration,
    ) -> DavService {
        DavService {
            verifier: BindVerifier::of(
                Secret::Mail,
                store.clone(),
                Duration::from_secs(CREDENTIALS_REMEMBERED_SECS),
            ),
            store,
            auth,
            ldap,
            body_timeout,
        }
    }

    /// The largest card accepted.
    pub fn card_bytes_max(&self) -> usize {
        self.ldap.max_message_bytes
    }

    pub fn book_limits(&self) -> mxrack_store::BookLimits {
        mxrack_store::BookLimits {
            max_entries: self.ldap.max_entries_per_book,
            max_bytes: self.ldap.max_book_bytes,
        }
    }
}

/// Whether a path is CardDAV's (the web service routes it here).
pub fn is_dav_path(path: &str) -> bool {
    path == names::WELL_KNOWN || path == "/dav" || path.starts_with("/dav/")
}

/// The request as the methods see it: headers read, body whole.
#[derive(Debug, Clone)]
pub struct DavRequest {
    pub method: Method,
    pub path: String,
    /// The authenticated mailbox (normalised).
    pub user: String,
    pub depth: Option<String>,
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    pub accept: Option<String>,
    pub content_type: Option<String>,
    pub user_agent: Option<String>,
    pub body: Bytes,
}

/// Answers one request on the HTTPS listener.
pub async fn handle(
    svc: Arc<DavService>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let head = req.method() == Method::HEAD;
    let mut r = answer(svc, req, peer).await.into_response();
    if head {
        *r.body_mut() = Full::new(Bytes::new());
    }
    r
}

async fn answer(svc: Arc<DavService>, req: Request<Incoming>, peer: SocketAddr) -> Reply {
    let path = req.uri().path().to_string();
    // RFC 6764 5: the well-known URI redirects to the context path.
    if path == names::WELL_KNOWN {
        return Reply::redirect(names::ROOT);
    }
    if req.method() == Method::OPTIONS {
        return Reply::options();
    }
    let user = match authenticate(&svc, req.headers(), peer).await {
        Ok(u) => u,
        Err(e) => return e.into(),
    };
    let limit = match *req.method() {
        Method::PUT => svc.card_bytes_max(),
        Method::GET | Method::HEAD | Method::DELETE => 0,
        _ => REQUEST_BYTES_MAX,
    };
    let headers = req.headers().clone();
    let method = req.method().clone();
    let body = match read_body(req, limit, svc.body_timeout).await {
        Ok(b) => b,
        Err(e) => return e.into(),
    };
    let text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_string())
    };
    let request = DavRequest {
        method,
        path,
        user,
        depth: text(header::HeaderName::from_static("depth")),
        if_match: text(header::IF_MATCH),
        if_none_match: text(header::IF_NONE_MATCH),
        accept: text(header::ACCEPT),
        content_type: text(header::CONTENT_TYPE),
        user_agent: text(header::USER_AGENT),
        body: body.0,
    };
    let lease = body.1;
    let svc2 = svc.clone();
    let reply = mxrack_store::spawn_blocking(move || methods::dispatch(&svc2, &request)).await;
    drop(lease);
    match reply {
        Ok(r) => r,
        Err(_) => DavError::Internal("the request's worker failed".into()).into(),
    }
}

/// HTTP Basic credentials (RFC 7617) checked by the one auth service:
/// the mailbox's login password, admitted by the shared limiter.
async fn authenticate(
    svc: &Arc<DavService>,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<String, DavError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(DavError::Unauthenticated);
    };
    if value.len() > AUTHORIZATION_BYTES_MAX {
        return Err(DavError::Unauthenticated);
    }
    let value = value.to_str().map_err(|_| DavError::Unauthenticated)?;
    let (scheme, rest) = value.split_once(' ').ok_or(DavError::Unauthenticated)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(DavError::Unauthenticated);
    }
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .map_err(|_| DavError::Unauthenticated)?;
    let decoded = String::from_utf8(decoded).map_err(|_| DavError::Unauthenticated)?;
    let (user, password) = decoded.split_once(':').ok_or(DavError::Unauthenticated)?;
    let Ok(user) = mxrack_store::normalize_address(user) else {
        return Err(DavError::Unauthenticated);
    };
    let (check_user, password) = (user.clone(), password.to_string());
    let svc2 = svc.clone();
    let verdict = svc
        .auth
        .check(Protocol::Dav, peer.ip(), &user, move || {
            mxrack_store::spawn_blocking(move || svc2.verifier.verify(&check_user, &password))
        })
        .await;
    match verdict {
        Verdict::Accepted => Ok(user),
        Verdict::Rejected => Err(DavError::Unauthenticated),
        Verdict::Limited(_) => Err(DavError::TooManyAttempts),
        Verdict::Unavailable => Err(DavError::Unavailable),
    }
}

/// Reads a body of at most `limit` bytes under a lease of the shared memory
/// budget (a body over the limit is refused from its Content-Length, or as
/// soon as it passes the limit, never buffered whole).
async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    deadline: Duration,
) -> Result<(Bytes, Option<mxrack_net::budget::Lease>), DavError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if limit == 0 {
        return Ok((Bytes::new(), None));
    }
    if declared.is_some_and(|n| n > limit as u64) {
        drain(req.into_body(), deadline).await;
        return Err(DavError::TooLarge(limit));
    }
    let want = declared.unwrap_or(limit as u64).max(1);
    let Some(lease) = mxrack_net::budget::global().lease(want).await else {
        return Err(DavError::Busy);
    };
    let read = tokio::time::timeout(deadline, Limited::new(req.into_body(), limit).collect());
    let Ok(read) = read.await else {
        return Err(DavError::RequestTimeout);
    };
    match read {
        Ok(c) => Ok((c.to_bytes(), Some(lease))),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(DavError::TooLarge(limit))
        }
        Err(_) => Err(DavError::BadRequest("the body could not be read".into())),
    }
}

/// Most bytes of a refused body read and thrown away, so that the client,
/// still sending, reads the 413 instead of a reset connection (RFC 9112
/// 9.6); past it the connection is closed.
pub const DRAIN_BYTES_MAX: u64 = 8 << 20;

async fn drain(body: Incoming, deadline: Duration) {
    let mut body = body;
    let mut seen = 0u64;
    let _ = tokio::time::timeout(deadline, async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                seen += data.len() as u64;
                if seen > DRAIN_BYTES_MAX {
                    break;
                }
            }
        }
    })
    .await;
}

impl From<DavError> for Reply {
    fn from(e: DavError) -> Reply {
        reply::error(&e)
    }
}

/// The status of a reply (tests and logs).
pub fn status_of(r: &Reply) -> StatusCode {
    r.status
}

impl Reply {
    pub fn into_response(self) -> Response<Full<Bytes>> {
        reply::into_response(self)
    }
}
