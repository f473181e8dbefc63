//! Pulls over a network that is not perfect: registries that want
//! credentials, a registry that dies in the middle of a layer, mirrors that
//! are down or that serve the image. All against real docker-registry
//! processes on 127.0.0.1 (see the `testkit` crate).

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

use image::{pull, AuthFile, PullOptions, Retry};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use testkit::{
    BlobFault, BlobProxy, Breakage, BrokenMirror, Image, Layer, Registry, RegistryOptions, TokenAuth, TokenServer,
};

const PASSWORD: &str = "hunter2-Secret";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn base64(input: &str) -> String {
    testkit::base64(input.as_bytes())
}

/// Runs the real binary: `iguana pull IMAGE --rootfs DIR ARGS...`.
fn iguana_pull(image: &str, rootfs: &Path, args: &[&str]) -> (bool, String) {
    testkit::iguana_pull(env!("CARGO_BIN_EXE_iguana"), image, rootfs, args)
}

/// A port nobody listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn basic_auth_from_auth_json() {
    let registry = Registry::start_with(RegistryOptions {
        basic_auth: Some(("alice".into(), PASSWORD.into())),
        ..RegistryOptions::default()
    })
    .unwrap();
    let image = Image::busybox_script("echo secret stuff\n")
        .unwrap()
        .build_and_push(&registry, "private/app:v1")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let host = registry.host();
    let write_auth = |name: &str, password: &str| -> PathBuf {
        let path = dir.path().join(name);
        let auth = base64(&format!("alice:{password}"));
        fs::write(&path, format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#)).unwrap();
        path
    };
    let good = write_auth("good.json", PASSWORD);
    let wrong = write_auth("wrong.json", "not-the-password");
    let fields = dir.path().join("fields.json");
    fs::write(
        &fields,
        format!(r#"{{"auths":{{"http://{host}/v2/":{{"username":"alice","password":"{PASSWORD}"}}}}}}"#),
    )
    .unwrap();

    for (n, auth_file) in [&good, &fields].into_iter().enumerate() {
        let rootfs = dir.path().join(format!("ok{n}"));
        let (ok, out) = iguana_pull(
            &image,
            &rootfs,
            &["--insecure-registry", &host, "--auth-file", auth_file.to_str().unwrap()],
        );
        assert!(ok, "{out}");
        assert!(!out.contains(PASSWORD), "password in output: {out}");
        assert_eq!(fs::read_to_string(rootfs.join("run.sh")).unwrap(), "echo secret stuff\n");
    }

    // No credentials (/etc/iguana/auth.json does not exist here).
    assert!(!Path::new(image::DEFAULT_AUTH_FILE).exists());
    let (ok, out) = iguana_pull(&image, &dir.path().join("anon"), &["--insecure-registry", &host]);
    assert!(!ok);
    assert!(
        out.contains(&format!("image {image}: fetch manifest: unauthorized")),
        "{out}"
    );

    let (ok, out) = iguana_pull(
        &image,
        &dir.path().join("wrong"),
        &["--insecure-registry", &host, "--auth-file", wrong.to_str().unwrap()],
    );
    assert!(!ok);
    assert!(out.contains(&format!("image {image}: fetch manifest: unauthorized")), "{out}");
    assert!(!out.contains("not-the-password") && !out.contains(PASSWORD), "{out}");

    // An auth file asked for but missing is an error, not anonymous.
    let (ok, out) = iguana_pull(
        &image,
        &dir.path().join("missing"),
        &["--insecure-registry", &host, "--auth-file", "/nonexistent/auth.json"],
    );
    assert!(!ok);
    assert!(out.contains("read auth file /nonexistent/auth.json"), "{out}");

    // The library API, with the credentials in PullOptions.
    let auth = AuthFile::load(&good, true).unwrap();
    assert!(!format!("{auth:?}").contains(PASSWORD));
    let opts = PullOptions {
        insecure_registries: vec![host.clone()],
        store: dir.path().join("store"),
        auth,
        ..PullOptions::default()
    };
    rt().block_on(pull(&opts, &image, &dir.path().join("lib"))).unwrap();
}

/// sha256:HEX of `data`.
fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Random bytes (not compressible, so the transfer takes some time).
fn random_bytes(len: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    data
}

/// The partial blob file in the store, if a download is under way.
fn partial_file(store: &Path) -> Option<PathBuf> {
    fs::read_dir(store.join("blobs/sha256"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains(".partial-"))
}

/// Pushes an image of these uncompressed layers; returns its reference.
fn push_layers(registry: &Registry, name_tag: &str, layers: &[&Vec<u8>]) -> String {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Entrypoint": ["/big"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let blobs: Vec<(Vec<u8>, &str)> = layers
        .iter()
        .map(|l| ((*l).clone(), "application/vnd.oci.image.layer.v1.tar"))
        .collect();
    registry.push_raw_image(name_tag, &blobs, &config).unwrap()
}

/// Pulls `image` through `proxy` with impatient retries and checks that
/// its file `big` arrived whole.
fn pull_big_through(proxy: &BlobProxy, image: &str, big: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let opts = PullOptions {
        insecure_registries: vec![proxy.host()],
        store: dir.path().join("store"),
        retry: impatient(),
        ..PullOptions::default()
    };
    let rootfs = dir.path().join("rootfs");
    rt().block_on(pull(&opts, image, &rootfs))
        .unwrap_or_else(|e| panic!("{:#}", anyhow::Error::from(e)));
    assert_eq!(fs::read(rootfs.join("big")).unwrap(), big);
}

/// Quick retries and a short stall limit, so faults are seen within seconds.
fn impatient() -> Retry {
    Retry {
        base: Duration::from_millis(20),
        stall: Duration::from_secs(2),
        ..Retry::default()
    }
}

#[test]
fn registry_restart_mid_layer_resumes() {
    let mut registry = Registry::start().unwrap();
    let big = random_bytes(64 << 20);
    let layer = Layer::new()
        .file("small", "before", 0o644)
        .file("big", &big, 0o644)
        .tar()
        .unwrap();
    let pushed = push_layers(&registry, "test/big:v1", &[&layer]);
    // The pull goes through a proxy that counts what it serves of the layer.
    let proxy = BlobProxy::start(registry.port(), &sha256(&layer), BlobFault::None).unwrap();
    let image = pushed.replacen(&registry.host(), &proxy.host(), 1);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let opts = PullOptions {
        insecure_registries: vec![proxy.host()],
        store: store.clone(),
        keep_blobs: true,
        ..PullOptions::default()
    };

    // Kill the registry as soon as the layer's partial file has bytes,
    // bring it back on the same port a second later.
    let watched = store.clone();
    let watcher = std::thread::spawn(move || {
        let start = Instant::now();
        let seen = loop {
            if let Some(path) = partial_file(&watched) {
                if fs::metadata(&path).map(|m| m.len()).unwrap_or(0) > 0 {
                    registry.stop().unwrap();
                    break fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                }
            }
            assert!(start.elapsed() < Duration::from_secs(60), "no download seen");
            std::thread::sleep(Duration::from_micros(200));
        };
        std::thread::sleep(Duration::from_secs(1));
        registry.restart().unwrap();
        (registry, seen)
    });
    let rootfs = dir.path().join("rootfs");
    let result = rt().block_on(pull(&opts, &image, &rootfs));
    let (registry, seen) = watcher.join().unwrap();
    result.unwrap_or_else(|e| panic!("{:#}", anyhow::Error::from(e)));
    assert!(
        seen < layer.len() as u64,
        "registry stopped only after the whole layer ({seen} bytes)"
    );
    assert_eq!(fs::read(rootfs.join("big")).unwrap(), big);
    assert_eq!(fs::read_to_string(rootfs.join("small")).unwrap(), "before");
    assert!(partial_file(&store).is_none(), "partial file left");
    let blob = store.join("blobs/sha256").join(sha256(&layer).trim_start_matches("sha256:"));
    // The stored blob is the verified whole (the layer is uncompressed).
    assert_eq!(fs::metadata(blob).unwrap().len(), layer.len() as u64);
    // Resumed, not restarted: after the first response, broken off, only
    // Range requests for the rest, answered 206 with just the missing bytes.
    let served = proxy.served();
    let len = layer.len() as u64;
    let (first, last) = (served.first().unwrap(), served.last().unwrap());
    assert_eq!((first.range.as_deref(), first.status), (None, 200), "{served:?}");
    assert!(first.bytes < len, "{served:?}");
    assert!(served.iter().skip(1).all(|s| s.status == 206), "{served:?}");
    let from: u64 = last
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no Range on the resumed request: {served:?}"));
    assert!(from > 0 && from <= first.bytes, "{served:?}");
    assert_eq!(last.bytes, len - from, "{served:?}");
    drop(registry);
}

#[test]
fn stalled_blob_transfer_is_broken_off_and_resumed() {
    let registry = Registry::start().unwrap();
    let big = random_bytes(4 << 20);
    let layer = Layer::new().file("big", &big, 0o644).tar().unwrap();
    let pushed = push_layers(&registry, "test/stall:v1", &[&layer]);
    // The first two responses of the layer stop after 1 MiB and then
    // send nothing, with the connection left open.
    let fault = BlobFault::Stall { after: 1 << 20, times: 2 };
    let proxy = BlobProxy::start(registry.port(), &sha256(&layer), fault).unwrap();
    let image = pushed.replacen(&registry.host(), &proxy.host(), 1);
    pull_big_through(&proxy, &image, &big);
    let served = proxy.served();
    assert_eq!(served.len(), 3, "{served:?}");
    // The client, not the proxy, ended each stalled transfer.
    assert!(served[..2].iter().all(|s| s.client_gave_up), "{served:?}");
    let ranges: Vec<Option<&str>> = served.iter().map(|s| s.range.as_deref()).collect();
    assert_eq!(ranges, [None, Some("bytes=1048576-"), Some("bytes=2097152-")], "{served:?}");
}

#[test]
fn blob_complete_before_the_connection_breaks_is_kept() {
    let registry = Registry::start().unwrap();
    let big = random_bytes(2 << 20);
    let layer = Layer::new().file("big", &big, 0o644).tar().unwrap();
    let pushed = push_layers(&registry, "test/end:v1", &[&layer]);
    // Every byte arrives, then the connection ends without the chunked
    // body's last chunk: a transfer error after the last byte.
    let proxy = BlobProxy::start(registry.port(), &sha256(&layer), BlobFault::EndAfterBody).unwrap();
    let image = pushed.replacen(&registry.host(), &proxy.host(), 1);
    pull_big_through(&proxy, &image, &big);
    let served = proxy.served();
    assert_eq!(served.len(), 1, "downloaded again: {served:?}");
    assert_eq!(served[0].bytes, layer.len() as u64, "{served:?}");
}

#[test]
fn blobs_are_deleted_as_soon_as_their_layer_is_unpacked() {
    let registry = Registry::start().unwrap();
    let (one, two) = (random_bytes(1 << 20), random_bytes(1 << 20));
    let lower = Layer::new().file("one", &one, 0o644).tar().unwrap();
    let upper = Layer::new().file("two", &two, 0o644).tar().unwrap();
    let pushed = push_layers(&registry, "test/two:v1", &[&lower, &upper]);
    // The upper layer is held back for a while: the lower one is unpacked
    // meanwhile, and its blob must go before the pull ends.
    let proxy = BlobProxy::start(registry.port(), &sha256(&upper), BlobFault::Hold(Duration::from_secs(4))).unwrap();
    let image = pushed.replacen(&registry.host(), &proxy.host(), 1);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let opts = PullOptions {
        insecure_registries: vec![proxy.host()],
        store: store.clone(),
        // Not impatient: the held response must not count as a stall.
        retry: Retry { base: Duration::from_millis(20), ..Retry::default() },
        ..PullOptions::default()
    };
    let rootfs = dir.path().join("rootfs");
    let puller = std::thread::spawn(move || rt().block_on(pull(&opts, &image, &rootfs)).map(|_| ()));
    let lower_blob = store.join("blobs/sha256").join(sha256(&lower).trim_start_matches("sha256:"));
    let upper_pending = || !proxy.served().first().is_some_and(|s| s.done);
    let start = Instant::now();
    // The lower layer is in the (staging) tree and its blob is gone, while
    // the upper layer is still being served.
    let mut gone = false;
    while upper_pending() && start.elapsed() < Duration::from_secs(30) {
        if find_file(&dir.path().join("rootfs"), "one") && !lower_blob.exists() && upper_pending() {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    puller.join().unwrap().unwrap_or_else(|e| panic!("{:#}", anyhow::Error::from(e)));
    assert!(gone, "the lower layer's blob stayed while the upper layer was still downloading");
    assert_eq!(fs::read(dir.path().join("rootfs/one")).unwrap(), one);
}

/// Whether a file called `name` is anywhere below `dir`.
fn find_file(dir: &Path, name: &str) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|e| {
        let path = e.path();
        if path.is_dir() {
            find_file(&path, name)
        } else {
            e.file_name() == name
        }
    })
}

#[test]
fn image_larger_than_the_store_fails_with_the_sizes() {
    let registry = Registry::start().unwrap();
    let layer = Layer::new().file("big", random_bytes(12 << 20), 0o644).tar().unwrap();
    let image = push_layers(&registry, "test/huge:v1", &[&layer]);
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a tmpfs (the tests run as root)");
    let opts = PullOptions {
        insecure_registries: vec![registry.host()],
        store: small.join("store"),
        retry: impatient(),
        ..PullOptions::default()
    };
    let result = rt().block_on(pull(&opts, &image, &small.join("rootfs")));
    let message = result.map(|_| ()).map_err(|e| format!("{:#}", anyhow::Error::from(e)));
    std::process::Command::new("umount").arg(&small).status().unwrap();
    let message = message.expect_err("the pull fits in 8 MiB");
    let needs = (layer.len() as u64).div_ceil(1 << 20);
    let expected = format!("image {image}: image needs ~{needs} MiB, {} has ", small.display());
    assert!(message.starts_with(&expected), "{message}");
    assert!(message.contains(" MiB free: "), "{message}");
    assert!(message.contains("No space left on device"), "{message}");
}

#[test]
fn mirrors_first_origin_as_fallback() {
    let origin = Registry::start().unwrap();
    let mirror = Registry::start().unwrap();
    let img = Image::busybox_script("echo mirrored\n").unwrap();
    let image = img.build_and_push(&origin, "team/app:v1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let down = format!("127.0.0.1:{}", closed_port());
    let insecure = vec![origin.host(), mirror.host(), down.clone()];
    let opts = |mirrors: Vec<(String, String)>| PullOptions {
        insecure_registries: insecure.clone(),
        store: dir.path().join("store"),
        mirrors,
        retry: Retry {
            base: Duration::from_millis(20),
            ..Retry::default()
        },
        ..PullOptions::default()
    };

    // A mirror that is down: the origin serves.
    let rootfs = dir.path().join("fallback");
    rt().block_on(pull(&opts(vec![(origin.host(), down.clone())]), &image, &rootfs))
        .unwrap();
    assert_eq!(fs::read_to_string(rootfs.join("run.sh")).unwrap(), "echo mirrored\n");
    // Blobs are removed after the pull unless asked to keep them.
    let blobs: Vec<_> = fs::read_dir(dir.path().join("store/blobs/sha256")).unwrap().collect();
    assert!(blobs.is_empty(), "{blobs:?}");

    // A mirror that holds the image is used: with the origin gone, the
    // pull can only succeed through it. Mirrors not for this registry are
    // ignored.
    img.build_and_push(&mirror, "team/app:v1").unwrap();
    drop(origin);
    let rootfs = dir.path().join("mirrored");
    let mirrors = vec![
        ("other.example".to_string(), down.clone()),
        (image.split('/').next().unwrap().to_string(), mirror.host()),
    ];
    rt().block_on(pull(&opts(mirrors), &image, &rootfs)).unwrap();
    assert_eq!(fs::read_to_string(rootfs.join("run.sh")).unwrap(), "echo mirrored\n");
}

#[test]
fn mirror_flag_on_the_command_line() {
    let origin = Registry::start().unwrap();
    let image = Image::busybox_script("true")
        .unwrap()
        .build_and_push(&origin, "team/cli:v1")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let down = format!("127.0.0.1:{}", closed_port());
    let (ok, out) = iguana_pull(
        &image,
        &dir.path().join("rootfs"),
        &[
            "--insecure-registry",
            &format!("{},{down}", origin.host()),
            "--mirror",
            &format!("{}={down}", origin.host()),
            "--store",
            dir.path().join("store").to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("mirror {down}: cannot reach {down}: connection refused; trying the next source")),
        "{out}"
    );
    assert!(out.contains(&format!("from {}", origin.host())), "{out}");
    assert!(out.contains("free on the store's filesystem"), "{out}");
}

#[test]
fn tls_registry_needs_its_ca() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = testkit::self_signed_cert(certs.path()).unwrap();
    let registry = Registry::start_with(RegistryOptions {
        tls: Some((cert.clone(), key)),
        ..RegistryOptions::default()
    })
    .unwrap();
    let image = Image::busybox_script("echo over tls\n")
        .unwrap()
        .build_and_push(&registry, "secure/app:v1")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Not in the system's trust store: refused, and the message says why.
    let (ok, out) = iguana_pull(&image, &dir.path().join("untrusted"), &[]);
    assert!(!ok, "{out}");
    let host = registry.host();
    assert!(
        out.contains(&format!(
            "image {image}: fetch manifest: TLS certificate of {host} not trusted: \
             invalid peer certificate: UnknownIssuer"
        )),
        "{out}"
    );
    // Fails at once: retrying cannot change the verdict.
    assert!(!out.contains("retrying"), "{out}");
    assert!(!out.contains("not removed"), "{out}");
    assert!(!out.contains("panicked"), "{out}");

    let rootfs = dir.path().join("trusted");
    let (ok, out) = iguana_pull(&image, &rootfs, &["--ca", cert.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert_eq!(fs::read_to_string(rootfs.join("run.sh")).unwrap(), "echo over tls\n");
}

#[test]
fn bearer_token_flow_with_auth_json_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start(dir.path(), "bob", PASSWORD).unwrap();
    let registry = Registry::start_with(RegistryOptions {
        token: Some(TokenAuth {
            realm: tokens.realm(),
            cert: tokens.cert().to_path_buf(),
            user: "bob".into(),
            password: PASSWORD.into(),
        }),
        ..RegistryOptions::default()
    })
    .unwrap();
    // skopeo pushes through the same token flow.
    let image = Image::busybox_script("echo behind a token\n")
        .unwrap()
        .build_and_push(&registry, "private/token:v1")
        .unwrap();
    let pushed = tokens.issued();
    assert!(pushed > 0, "the push got its tokens from the token server");
    let host = registry.host();

    // Anonymous: the registry answers 401 with a Bearer challenge, and the
    // token server refuses a token without credentials.
    let (ok, out) = iguana_pull(&image, &dir.path().join("anon"), &["--insecure-registry", &host]);
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("image {image}: fetch manifest: unauthorized")), "{out}");

    let auth_file = dir.path().join("auth.json");
    let auth = base64(&format!("bob:{PASSWORD}"));
    fs::write(&auth_file, format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#)).unwrap();
    let rootfs = dir.path().join("rootfs");
    let (ok, out) = iguana_pull(
        &image,
        &rootfs,
        &["--insecure-registry", &host, "--auth-file", auth_file.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    assert_eq!(fs::read_to_string(rootfs.join("run.sh")).unwrap(), "echo behind a token\n");
    assert!(tokens.issued() > pushed, "the pull went through the token server");
    assert!(!out.contains(PASSWORD) && !out.contains(&auth), "credentials in output: {out}");
    assert!(!out.contains("eyJ"), "a token (JWT) in output: {out}");
}

#[test]
fn mirror_that_breaks_mid_blob_falls_back_to_the_origin() {
    let origin = Registry::start().unwrap();
    let big = random_bytes(3 << 20);
    let image = Image::new()
        .layer(Layer::new().file("small", "small", 0o644))
        .layer(Layer::new().file("big", &big, 0o644))
        .entrypoint(&["/big"])
        .build_and_push(&origin, "team/big:v1")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (n, breakage) in [Breakage::Truncate, Breakage::ServerError].into_iter().enumerate() {
        // The mirror serves the manifest and config (from the origin's
        // storage) but breaks every layer download.
        let mirror = BrokenMirror::start(origin.port(), breakage).unwrap();
        let rootfs = dir.path().join(format!("rootfs{n}"));
        let mirror_flag = format!("{}={}", origin.host(), mirror.host());
        let insecure = format!("{},{}", origin.host(), mirror.host());
        let (ok, out) = iguana_pull(
            &image,
            &rootfs,
            &["--insecure-registry", &insecure, "--mirror", &mirror_flag],
        );
        assert!(ok, "{breakage:?}: {out}");
        assert!(mirror.broken() >= 2, "{breakage:?}: the mirror broke {} downloads", mirror.broken());
        assert!(out.contains(&format!("from {}, 2 layers", mirror.host())), "{out}");
        assert!(
            out.contains(&format!("mirror {}: layer sha256:", mirror.host()))
                && out.contains(&format!("; fetching it from {}", origin.host())),
            "{out}"
        );
        assert_eq!(fs::read(rootfs.join("big")).unwrap(), big, "{breakage:?}");
        assert_eq!(fs::read_to_string(rootfs.join("small")).unwrap(), "small");
    }
}
