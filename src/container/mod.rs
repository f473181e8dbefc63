//! Phase "run": one job's container, created and waited for with libcontainer.
//!
//! Every container is privileged the way `podman run --privileged
//! --network=host` is: all capabilities, no seccomp or LSM profile, the host's
//! /dev and /sys, the host network (no network namespace) and `/iguana`
//! bind-mounted as a shared mount. Three concerns, one file each: `spec`
//! (the OCI runtime spec, pure and unit-tested), `start` (libcontainer
//! create/start and what runs in the container before exec) and
//! `supervisor` (the one poll loop over every container's output, and
//! reaping). libcontainer forks with raw clone3, so `start` must be called
//! from a process with no other threads: PID 1 never starts any.

mod output;
mod spec;
mod start;
mod supervisor;

use std::path::{Path, PathBuf};

pub use spec::{merge_env, spec};
pub use start::start;
pub use supervisor::{Running, Supervisor, Timeout};

/// What the image says to run, as `iguana pull --config-out` writes it.
pub use crate::image::ImageConfig;

/// One container to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Job name: the container id and the prefix of its output lines.
    pub name: String,
    pub image: ImageConfig,
    /// Extra environment, applied over the image's (`KEY=value`).
    pub env: Vec<String>,
    pub rootfs: PathBuf,
    /// Volumes: host directories (or files) bind-mounted into the container.
    pub mounts: Vec<Bind>,
}

/// A bind mount from the host into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("job {job}: the image has no command (no Entrypoint or Cmd)")]
    NoCommand { job: String },
    #[error("job {job}: user {user:?} is not numeric uid[:gid]")]
    User { job: String, user: String },
    #[error("job {job}: write bundle {path}")]
    Bundle { job: String, path: PathBuf, #[source] source: std::io::Error },
    #[error("job {job}: prepare {path} in the rootfs")]
    Rootfs { job: String, path: &'static str, #[source] source: std::io::Error },
    #[error("job {job}: create container")]
    Create { job: String, #[source] source: libcontainer::error::LibcontainerError },
    #[error("job {job}: start container")]
    Start { job: String, #[source] source: libcontainer::error::LibcontainerError },
    #[error("job {job}: libcontainer did not report the container's pid")]
    NoPid { job: String },
    #[error("job {job}: output pipe")]
    Pipe { job: String, #[source] source: std::io::Error },
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Killed by iguana when its timeout (seconds) expired.
    TimedOut(u64),
    /// Its init was gone, and its exit status with it (reaped by someone
    /// else): how it ended is unknown, so it did not succeed.
    Lost,
}

impl Exit {
    /// Only an exit status 0 is a success; every other way to end, an
    /// unknown one included, is a failure.
    pub fn success(self) -> bool {
        match self {
            Exit::Code(code) => code == 0,
            Exit::Signal(_) | Exit::TimedOut(_) | Exit::Lost => false,
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
            Exit::TimedOut(s) => write!(f, "timed out after {s}s"),
            Exit::Lost => write!(f, "its exit status was lost"),
        }
    }
}

/// Where containers keep their state, bundles and logs.
pub struct Dirs<'a> {
    pub state: &'a Path,
    pub bundles: &'a Path,
    pub logs: &'a Path,
}

/// What a container reads as standard input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdin {
    /// The console, so an installer can ask questions (upstream's
    /// `--interactive`).
    Console,
    Null,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_status_zero_is_success() {
        let cases = [
            (Exit::Code(0), true, "exit status 0"),
            (Exit::Code(1), false, "exit status 1"),
            (Exit::Signal(0), false, "killed by signal 0"),
            (Exit::Signal(9), false, "killed by signal 9"),
            (Exit::TimedOut(5), false, "timed out after 5s"),
            (Exit::Lost, false, "its exit status was lost"),
        ];
        for (exit, success, shown) in cases {
            assert_eq!(exit.success(), success, "{exit:?}");
            assert_eq!(exit.to_string(), shown);
        }
    }
}
