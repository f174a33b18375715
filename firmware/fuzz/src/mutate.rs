//! Deterministic mutations for the stable smoke run: a fixed-seed generator
//! and a few libFuzzer-like mutators (bit flips, byte and token inserts,
//! deletions, duplications, splices with another corpus entry). The same
//! seed gives the same inputs on every machine, so a failure reproduces.

/// SplitMix64: small, fast, and the same everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Byte strings that matter to the protocols and to MIME: line ends, the
/// DATA terminator, literals, BER lengths, boundaries, nesting.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n.\r\n",
    b"\0",
    b" ",
    b"\"",
    b"{4}\r\n",
    b"{4294967295}\r\n",
    b"{65536+}\r\n",
    b"(",
    b")",
    b"*",
    b"%",
    b"AUTH PLAIN ",
    b"AGpvQGV4YW1wbGUubmV0AHB3LWpvLTEyMw==",
    b"\x30\x84\xff\xff\xff\xff",
    b"\x02\x01\x01",
    b"\xff",
    b"\xc3\xa9",
    b"--",
    b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n",
    b"Content-Type: message/rfc822\r\n\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"=?utf-8?b?w6k=?=",
];

/// One mutation of `input` (never empty unless everything was deleted);
/// `other` is another corpus entry to splice with.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = out.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len + 1);
                let b = rng.next_u64() as u8;
                out.insert(i, b);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                out.drain(i..i + n);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(256));
                let copy = out[i..i + n].to_vec();
                let at = rng.below(len + 1);
                out.splice(at..at, copy);
            }
            4 if !other.is_empty() => {
                let cut_here = rng.below(len + 1);
                let from = rng.below(other.len());
                out.truncate(cut_here);
                out.extend_from_slice(&other[from..]);
            }
            5 if len > 0 => {
                // Repeat one slice many times (deep nesting, long lines).
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                let copy = out[i..i + n].to_vec();
                let times = 1 + rng.below(200);
                let at = rng.below(len + 1);
                let repeated: Vec<u8> = copy.iter().copied().cycle().take(n * times).collect();
                out.splice(at..at, repeated);
            }
            _ => {
                let token = TOKENS[rng.below(TOKENS.len())];
                let i = rng.below(len + 1);
                out.splice(i..i, token.iter().copied());
            }
        }
    }
    out
}
