//! `iguana extension inspect FILE`: what an extension carries and whether
//! it verifies, for people building one.
//!
//! FILE is a `NAME.raw` (erofs or squashfs; mounted read-only through a
//! loop device, so this needs root), a directory tree, or a newc cpio to
//! append to an initrd: each extension it carries (trees under
//! `extensions/`, `NAME.raw` under `.extra/sysext/` or `extensions/`) is
//! listed in turn, from a bounded read of the archive unpacked into a
//! temporary directory.
//!
//! `iguana extension probe` is PID 1's helper for block devices
//! (`device.rs`).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::{image, release};

/// `iguana extension inspect FILE [--os-release FILE] [--trust DIR]`.
pub fn cli(args: &[String]) -> anyhow::Result<()> {
    let usage = "usage: iguana extension inspect FILE [--os-release FILE] [--trust DIR]";
    let mut trust = PathBuf::from(crate::trust::TRUST_DIR);
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        Some("inspect") => {}
        Some("probe") => return super::device::cli(&args[1..]),
        _ => bail!("{usage}"),
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
    if is_cpio(&file) {
        return cpio(&file, &host, &keys, &trust);
    }
    one(&file, &host, &keys, &trust)
}

/// One extension: a `NAME.raw` or a tree.
fn one(file: &Path, host: &release::Fields, keys: &crate::trust::Keys, trust: &Path) -> anyhow::Result<()> {
    let verified = |result: Result<String, super::verify::Unverified>| match (keys.is_empty(), result) {
        (true, _) => format!("verified: no trust keys in {}", trust.display()),
        (false, Ok(key)) => format!("verified: yes, by {key}"),
        (false, Err(e)) => format!("verified: no: {e}"),
    };
    if file.is_dir() {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let line = verified(super::verify::tree(keys, file, super::MAX_FILES));
        return print(&name, "directory", file, host, &line);
    }
    let line = verified(super::verify::image(keys, file));
    let header = super::read_header(file).with_context(|| format!("read {}", file.display()))?;
    let format = image::detect(&header).with_context(|| format!("{}: neither erofs nor squashfs", file.display()))?;
    let name = file.file_name().map(|n| n.to_string_lossy().trim_end_matches(".raw").to_string()).unwrap_or_default();
    let dir = tempdir()?;
    if let Err(e) = super::mount_image(file, None, &dir) {
        let _ = std::fs::remove_dir(&dir);
        anyhow::bail!(crate::logging::chain(&e));
    }
    let result = print(&name, format.fstype(), &dir, host, &line);
    let _ = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir(&dir);
    result
}

/// An appended cpio is read whole, up to this size.
const CPIO_MAX: u64 = 512 << 20;

fn is_cpio(file: &Path) -> bool {
    let mut magic = [0u8; 6];
    // By name too, so a compressed one is told apart from an image.
    file.extension().is_some_and(|e| e == "cpio")
        || file.is_file() && std::fs::File::open(file).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && matches!(&magic, b"070701" | b"070702")
}

/// Each extension an appended cpio carries, in the order PID 1 merges
/// them.
fn cpio(file: &Path, host: &release::Fields, keys: &crate::trust::Keys, trust: &Path) -> anyhow::Result<()> {
    let bytes = crate::fsutil::read_bounded(file, CPIO_MAX)?;
    let entries = super::newc::parse(&bytes, super::MAX_FILES).with_context(|| format!("read {}", file.display()))?;
    // Not under tempdir(): an image found in it is mounted there.
    let dir = own_dir("iguana-inspect-cpio")?;
    let result = unpack(&entries, &dir).and_then(|()| {
        let places: Vec<PathBuf> = super::APPENDED.iter().map(|p| dir.join(p.trim_start_matches('/'))).collect();
        let found = super::appended(places.iter().map(PathBuf::as_path));
        println!("cpio: {} ({} entries, {} extensions)", file.display(), entries.len(), found.len());
        let mut failed = 0;
        for c in &found {
            let path = match &c.kind {
                super::Kind::Dir(p) | super::Kind::Image(p) => p,
                super::Kind::Device(..) | super::Kind::Oci { .. } => continue,
            };
            println!();
            println!("extension: /{}", path.strip_prefix(&dir).unwrap_or(path).display());
            if let Err(e) = one(path, host, keys, trust) {
                println!("error: {e:#}");
                failed += 1;
            }
        }
        if failed > 0 {
            bail!("{failed} of {} extensions could not be inspected", found.len());
        }
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Writes the entries under the extension places into `dir`: directories
/// and files first, symlinks last (so no file is written through one),
/// device nodes not at all.
fn unpack(entries: &[super::newc::Entry<'_>], dir: &Path) -> anyhow::Result<()> {
    use super::newc::Kind;
    let wanted = |name: &str| super::newc::safe_name(name) && super::APPENDED.iter().any(|p| name.starts_with(&format!("{}/", p.trim_start_matches('/'))));
    for pass in [false, true] {
        for e in entries.iter().filter(|e| wanted(&e.name) && (e.kind == Kind::Symlink) == pass) {
            let path = dir.join(&e.name);
            // Never through a symlink an earlier entry made (this runs as
            // root): the entry is left out, as a verified tree refuses it.
            if let Some(link) = symlink_on_the_way(dir, &e.name) {
                println!("note: /{} not unpacked: /{link} is a symlink", e.name);
                continue;
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
            }
            // A later archive's entry replaces an earlier one, as the kernel does.
            if e.kind != Kind::Dir {
                let _ = std::fs::remove_file(&path);
            }
            match e.kind {
                Kind::Dir => std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?,
                Kind::File => {
                    use std::io::Write;
                    use std::os::unix::fs::OpenOptionsExt;
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                        .open(&path)
                        .with_context(|| format!("create {}", path.display()))?;
                    f.write_all(e.data).with_context(|| format!("write {}", path.display()))?;
                }
                Kind::Symlink => {
                    let target = String::from_utf8_lossy(e.data).into_owned();
                    std::os::unix::fs::symlink(&target, &path).with_context(|| format!("symlink {}", path.display()))?;
                }
                Kind::Other => println!("note: /{} is a device node or fifo, not unpacked (a verified tree refuses it)", e.name),
            }
        }
    }
    Ok(())
}

/// The first ancestor of `name` (relative, already `safe_name`) under `dir`
/// that is a symlink, if any.
fn symlink_on_the_way(dir: &Path, name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
    let mut path = dir.to_path_buf();
    for (i, part) in parts.iter().enumerate().take(parts.len().saturating_sub(1)) {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if !meta.is_dir() => return Some(parts[..=i].join("/")),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

fn tempdir() -> anyhow::Result<PathBuf> {
    own_dir("iguana-inspect")
}

/// A new directory under $TMPDIR, 0700, that did not exist before (one that
/// is already there is someone else's: never used, never removed).
fn own_dir(prefix: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    let pid = std::process::id();
    let mut last = None;
    for n in 0..16u32 {
        let dir = base.join(format!("{prefix}-{pid}-{n}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e).with_context(|| format!("create {}", dir.display())),
        }
    }
    Err(last.map_or_else(|| anyhow::anyhow!("no attempt"), anyhow::Error::from)).with_context(|| format!("create a new {prefix}-{pid}-N in {}", base.display()))
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
        if let Ok(target) = std::fs::read_link(root.join(&file)) {
            println!("symlink: {file} -> {}", target.display());
            continue;
        }
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
    // What PID 1 would say (its modules checked against the release
    // directory they sit in).
    let c = super::Candidate { name: name.to_string(), shown: name.to_string(), kind: super::Kind::Dir(root.to_owned()) };
    match super::check(&c, root, host, &running, verified.starts_with("verified: yes")) {
        Ok(_) => println!("boot: admitted"),
        Err(e) => println!("boot: refused: {}", crate::logging::chain(&e)),
    }
    Ok(())
}
