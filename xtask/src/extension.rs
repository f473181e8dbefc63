//! `cargo xtask extension`: builds a sysext-style extension from the test
//! kernel's modules (with their dependencies), firmware files and an etc/
//! tree, with its release file filled in. The last line of output is
//! `extension: PATH`.
//!
//! Formats: `cpio` (the tree under `extensions/NAME/`, to be appended to
//! the initrd as a boot loader does), `erofs` and `squashfs` (`NAME.raw`,
//! the systemd-sysext / Flatcar bakery form), and `oci` (`NAME.oci/`, an
//! OCI image layout whose one layer is the tree, tag `latest`, for
//! `rd.iguana.extensions=oci:REF` once pushed: `skopeo copy oci:PATH
//! docker://REF`, or `--push REF`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cpio::Archive;
use crate::{flag_value, kernel, run_cmd, target_dir};

/// The extension level of this initrd (`IGUANA_LEVEL=` in its os-release):
/// raised when what an extension may rely on changes.
pub const IGUANA_LEVEL: &str = "1";

/// `/usr/lib/os-release` of the initrd.
pub fn os_release() -> String {
    format!(
        "NAME=iguana\nID=iguana\nPRETTY_NAME=\"iguana initrd\"\nVERSION_ID={}\nIGUANA_LEVEL={IGUANA_LEVEL}\n",
        iguana_version()
    )
}

/// iguana's version, from the workspace's Cargo.toml `[package]`.
fn iguana_version() -> String {
    let manifest = fs::read_to_string(crate::workspace_root().join("Cargo.toml")).unwrap_or_default();
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \"").and_then(|v| v.strip_suffix('"')))
        .unwrap_or("0")
        .to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Cpio,
    Erofs,
    Squashfs,
    Oci,
}

impl std::str::FromStr for Format {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpio" => Ok(Self::Cpio),
            "erofs" => Ok(Self::Erofs),
            "squashfs" => Ok(Self::Squashfs),
            "oci" => Ok(Self::Oci),
            other => bail!("unknown format {other:?} (cpio, erofs, squashfs, oci)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub name: String,
    pub modules: Vec<String>,
    pub firmware: Vec<PathBuf>,
    pub etc: Option<PathBuf>,
    pub format: Format,
    /// The release file's `ID=` (tests build refused extensions with it).
    pub id: String,
    /// Sign with this PEM private key (openssl): `NAME.raw.sig` beside an
    /// image, `extensions/NAME.SHA256SUMS` + `.sig` inside a cpio.
    pub sign_key: Option<PathBuf>,
    pub out: Option<PathBuf>,
    /// `--format oci`: also push the layout there (`skopeo copy`, no TLS
    /// verification: for test registries).
    pub push: Option<String>,
}

impl Options {
    pub fn new(name: &str, format: Format) -> Self {
        Options { name: name.into(), modules: Vec::new(), firmware: Vec::new(), etc: None, format, id: "iguana".into(), sign_key: None, out: None, push: None }
    }
}

pub fn main(args: &[String]) -> Result<()> {
    let mut opts = Options::new("", Format::Cpio);
    let mut format = None;
    let mut it = args.iter();
    let list = |v: &str| v.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect::<Vec<_>>();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--name" => opts.name = flag_value(&mut it, arg)?.into(),
            "--modules" => opts.modules = list(flag_value(&mut it, arg)?),
            "--firmware" => opts.firmware = list(flag_value(&mut it, arg)?).into_iter().map(PathBuf::from).collect(),
            "--etc" => opts.etc = Some(flag_value(&mut it, arg)?.into()),
            "--format" => format = Some(flag_value(&mut it, arg)?.parse()?),
            "--id" => opts.id = flag_value(&mut it, arg)?.into(),
            "--out" => opts.out = Some(flag_value(&mut it, arg)?.into()),
            "--sign-key" => opts.sign_key = Some(flag_value(&mut it, arg)?.into()),
            "--push" => opts.push = Some(flag_value(&mut it, arg)?.into()),
            other => bail!("extension: unknown argument {other:?}"),
        }
    }
    opts.format = format.context("extension: --format cpio|erofs|squashfs|oci is required")?;
    if opts.push.is_some() && opts.format != Format::Oci {
        bail!("extension: --push is for --format oci");
    }
    if opts.sign_key.is_some() && opts.format == Format::Oci {
        bail!("extension: --sign-key is for cpio/erofs/squashfs; sign a pushed oci image with cosign sign");
    }
    crate::tools::ensure_tools()?;
    let path = build(&opts)?;
    println!("extension: {}", path.display());
    Ok(())
}

/// Whether `name` is a name iguana accepts (its workflow name rule).
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Builds the extension; returns its path.
pub fn build(opts: &Options) -> Result<PathBuf> {
    if !valid_name(&opts.name) {
        bail!("extension: --name {:?}: 1-128 characters of a-z A-Z 0-9 _ . - starting with a letter, digit or _", opts.name);
    }
    let out_dir = target_dir().join("iguana-extensions");
    let staging = out_dir.join(format!("{}.tree", opts.name));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)?;
    let release_dir = staging.join("usr/lib/extension-release.d");
    fs::create_dir_all(&release_dir)?;
    fs::write(
        release_dir.join(format!("extension-release.{}", opts.name)),
        format!("ID={}\nIGUANA_LEVEL={IGUANA_LEVEL}\n", opts.id),
    )?;
    if !opts.modules.is_empty() {
        add_modules(&staging, &opts.modules)?;
    }
    for file in &opts.firmware {
        let dest = staging.join("usr/lib/firmware").join(file.file_name().context("--firmware: a file name")?);
        fs::create_dir_all(dest.parent().unwrap_or(&staging))?;
        fs::copy(file, &dest).with_context(|| format!("copy {}", file.display()))?;
    }
    if let Some(etc) = &opts.etc {
        run_cmd(Command::new("cp").arg("-a").arg(format!("{}/.", etc.display())).arg(staging.join("etc")))?;
    }
    let out = match opts.format {
        Format::Cpio => opts.out.clone().unwrap_or_else(|| out_dir.join(format!("{}.cpio", opts.name))),
        Format::Oci => opts.out.clone().unwrap_or_else(|| out_dir.join(format!("{}.oci", opts.name))),
        _ => opts.out.clone().unwrap_or_else(|| out_dir.join(format!("{}.raw", opts.name))),
    };
    let _ = fs::remove_file(&out);
    let _ = fs::remove_dir_all(&out);
    match opts.format {
        Format::Cpio => {
            let mut archive = Archive::default();
            archive.dir("extensions");
            let root = format!("extensions/{}", opts.name);
            archive.dir(&root);
            add_tree(&mut archive, &staging, &staging, &root)?;
            if let Some(key) = &opts.sign_key {
                let sums = sha256sums(&staging)?;
                let sums_file = out_dir.join(format!("{}.SHA256SUMS", opts.name));
                fs::write(&sums_file, &sums)?;
                archive.file(&format!("{root}.SHA256SUMS.sig"), 0o644, sign(key, &sums_file)?.into_bytes());
                archive.file(&format!("{root}.SHA256SUMS"), 0o644, sums.into_bytes());
            }
            fs::write(&out, archive.to_bytes()).with_context(|| format!("write {}", out.display()))?;
        }
        Format::Erofs => run_cmd(Command::new("mkfs.erofs").args(["--quiet", "--all-root", "-T0", "-zlz4hc"]).arg(&out).arg(&staging))?,
        Format::Squashfs => run_cmd(
            Command::new("mksquashfs")
                .arg(&staging)
                .arg(&out)
                .args(["-all-root", "-noappend", "-quiet", "-no-progress", "-comp", "zstd", "-mkfs-time", "0", "-all-time", "0"]),
        )?,
        Format::Oci => oci_layout(&staging, &out, opts.push.as_deref())?,
    }
    if let (Some(key), Format::Erofs | Format::Squashfs) = (&opts.sign_key, opts.format) {
        let sig = PathBuf::from(format!("{}.sig", out.display()));
        fs::write(&sig, sign(key, &out)?)?;
    }
    Ok(out)
}

/// An OCI image layout at `out` (tag `latest`) whose one layer is the tree
/// at `staging`, owned by root with zero times (as `--all-root -T0` for
/// erofs); umoci writes blob, config, manifest and index. Then, with
/// `push`, `skopeo copy` to that registry reference.
fn oci_layout(staging: &Path, out: &Path, push: Option<&str>) -> Result<()> {
    let layer = out.with_extension("layer.tar");
    run_cmd(
        Command::new("tar")
            .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner", "--mtime=@0", "--format=pax", "--pax-option=delete=atime,delete=ctime", "-C"])
            .arg(staging)
            .arg("-cf")
            .arg(&layer)
            .arg("."),
    )?;
    let image = format!("{}:latest", out.display());
    run_cmd(Command::new("umoci").args(["init", "--layout"]).arg(out))?;
    run_cmd(Command::new("umoci").args(["new", "--image", &image]))?;
    run_cmd(Command::new("umoci").args(["raw", "add-layer", "--image", &image]).arg(&layer))?;
    fs::remove_file(&layer)?;
    if let Some(reference) = push {
        run_cmd(Command::new("skopeo").args(["copy", "--quiet", "--dest-tls-verify=false", &format!("oci:{image}"), &format!("docker://{reference}")]))?;
        eprintln!("xtask: extension pushed to {reference}");
    }
    Ok(())
}

/// `openssl dgst -sha256 -sign KEY FILE`, base64 (what `cosign
/// sign-blob --key` writes): a signer that is not iguana's verifier.
pub fn sign(key: &Path, file: &Path) -> Result<String> {
    let der = crate::cmd_output_bytes(Command::new("openssl").args(["dgst", "-sha256", "-sign"]).arg(key).arg(file))?;
    let der_file = PathBuf::from(format!("{}.der", file.display()));
    fs::write(&der_file, der)?;
    let b64 = crate::cmd_output(Command::new("openssl").args(["base64", "-A", "-in"]).arg(&der_file))?;
    fs::remove_file(&der_file)?;
    Ok(b64.trim().to_string())
}

/// `sha256sum` lines of every file under `root`, relative paths, sorted.
fn sha256sums(root: &Path) -> Result<String> {
    let out = crate::cmd_output(Command::new("sh").arg("-c").arg("find . -type f | sed 's|^./||' | LC_ALL=C sort | xargs -r sha256sum").current_dir(root))?;
    Ok(out)
}

/// The named modules and their dependencies from the test kernel, at
/// `usr/lib/modules/<release>/`, with their own modules.alias/modules.dep.
fn add_modules(staging: &Path, names: &[String]) -> Result<()> {
    let kernel = kernel::fetch()?;
    let read = |name: &str| fs::read_to_string(kernel.modules.join(name)).with_context(|| format!("read {name}"));
    let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
    let (files, notes) = crate::initrd::resolve_modules(&read("modules.dep")?, &read("modules.builtin")?, &wanted);
    if let Some(missing) = notes.iter().find(|n| n.ends_with("not in this kernel")) {
        bail!("extension: {missing}");
    }
    eprintln!("xtask: extension modules: {} files {}", files.len(), notes.join(", "));
    // depmod -b wants BASE/lib/modules/<release>; moved to usr/ after.
    let depmod_base = staging.join(".depmod");
    let dest = depmod_base.join("lib/modules").join(&kernel.release);
    for file in &files {
        let plain = file.rsplit_once(".ko").map_or(file.clone(), |(stem, _)| format!("{stem}.ko"));
        let dst = dest.join(&plain);
        fs::create_dir_all(dst.parent().unwrap_or(&dest))?;
        crate::initrd::decompress_module(&kernel.modules.join(file), &dst)?;
    }
    for name in ["modules.builtin", "modules.builtin.modinfo", "modules.order"] {
        let _ = fs::copy(kernel.modules.join(name), dest.join(name));
    }
    run_cmd(Command::new("depmod").arg("-b").arg(&depmod_base).arg(&kernel.release))?;
    // iguana reads the text indexes only.
    for entry in fs::read_dir(&dest)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if name.starts_with("modules.") && name != "modules.alias" && name != "modules.dep" {
            fs::remove_file(&path)?;
        }
    }
    let target = staging.join("usr/lib/modules");
    fs::create_dir_all(&target)?;
    fs::rename(&dest, target.join(&kernel.release))?;
    fs::remove_dir_all(&depmod_base)?;
    Ok(())
}

/// Adds every entry under `dir` below `prefix`, keeping modes.
fn add_tree(archive: &mut Archive, root: &Path, dir: &Path, prefix: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries: Vec<_> = fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let rel = format!("{prefix}/{}", path.strip_prefix(root)?.to_string_lossy());
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            archive.dir(&rel);
            add_tree(archive, root, &path, prefix)?;
        } else if meta.file_type().is_symlink() {
            archive.symlink(&rel, &fs::read_link(&path)?.to_string_lossy());
        } else {
            archive.file(&rel, meta.permissions().mode() & 0o7777, fs::read(&path)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_names() {
        assert_eq!("erofs".parse::<Format>().unwrap(), Format::Erofs);
        assert_eq!("oci".parse::<Format>().unwrap(), Format::Oci);
        assert!("tar".parse::<Format>().unwrap_err().to_string().contains("(cpio, erofs, squashfs, oci)"));
        for (name, ok) in [("pvscsi", true), ("site-1.2", true), ("", false), (".", false), ("..", false), ("a/b", false)] {
            assert_eq!(valid_name(name), ok, "{name}");
        }
    }

    #[test]
    fn os_release_has_the_fields_extensions_are_checked_against() {
        let text = os_release();
        assert!(text.contains("\nID=iguana\n"), "{text}");
        assert!(text.contains(&format!("IGUANA_LEVEL={IGUANA_LEVEL}\n")), "{text}");
        assert!(text.contains("VERSION_ID="), "{text}");
    }
}
