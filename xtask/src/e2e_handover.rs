//! `cargo xtask e2e-handover`: the handover after the workflow, in QEMU.
//!
//! - `switch-root`: a container writes a mountlist for a virtio disk (ext4,
//!   found by LABEL, built with `mkfs.ext4 -d`, no loop mounts) and a tmpfs,
//!   and a progress line; the disk's `/sbin/init`, a busybox script, reports
//!   what it sees as PID 1 of the new root and powers off.
//! - `kexec`: a container loads a kernel and a tiny initrd with `iguana
//!   kexec-load` (the static iguana binary copied into the image, so no
//!   dynamically linked kexec-tools) and writes `kexec` to kernelAction; the
//!   second kernel's init prints a marker from its command line.
//! - `own-kernel`: the new root (a virtio ext4 disk with a known UUID) has
//!   no modules for the running kernel but a kernel and initrd of its own
//!   in /boot, so iguana kexecs into them; that initrd's init prints
//!   /proc/cmdline, which must say `root=UUID=` of the disk, `rw` and our
//!   console, and carry no `rd.iguana.` argument. On the way, the container
//!   shows that Ctrl-Alt-Del is disabled (`/proc/sys/kernel/ctrl-alt-del` is
//!   0), the harness presses it (QEMU monitor `sendkey`), and the container
//!   and the boot go on.
//! - `bad-mountlist`: line 2 of the mountlist is malformed; the console
//!   names it and the machine reboots by itself.
//!
//! Consoles are saved in `target/iguana-e2e/handover-<scenario>.log`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use testkit::{Image, Layer, Registry};

use crate::cpio::{Archive, Entry};
use crate::initrd::{self, Built, Options};
use crate::qemu::{Outcome, Vm, VmConfig};
use crate::{run_cmd, target_dir, tools};

const LABEL: &str = "igroot";
/// The `own-kernel` disk's filesystem UUID, which `root=` must name.
const OWN_KERNEL_UUID: &str = "6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b";
/// The whole command line the own kernel must get: `root=` of that disk,
/// `rw` as mounted, our console, nothing else.
const OWN_KERNEL_CMDLINE: &str = "HANDOVER-E2E own kernel cmdline: [root=UUID=6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b rw console=ttyS0]";
const TIMEOUT: Duration = Duration::from_secs(240);

/// The new root's init: everything it checks, one marker line each.
const NEW_INIT: &str = r#"#!/bin/sh
echo "HANDOVER-E2E pid=$$"
while read dev mp fstype rest; do
  [ "$mp" = / ] && echo "HANDOVER-E2E rootfs=$fstype"
  [ "$mp" = /mnt/scratch ] && echo "HANDOVER-E2E scratch=$fstype"
done < /proc/mounts
if [ -e /init ]; then echo "HANDOVER-E2E initramfs-left"; else echo "HANDOVER-E2E no-initramfs"; fi
[ -d /var/log/iguana ] && echo "HANDOVER-E2E logs: $(ls /var/log/iguana | tr '\n' ' ')"
echo "HANDOVER-E2E summary: $(tr '\n' ';' < /var/log/iguana/summary)"
# Names only: a leaked value would be the proxy's credentials.
leaked=$(env | grep -i -e proxy -e iguana | cut -d= -f1 | tr '\n' ' ')
if [ -n "$leaked" ]; then echo "HANDOVER-E2E env leaked: $leaked"; else echo "HANDOVER-E2E env clean"; fi
poweroff -f
"#;

/// The second kernel's /init, from its own tiny initrd.
const KEXEC_INIT: &str = r#"#!/bin/sh
mount -t proc proc /proc
echo "HANDOVER-E2E second kernel: $(grep -o 'handover_mark=[a-z]*' /proc/cmdline)"
poweroff -f
"#;

/// The own kernel's init, from the new root's /boot/initrd.
const OWN_KERNEL_INIT: &str = r#"#!/bin/sh
mount -t proc proc /proc
echo "HANDOVER-E2E own kernel cmdline: [$(cat /proc/cmdline)]"
if grep -q 'rd\.iguana\.' /proc/cmdline; then echo "HANDOVER-E2E rd.iguana passed on"; else echo "HANDOVER-E2E no rd.iguana"; fi
poweroff -f
"#;

/// The virtio disk a scenario gets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Disk {
    None,
    /// ext4 labelled `LABEL`, `/sbin/init` is `NEW_INIT`.
    NewRoot,
    /// ext4 with `OWN_KERNEL_UUID`, our kernel and an initrd in /boot and
    /// no /lib/modules.
    OwnKernel,
}

struct Scenario {
    name: &'static str,
    script: String,
    /// Extra image layer (kexec: the binary, kernel and initrd).
    layer: Option<Layer>,
    disk: Disk,
    expect: Vec<&'static str>,
    memory_mib: u32,
    /// Kernel arguments beyond the image and the registry.
    append: &'static str,
    /// A console line after which the harness presses Ctrl-Alt-Del (QEMU
    /// monitor `sendkey`); the boot must go on as if nothing happened.
    ctrl_alt_del_after: Option<&'static str>,
}

pub fn main(args: &[String]) -> Result<()> {
    let only = match args {
        [] => None,
        [flag, name] if flag == "--only" => Some(name.as_str()),
        _ => bail!("usage: cargo xtask e2e-handover [--only NAME]"),
    };
    let (passed, failed) = run_all(only)?;
    println!("e2e-handover: {passed} passed, {} failed", failed.len());
    if !failed.is_empty() {
        bail!("e2e-handover failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Runs the handover scenarios (all, or the one named); returns the pass
/// count and the names of the failed ones, as `e2e::run` does.
pub fn run_all(only: Option<&str>) -> Result<(usize, Vec<String>)> {
    tools::ensure_tools()?;
    let built = initrd::build(&Options::default())?;
    let registry = Registry::start()?;
    let out = target_dir().join("iguana-e2e");
    fs::create_dir_all(&out)?;
    let mut failed = Vec::new();
    let mut passed = 0;
    for scenario in scenarios(&built, &out)? {
        if only.is_some_and(|o| o != scenario.name) {
            continue;
        }
        let started = std::time::Instant::now();
        match run(&built, &registry, &out, &scenario) {
            Ok(()) => {
                println!("PASS handover-{} ({:.1?})", scenario.name, started.elapsed());
                passed += 1;
            }
            Err(e) => {
                println!("FAIL handover-{} ({:.1?}): {e:#}", scenario.name, started.elapsed());
                failed.push(format!("handover-{}", scenario.name));
            }
        }
    }
    if only.is_none_or(|o| o == "debug-shell") {
        let started = std::time::Instant::now();
        match crate::e2e_debug::run(&built, &registry, &out.join("debug-shell.log")) {
            Ok(()) => {
                println!("PASS debug-shell ({:.1?})", started.elapsed());
                passed += 1;
            }
            Err(e) => {
                println!("FAIL debug-shell ({:.1?}): {e:#}", started.elapsed());
                failed.push("debug-shell".to_string());
            }
        }
    }
    Ok((passed, failed))
}

fn scenarios(built: &Built, out: &Path) -> Result<Vec<Scenario>> {
    let kexec_layer = Layer::new()
        .dir("k", 0o755)
        .file("k/iguana", fs::read(&built.init)?, 0o755)
        .file("k/vmlinuz", fs::read(&built.kernel.vmlinuz)?, 0o644)
        .file("k/initrd", second_initrd(KEXEC_INIT)?, 0o644);
    let _ = out;
    Ok(vec![
        Scenario {
            name: "switch-root",
            script: format!(
                "printf 'LABEL={LABEL} / noatime\\ntmpfs /mnt/scratch size=8m\\n' > /iguana/mountlist\necho 'mountlist written' > /iguana/progress\n\
                 (head -c 1048576 /dev/zero | tr '\\0' x; echo) > /iguana/progress\necho 'after a 1 MiB line' > /iguana/progress\nsleep 2\n"
            ),
            layer: None,
            disk: Disk::NewRoot,
            expect: vec![
                "progress: mountlist written",
                "xxxx [line cut at 4096 bytes]",
                "progress: after a 1 MiB line",
                "switch_root /sysroot /sbin/init",
                "HANDOVER-E2E pid=1",
                "HANDOVER-E2E rootfs=ext4",
                "HANDOVER-E2E scratch=tmpfs",
                "HANDOVER-E2E no-initramfs",
                "HANDOVER-E2E logs: ",
                "HANDOVER-E2E summary: workflow: ok",
                "HANDOVER-E2E env clean",
            ],
            memory_mib: 256,
            ctrl_alt_del_after: None,
            // The proxy must not reach the new init's environment.
            append: "rd.iguana.proxy=http://e2e:s3cret@10.0.2.2:9 rd.iguana.no_proxy=10.0.2.2",
        },
        Scenario {
            name: "bad-mountlist",
            script: format!("printf 'LABEL={LABEL} /\\n/dev/vdb\\n' > /iguana/mountlist\n"),
            layer: None,
            disk: Disk::NewRoot,
            expect: vec!["mountlist line 2: \"/dev/vdb\" has no mount point", "rebooting"],
            memory_mib: 256,
            ctrl_alt_del_after: None,
            append: "",
        },
        Scenario {
            name: "kexec",
            script: "/k/iguana kexec-load /k/vmlinuz /k/initrd 'console=ttyS0 panic=-1 handover_mark=secondkernel' && echo kexec > /iguana/kernelAction\n".into(),
            layer: Some(kexec_layer),
            disk: Disk::None,
            expect: vec!["kexec into the loaded kernel", "HANDOVER-E2E second kernel: handover_mark=secondkernel"],
            memory_mib: 768,
            ctrl_alt_del_after: None,
            append: "",
        },
        Scenario {
            name: "own-kernel",
            script: format!(
                "echo \"ctrl-alt-del=$(cat /proc/sys/kernel/ctrl-alt-del)\"\nsleep 5\necho 'alive after ctrl-alt-del'\nprintf 'LABEL={LABEL} /\\n' > /iguana/mountlist\n"
            ),
            layer: None,
            disk: Disk::OwnKernel,
            expect: vec![
                "ctrl-alt-del=0",
                "alive after ctrl-alt-del",
                "kexec into the new root's kernel /sysroot/boot/vmlinuz",
                OWN_KERNEL_CMDLINE,
                "HANDOVER-E2E no rd.iguana",
            ],
            memory_mib: 512,
            ctrl_alt_del_after: Some("ctrl-alt-del="),
            append: "",
        },
    ])
}

fn run(built: &Built, registry: &Registry, out: &Path, s: &Scenario) -> Result<()> {
    let mut image = Image::busybox_script(&s.script)?;
    if let Some(layer) = &s.layer {
        image = image.layer(layer.clone());
    }
    let reference = image.build_and_push(registry, &format!("handover-{}:latest", s.name))?;
    let port = registry.port();
    let guest_ref = reference.replace("127.0.0.1", "10.0.2.2");
    let append = format!(
        "rd.iguana.containers={guest_ref} rd.iguana.insecure_registries=10.0.2.2:{port} rd.iguana.reboot_timeout=0 {}",
        s.append
    );
    let mut config = VmConfig::new(built.kernel.vmlinuz.clone(), built.initrd.clone(), append);
    config.memory_mib = s.memory_mib;
    if s.disk != Disk::None {
        let disk = out.join(format!("handover-{}.ext4", s.name));
        match s.disk {
            Disk::OwnKernel => own_kernel_disk(&disk, built)?,
            _ => new_root_disk(&disk)?,
        }
        config.extra_args = vec!["-drive".into(), format!("file={},if=virtio,format=raw", disk.display())];
    }
    let monitor = out.join(format!("handover-{}.monitor", s.name));
    if s.ctrl_alt_del_after.is_some() {
        let _ = fs::remove_file(&monitor);
        config.extra_args.extend(["-monitor".into(), format!("unix:{},server=on,wait=off", monitor.display())]);
    }
    let mut vm = Vm::start(&config)?;
    if let Some(after) = s.ctrl_alt_del_after {
        if vm.wait_for(after, TIMEOUT).is_some() {
            press_ctrl_alt_del(&monitor)?;
        }
    }
    let outcome = vm.wait(TIMEOUT);
    let log = out.join(format!("handover-{}.log", s.name));
    fs::write(&log, outcome.transcript()).with_context(|| format!("write {}", log.display()))?;
    check(&outcome, &s.expect).with_context(|| format!("console in {}", log.display()))
}

/// Ctrl-Alt-Del on the guest's PS/2 keyboard, through QEMU's monitor.
fn press_ctrl_alt_del(socket: &Path) -> Result<()> {
    use std::io::Write;
    let mut monitor = std::os::unix::net::UnixStream::connect(socket).with_context(|| format!("connect to the QEMU monitor {}", socket.display()))?;
    monitor.write_all(b"sendkey ctrl-alt-delete\n").context("sendkey ctrl-alt-delete")?;
    // Let QEMU read the command before the connection closes.
    std::thread::sleep(Duration::from_millis(500));
    eprintln!("xtask:   pressed Ctrl-Alt-Del");
    Ok(())
}

fn check(outcome: &Outcome, expect: &[&str]) -> Result<()> {
    if outcome.kernel_panicked() {
        bail!("kernel panic");
    }
    for want in expect {
        match outcome.find(&[want]) {
            Some(line) => eprintln!("xtask:   {:>6.1}s {}", line.at.as_secs_f64(), line.text),
            None => bail!("no console line with {want:?}"),
        }
    }
    if !outcome.exited_by_itself() {
        bail!("QEMU did not exit by itself (killed at the timeout)");
    }
    Ok(())
}

/// A 64 MiB ext4 image labelled `LABEL` whose /sbin/init is `NEW_INIT`.
fn new_root_disk(image: &Path) -> Result<()> {
    let tree = image.with_extension("d");
    let _ = fs::remove_dir_all(&tree);
    for dir in ["bin", "sbin", "proc", "sys", "dev", "run", "tmp", "mnt/scratch", "var/log"] {
        fs::create_dir_all(tree.join(dir))?;
    }
    fs::copy("/bin/busybox", tree.join("bin/busybox")).context("copy /bin/busybox (busybox-static)")?;
    for applet in ["sh", "ls", "tr", "poweroff", "grep", "mount", "env", "cut"] {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(applet))?;
    }
    write_exec(&tree.join("sbin/init"), NEW_INIT)?;
    let _ = fs::remove_file(image);
    let mkfs = which("mkfs.ext4").context("mkfs.ext4 not found: apt-get install e2fsprogs")?;
    run_cmd(Command::new(mkfs).args(["-q", "-F", "-L", LABEL, "-d"]).arg(&tree).arg(image).arg("64M"))
}

/// A 64 MiB ext4 image with UUID `OWN_KERNEL_UUID` and label `LABEL`
/// whose /boot holds our kernel as `vmlinuz` and an initrd whose init is
/// `OWN_KERNEL_INIT`; no /lib/modules, so iguana kexecs into it.
fn own_kernel_disk(image: &Path, built: &Built) -> Result<()> {
    let tree = image.with_extension("d");
    let _ = fs::remove_dir_all(&tree);
    fs::create_dir_all(tree.join("boot"))?;
    fs::copy(&built.kernel.vmlinuz, tree.join("boot/vmlinuz")).context("copy the kernel")?;
    fs::write(tree.join("boot/initrd"), second_initrd(OWN_KERNEL_INIT)?)?;
    let _ = fs::remove_file(image);
    let mkfs = which("mkfs.ext4").context("mkfs.ext4 not found: apt-get install e2fsprogs")?;
    run_cmd(Command::new(mkfs).args(["-q", "-F", "-L", LABEL, "-U", OWN_KERNEL_UUID, "-d"]).arg(&tree).arg(image).arg("64M"))
}

fn write_exec(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn which(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].iter().map(|d| Path::new(d).join(name)).find(|p| p.exists())
}

/// An uncompressed newc initrd: busybox and `init` as /init.
fn second_initrd(init: &str) -> Result<Vec<u8>> {
    let mut a = Archive::default();
    for dir in ["bin", "proc", "dev"] {
        a.add(dir, Entry::Dir { mode: 0o755 });
    }
    a.add("dev/console", Entry::CharDev { mode: 0o600, major: 5, minor: 1 });
    a.file("bin/busybox", 0o755, fs::read("/bin/busybox").context("read /bin/busybox")?);
    for applet in ["sh", "mount", "grep", "cat", "poweroff"] {
        a.symlink(&format!("bin/{applet}"), "busybox");
    }
    a.file("init", 0o755, init.as_bytes().to_vec());
    Ok(a.to_bytes())
}
