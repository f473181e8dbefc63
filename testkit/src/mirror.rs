//! A registry mirror that misbehaves, on 127.0.0.1: it forwards every
//! request to a real registry but breaks the download of every large blob
//! (a layer, not the manifest or config), either by closing the connection
//! half-way through the body or by answering 500.

use crate::http;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Blobs at least this large are broken; configs are smaller.
const BREAK_FROM: usize = 8 << 10;

/// How the mirror breaks a layer download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Breakage {
    /// Headers and half of the body, then the connection closes.
    Truncate,
    /// `500 Internal Server Error`.
    ServerError,
}

/// A running mirror; its thread ends with the test process.
pub struct BrokenMirror {
    port: u16,
    broken: Arc<AtomicUsize>,
}

impl BrokenMirror {
    /// Forwards to the registry on `127.0.0.1:backend`.
    pub fn start(backend: u16, breakage: Breakage) -> anyhow::Result<BrokenMirror> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let broken = Arc::new(AtomicUsize::new(0));
        let counter = broken.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(err) = forward(stream, backend, breakage, &counter) {
                    eprintln!("broken mirror: {err:#}");
                }
            }
        });
        Ok(BrokenMirror { port, broken })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many blob downloads it broke so far.
    pub fn broken(&self) -> usize {
        self.broken.load(Ordering::SeqCst)
    }
}

fn forward(
    mut client: TcpStream,
    backend: u16,
    breakage: Breakage,
    broken: &AtomicUsize,
) -> anyhow::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            if matches!(name.as_str(), "accept" | "range" | "authorization") {
                headers.push((name, value.trim().to_string()));
            }
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("GET"), parts.next().unwrap_or("/"));
    let headers: Vec<(&str, String)> = headers.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let resp = http::request(backend, method, path, &headers, b"")?;
    let is_layer = method == "GET" && path.contains("/blobs/sha256:") && resp.body.len() >= BREAK_FROM;
    if is_layer && breakage == Breakage::ServerError {
        broken.fetch_add(1, Ordering::SeqCst);
        client.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return Ok(());
    }
    let mut head = format!("HTTP/1.1 {} X\r\n", resp.status);
    for (name, value) in &resp.headers {
        let keep = !matches!(name.as_str(), "connection" | "transfer-encoding")
            && (method == "HEAD" || name != "content-length");
        if keep {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    if method != "HEAD" {
        head.push_str(&format!("content-length: {}\r\n", resp.body.len()));
    }
    head.push_str("connection: close\r\n\r\n");
    client.write_all(head.as_bytes())?;
    if is_layer {
        broken.fetch_add(1, Ordering::SeqCst);
        client.write_all(&resp.body[..resp.body.len() / 2])?;
        client.flush()?;
        client.shutdown(Shutdown::Both)?;
        return Ok(());
    }
    client.write_all(&resp.body)?;
    Ok(())
}
