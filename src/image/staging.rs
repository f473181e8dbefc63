//! The staging directory of an unpack: layers are applied into
//! `ROOTFS/.iguana-unpack` and moved up into ROOTFS only when every layer
//! has verified, so a failed or interrupted pull never leaves a
//! half-unpacked tree that looks usable. Staging *inside* ROOTFS keeps the
//! final renames on one filesystem, even when ROOTFS is a mount point.
//!
//! The tree must be the one `umoci unpack` gives. Two things in the place
//! it is unpacked to would change it: the root directory takes the owner
//! and mode of a `./` entry, and most layers (Docker's, BuildKit's) have
//! none, so it starts as umoci's 0755 root:root; and PID 1's /run is
//! mounted `nosuid,nodev`, which would disarm the image's setuid programs
//! and device nodes, so a ROOTFS on such a mount becomes a bind mount of
//! itself without those two flags (PID 1 unmounts it with the job).

use super::root::{self, Root};
use rustix::fs::{self as rfs, AtFlags, Gid, Mode, OFlags, StatVfsMountFlags, Timestamps, Uid};
use rustix::mount::MountFlags;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Name of the staging directory inside the rootfs.
pub const STAGING: &str = ".iguana-unpack";

/// The image root's mode when no layer has a `./` entry, as umoci gives it.
const ROOT_MODE: u32 = 0o755;

#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error("rootfs {0} is not empty")]
    NotEmpty(PathBuf),
    #[error("{step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A staging directory; removed on drop unless committed.
pub struct Staging {
    rootfs: PathBuf,
    rootfs_fd: OwnedFd,
    committed: bool,
}

impl Staging {
    /// Creates ROOTFS if needed and an empty staging directory in it.
    /// ROOTFS must be empty, except for `lost+found` and the staging
    /// directory of an interrupted earlier pull, which is removed.
    pub fn prepare(rootfs: &Path) -> Result<Staging, StagingError> {
        let io_err = |step| {
            move |source: io::Error| StagingError::Io {
                step,
                path: rootfs.to_path_buf(),
                source,
            }
        };
        std::fs::create_dir_all(rootfs).map_err(io_err("create"))?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let open = || rfs::open(rootfs, flags, Mode::empty()).map_err(|e| io_err("open")(e.into()));
        let names = root::list(open()?).map_err(io_err("list"))?;
        // lost+found is what a fresh ext4 mount holds; it is not content.
        if names.iter().any(|n| n != STAGING && n != "lost+found") {
            return Err(StagingError::NotEmpty(rootfs.to_path_buf()));
        }
        allow_suid_and_devices(rootfs).map_err(io_err("bind mount without nosuid,nodev"))?;
        // Opened after the mount: the fd must be the bind mount's root.
        let rootfs_fd = open()?;
        root::remove_all(rootfs_fd.as_fd(), OsStr::new(STAGING))
            .map_err(io_err("remove stale staging in"))?;
        rfs::mkdirat(&rootfs_fd, STAGING, Mode::from_raw_mode(0o700))
            .map_err(|e| io_err("create staging in")(e.into()))?;
        // The root of the image until a `./` entry says otherwise; set
        // after mkdir, which the umask would have trimmed.
        rfs::chmodat(&rootfs_fd, STAGING, Mode::from_raw_mode(ROOT_MODE), AtFlags::empty())
            .map_err(|e| io_err("chmod staging in")(e.into()))?;
        Ok(Staging {
            rootfs: rootfs.to_path_buf(),
            rootfs_fd,
            committed: false,
        })
    }

    pub fn path(&self) -> PathBuf {
        self.rootfs.join(STAGING)
    }

    /// The staging directory as an unpack root.
    pub fn root(&self) -> io::Result<Root> {
        Root::open_at(self.rootfs_fd.as_fd(), OsStr::new(STAGING))
    }

    /// Moves the unpacked tree into ROOTFS and gives ROOTFS the owner, mode
    /// and mtime the layers gave the image root.
    pub fn commit(mut self) -> Result<(), StagingError> {
        let path = self.path();
        let io_err = |step, path: &Path| {
            let path = path.to_path_buf();
            move |source: io::Error| StagingError::Io { step, path, source }
        };
        let staging = root::open_dir_at(self.rootfs_fd.as_fd(), OsStr::new(STAGING))
            .map_err(io_err("open", &path))?;
        let names = root::list(staging.try_clone().map_err(io_err("dup", &path))?)
            .map_err(io_err("list", &path))?;
        for name in names {
            rfs::renameat(&staging, &name, &self.rootfs_fd, &name)
                .map_err(|e| io_err("move into rootfs", &path.join(&name))(e.into()))?;
        }
        let st = rfs::fstat(&staging).map_err(|e| io_err("stat", &path)(e.into()))?;
        if rustix::process::geteuid().is_root() {
            rfs::fchown(
                &self.rootfs_fd,
                Some(Uid::from_raw(st.st_uid)),
                Some(Gid::from_raw(st.st_gid)),
            )
            .map_err(|e| io_err("chown", &self.rootfs)(e.into()))?;
        }
        rfs::fchmod(&self.rootfs_fd, Mode::from_raw_mode(st.st_mode))
            .map_err(|e| io_err("chmod", &self.rootfs)(e.into()))?;
        rfs::unlinkat(&self.rootfs_fd, STAGING, AtFlags::REMOVEDIR)
            .map_err(|e| io_err("remove", &path)(e.into()))?;
        let mtime = rustix::fs::Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: 0,
        };
        let times = Timestamps {
            last_access: mtime,
            last_modification: mtime,
        };
        rfs::futimens(&self.rootfs_fd, &times)
            .map_err(|e| io_err("set mtime", &self.rootfs)(e.into()))?;
        self.committed = true;
        Ok(())
    }
}

/// Makes `rootfs` a bind mount of itself without `nosuid` and `nodev` when
/// the filesystem it is on has them (PID 1's /run). Only root can; anyone
/// else is told that setuid programs and devices of the image will not work.
fn allow_suid_and_devices(rootfs: &Path) -> io::Result<()> {
    let st = rfs::statvfs(rootfs)?;
    let Some(flags) = remount_flags(st.f_flag) else {
        return Ok(());
    };
    if !rustix::process::geteuid().is_root() {
        tracing::warn!(rootfs = %rootfs.display(), "on a nosuid/nodev mount and not root: the image's setuid programs and devices will not work");
        return Ok(());
    }
    rustix::mount::mount_bind(rootfs, rootfs)?;
    if let Err(err) = rustix::mount::mount_remount(rootfs, flags, "") {
        rustix::mount::unmount(rootfs, rustix::mount::UnmountFlags::DETACH).ok();
        return Err(err.into());
    }
    Ok(())
}

/// The flags to remount a bind of a filesystem mounted with `mounted` so
/// that setuid bits and device nodes work, keeping the other flags; `None`
/// when it needs no remount.
fn remount_flags(mounted: StatVfsMountFlags) -> Option<MountFlags> {
    if !mounted.intersects(StatVfsMountFlags::NOSUID | StatVfsMountFlags::NODEV) {
        return None;
    }
    let mut flags = MountFlags::BIND;
    for (st, ms) in [
        (StatVfsMountFlags::RDONLY, MountFlags::RDONLY),
        (StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
        (StatVfsMountFlags::NOATIME, MountFlags::NOATIME),
        (StatVfsMountFlags::NODIRATIME, MountFlags::NODIRATIME),
        (StatVfsMountFlags::RELATIME, MountFlags::RELATIME),
    ] {
        if mounted.contains(st) {
            flags |= ms;
        }
    }
    Some(flags)
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(err) = root::remove_all(self.rootfs_fd.as_fd(), OsStr::new(STAGING)) {
                tracing::warn!(path = %self.path().display(), %err, "staging directory not removed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remount_clears_only_nosuid_and_nodev() {
        type S = StatVfsMountFlags;
        type M = MountFlags;
        for (mounted, expected) in [
            (S::empty(), None),
            (S::RELATIME | S::NOEXEC, None),
            (S::NOSUID | S::NODEV | S::RELATIME, Some(M::BIND | M::RELATIME)),
            (S::NOSUID, Some(M::BIND)),
            (S::NODEV | S::NOEXEC | S::NOATIME | S::RDONLY, Some(M::BIND | M::NOEXEC | M::NOATIME | M::RDONLY)),
        ] {
            assert_eq!(remount_flags(mounted), expected, "{mounted:?}");
        }
    }
}
