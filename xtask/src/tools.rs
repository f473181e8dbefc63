//! Host tools: checks that everything the other tasks run is installed, and
//! installs what is missing with `apt-get` (we run as root on Debian 12 in
//! CI) and `rustup`. Quiet and idempotent when everything is there.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::{cmd_output, run_cmd};

/// The musl target the initrd's static binary is built for.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// How to tell a tool is present.
enum Probe {
    /// An executable of this name on `$PATH`.
    Command(&'static str),
    /// A file at this path.
    File(&'static str),
    /// The Debian package is installed; used where a path alone is ambiguous
    /// (`/bin/busybox` also comes from the dynamically linked `busybox`).
    Package,
}

struct Tool {
    probe: Probe,
    package: &'static str,
}

/// Everything the xtask runs on the host, with the Debian package providing it.
#[rustfmt::skip]
const TOOLS: &[Tool] = &[
    Tool { probe: Probe::Command("qemu-system-x86_64"), package: "qemu-system-x86" },
    Tool { probe: Probe::Command("docker-registry"), package: "docker-registry" },
    Tool { probe: Probe::Command("umoci"), package: "umoci" },
    Tool { probe: Probe::Command("skopeo"), package: "skopeo" },
    // The initrd and the test images copy its static binary from /bin/busybox.
    Tool { probe: Probe::Package, package: "busybox-static" },
    Tool { probe: Probe::Command("depmod"), package: "kmod" },
    Tool { probe: Probe::Command("musl-gcc"), package: "musl-tools" },
    // Initrd compression, `--compress-modules`, and the unit tests of
    // iguana's module decompression (src/modules/load.rs) use all three.
    Tool { probe: Probe::Command("zstd"), package: "zstd" },
    Tool { probe: Probe::Command("xz"), package: "xz-utils" },
    Tool { probe: Probe::Command("gzip"), package: "gzip" },
    Tool { probe: Probe::Command("dpkg-deb"), package: "dpkg" },
    // The handover scenarios build their ext4 disk with `mkfs.ext4 -d`.
    Tool { probe: Probe::Command("mkfs.ext4"), package: "e2fsprogs" },
    // The TLS registry test makes its self-signed certificate with it.
    Tool { probe: Probe::Command("openssl"), package: "openssl" },
    // The IPv6 netns test serves router advertisements and DHCPv6 with it.
    Tool { probe: Probe::Command("dnsmasq"), package: "dnsmasq-base" },
    // The metal-image-install e2e: the OS tarball is lz4-compressed; the
    // installer image carries Debian's lz4, sfdisk and mke2fs with their
    // libraries (`ldd`, from libc-bin, is always there).
    Tool { probe: Probe::Command("lz4"), package: "lz4" },
    Tool { probe: Probe::Command("sfdisk"), package: "fdisk" },
    // `cargo xtask dracut`: the dracut-module/ initrd.
    Tool { probe: Probe::Command("dracut"), package: "dracut" },
    Tool { probe: Probe::File("/etc/ssl/certs/ca-certificates.crt"), package: "ca-certificates" },
    // tests/trust_image.rs: the independent cosign signer (testkit/scripts/cosign_sign.py).
    Tool { probe: Probe::Package, package: "python3-cryptography" },
];

/// Installs the missing host tools and the musl Rust target.
pub fn ensure_tools() -> Result<()> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|tool| !present(tool))
        .map(|tool| tool.package)
        .collect();
    if !missing.is_empty() {
        eprintln!("xtask: installing {}", missing.join(" "));
        apt_get_update()?;
        run_cmd(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null()),
        )?;
        let still: Vec<&str> = TOOLS
            .iter()
            .filter(|tool| !present(tool))
            .map(|tool| tool.package)
            .collect();
        if !still.is_empty() {
            bail!("still missing after apt-get install: {}", still.join(" "));
        }
    }
    ensure_musl_target()
}

/// `apt-get update`, needed once on a fresh machine before installs or
/// `apt-cache` look-ups find anything.
pub fn apt_get_update() -> Result<()> {
    run_cmd(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null()),
    )
}

fn present(tool: &Tool) -> bool {
    match tool.probe {
        Probe::Command(name) => find_command(name),
        Probe::File(path) => Path::new(path).is_file(),
        Probe::Package => package_installed(tool.package),
    }
}

fn find_command(name: &str) -> bool {
    // main() has put the sbin directories on PATH.
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .any(|dir| Path::new(dir).join(name).is_file());
    found
}

fn package_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).ends_with("install ok installed"))
        .unwrap_or(false)
}

fn ensure_musl_target() -> Result<()> {
    let installed = cmd_output(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("rustup is needed to add the musl target")?;
    if installed.lines().any(|line| line.trim() == MUSL_TARGET) {
        return Ok(());
    }
    eprintln!("xtask: rustup target add {MUSL_TARGET}");
    run_cmd(Command::new("rustup").args(["target", "add", MUSL_TARGET]))
}
