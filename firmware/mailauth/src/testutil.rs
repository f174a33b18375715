//! Test helpers: fixed TXT records in the checker's cache, a resolver that
//! reaches nothing (a loopback port nobody answers on).

use mail_auth::Txt;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::dmarc::Dmarc;
use mail_auth::spf::Spf;
use std::time::Duration;

use crate::inbound::TxtCache;

/// A resolver whose one server is a UDP socket on 127.0.0.1 that never
/// answers (the socket is kept open by the caller through the guard).
pub fn silent_resolver() -> (
    mail_auth::hickory_resolver::TokioResolver,
    std::net::UdpSocket,
) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let cfg = mxrack_config::Dns {
        servers: vec![sock.local_addr().unwrap()],
        timeout_ms: 200,
        attempts: 1,
        ..Default::default()
    };
    (crate::dns::resolver(&cfg).unwrap(), sock)
}

pub fn put_dkim(cache: &TxtCache, name: &str, record: &str) {
    let key = DomainKey::parse(record.as_bytes()).unwrap();
    cache.put(
        &format!("{name}."),
        Txt::from(key),
        Duration::from_secs(600),
    );
}

pub fn put_spf(cache: &TxtCache, domain: &str, record: &str) {
    let spf = Spf::parse(record.as_bytes()).unwrap();
    cache.put(
        &format!("{domain}."),
        Txt::from(spf),
        Duration::from_secs(600),
    );
}

pub fn put_dmarc(cache: &TxtCache, domain: &str, record: &str) {
    let d = Dmarc::parse(record.as_bytes()).unwrap();
    cache.put(
        &format!("_dmarc.{domain}."),
        Txt::Dmarc(d.into()),
        Duration::from_secs(600),
    );
}
