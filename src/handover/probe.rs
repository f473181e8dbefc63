//! Reading filesystem superblocks and GPT partition entries ourselves.
//!
//! There is no udev in the initrd, so /dev/disk/by-uuid and friends do not
//! exist: to resolve `UUID=`, `LABEL=`, `PARTUUID=` and `PARTLABEL=` and to
//! find the Discoverable Partitions root, we look at the bytes. Everything
//! here is pure: it takes the first bytes of a device (or of its disk) and
//! never indexes past what it was given, so a short or hostile device only
//! yields "nothing recognised".

/// How many bytes from the start of a device `filesystem` wants to see: the
/// btrfs superblock ends a little after 64 KiB.
pub const PROBE_BYTES: usize = 0x11000;

/// The GPT partition type of a Linux root for this architecture
/// (UAPI Group, Discoverable Partitions Specification).
#[cfg(target_arch = "x86_64")]
pub const ROOT_TYPE: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
#[cfg(target_arch = "aarch64")]
pub const ROOT_TYPE: &str = "b921b045-1df0-41c3-af44-4c6f280d3fae";
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub const ROOT_TYPE: &str = "";

/// What a device's first bytes say it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filesystem {
    /// The type as mount(2) wants it (`ext4`, `xfs`, `btrfs`, `vfat`), or
    /// `crypto_LUKS` for an encrypted volume, which is never mounted.
    pub fstype: String,
    pub uuid: Option<String>,
    pub label: Option<String>,
}

impl Filesystem {
    pub fn is_luks(&self) -> bool {
        self.fstype == "crypto_LUKS"
    }
}

/// One GPT partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptEntry {
    /// 1-based, as in `/sys/class/block/vda1/partition`.
    pub number: u32,
    pub type_guid: String,
    pub part_uuid: String,
    pub name: String,
}

/// Where the partition entries are, from the GPT header (LBA 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptHeader {
    pub entries_lba: u64,
    pub count: u32,
    pub entry_size: u32,
}

fn bytes<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn u16_le(buf: &[u8], at: usize) -> Option<u16> {
    bytes::<2>(buf, at).map(u16::from_le_bytes)
}

fn u32_le(buf: &[u8], at: usize) -> Option<u32> {
    bytes::<4>(buf, at).map(u32::from_le_bytes)
}

fn u64_le(buf: &[u8], at: usize) -> Option<u64> {
    bytes::<8>(buf, at).map(u64::from_le_bytes)
}

/// A UUID stored as 16 bytes in order (ext4, xfs, btrfs).
fn uuid(raw: [u8; 16]) -> Option<String> {
    if raw == [0; 16] {
        return None;
    }
    let h: Vec<String> = raw.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("{}-{}-{}-{}-{}", h[..4].concat(), h[4..6].concat(), h[6..8].concat(), h[8..10].concat(), h[10..].concat()))
}

/// A GPT GUID: the first three fields are little-endian.
pub fn guid(raw: [u8; 16]) -> String {
    let mut b = raw;
    b[..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    uuid(b).unwrap_or_else(|| "00000000-0000-0000-0000-000000000000".into())
}

/// A label: up to the first NUL, trailing spaces removed; empty is none.
fn label(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let text = String::from_utf8_lossy(&raw[..end]).trim_end().to_string();
    (!text.is_empty()).then_some(text)
}

/// Recognises LUKS, ext2/3/4, xfs, btrfs and FAT from a device's first bytes.
pub fn filesystem(buf: &[u8]) -> Option<Filesystem> {
    luks(buf).or_else(|| ext(buf)).or_else(|| xfs(buf)).or_else(|| btrfs(buf)).or_else(|| vfat(buf))
}

fn luks(buf: &[u8]) -> Option<Filesystem> {
    (bytes::<6>(buf, 0)? == *b"LUKS\xba\xbe").then(|| Filesystem {
        fstype: "crypto_LUKS".into(),
        uuid: buf.get(0xa8..0xa8 + 40).and_then(label),
        label: None,
    })
}

fn ext(buf: &[u8]) -> Option<Filesystem> {
    const SB: usize = 0x400;
    if u16_le(buf, SB + 0x38)? != 0xEF53 {
        return None;
    }
    let compat = u32_le(buf, SB + 0x5c)?;
    let incompat = u32_le(buf, SB + 0x60)?;
    // extents, 64bit, flex_bg: only ext4 has them; a journal makes ext3.
    let fstype = if incompat & (0x40 | 0x80 | 0x200) != 0 {
        "ext4"
    } else if compat & 0x4 != 0 {
        "ext3"
    } else {
        "ext2"
    };
    Some(Filesystem { fstype: fstype.into(), uuid: uuid(bytes(buf, SB + 0x68)?), label: buf.get(SB + 0x78..SB + 0x88).and_then(label) })
}

fn xfs(buf: &[u8]) -> Option<Filesystem> {
    (bytes::<4>(buf, 0)? == *b"XFSB").then(|| Filesystem {
        fstype: "xfs".into(),
        uuid: bytes(buf, 32).and_then(uuid),
        label: buf.get(108..120).and_then(label),
    })
}

fn btrfs(buf: &[u8]) -> Option<Filesystem> {
    const SB: usize = 0x10000;
    (bytes::<8>(buf, SB + 0x40)? == *b"_BHRfS_M").then(|| Filesystem {
        fstype: "btrfs".into(),
        uuid: bytes(buf, SB + 0x20).and_then(uuid),
        label: buf.get(SB + 0x12b..SB + 0x22b).and_then(label),
    })
}

fn vfat(buf: &[u8]) -> Option<Filesystem> {
    if bytes::<2>(buf, 510)? != [0x55, 0xAA] {
        return None;
    }
    // FAT32 keeps its extended boot record 28 bytes later than FAT12/16.
    let ebr = if bytes::<5>(buf, 82)? == *b"FAT32" {
        64
    } else if bytes::<3>(buf, 54)? == *b"FAT" {
        36
    } else {
        return None;
    };
    let id = u32_le(buf, ebr + 3)?;
    let label = buf.get(ebr + 7..ebr + 18).and_then(label).filter(|l| l != "NO NAME");
    Some(Filesystem { fstype: "vfat".into(), uuid: Some(format!("{:04X}-{:04X}", id >> 16, id & 0xffff)), label })
}

/// Parses the GPT header, given the sector at LBA 1.
pub fn gpt_header(lba1: &[u8]) -> Option<GptHeader> {
    if bytes::<8>(lba1, 0)? != *b"EFI PART" {
        return None;
    }
    let header = GptHeader { entries_lba: u64_le(lba1, 72)?, count: u32_le(lba1, 80)?, entry_size: u32_le(lba1, 84)? };
    // Sanity: the spec's minimum entry size, and a bound on what we read.
    ((128..=4096).contains(&header.entry_size) && header.count <= 1024).then_some(header)
}

/// Parses the partition entries (the bytes at `entries_lba`); unused
/// entries (type all zero) are skipped but keep their numbers.
pub fn gpt_entries(buf: &[u8], header: GptHeader) -> Vec<GptEntry> {
    let size = usize::try_from(header.entry_size).unwrap_or(usize::MAX);
    (0..header.count)
        .filter_map(|i| {
            let start = usize::try_from(i).ok()?.checked_mul(size)?;
            let entry = buf.get(start..start.checked_add(128)?)?;
            let type_raw: [u8; 16] = bytes(entry, 0)?;
            if type_raw == [0; 16] {
                return None;
            }
            let units: Vec<u16> = entry.get(56..128)?.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
            Some(GptEntry { number: i + 1, type_guid: guid(type_raw), part_uuid: guid(bytes(entry, 16)?), name: String::from_utf16_lossy(&units) })
        })
        .collect()
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A GPT GUID in its on-disk byte order.
    pub fn guid_bytes(text: &str) -> [u8; 16] {
        let hex: String = text.chars().filter(|c| *c != '-').collect();
        let mut b = [0u8; 16];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        b[..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        b
    }

    fn ext4(label: &str) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[0x438..0x43a].copy_from_slice(&0xEF53u16.to_le_bytes());
        b[0x460..0x464].copy_from_slice(&0x2c0u32.to_le_bytes());
        b[0x468..0x478].copy_from_slice(&[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8]);
        b[0x478..0x478 + label.len()].copy_from_slice(label.as_bytes());
        b
    }

    fn vfat32() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[82..90].copy_from_slice(b"FAT32   ");
        b[67..71].copy_from_slice(&0x1234_abcdu32.to_le_bytes());
        b[71..82].copy_from_slice(b"EFI        ");
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    fn check(buf: &[u8], want: Option<(&str, Option<&str>, Option<&str>)>) {
        let got = filesystem(buf);
        let got = got.as_ref().map(|f| (f.fstype.as_str(), f.uuid.as_deref(), f.label.as_deref()));
        assert_eq!(got, want);
    }

    #[test]
    fn superblocks() {
        check(&ext4("root"), Some(("ext4", Some("12345678-9abc-def0-0102-030405060708"), Some("root"))));
        check(&ext4(""), Some(("ext4", Some("12345678-9abc-def0-0102-030405060708"), None)));
        check(&vfat32(), Some(("vfat", Some("1234-ABCD"), Some("EFI"))));
        let mut luks = vec![0u8; 1024];
        luks[..6].copy_from_slice(b"LUKS\xba\xbe");
        luks[0xa8..0xa8 + 36].copy_from_slice(b"0b6ba1e5-6c47-4b0a-a5f1-7c4ac5f2d3b1");
        check(&luks, Some(("crypto_LUKS", Some("0b6ba1e5-6c47-4b0a-a5f1-7c4ac5f2d3b1"), None)));
        let mut xfs = vec![0u8; 512];
        xfs[..4].copy_from_slice(b"XFSB");
        xfs[32] = 0xab;
        xfs[108..112].copy_from_slice(b"data");
        check(&xfs, Some(("xfs", Some("ab000000-0000-0000-0000-000000000000"), Some("data"))));
        let mut btrfs = vec![0u8; PROBE_BYTES];
        btrfs[0x10040..0x10048].copy_from_slice(b"_BHRfS_M");
        btrfs[0x10020] = 1;
        btrfs[0x1012b..0x1012f].copy_from_slice(b"pool");
        check(&btrfs, Some(("btrfs", Some("01000000-0000-0000-0000-000000000000"), Some("pool"))));
        // Too short, empty, or nothing known: no answer, no panic.
        check(&ext4("root")[..0x439], None);
        check(&[], None);
        check(&[0u8; 8192], None);
    }

    #[test]
    fn gpt() {
        let mut lba1 = vec![0u8; 512];
        lba1[..8].copy_from_slice(b"EFI PART");
        lba1[72..80].copy_from_slice(&2u64.to_le_bytes());
        lba1[80..84].copy_from_slice(&4u32.to_le_bytes());
        lba1[84..88].copy_from_slice(&128u32.to_le_bytes());
        let header = gpt_header(&lba1).unwrap();
        assert_eq!(header, GptHeader { entries_lba: 2, count: 4, entry_size: 128 });

        let mut entries = vec![0u8; 4 * 128];
        let root = &mut entries[128..256];
        root[..16].copy_from_slice(&guid_bytes(ROOT_TYPE));
        root[16..32].copy_from_slice(&guid_bytes("01234567-89ab-cdef-0123-456789abcdef"));
        for (i, u) in "root-a".encode_utf16().enumerate() {
            root[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
        let got = gpt_entries(&entries, header);
        assert_eq!(
            got,
            vec![GptEntry {
                number: 2,
                type_guid: ROOT_TYPE.into(),
                part_uuid: "01234567-89ab-cdef-0123-456789abcdef".into(),
                name: "root-a".into()
            }]
        );
        // Truncated entry table: the entries that fit, no panic.
        assert_eq!(gpt_entries(&entries[..200], header), vec![]);
        assert_eq!(gpt_header(&lba1[..60]), None);
        assert_eq!(gpt_header(&[0u8; 512]), None);
    }
}
