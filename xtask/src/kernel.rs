//! The test kernel: Debian's cloud kernel, fetched with `apt-get download`
//! and unpacked with `dpkg-deb -x` into `target/iguana-kernel/`.
//!
//! `linux-image-cloud-amd64` is a metapackage; we resolve it to the real
//! `linux-image-<abi>-cloud-amd64` package once and pin that package and
//! version in `target/iguana-kernel/PINNED`. Later runs reuse the unpacked
//! tree without asking apt, so every test run boots the same kernel until
//! the cache is deleted. The upstream package ships no `modules.dep` (its
//! postinst makes it), so we run `depmod` on the unpacked tree.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cmd_output, run_cmd, target_dir, tools};

const METAPACKAGE: &str = "linux-image-cloud-amd64";

/// An unpacked kernel package.
pub struct Kernel {
    /// Debian package name, e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub package: String,
    /// Debian package version, e.g. `6.1.192-2`.
    pub version: String,
    /// Kernel release (`uname -r`), e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `.../lib/modules/<release>`, with `modules.dep`.
    pub modules: PathBuf,
    /// `.../boot/config-<release>`.
    pub config: PathBuf,
}

/// Returns the cached kernel, fetching and unpacking it on first use.
pub fn fetch() -> Result<Kernel> {
    let dir = target_dir().join("iguana-kernel");
    let pin_file = dir.join("PINNED");
    if let Ok(pin) = fs::read_to_string(&pin_file) {
        if let Some((package, version)) = parse_pin(&pin) {
            if let Ok(kernel) = unpacked(&dir, package, version) {
                eprintln!("xtask: kernel {package} {version} (cached)");
                return Ok(kernel);
            }
        }
    }

    let (package, version) = match resolve() {
        Ok(found) => found,
        // A fresh machine has no apt lists yet.
        Err(_) => {
            tools::apt_get_update()?;
            resolve()?
        }
    };
    eprintln!("xtask: fetching kernel {package} {version}");
    let download = dir.join("download");
    let root = dir.join("root");
    let _ = fs::remove_dir_all(&download);
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&download).with_context(|| format!("create {}", download.display()))?;
    // apt drops to the `_apt` user to download, which cannot write into
    // target/; we are root anyway, so skip the sandbox (and its warning).
    run_cmd(
        Command::new("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root"])
            .arg(format!("{package}={version}"))
            .current_dir(&download),
    )?;
    let deb = fs::read_dir(&download)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .with_context(|| format!("no .deb in {}", download.display()))?;
    run_cmd(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;

    let release = release_of(&root)?;
    run_cmd(Command::new("depmod").arg("-b").arg(&root).arg(&release))?;
    fs::write(&pin_file, format!("{package} {version}\n"))
        .with_context(|| format!("write {}", pin_file.display()))?;
    unpacked(&dir, &package, &version)
}

/// The real kernel package behind the metapackage, and its candidate version.
fn resolve() -> Result<(String, String)> {
    let depends = cmd_output(Command::new("apt-cache").args(["depends", METAPACKAGE]))?;
    let package = depends
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|dep| dep.starts_with("linux-image-") && dep != &METAPACKAGE)
        .with_context(|| format!("apt-cache depends {METAPACKAGE}: no linux-image dependency"))?
        .to_owned();
    let show = cmd_output(Command::new("apt-cache").args(["show", "--no-all-versions", &package]))?;
    let version = show
        .lines()
        .find_map(|line| line.strip_prefix("Version:"))
        .map(|v| v.trim().to_owned())
        .with_context(|| format!("apt-cache show {package}: no Version"))?;
    Ok((package, version))
}

fn parse_pin(pin: &str) -> Option<(&str, &str)> {
    let mut words = pin.split_whitespace();
    Some((words.next()?, words.next()?))
}

/// The single `lib/modules/<release>` directory of an unpacked package.
fn release_of(root: &Path) -> Result<String> {
    let modules = root.join("lib/modules");
    let mut releases: Vec<String> = fs::read_dir(&modules)
        .with_context(|| format!("read {}", modules.display()))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    match releases.len() {
        1 => Ok(releases.remove(0)),
        _ => bail!(
            "{}: expected one kernel release, found {releases:?}",
            modules.display()
        ),
    }
}

fn unpacked(dir: &Path, package: &str, version: &str) -> Result<Kernel> {
    let root = dir.join("root");
    let release = release_of(&root)?;
    let kernel = Kernel {
        package: package.to_owned(),
        version: version.to_owned(),
        vmlinuz: root.join(format!("boot/vmlinuz-{release}")),
        modules: root.join("lib/modules").join(&release),
        config: root.join(format!("boot/config-{release}")),
        release,
    };
    for path in [
        &kernel.vmlinuz,
        &kernel.config,
        &kernel.modules.join("modules.dep"),
    ] {
        if !path.exists() {
            bail!("{} missing", path.display());
        }
    }
    Ok(kernel)
}
