//! A front for Debian's docker-registry (distribution 2.8), which has no
//! OCI 1.1 referrers API: it answers `GET /v2/<repo>/referrers/<digest>`
//! from the referrers a test attached, filtered by `?artifactType=` as the
//! distribution spec says, and passes every other request to the real
//! registry unchanged.

use crate::http;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

type Referrers = Arc<Mutex<HashMap<(String, String), Vec<Value>>>>;

pub struct ReferrersFront {
    port: u16,
    referrers: Referrers,
}

impl ReferrersFront {
    /// Fronts the registry on `127.0.0.1:backend`.
    pub fn start(backend: u16) -> anyhow::Result<ReferrersFront> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let referrers = Referrers::default();
        let shared = referrers.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(err) = serve(stream, backend, &shared) {
                    eprintln!("referrers front: {err:#}");
                }
            }
        });
        Ok(ReferrersFront { port, referrers })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Lists `descriptor` (with its `artifactType`) as a referrer of
    /// `repo@subject`.
    pub fn attach(&self, repo: &str, subject: &str, descriptor: Value) {
        let mut map = self.referrers.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((repo.to_string(), subject.to_string())).or_default().push(descriptor);
    }
}

/// `(repo, digest, artifactType filter)` of a referrers request path.
fn referrers_request(path: &str) -> Option<(String, String, Option<String>)> {
    let (path, query) = path.split_once('?').map_or((path, None), |(p, q)| (p, Some(q)));
    let rest = path.strip_prefix("/v2/")?;
    let (repo, digest) = rest.rsplit_once("/referrers/")?;
    let filter = query.and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("artifactType="))
            .map(|v| v.replace("%2B", "+").replace("%2b", "+").replace("%2F", "/").replace("%2f", "/"))
    });
    Some((repo.to_string(), digest.to_string(), filter))
}

fn serve(mut client: TcpStream, backend: u16, referrers: &Referrers) -> anyhow::Result<()> {
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
    if method == "GET" {
        if let Some((repo, digest, filter)) = referrers_request(path) {
            let map = referrers.lock().unwrap_or_else(|e| e.into_inner());
            let listed: Vec<Value> = map
                .get(&(repo, digest))
                .into_iter()
                .flatten()
                .filter(|d| filter.as_deref().is_none_or(|t| d["artifactType"] == t))
                .cloned()
                .collect();
            let body = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": listed,
            }))?;
            let filtered = if filter.is_some() { "oci-filters-applied: artifactType\r\n" } else { "" };
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.oci.image.index.v1+json\r\n{filtered}content-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            client.write_all(head.as_bytes())?;
            client.write_all(&body)?;
            return Ok(());
        }
    }
    let headers: Vec<(&str, String)> = headers.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let resp = http::request(backend, method, path, &headers, b"")?;
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
    client.write_all(&resp.body)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referrers_paths() {
        let d = "sha256:ab";
        assert_eq!(referrers_request(&format!("/v2/a/b/referrers/{d}")), Some(("a/b".into(), d.into(), None)));
        assert_eq!(
            referrers_request(&format!("/v2/app/referrers/{d}?artifactType=application%2Fvnd.dev.sigstore.bundle.v0.3%2Bjson")),
            Some(("app".into(), d.into(), Some("application/vnd.dev.sigstore.bundle.v0.3+json".into())))
        );
        assert_eq!(referrers_request(&format!("/v2/app/manifests/{d}")), None);
    }
}
