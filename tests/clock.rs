//! `iguana sntp` against SNTP servers on 127.0.0.1 (testkit): a good one
//! with a known time, and hostile ones whose replies must be refused with
//! an error naming the server. Setting the clock (`--set`) is left to the
//! QEMU scenario `clock-sntp`: a host test must not move the host's clock.

// An integration test file is a test crate of its own: no test module needed.
#![allow(clippy::tests_outside_test_module)]

use std::process::Command;
use std::time::Duration;
use testkit::sntp::{reply, SntpServer};

/// Runs `iguana sntp ARGS...`: success and stdout + stderr.
fn sntp(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_iguana")).arg("sntp").args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// 2030-06-01T12:00:00Z.
const JUNE_2030: u64 = 1_906_545_600;

#[test]
fn reads_a_known_time() {
    let server = SntpServer::start("127.0.0.1:0", |req| Some(reply(req, Duration::from_secs(JUNE_2030)))).unwrap();
    let name = format!("127.0.0.1:{}", server.port());
    let (ok, text) = sntp(&[&name]);
    assert!(ok, "{text}");
    // The round trip on loopback is far below a second.
    assert!(text.contains(&format!("{name} 2030-06-01T12:00:00Z stratum=2")), "{text}");
    assert_eq!(server.requests(), 1);
}

#[test]
fn falls_over_to_the_next_server() {
    let bad = SntpServer::start("127.0.0.1:0", |req| {
        let mut kod = reply(req, Duration::ZERO);
        kod[1] = 0;
        kod[12..16].copy_from_slice(b"DENY");
        Some(kod)
    })
    .unwrap();
    let good = SntpServer::start("127.0.0.1:0", |req| Some(reply(req, Duration::from_secs(JUNE_2030)))).unwrap();
    let (bad_name, good_name) = (format!("127.0.0.1:{}", bad.port()), format!("127.0.0.1:{}", good.port()));
    let (ok, text) = sntp(&[&bad_name, &good_name]);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("NTP server {bad_name} sent a bad reply: kiss-of-death \"DENY\"")), "{text}");
    assert!(text.contains(&format!("{good_name} 2030-06-01T12:00:00Z")), "{text}");
}

#[test]
fn hostile_replies_are_refused_naming_the_server() {
    type Forge = fn(&[u8]) -> Vec<u8>;
    let cases: &[(Forge, &str)] = &[
        (|_| vec![0x24, 1, 0], "sent a bad reply: 3 bytes, an NTP reply has at least 48"),
        (|req| { let mut p = reply(req, Duration::from_secs(JUNE_2030)); p[0] = 0x23; p }, "sent a bad reply: mode 3, not a server reply (4)"),
        (|req| { let mut p = reply(req, Duration::from_secs(JUNE_2030)); p[1] = 16; p }, "sent a bad reply: stratum 16 is not 1..15"),
        (|req| { let mut p = reply(req, Duration::from_secs(JUNE_2030)); p[0] |= 0xc0; p }, "sent a bad reply: server clock is not synchronized"),
        (|req| { let mut p = reply(req, Duration::ZERO); p[40..48].fill(0); p }, "sent a bad reply: transmit timestamp is zero"),
        (|req| vec![0xff; req.len() + 100], "sent a bad reply: mode 7"),
    ];
    for (forge, message) in cases {
        let server = SntpServer::start("127.0.0.1:0", move |req| Some(forge(req))).unwrap();
        let name = format!("127.0.0.1:{}", server.port());
        let (ok, text) = sntp(&[&name]);
        assert!(!ok, "accepted: {text}");
        assert!(text.contains(&format!("NTP server {name} {message}")), "want {message:?} in {text}");
        assert!(!text.contains("panicked"), "{text}");
    }
}

#[test]
fn a_reply_to_someone_else_is_not_believed() {
    // The origin timestamp never echoes ours: all three tries are waited
    // out, then the error says why.
    let server = SntpServer::start("127.0.0.1:0", |req| {
        let mut p = reply(req, Duration::from_secs(JUNE_2030));
        p[24..32].copy_from_slice(&[9; 8]);
        Some(p)
    })
    .unwrap();
    let name = format!("127.0.0.1:{}", server.port());
    let (ok, text) = sntp(&[&name]);
    assert!(!ok, "{text}");
    assert!(text.contains(&format!("NTP server {name} sent a bad reply: origin timestamp does not echo our request")), "{text}");
    assert_eq!(server.requests(), 3);
}

#[test]
fn nothing_listening() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (ok, text) = sntp(&[&format!("127.0.0.1:{port}")]);
    assert!(!ok, "{text}");
    assert!(text.contains(&format!("NTP server 127.0.0.1:{port} refused: nothing listens on its port")), "{text}");
}

#[test]
fn bad_arguments() {
    let (ok, text) = sntp(&["udp://x"]);
    assert!(!ok && text.contains("\"udp://x\" is not an NTP server (host[:port])"), "{text}");
    let (ok, text) = sntp(&[]);
    assert!(!ok && text.contains("usage: iguana sntp"), "{text}");
}

/// The negative of the QEMU scenario, on the host: a registry whose
/// certificate is expired (or not valid yet) as a wrong clock would see it.
/// The pull fails with rustls's date verdict, and the line PID 1 makes of it
/// (`clock::with_hint`) says the clock is probably wrong. (This host never
/// set its clock from NTP through iguana, so the hint applies.)
#[test]
fn certificate_date_errors_get_the_clock_hint() {
    use testkit::{Image, Registry, RegistryOptions};
    let cases = [("20000101000000Z", "20000102000000Z"), ("20990101000000Z", "20990102000000Z")];
    for (start, end) in cases {
        let certs = tempfile::tempdir().unwrap();
        let (cert, key) = testkit::cert_valid_between(certs.path(), start, end).unwrap();
        let registry = Registry::start_with(RegistryOptions { tls: Some((cert.clone(), key)), ..RegistryOptions::default() }).unwrap();
        // testkit's skopeo push does not verify the registry's certificate.
        let image = Image::busybox_script("echo x\n").unwrap().build_and_push(&registry, "c/app:v1").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_iguana"))
            .args(["pull", &image, "--rootfs"])
            .arg(dir.path().join("r"))
            .args(["--ca", cert.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{text}");
        let verdict = if start.starts_with("2000") { "certificate expired" } else { "certificate not valid yet" };
        assert!(text.contains(&format!("invalid peer certificate: {verdict}")), "{start}: {text}");
        assert!(iguana::clock::is_certificate_time_error(&text), "{start}: {text}");
        let line = iguana::clock::with_hint(text.trim().to_string());
        assert!(line.contains("; the clock is probably wrong (it is "), "{line}");
        assert!(line.ends_with("set rd.iguana.ntp=SERVER to get the time by NTP"), "{line}");
    }
}
