//! Mail that leaves again: forwarding rules applied at delivery (each
//! forwarded copy a queue entry of the "forward" transport, its envelope
//! sender rewritten with SRS), and SRS bounce addresses reversed at RCPT.

use mxrack_relay::Relay;
use mxrack_relay::srs::SrsError;
use mxrack_store::{CopyHold, QueuedCopy, Resolution, Store, StoreError};
use std::sync::Arc;
use tracing::{info, warn};

pub struct Outbound {
    pub relay: Arc<Relay>,
    /// Scores every inbound message (X-Spam-Score) and feeds the gate.
    pub scorer: Option<Arc<mxrack_filter::Scorer>>,
    /// Discards forwarded copies scoring at or over their destination's
    /// threshold, and counts forwards and complaints.
    pub gate: Option<Arc<mxrack_filter::ForwardGate>>,
    /// Where complaint (ARF) reports arrive; consumed by the gate.
    pub feedback_address: Option<String>,
    /// SPF/DKIM/DMARC of inbound mail (`mail_auth.verify_inbound`).
    pub mail_auth: Option<Arc<mxrack_mailauth::Inbound>>,
}

/// The Message-ID header value of a message (raw, unfolded), if any; read
/// by the shared header helper, never by slicing the text.
pub fn message_id(body: &[u8]) -> Option<String> {
    mxrack_mime::header_raw(body, "Message-ID").filter(|v| !v.is_empty())
}

pub enum SrsCheck {
    NotSrs,
    Original(String),
    Invalid,
}

impl Outbound {
    pub fn reverse_srs(&self, address: &str) -> SrsCheck {
        let Some(srs) = self.relay.srs() else {
            return SrsCheck::NotSrs;
        };
        match srs.reverse(address) {
            Ok(orig) => SrsCheck::Original(orig),
            Err(SrsError::NotSrs) => SrsCheck::NotSrs,
            Err(e) => {
                info!(address, error = ?e, "SRS address refused");
                SrsCheck::Invalid
            }
        }
    }

    /// Applies the forwarding rules of the local mailboxes: returns the
    /// mailboxes that keep a copy and the queue entries for forwarded copies.
    /// A target hosted here is delivered locally (one level deep, so two
    /// mailboxes forwarding to each other cannot loop). `aliased` are the
    /// outside addresses hosted aliases resolved to at RCPT: they are
    /// forwarded copies too (SRS sender, the gate, the forward transport),
    /// never a relay of the original sender's mail.
    ///
    /// Reads the rules, resolves targets and asks the gate (store calls
    /// all), so the whole plan runs on a blocking thread. Its task failing
    /// (a panic, the runtime shutting down) is an error: the message is
    /// then refused with a temporary failure, never half delivered.
    pub async fn plan(
        self: &Arc<Self>,
        store: &Arc<Store>,
        mail_from: &str,
        local: Vec<String>,
        aliased: Vec<String>,
        score: Option<f32>,
        message_id: Option<&str>,
    ) -> Result<(Vec<String>, Vec<QueuedCopy>), StoreError> {
        let (this, store) = (Arc::clone(self), Arc::clone(store));
        let mail_from = mail_from.to_string();
        let message_id = message_id.map(str::to_string);
        mxrack_store::spawn_blocking(move || {
            this.plan_blocking(
                &store,
                &mail_from,
                local,
                aliased,
                score,
                message_id.as_deref(),
            )
        })
        .await
        .map_err(|e| {
            StoreError::Io(std::io::Error::other(format!(
                "forwarding plan failed: {e}"
            )))
        })
    }

    fn plan_blocking(
        &self,
        store: &Store,
        mail_from: &str,
        local: Vec<String>,
        aliased: Vec<String>,
        score: Option<f32>,
        message_id: Option<&str>,
    ) -> (Vec<String>, Vec<QueuedCopy>) {
        let mut keep: Vec<String> = Vec::new();
        let mut external: Vec<String> = aliased;
        // Which mailbox's rule made each outside target (the first one), so
        // a copy the gate holds can be listed for that mailbox's user.
        let mut origin: Vec<(String, String)> = Vec::new();
        for mailbox in &local {
            let rule = store.forward_get(mailbox).ok().flatten();
            let Some(rule) = rule else {
                if !keep.contains(mailbox) {
                    keep.push(mailbox.clone());
                }
                continue;
            };
            if rule.keep_copy && !keep.contains(mailbox) {
                keep.push(mailbox.clone());
            }
            for target in rule.targets {
                match store.resolve_recipient(&target) {
                    Ok(Resolution::Deliver(r)) => {
                        for m in r.local {
                            if !keep.contains(&m) {
                                keep.push(m);
                            }
                        }
                        for t in r.remote {
                            origin.push((t.clone(), mailbox.clone()));
                            external.push(t);
                        }
                    }
                    Ok(Resolution::NotHosted) => {
                        origin.push((target.clone(), mailbox.clone()));
                        external.push(target);
                    }
                    Ok(Resolution::UnknownUser) | Err(_) => {
                        warn!(mailbox = %mailbox, target = %target, "forward target does not exist here; skipped");
                    }
                }
            }
        }
        external.sort();
        external.dedup();
        let sender = match self.relay.srs() {
            Some(srs) if !mail_from.is_empty() => srs.forward(mail_from),
            _ => mail_from.to_string(),
        };
        let mut copies = Vec::new();
        for target in external {
            let domain = target
                .rsplit_once('@')
                .map(|(_, d)| d.to_string())
                .unwrap_or_default();
            let mut prepend = String::new();
            let mut hold = None;
            if let Some(gate) = &self.gate {
                // The gate applies to forwarded copies only; the local copy
                // (if kept) is not touched.
                let score = score.unwrap_or(0.0);
                if gate.should_discard(&domain, score) {
                    if let Err(e) = gate.record_discard(&domain, score) {
                        warn!(error = %e, "cannot count a discarded forward");
                    }
                    // Discarded means not sent, never deleted: the copy is
                    // queued held, with its reason, for
                    // `forward.discard_keep_days` (issue 16; ARCHITECTURE,
                    // "the gate judges forwarded copies only").
                    let threshold = gate.threshold(&domain);
                    let days = gate.config().discard_keep_days;
                    let reason = format!(
                        "spam gate: score {score:.1} at or over {threshold:.1} for {}",
                        gate.destination(&domain)
                    );
                    let mailbox = origin
                        .iter()
                        .find(|(t, _)| *t == target)
                        .map(|(_, m)| m.clone());
                    info!(to = %target, score, threshold, keep_days = days, mailbox = mailbox.as_deref().unwrap_or(""), "forward discarded by the spam gate; held");
                    hold = Some(CopyHold {
                        reason,
                        expires: mxrack_filter::gate::now_secs()
                            .saturating_add(i64::from(days) * 86_400),
                        mailbox,
                    });
                } else {
                    match gate.record_forward(&domain, message_id, score) {
                        Ok(trace) => {
                            prepend = format!("{}: {trace}\r\n", mxrack_filter::TRACE_HEADER)
                        }
                        Err(e) => warn!(error = %e, "cannot record a forward"),
                    }
                }
            }
            copies.push(QueuedCopy {
                id: store.next_id(),
                mail_from: sender.clone(),
                recipients: vec![target],
                transport: "forward".into(),
                prepend,
                hold,
            });
        }
        (keep, copies)
    }
}

#[cfg(test)]
mod tests {
    use super::message_id;

    #[test]
    fn message_id_after_non_ascii_headers() {
        // Byte 11 of "Subject: aé test" is inside "é": slicing the line there
        // panicked the session after DATA.
        let body = "Subject: aé test\r\nMessage-ID:\r\n <1@example.net>\r\n\r\nbody\r\n";
        assert_eq!(
            message_id(body.as_bytes()).as_deref(),
            Some("<1@example.net>")
        );
        let body = "Subject: ééééééé\r\nX-é: é\r\n\r\nMessage-ID: <not@header>\r\n";
        assert_eq!(message_id(body.as_bytes()), None);
        assert_eq!(
            message_id(b"Message-Id: <2@x>\r\n\r\n").as_deref(),
            Some("<2@x>")
        );
    }
}
