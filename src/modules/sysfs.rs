//! Collects the modalias of every device sysfs lists, the way
//! `udevadm trigger` enumerates them: each device of each bus
//! (`/sys/bus/*/devices/*`, whose `uevent` carries the bus's `MODALIAS=`,
//! the cpu's included, which has no `modalias` file of its own) and each
//! class device (`/sys/class/*/*`, read for a `modalias` file: input, dmi).
//!
//! Not a walk of `/sys/devices`: that opens every directory of every device
//! (`power/`, queues, each CPU's cache levels), which took ~0.2 s per pass
//! under TCG on a loaded machine, 40 % of the modules phase (issue 12); the
//! lists above are one level deep, so no symlink is followed further than
//! one device.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Read;
use std::path::Path;

/// A `uevent` or `modalias` file is one page at most (the kernel's
/// `PAGE_SIZE` buffer for attributes); more is not a sysfs attribute.
const MAX_ATTRIBUTE: u64 = 8 << 10;

/// All distinct modaliases of `sys_dir`'s (normally `/sys`) bus and class
/// devices, sorted so a pass loads modules in a stable order. Unreadable
/// directories and files are skipped: some sysfs attributes return errors on
/// read, and that is not our problem.
pub fn modaliases(sys_dir: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for bus in entries(&sys_dir.join("bus")) {
        for device in entries(&bus.join("devices")) {
            let alias = read_attribute(&device.join("uevent")).and_then(|text| uevent_modalias(&text).map(str::to_owned));
            found.extend(alias);
        }
    }
    for class in entries(&sys_dir.join("class")) {
        for device in entries(&class) {
            found.extend(read_attribute(&device.join("modalias")).and_then(|text| modalias(&text).map(str::to_owned)));
        }
    }
    found
}

/// The paths in `dir`, none when it cannot be read.
fn entries(dir: &Path) -> impl Iterator<Item = std::path::PathBuf> {
    fs::read_dir(dir).into_iter().flatten().flatten().map(|entry| entry.path())
}

fn read_attribute(path: &Path) -> Option<String> {
    let mut bytes = Vec::new();
    File::open(path).ok()?.take(MAX_ATTRIBUTE).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The value of a `MODALIAS=` line of a `uevent` file.
fn uevent_modalias(text: &str) -> Option<&str> {
    text.lines().find_map(|line| line.strip_prefix("MODALIAS=")).and_then(modalias)
}

/// A `modalias` file's text without its newline, unless empty.
fn modalias(text: &str) -> Option<&str> {
    let alias = text.trim_end_matches(['\n', '\0']).trim();
    (!alias.is_empty()).then_some(alias)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn bus_uevents_and_class_modalias_files() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path();
        let write = |path: &str, text: &str| {
            let path = sys.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        let link = |target: &str, at: &str| {
            let at = sys.join(at);
            fs::create_dir_all(at.parent().unwrap()).unwrap();
            symlink(sys.join(target), at).unwrap();
        };
        // (where the device lives, its uevent, its link in bus/ or class/)
        write("devices/pci0000:00/0000:00:02.0/uevent", "DRIVER=x\nPCI_ID=1AF4:1041\nMODALIAS=pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00\n");
        link("devices/pci0000:00/0000:00:02.0", "bus/pci/devices/0000:00:02.0");
        // The cpu: MODALIAS in each cpu's uevent, no modalias file.
        write("devices/system/cpu/cpu0/uevent", "MODALIAS=cpu:type:x86,ven0000fam0006mod0055:feature:,0000,0001\n");
        link("devices/system/cpu/cpu0", "bus/cpu/devices/cpu0");
        // The same alias twice (cpu1), and a device without one.
        write("devices/system/cpu/cpu1/uevent", "MODALIAS=cpu:type:x86,ven0000fam0006mod0055:feature:,0000,0001\n");
        link("devices/system/cpu/cpu1", "bus/cpu/devices/cpu1");
        write("devices/platform/empty/uevent", "DRIVER=none\n");
        link("devices/platform/empty", "bus/platform/devices/empty");
        write("devices/platform/blank/uevent", "MODALIAS=\n");
        link("devices/platform/blank", "bus/platform/devices/blank");
        // A bus device without a uevent file, and a bus without devices/.
        fs::create_dir_all(sys.join("devices/platform/gone")).unwrap();
        link("devices/platform/gone", "bus/platform/devices/gone");
        fs::create_dir_all(sys.join("bus/empty")).unwrap();
        // Class devices: a modalias file counts, a uevent alone does not
        // (a class device on a bus is listed there).
        write("devices/virtual/dmi/id/modalias", "dmi:bvnSeaBIOS:svnQEMU:\n");
        link("devices/virtual/dmi/id", "class/dmi/id");
        write("devices/virtual/tty/tty0/uevent", "MAJOR=4\nMINOR=0\nDEVNAME=tty0\n");
        link("devices/virtual/tty/tty0", "class/tty/tty0");
        // Deep attribute directories are not looked into.
        write("devices/pci0000:00/0000:00:02.0/deep/modalias", "pci:v0000DEEPd*\n");

        let found: Vec<String> = modaliases(sys).into_iter().collect();
        assert_eq!(
            found,
            [
                "cpu:type:x86,ven0000fam0006mod0055:feature:,0000,0001",
                "dmi:bvnSeaBIOS:svnQEMU:",
                "pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00",
            ]
        );
        assert!(modaliases(&sys.join("nothing")).is_empty());
    }
}
