//! The relays a message passed, from its Received headers, as SpamAssassin
//! describes them to its rules (Mail::SpamAssassin::Message::Metadata::
//! Received): one `[ ip=... rdns=... helo=... by=... ident=... envfrom=...
//! intl=0|1 id=... auth=... msa=0 ]` per relay, newest first, in the
//! pseudo-headers `X-Spam-Relays-Trusted`, `-Untrusted`, `-Internal` and
//! `-External`.
//!
//! The parser reads the common forms (Postfix and Sendmail's `from HELO
//! (RDNS [IP])`, qmail's `from RDNS (HELO name) (IP)`, Exim's `from RDNS
//! ([IP] helo=NAME)`, Microsoft's `from HELO ([IP])`), not SpamAssassin's
//! hundred special cases; a header without a `from` clause and an address
//! is skipped, as SpamAssassin skips what it cannot parse.
//!
//! Trust is inferred as SpamAssassin does without `trusted_networks`:
//! relays from private or loopback addresses, or with authentication
//! tokens, are trusted (and internal) until the first that is neither;
//! from it on, all are untrusted (and external). With `[spam]
//! trusted_networks` set ([`TrustedNetworks`]), a relay is trusted when its
//! address is in them or on loopback (SpamAssassin always adds 127/8 and
//! ::1) or it authenticated; a private address alone is no longer enough.
//! A mail fetcher's marker (fetchmail) inside the trusted part restarts
//! the list, as there.
//!
//! Pure; bounded by the message's header limit.

use std::net::IpAddr;

use crate::message::MailView;

/// Most Received headers read (SpamAssassin reads them all; mail with
/// more has looped).
pub const RECEIVED_MAX: usize = 64;

/// SpamAssassin's `trusted_networks` (`[spam] trusted_networks`): the
/// addresses whose relays are trusted not to forge what they add. Empty:
/// trust is inferred (see the module text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedNetworks {
    /// Shared: every message's rule cache holds a clone.
    networks: Option<std::sync::Arc<[(IpAddr, u8)]>>,
}

impl TrustedNetworks {
    /// From the configuration's entries (validated there: `ip` or
    /// `ip/prefix`; an entry that does not parse is left out).
    pub fn from_config(entries: &[String]) -> TrustedNetworks {
        let networks: Vec<(IpAddr, u8)> = entries
            .iter()
            .filter_map(|e| mxrack_config::parse_network(e))
            // ::ffff:a.b.c.d/n is the IPv4 network a.b.c.d/(n - 96).
            .map(|(ip, prefix)| match ip {
                IpAddr::V6(v6) if prefix >= 96 => v6
                    .to_ipv4_mapped()
                    .map_or((ip, prefix), |v4| (IpAddr::V4(v4), prefix - 96)),
                _ => (ip, prefix),
            })
            .collect();
        TrustedNetworks {
            networks: (!networks.is_empty()).then(|| networks.into()),
        }
    }

    /// No networks: trust is inferred.
    pub fn is_empty(&self) -> bool {
        self.networks.is_none()
    }

    /// Whether a relay from `ip` is trusted: in a listed network, or
    /// loopback (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: &IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_loopback()
            || self
                .networks
                .iter()
                .flat_map(|n| n.iter())
                .any(|(net, prefix)| mxrack_config::same_network(ip, *net, *prefix))
    }
}

/// One relay.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Relay {
    pub ip: String,
    pub rdns: String,
    pub helo: String,
    pub by: String,
    pub ident: String,
    pub envfrom: String,
    pub id: String,
    pub auth: String,
    pub internal: bool,
    /// The receiving MTA wrote that the address has no reverse DNS
    /// (`unknown`), rather than not looking.
    pub no_rdns: bool,
}

impl Relay {
    /// The hand-over to mxrack, from what the SMTP session knows (never
    /// from header text a client could shape): the client's address, its
    /// HELO, our host name and the queue id. The reverse DNS is filled in
    /// from the iprev check.
    pub fn hop(ip: IpAddr, helo: &str, by: &str, id: &str) -> Relay {
        Relay {
            // An IPv4 client of a dual-stack listener ([::]:25) is seen as
            // ::ffff:a.b.c.d; its relay record (and trust) is the IPv4
            // address, as a Received header would name it.
            ip: ip.to_canonical().to_string(),
            helo: sanitize(helo),
            by: sanitize(by),
            id: sanitize(id),
            ..Relay::default()
        }
    }

    /// SpamAssassin's text for the relay.
    pub fn as_string(&self) -> String {
        format!(
            "[ ip={} rdns={} helo={} by={} ident={} envfrom={} intl={} id={} auth={} msa=0 ]",
            self.ip,
            self.rdns,
            self.helo,
            self.by,
            self.ident,
            self.envfrom,
            u8::from(self.internal),
            self.id,
            self.auth
        )
    }
}

/// The relays, split at the trust boundary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Relays {
    pub trusted: Vec<Relay>,
    pub untrusted: Vec<Relay>,
    /// Received headers with a `from` clause that did not parse.
    pub unparseable: usize,
}

impl Relays {
    /// A pseudo-header's value: `X-Spam-Relays-Trusted` (= `-Internal`
    /// here) or `-Untrusted` (= `-External`); `None` for other names.
    pub fn pseudo_header(&self, name: &str) -> Option<String> {
        let list = match name {
            "X-Spam-Relays-Trusted" | "X-Spam-Relays-Internal" => &self.trusted,
            "X-Spam-Relays-Untrusted" | "X-Spam-Relays-External" => &self.untrusted,
            _ => return None,
        };
        Some(
            list.iter()
                .map(Relay::as_string)
                .collect::<Vec<_>>()
                .join(" "),
        )
    }
}

/// SpamAssassin's `$strip_chars` (Received.pm): characters that would end
/// or fake a field of the relay text become `!` (`[192.0.2.1]` as a HELO
/// is `!192.0.2.1!`).
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_whitespace()
                || matches!(c, '\0' | '#' | '[' | ']' | '(' | ')' | '<' | '>' | '|')
            {
                '!'
            } else {
                c
            }
        })
        .collect()
}

/// Most `[` or `(` looked at for an address in one Received header.
const IP_CANDIDATES_MAX: usize = 16;

/// True for the pseudo-headers [`Relays::pseudo_header`] makes.
pub fn is_relay_header(name: &str) -> bool {
    matches!(
        name,
        "X-Spam-Relays-Trusted"
            | "X-Spam-Relays-Internal"
            | "X-Spam-Relays-Untrusted"
            | "X-Spam-Relays-External"
    )
}

/// SpamAssassin's `$IP_PRIVATE`: addresses not on the public internet.
pub fn is_private(ip: &IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Words end at white space or these.
fn word_end(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | ';' | '[' | ']' | '<' | '>' | ',')
}

fn first_word(s: &str) -> &str {
    let s = s.trim_start();
    &s[..s.find(word_end).unwrap_or(s.len())]
}

/// The value after `key` (case-insensitive) up to the end of the word.
fn after_key<'a>(text: &'a str, lower: &str, key: &str) -> Option<&'a str> {
    let at = lower.find(key)? + key.len();
    let w = first_word(&text[at..]);
    (!w.is_empty()).then_some(w)
}

/// An address in square brackets (`[192.0.2.1]`, `[IPv6:2001:db8::1]`),
/// else in parentheses alone (`(192.0.2.1)`), else the first bare one.
fn find_ip(from: &str) -> Option<(IpAddr, usize)> {
    let parse = |s: &str| -> Option<IpAddr> {
        let s = s.trim();
        let s = s
            .strip_prefix("IPv6:")
            .or_else(|| s.strip_prefix("ipv6:"))
            .unwrap_or(s);
        s.parse().ok()
    };
    for (i, _) in from.match_indices('[').take(IP_CANDIDATES_MAX) {
        if let Some(len) = from[i + 1..].find(']')
            && let Some(ip) = parse(&from[i + 1..i + 1 + len])
        {
            return Some((ip, i));
        }
    }
    for (i, _) in from.match_indices('(').take(IP_CANDIDATES_MAX) {
        if let Some(len) = from[i + 1..].find(')')
            && let Some(ip) = parse(&from[i + 1..i + 1 + len])
        {
            return Some((ip, i));
        }
    }
    let mut at = 0;
    for w in from.split(|c: char| c.is_whitespace() || "()[];,=".contains(c)) {
        if let Ok(ip) = w.parse::<IpAddr>()
            && w.contains(['.', ':'])
        {
            return Some((ip, at));
        }
        at += w.len() + 1;
    }
    None
}

/// Parses one Received header's value (unfolded). `None`: no `from`
/// clause with an address (a local hand-over, a qmail `invoked` line).
pub fn parse_received(value: &str) -> Option<Relay> {
    let text: String = value.split_whitespace().collect::<Vec<_>>().join(" ");
    let lower = text.to_ascii_lowercase();
    let rest = lower.strip_prefix("from ")?;
    let from_start = text.len() - rest.len();
    let by_at = lower.find(" by ").unwrap_or(text.len());
    if by_at < from_start {
        return None;
    }
    let from = &text[from_start..by_at];
    let from_lower = &lower[from_start..by_at];
    let by_part = text.get(by_at + 4..).unwrap_or("");
    let by_lower = lower.get(by_at + 4..).unwrap_or("");
    let (ip, ip_at) = find_ip(from)?;
    let mut relay = Relay {
        ip: ip.to_string(),
        by: first_word(by_part).to_string(),
        ..Relay::default()
    };
    let first = first_word(from);
    // The HELO as written, brackets and all (sanitized below).
    let first_token = from.split([' ', '(']).next().unwrap_or("");
    let first_is_ip = first_token
        .trim_matches(['[', ']'])
        .parse::<IpAddr>()
        .is_ok();
    if let Some(h) = after_key(from, from_lower, "helo=") {
        // Exim: `from RDNS ([IP] helo=NAME)`, `from [IP] (helo=NAME)`.
        relay.helo = h.to_string();
        if !first_is_ip && !first.eq_ignore_ascii_case("unknown") {
            relay.rdns = first.to_string();
        }
    } else if let Some(h) = after_key(from, from_lower, "(helo ") {
        // qmail: `from RDNS (HELO name) (IP)`, `from unknown (HELO name)`.
        relay.helo = h.to_string();
        if !first_is_ip && !first.eq_ignore_ascii_case("unknown") {
            relay.rdns = first.to_string();
        }
    } else {
        // Postfix, Sendmail, Microsoft: `from HELO (RDNS [IP])`,
        // `from HELO ([IP])`, `from HELO (unknown [IP])`,
        // `from HELO (ident@RDNS [IP])`; qmail without HELO:
        // `from RDNS (IP)`.
        relay.helo = first_token.to_string();
        if let Some(open) = from[..ip_at].rfind('(') {
            let inside = from[open + 1..ip_at].trim();
            let (ident, host) = match inside.rsplit_once('@') {
                Some((i, h)) => (i, h),
                None => ("", inside),
            };
            relay.ident = ident.to_string();
            relay.no_rdns = host.eq_ignore_ascii_case("unknown");
            if !host.is_empty()
                && !host.eq_ignore_ascii_case("unknown")
                && !host.contains(char::is_whitespace)
            {
                relay.rdns = host.to_string();
            }
        } else if from[ip_at..].starts_with('(') && !first_is_ip {
            // qmail `from RDNS (IP)`: the name is its reverse DNS.
            if !first.eq_ignore_ascii_case("unknown") {
                relay.rdns = first.to_string();
            }
            relay.helo = String::new();
        }
    }
    if let Some(id) = after_key(by_part, by_lower, " id ") {
        relay.id = id.to_string();
    }
    if let Some(at) = lower.find("envelope-from ") {
        let e = text[at + 14..].trim_start().trim_start_matches('<');
        relay.envfrom = first_word(e).to_string();
    }
    if let Some(i) = after_key(from, from_lower, "ident=") {
        relay.ident = i.to_string();
    }
    for field in [
        &mut relay.rdns,
        &mut relay.helo,
        &mut relay.by,
        &mut relay.ident,
        &mut relay.envfrom,
        &mut relay.id,
    ] {
        *field = sanitize(field);
    }
    for (token, name) in [
        (" with esmtpsa", "ESMTPSA"),
        (" with esmtpa", "ESMTPA"),
        (" with lmtpsa", "LMTPSA"),
        (" with lmtpa", "LMTPA"),
        (" with asmtp", "ASMTP"),
        ("(authenticated sender:", "Postfix"),
        ("(authenticated as ", "Sendmail"),
    ] {
        if lower.contains(token) {
            relay.auth = name.to_string();
            break;
        }
    }
    Some(relay)
}

/// A mail fetcher's hand-over (`by localhost with POP3 (fetchmail...)`).
fn fetcher_marker(lower: &str) -> bool {
    lower.contains("(fetchmail") || lower.contains("with pop3") || lower.contains("with imap")
}

/// What one Received header is to the relay list.
enum Seen {
    Relay(Relay),
    /// A mail fetcher's hand-over.
    Marker,
    /// A `from` clause that did not parse.
    Unparseable,
    /// No `from` clause (a local hand-over): skipped.
    Other,
}

/// The message's relays, newest first, split at the trust boundary
/// (`trusted`, else inferred; see the module text). `hop`: the current
/// hand-over (the client that gave mxrack the message), newest of all.
pub fn relays(view: &MailView, hop: Option<&Relay>, trusted: &TrustedNetworks) -> Relays {
    let mut out = Relays::default();
    let mut in_trusted = true;
    let headers = view
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Received"))
        .take(RECEIVED_MAX)
        .map(|h| {
            let lower = h.raw.trim_start().to_ascii_lowercase();
            if fetcher_marker(&lower) {
                Seen::Marker
            } else {
                match parse_received(&h.raw) {
                    Some(r) => Seen::Relay(r),
                    // A host name and no address: not a local hand-over
                    // (`from localhost`), so one this parser does not know.
                    None if lower
                        .strip_prefix("from ")
                        .is_some_and(|r| first_word(r).contains('.')) =>
                    {
                        Seen::Unparseable
                    }
                    None => Seen::Other,
                }
            }
        });
    for seen in hop.cloned().map(Seen::Relay).into_iter().chain(headers) {
        let mut relay = match seen {
            Seen::Relay(r) => r,
            Seen::Marker => {
                // Inside the trusted part, what came before the fetcher
                // was the local delivery: start again.
                if in_trusted {
                    out.trusted.clear();
                }
                continue;
            }
            Seen::Unparseable => {
                out.unparseable += 1;
                continue;
            }
            Seen::Other => continue,
        };
        if in_trusted {
            let ip = relay.ip.parse::<IpAddr>().ok();
            let listed = if trusted.is_empty() {
                ip.is_some_and(|ip| is_private(&ip))
            } else {
                ip.is_some_and(|ip| trusted.contains(&ip))
            };
            if !listed && relay.auth.is_empty() {
                in_trusted = false;
            }
        }
        relay.internal = in_trusted;
        if in_trusted {
            out.trusted.push(relay);
        } else {
            out.untrusted.push(relay);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Relay {
        parse_received(s).unwrap_or_else(|| panic!("unparsed: {s}"))
    }

    #[test]
    fn postfix_sendmail_qmail_exim_and_microsoft_forms() {
        let r = p(
            "from mail.example.org (mail.example.org [192.0.2.7]) by mx.example.net (Postfix) with ESMTP id 26DD916F20 for <jm@localhost>; Mon, 2 Dec 2002 11:23:10 +0000",
        );
        assert_eq!(
            r.as_string(),
            "[ ip=192.0.2.7 rdns=mail.example.org helo=mail.example.org by=mx.example.net ident= envfrom= intl=0 id=26DD916F20 auth= msa=0 ]"
        );
        let r = p("from helo.example (unknown [198.51.100.9]) by mx.example.net (Postfix)");
        assert_eq!((r.rdns.as_str(), r.helo.as_str()), ("", "helo.example"));
        let r = p(
            "from pc17 ([203.0.113.5]) by smtp.example.com with Microsoft SMTPSVC(5.0.2195.5329)",
        );
        assert_eq!(
            (r.ip.as_str(), r.rdns.as_str(), r.helo.as_str()),
            ("203.0.113.5", "", "pc17")
        );
        let r = p(
            "from unknown (HELO ptldme-mls2.maine.rr.com) (24.93.159.133) by mta1.grp.scd.yahoo.com with SMTP; 1 Dec 2002 23:23:15 -0000",
        );
        assert_eq!(
            (r.rdns.as_str(), r.helo.as_str(), r.by.as_str()),
            ("", "ptldme-mls2.maine.rr.com", "mta1.grp.scd.yahoo.com")
        );
        let r = p("from unknown (66.218.66.216) by m14.grp.scd.yahoo.com with QMQP; 1 Dec 2002");
        assert_eq!((r.ip.as_str(), r.rdns.as_str()), ("66.218.66.216", ""));
        let r = p(
            "from host.example ([192.0.2.44] helo=claims.example) by mx.example.net with esmtp (Exim 4.96) (envelope-from <a@b.example>) id 1abc-0001",
        );
        assert_eq!(
            (
                r.rdns.as_str(),
                r.helo.as_str(),
                r.envfrom.as_str(),
                r.id.as_str()
            ),
            ("host.example", "claims.example", "a@b.example", "1abc-0001")
        );
        let r = p(
            "from joe (joe@dial-17.isp.example [198.51.100.17]) by relay.isp.example (8.11.6/8.11.6) with ESMTPA id g7",
        );
        assert_eq!(
            (r.ident.as_str(), r.rdns.as_str(), r.auth.as_str()),
            ("joe", "dial-17.isp.example", "ESMTPA")
        );
        let r = p("from client ([IPv6:2001:db8::5]) by mx.example.net");
        assert_eq!(r.ip, "2001:db8::5");
        assert!(parse_received("(qmail 22178 invoked from network); 1 Dec 2002").is_none());
        assert!(parse_received("by mx.example.net with LMTP id x").is_none());
        assert!(parse_received("from localhost by mx.example.net").is_none());
    }

    #[test]
    fn fields_are_sanitized_as_spamassassin_does() {
        let r = p("from [203.0.113.5] (unknown [203.0.113.5]) by mx.example.net (Postfix)");
        assert_eq!((r.helo.as_str(), r.rdns.as_str()), ("!203.0.113.5!", ""));
        // The hop comes from the session: a HELO cannot fake the address.
        let hop = Relay::hop("192.0.2.1".parse().unwrap(), "[10.0.0.1] x]", "mx", "q1");
        assert_eq!(hop.ip, "192.0.2.1");
        assert_eq!(hop.helo, "!10.0.0.1!!x!");
        let v = MailView::parse(b"From: a@b.c\r\n\r\nhi\r\n");
        let r = relays(&v, Some(&hop), &TrustedNetworks::default());
        assert!(r.trusted.is_empty() && r.untrusted.len() == 1);
        // Many brackets: bounded work, no address.
        assert!(parse_received(&format!("from {} by x", "[".repeat(100_000))).is_none());
    }

    #[test]
    fn trust_stops_at_the_first_public_unauthenticated_relay() {
        let msg = "Received: from localhost (localhost [127.0.0.1]) by mx.example.net (Postfix) id A1\r\n\
Received: from jalapeno [127.0.0.1] by localhost with IMAP (fetchmail-5.9.0) for jm@localhost\r\n\
Received: from n5.grp.example (n5.grp.example [66.218.66.89]) by dogma.example with SMTP id g1\r\n\
Received: from unknown (HELO pc.example) (24.93.159.133) by mta1.example with SMTP\r\n\
From: a@b.example\r\n\r\nhi\r\n";
        let v = MailView::parse(msg.as_bytes());
        let r = relays(&v, None, &TrustedNetworks::default());
        // The fetchmail marker restarted the trusted list: localhost is gone.
        assert!(r.trusted.is_empty(), "{:?}", r.trusted);
        assert_eq!(r.untrusted.len(), 2);
        assert_eq!(r.untrusted[0].rdns, "n5.grp.example");
        let ext = r.pseudo_header("X-Spam-Relays-External").unwrap();
        assert!(
            ext.starts_with(
                "[ ip=66.218.66.89 rdns=n5.grp.example helo=n5.grp.example by=dogma.example "
            ),
            "{ext}"
        );
        assert!(ext.ends_with("[ ip=24.93.159.133 rdns= helo=pc.example by=mta1.example ident= envfrom= intl=0 id= auth= msa=0 ]"), "{ext}");
        // The current hop, given, comes first.
        let hop = Relay {
            ip: "192.0.2.9".into(),
            helo: "client.example".into(),
            by: "mx".into(),
            ..Relay::default()
        };
        let r = relays(&v, Some(&hop), &TrustedNetworks::default());
        assert_eq!(r.untrusted[0].ip, "192.0.2.9");
        // Trust ended at the hop: the local hand-over is untrusted too, and
        // the fetcher's marker no longer restarts anything.
        assert_eq!(r.untrusted.len(), 4);
        assert_eq!(r.untrusted[1].ip, "127.0.0.1");
        // Private and authenticated relays are trusted.
        let msg = "Received: from a (a [10.0.0.2]) by b\r\nReceived: from c (c [198.51.100.3]) by d with ESMTPSA id x\r\nReceived: from e (e [198.51.100.4]) by f\r\n\r\n";
        let r = relays(
            &MailView::parse(msg.as_bytes()),
            None,
            &TrustedNetworks::default(),
        );
        assert_eq!((r.trusted.len(), r.untrusted.len()), (2, 1));
        assert!(
            r.pseudo_header("X-Spam-Relays-Trusted")
                .unwrap()
                .contains("intl=1")
        );
    }

    #[test]
    fn trusted_networks_decide_trust_instead_of_inference() {
        let nets = |list: &[&str]| {
            TrustedNetworks::from_config(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        // The provider's front MX (public) hands the mail to mxrack (the
        // hop); before it, the sender's relay without reverse DNS.
        let msg = "Received: from unknown (HELO pc.example) (24.93.159.133) by front.provider.example with SMTP\r\n\
From: a@b.example\r\n\r\nhi\r\n";
        let v = MailView::parse(msg.as_bytes());
        let hop = Relay {
            ip: "203.0.113.7".into(),
            rdns: "front.provider.example".into(),
            helo: "front.provider.example".into(),
            by: "mx".into(),
            ..Relay::default()
        };
        // Inferred: the front MX is public, so it is the sender's relay.
        let r = relays(&v, Some(&hop), &TrustedNetworks::default());
        assert_eq!(r.untrusted[0].ip, "203.0.113.7");
        // Listed: the front MX is trusted, and the rules look at the one
        // before it.
        let front = nets(&["203.0.113.0/24"]);
        let r = relays(&v, Some(&hop), &front);
        assert_eq!(r.trusted.len(), 1);
        assert!(r.trusted[0].internal);
        assert_eq!(r.untrusted[0].ip, "24.93.159.133");
        assert_eq!(r.untrusted[0].rdns, "");
        // Set, a private address alone is not trusted; loopback always is.
        let msg =
            "Received: from a (a [127.0.0.1]) by b\r\nReceived: from c (c [10.0.0.2]) by d\r\n\r\n";
        let r = relays(&MailView::parse(msg.as_bytes()), None, &front);
        assert_eq!((r.trusted.len(), r.untrusted.len()), (1, 1));
        assert_eq!(r.untrusted[0].ip, "10.0.0.2");
        // A whole address, and IPv6 networks.
        let v6 = nets(&["2001:db8:25::/48", "198.51.100.9"]);
        assert!(v6.contains(&"2001:db8:25:1::9".parse().unwrap()));
        assert!(!v6.contains(&"2001:db8:26::9".parse().unwrap()));
        assert!(v6.contains(&"198.51.100.9".parse().unwrap()));
        assert!(!v6.contains(&"198.51.100.10".parse().unwrap()));
        assert!(v6.contains(&"::1".parse().unwrap()));
        assert!(nets(&["0.0.0.0/0"]).contains(&"192.0.2.1".parse().unwrap()));
        // A dual-stack listener sees IPv4 clients as IPv4-mapped addresses.
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        assert!(front.contains(&mapped));
        assert!(nets(&["::ffff:203.0.113.0/120"]).contains(&"203.0.113.9".parse().unwrap()));
        assert!(TrustedNetworks::default().contains(&"::ffff:127.0.0.1".parse().unwrap()));
        assert!(is_private(&"::ffff:10.1.2.3".parse().unwrap()));
        assert_eq!(Relay::hop(mapped, "h", "b", "i").ip, "203.0.113.7");
        assert!(!nets(&["0.0.0.0/0"]).contains(&"2001:db8::1".parse().unwrap()));
    }
}
