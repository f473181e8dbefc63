//! Test fixtures for iguana's integration tests and the xtask end-to-end run:
//! a real `docker-registry` (CNCF distribution) on 127.0.0.1 and images built
//! with `umoci` and pushed with `skopeo`.
//!
//! Everything here talks only to 127.0.0.1. The tools come from Debian
//! packages (`docker-registry`, `umoci`, `skopeo`, `busybox-static`); a missing
//! one gives an error that names the package.

mod blob_proxy;
mod events;
mod blob_signer;
pub mod cosign;
mod fault;
mod files;
mod front;
mod http;
mod image;
mod mirror;
pub mod newc;
mod proxy;
mod referrers;
mod registry;
pub mod sntp;
mod token;

pub use blob_proxy::{BlobFault, BlobProxy, Served};
pub use events::{EventReceiver, Request as ReceivedRequest};
pub use blob_signer::BlobKey;
pub use fault::{push_plain_image, FaultProxy};
pub use files::FileServer;
pub use http::base64;
pub use image::{Entry, Image, Layer};
pub use mirror::{Breakage, BrokenMirror};
pub use proxy::{without_host_proxies, HttpProxy};
pub use referrers::ReferrersFront;
pub use registry::{cert_valid_between, self_signed_cert, Registry, RegistryOptions, TokenAuth};
pub use sntp::SntpServer;
pub use token::TokenServer;

use anyhow::{bail, Context};
use std::process::Command;

/// Runs `cmd` to completion and fails with its stderr if it exits non-zero.
fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("run {cmd:?} (is the tool installed?)"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `BIN pull IMAGE --rootfs DIR ARGS...` (BIN: the test's
/// `CARGO_BIN_EXE_iguana`): whether it succeeded, and stdout then stderr.
pub fn iguana_pull(bin: &str, image: &str, rootfs: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin)
        .arg("pull")
        .arg(image)
        .arg("--rootfs")
        .arg(rootfs)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("spawn {bin}: {err}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
