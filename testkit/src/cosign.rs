//! cosign signatures for tests, made by an independent signer
//! (`scripts/cosign_sign.py`, Python `cryptography`) and attached to images
//! in the real registry the three ways cosign does: the legacy
//! `sha256-<hex>.sig` tag, a bundle artifact whose `subject` is the image
//! (found through the referrers API, see [`crate::ReferrersFront`]), and the
//! referrers fallback index at tag `sha256-<hex>`.

use crate::{run, Registry};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const BUNDLE_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cosign_sign.py")
}

/// An ECDSA P-256 key pair, as `cosign generate-key-pair` makes (unencrypted).
pub struct Signer {
    dir: tempfile::TempDir,
}

impl Signer {
    pub fn new() -> anyhow::Result<Signer> {
        let dir = tempfile::tempdir()?;
        run(Command::new("python3").arg(script()).arg("keygen").arg(dir.path()))
            .context("python3 with the `cryptography` package (pip)")?;
        Ok(Signer { dir })
    }

    /// `cosign.pub`: PEM SubjectPublicKeyInfo.
    pub fn public_key(&self) -> PathBuf {
        self.dir.path().join("cosign.pub")
    }

    fn sign(&self, args: &[&str]) -> anyhow::Result<Value> {
        let out = Command::new("python3")
            .arg(script())
            .arg(args[0])
            .arg(self.dir.path().join("cosign.key"))
            .args(&args[1..])
            .output()?;
        if !out.status.success() {
            bail!("cosign_sign.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// A legacy simple-signing payload for `digest` and its base64 signature.
    pub fn legacy(&self, digest: &str, reference: &str) -> anyhow::Result<(Vec<u8>, String)> {
        let v = self.sign(&["legacy", digest, reference])?;
        let payload = decode(v["payload"].as_str().unwrap_or_default())?;
        Ok((payload, v["signature"].as_str().unwrap_or_default().to_string()))
    }

    /// A v0.3 bundle (DSSE, in-toto Statement) about `digest`; the
    /// predicate type defaults to cosign's signature predicate.
    pub fn bundle(&self, digest: &str, reference: &str, predicate: Option<&str>) -> anyhow::Result<Vec<u8>> {
        let mut args = vec!["bundle", digest, reference];
        args.extend(predicate);
        Ok(serde_json::to_vec(&self.sign(&args)?)?)
    }

    /// A v0.3 message-signature bundle of a file (`cosign sign-blob --bundle`).
    pub fn blob_bundle(&self, file: &Path) -> anyhow::Result<Vec<u8>> {
        Ok(serde_json::to_vec(&self.sign(&["blob", &file.display().to_string()])?)?)
    }
}

fn decode(b64: &str) -> anyhow::Result<Vec<u8>> {
    let out = Command::new("base64").arg("-d").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn()?;
    use std::io::Write;
    out.stdin.as_ref().context("stdin")?.write_all(b64.as_bytes())?;
    let out = out.wait_with_output()?;
    Ok(out.stdout)
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// `sha256-<hex>` of a digest.
pub fn digest_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

impl Registry {
    /// The digest, size and media type of `name:reference` (manifest or index).
    pub fn descriptor(&self, name: &str, reference: &str) -> anyhow::Result<Value> {
        let path = format!("/v2/{name}/manifests/{reference}");
        let accept = format!("{OCI_MANIFEST}, {OCI_INDEX}, application/vnd.docker.distribution.manifest.v2+json");
        let resp = self.request("GET", &path, &[("Accept", accept)], b"")?;
        if resp.status != 200 {
            bail!("GET {path}: {}", resp.status);
        }
        Ok(json!({
            "mediaType": resp.header("content-type").unwrap_or(OCI_MANIFEST),
            "digest": sha256(&resp.body),
            "size": resp.body.len(),
        }))
    }

    fn empty_config(&self, name: &str) -> anyhow::Result<Value> {
        let digest = self.push_blob(name, b"{}")?;
        Ok(json!({"mediaType": EMPTY, "digest": digest, "size": 2}))
    }

    /// Pushes cosign's legacy signature image at tag `sha256-<hex>.sig`:
    /// one simple-signing layer per `(payload, signature annotation)`.
    pub fn push_legacy_signatures(&self, name: &str, digest: &str, layers: &[(Vec<u8>, Option<String>)]) -> anyhow::Result<()> {
        let mut descriptors = Vec::new();
        for (payload, signature) in layers {
            let blob = self.push_blob(name, payload)?;
            let mut d = json!({"mediaType": SIMPLE_SIGNING, "digest": blob, "size": payload.len()});
            if let Some(sig) = signature {
                d["annotations"] = json!({"dev.cosignproject.cosign/signature": sig});
            }
            descriptors.push(d);
        }
        let config = self.push_blob(name, b"{\"architecture\":\"\",\"os\":\"\",\"config\":{},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}")?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 72},
            "layers": descriptors,
        });
        self.put_manifest(name, &format!("{}.sig", digest_tag(digest)), OCI_MANIFEST, &serde_json::to_vec(&manifest)?)?;
        Ok(())
    }

    /// Pushes a bundle as cosign v3 attaches it: an artifact manifest
    /// (artifactType bundle, empty config, the bundle as its one layer,
    /// `subject` = the image), by digest. Returns its descriptor, as a
    /// referrers index lists it.
    pub fn push_bundle(&self, name: &str, subject: &str, bundle: &[u8]) -> anyhow::Result<Value> {
        let subject = self.descriptor(name, subject)?;
        let layer = self.push_blob(name, bundle)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": BUNDLE_TYPE,
            "config": self.empty_config(name)?,
            "layers": [{"mediaType": BUNDLE_TYPE, "digest": layer, "size": bundle.len()}],
            "subject": subject,
            "annotations": {"dev.sigstore.bundle.content": "dsse-envelope", "dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1"},
        });
        let body = serde_json::to_vec(&manifest)?;
        let digest = sha256(&body);
        self.put_manifest(name, &digest, OCI_MANIFEST, &body)?;
        Ok(json!({"mediaType": OCI_MANIFEST, "artifactType": BUNDLE_TYPE, "digest": digest, "size": body.len()}))
    }

    /// Pushes the referrers fallback index at tag `sha256-<hex>` listing `referrers`.
    pub fn push_fallback_index(&self, name: &str, digest: &str, referrers: &[Value]) -> anyhow::Result<()> {
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": referrers});
        self.put_manifest(name, &digest_tag(digest), OCI_INDEX, &serde_json::to_vec(&index)?)?;
        Ok(())
    }
}
