//! The pieces of switch_root that need no seam: which init, which kernel,
//! what to leave in the new root's log, and emptying the initramfs.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::Mount;

/// `init=` from the kernel command line (the last one wins), else /sbin/init.
/// Read leniently: the command line was already checked by `cmdline`.
pub fn init_path(cmdline: &str) -> String {
    crate::cmdline::split(cmdline)
        .into_iter()
        .filter(|(key, value)| key == "init" && value.as_deref().is_some_and(|v| v.starts_with('/')))
        .filter_map(|(_, value)| value)
        .next_back()
        .unwrap_or_else(|| "/sbin/init".to_string())
}

/// The kernel (and initrd) in /boot when there is one obvious choice:
/// `vmlinuz` with `initrd` (or `initrd.img`), or a single `vmlinuz-VERSION`
/// with `initrd.img-VERSION` or `initrd-VERSION[.img]`.
pub fn find_kernel(names: &[String]) -> Option<(String, Option<String>)> {
    let has = |name: &str| names.iter().any(|n| n == name);
    let first = |candidates: &[String]| candidates.iter().find(|c| has(c)).cloned();
    if has("vmlinuz") {
        return Some(("vmlinuz".into(), first(&["initrd".into(), "initrd.img".into()])));
    }
    let mut versions = names.iter().filter_map(|n| n.strip_prefix("vmlinuz-"));
    let (Some(version), None) = (versions.next(), versions.next()) else {
        return None;
    };
    let initrds = [format!("initrd.img-{version}"), format!("initrd-{version}"), format!("initrd-{version}.img")];
    Some((format!("vmlinuz-{version}"), first(&initrds)))
}

/// statfs(2) `f_type` of the two filesystems an initramfs can be.
pub const RAMFS_MAGIC: u64 = 0x8584_58f6;
pub const TMPFS_MAGIC: u64 = 0x0102_1994;

/// Whether a filesystem of this type may be emptied as the initramfs.
pub fn is_initramfs(magic: u64) -> bool {
    magic == RAMFS_MAGIC || magic == TMPFS_MAGIC
}

/// Names of the filesystems `/` could be by mistake (linux/magic.h).
const NAMES: &[(u64, &str)] = &[
    (RAMFS_MAGIC, "ramfs"),
    (TMPFS_MAGIC, "tmpfs"),
    (0xef53, "ext2/ext3/ext4"),
    (0x5846_5342, "xfs"),
    (0x9123_683e, "btrfs"),
    (0xf2f5_2010, "f2fs"),
    (0x794c_7630, "overlay"),
    (0x7371_7368, "squashfs"),
    (0xe0f5_e1e2, "erofs"),
    (0x6969, "nfs"),
    (0xff53_4d42, "cifs"),
    (0x4d44, "vfat"),
    (0x2fc1_2fc1, "zfs"),
    (0x6573_5546, "fuse"),
    (0x0102_1997, "9p"),
];

/// statfs(2) `f_type` of the filesystem holding `path`.
pub fn fs_type(path: &Path) -> std::io::Result<u64> {
    let magic = rustix::fs::statfs(path)?.f_type;
    // A magic number is 32 bits; the field is a signed word.
    u64::try_from(magic).map_err(|_| std::io::Error::other(format!("statfs {}: f_type {magic}", path.display())))
}

/// A name for a statfs(2) `f_type`, for an error message.
pub fn fs_name(magic: u64) -> String {
    NAMES.iter().find(|(m, _)| *m == magic).map_or_else(|| format!("{magic:#x}"), |(_, name)| (*name).to_string())
}

/// What /var/log/iguana/summary says about the boot that handed over.
pub fn summary(mounts: &[Mount], init: &str) -> String {
    let mut text = String::from("workflow: ok\n");
    for m in mounts {
        text.push_str(&format!("{m}\n"));
    }
    text.push_str(&format!("switch_root /sysroot {init}\n"));
    text
}

/// Deletes everything under `root` that is on `root`'s filesystem; mount
/// points (another st_dev) and what is below them are left alone, so the
/// new root, mounted below the initramfs, is never touched. Refuses unless
/// `root` is ramfs or tmpfs, as util-linux switch_root does: whoever calls
/// it, a disk is never emptied. Keeps going past errors and returns the
/// first.
pub fn remove_tree(root: &Path) -> std::io::Result<()> {
    let magic = fs_type(root)?;
    if !is_initramfs(magic) {
        return Err(std::io::Error::other(format!("{} is {}, not ramfs or tmpfs: refusing to empty it", root.display(), fs_name(magic))));
    }
    let dev = std::fs::symlink_metadata(root)?.dev();
    let mut first_error = None;
    remove_below(root, dev, &mut first_error);
    first_error.map_or(Ok(()), Err)
}

fn remove_below(dir: &Path, dev: u64, first_error: &mut Option<std::io::Error>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            first_error.get_or_insert(e);
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.dev() != dev {
            continue;
        }
        let result = if meta.is_dir() {
            remove_below(&path, dev, first_error);
            std::fs::remove_dir(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_kernel(names: &[&str], want: Option<(&str, Option<&str>)>) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let got = find_kernel(&names);
        assert_eq!(got.as_ref().map(|(k, i)| (k.as_str(), i.as_deref())), want, "{names:?}");
    }

    #[test]
    fn kernels() {
        check_kernel(&["vmlinuz", "initrd", "grub"], Some(("vmlinuz", Some("initrd"))));
        check_kernel(&["vmlinuz"], Some(("vmlinuz", None)));
        check_kernel(&["vmlinuz-6.1.0-9-amd64", "initrd.img-6.1.0-9-amd64", "config-6.1.0-9-amd64"], Some(("vmlinuz-6.1.0-9-amd64", Some("initrd.img-6.1.0-9-amd64"))));
        check_kernel(&["vmlinuz-6.5", "initrd-6.5.img"], Some(("vmlinuz-6.5", Some("initrd-6.5.img"))));
        // Two kernels: no obvious choice.
        check_kernel(&["vmlinuz-6.1", "vmlinuz-6.2", "initrd.img-6.1"], None);
        check_kernel(&["initrd"], None);
        check_kernel(&[], None);
    }

    #[test]
    fn init_paths() {
        for (line, want) in [
            ("console=ttyS0 ro", "/sbin/init"),
            ("init=/bin/sh rd.iguana.debug", "/bin/sh"),
            ("init=/a init=/usr/lib/systemd/systemd", "/usr/lib/systemd/systemd"),
            ("init=relative init", "/sbin/init"),
            ("rdinit=/init", "/sbin/init"),
        ] {
            assert_eq!(init_path(line), want, "{line}");
        }
    }

    #[test]
    fn only_ramfs_and_tmpfs_are_initramfs() {
        let cases = [
            (RAMFS_MAGIC, true, "ramfs"),
            (TMPFS_MAGIC, true, "tmpfs"),
            (0xef53, false, "ext2/ext3/ext4"),
            (0x5846_5342, false, "xfs"),
            (0x9123_683e, false, "btrfs"),
            (0x794c_7630, false, "overlay"),
            (0x6969, false, "nfs"),
            (0x1234_5678, false, "0x12345678"),
        ];
        for (magic, initramfs, name) in cases {
            assert_eq!(is_initramfs(magic), initramfs, "{magic:#x}");
            assert_eq!(fs_name(magic), name, "{magic:#x}");
        }
    }

    #[test]
    fn remove_tree_refuses_a_filesystem_that_is_not_the_initramfs() {
        // The crate's own directory is on a disk (or overlay), never tmpfs
        // here: emptying it would be the accident the check prevents.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let magic = fs_type(dir.path()).unwrap();
        assert!(!is_initramfs(magic), "test precondition: {} is on {}", dir.path().display(), fs_name(magic));
        std::fs::write(dir.path().join("keep"), "x").unwrap();
        let err = remove_tree(dir.path()).unwrap_err();
        assert_eq!(err.to_string(), format!("{} is {}, not ramfs or tmpfs: refusing to empty it", dir.path().display(), fs_name(magic)));
        assert!(dir.path().join("keep").exists());
    }

    #[test]
    fn removes_the_tree_but_not_the_root() {
        // remove_tree only empties ramfs/tmpfs: /dev/shm is one.
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::write(root.join("a/b/c/f"), "x").unwrap();
        std::fs::write(root.join("init"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        remove_tree(root).unwrap();
        assert!(root.exists());
        assert_eq!(std::fs::read_dir(root).unwrap().count(), 0);
        // The symlink's target was not followed.
        assert!(Path::new("/etc/passwd").exists());
    }
}
