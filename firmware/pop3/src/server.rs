//! The POP3 listener: the shared accept loop with POP3's busy line.

use crate::reply::Reply;
use crate::session::{Mode, Pop3Service, run_session};
use mxrack_net::ShutdownSignal;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub async fn serve(
    listener: Arc<TcpListener>,
    mode: Mode,
    svc: Arc<Pop3Service>,
    sessions: Arc<Semaphore>,
    shutdown: ShutdownSignal,
) {
    let busy = Reply::too_many_connections().to_bytes();
    mxrack_net::accept_loop(
        "pop3",
        listener,
        sessions,
        shutdown,
        busy.into(),
        move |stream, peer, signal| run_session(svc.clone(), mode, stream, peer, signal),
    )
    .await;
}
