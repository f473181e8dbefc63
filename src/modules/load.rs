//! The one side effect of module loading: putting a module file into the
//! running kernel, plain or compressed.
//!
//! Compressed modules (`.ko.xz`, `.ko.zst`, `.ko.gz`) are decompressed here
//! and loaded with `init_module(2)` from memory. The kernel could do it with
//! `finit_module(MODULE_INIT_COMPRESSED_FILE)`, but only when built with
//! `CONFIG_MODULE_DECOMPRESS`, which Debian's 6.1 kernels lack; decompressing
//! ourselves works on every kernel. A signed module's signature covers the
//! uncompressed bytes, so signature checks are unaffected.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use nix::errno::Errno;
use nix::kmod::{finit_module, init_module, ModuleInitFlags};

use super::{LoadError, Loaded, Loader};

/// Larger than any real module (the biggest in a distribution kernel are a
/// few tens of MB uncompressed); a guard against a corrupt file.
const MAX_MODULE: u64 = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Plain,
    Xz,
    Zstd,
    Gzip,
}

pub fn format(path: &Path) -> Format {
    match path.extension().and_then(|e| e.to_str()) {
        Some("xz") => Format::Xz,
        Some("zst") => Format::Zstd,
        Some("gz") => Format::Gzip,
        _ => Format::Plain,
    }
}

/// Loads modules into the running kernel.
pub struct KernelLoader;

impl Loader for KernelLoader {
    fn load(&mut self, name: &str, path: &Path, params: &str) -> Result<Loaded, LoadError> {
        // As modprobe does: a loaded module has `initstate` in sysfs. Saves
        // decompressing it again for the uevents its own loading caused.
        if Path::new("/sys/module").join(name).join("initstate").exists() {
            return Ok(Loaded::Already);
        }
        let c_params = CString::new(params).map_err(|_| LoadError::Params { params: params.to_owned() })?;
        let file = File::open(path).map_err(|source| LoadError::Open { path: path.to_owned(), source })?;
        let result = match format(path) {
            Format::Plain => finit_module(&file, &c_params, ModuleInitFlags::empty()),
            compressed => {
                let image = decompress(file, compressed).map_err(|source| LoadError::Decompress {
                    path: path.to_owned(),
                    source,
                })?;
                init_module(&image, &c_params)
            }
        };
        match result {
            Ok(()) => Ok(Loaded::New),
            Err(Errno::EEXIST) => Ok(Loaded::Already),
            Err(errno) => Err(LoadError::Init {
                call: if format(path) == Format::Plain { "finit_module" } else { "init_module" },
                path: path.to_owned(),
                params: params.to_owned(),
                errno,
            }),
        }
    }
}

/// The uncompressed module image.
pub fn decompress(file: impl Read, format: Format) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let limited = file.take(MAX_MODULE);
    match format {
        Format::Plain => {
            BufReader::new(limited).read_to_end(&mut out)?;
        }
        Format::Xz => lzma_rs::xz_decompress(&mut BufReader::new(limited), &mut out)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("xz: {e}")))?,
        Format::Zstd => {
            let mut decoder = ruzstd::decoding::StreamingDecoder::new(limited)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}")))?;
            (&mut decoder).take(MAX_MODULE).read_to_end(&mut out)?;
        }
        Format::Gzip => {
            flate2::read::GzDecoder::new(limited).take(MAX_MODULE).read_to_end(&mut out)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::{Command, Stdio};

    use super::*;

    /// A stand-in for a module: an ELF header and some repetitive bytes.
    fn payload() -> Vec<u8> {
        let mut data = b"\x7fELF\x02\x01\x01".to_vec();
        for i in 0..20_000u32 {
            data.extend_from_slice(&i.to_le_bytes());
        }
        data
    }

    /// Compresses with the real tool, as `cargo xtask initrd
    /// --compress-modules` and kmod's Makefile do.
    fn compress(tool: &str, args: &[&str], data: &[u8]) -> Vec<u8> {
        let mut child = Command::new(tool)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        let mut stdin = child.stdin.take().unwrap();
        let input = data.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(out.status.success(), "{tool} failed");
        out.stdout
    }

    #[test]
    fn formats() {
        for (path, expected) in [
            ("kernel/a/virtio_net.ko", Format::Plain),
            ("kernel/a/virtio_net.ko.xz", Format::Xz),
            ("kernel/a/virtio_net.ko.zst", Format::Zstd),
            ("kernel/a/virtio_net.ko.gz", Format::Gzip),
            ("virtio_net", Format::Plain),
        ] {
            assert_eq!(format(Path::new(path)), expected, "{path}");
        }
    }

    #[test]
    fn decompresses_what_the_real_tools_write() {
        let data = payload();
        let cases = [
            (Format::Xz, compress("xz", &["--check=crc32", "--lzma2=dict=1MiB", "-c"], &data)),
            (Format::Xz, compress("xz", &["-c"], &data)),
            (Format::Zstd, compress("zstd", &["-q", "-c"], &data)),
            (Format::Gzip, compress("gzip", &["-n", "-c"], &data)),
            (Format::Plain, data.clone()),
        ];
        for (format, compressed) in cases {
            let got = decompress(&compressed[..], format).unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert!(got == data, "{format:?}: {} bytes back, wanted {}", got.len(), data.len());
        }
    }

    #[test]
    fn corrupt_input_is_an_error() {
        let data = payload();
        for (format, tool, args) in [
            (Format::Xz, "xz", &["-c"][..]),
            (Format::Zstd, "zstd", &["-q", "-c"][..]),
        ] {
            let mut bad = compress(tool, args, &data);
            let middle = bad.len() / 2;
            bad[middle] ^= 0xff;
            bad.truncate(bad.len() - 8);
            assert!(decompress(&bad[..], format).is_err(), "{format:?}");
            assert!(decompress(&b"not compressed"[..], format).is_err(), "{format:?}");
        }
    }
}
