//! The SMTP listener: the shared accept loop with SMTP's busy reply
//! (421 4.7.0), sent inside TLS on the submissions port.

use crate::reply::Reply;
use crate::session::{Mode, SmtpService, run_session};
use mxrack_net::{Pool, Refusal, ShutdownSignal};
use std::sync::Arc;
use tokio::net::TcpListener;

pub async fn serve(
    listener: Arc<TcpListener>,
    mode: Mode,
    svc: Arc<SmtpService>,
    pool: Arc<Pool>,
    shutdown: ShutdownSignal,
) {
    let mut busy = Vec::new();
    Reply::too_many_connections(&svc.hostname).write_to(&mut busy);
    let refusal = Refusal {
        busy_line: busy.into(),
        tls: match mode {
            Mode::Submissions => svc.tls.clone(),
            Mode::Mx | Mode::Submission => None,
        },
    };
    mxrack_net::accept_loop(
        "smtp",
        listener,
        pool,
        shutdown,
        refusal,
        move |stream, peer, signal| run_session(svc.clone(), mode, stream, peer, signal),
    )
    .await;
}
