//! THREAD table tests: each case is a mailbox (raw headers and internal
//! dates, in sequence order) and the exact THREAD data expected.

use super::*;

/// Internal dates used below: one minute apart, in the order given.
fn msgs(heads: &[(&str, i64)]) -> Vec<ThreadMsg> {
    heads
        .iter()
        .enumerate()
        .map(|(i, (head, date))| {
            let raw = format!("{head}\r\n\r\nbody\r\n");
            let parsed = crate::fetch::parse(raw.as_bytes());
            ThreadMsg::of(i as u32 + 1, parsed.as_ref(), *date)
        })
        .collect()
}

#[test]
fn references_cases() {
    // (what, mailbox, THREAD data)
    type Case<'a> = (&'a str, &'a [(&'a str, i64)], &'a str);
    let cases: &[Case<'_>] = &[
        (
            // The reply's last reference would make a loop: the link is
            // not made, and the former parent's link is broken.
            "loop refused",
            &[
                ("Message-ID: <m1@x>", 300),
                ("Message-ID: <m2@x>\r\nReferences: <m1@x> <m3@x>", 100),
                ("Message-ID: <m3@x>\r\nReferences: <m2@x>", 200),
            ],
            "(3 2)(1)",
        ),
        (
            "duplicate Message-ID threads alone",
            &[("Message-ID: <d@x>", 100), ("Message-ID: <d@x>", 100)],
            "(1)(2)",
        ),
        (
            "duplicate ID, joined by subject as a reply",
            &[
                ("Message-ID: <d@x>\r\nSubject: topic", 100),
                ("Message-ID: <d@x>\r\nSubject: Re: topic", 160),
            ],
            "(1 2)",
        ),
        (
            "a dummy with one child is pruned, then subjects join",
            &[
                ("Message-ID: <a@x>\r\nSubject: topic", 100),
                (
                    "Message-ID: <b@x>\r\nReferences: <gone@x>\r\nSubject: Re: topic",
                    160,
                ),
            ],
            "(1 2)",
        ),
        (
            "In-Reply-To when there are no References; siblings by date",
            &[
                ("Message-ID: <1@x>", 500),
                ("Message-ID: <2@x>\r\nIn-Reply-To: <1@x>", 100),
                ("Message-ID: <3@x>\r\nIn-Reply-To: <1@x>", 100),
                ("Message-ID: <4@x>\r\nIn-Reply-To: <2@x>", 100),
            ],
            "(1 (2 4)(3))",
        ),
        (
            "a root dummy with two children stays",
            &[("References: <a@x>", 100), ("References: <a@x>", 160)],
            "((1)(2))",
        ),
        (
            "two dummies at the root",
            &[
                ("Message-ID: <3@x>\r\nIn-Reply-To: <1@x>", 100),
                ("Message-ID: <4@x>\r\nIn-Reply-To: <2@x>", 100),
                ("Message-ID: <5@x>\r\nIn-Reply-To: <2@x>", 100),
            ],
            "(1)((2)(3))",
        ),
        (
            "a referenced message arriving later fills its dummy",
            &[
                ("Message-ID: <a@x>", 100),
                ("Message-ID: <c@x>\r\nReferences: <b@x>", 100),
                ("Message-ID: <b@x>\r\nReferences: <a@x>", 100),
            ],
            "(1 3 2)",
        ),
        (
            "equal subjects, neither a reply: siblings under a dummy",
            &[
                ("Message-ID: <p@x>\r\nSubject: news", 100),
                ("Message-ID: <q@x>\r\nSubject: [list] news", 200),
            ],
            "((1)(2))",
        ),
        (
            "no subject never joins",
            &[("Message-ID: <p@x>", 100), ("Message-ID: <q@x>", 200)],
            "(1)(2)",
        ),
    ];
    for (name, heads, want) in cases {
        assert_eq!(thread(Algorithm::References, &msgs(heads)), *want, "{name}");
    }
}

#[test]
fn ordered_subject_cases() {
    // Sent dates from Date: where present, else the internal date.
    let heads: &[(&str, i64)] = &[
        ("Subject: a\r\nDate: Fri, 22 Feb 2008 22:00:10 +0200", 0),
        ("Subject: b\r\nDate: Fri, 22 Feb 2008 22:00:09 +0200", 0),
        ("Subject: Re: a\r\nDate: Fri, 22 Feb 2008 22:00:08 +0200", 0),
        ("Subject: b\r\nDate: Fri, 22 Feb 2008 22:00:07 +0200", 0),
        ("Subject: a", 1_203_710_430),
        ("Subject: c", 1_203_710_429),
    ];
    assert_eq!(
        thread(Algorithm::OrderedSubject, &msgs(heads)),
        "(4 2)(3 (1)(5))(6)"
    );
}

#[test]
fn message_ids_are_bounded() {
    let long: String = (0..100).map(|i| format!("<{i}@x> ")).collect();
    let ids = message_ids(&long);
    assert_eq!(ids.len(), REFERENCES_MAX);
    assert_eq!(ids.last(), message_ids("<99@x>").last());
    assert!(message_ids("<no-at> <a b@x> <@>").len() == 1);
    assert_eq!(message_id("junk"), None);
}

#[test]
fn deep_chains_render_without_deep_nesting() {
    // A chain of 5,000 replies, each with a sibling, nests no deeper than
    // THREAD_DEPTH_MAX parentheses.
    let mut heads = Vec::new();
    for i in 0..5_000 {
        let parent = if i == 0 {
            String::new()
        } else {
            format!("\r\nIn-Reply-To: <{}@x>", i - 1)
        };
        heads.push((format!("Message-ID: <{i}@x>{parent}"), i as i64));
        heads.push((
            format!("Message-ID: <s{i}@x>\r\nIn-Reply-To: <{i}@x>"),
            i as i64 + 1,
        ));
    }
    let refs: Vec<(&str, i64)> = heads.iter().map(|(h, d)| (h.as_str(), *d)).collect();
    let out = thread(Algorithm::References, &msgs(&refs));
    let (mut depth, mut max) = (0usize, 0usize);
    for c in out.chars() {
        match c {
            '(' => {
                depth += 1;
                max = max.max(depth);
            }
            ')' => depth -= 1,
            _ => {}
        }
    }
    assert_eq!(depth, 0);
    assert!(max <= THREAD_DEPTH_MAX + 1, "{max}");
    assert_eq!(
        out.split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .count(),
        10_000
    );
}
