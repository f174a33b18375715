//! One POP3 session (RFC 1939), generic over the stream (TCP, TLS, or an
//! in-memory duplex in tests). The session owns its `Conn`; STLS swaps the
//! stream for a TLS one and forgets what the client said before (RFC 2595 4).
//!
//! States: AUTHORIZATION (USER/PASS, AUTH, STLS), then TRANSACTION on a
//! snapshot of the INBOX taken at login, with the maildrop locked; DELE
//! only marks. Only QUIT in TRANSACTION enters UPDATE and removes the marked
//! messages (RFC 1939 6); a dropped connection, an idle timeout or a
//! shutdown removes nothing (RFC 1939 3).

use crate::lock::{MaildropLock, MaildropLocks};
use crate::parser::{
    CREDENTIALS_LINE_BYTES_MAX, Command, Secret, line_limit_for, parse_command, trim_line_end,
};
use crate::reply::{DotStuffer, Reply, message_top, write_multiline};
use crate::sasl::{self, SaslError};
use mxrack_net::{BoxStream, Conn, Deadlines, LineError, ShutdownSignal};
use mxrack_store::{INBOX, MessageMeta, Store, StoreError};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

/// How long the last reply may take to leave when the session closes.
const CLOSE_TIMEOUT_SECS: u64 = 10;
/// A message goes out in pieces of this size, so a large RETR does not
/// double the message in memory and every piece has its own deadline.
const SEND_CHUNK_BYTES: usize = 64 * 1024;

/// Which port a session came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Port 110: plain, STLS before credentials.
    Pop3,
    /// Port 995: inside TLS from the first byte.
    Pop3s,
}

/// What every session of the POP3 service shares.
pub struct Pop3Service {
    pub hostname: String,
    pub limits: mxrack_config::Pop3,
    pub store: Arc<Store>,
    pub tls: Option<TlsAcceptor>,
    /// The appliance's one authentication service (limiter and Argon2 pool).
    pub auth: Arc<mxrack_auth::AuthService>,
    pub locks: MaildropLocks,
}

impl Pop3Service {
    /// A service with its own maildrop locks, asking `auth` to check logins.
    pub fn new(
        hostname: String,
        limits: mxrack_config::Pop3,
        store: Arc<Store>,
        tls: Option<TlsAcceptor>,
        auth: Arc<mxrack_auth::AuthService>,
    ) -> Pop3Service {
        Pop3Service {
            hostname,
            limits,
            store,
            tls,
            auth,
            locks: MaildropLocks::default(),
        }
    }
}

/// The INBOX as it was at login, with the marks of DELE.
struct Maildrop {
    mailbox: String,
    uidvalidity: u32,
    messages: Vec<MessageMeta>,
    deleted: Vec<bool>,
    /// Released when the maildrop is dropped (QUIT, disconnect, panic).
    _lock: MaildropLock,
}

impl Maildrop {
    /// The message numbered `msg` (1-based) unless it is marked deleted.
    fn get(&self, msg: u32) -> Result<&MessageMeta, Reply> {
        let i = usize::try_from(msg)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .filter(|&i| i < self.messages.len())
            .ok_or_else(Reply::no_such_message)?;
        if self.deleted[i] {
            return Err(Reply::already_deleted(i + 1));
        }
        Ok(&self.messages[i])
    }

    /// Messages not marked deleted, with their numbers.
    fn live(&self) -> impl Iterator<Item = (usize, &MessageMeta)> {
        self.messages
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted[*i])
            .map(|(i, m)| (i + 1, m))
    }

    fn totals(&self) -> (usize, u64) {
        self.live()
            .fold((0, 0), |(n, s), (_, m)| (n + 1, s + m.size))
    }

    /// RFC 1939 7 UIDL: "a unique-id ... persistent across sessions"; the
    /// folder's UIDVALIDITY and the message's UID are exactly that.
    fn unique_id(&self, m: &MessageMeta) -> String {
        format!("{}.{}", self.uidvalidity, m.uid)
    }
}

enum State {
    Authorization { user: Option<String> },
    Transaction(Maildrop),
}

struct Session {
    svc: Arc<Pop3Service>,
    mode: Mode,
    peer: SocketAddr,
    tls: bool,
    state: State,
    bad_commands: usize,
    /// When the connection was accepted: the AUTHORIZATION state may last
    /// `login_timeout_secs` from here.
    connected_at: Instant,
}

/// What the loop does after a command.
enum Flow {
    Continue,
    Close,
    StartTls,
}

/// Runs one session to its end. Never panics on client input; I/O errors
/// end the session quietly, without UPDATE.
pub async fn run_session(
    svc: Arc<Pop3Service>,
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
        state: State::Authorization { user: None },
        bad_commands: 0,
        connected_at: Instant::now(),
    };
    let mut conn = if mode == Mode::Pop3s {
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
    send(&mut conn, Reply::greeting(&svc.hostname));
    let idle = session.idle();
    loop {
        // RFC 2449 6.6 PIPELINING: replies to commands already buffered
        // go out together.
        if !conn.has_buffered_line() && !flush(&mut conn, idle).await {
            return;
        }
        let deadlines = session.deadlines();
        let line = tokio::select! {
            biased;
            _ = shutdown.wait() => {
                // No UPDATE: marked messages stay (RFC 1939 3).
                send(&mut conn, Reply::shutting_down());
                break;
            }
            r = conn.read_command_line(CREDENTIALS_LINE_BYTES_MAX, &deadlines) => r,
        };
        let line = match line {
            Ok(None) => {
                // RFC 1939 3: on the autologout timer the server "should close
                // the TCP connection without removing any messages or sending
                // any response to the client". The command and login
                // deadlines end the session the same way.
                info!(client = %peer, "timeout, closing without update");
                break;
            }
            Err(LineError::TooLong) => {
                if session.bad_command(&mut conn, Reply::line_too_long()) {
                    break;
                }
                continue;
            }
            Err(_) => return,
            Ok(Some(line)) => line,
        };
        let text = trim_line_end(&line);
        if line.len() > line_limit_for(text) {
            if session.bad_command(&mut conn, Reply::line_too_long()) {
                break;
            }
            continue;
        }
        let flow = match parse_command(text) {
            Ok(cmd) => session.handle(cmd, &mut conn).await,
            Err(e) => {
                if session.bad_command(&mut conn, e.into()) {
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
                if !flush(&mut conn, idle).await {
                    return;
                }
                // into_stream drops plaintext sent after STLS (CVE-2011-0411).
                match tls_handshake(&svc, conn.into_stream()).await {
                    Some(c) => conn = c,
                    None => return,
                }
                // RFC 2595 4: forget what was learnt before TLS.
                session.tls = true;
                session.state = State::Authorization { user: None };
            }
        }
    }
    let _ = timeout(Duration::from_secs(CLOSE_TIMEOUT_SECS), conn.shutdown()).await;
}

async fn tls_handshake(svc: &Pop3Service, stream: BoxStream) -> Option<Conn> {
    mxrack_net::accept_tls(svc.tls.as_ref(), stream, "pop3").await
}

fn send(conn: &mut Conn, reply: Reply) {
    conn.write(&reply.to_bytes());
}

/// Flushes with the idle deadline, so a client that stops reading cannot
/// hold the session (and its maildrop lock) forever. False: the session is over.
/// Byte-stuffs one chunk of a message (RFC 1939 3) and sends it; false when
/// the client is gone or too slow.
async fn send_stuffed(
    conn: &mut Conn,
    stuffer: &mut DotStuffer,
    chunk: &[u8],
    idle: Duration,
) -> bool {
    let mut out = Vec::with_capacity(chunk.len() + 64);
    stuffer.push(&mut out, chunk);
    conn.write(&out);
    flush(conn, idle).await
}

/// The end of a multi-line answer: CRLF if needed, then the lone dot.
fn finish_stuffed(conn: &mut Conn, stuffer: DotStuffer) {
    let mut out = Vec::with_capacity(8);
    stuffer.finish(&mut out);
    conn.write(&out);
}

async fn flush(conn: &mut Conn, idle: Duration) -> bool {
    matches!(timeout(idle, conn.flush()).await, Ok(Ok(())))
}

impl Session {
    fn idle(&self) -> Duration {
        Duration::from_secs(self.svc.limits.idle_timeout_secs)
    }

    /// The deadlines of the next command: the idle wait (the autologout
    /// timer), the command line from its first byte and, in AUTHORIZATION
    /// state, the end of the login phase.
    fn deadlines(&self) -> Deadlines {
        let limits = &self.svc.limits;
        let phase_end = match self.state {
            State::Authorization { .. } => {
                Some(self.connected_at + Duration::from_secs(limits.login_timeout_secs))
            }
            State::Transaction(_) => None,
        };
        Deadlines {
            idle: self.idle(),
            command: Duration::from_secs(limits.command_timeout_secs),
            phase_end,
        }
    }

    fn ip(&self) -> IpAddr {
        self.peer.ip()
    }

    /// Credentials may be sent now: inside TLS, or plaintext is allowed.
    fn credentials_allowed(&self) -> bool {
        self.tls || self.svc.limits.allow_plaintext_auth
    }

    /// Sends the error for a bad command and counts it; true when the
    /// session must close (the limit was reached and said so).
    fn bad_command(&mut self, conn: &mut Conn, reply: Reply) -> bool {
        send(conn, reply);
        self.bad_commands += 1;
        if self.bad_commands >= self.svc.limits.max_bad_commands {
            send(conn, Reply::too_many_bad_commands());
            return true;
        }
        false
    }

    /// `bad_command` as a `Flow`.
    fn refuse(&mut self, conn: &mut Conn, reply: Reply) -> Flow {
        if self.bad_command(conn, reply) {
            Flow::Close
        } else {
            Flow::Continue
        }
    }

    async fn handle(&mut self, cmd: Command, conn: &mut Conn) -> Flow {
        let authorized = matches!(self.state, State::Transaction(_));
        match cmd {
            Command::Capa => {
                self.capa(conn);
                Flow::Continue
            }
            Command::Quit => {
                let reply = self.quit().await;
                send(conn, reply);
                Flow::Close
            }
            Command::Stls => self.stls(conn),
            Command::User(_) | Command::Pass(_) | Command::Auth { .. } if authorized => {
                self.refuse(conn, Reply::wrong_state("already logged in"))
            }
            Command::User(_) | Command::Pass(_) | Command::Auth { .. }
                if !self.credentials_allowed() =>
            {
                self.refuse(conn, Reply::tls_required())
            }
            Command::User(name) => {
                self.state = State::Authorization { user: Some(name) };
                send(conn, Reply::user_accepted());
                Flow::Continue
            }
            Command::Pass(password) => {
                let user = match &mut self.state {
                    State::Authorization { user } => user.take(),
                    State::Transaction(_) => None,
                };
                match user {
                    Some(user) => {
                        let reply = self.login(user, password.0).await;
                        send(conn, reply);
                        Flow::Continue
                    }
                    None => self.refuse(conn, Reply::wrong_state("send USER first")),
                }
            }
            Command::Auth { mechanism, initial } => self.auth(conn, mechanism, initial).await,
            _ if !authorized => self.refuse(conn, Reply::wrong_state("log in first")),
            cmd => self.transaction(cmd, conn).await,
        }
    }

    fn capa(&self, conn: &mut Conn) {
        let mut lines = vec!["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"];
        if let State::Authorization { .. } = self.state {
            // RFC 2595 4 / RFC 5034 4: offer credentials only when they may be sent.
            if self.credentials_allowed() {
                lines.push("USER");
                lines.push("SASL PLAIN");
            }
            if self.stls_offered() {
                lines.push("STLS");
            }
        }
        lines.push("IMPLEMENTATION mxrack");
        send(conn, Reply::capabilities_follow());
        let mut out = Vec::new();
        write_multiline(&mut out, &lines);
        conn.write(&out);
    }

    fn stls_offered(&self) -> bool {
        !self.tls && self.mode == Mode::Pop3 && self.svc.tls.is_some()
    }

    fn stls(&mut self, conn: &mut Conn) -> Flow {
        if self.tls {
            return self.refuse(conn, Reply::tls_active());
        }
        if !matches!(self.state, State::Authorization { .. }) {
            return self.refuse(conn, Reply::wrong_state("STLS only before login"));
        }
        if !self.stls_offered() {
            send(conn, Reply::tls_unavailable());
            return Flow::Continue;
        }
        send(conn, Reply::begin_tls());
        Flow::StartTls
    }

    /// AUTH (RFC 5034), PLAIN only.
    async fn auth(
        &mut self,
        conn: &mut Conn,
        mechanism: Option<String>,
        initial: Option<Secret>,
    ) -> Flow {
        self.state = State::Authorization { user: None };
        let Some(mechanism) = mechanism else {
            send(conn, Reply::mechanisms_follow());
            let mut out = Vec::new();
            write_multiline(&mut out, &["PLAIN"]);
            conn.write(&out);
            return Flow::Continue;
        };
        if mechanism != "PLAIN" {
            send(conn, Reply::mechanism_unknown());
            return Flow::Continue;
        }
        let response = match initial {
            Some(r) => r.0,
            None => {
                // RFC 5034 4: "+" SP and the (empty, for PLAIN) challenge.
                conn.write(b"+ \r\n");
                if !flush(conn, self.idle()).await {
                    return Flow::Close;
                }
                match conn
                    .read_command_line(CREDENTIALS_LINE_BYTES_MAX, &self.deadlines())
                    .await
                {
                    Ok(Some(line)) => String::from_utf8_lossy(trim_line_end(&line)).into_owned(),
                    Err(LineError::TooLong) => {
                        return self.refuse(conn, Reply::line_too_long());
                    }
                    Ok(None) | Err(_) => return Flow::Close,
                }
            }
        };
        let reply = match sasl::decode_plain(&response) {
            Ok(c) => self.login(c.username, c.password).await,
            Err(SaslError::Cancelled) => Reply::auth_cancelled(),
            Err(SaslError::Malformed) => Reply::auth_malformed(),
        };
        send(conn, reply);
        Flow::Continue
    }

    /// Checks the password, locks the maildrop and takes its snapshot.
    /// On success the session is in TRANSACTION state.
    async fn login(&mut self, username: String, password: String) -> Reply {
        self.state = State::Authorization { user: None };
        let ip = self.ip();
        let store = self.svc.store.clone();
        let user = username.clone();
        // Argon2 is CPU heavy: the service runs it off the async workers.
        let verdict = self
            .svc
            .auth
            .check(mxrack_auth::Protocol::Pop3, ip, &username, move || {
                mxrack_store::spawn_blocking(move || store.verify_password(&user, &password))
            })
            .await;
        let verified = match verdict {
            mxrack_auth::Verdict::Accepted => true,
            mxrack_auth::Verdict::Rejected => false,
            mxrack_auth::Verdict::Limited(_) => return Reply::auth_rate_limited(),
            mxrack_auth::Verdict::Unavailable => return Reply::auth_unavailable(),
        };
        let mailbox = match mxrack_store::normalize_address(&username) {
            Ok(m) if verified => m,
            _ => {
                warn!(client = %self.peer, user = %username, "POP3 login failed");
                return Reply::auth_failed();
            }
        };
        let Some(lock) = self.svc.locks.try_lock(&mailbox) else {
            info!(client = %self.peer, user = %mailbox, "POP3 maildrop in use");
            return Reply::in_use();
        };
        let store = self.svc.store.clone();
        let name = mailbox.clone();
        let snapshot = mxrack_store::spawn_blocking(move || store.folder_snapshot(&name, INBOX))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let snapshot = match snapshot {
            Ok(s) => s,
            Err(e) => {
                warn!(client = %self.peer, user = %mailbox, error = %e, "cannot open the maildrop");
                return Reply::maildrop_unavailable();
            }
        };
        let maildrop = Maildrop {
            mailbox,
            uidvalidity: snapshot.folder.uidvalidity,
            deleted: vec![false; snapshot.messages.len()],
            messages: snapshot.messages,
            _lock: lock,
        };
        let (count, octets) = maildrop.totals();
        info!(client = %self.peer, user = %maildrop.mailbox, messages = count, tls = self.tls, "POP3 login");
        self.state = State::Transaction(maildrop);
        Reply::maildrop(count, octets)
    }

    /// The commands of TRANSACTION state.
    async fn transaction(&mut self, cmd: Command, conn: &mut Conn) -> Flow {
        let State::Transaction(maildrop) = &mut self.state else {
            return self.refuse(conn, Reply::wrong_state("log in first"));
        };
        let reply = match cmd {
            Command::Stat => {
                let (n, octets) = maildrop.totals();
                Reply::stat(n, octets)
            }
            Command::Noop => Reply::noop(),
            Command::Rset => {
                maildrop.deleted.iter_mut().for_each(|d| *d = false);
                let (n, octets) = maildrop.totals();
                Reply::maildrop(n, octets)
            }
            Command::Dele(msg) => match maildrop.get(msg) {
                Ok(_) => {
                    // get() checked the range.
                    let i = msg as usize - 1;
                    maildrop.deleted[i] = true;
                    Reply::deleted(i + 1)
                }
                Err(e) => e,
            },
            Command::List(Some(msg)) => match maildrop.get(msg) {
                Ok(m) => Reply::scan_listing(msg as usize, m.size),
                Err(e) => e,
            },
            Command::Uidl(Some(msg)) => match maildrop.get(msg) {
                Ok(m) => Reply::unique_id(msg as usize, &maildrop.unique_id(m)),
                Err(e) => e,
            },
            Command::List(None) => {
                let (n, octets) = maildrop.totals();
                let lines: Vec<String> = maildrop
                    .live()
                    .map(|(i, m)| format!("{i} {}", m.size))
                    .collect();
                send(conn, Reply::scan_listing_follows(n, octets));
                let mut out = Vec::new();
                write_multiline(&mut out, &lines);
                conn.write(&out);
                return Flow::Continue;
            }
            Command::Uidl(None) => {
                let lines: Vec<String> = maildrop
                    .live()
                    .map(|(i, m)| format!("{i} {}", maildrop.unique_id(m)))
                    .collect();
                send(conn, Reply::unique_ids_follow());
                let mut out = Vec::new();
                write_multiline(&mut out, &lines);
                conn.write(&out);
                return Flow::Continue;
            }
            Command::Retr(msg) => return self.send_message(conn, msg, None).await,
            Command::Top { msg, lines } => return self.send_message(conn, msg, Some(lines)).await,
            // Every other command was handled before TRANSACTION dispatch.
            _ => return self.refuse(conn, Reply::wrong_state("not in TRANSACTION state")),
        };
        send(conn, reply);
        Flow::Continue
    }

    /// RETR (`top_lines` None) or TOP: the status line, then the message
    /// (or its top) byte-stuffed, in chunks. RETR streams the message file
    /// ([`SEND_CHUNK_BYTES`] at a time, whatever the message's size); TOP
    /// reads the message whole under a lease of the shared memory budget.
    async fn send_message(&mut self, conn: &mut Conn, msg: u32, top_lines: Option<u64>) -> Flow {
        let State::Transaction(maildrop) = &self.state else {
            return self.refuse(conn, Reply::wrong_state("log in first"));
        };
        let meta = match maildrop.get(msg) {
            Ok(m) => m.clone(),
            Err(e) => {
                send(conn, e);
                return Flow::Continue;
            }
        };
        match top_lines {
            None => self.send_retr(conn, meta.blob).await,
            Some(n) => self.send_top(conn, meta.blob, meta.size, n).await,
        }
    }

    /// A message read failed: the reply, and a log line unless it was gone.
    fn read_error(&self, e: Result<StoreError, tokio::task::JoinError>) -> Reply {
        match e {
            Ok(StoreError::NotFound { .. }) => Reply::message_gone(),
            Ok(e) => {
                warn!(client = %self.peer, error = %e, "cannot read a message");
                Reply::read_failed()
            }
            Err(e) => {
                warn!(client = %self.peer, error = %e, "message read task failed");
                Reply::read_failed()
            }
        }
    }

    /// Runs a message read on a blocking thread; `Err` is the reply for a
    /// read that failed.
    async fn read_off_workers<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Reply> {
        let store = self.svc.store.clone();
        match mxrack_store::spawn_blocking(move || read(&store)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.read_error(Ok(e))),
            Err(e) => Err(self.read_error(Err(e))),
        }
    }

    async fn send_retr(&mut self, conn: &mut Conn, blob: mxrack_store::Id) -> Flow {
        let mut reader = match self.read_off_workers(move |s| s.open_blob(blob)).await {
            Ok(reader) => reader,
            Err(reply) => {
                send(conn, reply);
                return Flow::Continue;
            }
        };
        // The octet count of RFC 1939 7: the message's size, as in LIST.
        send(conn, Reply::message_follows(reader.len()));
        let idle = self.idle();
        let mut stuffer = DotStuffer::new();
        loop {
            let read = mxrack_store::spawn_blocking(move || {
                let chunk = reader.read_chunk(SEND_CHUNK_BYTES);
                (reader, chunk)
            })
            .await;
            let chunk = match read {
                Ok((r, Ok(chunk))) => {
                    reader = r;
                    chunk
                }
                // The status line is out: a message cut short cannot be
                // told apart from a whole one, so the session ends.
                Ok((_, Err(e))) => {
                    warn!(client = %self.peer, error = %e, "message read failed during RETR");
                    return Flow::Close;
                }
                Err(e) => {
                    warn!(client = %self.peer, error = %e, "message read task failed during RETR");
                    return Flow::Close;
                }
            };
            if chunk.is_empty() {
                break;
            }
            if !send_stuffed(conn, &mut stuffer, &chunk, idle).await {
                return Flow::Close;
            }
        }
        finish_stuffed(conn, stuffer);
        Flow::Continue
    }

    async fn send_top(
        &mut self,
        conn: &mut Conn,
        blob: mxrack_store::Id,
        size: u64,
        lines: u64,
    ) -> Flow {
        // The message and its stuffed copy, leased from the shared budget.
        let Some(_lease) = mxrack_net::budget::global()
            .lease(size.saturating_mul(2))
            .await
        else {
            warn!(client = %self.peer, "TOP refused: the memory budget for client data is spent");
            send(conn, Reply::memory_busy());
            return Flow::Continue;
        };
        let body = match self.read_off_workers(move |s| s.read_blob(blob)).await {
            Ok(body) => body,
            Err(reply) => {
                send(conn, reply);
                return Flow::Continue;
            }
        };
        send(conn, Reply::top_follows());
        let idle = self.idle();
        let mut stuffer = DotStuffer::new();
        for chunk in message_top(&body, lines).chunks(SEND_CHUNK_BYTES) {
            if !send_stuffed(conn, &mut stuffer, chunk, idle).await {
                return Flow::Close;
            }
        }
        finish_stuffed(conn, stuffer);
        Flow::Continue
    }

    /// QUIT: in TRANSACTION state, UPDATE (RFC 1939 6) removes the marked
    /// messages. The maildrop lock is released before the reply goes out,
    /// so a client that reconnects at once finds the maildrop free.
    async fn quit(&mut self) -> Reply {
        let state = std::mem::replace(&mut self.state, State::Authorization { user: None });
        let State::Transaction(maildrop) = state else {
            return Reply::bye(&self.svc.hostname);
        };
        let uids: Vec<u32> = maildrop
            .messages
            .iter()
            .zip(&maildrop.deleted)
            .filter(|(_, d)| **d)
            .map(|(m, _)| m.uid)
            .collect();
        let left = maildrop.messages.len() - uids.len();
        if uids.is_empty() {
            return Reply::bye_after_update(&self.svc.hostname, left);
        }
        let store = self.svc.store.clone();
        let mailbox = maildrop.mailbox.clone();
        let result =
            mxrack_store::spawn_blocking(move || store.remove_messages(&mailbox, INBOX, &uids))
                .await;
        let reply = match result {
            Ok(Ok(removed)) => {
                info!(client = %self.peer, user = %maildrop.mailbox, removed = removed.len(), "POP3 update");
                Reply::bye_after_update(&self.svc.hostname, left)
            }
            Ok(Err(e)) => {
                warn!(client = %self.peer, user = %maildrop.mailbox, error = %e, "POP3 update failed");
                Reply::update_failed()
            }
            Err(e) => {
                warn!(client = %self.peer, user = %maildrop.mailbox, error = %e, "POP3 update task failed");
                Reply::update_failed()
            }
        };
        drop(maildrop);
        reply
    }
}
