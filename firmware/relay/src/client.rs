//! The SMTP client of the relay (RFC 5321 3.3 and 4.1): a `Session` to one
//! server carries several messages, each in transactions of up to
//! `RCPTS_PER_TRANSACTION_MAX` recipients, with an outcome per recipient.
//! STARTTLS is used when offered (RFC 3207), opportunistically: a
//! certificate that does not verify still beats plaintext, as Postfix's
//! "may" level. AUTH (RFC 4954, PLAIN or LOGIN) to a smarthost only inside
//! TLS.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio::time::timeout;

/// Longest reply line and most lines in one reply we read.
const REPLY_LINE_BYTES_MAX: usize = 4096;
const REPLY_LINES_MAX: usize = 200;
/// Most recipients in one transaction. RFC 5321 4.5.3.1.8 obliges every
/// server to take at least 100, so 100 never draws a 452 "too many
/// recipients" from a conforming server, and a message to many people at
/// one destination goes as one copy (Postfix's
/// smtp_destination_recipient_limit is 50, a margin for older servers;
/// a 452 is handled anyway by a new transaction for the rest).
pub const RCPTS_PER_TRANSACTION_MAX: usize = 100;
/// Messages over one session before it is closed, and its age after which
/// it is not reused (Postfix: smtp_connection_reuse_time_limit 300 s): a
/// long-lived session is not pinned to one server of a destination.
pub const MESSAGES_PER_SESSION_MAX: u32 = 1000;
pub const SESSION_REUSE_TIME_MAX: Duration = Duration::from_secs(300);
/// Longest wait for the reply to QUIT when a session is closed.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

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
pub fn all(rcpts: &[String], outcome: RcptOutcome) -> Vec<(String, RcptOutcome)> {
    rcpts.iter().map(|r| (r.clone(), outcome.clone())).collect()
}

fn by_code(code: u16, text: String) -> RcptOutcome {
    if code >= 500 {
        RcptOutcome::Failed(text)
    } else {
        RcptOutcome::Deferred(text)
    }
}

/// A user name and password for AUTH to a smarthost (RFC 4954). Sent only
/// inside TLS; never logged (Debug leaves the password out).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"(hidden)")
            .finish()
    }
}

/// One delivery attempt to `server` over a session of its own, closed
/// after. Never fails as a whole: every recipient gets an outcome (a
/// connection failure defers them all).
pub async fn deliver(
    server: SocketAddr,
    tls_name: &str,
    config: &ClientConfig,
    mail_from: &str,
    rcpts: &[String],
    prepend: &[u8],
    body: &[u8],
) -> Vec<(String, RcptOutcome)> {
    match Session::open(server, tls_name, config, None).await {
        Ok(mut session) => {
            let results = session.send(mail_from, rcpts, prepend, body).await;
            session.quit().await;
            results
        }
        Err(outcome) => all(rcpts, outcome),
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
    let tcp = timeout(config.connect_timeout, socket.connect(server))
        .await
        .map_err(|_| "connection timed out".to_string())?
        .map_err(|e| format!("cannot connect: {e}"))?;
    // Commands are small writes answered one by one: Nagle's algorithm
    // would hold each for the previous one's ACK.
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Whether an EHLO reply offers the extension `ext` (its first word).
fn offers(ehlo: &Reply, ext: &str) -> bool {
    ehlo_line(ehlo, ext).is_some()
}

/// The words after the keyword of the EHLO line for `ext`, if offered.
fn ehlo_line<'a>(ehlo: &'a Reply, ext: &str) -> Option<Vec<&'a str>> {
    ehlo.text.split(" / ").find_map(|l| {
        let mut words = l.split([' ', '=']);
        words
            .next()
            .filter(|w| w.eq_ignore_ascii_case(ext))
            .map(|_| words.collect())
    })
}

/// An open SMTP session to one server, greeted, past STARTTLS and AUTH,
/// ready for transactions (RFC 5321 3.3). Several messages go over it, one
/// transaction each: after a completed DATA the next MAIL follows directly
/// (RFC 5321 4.1.1.4: the end of data clears the transaction), after a
/// refused one an RSET comes first (4.1.1.5).
pub struct Session {
    s: BufReader<Box<dyn Io>>,
    server: SocketAddr,
    ehlo: Reply,
    command_timeout: Duration,
    data_timeout: Duration,
    opened: Instant,
    transactions: u32,
    /// A transaction was begun and not ended by DATA's final reply.
    needs_rset: bool,
    /// A read or write failed, a reply was malformed or the server said
    /// 421: the session cannot carry another command.
    broken: bool,
}

impl Session {
    /// Connects and greets. `Err` is the outcome every recipient of this
    /// attempt gets (a connection or greeting failure).
    pub async fn open(
        server: SocketAddr,
        tls_name: &str,
        config: &ClientConfig,
        auth: Option<&Credentials>,
    ) -> Result<Session, RcptOutcome> {
        match Session::greet(server, tls_name, config, auth).await {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(outcome)) => Err(outcome),
            Err(why) => Err(RcptOutcome::Deferred(format!("{server}: {why}"))),
        }
    }

    async fn greet(
        server: SocketAddr,
        tls_name: &str,
        config: &ClientConfig,
        auth: Option<&Credentials>,
    ) -> Result<Result<Session, RcptOutcome>, String> {
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
            return Ok(Err(o));
        }
        let mut ehlo = command(&mut s, &format!("EHLO {}", config.ehlo), t).await?;
        if ehlo.code != 250 {
            ehlo = command(&mut s, &format!("HELO {}", config.ehlo), t).await?;
            if ehlo.code != 250 {
                return Ok(Err(by_code(
                    ehlo.code,
                    format!("{server} refused HELO: {}", ehlo.line()),
                )));
            }
        }
        let mut tls_on = false;
        if offers(&ehlo, "STARTTLS")
            && let Some(tls) = &config.tls
        {
            let r = command(&mut s, "STARTTLS", t).await?;
            if r.code == 220 {
                let name = rustls_pki_types::ServerName::try_from(tls_name.to_string())
                    .unwrap_or_else(|_| {
                        rustls_pki_types::ServerName::IpAddress(server.ip().into())
                    });
                let inner = s.into_inner();
                let stream = timeout(
                    t,
                    tokio_rustls::TlsConnector::from(tls.clone()).connect(name, inner),
                )
                .await
                .map_err(|_| "TLS handshake timed out".to_string())?
                .map_err(|e| format!("TLS handshake failed: {}", tls_failure(&e)))?;
                s = BufReader::new(Box::new(stream));
                tls_on = true;
                ehlo = command(&mut s, &format!("EHLO {}", config.ehlo), t).await?;
                if ehlo.code != 250 {
                    return Ok(Err(by_code(
                        ehlo.code,
                        format!("{server} refused EHLO after TLS: {}", ehlo.line()),
                    )));
                }
            } else if config.require_tls || auth.is_some() {
                let _ = command(&mut s, "QUIT", t).await;
                return Ok(Err(RcptOutcome::Deferred(format!(
                    "{server} refused STARTTLS: {}",
                    r.line()
                ))));
            }
        }
        if !tls_on && (config.require_tls || auth.is_some()) {
            let _ = command(&mut s, "QUIT", t).await;
            let why = if auth.is_some() {
                "does not offer STARTTLS: credentials are never sent in plaintext"
            } else {
                "does not offer STARTTLS"
            };
            return Ok(Err(RcptOutcome::Deferred(format!("{server} {why}"))));
        }
        if let Some(creds) = auth
            && let Err(o) = authenticate(&mut s, server, &ehlo, creds, t).await?
        {
            let _ = command(&mut s, "QUIT", t).await;
            return Ok(Err(o));
        }
        Ok(Ok(Session {
            s,
            server,
            ehlo,
            command_timeout: t,
            data_timeout: config.data_timeout,
            opened: Instant::now(),
            transactions: 0,
            needs_rset: false,
            broken: false,
        }))
    }

    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Whether the session can carry no more commands (a lost connection,
    /// a 421).
    pub fn broken(&self) -> bool {
        self.broken
    }

    /// Messages sent over this session so far.
    pub fn transactions(&self) -> u32 {
        self.transactions
    }

    /// Whether another message may go over this session: not broken, and
    /// within the reuse limits.
    pub fn reusable(&self) -> bool {
        !self.broken
            && self.transactions < MESSAGES_PER_SESSION_MAX
            && self.opened.elapsed() < SESSION_REUSE_TIME_MAX
    }

    /// Sends one message to `rcpts`, in transactions of at most
    /// `RCPTS_PER_TRANSACTION_MAX` recipients. Every recipient gets an
    /// outcome. A session that breaks defers the recipients whose
    /// transaction had not been answered after DATA: if it broke after the
    /// message was sent but before the server's reply, the message may
    /// have arrived and will be sent again (at least once, as SMTP is).
    pub async fn send(
        &mut self,
        mail_from: &str,
        rcpts: &[String],
        prepend: &[u8],
        body: &[u8],
    ) -> Vec<(String, RcptOutcome)> {
        let mut results = Vec::with_capacity(rcpts.len());
        let mut rest: Vec<String> = rcpts.to_vec();
        while !rest.is_empty() {
            if self.broken {
                let why = format!("{}: connection lost", self.server);
                results.extend(all(&rest, RcptOutcome::Deferred(why)));
                break;
            }
            let take = rest.len().min(RCPTS_PER_TRANSACTION_MAX);
            let batch: Vec<String> = rest.drain(..take).collect();
            match self.transaction(mail_from, &batch, prepend, body).await {
                Ok((done, retry)) => {
                    results.extend(done);
                    // Refused with 452 (too many recipients) after others
                    // were taken: a new transaction for them now (RFC 5321
                    // 4.5.3.1.10).
                    if !retry.is_empty() {
                        rest.splice(0..0, retry);
                    }
                }
                Err(why) => {
                    self.broken = true;
                    let why = format!("{}: {why}", self.server);
                    results.extend(all(&batch, RcptOutcome::Deferred(why)));
                }
            }
        }
        results
    }

    /// A reply that ends the session: 421 (RFC 5321 3.8) closes it.
    fn note(&mut self, r: &Reply) {
        if r.code == 421 {
            self.broken = true;
        }
    }

    async fn command(&mut self, line: &str) -> Result<Reply, String> {
        let r = command(&mut self.s, line, self.command_timeout).await?;
        self.note(&r);
        Ok(r)
    }

    /// One MAIL transaction. Returns the outcomes, and the recipients to
    /// try again at once in another transaction (452 after some were
    /// accepted). `Err`: the session broke; the batch is undecided.
    async fn transaction(
        &mut self,
        mail_from: &str,
        rcpts: &[String],
        prepend: &[u8],
        body: &[u8],
    ) -> Result<(Vec<(String, RcptOutcome)>, Vec<String>), String> {
        let server = self.server;
        if self.needs_rset && !offers(&self.ehlo, "PIPELINING") {
            let r = self.command("RSET").await?;
            if r.code != 250 {
                return Err(format!("RSET answered {}", r.line()));
            }
            self.needs_rset = false;
        }
        let size = prepend.len() + body.len();
        let mut mail = format!("MAIL FROM:<{mail_from}>");
        if offers(&self.ehlo, "SIZE") {
            mail.push_str(&format!(" SIZE={size}"));
        }
        // 8-bit content goes as 8BITMIME when offered, and as it is otherwise,
        // as Postfix does (downgrading MIME would change signed content).
        if offers(&self.ehlo, "8BITMIME") && body.iter().any(|&b| b >= 0x80) {
            mail.push_str(" BODY=8BITMIME");
        }
        // RFC 6531 3.4: non-ASCII addresses need SMTPUTF8; a server without
        // it cannot take them at all (5.6.7), so that is a permanent failure.
        let utf8_addresses = !mail_from.is_ascii() || rcpts.iter().any(|r| !r.is_ascii());
        let utf8_headers = !header_block(prepend, body).all_ascii();
        if utf8_addresses || utf8_headers {
            if offers(&self.ehlo, "SMTPUTF8") {
                mail.push_str(" SMTPUTF8");
            } else if utf8_addresses {
                return Ok((
                    all(
                        rcpts,
                        RcptOutcome::Failed(format!(
                            "{server} does not support SMTPUTF8: 553 5.6.7 non-ASCII address cannot be delivered there"
                        )),
                    ),
                    vec![],
                ));
            }
        }
        if offers(&self.ehlo, "PIPELINING") {
            let rset = std::mem::replace(&mut self.needs_rset, true);
            return self.pipelined(rset, mail, rcpts, prepend, body).await;
        }
        self.needs_rset = true;
        let r = self.command(&mail).await?;
        if r.code != 250 {
            return Ok((
                all(
                    rcpts,
                    by_code(r.code, format!("{server} refused MAIL FROM: {}", r.line())),
                ),
                vec![],
            ));
        }
        let mut results = Vec::new();
        let mut accepted = Vec::new();
        let mut retry = Vec::new();
        for (i, rcpt) in rcpts.iter().enumerate() {
            let r = self.command(&format!("RCPT TO:<{rcpt}>")).await?;
            if r.code == 250 || r.code == 251 {
                accepted.push(rcpt.clone());
            } else if r.code == 452 && !accepted.is_empty() {
                retry.extend(rcpts[i..].iter().cloned());
                break;
            } else {
                results.push((
                    rcpt.clone(),
                    by_code(r.code, format!("{server} said {}", r.line())),
                ));
                if self.broken {
                    results.extend(all(
                        &rcpts[i + 1..],
                        RcptOutcome::Deferred(format!("{server} said {}", r.line())),
                    ));
                    break;
                }
            }
        }
        if accepted.is_empty() || self.broken {
            results.extend(all(
                &accepted,
                RcptOutcome::Deferred(format!("{server}: connection closed by the server")),
            ));
            return Ok((results, vec![]));
        }
        let r = self.command("DATA").await?;
        if r.code != 354 {
            results.extend(all(
                &accepted,
                by_code(r.code, format!("{server} refused DATA: {}", r.line())),
            ));
            return Ok((results, retry));
        }
        let outcome = self.data_and_reply(prepend, body).await?;
        results.extend(all(&accepted, outcome));
        Ok((results, retry))
    }

    /// The message after a 354, then the final reply, which ends the
    /// transaction whatever it says (RFC 5321 4.1.1.4): the next MAIL needs
    /// no RSET.
    async fn data_and_reply(&mut self, prepend: &[u8], body: &[u8]) -> Result<RcptOutcome, String> {
        let server = self.server;
        self.write_message(prepend, body).await?;
        let r = read_reply(&mut self.s, self.data_timeout).await?;
        self.note(&r);
        self.needs_rset = false;
        self.transactions += 1;
        Ok(if r.code == 250 {
            RcptOutcome::Delivered
        } else {
            by_code(r.code, format!("{server} said after DATA: {}", r.line()))
        })
    }

    /// One transaction with PIPELINING (RFC 2920): RSET if due, MAIL, every
    /// RCPT and DATA go in one write, and the replies are read in order
    /// (3.1: DATA is the last command of a group). Outcomes as in
    /// `transaction`.
    async fn pipelined(
        &mut self,
        rset: bool,
        mail: String,
        rcpts: &[String],
        prepend: &[u8],
        body: &[u8],
    ) -> Result<(Vec<(String, RcptOutcome)>, Vec<String>), String> {
        let server = self.server;
        let t = self.command_timeout;
        let mut group = String::new();
        if rset {
            group.push_str("RSET\r\n");
        }
        group.push_str(&mail);
        group.push_str("\r\n");
        for r in rcpts {
            group.push_str(&format!("RCPT TO:<{r}>\r\n"));
        }
        group.push_str("DATA\r\n");
        timeout(t, self.s.get_mut().write_all(group.as_bytes()))
            .await
            .map_err(|_| "timeout writing to the server".to_string())?
            .map_err(|e| format!("write error: {e}"))?;
        if rset {
            let r = read_reply(&mut self.s, t).await?;
            if r.code != 250 {
                return Err(format!("RSET answered {}", r.line()));
            }
        }
        let mail_reply = read_reply(&mut self.s, t).await?;
        self.note(&mail_reply);
        let mut results = Vec::new();
        let mut accepted = Vec::new();
        let mut too_many = Vec::new();
        for rcpt in rcpts {
            let r = read_reply(&mut self.s, t).await?;
            self.note(&r);
            if mail_reply.code != 250 {
                continue;
            }
            if r.code == 250 || r.code == 251 {
                accepted.push(rcpt.clone());
            } else if r.code == 452 {
                too_many.push((
                    rcpt.clone(),
                    RcptOutcome::Deferred(format!("{server} said {}", r.line())),
                ));
            } else {
                results.push((
                    rcpt.clone(),
                    by_code(r.code, format!("{server} said {}", r.line())),
                ));
            }
        }
        let data = read_reply(&mut self.s, t).await?;
        self.note(&data);
        if mail_reply.code != 250 {
            if data.code == 354 {
                self.end_empty_data().await?;
            }
            let why = format!("{server} refused MAIL FROM: {}", mail_reply.line());
            return Ok((all(rcpts, by_code(mail_reply.code, why)), vec![]));
        }
        // Refused with 452 after others were taken: a new transaction for
        // them at once (RFC 5321 4.5.3.1.10); with none taken, deferred.
        let retry = if accepted.is_empty() {
            results.append(&mut too_many);
            vec![]
        } else {
            too_many.into_iter().map(|(r, _)| r).collect()
        };
        if data.code != 354 {
            results.extend(all(
                &accepted,
                by_code(data.code, format!("{server} refused DATA: {}", data.line())),
            ));
            return Ok((results, retry));
        }
        if accepted.is_empty() {
            // 354 with no recipient: RFC 2920 3.1 wants the lone dot.
            self.end_empty_data().await?;
            return Ok((results, retry));
        }
        let outcome = self.data_and_reply(prepend, body).await?;
        results.extend(all(&accepted, outcome));
        Ok((results, retry))
    }

    /// Ends a DATA the server opened when no recipient was taken: an empty
    /// message, whose reply does not matter (RFC 2920 3.1).
    async fn end_empty_data(&mut self) -> Result<(), String> {
        timeout(self.command_timeout, self.s.get_mut().write_all(b".\r\n"))
            .await
            .map_err(|_| "timeout writing to the server".to_string())?
            .map_err(|e| format!("write error: {e}"))?;
        let r = read_reply(&mut self.s, self.command_timeout).await?;
        self.note(&r);
        self.needs_rset = true;
        Ok(())
    }

    /// Writes the message into the DATA stream, dot-stuffed and ended by
    /// the lone dot: the one place message bytes go to the wire. `prepend`
    /// holds the header lines added in transit (trace, signatures) ahead of
    /// the stored message.
    async fn write_message(&mut self, prepend: &[u8], body: &[u8]) -> Result<(), String> {
        let data = dot_stuff(prepend, body);
        timeout(self.data_timeout, self.s.get_mut().write_all(&data))
            .await
            .map_err(|_| "timeout sending the message".to_string())?
            .map_err(|e| format!("write error: {e}"))
    }

    /// Ends the session politely (RFC 5321 4.1.1.10), not waiting long.
    pub async fn quit(mut self) {
        if !self.broken {
            let _ = command(&mut self.s, "QUIT", QUIT_TIMEOUT.min(self.command_timeout)).await;
        }
        let _ = timeout(QUIT_TIMEOUT, self.s.get_mut().shutdown()).await;
    }
}

/// AUTH with PLAIN (RFC 4616, the initial response on the command line,
/// RFC 4954 4) or else LOGIN, whichever the server offers. Only called
/// inside TLS. `Ok(Err)`: the server refused; a refusal defers (Postfix's
/// smtp_sasl_auth_soft_bounce), so a password fixed later still delivers.
async fn authenticate(
    s: &mut BufReader<Box<dyn Io>>,
    server: SocketAddr,
    ehlo: &Reply,
    creds: &Credentials,
    t: Duration,
) -> Result<Result<(), RcptOutcome>, String> {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mechs: Vec<String> = ehlo_line(ehlo, "AUTH")
        .unwrap_or_default()
        .iter()
        .map(|m| m.to_ascii_uppercase())
        .collect();
    let r = if mechs.iter().any(|m| m == "PLAIN") {
        let mut token = vec![0u8];
        token.extend_from_slice(creds.username.as_bytes());
        token.push(0);
        token.extend_from_slice(creds.password.as_bytes());
        command(s, &format!("AUTH PLAIN {}", b64(&token)), t).await?
    } else if mechs.iter().any(|m| m == "LOGIN") {
        let r = command(s, "AUTH LOGIN", t).await?;
        if r.code != 334 {
            r
        } else {
            let r = command(s, &b64(creds.username.as_bytes()), t).await?;
            if r.code != 334 {
                r
            } else {
                command(s, &b64(creds.password.as_bytes()), t).await?
            }
        }
    } else {
        return Ok(Err(RcptOutcome::Deferred(format!(
            "{server} offers no AUTH PLAIN or LOGIN for the smarthost credentials"
        ))));
    };
    if r.code == 235 {
        Ok(Ok(()))
    } else {
        Ok(Err(RcptOutcome::Deferred(format!(
            "{server} refused AUTH: {}",
            r.line()
        ))))
    }
}

/// A handshake error as the queue shows it: a certificate our own
/// verifier refused (DANE, [`crate::dane`]) by its reason, the rest as
/// rustls words it.
pub fn tls_failure(e: &std::io::Error) -> String {
    if let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o))) =
        e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
    {
        return format!("invalid peer certificate: {}", o.0);
    }
    e.to_string()
}

/// A rustls client configuration that verifies certificates (WebPKI, RFC
/// 6125 names): Mozilla's roots (`webpki-roots`) and the PEM certificates
/// of `trust_file` (`[relay] tls_trust_file`: a private CA) as anchors.
/// What MTA-STS's enforce mode requires of MX hosts and policy hosts.
pub fn verified_tls(
    trust_file: Option<&std::path::Path>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client configuration: {e}"))?
        .with_webpki_verifier(webpki_verifier(trust_file)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The certificate check of [`verified_tls`] alone: what a DANE host of a
/// domain with an enforced MTA-STS policy must pass besides its TLSA
/// records.
pub fn webpki_verifier(
    trust_file: Option<&std::path::Path>,
) -> Result<Arc<rustls::client::WebPkiServerVerifier>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = trust_file {
        let certs =
            CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut added = 0;
        for cert in certs {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("{}: no certificate in it", path.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("TLS client configuration: {e}"))
}

/// The handshake-signature half of a certificate verifier: rustls's own
/// checks with the provider's algorithms. Our verifiers differ only in
/// which certificate they accept (any, for opportunistic TLS; what TLSA
/// records name, for DANE); the peer must still prove it holds its key.
#[derive(Debug)]
pub(crate) struct HandshakeSignatures(pub(crate) Arc<rustls::crypto::CryptoProvider>);

impl HandshakeSignatures {
    pub(crate) fn tls12(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    pub(crate) fn tls13(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    pub(crate) fn schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A rustls client configuration for opportunistic TLS: any certificate is
/// accepted (the alternative, on port 25, is no encryption at all).
pub fn opportunistic_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct AnyCert(HandshakeSignatures);
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
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.tls12(m, c, d)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.tls13(m, c, d)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(HandshakeSignatures(provider))))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use tokio::net::TcpListener;

    /// A scripted SMTP server on 127.0.0.1 for the client's tests: replies
    /// per recipient address, a reply after DATA per message, and a log of
    /// every command line with its connection number.
    #[derive(Default)]
    struct Script {
        extensions: Vec<&'static str>,
        rcpt: HashMap<String, &'static str>,
        /// Accept this many recipients per transaction, then 452.
        rcpt_limit: Option<usize>,
        /// Close the connection, unanswered, after this many messages' data.
        vanish_after_data: Option<usize>,
        /// Do not offer PIPELINING (commands go one by one).
        no_pipelining: bool,
        log: Mutex<Vec<(usize, String)>>,
    }

    impl Script {
        fn lines(&self) -> Vec<(usize, String)> {
            self.log.lock().unwrap().clone()
        }
        fn verbs(&self) -> Vec<String> {
            self.lines()
                .into_iter()
                .map(|(_, l)| l.split([' ', ':']).next().unwrap_or("").to_string())
                .collect()
        }
    }

    async fn serve(script: Script) -> (SocketAddr, Arc<Script>) {
        let script = Arc::new(script);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sc = script.clone();
        tokio::spawn(async move {
            let mut conn = 0;
            let mut messages = 0;
            while let Ok((tcp, _)) = listener.accept().await {
                conn += 1;
                let mut s = BufReader::new(tcp);
                let sc = sc.clone();
                let _ = s.get_mut().write_all(b"220 test ESMTP\r\n").await;
                let mut in_txn = 0;
                loop {
                    let mut line = String::new();
                    if s.read_line(&mut line).await.unwrap_or(0) == 0 {
                        break;
                    }
                    let line = line.trim_end().to_string();
                    sc.log.lock().unwrap().push((conn, line.clone()));
                    let upper = line.to_ascii_uppercase();
                    let reply = if upper.starts_with("EHLO") {
                        let mut r = String::from("250-test");
                        for e in &sc.extensions {
                            r.push_str(&format!("\r\n250-{e}"));
                        }
                        if sc.no_pipelining {
                            r + "\r\n250 8BITMIME"
                        } else {
                            r + "\r\n250 PIPELINING"
                        }
                    } else if upper.starts_with("MAIL") {
                        in_txn = 0;
                        "250 ok".into()
                    } else if upper.starts_with("RCPT") {
                        let addr = line[9..line.len() - 1].to_string();
                        if sc.rcpt_limit.is_some_and(|n| in_txn >= n) {
                            "452 4.5.3 too many recipients".into()
                        } else {
                            let r = sc.rcpt.get(&addr).copied().unwrap_or("250 ok");
                            if r.starts_with('2') {
                                in_txn += 1;
                            }
                            r.into()
                        }
                    } else if upper == "DATA" && in_txn == 0 {
                        "554 5.5.1 no valid recipients".into()
                    } else if upper == "DATA" {
                        s.get_mut().write_all(b"354 go\r\n").await.unwrap();
                        loop {
                            let mut l = String::new();
                            if s.read_line(&mut l).await.unwrap_or(0) == 0 || l == ".\r\n" {
                                break;
                            }
                        }
                        messages += 1;
                        if sc.vanish_after_data.is_some_and(|n| messages > n) {
                            break;
                        }
                        "250 queued".into()
                    } else if upper == "QUIT" {
                        let _ = s.get_mut().write_all(b"221 bye\r\n").await;
                        break;
                    } else if upper.starts_with("AUTH") {
                        "235 ok".into()
                    } else {
                        "250 ok".into()
                    };
                    if s.get_mut()
                        .write_all(format!("{reply}\r\n").as_bytes())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });
        (addr, script)
    }

    fn config() -> ClientConfig {
        ClientConfig {
            ehlo: "client.test".into(),
            source: None,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
            data_timeout: Duration::from_secs(5),
            tls: None,
            require_tls: false,
        }
    }

    fn rcpts(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("r{i}@dest.test")).collect()
    }

    const MSG: &[u8] = b"Subject: t\r\n\r\nhi\r\n";

    #[tokio::test]
    async fn several_messages_go_over_one_session_without_rset() {
        let (addr, sc) = serve(Script::default()).await;
        let mut s = Session::open(addr, "dest.test", &config(), None)
            .await
            .unwrap();
        for _ in 0..3 {
            let r = s.send("a@src.test", &rcpts(2), b"", MSG).await;
            assert!(r.iter().all(|(_, o)| *o == RcptOutcome::Delivered), "{r:?}");
        }
        assert!(s.reusable());
        assert_eq!(s.transactions(), 3);
        s.quit().await;
        let lines = sc.lines();
        assert!(
            lines.iter().all(|(c, _)| *c == 1),
            "one connection: {lines:?}"
        );
        let verbs = sc.verbs();
        assert_eq!(verbs.iter().filter(|v| *v == "MAIL").count(), 3);
        assert!(!verbs.contains(&"RSET".to_string()), "{verbs:?}");
    }

    #[tokio::test]
    async fn recipients_go_in_transactions_of_at_most_the_limit() {
        let (addr, sc) = serve(Script::default()).await;
        let mut s = Session::open(addr, "dest.test", &config(), None)
            .await
            .unwrap();
        let to = rcpts(RCPTS_PER_TRANSACTION_MAX + 50);
        let r = s.send("a@src.test", &to, b"", MSG).await;
        assert_eq!(r.len(), to.len());
        assert!(r.iter().all(|(_, o)| *o == RcptOutcome::Delivered));
        let verbs = sc.verbs();
        assert_eq!(verbs.iter().filter(|v| *v == "MAIL").count(), 2);
        assert_eq!(verbs.iter().filter(|v| *v == "DATA").count(), 2);
        assert_eq!(verbs.iter().filter(|v| *v == "RCPT").count(), to.len());
    }

    #[tokio::test]
    async fn each_recipient_keeps_its_own_outcome_and_a_refused_transaction_is_reset() {
        outcomes_and_reset(false).await;
        outcomes_and_reset(true).await;
    }

    #[tokio::test]
    async fn a_452_without_pipelining_too() {
        let script = Script {
            rcpt_limit: Some(3),
            no_pipelining: true,
            ..Script::default()
        };
        let (addr, sc) = serve(script).await;
        let mut s = Session::open(addr, "dest.test", &config(), None)
            .await
            .unwrap();
        let r = s.send("a@src.test", &rcpts(7), b"", MSG).await;
        assert!(r.iter().all(|(_, o)| *o == RcptOutcome::Delivered), "{r:?}");
        // One by one, the client stops at the first 452.
        assert_eq!(sc.verbs().iter().filter(|v| *v == "RCPT").count(), 7 + 2);
        assert_eq!(sc.verbs().iter().filter(|v| *v == "DATA").count(), 3);
    }

    async fn outcomes_and_reset(no_pipelining: bool) {
        let mut script = Script {
            no_pipelining,
            ..Script::default()
        };
        script.rcpt.insert("r1@dest.test".into(), "450 4.2.1 busy");
        script
            .rcpt
            .insert("r2@dest.test".into(), "550 5.1.1 unknown");
        script
            .rcpt
            .insert("only@dest.test".into(), "550 5.1.1 unknown");
        let (addr, sc) = serve(script).await;
        let mut s = Session::open(addr, "dest.test", &config(), None)
            .await
            .unwrap();
        let r = s.send("a@src.test", &rcpts(4), b"", MSG).await;
        let by: HashMap<_, _> = r.into_iter().collect();
        assert_eq!(by["r0@dest.test"], RcptOutcome::Delivered);
        assert!(matches!(&by["r1@dest.test"], RcptOutcome::Deferred(w) if w.contains("450 4.2.1")));
        assert!(matches!(&by["r2@dest.test"], RcptOutcome::Failed(w) if w.contains("550 5.1.1")));
        assert_eq!(by["r3@dest.test"], RcptOutcome::Delivered);
        // Every recipient refused: no DATA, and the next message begins
        // with RSET (RFC 5321 4.1.1.5).
        let r = s
            .send("a@src.test", &["only@dest.test".into()], b"", MSG)
            .await;
        assert!(matches!(&r[0].1, RcptOutcome::Failed(_)));
        let r = s.send("a@src.test", &rcpts(1), b"", MSG).await;
        assert_eq!(r[0].1, RcptOutcome::Delivered);
        // Pipelined, the refused transaction's DATA went in its group.
        let expected: &[&str] = if no_pipelining {
            &["MAIL", "RCPT", "RSET", "MAIL", "RCPT", "DATA"]
        } else {
            &["MAIL", "RCPT", "DATA", "RSET", "MAIL", "RCPT", "DATA"]
        };
        let verbs = sc.verbs();
        assert_eq!(verbs[verbs.len() - expected.len()..], *expected);
        assert!(s.reusable());
    }

    #[tokio::test]
    async fn a_452_sends_the_rest_in_a_new_transaction_at_once() {
        let script = Script {
            rcpt_limit: Some(3),
            ..Script::default()
        };
        let (addr, sc) = serve(script).await;
        let mut s = Session::open(addr, "dest.test", &config(), None)
            .await
            .unwrap();
        let r = s.send("a@src.test", &rcpts(7), b"", MSG).await;
        assert_eq!(r.len(), 7);
        assert!(r.iter().all(|(_, o)| *o == RcptOutcome::Delivered), "{r:?}");
        let verbs = sc.verbs();
        assert_eq!(verbs.iter().filter(|v| *v == "DATA").count(), 3);
    }

    #[tokio::test]
    async fn a_session_lost_after_data_defers_only_the_unanswered_message() {
        let script = Script {
            vanish_after_data: Some(1),
            ..Script::default()
        };
        let (addr, _sc) = serve(script).await;
        let mut s = Session::open(addr, "dest.test", &config(), None)
            .await
            .unwrap();
        let first = s.send("a@src.test", &rcpts(2), b"", MSG).await;
        assert!(first.iter().all(|(_, o)| *o == RcptOutcome::Delivered));
        // The data went out, no reply came: undecided, so deferred (it may
        // arrive twice: at least once, as SMTP is).
        let second = s.send("a@src.test", &rcpts(2), b"", MSG).await;
        assert!(
            second
                .iter()
                .all(|(_, o)| matches!(o, RcptOutcome::Deferred(w) if w.contains("closed"))),
            "{second:?}"
        );
        assert!(!s.reusable());
        let third = s.send("a@src.test", &rcpts(1), b"", MSG).await;
        assert!(matches!(&third[0].1, RcptOutcome::Deferred(_)));
    }

    #[tokio::test]
    async fn credentials_are_never_sent_without_tls() {
        let script = Script {
            extensions: vec!["AUTH PLAIN LOGIN"],
            ..Script::default()
        };
        let (addr, sc) = serve(script).await;
        let creds = Credentials {
            username: "u".into(),
            password: "secret".into(),
        };
        let Err(RcptOutcome::Deferred(why)) =
            Session::open(addr, "dest.test", &config(), Some(&creds)).await
        else {
            panic!("a session without TLS opened with credentials");
        };
        assert!(why.contains("never sent in plaintext"), "{why}");
        assert!(!sc.verbs().iter().any(|v| v == "AUTH"), "{:?}", sc.lines());
        assert_eq!(sc.verbs(), ["EHLO", "QUIT"]);
        assert!(!format!("{creds:?}").contains("secret"));
    }

    #[test]
    fn dot_stuffing() {
        assert_eq!(
            dot_stuff(b"X-T: 1\r\n", b".a\r\nb\r\n.\r\n"),
            b"X-T: 1\r\n..a\r\nb\r\n..\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"", b"no newline"), b"no newline\r\n.\r\n");
    }
}
