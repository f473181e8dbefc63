//! Applying one layer (an uncompressed tar stream) onto a root directory,
//! with OCI whiteouts, safely against hostile archives.
//!
//! The tar crate only parses; every filesystem change goes through
//! [`crate::image::root`], so no entry can reach outside the root (see the
//! invariant there). Entries replace what lower layers left at the same
//! path; a file is always unlinked and created anew (`O_EXCL`), so writing
//! never goes through a planted symlink or into a hard-linked lower file.
//!
//! Whiteouts: `DIR/.wh.NAME` deletes `DIR/NAME` from lower layers and
//! `DIR/.wh..wh..opq` empties `DIR` of lower-layer content. Paths created by
//! the current layer (and their ancestors) are remembered so that neither
//! kind deletes them, whatever the order of entries in the archive.
//!
//! A layer unpacked on its own, as one lower directory of an overlayfs
//! ([`Whiteouts::Overlay`]), keeps its whiteouts in overlayfs form instead:
//! `.wh.NAME` becomes a character device 0/0 named NAME, and an opaque
//! directory gets the xattr `trusted.overlay.opaque=y`. The same "only
//! lower layers" rule holds: a path this layer creates is never turned into
//! a whiteout, and a directory that replaces one is made opaque.

use super::root::{self, EntryPath, PathError, Root};
use rustix::fs::{
    self as rfs, AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const XATTR_PAX_PREFIX: &str = "SCHILY.xattr.";
const COPY_BUFFER: usize = 256 << 10;
const OVERLAY_OPAQUE: &str = "trusted.overlay.opaque";

/// What a layer's whiteouts do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Delete from the root below (a flattened rootfs).
    Apply,
    /// Record in overlayfs form (a layer directory of its own).
    Overlay,
}

/// A layer that could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("open unpack root {path}")]
    OpenRoot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read layer archive")]
    Archive(#[source] io::Error),
    #[error("entry {path:?}")]
    Entry {
        path: String,
        #[source]
        source: EntryError,
    },
}

/// What went wrong with one archive entry.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("hard link target {target:?}")]
    LinkTarget {
        target: String,
        #[source]
        source: PathError,
    },
    #[error("invalid whiteout name {0:?}")]
    Whiteout(String),
    #[error("a {0:?} entry cannot replace the root directory")]
    ReplacesRoot(tar::EntryType),
    #[error("bad header field")]
    Header(#[source] io::Error),
    #[error("{call}")]
    Syscall {
        call: &'static str,
        #[source]
        source: io::Error,
    },
}

impl UnpackError {
    /// A hard link whose target is not in this archive's tree: in a layer
    /// unpacked on its own, a link to a file of a lower layer.
    pub fn is_missing_link_target(&self) -> bool {
        matches!(
            self,
            UnpackError::Entry { source: EntryError::Syscall { call: "linkat" | "openat2 link target", source }, .. }
                if source.kind() == io::ErrorKind::NotFound
        )
    }
}

/// Copies all of `from` into `to` through `buf` (grown to [`COPY_BUFFER`]
/// on first use).
fn copy<R: Read, W: io::Write>(from: &mut R, to: &mut W, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.resize(COPY_BUFFER, 0);
    loop {
        let n = match from.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(buf.get(..n).unwrap_or_default())?;
    }
}

/// Tags an I/O error with the call that failed.
fn sys<E: Into<io::Error>>(call: &'static str) -> impl FnOnce(E) -> EntryError {
    move |e| EntryError::Syscall {
        call,
        source: e.into(),
    }
}

/// Owner, mode and mtime of an entry, from its header.
struct Meta {
    uid: Uid,
    gid: Gid,
    mode: Mode,
    mtime: Timestamps,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// Applies one layer onto a root, deleting what its whiteouts name.
/// Returns the reader positioned after the archive, so the caller can hash
/// the rest of the stream.
#[cfg_attr(not(test), allow(dead_code))]
pub fn apply_layer<R: Read>(root: &Root, tar: R) -> Result<R, UnpackError> {
    apply_layer_as(root, tar, Whiteouts::Apply)
}

/// Applies one layer (an uncompressed tar stream) onto the directory
/// `dir`: the entry point for the fuzz target and tools that hold a path.
pub fn apply_layer_at<R: Read>(dir: &Path, tar: R, whiteouts: Whiteouts) -> Result<(), UnpackError> {
    let root = Root::open(dir).map_err(|source| UnpackError::OpenRoot { path: dir.to_path_buf(), source })?;
    apply_layer_as(&root, tar, whiteouts).map(drop)
}

/// [`apply_layer`], with whiteouts handled as `whiteouts` says.
pub fn apply_layer_as<R: Read>(root: &Root, tar: R, whiteouts: Whiteouts) -> Result<R, UnpackError> {
    let mut layer = Layer {
        root,
        whiteouts,
        privileged: rustix::process::geteuid().is_root(),
        created: HashSet::new(),
        dir_times: Vec::new(),
        buf: Vec::new(),
    };
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(UnpackError::Archive)? {
        let mut entry = entry.map_err(UnpackError::Archive)?;
        let raw = entry.path_bytes().into_owned();
        layer
            .entry(&raw, &mut entry)
            .map_err(|source| UnpackError::Entry {
                path: String::from_utf8_lossy(&raw).into_owned(),
                source,
            })?;
    }
    layer.set_dir_times();
    Ok(archive.into_inner())
}

struct Layer<'a> {
    root: &'a Root,
    whiteouts: Whiteouts,
    privileged: bool,
    /// Paths this layer created, with all their ancestors.
    created: HashSet<PathBuf>,
    /// Directory mtimes, set after the layer since children change them.
    dir_times: Vec<(Option<EntryPath>, Timestamps)>,
    /// File content passes through here: one buffer for the whole layer,
    /// larger than `io::copy`'s 8 KiB, so big files take fewer syscalls.
    buf: Vec<u8>,
}

impl Layer<'_> {
    fn entry<R: Read>(
        &mut self,
        raw: &[u8],
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), EntryError> {
        let kind = entry.header().entry_type();
        let Some(path) = EntryPath::parse(raw)? else {
            return match kind {
                tar::EntryType::Directory => self.root_dir(&meta(entry)?),
                other => Err(EntryError::ReplacesRoot(other)),
            };
        };
        let name = path.name.as_bytes();
        if name == OPAQUE_MARKER {
            return self.opaque(&path.parent);
        }
        if name.starts_with(b".wh..wh.") {
            return Ok(()); // AUFS bookkeeping (.wh..wh.plnk and friends): not content.
        }
        if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(&path.parent, target);
        }
        let parent = self
            .root
            .dir(&path.parent, true)
            .map_err(sys("openat2 parent"))?;
        self.mark_created(&path.full());
        let name = path.name.as_os_str();
        match kind {
            tar::EntryType::Directory => {
                let meta = meta(entry)?;
                self.directory(parent.as_fd(), name, &meta)?;
                self.dir_times.push((Some(path), meta.mtime));
                Ok(())
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let meta = meta(entry)?;
                self.file(parent.as_fd(), name, entry, &meta)
            }
            tar::EntryType::Symlink => {
                let meta = meta(entry)?;
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                replace(parent.as_fd(), name)?;
                rfs::symlinkat(OsStr::from_bytes(&target), &parent, name)
                    .map_err(sys("symlinkat"))?;
                self.chown_nofollow(parent.as_fd(), name, &meta)?;
                rfs::utimensat(&parent, name, &meta.mtime, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(sys("utimensat"))
            }
            tar::EntryType::Link => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                self.hardlink(parent.as_fd(), &path, &target)
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let meta = meta(entry)?;
                self.node(parent.as_fd(), name, kind, entry.header(), &meta)
            }
            // pax global headers (git archive writes one) carry no file.
            tar::EntryType::XGlobalHeader => Ok(()),
            other => {
                tracing::warn!(path = %path.full().display(), kind = ?other, "skipping unsupported tar entry");
                Ok(())
            }
        }
    }

    fn mark_created(&mut self, path: &Path) {
        for ancestor in path.ancestors() {
            if !self.created.insert(ancestor.to_path_buf()) {
                break;
            }
        }
    }

    /// `./` in the archive: owner and mode of the root itself.
    fn root_dir(&mut self, meta: &Meta) -> Result<(), EntryError> {
        let fd = root::open_dir_at(self.root.fd(), OsStr::new(".")).map_err(sys("openat root"))?;
        self.set_owner_mode(fd.as_fd(), meta)?;
        self.root.root_entry_seen();
        self.dir_times.push((None, meta.mtime.clone()));
        Ok(())
    }

    fn directory(
        &self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        meta: &Meta,
    ) -> Result<(), EntryError> {
        // An existing directory is merged into; anything else is replaced.
        let existing = root::kind_at(parent, name).map_err(sys("fstatat"))?;
        if existing != Some(FileType::Directory) {
            replace(parent, name)?;
            rfs::mkdirat(parent, name, Mode::from_raw_mode(0o700)).map_err(sys("mkdirat"))?;
        }
        let fd = root::open_dir_at(parent, name).map_err(sys("openat directory"))?;
        self.set_owner_mode(fd.as_fd(), meta)?;
        set_xattrs(fd.as_fd(), name, &meta.xattrs);
        // Flattened, a whiteout then a directory of the same name leaves
        // only this layer's content; on an overlay that takes opacity.
        if self.whiteouts == Whiteouts::Overlay && existing == Some(FileType::CharacterDevice) {
            set_opaque(fd.as_fd())?;
        }
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        content: &mut R,
        meta: &Meta,
    ) -> Result<(), EntryError> {
        replace(parent, name)?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rfs::openat(parent, name, flags, Mode::from_raw_mode(0o600))
            .map_err(sys("openat O_CREAT|O_EXCL"))?;
        let mut file = File::from(fd);
        copy(content, &mut file, &mut self.buf).map_err(sys("write file content"))?;
        self.set_owner_mode(file.as_fd(), meta)?;
        set_xattrs(file.as_fd(), name, &meta.xattrs);
        rfs::futimens(&file, &meta.mtime).map_err(sys("futimens"))
    }

    fn hardlink(
        &mut self,
        parent: BorrowedFd<'_>,
        path: &EntryPath,
        raw_target: &[u8],
    ) -> Result<(), EntryError> {
        let link_err = |source| EntryError::LinkTarget {
            target: String::from_utf8_lossy(raw_target).into_owned(),
            source,
        };
        let target = EntryPath::parse(raw_target)
            .map_err(link_err)?
            .ok_or(EntryError::ReplacesRoot(tar::EntryType::Link))?;
        if target == *path {
            return Ok(()); // A link to itself: the file is already there.
        }
        let target_parent = self
            .root
            .dir(&target.parent, false)
            .map_err(sys("openat2 link target"))?;
        replace(parent, &path.name)?;
        // linkat without AT_SYMLINK_FOLLOW links a symlink itself, never
        // what it points to, so the target cannot leave the root either.
        rfs::linkat(
            &target_parent,
            &target.name,
            parent,
            &path.name,
            AtFlags::empty(),
        )
        .map_err(sys("linkat"))
    }

    fn node(
        &self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        kind: tar::EntryType,
        header: &tar::Header,
        meta: &Meta,
    ) -> Result<(), EntryError> {
        let (file_type, dev) = match kind {
            tar::EntryType::Fifo => (FileType::Fifo, 0),
            _ => {
                if !self.privileged {
                    tracing::warn!(name = %name.to_string_lossy(), "not root: skipping device node");
                    return Ok(());
                }
                let major = header
                    .device_major()
                    .map_err(EntryError::Header)?
                    .unwrap_or(0);
                let minor = header
                    .device_minor()
                    .map_err(EntryError::Header)?
                    .unwrap_or(0);
                let file_type = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    _ => FileType::BlockDevice,
                };
                (file_type, rfs::makedev(major, minor))
            }
        };
        replace(parent, name)?;
        rfs::mknodat(parent, name, file_type, Mode::from_raw_mode(0o600), dev)
            .map_err(sys("mknodat"))?;
        self.chown_nofollow(parent, name, meta)?;
        // The node was just made by us and is not a symlink, so following
        // the final component here is safe.
        rfs::chmodat(parent, name, meta.mode, AtFlags::empty()).map_err(sys("fchmodat"))?;
        rfs::utimensat(parent, name, &meta.mtime, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(sys("utimensat"))
    }

    fn whiteout(&mut self, dir: &Path, target: &[u8]) -> Result<(), EntryError> {
        if target.is_empty() || target == b"." || target == b".." {
            return Err(EntryError::Whiteout(
                String::from_utf8_lossy(target).into_owned(),
            ));
        }
        let target = OsStr::from_bytes(target);
        if self.created.contains(&dir.join(target)) {
            return Ok(()); // Whiteouts only hide lower layers.
        }
        if self.whiteouts == Whiteouts::Overlay {
            let parent = self
                .root
                .dir(dir, true)
                .map_err(sys("openat2 whiteout parent"))?;
            replace(parent.as_fd(), target)?;
            return rfs::mknodat(&parent, target, FileType::CharacterDevice, Mode::empty(), 0)
                .map_err(sys("mknodat overlay whiteout"));
        }
        let parent = match self.root.dir(dir, false) {
            Ok(fd) => fd,
            // Nothing below a missing (or non-directory) parent to delete.
            Err(e) if matches!(Errno::from_io_error(&e), Some(Errno::NOENT | Errno::NOTDIR)) => {
                return Ok(())
            }
            Err(e) => {
                return Err(EntryError::Syscall {
                    call: "openat2 whiteout parent",
                    source: e,
                })
            }
        };
        root::remove_all(parent.as_fd(), target).map_err(sys("remove whited-out path"))
    }

    fn opaque(&mut self, dir: &Path) -> Result<(), EntryError> {
        let fd = self
            .root
            .dir(dir, true)
            .map_err(sys("openat2 opaque directory"))?;
        self.mark_created(dir);
        let readable = root::open_dir_at(fd.as_fd(), OsStr::new("."))
            .map_err(sys("openat opaque directory"))?;
        if self.whiteouts == Whiteouts::Overlay {
            // Everything in this directory is this layer's own: keep it.
            return set_opaque(readable.as_fd());
        }
        let names: Vec<OsString> = root::list(readable).map_err(sys("getdents"))?;
        for name in names {
            if !self.created.contains(&dir.join(&name)) {
                root::remove_all(fd.as_fd(), &name)
                    .map_err(sys("remove under opaque directory"))?;
            }
        }
        Ok(())
    }

    fn set_owner_mode(&self, fd: BorrowedFd<'_>, meta: &Meta) -> Result<(), EntryError> {
        if self.privileged {
            rfs::fchown(fd, Some(meta.uid), Some(meta.gid)).map_err(sys("fchown"))?;
        }
        // After chown, which clears set-id bits.
        rfs::fchmod(fd, meta.mode).map_err(sys("fchmod"))
    }

    fn chown_nofollow(
        &self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        meta: &Meta,
    ) -> Result<(), EntryError> {
        if !self.privileged {
            return Ok(());
        }
        rfs::chownat(
            parent,
            name,
            Some(meta.uid),
            Some(meta.gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(sys("fchownat"))
    }

    /// Sets directory mtimes last, deepest first; a directory removed later
    /// in the layer is skipped.
    fn set_dir_times(&self) {
        for (path, times) in self.dir_times.iter().rev() {
            let result = match path {
                None => rfs::utimensat(self.root.fd(), ".", times, AtFlags::empty())
                    .map_err(io::Error::from),
                Some(path) => self.root.dir(&path.parent, false).and_then(|parent| {
                    Ok(rfs::utimensat(
                        &parent,
                        &path.name,
                        times,
                        AtFlags::SYMLINK_NOFOLLOW,
                    )?)
                }),
            };
            if let Err(err) = result {
                tracing::debug!(?path, %err, "directory mtime not set");
            }
        }
    }
}

/// Marks a directory opaque for overlayfs: lower layers' content under it
/// is hidden.
fn set_opaque(dir: BorrowedFd<'_>) -> Result<(), EntryError> {
    rfs::fsetxattr(dir, OVERLAY_OPAQUE, b"y", XattrFlags::empty())
        .map_err(sys("fsetxattr trusted.overlay.opaque"))
}

/// Clears the way for a new entry: whatever is at `name` goes, including a
/// whole directory tree.
fn replace(parent: BorrowedFd<'_>, name: &OsStr) -> Result<(), EntryError> {
    root::remove_all(parent, name).map_err(sys("remove existing path"))
}

fn meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta, EntryError> {
    let header = entry.header();
    let old = header.as_old();
    let id = |field: &[u8], parsed: io::Result<u64>| {
        let n = numeric(field, parsed)?;
        u32::try_from(n).map_err(|e| EntryError::Header(io::Error::other(e)))
    };
    let uid = id(&old.uid, header.uid())?;
    let gid = id(&old.gid, header.gid())?;
    let mode =
        u32::try_from(numeric(&old.mode, header.mode().map(u64::from))? & 0o7777).unwrap_or(0);
    let secs = i64::try_from(numeric(&old.mtime, header.mtime())?).unwrap_or(0);
    let at = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let mut xattrs = Vec::new();
    if let Some(pax) = entry.pax_extensions().map_err(EntryError::Header)? {
        for ext in pax {
            let ext = ext.map_err(EntryError::Header)?;
            if let Some(name) = ext
                .key()
                .ok()
                .and_then(|k| k.strip_prefix(XATTR_PAX_PREFIX))
            {
                xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(Meta {
        uid: Uid::from_raw(uid),
        gid: Gid::from_raw(gid),
        mode: Mode::from_raw_mode(mode),
        mtime: Timestamps {
            last_access: at,
            last_modification: at,
        },
        xattrs,
    })
}

/// A numeric header field; an empty one (all NUL or spaces) reads as 0, as
/// Go's archive/tar does, since some layer writers leave fields blank.
fn numeric(field: &[u8], parsed: io::Result<u64>) -> Result<u64, EntryError> {
    if field.iter().all(|&b| b == 0 || b == b' ') {
        return Ok(0);
    }
    parsed.map_err(EntryError::Header)
}

/// Extended attributes are best effort: the unpack filesystem (tmpfs) may
/// not take every namespace, and a missing one is not worth failing a boot.
/// Overlay's own attributes are never taken from an image.
fn set_xattrs(fd: BorrowedFd<'_>, name: &OsStr, xattrs: &[(String, Vec<u8>)]) {
    for (key, value) in xattrs {
        if key.starts_with("trusted.overlay.") {
            continue;
        }
        if let Err(err) = rfs::fsetxattr(fd, key.as_str(), value, XattrFlags::empty()) {
            tracing::warn!(name = %name.to_string_lossy(), key, %err, "xattr not set");
        }
    }
}
