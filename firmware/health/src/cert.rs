//! Just enough X.509 (RFC 5280) to check a certificate from the outside:
//! its validity period and the DNS names it covers. A small DER walk over
//! the fields in order; anything unexpected gives `None`, never a panic.

use crate::time::unix_of;

/// What the self-check needs of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// subjectAltName dNSName entries.
    pub dns_names: Vec<String>,
}

/// One DER element: (tag, content, rest).
fn tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// UTCTime (YYMMDDHHMMSSZ, 1950-2049) or GeneralizedTime (YYYYMMDDHHMMSSZ).
fn time_of(tag: u8, v: &[u8]) -> Option<i64> {
    let (year, rest) = match tag {
        0x17 if v.len() == 13 => {
            let yy = i64::from(digits(&v[..2])?);
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &v[2..])
        }
        0x18 if v.len() == 15 => (i64::from(digits(&v[..4])?), &v[4..]),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    let f = |i: usize| digits(&rest[i..i + 2]);
    Some(unix_of(year, f(0)?, f(2)?, f(4)?, f(6)?, f(8)?))
}

/// The facts of a DER certificate.
pub fn parse(der: &[u8]) -> Option<CertFacts> {
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    let (tag, _, r) = tlv(rest)?;
    if tag == 0xa0 {
        rest = r; // explicit version
    }
    let (_, _, r) = tlv(rest)?; // serial
    let (_, _, r) = tlv(r)?; // signature algorithm
    let (_, _, r) = tlv(r)?; // issuer
    let (_, validity, r) = tlv(r)?;
    let (t1, nb, vr) = tlv(validity)?;
    let (t2, na, _) = tlv(vr)?;
    let (_, _, r) = tlv(r)?; // subject
    let (_, _, mut r) = tlv(r)?; // subject public key info
    let mut dns_names = Vec::new();
    while let Some((tag, content, next)) = tlv(r) {
        r = next;
        if tag != 0xa3 {
            continue;
        }
        let (_, mut exts, _) = tlv(content)?;
        while let Some((_, ext, next)) = tlv(exts) {
            exts = next;
            let (_, oid, mut er) = tlv(ext)?;
            if oid != [0x55, 0x1d, 0x11] {
                continue;
            }
            let (tag, mut value, after) = tlv(er)?;
            if tag == 0x01 {
                // critical flag
                er = after;
                (_, value, _) = tlv(er)?;
            }
            let (_, mut names, _) = tlv(value)?;
            while let Some((tag, name, next)) = tlv(names) {
                names = next;
                if tag == 0x82 {
                    dns_names.push(String::from_utf8_lossy(name).into_owned());
                }
            }
        }
    }
    Some(CertFacts {
        not_before: time_of(t1, nb)?,
        not_after: time_of(t2, na)?,
        dns_names,
    })
}

/// True when `name` is covered by `pattern` (exact, or one `*.` label).
pub fn name_matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.to_ascii_lowercase(), name.to_ascii_lowercase());
    if let Some(suffix) = p.strip_prefix("*.") {
        return n
            .split_once('.')
            .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix);
    }
    p == n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_and_names_of_a_generated_certificate() {
        let mut params =
            rcgen::CertificateParams::new(vec!["mx1.example.net".into(), "localhost".into()])
                .expect("params");
        params.not_before = rcgen::date_time_ymd(2026, 1, 2);
        params.not_after = rcgen::date_time_ymd(2027, 1, 2);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.clone().self_signed(&key).expect("cert");
        let facts = parse(cert.der()).expect("parsed");
        assert_eq!(facts.not_before, unix_of(2026, 1, 2, 0, 0, 0));
        assert_eq!(facts.not_after, unix_of(2027, 1, 2, 0, 0, 0));
        assert_eq!(facts.dns_names, ["mx1.example.net", "localhost"]);
        // Past 2049 rcgen writes GeneralizedTime.
        params.not_after = rcgen::date_time_ymd(2060, 6, 1);
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(
            parse(cert.der()).expect("parsed").not_after,
            unix_of(2060, 6, 1, 0, 0, 0)
        );
        // Truncated or garbage input is refused, not a panic.
        let der = cert.der().to_vec();
        for n in [0, 1, 2, 10, der.len() / 2, der.len() - 1] {
            assert!(parse(&der[..n]).is_none() || n == der.len());
        }
        assert!(parse(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
    }

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_matches("*.example.net", "mx1.example.net"));
        assert!(!name_matches("*.example.net", "a.mx1.example.net"));
        assert!(!name_matches("*.example.net", "example.net"));
        assert!(name_matches("MX1.example.net", "mx1.EXAMPLE.net"));
    }
}
