//! The unified kernel image (`cargo xtask dist --uki`): the kernel, the
//! initrd, the kernel command line and an os-release in one PE binary
//! around systemd-stub, so that one Secure Boot signature covers all of
//! them (the initrd's trust keys and built-in workflow included).
//!
//! Debian 12 has systemd 252, which has no `ukify`; its documented method
//! is `objcopy --add-section` with `--change-section-vma`. Instead of the
//! fixed addresses of that example we place each section after the stub's
//! last one (image base + end of its sections, page-aligned), as ukify
//! does, so a larger stub or kernel never overlaps. The stub's PE headers
//! are read by [`parse_pe`], a pure parser. Signing is `sbsign`, checked
//! with `sbverify --cert` at once.

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cmd_output, run_cmd};

/// systemd-stub from Debian's `systemd-boot-efi`.
pub const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// The embedded command line when `--cmdline` is not given: the console on
/// the screen and on the first serial port, as `ipxe.script` has it. With
/// Secure Boot on, systemd-stub ignores a command line from the boot
/// loader, so everything iguana needs (`rd.iguana.control_url=`, ...) must
/// be given here or come from the initrd's built-in workflow.
pub const DEFAULT_CMDLINE: &str = "console=tty0 console=ttyS0,115200";

/// Sections start on a page: the stub's own alignment (512) would do for
/// the firmware, but the kernel and initrd are used in place.
const ALIGN: u64 = 4096;

/// One row of a PE section table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub virtual_address: u32,
    pub virtual_size: u32,
    pub raw_offset: u32,
    pub raw_size: u32,
}

/// What we need of a PE32+ image's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pe {
    pub image_base: u64,
    pub section_alignment: u32,
    pub sections: Vec<Section>,
}

impl Pe {
    /// The first address after the last section, relative to the image base.
    pub fn end(&self) -> u64 {
        self.sections
            .iter()
            .map(|s| u64::from(s.virtual_address) + u64::from(s.virtual_size))
            .max()
            .unwrap_or(0)
    }

    /// The file bytes holding section `name`.
    pub fn section_bytes(&self, name: &str) -> Option<Range<usize>> {
        let s = self.sections.iter().find(|s| s.name == name)?;
        let start = usize::try_from(s.raw_offset).ok()?;
        let len = usize::try_from(s.raw_size.min(s.virtual_size)).ok()?;
        Some(start..start + len)
    }
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Reads the headers of a PE32+ image (an EFI application).
pub fn parse_pe(bytes: &[u8]) -> Result<Pe, String> {
    if bytes.get(..2) != Some(b"MZ") {
        return Err("no MZ header".into());
    }
    let pe = u32_at(bytes, 0x3c).ok_or("truncated DOS header")? as usize;
    if bytes.get(pe..pe + 4) != Some(b"PE\0\0") {
        return Err(format!("no PE signature at {pe:#x}"));
    }
    let coff = pe + 4;
    let count = u16_at(bytes, coff + 2).ok_or("truncated COFF header")?;
    let optional_size = u16_at(bytes, coff + 16).ok_or("truncated COFF header")?;
    let opt = coff + 20;
    let magic = u16_at(bytes, opt).ok_or("truncated optional header")?;
    if magic != 0x20b {
        return Err(format!(
            "optional header magic {magic:#x}, not PE32+ (0x20b)"
        ));
    }
    let image_base = u64_at(bytes, opt + 24).ok_or("truncated optional header")?;
    let section_alignment = u32_at(bytes, opt + 32).ok_or("truncated optional header")?;
    let table = opt + usize::from(optional_size);
    let sections = (0..usize::from(count))
        .map(|i| {
            let row = table + 40 * i;
            let name = bytes
                .get(row..row + 8)
                .ok_or(format!("truncated section {i}"))?;
            let name = String::from_utf8_lossy(name)
                .trim_end_matches('\0')
                .to_owned();
            let field = |off| u32_at(bytes, row + off).ok_or(format!("truncated section {i}"));
            Ok(Section {
                name,
                virtual_size: field(8)?,
                virtual_address: field(12)?,
                raw_size: field(16)?,
                raw_offset: field(20)?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Pe {
        image_base,
        section_alignment,
        sections,
    })
}

fn align_up(value: u64, align: u64) -> u64 {
    value.div_ceil(align) * align
}

/// The VMAs (image base included, as objcopy takes them) for sections of
/// `sizes` appended in order after the stub's last section.
pub fn layout(stub: &Pe, sizes: &[u64]) -> Vec<u64> {
    let align = ALIGN.max(u64::from(stub.section_alignment));
    let mut next = align_up(stub.end(), align);
    sizes
        .iter()
        .map(|size| {
            let vma = stub.image_base + next;
            next = align_up(next + size, align);
            vma
        })
        .collect()
}

/// The os-release embedded as `.osrel`, which boot menus show.
fn os_release() -> String {
    let version = env!("CARGO_PKG_VERSION");
    format!(
        "NAME=iguana\nID=iguana\nVERSION_ID={version}\nPRETTY_NAME=\"iguana {version} (provisioning initrd)\"\n"
    )
}

/// Writes the unsigned UKI `out` from `kernel`, `initrd` and `cmdline`.
pub fn build(kernel: &Path, initrd: &Path, cmdline: &str, out: &Path) -> Result<()> {
    let stub_bytes = fs::read(STUB).with_context(|| format!("read the systemd-stub {STUB}"))?;
    let stub = parse_pe(&stub_bytes)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("read the PE headers of {STUB}"))?;
    let parts_dir = PathBuf::from(format!("{}.parts", out.display()));
    fs::create_dir_all(&parts_dir).with_context(|| format!("create {}", parts_dir.display()))?;
    let osrel = parts_dir.join("os-release");
    let cmdline_file = parts_dir.join("cmdline");
    fs::write(&osrel, os_release()).with_context(|| format!("write {}", osrel.display()))?;
    fs::write(&cmdline_file, cmdline)
        .with_context(|| format!("write {}", cmdline_file.display()))?;
    // systemd-stub's documented order; the initrd after the kernel.
    let parts: [(&str, &Path); 4] = [
        (".osrel", &osrel),
        (".cmdline", &cmdline_file),
        (".linux", kernel),
        (".initrd", initrd),
    ];
    let sizes = parts
        .iter()
        .map(|(_, path)| {
            fs::metadata(path)
                .map(|m| m.len())
                .with_context(|| format!("stat {}", path.display()))
        })
        .collect::<Result<Vec<u64>>>()?;
    let mut objcopy = Command::new("objcopy");
    for ((name, path), vma) in parts.iter().zip(layout(&stub, &sizes)) {
        objcopy
            .arg("--add-section")
            .arg(format!("{name}={}", path.display()))
            .arg("--change-section-vma")
            .arg(format!("{name}={vma:#x}"));
    }
    // The stub's COFF symbol table is of no use in the image and only
    // makes sbsign warn about data after the last section.
    objcopy.arg("--strip-all").arg(STUB).arg(out);
    run_cmd(&mut objcopy).with_context(|| format!("assemble the UKI {}", out.display()))?;
    let _ = fs::remove_dir_all(&parts_dir);
    Ok(())
}

/// Signs `image` in place with `sbsign`, then checks the signature with
/// `sbverify --cert`.
pub fn sign(image: &Path, key: &Path, cert: &Path) -> Result<()> {
    let unsigned = PathBuf::from(format!("{}.unsigned", image.display()));
    fs::rename(image, &unsigned)
        .with_context(|| format!("rename {} to {}", image.display(), unsigned.display()))?;
    cmd_output(
        Command::new("sbsign")
            .arg("--key")
            .arg(key)
            .arg("--cert")
            .arg(cert)
            .arg("--output")
            .arg(image)
            .arg(&unsigned),
    )
    .with_context(|| format!("sign {} with {}", image.display(), key.display()))?;
    let _ = fs::remove_file(&unsigned);
    verify(image, cert)
}

/// `sbverify --cert CERT IMAGE`.
pub fn verify(image: &Path, cert: &Path) -> Result<()> {
    cmd_output(Command::new("sbverify").arg("--cert").arg(cert).arg(image)).with_context(|| {
        format!(
            "the signature of {} does not verify against {}",
            image.display(),
            cert.display()
        )
    })?;
    Ok(())
}

/// Copies `signed` to `out` with one bit of its `.initrd` section flipped
/// (the signature left as it was): what an attacker who swaps the initrd
/// of a signed image produces.
pub fn tamper_initrd(signed: &Path, out: &Path) -> Result<()> {
    let mut bytes = fs::read(signed).with_context(|| format!("read {}", signed.display()))?;
    let pe = parse_pe(&bytes)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("read the PE headers of {}", signed.display()))?;
    let Some(range) = pe.section_bytes(".initrd") else {
        bail!("{} has no .initrd section", signed.display());
    };
    let at = range.start + range.len() / 2;
    match bytes.get_mut(at) {
        Some(byte) => *byte ^= 1,
        None => bail!("{}: .initrd lies outside the file", signed.display()),
    }
    fs::write(out, bytes).with_context(|| format!("write {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stub(image_base: u64, alignment: u32, ends: &[(u32, u32)]) -> Pe {
        Pe {
            image_base,
            section_alignment: alignment,
            sections: ends
                .iter()
                .map(|&(virtual_address, virtual_size)| Section {
                    name: ".text".into(),
                    virtual_address,
                    virtual_size,
                    raw_offset: 0,
                    raw_size: virtual_size,
                })
                .collect(),
        }
    }

    #[test]
    fn sections_follow_the_stub_page_aligned() {
        #[rustfmt::skip]
        let cases: &[(Pe, &[u64], &[u64])] = &[
            // Debian 12's stub: ends at 0x19134, image base 0.
            (stub(0, 0x200, &[(0x4000, 0xbff0), (0x19100, 0x34)]), &[0x16, 0x38, 0xd8_77c0, 10], &[0x1a000, 0x1b000, 0x1c000, 0xda4000]),
            // A section ending exactly on a page needs no padding.
            (stub(0, 0x200, &[(0x1000, 0x1000)]), &[0x1000, 1], &[0x2000, 0x3000]),
            // The image base is added; a larger alignment wins.
            (stub(0x1_0000_0000, 0x10000, &[(0x1000, 0x10)]), &[1, 1], &[0x1_0001_0000, 0x1_0002_0000]),
        ];
        for (pe, sizes, expected) in cases {
            assert_eq!(layout(pe, sizes), *expected, "{pe:?}");
        }
    }

    #[test]
    fn headers_that_are_not_pe32_plus_are_refused() {
        let mut pe32 = vec![0u8; 0x200];
        pe32[..2].copy_from_slice(b"MZ");
        pe32[0x3c] = 0x80;
        pe32[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe32[0x98..0x9a].copy_from_slice(&0x10bu16.to_le_bytes());
        let cases: &[(&[u8], &str)] = &[
            (b"", "no MZ header"),
            (b"\x7fELF", "no MZ header"),
            (b"MZ", "truncated DOS header"),
            (&pe32[..0x80], "no PE signature at 0x80"),
            (&pe32[..0x90], "truncated COFF header"),
            (&pe32, "magic 0x10b, not PE32+"),
        ];
        for (bytes, want) in cases {
            let err = parse_pe(bytes).unwrap_err();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
    }

    /// The real stub, when `systemd-boot-efi` is installed (`cargo xtask
    /// tools`); its section table as `objdump -h` prints it.
    #[test]
    fn debian_stub_headers() {
        let Ok(bytes) = fs::read(STUB) else {
            eprintln!("skipped: {STUB} missing (cargo xtask tools installs it)");
            return;
        };
        let pe = parse_pe(&bytes).unwrap();
        let names: Vec<&str> = pe.sections.iter().map(|s| s.name.as_str()).collect();
        assert!(
            names.contains(&".text") && names.contains(&".sdmagic"),
            "{names:?}"
        );
        assert!(!names.contains(&".linux"), "{names:?}");
        assert!(pe.end() > 0 && pe.section_alignment.is_power_of_two());
        let text = pe.section_bytes(".text").unwrap();
        assert!(text.end <= bytes.len());
    }

    /// objcopy, sbsign and sbverify for real, on a stand-in kernel and
    /// initrd: each part lands in its section unchanged, the signature
    /// verifies against the signing certificate only, and one bit changed
    /// in the initrd breaks it.
    #[test]
    fn assemble_sign_and_tamper() {
        let tools = [
            STUB,
            "/usr/bin/objcopy",
            "/usr/bin/sbsign",
            "/usr/bin/openssl",
        ];
        if let Some(missing) = tools.iter().find(|t| !Path::new(t).exists()) {
            eprintln!("skipped: {missing} missing (cargo xtask tools installs it)");
            return;
        }
        let dir = crate::target_dir()
            .join("iguana-uki-test")
            .join(std::process::id().to_string());
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let (kernel, initrd) = (dir.join("kernel"), dir.join("initrd"));
        fs::write(&kernel, vec![0x4b; 10_000]).unwrap();
        fs::write(&initrd, b"070701 stand-in cpio").unwrap();
        for name in ["signer", "other"] {
            cmd_output(
                Command::new("openssl")
                    .args(["req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes"])
                    .args(["-days", "1", "-subj", &format!("/CN={name}/")])
                    .arg("-keyout")
                    .arg(dir.join(format!("{name}.key")))
                    .arg("-out")
                    .arg(dir.join(format!("{name}.crt"))),
            )
            .unwrap();
        }
        let efi = dir.join("iguana.efi");
        build(&kernel, &initrd, "console=ttyS0 rd.iguana.debug", &efi).unwrap();
        let bytes = fs::read(&efi).unwrap();
        let pe = parse_pe(&bytes).unwrap();
        for (name, want) in [
            (".cmdline", b"console=ttyS0 rd.iguana.debug".to_vec()),
            (".initrd", fs::read(&initrd).unwrap()),
            (".linux", fs::read(&kernel).unwrap()),
            (".osrel", os_release().into_bytes()),
        ] {
            let range = pe
                .section_bytes(name)
                .unwrap_or_else(|| panic!("no {name}"));
            assert_eq!(bytes[range], want[..], "{name}");
        }

        sign(&efi, &dir.join("signer.key"), &dir.join("signer.crt")).unwrap();
        assert!(verify(&efi, &dir.join("other.crt")).is_err());
        let tampered = dir.join("tampered.efi");
        tamper_initrd(&efi, &tampered).unwrap();
        let err = verify(&tampered, &dir.join("signer.crt")).unwrap_err();
        assert!(format!("{err:#}").contains("does not verify"), "{err:#}");
        // One byte changed, inside the initrd.
        let (signed, bad) = (fs::read(&efi).unwrap(), fs::read(&tampered).unwrap());
        assert_eq!(signed.len(), bad.len());
        let changed: Vec<usize> = (0..signed.len()).filter(|&i| signed[i] != bad[i]).collect();
        let initrd_range = parse_pe(&signed).unwrap().section_bytes(".initrd").unwrap();
        assert_eq!(changed.len(), 1);
        assert!(initrd_range.contains(&changed[0]));
        let _ = fs::remove_dir_all(&dir);
    }
}
