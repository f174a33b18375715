//! mxrack-filter: the spam score of inbound mail and the forward gate.
//!
//! * [`Scorer`]: a score on SpamAssassin's scale (5 is the usual spam line)
//!   from a rules file ([`rules`]: header, body, URI and raw patterns, and
//!   built-in checks of missing or malformed headers, HTML-only bodies and
//!   forged-looking senders, [`checks`]) plus a statistical token
//!   classifier ([`tokens`], [`bayes`]: Robinson/Fisher chi-square as in
//!   SpamAssassin's Bayes) trained from a corpus (`mxrack spam train`) and
//!   from mail users move into and out of Junk ([`Scorer::train`]). The
//!   result goes into an `X-Spam-Score` header ([`Score::header`]). No
//!   network lookups.
//! * [`ForwardGate`]: a discard threshold per destination domain for
//!   forwarded copies (1.0 for Microsoft's consumer domains and 6.0 for the
//!   rest by default, as in the seed), counts of forwards, discards and
//!   complaints per destination and day, complaint reports (ARF, RFC 5965,
//!   [`arf`]) matched to the forwarded copy by its trace header
//!   ([`TRACE_HEADER`]) or Message-ID, and the adaptive policy
//!   ([`policy`]) that moves each threshold within its bounds, recording
//!   every change with its reason.
//!
//! Everything persistent is in the store (`mxrack_store`'s `filterdata`);
//! this crate only decides. Parsing, tokenizing, probabilities and the
//! policy are pure modules, unit-tested on their own.

pub mod arf;
pub mod bayes;
pub mod checks;
pub mod gate;
pub mod message;
pub mod policy;
pub mod relays;
pub mod report;
pub mod rules;
pub mod sa;
pub mod sa_eval;
mod scorer;
pub mod tokens;

pub use gate::{
    ComplaintKind, ComplaintOutcome, DestinationStats, ForwardGate, ThresholdChange, day_of,
    format_day, format_samples, format_stats, parse_day, today,
};
pub use mxrack_store::{ComplaintSample, ForwardDayCounters, LearnOutcome};
pub use scorer::{
    EMBEDDED_RULES, NotScored, Rules, SCORER_FAILED, SCORING_QUEUE_MAX, SCORING_THREADS_MAX,
    SCORING_WAIT_MAX, Score, Scorer, classify, rules_from_config, score_message, score_view, train,
};

/// The header a forwarded copy carries so a complaint about it can be
/// traced back: `X-Mxrack-Forward-Id: <16 hex digits>`.
pub const TRACE_HEADER: &str = "X-Mxrack-Forward-Id";

/// The trace header line (CRLF-terminated) for a forwarded copy, from the
/// id [`ForwardGate::record_forward`] returned.
pub fn trace_header(trace_id: &str) -> String {
    format!("{TRACE_HEADER}: {trace_id}\r\n")
}

/// The header the score goes into.
pub const SCORE_HEADER: &str = "X-Spam-Score";

/// Errors of the filter.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// The rules file does not parse or compile; names the rule.
    #[error("rules file: {0}")]
    Rules(String),
    /// A report at the feedback address that is not an ARF report.
    #[error("not an ARF feedback report: {0}")]
    NotArf(String),
    /// A message to learn with no token at all.
    #[error("the message has nothing to learn from")]
    Empty,
    #[error(transparent)]
    Store(#[from] mxrack_store::StoreError),
}

// Shared between tasks as Arc<Scorer> / Arc<ForwardGate>.
const _: () = {
    const fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Scorer>();
    is_send_sync::<ForwardGate>();
};
