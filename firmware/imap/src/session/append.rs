//! APPEND with its messages streamed to the store (RFC 3501 6.3.11, RFC
//! 4315 APPENDUID, RFC 7888 LITERAL+, MULTIAPPEND RFC 3502, CATENATE RFC
//! 4469, literal8 RFC 3516): `read_command` stops after the mailbox name;
//! the rest is lexed line by line (`parser::AppendLexer`). Everything that
//! can refuse a message (size, arguments, name, intake gate, folder, quota
//! with the announced size, the memory budget) is decided before a byte
//! of it is read, then each literal goes in chunks of `LITERAL_CHUNK_BYTES`
//! into an `IncomingMessage` (the message file), finished when the
//! message ends; the store commits all the messages of the command in one
//! transaction at its end. Memory per session stays one chunk plus the
//! store's 64 KiB buffer, whatever the size or number of messages
//! (CATENATE URL parts: the referenced message, leased like FETCH).
//!
//! A refused synchronizing literal gets its answer instead of "+", so the
//! client sends nothing; a refused non-synchronizing one (LITERAL+: the
//! client is already sending) is read and dropped, then answered.
//!
//! The whole APPEND, its messages and the line end after them, must be in
//! by the command's deadline (`imap.command_timeout_secs` from its first
//! byte, set by the session loop); between chunks the idle wait applies too.

use std::time::Duration;

use mxrack_net::{Conn, LineError, ShutdownSignal};
use mxrack_store::{AppendedFile, IncomingMessage, StoreError};
use tokio::time::{Instant, timeout_at};
use tracing::warn;

use super::{Flow, Session, blocking, store_error};
use crate::parser::{Announced, AppendHead, AppendLexer, AppendToken, literal_announced};
use crate::sequence::SequenceSet;

/// Bytes of a literal read from the connection at a time.
const LITERAL_CHUNK_BYTES: usize = 64 * 1024;
/// What an APPEND leases from the memory budget while its literal streams:
/// the chunk it reads into and the store's write buffer.
const APPEND_LEASE_BYTES: u64 = (LITERAL_CHUNK_BYTES + mxrack_store::INCOMING_CHUNK_BYTES) as u64;

/// Most messages in one APPEND (MULTIAPPEND, RFC 3502 3: a server may
/// limit them). Each finished message is a file fsynced and waiting for
/// the command's one commit: the limit bounds that work, the list of
/// waiting files and the size of the transaction. Past it: `NO [LIMIT]`
/// (RFC 5530), nothing stored.
pub const APPEND_MESSAGES_MAX: usize = 1_000;

/// Most parts (TEXT and URL) of one CATENATE message (RFC 4469 sets no
/// number). Its size is bounded by `imap.max_literal_bytes` already; each
/// URL part reads a whole message, so the number of parts bounds the work.
/// Past it: `NO [LIMIT]`, nothing stored.
pub const CATENATE_PARTS_MAX: usize = 256;

/// Why reading stopped before the end of the command.
enum Cut {
    /// EOF or an I/O error.
    Gone,
    /// Nothing arrived for the idle time.
    Idle,
    /// The command's deadline passed before the whole command was in.
    CommandDeadline,
    Shutdown,
}

/// The message being built: a literal streamed into its file, or the
/// parts of a CATENATE.
struct Building {
    flags: Vec<String>,
    date: Option<i64>,
    file: Option<IncomingMessage>,
}

/// What follows the current line.
enum Literal {
    /// Message bytes, streamed into the message being built; `true` when
    /// they are the whole message (not a CATENATE TEXT part).
    Stream(Announced, bool),
    /// A CATENATE URL given as a literal, read into memory.
    Url(Announced),
}

impl Session {
    /// One APPEND from its mailbox on (RFC 3501 6.3.11 with MULTIAPPEND,
    /// RFC 3502, CATENATE, RFC 4469, and literal8, RFC 3516): each message
    /// and each TEXT part streams into a message file as it arrives, each
    /// finished message waits as an `AppendedFile`, and at the end of the
    /// command all of them are committed in one transaction, or none.
    /// Once something refuses the command (`failure`), the rest is only
    /// read to its end: a synchronizing literal gets the refusal instead
    /// of "+" (the client then sends nothing more), a non-synchronizing
    /// one is read and dropped. `command_end` is when the whole command
    /// must be in.
    pub(super) async fn append_streamed(
        &mut self,
        head: AppendHead,
        command_end: Instant,
        conn: &mut Conn,
        shutdown: &mut ShutdownSignal,
    ) -> Flow {
        let (mut done, mut building) = (Vec::new(), None);
        let flow = self
            .append_messages(head, command_end, conn, shutdown, &mut done, &mut building)
            .await;
        // Whatever was not committed goes, before the answer is sent (it is
        // only buffered so far): a refused APPEND leaves no file.
        if let Some(Building {
            file: Some(file), ..
        }) = building
        {
            file.discard().await;
        }
        for file in done {
            file.discard().await;
        }
        flow
    }

    async fn append_messages(
        &mut self,
        head: AppendHead,
        command_end: Instant,
        conn: &mut Conn,
        shutdown: &mut ShutdownSignal,
        done: &mut Vec<AppendedFile>,
        building: &mut Option<Building>,
    ) -> Flow {
        let AppendHead { tag, mailbox, rest } = head;
        let max = self.svc.limits.max_literal_bytes;
        let folder = self.decode_name(&mailbox);
        let mut failure = folder.is_none().then(|| super::invalid_mailbox_name(&tag));
        let folder = folder.unwrap_or_default();
        let mut lexer = AppendLexer::default();
        let (mut line, mut pos) = (rest, 0);
        let mut lease = None;
        // Messages so far in this command, parts so far in this CATENATE.
        let (mut messages, mut parts) = (0usize, 0usize);
        loop {
            let token = match lexer.next(&line, &mut pos) {
                Ok(token) => token,
                Err(text) => return self.append_bad(conn, &tag, &line, &text),
            };
            match &token {
                AppendToken::Message { .. } | AppendToken::Catenate { .. } => {
                    (messages, parts) = (messages + 1, 0);
                    if failure.is_none() && messages > APPEND_MESSAGES_MAX {
                        failure = Some(format!(
                            "{tag} NO [LIMIT] At most {APPEND_MESSAGES_MAX} messages per APPEND\r\n"
                        ));
                    }
                }
                AppendToken::Text(_) | AppendToken::Url(_) | AppendToken::UrlLiteral(_) => {
                    parts += 1;
                    if failure.is_none() && parts > CATENATE_PARTS_MAX {
                        failure = Some(format!(
                            "{tag} NO [LIMIT] At most {CATENATE_PARTS_MAX} parts per CATENATE\r\n"
                        ));
                    }
                }
                AppendToken::End | AppendToken::CatenateEnd => {}
            }
            let literal = match token {
                AppendToken::End => {
                    let reply = match failure {
                        Some(reply) => reply,
                        None => self.append_commit(&tag, std::mem::take(done)).await,
                    };
                    self.before_tagged_reply(conn, true).await;
                    conn.write(reply.as_bytes());
                    return Flow::Continue;
                }
                AppendToken::Message {
                    flags,
                    date,
                    literal,
                } => {
                    if failure.is_none() {
                        if literal.size > max {
                            failure = Some(format!(
                                "{tag} NO [TOOBIG] Literal larger than {max} bytes\r\n"
                            ));
                        } else if literal.size == 0 {
                            failure = Some(format!("{tag} NO [CANNOT] Empty message\r\n"));
                        } else {
                            *building = self
                                .start_message(&tag, &folder, flags, date, literal.size, &mut lease)
                                .await
                                .map_err(|reply| failure = Some(reply))
                                .ok();
                        }
                    }
                    Literal::Stream(literal, true)
                }
                AppendToken::Catenate { flags, date } => {
                    if failure.is_none() {
                        *building = self
                            .start_message(&tag, &folder, flags, date, 0, &mut lease)
                            .await
                            .map_err(|reply| failure = Some(reply))
                            .ok();
                    }
                    continue;
                }
                AppendToken::Text(literal) => {
                    let held = building
                        .as_ref()
                        .and_then(|b| b.file.as_ref())
                        .map(|f| f.len());
                    if failure.is_none() && held.unwrap_or(0).saturating_add(literal.size) > max {
                        failure = Some(super::catenate::too_big(&tag));
                    }
                    Literal::Stream(literal, false)
                }
                AppendToken::UrlLiteral(literal) => {
                    if failure.is_none() && literal.size > super::catenate::URL_BYTES_MAX {
                        failure = Some(super::catenate::too_big(&tag));
                    }
                    Literal::Url(literal)
                }
                AppendToken::Url(url) => {
                    if failure.is_none() {
                        failure = self.add_url(&tag, &url, building, max).await.err();
                    }
                    continue;
                }
                AppendToken::CatenateEnd => {
                    if failure.is_none() {
                        match self.finish_message(&tag, &folder, building.take()).await {
                            Ok(file) => done.push(file),
                            Err(reply) => failure = Some(reply),
                        }
                    }
                    continue;
                }
            };
            let announced = match &literal {
                Literal::Stream(a, _) | Literal::Url(a) => *a,
            };
            if let Some(reply) = &failure {
                if announced.sync {
                    // Instead of "+": the client sends nothing more (RFC
                    // 3502 6.3.11, RFC 4469 5).
                    conn.write(reply.as_bytes());
                    return Flow::Continue;
                }
                if announced.size > max {
                    // Too much to read and drop: the only safe way out is to close.
                    conn.write(reply.as_bytes());
                    conn.write(b"* BYE [TOOBIG] Literal too large\r\n");
                    return Flow::Close;
                }
                if let Err(cut) = self
                    .read_literal(conn, shutdown, command_end, announced.size, None)
                    .await
                {
                    return cut_flow(conn, cut);
                }
            } else {
                if announced.sync {
                    conn.write(b"+ Ready for literal data\r\n");
                }
                if conn.flush().await.is_err() {
                    return Flow::Close;
                }
                match literal {
                    Literal::Url(a) => {
                        let until = self.read_until(command_end);
                        let url = tokio::select! {
                            biased;
                            _ = shutdown.wait() => return cut_flow(conn, Cut::Shutdown),
                            r = timeout_at(until, conn.read_exact_bytes(a.size as usize)) => r,
                        };
                        let url = match url {
                            Err(_) => return cut_flow(conn, timed_out(command_end)),
                            Ok(Err(_)) => return cut_flow(conn, Cut::Gone),
                            Ok(Ok(url)) => url,
                        };
                        failure = self.add_url(&tag, &url, building, max).await.err();
                    }
                    Literal::Stream(a, whole) => {
                        let file = building.as_mut().and_then(|b| b.file.take());
                        let file = match self
                            .read_literal(conn, shutdown, command_end, a.size, file)
                            .await
                        {
                            Ok(file) => file,
                            Err(cut) => return cut_flow(conn, cut),
                        };
                        match (file, building.as_mut()) {
                            (Some(Ok(file)), Some(b)) => b.file = Some(file),
                            (Some(Err(e)), _) => failure = Some(store_error(&tag, &e)),
                            _ => failure = Some(store_error(&tag, &StoreError::Closed)),
                        }
                        // A whole message ends with its literal.
                        if failure.is_none() && whole {
                            match self.finish_message(&tag, &folder, building.take()).await {
                                Ok(file) => done.push(file),
                                Err(reply) => failure = Some(reply),
                            }
                        }
                    }
                }
            }
            line = match self.next_line(conn, shutdown, command_end, &tag).await {
                Ok(line) => line,
                Err(flow) => return flow,
            };
            pos = 0;
        }
    }

    /// What can refuse a message before its bytes are read (with the size
    /// the client announced; 0 for a CATENATE, whose size comes with its
    /// parts), then its file. `Err` is the tagged answer.
    async fn start_message(
        &self,
        tag: &str,
        folder: &str,
        flags: Vec<String>,
        date: Option<i64>,
        size: u64,
        lease: &mut Option<mxrack_net::budget::Lease>,
    ) -> Result<Building, String> {
        // The health monitor stops new mail before the data file system is
        // full (issue 6): APPEND is refused like a full disk, until space is
        // back. [OVERQUOTA] (RFC 5530) is what clients show as "disk full".
        if let Some(reason) = self.svc.store.intake_refusal() {
            warn!(%reason, "APPEND refused: the health monitor stopped new mail");
            return Err(format!(
                "{tag} NO [OVERQUOTA] Insufficient system storage, try again later\r\n"
            ));
        }
        let flags: Vec<String> = flags
            .into_iter()
            .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
            .collect();
        let user = self.user.clone().unwrap_or_default();
        let (name, check_flags) = (folder.to_string(), flags.clone());
        match blocking(&self.svc.store, move |s| {
            s.append_check(&user, &name, &check_flags, size)
        })
        .await
        {
            Ok(_) => {}
            Err(StoreError::NotFound { kind: "folder", .. }) => {
                return Err(format!("{tag} NO [TRYCREATE] No such mailbox\r\n"));
            }
            Err(e) => return Err(store_error(tag, &e)),
        }
        // The shared memory budget (issue 10): one lease for the whole
        // command (one message is written at a time), taken before a byte
        // of a literal is read (RFC 5530 UNAVAILABLE when it is spent).
        if lease.is_none() {
            match mxrack_net::budget::global().lease(APPEND_LEASE_BYTES).await {
                Some(l) => *lease = Some(l),
                None => {
                    warn!("APPEND refused: the memory budget for client data is spent");
                    return Err(format!(
                        "{tag} NO [UNAVAILABLE] Server busy, try again later\r\n"
                    ));
                }
            }
        }
        let store = &self.svc.store;
        match store.begin_message(store.next_id()).await {
            Ok(file) => Ok(Building {
                flags,
                date,
                file: Some(file),
            }),
            Err(e) => {
                warn!(error = %e, "APPEND: cannot start a message file");
                Err(store_error(tag, &e))
            }
        }
    }

    /// Adds a CATENATE URL part to the message being built.
    async fn add_url(
        &self,
        tag: &str,
        url: &[u8],
        building: &mut Option<Building>,
        max: u64,
    ) -> Result<(), String> {
        let Some(file) = building.as_mut().and_then(|b| b.file.as_mut()) else {
            return Err(store_error(tag, &StoreError::Closed));
        };
        let room = max.saturating_sub(file.len());
        self.catenate_url(tag, url, file, room).await
    }

    /// Checks and finishes the message just built (not yet in the folder).
    async fn finish_message(
        &self,
        tag: &str,
        folder: &str,
        building: Option<Building>,
    ) -> Result<AppendedFile, String> {
        let Some(Building {
            flags,
            date,
            file: Some(file),
        }) = building
        else {
            return Err(store_error(tag, &StoreError::Closed));
        };
        if file.is_empty() {
            file.discard().await;
            return Err(format!("{tag} NO [CANNOT] Empty message\r\n"));
        }
        let user = self.user.clone().unwrap_or_default();
        match self
            .svc
            .store
            .append_finish(file, &user, folder, &flags, date)
            .await
        {
            Ok(file) => Ok(file),
            Err(StoreError::NotFound { kind: "folder", .. }) => {
                Err(format!("{tag} NO [TRYCREATE] No such mailbox\r\n"))
            }
            Err(e) => Err(store_error(tag, &e)),
        }
    }

    /// Commits every message of the command in one transaction: APPENDUID
    /// with their UIDs (RFC 4315 3, RFC 3502 6.3.11).
    async fn append_commit(&self, tag: &str, done: Vec<AppendedFile>) -> String {
        match self.svc.store.append_commit_all(done).await {
            Ok((validity, uids)) => format!(
                "{tag} OK [APPENDUID {validity} {}] APPEND completed\r\n",
                SequenceSet::compact(&uids)
            ),
            Err(StoreError::NotFound { kind: "folder", .. }) => {
                format!("{tag} NO [TRYCREATE] No such mailbox\r\n")
            }
            Err(e) => store_error(tag, &e),
        }
    }

    /// A malformed APPEND: BAD, and nothing of it is kept. When the line
    /// announced a non-synchronizing literal it cannot be told from
    /// commands: the session ends.
    fn append_bad(&mut self, conn: &mut Conn, tag: &str, line: &[u8], text: &str) -> Flow {
        conn.write(format!("{tag} BAD [CLIENTBUG] {text}\r\n").as_bytes());
        if literal_announced(line).is_some_and(|(_, sync)| !sync) || self.count_bad(conn) {
            conn.write(b"* BYE Protocol error\r\n");
            return Flow::Close;
        }
        Flow::Continue
    }

    /// The next line of the command, after a literal. `Err` is how the
    /// session goes on (the answer written).
    async fn next_line(
        &mut self,
        conn: &mut Conn,
        shutdown: &mut ShutdownSignal,
        command_end: Instant,
        tag: &str,
    ) -> Result<Vec<u8>, Flow> {
        let until = self.read_until(command_end);
        let line = tokio::select! {
            biased;
            _ = shutdown.wait() => return Err(cut_flow(conn, Cut::Shutdown)),
            r = timeout_at(until, conn.read_line(self.svc.limits.max_line_bytes)) => r,
        };
        match line {
            Err(_) => Err(cut_flow(conn, timed_out(command_end))),
            Ok(Err(LineError::TooLong)) => {
                // What it announced is unknown: the session cannot go on safely.
                conn.write(format!("{tag} BAD [TOOBIG] Command line too long\r\n").as_bytes());
                conn.write(b"* BYE Protocol error\r\n");
                Err(Flow::Close)
            }
            Ok(Err(_)) => Err(cut_flow(conn, Cut::Gone)),
            Ok(Ok(line)) => Ok(line),
        }
    }

    /// Until when the next read may wait: the idle time from now, never
    /// past the command's deadline.
    fn read_until(&self, command_end: Instant) -> Instant {
        let idle = Duration::from_secs(self.svc.limits.idle_timeout_secs);
        (Instant::now() + idle).min(command_end)
    }

    /// Reads `size` literal bytes in chunks into `file` (or drops them when
    /// there is none), each chunk within the idle time and all of them
    /// before `command_end`. A failed write removes the file and is
    /// returned in its place; the rest of the literal is still read.
    async fn read_literal(
        &self,
        conn: &mut Conn,
        shutdown: &mut ShutdownSignal,
        command_end: Instant,
        size: u64,
        file: Option<IncomingMessage>,
    ) -> Result<Option<Result<IncomingMessage, StoreError>>, Cut> {
        let mut file = file.map(Ok);
        let mut remaining = size;
        while remaining > 0 {
            let n = remaining.min(LITERAL_CHUNK_BYTES as u64) as usize;
            let chunk = tokio::select! {
                biased;
                _ = shutdown.wait() => Err(Cut::Shutdown),
                r = timeout_at(self.read_until(command_end), conn.read_exact_bytes(n)) => match r {
                    Err(_) => Err(timed_out(command_end)),
                    Ok(Err(_)) => Err(Cut::Gone),
                    Ok(Ok(chunk)) => Ok(chunk),
                },
            };
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(cut) => {
                    // Nothing of an unfinished APPEND stays.
                    if let Some(Ok(f)) = file {
                        f.discard().await;
                    }
                    return Err(cut);
                }
            };
            remaining -= n as u64;
            if let Some(Ok(f)) = file.as_mut()
                && let Err(e) = f.write(&chunk).await
            {
                file = Some(Err(e));
            }
        }
        Ok(file)
    }
}

/// Which deadline cut a read that timed out.
fn timed_out(command_end: Instant) -> Cut {
    if Instant::now() >= command_end {
        Cut::CommandDeadline
    } else {
        Cut::Idle
    }
}

/// Ends the session after a cut read, saying why when it can.
fn cut_flow(conn: &mut Conn, cut: Cut) -> Flow {
    match cut {
        Cut::Idle => conn.write(b"* BYE Autologout; idle for too long\r\n"),
        Cut::CommandDeadline => conn.write(b"* BYE Autologout; command took too long\r\n"),
        Cut::Shutdown => conn.write(b"* BYE [UNAVAILABLE] Server shutting down\r\n"),
        Cut::Gone => {}
    }
    Flow::Close
}
