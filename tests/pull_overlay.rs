//! Per-layer directories and the overlay rootfs (`iguana pull --layers`),
//! against a real docker-registry on 127.0.0.1 and the host's overlayfs.
//! The merged view must be identical to the flattened unpack of the same
//! image: names, types, modes, owners, contents, link targets, devices.
//!
//! These tests need root and overlayfs, as PID 1 has: they fail (never skip)
//! without them, since the CI machine is root.

// An integration test file is a test crate of its own: no test module needed.
#![allow(clippy::tests_outside_test_module)]

#[allow(dead_code)]
#[path = "../src/proxy.rs"]
mod proxy;

#[allow(dead_code, unused_imports)]
#[path = "../src/image/mod.rs"]
mod image;

// The image module checks signatures with the trust module's keys.
#[allow(dead_code, unused_imports)]
#[path = "../src/trust/mod.rs"]
mod trust;

#[allow(dead_code)]
#[path = "../src/fsutil.rs"]
mod fsutil;

#[allow(dead_code)]
#[path = "../src/flags.rs"]
mod flags;

use image::{pull, PullOptions, Retry};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use testkit::{Image, Layer, Registry};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn opts(registry: &Registry, dir: &Path, layers: Option<PathBuf>) -> PullOptions {
    PullOptions {
        insecure_registries: vec![registry.host()],
        store: dir.join("store"),
        layers,
        retry: Retry {
            base: Duration::from_millis(20),
            ..Retry::default()
        },
        ..PullOptions::default()
    }
}

fn require_root_and_overlay() {
    assert!(rustix::process::geteuid().is_root(), "overlay tests need root");
    let fs = fs::read_to_string("/proc/filesystems").unwrap();
    if !fs.lines().any(|l| l.ends_with("\toverlay")) {
        // The module may just not be loaded yet.
        let _ = Command::new("modprobe").arg("overlay").status();
    }
    let fs = fs::read_to_string("/proc/filesystems").unwrap();
    assert!(fs.lines().any(|l| l.ends_with("\toverlay")), "no overlayfs on this host");
}

/// Unmounts on drop, so a failing assertion leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The filesystem type mounted exactly at `path`, if any.
fn mount_type(path: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.to_str().unwrap();
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        (fields.get(4) == Some(&path)).then(|| fields[sep + 1].to_string())
    })
}

/// Everything under `root` (not `root` itself): path → what it is.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, String>) {
    for entry in fs::read_dir(root.join(rel)).unwrap() {
        let entry = entry.unwrap();
        let rel = rel.join(entry.file_name());
        let path = root.join(&rel);
        let md = fs::symlink_metadata(&path).unwrap();
        let ft = md.file_type();
        let what = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_file() {
            format!("file {:?} links={}", fs::read(&path).unwrap(), md.nlink())
        } else if ft.is_symlink() {
            format!("symlink -> {}", fs::read_link(&path).unwrap().display())
        } else if ft.is_char_device() {
            format!("char {:x}", md.rdev())
        } else if ft.is_fifo() {
            "fifo".to_string()
        } else {
            format!("other {ft:?}")
        };
        let mode = if ft.is_symlink() { 0 } else { md.mode() & 0o7777 };
        out.insert(rel.clone(), format!("{what} mode={mode:o} owner={}:{}", md.uid(), md.gid()));
        if ft.is_dir() {
            walk(root, &rel, out);
        }
    }
}

/// Three layers with every kind of entry, whiteouts (also of a path the
/// same layer creates, which must survive), opaque directories, and a
/// directory replaced by whiteout + directory in one layer.
fn layered_image(registry: &Registry, tag: &str) -> String {
    let base = Layer::new()
        .dir("etc", 0o755)
        .file("etc/keep", "keep", 0o644)
        .file("etc/gone", "gone", 0o644)
        .dir("var", 0o755)
        .dir("var/lib", 0o755)
        .dir("var/lib/app", 0o755)
        .file("var/lib/app/old", "old", 0o644)
        .dir("var/lib/app/olddir", 0o700)
        .file("var/lib/app/olddir/x", "x", 0o644)
        .dir("srv", 0o755)
        .file("srv/data", "data", 0o644)
        .hardlink("srv/data-link", "srv/data")
        .dir("opt", 0o755)
        .dir("opt/tool", 0o755)
        .file("opt/tool/old", "old tool", 0o755)
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .file("usr/bin/sh", "#!sh", 0o755)
        .symlink("bin", "usr/bin")
        .dir("dev", 0o755)
        .char_device("dev/null", 1, 3, 0o666)
        .fifo("dev/fifo", 0o600);
    let middle = Layer::new()
        .dir("etc", 0o755)
        .whiteout("etc/gone")
        .file("etc/added", "added", 0o600)
        .file("etc/both", "made here", 0o644)
        .whiteout("etc/both")
        .dir("var", 0o755)
        .dir("var/lib", 0o755)
        .dir("var/lib/app", 0o750)
        .opaque("var/lib/app")
        .file("var/lib/app/new", "new", 0o640)
        .owned(1000, 1000)
        .whiteout("srv")
        .dir("opt", 0o755)
        .whiteout("opt/tool")
        .dir("opt/tool", 0o700)
        .file("opt/tool/new", "new tool", 0o755);
    let top = Layer::new()
        .dir("etc", 0o711)
        .file("etc/keep", "kept, changed", 0o600)
        .dir("var", 0o755)
        .dir("var/lib", 0o755)
        .dir("var/lib/app", 0o750)
        .file("var/lib/app/third", "third", 0o644)
        .whiteout("usr/bin/sh")
        .dir("dev", 0o755)
        .whiteout("dev/fifo");
    Image::new()
        .layer(base)
        .layer(middle)
        .layer(top)
        .entrypoint(&["/bin/sh"])
        .build_and_push(registry, tag)
        .unwrap()
}

#[test]
fn overlay_rootfs_matches_the_flattened_unpack() {
    require_root_and_overlay();
    let registry = Registry::start().unwrap();
    let image = layered_image(&registry, "test/overlay:v1");
    let dir = tempfile::tempdir().unwrap();
    let flat = dir.path().join("flat/rootfs");
    rt().block_on(pull(&opts(&registry, dir.path(), None), &image, &flat))
        .unwrap();
    assert_eq!(mount_type(&flat), None, "a flattened rootfs is not a mount");

    let store = dir.path().join("layers");
    let merged = dir.path().join("merged/rootfs");
    rt().block_on(pull(&opts(&registry, dir.path(), Some(store.clone())), &image, &merged))
        .unwrap();
    let _mounted = Mounted(merged.clone());
    assert_eq!(mount_type(&merged).as_deref(), Some("overlay"));

    let (want, got) = (tree(&flat), tree(&merged));
    assert_eq!(got, want, "merged overlay differs from the flattened unpack");
    // The cases the comparison is about are really there.
    assert_eq!(want[Path::new("etc/both")], "file [109, 97, 100, 101, 32, 104, 101, 114, 101] links=1 mode=644 owner=0:0");
    assert!(!want.contains_key(Path::new("etc/gone")) && !want.contains_key(Path::new("srv")));
    assert!(!want.contains_key(Path::new("var/lib/app/old")) && !want.contains_key(Path::new("opt/tool/old")));
    assert!(want.contains_key(Path::new("var/lib/app/third")) && want.contains_key(Path::new("dev/null")));

    // The layer directories hold overlayfs whiteouts, not deletions.
    let layers = image::read_layer_list(&merged);
    assert_eq!(layers.len(), 3);
    assert!(layers.iter().all(|l| l.starts_with(&store)), "{layers:?}");
    let gone = fs::symlink_metadata(layers[1].join("etc/gone")).unwrap();
    assert!(gone.file_type().is_char_device() && gone.rdev() == 0, "etc/gone: {gone:?}");
    let both = fs::symlink_metadata(layers[1].join("etc/both")).unwrap();
    assert!(both.file_type().is_file(), "a whiteout only hides lower layers");
    for opaque in ["var/lib/app", "opt/tool"] {
        let value = xattr(&layers[1].join(opaque), "trusted.overlay.opaque");
        assert_eq!(value.as_deref(), Some(&b"y"[..]), "{opaque}");
    }
    assert_eq!(xattr(&layers[2].join("var/lib/app"), "trusted.overlay.opaque"), None);

    // Writes land in the upper directory; the shared layers stay untouched.
    fs::write(merged.join("etc/keep"), "written by the container").unwrap();
    fs::remove_file(merged.join("etc/added")).unwrap();
    assert_eq!(fs::read_to_string(layers[2].join("etc/keep")).unwrap(), "kept, changed");
    assert!(layers[1].join("etc/added").exists());
    let upper = image::sibling(&merged, "upper");
    assert_eq!(fs::read_to_string(upper.join("etc/keep")).unwrap(), "written by the container");
    // No blob is left behind, nor a temporary layer directory.
    let names: Vec<_> = fs::read_dir(&store).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().all(|n| n.to_string_lossy().starts_with("sha256-")), "{names:?}");
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 64];
    let n = rustix::fs::lgetxattr(path, name, &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

#[test]
fn a_shared_base_layer_is_unpacked_once() {
    require_root_and_overlay();
    let registry = Registry::start().unwrap();
    let base = Layer::new()
        .dir("etc", 0o755)
        .file("etc/os-release", "base", 0o644);
    let a = Image::new()
        .layer(base.clone())
        .layer(Layer::new().file("a", "a", 0o644))
        .build_and_push(&registry, "test/shared-a:v1")
        .unwrap();
    let b = Image::new()
        .layer(base)
        .layer(Layer::new().file("b", "b", 0o644))
        .build_and_push(&registry, "test/shared-b:v1")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("layers");
    let o = opts(&registry, dir.path(), Some(store.clone()));
    let root_a = dir.path().join("a/rootfs");
    rt().block_on(pull(&o, &a, &root_a)).unwrap();
    let _a = Mounted(root_a.clone());
    let base_dir = image::read_layer_list(&root_a)[0].clone();
    let before = fs::metadata(base_dir.join("etc/os-release")).unwrap();

    // The registry no longer has the base blob: B can only get it from the
    // layer store.
    let base_blob = layer_digest(&registry, "test/shared-a", "v1", 0);
    fs::remove_file(registry.blob_path(&base_blob).unwrap()).unwrap();
    let root_b = dir.path().join("b/rootfs");
    rt().block_on(pull(&o, &b, &root_b)).unwrap();
    let _b = Mounted(root_b.clone());

    assert_eq!(image::read_layer_list(&root_b)[0], base_dir);
    let after = fs::metadata(base_dir.join("etc/os-release")).unwrap();
    assert_eq!((after.ino(), after.mtime()), (before.ino(), before.mtime()));
    assert_eq!(fs::read_dir(&store).unwrap().count(), 3, "base, a, b");
    assert_eq!(fs::read_to_string(root_a.join("a")).unwrap(), "a");
    assert_eq!(fs::read_to_string(root_b.join("b")).unwrap(), "b");
    assert_eq!(fs::read_to_string(root_b.join("etc/os-release")).unwrap(), "base");
    assert!(!root_b.join("a").exists());
}

/// The digest of layer `index` of `name:tag` as the registry has it.
fn layer_digest(registry: &Registry, name: &str, tag: &str, index: usize) -> String {
    let accept = ("Accept", "application/vnd.oci.image.manifest.v1+json".to_string());
    let resp = registry
        .request("GET", &format!("/v2/{name}/manifests/{tag}"), &[accept], b"")
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    manifest["layers"][index]["digest"].as_str().unwrap().to_string()
}

/// Runs the real binary: `iguana pull IMAGE --rootfs DIR ARGS...`.
fn iguana_pull(image: &str, rootfs: &Path, args: &[&str]) -> (bool, String) {
    testkit::iguana_pull(env!("CARGO_BIN_EXE_iguana"), image, rootfs, args)
}

#[test]
fn cli_says_overlay_or_why_it_fell_back_to_a_flattened_copy() {
    require_root_and_overlay();
    let registry = Registry::start().unwrap();
    let image = layered_image(&registry, "test/overlay-cli:v1");
    let dir = tempfile::tempdir().unwrap();
    let host = registry.host();
    let flat = dir.path().join("flat/rootfs");
    let (ok, out) = iguana_pull(&image, &flat, &["--insecure-registry", &host]);
    assert!(ok, "{out}");

    let store = dir.path().join("layers");
    let merged = dir.path().join("merged/rootfs");
    let (ok, out) = iguana_pull(
        &image,
        &merged,
        &["--insecure-registry", &host, "--layers", store.to_str().unwrap()],
    );
    let _mounted = Mounted(merged.clone());
    assert!(ok, "{out}");
    assert!(out.contains(&format!("rootfs is an overlay of 3 layers on {}", merged.display())), "{out}");
    assert_eq!(mount_type(&merged).as_deref(), Some("overlay"));

    // Layer directories so deep that three lowerdirs overflow the page the
    // kernel copies mount options into: the overlay cannot be mounted, and
    // the pull falls back to a flattened copy, saying why.
    let mut deep = dir.path().to_path_buf();
    for c in ['a', 'b', 'c', 'd', 'e', 'f'] {
        deep.push(c.to_string().repeat(250));
    }
    let fallback = dir.path().join("fallback/rootfs");
    let (ok, out) = iguana_pull(
        &image,
        &fallback,
        &["--insecure-registry", &host, "--layers", deep.to_str().unwrap()],
    );
    let _fallback_mounted = Mounted(fallback.clone());
    assert!(ok, "{out}");
    assert!(
        out.contains("overlay not used: the options for 3 layers take")
            && out.contains("more than one page; unpacking a flattened copy"),
        "{out}"
    );
    assert_eq!(mount_type(&fallback), None);
    assert!(!image::sibling(&fallback, "layers").exists());
    assert_eq!(tree(&fallback), tree(&flat));
}

/// A hard link in one layer to a file of a lower layer cannot be made in a
/// layer directory of its own: the pull says so and unpacks a flattened
/// copy, where the link is a link.
#[test]
fn a_hard_link_across_layers_falls_back_to_a_flattened_copy() {
    require_root_and_overlay();
    let registry = Registry::start().unwrap();
    let base = Layer::new().dir("srv", 0o755).file("srv/data", "data", 0o644);
    let top = Layer::new().dir("srv", 0o755).hardlink("srv/data-link", "srv/data");
    let image = Image::new().layer(base).layer(top).build_and_push(&registry, "test/cross-link:v1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let host = registry.host();
    let store = dir.path().join("layers");
    let rootfs = dir.path().join("rootfs");
    let (ok, out) = iguana_pull(&image, &rootfs, &["--insecure-registry", &host, "--layers", store.to_str().unwrap()]);
    let _mounted = Mounted(rootfs.clone());
    assert!(ok, "{out}");
    assert!(
        out.contains("overlay not used: layer sha256:")
            && out.contains("hard-links \"srv/data-link\" to a file of a lower layer; unpacking a flattened copy"),
        "{out}"
    );
    assert_eq!(mount_type(&rootfs), None);
    let (data, link) = (rootfs.join("srv/data"), rootfs.join("srv/data-link"));
    assert_eq!(fs::read(&link).unwrap(), b"data");
    assert_eq!(fs::metadata(&data).unwrap().ino(), fs::metadata(&link).unwrap().ino());
    assert!(!image::sibling(&rootfs, "upper").exists() && !image::sibling(&rootfs, "work").exists());
}

/// A tmpfs mounted `nosuid,nodev`, as PID 1's /run is: where both forms
/// of the rootfs live in a boot.
fn run_like_tmpfs(path: &Path) -> Mounted {
    use nix::mount::MsFlags;
    fs::create_dir_all(path).unwrap();
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    nix::mount::mount(Some("tmpfs"), path, Some("tmpfs"), flags, Some("mode=0755")).unwrap();
    Mounted(path.to_path_buf())
}

/// A static program that prints its real and effective uid and whether it
/// can open /dev/null for writing (which a `nodev` mount refuses). busybox
/// cannot show this: it drops a setuid bit it was not built to keep.
fn euid_program(dir: &Path) -> Vec<u8> {
    let source = dir.join("euid.c");
    fs::write(
        &source,
        "#include <fcntl.h>\n#include <stdio.h>\n#include <unistd.h>\n\
         int main(void) {\n\
           int fd = open(\"/dev/null\", O_WRONLY);\n\
           printf(\"uid=%d euid=%d devnull=%s\\n\", (int)getuid(), (int)geteuid(), fd >= 0 ? \"ok\" : \"refused\");\n\
           return 0;\n\
         }\n",
    )
    .unwrap();
    let binary = dir.join("euid");
    let status = Command::new("musl-gcc")
        .args(["-static", "-Os", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success(), "musl-gcc failed");
    fs::read(binary).unwrap()
}

/// `umoci unpack` of the image as the registry serves it: copied back
/// with skopeo into an OCI layout first. Returns the bundle's rootfs.
fn umoci_unpack(image: &str, dir: &Path) -> PathBuf {
    let layout = dir.join("layout");
    let bundle = dir.join("bundle");
    fs::create_dir_all(dir).unwrap();
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(Command::new("skopeo").args(["--insecure-policy", "copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{image}"))
        .arg(format!("oci:{}:t", layout.display())));
    run(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:t", layout.display())).arg(&bundle));
    bundle.join("rootfs")
}

/// [`tree`] plus the root directory itself, as `.`.
fn tree_and_root(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = tree(root);
    let md = fs::metadata(root).unwrap();
    out.insert(PathBuf::from("."), format!("dir mode={:o} owner={}:{}", md.mode() & 0o7777, md.uid(), md.gid()));
    out
}

/// What the setuid program says when uid 1000 runs it chrooted in `root`.
fn euid_in(root: &Path) -> String {
    let out = Command::new("chroot").arg("--userspec=1000:1000").arg(root).arg("/bin/euid").output().unwrap();
    if !out.status.success() {
        return format!("failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Layers as Docker and BuildKit write them: no `./` entry, and parent
/// directories left out when a lower layer has them. The flattened and the
/// overlay rootfs, both on a `nosuid,nodev` tmpfs as in a boot, must be the
/// tree `umoci unpack` gives (owners and modes of the root and of every
/// implicit parent), and a setuid-root program must run as root for a user.
#[test]
fn both_forms_match_umoci_unpack_of_layers_without_parents() {
    require_root_and_overlay();
    let registry = Registry::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lower = Layer::new()
        .dir("var", 0o755)
        .dir("var/lib", 0o755)
        .dir("var/lib/app", 0o750)
        .owned(1000, 1000)
        .file("var/lib/app/old", "old", 0o640)
        .owned(1000, 1000)
        .dir("bin", 0o755)
        .file("bin/euid", euid_program(dir.path()), 0o4755)
        .dir("dev", 0o755)
        .char_device("dev/null", 1, 3, 0o666)
        // Parents missing within one layer.
        .file("opt/implicit/file", "implicit", 0o644);
    let upper = Layer::new()
        // Into a directory of the lower layer, without its entry.
        .file("var/lib/app/new", "new", 0o640)
        .owned(1000, 1000)
        // Into directories no layer has.
        .file("usr/share/doc/x", "x", 0o644);
    let image = Image::new()
        .layer(lower)
        .layer(upper)
        .build_and_push(&registry, "test/implicit:v1")
        .unwrap();
    let want_root = umoci_unpack(&image, &dir.path().join("umoci"));
    let want = tree_and_root(&want_root);
    // What the comparison is about, as umoci has it.
    assert_eq!(want[Path::new(".")], "dir mode=755 owner=0:0");
    assert_eq!(want[Path::new("var/lib/app")], "dir mode=750 owner=1000:1000");
    assert_eq!(want[Path::new("opt/implicit")], "dir mode=755 owner=0:0");
    assert_eq!(want[Path::new("usr/share")], "dir mode=755 owner=0:0");
    assert_eq!(euid_in(&want_root), "uid=1000 euid=0 devnull=ok");

    let run = dir.path().join("run");
    let _run = run_like_tmpfs(&run);
    let flat = run.join("flat/rootfs");
    rt().block_on(pull(&opts(&registry, dir.path(), None), &image, &flat)).unwrap();
    let _flat = Mounted(flat.clone());
    let merged = run.join("merged/rootfs");
    rt().block_on(pull(&opts(&registry, dir.path(), Some(run.join("layers"))), &image, &merged))
        .unwrap();
    let _merged = Mounted(merged.clone());
    assert_eq!(mount_type(&merged).as_deref(), Some("overlay"));

    // Every difference of both forms, so one run shows them all.
    let mut wrong = Vec::new();
    for (form, root) in [("flattened", &flat), ("overlay", &merged)] {
        let got = tree_and_root(root);
        for (path, what) in &want {
            if got.get(path) != Some(what) {
                wrong.push(format!("{form} {}: {:?}, umoci: {what}", path.display(), got.get(path)));
            }
        }
        for path in got.keys().filter(|p| !want.contains_key(*p)) {
            wrong.push(format!("{form} {}: not in umoci's tree", path.display()));
        }
        let euid = euid_in(root);
        if euid != "uid=1000 euid=0 devnull=ok" {
            wrong.push(format!("{form}: setuid-root program run by uid 1000 says {euid}"));
        }
    }
    assert!(wrong.is_empty(), "differs from umoci unpack:\n{}", wrong.join("\n"));
}
