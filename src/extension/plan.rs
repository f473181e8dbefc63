//! Which overlay mounts merge a set of extensions, and which of their files
//! collide (pure).
//!
//! Each extension is a read-only lower layer; the later one is the upper of
//! the two, so it wins a collision (overlayfs's `lowerdir=` lists the top
//! layer first). `/usr` stays read-only. `/etc` gets a tmpfs upper layer,
//! since PID 1 and net-up still write there (machine-id, resolv.conf). The
//! initrd keeps its modules in `/lib/modules/<release>` while extensions
//! carry `usr/lib/modules/<release>` (the merged-/usr layout), so that
//! directory gets an overlay of its own, topped by a directory with the
//! combined module index.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One extension, mounted or unpacked at `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub name: String,
    pub root: PathBuf,
    pub usr: bool,
    pub etc: bool,
    /// It carries `usr/lib/modules/<running release>`.
    pub modules: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub target: PathBuf,
    pub options: String,
}

/// Where the writable part of `/etc` lives (on /run's tmpfs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upper {
    pub upper: PathBuf,
    pub work: PathBuf,
}

/// The overlay mounts for `layers` (in merge order), over what is mounted
/// now. `index` is the directory with the merged modules.alias/dep.
pub fn mounts(layers: &[Layer], release: &str, index: &Path, etc: &Upper) -> Vec<Mount> {
    let lowers = |sub: &str, keep: fn(&Layer) -> bool, base: &Path| {
        let mut dirs: Vec<String> = layers.iter().rev().filter(|l| keep(l)).map(|l| l.root.join(sub).display().to_string()).collect();
        dirs.push(base.display().to_string());
        dirs.join(":")
    };
    let mut out = Vec::new();
    if layers.iter().any(|l| l.usr) {
        out.push(Mount { target: "/usr".into(), options: format!("lowerdir={}", lowers("usr", |l| l.usr, Path::new("/usr"))) });
    }
    if layers.iter().any(|l| l.modules) {
        let modules = Path::new("/lib/modules").join(release);
        let sub = format!("usr/lib/modules/{release}");
        let mut dirs = vec![index.display().to_string()];
        dirs.extend(layers.iter().rev().filter(|l| l.modules).map(|l| l.root.join(&sub).display().to_string()));
        dirs.push(modules.display().to_string());
        out.push(Mount { target: modules, options: format!("lowerdir={}", dirs.join(":")) });
    }
    if layers.iter().any(|l| l.etc) {
        out.push(Mount {
            target: "/etc".into(),
            options: format!(
                "lowerdir={},upperdir={},workdir={}",
                lowers("etc", |l| l.etc, Path::new("/etc")),
                etc.upper.display(),
                etc.work.display()
            ),
        });
    }
    out
}

/// A file two extensions carry: the later one's is the one seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub path: String,
    pub hidden: String,
    pub winner: String,
}

/// Files (relative paths) present in more than one extension, given each
/// extension's name and files in merge order. Directories merge and are
/// not listed by callers; the release files have distinct names.
pub fn conflicts(files: &[(String, Vec<String>)]) -> Vec<Conflict> {
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    let mut out = Vec::new();
    for (name, paths) in files {
        for path in paths {
            if let Some(previous) = owner.insert(path, name) {
                out.push(Conflict { path: path.clone(), hidden: previous.to_string(), winner: name.clone() });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str, usr: bool, etc: bool, modules: bool) -> Layer {
        Layer { name: name.into(), root: PathBuf::from("/run/iguana/extensions").join(name), usr, etc, modules }
    }

    fn check(layers: &[Layer], want: &[(&str, &str)]) {
        let upper = Upper { upper: "/run/iguana/extensions/.etc/upper".into(), work: "/run/iguana/extensions/.etc/work".into() };
        let got = mounts(layers, "6.1.0-1-cloud-amd64", Path::new("/run/iguana/extensions/.index"), &upper);
        let want: Vec<Mount> = want.iter().map(|(t, o)| Mount { target: t.into(), options: o.to_string() }).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn overlay_mounts() {
        check(&[], &[]);
        check(&[layer("site", false, true, false)], &[(
            "/etc",
            "lowerdir=/run/iguana/extensions/site/etc:/etc,upperdir=/run/iguana/extensions/.etc/upper,workdir=/run/iguana/extensions/.etc/work",
        )]);
        check(
            &[layer("pvscsi", true, false, true), layer("fw", true, false, false)],
            &[
                ("/usr", "lowerdir=/run/iguana/extensions/fw/usr:/run/iguana/extensions/pvscsi/usr:/usr"),
                (
                    "/lib/modules/6.1.0-1-cloud-amd64",
                    "lowerdir=/run/iguana/extensions/.index:/run/iguana/extensions/pvscsi/usr/lib/modules/6.1.0-1-cloud-amd64:/lib/modules/6.1.0-1-cloud-amd64",
                ),
            ],
        );
    }

    #[test]
    fn the_later_extension_wins() {
        let files = |name: &str, paths: &[&str]| (name.to_string(), paths.iter().map(|p| p.to_string()).collect::<Vec<_>>());
        let got = conflicts(&[
            files("a", &["etc/iguana/control.yaml", "usr/lib/firmware/x.bin"]),
            files("b", &["etc/iguana/control.yaml"]),
            files("c", &["usr/lib/firmware/x.bin", "etc/iguana/control.yaml", "etc/other"]),
        ]);
        let c = |path: &str, hidden: &str, winner: &str| Conflict { path: path.into(), hidden: hidden.into(), winner: winner.into() };
        assert_eq!(
            got,
            [c("etc/iguana/control.yaml", "a", "b"), c("usr/lib/firmware/x.bin", "a", "c"), c("etc/iguana/control.yaml", "b", "c")]
        );
    }
}
