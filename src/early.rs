//! Phase "early": the filesystems and device nodes everything else assumes.
//!
//! Boot setup is data: `STEPS` lists each directory, mount and symlink as a
//! value that knows how to create and describe itself, so every step is
//! logged the same way and every error names the step. Runs first in PID 1,
//! before logging exists, so failures are collected and logged afterwards.

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
    Step::Mount { source: "run", target: "/run", fstype: "tmpfs", flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV), data: "mode=0755" },
    Step::Dir { path: "/sys/fs/cgroup", mode: 0o555 },
    Step::Mount { source: "cgroup2", target: "/sys/fs/cgroup", fstype: "cgroup2", flags: NOSUID_NODEV_NOEXEC, data: "nsdelegate" },
    Step::Dir { path: "/tmp", mode: 0o1777 },
    Step::Mount { source: "tmp", target: "/tmp", fstype: "tmpfs", flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV), data: "mode=1777" },
    Step::Dir { path: "/iguana", mode: 0o755 },
    Step::Mount { source: "iguana", target: "/iguana", fstype: "tmpfs", flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV), data: "mode=0755" },
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
    fn every_mount_target_is_created_first() {
        for (i, step) in STEPS.iter().enumerate() {
            if let Step::Mount { target, .. } = step {
                let made = STEPS[..i].iter().any(|s| matches!(s, Step::Dir { path, .. } if path == target));
                assert!(made, "{step} has no mkdir before it");
            }
        }
    }
}
