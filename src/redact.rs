//! URLs as they may be shown: without their secrets.
//!
//! A proxy URL carries `user:pass@`, a control_url may carry `?token=...`,
//! and every log line, console line or error file is read by whoever reads
//! the console or kmsg. So wherever a URL is displayed it goes through
//! `redact_url` (userinfo becomes `***@`, the query `?***`, the fragment is
//! dropped), and a message made by code we do not own (an HTTP library's
//! error) goes through `scrub`, which removes the secret parts of the URLs it
//! may quote. Both are pure and never panic, whatever the text.

/// `scheme://user:pass@host/path?query#frag` → `scheme://***@host/path?***`.
/// Text without `://` is read as `[userinfo@]host[/path]`.
pub fn redact_url(url: &str) -> String {
    let parts = Parts::of(url);
    let mut out = String::with_capacity(url.len());
    if let Some(scheme) = parts.scheme {
        out.push_str(scheme);
        out.push_str("://");
    }
    if parts.userinfo.is_some() {
        out.push_str("***@");
    }
    out.push_str(parts.rest);
    if parts.query.is_some() {
        out.push_str("?***");
    }
    out
}

/// `text` with every secret part (userinfo, query, fragment) of each of
/// `urls` replaced by `***`, wherever and however it is quoted.
pub fn scrub(text: &str, urls: &[&str]) -> String {
    let mut out = text.to_string();
    for url in urls {
        let parts = Parts::of(url);
        for secret in [parts.userinfo, parts.query, parts.fragment].into_iter().flatten() {
            if !secret.is_empty() {
                out = out.replace(secret, "***");
            }
        }
    }
    out
}

/// A command line for a log: each argument that is a URL redacted (an
/// image reference's `@sha256:` is not userinfo, so only `scheme://` counts).
pub fn args(args: &[String]) -> String {
    let shown: Vec<String> = args.iter().map(|a| if a.contains("://") { redact_url(a) } else { a.clone() }).collect();
    shown.join(" ")
}

/// A URL cut at its secrets; `rest` is host, port and path.
struct Parts<'a> {
    scheme: Option<&'a str>,
    userinfo: Option<&'a str>,
    rest: &'a str,
    query: Option<&'a str>,
    fragment: Option<&'a str>,
}

impl<'a> Parts<'a> {
    fn of(url: &'a str) -> Parts<'a> {
        let (scheme, after) = match url.split_once("://") {
            Some((s, a)) => (Some(s), a),
            None => (None, url),
        };
        // The userinfo is found before the query and fragment are cut off:
        // an unencoded `?`, `#` or `/` in a password must not split it.
        let (userinfo, rest) = match userinfo_end(after) {
            Some(at) => (after.get(..at), after.get(at + 1..).unwrap_or("")),
            None => (None, after),
        };
        let (rest, fragment) = match rest.split_once('#') {
            Some((r, f)) => (r, Some(f)),
            None => (rest, None),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        Parts { scheme, userinfo, rest, query, fragment }
    }
}

/// Where the userinfo of `after` (the text after `scheme://`) ends: the
/// last `@` of the authority (up to the first `/`), else the last `@`
/// before the query or fragment. The second case takes `user:pa/ss@host`
/// whole; it also takes an `@` in a path for one, which shows less of a
/// URL than it could, never more.
fn userinfo_end(after: &str) -> Option<usize> {
    let authority = after.split('/').next().unwrap_or(after);
    if let Some(at) = authority.rfind('@') {
        return Some(at);
    }
    let path_end = after.find(['?', '#']).unwrap_or(after.len());
    after.get(..path_end).and_then(|path| path.rfind('@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_userinfo_query_and_fragment() {
        let cases: &[(&str, &str)] = &[
            ("http://user:pass@proxy.lan:3128", "http://***@proxy.lan:3128"),
            ("http://user:pass@proxy.lan:3128/", "http://***@proxy.lan:3128/"),
            ("https://boot.lan/w.yaml?token=s3cr3t", "https://boot.lan/w.yaml?***"),
            ("https://boot.lan/w.yaml?token=s3cr3t#frag", "https://boot.lan/w.yaml?***"),
            ("https://boot.lan/w.yaml#token=s3cr3t", "https://boot.lan/w.yaml"),
            ("https://u@h/p?", "https://***@h/p?***"),
            ("https://example.org/w.yaml", "https://example.org/w.yaml"),
            ("http://10.0.2.2:8080/w.yaml", "http://10.0.2.2:8080/w.yaml"),
            // IPv6 hosts, with and without userinfo.
            ("http://[fd00::1]:8080/w?k=v", "http://[fd00::1]:8080/w?***"),
            ("http://u:p@[::1]:1/x", "http://***@[::1]:1/x"),
            ("http://[::1]", "http://[::1]"),
            // `@` in the query is not userinfo; in the path it cannot be
            // told from an unencoded `/` in a password, so it is redacted.
            ("http://host/a@b", "http://***@b"),
            ("http://host/p?u=a@b", "http://host/p?***"),
            ("http://u:p@host/a@b", "http://***@host/a@b"),
            // `@` in the password, and an unencoded `/` in it.
            ("http://u:p@ss@host/x", "http://***@host/x"),
            ("http://u:pa/ss@host/x", "http://***@host/x"),
            ("http://a:b:c", "http://a:b:c"),
            // `?`, `#` or digits and `/` in the password: the userinfo is
            // still found (an `@` before the query is taken as its end, so an
            // `@` in a path is redacted too: safe, if more than needed).
            ("http://alice:pa?ss@proxy.lan:3128", "http://***@proxy.lan:3128"),
            ("http://alice:p#ss@proxy.lan:3128/", "http://***@proxy.lan:3128/"),
            ("http://u:1234/5678@h/", "http://***@h/"),
            ("https://boot.lan?token=a@b", "https://***@b"),
            // No scheme.
            ("user:pass@host:3128", "***@host:3128"),
            ("host:5000", "host:5000"),
            ("/etc/iguana/control.yaml", "/etc/iguana/control.yaml"),
            ("file:///w.yaml?x", "file:///w.yaml?***"),
            // Garbage.
            ("", ""),
            ("@", "***@"),
            ("://", "://"),
            ("?#@", "***@"),
            ("http://[", "http://["),
            ("http://]:x@", "http://***@"),
            ("héllo://ü:ö@ä/ß?ç#∂", "héllo://***@ä/ß?***"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), *want, "{url:?}");
        }
    }

    #[test]
    fn scrub_removes_secrets_however_quoted() {
        let url = "https://alice:hunter2@boot.lan/w.yaml?token=s3cr3t#x";
        let text = "fetch https://alice:hunter2@boot.lan/w.yaml?token=s3cr3t: \"token=s3cr3t\" alice:hunter2 x";
        let got = scrub(text, &[url]);
        assert!(!got.contains("hunter2") && !got.contains("s3cr3t"), "{got}");
        assert_eq!(scrub("no secrets here", &[url, "http://p:3128", "", "garbage"]), "no secrets here");
    }

    #[test]
    fn command_lines_redact_only_urls() {
        let args: Vec<String> = ["fetch", "https://u:p@h/w?t=1", "--out", "/run/x", "busybox@sha256:ab"].map(String::from).to_vec();
        assert_eq!(super::args(&args), "fetch https://***@h/w?*** --out /run/x busybox@sha256:ab");
    }

    /// Whatever the bytes, no panic.
    #[test]
    fn never_panics() {
        let pieces = ["", "@", ":", "/", "?", "#", "[", "]", "://", "é", "a", "1"];
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    for d in pieces {
                        let s = format!("{a}{b}{c}{d}");
                        let _ = redact_url(&s);
                        let _ = scrub(&s, &[&s]);
                    }
                }
            }
        }
    }
}
