//! A CloudEvents sink on 127.0.0.1: what an operator's event receiver
//! (Knative, Argo Events, a small web service) is to iguana's reporter.
//! Guests reach it at `http://10.0.2.2:PORT`.
//!
//! ```no_run
//! let sink = testkit::EventReceiver::start(2).unwrap(); // 500 to the first 2 requests
//! let url = sink.url("10.0.2.2"); // rd.iguana.report_url=...
//! // ... boot ...
//! let types: Vec<String> = sink.events().iter().map(|e| e["type"].as_str().unwrap().to_string()).collect();
//! let log: Option<Vec<u8>> = sink.log("/logs/MACHINE/JOB");
//! ```
//!
//! Every request is recorded (`requests()`), answered or refused. POSTs
//! answered 2xx whose body is JSON are the accepted events (`events()`),
//! PUTs answered 2xx the logs (`logs()`, `log(path)`). HTTP/1.1, one request
//! per connection (`Connection: close`), a body needs `Content-Length` and
//! may be at most 16 MiB.

use anyhow::Context;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A body larger than this is refused with 413.
const MAX_BODY: usize = 16 << 20;

/// One request as the receiver saw it, with the status it answered.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names lower-case, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub status: u16,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    /// How many requests still get 500.
    failing: usize,
    requests: Vec<Request>,
}

/// The receiver; its thread lives as long as the process.
pub struct EventReceiver {
    port: u16,
    state: Arc<Mutex<State>>,
}

impl EventReceiver {
    /// Binds a free port on 127.0.0.1; the first `fail_first` requests (of
    /// any kind) are answered `500 Internal Server Error`, the rest `202`.
    pub fn start(fail_first: usize) -> anyhow::Result<EventReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(State { failing: fail_first, requests: Vec::new() }));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        Ok(EventReceiver { port, state })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://HOST:PORT`: the report_url for a guest (`10.0.2.2`) or a
    /// host process (`127.0.0.1`).
    pub fn url(&self, host: &str) -> String {
        format!("http://{host}:{}", self.port)
    }

    /// Every request so far, in arrival order, refused ones included.
    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().map(|s| s.requests.clone()).unwrap_or_default()
    }

    /// The accepted (2xx) POSTed events, parsed, in arrival order.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.status < 300)
            .filter_map(|r| serde_json::from_slice(&r.body).ok())
            .collect()
    }

    /// The accepted (2xx) PUTs: path and body, in arrival order.
    pub fn logs(&self) -> Vec<(String, Vec<u8>)> {
        self.requests().into_iter().filter(|r| r.method == "PUT" && r.status < 300).map(|r| (r.path, r.body)).collect()
    }

    /// The last accepted PUT body at `path`.
    pub fn log(&self, path: &str) -> Option<Vec<u8>> {
        self.logs().into_iter().rev().find(|(p, _)| p == path).map(|(_, body)| body)
    }

    /// Waits until an accepted event has `type` == `kind`, at most `limit`.
    pub fn wait_for_event(&self, kind: &str, limit: Duration) -> Option<serde_json::Value> {
        let until = Instant::now() + limit;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| e["type"] == kind) {
                return Some(e);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    let status = match read_request(&mut reader) {
        Ok(Some(request)) => {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            let status = if s.failing > 0 {
                s.failing -= 1;
                500
            } else {
                202
            };
            s.requests.push(Request { status, ..request });
            status
        }
        Ok(None) => 413,
        Err(_) => return,
    };
    let reason = match status {
        202 => "Accepted",
        413 => "Payload Too Large",
        _ => "Internal Server Error",
    };
    let _ = write!(writer, "HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

/// One request; `None` when its body is missing a length or too large.
fn read_request(reader: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or("").to_string(), words.next().unwrap_or("").to_string());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let length = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse::<usize>().ok());
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = match (length, chunked) {
        (Some(n), false) if n <= MAX_BODY => {
            let mut body = vec![0; n];
            reader.read_exact(&mut body)?;
            body
        }
        (None, false) => Vec::new(),
        _ => return Ok(None),
    };
    Ok(Some(Request { method, path, headers, body, status: 0 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_the_first_requests_then_records_events_and_logs() {
        let sink = EventReceiver::start(1).unwrap();
        let event = br#"{"specversion":"1.0","id":"a","type":"x"}"#;
        let json = [("Content-Type", "application/cloudevents+json".to_string())];
        let first = crate::http::request(sink.port(), "POST", "/", &json, event).unwrap();
        let second = crate::http::request(sink.port(), "POST", "/", &json, event).unwrap();
        let put = crate::http::request(sink.port(), "PUT", "/logs/m/job", &[], b"log lines\n").unwrap();
        assert_eq!((first.status, second.status, put.status), (500, 202, 202));
        assert_eq!(sink.requests().len(), 3);
        assert_eq!(sink.requests()[0].header("content-type"), Some("application/cloudevents+json"));
        assert_eq!(sink.events(), vec![serde_json::json!({"specversion":"1.0","id":"a","type":"x"})]);
        assert_eq!(sink.log("/logs/m/job").as_deref(), Some(&b"log lines\n"[..]));
        assert!(sink.wait_for_event("x", Duration::from_secs(1)).is_some());
        assert!(sink.wait_for_event("y", Duration::from_millis(200)).is_none());
    }
}
