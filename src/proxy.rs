//! `rd.iguana.proxy` and `rd.iguana.no_proxy`, for the helper children
//! that speak HTTP: `iguana pull` (registries, through oci-client's
//! `ClientConfig` proxy fields) and `iguana fetch` (control_url, through
//! ureq's proxy).
//!
//! PID 1 writes the proxy (URL and no_proxy) to a root-only file,
//! [`FILE`], and hands those two children only its name, under iguana's own
//! variable (`IGUANA_PROXY_FILE`) so that a host's `HTTPS_PROXY` never
//! decides it by accident. The URL may carry credentials: it is in no
//! process's environment (PID 1's is inherited by every container and the
//! switch_root'ed init), and the file is removed before the handover
//! ([`forget`]). `no_proxy` follows
//! curl: `*` matches every host; an IP or CIDR matches addresses in it; any
//! other entry is a domain (a leading dot is optional) and matches that
//! host and its subdomains. Ports are not part of the match.
//!
//! `iguana report` is started by PID 1 itself (not through `child::run`)
//! and gets the same file's name on its command line (`--proxy-file`).
//!
//! This file uses std only: tests/pull.rs compiles it next to the image
//! module.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The variable naming the proxy file in the environment of pull and fetch.
pub const FILE_ENV: &str = "IGUANA_PROXY_FILE";
/// Where PID 1 writes the proxy for them (on /run's tmpfs, 0600).
pub const FILE: &str = "/run/iguana/proxy";

/// The proxy PID 1 was given and the file it wrote it to.
static EXPORTED: OnceLock<(Proxy, PathBuf)> = OnceLock::new();

/// PID 1, before any child: writes the proxy to [`FILE`] for the children
/// that speak HTTP (see `child_env`). PID 1's environment is left alone.
pub fn export(url: Option<&str>, no_proxy: &[String]) -> std::io::Result<()> {
    export_to(url, no_proxy, Path::new(FILE))
}

/// [`export`] to another file (tests).
pub fn export_to(url: Option<&str>, no_proxy: &[String], file: &Path) -> std::io::Result<()> {
    let Some(url) = url else { return Ok(()) };
    let proxy = Proxy { url: url.to_owned(), no_proxy: no_proxy.to_vec() };
    proxy.write_file(file).map_err(|e| std::io::Error::new(e.kind(), format!("write {}: {e}", file.display())))?;
    let _ = EXPORTED.set((proxy, file.to_owned()));
    Ok(())
}

/// Before the handover: the proxy file goes (the next system keeps /run).
pub fn forget() {
    if let Some((_, file)) = EXPORTED.get() {
        let _ = std::fs::remove_file(file);
    }
}

/// The extra environment of the helper child `iguana ARGS...`: the proxy
/// file's name for `pull` and `fetch`, nothing for the others.
pub fn child_env(args: &[String]) -> Vec<(&'static str, String)> {
    match (EXPORTED.get(), args.first().map(String::as_str)) {
        (Some((_, file)), Some("pull" | "fetch")) => vec![(FILE_ENV, file.display().to_string())],
        _ => Vec::new(),
    }
}

/// The file PID 1 wrote the proxy to, if any (for children it starts
/// itself: `iguana report --proxy-file`).
pub fn exported_file() -> Option<&'static Path> {
    EXPORTED.get().map(|(_, file)| file.as_path())
}

/// A proxy file is at most this long.
const FILE_MAX: u64 = 64 << 10;

/// Where HTTP(S) goes, and what goes direct.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// `http://[user:pass@]host[:port]`, checked by the cmdline parser.
    pub url: String,
    pub no_proxy: Vec<String>,
}

/// The host only: a Debug line may reach the console, and the URL may
/// carry credentials. (std only, see above: no `redact` here.)
impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("host", &url_host(&self.url)).field("no_proxy", &self.no_proxy).finish()
    }
}

impl Proxy {
    /// What PID 1 handed this child, if anything: the file named by
    /// `IGUANA_PROXY_FILE`. One that cannot be read is said on stderr and
    /// means no proxy.
    pub fn from_env() -> Option<Proxy> {
        let file = std::env::var_os(FILE_ENV).filter(|f| !f.is_empty())?;
        match Proxy::read_file(Path::new(&file)) {
            Ok(proxy) => proxy,
            Err(e) => {
                eprintln!("warning: read proxy file {}: {e}", Path::new(&file).display());
                None
            }
        }
    }

    /// Writes the proxy to `path`, readable by root only: the URL on the
    /// first line, no_proxy (comma-separated) on the second.
    pub fn write_file(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::fs::PermissionsExt;
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
        // A file that was there keeps its mode through open.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(format!("{}\n{}\n", self.url, self.no_proxy.join(",")).as_bytes())
    }

    /// What [`Proxy::write_file`] wrote (at most 64 KiB read); `None` when
    /// the URL line is empty.
    pub fn read_file(path: &std::path::Path) -> std::io::Result<Option<Proxy>> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(path)?.take(FILE_MAX).read_to_string(&mut text)?;
        let mut lines = text.lines();
        let url = lines.next().unwrap_or_default().trim();
        if url.is_empty() {
            return Ok(None);
        }
        let no_proxy = lines.next().unwrap_or_default();
        Ok(Some(Proxy { url: url.to_owned(), no_proxy: split_list(no_proxy) }))
    }

    /// Whether `url` goes through the proxy.
    pub fn applies_to(&self, url: &str) -> bool {
        !url_host(url).is_some_and(|host| bypass(&self.no_proxy, host))
    }
}

/// `a, b,,c` -> `[a, b, c]`.
fn split_list(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// The host of `scheme://[userinfo@]host[:port][/...]`, without brackets.
pub fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split_once(']').map(|(ip, _)| ip);
    }
    Some(host_port.split(':').next().unwrap_or(host_port)).filter(|h| !h.is_empty())
}

/// curl's `no_proxy` match of `host` against the list.
pub fn bypass(no_proxy: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let ip: Option<IpAddr> = host.parse().ok();
    no_proxy.iter().any(|entry| {
        if entry == "*" {
            return true;
        }
        if let Some((net, bits)) = entry.split_once('/') {
            return match (ip, net.parse::<IpAddr>(), bits.parse::<u32>()) {
                (Some(ip), Ok(net), Ok(bits)) => in_cidr(ip, net, bits),
                _ => false,
            };
        }
        if let (Some(ip), Ok(entry_ip)) = (ip, entry.parse::<IpAddr>()) {
            return ip == entry_ip;
        }
        let domain = entry.trim_start_matches('.').trim_end_matches('.').to_ascii_lowercase();
        !domain.is_empty() && (host == domain || host.strip_suffix(&domain).is_some_and(|h| h.ends_with('.')))
    })
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(no_proxy: &str, host: &str, expected: bool) {
        let list: Vec<String> = no_proxy.split(',').map(str::to_owned).collect();
        assert_eq!(bypass(&list, host), expected, "no_proxy={no_proxy} host={host}");
    }

    #[test]
    fn no_proxy_like_curl() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "anything.example", true),
            ("example.com", "example.com", true),
            ("example.com", "registry.example.com", true),
            (".example.com", "example.com", true),
            (".example.com", "a.b.example.com", true),
            ("example.com", "badexample.com", false),
            ("example.com", "example.com.evil", false),
            ("EXAMPLE.com", "Registry.Example.COM.", true),
            ("10.0.0.0/8", "10.1.2.3", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("10.0.0.0/0", "192.0.2.1", true),
            ("192.0.2.7/32", "192.0.2.7", true),
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("::1", "::1", true),
            ("10.0.0.0/8", "ten.example", false),
            ("lan,10.0.2.2", "10.0.2.2", true),
            ("lan,10.0.2.2", "registry", false),
            ("", "registry", false),
        ];
        for (list, host, expected) in cases {
            check(list, host, *expected);
        }
    }

    /// PID 1's environment is inherited by every container and by the
    /// switch_root'ed init: the proxy (credentials included) never goes
    /// there, nor into the environment of pull and fetch: they get the
    /// name of a root-only file.
    #[test]
    fn export_leaves_every_environment_without_the_proxy() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("proxy");
        export_to(Some("http://bob:pr0xyPW@proxy.lan:3128"), &["lan".into()], &file).unwrap();
        assert_eq!(std::env::var_os(FILE_ENV), None);
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let want = vec![(FILE_ENV, file.display().to_string())];
        assert_eq!(child_env(&args(&["pull", "busybox"])), want);
        assert_eq!(child_env(&args(&["fetch", "http://x/w"])), want);
        for (_, value) in child_env(&args(&["pull", "busybox"])) {
            assert!(!value.contains("pr0xyPW") && !value.contains("proxy.lan"), "{value}");
        }
        for other in [&["net-up"][..], &["hotplug"], &[]] {
            assert_eq!(child_env(&args(other)), vec![], "{other:?}");
        }
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        let read = Proxy::read_file(&file).unwrap().unwrap();
        assert_eq!((read.url.as_str(), read.no_proxy.as_slice()), ("http://bob:pr0xyPW@proxy.lan:3128", &["lan".to_string()][..]));
        forget();
        assert!(!file.exists(), "the file outlives the handover");
        let shown = format!("{:?}", Proxy { url: "http://bob:pr0xyPW@p:1".into(), no_proxy: vec![] });
        assert!(!shown.contains("pr0xyPW"), "{shown}");
    }

    #[test]
    fn the_report_childs_proxy_file_round_trips_and_is_root_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("iguana-proxy-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("proxy");
        let cases = [
            Proxy { url: "http://bob:pr0xyPW@proxy.lan:3128".into(), no_proxy: vec!["lan".into(), "10.0.0.0/8".into()] },
            Proxy { url: "http://p:1".into(), no_proxy: vec![] },
        ];
        for proxy in cases {
            proxy.write_file(&path).unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(Proxy::read_file(&path).unwrap(), Some(proxy));
        }
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(Proxy::read_file(&path).unwrap(), None);
        assert!(Proxy::read_file(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn url_hosts() {
        let cases: &[(&str, Option<&str>)] = &[
            ("http://10.0.2.2:8080/w.yaml", Some("10.0.2.2")),
            ("https://user:pw@example.org/x?y", Some("example.org")),
            ("https://[fd00::1]:443/w", Some("fd00::1")),
            ("http://host", Some("host")),
            ("http:///path", None),
            ("no-scheme", None),
        ];
        for (url, expected) in cases {
            assert_eq!(url_host(url), *expected, "{url}");
        }
        let proxy = Proxy { url: "http://p:3128".into(), no_proxy: vec![".lan".into()] };
        assert!(proxy.applies_to("https://example.org/w"));
        assert!(!proxy.applies_to("http://boot.lan/w"));
    }
}
