//! A kernel module's `vermagic=` from its `.modinfo` section (pure).
//!
//! The kernel refuses at load a module built for another release, but only
//! when something loads it; an extension's modules are checked when it is
//! admitted, so a module for another kernel refuses the extension with one
//! line naming it. A `.ko` is an ELF relocatable: the section headers name
//! `.modinfo`, a run of NUL-terminated `key=value` strings. The first word
//! of `vermagic=` is the kernel release (`6.1.0-56-cloud-amd64 SMP
//! preempt mod_unload modversions`).

/// More section headers than this is not a module.
const SECTIONS_MAX: usize = 1 << 16;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("not an ELF file")]
    NotElf,
    #[error("ELF {0} out of bounds")]
    Bounds(&'static str),
    #[error("no .modinfo section")]
    NoModinfo,
    #[error("no vermagic= in .modinfo")]
    NoVermagic,
}

/// A section, a section header table or a section name table larger than
/// this is not read: `.modinfo` is a few hundred bytes.
pub const PART_MAX: usize = 1 << 20;

/// An I/O error reading a module file (for `vermagic_file`).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("read at {at}: {message}")]
pub struct ReadError {
    pub at: u64,
    pub message: String,
}

/// The whole `vermagic=` value of a module's bytes.
pub fn vermagic(elf: &[u8]) -> Result<String, Error> {
    let mut read = |at: usize, len: usize, what: &'static str| -> Result<Vec<u8>, Error> {
        elf.get(at..at.checked_add(len).ok_or(Error::Bounds(what))?).map(<[u8]>::to_vec).ok_or(Error::Bounds(what))
    };
    from_modinfo(&section(&mut read, ".modinfo")?)
}

/// [`vermagic`] of a module file, read in parts (its header, section
/// headers, names and `.modinfo`, each at most [`PART_MAX`]) instead of
/// whole: PID 1 checks an extension's modules with it.
pub fn vermagic_file(file: &std::fs::File) -> Result<Result<String, Error>, ReadError> {
    use std::os::unix::fs::FileExt;
    let mut io_error = None;
    let size = match file.metadata() {
        Ok(meta) => meta.len(),
        Err(e) => return Err(ReadError { at: 0, message: e.to_string() }),
    };
    let mut read = |at: usize, len: usize, what: &'static str| -> Result<Vec<u8>, Error> {
        let end = (at as u64).checked_add(len as u64);
        if len > PART_MAX || end.is_none_or(|end| end > size) {
            return Err(Error::Bounds(what));
        }
        let mut buf = vec![0u8; len];
        match file.read_exact_at(&mut buf, at as u64) {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Error::Bounds(what)),
            Err(e) => {
                io_error = Some(ReadError { at: at as u64, message: e.to_string() });
                Err(Error::Bounds(what))
            }
        }
    };
    let result = section(&mut read, ".modinfo").and_then(|m| from_modinfo(&m));
    match io_error {
        Some(e) => Err(e),
        None => Ok(result),
    }
}

fn from_modinfo(modinfo: &[u8]) -> Result<String, Error> {
    modinfo
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"vermagic="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .ok_or(Error::NoVermagic)
}

/// The kernel release a `vermagic=` value names: its first word.
pub fn release(vermagic: &str) -> &str {
    vermagic.split_whitespace().next().unwrap_or("")
}

type Read<'r> = dyn FnMut(usize, usize, &'static str) -> Result<Vec<u8>, Error> + 'r;

/// The bytes of the section called `want`, through `read(offset, len,
/// what)`.
fn section(read: &mut Read<'_>, want: &str) -> Result<Vec<u8>, Error> {
    let ident = read(0, 6, "e_ident").map_err(|_| Error::NotElf)?;
    if ident.get(..4) != Some(b"\x7fELF") {
        return Err(Error::NotElf);
    }
    let wide = match ident.get(4) {
        Some(1) => false,
        Some(2) => true,
        _ => return Err(Error::NotElf),
    };
    let big = match ident.get(5) {
        Some(1) => false,
        Some(2) => true,
        _ => return Err(Error::NotElf),
    };
    let int = |buf: &[u8], at: usize, len: usize, what: &'static str| -> Result<usize, Error> {
        let b = buf.get(at..at.checked_add(len).ok_or(Error::Bounds(what))?).ok_or(Error::Bounds(what))?;
        let mut v: u64 = 0;
        for i in 0..len {
            let byte = if big { b[i] } else { b[len - 1 - i] };
            v = (v << 8) | u64::from(byte);
        }
        usize::try_from(v).map_err(|_| Error::Bounds(what))
    };
    // (e_shoff, e_shentsize, e_shnum, e_shstrndx) and a section header's
    // (sh_name, sh_offset, sh_size) with their widths, per ELF class.
    let word = if wide { 8 } else { 4 };
    let (shoff, shentsize, shnum, shstrndx) = if wide { (0x28, 0x3a, 0x3c, 0x3e) } else { (0x20, 0x2e, 0x30, 0x32) };
    let (sh_offset, sh_size) = if wide { (0x18, 0x20) } else { (0x10, 0x14) };
    let header = read(0, shstrndx + 2, "ELF header")?;
    let table_at = int(&header, shoff, word, "e_shoff")?;
    let entsize = int(&header, shentsize, 2, "e_shentsize")?;
    let count = int(&header, shnum, 2, "e_shnum")?;
    let names_index = int(&header, shstrndx, 2, "e_shstrndx")?;
    if count > SECTIONS_MAX || entsize < sh_size + word || names_index >= count {
        return Err(Error::Bounds("section headers"));
    }
    let table = read(table_at, count.checked_mul(entsize).ok_or(Error::Bounds("section headers"))?, "section headers")?;
    let entry = |i: usize| -> Result<(usize, usize, usize), Error> {
        let at = i * entsize;
        Ok((int(&table, at, 4, "sh_name")?, int(&table, at + sh_offset, word, "sh_offset")?, int(&table, at + sh_size, word, "sh_size")?))
    };
    let (_, names_at, names_len) = entry(names_index)?;
    let names = read(names_at, names_len, "section names")?;
    for i in 0..count {
        let (name, offset, size) = entry(i)?;
        let Some(rest) = names.get(name..) else { continue };
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        if &rest[..end] == want.as_bytes() {
            return read(offset, size, "section");
        }
    }
    Err(Error::NoModinfo)
}

/// A minimal module whose `.modinfo` says `vermagic=VERMAGIC`, for tests.
#[cfg(test)]
pub(crate) fn test_module(vermagic: &str) -> Vec<u8> {
    tests::elf64(Some(format!("license=GPL\0vermagic={vermagic}\0").as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 little-endian relocatable with a `.shstrtab` and,
    /// when given, a `.modinfo` holding `modinfo`.
    pub(super) fn elf64(modinfo: Option<&[u8]>) -> Vec<u8> {
        let names = b"\0.shstrtab\0.modinfo\0";
        let mut out = vec![0u8; 64];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = 1;
        let names_at = out.len();
        out.extend_from_slice(names);
        let info_at = out.len();
        out.extend_from_slice(modinfo.unwrap_or_default());
        let table = out.len();
        let mut headers = vec![(0u32, 0usize, 0usize), (1, names_at, names.len())];
        if let Some(m) = modinfo {
            headers.push((11, info_at, m.len()));
        }
        for (name, offset, size) in &headers {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(*offset as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(*size as u64).to_le_bytes());
            out.extend(h);
        }
        out[0x28..0x30].copy_from_slice(&(table as u64).to_le_bytes());
        out[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        out[0x3c..0x3e].copy_from_slice(&(headers.len() as u16).to_le_bytes());
        out[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        out
    }

    #[test]
    fn vermagic_from_elf() {
        let good = b"license=GPL\0vermagic=6.1.0-56-cloud-amd64 SMP preempt mod_unload modversions \0name=x\0";
        let mut cut = elf64(Some(good));
        cut.truncate(100);
        let mut huge_table = elf64(Some(good));
        huge_table[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        let cases: Vec<(&str, Vec<u8>, Result<&str, Error>)> = vec![
            ("good", elf64(Some(good)), Ok("6.1.0-56-cloud-amd64 SMP preempt mod_unload modversions ")),
            ("no vermagic", elf64(Some(b"license=GPL\0")), Err(Error::NoVermagic)),
            ("no .modinfo", elf64(None), Err(Error::NoModinfo)),
            ("not elf", b"hello world".to_vec(), Err(Error::NotElf)),
            ("empty", Vec::new(), Err(Error::NotElf)),
            ("cut short", cut, Err(Error::Bounds("section headers"))),
            ("table past the end", huge_table, Err(Error::Bounds("section headers"))),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (what, bytes, want) in cases {
            assert_eq!(vermagic(&bytes).as_deref().map_err(Clone::clone), want, "{what}");
            // The same answer from the file, read in parts.
            let path = dir.path().join("m.ko");
            std::fs::write(&path, &bytes).unwrap();
            let from_file = vermagic_file(&std::fs::File::open(&path).unwrap()).unwrap();
            assert_eq!(from_file.as_deref().map_err(Clone::clone), want, "{what} (file)");
        }
    }

    #[test]
    fn releases() {
        for (v, want) in [("6.1.0-56-cloud-amd64 SMP preempt mod_unload modversions ", "6.1.0-56-cloud-amd64"), ("", ""), ("  6.12 ", "6.12")] {
            assert_eq!(release(v), want);
        }
    }

    /// Real modules of the test kernel (`cargo xtask initrd` downloads it
    /// to target/iguana-kernel; Debian ships them uncompressed).
    #[test]
    fn vermagic_of_the_test_kernels_modules() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/iguana-kernel/root/lib/modules");
        let Some(release_dir) = std::fs::read_dir(&root).ok().and_then(|mut d| d.next()).and_then(|e| e.ok()) else {
            eprintln!("skipped: no test kernel in {} (run cargo xtask initrd)", root.display());
            return;
        };
        let running = release_dir.file_name().to_string_lossy().into_owned();
        for module in ["kernel/drivers/block/virtio_blk.ko", "kernel/drivers/scsi/vmw_pvscsi.ko", "kernel/fs/erofs/erofs.ko"] {
            let bytes = std::fs::read(release_dir.path().join(module)).unwrap();
            let magic = vermagic(&bytes).unwrap();
            assert_eq!(release(&magic), running, "{module}: {magic}");
            let file = std::fs::File::open(release_dir.path().join(module)).unwrap();
            assert_eq!(vermagic_file(&file).unwrap().unwrap(), magic, "{module} (file)");
        }
    }
}
