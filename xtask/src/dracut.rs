//! `cargo xtask dracut`: builds an initrd with Debian's dracut and our
//! `dracut-module/90iguana`, for the pinned test kernel.
//!
//! The host is left alone: dracut reads its modules from
//! `$dracutbasedir/modules.d` (dracut 059 only sets `dracutbasedir` when the
//! environment has not), so we make `target/iguana-dracut/base/`, a tree of
//! symlinks to `/usr/lib/dracut` whose `modules.d` also holds a copy of our
//! module, and point dracut at it. The module reads the binary from
//! `$IGUANA_BINARY` (the musl build in target/), `/usr/bin/iguana` otherwise.
//!
//! Only our module goes in (`-m iguana`, no 99base), so nothing else writes
//! `/init`; `--no-early-microcode` keeps the image one plain cpio.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::kernel::{self, Kernel};
use crate::{initrd, run_cmd, target_dir, tools, workspace_root};

/// Where Debian (and openSUSE) keep dracut and its modules.
const DRACUT_LIB: &str = "/usr/lib/dracut";
/// Our module's directory name, in the repository and in `modules.d`.
pub const MODULE: &str = "90iguana";

/// A dracut-built initrd, the kernel it goes with, and how it was made.
pub struct Built {
    pub kernel: Kernel,
    pub initrd: PathBuf,
    /// The dracut command line as run, for the log and the README.
    pub command: String,
}

pub fn main(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("dracut: unknown argument {arg:?}");
    }
    tools::ensure_tools()?;
    let built = build()?;
    println!("command: {}", built.command);
    println!("kernel: {}", built.kernel.vmlinuz.display());
    println!("initrd: {}", built.initrd.display());
    Ok(())
}

/// The module's source directory in the repository.
pub fn module_source() -> PathBuf {
    workspace_root().join("dracut-module").join(MODULE)
}

/// Builds iguana, fetches the kernel and runs dracut.
pub fn build() -> Result<Built> {
    let binary = initrd::build_iguana()?;
    let kernel = kernel::fetch()?;
    let out_dir = target_dir().join("iguana-dracut");
    let base = make_basedir(&out_dir.join("base"))?;
    let initrd = out_dir.join("initrd.img");
    let mut cmd = Command::new("dracut");
    cmd.args([
        "--no-hostonly",
        "--no-early-microcode",
        "--zstd",
        "-m",
        "iguana",
    ])
    .arg("--kver")
    .arg(&kernel.release)
    .arg("--kmoddir")
    .arg(&kernel.modules)
    .arg("--force")
    .arg(&initrd)
    .env("dracutbasedir", &base)
    .env("IGUANA_BINARY", &binary);
    let command = format!(
        "dracutbasedir={} IGUANA_BINARY={} {}",
        base.display(),
        binary.display(),
        shell_words(&cmd)
    );
    eprintln!("xtask: {command}");
    run_cmd(&mut cmd)?;
    eprintln!(
        "xtask: dracut initrd {} bytes",
        fs::metadata(&initrd)
            .with_context(|| format!("stat {}", initrd.display()))?
            .len()
    );
    Ok(Built {
        kernel,
        initrd,
        command,
    })
}

/// A dracut base directory: `/usr/lib/dracut` linked entry by entry, its
/// `modules.d` too, plus a copy of our module.
fn make_basedir(base: &Path) -> Result<PathBuf> {
    let lib = Path::new(DRACUT_LIB);
    if !lib.join("dracut-init.sh").is_file() {
        bail!("{DRACUT_LIB}/dracut-init.sh missing: is dracut installed?");
    }
    if base.exists() {
        fs::remove_dir_all(base).with_context(|| format!("remove {}", base.display()))?;
    }
    let modules = base.join("modules.d");
    fs::create_dir_all(&modules).with_context(|| format!("create {}", modules.display()))?;
    for entry in read_dir(lib)? {
        if entry.file_name().is_some_and(|name| name != "modules.d") {
            link_into(&entry, base)?;
        }
    }
    for entry in read_dir(&lib.join("modules.d"))? {
        if entry.file_name().is_some_and(|name| name != MODULE) {
            link_into(&entry, &modules)?;
        }
    }
    copy_module(&modules.join(MODULE))?;
    Ok(base.to_path_buf())
}

/// Copies `dracut-module/90iguana` to `dest`, scripts executable.
pub fn copy_module(dest: &Path) -> Result<()> {
    fs::create_dir_all(dest).with_context(|| format!("create {}", dest.display()))?;
    for src in read_dir(&module_source())? {
        let Some(name) = src.file_name() else {
            continue;
        };
        let dst = dest.join(name);
        fs::copy(&src, &dst)
            .with_context(|| format!("copy {} to {}", src.display(), dst.display()))?;
    }
    Ok(())
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    Ok(paths)
}

fn link_into(target: &Path, dir: &Path) -> Result<()> {
    let name = target.file_name().context("no file name")?;
    let link = dir.join(name);
    symlink(target, &link).with_context(|| format!("symlink {}", link.display()))
}

/// The program and arguments of `cmd`, space-separated (our paths have no spaces).
fn shell_words(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
