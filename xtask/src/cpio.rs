//! A writer for the "newc" cpio format the kernel unpacks as initramfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst).
//!
//! The archive is built from an in-memory map of paths, so entries come out
//! sorted and every parent directory precedes its children: the kernel's
//! unpacker does not create missing parents. Timestamps and owners are
//! fixed, so the same inputs give the same bytes.

use std::collections::BTreeMap;

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDev { mode: u32, major: u32, minor: u32 },
}

/// An archive under construction; paths are relative, without a leading `/`.
#[derive(Debug, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    /// Adds an entry, creating its missing parent directories (mode 0755).
    /// A later entry for the same path replaces the earlier one.
    pub fn add(&mut self, path: &str, entry: Entry) {
        let path = path.trim_matches('/');
        let mut parent = String::new();
        for component in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, p)| p)
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(component);
            self.entries
                .entry(parent.clone())
                .or_insert(Entry::Dir { mode: 0o755 });
        }
        self.entries.insert(path.to_owned(), entry);
    }

    pub fn dir(&mut self, path: &str) {
        self.add(path, Entry::Dir { mode: 0o755 });
    }

    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        self.add(path, Entry::File { mode, data });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.add(
            path,
            Entry::Symlink {
                target: target.to_owned(),
            },
        );
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path.trim_matches('/'))
    }

    /// The whole archive, trailer included, uncompressed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            let ino = u32::try_from(ino + 1).unwrap_or(u32::MAX);
            let (mode, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match entry {
                Entry::Dir { mode } => (S_IFDIR | mode, 2, &[], (0, 0)),
                Entry::File { mode, data } => (S_IFREG | mode, 1, data, (0, 0)),
                Entry::Symlink { target } => (S_IFLNK | 0o777, 1, target.as_bytes(), (0, 0)),
                Entry::CharDev { mode, major, minor } => (S_IFCHR | mode, 1, &[], (*major, *minor)),
            };
            write_entry(&mut out, ino, mode, nlink, rdev, path, data);
        }
        write_entry(&mut out, 0, 0, 1, (0, 0), TRAILER, &[]);
        out
    }
}

fn write_entry(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    name: &str,
    data: &[u8],
) {
    let filesize = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let namesize = u32::try_from(name.len() + 1).unwrap_or(u32::MAX);
    // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    let fields = [
        ino, mode, 0, 0, nlink, 0, filesize, 0, 0, rdev.0, rdev.1, namesize, 0,
    ];
    out.extend_from_slice(MAGIC.as_bytes());
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ino: u32, mode: u32, nlink: u32, size: u32, rdev: (u32, u32), name: &str) -> String {
        format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0, 0, 0, 0, 0, rdev.0, rdev.1, name.len() + 1, 0
        )
    }

    fn check(archive: &Archive, expected: &[(&str, &[u8])]) {
        let mut want = Vec::new();
        for (head, body) in expected {
            want.extend_from_slice(head.as_bytes());
            want.extend_from_slice(body);
        }
        assert_eq!(
            String::from_utf8_lossy(&archive.to_bytes()),
            String::from_utf8_lossy(&want)
        );
    }

    #[test]
    fn empty_archive_is_just_the_trailer() {
        check(
            &Archive::default(),
            &[(&header(0, 0, 1, 0, (0, 0), TRAILER), b"TRAILER!!!\0\0\0\0")],
        );
    }

    #[test]
    fn parents_come_first_and_everything_is_padded() {
        let mut a = Archive::default();
        a.file("/bin/x", 0o755, b"hello".to_vec());
        a.add(
            "dev/console",
            Entry::CharDev {
                mode: 0o600,
                major: 5,
                minor: 1,
            },
        );
        a.symlink("bin/sh", "x");
        check(
            &a,
            &[
                // 110-byte header + "bin\0" = 114, padded to 116.
                (&header(1, 0o040_755, 2, 0, (0, 0), "bin"), b"bin\0\0\0"),
                (
                    &header(2, 0o120_777, 1, 1, (0, 0), "bin/sh"),
                    b"bin/sh\0\0\0\0x\0\0\0",
                ),
                (
                    &header(3, 0o100_755, 1, 5, (0, 0), "bin/x"),
                    b"bin/x\0hello\0\0\0",
                ),
                (&header(4, 0o040_755, 2, 0, (0, 0), "dev"), b"dev\0\0\0"),
                (
                    &header(5, 0o020_600, 1, 0, (5, 1), "dev/console"),
                    b"dev/console\0\0\0",
                ),
                (&header(0, 0, 1, 0, (0, 0), TRAILER), b"TRAILER!!!\0\0\0\0"),
            ],
        );
    }

    #[test]
    fn explicit_directory_mode_wins_over_implied_parent() {
        let mut a = Archive::default();
        a.file("tmp/x", 0o644, Vec::new());
        a.add("tmp", Entry::Dir { mode: 0o1777 });
        assert_eq!(a.entries.get("tmp"), Some(&Entry::Dir { mode: 0o1777 }));
        assert!(a.contains("/tmp/x"));
    }
}
