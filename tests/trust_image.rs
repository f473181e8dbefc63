//! Signed images against a real docker-registry on 127.0.0.1: `iguana pull
//! --trust-dir` and `iguana verify` (the built binary) with signatures made
//! by an independent signer (testkit's `cosign_sign.py`, Python
//! `cryptography`) and attached the three ways cosign does. The referrers
//! API, which distribution 2.8 lacks, comes from testkit's ReferrersFront.

#![allow(clippy::tests_outside_test_module)]

use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::Path;
use testkit::cosign::Signer;
use testkit::{Layer, ReferrersFront, Registry};

const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const BIN: &str = env!("CARGO_BIN_EXE_iguana");

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Pushes a one-layer image `name:tag` whose file says `content`; returns
/// the reference and its manifest digest D.
fn image(registry: &Registry, name_tag: &str, content: &str) -> (String, String) {
    let layer = Layer::new().file("hello", content, 0o755).tar().unwrap();
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Entrypoint": ["/hello"] },
        "rootfs": { "type": "layers", "diff_ids": [sha256(&layer)] },
    });
    let reference = registry.push_raw_image(name_tag, &[(layer, TAR)], &config).unwrap();
    let (name, tag) = name_tag.rsplit_once(':').unwrap();
    let d = registry.descriptor(name, tag).unwrap()["digest"].as_str().unwrap().to_string();
    (reference, d)
}

/// A trust directory holding `signer`'s public key.
fn trust_dir(signer: &Signer) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(signer.public_key(), dir.path().join("cosign.pub")).unwrap();
    dir
}

/// `iguana pull` with `--trust-dir`: success, output, and whether anything
/// of the image landed in the rootfs.
fn pull(reference: &str, trust: &Path, extra: &[&str]) -> (bool, String, bool) {
    let scratch = tempfile::tempdir().unwrap();
    let rootfs = scratch.path().join("rootfs");
    let host = reference.split('/').next().unwrap().to_string();
    let mut args = vec!["--insecure-registry", &host, "--trust-dir", trust.to_str().unwrap()];
    args.extend(extra);
    let (ok, out) = testkit::iguana_pull(BIN, reference, &rootfs, &args);
    let unpacked = rootfs.join("hello").exists();
    (ok, out, unpacked)
}

fn assert_accepted(reference: &str, trust: &Path, extra: &[&str], signed_at: &str) {
    let (ok, out, unpacked) = pull(reference, trust, extra);
    assert!(ok && unpacked, "{reference} not pulled: {out}");
    assert!(out.contains(&format!("signed by cosign.pub ({signed_at} on ")), "{out}");
}

/// The refusal line, and nothing of the image in the rootfs.
fn assert_refused(reference: &str, d: &str, trust: &Path, extra: &[&str], why: &str) {
    let (ok, out, unpacked) = pull(reference, trust, extra);
    assert!(!ok && !unpacked, "{reference} not refused: {out}");
    let line = format!("image {reference}: {d} refused: {why}");
    assert!(out.contains(&line), "expected {line:?} in:\n{out}");
    assert!(!out.contains("layer sha256:"), "a layer was fetched: {out}");
}

fn hex_of(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap()
}

#[test]
fn legacy_signature_accepted_and_checked() {
    let registry = Registry::start().unwrap();
    let signer = Signer::new().unwrap();
    let trust = trust_dir(&signer);
    let (reference, d) = image(&registry, "app:v1", "v1");
    let (payload, signature) = signer.legacy(&d, &reference).unwrap();
    registry.push_legacy_signatures("app", &d, &[(payload.clone(), Some(signature.clone()))]).unwrap();
    assert_accepted(&reference, trust.path(), &[], &format!("sha256-{}.sig", hex_of(&d)));

    // `iguana verify` makes the same check, keys from --key.
    let out = std::process::Command::new(BIN)
        .args(["verify", &reference, "--insecure-registry", &registry.host(), "--key"])
        .arg(signer.public_key())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("{reference}: {d} signed by ")), "{text}");

    // Re-tagged: app:v2 is another image; v1's signature copied onto it.
    let (v2, d2) = image(&registry, "app:v2", "v2");
    registry.push_legacy_signatures("app", &d2, &[(payload.clone(), Some(signature.clone()))]).unwrap();
    assert_refused(&v2, &d2, trust.path(), &[], &format!("signature is for {d} not {d2}"));

    // Tampered payload: one byte changed, the signature kept.
    let (v3, d3) = image(&registry, "app:v3", "v3");
    let (payload3, signature3) = signer.legacy(&d3, &v3).unwrap();
    let tampered = String::from_utf8(payload3.clone()).unwrap().replace("app:v3", "app:v4").into_bytes();
    assert_ne!(tampered, payload3);
    registry.push_legacy_signatures("app", &d3, &[(tampered, Some(signature3.clone()))]).unwrap();
    assert_refused(&v3, &d3, trust.path(), &[], "signature by an unknown key");

    // Annotation garbage, and no annotation at all.
    let (v5, d5) = image(&registry, "app:v5", "v5");
    let (payload5, _) = signer.legacy(&d5, &v5).unwrap();
    registry
        .push_legacy_signatures("app", &d5, &[(payload5.clone(), Some("%%% not base64 %%%".into())), (payload5, None)])
        .unwrap();
    assert_refused(
        &v5,
        &d5,
        trust.path(),
        &[],
        "signature annotation is not base64; signature layer has no dev.cosignproject.cosign/signature annotation",
    );
}

#[test]
fn unsigned_and_other_key_refused() {
    let registry = Registry::start().unwrap();
    let (signer, other) = (Signer::new().unwrap(), Signer::new().unwrap());
    let trust = trust_dir(&signer);
    let (reference, d) = image(&registry, "plain:v1", "plain");
    let hex = hex_of(&d);
    assert_refused(
        &reference,
        &d,
        trust.path(),
        &[],
        &format!("no signature found at referrers, sha256-{hex}, sha256-{hex}.sig"),
    );
    // Without keys nothing is checked (behaviour as before).
    let empty = tempfile::tempdir().unwrap();
    let (ok, out, unpacked) = pull(&reference, empty.path(), &[]);
    assert!(ok && unpacked && !out.contains("signed by"), "{out}");

    let (payload, signature) = other.legacy(&d, &reference).unwrap();
    registry.push_legacy_signatures("plain", &d, &[(payload, Some(signature))]).unwrap();
    assert_refused(&reference, &d, trust.path(), &[], "signature by an unknown key");
    let bundle = other.bundle(&d, &reference, None).unwrap();
    let desc = registry.push_bundle("plain", &d, &bundle).unwrap();
    registry.push_fallback_index("plain", &d, &[desc]).unwrap();
    assert_refused(&reference, &d, trust.path(), &[], "signature by an unknown key");
}

#[test]
fn bundle_through_referrers_api_accepted() {
    let registry = Registry::start().unwrap();
    let front = ReferrersFront::start(registry.port()).unwrap();
    let signer = Signer::new().unwrap();
    let trust = trust_dir(&signer);
    image(&registry, "app:v1", "v1");
    let d = registry.descriptor("app", "v1").unwrap()["digest"].as_str().unwrap().to_string();
    let reference = format!("{}/app:v1", front.host());
    let bundle = signer.bundle(&d, &reference, None).unwrap();
    let desc = registry.push_bundle("app", &d, &bundle).unwrap();
    // Unrelated referrers of another artifact type are filtered out.
    let mut sbom = desc.clone();
    sbom["artifactType"] = json!("application/spdx+json");
    front.attach("app", &d, sbom);
    let hex = hex_of(&d);
    assert_refused(&reference, &d, trust.path(), &[], &format!("no signature found at referrers, sha256-{hex}, sha256-{hex}.sig"));
    front.attach("app", &d, desc);
    assert_accepted(&reference, trust.path(), &[], "referrers");
}

#[test]
fn bundle_at_fallback_tag_accepted_attestation_refused() {
    let registry = Registry::start().unwrap();
    let signer = Signer::new().unwrap();
    let trust = trust_dir(&signer);
    let (reference, d) = image(&registry, "app:v1", "v1");
    // An attestation (signed by the trusted key, right subject) is not a signature.
    let slsa = signer.bundle(&d, &reference, Some("https://slsa.dev/provenance/v1")).unwrap();
    let attestation = registry.push_bundle("app", &d, &slsa).unwrap();
    registry.push_fallback_index("app", &d, std::slice::from_ref(&attestation)).unwrap();
    assert_refused(&reference, &d, trust.path(), &[], "bundle is an attestation (https://slsa.dev/provenance/v1), not a signature");
    let bundle = signer.bundle(&d, &reference, None).unwrap();
    let signature = registry.push_bundle("app", &d, &bundle).unwrap();
    registry.push_fallback_index("app", &d, &[attestation, signature]).unwrap();
    // distribution 2.8 answers the referrers API with 404, so oci-client
    // reads the fallback tag for that first place already.
    let (ok, out, unpacked) = pull(&reference, trust.path(), &[]);
    assert!(ok && unpacked && out.contains(&format!("{d} signed by cosign.pub")), "{out}");
}

#[test]
fn oversize_signature_manifest_refused() {
    let registry = Registry::start().unwrap();
    let signer = Signer::new().unwrap();
    let trust = trust_dir(&signer);
    let (reference, d) = image(&registry, "app:v1", "v1");
    let (payload, signature) = signer.legacy(&d, &reference).unwrap();
    // A valid signature, in a manifest padded past 128 KiB.
    let mut layers = vec![(payload.clone(), Some(signature))];
    for i in 0..400 {
        layers.push((format!("{{\"pad\":{i}}}").into_bytes(), Some("A".repeat(300))));
    }
    registry.push_legacy_signatures("app", &d, &layers).unwrap();
    let (ok, out, _) = pull(&reference, trust.path(), &[]);
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("image {reference}: {d} refused: signature manifest sha256-{}.sig is ", hex_of(&d))), "{out}");
    assert!(out.contains("bytes, more than 131072"), "{out}");
}

#[test]
fn mirror_serving_another_signature_refused() {
    let (origin, mirror) = (Registry::start().unwrap(), Registry::start().unwrap());
    let (signer, other) = (Signer::new().unwrap(), Signer::new().unwrap());
    let trust = trust_dir(&signer);
    let (reference, d) = image(&origin, "app:v1", "v1");
    let (payload, signature) = signer.legacy(&d, &reference).unwrap();
    origin.push_legacy_signatures("app", &d, &[(payload.clone(), Some(signature.clone()))]).unwrap();
    let via_mirror = format!("{}={}", origin.host(), mirror.host());
    let insecure = mirror.host();
    let extra = ["--mirror", &via_mirror, "--insecure-registry", &insecure];

    // The mirror serves another image under the tag, with its own signature.
    let (_, evil) = image(&mirror, "app:v1", "evil");
    let (bad_payload, bad_signature) = other.legacy(&evil, &reference).unwrap();
    mirror.push_legacy_signatures("app", &evil, &[(bad_payload, Some(bad_signature))]).unwrap();
    let hex = hex_of(&evil);
    let why = format!(
        "mirror {}: signature by an unknown key; origin {}: no signature found at referrers, sha256-{hex}, sha256-{hex}.sig",
        mirror.host(),
        origin.host()
    );
    assert_refused(&reference, &evil, trust.path(), &extra, &why);

    // The same image on the mirror with another key's signature, or with
    // none: the verdict is the origin's.
    let (_, dm) = image(&mirror, "app:v1", "v1");
    assert_eq!(d, dm, "the same image on both");
    let (ok, out, unpacked) = pull(&reference, trust.path(), &extra);
    assert!(ok && unpacked, "{out}");
    assert!(out.contains(&format!("manifest {d} from {}", mirror.host())), "{out}");
    assert!(out.contains(&format!("on {})", origin.host())), "{out}");
    let (other_payload, other_signature) = other.legacy(&d, &reference).unwrap();
    mirror.push_legacy_signatures("app", &d, &[(other_payload, Some(other_signature))]).unwrap();
    let (ok, out, unpacked) = pull(&reference, trust.path(), &extra);
    assert!(ok && unpacked && out.contains(&format!("on {})", origin.host())), "{out}");
    // A mirror serving the origin's signature is enough on its own.
    mirror.push_legacy_signatures("app", &d, &[(payload, Some(signature))]).unwrap();
    let (ok, out, unpacked) = pull(&reference, trust.path(), &extra);
    assert!(ok && unpacked && out.contains(&format!("on {})", mirror.host())), "{out}");
}

#[test]
fn index_digest_is_what_is_signed() {
    let registry = Registry::start().unwrap();
    let signer = Signer::new().unwrap();
    let trust = trust_dir(&signer);
    let (_, child) = image(&registry, "multi:amd64", "amd64");
    let arch = if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" };
    let reference = registry.push_index("multi:v1", &[("amd64", arch)]).unwrap();
    let d = registry.descriptor("multi", "v1").unwrap()["digest"].as_str().unwrap().to_string();
    // A signature of the platform manifest does not sign the index.
    let (payload, signature) = signer.legacy(&child, &reference).unwrap();
    registry.push_legacy_signatures("multi", &child, &[(payload, Some(signature))]).unwrap();
    let hex = hex_of(&d);
    assert_refused(&reference, &d, trust.path(), &[], &format!("no signature found at referrers, sha256-{hex}, sha256-{hex}.sig"));
    let (payload, signature) = signer.legacy(&d, &reference).unwrap();
    registry.push_legacy_signatures("multi", &d, &[(payload, Some(signature))]).unwrap();
    assert_accepted(&reference, trust.path(), &[], &format!("sha256-{hex}.sig"));
}

#[test]
fn digest_pinned_by_a_verified_workflow_needs_no_signature() {
    let registry = Registry::start().unwrap();
    let signer = Signer::new().unwrap();
    let trust = trust_dir(&signer);
    let (reference, d) = image(&registry, "app:v1", "v1");
    let (_, d2) = image(&registry, "app:v2", "v2");
    let pinned = format!("{}/app@{d}", registry.host());
    let flag = ["--pinned-by-verified-workflow"];
    let (ok, out, unpacked) = pull(&pinned, trust.path(), &flag);
    assert!(ok && unpacked && out.contains("pinned by the verified workflow"), "{out}");
    // The flag with a tag only: refused, a tag is not covered by the workflow.
    assert_refused(&reference, &d, trust.path(), &flag, "pinned by a verified workflow but the reference has no digest");
    // Tag and digest that disagree never pull the tag's manifest unverified.
    let both = format!("{}/app:v2@{d}", registry.host());
    let (ok, out, _) = pull(&both, trust.path(), &flag);
    assert!(ok, "{out}");
    assert!(!out.contains(&d2), "{out}");
}
