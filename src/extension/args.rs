//! What the kernel command line asks of extensions (pure):
//! `rd.iguana.extensions=SOURCE[,SOURCE...]` and
//! `rd.iguana.extensions_required=1`, `rd.iguana.extensions_wait=SECONDS`.
//!
//! A SOURCE is an `http://`/`https://` URL of a `NAME.raw` image (erofs or
//! squashfs), a block device holding such an image as its filesystem
//! (`/dev/sdb`, `LABEL=SITE`), or `oci:REF`. The last occurrence of the key
//! wins, as for every `rd.iguana.*` argument.

use crate::cmdline::split;
use crate::redact::redact_url;

const KEY: &str = "rd.iguana.extensions";
const REQUIRED: &str = "rd.iguana.extensions_required";
const WAIT: &str = "rd.iguana.extensions_wait";
/// The longest wait for a block device the command line may ask.
const WAIT_MAX: u64 = 600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A `NAME.raw` fetched over HTTP(S) after network-up.
    Url(String),
    /// A block device path whose filesystem is the extension.
    Device(String),
    /// `LABEL=NAME`: the block device with that filesystem label.
    Label(String),
    /// `oci:REF`: an image whose rootfs is the extension.
    Oci(String),
}

impl Source {
    /// Whether it can only be had once the network is up.
    pub fn needs_network(&self) -> bool {
        matches!(self, Source::Url(_) | Source::Oci(_))
    }

    /// How a log line names it (a URL without its secrets).
    pub fn shown(&self) -> String {
        match self {
            Source::Url(url) => redact_url(url),
            Source::Device(path) => path.clone(),
            Source::Label(label) => format!("LABEL={label}"),
            Source::Oci(reference) => format!("oci:{reference}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub sources: Vec<Source>,
    /// A refused extension fails the boot instead of being left out.
    pub required: bool,
    /// How long each block device (`/dev/...`, `LABEL=`) is waited for
    /// after coldplug.
    pub wait: std::time::Duration,
}

impl Default for Args {
    fn default() -> Self {
        Args { sources: Vec::new(), required: false, wait: super::device::WAIT_DEFAULT }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("{KEY}: {item:?} is not an http(s) URL, /dev/ path, LABEL= or oci: reference")]
    Source { item: String },
    #[error("{WAIT}: {0:?} is not a number of seconds from 0 to {WAIT_MAX}")]
    Wait(String),
}

/// Parses a whole kernel command line.
pub fn parse(line: &str) -> Result<Args, Error> {
    let mut args = Args::default();
    let mut value = None;
    for (key, v) in split(line) {
        match key.as_str() {
            KEY => value = Some(v.unwrap_or_default()),
            REQUIRED => args.required = !matches!(v.as_deref(), Some("0" | "false" | "no" | "off")),
            WAIT => {
                let v = v.unwrap_or_default();
                let secs = v.parse::<u64>().ok().filter(|s| *s <= WAIT_MAX).ok_or_else(|| Error::Wait(v.clone()))?;
                args.wait = std::time::Duration::from_secs(secs);
            }
            _ => {}
        }
    }
    for item in value.as_deref().unwrap_or("").split(',').map(str::trim).filter(|i| !i.is_empty()) {
        args.sources.push(source(item)?);
    }
    Ok(args)
}

fn source(item: &str) -> Result<Source, Error> {
    let bad = || Error::Source { item: redact_url(item) };
    if item.starts_with("http://") || item.starts_with("https://") {
        return Ok(Source::Url(item.to_string()));
    }
    if let Some(label) = item.strip_prefix("LABEL=") {
        let ok = !label.is_empty() && label.len() <= 64 && label.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        return if ok { Ok(Source::Label(label.to_string())) } else { Err(bad()) };
    }
    if let Some(rest) = item.strip_prefix("/dev/") {
        let ok = !rest.is_empty() && rest.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
        return if ok { Ok(Source::Device(item.to_string())) } else { Err(bad()) };
    }
    if let Some(reference) = item.strip_prefix("oci:") {
        return if reference.is_empty() { Err(bad()) } else { Ok(Source::Oci(reference.to_string())) };
    }
    Err(bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, want: Result<(&[Source], bool), &str>) {
        let got = parse(line).map_err(|e| e.to_string());
        let want = want.map(|(sources, required)| Args { sources: sources.to_vec(), required, ..Args::default() }).map_err(str::to_string);
        assert_eq!(got, want, "{line}");
    }

    #[test]
    fn command_lines() {
        use Source::*;
        check("console=ttyS0 quiet", Ok((&[], false)));
        check(
            "console=ttyS0 rd.iguana.extensions=http://10.0.2.2:8080/pvscsi.raw,LABEL=SITE,/dev/sdb rd.iguana.extensions_required=1",
            Ok((
                &[Url("http://10.0.2.2:8080/pvscsi.raw".into()), Label("SITE".into()), Device("/dev/sdb".into())],
                true,
            )),
        );
        check("rd.iguana.extensions=oci:10.0.2.2:5000/ext/site:1 rd.iguana.extensions_required=0", Ok((&[Oci("10.0.2.2:5000/ext/site:1".into())], false)));
        check("rd.iguana.extensions=http://a/x.raw rd.iguana.extensions=https://b/y.raw", Ok((&[Url("https://b/y.raw".into())], false)));
        check("rd.iguana.extensions_required", Ok((&[], true)));
        check("rd.iguana.extensions=", Ok((&[], false)));
        check("rd.iguana.extensions=ftp://x/y.raw", Err("rd.iguana.extensions: \"ftp://x/y.raw\" is not an http(s) URL, /dev/ path, LABEL= or oci: reference"));
        check("rd.iguana.extensions=/dev/../etc/shadow", Err("rd.iguana.extensions: \"/dev/../etc/shadow\" is not an http(s) URL, /dev/ path, LABEL= or oci: reference"));
        check("rd.iguana.extensions=LABEL=a/b", Err("rd.iguana.extensions: \"LABEL=a/b\" is not an http(s) URL, /dev/ path, LABEL= or oci: reference"));
        check("rd.iguana.extensions=oci:", Err("rd.iguana.extensions: \"oci:\" is not an http(s) URL, /dev/ path, LABEL= or oci: reference"));
    }

    #[test]
    fn device_wait() {
        let secs = |line: &str| parse(line).map(|a| a.wait.as_secs()).map_err(|e| e.to_string());
        assert_eq!(secs("quiet"), Ok(10));
        assert_eq!(secs("rd.iguana.extensions_wait=30"), Ok(30));
        assert_eq!(secs("rd.iguana.extensions_wait=0"), Ok(0));
        assert_eq!(secs("rd.iguana.extensions_wait=601"), Err("rd.iguana.extensions_wait: \"601\" is not a number of seconds from 0 to 600".into()));
        assert_eq!(secs("rd.iguana.extensions_wait=5s"), Err("rd.iguana.extensions_wait: \"5s\" is not a number of seconds from 0 to 600".into()));
    }

    #[test]
    fn urls_are_shown_without_secrets() {
        let args = parse("rd.iguana.extensions=https://u:pw@h/x.raw?token=t").unwrap();
        assert_eq!(args.sources[0].shown(), redact_url("https://u:pw@h/x.raw?token=t"));
        assert!(!args.sources[0].shown().contains("pw"));
    }
}
