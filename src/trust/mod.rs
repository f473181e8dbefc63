//! The trust chain: which keys the initrd trusts and how a signature is
//! checked against them. With at least one key in [`keys::TRUST_DIR`],
//! everything that runs or is merged must be signed by one of them.

pub mod blob;
pub mod keys;

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
