//! Phase "cmdline": what the kernel command line asks of iguana.
//!
//! `parse` is pure: it takes the text of `/proc/cmdline` and returns the
//! settings, or an error that names the argument. Splitting follows the
//! kernel's own `next_arg()` (lib/cmdline.c): spaces separate arguments unless
//! inside double quotes, and the quotes around a value are removed. When an
//! argument is repeated, the last occurrence wins.

use std::time::Duration;

/// Settings taken from the kernel command line. Its Debug form redacts the
/// URLs (see `redact`): PID 1 logs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Cmdline {
    /// `rd.iguana.containers`: images to run in order, when no control_url.
    pub containers: Vec<String>,
    /// `rd.iguana.control_url`: where the workflow file comes from.
    pub control_url: Option<String>,
    /// `rd.iguana.debug` or `rd.debug`: verbose logs, a shell on failure.
    pub debug: bool,
    /// `rd.iguana.insecure_registries`: registries reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// `rd.iguana.net_timeout`: how long to wait for a DHCP lease.
    pub net_timeout: Duration,
    /// `rd.iguana.registry_mirror=REGISTRY=MIRROR[,..]`: where to try
    /// REGISTRY's images first.
    pub registry_mirrors: Vec<(String, String)>,
    /// `rd.iguana.ca=PATH`: a PEM file of extra trust roots for HTTPS
    /// registries. PATH is read by `iguana pull` when the image is pulled,
    /// so it may be in the initrd or on anything mounted by then.
    pub ca: Option<String>,
    /// `rd.iguana.ntp=SERVER[,SERVER]`: NTP servers (`host[:port]`,
    /// `[v6]:port`) asked for the time when the clock is before the build
    /// date; the DHCP lease's servers are used when this is not given.
    pub ntp: Vec<String>,
    /// `rd.iguana.proxy=URL`: HTTP proxy (`http://[user:pass@]host[:port]`)
    /// for registries and control_url, HTTPS through CONNECT.
    pub proxy: Option<String>,
    /// `rd.iguana.no_proxy=`: hosts reached without the proxy, curl's
    /// syntax: `host`, `.domain` or `domain` (matches its subdomains), an
    /// IP, a CIDR, or `*` for all.
    pub no_proxy: Vec<String>,
    /// `rd.iguana.tmpfs_size=MOUNT=SIZE[,..]`: sizes of the /run, /iguana
    /// and /tmp tmpfs instead of [`crate::early::TMPFS_SIZES`].
    pub tmpfs_size: Vec<(String, String)>,
    /// `rd.iguana.report_url=`: where status events go (http or https).
    pub report_url: Option<String>,
    /// `rd.iguana.report_token=`: bearer token for the report_url; never
    /// shown (left out of `Debug`).
    pub report_token: Option<String>,
}

impl Default for Cmdline {
    fn default() -> Self {
        Cmdline {
            containers: Vec::new(),
            control_url: None,
            debug: false,
            insecure_registries: Vec::new(),
            net_timeout: Duration::from_secs(60),
            registry_mirrors: Vec::new(),
            ca: None,
            ntp: Vec::new(),
            proxy: None,
            no_proxy: Vec::new(),
            tmpfs_size: Vec::new(),
            report_url: None,
            report_token: None,
        }
    }
}

impl std::fmt::Debug for Cmdline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |url: &Option<String>| url.as_deref().map(crate::redact::redact_url);
        f.debug_struct("Cmdline")
            .field("containers", &self.containers)
            .field("control_url", &redact(&self.control_url))
            .field("debug", &self.debug)
            .field("insecure_registries", &self.insecure_registries)
            .field("net_timeout", &self.net_timeout)
            .field("registry_mirrors", &self.registry_mirrors)
            .field("ca", &self.ca)
            .field("ntp", &self.ntp)
            .field("proxy", &redact(&self.proxy))
            .field("no_proxy", &self.no_proxy)
            .field("report_url", &redact(&self.report_url))
            .field("report_token", &self.report_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A URL argument's `item` is shown redacted (`redact_url`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("{key}: empty value")]
    Empty { key: &'static str },
    #[error("{key}: item {index} is empty in {value:?}")]
    EmptyItem { key: &'static str, index: usize, value: String },
    #[error("{key}: {item:?} is not a valid {what}")]
    Invalid { key: &'static str, item: String, what: &'static str },
}

const CONTAINERS: &str = "rd.iguana.containers";
const CONTROL_URL: &str = "rd.iguana.control_url";
const INSECURE: &str = "rd.iguana.insecure_registries";
const NET_TIMEOUT: &str = "rd.iguana.net_timeout";
const MIRROR: &str = "rd.iguana.registry_mirror";
const CA: &str = "rd.iguana.ca";
const NTP: &str = "rd.iguana.ntp";
const PROXY: &str = "rd.iguana.proxy";
const NO_PROXY: &str = "rd.iguana.no_proxy";
const TMPFS_SIZE: &str = "rd.iguana.tmpfs_size";
const REPORT_URL: &str = "rd.iguana.report_url";
pub const REPORT_TOKEN: &str = "rd.iguana.report_token";

/// Reads the running kernel's command line.
pub fn read_proc_cmdline() -> std::io::Result<String> {
    std::fs::read_to_string("/proc/cmdline")
}

/// Splits a command line into `(key, value)` pairs the way the kernel does.
pub fn split(line: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut chars = line.trim().chars().peekable();
    while chars.peek().is_some() {
        let mut arg = String::new();
        let mut in_quote = false;
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() && !in_quote {
                break;
            }
            if c == '"' {
                in_quote = !in_quote;
            }
            arg.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        out.push(unquote_arg(&arg));
    }
    out
}

/// Removes the quotes the kernel removes: a leading quote on the whole
/// argument or on the value, with its closing quote at the end.
fn unquote_arg(arg: &str) -> (String, Option<String>) {
    let whole_quoted = arg.starts_with('"');
    let arg = arg.strip_prefix('"').unwrap_or(arg);
    match arg.split_once('=') {
        Some((key, value)) => {
            let value_quoted = value.starts_with('"');
            let mut value = value.strip_prefix('"').unwrap_or(value);
            if whole_quoted || value_quoted {
                value = value.strip_suffix('"').unwrap_or(value);
            }
            (key.to_string(), Some(value.to_string()))
        }
        None => {
            let key = if whole_quoted { arg.strip_suffix('"').unwrap_or(arg) } else { arg };
            (key.to_string(), None)
        }
    }
}

/// What PID 1 needs to know to fail safely. Read apart from `parse`, and
/// leniently, so that a command line with a bad argument still gets the debug
/// shell or the reboot delay it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failsafe {
    /// `rd.iguana.debug` or `rd.debug`.
    pub debug: bool,
    /// `rd.iguana.reboot_timeout`: seconds before rebooting after a failure.
    pub reboot_timeout: Duration,
}

pub fn failsafe(line: &str) -> Failsafe {
    let mut out = Failsafe { debug: false, reboot_timeout: Duration::from_secs(10) };
    for (key, value) in split(line) {
        match key.as_str() {
            "rd.iguana.debug" | "rd.debug" => out.debug = flag(value.as_deref()),
            "rd.iguana.reboot_timeout" => {
                if let Some(secs) = value.and_then(|v| v.trim_end_matches('s').parse::<u64>().ok()) {
                    out.reboot_timeout = Duration::from_secs(secs.min(24 * 3600));
                }
            }
            _ => {}
        }
    }
    out
}

/// A flag is on when given bare or with a true-ish value.
fn flag(value: Option<&str>) -> bool {
    !matches!(value, Some("0" | "false" | "no" | "off"))
}

/// Parses the iguana settings out of a whole kernel command line.
pub fn parse(line: &str) -> Result<Cmdline, Error> {
    let mut cmdline = Cmdline::default();
    // Last occurrence wins: remember the last raw value of each key, then
    // validate only those.
    let mut containers = None;
    let mut control_url = None;
    let mut insecure = None;
    let mut net_timeout = None;
    let (mut mirrors, mut ca) = (None, None);
    let (mut ntp, mut proxy, mut no_proxy, mut tmpfs_size) = (None, None, None, None);
    let (mut report_url, mut report_token) = (None, None);
    for (key, value) in split(line) {
        match key.as_str() {
            CONTAINERS => containers = Some(value.unwrap_or_default()),
            CONTROL_URL => control_url = Some(value.unwrap_or_default()),
            INSECURE => insecure = Some(value.unwrap_or_default()),
            NET_TIMEOUT => net_timeout = Some(value.unwrap_or_default()),
            MIRROR => mirrors = Some(value.unwrap_or_default()),
            CA => ca = Some(value.unwrap_or_default()),
            NTP => ntp = Some(value.unwrap_or_default()),
            PROXY => proxy = Some(value.unwrap_or_default()),
            NO_PROXY => no_proxy = Some(value.unwrap_or_default()),
            TMPFS_SIZE => tmpfs_size = Some(value.unwrap_or_default()),
            REPORT_URL => report_url = Some(value.unwrap_or_default()),
            REPORT_TOKEN => report_token = Some(value.unwrap_or_default()),
            "rd.iguana.debug" | "rd.debug" => cmdline.debug = flag(value.as_deref()),
            _ => {}
        }
    }
    if let Some(value) = containers {
        cmdline.containers = list(CONTAINERS, &value, "image reference", valid_image)?;
    }
    if let Some(value) = control_url {
        if value.is_empty() {
            return Err(Error::Empty { key: CONTROL_URL });
        }
        if value.chars().any(|c| c.is_control()) {
            return Err(Error::Invalid { key: CONTROL_URL, item: crate::redact::redact_url(&value), what: "URL" });
        }
        cmdline.control_url = Some(value);
    }
    if let Some(value) = insecure {
        cmdline.insecure_registries = list(INSECURE, &value, "registry host[:port]", valid_host)?;
    }
    if let Some(value) = net_timeout {
        cmdline.net_timeout = seconds(NET_TIMEOUT, &value)?;
    }
    if let Some(value) = mirrors {
        cmdline.registry_mirrors = list(MIRROR, &value, "REGISTRY=MIRROR pair", valid_mirror)?
            .iter()
            .filter_map(|pair| pair.split_once('='))
            .map(|(registry, mirror)| (registry.to_string(), mirror.to_string()))
            .collect();
    }
    if let Some(value) = ca {
        if value.is_empty() {
            return Err(Error::Empty { key: CA });
        }
        if !value.starts_with('/') || value.chars().any(|c| c.is_control()) {
            return Err(Error::Invalid { key: CA, item: value, what: "absolute path" });
        }
        cmdline.ca = Some(value);
    }
    if let Some(value) = report_url {
        let web = value.starts_with("http://") || value.starts_with("https://");
        if !web || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
            let item = crate::redact::redact_url(&value);
            return Err(Error::Invalid { key: REPORT_URL, item, what: "report URL (http:// or https://)" });
        }
        cmdline.report_url = Some(value);
    }
    if let Some(value) = report_token {
        // The value itself is never quoted in an error.
        if value.is_empty() {
            return Err(Error::Empty { key: REPORT_TOKEN });
        }
        cmdline.report_token = Some(value);
    }
    if let Some(value) = ntp {
        cmdline.ntp = list(NTP, &value, "NTP server (host[:port] or [IPv6]:port)", |s| crate::clock::parse_server(s).is_some())?;
    }
    if let Some(value) = proxy {
        if value.is_empty() {
            return Err(Error::Empty { key: PROXY });
        }
        if !valid_proxy(&value) {
            let item = crate::redact::redact_url(&value);
            return Err(Error::Invalid { key: PROXY, item, what: "proxy URL (http://[user:pass@]host[:port])" });
        }
        cmdline.proxy = Some(value);
    }
    if let Some(value) = no_proxy {
        cmdline.no_proxy = list(NO_PROXY, &value, "host, .domain, IP, CIDR or *", valid_no_proxy)?;
    }
    if let Some(value) = tmpfs_size {
        let what = "MOUNT=SIZE (run, iguana or tmp; N, Nk, Nm, Ng or N%)";
        cmdline.tmpfs_size = list(TMPFS_SIZE, &value, what, crate::early::valid_tmpfs_size)?
            .iter()
            .filter_map(|pair| pair.split_once('='))
            .map(|(mount, size)| (mount.to_string(), size.to_string()))
            .collect();
    }
    Ok(cmdline)
}

/// `http://[user:pass@]host[:port][/]`: the proxy is spoken to in plain
/// HTTP (HTTPS goes through CONNECT), as curl's `http://` proxies.
fn valid_proxy(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let host_port = match rest.rsplit_once('@') {
        Some((userinfo, host_port)) if userinfo.chars().all(|c| c.is_ascii_graphic() && !matches!(c, '/' | '?' | '#')) => host_port,
        Some(_) => return false,
        None => rest,
    };
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((ip, after)) if ip.parse::<std::net::Ipv6Addr>().is_ok() && (after.is_empty() || after.starts_with(':')) => (ip, after.strip_prefix(':')),
            _ => return false,
        },
        None => match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    !host.is_empty()
        && (host.contains(':') || valid_host(host) && !host.contains(['[', ']']))
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

/// One `no_proxy` item as curl reads it.
fn valid_no_proxy(item: &str) -> bool {
    if item == "*" {
        return true;
    }
    let (host, bits) = match item.split_once('/') {
        Some((ip, bits)) => (ip, Some(bits)),
        None => (item, None),
    };
    match bits {
        Some(bits) => match host.parse::<std::net::IpAddr>() {
            Ok(ip) => bits.parse::<u8>().is_ok_and(|b| b <= if ip.is_ipv4() { 32 } else { 128 }),
            Err(_) => false,
        },
        None => {
            let host = host.strip_prefix('.').unwrap_or(host);
            !host.is_empty() && valid_host(host)
        }
    }
}

fn valid_mirror(item: &str) -> bool {
    item.split_once('=')
        .is_some_and(|(registry, mirror)| !registry.is_empty() && !mirror.is_empty() && valid_host(registry) && valid_host(mirror))
}

/// A comma-separated list where every item must be non-empty and valid.
fn list(
    key: &'static str,
    value: &str,
    what: &'static str,
    valid: fn(&str) -> bool,
) -> Result<Vec<String>, Error> {
    if value.trim().is_empty() {
        return Err(Error::Empty { key });
    }
    let mut items = Vec::new();
    for (index, item) in value.split(',').enumerate() {
        let item = item.trim();
        if item.is_empty() {
            return Err(Error::EmptyItem { key, index: index + 1, value: value.to_string() });
        }
        if !valid(item) {
            return Err(Error::Invalid { key, item: item.to_string(), what });
        }
        items.push(item.to_string());
    }
    Ok(items)
}

/// The characters an image reference may contain; the image module checks
/// the structure when it pulls.
pub fn valid_image(item: &str) -> bool {
    item.len() <= 4096
        && item.chars().all(|c| c.is_ascii_alphanumeric() || "._-/:@+".contains(c))
        && !item.starts_with(['/', ':', '@', '.', '-'])
}

fn valid_host(item: &str) -> bool {
    item.len() <= 255 && item.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
}

/// Seconds as `90` or `90s`.
fn seconds(key: &'static str, value: &str) -> Result<Duration, Error> {
    let digits = value.strip_suffix('s').unwrap_or(value);
    match digits.parse::<u64>() {
        Ok(n) if n > 0 && n <= 24 * 3600 => Ok(Duration::from_secs(n)),
        _ => Err(Error::Invalid { key, item: value.to_string(), what: "number of seconds (1..86400)" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_split(line: &str, expected: &[(&str, Option<&str>)]) {
        let got = split(line);
        let want: Vec<(String, Option<String>)> =
            expected.iter().map(|(k, v)| (k.to_string(), v.map(str::to_string))).collect();
        assert_eq!(got, want, "split({line:?})");
    }

    #[test]
    fn splits_like_the_kernel() {
        check_split("", &[]);
        check_split("  quiet  ", &[("quiet", None)]);
        check_split("a=1 b c=3", &[("a", Some("1")), ("b", None), ("c", Some("3"))]);
        check_split(r#"key="a b" x"#, &[("key", Some("a b")), ("x", None)]);
        check_split(r#""key=a b" x"#, &[("key", Some("a b")), ("x", None)]);
        check_split(r#"k=a"b c"d"#, &[("k", Some(r#"a"b c"d"#))]);
        check_split(r#"k="unterminated x"#, &[("k", Some("unterminated x"))]);
        check_split("k= e=", &[("k", Some("")), ("e", Some(""))]);
        check_split("a=b=c", &[("a", Some("b=c"))]);
    }

    fn check(line: &str, expected: Result<Cmdline, Error>) {
        assert_eq!(parse(line), expected, "parse({line:?})");
    }

    fn with(f: impl FnOnce(&mut Cmdline)) -> Result<Cmdline, Error> {
        let mut c = Cmdline::default();
        f(&mut c);
        Ok(c)
    }

    /// Whole command lines as a PXE config or QEMU would pass them.
    #[test]
    fn parses_real_command_lines() {
        check(
            "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet console=ttyS0,115200",
            Ok(Cmdline::default()),
        );
        check(
            "console=ttyS0 rd.iguana.containers=10.0.2.2:5000/a,10.0.2.2:5000/b \
             rd.iguana.insecure_registries=10.0.2.2:5000 panic=-1",
            with(|c| {
                c.containers = vec!["10.0.2.2:5000/a".into(), "10.0.2.2:5000/b".into()];
                c.insecure_registries = vec!["10.0.2.2:5000".into()];
            }),
        );
        check(
            "initrd=iguana-initrd rd.iguana.control_url=https://example.org/w.yaml rd.iguana.debug",
            with(|c| {
                c.control_url = Some("https://example.org/w.yaml".into());
                c.debug = true;
            }),
        );
        check(
            "rd.iguana.containers=registry.opensuse.org/agama:latest@sha256:abcd rd.debug=0",
            with(|c| c.containers = vec!["registry.opensuse.org/agama:latest@sha256:abcd".into()]),
        );
        check(
            r#"rd.iguana.containers="a, b" rd.iguana.net_timeout=5s"#,
            with(|c| {
                c.containers = vec!["a".into(), "b".into()];
                c.net_timeout = Duration::from_secs(5);
            }),
        );
    }

    #[test]
    fn mirrors_and_ca() {
        check(
            "rd.iguana.registry_mirror=docker.io=10.0.2.2:5001,quay.io=mirror.lan rd.iguana.ca=/etc/iguana/ca.pem",
            with(|c| {
                c.registry_mirrors = vec![
                    ("docker.io".into(), "10.0.2.2:5001".into()),
                    ("quay.io".into(), "mirror.lan".into()),
                ];
                c.ca = Some("/etc/iguana/ca.pem".into());
            }),
        );
        let cases: &[(&str, &str)] = &[
            ("rd.iguana.registry_mirror=", "rd.iguana.registry_mirror: empty value"),
            ("rd.iguana.registry_mirror=docker.io", "rd.iguana.registry_mirror: \"docker.io\" is not a valid REGISTRY=MIRROR pair"),
            ("rd.iguana.registry_mirror=a=", "rd.iguana.registry_mirror: \"a=\" is not a valid REGISTRY=MIRROR pair"),
            ("rd.iguana.registry_mirror=a=b/c", "rd.iguana.registry_mirror: \"a=b/c\" is not a valid REGISTRY=MIRROR pair"),
            ("rd.iguana.registry_mirror=a=b,,c=d", "rd.iguana.registry_mirror: item 2 is empty in \"a=b,,c=d\""),
            ("rd.iguana.ca", "rd.iguana.ca: empty value"),
            ("rd.iguana.ca=ca.pem", "rd.iguana.ca: \"ca.pem\" is not a valid absolute path"),
        ];
        for (line, message) in cases {
            assert_eq!(parse(line).map_err(|e| e.to_string()), Err(message.to_string()), "{line}");
        }
    }

    #[test]
    fn report_url_and_token() {
        check(
            "console=ttyS0 rd.iguana.report_url=https://events.lan/iguana rd.iguana.report_token=s3cr3t",
            with(|c| {
                c.report_url = Some("https://events.lan/iguana".into());
                c.report_token = Some("s3cr3t".into());
            }),
        );
        let shown = format!("{:?}", parse("rd.iguana.report_url=http://u:pw@h/e rd.iguana.report_token=s3cr3t").unwrap());
        assert!(shown.contains("report_url: Some(\"http://***@h/e\")") && shown.contains("report_token: Some(\"***\")"), "{shown}");
        assert!(!shown.contains("s3cr3t") && !shown.contains("pw"), "{shown}");
        let cases: &[(&str, &str)] = &[
            ("rd.iguana.report_url=", "rd.iguana.report_url: \"\" is not a valid report URL (http:// or https://)"),
            ("rd.iguana.report_url=ftp://h/e", "rd.iguana.report_url: \"ftp://h/e\" is not a valid report URL (http:// or https://)"),
            ("rd.iguana.report_url=h:9?k=v", "rd.iguana.report_url: \"h:9?***\" is not a valid report URL (http:// or https://)"),
            ("rd.iguana.report_token=", "rd.iguana.report_token: empty value"),
        ];
        for (line, message) in cases {
            assert_eq!(parse(line).map_err(|e| e.to_string()), Err(message.to_string()), "{line}");
        }
    }

    #[test]
    fn ntp_and_proxy() {
        check(
            "console=ttyS0 rd.iguana.ntp=10.0.2.2:40123,pool.ntp.org,[2001:db8::1]:123 \
             rd.iguana.proxy=http://proxy.lan:3128 rd.iguana.no_proxy=.lan,10.0.0.0/8,registry,fd00::/8,*",
            with(|c| {
                c.ntp = vec!["10.0.2.2:40123".into(), "pool.ntp.org".into(), "[2001:db8::1]:123".into()];
                c.proxy = Some("http://proxy.lan:3128".into());
                c.no_proxy = vec![".lan".into(), "10.0.0.0/8".into(), "registry".into(), "fd00::/8".into(), "*".into()];
            }),
        );
        for proxy in ["http://10.0.2.2:3128/", "http://user:p%40ss@proxy", "http://[fd00::1]:8080", "http://[::1]"] {
            check(&format!("rd.iguana.proxy={proxy}"), with(|c| c.proxy = Some(proxy.into())));
        }
        let cases: &[(&str, &str)] = &[
            ("rd.iguana.ntp=", "rd.iguana.ntp: empty value"),
            ("rd.iguana.ntp=a,,b", "rd.iguana.ntp: item 2 is empty in \"a,,b\""),
            ("rd.iguana.ntp=ntp:0", "rd.iguana.ntp: \"ntp:0\" is not a valid NTP server (host[:port] or [IPv6]:port)"),
            ("rd.iguana.ntp=udp://ntp", "rd.iguana.ntp: \"udp://ntp\" is not a valid NTP server (host[:port] or [IPv6]:port)"),
            ("rd.iguana.proxy", "rd.iguana.proxy: empty value"),
            ("rd.iguana.proxy=proxy:3128", "rd.iguana.proxy: \"proxy:3128\" is not a valid proxy URL (http://[user:pass@]host[:port])"),
            ("rd.iguana.proxy=https://proxy", "rd.iguana.proxy: \"https://proxy\" is not a valid proxy URL (http://[user:pass@]host[:port])"),
            ("rd.iguana.proxy=http://", "rd.iguana.proxy: \"http://\" is not a valid proxy URL (http://[user:pass@]host[:port])"),
            ("rd.iguana.proxy=http://p:99999", "rd.iguana.proxy: \"http://p:99999\" is not a valid proxy URL (http://[user:pass@]host[:port])"),
            ("rd.iguana.proxy=http://p/path", "rd.iguana.proxy: \"http://p/path\" is not a valid proxy URL (http://[user:pass@]host[:port])"),
            ("rd.iguana.proxy=http://[::1]x", "rd.iguana.proxy: \"http://[::1]x\" is not a valid proxy URL (http://[user:pass@]host[:port])"),
            ("rd.iguana.proxy=http://a:b:c", "rd.iguana.proxy: \"http://a:b:c\" is not a valid proxy URL (http://[user:pass@]host[:port])"),
            // A `?` or `#` in the password must be percent-encoded; the error
            // does not show it.
            ("rd.iguana.proxy=http://alice:pa?ss@p:1", "rd.iguana.proxy: \"http://***@p:1\" is not a valid proxy URL (http://[user:pass@]host[:port])"),
            ("rd.iguana.proxy=http://alice:p#ss@p:1", "rd.iguana.proxy: \"http://***@p:1\" is not a valid proxy URL (http://[user:pass@]host[:port])"),
            ("rd.iguana.no_proxy=", "rd.iguana.no_proxy: empty value"),
            ("rd.iguana.no_proxy=.", "rd.iguana.no_proxy: \".\" is not a valid host, .domain, IP, CIDR or *"),
            ("rd.iguana.no_proxy=10.0.0.0/33", "rd.iguana.no_proxy: \"10.0.0.0/33\" is not a valid host, .domain, IP, CIDR or *"),
            ("rd.iguana.no_proxy=lan/8", "rd.iguana.no_proxy: \"lan/8\" is not a valid host, .domain, IP, CIDR or *"),
            ("rd.iguana.no_proxy=a,,b", "rd.iguana.no_proxy: item 2 is empty in \"a,,b\""),
        ];
        for (line, message) in cases {
            assert_eq!(parse(line).map_err(|e| e.to_string()), Err(message.to_string()), "{line}");
        }
    }

    #[test]
    fn last_occurrence_wins() {
        check(
            "rd.iguana.containers=a rd.iguana.containers=b rd.iguana.debug rd.iguana.debug=no",
            with(|c| c.containers = vec!["b".into()]),
        );
        // A bad value that is overridden later is not an error.
        check("rd.iguana.containers=,, rd.iguana.containers=b", with(|c| c.containers = vec!["b".into()]));
    }

    #[test]
    fn rejects_bad_values_naming_the_argument() {
        let cases: &[(&str, &str)] = &[
            ("rd.iguana.containers=,,", "rd.iguana.containers: item 1 is empty in \",,\""),
            ("rd.iguana.containers=", "rd.iguana.containers: empty value"),
            ("rd.iguana.containers", "rd.iguana.containers: empty value"),
            ("rd.iguana.containers=a,,b", "rd.iguana.containers: item 2 is empty in \"a,,b\""),
            ("rd.iguana.containers=a$b", "rd.iguana.containers: \"a$b\" is not a valid image reference"),
            ("rd.iguana.containers=/abs", "rd.iguana.containers: \"/abs\" is not a valid image reference"),
            ("rd.iguana.control_url=", "rd.iguana.control_url: empty value"),
            ("rd.iguana.insecure_registries=a/b", "rd.iguana.insecure_registries: \"a/b\" is not a valid registry host[:port]"),
            ("rd.iguana.net_timeout=soon", "rd.iguana.net_timeout: \"soon\" is not a valid number of seconds (1..86400)"),
            ("rd.iguana.net_timeout=0", "rd.iguana.net_timeout: \"0\" is not a valid number of seconds (1..86400)"),
        ];
        for (line, message) in cases {
            match parse(line) {
                Err(e) => assert_eq!(e.to_string(), *message, "parse({line:?})"),
                Ok(c) => panic!("parse({line:?}) accepted: {c:?}"),
            }
        }
    }

    #[test]
    fn failsafe_survives_bad_arguments() {
        let secs = Duration::from_secs;
        let cases: &[(&str, bool, Duration)] = &[
            ("rd.iguana.containers=,, rd.iguana.debug", true, secs(10)),
            ("rd.debug", true, secs(10)),
            ("rd.iguana.debug=0", false, secs(10)),
            ("quiet rd.iguana.reboot_timeout=0", false, secs(0)),
            ("rd.iguana.reboot_timeout=3s rd.iguana.reboot_timeout=x", false, secs(3)),
        ];
        for (line, debug, timeout) in cases {
            assert_eq!(failsafe(line), Failsafe { debug: *debug, reboot_timeout: *timeout }, "{line}");
        }
    }

    #[test]
    fn never_panics_on_odd_bytes() {
        for line in ["\"", "\"\"", "=", "==", "\"=\"", "a=\"", "\u{0}\u{1}=\u{7f}", "rd.iguana.containers=\"\""] {
            let _ = parse(line);
            let _ = failsafe(line);
        }
    }

    /// PID 1 logs `{args:?}`: the URLs' credentials and tokens stay out.
    #[test]
    fn debug_form_hides_url_secrets() {
        let c = parse("rd.iguana.control_url=https://u:s3cr3t@h/w?token=t0k3n rd.iguana.proxy=http://u:s3cr3t@p:1").unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("\"https://***@h/w?***\"") && shown.contains("\"http://***@p:1\""), "{shown}");
        assert!(!shown.contains("s3cr3t") && !shown.contains("t0k3n"), "{shown}");
    }
}
