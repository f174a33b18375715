//! The forward gate over a real store in a temporary folder: the seed's
//! Hotmail story end to end. A spammy forward to hotmail.com is discarded
//! at 1.0 while a clean one passes; complaint reports (ARF) raise the
//! complaint rate and lower the threshold; good days raise it back; the
//! bounds hold; every change has its reason; a restart keeps it all.

use std::collections::BTreeMap;
use std::sync::Arc;

use mxrack_config::Forward;
use mxrack_filter::{
    ComplaintKind, ForwardGate, Scorer, TRACE_HEADER, format_samples, format_stats,
};
use mxrack_store::Store;

const DAY: i64 = 13_418; // 2006-09-27

fn config() -> Forward {
    Forward {
        bounds: BTreeMap::from([("hotmail.com".to_string(), [0.0, 3.0])]),
        ..Forward::default()
    }
}

/// An ARF report (RFC 5965 Appendix B.2's shape) about a forwarded copy
/// that carried `trace` (when given) and `message_id`.
fn report(feedback_type: &str, trace: Option<&str>, message_id: &str) -> Vec<u8> {
    let trace_line = trace.map_or(String::new(), |t| format!("{TRACE_HEADER}: {t}\n"));
    format!(
        "From: <staff@hotmail.com>
Date: Wed, 27 Sep 2006 18:24:00 +0000
Subject: complaint about message from 192.0.2.25
To: <abuse-feedback@example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
    boundary=\"b1\"

--b1
Content-Type: text/plain

A user of ours marked this message as spam.

--b1
Content-Type: message/feedback-report

Feedback-Type: {feedback_type}
User-Agent: Hotmail FBL/1.0
Version: 1
Original-Rcpt-To: <someone@hotmail.com>
Reporting-MTA: dns; mx1.hotmail.com

--b1
Content-Type: message/rfc822
Content-Disposition: inline

Received: from mx1.example.net by mx1.hotmail.com; Wed, 27 Sep 2006 10:00:00 +0000
From: Kim <kim@example.org>
To: someone@hotmail.com
Subject: out of town again
{trace_line}Message-ID: {message_id}
Date: Wed, 27 Sep 2006 09:59:00 +0000

I won't be able to attend...out of town...again!
--b1--
"
    )
    .replace('\n', "\r\n")
    .into_bytes()
}

const CLEAN: &str = "From: Kim <kim@example.org>\r\nTo: jo@example.net\r\nSubject: minutes of Tuesday\r\nDate: Wed, 27 Sep 2006 09:59:00 +0000\r\nMessage-ID: <m1@example.org>\r\nReceived: from a by mx1.example.net; Wed, 27 Sep 2006 10:00:00 +0000\r\n\r\nThanks for taking such good minutes. See you next month.\r\n";

const SPAMMY: &str = "From: \"service@bank.example\" <x48213@cheap.example>\r\nTo: undisclosed-recipients:;\r\nSubject: FREE CASH NOW GUARANTEED!!!\r\nDate: Wed, 27 Sep 2006 09:59:00 -1900\r\nReceived: from a by mx1.example.net; Wed, 27 Sep 2006 10:00:00 +0000\r\nContent-Type: text/html\r\n\r\n<html><font size=\"6\" color=\"red\">Click here</font> for your FREE offer: <a href=\"http://192.0.2.1/remove?u=jo@example.net\">act now</a>! Limited time, no obligation, 100% guarantee!!!</html>\r\n";

#[test]
fn the_hotmail_story() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let gate = ForwardGate::new(store.clone(), config());
    let scorer = Scorer::embedded(store.clone());

    // Defaults as in the seed.
    assert_eq!(gate.threshold("hotmail.com"), 1.0);
    assert_eq!(gate.threshold("MX1.Hotmail.com"), 1.0);
    assert_eq!(gate.threshold("msn.com"), 1.0);
    assert_eq!(gate.threshold("example.org"), 6.0);

    // A spammy forward to Hotmail is discarded at 1.0, a clean one passes.
    let spam = scorer.score(SPAMMY.as_bytes(), "bulk@cheap.example");
    let clean = scorer.score(CLEAN.as_bytes(), "kim@example.org");
    assert!(spam.value >= 6.0, "{spam:?}");
    assert!(clean.value < 1.0, "{clean:?}");
    assert!(spam.header().starts_with("X-Spam-Score: "));
    assert!(gate.should_discard("hotmail.com", spam.value));
    assert!(!gate.should_discard("hotmail.com", clean.value));
    gate.record_discard_on("hotmail.com", spam.value, DAY)
        .expect("discard");

    // 100 clean forwards to Hotmail on DAY, 2 of them complained about.
    let mut traces = Vec::new();
    for i in 0..100 {
        let mid = format!("<m{i}@example.org>");
        traces.push(
            gate.record_forward_on("hotmail.com", Some(&mid), clean.value, DAY)
                .expect("forward"),
        );
    }
    assert_eq!(traces[0].len(), 16);
    let by_trace = gate
        .record_complaint_on(&report("abuse", Some(&traces[7]), "<m7@example.org>"), DAY)
        .expect("report");
    assert_eq!(by_trace.kind, ComplaintKind::Counted);
    assert_eq!(by_trace.destination.as_deref(), Some("hotmail.com"));
    assert_eq!(by_trace.trace_id.as_deref(), Some(traces[7].as_str()));
    // The same copy again: kept, not counted twice.
    let again = gate
        .record_complaint_on(&report("abuse", Some(&traces[7]), "<m7@example.org>"), DAY)
        .expect("report");
    assert_eq!(again.kind, ComplaintKind::Repeat);
    // Matched by Message-ID only (a report that dropped our header).
    let by_mid = gate
        .record_complaint_on(&report("abuse", None, "<m42@example.org>"), DAY)
        .expect("report");
    assert_eq!(by_mid.kind, ComplaintKind::Counted);
    assert_eq!(by_mid.trace_id.as_deref(), Some(traces[42].as_str()));
    // Unknown copy, and a not-spam report: kept, not counted.
    let unknown = gate
        .record_complaint_on(&report("abuse", Some("00000000000000ff"), "<nope@x>"), DAY)
        .expect("report");
    assert_eq!(unknown.kind, ComplaintKind::Unmatched);
    let not_spam = gate
        .record_complaint_on(
            &report("not-spam", Some(&traces[3]), "<m3@example.org>"),
            DAY,
        )
        .expect("report");
    assert_eq!(not_spam.kind, ComplaintKind::NotComplaint);
    assert!(gate.record_complaint_on(CLEAN.as_bytes(), DAY).is_err());

    // 2 complaints / 100 forwards = 2% > 0.1%: down one step.
    let changes = gate.evaluate(DAY).expect("evaluate");
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].destination, "hotmail.com");
    assert_eq!((changes[0].from, changes[0].to), (1.0, 0.5));
    assert_eq!((changes[0].forwards, changes[0].complaints), (100, 2));
    assert!(
        changes[0].reason.contains("above the target"),
        "{}",
        changes[0].reason
    );
    assert_eq!(gate.threshold("hotmail.com"), 0.5);
    // Evaluating the same day again changes nothing.
    assert!(gate.evaluate(DAY).expect("evaluate").is_empty());

    // Complaints keep coming: down to the minimum, never below.
    let mut day = DAY + 1;
    for expected in [0.0, 0.0] {
        for i in 0..50 {
            let t = gate
                .record_forward_on("hotmail.com", Some(&format!("<d{day}-{i}@x>")), 0.0, day)
                .expect("forward");
            if i == 0 {
                gate.record_complaint_on(&report("abuse", Some(&t), "<x@x>"), day)
                    .expect("report");
            }
        }
        gate.evaluate(day).expect("evaluate");
        assert_eq!(gate.threshold("hotmail.com"), expected, "day {day}");
        day += 1;
    }

    // Good days: while the last complaint is inside the 7-day window the
    // threshold stays; then it goes back up one step a day (each step on
    // fresh evidence), never above the maximum (3.0).
    let mut seen = Vec::new();
    for _ in 0..14 {
        for i in 0..50 {
            gate.record_forward_on("hotmail.com", Some(&format!("<g{day}-{i}@x>")), 0.0, day)
                .expect("forward");
        }
        for c in gate.evaluate(day).expect("evaluate") {
            assert!(c.reason.contains("raised"), "{}", c.reason);
        }
        seen.push(gate.threshold("hotmail.com"));
        day += 1;
    }
    assert_eq!(
        seen,
        [
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0, 3.0
        ]
    );

    // gmail.com sends no complaints (no feedback loop): a week of clean
    // forwards proves nothing, its threshold stays at the configured 6.0.
    for d in day - 6..=day {
        for i in 0..50 {
            gate.record_forward_on("gmail.com", Some(&format!("<gm{d}-{i}@x>")), 2.0, d)
                .expect("forward");
        }
    }
    gate.evaluate(day).expect("evaluate");
    assert_eq!(gate.threshold("gmail.com"), 6.0);
    assert_eq!(gate.threshold("msn.com"), 1.0);

    // Stats and samples.
    let stats = gate.stats_at(day).expect("stats");
    let hotmail = stats
        .iter()
        .find(|s| s.destination == "hotmail.com")
        .expect("hotmail row");
    assert_eq!(hotmail.threshold, 3.0);
    assert_eq!((hotmail.min, hotmail.max), (0.0, 3.0));
    assert_eq!(hotmail.total.forwards, 100 + 2 * 50 + 14 * 50);
    assert_eq!(hotmail.total.discards, 1);
    assert_eq!(hotmail.total.complaints, 4);
    assert!(!hotmail.recent_changes.is_empty());
    assert!(stats.iter().any(|s| s.destination == "msn.com"));
    let text = format_stats(&stats, 7);
    assert!(text.contains("hotmail.com") && text.contains("recent threshold changes"));
    let samples = gate.samples(100).expect("samples");
    assert_eq!(samples.len(), 7);
    assert_eq!(samples.iter().filter(|s| s.counted).count(), 4);
    assert!(samples[0].headers.contains("Subject: out of town again"));
    assert!(format_samples(&samples).contains("Hotmail FBL/1.0"));

    // A restart keeps the adapted thresholds.
    drop(gate);
    drop(scorer);
    store.shutdown();
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    let gate = ForwardGate::new(store.clone(), config());
    assert_eq!(gate.threshold("hotmail.com"), 3.0);

    // The operator changes hotmail's initial threshold: the configuration
    // wins at once, and the next evaluation records why.
    let mut changed = config();
    changed.thresholds.insert("hotmail.com".into(), 2.0);
    let gate = ForwardGate::new(store.clone(), changed);
    assert_eq!(gate.threshold("hotmail.com"), 2.0);
    let changes = gate.evaluate(day + 1).expect("evaluate");
    assert!(
        changes
            .iter()
            .any(|c| c.destination == "hotmail.com" && c.reason.contains("configured")),
        "{changes:?}"
    );
}

#[test]
fn training_moves_the_classifier_and_relearns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<Store> = Store::open(dir.path()).expect("store");
    let scorer = Scorer::embedded(store.clone());
    // Below the minimum of learned messages the classifier stays silent.
    let before = scorer.score(CLEAN.as_bytes(), "");
    assert!(!before.hits.iter().any(|(n, _)| n.starts_with("BAYES_")));
    for i in 0..120 {
        let ham = format!(
            "From: kim{i}@example.org\r\nSubject: minutes {i}\r\nMessage-ID: <h{i}@example.org>\r\n\r\nthe committee minutes agenda meeting tuesday notes {i}\r\n"
        );
        let spam = format!(
            "From: deals{i}@cheap.example\r\nSubject: cheap pills {i}\r\nMessage-ID: <s{i}@cheap.example>\r\n\r\nbuy cheap pills discount pharmacy offer {i}\r\n"
        );
        assert_eq!(
            scorer.train(ham.as_bytes(), false).expect("train"),
            mxrack_filter::LearnOutcome::Learned
        );
        scorer.train(spam.as_bytes(), true).expect("train");
    }
    let pills = "From: x@y.example\r\nSubject: pills\r\n\r\ncheap pills discount pharmacy\r\n";
    let minutes =
        "From: x@y.example\r\nSubject: minutes\r\n\r\ncommittee minutes agenda tuesday\r\n";
    let s = scorer.score(pills.as_bytes(), "");
    let h = scorer.score(minutes.as_bytes(), "");
    assert!(s.hit("BAYES_999") || s.hit("BAYES_99"), "{s:?}");
    assert!(h.hit("BAYES_00"), "{h:?}");
    // Moved into Junk by mistake and back out: relearned, not double counted.
    let m = "From: kim0@example.org\r\nSubject: minutes 0\r\nMessage-ID: <h0@example.org>\r\n\r\nthe committee minutes agenda meeting tuesday notes 0\r\n";
    assert_eq!(
        scorer.train(m.as_bytes(), true).expect("train"),
        mxrack_filter::LearnOutcome::Relearned
    );
    assert_eq!(
        scorer.train(m.as_bytes(), false).expect("train"),
        mxrack_filter::LearnOutcome::Relearned
    );
    assert_eq!(
        scorer.train(m.as_bytes(), false).expect("train"),
        mxrack_filter::LearnOutcome::AlreadyLearned
    );
    let (spam_n, ham_n, _, _) = store.bayes_totals().expect("totals");
    assert_eq!((spam_n, ham_n), (120, 120));
}
