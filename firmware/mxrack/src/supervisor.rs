//! `mxrack run`: opens the store, sets up TLS, binds every listener (failing
//! at once, naming the config key, when one cannot be bound), restarts a
//! listener whose task panics, and on SIGTERM or SIGINT stops accepting,
//! lets sessions answer 421 and finish, then closes the store.

use crate::{admin, demo};
use mxrack_config::Config;
use mxrack_net::{Pool, Shutdown, ShutdownSignal};
use mxrack_smtp::{Mode, SmtpService};
use mxrack_store::Store;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{error, info, warn};

/// How often the adaptive forward policy checks for a complete day.
const FORWARD_POLICY_INTERVAL: Duration = Duration::from_secs(3600);
/// Pause before a crashed listener is started again.
const LISTENER_RESTART_DELAY_MS: u64 = 1_000;

/// Message files that no record named were moved to `lost+found/` at open
/// (issue 12): an incident on the status page, so an operator looks.
fn record_lost_found(store: &Store, events_max: u64) {
    let n = store.opened_lost_found();
    if n == 0 {
        return;
    }
    let event = mxrack_store::NewEvent {
        time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        severity: mxrack_store::Severity::Warning,
        component: "store".into(),
        text: format!(
            "{n} message files without a record were moved to {}/lost+found at start \
             (nothing was deleted; `mxrack reconstruct` puts back those whose own record names a mailbox)",
            store.data_dir().display()
        ),
        incident: mxrack_store::IncidentAction::Open {
            key: "store:lost+found".into(),
            title: "Message files in lost+found".into(),
        },
    };
    if let Err(e) = store.event_record(&event, events_max) {
        warn!(error = %e, "cannot record the lost+found event");
    }
}

/// How often the outbound queue's length is recorded (a week of samples is
/// `mxrack_store::QUEUE_SAMPLES_KEPT`).
const QUEUE_SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

pub fn run(config: Config) -> Result<(), String> {
    init_logging(&config.log.level);
    let data_dir = &config.appliance.data_dir.clone();
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    // Before the store opens: folders 0700, files 0600 (a data folder from
    // an older version, a restored backup or a careless chmod).
    let repaired = mxrack_net::perms::repair(data_dir)
        .map_err(|e| format!("cannot check the modes in {}: {e}", data_dir.display()))?;
    for w in &repaired {
        warn!(path = %w.path.display(), found = format!("{:04o}", w.found), expected = format!("{:04o}", w.expected), "file mode repaired");
    }
    let store = Store::open(data_dir)
        .map_err(|e| format!("cannot open the store in {}: {e}", data_dir.display()))?;
    record_lost_found(&store, config.health.events_max);
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
        // Parsing user messages (mail-parser, HTML rendering, charsets) runs
        // on these threads; the MIME walk bounds its depth, and 8 MiB (not
        // tokio's 2 MiB) leaves room to spare. Only touched pages cost memory.
        .thread_stack_size(8 * 1024 * 1024)
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
    let _ = std::fs::remove_file(admin::socket_path(data_dir));
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
    let imap = &config.imap;
    let imap_listeners = [
        (
            mxrack_imap::Mode::Plain,
            "imap.imap",
            bind("imap.imap", &imap.imap).await?,
        ),
        (
            mxrack_imap::Mode::Tls,
            "imap.imaps",
            bind("imap.imaps", &imap.imaps).await?,
        ),
    ];
    let pop3 = &config.pop3;
    let pop3_listeners = [
        (
            mxrack_pop3::Mode::Pop3,
            "pop3.pop3",
            bind("pop3.pop3", &pop3.pop3).await?,
        ),
        (
            mxrack_pop3::Mode::Pop3s,
            "pop3.pop3s",
            bind("pop3.pop3s", &pop3.pop3s).await?,
        ),
    ];
    // The one memory budget for client data in flight, before any listener
    // serves a byte.
    mxrack_net::budget::configure(
        config.memory.client_data_bytes,
        std::time::Duration::from_secs(config.memory.wait_secs),
    );
    // The one DNS resolver (relay MX lookups, SPF/DKIM/DMARC), `[dns]`.
    let resolver = mxrack_mailauth::dns::resolver(&config.dns)?;
    let authserv_id = config
        .mail_auth
        .authserv_id
        .clone()
        .unwrap_or_else(|| config.appliance.hostname.clone());
    let relay = build_relay(&config, store.clone(), &resolver, &authserv_id)?;
    let mail_auth = config.mail_auth.verify_inbound.then(|| {
        Arc::new(
            mxrack_mailauth::Inbound::new(resolver.clone(), authserv_id.clone(), &config.mail_auth)
                .with_negative_ttl(std::time::Duration::from_secs(config.dns.negative_ttl_secs)),
        )
    });
    let scorer = Arc::new(
        mxrack_filter::Scorer::from_config(&config.spam, store.clone())
            .map_err(|e| format!("[spam] rules: {e}"))?,
    );
    {
        let relay = relay.clone();
        let _ = admin::QUEUE_WAKE.set(Box::new(move || relay.wake()));
    }
    let gate = Arc::new(mxrack_filter::ForwardGate::new(
        store.clone(),
        config.forward.clone(),
    ));
    // The one authentication service: every protocol's logins share its
    // limiter and its Argon2 pool.
    let auth = Arc::new(mxrack_auth::AuthService::new(config.auth.clone()));
    let svc = Arc::new(SmtpService {
        outbound: Some(Arc::new(mxrack_smtp::forwarding::Outbound {
            relay: relay.clone(),
            scorer: Some(scorer.clone()),
            gate: Some(gate.clone()),
            feedback_address: config.forward.feedback_address.clone(),
            mail_auth: mail_auth.clone(),
        })),
        hostname: config.appliance.hostname.clone(),
        primary_domain: config.appliance.primary_domain.clone(),
        limits: smtp.clone(),
        store: store.clone(),
        tls: Some(tls.clone()),
        auth: auth.clone(),
    });
    // One pool per kind of listener (mx, submission, ...): a flood on one
    // port never takes the places of another. All drained at shutdown.
    let mut drains: Vec<Arc<Pool>> = Vec::new();
    let shutdown = Shutdown::new();
    let mut ready = Vec::new();
    for (mode, key, bound) in listeners {
        let pool = Pool::new(smtp.max_connections, smtp.max_connections_per_client);
        drains.push(pool.clone());
        for (addr, listener) in bound {
            ready.push(format!("{}={addr}", key.trim_start_matches("smtp.")));
            let (svc, sessions, signal) = (svc.clone(), pool.clone(), shutdown.signal());
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
    let imap_svc = Arc::new(mxrack_imap::ImapService {
        scorer: Some(scorer.clone()),
        hostname: config.appliance.hostname.clone(),
        limits: imap.clone(),
        store: store.clone(),
        tls: Some(tls.clone()),
        auth: auth.clone(),
    });
    for (mode, key, bound) in imap_listeners {
        let imap_sessions = Pool::new(imap.max_connections, imap.max_connections_per_client);
        drains.push(imap_sessions.clone());
        for (addr, listener) in bound {
            ready.push(format!("{}={addr}", key.trim_start_matches("imap.")));
            let (svc, sessions, signal) =
                (imap_svc.clone(), imap_sessions.clone(), shutdown.signal());
            spawn_supervised("imap", shutdown.signal(), move || {
                mxrack_imap::serve(
                    listener.clone(),
                    mode,
                    svc.clone(),
                    sessions.clone(),
                    signal.clone(),
                )
            });
        }
    }
    let pop3_svc = Arc::new(mxrack_pop3::Pop3Service::new(
        config.appliance.hostname.clone(),
        pop3.clone(),
        store.clone(),
        Some(tls.clone()),
        auth.clone(),
    ));
    for (mode, key, bound) in pop3_listeners {
        let pop3_sessions = Pool::new(pop3.max_connections, pop3.max_connections_per_client);
        drains.push(pop3_sessions.clone());
        for (addr, listener) in bound {
            ready.push(format!("{}={addr}", key.trim_start_matches("pop3.")));
            let (svc, sessions, signal) =
                (pop3_svc.clone(), pop3_sessions.clone(), shutdown.signal());
            spawn_supervised("pop3", shutdown.signal(), move || {
                mxrack_pop3::serve(
                    listener.clone(),
                    mode,
                    svc.clone(),
                    sessions.clone(),
                    signal.clone(),
                )
            });
        }
    }
    // LDAP address books (issue 4): StartTLS on ldap.ldap, LDAPS on ldap.ldaps.
    let ldap = &config.ldap;
    let ldap_svc = Arc::new(mxrack_ldap::LdapService::new(
        ldap.clone(),
        &config.appliance.primary_domain,
        store.clone(),
        Some(tls.clone()),
        auth.clone(),
    ));
    for (mode, key, addrs) in [
        (mxrack_ldap::Mode::StartTls, "ldap.ldap", &ldap.ldap),
        (mxrack_ldap::Mode::Ldaps, "ldap.ldaps", &ldap.ldaps),
    ] {
        let ldap_sessions = Pool::new(ldap.max_connections, ldap.max_connections_per_client);
        drains.push(ldap_sessions.clone());
        for (addr, listener) in bind(key, addrs).await? {
            ready.push(format!("{}={addr}", key.trim_start_matches("ldap.")));
            let (svc, sessions, signal) =
                (ldap_svc.clone(), ldap_sessions.clone(), shutdown.signal());
            spawn_supervised("ldap", shutdown.signal(), move || {
                mxrack_ldap::serve(
                    listener.clone(),
                    mode,
                    svc.clone(),
                    sessions.clone(),
                    signal.clone(),
                )
            });
        }
    }
    // The health monitor and the web port (issue 6): status page, its JSON
    // and Atom forms, metrics over HTTPS; plain HTTP redirects to HTTPS.
    let health = if config.health.enabled {
        let (handle, task) = mxrack_health::start(&config, store.clone())?;
        crate::health_cli::set_running(handle.clone(), &config.appliance.hostname);
        spawn_supervised("health", shutdown.signal(), move || task.clone().run());
        Some(handle)
    } else {
        None
    };
    let web = &config.web;
    let web_http = bind("web.http", &web.http).await?;
    let web_https = bind("web.https", &web.https).await?;
    let web_svc = Arc::new(mxrack_web::WebService {
        hostname: config.appliance.hostname.clone(),
        store: store.clone(),
        health: health.clone(),
        https_port: config
            .web
            .public_https_port
            .unwrap_or_else(|| web_https.first().map_or(443, |(a, _)| a.port())),
        limits: web.clone(),
        tls: Some(tls.clone()),
        auth: Some(auth.clone()),
        manager: web.manager.then(|| {
            let admin_store = store.clone();
            let admin: mxrack_manager::AdminFn = Arc::new(move |v| {
                let request: crate::admin::AdminRequest =
                    serde_json::from_value(v).map_err(|e| format!("bad request: {e}"))?;
                crate::admin::execute(&admin_store, &request)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            });
            mxrack_manager::Manager::new(
                store.clone(),
                auth.clone(),
                admin,
                health.clone(),
                mxrack_manager::Site {
                    config_text: config.to_toml_shown(),
                    hostname: config.appliance.hostname.clone(),
                    ldap_base: ldap_svc.base_dn(),
                    book_limits: (ldap.max_entries_per_book, ldap.max_book_bytes),
                },
            )
        }),
        dav: web.carddav.then(|| {
            Arc::new(mxrack_dav::DavService::new(
                store.clone(),
                auth.clone(),
                config.ldap.clone(),
                std::time::Duration::from_secs(web.request_timeout_secs),
            ))
        }),
    });
    for (mode, key, bound) in [
        (mxrack_web::Mode::Redirect, "web.http", web_http),
        (mxrack_web::Mode::Https, "web.https", web_https),
    ] {
        let web_sessions = Pool::new(web.max_connections, web.max_connections_per_client);
        drains.push(web_sessions.clone());
        for (addr, listener) in bound {
            ready.push(format!("{}={addr}", key.trim_start_matches("web.")));
            let (svc, sessions, signal) =
                (web_svc.clone(), web_sessions.clone(), shutdown.signal());
            spawn_supervised("web", shutdown.signal(), move || {
                mxrack_web::serve(
                    listener.clone(),
                    mode,
                    svc.clone(),
                    sessions.clone(),
                    signal.clone(),
                )
            });
        }
    }
    // The admin socket listens and the stop signals are caught before
    // "ready" is printed: a CLI call or a SIGTERM right after it must work.
    {
        // The adaptive forward policy looks at each complete day once: at
        // start and then every hour (evaluating a day again changes nothing).
        let (gate, mut signal) = (gate.clone(), shutdown.signal());
        tokio::spawn(async move {
            loop {
                let g = gate.clone();
                match mxrack_store::spawn_blocking(move || g.evaluate_due()).await {
                    Ok(Ok(changes)) => {
                        for c in changes {
                            info!(change = ?c, "forward threshold changed");
                        }
                    }
                    Ok(Err(e)) => warn!(error = %e, "forward policy evaluation failed"),
                    Err(e) => warn!(error = %e, "forward policy task failed"),
                }
                tokio::select! {
                    _ = signal.wait() => return,
                    _ = tokio::time::sleep(FORWARD_POLICY_INTERVAL) => {}
                }
            }
        });
    }
    if config.relay.enabled {
        let (relay, signal) = (relay.clone(), shutdown.signal());
        spawn_supervised("relay", shutdown.signal(), move || {
            relay.clone().run(signal.clone())
        });
    } else {
        info!("relay.enabled = false: outbound mail waits in the queue");
    }
    // The queue's length every 5 minutes, for the Manager's chart.
    {
        let (store, mut signal) = (store.clone(), shutdown.signal());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(QUEUE_SAMPLE_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = signal.wait() => break,
                }
                let store = store.clone();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                match mxrack_store::spawn_blocking(move || store.queue_sample(now)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => warn!(error = %e, "queue sample not recorded"),
                    Err(_) => {}
                }
            }
        });
    }
    let admin_listener = admin::bind(store.data_dir()).map_err(|e| {
        format!(
            "cannot create the admin socket in {}: {e}",
            store.data_dir().display()
        )
    })?;
    let admin_store = store.clone();
    let admin_signal = shutdown.signal();
    tokio::spawn(async move {
        if let Err(e) = admin::serve(admin_listener, admin_store, admin_signal).await {
            error!(error = %e, "admin socket failed; CLI changes need a restart");
        }
    });
    let stop = stop_signals().map_err(|e| format!("cannot install signal handlers: {e}"))?;

    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "mxrack ready: {}", ready.join(" "));
    // The hints carry the demo password: only for a person at a terminal,
    // never into a log or the appliance's console (its supervisor reads
    // this output through a pipe).
    if let Some(password) = demo_password.filter(|_| stdout.is_terminal()) {
        // A wildcard bind address is no address to connect to: the hints
        // name the machine's outward address (or loopback).
        let ifaces = mxrack_health::doctor::interfaces();
        let connect = |a: &std::net::SocketAddr| {
            mxrack_health::doctor::connect_address(*a, &ifaces).to_string()
        };
        let mx = smtp.mx.first().map(connect).unwrap_or_default();
        let sub = smtp.submission.first().map(connect).unwrap_or_default();
        let _ = writeln!(
            stdout,
            "demo mailbox: {mailbox}  password: {password}\n\
             send a test message:  swaks --server {mx} --to {mailbox}\n\
             submit as the demo:   swaks --server {sub} --tls --auth-user {mailbox} --auth-password {password} --from {mailbox} --to {mailbox}",
            mailbox = mxrack_config::DEMO_MAILBOX,
        );
        if let Some(addr) = imap.imap.first().map(connect) {
            let _ = writeln!(
                stdout,
                "read it over IMAP:    curl -k --ssl-reqd 'imap://{addr}/INBOX;UID=1' -u {mailbox}:{password}",
                mailbox = mxrack_config::DEMO_MAILBOX,
            );
        }
        if let Some(addr) = pop3.pop3.first().map(connect) {
            let _ = writeln!(
                stdout,
                "read it over POP3:    curl -k --ssl-reqd pop3://{addr}/1 -u {mailbox}:{password}",
                mailbox = mxrack_config::DEMO_MAILBOX,
            );
        }
        if let Some(addr) = config.web.https.first() {
            let _ = writeln!(
                stdout,
                "status page:          https://{addr}/status   (mxrack status, mxrack disks, mxrack doctor)"
            );
        }
        if let Some(addr) = config.web.https.first()
            && config.web.carddav
        {
            let _ = writeln!(
                stdout,
                "contacts (CardDAV):   curl -k -u {mailbox}:{password} -X PROPFIND -H 'Depth: 1' https://{addr}/dav/books/{mailbox}/",
                mailbox = mxrack_config::DEMO_MAILBOX,
            );
        }
        if let Some(addr) = ldap.ldap.first() {
            let _ = writeln!(
                stdout,
                "LDAP address book:    mxrack ldap passwd {mailbox}   then   \
                 LDAPTLS_REQCERT=never ldapsearch -H ldap://{addr} -ZZ -x -D cn={mailbox},ou=auth,{base} -W -b ou={mailbox},ou=ab,{base}",
                mailbox = mxrack_config::DEMO_MAILBOX,
                base = ldap_svc.base_dn(),
            );
        }
    }
    let _ = stdout.flush();
    info!("ready");
    // The self-check, from outside, once everything listens: each failure
    // is logged and becomes an incident on the status page.
    if config.health.self_check_at_start {
        let (config, store) = (config.clone(), store.clone());
        tokio::spawn(async move {
            mxrack_health::doctor::run_at_start(&config, store).await;
        });
    }

    wait_for_stop_signal(stop).await;
    if let Some(h) = &health {
        h.stop();
    }
    info!("stopping: no new connections, open sessions get 421");
    shutdown.trigger();
    let grace = Duration::from_secs(smtp.shutdown_grace_secs);
    if drain_sessions(&drains, grace).await {
        info!("all sessions ended");
    } else {
        warn!(
            "sessions still open after {}s; closing them",
            grace.as_secs()
        );
    }
    Ok(())
}

/// Waits until every pool's sessions have ended (each has all
/// its permits back), for at most `grace` over all of them. False when
/// sessions are still open at the deadline.
async fn drain_sessions(drains: &[Arc<Pool>], grace: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + grace;
    for pool in drains {
        if !pool.drained_by(deadline).await {
            return false;
        }
    }
    true
}

/// The SRS secret: the configured one, else one generated once and kept in
/// `DATA/srs-secret` (mode 0600), so forwarding works out of the box and
/// bounce addresses stay valid across restarts.
fn srs_secret(config: &Config) -> Result<String, String> {
    if !config.forward.srs_secret.is_empty() {
        return Ok(config.forward.srs_secret.clone());
    }
    let path = config.appliance.data_dir.join("srs-secret");
    if let Ok(s) = std::fs::read_to_string(&path)
        && s.trim().len() >= 16
    {
        return Ok(s.trim().to_string());
    }
    use rand::Rng;
    let secret: String = rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    mxrack_net::write_durably(&path, secret.as_bytes(), 0o600)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(secret)
}

/// The queue runner with its transports: "outbound" for customers' mail
/// and bounces, "forward" for forwarded copies (own source address and
/// EHLO, as the seed's forwarding-only servers).
fn build_relay(
    config: &Config,
    store: Arc<Store>,
    resolver: &mxrack_mailauth::hickory_resolver::TokioResolver,
    authserv_id: &str,
) -> Result<Arc<mxrack_relay::Relay>, String> {
    let r = &config.relay;
    let tls = mxrack_relay::opportunistic_tls()?;
    let client = |source, ehlo: &Option<String>| mxrack_relay::ClientConfig {
        ehlo: ehlo
            .clone()
            .unwrap_or_else(|| config.appliance.hostname.clone()),
        source,
        connect_timeout: Duration::from_secs(r.connect_timeout_secs),
        command_timeout: Duration::from_secs(r.command_timeout_secs),
        data_timeout: Duration::from_secs(r.data_timeout_secs),
        tls: Some(tls.clone()),
        require_tls: r.require_tls,
    };
    let mut transports = std::collections::HashMap::new();
    transports.insert("outbound".to_string(), client(r.source_address, &r.ehlo));
    transports.insert("bounce".to_string(), client(r.source_address, &r.ehlo));
    transports.insert(
        "forward".to_string(),
        client(config.forward.source_address, &config.forward.ehlo),
    );
    let srs_domain = config
        .forward
        .srs_domain
        .clone()
        .unwrap_or_else(|| config.appliance.primary_domain.clone());
    let srs = mxrack_relay::Srs::new(&srs_secret(config)?, &srs_domain);
    let runner = mxrack_relay::RunnerConfig {
        hostname: config.appliance.hostname.clone(),
        interval: Duration::from_secs(r.queue_interval_secs),
        retry_base: Duration::from_secs(r.retry_base_secs),
        retry_max: Duration::from_secs(r.retry_max_secs),
        max_age: Duration::from_secs(r.max_age_secs),
        per_destination: r.per_destination_concurrency,
        total: r.total_concurrency,
        connection_cache: Duration::from_secs(r.connection_cache_secs),
    };
    let routes = r
        .routes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let smarthost_auth = match (&r.smarthost_username, &r.smarthost_password) {
        (Some(username), Some(password)) => Some(mxrack_relay::Credentials {
            username: username.clone(),
            password: password.clone(),
        }),
        _ => None,
    };
    let mut router = mxrack_relay::Router::new(routes, r.smarthost.clone(), smarthost_auth)
        .with_resolver(resolver.clone());
    if r.mta_sts {
        let verified = mxrack_relay::verified_tls(r.tls_trust_file.as_deref())
            .map_err(|e| format!("relay.tls_trust_file: {e}"))?;
        router = router.with_mta_sts(Arc::new(mxrack_relay::StsResolver::new(
            resolver.clone(),
            verified,
            Duration::from_secs(config.dns.negative_ttl_secs),
        )));
    }
    if r.dane {
        let (dns, opts) = mxrack_mailauth::dns::resolver_parts(&config.dns)?;
        let anchors = match &config.dns.trust_anchor_file {
            Some(path) => Some(
                mxrack_relay::dane::read_trust_anchors(path)
                    .map_err(|e| format!("dns.trust_anchor_file {}: {e}", path.display()))?,
            ),
            None => None,
        };
        // A DANE host of a domain with an enforced MTA-STS policy must
        // pass the policy's certificate check too.
        let webpki = if r.mta_sts {
            Some(
                mxrack_relay::webpki_verifier(r.tls_trust_file.as_deref())
                    .map_err(|e| format!("relay.tls_trust_file: {e}"))?,
            )
        } else {
            None
        };
        router = router.with_dane(
            mxrack_relay::dnssec::Validator::new(&dns, &opts, anchors),
            webpki,
        );
    }
    let mut relay = mxrack_relay::Relay::new(store, runner, router, transports, Some(srs));
    if config.mail_auth.sign_outbound {
        relay = relay.with_sign_hook(Arc::new(mxrack_mailauth::Signer::new(
            mxrack_mailauth::KeyStore::new(&config.appliance.data_dir),
            resolver.clone(),
            authserv_id.to_string(),
            config.appliance.primary_domain.clone(),
            Duration::from_secs(config.mail_auth.check_timeout_secs),
        )));
    }
    Ok(Arc::new(relay))
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

/// SIGTERM and SIGINT handlers, installed (so the default "die" action is
/// replaced) before the appliance reports ready.
fn stop_signals() -> std::io::Result<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)> {
    use tokio::signal::unix::{SignalKind, signal};
    Ok((
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    ))
}

async fn wait_for_stop_signal(
    (mut term, mut int): (tokio::signal::unix::Signal, tokio::signal::unix::Signal),
) {
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    /// The budget a process gets without `[memory]` (tests, tools) is the
    /// embedded default's.
    #[test]
    fn memory_budget_defaults_agree() {
        let d = mxrack_config::Memory::default();
        assert_eq!(d.client_data_bytes, mxrack_net::budget::DEFAULT_BYTES);
        assert_eq!(d.wait_secs, mxrack_net::budget::DEFAULT_WAIT_SECS);
    }
}
