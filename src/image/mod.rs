//! Images: pulling an OCI image from a registry and unpacking it into a
//! root filesystem for the container phase.
//!
//! Runs in a child process of PID 1 (`iguana pull ...`, see [`cli_pull`]),
//! so a failure here is a failed step, never a kernel panic. The flow:
//! parse the reference ([`reference`]), fetch manifest and config and
//! stream each layer blob to the blob store, verifying size and sha256
//! ([`registry`]), while the layer is decompressed and unpacked behind the
//! download ([`feed`], [`layer`]): the layers go in order into a staging
//! directory ([`staging`]), each uncompressed stream checked against the
//! config's diff_id and never written outside the root ([`unpack`],
//! [`root`]). Only a fully verified tree is moved into place.
//!
//! PID 1's pulls (`--layers DIR`) unpack each layer into a directory of its
//! own instead, all layers at the same time, and mount the rootfs as an
//! overlay of them ([`overlay`]); a
//! layer already there is neither downloaded nor unpacked again. When the
//! overlay cannot be used, the flattened path above runs, and says why.
//! Behind a mirror, the origin serves whatever blob the mirror fails on.
//!
//! Progress goes to stderr as plain lines (`pull IMAGE: layer sha256:… 1.2 MiB`):
//! PID 1 forwards the child's stderr to the console.

mod auth;
mod budget;
mod cli;
mod config;
mod feed;
mod layer;
pub mod manifest;
mod manifest_get;
pub mod overlay;
mod reference;
mod registry;
mod retry;
mod root;
pub mod signatures;
mod staging;
mod unpack;
#[cfg(test)]
mod unpack_tests;

pub use auth::{AuthError, AuthFile, Credentials, DEFAULT_AUTH_FILE};
pub use cli::{cli_pull, digest_file};
pub use config::ImageConfig;
pub use overlay::{read_layer_list, sibling};
pub use reference::ReferenceError;
pub use registry::RegistryError;
pub use retry::Retry;
pub use staging::StagingError;
pub use unpack::{apply_layer_at, UnpackError, Whiteouts};

use reference::ImageRef;
use futures_util::StreamExt;
use feed::{Feed, FeedReader, LayersDone};
use registry::{Connect, Download, Registry};
use std::sync::Arc;
use std::time::Instant;
use staging::Staging;
use std::ffi::OsStr;
use std::io::{self, IsTerminal};
use std::os::fd::AsFd;
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
    /// Layer directory store: each layer is unpacked into its own directory
    /// here and the rootfs is an overlay of them (see [`overlay`]); `None`
    /// for a flattened rootfs.
    pub layers: Option<PathBuf>,
    pub retry: Retry,
    /// Trusted keys: when there is one, the pulled digest must be signed
    /// by one of them before anything of the image is fetched.
    pub keys: crate::trust::Keys,
    /// The reference is pinned by digest in a verified workflow: that
    /// signature covers it (checked: the pulled digest is the pinned one).
    pub pinned_by_verified_workflow: bool,
    /// At most this many bytes unpacked (the uncompressed layers) and
    /// downloaded (the blobs), enforced while unpacking; the rootfs is then
    /// always a flattened copy.
    pub max_unpacked: Option<u64>,
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
    #[error(
        "image {image}: layer {digest} is a foreign (non-distributable) layer ({media_type}): \
         registries do not serve its content"
    )]
    Foreign {
        image: String,
        digest: String,
        media_type: String,
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
    /// One line: the image, D, why.
    #[error("image {image}: {digest} refused: {reason}")]
    Unsigned { image: String, digest: String, reason: String },
    #[error("image {image}: unpack task of layer {digest} died")]
    Task { image: String, digest: String },
    #[error("image {image}: diff_id {diff_id:?} is not a sha256 digest")]
    BadDiffId { image: String, diff_id: String },
    #[error("image {image}: {step} {path}")]
    LayerDir {
        image: String,
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image {image}: its blobs are more than {max} bytes (--max-unpacked)")]
    TooLarge { image: String, max: u64 },
    /// Stopped at the cap; the source names the layer and entry.
    #[error("image {image}: unpacking stopped at {max} bytes (--max-unpacked)")]
    Unpacked { image: String, max: u64, #[source] source: Box<Error> },
    /// The filesystem (RAM, on a tmpfs) ran out while pulling: the sizes
    /// say by how much, the source where.
    #[error("image {image}: image needs ~{needs_mib} MiB, {mount} has {free_mib} MiB free")]
    NoSpace {
        image: String,
        needs_mib: u64,
        mount: PathBuf,
        free_mib: u64,
        #[source]
        source: Box<Error>,
    },
}

/// Pulls `image` and unpacks it into `rootfs` (created if missing; must be
/// empty). Returns the config the container should run with.
pub async fn pull(opts: &PullOptions, image: &str, rootfs: &Path) -> Result<ImageConfig, Error> {
    pull_resolved(opts, image, rootfs).await.map(|(config, _, _)| config)
}

/// [`pull`], also returning the manifest digest the reference resolved to
/// and the trusted key that signed it (with keys, unless a verified
/// workflow pinned it).
pub async fn pull_resolved(opts: &PullOptions, image: &str, rootfs: &Path) -> Result<(ImageConfig, String, Option<String>), Error> {
    let name = image.to_string();
    let reference = ImageRef::parse(image).map_err(|source| Error::Reference {
        image: name.clone(),
        source,
    })?;
    let (sources, manifest, manifest_digest, pulled) = resolve(opts, &name, &reference).await?;
    // --- trust: before the config or any layer is fetched.
    let signer = check_signature(opts, &sources, &name, &reference, &pulled).await?;
    // --- end trust (signer: the key that signed, reported to PID 1)
    progress(
        &name,
        &format!(
            "manifest {manifest_digest} from {}, {} layers",
            sources.registry.host(),
            manifest.layers.len()
        ),
    );
    let config_digest = manifest.config.digest.clone();
    let blob = sources
        .config(&name, &manifest.config)
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
    let mut needs = u64::try_from(blob.len()).unwrap_or(u64::MAX);
    for (desc, diff_id) in manifest.layers.iter().zip(&parsed.diff_ids) {
        needs = needs.saturating_add(u64::try_from(desc.size).unwrap_or(0));
        if is_foreign_media_type(&desc.media_type) {
            return Err(Error::Foreign {
                image: name,
                digest: desc.digest.clone(),
                media_type: desc.media_type.clone(),
            });
        }
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
    if opts.max_unpacked.is_some_and(|max| needs > max) {
        return Err(Error::TooLarge { image: name, max: opts.max_unpacked.unwrap_or(0) });
    }
    let installed = match install(opts, &sources, &name, &layers, rootfs).await {
        // A mirror's wrong bytes went to the unpacker as they came: the
        // origin serves the image again from the start.
        Err(err) if sources.origin.is_some() && is_wrong_content(&err) => {
            let Sources { registry: mirror, origin } = sources;
            let origin = origin.ok_or_else(|| Error::Task { image: name.clone(), digest: String::new() })?;
            let why = anyhow::Error::from(err);
            progress(&name, &format!("mirror {}: {why:#}; fetching it from {}", mirror.host(), origin.host()));
            let sources = Sources { registry: origin, origin: None };
            install(opts, &sources, &name, &layers, rootfs).await
        }
        other => other,
    };
    installed.map_err(|err| out_of_space(&name, needs, &opts.store, err))?;
    Ok((parsed.config, manifest_digest.to_string(), signer))
}

/// Downloads and unpacks the layers into `rootfs`: an overlay of layer
/// directories when asked and possible, else a flattened copy.
async fn install(
    opts: &PullOptions,
    sources: &Sources,
    name: &str,
    layers: &[LayerRef<'_>],
    rootfs: &Path,
) -> Result<(), Error> {
    let name = name.to_string();
    if let Some(store) = opts.layers.as_ref().filter(|_| opts.max_unpacked.is_none()) {
        match pull_layered(opts, sources, &name, layers, store, rootfs).await? {
            None => {
                log_free(&name, store);
                return Ok(());
            }
            Some(why) => progress(&name, &format!("overlay not used: {why}; unpacking a flattened copy")),
        }
    }
    // Before any download, so a rootfs that is in use fails fast.
    let staging = Staging::prepare(rootfs).map_err(|source| Error::Rootfs {
        image: name.clone(),
        source,
    })?;
    let paths = blob_paths(opts, layers)?;
    let budget = opts.max_unpacked.map(budget::Budget::new);
    let result = download_and_apply(sources, &name, Dest::Flat(&staging, budget.as_ref()), layers, &paths, opts.keep_blobs).await;
    remove_blobs(opts, &paths);
    result?;
    staging.commit().map_err(|source| Error::Rootfs {
        image: name.clone(),
        source,
    })?;
    progress(&name, &format!("unpacked into {}", rootfs.display()));
    log_free(&name, &opts.store);
    Ok(())
}

/// `err` as [`Error::NoSpace`] when a filesystem ran full (or out of
/// memory, on a tmpfs) somewhere in its chain: how much the image needs
/// (its blobs, as the manifest sizes them) against what the store's
/// filesystem has left once the failed pull cleaned up.
fn out_of_space(name: &str, needs: u64, store: &Path, err: Error) -> Error {
    if !is_out_of_space(&err) {
        return err;
    }
    let at = store.ancestors().find(|p| p.exists()).unwrap_or(store);
    Error::NoSpace {
        image: name.to_string(),
        needs_mib: needs.div_ceil(1 << 20),
        mount: mount_point(at),
        free_mib: free_bytes(at).unwrap_or(0) >> 20,
        source: Box::new(err),
    }
}

/// Whether an ENOSPC, EDQUOT or ENOMEM is anywhere in `err`'s chain.
fn is_out_of_space(err: &(dyn std::error::Error + 'static)) -> bool {
    const FULL: [i32; 3] = [28, 122, 12]; // ENOSPC, EDQUOT, ENOMEM
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            let full = io.raw_os_error().is_some_and(|code| FULL.contains(&code))
                || matches!(io.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::OutOfMemory);
            if full {
                return true;
            }
        }
        cause = e.source();
    }
    false
}

/// Whether `err` is a layer whose bytes were wrong (another digest, or
/// more bytes than its descriptor says), as opposed to missing.
fn is_wrong_content(err: &Error) -> bool {
    match err {
        Error::Download { source: RegistryError::Digest { .. }, .. } => true,
        Error::Download { source: RegistryError::Size { expected, actual }, .. } => actual > expected,
        _ => false,
    }
}

/// The mount point of the filesystem holding `path` (the last ancestor on
/// the same device), so the message names `/run` rather than a deep path.
fn mount_point(path: &Path) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    let Some(here) = dev(path) else {
        return path.to_path_buf();
    };
    let mut top = path;
    for parent in path.ancestors().skip(1) {
        if dev(parent) != Some(here) {
            break;
        }
        top = parent;
    }
    top.to_path_buf()
}

/// A layer as the pull sees it: descriptor, blob hex, diff_id.
type LayerRef<'a> = (&'a oci_client::manifest::OciDescriptor, String, String);

/// Where each layer's blob goes in the store.
fn blob_paths(opts: &PullOptions, layers: &[LayerRef<'_>]) -> Result<Vec<PathBuf>, Error> {
    let blob_dir = opts.store.join("blobs").join("sha256");
    std::fs::create_dir_all(&blob_dir).map_err(|source| Error::Store {
        path: blob_dir.clone(),
        source,
    })?;
    Ok(layers.iter().map(|(_, hex, _)| blob_dir.join(hex)).collect())
}

fn remove_blobs(opts: &PullOptions, paths: &[PathBuf]) {
    for path in paths {
        // Downloads cancelled by another layer's failure leave partial files.
        std::fs::remove_file(path.with_extension(format!("partial-{}", std::process::id()))).ok();
        if !opts.keep_blobs {
            std::fs::remove_file(path).ok();
        }
    }
}

fn log_free(name: &str, dir: &Path) {
    if let Some(free) = free_bytes(dir) {
        let free = i64::try_from(free).unwrap_or(i64::MAX);
        progress(
            name,
            &format!("{} free on the store's filesystem ({})", human_size(free), dir.display()),
        );
    }
}

/// Unpacks the layers missing from `store` into their own directories and
/// mounts their overlay on `rootfs`. `Ok(Some(why))` when an overlay cannot
/// be used; the caller then unpacks a flattened copy.
async fn pull_layered(
    opts: &PullOptions,
    sources: &Sources,
    name: &str,
    layers: &[LayerRef<'_>],
    store: &Path,
    rootfs: &Path,
) -> Result<Option<overlay::Unusable>, Error> {
    if let Err(why) = overlay::available() {
        return Ok(Some(why));
    }
    if layers.is_empty() {
        return Ok(Some(overlay::Unusable::NoLayers));
    }
    let diff_ids: Vec<String> = layers.iter().map(|(_, _, diff_id)| diff_id.clone()).collect();
    let dirs: Vec<PathBuf> = overlay::layer_dir_names(&diff_ids)
        .map_err(|diff_id| Error::BadDiffId { image: name.to_string(), diff_id })?
        .iter()
        .map(|dir| store.join(dir))
        .collect();
    let (upper, work) = (overlay::sibling(rootfs, "upper"), overlay::sibling(rootfs, "work"));
    let options = match overlay::options(&dirs, &upper, &work) {
        Ok(options) => options,
        Err(why) => return Ok(Some(why)),
    };
    let dir_err = |step, path: &Path| {
        let (image, path) = (name.to_string(), path.to_path_buf());
        move |source| Error::LayerDir { image, step, path, source }
    };
    std::fs::create_dir_all(store).map_err(dir_err("create", store))?;
    std::fs::create_dir_all(rootfs).map_err(dir_err("create", rootfs))?;
    let in_use = std::fs::read_dir(rootfs).map_err(dir_err("list", rootfs))?.next().is_some();
    if in_use {
        return Err(Error::Rootfs {
            image: name.to_string(),
            source: StagingError::NotEmpty(rootfs.to_path_buf()),
        });
    }
    for dir in [&upper, &work] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(dir_err("remove stale", dir))?;
        }
        std::fs::create_dir(dir).map_err(dir_err("create", dir))?;
    }

    let (mut missing, mut targets) = (Vec::new(), Vec::new());
    for (i, (layer, dir)) in layers.iter().zip(&dirs).enumerate() {
        if dir.is_dir() {
            progress(name, &format!("layer {} already unpacked in {}", short(&layer.0.digest), dir.display()));
        } else {
            missing.push(layer.clone());
            // The layers below, top first: they lend implicit directories
            // their owner and mode.
            let lowers = dirs.get(..i).unwrap_or_default().iter().rev().cloned().collect();
            targets.push(LayerDir { dir: dir.clone(), lowers });
        }
    }
    let paths = blob_paths(opts, &missing)?;
    let done = LayersDone::new(missing.len());
    let result = download_and_apply(sources, name, Dest::Layers(&targets, &done), &missing, &paths, opts.keep_blobs).await;
    remove_blobs(opts, &paths);
    match result {
        // Only a merged tree has that file: unpack flattened instead.
        Err(Error::Unpack { digest, source, .. }) if source.is_missing_link_target() => {
            for dir in [&upper, &work] {
                std::fs::remove_dir_all(dir).ok();
            }
            let path = match &source {
                unpack::UnpackError::Entry { path, .. } => path.clone(),
                _ => String::new(),
            };
            return Ok(Some(overlay::Unusable::CrossLayerLink { digest, path }));
        }
        result => result?,
    }
    // Before the mount: PID 1 releases the layers even if the mount fails.
    overlay::write_layer_list(rootfs, &dirs).map_err(dir_err("write layer list of", rootfs))?;
    if let Some(top) = dirs.last() {
        copy_owner_mode(top, &upper).map_err(dir_err("copy owner and mode to", &upper))?;
    }
    if let Err(why) = overlay::mount(&options, rootfs) {
        for dir in [&upper, &work] {
            std::fs::remove_dir_all(dir).ok();
        }
        return Ok(Some(why));
    }
    progress(
        name,
        &format!("rootfs is an overlay of {} layers on {}", dirs.len(), rootfs.display()),
    );
    Ok(None)
}

/// The overlay's root directory takes the upper directory's owner and
/// mode: give it those of the image's top layer.
fn copy_owner_mode(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(from)?;
    std::os::unix::fs::chown(to, Some(meta.uid()), Some(meta.gid()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
}

/// Where the blobs come from: the registry that served the manifest and,
/// when that was a mirror, the origin, which serves any blob the mirror
/// fails to deliver (down, 5xx, cut off mid-blob, or wrong content).
struct Sources {
    registry: Registry,
    origin: Option<Registry>,
}

impl Sources {
    async fn config(&self, name: &str, desc: &oci_client::manifest::OciDescriptor) -> Result<Vec<u8>, RegistryError> {
        match (self.registry.config(desc).await, &self.origin) {
            (Err(err), Some(origin)) => {
                self.falling_back(name, "config", &desc.digest, &err, origin);
                origin.config(desc).await
            }
            (result, _) => result,
        }
    }

    /// Downloads the blob `desc` to `path` for `feed`'s reader, unless a
    /// verified copy is there; whether it was downloaded. A mirror that
    /// fails midway is continued by the origin from where it stopped.
    async fn fetch_blob(
        &self,
        name: &str,
        desc: &oci_client::manifest::OciDescriptor,
        path: &Path,
        feed: &Arc<Feed>,
        release: bool,
    ) -> Result<bool, RegistryError> {
        let Some(mut download) = Download::begin(desc, path, feed, release).await? else {
            return Ok(false);
        };
        let mut result = self.registry.download(desc, &mut download).await;
        if let (Err(err), Some(origin)) = (&result, &self.origin) {
            // Wrong bytes already went to the unpacker: the caller starts
            // the image over from the origin (see [`pull`]).
            if !download.wrong_content() {
                self.falling_back(name, "layer", &desc.digest, err, origin);
                result = origin.download(desc, &mut download).await;
            }
        }
        download.finish(result)?;
        Ok(true)
    }

    fn falling_back(&self, name: &str, what: &str, digest: &str, err: &RegistryError, origin: &Registry) {
        progress(
            name,
            &format!(
                "mirror {}: {what} {}: {err}; fetching it from {}",
                self.registry.host(),
                short(digest),
                origin.host()
            ),
        );
    }
}

/// Finds the manifest: on the mirrors of the image's registry first, in
/// order, then on the registry itself. The one that served it also serves
/// the blobs, with the origin behind a mirror.
async fn resolve(
    opts: &PullOptions,
    name: &str,
    reference: &ImageRef,
) -> Result<(Sources, oci_client::manifest::OciImageManifest, String, String), Error> {
    let mirrors = opts
        .mirrors
        .iter()
        .filter(|(registry, _)| *registry == reference.registry);
    // The origin is the fallback, so a mirror gets no long retries.
    let mirror_retry = Retry {
        tries: 2,
        ..opts.retry
    };
    let manifest_err = |source| Error::Manifest {
        image: name.to_string(),
        source,
    };
    for (_, mirror) in mirrors {
        match manifest_from(opts, reference, mirror, mirror_retry).await {
            Ok((registry, manifest, digest, pulled)) => {
                let origin = connect(opts, reference, &reference.registry, opts.retry)
                    .map_err(manifest_err)?;
                let sources = Sources { registry, origin: Some(origin) };
                return Ok((sources, manifest, digest, pulled));
            }
            Err(err) => progress(name, &format!("mirror {mirror}: {err}; trying the next source")),
        }
    }
    let (registry, manifest, digest, pulled) = manifest_from(opts, reference, &reference.registry, opts.retry)
        .await
        .map_err(manifest_err)?;
    Ok((Sources { registry, origin: None }, manifest, digest, pulled))
}

/// With trusted keys, refuses `pulled` (the digest of the manifest or index
/// pulled) unless one of them signed it, or it is the digest a verified
/// workflow pinned. Without keys, nothing is checked. Signatures are looked
/// up where the manifest came from; behind a mirror that has none that
/// check, at the origin too, so the verdict on D is the origin's.
async fn check_signature(
    opts: &PullOptions,
    sources: &Sources,
    name: &str,
    reference: &ImageRef,
    pulled: &str,
) -> Result<Option<String>, Error> {
    if opts.keys.is_empty() {
        return Ok(None);
    }
    let refuse = |reason: String| Error::Unsigned { image: name.to_string(), digest: pulled.to_string(), reason };
    if opts.pinned_by_verified_workflow {
        return match reference.digest.as_deref() {
            Some(pinned) if pinned == pulled => {
                progress(name, &format!("{pulled} pinned by the verified workflow"));
                Ok(None)
            }
            Some(pinned) => Err(refuse(format!("pinned digest is {pinned}"))),
            None => Err(refuse("pinned by a verified workflow but the reference has no digest".into())),
        };
    }
    let registry = &sources.registry;
    let (accepted, host) = match (signatures::verify(registry, &opts.keys, pulled).await, &sources.origin) {
        (Ok(accepted), _) => (accepted, registry.host()),
        (Err(err), None) => return Err(refuse(err.to_string())),
        (Err(err), Some(origin)) => match signatures::verify(origin, &opts.keys, pulled).await {
            Ok(accepted) => (accepted, origin.host()),
            Err(at_origin) => {
                let (mirror, origin) = (registry.host(), origin.host());
                return Err(refuse(format!("mirror {mirror}: {err}; origin {origin}: {at_origin}")));
            }
        },
    };
    let place = accepted.place.describe(pulled);
    progress(name, &format!("{pulled} signed by {} ({place} on {host})", accepted.key));
    Ok(Some(accepted.key.to_string()))
}

/// A client for the image `reference` on `host` (a mirror or the origin).
fn connect(opts: &PullOptions, reference: &ImageRef, host: &str, retry: Retry) -> Result<Registry, RegistryError> {
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
    Registry::new(&endpoint, &connect)
}

async fn manifest_from(
    opts: &PullOptions,
    reference: &ImageRef,
    host: &str,
    retry: Retry,
) -> Result<(Registry, oci_client::manifest::OciImageManifest, String, String), RegistryError> {
    let registry = connect(opts, reference, host, retry)?;
    let (manifest, digest, pulled) = registry.manifest().await?;
    Ok((registry, manifest, digest, pulled))
}

/// Downloads up to [`PARALLEL_DOWNLOADS`] layers at once while their
/// unpackers read behind the downloads ([`feed`]): each layer's bytes go
/// through the digest check into its blob's file and from there, at once,
/// through the decompressor (a thread of its own) into the unpacker. Into
/// layer directories, every layer unpacks at the same time as the others;
/// onto a flattened tree, in layer order, a layer's download running ahead
/// of its turn. Memory stays bounded: the file holds what the unpacker has
/// not read yet (read bytes are released unless `keep_blobs`), and the pipe
/// from decompressor to unpacker holds 1 MiB. A blob is deleted as soon as
/// its layer is unpacked, unless `keep_blobs`.
async fn download_and_apply(
    sources: &Sources,
    name: &str,
    dest: Dest<'_>,
    layers: &[LayerRef<'_>],
    paths: &[PathBuf],
    keep_blobs: bool,
) -> Result<(), Error> {
    use futures_util::TryStreamExt;
    let feeds: Vec<Arc<Feed>> = layers.iter().map(|_| Feed::new()).collect();
    let downloads_done = std::sync::atomic::AtomicBool::new(false);
    let downloads = async {
        let result = futures_util::stream::iter(layers.iter().zip(paths).zip(&feeds))
            .map(|(((desc, _, _), path), feed)| async move {
                // A download that fails or is cancelled fails its reader.
                let _end = feed::EndOnDrop(Arc::clone(feed));
                let start = Instant::now();
                let fetched = sources
                    .fetch_blob(name, desc, path, feed, !keep_blobs)
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
                Ok::<_, Error>(())
            })
            .buffered(PARALLEL_DOWNLOADS)
            .try_collect::<Vec<()>>()
            .await;
        // Layers whose download never started must not wait for it.
        for feed in &feeds {
            feed.end(false);
        }
        downloads_done.store(true, std::sync::atomic::Ordering::Relaxed);
        result.map(|_| ())
    };
    let unpacks = async {
        let spawn = |i: usize| {
            let ((desc, _, diff_id), (feed, blob)) = (&layers[i], (&feeds[i], &paths[i]));
            let blob = (!keep_blobs).then(|| blob.clone());
            dest.spawn(i, name, &desc.digest, feed.reader(), diff_id.clone(), blob)
        };
        let join = |i: usize, done: Result<Result<(), Error>, tokio::task::JoinError>| match done {
            Ok(result) => result.map_err(|e| (i, e)),
            Err(_) => Err((i, Error::Task { image: name.to_string(), digest: layers[i].0.digest.clone() })),
        };
        match dest {
            // In order: a layer's turn comes when the one below is applied.
            Dest::Flat(..) => {
                for i in 0..layers.len() {
                    let task = spawn(i).map_err(|e| (i, e))?;
                    join(i, task.await)?;
                }
                Ok(())
            }
            // All at once; every one is awaited, even after a failure.
            Dest::Layers(..) => {
                let tasks: Vec<_> = (0..layers.len()).map(spawn).collect();
                let mut first = Ok(());
                for (i, task) in tasks.into_iter().enumerate() {
                    let done = match task {
                        Ok(task) => join(i, task.await),
                        Err(e) => Err((i, e)),
                    };
                    if first.is_ok() {
                        first = done;
                    }
                }
                first
            }
        }
    };
    let meter = async {
        let Some(meter) = std::io::stderr().is_terminal().then(|| Meter::new(layers, paths)) else {
            return std::future::pending().await;
        };
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
        loop {
            tick.tick().await;
            if !downloads_done.load(std::sync::atomic::Ordering::Relaxed) {
                meter.show(name);
            }
        }
    };
    let (downloaded, unpacked) = tokio::select! {
        done = async { tokio::join!(downloads, unpacks) } => done,
        () = meter => unreachable!("the meter never ends"),
    };
    match (downloaded, unpacked) {
        // An unpack that failed for want of bytes: the download says why.
        (Err(err), Err((i, _))) if feeds.get(i).is_some_and(|f| f.failed()) => Err(err),
        (_, Err((_, err))) | (Err(err), Ok(())) => Err(err),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// A layer being unpacked on a blocking thread.
type UnpackTask = tokio::task::JoinHandle<Result<(), Error>>;

/// Where layers are unpacked.
#[derive(Clone, Copy)]
enum Dest<'a> {
    /// All layers in order onto one staging tree, within a budget.
    Flat(&'a Staging, Option<&'a Arc<budget::Budget>>),
    /// Each layer into its own directory, one per layer given, all at
    /// once: each waits for those below when it needs their trees.
    Layers(&'a [LayerDir], &'a Arc<LayersDone>),
}

/// A layer's directory in the layer store and the directories of the
/// layers below it, top first.
struct LayerDir {
    dir: PathBuf,
    lowers: Vec<PathBuf>,
}

impl Dest<'_> {
    /// Starts unpacking the `index`th layer given from its blob as it
    /// downloads, on a blocking thread; then deletes the `delete` blob.
    fn spawn(
        self,
        index: usize,
        image: &str,
        digest: &str,
        blob: FeedReader,
        diff_id: String,
        delete: Option<PathBuf>,
    ) -> Result<UnpackTask, Error> {
        let (image, digest) = (image.to_string(), digest.to_string());
        let delete = move || {
            if let Some(blob) = delete {
                if let Err(e) = std::fs::remove_file(&blob) {
                    tracing::debug!(blob = %blob.display(), %e, "remove unpacked blob");
                }
            }
        };
        match self {
            Dest::Flat(staging, budget) => {
                let budget = budget.cloned();
                let root = staging.root().map_err(|source| Error::ReadLayer {
                    image: image.clone(),
                    digest: digest.clone(),
                    source,
                })?;
                Ok(tokio::task::spawn_blocking(move || {
                    apply(&image, &digest, blob, &diff_id, &root, Whiteouts::Apply, budget).map(|()| delete())
                }))
            }
            Dest::Layers(targets, done) => {
                // Set on every way out, so layers above never wait forever.
                let verdict = LayerVerdict(Arc::clone(done), index, false);
                let Some(LayerDir { dir, lowers }) = targets.get(index) else {
                    return Err(Error::Task { image, digest });
                };
                let (dir, lowers) = (dir.clone(), lowers.clone());
                Ok(tokio::task::spawn_blocking(move || {
                    let mut verdict = verdict;
                    let waiter = Arc::clone(&verdict.0);
                    let ready: root::LowersReady = Box::new(move || waiter.wait_below(index));
                    let result = apply_to_layer_dir(&image, &digest, blob, &diff_id, &dir, &lowers, ready);
                    verdict.2 = result.is_ok();
                    drop(verdict);
                    result.map(|()| delete())
                }))
            }
        }
    }
}

/// Tells the layers above how layer `.1` went (`.2`) when dropped.
struct LayerVerdict(Arc<LayersDone>, usize, bool);

impl Drop for LayerVerdict {
    fn drop(&mut self) {
        self.0.set(self.1, self.2);
    }
}

/// Unpacks one layer into its directory `dir` (`STORE/sha256-CHAINID`) on
/// top of `lowers`, which may still be unpacking (`ready` waits for them):
/// first into a temporary directory, renamed into place once blob digest
/// and diff_id have verified and the lowers are complete, so a layer
/// directory that exists is always complete.
fn apply_to_layer_dir(
    image: &str,
    digest: &str,
    blob: FeedReader,
    diff_id: &str,
    dir: &Path,
    lowers: &[PathBuf],
    ready: root::LowersReady,
) -> Result<(), Error> {
    let (Some(store), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(Error::BadDiffId { image: image.to_string(), diff_id: diff_id.to_string() });
    };
    let tmp_name = format!(".{}.{}", name.to_string_lossy(), std::process::id());
    let (dir, tmp) = (dir.to_path_buf(), store.join(&tmp_name));
    let dir_err = |step, path: &Path| {
        let (image, path) = (image.to_string(), path.to_path_buf());
        move |source| Error::LayerDir { image, step, path, source }
    };
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(dir_err("remove stale", &tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(dir_err("create", &tmp))?;
    let applied = std::fs::File::open(store)
        .and_then(|store| root::Root::open_at(store.as_fd(), OsStr::new(&tmp_name)))
        .map(|root| root.with_lowers_later(lowers, ready))
        .map_err(dir_err("open", &tmp))
        .and_then(|root| {
            apply(image, digest, blob, diff_id, &root, Whiteouts::Overlay, None)?;
            root.finish().map_err(dir_err("give the root the lower layers' owner and mode in", &tmp))
        });
    let result = applied.and_then(|()| match std::fs::rename(&tmp, &dir) {
        // Another pull put the same layer there first: the same content.
        Err(e) if dir.is_dir() => {
            tracing::debug!(dir = %dir.display(), %e, "layer directory already there");
            Ok(())
        }
        other => other.map_err(dir_err("rename into place", &dir)),
    });
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).ok();
    }
    result
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

/// Applies one blob, read as it downloads, onto `root` and checks its
/// diff_id. The blob's end is reached only once its digest has verified.
/// With a `budget` spent, whatever error stopped the unpack is reported as
/// the cap's (the tar parser only saw its stream end).
fn apply(
    image: &str,
    digest: &str,
    blob: FeedReader,
    diff_id: &str,
    root: &root::Root,
    whiteouts: Whiteouts,
    budget: Option<Arc<budget::Budget>>,
) -> Result<(), Error> {
    let cap = budget.clone();
    let too_large = |err: Error| match &cap {
        Some(b) if b.exceeded() => Error::Unpacked { image: image.into(), max: b.max(), source: Box::new(err) },
        _ => err,
    };
    let read_err = |source| Error::ReadLayer {
        image: image.into(),
        digest: digest.into(),
        source,
    };
    let applied = || -> Result<(), Error> {
        // On an unpack error the inflater is left to end on its own: it
        // stops at its next chunk, or when the download ends.
        let (pipe, inflater) = layer::inflate_in_thread(blob).map_err(read_err)?;
        let pipe = budget::Bounded::new(pipe, budget);
        let mut pipe = unpack::apply_layer_as(root, pipe, whiteouts).map_err(|source| Error::Unpack {
            image: image.into(),
            digest: digest.into(),
            source,
        })?;
        // What the tar parser left: the end-of-archive padding.
        io::copy(&mut pipe, &mut io::sink()).map_err(read_err)?;
        let actual = inflater
            .join()
            .map_err(|_| Error::Task { image: image.into(), digest: digest.into() })?
            .map_err(read_err)?;
        if actual != diff_id {
            return Err(Error::DiffId {
                image: image.into(),
                digest: digest.into(),
                expected: diff_id.into(),
                actual,
            });
        }
        Ok(())
    };
    applied().map_err(too_large)
}

/// Layer media types we unpack (OCI and Docker; any compression, since
/// the blob is sniffed). Other artifacts are not root filesystems.
fn is_layer_media_type(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.")
}

/// Foreign (Docker) and non-distributable (OCI) layers: their content lives
/// at the descriptor's `urls`, outside the registry, and is not fetched.
fn is_foreign_media_type(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.nondistributable.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.foreign.")
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
    fn new(layers: &[LayerRef<'_>], paths: &[PathBuf]) -> Meter {
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
        for (media_type, foreign) in [
            ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", true),
            ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", true),
            ("application/vnd.oci.image.layer.v1.tar+gzip", false),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", false),
        ] {
            assert_eq!(is_foreign_media_type(media_type), foreign, "{media_type}");
        }
    }
}
