//! The connection loop. One `Framed` over the stream reads a message, the
//! handler answers it on a blocking thread (Argon2 binds and durable commits
//! must not stall the runtime), the replies are written, and the next message
//! is read. StartTLS takes the stream back out of the `Framed` once the
//! success reply is flushed, drops any bytes the client sent too early (they
//! were not protected; CVE-2011-0411 is the SMTP twin of that attack), and
//! runs rustls on the same connection.

use crate::LdapService;
use crate::codec::{CodecError, Frame, MxCodec};
use crate::handler::{Session, Then, handle_streaming, notice};
use futures_util::{SinkExt, StreamExt};
use ldap3_proto::proto::LdapResultCode;
use mxrack_net::{BoxStream, Pool, Refusal, ShutdownSignal};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::codec::{Encoder, Framed};
use tracing::{debug, warn};

/// Search entries made and not yet written, per connection.
pub const SEARCH_ENTRIES_IN_FLIGHT: usize = 16;

/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT_SECS: u64 = 30;

/// Which port a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Port 389: plaintext until StartTLS.
    StartTls,
    /// Port 636: TLS from the first byte.
    Ldaps,
}

/// Serves one listener until shutdown (the shared accept loop: connection
/// pool and per-client cap, panic containment, accept back-off). The busy
/// notice goes inside TLS on the LDAPS port.
pub async fn serve(
    listener: Arc<TcpListener>,
    mode: Mode,
    svc: Arc<LdapService>,
    pool: Arc<Pool>,
    shutdown: ShutdownSignal,
) {
    let mut busy = bytes::BytesMut::new();
    let _ = MxCodec::new(svc.limits.max_message_bytes).encode(
        notice(
            LdapResultCode::Busy,
            "too many connections; try again later",
        ),
        &mut busy,
    );
    let refusal = Refusal {
        busy_line: busy.to_vec().into(),
        tls: match mode {
            Mode::Ldaps => svc.tls.clone(),
            Mode::StartTls => None,
        },
    };
    mxrack_net::accept_loop(
        "ldap",
        listener,
        pool,
        shutdown,
        refusal,
        move |stream, peer, signal| run_connection(svc.clone(), mode, stream, peer, signal),
    )
    .await;
}

/// How often the wait for a message looks whether its first bytes came.
const DEADLINE_LOOK: Duration = Duration::from_secs(1);

/// The next LDAP message: the first byte within `idle`, then the whole
/// message within `command` of it (no deadline restarts with each byte: a
/// client trickling one byte every few seconds is cut, as the other
/// services cut theirs). `Err` is the notice of disconnection's text.
/// `Framed::next` is cancel-safe (what was read stays in its buffer), so
/// the wait is cut in looks of [`DEADLINE_LOOK`] to see when bytes came.
async fn next_message<S>(
    framed: &mut Framed<S, MxCodec>,
    idle: Duration,
    command: Duration,
) -> Result<Option<Result<Frame, CodecError>>, &'static str>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let start = tokio::time::Instant::now();
    let mut first_byte: Option<tokio::time::Instant> = None;
    loop {
        let now = tokio::time::Instant::now();
        if first_byte.is_none() && !framed.read_buffer().is_empty() {
            first_byte = Some(now);
        }
        let (end, why) = match first_byte {
            Some(t) => (t + command, "the message took too long to arrive"),
            None => (start + idle, "idle for too long"),
        };
        if now >= end {
            return Err(why);
        }
        let look = (end - now).min(DEADLINE_LOOK);
        if let Ok(n) = tokio::time::timeout(look, framed.next()).await {
            return Ok(n);
        }
    }
}

async fn tls_handshake(svc: &LdapService, stream: BoxStream) -> Option<BoxStream> {
    let acceptor = svc.tls.clone()?;
    match tokio::time::timeout(
        Duration::from_secs(TLS_HANDSHAKE_TIMEOUT_SECS),
        acceptor.accept(stream),
    )
    .await
    {
        Ok(Ok(tls)) => Some(Box::new(tls)),
        Ok(Err(e)) => {
            debug!(error = %e, "LDAP TLS handshake failed");
            None
        }
        Err(_) => {
            debug!("LDAP TLS handshake timed out");
            None
        }
    }
}

/// Runs one connection to its end. Never panics on client input.
pub async fn run_connection(
    svc: Arc<LdapService>,
    mode: Mode,
    stream: BoxStream,
    peer: SocketAddr,
    mut shutdown: ShutdownSignal,
) {
    let stream = match mode {
        Mode::StartTls => stream,
        Mode::Ldaps => match tls_handshake(&svc, stream).await {
            Some(s) => s,
            None => return,
        },
    };
    let codec = || MxCodec::new(svc.limits.max_message_bytes);
    let mut framed = Framed::new(stream, codec());
    let mut session = Session::new(peer.ip(), mode == Mode::Ldaps);
    let idle = Duration::from_secs(svc.limits.idle_timeout_secs);
    let command = Duration::from_secs(svc.limits.command_timeout_secs);
    loop {
        let next = tokio::select! {
            biased;
            _ = shutdown.wait() => {
                let _ = framed.send(notice(LdapResultCode::Unavailable, "the server is shutting down")).await;
                break;
            }
            n = next_message(&mut framed, idle, command) => n,
        };
        let frame = match next {
            Err(why) => {
                let _ = framed.send(notice(LdapResultCode::Unavailable, why)).await;
                break;
            }
            Ok(None) => break,
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(CodecError::Io(e)))) => {
                debug!(client = %peer, error = %e, "LDAP read failed");
                break;
            }
            Ok(Some(Err(e))) => {
                // Oversized or not LDAP: the rest of the stream cannot be
                // framed, so say why and close (RFC 4511 4.1.1).
                warn!(client = %peer, error = %e, "LDAP message refused; closing");
                let code = match e {
                    CodecError::TooLarge(_) => LdapResultCode::AdminLimitExceeded,
                    _ => LdapResultCode::ProtocolError,
                };
                let _ = framed.send(notice(code, &e.to_string())).await;
                break;
            }
        };
        if let Frame::Msg(m) = &frame {
            debug!(client = %peer, msgid = m.msgid, "LDAP request");
        }
        let handler_svc = svc.clone();
        // Search entries come through a small channel while the handler
        // runs: at most SEARCH_ENTRIES_IN_FLIGHT of them are in memory per
        // connection, whatever the size of the book.
        let (entries_tx, mut entries_rx) = tokio::sync::mpsc::channel(SEARCH_ENTRIES_IN_FLIGHT);
        let handler = mxrack_store::spawn_blocking(move || {
            let mut session = session;
            let outcome = handle_streaming(&handler_svc, &mut session, frame, &mut |m| {
                entries_tx.blocking_send(m).is_ok()
            });
            (session, outcome)
        });
        while let Some(entry) = entries_rx.recv().await {
            // A client that stops reading is cut after `idle`; dropping the
            // receiver then stops the search at its next entry.
            if !matches!(
                tokio::time::timeout(idle, framed.feed(entry)).await,
                Ok(Ok(()))
            ) {
                return;
            }
            if entries_rx.is_empty()
                && !matches!(tokio::time::timeout(idle, framed.flush()).await, Ok(Ok(())))
            {
                return;
            }
        }
        let joined = handler.await;
        let outcome = match joined {
            Ok((s, outcome)) => {
                session = s;
                outcome
            }
            Err(e) => {
                warn!(client = %peer, error = %e, "LDAP handler failed; connection closed");
                let _ = framed
                    .send(notice(LdapResultCode::Other, "internal error"))
                    .await;
                break;
            }
        };
        for reply in outcome.replies {
            if framed.feed(reply).await.is_err() {
                return;
            }
        }
        if framed.flush().await.is_err() {
            return;
        }
        match outcome.then {
            Then::Continue => {}
            Then::Close => break,
            Then::StartTls => {
                let parts = framed.into_parts();
                if !parts.read_buf.is_empty() {
                    warn!(client = %peer, bytes = parts.read_buf.len(), "dropping plaintext sent before the TLS handshake");
                }
                match tls_handshake(&svc, parts.io).await {
                    Some(tls) => {
                        framed = Framed::new(tls, codec());
                        session.tls = true;
                    }
                    None => return,
                }
            }
        }
    }
    let _ = SinkExt::<ldap3_proto::proto::LdapMsg>::close(&mut framed).await;
}
