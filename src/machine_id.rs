//! Phase "machine-id": a fresh identity for this boot, given to containers.
//!
//! Containers find it at `/iguana/machine-id` (the upstream contract) and
//! iguana's own `/etc/machine-id` holds the same value, in the format of
//! machine-id(5): 32 lowercase hex characters and a newline.
//!
//! A machine id must be unique, not secret, so it never waits for the
//! kernel's entropy pool: under TCG, with no RDRAND and few interrupts, a
//! plain `getrandom` blocked the boot for a second. `GRND_INSECURE` (Linux
//! 5.6) gives bytes at once; before 5.6, `GRND_NONBLOCK` gives them when the
//! pool happens to be ready, and otherwise a hash of what tells this machine
//! and this moment apart (DMI product UUID, MAC addresses, clocks) does.

use std::io::Read;
use std::path::{Path, PathBuf};

use rustix::rand::{getrandom, GetRandomFlags};
use sha2::{Digest, Sha256};

/// Bounds what is read from each sysfs file (a UUID or a MAC is < 64 bytes).
const MAX_SYSFS_READ: u64 = 256;
/// Bounds how many network interfaces feed the fallback hash.
const MAX_LINKS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("write {path}")]
    Write { path: PathBuf, #[source] source: std::io::Error },
}

/// Where the 16 bytes of an id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `getrandom(GRND_INSECURE)`: never blocks (Linux ≥ 5.6).
    Insecure,
    /// `getrandom(GRND_NONBLOCK)`: the pool was ready already.
    Nonblocking,
    /// SHA-256 of the DMI product UUID, the MAC addresses and the clocks.
    Hash,
}

/// Formats 16 random bytes as a machine id, marked as a random (v4) UUID the
/// way systemd does, so tools that parse it as a UUID are satisfied.
pub fn format(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    hex::encode(bytes)
}

/// 16 bytes unique to this boot, without ever waiting for entropy.
pub fn unique_bytes() -> ([u8; 16], Source) {
    let mut bytes = [0u8; 16];
    for (flags, source) in [(GetRandomFlags::INSECURE, Source::Insecure), (GetRandomFlags::NONBLOCK, Source::Nonblocking)] {
        if matches!(getrandom(&mut bytes, flags), Ok(n) if n == bytes.len()) {
            return (bytes, source);
        }
    }
    (derive(&identity_inputs(Path::new("/sys"), Path::new("/proc"))), Source::Hash)
}

/// The first 16 bytes of SHA-256 over `inputs`.
pub fn derive(inputs: &[u8]) -> [u8; 16] {
    let digest = Sha256::digest(inputs);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes
}

/// What tells this machine (DMI product UUID, MACs under `sys`) and this
/// boot (the kernel's boot id and uptime under `proc`, the wall clock, our
/// PID) apart, as bytes to hash.
fn identity_inputs(sys: &Path, proc: &Path) -> Vec<u8> {
    let mut inputs = Vec::new();
    read_bounded(&sys.join("class/dmi/id/product_uuid"), &mut inputs);
    if let Ok(entries) = std::fs::read_dir(sys.join("class/net")) {
        for entry in entries.flatten().take(MAX_LINKS) {
            read_bounded(&entry.path().join("address"), &mut inputs);
        }
    }
    read_bounded(&proc.join("sys/kernel/random/boot_id"), &mut inputs);
    read_bounded(&proc.join("uptime"), &mut inputs);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    inputs.extend_from_slice(&now.as_nanos().to_le_bytes());
    inputs.extend_from_slice(&std::process::id().to_le_bytes());
    inputs
}

fn read_bounded(path: &Path, into: &mut Vec<u8>) {
    if let Ok(file) = std::fs::File::open(path) {
        let _ = file.take(MAX_SYSFS_READ).read_to_end(into);
    }
}

/// Makes a new machine id and writes it to every path given.
pub fn provision(paths: &[&Path]) -> Result<(String, Source), Error> {
    let (bytes, source) = unique_bytes();
    let id = format(bytes);
    for path in paths {
        std::fs::write(path, format!("{id}\n"))
            .map_err(|source| Error::Write { path: path.to_path_buf(), source })?;
    }
    Ok((id, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_machine_id(id: &str) -> bool {
        id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    }

    #[test]
    fn formats_as_32_lowercase_hex() {
        let cases: &[([u8; 16], &str)] = &[
            ([0; 16], "00000000000040008000000000000000"),
            ([0xff; 16], "ffffffffffff4fffbfffffffffffffff"),
            // SHA-256("") begins e3b0c44298fc1c149afbf4c8996fb924.
            (derive(b""), "e3b0c44298fc4c149afbf4c8996fb924"),
        ];
        for (bytes, want) in cases {
            assert_eq!(format(*bytes), *want);
            assert!(is_machine_id(want));
        }
    }

    #[test]
    fn never_waits_for_entropy() {
        // Every kernel this runs on is ≥ 5.6: the insecure flag is taken.
        let (bytes, source) = unique_bytes();
        assert_eq!(source, Source::Insecure);
        assert_ne!(bytes, unique_bytes().0);
    }

    #[test]
    fn fallback_hash_tells_machines_and_moments_apart() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for (dir, uuid, mac) in [(&a, "4c4c4544-0042-3510-8052-b4c04f4d3732", "52:54:00:12:34:56"), (&b, "4c4c4544-0042-3510-8052-b4c04f4d3733", "52:54:00:12:34:56")] {
            std::fs::create_dir_all(dir.path().join("class/dmi/id")).unwrap();
            std::fs::create_dir_all(dir.path().join("class/net/eth0")).unwrap();
            std::fs::write(dir.path().join("class/dmi/id/product_uuid"), format!("{uuid}\n")).unwrap();
            std::fs::write(dir.path().join("class/net/eth0/address"), format!("{mac}\n")).unwrap();
        }
        let no_proc = tempfile::tempdir().unwrap();
        let inputs_a = identity_inputs(a.path(), no_proc.path());
        assert!(inputs_a.starts_with(b"4c4c4544-0042-3510-8052-b4c04f4d3732\n52:54:00:12:34:56\n"));
        assert_ne!(derive(&inputs_a), derive(&identity_inputs(b.path(), no_proc.path())), "another machine");
        assert_ne!(derive(&inputs_a), derive(&identity_inputs(a.path(), no_proc.path())), "a later moment");
        assert_eq!(derive(&inputs_a), derive(&inputs_a));
        // The real /proc adds this boot's id.
        let with_proc = identity_inputs(a.path(), Path::new("/proc"));
        assert!(with_proc.len() > inputs_a.len() + 36, "boot id and uptime read");
        // Nothing readable at all: the clock alone still differs.
        let empty = tempfile::tempdir().unwrap();
        let (x, y) = (identity_inputs(empty.path(), empty.path()), identity_inputs(empty.path(), empty.path()));
        assert_ne!(derive(&x), derive(&y));
    }

    #[test]
    fn provision_writes_the_same_id_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        let (id, _) = provision(&[&a, &b]).unwrap();
        assert!(is_machine_id(&id), "{id}");
        assert_eq!(std::fs::read_to_string(&a).unwrap(), format!("{id}\n"));
        assert_eq!(std::fs::read_to_string(&b).unwrap(), format!("{id}\n"));
        assert_ne!(provision(&[&a]).unwrap().0, id);
    }
}
