//! Signed files: a workflow (or any file) and the signature beside it, in
//! the two forms `cosign sign-blob --key` writes:
//!
//! - `FILE.sig`: the base64 ASN.1 signature cosign prints (the same bytes
//!   `openssl dgst -sha256 -sign KEY FILE | base64` makes); the raw DER
//!   `openssl dgst -sign` writes is accepted too (it can never be base64:
//!   its third byte is 0x02);
//! - `FILE.sigstore.json`: a sigstore bundle (cosign v3's default,
//!   `application/vnd.dev.sigstore.bundle.v0.3+json`) whose
//!   `messageSignature.messageDigest` must be the file's SHA-256 and whose
//!   signature must be over the file (parsed by [`super::bundle`], as image
//!   bundles are). Its transparency-log entry and
//!   timestamps are ignored: verification is offline and by key, like
//!   `cosign verify-blob --key K --insecure-ignore-tlog`.
//!
//! A file counts as signed when one of the trusted keys made the signature.
//! [`verify`] is pure; [`beside`] reads the signature files, bounded.

use std::path::{Path, PathBuf};

use super::bundle::{self, Bundle, BundleError};
use super::keys::{decode_base64, Keys, PublicKey};

/// The suffixes a signature beside a file has, in the order they are tried.
pub const SUFFIXES: [&str; 2] = [".sig", ".sigstore.json"];
/// A `.sig` larger than this is not one signature.
pub const SIG_LIMIT: u64 = 64 << 10;
/// A bundle larger than this is refused (Talos's cap for cosign bundles).
pub const BUNDLE_LIMIT: u64 = 1 << 20;

/// A signature of a file, as found beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// A `.sig` file's bytes: base64 text or raw DER.
    Sig(Vec<u8>),
    /// A `.sigstore.json` file's bytes.
    Bundle(Vec<u8>),
}

impl Signature {
    /// The signature in the form its file name says (`FILE.sig` or
    /// `FILE.sigstore.json`).
    pub fn for_suffix(suffix: &str, bytes: Vec<u8>) -> Signature {
        if suffix == SUFFIXES[1] { Signature::Bundle(bytes) } else { Signature::Sig(bytes) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no signature: neither {0}")]
    Missing(String),
    #[error("read signature {path}")]
    Read { path: PathBuf, #[source] source: crate::fsutil::Error },
    #[error("empty signature")]
    Empty,
    #[error("signature is neither base64 nor DER")]
    Encoding,
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("bundle holds a DSSE envelope (an attestation), not a signature of the file")]
    Dsse,
    #[error("bundle is for {bundle}, the file is {file}")]
    DigestMismatch { bundle: String, file: String },
    #[error("signature by an unknown key")]
    UnknownKey,
}

impl Error {
    /// Whether the file had no signature at all (as opposed to a bad one).
    pub fn is_missing(&self) -> bool {
        matches!(self, Error::Missing(_))
    }
}

/// The trusted key that made `signature` over `file`.
pub fn verify<'k>(keys: &'k Keys, file: &[u8], signature: &Signature) -> Result<&'k PublicKey, Error> {
    let raw = match signature {
        Signature::Sig(bytes) => sig_bytes(bytes)?,
        Signature::Bundle(json) => bundle_signature(json, file)?,
    };
    keys.verify(file, &raw).map_err(|_| Error::UnknownKey)
}

/// A `.sig` file's signature: base64 text (surrounding whitespace ignored),
/// else raw DER (a SEQUENCE).
fn sig_bytes(bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::Empty);
    }
    if let Some(raw) = decode_base64(text) {
        return Ok(raw);
    }
    if bytes.first() == Some(&0x30) {
        return Ok(bytes.to_vec());
    }
    Err(Error::Encoding)
}

/// The bundle's signature bytes, once its digest is the file's (the
/// parser is the one image bundles go through, [`super::bundle`]).
fn bundle_signature(json: &[u8], file: &[u8]) -> Result<Vec<u8>, Error> {
    match bundle::parse(json)? {
        Bundle::MessageSignature { digest_sha256, signature } => {
            let actual = ring::digest::digest(&ring::digest::SHA256, file);
            if digest_sha256 != actual.as_ref() {
                return Err(Error::DigestMismatch {
                    bundle: format!("sha256:{}", hex::encode(digest_sha256)),
                    file: format!("sha256:{}", hex::encode(actual.as_ref())),
                });
            }
            if signature.is_empty() {
                return Err(Error::Empty);
            }
            Ok(signature)
        }
        Bundle::Dsse { .. } => Err(Error::Dsse),
    }
}

/// The signature beside `file` (`FILE.sig`, else `FILE.sigstore.json`)
/// and where it was; `Ok(None)` when there is neither.
pub fn beside(file: &Path) -> Result<Option<(PathBuf, Signature)>, Error> {
    for suffix in SUFFIXES {
        let path = with_suffix(file, suffix);
        let limit = if suffix == SUFFIXES[0] { SIG_LIMIT } else { BUNDLE_LIMIT };
        match crate::fsutil::read_bounded(&path, limit) {
            Ok(bytes) => return Ok(Some((path, Signature::for_suffix(suffix, bytes)))),
            Err(e) if e.is_not_found() => continue,
            Err(source) => return Err(Error::Read { path, source }),
        }
    }
    Ok(None)
}

/// `FILE` + `suffix` (`w.yaml` → `w.yaml.sig`).
pub fn with_suffix(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// [`beside`] then [`verify`]: the key that signed `file`'s `bytes` and
/// the signature file, or why not. `shown` names the file in the
/// "no signature" error (a redacted URL or a path).
pub fn verify_beside<'k>(keys: &'k Keys, file: &Path, bytes: &[u8], shown: &str) -> Result<(&'k PublicKey, PathBuf), Error> {
    let Some((path, signature)) = beside(file)? else {
        return Err(Error::Missing(format!("{shown}.sig nor {shown}.sigstore.json")));
    };
    Ok((verify(keys, bytes, &signature)?, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A workflow signed with openssl 3.0 (an independent signer):
    //   openssl ecparam -name prime256v1 -genkey -noout -out k.key
    //   openssl dgst -sha256 -sign k.key w.yaml | base64 -w0
    const WORKFLOW: &[u8] = b"jobs:\n  a:\n    container: {image: r/a}\n";
    const KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAELdOlLwnYPH8MVxCf+o/ZAzrr8Rj1
ghpUislQMsy7+0DYIOkNBamZqwJTsMRlm/REPa83cCEVjNWzifK9LJHULQ==
-----END PUBLIC KEY-----
";
    const SIG: &str = "MEYCIQCtvi6dbibQuteHQIOP+xthD1IdkY+Dprze52i0fCzFQAIhAIDtGmm+A4FOH5xw46f0pO543+WncM3YnlgPsw/YBWSE";

    // A real key-signed v0.3 bundle (see tests/fixtures/sigstore-conformance/README.md).
    const REAL_FILE: &[u8] = include_bytes!("../../tests/fixtures/sigstore-conformance/a.txt");
    const REAL_BUNDLE: &[u8] = include_bytes!("../../tests/fixtures/sigstore-conformance/a.txt.sigstore.json");
    const REAL_KEY: &[u8] = include_bytes!("../../tests/fixtures/sigstore-conformance/key.pub");

    fn keys(pems: &[(&str, &[u8])]) -> Keys {
        Keys::new(pems.iter().map(|(name, pem)| PublicKey::from_pem(name, pem).unwrap()).collect())
    }

    /// The real bundle's JSON with one change.
    fn real_bundle_with(change: impl FnOnce(&mut serde_json::Value)) -> Signature {
        let mut value: serde_json::Value = serde_json::from_slice(REAL_BUNDLE).unwrap();
        change(&mut value);
        Signature::Bundle(serde_json::to_vec(&value).unwrap())
    }

    #[test]
    fn verdicts() {
        let both = keys(&[("cosign.pub", KEY.as_bytes()), ("conformance.pub", REAL_KEY)]);
        let only_ours = keys(&[("cosign.pub", KEY.as_bytes())]);
        let only_theirs = keys(&[("conformance.pub", REAL_KEY)]);
        let der = decode_base64(SIG).unwrap();
        let mut changed = REAL_FILE.to_vec();
        changed[0] ^= 1;
        let mut workflow_changed = WORKFLOW.to_vec();
        *workflow_changed.last_mut().unwrap() = b' ';
        // (case, keys, file, signature, Ok(key name) or the error)
        type Case<'a> = (&'a str, &'a Keys, &'a [u8], Signature, Result<&'a str, &'a str>);
        let cases: Vec<Case> = vec![
            ("sig base64", &both, WORKFLOW, Signature::Sig(SIG.into()), Ok("cosign.pub")),
            ("sig with newline", &both, WORKFLOW, Signature::Sig(format!("{SIG}\n").into()), Ok("cosign.pub")),
            ("sig raw DER", &both, WORKFLOW, Signature::Sig(der.clone()), Ok("cosign.pub")),
            ("sig, file changed", &both, &workflow_changed, Signature::Sig(SIG.into()), Err("signature by an unknown key")),
            ("sig, other key", &only_theirs, WORKFLOW, Signature::Sig(SIG.into()), Err("signature by an unknown key")),
            ("sig empty", &both, WORKFLOW, Signature::Sig(b" \n".to_vec()), Err("empty signature")),
            ("sig garbage", &both, WORKFLOW, Signature::Sig(b"not a signature!".to_vec()), Err("signature is neither base64 nor DER")),
            ("real bundle", &both, REAL_FILE, Signature::Bundle(REAL_BUNDLE.to_vec()), Ok("conformance.pub")),
            ("real bundle, other key", &only_ours, REAL_FILE, Signature::Bundle(REAL_BUNDLE.to_vec()), Err("signature by an unknown key")),
            (
                "real bundle, file changed",
                &both,
                &changed,
                Signature::Bundle(REAL_BUNDLE.to_vec()),
                Err("bundle is for sha256:a0cfc71271d6e278e57cd332ff957c3f7043fdda354c4cbb190a30d56efa01bf, the file is sha256:"),
            ),
            (
                // The digest made to match the changed file: the signature still does not.
                "real bundle, digest forged",
                &both,
                &changed,
                real_bundle_with(|v| {
                    use base64::Engine as _;
                    let digest = ring::digest::digest(&ring::digest::SHA256, &{
                        let mut c = REAL_FILE.to_vec();
                        c[0] ^= 1;
                        c
                    });
                    v["messageSignature"]["messageDigest"]["digest"] =
                        base64::engine::general_purpose::STANDARD.encode(digest.as_ref()).into();
                }),
                Err("signature by an unknown key"),
            ),
            ("bundle without digest", &both, REAL_FILE, real_bundle_with(|v| {
                v["messageSignature"].as_object_mut().unwrap().remove("messageDigest");
            }), Err("bundle is not JSON of a sigstore bundle")),
            ("bundle md5", &both, REAL_FILE, real_bundle_with(|v| v["messageSignature"]["messageDigest"]["algorithm"] = "MD5".into()),
             Err("bundle message digest is not SHA2_256")),
            ("bundle media type", &both, REAL_FILE, real_bundle_with(|v| v["mediaType"] = "application/json".into()),
             Err("bundle media type \"application/json\" is not a sigstore bundle")),
            ("bundle DSSE", &both, REAL_FILE, real_bundle_with(|v| {
                let o = v.as_object_mut().unwrap();
                o.remove("messageSignature");
                o.insert("dsseEnvelope".into(), serde_json::json!({"payload": "", "payloadType": "application/vnd.in-toto+json", "signatures": [{"sig": "AQI="}]}));
            }), Err("bundle holds a DSSE envelope (an attestation), not a signature of the file")),
            ("bundle empty object", &both, REAL_FILE, Signature::Bundle(b"{}".to_vec()), Err("bundle is not JSON of a sigstore bundle")),
            ("bundle not JSON", &both, REAL_FILE, Signature::Bundle(b"\x00garbage".to_vec()), Err("bundle is not JSON of a sigstore bundle")),
            ("bundle sig empty", &both, REAL_FILE, real_bundle_with(|v| v["messageSignature"]["signature"] = "".into()), Err("empty signature")),
        ];
        for (case, keys, file, signature, want) in cases {
            match (verify(keys, file, &signature), want) {
                (Ok(key), Ok(name)) => assert_eq!(key.name, name, "{case}"),
                (Err(e), Err(text)) => assert!(e.to_string().starts_with(text), "{case}: {e} is not {text:?}"),
                (got, want) => panic!("{case}: got {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn finds_the_signature_beside_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.yaml");
        std::fs::write(&file, WORKFLOW).unwrap();
        let keys = keys(&[("cosign.pub", KEY.as_bytes())]);
        let err = verify_beside(&keys, &file, WORKFLOW, "file:///w.yaml").unwrap_err();
        assert_eq!(err.to_string(), "no signature: neither file:///w.yaml.sig nor file:///w.yaml.sigstore.json");
        assert!(err.is_missing());

        // A bundle alone is found; a .sig beside it is preferred.
        std::fs::write(with_suffix(&file, ".sigstore.json"), REAL_BUNDLE).unwrap();
        let err = verify_beside(&keys, &file, WORKFLOW, "w").unwrap_err();
        assert!(err.to_string().starts_with("bundle is for sha256:a0cfc7"), "{err}");
        std::fs::write(with_suffix(&file, ".sig"), SIG).unwrap();
        let (key, path) = verify_beside(&keys, &file, WORKFLOW, "w").unwrap();
        assert_eq!((key.name.as_str(), path), ("cosign.pub", with_suffix(&file, ".sig")));

        // Read with a bound.
        std::fs::write(with_suffix(&file, ".sig"), vec![b'A'; usize::try_from(SIG_LIMIT).unwrap() + 1]).unwrap();
        let err = verify_beside(&keys, &file, WORKFLOW, "w").unwrap_err();
        let cause = std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default();
        assert!(cause.contains("larger than the 65536 byte limit"), "{err}: {cause}");
    }
}
