//! One SMTP session, generic over the stream (TCP, TLS, or an in-memory
//! duplex in tests). The session owns its `Conn`; STARTTLS swaps the stream
//! for a TLS one and resets the session state (RFC 3207 4.2).

use crate::data::{DataEvent, DataReader, DataRefusal};
use crate::incoming::{AuthCheck, MessageSink, Received, SinkError};
use crate::parser::{Command, MailParams, parse_command};
use crate::reply::Reply;
use crate::sasl::{self, Credentials, SaslError};
use mxrack_auth::{Protocol, Verdict};
use mxrack_mailauth::inbound::Envelope;
use mxrack_net::date::rfc5322_date;
use mxrack_net::{BoxStream, Conn, Deadlines, LineError, ShutdownSignal};
use mxrack_store::{DeliveryMeta, Resolution, Store, StoreError, id_hex};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

/// Longest AUTH continuation line (RFC 4954 4: at least 12288 octets).
const AUTH_LINE_BYTES_MAX: usize = 12_288 + 2;
/// What a DATA phase leases from the shared memory budget: the prefix kept
/// for the scorer and the store's write buffer.
const DATA_LEASE_BYTES: u64 =
    (crate::incoming::MESSAGE_PREFIX_BYTES + mxrack_store::INCOMING_CHUNK_BYTES) as u64;

/// Which port a session came in on; it decides what the session allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Port 25: mail for hosted domains from anyone, no AUTH.
    Mx,
    /// Port 587: STARTTLS, then AUTH, then mail to anywhere.
    Submission,
    /// Port 465: as submission, inside TLS from the first byte.
    Submissions,
}

impl Mode {
    fn is_submission(self) -> bool {
        matches!(self, Mode::Submission | Mode::Submissions)
    }
}

/// What every session of the SMTP service shares.
pub struct SmtpService {
    pub hostname: String,
    pub primary_domain: String,
    pub limits: mxrack_config::Smtp,
    pub store: Arc<Store>,
    pub tls: Option<TlsAcceptor>,
    /// The appliance's one authentication service (limiter and Argon2 pool).
    pub auth: Arc<mxrack_auth::AuthService>,
    /// The relay (queue runner, SRS) when outbound delivery is configured:
    /// forwarding rules, SRS bounces and waking the queue need it.
    pub outbound: Option<Arc<crate::forwarding::Outbound>>,
}

struct Transaction {
    from: String,
    params: MailParams,
    local: Vec<String>,
    /// Outside recipients the client named itself (authenticated
    /// submission, SRS bounces): relayed with the original sender.
    remote: Vec<String>,
    /// Outside addresses reached through a hosted alias: forwarded copies
    /// (SRS sender, forward gate, forward transport; see forwarding.rs).
    forwarded: Vec<String>,
    /// The addresses as the client gave them in RCPT (for the Received header).
    given: Vec<String>,
    /// A recipient is the complaint feedback address: the gate reads the message.
    feedback: bool,
    recipients: usize,
    commands: usize,
}

struct Session {
    svc: Arc<SmtpService>,
    mode: Mode,
    peer: SocketAddr,
    tls: bool,
    helo: Option<String>,
    esmtp: bool,
    user: Option<String>,
    tx: Option<Transaction>,
    bad_commands: usize,
    /// When the connection was accepted: the submission login phase
    /// (`login_timeout_secs`) runs from here to a successful AUTH.
    connected_at: Instant,
    /// Start of the envelope phase (`envelope_timeout_secs`): the greeting,
    /// then the end of each DATA phase.
    envelope_started: Instant,
}

/// What the loop does after a command.
enum Flow {
    Continue,
    Close,
    StartTls,
}

/// Runs one session to its end. Never panics on client input; I/O errors end
/// the session quietly.
pub async fn run_session(
    svc: Arc<SmtpService>,
    mode: Mode,
    stream: BoxStream,
    peer: SocketAddr,
    mut shutdown: ShutdownSignal,
) {
    let mut session = Session {
        svc: svc.clone(),
        mode,
        peer,
        tls: false,
        helo: None,
        esmtp: false,
        user: None,
        tx: None,
        bad_commands: 0,
        connected_at: Instant::now(),
        envelope_started: Instant::now(),
    };
    let mut conn = if mode == Mode::Submissions {
        match tls_handshake(&svc, stream).await {
            Some(c) => {
                session.tls = true;
                c
            }
            None => return,
        }
    } else {
        Conn::new(stream)
    };
    session.send(
        &mut conn,
        Reply::new(220, "", format!("{} ESMTP mxrack", svc.hostname)),
    );
    session.envelope_started = Instant::now();
    loop {
        // RFC 2920 3.2: replies to a pipelined group go out together, once
        // no further command is waiting in the buffer.
        if !conn.has_buffered_line() && conn.flush().await.is_err() {
            return;
        }
        let deadlines = session.deadlines();
        let line = tokio::select! {
            biased;
            _ = shutdown.wait() => {
                session.send(&mut conn, Reply::shutting_down(&svc.hostname));
                break;
            }
            r = conn.read_command_line(svc.limits.max_command_line_bytes, &deadlines) => r,
        };
        let line = match line {
            Ok(None) => {
                session.send(&mut conn, Reply::timeout(&svc.hostname));
                break;
            }
            Err(LineError::TooLong) => {
                session.send(&mut conn, Reply::line_too_long());
                if session.count_bad_command(&mut conn) {
                    break;
                }
                continue;
            }
            Err(_) => return,
            Ok(Some(line)) => line,
        };
        let text = trim_line_end(&line);
        let flow = match parse_command(text) {
            Ok(cmd) => session.handle(cmd, &mut conn).await,
            Err(e) => {
                session.send(&mut conn, e.into());
                if session.count_bad_command(&mut conn) {
                    Flow::Close
                } else {
                    Flow::Continue
                }
            }
        };
        match flow {
            Flow::Continue => {}
            Flow::Close => break,
            Flow::StartTls => {
                if conn.flush().await.is_err() {
                    return;
                }
                match tls_handshake(&svc, conn.into_stream()).await {
                    Some(c) => conn = c,
                    None => return,
                }
                // RFC 3207 4.2: forget everything learnt before TLS.
                session.tls = true;
                session.helo = None;
                session.esmtp = false;
                session.tx = None;
            }
        }
    }
    conn.shutdown().await;
}

async fn tls_handshake(svc: &SmtpService, stream: BoxStream) -> Option<Conn> {
    mxrack_net::accept_tls(svc.tls.as_ref(), stream, "smtp").await
}

/// Removes a refused or abandoned message's file before going on.
async fn discard(sink: Option<MessageSink>) {
    if let Some(sink) = sink {
        sink.discard().await;
    }
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn is_ascii(s: &str) -> bool {
    s.is_ascii()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An authenticated user may send as its own address or as an alias that
/// delivers to it, and as nobody else. Reads redb: blocking threads only.
fn sender_owned_by(store: &Store, from: &str, user: &str) -> bool {
    if from.eq_ignore_ascii_case(user) {
        return true;
    }
    match store.resolve_recipient(from) {
        Ok(Resolution::Deliver(r)) => r.local.iter().any(|m| m.eq_ignore_ascii_case(user)),
        _ => false,
    }
}

/// What the store says about one RCPT, gathered on a blocking thread.
struct RecipientLookup {
    resolved: Result<Resolution, StoreError>,
    /// The refusal when the sender's domain is blocked (for everyone, or by
    /// the account of one of the mailboxes it resolved to).
    blocked: Option<Reply>,
    /// For an address the store cannot hold: whether its domain is hosted.
    hosted: bool,
}

/// Resolves `target` and, when `from_domain` is given (mail from outside),
/// checks the block lists. Reads redb: blocking threads only.
fn recipient_lookup(
    store: &Store,
    target: &str,
    to: &str,
    from_domain: Option<&str>,
) -> RecipientLookup {
    let resolved = store.resolve_recipient(target);
    let blocked = match (&resolved, from_domain) {
        (Ok(Resolution::Deliver(r)), Some(domain)) => sender_blocked(store, domain, &r.local),
        _ => None,
    };
    let hosted = match &resolved {
        Err(StoreError::Invalid { .. }) => {
            let domain = to.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            store.is_hosted_domain(domain).unwrap_or(false)
        }
        _ => false,
    };
    RecipientLookup {
        resolved,
        blocked,
        hosted,
    }
}

/// Block lists apply to mail from outside, not to customers' own
/// submissions: the caller asks only for those.
fn sender_blocked(store: &Store, from_domain: &str, mailboxes: &[String]) -> Option<Reply> {
    if let Ok(Some(None)) = store.sender_blocked(from_domain, None) {
        return Some(Reply::new(
            550,
            "5.7.1",
            format!("Sender domain {from_domain} is blocked here"),
        ));
    }
    for m in mailboxes {
        let account = store.mailbox_get(m).ok().map(|r| r.account);
        if let Ok(Some(Some(_))) = store.sender_blocked(from_domain, account.as_deref()) {
            return Some(Reply::new(
                550,
                "5.7.1",
                format!("Sender domain {from_domain} is blocked by the recipient"),
            ));
        }
    }
    None
}

impl Session {
    /// The deadlines of the next command: the idle wait, the command line
    /// from its first byte, and the end of the current phase (the envelope;
    /// on submission before AUTH also the login phase).
    fn deadlines(&self) -> Deadlines {
        let limits = &self.svc.limits;
        let mut phase_end =
            self.envelope_started + Duration::from_secs(limits.envelope_timeout_secs);
        if self.mode.is_submission() && self.user.is_none() {
            phase_end =
                phase_end.min(self.connected_at + Duration::from_secs(limits.login_timeout_secs));
        }
        Deadlines {
            idle: Duration::from_secs(limits.idle_timeout_secs),
            command: Duration::from_secs(limits.command_timeout_secs),
            phase_end: Some(phase_end),
        }
    }

    fn send(&self, conn: &mut Conn, reply: Reply) {
        let mut out = Vec::with_capacity(64);
        reply.write_to(&mut out);
        conn.write(&out);
    }

    /// Counts a bad command; true when the session must close.
    fn count_bad_command(&mut self, conn: &mut Conn) -> bool {
        self.bad_commands += 1;
        if self.bad_commands >= self.svc.limits.max_bad_commands {
            self.send(conn, Reply::too_many_errors());
            return true;
        }
        false
    }

    fn ip(&self) -> IpAddr {
        self.peer.ip()
    }

    async fn handle(&mut self, cmd: Command, conn: &mut Conn) -> Flow {
        if let Some(tx) = self.tx.as_mut() {
            tx.commands += 1;
            if tx.commands > self.svc.limits.max_commands_per_transaction {
                self.send(conn, Reply::too_many_commands());
                return Flow::Close;
            }
        }
        let reply = match cmd {
            Command::Ehlo(name) => self.ehlo(name, true),
            Command::Helo(name) => self.ehlo(name, false),
            Command::Mail { from, params } => self.mail(from, params).await,
            Command::Rcpt { to } => self.rcpt(to).await,
            Command::Data => {
                let flow = self.data(conn).await;
                // A new envelope phase for the next message.
                self.envelope_started = Instant::now();
                return flow;
            }
            Command::Rset => {
                self.tx = None;
                Reply::ok()
            }
            Command::Noop => Reply::ok(),
            Command::Quit => {
                self.send(conn, Reply::bye(&self.svc.hostname));
                return Flow::Close;
            }
            Command::Vrfy => Reply::vrfy_disabled(),
            Command::Expn => Reply::expn_disabled(),
            Command::Help => Reply::help(),
            Command::StartTls => {
                if self.tls {
                    Reply::bad_sequence("TLS already active")
                } else if self.svc.tls.is_none() || self.mode == Mode::Submissions {
                    Reply::tls_unavailable()
                } else {
                    self.send(conn, Reply::ready_for_tls());
                    return Flow::StartTls;
                }
            }
            Command::Auth { mechanism, initial } => {
                match self.auth(conn, &mechanism, initial).await {
                    Some(reply) => reply,
                    None => return Flow::Close,
                }
            }
            Command::Foreign => {
                self.send(conn, Reply::foreign_protocol());
                return Flow::Close;
            }
        };
        self.send(conn, reply);
        Flow::Continue
    }

    fn ehlo(&mut self, name: String, esmtp: bool) -> Reply {
        self.helo = Some(name);
        self.esmtp = esmtp;
        self.tx = None;
        if !esmtp {
            return Reply::new(250, "", self.svc.hostname.clone());
        }
        let mut lines = vec![
            self.svc.hostname.clone(),
            "PIPELINING".to_string(),
            format!("SIZE {}", self.svc.limits.max_message_bytes),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if !self.tls && self.svc.tls.is_some() {
            lines.push("STARTTLS".into());
        }
        // RFC 4954 4: advertise only mechanisms the client may use now.
        if self.mode.is_submission()
            && self.user.is_none()
            && (self.tls || self.svc.limits.allow_plaintext_auth)
        {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        Reply::new(250, "", lines.join("\n"))
    }

    async fn mail(&mut self, from: String, params: MailParams) -> Reply {
        if self.helo.is_none() {
            return Reply::bad_sequence("send HELO/EHLO first");
        }
        if self.tx.is_some() {
            return Reply::bad_sequence("nested MAIL command");
        }
        if self.mode.is_submission() && self.user.is_none() {
            return if !self.tls && !self.svc.limits.allow_plaintext_auth {
                Reply::tls_required()
            } else {
                Reply::auth_required()
            };
        }
        if !is_ascii(&from) && !params.smtputf8 {
            return Reply::utf8_needs_smtputf8();
        }
        let max = self.svc.limits.max_message_bytes;
        if params.size.is_some_and(|s| s > max) {
            return Reply::message_too_big(max);
        }
        // The store's answers for this command, from one blocking thread:
        // statvfs and the alias lookup block (ARCHITECTURE: store calls
        // never run on async workers).
        let store = self.svc.store.clone();
        let owner = self
            .user
            .clone()
            .filter(|user| !from.is_empty() && !from.eq_ignore_ascii_case(user))
            .map(|user| (user, from.clone()));
        let looked = mxrack_store::spawn_blocking(move || {
            let space = store.free_space();
            let owned = owner.map(|(user, from)| sender_owned_by(&store, &from, &user));
            (space, owned)
        })
        .await;
        let (space, owned) = match looked {
            Ok(answers) => answers,
            Err(e) => {
                warn!(error = %e, "sender lookup task failed");
                return Reply::temporary_failure();
            }
        };
        // Refuse before the disk is full, never after: a 452 now costs the
        // sender a retry, a full disk later could cost a message.
        match space {
            Ok((bytes, inodes)) => {
                let needed = self.svc.limits.min_free_bytes + params.size.unwrap_or(0);
                if bytes < needed || inodes < 16 {
                    warn!(
                        free_bytes = bytes,
                        free_inodes = inodes,
                        "refusing mail: data file system nearly full"
                    );
                    return Reply::insufficient_storage();
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot read free space");
                return Reply::temporary_failure();
            }
        }
        // The health monitor closes the intake gate before the data file
        // system is full (health.space_refuse_*) and opens it again once
        // space is back: 452 4.3.1, the sender retries later (issue 6).
        if let Some(reason) = self.svc.store.intake_refusal() {
            warn!(%reason, "refusing mail: the health monitor stopped new mail");
            return Reply::insufficient_storage();
        }
        // Invariant "an authenticated user sends only as itself". The null
        // sender is let through here and judged at the end of DATA: only a
        // delivery, disposition or feedback report may use it.
        if owned == Some(false) {
            return Reply::sender_not_owned();
        }
        self.tx = Some(Transaction {
            from,
            params,
            local: Vec::new(),
            remote: Vec::new(),
            forwarded: Vec::new(),
            given: Vec::new(),
            feedback: false,
            recipients: 0,
            commands: 0,
        });
        Reply::sender_ok()
    }

    async fn rcpt(&mut self, to: String) -> Reply {
        let max_recipients = self.svc.limits.max_recipients;
        let authenticated = self.user.is_some();
        let Some(tx) = self.tx.as_mut() else {
            return Reply::bad_sequence("need MAIL before RCPT");
        };
        let tx_from_domain = tx
            .from
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        if tx.recipients >= max_recipients {
            return Reply::too_many_recipients();
        }
        if !is_ascii(&to) && !tx.params.smtputf8 {
            return Reply::utf8_needs_smtputf8();
        }
        let to = if to == "postmaster" {
            format!("postmaster@{}", self.svc.primary_domain)
        } else {
            to
        };
        // A bounce coming back to a forwarded message's SRS address goes on
        // to the original sender, whoever sends it: the address carries its
        // own authorisation (an HMAC and a date).
        if let Some(fb) = self
            .svc
            .outbound
            .as_ref()
            .and_then(|o| o.feedback_address.as_ref())
            && to.eq_ignore_ascii_case(fb)
        {
            tx.feedback = true;
            tx.given.push(to);
            tx.recipients += 1;
            return Reply::recipient_ok();
        }
        let mut srs_route = false;
        let mut target = to.clone();
        if let Some(out) = &self.svc.outbound {
            match out.reverse_srs(&to) {
                crate::forwarding::SrsCheck::NotSrs => {}
                crate::forwarding::SrsCheck::Original(orig) => {
                    srs_route = true;
                    target = orig;
                }
                crate::forwarding::SrsCheck::Invalid => {
                    return Reply::new(550, "5.1.1", "Invalid or expired SRS address");
                }
            }
        }
        // The recipient's lookups (alias expansion, block lists, hosted
        // domains: redb reads) on one blocking thread.
        let store = self.svc.store.clone();
        let check_blocks = !authenticated && !tx_from_domain.is_empty();
        let (lookup_target, lookup_to) = (target.clone(), to.clone());
        let looked = mxrack_store::spawn_blocking(move || {
            recipient_lookup(
                &store,
                &lookup_target,
                &lookup_to,
                check_blocks.then_some(tx_from_domain.as_str()),
            )
        })
        .await;
        let RecipientLookup {
            resolved,
            blocked,
            hosted,
        } = match looked {
            Ok(lookup) => lookup,
            Err(e) => {
                warn!(error = %e, "recipient lookup task failed");
                return Reply::temporary_failure();
            }
        };
        match resolved {
            Ok(Resolution::Deliver(r)) => {
                if let Some(reply) = blocked {
                    return reply;
                }
                for m in r.local {
                    if !tx.local.contains(&m) {
                        tx.local.push(m);
                    }
                }
                // An alias pointing outside is a forward, whoever sends.
                for a in r.remote {
                    if !tx.forwarded.contains(&a) {
                        tx.forwarded.push(a);
                    }
                }
            }
            Ok(Resolution::UnknownUser) => return Reply::unknown_user(),
            // Invariant 2 (no open relay): other domains only for authenticated
            // users, and for verified SRS bounce addresses.
            Ok(Resolution::NotHosted) if authenticated || srs_route => {
                if !tx.remote.contains(&target) {
                    tx.remote.push(target.clone());
                }
            }
            Ok(Resolution::NotHosted) => return Reply::relay_denied(),
            // Valid SMTP syntax the store cannot hold as a mailbox name
            // (quoted local part, address literal): a permanent answer,
            // never a 4xx the sender would retry for days.
            Err(StoreError::Invalid { .. }) => {
                if hosted {
                    return Reply::unknown_user();
                }
                if !authenticated {
                    return Reply::relay_denied();
                }
                if !tx.remote.contains(&to) {
                    tx.remote.push(to.clone());
                }
            }
            Err(e) => {
                warn!(error = %e, "recipient lookup failed");
                return Reply::temporary_failure();
            }
        }
        tx.given.push(to);
        tx.recipients += 1;
        Reply::recipient_ok()
    }

    fn protocol_name(&self) -> &'static str {
        // RFC 3848 protocol types for the Received "with" clause.
        match (self.esmtp, self.tls, self.user.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        }
    }

    fn trace_headers(&self, tx: &Transaction, id: &str) -> Vec<u8> {
        let helo = self.helo.as_deref().unwrap_or("unknown");
        // "for" names the address the client gave, and only when there was
        // one: with several, it would tell each recipient about the others.
        let for_clause = if tx.given.len() == 1 {
            format!("\r\n\tfor <{}>", tx.given[0])
        } else {
            String::new()
        };
        format!(
            "Return-Path: <{}>\r\nReceived: from {helo} ([{}])\r\n\tby {} (mxrack) with {} id {id}{for_clause};\r\n\t{}\r\n",
            tx.from,
            self.ip(),
            self.svc.hostname,
            self.protocol_name(),
            rfc5322_date(unix_now()),
        )
        .into_bytes()
    }

    async fn data(&mut self, conn: &mut Conn) -> Flow {
        match &self.tx {
            None => {
                self.send(conn, Reply::bad_sequence("need MAIL before DATA"));
                return Flow::Continue;
            }
            Some(tx) if tx.recipients == 0 => {
                self.send(conn, Reply::bad_sequence("need RCPT before DATA"));
                return Flow::Continue;
            }
            Some(_) => {}
        }
        let Some(tx) = self.tx.take() else {
            return Flow::Continue;
        };
        // The whole DATA phase, from the DATA command to the final dot, must
        // fit in `data_timeout_secs`, however the message trickles in.
        let deadline = Instant::now() + Duration::from_secs(self.svc.limits.data_timeout_secs);
        // The shared memory budget (issue 10): the scorer's prefix and the
        // store's write buffer are leased for the whole DATA phase; when
        // client data in flight has spent the budget, DATA gets a 451 before
        // a byte of the message is read.
        let Some(_lease) = mxrack_net::budget::global().lease(DATA_LEASE_BYTES).await else {
            warn!(client = %self.peer, "DATA refused: the memory budget for client data is spent");
            self.send(conn, Reply::server_busy());
            return Flow::Continue;
        };
        let store = self.svc.store.clone();
        let id = store.next_id();
        let id_text = id_hex(id);
        let headers = self.trace_headers(&tx, &id_text);
        let limit = self.svc.limits.max_message_bytes + headers.len() as u64;
        let mut reader = DataReader::new(limit, headers.len() as u64);
        // The message goes to its file as it arrives (issue 10): memory per
        // session is the line buffers, the scorer's prefix and the store's
        // write buffer, whatever the message's size.
        let file = match store.begin_message(id).await {
            Ok(file) => file,
            Err(e) => {
                warn!(queue_id = %id_text, client = %self.peer, error = %e, "cannot start a message file");
                self.send(conn, Reply::from(&e));
                return Flow::Continue;
            }
        };
        // Inbound mail is scored; customers' own submissions are not (the
        // score would travel to the outside world with their mail).
        let scorer = self
            .svc
            .outbound
            .as_ref()
            .and_then(|out| out.scorer.clone())
            .filter(|_| self.user.is_none())
            .map(|scorer| (scorer, tx.from.clone()));
        // Authentication-Results (RFC 8601): the MX checks SPF, DKIM and
        // DMARC within the DATA deadline; a submission says who logged in.
        let auth = self
            .svc
            .outbound
            .as_ref()
            .and_then(|out| out.mail_auth.clone())
            .map(|inbound| match &self.user {
                Some(user) => AuthCheck::Fixed(inbound.submission_header(user)),
                None => AuthCheck::Check {
                    inbound,
                    envelope: Envelope {
                        ip: self.ip(),
                        helo: self.helo.clone().unwrap_or_default(),
                        mail_from: tx.from.clone(),
                    },
                    deadline,
                },
            });
        let hop = mxrack_filter::relays::Relay::hop(
            self.ip(),
            self.helo.as_deref().unwrap_or(""),
            &self.svc.hostname,
            &id_text,
        );
        let mut sink = Some(MessageSink::new(file, headers, scorer, auth).with_hop(hop));
        self.send(conn, Reply::start_data());
        if conn.flush().await.is_err() {
            return Flow::Close;
        }
        let mut out = Vec::new();
        loop {
            // A line longer than max_data_line_bytes comes in pieces and is
            // stored as it is (never bounced, as Postfix); the message size
            // limit still holds.
            match timeout_at(
                deadline,
                conn.read_line_piece(self.svc.limits.max_data_line_bytes),
            )
            .await
            {
                Err(_) => {
                    discard(sink).await;
                    self.send(conn, Reply::timeout(&self.svc.hostname));
                    return Flow::Close;
                }
                Ok(Err(_)) => {
                    // The client went away mid-DATA: nothing of it stays.
                    discard(sink).await;
                    return Flow::Close;
                }
                Ok(Ok((piece, false))) => reader.feed_piece(&piece, &mut out),
                Ok(Ok((line, true))) => {
                    if reader.feed(&line, &mut out) == DataEvent::End {
                        break;
                    }
                }
            }
            if reader.discarding() {
                // Too big or not trustworthy: the file goes now; DATA is
                // read (and dropped) to its end.
                discard(sink.take()).await;
            } else if let Some(sink) = sink.as_mut()
                && !out.is_empty()
            {
                sink.push(&out).await;
            }
            out.clear();
        }
        if reader.saw_bare_newline() {
            warn!(client = %self.peer, "bare LF/CR in DATA: message refused");
            self.send(conn, Reply::bare_newline());
            return Flow::Close;
        }
        if let Err(DataRefusal::TooBig) = reader.finish() {
            self.send(
                conn,
                Reply::message_too_big(self.svc.limits.max_message_bytes),
            );
            return Flow::Continue;
        }
        let received = match sink {
            Some(sink) => sink.finish().await,
            None => Err(SinkError::Store(StoreError::Closed)),
        };
        let Received {
            file,
            prefix,
            score,
        } = match received {
            Ok(r) => r,
            Err(e) => {
                match &e {
                    SinkError::NotScored(_) => {
                        warn!(queue_id = %id_text, client = %self.peer, error = %e, "scorer busy: message not taken, sender to try again")
                    }
                    SinkError::Store(_) => {
                        warn!(queue_id = %id_text, client = %self.peer, error = %e, "message not written, not acknowledged")
                    }
                }
                self.send(conn, Reply::from(&e));
                return Flow::Continue;
            }
        };
        let size = file.len();
        // A null sender from a user only for reports (DSN, MDN, ARF): the
        // top-level Content-Type is in the prefix.
        if self.user.is_some()
            && tx.from.is_empty()
            && mxrack_filter::report::null_sender_report_type(&prefix).is_none()
        {
            warn!(client = %self.peer, user = self.user.as_deref().unwrap_or(""), "null sender refused: not a DSN, MDN or ARF report");
            file.discard().await;
            self.send(conn, Reply::null_sender_not_report());
            return Flow::Continue;
        }
        // Forwarding rules and complaint reports read the prefix only.
        let message_id = crate::forwarding::message_id(&prefix);
        if let Some(out) = &self.svc.outbound
            && tx.feedback
            && let Some(gate) = out.gate.clone()
        {
            match mxrack_store::spawn_blocking(move || gate.record_complaint(&prefix)).await {
                Ok(Ok(outcome)) => {
                    info!(queue_id = %id_text, kind = ?outcome.kind, destination = ?outcome.destination, "complaint report received")
                }
                Ok(Err(e)) => {
                    warn!(queue_id = %id_text, error = %e, "complaint report not understood")
                }
                Err(e) => {
                    warn!(queue_id = %id_text, error = %e, "complaint report task failed")
                }
            }
        }
        let (local_list, copies) = match &self.svc.outbound {
            Some(out) => {
                match out
                    .plan(
                        &store,
                        &tx.from,
                        tx.local,
                        tx.forwarded,
                        score,
                        message_id.as_deref(),
                    )
                    .await
                {
                    Ok(plan) => plan,
                    Err(e) => {
                        warn!(queue_id = %id_text, client = %self.peer, error = %e, "message not planned, not acknowledged");
                        file.discard().await;
                        self.send(conn, Reply::from(&e));
                        return Flow::Continue;
                    }
                }
            }
            // No relay (in-memory tests): still the forward transport, never
            // the original sender's relay entry.
            None => {
                let copies = tx
                    .forwarded
                    .into_iter()
                    .map(|to| mxrack_store::QueuedCopy {
                        id: store.next_id(),
                        mail_from: tx.from.clone(),
                        recipients: vec![to],
                        transport: "forward".into(),
                        prepend: String::new(),
                        hold: None,
                    })
                    .collect();
                (tx.local, copies)
            }
        };
        let (local, remote, forwards) = (local_list.len(), tx.remote.len(), copies.len());
        let queued = remote + forwards > 0;
        if local + remote + forwards == 0 {
            // No copy at all: a forwarding rule without a local copy whose
            // targets do not exist here (skipped, logged by the plan). A
            // copy the gate discards is not this case: it is queued held.
            info!(queue_id = %id_text, client = %self.peer, from = %tx.from, size, "accepted; no mailbox and no forward target to deliver to");
            file.discard().await;
            self.send(conn, Reply::queued(&id_text));
            return Flow::Continue;
        }
        let delivery = DeliveryMeta {
            mail_from: tx.from.clone(),
            local: local_list,
            remote: tx.remote,
            copies,
        };
        // Acknowledged means durable: the 250 goes out only after the store
        // made the message durable (file, directory and metadata committed).
        let reply = match store.deliver_incoming(file, delivery).await {
            Ok(()) => {
                info!(
                    queue_id = %id_text, client = %self.peer, from = %tx.from, local, remote, forwards, size,
                    user = self.user.as_deref().unwrap_or(""), "accepted"
                );
                if queued && let Some(out) = &self.svc.outbound {
                    out.relay.wake();
                }
                Reply::queued(&id_text)
            }
            Err(e) => {
                warn!(queue_id = %id_text, client = %self.peer, error = %e, "delivery failed, not acknowledged");
                Reply::from(&e)
            }
        };
        self.send(conn, reply);
        Flow::Continue
    }

    /// AUTH (RFC 4954). `None` means the session must close.
    async fn auth(
        &mut self,
        conn: &mut Conn,
        mechanism: &str,
        initial: Option<String>,
    ) -> Option<Reply> {
        if !self.mode.is_submission() {
            return Some(Reply::new(
                502,
                "5.5.1",
                "AUTH is not available on this port",
            ));
        }
        if self.user.is_some() {
            return Some(Reply::already_authenticated());
        }
        if !self.tls && !self.svc.limits.allow_plaintext_auth {
            // Invariant 4: credentials cross the wire only inside TLS.
            return Some(Reply::tls_required());
        }
        if self.helo.is_none() || self.tx.is_some() {
            return Some(Reply::bad_sequence("AUTH goes after EHLO and before MAIL"));
        }
        let creds = match mechanism {
            "PLAIN" => {
                let response = match initial {
                    Some(r) => r,
                    None => match self.challenge(conn, "").await {
                        Ok(r) => r,
                        Err(reply) => return reply,
                    },
                };
                sasl::decode_base64(&response).and_then(|m| sasl::decode_plain(&m))
            }
            "LOGIN" => {
                let user = match initial {
                    Some(r) => r,
                    None => match self.challenge(conn, "Username:").await {
                        Ok(r) => r,
                        Err(reply) => return reply,
                    },
                };
                match sasl::decode_base64(&user) {
                    Ok(u) => {
                        let pass = match self.challenge(conn, "Password:").await {
                            Ok(r) => r,
                            Err(reply) => return reply,
                        };
                        sasl::decode_base64(&pass).and_then(|p| {
                            match (String::from_utf8(u), String::from_utf8(p)) {
                                (Ok(username), Ok(password)) if !username.is_empty() => {
                                    Ok(Credentials { username, password })
                                }
                                _ => Err(SaslError::Malformed),
                            }
                        })
                    }
                    Err(e) => Err(e),
                }
            }
            _ => return Some(Reply::auth_mechanism_unknown()),
        };
        let creds = match creds {
            Ok(c) => c,
            Err(SaslError::Cancelled) => return Some(Reply::auth_cancelled()),
            Err(SaslError::Malformed) => {
                return Some(Reply::new(501, "5.5.2", "Cannot decode AUTH response"));
            }
        };
        let username = creds.username.to_lowercase();
        let store = self.svc.store.clone();
        let user_for_check = username.clone();
        let verdict = self
            .svc
            .auth
            .check(Protocol::Smtp, self.ip(), &username, move || {
                mxrack_store::spawn_blocking(move || {
                    store.verify_password(&user_for_check, &creds.password)
                })
            })
            .await;
        match verdict {
            Verdict::Accepted => {
                info!(client = %self.peer, user = %username, "authenticated");
                self.user = Some(username);
                Some(Reply::auth_ok())
            }
            Verdict::Rejected => {
                warn!(client = %self.peer, user = %username, "authentication failed");
                Some(Reply::auth_failed())
            }
            Verdict::Limited(_) => Some(Reply::auth_rate_limited()),
            Verdict::Unavailable => Some(Reply::auth_unavailable()),
        }
    }

    /// Sends a 334 challenge and reads the client's answer line. `Err(None)`:
    /// the session ends; `Err(Some(reply))`: the exchange ends with that reply.
    async fn challenge(&mut self, conn: &mut Conn, prompt: &str) -> Result<String, Option<Reply>> {
        self.send(
            conn,
            Reply::new(334, "", sasl::encode_base64(prompt.as_bytes())),
        );
        conn.flush().await.map_err(|_| None)?;
        // The answer is a command line under the same deadlines (the login
        // phase goes on while a challenge waits).
        match conn
            .read_command_line(AUTH_LINE_BYTES_MAX, &self.deadlines())
            .await
        {
            Ok(Some(line)) => String::from_utf8(trim_line_end(&line).to_vec())
                .map_err(|_| Some(Reply::new(501, "5.5.2", "Cannot decode AUTH response"))),
            Ok(None) => {
                self.send(conn, Reply::timeout(&self.svc.hostname));
                Err(None)
            }
            // RFC 4954 4: 500 5.5.6 for an authentication line that is too long.
            Err(LineError::TooLong) => Err(Some(Reply::new(
                500,
                "5.5.6",
                "Authentication Exchange line is too long",
            ))),
            Err(_) => Err(None),
        }
    }
}
