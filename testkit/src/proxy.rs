//! A tiny HTTP proxy on 127.0.0.1 for iguana's proxy tests: `CONNECT
//! host:port` tunnels (HTTPS, and ureq's plain HTTP), and absolute-form
//! requests (`GET http://host:port/path`) forwarded as origin-form with
//! `Connection: close`. It only connects to 127.0.0.1 and counts what it
//! did, so a test can prove its traffic went through it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use anyhow::Context;

/// `cmd` without the host's proxy variables, so that only what iguana
/// hands its children (a proxy file named by `IGUANA_PROXY_FILE`) decides.
pub fn without_host_proxies(cmd: &mut std::process::Command) -> &mut std::process::Command {
    for name in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"] {
        cmd.env_remove(name);
    }
    cmd
}

/// A running proxy; the accept thread ends with the test process.
pub struct HttpProxy {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl HttpProxy {
    pub fn start() -> anyhow::Result<HttpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || {
                    let _ = serve(client, &log);
                });
            }
        });
        Ok(HttpProxy { port, seen })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request line the proxy handled: `CONNECT 127.0.0.1:5000` or
    /// `GET http://127.0.0.1:5000/v2/...`.
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

fn serve(client: TcpStream, log: &Mutex<Vec<String>>) -> anyhow::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut head = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        head.push(h);
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if let Ok(mut seen) = log.lock() {
        seen.push(format!("{method} {target}"));
    }
    let mut client = client;
    let (authority, request) = if method == "CONNECT" {
        (target.to_string(), None)
    } else {
        let rest = target.strip_prefix("http://").context("not absolute-form")?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        for h in head.iter().filter(|h| {
            let name = h.split(':').next().unwrap_or("").to_ascii_lowercase();
            !["connection", "proxy-connection", "proxy-authorization", "keep-alive"].contains(&name.as_str())
        }) {
            req.push_str(h);
        }
        req.push_str("Connection: close\r\n\r\n");
        (authority.to_string(), Some(req))
    };
    if !authority.starts_with("127.0.0.1:") {
        client.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return Ok(());
    }
    let mut upstream = TcpStream::connect(&authority)?;
    match request {
        None => client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?,
        Some(req) => upstream.write_all(req.as_bytes())?,
    }
    // Bytes the reader already buffered belong to the upstream.
    let buffered = reader.buffer().to_vec();
    upstream.write_all(&buffered)?;
    let (mut up_read, mut client_write) = (upstream.try_clone()?, client.try_clone()?);
    let down = std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_read, &mut client_write);
        let _ = client_write.shutdown(Shutdown::Write);
    });
    let mut client_read = reader.into_inner();
    let mut buf = [0u8; 16 << 10];
    loop {
        match client_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if upstream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = upstream.shutdown(Shutdown::Write);
    let _ = down.join();
    Ok(())
}
