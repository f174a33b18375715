//! The i;unicode-casemap collation (RFC 5051), used by SEARCH substring
//! matches and by SORT and THREAD comparisons (RFC 5256 2.1 names it as
//! the default collation). Pure.
//!
//! RFC 5051 2: each character is replaced by its titlecase form, then the
//! string is put in Unicode Normalization Form KD; the results are compared
//! as octet strings (UTF-8 sorts like code points).

use icu_normalizer::DecomposingNormalizerBorrowed;

/// The titlecase of one character. Rust's std offers uppercase; titlecase
/// differs from it only for the Latin digraphs (DŽ/Dž/dž, LJ, NJ, DZ: titlecase
/// is the mixed form) and for Greek letters with ypogegrammeni, whose
/// titlecase keeps the iota subscript that uppercase spells out (U+0345 after
/// NFKD either way, so only the digraphs need a table).
fn titlecase(c: char, out: &mut String) {
    let t = match c {
        '\u{01C4}'..='\u{01C6}' => '\u{01C5}',
        '\u{01C7}'..='\u{01C9}' => '\u{01C8}',
        '\u{01CA}'..='\u{01CC}' => '\u{01CB}',
        '\u{01F1}'..='\u{01F3}' => '\u{01F2}',
        _ => {
            out.extend(c.to_uppercase());
            return;
        }
    };
    out.push(t);
}

/// The collation key of `s`: titlecased, then NFKD (RFC 5051 2). Two
/// strings are equal under the collation when their keys are equal, and
/// order as their keys do.
pub fn key(s: &str) -> String {
    let mut t = String::with_capacity(s.len());
    for c in s.chars() {
        titlecase(c, &mut t);
    }
    DecomposingNormalizerBorrowed::new_nfkd()
        .normalize(&t)
        .into_owned()
}

/// Substring match under the collation (RFC 3501 6.4.4 SEARCH string
/// keys): an empty needle matches everything.
pub fn contains(haystack: &str, needle: &str) -> bool {
    needle.is_empty() || key(haystack).contains(&key(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casemap_keys() {
        let table = [
            ("abc", "ABC"),
            ("Straße", "STRASSE"),
            // NFKD: the ligature and the compatibility digit decompose.
            ("ﬁne", "FINE"),
            ("x²", "X2"),
            // é as one code point and as e + combining acute are one key.
            ("caf\u{e9}", "CAFE\u{301}"),
            ("cafe\u{301}", "CAFE\u{301}"),
        ];
        for (s, want) in table {
            assert_eq!(key(s), *want, "{s}");
        }
        // The digraph's titlecase is the mixed form Dž, decomposed.
        assert_eq!(key("ǆ"), "Dz\u{30c}");
        assert_eq!(key("Ǆ"), key("ǅ"));
        // Order: '[' (0x5B) sorts after the titlecased letters, '_' after it.
        assert!(key("c") < key("[xyz]") && key("[xyz]") < key("_"));
        assert!(contains("Quarterly REPORT", "report"));
        assert!(contains("Caf\u{e9}", "CAFE\u{301}"));
        assert!(!contains("abc", "abd"));
        assert!(contains("abc", ""));
    }
}
