//! The long options of the helper commands (`iguana pull`, `iguana
//! verify`): `--flag VALUE` or `--flag=VALUE`, a value never empty.
//!
//! std only: tests/pull_overlay.rs compiles it next to the image module.

/// `--flag=value` -> (`--flag`, `Some("value")`); anything else is itself.
pub fn split(arg: &str) -> (&str, Option<&str>) {
    match arg.split_once('=') {
        Some((flag, value)) if arg.starts_with("--") => (flag, Some(value)),
        _ => (arg, None),
    }
}

/// The value of `flag`: written inline, else the next argument.
pub fn value<'a>(flag: &str, inline: Option<&str>, rest: &mut impl Iterator<Item = &'a String>) -> Result<String, String> {
    inline
        .map(str::to_owned)
        .or_else(|| rest.next().cloned())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{flag} needs a value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_or_next_and_never_empty() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // (argument, the arguments after it, flag, value)
        type Case<'a> = (&'a str, &'a [&'a str], &'a str, Result<&'a str, &'a str>);
        let cases: &[Case] = &[
            ("--key=a.pub", &["b"], "--key", Ok("a.pub")),
            ("--key", &["a.pub"], "--key", Ok("a.pub")),
            ("--key", &[], "--key", Err("--key needs a value")),
            ("--key=", &["b"], "--key", Err("--key needs a value")),
            ("--mirror=a=b", &[], "--mirror", Ok("a=b")),
            ("img=x", &["y"], "img=x", Ok("y")),
        ];
        for (arg, rest, flag, want) in cases {
            let (f, inline) = split(arg);
            assert_eq!(f, *flag, "{arg}");
            let rest = args(rest);
            let got = value(f, inline, &mut rest.iter());
            assert_eq!(got.as_deref().map_err(String::as_str), *want, "{arg}");
        }
    }
}
