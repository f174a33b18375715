//! The web service over real sockets: HTTPS pages, the HTTP redirect, the
//! status page fed by the store's events and notes, limits on requests.

use std::sync::Arc;
use std::time::Duration;

use mxrack_net::Shutdown;
use mxrack_store::{IncidentAction, NewEvent, Severity, Store};
use mxrack_web::{Mode, WebService};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Env {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    https: std::net::SocketAddr,
    http: std::net::SocketAddr,
    shutdown: Shutdown,
}

/// Store calls block: the test's own run on a plain thread, off the
/// runtime (the store's debug-build check refuses them on an async worker).
fn off<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| s.spawn(f).join().expect("store call"))
}

async fn start() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, tls) = off(|| {
        let store = Store::open(dir.path()).expect("store");
        let tls = mxrack_net::load_or_create_tls(None, None, dir.path(), "mx.test").expect("tls");
        (store, tls)
    });
    let https = Arc::new(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    let http = Arc::new(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    let (https_addr, http_addr) = (
        https.local_addr().expect("addr"),
        http.local_addr().expect("addr"),
    );
    let svc = Arc::new(WebService {
        dav: None,
        hostname: "mx.test".into(),
        store: store.clone(),
        health: None,
        https_port: https_addr.port(),
        limits: mxrack_config::Web {
            request_timeout_secs: 2,
            ..mxrack_config::Web::default()
        },
        tls: Some(tls.acceptor),
        auth: None,
    });
    let shutdown = Shutdown::new();
    let sessions = mxrack_net::Pool::new(10, 10);
    tokio::spawn(mxrack_web::serve(
        https,
        Mode::Https,
        svc.clone(),
        sessions.clone(),
        shutdown.signal(),
    ));
    tokio::spawn(mxrack_web::serve(
        http,
        Mode::Redirect,
        svc,
        sessions,
        shutdown.signal(),
    ));
    Env {
        _dir: dir,
        store,
        https: https_addr,
        http: http_addr,
        shutdown,
    }
}

/// One request, the whole answer (head and body) as text.
async fn get_tls(addr: std::net::SocketAddr, request: &str) -> String {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let connector = mxrack_health::doctor::tls_connector().expect("connector");
    let name = rustls_pki_types::ServerName::try_from("mx.test").expect("name");
    let mut s = connector.connect(name, tcp).await.expect("tls");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: mx.test:443\r\nConnection: close\r\n\r\n")
}

#[tokio::test]
async fn status_page_json_atom_and_metrics_over_https() {
    let env = start().await;
    off(|| {
        env.store
            .event_record(
                &NewEvent {
                    time: 1_764_417_600,
                    severity: Severity::Critical,
                    component: "disk SN-7".into(),
                    text: "Disk SN-7 failing <b>".into(),
                    incident: IncidentAction::Open {
                        key: "disk:SN-7".into(),
                        title: "Disk SN-7 failing".into(),
                    },
                },
                1000,
            )
            .expect("event")
    });
    off(|| {
        env.store
            .status_note(
                1_764_421_200,
                "Maintenance tonight",
                Some("22:00 UTC"),
                None,
            )
            .expect("note")
    });
    let html = get_tls(env.https, &get("/status")).await;
    assert!(html.starts_with("HTTP/1.1 200 OK\r\n"), "{html}");
    assert!(
        html.contains("content-type: text/html; charset=utf-8"),
        "{html}"
    );
    assert!(html.contains("Disk SN-7 failing &lt;b&gt;"), "{html}");
    assert!(html.contains("2025-11-29: 12:00 UTC"), "{html}");
    let note = html.find("&nbsp;Maintenance tonight").expect("note");
    let incident = html.find("&nbsp;Disk SN-7 failing").expect("incident");
    assert!(note < incident, "newest first");

    let json = get_tls(env.https, &get("/status.json")).await;
    let body = json.split("\r\n\r\n").nth(1).expect("body");
    let v: serde_json::Value = serde_json::from_str(body).expect("json");
    assert_eq!(v["open_incidents"], 1);
    assert_eq!(v["entries"][1]["title"], "Disk SN-7 failing");

    let atom = get_tls(env.https, &get("/status.atom")).await;
    assert!(atom.contains("application/atom+xml"), "{atom}");
    assert!(
        atom.contains(&format!(
            "href=\"https://mx.test:{}/status.atom\"",
            env.https.port()
        )),
        "{atom}"
    );

    let metrics = get_tls(env.https, &get("/metrics")).await;
    assert!(metrics.contains("mxrack_open_incidents 1\n"), "{metrics}");
    assert!(metrics.contains("mxrack_intake_refused 0\n"), "{metrics}");

    let missing = get_tls(env.https, &get("/nothing")).await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let post = get_tls(
        env.https,
        "POST /status HTTP/1.1\r\nHost: mx.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    let head = get_tls(
        env.https,
        "HEAD /status HTTP/1.1\r\nHost: mx.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        head.starts_with("HTTP/1.1 200") && !head.contains("<html"),
        "{head}"
    );
    env.shutdown.trigger();
}

#[tokio::test]
async fn plain_http_redirects_to_https_and_slow_heads_are_cut() {
    let env = start().await;
    let mut s = TcpStream::connect(env.http).await.expect("connect");
    s.write_all(b"GET /status?x=1 HTTP/1.1\r\nHost: mx.test:80\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    assert!(out.starts_with("HTTP/1.1 301"), "{out}");
    assert!(
        out.contains(&format!(
            "location: https://mx.test:{}/status?x=1\r\n",
            env.https.port()
        )),
        "{out}"
    );
    // A bad Host header is not echoed into the redirect.
    let mut s = TcpStream::connect(env.http).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: evil.example/x\"\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    assert!(out.contains("location: https://mx.test:"), "{out}");
    // A client that never finishes its request head is disconnected.
    let mut s = TcpStream::connect(env.http).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: mx")
        .await
        .expect("write");
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(
        r.is_ok(),
        "the server closed the connection after its timeout"
    );
    env.shutdown.trigger();
}
