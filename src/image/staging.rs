//! The staging directory of an unpack: layers are applied into
//! `ROOTFS/.iguana-unpack` and moved up into ROOTFS only when every layer
//! has verified, so a failed or interrupted pull never leaves a
//! half-unpacked tree that looks usable. Staging *inside* ROOTFS keeps the
//! final renames on one filesystem, even when ROOTFS is a mount point.

use super::root::{self, Root};
use rustix::fs::{self as rfs, AtFlags, Gid, Mode, OFlags, Timestamps, Uid};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Name of the staging directory inside the rootfs.
pub const STAGING: &str = ".iguana-unpack";

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
        let rootfs_fd =
            rfs::open(rootfs, flags, Mode::empty()).map_err(|e| io_err("open")(e.into()))?;
        let names =
            root::list(rootfs_fd.try_clone().map_err(io_err("dup"))?).map_err(io_err("list"))?;
        // lost+found is what a fresh ext4 mount holds; it is not content.
        if names.iter().any(|n| n != STAGING && n != "lost+found") {
            return Err(StagingError::NotEmpty(rootfs.to_path_buf()));
        }
        root::remove_all(rootfs_fd.as_fd(), OsStr::new(STAGING))
            .map_err(io_err("remove stale staging in"))?;
        rfs::mkdirat(&rootfs_fd, STAGING, Mode::from_raw_mode(0o700))
            .map_err(|e| io_err("create staging in")(e.into()))?;
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

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(err) = root::remove_all(self.rootfs_fd.as_fd(), OsStr::new(STAGING)) {
                tracing::warn!(path = %self.path().display(), %err, "staging directory not removed");
            }
        }
    }
}
