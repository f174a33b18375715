//! `mxrack run`: opens the store, sets up TLS, binds every listener (failing
//! at once, naming the config key, when one cannot be bound), restarts a
//! listener whose task panics, and on SIGTERM or SIGINT stops accepting,
//! lets sessions answer 421 and finish, then closes the store.

use crate::{admin, demo};
use mxrack_config::Config;
use mxrack_net::{Shutdown, ShutdownSignal};
use mxrack_smtp::{Mode, SmtpService};
use mxrack_store::Store;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{error, info, warn};

/// Pause before a crashed listener is started again.
const LISTENER_RESTART_DELAY_MS: u64 = 1_000;

pub fn run(config: Config) -> Result<(), String> {
    init_logging(&config.log.level);
    let data_dir = &config.appliance.data_dir;
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let store = Store::open(data_dir)
        .map_err(|e| format!("cannot open the store in {}: {e}", data_dir.display()))?;
    let demo_password = if config.appliance.demo {
        Some(demo::ensure(&store)?)
    } else {
        None
    };
    let tls = mxrack_net::load_or_create_tls(
        config.tls.cert.as_deref(),
        config.tls.key.as_deref(),
        data_dir,
        &config.appliance.hostname,
    )
    .map_err(|e| e.to_string())?;
    if tls.self_signed {
        info!(cert = %tls.cert_path.display(), "using a self-signed certificate");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mxrack")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let result = runtime.block_on(serve_all(
        config,
        store.clone(),
        tls.acceptor,
        demo_password,
    ));
    // Sessions still running after the grace period are dropped with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(1));
    store.shutdown();
    result
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

async fn bind(
    key: &str,
    addrs: &[SocketAddr],
) -> Result<Vec<(SocketAddr, Arc<TcpListener>)>, String> {
    let mut out = Vec::new();
    for addr in addrs {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} ({key}): {e}"))?;
        out.push((l.local_addr().unwrap_or(*addr), Arc::new(l)));
    }
    Ok(out)
}

async fn serve_all(
    config: Config,
    store: Arc<Store>,
    tls: tokio_rustls::TlsAcceptor,
    demo_password: Option<String>,
) -> Result<(), String> {
    let smtp = &config.smtp;
    let listeners = [
        (Mode::Mx, "smtp.mx", bind("smtp.mx", &smtp.mx).await?),
        (
            Mode::Submission,
            "smtp.submission",
            bind("smtp.submission", &smtp.submission).await?,
        ),
        (
            Mode::Submissions,
            "smtp.submissions",
            bind("smtp.submissions", &smtp.submissions).await?,
        ),
    ];
    let svc = Arc::new(SmtpService {
        hostname: config.appliance.hostname.clone(),
        primary_domain: config.appliance.primary_domain.clone(),
        limits: smtp.clone(),
        store: store.clone(),
        tls: Some(tls),
        auth_limiter: Arc::new(mxrack_net::AuthLimiter::new(
            smtp.auth_failures_max,
            Duration::from_secs(smtp.auth_failure_window_secs),
        )),
    });
    let sessions = Arc::new(Semaphore::new(smtp.max_connections));
    let shutdown = Shutdown::new();
    let mut ready = Vec::new();
    for (mode, key, bound) in listeners {
        for (addr, listener) in bound {
            ready.push(format!("{}={addr}", key.trim_start_matches("smtp.")));
            let (svc, sessions, signal) = (svc.clone(), sessions.clone(), shutdown.signal());
            spawn_supervised("smtp", shutdown.signal(), move || {
                mxrack_smtp::serve(
                    listener.clone(),
                    mode,
                    svc.clone(),
                    sessions.clone(),
                    signal.clone(),
                )
            });
        }
    }
    let admin_store = store.clone();
    let admin_signal = shutdown.signal();
    tokio::spawn(async move {
        if let Err(e) = admin::serve(admin_store, admin_signal).await {
            error!(error = %e, "admin socket failed; CLI changes need a restart");
        }
    });

    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "mxrack ready: {}", ready.join(" "));
    if let Some(password) = demo_password {
        let mx = smtp.mx.first().map(|a| a.to_string()).unwrap_or_default();
        let sub = smtp
            .submission
            .first()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let _ = writeln!(
            stdout,
            "demo mailbox: {mailbox}  password: {password}\n\
             send a test message:  swaks --server {mx} --to {mailbox}\n\
             submit as the demo:   swaks --server {sub} --tls --auth-user {mailbox} --auth-password {password} --from {mailbox} --to {mailbox}",
            mailbox = mxrack_config::DEMO_MAILBOX,
        );
    }
    let _ = stdout.flush();
    info!("ready");

    wait_for_stop_signal()
        .await
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    info!("stopping: no new connections, open sessions get 421");
    shutdown.trigger();
    let grace = Duration::from_secs(smtp.shutdown_grace_secs);
    let all = u32::try_from(smtp.max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout(grace, sessions.acquire_many(all)).await {
        Ok(_) => info!("all sessions ended"),
        Err(_) => warn!(
            "sessions still open after {}s; closing them",
            grace.as_secs()
        ),
    }
    Ok(())
}

/// Keeps one service task running: if it panics it is started again after
/// a pause (invariant 6), until shutdown. A task that returns is done.
pub fn spawn_supervised<F, Fut>(name: &'static str, signal: ShutdownSignal, make: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match tokio::spawn(make()).await {
                Ok(()) => return,
                Err(e) => {
                    error!(service = name, error = %e, "service task failed; restarting it");
                    if signal.is_triggered() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(LISTENER_RESTART_DELAY_MS)).await;
                }
            }
        }
    });
}

async fn wait_for_stop_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
