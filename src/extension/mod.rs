//! Phase "extensions": drivers, firmware and site settings added to the
//! initrd without rebuilding it, in systemd's sysext/confext format.
//!
//! An extension is a tree with `usr/lib/extension-release.d/
//! extension-release.NAME` and any of `usr/lib/modules/<release>/`,
//! `usr/lib/firmware/` and `etc/`. It arrives as a directory or a
//! `NAME.raw` (erofs or squashfs) in an appended cpio (`/extensions/`,
//! `/.extra/sysext/`), a block device (`/dev/...`, `LABEL=`), or a `NAME.raw`
//! fetched over HTTP after network-up (`rd.iguana.extensions=`). Each is
//! checked (release file against `/usr/lib/os-release`, module release and
//! each module's `vermagic=`, trust) and merged with overlayfs, read-only
//! lower layers over `/usr`, `/lib/modules/<release>` and `/etc` (see
//! `plan.rs`): nothing is copied. The appended ones are merged before
//! coldplug (they may bring the NIC driver); block devices after it (their
//! disk's driver is a module coldplug loads), waited for by a helper child
//! (`device.rs`); the fetched ones after network-up. Both later merges are
//! followed by another coldplug for the modules they brought; all come
//! before the workflow is chosen.
//!
//! A refused extension is one line naming it and why; the boot goes on
//! without it unless `rd.iguana.extensions_required=1`.

pub mod args;
pub mod device;
pub mod image;
pub mod inspect;
pub mod oci;
pub mod modinfo;
pub mod newc;
pub mod plan;
pub mod release;
pub mod verify;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::MsFlags;

use self::args::{Args, Source};
use self::plan::{Layer, Upper};
use self::release::Fields;
use crate::logging::chain;

/// Where an appended cpio puts extensions: systemd-stub's place first.
pub const APPENDED: &[&str] = &["/.extra/sysext", "/extensions"];
/// Mount points, fetched images, indexes and upper layers (on /run's tmpfs).
const WORK: &str = "/run/iguana/extensions";
const OS_RELEASE: &str = "/usr/lib/os-release";
const TRUST_DIR: &str = "/etc/iguana/trust";
const RELEASE_MAX: u64 = 64 << 10;
const INDEX_MAX: u64 = 16 << 20;
/// Files listed per extension for the conflict report; more is refused.
const MAX_FILES: usize = 100_000;
/// A fetched `NAME.raw` larger than this is refused (the fetch child holds
/// it in memory; the test VMs have 256 MiB).
pub const FETCH_MAX: u64 = 64 << 20;
/// How long one fetch may take, all retries included.
const FETCH_DEADLINE: Duration = Duration::from_secs(300);

/// Why one extension is left out.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("its name {0:?} {rule}", rule = crate::workflow::name::RULE)]
    Name(String),
    #[error("an extension of that name is already merged")]
    Duplicate,
    #[error("open {path}")]
    Open { path: PathBuf, #[source] source: std::io::Error },
    #[error("{path}: neither erofs nor squashfs")]
    Format { path: PathBuf },
    #[error("loop device for {path}")]
    Loop { path: PathBuf, #[source] source: crate::sys::Error },
    #[error("mount {device} ({fstype}) on {target}: corrupt or unreadable image")]
    Mount { device: PathBuf, fstype: &'static str, target: PathBuf, #[source] source: nix::Error },
    #[error("no {0}")]
    NoRelease(String),
    #[error("read {path}")]
    Read { path: PathBuf, #[source] source: crate::fsutil::Error },
    #[error(transparent)]
    Release(#[from] release::Mismatch),
    #[error("it carries modules for kernel {found}, this is {running}")]
    Kernel { found: String, running: String },
    #[error("module {module} was built for kernel {found} (vermagic), this is {running}")]
    Vermagic { module: String, found: String, running: String },
    #[error("module {module}")]
    Module { module: String, #[source] source: modinfo::Error },
    #[error("{path} is a symlink (an extension's etc/ and usr/ are directories)")]
    Symlink { path: String },
    #[error("it carries more than {MAX_FILES} files")]
    TooManyFiles,
    #[error("it carries etc/iguana/trust but is not itself verified by a trusted key")]
    UnverifiedTrust,
    #[error("not verified")]
    Unverified(#[from] verify::Unverified),
    #[error("trust keys")]
    Keys(#[source] std::sync::Arc<crate::trust::keys::Error>),
    #[error("fetch: {0}")]
    Fetch(String),
    #[error("pull: {0}")]
    Pull(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Device(String),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("extension {name} refused (rd.iguana.extensions_required=1)")]
    Required { name: String, #[source] source: Refusal },
    #[error("merge extensions (rd.iguana.extensions_required=1): mount overlay on {target}")]
    Merge { target: PathBuf, #[source] source: nix::Error },
}

/// What has been merged so far; the second merge (fetched extensions)
/// stacks on the first.
#[derive(Debug, Default)]
pub struct Merged {
    stage: u32,
    names: BTreeSet<String>,
    files: Vec<(String, Vec<String>)>,
}

/// One extension before it is checked.
#[derive(Debug, Clone)]
struct Candidate {
    name: String,
    /// How log lines name where it came from.
    shown: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// A tree unpacked by the kernel from an appended cpio.
    Dir(PathBuf),
    /// A `NAME.raw` file: loop device, then mount.
    Image(PathBuf),
    /// A block device whose filesystem the probe child found.
    Device(PathBuf, image::Format),
    /// An `oci:` image's rootfs, pulled (and, with keys, verified) by the
    /// pull child; `signer` is the key the child reported.
    Oci { root: PathBuf, signer: Option<String> },
}

/// The running kernel's release (`uname -r`).
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Merges the extensions of an appended cpio. Before coldplug: they may
/// bring the NIC or storage driver it is to load.
pub fn merge_local(args: &Args, policy: &crate::modules::Policy, merged: &mut Merged) -> Result<(), Error> {
    merge(appended(APPENDED.iter().map(Path::new)), args.required, policy, merged)
}

/// Merges the block devices of `rd.iguana.extensions` (`/dev/...`,
/// `LABEL=`). After coldplug, which loads their disk's driver; each is
/// waited for up to `rd.iguana.extensions_wait` by the probe child. Then
/// coldplugs again for the drivers they brought. Returns whether any was
/// merged.
pub fn merge_devices(args: &Args, policy: &crate::modules::Policy, merged: &mut Merged) -> Result<bool, Error> {
    let mut candidates = Vec::new();
    for source in args.sources.iter().filter(|s| matches!(s, Source::Device(_) | Source::Label(_))) {
        let started = Instant::now();
        match device::find(source, args.wait) {
            Ok((path, format)) => {
                tracing::info!("extension {}: found {} ({}) after {:.2}s", source.shown(), path.display(), format.fstype(), started.elapsed().as_secs_f64());
                // The name is the release file's; found once it is mounted.
                candidates.push(Candidate { name: String::new(), shown: source.shown(), kind: Kind::Device(path, format) });
            }
            Err(why) => refuse(&source.shown(), Refusal::Device(why), args.required)?,
        }
    }
    let before = merged.files.len();
    merge(candidates, args.required, policy, merged)?;
    if merged.files.len() == before {
        return Ok(false);
    }
    // A scan of /sys costs most of a second under TCG: only for modules.
    if merged.files[before..].iter().any(|(_, files)| files.iter().any(|f| f.starts_with("usr/lib/modules/"))) {
        coldplug_again(policy);
    }
    Ok(true)
}

/// Loads the drivers for devices that extensions merged since coldplug
/// brought modules for (hotplug is already listening for new devices).
fn coldplug_again(policy: &crate::modules::Policy) {
    if let Ok(dir) = crate::modules::kernel_modules_dir() {
        match crate::modules::coldplug(&dir, Path::new("/sys"), policy, &[], &mut || None, &mut |_: &[String]| {}) {
            Ok(report) => tracing::info!("extensions: coldplug {report}"),
            Err(e) => tracing::warn!("extensions: coldplug: {}", chain(&e)),
        }
    }
}

/// Fetches and merges `rd.iguana.extensions` URLs and `oci:` images (with
/// `registry`'s settings), after network-up, in command-line order; then
/// coldplugs again for the drivers they brought. Returns whether any was
/// merged.
pub fn merge_network(args: &Args, policy: &crate::modules::Policy, merged: &mut Merged, registry: &oci::Registry<'_>) -> Result<bool, Error> {
    let mut candidates = Vec::new();
    for (index, source) in args.sources.iter().filter(|s| s.needs_network()).enumerate() {
        let got = match source {
            Source::Oci(reference) => oci_candidate(index, reference, registry),
            other => fetch(other),
        };
        match got {
            Ok(c) => candidates.push(c),
            Err(refusal) => refuse(&source.shown(), refusal, args.required)?,
        }
    }
    if candidates.is_empty() {
        return Ok(false);
    }
    let before = merged.names.len();
    merge(candidates, args.required, policy, merged)?;
    if merged.names.len() == before {
        return Ok(false);
    }
    coldplug_again(policy);
    Ok(true)
}

fn refuse(name: &str, refusal: Refusal, required: bool) -> Result<(), Error> {
    if required {
        return Err(Error::Required { name: name.to_string(), source: refusal });
    }
    tracing::warn!("extension {name} refused: {}", chain(&refusal));
    Ok(())
}

/// Directories and `*.raw` files in the appended-cpio places, by name.
fn appended<'a>(dirs: impl Iterator<Item = &'a Path>) -> Vec<Candidate> {
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(_) => continue,
            };
            let (name, kind) = if meta.is_dir() {
                (file.clone(), Kind::Dir(path.clone()))
            } else if let Some(stem) = file.strip_suffix(".raw").filter(|_| meta.is_file()) {
                (stem.to_string(), Kind::Image(path.clone()))
            } else {
                // Signatures and checksums sit beside the images.
                continue;
            };
            out.push(Candidate { name, shown: path.display().to_string(), kind });
        }
    }
    out
}

/// `oci:REF`: pulled into WORK by the pull child. The name is the release
/// file's, found when it is checked.
fn oci_candidate(index: usize, reference: &str, registry: &oci::Registry<'_>) -> Result<Candidate, Refusal> {
    let started = Instant::now();
    let dir = oci::dir(Path::new(WORK), index, reference);
    let (root, signer) = oci::pull(reference, &dir, registry).map_err(Refusal::Pull)?;
    tracing::info!("extension oci:{reference}: pulled in {:.2}s", started.elapsed().as_secs_f64());
    Ok(Candidate { name: String::new(), shown: format!("oci:{reference}"), kind: Kind::Oci { root, signer } })
}

/// A refused `oci:` tree goes: its mounts, then its files (RAM on /run).
fn discard(c: &Candidate) {
    let Kind::Oci { root, .. } = &c.kind else { return };
    if let Some(dir) = root.parent().filter(|d| d.starts_with(Path::new(WORK).join(".oci"))) {
        oci::discard(dir);
    }
}

fn read_header(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut header = Vec::with_capacity(image::HEADER);
    File::open(path)?.take(image::HEADER as u64).read_to_end(&mut header)?;
    Ok(header)
}

/// `iguana fetch` in a child, bounded in size and time, into WORK; with
/// trust keys also `URL.sig`, else `URL.sigstore.json`, else `SHA256SUMS`
/// and `SHA256SUMS.sig` from the same directory (absent ones are the
/// verifier's to refuse).
fn fetch(source: &Source) -> Result<Candidate, Refusal> {
    let url = match source {
        Source::Url(url) => url,
        Source::Oci(_) => {
            return Err(Refusal::Unsupported("oci: extensions are not supported yet (the pull child does not unpack them for PID 1)".into()))
        }
        other => return Err(Refusal::Unsupported(format!("{} is not a network source", other.shown()))),
    };
    let name = name_from_url(url).ok_or_else(|| Refusal::Unsupported("the URL's last path component is not NAME.raw".into()))?;
    let dir = Path::new(WORK).join(".fetched").join(&name);
    let _ = std::fs::create_dir_all(&dir);
    let out = dir.join(format!("{name}.raw"));
    let started = Instant::now();
    fetch_file(url, &out, FETCH_MAX).map_err(Refusal::Fetch)?;
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    tracing::info!("extension {name}: fetched {} ({size} bytes) in {:.2}s", source.shown(), started.elapsed().as_secs_f64());
    if crate::trust::Keys::load_dir(Path::new(TRUST_DIR)).is_ok_and(|k| !k.is_empty()) {
        let (base, query) = url.split_once('?').map_or((url.as_str(), None), |(b, q)| (b, Some(q)));
        let with_query = |u: String| query.map_or(u.clone(), |q| format!("{u}?{q}"));
        let sig = with_query(format!("{base}.sig"));
        let bundle = with_query(format!("{base}.sigstore.json"));
        if fetch_file(&sig, &dir.join(format!("{name}.raw.sig")), SIG_MAX).is_err()
            && fetch_file(&bundle, &dir.join(format!("{name}.raw.sigstore.json")), SIG_MAX).is_err()
        {
            let parent = base.rsplit_once('/').map_or(base, |(p, _)| p);
            for file in ["SHA256SUMS", "SHA256SUMS.sig"] {
                let _ = fetch_file(&with_query(format!("{parent}/{file}")), &dir.join(file), SIG_MAX);
            }
        }
    }
    Ok(Candidate { name, shown: source.shown(), kind: Kind::Image(out) })
}

/// A signature or SHA256SUMS fetched is at most this large.
const SIG_MAX: u64 = 1 << 20;

fn fetch_file(url: &str, out: &Path, max: u64) -> Result<(), String> {
    let args: Vec<String> =
        vec!["fetch".into(), url.to_string(), "--out".into(), out.display().to_string(), "--max".into(), max.to_string()];
    crate::child::run(&args, FETCH_DEADLINE)
}

/// `NAME` of `http://host/dir/NAME.raw?query`, if it is a valid name.
pub fn name_from_url(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next()?;
    let last = path.rsplit('/').next()?;
    let name = last.strip_suffix(".raw")?;
    crate::workflow::name::valid(name).then(|| name.to_string())
}

/// Checks and mounts each candidate, then merges those admitted.
fn merge(candidates: Vec<Candidate>, required: bool, policy: &crate::modules::Policy, merged: &mut Merged) -> Result<(), Error> {
    if candidates.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    let running = kernel_release();
    let modules_dir = Path::new("/lib/modules").join(&running);
    // overlayfs and the image filesystems are modules in the test kernel;
    // nothing asks for them by modalias.
    if let Err(e) = crate::modules::load_named(&modules_dir, &["overlay", "loop", "erofs", "squashfs"], policy) {
        tracing::warn!("extensions: {}", chain(&e));
    }
    let host = match crate::fsutil::read_bounded(Path::new(OS_RELEASE), RELEASE_MAX) {
        Ok(bytes) => release::parse(&String::from_utf8_lossy(&bytes)),
        Err(e) => {
            tracing::warn!("extensions: {}", chain(&e));
            Fields::new()
        }
    };
    // Loaded for each merge: a verified extension of the first may have
    // added keys for the second.
    let keys = crate::trust::Keys::load_dir(Path::new(TRUST_DIR)).map_err(std::sync::Arc::new);
    let mut layers = Vec::new();
    let mut new_files = Vec::new();
    for candidate in candidates {
        let shown = if candidate.name.is_empty() { candidate.shown.clone() } else { candidate.name.clone() };
        let admitted = match &keys {
            Ok(keys) => admit(&candidate, &host, &running, keys, merged),
            Err(e) => Err(Refusal::Keys(e.clone())),
        };
        match admitted {
            Ok((layer, files, signer)) => {
                match signer {
                    Some(key) => tracing::info!("extension {} admitted from {}, verified by {key}", layer.name, candidate.shown),
                    None => tracing::warn!(
                        "extension {} admitted from {}: unverified (no trust keys in {TRUST_DIR}), merged all the same",
                        layer.name,
                        candidate.shown
                    ),
                }
                merged.names.insert(layer.name.clone());
                new_files.push((layer.name.clone(), files));
                layers.push(layer);
            }
            Err(refusal) => {
                discard(&candidate);
                refuse(&shown, refusal, required)?;
            }
        }
    }
    if layers.is_empty() {
        return Ok(());
    }
    let mut all = merged.files.clone();
    all.extend(new_files.iter().cloned());
    let earlier = merged.files.len();
    for c in plan::conflicts(&all).iter().filter(|c| all[earlier..].iter().any(|(n, _)| *n == c.winner)) {
        tracing::warn!("extension {} overrides {} of extension {}", c.winner, c.path, c.hidden);
    }
    merged.files.extend(new_files);
    merged.stage += 1;
    mount_layers(&layers, &running, merged.stage, required)?;
    if layers.iter().any(|l| l.root.join("usr/lib/firmware").is_dir()) {
        firmware_path(&layers);
    }
    let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
    tracing::info!("phase extensions-merged {} in {:.2}s", names.join(","), started.elapsed().as_secs_f64());
    Ok(())
}

/// Verifies (with keys), mounts (images) and checks one extension; on
/// refusal its mount goes. Returns the layer, its files and the key that
/// signed it.
fn admit(c: &Candidate, host: &Fields, running: &str, keys: &crate::trust::Keys, merged: &Merged) -> Result<(Layer, Vec<String>, Option<String>), Refusal> {
    if !c.name.is_empty() && !crate::workflow::name::valid(&c.name) {
        return Err(Refusal::Name(c.name.clone()));
    }
    // Before the kernel parses an image: only a signed one gets that far.
    let signer = if keys.is_empty() {
        None
    } else {
        Some(match &c.kind {
            Kind::Image(path) => verify::image(keys, path)?,
            Kind::Dir(path) => verify::tree(keys, path, MAX_FILES)?,
            Kind::Device(..) => return Err(verify::Unverified::Unsigned("signature: a block device cannot carry one (use NAME.raw with NAME.raw.sig)".into()).into()),
            // The pull child refuses an unsigned image when keys are there.
            Kind::Oci { signer, .. } => signer.clone().ok_or_else(|| verify::Unverified::Unsigned("signer reported by the pull child".into()))?,
        })
    };
    let (root, mounted) = match &c.kind {
        Kind::Dir(dir) | Kind::Oci { root: dir, .. } => (dir.clone(), false),
        Kind::Image(path) => {
            let target = Path::new(WORK).join(format!("{}.{}", mount_label(&c.name, path), merged.stage + 1));
            mount_image(path, None, &target)?;
            (target, true)
        }
        // The probe child read its header: PID 1 does not read the device.
        Kind::Device(path, format) => {
            let target = Path::new(WORK).join(format!("{}.{}", mount_label(&c.name, path), merged.stage + 1));
            mount_image(path, Some(*format), &target)?;
            (target, true)
        }
    };
    let result = check(c, &root, host, running, signer.is_some());
    if result.is_err() && mounted {
        let _ = nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH);
    }
    let (name, files) = result?;
    if merged.names.contains(&name) {
        if mounted {
            let _ = nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH);
        }
        return Err(Refusal::Duplicate);
    }
    let layer = Layer {
        name,
        usr: root.join("usr").is_dir(),
        etc: root.join("etc").is_dir(),
        modules: root.join("usr/lib/modules").join(running).is_dir(),
        root,
    };
    Ok((layer, files, signer))
}

/// The release file and the kernel release; returns the extension's name
/// and the files it carries.
fn check(c: &Candidate, root: &Path, host: &Fields, running: &str, verified: bool) -> Result<(String, Vec<String>), Refusal> {
    // Before anything is read through them: a symlinked etc/ or usr/
    // would point the overlay (and the checks below) at the initrd's own.
    for top in ["etc", "usr"] {
        if std::fs::symlink_metadata(root.join(top)).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Refusal::Symlink { path: top.to_string() });
        }
    }
    let name = if c.name.is_empty() { release_name(root)? } else { c.name.clone() };
    if !crate::workflow::name::valid(&name) {
        return Err(Refusal::Name(name));
    }
    let path = [release::release_path(&name), release::confext_release_path(&name)]
        .into_iter()
        .map(|rel| root.join(rel))
        .find(|p| p.is_file())
        .ok_or_else(|| Refusal::NoRelease(release::release_path(&name)))?;
    let text = crate::fsutil::read_bounded(&path, RELEASE_MAX).map_err(|source| Refusal::Read { path: path.clone(), source })?;
    release::check(host, &release::parse(&String::from_utf8_lossy(&text)))?;
    if let Ok(entries) = std::fs::read_dir(root.join("usr/lib/modules")) {
        for entry in entries.flatten() {
            let found = entry.file_name().to_string_lossy().into_owned();
            if found != running {
                return Err(Refusal::Kernel { found, running: running.to_string() });
            }
        }
    }
    let files = list_files(root, running)?;
    // Only an extension a trusted key signed may add keys. list_files
    // lists everything but directories, so `etc/iguana` or
    // `etc/iguana/trust` in it is a symlink (or a file) standing where the
    // trust directory or its parent is.
    if !verified && files.iter().any(|f| f == "etc/iguana" || f == "etc/iguana/trust" || f.starts_with("etc/iguana/trust/")) {
        return Err(Refusal::UnverifiedTrust);
    }
    check_vermagic(root, &files, running)?;
    Ok((name, files))
}

/// Each uncompressed module's `vermagic=` names the running kernel; a
/// compressed one (`.ko.xz`, `.ko.zst`) is left to the kernel's own check
/// when it loads.
fn check_vermagic(root: &Path, files: &[String], running: &str) -> Result<(), Refusal> {
    let dir = format!("usr/lib/modules/{running}/");
    for module in files.iter().filter(|f| f.starts_with(&dir) && f.ends_with(".ko")) {
        let path = root.join(module);
        let file = File::open(&path).map_err(|source| Refusal::Open { path: path.clone(), source })?;
        let magic = modinfo::vermagic_file(&file)
            .map_err(|e| Refusal::Open { path: path.clone(), source: std::io::Error::other(e.to_string()) })?
            .map_err(|source| Refusal::Module { module: module.clone(), source })?;
        let found = modinfo::release(&magic);
        if found != running {
            return Err(Refusal::Vermagic { module: module.clone(), found: found.to_string(), running: running.to_string() });
        }
    }
    Ok(())
}

/// The NAME of the one `extension-release.NAME` a device carries.
fn release_name(root: &Path) -> Result<String, Refusal> {
    for dir in ["usr/lib/extension-release.d", "etc/extension-release.d"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir)) {
            for entry in entries.flatten() {
                if let Some(name) = entry.file_name().to_string_lossy().strip_prefix("extension-release.") {
                    return Ok(name.to_string());
                }
            }
        }
    }
    Err(Refusal::NoRelease("usr/lib/extension-release.d/extension-release.NAME".into()))
}

/// Files under usr/ and etc/ (relative), for the conflict report; the
/// module index files every module extension has are left out (merged).
fn list_files(root: &Path, running: &str) -> Result<Vec<String>, Refusal> {
    let index_dir = format!("usr/lib/modules/{running}/");
    let mut out = Vec::new();
    let mut todo: Vec<String> = ["usr", "etc"].iter().filter(|d| root.join(d).is_dir()).map(|d| d.to_string()).collect();
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&dir)) else { continue };
        for entry in entries.flatten() {
            let rel = format!("{dir}/{}", entry.file_name().to_string_lossy());
            if out.len() + todo.len() >= MAX_FILES {
                return Err(Refusal::TooManyFiles);
            }
            match entry.file_type() {
                Ok(t) if t.is_dir() => todo.push(rel),
                Ok(_) => {
                    let index = rel.strip_prefix(&index_dir).is_some_and(|f| f.starts_with("modules.") && !f.contains('/'));
                    if !index {
                        out.push(rel);
                    }
                }
                Err(_) => {}
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Mounts an erofs/squashfs read-only: a file (`device` None: its format
/// read here) through a loop device, a block device as it is.
fn mount_image(path: &Path, device: Option<image::Format>, target: &Path) -> Result<(), Refusal> {
    let through_loop = device.is_none();
    let format = match device {
        Some(format) => format,
        None => {
            let header = read_header(path).map_err(|source| Refusal::Open { path: path.to_owned(), source })?;
            image::detect(&header).ok_or_else(|| Refusal::Format { path: path.to_owned() })?
        }
    };
    // The loop device stays open until the mount holds it (autoclear).
    let (device, _held) = if through_loop {
        let file = File::open(path).map_err(|source| Refusal::Open { path: path.to_owned(), source })?;
        let (device, held) = crate::sys::loop_attach(&file).map_err(|source| Refusal::Loop { path: path.to_owned(), source })?;
        (device, Some(held))
    } else {
        (path.to_owned(), None)
    };
    let _ = std::fs::create_dir_all(target);
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    nix::mount::mount(Some(&device), target, Some(format.fstype()), flags, None::<&str>).map_err(|source| Refusal::Mount {
        device,
        fstype: format.fstype(),
        target: target.to_owned(),
        source,
    })
}

/// Writes the combined module index, then mounts the overlays.
fn mount_layers(layers: &[Layer], running: &str, stage: u32, required: bool) -> Result<(), Error> {
    let work = Path::new(WORK);
    let index = work.join(format!(".index.{stage}"));
    let etc = Upper { upper: work.join(format!(".etc.{stage}/upper")), work: work.join(format!(".etc.{stage}/work")) };
    let modules_dir = Path::new("/lib/modules").join(running);
    if layers.iter().any(|l| l.modules) {
        write_index(&index, &modules_dir, layers, running);
    }
    if layers.iter().any(|l| l.etc) {
        let _ = std::fs::create_dir_all(&etc.upper);
        let _ = std::fs::create_dir_all(&etc.work);
    }
    for m in plan::mounts(layers, running, &index, &etc) {
        let _ = std::fs::create_dir_all(&m.target);
        tracing::debug!("extensions: mount overlay on {} ({})", m.target.display(), m.options);
        if let Err(source) = nix::mount::mount(Some("overlay"), &m.target, Some("overlay"), MsFlags::empty(), Some(m.options.as_str())) {
            let err = Error::Merge { target: m.target.clone(), source };
            if required {
                return Err(err);
            }
            tracing::warn!("extensions: {}", chain(&err));
        }
    }
    Ok(())
}

/// modules.alias/dep/builtin of what is merged now plus each layer's own.
fn write_index(index: &Path, modules_dir: &Path, layers: &[Layer], running: &str) {
    let _ = std::fs::create_dir_all(index);
    for file in ["modules.alias", "modules.dep", "modules.builtin"] {
        let mut text = String::new();
        let dirs = std::iter::once(modules_dir.to_owned())
            .chain(layers.iter().filter(|l| l.modules).map(|l| l.root.join("usr/lib/modules").join(running)));
        for dir in dirs {
            match crate::fsutil::read_bounded(&dir.join(file), INDEX_MAX) {
                Ok(bytes) => {
                    text.push_str(&String::from_utf8_lossy(&bytes));
                    if !text.ends_with('\n') {
                        text.push('\n');
                    }
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => tracing::warn!("extensions: {}", chain(&e)),
            }
        }
        if let Err(e) = std::fs::write(index.join(file), text) {
            tracing::warn!("extensions: write {}: {e}", index.join(file).display());
        }
    }
}

/// The kernel's firmware loader looks in /lib/firmware; the merged
/// /usr/lib/firmware is added as its custom path. Each firmware file an
/// extension brought is then looked up there, as the loader will.
fn firmware_path(layers: &[Layer]) {
    const PARAM: &str = "/sys/module/firmware_class/parameters/path";
    const FIRMWARE: &str = "/usr/lib/firmware";
    if let Err(e) = std::fs::write(PARAM, FIRMWARE) {
        return tracing::warn!("extensions: write {PARAM}: {e}");
    }
    let path = std::fs::read_to_string(PARAM).unwrap_or_default();
    for layer in layers {
        let Ok(entries) = std::fs::read_dir(layer.root.join("usr/lib/firmware")) else { continue };
        for entry in entries.flatten().take(64) {
            let merged = Path::new(FIRMWARE).join(entry.file_name());
            match std::fs::File::open(&merged).and_then(|f| f.metadata()) {
                Ok(meta) => tracing::info!(
                    "extension {}: firmware {} readable ({} bytes), firmware_class path {}",
                    layer.name,
                    merged.display(),
                    meta.len(),
                    path.trim()
                ),
                Err(e) => tracing::warn!("extension {}: firmware {}: {e}", layer.name, merged.display()),
            }
        }
    }
}

/// The name of an image's mount point under WORK.
/// Plain characters only: `:` and `,` would split overlayfs's `lowerdir=`.
fn mount_label(name: &str, path: &Path) -> String {
    let plain = |s: &str| -> String {
        let s: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' }).collect();
        if s.is_empty() || s == "." || s == ".." { "_".to_owned() } else { s }
    };
    if name.is_empty() {
        format!("dev-{}", plain(&path.file_name().unwrap_or_default().to_string_lossy()))
    } else {
        plain(name)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mount_labels_are_plain_names() {
        let cases = [
            ("", "/dev/disk/by-path/pci-0000:00:05.0", "dev-pci-0000_00_05.0"),
            ("", "/dev/vdb", "dev-vdb"),
            ("site", "/run/x/site.raw", "site"),
            ("a,b:c", "/x", "a_b_c"),
            ("", "/", "dev-_"),
        ];
        for (name, path, want) in cases {
            assert_eq!(super::mount_label(name, std::path::Path::new(path)), want, "{name} {path}");
        }
    }

    use super::*;

    #[test]
    fn names_from_urls() {
        let cases: &[(&str, Option<&str>)] = &[
            ("http://10.0.2.2:8080/pvscsi.raw", Some("pvscsi")),
            ("https://h/a/b/site-1.2.raw?token=x#f", Some("site-1.2")),
            ("http://h/x.img", None),
            ("http://h/.raw", None),
            ("http://h/..raw", None),
            ("http://h/", None),
        ];
        for (url, want) in cases {
            assert_eq!(name_from_url(url).as_deref(), *want, "{url}");
        }
    }

    #[test]
    fn finds_appended_extensions_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let stub = tmp.path().join(".extra/sysext");
        let ext = tmp.path().join("extensions");
        std::fs::create_dir_all(&stub).unwrap();
        std::fs::create_dir_all(ext.join("site/etc")).unwrap();
        std::fs::create_dir_all(ext.join("a-tree")).unwrap();
        std::fs::write(stub.join("vmxnet3.raw"), b"").unwrap();
        std::fs::write(stub.join("vmxnet3.raw.sig"), b"").unwrap();
        std::fs::write(ext.join("SHA256SUMS"), b"").unwrap();
        let got: Vec<(String, bool)> =
            appended([stub.as_path(), ext.as_path()].into_iter()).into_iter().map(|c| (c.name, matches!(c.kind, Kind::Dir(_)))).collect();
        assert_eq!(got, [("vmxnet3".to_string(), false), ("a-tree".to_string(), true), ("site".to_string(), true)]);
    }

    #[test]
    fn checks_a_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let host = release::parse("ID=iguana\nIGUANA_LEVEL=1\n");
        let write = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        let c = Candidate { name: "site".into(), shown: "x".into(), kind: Kind::Dir(root.to_owned()) };
        let err = |r: Result<(String, Vec<String>), Refusal>| chain(&r.unwrap_err());
        assert_eq!(err(check(&c, root, &host, "6.1.0-1", false)), "no usr/lib/extension-release.d/extension-release.site");
        write("usr/lib/extension-release.d/extension-release.site", "ID=fedora\n");
        assert_eq!(err(check(&c, root, &host, "6.1.0-1", false)), "ID=fedora does not match this initrd's ID=iguana");
        write("usr/lib/extension-release.d/extension-release.site", "ID=iguana\nIGUANA_LEVEL=1\n");
        write("etc/iguana/control.yaml", "jobs: {}\n");
        write("usr/lib/modules/6.1.0-1/modules.dep", "");
        std::fs::create_dir_all(root.join("usr/lib/modules/6.1.0-1/kernel")).unwrap();
        std::fs::write(root.join("usr/lib/modules/6.1.0-1/kernel/x.ko"), modinfo::test_module("6.1.0-1 SMP mod_unload ")).unwrap();
        let (name, files) = check(&c, root, &host, "6.1.0-1", false).unwrap();
        assert_eq!(name, "site");
        assert_eq!(
            files,
            ["etc/iguana/control.yaml", "usr/lib/extension-release.d/extension-release.site", "usr/lib/modules/6.1.0-1/kernel/x.ko"]
        );
        assert_eq!(err(check(&c, root, &host, "6.1.0-2", false)), "it carries modules for kernel 6.1.0-1, this is 6.1.0-2");
        std::fs::write(root.join("usr/lib/modules/6.1.0-1/kernel/x.ko"), modinfo::test_module("6.1.0-9 SMP mod_unload ")).unwrap();
        assert_eq!(
            err(check(&c, root, &host, "6.1.0-1", false)),
            "module usr/lib/modules/6.1.0-1/kernel/x.ko was built for kernel 6.1.0-9 (vermagic), this is 6.1.0-1"
        );
        std::fs::write(root.join("usr/lib/modules/6.1.0-1/kernel/x.ko"), "").unwrap();
        assert_eq!(err(check(&c, root, &host, "6.1.0-1", false)), "module usr/lib/modules/6.1.0-1/kernel/x.ko: not an ELF file");
        std::fs::write(root.join("usr/lib/modules/6.1.0-1/kernel/x.ko"), modinfo::test_module("6.1.0-1 SMP mod_unload ")).unwrap();
        // Compressed: the kernel checks it when it loads.
        write("usr/lib/modules/6.1.0-1/kernel/y.ko.zst", "");
        assert!(check(&c, root, &host, "6.1.0-1", false).is_ok());
        write("etc/iguana/trust/site.pub", "");
        assert_eq!(err(check(&c, root, &host, "6.1.0-1", false)), "it carries etc/iguana/trust but is not itself verified by a trusted key");
        assert!(check(&c, root, &host, "6.1.0-1", true).is_ok());
    }

    /// Keys an unverified extension would bring through a symlink at or
    /// above etc/iguana/trust, or under it.
    #[test]
    fn an_unverified_extension_brings_no_trust_through_a_symlink() {
        use std::os::unix::fs::symlink;
        let host = release::parse("ID=iguana\nIGUANA_LEVEL=1\n");
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(elsewhere.path().join("trust")).unwrap();
        std::fs::write(elsewhere.path().join("trust/evil.pub"), "").unwrap();
        let trust = "it carries etc/iguana/trust but is not itself verified by a trusted key";
        let cases: &[(&str, &str, &str)] = &[
            ("etc/iguana/trust", "/run/keys", trust),
            ("etc/iguana", elsewhere.path().to_str().unwrap(), trust),
            ("etc/iguana/trust/a.pub", "/run/a.pub", trust),
            ("etc", elsewhere.path().to_str().unwrap(), "etc is a symlink (an extension's etc/ and usr/ are directories)"),
            ("usr", "/usr", "usr is a symlink (an extension's etc/ and usr/ are directories)"),
        ];
        for (link, target, want) in cases {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path();
            let rel = root.join("usr/lib/extension-release.d/extension-release.site");
            if *link != "usr" {
                std::fs::create_dir_all(rel.parent().unwrap()).unwrap();
                std::fs::write(&rel, "ID=iguana\nIGUANA_LEVEL=1\n").unwrap();
            } else {
                std::fs::create_dir_all(root.join("etc/extension-release.d")).unwrap();
                std::fs::write(root.join("etc/extension-release.d/extension-release.site"), "ID=iguana\nIGUANA_LEVEL=1\n").unwrap();
            }
            let path = root.join(link);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            symlink(target, &path).unwrap();
            let c = Candidate { name: "site".into(), shown: "x".into(), kind: Kind::Dir(root.to_owned()) };
            let got = check(&c, root, &host, "6.1.0-1", false).map(|_| ()).map_err(|e| chain(&e));
            assert_eq!(got, Err(want.to_string()), "{link} -> {target}");
        }
    }
}
