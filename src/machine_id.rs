//! Phase "machine-id": a fresh identity for this boot, given to containers.
//!
//! Containers find it at `/iguana/machine-id` (the upstream contract) and
//! iguana's own `/etc/machine-id` holds the same value, in the format of
//! machine-id(5): 32 lowercase hex characters and a newline.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read random bytes")]
    Random(#[source] std::io::Error),
    #[error("write {path}")]
    Write { path: PathBuf, #[source] source: std::io::Error },
}

/// Formats 16 random bytes as a machine id, marked as a random (v4) UUID the
/// way systemd does, so tools that parse it as a UUID are satisfied.
pub fn format(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    hex::encode(bytes)
}

/// Makes a new machine id and writes it to every path given.
pub fn provision(paths: &[&Path]) -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty())
        .map_err(|e| Error::Random(e.into()))?;
    let id = format(bytes);
    for path in paths {
        std::fs::write(path, format!("{id}\n"))
            .map_err(|source| Error::Write { path: path.to_path_buf(), source })?;
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_32_lowercase_hex() {
        let cases: &[([u8; 16], &str)] = &[
            ([0; 16], "00000000000040008000000000000000"),
            ([0xff; 16], "ffffffffffff4fffbfffffffffffffff"),
        ];
        for (bytes, want) in cases {
            assert_eq!(format(*bytes), *want);
        }
    }

    #[test]
    fn provision_writes_the_same_id_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        let id = provision(&[&a, &b]).unwrap();
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(std::fs::read_to_string(&a).unwrap(), format!("{id}\n"));
        assert_eq!(std::fs::read_to_string(&b).unwrap(), format!("{id}\n"));
        assert_ne!(provision(&[&a]).unwrap(), id);
    }
}
