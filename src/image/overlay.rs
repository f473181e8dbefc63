//! Per-layer directories and the overlay rootfs that PID 1's containers run
//! on (`iguana pull --layers DIR`).
//!
//! Each layer is unpacked once into `LAYERS/sha256-HEX`, named after its
//! chain ID (the OCI digest of its diff_id and those of the layers below
//! it), with its whiteouts in overlayfs form (see [`super::unpack`]). The
//! chain, not the diff_id alone: a directory the layer leaves out but
//! needs is made with the owner and mode the layers below have there
//! ([`super::root::Root::with_lowers`]), as overlayfs would merge it, so the
//! same layer on another base is another directory. Two images, or two
//! jobs, that share the layers up to one share its directory. A
//! container's rootfs is an overlayfs of those directories (lowerdir
//! top-first, read-only) with its upper and work directories beside the
//! rootfs on the same tmpfs: `ROOTFS.upper`, `ROOTFS.work`. The layer
//! directories an image uses are listed, bottom first, in `ROOTFS.layers`,
//! so PID 1 knows what to release after the job.
//!
//! When an overlay cannot be used (not root, no overlay filesystem, a
//! lowerdir option longer than the one page the kernel copies, or the mount
//! itself fails), the pull falls back to the flattened copy and says why.
//! Overlay mount options are given as absolute paths: with
//! `/run/iguana/layers` that fits about 44 layers.

use std::io;
use std::path::{Path, PathBuf};

/// The kernel copies mount data into one page, NUL included.
const MAX_OPTIONS: usize = 4095;

/// Why an overlay rootfs is not used.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    #[error("not running as root")]
    NotRoot,
    #[error("the image has no layers")]
    NoLayers,
    #[error("the kernel has no overlay filesystem")]
    NoOverlay,
    #[error("read /proc/filesystems")]
    Filesystems(#[source] io::Error),
    #[error("path {0} cannot be given to overlayfs (':', ',' or '\\' in it)")]
    Path(PathBuf),
    #[error("the options for {layers} layers take {len} bytes, more than one page")]
    TooLong { layers: usize, len: usize },
    #[error("layer {digest} hard-links {path:?} to a file of a lower layer")]
    CrossLayerLink { digest: String, path: String },
    #[error("mount overlay on {target}")]
    Mount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The names of the layers' directories, bottom first: `sha256-HEX` from
/// each layer's chain ID `sha256:HEX` (OCI image spec, config.md):
/// the diff_id of the bottom layer, then `sha256(CHAIN_BELOW + " " + DIFF_ID)`.
/// A diff_id that is not a sha256 digest is the error.
pub fn layer_dir_names(diff_ids: &[String]) -> Result<Vec<String>, String> {
    use sha2::{Digest, Sha256};
    let mut names = Vec::new();
    let mut chain = String::new();
    for diff_id in diff_ids {
        if super::reference::sha256_hex(diff_id).is_none() {
            return Err(diff_id.clone());
        }
        chain = if chain.is_empty() {
            diff_id.clone()
        } else {
            format!("sha256:{}", hex::encode(Sha256::digest(format!("{chain} {diff_id}"))))
        };
        names.push(format!("sha256-{}", chain.trim_start_matches("sha256:")));
    }
    Ok(names)
}

/// `ROOTFS.upper`, `ROOTFS.work`, `ROOTFS.layers`.
pub fn sibling(rootfs: &Path, suffix: &str) -> PathBuf {
    let mut name = rootfs.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    rootfs.with_file_name(name)
}

/// Whether `/proc/filesystems` lists overlay.
fn lists_overlay(filesystems: &str) -> bool {
    filesystems
        .lines()
        .any(|line| line.split_whitespace().last() == Some("overlay"))
}

/// Checks what can be checked before any layer is unpacked.
pub fn available() -> Result<(), Unusable> {
    if !rustix::process::geteuid().is_root() {
        return Err(Unusable::NotRoot);
    }
    let text = std::fs::read_to_string("/proc/filesystems").map_err(Unusable::Filesystems)?;
    if lists_overlay(&text) {
        Ok(())
    } else {
        Err(Unusable::NoOverlay)
    }
}

/// The mount options: `lowerdir=TOP:...:BOTTOM,upperdir=U,workdir=W`.
/// `layers` are bottom first, as in the manifest.
pub fn options(layers: &[PathBuf], upper: &Path, work: &Path) -> Result<String, Unusable> {
    let mut text = String::from("lowerdir=");
    for (i, path) in layers.iter().rev().enumerate() {
        if i > 0 {
            text.push(':');
        }
        text.push_str(plain(path)?);
    }
    // overlayfs needs at least one lower layer; an image without layers
    // gets an empty one from the caller.
    text.push_str(",upperdir=");
    text.push_str(plain(upper)?);
    text.push_str(",workdir=");
    text.push_str(plain(work)?);
    if text.len() > MAX_OPTIONS {
        return Err(Unusable::TooLong {
            layers: layers.len(),
            len: text.len(),
        });
    }
    Ok(text)
}

/// A path as overlayfs options take it: UTF-8, without the separators.
fn plain(path: &Path) -> Result<&str, Unusable> {
    match path.to_str() {
        Some(s) if !s.contains([':', ',', '\\']) => Ok(s),
        _ => Err(Unusable::Path(path.to_path_buf())),
    }
}

/// Mounts the overlay on `target`.
pub fn mount(options: &str, target: &Path) -> Result<(), Unusable> {
    use nix::mount::MsFlags;
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options),
    )
    .map_err(|e| Unusable::Mount {
        target: target.to_path_buf(),
        source: e.into(),
    })
}

/// Reads `ROOTFS.layers`: the layer directories an image used (none when
/// the file is missing, i.e. the rootfs was flattened or never pulled).
pub fn read_layer_list(rootfs: &Path) -> Vec<PathBuf> {
    use std::io::Read;
    // The pull child wrote it; PID 1 reads it with a bound all the same
    // (std only: tests include this file by path, without the crate).
    let mut text = String::new();
    let read = std::fs::File::open(sibling(rootfs, "layers"))
        .and_then(|f| f.take(LAYER_LIST_MAX + 1).read_to_string(&mut text));
    match read {
        Ok(n) if (n as u64) <= LAYER_LIST_MAX => text.lines().filter(|l| !l.is_empty()).map(PathBuf::from).collect(),
        _ => Vec::new(),
    }
}

/// A layer list longer than this is not read: ~44 layers fit an overlay.
const LAYER_LIST_MAX: u64 = 64 << 10;

/// Whether `path` is a layer directory the pull makes in `layers_dir`
/// (`sha256-<64 lowercase hex>`): PID 1 deletes nothing else it reads
/// from a layer list.
pub fn is_layer_dir(layers_dir: &Path, path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let hex = name.strip_prefix("sha256-").unwrap_or("");
    path.parent() == Some(layers_dir) && hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Writes `ROOTFS.layers`.
pub fn write_layer_list(rootfs: &Path, layers: &[PathBuf]) -> io::Result<()> {
    let text: String = layers.iter().map(|p| format!("{}\n", p.display())).collect();
    std::fs::write(sibling(rootfs, "layers"), text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_layer_directories_of_this_boot_are_deleted() {
        let hex = "ab".repeat(32);
        let dir = Path::new("/run/iguana/layers");
        let cases: &[(String, bool)] = &[
            (format!("/run/iguana/layers/sha256-{hex}"), true),
            ("/run/iguana/layers/..".into(), false),
            ("/run/iguana".into(), false),
            ("/".into(), false),
            (format!("/run/iguana/layers/sha256-{hex}/.."), false),
            (format!("/other/layers/sha256-{hex}"), false),
            (format!("/run/iguana/layers/sha256-{}", hex.to_uppercase()), false),
            ("/run/iguana/layers/sha256-ab".into(), false),
        ];
        for (path, want) in cases {
            assert_eq!(is_layer_dir(dir, Path::new(path)), *want, "{path}");
        }
    }

    fn check(layers: &[&str], expected: Result<&str, &str>) {
        let layers: Vec<PathBuf> = layers.iter().map(PathBuf::from).collect();
        let got = options(&layers, Path::new("/r/rootfs.upper"), Path::new("/r/rootfs.work"))
            .map_err(|e| e.to_string());
        let expected = expected.map(String::from).map_err(String::from);
        assert_eq!(got, expected, "{layers:?}");
    }

    #[test]
    fn mount_options() {
        check(
            &["/l/a", "/l/b", "/l/c"],
            Ok("lowerdir=/l/c:/l/b:/l/a,upperdir=/r/rootfs.upper,workdir=/r/rootfs.work"),
        );
        check(&["/l/a"], Ok("lowerdir=/l/a,upperdir=/r/rootfs.upper,workdir=/r/rootfs.work"));
        check(
            &["/l/a:b"],
            Err("path /l/a:b cannot be given to overlayfs (':', ',' or '\\' in it)"),
        );
        check(&["/l/a,x"], Err("path /l/a,x cannot be given to overlayfs (':', ',' or '\\' in it)"));
        // The real layer names: 44 fit in a page under /run/iguana/layers, 45 do not.
        let name = |i: usize| format!("/run/iguana/layers/sha256-{i:064x}");
        let many: Vec<String> = (0..44).map(name).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let paths: Vec<PathBuf> = refs.iter().map(PathBuf::from).collect();
        assert!(options(&paths, Path::new("/r/rootfs.upper"), Path::new("/r/rootfs.work")).is_ok());
        let many: Vec<String> = (0..45).map(name).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        check(&refs, Err("the options for 45 layers take 4151 bytes, more than one page"));
    }

    #[test]
    fn names_and_lists() {
        // The second chain ID as coreutils computes it:
        // `printf 'sha256:A sha256:B' | sha256sum`.
        const CHAIN_AB: &str = "031a58565587553fc7936fb70278e567f83f86c5fe9d0c91a929935053231957";
        let a = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".to_string();
        let b = "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210".to_string();
        assert_eq!(
            layer_dir_names(&[a.clone(), b.clone()]),
            Ok(vec![
                "sha256-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".to_string(),
                format!("sha256-{}", CHAIN_AB),
            ])
        );
        assert_eq!(layer_dir_names(&[a.clone(), "sha256:../../etc".into()]), Err("sha256:../../etc".into()));
        assert_eq!(layer_dir_names(&["md5:abc".into()]), Err("md5:abc".into()));
        assert_eq!(layer_dir_names(&[]), Ok(vec![]));
        assert_eq!(sibling(Path::new("/run/i/a/rootfs"), "upper"), Path::new("/run/i/a/rootfs.upper"));
        assert!(lists_overlay("nodev\tsysfs\nnodev\ttmpfs\nnodev\toverlay\n\text4\n"));
        assert!(!lists_overlay("nodev\tsysfs\n\text4\nnodev\toverlayfs-nope\n"));

        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        assert!(read_layer_list(&rootfs).is_empty());
        let layers = [PathBuf::from("/l/a"), PathBuf::from("/l/b")];
        write_layer_list(&rootfs, &layers).unwrap();
        assert_eq!(read_layer_list(&rootfs), layers);
    }
}
