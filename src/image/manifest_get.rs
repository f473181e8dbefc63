//! `GET /v2/<repo>/manifests/<ref>` with a size bound of our own.
//!
//! oci-client 0.18's `pull_manifest_raw` reads a body whole before anyone
//! can look at its size: a registry serving a 1 GiB (or endless)
//! "manifest" would make the pull child hold all of it. Here the
//! `Content-Length` is checked first and the body is read in chunks that
//! stop at the caller's bound (4 MiB for an image manifest or index,
//! [`super::manifest::MAX_MANIFEST_SIZE`]; 128 KiB for a signature's,
//! [`super::signatures::MAX_MANIFEST`]). Authentication stays oci-client's (its
//! `/v2/` challenge and token exchange, once per registry); what comes
//! back is what `pull_manifest_raw` returns, errors included, so callers
//! keep their error handling.

use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OciImageIndex, OCI_IMAGE_INDEX_MEDIA_TYPE};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use sha2::{Digest, Sha256};

/// The `Authorization` header every manifest GET carries, decided once.
#[derive(Clone)]
pub(super) enum Authz {
    None,
    Header(String),
}

/// A reqwest client set up as oci-client's is (roots, proxy, timeouts).
pub(super) struct ManifestGet {
    http: reqwest::Client,
    /// `http` for the registries listed as insecure, else `https`.
    scheme: &'static str,
    authz: tokio::sync::OnceCell<Authz>,
}

/// Why a bounded GET gave nothing.
#[derive(Debug)]
pub(super) enum GetError {
    /// As oci-client would have said it (callers keep their handling).
    Oci(OciDistributionError),
    /// The body is over the bound: `"N bytes"` or `"larger"`, and the bound.
    TooLarge(String, usize),
}

impl From<OciDistributionError> for GetError {
    fn from(e: OciDistributionError) -> GetError {
        GetError::Oci(e)
    }
}

impl From<reqwest::Error> for GetError {
    fn from(e: reqwest::Error) -> GetError {
        GetError::Oci(e.into())
    }
}

impl std::fmt::Display for GetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GetError::Oci(e) => write!(f, "{e}"),
            GetError::TooLarge(size, max) => write!(f, "{size} than {max} bytes"),
        }
    }
}

type Result<T> = std::result::Result<T, GetError>;

impl ManifestGet {
    pub(super) fn new(http: reqwest::Client, plain_http: bool) -> ManifestGet {
        ManifestGet { http, scheme: if plain_http { "http" } else { "https" }, authz: tokio::sync::OnceCell::new() }
    }

    /// Body and digest of `manifests/<ref>` (at most `max` bytes), as
    /// oci-client's `pull_manifest_raw` would give them.
    pub(super) async fn get(
        &self,
        oci: &Client,
        reference: &Reference,
        auth: &RegistryAuth,
        accept: &[&str],
        max: usize,
    ) -> Result<(Vec<u8>, String)> {
        let at = reference.digest().or(reference.tag()).unwrap_or("latest");
        let (body, header) = self.fetch(oci, reference, auth, &format!("manifests/{at}"), accept, max).await?.ok()?;
        let digest = check_digest(&body, header.as_deref(), reference.digest())?;
        Ok((body, digest))
    }

    /// The referrers of `reference`'s digest of `artifact_type` (the OCI
    /// 1.1 API; a registry without it (404) is read at the tag schema
    /// `sha256-<hex>`, filtered here), as oci-client's `pull_referrers`,
    /// with each index at most `max` bytes.
    pub(super) async fn referrers(
        &self,
        oci: &Client,
        reference: &Reference,
        auth: &RegistryAuth,
        artifact_type: &str,
        max: usize,
    ) -> Result<OciImageIndex> {
        let digest = reference.digest().unwrap_or_default();
        let query = artifact_type.replace('+', "%2B").replace('/', "%2F");
        let path = format!("referrers/{digest}?artifactType={query}");
        let answer = self.fetch(oci, reference, auth, &path, &[OCI_IMAGE_INDEX_MEDIA_TYPE], max).await?;
        if answer.code == 404 {
            let tag = Reference::with_tag(reference.registry().to_owned(), reference.repository().to_owned(), digest.replace(':', "-"));
            let (body, _) = self.get(oci, &tag, auth, &[OCI_IMAGE_INDEX_MEDIA_TYPE], max).await?;
            let mut index = parse_index(&body)?;
            index.manifests.retain(|m| m.artifact_type.as_deref() == Some(artifact_type));
            return Ok(index);
        }
        let (body, _) = answer.ok()?;
        parse_index(&body)
    }

    /// `GET /v2/<repo>/<path>`, at most `max` bytes of body.
    async fn fetch(
        &self,
        oci: &Client,
        reference: &Reference,
        auth: &RegistryAuth,
        path: &str,
        accept: &[&str],
        max: usize,
    ) -> Result<Answer> {
        // As oci-client: a failed token exchange goes on without one (the
        // registry's 401 then says "unauthorized").
        let authz = self
            .authz
            .get_or_init(|| async {
                match oci.auth(reference, auth, RegistryOperation::Pull).await {
                    Ok(Some(token)) => Authz::Header(format!("Bearer {token}")),
                    // No token: Basic credentials go only after the
                    // registry's own 401 asks for them (below), never to
                    // an open registry (plain HTTP, as like as not).
                    Ok(None) | Err(_) => Authz::None,
                }
            })
            .await;
        let url = format!("{}://{}/v2/{}/{path}", self.scheme, reference.resolve_registry(), reference.repository());
        let send = |value: Option<&str>| {
            let request = self.http.get(&url).header("Accept", accept.join(", "));
            match value {
                Some(value) => request.header("Authorization", value),
                None => request,
            }
        };
        let header = match authz {
            Authz::Header(value) => Some(value.as_str()),
            Authz::None => None,
        };
        let mut response = send(header).send().await?;
        if let (None, RegistryAuth::Basic(user, password), true) = (header, auth, asks_for_basic(&response)) {
            use base64::Engine;
            let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            response = send(Some(&format!("Basic {pair}"))).send().await?;
        }
        let status = response.status();
        // A body over the bound is not read, whatever the status.
        if let Some(length) = response.content_length().filter(|&n| n > max as u64) {
            return Err(GetError::TooLarge(format!("{length} bytes, more"), max));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > max {
                return Err(GetError::TooLarge("larger".into(), max));
            }
            body.extend_from_slice(&chunk);
        }
        let digest = response.headers().get("Docker-Content-Digest").and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
        Ok(Answer { code: status.as_u16(), digest: digest.map(str::to_owned), body, url })
    }
}

/// A 401 whose `WWW-Authenticate` is a Basic challenge.
fn asks_for_basic(response: &reqwest::Response) -> bool {
    response.status() == reqwest::StatusCode::UNAUTHORIZED
        && response
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.trim_start().get(..5).is_some_and(|s| s.eq_ignore_ascii_case("basic"))))
}

/// An answer read whole within its bound.
struct Answer {
    code: u16,
    /// `Docker-Content-Digest`, when sent.
    digest: Option<String>,
    body: Vec<u8>,
    url: String,
}

impl Answer {
    /// Body and digest header of a 2xx; else the error oci-client gives.
    fn ok(self) -> std::result::Result<(Vec<u8>, Option<String>), GetError> {
        match self.code {
            200..=299 => Ok((self.body, self.digest)),
            code => Err(answer_error(code, &self.body, &self.url).into()),
        }
    }
}

fn parse_index(body: &[u8]) -> Result<OciImageIndex> {
    serde_json::from_slice(body).map_err(|e| OciDistributionError::ManifestParsingError(e.to_string()).into())
}

/// What oci-client makes of a non-2xx answer.
fn answer_error(code: u16, body: &[u8], url: &str) -> OciDistributionError {
    match code {
        401 => OciDistributionError::UnauthorizedError { url: url.to_owned() },
        400..=499 => match serde_json::from_slice(body) {
            Ok(envelope) => OciDistributionError::RegistryError { envelope, url: url.to_owned() },
            Err(_) => OciDistributionError::ServerError { code, url: url.to_owned(), message: String::from_utf8_lossy(body).into_owned() },
        },
        _ => OciDistributionError::ServerError { code, url: url.to_owned(), message: String::from_utf8_lossy(body).into_owned() },
    }
}

/// The body's sha256 must match the reference's digest and the registry's
/// `Docker-Content-Digest` when they are given; the digest is returned.
fn check_digest(body: &[u8], header: Option<&str>, reference: Option<&str>) -> std::result::Result<String, OciDistributionError> {
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(body)));
    for expected in [reference, header].into_iter().flatten() {
        if expected != actual {
            return Err(OciDistributionError::SpecViolationError(format!("manifest digest is {actual}, expected {expected}")));
        }
    }
    Ok(actual)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_must_match_what_was_asked_and_what_was_said() {
        let body = b"{}";
        let d = format!("sha256:{}", hex::encode(Sha256::digest(body)));
        let other = format!("sha256:{}", "0".repeat(64));
        // (header, reference digest, accepted)
        let cases = [
            (None, None, true),
            (Some(d.as_str()), None, true),
            (None, Some(d.as_str()), true),
            (Some(d.as_str()), Some(d.as_str()), true),
            (Some(other.as_str()), None, false),
            (None, Some(other.as_str()), false),
            (Some(d.as_str()), Some(other.as_str()), false),
        ];
        for (header, reference, accepted) in cases {
            let got = check_digest(body, header, reference);
            assert_eq!(got.is_ok(), accepted, "{header:?} {reference:?}");
            if let Ok(digest) = got {
                assert_eq!(digest, d);
            }
        }
    }

    #[test]
    fn answers_become_the_errors_oci_client_gives() {
        let envelope = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
        assert!(matches!(answer_error(404, envelope, "u"), OciDistributionError::RegistryError { .. }));
        assert!(matches!(answer_error(404, b"nope", "u"), OciDistributionError::ServerError { code: 404, .. }));
        assert!(matches!(answer_error(401, b"", "u"), OciDistributionError::UnauthorizedError { .. }));
        assert!(matches!(answer_error(503, b"", "u"), OciDistributionError::ServerError { code: 503, .. }));
    }
}
