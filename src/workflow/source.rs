//! Where a workflow file comes from: `rd.iguana.control_url`.
//!
//! `http://` and `https://` (TLS verified against the initrd's CA bundle),
//! `file:///path` or an absolute path. Remote fetches run in a child process
//! (`iguana fetch URL --out FILE`), like pulls, so TLS and HTTP parsing of
//! untrusted responses never run in PID 1. Transient failures (connection
//! errors, timeouts, HTTP 408, 429 and 5xx) are retried with exponential
//! backoff; the last error is reported. Anything else is final: a 4xx, a
//! body over `MAX_SIZE`, a refused certificate, and an `https://` URL
//! redirected to `http://` (never followed: the workflow would arrive
//! unauthenticated). URLs are shown without userinfo and query
//! (`redact_url`), which may carry credentials or tokens.
//!
//! With `--signature` (PID 1 passes it when the initrd has trust keys) the
//! same child, under the same deadline, also fetches the signature beside
//! the file: `URL.sig`, else `URL.sigstore.json` (the suffix goes on the
//! path; a query string stays: `w.yaml?token=t` → `w.yaml.sig?token=t`),
//! saved as `FILE.sig` or `FILE.sigstore.json`. A 404 or 410 there means
//! "not this form"; when both are absent nothing is saved and PID 1 refuses
//! the workflow as unsigned.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::redact::{redact_url, scrub};

/// The CA bundle iguana's initrd carries (Debian's path; also the host's).
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// A workflow file larger than this is refused, fetched or local.
pub const MAX_SIZE: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Http(String),
    File(PathBuf),
}

/// Classifies a control_url; anything else is an error naming it.
pub fn locate(url: &str) -> Result<Location, String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(Location::Http(url.to_string()));
    }
    if let Some(path) = url.strip_prefix("file://") {
        if path.starts_with('/') {
            return Ok(Location::File(PathBuf::from(path)));
        }
        return Err(format!("{:?}: a file:// URL needs an absolute path (file:///path)", redact_url(url)));
    }
    if url.starts_with('/') {
        return Ok(Location::File(PathBuf::from(url)));
    }
    Err(format!("{:?}: control_url must be http://, https://, file:///path or an absolute path", redact_url(url)))
}

/// Backoff before retry `n` (1-based): 1, 2, 4, 8... seconds, capped at 16.
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(4))
}

/// The URL of the signature beside `url`: `suffix` appended to the path,
/// before the query (which is kept: it may be what authorizes the request);
/// a fragment is dropped (it is never sent).
pub fn signature_url(url: &str, suffix: &str) -> String {
    let url = url.split('#').next().unwrap_or(url);
    // The query starts at the first `?` after the authority: a `?` in
    // userinfo would be percent-encoded.
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('?') {
        Some(at) => {
            let (path, query) = url.split_at(after_scheme + at);
            format!("{path}{suffix}{query}")
        }
        None => format!("{url}{suffix}"),
    }
}

/// `iguana fetch URL --out FILE [--signature] [--tries N] [--ca FILE] [--max BYTES]`.
pub fn cli_fetch(args: &[String]) -> anyhow::Result<()> {
    let usage = "usage: iguana fetch URL --out FILE [--signature] [--tries N] [--ca FILE] [--max BYTES]";
    let mut url = None;
    let mut out = None;
    let mut signature = false;
    let mut tries = 5u32;
    let mut ca = PathBuf::from(CA_BUNDLE);
    let mut max = MAX_SIZE;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--out" => out = it.next().map(PathBuf::from),
            "--signature" => signature = true,
            "--tries" => tries = it.next().and_then(|v| v.parse().ok()).filter(|&n| n > 0).context(usage)?,
            "--ca" => ca = it.next().map(PathBuf::from).context(usage)?,
            "--max" => max = it.next().and_then(|v| v.parse().ok()).context(usage)?,
            other if url.is_none() && !other.starts_with("--") => url = Some(other.to_string()),
            other => bail!("unexpected argument {other:?}\n{usage}"),
        }
    }
    let (Some(url), Some(out)) = (url, out) else { bail!("{usage}") };
    // Whatever an HTTP library quotes in its errors, the secrets go.
    let proxy = crate::proxy::Proxy::from_env().map(|p| p.url).unwrap_or_default();
    let scrubbed = |e: anyhow::Error| anyhow::anyhow!(scrub(&format!("{e:#}"), &[&url, &proxy]));
    let body = fetch_max(&url, tries, &ca, max).map_err(scrubbed)?;
    for suffix in crate::trust::blob::SUFFIXES {
        let _ = std::fs::remove_file(crate::trust::blob::with_suffix(&out, suffix));
    }
    std::fs::write(&out, body).with_context(|| format!("write {}", out.display()))?;
    if signature {
        for suffix in crate::trust::blob::SUFFIXES {
            if let Some(body) = fetch_optional(&signature_url(&url, suffix), tries, &ca).map_err(scrubbed)? {
                let path = crate::trust::blob::with_suffix(&out, suffix);
                std::fs::write(&path, body).with_context(|| format!("write {}", path.display()))?;
                break;
            }
        }
    }
    Ok(())
}

/// Fetches a control_url's contents, retrying transient failures.
pub fn fetch(url: &str, tries: u32, ca: &Path) -> anyhow::Result<Vec<u8>> {
    fetch_max(url, tries, ca, MAX_SIZE)
}

/// [`fetch`] with a body limit of `max` bytes.
pub fn fetch_max(url: &str, tries: u32, ca: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    fetch_with(url, tries, ca, false, max)?.ok_or_else(|| anyhow::anyhow!("fetch {}: not found", redact_url(url)))
}

/// [`fetch`] for a file that may be absent (a signature in one of its two
/// forms): HTTP 404 or 410, or a missing local file, is `None`.
pub fn fetch_optional(url: &str, tries: u32, ca: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    fetch_with(url, tries, ca, true, MAX_SIZE)
}

fn fetch_with(url: &str, tries: u32, ca: &Path, optional: bool, max: u64) -> anyhow::Result<Option<Vec<u8>>> {
    match locate(url).map_err(anyhow::Error::msg)? {
        Location::File(path) => match crate::fsutil::read_bounded(&path, max) {
            Ok(body) => Ok(Some(body)),
            Err(e) if optional && e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        },
        Location::Http(url) => {
            let agent = agent(&url, ca)?;
            let shown = redact_url(&url);
            let mut last = None;
            for n in 1..=tries {
                match get(&agent, &url, optional, max) {
                    Ok(body) => return Ok(body),
                    Err(Attempt::Final(e)) => return Err(e),
                    Err(Attempt::Retry(e)) => {
                        eprintln!("{}", scrub(&format!("fetch {shown}: try {n}/{tries}: {e:#}"), &[&url]));
                        last = Some(e);
                        if n < tries {
                            std::thread::sleep(backoff(n));
                        }
                    }
                }
            }
            Err(last.unwrap_or_else(|| anyhow::anyhow!("no tries")).context(format!("fetch {shown}: gave up after {tries} tries")))
        }
    }
}

enum Attempt {
    Retry(anyhow::Error),
    Final(anyhow::Error),
}

fn agent(url: &str, ca: &Path) -> anyhow::Result<ureq::Agent> {
    let roots = || {
        let pem = std::fs::read(ca).with_context(|| format!("read CA bundle {}", ca.display()))?;
        Ok((pem, format!("CA bundle {}", ca.display())))
    };
    // rd.iguana.proxy, as PID 1 put it in this child's environment.
    http_agent(url, roots, crate::proxy::Proxy::from_env().as_ref(), Duration::from_secs(30))
}

/// The ureq agent of the helpers that speak plain HTTP(S) (`iguana fetch`,
/// `iguana report`): for an https `url`, `roots` gives the PEM roots and
/// where they came from (read only then); an https URL is followed only to
/// https (a redirect to http fails before the request is sent); `proxy`
/// unless its no_proxy names the host, and explicitly none otherwise (ureq
/// would read HTTPS_PROXY from the environment); HTTP statuses are answers,
/// not errors; the whole exchange within `timeout`.
pub fn http_agent(
    url: &str,
    roots: impl FnOnce() -> anyhow::Result<(Vec<u8>, String)>,
    proxy: Option<&crate::proxy::Proxy>,
    timeout: Duration,
) -> anyhow::Result<ureq::Agent> {
    use ureq::tls::{parse_pem, PemItem, RootCerts, TlsConfig};
    let mut tls = TlsConfig::builder();
    if url.starts_with("https://") {
        let (pem, from) = roots()?;
        let certs: Vec<_> = parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            bail!("no CA certificates in {from}");
        }
        tls = tls.root_certs(RootCerts::Specific(Arc::new(certs)));
    }
    let proxy = match proxy.filter(|p| p.applies_to(url)) {
        Some(p) => Some(ureq::Proxy::new(&p.url).map_err(|_| anyhow::anyhow!("proxy {}: not a proxy URL", redact_url(&p.url)))?),
        None => None,
    };
    let config = ureq::Agent::config_builder()
        .proxy(proxy)
        .https_only(url.starts_with("https://"))
        .tls_config(tls.build())
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build();
    Ok(config.into())
}

/// One GET; `optional`: a 404 or 410 is `None`, not an error.
fn get(agent: &ureq::Agent, url: &str, optional: bool, max: u64) -> Result<Option<Vec<u8>>, Attempt> {
    let mut response = agent.get(url).call().map_err(|e| classify(url, e))?;
    let status = response.status().as_u16();
    match status {
        404 | 410 if optional => Ok(None),
        // ureq refuses a body of exactly its limit: `max` bytes are allowed.
        200 => response.body_mut().with_config().limit(max.saturating_add(1)).read_to_vec().map(Some).map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => Attempt::Final(anyhow::anyhow!(
                "fetch {}: the body is larger than the {max} byte limit",
                redact_url(url)
            )),
            e => Attempt::Retry(anyhow::Error::new(e).context("read body")),
        }),
        408 | 429 | 500..=599 => Err(Attempt::Retry(anyhow::anyhow!("HTTP {status}"))),
        _ => Err(Attempt::Final(anyhow::anyhow!("fetch {}: HTTP {status}", redact_url(url)))),
    }
}

/// Retry what may pass: a connection error, a timeout. A refused
/// certificate is final (rustls's verdict does not change on retry; PID 1
/// adds the wrong-clock hint when it is about dates), and so is a
/// downgrade to http, a redirect loop or a response too large.
fn classify(url: &str, err: ureq::Error) -> Attempt {
    let shown = redact_url(url);
    match err {
        ureq::Error::RequireHttpsOnly(to) => {
            Attempt::Final(anyhow::anyhow!("fetch {shown}: redirected to {}: refused, https is never followed to http", redact_url(&to)))
        }
        ureq::Error::TooManyRedirects
        | ureq::Error::RedirectFailed
        | ureq::Error::BadUri(_)
        | ureq::Error::InvalidProxyUrl
        | ureq::Error::LargeResponseHeader(..)
        | ureq::Error::BodyExceedsLimit(_) => Attempt::Final(anyhow::Error::new(err).context(format!("fetch {shown}"))),
        err => {
            let err = anyhow::Error::new(err);
            if format!("{err:#}").contains("invalid peer certificate") {
                return Attempt::Final(err.context(format!("fetch {shown}")));
            }
            Attempt::Retry(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn locations() {
        let cases: &[(&str, Result<Location, &str>)] = &[
            ("http://10.0.2.2:8080/w.yaml", Ok(Location::Http("http://10.0.2.2:8080/w.yaml".into()))),
            ("https://example.org/w.yaml", Ok(Location::Http("https://example.org/w.yaml".into()))),
            ("file:///etc/iguana/control.yaml", Ok(Location::File("/etc/iguana/control.yaml".into()))),
            ("/w.yaml", Ok(Location::File("/w.yaml".into()))),
            ("file://w.yaml", Err("\"file://w.yaml\": a file:// URL needs an absolute path (file:///path)")),
            ("ftp://x/w", Err("\"ftp://x/w\": control_url must be http://, https://, file:///path or an absolute path")),
        ];
        for (url, want) in cases {
            assert_eq!(locate(url), want.clone().map_err(str::to_string), "{url}");
        }
    }

    #[test]
    fn signature_urls_keep_the_query() {
        let cases: &[(&str, &str)] = &[
            ("http://10.0.2.2:8080/w.yaml", "http://10.0.2.2:8080/w.yaml.sig"),
            ("https://h/w.yaml?token=s3cr3t", "https://h/w.yaml.sig?token=s3cr3t"),
            ("https://h/w.yaml?a=1?b=2", "https://h/w.yaml.sig?a=1?b=2"),
            ("https://u:p@h/w.yaml?t=1#frag", "https://u:p@h/w.yaml.sig?t=1"),
            ("https://h/w.yaml#frag", "https://h/w.yaml.sig"),
            ("https://h/?x", "https://h/.sig?x"),
            ("file:///etc/w.yaml", "file:///etc/w.yaml.sig"),
            ("/etc/w.yaml", "/etc/w.yaml.sig"),
        ];
        for (url, want) in cases {
            assert_eq!(signature_url(url, ".sig"), *want, "{url}");
        }
        assert_eq!(signature_url("http://h/w?q", ".sigstore.json"), "http://h/w.sigstore.json?q");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let got: Vec<u64> = (1..=7).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 16, 16]);
    }

    /// A one-thread HTTP server on 127.0.0.1 answering with the given
    /// statuses in turn.
    fn serve(answers: Vec<(u16, &'static str)>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for (status, body) in answers {
                let Ok((mut stream, _)) = listener.accept() else { return };
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        port
    }

    #[test]
    fn retries_transient_errors_then_succeeds() {
        let port = serve(vec![(503, "busy"), (500, "oops"), (200, "jobs: {}\n")]);
        let body = fetch(&format!("http://127.0.0.1:{port}/w.yaml"), 5, Path::new(CA_BUNDLE)).unwrap();
        assert_eq!(body, b"jobs: {}\n");
    }

    #[test]
    fn does_not_retry_not_found_and_names_the_url() {
        let port = serve(vec![(404, "no")]);
        let url = format!("http://127.0.0.1:{port}/w.yaml");
        let err = fetch(&url, 5, Path::new(CA_BUNDLE)).unwrap_err();
        assert_eq!(format!("{err:#}"), format!("fetch {url}: HTTP 404"));
    }

    #[test]
    fn a_body_over_the_limit_is_final() {
        let port = serve(vec![(200, "0123456789")]);
        let url = format!("http://127.0.0.1:{port}/x.raw");
        assert_eq!(fetch_max(&url, 5, Path::new(CA_BUNDLE), 10).unwrap(), b"0123456789");
        let port = serve(vec![(200, "0123456789")]);
        let url = format!("http://127.0.0.1:{port}/x.raw");
        let err = fetch_max(&url, 5, Path::new(CA_BUNDLE), 9).unwrap_err();
        assert_eq!(format!("{err:#}"), format!("fetch {url}: the body is larger than the 9 byte limit"));
    }

    #[test]
    fn gives_up_after_the_last_try() {
        let port = serve(vec![(503, "a"), (503, "b")]);
        let url = format!("http://127.0.0.1:{port}/w.yaml");
        let err = fetch(&url, 2, Path::new(CA_BUNDLE)).unwrap_err();
        assert_eq!(format!("{err:#}"), format!("fetch {url}: gave up after 2 tries: HTTP 503"));
    }

    #[test]
    fn reads_local_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.yaml");
        std::fs::write(&path, "jobs: {}\n").unwrap();
        assert_eq!(fetch(&format!("file://{}", path.display()), 1, Path::new(CA_BUNDLE)).unwrap(), b"jobs: {}\n");
        let err = fetch("/nonexistent/w.yaml", 1, Path::new(CA_BUNDLE)).unwrap_err();
        assert!(format!("{err:#}").starts_with("open /nonexistent/w.yaml: "), "{err:#}");
    }
}
