//! DANE for SMTP (RFC 7672): a destination whose DNS is signed publishes
//! TLSA records for its MX hosts (`_25._tcp.<mx host>`), and a sender that
//! finds them by DNSSEC-validated lookups must deliver over STARTTLS to a
//! server whose certificate matches one of them, or not at all.
//!
//! * Which records count (3.1): DANE-TA(2) and DANE-EE(3), selector Cert(0)
//!   or SPKI(1), matching Full(0), SHA2-256(1) or SHA2-512(2). PKIX-TA(0)
//!   and PKIX-EE(1) are unusable for SMTP (3.1.3), as are unknown values.
//!   A secure TLSA RRset with no usable record still makes TLS mandatory,
//!   unauthenticated (2.2, Postfix's "encrypt" level): [`tls_config`] of an
//!   empty set.
//! * DANE-EE(3) (3.1.1): the server's own certificate (or its public key)
//!   matches; neither its names nor its dates are checked.
//! * DANE-TA(2) (3.1.2, 3.2.2): a certificate the server sent above its
//!   own (as OpenSSL and Postfix match usage 2) matches and is taken as
//!   the trust anchor; the server's certificate must chain to it (WebPKI,
//!   dates checked) and be valid for the MX host's name.
//! * With an enforced MTA-STS policy too, the certificate must also pass
//!   the policy's WebPKI check: DANE never loosens what the policy asks
//!   (RFC 8461 2 forbids the other way round: a policy never overrides a
//!   failing DANE check), so a flaw in DNSSEC validation cannot undo a
//!   policy.
//!
//! What DNSSEC says (route.rs, through [`crate::dnssec::Validator`]): the
//! records, with their proofs, are judged by [`tlsa_rrset`]; the verifier
//! here is pure.

use crate::client::HandshakeSignatures;
use base64::Engine;
use hickory_resolver::proto::dnssec::{Algorithm, Proof, PublicKeyBuf, TrustAnchors};
use hickory_resolver::proto::rr::{RData, Record};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use std::sync::Arc;

/// TLSA records of one host kept at most: a larger RRset is cut (each is
/// tried against each certificate of a handshake).
pub const TLSA_RECORDS_MAX: usize = 16;
/// Certificate association data longer than this is unusable: a full
/// certificate (matching 0) is a few KiB; digests are 32 or 64 bytes.
pub const TLSA_DATA_MAX: usize = 16 * 1024;

/// Trust anchors read from `[dns] trust_anchor_file` at most.
pub const TRUST_ANCHORS_MAX: usize = 16;
/// The largest `[dns] trust_anchor_file` read (16 RSA-4096 keys take
/// about 12 KiB).
pub const TRUST_ANCHOR_FILE_BYTES_MAX: u64 = 64 * 1024;

/// [`parse_trust_anchors`] of the file at `path`, refused when larger than
/// [`TRUST_ANCHOR_FILE_BYTES_MAX`].
pub fn read_trust_anchors(path: &std::path::Path) -> Result<TrustAnchors, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    file.take(TRUST_ANCHOR_FILE_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > TRUST_ANCHOR_FILE_BYTES_MAX {
        return Err(format!("larger than {TRUST_ANCHOR_FILE_BYTES_MAX} bytes"));
    }
    parse_trust_anchors(&text)
}

/// DNSSEC trust anchors in zone-file form, one DNSKEY record a line
/// (`<owner> [ttl] [IN] DNSKEY <flags> <protocol> <algorithm> <key>`, the
/// key in base64, possibly split by spaces): what `dig DNSKEY` or a
/// signer prints. `;` starts a comment. They replace the public root's
/// built-in keys: a private root (tests, a lab). hickory trusts such a key
/// for whatever zone it signs (the owner name is not kept), and the relay
/// checks the root zone's SOA validates, so the file must hold the root's
/// keys (a private root's, or the public one's next to others).
pub fn parse_trust_anchors(text: &str) -> Result<TrustAnchors, String> {
    let mut anchors = TrustAnchors::empty();
    for (n, line) in text.lines().enumerate() {
        let line = line.split(';').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words
            .iter()
            .position(|w| w.eq_ignore_ascii_case("DNSKEY"))
            .ok_or_else(|| format!("line {}: not a DNSKEY record", n + 1))?;
        let [flags, protocol, algorithm, key @ ..] = &words[at + 1..] else {
            return Err(format!("line {}: a DNSKEY record has four fields", n + 1));
        };
        let key = match key {
            [] => return Err(format!("line {}: a DNSKEY record has four fields", n + 1)),
            parts => parts.concat(),
        };
        let bad = |what: &str| format!("line {}: bad {what}", n + 1);
        flags.parse::<u16>().map_err(|_| bad("flags"))?;
        if *protocol != "3" {
            return Err(bad("protocol (RFC 4034 2.1.2: 3)"));
        }
        let algorithm = Algorithm::from_u8(algorithm.parse().map_err(|_| bad("algorithm"))?);
        if !algorithm.is_supported() {
            return Err(format!(
                "line {}: algorithm {algorithm} is not supported",
                n + 1
            ));
        }
        let key = base64::engine::general_purpose::STANDARD
            .decode(key)
            .map_err(|_| bad("key (base64)"))?;
        if key.is_empty() {
            return Err(bad("key (empty)"));
        }
        if anchors.len() >= TRUST_ANCHORS_MAX {
            return Err(format!("more than {TRUST_ANCHORS_MAX} trust anchors"));
        }
        anchors.insert(&PublicKeyBuf::new(key, algorithm));
    }
    if anchors.is_empty() {
        return Err("no DNSKEY record in it".into());
    }
    Ok(anchors)
}

/// RFC 6698 2.1.1 certificate usages DANE for SMTP uses.
pub const DANE_TA: u8 = 2;
pub const DANE_EE: u8 = 3;

/// One usable TLSA record (RFC 6698 2.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

impl Tlsa {
    /// The record if DANE for SMTP can use it (RFC 7672 3.1), else None.
    pub fn usable(usage: u8, selector: u8, matching: u8, data: &[u8]) -> Option<Tlsa> {
        let data_ok = match matching {
            0 => !data.is_empty() && data.len() <= TLSA_DATA_MAX,
            1 => data.len() == 32,
            2 => data.len() == 64,
            _ => false,
        };
        ((usage == DANE_TA || usage == DANE_EE) && selector <= 1 && data_ok).then(|| Tlsa {
            usage,
            selector,
            matching,
            data: data.to_vec(),
        })
    }

    /// Whether `cert` is what this record describes: the whole certificate
    /// (selector 0) or its SubjectPublicKeyInfo (1), as is or by digest.
    pub fn matches(&self, cert: &CertificateDer<'_>) -> bool {
        let selected: Vec<u8> = match self.selector {
            0 => cert.as_ref().to_vec(),
            _ => match webpki::EndEntityCert::try_from(cert) {
                Ok(parsed) => parsed.subject_public_key_info().as_ref().to_vec(),
                Err(_) => return false,
            },
        };
        let digest = match self.matching {
            0 => return selected == self.data,
            1 => ring::digest::digest(&ring::digest::SHA256, &selected),
            _ => ring::digest::digest(&ring::digest::SHA512, &selected),
        };
        digest.as_ref() == self.data.as_slice()
    }
}

/// What a host's TLSA lookup means for delivery to it (RFC 7672 2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostDane {
    /// No DANE: no TLSA records, or records DNSSEC did not prove.
    None,
    /// TLS is mandatory, and with records, authenticated by them.
    Required(Arc<[Tlsa]>),
}

/// Judges a TLSA answer (the TLSA records and the CNAMEs leading to them,
/// with the validator's proofs), asked for a host whose addresses DNSSEC
/// proved: `Err` when any of it is bogus or not proved secure: the host
/// must not be used (2.2: a failed TLSA lookup makes the host unusable).
/// Unproved TLSA records beside proved addresses mean stripped signatures
/// (legitimately only under an insecure delegation at `_tcp` or `_25`,
/// which nobody makes): failing closed keeps a downgrade out.
pub fn tlsa_rrset(records: &[&Record]) -> Result<HostDane, String> {
    if records.iter().any(|r| r.proof() == Proof::Bogus) {
        return Err("its TLSA records fail DNSSEC validation".into());
    }
    let tlsa: Vec<&&Record> = records
        .iter()
        .filter(|r| matches!(r.data(), RData::TLSA(_)))
        .collect();
    if tlsa.is_empty() {
        return Ok(HostDane::None);
    }
    if !records.iter().all(|r| r.proof().is_secure()) {
        return Err("its TLSA records are not proved by DNSSEC".into());
    }
    let usable: Vec<Tlsa> = tlsa
        .iter()
        .filter_map(|r| match r.data() {
            RData::TLSA(t) => Tlsa::usable(
                t.cert_usage().into(),
                t.selector().into(),
                t.matching().into(),
                t.cert_data(),
            ),
            _ => None,
        })
        .take(TLSA_RECORDS_MAX)
        .collect();
    Ok(HostDane::Required(usable.into()))
}

/// The rustls configuration for a host DANE applies to: certificates
/// verified by its TLSA records, or (none usable) encryption without
/// authentication; `policy`: an enforced MTA-STS policy's WebPKI check,
/// which must pass as well.
pub fn tls_config(
    tlsa: &Arc<[Tlsa]>,
    policy: Option<Arc<WebPkiServerVerifier>>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client configuration: {e}"))?;
    let config = match (tlsa.is_empty(), policy) {
        (true, None) => return crate::client::opportunistic_tls(),
        (true, Some(webpki)) => builder.with_webpki_verifier(webpki).with_no_client_auth(),
        (false, policy) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(DaneVerifier {
                tlsa: tlsa.clone(),
                signatures: HandshakeSignatures(provider),
                policy,
            }))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The certificate matched none of the records (or, under DANE-TA, did not
/// chain to the matching one).
struct Mismatch(String);

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DANE: {}", self.0)
    }
}

// rustls shows an `Other` certificate error by its Debug form.
impl std::fmt::Debug for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Mismatch {}

#[derive(Debug)]
struct DaneVerifier {
    tlsa: Arc<[Tlsa]>,
    signatures: HandshakeSignatures,
    /// An enforced MTA-STS policy's check, also required.
    policy: Option<Arc<WebPkiServerVerifier>>,
}

impl DaneVerifier {
    /// `why` reaches the queue's last error through
    /// [`crate::client::tls_failure`].
    fn mismatch(&self, why: String) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Mismatch(
            why,
        )))))
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let dane = self.dane(end_entity, intermediates, server_name, ocsp_response, now)?;
        match &self.policy {
            Some(policy) => policy.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            None => Ok(dane),
        }
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls12(m, c, d)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls13(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}

impl DaneVerifier {
    /// The TLSA records' verdict on the server's chain.
    fn dane(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // DANE-EE: the key is the identity (RFC 7672 3.1.1).
        if self
            .tlsa
            .iter()
            .any(|t| t.usage == DANE_EE && t.matches(end_entity))
        {
            return Ok(ServerCertVerified::assertion());
        }
        // DANE-TA: the matching certificate of the sent chain is the only
        // trust anchor (3.1.2); the rest is WebPKI with the MX host's name.
        let mut chain_error = None;
        for anchor in intermediates {
            if !self
                .tlsa
                .iter()
                .any(|t| t.usage == DANE_TA && t.matches(anchor))
            {
                continue;
            }
            let mut roots = rustls::RootCertStore::empty();
            if roots.add(anchor.clone().into_owned()).is_err() {
                continue;
            }
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                self.signatures.0.clone(),
            )
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
            match verifier.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Ok(ok) => return Ok(ok),
                Err(e) => chain_error = Some(e),
            }
        }
        Err(match chain_error {
            Some(e) => self.mismatch(format!(
                "the certificate does not chain to the DANE-TA record's anchor: {e}"
            )),
            None => self.mismatch(format!(
                "the certificate matches none of the {} TLSA records",
                self.tlsa.len()
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::rdata::TLSA;
    use hickory_resolver::proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
    use hickory_resolver::proto::rr::{Name, RData, Record};

    /// A CA and a server certificate from it (rcgen), for mx.dane.example.
    struct Pki {
        ca: CertificateDer<'static>,
        leaf: CertificateDer<'static>,
        other: CertificateDer<'static>,
    }

    fn pki() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["mx.dane.example".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        let other_key = KeyPair::generate().unwrap();
        let other = CertificateParams::new(vec!["mx.dane.example".to_string()])
            .unwrap()
            .self_signed(&other_key)
            .unwrap();
        Pki {
            ca: ca.der().clone(),
            leaf: leaf.der().clone(),
            other: other.der().clone(),
        }
    }

    fn spki_sha256(cert: &CertificateDer<'_>) -> Vec<u8> {
        let spki = webpki::EndEntityCert::try_from(cert)
            .unwrap()
            .subject_public_key_info();
        ring::digest::digest(&ring::digest::SHA256, spki.as_ref())
            .as_ref()
            .to_vec()
    }

    fn verify(tlsa: Vec<Tlsa>, chain: &[CertificateDer<'_>], name: &str) -> Result<(), String> {
        verify_with(tlsa, None, chain, name)
    }

    fn verify_with(
        tlsa: Vec<Tlsa>,
        policy: Option<Arc<WebPkiServerVerifier>>,
        chain: &[CertificateDer<'_>],
        name: &str,
    ) -> Result<(), String> {
        let v = DaneVerifier {
            tlsa: tlsa.into(),
            signatures: HandshakeSignatures(Arc::new(rustls::crypto::ring::default_provider())),
            policy,
        };
        let name = ServerName::try_from(name.to_string()).unwrap();
        v.verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn trust_anchors_are_dnskey_lines() {
        // The root zone's 2024 KSK as `dig . DNSKEY` prints it, split key.
        let root = ". 172800 IN DNSKEY 257 3 8 AwEAAa96jeuknZlaeSrvyAJj6ZHv28hhOKkx3rLGXVaC6rXTsDc449/c idltpkyGt80oKWHQdlL5O9Dr0szV+TgyuXaegRCd5EP2DvBaaqfn Nx5XC+4pfw7pkkGXrTnOubOcPCasq0ovYPf7TiZ+Fe0OJi5OzFPe oOYZ1plUumrsLgYI9rsVgLK8Oz4q2XlzmSLVNvLI1yAUuOa9r3gq ; the 2024 KSK\n; a comment line\n";
        assert_eq!(parse_trust_anchors(root).unwrap().len(), 1);
        let ec = "test. DNSKEY 257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+ KkxLbxILfDLUT0rAK9iUzy1L53eKGQ==\n";
        assert_eq!(parse_trust_anchors(ec).unwrap().len(), 1);
        for (bad, why) in [
            ("", "no DNSKEY"),
            (". IN DS 20326 8 2 E06D44B8", "not a DNSKEY"),
            (". DNSKEY 257 3 8", "four fields"),
            (". DNSKEY 257 2 8 AwEAAQ==", "protocol"),
            (". DNSKEY 257 3 8 not*base64", "base64"),
            (". DNSKEY x 3 8 AwEAAQ==", "flags"),
        ] {
            let e = parse_trust_anchors(bad).map(|a| a.len()).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_trust_anchor_file_has_a_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let line = "test. DNSKEY 257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+ KkxLbxILfDLUT0rAK9iUzy1L53eKGQ==\n";
        let ok = dir.path().join("ok.txt");
        std::fs::write(&ok, line).unwrap();
        assert_eq!(read_trust_anchors(&ok).unwrap().len(), 1);
        let huge = dir.path().join("huge.txt");
        let comments = ";".repeat(TRUST_ANCHOR_FILE_BYTES_MAX as usize) + "\n";
        std::fs::write(&huge, comments + line).unwrap();
        let e = read_trust_anchors(&huge).map(|a| a.len()).unwrap_err();
        assert!(e.contains("larger than"), "{e}");
    }

    #[test]
    fn only_dane_usages_with_known_selectors_and_digests_are_usable() {
        let d32 = [7u8; 32];
        assert!(Tlsa::usable(3, 1, 1, &d32).is_some());
        assert!(Tlsa::usable(2, 0, 1, &d32).is_some());
        assert!(Tlsa::usable(3, 1, 2, &[7u8; 64]).is_some());
        // PKIX-TA and PKIX-EE (RFC 7672 3.1.3), unknown selector or
        // matching type, a digest of the wrong length.
        for (u, s, m, d) in [
            (0, 1, 1, &d32[..]),
            (1, 1, 1, &d32[..]),
            (3, 2, 1, &d32[..]),
            (3, 1, 3, &d32[..]),
            (3, 1, 1, &d32[..31]),
            (3, 1, 0, &[][..]),
        ] {
            assert_eq!(Tlsa::usable(u, s, m, d), None, "{u} {s} {m}");
        }
    }

    #[test]
    fn dane_ee_matches_the_key_whatever_the_name() {
        let p = pki();
        let ee = Tlsa::usable(3, 1, 1, &spki_sha256(&p.leaf)).unwrap();
        assert_eq!(
            verify(
                vec![ee.clone()],
                std::slice::from_ref(&p.leaf),
                "any.example"
            ),
            Ok(())
        );
        let full = Tlsa::usable(3, 0, 0, p.leaf.as_ref()).unwrap();
        assert_eq!(
            verify(vec![full], std::slice::from_ref(&p.leaf), "mx.dane.example"),
            Ok(())
        );
        let sha512 = ring::digest::digest(&ring::digest::SHA512, p.leaf.as_ref());
        let by512 = Tlsa::usable(3, 0, 2, sha512.as_ref()).unwrap();
        assert_eq!(
            verify(
                vec![by512],
                std::slice::from_ref(&p.leaf),
                "mx.dane.example"
            ),
            Ok(())
        );
        let e = verify(vec![ee], std::slice::from_ref(&p.other), "mx.dane.example").unwrap_err();
        assert!(
            e.contains("DANE: the certificate matches none of the 1 TLSA records"),
            "{e}"
        );
    }

    #[test]
    fn dane_ta_needs_the_chain_and_the_name() {
        let p = pki();
        let ta = Tlsa::usable(
            2,
            0,
            1,
            ring::digest::digest(&ring::digest::SHA256, p.ca.as_ref()).as_ref(),
        )
        .unwrap();
        let chain = [p.leaf.clone(), p.ca.clone()];
        assert_eq!(verify(vec![ta.clone()], &chain, "mx.dane.example"), Ok(()));
        let e = verify(vec![ta.clone()], &chain, "other.example").unwrap_err();
        assert!(
            e.contains("does not chain to the DANE-TA") && e.contains("not valid for name"),
            "{e}"
        );
        // The anchor must be sent (RFC 7672 3.2.1); a self-signed
        // certificate does not chain to it.
        let e = verify(
            vec![ta.clone()],
            std::slice::from_ref(&p.leaf),
            "mx.dane.example",
        )
        .unwrap_err();
        assert!(e.contains("matches none"), "{e}");
        let e = verify(vec![ta], std::slice::from_ref(&p.other), "mx.dane.example").unwrap_err();
        assert!(e.contains("matches none"), "{e}");
        // A usage-2 record naming the server's own certificate is not an
        // anchor (only certificates above it are, as in OpenSSL).
        let own = ring::digest::digest(&ring::digest::SHA256, p.other.as_ref());
        let own = Tlsa::usable(2, 0, 1, own.as_ref()).unwrap();
        let e = verify(vec![own], std::slice::from_ref(&p.other), "mx.dane.example").unwrap_err();
        assert!(e.contains("matches none"), "{e}");
    }

    #[test]
    fn with_an_enforced_policy_the_webpki_check_must_pass_too() {
        let p = pki();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(p.ca.clone()).unwrap();
        let policy = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let chain = [p.leaf.clone(), p.ca.clone()];
        let ee = |c: &CertificateDer<'_>| Tlsa::usable(3, 1, 1, &spki_sha256(c)).unwrap();
        assert_eq!(
            verify_with(
                vec![ee(&p.leaf)],
                Some(policy.clone()),
                &chain,
                "mx.dane.example"
            ),
            Ok(())
        );
        // DANE alone would take the self-signed key its record names; the
        // policy's check does not.
        let e = verify_with(
            vec![ee(&p.other)],
            Some(policy.clone()),
            std::slice::from_ref(&p.other),
            "mx.dane.example",
        )
        .unwrap_err();
        // (rcgen gives both certificates the same issuer name: WebPKI
        // tries the CA and finds the signature is not its.)
        assert!(
            e.contains("invalid peer certificate") && !e.contains("DANE"),
            "{e}"
        );
        // And the policy never makes up for a failing DANE check.
        let e =
            verify_with(vec![ee(&p.other)], Some(policy), &chain, "mx.dane.example").unwrap_err();
        assert!(e.contains("DANE: the certificate matches none"), "{e}");
    }

    fn record(usage: u8, data: Vec<u8>, proof: Proof) -> Record {
        let mut r = Record::from_rdata(
            Name::from_ascii("_25._tcp.mx.dane.example.").unwrap(),
            60,
            RData::TLSA(TLSA::new(
                CertUsage::from(usage),
                Selector::Spki,
                Matching::Sha256,
                data,
            )),
        );
        r.set_proof(proof);
        r
    }

    fn cname(proof: Proof) -> Record {
        let mut r = Record::from_rdata(
            Name::from_ascii("_25._tcp.mx.dane.example.").unwrap(),
            60,
            RData::CNAME(hickory_resolver::proto::rr::rdata::CNAME(
                Name::from_ascii("_25._tcp.elsewhere.example.").unwrap(),
            )),
        );
        r.set_proof(proof);
        r
    }

    #[test]
    fn a_cname_to_the_records_is_judged_with_them() {
        let target = |p| {
            let mut r = record(3, vec![1; 32], p);
            r.set_name(Name::from_ascii("_25._tcp.elsewhere.example.").unwrap());
            r
        };
        assert!(matches!(
            tlsa_rrset(&[&cname(Proof::Secure), &target(Proof::Secure)]),
            Ok(HostDane::Required(_))
        ));
        // A forged or unproved CNAME to records the attacker signed: not
        // used.
        assert!(tlsa_rrset(&[&cname(Proof::Bogus), &target(Proof::Secure)]).is_err());
        assert!(tlsa_rrset(&[&cname(Proof::Insecure), &target(Proof::Secure)]).is_err());
    }

    #[test]
    fn only_secure_records_make_dane_and_bogus_ones_make_the_host_unusable() {
        let secure = record(3, vec![1; 32], Proof::Secure);
        let Ok(HostDane::Required(set)) = tlsa_rrset(&[&secure]) else {
            panic!("secure and usable")
        };
        assert_eq!(set.len(), 1);
        // Secure but only PKIX-EE: TLS still mandatory, not authenticated.
        let pkix = record(1, vec![1; 32], Proof::Secure);
        assert_eq!(
            tlsa_rrset(&[&pkix]),
            Ok(HostDane::Required(Vec::new().into()))
        );
        // Not proved beside proved addresses: stripped signatures.
        for p in [Proof::Insecure, Proof::Indeterminate] {
            assert!(tlsa_rrset(&[&record(3, vec![1; 32], p)]).is_err());
        }
        // One forged record among good ones: the host is not used.
        let bogus = record(3, vec![2; 32], Proof::Bogus);
        assert!(tlsa_rrset(&[&secure, &bogus]).is_err());
        assert_eq!(tlsa_rrset(&[]), Ok(HostDane::None));
    }
}
