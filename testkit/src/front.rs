//! What the fronts that pass requests on to a real registry share
//! ([`crate::BrokenMirror`], [`crate::ReferrersFront`]): a listener on
//! 127.0.0.1, reading a request's head (the headers a registry needs),
//! forwarding it, and the head of the answer for the client.

use crate::http;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};

/// A request as a front reads it: method, path, and the headers that
/// matter to a registry (`accept`, `range`, `authorization`).
pub(crate) struct Request {
    pub method: String,
    pub path: String,
    headers: Vec<(String, String)>,
}

/// Binds 127.0.0.1:0 and serves each connection with `serve`, one after
/// the other, on a thread that ends with the test process; errors are
/// printed under `name`. Returns the port.
pub(crate) fn start(name: &'static str, serve: impl Fn(TcpStream) -> anyhow::Result<()> + Send + 'static) -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Err(err) = serve(stream) {
                eprintln!("{name}: {err:#}");
            }
        }
    });
    Ok(port)
}

/// The request line and headers of the next request on `client`.
pub(crate) fn read_request(client: &TcpStream) -> anyhow::Result<Request> {
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
    Ok(Request { method: method.to_string(), path: path.to_string(), headers })
}

impl Request {
    /// The registry on `127.0.0.1:backend`'s whole answer.
    pub fn forward(&self, backend: u16) -> anyhow::Result<http::Response> {
        let headers: Vec<(&str, String)> = self.headers.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        http::request(backend, &self.method, &self.path, &headers, b"")
    }

    /// The head of `resp` for the client: its headers less the connection
    /// ones, the length of its body (a HEAD keeps the registry's), and
    /// `connection: close`.
    pub fn head(&self, resp: &http::Response) -> String {
        let head_only = self.method == "HEAD";
        let mut head = format!("HTTP/1.1 {} X\r\n", resp.status);
        for (name, value) in &resp.headers {
            let keep = !matches!(name.as_str(), "connection" | "transfer-encoding") && (head_only || name != "content-length");
            if keep {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        if !head_only {
            head.push_str(&format!("content-length: {}\r\n", resp.body.len()));
        }
        head.push_str("connection: close\r\n\r\n");
        head
    }
}
