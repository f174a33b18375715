//! The shutdown signal: the supervisor flips it once on SIGTERM; listeners stop
//! accepting and sessions answer their protocol's "closing" reply at the next
//! point where they would wait for the client.

use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown {
    tx: std::sync::Arc<watch::Sender<bool>>,
}

#[derive(Clone)]
pub struct ShutdownSignal {
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        let (tx, _) = watch::channel(false);
        Shutdown {
            tx: std::sync::Arc::new(tx),
        }
    }

    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            rx: self.tx.subscribe(),
        }
    }

    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }
}

impl ShutdownSignal {
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes once shutdown has been triggered.
    pub async fn wait(&mut self) {
        // An error means the sender is gone, which also means shutting down.
        let _ = self.rx.wait_for(|&v| v).await;
    }
}
