//! Fetching an image's cosign signatures from the registry that served its
//! manifest, before any layer: the OCI 1.1 referrers API (artifact type
//! `application/vnd.dev.sigstore.bundle.v0.3+json`), the fallback index at
//! tag `sha256-<hex>`, then the legacy tag `sha256-<hex>.sig`, in that
//! order, stopping at the first signature that checks. Every fetched body
//! is capped as Talos caps it; the verdict is the pure
//! [`crate::trust::image`]'s, so a mirror serving the signatures can add
//! noise but never make an unsigned digest pass.

use super::manifest_get::GetError;
use super::registry::{Registry, RegistryError};
use crate::trust::bundle::ARTIFACT_TYPE;
use crate::trust::image::{Accepted, Candidate, Place, Refusal, Verdict};
use crate::trust::Keys;
use futures_util::StreamExt;
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageIndex, OciImageManifest};
use sha2::{Digest, Sha256};

/// Largest signature manifest or index read.
pub const MAX_MANIFEST: usize = 128 << 10;
/// Largest bundle or simple-signing payload read.
pub const MAX_BLOB: i64 = 1 << 20;
/// Most signature layers (or referrers) looked at per place.
pub const MAX_LAYERS: usize = 100;
/// Most bytes of bundles or payloads held per place (they are checked once
/// all are in): 100 layers of 1 MiB would be too much for an initrd's RAM.
pub const MAX_PLACE_BYTES: i64 = 8 << 20;

/// The media type of a legacy simple-signing payload layer.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding a legacy signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Looked everywhere; nothing signs D with a trusted key.
    #[error("{0}")]
    Refused(Refusal),
    /// The registry failed at a place (not a "not found"): no verdict.
    #[error("look up signatures at {place}: {source}")]
    Registry { place: String, source: RegistryError },
}

/// The signature of `d` (`sha256:<hex>`) by one of `keys`, or why there is none.
pub async fn verify(registry: &Registry, keys: &Keys, d: &str) -> Result<Accepted, Error> {
    let (client, reference, auth) = registry.oci();
    client.store_auth_if_needed(reference.resolve_registry(), auth).await;
    let mut verdict = Verdict::default();
    for place in Place::ALL {
        let candidates = match place {
            Place::Referrers => referrers(registry, d).await,
            Place::FallbackTag => fallback_tag(registry, d).await,
            Place::LegacyTag => legacy(registry, d).await,
        }
        .map_err(|source| Error::Registry { place: place.describe(d), source })?;
        if let Some(accepted) = verdict.add(keys, d, place, &candidates) {
            return Ok(accepted);
        }
    }
    Err(Error::Refused(verdict.refusal(d)))
}

fn oci_err(registry: &Registry, err: OciDistributionError) -> RegistryError {
    RegistryError::from_oci(registry.host(), err)
}

/// Whether an error means "nothing there".
fn not_found(err: &OciDistributionError) -> bool {
    match err {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code: 404, .. } => true,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown)),
        _ => false,
    }
}

/// A manifest by tag or digest, capped; `None` when there is none.
async fn manifest(registry: &Registry, at: &str, types: &[&str]) -> Result<Option<Vec<u8>>, RegistryError> {
    let (_, reference, _) = registry.oci();
    let target = if at.starts_with("sha256:") {
        reference.clone_with_digest(at.to_owned())
    } else {
        oci_client::Reference::with_tag(
            reference.registry().to_owned(),
            reference.repository().to_owned(),
            at.to_owned(),
        )
    };
    let what = format!("{}: fetch signature manifest {at}", registry.host());
    registry
        .retry()
        .run(&what, || async {
            // At most MAX_MANIFEST bytes are read, whatever the registry sends.
            match registry.manifest_get(&target, types, MAX_MANIFEST).await {
                Ok((body, _)) => Ok(Some(body)),
                Err(GetError::Oci(err)) if not_found(&err) => Ok(None),
                Err(GetError::Oci(err)) => Err(oci_err(registry, err)),
                Err(too_large) => Err(RegistryError::Response(format!("signature manifest {at} is {too_large}"))),
            }
        })
        .await
}

/// A blob of at most [`MAX_BLOB`] bytes, checked against its descriptor.
async fn blob(registry: &Registry, desc: &OciDescriptor) -> Result<Vec<u8>, String> {
    if desc.size < 0 || desc.size > MAX_BLOB {
        return Err(format!("signature blob {} is {} bytes, more than {MAX_BLOB}", desc.digest, desc.size));
    }
    let (client, reference, _) = registry.oci();
    let mut stream = client
        .pull_blob_stream(reference, desc)
        .await
        .map_err(|e| format!("fetch signature blob {}: {}", desc.digest, oci_err(registry, e)))?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("fetch signature blob {}: {e}", desc.digest))?;
        if out.len() + chunk.len() > desc.size as usize {
            return Err(format!("signature blob {} is larger than its descriptor says", desc.digest));
        }
        out.extend_from_slice(&chunk);
    }
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&out)));
    if out.len() as i64 != desc.size || actual != desc.digest {
        return Err(format!("signature blob {} does not match its descriptor", desc.digest));
    }
    Ok(out)
}

/// Whether `desc` fits in what is left of the place's byte budget.
fn within_budget(budget: &mut i64, desc: &OciDescriptor) -> bool {
    *budget -= desc.size.max(0);
    *budget >= 0
}

fn over_budget(at: &str) -> Candidate {
    Candidate::Unreadable(format!("signatures at {at} are more than {MAX_PLACE_BYTES} bytes"))
}

/// The bundles of an artifact manifest (cosign v3: one layer, the bundle).
async fn bundles_of(registry: &Registry, manifest_digest: &str, budget: &mut i64) -> Result<Vec<Candidate>, RegistryError> {
    let Some(body) = manifest(registry, manifest_digest, &[OCI_MANIFEST]).await? else {
        return Ok(vec![Candidate::Unreadable(format!("referrer {manifest_digest} is missing"))]);
    };
    let Ok(parsed) = serde_json::from_slice::<OciImageManifest>(&body) else {
        return Ok(vec![Candidate::Unreadable(format!("referrer {manifest_digest} is not an OCI manifest"))]);
    };
    let mut out = Vec::new();
    for layer in parsed.layers.iter().filter(|l| l.media_type == ARTIFACT_TYPE).take(MAX_LAYERS) {
        if !within_budget(budget, layer) {
            out.push(over_budget("referrer"));
            break;
        }
        out.push(match blob(registry, layer).await {
            Ok(json) => Candidate::Bundle(json),
            Err(why) => Candidate::Unreadable(why),
        });
    }
    Ok(out)
}

/// The bundle referrers listed in an index.
async fn from_index(registry: &Registry, index: &OciImageIndex, at: &str) -> Result<Vec<Candidate>, RegistryError> {
    let listed: Vec<_> = index
        .manifests
        .iter()
        .filter(|m| m.artifact_type.as_deref() == Some(ARTIFACT_TYPE))
        .collect();
    if listed.len() > MAX_LAYERS {
        return Ok(vec![Candidate::Unreadable(format!("{at} lists {} bundles, more than {MAX_LAYERS}", listed.len()))]);
    }
    let (mut out, mut budget) = (Vec::new(), MAX_PLACE_BYTES);
    for entry in listed {
        out.extend(bundles_of(registry, &entry.digest, &mut budget).await?);
        if budget < 0 || out.len() > MAX_LAYERS {
            break;
        }
    }
    Ok(out)
}

async fn referrers(registry: &Registry, d: &str) -> Result<Vec<Candidate>, RegistryError> {
    let (_, reference, _) = registry.oci();
    let subject = reference.clone_with_digest(d.to_owned());
    // The `sha256-<hex>` tag is read when the registry has no referrers
    // API (404), as oci-client does; the next place then reads it again,
    // harmlessly.
    let what = format!("{}: fetch referrers of {d}", registry.host());
    let index = registry
        .retry()
        .run(&what, || async {
            match registry.referrers_get(&subject, ARTIFACT_TYPE, MAX_MANIFEST).await {
                Ok(index) => Ok(Some(Ok(index))),
                Err(GetError::Oci(err)) if not_found(&err) => Ok(None),
                // Not read: a candidate that cannot be read, as at the tag.
                Err(too_large @ GetError::TooLarge(..)) => Ok(Some(Err(format!("referrers index of {d} is {too_large}")))),
                // A registry without the API may answer 400 or 405, not
                // 404: skipping a place can only lose an acceptance.
                Err(GetError::Oci(err)) => match oci_err(registry, err) {
                    err if err.is_transient() => Err(err),
                    err => {
                        tracing::debug!("{}: referrers API: {err}", registry.host());
                        Ok(None)
                    }
                },
            }
        })
        .await?;
    match index {
        Some(Ok(index)) => from_index(registry, &index, "referrers").await,
        Some(Err(why)) => Ok(vec![Candidate::Unreadable(why)]),
        None => Ok(Vec::new()),
    }
}

async fn fallback_tag(registry: &Registry, d: &str) -> Result<Vec<Candidate>, RegistryError> {
    let tag = Place::FallbackTag.describe(d);
    let body = match manifest(registry, &tag, &[OCI_INDEX]).await {
        Ok(Some(body)) => body,
        Ok(None) => return Ok(Vec::new()),
        Err(RegistryError::Response(why)) if why.starts_with("signature manifest") => {
            return Ok(vec![Candidate::Unreadable(why)]);
        }
        Err(err) => return Err(err),
    };
    match serde_json::from_slice::<OciImageIndex>(&body) {
        Ok(index) => from_index(registry, &index, &tag).await,
        Err(_) => Ok(vec![Candidate::Unreadable(format!("{tag} is not an OCI index"))]),
    }
}

async fn legacy(registry: &Registry, d: &str) -> Result<Vec<Candidate>, RegistryError> {
    let tag = Place::LegacyTag.describe(d);
    let body = match manifest(registry, &tag, &[OCI_MANIFEST, DOCKER_MANIFEST]).await {
        Ok(Some(body)) => body,
        Ok(None) => return Ok(Vec::new()),
        Err(RegistryError::Response(why)) if why.starts_with("signature manifest") => {
            return Ok(vec![Candidate::Unreadable(why)]);
        }
        Err(err) => return Err(err),
    };
    let Ok(parsed) = serde_json::from_slice::<OciImageManifest>(&body) else {
        return Ok(vec![Candidate::Unreadable(format!("{tag} is not an image manifest"))]);
    };
    let layers: Vec<_> = parsed.layers.iter().filter(|l| l.media_type == SIMPLE_SIGNING).collect();
    if layers.len() > MAX_LAYERS {
        return Ok(vec![Candidate::Unreadable(format!("{tag} has {} signature layers, more than {MAX_LAYERS}", layers.len()))]);
    }
    let (mut out, mut budget) = (Vec::new(), MAX_PLACE_BYTES);
    for layer in layers {
        if !within_budget(&mut budget, layer) {
            out.push(over_budget(&tag));
            break;
        }
        let signature = layer.annotations.as_ref().and_then(|a| a.get(SIGNATURE_ANNOTATION)).cloned();
        out.push(match blob(registry, layer).await {
            Ok(payload) => Candidate::Legacy { payload, signature },
            Err(why) => Candidate::Unreadable(why),
        });
    }
    Ok(out)
}

/// `iguana verify IMAGE`: resolves `image` as a pull would (mirrors
/// first) and checks its signature, fetching no config and no layer.
/// Returns the digest checked and who signed it.
pub async fn verify_image(opts: &super::PullOptions, image: &str) -> Result<(String, Accepted), super::Error> {
    let reference = super::reference::ImageRef::parse(image)
        .map_err(|source| super::Error::Reference { image: image.to_string(), source })?;
    let (sources, _, _, pulled) = super::resolve(opts, image, &reference).await?;
    match verify(&sources.registry, &opts.keys, &pulled).await {
        Ok(accepted) => Ok((pulled, accepted)),
        Err(err) => Err(super::Error::Unsigned { image: image.to_string(), digest: pulled, reason: err.to_string() }),
    }
}
