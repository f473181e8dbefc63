//! `/iguana/progress`: a FIFO where containers write status lines, each
//! shown on the console as `progress: LINE`.
//!
//! PID 1 blocks in the container pump loop and stays single-threaded, so the
//! FIFO is read by a child, `iguana progress-relay PATH`, started at boot.
//! It opens the FIFO read-write, so it never sees end-of-file between two
//! writers, and it dies with every other process before the handover.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use anyhow::{bail, Context};

pub const FIFO: &str = "/iguana/progress";

/// Creates the FIFO and starts the relay; failures are only logged.
pub fn start() {
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o622);
    match nix::unistd::mkfifo(FIFO, mode) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => {
            tracing::warn!("mkfifo {FIFO}: {e}");
            return;
        }
    }
    let spawned = std::process::Command::new("/proc/self/exe")
        .args(["progress-relay", FIFO])
        .env("IGUANA_CHILD", "1")
        .stdin(std::process::Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        tracing::warn!("start iguana progress-relay: {e}");
    }
}

/// `iguana progress-relay FIFO`: copies lines to stderr, forever.
pub fn cli(args: &[String]) -> anyhow::Result<()> {
    let [path] = args else { bail!("usage: iguana progress-relay FIFO") };
    loop {
        let fifo = std::fs::OpenOptions::new().read(true).write(true).open(Path::new(path)).with_context(|| format!("open {path}"))?;
        for line in BufReader::new(fifo).split(b'\n') {
            let Ok(line) = line else { break };
            let text = format!("progress: {}\n", String::from_utf8_lossy(&line).trim_end_matches('\r'));
            // One write per line, so lines do not interleave with PID 1's.
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
    }
}

/// `iguana kexec-load KERNEL INITRD|- CMDLINE` (not in --help): loads a
/// kernel for `kernelAction kexec` with our own kexec_file_load, so a test
/// image needs no kexec-tools, only this static binary.
pub fn cli_kexec_load(args: &[String]) -> anyhow::Result<()> {
    let [kernel, initrd, cmdline] = args else { bail!("usage: iguana kexec-load KERNEL INITRD|- CMDLINE") };
    let initrd = (initrd != "-").then(|| Path::new(initrd.as_str()));
    crate::sys::kexec_file_load(Path::new(kernel), initrd, cmdline)?;
    Ok(())
}
