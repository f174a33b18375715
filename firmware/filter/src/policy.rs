//! The adaptive forward-gate policy, pure: from one destination's
//! threshold and the complaints and forwards measured since it last moved,
//! decide whether it moves and say why.
//!
//! The seed (2006-09-27): complaints from Hotmail users pushed the discard
//! threshold for forwards to Hotmail from 6.0 down to 1.0, with the promise
//! to raise it again "if the complaint rates improve considerably". Here
//! that is a rule: above the target rate the threshold goes down by one
//! step per evaluation; at half the target or less, with enough forwards
//! to trust the rate, it goes up by one step; always within the bounds.

/// The policy's parameters (from `[forward]`, bounds per destination).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyParams {
    pub target_complaint_rate: f64,
    pub step: f32,
    pub min_forwards: u64,
    pub min_threshold: f32,
    pub max_threshold: f32,
}

/// What was measured for one destination over its evaluation window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evidence {
    pub forwards: u64,
    pub complaints: u64,
    /// Days the window covers (for the reason text).
    pub days: i64,
}

impl Evidence {
    /// Complaints per forward. The divisor is at least `min_forwards`, so a
    /// handful of forwards cannot make one complaint look like a 50% rate;
    /// the complaint still counts (1 over 3 forwards is 1 / min_forwards).
    pub fn rate(&self, min_forwards: u64) -> f64 {
        self.complaints as f64 / self.forwards.max(min_forwards).max(1) as f64
    }
}

/// A decided move.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub to: f32,
    pub reason: String,
}

/// Rounds to 0.001 so repeated steps of 0.5 or 0.1 stay exact in reports.
fn tidy(v: f32) -> f32 {
    (v * 1000.0).round() / 1000.0
}

fn percent(rate: f64) -> String {
    format!("{:.3}%", rate * 100.0)
}

/// Decides one evaluation. `None`: the threshold stays.
pub fn decide(current: f32, evidence: Evidence, p: &PolicyParams) -> Option<Decision> {
    if current < p.min_threshold || current > p.max_threshold {
        let to = tidy(current.clamp(p.min_threshold, p.max_threshold));
        return Some(Decision {
            to,
            reason: format!(
                "outside the bounds [{}, {}]: brought to {to}",
                p.min_threshold, p.max_threshold
            ),
        });
    }
    let rate = evidence.rate(p.min_forwards);
    let measured = format!(
        "{} complaints over {} forwards in {} day(s): {}",
        evidence.complaints,
        evidence.forwards,
        evidence.days,
        percent(rate)
    );
    if evidence.complaints > 0 && rate > p.target_complaint_rate {
        let to = tidy((current - p.step).max(p.min_threshold));
        if to >= current {
            return None;
        }
        return Some(Decision {
            to,
            reason: format!(
                "{measured}, above the target {}: lowered by {}{}",
                percent(p.target_complaint_rate),
                tidy(current - to),
                if to <= p.min_threshold {
                    " (at the minimum)"
                } else {
                    ""
                }
            ),
        });
    }
    if evidence.forwards >= p.min_forwards && rate <= p.target_complaint_rate / 2.0 {
        let to = tidy((current + p.step).min(p.max_threshold));
        if to <= current {
            return None;
        }
        return Some(Decision {
            to,
            reason: format!(
                "{measured}, at most half the target {}: raised by {}{}",
                percent(p.target_complaint_rate),
                tidy(to - current),
                if to >= p.max_threshold {
                    " (at the maximum)"
                } else {
                    ""
                }
            ),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PolicyParams = PolicyParams {
        target_complaint_rate: 0.001,
        step: 0.5,
        min_forwards: 20,
        min_threshold: 0.0,
        max_threshold: 3.0,
    };

    fn ev(forwards: u64, complaints: u64) -> Evidence {
        Evidence {
            forwards,
            complaints,
            days: 1,
        }
    }

    #[test]
    fn complaints_above_target_lower_by_step_never_below_min() {
        let mut t = 1.0;
        let mut seen = Vec::new();
        for _ in 0..5 {
            match decide(t, ev(1000, 5), &P) {
                Some(d) => {
                    assert!(d.reason.contains("above the target"), "{}", d.reason);
                    assert!(
                        d.reason.contains("5 complaints over 1000 forwards"),
                        "{}",
                        d.reason
                    );
                    t = d.to;
                }
                None => break,
            }
            seen.push(t);
        }
        assert_eq!(seen, [0.5, 0.0]);
        assert_eq!(decide(0.0, ev(1000, 5), &P), None);
    }

    #[test]
    fn good_days_raise_never_above_max() {
        let mut t = 1.0;
        let mut seen = Vec::new();
        while let Some(d) = decide(t, ev(1000, 0), &P) {
            assert!(d.reason.contains("raised"), "{}", d.reason);
            t = d.to;
            seen.push(t);
        }
        assert_eq!(seen, [1.5, 2.0, 2.5, 3.0]);
        assert!(decide(3.0, ev(1000, 0), &P).is_none());
    }

    #[test]
    fn in_between_or_too_little_evidence_keeps() {
        // 0.08%: under the target, above half of it.
        assert_eq!(decide(1.0, ev(10_000, 8), &P), None);
        // Good, but too few forwards to trust.
        assert_eq!(decide(1.0, ev(19, 0), &P), None);
        // One complaint over 3 forwards: counted as 1 over 20 = 5%.
        let d = decide(1.0, ev(3, 1), &P).expect("lowered");
        assert_eq!(d.to, 0.5);
        assert!((ev(3, 1).rate(20) - 0.05).abs() < 1e-12);
    }

    #[test]
    fn bounds_changed_under_it() {
        let d = decide(5.0, ev(0, 0), &P).expect("clamped");
        assert_eq!(d.to, 3.0);
        assert!(d.reason.contains("outside the bounds"));
        let d = decide(-1.0, ev(0, 0), &P).expect("clamped");
        assert_eq!(d.to, 0.0);
    }

    #[test]
    fn steps_stay_exact() {
        let p = PolicyParams { step: 0.1, ..P };
        let mut t = 1.0;
        for _ in 0..10 {
            t = decide(t, ev(1000, 5), &p).expect("lowered").to;
        }
        assert_eq!(t, 0.0);
    }
}
