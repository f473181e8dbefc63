//! `/iguana/mountlist`: the mounts that make the new root, one per line.
//!
//! ```text
//! # device            mount point   options (mount(8) syntax, optional)
//! LABEL=root          /             noatime
//! UUID=1234-ABCD      /boot/efi     ro
//! /dev/vdb1           /srv          subvol=@srv,compress=zstd
//! tmpfs               /tmp          size=64m,mode=1777
//! ```
//!
//! Devices are `/dev/...` paths, `UUID=`, `LABEL=`, `PARTUUID=`,
//! `PARTLABEL=`, or the name of a pseudo filesystem (`tmpfs`, `proc`, ...),
//! whose type is the name unless `fstype=TYPE` is among the options. Mount
//! points are paths of the new root: `/` is /sysroot and `/boot` is
//! /sysroot/boot; a path already under /sysroot is taken as it is. The first
//! mount must be `/`, so nothing is mounted where the root then hides it.
//! Options that are mount flags (`ro`, `nosuid`, `noatime`, ...) become
//! flags; `fstype=` picks the type; the rest go to the filesystem as data.
//! `parse` is pure and checks every line before anything is mounted.

use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;

/// Where the new root is assembled.
pub const SYSROOT: &str = "/sysroot";

/// Filesystems that need no device; their name is their type.
const PSEUDO: &[&str] = &[
    "tmpfs", "ramfs", "proc", "sysfs", "devtmpfs", "devpts", "cgroup2", "overlay", "efivarfs",
    "securityfs", "debugfs", "tracefs", "mqueue", "hugetlbfs", "bpf", "configfs", "pstore",
];

/// What to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Path(PathBuf),
    Uuid(String),
    Label(String),
    PartUuid(String),
    PartLabel(String),
    /// A pseudo filesystem: the source name given to mount(2).
    Pseudo(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Path(p) => write!(f, "{}", p.display()),
            Source::Uuid(v) => write!(f, "UUID={v}"),
            Source::Label(v) => write!(f, "LABEL={v}"),
            Source::PartUuid(v) => write!(f, "PARTUUID={v}"),
            Source::PartLabel(v) => write!(f, "PARTLABEL={v}"),
            Source::Pseudo(v) => write!(f, "{v}"),
        }
    }
}

/// One line of the mountlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line number, for error messages.
    pub line: usize,
    pub source: Source,
    /// Absolute, under /sysroot.
    pub target: PathBuf,
    /// From `fstype=`, or the pseudo filesystem's name; else probed.
    pub fstype: Option<String>,
    pub flags: MsFlags,
    /// The options that are not flags, comma-separated.
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("mountlist line {line}: {what}")]
    Line { line: usize, what: String },
    #[error("mountlist: nothing to mount")]
    Empty,
    #[error("mountlist line {line}: the first mount must be / (the new root), not {target}")]
    FirstNotRoot { line: usize, target: String },
}

/// Parses the whole file; any bad line fails the whole list.
pub fn parse(text: &str) -> Result<Vec<Entry>, Error> {
    let mut entries = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split_once('#').map_or(raw, |(before, _)| before).trim();
        if content.is_empty() {
            continue;
        }
        let entry = parse_line(line, content).map_err(|what| Error::Line { line, what })?;
        entries.push(entry);
    }
    match entries.first() {
        None => Err(Error::Empty),
        Some(first) if first.target != Path::new(SYSROOT) => {
            Err(Error::FirstNotRoot { line: first.line, target: first.target.display().to_string() })
        }
        Some(_) => Ok(entries),
    }
}

fn parse_line(line: usize, content: &str) -> Result<Entry, String> {
    let fields: Vec<&str> = content.split_whitespace().collect();
    let (device, mountpoint, options) = match fields.as_slice() {
        [device] => return Err(format!("{device:?} has no mount point (want: device mountpoint [options])")),
        [device, mountpoint] => (*device, *mountpoint, ""),
        [device, mountpoint, options] => (*device, *mountpoint, *options),
        _ => return Err(format!("{} fields, want: device mountpoint [options]", fields.len())),
    };
    let (flags, data, fstype) = options_of(options)?;
    let source = source(device)?;
    let fstype = match (&source, fstype) {
        (_, Some(t)) => Some(t),
        (Source::Pseudo(name), None) if PSEUDO.contains(&name.as_str()) => Some(name.clone()),
        (Source::Pseudo(name), None) => {
            return Err(format!("{name:?} is not a device (/dev/..., UUID=, LABEL=, PARTUUID=, PARTLABEL=) nor a known pseudo filesystem; add fstype=TYPE"))
        }
        (_, None) => None,
    };
    Ok(Entry { line, source, target: target(mountpoint)?, fstype, flags, data })
}

fn source(device: &str) -> Result<Source, String> {
    let tagged = [
        ("UUID=", Source::Uuid as fn(String) -> Source),
        ("LABEL=", Source::Label),
        ("PARTUUID=", Source::PartUuid),
        ("PARTLABEL=", Source::PartLabel),
    ];
    for (prefix, make) in tagged {
        if let Some(value) = device.strip_prefix(prefix) {
            let value = value.trim_matches('"');
            if value.is_empty() {
                return Err(format!("{prefix} needs a value"));
            }
            return Ok(make(value.to_string()));
        }
    }
    if device.starts_with('/') {
        return Ok(Source::Path(PathBuf::from(device)));
    }
    if device.contains('=') {
        return Err(format!("unknown device tag in {device:?} (UUID=, LABEL=, PARTUUID=, PARTLABEL=)"));
    }
    Ok(Source::Pseudo(device.to_string()))
}

/// `/` → /sysroot, `/boot` → /sysroot/boot, `/sysroot/x` as it is.
fn target(mountpoint: &str) -> Result<PathBuf, String> {
    let path = Path::new(mountpoint);
    if !path.is_absolute() {
        return Err(format!("mount point {mountpoint:?} is not absolute"));
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("mount point {mountpoint:?} contains .."));
    }
    if path.starts_with(SYSROOT) {
        return Ok(path.components().collect());
    }
    let mut target = PathBuf::from(SYSROOT);
    target.extend(path.components().skip(1));
    Ok(target)
}

/// Splits `ro,noatime,subvol=@,fstype=btrfs` into flags, data and type.
fn options_of(options: &str) -> Result<(MsFlags, String, Option<String>), String> {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    let mut fstype = None;
    if options.is_empty() {
        return Ok((flags, String::new(), None));
    }
    for (i, option) in options.split(',').enumerate() {
        if option.is_empty() {
            return Err(format!("option {} is empty in {options:?}", i + 1));
        }
        if let Some(t) = option.strip_prefix("fstype=") {
            if t.is_empty() {
                return Err("fstype= needs a value".into());
            }
            fstype = Some(t.to_string());
            continue;
        }
        match flag(option) {
            Some((set, clear)) => flags = (flags - clear) | set,
            None => data.push(option),
        }
    }
    Ok((flags, data.join(","), fstype))
}

/// The flags an option sets and clears, as mount(8) reads them.
fn flag(option: &str) -> Option<(MsFlags, MsFlags)> {
    use MsFlags as F;
    let none = F::empty();
    let atimes = F::MS_NOATIME | F::MS_RELATIME | F::MS_STRICTATIME;
    Some(match option {
        "defaults" | "rw" => (none, F::MS_RDONLY),
        "ro" => (F::MS_RDONLY, none),
        "nosuid" => (F::MS_NOSUID, none),
        "suid" => (none, F::MS_NOSUID),
        "nodev" => (F::MS_NODEV, none),
        "dev" => (none, F::MS_NODEV),
        "noexec" => (F::MS_NOEXEC, none),
        "exec" => (none, F::MS_NOEXEC),
        "sync" => (F::MS_SYNCHRONOUS, none),
        "async" => (none, F::MS_SYNCHRONOUS),
        "dirsync" => (F::MS_DIRSYNC, none),
        "noatime" => (F::MS_NOATIME, atimes),
        "relatime" => (F::MS_RELATIME, atimes),
        "strictatime" => (F::MS_STRICTATIME, atimes),
        "atime" | "norelatime" => (none, F::MS_NOATIME | F::MS_RELATIME),
        "nodiratime" => (F::MS_NODIRATIME, none),
        "diratime" => (none, F::MS_NODIRATIME),
        "lazytime" => (F::MS_LAZYTIME, none),
        "nolazytime" => (none, F::MS_LAZYTIME),
        "silent" => (F::MS_SILENT, none),
        "loud" => (none, F::MS_SILENT),
        "bind" => (F::MS_BIND, none),
        "rbind" => (F::MS_BIND | F::MS_REC, none),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(line: usize, source: Source, target: &str, fstype: Option<&str>, flags: MsFlags, data: &str) -> Entry {
        Entry { line, source, target: target.into(), fstype: fstype.map(str::to_string), flags, data: data.into() }
    }

    fn check(input: &str, expected: Result<Vec<Entry>, &str>) {
        let got = parse(input).map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(str::to_string), "{input:?}");
    }

    #[test]
    fn good_lists() {
        use Source::*;
        let none = MsFlags::empty();
        check("/dev/vda2 /\n", Ok(vec![entry(1, Path("/dev/vda2".into()), "/sysroot", None, none, "")]));
        check(
            "# the root\n\nLABEL=root / noatime,ro # fast\n  UUID=1234-ABCD /boot/efi umask=077\ntmpfs /tmp size=64m,mode=1777\n",
            Ok(vec![
                entry(3, Label("root".into()), "/sysroot", None, MsFlags::MS_NOATIME | MsFlags::MS_RDONLY, ""),
                entry(4, Uuid("1234-ABCD".into()), "/sysroot/boot/efi", None, none, "umask=077"),
                entry(5, Pseudo("tmpfs".into()), "/sysroot/tmp", Some("tmpfs"), none, "size=64m,mode=1777"),
            ]),
        );
        check(
            "PARTUUID=0a1b /sysroot rw,subvol=@,fstype=btrfs\nPARTLABEL=data /sysroot/srv ro,rw,relatime,noatime\nnone /run/x fstype=tmpfs\n",
            Ok(vec![
                entry(1, PartUuid("0a1b".into()), "/sysroot", Some("btrfs"), none, "subvol=@"),
                entry(2, PartLabel("data".into()), "/sysroot/srv", None, MsFlags::MS_NOATIME, ""),
                entry(3, Pseudo("none".into()), "/sysroot/run/x", Some("tmpfs"), none, ""),
            ]),
        );
    }

    #[test]
    fn bad_lists() {
        let cases = [
            ("", "mountlist: nothing to mount"),
            ("# only a comment\n\n", "mountlist: nothing to mount"),
            ("LABEL=root /\n/dev/vdb\n", "mountlist line 2: \"/dev/vdb\" has no mount point (want: device mountpoint [options])"),
            ("/dev/vda /\ntmpfs /tmp\n/dev/vdb /srv ro extra\n", "mountlist line 3: 4 fields, want: device mountpoint [options]"),
            ("LABEL= /\n", "mountlist line 1: LABEL= needs a value"),
            ("SERIAL=abc /\n", "mountlist line 1: unknown device tag in \"SERIAL=abc\" (UUID=, LABEL=, PARTUUID=, PARTLABEL=)"),
            ("/dev/vda1 boot\n", "mountlist line 1: mount point \"boot\" is not absolute"),
            ("/dev/vda1 /../etc\n", "mountlist line 1: mount point \"/../etc\" contains .."),
            ("/dev/vda1 / ro,,noatime\n", "mountlist line 1: option 2 is empty in \"ro,,noatime\""),
            ("/dev/vda1 / fstype=\n", "mountlist line 1: fstype= needs a value"),
            ("vda1 /\n", "mountlist line 1: \"vda1\" is not a device (/dev/..., UUID=, LABEL=, PARTUUID=, PARTLABEL=) nor a known pseudo filesystem; add fstype=TYPE"),
            ("\ntmpfs /tmp\n/dev/vda1 /\n", "mountlist line 2: the first mount must be / (the new root), not /sysroot/tmp"),
        ];
        for (input, want) in cases {
            check(input, Err(want));
        }
    }
}
