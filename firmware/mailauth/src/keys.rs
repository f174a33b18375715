//! DKIM keys per domain, one file each: `DATA/dkim/<domain>/<selector>.json`
//! (mode 0600, written durably): algorithm, the private key (RSA PKCS#1 DER
//! or Ed25519 PKCS#8 DER, base64) and the public key as published in the
//! `p=` tag of `<selector>._domainkey.<domain>` (RFC 6376 3.6.1: an RSA key
//! as SubjectPublicKeyInfo, what OpenDKIM publishes; Ed25519 as the 32 raw
//! bytes, RFC 8463 4.2).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::dkim::generate::DkimKeyPair;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::MailAuthError;

/// Keys one domain may have (an RSA and an Ed25519 key, and room to rotate).
pub const KEYS_PER_DOMAIN_MAX: usize = 8;
/// Domains with keys listed by `mxrack dkim list` and read by the signer.
pub const DOMAINS_MAX: usize = 10_000;
/// A key file is a few KiB; anything larger is not ours.
const KEY_FILE_BYTES_MAX: u64 = 16 * 1024;
/// RSA modulus size of new keys: 2048 bits, what Microsoft and Google
/// check (rsa-sha256) and what fits one DNS TXT record of 255-byte strings.
pub const RSA_BITS: usize = 2048;
/// Default selector of `mxrack dkim create`.
pub const DEFAULT_SELECTOR: &str = "mxrack";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Rsa,
    Ed25519,
}

impl Algorithm {
    pub fn parse(s: &str) -> Option<Algorithm> {
        match s.to_ascii_lowercase().as_str() {
            "rsa" => Some(Algorithm::Rsa),
            "ed25519" => Some(Algorithm::Ed25519),
            _ => None,
        }
    }
    /// The `k=` tag value (RFC 6376 3.6.1, RFC 8463).
    pub fn k_tag(self) -> &'static str {
        match self {
            Algorithm::Rsa => "rsa",
            Algorithm::Ed25519 => "ed25519",
        }
    }
}

/// One key as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKey {
    pub domain: String,
    pub selector: String,
    pub algorithm: Algorithm,
    /// Base64 of the private key DER.
    pub private_key: String,
    /// Base64 of the `p=` value.
    pub public_key: String,
    /// Unix seconds.
    pub created: i64,
}

/// A key ready to sign with.
pub enum SigningKey {
    Rsa(RsaKey<Sha256>),
    Ed25519(Ed25519Key),
}

impl DkimKey {
    /// The DNS name the TXT record goes under.
    pub fn dns_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }

    /// The TXT record to publish (RFC 6376 3.6.1).
    pub fn txt_record(&self) -> String {
        format!(
            "v=DKIM1; k={}; p={}",
            self.algorithm.k_tag(),
            self.public_key
        )
    }

    /// The record as a zone-file line: the value cut in strings of at most
    /// 255 bytes (RFC 1035 3.3.14; RFC 6376 3.6.2.2: they are concatenated).
    pub fn zone_line(&self) -> String {
        let txt = self.txt_record();
        let pieces: Vec<String> = txt
            .as_bytes()
            .chunks(255)
            .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
            .collect();
        format!("{}. IN TXT ( {} )", self.dns_name(), pieces.join(" "))
    }

    pub fn signing_key(&self) -> Result<SigningKey, MailAuthError> {
        let der = B64
            .decode(self.private_key.as_bytes())
            .map_err(|e| MailAuthError::Key(format!("{}: {e}", self.dns_name())))?;
        let bad = |e: mail_auth::Error| MailAuthError::Key(format!("{}: {e}", self.dns_name()));
        Ok(match self.algorithm {
            Algorithm::Rsa => {
                SigningKey::Rsa(RsaKey::<Sha256>::from_key_der(rustls_pki_der(&der)).map_err(bad)?)
            }
            Algorithm::Ed25519 => {
                SigningKey::Ed25519(Ed25519Key::from_pkcs8_der(&der).map_err(bad)?)
            }
        })
    }
}

fn rustls_pki_der(der: &[u8]) -> rustls_pki_types::PrivateKeyDer<'_> {
    rustls_pki_types::PrivateKeyDer::Pkcs1(der.into())
}

/// A folder only the service's user may enter (ARCHITECTURE: the data
/// folder is private).
fn private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// A DER length (X.690 8.1.3).
fn der_len(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
}

/// An RSAPublicKey (PKCS#1) wrapped as SubjectPublicKeyInfo (RFC 5280
/// 4.1.2.7) with the rsaEncryption algorithm identifier.
pub fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    // SEQUENCE { OID 1.2.840.113549.1.1.1, NULL }
    const ALG: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0x03];
    der_len(pkcs1.len() + 1, &mut bits);
    bits.push(0); // no unused bits
    bits.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    der_len(ALG.len() + bits.len(), &mut out);
    out.extend_from_slice(&ALG);
    out.extend(bits);
    out
}

/// A domain name as DNS and DKIM's `d=` accept it: lowercase letters,
/// digits, hyphens, dots; labels of 1 to 63.
pub fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// A selector (RFC 6376 3.1: a sub-domain): one or more such labels.
pub fn valid_selector(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

/// The keys under the data folder.
#[derive(Debug, Clone)]
pub struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    pub fn new(data_dir: &Path) -> KeyStore {
        KeyStore {
            dir: data_dir.join("dkim"),
        }
    }

    fn domain_dir(&self, domain: &str) -> PathBuf {
        self.dir.join(domain)
    }

    /// The modification time of `domain`'s key folder (None: no folder or
    /// an invalid name): creating or removing a key changes it.
    pub fn domain_stamp(&self, domain: &str) -> Option<std::time::SystemTime> {
        let domain = domain.to_ascii_lowercase();
        if !valid_domain(&domain) {
            return None;
        }
        std::fs::metadata(self.domain_dir(&domain))
            .and_then(|m| m.modified())
            .ok()
    }

    /// Makes a new key pair and stores it; refuses to replace a key.
    pub fn create(
        &self,
        domain: &str,
        selector: &str,
        algorithm: Algorithm,
        now: i64,
    ) -> Result<DkimKey, MailAuthError> {
        let domain = domain.to_ascii_lowercase();
        if !valid_domain(&domain) {
            return Err(MailAuthError::Invalid(format!(
                "{domain:?} is not a domain name"
            )));
        }
        if !valid_selector(selector) {
            return Err(MailAuthError::Invalid(format!(
                "{selector:?} is not a selector (lowercase letters, digits, '-', '_', '.')"
            )));
        }
        let path = self.domain_dir(&domain).join(format!("{selector}.json"));
        if path.exists() {
            return Err(MailAuthError::Invalid(format!(
                "{selector}._domainkey.{domain} already has a key; choose another --selector"
            )));
        }
        if self.for_domain(&domain)?.len() >= KEYS_PER_DOMAIN_MAX {
            return Err(MailAuthError::Invalid(format!(
                "{domain} has {KEYS_PER_DOMAIN_MAX} keys already"
            )));
        }
        let crypto = |e: mail_auth::Error| MailAuthError::Key(e.to_string());
        let (private_key, public_key) = match algorithm {
            Algorithm::Rsa => {
                let (private, public) = DkimKeyPair::generate_rsa(RSA_BITS)
                    .map_err(crypto)?
                    .into_inner();
                (private, rsa_spki(&public))
            }
            Algorithm::Ed25519 => DkimKeyPair::generate_ed25519()
                .map_err(crypto)?
                .into_inner(),
        };
        let key = DkimKey {
            domain: domain.clone(),
            selector: selector.to_string(),
            algorithm,
            private_key: B64.encode(private_key),
            public_key: B64.encode(public_key),
            created: now,
        };
        // The key must sign before it is kept.
        key.signing_key()?;
        private_dir(&self.domain_dir(&domain))?;
        let json =
            serde_json::to_vec_pretty(&key).map_err(|e| MailAuthError::Key(e.to_string()))?;
        mxrack_net::write_durably(&path, &json, 0o600)?;
        Ok(key)
    }

    fn read(path: &Path) -> Result<DkimKey, MailAuthError> {
        let meta = std::fs::symlink_metadata(path)?;
        if !meta.is_file() || meta.len() > KEY_FILE_BYTES_MAX {
            return Err(MailAuthError::Key(format!(
                "{}: not a key file",
                path.display()
            )));
        }
        let text = std::fs::read(path)?;
        serde_json::from_slice(&text)
            .map_err(|e| MailAuthError::Key(format!("{}: {e}", path.display())))
    }

    /// The keys of one domain, by selector.
    pub fn for_domain(&self, domain: &str) -> Result<Vec<DkimKey>, MailAuthError> {
        let domain = domain.to_ascii_lowercase();
        if !valid_domain(&domain) {
            return Ok(Vec::new());
        }
        let dir = self.domain_dir(&domain);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut keys = Vec::new();
        for entry in entries.take(KEYS_PER_DOMAIN_MAX * 4) {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                // One unreadable file must not leave the domain's good
                // keys unused: it is reported and skipped.
                match Self::read(&path) {
                    Ok(key) if key.domain == domain => keys.push(key),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable DKIM key file")
                    }
                }
            }
        }
        keys.sort_by(|a, b| a.selector.cmp(&b.selector));
        keys.truncate(KEYS_PER_DOMAIN_MAX);
        Ok(keys)
    }

    /// Every key, by domain then selector.
    pub fn list(&self) -> Result<Vec<DkimKey>, MailAuthError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut domains: Vec<String> = Vec::new();
        for entry in entries.take(DOMAINS_MAX) {
            if let Some(name) = entry?.file_name().to_str() {
                domains.push(name.to_string());
            }
        }
        domains.sort();
        let mut out = Vec::new();
        for d in domains {
            out.extend(self.for_domain(&d)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_wraps_pkcs1_as_openssl_does() {
        // A 2048-bit RSAPublicKey is 270 bytes; its SubjectPublicKeyInfo
        // starts 30 82 01 22 30 0d 06 09 2a 86 48 86 f7 0d 01 01 01 05 00
        // 03 82 01 0f 00 (what `openssl rsa -pubout` writes).
        let pkcs1 = vec![0x30; 270];
        let spki = rsa_spki(&pkcs1);
        assert_eq!(
            &spki[..24],
            &[
                0x30, 0x82, 0x01, 0x22, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d,
                0x01, 0x01, 0x01, 0x05, 0x00, 0x03, 0x82, 0x01, 0x0f, 0x00
            ]
        );
        assert_eq!(spki.len(), 294);
    }

    #[test]
    fn create_list_show_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let ks = KeyStore::new(dir.path());
        let k = ks
            .create("Example.ORG", "s1", Algorithm::Ed25519, 1)
            .unwrap();
        assert_eq!(k.domain, "example.org");
        assert!(k.txt_record().starts_with("v=DKIM1; k=ed25519; p="));
        assert_eq!(k.dns_name(), "s1._domainkey.example.org");
        assert!(
            ks.create("example.org", "s1", Algorithm::Ed25519, 1)
                .is_err()
        );
        assert!(
            ks.create("bad domain", "s1", Algorithm::Ed25519, 1)
                .is_err()
        );
        assert!(
            ks.create("example.org", "a/b", Algorithm::Ed25519, 1)
                .is_err()
        );
        let all = ks.list().unwrap();
        assert_eq!(all.len(), 1);
        assert!(ks.for_domain("other.example").unwrap().is_empty());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("dkim/example.org/s1.json"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
