//! Collects the `modalias` of every device under `/sys/devices`.
//!
//! sysfs is walked without following symlinks (`subsystem`, `driver` and
//! friends point back up the tree), with a depth limit as a second guard.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// Deeper than any real device path (a USB device behind hubs on a PCI
/// bridge is about 15 levels).
const MAX_DEPTH: usize = 32;

/// All distinct modaliases below `sys_dir/devices`, sorted so a pass loads
/// modules in a stable order. Unreadable directories and files are skipped:
/// some sysfs attributes return errors on read, and that is not our problem.
pub fn modaliases(sys_dir: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    walk(&sys_dir.join("devices"), 0, &mut found);
    found
}

fn walk(dir: &Path, depth: usize, found: &mut BTreeSet<String>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            walk(&entry.path(), depth + 1, found);
        } else if file_type.is_file() && entry.file_name() == "modalias" {
            if let Some(alias) = read_modalias(&entry.path()) {
                found.insert(alias);
            }
        }
    }
}

fn read_modalias(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let alias = text.trim_end_matches(['\n', '\0']).trim();
    (!alias.is_empty()).then(|| alias.to_owned())
}
