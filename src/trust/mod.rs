//! The trust chain: which keys the initrd trusts and how a signature is
//! checked against them. With at least one key in [`keys::TRUST_DIR`],
//! everything that runs or is merged must be signed by one of them.

pub mod blob;
pub mod keys;

pub use keys::{Keys, PublicKey, TRUST_DIR};
