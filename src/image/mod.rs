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

mod auth;
mod cli;
mod config;
mod layer;
mod reference;
mod registry;
mod retry;
mod root;
mod staging;
mod unpack;
#[cfg(test)]
mod unpack_tests;

pub use auth::{AuthError, AuthFile, Credentials, DEFAULT_AUTH_FILE};
pub use cli::cli_pull;
pub use config::ImageConfig;
pub use reference::ReferenceError;
pub use registry::RegistryError;
pub use retry::Retry;
pub use staging::StagingError;
pub use unpack::UnpackError;

use reference::ImageRef;
use futures_util::StreamExt;
use registry::{Connect, Registry};
use std::collections::VecDeque;
use std::time::Instant;
use staging::Staging;
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Registries (`HOST:PORT`, as written in image references) spoken to
    /// over plain HTTP. All others use HTTPS with verified certificates.
    pub insecure_registries: Vec<String>,
    /// Blob store directory; verified blobs found there are not downloaded again.
    pub store: PathBuf,
    /// Credentials by registry.
    pub auth: AuthFile,
    /// `(REGISTRY, MIRROR)`: images of REGISTRY are fetched from MIRROR
    /// first (same repository path), from REGISTRY if the mirror fails.
    pub mirrors: Vec<(String, String)>,
    /// Extra HTTPS trust roots, one PEM certificate each.
    pub extra_roots: Vec<Vec<u8>>,
    /// Keep this image's layer blobs in the store after the pull.
    pub keep_blobs: bool,
    pub retry: Retry,
}

/// Layers downloaded at the same time.
const PARALLEL_DOWNLOADS: usize = 3;

/// A failed pull. Every variant names the image (or the directory).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("image {image:?}: invalid reference")]
    Reference {
        image: String,
        #[source]
        source: ReferenceError,
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
    let (registry, manifest, manifest_digest) = resolve(opts, &name, &reference).await?;
    progress(
        &name,
        &format!(
            "manifest {manifest_digest} from {}, {} layers",
            registry.host(),
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
    let mut layers = Vec::new();
    for (desc, diff_id) in manifest.layers.iter().zip(&parsed.diff_ids) {
        if !is_layer_media_type(&desc.media_type) {
            return Err(Error::MediaType {
                image: name,
                digest: desc.digest.clone(),
                media_type: desc.media_type.clone(),
            });
        }
        // Registry digests become file names: only a well-formed one passes.
        let Some(hex) = reference::sha256_hex(&desc.digest) else {
            return Err(Error::Download {
                image: name,
                digest: desc.digest.clone(),
                source: RegistryError::BadDigest(desc.digest.clone()),
            });
        };
        layers.push((desc, hex.to_string(), diff_id.clone()));
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
    let paths: Vec<PathBuf> = layers.iter().map(|(_, hex, _)| blob_dir.join(hex)).collect();
    let result = download_and_apply(&registry, &name, &staging, &layers, &paths).await;
    for path in &paths {
        // Downloads cancelled by another layer's failure leave partial files.
        std::fs::remove_file(path.with_extension(format!("partial-{}", std::process::id()))).ok();
        if !opts.keep_blobs {
            std::fs::remove_file(path).ok();
        }
    }
    result?;
    staging.commit().map_err(|source| Error::Rootfs {
        image: name.clone(),
        source,
    })?;
    progress(&name, &format!("unpacked into {}", rootfs.display()));
    if let Some(free) = free_bytes(&opts.store) {
        let free = i64::try_from(free).unwrap_or(i64::MAX);
        progress(
            &name,
            &format!("{} free on the store's filesystem ({})", human_size(free), opts.store.display()),
        );
    }
    Ok(parsed.config)
}

/// Finds the manifest: on the mirrors of the image's registry first, in
/// order, then on the registry itself. Returns the registry that served it,
/// which also serves the blobs.
async fn resolve(
    opts: &PullOptions,
    name: &str,
    reference: &ImageRef,
) -> Result<(Registry, oci_client::manifest::OciImageManifest, String), Error> {
    let mirrors = opts
        .mirrors
        .iter()
        .filter(|(registry, _)| *registry == reference.registry);
    // The origin is the fallback, so a mirror gets no long retries.
    let mirror_retry = Retry {
        tries: 2,
        ..opts.retry
    };
    for (_, mirror) in mirrors {
        match manifest_from(opts, reference, mirror, mirror_retry).await {
            Ok(found) => return Ok(found),
            Err(err) => progress(name, &format!("mirror {mirror}: {err}; trying the next source")),
        }
    }
    manifest_from(opts, reference, &reference.registry, opts.retry)
        .await
        .map_err(|source| Error::Manifest {
            image: name.to_string(),
            source,
        })
}

async fn manifest_from(
    opts: &PullOptions,
    reference: &ImageRef,
    host: &str,
    retry: Retry,
) -> Result<(Registry, oci_client::manifest::OciImageManifest, String), RegistryError> {
    let endpoint = ImageRef {
        registry: host.to_string(),
        ..reference.clone()
    };
    let connect = Connect {
        insecure_registries: opts.insecure_registries.clone(),
        extra_roots: opts.extra_roots.clone(),
        credentials: opts.auth.get(host).cloned(),
        retry,
    };
    let registry = Registry::new(&endpoint, &connect)?;
    let (manifest, digest) = registry.manifest().await?;
    Ok((registry, manifest, digest))
}

/// Downloads up to [`PARALLEL_DOWNLOADS`] layers at once and applies each
/// one, in layer order, as soon as it and all below it are in the store.
/// Memory stays bounded: blobs stream to files, and the unpacker reads one.
async fn download_and_apply(
    registry: &Registry,
    name: &str,
    staging: &Staging,
    layers: &[(&oci_client::manifest::OciDescriptor, String, String)],
    paths: &[PathBuf],
) -> Result<(), Error> {
    let mut downloads = futures_util::stream::iter(layers.iter().zip(paths))
        .map(|((desc, _, diff_id), path)| async move {
            let start = Instant::now();
            let fetched = registry
                .fetch_blob(desc, path)
                .await
                .map_err(|source| Error::Download {
                    image: name.to_string(),
                    digest: desc.digest.clone(),
                    source,
                })?;
            let how = if fetched {
                rate(desc.size, start.elapsed())
            } else {
                " (cached)".to_string()
            };
            progress(
                name,
                &format!("layer {} {}{how}", short(&desc.digest), human_size(desc.size)),
            );
            Ok::<_, Error>((desc.digest.clone(), PathBuf::clone(path), String::clone(diff_id)))
        })
        .buffered(PARALLEL_DOWNLOADS);
    let mut ready: VecDeque<(String, PathBuf, String)> = VecDeque::new();
    let mut unpacking: Option<(String, tokio::task::JoinHandle<Result<(), Error>>)> = None;
    let mut downloads_done = false;
    let mut failed = None;
    let meter = std::io::stderr().is_terminal().then(|| Meter::new(layers, paths));
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        if unpacking.is_none() && failed.is_none() {
            if let Some((digest, path, diff_id)) = ready.pop_front() {
                let root = staging.root().map_err(|source| Error::ReadLayer {
                    image: name.to_string(),
                    digest: String::clone(&digest),
                    source,
                })?;
                let (image, d) = (name.to_string(), String::clone(&digest));
                let task = tokio::task::spawn_blocking(move || {
                    apply(&image, &d, &path, &diff_id, &root)
                });
                unpacking = Some((digest, task));
            }
        }
        // A failure waits for the running unpack: the staging directory
        // is removed on return, and must not be written to meanwhile.
        if unpacking.is_none() && (downloads_done || failed.is_some()) {
            break;
        }
        tokio::select! {
            _ = tick.tick(), if meter.is_some() && !downloads_done => {
                if let Some(meter) = &meter {
                    meter.show(name);
                }
            }
            next = downloads.next(), if !downloads_done && failed.is_none() => match next {
                Some(Ok(blob)) => ready.push_back(blob),
                Some(Err(err)) => failed = Some(err),
                None => downloads_done = true,
            },
            done = async {
                match unpacking.as_mut() {
                    Some((_, task)) => task.await,
                    None => std::future::pending().await,
                }
            }, if unpacking.is_some() => {
                let digest = unpacking.take().map(|(d, _)| d).unwrap_or_default();
                match done {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => failed = Some(err),
                    Err(_) => failed = Some(Error::Task { image: name.to_string(), digest }),
                }
            }
        }
    }
    match failed {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Free bytes for unprivileged use on the filesystem holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// ` in 1.2 s (40.0 MiB/s)`.
fn rate(bytes: i64, elapsed: std::time::Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    // Display only: precision loss does not matter.
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    let per_sec = (bytes as f64 / secs) as i64;
    format!(" in {secs:.1} s ({}/s)", human_size(per_sec))
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

/// One progress line. On a terminal it first clears the live status line
/// (see [`Meter`]); elsewhere (the console via PID 1) lines are plain.
fn progress(image: &str, message: &str) {
    if std::io::stderr().is_terminal() {
        eprintln!("\r\x1b[Kpull {image}: {message}");
    } else {
        eprintln!("pull {image}: {message}");
    }
}

/// The live status line of a pull on a terminal: bytes per layer, read
/// from the sizes of the blob files (partial or done), so the download
/// path needs no counters.
struct Meter {
    sizes: Vec<u64>,
    paths: Vec<PathBuf>,
    start: Instant,
}

impl Meter {
    fn new(layers: &[(&oci_client::manifest::OciDescriptor, String, String)], paths: &[PathBuf]) -> Meter {
        Meter {
            sizes: layers.iter().map(|(d, _, _)| u64::try_from(d.size).unwrap_or(0)).collect(),
            paths: paths.to_vec(),
            start: Instant::now(),
        }
    }

    fn show(&self, image: &str) {
        let partial_ext = format!("partial-{}", std::process::id());
        let mut line = String::new();
        let (mut done, mut total) = (0u64, 0u64);
        for (i, (path, size)) in self.paths.iter().zip(&self.sizes).enumerate() {
            let have = std::fs::metadata(path)
                .or_else(|_| std::fs::metadata(path.with_extension(&partial_ext)))
                .map_or(0, |m| m.len())
                .min(*size);
            done += have;
            total += size;
            let pct = if *size == 0 { 100 } else { have * 100 / size };
            line.push_str(&format!(" L{}:{pct}%", i + 1));
        }
        let secs = self.start.elapsed().as_secs_f64().max(0.001);
        // Display only: precision loss does not matter.
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        let rate = (done as f64 / secs) as i64;
        let (done, total) = (i64::try_from(done).unwrap_or(0), i64::try_from(total).unwrap_or(0));
        eprint!(
            "\r\x1b[Kpull {image}: {} / {} {}/s{line}",
            human_size(done),
            human_size(total),
            human_size(rate)
        );
    }
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
