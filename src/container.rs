//! Phase "run": one job's container, created and waited for with libcontainer.
//!
//! Every container is privileged the way `podman run --privileged
//! --network=host` is: all capabilities, no seccomp or LSM profile, the host's
//! /dev and /sys, the host network (no network namespace) and `/iguana`
//! bind-mounted as a shared mount. `spec` is pure and unit-tested; `run`
//! drives libcontainer. libcontainer forks with raw clone3, so `run` must be
//! called from a process with no other threads: PID 1 never starts any.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::{json, Value};

/// What the image says to run, as `iguana pull --config-out` writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

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
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
            Exit::TimedOut(s) => write!(f, "timed out after {s}s"),
        }
    }
}

/// Every capability the kernel knows of (up to Linux 6.x), all granted.
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment: image env, then the job's, then `iguana=true`; a later
/// `KEY=` replaces an earlier one in place.
pub fn merge_env(layers: &[&[String]]) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let mut set = |entry: &str| {
        let key = entry.split_once('=').map_or(entry, |(k, _)| k);
        match env.iter_mut().find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key) {
            Some(existing) => *existing = entry.to_string(),
            None => env.push(entry.to_string()),
        }
    };
    set(DEFAULT_PATH);
    for layer in layers {
        for entry in layer.iter() {
            set(entry);
        }
    }
    set("iguana=true");
    env
}

/// Parses the image's `User`: numeric `uid[:gid]`, or root by name.
fn user(job: &Job) -> Result<(u32, u32), Error> {
    let raw = job.image.user.as_deref().unwrap_or("").trim();
    let err = || Error::User { job: job.name.clone(), user: raw.to_string() };
    if raw.is_empty() || raw == "root" || raw == "root:root" {
        return Ok((0, 0));
    }
    let (u, g) = raw.split_once(':').unwrap_or((raw, ""));
    let uid = u.parse::<u32>().map_err(|_| err())?;
    let gid = if g.is_empty() { uid } else { g.parse::<u32>().map_err(|_| err())? };
    Ok((uid, gid))
}

/// The OCI runtime spec of a job's container.
pub fn spec(job: &Job) -> Result<Value, Error> {
    let args: Vec<String> = job.image.entrypoint.iter().chain(&job.image.cmd).cloned().collect();
    if args.is_empty() {
        return Err(Error::NoCommand { job: job.name.clone() });
    }
    let (uid, gid) = user(job)?;
    let cwd = job.image.working_dir.clone().filter(|d| d.starts_with('/')).unwrap_or_else(|| "/".into());
    let env = merge_env(&[&job.image.env, &job.env]);
    let mut s = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": uid, "gid": gid },
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": CAPABILITIES, "effective": CAPABILITIES, "permitted": CAPABILITIES,
                "inheritable": CAPABILITIES, "ambient": CAPABILITIES,
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1048576u64, "soft": 1048576u64 }],
            "noNewPrivileges": false,
        },
        "root": { "path": job.rootfs, "readonly": false },
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"] },
            // libcontainer populates a tmpfs /dev; `HostDev` then mounts the
            // host's devtmpfs over it just before exec (see there).
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "rw"] },
            { "destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755"] },
            { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"] },
            { "destination": "/iguana", "type": "bind", "source": "/iguana", "options": ["rbind", "rw", "rshared"] },
            { "destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf", "options": ["bind", "ro"] },
            { "destination": "/etc/hosts", "type": "bind", "source": "/etc/hosts", "options": ["bind", "ro"] },
        ],
        "linux": {
            // No network (host network) and no UTS namespace (host name).
            "namespaces": [{ "type": "pid" }, { "type": "mount" }, { "type": "ipc" }],
            "cgroupsPath": format!("/iguana/{}", job.name),
            "resources": { "devices": [{ "allow": true, "access": "rwm" }] },
            "rootfsPropagation": "slave",
        },
    });
    if let Some(mounts) = s["mounts"].as_array_mut() {
        for bind in &job.mounts {
            let mode = if bind.read_only { "ro" } else { "rw" };
            mounts.push(json!({ "destination": bind.target, "type": "bind", "source": bind.source, "options": ["rbind", mode] }));
        }
    }
    Ok(s)
}

/// Runs the container's process with the host's devices.
///
/// A privileged container must see every device, including partitions an
/// installer creates after it started, so its /dev is the host's devtmpfs,
/// not a snapshot. libcontainer cannot be given that directly: it always
/// creates its default nodes and symlinks in the container's /dev and fails
/// when they exist, and a bind of the host's /dev would also let it change
/// the host's. So the spec gives it a throwaway tmpfs, and this executor,
/// which runs inside the container right before exec, mounts devtmpfs (one
/// instance, shared with the host) over it, with a private devpts and shm.
#[derive(Clone)]
struct HostDev;

impl libcontainer::workload::Executor for HostDev {
    fn exec(&self, spec: &oci_spec::runtime::Spec) -> Result<(), libcontainer::workload::ExecutorError> {
        use nix::mount::{mount, MsFlags};
        let steps: [(&str, &str, &str, MsFlags, &str); 3] = [
            ("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, "mode=0755"),
            ("devpts", "/dev/pts", "devpts", MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"),
            ("shm", "/dev/shm", "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, "mode=1777"),
        ];
        for (source, target, fstype, flags, data) in steps {
            let _ = std::fs::create_dir_all(target);
            if let Err(e) = mount(Some(source), target, Some(fstype), flags, Some(data)) {
                // Not fatal: the container still has libcontainer's /dev.
                eprintln!("iguana: mount {fstype} on {target} in the container: {e}");
                if target == "/dev" {
                    break;
                }
            }
        }
        for (target, link) in [("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"), ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"), ("pts/ptmx", "/dev/ptmx")] {
            if std::fs::symlink_metadata(link).is_err() {
                let _ = std::os::unix::fs::symlink(target, link);
            }
        }
        libcontainer::workload::default::DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &oci_spec::runtime::Spec) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        libcontainer::workload::default::DefaultExecutor {}.validate(spec)
    }
}

/// Files that bind mounts land on must exist in the rootfs. They are created
/// through `openat2(RESOLVE_IN_ROOT)`, so a hostile image's `/etc` symlink
/// cannot make us create anything outside its rootfs.
fn prepare_rootfs(job: &Job) -> Result<(), Error> {
    use rustix::fs::{mkdirat, openat2, Mode, OFlags, ResolveFlags};
    let rootfs_err = |path: &'static str| {
        let job = job.name.clone();
        move |e: rustix::io::Errno| Error::Rootfs { job, path, source: e.into() }
    };
    let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let root = openat2(rustix::fs::CWD, &job.rootfs, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty(), ResolveFlags::empty())
        .map_err(rootfs_err("/"))?;
    for dir in ["etc", "iguana", "proc", "sys", "dev", "run", "tmp"] {
        match mkdirat(&root, dir, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(rootfs_err("/etc")(e)),
        }
    }
    for file in ["etc/resolv.conf", "etc/hosts"] {
        let flags = OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        match openat2(&root, file, flags, Mode::from_raw_mode(0o644), how) {
            // A symlink there (common: resolv.conf -> ../run/...) is replaced
            // by the bind mount anyway; it only has to resolve somewhere.
            Ok(_) | Err(rustix::io::Errno::LOOP) => {}
            Err(e) => return Err(rootfs_err("/etc/resolv.conf")(e)),
        }
    }
    Ok(())
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

/// A started container whose output is being copied to the console.
pub struct Running {
    pub name: String,
    container: libcontainer::container::Container,
    pid: Option<Pid>,
    output: std::fs::File,
    pending: Vec<u8>,
    log: Option<std::fs::File>,
    exit: Option<Exit>,
    /// After the exit: how long to keep reading what is left in the pipe.
    drain_until: Option<Instant>,
}

/// Creates and starts a container; its output goes to a pipe that
/// `Supervisor` copies to the console as `[name] line` and to its log.
pub fn start(job: &Job, dirs: &Dirs<'_>, stdin: Stdin) -> Result<Running, Error> {
    let name = job.name.clone();
    let spec_json = spec(job)?;
    prepare_rootfs(job)?;
    let bundle = dirs.bundles.join(&name);
    let bundle_err = |path: &Path| {
        let (job, path) = (name.clone(), path.to_path_buf());
        move |source| Error::Bundle { job, path, source }
    };
    std::fs::create_dir_all(&bundle)
        .and_then(|()| std::fs::write(bundle.join("config.json"), spec_json.to_string()))
        .map_err(bundle_err(&bundle))?;
    std::fs::create_dir_all(dirs.state).map_err(bundle_err(dirs.state))?;
    std::fs::create_dir_all(dirs.logs).map_err(bundle_err(dirs.logs))?;

    let pipe_err = |source: std::io::Error| Error::Pipe { job: name.clone(), source };
    let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| pipe_err(e.into()))?;
    let writer2 = writer.try_clone().map_err(pipe_err)?;
    let stdin: OwnedFd = match stdin {
        Stdin::Console => std::fs::OpenOptions::new().read(true).open("/dev/console"),
        Stdin::Null => std::fs::File::open("/dev/null"),
    }
    .or_else(|_| std::fs::File::open("/dev/null"))
    .map_err(pipe_err)?
    .into();

    // A container of the same name left from an earlier run is removed first.
    let _ = std::fs::remove_dir_all(dirs.state.join(format!("iguana-{name}")));
    let mut container = ContainerBuilder::new(format!("iguana-{name}"), SyscallType::Linux)
        .with_root_path(dirs.state)
        .map(|b| b.with_stdin(stdin).with_stdout(writer).with_stderr(writer2).with_executor(HostDev))
        .and_then(|b| b.as_init(&bundle).with_systemd(false).with_detach(true).with_no_pivot(true).build())
        .map_err(|source| Error::Create { job: name.clone(), source })?;
    // libcontainer has its own nix version: carry the pid across as a number.
    let pid = container.pid().map(|p| Pid::from_raw(p.as_raw()));
    if let Err(source) = container.start() {
        let _ = container.delete(true);
        return Err(Error::Start { job: name, source });
    }
    tracing::info!("phase container-started job={name} pid={}", pid.map_or(0, Pid::as_raw));
    let log = std::fs::File::create(dirs.logs.join(format!("{name}.log"))).ok();
    Ok(Running {
        name,
        container,
        pid,
        output: std::fs::File::from(reader),
        pending: Vec::new(),
        log,
        exit: if pid.is_none() { Some(Exit::Code(0)) } else { None },
        drain_until: None,
    })
}

/// Copies the output of every running container to the console and reaps
/// children (this is PID 1: every orphan is ours). Single-threaded: one
/// poll loop over all the pipes.
#[derive(Default)]
pub struct Supervisor {
    running: Vec<Running>,
}

impl Supervisor {
    pub fn add(&mut self, running: Running) {
        self.running.push(running);
    }

    /// Waits for the named container to exit; after `timeout` it is killed
    /// and `Exit::TimedOut` returned.
    pub fn wait(&mut self, name: &str, timeout: Option<Duration>) -> Exit {
        if let Some(exit) = self.wait_until(name, timeout.map(|t| Instant::now() + t)) {
            return exit;
        }
        let secs = timeout.map_or(0, |t| t.as_secs());
        tracing::error!("job {name}: timed out after {secs}s, killing it");
        self.kill(name);
        Exit::TimedOut(secs)
    }

    /// Stops a container: SIGTERM, then SIGKILL after `grace`; then removes it.
    /// (A container's init ignores SIGTERM unless it handles it, as PID 1
    /// of its namespace; SIGKILL always works.)
    pub fn stop(&mut self, name: &str, grace: Duration) -> Exit {
        self.signal(name, nix::sys::signal::Signal::SIGTERM);
        let exit = match self.wait_until(name, Some(Instant::now() + grace)) {
            Some(exit) => exit,
            None => {
                tracing::info!("{name} did not stop within {}s of SIGTERM: SIGKILL", grace.as_secs());
                self.kill(name)
            }
        };
        self.remove(name);
        exit
    }

    fn kill(&mut self, name: &str) -> Exit {
        self.signal(name, nix::sys::signal::Signal::SIGKILL);
        self.wait_until(name, Some(Instant::now() + Duration::from_secs(10)))
            .unwrap_or(Exit::Signal(nix::sys::signal::Signal::SIGKILL as i32))
    }

    /// Pumps output until the named container has exited and been drained,
    /// or the deadline passes.
    fn wait_until(&mut self, name: &str, deadline: Option<Instant>) -> Option<Exit> {
        loop {
            if let Some(exit) = self.finished(name) {
                return Some(exit);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            self.pump(Duration::from_millis(100));
        }
    }

    /// Deletes a finished container's state and cgroup.
    pub fn remove(&mut self, name: &str) {
        if let Some(i) = self.running.iter().position(|r| r.name == name) {
            let mut r = self.running.remove(i);
            flush(&mut r);
            let _ = r.container.delete(true);
        }
    }

    fn signal(&mut self, name: &str, signal: nix::sys::signal::Signal) {
        if let Some(pid) = self.running.iter().find(|r| r.name == name && r.exit.is_none()).and_then(|r| r.pid) {
            let _ = nix::sys::signal::kill(pid, signal);
        }
    }

    /// The exit of a container whose output has been drained.
    fn finished(&self, name: &str) -> Option<Exit> {
        let r = self.running.iter().find(|r| r.name == name)?;
        match (r.exit, r.drain_until) {
            (Some(exit), Some(until)) if Instant::now() >= until => Some(exit),
            (Some(exit), None) => Some(exit),
            _ => None,
        }
    }

    /// One round: reap, then read whatever the pipes have, for at most `limit`.
    fn pump(&mut self, limit: Duration) {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        self.reap();
        let now = Instant::now();
        let open: Vec<usize> = (0..self.running.len())
            .filter(|&i| self.running[i].drain_until.is_none_or(|t| now < t))
            .collect();
        if open.is_empty() {
            std::thread::sleep(limit.min(Duration::from_millis(50)));
            return;
        }
        let ready: Vec<usize> = {
            let fds: Vec<_> = open.iter().map(|&i| self.running[i].output.as_fd()).collect();
            let mut polls: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(fd, PollFlags::IN)).collect();
            let timeout = Timespec { tv_sec: 0, tv_nsec: i64::try_from(limit.as_nanos()).unwrap_or(100_000_000) };
            if poll(&mut polls, Some(&timeout)).unwrap_or(0) == 0 {
                return;
            }
            polls.iter().zip(&open).filter(|(p, _)| !p.revents().is_empty()).map(|(_, &i)| i).collect()
        };
        let mut buf = [0u8; 8192];
        for i in ready {
            let r = &mut self.running[i];
            match r.output.read(&mut buf) {
                Ok(0) => {
                    // Every writer closed: nothing more will come.
                    if r.exit.is_some() {
                        r.drain_until = Some(Instant::now());
                    } else {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                Ok(n) => {
                    r.pending.extend_from_slice(&buf[..n]);
                    emit_lines(&r.name, &mut r.pending, r.log.as_mut(), false);
                }
                Err(_) => {}
            }
        }
    }

    /// Reaps every exited child without blocking, recording container exits.
    fn reap(&mut self) {
        loop {
            let (pid, exit) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, code)) => (p, Exit::Code(code)),
                Ok(WaitStatus::Signaled(p, sig, _)) => (p, Exit::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            };
            if let Some(r) = self.running.iter_mut().find(|r| r.pid == Some(pid)) {
                r.exit = Some(exit);
                // A daemon it left behind may hold the pipe open forever.
                r.drain_until = Some(Instant::now() + Duration::from_millis(300));
            }
        }
        // A container whose init vanished (reaped elsewhere) counts as ended.
        for r in self.running.iter_mut().filter(|r| r.exit.is_none()) {
            if let Some(pid) = r.pid {
                if nix::sys::signal::kill(pid, None) == Err(nix::errno::Errno::ESRCH) {
                    r.exit = Some(Exit::Signal(0));
                    r.drain_until = Some(Instant::now());
                }
            }
        }
    }
}

fn flush(r: &mut Running) {
    emit_lines(&r.name, &mut r.pending, r.log.as_mut(), true);
}

/// Prints every complete line in `pending` as `[job] line`; with `flush`,
/// the incomplete tail too.
fn emit_lines(job: &str, pending: &mut Vec<u8>, mut log: Option<&mut std::fs::File>, flush: bool) {
    use std::io::Write;
    while let Some(end) = pending.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = pending.drain(..=end).collect();
        let text = String::from_utf8_lossy(&line[..end]);
        crate::logging::console_line(&format!("[{job}] {}", text.trim_end_matches('\r')));
        if let Some(log) = log.as_deref_mut() {
            let _ = log.write_all(&line);
        }
    }
    if flush && !pending.is_empty() {
        let text = String::from_utf8_lossy(pending).into_owned();
        crate::logging::console_line(&format!("[{job}] {text}"));
        if let Some(log) = log.as_deref_mut() {
            let _ = log.write_all(pending);
        }
        pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(image: ImageConfig) -> Job {
        Job {
            name: "a".into(),
            image,
            env: vec!["FROM_JOB=1".into()],
            rootfs: "/run/iguana/a/rootfs".into(),
            mounts: vec![Bind { source: "/run/iguana/volumes/data".into(), target: "/data".into(), read_only: true }],
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn env_merges_in_order_and_sets_iguana() {
        let cases: &[(&[&str], &[&str], &[&str])] = &[
            (&[], &[], &[DEFAULT_PATH, "iguana=true"]),
            (&["PATH=/x", "A=1"], &["A=2", "B"], &["PATH=/x", "A=2", "B", "iguana=true"]),
            (&["iguana=false"], &[], &[DEFAULT_PATH, "iguana=true"]),
        ];
        for (image, job, want) in cases {
            assert_eq!(merge_env(&[&strings(image), &strings(job)]), strings(want));
        }
    }

    #[test]
    fn spec_is_privileged_with_host_network() {
        let image = ImageConfig { entrypoint: strings(&["/bin/sh"]), cmd: strings(&["/run.sh"]), ..Default::default() };
        let s = spec(&job(image)).unwrap();
        assert_eq!(s["process"]["args"], json!(["/bin/sh", "/run.sh"]));
        assert_eq!(s["process"]["cwd"], "/");
        assert_eq!(s["process"]["capabilities"]["bounding"].as_array().unwrap().len(), CAPABILITIES.len());
        let namespaces: Vec<&str> =
            s["linux"]["namespaces"].as_array().unwrap().iter().map(|n| n["type"].as_str().unwrap()).collect();
        assert!(!namespaces.contains(&"network"), "host network: {namespaces:?}");
        let iguana = s["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/iguana").unwrap();
        assert_eq!(iguana["options"], json!(["rbind", "rw", "rshared"]));
        assert!(s["process"]["env"].as_array().unwrap().contains(&json!("iguana=true")));
        let data = s["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/data").unwrap();
        assert_eq!(data["source"], "/run/iguana/volumes/data");
        assert_eq!(data["options"], json!(["rbind", "ro"]));
        // libcontainer accepts it.
        let parsed: oci_spec::runtime::Spec = serde_json::from_value(s).unwrap();
        assert_eq!(parsed.root().as_ref().unwrap().path(), Path::new("/run/iguana/a/rootfs"));
    }

    #[test]
    fn spec_errors_name_the_job() {
        let cases: &[(ImageConfig, &str)] = &[
            (ImageConfig::default(), "job a: the image has no command (no Entrypoint or Cmd)"),
            (
                ImageConfig { cmd: strings(&["x"]), user: Some("nobody".into()), ..Default::default() },
                "job a: user \"nobody\" is not numeric uid[:gid]",
            ),
        ];
        for (image, message) in cases {
            assert_eq!(spec(&job(image.clone())).unwrap_err().to_string(), *message);
        }
    }

    #[test]
    fn users_parse() {
        let cases: &[(Option<&str>, (u32, u32))] =
            &[(None, (0, 0)), (Some("root"), (0, 0)), (Some("1000"), (1000, 1000)), (Some("1:2"), (1, 2))];
        for (raw, want) in cases {
            let j = job(ImageConfig { user: raw.map(str::to_string), ..Default::default() });
            assert_eq!(user(&j).unwrap(), *want);
        }
    }
}
