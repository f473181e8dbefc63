//! Starting a container with libcontainer: the bundle, the rootfs's mount
//! points, and `HostDev`, the executor that runs inside the container right
//! before exec.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::unistd::Pid;

use super::spec::{self as oci, Limits};
use super::{Dirs, Error, Job, Running, Stdin};

/// The directory every container shares with PID 1 and with each other.
const SHARED: &str = "/iguana";

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
///
/// It also puts PID 1's /iguana over the container's (see `share_iguana`)
/// and gives the program the signal state a freshly started one expects.
#[derive(Clone)]
struct HostDev {
    /// A clone of PID 1's /iguana tree, from `share_iguana`.
    iguana: Option<Arc<OwnedFd>>,
}

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
        if let Some(tree) = &self.iguana {
            attach_iguana(tree);
        }
        // Ignored signals and the signal mask survive exec, and PID 1
        // ignores SIGPIPE (the Rust runtime does): without this, `yes |
        // head -1` in the container would end `yes` with a write error
        // instead of SIGPIPE. Nothing but the exec comes after it.
        crate::sys::reset_signals();
        libcontainer::workload::default::DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &oci_spec::runtime::Spec) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        libcontainer::workload::default::DefaultExecutor {}.validate(spec)
    }
}

/// A clone of PID 1's /iguana, mounts below it included, to be put over the
/// container's /iguana by `HostDev`.
///
/// libcontainer makes the container's `/` a slave before it binds the
/// spec's mounts, so the spec's bind of /iguana receives PID 1's mounts
/// but never sends any back, whatever its own propagation. A tree cloned
/// with open_tree(2) in PID 1's namespace is a peer of the shared /iguana,
/// and stays one when the container moves it into its own namespace
/// (move_mount(2) takes a detached tree into any namespace): what a
/// container mounts below /iguana then appears in PID 1's /iguana and in
/// the containers that come later, and PID 1 unmounts it before a reboot or
/// kexec. Without it (a kernel before 5.2) the spec's bind is all there is.
fn share_iguana() -> Option<Arc<OwnedFd>> {
    use rustix::mount::{open_tree, OpenTreeFlags};
    let flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC | OpenTreeFlags::AT_RECURSIVE;
    match open_tree(rustix::fs::CWD, SHARED, flags) {
        Ok(tree) => Some(Arc::new(tree)),
        Err(e) => {
            tracing::warn!("open_tree({SHARED}, OPEN_TREE_CLONE): {e}; mounts a container makes below {SHARED} stay its own");
            None
        }
    }
}

/// In the container, after libcontainer's mounts: `tree` over /iguana.
fn attach_iguana(tree: &OwnedFd) {
    use rustix::mount::{move_mount, MoveMountFlags};
    if let Err(e) = move_mount(tree, "", rustix::fs::CWD, SHARED, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH) {
        // Not fatal: the spec's bind of /iguana is still there.
        eprintln!("iguana: move_mount of the shared {SHARED} in the container: {e}; its mounts below {SHARED} stay its own");
    }
}

/// The limits every container gets on this machine (see `Limits`), for
/// the cgroup controllers the kernel has.
fn machine_limits() -> Limits {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let number = |path: &str| read(path).trim().parse::<u64>().ok();
    let controllers = read("/sys/fs/cgroup/cgroup.controllers");
    let has = |name: &str| controllers.split_whitespace().any(|c| c == name);
    let memory = oci::mem_total(&read("/proc/meminfo")).filter(|_| has("memory"));
    let tasks = [number("/proc/sys/kernel/pid_max"), number("/proc/sys/kernel/threads-max")].into_iter().flatten().min();
    Limits::leaving_reserve(memory, tasks.filter(|_| has("pids")))
}

/// The pid of a created container's init: without one it cannot be waited
/// for, so the job fails rather than count as done.
fn init_pid(job: &str, pid: Option<i32>) -> Result<Pid, Error> {
    pid.map(Pid::from_raw).ok_or_else(|| Error::NoPid { job: job.to_string() })
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
        // EXCL: only ever create. Whatever the image has there already (a
        // file, a symlink such as resolv.conf -> ../run/..., a FIFO that
        // would block an open for writing, a device node) is covered by the
        // bind mount and never opened.
        let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        match openat2(&root, file, flags, Mode::from_raw_mode(0o644), how) {
            Ok(_) | Err(rustix::io::Errno::EXIST) | Err(rustix::io::Errno::LOOP) => {}
            Err(e) => return Err(rootfs_err("/etc/resolv.conf")(e)),
        }
    }
    Ok(())
}

/// Creates and starts a container; its output goes to a pipe that
/// `Supervisor` copies to the console as `[name] line` and to its log.
pub fn start(job: &Job, dirs: &Dirs<'_>, stdin: Stdin) -> Result<Running, Error> {
    let name = job.name.clone();
    let limits = machine_limits();
    let spec_json = oci::spec(job, &limits)?;
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
        .map(|b| b.with_stdin(stdin).with_stdout(writer).with_stderr(writer2).with_executor(HostDev { iguana: share_iguana() }))
        .and_then(|b| b.as_init(&bundle).with_systemd(false).with_detach(true).with_no_pivot(true).build())
        .map_err(|source| Error::Create { job: name.clone(), source })?;
    // libcontainer has its own nix version: carry the pid across as a number.
    let pid = match init_pid(&name, container.pid().map(|p| p.as_raw())) {
        Ok(pid) => pid,
        Err(e) => {
            let _ = container.delete(true);
            return Err(e);
        }
    };
    if let Err(source) = container.start() {
        let _ = container.delete(true);
        return Err(Error::Start { job: name, source });
    }
    let limit = |v: Option<u64>| v.map_or("max".to_string(), |v| v.to_string());
    tracing::info!(
        "phase container-started job={name} pid={pid} memory.max={} pids.max={}",
        limit(limits.memory),
        limit(limits.pids)
    );
    let log = dirs.logs.join(format!("{name}.log"));
    Ok(Running::new(name, container, pid, std::fs::File::from(reader), &log))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_without_pid_is_an_error_naming_the_job() {
        assert_eq!(init_pid("a", Some(42)).unwrap(), Pid::from_raw(42));
        let err = init_pid("installer", None).unwrap_err();
        assert_eq!(err.to_string(), "job installer: libcontainer did not report the container's pid");
    }

    /// An image's /etc/hosts that is a FIFO (opening it for writing would
    /// wait for a reader forever) or a device node (opening it could arm a
    /// watchdog) is left alone: the bind mount covers it.
    #[test]
    fn bind_targets_that_exist_are_never_opened() {
        use std::os::unix::fs::FileTypeExt;
        use std::time::Duration;
        use crate::image::ImageConfig;
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        nix::unistd::mkfifo(&rootfs.join("etc/hosts"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        std::os::unix::fs::symlink("/nonexistent", rootfs.join("etc/resolv.conf")).unwrap();
        let job = Job { name: "a".into(), image: ImageConfig::default(), env: vec![], rootfs: rootfs.clone(), mounts: vec![] };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(prepare_rootfs(&job).map_err(|e| e.to_string())));
        let result = rx.recv_timeout(Duration::from_secs(5)).expect("prepare_rootfs blocked on the FIFO");
        assert_eq!(result, Ok(()));
        assert!(std::fs::symlink_metadata(rootfs.join("etc/hosts")).unwrap().file_type().is_fifo());
    }
}

