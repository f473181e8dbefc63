//! cosign's legacy signature: a "simple signing" JSON payload stored as a
//! layer of the `sha256-<hex>.sig` image, its base64 signature in the
//! layer's `dev.cosignproject.cosign/signature` annotation. The signature
//! is over the payload bytes exactly as stored. Pure: bytes in, verdict out.
//!
//! ```json
//! {"critical":{"identity":{"docker-reference":"r/app"},
//!   "image":{"docker-manifest-digest":"sha256:…"},
//!   "type":"cosign container image signature"},"optional":null}
//! ```

use serde_json::Value;

/// The only `critical.type` that is an image signature.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

/// Why a payload is not a signature of the digest it was checked against.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("signature payload is not JSON")]
    NotJson,
    #[error("signature payload has no critical.type {SIGNATURE_TYPE:?}")]
    Type,
    #[error("signature payload has no critical.image.docker-manifest-digest")]
    NoDigest,
    #[error("signature is for {signed} not {wanted}")]
    OtherDigest { signed: String, wanted: String },
}

/// The digest a simple-signing payload signs (`critical.image.
/// docker-manifest-digest`, the key matched case-insensitively, as
/// containers/image does), after checking its type.
pub fn signed_digest(payload: &[u8]) -> Result<String, PayloadError> {
    let value: Value = serde_json::from_slice(payload).map_err(|_| PayloadError::NotJson)?;
    let critical = value.get("critical").ok_or(PayloadError::Type)?;
    if critical.get("type").and_then(Value::as_str) != Some(SIGNATURE_TYPE) {
        return Err(PayloadError::Type);
    }
    let image = critical.get("image").and_then(Value::as_object).ok_or(PayloadError::NoDigest)?;
    let mut digests = image
        .iter()
        .filter(|(key, _)| key.eq_ignore_ascii_case("docker-manifest-digest"));
    match (digests.next(), digests.next()) {
        (Some((_, Value::String(digest))), None) => Ok(digest.clone()),
        // Two spellings of the key could say two things: neither counts.
        _ => Err(PayloadError::NoDigest),
    }
}

/// Checks that `payload` is a signature payload for exactly `digest`.
pub fn check(payload: &[u8], digest: &str) -> Result<(), PayloadError> {
    let signed = signed_digest(payload)?;
    if signed != digest {
        return Err(PayloadError::OtherDigest { signed, wanted: digest.to_owned() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const E: &str = "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

    fn check_one(payload: &str, expected: Result<(), PayloadError>) {
        assert_eq!(check(payload.as_bytes(), D), expected, "payload {payload}");
    }

    #[test]
    fn payloads() {
        let other = || PayloadError::OtherDigest { signed: E.into(), wanted: D.into() };
        let cases: &[(String, Result<(), PayloadError>)] = &[
            (format!(r#"{{"critical":{{"identity":{{"docker-reference":"r/a"}},"image":{{"docker-manifest-digest":"{D}"}},"type":"cosign container image signature"}},"optional":null}}"#), Ok(())),
            // The key is matched case-insensitively.
            (format!(r#"{{"critical":{{"image":{{"Docker-Manifest-Digest":"{D}"}},"type":"cosign container image signature"}}}}"#), Ok(())),
            (format!(r#"{{"critical":{{"image":{{"docker-manifest-digest":"{E}"}},"type":"cosign container image signature"}}}}"#), Err(other())),
            // Two spellings of the key: ambiguous, refused.
            (format!(r#"{{"critical":{{"image":{{"docker-manifest-digest":"{D}","DOCKER-MANIFEST-DIGEST":"{E}"}},"type":"cosign container image signature"}}}}"#), Err(PayloadError::NoDigest)),
            (format!(r#"{{"critical":{{"image":{{"docker-manifest-digest":"{D}"}},"type":"https://sigstore.dev/cosign/sign/v1"}}}}"#), Err(PayloadError::Type)),
            (format!(r#"{{"critical":{{"image":{{"docker-manifest-digest":"{D}"}}}}}}"#), Err(PayloadError::Type)),
            (format!(r#"{{"image":{{"docker-manifest-digest":"{D}"}},"type":"cosign container image signature"}}"#), Err(PayloadError::Type)),
            (r#"{"critical":{"image":{},"type":"cosign container image signature"}}"#.into(), Err(PayloadError::NoDigest)),
            (r#"{"critical":{"image":{"docker-manifest-digest":7},"type":"cosign container image signature"}}"#.into(), Err(PayloadError::NoDigest)),
            (r#"{"critical":{"image":"x","type":"cosign container image signature"}}"#.into(), Err(PayloadError::NoDigest)),
            ("not json".into(), Err(PayloadError::NotJson)),
            ("[]".into(), Err(PayloadError::Type)),
        ];
        for (payload, expected) in cases {
            check_one(payload, expected.clone());
        }
    }
}
