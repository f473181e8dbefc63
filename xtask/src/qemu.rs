//! QEMU runner for the VM tests, the demo and the benchmark.
//!
//! Always TCG (KVM hangs on the machines we run on), no default devices, the
//! guest's serial console on QEMU's stdout, and `-no-reboot` so a guest
//! reboot or poweroff ends QEMU. `panic=-1` on the kernel command line turns
//! a kernel panic into a reboot too, so no boot waits for its timeout; the
//! callers check the console for "Kernel panic" instead. The console is
//! read line by line on a thread, kept for assertions and echoed live when
//! asked. QEMU is killed on every exit path: on timeout and in `Drop`.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Seen on the console when the kernel panics (e.g. PID 1 exited).
pub const KERNEL_PANIC: &str = "Kernel panic";

/// How the guest's one NIC is wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// QEMU user networking: DHCP, and the host's loopback at 10.0.2.2.
    User,
    /// A NIC on a hub with no other port: link up, nothing answers DHCP.
    NoLease,
    /// User networking with router advertisements for fd00:6::/64 (router
    /// fd00:6::2) beside IPv4. `ipv4=on` is needed: QEMU turns IPv4 off
    /// when `ipv6=on` is given without it (the guest then got no lease).
    UserV6,
    /// Two NICs: first (eth0) the silent hub port of `NoLease`, then (eth1)
    /// the user network.
    SilentThenUser,
    /// Three NICs: eth0 the user network, eth1 and eth2 the two ports of a
    /// hub of their own, so frames (802.1Q tags included) go from one to
    /// the other.
    UserThenPair,
    /// QEMU user networking on a vmxnet3 NIC, a driver the base initrd
    /// does not carry (the extensions e2e).
    Vmxnet3,
}

/// Boot through UEFI firmware (OVMF) from FAT disks instead of QEMU's
/// `-kernel`/`-initrd`/`-append`, which are then ignored.
#[derive(Debug, Clone)]
pub struct Uefi {
    /// The firmware code, e.g. `/usr/share/OVMF/OVMF_CODE_4M.fd`.
    pub code: PathBuf,
    /// A writable copy of a variable store made for that code.
    pub vars: PathBuf,
    /// Secure Boot firmware: needs SMM and a flash only SMM may write.
    pub secure: bool,
    /// Directories served as read-only FAT disks (QEMU's vvfat), tried by
    /// the firmware in this order; disk `i` sits at PCI slot
    /// `Uefi::slot(i)`, which the firmware's messages name.
    pub disks: Vec<PathBuf>,
}

impl Uefi {
    /// The PCI slot of disk `i`, clear of the devices QEMU places itself.
    pub fn slot(i: usize) -> usize {
        0x10 + i
    }

    fn args(&self) -> Vec<String> {
        let machine = if self.secure { "q35,smm=on" } else { "q35" };
        let mut args = vec!["-machine".to_owned(), machine.to_owned()];
        if self.secure {
            args.extend(["-global".into(), "driver=cfi.pflash01,property=secure,value=on".into()]);
        }
        args.extend([
            "-drive".into(),
            format!("if=pflash,format=raw,unit=0,readonly=on,file={}", self.code.display()),
            "-drive".into(),
            format!("if=pflash,format=raw,unit=1,file={}", self.vars.display()),
        ]);
        for (i, dir) in self.disks.iter().enumerate() {
            args.extend([
                "-drive".into(),
                format!("if=none,id=esp{i},format=raw,readonly=on,file=fat:{}", dir.display()),
                "-device".into(),
                format!("virtio-blk-pci,drive=esp{i},bootindex={i},addr={:#x}", Uefi::slot(i)),
            ]);
        }
        args
    }
}

#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Kernel command line after `console=ttyS0 panic=-1`.
    pub append: String,
    pub memory_mib: u32,
    pub net: Net,
    /// More QEMU arguments, e.g. `-drive ...`.
    pub extra_args: Vec<String>,
    /// Echo the console live, each line after this prefix.
    pub echo: Option<String>,
    /// Keep QEMU's stdin (the guest's serial input) open for `Vm::type_text`.
    pub interactive: bool,
    /// Boot through UEFI firmware from disks (kernel, initrd and append unused).
    pub uefi: Option<Uefi>,
    /// Network boot instead of `-kernel`/`-initrd`/`-append` (which are then
    /// ignored): the NIC keeps QEMU's iPXE ROM, and the user network's DHCP
    /// hands it `bootfile` from the TFTP directory `tftp`. `net` must be `User`.
    pub pxe: Option<Pxe>,
    /// A guest reboot restarts the guest (RAM kept: a warm reboot) instead
    /// of ending QEMU; the caller then ends the VM itself.
    pub reboot: bool,
}

/// Where iPXE finds its first script (`-netdev user,tftp=,bootfile=`).
#[derive(Debug, Clone)]
pub struct Pxe {
    pub tftp: PathBuf,
    pub bootfile: String,
}

impl VmConfig {
    pub fn new(kernel: PathBuf, initrd: PathBuf, append: impl Into<String>) -> Self {
        Self {
            kernel,
            initrd,
            append: append.into(),
            memory_mib: 256,
            net: Net::User,
            extra_args: Vec::new(),
            echo: None,
            interactive: false,
            uefi: None,
            pxe: None,
            reboot: false,
        }
    }

    fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "-accel",
            "tcg",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            // Entropy, so nothing in the guest waits for the crng.
            "-device",
            "virtio-rng-pci",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if !self.reboot {
            args.push("-no-reboot".into());
        }
        args.extend(["-m".into(), self.memory_mib.to_string()]);
        if let Some(pxe) = &self.pxe {
            // The ROM (Debian's ipxe-qemu, efi-virtio.rom) does DHCP, TFTP, HTTP.
            args.extend([
                "-boot".into(),
                "order=n".into(),
                "-netdev".into(),
                format!("user,id=n0,tftp={},bootfile={}", pxe.tftp.display(), pxe.bootfile),
                "-device".into(),
                "virtio-net-pci,netdev=n0".into(),
            ]);
            args.extend(self.extra_args.iter().cloned());
            return args;
        }
        if let Some(uefi) = &self.uefi {
            args.extend(uefi.args());
        } else {
            args.extend(["-kernel".into(), self.kernel.display().to_string()]);
            args.extend(["-initrd".into(), self.initrd.display().to_string()]);
            let append = format!("console=ttyS0 panic=-1 {}", self.append);
            args.extend(["-append".into(), append.trim().to_owned()]);
        }
        // `romfile=` skips the iPXE option ROM: we never network-boot, and
        // loading it costs boot time and the ipxe-qemu package.
        match self.net {
            Net::User => args.extend([
                "-netdev".into(),
                "user,id=n0".into(),
                "-device".into(),
                "virtio-net-pci,netdev=n0,romfile=".into(),
            ]),
            Net::UserV6 => args.extend([
                "-netdev".into(),
                "user,id=n0,ipv4=on,ipv6=on,ipv6-net=fd00:6::/64".into(),
                "-device".into(),
                "virtio-net-pci,netdev=n0,romfile=".into(),
            ]),
            Net::NoLease => args.extend([
                "-netdev".into(),
                "hubport,id=n0,hubid=0".into(),
                "-device".into(),
                "virtio-net-pci,netdev=n0,romfile=".into(),
            ]),
            Net::SilentThenUser => args.extend([
                "-netdev".into(),
                "hubport,id=n0,hubid=0".into(),
                "-device".into(),
                "virtio-net-pci,netdev=n0,romfile=".into(),
                "-netdev".into(),
                "user,id=n1".into(),
                "-device".into(),
                "virtio-net-pci,netdev=n1,romfile=".into(),
            ]),
            Net::UserThenPair => args.extend([
                "-netdev".into(),
                "user,id=n0".into(),
                "-device".into(),
                // A speed and duplex, which 802.3ad needs to aggregate a port.
                "virtio-net-pci,netdev=n0,romfile=,speed=1000,duplex=full".into(),
                "-netdev".into(),
                "hubport,id=n1,hubid=1".into(),
                "-device".into(),
                "virtio-net-pci,netdev=n1,romfile=".into(),
                "-netdev".into(),
                "hubport,id=n2,hubid=1".into(),
                "-device".into(),
                "virtio-net-pci,netdev=n2,romfile=".into(),
            ]),
            Net::Vmxnet3 => args.extend([
                "-netdev".into(),
                "user,id=n0".into(),
                "-device".into(),
                "vmxnet3,netdev=n0,romfile=".into(),
            ]),
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

/// One console line, stamped with the host time since QEMU started.
#[derive(Debug, Clone)]
pub struct Line {
    pub at: Duration,
    pub text: String,
}

/// What a boot produced.
#[derive(Debug)]
pub struct Outcome {
    /// The serial console, then QEMU's own stderr lines prefixed `qemu: `.
    pub lines: Vec<Line>,
    /// QEMU's exit status, `None` when we killed it at the timeout.
    pub exited: Option<ExitStatus>,
    pub elapsed: Duration,
}

impl Outcome {
    /// True when QEMU ended by itself (guest poweroff/reboot) before the timeout.
    pub fn exited_by_itself(&self) -> bool {
        self.exited.is_some()
    }

    /// The first line containing every one of `parts`.
    pub fn find(&self, parts: &[&str]) -> Option<&Line> {
        self.lines
            .iter()
            .find(|line| parts.iter().all(|part| line.text.contains(part)))
    }

    pub fn kernel_panicked(&self) -> bool {
        self.find(&[KERNEL_PANIC]).is_some()
    }

    pub fn transcript(&self) -> String {
        self.lines
            .iter()
            .map(|line| format!("{}\n", line.text))
            .collect()
    }
}

/// A running guest; dropping it kills QEMU.
pub struct Vm {
    child: Child,
    lines: Receiver<Option<Line>>,
    started: Instant,
    echo: Option<String>,
    /// Lines received so far.
    seen: Vec<Line>,
    /// Readers (stdout, stderr) still open; each sends `None` at end of file.
    open: usize,
}

impl Vm {
    pub fn start(config: &VmConfig) -> Result<Vm> {
        let args = config.args();
        let started = Instant::now();
        let mut child = Command::new("qemu-system-x86_64")
            .args(&args)
            .stdin(if config.interactive {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn qemu-system-x86_64 {}", args.join(" ")))?;
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            forward(stdout, "", tx.clone(), started);
        }
        if let Some(stderr) = child.stderr.take() {
            forward(stderr, "qemu: ", tx, started);
        }
        Ok(Vm {
            child,
            lines: rx,
            started,
            echo: config.echo.clone(),
            seen: Vec::new(),
            open: 2,
        })
    }

    /// Reads the console until a line contains `needle`, QEMU's output
    /// ends, or `timeout` (since QEMU started) passes.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Option<Line> {
        let deadline = self.started + timeout;
        loop {
            let line = self.next_line(deadline)?;
            if line.text.contains(needle) {
                return Some(line);
            }
        }
    }

    /// Types `text` on the guest's serial console (needs `interactive`).
    pub fn type_text(&mut self, text: &str) -> Result<()> {
        use std::io::Write;
        let stdin = self
            .child
            .stdin
            .as_mut()
            .context("the VM was not started interactive")?;
        stdin
            .write_all(text.as_bytes())
            .context("write to the guest's serial console")?;
        stdin.flush().context("write to the guest's serial console")
    }

    /// The next line, or `None` at end of output or at `deadline`.
    fn next_line(&mut self, deadline: Instant) -> Option<Line> {
        while self.open > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(Some(line)) => {
                    if let Some(prefix) = &self.echo {
                        println!("{prefix}{}", line.text);
                    }
                    self.seen.push(line.clone());
                    return Some(line);
                }
                Ok(None) => self.open -= 1,
                Err(_) => return None,
            }
        }
        None
    }

    /// Kills QEMU now; what the console showed so far.
    pub fn stop(mut self) -> Outcome {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // What the readers had already passed on.
        while let Ok(Some(line)) = self.lines.try_recv() {
            self.seen.push(line);
        }
        Outcome {
            lines: std::mem::take(&mut self.seen),
            exited: None,
            elapsed: self.started.elapsed(),
        }
    }

    /// Collects the console until QEMU exits, or kills it at `timeout`.
    pub fn wait(mut self, timeout: Duration) -> Outcome {
        let deadline = self.started + timeout;
        while self.next_line(deadline).is_some() {}
        let timed_out = self.open > 0;
        let lines = std::mem::take(&mut self.seen);
        let exited = if timed_out {
            let _ = self.child.kill();
            let _ = self.child.wait();
            None
        } else {
            // Output is closed; QEMU is exiting. Give it a moment, then insist.
            wait_until(
                &mut self.child,
                deadline.max(Instant::now() + Duration::from_secs(5)),
            )
        };
        Outcome {
            lines,
            exited,
            elapsed: self.started.elapsed(),
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Sends each line of `stream` (lossy UTF-8, without `\r\n`), then `None`.
fn forward(
    stream: impl Read + Send + 'static,
    prefix: &'static str,
    tx: Sender<Option<Line>>,
    started: Instant,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&buf);
                    let text = format!("{prefix}{}", text.trim_end_matches(['\r', '\n']));
                    if tx
                        .send(Some(Line {
                            at: started.elapsed(),
                            text,
                        }))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(None);
    });
}
