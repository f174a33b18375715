//! The IMAP listener: the shared accept loop with IMAP's busy greeting.

use crate::session::{ImapService, Mode, run_session};
use mxrack_net::ShutdownSignal;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub async fn serve(
    listener: Arc<TcpListener>,
    mode: Mode,
    svc: Arc<ImapService>,
    sessions: Arc<Semaphore>,
    shutdown: ShutdownSignal,
) {
    let busy: Arc<[u8]> =
        Arc::from(&b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n"[..]);
    mxrack_net::accept_loop(
        "imap",
        listener,
        sessions,
        shutdown,
        busy,
        move |stream, peer, signal| run_session(svc.clone(), mode, stream, peer, signal),
    )
    .await;
}
