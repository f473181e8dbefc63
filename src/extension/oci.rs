//! `rd.iguana.extensions=oci:REF`: an image whose rootfs is the extension
//! tree, pulled by the `iguana pull` child after network-up with the
//! registry settings container images get (insecure registries, mirrors,
//! CA, `/etc/iguana/auth.json`, `rd.iguana.proxy` through the child's
//! environment) and the same signature check when `/etc/iguana/trust` has
//! keys: the child refuses an unsigned image and reports the key that
//! signed (`--signer-out`); a digest pinned in REF is checked by the child.
//!
//! The rootfs is a flattened copy under /run/iguana/extensions (tmpfs),
//! bounded in size by the child while it unpacks (`--max-unpacked`) and in
//! time by PID 1 (the child's deadline). Then it is made read-only,
//! nosuid, nodev, and merged like an appended tree.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::MsFlags;

/// What an OCI extension's pull may bring: the same cap as a fetched
/// `NAME.raw` (blobs and unpacked bytes each).
pub const MAX_UNPACKED: u64 = super::FETCH_MAX;
/// How long one pull may take, all retries included.
pub const DEADLINE: Duration = Duration::from_secs(300);
/// The signer file the child writes: a key's file name.
const SIGNER_MAX: u64 = 4 << 10;

/// The registry settings of the boot, as container pulls get them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Registry<'a> {
    pub insecure_registries: &'a [String],
    pub mirrors: &'a [(String, String)],
    pub ca: Option<&'a str>,
}

/// Where one pull goes: `DIR/rootfs`, and `DIR/signer`.
pub fn dir(work: &Path, index: usize, reference: &str) -> PathBuf {
    let plain: String = reference.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' }).take(64).collect();
    work.join(".oci").join(format!("{index}-{plain}"))
}

/// The `iguana pull` command line for `reference` into `dir` (pure).
pub fn pull_args(reference: &str, dir: &Path, registry: &Registry<'_>) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "pull".into(),
        reference.to_string(),
        "--rootfs".into(),
        dir.join("rootfs").display().to_string(),
        "--max-unpacked".into(),
        MAX_UNPACKED.to_string(),
        "--signer-out".into(),
        dir.join("signer").display().to_string(),
    ];
    for host in registry.insecure_registries {
        args.extend(["--insecure-registry".into(), host.clone()]);
    }
    for (origin, mirror) in registry.mirrors {
        args.extend(["--mirror".into(), format!("{origin}={mirror}")]);
    }
    if let Some(ca) = registry.ca {
        args.extend(["--ca".into(), ca.to_string()]);
    }
    args
}

/// Pulls `reference` into `dir/rootfs`; returns the tree and the key the
/// child verified it with (`None`: no keys). Errors are one line.
/// A failed pull leaves nothing behind (its tree, blobs and mounts are RAM
/// on /run).
pub fn pull(reference: &str, dir: &Path, registry: &Registry<'_>) -> Result<(PathBuf, Option<String>), String> {
    discard(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let pulled = pull_into(reference, dir, registry);
    if pulled.is_err() {
        discard(dir);
    }
    pulled
}

fn pull_into(reference: &str, dir: &Path, registry: &Registry<'_>) -> Result<(PathBuf, Option<String>), String> {
    crate::child::run(&pull_args(reference, dir, registry), DEADLINE).map_err(|e| one_line(&e))?;
    let signer_file = dir.join("signer");
    let signer = crate::fsutil::read_bounded(&signer_file, SIGNER_MAX).map_err(|e| crate::logging::chain(&e))?;
    let signer = String::from_utf8_lossy(&signer).trim().to_string();
    let rootfs = dir.join("rootfs");
    seal(&rootfs)?;
    Ok((rootfs, (!signer.is_empty()).then_some(signer)))
}

/// Unmounts `dir/rootfs` (the read-only bind of [`seal`] and the pull
/// child's own) and removes `dir`; only a directory of [`dir`]'s making
/// (under a `.oci` directory, a plain name) is touched.
pub fn discard(dir: &Path) {
    let ours = dir.parent().and_then(Path::file_name).is_some_and(|p| p == ".oci")
        && dir.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with('.') && !n.contains('/'));
    if !ours {
        return tracing::warn!("extensions: not removing {}: not an oci: pull directory", dir.display());
    }
    let rootfs = dir.join("rootfs");
    for _ in 0..4 {
        if nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH).is_err() {
            break;
        }
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("extensions: remove {}: {e}", dir.display()),
    }
}

/// The tree as an overlay lower layer: a bind mount of itself, read-only,
/// nosuid, nodev (the pull child made it a suid-allowing mount for
/// container images).
fn seal(rootfs: &Path) -> Result<(), String> {
    let err = |step: &str, e: nix::Error| format!("{step} {}: {e}", rootfs.display());
    nix::mount::mount(Some(rootfs), rootfs, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|e| err("bind mount", e))?;
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    nix::mount::mount(None::<&str>, rootfs, None::<&str>, flags, None::<&str>).map_err(|e| err("remount read-only", e))
}

/// A child's error chain (one cause a line) as one line.
fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_command_lines() {
        let insecure = ["10.0.2.2:5000".to_string()];
        let mirrors = [("docker.io".to_string(), "10.0.2.2:5001".to_string())];
        let cases: &[(Registry<'_>, &str)] = &[
            (
                Registry::default(),
                "pull r/ext:1 --rootfs /w/.oci/0-r_ext_1/rootfs --max-unpacked 67108864 --signer-out /w/.oci/0-r_ext_1/signer",
            ),
            (
                Registry { insecure_registries: &insecure, mirrors: &mirrors, ca: Some("/etc/iguana/ca.pem") },
                "pull r/ext:1 --rootfs /w/.oci/0-r_ext_1/rootfs --max-unpacked 67108864 --signer-out /w/.oci/0-r_ext_1/signer \
                 --insecure-registry 10.0.2.2:5000 --mirror docker.io=10.0.2.2:5001 --ca /etc/iguana/ca.pem",
            ),
        ];
        for (registry, want) in cases {
            let d = dir(Path::new("/w"), 0, "r/ext:1");
            assert_eq!(pull_args("r/ext:1", &d, registry).join(" "), *want);
        }
    }

    /// What a failed or refused pull leaves goes; nothing else does.
    #[test]
    fn discard_removes_only_pull_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let cases = [(".oci/0-r_ext_1", true), ("other/0-r_ext_1", false), (".oci/.hidden", false)];
        for (rel, removed) in cases {
            let d = tmp.path().join(rel);
            std::fs::create_dir_all(d.join("rootfs/.rootfs.blobs")).unwrap();
            std::fs::write(d.join("rootfs/.rootfs.blobs/sha256-x"), "blob").unwrap();
            discard(&d);
            assert_eq!(!d.exists(), removed, "{rel}");
        }
        discard(&tmp.path().join(".oci/9-never-made"));
    }

    #[test]
    fn pull_dirs_are_plain_names() {
        let cases = [
            (0, "10.0.2.2:5000/ext/fw:1", "/w/.oci/0-10.0.2.2_5000_ext_fw_1"),
            (3, "../../etc", "/w/.oci/3-.._.._etc"),
            (1, "r/a@sha256:0123", "/w/.oci/1-r_a_sha256_0123"),
        ];
        for (i, reference, want) in cases {
            assert_eq!(dir(Path::new("/w"), i, reference), Path::new(want), "{reference}");
        }
    }

    #[test]
    fn child_errors_become_one_line() {
        assert_eq!(one_line("image x: d refused: no signature\n  \ncaused by y\n"), "image x: d refused: no signature: caused by y");
    }
}
