//! Images: pulling an OCI image from a registry and unpacking it into a
//! root filesystem for the container phase.
//!
//! Runs in a child process of PID 1 (`iguana pull ...`, see [`cli_pull`]),
//! so a failure here is a failed step, never a kernel panic. The flow:
//! parse the reference ([`reference`]), fetch manifest and config and
//! stream each layer blob to the blob store, verifying size and sha256
//! ([`registry`]); then apply the layers in order into a staging directory
//! ([`staging`]), checking each uncompressed stream against the config's
//! diff_id ([`layer`]) and never writing outside the root ([`unpack`],
//! [`root`]). Only a fully verified tree is moved into place.
//!
//! Progress goes to stderr as plain lines (`pull IMAGE: layer sha256:… 1.2 MiB`):
//! PID 1 forwards the child's stderr to the console.

mod cli;
mod config;
mod layer;
mod reference;
mod registry;
mod root;
mod staging;
mod unpack;
#[cfg(test)]
mod unpack_tests;

pub use cli::cli_pull;
pub use config::ImageConfig;
pub use reference::ReferenceError;
pub use registry::RegistryError;
pub use staging::StagingError;
pub use unpack::UnpackError;

use reference::ImageRef;
use registry::Registry;
use staging::Staging;
use std::io;
use std::path::{Path, PathBuf};

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Registries (`HOST:PORT`, as written in image references) spoken to
    /// over plain HTTP. All others use HTTPS with verified certificates.
    pub insecure_registries: Vec<String>,
    /// Blob store directory; verified blobs found there are not downloaded again.
    pub store: PathBuf,
}

/// A failed pull. Every variant names the image (or the directory).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("image {image:?}: invalid reference")]
    Reference {
        image: String,
        #[source]
        source: ReferenceError,
    },
    #[error("image {image}")]
    Client {
        image: String,
        #[source]
        source: RegistryError,
    },
    #[error("image {image}: fetch manifest")]
    Manifest {
        image: String,
        #[source]
        source: RegistryError,
    },
    #[error("image {image}: fetch config {digest}")]
    Config {
        image: String,
        digest: String,
        #[source]
        source: RegistryError,
    },
    #[error("image {image}: parse config {digest}")]
    ParseConfig {
        image: String,
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "image {image}: manifest lists {layers} layers but the config has {diff_ids} diff_ids"
    )]
    LayerCount {
        image: String,
        layers: usize,
        diff_ids: usize,
    },
    #[error("image {image}: layer {digest} has unsupported media type {media_type:?}")]
    MediaType {
        image: String,
        digest: String,
        media_type: String,
    },
    #[error("image {image}: download layer {digest}")]
    Download {
        image: String,
        digest: String,
        #[source]
        source: RegistryError,
    },
    #[error("image {image}: unpack layer {digest}")]
    Unpack {
        image: String,
        digest: String,
        #[source]
        source: UnpackError,
    },
    #[error("image {image}: read layer {digest}")]
    ReadLayer {
        image: String,
        digest: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "image {image}: layer {digest} unpacks to {actual}, but the config's diff_id is {expected}"
    )]
    DiffId {
        image: String,
        digest: String,
        expected: String,
        actual: String,
    },
    #[error("image {image}")]
    Rootfs {
        image: String,
        #[source]
        source: StagingError,
    },
    #[error("blob store {path}")]
    Store {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image {image}: unpack task of layer {digest} died")]
    Task { image: String, digest: String },
}

/// Pulls `image` and unpacks it into `rootfs` (created if missing; must be
/// empty). Returns the config the container should run with.
pub async fn pull(opts: &PullOptions, image: &str, rootfs: &Path) -> Result<ImageConfig, Error> {
    let name = image.to_string();
    let reference = ImageRef::parse(image).map_err(|source| Error::Reference {
        image: name.clone(),
        source,
    })?;
    let registry =
        Registry::new(&reference, &opts.insecure_registries).map_err(|source| Error::Client {
            image: name.clone(),
            source,
        })?;

    let (manifest, manifest_digest) =
        registry
            .manifest()
            .await
            .map_err(|source| Error::Manifest {
                image: name.clone(),
                source,
            })?;
    progress(
        &name,
        &format!(
            "manifest {manifest_digest}, {} layers",
            manifest.layers.len()
        ),
    );
    let config_digest = manifest.config.digest.clone();
    let blob = registry
        .config(&manifest.config)
        .await
        .map_err(|source| Error::Config {
            image: name.clone(),
            digest: config_digest.clone(),
            source,
        })?;
    let parsed = config::parse(&blob).map_err(|source| Error::ParseConfig {
        image: name.clone(),
        digest: config_digest,
        source,
    })?;
    if parsed.diff_ids.len() != manifest.layers.len() {
        return Err(Error::LayerCount {
            image: name,
            layers: manifest.layers.len(),
            diff_ids: parsed.diff_ids.len(),
        });
    }

    // Before any download, so a rootfs that is in use fails fast.
    let staging = Staging::prepare(rootfs).map_err(|source| Error::Rootfs {
        image: name.clone(),
        source,
    })?;
    let blob_dir = opts.store.join("blobs").join("sha256");
    std::fs::create_dir_all(&blob_dir).map_err(|source| Error::Store {
        path: blob_dir.clone(),
        source,
    })?;
    let mut blobs = Vec::new();
    for desc in &manifest.layers {
        let digest = desc.digest.clone();
        if !is_layer_media_type(&desc.media_type) {
            return Err(Error::MediaType {
                image: name,
                digest,
                media_type: desc.media_type.clone(),
            });
        }
        // Registry digests become file names: only a well-formed one passes.
        let Some(hex) = reference::sha256_hex(&digest) else {
            return Err(Error::Download {
                image: name,
                digest: digest.clone(),
                source: RegistryError::BadDigest(digest),
            });
        };
        let path = blob_dir.join(hex);
        let fetched = registry
            .fetch_blob(desc, &path)
            .await
            .map_err(|source| Error::Download {
                image: name.clone(),
                digest: digest.clone(),
                source,
            })?;
        let how = if fetched { "" } else { " (cached)" };
        progress(
            &name,
            &format!("layer {} {}{how}", short(&digest), human_size(desc.size)),
        );
        blobs.push((digest, path));
    }

    for ((digest, path), diff_id) in blobs.into_iter().zip(parsed.diff_ids) {
        let root = staging.root().map_err(|source| Error::ReadLayer {
            image: name.clone(),
            digest: digest.clone(),
            source,
        })?;
        let (image, task_digest) = (name.clone(), digest.clone());
        tokio::task::spawn_blocking(move || apply(&image, &task_digest, &path, &diff_id, &root))
            .await
            .map_err(|_| Error::Task {
                image: name.clone(),
                digest,
            })??;
    }
    staging.commit().map_err(|source| Error::Rootfs {
        image: name.clone(),
        source,
    })?;
    progress(&name, &format!("unpacked into {}", rootfs.display()));
    Ok(parsed.config)
}

/// Applies one verified blob onto the staging root and checks its diff_id.
fn apply(
    image: &str,
    digest: &str,
    blob: &Path,
    diff_id: &str,
    root: &root::Root,
) -> Result<(), Error> {
    let read_err = |source| Error::ReadLayer {
        image: image.into(),
        digest: digest.into(),
        source,
    };
    let file = std::fs::File::open(blob).map_err(read_err)?;
    let stream = layer::TarStream::new(file).map_err(read_err)?;
    let stream = unpack::apply_layer(root, stream).map_err(|source| Error::Unpack {
        image: image.into(),
        digest: digest.into(),
        source,
    })?;
    let actual = stream.finish().map_err(read_err)?;
    if actual != diff_id {
        return Err(Error::DiffId {
            image: image.into(),
            digest: digest.into(),
            expected: diff_id.into(),
            actual,
        });
    }
    Ok(())
}

/// Layer media types we unpack (OCI and Docker; any compression, since
/// the blob is sniffed). Other artifacts are not root filesystems.
fn is_layer_media_type(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.")
}

fn progress(image: &str, message: &str) {
    eprintln!("pull {image}: {message}");
}

/// `sha256:0123456789ab…`: enough to tell layers apart on a console line.
fn short(digest: &str) -> String {
    match digest.char_indices().nth(19) {
        Some((i, _)) => format!("{}…", &digest[..i]),
        None => digest.to_string(),
    }
}

fn human_size(bytes: i64) -> String {
    // Display only: precision loss in the conversion does not matter.
    #[allow(clippy::cast_precision_loss)]
    let b = bytes as f64;
    match bytes {
        ..=1023 => format!("{bytes} B"),
        1024..=1_048_575 => format!("{:.1} KiB", b / 1024.0),
        1_048_576..=1_073_741_823 => format!("{:.1} MiB", b / 1_048_576.0),
        _ => format!("{:.1} GiB", b / 1_073_741_824.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_digests_for_humans() {
        for (bytes, expected) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1536, "1.5 KiB"),
            (1_258_291, "1.2 MiB"),
            (3 << 30, "3.0 GiB"),
        ] {
            assert_eq!(human_size(bytes), expected);
        }
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(short(d), "sha256:0123456789ab…");
        assert_eq!(short("sha256:01"), "sha256:01");
    }

    #[test]
    fn layer_media_types() {
        for (media_type, ok) in [
            ("application/vnd.oci.image.layer.v1.tar", true),
            ("application/vnd.oci.image.layer.v1.tar+gzip", true),
            ("application/vnd.oci.image.layer.v1.tar+zstd", true),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", true),
            ("application/vnd.cncf.helm.chart.content.v1.tar+gzip", false),
            ("", false),
        ] {
            assert_eq!(is_layer_media_type(media_type), ok, "{media_type}");
        }
    }
}
