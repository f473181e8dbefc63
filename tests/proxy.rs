//! `rd.iguana.proxy` / `rd.iguana.no_proxy` as the children see them
//! (a root-only file named by `IGUANA_PROXY_FILE`, which PID 1 puts in their environment only): the real binary
//! pulls from a real docker-registry and fetches a control_url through a
//! counting proxy on 127.0.0.1 (testkit), and goes direct when no_proxy
//! names the host.

// An integration test file is a test crate of its own: no test module needed.
#![allow(clippy::tests_outside_test_module)]

use std::path::Path;
use std::process::Command;
use testkit::{HttpProxy, Image, Registry, RegistryOptions};

/// Runs the real binary with the proxy environment PID 1 gives pull and fetch.
fn iguana(args: &[&str], proxy: &str, no_proxy: &str) -> (bool, String) {
    // Only iguana's own variables may decide.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy");
    std::fs::write(&file, format!("{proxy}\n{no_proxy}\n")).unwrap();
    let out = testkit::without_host_proxies(&mut Command::new(env!("CARGO_BIN_EXE_iguana")))
        .args(args)
        .env("IGUANA_PROXY_FILE", &file)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn pull(image: &str, rootfs: &Path, extra: &[&str], proxy: &str, no_proxy: &str) -> (bool, String) {
    let mut args = vec!["pull", image, "--rootfs", rootfs.to_str().unwrap()];
    args.extend(extra);
    iguana(&args, proxy, no_proxy)
}

#[test]
fn plain_http_registry_through_the_proxy_unless_no_proxy() {
    let registry = Registry::start().unwrap();
    let image = Image::busybox_script("echo proxied\n").unwrap().build_and_push(&registry, "p/app:v1").unwrap();
    let proxy = HttpProxy::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let host = registry.host();

    let (ok, out) = pull(&image, &dir.path().join("a"), &["--insecure-registry", &host], &proxy.url(), "");
    assert!(ok, "{out}");
    let seen = proxy.requests();
    let prefix = format!("GET http://{host}/v2/p/app/");
    assert!(seen.iter().any(|r| r.starts_with(&format!("{prefix}manifests/v1"))), "{seen:?}");
    assert!(seen.iter().any(|r| r.starts_with(&format!("{prefix}blobs/sha256:"))), "{seen:?}");
    assert_eq!(std::fs::read_to_string(dir.path().join("a/run.sh")).unwrap(), "echo proxied\n");

    // no_proxy by IP, by CIDR: straight to the registry.
    for no_proxy in ["127.0.0.1", "10.0.0.0/8,127.0.0.0/8"] {
        let before = proxy.requests().len();
        let (ok, out) = pull(&image, &dir.path().join(no_proxy.replace('/', "_")), &["--insecure-registry", &host], &proxy.url(), no_proxy);
        assert!(ok, "{out}");
        assert_eq!(proxy.requests().len(), before, "no_proxy={no_proxy}: {:?}", proxy.requests());
    }
}

#[test]
fn tls_registry_through_connect() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = testkit::self_signed_cert(certs.path()).unwrap();
    let registry = Registry::start_with(RegistryOptions { tls: Some((cert.clone(), key)), ..RegistryOptions::default() }).unwrap();
    let image = Image::busybox_script("echo tunnelled\n").unwrap().build_and_push(&registry, "s/app:v1").unwrap();
    let proxy = HttpProxy::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = pull(&image, &dir.path().join("r"), &["--ca", cert.to_str().unwrap()], &proxy.url(), "example.org");
    assert!(ok, "{out}");
    let connects = proxy.requests().iter().filter(|r| **r == format!("CONNECT {}", registry.host())).count();
    assert!(connects >= 1, "{:?}", proxy.requests());
    assert_eq!(std::fs::read_to_string(dir.path().join("r/run.sh")).unwrap(), "echo tunnelled\n");
}

#[test]
fn control_url_through_the_proxy_unless_no_proxy() {
    // The registry's /v2/ endpoint is a real HTTP server answering `{}`.
    let registry = Registry::start().unwrap();
    let url = format!("http://{}/v2/", registry.host());
    let proxy = HttpProxy::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("w.yaml");
    let out_arg = out_file.to_str().unwrap();

    let (ok, out) = iguana(&["fetch", &url, "--out", out_arg], &proxy.url(), "example.org");
    assert!(ok, "{out}");
    assert_eq!(std::fs::read_to_string(&out_file).unwrap().trim(), "{}");
    assert_eq!(proxy.requests(), vec![format!("CONNECT {}", registry.host())]);

    let (ok, out) = iguana(&["fetch", &url, "--out", out_arg], &proxy.url(), "localhost,127.0.0.1");
    assert!(ok, "{out}");
    assert_eq!(proxy.requests().len(), 1, "{:?}", proxy.requests());

    // A proxy that is down is the fetch's error, not a silent bypass.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (ok, out) = iguana(&["fetch", &url, "--out", out_arg, "--tries", "1"], &format!("http://127.0.0.1:{closed}"), "");
    assert!(!ok, "{out}");
}
