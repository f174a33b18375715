//! Sequence sets (RFC 3501 9, `sequence-set`): `1:4,7,9:*`, `*:4`. Pure.

/// Most ranges in one set; more is refused as BAD.
pub const RANGES_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Num(u32),
    /// `*`: the largest number in use (the last message, or the highest UID).
    Star,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceSet(pub Vec<(Bound, Bound)>);

impl SequenceSet {
    pub fn parse(text: &[u8]) -> Option<SequenceSet> {
        let s = std::str::from_utf8(text).ok()?;
        if s.is_empty() {
            return None;
        }
        let bound = |b: &str| -> Option<Bound> {
            if b == "*" {
                return Some(Bound::Star);
            }
            if b.is_empty() || !b.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let n: u32 = b.parse().ok()?;
            (n > 0).then_some(Bound::Num(n))
        };
        let mut ranges = Vec::new();
        for item in s.split(',') {
            let r = match item.split_once(':') {
                Some((a, b)) => (bound(a)?, bound(b)?),
                None => {
                    let b = bound(item)?;
                    (b, b)
                }
            };
            ranges.push(r);
            if ranges.len() > RANGES_MAX {
                return None;
            }
        }
        Some(SequenceSet(ranges))
    }

    fn resolve(b: Bound, star: u32) -> u32 {
        match b {
            Bound::Num(n) => n,
            Bound::Star => star,
        }
    }

    /// True when `n` is in the set, `star` being the value of `*`.
    pub fn contains(&self, n: u32, star: u32) -> bool {
        self.0.iter().any(|&(a, b)| {
            let (a, b) = (Self::resolve(a, star), Self::resolve(b, star));
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            (lo..=hi).contains(&n)
        })
    }

    /// The largest number named, `*` resolved.
    pub fn max_named(&self, star: u32) -> u32 {
        self.0
            .iter()
            .flat_map(|&(a, b)| [Self::resolve(a, star), Self::resolve(b, star)])
            .max()
            .unwrap_or(0)
    }

    /// Formats ascending numbers compactly (`1:3,7`), for COPYUID and ESEARCH.
    pub fn compact(numbers: &[u32]) -> String {
        let mut out = String::new();
        let mut i = 0;
        while i < numbers.len() {
            let start = numbers[i];
            let mut end = start;
            while i + 1 < numbers.len() && numbers[i + 1] == end + 1 {
                i += 1;
                end = numbers[i];
            }
            if !out.is_empty() {
                out.push(',');
            }
            if start == end {
                out.push_str(&start.to_string());
            } else {
                out.push_str(&format!("{start}:{end}"));
            }
            i += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_in_either_order_and_star() {
        let s = SequenceSet::parse(b"1:3,7,*:9").expect("parse");
        let star = 12;
        let members: Vec<u32> = (1..=12).filter(|&n| s.contains(n, star)).collect();
        assert_eq!(members, vec![1, 2, 3, 7, 9, 10, 11, 12]);
        let all = SequenceSet::parse(b"1:*").expect("parse");
        assert!(all.contains(5, 5));
        assert!(!all.contains(6, 5));
        // "*:4" with fewer than 4 messages is 2:4 -> includes 2, 3.
        let rev = SequenceSet::parse(b"*:4").expect("parse");
        assert!(rev.contains(2, 2) && rev.contains(3, 2) && !rev.contains(1, 2));
    }

    #[test]
    fn bad_sets_are_refused() {
        for bad in [
            &b""[..],
            b"0",
            b"1:",
            b":2",
            b"1,,2",
            b"a",
            b"1:2:3",
            b"-1",
            b"99999999999",
        ] {
            assert!(
                SequenceSet::parse(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn compact_form() {
        assert_eq!(SequenceSet::compact(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(SequenceSet::compact(&[]), "");
    }
}
