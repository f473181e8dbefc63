//! `cargo xtask`: the project's build and test tasks, one file per task
//! (matklad's cargo-xtask pattern). Every task that needs host tools calls
//! `tools::ensure_tools` first, so a fresh Debian 12 machine needs nothing
//! but Rust to run `cargo xtask ci`.

mod bench;
mod bench_fleet;
mod bench_pull;
mod boot;
mod ci;
mod cpio;
mod demo;
mod dist;
mod dracut;
mod e2e;
mod e2e_debug;
mod e2e_dracut;
mod e2e_extensions;
mod e2e_faults;
mod e2e_guards;
mod e2e_handover;
mod e2e_modules;
mod e2e_uki;
mod e2e_pxe;
mod e2e_report;
mod e2e_metal;
mod e2e_trust;
mod e2e_workflow;
mod extension;
mod fuzz;
mod initrd;
mod install;
mod kernel;
mod qemu;
mod tools;
mod uki;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  tools                      install missing host tools (apt-get, rustup)
  kernel                     fetch and unpack the pinned Debian cloud kernel
  initrd [--workflow FILE] [--compression gzip|xz|zstd] [--init FILE] [--compress-modules]
         [--trust KEY.pub]...
                             build the iguana initrd; the last two lines are
                             `kernel: PATH` and `initrd: PATH`
  extension --name NAME [--modules MOD,..] [--firmware FILE,..] [--etc DIR] --format cpio|erofs|squashfs|oci [--push REF]
                             build an extension from the test kernel's modules;
                             the last line is `extension: PATH`
  boot [--init FILE] [--memory MIB] [--no-lease] [-- KERNEL-ARGS...]
                             boot the initrd once, console live
  e2e [--only NAME,..] [--jobs N] [--verbose] [--init FILE]
                             boot QEMU guests against a local registry
                             (`--only modules`: compressed modules, hotplug,
                             blacklist and module parameters in one boot;
                             `--only faults`: the fault matrix, two boots;
                             `--only pxe`: two guests network-booted by iPXE;
                             `--only demo`: the demo's check)
  e2e-handover [--only NAME] switch_root, kexec, bad mountlist in QEMU
  e2e-metal [--only NAME,..] examples/metal-image-install/ in QEMU (also in e2e)
  demo [--memory MIB] [--init FILE] [--check]
                             install onto a virtual disk and switch_root into
                             it, console live, then the events as a timeline
                             (`--check`: quiet, fails unless it all happened)
  bench boot [--init FILE] [--runs N] [--no-memory] [--append ARGS] [--big [--memory MIB]]
                             boot-time phases, smallest RAM, sizes
                             (--big: a 1 GiB image, smallest RAM by bisection
                             from --memory, 2048 MiB, down to 1024)
  bench initrd [--init FILE] initrd size and unpack time per compression
  bench pull [--runs N] [--baseline FILE] [--big]
                             image pull: flat vs skopeo+umoci, per-layer vs podman
  bench extensions [--runs N]
                             boot time an erofs / squashfs extension adds
  bench fleet [--machines N] [--image-mb M]
                             N (20) concurrent pulls through a pull-through
                             cache, then with the cache killed at 5 s
  ci                         every check: host tests, then e2e
  dracut                     build the initrd with dracut and dracut-module/;
                             the last two lines are `kernel:` and `initrd:`
  e2e-dracut                 the dracut initrd runs the two-containers scenario
  install --destdir DIR      the dracut module and iguana under DIR/usr
  dist [--dracut] [--uki [--cmdline ARGS] [--sign KEY CERT]]
                             PXE artifacts in target/dist/; `--uki` adds
                             iguana.efi (kernel, initrd, command line in one
                             image; default command line
                             \"console=tty0 console=ttyS0,115200\"),
                             signed with sbsign by `--sign`
  fuzz [--seconds N] [--only NAME,..]
                             run each fuzz/ target N s (60), table of
                             executions and crashes (not part of ci)
";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    // depmod and friends live in sbin, which a non-login root PATH may lack.
    let path = std::env::var("PATH").unwrap_or_default();
    if !path.split(':').any(|dir| dir == "/usr/sbin") {
        std::env::set_var("PATH", format!("{path}:/usr/local/sbin:/usr/sbin:/sbin"));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => bail!("no task given\n{USAGE}"),
    };
    match task {
        "tools" => tools::ensure_tools(),
        "kernel" => kernel::fetch().map(|k| {
            println!("package: {} {}", k.package, k.version);
            println!("kernel: {}", k.vmlinuz.display());
            println!("modules: {}", k.modules.display());
        }),
        "initrd" => initrd::main(rest),
        "extension" => extension::main(rest),
        "boot" => boot::main(rest),
        "e2e" => e2e::main(rest),
        "e2e-handover" => e2e_handover::main(rest),
        "e2e-metal" => e2e_metal::main(rest),
        "demo" => demo::main(rest),
        "bench" => bench::main(rest),
        "ci" => ci::main(rest),
        "dracut" => dracut::main(rest),
        "e2e-dracut" => e2e_dracut::main(rest),
        "install" => install::main(rest),
        "dist" => dist::main(rest),
        "fuzz" => fuzz::main(rest),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown task {other:?}\n{USAGE}"),
    }
}

/// The workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` when set (as in our shared
/// build setup), otherwise `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// The cargo that runs us, so nested builds use the same toolchain.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Runs a command to completion, failing with its command line when it fails.
pub fn run_cmd(cmd: &mut std::process::Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("spawn {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs a command and returns its stdout, failing with its stderr.
pub fn cmd_output(cmd: &mut std::process::Command) -> Result<String> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("spawn {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command and returns its stdout bytes, failing with its stderr.
pub fn cmd_output_bytes(cmd: &mut std::process::Command) -> Result<Vec<u8>> {
    let out = cmd.stdin(std::process::Stdio::null()).output().with_context(|| format!("spawn {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out.stdout)
}

/// Takes the value after a `--flag`, failing when it is missing.
pub fn flag_value<'a>(args: &mut impl Iterator<Item = &'a String>, flag: &str) -> Result<&'a str> {
    args.next()
        .map(String::as_str)
        .with_context(|| format!("{flag} needs a value"))
}
