//! Sender Rewriting Scheme, in the SRS0/SRS1 form of libsrs2 and postsrsd,
//! so a forwarded message passes SPF at its destination and a bounce finds
//! its way back. Pure.
//!
//! SRS0=HHHH=TT=orig-domain=orig-local@srs-domain
//! SRS1=HHHH=srs0-host==HHHH=TT=orig-domain=orig-local@srs-domain
//!
//! HHHH: the first 4 characters of base64(HMAC-SHA1(secret, lower-cased
//! parts)); TT: the day number modulo 1024 in two base32 characters.

use base64::Engine;
use ring::hmac;

const HASH_CHARS: usize = 4;
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// How long a bounce address stays valid (libsrs2's default).
pub const MAX_AGE_DAYS: i64 = 21;
/// Longest address handled (RFC 5321 4.5.3.1.3 path limit).
const ADDRESS_BYTES_MAX: usize = 256;

#[derive(Debug, Clone)]
pub struct Srs {
    key: hmac::Key,
    domain: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SrsError {
    NotSrs,
    BadHash,
    Expired,
    Malformed,
}

fn day_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64 / 86_400)
        .unwrap_or(0)
}

fn stamp(day: i64) -> String {
    let d = (day & 1023) as usize;
    [BASE32[(d >> 5) & 31] as char, BASE32[d & 31] as char]
        .iter()
        .collect()
}

fn stamp_day(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() != 2 {
        return None;
    }
    let v = |c: u8| BASE32.iter().position(|&x| x == c.to_ascii_uppercase());
    Some(((v(b[0])? << 5) | v(b[1])?) as i64)
}

fn split_address(addr: &str) -> Option<(&str, &str)> {
    addr.rsplit_once('@')
        .filter(|(l, d)| !l.is_empty() && !d.is_empty())
}

impl Srs {
    /// `secret`: the shared key (postsrsd's secret); `domain`: the domain the
    /// rewritten addresses use (one the appliance receives mail for).
    pub fn new(secret: &str, domain: &str) -> Srs {
        Srs {
            key: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes()),
            domain: domain.to_ascii_lowercase(),
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    fn hash(&self, parts: &[&str]) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        for p in parts {
            ctx.update(p.to_ascii_lowercase().as_bytes());
        }
        let tag = ctx.sign();
        let b64 = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
        b64[..HASH_CHARS].to_string()
    }

    /// True when `presented` is the hash of `parts`, compared without case
    /// (mail systems may change it) and in constant time, so the time of a
    /// refusal tells a forger nothing about how many characters were right.
    fn hash_matches(&self, parts: &[&str], presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        let expected = self.hash(parts).to_ascii_lowercase();
        let presented = presented.to_ascii_lowercase();
        // The length is public (HASH_CHARS); only the content is compared.
        expected.len() == presented.len()
            && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
    }

    /// The envelope sender for a forwarded copy of mail from `sender`.
    /// The null sender and our own domain's addresses stay as they are.
    pub fn forward(&self, sender: &str) -> String {
        self.forward_on(sender, day_now())
    }

    pub fn forward_on(&self, sender: &str, day: i64) -> String {
        let Some((local, host)) = split_address(sender) else {
            return sender.to_string();
        };
        if host.eq_ignore_ascii_case(&self.domain) || sender.len() > ADDRESS_BYTES_MAX {
            return sender.to_string();
        }
        let upper = local.to_ascii_uppercase();
        if upper.starts_with("SRS0") && local.len() > 4 && is_sep(local.as_bytes()[4]) {
            // SRS0 of another forwarder: wrap it as SRS1 (the rest keeps its separator).
            let rest = &local[4..];
            let h = self.hash(&[host, rest]);
            return format!("SRS1={h}={host}={rest}@{}", self.domain);
        }
        if upper.starts_with("SRS1") && local.len() > 4 && is_sep(local.as_bytes()[4]) {
            // SRS1 already: keep its SRS0 host and rest, re-sign for us.
            let parts: Vec<&str> = local[5..].splitn(3, '=').collect();
            if let [_, srs0host, rest] = parts.as_slice() {
                let h = self.hash(&[srs0host, rest]);
                return format!("SRS1={h}={srs0host}={rest}@{}", self.domain);
            }
        }
        let ts = stamp(day);
        let h = self.hash(&[&ts, host, local]);
        format!("SRS0={h}={ts}={host}={local}@{}", self.domain)
    }

    /// The original address behind an SRS address of our domain, once its
    /// hash (and for SRS0 its age) checks out.
    pub fn reverse(&self, address: &str) -> Result<String, SrsError> {
        self.reverse_on(address, day_now())
    }

    pub fn reverse_on(&self, address: &str, today: i64) -> Result<String, SrsError> {
        let (local, host) = split_address(address).ok_or(SrsError::NotSrs)?;
        if !host.eq_ignore_ascii_case(&self.domain)
            || local.len() < 5
            || !is_sep(local.as_bytes()[4])
        {
            return Err(SrsError::NotSrs);
        }
        let kind = local[..4].to_ascii_uppercase();
        let body = &local[5..];
        match kind.as_str() {
            "SRS0" => {
                let parts: Vec<&str> = body.splitn(4, '=').collect();
                let [hash, ts, dom, orig_local] = parts.as_slice() else {
                    return Err(SrsError::Malformed);
                };
                if !self.hash_matches(&[ts, dom, orig_local], hash) {
                    return Err(SrsError::BadHash);
                }
                let then = stamp_day(ts).ok_or(SrsError::Malformed)?;
                let age = (today - then).rem_euclid(1024);
                if age > MAX_AGE_DAYS {
                    return Err(SrsError::Expired);
                }
                Ok(format!("{orig_local}@{dom}"))
            }
            "SRS1" => {
                let parts: Vec<&str> = body.splitn(3, '=').collect();
                let [hash, srs0host, rest] = parts.as_slice() else {
                    return Err(SrsError::Malformed);
                };
                if !self.hash_matches(&[srs0host, rest], hash) {
                    return Err(SrsError::BadHash);
                }
                Ok(format!("SRS0{rest}@{srs0host}"))
            }
            _ => Err(SrsError::NotSrs),
        }
    }
}

fn is_sep(b: u8) -> bool {
    matches!(b, b'=' | b'+' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srs0_round_trip_and_checks() {
        let srs = Srs::new("tops3cret", "fwd.example.net");
        let day = 20_000;
        let a = srs.forward_on("Alice@Sender.example", day);
        assert!(a.starts_with("SRS0="), "{a}");
        assert!(
            a.ends_with("=sender.example=Alice@fwd.example.net")
                || a.ends_with("=Sender.example=Alice@fwd.example.net"),
            "{a}"
        );
        assert_eq!(
            srs.reverse_on(&a, day + 3).as_deref(),
            Ok("Alice@Sender.example")
        );
        // The hash is case-insensitive: mail systems may change case.
        assert_eq!(
            srs.reverse_on(&a.to_lowercase(), day)
                .map(|s| s.to_lowercase())
                .as_deref(),
            Ok("alice@sender.example")
        );
        assert_eq!(srs.reverse_on(&a, day + 30), Err(SrsError::Expired));
        let tampered = a.replacen("sender.example", "evil.example", 1).replacen(
            "Sender.example",
            "evil.example",
            1,
        );
        assert_eq!(srs.reverse_on(&tampered, day), Err(SrsError::BadHash));
        assert_eq!(
            Srs::new("other", "fwd.example.net").reverse_on(&a, day),
            Err(SrsError::BadHash)
        );
        assert_eq!(
            srs.reverse_on("bob@fwd.example.net", day),
            Err(SrsError::NotSrs)
        );
        assert_eq!(srs.forward_on("", day), "");
        assert_eq!(
            srs.forward_on("me@fwd.example.net", day),
            "me@fwd.example.net"
        );
    }

    #[test]
    fn srs1_wraps_another_forwarders_srs0() {
        let first = Srs::new("k1", "first.example");
        let ours = Srs::new("k2", "fwd.example.net");
        let srs0 = first.forward_on("bob@origin.example", 100);
        let srs1 = ours.forward_on(&srs0, 100);
        assert!(
            srs1.starts_with("SRS1=") && srs1.contains("=first.example=="),
            "{srs1}"
        );
        assert_eq!(ours.reverse_on(&srs1, 100).as_deref(), Ok(srs0.as_str()));
        assert_eq!(
            first.reverse_on(&srs0, 100).as_deref(),
            Ok("bob@origin.example")
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(stamp(0), "AA");
        assert_eq!(stamp_day(&stamp(1023)), Some(1023));
        assert_eq!(stamp_day(&stamp(20_000)), Some(20_000 & 1023));
    }
}
