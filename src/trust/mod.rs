//! The trust chain: which keys the initrd trusts and how a signature is
//! checked against them. With at least one key in [`keys::TRUST_DIR`],
//! everything that runs or is merged must be signed by one of them.
//!
//! Images: [`image`] decides from the bytes [`crate::image::signatures`]
//! fetched (legacy [`simple`] signing payloads and sigstore [`bundle`]s);
//! [`cli`] is `iguana verify`.

pub mod bundle;
pub mod cli;
pub mod image;
pub mod keys;
pub mod simple;

pub use keys::{Keys, PublicKey, TRUST_DIR};
