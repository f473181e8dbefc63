//! `image::pull` against a real docker-registry on 127.0.0.1 with images
//! built by umoci and pushed by skopeo (see the `testkit` crate).
//!
//! iguana is a binary crate, so the image module is compiled into this test
//! directly; `cli_pull` is exercised the same way, in-process.

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

use image::{cli_pull, pull, ImageConfig, PullOptions, Retry};
use std::time::Duration;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use testkit::{Image, Layer, Registry};

/// A scratch dir with `rootfs/` and `store/`, and options that allow the
/// test registry over plain HTTP.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    fn opts(&self, registry: &Registry) -> PullOptions {
        PullOptions {
            insecure_registries: vec![registry.host()],
            store: self.dir.path().join("store"),
            keep_blobs: true,
            retry: fast_retry(),
            ..PullOptions::default()
        }
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.rootfs().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// The rootfs holds nothing (or does not exist): no partial unpack.
    fn assert_rootfs_empty(&self) {
        if let Ok(entries) = fs::read_dir(self.rootfs()) {
            let names: Vec<_> = entries.map(|e| e.unwrap().file_name()).collect();
            assert!(names.is_empty(), "rootfs not empty: {names:?}");
        }
    }
}

/// Retries as in production, but with short pauses.
fn fast_retry() -> Retry {
    Retry {
        base: Duration::from_millis(20),
        ..Retry::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn pull_err(opts: &PullOptions, image: &str, rootfs: &Path) -> String {
    let err = rt()
        .block_on(pull(opts, image, rootfs))
        .expect_err("pull should fail");
    format!("{:#}", anyhow::Error::from(err))
}

/// The layer digests of `name:tag` as the registry has them.
fn layer_digests(registry: &Registry, name: &str, tag: &str) -> Vec<String> {
    let accept = (
        "Accept",
        "application/vnd.oci.image.manifest.v1+json".to_string(),
    );
    let resp = registry
        .request(
            "GET",
            &format!("/v2/{name}/manifests/{tag}"),
            &[accept],
            b"",
        )
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn single_layer_busybox_image() {
    let registry = Registry::start().unwrap();
    let image = Image::busybox_script("echo hello from iguana\n")
        .unwrap()
        .env("GREETING=hi")
        .build_and_push(&registry, "test/busybox:v1")
        .unwrap();
    let s = Scratch::new();
    let config = rt()
        .block_on(pull(&s.opts(&registry), &image, &s.rootfs()))
        .unwrap();
    assert_eq!(config.entrypoint, ["/bin/sh", "/run.sh"]);
    assert!(
        config.env.contains(&"GREETING=hi".to_string()),
        "{config:?}"
    );
    assert_eq!(s.read("run.sh"), "echo hello from iguana\n");
    let busybox = fs::metadata(s.rootfs().join("bin/busybox")).unwrap();
    assert_eq!(busybox.permissions().mode() & 0o777, 0o755);
    assert_eq!(busybox.len(), fs::metadata("/bin/busybox").unwrap().len());
    assert_eq!(
        fs::read_link(s.rootfs().join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert!(!s.rootfs().join(".iguana-unpack").exists());
}

#[test]
fn layers_whiteouts_and_opaque_directories() {
    let registry = Registry::start().unwrap();
    let lower = Layer::new()
        .dir("etc", 0o755)
        .file("etc/keep", "keep", 0o644)
        .file("etc/gone", "gone", 0o644)
        .dir("var/lib/app", 0o755)
        .file("var/lib/app/old", "old", 0o644)
        .dir("var/lib/app/olddir", 0o700)
        .file("var/lib/app/olddir/x", "x", 0o644)
        .dir("srv", 0o755)
        .file("srv/data", "data", 0o644)
        .hardlink("srv/data-link", "srv/data");
    let upper = Layer::new()
        .whiteout("etc/gone")
        .opaque("var/lib/app")
        .file("var/lib/app/new", "new", 0o640)
        .owned(1000, 1000)
        .whiteout("srv")
        .file("etc/added", "added", 0o600);
    let image = Image::new()
        .layer(lower)
        .layer(upper)
        .entrypoint(&["/app"])
        .cmd(&["--flag"])
        .env("A=1")
        .working_dir("/var/lib/app")
        .user("1000:1000")
        .build_and_push(&registry, "test/layers:v1")
        .unwrap();
    let s = Scratch::new();
    let config = rt()
        .block_on(pull(&s.opts(&registry), &image, &s.rootfs()))
        .unwrap();
    assert_eq!(
        config,
        ImageConfig {
            entrypoint: vec!["/app".into()],
            cmd: vec!["--flag".into()],
            env: vec!["A=1".into()],
            working_dir: Some("/var/lib/app".into()),
            user: Some("1000:1000".into()),
        }
    );
    assert_eq!(s.read("etc/keep"), "keep");
    assert_eq!(s.read("etc/added"), "added");
    assert!(!s.rootfs().join("etc/gone").exists());
    assert!(!s.rootfs().join("srv").exists());
    let mut app: Vec<_> = fs::read_dir(s.rootfs().join("var/lib/app"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    app.sort();
    assert_eq!(app, ["new"]);
    let new = fs::metadata(s.rootfs().join("var/lib/app/new")).unwrap();
    assert_eq!(
        (new.mode() & 0o777, new.uid(), new.gid()),
        (0o640, 1000, 1000)
    );
}

#[test]
fn image_index_resolves_to_this_architecture() {
    let registry = Registry::start().unwrap();
    let arch = |a: &str| {
        Image::new()
            .layer(Layer::new().file("arch", a, 0o644))
            .architecture(a)
    };
    arch("arm64")
        .build_and_push(&registry, "test/multi:arm64")
        .unwrap();
    arch("amd64")
        .build_and_push(&registry, "test/multi:amd64")
        .unwrap();
    // arm64 listed first, so picking the first entry would be wrong.
    let image = registry
        .push_index(
            "test/multi:latest",
            &[("arm64", "arm64"), ("amd64", "amd64")],
        )
        .unwrap();
    let s = Scratch::new();
    rt().block_on(pull(&s.opts(&registry), &image, &s.rootfs()))
        .unwrap();
    assert_eq!(s.read("arch"), "amd64");
}

#[test]
fn missing_image_is_a_short_error() {
    let registry = Registry::start().unwrap();
    let s = Scratch::new();
    let image = format!("{}/nope", registry.host());
    let err = pull_err(&s.opts(&registry), &image, &s.rootfs());
    assert_eq!(
        err,
        format!("image {image}: fetch manifest: manifest unknown")
    );
    s.assert_rootfs_empty();
}

#[test]
fn unreachable_registry_is_a_short_error() {
    // A port nobody listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = Scratch::new();
    let image = format!("127.0.0.1:{port}/app:v1");
    let opts = PullOptions {
        insecure_registries: vec![format!("127.0.0.1:{port}")],
        store: s.dir.path().join("store"),
        retry: fast_retry(),
        ..PullOptions::default()
    };
    let err = pull_err(&opts, &image, &s.rootfs());
    assert_eq!(
        err,
        format!("image {image}: fetch manifest: cannot reach 127.0.0.1:{port}: connection refused")
    );
    s.assert_rootfs_empty();
}

#[test]
fn https_is_the_default() {
    let registry = Registry::start().unwrap();
    let image = Image::busybox_script("true")
        .unwrap()
        .build_and_push(&registry, "test/tls:v1")
        .unwrap();
    let s = Scratch::new();
    let opts = PullOptions {
        insecure_registries: vec![],
        ..s.opts(&registry)
    };
    let err = pull_err(&opts, &image, &s.rootfs());
    let expected = format!(
        "image {image}: fetch manifest: cannot reach {}: TLS handshake failed",
        registry.host()
    );
    assert!(err.starts_with(&expected), "{err}");
    assert!(
        err.lines().count() == 1 && err.len() < 300,
        "not short: {err}"
    );
    s.assert_rootfs_empty();
}

#[test]
fn corrupted_blob_fails_and_leaves_nothing() {
    let registry = Registry::start().unwrap();
    let image = Image::new()
        .layer(Layer::new().file("a", "first layer", 0o644))
        .layer(Layer::new().file("b", "second layer", 0o644))
        .build_and_push(&registry, "test/corrupt:v1")
        .unwrap();
    let digests = layer_digests(&registry, "test/corrupt", "v1");
    let blob = registry.blob_path(&digests[1]).unwrap();
    let mut data = fs::read(&blob).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff; // same size, different content
    fs::write(&blob, data).unwrap();

    let s = Scratch::new();
    let err = pull_err(&s.opts(&registry), &image, &s.rootfs());
    let expected = format!(
        "image {image}: download layer {}: content digest is sha256:",
        digests[1]
    );
    assert!(err.starts_with(&expected), "{err}");
    assert!(err.ends_with(&format!("expected {}", digests[1])), "{err}");
    s.assert_rootfs_empty();
    // Nothing unverified is kept in the store either.
    let hex = digests[1].trim_start_matches("sha256:");
    let stored = s.dir.path().join("store/blobs/sha256").join(hex);
    assert!(!stored.exists() && !stored.with_extension("partial").exists());
}

#[test]
fn corrupted_cached_blob_is_fetched_again() {
    let registry = Registry::start().unwrap();
    let image = Image::new()
        .layer(Layer::new().file("a", "content", 0o644))
        .build_and_push(&registry, "test/cache:v1")
        .unwrap();
    let digest = layer_digests(&registry, "test/cache", "v1").remove(0);
    let s = Scratch::new();
    let opts = s.opts(&registry);
    rt().block_on(pull(&opts, &image, &s.rootfs())).unwrap();
    let cached = opts
        .store
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    assert!(cached.exists());
    let size = fs::metadata(&cached).unwrap().len() as usize;
    fs::write(&cached, vec![b'x'; size]).unwrap();
    let again = Scratch::new();
    rt().block_on(pull(&opts, &image, &again.rootfs())).unwrap();
    assert_eq!(again.read("a"), "content");
}

#[test]
fn rootfs_must_be_empty() {
    let registry = Registry::start().unwrap();
    let image = Image::busybox_script("true")
        .unwrap()
        .build_and_push(&registry, "test/full:v1")
        .unwrap();
    let s = Scratch::new();
    fs::create_dir_all(s.rootfs().join("something")).unwrap();
    let err = pull_err(&s.opts(&registry), &image, &s.rootfs());
    assert_eq!(
        err,
        format!(
            "image {image}: rootfs {} is not empty",
            s.rootfs().display()
        )
    );

    // A staging dir left by an interrupted pull is not "content".
    fs::remove_dir(s.rootfs().join("something")).unwrap();
    fs::create_dir_all(s.rootfs().join(".iguana-unpack/half")).unwrap();
    rt().block_on(pull(&s.opts(&registry), &image, &s.rootfs()))
        .unwrap();
    assert!(!s.rootfs().join(".iguana-unpack").exists());
}

#[test]
fn invalid_reference_is_refused_before_the_network() {
    let s = Scratch::new();
    let opts = PullOptions {
        store: s.dir.path().join("store"),
        ..PullOptions::default()
    };
    let err = pull_err(&opts, "127.0.0.1:5000/Bad Name", &s.rootfs());
    assert!(
        err.starts_with(
            "image \"127.0.0.1:5000/Bad Name\": invalid reference: invalid repository name"
        ),
        "{err}"
    );
}

#[test]
fn cli_writes_config_json() {
    let registry = Registry::start().unwrap();
    let image = Image::busybox_script("true")
        .unwrap()
        .cmd(&["x"])
        .build_and_push(&registry, "test/cli:v1")
        .unwrap();
    let s = Scratch::new();
    let config_out = s.dir.path().join("config.json");
    let args: Vec<String> = [
        image.as_str(),
        "--rootfs",
        s.rootfs().to_str().unwrap(),
        "--insecure-registry",
        &registry.host(),
        "--config-out",
        config_out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    cli_pull(&args).unwrap();
    let config: ImageConfig = serde_json::from_slice(&fs::read(&config_out).unwrap()).unwrap();
    assert_eq!(config.entrypoint, ["/bin/sh", "/run.sh"]);
    assert_eq!(config.cmd, ["x"]);
    assert_eq!(s.read("run.sh"), "true");
    // Without --store the temporary blob store beside the rootfs is gone.
    assert!(!s.dir.path().join(".rootfs.blobs").exists());

    let err = cli_pull(&["busybox".to_string()]).unwrap_err();
    assert!(
        format!("{err:#}").starts_with("missing --rootfs DIR\nusage: iguana pull IMAGE"),
        "{err:#}"
    );
}

/// sha256:HEX of `data`.
fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

fn raw_config(diff_ids: &[String]) -> serde_json::Value {
    serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Entrypoint": ["/hello"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    })
}

const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

#[test]
fn zstd_and_uncompressed_layers() {
    let registry = Registry::start().unwrap();
    let lower = Layer::new().file("hello", "plain", 0o755).tar().unwrap();
    let upper = Layer::new()
        .file("zstd", "zstd layer", 0o644)
        .tar()
        .unwrap();
    let zstd = ruzstd::encoding::compress_to_vec(
        upper.as_slice(),
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    let config = raw_config(&[sha256(&lower), sha256(&upper)]);
    let image = registry
        .push_raw_image(
            "test/raw:zstd",
            &[
                (lower, TAR),
                (zstd, "application/vnd.oci.image.layer.v1.tar+zstd"),
            ],
            &config,
        )
        .unwrap();
    let s = Scratch::new();
    let config = rt()
        .block_on(pull(&s.opts(&registry), &image, &s.rootfs()))
        .unwrap();
    assert_eq!(config.entrypoint, ["/hello"]);
    assert_eq!(s.read("hello"), "plain");
    assert_eq!(s.read("zstd"), "zstd layer");
}

#[test]
fn wrong_diff_id_fails_and_leaves_nothing() {
    let registry = Registry::start().unwrap();
    let good = Layer::new().file("a", "a", 0o644).tar().unwrap();
    let bad = Layer::new().file("b", "b", 0o644).tar().unwrap();
    let claimed = sha256(b"something else");
    let config = raw_config(&[sha256(&good), claimed.clone()]);
    let bad_digest = sha256(&bad);
    let image = registry
        .push_raw_image(
            "test/raw:diffid",
            &[(good, TAR), (bad.clone(), TAR)],
            &config,
        )
        .unwrap();
    let s = Scratch::new();
    let err = pull_err(&s.opts(&registry), &image, &s.rootfs());
    assert_eq!(
        err,
        format!("image {image}: layer {bad_digest} unpacks to {bad_digest}, but the config's diff_id is {claimed}")
    );
    s.assert_rootfs_empty();
}

#[test]
fn hostile_layer_through_the_registry() {
    let registry = Registry::start().unwrap();
    // A raw header: the tar crate's builder refuses "..", an attacker's does not.
    let mut h = tar::Header::new_ustar();
    let name = b"../escape";
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(5);
    h.set_cksum();
    let mut layer = h.as_bytes().to_vec();
    layer.extend_from_slice(b"pwned");
    layer.resize(512 * 4, 0);
    let diff_id = sha256(&layer);
    let layer_digest = diff_id.clone();
    let image = registry
        .push_raw_image("test/raw:hostile", &[(layer, TAR)], &raw_config(&[diff_id]))
        .unwrap();
    let s = Scratch::new();
    let err = pull_err(&s.opts(&registry), &image, &s.rootfs());
    assert_eq!(
        err,
        format!("image {image}: unpack layer {layer_digest}: entry \"../escape\": path has a '..' component")
    );
    s.assert_rootfs_empty();
    assert!(!s.dir.path().join("escape").exists());
}

#[test]
fn inconsistent_manifests_are_refused() {
    let registry = Registry::start().unwrap();
    let layer = Layer::new().file("a", "a", 0o644).tar().unwrap();
    let s = Scratch::new();

    let image = registry
        .push_raw_image("test/raw:count", &[(layer.clone(), TAR)], &raw_config(&[]))
        .unwrap();
    let err = pull_err(&s.opts(&registry), &image, &s.rootfs());
    assert_eq!(
        err,
        format!("image {image}: manifest lists 1 layers but the config has 0 diff_ids")
    );

    let helm = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
    let digest = sha256(&layer);
    let config = raw_config(std::slice::from_ref(&digest));
    let foreign = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    let image = registry
        .push_raw_image("test/raw:foreign", &[(layer.clone(), foreign)], &config)
        .unwrap();
    let err = pull_err(&s.opts(&registry), &image, &s.rootfs());
    assert_eq!(
        err,
        format!(
            "image {image}: layer {digest} is a foreign (non-distributable) layer ({foreign}): \
             registries do not serve its content"
        )
    );
    let image = registry
        .push_raw_image("test/raw:helm", &[(layer, helm)], &config)
        .unwrap();
    let err = pull_err(&s.opts(&registry), &image, &s.rootfs());
    assert_eq!(
        err,
        format!("image {image}: layer {digest} has unsupported media type {helm:?}")
    );
    s.assert_rootfs_empty();
}
