//! Sigstore bundles (v0.3 JSON, as cosign v3 writes them), parsed just far
//! enough for a key-based, offline check: either a DSSE envelope (`cosign
//! sign`: an in-toto Statement about an image digest) or a message
//! signature (`cosign sign-blob`: a signature over a file whose SHA-256 is
//! given). Verification material (certificate, tlog entries) is ignored:
//! the key is one of the initrd's. Pure: bytes in, values out.

use super::keys::{decode_base64, Error as KeyError, Keys, PublicKey};
use serde::Deserialize;

/// The bundle's media type (any version: the fields read here are the same).
pub const MEDIA_TYPE_PREFIX: &str = "application/vnd.dev.sigstore.bundle";
/// The OCI artifact type of a bundle attached to an image by cosign v3.
pub const ARTIFACT_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The DSSE payload type of an in-toto Statement.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";

/// What a bundle signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bundle {
    /// A DSSE envelope: signatures over [`pae`] of type and payload.
    Dsse { payload_type: String, payload: Vec<u8>, signatures: Vec<Vec<u8>> },
    /// A signature over a message (a file) whose SHA-256 is given.
    MessageSignature { digest_sha256: [u8; 32], signature: Vec<u8> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("bundle is not JSON of a sigstore bundle")]
    NotJson,
    #[error("bundle media type {0:?} is not a sigstore bundle")]
    MediaType(String),
    #[error("bundle has neither a dsseEnvelope nor a messageSignature")]
    Content,
    #[error("bundle {0} is not base64")]
    Base64(&'static str),
    #[error("bundle message digest is not SHA2_256")]
    DigestAlgorithm,
    #[error("bundle DSSE envelope has no signature")]
    NoSignature,
}

/// Why a message-signature bundle does not sign a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("bundle has no messageSignature")]
    NotMessage,
    #[error("bundle is for a file with SHA-256 {signed}, not {actual}")]
    OtherFile { signed: String, actual: String },
    #[error("signature by an unknown key")]
    UnknownKey,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    media_type: String,
    dsse_envelope: Option<RawEnvelope>,
    message_signature: Option<RawMessage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEnvelope {
    payload: String,
    payload_type: String,
    signatures: Vec<RawSig>,
}

#[derive(Deserialize)]
struct RawSig {
    sig: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMessage {
    message_digest: RawDigest,
    signature: String,
}

#[derive(Deserialize)]
struct RawDigest {
    algorithm: String,
    digest: String,
}

/// At most this many DSSE signatures are tried (each costs a check per key).
const MAX_SIGNATURES: usize = 16;

/// Parses a bundle's JSON.
pub fn parse(bytes: &[u8]) -> Result<Bundle, BundleError> {
    let raw: Raw = serde_json::from_slice(bytes).map_err(|_| BundleError::NotJson)?;
    if !raw.media_type.starts_with(MEDIA_TYPE_PREFIX) {
        return Err(BundleError::MediaType(raw.media_type.chars().take(100).collect()));
    }
    match (raw.dsse_envelope, raw.message_signature) {
        (Some(env), None) => {
            let payload = decode_base64(&env.payload).ok_or(BundleError::Base64("payload"))?;
            let signatures = env
                .signatures
                .iter()
                .take(MAX_SIGNATURES)
                .map(|s| decode_base64(&s.sig).ok_or(BundleError::Base64("signature")))
                .collect::<Result<Vec<_>, _>>()?;
            if signatures.is_empty() {
                return Err(BundleError::NoSignature);
            }
            Ok(Bundle::Dsse { payload_type: env.payload_type, payload, signatures })
        }
        (None, Some(msg)) => {
            if msg.message_digest.algorithm != "SHA2_256" {
                return Err(BundleError::DigestAlgorithm);
            }
            let digest = decode_base64(&msg.message_digest.digest)
                .ok_or(BundleError::Base64("message digest"))?;
            let digest_sha256 = digest.try_into().map_err(|_| BundleError::Base64("message digest"))?;
            let signature = decode_base64(&msg.signature).ok_or(BundleError::Base64("signature"))?;
            Ok(Bundle::MessageSignature { digest_sha256, signature })
        }
        _ => Err(BundleError::Content),
    }
}

/// DSSE's pre-authentication encoding, the bytes a DSSE signature is over:
/// `"DSSEv1" SP len(type) SP type SP len(payload) SP payload`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

impl Bundle {
    /// For `cosign sign-blob` bundles: the trusted key whose signature over
    /// `file` this is, after checking that `messageDigest` is `file`'s SHA-256.
    pub fn verify_message<'k>(&self, keys: &'k Keys, file: &[u8]) -> Result<&'k PublicKey, MessageError> {
        use sha2::Digest as _;
        let Bundle::MessageSignature { digest_sha256, signature } = self else {
            return Err(MessageError::NotMessage);
        };
        let actual: [u8; 32] = sha2::Sha256::digest(file).into();
        if actual != *digest_sha256 {
            return Err(MessageError::OtherFile { signed: hex::encode(digest_sha256), actual: hex::encode(actual) });
        }
        keys.verify(file, signature).map_err(|_| MessageError::UnknownKey)
    }

    /// The trusted key that made one of the envelope's signatures over the
    /// PAE. (A message signature is checked against its file by the caller,
    /// who has the file: [`Keys::verify`] over the file's bytes.)
    pub fn verify_dsse<'k>(&self, keys: &'k Keys) -> Result<&'k PublicKey, KeyError> {
        let Bundle::Dsse { payload_type, payload, signatures } = self else {
            return Err(KeyError::UnknownKey);
        };
        let message = pae(payload_type, payload);
        signatures
            .iter()
            .find_map(|sig| keys.verify(&message, sig).ok())
            .ok_or(KeyError::UnknownKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_dsse_v1() {
        // The example of the DSSE spec (protocol.md).
        let cases: &[(&str, &[u8], &[u8])] = &[
            ("http://example.com/HelloWorld", b"hello world", b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"),
            ("", b"", b"DSSEv1 0  0 "),
            (IN_TOTO, b"{}", b"DSSEv1 28 application/vnd.in-toto+json 2 {}"),
        ];
        for (ty, payload, expected) in cases {
            assert_eq!(pae(ty, payload), *expected, "type {ty}");
        }
    }

    /// Real sigstore-go test data: a key-signed sign-blob bundle over
    /// `test content` (see fixtures/README.md).
    #[test]
    fn a_real_blob_bundle() {
        let json = include_bytes!("fixtures/sigstore-go-blob.sigstore.json");
        let pem = include_bytes!("fixtures/sigstore-go-blob.pem");
        let keys = Keys::new(vec![PublicKey::from_pem("sigstore-go.pub", pem).unwrap()]);
        let bundle = parse(json).unwrap();
        assert_eq!(bundle.verify_message(&keys, b"test content").unwrap().name, "sigstore-go.pub");
        let other = bundle.verify_message(&keys, b"test content!");
        assert!(matches!(other, Err(MessageError::OtherFile { .. })), "{other:?}");
        assert_eq!(bundle.verify_message(&Keys::default(), b"test content"), Err(MessageError::UnknownKey));
        // A message signature is not a DSSE envelope.
        assert!(bundle.verify_dsse(&keys).is_err());
    }

    fn check(json: &str, expected: Result<Bundle, BundleError>) {
        assert_eq!(parse(json.as_bytes()), expected, "bundle {json}");
    }

    #[test]
    fn bundles() {
        let v3 = "application/vnd.dev.sigstore.bundle.v0.3+json";
        let dsse = |sigs: &str| format!(r#"{{"mediaType":"{v3}","verificationMaterial":{{"publicKey":{{"hint":"x"}}}},"dsseEnvelope":{{"payload":"e30=","payloadType":"{IN_TOTO}","signatures":[{sigs}]}}}}"#);
        check(
            &dsse(r#"{"sig":"AQI=","keyid":""},{"sig":"Aw"}"#),
            Ok(Bundle::Dsse { payload_type: IN_TOTO.into(), payload: b"{}".to_vec(), signatures: vec![vec![1, 2], vec![3]] }),
        );
        check(&dsse(""), Err(BundleError::NoSignature));
        check(&dsse(r#"{"sig":"!!"}"#), Err(BundleError::Base64("signature")));
        let digest = "auinVVUgn9bEQVfArtgBbnY/9DWhnPGG92hjFAFD/3I=";
        let msg = |alg: &str, digest: &str| format!(r#"{{"mediaType":"application/vnd.dev.sigstore.bundle+json;version=0.3","messageSignature":{{"messageDigest":{{"algorithm":"{alg}","digest":"{digest}"}},"signature":"AQI="}}}}"#);
        let mut sha = [0u8; 32];
        sha.copy_from_slice(&decode_base64(digest).unwrap());
        check(&msg("SHA2_256", digest), Ok(Bundle::MessageSignature { digest_sha256: sha, signature: vec![1, 2] }));
        check(&msg("SHA2_384", digest), Err(BundleError::DigestAlgorithm));
        check(&msg("SHA2_256", "AQI="), Err(BundleError::Base64("message digest")));
        check(r#"{"mediaType":"application/json"}"#, Err(BundleError::MediaType("application/json".into())));
        check(&format!(r#"{{"mediaType":"{v3}"}}"#), Err(BundleError::Content));
        check("[]", Err(BundleError::NotJson));
        check("", Err(BundleError::NotJson));
    }
}
