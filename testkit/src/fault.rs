//! A TCP proxy on 127.0.0.1 in front of a test server (the docker-registry)
//! that injects a fault at an exact point of a transfer: once the responses
//! to requests whose request line contains a pattern have carried N bytes
//! on one connection, it runs the test's action (kill the registry, cut the
//! guest's link) before relaying another byte of that connection. The
//! action runs once, in the relaying thread, so the fault lands mid-transfer
//! and not "some time around then".
//!
//! It keeps a log of what it relayed (request lines with their `Range`
//! header, response status lines, the fault), each event tagged `#N` with
//! its connection, so a test can show that the fault happened mid-transfer
//! and what the client did afterwards.
//!
//! A connection whose upstream cannot be reached (the registry is down) is
//! accepted and closed at once: the client sees a cut connection.

use anyhow::Context;
use sha2::Digest;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Instant;

type Action = Box<dyn FnOnce() -> String + Send>;

/// A fault to inject: after `after` response bytes of one request matching
/// `pattern`, `action` runs (once) and says what it did.
struct Rule {
    pattern: String,
    after: u64,
    action: Option<Action>,
}

struct Shared {
    upstream: u16,
    started: Instant,
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<String>>,
}

impl Shared {
    fn note(&self, what: String) {
        let line = format!("{:6.1}s {what}", self.started.elapsed().as_secs_f64());
        if let Ok(mut log) = self.log.lock() {
            log.push(line);
        }
    }
}

/// The proxy; its threads live as long as the process.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1, relaying to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> anyhow::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            upstream,
            started: Instant::now(),
            rules: Mutex::default(),
            log: Mutex::default(),
        });
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || {
            for (n, client) in listener.incoming().flatten().enumerate() {
                let shared = Arc::clone(&accepting);
                std::thread::spawn(move || relay(&shared, n + 1, client));
            }
        });
        Ok(FaultProxy { port, shared })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs `action` once, when a response to a request whose line contains
    /// `pattern` has carried `after` bytes (headers included) on its
    /// connection. The action's answer goes into the log.
    pub fn on_bytes(&self, pattern: &str, after: u64, action: impl FnOnce() -> String + Send + 'static) {
        if let Ok(mut rules) = self.shared.rules.lock() {
            rules.push(Rule { pattern: pattern.to_owned(), after, action: Some(Box::new(action)) });
        }
    }

    /// Drops the rules that have not fired, and what their actions hold
    /// (a registry to kill), so it is not kept alive by the proxy's threads.
    pub fn disarm(&self) {
        if let Ok(mut rules) = self.shared.rules.lock() {
            rules.clear();
        }
    }

    /// What happened so far, one event a line, stamped with the time since
    /// the proxy started.
    pub fn log(&self) -> Vec<String> {
        self.shared.log.lock().map(|log| log.clone()).unwrap_or_default()
    }
}

/// What the client asked for last on one connection.
#[derive(Default)]
struct Asked {
    /// The connection's number, in the order they came.
    conn: usize,
    /// The pattern of the rule this request matched.
    pattern: Option<String>,
    /// Response bytes relayed since the request.
    bytes: u64,
    /// The response's status line is still to come.
    awaiting_status: bool,
}

fn relay(shared: &Arc<Shared>, conn: usize, client: TcpStream) {
    let upstream = match TcpStream::connect(("127.0.0.1", shared.upstream)) {
        Ok(upstream) => upstream,
        Err(err) => {
            shared.note(format!("#{conn} upstream 127.0.0.1:{}: {err}; connection closed", shared.upstream));
            return;
        }
    };
    let asked = Arc::new(Mutex::new(Asked { conn, ..Asked::default() }));
    let (Ok(client_read), Ok(upstream_write)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let requests = {
        let (shared, asked) = (Arc::clone(shared), Arc::clone(&asked));
        std::thread::spawn(move || forward_requests(&shared, &asked, client_read, upstream_write))
    };
    forward_responses(shared, &asked, upstream, client);
    let _ = requests.join();
}

/// Client to upstream: notes each request line and which rule it matches.
fn forward_requests(shared: &Shared, asked: &Mutex<Asked>, mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = buf.get(..n).unwrap_or_default();
        if let Some(request) = request_summary(&String::from_utf8_lossy(chunk)) {
            let pattern = shared.rules.lock().ok().and_then(|rules| {
                rules.iter().find(|r| request.contains(&r.pattern)).map(|r| r.pattern.clone())
            });
            let conn = asked.lock().map(|mut asked| {
                *asked = Asked { conn: asked.conn, pattern, bytes: 0, awaiting_status: true };
                asked.conn
            });
            shared.note(format!("#{} {request}", conn.unwrap_or(0)));
        }
        if to.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Upstream to client: counts the bytes of a watched response and runs
/// the rule's action when they pass its threshold.
fn forward_responses(shared: &Shared, asked: &Mutex<Asked>, mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) => {
                shared.note(format!("#{} upstream read: {err}", asked.lock().map_or(0, |a| a.conn)));
                break;
            }
        };
        let chunk = buf.get(..n).unwrap_or_default();
        let mut due = None;
        let mut conn = 0;
        if let Ok(mut asked) = asked.lock() {
            conn = asked.conn;
            if std::mem::take(&mut asked.awaiting_status) {
                let head = String::from_utf8_lossy(chunk.get(..chunk.len().min(64)).unwrap_or_default()).into_owned();
                if let Some(status) = head.lines().next().filter(|l| l.starts_with("HTTP/")) {
                    shared.note(format!("#{} -> {status}", asked.conn));
                }
            }
            let before = asked.bytes;
            asked.bytes += n as u64;
            if let Some(pattern) = &asked.pattern {
                due = take_action(shared, pattern, before, asked.bytes);
            }
        }
        if let Some((after, head, action)) = due {
            // Relay exactly the bytes up to the threshold, then the fault.
            let head = usize::try_from(head).unwrap_or(n).min(n);
            let _ = to.write_all(chunk.get(..head).unwrap_or_default());
            let said = action();
            shared.note(format!("#{conn} fault after {after} bytes of this response: {said}"));
            if to.write_all(chunk.get(head..).unwrap_or_default()).is_err() {
                break;
            }
            continue;
        }
        if to.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// The action of the rule for `pattern` when the response crossed its
/// threshold in this chunk (`before` to `now` bytes): the threshold, the
/// bytes of the chunk before it, and the action (taken: it runs once).
fn take_action(shared: &Shared, pattern: &str, before: u64, now: u64) -> Option<(u64, u64, Action)> {
    let mut rules = shared.rules.lock().ok()?;
    let rule = rules.iter_mut().find(|r| r.pattern == pattern && before < r.after && r.after <= now)?;
    let action = rule.action.take()?;
    Some((rule.after, rule.after - before, action))
}

/// `GET /path (Range: bytes=10-)` for a chunk that starts a request.
fn request_summary(chunk: &str) -> Option<String> {
    let line = chunk.lines().next()?;
    let method = line.split_whitespace().next()?;
    if !["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"].contains(&method) {
        return None;
    }
    let line = line.trim_end_matches(" HTTP/1.1").trim_end_matches(" HTTP/1.0");
    let range = chunk
        .lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("range")))
        .map(|(_, v)| v.trim().to_owned());
    Some(match range {
        Some(range) => format!("{line} (Range: {range})"),
        None => line.to_owned(),
    })
}

/// Pushes `name:tag` made of uncompressed tar layers (bottom-up) and an
/// entrypoint, bypassing umoci; returns each layer's digest. For fault
/// tests: the caller knows the digest of the layer to aim a fault at, and a
/// layer of random data is not gzipped for nothing on every run.
pub fn push_plain_image(
    registry: &crate::Registry,
    name_tag: &str,
    layers: Vec<Vec<u8>>,
    entrypoint: &[&str],
) -> anyhow::Result<Vec<String>> {
    let digests: Vec<String> = layers
        .iter()
        .map(|tar| format!("sha256:{}", hex(&sha2::Sha256::digest(tar))))
        .collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Entrypoint": entrypoint },
        "rootfs": { "type": "layers", "diff_ids": digests },
    });
    let blobs: Vec<(Vec<u8>, &str)> = layers
        .into_iter()
        .map(|tar| (tar, "application/vnd.oci.image.layer.v1.tar"))
        .collect();
    registry
        .push_raw_image(name_tag, &blobs, &config)
        .with_context(|| format!("push {name_tag}"))?;
    Ok(digests)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn request_summaries() {
        for (chunk, expected) in [
            ("GET /v2/a/blobs/sha256:ab HTTP/1.1\r\nHost: x\r\nrange: bytes=10-\r\n\r\n", Some("GET /v2/a/blobs/sha256:ab (Range: bytes=10-)")),
            ("HEAD /v2/ HTTP/1.1\r\n\r\n", Some("HEAD /v2/")),
            ("\0\0\0 binary body", None),
            ("", None),
        ] {
            assert_eq!(request_summary(chunk).as_deref(), expected, "{chunk:?}");
        }
    }

    /// The action runs once, at the threshold of the first matching
    /// response; every response still reaches the client whole.
    #[test]
    fn fault_lands_at_the_byte() {
        let body = vec![7u8; 300_000];
        let server = crate::FileServer::start().unwrap();
        server.add("/big", body.clone());
        server.add("/small", "small");
        let proxy = FaultProxy::start(server.port()).unwrap();
        let runs = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&runs);
        proxy.on_bytes("GET /big", 100_000, move || {
            counted.fetch_add(1, Ordering::SeqCst);
            "noted".into()
        });
        for path in ["/small", "/big", "/big"] {
            let resp = crate::http::request(proxy.port(), "GET", path, &[], b"").unwrap();
            assert_eq!(resp.status, 200, "{path}");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let log = proxy.log().join("\n");
        assert!(log.contains("GET /small"), "{log}");
        assert!(log.contains("fault after 100000 bytes of this response: noted"), "{log}");
        assert_eq!(log.matches("-> HTTP/1.1 200 OK").count(), 3, "{log}");
    }

    #[test]
    fn upstream_down_closes_the_connection() {
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let proxy = FaultProxy::start(closed).unwrap();
        assert!(crate::http::request(proxy.port(), "GET", "/v2/", &[], b"").is_err());
        assert!(proxy.log().join("\n").contains("connection closed"), "{:?}", proxy.log());
    }
}
