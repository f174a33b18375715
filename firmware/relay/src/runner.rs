//! The queue runner: picks due queue entries, delivers them by their
//! transport, and updates the queue: delivered and failed recipients leave
//! the entry, deferred ones wait with exponential backoff and jitter, and an
//! entry older than the maximum age bounces. Failures bounce once, as one
//! DSN to the original sender (the SRS address reversed for forwards).
//!
//! Sessions are shared: a session that delivered a message waits in the
//! pool (`SessionPool`) up to `connection_cache` for the next message to the
//! same destination and transport, so a burst to one destination goes over
//! a few sessions (at most `per_destination` at once), not one per message.

use crate::client::{self, ClientConfig, RcptOutcome, Session};
use crate::dane::{self, HostDane};
use crate::dsn;
use crate::route::{Destination, RouteError, Router, TlsLevel};
use crate::srs::Srs;
use mxrack_net::ShutdownSignal;
use mxrack_store::{Delivery, Id, QueueEntry, Resolution, Store, id_hex};
use rand::Rng;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};
use tracing::{info, warn};

/// Entries started in one pass; the rest wait for the next pass.
const ENTRIES_PER_PASS_MAX: usize = 10_000;
/// Servers tried per domain in one attempt.
const SERVERS_TRIED_MAX: usize = 3;
/// How often idle sessions past `connection_cache` are closed.
const POOL_SWEEP_INTERVAL: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::without_return_path;

    #[test]
    fn the_return_path_header_does_not_travel() {
        assert_eq!(
            without_return_path(b"Return-Path: <a@b.example>\r\nReceived: x\r\n\r\nhi\r\n"),
            b"Received: x\r\n\r\nhi\r\n"
        );
        assert_eq!(
            without_return_path(b"return-path:\r\n <a@b>\r\nSubject: s\r\n"),
            b"Subject: s\r\n"
        );
        assert_eq!(without_return_path(b"Subject: s\r\n"), b"Subject: s\r\n");
    }
}

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub hostname: String,
    pub interval: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub max_age: Duration,
    pub per_destination: usize,
    pub total: usize,
    /// How long an idle session waits for the next message to its
    /// destination (Postfix: smtp_connection_cache_time_limit, 2 s); zero:
    /// one message per session.
    pub connection_cache: Duration,
}

/// Which sessions may carry a message: same transport (source address,
/// EHLO name, TLS policy) and same destination (route, smarthost or MX
/// host set).
type PoolKey = (String, String);

/// Idle sessions by destination, each with the time it became idle.
#[derive(Default)]
struct SessionPool {
    idle: Mutex<HashMap<PoolKey, Vec<(Session, Instant)>>>,
}

impl SessionPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Vec<(Session, Instant)>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle session for `key`, if any is still
    /// within `keep` (older ones are left for the sweep).
    fn take(&self, key: &PoolKey, keep: Duration) -> Option<Session> {
        let mut idle = self.lock();
        let list = idle.get_mut(key)?;
        while let Some((session, since)) = list.pop() {
            if since.elapsed() < keep && session.reusable() {
                return Some(session);
            }
            tokio::spawn(session.quit());
        }
        None
    }

    /// Keeps a session for the next message, or closes it: when reuse is
    /// off, the session is spent, or `cap` sessions already wait.
    fn put(&self, key: PoolKey, session: Session, keep: Duration, cap: usize) {
        if keep.is_zero() || !session.reusable() {
            tokio::spawn(session.quit());
            return;
        }
        let mut idle = self.lock();
        let list = idle.entry(key).or_default();
        if list.len() >= cap {
            drop(idle);
            tokio::spawn(session.quit());
            return;
        }
        list.push((session, Instant::now()));
    }

    /// Closes the sessions idle for `keep` or more (all with a zero `keep`).
    fn sweep(&self, keep: Duration) {
        let mut expired = Vec::new();
        {
            let mut idle = self.lock();
            for list in idle.values_mut() {
                let mut i = 0;
                while i < list.len() {
                    if keep.is_zero() || list[i].1.elapsed() >= keep {
                        expired.push(list.swap_remove(i).0);
                    } else {
                        i += 1;
                    }
                }
            }
            idle.retain(|_, l| !l.is_empty());
        }
        for session in expired {
            tokio::spawn(session.quit());
        }
    }
}

/// Counters for metrics and `mxrack queue stats`.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub delivered: AtomicU64,
    pub deferred: AtomicU64,
    pub failed: AtomicU64,
    pub bounces: AtomicU64,
    /// SMTP sessions opened, and messages sent over a session that had
    /// carried one before.
    pub sessions: AtomicU64,
    pub reused: AtomicU64,
}

pub struct Relay {
    store: Arc<Store>,
    config: RunnerConfig,
    router: Router,
    /// Client settings per transport name ("outbound", "forward", ...).
    transports: HashMap<String, ClientConfig>,
    srs: Option<Srs>,
    /// DKIM/ARC signing of each copy sent (`with_sign_hook`).
    sign_hook: Option<Arc<dyn crate::sign::SignHook>>,
    wake: Notify,
    in_flight: Mutex<HashSet<Id>>,
    per_destination: Mutex<HashMap<String, Arc<Semaphore>>>,
    total: Arc<Semaphore>,
    pool: SessionPool,
    pub stats: RelayStats,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn domain_of(addr: &str) -> String {
    addr.rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default()
}

async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, mxrack_store::StoreError> + Send + 'static,
) -> Result<T, mxrack_store::StoreError> {
    let store = store.clone();
    mxrack_store::spawn_blocking(move || f(&store))
        .await
        .unwrap_or_else(|e| {
            Err(mxrack_store::StoreError::Db(format!(
                "relay task failed: {e}"
            )))
        })
}

/// The stored message without its leading Return-Path header: that header
/// records the envelope at final delivery and must not travel (RFC 5321
/// 4.4: a message in transit SHOULD NOT carry one).
pub fn without_return_path(body: &[u8]) -> &[u8] {
    if body.len() < 12 || !body[..12].eq_ignore_ascii_case(b"Return-Path:") {
        return body;
    }
    let mut pos = 0;
    while let Some(i) = body[pos..].iter().position(|&b| b == b'\n') {
        pos += i + 1;
        // A folded continuation line starts with white space.
        if !matches!(body.get(pos), Some(b' ') | Some(b'\t')) {
            return &body[pos..];
        }
    }
    body
}

impl Relay {
    pub fn new(
        store: Arc<Store>,
        config: RunnerConfig,
        router: Router,
        transports: HashMap<String, ClientConfig>,
        srs: Option<Srs>,
    ) -> Relay {
        let total = Arc::new(Semaphore::new(config.total.max(1)));
        Relay {
            store,
            config,
            router,
            transports,
            srs,
            sign_hook: None,
            wake: Notify::new(),
            in_flight: Mutex::new(HashSet::new()),
            per_destination: Mutex::new(HashMap::new()),
            total,
            pool: SessionPool::default(),
            stats: RelayStats::default(),
        }
    }

    /// Signs every copy sent with `hook` (mxrack-mailauth's DKIM and ARC).
    pub fn with_sign_hook(mut self, hook: Arc<dyn crate::sign::SignHook>) -> Relay {
        self.sign_hook = Some(hook);
        self
    }

    /// New mail is queued (or an operator flushed): run a pass now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn srs(&self) -> Option<&Srs> {
        self.srs.as_ref()
    }

    /// Runs passes until shutdown; entries being delivered at shutdown stay
    /// in the queue (a delivery is removed only after the server's 250).
    pub async fn run(self: Arc<Self>, mut shutdown: ShutdownSignal) {
        let mut sweep = tokio::time::interval(POOL_SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_pass = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_pass {
                self.clone().pass().await;
                next_pass = tokio::time::Instant::now() + self.config.interval;
            }
            tokio::select! {
                _ = shutdown.wait() => {
                    self.pool.sweep(Duration::ZERO);
                    return;
                }
                _ = self.wake.notified() => next_pass = tokio::time::Instant::now(),
                _ = sweep.tick() => self.pool.sweep(self.config.connection_cache),
                _ = tokio::time::sleep_until(next_pass) => {}
            }
        }
    }

    /// Starts every due entry not already in flight.
    pub async fn pass(self: Arc<Self>) {
        let entries = match blocking(&self.store, |s| s.queue_list()).await {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "cannot read the queue");
                return;
            }
        };
        let now = now_secs();
        // Held copies past their retention (the forward gate's, after
        // `forward.discard_keep_days`) are removed here, each logged with
        // its reason: the one way a gate-held copy leaves without release.
        if entries
            .iter()
            .any(|e| e.held && e.expires.is_some_and(|t| t <= now))
        {
            match blocking(&self.store, move |s| s.queue_expire(now)).await {
                Ok(gone) => {
                    for e in gone {
                        info!(
                            queue_id = %id_hex(e.id),
                            to = %e.recipients.join(","),
                            mailbox = e.origin_mailbox.as_deref().unwrap_or(""),
                            reason = e.hold_reason.as_deref().unwrap_or(""),
                            "held copy expired (forward.discard_keep_days); removed"
                        );
                    }
                }
                Err(e) => warn!(error = %e, "cannot remove expired held copies"),
            }
        }
        let mut started = 0;
        for entry in entries {
            if entry.held || entry.next_attempt > now || started >= ENTRIES_PER_PASS_MAX {
                continue;
            }
            {
                let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
                if !in_flight.insert(entry.id) {
                    continue;
                }
            }
            started += 1;
            let relay = self.clone();
            tokio::spawn(async move {
                let id = entry.id;
                relay.process(entry).await;
                relay
                    .in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            });
        }
    }

    fn destination_permits(&self, domain: &str) -> Arc<Semaphore> {
        let mut map = self
            .per_destination
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.entry(domain.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.per_destination.max(1))))
            .clone()
    }

    async fn process(&self, entry: QueueEntry) {
        // The pass's snapshot may be stale: another task may have delivered
        // and removed this entry, or an operator held it, since it was read.
        // What counts is the entry as it is now, read after our in-flight
        // mark was set.
        let id = entry.id;
        let entry = match blocking(&self.store, move |s| s.queue_get(id)).await {
            Ok(e) if !e.held => e,
            _ => return,
        };
        let qid = id_hex(entry.id);
        // The message is read whole and sent: leased from the shared memory
        // budget (issue 10) while it is. When the budget is spent the entry
        // stays due and is taken again at the next pass; no attempt counts.
        let Some(_lease) = mxrack_net::budget::global().lease(entry.size).await else {
            warn!(queue_id = %qid, "memory budget for client data spent; the message waits for the next pass");
            return;
        };
        let blob = entry.blob;
        let body = match blocking(&self.store, move |s| s.read_blob(blob)).await {
            Ok(b) => b,
            Err(e) => {
                warn!(queue_id = %qid, error = %e, "cannot read the message; will retry");
                self.defer(entry, &e.to_string(), &[]).await;
                return;
            }
        };
        let Some(client) = self
            .transports
            .get(&entry.transport)
            .or_else(|| self.transports.get("outbound"))
        else {
            warn!(queue_id = %qid, transport = %entry.transport, "no such transport");
            return;
        };
        // Signed at send time, over the bytes that go out (ARCHITECTURE.md,
        // "mxrack-mailauth"): the signature headers come first.
        let prepend = match &self.sign_hook {
            Some(hook) => {
                let out = crate::sign::Outgoing {
                    transport: &entry.transport,
                    mail_from: &entry.mail_from,
                    message: without_return_path(&body),
                };
                format!("{}{}", hook.headers(out).await, entry.prepend)
            }
            None => entry.prepend.clone(),
        };
        let mut by_domain: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &entry.recipients {
            by_domain.entry(domain_of(r)).or_default().push(r.clone());
        }
        let mut outcomes: Vec<(String, RcptOutcome)> = Vec::new();
        // Recipients of domains with one destination (a smarthost, shared
        // MX hosts) go together, in one transaction.
        let mut groups: Vec<(Destination, Vec<String>)> = Vec::new();
        for (domain, rcpts) in by_domain {
            match self.router.destination(&domain).await {
                Err(RouteError::Permanent(why)) => {
                    outcomes.extend(client::all(&rcpts, RcptOutcome::Failed(why.clone())))
                }
                Err(RouteError::Temporary(why)) => {
                    outcomes.extend(client::all(&rcpts, RcptOutcome::Deferred(why.clone())))
                }
                Ok(dest) => match groups.iter_mut().find(|(d, _)| d.key == dest.key) {
                    Some((_, group)) => group.extend(rcpts),
                    None => groups.push((dest, rcpts)),
                },
            }
        }
        for (dest, rcpts) in groups {
            let permits = self.destination_permits(&dest.key);
            let (Ok(_dest), Ok(_all)) = (
                permits.acquire_owned().await,
                self.total.clone().acquire_owned().await,
            ) else {
                return;
            };
            let key = (entry.transport.clone(), dest.key.clone());
            outcomes.extend(
                self.deliver_to(
                    key,
                    client,
                    &dest,
                    &entry.mail_from,
                    rcpts,
                    prepend.as_bytes(),
                    without_return_path(&body),
                )
                .await,
            );
        }
        self.settle(entry, outcomes, &body).await;
    }

    /// One message to one destination: over an idle session of the pool
    /// when there is one, else (and for recipients still deferred) over a
    /// new session to each server in turn. A session that is still good
    /// goes back to the pool.
    #[allow(clippy::too_many_arguments)]
    async fn deliver_to(
        &self,
        key: PoolKey,
        client: &ClientConfig,
        dest: &Destination,
        mail_from: &str,
        rcpts: Vec<String>,
        prepend: &[u8],
        body: &[u8],
    ) -> Vec<(String, RcptOutcome)> {
        // An enforced MTA-STS policy: STARTTLS with a certificate valid for
        // the MX host's name, or nothing is sent (RFC 8461 4.2).
        let verified;
        let client = match (dest.tls, self.router.verified_tls()) {
            (TlsLevel::Verified, Some(tls)) => {
                verified = ClientConfig {
                    tls: Some(tls),
                    require_tls: true,
                    ..client.clone()
                };
                &verified
            }
            (TlsLevel::Verified, None) => {
                return client::all(
                    &rcpts,
                    RcptOutcome::Deferred("verified TLS needed but not configured".into()),
                );
            }
            (TlsLevel::Opportunistic, _) => client,
        };
        let keep = self.config.connection_cache;
        let cap = self.config.per_destination.max(1);
        let mut outcomes = Vec::new();
        let mut pending = rcpts;
        let mut last: Vec<(String, RcptOutcome)> = Vec::new();
        // An idle session first. If it turns out dead (the server closed
        // it meanwhile), its recipients are deferred and tried again below
        // over new sessions.
        enum Via<'a> {
            Cached(Session),
            Fresh(&'a crate::route::Server),
        }
        // A server that answered over a cached session is not asked again
        // in this attempt; one whose cached session broke (likely closed
        // while idle) is, over a new session.
        let mut answered: Option<std::net::SocketAddr> = None;
        let cached = self.pool.take(&key, keep).map(Via::Cached);
        let fresh = dest.servers.iter().take(SERVERS_TRIED_MAX).map(Via::Fresh);
        for via in cached.into_iter().chain(fresh) {
            let mut session = match via {
                Via::Cached(session) => {
                    self.stats.reused.fetch_add(1, Ordering::Relaxed);
                    session
                }
                Via::Fresh(server) if answered == Some(server.addr) => continue,
                Via::Fresh(server) => {
                    // DANE (RFC 7672) for this host: its TLSA records
                    // decide, and an enforced MTA-STS policy's check must
                    // pass as well (RFC 8461 2).
                    let dane_client;
                    let client = match &server.dane {
                        HostDane::None => client,
                        HostDane::Required(tlsa) => match dane::tls_config(
                            tlsa,
                            (dest.tls == TlsLevel::Verified)
                                .then(|| self.router.policy_webpki())
                                .flatten(),
                        ) {
                            Ok(tls) => {
                                dane_client = ClientConfig {
                                    tls: Some(tls),
                                    require_tls: true,
                                    ..client.clone()
                                };
                                &dane_client
                            }
                            Err(why) => {
                                last = client::all(&pending, RcptOutcome::Deferred(why));
                                continue;
                            }
                        },
                    };
                    match Session::open(server.addr, &server.name, client, dest.auth.as_ref()).await
                    {
                        Ok(session) => {
                            self.stats.sessions.fetch_add(1, Ordering::Relaxed);
                            session
                        }
                        Err(outcome) => {
                            last = client::all(&pending, outcome);
                            if last
                                .first()
                                .is_some_and(|(_, o)| matches!(o, RcptOutcome::Failed(_)))
                            {
                                outcomes.append(&mut last);
                                break;
                            }
                            continue;
                        }
                    }
                }
            };
            let results = session.send(mail_from, &pending, prepend, body).await;
            if !session.broken() {
                answered = Some(session.server());
            }
            self.pool.put(key.clone(), session, keep, cap);
            // Deferred recipients may do better at the next server.
            let (deferred, settled): (Vec<_>, Vec<_>) = results
                .into_iter()
                .partition(|(_, o)| matches!(o, RcptOutcome::Deferred(_)));
            outcomes.extend(settled);
            pending = deferred.iter().map(|(r, _)| r.clone()).collect();
            last = deferred;
            if pending.is_empty() {
                break;
            }
        }
        outcomes.extend(last);
        outcomes
    }

    async fn settle(&self, entry: QueueEntry, outcomes: Vec<(String, RcptOutcome)>, body: &[u8]) {
        let qid = id_hex(entry.id);
        let mut failures = Vec::new();
        let mut deferred = Vec::new();
        for (rcpt, outcome) in outcomes {
            match outcome {
                RcptOutcome::Delivered => {
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    info!(queue_id = %qid, to = %rcpt, transport = %entry.transport, "delivered");
                }
                RcptOutcome::Failed(why) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    warn!(queue_id = %qid, to = %rcpt, reason = %why, "failed permanently");
                    let (remote, diagnostic) = dsn::split_reason(&why);
                    failures.push(dsn::Failure {
                        status: dsn::status_of(&why, true),
                        recipient: rcpt,
                        remote,
                        diagnostic,
                    });
                }
                RcptOutcome::Deferred(why) => {
                    self.stats.deferred.fetch_add(1, Ordering::Relaxed);
                    info!(queue_id = %qid, to = %rcpt, reason = %why, attempts = entry.attempts + 1, "deferred");
                    deferred.push((rcpt, why));
                }
            }
        }
        let expired = now_secs() - entry.created > self.config.max_age.as_secs() as i64;
        if expired {
            for (rcpt, why) in deferred.drain(..) {
                let diagnostic = format!("gave up after {} attempts: {why}", entry.attempts + 1);
                let (remote, _) = dsn::split_reason(&why);
                failures.push(dsn::Failure {
                    status: dsn::status_of(&why, true),
                    recipient: rcpt,
                    remote,
                    diagnostic,
                });
            }
        }
        if !failures.is_empty() {
            self.bounce(&entry, &failures, body).await;
        }
        if deferred.is_empty() {
            let id = entry.id;
            if let Err(e) = blocking(&self.store, move |s| s.queue_remove(id)).await {
                warn!(queue_id = %qid, error = %e, "cannot remove the queue entry");
            }
        } else {
            let why = deferred.last().map(|(_, w)| w.clone()).unwrap_or_default();
            // Keep the recipients in the order the entry had them.
            let mut rcpts: Vec<String> = deferred.into_iter().map(|(r, _)| r).collect();
            rcpts.sort_by_key(|r| {
                entry
                    .recipients
                    .iter()
                    .position(|x| x == r)
                    .unwrap_or(usize::MAX)
            });
            self.defer(entry, &why, &rcpts).await;
        }
    }

    /// Keeps `rcpts` (all when empty) for a later attempt.
    async fn defer(&self, entry: QueueEntry, why: &str, rcpts: &[String]) {
        // Update the entry as stored now, so a hold an operator gave during
        // the attempt is kept.
        let id = entry.id;
        let mut entry = match blocking(&self.store, move |s| s.queue_get(id)).await {
            Ok(fresh) => fresh,
            Err(_) => return,
        };
        if !rcpts.is_empty() {
            entry.recipients = rcpts.to_vec();
        }
        entry.attempts += 1;
        entry.last_error = Some(why.to_string());
        entry.next_attempt = now_secs() + self.backoff(entry.attempts).as_secs() as i64;
        let qid = id_hex(entry.id);
        if let Err(e) = blocking(&self.store, move |s| s.queue_update(&entry)).await {
            warn!(queue_id = %qid, error = %e, "cannot update the queue entry");
        }
    }

    /// retry_base * 2^(attempts-1), capped, with +-20% jitter so retries of
    /// many messages to one destination do not come in one burst.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let base = self.config.retry_base.as_secs_f64();
        let exp = base * 2f64.powi(attempts.saturating_sub(1).min(30) as i32);
        let capped = exp.min(self.config.retry_max.as_secs_f64());
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        Duration::from_secs_f64((capped * jitter).max(1.0))
    }

    /// One DSN for the failed recipients, to the original sender. No DSN for
    /// a bounce (null sender), so two systems never bounce at each other.
    async fn bounce(&self, entry: &QueueEntry, failures: &[dsn::Failure], body: &[u8]) {
        if entry.mail_from.is_empty() {
            return;
        }
        let to = match &self.srs {
            Some(srs) => srs
                .reverse(&entry.mail_from)
                .unwrap_or_else(|_| entry.mail_from.clone()),
            None => entry.mail_from.clone(),
        };
        let id = self.store.next_id();
        let unique = id_hex(id);
        let mut original = entry.prepend.as_bytes().to_vec();
        original.extend_from_slice(body);
        let date = mxrack_net::date::rfc5322_date(now_secs());
        // Stored like any delivered message: the null reverse-path (RFC 5321
        // 4.5.5) as Return-Path, and our trace header (the Return-Path is
        // dropped again if the DSN has to travel).
        let mut message = format!(
            "Return-Path: <>\r\nReceived: by {} (mxrack) id {unique};\r\n\t{date}\r\n",
            self.config.hostname
        )
        .into_bytes();
        message.extend(dsn::build(
            &self.config.hostname,
            &to,
            failures,
            &original,
            &date,
            &unique,
        ));
        let target = to.clone();
        let resolution = blocking(&self.store, move |s| s.resolve_recipient(&target)).await;
        let (local, remote) = match resolution {
            Ok(Resolution::Deliver(r)) => (r.local, r.remote),
            Ok(Resolution::NotHosted) | Err(_) => (vec![], vec![to.clone()]),
            Ok(Resolution::UnknownUser) => {
                warn!(to = %to, "bounce recipient does not exist here; bounce dropped");
                return;
            }
        };
        let delivery = Delivery {
            mail_from: String::new(),
            local,
            remote,
            body: message,
            copies: vec![],
        };
        match self.store.deliver(delivery, id).await {
            Ok(()) => {
                self.stats.bounces.fetch_add(1, Ordering::Relaxed);
                info!(queue_id = %unique, original = %id_hex(entry.id), to = %to, "bounce (DSN) queued");
                self.wake();
            }
            Err(e) => warn!(error = %e, to = %to, "cannot store the bounce"),
        }
    }
}
