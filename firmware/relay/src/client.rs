//! The SMTP client of the relay (RFC 5321 3.3 and 4.1): one attempt to
//! hand a message to one server for some recipients. STARTTLS is used when
//! offered (RFC 3207), opportunistically: a certificate that does not verify
//! still beats plaintext, as Postfix's "may" level.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio::time::timeout;

/// Longest reply line and most lines in one reply we read.
const REPLY_LINE_BYTES_MAX: usize = 4096;
const REPLY_LINES_MAX: usize = 200;

/// The outcome for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptOutcome {
    Delivered,
    /// 4xx or a failed connection: try again later.
    Deferred(String),
    /// 5xx: give up and bounce.
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub ehlo: String,
    pub source: Option<IpAddr>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// Time allowed for the whole DATA transfer and its reply.
    pub data_timeout: Duration,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub require_tls: bool,
}

#[derive(Debug)]
struct Reply {
    code: u16,
    text: String,
}

impl Reply {
    fn line(&self) -> String {
        format!("{} {}", self.code, self.text)
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn read_reply<S: AsyncRead + Unpin>(
    r: &mut BufReader<S>,
    limit: Duration,
) -> Result<Reply, String> {
    let mut text = Vec::new();
    for _ in 0..REPLY_LINES_MAX {
        let mut line = Vec::new();
        let n = timeout(
            limit,
            (&mut *r)
                .take(REPLY_LINE_BYTES_MAX as u64)
                .read_until(b'\n', &mut line),
        )
        .await
        .map_err(|_| "timeout waiting for the server".to_string())?
        .map_err(|e| format!("read error: {e}"))?;
        if n == 0 {
            return Err("connection closed by the server".into());
        }
        let l = String::from_utf8_lossy(&line).trim_end().to_string();
        if l.len() < 3 || !l.as_bytes()[..3].iter().all(u8::is_ascii_digit) {
            return Err(format!("malformed reply: {l:?}"));
        }
        let code: u16 = l[..3].parse().map_err(|_| "malformed reply code")?;
        text.push(l.get(4..).unwrap_or("").to_string());
        if l.as_bytes().get(3) != Some(&b'-') {
            return Ok(Reply {
                code,
                text: text.join(" / "),
            });
        }
    }
    Err("reply too long".into())
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    line: &str,
    limit: Duration,
) -> Result<Reply, String> {
    timeout(
        limit,
        s.get_mut().write_all(format!("{line}\r\n").as_bytes()),
    )
    .await
    .map_err(|_| "timeout writing to the server".to_string())?
    .map_err(|e| format!("write error: {e}"))?;
    read_reply(s, limit).await
}

/// The header section of the message as sent (prepended lines, then the
/// stored headers up to the blank line).
fn header_block<'a>(prepend: &'a [u8], body: &'a [u8]) -> impl Iterator<Item = &'a u8> + 'a {
    let end = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(body.len());
    prepend.iter().chain(&body[..end])
}

trait AsciiIter {
    fn all_ascii(self) -> bool;
}

impl<'a, I: Iterator<Item = &'a u8>> AsciiIter for I {
    fn all_ascii(mut self) -> bool {
        self.all(|b| b.is_ascii())
    }
}

/// Dot-stuffs a message for DATA (RFC 5321 4.5.2), making sure it ends in CRLF.
pub fn dot_stuff(prepend: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prepend.len() + body.len() + body.len() / 50 + 5);
    let mut at_line_start = true;
    for &b in prepend.iter().chain(body) {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Classifies a failure of the whole attempt for every recipient.
fn all(rcpts: &[String], outcome: RcptOutcome) -> Vec<(String, RcptOutcome)> {
    rcpts.iter().map(|r| (r.clone(), outcome.clone())).collect()
}

fn by_code(code: u16, text: String) -> RcptOutcome {
    if code >= 500 {
        RcptOutcome::Failed(text)
    } else {
        RcptOutcome::Deferred(text)
    }
}

/// One delivery attempt to `server`. Never fails as a whole: every
/// recipient gets an outcome (a connection failure defers them all).
pub async fn deliver(
    server: SocketAddr,
    tls_name: &str,
    config: &ClientConfig,
    mail_from: &str,
    rcpts: &[String],
    prepend: &[u8],
    body: &[u8],
) -> Vec<(String, RcptOutcome)> {
    match attempt(server, tls_name, config, mail_from, rcpts, prepend, body).await {
        Ok(results) => results,
        Err(why) => all(rcpts, RcptOutcome::Deferred(format!("{server}: {why}"))),
    }
}

async fn connect(
    server: SocketAddr,
    config: &ClientConfig,
) -> Result<tokio::net::TcpStream, String> {
    let socket = if server.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| e.to_string())?;
    if let Some(src) = config.source {
        socket
            .bind(SocketAddr::new(src, 0))
            .map_err(|e| format!("cannot bind source address {src}: {e}"))?;
    }
    timeout(config.connect_timeout, socket.connect(server))
        .await
        .map_err(|_| "connection timed out".to_string())?
        .map_err(|e| format!("cannot connect: {e}"))
}

#[allow(clippy::too_many_arguments)]
async fn attempt(
    server: SocketAddr,
    tls_name: &str,
    config: &ClientConfig,
    mail_from: &str,
    rcpts: &[String],
    prepend: &[u8],
    body: &[u8],
) -> Result<Vec<(String, RcptOutcome)>, String> {
    let tcp = connect(server, config).await?;
    let mut s: BufReader<Box<dyn Io>> = BufReader::new(Box::new(tcp));
    let t = config.command_timeout;
    let banner = read_reply(&mut s, t).await?;
    if banner.code != 220 {
        let o = by_code(
            banner.code,
            format!("{server} greeted with {}", banner.line()),
        );
        let _ = command(&mut s, "QUIT", t).await;
        return Ok(all(rcpts, o));
    }
    let mut ehlo = command(&mut s, &format!("EHLO {}", config.ehlo), t).await?;
    if ehlo.code != 250 {
        ehlo = command(&mut s, &format!("HELO {}", config.ehlo), t).await?;
        if ehlo.code != 250 {
            return Ok(all(
                rcpts,
                by_code(ehlo.code, format!("{server} refused HELO: {}", ehlo.line())),
            ));
        }
    }
    let offers = |r: &Reply, ext: &str| {
        r.text.split(" / ").any(|l| {
            l.split(' ')
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case(ext))
        })
    };
    if offers(&ehlo, "STARTTLS")
        && let Some(tls) = &config.tls
    {
        let r = command(&mut s, "STARTTLS", t).await?;
        if r.code == 220 {
            let name = rustls_pki_types::ServerName::try_from(tls_name.to_string())
                .unwrap_or_else(|_| rustls_pki_types::ServerName::IpAddress(server.ip().into()));
            let inner = s.into_inner();
            let stream = timeout(
                t,
                tokio_rustls::TlsConnector::from(tls.clone()).connect(name, inner),
            )
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
            s = BufReader::new(Box::new(stream));
            ehlo = command(&mut s, &format!("EHLO {}", config.ehlo), t).await?;
            if ehlo.code != 250 {
                return Ok(all(
                    rcpts,
                    by_code(
                        ehlo.code,
                        format!("{server} refused EHLO after TLS: {}", ehlo.line()),
                    ),
                ));
            }
        } else if config.require_tls {
            return Ok(all(
                rcpts,
                RcptOutcome::Deferred(format!("{server} refused STARTTLS: {}", r.line())),
            ));
        }
    } else if config.require_tls {
        return Ok(all(
            rcpts,
            RcptOutcome::Deferred(format!("{server} does not offer STARTTLS")),
        ));
    }
    let size = prepend.len() + body.len();
    let mut mail = format!("MAIL FROM:<{mail_from}>");
    if offers(&ehlo, "SIZE") {
        mail.push_str(&format!(" SIZE={size}"));
    }
    // 8-bit content goes as 8BITMIME when offered, and as it is otherwise,
    // as Postfix does (downgrading MIME would change signed content).
    if offers(&ehlo, "8BITMIME") && body.iter().any(|&b| b >= 0x80) {
        mail.push_str(" BODY=8BITMIME");
    }
    // RFC 6531 3.4: non-ASCII addresses need SMTPUTF8; a server without
    // it cannot take them at all (5.6.7), so that is a permanent failure.
    let utf8_addresses = !mail_from.is_ascii() || rcpts.iter().any(|r| !r.is_ascii());
    let utf8_headers = !header_block(prepend, body).all_ascii();
    if utf8_addresses || utf8_headers {
        if offers(&ehlo, "SMTPUTF8") {
            mail.push_str(" SMTPUTF8");
        } else if utf8_addresses {
            let _ = command(&mut s, "QUIT", t).await;
            return Ok(all(
                rcpts,
                RcptOutcome::Failed(format!(
                    "{server} does not support SMTPUTF8: 553 5.6.7 non-ASCII address cannot be delivered there"
                )),
            ));
        }
    }
    let r = command(&mut s, &mail, t).await?;
    if r.code != 250 {
        let _ = command(&mut s, "QUIT", t).await;
        return Ok(all(
            rcpts,
            by_code(r.code, format!("{server} refused MAIL FROM: {}", r.line())),
        ));
    }
    let mut results = Vec::new();
    let mut accepted = Vec::new();
    for rcpt in rcpts {
        let r = command(&mut s, &format!("RCPT TO:<{rcpt}>"), t).await?;
        if r.code == 250 || r.code == 251 {
            accepted.push(rcpt.clone());
        } else {
            results.push((
                rcpt.clone(),
                by_code(r.code, format!("{server} said {}", r.line())),
            ));
        }
    }
    if accepted.is_empty() {
        let _ = command(&mut s, "QUIT", t).await;
        return Ok(results);
    }
    let r = command(&mut s, "DATA", t).await?;
    if r.code != 354 {
        let _ = command(&mut s, "QUIT", t).await;
        results.extend(all(
            &accepted,
            by_code(r.code, format!("{server} refused DATA: {}", r.line())),
        ));
        return Ok(results);
    }
    let data = dot_stuff(prepend, body);
    timeout(config.data_timeout, s.get_mut().write_all(&data))
        .await
        .map_err(|_| "timeout sending the message".to_string())?
        .map_err(|e| format!("write error: {e}"))?;
    let r = read_reply(&mut s, config.data_timeout).await?;
    let outcome = if r.code == 250 {
        RcptOutcome::Delivered
    } else {
        by_code(r.code, format!("{server} said after DATA: {}", r.line()))
    };
    results.extend(all(&accepted, outcome));
    let _ = command(&mut s, "QUIT", t).await;
    Ok(results)
}

/// A rustls client configuration for opportunistic TLS: any certificate is
/// accepted (the alternative, on port 25, is no encryption at all).
pub fn opportunistic_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct AnyCert(Arc<CryptoProvider>);
    impl ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing() {
        assert_eq!(
            dot_stuff(b"X-T: 1\r\n", b".a\r\nb\r\n.\r\n"),
            b"X-T: 1\r\n..a\r\nb\r\n..\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"", b"no newline"), b"no newline\r\n.\r\n");
    }
}
