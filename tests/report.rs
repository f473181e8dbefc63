//! `iguana report` against a real HTTP receiver on 127.0.0.1 (testkit's
//! EventReceiver): frames in on stdin as PID 1 writes them, CloudEvents out.

#![allow(clippy::tests_outside_test_module)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_iguana");
const TOKEN: &str = "tok-9f8e7d";

fn frame(event: serde_json::Value, tail: Option<&std::path::Path>) -> String {
    format!("{}\n", json!({"event": {"event": event, "tail": tail}}))
}

fn event(id: &str, kind: &str, subject: &str) -> serde_json::Value {
    json!({"specversion": "1.0", "id": id, "source": "iguana://m1", "type": kind, "subject": subject, "data": {"job": subject}})
}

/// Runs the sender with `input` on stdin (held open `hold` before the end
/// of input); returns its exit status success and stderr.
fn run(url: &str, token_file: &std::path::Path, input: &[String], hold: Duration) -> (bool, String) {
    let mut child = Command::new(BIN)
        .args(["report", url, "--machine-id", "m1", "--heartbeat", "1", "--token-file"])
        .arg(token_file)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for (i, line) in input.iter().enumerate() {
        stdin.write_all(line.as_bytes()).unwrap();
        if i == 0 {
            std::thread::sleep(hold);
        }
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn delivers_every_event_once_in_order_through_refusals() {
    let sink = testkit::EventReceiver::start(3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let log = dir.path().join("broken.log");
    let mut text = "x".repeat(100 << 10);
    text.push_str("\nthe last line\n");
    std::fs::write(&log, &text).unwrap();
    let input = vec![
        frame(event("m1-1", "job.started", "broken"), None),
        frame(event("m1-2", "job.finished", "broken"), Some(&log)),
        format!("{}\n", json!({"log": {"job": "broken", "file": log}})),
        frame(event("m1-3", "workflow.finished", ""), None),
    ];
    // Held open 2.5 s while `broken` runs: heartbeats every second.
    let (ok, stderr) = run(&sink.url("127.0.0.1"), &token_file, &input, Duration::from_millis(2500));
    assert!(ok, "{stderr}");
    let requests = sink.requests();
    assert_eq!(requests.iter().filter(|r| r.status == 500).count(), 3);
    // Every request carried the token; stderr never shows it.
    assert!(requests.iter().all(|r| r.header("authorization") == Some(&format!("Bearer {TOKEN}")[..])));
    assert!(!stderr.contains(TOKEN), "{stderr}");
    assert!(stderr.contains("HTTP 500; retrying"), "{stderr}");
    let events = sink.events();
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let beats = kinds.iter().filter(|k| **k == "heartbeat").count();
    assert!(beats >= 1, "{kinds:?}");
    let without_beats: Vec<&str> = ids.iter().copied().filter(|id| !id.contains("heartbeat")).collect();
    assert_eq!(without_beats, ["m1-1", "m1-2", "m1-3"], "{ids:?}");
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "an id delivered twice: {ids:?}");
    assert!(requests.iter().filter(|r| r.method == "POST").all(|r| r.header("content-type") == Some("application/cloudevents+json")));
    // job.finished carries the last 64 KiB of the log; the PUT the whole log.
    let finished = events.iter().find(|e| e["type"] == "job.finished").unwrap();
    let tail = finished["data"]["log"].as_str().unwrap();
    assert_eq!(tail.len(), 64 << 10);
    assert!(tail.ends_with("the last line\n"));
    assert_eq!(sink.log("/logs/m1/broken").unwrap(), text.as_bytes());
    assert!(stderr.contains("delivered"), "{stderr}");
}

#[test]
fn a_refusal_drops_the_event_and_says_so() {
    // A plain file server answers a POST with 404: the sink will never take it.
    let server = testkit::FileServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let input = vec![frame(event("m1-1", "boot.started", ""), None), frame(event("m1-2", "handover", ""), None)];
    let (ok, stderr) = run(&format!("http://127.0.0.1:{}/events", server.port()), &token_file, &input, Duration::ZERO);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("event boot.started m1-1 refused by http://127.0.0.1:"), "{stderr}");
    assert!(stderr.contains("HTTP 404; dropped"), "{stderr}");
    assert!(stderr.contains("0 delivered, 2 refused"), "{stderr}");
}

#[test]
fn a_dead_sink_is_retried_until_the_parent_stops_waiting() {
    // Nothing listens: the sender keeps trying; PID 1's deadline ends it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(BIN)
        .args(["report", &format!("http://127.0.0.1:{port}"), "--machine-id", "m1"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(frame(event("m1-1", "boot.started", ""), None).as_bytes()).unwrap();
    drop(stdin);
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().unwrap().is_none(), "gave up on its own");
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("event boot.started m1-1 to http://127.0.0.1:") && stderr.contains("no answer; retrying"), "{stderr}");
}
