//! The statistical classifier's arithmetic, as in SpamAssassin's Bayes
//! (Mail::SpamAssassin::Bayes::Combine::Chi): Gary Robinson's per-token
//! probability with a prior, combined with Fisher's chi-square method.
//! Pure functions; the counts come from the store.
//!
//! References: Robinson, "A Statistical Approach to the Spam Problem"
//! (Linux Journal, 2003); SpamBayes' `chi2.py`; SpamAssassin's
//! `Bayes/Combine/Chi.pm` (constants below).

/// Robinson's strength of the prior (SpamAssassin: 0.160 with chi-square).
pub const ROBINSON_S: f64 = 0.160;
/// Robinson's prior probability of an unknown token (SpamAssassin: 0.538).
pub const ROBINSON_X: f64 = 0.538;
/// Tokens nearer to 0.5 than this carry no evidence and are skipped
/// (SpamAssassin's `MIN_PROB_STRENGTH` 0.346 is for its own token values;
/// 0.1 here, chosen on the training part of the corpus).
pub const MIN_PROB_STRENGTH: f64 = 0.1;
/// At most this many of the strongest tokens are combined (SpamAssassin: 150).
pub const MAX_TOKENS_USED: usize = 150;
/// Messages of each class that must have been learned before the
/// classifier says anything (SpamAssassin: 200 each).
pub const MIN_LEARNED_EACH: u64 = 100;

/// Robinson's f(w): the spam probability of a token seen in `spam` of
/// `spam_total` spam messages and `ham` of `ham_total` ham messages,
/// pulled towards [`ROBINSON_X`] when it was seen rarely.
pub fn token_probability(spam: u32, ham: u32, spam_total: u64, ham_total: u64) -> f64 {
    let n = f64::from(spam) + f64::from(ham);
    if n == 0.0 || spam_total == 0 || ham_total == 0 {
        return ROBINSON_X;
    }
    // Graham's ratio of the two frequencies (clamped: a token cannot be in
    // more messages than were learned, but counts can drift after pruning).
    let spam_freq = (f64::from(spam) / spam_total as f64).min(1.0);
    let ham_freq = (f64::from(ham) / ham_total as f64).min(1.0);
    let p = spam_freq / (spam_freq + ham_freq);
    (ROBINSON_S * ROBINSON_X + n * p) / (ROBINSON_S + n)
}

/// The survival function of the chi-square distribution with `freedom`
/// (even) degrees of freedom at `chi`: the probability that a chi-square
/// variable is at least `chi`. Exact for even degrees (SpamBayes' chi2Q).
pub fn chi2_survival(chi: f64, freedom: usize) -> f64 {
    debug_assert!(freedom.is_multiple_of(2));
    let m = chi / 2.0;
    let mut term = (-m).exp();
    let mut sum = term;
    for i in 1..freedom / 2 {
        term *= m / i as f64;
        sum += term;
    }
    sum.min(1.0)
}

/// Combines token probabilities into one spam probability in [0, 1]
/// (Fisher-Robinson chi-square): 1 is spam, 0 is ham, 0.5 is "cannot
/// tell". Uses the [`MAX_TOKENS_USED`] strongest probabilities farther than
/// [`MIN_PROB_STRENGTH`] from 0.5; `None` when no token qualifies.
pub fn combine(probabilities: &[f64]) -> Option<f64> {
    let mut strong: Vec<f64> = probabilities
        .iter()
        .copied()
        .filter(|p| (p - 0.5).abs() >= MIN_PROB_STRENGTH)
        .collect();
    if strong.is_empty() {
        return None;
    }
    strong.sort_by(|a, b| {
        (b - 0.5)
            .abs()
            .partial_cmp(&(a - 0.5).abs())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    strong.truncate(MAX_TOKENS_USED);
    let n = strong.len();
    // Sums of logs rather than products, which underflow on long messages.
    let (mut ln_ham, mut ln_spam) = (0.0f64, 0.0f64);
    for p in &strong {
        let p = p.clamp(1e-6, 1.0 - 1e-6);
        ln_spam += (1.0 - p).ln();
        ln_ham += p.ln();
    }
    let spam_indicator = 1.0 - chi2_survival(-2.0 * ln_spam, 2 * n);
    let ham_indicator = 1.0 - chi2_survival(-2.0 * ln_ham, 2 * n);
    Some(((1.0 + spam_indicator - ham_indicator) / 2.0).clamp(0.0, 1.0))
}

/// The spam probability of a message from its tokens' counts (`(spam,
/// ham)` messages each token was learned in) and the messages learned of
/// each class; `None` while fewer than [`MIN_LEARNED_EACH`] of each were
/// learned or when no token carries evidence. Tokens never learned are
/// skipped. What the store-backed scorer and the benchmark both call.
pub fn probability(spam_learned: u64, ham_learned: u64, tokens: &[(u32, u32)]) -> Option<f64> {
    if spam_learned < MIN_LEARNED_EACH || ham_learned < MIN_LEARNED_EACH {
        return None;
    }
    let probabilities: Vec<f64> = tokens
        .iter()
        .filter(|(s, h)| s + h > 0)
        .map(|(s, h)| token_probability(*s, *h, spam_learned, ham_learned))
        .collect();
    combine(&probabilities)
}

/// SpamAssassin's BAYES_* bands: the lower bound of each band's spam
/// probability and the band's rule name. A probability falls into the last
/// band whose bound it reaches.
pub const BANDS: [(f64, &str); 10] = [
    (0.0, "BAYES_00"),
    (0.01, "BAYES_05"),
    (0.05, "BAYES_20"),
    (0.20, "BAYES_40"),
    (0.40, "BAYES_50"),
    (0.60, "BAYES_60"),
    (0.80, "BAYES_80"),
    (0.95, "BAYES_95"),
    (0.99, "BAYES_99"),
    (0.999, "BAYES_999"),
];

/// The band rule name for a spam probability.
pub fn band(probability: f64) -> &'static str {
    let mut name = BANDS[0].1;
    for (bound, n) in BANDS {
        if probability >= bound {
            name = n;
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn token_probability_follows_robinson() {
        // Unknown token: the prior.
        assert!(close(token_probability(0, 0, 10, 10), ROBINSON_X));
        // Only in spam, often: near 1; only in ham: near 0.
        assert!(token_probability(50, 0, 100, 100) > 0.99);
        assert!(token_probability(0, 50, 100, 100) < 0.01);
        // Equal frequencies: 0.5 pulled slightly to the prior.
        let p = token_probability(10, 10, 100, 100);
        assert!(p > 0.5 && p < 0.51, "{p}");
        // Frequencies, not counts: 10 of 100 spam vs 10 of 1000 ham.
        let p = token_probability(10, 10, 100, 1000);
        assert!(p > 0.9, "{p}");
        // One sighting is weak evidence: closer to the prior than ten.
        assert!(token_probability(1, 0, 100, 100) < token_probability(10, 0, 100, 100));
        // Exact value: n = 1, p = 1 -> (s*x + 1) / (s + 1).
        let expected = (ROBINSON_S * ROBINSON_X + 1.0) / (ROBINSON_S + 1.0);
        assert!(close(token_probability(1, 0, 10, 10), expected));
    }

    #[test]
    fn chi2_survival_known_values() {
        // 2 degrees of freedom: exp(-x/2).
        assert!(close(chi2_survival(2.0, 2), (-1.0f64).exp()));
        assert!(close(chi2_survival(0.0, 10), 1.0));
        // 4 degrees: exp(-m)(1+m), m = x/2.
        assert!(close(chi2_survival(6.0, 4), (-3.0f64).exp() * 4.0));
        assert!(chi2_survival(1000.0, 4) < 1e-100);
    }

    #[test]
    fn combine_separates_and_abstains() {
        assert_eq!(combine(&[0.5, 0.55, 0.45]), None);
        let spam = combine(&[0.99, 0.98, 0.95, 0.9, 0.5]).expect("some");
        let ham = combine(&[0.01, 0.02, 0.05, 0.1]).expect("some");
        let mixed = combine(&[0.99, 0.01]).expect("some");
        assert!(spam > 0.95, "{spam}");
        assert!(ham < 0.05, "{ham}");
        assert!((mixed - 0.5).abs() < 0.05, "{mixed}");
        // Symmetric.
        assert!(close(
            spam,
            1.0 - combine(&[0.01, 0.02, 0.05, 0.1, 0.5]).expect("some")
        ));
        // A thousand strong tokens neither underflow nor overflow.
        let many = vec![0.999; 1000];
        assert!(combine(&many).expect("some") > 0.999);
    }

    #[test]
    fn probability_abstains_until_trained_and_skips_unknown_tokens() {
        let tokens = [(40, 0), (0, 0), (30, 1)];
        assert_eq!(probability(MIN_LEARNED_EACH - 1, 500, &tokens), None);
        assert_eq!(probability(500, MIN_LEARNED_EACH - 1, &tokens), None);
        assert_eq!(probability(500, 500, &[(0, 0), (0, 0)]), None);
        let p = probability(500, 500, &tokens).expect("evidence");
        let expected = combine(&[
            token_probability(40, 0, 500, 500),
            token_probability(30, 1, 500, 500),
        ])
        .expect("combined");
        assert!(close(p, expected) && p > 0.9, "{p}");
    }

    #[test]
    fn bands_like_spamassassin() {
        assert_eq!(band(0.0), "BAYES_00");
        assert_eq!(band(0.009), "BAYES_00");
        assert_eq!(band(0.01), "BAYES_05");
        assert_eq!(band(0.5), "BAYES_50");
        assert_eq!(band(0.97), "BAYES_95");
        assert_eq!(band(0.995), "BAYES_99");
        assert_eq!(band(1.0), "BAYES_999");
    }
}
