//! Extensions on block devices (`rd.iguana.extensions=/dev/...` or
//! `LABEL=`): found after coldplug, since the disk's own driver
//! (virtio_blk, a SCSI HBA, usb-storage) is a module coldplug loads.
//!
//! PID 1 does not look for the device or read its header itself: a dying
//! USB stick can block a read forever. (It does mount the device the
//! child found and read the extension's release file, file list and module
//! headers through that mount, with no deadline of its own: moving those
//! into the child too is still to do.) `iguana extension probe SOURCE
//! --wait SECS --out FILE`
//! runs as a helper child under a deadline PID 1 enforces; it waits for
//! the device to appear (a USB stick or a SCSI scan takes a while), reads
//! the first bytes of each candidate, and writes `DEVICE FSTYPE` to FILE,
//! which PID 1 reads bounded.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::args::Source;
use super::image::{self, Format};

/// How long a device is waited for unless `rd.iguana.extensions_wait=`
/// says otherwise: a USB stick is usually there within a few seconds of
/// its host controller's driver loading.
pub const WAIT_DEFAULT: Duration = Duration::from_secs(10);
/// What the child may take beyond its wait (start, one last probe).
const SLACK: Duration = Duration::from_secs(10);
/// How often the child looks again.
const POLL: Duration = Duration::from_millis(200);
/// The child's answer is one short line.
const ANSWER_MAX: u64 = 4096;
const ANSWER: &str = "/run/iguana/extension-probe";

/// Where the probe child found `source`: the device and its filesystem.
pub fn find(source: &Source, wait: Duration) -> Result<(PathBuf, Format), String> {
    let spec = match source {
        Source::Device(path) => path.clone(),
        Source::Label(label) => format!("LABEL={label}"),
        other => return Err(format!("{} is not a block device", other.shown())),
    };
    let _ = std::fs::remove_file(ANSWER);
    let args: Vec<String> = vec![
        "extension".into(),
        "probe".into(),
        spec,
        "--wait".into(),
        wait.as_secs().to_string(),
        "--out".into(),
        ANSWER.into(),
    ];
    crate::child::run(&args, wait + SLACK)?;
    let bytes = crate::fsutil::read_bounded(Path::new(ANSWER), ANSWER_MAX).map_err(|e| crate::logging::chain(&e))?;
    parse_answer(&String::from_utf8_lossy(&bytes)).ok_or_else(|| format!("iguana extension probe: unexpected answer {:?}", String::from_utf8_lossy(&bytes)))
}

/// `DEVICE FSTYPE` from the child: a path under /dev/ without `..`, and
/// erofs or squashfs.
pub fn parse_answer(text: &str) -> Option<(PathBuf, Format)> {
    let mut words = text.trim().split(' ');
    let (device, fstype) = (words.next()?, words.next()?);
    if words.next().is_some() || !device.starts_with("/dev/") || device.split('/').any(|c| c == "..") {
        return None;
    }
    let format = match fstype {
        "erofs" => Format::Erofs,
        "squashfs" => Format::Squashfs,
        _ => return None,
    };
    Some((PathBuf::from(device), format))
}

/// `iguana extension probe (/dev/X | LABEL=L) --wait SECS --out FILE`.
pub fn cli(args: &[String]) -> anyhow::Result<()> {
    let usage = "usage: iguana extension probe /dev/NAME|LABEL=LABEL --wait SECS --out FILE";
    let (mut spec, mut wait, mut out) = (None, WAIT_DEFAULT, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--wait" => wait = Duration::from_secs(it.next().and_then(|s| s.parse().ok()).context(usage)?),
            "--out" => out = Some(PathBuf::from(it.next().context(usage)?)),
            other if spec.is_none() && !other.starts_with("--") => spec = Some(other.to_string()),
            _ => bail!("{usage}"),
        }
    }
    let (spec, out) = (spec.context(usage)?, out.context(usage)?);
    let deadline = Instant::now() + wait;
    loop {
        let found = match spec.strip_prefix("LABEL=") {
            Some(label) => by_label(label),
            None => Path::new(&spec).exists().then(|| (PathBuf::from(&spec), header(Path::new(&spec)))),
        };
        match found {
            Some((device, Ok(header))) => {
                let format = image::detect(&header).with_context(|| format!("{}: neither erofs nor squashfs", device.display()))?;
                std::fs::write(&out, format!("{} {}\n", device.display(), format.fstype())).with_context(|| format!("write {}", out.display()))?;
                return Ok(());
            }
            Some((device, Err(e))) => bail!("read {}: {e}", device.display()),
            None if Instant::now() >= deadline => match spec.strip_prefix("LABEL=") {
                Some(label) => bail!("no block device has the erofs label {label:?} (waited {} s)", wait.as_secs()),
                None => bail!("{spec} did not appear (waited {} s)", wait.as_secs()),
            },
            None => std::thread::sleep(POLL),
        }
    }
}

/// The block device whose erofs superblock carries `label`; devices that
/// cannot be read (an empty CD drive) are passed over.
fn by_label(label: &str) -> Option<(PathBuf, std::io::Result<Vec<u8>>)> {
    let mut names: Vec<_> = std::fs::read_dir("/sys/class/block").ok()?.flatten().map(|e| e.file_name()).collect();
    names.sort();
    names.into_iter().map(|n| Path::new("/dev").join(n)).find_map(|dev| {
        let header = header(&dev).ok()?;
        (image::erofs_label(&header).as_deref() == Some(label)).then_some((dev, Ok(header)))
    })
}

fn header(path: &Path) -> std::io::Result<Vec<u8>> {
    super::read_header(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let cases: &[(&str, Option<(&str, Format)>)] = &[
            ("/dev/vdb erofs\n", Some(("/dev/vdb", Format::Erofs))),
            ("/dev/sdb1 squashfs", Some(("/dev/sdb1", Format::Squashfs))),
            ("/dev/vdb ext4\n", None),
            ("/etc/passwd erofs\n", None),
            ("/dev/../etc/x erofs\n", None),
            ("/dev/vdb erofs extra\n", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_answer(text), want.map(|(d, f)| (PathBuf::from(d), f)), "{text:?}");
        }
    }

    /// The child itself, against a file standing in for the device: found
    /// at once, and a missing one given up after its wait.
    #[test]
    fn probes_a_path_and_gives_up_after_the_wait() {
        let tmp = tempfile::tempdir().unwrap();
        let dev = tmp.path().join("disk");
        let mut bytes = vec![0u8; image::HEADER];
        bytes[..4].copy_from_slice(b"hsqs");
        std::fs::write(&dev, bytes).unwrap();
        let out = tmp.path().join("answer");
        let args = |spec: &Path| -> Vec<String> {
            vec![spec.display().to_string(), "--wait".into(), "0".into(), "--out".into(), out.display().to_string()]
        };
        cli(&args(&dev)).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), format!("{} squashfs\n", dev.display()));
        let missing = tmp.path().join("missing");
        let err = cli(&args(&missing)).unwrap_err().to_string();
        assert_eq!(err, format!("{} did not appear (waited 0 s)", missing.display()));
        std::fs::write(&dev, b"not an image").unwrap();
        assert_eq!(cli(&args(&dev)).unwrap_err().to_string(), format!("{}: neither erofs nor squashfs", dev.display()));
    }
}
