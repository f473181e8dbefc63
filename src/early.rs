//! Phase "early": the filesystems and device nodes everything else assumes.
//!
//! Boot setup is data: `STEPS` lists each directory, mount and symlink as a
//! value that knows how to create and describe itself, so every step is
//! logged the same way and every error names the step. Runs first in PID 1,
//! before logging exists, so failures are collected and logged afterwards.
//!
//! RAM is the disk here, and a tmpfs left at the kernel's default (half of
//! RAM each) lets /run, /iguana and /tmp together promise more memory than
//! there is: PID 1 would then meet the OOM killer's choices instead of a
//! "no space" error. Each gets an explicit size ([`TMPFS_SIZES`]), which
//! `rd.iguana.tmpfs_size=` changes once the command line is parsed
//! ([`resize_tmpfs`]).

use std::fmt;
use std::os::unix::fs::DirBuilderExt;

use nix::mount::{mount, MsFlags};

/// One thing to create at boot.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    Dir { path: &'static str, mode: u32 },
    Mount { source: &'static str, target: &'static str, fstype: &'static str, flags: MsFlags, data: &'static str },
    /// Make an existing mount point a shared peer group, so mounts made below
    /// it by one container are seen by the others.
    Shared { target: &'static str },
    Symlink { target: &'static str, link: &'static str },
}

const NOSUID_NODEV_NOEXEC: MsFlags =
    MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV).union(MsFlags::MS_NOEXEC);
const NOSUID_NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);

/// The sized tmpfs mounts: the name `rd.iguana.tmpfs_size=` uses, the
/// mount point, and the default size. /run holds the images (blobs and
/// unpacked layers), so it gets most; together they leave a fifth of RAM
/// to PID 1 and the containers.
pub const TMPFS_SIZES: &[(&str, &str, &str)] = &[("run", "/run", "50%"), ("iguana", "/iguana", "20%"), ("tmp", "/tmp", "10%")];

/// What PID 1 sets up before anything else, in order.
pub const STEPS: &[Step] = &[
    Step::Dir { path: "/proc", mode: 0o555 },
    Step::Mount { source: "proc", target: "/proc", fstype: "proc", flags: NOSUID_NODEV_NOEXEC, data: "" },
    Step::Dir { path: "/sys", mode: 0o555 },
    Step::Mount { source: "sysfs", target: "/sys", fstype: "sysfs", flags: NOSUID_NODEV_NOEXEC, data: "" },
    Step::Dir { path: "/dev", mode: 0o755 },
    Step::Mount { source: "devtmpfs", target: "/dev", fstype: "devtmpfs", flags: MsFlags::MS_NOSUID, data: "mode=0755" },
    Step::Dir { path: "/dev/pts", mode: 0o755 },
    Step::Mount { source: "devpts", target: "/dev/pts", fstype: "devpts", flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC), data: "gid=5,mode=620,ptmxmode=666" },
    Step::Dir { path: "/dev/shm", mode: 0o1777 },
    Step::Mount { source: "shm", target: "/dev/shm", fstype: "tmpfs", flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV), data: "mode=1777" },
    Step::Symlink { target: "/proc/self/fd", link: "/dev/fd" },
    Step::Symlink { target: "/proc/self/fd/0", link: "/dev/stdin" },
    Step::Symlink { target: "/proc/self/fd/1", link: "/dev/stdout" },
    Step::Symlink { target: "/proc/self/fd/2", link: "/dev/stderr" },
    Step::Dir { path: "/run", mode: 0o755 },
    Step::Mount { source: "run", target: "/run", fstype: "tmpfs", flags: NOSUID_NODEV, data: "mode=0755,size=50%" },
    Step::Dir { path: "/sys/fs/cgroup", mode: 0o555 },
    Step::Mount { source: "cgroup2", target: "/sys/fs/cgroup", fstype: "cgroup2", flags: NOSUID_NODEV_NOEXEC, data: "nsdelegate" },
    // What the kernel kept of the previous boot (ramoops, efi-pstore).
    Step::Dir { path: "/sys/fs/pstore", mode: 0o750 },
    Step::Mount { source: "pstore", target: "/sys/fs/pstore", fstype: "pstore", flags: NOSUID_NODEV_NOEXEC, data: "" },
    Step::Dir { path: "/tmp", mode: 0o1777 },
    Step::Mount { source: "tmp", target: "/tmp", fstype: "tmpfs", flags: NOSUID_NODEV, data: "mode=1777,size=10%" },
    Step::Dir { path: "/iguana", mode: 0o755 },
    Step::Mount { source: "iguana", target: "/iguana", fstype: "tmpfs", flags: NOSUID_NODEV, data: "mode=0755,size=20%" },
    Step::Shared { target: "/iguana" },
    Step::Dir { path: "/etc", mode: 0o755 },
    Step::Dir { path: "/sysroot", mode: 0o755 },
];

#[derive(Debug, thiserror::Error)]
#[error("early setup: {step}")]
pub struct Error {
    pub step: String,
    #[source]
    pub source: std::io::Error,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Dir { path, mode } => write!(f, "mkdir {path} (mode {mode:o})"),
            Step::Mount { source, target, fstype, data, .. } => {
                write!(f, "mount -t {fstype} {source} {target}")?;
                if !data.is_empty() {
                    write!(f, " -o {data}")?;
                }
                Ok(())
            }
            Step::Shared { target } => write!(f, "mount --make-shared {target}"),
            Step::Symlink { target, link } => write!(f, "ln -s {target} {link}"),
        }
    }
}

impl Step {
    /// Creates the thing; an already existing one is fine (PID 1 may have
    /// been handed a root where some of this exists).
    pub fn apply(&self) -> std::io::Result<()> {
        match *self {
            Step::Dir { path, mode } => match std::fs::DirBuilder::new().mode(mode).create(path) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                other => other,
            },
            Step::Mount { source, target, fstype, flags, data } => {
                let data = if data.is_empty() { None } else { Some(data) };
                match mount(Some(source), target, Some(fstype), flags, data) {
                    Err(nix::errno::Errno::EBUSY) => Ok(()),
                    other => other.map_err(std::io::Error::from),
                }
            }
            Step::Shared { target } => {
                let flags = MsFlags::MS_SHARED;
                mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(std::io::Error::from)
            }
            Step::Symlink { target, link } => match std::os::unix::fs::symlink(target, link) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                other => other,
            },
        }
    }
}

/// Applies every step; a failing step does not stop the others (a missing
/// cgroup2 should not cost us the console), its error is returned for logging.
pub fn setup() -> Vec<Error> {
    STEPS
        .iter()
        .filter_map(|step| step.apply().err().map(|source| Error { step: step.to_string(), source }))
        .collect()
}

/// Whether `item` is `MOUNT=SIZE` for `rd.iguana.tmpfs_size=`: MOUNT one of
/// [`TMPFS_SIZES`], SIZE what tmpfs takes (`N`, `Nk`, `Nm`, `Ng` bytes or
/// `N%` of RAM, 1 to 100), never 0 (which tmpfs reads as "unlimited").
pub fn valid_tmpfs_size(item: &str) -> bool {
    let Some((mount, size)) = item.split_once('=') else {
        return false;
    };
    if !TMPFS_SIZES.iter().any(|(name, _, _)| *name == mount) {
        return false;
    }
    let (digits, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit()).unwrap_or(size.len()));
    let Ok(n) = digits.parse::<u64>() else {
        return false;
    };
    match unit {
        "%" => (1..=100).contains(&n),
        "" | "k" | "K" | "m" | "M" | "g" | "G" => n > 0,
        _ => false,
    }
}

/// Remounts each tmpfs named in `sizes` (`(MOUNT, SIZE)`, checked by
/// [`valid_tmpfs_size`]) with that size. Failures are returned for logging;
/// the mount keeps its default size then.
pub fn resize_tmpfs(sizes: &[(String, String)]) -> Vec<Error> {
    let mut errors = Vec::new();
    for (name, size) in sizes {
        let Some((_, target, _)) = TMPFS_SIZES.iter().find(|(n, _, _)| n == name) else {
            continue;
        };
        match remount_size(target, size) {
            Ok(()) => tracing::info!("tmpfs {target}: size {size}"),
            Err(e) => errors.push(Error { step: format!("mount -o remount,size={size} {target}"), source: e }),
        }
    }
    errors
}

/// Changes the size of the (nosuid, nodev) tmpfs on `target`; what it
/// holds stays.
fn remount_size(target: &str, size: &str) -> std::io::Result<()> {
    let data = format!("size={size}");
    let flags = NOSUID_NODEV.union(MsFlags::MS_REMOUNT);
    mount(None::<&str>, target, None::<&str>, flags, Some(data.as_str())).map_err(std::io::Error::from)
}

/// Points stdin, stdout and stderr at /dev/console, which exists once
/// devtmpfs is mounted even if the initramfs had no /dev/console node.
pub fn attach_console() -> std::io::Result<()> {
    let console = std::fs::OpenOptions::new().read(true).write(true).open("/dev/console")?;
    rustix::stdio::dup2_stdin(&console)?;
    rustix::stdio::dup2_stdout(&console)?;
    rustix::stdio::dup2_stderr(&console)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_describe_themselves() {
        let shown: Vec<String> = STEPS.iter().map(Step::to_string).collect();
        assert!(shown.contains(&"mount -t cgroup2 cgroup2 /sys/fs/cgroup -o nsdelegate".to_string()));
        assert!(shown.contains(&"mount --make-shared /iguana".to_string()));
        assert!(shown.contains(&"mkdir /dev/shm (mode 1777)".to_string()));
    }

    #[test]
    fn tmpfs_are_sized() {
        let shown: Vec<String> = STEPS.iter().map(Step::to_string).collect();
        for (_, target, size) in TMPFS_SIZES {
            assert!(
                shown.iter().any(|s| s.starts_with("mount -t tmpfs") && s.contains(&format!(" {target} -o ")) && s.ends_with(&format!(",size={size}"))),
                "{target} has no size={size}: {shown:?}"
            );
        }
    }

    #[test]
    fn tmpfs_size_argument() {
        for (item, ok) in [
            ("run=512m", true),
            ("run=60%", true),
            ("tmp=1G", true),
            ("iguana=1048576", true),
            ("iguana=100%", true),
            ("run=0", false),
            ("run=0%", false),
            ("run=101%", false),
            ("run=", false),
            ("run=5t", false),
            ("run=-1", false),
            ("run=1m,x", false),
            ("dev=10%", false),
            ("512m", false),
        ] {
            assert_eq!(valid_tmpfs_size(item), ok, "{item}");
        }
        let parsed = crate::cmdline::parse("rd.iguana.tmpfs_size=run=1g,tmp=5%").unwrap();
        assert_eq!(parsed.tmpfs_size, [("run".to_string(), "1g".to_string()), ("tmp".to_string(), "5%".to_string())]);
        let err = crate::cmdline::parse("rd.iguana.tmpfs_size=run=0").unwrap_err();
        assert!(err.to_string().contains("rd.iguana.tmpfs_size"), "{err}");
    }

    #[test]
    fn remount_changes_the_size_and_keeps_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().to_str().unwrap();
        mount(Some("tmpfs"), target, Some("tmpfs"), NOSUID_NODEV, Some("size=4m")).expect("mount a tmpfs (tests run as root)");
        std::fs::write(dir.path().join("kept"), "yes").unwrap();
        let size = || {
            let st = rustix::fs::statvfs(dir.path()).unwrap();
            st.f_blocks * st.f_frsize
        };
        let before = size();
        let result = remount_size(target, "8m");
        let after = size();
        let kept = std::fs::read_to_string(dir.path().join("kept"));
        nix::mount::umount(target).unwrap();
        result.unwrap();
        assert_eq!((before, after), (4 << 20, 8 << 20));
        assert_eq!(kept.unwrap(), "yes");
    }

    #[test]
    fn every_mount_target_is_created_first() {
        for (i, step) in STEPS.iter().enumerate() {
            if let Step::Mount { target, .. } = step {
                let made = STEPS[..i].iter().any(|s| matches!(s, Step::Dir { path, .. } if path == target));
                assert!(made, "{step} has no mkdir before it");
            }
        }
    }
}
