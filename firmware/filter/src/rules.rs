//! The rules file: a TOML list of named rules, each with a score.
//!
//! ```toml
//! [[rule]]
//! name = "SUBJ_FREE"            # [A-Z0-9_], unique
//! kind = "header"               # header | body | rawbody | uri | full | builtin | meta
//! header = "Subject"            # header rules only; "ALL" for the whole header section
//! pattern = '\bfree\b'          # regex crate syntax (linear time, no backtracking)
//! case_insensitive = true       # the default
//! score = 0.6
//! description = "Subject offers something free"
//! ```
//!
//! * `header`: the decoded, unfolded value of every header of that name.
//! * `body`: the visible text (HTML rendered to text) of every text part.
//! * `rawbody`: the decoded parts as they are (HTML source included).
//! * `uri`: each link found in the body, one at a time.
//! * `full`: the raw message.
//! * `builtin`: a check in code (see [`crate::checks::BUILTIN_CHECKS`]),
//!   and the classifier's bands `BAYES_00` .. `BAYES_999`.
//! * `meta`: hits when every rule of `all` hit, at least one of `any` (if
//!   given) hit, and none of `none` hit. Meta rules may name only rules
//!   that are not meta.
//!
//! Patterns are compiled once, with a size limit; a bad pattern, an
//! unknown built-in or a duplicate name refuses the whole file with the
//! rule's name in the error.

use std::collections::HashSet;

use regex::{Regex, RegexBuilder};
use serde::Deserialize;

use crate::FilterError;
use crate::bayes::BANDS;
use crate::checks::{self, BUILTIN_CHECKS};
use crate::message::MailView;
use crate::sa;

/// Most rules in one file.
pub const RULES_MAX: usize = 2_000;
/// Largest compiled pattern (regex's own measure).
const PATTERN_SIZE_MAX: usize = 1 << 20;
/// Longest rule name.
const NAME_CHARS_MAX: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default, rename = "rule")]
    rules: Vec<RuleEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    name: String,
    kind: String,
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default = "default_true")]
    case_insensitive: bool,
    score: f32,
    #[serde(default)]
    description: String,
    #[serde(default)]
    all: Vec<String>,
    #[serde(default)]
    any: Vec<String>,
    #[serde(default)]
    none: Vec<String>,
}

fn default_true() -> bool {
    true
}

/// What a rule looks at.
#[derive(Debug, Clone)]
pub enum RuleKind {
    Header {
        name: String,
        pattern: Regex,
    },
    Body(Regex),
    RawBody(Regex),
    Uri(Regex),
    Full(Regex),
    Builtin,
    Bayes,
    Meta {
        all: Vec<String>,
        any: Vec<String>,
        none: Vec<String>,
    },
    /// SpamAssassin rule files ([`crate::sa`]): a header rule.
    SaHeader(Box<sa::HeaderRule>),
    /// SpamAssassin `mimeheader`: a header rule over each MIME part.
    SaMimeHeader(Box<sa::HeaderRule>),
    /// SpamAssassin `body`: the Subject, then the visible text.
    SaBody(sa::Pattern),
    SaRawBody(sa::Pattern),
    SaUri(sa::Pattern),
    SaFull(sa::Pattern),
    /// SpamAssassin `meta`: an expression over rules earlier in the set.
    Expr(sa::Expr),
    /// SpamAssassin `eval:` tests mxrack runs itself ([`crate::sa_eval`]).
    SaEval(Box<crate::sa_eval::Eval>),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub kind: RuleKind,
    pub score: f32,
    pub description: String,
}

/// A parsed, compiled rules file.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    /// `[spam] trusted_networks`, for the rules that read the relays.
    pub trusted: crate::relays::TrustedNetworks,
}

fn rule_error(name: &str, why: impl Into<String>) -> FilterError {
    FilterError::Rules(format!("rule {name}: {}", why.into()))
}

impl RuleSet {
    /// Parses and compiles a rules file.
    pub fn parse(text: &str) -> Result<RuleSet, FilterError> {
        let file: RulesFile =
            toml::from_str(text).map_err(|e| FilterError::Rules(e.message().to_string()))?;
        if file.rules.len() > RULES_MAX {
            return Err(FilterError::Rules(format!(
                "{} rules; at most {RULES_MAX}",
                file.rules.len()
            )));
        }
        let mut seen = HashSet::new();
        let mut rules = Vec::with_capacity(file.rules.len());
        for entry in file.rules {
            let name = entry.name.clone();
            if name.is_empty()
                || name.len() > NAME_CHARS_MAX
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(rule_error(&name, "names are 1 to 64 of A-Z, 0-9 and _"));
            }
            if !seen.insert(name.clone()) {
                return Err(rule_error(&name, "defined twice"));
            }
            if !entry.score.is_finite() || entry.score.abs() > 100.0 {
                return Err(rule_error(&name, "score must be between -100 and 100"));
            }
            let compile = || -> Result<Regex, FilterError> {
                let pattern = entry
                    .pattern
                    .as_deref()
                    .ok_or_else(|| rule_error(&name, "needs a pattern"))?;
                RegexBuilder::new(pattern)
                    .case_insensitive(entry.case_insensitive)
                    .size_limit(PATTERN_SIZE_MAX)
                    .build()
                    .map_err(|e| rule_error(&name, format!("bad pattern: {e}")))
            };
            let no_pattern = |kind: &str| {
                if entry.pattern.is_some() || entry.header.is_some() {
                    Err(rule_error(
                        &name,
                        format!("a {kind} rule takes no pattern nor header"),
                    ))
                } else {
                    Ok(())
                }
            };
            let kind = match entry.kind.as_str() {
                "header" => {
                    let header = entry
                        .header
                        .clone()
                        .filter(|h| !h.is_empty())
                        .ok_or_else(|| rule_error(&name, "a header rule needs `header`"))?;
                    RuleKind::Header {
                        name: header,
                        pattern: compile()?,
                    }
                }
                "body" => RuleKind::Body(compile()?),
                "rawbody" => RuleKind::RawBody(compile()?),
                "uri" => RuleKind::Uri(compile()?),
                "full" => RuleKind::Full(compile()?),
                "builtin" => {
                    no_pattern("builtin")?;
                    if BANDS.iter().any(|(_, band)| *band == name) {
                        RuleKind::Bayes
                    } else if BUILTIN_CHECKS.iter().any(|(n, _)| *n == name) {
                        RuleKind::Builtin
                    } else {
                        return Err(rule_error(&name, "no built-in check has this name"));
                    }
                }
                "meta" => {
                    no_pattern("meta")?;
                    if entry.all.is_empty() && entry.any.is_empty() {
                        return Err(rule_error(&name, "a meta rule needs `all` or `any`"));
                    }
                    RuleKind::Meta {
                        all: entry.all.clone(),
                        any: entry.any.clone(),
                        none: entry.none.clone(),
                    }
                }
                other => return Err(rule_error(&name, format!("unknown kind {other:?}"))),
            };
            let has_meta_lists =
                !(entry.all.is_empty() && entry.any.is_empty() && entry.none.is_empty());
            if has_meta_lists && !matches!(kind, RuleKind::Meta { .. }) {
                return Err(rule_error(&name, "only meta rules take all/any/none"));
            }
            rules.push(Rule {
                name,
                kind,
                score: entry.score,
                description: entry.description,
            });
        }
        // Meta rules name existing, non-meta rules.
        for rule in &rules {
            if let RuleKind::Meta { all, any, none } = &rule.kind {
                for dep in all.iter().chain(any).chain(none) {
                    match rules.iter().find(|r| &r.name == dep) {
                        None => {
                            return Err(rule_error(
                                &rule.name,
                                format!("names unknown rule {dep}"),
                            ));
                        }
                        Some(r) if matches!(r.kind, RuleKind::Meta { .. }) => {
                            return Err(rule_error(&rule.name, format!("names meta rule {dep}")));
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        Ok(RuleSet {
            rules,
            trusted: Default::default(),
        })
    }

    /// The score of a rule by name (the Bayes bands live here too).
    pub fn score_of(&self, name: &str) -> Option<f32> {
        self.rules.iter().find(|r| r.name == name).map(|r| r.score)
    }

    /// Runs every rule but the Bayes bands; returns the rules that hit, in
    /// file order (meta rules after the others, in their order), without
    /// SpamAssassin's `__` sub-rules (they only feed metas).
    pub fn evaluate(&self, view: &MailView, envelope_from: &str, now: i64) -> Vec<&Rule> {
        // Each rule's value: 1/0 (a count for SpamAssassin's `tflags
        // multiple`, a meta's own value), `None` when it cannot be told
        // (a SpamAssassin pattern at its backtracking limit, a meta hanging
        // on a rule mxrack cannot run).
        let mut state: Vec<Option<f64>> = vec![Some(0.0); self.rules.len()];
        let mut all_headers: Option<String> = None;
        let mut sa_body: Option<Vec<String>> = None;
        let mut sa_raw: Option<Vec<String>> = None;
        let mut sa_uris: Option<Vec<String>> = None;
        let mut sa_cache = sa::SaCache {
            hop: view.hop.clone(),
            trusted: self.trusted.clone(),
            ..sa::SaCache::default()
        };
        let b2f = |v: bool| Some(f64::from(u8::from(v)));
        let fancy_deadline = std::time::Instant::now() + sa::FANCY_BUDGET;
        for (i, rule) in self.rules.iter().enumerate() {
            state[i] = match &rule.kind {
                RuleKind::Header { name, pattern } => {
                    if name.eq_ignore_ascii_case("ALL") {
                        let text = all_headers.get_or_insert_with(|| view.all_headers());
                        b2f(pattern.is_match(text))
                    } else {
                        b2f(view.headers_named(name).any(|v| pattern.is_match(v)))
                    }
                }
                RuleKind::Body(p) => b2f(p.is_match(&view.text)),
                RuleKind::RawBody(p) => b2f(p.is_match(&view.raw_parts)),
                RuleKind::Uri(p) => b2f(view.uris.iter().any(|u| p.is_match(u))),
                RuleKind::Full(p) => b2f(p.is_match(&view.full)),
                RuleKind::Builtin => b2f(checks::run(&rule.name, view, envelope_from, now)),
                RuleKind::SaHeader(h) => h.hits(view, envelope_from, &mut sa_cache),
                RuleKind::SaMimeHeader(h) => h.mime_hits(view),
                RuleKind::SaBody(p) => {
                    let texts = sa_body.get_or_insert_with(|| sa::body_paragraphs(view));
                    sa::count_hits(p, texts, fancy_deadline)
                }
                RuleKind::SaRawBody(p) => {
                    let texts = sa_raw.get_or_insert_with(|| sa::raw_chunks(view));
                    sa::count_hits(p, texts, fancy_deadline)
                }
                RuleKind::SaUri(p) => {
                    let texts = sa_uris.get_or_insert_with(|| sa::uri_list(view));
                    sa::count_hits(p, texts, fancy_deadline)
                }
                RuleKind::SaFull(p) => p.hits(&view.full).map(f64::from),
                RuleKind::SaEval(e) => {
                    let relays = sa_cache.relays.get_or_insert_with(|| {
                        crate::relays::relays(view, sa_cache.hop.as_ref(), &sa_cache.trusted)
                    });
                    b2f(e.run(view, envelope_from, now, relays))
                }
                RuleKind::Bayes | RuleKind::Meta { .. } | RuleKind::Expr(_) => Some(0.0),
            };
        }
        let hit = |v: Option<f64>| v.is_some_and(|v| v != 0.0);
        let names: HashSet<&str> = self
            .rules
            .iter()
            .zip(&state)
            .filter(|(_, v)| hit(**v))
            .map(|(r, _)| r.name.as_str())
            .collect();
        // Metas in set order: an expression names only rules before it.
        let mut metas = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let value = match &rule.kind {
                RuleKind::Meta { all, any, none } => {
                    b2f(all.iter().all(|n| names.contains(n.as_str()))
                        && (any.is_empty() || any.iter().any(|n| names.contains(n.as_str())))
                        && !none.iter().any(|n| names.contains(n.as_str())))
                }
                RuleKind::Expr(e) => e.eval(&state),
                _ => continue,
            };
            state[i] = value;
            if hit(value) {
                metas.push(rule);
            }
        }
        self.rules
            .iter()
            .zip(&state)
            .filter(|(r, v)| {
                hit(**v) && !matches!(r.kind, RuleKind::Meta { .. } | RuleKind::Expr(_))
            })
            .map(|(r, _)| r)
            .chain(metas)
            .filter(|r| !r.name.starts_with("__"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_030_018_700;

    fn names(set: &RuleSet, msg: &str, envelope: &str) -> Vec<String> {
        let v = MailView::parse(msg.as_bytes());
        set.evaluate(&v, envelope, NOW)
            .into_iter()
            .map(|r| r.name.clone())
            .collect()
    }

    const RULES: &str = r#"
[[rule]]
name = "SUBJ_FREE"
kind = "header"
header = "Subject"
pattern = '\bfree\b'
score = 0.6
description = "Subject offers something free"

[[rule]]
name = "MAILER_MASS"
kind = "header"
header = "X-Mailer"
pattern = 'mass'
case_insensitive = false
score = 1.0

[[rule]]
name = "ANY_HEADER_BULK"
kind = "header"
header = "ALL"
pattern = '(?m)^Precedence: bulk'
score = 0.1

[[rule]]
name = "BODY_CLICK"
kind = "body"
pattern = 'click\s+here'
score = 0.5

[[rule]]
name = "RAW_FONT"
kind = "rawbody"
pattern = '<font[^>]+size="?[5-7]'
score = 0.4

[[rule]]
name = "URI_BIZ"
kind = "uri"
pattern = '^https?://[^/]+\.biz\b'
score = 0.7

[[rule]]
name = "FULL_MARKER"
kind = "full"
pattern = 'X-Marker: yes'
score = 0.2

[[rule]]
name = "MISSING_DATE"
kind = "builtin"
score = 1.4

[[rule]]
name = "BAYES_99"
kind = "builtin"
score = 3.5

[[rule]]
name = "FREE_AND_CLICK"
kind = "meta"
all = ["SUBJ_FREE", "BODY_CLICK"]
none = ["MISSING_DATE"]
score = 1.0
"#;

    #[test]
    fn parses_and_runs_each_kind() {
        let set = RuleSet::parse(RULES).expect("valid");
        assert_eq!(set.rules.len(), 10);
        assert_eq!(set.score_of("BAYES_99"), Some(3.5));
        assert!(matches!(set.rules[8].kind, RuleKind::Bayes));
        let spam = "Subject: FREE stuff\r\nX-Mailer: Mass Mailer\r\nPrecedence: bulk\r\nX-Marker: yes\r\nDate: Thu, 22 Aug 2002 13:17:22 +0100\r\nContent-Type: text/html\r\n\r\n<p>Click  here: <a href=\"http://win.biz/x\"><font size=\"6\">now</font></a></p>\r\n";
        assert_eq!(
            names(&set, spam, ""),
            [
                "SUBJ_FREE",
                "ANY_HEADER_BULK",
                "BODY_CLICK",
                "RAW_FONT",
                "URI_BIZ",
                "FULL_MARKER",
                "FREE_AND_CLICK"
            ]
        );
        // Case-sensitive rule: "Mass" does not match 'mass'; "mass" does.
        let lower = spam.replace("Mass Mailer", "mass mailer");
        assert!(names(&set, &lower, "").contains(&"MAILER_MASS".to_string()));
        // The meta rule's `none`: without Date, MISSING_DATE hits, meta does not.
        let no_date = spam.replace("Date: Thu, 22 Aug 2002 13:17:22 +0100\r\n", "");
        let n = names(&set, &no_date, "");
        assert!(n.contains(&"MISSING_DATE".to_string()));
        assert!(!n.contains(&"FREE_AND_CLICK".to_string()));
        // Clean.
        let ham = "Subject: notes\r\nDate: Thu, 22 Aug 2002 13:17:22 +0100\r\n\r\nsee you\r\n";
        assert!(names(&set, ham, "").is_empty());
    }

    #[test]
    fn refusals_name_the_rule() {
        for (text, want) in [
            (
                "[[rule]]\nname = \"bad name\"\nkind = \"body\"\npattern = \"x\"\nscore = 1",
                "rule bad name",
            ),
            (
                "[[rule]]\nname = \"A\"\nkind = \"body\"\npattern = \"(\"\nscore = 1",
                "rule A: bad pattern",
            ),
            (
                "[[rule]]\nname = \"A\"\nkind = \"body\"\nscore = 1",
                "rule A: needs a pattern",
            ),
            (
                "[[rule]]\nname = \"A\"\nkind = \"header\"\npattern = \"x\"\nscore = 1",
                "rule A: a header rule needs",
            ),
            (
                "[[rule]]\nname = \"A\"\nkind = \"builtin\"\nscore = 1",
                "rule A: no built-in",
            ),
            (
                "[[rule]]\nname = \"A\"\nkind = \"weird\"\npattern = \"x\"\nscore = 1",
                "rule A: unknown kind",
            ),
            (
                "[[rule]]\nname = \"A\"\nkind = \"body\"\npattern = \"x\"\nscore = 1000",
                "rule A: score",
            ),
            (
                "[[rule]]\nname = \"A\"\nkind = \"body\"\npattern = \"x\"\nscore = 1\n[[rule]]\nname = \"A\"\nkind = \"body\"\npattern = \"y\"\nscore = 1",
                "rule A: defined twice",
            ),
            (
                "[[rule]]\nname = \"M\"\nkind = \"meta\"\nall = [\"NOPE\"]\nscore = 1",
                "rule M: names unknown rule NOPE",
            ),
            (
                "[[rule]]\nname = \"M\"\nkind = \"meta\"\nscore = 1",
                "rule M: a meta rule needs",
            ),
            (
                "[[rule]]\nname = \"A\"\nkind = \"body\"\npattern = \"x\"\nall = [\"B\"]\nscore = 1",
                "rule A: only meta",
            ),
            (
                "[[rule]]\nname = \"A\"\nkind = \"body\"\npattern = \"x\"\nscore = 1\ncolour = 3",
                "unknown field",
            ),
        ] {
            let e = RuleSet::parse(text).expect_err(text).to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        // A pattern too big to compile is refused, not built.
        let huge = format!(
            "[[rule]]\nname = \"A\"\nkind = \"body\"\npattern = '{}'\nscore = 1",
            "(a|b|c|d){1000}".repeat(20)
        );
        assert!(RuleSet::parse(&huge).is_err());
    }
}
