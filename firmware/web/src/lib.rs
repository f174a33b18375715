//! mxrack-web: the appliance's web port. HTTPS serves the status page
//! (`/status`), its JSON (`/status.json`) and Atom (`/status.atom`) forms and
//! the Prometheus metrics (`/metrics`); plain HTTP only redirects to HTTPS
//! (the seed's port-80 outage is why port 80 is served at all, and why
//! `mxrack doctor` checks it from outside).
//!
//! hyper 1 (HTTP/1.1) over the shared accept loop of mxrack-net (connection
//! cap with a 503 busy answer, a panic ends one connection) and the TLS
//! acceptor every service uses. Only GET and HEAD are served, except under
//! `/dav/`, which is CardDAV's (`mxrack-dav`, HTTPS only); request heads
//! have a deadline and a size limit; connections drain on shutdown.

pub mod metrics;
pub mod render;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use mxrack_health::HealthHandle;
use mxrack_health::status::{self, PAGE_ENTRIES_MAX};
use mxrack_net::{BoxStream, Pool, Refusal, ShutdownSignal};
use mxrack_store::Store;
use tokio::net::TcpListener;
use tracing::{debug, warn};

/// Largest request head buffered (hyper's minimum is 8 KiB).
pub const REQUEST_HEAD_BYTES_MAX: usize = 16 * 1024;
/// Longest a connection may stay open, whatever it does.
pub const CONNECTION_LIFETIME_MAX: Duration = Duration::from_secs(600);
/// Time open requests get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain HTTP: every request is redirected to HTTPS.
    Redirect,
    Https,
}

/// What the web service needs.
pub struct WebService {
    pub hostname: String,
    pub store: Arc<Store>,
    /// The running monitor (its snapshot); `None` when health is disabled.
    pub health: Option<Arc<HealthHandle>>,
    /// Port of the first HTTPS listener, for redirects.
    pub https_port: u16,
    pub limits: mxrack_config::Web,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The one authentication service (its figures go into `/metrics`).
    pub auth: Option<Arc<mxrack_auth::AuthService>>,
    /// CardDAV under `/dav/` on HTTPS (`None`: not served).
    pub dav: Option<Arc<mxrack_dav::DavService>>,
}

const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\nRetry-After: 5\r\n\r\n";

/// Serves one listener until shutdown.
pub async fn serve(
    listener: Arc<TcpListener>,
    mode: Mode,
    svc: Arc<WebService>,
    pool: Arc<Pool>,
    shutdown: ShutdownSignal,
) {
    let refusal = Refusal {
        busy_line: Arc::from(BUSY),
        tls: match mode {
            Mode::Https => svc.tls.clone(),
            Mode::Redirect => None,
        },
    };
    mxrack_net::accept_loop(
        "web",
        listener,
        pool,
        shutdown,
        refusal,
        move |stream, peer, signal| connection(svc.clone(), mode, stream, peer, signal),
    )
    .await;
}

async fn connection(
    svc: Arc<WebService>,
    mode: Mode,
    stream: BoxStream,
    peer: SocketAddr,
    mut shutdown: ShutdownSignal,
) {
    let timeout = Duration::from_secs(svc.limits.request_timeout_secs);
    let stream: BoxStream = match (mode, &svc.tls) {
        (Mode::Https, Some(tls)) => match tokio::time::timeout(timeout, tls.accept(stream)).await {
            Ok(Ok(s)) => Box::new(s),
            Ok(Err(e)) => {
                debug!(client = %peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        },
        (Mode::Https, None) => return,
        (Mode::Redirect, _) => stream,
    };
    let service = hyper::service::service_fn(move |req| {
        let svc = svc.clone();
        async move { Ok::<_, Infallible>(handle(&svc, mode, req, peer).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(REQUEST_HEAD_BYTES_MAX)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = tokio::time::timeout(CONNECTION_LIFETIME_MAX, conn.as_mut()) => {
            if let Ok(Err(e)) = r {
                debug!(client = %peer, error = %e, "HTTP connection ended with an error");
            }
        }
        _ = shutdown.wait() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
}

fn response(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", body.to_string())
}

/// The Host header if it is a plausible host[:port], without the port.
fn request_host(req: &Request<Incoming>) -> Option<String> {
    let host = req.headers().get(header::HOST)?.to_str().ok()?;
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if !ok {
        return None;
    }
    let name = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.split(':').next().unwrap_or(host)
    };
    Some(name.to_string())
}

fn https_base(svc: &WebService, host: &str) -> String {
    if svc.https_port == 443 {
        format!("https://{host}")
    } else {
        format!("https://{host}:{}", svc.https_port)
    }
}

async fn handle(
    svc: &WebService,
    mode: Mode,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    if mode == Mode::Https
        && let Some(dav) = &svc.dav
        && mxrack_dav::is_dav_path(req.uri().path())
    {
        return mxrack_dav::handle(dav.clone(), req, peer).await;
    }
    let head = req.method() == Method::HEAD;
    let mut r = route(svc, mode, &req).await;
    if head {
        *r.body_mut() = Full::new(Bytes::new());
    }
    r
}

async fn route(svc: &WebService, mode: Mode, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let host = request_host(req).unwrap_or_else(|| svc.hostname.clone());
    if mode == Mode::Redirect {
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let location = format!("{}{path}", https_base(svc, &host));
        let mut r = text(StatusCode::MOVED_PERMANENTLY, &format!("see {location}\n"));
        if let Ok(v) = HeaderValue::from_str(&location) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return r;
    }
    match req.uri().path() {
        "/" => {
            let mut r = text(StatusCode::FOUND, "see /status\n");
            r.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/status"));
            r
        }
        "/status" | "/status.json" | "/status.atom" => {
            let page = match page(svc).await {
                Ok(p) => p,
                Err(e) => {
                    warn!(error = %e, "cannot build the status page");
                    return text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "status unavailable, try again\n",
                    );
                }
            };
            match req.uri().path() {
                "/status" => response(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    render::html(&page),
                ),
                "/status.json" => response(StatusCode::OK, "application/json", render::json(&page)),
                _ => response(
                    StatusCode::OK,
                    "application/atom+xml; charset=utf-8",
                    render::atom(&page, &https_base(svc, &host)),
                ),
            }
        }
        "/metrics" => {
            let store = svc.store.clone();
            let open = mxrack_store::spawn_blocking(move || store.status_open_incidents())
                .await
                .ok()
                .and_then(Result::ok)
                .map_or(0, |v| v.len());
            let snapshot = svc
                .health
                .as_ref()
                .map(|h| h.snapshot())
                .unwrap_or_default();
            let mut snap = (*snapshot).clone();
            snap.intake_refusal = svc.store.intake_refusal().map(|r| r.to_string());
            let mut body = metrics::render(&snap, open);
            if let Some(auth) = &svc.auth {
                body.push_str(&metrics::render_auth(&auth.figures()));
            }
            body.push_str(&metrics::render_memory(mxrack_net::budget::global()));
            response(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                body,
            )
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

async fn page(svc: &WebService) -> Result<status::StatusPage, String> {
    let store = svc.store.clone();
    let hostname = svc.hostname.clone();
    let snapshot = svc.health.as_ref().map(|h| h.snapshot());
    mxrack_store::spawn_blocking(move || {
        status::build(&hostname, &store, snapshot, PAGE_ENTRIES_MAX).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}
