//! A reverse proxy on 127.0.0.1 in front of a local registry that counts
//! what it serves of one blob and can misbehave while serving it: stall
//! mid-body, hold the response back, or break the connection right after
//! the last byte. Every request is forwarded with `Connection: close`, so
//! one connection carries one request and each response is seen whole.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

/// How the proxy serves GETs of its blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobFault {
    /// As the registry sends it (only counted).
    None,
    /// The first `times` responses stop after `after` body bytes: the
    /// connection stays open with nothing more on it, until the client
    /// gives up or a minute passes.
    Stall { after: u64, times: usize },
    /// Every response waits this long before its first byte.
    Hold(Duration),
    /// The whole body, re-framed as chunked, without the closing empty
    /// chunk: the connection then just ends, so the client has every byte
    /// and still sees a broken transfer.
    EndAfterBody,
}

/// One response of the blob, as served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// The request's path (`/v2/NAME/blobs/sha256:HEX`).
    pub path: String,
    /// The request's `Range` header, if any (`bytes=N-`).
    pub range: Option<String>,
    /// The registry's status code (200, 206).
    pub status: u16,
    /// Body bytes passed on to the client.
    pub bytes: u64,
    /// A stalled response that the client closed (rather than the proxy).
    pub client_gave_up: bool,
    /// Whether the response is over (the client has all the proxy will send).
    pub done: bool,
}

/// A running proxy; its threads end with the test process.
pub struct BlobProxy {
    port: u16,
    served: Arc<Mutex<Vec<Served>>>,
}

/// How long a stalled response is held open at most.
const STALL_HOLD: Duration = Duration::from_secs(60);

impl BlobProxy {
    /// Proxies to the registry on `127.0.0.1:upstream`; `digest`
    /// (`sha256:HEX`) is the blob it watches (`sha256:` alone watches every
    /// blob: a counter of what a registry serves).
    pub fn start(upstream: u16, digest: &str, fault: BlobFault) -> anyhow::Result<BlobProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let served = Arc::new(Mutex::new(Vec::new()));
        let (log, blob) = (served.clone(), format!("/blobs/{digest}"));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (log, blob) = (log.clone(), blob.clone());
                std::thread::spawn(move || {
                    let _ = serve(client, upstream, &blob, fault, &log);
                });
            }
        });
        Ok(BlobProxy { port, served })
    }

    /// `127.0.0.1:PORT`, to use as the registry part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every response of the watched blob so far, in order.
    pub fn served(&self) -> Vec<Served> {
        self.served.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Reads an HTTP head (up to the empty line) as lines without their CRLF.
fn read_head(reader: &mut impl BufRead) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            anyhow::bail!("connection closed in the head");
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line);
    }
}

fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().skip(1).find_map(|h| {
        let (k, v) = h.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn serve(client: TcpStream, upstream: u16, blob: &str, fault: BlobFault, log: &Mutex<Vec<Served>>) -> anyhow::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let request = read_head(&mut from_client)?;
    let request_line = request.first().cloned().unwrap_or_default();
    let mut words = request_line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let watched = method == "GET" && path.contains(blob);
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    let mut head = format!("{request_line}\r\n");
    for h in request.iter().skip(1) {
        let name = h.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if name != "connection" && name != "keep-alive" {
            head.push_str(&format!("{h}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    up.write_all(head.as_bytes())?;
    // A request body (pushes, token posts): as long as it says.
    let body_len: u64 = header(&request, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    std::io::copy(&mut (&mut from_client).take(body_len), &mut up)?;

    let mut from_up = BufReader::new(up);
    let response = read_head(&mut from_up)?;
    let status: u16 = response
        .first()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut client = client;
    if !watched || !(200..300).contains(&status) {
        client.write_all(format!("{}\r\n\r\n", response.join("\r\n")).as_bytes())?;
        std::io::copy(&mut from_up, &mut client)?;
        return Ok(());
    }
    let index = {
        let mut served = log.lock().map_err(|_| anyhow::anyhow!("log poisoned"))?;
        served.push(Served {
            path: path.to_string(),
            range: header(&request, "range").map(String::from),
            status,
            bytes: 0,
            client_gave_up: false,
            done: false,
        });
        served.len() - 1
    };
    let update = |f: &dyn Fn(&mut Served)| {
        if let Some(s) = log.lock().ok().as_mut().and_then(|s| s.get_mut(index)) {
            f(s);
        }
    };
    let limit = match fault {
        BlobFault::Stall { after, times } if index < times => Some(after),
        _ => None,
    };
    if let BlobFault::Hold(delay) = fault {
        std::thread::sleep(delay);
    }
    let chunked = fault == BlobFault::EndAfterBody;
    let mut out_head = String::new();
    for (n, h) in response.iter().enumerate() {
        let name = h.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if n > 0 && chunked && (name == "content-length" || name == "transfer-encoding") {
            continue;
        }
        out_head.push_str(&format!("{h}\r\n"));
    }
    if chunked {
        out_head.push_str("Transfer-Encoding: chunked\r\n");
    }
    out_head.push_str("\r\n");
    client.write_all(out_head.as_bytes())?;

    let mut buf = vec![0u8; 64 << 10];
    let mut sent = 0u64;
    loop {
        let room = limit.map_or(buf.len() as u64, |l| l.saturating_sub(sent)).min(buf.len() as u64);
        if room == 0 {
            break;
        }
        let n = match from_up.read(&mut buf[..room as usize]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if chunked {
            client.write_all(format!("{n:x}\r\n").as_bytes())?;
            client.write_all(&buf[..n])?;
            client.write_all(b"\r\n")?;
        } else {
            client.write_all(&buf[..n])?;
        }
        sent += n as u64;
        update(&|s| s.bytes = sent);
    }
    client.flush()?;
    if limit.is_some() {
        // Stalled: nothing more on this connection; see who gives up first.
        client.set_read_timeout(Some(Duration::from_millis(200)))?;
        let start = Instant::now();
        let mut byte = [0u8; 1];
        while start.elapsed() < STALL_HOLD {
            match client.read(&mut byte) {
                Ok(0) => {
                    update(&|s| s.client_gave_up = true);
                    break;
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                _ => {
                    update(&|s| s.client_gave_up = true);
                    break;
                }
            }
        }
    }
    update(&|s| s.done = true);
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}
