//! The IMAP listener: the shared accept loop with IMAP's busy greeting,
//! sent inside TLS on the IMAPS port.

use crate::session::{ImapService, Mode, run_session};
use mxrack_net::{Pool, Refusal, ShutdownSignal};
use std::sync::Arc;
use tokio::net::TcpListener;

pub async fn serve(
    listener: Arc<TcpListener>,
    mode: Mode,
    svc: Arc<ImapService>,
    pool: Arc<Pool>,
    shutdown: ShutdownSignal,
) {
    let busy: Arc<[u8]> =
        Arc::from(&b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n"[..]);
    let refusal = Refusal {
        busy_line: busy,
        tls: match mode {
            Mode::Tls => svc.tls.clone(),
            Mode::Plain => None,
        },
    };
    mxrack_net::accept_loop(
        "imap",
        listener,
        pool,
        shutdown,
        refusal,
        move |stream, peer, signal| run_session(svc.clone(), mode, stream, peer, signal),
    )
    .await;
}
