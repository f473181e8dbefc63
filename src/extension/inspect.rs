//! `iguana extension inspect FILE`: what an extension carries and whether
//! it verifies, for people building one.
//!
//! FILE is a `NAME.raw` (erofs or squashfs; mounted read-only through a
//! loop device, so this needs root) or a directory tree.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::{image, release};

/// `iguana extension inspect FILE [--os-release FILE] [--trust DIR]`.
pub fn cli(args: &[String]) -> anyhow::Result<()> {
    let usage = "usage: iguana extension inspect FILE [--os-release FILE] [--trust DIR]";
    let mut trust = PathBuf::from(crate::trust::TRUST_DIR);
    let mut it = args.iter();
    if it.next().map(String::as_str) != Some("inspect") {
        bail!("{usage}");
    }
    let mut file = None;
    let mut os_release = PathBuf::from(super::OS_RELEASE);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--os-release" => os_release = it.next().map(PathBuf::from).context(usage)?,
            "--trust" => trust = it.next().map(PathBuf::from).context(usage)?,
            other if file.is_none() && !other.starts_with("--") => file = Some(PathBuf::from(other)),
            _ => bail!("{usage}"),
        }
    }
    let file = file.context(usage)?;
    let host = std::fs::read_to_string(&os_release).map(|t| release::parse(&t)).unwrap_or_default();
    let keys = crate::trust::Keys::load_dir(&trust)?;
    let verified = |result: Result<String, super::verify::Unverified>| match (keys.is_empty(), result) {
        (true, _) => format!("verified: no trust keys in {}", trust.display()),
        (false, Ok(key)) => format!("verified: yes, by {key}"),
        (false, Err(e)) => format!("verified: no: {e}"),
    };
    if file.is_dir() {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let line = verified(super::verify::tree(&keys, &file, super::MAX_FILES));
        return print(&name, "directory", &file, &host, &line);
    }
    let line = verified(super::verify::image(&keys, &file));
    let header = super::read_header(&file).with_context(|| format!("read {}", file.display()))?;
    let format = image::detect(&header).with_context(|| format!("{}: neither erofs nor squashfs", file.display()))?;
    let name = file.file_name().map(|n| n.to_string_lossy().trim_end_matches(".raw").to_string()).unwrap_or_default();
    let dir = tempdir()?;
    super::mount_image(&file, true, &dir).map_err(|e| anyhow::anyhow!(crate::logging::chain(&e)))?;
    let result = print(&name, format.fstype(), &dir, &host, &line);
    let _ = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir(&dir);
    result
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("iguana-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

fn print(name: &str, format: &str, root: &Path, host: &release::Fields, verified: &str) -> anyhow::Result<()> {
    println!("name: {name}");
    println!("format: {format}");
    let release_file = [release::release_path(name), release::confext_release_path(name)].into_iter().map(|r| root.join(r)).find(|p| p.is_file());
    match release_file {
        Some(path) => {
            let bytes = crate::fsutil::read_bounded(&path, super::RELEASE_MAX)?;
            let fields = release::parse(&String::from_utf8_lossy(&bytes));
            for (k, v) in &fields {
                println!("release: {k}={v}");
            }
            match release::check(host, &fields) {
                Ok(()) => println!("fits: yes"),
                Err(e) => println!("fits: no: {e}"),
            }
        }
        None => println!("release: missing {}", release::release_path(name)),
    }
    let running = std::fs::read_dir(root.join("usr/lib/modules"))
        .ok()
        .and_then(|mut e| e.next())
        .and_then(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .unwrap_or_default();
    for file in super::list_files(root, &running).map_err(|e| anyhow::anyhow!("{e}"))? {
        let kind = if file.starts_with("usr/lib/modules/") {
            "module"
        } else if file.starts_with("usr/lib/firmware/") {
            "firmware"
        } else if file.starts_with("etc/") {
            "etc"
        } else {
            "file"
        };
        println!("{kind}: {file}");
    }
    println!("{verified}");
    Ok(())
}
