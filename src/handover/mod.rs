//! Phase "handover": what happens to the machine after the workflow.
//!
//! `decide` is pure: from the workflow's result and what the containers left
//! in /iguana it picks one action. `execute` carries it out through the
//! `Machine` seam, so the whole handover (mounts, kexec, switch_root) is
//! tested by asserting the calls it makes on a recording fake; `real` is the
//! machine itself. PID 1 never returns from here.
//!
//! The handover proper, after a successful workflow with no kernelAction:
//! 1. the mounts: `/iguana/mountlist` (see `mountlist`), or else the first
//!    GPT partition of the Discoverable Partitions root type; a LUKS root is
//!    reported, not mounted; with neither, reboot: nothing to hand over to;
//! 2. a new root with no modules for the running kernel but a kernel in
//!    /boot is kexec'ed into: its kernel, its /etc/kernel/cmdline or else
//!    `root=` of the mounted root and our console (`kernel_args`);
//! 3. otherwise switch_root: / checked to be the initramfs (ramfs/tmpfs),
//!    logs saved into the new root's /var/log/iguana, other processes
//!    stopped, /proc /sys /dev /run moved over, the initramfs emptied, the
//!    new root moved onto /, and its init exec'ed as PID 1 with the
//!    environment the kernel gave PID 1. Any failure before the exec undoes
//!    the mounts (a failed move puts /proc /sys /dev back first) and reboots.

mod kernel_args;
pub mod mountlist;
pub mod probe;
pub mod progress;
pub mod real;
mod switch_root;

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::MsFlags;

use crate::cmdline::Failsafe;
pub use mountlist::SYSROOT;
pub use real::Real;

/// What the containers asked for, read from /iguana.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requests {
    /// Contents of /iguana/kernelAction, trimmed.
    pub kernel_action: Option<String>,
    /// Contents of /iguana/mountlist.
    pub mountlist: Option<String>,
}

/// The most PID 1 reads of /iguana/mountlist: far more than any real list.
pub const MOUNTLIST_LIMIT: u64 = 64 * 1024;
/// /iguana/kernelAction holds one word.
pub const KERNEL_ACTION_LIMIT: u64 = 64;
/// The most read of the new root's /etc/kernel/cmdline (the kernel's own
/// limit on x86 is 2 KiB).
const KERNEL_CMDLINE_LIMIT: u64 = 4096;

impl Requests {
    /// Reads what the containers left in `dir`. A missing file is no
    /// request; an oversize, unreadable or non-text one is an error, since
    /// a container wrote it.
    pub fn read(dir: &Path) -> Result<Requests, Error> {
        Ok(Requests {
            kernel_action: read_bounded(&dir.join("kernelAction"), KERNEL_ACTION_LIMIT)?.map(|s| s.trim().to_string()),
            mountlist: read_bounded(&dir.join("mountlist"), MOUNTLIST_LIMIT)?,
        })
    }
}

/// The text of the regular file `path`, at most `limit` bytes; `None` when
/// it does not exist. Opened non-blocking, so a FIFO put in its place
/// cannot stall PID 1 (and is refused as not a regular file).
pub fn read_bounded(path: &Path, limit: u64) -> Result<Option<String>, Error> {
    use crate::fsutil::Error as Read;
    let name = || path.display().to_string();
    let bytes = match crate::fsutil::read_bounded(path, limit) {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(Read::NotFile { .. }) => return Err(Error::RequestNotFile { path: name() }),
        Err(Read::TooLarge { .. }) => return Err(Error::RequestTooBig { path: name(), limit }),
        Err(Read::Open { source, .. } | Read::Read { source, .. }) => return Err(Error::ReadRequest { path: name(), source }),
    };
    String::from_utf8(bytes).map(Some).map_err(|_| Error::RequestNotText { path: name() })
}

/// The one thing PID 1 does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Reboot { reason: String, delay: Duration },
    Poweroff,
    /// Execute the kernel a container loaded with `kexec -l`.
    Kexec,
    /// Debug mode: a shell on the console, then reboot when it exits.
    Shell { reason: String },
    /// Mount the new root (from the mountlist, or found), then kexec or
    /// switch_root into it; `failsafe` says how to fail.
    HandOver { mountlist: Option<String>, failsafe: Failsafe },
}

/// How a failure ends: the shell in debug mode, else a reboot after the delay.
fn failed(reason: String, failsafe: Failsafe) -> Action {
    if failsafe.debug {
        Action::Shell { reason }
    } else {
        Action::Reboot { reason, delay: failsafe.reboot_timeout }
    }
}

/// Picks the action. `failure` is the workflow's error, if it failed.
pub fn decide(failure: Option<&str>, failsafe: Failsafe, requests: &Requests) -> Action {
    if let Some(reason) = failure {
        return failed(reason.to_string(), failsafe);
    }
    match requests.kernel_action.as_deref() {
        Some("reboot") => Action::Reboot { reason: "kernelAction reboot".into(), delay: Duration::ZERO },
        Some("poweroff") => Action::Poweroff,
        Some("kexec") => Action::Kexec,
        Some(other) => failed(format!("/iguana/kernelAction: unknown action {other:?} (kexec, reboot, poweroff)"), failsafe),
        None => Action::HandOver { mountlist: requests.mountlist.clone(), failsafe },
    }
}

/// A block device and what its bytes say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    /// `/dev/vda1`.
    pub path: PathBuf,
    pub fs: Option<probe::Filesystem>,
    /// Its GPT entry, when it is a partition of a GPT disk.
    pub part: Option<probe::GptEntry>,
}

/// One mount(2) call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: String,
    pub target: PathBuf,
    pub fstype: String,
    pub flags: MsFlags,
    pub data: String,
}

impl std::fmt::Display for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mount -t {} {} {}", self.fstype, self.source, self.target.display())?;
        if !self.flags.is_empty() {
            write!(f, " flags={:#x}", self.flags.bits())?;
        }
        if !self.data.is_empty() {
            write!(f, " -o {}", self.data)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Mountlist(#[from] mountlist::Error),
    #[error("mountlist line {line}: no block device has {device}")]
    NoDevice { line: usize, device: String },
    #[error("mountlist line {line}: {device} is encrypted (LUKS); open it in a container and list the opened device")]
    EncryptedDevice { line: usize, device: String },
    #[error("mountlist line {line}: unknown filesystem on {device}; add fstype=TYPE")]
    UnknownFs { line: usize, device: String },
    #[error("root partition {device} is encrypted (LUKS): not supported")]
    EncryptedRoot { device: String },
    #[error("root partition {device}: unknown filesystem")]
    UnknownRootFs { device: String },
    #[error("{mount}")]
    Mount { mount: String, #[source] source: std::io::Error },
    #[error("load the new root's kernel {kernel}")]
    KexecLoad { kernel: String, #[source] source: std::io::Error },
    #[error("kexec into the new root's kernel returned")]
    Kexec,
    #[error("mount --move {from} {to}")]
    MoveMount { from: String, to: String, #[source] source: std::io::Error },
    #[error("empty the initramfs")]
    RemoveTree(#[source] std::io::Error),
    #[error("switch root to {root}")]
    EnterRoot { root: String, #[source] source: std::io::Error },
    #[error("exec {init} in the new root")]
    ExecInit { init: String, #[source] source: std::io::Error },
    #[error("read {path}")]
    ReadRequest { path: String, #[source] source: std::io::Error },
    #[error("{path} is over the limit of {limit} bytes")]
    RequestTooBig { path: String, limit: u64 },
    #[error("{path} is not a regular file")]
    RequestNotFile { path: String },
    #[error("{path} is not UTF-8 text")]
    RequestNotText { path: String },
    #[error("statfs /")]
    StatfsRoot(#[source] std::io::Error),
    #[error("refusing to empty /: it is {fstype}, not the initramfs (ramfs or tmpfs)")]
    NotInitramfs { fstype: String },
    #[error("no root= for the new root's kernel: {device} is not a block device")]
    NoRootDevice { device: String },
}

/// Side effects of the handover, behind one seam.
pub trait Machine {
    fn sleep(&mut self, delay: Duration);
    fn shell(&mut self);
    /// Stops every other process and syncs the disks.
    fn quiesce(&mut self);
    fn reboot(&mut self);
    fn poweroff(&mut self);
    fn kexec(&mut self);
    /// Every block device, probed.
    fn block_devices(&mut self) -> Vec<Device>;
    fn mount(&mut self, mount: &Mount) -> std::io::Result<()>;
    /// Unmounts, detaching when busy; errors are only logged.
    fn umount(&mut self, target: &Path);
    fn exists(&mut self, path: &Path) -> bool;
    /// File names in a directory (empty when it cannot be read).
    fn list_dir(&mut self, path: &Path) -> Vec<String>;
    /// `uname -r`.
    fn kernel_release(&mut self) -> String;
    /// The running kernel's command line.
    fn cmdline(&mut self) -> String;
    fn kexec_load(&mut self, kernel: &Path, initrd: Option<&Path>, cmdline: &str) -> std::io::Result<()>;
    /// Copies iguana's logs and writes `summary` into `dest`.
    fn save_logs(&mut self, dest: &Path, summary: &str) -> std::io::Result<()>;
    /// `mount --move FROM TO`, creating TO when missing.
    fn move_mount(&mut self, from: &Path, to: &Path) -> std::io::Result<()>;
    /// statfs(2) `f_type` of the filesystem holding `path`.
    fn fs_type(&mut self, path: &Path) -> std::io::Result<u64>;
    /// A small text file of the new root, at most `limit` bytes; `None`
    /// when it does not exist.
    fn read_text(&mut self, path: &Path, limit: u64) -> Result<Option<String>, Error>;
    /// Deletes what is under `root` on its own filesystem, never crossing
    /// into another mount; refuses unless it is ramfs or tmpfs.
    fn remove_tree(&mut self, root: &Path) -> std::io::Result<()>;
    /// chdir NEW_ROOT, mount --move NEW_ROOT /, chroot ., chdir /.
    fn enter_root(&mut self, new_root: &Path) -> std::io::Result<()>;
    /// Replaces this process (staying PID 1); returns only on failure.
    fn exec_init(&mut self, init: &str) -> std::io::Error;
}

/// Carries out the action. Returns only if the machine refused to reboot or
/// power off; the caller then waits forever.
pub fn execute(action: &Action, machine: &mut dyn Machine) {
    match action {
        Action::Reboot { reason, delay } => {
            tracing::info!("rebooting in {}s: {reason}", delay.as_secs());
            machine.sleep(*delay);
            machine.quiesce();
            machine.reboot();
        }
        Action::Poweroff => {
            tracing::info!("powering off");
            machine.quiesce();
            machine.poweroff();
        }
        Action::Kexec => {
            tracing::info!("kexec into the loaded kernel");
            machine.quiesce();
            machine.kexec();
            tracing::error!("kexec failed: was a kernel loaded with kexec -l? rebooting");
            machine.reboot();
        }
        Action::Shell { reason } => {
            tracing::error!("debug mode: starting a shell on the console ({reason}); exit it to reboot");
            machine.shell();
            machine.quiesce();
            machine.reboot();
        }
        Action::HandOver { mountlist, failsafe } => {
            let next = match hand_over(mountlist.as_deref(), machine) {
                Ok(()) => Action::Reboot { reason: "workflow done, nothing to hand over to".into(), delay: Duration::ZERO },
                Err(e) => {
                    let reason = format!("handover: {}", crate::logging::chain(&e));
                    tracing::error!("{reason}");
                    failed(reason, *failsafe)
                }
            };
            execute(&next, machine);
        }
    }
}

/// Mounts the new root and enters it. `Ok` means there was nothing to
/// mount; every other way back is an error, with nothing left mounted.
fn hand_over(mountlist: Option<&str>, machine: &mut dyn Machine) -> Result<(), Error> {
    let devices = machine.block_devices();
    let mounts = match mountlist {
        Some(text) => plan(&mountlist::parse(text)?, &devices)?,
        None => match find_root(&devices)? {
            Some(root) => vec![root],
            None => return Ok(()),
        },
    };
    let mut mounted: Vec<PathBuf> = Vec::new();
    for mount in &mounts {
        tracing::info!("{mount}");
        if let Err(source) = machine.mount(mount) {
            unmount_all(machine, &mounted);
            return Err(Error::Mount { mount: mount.to_string(), source });
        }
        mounted.push(mount.target.clone());
    }
    let result = match own_kernel(machine) {
        Some(boot) => kexec_new_root(machine, &boot, &mounts, &devices, &mounted),
        None => switch_root(machine, &mounts),
    };
    // Only reached on failure: a successful kexec or exec does not return.
    if let Err(e) = &result {
        if !matches!(e, Error::Kexec | Error::RemoveTree(_) | Error::EnterRoot { .. } | Error::ExecInit { .. }) {
            unmount_all(machine, &mounted);
        }
    }
    result
}

fn unmount_all(machine: &mut dyn Machine, mounted: &[PathBuf]) {
    for target in mounted.iter().rev() {
        machine.umount(target);
    }
}

/// Resolves each mountlist entry to a device and a filesystem type.
fn plan(entries: &[mountlist::Entry], devices: &[Device]) -> Result<Vec<Mount>, Error> {
    entries.iter().map(|entry| plan_one(entry, devices)).collect()
}

fn plan_one(entry: &mountlist::Entry, devices: &[Device]) -> Result<Mount, Error> {
    use mountlist::Source;
    let line = entry.line;
    let wanted = entry.source.to_string();
    let found = devices.iter().find(|d| {
        let fs = d.fs.as_ref();
        let part = d.part.as_ref();
        match &entry.source {
            Source::Path(p) => d.path == *p,
            Source::Uuid(v) => fs.and_then(|f| f.uuid.as_deref()).is_some_and(|u| u.eq_ignore_ascii_case(v)),
            Source::Label(v) => fs.and_then(|f| f.label.as_deref()) == Some(v.as_str()),
            Source::PartUuid(v) => part.is_some_and(|p| p.part_uuid.eq_ignore_ascii_case(v)),
            Source::PartLabel(v) => part.is_some_and(|p| p.name == *v),
            Source::Pseudo(_) => false,
        }
    });
    let (source, probed) = match (&entry.source, found) {
        (Source::Pseudo(name), _) => (name.clone(), None),
        (_, Some(d)) => (d.path.display().to_string(), d.fs.as_ref()),
        // A path we did not probe (a device-mapper node, a bind source):
        // mount(2) will tell if it is wrong, but the type must be given.
        (Source::Path(p), None) => (p.display().to_string(), None),
        (_, None) => return Err(Error::NoDevice { line, device: wanted }),
    };
    if probed.is_some_and(probe::Filesystem::is_luks) {
        return Err(Error::EncryptedDevice { line, device: source });
    }
    let bind = entry.flags.contains(MsFlags::MS_BIND);
    let fstype = match (&entry.fstype, probed) {
        (Some(t), _) => t.clone(),
        (None, Some(fs)) => fs.fstype.clone(),
        (None, None) if bind => String::new(),
        (None, None) => return Err(Error::UnknownFs { line, device: source }),
    };
    Ok(Mount { source, target: entry.target.clone(), fstype, flags: entry.flags, data: entry.data.clone() })
}

/// The first partition of the Discoverable Partitions root type, or none.
fn find_root(devices: &[Device]) -> Result<Option<Mount>, Error> {
    let Some(root) = devices.iter().find(|d| d.part.as_ref().is_some_and(|p| p.type_guid == probe::ROOT_TYPE)) else {
        tracing::info!("no mountlist and no root partition (type {}) on {} block devices", probe::ROOT_TYPE, devices.len());
        return Ok(None);
    };
    let device = root.path.display().to_string();
    match &root.fs {
        Some(fs) if fs.is_luks() => Err(Error::EncryptedRoot { device }),
        Some(fs) => Ok(Some(Mount { source: device, target: SYSROOT.into(), fstype: fs.fstype.clone(), flags: MsFlags::empty(), data: String::new() })),
        None => Err(Error::UnknownRootFs { device }),
    }
}

/// The new root's own kernel and initrd, in its /boot.
struct NewKernel {
    kernel: PathBuf,
    initrd: Option<PathBuf>,
}

/// The new root's kernel, when the new root cannot use ours: it has no
/// modules for the running kernel but one obvious kernel in /boot.
fn own_kernel(machine: &mut dyn Machine) -> Option<NewKernel> {
    let release = machine.kernel_release();
    let root = Path::new(SYSROOT);
    for dir in ["lib/modules", "usr/lib/modules"] {
        if machine.exists(&root.join(dir).join(&release)) {
            return None;
        }
    }
    let boot = root.join("boot");
    let found = switch_root::find_kernel(&machine.list_dir(&boot));
    if found.is_none() {
        tracing::warn!("the new root has no modules for kernel {release} and no single kernel in /boot: switching root anyway");
    }
    found.map(|(kernel, initrd)| NewKernel { kernel: boot.join(kernel), initrd: initrd.map(|i| boot.join(i)) })
}

fn kexec_new_root(machine: &mut dyn Machine, boot: &NewKernel, mounts: &[Mount], devices: &[Device], mounted: &[PathBuf]) -> Result<(), Error> {
    let NewKernel { kernel, initrd } = boot;
    // hand_over mounts at least the root; an empty list still names itself.
    let root = mounts.first().ok_or_else(|| Error::NoRootDevice { device: "(nothing mounted)".into() })?;
    let spec = kernel_args::root(root, devices, initrd.is_some()).ok_or_else(|| Error::NoRootDevice { device: root.source.clone() })?;
    let installed = machine.read_text(&Path::new(SYSROOT).join("etc/kernel/cmdline"), KERNEL_CMDLINE_LIMIT)?;
    let cmdline = kernel_args::build(installed.as_deref(), &machine.cmdline(), &spec);
    // Built from the installed system and our console arguments only, so
    // it holds no rd.iguana.* value and may be logged.
    tracing::info!("kexec into the new root's kernel {} (initrd {:?}) with: {cmdline}", kernel.display(), initrd);
    machine
        .kexec_load(kernel, initrd.as_deref(), &cmdline)
        .map_err(|source| Error::KexecLoad { kernel: kernel.display().to_string(), source })?;
    machine.quiesce();
    unmount_all(machine, mounted);
    machine.kexec();
    Err(Error::Kexec)
}

/// Enters /sysroot and execs its init; returns only with the error.
fn switch_root(machine: &mut dyn Machine, mounts: &[Mount]) -> Result<(), Error> {
    // The initramfs is emptied below: check first that / is one, before
    // anything is stopped or moved, so a refusal leaves the machine as it is.
    let magic = machine.fs_type(Path::new("/")).map_err(Error::StatfsRoot)?;
    if !switch_root::is_initramfs(magic) {
        return Err(Error::NotInitramfs { fstype: switch_root::fs_name(magic) });
    }
    let init = switch_root::init_path(&machine.cmdline());
    let root = Path::new(SYSROOT);
    let summary = switch_root::summary(mounts, &init);
    if let Err(e) = machine.save_logs(&root.join("var/log/iguana"), &summary) {
        tracing::warn!("save logs into {SYSROOT}/var/log/iguana: {e}");
    }
    tracing::info!("switch_root {SYSROOT} {init}");
    machine.quiesce();
    let mut moved: Vec<(&Path, PathBuf)> = Vec::new();
    for api in ["/proc", "/sys", "/dev", "/run"] {
        let from = Path::new(api);
        let to = root.join(api.trim_start_matches('/'));
        if let Err(source) = machine.move_mount(from, &to) {
            // Put back what already moved: the new root is unmounted next,
            // and the debug shell needs /proc, /sys and /dev where they were.
            for (from, to) in moved.iter().rev() {
                if let Err(e) = machine.move_mount(to, from) {
                    tracing::error!("mount --move {} {}: {e}", to.display(), from.display());
                }
            }
            return Err(Error::MoveMount { from: api.into(), to: to.display().to_string(), source });
        }
        moved.push((from, to));
    }
    // iguana's own tmpfs mounts go: nobody after us uses them.
    for own in ["/iguana", "/tmp"] {
        machine.umount(Path::new(own));
    }
    machine.remove_tree(Path::new("/")).map_err(Error::RemoveTree)?;
    machine.enter_root(root).map_err(|source| Error::EnterRoot { root: SYSROOT.into(), source })?;
    let source = machine.exec_init(&init);
    Err(Error::ExecInit { init, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Failsafe = Failsafe { debug: false, reboot_timeout: Duration::from_secs(10) };
    const DEBUG: Failsafe = Failsafe { debug: true, reboot_timeout: Duration::from_secs(10) };

    fn requests(kernel_action: Option<&str>, mountlist: Option<&str>) -> Requests {
        Requests { kernel_action: kernel_action.map(str::to_string), mountlist: mountlist.map(str::to_string) }
    }

    #[test]
    fn decisions() {
        let cases: Vec<(Option<&str>, Failsafe, Requests, Action)> = vec![
            (None, OK, requests(None, None), Action::HandOver { mountlist: None, failsafe: OK }),
            (None, OK, requests(None, Some("/dev/vda /")), Action::HandOver { mountlist: Some("/dev/vda /".into()), failsafe: OK }),
            (Some("job a failed"), OK, requests(None, None), Action::Reboot { reason: "job a failed".into(), delay: Duration::from_secs(10) }),
            (Some("job a failed"), DEBUG, requests(None, None), Action::Shell { reason: "job a failed".into() }),
            // A failed workflow never hands over, whatever the containers wrote.
            (Some("x"), OK, requests(Some("kexec"), Some("/dev/vda1 /sysroot")), Action::Reboot { reason: "x".into(), delay: Duration::from_secs(10) }),
            (None, OK, requests(Some("poweroff"), None), Action::Poweroff),
            (None, OK, requests(Some("kexec"), Some("ignored")), Action::Kexec),
            (None, OK, requests(Some("reboot"), None), Action::Reboot { reason: "kernelAction reboot".into(), delay: Duration::ZERO }),
            (
                None,
                OK,
                requests(Some("halt"), None),
                Action::Reboot { reason: "/iguana/kernelAction: unknown action \"halt\" (kexec, reboot, poweroff)".into(), delay: Duration::from_secs(10) },
            ),
        ];
        for (failure, failsafe, req, want) in cases {
            assert_eq!(decide(failure, failsafe, &req), want, "{failure:?} {req:?}");
        }
    }

    /// Records every call; answers from its fields.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
        devices: Vec<Device>,
        existing: Vec<PathBuf>,
        boot: Vec<String>,
        fail_mount: Option<PathBuf>,
        /// The move whose source this is fails.
        fail_move: Option<PathBuf>,
        /// statfs f_type of `/`; tmpfs when unset.
        root_fs: Option<u64>,
        /// Files `read_text` finds.
        files: Vec<(PathBuf, String)>,
        /// /proc/cmdline; a plain console line when unset.
        cmdline: Option<String>,
    }

    impl Recorder {
        fn call(&mut self, text: String) {
            self.calls.push(text);
        }
    }

    impl Machine for Recorder {
        fn sleep(&mut self, d: Duration) {
            self.call(format!("sleep {}", d.as_secs()));
        }
        fn shell(&mut self) {
            self.call("shell".into());
        }
        fn quiesce(&mut self) {
            self.call("quiesce".into());
        }
        fn reboot(&mut self) {
            self.call("reboot".into());
        }
        fn poweroff(&mut self) {
            self.call("poweroff".into());
        }
        fn kexec(&mut self) {
            self.call("kexec".into());
        }
        fn block_devices(&mut self) -> Vec<Device> {
            self.devices.clone()
        }
        fn mount(&mut self, mount: &Mount) -> std::io::Result<()> {
            self.call(mount.to_string());
            if self.fail_mount.as_ref() == Some(&mount.target) {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ENOENT));
            }
            Ok(())
        }
        fn umount(&mut self, target: &Path) {
            self.call(format!("umount {}", target.display()));
        }
        fn exists(&mut self, path: &Path) -> bool {
            self.existing.iter().any(|p| p == path)
        }
        fn list_dir(&mut self, _path: &Path) -> Vec<String> {
            self.boot.clone()
        }
        fn kernel_release(&mut self) -> String {
            "6.1.0-test".into()
        }
        fn cmdline(&mut self) -> String {
            self.cmdline.clone().unwrap_or_else(|| "console=ttyS0 init=/usr/lib/systemd/systemd\n".into())
        }
        fn kexec_load(&mut self, kernel: &Path, initrd: Option<&Path>, cmdline: &str) -> std::io::Result<()> {
            self.call(format!("kexec_load {} {:?} {cmdline}", kernel.display(), initrd));
            Ok(())
        }
        fn save_logs(&mut self, dest: &Path, _summary: &str) -> std::io::Result<()> {
            self.call(format!("save_logs {}", dest.display()));
            Ok(())
        }
        fn move_mount(&mut self, from: &Path, to: &Path) -> std::io::Result<()> {
            self.call(format!("move {} {}", from.display(), to.display()));
            if self.fail_move.as_deref() == Some(from) {
                return Err(std::io::Error::from_raw_os_error(nix::libc::EINVAL));
            }
            Ok(())
        }
        fn fs_type(&mut self, path: &Path) -> std::io::Result<u64> {
            self.call(format!("statfs {}", path.display()));
            Ok(self.root_fs.unwrap_or(switch_root::TMPFS_MAGIC))
        }
        fn read_text(&mut self, path: &Path, _limit: u64) -> Result<Option<String>, Error> {
            Ok(self.files.iter().find(|(p, _)| p == path).map(|(_, text)| text.clone()))
        }
        fn remove_tree(&mut self, root: &Path) -> std::io::Result<()> {
            self.call(format!("remove_tree {}", root.display()));
            Ok(())
        }
        fn enter_root(&mut self, new_root: &Path) -> std::io::Result<()> {
            self.call(format!("enter_root {}", new_root.display()));
            Ok(())
        }
        fn exec_init(&mut self, init: &str) -> std::io::Error {
            self.call(format!("exec {init}"));
            std::io::Error::from_raw_os_error(nix::libc::ENOENT)
        }
    }

    fn disk(path: &str, fstype: &str, label: &str, part_type: Option<&str>) -> Device {
        Device {
            path: path.into(),
            fs: Some(probe::Filesystem { fstype: fstype.into(), uuid: Some("1234-ABCD".into()), label: Some(label.into()) }),
            part: part_type.map(|t| probe::GptEntry { number: 1, type_guid: t.into(), part_uuid: "0a-1b".into(), name: "p".into() }),
        }
    }

    fn run(machine: &mut Recorder, mountlist: Option<&str>) {
        execute(&Action::HandOver { mountlist: mountlist.map(str::to_string), failsafe: OK }, machine);
    }

    const SWITCH: &[&str] = &[
        "statfs /",
        "save_logs /sysroot/var/log/iguana",
        "quiesce",
        "move /proc /sysroot/proc",
        "move /sys /sysroot/sys",
        "move /dev /sysroot/dev",
        "move /run /sysroot/run",
        "umount /iguana",
        "umount /tmp",
        "remove_tree /",
        "enter_root /sysroot",
        "exec /usr/lib/systemd/systemd",
        // The exec failed (the fake says ENOENT): reboot after the delay.
        "sleep 10",
        "quiesce",
        "reboot",
    ];

    #[test]
    fn mountlist_then_switch_root() {
        let mut m = Recorder {
            devices: vec![disk("/dev/vda", "ext4", "root", None), disk("/dev/vdb", "vfat", "EFI", None)],
            existing: vec!["/sysroot/usr/lib/modules/6.1.0-test".into()],
            ..Recorder::default()
        };
        run(&mut m, Some("LABEL=root / noatime\nUUID=1234-abcd /boot ro\ntmpfs /tmp size=1m\n"));
        let mut want = vec![
            "mount -t ext4 /dev/vda /sysroot flags=0x400",
            "mount -t ext4 /dev/vda /sysroot/boot flags=0x1",
            "mount -t tmpfs tmpfs /sysroot/tmp -o size=1m",
        ];
        want.extend(SWITCH);
        assert_eq!(m.calls, want);
    }

    #[test]
    fn malformed_mountlist_mounts_nothing() {
        let mut m = Recorder { devices: vec![disk("/dev/vda", "ext4", "root", None)], ..Recorder::default() };
        run(&mut m, Some("LABEL=root /\ntmpfs /tmp\n/dev/vdb\n"));
        assert_eq!(m.calls, ["sleep 10", "quiesce", "reboot"]);
    }

    #[test]
    fn failed_mount_undoes_the_others_in_reverse() {
        let mut m = Recorder {
            devices: vec![disk("/dev/vda", "ext4", "root", None)],
            fail_mount: Some("/sysroot/srv".into()),
            ..Recorder::default()
        };
        run(&mut m, Some("LABEL=root /\ntmpfs /tmp\n/dev/vda /srv\n"));
        assert_eq!(
            m.calls,
            [
                "mount -t ext4 /dev/vda /sysroot",
                "mount -t tmpfs tmpfs /sysroot/tmp",
                "mount -t ext4 /dev/vda /sysroot/srv",
                "umount /sysroot/tmp",
                "umount /sysroot",
                "sleep 10",
                "quiesce",
                "reboot",
            ]
        );
    }

    #[test]
    fn discovered_root_and_luks() {
        let mut m = Recorder {
            devices: vec![disk("/dev/vda1", "vfat", "EFI", Some("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")), disk("/dev/vda2", "ext4", "r", Some(probe::ROOT_TYPE))],
            existing: vec!["/sysroot/lib/modules/6.1.0-test".into()],
            ..Recorder::default()
        };
        run(&mut m, None);
        assert_eq!(m.calls.first().map(String::as_str), Some("mount -t ext4 /dev/vda2 /sysroot"));
        assert_eq!(m.calls[1..], *SWITCH);

        let mut m = Recorder { devices: vec![disk("/dev/vda2", "crypto_LUKS", "", Some(probe::ROOT_TYPE))], ..Recorder::default() };
        run(&mut m, None);
        assert_eq!(m.calls, ["sleep 10", "quiesce", "reboot"]);

        let mut m = Recorder { devices: vec![disk("/dev/vda", "ext4", "x", None)], ..Recorder::default() };
        run(&mut m, None);
        assert_eq!(m.calls, ["sleep 0", "quiesce", "reboot"]);
    }

    /// A metal boot's command line: credentials, debug, network arguments.
    const METAL_CMDLINE: &str = "initrd=iguana console=ttyS1,115200n8 ip=dhcp rd.iguana.proxy=http://alice:s3cret@proxy.lan:3128 \
                                 rd.iguana.control_url=https://ops:t0ken@control.lan/w.yaml rd.iguana.debug rd.debug panic=-1\n";

    #[test]
    fn kexec_of_the_new_roots_kernel() {
        let mut m = Recorder {
            devices: vec![disk("/dev/vda", "ext4", "root", None)],
            boot: vec!["config-6.2".into(), "vmlinuz-6.2".into(), "initrd.img-6.2".into()],
            cmdline: Some(METAL_CMDLINE.into()),
            ..Recorder::default()
        };
        run(&mut m, Some("/dev/vda /\ntmpfs /run/x\n"));
        assert_eq!(
            m.calls,
            [
                "mount -t ext4 /dev/vda /sysroot",
                "mount -t tmpfs tmpfs /sysroot/run/x",
                "kexec_load /sysroot/boot/vmlinuz-6.2 Some(\"/sysroot/boot/initrd.img-6.2\") root=UUID=1234-ABCD rw console=ttyS1,115200n8",
                "quiesce",
                "umount /sysroot/run/x",
                "umount /sysroot",
                "kexec",
                // kexec returned: reboot.
                "sleep 10",
                "quiesce",
                "reboot",
            ]
        );
    }

    #[test]
    fn kexec_uses_the_installed_systems_kernel_cmdline() {
        let mut m = Recorder {
            devices: vec![disk("/dev/vda", "ext4", "root", None)],
            boot: vec!["vmlinuz".into()],
            cmdline: Some(METAL_CMDLINE.into()),
            files: vec![("/sysroot/etc/kernel/cmdline".into(), "root=PARTLABEL=os ro quiet\n".into())],
            ..Recorder::default()
        };
        run(&mut m, Some("/dev/vda / ro\n"));
        assert_eq!(m.calls.get(1).map(String::as_str), Some("kexec_load /sysroot/boot/vmlinuz None root=PARTLABEL=os ro quiet"));
        // A root that is no block device cannot be handed to a kernel.
        let mut m = Recorder { boot: vec!["vmlinuz".into()], ..Recorder::default() };
        let err = hand_over(Some("tmpfs /\n"), &mut m).unwrap_err();
        assert_eq!(err.to_string(), "no root= for the new root's kernel: tmpfs is not a block device");
        assert_eq!(m.calls, ["mount -t tmpfs tmpfs /sysroot", "umount /sysroot"]);
    }

    #[test]
    fn refuses_to_empty_a_root_that_is_not_the_initramfs() {
        let modules: Vec<PathBuf> = vec!["/sysroot/usr/lib/modules/6.1.0-test".into()];
        let devices = vec![disk("/dev/vda", "ext4", "root", None)];
        let mut m = Recorder { devices: devices.clone(), existing: modules.clone(), root_fs: Some(0xef53), ..Recorder::default() };
        let err = hand_over(Some("LABEL=root /\n"), &mut m).unwrap_err();
        assert_eq!(err.to_string(), "refusing to empty /: it is ext2/ext3/ext4, not the initramfs (ramfs or tmpfs)");
        // Nothing moved, nothing deleted, the new root unmounted again.
        assert_eq!(m.calls, ["mount -t ext4 /dev/vda /sysroot", "statfs /", "umount /sysroot"]);

        let mut m = Recorder { devices, existing: modules, root_fs: Some(switch_root::RAMFS_MAGIC), ..Recorder::default() };
        run(&mut m, Some("LABEL=root /\n"));
        assert_eq!(m.calls[1..], *SWITCH);
    }

    #[test]
    fn failed_move_puts_proc_sys_dev_back_for_the_shell() {
        let mut m = Recorder {
            devices: vec![disk("/dev/vda", "ext4", "root", None)],
            existing: vec!["/sysroot/usr/lib/modules/6.1.0-test".into()],
            fail_move: Some("/dev".into()),
            ..Recorder::default()
        };
        execute(&Action::HandOver { mountlist: Some("LABEL=root /\n".into()), failsafe: DEBUG }, &mut m);
        assert_eq!(
            m.calls,
            [
                "mount -t ext4 /dev/vda /sysroot",
                "statfs /",
                "save_logs /sysroot/var/log/iguana",
                "quiesce",
                "move /proc /sysroot/proc",
                "move /sys /sysroot/sys",
                "move /dev /sysroot/dev",
                // Back where the debug shell looks for them, before the
                // new root (and what was moved into it) is unmounted.
                "move /sysroot/sys /sys",
                "move /sysroot/proc /proc",
                "umount /sysroot",
                "shell",
                "quiesce",
                "reboot",
            ]
        );
    }

    #[test]
    fn requests_are_read_within_limits() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(Requests::read(d).unwrap(), Requests::default());
        std::fs::write(d.join("kernelAction"), "kexec\n").unwrap();
        std::fs::write(d.join("mountlist"), "x".repeat(64 * 1024)).unwrap();
        let got = Requests::read(d).unwrap();
        assert_eq!(got.kernel_action.as_deref(), Some("kexec"));
        assert_eq!(got.mountlist.map(|m| m.len()), Some(64 * 1024));

        let cases = [
            ("kernelAction", vec![b'k'; 65], format!("{}/kernelAction is over the limit of 64 bytes", d.display())),
            ("mountlist", vec![b'x'; 64 * 1024 + 1], format!("{}/mountlist is over the limit of 65536 bytes", d.display())),
            ("mountlist", vec![0xff, 0xfe], format!("{}/mountlist is not UTF-8 text", d.display())),
        ];
        for (name, bytes, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(name), bytes).unwrap();
            let want = want.replace(&d.display().to_string(), &dir.path().display().to_string());
            assert_eq!(Requests::read(dir.path()).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn a_fifo_in_place_of_a_request_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kernelAction");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.path().to_path_buf();
        std::thread::spawn(move || tx.send(Requests::read(&d).map_err(|e| e.to_string())));
        let got = rx.recv_timeout(Duration::from_secs(5)).expect("Requests::read blocked on a FIFO");
        assert_eq!(got, Err(format!("{} is not a regular file", path.display())));
    }

    #[test]
    fn unresolvable_devices_name_the_line() {
        let devices = vec![disk("/dev/vda", "crypto_LUKS", "", None), disk("/dev/vdb", "ext4", "data", None)];
        let cases = [
            ("LABEL=nope /", "mountlist line 1: no block device has LABEL=nope"),
            ("/dev/vdb /\n/dev/vda /srv", "mountlist line 2: /dev/vda is encrypted (LUKS); open it in a container and list the opened device"),
            ("/dev/vdb /\n/dev/mapper/x /srv", "mountlist line 2: unknown filesystem on /dev/mapper/x; add fstype=TYPE"),
        ];
        for (text, want) in cases {
            let err = mountlist::parse(text).map_err(Error::from).and_then(|e| plan(&e, &devices)).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn execution_order() {
        let cases: Vec<(Action, &[&str])> = vec![
            (Action::Reboot { reason: "r".into(), delay: Duration::from_secs(3) }, &["sleep 3", "quiesce", "reboot"]),
            (Action::Poweroff, &["quiesce", "poweroff"]),
            (Action::Kexec, &["quiesce", "kexec", "reboot"]),
            (Action::Shell { reason: "r".into() }, &["shell", "quiesce", "reboot"]),
        ];
        for (action, want) in cases {
            let mut rec = Recorder::default();
            execute(&action, &mut rec);
            assert_eq!(rec.calls, *want, "{action:?}");
        }
    }
}
