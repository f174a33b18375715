//! Signing at send time, the relay's [`SignHook`]: every key of the
//! signing domain adds a DKIM-Signature (RFC 6376; RSA for the receivers
//! that check only rsa-sha256, Ed25519 beside it, RFC 8463), and a
//! forwarded copy also gets an ARC set (RFC 8617 5.1) made with the
//! domain's RSA key: ARC-Authentication-Results (the MX's own
//! Authentication-Results of the message, found at the top of the stored
//! message), ARC-Message-Signature and ARC-Seal, instance i=1 or the next
//! one after the chain it arrived with.
//!
//! The signing domain: for a forwarded copy, the domain of its SRS sender
//! (the forwarder's); otherwise the domain of the From header (DMARC
//! alignment, RFC 7489 3.1.1), else of the envelope sender.

use mail_auth::arc::ArcSealer;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use mail_auth::{AuthenticatedMessage, AuthenticationResults, MessageAuthenticator};
use mxrack_relay::{Outgoing, SignHook};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::keys::{Algorithm, DkimKey, KeyStore, SigningKey};

/// OpenDKIM's default signed header fields (its `should_signhdrs` list)
/// plus Message-ID and the MIME fields, as the brief of issue 16 asks.
/// Fields absent from a message are left out of h=.
pub const SIGNED_HEADERS: [&str; 23] = [
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Resent-Date",
    "Resent-From",
    "Resent-To",
    "Resent-Cc",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// Absent header names added to h= when a signature's b= value would end
/// exactly where mail-auth folds its line: it writes `b=...\r\n\t;`, signed
/// as `b=;`, but RFC 6376 3.5 leaves the fold outside the value, so strict
/// verifiers (dkimpy) read `b= ;` and fail it. One more (absent, so
/// harmless: it only prevents adding such a field later) name moves the
/// line breaks; see [`folds_before_end`].
const LAYOUT_SHIFT: [&str; 2] = ["Sender", "Resent-Sender"];

/// A header block with a line folded just before a field's final ';'.
fn folds_before_end(headers: &str) -> bool {
    headers.contains("\r\n\t;\r\n")
}

/// The signed header list, shifted by `n` extra absent names.
fn header_list(n: usize) -> Vec<&'static str> {
    let mut h = SIGNED_HEADERS.to_vec();
    h.extend(LAYOUT_SHIFT.iter().take(n));
    h
}

/// An ARC-Authentication-Results payload is one unfolded line: the seal
/// signs it as written (see [`aar_payload`]), and a header line is at most
/// 998 bytes (RFC 5322 2.1.1).
const AAR_PAYLOAD_BYTES_MAX: usize = 900;

/// Domains whose keys are kept in memory between messages.
const KEY_CACHE_DOMAINS_MAX: usize = 1024;

/// A domain's keys as last read, the key folder's modification time then
/// and when they were read: a key made or removed changes the folder's
/// time, and the next message reads the folder again.
type CachedKeys = (
    Option<std::time::SystemTime>,
    std::time::Instant,
    Arc<Vec<DkimKey>>,
);

/// A folder time younger than this is not trusted to mark a read: two
/// changes within one tick of the file system's clock (a file written,
/// then renamed into place) can leave the same time.
const KEY_STAMP_SETTLE: Duration = Duration::from_secs(2);
/// Cached keys are read again after this anyway: a key file replaced in
/// place (by hand, `cp` over it) does not change the folder's time.
const KEY_CACHE_TTL: Duration = Duration::from_secs(60);

pub struct Signer {
    keys: KeyStore,
    cache: Arc<Mutex<HashMap<String, CachedKeys>>>,
    auth: MessageAuthenticator,
    authserv_id: String,
    primary_domain: String,
    /// The chain check (DNS) of a message being sealed.
    arc_timeout: Duration,
}

impl Signer {
    pub fn new(
        keys: KeyStore,
        resolver: mail_auth::hickory_resolver::TokioResolver,
        authserv_id: String,
        primary_domain: String,
        arc_timeout: Duration,
    ) -> Signer {
        Signer {
            keys,
            cache: Arc::default(),
            auth: MessageAuthenticator(resolver),
            authserv_id,
            primary_domain,
            arc_timeout,
        }
    }

    fn signing_domain(&self, out: &Outgoing<'_>) -> String {
        let envelope = out
            .mail_from
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase());
        if out.transport == "forward" {
            return envelope.unwrap_or_else(|| self.primary_domain.clone());
        }
        header_from_domain(out.message)
            .or(envelope)
            .unwrap_or_else(|| self.primary_domain.clone())
    }

    /// `domain`'s keys from the cache, read again when their folder
    /// changed. Blocking (a stat, and the files when they changed).
    fn cached_keys(
        keys: &KeyStore,
        cache: &Mutex<HashMap<String, CachedKeys>>,
        domain: &str,
    ) -> Result<Arc<Vec<DkimKey>>, crate::MailAuthError> {
        let stamp = keys.domain_stamp(domain);
        if let Ok(c) = cache.lock()
            && let Some((at, read, k)) = c.get(domain)
            && *at == stamp
            && stamp.is_some()
            && read.elapsed() < KEY_CACHE_TTL
        {
            return Ok(k.clone());
        }
        let fresh = Arc::new(keys.for_domain(domain)?);
        let settled = stamp
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= KEY_STAMP_SETTLE);
        if let Ok(mut c) = cache.lock() {
            if !settled {
                // Read again next time, until the folder's time is old
                // enough to mark this read.
                c.remove(domain);
            } else {
                if c.len() >= KEY_CACHE_DOMAINS_MAX && !c.contains_key(domain) {
                    c.clear();
                }
                c.insert(
                    domain.to_string(),
                    (stamp, std::time::Instant::now(), fresh.clone()),
                );
            }
        }
        Ok(fresh)
    }

    /// The header lines for one copy (see the module documentation). Key
    /// reads and DKIM signing (RSA: about a millisecond a signature) run on
    /// a blocking thread, never on the relay's async workers.
    pub async fn sign(&self, out: Outgoing<'_>) -> String {
        let domain = self.signing_domain(&out);
        let (store, cache, d) = (self.keys.clone(), self.cache.clone(), domain.clone());
        let read = tokio::task::spawn_blocking(move || Self::cached_keys(&store, &cache, &d)).await;
        let keys = match read {
            Ok(Ok(k)) => k,
            Ok(Err(e)) => {
                tracing::warn!(domain, error = %e, "DKIM keys unreadable; sent unsigned");
                return String::new();
            }
            Err(e) => {
                tracing::warn!(domain, error = %e, "DKIM key read failed; sent unsigned");
                return String::new();
            }
        };
        if keys.is_empty() {
            return String::new();
        }
        let mut headers = String::new();
        if out.transport == "forward" {
            match keys.iter().find(|k| k.algorithm == Algorithm::Rsa) {
                Some(key) => match self.arc_set(key, out.message).await {
                    Ok(set) => headers.push_str(&set),
                    Err(why) => tracing::info!(domain, why, "forwarded copy not ARC-sealed"),
                },
                None => tracing::info!(domain, "no RSA key: forwarded copy not ARC-sealed"),
            }
        }
        let message = out.message.to_vec();
        let signed = tokio::task::spawn_blocking(move || {
            let mut lines = String::new();
            for key in keys.iter() {
                match dkim_signature(key, &message) {
                    Ok(h) => lines.push_str(&h),
                    Err(why) => tracing::warn!(key = key.dns_name(), why, "DKIM signing failed"),
                }
            }
            lines
        })
        .await;
        match signed {
            Ok(lines) => headers.push_str(&lines),
            Err(e) => tracing::warn!(domain, error = %e, "DKIM signing failed; sent unsigned"),
        }
        headers
    }

    async fn arc_set(&self, key: &DkimKey, message: &[u8]) -> Result<String, String> {
        let msg = AuthenticatedMessage::parse(message).ok_or("message not parsed")?;
        let arc = tokio::time::timeout(self.arc_timeout, self.auth.verify_arc(&msg))
            .await
            .map_err(|_| "ARC chain check timed out")?;
        if !arc.can_be_sealed() {
            return Err("the ARC chain it arrived with failed (cv=fail)".into());
        }
        let payload = aar_payload(message, &self.authserv_id);
        let results = AuthenticationResults::new(&payload);
        // mail-auth lists every name asked for in h=, present or not (an
        // absent one then cannot be added later); DKIM-Signature is left
        // out because ours is added beside the set, after sealing.
        let sealer = |n| {
            ArcSealer::from_key(key_rsa(key)?)
                .domain(key.domain.clone())
                .selector(key.selector.clone())
                .headers(header_list(n))
                .seal(&msg, &results, &arc)
                .map(|set| set.to_header())
                .map_err(|e| e.to_string())
        };
        // RSA signing: off the async worker where the runtime allows it
        // (the set borrows the parsed message and the chain's result, so
        // it cannot move to a blocking thread of its own).
        let seal = || {
            let mut last = sealer(0)?;
            for n in 1..=LAYOUT_SHIFT.len() {
                if !folds_before_end(&last) {
                    break;
                }
                last = sealer(n)?;
            }
            Ok(last)
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(seal),
            _ => seal(),
        }
    }
}

impl SignHook for Signer {
    fn headers<'a>(
        &'a self,
        out: Outgoing<'a>,
    ) -> Pin<Box<dyn Future<Output = String> + Send + 'a>> {
        Box::pin(self.sign(out))
    }
}

fn key_rsa(
    key: &DkimKey,
) -> Result<mail_auth::common::crypto::RsaKey<mail_auth::common::crypto::Sha256>, String> {
    match key.signing_key().map_err(|e| e.to_string())? {
        SigningKey::Rsa(k) => Ok(k),
        SigningKey::Ed25519(_) => Err("not an RSA key".into()),
    }
}

pub fn dkim_signature(key: &DkimKey, message: &[u8]) -> Result<String, String> {
    fn sign<K: mail_auth::common::crypto::SigningKey>(
        k: K,
        key: &DkimKey,
        message: &[u8],
        n: usize,
    ) -> Result<String, String> {
        DkimSigner::from_key(k)
            .domain(key.domain.clone())
            .selector(key.selector.clone())
            .headers(header_list(n))
            .sign(message)
            .map(|s| s.to_header())
            .map_err(|e| e.to_string())
    }
    let once = |n| match key.signing_key().map_err(|e| e.to_string())? {
        SigningKey::Rsa(k) => sign(k, key, message, n),
        SigningKey::Ed25519(k) => sign(k, key, message, n),
    };
    let mut last = once(0)?;
    for n in 1..=LAYOUT_SHIFT.len() {
        if !folds_before_end(&last) {
            break;
        }
        last = once(n)?;
    }
    Ok(last)
}

/// The domain of the From header's first address, lowercase.
pub fn header_from_domain(message: &[u8]) -> Option<String> {
    let value = mxrack_mime_from(message)?;
    let addr = match (value.rfind('<'), value.rfind('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.trim(),
    };
    let domain = addr.rsplit_once('@')?.1.trim().to_ascii_lowercase();
    crate::keys::valid_domain(&domain).then_some(domain)
}

/// The raw From value (first occurrence), unfolded enough to find the
/// address in it.
fn mxrack_mime_from(message: &[u8]) -> Option<String> {
    let msg = AuthenticatedMessage::parse(message)?;
    msg.headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(b"From"))
        .map(|(_, v)| String::from_utf8_lossy(v).replace(['\r', '\n'], " "))
}

/// What the ARC-Authentication-Results of a forwarded copy says: the
/// payload of the first Authentication-Results field of the stored message
/// when its authserv-id is ours (the MX writes it above every message it
/// accepts, so one from outside is never first), as one line with single
/// spaces (the seal signs exactly these bytes, and relaxed
/// canonicalization, RFC 6376 3.4.2, would make folding white space one
/// space anyway). Without it: "<id>; none".
pub fn aar_payload(message: &[u8], authserv_id: &str) -> String {
    let none = format!("{authserv_id}; none");
    let Some(msg) = AuthenticatedMessage::parse(message) else {
        return none;
    };
    let Some((_, value)) = msg
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(b"Authentication-Results"))
    else {
        return none;
    };
    let text = String::from_utf8_lossy(value);
    let line = text.split_ascii_whitespace().collect::<Vec<_>>().join(" ");
    let ours = line
        .split_once(';')
        .is_some_and(|(id, _)| id.trim().eq_ignore_ascii_case(authserv_id));
    if !ours || line.len() > AAR_PAYLOAD_BYTES_MAX || !line.is_ascii() {
        return none;
    }
    line
}

#[cfg(test)]
mod tests;
