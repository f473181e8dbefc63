//! A front for Debian's docker-registry (distribution 2.8), which has no
//! OCI 1.1 referrers API: it answers `GET /v2/<repo>/referrers/<digest>`
//! from the referrers a test attached, filtered by `?artifactType=` as the
//! distribution spec says, and passes every other request to the real
//! registry unchanged.

use crate::front;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

type Referrers = Arc<Mutex<HashMap<(String, String), Vec<Value>>>>;

pub struct ReferrersFront {
    port: u16,
    referrers: Referrers,
}

impl ReferrersFront {
    /// Fronts the registry on `127.0.0.1:backend`.
    pub fn start(backend: u16) -> anyhow::Result<ReferrersFront> {
        let referrers = Referrers::default();
        let shared = referrers.clone();
        let port = front::start("referrers front", move |stream| serve(stream, backend, &shared))?;
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
    let request = front::read_request(&client)?;
    let (method, path) = (request.method.as_str(), request.path.as_str());
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
    let resp = request.forward(backend)?;
    client.write_all(request.head(&resp).as_bytes())?;
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
