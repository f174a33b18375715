//! The accept loop of one SMTP listener (after mini-redis's `server::run`):
//! a semaphore shared by all SMTP listeners caps sessions at once, accept
//! errors back off instead of spinning, each session runs in its own task so
//! a panic ends that connection only, and the loop ends on shutdown.

use crate::reply::Reply;
use crate::session::{Mode, SmtpService, run_session};
use mxrack_net::ShutdownSignal;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{error, warn};

/// Longest pause after repeated accept errors (EMFILE and friends).
const ACCEPT_BACKOFF_MAX_MS: u64 = 2_000;

pub async fn serve(
    listener: Arc<TcpListener>,
    mode: Mode,
    svc: Arc<SmtpService>,
    sessions: Arc<Semaphore>,
    mut shutdown: ShutdownSignal,
) {
    let mut backoff_ms = 10;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait() => return,
            a = listener.accept() => a,
        };
        let (mut socket, peer) = match accepted {
            Ok(a) => {
                backoff_ms = 10;
                a
            }
            Err(e) => {
                // Out of file descriptors, usually: wait for sessions to end.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(ACCEPT_BACKOFF_MAX_MS);
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let permit = match sessions.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let host = svc.hostname.clone();
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    Reply::too_many_connections(&host).write_to(&mut out);
                    let _ = socket.write_all(&out).await;
                    let _ = socket.shutdown().await;
                });
                continue;
            }
        };
        let svc = svc.clone();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            // The permit lives in this outer task, so it is returned even
            // when the session task panics (invariant 6).
            let _permit = permit;
            let session = tokio::spawn(run_session(svc, mode, Box::new(socket), peer, signal));
            if let Err(e) = session.await
                && e.is_panic()
            {
                error!(client = %peer, "SMTP session panicked; connection closed, service goes on");
            }
        });
    }
}
