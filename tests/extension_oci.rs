//! `rd.iguana.extensions=oci:REF`, the pull child's part, against a real
//! docker-registry on 127.0.0.1: the child PID 1 runs (`iguana pull
//! --max-unpacked --signer-out`, the built binary) pulls an extension tree
//! into a directory and reports the key that signed it; with keys it
//! refuses an unsigned image and one signed by another key; an image past
//! the cap is refused, stopping at the cap while it unpacks. Signatures by
//! testkit's `cosign_sign.py` (Python `cryptography`), not our verifier.

#![allow(clippy::tests_outside_test_module)]

use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::Path;
use testkit::cosign::Signer;
use testkit::{Layer, Registry};

const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const BIN: &str = env!("CARGO_BIN_EXE_iguana");
const RELEASE: &str = "usr/lib/extension-release.d/extension-release.fw";

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// An extension tree as a one-layer image (`blob` is the layer as pushed,
/// `tar` what it unpacks to); returns the reference and its digest.
fn push(registry: &Registry, name_tag: &str, tar: &[u8], blob: Vec<u8>, media_type: &str) -> (String, String) {
    let config = json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": { "type": "layers", "diff_ids": [sha256(tar)] },
    });
    let reference = registry.push_raw_image(name_tag, &[(blob, media_type)], &config).unwrap();
    let (name, tag) = name_tag.rsplit_once(':').unwrap();
    let digest = registry.descriptor(name, tag).unwrap()["digest"].as_str().unwrap().to_string();
    (reference, digest)
}

fn extension(registry: &Registry, name_tag: &str) -> (String, String) {
    let tar = Layer::new()
        .dir("usr", 0o755)
        .dir("usr/lib", 0o755)
        .dir("usr/lib/extension-release.d", 0o755)
        .file(RELEASE, "ID=iguana\nIGUANA_LEVEL=1\n", 0o644)
        .dir("usr/lib/firmware", 0o755)
        .file("usr/lib/firmware/fw.bin", "firmware", 0o644)
        .tar()
        .unwrap();
    push(registry, name_tag, &tar, tar.clone(), TAR)
}

/// What PID 1's pull gives: success, output, the tree's release file
/// (if any) and the signer file.
struct Pulled {
    ok: bool,
    out: String,
    release: Option<String>,
    signer: Option<String>,
}

fn pull(registry: &Registry, reference: &str, trust: &Path, max: u64) -> Pulled {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    let signer = dir.path().join("signer");
    let max = max.to_string();
    let host = registry.host();
    let args = [
        "--insecure-registry",
        &host,
        "--trust-dir",
        trust.to_str().unwrap(),
        "--max-unpacked",
        &max,
        "--signer-out",
        signer.to_str().unwrap(),
    ];
    let (ok, out) = testkit::iguana_pull(BIN, reference, &rootfs, &args);
    Pulled { ok, out, release: std::fs::read_to_string(rootfs.join(RELEASE)).ok(), signer: std::fs::read_to_string(&signer).ok() }
}

fn trust_dir(signer: &Signer) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(signer.public_key(), dir.path().join("cosign.pub")).unwrap();
    dir
}

const CAP: u64 = 64 << 20;

#[test]
fn an_extension_image_pulled_into_a_directory() {
    let registry = Registry::start().unwrap();
    let (reference, _) = extension(&registry, "ext/fw:1");
    let no_keys = tempfile::tempdir().unwrap();
    let got = pull(&registry, &reference, no_keys.path(), CAP);
    assert!(got.ok, "{}", got.out);
    assert_eq!(got.release.as_deref(), Some("ID=iguana\nIGUANA_LEVEL=1\n"));
    // No keys: nothing was checked, and the child says so with no signer.
    assert_eq!(got.signer.as_deref(), Some(""));
}

#[test]
fn with_keys_only_a_signed_extension_is_pulled() {
    let registry = Registry::start().unwrap();
    let (signer, other) = (Signer::new().unwrap(), Signer::new().unwrap());
    let trust = trust_dir(&signer);
    let (signed, d) = extension(&registry, "ext/signed:1");
    let (payload, signature) = signer.legacy(&d, &signed).unwrap();
    registry.push_legacy_signatures("ext/signed", &d, &[(payload, Some(signature))]).unwrap();
    let (unsigned, du) = extension(&registry, "ext/unsigned:1");
    // Same tree, another tag: the same digest would share the signature.
    let tar = Layer::new().file(RELEASE, "ID=iguana\nIGUANA_LEVEL=1\n", 0o644).tar().unwrap();
    let (by_other, dother) = push(&registry, "ext/other:1", &tar, tar.clone(), TAR);
    let (payload, signature) = other.legacy(&dother, &by_other).unwrap();
    registry.push_legacy_signatures("ext/other", &dother, &[(payload, Some(signature))]).unwrap();

    struct Case<'a> {
        reference: &'a str,
        signer: Option<&'a str>,
        refusal: Option<String>,
    }
    let hex = |d: &str| d.strip_prefix("sha256:").unwrap().to_string();
    let cases = [
        Case { reference: &signed, signer: Some("cosign.pub"), refusal: None },
        Case {
            reference: &unsigned,
            signer: None,
            refusal: Some(format!("image {unsigned}: {du} refused: no signature found at referrers, sha256-{h}, sha256-{h}.sig", h = hex(&du))),
        },
        Case { reference: &by_other, signer: None, refusal: Some(format!("image {by_other}: {dother} refused: signature by an unknown key")) },
    ];
    for case in cases {
        let got = pull(&registry, case.reference, trust.path(), CAP);
        assert_eq!(got.ok, case.refusal.is_none(), "{}: {}", case.reference, got.out);
        assert_eq!(got.signer.as_deref(), case.signer, "{}: {}", case.reference, got.out);
        assert_eq!(got.release.is_some(), case.refusal.is_none(), "{}", case.reference);
        if let Some(line) = case.refusal {
            assert!(got.out.contains(&line), "expected {line:?} in:\n{}", got.out);
            assert!(!got.out.contains("layer sha256:"), "a layer was fetched: {}", got.out);
        }
    }
}

#[test]
fn an_oversize_extension_is_refused() {
    let registry = Registry::start().unwrap();
    let no_keys = tempfile::tempdir().unwrap();
    let cap: u64 = 1 << 20;
    // 8 MiB of zeros, gzipped to a few KiB: only the unpacking can tell.
    // The cap stops the writing in "big"; "after" is never reached.
    let tar = Layer::new().file(RELEASE, "ID=iguana\n", 0o644).file("big", vec![0u8; 8 << 20], 0o644).file("after", "x", 0o644).tar().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let blob = gz.finish().unwrap();
    assert!((blob.len() as u64) < cap / 8, "the blob is small: {}", blob.len());
    let (bomb, _) = push(&registry, "ext/bomb:1", &tar, blob, TAR_GZIP);
    let got = pull(&registry, &bomb, no_keys.path(), cap);
    assert!(!got.ok && got.release.is_none(), "{}", got.out);
    for part in [format!("image {bomb}: unpacking stopped at {cap} bytes (--max-unpacked)"), "entry \"big\"".into(), format!("more than {cap} bytes to unpack")] {
        assert!(got.out.contains(&part), "expected {part:?} in:\n{}", got.out);
    }
    // Blobs larger than the cap are refused before they are downloaded.
    let noise: Vec<u8> = (0..(2u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let tar = Layer::new().file("noise", noise, 0o644).tar().unwrap();
    let (large, _) = push(&registry, "ext/large:1", &tar, tar.clone(), TAR);
    let got = pull(&registry, &large, no_keys.path(), cap);
    assert!(!got.ok, "{}", got.out);
    let line = format!("image {large}: its blobs are more than {cap} bytes (--max-unpacked)");
    assert!(got.out.contains(&line), "expected {line:?} in:\n{}", got.out);
    assert!(!got.out.contains("layer sha256:"), "a layer was fetched: {}", got.out);
    // Under the cap, the same pull works.
    let got = pull(&registry, &large, no_keys.path(), CAP);
    assert!(got.ok, "{}", got.out);
}
