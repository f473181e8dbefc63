//! What tells this box from the others, for `boot.started`: DMI, MACs,
//! CPUs, memory, disks. Every file is read with a bound; what cannot be
//! read is left out, never an error.

use std::path::Path;

use super::Identity;

const SMALL: u64 = 4 << 10;

fn small(path: &Path) -> Option<String> {
    let bytes = crate::fsutil::read_bounded(path, SMALL).ok()?;
    Some(String::from_utf8_lossy(&bytes).trim().to_string()).filter(|s| !s.is_empty())
}

/// `MemTotal:  262144 kB` in /proc/meminfo, in bytes.
pub fn mem_total(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Names under `dir`, sorted, at most 256.
fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.take(256).filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// Reads the machine's identity from /sys and /proc.
pub fn identity(cmdline: &str) -> Identity {
    let dmi = Path::new("/sys/class/dmi/id");
    let macs = names(Path::new("/sys/class/net"))
        .into_iter()
        .filter(|n| n != "lo")
        .filter_map(|n| small(&Path::new("/sys/class/net").join(&n).join("address")).map(|mac| (n, mac)))
        .collect();
    let disks = names(Path::new("/sys/block"))
        .into_iter()
        .filter(|n| !n.starts_with("loop") && !n.starts_with("ram"))
        .filter_map(|n| {
            let sectors = small(&Path::new("/sys/block").join(&n).join("size"))?.parse::<u64>().ok()?;
            Some((n, sectors * 512))
        })
        .collect();
    let meminfo = crate::fsutil::read_bounded(Path::new("/proc/meminfo"), 64 << 10).unwrap_or_default();
    Identity {
        kernel_release: nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
        cmdline: super::redact_cmdline(cmdline),
        dmi_uuid: small(&dmi.join("product_uuid")),
        dmi_serial: small(&dmi.join("product_serial")),
        vendor: small(&dmi.join("sys_vendor")),
        product: small(&dmi.join("product_name")),
        macs,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_bytes: mem_total(&String::from_utf8_lossy(&meminfo)),
        disks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_from_meminfo() {
        for (text, want) in [
            ("MemTotal:         262144 kB\nMemFree:  1 kB\n", 268_435_456),
            ("MemFree:  1 kB\n", 0),
            ("MemTotal: lots\n", 0),
        ] {
            assert_eq!(mem_total(text), want, "{text}");
        }
    }
}
