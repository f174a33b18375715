//! Every input has a limit and nothing panics: mutated and random messages
//! go through parsing, every built-in check, the rules, the tokenizer and
//! ARF parsing. Deterministic (a fixed-seed generator), so a failure
//! reproduces.

use mxrack_filter::checks::{BUILTIN_CHECKS, run};
use mxrack_filter::message::MailView;
use mxrack_filter::rules::RuleSet;
use mxrack_filter::{EMBEDDED_RULES, arf, tokens};

/// xorshift64*: enough randomness for mutations, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const SEEDS: [&str; 4] = [
    "From: \"a@b.example\" <x@y.example>\r\nTo: undisclosed-recipients:;\r\nSubject: =?big5?B?pKSk5Q==?= FREE!!!\r\nDate: Wed, 21 Aug 2002 20:31:57 -1600\r\nMessage-ID: <1@x>\r\nContent-Type: multipart/alternative; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nCaf\u{e9} \u{5ee3}\u{544a} www.\u{5ee3}.example http://[::1]:80/x?u=a%40b\r\n--B\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\nPGltZyBzcmM9Imh0dHA6Ly8xLjIuMy40LyI+\r\n--B--\r\n",
    "Subject: x\r\n\r\n<a href=\"./\u{5ee3}\u{544a}.files/filelist.xml\">x</a> <font size=7>",
    "From: <>\r\nDate: \r\nMessage-ID: <\r\nReply-To: \u{e9}@\r\n\r\n",
    "Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n--b\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nX-Mxrack-Forward-Id: \u{e9}\u{e9}\r\nMessage-ID: <\u{5ee3}>\r\n--b--\r\n",
];

#[test]
fn mutated_messages_never_panic() {
    let rules = RuleSet::parse(EMBEDDED_RULES).expect("rules");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let alphabet: &[u8] = b"\r\n:;<>@\"=?%-./ \tABCxyz019\xc3\xa9\xe5\xbb\xa3\x80\xff";
    for round in 0..2_000 {
        let mut bytes = SEEDS[round % SEEDS.len()].as_bytes().to_vec();
        for _ in 0..rng.below(12) {
            let at = rng.below(bytes.len() + 1);
            match rng.below(3) {
                0 if at < bytes.len() => {
                    bytes.remove(at);
                }
                1 => bytes.insert(at, alphabet[rng.below(alphabet.len())]),
                _ => {
                    let cut = rng.below(bytes.len() + 1);
                    bytes.truncate(cut.max(at));
                }
            }
        }
        let view = MailView::parse(&bytes);
        for (name, _) in BUILTIN_CHECKS {
            run(name, &view, "x@\u{e9}.example", 1_030_000_000);
        }
        rules.evaluate(&view, "a@b", 0);
        let t = tokens::tokenize(&view);
        assert!(t.len() <= tokens::TOKENS_PER_MESSAGE_MAX);
        tokens::signature(&view);
        let _ = arf::parse(&bytes);
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(42);
    for _ in 0..500 {
        let len = rng.below(2_000);
        let bytes: Vec<u8> = (0..len).map(|_| (rng.next() >> 24) as u8).collect();
        let view = MailView::parse(&bytes);
        for (name, _) in BUILTIN_CHECKS {
            run(name, &view, "", 0);
        }
        tokens::tokenize(&view);
        let _ = arf::parse(&bytes);
    }
}
