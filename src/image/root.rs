//! Filesystem operations confined to an unpack root.
//!
//! Architecture invariant: nothing is written or deleted outside the root,
//! whatever the layers contain. Two rules give that:
//! - entry paths are normalized lexically first ([`EntryPath::parse`]):
//!   a leading `/` is dropped and any `..` component rejects the entry;
//! - a parent directory is only ever opened with `openat2(RESOLVE_IN_ROOT |
//!   RESOLVE_NO_MAGICLINKS)` relative to the root's fd, so symlinks met on
//!   the way (even absolute or `../..` ones, planted by an earlier layer)
//!   resolve as if the root were `/`. The final component is then handled
//!   with `*at()` calls that do not follow it (`O_NOFOLLOW`, `O_EXCL`,
//!   `AT_SYMLINK_NOFOLLOW`, `unlinkat`).
//!
//! A directory made because an entry's parent is missing gets 0755
//! root:root, as umoci gives it. A layer unpacked into a directory of its
//! own for an overlay has no lower layers below it to merge into, so there
//! the directory copies the owner and mode the lower layers' merged view
//! has at that path ([`Root::with_lowers`]): otherwise the overlay would
//! show this layer's made-up directory over the real one.

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Why an entry path was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path has a '..' component")]
    DotDot,
    #[error("path has a NUL byte")]
    Nul,
}

/// A normalized path inside the root, split into its parent directory
/// (relative, empty for top-level entries) and its final component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPath {
    pub parent: PathBuf,
    pub name: OsString,
}

impl EntryPath {
    /// Normalizes a tar path. `Ok(None)` means the root itself (`./`, `/`).
    pub fn parse(raw: &[u8]) -> Result<Option<EntryPath>, PathError> {
        if raw.contains(&0) {
            return Err(PathError::Nul);
        }
        let mut parts = Vec::new();
        for part in raw.split(|&b| b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => return Err(PathError::DotDot),
                part => parts.push(OsStr::from_bytes(part)),
            }
        }
        let Some((name, parents)) = parts.split_last() else {
            return Ok(None);
        };
        Ok(Some(EntryPath {
            parent: parents.iter().collect(),
            name: name.to_os_string(),
        }))
    }

    /// The whole relative path.
    pub fn full(&self) -> PathBuf {
        self.parent.join(&self.name)
    }
}

/// Symlinks followed when creating directories, as the kernel's limit.
const MAX_SYMLINK_HOPS: u32 = 40;

/// Where symlink `target`, found in directory `dir`, points: a path
/// relative to the root, `..` clamped at the root as RESOLVE_IN_ROOT does.
/// (Only used to choose directories to create; every open still goes
/// through openat2, so an imprecise answer cannot leave the root.)
fn join_in_root(dir: &Path, target: &[u8]) -> PathBuf {
    let mut parts: Vec<&OsStr> = match target.first() {
        Some(b'/') => Vec::new(),
        _ => dir.iter().collect(),
    };
    for part in target.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            part => parts.push(OsStr::from_bytes(part)),
        }
    }
    parts.iter().collect()
}

/// Mode of a directory made for a missing parent, as umoci makes it.
const IMPLICIT_DIR_MODE: u32 = 0o755;

const OVERLAY_OPAQUE: &str = "trusted.overlay.opaque";

/// An open root directory; every lookup is resolved inside it.
pub struct Root {
    fd: OwnedFd,
    /// Layer directories below this one, top first (overlay form only),
    /// opened when first needed.
    lowers: std::cell::OnceCell<Vec<OwnedFd>>,
    lower_paths: Vec<PathBuf>,
    /// Waits until the layers below are complete: they may be unpacking
    /// at the same time as this one.
    ready: Option<LowersReady>,
    /// The root still takes its owner and mode from the lowers at
    /// [`Root::finish`]: no `./` entry gave them.
    root_inherits: std::cell::Cell<bool>,
}

/// Returns once the lower layers are complete, or fails if one failed.
pub type LowersReady = Box<dyn Fn() -> io::Result<()> + Send>;

impl Root {
    /// Opens the directory `path` as a root.
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = rfs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root::with_fd(fd))
    }

    /// Opens the directory `name` in `dir` as a root, not following a symlink.
    pub fn open_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Root> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rfs::openat(dir, name, flags, Mode::empty())?;
        Ok(Root::with_fd(fd))
    }

    /// A root for one layer of an overlay whose lower layers are the
    /// directories `lowers` (top first): directories made for missing
    /// parents, and the root itself until a `./` entry, take the owner and
    /// mode the lowers' merged view has at the same path.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn with_lowers(mut self, lowers: &[PathBuf]) -> io::Result<Root> {
        self.lower_paths = lowers.to_vec();
        self.inherit(self.fd.as_fd(), OsStr::new("."), Path::new(""))?;
        Ok(self)
    }

    /// [`Root::with_lowers`] for lowers that may still be unpacking: the
    /// first directory made for a missing parent waits for them (`ready`),
    /// and the root takes its owner and mode at [`Root::finish`].
    pub fn with_lowers_later(mut self, lowers: &[PathBuf], ready: LowersReady) -> Root {
        self.lower_paths = lowers.to_vec();
        self.ready = Some(ready);
        self.root_inherits.set(true);
        self
    }

    /// A `./` entry gave the root its owner and mode.
    pub fn root_entry_seen(&self) {
        self.root_inherits.set(false);
    }

    /// Gives the root the lowers' owner and mode if no `./` entry did
    /// (after waiting for the lowers, with [`Root::with_lowers_later`]).
    pub fn finish(&self) -> io::Result<()> {
        if self.root_inherits.replace(false) {
            self.inherit(self.fd.as_fd(), OsStr::new("."), Path::new(""))?;
        }
        Ok(())
    }

    fn with_fd(fd: OwnedFd) -> Root {
        Root {
            fd,
            lowers: std::cell::OnceCell::new(),
            lower_paths: Vec::new(),
            ready: None,
            root_inherits: std::cell::Cell::new(false),
        }
    }

    /// The lower layers, opened (once they are complete) on first use.
    fn lowers(&self) -> io::Result<&[OwnedFd]> {
        if let Some(lowers) = self.lowers.get() {
            return Ok(lowers);
        }
        if let Some(ready) = &self.ready {
            ready()?;
        }
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let opened = self
            .lower_paths
            .iter()
            .map(|path| rfs::open(path, flags, Mode::empty()).map_err(io::Error::from))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(self.lowers.get_or_init(|| opened))
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens the directory `rel` (an `O_PATH` fd), resolving every symlink
    /// inside the root. With `create`, missing directories are made (0755),
    /// also where a symlink points (`lib -> usr/lib` before `usr/lib` exists),
    /// as Docker does.
    pub fn dir(&self, rel: &Path, create: bool) -> io::Result<OwnedFd> {
        self.dir_hops(rel, create, 0)
    }

    fn dir_hops(&self, rel: &Path, create: bool, hops: u32) -> io::Result<OwnedFd> {
        match self.resolve(rel) {
            Err(Errno::NOENT) if create => {
                let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
                    return Err(Errno::NOENT.into());
                };
                let parent_fd = self.dir_hops(parent, true, hops)?;
                match rfs::mkdirat(&parent_fd, name, Mode::from_raw_mode(IMPLICIT_DIR_MODE)) {
                    Ok(()) => self.inherit(parent_fd.as_fd(), name, rel)?,
                    Err(Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                match self.resolve(rel) {
                    // Still missing: `name` is a dangling symlink. Make its
                    // target, bounded like the kernel's symlink hops.
                    Err(Errno::NOENT) if hops < MAX_SYMLINK_HOPS => {
                        let target = rfs::readlinkat(&parent_fd, name, Vec::new())?;
                        let target = join_in_root(parent, target.as_bytes());
                        self.dir_hops(&target, true, hops + 1)?;
                        Ok(self.resolve(rel)?)
                    }
                    other => Ok(other?),
                }
            }
            other => Ok(other?),
        }
    }

    /// Gives the directory `name` in `parent`, which this unpack just
    /// made for the root-relative path `rel`, its owner and mode: those of
    /// the lower layers' directory at `rel`, else 0755 root:root (the
    /// umask trimmed what mkdir set).
    fn inherit(&self, parent: BorrowedFd<'_>, name: &OsStr, rel: &Path) -> io::Result<()> {
        let (uid, gid, mode) = self.lower_dir(rel)?.unwrap_or((0, 0, IMPLICIT_DIR_MODE));
        let dir = open_dir_at(parent, name)?;
        if rustix::process::geteuid().is_root() {
            rfs::fchown(&dir, Some(rfs::Uid::from_raw(uid)), Some(rfs::Gid::from_raw(gid)))?;
        }
        rfs::fchmod(&dir, Mode::from_raw_mode(mode))?;
        Ok(())
    }

    /// Owner and mode of the directory at `rel` in the merged view of the
    /// lower layers, as overlayfs merges them: the topmost layer that has
    /// `rel` decides; a whiteout or file on the way, or an opaque directory
    /// above `rel`, hides the layers below.
    fn lower_dir(&self, rel: &Path) -> io::Result<Option<(u32, u32, u32)>> {
        if self.lower_paths.is_empty() {
            return Ok(None);
        }
        for lower in self.lowers()? {
            match lookup_in_layer(lower.as_fd(), rel)? {
                Lookup::Dir(st) => return Ok(Some(st)),
                Lookup::Hidden => return Ok(None),
                Lookup::Absent => {}
            }
        }
        Ok(None)
    }

    fn resolve(&self, rel: &Path) -> Result<OwnedFd, Errno> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        // EAGAIN: the kernel saw a concurrent rename during a ".." walk; retry.
        let mut result = rfs::openat2(&self.fd, rel, flags, Mode::empty(), resolve);
        for _ in 0..8 {
            if !matches!(result, Err(Errno::AGAIN)) {
                break;
            }
            result = rfs::openat2(&self.fd, rel, flags, Mode::empty(), resolve);
        }
        result
    }
}

/// What one lower layer has at a path.
#[derive(Debug, PartialEq, Eq)]
enum Lookup {
    /// A directory: (uid, gid, mode).
    Dir((u32, u32, u32)),
    /// Not there, and nothing of this layer hides the layers below.
    Absent,
    /// Something that is not a directory, or an opaque directory above it:
    /// the layers below do not show at this path.
    Hidden,
}

/// Walks `rel` component by component in one layer directory, never
/// following a symlink (one on the way counts as hiding: the merged view
/// has a link there, not a directory).
fn lookup_in_layer(layer: BorrowedFd<'_>, rel: &Path) -> io::Result<Lookup> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir = rfs::openat(layer, ".", flags, Mode::empty())?;
    let mut opaque = false;
    for part in rel.iter() {
        let st = match rfs::statat(&dir, part, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) if opaque => return Ok(Lookup::Hidden),
            Err(Errno::NOENT) => return Ok(Lookup::Absent),
            Err(e) => return Err(e.into()),
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Ok(Lookup::Hidden);
        }
        dir = rfs::openat(&dir, part, flags | OFlags::DIRECTORY, Mode::empty())?;
        let readable = open_dir_at(dir.as_fd(), OsStr::new("."))?;
        let mut value = [0u8; 1];
        opaque |= matches!(rfs::fgetxattr(&readable, OVERLAY_OPAQUE, &mut value), Ok(1) if value == *b"y");
    }
    let st = rfs::fstat(&dir)?;
    Ok(Lookup::Dir((st.st_uid, st.st_gid, st.st_mode & 0o7777)))
}

/// Opens `name` in `dir` as a readable directory, never following a symlink.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rfs::openat(dir, name, flags, Mode::empty())?)
}

/// The type of `name` in `dir` (not following a symlink), or `None`.
pub fn kind_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<FileType>> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The names in a readable directory fd, without `.` and `..`.
pub fn list(dir: OwnedFd) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in rfs::Dir::new(dir)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name));
        }
    }
    Ok(names)
}

/// Removes `name` from `dir` and, for a directory, everything below it.
/// Symlinks are removed, never followed. A missing `name` is not an error.
pub fn remove_all(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR) => {
            let sub = open_dir_at(dir, name)?;
            let sub_path = sub.try_clone()?;
            for child in list(sub)? {
                remove_all(sub_path.as_fd(), &child)?;
            }
            match rfs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, expected: Parsed<'_>) {
        let expected = expected.map(|o| {
            o.map(|(parent, name)| EntryPath {
                parent: parent.into(),
                name: name.into(),
            })
        });
        assert_eq!(EntryPath::parse(raw.as_bytes()), expected, "path {raw:?}");
    }

    /// (parent, name) of a parsed path, `None` for the root.
    type Parsed<'a> = Result<Option<(&'a str, &'a str)>, PathError>;

    #[test]
    fn symlink_targets_in_root() {
        for (dir, target, expected) in [
            ("", "usr/lib", "usr/lib"),
            ("", "/usr/lib", "usr/lib"),
            ("a/b", "../c", "a/c"),
            ("a/b", "../../../../c", "c"),
            ("a", "/", ""),
            ("a", "./x/./y/", "a/x/y"),
        ] {
            assert_eq!(
                join_in_root(Path::new(dir), target.as_bytes()),
                Path::new(expected),
                "{dir} {target}"
            );
        }
    }

    #[test]
    fn entry_paths() {
        let cases: &[(&str, Parsed<'_>)] = &[
            ("etc/passwd", Ok(Some(("etc", "passwd")))),
            ("./etc/passwd", Ok(Some(("etc", "passwd")))),
            ("/etc/passwd", Ok(Some(("etc", "passwd")))),
            ("//etc//./passwd/", Ok(Some(("etc", "passwd")))),
            ("bin", Ok(Some(("", "bin")))),
            ("usr/lib/", Ok(Some(("usr", "lib")))),
            ("a/b/.wh.c", Ok(Some(("a/b", ".wh.c")))),
            ("./", Ok(None)),
            ("/", Ok(None)),
            (".", Ok(None)),
            ("", Ok(None)),
            ("../escape", Err(PathError::DotDot)),
            ("a/../../escape", Err(PathError::DotDot)),
            ("a/..", Err(PathError::DotDot)),
            ("/..", Err(PathError::DotDot)),
            ("a\0b", Err(PathError::Nul)),
            ("...", Ok(Some(("", "...")))),
            ("a/..b", Ok(Some(("a", "..b")))),
        ];
        for (raw, expected) in cases {
            check(raw, expected.clone());
        }
    }
}
