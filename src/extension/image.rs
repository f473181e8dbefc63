//! Which filesystem an extension image holds, from its first bytes (pure).

/// The two sysext image formats iguana mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Erofs,
    Squashfs,
}

impl Format {
    /// The filesystem type mount(2) takes, which is also its module's name.
    pub fn fstype(self) -> &'static str {
        match self {
            Format::Erofs => "erofs",
            Format::Squashfs => "squashfs",
        }
    }
}

/// How many bytes of an image [`detect`] needs.
pub const HEADER: usize = 1024 + 128;

const EROFS_MAGIC: u32 = 0xE0F5_E1E2;
const EROFS_SB: usize = 1024;

/// erofs keeps its superblock at 1024 (magic 0xE0F5E1E2, little-endian);
/// squashfs starts with `hsqs`.
pub fn detect(header: &[u8]) -> Option<Format> {
    if header.get(..4) == Some(b"hsqs") {
        return Some(Format::Squashfs);
    }
    let magic = header.get(EROFS_SB..EROFS_SB + 4)?;
    (u32::from_le_bytes(magic.try_into().ok()?) == EROFS_MAGIC).then_some(Format::Erofs)
}

/// An erofs image's volume label (`mkfs.erofs -L`), for `LABEL=`.
pub fn erofs_label(header: &[u8]) -> Option<String> {
    if detect(header) != Some(Format::Erofs) {
        return None;
    }
    let raw = header.get(EROFS_SB + 64..EROFS_SB + 80)?;
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let label = std::str::from_utf8(&raw[..end]).ok()?;
    (!label.is_empty()).then(|| label.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erofs(label: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; HEADER];
        h[EROFS_SB..EROFS_SB + 4].copy_from_slice(&EROFS_MAGIC.to_le_bytes());
        h[EROFS_SB + 64..EROFS_SB + 64 + label.len()].copy_from_slice(label);
        h
    }

    #[test]
    fn formats() {
        let mut squash = vec![0u8; HEADER];
        squash[..4].copy_from_slice(b"hsqs");
        let cases: Vec<(Vec<u8>, Option<Format>, Option<&str>)> = vec![
            (squash, Some(Format::Squashfs), None),
            (erofs(b"SITE"), Some(Format::Erofs), Some("SITE")),
            (erofs(b""), Some(Format::Erofs), None),
            (vec![0u8; HEADER], None, None),
            (vec![0u8; 10], None, None),
            (b"hsq".to_vec(), None, None),
        ];
        for (header, format, label) in cases {
            assert_eq!(detect(&header), format);
            assert_eq!(erofs_label(&header).as_deref(), label);
        }
    }
}
