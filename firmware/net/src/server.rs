//! The accept loop every TCP service uses (after mini-redis's `server::run`):
//! a semaphore caps sessions at once (a session over the cap gets the
//! protocol's "busy" line and is closed), accept errors back off instead of
//! spinning, each session runs in its own task so a panic ends that
//! connection only (invariant 6), and the loop ends on shutdown.

use crate::{BoxStream, ShutdownSignal};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{error, warn};

/// Longest pause after repeated accept errors (EMFILE and friends).
const ACCEPT_BACKOFF_MAX_MS: u64 = 2_000;

/// Accepts connections until shutdown. `busy_line` is what a client over the
/// cap receives before the connection is closed (SMTP 421, IMAP BYE, ...).
pub async fn accept_loop<F, Fut>(
    service: &'static str,
    listener: Arc<TcpListener>,
    sessions: Arc<Semaphore>,
    mut shutdown: ShutdownSignal,
    busy_line: Arc<[u8]>,
    handler: F,
) where
    F: Fn(BoxStream, SocketAddr, ShutdownSignal) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
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
                warn!(service, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(ACCEPT_BACKOFF_MAX_MS);
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let Ok(permit) = sessions.clone().try_acquire_owned() else {
            let busy = busy_line.clone();
            tokio::spawn(async move {
                let _ = socket.write_all(&busy).await;
                let _ = socket.shutdown().await;
            });
            continue;
        };
        let session = handler(Box::new(socket), peer, shutdown.clone());
        tokio::spawn(async move {
            // The permit lives in this outer task, so it is returned even
            // when the session task panics.
            let _permit = permit;
            if let Err(e) = tokio::spawn(session).await
                && e.is_panic()
            {
                error!(service, client = %peer, "session panicked; connection closed, service goes on");
            }
        });
    }
}
