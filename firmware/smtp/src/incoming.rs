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

use mxrack_filter::Scorer;
use mxrack_mailauth::inbound::{Envelope, Inbound};
use mxrack_store::{IncomingMessage, StoreError};

/// Bytes at the start of a message kept in memory for scoring, forwarding
/// and complaint reports.
pub const MESSAGE_PREFIX_BYTES: usize = 256 * 1024;

/// A message being received; see the module documentation.
pub struct MessageSink {
    /// `None` once a write failed (the file is gone, `error` says why).
    file: Option<IncomingMessage>,
    error: Option<StoreError>,
    /// Return-Path and Received, written first.
    trace: Vec<u8>,
    prefix: Vec<u8>,
    /// The prefix is scored and written; later bytes go to the file.
    sealed: bool,
    /// The scorer and the envelope sender, when this message is scored.
    scorer: Option<(Arc<Scorer>, String)>,
    score: Option<f32>,
    auth: Option<AuthCheck>,
}

/// The hand-over to us as SpamAssassin's rules see it: our own Received
/// header (in `trace`), with the client's reverse DNS from the iprev check
/// (`Some("")`: it has none).
fn hop_of(trace: &[u8], rdns: Option<String>) -> Option<mxrack_filter::relays::Relay> {
    let text = std::str::from_utf8(trace).ok()?;
    let start = text.find("Received: ")? + "Received: ".len();
    let end = text[start..]
        .find("\r\n")
        .map(|i| {
            // The header runs on over its continuation lines.
            let mut e = start + i;
            while text[e..].starts_with("\r\n\t") || text[e..].starts_with("\r\n ") {
                e = text[e + 2..].find("\r\n").map_or(text.len(), |j| e + 2 + j);
            }
            e
        })
        .unwrap_or(text.len());
    let mut hop = mxrack_filter::relays::parse_received(&text[start..end])?;
    match rdns {
        Some(name) if !name.is_empty() => hop.rdns = name,
        Some(_) => hop.no_rdns = true,
        None => {}
    }
    Some(hop)
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
        }
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
            self.error = Some(e);
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
            let hop = hop_of(&self.trace, rdns);
            match mxrack_store::spawn_blocking(move || {
                let score = scorer.score_with_auth(&prefix, &from, &marks, hop);
                (score, prefix)
            })
            .await
            {
                Ok((score, prefix)) => {
                    self.prefix = prefix;
                    score_header = score.header();
                    self.score = Some(score.value);
                }
                Err(e) => {
                    // The scorer catches its own panics: this is a runtime
                    // shutting down. The prefix is gone, so is the message.
                    self.file = None;
                    self.error = Some(StoreError::Io(std::io::Error::other(format!(
                        "scoring task failed: {e}"
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
    pub async fn finish(mut self) -> Result<Received, StoreError> {
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
            (None, None) => Err(StoreError::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::hop_of;

    const TRACE: &[u8] = b"Return-Path: <a@sender.example>\r\nReceived: from client.example ([192.0.2.7])\r\n\tby mx.example.net (mxrack) with ESMTPS id 00ab for <b@example.net>;\r\n\tSat, 05 Dec 2026 06:00:00 +0000\r\n";

    #[test]
    fn the_hop_is_our_received_header_with_the_clients_reverse_dns() {
        let hop = hop_of(TRACE, Some("mail.sender.example".into())).expect("parsed");
        assert_eq!(
            hop.as_string(),
            "[ ip=192.0.2.7 rdns=mail.sender.example helo=client.example by=mx.example.net ident= envfrom= intl=0 id=00ab auth= msa=0 ]"
        );
        let none = hop_of(TRACE, Some(String::new())).expect("parsed");
        assert!(none.rdns.is_empty() && none.no_rdns);
        let unknown = hop_of(TRACE, None).expect("parsed");
        assert!(unknown.rdns.is_empty() && !unknown.no_rdns);
        assert!(hop_of(b"Return-Path: <>\r\n", None).is_none());
    }
}
