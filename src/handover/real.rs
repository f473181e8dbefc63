//! The real `Machine`: mount(2), reboot(2), kexec_file_load(2), exec.
//!
//! Thin on purpose: the order of things is decided in `handover` and tested
//! there; this file only performs single steps and reports their errors.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::{probe, Device, Machine, Mount};

/// Where the workflow left the containers' logs.
const LOGS: &str = "/run/iguana/logs";

/// The real machine.
pub struct Real {
    /// The environment the kernel gave PID 1, captured before iguana set
    /// anything: the new root's init gets exactly this.
    init_env: Vec<(OsString, OsString)>,
}

impl Real {
    /// `init_env`: `std::env::vars_os()` as PID 1 started.
    pub fn new(init_env: Vec<(OsString, OsString)>) -> Real {
        Real { init_env }
    }
}

fn other(e: impl std::error::Error) -> std::io::Error {
    std::io::Error::other(crate::logging::chain(&e))
}

/// Up to `len` bytes of `path` from `offset`.
fn read_at(path: &Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len);
    file.take(len as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The GPT entries of a whole disk (`vda`), empty when it has no GPT.
fn gpt_of(disk: &str) -> Vec<probe::GptEntry> {
    let dev = Path::new("/dev").join(disk);
    let sector: u64 = std::fs::read_to_string(format!("/sys/class/block/{disk}/queue/logical_block_size"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(512);
    let Some(header) = read_at(&dev, sector, 512).ok().and_then(|b| probe::gpt_header(&b)) else {
        return Vec::new();
    };
    let len = header.count as usize * header.entry_size as usize;
    let Some(offset) = header.entries_lba.checked_mul(sector) else { return Vec::new() };
    read_at(&dev, offset, len).map(|b| probe::gpt_entries(&b, header)).unwrap_or_default()
}

fn probe_one(name: &str, gpts: &mut std::collections::HashMap<String, Vec<probe::GptEntry>>) -> Option<Device> {
    let path = PathBuf::from("/dev").join(name);
    if !path.exists() {
        return None;
    }
    let fs = read_at(&path, 0, probe::PROBE_BYTES).ok().and_then(|b| probe::filesystem(&b));
    let sys = Path::new("/sys/class/block").join(name);
    let part = std::fs::read_to_string(sys.join("partition")).ok().and_then(|n| n.trim().parse::<u32>().ok()).and_then(|number| {
        let real = std::fs::canonicalize(&sys).ok()?;
        let disk = real.parent()?.file_name()?.to_string_lossy().into_owned();
        let entries = gpts.entry(disk.clone()).or_insert_with(|| gpt_of(&disk));
        entries.iter().find(|e| e.number == number).cloned()
    });
    Some(Device { path, fs, part })
}

impl Machine for Real {
    fn sleep(&mut self, delay: Duration) {
        std::thread::sleep(delay);
    }

    fn shell(&mut self) {
        let Some(shell) = find_shell() else {
            tracing::error!("no shell in the initrd (/bin/sh, /bin/busybox)");
            return;
        };
        // The tty2 shell was started at boot (debug mode is what gets here).
        if let Err(e) = shell_command(shell).status() {
            tracing::error!("shell {shell}: {e}");
        }
    }

    fn quiesce(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let all = Pid::from_raw(-1);
        let _ = kill(all, Signal::SIGTERM);
        crate::boot::reap_for(Duration::from_millis(500));
        let _ = kill(all, Signal::SIGKILL);
        crate::boot::reap_for(Duration::from_millis(100));
        nix::unistd::sync();
        // Containers may have mounted disks under the shared /iguana (an
        // installer's target): unmount them, deepest first, so their
        // filesystems are clean before a reboot or kexec.
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for target in mounts_below(&mountinfo, "/iguana") {
            tracing::info!("umount {target}");
            if let Err(e) = nix::mount::umount2(target.as_str(), nix::mount::MntFlags::empty()) {
                tracing::warn!("umount {target}: {e}; detaching it");
                let _ = nix::mount::umount2(target.as_str(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
        nix::unistd::sync();
    }

    fn reboot(&mut self) {
        let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
        tracing::error!("reboot(RB_AUTOBOOT): {e}");
    }

    fn poweroff(&mut self) {
        let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
        tracing::error!("reboot(RB_POWER_OFF): {e}");
    }

    fn kexec(&mut self) {
        let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_KEXEC);
        tracing::error!("reboot(RB_KEXEC): {e}");
    }

    fn block_devices(&mut self) -> Vec<Device> {
        let mut names: Vec<String> = std::fs::read_dir("/sys/class/block")
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        let mut gpts = std::collections::HashMap::new();
        let devices: Vec<Device> = names.iter().filter_map(|n| probe_one(n, &mut gpts)).collect();
        for d in &devices {
            tracing::debug!("block device {}: {:?} {:?}", d.path.display(), d.fs, d.part);
        }
        devices
    }

    fn mount(&mut self, m: &Mount) -> std::io::Result<()> {
        let fstype = (!m.fstype.is_empty()).then_some(m.fstype.as_str());
        let data = (!m.data.is_empty()).then_some(m.data.as_str());
        mount(Some(m.source.as_str()), &m.target, fstype, m.flags, data).map_err(std::io::Error::from)
    }

    fn umount(&mut self, target: &Path) {
        if let Err(e) = umount2(target, MntFlags::MNT_DETACH) {
            tracing::warn!("umount {}: {e}", target.display());
        }
    }

    fn exists(&mut self, path: &Path) -> bool {
        path.exists()
    }

    fn list_dir(&mut self, path: &Path) -> Vec<String> {
        std::fs::read_dir(path)
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }

    fn kernel_release(&mut self) -> String {
        nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default()
    }

    fn cmdline(&mut self) -> String {
        crate::cmdline::read_proc_cmdline().unwrap_or_default()
    }

    fn kexec_load(&mut self, kernel: &Path, initrd: Option<&Path>, cmdline: &str) -> std::io::Result<()> {
        crate::sys::kexec_file_load(kernel, initrd, cmdline).map_err(other)
    }

    fn save_logs(&mut self, dest: &Path, summary: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(dest)?;
        if let Ok(logs) = std::fs::read_dir(LOGS) {
            for entry in logs.flatten() {
                std::fs::copy(entry.path(), dest.join(entry.file_name()))?;
            }
        }
        std::fs::write(dest.join("summary"), summary)
    }

    fn move_mount(&mut self, from: &Path, to: &Path) -> std::io::Result<()> {
        let _ = std::fs::create_dir_all(to);
        mount(Some(from), to, None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(std::io::Error::from)
    }

    fn fs_type(&mut self, path: &Path) -> std::io::Result<u64> {
        super::switch_root::fs_type(path)
    }

    fn read_text(&mut self, path: &Path, limit: u64) -> Result<Option<String>, super::Error> {
        super::read_bounded(path, limit)
    }

    fn remove_tree(&mut self, root: &Path) -> std::io::Result<()> {
        super::switch_root::remove_tree(root)
    }

    fn enter_root(&mut self, new_root: &Path) -> std::io::Result<()> {
        nix::unistd::chdir(new_root)?;
        mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)?;
        nix::unistd::chroot(".")?;
        nix::unistd::chdir("/")?;
        Ok(())
    }

    fn exec_init(&mut self, init: &str) -> std::io::Error {
        use std::os::unix::process::CommandExt;
        init_command(init, &self.init_env).exec()
    }
}

/// The new root's init with the environment the kernel gave PID 1 and
/// nothing iguana set since (a proxy, IGUANA_* variables).
fn init_command(init: &str, env: &[(OsString, OsString)]) -> std::process::Command {
    let mut cmd = std::process::Command::new(init);
    cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// Mount points strictly below `dir` in a /proc/self/mountinfo text,
/// deepest (and, at equal depth, latest) first: the order to unmount them.
pub fn mounts_below(mountinfo: &str, dir: &str) -> Vec<String> {
    let prefix = format!("{}/", dir.trim_end_matches('/'));
    let mut found: Vec<(usize, usize, String)> = mountinfo
        .lines()
        .enumerate()
        .filter_map(|(i, line)| {
            // Field 5 is the mount point, with spaces escaped as \040.
            let target = line.split(' ').nth(4)?.replace("\\040", " ");
            target.starts_with(&prefix).then(|| (target.matches('/').count(), i, target))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    found.into_iter().map(|(_, _, t)| t).collect()
}

/// The initrd's shell: /bin/sh, else busybox itself.
fn find_shell() -> Option<&'static str> {
    ["/bin/sh", "/bin/busybox"].into_iter().find(|p| Path::new(p).exists())
}

/// The debug shell's command line.
fn shell_command(shell: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(shell);
    if shell.ends_with("busybox") {
        cmd.arg("sh");
    }
    cmd.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").env("PS1", "iguana# ");
    cmd
}

/// A second shell on tty2, for a machine with a screen: started at boot in
/// debug mode, so it is there before and after any failure. It is not
/// waited for (PID 1 reaps it whenever it exits) and dies in `quiesce` with
/// everything else. Nothing happens without a /dev/tty2 or a shell.
pub fn spawn_tty2_shell() {
    let Some(shell) = find_shell() else { return };
    let Ok(tty) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty2") else { return };
    if let (Ok(out), Ok(err)) = (tty.try_clone(), tty.try_clone()) {
        match shell_command(shell).stdin(tty).stdout(out).stderr(err).spawn() {
            Ok(_) => tracing::info!("a debug shell is on tty2"),
            Err(e) => tracing::warn!("shell on tty2: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmount_order_is_deepest_first() {
        let info = "\
22 1 0:20 / / rw - rootfs rootfs rw
30 22 0:25 / /iguana rw shared:1 - tmpfs iguana rw
41 30 254:1 / /iguana/target rw shared:1 - ext4 /dev/vda1 rw
42 41 254:2 / /iguana/target/boot rw shared:1 - vfat /dev/vda2 rw
43 30 0:40 / /iguana/with\\040space rw - tmpfs t rw
44 22 0:41 / /iguanas rw - tmpfs t rw
";
        assert_eq!(mounts_below(info, "/iguana"), ["/iguana/target/boot", "/iguana/with space", "/iguana/target"]);
        assert!(mounts_below("garbage\n\n", "/iguana").is_empty());
    }

    #[test]
    fn init_gets_the_kernels_environment_only() {
        // This test process has PATH, HOME and more; the new init must see
        // only what the kernel gave PID 1.
        let env: Vec<(OsString, OsString)> = [("HOME", "/"), ("TERM", "linux")].iter().map(|(k, v)| (k.into(), v.into())).collect();
        let out = init_command("/usr/bin/env", &env).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "HOME=/\nTERM=linux\n");
    }
}
