//! Parsing what a registry sends for `GET /v2/NAME/manifests/REF`: an image
//! manifest or an image index (OCI or Docker schema 2), from bytes the
//! network gave, so it is one pure function, fuzzed (`fuzz/`).
//!
//! Checked here, before any field is used: the size, the schema version,
//! the media type, and that every digest that will become a file name or a
//! URL is a well-formed `sha256:HEX`. Registry-side checks (the body's own
//! digest) stay in [`super::registry`].

use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageIndex, OciImageManifest};

/// Largest manifest or index accepted: docker distribution's own limit.
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// The media types asked for, and the only ones accepted.
pub const MEDIA_TYPES: &[&str] = &[
    OCI_MANIFEST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    DOCKER_LIST,
];

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A parsed `manifests/REF` body.
#[derive(Debug)]
pub enum Manifest {
    /// Boxed: a manifest is ten times the size of the index variant.
    Image(Box<OciImageManifest>),
    Index(Vec<ImageIndexEntry>),
}

/// Why a body is not a manifest we use.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest of {0} bytes is larger than {MAX_MANIFEST_SIZE}")]
    TooLarge(usize),
    #[error("manifest is not JSON of a manifest or an index")]
    Json(#[source] serde_json::Error),
    #[error("manifest schemaVersion {0} is not 2")]
    SchemaVersion(i64),
    #[error("manifest media type {0:?} is not an image manifest or index")]
    MediaType(String),
    #[error("manifest descriptor digest {0:?} is not a sha256 digest")]
    Digest(String),
    #[error("manifest descriptor {digest} has a negative size {size}")]
    Size { digest: String, size: i64 },
}

/// The two fields every kind shares, read first to pick the kind.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Versioned {
    schema_version: i64,
    #[serde(default)]
    media_type: Option<String>,
}

/// Parses a manifest or an index. Without a `mediaType` field (it is
/// optional in OCI), a body with `manifests` is an index.
pub fn parse(body: &[u8]) -> Result<Manifest, ManifestError> {
    if body.len() > MAX_MANIFEST_SIZE {
        return Err(ManifestError::TooLarge(body.len()));
    }
    let versioned: Versioned = serde_json::from_slice(body).map_err(ManifestError::Json)?;
    if versioned.schema_version != 2 {
        return Err(ManifestError::SchemaVersion(versioned.schema_version));
    }
    let is_index = match versioned.media_type.as_deref() {
        Some(OCI_INDEX | DOCKER_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        Some(other) => return Err(ManifestError::MediaType(other.to_string())),
        None => {
            let value: serde_json::Value = serde_json::from_slice(body).map_err(ManifestError::Json)?;
            value.get("manifests").is_some()
        }
    };
    if is_index {
        let index: OciImageIndex = serde_json::from_slice(body).map_err(ManifestError::Json)?;
        for entry in &index.manifests {
            check(&entry.digest, entry.size)?;
        }
        Ok(Manifest::Index(index.manifests))
    } else {
        let manifest: OciImageManifest = serde_json::from_slice(body).map_err(ManifestError::Json)?;
        for desc in std::iter::once(&manifest.config).chain(&manifest.layers) {
            check_descriptor(desc)?;
        }
        Ok(Manifest::Image(Box::new(manifest)))
    }
}

fn check_descriptor(desc: &OciDescriptor) -> Result<(), ManifestError> {
    check(&desc.digest, desc.size)
}

fn check(digest: &str, size: i64) -> Result<(), ManifestError> {
    if super::reference::sha256_hex(digest).is_none() {
        return Err(ManifestError::Digest(digest.to_string()));
    }
    if size < 0 {
        return Err(ManifestError::Size { digest: digest.to_string(), size });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// `Ok(n)`: an image of n layers; `Ok(100 + n)`: an index of n entries.
    fn check_parse(body: &str, expected: Result<usize, &str>) {
        let got = parse(body.as_bytes()).map(|m| match m {
            Manifest::Image(m) => m.layers.len(),
            Manifest::Index(entries) => 100 + entries.len(),
        });
        assert_eq!(got.map_err(|e| e.to_string()), expected.map_err(String::from), "{body}");
    }

    #[test]
    fn manifests_and_indexes() {
        let image = |media: &str, digest: &str, size: i64| {
            format!(
                r#"{{"schemaVersion":2,{media}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D}","size":2}},
                "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{digest}","size":{size}}}]}}"#
            )
        };
        check_parse(&image(r#""mediaType":"application/vnd.oci.image.manifest.v1+json","#, D, 10), Ok(1));
        check_parse(&image("", D, 10), Ok(1));
        check_parse(&image(r#""mediaType":"application/vnd.docker.distribution.manifest.v2+json","#, D, 0), Ok(1));
        check_parse(
            &image("", "sha256:../../etc/passwd", 10),
            Err("manifest descriptor digest \"sha256:../../etc/passwd\" is not a sha256 digest"),
        );
        check_parse(&image("", D, -1), Err(&format!("manifest descriptor {D} has a negative size -1")));
        check_parse(
            &image(r#""mediaType":"application/vnd.cncf.helm.config.v1+json","#, D, 1),
            Err("manifest media type \"application/vnd.cncf.helm.config.v1+json\" is not an image manifest or index"),
        );
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":5,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        );
        check_parse(&index, Ok(101));
        check_parse(&index.replace(D, "md5:x"), Err("manifest descriptor digest \"md5:x\" is not a sha256 digest"));
        check_parse(r#"{"schemaVersion":1,"name":"x"}"#, Err("manifest schemaVersion 1 is not 2"));
        check_parse(r#"{"schemaVersion":2}"#, Err("manifest is not JSON of a manifest or an index"));
        check_parse("", Err("manifest is not JSON of a manifest or an index"));
        let huge = " ".repeat(MAX_MANIFEST_SIZE + 1);
        check_parse(&huge, Err(&format!("manifest of {} bytes is larger than {MAX_MANIFEST_SIZE}", MAX_MANIFEST_SIZE + 1)));
    }
}
