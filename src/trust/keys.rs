//! Trust anchors: the public keys the initrd carries in `/etc/iguana/trust/`
//! and the one signature check everything signed goes through.
//!
//! A key file is PEM SubjectPublicKeyInfo, as `cosign generate-key-pair`
//! writes `cosign.pub` and `openssl pkey -pubout` writes any key: ECDSA
//! P-256 (signatures over SHA-256), ECDSA P-384 (SHA-384) or Ed25519.
//! ECDSA signatures are ASN.1 DER, as cosign and `openssl dgst -sign` make
//! them. Parsing is pure; only [`Keys::load_dir`] touches the filesystem.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};

/// Where the initrd carries its trusted keys.
pub const TRUST_DIR: &str = "/etc/iguana/trust";

/// A key file larger than this is not a public key.
pub const KEY_FILE_LIMIT: u64 = 64 * 1024;
/// At most this many key files are read (each is tried per signature).
const MAX_KEYS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read trust key directory {path}")]
    ReadDir { path: PathBuf, #[source] source: std::io::Error },
    #[error("read trust key {path}")]
    ReadKey { path: PathBuf, #[source] source: crate::fsutil::Error },
    #[error("trust key {name}: {reason}")]
    BadKey { name: String, reason: String },
    #[error("{path}: more than {MAX_KEYS} trust keys")]
    TooMany { path: PathBuf },
    #[error("signature is not base64")]
    SignatureEncoding,
    #[error("signature by an unknown key")]
    UnknownKey,
}

/// The signature scheme a key implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    EcdsaP256Sha256,
    EcdsaP384Sha384,
    Ed25519,
}

impl Algorithm {
    fn ring(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Algorithm::EcdsaP256Sha256 => &signature::ECDSA_P256_SHA256_ASN1,
            Algorithm::EcdsaP384Sha384 => &signature::ECDSA_P384_SHA384_ASN1,
            Algorithm::Ed25519 => &signature::ED25519,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::EcdsaP256Sha256 => "ECDSA P-256",
            Algorithm::EcdsaP384Sha384 => "ECDSA P-384",
            Algorithm::Ed25519 => "Ed25519",
        })
    }
}

/// One trusted key: its file name (for messages), scheme and raw public key
/// (an uncompressed EC point, or Ed25519's 32 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub name: String,
    pub algorithm: Algorithm,
    raw: Vec<u8>,
}

impl PublicKey {
    /// Parses a PEM `PUBLIC KEY` block (SubjectPublicKeyInfo).
    pub fn from_pem(name: &str, pem: &[u8]) -> Result<PublicKey, Error> {
        let bad = |reason: &str| Error::BadKey { name: name.to_owned(), reason: reason.to_owned() };
        let text = std::str::from_utf8(pem).map_err(|_| bad("not text"))?;
        let der = pem_block(text, "PUBLIC KEY").ok_or_else(|| bad("no PEM PUBLIC KEY block"))?;
        let (algorithm, raw) = parse_spki(&der).map_err(bad)?;
        Ok(PublicKey { name: name.to_owned(), algorithm, raw })
    }

    /// Whether `signature` is this key's signature over `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(self.algorithm.ring(), &self.raw)
            .verify(message, signature)
            .is_ok()
    }
}

/// The set of trusted keys. Empty means nothing is verified.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    keys: Vec<PublicKey>,
}

impl Keys {
    pub fn new(keys: Vec<PublicKey>) -> Keys {
        Keys { keys }
    }

    /// Every `*.pub` in `dir`, in name order; a missing directory is no keys.
    /// A key file that does not parse is an error: a broken trust anchor must
    /// not quietly turn verification off.
    pub fn load_dir(dir: &Path) -> Result<Keys, Error> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Keys::default()),
            Err(source) => return Err(Error::ReadDir { path: dir.to_owned(), source }),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::ReadDir { path: dir.to_owned(), source })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".pub") && !name.starts_with('.') {
                names.push(name);
            }
            if names.len() > MAX_KEYS {
                return Err(Error::TooMany { path: dir.to_owned() });
            }
        }
        names.sort();
        let mut keys = Vec::with_capacity(names.len());
        for name in names {
            let path = dir.join(&name);
            let pem = crate::fsutil::read_bounded(&path, KEY_FILE_LIMIT)
                .map_err(|source| Error::ReadKey { path: path.clone(), source })?;
            keys.push(PublicKey::from_pem(&name, &pem)?);
        }
        Ok(Keys { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.iter()
    }

    /// The key whose signature over `message` `signature` is.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<&PublicKey, Error> {
        self.keys
            .iter()
            .find(|key| key.verifies(message, signature))
            .ok_or(Error::UnknownKey)
    }

    /// [`Keys::verify`] for a base64 signature (cosign's `.sig` files, the
    /// `dev.cosignproject.cosign/signature` annotation); surrounding
    /// whitespace is ignored.
    pub fn verify_base64(&self, message: &[u8], signature: &str) -> Result<&PublicKey, Error> {
        let signature = decode_base64(signature.trim()).ok_or(Error::SignatureEncoding)?;
        self.verify(message, &signature)
    }
}

/// Standard base64 with or without padding, as cosign and openssl write it.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD.decode(text).ok()
}

/// The DER bytes of the first PEM block labelled `label`.
fn pem_block(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let body: String = text[start..stop].chars().filter(|c| !c.is_ascii_whitespace()).collect();
    decode_base64(&body)
}

const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// SubjectPublicKeyInfo ::= SEQUENCE { algorithm AlgorithmIdentifier,
/// subjectPublicKey BIT STRING }; AlgorithmIdentifier ::= SEQUENCE {
/// algorithm OID, parameters ANY OPTIONAL } (the curve's OID for EC keys).
fn parse_spki(der: &[u8]) -> Result<(Algorithm, Vec<u8>), &'static str> {
    let (spki, rest) = der_take(der, 0x30).ok_or("not a DER SEQUENCE")?;
    if !rest.is_empty() {
        return Err("trailing bytes after the key");
    }
    let (alg_id, rest) = der_take(spki, 0x30).ok_or("no AlgorithmIdentifier")?;
    let (bits, rest) = der_take(rest, 0x03).ok_or("no subjectPublicKey BIT STRING")?;
    if !rest.is_empty() {
        return Err("trailing bytes in SubjectPublicKeyInfo");
    }
    let (oid, params) = der_take(alg_id, 0x06).ok_or("no algorithm OID")?;
    let algorithm = if oid == OID_ED25519 && params.is_empty() {
        Algorithm::Ed25519
    } else if oid == OID_EC_PUBLIC_KEY {
        let (curve, rest) = der_take(params, 0x06).ok_or("EC key without a named curve")?;
        if !rest.is_empty() {
            return Err("trailing bytes after the curve");
        }
        match curve {
            OID_P256 => Algorithm::EcdsaP256Sha256,
            OID_P384 => Algorithm::EcdsaP384Sha384,
            _ => return Err("unsupported EC curve (P-256 or P-384 only)"),
        }
    } else {
        return Err("unsupported key type (ECDSA P-256/P-384 or Ed25519 only)");
    };
    let (&unused, key) = bits.split_first().ok_or("empty BIT STRING")?;
    if unused != 0 {
        return Err("BIT STRING with unused bits");
    }
    let expected = match algorithm {
        Algorithm::EcdsaP256Sha256 => 65,
        Algorithm::EcdsaP384Sha384 => 97,
        Algorithm::Ed25519 => 32,
    };
    if key.len() != expected || (algorithm != Algorithm::Ed25519 && key[0] != 0x04) {
        return Err("public key of the wrong length or form");
    }
    Ok((algorithm, key.to_vec()))
}

/// One DER TLV with `tag`: its contents and what follows it.
fn der_take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 2 || rest.len() < count {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..count] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[count..];
        len
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Keys and signatures made with openssl 3.0 (an independent signer):
    //   openssl ecparam -name prime256v1 -genkey -noout -out p256.key
    //   openssl ec -in p256.key -pubout
    //   openssl dgst -sha256 -sign p256.key msg | base64 -w0
    //   (P-384 with -sha384; Ed25519: openssl pkeyutl -sign -rawin)
    const MESSAGE: &[u8] = b"iguana trust test message\n";
    const P256_PUB: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEpK9v+H8TWtVg76lErtcPx7QjLAWv
/usaRw5CcHZmhNsk87NFzsi36QWMIAyQgp7QquHa9y5uTVDGL8cEW8G+PA==
-----END PUBLIC KEY-----
";
    const P256_SIG: &str = "MEYCIQCbJVWf2I7NWoxV+Qotu5nkREdLwQMeQP2hXdQ6vMoJjgIhANZCjMRZ+00CR8mZ+A/l4L+UvH6owLgUvD9Ecxaf2LoP";
    const P384_PUB: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAER4Jwysuivo5wmuNdWSkVxyBtf4LDXAhA
5ZW7PCjmzUr0PLohiryCgl+Yo3/jolJhtdA41b4KYQVEpMmzYl4VH8FInRj/1Av9
OG+emJWVSkcaPwqiSidwZRM5B7Kt9/Ni
-----END PUBLIC KEY-----
";
    const P384_SIG: &str = "MGUCMQDeJIZHg8zj29trsJ/kB169RnQYVLS59fL/fbBLUvhIn5Ulk/i/3wtBfFDtJf+hVGECMD8Wj7752xjdE4qoJy5NZzxCrCUgjMw3WYrmDOJXmve1D8NY5qtyhzXc8SgHNDI44A==";
    const ED25519_PUB: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAZsPcPvedndbZBpiHdiG2gUDsnEv7jUERq2dlKcDNx8w=
-----END PUBLIC KEY-----
";
    const ED25519_SIG: &str = "NDwGKJHKQHKwX12fXJuhxDkw5K2veCk3kmC5HYHrqaTwFDDObF5kSCI6ZaUrVirYNkmfDDfqx7ig2UUhrRTxBA==";
    const RSA_PUB: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDDAWGzCk0WsB1WMDeBGR2YIzHb
sT1CbFbvEvGdcKjDzmSJWd2Nh+oHqpFrsqP5oW7LR8Q+vVrPTE01sT1tUb/MWg5u
x9YW0ObGH4PTDmzljH7GQizdwL7ldv2tEKAPgvBoPUn/vO8c9dFYzzx3VK7kPr+5
EUdEYau9tpp/MnKSgwIDAQAB
-----END PUBLIC KEY-----
";

    fn key(name: &str, pem: &str) -> PublicKey {
        PublicKey::from_pem(name, pem.as_bytes()).unwrap()
    }

    #[test]
    fn parses_the_supported_key_types() {
        let cases = [
            (P256_PUB, Algorithm::EcdsaP256Sha256),
            (P384_PUB, Algorithm::EcdsaP384Sha384),
            (ED25519_PUB, Algorithm::Ed25519),
        ];
        for (pem, algorithm) in cases {
            assert_eq!(key("k.pub", pem).algorithm, algorithm, "{pem}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_supported_public_key() {
        let cases = [
            (RSA_PUB, "trust key k.pub: unsupported key type (ECDSA P-256/P-384 or Ed25519 only)"),
            ("", "trust key k.pub: no PEM PUBLIC KEY block"),
            ("-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----\n", "trust key k.pub: no PEM PUBLIC KEY block"),
            ("-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n", "trust key k.pub: no AlgorithmIdentifier"),
            ("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyAAZsPcPvedndbZBpiHdiG2gUDsnEv7jUERq2dlKcDNx8w=\n-----END PUBLIC KEY-----\n",
             "trust key k.pub: trailing bytes in SubjectPublicKeyInfo"),
        ];
        for (pem, message) in cases {
            let err = PublicKey::from_pem("k.pub", pem.as_bytes()).unwrap_err();
            assert_eq!(err.to_string(), message, "{pem:?}");
        }
    }

    #[test]
    fn verifies_signatures_by_the_key_that_made_them() {
        let keys = Keys::new(vec![
            key("p256.pub", P256_PUB),
            key("p384.pub", P384_PUB),
            key("ed.pub", ED25519_PUB),
        ]);
        let cases = [(P256_SIG, "p256.pub"), (P384_SIG, "p384.pub"), (ED25519_SIG, "ed.pub")];
        for (signature, name) in cases {
            assert_eq!(keys.verify_base64(MESSAGE, signature).unwrap().name, name);
            let err = keys.verify_base64(b"iguana trust test message!", signature).unwrap_err();
            assert_eq!(err.to_string(), "signature by an unknown key");
        }
        // A signature by a key that is not trusted.
        let only_ed = Keys::new(vec![key("ed.pub", ED25519_PUB)]);
        assert!(matches!(only_ed.verify_base64(MESSAGE, P256_SIG), Err(Error::UnknownKey)));
        assert!(matches!(keys.verify_base64(MESSAGE, "not base64!"), Err(Error::SignatureEncoding)));
        assert!(matches!(Keys::default().verify_base64(MESSAGE, P256_SIG), Err(Error::UnknownKey)));
    }

    #[test]
    fn loads_the_pub_files_of_a_directory_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Keys::load_dir(&dir.path().join("missing")).unwrap().is_empty());
        std::fs::write(dir.path().join("b.pub"), P256_PUB).unwrap();
        std::fs::write(dir.path().join("a.pub"), ED25519_PUB).unwrap();
        std::fs::write(dir.path().join("README"), "not a key").unwrap();
        let keys = Keys::load_dir(dir.path()).unwrap();
        let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["a.pub", "b.pub"]);

        std::fs::write(dir.path().join("c.pub"), RSA_PUB).unwrap();
        let err = Keys::load_dir(dir.path()).unwrap_err();
        assert!(err.to_string().starts_with("trust key c.pub: unsupported key type"), "{err}");
    }
}
