//! SpamAssassin's `eval:` tests that mxrack runs itself: the Perl functions
//! of Mail::SpamAssassin's HeaderEval, MIMEEval, BodyEval, HTMLEval and the
//! FreeMail plugin that the shipped rules lean on most, written again from
//! their documented behaviour over [`MailView`]. A function not here makes
//! its rule unknown ([`crate::sa`]).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crate::sa::BinOp;
use std::sync::Arc;

use crate::message::MailView;

/// Most arguments of one eval call.
const ARGS_MAX: usize = 8;

/// The domains of the FreeMail plugin (`freemail_domains`, where `*`
/// stands for any run of characters but a dot: `hotmail.*`, `*.att.ne.jp`)
/// and the addresses it leaves alone (`freemail_welcomelist`).
#[derive(Debug, Default)]
pub struct Freemail {
    pub domains: HashSet<String>,
    /// The wildcard entries as one pattern.
    pub wildcards: Option<regex::Regex>,
    pub welcome: HashSet<String>,
}

impl Freemail {
    /// True when `addr`'s domain is a free mail provider's.
    pub fn is_freemail(&self, addr: &str) -> bool {
        let addr = addr.trim().to_ascii_lowercase();
        if addr.is_empty() || self.welcome.contains(&addr) {
            return false;
        }
        let Some((_, domain)) = addr.rsplit_once('@') else {
            return false;
        };
        self.domains.contains(domain) || self.wildcards.as_ref().is_some_and(|w| w.is_match(domain))
    }

    /// Adds `freemail_domains` entries.
    pub fn add_domains(&mut self, entries: &[String]) {
        let mut wild: Vec<String> = Vec::new();
        for e in entries {
            if e.contains('*') {
                wild.push(
                    e.split('*')
                        .map(regex::escape)
                        .collect::<Vec<_>>()
                        .join("[^.]*"),
                );
            } else {
                self.domains.insert(e.clone());
            }
        }
        if !wild.is_empty() {
            if let Some(old) = &self.wildcards {
                // Already "^(?:...)$": keep its alternatives.
                let inner = old
                    .as_str()
                    .trim_start_matches("^(?:")
                    .trim_end_matches(")$");
                wild.push(inner.to_string());
            }
            self.wildcards = regex::Regex::new(&format!("^(?:{})$", wild.join("|"))).ok();
        }
    }
}

/// SpamAssassin's address lists (`enlist_addrlist (NAME) *@*.gov ...`),
/// which `check_from_in_list('NAME')` looks the sender up in. An entry is
/// a glob on the whole address, `*` any run and `?` one character, case
/// ignored (Mail::SpamAssassin::Conf's `add_to_addrlist`).
#[derive(Debug, Default)]
pub struct AddrLists {
    globs: HashMap<String, Vec<String>>,
    compiled: HashMap<String, regex::Regex>,
    /// Lists whose pattern would not compile (too large for the regex
    /// crate's limit): a rule naming one is left out and counted, not run
    /// as if the list were empty.
    failed: HashSet<String>,
}

/// Most entries one address list takes.
pub const ADDRLIST_ENTRIES_MAX: usize = 10_000;

impl AddrLists {
    /// Adds `enlist_addrlist` entries to list `name`.
    pub fn enlist(&mut self, name: &str, entries: &[&str]) {
        let list = self.globs.entry(name.to_string()).or_default();
        for e in entries {
            if list.len() < ADDRLIST_ENTRIES_MAX {
                list.push(e.to_ascii_lowercase());
            }
        }
    }

    /// Compiles each list into one pattern (after every file is read).
    pub fn compile(&mut self) {
        for (name, globs) in &self.globs {
            let alternatives: Vec<String> = globs
                .iter()
                .map(|g| {
                    g.chars()
                        .map(|c| match c {
                            '*' => ".*".to_string(),
                            '?' => ".".to_string(),
                            c => regex::escape(&c.to_string()),
                        })
                        .collect::<String>()
                })
                .collect();
            match regex::RegexBuilder::new(&format!("^(?:{})$", alternatives.join("|")))
                .case_insensitive(true)
                .build()
            {
                Ok(re) => {
                    self.compiled.insert(name.clone(), re);
                }
                Err(_) => {
                    self.failed.insert(name.clone());
                }
            }
        }
    }

    /// Whether `addr` is in list `name` (an unknown list holds nothing).
    pub fn contains(&self, name: &str, addr: &str) -> bool {
        self.compiled
            .get(name)
            .is_some_and(|re| re.is_match(addr.trim()))
    }
}

/// One eval call, its arguments parsed.
#[derive(Debug, Clone)]
pub enum Eval {
    EqualFromDomains,
    MimeHtmlOnly,
    MimeHtml,
    HtmlMessage,
    HtmlTagExists(String),
    HtmlImageOnly(usize, usize),
    MimeBase64Text,
    MimeAttachment,
    MimeBase64,
    MimeQp,
    /// The envelope sender's domain is the first untrusted relay's
    /// reverse DNS domain (HeaderEval::check_mailfrom_matches_rcvd).
    MailfromMatchesRcvd,
    /// Mail whose Received headers a list or service removed.
    GatedThroughReceivedRemover,
    /// HTMLEval::html_tag_balance: opened minus closed tags of a name,
    /// compared with a number.
    HtmlTagBalance(String, BinOp, i64),
    /// Hours, `None` for `undef`.
    ShiftedDate(Option<f64>, Option<f64>),
    SubjectAllCaps,
    MissingTo,
    OutlookMessageId,
    MatchingEnvAndHdrFrom,
    Uppercase(f64, f64),
    BodyLength(usize),
    HeaderCount(String, usize, usize),
    FreemailFrom(Arc<Freemail>, Option<regex::Regex>),
    FreemailHeader(Arc<Freemail>, String, Option<regex::Regex>),
    FreemailReplyTo(Arc<Freemail>),
    /// WLBLEval's `check_from_in_list('NAME')`: a sender address in an
    /// `enlist_addrlist` list.
    FromInList(Arc<AddrLists>, String),
    /// Every relay trusted (HeaderEval::check_all_trusted).
    AllTrusted,
    NoRelays,
    RelaysUnparseable,
    /// An untrusted relay's HELO is an address outside its /24.
    HeloIpMismatch,
    /// A big mail provider's HELO from an address without reverse DNS.
    NoRdnsDotcomHelo,
    /// A result of mxrack's own authentication checks (`DMARC_REJECT`).
    AuthMark(&'static str),
}

/// Tests that ask the network (DNS lists, SPF, DKIM, Razor, ...): with
/// network tests off, SpamAssassin's set 2, they never hit, so rules using
/// them are known not to hit (not unknown).
pub fn is_network_test(func: &str) -> bool {
    const PREFIXES: [&str; 14] = [
        "check_rbl",
        "check_uridnsbl",
        "check_dns_sender",
        "check_razor",
        "check_pyzor",
        "check_dcc",
        "check_spf",
        "check_for_spf",
        "check_dkim",
        "check_for_dkim",
        "check_for_def_",
        "check_arc",
        "check_hashbl",
        "check_dmarc",
    ];
    PREFIXES.iter().any(|p| func.starts_with(p))
        || matches!(
            func,
            "check_senders_reputation"
                | "check_from_in_auto_welcomelist"
                | "check_from_in_auto_whitelist"
                | "check_access_database"
                | "check_uri_host_in_blocklist"
                | "check_uri_host_in_blacklist"
                | "check_uri_host_in_welcomelist"
                | "check_uri_host_in_whitelist"
                | "check_shortcircuit"
        )
}

/// Splits `name('a', 'b')` into the name and its unquoted arguments.
fn call(text: &str) -> Option<(&str, Vec<String>)> {
    let open = text.find('(')?;
    let name = text[..open].trim();
    let inner = text[open + 1..].trim_end().strip_suffix(')')?;
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in inner.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ',') => {
                args.push(std::mem::take(&mut cur).trim().to_string());
                if args.len() > ARGS_MAX {
                    return None;
                }
            }
            (_, c) => cur.push(c),
        }
    }
    if !cur.trim().is_empty() || !args.is_empty() {
        args.push(cur.trim().to_string());
    }
    Some((name, args))
}

fn hours(s: &str) -> Option<Option<f64>> {
    if s == "undef" {
        Some(None)
    } else {
        s.parse().ok().map(Some)
    }
}

impl Eval {
    /// The eval call after `eval:` (e.g. `check_for_shifted_date('-6',
    /// '-3')`); `Err` names what mxrack does not run.
    pub fn parse(
        text: &str,
        freemail: &Arc<Freemail>,
        addrlists: &Arc<AddrLists>,
    ) -> Result<Eval, String> {
        let (name, args) = call(text).ok_or_else(|| "eval:?".to_string())?;
        let unsupported = || format!("eval:{name}");
        let arg = |i: usize| args.get(i).map(String::as_str);
        let num = |i: usize| arg(i).and_then(|a| a.parse::<f64>().ok());
        let pattern = |i: usize| -> Result<Option<regex::Regex>, String> {
            match arg(i) {
                None | Some("") => Ok(None),
                Some(p) => regex::RegexBuilder::new(p)
                    .case_insensitive(true)
                    .build()
                    .map(Some)
                    .map_err(|_| unsupported()),
            }
        };
        Ok(match name {
            "check_equal_from_domains" => Eval::EqualFromDomains,
            "check_for_mime_html_only" => Eval::MimeHtmlOnly,
            "check_for_mime_html" => Eval::MimeHtml,
            "html_test" if arg(0) == Some("html") => Eval::HtmlMessage,
            "html_tag_exists" => Eval::HtmlTagExists(
                arg(0)
                    .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric()))
                    .ok_or_else(unsupported)?
                    .to_ascii_lowercase(),
            ),
            "html_image_only" => Eval::HtmlImageOnly(
                num(0).ok_or_else(unsupported)? as usize,
                num(1).ok_or_else(unsupported)? as usize,
            ),
            "check_for_mime" => match arg(0) {
                Some("mime_base64_encoded_text") => Eval::MimeBase64Text,
                Some("mime_attachment") => Eval::MimeAttachment,
                Some("mime_base64_count") => Eval::MimeBase64,
                Some("mime_qp_count") => Eval::MimeQp,
                _ => return Err(format!("eval:{name}('{}')", arg(0).unwrap_or(""))),
            },
            "check_for_shifted_date" => Eval::ShiftedDate(
                arg(0).and_then(hours).ok_or_else(unsupported)?,
                arg(1).and_then(hours).ok_or_else(unsupported)?,
            ),
            "subject_is_all_caps" => Eval::SubjectAllCaps,
            "check_for_missing_to_header" => Eval::MissingTo,
            "check_outlook_message_id" => Eval::OutlookMessageId,
            "check_for_matching_env_and_hdr_from" => Eval::MatchingEnvAndHdrFrom,
            "check_for_uppercase" => Eval::Uppercase(
                num(0).ok_or_else(unsupported)?,
                num(1).ok_or_else(unsupported)?,
            ),
            "check_body_length" => Eval::BodyLength(num(0).ok_or_else(unsupported)? as usize),
            "check_header_count_range" => Eval::HeaderCount(
                arg(0).ok_or_else(unsupported)?.to_string(),
                num(1).ok_or_else(unsupported)? as usize,
                num(2).ok_or_else(unsupported)? as usize,
            ),
            "check_freemail_from" => Eval::FreemailFrom(freemail.clone(), pattern(0)?),
            "check_freemail_header" => Eval::FreemailHeader(
                freemail.clone(),
                arg(0).ok_or_else(unsupported)?.to_string(),
                pattern(1)?,
            ),
            "check_freemail_replyto" => Eval::FreemailReplyTo(freemail.clone()),
            "check_from_in_list" => {
                let list = arg(0).filter(|a| !a.is_empty()).ok_or_else(unsupported)?;
                if addrlists.failed.contains(list) {
                    return Err(format!("eval:{name} (list {list} does not compile)"));
                }
                Eval::FromInList(addrlists.clone(), list.to_string())
            }
            "check_all_trusted" => Eval::AllTrusted,
            "check_mailfrom_matches_rcvd" => Eval::MailfromMatchesRcvd,
            "gated_through_received_hdr_remover" => Eval::GatedThroughReceivedRemover,
            "html_tag_balance" => {
                let tag = arg(0)
                    .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric()))
                    .ok_or_else(unsupported)?
                    .to_ascii_lowercase();
                let expr = arg(1).unwrap_or("").trim();
                let (op, n) = [
                    ("!=", BinOp::Ne),
                    ("==", BinOp::Eq),
                    (">=", BinOp::Ge),
                    ("<=", BinOp::Le),
                    (">", BinOp::Gt),
                    ("<", BinOp::Lt),
                ]
                .into_iter()
                .find_map(|(t, op)| expr.strip_prefix(t).map(|n| (op, n)))
                .ok_or_else(unsupported)?;
                let n = n.trim().parse::<i64>().map_err(|_| unsupported())?;
                Eval::HtmlTagBalance(tag, op, n)
            }
            "check_no_relays" => Eval::NoRelays,
            "check_relays_unparseable" => Eval::RelaysUnparseable,
            "helo_ip_mismatch" => Eval::HeloIpMismatch,
            "check_for_no_rdns_dotcom_helo" => Eval::NoRdnsDotcomHelo,
            // mxrack's MX checks DMARC itself (mxrack_mailauth).
            "check_dmarc_reject" => Eval::AuthMark("DMARC_REJECT"),
            "check_dmarc_quarantine" => Eval::AuthMark("DMARC_QUARANTINE"),
            _ => return Err(unsupported()),
        })
    }

    /// Runs the test on a message (`relays`: its relays, worked out once).
    pub fn run(
        &self,
        v: &MailView,
        envelope_from: &str,
        now: i64,
        relays: &crate::relays::Relays,
    ) -> bool {
        match self {
            Eval::AllTrusted => {
                !relays.trusted.is_empty() && relays.untrusted.is_empty() && relays.unparseable == 0
            }
            Eval::NoRelays => relays.trusted.is_empty() && relays.untrusted.is_empty(),
            Eval::FromInList(lists, name) => from_addresses(v, envelope_from)
                .iter()
                .any(|a| lists.contains(name, a)),
            Eval::RelaysUnparseable => relays.unparseable > 0,
            // HeaderEval::helo_ip_mismatch: an address as HELO, public,
            // not the relay's own and outside its /24.
            Eval::HeloIpMismatch => relays.untrusted.iter().any(|r| {
                let (Ok(helo), Ok(ip)) = (r.helo.parse::<IpAddr>(), r.ip.parse::<IpAddr>()) else {
                    return false;
                };
                let slash24 = |a: &IpAddr| match a {
                    IpAddr::V4(v4) => Some([v4.octets()[0], v4.octets()[1], v4.octets()[2]]),
                    IpAddr::V6(_) => None,
                };
                !crate::relays::is_private(&helo)
                    && !crate::relays::is_private(&ip)
                    && helo != ip
                    && slash24(&helo).is_some()
                    && slash24(&helo) != slash24(&ip)
            }),
            // HeaderEval::check_for_no_rdns_dotcom_helo.
            Eval::NoRdnsDotcomHelo => relays.untrusted.iter().any(|r| {
                const DOTCOMS: [&str; 11] = [
                    "lycos.com",
                    "lycos.co.uk",
                    "hotmail.com",
                    "localhost.com",
                    "excite.com",
                    "caramail.com",
                    "cs.com",
                    "aol.com",
                    "msn.com",
                    "yahoo.com",
                    "drizzle.com",
                ];
                let helo = r.helo.to_ascii_lowercase();
                let private =
                    r.ip.parse::<IpAddr>()
                        .is_ok_and(|ip| crate::relays::is_private(&ip));
                !private
                    && r.no_rdns
                    && DOTCOMS
                        .iter()
                        .any(|d| helo == *d || helo.ends_with(&format!(".{d}")))
            }),
            Eval::AuthMark(mark) => v.auth_marks.iter().any(|m| m == mark),
            // HeaderEval::check_equal_from_domains: the From and envelope
            // sender domains differ (organisational domains).
            Eval::EqualFromDomains => {
                let from = address_of(v, "From");
                match (domain_of(&from), domain_of(envelope_from)) {
                    (Some(a), Some(b)) => org_domain(&a) != org_domain(&b),
                    _ => false,
                }
            }
            Eval::MimeHtmlOnly => v.has_html && !v.has_text_plain,
            Eval::MimeHtml | Eval::HtmlMessage => v.has_html,
            Eval::HtmlTagExists(tag) => v.has_html && has_tag(&v.html_raw, tag),
            // HTMLEval::html_image_only: images, and min < text <= max.
            Eval::HtmlImageOnly(min, max) => {
                v.has_html && v.html_images > 0 && v.html_len > *min && v.html_len <= *max
            }
            Eval::MimeBase64Text => v.base64_ascii_text,
            Eval::MimeAttachment => v.attachments > 0,
            Eval::MimeBase64 => v.base64_parts,
            Eval::MimeQp => v.qp_parts,
            Eval::MailfromMatchesRcvd => {
                let Some(domain) = domain_of(envelope_from) else {
                    return false;
                };
                let tried: Vec<&crate::relays::Relay> = match relays.untrusted.first() {
                    Some(first) => vec![first],
                    None => relays.trusted.iter().collect(),
                };
                tried.iter().any(|r| {
                    !r.rdns.is_empty()
                        && org_domain(&r.rdns.to_ascii_lowercase()) == org_domain(&domain)
                })
            }
            Eval::GatedThroughReceivedRemover => {
                let received: Vec<&str> = v
                    .headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case("Received"))
                    .map(|h| h.raw.as_str())
                    .collect();
                let ezmlm = v.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("Mailing-List")
                        && h.raw.starts_with("contact ")
                        && h.raw.ends_with("; run by ezmlm")
                }) && v.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("Delivered-To")
                        && h.raw.starts_with("mailing list ")
                }) && received
                    .iter()
                    .any(|r| r.contains("qmail ") && r.contains(" invoked "));
                ezmlm
                    || received.is_empty()
                    || received
                        .iter()
                        .any(|r| r.starts_with("from groups.msn.com ("))
            }
            Eval::HtmlTagBalance(tag, op, n) => {
                if !v.has_html {
                    return false;
                }
                let opened = count_tag(&v.html_raw, &format!("<{tag}")) as i64;
                let closed = count_tag(&v.html_raw, &format!("</{tag}")) as i64;
                if opened == 0 && closed == 0 {
                    return false;
                }
                op.compare((opened - closed) as f64, *n as f64) == Some(true)
            }
            // HeaderEval::check_for_shifted_date: Date minus the time of
            // receipt, in hours, within [min, max).
            // (SpamAssassin takes the Received header whose time is closest
            // to the Date; the time of scoring when none has one.)
            Eval::ShiftedDate(min, max) => {
                let Some(date) = v.date else { return false };
                let diff = v
                    .received_dates
                    .iter()
                    .map(|r| date - r)
                    .min_by_key(|d| d.unsigned_abs())
                    .unwrap_or(date - now) as f64
                    / 3600.0;
                min.is_none_or(|m| diff >= m) && max.is_none_or(|m| diff < m)
            }
            Eval::SubjectAllCaps => subject_all_caps(v),
            Eval::MissingTo => !v.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("To") || h.name.eq_ignore_ascii_case("Apparently-To")
            }),
            Eval::OutlookMessageId => outlook_message_id(v),
            Eval::MatchingEnvAndHdrFrom => {
                let from = address_of(v, "From");
                !from.is_empty() && from.eq_ignore_ascii_case(envelope_from.trim())
            }
            Eval::Uppercase(min, max) => {
                uppercase_percent(&v.text).is_some_and(|p| p > *min && p <= *max)
            }
            Eval::BodyLength(max) => body_length(&v.full) <= *max,
            Eval::HeaderCount(name, min, max) => {
                let n = v
                    .headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case(name))
                    .count();
                n >= *min && n <= *max
            }
            Eval::FreemailFrom(fm, re) => {
                let from = address_of(v, "From");
                fm.is_freemail(&from) && re.as_ref().is_none_or(|r| r.is_match(&from))
            }
            Eval::FreemailHeader(fm, header, re) => {
                let name = header.strip_suffix(":addr").unwrap_or(header);
                let addr = if name == "EnvelopeFrom" {
                    envelope_from.trim().to_string()
                } else {
                    address_of(v, name)
                };
                fm.is_freemail(&addr) && re.as_ref().is_none_or(|r| r.is_match(&addr))
            }
            // FreeMail::check_freemail_replyto: From and Reply-To both free
            // mail addresses, and not the same one. (The 'reply' form also
            // looks at addresses in the body; not done here.)
            Eval::FreemailReplyTo(fm) => {
                let from = address_of(v, "From");
                let reply = address_of(v, "Reply-To");
                fm.is_freemail(&reply)
                    && fm.is_freemail(&from)
                    && !from.eq_ignore_ascii_case(&reply)
            }
        }
    }
}

/// The first address of the first `name` header, as written.
fn address_of(v: &MailView, name: &str) -> String {
    v.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| crate::sa::first_address(&h.raw))
        .unwrap_or_default()
}

/// PerMsgStatus::all_from_addrs: every address of Resent-From when it has
/// one; else From's, Envelope-Sender's, Resent-Sender's, X-Envelope-From's
/// and the envelope sender, runs of dots squeezed (bug 3366 there).
fn from_addresses(v: &MailView, envelope_from: &str) -> Vec<String> {
    if let Some(resent) = v
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("Resent-From") && !h.raw.trim().is_empty())
    {
        return resent
            .raw
            .split([',', ' ', '<', '>', '"', '(', ')', ';'])
            .filter(|w| w.contains('@'))
            .map(str::to_string)
            .collect();
    }
    let squeeze = |a: String| {
        let mut out = String::with_capacity(a.len());
        for c in a.chars() {
            if !(c == '.' && out.ends_with('.')) {
                out.push(c);
            }
        }
        out
    };
    [
        "From",
        "Envelope-Sender",
        "Resent-Sender",
        "X-Envelope-From",
    ]
    .iter()
    .map(|h| address_of(v, h))
    .chain(std::iter::once(envelope_from.to_string()))
    .filter(|a| !a.is_empty())
    .map(squeeze)
    .collect()
}

fn domain_of(addr: &str) -> Option<String> {
    let (_, d) = addr.trim().trim_matches(['<', '>']).rsplit_once('@')?;
    let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
    (!d.is_empty()).then_some(d)
}

/// The last two labels, as HeaderEval::check_equal_from_domains compares
/// them (`co.uk` included).
fn org_domain(d: &str) -> String {
    let labels: Vec<&str> = d.split('.').collect();
    labels[labels.len().saturating_sub(2)..].join(".")
}

/// HeaderEval::subject_is_all_caps: a Subject of several words and ten
/// characters or more (after `Re:`/`Fwd:`), whose ASCII letters are all
/// capitals; not one written in another charset.
fn subject_all_caps(v: &MailView) -> bool {
    let Some(raw) = v
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("Subject"))
    else {
        return false;
    };
    if raw.raw.contains("=?") && !raw.raw.to_ascii_lowercase().contains("=?us-ascii?") {
        return false;
    }
    let mut s = raw.value.trim();
    loop {
        let lower = s.to_ascii_lowercase();
        let Some(p) = ["re:", "fwd:", "fw:", "aw:", "antwort:", "sv:"]
            .iter()
            .find(|p| lower.starts_with(*p))
        else {
            break;
        };
        s = s[p.len()..].trim_start();
    }
    if !s.contains(char::is_whitespace) || s.len() < 10 {
        return false;
    }
    let letters: Vec<char> = s.chars().filter(char::is_ascii_alphabetic).collect();
    !letters.is_empty() && letters.iter().all(char::is_ascii_uppercase)
}

/// Occurrences of `open` (`<center`, `</center`) followed by a character
/// that ends a tag name, case-insensitive.
fn count_tag(html: &str, open: &str) -> usize {
    let lower = html.to_ascii_lowercase();
    lower
        .match_indices(open)
        .filter(|(i, _)| {
            lower[i + open.len()..]
                .bytes()
                .next()
                .is_none_or(|b| !b.is_ascii_alphanumeric())
        })
        .count()
}

fn has_tag(html: &str, tag: &str) -> bool {
    let lower = html.to_ascii_lowercase();
    let open = format!("<{tag}");
    lower.match_indices(&open).any(|(i, _)| {
        lower[i + open.len()..]
            .bytes()
            .next()
            .is_none_or(|b| !b.is_ascii_alphanumeric())
    })
}

/// The body's length in bytes as it came (after the header section).
fn body_length(full: &str) -> usize {
    full.find("\r\n\r\n")
        .map(|i| full.len() - i - 4)
        .or_else(|| full.find("\n\n").map(|i| full.len() - i - 2))
        .unwrap_or(0)
}

/// BodyEval::check_for_uppercase: the share of capitals among the letters
/// of lines with words, for bodies of at least 200 such letters.
fn uppercase_percent(text: &str) -> Option<f64> {
    let (mut upper, mut lower, mut len) = (0usize, 0usize, 0usize);
    for line in text.lines() {
        let t = line.trim();
        if !t.contains(char::is_whitespace) {
            continue;
        }
        for c in t.chars().filter(|c| !c.is_whitespace()) {
            len += 1;
            // (SpamAssassin counts digits with the small letters.)
            if c.is_ascii_uppercase() {
                upper += 1;
            } else if c.is_ascii_lowercase() || c.is_ascii_digit() {
                lower += 1;
            }
        }
    }
    if len < 200 || upper + lower == 0 {
        return None;
    }
    Some(100.0 * upper as f64 / (upper + lower) as f64)
}

/// HeaderEval::check_outlook_message_id: Outlook's Message-ID carries its
/// clock; one that disagrees with the Date (and the newest Received) by
/// 250 ticks or more was not made by Outlook.
fn outlook_message_id(v: &MailView) -> bool {
    let Some(id) = v
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("Message-ID"))
        .map(|h| h.raw.trim().to_string())
    else {
        return false;
    };
    // <hhhh TTTTTTTT $ xxxxxxxx $ xxxxxxxx @
    let b = id.as_bytes();
    // Small hex digits only, as SpamAssassin's /[0-9a-f]/.
    let hex = |r: std::ops::Range<usize>| {
        b.get(r.clone()).is_some_and(|s| {
            s.iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
        })
    };
    if !(b.first() == Some(&b'<')
        && hex(1..13)
        && b.get(13) == Some(&b'$')
        && hex(14..22)
        && b.get(22) == Some(&b'$')
        && hex(23..31)
        && b.get(31) == Some(&b'@'))
    {
        return false;
    }
    let Ok(token) = i64::from_str_radix(&id[5..13], 16) else {
        return false;
    };
    const X: f64 = 0.0023283064365387;
    const Y: f64 = 27111902.8329849;
    const FUDGE: i64 = 250;
    let off = |t: i64| (token - (t as f64 * X + Y) as i64).abs() >= FUDGE;
    if !off(v.date.unwrap_or(0)) {
        return false;
    }
    off(v.received_date.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_030_018_700;

    fn view(msg: &str) -> MailView {
        MailView::parse(msg.replace('\n', "\r\n").as_bytes())
    }

    fn fm() -> Arc<Freemail> {
        Arc::new(Freemail {
            domains: ["gmail.com".to_string(), "yahoo.com".to_string()].into(),
            wildcards: regex::Regex::new(r"^(?:[^.]*\.yahoo\.co\.uk|hotmail\.[^.]*)$").ok(),
            welcome: ["boss@gmail.com".to_string()].into(),
        })
    }

    fn lists() -> Arc<AddrLists> {
        let mut l = AddrLists::default();
        l.enlist("GOV", &["*@*.gov", "*@parliament.uk"]);
        l.enlist(
            "PAYPAL",
            &["*@paypal.com", "*@*.paypal.com", "service?@pp.example"],
        );
        l.compile();
        Arc::new(l)
    }

    fn run(call: &str, msg: &str, env: &str) -> bool {
        let v = view(msg);
        let relays = crate::relays::relays(&v, None, &Default::default());
        Eval::parse(call, &fm(), &lists())
            .expect(call)
            .run(&v, env, NOW, &relays)
    }

    #[test]
    fn from_in_list_looks_up_every_sender_address() {
        let gov = "From: Tax Office <refunds@irs.gov>\nTo: a@b.c\n\nrefund\n";
        assert!(run("check_from_in_list('GOV')", gov, ""));
        assert!(!run("check_from_in_list('PAYPAL')", gov, ""));
        // `*@*.gov` needs a dot before gov: irs.gov is under it, gov.example not.
        let other = "From: x@gov.example\nTo: a@b.c\n\nhi\n";
        assert!(!run("check_from_in_list('GOV')", other, ""));
        // The envelope sender counts, `?` is one character, case is ignored.
        assert!(run(
            "check_from_in_list('PAYPAL')",
            other,
            "Service1@PP.example"
        ));
        assert!(!run(
            "check_from_in_list('PAYPAL')",
            other,
            "service12@pp.example"
        ));
        assert!(run(
            "check_from_in_list('PAYPAL')",
            other,
            "x@mail..paypal.com"
        ));
        // Resent-From, when there, is what is looked at.
        let resent = "Resent-From: clerk@parliament.uk\nFrom: x@gov.example\n\nhi\n";
        assert!(run("check_from_in_list('GOV')", resent, ""));
        // A list nobody enlisted holds nothing; no name is not a test.
        assert!(!run("check_from_in_list('BANKS')", gov, ""));
        assert!(Eval::parse("check_from_in_list()", &fm(), &lists()).is_err());
        // A list too large to compile leaves its rules out (counted by the
        // reader), rather than running them as if it were empty.
        let mut huge = AddrLists::default();
        let globs: Vec<String> = (0..ADDRLIST_ENTRIES_MAX)
            .map(|i| format!("*@*.d{i}-{}.example", "x".repeat(40)))
            .collect();
        huge.enlist(
            "HUGE",
            &globs.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        huge.compile();
        let e = Eval::parse("check_from_in_list('HUGE')", &fm(), &Arc::new(huge))
            .expect_err("an uncompiled list");
        assert!(e.contains("does not compile"), "{e}");
    }

    #[test]
    fn mime_counts_tag_balance_and_envelope_matching_the_relay() {
        let qp =
            "From: a@b.c\nTo: d@e.f\nContent-Transfer-Encoding: quoted-printable\n\nhi=20there\n";
        assert!(run("check_for_mime('mime_qp_count')", qp, ""));
        assert!(!run("check_for_mime('mime_base64_count')", qp, ""));
        let html = "From: a@b.c\nTo: d@e.f\nContent-Type: text/html\n\n<html><body><center>x</body></html>\n";
        assert!(run("html_tag_balance('center', '!= 0')", html, ""));
        assert!(!run("html_tag_balance('body', '!= 0')", html, ""));
        let m = "Received: from out.example.com (out.example.com [198.51.100.7]) by mx.example.net\nFrom: a@b.c\n\nhi\n";
        assert!(run(
            "check_mailfrom_matches_rcvd()",
            m,
            "bounce@lists.example.com"
        ));
        assert!(!run("check_mailfrom_matches_rcvd()", m, "x@other.org"));
        assert!(run(
            "gated_through_received_hdr_remover()",
            "From: a@b.c\n\nhi\n",
            ""
        ));
        assert!(!run("gated_through_received_hdr_remover()", m, ""));
    }

    #[test]
    fn relay_tests() {
        let m = "Received: from mx02.hotmail.com (unknown [198.51.100.7]) by mx.example.net\nReceived: from pc (pc [10.1.1.1]) by mx02\nFrom: a@b.c\n\nhi\n";
        assert!(run("check_for_no_rdns_dotcom_helo()", m, ""));
        assert!(!run("check_all_trusted()", m, ""));
        let m = "Received: from 203.0.113.9 (host.example [198.51.100.7]) by mx.example.net\nFrom: a@b.c\n\nhi\n";
        assert!(run("helo_ip_mismatch()", m, ""));
        let m = "Received: from a (a [10.0.0.1]) by b\nReceived: from localhost by b\nFrom: a@b.c\n\nhi\n";
        assert!(run("check_all_trusted()", m, ""));
        assert!(run("check_no_relays()", "From: a@b.c\n\nhi\n", ""));
        assert!(run(
            "check_relays_unparseable()",
            "Received: from host.example by b\n\nhi\n",
            ""
        ));
        assert!(is_network_test("check_rbl_sub") && !is_network_test("check_stock_info"));
    }

    #[test]
    fn calls_parse_with_quoted_arguments() {
        assert_eq!(
            call("check_for_shifted_date('-6', '-3')"),
            Some(("check_for_shifted_date", vec!["-6".into(), "-3".into()]))
        );
        assert_eq!(call("html_test('html')").unwrap().1, vec!["html"]);
        assert_eq!(
            call("subject_is_all_caps()").unwrap().1,
            Vec::<String>::new()
        );
        assert!(Eval::parse("check_rbl('x', 'y')", &fm(), &lists()).is_err());
        assert!(Eval::parse("check_for_mime('mime_qp_long_line')", &fm(), &lists()).is_err());
    }

    #[test]
    fn from_domains_and_envelope() {
        let m = "From: a@news.example.com\nTo: b@example.net\n\nhi\n";
        assert!(!run(
            "check_equal_from_domains()",
            m,
            "bounce@mail.example.com"
        ));
        assert!(run("check_equal_from_domains()", m, "bounce@other.org"));
        assert!(!run("check_equal_from_domains()", m, ""));
        assert!(run(
            "check_for_matching_env_and_hdr_from()",
            m,
            "A@news.example.com"
        ));
        assert_eq!(org_domain("a.b.example.co.uk"), "co.uk");
    }

    #[test]
    fn dates_shifted_against_receipt() {
        let m = "Received: from x by y; Mon, 26 Aug 2002 12:00:00 +0000\nDate: Mon, 26 Aug 2002 20:00:00 +0000\nFrom: a@b.c\n\nhi\n";
        assert!(run("check_for_shifted_date('6', '12')", m, ""));
        assert!(!run("check_for_shifted_date('-6', '-3')", m, ""));
        assert!(run("check_for_shifted_date('3', 'undef')", m, ""));
    }

    #[test]
    fn freemail_tests() {
        let m = "From: Someone <joe123@gmail.com>\nReply-To: other@yahoo.com\nTo: x@example.net\n\nhi\n";
        assert!(run("check_freemail_from()", m, ""));
        assert!(run("check_freemail_from('\\d@')", m, ""));
        assert!(run("check_freemail_replyto('replyto')", m, ""));
        assert!(run(
            "check_freemail_header('EnvelopeFrom', '\\d@')",
            m,
            "x9@mail.yahoo.co.uk"
        ));
        assert!(!run(
            "check_freemail_header('EnvelopeFrom')",
            m,
            "x@example.org"
        ));
        assert!(run(
            "check_freemail_from()",
            "From: x@hotmail.fr\n\nhi\n",
            ""
        ));
        assert!(!run(
            "check_freemail_from()",
            "From: x@hotmail.co.uk\n\nhi\n",
            ""
        ));
        let mut f = Freemail::default();
        f.add_domains(&["hotmail.*".into(), "*.att.ne.jp".into(), "gmx.de".into()]);
        f.add_domains(&["aol.co*.*".into()]);
        assert!(f.is_freemail("a@hotmail.com") && f.is_freemail("a@x.att.ne.jp"));
        assert!(f.is_freemail("a@gmx.de") && f.is_freemail("a@aol.co.uk"));
        assert!(!f.is_freemail("a@att.ne.jp") && !f.is_freemail("a@example.com"));
        let boss = "From: boss@gmail.com\nTo: x@example.net\n\nhi\n";
        assert!(!run("check_freemail_from()", boss, ""));
    }

    #[test]
    fn mime_html_and_body_tests() {
        let html = "From: a@b.c\nTo: d@e.f\nContent-Type: text/html\n\n<html><body><center><img src=x></center></body></html>\n";
        assert!(run("check_for_mime_html_only()", html, ""));
        assert!(run("html_test('html')", html, ""));
        assert!(run("html_tag_exists('center')", html, ""));
        assert!(!run("html_tag_exists('script')", html, ""));
        let img = "From: a@b.c\nTo: d@e.f\nContent-Type: text/html\n\n<html><body><img src=x>Buy now</body></html>\n";
        assert!(run("html_image_only('0000','0400')", img, ""));
        assert!(!run("html_image_only('0400','0800')", img, ""));
        // The HTML source's length is what counts.
        let long = format!(
            "From: a@b.c\nTo: d@e.f\nContent-Type: text/html\n\n<html><body><img src=x>{}</body></html>\n",
            "<p>x</p>".repeat(60)
        );
        assert!(!run("html_image_only('0000','0400')", &long, ""));
        assert!(run("html_image_only('0400','0800')", &long, ""));
        assert!(run("check_body_length('128')", html, ""));
        let caps = format!(
            "From: a@b.c\nTo: d@e.f\n\n{}\n",
            "BUY NOW CHEAP STUFF ".repeat(20)
        );
        assert!(run("check_for_uppercase('75', '100')", &caps, ""));
        assert!(!run("check_for_uppercase('0', '50')", &caps, ""));
        assert!(run(
            "check_for_missing_to_header()",
            "From: a@b.c\n\nhi\n",
            ""
        ));
        assert!(run(
            "check_header_count_range('Subject','2','999')",
            "Subject: a\nSubject: b\n\nhi\n",
            ""
        ));
    }

    #[test]
    fn outlook_ids_with_the_wrong_clock() {
        // A token matching neither the Date nor the Received time.
        let forged = "Message-ID: <000001c2a1b2$00000000$0100a8c0@pc>\nDate: Mon, 26 Aug 2002 12:00:00 +0000\n\nhi\n";
        assert!(run("check_outlook_message_id()", forged, ""));
        // The token Outlook would have written at that Date.
        let t = (1_030_363_200f64 * 0.0023283064365387 + 27111902.8329849) as i64;
        let good = format!(
            "Message-ID: <0000{t:08x}$00000000$0100a8c0@pc>\nDate: Mon, 26 Aug 2002 12:00:00 +0000\n\nhi\n"
        );
        assert!(!run("check_outlook_message_id()", &good, ""));
    }
}
