//! A small LDAP load client for `firmware/bench/ldap-search.sh`: runs the
//! same search against any LDAP server (mxrack or slapd) from several
//! concurrent workers for a fixed time, and prints searches per second.
//!
//! ```text
//! ldap-load ADDR BIND_DN PASSWORD BASE FILTER MODE WORKERS SECONDS SIZE_LIMIT
//! ```
//!
//! MODE `connect` opens a new connection, binds and searches each time
//! (Thunderbird's way: one connection per autocomplete); `reuse` binds once
//! per worker and searches on the same connection. Plain LDAP only: point it
//! at loopback. Every loop is bounded by SECONDS.
//!
//! Replies are framed and classified by their BER header only (entry, or
//! the result code of a bind or search result), not decoded: the client then
//! costs little next to the server it measures, on the same two cores.

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use ldap3_proto::LdapCodec;
use ldap3_proto::proto::{
    LdapBindCred, LdapBindRequest, LdapDerefAliases, LdapFilter, LdapMsg, LdapOp,
    LdapSearchRequest, LdapSearchScope,
};
use mxrack_ldap::codec::{CodecError, frame_size};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder, Framed};

/// BER tags of the replies this client looks at (RFC 4511 appendix B).
const BIND_RESPONSE: u8 = 0x61;
const SEARCH_ENTRY: u8 = 0x64;
const SEARCH_DONE: u8 = 0x65;
const SUCCESS: u8 = 0;
const SIZE_LIMIT_EXCEEDED: u8 = 4;

/// A reply reduced to its operation tag and, for results, the result code.
#[derive(Debug)]
struct Reply {
    op: u8,
    code: Option<u8>,
}

/// Requests encoded by ldap3_proto; replies only framed.
struct LightCodec {
    encoder: LdapCodec,
}

/// A definite BER length at `buf[at..]`: (length, bytes it took).
fn length_at(buf: &[u8], at: usize) -> Option<(usize, usize)> {
    let first = *buf.get(at)?;
    if first < 0x80 {
        return Some((usize::from(first), 1));
    }
    let n = usize::from(first & 0x7f);
    let bytes = buf.get(at + 1..at + 1 + n)?;
    Some((
        bytes.iter().fold(0, |l, &b| (l << 8) | usize::from(b)),
        1 + n,
    ))
}

/// The operation tag and result code of one whole message.
fn classify(frame: &[u8]) -> Option<Reply> {
    let (_, n) = length_at(frame, 1)?;
    let id_at = 1 + n;
    let (id_len, n) = length_at(frame, id_at + 1)?;
    let op_at = id_at + 1 + n + id_len;
    let op = *frame.get(op_at)?;
    let (_, n) = length_at(frame, op_at + 1)?;
    let body = op_at + 1 + n;
    // An LDAPResult starts with resultCode ENUMERATED (0x0a 0x01 code).
    let code = if frame.get(body) == Some(&0x0a) {
        frame.get(body + 2).copied()
    } else {
        None
    };
    Some(Reply { op, code })
}

impl Decoder for LightCodec {
    type Item = Reply;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, CodecError> {
        let Some(size) = frame_size(buf, 64 << 20)? else {
            return Ok(None);
        };
        if buf.len() < size {
            return Ok(None);
        }
        let frame = buf.split_to(size);
        classify(&frame)
            .map(Some)
            .ok_or(CodecError::NotLdap("unexpected reply"))
    }
}

impl Encoder<LdapMsg> for LightCodec {
    type Error = CodecError;

    fn encode(&mut self, msg: LdapMsg, buf: &mut BytesMut) -> Result<(), CodecError> {
        self.encoder.encode(msg, buf).map_err(CodecError::Io)
    }
}

/// Attributes an address-book client asks for on autocomplete.
const ATTRS: [&str; 6] = ["cn", "mail", "givenName", "sn", "telephoneNumber", "o"];

struct Job {
    addr: String,
    bind_dn: String,
    password: String,
    base: String,
    filter: LdapFilter,
    size_limit: i32,
}

#[derive(Default)]
struct Tally {
    searches: u64,
    entries: u64,
    errors: u64,
}

type Conn = Framed<TcpStream, LightCodec>;

async fn request(conn: &mut Conn, msgid: i32, op: LdapOp) -> Result<Vec<Reply>, String> {
    conn.send(LdapMsg {
        msgid,
        op,
        ctrl: vec![],
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    loop {
        let m = conn
            .next()
            .await
            .ok_or("connection closed")?
            .map_err(|e| e.to_string())?;
        let last = m.op != SEARCH_ENTRY;
        out.push(m);
        if last {
            return Ok(out);
        }
    }
}

async fn connect_and_bind(job: &Job) -> Result<Conn, String> {
    let tcp = TcpStream::connect(&job.addr)
        .await
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let mut conn = Framed::new(
        tcp,
        LightCodec {
            encoder: LdapCodec::default(),
        },
    );
    let reply = request(
        &mut conn,
        1,
        LdapOp::BindRequest(LdapBindRequest {
            version: 3,
            dn: job.bind_dn.clone(),
            cred: LdapBindCred::Simple(job.password.clone()),
        }),
    )
    .await?;
    match reply.first() {
        Some(Reply {
            op: BIND_RESPONSE,
            code: Some(SUCCESS),
        }) => Ok(conn),
        other => Err(format!("bind failed: {other:?}")),
    }
}

async fn search(conn: &mut Conn, job: &Job, msgid: i32) -> Result<u64, String> {
    let replies = request(
        conn,
        msgid,
        LdapOp::SearchRequest(LdapSearchRequest {
            base: job.base.clone(),
            scope: LdapSearchScope::Subtree,
            aliases: LdapDerefAliases::Never,
            sizelimit: job.size_limit,
            timelimit: 0,
            typesonly: false,
            filter: job.filter.clone(),
            attrs: ATTRS.iter().map(|s| s.to_string()).collect(),
        }),
    )
    .await?;
    match replies.last() {
        Some(Reply {
            op: SEARCH_DONE,
            code: Some(SUCCESS | SIZE_LIMIT_EXCEEDED),
        }) => Ok(replies.len() as u64 - 1),
        other => Err(format!("search failed: {other:?}")),
    }
}

async fn worker(job: Arc<Job>, reuse: bool, until: Instant) -> Tally {
    let mut t = Tally::default();
    let mut kept: Option<Conn> = None;
    let mut msgid = 2;
    while Instant::now() < until {
        let conn = match kept.take() {
            Some(c) => Ok(c),
            None => connect_and_bind(&job).await,
        };
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                t.errors += 1;
                if t.errors == 1 {
                    eprintln!("ldap-load: {e}");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        msgid += 1;
        match search(&mut conn, &job, msgid).await {
            Ok(n) => {
                t.searches += 1;
                t.entries += n;
            }
            Err(e) => {
                t.errors += 1;
                if t.errors == 1 {
                    eprintln!("ldap-load: {e}");
                }
                continue;
            }
        }
        if reuse {
            kept = Some(conn);
        } else {
            let _ = conn
                .send(LdapMsg {
                    msgid: msgid + 1,
                    op: LdapOp::UnbindRequest,
                    ctrl: vec![],
                })
                .await;
        }
    }
    t
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, bind_dn, password, base, filter, mode, workers, seconds, size_limit] =
        <[String; 9]>::try_from(args).map_err(|_| {
            "usage: ldap-load ADDR BIND_DN PASSWORD BASE FILTER connect|reuse WORKERS SECONDS SIZE_LIMIT"
                .to_string()
        })?;
    let filter =
        ldap3_proto::parse_ldap_filter_str(&filter).map_err(|e| format!("filter: {e:?}"))?;
    let workers: usize = workers.parse().map_err(|_| "WORKERS: a number")?;
    let seconds: u64 = seconds.parse().map_err(|_| "SECONDS: a number")?;
    let size_limit: i32 = size_limit.parse().map_err(|_| "SIZE_LIMIT: a number")?;
    let reuse = match mode.as_str() {
        "connect" => false,
        "reuse" => true,
        _ => return Err("MODE: connect or reuse".into()),
    };
    let job = Arc::new(Job {
        addr,
        bind_dn,
        password,
        base,
        filter,
        size_limit,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tallies = runtime.block_on(async {
        let handles: Vec<_> = (0..workers)
            .map(|_| tokio::spawn(worker(job.clone(), reuse, until)))
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap_or_default());
        }
        out
    });
    let elapsed = started.elapsed().as_secs_f64();
    let searches: u64 = tallies.iter().map(|t| t.searches).sum();
    let entries: u64 = tallies.iter().map(|t| t.entries).sum();
    let errors: u64 = tallies.iter().map(|t| t.errors).sum();
    println!(
        "searches={searches} seconds={elapsed:.2} per_second={:.1} entries_per_search={:.1} errors={errors}",
        searches as f64 / elapsed,
        if searches > 0 {
            entries as f64 / searches as f64
        } else {
            0.0
        }
    );
    if errors > 0 && searches == 0 {
        return Err("no search succeeded".into());
    }
    Ok(())
}
