//! The message of a DATA phase on its way to disk: the trace headers, the
//! spam score header, then the message bytes as `DataReader` hands them
//! out, streamed into the store's `IncomingMessage` (the message file).
//!
//! The first [`MESSAGE_PREFIX_BYTES`] of the message stay in memory: the
//! scorer reads them (it reads at most 256 KiB of text anyway), and so do the
//! forwarding rules (the Message-ID) and the complaint reader. Nothing else
//! of the message is held: memory per session is this prefix plus the
//! store's 64 KiB write buffer, whatever the message's size.
//!
//! The score header goes before the message in the file, so the prefix is
//! scored as soon as it is complete (or at the end of a shorter message),
//! then written out after the trace and score headers; later bytes go
//! straight to the file.
//!
//! The Authentication-Results header (mxrack-mailauth) is made at the same
//! moment, from the same prefix, and goes between the trace headers and the
//! score; its DMARC outcome is scored. A message longer than the prefix
//! has its DKIM signatures reported as not checked (their body hash needs
//! bytes not yet received when the header must be written).

use std::sync::Arc;

use mxrack_filter::{NotScored, Scorer};
use mxrack_mailauth::inbound::{Envelope, Inbound};
use mxrack_store::{IncomingMessage, StoreError};

/// Bytes at the start of a message kept in memory for scoring, forwarding
/// and complaint reports.
pub const MESSAGE_PREFIX_BYTES: usize = 256 * 1024;

/// A message being received; see the module documentation.
pub struct MessageSink {
    /// `None` once a write failed (the file is gone, `error` says why).
    file: Option<IncomingMessage>,
    error: Option<SinkError>,
    /// Return-Path and Received, written first.
    trace: Vec<u8>,
    prefix: Vec<u8>,
    /// The prefix is scored and written; later bytes go to the file.
    sealed: bool,
    /// The scorer and the envelope sender, when this message is scored.
    scorer: Option<(Arc<Scorer>, String)>,
    score: Option<f32>,
    auth: Option<AuthCheck>,
    /// The hand-over to us (client address, HELO), for the scorer's
    /// relay list; its reverse DNS comes from the iprev check.
    hop: Option<mxrack_filter::relays::Relay>,
}

/// How a message is authenticated when it is sealed.
pub enum AuthCheck {
    /// Mail at the MX: SPF, DKIM, DMARC, done by this deadline (the DATA
    /// phase's end at the latest).
    Check {
        inbound: Arc<Inbound>,
        envelope: Envelope,
        deadline: tokio::time::Instant,
    },
    /// An authenticated submission: this header as it is.
    Fixed(String),
}

/// Why a message was not received: the store's error, or no score for it
/// now (the scorer's queue is full or its score is late; `NotScored`).
/// Either way it is not acknowledged: the session answers 4xx and the
/// sender tries again.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("not scored: {0}")]
    NotScored(NotScored),
}

/// A message received whole (its file not yet finished nor committed).
pub struct Received {
    pub file: IncomingMessage,
    /// The first [`MESSAGE_PREFIX_BYTES`] of the message (no trace headers).
    pub prefix: Vec<u8>,
    pub score: Option<f32>,
}

impl MessageSink {
    pub fn new(
        file: IncomingMessage,
        trace: Vec<u8>,
        scorer: Option<(Arc<Scorer>, String)>,
        auth: Option<AuthCheck>,
    ) -> MessageSink {
        MessageSink {
            file: Some(file),
            error: None,
            trace,
            prefix: Vec::new(),
            sealed: false,
            scorer,
            score: None,
            auth,
            hop: None,
        }
    }

    /// The hand-over to us as the session knows it (never parsed from
    /// header text a client could shape).
    pub fn with_hop(mut self, hop: mxrack_filter::relays::Relay) -> MessageSink {
        self.hop = Some(hop);
        self
    }

    /// Takes message bytes. A write error is kept for `finish` (the
    /// message is then refused at the end of DATA) and later bytes dropped.
    pub async fn push(&mut self, mut bytes: &[u8]) {
        if self.file.is_none() {
            return;
        }
        if !self.sealed {
            let take = (MESSAGE_PREFIX_BYTES - self.prefix.len()).min(bytes.len());
            self.prefix.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.prefix.len() < MESSAGE_PREFIX_BYTES {
                return;
            }
            self.seal(false).await;
        }
        if !bytes.is_empty() {
            self.write(bytes).await;
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        if let Err(e) = file.write(bytes).await {
            self.file = None;
            self.error = Some(SinkError::Store(e));
        }
    }

    /// Authenticates and scores the prefix (the scoring on a blocking
    /// thread), then writes the trace headers, the Authentication-Results
    /// and score headers, and the prefix. `complete`: the prefix is the
    /// whole message.
    async fn seal(&mut self, complete: bool) {
        self.sealed = true;
        let mut score_header = String::new();
        let (auth_header, marks, rdns) = match self.auth.take() {
            Some(AuthCheck::Check {
                inbound,
                envelope,
                deadline,
            }) => {
                let v = inbound
                    .check(&envelope, &self.prefix, complete, deadline)
                    .await;
                (v.header, v.marks, v.rdns)
            }
            Some(AuthCheck::Fixed(header)) => (header, Vec::new(), None),
            None => (String::new(), Vec::new(), None),
        };
        if let Some((scorer, from)) = self.scorer.take() {
            let prefix = std::mem::take(&mut self.prefix);
            let hop = self.hop.take().map(|mut hop| {
                // iprev: a confirmed name, none (the MTA looked: no rDNS),
                // or not known (temporary error, timeout, no check).
                match rdns {
                    Some(name) if !name.is_empty() => {
                        hop.rdns = mxrack_filter::relays::sanitize(&name)
                    }
                    Some(_) => hop.no_rdns = true,
                    None => {}
                }
                hop
            });
            let scored =
                mxrack_store::spawn_blocking(move || scorer.try_score(prefix, &from, &marks, hop))
                    .await;
            match scored {
                Ok(Ok((score, prefix))) => {
                    self.prefix = prefix;
                    score_header = score.header();
                    self.score = Some(score.value);
                }
                Ok(Err(busy)) => {
                    // The prefix is gone with the job or the message is
                    // not taken now: the sender tries again later. Its
                    // file is removed before the session goes on.
                    if let Some(file) = self.file.take() {
                        file.discard().await;
                    }
                    self.error = Some(SinkError::NotScored(busy));
                    return;
                }
                Err(e) => {
                    // The scorer catches its own panics: this is a runtime
                    // shutting down. The prefix is gone, so is the message.
                    if let Some(file) = self.file.take() {
                        file.discard().await;
                    }
                    self.error = Some(SinkError::Store(StoreError::Io(std::io::Error::other(
                        format!("scoring task failed: {e}"),
                    ))));
                    return;
                }
            }
        }
        let trace = std::mem::take(&mut self.trace);
        self.write(&trace).await;
        self.write(auth_header.as_bytes()).await;
        self.write(score_header.as_bytes()).await;
        let prefix = std::mem::take(&mut self.prefix);
        self.write(&prefix).await;
        self.prefix = prefix;
    }

    /// Gives the message up (refused, or the client went away): its file is
    /// removed before this returns.
    pub async fn discard(mut self) {
        if let Some(file) = self.file.take() {
            file.discard().await;
        }
    }

    /// The end of DATA: scores and writes a prefix still pending, and hands
    /// back the file to commit, or the write error that lost it.
    pub async fn finish(mut self) -> Result<Received, SinkError> {
        if !self.sealed {
            self.seal(true).await;
        }
        match (self.file.take(), self.error.take()) {
            (Some(file), None) => Ok(Received {
                file,
                prefix: std::mem::take(&mut self.prefix),
                score: self.score,
            }),
            (_, Some(e)) => Err(e),
            (None, None) => Err(SinkError::Store(StoreError::Closed)),
        }
    }
}
