//! The spam and forward-gate commands: `mxrack spam train|stats|score` and
//! `mxrack forward stats|samples|evaluate`. They run like every admin
//! request (over the admin socket while `mxrack run` is up, else on the
//! store directly); `admin::execute` hands them to [`execute`].
//!
//! The forward gate's policy parameters come from the `[forward]` section of
//! the configuration the CLI was given (send the same `--config` as the
//! server's). Files to learn are read by whoever executes the request (the
//! server when it runs), so they must be readable by the appliance's user.

use std::path::{Path, PathBuf};

use mxrack_filter::{
    ForwardGate, LearnOutcome, format_day, format_samples, format_stats, score_message,
};
use mxrack_store::Store;

use crate::admin::AdminRequest;

/// Largest message file learned or scored.
pub const MESSAGE_FILE_BYTES_MAX: u64 = 32 * 1024 * 1024;
/// Files per admin request (the request line stays under its size limit).
pub const TRAIN_FILES_PER_REQUEST: usize = 200;
/// Files one `mxrack spam train` takes in (folders expanded).
pub const TRAIN_FILES_MAX: usize = 1_000_000;

/// `--day YYYY-MM-DD` for clap.
pub fn parse_day_arg(text: &str) -> Result<i64, String> {
    mxrack_filter::parse_day(text).ok_or_else(|| format!("{text:?} is not a date YYYY-MM-DD"))
}

/// The files named on the command line, folders expanded (recursively,
/// sorted), made absolute so the server can read them.
pub fn expand_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let mut pending: Vec<PathBuf> = paths.iter().rev().cloned().collect();
    while let Some(path) = pending.pop() {
        let path = std::fs::canonicalize(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            pending.extend(entries.into_iter().rev());
        } else if path.is_file() {
            out.push(path);
        }
        if out.len() > TRAIN_FILES_MAX {
            return Err(format!("more than {TRAIN_FILES_MAX} files"));
        }
    }
    Ok(out)
}

fn read_message(path: &Path) -> Result<Vec<u8>, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if size > MESSAGE_FILE_BYTES_MAX {
        return Err(format!(
            "{}: {size} bytes, larger than {MESSAGE_FILE_BYTES_MAX}",
            path.display()
        ));
    }
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Answers a spam or forward-gate request.
pub fn execute(store: &Store, request: &AdminRequest) -> Result<Vec<u8>, String> {
    let e = |e: mxrack_filter::FilterError| e.to_string();
    let mut out = String::new();
    match request {
        AdminRequest::SpamTrain { spam, files } => {
            let (mut learned, mut relearned, mut already, mut failed) = (0, 0, 0, 0);
            let mut errors = String::new();
            for file in files {
                let result = read_message(file).and_then(|bytes| {
                    mxrack_filter::train(store, &bytes, *spam)
                        .map_err(|err| format!("{}: {err}", file.display()))
                });
                match result {
                    Ok(LearnOutcome::Learned) => learned += 1,
                    Ok(LearnOutcome::Relearned) => relearned += 1,
                    Ok(LearnOutcome::AlreadyLearned) => already += 1,
                    Err(err) => {
                        failed += 1;
                        errors.push_str(&format!("  {err}\n"));
                    }
                }
            }
            out = format!(
                "learned {learned} as {}, relearned {relearned}, already learned {already}, failed {failed}\n{errors}",
                if *spam { "spam" } else { "ham" }
            );
        }
        AdminRequest::SpamStats => {
            let (spam, ham, tokens, format) =
                store.bayes_totals().map_err(|err| err.to_string())?;
            let current = mxrack_filter::tokens::TOKEN_FORMAT;
            out = format!(
                "learned: {spam} spam, {ham} ham; {tokens} tokens (at most {})\nthe classifier scores once {} of each are learned\n",
                mxrack_store::BAYES_TOKENS_MAX,
                mxrack_filter::bayes::MIN_LEARNED_EACH
            );
            if format != current {
                out.push_str(&format!(
                    "token format {format}, this version tokenizes as {current}: not used; the next message learned starts the classifier again\n"
                ));
            }
        }
        AdminRequest::SpamScore {
            file,
            envelope_from,
            spam,
            hop,
        } => {
            let rules = mxrack_filter::rules_from_config(spam).map_err(e)?;
            let bytes = read_message(file)?;
            // As the MX session makes it (smtp/src/incoming.rs): the
            // reverse DNS confirmed, none, or not known.
            let hop = hop.as_ref().map(|h| {
                let mut relay = mxrack_filter::relays::Relay::hop(h.client, &h.helo, &h.by, "");
                match h.rdns.as_deref() {
                    Some("") => relay.no_rdns = true,
                    Some(name) => relay.rdns = mxrack_filter::relays::sanitize(name),
                    None => {}
                }
                relay
            });
            let score = score_message(
                store,
                &rules,
                &bytes,
                envelope_from,
                hop,
                mxrack_filter::gate::now_secs(),
            );
            out = score.header();
        }
        AdminRequest::ForwardStats { forward, day } => {
            let gate = ForwardGate::with_store(store, forward.clone());
            let day = day.unwrap_or_else(mxrack_filter::today);
            let stats = gate.stats_at(day).map_err(e)?;
            out = format!("as of {}\n", format_day(day));
            out.push_str(&format_stats(&stats, forward.window_days));
        }
        AdminRequest::ForwardSamples { limit } => {
            let samples = store
                .forward_samples(*limit)
                .map_err(|err| err.to_string())?;
            out = if samples.is_empty() {
                "no complaint samples\n".into()
            } else {
                format_samples(&samples)
            };
        }
        AdminRequest::ForwardEvaluate { forward, day } => {
            let gate = ForwardGate::with_store(store, forward.clone());
            // Default: the last complete day, as the server's daily run.
            let day = day.unwrap_or_else(|| mxrack_filter::today() - 1);
            let changes = gate.evaluate(day).map_err(e)?;
            if changes.is_empty() {
                out = format!("{}: no threshold changed\n", format_day(day));
            }
            for c in changes {
                out.push_str(&format!(
                    "{} {}: {} -> {}: {}\n",
                    format_day(c.day),
                    c.destination,
                    c.from,
                    c.to,
                    c.reason
                ));
            }
        }
        other => return Err(format!("not a spam or forward request: {other:?}")),
    }
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn train_stats_score_and_forward_requests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("data")).expect("store");
        let mail = dir.path().join("mail");
        std::fs::create_dir(&mail).expect("mkdir");
        std::fs::write(
            mail.join("1.eml"),
            "Subject: hello\r\n\r\nhello there friend\r\n",
        )
        .expect("write");
        std::fs::write(
            mail.join("2.eml"),
            "Subject: again\r\n\r\nhello again friend\r\n",
        )
        .expect("write");
        let files = expand_files(std::slice::from_ref(&mail)).expect("expand");
        assert_eq!(files.len(), 2);
        let run = |r: AdminRequest| {
            String::from_utf8(execute(&store, &r).expect("execute")).expect("utf8")
        };
        let out = run(AdminRequest::SpamTrain {
            spam: false,
            files: files.clone(),
        });
        assert!(out.starts_with("learned 2 as ham"), "{out}");
        let out = run(AdminRequest::SpamTrain { spam: false, files });
        assert!(out.contains("already learned 2"), "{out}");
        assert!(run(AdminRequest::SpamStats).contains("0 spam, 2 ham"));
        let out = run(AdminRequest::SpamScore {
            file: mail.join("1.eml"),
            envelope_from: String::new(),
            spam: mxrack_config::Spam::default(),
            hop: None,
        });
        assert!(out.starts_with("X-Spam-Score: "), "{out}");
        // SpamAssassin's rule files: joined with mxrack's (the default, each
        // rule at half its score), and alone.
        let sa = dir.path().join("sa");
        std::fs::create_dir(&sa).unwrap();
        std::fs::write(
            sa.join("50_local.cf"),
            "body LOCAL_WORD /./\nscore LOCAL_WORD 0 0 2.5 0\ndescribe LOCAL_WORD any text\n",
        )
        .unwrap();
        let out = run(AdminRequest::SpamScore {
            file: mail.join("1.eml"),
            envelope_from: String::new(),
            spam: mxrack_config::Spam {
                spamassassin_rules: Some(sa.clone()),
                ..Default::default()
            },
            hop: None,
        });
        assert!(out.contains("LOCAL_WORD=1.25"), "{out}");
        let out = run(AdminRequest::SpamScore {
            file: mail.join("1.eml"),
            envelope_from: String::new(),
            spam: mxrack_config::Spam {
                spamassassin_rules: Some(sa),
                spamassassin_join: Some(mxrack_config::SpamJoin::Alone),
                ..Default::default()
            },
            hop: None,
        });
        assert!(out.contains("LOCAL_WORD=2.5"), "{out}");
        let forward = mxrack_config::Forward::default();
        let out = run(AdminRequest::ForwardStats {
            forward: forward.clone(),
            day: Some(13_418),
        });
        assert!(
            out.contains("as of 2006-09-27") && out.contains("hotmail.com"),
            "{out}"
        );
        let out = run(AdminRequest::ForwardEvaluate {
            forward,
            day: Some(13_418),
        });
        assert!(out.contains("no threshold changed"), "{out}");
        assert!(run(AdminRequest::ForwardSamples { limit: 5 }).contains("no complaint samples"));
        assert_eq!(parse_day_arg("2006-09-27"), Ok(13_418));
        assert!(parse_day_arg("27/09/2006").is_err());
    }
}
