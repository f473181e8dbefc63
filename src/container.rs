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
    #[error("job {job}: wait for container pid {pid}")]
    Wait { job: String, pid: i32, #[source] source: nix::errno::Errno },
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
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
    Ok(json!({
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
            { "destination": "/dev", "type": "bind", "source": "/dev", "options": ["rbind", "rw"] },
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
    }))
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

/// Creates, starts and waits for a job's container, copying its output to
/// the console line by line as `[name] line`, and to `log`.
pub fn run(job: &Job, state_dir: &Path, bundle: &Path, log: &Path) -> Result<Exit, Error> {
    let name = job.name.clone();
    let spec_json = spec(job)?;
    prepare_rootfs(job)?;
    std::fs::create_dir_all(bundle)
        .and_then(|()| std::fs::write(bundle.join("config.json"), spec_json.to_string()))
        .map_err(|source| Error::Bundle { job: name.clone(), path: bundle.to_path_buf(), source })?;
    std::fs::create_dir_all(state_dir)
        .map_err(|source| Error::Bundle { job: name.clone(), path: state_dir.to_path_buf(), source })?;

    let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Error::Pipe { job: name.clone(), source: e.into() })?;
    let writer2 = writer.try_clone().map_err(|source| Error::Pipe { job: name.clone(), source })?;
    let stdin: OwnedFd = std::fs::File::open("/dev/null")
        .map_err(|source| Error::Pipe { job: name.clone(), source })?
        .into();

    let mut container = ContainerBuilder::new(format!("iguana-{name}"), SyscallType::Linux)
        .with_root_path(state_dir)
        .and_then(|b| Ok(b.with_stdin(stdin).with_stdout(writer).with_stderr(writer2)))
        .and_then(|b| {
            b.as_init(bundle).with_systemd(false).with_detach(true).with_no_pivot(true).build()
        })
        .map_err(|source| Error::Create { job: name.clone(), source })?;
    // libcontainer has its own nix version: carry the pid across as a number.
    let pid = container.pid().map(|p| Pid::from_raw(p.as_raw()));
    if let Err(source) = container.start() {
        let _ = container.delete(true);
        return Err(Error::Start { job: name, source });
    }
    tracing::info!("phase container-started job={name} pid={}", pid.map_or(0, Pid::as_raw));
    let exit = match pid {
        Some(pid) => pump_until_exit(&name, pid, reader, log),
        None => Ok(Exit::Code(0)),
    };
    let _ = container.delete(true);
    exit
}

/// Copies the container's output to the console until its init exits, then
/// drains what is left for a moment (a daemon it left behind may keep the
/// pipe open forever). Reaps any other orphan along the way: this is PID 1.
fn pump_until_exit(job: &str, pid: Pid, reader: OwnedFd, log: &Path) -> Result<Exit, Error> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut file = std::fs::File::from(reader);
    let mut log = std::fs::File::create(log).ok();
    let mut pending = Vec::new();
    let mut exit = None;
    let mut drain_until = None;
    let mut buf = [0u8; 8192];
    loop {
        if exit.is_none() {
            exit = reap(job, pid)?;
            if exit.is_some() {
                drain_until = Some(Instant::now() + Duration::from_millis(500));
            }
        }
        if drain_until.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        let timeout = Timespec { tv_sec: 0, tv_nsec: 100_000_000 };
        let fd = file.as_fd();
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        let ready = poll(&mut fds, Some(&timeout)).unwrap_or(0);
        if ready == 0 {
            continue;
        }
        match file.read(&mut buf) {
            Ok(0) if exit.is_some() => break,
            Ok(0) => std::thread::sleep(Duration::from_millis(50)),
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                emit_lines(job, &mut pending, log.as_mut(), false);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    emit_lines(job, &mut pending, log.as_mut(), true);
    Ok(exit.unwrap_or(Exit::Signal(0)))
}

/// Waits without blocking for any child; returns the container's exit once
/// its init is reaped.
fn reap(job: &str, pid: Pid) -> Result<Option<Exit>, Error> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => return Ok(Some(Exit::Code(code))),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => return Ok(Some(Exit::Signal(sig as i32))),
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::ECHILD) => return Ok(Some(Exit::Signal(0))),
            Err(source) => return Err(Error::Wait { job: job.to_string(), pid: pid.as_raw(), source }),
        }
    }
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
        Job { name: "a".into(), image, env: vec!["FROM_JOB=1".into()], rootfs: "/run/iguana/a/rootfs".into() }
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
