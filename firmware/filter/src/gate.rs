//! The forward gate: a discard threshold per destination for forwarded
//! copies (never for local delivery), the counts of forwards, discards and
//! complaints per destination and day, complaint (ARF) reports matched to
//! the forwarded copy they complain about, and the adaptive policy that
//! moves each threshold within its bounds. State lives in the store, so
//! every process (the server, the CLI) sees the same thresholds; nothing
//! is cached here.

use std::ops::Deref;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use mxrack_config::Forward;
use mxrack_store::{
    ComplaintCount, ComplaintSample, ForwardDayCounters, ForwardRecord, Store, ThresholdState,
    id_hex, parse_id_hex,
};

use crate::policy::{self, Evidence, PolicyParams};
use crate::{FilterError, arf};

/// A threshold change (as recorded in the store, with its reason).
pub type ThresholdChange = mxrack_store::ThresholdChangeRecord;

/// Changes shown per destination in [`DestinationStats`].
pub const RECENT_CHANGES_SHOWN: usize = 5;

/// Days since the Unix epoch (UTC) of a Unix time.
pub fn day_of(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(86_400)
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Today, in days since the epoch (UTC).
pub fn today() -> i64 {
    day_of(now_secs())
}

/// `YYYY-MM-DD` -> days since the epoch (proleptic Gregorian, UTC).
pub fn parse_day(text: &str) -> Option<i64> {
    let mut it = text.trim().splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let day = days_from_civil(y, m, d);
    (format_day(day) == format!("{y:04}-{m:02}-{d:02}")).then_some(day)
}

/// Howard Hinnant's days_from_civil.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since the epoch -> `YYYY-MM-DD` (Hinnant's civil_from_days).
pub fn format_day(day: i64) -> String {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// What [`ForwardGate::record_complaint`] did with a report.
#[derive(Debug, Clone, PartialEq)]
pub struct ComplaintOutcome {
    pub kind: ComplaintKind,
    pub feedback_type: String,
    /// The destination it was counted for (when matched).
    pub destination: Option<String>,
    pub trace_id: Option<String>,
    pub message_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComplaintKind {
    /// Matched a forwarded copy and counted.
    Counted,
    /// Matched a copy already complained about: kept, not counted again.
    Repeat,
    /// No forwarded copy matched (unknown trace id and Message-ID, or
    /// older than the forward log keeps): kept, not counted.
    Unmatched,
    /// A not-spam or auth-failure report: kept, not counted.
    NotComplaint,
}

/// One destination's figures for `mxrack forward stats`.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationStats {
    pub destination: String,
    /// The threshold applied now (adapted, or the configured initial one).
    pub threshold: f32,
    pub initial: f32,
    pub min: f32,
    pub max: f32,
    /// Over the last `window_days` days (today included).
    pub window: ForwardDayCounters,
    /// Over every day kept.
    pub total: ForwardDayCounters,
    /// Complaints per forward over the window (plain ratio).
    pub window_complaint_rate: f64,
    /// Newest first.
    pub recent_changes: Vec<ThresholdChange>,
}

/// The forward gate. `Send + Sync`; the server shares it as `Arc<ForwardGate>`.
/// `S` is how it holds the store: `Arc<Store>` in the server, `&Store` in
/// an administration request.
#[derive(Debug)]
pub struct ForwardGate<S = Arc<Store>>
where
    S: Deref<Target = Store>,
{
    store: S,
    config: Forward,
}

impl ForwardGate {
    /// The gate over the server's store with the `[forward]` configuration.
    pub fn new(store: Arc<Store>, config: Forward) -> ForwardGate {
        ForwardGate { store, config }
    }
}

impl<S: Deref<Target = Store>> ForwardGate<S> {
    /// The gate over any handle of the store (e.g. `&Store`).
    pub fn with_store(store: S, config: Forward) -> ForwardGate<S> {
        ForwardGate { store, config }
    }

    pub fn config(&self) -> &Forward {
        &self.config
    }

    /// The destination a recipient domain is counted under (see
    /// [`Forward::destination`]).
    pub fn destination(&self, domain: &str) -> String {
        self.config.destination(domain)
    }

    /// The current discard threshold for a recipient domain: the adapted
    /// one, or the configured initial one, always within the bounds. A
    /// store read error falls back to the configured value (logged), so a
    /// forward is still judged.
    pub fn threshold(&self, destination_domain: &str) -> f32 {
        let dest = self.destination(destination_domain);
        let initial = self.config.initial_threshold(&dest);
        let (lo, hi) = self.config.bounds_of(&dest);
        let adapted = match self.store.forward_threshold(&dest) {
            Ok(Some(state)) if state.initial == initial => state.threshold,
            Ok(_) => initial,
            Err(e) => {
                tracing::warn!(error = %e, destination = %dest, "cannot read the forward threshold; using the configured one");
                initial
            }
        };
        adapted.clamp(lo, hi)
    }

    /// True when a forwarded copy with this score must be discarded: the
    /// score is at or above the destination's threshold (the seed: "mail
    /// scoring 1.0 and higher ... is being discarded").
    pub fn should_discard(&self, destination_domain: &str, score: f32) -> bool {
        score >= self.threshold(destination_domain)
    }

    /// Records a forwarded copy leaving (counted per destination and day);
    /// returns the trace id to put in its [`crate::TRACE_HEADER`].
    pub fn record_forward(
        &self,
        destination_domain: &str,
        message_id: Option<&str>,
        score: f32,
    ) -> Result<String, FilterError> {
        self.record_forward_on(destination_domain, message_id, score, today())
    }

    /// [`ForwardGate::record_forward`] counted on a given day (days since
    /// the epoch; tests and replays).
    pub fn record_forward_on(
        &self,
        destination_domain: &str,
        message_id: Option<&str>,
        score: f32,
        day: i64,
    ) -> Result<String, FilterError> {
        let record = ForwardRecord {
            destination: self.destination(destination_domain),
            day,
            message_id: message_id.and_then(arf::normalize_message_id),
            score,
            complaints: 0,
        };
        let id = self.store.forward_log_add(&record)?;
        Ok(id_hex(id))
    }

    /// Records a forwarded copy discarded by the gate (counted and logged;
    /// the local copy, if any, is not the gate's business).
    pub fn record_discard(&self, destination_domain: &str, score: f32) -> Result<(), FilterError> {
        self.record_discard_on(destination_domain, score, today())
    }

    /// [`ForwardGate::record_discard`] counted on a given day.
    pub fn record_discard_on(
        &self,
        destination_domain: &str,
        score: f32,
        day: i64,
    ) -> Result<(), FilterError> {
        let dest = self.destination(destination_domain);
        let threshold = self.threshold(&dest);
        self.store.forward_count_discard(&dest, day)?;
        tracing::info!(destination = %dest, score, threshold, "forwarded copy discarded by the spam gate");
        Ok(())
    }

    /// Handles a report received at the feedback address: parses it (ARF),
    /// matches it to a forwarded copy (trace header, else Message-ID),
    /// counts it for that copy's destination today, keeps it as a sample.
    pub fn record_complaint(&self, report: &[u8]) -> Result<ComplaintOutcome, FilterError> {
        self.record_complaint_on(report, today())
    }

    /// [`ForwardGate::record_complaint`] counted on a given day.
    pub fn record_complaint_on(
        &self,
        report: &[u8],
        day: i64,
    ) -> Result<ComplaintOutcome, FilterError> {
        let r = arf::parse(report)?;
        let trace = r.trace_id.as_deref().and_then(parse_id_hex);
        let found = self.store.forward_find(trace, r.message_id.as_deref())?;
        let sample = ComplaintSample {
            id: 0,
            received: now_secs(),
            destination: None,
            trace_id: r.trace_id.clone(),
            message_id: r.message_id.clone(),
            feedback_type: r.feedback_type.clone(),
            user_agent: r.user_agent.clone(),
            reporting_mta: r.reporting_mta.clone(),
            original_rcpt_to: r.original_rcpt_to.clone(),
            arrival_date: r.arrival_date,
            score: None,
            counted: false,
            headers: r.headers.clone(),
        };
        let matched = found.as_ref().map(|(id, _)| *id);
        let (kind, destination) = if !r.is_complaint() {
            self.store.forward_complaint(None, sample, day)?;
            (
                ComplaintKind::NotComplaint,
                found.map(|(_, rec)| rec.destination),
            )
        } else {
            let counted = self.store.forward_complaint(matched, sample, day)?;
            let kind = match counted {
                ComplaintCount::Counted => ComplaintKind::Counted,
                ComplaintCount::Repeat => ComplaintKind::Repeat,
                ComplaintCount::Unmatched => ComplaintKind::Unmatched,
            };
            (kind, found.map(|(_, rec)| rec.destination))
        };
        tracing::info!(
            kind = ?kind,
            feedback_type = %r.feedback_type,
            destination = destination.as_deref().unwrap_or("-"),
            trace = r.trace_id.as_deref().unwrap_or("-"),
            "complaint report"
        );
        Ok(ComplaintOutcome {
            kind,
            feedback_type: r.feedback_type,
            destination,
            trace_id: matched.map(id_hex).or(r.trace_id),
            message_id: r.message_id,
        })
    }

    fn params(&self, destination: &str) -> PolicyParams {
        let (min_threshold, max_threshold) = self.config.bounds_of(destination);
        PolicyParams {
            target_complaint_rate: self.config.target_complaint_rate,
            step: self.config.step,
            min_forwards: self.config.min_forwards,
            min_threshold,
            max_threshold,
        }
    }

    /// Runs the adaptive policy for `day` (days since the epoch) over every
    /// destination with counters in the window or an adapted threshold.
    /// Each destination is evaluated at most once per day. The evidence is
    /// the window's counters since the day after the threshold last moved
    /// (each step needs fresh evidence). A destination that never sent a
    /// complaint (in the counters kept) has no feedback loop, so its silence
    /// proves nothing: it is never raised above its configured initial
    /// threshold. Returns the changes, each also recorded with its reason.
    pub fn evaluate(&self, day: i64) -> Result<Vec<ThresholdChange>, FilterError> {
        let window = i64::from(self.config.window_days);
        let first = day - window + 1;
        let history = self
            .store
            .forward_days(day - mxrack_store::FORWARD_DAYS_KEPT, day)?;
        let counters: Vec<_> = history.iter().filter(|(_, d, _)| *d >= first).collect();
        let stored = self.store.forward_thresholds()?;
        let mut destinations: Vec<String> = counters
            .iter()
            .map(|(d, _, _)| d.clone())
            .chain(stored.iter().map(|(d, _)| d.clone()))
            .collect();
        destinations.sort();
        destinations.dedup();
        let mut states = Vec::new();
        let mut changes = Vec::new();
        for dest in destinations {
            let initial = self.config.initial_threshold(&dest);
            let previous = stored
                .iter()
                .find(|(d, _)| *d == dest)
                .map(|(_, s)| s.clone());
            if previous
                .as_ref()
                .is_some_and(|p| p.last_evaluated_day >= day)
            {
                continue;
            }
            // A changed configured initial threshold wins over the adapted one.
            let (mut state, config_change) = match previous {
                Some(p) if p.initial == initial => (p, None),
                Some(p) => (
                    ThresholdState {
                        threshold: initial,
                        initial,
                        last_evaluated_day: p.last_evaluated_day,
                        last_change_day: Some(day),
                    },
                    Some((
                        p.threshold,
                        format!(
                            "configured initial threshold changed from {} to {initial}",
                            p.initial
                        ),
                    )),
                ),
                None => (
                    ThresholdState {
                        threshold: initial,
                        initial,
                        last_evaluated_day: i64::MIN,
                        last_change_day: None,
                    },
                    None,
                ),
            };
            let since = state.last_change_day.map_or(first, |c| (c + 1).max(first));
            let mut evidence = Evidence {
                days: (day - since + 1).max(0),
                ..Evidence::default()
            };
            for (_, d, c) in counters.iter().filter(|(d, _, _)| *d == dest) {
                if *d >= since {
                    evidence.forwards += c.forwards;
                    evidence.complaints += c.complaints;
                }
            }
            // Silence is evidence only from a destination that complains:
            // one that never sent a complaint (no feedback loop) is never
            // raised above its configured initial threshold.
            let has_feedback = history
                .iter()
                .any(|(d, _, c)| *d == dest && c.complaints > 0);
            let mut params = self.params(&dest);
            if !has_feedback {
                params.max_threshold = params.max_threshold.min(initial.max(params.min_threshold));
            }
            let record = |from: f32, to: f32, reason: String| ThresholdChange {
                id: 0,
                day,
                destination: dest.clone(),
                from,
                to,
                reason,
                forwards: evidence.forwards,
                complaints: evidence.complaints,
                complaint_rate: evidence.rate(self.config.min_forwards),
            };
            if let Some((from, reason)) = config_change {
                changes.push(record(from, state.threshold, reason));
            } else if let Some(decision) = policy::decide(state.threshold, evidence, &params) {
                changes.push(record(state.threshold, decision.to, decision.reason));
                state.threshold = decision.to;
                state.last_change_day = Some(day);
            }
            state.last_evaluated_day = day;
            states.push((dest, state));
        }
        let kept = self.store.forward_apply(day, &states, &changes)?;
        for c in &kept {
            tracing::info!(destination = %c.destination, from = c.from, to = c.to, reason = %c.reason, "forward threshold changed");
        }
        Ok(kept)
    }

    /// The daily run: [`ForwardGate::evaluate`] for yesterday, the last
    /// complete day. Idempotent (a destination is evaluated once per day),
    /// so the server may call it at start and then every hour.
    pub fn evaluate_due(&self) -> Result<Vec<ThresholdChange>, FilterError> {
        self.evaluate(today() - 1)
    }

    /// Per destination figures over the window ending today.
    pub fn stats(&self) -> Result<Vec<DestinationStats>, FilterError> {
        self.stats_at(today())
    }

    /// Per destination figures over the window ending on `day`: every
    /// configured destination, and every destination with counters or an
    /// adapted threshold.
    pub fn stats_at(&self, day: i64) -> Result<Vec<DestinationStats>, FilterError> {
        let first = day - i64::from(self.config.window_days) + 1;
        let all_days = self.store.forward_days(i64::MIN, i64::MAX)?;
        let stored = self.store.forward_thresholds()?;
        let changes = self
            .store
            .forward_changes(mxrack_store::THRESHOLD_CHANGES_MAX as usize)?;
        let mut destinations: Vec<String> = self
            .config
            .thresholds
            .keys()
            .cloned()
            .chain(all_days.iter().map(|(d, _, _)| d.clone()))
            .chain(stored.iter().map(|(d, _)| d.clone()))
            .collect();
        destinations.sort();
        destinations.dedup();
        let mut out = Vec::new();
        for dest in destinations {
            let (min, max) = self.config.bounds_of(&dest);
            let mut window = ForwardDayCounters::default();
            let mut total = ForwardDayCounters::default();
            for (_, d, c) in all_days.iter().filter(|(d, _, _)| *d == dest) {
                for (sum, add) in [(&mut total, true), (&mut window, *d >= first && *d <= day)] {
                    if add {
                        sum.forwards += c.forwards;
                        sum.discards += c.discards;
                        sum.complaints += c.complaints;
                    }
                }
            }
            out.push(DestinationStats {
                threshold: self.threshold(&dest),
                initial: self.config.initial_threshold(&dest),
                min,
                max,
                window_complaint_rate: if window.forwards == 0 {
                    0.0
                } else {
                    window.complaints as f64 / window.forwards as f64
                },
                window,
                total,
                recent_changes: changes
                    .iter()
                    .filter(|c| c.destination == dest)
                    .take(RECENT_CHANGES_SHOWN)
                    .cloned()
                    .collect(),
                destination: dest,
            });
        }
        Ok(out)
    }

    /// The newest complaint samples, newest first.
    pub fn samples(&self, limit: usize) -> Result<Vec<ComplaintSample>, FilterError> {
        Ok(self.store.forward_samples(limit)?)
    }
}

/// `mxrack forward stats` as text: one line per destination, then the
/// recent changes with their reasons.
pub fn format_stats(stats: &[DestinationStats], window_days: u32) -> String {
    let mut out = format!(
        "{:<24} {:>9} {:>13} {:>9} {:>9} {:>10} {:>9} {:>9} {:>10}\n",
        "destination",
        "threshold",
        "bounds",
        "forwards",
        "discards",
        "complaints",
        "rate",
        "forwards",
        "complaints"
    );
    out.push_str(&format!(
        "{:<24} {:>9} {:>13} {:>41} {:>20}\n",
        "",
        "",
        "",
        format!("(last {window_days} days)"),
        "(all days kept)"
    ));
    for s in stats {
        out.push_str(&format!(
            "{:<24} {:>9.2} {:>13} {:>9} {:>9} {:>10} {:>8.3}% {:>9} {:>10}\n",
            s.destination,
            s.threshold,
            format!("[{}, {}]", s.min, s.max),
            s.window.forwards,
            s.window.discards,
            s.window.complaints,
            s.window_complaint_rate * 100.0,
            s.total.forwards,
            s.total.complaints
        ));
    }
    let mut changes: Vec<&ThresholdChange> =
        stats.iter().flat_map(|s| s.recent_changes.iter()).collect();
    changes.sort_by_key(|c| std::cmp::Reverse(c.id));
    if !changes.is_empty() {
        out.push_str("\nrecent threshold changes:\n");
        for c in changes {
            out.push_str(&format!(
                "{} {:<24} {} -> {}: {}\n",
                format_day(c.day),
                c.destination,
                c.from,
                c.to,
                c.reason
            ));
        }
    }
    out
}

/// `mxrack forward samples` as text.
pub fn format_samples(samples: &[ComplaintSample]) -> String {
    let mut out = String::new();
    for s in samples {
        out.push_str(&format!(
            "== {} {} {} destination={} trace={} message-id={} score={} from={} agent={}\n",
            format_day(day_of(s.received)),
            s.feedback_type,
            if s.counted { "counted" } else { "not-counted" },
            s.destination.as_deref().unwrap_or("-"),
            s.trace_id.as_deref().unwrap_or("-"),
            s.message_id.as_deref().unwrap_or("-"),
            s.score.map_or("-".to_string(), |v| v.to_string()),
            s.reporting_mta.as_deref().unwrap_or("-"),
            s.user_agent.as_deref().unwrap_or("-"),
        ));
        out.push_str(s.headers.trim_end());
        out.push_str("\n\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip() {
        assert_eq!(parse_day("1970-01-01"), Some(0));
        assert_eq!(parse_day("2006-09-27"), Some(13_418));
        assert_eq!(format_day(13_418), "2006-09-27");
        assert_eq!(
            parse_day("2000-02-29").map(format_day).as_deref(),
            Some("2000-02-29")
        );
        assert_eq!(parse_day("2001-02-29"), None);
        assert_eq!(parse_day("2006-13-01"), None);
        assert_eq!(parse_day("garbage"), None);
        assert_eq!(day_of(86_399), 0);
        assert_eq!(day_of(86_400), 1);
        for day in [0, 1, 59, 365, 10_957, 20_000, 100_000] {
            assert_eq!(parse_day(&format_day(day)), Some(day), "{day}");
        }
    }
}
