//! A static file server on 127.0.0.1 for the VM tests: what a site's image
//! or workflow server would be, reached by guests at 10.0.2.2:PORT. GET
//! only, one request per connection, 404 for unknown paths.

use anyhow::Context;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// Files by path (`/good/rootfs.tar.lz4`), served from a thread that lives
/// as long as the process.
pub struct FileServer {
    port: u16,
    files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl FileServer {
    /// Binds a free port on 127.0.0.1 and starts serving (nothing yet).
    pub fn start() -> anyhow::Result<FileServer> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let files: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
        let served = Arc::clone(&files);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let body = request_path(&head)
                    .and_then(|path| served.lock().ok()?.get(path).cloned());
                let (status, body) = match body {
                    Some(body) => ("200 OK", body),
                    None => ("404 Not Found", b"not found\n".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        Ok(FileServer { port, files })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves `body` at `path` from now on.
    pub fn add(&self, path: &str, body: impl Into<Vec<u8>>) {
        if let Ok(mut files) = self.files.lock() {
            files.insert(path.to_owned(), body.into());
        }
    }
}

/// The path of a `GET PATH HTTP/1.x` request line.
fn request_path(head: &str) -> Option<&str> {
    let mut words = head.lines().next()?.split_whitespace();
    match (words.next(), words.next()) {
        (Some("GET"), Some(path)) => Some(path),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(head: &str, expected: Option<&str>) {
        assert_eq!(request_path(head), expected, "{head:?}");
    }

    #[test]
    fn request_paths() {
        check("GET /good/rootfs.tar.lz4 HTTP/1.1\r\nHost: x\r\n\r\n", Some("/good/rootfs.tar.lz4"));
        check("POST /x HTTP/1.1\r\n", None);
        check("", None);
        check("GET\r\n", None);
    }

    #[test]
    fn serves_files_and_404() {
        let server = FileServer::start().unwrap();
        server.add("/a.txt", "hello");
        let ok = crate::http::request(server.port(), "GET", "/a.txt", &[], b"").unwrap();
        assert_eq!((ok.status, ok.body.as_slice()), (200, &b"hello"[..]));
        let missing = crate::http::request(server.port(), "GET", "/b.txt", &[], b"").unwrap();
        assert_eq!(missing.status, 404);
    }
}
