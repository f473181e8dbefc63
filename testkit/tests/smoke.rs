//! The fixtures themselves work: a registry starts, an image is pushed to it
//! and its manifest can be read back; auth and restart work.

// An integration test file is a test crate of its own: no test module needed.
#![allow(clippy::tests_outside_test_module)]

use testkit::{Image, Layer, Registry, RegistryOptions};

#[test]
fn push_busybox_image() -> anyhow::Result<()> {
    let registry = Registry::start()?;
    let reference =
        Image::busybox_script("echo hello\n")?.build_and_push(&registry, "smoke/busybox:v1")?;
    assert_eq!(
        reference,
        format!("127.0.0.1:{}/smoke/busybox:v1", registry.port())
    );
    let resp = registry.request(
        "GET",
        "/v2/smoke/busybox/manifests/v1",
        &[(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json".into(),
        )],
        b"",
    )?;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    Ok(())
}

#[test]
fn auth_restart_and_index() -> anyhow::Result<()> {
    let mut registry = Registry::start_with(RegistryOptions {
        basic_auth: Some(("iguana".into(), "secret".into())),
        ..Default::default()
    })?;
    let anonymous = testkit_get(registry.port(), "/v2/")?;
    assert_eq!(anonymous, 401);
    Image::new()
        .layer(Layer::new().file("arch", "amd64", 0o644))
        .build_and_push(&registry, "smoke/multi:amd64")?;
    Image::new()
        .layer(Layer::new().file("arch", "arm64", 0o644))
        .architecture("arm64")
        .build_and_push(&registry, "smoke/multi:arm64")?;
    let port = registry.port();
    registry.restart()?;
    assert_eq!(registry.port(), port);
    registry.push_index(
        "smoke/multi:latest",
        &[("arm64", "arm64"), ("amd64", "amd64")],
    )?;
    let resp = registry.request(
        "GET",
        "/v2/smoke/multi/manifests/latest",
        &[("Accept", "application/vnd.oci.image.index.v1+json".into())],
        b"",
    )?;
    assert_eq!(resp.status, 200);
    assert!(String::from_utf8_lossy(&resp.body).contains("arm64"));
    Ok(())
}

fn testkit_get(port: u16, path: &str) -> anyhow::Result<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.split_whitespace().nth(1).unwrap_or("0").parse()?)
}
