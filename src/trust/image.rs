//! Whether an image digest D is signed by a trusted key, decided from the
//! bytes a registry served: cosign's legacy simple-signing layers and
//! sigstore bundles (DSSE envelope with an in-toto Statement). Pure: the
//! fetching is [`crate::image::signatures`]; this module never does I/O.
//!
//! A candidate counts only when its signature verifies with a trusted key
//! AND what it signs is exactly D (legacy: `critical.image.
//! docker-manifest-digest`; bundle: a Statement subject's `sha256`, with
//! cosign's signature predicate, so an attestation is not a signature).

use super::bundle::{self, Bundle};
use super::keys::Keys;
use super::simple::{self, PayloadError};
use serde::Deserialize;

/// The in-toto predicate type of a `cosign sign` (v3) image signature.
pub const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// Where a candidate signature was found, in the order they are looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The OCI 1.1 referrers API, artifact type [`bundle::ARTIFACT_TYPE`].
    Referrers,
    /// The referrers fallback index at tag `sha256-<hex>`.
    FallbackTag,
    /// cosign's legacy tag `sha256-<hex>.sig`.
    LegacyTag,
}

impl Place {
    pub const ALL: [Place; 3] = [Place::Referrers, Place::FallbackTag, Place::LegacyTag];

    /// How a refusal names the place for digest `d`.
    pub fn describe(self, d: &str) -> String {
        let tag = d.replacen(':', "-", 1);
        match self {
            Place::Referrers => "referrers".into(),
            Place::FallbackTag => tag,
            Place::LegacyTag => format!("{tag}.sig"),
        }
    }
}

/// One signature as served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidate {
    /// A simple-signing payload and its layer's signature annotation.
    Legacy { payload: Vec<u8>, signature: Option<String> },
    /// A sigstore bundle's JSON.
    Bundle(Vec<u8>),
    /// Something at a signature place that could not be read as one
    /// (oversize, too many layers, wrong digest): why.
    Unreadable(String),
}

/// Why one candidate does not sign D.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("signature by an unknown key")]
    UnknownKey,
    #[error("signature layer has no dev.cosignproject.cosign/signature annotation")]
    NoAnnotation,
    #[error("signature annotation is not base64")]
    NotBase64,
    #[error("signature is for {signed} not {wanted}")]
    OtherDigest { signed: String, wanted: String },
    #[error("{0}")]
    Payload(PayloadError),
    #[error("{0}")]
    Bundle(bundle::BundleError),
    #[error("bundle payload type {0:?} is not an in-toto Statement")]
    PayloadType(String),
    #[error("bundle payload is not an in-toto Statement")]
    Statement,
    #[error("bundle is an attestation ({0}), not a signature")]
    Attestation(String),
    #[error("{0}")]
    Unreadable(String),
}

/// The verdict on D.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no signature found at {0}")]
    NotFound(String),
    /// Every candidate's reason, distinct, in lookup order.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Reason>),
}

/// An accepted signature: which key, and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub key: String,
    pub place: Place,
}

/// Checks one candidate against D (`sha256:<hex>`).
pub fn check(keys: &Keys, d: &str, candidate: &Candidate) -> Result<String, Reason> {
    match candidate {
        Candidate::Legacy { payload, signature } => {
            let signature = signature.as_deref().ok_or(Reason::NoAnnotation)?;
            let key = keys.verify_base64(payload, signature).map_err(|e| match e {
                super::keys::Error::SignatureEncoding => Reason::NotBase64,
                _ => Reason::UnknownKey,
            })?;
            simple::check(payload, d).map_err(|e| match e {
                PayloadError::OtherDigest { signed, wanted } => Reason::OtherDigest { signed, wanted },
                e => Reason::Payload(e),
            })?;
            Ok(key.name.clone())
        }
        Candidate::Bundle(json) => {
            let parsed = bundle::parse(json).map_err(Reason::Bundle)?;
            let Bundle::Dsse { payload_type, payload, .. } = &parsed else {
                return Err(Reason::Bundle(bundle::BundleError::Content));
            };
            let key = parsed.verify_dsse(keys).map_err(|_| Reason::UnknownKey)?;
            if payload_type != bundle::IN_TOTO {
                return Err(Reason::PayloadType(payload_type.chars().take(100).collect()));
            }
            check_statement(payload, d)?;
            Ok(key.name.clone())
        }
        Candidate::Unreadable(why) => Err(Reason::Unreadable(why.clone())),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Statement {
    #[serde(rename = "_type")]
    type_: String,
    subject: Vec<Subject>,
    predicate_type: String,
}

#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    digest: std::collections::BTreeMap<String, String>,
}

/// An in-toto Statement that is cosign's signature of D.
pub fn check_statement(payload: &[u8], d: &str) -> Result<(), Reason> {
    let statement: Statement = serde_json::from_slice(payload).map_err(|_| Reason::Statement)?;
    if !statement.type_.starts_with("https://in-toto.io/Statement/") {
        return Err(Reason::Statement);
    }
    if statement.predicate_type != SIGN_PREDICATE {
        return Err(Reason::Attestation(statement.predicate_type.chars().take(100).collect()));
    }
    let wanted = d.strip_prefix("sha256:").unwrap_or(d);
    let mut signed = statement.subject.iter().filter_map(|s| s.digest.get("sha256"));
    if signed.clone().any(|hex| hex == wanted) {
        return Ok(());
    }
    Err(Reason::OtherDigest {
        signed: signed.next().map_or_else(|| "no sha256 subject".into(), |hex| format!("sha256:{hex}")),
        wanted: d.to_owned(),
    })
}

/// Collects candidates place by place and gives the verdict; the first
/// candidate that checks wins, so a mirror or an attacker can add noise but
/// never make an unsigned D pass.
#[derive(Debug, Default)]
pub struct Verdict {
    reasons: Vec<Reason>,
    looked: Vec<Place>,
}

impl Verdict {
    /// Checks the candidates found at `place`; `Some` when one is accepted.
    pub fn add(&mut self, keys: &Keys, d: &str, place: Place, candidates: &[Candidate]) -> Option<Accepted> {
        self.looked.push(place);
        for candidate in candidates {
            match check(keys, d, candidate) {
                Ok(key) => return Some(Accepted { key, place }),
                Err(reason) if !self.reasons.contains(&reason) => self.reasons.push(reason),
                Err(_) => {}
            }
        }
        None
    }

    /// The refusal once every place was looked at without success.
    pub fn refusal(self, d: &str) -> Refusal {
        if self.reasons.is_empty() {
            let places: Vec<String> = self.looked.iter().map(|p| p.describe(d)).collect();
            return Refusal::NotFound(places.join(", "));
        }
        Refusal::Invalid(self.reasons)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const HEX_D: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const HEX_E: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

    fn statement(ty: &str, predicate: &str, hexes: &[&str]) -> String {
        let subjects: Vec<String> =
            hexes.iter().map(|h| format!(r#"{{"name":"r/a","digest":{{"sha256":"{h}"}}}}"#)).collect();
        format!(r#"{{"_type":"{ty}","subject":[{}],"predicateType":"{predicate}","predicate":{{}}}}"#, subjects.join(","))
    }

    #[test]
    fn statements() {
        let v1 = "https://in-toto.io/Statement/v1";
        let other = |signed: &str| Err(Reason::OtherDigest { signed: signed.into(), wanted: D.into() });
        let cases: Vec<(String, Result<(), Reason>)> = vec![
            (statement(v1, SIGN_PREDICATE, &[HEX_D]), Ok(())),
            (statement("https://in-toto.io/Statement/v0.1", SIGN_PREDICATE, &[HEX_E, HEX_D]), Ok(())),
            (statement(v1, SIGN_PREDICATE, &[HEX_E]), other(&format!("sha256:{HEX_E}"))),
            (statement(v1, SIGN_PREDICATE, &[]), other("no sha256 subject")),
            (statement(v1, "https://slsa.dev/provenance/v1", &[HEX_D]), Err(Reason::Attestation("https://slsa.dev/provenance/v1".into()))),
            (statement(v1, "https://cosign.sigstore.dev/attestation/v1", &[HEX_D]), Err(Reason::Attestation("https://cosign.sigstore.dev/attestation/v1".into()))),
            (statement("https://example.com/Statement", SIGN_PREDICATE, &[HEX_D]), Err(Reason::Statement)),
            (format!(r#"{{"_type":"{v1}","subject":[{{"digest":{{"sha512":"{HEX_D}"}}}}],"predicateType":"{SIGN_PREDICATE}"}}"#), other("no sha256 subject")),
            (r#"{"_type":"https://in-toto.io/Statement/v1"}"#.into(), Err(Reason::Statement)),
            ("garbage".into(), Err(Reason::Statement)),
        ];
        for (payload, expected) in cases {
            assert_eq!(check_statement(payload.as_bytes(), D), expected, "statement {payload}");
        }
    }

    /// Real cosign output: the DSSE signature over the PAE verifies with
    /// the signer's key, and the bundle is still refused, because it is an
    /// attestation (`cosign attest`), not a signature.
    #[test]
    fn a_real_cosign_attestation_bundle_is_not_a_signature() {
        let json = include_bytes!("fixtures/cosign-oci-attestation.sigstore.json");
        let pem = include_bytes!("fixtures/cosign-oci-attestation.pub");
        let keys = Keys::new(vec![crate::trust::PublicKey::from_pem("cosign-test.pub", pem).unwrap()]);
        let d = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4";
        let parsed = bundle::parse(json).unwrap();
        assert_eq!(parsed.verify_dsse(&keys).unwrap().name, "cosign-test.pub");
        let attestation = Err(Reason::Attestation("https://cosign.sigstore.dev/attestation/v1".into()));
        assert_eq!(check(&keys, d, &Candidate::Bundle(json.to_vec())), attestation);
        // One flipped byte in the signed payload: no key made it.
        let text = String::from_utf8(json.to_vec()).unwrap();
        let Bundle::Dsse { payload, .. } = &parsed else { panic!("not DSSE") };
        let tampered = payload.iter().map(|b| if *b == b'7' { b'8' } else { *b }).collect::<Vec<u8>>();
        use base64::Engine as _;
        let (b64, b64_tampered) = (
            base64::engine::general_purpose::STANDARD.encode(payload),
            base64::engine::general_purpose::STANDARD.encode(&tampered),
        );
        assert!(text.contains(&b64));
        let tampered_json = text.replace(&b64, &b64_tampered);
        assert_eq!(check(&keys, d, &Candidate::Bundle(tampered_json.into_bytes())), Err(Reason::UnknownKey));
        // Another key: unknown.
        assert_eq!(check(&Keys::default(), d, &Candidate::Bundle(json.to_vec())), Err(Reason::UnknownKey));
    }

    #[test]
    fn places_and_refusals() {
        assert_eq!(Place::Referrers.describe(D), "referrers");
        assert_eq!(Place::FallbackTag.describe(D), format!("sha256-{HEX_D}"));
        assert_eq!(Place::LegacyTag.describe(D), format!("sha256-{HEX_D}.sig"));
        let keys = Keys::default();
        let mut verdict = Verdict::default();
        for place in Place::ALL {
            assert_eq!(verdict.add(&keys, D, place, &[]), None);
        }
        assert_eq!(
            verdict.refusal(D).to_string(),
            format!("no signature found at referrers, sha256-{HEX_D}, sha256-{HEX_D}.sig")
        );
        let mut verdict = Verdict::default();
        let garbage = Candidate::Legacy { payload: b"{}".to_vec(), signature: Some("!!".into()) };
        let none = Candidate::Legacy { payload: b"{}".to_vec(), signature: None };
        assert_eq!(verdict.add(&keys, D, Place::LegacyTag, &[garbage.clone(), none, garbage]), None);
        assert_eq!(
            verdict.refusal(D).to_string(),
            "signature annotation is not base64; signature layer has no dev.cosignproject.cosign/signature annotation"
        );
        let mut verdict = Verdict::default();
        let unknown = Candidate::Legacy { payload: b"{}".to_vec(), signature: Some("AQID".into()) };
        assert_eq!(verdict.add(&keys, D, Place::LegacyTag, &[unknown]), None);
        assert_eq!(verdict.refusal(D).to_string(), "signature by an unknown key");
    }
}
