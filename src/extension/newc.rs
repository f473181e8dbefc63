//! A reader for the "newc" cpio format (pure, bounded): the format the
//! kernel unpacks as initramfs, and that a boot loader appends extensions
//! in. Several archives may follow one another (a boot loader's
//! `initrd base.img site.cpio`), each padded to 4 bytes; compressed parts
//! are not read (`iguana extension inspect` takes the site's own cpio).

/// The kinds of entry an extension can carry; anything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Other,
}

/// One entry; `data` is the file's bytes or the symlink's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub name: String,
    pub kind: Kind,
    pub mode: u32,
    pub data: &'a [u8],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("at byte {at}: not a newc cpio header (compressed? only an uncompressed cpio is read)")]
    Magic { at: usize },
    #[error("at byte {at}: {field} is not 8 hex digits")]
    Field { at: usize, field: &'static str },
    #[error("at byte {at}: the archive ends inside an entry")]
    Truncated { at: usize },
    #[error("at byte {at}: a name longer than {NAME_MAX} bytes")]
    NameTooLong { at: usize },
    #[error("at byte {at}: a name that is not UTF-8")]
    NameEncoding { at: usize },
    #[error("more than {0} entries")]
    TooMany(usize),
}

const HEADER: usize = 110;
const NAME_MAX: usize = 4096;
const TRAILER: &str = "TRAILER!!!";
const S_IFMT: u32 = 0o170_000;

/// Every entry of every archive in `bytes` (trailers left out), at most
/// `max` of them; names without a leading `./` or `/`.
pub fn parse(bytes: &[u8], max: usize) -> Result<Vec<Entry<'_>>, Error> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        // Between archives: the padding a concatenation leaves.
        while bytes.get(at) == Some(&0) {
            at += 1;
        }
        if at >= bytes.len() {
            return Ok(out);
        }
        let magic = bytes.get(at..(at + 6).min(bytes.len())).unwrap_or_default();
        if !b"070701".starts_with(magic) && !b"070702".starts_with(magic) || magic.is_empty() {
            return Err(Error::Magic { at });
        }
        let header = bytes.get(at..at + HEADER).ok_or(Error::Truncated { at })?;
        if &header[..6] != b"070701" && &header[..6] != b"070702" {
            return Err(Error::Magic { at });
        }
        let field = |i: usize, name: &'static str| -> Result<u32, Error> {
            let hex = std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i]).map_err(|_| Error::Field { at, field: name })?;
            u32::from_str_radix(hex, 16).map_err(|_| Error::Field { at, field: name })
        };
        let mode = field(1, "c_mode")?;
        let size = field(6, "c_filesize")? as usize;
        let name_size = field(11, "c_namesize")? as usize;
        if name_size > NAME_MAX + 1 {
            return Err(Error::NameTooLong { at });
        }
        let name_end = at + HEADER + name_size;
        let raw = bytes.get(at + HEADER..name_end).ok_or(Error::Truncated { at })?;
        let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
        let name = std::str::from_utf8(raw).map_err(|_| Error::NameEncoding { at })?;
        let data_at = name_end.next_multiple_of(4);
        let data = bytes.get(data_at..data_at.checked_add(size).ok_or(Error::Truncated { at })?).ok_or(Error::Truncated { at })?;
        let next = (data_at + size).next_multiple_of(4);
        if name != TRAILER {
            if out.len() >= max {
                return Err(Error::TooMany(max));
            }
            let kind = match mode & S_IFMT {
                0o040_000 => Kind::Dir,
                0o100_000 => Kind::File,
                0o120_000 => Kind::Symlink,
                _ => Kind::Other,
            };
            let name = name.trim_start_matches("./").trim_start_matches('/').to_string();
            if !name.is_empty() && name != "." {
                out.push(Entry { name, kind, mode: mode & 0o7777, data });
            }
        }
        at = next;
    }
}

/// Whether a name from an archive may become a path under a directory:
/// relative, no empty, `.` or `..` component.
pub fn safe_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('/') && name.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One newc entry as the kernel's documentation lays it out.
    fn entry(name: &str, mode: u32, data: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "070701{:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            1,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        )
        .into_bytes();
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out
    }

    fn archive(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut out: Vec<u8> = entries.iter().flat_map(|(n, m, d)| entry(n, *m, d)).collect();
        out.extend(entry(TRAILER, 0, b""));
        out
    }

    #[test]
    fn reads_entries_of_concatenated_archives() {
        let mut bytes = archive(&[("extensions", 0o40755, b""), ("./extensions/site/etc/a", 0o100644, b"hello")]);
        bytes.extend([0u8; 512]);
        bytes.extend(archive(&[("/.extra/sysext/x.raw", 0o100600, b"raw"), ("extensions/l", 0o120777, b"/etc"), ("dev/null", 0o20666, b"")]));
        let got: Vec<(String, Kind, u32, Vec<u8>)> =
            parse(&bytes, 100).unwrap().into_iter().map(|e| (e.name, e.kind, e.mode, e.data.to_vec())).collect();
        let want = [
            ("extensions", Kind::Dir, 0o755, &b""[..]),
            ("extensions/site/etc/a", Kind::File, 0o644, b"hello"),
            (".extra/sysext/x.raw", Kind::File, 0o600, b"raw"),
            ("extensions/l", Kind::Symlink, 0o777, b"/etc"),
            ("dev/null", Kind::Other, 0o666, b""),
        ];
        let want: Vec<(String, Kind, u32, Vec<u8>)> = want.iter().map(|(n, k, m, d)| (n.to_string(), *k, *m, d.to_vec())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn refuses_what_is_not_a_bounded_newc() {
        let one = archive(&[("a", 0o100644, b"0123456789")]);
        let mut bad_hex = one.clone();
        bad_hex[6 + 8 * 6] = b'z';
        let mut long_name = entry("a", 0o100644, b"");
        long_name[6 + 8 * 11..6 + 8 * 12].copy_from_slice(b"00100000");
        let cases: Vec<(&str, Vec<u8>, usize, Error)> = vec![
            ("zstd", vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0], 10, Error::Magic { at: 0 }),
            ("cut in the data", one[..120].to_vec(), 10, Error::Truncated { at: 0 }),
            ("cut in the header", one[..50].to_vec(), 10, Error::Truncated { at: 0 }),
            ("bad hex", bad_hex, 10, Error::Field { at: 0, field: "c_filesize" }),
            ("name too long", long_name, 10, Error::NameTooLong { at: 0 }),
            ("too many", archive(&[("a", 0o100644, b""), ("b", 0o100644, b"")]), 1, Error::TooMany(1)),
        ];
        for (what, bytes, max, want) in cases {
            assert_eq!(parse(&bytes, max).unwrap_err(), want, "{what}");
        }
        assert_eq!(parse(&[], 1).unwrap(), []);
    }

    #[test]
    fn safe_names() {
        for (name, want) in [("extensions/a/b", true), ("a", true), ("", false), ("/a", false), ("a/../b", false), ("a//b", false), ("./a", false), ("a/.", false)] {
            assert_eq!(safe_name(name), want, "{name}");
        }
    }
}
