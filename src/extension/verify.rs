//! Whether an extension is signed by a trusted key (`src/trust/`).
//!
//! - `NAME.raw`: a detached `NAME.raw.sig` beside it (base64, as
//!   `cosign sign-blob --key` writes it, or `openssl dgst -sha256 -sign`
//!   piped through base64), else a `NAME.raw.sigstore.json` beside it (a
//!   sigstore bundle with a messageSignature, `cosign sign-blob --bundle`,
//!   see `src/trust/bundle.rs`), else a `SHA256SUMS` beside it whose
//!   `SHA256SUMS.sig` verifies and which lists the image's digest (the
//!   systemd/Flatcar layout; the image is then hashed as a stream).
//! - a tree from an appended cpio, `extensions/NAME/`: the cpio carries
//!   `extensions/NAME.SHA256SUMS` (every regular file of the tree, paths
//!   relative to it) and `extensions/NAME.SHA256SUMS.sig`; a file not
//!   listed, listed but missing or different, or anything but files and
//!   directories refuses the tree.
//!
//! Parsing `SHA256SUMS` and comparing are pure; the file reads are bounded.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::trust::Keys;

/// A signature or checksum file larger than this is not one.
const SMALL_MAX: u64 = 1 << 20;
/// A signed image read whole for a detached signature (ring verifies a
/// message in memory): no larger than a fetched one may be.
const IMAGE_MAX: u64 = super::FETCH_MAX;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unverified {
    #[error("unsigned: no {0}")]
    Unsigned(String),
    #[error("{file}: the signature does not verify against the trusted keys")]
    BadSignature { file: String },
    #[error("{file}: {what}")]
    Read { file: String, what: String },
    #[error("SHA256SUMS does not list {0}")]
    NotListed(String),
    #[error("{file}: its SHA-256 is not the one SHA256SUMS lists")]
    Digest { file: String },
    #[error("{0} is in the tree but not in its SHA256SUMS")]
    Extra(String),
    #[error("{0}: not a regular file or directory, which a signed tree may not carry")]
    Special(String),
    #[error("{file}: {why}")]
    Bundle { file: String, why: String },
}

/// `SHA256SUMS` lines: `HEX  NAME` or `HEX *NAME` (binary mode); lines
/// that are neither are skipped.
pub fn parse_sums(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((hex, name)) = line.split_once(' ') else { continue };
        let name = name.strip_prefix(' ').or_else(|| name.strip_prefix('*')).unwrap_or(name);
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) && !name.is_empty() {
            out.insert(name.to_string(), hex.to_ascii_lowercase());
        }
    }
    out
}

/// Which listed files are missing or differ, and which present files are
/// not listed, given the files found with their digests.
pub fn compare(sums: &BTreeMap<String, String>, found: &BTreeMap<String, String>) -> Result<(), Unverified> {
    for (name, digest) in found {
        match sums.get(name) {
            None => return Err(Unverified::Extra(name.clone())),
            Some(want) if want != digest => return Err(Unverified::Digest { file: name.clone() }),
            Some(_) => {}
        }
    }
    if let Some(name) = sums.keys().find(|n| !found.contains_key(*n)) {
        return Err(Unverified::Read { file: name.clone(), what: "listed in SHA256SUMS but missing".into() });
    }
    Ok(())
}

fn read_small(path: &Path) -> Result<Vec<u8>, Unverified> {
    crate::fsutil::read_bounded(path, SMALL_MAX).map_err(|e| Unverified::Read { file: path.display().to_string(), what: crate::logging::chain(&e) })
}

fn check_signature(keys: &Keys, message: &[u8], sig: &Path) -> Result<String, Unverified> {
    let text = read_small(sig)?;
    keys.verify_base64(message, &String::from_utf8_lossy(&text))
        .map(|key| key.name.clone())
        .map_err(|_| Unverified::BadSignature { file: sig.display().to_string() })
}

/// SHA-256 of a file, streamed, in lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, Unverified> {
    let read_err = |e: std::io::Error| Unverified::Read { file: path.display().to_string(), what: e.to_string() };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = file.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The image whole, for a signature over its bytes.
fn read_image(image: &Path) -> Result<Vec<u8>, Unverified> {
    crate::fsutil::read_bounded(image, IMAGE_MAX).map_err(|e| Unverified::Read { file: image.display().to_string(), what: crate::logging::chain(&e) })
}

/// A `cosign sign-blob --bundle` bundle over `message`: its digest must be
/// the message's and its signature a trusted key's.
fn check_bundle(keys: &Keys, message: &[u8], bundle: &Path) -> Result<String, Unverified> {
    use crate::trust::bundle::{self, MessageError};
    let file = bundle.display().to_string();
    let parsed = bundle::parse(&read_small(bundle)?).map_err(|e| Unverified::Bundle { file: file.clone(), why: e.to_string() })?;
    match parsed.verify_message(keys, message) {
        Ok(key) => Ok(key.name.clone()),
        Err(MessageError::UnknownKey) => Err(Unverified::BadSignature { file }),
        Err(e) => Err(Unverified::Bundle { file, why: e.to_string() }),
    }
}

/// A `NAME.raw` at `image`: `NAME.raw.sig` beside it, else
/// `NAME.raw.sigstore.json`, else `SHA256SUMS` (+ `.sig`) beside it.
/// Returns the key that signed.
pub fn image(keys: &Keys, image: &Path) -> Result<String, Unverified> {
    let file_name = image.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let sig = PathBuf::from(format!("{}.sig", image.display()));
    if sig.is_file() {
        return check_signature(keys, &read_image(image)?, &sig);
    }
    let bundle = PathBuf::from(format!("{}.sigstore.json", image.display()));
    if bundle.is_file() {
        return check_bundle(keys, &read_image(image)?, &bundle);
    }
    let sums = image.with_file_name("SHA256SUMS");
    let sums_sig = image.with_file_name("SHA256SUMS.sig");
    if !sums.is_file() || !sums_sig.is_file() {
        return Err(Unverified::Unsigned(format!("{file_name}.sig, {file_name}.sigstore.json nor SHA256SUMS with SHA256SUMS.sig")));
    }
    let text = read_small(&sums)?;
    let key = check_signature(keys, &text, &sums_sig)?;
    let listed = parse_sums(&String::from_utf8_lossy(&text));
    let want = listed.get(&file_name).ok_or_else(|| Unverified::NotListed(file_name.clone()))?;
    if sha256_file(image)? != *want {
        return Err(Unverified::Digest { file: file_name });
    }
    Ok(key)
}

/// A tree at `root` (`extensions/NAME`) with `NAME.SHA256SUMS` and
/// `NAME.SHA256SUMS.sig` beside it.
pub fn tree(keys: &Keys, root: &Path, max_files: usize) -> Result<String, Unverified> {
    let name = root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let sums = root.with_file_name(format!("{name}.SHA256SUMS"));
    let sums_sig = root.with_file_name(format!("{name}.SHA256SUMS.sig"));
    if !sums.is_file() || !sums_sig.is_file() {
        return Err(Unverified::Unsigned(format!("{name}.SHA256SUMS with {name}.SHA256SUMS.sig beside extensions/{name}/")));
    }
    let text = read_small(&sums)?;
    let key = check_signature(keys, &text, &sums_sig)?;
    let mut found = BTreeMap::new();
    let mut todo = vec![String::new()];
    while let Some(dir) = todo.pop() {
        let entries = std::fs::read_dir(root.join(&dir)).map_err(|e| Unverified::Read { file: format!("{name}/{dir}"), what: e.to_string() })?;
        for entry in entries.flatten() {
            let rel = if dir.is_empty() { entry.file_name().to_string_lossy().into_owned() } else { format!("{dir}/{}", entry.file_name().to_string_lossy()) };
            let kind = entry.file_type().map_err(|e| Unverified::Read { file: rel.clone(), what: e.to_string() })?;
            if found.len() + todo.len() > max_files {
                return Err(Unverified::Read { file: name.clone(), what: format!("more than {max_files} files") });
            }
            if kind.is_dir() {
                todo.push(rel);
            } else if kind.is_file() {
                let digest = sha256_file(&root.join(&rel))?;
                found.insert(rel, digest);
            } else {
                return Err(Unverified::Special(rel));
            }
        }
    }
    compare(&parse_sums(&String::from_utf8_lossy(&text)), &found)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

    #[test]
    fn sums_files() {
        let text = format!("{A}  pvscsi.raw\n{B} *site.raw\nnot a line\n{A}\nabc  short.raw\n");
        let got = parse_sums(&text);
        let want: BTreeMap<String, String> =
            [("pvscsi.raw".to_string(), A.to_string()), ("site.raw".to_string(), B.to_lowercase())].into_iter().collect();
        assert_eq!(got, want);
    }

    #[test]
    fn comparing_a_tree_with_its_list() {
        let map = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>();
        let sums = map(&[("etc/a", A), ("usr/b", A)]);
        let cases: &[(&[(&str, &str)], Result<(), Unverified>)] = &[
            (&[("etc/a", A), ("usr/b", A)], Ok(())),
            (&[("etc/a", A), ("usr/b", A), ("etc/new", A)], Err(Unverified::Extra("etc/new".into()))),
            (&[("etc/a", A), ("usr/b", "00")], Err(Unverified::Digest { file: "usr/b".into() })),
            (&[("etc/a", A)], Err(Unverified::Read { file: "usr/b".into(), what: "listed in SHA256SUMS but missing".into() })),
        ];
        for (found, want) in cases {
            assert_eq!(compare(&sums, &map(found)), *want, "{found:?}");
        }
    }

    /// Signs `file` with openssl (not our verifier) into `sig` (base64).
    fn openssl_sign(key: &Path, file: &Path, sig: &Path) {
        let der = Command::new("openssl").args(["dgst", "-sha256", "-sign"]).arg(key).arg(file).output().unwrap();
        assert!(der.status.success());
        use base64::Engine as _;
        std::fs::write(sig, base64::engine::general_purpose::STANDARD.encode(der.stdout)).unwrap();
    }

    fn keypair(dir: &Path) -> (PathBuf, Keys) {
        std::fs::create_dir_all(dir).unwrap();
        let key = dir.join("key.pem");
        let out = Command::new("openssl").args(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out"]).arg(&key).output().unwrap();
        assert!(out.status.success());
        let pub_dir = dir.join("trust");
        std::fs::create_dir_all(&pub_dir).unwrap();
        let out = Command::new("openssl").args(["ec", "-pubout", "-in"]).arg(&key).arg("-out").arg(pub_dir.join("site.pub")).output().unwrap();
        assert!(out.status.success());
        (key, Keys::load_dir(&pub_dir).unwrap())
    }

    #[test]
    fn images_signed_by_openssl() {
        let tmp = tempfile::tempdir().unwrap();
        let (key, keys) = keypair(tmp.path());
        let (_, other_keys) = keypair(&tmp.path().join("other"));
        let dir = tmp.path().join("ext");
        std::fs::create_dir_all(&dir).unwrap();
        let raw = dir.join("pvscsi.raw");
        std::fs::write(&raw, b"an image").unwrap();
        assert_eq!(image(&keys, &raw), Err(Unverified::Unsigned("pvscsi.raw.sig, pvscsi.raw.sigstore.json nor SHA256SUMS with SHA256SUMS.sig".into())));
        // SHA256SUMS, signed.
        let sums = dir.join("SHA256SUMS");
        std::fs::write(&sums, format!("{}  pvscsi.raw\n", sha256_file(&raw).unwrap())).unwrap();
        openssl_sign(&key, &sums, &dir.join("SHA256SUMS.sig"));
        assert_eq!(image(&keys, &raw).unwrap(), "site.pub");
        assert!(matches!(image(&other_keys, &raw), Err(Unverified::BadSignature { .. })));
        std::fs::write(&raw, b"another image").unwrap();
        assert_eq!(image(&keys, &raw), Err(Unverified::Digest { file: "pvscsi.raw".into() }));
        // A detached signature takes precedence.
        openssl_sign(&key, &raw, &dir.join("pvscsi.raw.sig"));
        assert!(image(&keys, &raw).is_ok());
        assert!(matches!(image(&other_keys, &raw), Err(Unverified::BadSignature { .. })));
    }

    /// `testkit/scripts/cosign_sign.py` (Python `cryptography`, not our
    /// verifier): `keygen DIR` gives `DIR/cosign.key` and `cosign.pub`,
    /// `blob KEY FILE` a messageSignature bundle of FILE.
    fn cosign(args: &[&Path]) -> Vec<u8> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("testkit/scripts/cosign_sign.py");
        let out = Command::new("python3").arg(script).args(args).output().unwrap();
        assert!(out.status.success(), "cosign_sign.py: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    fn cosign_keys(dir: &Path) -> (PathBuf, Keys) {
        std::fs::create_dir_all(dir.join("trust")).unwrap();
        cosign(&[Path::new("keygen"), dir]);
        std::fs::copy(dir.join("cosign.pub"), dir.join("trust/cosign.pub")).unwrap();
        (dir.join("cosign.key"), Keys::load_dir(&dir.join("trust")).unwrap())
    }

    #[test]
    fn images_with_a_sigstore_bundle() {
        let tmp = tempfile::tempdir().unwrap();
        let (key, keys) = cosign_keys(&tmp.path().join("site"));
        let (_, other_keys) = cosign_keys(&tmp.path().join("other"));
        let dir = tmp.path().join("ext");
        std::fs::create_dir_all(&dir).unwrap();
        let (raw, other) = (dir.join("fw.raw"), dir.join("other.raw"));
        std::fs::write(&raw, b"an erofs image").unwrap();
        std::fs::write(&other, b"another image").unwrap();
        let bundle = cosign(&[Path::new("blob"), &key, &raw]);
        std::fs::write(dir.join("fw.raw.sigstore.json"), &bundle).unwrap();
        // The same bundle beside another file: it is for fw.raw's digest.
        std::fs::write(dir.join("other.raw.sigstore.json"), &bundle).unwrap();
        let sha = |p: &Path| sha256_file(p).unwrap();
        let bundle_file = |name: &str| dir.join(name).display().to_string();
        let cases: &[(&Path, &Keys, Result<String, Unverified>)] = &[
            (&raw, &keys, Ok("cosign.pub".into())),
            (&raw, &other_keys, Err(Unverified::BadSignature { file: bundle_file("fw.raw.sigstore.json") })),
            (
                &other,
                &keys,
                Err(Unverified::Bundle {
                    file: bundle_file("other.raw.sigstore.json"),
                    why: format!("bundle is for a file with SHA-256 {}, not {}", sha(&raw), sha(&other)),
                }),
            ),
        ];
        for (image_path, keys, want) in cases {
            assert_eq!(image(keys, image_path), *want, "{}", image_path.display());
        }
        // Not a bundle at all.
        std::fs::write(dir.join("fw.raw.sigstore.json"), b"{}").unwrap();
        assert_eq!(
            image(&keys, &raw),
            Err(Unverified::Bundle { file: bundle_file("fw.raw.sigstore.json"), why: "bundle is not JSON of a sigstore bundle".into() })
        );
        // A detached .sig is tried first.
        std::fs::write(dir.join("fw.raw.sig"), b"AAAA").unwrap();
        assert!(matches!(image(&keys, &raw), Err(Unverified::BadSignature { file }) if file.ends_with("fw.raw.sig")));
    }

    #[test]
    fn trees_signed_by_openssl() {
        let tmp = tempfile::tempdir().unwrap();
        let (key, keys) = keypair(tmp.path());
        let root = tmp.path().join("extensions/site");
        std::fs::create_dir_all(root.join("etc/iguana")).unwrap();
        std::fs::write(root.join("etc/iguana/control.yaml"), "jobs: {}\n").unwrap();
        let sums = tmp.path().join("extensions/site.SHA256SUMS");
        let digest = sha256_file(&root.join("etc/iguana/control.yaml")).unwrap();
        std::fs::write(&sums, format!("{digest}  etc/iguana/control.yaml\n")).unwrap();
        openssl_sign(&key, &sums, &tmp.path().join("extensions/site.SHA256SUMS.sig"));
        assert!(tree(&keys, &root, 100).is_ok());
        std::fs::write(root.join("etc/extra"), "x").unwrap();
        assert_eq!(tree(&keys, &root, 100), Err(Unverified::Extra("etc/extra".into())));
        std::fs::remove_file(root.join("etc/extra")).unwrap();
        std::os::unix::fs::symlink("/", root.join("etc/link")).unwrap();
        assert_eq!(tree(&keys, &root, 100), Err(Unverified::Special("etc/link".into())));
    }
}
