//! SpamAssassin rule files (`*.cf`, as Debian's spamassassin package ships
//! them in /usr/share/spamassassin) read into a [`RuleSet`], so mxrack can
//! score with SpamAssassin's rules and their fitted scores beside its own
//! classifier (as rspamd's spamassassin module does).
//!
//! What is read (Mail::SpamAssassin::Conf):
//! * `header`, `body`, `rawbody`, `uri`, `full` rules with a Perl pattern
//!   (`/re/flags`, `m{re}flags`); header rules with `=~`, `!~`,
//!   `exists:`, the `:raw`, `:addr` and `:name` forms, `[if-unset: ...]`,
//!   and the pseudo-headers `ALL`, `ToCc`, `EnvelopeFrom`, `MESSAGEID`;
//! * `mimeheader` rules (the MIMEHeader plugin): `Header[:raw] =~ /re/` or
//!   `!~` over each MIME part's first header of that name, the message's
//!   own header first ([`HeaderRule::mime_hits`]);
//! * `meta` rules: Perl expressions over rule names with `&& || !`,
//!   `+ - * /` and comparisons, metas of metas included;
//! * `score NAME s0 [s1 s2 s3]`: the score of set 2 (Bayes on, network
//!   tests off), which is how mxrack runs; one value is every set's. A
//!   rule without a score gets 1.0 (`T_` test rules 0.01, `__` sub-rules
//!   none: they only feed metas and are never reported); a zero score
//!   disables the rule, and metas then see it as not hit, as in
//!   SpamAssassin;
//! * `body BAYES_* eval:check_bayes(...)`: the classifier's bands with
//!   SpamAssassin's scores (BAYES_999 adds to BAYES_99 there, so mxrack's
//!   single BAYES_999 band gets both);
//! * `replace_tag`/`replace_pre`/`replace_inter`/`replace_post` and
//!   `replace_rules`; `if`/`ifplugin`/`else`/`endif` (every block is read:
//!   mxrack stands for SpamAssassin 4.0 with all plugins loaded, so the
//!   last definition of a rule wins).
//!
//! What is left out, counted by reason in [`SaRules::skipped`]: `eval:`
//! rules (code in SpamAssassin's Perl plugins, except the Bayes bands),
//! `mimeheader` rules of forms the MIMEHeader plugin does not have
//! (`exists:`, `:addr`), rules on pseudo-headers mxrack does not make
//! (`X-Spam-Relays-*`, `ALL-TRUSTED`, ...), and patterns neither regex
//! engine takes. Patterns use the `regex` crate (bytes, ASCII classes, as
//! SpamAssassin matches octets) and, for lookaround and backreferences,
//! `fancy-regex` with a backtracking limit, so no message can make a rule
//! run long; a pattern that reaches the limit does not hit.
//!
//! Everything here runs on operator files, not on mail: limits
//! ([`FILES_MAX`], [`FILE_BYTES_MAX`], [`SA_RULES_MAX`],
//! [`META_DEPTH_MAX`]) still bound them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use crate::FilterError;
use crate::bayes::BANDS;
use crate::message::MailView;
use crate::rules::{Rule, RuleKind, RuleSet};
use crate::sa_eval::{Eval, Freemail};
use std::sync::Arc;

/// Most `.cf` files read from the folder.
pub const FILES_MAX: usize = 300;
/// Largest `.cf` file read.
pub const FILE_BYTES_MAX: u64 = 4 << 20;
/// Most rules kept from a folder (SpamAssassin 4.0 ships about 3,000).
pub const SA_RULES_MAX: usize = 8_000;
/// Deepest nesting of a meta expression (and of `if` blocks).
pub const META_DEPTH_MAX: usize = 64;
/// Most tokens in one meta expression.
const META_TOKENS_MAX: usize = 4_000;
/// Largest compiled pattern (regex's own measure), as for mxrack's rules.
const PATTERN_SIZE_MAX: usize = 1 << 20;
/// Backtracking steps a fancy pattern may take on one text.
const BACKTRACK_LIMIT: usize = 200_000;
/// SpamAssassin's score set for Bayes on, network tests off.
const SCORE_SET: usize = 2;

/// Most matches a `tflags multiple` rule counts when it names no
/// `maxhits`.
pub const MAX_HITS_CAP: u32 = 1_000;

/// The engine a compiled Perl pattern runs on.
#[derive(Debug, Clone)]
pub enum Engine {
    /// The `regex` crate on bytes: linear time.
    Plain(regex::bytes::Regex),
    /// Lookaround or backreferences: `fancy-regex`, bounded backtracking.
    Fancy(Box<fancy_regex::Regex>),
}

/// A compiled Perl pattern, and how many matches its rule counts (1, or
/// `maxhits` for `tflags multiple`).
#[derive(Debug, Clone)]
pub struct Pattern {
    pub engine: Engine,
    pub max_hits: u32,
}

impl Pattern {
    /// How many times the pattern matches `text`, up to `max_hits`; `None`
    /// when a fancy pattern reached its backtracking limit before a first
    /// match (the answer is unknown).
    pub fn hits(&self, text: &str) -> Option<u32> {
        let max = self.max_hits.max(1) as usize;
        match &self.engine {
            Engine::Plain(r) if max == 1 => Some(u32::from(r.is_match(text.as_bytes()))),
            Engine::Plain(r) => Some(r.find_iter(text.as_bytes()).take(max).count() as u32),
            Engine::Fancy(r) => {
                let mut n = 0u32;
                for m in r.find_iter(text).take(max) {
                    match m {
                        Ok(_) => n += 1,
                        Err(_) if n == 0 => return None,
                        Err(_) => break,
                    }
                }
                Some(n)
            }
        }
    }

    /// True when the pattern matches `text` (an unknown answer is false).
    pub fn is_match(&self, text: &str) -> bool {
        self.hits(text).is_some_and(|n| n > 0)
    }

    /// Compiles a Perl pattern body with its flags (`i`, `m`, `s`, `x`;
    /// others ignored). `multi_line`: `^`/`$` at every line even without
    /// `m` (body and rawbody rules, which SpamAssassin runs line by line
    /// or paragraph by paragraph).
    pub fn compile(perl: &str, flags: &str, multi_line: bool) -> Result<Pattern, String> {
        let re = translate(perl)?;
        let (i, m, s, x) = (
            flags.contains('i'),
            multi_line || flags.contains('m'),
            flags.contains('s'),
            flags.contains('x'),
        );
        let build = |unicode: bool| {
            regex::bytes::RegexBuilder::new(&re)
                .case_insensitive(i)
                .multi_line(m)
                .dot_matches_new_line(s)
                .ignore_whitespace(x)
                .unicode(unicode)
                .size_limit(PATTERN_SIZE_MAX)
                .build()
        };
        let pattern = |engine| Pattern {
            engine,
            max_hits: 1,
        };
        match build(false).or_else(|_| build(true)) {
            Ok(r) => Ok(pattern(Engine::Plain(r))),
            Err(plain) => {
                let inline: String = [(i, 'i'), (m, 'm'), (s, 's'), (x, 'x')]
                    .iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, c)| *c)
                    .collect();
                let with_flags = if inline.is_empty() {
                    re.clone()
                } else {
                    format!("(?{inline}){re}")
                };
                fancy_regex::RegexBuilder::new(&with_flags)
                    .backtrack_limit(BACKTRACK_LIMIT)
                    .delegate_size_limit(PATTERN_SIZE_MAX)
                    .build()
                    .map(|r| pattern(Engine::Fancy(Box::new(r))))
                    .map_err(|fancy| {
                        let plain = plain.to_string();
                        let first = plain.lines().last().unwrap_or("").trim().to_string();
                        format!("{first}; {fancy}")
                    })
            }
        }
    }
}

/// Perl syntax the regex crates spell differently: `\Z` (end, or before a
/// final newline), `\h`/`\H` (horizontal space), `(?#comments)`, and
/// escaped characters that are not escapes there (`\@`, `\/`, `\'`, ...).
fn translate(perl: &str) -> Result<String, String> {
    let mut out = String::with_capacity(perl.len() + 8);
    let mut chars = perl.chars().peekable();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(n) = chars.next() else {
                    return Err("a pattern ending in a backslash".into());
                };
                match n {
                    // Octal escapes (`\0`, `\012`) as hex: `\1`..`\9` stay
                    // back-references, which only the fancy engine runs.
                    '0' => {
                        let mut value = 0u32;
                        for _ in 0..2 {
                            match chars.peek().and_then(|c| c.to_digit(8)) {
                                Some(d) => {
                                    value = value * 8 + d;
                                    chars.next();
                                }
                                None => break,
                            }
                        }
                        out.push_str(&format!(r"\x{value:02x}"));
                    }
                    'Z' => out.push_str(r"(?:\n?\z)"),
                    'h' if in_class => out.push_str(r" \t"),
                    'h' => out.push_str(r"[ \t]"),
                    'H' if !in_class => out.push_str(r"[^ \t]"),
                    'Q' | 'E' | 'K' | 'G' | 'X' | 'R' | 'N' => {
                        return Err(format!("\\{n} is not supported"));
                    }
                    // Punctuation the regex crates take only when it is a
                    // metacharacter (or '-' etc. in a class): escape what
                    // they know, pass the rest through as itself.
                    n if n.is_ascii_punctuation() => {
                        if regex_syntax_escapable(n) {
                            out.push('\\');
                            out.push(n);
                        } else {
                            out.push(n);
                        }
                    }
                    n => {
                        out.push('\\');
                        out.push(n);
                    }
                }
            }
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                // A ']' or '^]' first in a class is a literal.
                if chars.peek() == Some(&'^') {
                    out.push('^');
                    chars.next();
                }
                if chars.peek() == Some(&']') {
                    out.push_str(r"\]");
                    chars.next();
                }
            }
            '[' if in_class => {
                // POSIX classes ([:alpha:]) stay; a lone '[' is a literal.
                if chars.peek() == Some(&':') {
                    out.push('[');
                } else {
                    out.push_str(r"\[");
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            '(' if !in_class && perl_comment_start(&mut chars) => {
                // Skip to the closing parenthesis of (?#...).
                for c in chars.by_ref() {
                    if c == ')' {
                        break;
                    }
                }
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// After a '(': consumes "?#" when it follows (a Perl comment group).
fn perl_comment_start(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> bool {
    let mut ahead = chars.clone();
    if ahead.next() == Some('?') && ahead.next() == Some('#') {
        chars.next();
        chars.next();
        true
    } else {
        false
    }
}

/// Characters regex-syntax accepts after a backslash.
/// (`\<` and `\>` are word boundaries there: a Perl `\<` is a literal.)
fn regex_syntax_escapable(c: char) -> bool {
    regex_syntax_meta(c) || matches!(c, '-' | '&' | '~' | '#' | ' ' | '!')
}

fn regex_syntax_meta(c: char) -> bool {
    matches!(
        c,
        '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$'
    )
}

/// Splits `/re/flags`, `m{re}flags`, `m!re!flags` (any delimiter after
/// `m`; bracket pairs nest) into the pattern and its flags, and returns
/// what follows.
pub fn split_perl_regex(s: &str) -> Result<(String, String, &str), String> {
    let s = s.trim_start();
    let (open, body_start) = if let Some(rest) = s.strip_prefix('m') {
        let c = rest
            .chars()
            .next()
            .ok_or_else(|| "m without a delimiter".to_string())?;
        if c.is_alphanumeric() || c.is_whitespace() {
            return Err(format!("m{c} is not a pattern"));
        }
        (c, 1 + c.len_utf8())
    } else if s.starts_with('/') {
        ('/', 1)
    } else {
        return Err("no /pattern/".into());
    };
    let close = match open {
        '{' => '}',
        '(' => ')',
        '[' => ']',
        '<' => '>',
        c => c,
    };
    let body = &s[body_start..];
    let mut depth = 0usize;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
        } else if c == open && open != close {
            depth += 1;
        } else if c == close {
            if depth == 0 {
                let pattern = &body[..i];
                let after = &body[i + c.len_utf8()..];
                let flags_end = after
                    .find(|c: char| !c.is_ascii_alphabetic())
                    .unwrap_or(after.len());
                // An escaped delimiter inside the pattern is the character.
                let pattern = if matches!(open, '/' | '!' | '#' | '|' | ',' | '@') {
                    pattern.replace(&format!("\\{open}"), &open.to_string())
                } else {
                    pattern.to_string()
                };
                return Ok((pattern, after[..flags_end].to_string(), &after[flags_end..]));
            }
            depth -= 1;
        }
    }
    Err("the pattern is not closed".into())
}

// ---- meta expressions ------------------------------------------------------

/// A meta rule's expression, rule names resolved to indices in the
/// [`RuleSet`] (earlier than the meta: the loader orders them so).
#[derive(Debug, Clone)]
pub enum Expr {
    Num(f64),
    Rule(usize),
    /// A rule mxrack cannot run (an `eval:` plugin test, a pseudo-header):
    /// its value is unknown, and a meta that depends on it does not hit.
    Unknown,
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    /// `a op b` for the comparisons (`None` for the other operators).
    pub fn compare(self, a: f64, b: f64) -> Option<bool> {
        Some(match self {
            BinOp::Eq => a == b,
            BinOp::Ne => a != b,
            BinOp::Lt => a < b,
            BinOp::Le => a <= b,
            BinOp::Gt => a > b,
            BinOp::Ge => a >= b,
            _ => return None,
        })
    }

    /// Perl's precedence, loosest first.
    fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Eq | BinOp::Ne => 3,
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => 4,
            BinOp::Add | BinOp::Sub => 5,
            BinOp::Mul | BinOp::Div => 6,
        }
    }
}

impl Expr {
    /// The value given each rule's state (its value: 1 or 0, a count for
    /// `tflags multiple`, a meta's own value; `None` when it is unknown); `None` when the result depends on an unknown (Kleene
    /// logic: `0 && ?` is 0, `1 || ?` is 1). Depth bounded by the parser.
    pub fn eval(&self, state: &[Option<f64>]) -> Option<f64> {
        let b2f = |v: bool| f64::from(u8::from(v));
        match self {
            Expr::Num(n) => Some(*n),
            Expr::Rule(i) => state.get(*i).copied().flatten(),
            Expr::Unknown => None,
            Expr::Not(e) => e.eval(state).map(|v| b2f(v == 0.0)),
            Expr::Neg(e) => e.eval(state).map(|v| -v),
            Expr::Bin(op, a, b) => {
                let a = a.eval(state);
                match op {
                    BinOp::Or => match (a, b.eval(state)) {
                        (Some(x), _) | (_, Some(x)) if x != 0.0 => Some(1.0),
                        (Some(_), Some(_)) => Some(0.0),
                        _ => None,
                    },
                    BinOp::And => match (a, b.eval(state)) {
                        (Some(x), _) | (_, Some(x)) if x == 0.0 => Some(0.0),
                        (Some(_), Some(_)) => Some(1.0),
                        _ => None,
                    },
                    _ => {
                        let (a, b) = (a?, b.eval(state)?);
                        if let Some(holds) = op.compare(a, b) {
                            return Some(b2f(holds));
                        }
                        Some(match op {
                            BinOp::Add => a + b,
                            BinOp::Sub => a - b,
                            BinOp::Mul => a * b,
                            BinOp::Div if b == 0.0 => 0.0,
                            BinOp::Div => a / b,
                            _ => unreachable!("logic and comparisons are handled above"),
                        })
                    }
                }
            }
        }
    }

    fn rules(&self, out: &mut Vec<usize>) {
        match self {
            Expr::Num(_) | Expr::Unknown => {}
            Expr::Rule(i) => out.push(*i),
            Expr::Not(e) | Expr::Neg(e) => e.rules(out),
            Expr::Bin(_, a, b) => {
                a.rules(out);
                b.rules(out);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Num(f64),
    Op(&'static str),
    Open,
    Close,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if out.len() > META_TOKENS_MAX {
            return Err("expression too long".into());
        }
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Name(s[start..i].to_string()));
        } else if c.is_ascii_digit() || c == b'.' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            let n = s[start..i]
                .parse()
                .map_err(|_| format!("bad number {}", &s[start..i]))?;
            out.push(Tok::Num(n));
        } else if c == b'(' {
            out.push(Tok::Open);
            i += 1;
        } else if c == b')' {
            out.push(Tok::Close);
            i += 1;
        } else {
            let two = s.get(i..i + 2).unwrap_or("");
            let op = ["&&", "||", "==", "!=", ">=", "<="]
                .into_iter()
                .find(|o| *o == two);
            if let Some(op) = op {
                out.push(Tok::Op(op));
                i += 2;
            } else {
                let op = ["!", "+", "-", "*", "/", "<", ">"]
                    .into_iter()
                    .find(|o| o.as_bytes()[0] == c)
                    .ok_or_else(|| format!("unexpected {:?}", c as char))?;
                out.push(Tok::Op(op));
                i += 1;
            }
        }
    }
    Ok(out)
}

/// A parsed expression with rule names still as names.
#[derive(Debug, Clone)]
enum Raw {
    Num(f64),
    Name(String),
    Not(Box<Raw>),
    Neg(Box<Raw>),
    Bin(BinOp, Box<Raw>, Box<Raw>),
}

struct Parser {
    toks: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn binop(&self) -> Option<BinOp> {
        Some(match self.peek()? {
            Tok::Op("||") => BinOp::Or,
            Tok::Op("&&") => BinOp::And,
            Tok::Op("==") => BinOp::Eq,
            Tok::Op("!=") => BinOp::Ne,
            Tok::Op("<") => BinOp::Lt,
            Tok::Op("<=") => BinOp::Le,
            Tok::Op(">") => BinOp::Gt,
            Tok::Op(">=") => BinOp::Ge,
            Tok::Op("+") => BinOp::Add,
            Tok::Op("-") => BinOp::Sub,
            Tok::Op("*") => BinOp::Mul,
            Tok::Op("/") => BinOp::Div,
            _ => return None,
        })
    }

    /// Precedence climbing; `depth` bounds the recursion.
    fn expr(&mut self, min: u8, depth: usize) -> Result<Raw, String> {
        if depth > META_DEPTH_MAX {
            return Err("expression nested too deeply".into());
        }
        let mut left = self.unary(depth + 1)?;
        while let Some(op) = self.binop() {
            let p = op.precedence();
            if p < min {
                break;
            }
            self.at += 1;
            let right = self.expr(p + 1, depth + 1)?;
            left = Raw::Bin(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, depth: usize) -> Result<Raw, String> {
        if depth > META_DEPTH_MAX {
            return Err("expression nested too deeply".into());
        }
        let tok = self.peek().cloned().ok_or("expression ends early")?;
        self.at += 1;
        match tok {
            Tok::Op("!") => Ok(Raw::Not(Box::new(self.unary(depth + 1)?))),
            Tok::Op("-") => Ok(Raw::Neg(Box::new(self.unary(depth + 1)?))),
            Tok::Num(n) => Ok(Raw::Num(n)),
            Tok::Name(n) => Ok(Raw::Name(n)),
            Tok::Open => {
                let e = self.expr(0, depth + 1)?;
                if self.peek() != Some(&Tok::Close) {
                    return Err("a '(' without its ')'".into());
                }
                self.at += 1;
                Ok(e)
            }
            other => Err(format!("unexpected {other:?}")),
        }
    }
}

fn parse_expr(s: &str) -> Result<Raw, String> {
    let mut p = Parser {
        toks: lex(s)?,
        at: 0,
    };
    let e = p.expr(0, 0)?;
    if p.at != p.toks.len() {
        return Err(format!("unexpected {:?}", p.toks[p.at]));
    }
    Ok(e)
}

fn raw_names<'a>(e: &'a Raw, out: &mut Vec<&'a str>) {
    match e {
        Raw::Num(_) => {}
        Raw::Name(n) => out.push(n),
        Raw::Not(e) | Raw::Neg(e) => raw_names(e, out),
        Raw::Bin(_, a, b) => {
            raw_names(a, out);
            raw_names(b, out);
        }
    }
}

/// Names in `unknown` (rules mxrack cannot run) are [`Expr::Unknown`];
/// other names not in `index` (undefined or disabled rules) are 0, as in
/// SpamAssassin.
fn resolve(e: &Raw, index: &HashMap<String, usize>, unknown: &HashSet<String>) -> Expr {
    let r = |e: &Raw| Box::new(resolve(e, index, unknown));
    match e {
        Raw::Num(n) => Expr::Num(*n),
        Raw::Name(n) => match index.get(n) {
            Some(i) => Expr::Rule(*i),
            None if unknown.contains(n) => Expr::Unknown,
            None => Expr::Num(0.0),
        },
        Raw::Not(e) => Expr::Not(r(e)),
        Raw::Neg(e) => Expr::Neg(r(e)),
        Raw::Bin(op, a, b) => Expr::Bin(*op, r(a), r(b)),
    }
}

// ---- header rules ----------------------------------------------------------

/// What SpamAssassin's rules look at that is worked out once per message.
#[derive(Debug, Default)]
pub struct SaCache {
    /// `ALL`: the header section as written.
    pub all: Option<String>,
    /// The relays (`X-Spam-Relays-*`).
    pub relays: Option<crate::relays::Relays>,
    /// The current hand-over, when the caller knows it.
    pub hop: Option<crate::relays::Relay>,
    /// `[spam] trusted_networks` (empty: trust inferred).
    pub trusted: crate::relays::TrustedNetworks,
    /// The relays' texts (trusted = internal, untrusted = external).
    pub relay_texts: Option<(String, String)>,
}

/// Which text of a header a header rule looks at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HeaderPart {
    /// Decoded and unfolded.
    Value,
    /// As it came (`:raw`).
    Raw,
    /// The first address (`:addr`).
    Addr,
    /// The first display name (`:name`).
    Name,
}

/// What a header rule tests.
#[derive(Debug, Clone)]
pub enum HeaderTest {
    Exists,
    Matches(Pattern),
    NotMatches(Pattern),
}

/// A SpamAssassin header rule.
#[derive(Debug, Clone)]
pub struct HeaderRule {
    /// A header name, or `ALL`, `ToCc`, `EnvelopeFrom`, `MESSAGEID`.
    pub header: String,
    pub part: HeaderPart,
    pub test: HeaderTest,
    pub if_unset: Option<String>,
}

/// The first address in a header value: inside `<...>`, else the first
/// word with an `@`.
pub(crate) fn first_address(v: &str) -> String {
    if let Some(start) = v.find('<')
        && let Some(len) = v[start + 1..].find('>')
    {
        return v[start + 1..start + 1 + len].trim().to_string();
    }
    v.split([' ', ',', ';', '\t'])
        .find(|w| w.contains('@'))
        .unwrap_or(v.trim())
        .trim_matches(|c| c == '"' || c == '(' || c == ')')
        .to_string()
}

/// The display name of a header value: what precedes `<`, unquoted; or a
/// trailing `(comment)`.
fn display_name(v: &str) -> String {
    if let Some(start) = v.find('<') {
        return v[..start].trim().trim_matches('"').trim().to_string();
    }
    if let (Some(a), Some(b)) = (v.find('('), v.rfind(')'))
        && a < b
    {
        return v[a + 1..b].trim().to_string();
    }
    String::new()
}

impl HeaderRule {
    /// SpamAssassin's `get()`: every instance of the header, joined by
    /// newlines; `None` when the message has none.
    fn text(&self, view: &MailView, envelope_from: &str, cache: &mut SaCache) -> Option<String> {
        if crate::relays::is_relay_header(&self.header) {
            let (trusted, untrusted) = cache.relay_texts.get_or_insert_with(|| {
                let relays = cache.relays.get_or_insert_with(|| {
                    crate::relays::relays(view, cache.hop.as_ref(), &cache.trusted)
                });
                (
                    relays
                        .pseudo_header("X-Spam-Relays-Trusted")
                        .unwrap_or_default(),
                    relays
                        .pseudo_header("X-Spam-Relays-Untrusted")
                        .unwrap_or_default(),
                )
            });
            let text = if self.header.ends_with("-Trusted") || self.header.ends_with("-Internal") {
                trusted
            } else {
                untrusted
            };
            return (!text.is_empty()).then(|| text.clone());
        }
        let all = &mut cache.all;
        let names: &[&str] = match self.header.as_str() {
            "ALL" => {
                // The header section as written (unfolded), a line each.
                let text = all.get_or_insert_with(|| view.header_lines(true));
                return Some(text.clone());
            }
            "EnvelopeFrom" => {
                return (!envelope_from.is_empty()).then(|| envelope_from.to_string());
            }
            "ToCc" => &["To", "Cc"],
            "MESSAGEID" => &["Message-Id", "Resent-Message-Id", "X-Message-Id"],
            h => &[h][..],
        };
        let mut out: Vec<String> = Vec::new();
        for name in names {
            for h in view
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
            {
                // SpamAssassin's value is the field as written, unfolded,
                // with encoded words decoded; mail-parser's rendering
                // (Message-ID without brackets, addresses re-quoted) is
                // used only for the decoding.
                let value = if h.raw.contains("=?") {
                    &h.value
                } else {
                    &h.raw
                };
                out.push(match self.part {
                    HeaderPart::Value => value.clone(),
                    HeaderPart::Raw => h.raw.clone(),
                    HeaderPart::Addr => first_address(value),
                    HeaderPart::Name => display_name(value),
                });
            }
        }
        if out.is_empty() {
            None
        } else {
            Some(out.join("\n"))
        }
    }

    /// 1 when the rule hits, 0 when not, `None` when a pattern could not
    /// tell (its backtracking limit).
    pub fn hits(&self, view: &MailView, envelope_from: &str, cache: &mut SaCache) -> Option<f64> {
        let text = self.text(view, envelope_from, cache);
        let b2f = |v: bool| f64::from(u8::from(v));
        match &self.test {
            HeaderTest::Exists => Some(b2f(text.is_some())),
            HeaderTest::Matches(p) => {
                let text = text.or_else(|| self.if_unset.clone()).unwrap_or_default();
                p.hits(&text).map(f64::from)
            }
            HeaderTest::NotMatches(p) => {
                let text = text.or_else(|| self.if_unset.clone()).unwrap_or_default();
                p.hits(&text).map(|n| b2f(n == 0))
            }
        }
    }
}

/// Pseudo-headers SpamAssassin makes that mxrack does not (yet): rules on
/// them are skipped, as `!~` on an absent header would always hit.
fn unsupported_pseudo_header(h: &str) -> bool {
    (h.starts_with("X-Spam-") && !crate::relays::is_relay_header(h))
        || h.starts_with("ALL-")
        || h.starts_with("__")
}

fn parse_header_rule(rest: &str) -> Result<HeaderRule, String> {
    let rest = rest.trim();
    if let Some(h) = rest.strip_prefix("exists:") {
        let header = h.trim().to_string();
        if unsupported_pseudo_header(&header) {
            return Err(format!("pseudo-header {header}"));
        }
        return Ok(HeaderRule {
            header,
            part: HeaderPart::Value,
            test: HeaderTest::Exists,
            if_unset: None,
        });
    }
    let op_at = rest
        .find("=~")
        .or_else(|| rest.find("!~"))
        .ok_or("no =~ or !~")?;
    let negate = &rest[op_at..op_at + 2] == "!~";
    let spec = rest[..op_at].trim();
    let (header, part) = match spec.split_once(':') {
        None => (spec, HeaderPart::Value),
        Some((h, "raw")) => (h, HeaderPart::Raw),
        Some((h, "addr")) => (h, HeaderPart::Addr),
        Some((h, "name")) => (h, HeaderPart::Name),
        Some((_, other)) => return Err(format!("header form :{other}")),
    };
    if header.is_empty() || header.contains(char::is_whitespace) {
        return Err(format!("header name {header:?}"));
    }
    if unsupported_pseudo_header(header) {
        return Err(format!("pseudo-header {header}"));
    }
    let (pattern, flags, after) = split_perl_regex(&rest[op_at + 2..])?;
    let if_unset = after
        .trim()
        .strip_prefix("[if-unset:")
        .and_then(|s| s.trim_end().strip_suffix(']'))
        .map(|s| s.trim().to_string());
    let p = Pattern::compile(&pattern, &flags, header == "ALL" && flags.contains('m'))?;
    Ok(HeaderRule {
        header: header.to_string(),
        part,
        test: if negate {
            HeaderTest::NotMatches(p)
        } else {
            HeaderTest::Matches(p)
        },
        if_unset,
    })
}

/// A `mimeheader` rule: `NAME Header[:raw] =~ /re/` (or `!~`), as a header
/// rule of one header name, plain or raw.
fn parse_mimeheader_rule(rest: &str) -> Result<HeaderRule, String> {
    let rule = parse_header_rule(rest)?;
    match (&rule.test, rule.part) {
        (HeaderTest::Exists, _) => Err("mimeheader exists:".into()),
        (_, HeaderPart::Addr | HeaderPart::Name) => Err("mimeheader :addr/:name".into()),
        _ if rule.header.eq_ignore_ascii_case("ALL")
            || crate::relays::is_relay_header(&rule.header) =>
        {
            Err(format!("mimeheader on {}", rule.header))
        }
        _ => Ok(rule),
    }
}

impl HeaderRule {
    /// SpamAssassin's MIMEHeader plugin: each MIME part (the message
    /// itself first) in turn, its first header of the rule's name (raw or
    /// decoded; an absent one is the empty text); the rule hits at the
    /// first part whose value matches (`=~`), or when none does (`!~`).
    /// Unknown when a pattern could not tell and no part decided.
    pub fn mime_hits(&self, view: &MailView) -> Option<f64> {
        let (pattern, negated) = match &self.test {
            HeaderTest::Matches(p) => (p, false),
            HeaderTest::NotMatches(p) => (p, true),
            HeaderTest::Exists => return None,
        };
        let mut unknown = false;
        // One pass: the headers come grouped by part, in part order (a
        // part without any header is not listed; a message without a
        // parsed header is one part with none).
        let headers = &view.mime_headers;
        let mut start = 0;
        loop {
            let part = headers.get(start).map(|h| h.part);
            let end = headers[start..]
                .iter()
                .position(|h| Some(h.part) != part)
                .map_or(headers.len(), |n| start + n);
            let value = headers[start..end]
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(&self.header))
                .map_or("", |h| match self.part {
                    HeaderPart::Raw => h.raw.as_str(),
                    _ => h.value.as_str(),
                });
            match pattern.hits(value) {
                Some(n) if n > 0 => return Some(f64::from(u8::from(!negated))),
                Some(_) => {}
                None => unknown = true,
            }
            if end >= headers.len() {
                break;
            }
            start = end;
        }
        if unknown {
            None
        } else {
            Some(f64::from(u8::from(negated)))
        }
    }
}

/// A rule's value over several texts: the sum of its matches, up to its
/// `max_hits` (1 for most rules); `None` when a text could not be told and
/// nothing matched.
/// A fancy pattern stops at the first text it cannot tell, and runs only
/// until `deadline` (what all fancy patterns of one message may spend,
/// [`FANCY_BUDGET`]): past it, the rule is unknown.
pub fn count_hits(p: &Pattern, texts: &[String], deadline: std::time::Instant) -> Option<f64> {
    let max = p.max_hits.max(1);
    let fancy = matches!(p.engine, Engine::Fancy(_));
    let mut n = 0u32;
    for t in texts {
        if fancy && std::time::Instant::now() > deadline {
            return (n > 0).then_some(f64::from(n));
        }
        match p.hits(t) {
            Some(k) => n = n.saturating_add(k),
            None => return (n > 0).then_some(f64::from(n)),
        }
        if n >= max {
            return Some(f64::from(max));
        }
    }
    Some(f64::from(n))
}

/// CPU time the backtracking (fancy) patterns of one message may use in
/// all; the linear ones are not limited.
pub const FANCY_BUDGET: std::time::Duration = std::time::Duration::from_millis(250);

/// Longest paragraph or raw chunk matched at once (SpamAssassin splits the
/// body so; it also bounds what one fancy pattern may backtrack over).
pub const CHUNK_CHARS_MAX: usize = 2_048;

/// What `body` rules see, as SpamAssassin makes it: the Subject, then the
/// visible text in paragraphs (split at blank lines, white space runs made
/// one space), long ones cut at [`CHUNK_CHARS_MAX`].
pub fn body_paragraphs(view: &MailView) -> Vec<String> {
    let mut out = vec![view.subject.clone().unwrap_or_default()];
    let mut para = String::new();
    let flush = |para: &mut String, out: &mut Vec<String>| {
        if !para.is_empty() {
            out.push(std::mem::take(para));
        }
    };
    for line in view.text.lines() {
        if line.trim().is_empty() {
            flush(&mut para, &mut out);
            continue;
        }
        for mut word in line.split_whitespace() {
            if para.len() + word.len() + 1 > CHUNK_CHARS_MAX {
                flush(&mut para, &mut out);
            }
            // A word longer than a chunk is cut at character boundaries.
            while word.len() > CHUNK_CHARS_MAX {
                let mut cut = CHUNK_CHARS_MAX;
                while !word.is_char_boundary(cut) {
                    cut -= 1;
                }
                out.push(word[..cut].to_string());
                word = &word[cut..];
            }
            if !para.is_empty() {
                para.push(' ');
            }
            para.push_str(word);
        }
    }
    flush(&mut para, &mut out);
    out
}

/// What `rawbody` rules see: the decoded parts in chunks of whole lines of
/// about [`CHUNK_CHARS_MAX`] characters.
pub fn raw_chunks(view: &MailView) -> Vec<String> {
    let mut out = Vec::new();
    let mut chunk = String::new();
    for line in view.raw_parts.split_inclusive('\n') {
        if !chunk.is_empty() && chunk.len() + line.len() > CHUNK_CHARS_MAX {
            out.push(std::mem::take(&mut chunk));
        }
        if line.len() > CHUNK_CHARS_MAX {
            // One very long line: cut at character boundaries.
            let mut rest = line;
            while !rest.is_empty() {
                let mut cut = rest.len().min(CHUNK_CHARS_MAX);
                while !rest.is_char_boundary(cut) {
                    cut -= 1;
                }
                out.push(rest[..cut].to_string());
                rest = &rest[cut..];
            }
            continue;
        }
        chunk.push_str(line);
    }
    if !chunk.is_empty() {
        out.push(chunk);
    }
    out
}

/// The URIs `uri` rules see: the message's links, then the addresses in
/// its text as `mailto:` links (SpamAssassin's URI list has both), at most
/// [`crate::message::URIS_MAX`] in all.
pub fn uri_list(view: &MailView) -> Vec<String> {
    let mut out: Vec<String> = view.uris.clone();
    for word in view
        .text
        .split(|c: char| c.is_whitespace() || "<>()[]\",;:'".contains(c))
    {
        if out.len() >= crate::message::URIS_MAX {
            break;
        }
        let word = word.trim_matches('.');
        if let Some((local, domain)) = word.split_once('@')
            && !local.is_empty()
            && domain.contains('.')
            && !domain.contains('@')
            && !local.contains('/')
        {
            let uri = format!("mailto:{word}");
            if !out.contains(&uri) {
                out.push(uri);
            }
        }
    }
    out
}

// ---- the .cf reader --------------------------------------------------------

/// The rules read from a SpamAssassin rule folder, and what was left out.
#[derive(Debug)]
pub struct SaRules {
    pub set: RuleSet,
    /// Files read.
    pub files: usize,
    /// Rules left out, counted by reason ("eval:check_foo", "mimeheader",
    /// "pseudo-header X-Spam-Relays-Untrusted", "pattern", ...).
    pub skipped: BTreeMap<String, usize>,
}

impl SaRules {
    /// One line for logs and `mxrack spam rules`: "1,234 rules from 60
    /// files; 420 left out (eval 352, pattern 12, ...)".
    pub fn summary(&self) -> String {
        let left: usize = self.skipped.values().sum();
        let mut reasons: Vec<(&String, &usize)> = self.skipped.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1));
        let top: Vec<String> = reasons
            .iter()
            .take(6)
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        format!(
            "{} rules from {} SpamAssassin files; {left} left out ({})",
            self.set.rules.len(),
            self.files,
            top.join(", ")
        )
    }
}

/// A rule's definition as read, before scores and metas are settled.
#[derive(Debug, Clone)]
enum Def {
    Header(String),
    Body(String),
    RawBody(String),
    Uri(String),
    Full(String),
    Meta(String),
    /// `mimeheader`: a header rule over every MIME part's header.
    MimeHeader(String),
    Bayes,
    /// The call after `eval:`.
    Eval(String),
}

#[derive(Default)]
struct Reader {
    order: Vec<String>,
    defs: HashMap<String, Def>,
    scores: HashMap<String, f32>,
    describe: HashMap<String, String>,
    tags: HashMap<String, String>,
    tag_pre: Vec<String>,
    tag_inter: Vec<String>,
    tag_post: Vec<String>,
    replace: HashSet<String>,
    freemail: Freemail,
    freemail_entries: Vec<String>,
    addrlists: crate::sa_eval::AddrLists,
    /// `tflags multiple` rules: how many matches each counts.
    max_hits: HashMap<String, u32>,
}

impl Reader {
    fn define(&mut self, name: &str, def: Def) {
        if !self.defs.contains_key(name) {
            self.order.push(name.to_string());
        }
        self.defs.insert(name.to_string(), def);
    }

    fn line(&mut self, line: &str) {
        let word = |s: &str| -> (String, String) {
            let s = s.trim_start();
            let end = s.find(char::is_whitespace).unwrap_or(s.len());
            (s[..end].to_string(), s[end..].trim().to_string())
        };
        let (key, after) = word(line);
        let key = key.to_ascii_lowercase();
        let (name, rest) = word(&after);
        let (name, rest) = (name.as_str(), rest.as_str());
        let kind = match key.as_str() {
            "header" | "body" | "rawbody" | "uri" | "full" | "meta" | "mimeheader" => key.as_str(),
            "score" => {
                let values: Vec<f32> = rest
                    .split_whitespace()
                    .map_while(|v| v.parse().ok())
                    .collect();
                let v = match values.len() {
                    0 => return,
                    1..=3 => values[0],
                    _ => values[SCORE_SET],
                };
                // GTUBE scores 1000.
                if v.is_finite() && v.abs() <= 1000.0 {
                    self.scores.insert(name.to_string(), v);
                }
                return;
            }
            "describe" => {
                self.describe.insert(name.to_string(), rest.to_string());
                return;
            }
            "tflags" => {
                let mut multiple = false;
                let mut max = None;
                for f in rest.split_whitespace() {
                    if f == "multiple" {
                        multiple = true;
                    } else if let Some(n) = f.strip_prefix("maxhits=") {
                        max = n.parse::<u32>().ok();
                    }
                }
                if multiple {
                    self.max_hits.insert(
                        name.to_string(),
                        max.unwrap_or(MAX_HITS_CAP).min(MAX_HITS_CAP),
                    );
                } else {
                    self.max_hits.remove(name);
                }
                return;
            }
            "replace_tag" => {
                self.tags.insert(name.to_string(), rest.to_string());
                return;
            }
            "replace_pre" | "replace_inter" | "replace_post" => {
                let list = match key.as_str() {
                    "replace_pre" => &mut self.tag_pre,
                    "replace_inter" => &mut self.tag_inter,
                    _ => &mut self.tag_post,
                };
                self.tags.insert(name.to_string(), rest.to_string());
                list.push(name.to_string());
                return;
            }
            "freemail_domains" | "freemail_welcomelist" | "freemail_whitelist" => {
                let words: Vec<String> = std::iter::once(name)
                    .chain(rest.split_whitespace())
                    .map(str::to_ascii_lowercase)
                    .collect();
                if key == "freemail_domains" {
                    self.freemail_entries.extend(words);
                } else {
                    self.freemail.welcome.extend(words);
                }
                return;
            }
            "enlist_addrlist" => {
                // `(NAME) glob glob ...`
                if let Some(list) = name.strip_prefix('(').and_then(|n| n.strip_suffix(')')) {
                    let globs: Vec<&str> = rest.split_whitespace().collect();
                    self.addrlists.enlist(list, &globs);
                }
                return;
            }
            "replace_rules" => {
                self.replace.insert(name.to_string());
                for n in rest.split_whitespace() {
                    self.replace.insert(n.to_string());
                }
                return;
            }
            _ => return,
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return;
        }
        let def = if let Some(call) = rest.strip_prefix("eval:") {
            let func = call.split('(').next().unwrap_or("").trim();
            if func == "check_bayes" && BANDS.iter().any(|(_, b)| *b == name) {
                Def::Bayes
            } else {
                Def::Eval(call.trim().to_string())
            }
        } else {
            let rest = rest.to_string();
            match kind {
                "header" => Def::Header(rest),
                "body" => Def::Body(rest),
                "rawbody" => Def::RawBody(rest),
                "uri" => Def::Uri(rest),
                "full" => Def::Full(rest),
                "meta" => Def::Meta(rest),
                _ => Def::MimeHeader(rest),
            }
        };
        self.define(name, def);
    }

    /// `<tag>` replaced in the rules `replace_rules` names; `<pre N>`,
    /// `<inter N>`, `<post N>` are the optional tags of those lists.
    fn replace_tags(&self, name: &str, pattern: &str) -> String {
        if !self.replace.contains(name) || !pattern.contains('<') {
            return pattern.to_string();
        }
        let mut out = pattern.to_string();
        // Tags may use other tags; a few rounds settle them.
        for _ in 0..4 {
            let before = out.clone();
            for (tag, value) in &self.tags {
                for form in [
                    format!("<{tag}>"),
                    format!("<pre {tag}>"),
                    format!("<inter {tag}>"),
                    format!("<post {tag}>"),
                ] {
                    if out.contains(&form) {
                        out = out.replace(&form, value);
                    }
                }
            }
            if out == before {
                break;
            }
        }
        out
    }
}

/// Strips a comment (an unescaped `#`) and turns `\#` into `#`.
fn strip_comment(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'#') => {
                out.push('#');
                chars.next();
            }
            '#' => break,
            c => out.push(c),
        }
    }
    out.trim().to_string()
}

/// Reads `.cf` texts (name, text), in the order given (SpamAssassin reads
/// a folder's files sorted by name, later definitions winning).
pub fn parse(files: &[(String, String)]) -> Result<SaRules, FilterError> {
    let mut r = Reader::default();
    for (_, text) in files {
        // Each open `if`/`ifplugin` block and whether it is read.
        let mut blocks: Vec<bool> = Vec::new();
        for line in text.lines() {
            let line = strip_comment(line);
            if line.is_empty() {
                continue;
            }
            let (first, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
            match first {
                "ifplugin" => blocks.push(true),
                "if" => blocks.push(condition(rest)),
                "else" => {
                    if let Some(top) = blocks.last_mut() {
                        *top = !*top;
                    }
                }
                "endif" => {
                    blocks.pop();
                }
                _ if blocks.iter().all(|b| *b) => r.line(&line),
                _ => {}
            }
        }
    }
    build(r, files.len())
}

/// An `if` condition, as SpamAssassin 4.0 with every plugin loaded reads
/// it: `plugin(...)`, `can(...)` and `has(...)` are true, `version` is
/// 4.000001; what does not parse is false.
fn condition(expr: &str) -> bool {
    let mut text = String::with_capacity(expr.len());
    let mut rest = expr;
    while !rest.is_empty() {
        let lower = rest.to_ascii_lowercase();
        let call = ["plugin(", "can(", "has("]
            .iter()
            .filter_map(|c| lower.find(c).map(|at| (at, c.len())))
            .min();
        match call {
            Some((at, len)) => {
                text.push_str(&rest[..at]);
                let after = &rest[at + len..];
                let close = after.find(')').map_or(after.len(), |i| i + 1);
                text.push_str(" 1 ");
                rest = &after[close..];
            }
            None => {
                text.push_str(rest);
                rest = "";
            }
        }
    }
    let words: Vec<String> = text
        .split_inclusive(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map(|w| {
            let (word, sep) = w.split_at(
                w.trim_end_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .len(),
            );
            let word = match word {
                "perl_version" => "5.036",
                "version" => "4.000001",
                other => other,
            };
            format!("{word}{sep}")
        })
        .collect();
    let Ok(e) = parse_expr(&words.concat()) else {
        return false;
    };
    resolve(&e, &HashMap::new(), &HashSet::new())
        .eval(&[])
        .is_some_and(|v| v != 0.0)
}

/// Reads every `*.cf` in `dir`, sorted by name (at most [`FILES_MAX`], each
/// at most [`FILE_BYTES_MAX`]).
pub fn load_dir(dir: &Path) -> Result<SaRules, FilterError> {
    let read_err = |e: std::io::Error| FilterError::Rules(format!("{}: {e}", dir.display()));
    let mut names: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cf") && p.is_file())
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(FilterError::Rules(format!(
            "{}: no SpamAssassin rule files (*.cf)",
            dir.display()
        )));
    }
    if names.len() > FILES_MAX {
        return Err(FilterError::Rules(format!(
            "{}: {} rule files; at most {FILES_MAX}",
            dir.display(),
            names.len()
        )));
    }
    let mut files = Vec::with_capacity(names.len());
    for path in names {
        let len = std::fs::metadata(&path).map_err(read_err)?.len();
        if len > FILE_BYTES_MAX {
            return Err(FilterError::Rules(format!(
                "{}: {len} bytes; at most {FILE_BYTES_MAX}",
                path.display()
            )));
        }
        let bytes = std::fs::read(&path).map_err(read_err)?;
        // Some files are Latin-1; patterns with such bytes match nothing
        // after this, which only loses those rules.
        files.push((
            path.display().to_string(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    parse(&files)
}

/// Settles scores, compiles patterns, orders metas after what they use.
fn build(mut r: Reader, files: usize) -> Result<SaRules, FilterError> {
    let entries = std::mem::take(&mut r.freemail_entries);
    r.freemail.add_domains(&entries);
    let freemail = Arc::new(std::mem::take(&mut r.freemail));
    r.addrlists.compile();
    let addrlists = Arc::new(std::mem::take(&mut r.addrlists));
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    let mut skip = |why: String| *skipped.entry(why).or_insert(0) += 1;
    // Rules left out because mxrack cannot run them (not because they are
    // disabled): metas see them as unknown.
    let mut unknown: HashSet<String> = HashSet::new();
    let score_of = |name: &str| -> f32 {
        if let Some(s) = r.scores.get(name) {
            *s
        } else if name.starts_with("__") {
            0.0
        } else if name.starts_with("T_") {
            0.01
        } else {
            1.0
        }
    };
    // Compile every non-meta rule that is scored or a sub-rule.
    let mut compiled: HashMap<&str, Rule> = HashMap::new();
    let mut metas: HashMap<&str, Raw> = HashMap::new();
    for name in &r.order {
        let def = &r.defs[name];
        let score = score_of(name);
        let sub = name.starts_with("__");
        if !sub && score == 0.0 {
            skip("score 0".into());
            continue;
        }
        let description = r.describe.get(name).cloned().unwrap_or_default();
        let body_pattern = |rest: &str, multi_line: bool| -> Result<Pattern, String> {
            let rest = r.replace_tags(name, rest);
            let (p, flags, after) = split_perl_regex(&rest)?;
            if !after.trim().is_empty() {
                return Err(format!("text after the pattern: {}", after.trim()));
            }
            Pattern::compile(&p, &flags, multi_line)
        };
        let max_hits = r.max_hits.get(name.as_str()).copied().unwrap_or(1);
        let kind = match def {
            Def::Meta(expr) => {
                match parse_expr(expr) {
                    Ok(e) => {
                        metas.insert(name, e);
                    }
                    Err(_) => {
                        skip("meta expression".into());
                        unknown.insert(name.clone());
                    }
                }
                continue;
            }
            Def::Bayes => RuleKind::Bayes,
            Def::Eval(text) => match Eval::parse(text, &freemail, &addrlists) {
                Ok(e) => RuleKind::SaEval(Box::new(e)),
                Err(_)
                    if crate::sa_eval::is_network_test(
                        text.split('(').next().unwrap_or("").trim(),
                    ) =>
                {
                    // Known not to hit with network tests off: metas see 0.
                    skip("network test".into());
                    continue;
                }
                Err(why) => {
                    skip(why);
                    unknown.insert(name.clone());
                    continue;
                }
            },
            Def::Header(rest) | Def::MimeHeader(rest) => {
                let mime = matches!(def, Def::MimeHeader(_));
                let text = r.replace_tags(name, rest);
                let parsed = if mime {
                    parse_mimeheader_rule(&text)
                } else {
                    parse_header_rule(&text)
                };
                match parsed {
                    Ok(h) if mime => RuleKind::SaMimeHeader(Box::new(h)),
                    Ok(h) => RuleKind::SaHeader(Box::new(h)),
                    Err(e) => {
                        // Counted by the form mxrack does not take; any
                        // other error is the pattern's.
                        skip(
                            if e.starts_with("pseudo-header") || e.starts_with("mimeheader") {
                                e
                            } else {
                                "pattern".into()
                            },
                        );
                        unknown.insert(name.clone());
                        continue;
                    }
                }
            }
            Def::Body(rest) | Def::RawBody(rest) | Def::Uri(rest) | Def::Full(rest) => {
                // rawbody runs on chunks of lines: `^` at each line.
                // `^` is a chunk's (body: a paragraph's) start, as there.
                let multi_line = false;
                match body_pattern(rest, multi_line) {
                    Ok(mut p) => match def {
                        Def::Body(_) => {
                            p.max_hits = max_hits;
                            RuleKind::SaBody(p)
                        }
                        Def::RawBody(_) => {
                            p.max_hits = max_hits;
                            RuleKind::SaRawBody(p)
                        }
                        Def::Uri(_) => {
                            p.max_hits = max_hits;
                            RuleKind::SaUri(p)
                        }
                        _ => RuleKind::SaFull(p),
                    },
                    Err(_) => {
                        skip("pattern".into());
                        unknown.insert(name.clone());
                        continue;
                    }
                }
            }
        };
        compiled.insert(
            name,
            Rule {
                name: name.clone(),
                kind,
                score,
                description,
            },
        );
    }
    // SpamAssassin's BAYES_999 adds to BAYES_99; mxrack's band is one.
    if let (Some(s99), Some(r999)) = (
        compiled.get("BAYES_99").map(|r| r.score),
        compiled.get_mut("BAYES_999"),
    ) {
        r999.score += s99;
    }
    // Order: non-meta rules in file order, then metas after everything they
    // use (depth-first; a cycle drops the metas on it).
    let mut rules: Vec<Rule> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for name in &r.order {
        if let Some(rule) = compiled.remove(name.as_str()) {
            index.insert(name.clone(), rules.len());
            rules.push(rule);
        }
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
        Dropped,
    }
    let mut marks: HashMap<&str, Mark> = HashMap::new();
    for name in &r.order {
        if !metas.contains_key(name.as_str()) {
            continue;
        }
        // Iterative depth-first walk: (name, children pushed yet).
        let mut stack: Vec<(&str, bool)> = vec![(name, false)];
        while let Some((n, expanded)) = stack.pop() {
            let e = &metas[n];
            if !expanded {
                // Settled, or on the path already (its marker is below).
                if marks.contains_key(n) {
                    continue;
                }
                marks.insert(n, Mark::Visiting);
                stack.push((n, true));
                let mut deps = Vec::new();
                raw_names(e, &mut deps);
                for d in deps {
                    if metas.contains_key(d) {
                        match marks.get(d) {
                            None => stack.push((d, false)),
                            Some(Mark::Visiting) => {
                                // A cycle: this meta cannot be settled.
                                marks.insert(n, Mark::Dropped);
                            }
                            Some(_) => {}
                        }
                    }
                }
                continue;
            }
            // On a cycle, or using a meta that is: dropped.
            let mut deps = Vec::new();
            raw_names(e, &mut deps);
            if marks.get(n) == Some(&Mark::Dropped)
                || deps
                    .iter()
                    .any(|d| metas.contains_key(d) && marks.get(d) != Some(&Mark::Done))
            {
                marks.insert(n, Mark::Dropped);
                skip("meta cycle".into());
                continue;
            }
            marks.insert(n, Mark::Done);
            let score = score_of(n);
            if !n.starts_with("__") && score == 0.0 {
                skip("score 0".into());
                continue;
            }
            let expr = resolve(e, &index, &unknown);
            index.insert(n.to_string(), rules.len());
            rules.push(Rule {
                name: n.to_string(),
                kind: RuleKind::Expr(expr),
                score,
                description: r.describe.get(n).cloned().unwrap_or_default(),
            });
        }
    }
    if rules.len() > SA_RULES_MAX {
        return Err(FilterError::Rules(format!(
            "{} SpamAssassin rules; at most {SA_RULES_MAX}",
            rules.len()
        )));
    }
    // A meta resolved before a later definition of a name it uses saw it
    // as 0; indices only point backwards, which `evaluate` relies on.
    for (i, rule) in rules.iter().enumerate() {
        if let RuleKind::Expr(e) = &rule.kind {
            let mut deps = Vec::new();
            e.rules(&mut deps);
            debug_assert!(deps.iter().all(|d| *d < i));
        }
    }
    Ok(SaRules {
        set: RuleSet {
            rules,
            trusted: Default::default(),
        },
        files,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_030_018_700;

    fn hits(cf: &str, msg: &str) -> Vec<String> {
        let rules = parse(&[("t.cf".into(), cf.into())]).expect("parses");
        let v = MailView::parse(msg.replace('\n', "\r\n").as_bytes());
        rules
            .set
            .evaluate(&v, "sender@example.org", NOW)
            .into_iter()
            .map(|r| r.name.clone())
            .collect()
    }

    const MSG: &str = "From: \"Cheap Pills\" <deals@pharma.example>\nTo: you@example.net\nSubject: Buy VIAGRA now\nMessage-ID: <abc@pharma.example>\n\nClick here to buy cheap meds.\nhttp://pharma.example/buy\n";

    #[test]
    fn perl_patterns_split_and_translate() {
        assert_eq!(
            split_perl_regex(r"/a\/b/i rest").unwrap(),
            ("a/b".into(), "i".into(), " rest")
        );
        assert_eq!(
            split_perl_regex(r"m{x{2}y}s").unwrap(),
            ("x{2}y".into(), "s".into(), "")
        );
        assert_eq!(
            split_perl_regex("m!a!").unwrap(),
            ("a".into(), "".into(), "")
        );
        assert!(split_perl_regex("/open").is_err());
        assert!(
            Pattern::compile(r"foo\Z", "", false)
                .unwrap()
                .is_match("a foo")
        );
        assert!(
            Pattern::compile(r"a\@b\h", "", false)
                .unwrap()
                .is_match("a@b ")
        );
        assert!(
            Pattern::compile(r"x(?#note)y", "", false)
                .unwrap()
                .is_match("xy")
        );
        // Lookahead needs the fancy engine.
        let p = Pattern::compile(r"foo(?!bar)", "i", false).unwrap();
        assert!(matches!(p.engine, Engine::Fancy(_)));
        assert!(p.is_match("FOObaz") && !p.is_match("foobar"));
        // Octal escapes are bytes; \1 is a back-reference (fancy engine);
        // \< and \> are the characters.
        assert!(
            Pattern::compile(r"a\012b", "", false)
                .unwrap()
                .is_match("a\nb")
        );
        let p = Pattern::compile(r"(\w+) \1", "", false).unwrap();
        assert!(matches!(p.engine, Engine::Fancy(_)));
        assert!(p.is_match("it is is") && !p.is_match("it is"));
        assert!(
            Pattern::compile(r"\s*\<", "", false)
                .unwrap()
                .is_match("\" <j@x.org>")
        );
        // A class starting with ']' and a lone '[' inside one.
        assert!(Pattern::compile(r"[][]", "", false).unwrap().is_match("["));
    }

    #[test]
    fn rules_of_each_kind_hit() {
        let cf = r#"
header   SUBJ_VIAGRA  Subject =~ /viagra/i
describe SUBJ_VIAGRA  Subject talks about it
score    SUBJ_VIAGRA  0 0 2.5 0
header   FROM_NAME_PILLS From:name =~ /pills/i
header   FROM_ADDR    From:addr =~ /^deals\@/
header   NO_REPLYTO   !exists:Reply-To
header   HAS_MID      exists:Message-ID
header   NOT_ORG      From !~ /\.org/
header   UNSET_DEF    X-Foo =~ /^dflt$/ [if-unset: dflt]
body     CLICK_HERE   /click here/i
body     SUBJ_IN_BODY /^Buy VIAGRA/
rawbody  RAW_MEDS     /cheap meds/
uri      URI_PHARMA   m{^https?://pharma\.}
full     FULL_MID     /^Message-ID: <abc/m
header   __SUB_A      Subject =~ /buy/i
body     __SUB_B      /meds/
meta     META_BOTH    __SUB_A && __SUB_B
meta     META_COUNT   (__SUB_A + __SUB_B + NOT_THERE) > 1
meta     META_OF_META META_BOTH && !NOT_THERE
body     ZERO         /click/
score    ZERO         0
header   RELAYS       ALL-TRUSTED =~ /rdns= /
body     EVAL_RULE    eval:check_stock_info()
"#;
        let got = hits(cf, MSG);
        for want in [
            "SUBJ_VIAGRA",
            "FROM_NAME_PILLS",
            "FROM_ADDR",
            "HAS_MID",
            "NOT_ORG",
            "UNSET_DEF",
            "CLICK_HERE",
            "SUBJ_IN_BODY",
            "RAW_MEDS",
            "URI_PHARMA",
            "FULL_MID",
            "META_BOTH",
            "META_COUNT",
            "META_OF_META",
        ] {
            assert!(got.iter().any(|g| g == want), "{want} missing from {got:?}");
        }
        // Sub-rules are never reported; zero-scored and skipped rules never hit.
        for not in [
            "__SUB_A",
            "__SUB_B",
            "ZERO",
            "RELAYS",
            "EVAL_RULE",
            "NO_REPLYTO",
        ] {
            assert!(!got.iter().any(|g| g == not), "{not} in {got:?}");
        }
        let rules = parse(&[("t.cf".into(), cf.into())]).unwrap();
        assert_eq!(rules.set.score_of("SUBJ_VIAGRA"), Some(2.5));
        assert_eq!(rules.set.score_of("CLICK_HERE"), Some(1.0));
        assert_eq!(rules.skipped.get("eval:check_stock_info"), Some(&1));
        assert_eq!(rules.skipped.get("pseudo-header ALL-TRUSTED"), Some(&1));
        assert_eq!(rules.skipped.get("score 0"), Some(&1));
    }

    #[test]
    fn mimeheader_looks_at_each_part_raw_or_decoded() {
        let cf = r#"
mimeheader GIF_PART      Content-Type =~ /^image\/gif\b/i
mimeheader GIF_8SPACE    Content-Type:raw =~ /^image\/gif;\n {8}name=\".+?\"$/s
mimeheader GIF_ONETAB    Content-Type:raw =~ /^image\/gif;\n\tname=\".+?\"$/s
mimeheader CID_STOCK     Content-ID =~ /^<image\d+\.gif\@/
mimeheader NO_PDF        Content-Type !~ /application\/pdf/
mimeheader TOP_MIXED     Content-Type =~ /multipart\/mixed/
mimeheader HAS_CL        Content-Location =~ /./
meta       GIF_AND_CID   GIF_PART && CID_STOCK
score      GIF_AND_CID   1.0
mimeheader BAD_FORM      From:addr =~ /x/
mimeheader BAD_EXISTS    exists:Content-ID
"#;
        let msg = "From: a@b.example\nTo: c@d.example\nSubject: pic\nMIME-Version: 1.0\n\
Content-Type: multipart/mixed; boundary=\"XX\"\n\n--XX\nContent-Type: text/plain\n\nsee the picture\n\
--XX\nContent-Type: image/gif;\n        name=\"pic.gif\"\nContent-ID: <image001.gif@01D2>\n\
Content-Transfer-Encoding: base64\n\nR0lGODlhAQABAAAAACw=\n--XX--\n";
        let got = hits(cf, msg);
        for want in [
            "GIF_PART",
            "GIF_8SPACE",
            "CID_STOCK",
            "NO_PDF",
            "TOP_MIXED",
            "GIF_AND_CID",
        ] {
            assert!(got.contains(&want.to_string()), "{want} in {got:?}");
        }
        for not in ["GIF_ONETAB", "HAS_CL", "BAD_FORM", "BAD_EXISTS"] {
            assert!(!got.contains(&not.to_string()), "{not} in {got:?}");
        }
        // A plain message is its own only part: `!~` hits, `=~` does not.
        let plain = hits(cf, MSG);
        assert_eq!(plain, vec!["NO_PDF".to_string()], "{plain:?}");
        // The forms mxrack does not take are counted, not read.
        let rules = parse(&[("t.cf".into(), cf.into())]).expect("parses");
        assert_eq!(rules.skipped.get("mimeheader :addr/:name"), Some(&1));
        assert_eq!(rules.skipped.get("mimeheader exists:"), Some(&1));
    }

    #[test]
    fn negated_exists_is_a_meta_in_spamassassin() {
        // SpamAssassin spells "no Reply-To" as a meta over exists:.
        let cf = "header __HAS_RT exists:Reply-To\nmeta NO_RT !__HAS_RT\n";
        assert_eq!(hits(cf, MSG), vec!["NO_RT".to_string()]);
    }

    #[test]
    fn meta_precedence_and_cycles() {
        let e = parse_expr("A || B && !C").unwrap();
        let idx: HashMap<String, usize> = [("A", 0), ("B", 1), ("C", 2)]
            .map(|(n, i)| (n.to_string(), i))
            .into();
        let none = HashSet::new();
        let e = resolve(&e, &idx, &none);
        let s = |v: [bool; 3]| v.map(|b| Some(f64::from(u8::from(b))));
        assert_eq!(e.eval(&s([false, true, false])), Some(1.0));
        assert_eq!(e.eval(&s([false, true, true])), Some(0.0));
        assert_eq!(e.eval(&s([true, false, true])), Some(1.0));
        let e = resolve(&parse_expr("(A + B) * 2 >= 4 - 0.5").unwrap(), &idx, &none);
        assert_eq!(e.eval(&s([true, true, false])), Some(1.0));
        assert_eq!(e.eval(&s([true, false, false])), Some(0.0));
        // Unknowns: settled when the known side decides, else unknown.
        let unknown: HashSet<String> = ["U".to_string()].into();
        let e = |x: &str| resolve(&parse_expr(x).unwrap(), &idx, &unknown);
        assert_eq!(e("A && !U").eval(&s([false, false, false])), Some(0.0));
        assert_eq!(e("A && !U").eval(&s([true, false, false])), None);
        assert_eq!(e("A || U").eval(&s([true, false, false])), Some(1.0));
        assert_eq!(e("B + U > 0").eval(&s([true, true, false])), None);
        assert_eq!(
            e("NOT_DEFINED || A").eval(&s([true, false, false])),
            Some(1.0)
        );
        assert!(parse_expr("(A && B").is_err());
        assert!(parse_expr("A &&").is_err());
        assert!(parse_expr(&"(".repeat(200)).is_err());
        // Metas on a cycle are dropped; the rest stays.
        let r = parse(&[(
            "t.cf".into(),
            "meta M1 M2 && __X\nmeta M2 M1\nbody __X /x/\nmeta OK __X\n".into(),
        )])
        .unwrap();
        assert!(r.set.score_of("OK").is_some());
        assert!(r.set.score_of("M1").is_none() && r.set.score_of("M2").is_none());
    }

    #[test]
    fn bayes_bands_tags_and_conditionals() {
        let cf = r#"
ifplugin Mail::SpamAssassin::Plugin::Bayes
body BAYES_99  eval:check_bayes('0.99', '1.00')
body BAYES_999 eval:check_bayes('0.999', '1.00')
score BAYES_99 0 0 3.8 3.5
score BAYES_999 0 0 0.2 0.2
endif
replace_tag  PILL  (?:pill|tablet)
body   DRUG_TAG  /cheap <PILL>s/i
replace_rules DRUG_TAG
body   COMMENTED /a\#b/ # a comment
"#;
        let r = parse(&[("t.cf".into(), cf.into())]).unwrap();
        assert_eq!(r.set.score_of("BAYES_99"), Some(3.8));
        assert_eq!(r.set.score_of("BAYES_999"), Some(4.0));
        let v = MailView::parse(b"Subject: x\r\n\r\nCheap Tablets and a#b\r\n");
        let got: Vec<&str> = r
            .set
            .evaluate(&v, "", NOW)
            .into_iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(got, vec!["DRUG_TAG", "COMMENTED"]);
    }

    #[test]
    fn if_blocks_read_as_spamassassin_4_with_its_plugins() {
        assert!(condition("(version >= 3.004000)"));
        assert!(!condition("(version < 4)"));
        assert!(condition(
            "can(Mail::SpamAssassin::Conf::feature_bug6558_free)"
        ));
        assert!(!condition("!plugin(Mail::SpamAssassin::Plugin::DKIM)"));
        assert!(condition("perl_version >= 5.010000"));
        assert!(!condition("what is this"));
        let cf = "if (version < 4)\nbody OLD /x/\nelse\nbody NEW /x/\nendif\nifplugin Mail::SpamAssassin::Plugin::X\nif !plugin(Mail::SpamAssassin::Plugin::Y)\nbody NOT_Y /x/\nendif\nbody HAS_X /x/\nendif\n";
        let r = parse(&[("t.cf".into(), cf.into())]).unwrap();
        let names: Vec<&str> = r.set.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["NEW", "HAS_X"]);
    }

    #[test]
    fn multiple_counts_and_paragraphs() {
        let cf = "body __LINE /^\\s*\\S/\ntflags __LINE multiple maxhits=5\nmeta FEW_LINES __LINE < 3\nbody DEAR /^dear friend/i\n";
        let r = parse(&[("t.cf".into(), cf.into())]).unwrap();
        let names = |msg: &str| -> Vec<String> {
            let v = MailView::parse(msg.replace('\n', "\r\n").as_bytes());
            r.set
                .evaluate(&v, "", NOW)
                .into_iter()
                .map(|r| r.name.clone())
                .collect()
        };
        // Subject + one paragraph: 2 counted.
        assert_eq!(names("Subject: hi\n\nwords here\n"), ["FEW_LINES"]);
        assert!(names("Subject: hi\n\na\n\nb\n\nc\n").is_empty());
        // ^ is a paragraph's start, not any line's.
        assert_eq!(names("Subject: x\n\nhello\n\nDear friend, hi\n"), ["DEAR"]);
        assert!(
            !names("Subject: x\n\nhello there\ndear friend in the middle\n")
                .contains(&"DEAR".to_string())
        );
    }

    #[test]
    fn backtracking_patterns_stop_at_the_messages_budget_linear_ones_do_not() {
        use std::time::{Duration, Instant};
        let texts: Vec<String> = ["nothing here", "a hit", "another hit"]
            .map(String::from)
            .to_vec();
        // Lookahead needs the backtracking engine; the plain one does not.
        let fancy = Pattern::compile(r"(?=hit)hit", "", false).unwrap();
        let plain = Pattern::compile(r"hit", "", false).unwrap();
        assert!(matches!(fancy.engine, Engine::Fancy(_)));
        assert!(matches!(plain.engine, Engine::Plain(_)));
        let later = Instant::now() + Duration::from_secs(60);
        assert_eq!(count_hits(&fancy, &texts, later), Some(1.0));
        // FANCY_BUDGET spent by the message's earlier patterns: a
        // backtracking pattern that has not hit yet is unknown, not a miss;
        // a linear one still runs to its answer.
        let spent = Instant::now()
            .checked_sub(Duration::from_millis(1))
            .expect("an instant 1 ms ago");
        assert_eq!(count_hits(&fancy, &texts, spent), None);
        assert_eq!(count_hits(&plain, &texts, spent), Some(1.0));
    }

    #[test]
    fn a_runaway_pattern_stops_at_its_limit() {
        // Catastrophic backtracking on purpose: the backreference forces
        // the fancy engine, whose limit ends the match as "no hit".
        let p = Pattern::compile(r"^(a+)+\1b$", "", false).unwrap();
        let text = "a".repeat(40);
        assert!(!p.is_match(&text));
    }
}
