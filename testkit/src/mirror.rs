//! A registry mirror that misbehaves, on 127.0.0.1: it forwards every
//! request to a real registry but breaks the download of every large blob
//! (a layer, not the manifest or config), either by closing the connection
//! half-way through the body or by answering 500.

use crate::front;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
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
        let broken = Arc::new(AtomicUsize::new(0));
        let counter = broken.clone();
        let port = front::start("broken mirror", move |stream| forward(stream, backend, breakage, &counter))?;
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
    let request = front::read_request(&client)?;
    let resp = request.forward(backend)?;
    let is_layer = request.method == "GET" && request.path.contains("/blobs/sha256:") && resp.body.len() >= BREAK_FROM;
    if is_layer && breakage == Breakage::ServerError {
        broken.fetch_add(1, Ordering::SeqCst);
        client.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return Ok(());
    }
    client.write_all(request.head(&resp).as_bytes())?;
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
