//! Shell-style pattern matching for `modules.alias`, the subset kmod relies on
//! (`fnmatch(pattern, modalias, 0)`): `*`, `?`, bracket classes `[abc]`,
//! `[a-z]`, `[!x]`/`[^x]`, and backslash escapes.
//!
//! Patterns come from the kernel's module index, modaliases from sysfs; both
//! are untrusted, so a malformed pattern never fails: an unclosed `[` is
//! matched literally and a trailing `\` matches nothing, both as in glibc
//! (checked against glibc's `fnmatch` on every pattern of up to four bytes of
//! glob syntax).

/// One element of a compiled pattern; each one except `Star` consumes exactly
/// one byte of the subject.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(u8),
    AnyByte,
    Star,
    Class {
        negated: bool,
        ranges: Vec<(u8, u8)>,
    },
}

impl Token {
    fn matches(&self, byte: u8) -> bool {
        match self {
            Token::Literal(l) => *l == byte,
            Token::AnyByte => true,
            Token::Star => false,
            Token::Class { negated, ranges } => {
                let inside = ranges.iter().any(|&(lo, hi)| lo <= byte && byte <= hi);
                inside != *negated
            }
        }
    }
}

/// Whether `subject` matches the glob `pattern` as a whole.
pub fn fnmatch(pattern: &str, subject: &str) -> bool {
    matches_tokens(&compile(pattern.as_bytes()), subject.as_bytes())
}

fn compile(pattern: &[u8]) -> Vec<Token> {
    let mut tokens = Vec::with_capacity(pattern.len());
    let mut i = 0;
    while let Some(&c) = pattern.get(i) {
        i += 1;
        match c {
            b'*' => {
                // Consecutive stars are equivalent to one.
                if tokens.last() != Some(&Token::Star) {
                    tokens.push(Token::Star);
                }
            }
            b'?' => tokens.push(Token::AnyByte),
            b'\\' => match pattern.get(i) {
                Some(&escaped) => {
                    tokens.push(Token::Literal(escaped));
                    i += 1;
                }
                // glibc treats a trailing backslash as an error: no match.
                None => tokens.push(Token::Class {
                    negated: false,
                    ranges: Vec::new(),
                }),
            },
            b'[' => match compile_class(pattern, i) {
                Some((token, next)) => {
                    tokens.push(token);
                    i = next;
                }
                None => tokens.push(Token::Literal(b'[')),
            },
            other => tokens.push(Token::Literal(other)),
        }
    }
    tokens
}

/// Parses a bracket expression whose body starts at `start` (just after `[`).
/// Returns the class and the index after the closing `]`, or `None` when the
/// bracket is never closed.
fn compile_class(pattern: &[u8], start: usize) -> Option<(Token, usize)> {
    let mut i = start;
    let negated = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *pattern.get(i)?;
        // A `]` right after `[` or `[!` is a member, not the end.
        if c == b']' && !first {
            return Some((Token::Class { negated, ranges }, i + 1));
        }
        first = false;
        let (lo, after_lo) = class_byte(pattern, i)?;
        i = after_lo;
        let is_range =
            pattern.get(i) == Some(&b'-') && pattern.get(i + 1).is_some_and(|&b| b != b']');
        if is_range {
            let (hi, after_hi) = class_byte(pattern, i + 1)?;
            i = after_hi;
            // A reversed range like `[z-a]` matches nothing, as in glibc.
            if lo <= hi {
                ranges.push((lo, hi));
            }
        } else {
            ranges.push((lo, lo));
        }
    }
}

/// One possibly backslash-escaped byte inside a class.
fn class_byte(pattern: &[u8], i: usize) -> Option<(u8, usize)> {
    match *pattern.get(i)? {
        b'\\' => pattern.get(i + 1).map(|&b| (b, i + 2)),
        b => Some((b, i + 1)),
    }
}

/// Greedy matching that remembers the last `*` and retries from there; this
/// is complete because every other token consumes exactly one byte.
fn matches_tokens(tokens: &[Token], subject: &[u8]) -> bool {
    let (mut t, mut s) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while s < subject.len() {
        match (tokens.get(t), subject.get(s)) {
            (Some(Token::Star), _) => {
                backtrack = Some((t, s));
                t += 1;
            }
            (Some(token), Some(&byte)) if token.matches(byte) => {
                t += 1;
                s += 1;
            }
            _ => match backtrack {
                Some((star, from)) => {
                    t = star + 1;
                    s = from + 1;
                    backtrack = Some((star, from + 1));
                }
                None => return false,
            },
        }
    }
    tokens
        .get(t..)
        .unwrap_or_default()
        .iter()
        .all(|token| *token == Token::Star)
}

#[cfg(test)]
mod tests {
    use super::fnmatch;

    fn check(pattern: &str, subject: &str, expected: bool) {
        assert_eq!(
            fnmatch(pattern, subject),
            expected,
            "fnmatch({pattern:?}, {subject:?})"
        );
    }

    #[test]
    fn real_alias_patterns() {
        // Patterns from Debian 6.1.0-56-cloud-amd64 modules.alias against
        // modaliases read from a QEMU q35 guest's /sys.
        let virtio_pci = "pci:v00001AF4d*sv*sd*bc*sc*i*";
        check(
            virtio_pci,
            "pci:v00001AF4d00001041sv00001AF4sd00001041bc02sc00i00",
            true,
        );
        check(
            virtio_pci,
            "pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00",
            false,
        );
        check("virtio:d00000001v*", "virtio:d00000001v00001AF4", true);
        check("virtio:d00000002v*", "virtio:d00000001v00001AF4", false);
        check("fs-overlay", "fs-overlay", true);
        check(
            "cpu:type:x86,ven*fam*mod*:feature:*0099*",
            "cpu:type:x86,ven0000fam0006mod0055:feature:,0000,0001,0099,00E0",
            true,
        );
        check(
            "cpu:type:x86,ven0000fam0006mod0086:feature:*",
            "cpu:type:x86,ven0000fam0006mod0055:feature:,0000",
            false,
        );
    }

    #[test]
    fn wildcards() {
        check("", "", true);
        check("", "a", false);
        check("*", "", true);
        check("*", "anything", true);
        check("**a**", "bab", true);
        check("a*b*c", "aXbYc", true);
        check("a*b*c", "aXbY", false);
        check("a*a*a", "aaaa", true);
        check("*ab", "aab", true);
        check("?", "", false);
        check("??", "ab", true);
        check("a?c", "abc", true);
        check("a?c", "ac", false);
    }

    #[test]
    fn classes() {
        check("usb:v*d0[0-2]*", "usb:v1234d01ab", true);
        check("usb:v*d0[0-2]*", "usb:v1234d05ab", false);
        check("[abc]", "b", true);
        check("[!abc]", "b", false);
        check("[^abc]", "d", true);
        check("[]]", "]", true);
        check("[!]]", "a", true);
        check("[a-]", "-", true);
        check("[z-a]", "m", false);
        check("[\\]]", "]", true);
    }

    #[test]
    fn malformed_patterns_are_literal() {
        check("[", "[", true);
        check("pci:v[0", "pci:v[0", true);
        check("pci:v[0", "pci:v0", false);
        check("[!", "[!", true);
        check("a\\", "a\\", false);
        check("\\*", "*", true);
        check("\\*", "x", false);
    }

    /// Every pattern of up to four bytes from an alphabet of glob syntax
    /// against short subjects: nothing panics, and a pattern without
    /// metacharacters matches exactly itself.
    #[test]
    fn exhaustive_small_patterns_do_not_panic() {
        const ALPHABET: &[char] = &['a', ']', '*', '?', '[', '!', '-', '\\'];
        let mut patterns = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = patterns
                .iter()
                .flat_map(|p| ALPHABET.iter().map(move |c| format!("{p}{c}")))
                .collect();
            patterns.extend(longer);
        }
        patterns.sort();
        patterns.dedup();
        let subjects = ["", "a", "]", "-", "aa", "a]", "[!", "a-a", "\\"];
        for pattern in &patterns {
            for subject in subjects {
                let matched = fnmatch(pattern, subject);
                if !pattern.contains(['*', '?', '[', '\\']) {
                    assert_eq!(
                        matched,
                        pattern == subject,
                        "fnmatch({pattern:?}, {subject:?})"
                    );
                }
            }
        }
    }
}
