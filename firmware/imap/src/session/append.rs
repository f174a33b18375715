//! APPEND with its message streamed to the store (RFC 3501 6.3.11, RFC 4315
//! APPENDUID, RFC 7888 LITERAL+): `read_command` stops at the message
//! literal's announcement; everything that can refuse the message (size,
//! arguments, name, intake gate, folder, quota with the announced size) is
//! decided before a byte of it is read, then the literal goes in chunks of
//! `LITERAL_CHUNK_BYTES` into an `IncomingMessage` (the message file), and
//! the store commits it with its real size. Memory per session stays one
//! chunk plus the store's 64 KiB buffer, whatever the message's size.
//!
//! A refused synchronizing literal gets its answer instead of "+", so the
//! client sends nothing; a refused non-synchronizing one (LITERAL+: the
//! client is already sending) is read and dropped, then answered.
//!
//! The whole APPEND, its message and the line end after it, must be in by
//! the command's deadline (`imap.command_timeout_secs` from its first byte,
//! set by the session loop); between chunks the idle wait applies too.

use std::time::Duration;

use mxrack_net::{Conn, LineError, ShutdownSignal};
use mxrack_store::{IncomingMessage, StoreError};
use tokio::time::{Instant, timeout_at};
use tracing::warn;

use super::{Flow, Session, blocking, store_error};
use crate::parser::{AppendArgs, AppendHead, literal_announced};

/// Bytes of a literal read from the connection at a time.
const LITERAL_CHUNK_BYTES: usize = 64 * 1024;
/// What an APPEND leases from the memory budget while its literal streams:
/// the chunk it reads into and the store's write buffer.
const APPEND_LEASE_BYTES: u64 = (LITERAL_CHUNK_BYTES + mxrack_store::INCOMING_CHUNK_BYTES) as u64;

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

/// Where an accepted APPEND goes.
struct Target {
    folder: String,
    flags: Vec<String>,
    date: Option<i64>,
}

impl Session {
    /// One APPEND whose message literal is announced and not yet read;
    /// `command_end` is when the whole command must be in.
    pub(super) async fn append_streamed(
        &mut self,
        head: AppendHead,
        command_end: Instant,
        conn: &mut Conn,
        shutdown: &mut ShutdownSignal,
    ) -> Flow {
        let AppendHead {
            tag,
            size,
            sync,
            args,
        } = head;
        let max = self.svc.limits.max_literal_bytes;
        if size > max {
            conn.write(format!("{tag} NO [TOOBIG] Literal larger than {max} bytes\r\n").as_bytes());
            if !sync {
                // The client is already sending it: the only safe way out is to close.
                conn.write(b"* BYE [TOOBIG] Literal too large\r\n");
                return Flow::Close;
            }
            return Flow::Continue;
        }
        let target = match args {
            Ok(args) => self.append_target(&tag, args, size).await,
            Err(text) => {
                if self.count_bad(conn) {
                    return Flow::Close;
                }
                Err(format!("{tag} BAD [CLIENTBUG] {text}\r\n"))
            }
        };
        let target = match target {
            Ok(target) => target,
            Err(reply) => {
                return self
                    .refuse_literal(conn, shutdown, command_end, size, sync, reply)
                    .await;
            }
        };
        // The shared memory budget (issue 10): when client data in flight
        // has spent it, the APPEND is refused as a temporary failure before
        // a byte of the literal is read (RFC 5530 UNAVAILABLE).
        let Some(_lease) = mxrack_net::budget::global().lease(APPEND_LEASE_BYTES).await else {
            warn!("APPEND refused: the memory budget for client data is spent");
            let reply = format!("{tag} NO [UNAVAILABLE] Server busy, try again later\r\n");
            return self
                .refuse_literal(conn, shutdown, command_end, size, sync, reply)
                .await;
        };
        let store = self.svc.store.clone();
        let file = match store.begin_message(store.next_id()).await {
            Ok(file) => file,
            Err(e) => {
                warn!(error = %e, "APPEND: cannot start a message file");
                let reply = store_error(&tag, &e);
                return self
                    .refuse_literal(conn, shutdown, command_end, size, sync, reply)
                    .await;
            }
        };
        if sync {
            conn.write(b"+ Ready for literal data\r\n");
        }
        if conn.flush().await.is_err() {
            file.discard().await;
            return Flow::Close;
        }
        let file = match self
            .read_literal(conn, shutdown, command_end, size, Some(file))
            .await
        {
            Ok(file) => file,
            Err(cut) => return cut_flow(conn, cut),
        };
        let end = self.end_of_command(conn, shutdown, command_end, &tag).await;
        let file = match (end, file) {
            (Ok(()), file) => file,
            (Err(flow), file) => {
                if let Some(Ok(file)) = file {
                    file.discard().await;
                }
                return flow;
            }
        };
        let reply = match file {
            Some(Ok(file)) => {
                let user = self.user.clone().unwrap_or_default();
                match store
                    .append_incoming(file, &user, &target.folder, &target.flags, target.date)
                    .await
                {
                    Ok((validity, uid)) => {
                        format!("{tag} OK [APPENDUID {validity} {uid}] APPEND completed\r\n")
                    }
                    Err(StoreError::NotFound { kind: "folder", .. }) => {
                        format!("{tag} NO [TRYCREATE] No such mailbox\r\n")
                    }
                    Err(e) => store_error(&tag, &e),
                }
            }
            Some(Err(e)) => store_error(&tag, &e),
            None => store_error(&tag, &StoreError::Closed),
        };
        if self.selected.is_some() {
            self.sync(conn, true).await;
        }
        conn.write(reply.as_bytes());
        Flow::Continue
    }

    /// What can refuse an APPEND before its message is read, with the size
    /// the client announced. `Err` is the tagged answer.
    async fn append_target(
        &self,
        tag: &str,
        args: AppendArgs,
        size: u64,
    ) -> Result<Target, String> {
        let AppendArgs {
            mailbox,
            flags,
            date,
        } = args;
        let Some(folder) = self.decode_name(&mailbox) else {
            return Err(super::invalid_mailbox_name(tag));
        };
        if size == 0 {
            return Err(format!("{tag} NO [CANNOT] Empty message\r\n"));
        }
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
        let (name, check_flags) = (folder.clone(), flags.clone());
        match blocking(&self.svc.store, move |s| {
            s.append_check(&user, &name, &check_flags, size)
        })
        .await
        {
            Ok(_) => Ok(Target {
                folder,
                flags,
                date,
            }),
            Err(StoreError::NotFound { kind: "folder", .. }) => {
                Err(format!("{tag} NO [TRYCREATE] No such mailbox\r\n"))
            }
            Err(e) => Err(store_error(tag, &e)),
        }
    }

    /// Answers an APPEND refused before its message: instead of "+" for a
    /// synchronizing literal; after reading and dropping a
    /// non-synchronizing one, which the client is already sending.
    async fn refuse_literal(
        &mut self,
        conn: &mut Conn,
        shutdown: &mut ShutdownSignal,
        command_end: Instant,
        size: u64,
        sync: bool,
        reply: String,
    ) -> Flow {
        if !sync {
            if let Err(cut) = self
                .read_literal(conn, shutdown, command_end, size, None)
                .await
            {
                return cut_flow(conn, cut);
            }
            let tag = reply.split(' ').next().unwrap_or("*").to_string();
            if let Err(flow) = self.end_of_command(conn, shutdown, command_end, &tag).await {
                return flow;
            }
        }
        conn.write(reply.as_bytes());
        Flow::Continue
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

    /// Reads the end of the command line after the message literal: it
    /// must be empty. `Err` is how the session goes on (the answer written).
    async fn end_of_command(
        &mut self,
        conn: &mut Conn,
        shutdown: &mut ShutdownSignal,
        command_end: Instant,
        tag: &str,
    ) -> Result<(), Flow> {
        let until = self.read_until(command_end);
        let line = tokio::select! {
            biased;
            _ = shutdown.wait() => return Err(cut_flow(conn, Cut::Shutdown)),
            r = timeout_at(until, conn.read_line(self.svc.limits.max_line_bytes)) => r,
        };
        let line = match line {
            Err(_) => return Err(cut_flow(conn, timed_out(command_end))),
            Ok(Err(LineError::TooLong)) => Vec::new(),
            Ok(Err(_)) => return Err(cut_flow(conn, Cut::Gone)),
            Ok(Ok(line)) => line,
        };
        if line == b"\r\n" || line == b"\n" {
            return Ok(());
        }
        // MULTIAPPEND (RFC 3502) is not offered; anything after the
        // message is a client error.
        conn.write(
            format!("{tag} BAD [CLIENTBUG] Unexpected characters after the message\r\n").as_bytes(),
        );
        if literal_announced(&line).is_some_and(|(_, sync)| !sync) || self.count_bad(conn) {
            // A literal already on its way cannot be told from commands.
            conn.write(b"* BYE Protocol error\r\n");
            return Err(Flow::Close);
        }
        Err(Flow::Continue)
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
