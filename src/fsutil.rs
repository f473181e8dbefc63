//! Reading a file PID 1 does not trust: one a container, a helper child or
//! the network wrote (a workflow, an image's config.json).
//!
//! PID 1's memory is the kernel's: a file is read only up to a limit, and
//! only if it is a regular file, so that a FIFO cannot block the boot and
//! `/dev/zero` behind a symlink cannot fill the heap.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("open {path}")]
    Open { path: PathBuf, #[source] source: std::io::Error },
    #[error("{path}: not a regular file")]
    NotFile { path: PathBuf },
    #[error("read {path}")]
    Read { path: PathBuf, #[source] source: std::io::Error },
    #[error("{path}: larger than the {limit} byte limit")]
    TooLarge { path: PathBuf, limit: u64 },
}

impl Error {
    /// Whether the file was not there (callers fall back on that).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// The whole of `path`, if it is a regular file of at most `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, Error> {
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused
    // just below). O_NOCTTY: PID 1 has no controlling terminal to gain.
    let flags = nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
        .map_err(|source| Error::Open { path: path.to_owned(), source })?;
    let meta = file.metadata().map_err(|source| Error::Read { path: path.to_owned(), source })?;
    if !meta.is_file() {
        return Err(Error::NotFile { path: path.to_owned() });
    }
    // The size is a hint only: a file may grow while it is read.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len().min(limit)).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| Error::Read { path: path.to_owned(), source })?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
        return Err(Error::TooLarge { path: path.to_owned(), limit });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_regular_files_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"12345").unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let link = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();

        assert_eq!(read_bounded(&file, 5).unwrap(), b"12345");
        assert_eq!(read_bounded(&file, 100).unwrap(), b"12345");
        let cases: &[(&Path, u64, String)] = &[
            (&file, 4, format!("{}: larger than the 4 byte limit", file.display())),
            (&fifo, 100, format!("{}: not a regular file", fifo.display())),
            (&link, 100, format!("{}: not a regular file", link.display())),
            (dir.path(), 100, format!("{}: not a regular file", dir.path().display())),
            (Path::new("/nonexistent/x"), 100, "open /nonexistent/x".to_string()),
        ];
        for (path, limit, message) in cases {
            let err = read_bounded(path, *limit).unwrap_err();
            assert_eq!(err.to_string(), *message, "{}", path.display());
        }
        assert!(read_bounded(Path::new("/nonexistent/x"), 1).unwrap_err().is_not_found());
    }
}
