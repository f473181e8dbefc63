//! `cargo xtask install --destdir DIR`: the files a distribution package
//! ships, under `DIR`: the dracut module in
//! `DIR/usr/lib/dracut/modules.d/90iguana` and the static binary as
//! `DIR/usr/bin/iguana`, where the module looks for it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::{dracut, flag_value, initrd, tools};

pub fn main(args: &[String]) -> Result<()> {
    let mut destdir: Option<PathBuf> = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--destdir" => destdir = Some(flag_value(&mut args, arg)?.into()),
            other => bail!("install: unknown argument {other:?}"),
        }
    }
    let destdir = destdir.context("install: --destdir DIR is required")?;
    tools::ensure_tools()?;
    let binary = initrd::build_iguana()?;
    install(&destdir, &binary)?;
    println!("module: {}", module_dir(&destdir).display());
    println!("binary: {}", destdir.join("usr/bin/iguana").display());
    Ok(())
}

fn module_dir(destdir: &Path) -> PathBuf {
    destdir
        .join("usr/lib/dracut/modules.d")
        .join(dracut::MODULE)
}

/// Copies the module and `binary` into `destdir`, modes 0755.
pub fn install(destdir: &Path, binary: &Path) -> Result<()> {
    let module = module_dir(destdir);
    if module.exists() {
        fs::remove_dir_all(&module).with_context(|| format!("remove {}", module.display()))?;
    }
    dracut::copy_module(&module)?;
    let bin_dir = destdir.join("usr/bin");
    fs::create_dir_all(&bin_dir).with_context(|| format!("create {}", bin_dir.display()))?;
    let dest = bin_dir.join("iguana");
    fs::copy(binary, &dest)
        .with_context(|| format!("copy {} to {}", binary.display(), dest.display()))?;
    for path in [dest, module.join("module-setup.sh")] {
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    Ok(())
}
