//! The spam score of a message: the rules file's rules and built-in checks,
//! plus the statistical classifier's band (BAYES_00 .. BAYES_999), summed
//! on SpamAssassin's scale (5 is the usual spam line); with SpamAssassin's
//! rule files joined, the mean of the two sets' sums. No network lookups.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use mxrack_store::{LearnOutcome, Store};

use crate::bayes;
use crate::gate::{now_secs, today};
use crate::message::MailView;
use crate::rules::{RuleKind, RuleSet};
use crate::tokens;
use crate::{FilterError, SCORE_HEADER};

/// The rules shipped with the image (`rules/default.toml`).
pub const EMBEDDED_RULES: &str = include_str!("../rules/default.toml");

/// The hit reported when scoring failed (a bug): the score is then 0.
pub const SCORER_FAILED: &str = "SCORER_FAILED";

/// Header lines are folded before this many characters.
const HEADER_LINE_CHARS_MAX: usize = 76;

/// A message's score and the rules that hit, per rule set in rule-file
/// order (the set's Bayes band first; a rule an earlier set named keeps
/// that place).
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// Rounded to 0.1, so the figure in the header is the figure compared
    /// with thresholds.
    pub value: f32,
    pub hits: Vec<(String, f32)>,
}

/// `3.5` -> "3.5", `0.001` -> "0.001", `-1.9` -> "-1.9", `2.0` -> "2".
fn short(v: f32) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

impl Score {
    /// The `X-Spam-Score` header line(s), CRLF-terminated, folded before
    /// 76 characters: `X-Spam-Score: 6.3 (BAYES_99=3.5, MISSING_DATE=1.4)`.
    pub fn header(&self) -> String {
        let mut items: Vec<String> = self
            .hits
            .iter()
            .map(|(n, s)| format!("{n}={}", short(*s)))
            .collect();
        let mut out = format!("{SCORE_HEADER}: {:.1}", self.value);
        let mut line_len = out.len();
        if items.is_empty() {
            out.push_str(" (none)\r\n");
            return out;
        }
        let last = items.len() - 1;
        for (i, item) in items.iter_mut().enumerate() {
            let piece = format!(
                "{}{item}{}",
                if i == 0 { "(" } else { "" },
                if i == last { ")" } else { "," }
            );
            if line_len + 1 + piece.len() > HEADER_LINE_CHARS_MAX && line_len > 0 {
                out.push_str("\r\n\t");
                line_len = 1;
            } else {
                out.push(' ');
                line_len += 1;
            }
            out.push_str(&piece);
            line_len += piece.len();
        }
        out.push_str("\r\n");
        out
    }

    /// The neutral score of a message scoring failed on (a bug), which
    /// says so.
    fn failed() -> Score {
        Score {
            value: 0.0,
            hits: vec![(SCORER_FAILED.to_string(), 0.0)],
        }
    }

    /// True when `name` hit.
    pub fn hit(&self, name: &str) -> bool {
        self.hits.iter().any(|(n, _)| n == name)
    }
}

/// What a message is scored with: one rule set, or two whose scores are
/// averaged (`[spam] spamassassin_join = "mean"`: mxrack's own rules and
/// SpamAssassin's rule files, two scorers on the one scale where 5 is the
/// spam line; on mail neither was tuned on their mean loses less ham and
/// misses less spam than SpamAssassin at 5 and 6, see the README's spam
/// table). Each set adds its own score for the classifier's band; a rule
/// named in both (the bands, MISSING_DATE) is reported once, with the sum
/// of its halves.
#[derive(Debug, Clone)]
pub struct Rules {
    sets: Vec<RuleSet>,
}

impl Rules {
    /// One rule set, its scores as they are.
    pub fn one(set: RuleSet) -> Rules {
        Rules { sets: vec![set] }
    }

    /// The mean of two sets' scores (each rule weighs half).
    pub fn mean(first: RuleSet, second: RuleSet) -> Rules {
        Rules {
            sets: vec![first, second],
        }
    }

    /// The relays these networks hand mail over from are trusted, in every
    /// set (`[spam] trusted_networks`).
    pub fn with_trusted_networks(mut self, trusted: crate::relays::TrustedNetworks) -> Rules {
        for set in &mut self.sets {
            set.trusted = trusted.clone();
        }
        self
    }

    pub fn sets(&self) -> &[RuleSet] {
        &self.sets
    }

    /// The rules of every set.
    pub fn len(&self) -> usize {
        self.sets.iter().map(|s| s.rules.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The most threads one scorer scores on, whatever the number of cores.
/// Each pattern keeps a matching cache per thread that used it (the regex
/// crate's pool keeps them); with SpamAssassin's ~2,400 patterns that is
/// about 60 MiB per thread (`examples/sa_memory.rs`). Scoring on a
/// fixed set of threads, as many as cores up to this, keeps the scorer's
/// memory at its rules plus that many caches however many sessions deliver
/// at once; scoring is CPU work, so more threads than cores add nothing.
pub const SCORING_THREADS_MAX: usize = 8;

/// Messages that may wait for a scoring thread, beyond those being scored.
/// A session that finds the queue full is told to try again later (SMTP
/// 451 4.3.2, as Postfix answers when its milter is unavailable with
/// `milter_default_action = tempfail`) rather than queueing without end:
/// each waiting message holds its prefix (at most 256 KiB), so the queue
/// holds at most 16 MiB, and at 65 ms a message (SpamAssassin's rules) the
/// last in line on 2 threads waits about 2 s.
pub const SCORING_QUEUE_MAX: usize = 64;

/// The longest a session waits for its score ([`Scorer::try_score`]). The
/// patterns' match budget (`FANCY_BUDGET`) and linear regexes keep a
/// message's scoring to well under a second; past this something is wrong,
/// and the sender is told to try again later. RFC 5321 4.5.3.2.5 gives the
/// client 3 minutes per DATA block, so the refusal reaches it in time.
pub const SCORING_WAIT_MAX: Duration = Duration::from_secs(30);

/// Why a message was not scored by [`Scorer::try_score`]; the sender is
/// asked to try again later and the message is not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotScored {
    #[error("the scoring queue is full ({SCORING_QUEUE_MAX} messages wait)")]
    QueueFull,
    #[error("no score within {} s", SCORING_WAIT_MAX.as_secs())]
    TimedOut,
    /// The job ended without a score (a bug: scoring catches its panics).
    #[error("the scoring thread dropped the message")]
    Dropped,
}

/// What a scoring thread runs.
type Job = Box<dyn FnOnce() + Send>;

/// A caller's side of a job: where its score (and the message, handed
/// back) arrives, and the flag that tells the job its caller stopped
/// waiting.
struct Waiting {
    score: mpsc::Receiver<(Score, Vec<u8>)>,
    given_up: Arc<AtomicBool>,
}

/// The rules and the classifier's data, shared with the scoring threads.
#[derive(Debug)]
struct Shared {
    rules: Rules,
    store: Arc<Store>,
}

impl Shared {
    /// Scores on the calling thread. A bug in scoring must cost a score,
    /// never the delivery: a panic is caught, logged and the message gets
    /// a neutral score that says so. (Only a job lost whole, which this
    /// catching rules out, costs an SMTP delivery a 451: `NotScored`.)
    fn score(
        &self,
        message: &[u8],
        envelope_from: &str,
        now: i64,
        marks: &[String],
        hop: Option<crate::relays::Relay>,
    ) -> Score {
        let scored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut view = MailView::parse(message);
            view.auth_marks = marks.to_vec();
            view.hop = hop;
            score_parsed(&self.store, &self.rules, &view, envelope_from, now)
        }));
        scored.unwrap_or_else(|_| {
            tracing::error!(bytes = message.len(), "the spam scorer panicked; scoring 0");
            Score::failed()
        })
    }
}

/// Starts the scoring threads (as many as cores, at most
/// [`SCORING_THREADS_MAX`]); they end when the sender drops. Returns the
/// sender and how many started (0: the caller scores on its own thread).
fn scoring_threads() -> (mpsc::SyncSender<Job>, usize) {
    let (tx, rx) = mpsc::sync_channel::<Job>(SCORING_QUEUE_MAX);
    let rx = Arc::new(std::sync::Mutex::new(rx));
    let wanted = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, SCORING_THREADS_MAX);
    let mut started = 0;
    for i in 0..wanted {
        let rx = rx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("mxrack-score-{i}"))
            .spawn(move || {
                loop {
                    // The lock is held only while waiting for the next job.
                    let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    match job {
                        // A job's panic (none is expected: scoring catches
                        // its own) must not end the thread.
                        Ok(job) => {
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        }
                        Err(_) => return,
                    }
                }
            });
        match thread {
            Ok(_) => started += 1,
            Err(e) => tracing::warn!(error = %e, "cannot start a scoring thread"),
        }
    }
    (tx, started)
}

/// The scorer: compiled rules and the classifier's data in the store,
/// scored on its own threads ([`SCORING_THREADS_MAX`]). `Send + Sync`; the
/// server shares it as `Arc<Scorer>`.
#[derive(Debug)]
pub struct Scorer {
    shared: Arc<Shared>,
    jobs: mpsc::SyncSender<Job>,
    threads: usize,
}

impl Scorer {
    fn start(rules: Rules, store: Arc<Store>) -> Scorer {
        let (jobs, threads) = scoring_threads();
        Scorer {
            shared: Arc::new(Shared { rules, store }),
            jobs,
            threads,
        }
    }

    /// Rules from a TOML rules file (see [`crate::rules`]); classifier data
    /// read from the store.
    pub fn new(rules_toml: &str, store: Arc<Store>) -> Result<Scorer, FilterError> {
        Ok(Scorer::start(
            Rules::one(RuleSet::parse(rules_toml)?),
            store,
        ))
    }

    /// Rules read already (SpamAssassin rule files, [`crate::sa`], alone or
    /// joined with mxrack's own).
    pub fn with_rules(rules: Rules, store: Arc<Store>) -> Scorer {
        Scorer::start(rules, store)
    }

    /// The rules shipped with the image.
    pub fn embedded(store: Arc<Store>) -> Scorer {
        // The embedded file is parsed by a unit test, so this cannot fail
        // in a built binary.
        let rules = RuleSet::parse(EMBEDDED_RULES).unwrap_or_else(|e| {
            tracing::error!(error = %e, "the embedded rules do not parse; scoring with none");
            RuleSet {
                rules: Vec::new(),
                trusted: Default::default(),
            }
        });
        Scorer::start(Rules::one(rules), store)
    }

    /// From `[spam]`: SpamAssassin's rule folder (alone or joined with
    /// mxrack's own rules), the configured rules file, else the embedded
    /// rules.
    pub fn from_config(
        config: &mxrack_config::Spam,
        store: Arc<Store>,
    ) -> Result<Scorer, FilterError> {
        Ok(Scorer::start(rules_from_config(config)?, store))
    }

    pub fn rules(&self) -> &Rules {
        &self.shared.rules
    }

    /// Scores a message. Pure CPU work but for store reads of token counts;
    /// run it in `spawn_blocking` (it waits for one of the scorer's
    /// threads). A store error only leaves the classifier out (logged): a
    /// message always gets a score.
    pub fn score(&self, message: &[u8], envelope_from: &str) -> Score {
        self.score_at(message, envelope_from, now_secs())
    }

    /// [`Scorer::score`] with the outcomes of the MX's authentication checks
    /// (`DMARC_REJECT`, `DMARC_QUARANTINE`) that the built-in checks of those
    /// names score, and the hand-over to mxrack (`hop`: the newest relay for
    /// SpamAssassin's rules, [`crate::relays`]).
    pub fn score_with_auth(
        &self,
        message: &[u8],
        envelope_from: &str,
        marks: &[String],
        hop: Option<crate::relays::Relay>,
    ) -> Score {
        self.score_with_auth_at(message, envelope_from, marks, hop, now_secs())
    }

    /// [`Scorer::score`] with the time of scoring given (dates are judged
    /// against the newest Received header, else against `now`).
    pub fn score_at(&self, message: &[u8], envelope_from: &str, now: i64) -> Score {
        self.score_with_auth_at(message, envelope_from, &[], None, now)
    }

    /// [`Scorer::score_with_auth`] with the time of scoring given. Hands
    /// a copy of the message to a scoring thread and waits for its score,
    /// however long the queue (callers that would rather wait: the CLI,
    /// benchmarks). With no scoring thread, it scores here.
    pub fn score_with_auth_at(
        &self,
        message: &[u8],
        envelope_from: &str,
        marks: &[String],
        hop: Option<crate::relays::Relay>,
        now: i64,
    ) -> Score {
        if self.threads == 0 {
            return self.shared.score(message, envelope_from, now, marks, hop);
        }
        let (job, waiting) = self.job(message.to_vec(), envelope_from, marks, hop, now);
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            // Every scoring thread has ended (they end only with the
            // scorer): score here.
            job();
        }
        waiting.score.recv().map_or_else(
            |_| {
                tracing::error!("a scoring thread dropped its message; scoring 0");
                Score::failed()
            },
            |(score, _)| score,
        )
    }

    /// Scores a message for an SMTP session: the message (its prefix) moves
    /// to a scoring thread and comes back with the score, so a waiting
    /// session holds one copy. Refused when [`SCORING_QUEUE_MAX`] messages
    /// already wait or no score comes within [`SCORING_WAIT_MAX`] (the
    /// message is then gone with the job); the session answers "try again
    /// later". Blocks: call it in `spawn_blocking`.
    pub fn try_score(
        &self,
        message: Vec<u8>,
        envelope_from: &str,
        marks: &[String],
        hop: Option<crate::relays::Relay>,
    ) -> Result<(Score, Vec<u8>), NotScored> {
        self.try_score_within(message, envelope_from, marks, hop, SCORING_WAIT_MAX)
    }

    /// [`Scorer::try_score`], waiting at most `wait`.
    fn try_score_within(
        &self,
        message: Vec<u8>,
        envelope_from: &str,
        marks: &[String],
        hop: Option<crate::relays::Relay>,
        wait: Duration,
    ) -> Result<(Score, Vec<u8>), NotScored> {
        let now = now_secs();
        if self.threads == 0 {
            let score = self.shared.score(&message, envelope_from, now, marks, hop);
            return Ok((score, message));
        }
        let (job, waiting) = self.job(message, envelope_from, marks, hop, now);
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(_)) => return Err(NotScored::QueueFull),
            Err(mpsc::TrySendError::Disconnected(job)) => job(),
        }
        match waiting.score.recv_timeout(wait) {
            Ok(scored) => Ok(scored),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Still queued, the job drops the message when a thread
                // takes it; already scoring, it finishes unheard.
                waiting.given_up.store(true, Ordering::Release);
                Err(NotScored::TimedOut)
            }
            // The job ended without a score: a bug; the message went with it.
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(NotScored::Dropped),
        }
    }

    /// A scoring job for `message` and where its score (with the message,
    /// handed back) arrives.
    fn job(
        &self,
        message: Vec<u8>,
        envelope_from: &str,
        marks: &[String],
        hop: Option<crate::relays::Relay>,
        now: i64,
    ) -> (Job, Waiting) {
        let (from, marks) = (envelope_from.to_string(), marks.to_vec());
        let shared = self.shared.clone();
        let (done, score) = mpsc::sync_channel(1);
        let given_up = Arc::new(AtomicBool::new(false));
        let gave_up = given_up.clone();
        let job: Job = Box::new(move || {
            // A message whose sender was told to try again later is not
            // scored: that would spend a thread on it when they are short.
            if gave_up.load(Ordering::Acquire) {
                return;
            }
            let scored = shared.score(&message, &from, now, &marks, hop);
            let _ = done.send((scored, message));
        });
        (job, Waiting { score, given_up })
    }

    /// Learns a message as spam (`true`: moved into Junk, or `mxrack spam
    /// train --spam`) or ham (`false`: moved out of Junk). A message learned
    /// before as the other class is relearned, not counted twice.
    pub fn train(&self, message: &[u8], spam: bool) -> Result<LearnOutcome, FilterError> {
        train(&self.shared.store, message, spam)
    }
}

/// The rules `[spam]` names: mxrack's own (a rules file, else the
/// embedded rules), joined with SpamAssassin's rule folder
/// (`spamassassin_rules`, what was left out logged) as `spamassassin_join`
/// says.
pub fn rules_from_config(config: &mxrack_config::Spam) -> Result<Rules, FilterError> {
    let own = || match &config.rules_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| FilterError::Rules(format!("cannot read {}: {e}", path.display())))?;
            RuleSet::parse(&text)
        }
        None => RuleSet::parse(EMBEDDED_RULES),
    };
    let trusted = crate::relays::TrustedNetworks::from_config(&config.trusted_networks);
    let Some(dir) = &config.spamassassin_rules else {
        return Ok(Rules::one(own()?).with_trusted_networks(trusted));
    };
    let sa = crate::sa::load_dir(dir)?;
    tracing::info!(folder = %dir.display(), join = ?config.join(), "spam rules: {}", sa.summary());
    let rules = match config.join() {
        mxrack_config::SpamJoin::Alone => Rules::one(sa.set),
        mxrack_config::SpamJoin::Mean => Rules::mean(own()?, sa.set),
    };
    Ok(rules.with_trusted_networks(trusted))
}

/// Scores a message with `rules` and the classifier in `store` (what
/// [`Scorer::score_at`] does, without its panic guard), for callers that
/// hold a `&Store` (`mxrack spam score`).
pub fn score_message(
    store: &Store,
    rules: &Rules,
    message: &[u8],
    envelope_from: &str,
    hop: Option<crate::relays::Relay>,
    now: i64,
) -> Score {
    let mut view = MailView::parse(message);
    view.hop = hop;
    score_parsed(store, rules, &view, envelope_from, now)
}

fn score_parsed(
    store: &Store,
    rules: &Rules,
    view: &MailView,
    envelope_from: &str,
    now: i64,
) -> Score {
    let probability = match classify(store, view) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "classifier unavailable; scoring by rules only");
            None
        }
    };
    score_view(rules, view, envelope_from, now, probability)
}

/// The score of a parsed message given the classifier's spam probability
/// (`None`: untrained or no evidence): per rule set, the band's score plus
/// the score of every rule that hit, each weighed 1/(number of sets).
/// Pure; what [`score_message`] and the benchmark's in-memory classifier
/// both use.
pub fn score_view(
    rules: &Rules,
    view: &MailView,
    envelope_from: &str,
    now: i64,
    probability: Option<f64>,
) -> Score {
    let sets = rules.sets.len().max(1);
    let share = 1.0 / sets as f32;
    let mut hits: Vec<(String, f32)> = Vec::new();
    // The sum in thousandths of a point (scores have at most three
    // decimals), so a mean ending in .x5 rounds up every time instead of
    // as the binary fractions fall.
    let mut thousandths: i64 = 0;
    let mut add = |name: &str, score: f32| {
        thousandths += (f64::from(score) * 1000.0).round() as i64;
        match hits.iter_mut().find(|(n, _)| n == name) {
            Some((_, s)) => *s += score * share,
            None => hits.push((name.to_string(), score * share)),
        }
    };
    for set in &rules.sets {
        if let Some(p) = probability {
            let band = bayes::band(p);
            if let Some(score) = set.score_of(band) {
                add(band, score);
            }
        }
        for rule in set.evaluate(view, envelope_from, now) {
            if !matches!(rule.kind, RuleKind::Bayes) {
                add(&rule.name, rule.score);
            }
        }
    }
    // Tenths, half up: floor((t / d) + 1/2) with d thousandths per tenth.
    let per_tenth = sets as i64 * 100;
    let tenths = (2 * thousandths + per_tenth).div_euclid(2 * per_tenth);
    Score {
        value: tenths as f32 / 10.0,
        hits,
    }
}

/// Learns a message (see [`Scorer::train`]) with any handle of the store.
/// Learned data of an older token format is dropped by the store in the
/// same transaction (see [`tokens::TOKEN_FORMAT`]).
pub fn train(store: &Store, message: &[u8], spam: bool) -> Result<LearnOutcome, FilterError> {
    let view = MailView::parse(message);
    let tokens = tokens::hashes(&tokens::tokenize(&view));
    if tokens.is_empty() {
        return Err(FilterError::Empty);
    }
    Ok(store.bayes_learn(
        tokens::TOKEN_FORMAT,
        &tokens::signature(&view),
        &tokens,
        spam,
        today(),
    )?)
}

/// The classifier's spam probability for a parsed message, or `None`
/// while fewer than [`bayes::MIN_LEARNED_EACH`] messages of each class were
/// learned (in the current token format), or when no token carries
/// evidence.
pub fn classify(store: &Store, view: &MailView) -> Result<Option<f64>, FilterError> {
    // Untrained: no token lookups at all (the common case on a new appliance).
    let (spam, ham) = store.bayes_learned(tokens::TOKEN_FORMAT)?;
    if spam < bayes::MIN_LEARNED_EACH || ham < bayes::MIN_LEARNED_EACH {
        return Ok(None);
    }
    let hashes = tokens::hashes(&tokens::tokenize(view));
    let counts = store.bayes_counts(tokens::TOKEN_FORMAT, &hashes)?;
    Ok(bayes::probability(
        counts.spam_learned,
        counts.ham_learned,
        &counts.tokens,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_format_and_folding() {
        let s = Score {
            value: 6.3,
            hits: vec![("BAYES_99".into(), 3.5), ("MISSING_DATE".into(), 1.4)],
        };
        assert_eq!(
            s.header(),
            "X-Spam-Score: 6.3 (BAYES_99=3.5, MISSING_DATE=1.4)\r\n"
        );
        let none = Score {
            value: 0.0,
            hits: vec![],
        };
        assert_eq!(none.header(), "X-Spam-Score: 0.0 (none)\r\n");
        let many = Score {
            value: 12.0,
            hits: (0..20)
                .map(|i| (format!("SOME_LONG_RULE_NAME_{i}"), 0.6))
                .collect(),
        };
        let h = many.header();
        assert!(h.ends_with(")\r\n"));
        for line in h.trim_end_matches("\r\n").split("\r\n") {
            assert!(line.len() <= HEADER_LINE_CHARS_MAX, "{line:?}");
        }
        assert!(
            h.split("\r\n")
                .skip(1)
                .filter(|l| !l.is_empty())
                .all(|l| l.starts_with('\t'))
        );
        // Unfolded, it reads back as the one list.
        let unfolded = h.replace("\r\n\t", " ");
        assert!(unfolded.contains("SOME_LONG_RULE_NAME_0=0.6, SOME_LONG_RULE_NAME_1=0.6"));
        assert_eq!(short(0.001), "0.001");
        assert_eq!(short(-1.9), "-1.9");
        assert_eq!(short(2.0), "2");
    }

    #[test]
    fn joined_sets_score_the_mean_and_name_a_shared_rule_once() {
        let set = |rules: &[(&str, f32)]| {
            let text: String = rules
                .iter()
                .map(|(name, score)| {
                    format!(
                        "[[rule]]\nname = \"{name}\"\nkind = \"header\"\nheader = \"Subject\"\n\
                         pattern = 'winner'\nscore = {score}\n\n"
                    )
                })
                .collect();
            RuleSet::parse(&text).expect("rules")
        };
        let own = set(&[("SUBJ_WINNER", 2.0), ("OWN_ONLY", 1.0)]);
        let sa = set(&[("SUBJ_WINNER", 3.0), ("SA_ONLY", 0.5)]);
        let view = MailView::parse(b"Subject: a winner\r\n\r\nbody\r\n");
        let one = score_view(&Rules::one(sa.clone()), &view, "", 0, None);
        assert_eq!(one.value, 3.5);
        let joined = Rules::mean(own, sa);
        assert_eq!(joined.len(), 4);
        let score = score_view(&joined, &view, "", 0, None);
        assert_eq!(
            score.hits,
            vec![
                ("SUBJ_WINNER".to_string(), 2.5),
                ("OWN_ONLY".to_string(), 0.5),
                ("SA_ONLY".to_string(), 0.25),
            ]
        );
        assert_eq!(score.value, 3.3);
        // A mean ending in .x5 rounds up, whatever binary fractions make of
        // it: (0.1 + 2.8) / 2 = 1.45 -> 1.5; (2.0 + 7.9) / 2 = 4.95 -> 5.0.
        for ((a, b), want) in [((0.1, 2.8), 1.5), ((2.0, 7.9), 5.0), ((-0.1, -2.8), -1.4)] {
            let joined = Rules::mean(set(&[("A", a)]), set(&[("B", b)]));
            assert_eq!(
                score_view(&joined, &view, "", 0, None).value,
                want,
                "{a} {b}"
            );
        }
    }

    #[test]
    fn scores_on_its_own_threads_and_survives_a_panic_there() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path()).expect("store");
        let scorer = Arc::new(Scorer::embedded(store.clone()));
        assert!((1..=SCORING_THREADS_MAX).contains(&scorer.threads));
        let msg = b"Subject: hello\r\n\r\nbody\r\n";
        let alone = scorer.score_at(msg, "a@b.example", 0);
        // Many callers at once get the score one caller gets.
        let callers: Vec<_> = (0..16)
            .map(|_| {
                let scorer = scorer.clone();
                std::thread::spawn(move || scorer.score_at(msg, "a@b.example", 0))
            })
            .collect();
        for c in callers {
            assert_eq!(c.join().expect("caller"), alone);
        }
        // A job that panics on a scoring thread does not take the thread
        // with it: the scorer still scores on all of them.
        for _ in 0..scorer.threads {
            let job: Job = Box::new(|| panic!("a bug in a job"));
            scorer.jobs.send(job).unwrap();
        }
        assert_eq!(scorer.score_at(msg, "a@b.example", 0), alone);
        drop(scorer);
        store.shutdown();
    }

    #[test]
    fn a_session_is_refused_when_the_queue_is_full_or_its_score_is_late() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path()).expect("store");
        let scorer = Scorer::embedded(store.clone());
        let msg = b"Subject: hello\r\n\r\nbody\r\n".to_vec();
        let now = now_secs();
        let alone = scorer.shared.score(&msg, "a@b.example", now, &[], None);
        // The message moves to the scoring thread and comes back whole.
        let (score, back) = scorer
            .try_score(msg.clone(), "a@b.example", &[], None)
            .expect("scored");
        assert_eq!((score, &back), (alone.clone(), &msg));

        // Every scoring thread busy (held until `gate` is released) ...
        let gate = Arc::new(std::sync::RwLock::new(()));
        let held = gate.write().expect("gate");
        let (started, running) = mpsc::channel();
        for _ in 0..scorer.threads {
            let (gate, started) = (gate.clone(), started.clone());
            let job: Job = Box::new(move || {
                started.send(()).expect("test waits");
                drop(gate.read());
            });
            scorer.jobs.send(job).expect("queued");
        }
        for _ in 0..scorer.threads {
            running.recv().expect("a blocker runs");
        }
        // ... a message waits, and is given up after the wait ...
        assert_eq!(
            scorer.try_score_within(msg.clone(), "", &[], None, Duration::from_millis(50)),
            Err(NotScored::TimedOut)
        );
        // ... and once SCORING_QUEUE_MAX wait (the message given up is one
        // of them: it waits for a thread still), the next is refused at once.
        for _ in 1..SCORING_QUEUE_MAX {
            let gate = gate.clone();
            let job: Job = Box::new(move || drop(gate.read()));
            scorer.jobs.try_send(job).expect("room in the queue");
        }
        assert_eq!(
            scorer.try_score(msg.clone(), "", &[], None),
            Err(NotScored::QueueFull)
        );
        // Released, the queue drains (a caller that would rather wait gets
        // its score after every job before it: the queue is then empty) and
        // sessions are scored again.
        drop(held);
        assert_eq!(scorer.score_at(&msg, "a@b.example", now), alone);
        let (score, back) = scorer
            .try_score(msg.clone(), "a@b.example", &[], None)
            .expect("scored");
        assert_eq!((score, back), (alone, msg.clone()));
        // A job whose caller gave up is not scored: it ends without a word.
        let (job, waiting) = scorer.job(msg, "", &[], None, now);
        waiting.given_up.store(true, Ordering::Release);
        job();
        assert!(waiting.score.recv().is_err());
        drop(scorer);
        store.shutdown();
    }

    #[test]
    fn embedded_rules_parse() {
        let set = RuleSet::parse(EMBEDDED_RULES).expect("embedded rules parse");
        // Every built-in check and every Bayes band has a score.
        for (name, _) in crate::checks::BUILTIN_CHECKS {
            assert!(set.score_of(name).is_some(), "{name} has no score");
        }
        for (_, band) in bayes::BANDS {
            assert!(set.score_of(band).is_some(), "{band} has no score");
        }
        assert!(set.rules.len() > 40);
    }
}
