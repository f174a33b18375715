//! One IMAP session over any `BoxStream` (RFC 3501 3: not authenticated,
//! authenticated, selected, logout). Commands are read whole, literals
//! included (`read_command`), parsed by the pure parser, and answered here;
//! store failures become response codes in `store_error` only.

use crate::fetch;
use crate::mutf7;
use crate::parser::{
    AppendHead, Command, FetchAtt, ListArgs, ParseError, Request, ReturnOpts, SearchKey, Section,
    SectionText, StatusItem, StoreOp, literal_announced, parse_append_head, parse_request,
};
use crate::response::{self, mailbox as mailbox_name, nstring};
use crate::sequence::SequenceSet;
use base64::Engine;
use mxrack_net::{BoxStream, Conn, Deadlines, LineError, ShutdownSignal};
use mxrack_store::{FlagOp, Folder, MessageMeta, Store, StoreError};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::TryRecvError;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

mod append;
mod binary;
mod catenate;
mod context;
mod notify;
mod qresync;
mod rev2;
mod searchres;
mod sort;
pub use append::{APPEND_MESSAGES_MAX, CATENATE_PARTS_MAX};
pub use notify::NOTIFY_PENDING_EVENTS_MAX;
mod keywords;
mod list;
mod recent;

/// Messages read and rendered per blocking task in a FETCH.
const FETCH_BATCH_MESSAGES: usize = 256;
/// Message bytes a FETCH batch that reads messages holds at most (a single
/// larger message makes a batch of its own).
const FETCH_BATCH_BYTES: u64 = 4 * 1024 * 1024;
/// Output is flushed whenever this much is buffered (long FETCH responses).
const OUTPUT_FLUSH_BYTES: usize = 256 * 1024;
/// Longest AUTHENTICATE continuation line (RFC 4954's figure, reused).
const AUTH_LINE_BYTES_MAX: usize = 12_288 + 2;
/// Largest literal before authentication: what LOGIN (a name, a password)
/// or AUTHENTICATE with SASL-IR can need. Larger ones are refused before a
/// byte of them is read, whatever `imap.max_literal_bytes` allows after.
const PREAUTH_LITERAL_BYTES_MAX: u64 = 8 * 1024;
/// Largest non-synchronizing literal before authentication: LITERAL-
/// (RFC 7888 4) is what is advertised then, not LITERAL+.
const PREAUTH_NONSYNC_LITERAL_BYTES_MAX: u64 = 4096;

/// Largest literal of any command but APPEND's message once logged in
/// (search strings, names, ...): read into memory with its command. An
/// APPEND's message is streamed to the store in chunks instead
/// (`session/append.rs`), up to `imap.max_literal_bytes`.
const COMMAND_LITERAL_BYTES_MAX: u64 = 64 * 1024;

/// The system flags and the keywords this server lets clients set.
const SYSTEM_FLAGS: &str = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";

/// Which port a session came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Port 143: STARTTLS, LOGINDISABLED until then.
    Plain,
    /// Port 993: TLS from the first byte.
    Tls,
}

/// What every IMAP session shares.
pub struct ImapService {
    pub hostname: String,
    pub limits: mxrack_config::Imap,
    pub store: Arc<Store>,
    pub tls: Option<TlsAcceptor>,
    /// The appliance's one authentication service (limiter and Argon2 pool).
    pub auth: Arc<mxrack_auth::AuthService>,
    /// Learns from the user: a message moved into Junk is spam, one moved
    /// out of Junk is ham (the statistical classifier of the spam filter).
    pub scorer: Option<Arc<mxrack_filter::Scorer>>,
}

struct Selected {
    name: String,
    read_only: bool,
    /// Index + 1 is the message sequence number.
    messages: Vec<MessageMeta>,
    /// The folder's HIGHESTMODSEQ as last seen by this session.
    modseq: u64,
    /// UIDs of `SEARCH RETURN (SAVE)` (RFC 5182), for `$`.
    saved: Vec<u32>,
    /// UIDs that are \Recent in this session (`session/recent.rs`).
    recent: HashSet<u32>,
    /// The keywords its last `* FLAGS` listed (`session/keywords.rs`).
    keywords: Vec<String>,
}

struct Session {
    svc: Arc<ImapService>,
    peer: SocketAddr,
    tls: bool,
    user: Option<String>,
    utf8: bool,
    condstore: bool,
    /// ENABLE QRESYNC was given (RFC 7162 3.2.3): VANISHED, not EXPUNGE.
    qresync: bool,
    /// `ENABLE IMAP4rev2` was sent: RFC 9051 rules (`session/rev2.rs`).
    rev2: bool,
    /// NOTIFY SET's choice of events (`session/notify.rs`), if any.
    notify: Option<notify::Notify>,
    selected: Option<Selected>,
    bad_commands: usize,
    changes: Option<tokio::sync::broadcast::Receiver<Arc<str>>>,
    /// A BYE was sent: the session ends after the current response.
    closing: bool,
    /// SEARCH RETURN (UPDATE) results kept up to date (RFC 5267 4.3).
    contexts: Vec<context::UpdateContext>,
    /// When the connection was accepted: the not-authenticated state may
    /// last `login_timeout_secs` from here.
    connected_at: Instant,
}

enum Flow {
    Continue,
    Close,
    StartTls,
}

enum ReadError {
    /// The session must end (EOF, I/O error, timeout handled by the caller).
    Gone,
    TooLong,
    /// A literal over the limit; the tag to answer, and whether the client
    /// is waiting (synchronizing) or already sending (LITERAL+).
    LiteralTooBig {
        tag: String,
        sync: bool,
        max: u64,
    },
}

/// What `read_command` read.
enum Incoming {
    /// A whole command, literals inline, for `parse_request`.
    Command(Vec<u8>),
    /// An APPEND up to its message literal, which is still to be read.
    Append(AppendHead),
}

async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    mxrack_store::spawn_blocking(move || f(&store))
        .await
        .unwrap_or_else(|e| Err(StoreError::Db(format!("store task failed: {e}"))))
}

/// FETCH batches: at most [`FETCH_BATCH_MESSAGES`] messages, and when the
/// messages are read, at most [`FETCH_BATCH_BYTES`] of them (or one).
fn fetch_batches(metas: &[(usize, MessageMeta)], reads: bool) -> Vec<&[(usize, MessageMeta)]> {
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, (_, m)) in metas.iter().enumerate() {
        let full = i - start == FETCH_BATCH_MESSAGES
            || (reads && i > start && bytes.saturating_add(m.size) > FETCH_BATCH_BYTES);
        if full {
            batches.push(&metas[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes = bytes.saturating_add(m.size);
    }
    if start < metas.len() {
        batches.push(&metas[start..]);
    }
    batches
}

/// A mailbox name that is a valid astring but not valid modified UTF-7
/// (RFC 3501 5.1.3): the command is well formed, the name just cannot
/// exist, so NO, not BAD (as Dovecot answers: "NO Mailbox name is not
/// valid mUTF-7").
/// Whether a FETCH may set \Seen as it reads (a client's command, RFC
/// 3501 6.4.5) or reads as with BODY.PEEK (what NOTIFY pushes unasked,
/// RFC 5465 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FetchMode {
    Command,
    Peek,
}

fn invalid_mailbox_name(tag: &str) -> String {
    format!("{tag} NO [CANNOT] Mailbox name is not valid modified UTF-7\r\n")
}

/// Store failures as IMAP response codes (RFC 5530), in one place.
fn store_error(tag: &str, e: &StoreError) -> String {
    let (code, text) = match e {
        StoreError::NotFound { kind: "folder", .. } => {
            ("[NONEXISTENT]", "No such mailbox".to_string())
        }
        StoreError::NotFound {
            kind: "subscription",
            ..
        } => ("[NONEXISTENT]", "Not subscribed".to_string()),
        StoreError::NotFound { .. } => ("[NONEXISTENT]", e.to_string()),
        StoreError::Duplicate { .. } => ("[ALREADYEXISTS]", "Mailbox already exists".to_string()),
        StoreError::InUse { .. } => ("[INUSE]", e.to_string()),
        StoreError::Invalid { .. } => ("[CANNOT]", e.to_string()),
        StoreError::OverQuota { .. } => ("[OVERQUOTA]", "Quota exceeded".to_string()),
        // Only address-book writes give it; IMAP never makes one.
        StoreError::AddressBookOverLimit { .. } => ("[OVERQUOTA]", e.to_string()),
        StoreError::NoSpace => (
            "[UNAVAILABLE]",
            "Insufficient storage, try again later".to_string(),
        ),
        StoreError::Closed => ("[UNAVAILABLE]", "Server shutting down".to_string()),
        StoreError::Io(_)
        | StoreError::Db(_)
        | StoreError::Schema { .. }
        | StoreError::NeedsReconstruct(_) => {
            warn!(error = %e, "IMAP store failure");
            ("[SERVERBUG]", "Internal error, try again later".to_string())
        }
    };
    format!("{tag} NO {code} {text}\r\n")
}

/// RFC 3501 date-time: "17-Jul-1996 02:44:25 +0000".
fn imap_date_time(unix: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{d:02}-{}-{y:04} {:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn flag_list(flags: &[String]) -> String {
    format!("({})", flags.join(" "))
}

/// IMAP LIST pattern matching: `*` matches anything, `%` anything but the
/// hierarchy delimiter (RFC 3501 6.3.8). Without recursion and in
/// O(pattern x name) time whatever the pattern: a run of wildcards is one
/// `*` if it holds a `*` (else one `%`), then the pattern is simulated as an
/// automaton over the name, one set of live pattern positions per character.
fn pattern_matches(pattern: &[char], name: &[char]) -> bool {
    let mut p: Vec<char> = Vec::with_capacity(pattern.len());
    for &c in pattern {
        match (p.last_mut(), c) {
            (Some(last @ ('*' | '%')), '*' | '%') => {
                if c == '*' {
                    *last = '*';
                }
            }
            _ => p.push(c),
        }
    }
    // live[j]: the name read so far can be matched by p[..j].
    let mut live = vec![false; p.len() + 1];
    let close = |live: &mut Vec<bool>| {
        // A wildcard may match nothing.
        for j in 0..p.len() {
            if live[j] && matches!(p[j], '*' | '%') {
                live[j + 1] = true;
            }
        }
    };
    live[0] = true;
    close(&mut live);
    let mut next = vec![false; p.len() + 1];
    for &c in name {
        next.iter_mut().for_each(|x| *x = false);
        let mut any = false;
        for j in 0..p.len() {
            if !live[j] {
                continue;
            }
            match p[j] {
                '*' => next[j] = true,
                '%' if c != '/' => next[j] = true,
                '%' => {}
                lit if lit == c => next[j + 1] = true,
                _ => {}
            }
            any = true;
        }
        if !any {
            return false;
        }
        std::mem::swap(&mut live, &mut next);
        close(&mut live);
    }
    live[p.len()]
}

fn matches_list_pattern(pattern: &str, name: &str) -> bool {
    // INBOX matches case-insensitively.
    let name_cmp = name.to_string();
    // get() rather than indexing: byte 5 need not be a char boundary.
    let pattern = if pattern
        .get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("INBOX"))
    {
        format!("INBOX{}", &pattern[5..])
    } else {
        pattern.to_string()
    };
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name_cmp.chars().collect();
    pattern_matches(&p, &n)
}

pub async fn run_session(
    svc: Arc<ImapService>,
    mode: Mode,
    stream: BoxStream,
    peer: SocketAddr,
    mut shutdown: ShutdownSignal,
) {
    let mut session = Session {
        svc: svc.clone(),
        peer,
        tls: false,
        user: None,
        utf8: false,
        condstore: false,
        qresync: false,
        rev2: false,
        notify: None,
        selected: None,
        bad_commands: 0,
        changes: None,
        contexts: Vec::new(),
        closing: false,
        connected_at: Instant::now(),
    };
    let mut conn = if mode == Mode::Tls {
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
    conn.write(
        format!(
            "* OK [CAPABILITY {}] {} mxrack IMAP ready\r\n",
            session.capabilities(),
            svc.hostname
        )
        .as_bytes(),
    );
    loop {
        if !conn.has_buffered_line() && conn.flush().await.is_err() {
            return;
        }
        // With NOTIFY on, changes are pushed while waiting (RFC 5465).
        if session.notify.is_some() && !conn.has_buffered_input() {
            match session.notify_wait(&mut conn, &mut shutdown).await {
                notify::Waited::Ready => {}
                notify::Waited::Idle => {
                    conn.write(b"* BYE Autologout; idle for too long\r\n");
                    break;
                }
                notify::Waited::Shutdown => {
                    conn.write(b"* BYE [UNAVAILABLE] Server shutting down\r\n");
                    break;
                }
                notify::Waited::Gone => return,
            }
        }
        let deadlines = session.deadlines();
        let authenticated = session.user.is_some();
        // The whole command, its literals included, must be in by the
        // command deadline (from its first byte) and the phase's end; an
        // APPEND's message literal, streamed by `append_streamed`, too.
        let whole_command = async {
            match conn.await_command(&deadlines).await {
                Ok(Some(end)) => {
                    timeout_at(end, read_command(&mut conn, &svc.limits, authenticated))
                        .await
                        .map(|r| r.map(|incoming| (incoming, end)))
                        .map_err(|_| ())
                }
                Ok(None) => Err(()),
                Err(_) => Ok(Err(ReadError::Gone)),
            }
        };
        let read = tokio::select! {
            biased;
            _ = shutdown.wait() => {
                conn.write(b"* BYE [UNAVAILABLE] Server shutting down\r\n");
                break;
            }
            r = whole_command => r,
        };
        let bytes = match read {
            Err(_) => {
                conn.write(b"* BYE Autologout; idle for too long\r\n");
                break;
            }
            Ok(Err(ReadError::Gone)) => return,
            Ok(Err(ReadError::TooLong)) => {
                conn.write(b"* BAD [TOOBIG] Command line too long\r\n");
                if session.count_bad(&mut conn) {
                    break;
                }
                continue;
            }
            Ok(Err(ReadError::LiteralTooBig { tag, sync, max })) => {
                // Before login a non-synchronizing literal over LITERAL-'s
                // 4096 bytes is a client error: BAD (RFC 7888 4).
                let status = if session.user.is_none() && !sync {
                    "BAD"
                } else {
                    "NO"
                };
                conn.write(
                    format!("{tag} {status} [TOOBIG] Literal larger than {max} bytes\r\n")
                        .as_bytes(),
                );
                if !sync {
                    // The client is already sending the literal: the only safe way out is to close.
                    conn.write(b"* BYE [TOOBIG] Literal too large\r\n");
                    break;
                }
                continue;
            }
            Ok(Ok((Incoming::Append(head), command_end))) => {
                match session
                    .append_streamed(head, command_end, &mut conn, &mut shutdown)
                    .await
                {
                    Flow::Close => break,
                    _ if session.closing => break,
                    _ => continue,
                }
            }
            Ok(Ok((Incoming::Command(b), _))) => b,
        };
        let flow = match parse_request(&bytes) {
            Ok(req) => session.handle(req, &mut conn, &mut shutdown).await,
            Err(ParseError::NoTag) => {
                conn.write(b"* BAD Missing or invalid tag\r\n");
                if session.count_bad(&mut conn) {
                    Flow::Close
                } else {
                    Flow::Continue
                }
            }
            Err(ParseError::No { tag, text }) => {
                conn.write(format!("{tag} NO {text}\r\n").as_bytes());
                Flow::Continue
            }
            Err(ParseError::Bad { tag, text }) => {
                let code = if text.starts_with('[') {
                    ""
                } else {
                    "[CLIENTBUG] "
                };
                conn.write(format!("{tag} BAD {code}{text}\r\n").as_bytes());
                if session.count_bad(&mut conn) {
                    Flow::Close
                } else {
                    Flow::Continue
                }
            }
        };
        let flow = if session.closing { Flow::Close } else { flow };
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
                session.tls = true;
            }
        }
    }
    conn.shutdown().await;
}

async fn tls_handshake(svc: &ImapService, stream: BoxStream) -> Option<Conn> {
    mxrack_net::accept_tls(svc.tls.as_ref(), stream, "imap").await
}

/// Reads one whole command: lines, and after each line that announces a
/// literal, the literal itself (sending "+" first for a synchronizing one).
/// A literal over the limit is refused before any of it is read; before
/// authentication (`authenticated` false) the limits are the PREAUTH ones,
/// after it `COMMAND_LITERAL_BYTES_MAX`, except for the message of an
/// APPEND: the command is then returned up to that literal, which the
/// session streams to the store.
async fn read_command(
    conn: &mut Conn,
    limits: &mxrack_config::Imap,
    authenticated: bool,
) -> Result<Incoming, ReadError> {
    let mut buf = Vec::new();
    let (literal_max, nonsync_max) = if authenticated {
        let max = COMMAND_LITERAL_BYTES_MAX.min(limits.max_literal_bytes);
        (max, max)
    } else {
        let max = PREAUTH_LITERAL_BYTES_MAX.min(limits.max_literal_bytes);
        (max, PREAUTH_NONSYNC_LITERAL_BYTES_MAX.min(max))
    };
    let total_max = literal_max as usize + limits.max_line_bytes * 4;
    loop {
        let line = match conn.read_line(limits.max_line_bytes).await {
            Ok(l) => l,
            Err(LineError::TooLong) => return Err(ReadError::TooLong),
            Err(_) => return Err(ReadError::Gone),
        };
        buf.extend_from_slice(&line);
        if authenticated && let Some(head) = parse_append_head(&buf) {
            return Ok(Incoming::Append(head));
        }
        let Some((size, sync)) = literal_announced(&line) else {
            return Ok(Incoming::Command(buf));
        };
        let max = if sync { literal_max } else { nonsync_max };
        if size > max || buf.len() + size as usize > total_max {
            let tag = String::from_utf8_lossy(buf.split(|&b| b == b' ').next().unwrap_or(b"*"))
                .into_owned();
            return Err(ReadError::LiteralTooBig { tag, sync, max });
        }
        if sync {
            conn.write(b"+ Ready for literal data\r\n");
            if conn.flush().await.is_err() {
                return Err(ReadError::Gone);
            }
        }
        let data = conn
            .read_exact_bytes(size as usize)
            .await
            .map_err(|_| ReadError::Gone)?;
        buf.extend_from_slice(&data);
    }
}

impl Session {
    /// The deadlines of the next command: the idle wait (`login_timeout_secs`
    /// before login, `idle_timeout_secs` after), the whole command with its
    /// literals from its first byte, and before login the end of the
    /// not-authenticated phase.
    fn deadlines(&self) -> Deadlines {
        let limits = &self.svc.limits;
        let (idle, phase_end) = if self.user.is_some() {
            (limits.idle_timeout_secs, None)
        } else {
            (
                limits.login_timeout_secs,
                Some(self.connected_at + Duration::from_secs(limits.login_timeout_secs)),
            )
        };
        Deadlines {
            idle: Duration::from_secs(idle),
            command: Duration::from_secs(limits.command_timeout_secs),
            phase_end,
        }
    }

    fn capabilities(&self) -> String {
        // LITERAL+ once logged in; before, LITERAL- (non-synchronizing
        // literals up to 4096 bytes, RFC 7888).
        let literal = if self.user.is_some() {
            "LITERAL+"
        } else {
            "LITERAL-"
        };
        let mut caps = format!(
            "IMAP4rev1 IMAP4rev2 {literal} SASL-IR ID ENABLE IDLE NAMESPACE UIDPLUS MULTIAPPEND CATENATE BINARY QRESYNC MOVE UNSELECT CHILDREN LIST-EXTENDED LIST-STATUS SPECIAL-USE QUOTA QUOTA=RES-STORAGE ESEARCH SEARCHRES CONDSTORE UTF8=ACCEPT APPENDLIMIT={} NOTIFY {}",
            self.svc.limits.max_literal_bytes,
            sort::CAPABILITIES,
        );
        if self.user.is_none() {
            if !self.tls && self.svc.tls.is_some() {
                caps.push_str(" STARTTLS");
            }
            if self.tls || self.svc.limits.allow_plaintext_auth {
                caps.push_str(" AUTH=PLAIN");
            } else {
                caps.push_str(" LOGINDISABLED");
            }
        }
        caps
    }

    fn count_bad(&mut self, conn: &mut Conn) -> bool {
        self.bad_commands += 1;
        if self.bad_commands >= self.svc.limits.max_bad_commands {
            conn.write(b"* BYE Too many bad commands\r\n");
            return true;
        }
        false
    }

    /// A mailbox name from the wire: modified UTF-7 (RFC 3501 5.1.3), or
    /// UTF-8 when the client sent UTF-8 or enabled UTF8=ACCEPT.
    fn decode_name(&self, bytes: &[u8]) -> Option<String> {
        let text = std::str::from_utf8(bytes).ok()?;
        if self.utf8 || !text.is_ascii() {
            return Some(text.to_string());
        }
        mutf7::decode(text)
    }

    fn encode_name(&self, name: &str) -> String {
        if self.utf8 {
            name.to_string()
        } else {
            mutf7::encode(name)
        }
    }

    fn quoted_name(&self, name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        mailbox_name(&mut out, &self.encode_name(name));
        out
    }

    async fn handle(
        &mut self,
        mut req: Request,
        conn: &mut Conn,
        shutdown: &mut ShutdownSignal,
    ) -> Flow {
        let tag = req.tag.clone();
        let authed = self.user.is_some();
        let selected = self.selected.is_some();
        use Command::*;
        let state_ok = match &req.command {
            Capability | Noop | Logout | Id => true,
            StartTls | Authenticate { .. } | Login { .. } => !authed,
            // RFC 5161 3.1: ENABLE is valid only in the authenticated
            // state, before a mailbox is selected (what it switches, such
            // as VANISHED for EXPUNGE or no \Recent, would change the
            // selected mailbox's rules midway). The server may check it;
            // this one does, with the state error every command gets.
            Enable(_) => authed && !selected,
            Check
            | Close
            | Unselect
            | Expunge
            | UidExpunge(_)
            | Search { .. }
            | Sort { .. }
            | Thread { .. }
            | Fetch { .. }
            | Store { .. }
            | Copy { .. }
            | Move { .. } => selected,
            _ => authed,
        };
        if !state_ok {
            let why = if authed {
                "Not allowed in this state"
            } else {
                "Log in first"
            };
            conn.write(format!("{tag} BAD [CLIENTBUG] {why}\r\n").as_bytes());
            return if self.count_bad(conn) {
                Flow::Close
            } else {
                Flow::Continue
            };
        }
        if let Some(why) = self.rev2_refusal(&req.command) {
            conn.write(format!("{tag} BAD [CLIENTBUG] {why}\r\n").as_bytes());
            return if self.count_bad(conn) {
                Flow::Close
            } else {
                Flow::Continue
            };
        }
        self.substitute_saved(&mut req.command);
        // Commands during which EXPUNGE responses must not be sent (RFC 3501 7.4.1).
        let no_expunge = matches!(
            req.command,
            Fetch { uid: false, .. }
                | Store { uid: false, .. }
                | Search { uid: false, .. }
                | Sort { uid: false, .. }
                | Thread { uid: false, .. }
                | Copy { uid: false, .. }
        );
        self.condstore_enabling(&req.command, conn);
        let result = match req.command {
            Capability => {
                conn.write(format!("* CAPABILITY {}\r\n", self.capabilities()).as_bytes());
                Ok(format!("{tag} OK CAPABILITY completed\r\n"))
            }
            Noop | Check => Ok(format!(
                "{tag} OK {} completed\r\n",
                if matches!(req.command, Noop) {
                    "NOOP"
                } else {
                    "CHECK"
                }
            )),
            Logout => {
                conn.write(b"* BYE Logging out\r\n");
                conn.write(format!("{tag} OK LOGOUT completed\r\n").as_bytes());
                return Flow::Close;
            }
            Id => {
                conn.write(b"* ID (\"name\" \"mxrack\")\r\n");
                Ok(format!("{tag} OK ID completed\r\n"))
            }
            StartTls => {
                if self.tls || self.svc.tls.is_none() {
                    Ok(format!(
                        "{tag} BAD [CLIENTBUG] TLS is already active or not available\r\n"
                    ))
                } else {
                    conn.write(format!("{tag} OK Begin TLS negotiation now\r\n").as_bytes());
                    return Flow::StartTls;
                }
            }
            Login { user, password } => {
                let user = String::from_utf8_lossy(&user).into_owned();
                let password = String::from_utf8_lossy(&password).into_owned();
                return self.login(&tag, user, password, conn).await;
            }
            Authenticate { mechanism, initial } => {
                return self.authenticate(&tag, &mechanism, initial, conn).await;
            }
            Enable(caps) => {
                let mut enabled = Vec::new();
                for c in caps {
                    match c.as_str() {
                        "UTF8=ACCEPT" => {
                            self.utf8 = true;
                            enabled.push(c);
                        }
                        "CONDSTORE" => {
                            self.condstore = true;
                            enabled.push(c);
                        }
                        // RFC 7162 3.2.3: QRESYNC implies CONDSTORE.
                        "QRESYNC" => {
                            (self.condstore, self.qresync) = (true, true);
                            enabled.push(c);
                        }
                        "IMAP4REV2" => {
                            self.enable_rev2();
                            enabled.push("IMAP4rev2".into());
                        }
                        _ => {}
                    }
                }
                conn.write(
                    format!("* ENABLED {}\r\n", enabled.join(" "))
                        .trim_end()
                        .as_bytes(),
                );
                conn.write(b"\r\n");
                Ok(format!("{tag} OK ENABLE completed\r\n"))
            }
            Namespace => {
                conn.write(b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
                Ok(format!("{tag} OK NAMESPACE completed\r\n"))
            }
            Select { mailbox, condstore } => {
                self.select(&tag, &mailbox, false, condstore, conn).await
            }
            Examine { mailbox, condstore } => {
                self.select(&tag, &mailbox, true, condstore, conn).await
            }
            Create(name) => self.create(&tag, &name).await,
            Delete(name) => {
                self.with_name(&tag, &name, |s, user, n| s.folder_delete(&user, &n))
                    .await
            }
            Rename { from, to } => match (self.decode_name(&from), self.decode_name(&to)) {
                (Some(f), Some(t)) => {
                    let user = self.user.clone().unwrap_or_default();
                    match blocking(&self.svc.store, move |s| {
                        s.folder_rename(&user, &f, &t)?;
                        // Like CREATE, RENAME leaves no hole in the hierarchy.
                        let parts: Vec<&str> = t.split('/').collect();
                        for i in 1..parts.len() {
                            match s.folder_create(&user, &parts[..i].join("/")) {
                                Ok(_) | Err(StoreError::Duplicate { .. }) => {}
                                Err(e) => return Err(e),
                            }
                        }
                        Ok(())
                    })
                    .await
                    {
                        Ok(()) => Ok(format!("{tag} OK RENAME completed\r\n")),
                        Err(e) => Ok(store_error(&tag, &e)),
                    }
                }
                _ => Ok(invalid_mailbox_name(&tag)),
            },
            Subscribe(name) => {
                self.with_name(&tag, &name, |s, user, n| {
                    s.folder_subscribe(&user, &n, true)
                })
                .await
            }
            Unsubscribe(name) => {
                self.with_name(&tag, &name, |s, user, n| {
                    s.folder_subscribe(&user, &n, false)
                })
                .await
            }
            List(args) => self.list(&tag, args, conn).await,
            Lsub { reference, pattern } => {
                let args = ListArgs {
                    reference,
                    patterns: vec![pattern],
                    select_subscribed: true,
                    ..ListArgs::default()
                };
                self.list_impl(&tag, args, true, conn).await
            }
            Status { mailbox, items } => self.status(&tag, &mailbox, &items, conn).await,
            Append {
                mailbox,
                flags,
                date,
                message,
            } => self.append(&tag, &mailbox, flags, date, message).await,
            Idle => return self.idle(&tag, conn, shutdown).await,
            SelectQresync {
                mailbox,
                read_only,
                qresync,
            } => {
                self.select_qresync(&tag, &mailbox, read_only, qresync, conn)
                    .await
            }
            GetQuota(root) => self.get_quota(&tag, &root, conn).await,
            GetQuotaRoot(mailbox) => self.get_quota_root(&tag, &mailbox, conn).await,
            Notify(cmd) => self.notify_command(&tag, cmd, conn).await,
            Close => {
                let mut code = String::new();
                if let Some(sel) = self.leave_selected().await {
                    let (user, name) = (self.user.clone().unwrap_or_default(), sel.name.clone());
                    let expunge = !sel.read_only;
                    // CLOSE expunges silently (RFC 3501 6.4.2).
                    match blocking(&self.svc.store, move |s| {
                        if expunge {
                            s.expunge(&user, &name, None)?;
                        }
                        s.folder_get(&user, &name)
                    })
                    .await
                    {
                        // RFC 7162 3.2.8: with QRESYNC the tagged OK of
                        // CLOSE carries the mailbox's HIGHESTMODSEQ after
                        // the expunge (the client saw no EXPUNGE for it).
                        Ok(f) if self.qresync => {
                            code = format!("[HIGHESTMODSEQ {}] ", f.highestmodseq);
                        }
                        Ok(_) => {}
                        Err(e) => warn!(error = %e, "expunge at CLOSE failed"),
                    }
                }
                Ok(format!("{tag} OK {code}CLOSE completed\r\n"))
            }
            Unselect => {
                self.leave_selected().await;
                Ok(format!("{tag} OK UNSELECT completed\r\n"))
            }
            Expunge => self.expunge(&tag, None, conn).await,
            UidExpunge(set) => self.expunge(&tag, Some(set), conn).await,
            Search {
                uid,
                criteria,
                esearch,
            } => self.search(&tag, uid, criteria, esearch, conn).await,
            Sort {
                uid,
                program,
                criteria,
                ret,
            } => self.sort(&tag, uid, program, criteria, ret, conn).await,
            Thread {
                uid,
                algorithm,
                criteria,
            } => self.thread(&tag, uid, algorithm, criteria, conn).await,
            CancelUpdate(tags) => Ok(self.cancel_update(&tag, &tags)),
            Fetch {
                uid,
                set,
                items,
                changed_since,
                vanished,
            } => {
                if vanished && !self.qresync {
                    Ok(format!(
                        "{tag} BAD [CLIENTBUG] VANISHED needs ENABLE QRESYNC\r\n"
                    ))
                } else if vanished && let Err(e) = self.fetch_vanished(&set, conn).await {
                    Err(e)
                } else {
                    self.fetch(&tag, uid, &set, items, changed_since, conn)
                        .await
                }
            }
            Store {
                uid,
                set,
                op,
                silent,
                flags,
                unchanged_since,
            } => {
                self.store(&tag, uid, &set, op, silent, flags, unchanged_since, conn)
                    .await
            }
            Copy { uid, set, mailbox } => self.copy(&tag, uid, &set, &mailbox, false, conn).await,
            Move { uid, set, mailbox } => self.copy(&tag, uid, &set, &mailbox, true, conn).await,
        };
        let reply = match result {
            Ok(r) => r,
            Err(e) => store_error(&tag, &e),
        };
        self.before_tagged_reply(conn, !no_expunge).await;
        conn.write(reply.as_bytes());
        Flow::Continue
    }

    /// What every command sends before its tagged reply: other sessions'
    /// changes to the selected mailbox (expunges only when the command
    /// allows them, RFC 3501 7.4.1), search context updates (RFC 5267),
    /// and the other mailboxes NOTIFY follows (RFC 5465).
    async fn before_tagged_reply(&mut self, conn: &mut Conn, allow_expunge: bool) {
        if self.selected.is_some() {
            self.sync(conn, allow_expunge).await;
        }
        self.context_updates(conn).await;
        self.notify_push(conn, false).await;
    }

    /// Leaves the selected mailbox (SELECT of another, CLOSE, UNSELECT):
    /// its search contexts end (RFC 5267 4.3: a context lives while its
    /// mailbox stays selected; a re-SELECT of the same name is a new
    /// selection) and NOTIFY takes its STATUS baseline.
    async fn leave_selected(&mut self) -> Option<Selected> {
        let sel = self.selected.take()?;
        self.contexts.clear();
        self.notify_left(sel.name.clone()).await;
        Some(sel)
    }

    async fn login(&mut self, tag: &str, user: String, password: String, conn: &mut Conn) -> Flow {
        if !self.tls && !self.svc.limits.allow_plaintext_auth {
            // Invariant 4: credentials cross the wire only inside TLS.
            conn.write(format!("{tag} NO [PRIVACYREQUIRED] Use STARTTLS first\r\n").as_bytes());
            return Flow::Continue;
        }
        self.finish_login(tag, user, password, conn).await
    }

    async fn finish_login(
        &mut self,
        tag: &str,
        user: String,
        password: String,
        conn: &mut Conn,
    ) -> Flow {
        let ip = self.peer.ip();
        let username = user.to_lowercase();
        let check = username.clone();
        let store = self.svc.store.clone();
        let verdict = self
            .svc
            .auth
            .check(mxrack_auth::Protocol::Imap, ip, &username, move || {
                mxrack_store::spawn_blocking(move || store.verify_password(&check, &password))
            })
            .await;
        match verdict {
            mxrack_auth::Verdict::Accepted => {
                info!(client = %self.peer, user = %username, "IMAP login");
                self.changes = Some(self.svc.store.subscribe_changes());
                self.user = Some(username);
                conn.write(
                    format!(
                        "{tag} OK [CAPABILITY {}] Logged in\r\n",
                        self.capabilities()
                    )
                    .as_bytes(),
                );
            }
            mxrack_auth::Verdict::Rejected => {
                warn!(client = %self.peer, user = %username, "IMAP login failed");
                conn.write(
                    format!("{tag} NO [AUTHENTICATIONFAILED] Authentication failed\r\n").as_bytes(),
                );
            }
            // RFC 5530: UNAVAILABLE, a temporary failure; try again later.
            mxrack_auth::Verdict::Limited(_) => conn.write(
                format!("{tag} NO [UNAVAILABLE] Too many login attempts, try again later\r\n")
                    .as_bytes(),
            ),
            mxrack_auth::Verdict::Unavailable => conn.write(
                format!("{tag} NO [UNAVAILABLE] Temporary authentication failure\r\n").as_bytes(),
            ),
        }
        Flow::Continue
    }

    async fn authenticate(
        &mut self,
        tag: &str,
        mechanism: &str,
        initial: Option<String>,
        conn: &mut Conn,
    ) -> Flow {
        if mechanism != "PLAIN" {
            conn.write(format!("{tag} NO [CANNOT] Unsupported mechanism\r\n").as_bytes());
            return Flow::Continue;
        }
        if !self.tls && !self.svc.limits.allow_plaintext_auth {
            conn.write(format!("{tag} NO [PRIVACYREQUIRED] Use STARTTLS first\r\n").as_bytes());
            return Flow::Continue;
        }
        let response = match initial {
            Some(r) => r,
            None => {
                conn.write(b"+ \r\n");
                if conn.flush().await.is_err() {
                    return Flow::Close;
                }
                match conn
                    .read_command_line(AUTH_LINE_BYTES_MAX, &self.deadlines())
                    .await
                {
                    Ok(Some(line)) => String::from_utf8_lossy(&line).trim_end().to_string(),
                    Ok(None) => {
                        conn.write(b"* BYE Autologout; too slow\r\n");
                        return Flow::Close;
                    }
                    Err(_) => return Flow::Close,
                }
            }
        };
        if response == "*" {
            conn.write(format!("{tag} BAD Authentication cancelled\r\n").as_bytes());
            return Flow::Continue;
        }
        let decoded = if response == "=" {
            Some(Vec::new())
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(response.as_bytes())
                .ok()
        };
        let creds = decoded.and_then(|d| {
            let parts: Vec<&[u8]> = d.split(|&b| b == 0).collect();
            match parts.as_slice() {
                [authz, user, pass] if authz.is_empty() || authz == user => Some((
                    String::from_utf8(user.to_vec()).ok()?,
                    String::from_utf8(pass.to_vec()).ok()?,
                )),
                _ => None,
            }
        });
        match creds {
            Some((user, pass)) => self.finish_login(tag, user, pass, conn).await,
            None => {
                conn.write(
                    format!("{tag} BAD [CLIENTBUG] Malformed PLAIN response\r\n").as_bytes(),
                );
                Flow::Continue
            }
        }
    }

    async fn with_name(
        &mut self,
        tag: &str,
        name: &[u8],
        op: impl FnOnce(&Store, String, String) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<String, StoreError> {
        let Some(name) = self.decode_name(name) else {
            return Ok(invalid_mailbox_name(tag));
        };
        let user = self.user.clone().unwrap_or_default();
        blocking(&self.svc.store, move |s| op(s, user, name)).await?;
        Ok(format!("{tag} OK completed\r\n"))
    }

    async fn create(&mut self, tag: &str, name: &[u8]) -> Result<String, StoreError> {
        let Some(name) = self.decode_name(name) else {
            return Ok(invalid_mailbox_name(tag));
        };
        // A trailing delimiter only declares intent to create children (RFC 3501 6.3.3).
        let name = name.trim_end_matches('/').to_string();
        let user = self.user.clone().unwrap_or_default();
        blocking(&self.svc.store, move |s| {
            // Parents are created too, so the hierarchy has no holes.
            let parts: Vec<&str> = name.split('/').collect();
            for i in 1..parts.len() {
                match s.folder_create(&user, &parts[..i].join("/")) {
                    Ok(_) | Err(StoreError::Duplicate { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            s.folder_create(&user, &name).map(|_| ())
        })
        .await?;
        Ok(format!("{tag} OK CREATE completed\r\n"))
    }

    async fn select(
        &mut self,
        tag: &str,
        name: &[u8],
        read_only: bool,
        condstore: bool,
        conn: &mut Conn,
    ) -> Result<String, StoreError> {
        if self.leave_selected().await.is_some() {
            // RFC 7162 3.2.11 / RFC 9051: the old mailbox is closed first.
            conn.write(b"* OK [CLOSED] Previous mailbox closed\r\n");
        }
        if condstore {
            self.condstore = true;
        }
        let Some(name) = self.decode_name(name) else {
            return Ok(invalid_mailbox_name(tag));
        };
        let user = self.user.clone().unwrap_or_default();
        let snap = blocking(&self.svc.store, move |s| s.folder_snapshot(&user, &name)).await?;
        let recent = if !self.recent_allowed() {
            HashSet::new()
        } else if read_only {
            recent::unclaimed(&snap.folder, &snap.messages)
        } else {
            self.claim_recent(&snap.folder.name, &snap.messages, snap.folder.uidnext)
                .await
        };
        let mut keywords: Vec<String> = Vec::new();
        for m in &snap.messages {
            for f in &m.flags {
                if !f.starts_with('\\') && !keywords.contains(f) {
                    keywords.push(f.clone());
                }
            }
        }
        let kw = if keywords.is_empty() {
            String::new()
        } else {
            format!(" {}", keywords.join(" "))
        };
        let mut out = format!("* FLAGS ({SYSTEM_FLAGS}{kw})\r\n");
        if read_only {
            out.push_str("* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n");
        } else {
            out.push_str(&format!(
                "* OK [PERMANENTFLAGS ({SYSTEM_FLAGS}{kw} \\*)] Flags permitted\r\n"
            ));
        }
        out.push_str(&format!("* {} EXISTS\r\n", snap.messages.len()));
        let mut rev1_only = format!("* {} RECENT\r\n", recent.len());
        if let Some(i) = snap
            .messages
            .iter()
            .position(|m| !m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")))
        {
            rev1_only.push_str(&format!("* OK [UNSEEN {}] First unseen\r\n", i + 1));
        }
        let extras = self.select_extras(&snap.folder.name, rev1_only);
        out.push_str(&String::from_utf8_lossy(&extras));
        out.push_str(&format!(
            "* OK [UIDVALIDITY {}] UIDs valid\r\n* OK [UIDNEXT {}] Predicted next UID\r\n",
            snap.folder.uidvalidity, snap.folder.uidnext
        ));
        out.push_str(&format!(
            "* OK [HIGHESTMODSEQ {}] Highest\r\n",
            snap.folder.highestmodseq
        ));
        conn.write(out.as_bytes());
        self.selected = Some(Selected {
            name: snap.folder.name.clone(),
            read_only,
            modseq: snap.folder.highestmodseq,
            messages: snap.messages,
            saved: Vec::new(),
            recent,
            keywords,
        });
        let mode = if read_only { "READ-ONLY" } else { "READ-WRITE" };
        Ok(format!(
            "{tag} OK [{mode}] {} completed\r\n",
            if read_only { "EXAMINE" } else { "SELECT" }
        ))
    }

    /// Brings the selected mailbox up to date: new messages (EXISTS), flag
    /// changes by others (FETCH FLAGS) and, when allowed, expunges (EXPUNGE,
    /// highest sequence number first so each number is valid when sent).
    async fn sync(&mut self, conn: &mut Conn, allow_expunge: bool) {
        if let Some(rx) = self.changes.as_mut() {
            // Notices only wake IDLE; here the folder's modseq decides.
            while let Ok(_) | Err(TryRecvError::Lagged(_)) = rx.try_recv() {}
        }
        let Some(sel) = self.selected.as_ref() else {
            return;
        };
        let (user, name) = (self.user.clone().unwrap_or_default(), sel.name.clone());
        let known_modseq = sel.modseq;
        let folder: Result<Folder, StoreError> = {
            let (u, n) = (user.clone(), name.clone());
            blocking(&self.svc.store, move |s| s.folder_get(&u, &n)).await
        };
        let folder = match folder {
            Ok(f) => f,
            Err(StoreError::NotFound { .. }) => {
                // Deleted or renamed away by another session.
                conn.write(b"* BYE [NONEXISTENT] The selected mailbox no longer exists\r\n");
                self.selected = None;
                // RFC 3501 7.1.5: BYE means the server closes the connection.
                self.closing = true;
                return;
            }
            Err(_) => return,
        };
        if folder.highestmodseq == known_modseq {
            return;
        }
        let Ok(snap) = blocking(&self.svc.store, move |s| s.folder_snapshot(&user, &name)).await
        else {
            return;
        };
        if allow_expunge && !self.contexts.is_empty() {
            let now: HashSet<u32> = snap.messages.iter().map(|m| m.uid).collect();
            let gone: Vec<u32> = self.selected.as_ref().map_or(Vec::new(), |s| {
                s.messages
                    .iter()
                    .map(|m| m.uid)
                    .filter(|u| !now.contains(u))
                    .collect()
            });
            self.context_expunging(&gone, conn);
        }
        let (condstore, qresync) = (self.condstore, self.qresync);
        let recent_allowed = self.recent_allowed();
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        let current: HashMap<u32, &MessageMeta> =
            snap.messages.iter().map(|m| (m.uid, m)).collect();
        let mut out = String::new();
        if allow_expunge {
            let mut gone = Vec::new();
            let mut i = sel.messages.len();
            while i > 0 {
                if !current.contains_key(&sel.messages[i - 1].uid) {
                    gone.push((i, sel.messages.remove(i - 1).uid));
                }
                i -= 1;
            }
            qresync::expunged_lines(&mut out, qresync, &gone);
        }
        // EXISTS follows expunges (the count changed), not flag changes.
        let expunged = !out.is_empty();
        out.push_str(&keywords::announce(sel, &snap.messages));
        for (i, m) in sel.messages.iter_mut().enumerate() {
            if let Some(now) = current.get(&m.uid)
                && now.modseq != m.modseq
            {
                if now.flags != m.flags {
                    let modseq = if condstore {
                        format!(" MODSEQ ({})", now.modseq)
                    } else {
                        String::new()
                    };
                    out.push_str(&format!(
                        "* {} FETCH (UID {} FLAGS {}{modseq})\r\n",
                        i + 1,
                        m.uid,
                        recent::shown_flags(&now.flags, sel.recent.contains(&m.uid))
                    ));
                }
                *m = (*now).clone();
            }
        }
        let max_known = sel.messages.last().map(|m| m.uid).unwrap_or(0);
        let before = sel.messages.len();
        sel.messages
            .extend(snap.messages.iter().filter(|m| m.uid > max_known).cloned());
        let grew = sel.messages.len() != before;
        if grew || (allow_expunge && expunged) {
            out.push_str(&format!("* {} EXISTS\r\n", sel.messages.len()));
        }
        if grew && recent_allowed {
            let (name, view) = (sel.name.clone(), sel.messages[before..].to_vec());
            let claimed = if sel.read_only {
                recent::unclaimed(&snap.folder, &view)
            } else {
                self.claim_recent(&name, &view, snap.folder.uidnext).await
            };
            if let Some(sel) = self.selected.as_mut() {
                sel.recent.extend(claimed);
                out.push_str(&format!("* {} RECENT\r\n", recent::count(sel)));
            }
        }
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        // Only move the marker when everything (expunges too) was reported.
        if allow_expunge {
            sel.modseq = snap.folder.highestmodseq;
        }
        conn.write(out.as_bytes());
    }

    async fn idle(&mut self, tag: &str, conn: &mut Conn, shutdown: &mut ShutdownSignal) -> Flow {
        conn.write(b"+ idling\r\n");
        self.sync(conn, true).await;
        let idle = Duration::from_secs(self.svc.limits.idle_timeout_secs);
        let deadline = tokio::time::Instant::now() + idle;
        loop {
            if conn.flush().await.is_err() {
                return Flow::Close;
            }
            let user = self.user.clone().unwrap_or_default();
            let Some(rx) = self.changes.as_mut() else {
                return Flow::Close;
            };
            tokio::select! {
                biased;
                _ = shutdown.wait() => {
                    conn.write(b"* BYE [UNAVAILABLE] Server shutting down\r\n");
                    return Flow::Close;
                }
                line = tokio::time::timeout_at(deadline, conn.read_line(64)) => {
                    match line {
                        Ok(Ok(l)) if String::from_utf8_lossy(&l).trim().eq_ignore_ascii_case("DONE") => {
                            conn.write(format!("{tag} OK IDLE terminated\r\n").as_bytes());
                            return Flow::Continue;
                        }
                        Ok(Ok(_)) | Ok(Err(LineError::TooLong)) => {
                            conn.write(format!("{tag} BAD [CLIENTBUG] Expected DONE\r\n").as_bytes());
                            return Flow::Continue;
                        }
                        Ok(Err(_)) => return Flow::Close,
                        Err(_) => {
                            conn.write(b"* BYE Autologout; idle for too long\r\n");
                            return Flow::Close;
                        }
                    }
                }
                notice = rx.recv() => {
                    let relevant = match notice {
                        Ok(m) => *m == *user,
                        Err(_) => true,
                    };
                    if relevant && self.selected.is_some() {
                        self.sync(conn, true).await;
                    }
                    if relevant {
                        self.notify_push(conn, false).await;
                    }
                }
            }
        }
    }

    fn status_line(
        &self,
        name: &str,
        folder: &Folder,
        messages: &[MessageMeta],
        items: &[StatusItem],
    ) -> Vec<u8> {
        let mut parts = Vec::new();
        for item in items {
            parts.push(match item {
                StatusItem::Messages => format!("MESSAGES {}", messages.len()),
                // Not yet claimed by a session (session/recent.rs).
                StatusItem::Recent => format!(
                    "RECENT {}",
                    messages
                        .iter()
                        .filter(|m| m.uid >= folder.first_recent_uid)
                        .count()
                ),
                StatusItem::UidNext => format!("UIDNEXT {}", folder.uidnext),
                StatusItem::UidValidity => format!("UIDVALIDITY {}", folder.uidvalidity),
                StatusItem::Unseen => format!(
                    "UNSEEN {}",
                    messages
                        .iter()
                        .filter(|m| !m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")))
                        .count()
                ),
                StatusItem::Size => {
                    format!("SIZE {}", messages.iter().map(|m| m.size).sum::<u64>())
                }
                StatusItem::HighestModSeq => format!("HIGHESTMODSEQ {}", folder.highestmodseq),
                StatusItem::Deleted => format!(
                    "DELETED {}",
                    messages
                        .iter()
                        .filter(|m| m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Deleted")))
                        .count()
                ),
            });
        }
        let mut out = b"* STATUS ".to_vec();
        out.extend_from_slice(&self.quoted_name(name));
        out.extend_from_slice(format!(" ({})\r\n", parts.join(" ")).as_bytes());
        out
    }

    async fn status(
        &mut self,
        tag: &str,
        name: &[u8],
        items: &[StatusItem],
        conn: &mut Conn,
    ) -> Result<String, StoreError> {
        let Some(name) = self.decode_name(name) else {
            return Ok(invalid_mailbox_name(tag));
        };
        let user = self.user.clone().unwrap_or_default();
        let snap = blocking(&self.svc.store, move |s| s.folder_snapshot(&user, &name)).await?;
        conn.write(&self.status_line(&snap.folder.name, &snap.folder, &snap.messages, items));
        Ok(format!("{tag} OK STATUS completed\r\n"))
    }

    async fn append(
        &mut self,
        tag: &str,
        name: &[u8],
        flags: Vec<String>,
        date: Option<i64>,
        message: Vec<u8>,
    ) -> Result<String, StoreError> {
        let Some(name) = self.decode_name(name) else {
            return Ok(invalid_mailbox_name(tag));
        };
        if message.is_empty() {
            return Ok(format!("{tag} NO [CANNOT] Empty message\r\n"));
        }
        // The health monitor stops new mail before the data file system is
        // full (issue 6): APPEND is refused like a full disk, until space is
        // back. [OVERQUOTA] (RFC 5530) is what clients show as "disk full".
        if let Some(reason) = self.svc.store.intake_refusal() {
            warn!(%reason, "APPEND refused: the health monitor stopped new mail");
            return Ok(format!(
                "{tag} NO [OVERQUOTA] Insufficient system storage, try again later\r\n"
            ));
        }
        let flags: Vec<String> = flags
            .into_iter()
            .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
            .collect();
        let user = self.user.clone().unwrap_or_default();
        let result = blocking(&self.svc.store, move |s| {
            s.append(&user, &name, &message, &flags, date)
        })
        .await;
        match result {
            Ok((validity, uid)) => Ok(format!(
                "{tag} OK [APPENDUID {validity} {uid}] APPEND completed\r\n"
            )),
            Err(StoreError::NotFound { kind: "folder", .. }) => {
                Ok(format!("{tag} NO [TRYCREATE] No such mailbox\r\n"))
            }
            Err(e) => Err(e),
        }
    }

    /// Sequence numbers (1-based) of the messages a set names.
    fn resolve(&self, uid: bool, set: &SequenceSet) -> Result<Vec<usize>, String> {
        let Some(sel) = self.selected.as_ref() else {
            return Ok(vec![]);
        };
        let n = sel.messages.len() as u32;
        if uid {
            let max_uid = sel.messages.last().map(|m| m.uid).unwrap_or(0);
            // Nonexistent UIDs are simply not there (RFC 3501 6.4.8).
            return Ok((0..sel.messages.len())
                .filter(|&i| set.contains(sel.messages[i].uid, max_uid))
                .map(|i| i + 1)
                .collect());
        }
        if set.max_named(n) > n || (n == 0 && !set.0.is_empty()) {
            return Err("Invalid message sequence number".into());
        }
        Ok((1..=n)
            .filter(|&i| set.contains(i, n))
            .map(|i| i as usize)
            .collect())
    }

    async fn expunge(
        &mut self,
        tag: &str,
        set: Option<SequenceSet>,
        conn: &mut Conn,
    ) -> Result<String, StoreError> {
        let Some(sel) = self.selected.as_ref() else {
            return Ok(format!("{tag} BAD No mailbox selected\r\n"));
        };
        if sel.read_only {
            return Ok(format!("{tag} NO [READ-ONLY] Mailbox is read-only\r\n"));
        }
        let only: Option<Vec<u32>> = match &set {
            Some(s) => {
                let max_uid = sel.messages.last().map(|m| m.uid).unwrap_or(0);
                Some(
                    sel.messages
                        .iter()
                        .map(|m| m.uid)
                        .filter(|&u| s.contains(u, max_uid))
                        .collect(),
                )
            }
            None => None,
        };
        let (user, name) = (self.user.clone().unwrap_or_default(), sel.name.clone());
        let (removed, folder) = blocking(&self.svc.store, move |s| {
            let removed = s.expunge(&user, &name, only.as_deref())?;
            Ok((removed, s.folder_get(&user, &name)?))
        })
        .await?;
        self.report_expunged(&removed, conn);
        // RFC 7162 3.2.7/3.2.9: with QRESYNC the tagged OK of EXPUNGE and UID
        // EXPUNGE carries HIGHESTMODSEQ, read right after this expunge
        // (changes committed later are reported before it, or are above
        // it: never a value past what the client has been told).
        if self.qresync {
            return Ok(format!(
                "{tag} OK [HIGHESTMODSEQ {}] EXPUNGE completed\r\n",
                folder.highestmodseq
            ));
        }
        Ok(format!("{tag} OK EXPUNGE completed\r\n"))
    }

    fn report_expunged(&mut self, removed: &[u32], conn: &mut Conn) {
        self.context_expunging(removed, conn);
        let qresync = self.qresync;
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        let removed: HashSet<u32> = removed.iter().copied().collect();
        let mut out = String::new();
        let mut gone = Vec::new();
        let mut i = sel.messages.len();
        while i > 0 {
            if removed.contains(&sel.messages[i - 1].uid) {
                gone.push((i, sel.messages.remove(i - 1).uid));
            }
            i -= 1;
        }
        qresync::expunged_lines(&mut out, qresync, &gone);
        conn.write(out.as_bytes());
    }

    async fn search(
        &mut self,
        tag: &str,
        uid: bool,
        criteria: SearchKey,
        esearch: Option<ReturnOpts>,
        conn: &mut Conn,
    ) -> Result<String, StoreError> {
        let Some(sel) = self.selected.as_ref() else {
            return Ok(format!("{tag} BAD No mailbox selected\r\n"));
        };
        let esearch = self.search_return(esearch);
        let messages: Vec<MessageMeta> = sel
            .messages
            .iter()
            .map(|m| recent::with_recent(m, &sel.recent))
            .collect();
        let modseq = sort::uses_modseq(&criteria);
        let store = self.svc.store.clone();
        let update = esearch
            .as_ref()
            .is_some_and(|o| o.update)
            .then(|| criteria.clone());
        let hits: Vec<sort::Hit> = mxrack_store::spawn_blocking(move || {
            sort::evaluate(&store, &messages, &criteria, false, |hit, _, _| hit)
        })
        .await
        .map_err(|e| StoreError::Db(format!("search failed: {e}")))??;
        let esearch = match self.save_result(esearch, &hits) {
            searchres::Saved::Answer(e) => e,
            searchres::Saved::Quiet => return Ok(format!("{tag} OK SEARCH completed\r\n")),
            searchres::Saved::Refused => {
                return Ok(format!(
                    "{tag} NO [NOTSAVED] Result too fragmented to save\r\n"
                ));
            }
        };
        let line = match &esearch {
            None => sort::number_list("SEARCH", uid, &hits, modseq),
            Some(opts) => sort::esearch_line(tag, uid, opts, &hits, false, modseq),
        };
        conn.write(line.as_bytes());
        if let Some(criteria) = update {
            self.start_update(tag, uid, criteria, &hits, conn);
        }
        Ok(format!("{tag} OK SEARCH completed\r\n"))
    }

    async fn fetch(
        &mut self,
        tag: &str,
        uid: bool,
        set: &SequenceSet,
        items: Vec<FetchAtt>,
        changed_since: Option<u64>,
        conn: &mut Conn,
    ) -> Result<String, StoreError> {
        self.fetch_as(
            tag,
            uid,
            set,
            items,
            changed_since,
            FetchMode::Command,
            conn,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn fetch_as(
        &mut self,
        tag: &str,
        uid: bool,
        set: &SequenceSet,
        mut items: Vec<FetchAtt>,
        changed_since: Option<u64>,
        mode: FetchMode,
        conn: &mut Conn,
    ) -> Result<String, StoreError> {
        let seqs = match self.resolve(uid, set) {
            Ok(s) => s,
            Err(why) => return Ok(format!("{tag} BAD [CLIENTBUG] {why}\r\n")),
        };
        // Once QRESYNC is enabled every FETCH response carries the UID
        // (RFC 7162 3.2.4), as UID FETCH and CHANGEDSINCE always do.
        if (uid || changed_since.is_some() || self.qresync) && !items.contains(&FetchAtt::Uid) {
            items.insert(0, FetchAtt::Uid);
        }
        if changed_since.is_some() && !items.contains(&FetchAtt::ModSeq) {
            items.push(FetchAtt::ModSeq);
        }
        let Some(sel) = self.selected.as_ref() else {
            return Ok(format!("{tag} BAD No mailbox selected\r\n"));
        };
        let read_only = sel.read_only;
        let needs_structure = items.iter().any(|i| {
            matches!(
                i,
                FetchAtt::Envelope | FetchAtt::Body | FetchAtt::BodyStructure
            )
        });
        let needs_raw = items.iter().any(|i| {
            matches!(
                i,
                FetchAtt::Rfc822
                    | FetchAtt::Rfc822Header
                    | FetchAtt::Rfc822Text
                    | FetchAtt::Section { .. }
                    | FetchAtt::Binary { .. }
                    | FetchAtt::BinarySize { .. }
            )
        });
        let sets_seen = !read_only
            && mode == FetchMode::Command
            && items.iter().any(|i| {
                matches!(
                    i,
                    FetchAtt::Rfc822
                        | FetchAtt::Rfc822Text
                        | FetchAtt::Section { peek: false, .. }
                        | FetchAtt::Binary { peek: false, .. }
                )
            });
        // Mark \Seen first so the FLAGS in the response are the new ones (RFC 3501 6.4.5).
        if sets_seen {
            let unseen: Vec<u32> = seqs
                .iter()
                .map(|&s| &sel.messages[s - 1])
                .filter(|m| !m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")))
                .map(|m| m.uid)
                .collect();
            if !unseen.is_empty() {
                let (user, name) = (self.user.clone().unwrap_or_default(), sel.name.clone());
                let changed = blocking(&self.svc.store, move |s| {
                    s.set_flags(&user, &name, &unseen, FlagOp::Add, &["\\Seen".to_string()])
                })
                .await?;
                self.apply_changed(&changed);
                if !items.contains(&FetchAtt::Flags) {
                    items.push(FetchAtt::Flags);
                }
                // RFC 7162 3.2.4: with QRESYNC, a FETCH that set \Seen
                // carries the new MODSEQ beside the UID.
                if self.qresync && !items.contains(&FetchAtt::ModSeq) {
                    items.push(FetchAtt::ModSeq);
                }
            }
        }
        let Some(sel) = self.selected.as_ref() else {
            return Ok(format!("{tag} BAD No mailbox selected\r\n"));
        };
        let mut missing = false;
        let mut unknown_cte = None;
        let items = Arc::new(items);
        let metas: Vec<(usize, MessageMeta)> = seqs
            .iter()
            .map(|&seq| {
                (
                    seq,
                    recent::with_recent(&sel.messages[seq - 1], &sel.recent),
                )
            })
            .filter(|(_, m)| changed_since.is_none_or(|c| m.modseq > c))
            .collect();
        // Messages are read and rendered in batches on a blocking thread:
        // parsing stays off the async workers, and a FETCH 1:* of a large
        // mailbox costs one task per batch, not one per message. A batch
        // that reads messages holds them and their rendering at once: it is
        // cut at FETCH_BATCH_BYTES and leased from the shared memory budget
        // (issue 10) until it is sent.
        let reads = needs_raw || needs_structure;
        for batch in fetch_batches(&metas, reads) {
            let lease_bytes = if reads {
                batch
                    .iter()
                    .map(|(_, m)| m.size.saturating_mul(2))
                    .sum::<u64>()
            } else {
                0
            };
            let lease = if lease_bytes > 0 {
                match mxrack_net::budget::global().lease(lease_bytes).await {
                    Some(lease) => Some(lease),
                    None => {
                        warn!("FETCH refused: the memory budget for client data is spent");
                        return Ok(format!(
                            "{tag} NO [UNAVAILABLE] Server busy, try again later\r\n"
                        ));
                    }
                }
            } else {
                None
            };
            let (store, items, batch) = (self.svc.store.clone(), items.clone(), batch.to_vec());
            let rendered = mxrack_store::spawn_blocking(move || {
                let mut out = Vec::new();
                let (mut missing, mut unknown_cte) = (false, None);
                let has_binary = binary::wanted(&items);
                for (seq, meta) in &batch {
                    let structure = if needs_structure {
                        fetch::cached_structure(meta.blob)
                    } else {
                        None
                    };
                    let raw = if needs_raw || (needs_structure && structure.is_none()) {
                        match store.read_blob(meta.blob) {
                            Ok(r) => Some(r),
                            Err(_) => {
                                // Expunged by another session since our last sync.
                                missing = true;
                                continue;
                            }
                        }
                    } else {
                        None
                    };
                    // RFC 3516 4.3: no response for a part it cannot decode.
                    if has_binary
                        && let Some(e) = raw.as_deref().and_then(|r| binary::unknown_cte(&items, r))
                    {
                        unknown_cte = Some(e);
                        continue;
                    }
                    out.extend_from_slice(format!("* {seq} FETCH (").as_bytes());
                    render_items(&mut out, &items, meta, raw.as_deref(), structure);
                    out.extend_from_slice(b")\r\n");
                }
                (out, missing, unknown_cte)
            })
            .await;
            let Ok((out, batch_missing, batch_cte)) = rendered else {
                return Ok(format!("{tag} NO [SERVERBUG] FETCH failed\r\n"));
            };
            missing |= batch_missing;
            unknown_cte = unknown_cte.or(batch_cte);
            conn.write(&out);
            drop(out);
            // A leased batch is sent before its lease is given back.
            if (lease.is_some() || conn.buffered_output() > OUTPUT_FLUSH_BYTES)
                && conn.flush().await.is_err()
            {
                return Ok(String::new());
            }
            drop(lease);
        }
        if let Some(fetch::binary::UnknownCte(cte)) = unknown_cte {
            return Ok(format!(
                "{tag} NO [UNKNOWN-CTE] Cannot decode content transfer encoding {cte:?}\r\n"
            ));
        }
        if missing {
            return Ok(format!(
                "{tag} NO [EXPUNGEISSUED] Some messages were expunged\r\n"
            ));
        }
        Ok(format!("{tag} OK FETCH completed\r\n"))
    }

    fn apply_changed(&mut self, changed: &[MessageMeta]) {
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        let by_uid: HashMap<u32, &MessageMeta> = changed.iter().map(|m| (m.uid, m)).collect();
        for m in sel.messages.iter_mut() {
            if let Some(c) = by_uid.get(&m.uid) {
                *m = (*c).clone();
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn store(
        &mut self,
        tag: &str,
        uid: bool,
        set: &SequenceSet,
        op: StoreOp,
        silent: bool,
        flags: Vec<String>,
        unchanged_since: Option<u64>,
        conn: &mut Conn,
    ) -> Result<String, StoreError> {
        let seqs = match self.resolve(uid, set) {
            Ok(s) => s,
            Err(why) => return Ok(format!("{tag} BAD [CLIENTBUG] {why}\r\n")),
        };
        let Some(sel) = self.selected.as_ref() else {
            return Ok(format!("{tag} BAD No mailbox selected\r\n"));
        };
        if sel.read_only {
            return Ok(format!("{tag} NO [READ-ONLY] Mailbox is read-only\r\n"));
        }
        let flags: Vec<String> = flags
            .into_iter()
            .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
            .collect();
        let mut modified = Vec::new();
        let mut uids = Vec::new();
        for &s in &seqs {
            let m = &sel.messages[s - 1];
            if unchanged_since.is_some_and(|u| m.modseq > u) {
                modified.push(if uid { m.uid } else { s as u32 });
            } else {
                uids.push(m.uid);
            }
        }
        let op = match op {
            StoreOp::Add => FlagOp::Add,
            StoreOp::Remove => FlagOp::Remove,
            StoreOp::Replace => FlagOp::Replace,
        };
        let (user, name) = (self.user.clone().unwrap_or_default(), sel.name.clone());
        let store_uids = uids.clone();
        let changed = blocking(&self.svc.store, move |s| {
            s.set_flags(&user, &name, &store_uids, op, &flags)
        })
        .await?;
        self.apply_changed(&changed);
        if let Some(sel) = self.selected.as_mut() {
            conn.write(keywords::announce(sel, &changed).as_bytes());
        }
        if !silent {
            let Some(sel) = self.selected.as_ref() else {
                return Ok(String::new());
            };
            let wanted: HashSet<u32> = uids.iter().copied().collect();
            let mut out = String::new();
            for (i, m) in sel.messages.iter().enumerate() {
                if wanted.contains(&m.uid) {
                    let modseq = if self.condstore {
                        format!(" MODSEQ ({})", m.modseq)
                    } else {
                        String::new()
                    };
                    // RFC 7162 3.2.4: with QRESYNC, UID in every FETCH.
                    let uid_item = if uid || self.qresync {
                        format!(" UID {}", m.uid)
                    } else {
                        String::new()
                    };
                    out.push_str(&format!(
                        "* {} FETCH (FLAGS {}{uid_item}{modseq})\r\n",
                        i + 1,
                        recent::shown_flags(&m.flags, sel.recent.contains(&m.uid))
                    ));
                }
            }
            conn.write(out.as_bytes());
        }
        if !modified.is_empty() {
            return Ok(format!(
                "{tag} OK [MODIFIED {}] Conditional STORE failed for some\r\n",
                SequenceSet::compact(&modified)
            ));
        }
        Ok(format!("{tag} OK STORE completed\r\n"))
    }

    async fn copy(
        &mut self,
        tag: &str,
        uid: bool,
        set: &SequenceSet,
        target: &[u8],
        is_move: bool,
        conn: &mut Conn,
    ) -> Result<String, StoreError> {
        let seqs = match self.resolve(uid, set) {
            Ok(s) => s,
            Err(why) => return Ok(format!("{tag} BAD [CLIENTBUG] {why}\r\n")),
        };
        let Some(target) = self.decode_name(target) else {
            return Ok(invalid_mailbox_name(tag));
        };
        let Some(sel) = self.selected.as_ref() else {
            return Ok(format!("{tag} BAD No mailbox selected\r\n"));
        };
        if is_move && sel.read_only {
            return Ok(format!("{tag} NO [READ-ONLY] Mailbox is read-only\r\n"));
        }
        let uids: Vec<u32> = seqs.iter().map(|&s| sel.messages[s - 1].uid).collect();
        let verb = if is_move { "MOVE" } else { "COPY" };
        if uids.is_empty() {
            return Ok(format!("{tag} OK {verb} completed (no messages)\r\n"));
        }
        let (user, name) = (self.user.clone().unwrap_or_default(), sel.name.clone());
        let blobs: Vec<u64> = seqs.iter().map(|&s| sel.messages[s - 1].blob).collect();
        let (u, n, t) = (user.clone(), name.clone(), target.clone());
        let result = blocking(&self.svc.store, move |s| {
            s.copy_messages(&u, &n, &uids, &t, is_move)
        })
        .await;
        if result.is_ok() {
            self.learn_from_junk_moves(&user, &name, &target, blobs);
        }
        let (validity, pairs) = match result {
            Ok(r) => r,
            Err(StoreError::NotFound { kind: "folder", .. }) => {
                return Ok(format!("{tag} NO [TRYCREATE] No such mailbox\r\n"));
            }
            Err(e) => return Err(e),
        };
        let src: Vec<u32> = pairs.iter().map(|p| p.0).collect();
        let dst: Vec<u32> = pairs.iter().map(|p| p.1).collect();
        // COPYUID lists the UIDs in matching order (RFC 4315 4.3), so no compaction that could reorder.
        let join = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let code = format!("[COPYUID {validity} {} {}]", join(&src), join(&dst));
        if is_move {
            // RFC 6851 4.3: COPYUID goes in an untagged OK before the EXPUNGEs.
            conn.write(format!("* OK {code} Moved\r\n").as_bytes());
            self.report_expunged(&src, conn);
            return Ok(format!("{tag} OK MOVE completed\r\n"));
        }
        Ok(format!("{tag} OK {code} COPY completed\r\n"))
    }

    /// A message put into Junk teaches the classifier "spam"; one taken out
    /// of Junk (anywhere but Trash) teaches "ham". Runs in the background:
    /// the client's COPY/MOVE does not wait for it.
    fn learn_from_junk_moves(&self, user: &str, from: &str, to: &str, blobs: Vec<u64>) {
        let Some(scorer) = self.svc.scorer.clone() else {
            return;
        };
        let store = self.svc.store.clone();
        let (user, from, to) = (user.to_string(), from.to_string(), to.to_string());
        mxrack_store::spawn_blocking(move || {
            let use_of = |name: &str| {
                store
                    .folder_get(&user, name)
                    .ok()
                    .and_then(|f| f.special_use)
            };
            let (src, dst) = (use_of(&from), use_of(&to));
            let spam = match (src.as_deref(), dst.as_deref()) {
                (s, Some("\\Junk")) if s != Some("\\Junk") => true,
                (Some("\\Junk"), d) if d != Some("\\Junk") && d != Some("\\Trash") => false,
                _ => return,
            };
            for blob in blobs {
                if let Ok(message) = store.read_blob(blob)
                    && let Err(e) = scorer.train(&message, spam)
                {
                    warn!(error = %e, "cannot train the spam classifier");
                }
            }
            info!(user = %user, spam, "classifier trained from a Junk move");
        });
    }

    async fn quota_figures(&self) -> Result<(u64, Option<u64>), StoreError> {
        let user = self.user.clone().unwrap_or_default();
        blocking(&self.svc.store, move |s| {
            Ok((s.mailbox_usage(&user)?, s.mailbox_get(&user)?.quota_bytes))
        })
        .await
    }

    async fn get_quota(
        &mut self,
        tag: &str,
        root: &[u8],
        conn: &mut Conn,
    ) -> Result<String, StoreError> {
        if !root.is_empty() {
            return Ok(format!("{tag} NO [NONEXISTENT] No such quota root\r\n"));
        }
        let (used, limit) = self.quota_figures().await?;
        if let Some(limit) = limit {
            // RFC 9208 5.1: STORAGE in units of 1024 octets.
            conn.write(
                format!(
                    "* QUOTA \"\" (STORAGE {} {})\r\n",
                    used.div_ceil(1024),
                    limit / 1024
                )
                .as_bytes(),
            );
        } else {
            return Ok(format!("{tag} NO [NONEXISTENT] No quota set\r\n"));
        }
        Ok(format!("{tag} OK GETQUOTA completed\r\n"))
    }

    async fn get_quota_root(
        &mut self,
        tag: &str,
        mailbox: &[u8],
        conn: &mut Conn,
    ) -> Result<String, StoreError> {
        let Some(name) = self.decode_name(mailbox) else {
            return Ok(invalid_mailbox_name(tag));
        };
        let user = self.user.clone().unwrap_or_default();
        let n = name.clone();
        blocking(&self.svc.store, move |s| s.folder_get(&user, &n)).await?;
        let (used, limit) = self.quota_figures().await?;
        let mut out = b"* QUOTAROOT ".to_vec();
        out.extend_from_slice(&self.quoted_name(&name));
        match limit {
            Some(limit) => {
                out.extend_from_slice(b" \"\"\r\n");
                out.extend_from_slice(
                    format!(
                        "* QUOTA \"\" (STORAGE {} {})\r\n",
                        used.div_ceil(1024),
                        limit / 1024
                    )
                    .as_bytes(),
                );
            }
            None => out.extend_from_slice(b"\r\n"),
        }
        conn.write(&out);
        Ok(format!("{tag} OK GETQUOTAROOT completed\r\n"))
    }
}

fn section_name(section: &Section) -> String {
    let mut s: Vec<String> = section.part.iter().map(u32::to_string).collect();
    match &section.text {
        None => {}
        Some(SectionText::Header) => s.push("HEADER".into()),
        Some(SectionText::Text) => s.push("TEXT".into()),
        Some(SectionText::Mime) => s.push("MIME".into()),
        Some(SectionText::HeaderFields { not, fields }) => {
            let quoted: Vec<String> = fields.iter().map(|f| f.to_ascii_uppercase()).collect();
            s.push(format!(
                "HEADER.FIELDS{} ({})",
                if *not { ".NOT" } else { "" },
                quoted.join(" ")
            ));
        }
    }
    s.join(".")
}

/// One message's FETCH items, in the order asked.
/// One message's FETCH items, in the order asked. `structure` is the cached
/// ENVELOPE/BODYSTRUCTURE when known; else it is computed from `raw` (and
/// remembered).
fn render_items(
    out: &mut Vec<u8>,
    items: &[FetchAtt],
    meta: &MessageMeta,
    raw: Option<&[u8]>,
    structure: Option<Arc<fetch::Structure>>,
) {
    let parsed = raw.and_then(fetch::parse);
    let structure = structure.or_else(|| {
        let wanted = items.iter().any(|i| {
            matches!(
                i,
                FetchAtt::Envelope | FetchAtt::Body | FetchAtt::BodyStructure
            )
        });
        match (&parsed, wanted) {
            (Some(p), true) => Some(fetch::remember_structure(
                meta.blob,
                fetch::Structure::of(p),
            )),
            _ => None,
        }
    });
    let mut first = true;
    for item in items {
        if !first {
            out.push(b' ');
        }
        first = false;
        match item {
            FetchAtt::Uid => out.extend_from_slice(format!("UID {}", meta.uid).as_bytes()),
            FetchAtt::Flags => {
                out.extend_from_slice(format!("FLAGS {}", flag_list(&meta.flags)).as_bytes())
            }
            FetchAtt::InternalDate => out.extend_from_slice(
                format!("INTERNALDATE \"{}\"", imap_date_time(meta.internal_date)).as_bytes(),
            ),
            FetchAtt::Rfc822Size => {
                out.extend_from_slice(format!("RFC822.SIZE {}", meta.size).as_bytes())
            }
            FetchAtt::ModSeq => {
                out.extend_from_slice(format!("MODSEQ ({})", meta.modseq).as_bytes())
            }
            FetchAtt::Envelope => {
                out.extend_from_slice(b"ENVELOPE ");
                match &structure {
                    Some(s) => out.extend_from_slice(&s.envelope),
                    None => out.extend_from_slice(b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"),
                }
            }
            FetchAtt::Body | FetchAtt::BodyStructure => {
                let ext = *item == FetchAtt::BodyStructure;
                out.extend_from_slice(if ext { b"BODYSTRUCTURE " } else { b"BODY " });
                match &structure {
                    Some(s) => out.extend_from_slice(if ext { &s.bodystructure } else { &s.body }),
                    None => out.extend_from_slice(b"(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 0 0)"),
                }
            }
            FetchAtt::Rfc822 => {
                out.extend_from_slice(b"RFC822 ");
                nstring(out, raw.map(crate::nul::literal_safe).as_deref());
            }
            FetchAtt::Rfc822Header | FetchAtt::Rfc822Text => {
                let text = if *item == FetchAtt::Rfc822Header {
                    SectionText::Header
                } else {
                    SectionText::Text
                };
                let name = if *item == FetchAtt::Rfc822Header {
                    "RFC822.HEADER "
                } else {
                    "RFC822.TEXT "
                };
                out.extend_from_slice(name.as_bytes());
                let bytes = match (raw, &parsed) {
                    (Some(r), Some(p)) => fetch::section_bytes(
                        r,
                        p,
                        &Section {
                            part: vec![],
                            text: Some(text),
                        },
                    ),
                    _ => None,
                };
                response::string(
                    out,
                    &crate::nul::literal_safe(bytes.as_deref().unwrap_or(b"")),
                );
            }
            FetchAtt::Section {
                section, partial, ..
            } => {
                let bytes = match (raw, &parsed) {
                    (Some(r), Some(p)) => fetch::section_bytes(r, p, section).unwrap_or_default(),
                    (Some(r), None) if section.part.is_empty() && section.text.is_none() => {
                        r.to_vec()
                    }
                    _ => Vec::new(),
                };
                out.extend_from_slice(format!("BODY[{}]", section_name(section)).as_bytes());
                let bytes = match partial {
                    Some((start, len)) => {
                        out.extend_from_slice(format!("<{start}>").as_bytes());
                        let s = (*start as usize).min(bytes.len());
                        let e = s.saturating_add(*len as usize).min(bytes.len());
                        bytes[s..e].to_vec()
                    }
                    None => bytes,
                };
                out.push(b' ');
                response::literal(out, &crate::nul::literal_safe(&bytes));
            }
            FetchAtt::Binary { .. } | FetchAtt::BinarySize { .. } => {
                binary::render(out, item, raw.unwrap_or_default(), parsed.as_ref())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uid: u32, size: u64) -> (usize, MessageMeta) {
        let m = MessageMeta {
            uid,
            blob: uid.into(),
            size,
            internal_date: 0,
            flags: vec![],
            modseq: 1,
        };
        (uid as usize, m)
    }

    #[test]
    fn fetch_batches_are_cut_by_bytes_when_messages_are_read() {
        let mb = 1024 * 1024;
        let metas: Vec<_> = [1, 2, 2, 30, 1, 1]
            .iter()
            .zip(1..)
            .map(|(n, uid)| meta(uid, n * mb))
            .collect();
        let sizes = |b: Vec<&[(usize, MessageMeta)]>| -> Vec<Vec<u32>> {
            b.iter()
                .map(|b| b.iter().map(|(_, m)| m.uid).collect())
                .collect()
        };
        // 1+2 fit in 4 MiB, another 2 does not; a 30 MiB message is alone.
        assert_eq!(
            sizes(fetch_batches(&metas, true)),
            vec![vec![1, 2], vec![3], vec![4], vec![5, 6]]
        );
        // FLAGS-only FETCH reads no message: one batch.
        assert_eq!(
            sizes(fetch_batches(&metas, false)),
            vec![vec![1, 2, 3, 4, 5, 6]]
        );
        // And never more than FETCH_BATCH_MESSAGES per batch.
        let many: Vec<_> = (1..=600).map(|uid| meta(uid, 10)).collect();
        let lens: Vec<usize> = fetch_batches(&many, true).iter().map(|b| b.len()).collect();
        assert_eq!(lens, vec![256, 256, 88]);
    }

    #[test]
    fn list_patterns() {
        assert!(matches_list_pattern("*", "Work/2026"));
        assert!(matches_list_pattern("%", "Work"));
        assert!(!matches_list_pattern("%", "Work/2026"));
        assert!(matches_list_pattern("Work/%", "Work/2026"));
        assert!(matches_list_pattern("inbox", "INBOX"));
        assert!(matches_list_pattern("S*", "Sent"));
        assert!(
            !matches_list_pattern("abcdé*", "INBOX"),
            "a multi-byte char at byte 5 must not panic"
        );
        assert!(!matches_list_pattern("S*", "Trash"));
    }

    #[test]
    fn list_patterns_match_like_the_rfc_in_linear_time() {
        let table = [
            ("*", "", true),
            ("%", "", true),
            ("", "", true),
            ("", "a", false),
            ("a%b", "a/b", false),
            ("a%b", "axxb", true),
            ("a*b", "a/x/b", true),
            ("%/%", "a/b", true),
            ("%/%", "a/b/c", false),
            ("%/*", "a/b/c", true),
            ("*/%", "a/b/c", true),
            ("%%%/%", "a/b", true),
            ("%*%", "a/b", true),
            ("W%k/2*6", "Work/2026", true),
            ("W%k/2*6", "Work/2027", false),
            ("*x", "abc", false),
            ("a%", "a/", false),
            ("a%/", "a/", true),
        ];
        for (p, n, want) in table {
            assert_eq!(matches_list_pattern(p, n), want, "{p:?} {n:?}");
        }
        // 60,000 stars overflowed the stack (one recursion per star); 100
        // `%*` pairs took exponential time. Both are instant now.
        let started = std::time::Instant::now();
        let stars = format!("{}x", "*".repeat(60_000));
        let pairs = format!("{}x", "%*".repeat(100));
        let mixed = format!("{}x", "%a".repeat(2_000));
        let name = "a/".repeat(200) + "y";
        for p in [&stars, &pairs, &mixed] {
            assert!(!matches_list_pattern(p, &name));
            assert_eq!(matches_list_pattern(p, "INBOX/x"), !p.contains('a'));
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn internal_dates_render() {
        assert_eq!(imap_date_time(1_168_278_360), "08-Jan-2007 17:46:00 +0000");
    }
}
