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
    // `bench pull`: the peer of the boot's per-layer pull, and peak RSS.
    Tool { probe: Probe::Command("podman"), package: "podman" },
    Tool { probe: Probe::File("/usr/bin/time"), package: "time" },
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
    // The signed-workflow tests sign with openssl and write cosign blob
    // bundles with Python's cryptography (testkit::BlobKey).
    Tool { probe: Probe::Package, package: "python3-cryptography" },
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
    // `dist --uki` and the uki-secure-boot e2e: systemd-stub, objcopy to
    // assemble, sbsign/sbverify, and OVMF (its Secure Boot build too).
    Tool { probe: Probe::File(crate::uki::STUB), package: "systemd-boot-efi" },
    Tool { probe: Probe::Command("objcopy"), package: "binutils" },
    Tool { probe: Probe::Command("sbsign"), package: "sbsigntool" },
    Tool { probe: Probe::File(crate::e2e_uki::OVMF_CODE_SECBOOT), package: "ovmf" },
    // `cargo xtask extension --format erofs|squashfs`.
    Tool { probe: Probe::Command("mkfs.erofs"), package: "erofs-utils" },
    Tool { probe: Probe::Command("mksquashfs"), package: "squashfs-tools" },
    // The e2e `pxe` scenario network-boots with QEMU's iPXE ROM for virtio-net.
    Tool { probe: Probe::File("/usr/lib/ipxe/qemu/efi-virtio.rom"), package: "ipxe-qemu" },
    // pip installs the PIP_TOOLS with it.
    Tool { probe: Probe::Command("pip3"), package: "python3-pip" },
];

/// Host tools that Debian 12 does not package: `(command, PyPI package)`,
/// installed with pip when the command is missing.
const PIP_TOOLS: &[(&str, &str)] = &[
    // The uki-secure-boot e2e enrolls its test keys into OVMF's variables.
    ("virt-fw-vars", "virt-firmware"),
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
    ensure_pip_tools()?;
    ensure_musl_target()
}

/// `pip3 install` for the missing PIP_TOOLS. Debian 12's pip refuses to
/// touch the system's Python without PIP_BREAK_SYSTEM_PACKAGES (PEP 668);
/// CI is a throwaway root machine, where that is what we want.
fn ensure_pip_tools() -> Result<()> {
    let missing: Vec<&str> = PIP_TOOLS
        .iter()
        .filter(|(command, _)| !find_command(command))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: pip3 install {}", missing.join(" "));
    run_cmd(
        Command::new("pip3")
            .arg("install")
            .args(&missing)
            .env("PIP_BREAK_SYSTEM_PACKAGES", "1")
            .stdin(Stdio::null()),
    )?;
    let still: Vec<&str> = PIP_TOOLS
        .iter()
        .filter(|(command, _)| !find_command(command))
        .map(|(command, _)| *command)
        .collect();
    if !still.is_empty() {
        bail!("still missing after pip3 install: {}", still.join(" "));
    }
    Ok(())
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
