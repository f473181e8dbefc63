//! The trust chain: which keys the initrd trusts and how a signature is
//! checked against them. With at least one key in [`keys::TRUST_DIR`],
//! everything that runs or is merged must be signed by one of them.
//!
//! Images: [`image`] decides from the bytes [`crate::image::signatures`]
//! fetched (legacy [`simple`] signing payloads and sigstore [`bundle`]s);
//! [`cli`] is `iguana verify`.

pub mod blob;
pub mod bundle;
pub mod cli;
pub mod image;
pub mod keys;
pub mod simple;

pub use keys::{Keys, PublicKey, TRUST_DIR};

/// The initrd's keys, loaded once at boot, and one line saying what that
/// means. A key file that does not parse fails the boot: a broken trust
/// anchor must not quietly turn verification off.
pub fn load_for_boot() -> Result<Keys, keys::Error> {
    let keys = Keys::load_dir(std::path::Path::new(TRUST_DIR))?;
    if keys.is_empty() {
        tracing::warn!("no trust keys in {TRUST_DIR}: nothing is verified, the workflow and its images run unsigned");
    } else {
        let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        tracing::info!(
            "trust: {} keys in {TRUST_DIR} ({}): the workflow and every image must be signed by one of them",
            keys.len(),
            names.join(", ")
        );
    }
    Ok(keys)
}

/// The keys a host command checks with: each `--key FILE` given, else the
/// `*.pub` in [`TRUST_DIR`].
pub fn keys_for_cli(files: &[std::path::PathBuf]) -> Result<Keys, keys::Error> {
    keys_given_or_in(files, std::path::Path::new(TRUST_DIR))
}

/// Each of `files` (a file that cannot be read or parsed is an error
/// naming it), or with none given the `*.pub` in `dir`.
pub fn keys_given_or_in(files: &[std::path::PathBuf], dir: &std::path::Path) -> Result<Keys, keys::Error> {
    if files.is_empty() {
        return Keys::load_dir(dir);
    }
    let mut keys = Vec::new();
    for path in files {
        let pem = crate::fsutil::read_bounded(path, keys::KEY_FILE_LIMIT)
            .map_err(|source| keys::Error::ReadKey { path: path.clone(), source })?;
        keys.push(PublicKey::from_pem(&path.display().to_string(), &pem)?);
    }
    Ok(Keys::new(keys))
}

/// What `iguana validate` says about the signature beside `file`, and
/// whether that is fine: signed by a key, not signed (fine: a note), or a
/// signature that does not verify (not fine).
pub fn signature_note(keys: &Keys, file: &std::path::Path, bytes: &[u8]) -> (String, bool) {
    match blob::beside(file) {
        Ok(None) => ("not signed".to_string(), true),
        Ok(Some((path, _))) if keys.is_empty() => {
            (format!("signature {} not checked: no keys (--key KEY.pub or {TRUST_DIR})", path.display()), true)
        }
        Ok(Some((path, signature))) => match blob::verify(keys, bytes, &signature) {
            Ok(key) => (format!("signed by {} ({})", key.name, path.display()), true),
            Err(e) => (format!("signature {}: {e}", path.display()), false),
        },
        Err(e) => {
            // The chain by hand: this module is also compiled into the
            // pull tests, without crate::logging.
            let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
            (format!("{e}{cause}"), false)
        }
    }
}
