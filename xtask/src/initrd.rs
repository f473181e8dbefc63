//! `cargo xtask initrd`: builds the static `iguana` binary and packs it with
//! the kernel modules, busybox and the CA bundle into a compressed newc
//! cpio the Debian cloud kernel boots.
//!
//! Layout of the initrd:
//! - `/init`: iguana (PID 1).
//! - `/bin/busybox` (static, from busybox-static) and one symlink per applet
//!   at the path `busybox --list-full` names (`/bin/sh`, `/sbin/modprobe`,
//!   `/usr/bin/wget`, ...), made at build time so the debug shell and the
//!   kernel's `/sbin/modprobe` helper work without a `busybox --install`
//!   (all but `/sbin/init` and `/linuxrc`).
//! - `/lib/modules/<release>/`: `MODULES` and their dependencies, plain
//!   `.ko` (the whole cpio is compressed anyway), indexed by `depmod`. With
//!   `--compress-modules` they are `.ko.xz` and `.ko.zst` instead, one or
//!   the other in turn, as distributions ship them, to test that iguana
//!   loads both.
//! - `/etc/ssl/certs/ca-certificates.crt`: the host's CA bundle.
//! - `/usr/lib/os-release`: `ID=iguana`, `VERSION_ID=`, `IGUANA_LEVEL=`,
//!   what extensions are checked against.
//! - `/etc/iguana/control.yaml`: the `--workflow` file, when given.
//! - `/etc/iguana/trust/NAME.pub`: each `--trust NAME.pub` (PEM public
//!   keys): with one, iguana runs only what they signed.
//! - `/dev/console` (5:1), so the kernel opens a console for init, and the
//!   empty mount points `DIRS`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::cpio::{Archive, Entry};
use crate::kernel::{self, Kernel};
use crate::{cargo, flag_value, run_cmd, target_dir, tools};

/// Modules to ship; each comes with what modules.dep says it needs. Names
/// that are built into the kernel or absent from it are reported and skipped.
pub const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",
    "virtio_console",
    "virtio_rng",
    "overlay",
    "ext4",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
    "af_packet",
    "e1000",
    "e1000e",
    // bond= and vlan= (net-up loads them when the command line asks).
    "bonding",
    "8021q",
    // Extensions: NAME.raw images on loop devices (src/extension/).
    "loop",
    "erofs",
    "squashfs",
    // pstore backends, loaded by PID 1 when the command line places
    // ramoops (`ramoops.mem_address=`) or the machine booted by UEFI.
    "ramoops",
    "efi_pstore",
];

/// Empty directories PID 1 mounts on or writes to.
const DIRS: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("iguana", 0o755),
    ("etc", 0o755),
    ("etc/iguana", 0o755),
    ("sysroot", 0o755),
    ("bin", 0o755),
    ("sbin", 0o755),
];

const BUSYBOX: &str = "/bin/busybox";
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
    Zstd,
}

impl std::str::FromStr for Compression {
    type Err = anyhow::Error;

    fn from_str(name: &str) -> Result<Self> {
        match name {
            "gzip" => Ok(Self::Gzip),
            "xz" => Ok(Self::Xz),
            "zstd" => Ok(Self::Zstd),
            other => bail!("unknown compression {other:?} (gzip, xz, zstd)"),
        }
    }
}

impl Compression {
    pub const ALL: [Compression; 3] = [Compression::Gzip, Compression::Xz, Compression::Zstd];

    fn extension(self) -> &'static str {
        match self {
            Self::Gzip => "gz",
            Self::Xz => "xz",
            Self::Zstd => "zst",
        }
    }

    /// The compressor and the kernel config option that must be `y` for
    /// the kernel to unpack its output.
    fn command(self) -> (Command, &'static str) {
        match self {
            Self::Gzip => (cmd("gzip", &["-9", "-n", "-c"]), "CONFIG_RD_GZIP"),
            // The kernel's xz decoder only knows CRC32 (or no) checks.
            Self::Xz => (
                cmd("xz", &["-9", "--check=crc32", "-T1", "-c"]),
                "CONFIG_RD_XZ",
            ),
            Self::Zstd => (cmd("zstd", &["-19", "-q", "-c"]), "CONFIG_RD_ZSTD"),
        }
    }
}

fn cmd(program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd
}

/// What goes into the initrd.
#[derive(Debug, Clone)]
pub struct Options {
    pub workflow: Option<PathBuf>,
    pub compression: Compression,
    /// Use this file as `/init` instead of building iguana (plumbing tests).
    pub init: Option<PathBuf>,
    /// Ship the modules compressed, alternately with xz and zstd.
    pub compress_modules: bool,
    /// Public keys for `/etc/iguana/trust/` (`--trust KEY.pub`, repeatable).
    pub trust: Vec<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        // `cargo xtask bench initrd` with an 8.9 MB iguana: gzip -9 5.5 MB,
        // xz -9 4.2 MB, zstd -19 4.5 MB; host seconds to /init under TCG
        // 4.3-4.5, 5.6-6.1 and 3.9-4.7. The kernel unpacks xz about 1.5 s
        // slower; zstd is as quick as gzip and 19% smaller.
        Self {
            workflow: None,
            compression: Compression::Zstd,
            init: None,
            compress_modules: false,
            trust: Vec::new(),
        }
    }
}

/// A built initrd and the kernel it goes with.
pub struct Built {
    pub kernel: Kernel,
    pub initrd: PathBuf,
    /// `/init` as packed (the iguana binary unless `--init` was given).
    pub init: PathBuf,
}

pub fn main(args: &[String]) -> Result<()> {
    let mut opts = Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--workflow" => opts.workflow = Some(flag_value(&mut args, arg)?.into()),
            "--compression" => opts.compression = flag_value(&mut args, arg)?.parse()?,
            "--init" => opts.init = Some(flag_value(&mut args, arg)?.into()),
            "--compress-modules" => opts.compress_modules = true,
            "--trust" => opts.trust.push(flag_value(&mut args, arg)?.into()),
            other => bail!("initrd: unknown argument {other:?}"),
        }
    }
    tools::ensure_tools()?;
    let built = build(&opts)?;
    println!("kernel: {}", built.kernel.vmlinuz.display());
    println!("initrd: {}", built.initrd.display());
    Ok(())
}

/// Builds iguana (unless `opts.init`), fetches the kernel and writes the initrd.
pub fn build(opts: &Options) -> Result<Built> {
    let init = match &opts.init {
        Some(init) => init.clone(),
        None => build_iguana()?,
    };
    let kernel = kernel::fetch()?;
    eprintln!(
        "xtask: kernel package {} {} ({})",
        kernel.package, kernel.version, kernel.release
    );
    let (mut command, config_key) = opts.compression.command();
    check_kernel_config(&kernel, config_key)?;

    let out_dir = target_dir().join("iguana-initrd");
    fs::create_dir_all(&out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    let mut archive = Archive::default();
    for (dir, mode) in DIRS {
        archive.add(dir, Entry::Dir { mode: *mode });
    }
    archive.add(
        "dev/console",
        Entry::CharDev {
            mode: 0o600,
            major: 5,
            minor: 1,
        },
    );
    archive.file("init", 0o755, read(&init)?);
    add_busybox(&mut archive)?;
    archive.file(CA_BUNDLE, 0o644, read(Path::new(CA_BUNDLE))?);
    // What an extension's release file is checked against.
    archive.file("usr/lib/os-release", 0o644, crate::extension::os_release().into_bytes());
    if let Some(workflow) = &opts.workflow {
        archive.file("etc/iguana/control.yaml", 0o644, read(workflow)?);
    }
    add_trust(&mut archive, &opts.trust)?;
    add_modules(&mut archive, &kernel, &out_dir.join("modules"), opts.compress_modules)?;

    let raw = archive.to_bytes();
    // Its own name, so a later default build does not overwrite it.
    let stem = match (opts.compress_modules, opts.trust.is_empty()) {
        (true, _) => "initrd-kmodz",
        (false, false) => "initrd-trust",
        (false, true) => "initrd",
    };
    let initrd = out_dir.join(format!("{stem}.cpio.{}", opts.compression.extension()));
    compress(&mut command, &raw, &initrd)?;
    let size = fs::metadata(&initrd)?.len();
    eprintln!(
        "xtask: initrd {:?}: {} bytes compressed, {} bytes cpio, /init {} bytes",
        opts.compression,
        size,
        raw.len(),
        fs::metadata(&init)?.len()
    );
    Ok(Built {
        kernel,
        initrd,
        init,
    })
}

/// `cargo build --release --target x86_64-unknown-linux-musl -p iguana`.
pub fn build_iguana() -> Result<PathBuf> {
    run_cmd(
        Command::new(cargo())
            .args([
                "build",
                "--release",
                "--target",
                tools::MUSL_TARGET,
                "-p",
                "iguana",
            ])
            .current_dir(crate::workspace_root()),
    )?;
    Ok(target_dir().join(tools::MUSL_TARGET).join("release/iguana"))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("read {}", path.display()))
}

fn check_kernel_config(kernel: &Kernel, key: &str) -> Result<()> {
    let config = fs::read_to_string(&kernel.config)
        .with_context(|| format!("read {}", kernel.config.display()))?;
    if !config.lines().any(|line| line == format!("{key}=y")) {
        bail!(
            "{} has no {key}=y: the kernel could not unpack this initrd",
            kernel.config.display()
        );
    }
    Ok(())
}

/// `/etc/iguana/trust/NAME.pub` for each key file. Only a PEM public key
/// named `*.pub` goes in (iguana reads no other name there, and fails its
/// boot on a file that is not a key: better to fail here).
fn add_trust(archive: &mut Archive, keys: &[PathBuf]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    archive.add("etc/iguana/trust", Entry::Dir { mode: 0o755 });
    for key in keys {
        let name = key
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.ends_with(".pub") && !n.starts_with('.'))
            .with_context(|| format!("--trust {}: the key file's name must end in .pub", key.display()))?;
        let pem = read(key)?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN PUBLIC KEY-----") {
            bail!("--trust {}: not a PEM public key (-----BEGIN PUBLIC KEY-----)", key.display());
        }
        let path = format!("etc/iguana/trust/{name}");
        if archive.contains(&path) {
            bail!("--trust {}: a key named {name} is already in the initrd", key.display());
        }
        archive.file(&path, 0o644, pem);
    }
    eprintln!("xtask: {} trust keys in /etc/iguana/trust", keys.len());
    Ok(())
}

fn add_busybox(archive: &mut Archive) -> Result<()> {
    archive.file(BUSYBOX, 0o755, read(Path::new(BUSYBOX))?);
    let list = crate::cmd_output(Command::new(BUSYBOX).arg("--list-full"))?;
    for applet in list.lines().map(str::trim) {
        // `linuxrc` and `init` would be fallback inits should /init fail to
        // start; better the kernel's plain "No working init found" then.
        if applet.is_empty()
            || applet == "linuxrc"
            || applet == "sbin/init"
            || archive.contains(applet)
        {
            continue;
        }
        archive.symlink(applet, BUSYBOX);
    }
    Ok(())
}

fn compress(command: &mut Command, raw: &[u8], out: &Path) -> Result<()> {
    let file = fs::File::create(out).with_context(|| format!("create {}", out.display()))?;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .with_context(|| format!("spawn {command:?}"))?;
    child
        .stdin
        .take()
        .context("compressor stdin")?
        .write_all(raw)
        .with_context(|| format!("write to {command:?}"))?;
    let status = child.wait()?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

/// Module name as the kernel spells it: file name without `.ko*`, `-` as `_`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Parses modules.dep into name -> (path, dependency paths).
fn parse_modules_dep(text: &str) -> BTreeMap<String, (String, Vec<String>)> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(path, deps)| {
            let deps = deps.split_whitespace().map(str::to_owned).collect();
            (module_name(path), (path.to_owned(), deps))
        })
        .collect()
}

/// The module files (paths relative to lib/modules/<release>) needed for
/// `wanted`, and a note for each wanted name that needs no file.
pub(crate) fn resolve_modules(dep: &str, builtin: &str, wanted: &[&str]) -> (BTreeSet<String>, Vec<String>) {
    let modules = parse_modules_dep(dep);
    let by_path: BTreeMap<&str, &Vec<String>> = modules
        .values()
        .map(|(path, deps)| (path.as_str(), deps))
        .collect();
    let builtin: BTreeSet<String> = builtin.lines().map(module_name).collect();
    let mut files = BTreeSet::new();
    let mut notes = Vec::new();
    for name in wanted {
        let Some((path, _)) = modules.get(*name) else {
            if builtin.contains(*name) {
                notes.push(format!("{name}: built in"));
            } else {
                notes.push(format!("{name}: not in this kernel"));
            }
            continue;
        };
        let mut todo = vec![path.clone()];
        while let Some(path) = todo.pop() {
            if files.insert(path.clone()) {
                todo.extend(
                    by_path
                        .get(path.as_str())
                        .into_iter()
                        .flat_map(|deps| deps.iter().cloned()),
                );
            }
        }
    }
    (files, notes)
}

fn add_modules(archive: &mut Archive, kernel: &Kernel, staging: &Path, compressed: bool) -> Result<()> {
    let read_text = |name: &str| {
        let path = kernel.modules.join(name);
        fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
    };
    let (files, notes) = resolve_modules(
        &read_text("modules.dep")?,
        &read_text("modules.builtin")?,
        MODULES,
    );
    eprintln!(
        "xtask: modules: {} files; {}",
        files.len(),
        notes.join(", ")
    );

    let _ = fs::remove_dir_all(staging);
    let dest = staging.join("lib/modules").join(&kernel.release);
    for (i, file) in files.iter().enumerate() {
        let src = kernel.modules.join(file);
        let plain = file
            .rsplit_once(".ko")
            .map_or(file.clone(), |(stem, _)| format!("{stem}.ko"));
        let dst = dest.join(&plain);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent)?;
        }
        decompress_module(&src, &dst)?;
        if compressed {
            compress_module(&dst, i % 2 == 0)?;
        }
    }
    for name in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        let src = kernel.modules.join(name);
        if src.exists() {
            fs::copy(&src, dest.join(name)).with_context(|| format!("copy {}", src.display()))?;
        }
    }
    run_cmd(
        Command::new("depmod")
            .arg("-b")
            .arg(staging)
            .arg(&kernel.release),
    )?;
    add_tree(archive, staging, staging)
}

/// Replaces `module.ko` by `module.ko.xz` or `module.ko.zst`, with the
/// options the kernel's own `Makefile.modinst` uses (the kernel's xz
/// decoder only knows CRC32 checks); depmod then indexes the new names.
fn compress_module(module: &Path, xz: bool) -> Result<()> {
    let mut command = if xz {
        cmd("xz", &["-q", "-f", "--check=crc32", "--lzma2=dict=1MiB", "-T1"])
    } else {
        cmd("zstd", &["-q", "-f", "--rm", "-T1"])
    };
    run_cmd(command.arg(module))
}

pub(crate) fn decompress_module(src: &Path, dst: &Path) -> Result<()> {
    let name = src.to_string_lossy();
    let tool = if name.ends_with(".ko.xz") {
        Some("xz")
    } else if name.ends_with(".ko.zst") {
        Some("zstd")
    } else if name.ends_with(".ko.gz") {
        Some("gzip")
    } else {
        None
    };
    match tool {
        None => fs::copy(src, dst)
            .map(drop)
            .with_context(|| format!("copy {}", src.display())),
        Some(tool) => {
            let out = fs::File::create(dst).with_context(|| format!("create {}", dst.display()))?;
            let status = Command::new(tool)
                .args(["-d", "-c"])
                .arg(src)
                .stdout(out)
                .status()?;
            if !status.success() {
                bail!("{tool} -d {}: {status}", src.display());
            }
            Ok(())
        }
    }
}

/// Adds every file under `dir` at its path relative to `root`.
fn add_tree(archive: &mut Archive, root: &Path, dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
        if path.is_dir() {
            archive.dir(&rel);
            add_tree(archive, root, &path)?;
        } else {
            archive.file(&rel, 0o644, read(&path)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko:
kernel/drivers/char/hw_random/virtio-rng.ko.xz: kernel/drivers/virtio/virtio.ko
kernel/fs/fat/vfat.ko.zst: kernel/fs/fat/fat.ko.zst
kernel/fs/fat/fat.ko.zst:
";
    const BUILTIN: &str = "kernel/fs/ext4/ext4.ko\nkernel/net/packet/af_packet.ko\n";

    fn check(wanted: &[&str], files: &[&str], notes: &[&str]) {
        let (got_files, got_notes) = resolve_modules(DEP, BUILTIN, wanted);
        assert_eq!(
            got_files.iter().map(String::as_str).collect::<Vec<_>>(),
            files
        );
        assert_eq!(got_notes, notes);
    }

    #[test]
    fn compressed_modules_round_trip() {
        let dir = std::env::temp_dir().join(format!("iguana-xtask-kmodz-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let data: Vec<u8> = (0..50_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for (xz, suffix) in [(true, "xz"), (false, "zst")] {
            let module = dir.join(format!("m-{suffix}.ko"));
            fs::write(&module, &data).unwrap();
            compress_module(&module, xz).unwrap();
            assert!(!module.exists(), "{} was kept", module.display());
            let packed = dir.join(format!("m-{suffix}.ko.{suffix}"));
            let back = dir.join(format!("m-{suffix}.back"));
            decompress_module(&packed, &back).unwrap();
            assert!(fs::read(&back).unwrap() == data, "{suffix} round trip");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn resolves_dependencies_builtins_and_absentees() {
        check(
            &["virtio_pci"],
            &[
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_pci.ko",
                "kernel/drivers/virtio/virtio_ring.ko",
            ],
            &[],
        );
        check(
            &["virtio_rng", "vfat"],
            &[
                "kernel/drivers/char/hw_random/virtio-rng.ko.xz",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/fs/fat/fat.ko.zst",
                "kernel/fs/fat/vfat.ko.zst",
            ],
            &[],
        );
        check(
            &["ext4", "af_packet", "e1000"],
            &[],
            &[
                "ext4: built in",
                "af_packet: built in",
                "e1000: not in this kernel",
            ],
        );
    }

    #[test]
    fn module_names() {
        for (path, name) in [
            ("kernel/a/virtio-rng.ko", "virtio_rng"),
            ("kernel/a/overlay.ko.xz", "overlay"),
            ("x.ko.zst", "x"),
        ] {
            assert_eq!(module_name(path), name);
        }
    }
}
