//! The POP3 listener: the shared accept loop with POP3's busy line,
//! sent inside TLS on the POP3S port.

use crate::reply::Reply;
use crate::session::{Mode, Pop3Service, run_session};
use mxrack_net::{Pool, Refusal, ShutdownSignal};
use std::sync::Arc;
use tokio::net::TcpListener;

pub async fn serve(
    listener: Arc<TcpListener>,
    mode: Mode,
    svc: Arc<Pop3Service>,
    pool: Arc<Pool>,
    shutdown: ShutdownSignal,
) {
    let busy = Reply::too_many_connections().to_bytes();
    let refusal = Refusal {
        busy_line: busy.into(),
        tls: match mode {
            Mode::Pop3s => svc.tls.clone(),
            Mode::Pop3 => None,
        },
    };
    mxrack_net::accept_loop(
        "pop3",
        listener,
        pool,
        shutdown,
        refusal,
        move |stream, peer, signal| run_session(svc.clone(), mode, stream, peer, signal),
    )
    .await;
}
