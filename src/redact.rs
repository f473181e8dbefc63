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
        let (url, fragment) = match url.split_once('#') {
            Some((u, f)) => (u, Some(f)),
            None => (url, None),
        };
        let (url, query) = match url.split_once('?') {
            Some((u, q)) => (u, Some(q)),
            None => (url, None),
        };
        let (scheme, after) = match url.split_once("://") {
            Some((s, a)) => (Some(s), a),
            None => (None, url),
        };
        let authority = after.split('/').next().unwrap_or(after);
        let at = match authority.rfind('@') {
            Some(at) => Some(at),
            // `user:pa/ss@host`: an unencoded `/` in the password ends the
            // authority early, at a "port" that is not a number. Rather
            // than show the tail of the password, the userinfo runs to
            // the last `@`.
            None if bad_port(authority) => after.rfind('@'),
            None => None,
        };
        let (userinfo, rest) = match at {
            Some(at) => (after.get(..at), after.get(at + 1..).unwrap_or("")),
            None => (None, after),
        };
        Parts { scheme, userinfo, rest, query, fragment }
    }
}

/// `host:port` whose port is not digits (brackets of an IPv6 host aside).
fn bad_port(authority: &str) -> bool {
    let after_host = match authority.rfind(']') {
        Some(end) => authority.get(end + 1..).unwrap_or(""),
        None => authority,
    };
    match after_host.split_once(':') {
        Some((_, port)) => !port.chars().all(|c| c.is_ascii_digit()),
        None => false,
    }
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
            // `@` in the path or query is not userinfo.
            ("http://host/a@b", "http://host/a@b"),
            ("http://host/p?u=a@b", "http://host/p?***"),
            ("http://u:p@host/a@b", "http://***@host/a@b"),
            // `@` in the password, and an unencoded `/` in it.
            ("http://u:p@ss@host/x", "http://***@host/x"),
            ("http://u:pa/ss@host/x", "http://***@host/x"),
            ("http://a:b:c", "http://a:b:c"),
            // No scheme.
            ("user:pass@host:3128", "***@host:3128"),
            ("host:5000", "host:5000"),
            ("/etc/iguana/control.yaml", "/etc/iguana/control.yaml"),
            ("file:///w.yaml?x", "file:///w.yaml?***"),
            // Garbage.
            ("", ""),
            ("@", "***@"),
            ("://", "://"),
            ("?#@", "?***"),
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
