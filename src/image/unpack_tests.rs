//! Tests of the unpacker: OCI semantics (replacement, whiteouts, opaque
//! directories, metadata) and hostile layers. Each hostile case plants files
//! outside the root and asserts afterwards that nothing outside changed,
//! whether the entry was refused or landed inside the root.

use super::root::Root;
use super::unpack::{apply_layer, apply_layer_as, Whiteouts};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::path::PathBuf;

/// One raw tar entry; names are written verbatim (the tar crate's builder
/// refuses `..`, which is exactly what these tests need to send).
#[derive(Clone)]
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Char(&'a str, u32, u32),
    Fifo(&'a str),
}

fn tar(entries: &[E<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_old();
        let (kind, path, link, data, mode) = match e {
            E::Dir(p) => (tar::EntryType::Directory, *p, "", "", 0o755),
            E::File(p, d) => (tar::EntryType::Regular, *p, "", *d, 0o644),
            E::Symlink(p, l) => (tar::EntryType::Symlink, *p, *l, "", 0o777),
            E::Hardlink(p, l) => (tar::EntryType::Link, *p, *l, "", 0o644),
            E::Char(p, _, _) => (tar::EntryType::Char, *p, "", "", 0o666),
            E::Fifo(p) => (tar::EntryType::Fifo, *p, "", "", 0o600),
        };
        let old = h.as_old_mut();
        old.name[..path.len()].copy_from_slice(path.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        if let E::Char(_, major, minor) = e {
            // Old-style headers have no device fields; use a ustar header.
            let mut u = tar::Header::new_ustar();
            u.as_mut_bytes()[..257].copy_from_slice(&h.as_bytes()[..257]);
            u.set_device_major(*major).unwrap();
            u.set_device_minor(*minor).unwrap();
            h = u;
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data.as_bytes());
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// A temp dir holding `root/` (the unpack root) and `outside/` with
/// planted files that no layer may touch.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("root")).unwrap();
        fs::create_dir_all(dir.path().join("outside/sub")).unwrap();
        fs::write(dir.path().join("outside/secret"), "secret").unwrap();
        fs::write(dir.path().join("outside/sub/file"), "file").unwrap();
        fs::write(dir.path().join("planted"), "planted").unwrap();
        Sandbox { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn outside(&self) -> String {
        self.dir.path().join("outside").display().to_string()
    }

    /// Applies layers in order; the result of each.
    fn apply(&self, layers: &[&[E<'_>]]) -> Vec<Result<(), String>> {
        let root = Root::open(&self.root()).unwrap();
        layers
            .iter()
            .map(|l| {
                let data = tar(l);
                apply_layer(&root, data.as_slice())
                    .map(|_| ())
                    .map_err(|e| chain(&e))
            })
            .collect()
    }

    /// Applies one layer on its own, whiteouts in overlayfs form.
    fn apply_overlay(&self, layer: &[E<'_>]) -> Result<(), String> {
        let root = Root::open(&self.root()).unwrap();
        let data = tar(layer);
        apply_layer_as(&root, data.as_slice(), Whiteouts::Overlay)
            .map(|_| ())
            .map_err(|e| chain(&e))
    }

    /// Everything outside `root/`: path -> (type, mode, nlink, content).
    fn outside_state(&self) -> BTreeMap<PathBuf, String> {
        let mut state = BTreeMap::new();
        walk(self.dir.path(), &self.root(), &mut state);
        state
    }
}

fn walk(dir: &Path, skip: &Path, state: &mut BTreeMap<PathBuf, String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path == skip {
            continue;
        }
        let md = fs::symlink_metadata(&path).unwrap();
        let content = if md.is_file() {
            fs::read_to_string(&path).unwrap_or_default()
        } else {
            String::new()
        };
        state.insert(
            path.clone(),
            format!(
                "{:?} {:o} {} {content}",
                md.file_type(),
                md.mode(),
                md.nlink()
            ),
        );
        if md.is_dir() {
            walk(&path, skip, state);
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}

/// Runs `layers` in a fresh sandbox and asserts nothing outside the root
/// changed and no `marker` file appeared in the host's `/`.
fn hostile(layers: &[&[E<'_>]], marker: &str) -> (Sandbox, Vec<Result<(), String>>) {
    let sb = Sandbox::new();
    let before = sb.outside_state();
    let results = sb.apply(layers);
    assert_eq!(
        sb.outside_state(),
        before,
        "outside the root changed; results {results:?}"
    );
    assert!(
        !Path::new("/").join(marker).exists(),
        "{marker} escaped to the host /"
    );
    (sb, results)
}

fn read(sb: &Sandbox, rel: &str) -> Option<String> {
    fs::read_to_string(sb.root().join(rel)).ok()
}

#[test]
fn dotdot_paths_are_refused() {
    for path in [
        "../escape",
        "a/../../escape",
        "../planted",
        "./../outside/secret",
    ] {
        let layer = [E::File(path, "pwned")];
        let (_, results) = hostile(&[&layer], "escape");
        assert!(
            results[0].as_ref().is_err_and(|e| e.contains("'..'")),
            "{path}: {results:?}"
        );
    }
}

#[test]
fn absolute_paths_land_inside_the_root() {
    let marker = "iguana-test-abs-marker";
    let path = format!("/{marker}");
    let layer = [E::File(&path, "x")];
    let (sb, results) = hostile(&[&layer], marker);
    assert_eq!(results, vec![Ok(())]);
    assert_eq!(read(&sb, marker).as_deref(), Some("x"));
}

#[test]
fn writes_through_symlinks_stay_inside() {
    let elsewhere = Sandbox::new(); // a real host directory outside this sandbox
    let outside = elsewhere.outside();
    let marker = "iguana-test-symlink-marker";
    let through_root = format!("toroot/{marker}");
    let through_up = "up/planted".to_string();
    let through_abs = "abs/secret".to_string();
    let layer = [
        E::Symlink("toroot", "/"),
        E::File(&through_root, "pwned"),
        E::Symlink("up", "../.."),
        E::File(&through_up, "pwned"),
        E::Symlink("abs", &outside),
    ];
    let (sb, results) = hostile(&[&layer], marker);
    assert_eq!(results, vec![Ok(())]);
    // "/" and "../.." both mean the root itself when resolved in the root.
    assert_eq!(read(&sb, marker).as_deref(), Some("pwned"));
    assert_eq!(read(&sb, "planted").as_deref(), Some("pwned"));
    // A write through an absolute symlink to a host directory is refused
    // (the path does not exist inside the root) or lands inside.
    let layer2 = [E::File(&through_abs, "pwned")];
    let results = sb.apply(&[&layer2]);
    assert!(
        results[0].is_err()
            || read(&sb, &format!("{}/secret", outside.trim_start_matches('/'))).is_some()
    );
    assert_eq!(
        fs::read_to_string(format!("{outside}/secret")).unwrap(),
        "secret"
    );
}

#[test]
fn symlink_from_lower_layer_used_as_directory() {
    let sb0 = Sandbox::new();
    let outside = sb0.outside();
    let file_under = "etc/secret";
    let layer1 = [E::Symlink("etc", &outside)];
    let layer2 = [
        E::File(file_under, "pwned"),
        E::Dir("etc/sub"),
        E::Symlink("etc/sub/l", "/"),
    ];
    let (sb, results) = hostile(&[&layer1, &layer2], "secret");
    assert_eq!(results, vec![Ok(()), Ok(())]);
    // The host path was recreated inside the root and written there.
    let inside = format!("{}/secret", outside.trim_start_matches('/'));
    assert_eq!(read(&sb, &inside).as_deref(), Some("pwned"));
    assert_eq!(
        fs::read_to_string(format!("{outside}/secret")).unwrap(),
        "secret"
    );
}

#[test]
fn hardlinks_cannot_reach_outside() {
    let sb0 = Sandbox::new();
    let secret = format!("{}/secret", sb0.outside());
    let via_symlink = "s/secret";
    for layer in [
        vec![E::Hardlink("hl", "../outside/secret")],
        vec![E::Hardlink("hl", &secret)],
        vec![
            E::Symlink("s", &sb0.outside()),
            E::Hardlink("hl", via_symlink),
        ],
    ] {
        let (sb, results) = hostile(&[&layer], "hl");
        assert!(results[0].is_err(), "{results:?}");
        assert!(fs::symlink_metadata(sb.root().join("hl")).is_err());
    }
    assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1);

    // A hard link to a symlink links the symlink itself, not its target.
    let layer = [E::Symlink("s", &secret), E::Hardlink("hl", "s")];
    let (sb, results) = hostile(&[&layer], "hl");
    assert_eq!(results, vec![Ok(())]);
    assert!(fs::symlink_metadata(sb.root().join("hl"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1);
}

#[test]
fn rewriting_a_file_never_writes_through_links() {
    let sb0 = Sandbox::new();
    let secret = format!("{}/secret", sb0.outside());
    // A lower symlink to a host file, then a regular file at the same path.
    let (sb, results) = hostile(
        &[&[E::Symlink("f", &secret)], &[E::File("f", "pwned")]],
        "f",
    );
    assert_eq!(results, vec![Ok(()), Ok(())]);
    assert_eq!(read(&sb, "f").as_deref(), Some("pwned"));
    assert_eq!(fs::read_to_string(&secret).unwrap(), "secret");

    // A hard link pair in a lower layer; rewriting one leaves the other.
    let lower = [E::File("a", "orig"), E::Hardlink("b", "a")];
    let (sb, results) = hostile(&[&lower, &[E::File("b", "new")]], "b");
    assert_eq!(results, vec![Ok(()), Ok(())]);
    assert_eq!(read(&sb, "a").as_deref(), Some("orig"));
    assert_eq!(read(&sb, "b").as_deref(), Some("new"));
}

#[test]
fn hostile_whiteouts() {
    let sb0 = Sandbox::new();
    let outside = sb0.outside();
    let refused = |layer: &[E<'_>], expected: &str| {
        let (_, results) = hostile(&[layer], "x");
        assert!(
            results[0].as_ref().is_err_and(|e| e.contains(expected)),
            "{results:?}"
        );
    };
    refused(&[E::File("../.wh.planted", "")], "'..'");
    refused(&[E::File("a/.wh..", "")], "invalid whiteout name");
    refused(&[E::File(".wh..", "")], "invalid whiteout name");

    // Whiteouts and opaque markers behind symlinks to host directories.
    let wh = "l/.wh.secret";
    let wh_dir = "l/.wh.sub";
    let opq = "l/.wh..wh..opq";
    for layer2 in [
        vec![E::File(wh, "")],
        vec![E::File(wh_dir, "")],
        vec![E::File(opq, "")],
    ] {
        let (_, _results) = hostile(&[&[E::Symlink("l", &outside)], &layer2], "x");
        assert_eq!(
            fs::read_to_string(format!("{outside}/secret")).unwrap(),
            "secret"
        );
    }

    // Deleting a directory that holds a symlink to a host directory
    // removes the link, not what it points to.
    let lower = [
        E::Dir("d"),
        E::Symlink("d/l", &outside),
        E::Symlink("top", &outside),
    ];
    let (sb, results) = hostile(
        &[&lower, &[E::File(".wh.d", ""), E::File(".wh.top", "")]],
        "x",
    );
    assert_eq!(results, vec![Ok(()), Ok(())]);
    assert!(!sb.root().join("d").exists() && fs::symlink_metadata(sb.root().join("top")).is_err());
    assert_eq!(
        fs::read_to_string(format!("{outside}/sub/file")).unwrap(),
        "file"
    );
}

#[test]
fn whiteouts_and_opaque_directories() {
    let sb = Sandbox::new();
    let lower = [
        E::Dir("a"),
        E::File("a/x", "x"),
        E::Dir("a/deep"),
        E::File("a/deep/y", "y"),
        E::Dir("b"),
        E::File("b/z", "z"),
        E::File("c", "c"),
        E::File("keep", "keep"),
    ];
    let upper = [
        // Entries of the same layer survive an opaque marker in any order.
        E::File("a/before", "before"),
        E::File("a/.wh..wh..opq", ""),
        E::File("a/after", "after"),
        E::File(".wh.b", ""),
        E::File(".wh.c", ""),
        E::File(".wh.missing", ""),
        E::File("nodir/.wh.x", ""),
        // A whiteout of something this layer created is ignored.
        E::File("new", "new"),
        E::File(".wh.new", ""),
    ];
    assert_eq!(sb.apply(&[&lower, &upper]), vec![Ok(()), Ok(())]);
    let mut names: Vec<String> = fs::read_dir(sb.root().join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["after", "before"]);
    assert!(!sb.root().join("b").exists());
    assert!(!sb.root().join("c").exists());
    assert_eq!(read(&sb, "keep").as_deref(), Some("keep"));
    assert_eq!(read(&sb, "new").as_deref(), Some("new"));
    assert!(!sb.root().join("nodir").exists());
}

#[test]
fn replacement_rules() {
    let sb = Sandbox::new();
    let lower = [
        E::Dir("d"),
        E::File("d/f", "f"),
        E::File("f", "f"),
        E::Symlink("s", "f"),
        E::Dir("keep"),
        E::File("keep/x", "x"),
    ];
    let upper = [
        E::File("d", "now a file"),
        E::Dir("f"),
        E::Symlink("s", "d"),
        E::Dir("keep"),
        E::File("keep/y", "y"),
    ];
    assert_eq!(sb.apply(&[&lower, &upper]), vec![Ok(()), Ok(())]);
    assert_eq!(read(&sb, "d").as_deref(), Some("now a file"));
    assert!(sb.root().join("f").is_dir());
    assert_eq!(fs::read_link(sb.root().join("s")).unwrap(), Path::new("d"));
    // An existing directory is merged into, not replaced.
    assert_eq!(read(&sb, "keep/x").as_deref(), Some("x"));
    assert_eq!(read(&sb, "keep/y").as_deref(), Some("y"));
}

#[test]
fn metadata_devices_and_parents() {
    let sb = Sandbox::new();
    let layer = [
        E::File("usr/bin/tool", "#!"),
        E::Char("dev/null", 1, 3),
        E::Fifo("run/fifo"),
        E::Dir("./"),
    ];
    assert_eq!(sb.apply(&[&layer]), vec![Ok(())]);
    let tool = fs::metadata(sb.root().join("usr/bin/tool")).unwrap();
    assert_eq!((tool.mode() & 0o7777, tool.mtime()), (0o644, 1_600_000_000));
    // Missing parents are created.
    assert!(sb.root().join("usr/bin").is_dir());
    let null = fs::metadata(sb.root().join("dev/null")).unwrap();
    if rustix::process::geteuid().is_root() {
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    }
    assert!(fs::metadata(sb.root().join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    // "./" sets the root's own mode; its mtime is set after its children.
    let root = fs::metadata(sb.root()).unwrap();
    assert_eq!((root.mode() & 0o7777, root.mtime()), (0o755, 1_600_000_000));
}

#[test]
fn owners_modes_and_xattrs() {
    if !rustix::process::geteuid().is_root() {
        return; // chown needs root
    }
    let sb = Sandbox::new();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o4750);
    h.set_uid(1000);
    h.set_gid(2000);
    h.set_size(2);
    h.set_mtime(1_500_000_000);
    b.append_pax_extensions([("SCHILY.xattr.user.iguana", &b"yes"[..])])
        .unwrap();
    b.append_data(&mut h, "suid", &b"#!"[..]).unwrap();
    let data = b.into_inner().unwrap();
    let root = Root::open(&sb.root()).unwrap();
    apply_layer(&root, data.as_slice()).unwrap();
    let md = fs::metadata(sb.root().join("suid")).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777, md.mtime()),
        (1000, 2000, 0o4750, 1_500_000_000)
    );
    // user.* xattrs need filesystem support (tmpfs has it on recent kernels).
    if let Ok(v) = rustix::fs::getxattr(
        sb.root().join("suid").as_path(),
        "user.iguana",
        &mut [0u8; 8],
    ) {
        assert_eq!(v, 3);
    }
}

#[test]
fn root_entry_of_another_type_is_refused() {
    let (_, results) = hostile(&[&[E::Symlink("./", "/")]], "x");
    assert!(
        results[0]
            .as_ref()
            .is_err_and(|e| e.contains("cannot replace the root")),
        "{results:?}"
    );
}

#[test]
fn parents_are_created_through_dangling_symlinks() {
    // Merged /usr: the symlink comes first, its target later or never.
    let layer = [
        E::Symlink("lib", "usr/lib"),
        E::File("lib/libc.so", "libc"),
        E::Symlink("bin", "/usr/bin"),
        E::File("bin/sh", "sh"),
    ];
    let (sb, results) = hostile(&[&layer], "iguana-test-no-such-marker");
    assert_eq!(results, vec![Ok(())]);
    assert_eq!(read(&sb, "usr/lib/libc.so").as_deref(), Some("libc"));
    assert_eq!(read(&sb, "usr/bin/sh").as_deref(), Some("sh"));
    // A self-loop ends in an error, not a hang; a dangling link to the host
    // creates the directory inside the root.
    let sb0 = Sandbox::new();
    let up = format!("{}/made", sb0.outside());
    let looping = [E::Symlink("loop", "loop"), E::File("loop/x", "x")];
    let to_host = [E::Symlink("host", &up), E::File("host/x", "x")];
    let (sb, results) = hostile(&[&looping, &to_host], "made");
    assert!(
        results[0]
            .as_ref()
            .is_err_and(|e| e.contains("openat2 parent")),
        "{results:?}"
    );
    assert_eq!(results[1], Ok(()));
    assert!(!Path::new(&up).exists());
    assert_eq!(
        read(&sb, &format!("{}/x", up.trim_start_matches('/'))).as_deref(),
        Some("x")
    );
}

#[test]
fn overlay_form_whiteouts_stay_inside_the_layer() {
    if !rustix::process::geteuid().is_root() {
        return; // mknod of the 0/0 whiteout and trusted.* xattrs need root
    }
    let sb = Sandbox::new();
    let outside = sb.outside();
    let before = sb.outside_state();
    // Whiteouts and an opaque marker behind a symlink to a host directory,
    // in the same layer: they land inside the layer directory.
    let layer = [
        E::Symlink("l", &outside),
        E::File("l/.wh.secret", ""),
        E::File("l/.wh..wh..opq", ""),
        E::Dir("etc"),
        E::File("etc/.wh.passwd", ""),
        E::File("etc/mine", "mine"),
        E::File("etc/.wh.mine", ""),
    ];
    assert_eq!(sb.apply_overlay(&layer), Ok(()));
    assert_eq!(sb.outside_state(), before, "outside the root changed");
    let mut value = [0u8; 8];
    assert!(rustix::fs::getxattr(outside.as_str(), "trusted.overlay.opaque", &mut value).is_err());
    let passwd = fs::symlink_metadata(sb.root().join("etc/passwd")).unwrap();
    assert!(passwd.file_type().is_char_device() && passwd.rdev() == 0);
    // A whiteout only hides lower layers: this layer's own file stays.
    assert_eq!(read(&sb, "etc/mine").as_deref(), Some("mine"));
    for (layer, expected) in [
        (vec![E::File("../.wh.planted", "")], "'..'"),
        (vec![E::File("a/.wh..", "")], "invalid whiteout name"),
    ] {
        let sb = Sandbox::new();
        let before = sb.outside_state();
        let result = sb.apply_overlay(&layer);
        assert!(result.as_ref().is_err_and(|e| e.contains(expected)), "{result:?}");
        assert_eq!(sb.outside_state(), before);
    }
}

/// Owner and mode of `rel` under `root`, as `mode uid:gid`.
fn owner_mode(root: &Path, rel: &str) -> String {
    let md = fs::symlink_metadata(root.join(rel)).unwrap();
    format!("{:o} {}:{}", md.mode() & 0o7777, md.uid(), md.gid())
}

/// A directory a layer needs but leaves out takes, in a layer directory of
/// its own, the owner and mode the layers below merge to at that path (as
/// overlayfs shows them), else 0755 root:root as umoci makes it. The
/// layers are real tars (testkit's writer, no `./`, parents left out).
#[test]
fn implicit_directories_copy_the_lower_layers() {
    use testkit::Layer;
    if !rustix::process::geteuid().is_root() {
        panic!("needs root: owners and trusted.overlay xattrs");
    }
    let base = Layer::new()
        .dir("var", 0o755)
        .dir("var/lib", 0o711)
        .dir("var/lib/app", 0o750)
        .owned(1000, 1000)
        .dir("srv", 0o700)
        .owned(7, 7)
        .dir("srv/x", 0o700)
        .owned(7, 7);
    // Above the base: hides var/lib/app by a whiteout, srv's lower content
    // by an opaque directory (srv itself stays, owned 8:8).
    let hiding = Layer::new()
        .dir("srv", 0o770)
        .owned(8, 8)
        .whiteout("var/lib/app")
        .opaque("srv");
    let upper = Layer::new()
        .file("var/lib/app/new", "new", 0o640)
        .file("srv/x/file", "x", 0o644)
        .file("opt/new/file", "f", 0o644);
    // (lower layers top first, [(path, "mode uid:gid")] in the upper layer)
    type Case<'a> = (&'a [&'a Layer], &'a [(&'a str, &'a str)]);
    let cases: &[Case<'_>] = &[
        (&[], &[("", "755 0:0"), ("var/lib/app", "755 0:0"), ("opt/new", "755 0:0")]),
        (&[&base], &[("", "755 0:0"), ("var", "755 0:0"), ("var/lib", "711 0:0"), ("var/lib/app", "750 1000:1000"), ("srv", "700 7:7"), ("srv/x", "700 7:7"), ("opt", "755 0:0")]),
        (&[&hiding, &base], &[("var/lib", "711 0:0"), ("var/lib/app", "755 0:0"), ("srv", "770 8:8"), ("srv/x", "755 0:0")]),
    ];
    for (lowers, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut lower_dirs = Vec::new();
        // Bottom first, each on top of those below it, as the pull does.
        for (i, layer) in lowers.iter().rev().enumerate() {
            let path = dir.path().join(format!("lower{i}"));
            fs::create_dir(&path).unwrap();
            let below: Vec<PathBuf> = lower_dirs.iter().rev().cloned().collect();
            let root = Root::open(&path).unwrap().with_lowers(&below).unwrap();
            apply_layer_as(&root, layer.tar().unwrap().as_slice(), Whiteouts::Overlay).unwrap();
            lower_dirs.push(path);
        }
        let top = dir.path().join("upper");
        fs::create_dir(&top).unwrap();
        let below: Vec<PathBuf> = lower_dirs.iter().rev().cloned().collect();
        let root = Root::open(&top).unwrap().with_lowers(&below).unwrap();
        apply_layer_as(&root, upper.tar().unwrap().as_slice(), Whiteouts::Overlay).unwrap();
        for (rel, want) in *expected {
            assert_eq!(owner_mode(&top, rel), *want, "{rel:?} over {} lower layers", lowers.len());
        }
    }
}
