//! TLS set-up: the configured certificate, or a self-signed one generated on
//! first start into `DATA/tls/` (the embedded default). rustls with the ring
//! provider; TLS 1.2 and 1.3 only.

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {why}")]
    Read { path: PathBuf, why: String },
    #[error("cannot write {path}: {why}")]
    Write { path: PathBuf, why: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    #[error("certificate and key do not make a TLS configuration: {0}")]
    Rustls(String),
}

/// How long a TLS handshake may take, on any service.
pub const TLS_HANDSHAKE_TIMEOUT_SECS: u64 = 30;

/// Runs the server side of a TLS handshake on `stream` (implicit TLS, or
/// after STARTTLS/STLS) and returns the new connection; `None` when there is
/// no TLS, the handshake fails or it takes too long (the session then ends).
pub async fn accept_tls(
    acceptor: Option<&TlsAcceptor>,
    stream: crate::BoxStream,
    service: &'static str,
) -> Option<crate::Conn> {
    let acceptor = acceptor?;
    let handshake = tokio::time::timeout(
        std::time::Duration::from_secs(TLS_HANDSHAKE_TIMEOUT_SECS),
        acceptor.accept(stream),
    );
    match handshake.await {
        Ok(Ok(tls)) => Some(crate::Conn::new(Box::new(tls))),
        Ok(Err(e)) => {
            tracing::info!(service, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// What the services need to offer TLS.
#[derive(Clone)]
pub struct TlsSetup {
    pub acceptor: TlsAcceptor,
    pub cert_path: PathBuf,
    pub self_signed: bool,
}

/// Loads the configured certificate and key, or when neither is configured,
/// loads (creating on first use) a self-signed certificate for `hostname` in
/// `data_dir/tls`.
pub fn load_or_create_tls(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
    hostname: &str,
) -> Result<TlsSetup, TlsError> {
    let (cert_path, key_path, self_signed) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf(), false),
        _ => {
            let dir = data_dir.join("tls");
            let c = dir.join("cert.pem");
            let k = dir.join("key.pem");
            // A pair that is missing or does not parse (a crash of an older
            // version mid-write) is made anew: it is ours, nothing depends on it.
            if !c.exists() || !k.exists() || !pair_parses(&c, &k) {
                generate_self_signed(&dir, &c, &k, hostname)?;
            }
            (c, k, true)
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| TlsError::Read {
            path: cert_path.clone(),
            why: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Read {
            path: cert_path.clone(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: cert_path });
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| TlsError::Read {
        path: key_path.clone(),
        why: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    Ok(TlsSetup {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        cert_path,
        self_signed,
    })
}

fn generate_self_signed(
    dir: &Path,
    cert: &Path,
    key: &Path,
    hostname: &str,
) -> Result<(), TlsError> {
    let write_err = |path: &Path, e: std::io::Error| TlsError::Write {
        path: path.to_path_buf(),
        why: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| write_err(dir, e))?;
    let mut names = vec![hostname.to_string()];
    if hostname != "localhost" {
        names.push("localhost".into());
    }
    let generated =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    // Key first, certificate last: the certificate's presence marks a
    // complete pair. Each file is written whole under a temporary name,
    // fsynced and renamed, then the folder is fsynced, so a power cut
    // leaves either no pair or a whole one, never an empty file.
    crate::write_durably(key, generated.key_pair.serialize_pem().as_bytes(), 0o600)
        .map_err(|e| write_err(key, e))?;
    crate::write_durably(cert, generated.cert.pem().as_bytes(), 0o644)
        .map_err(|e| write_err(cert, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| write_err(dir, e))?;
    Ok(())
}

fn pair_parses(cert: &Path, key: &Path) -> bool {
    let certs_ok = CertificateDer::pem_file_iter(cert)
        .map(|it| {
            let v: Vec<_> = it.collect();
            !v.is_empty() && v.iter().all(|c| c.is_ok())
        })
        .unwrap_or(false);
    certs_ok && PrivateKeyDer::from_pem_file(key).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_made_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("mxrack-tls-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = load_or_create_tls(None, None, &dir, "mx.example.net").expect("created");
        assert!(first.self_signed);
        let pem = std::fs::read(&first.cert_path).expect("cert written");
        let second = load_or_create_tls(None, None, &dir, "mx.example.net").expect("loaded");
        assert_eq!(
            std::fs::read(&second.cert_path).expect("cert"),
            pem,
            "not regenerated"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_configured_certificate_is_an_error_naming_the_file() {
        let missing = Path::new("/nonexistent/cert.pem");
        let e = load_or_create_tls(Some(missing), Some(missing), Path::new("/tmp"), "x").err();
        assert!(
            e.expect("must fail")
                .to_string()
                .contains("/nonexistent/cert.pem")
        );
    }
}
