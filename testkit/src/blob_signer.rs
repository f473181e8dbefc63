//! Signing files the way `cosign sign-blob --key` does, with tools that are
//! not iguana's verifier: `openssl` makes the key pair and the `.sig`
//! (`openssl dgst -sha256 -sign`, base64 as cosign prints it), Python's
//! `cryptography` (Debian `python3-cryptography`) writes the cosign v3
//! blob bundle (`FILE.sigstore.json`, `messageSignature` only: no tlog,
//! as with `cosign sign-blob --key K --tlog-upload=false --bundle F`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// An ECDSA P-256 key pair in a directory: `NAME.key` (PKCS#8 PEM) and
/// `NAME.pub` (SubjectPublicKeyInfo PEM, like cosign.pub).
pub struct BlobKey {
    key: PathBuf,
    public: PathBuf,
}

/// The Python that writes a cosign v3 blob bundle: argv key, file; the
/// bundle on stdout.
const BUNDLE_PY: &str = r#"
import base64, hashlib, json, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
key = serialization.load_pem_private_key(open(sys.argv[1], "rb").read(), password=None)
data = open(sys.argv[2], "rb").read()
spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
b64 = lambda b: base64.b64encode(b).decode()
bundle = {
    "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
    "verificationMaterial": {"publicKey": {"hint": b64(hashlib.sha256(spki).digest())}},
    "messageSignature": {
        "messageDigest": {"algorithm": "SHA2_256", "digest": b64(hashlib.sha256(data).digest())},
        "signature": b64(key.sign(data, ec.ECDSA(hashes.SHA256()))),
    },
}
json.dump(bundle, sys.stdout)
"#;

impl BlobKey {
    /// Generates `dir/NAME.key` and `dir/NAME.pub` with openssl.
    pub fn generate(dir: &Path, name: &str) -> Result<BlobKey> {
        let key = dir.join(format!("{name}.key"));
        let public = dir.join(format!("{name}.pub"));
        crate::run(
            Command::new("openssl")
                .args(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"])
                .arg(&key),
        )?;
        crate::run(Command::new("openssl").args(["pkey", "-pubout", "-in"]).arg(&key).arg("-out").arg(&public))?;
        Ok(BlobKey { key, public })
    }

    /// The public key file (what goes into /etc/iguana/trust/).
    pub fn public(&self) -> &Path {
        &self.public
    }

    /// The base64 signature of `data`, as `cosign sign-blob --key` prints it.
    pub fn sign(&self, data: &[u8]) -> Result<String> {
        let der = self.pipe(Command::new("openssl").args(["dgst", "-sha256", "-sign"]).arg(&self.key), data)?;
        Ok(crate::base64(&der))
    }

    /// A cosign v3 blob bundle (`.sigstore.json`) for `data`.
    pub fn bundle(&self, data: &[u8]) -> Result<Vec<u8>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("blob");
        std::fs::write(&file, data)?;
        let mut cmd = Command::new("python3");
        cmd.args(["-c", BUNDLE_PY]).arg(&self.key).arg(&file);
        self.pipe(&mut cmd, b"").context("python3 with cryptography (apt-get install python3-cryptography)")
    }

    /// Runs `cmd` with `input` on stdin; its stdout.
    fn pipe(&self, cmd: &mut Command, input: &[u8]) -> Result<Vec<u8>> {
        use std::io::Write;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {cmd:?}"))?;
        child.stdin.take().context("stdin")?.write_all(input)?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("{cmd:?} failed with {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(out.stdout)
    }
}
