//! The one rule for names a workflow gives: job ids, service ids and named
//! volumes.
//!
//! Each becomes a path under /run/iguana, a container id and a cgroup, so
//! `.`, `..`, hidden names and `/` must never pass. The rule is docker's for
//! container and volume names: a letter, digit or `_`, then letters, digits,
//! `_`, `.` or `-`. Docker sets no length limit; ours is `MAX_LEN`, far below
//! a path component's 255 bytes, and applies to the composed
//! `<job>-<service>` name too.

/// The longest name, composed service names included.
pub const MAX_LEN: usize = 128;

/// What a valid name looks like, for error messages.
pub const RULE: &str = "must be 1-128 characters of a-z A-Z 0-9 _ . - starting with a letter, digit or _";

/// Whether `name` follows the rule.
pub fn valid(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    first_ok && name.len() <= MAX_LEN && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_name_rule() {
        let long = "a".repeat(MAX_LEN);
        let too_long = "a".repeat(MAX_LEN + 1);
        let cases: &[(&str, bool)] = &[
            ("install", true),
            ("_x", true),
            ("0day", true),
            ("a.b-c_d", true),
            ("a..b", true),
            (&long, true),
            ("", false),
            (".", false),
            ("..", false),
            (".hidden", false),
            ("-x", false),
            ("a/b", false),
            ("../x", false),
            ("a b", false),
            ("é", false),
            ("a\0", false),
            (&too_long, false),
        ];
        for (name, expected) in cases {
            assert_eq!(valid(name), *expected, "{name:?}");
        }
    }
}
