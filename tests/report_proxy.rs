//! `iguana report` honours `rd.iguana.proxy=` / `rd.iguana.no_proxy=`: the
//! real binary delivers events to a real receiver on 127.0.0.1 (testkit's
//! EventReceiver) through a counting proxy (testkit's HttpProxy), and goes
//! direct when no_proxy names the host. PID 1 hands the proxy over in a
//! 0600 file (`--proxy-file`), never in the environment: its URL may carry
//! credentials.

#![allow(clippy::tests_outside_test_module)]

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::json;

const SECRET: &str = "pr0xyPW";

fn frame(id: &str, kind: &str) -> String {
    let event = json!({"specversion": "1.0", "id": id, "source": "iguana://m1", "type": kind, "data": {}});
    format!("{}\n", json!({"event": {"event": event, "tail": null}}))
}

/// Runs the sender with the proxy file and two events; its success and stderr.
fn run(url: &str, proxy_file: &std::path::Path) -> (bool, String) {
    // Only what PID 1 handed over may decide.
    let mut child = testkit::without_host_proxies(&mut Command::new(env!("CARGO_BIN_EXE_iguana")))
        .args(["report", url, "--machine-id", "m1", "--proxy-file"])
        .arg(proxy_file)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A sender that refused its arguments is gone: its stderr says why.
    let _ = stdin.write_all(frame("m1-1", "boot.started").as_bytes());
    let _ = stdin.write_all(frame("m1-2", "handover").as_bytes());
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn events_go_through_the_proxy_unless_no_proxy_names_the_sink() {
    // (no_proxy, through the proxy)
    let cases = [("", true), ("example.org,.lan", true), ("127.0.0.1", false), ("127.0.0.0/8", false), ("*", false)];
    for (no_proxy, through) in cases {
        let sink = testkit::EventReceiver::start(0).unwrap();
        let proxy = testkit::HttpProxy::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("proxy");
        std::fs::write(&file, format!("http://bob:{SECRET}@127.0.0.1:{}\n{no_proxy}\n", proxy.port())).unwrap();
        let (ok, stderr) = run(&sink.url("127.0.0.1"), &file);
        assert!(ok, "{no_proxy:?}: {stderr}");
        assert!(!stderr.contains(SECRET), "{stderr}");
        let ids: Vec<String> = sink.events().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
        assert_eq!(ids, ["m1-1", "m1-2"], "{no_proxy:?}: {stderr}");
        let seen = proxy.requests();
        let sink_authority = format!("127.0.0.1:{}", sink.port());
        if through {
            // ureq tunnels plain HTTP too: every connection is a CONNECT to the sink.
            assert!(!seen.is_empty(), "{no_proxy:?}: nothing went through the proxy");
            assert!(seen.iter().all(|r| r.contains(&sink_authority)), "{no_proxy:?}: {seen:?}");
        } else {
            assert_eq!(seen, Vec::<String>::new(), "{no_proxy:?}");
        }
    }
}

#[test]
fn an_unreadable_proxy_file_is_an_error_naming_it() {
    let (ok, stderr) = run("http://127.0.0.1:9/e", std::path::Path::new("/nonexistent/iguana-proxy"));
    assert!(!ok);
    assert!(stderr.contains("/nonexistent/iguana-proxy"), "{stderr}");
}
