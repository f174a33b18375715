//! The SMTP listener: the shared accept loop with SMTP's busy reply.

use crate::reply::Reply;
use crate::session::{Mode, SmtpService, run_session};
use mxrack_net::ShutdownSignal;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub async fn serve(
    listener: Arc<TcpListener>,
    mode: Mode,
    svc: Arc<SmtpService>,
    sessions: Arc<Semaphore>,
    shutdown: ShutdownSignal,
) {
    let mut busy = Vec::new();
    Reply::too_many_connections(&svc.hostname).write_to(&mut busy);
    mxrack_net::accept_loop(
        "smtp",
        listener,
        sessions,
        shutdown,
        busy.into(),
        move |stream, peer, signal| run_session(svc.clone(), mode, stream, peer, signal),
    )
    .await;
}
