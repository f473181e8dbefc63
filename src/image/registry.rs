//! Talking to the registry with oci-client: resolve the manifest (an image
//! index resolves to linux/<this arch>), fetch the config, and stream layer
//! blobs to files, verifying size and sha256 on the way, while their
//! unpacker reads behind the download ([`super::feed`]).
//!
//! Transient failures (connection refused or reset, timeouts, 5xx, 429) are
//! retried with backoff ([`super::retry`]); a layer download broken off
//! midway resumes with a Range request from the bytes already written and
//! hashed, or skips those bytes if the registry ignores the Range. A
//! transfer that stalls (no byte for [`Retry::stall`]) is broken off and
//! retried the same way; one whose every byte arrived and verified is kept
//! even if the connection fails afterwards.
//!
//! Never `Client::pull`: it holds every layer in memory. oci-client's errors
//! nest reqwest's and hyper's; [`RegistryError::from_oci`] boils them down to
//! one short line ("manifest unknown", "connection refused").

use super::reference::{sha256_hex, ImageRef};
use super::auth::Credentials;
use super::retry::Retry;
use futures_util::StreamExt;
use oci_client::client::{BlobResponse, Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use oci_spec::image::{Arch, Os};
use sha2::{Digest, Sha256};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use super::feed::Feed;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Configs are small JSON documents; anything bigger is not one.
const MAX_CONFIG_SIZE: u64 = 8 << 20;
/// Longest registry error text kept in a message.
const MAX_MESSAGE: usize = 200;

/// A failed exchange with the registry, in one short line.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("create HTTP client: {0}")]
    Client(String),
    #[error("cannot reach {registry}: {reason}")]
    Unreachable { registry: String, reason: String },
    #[error("TLS certificate of {registry} not trusted: {reason}")]
    Certificate { registry: String, reason: String },
    #[error("connection to {registry} broken: {reason}")]
    Interrupted { registry: String, reason: String },
    #[error("HTTP {code}: {message}")]
    Http { code: u16, message: String },
    #[error("{0}")]
    Response(String),
    #[error("registry sent an invalid digest {0:?}")]
    BadDigest(String),
    #[error("descriptor size {0} is invalid")]
    BadSize(i64),
    #[error("{size} bytes is too large for a config")]
    ConfigTooLarge { size: u64 },
    #[error("content has {actual} bytes, descriptor says {expected}")]
    Size { expected: u64, actual: u64 },
    #[error("content digest is {actual}, expected {expected}")]
    Digest { expected: String, actual: String },
    #[error("invalid manifest")]
    Manifest(#[source] super::manifest::ManifestError),
    #[error("{step} {path}")]
    Store {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl RegistryError {
    /// Whether trying again later may succeed: the network or the server
    /// had a bad moment, as opposed to a refusal or bad content.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } | RegistryError::Interrupted { .. } => true,
            RegistryError::Http { code, .. } => *code >= 500 || *code == 429,
            _ => false,
        }
    }

    /// Condenses an oci-client error to its essential part.
    pub(super) fn from_oci(registry: &str, err: OciDistributionError) -> RegistryError {
        use OciDistributionError as E;
        match err {
            E::RegistryError { envelope, .. }
                if envelope
                    .errors
                    .iter()
                    .any(|e| e.code == OciErrorCode::Toomanyrequests) =>
            {
                RegistryError::Http {
                    code: 429,
                    message: "too many requests".into(),
                }
            }
            E::RegistryError { envelope, .. } => {
                let texts: Vec<String> = envelope
                    .errors
                    .iter()
                    .map(|e| match (&e.code, e.message.is_empty()) {
                        (OciErrorCode::ManifestUnknown, _) => "manifest unknown".to_string(),
                        (OciErrorCode::NameUnknown, _) => "repository unknown".to_string(),
                        (OciErrorCode::BlobUnknown, _) => "blob unknown".to_string(),
                        (_, false) => e.message.clone(),
                        (code, true) => format!("{code:?}"),
                    })
                    .collect();
                RegistryError::Response(texts.join("; "))
            }
            E::ServerError { code, message, .. } => RegistryError::Http {
                code,
                message: clip(message.trim()),
            },
            E::UnauthorizedError { .. } => RegistryError::Response("unauthorized".into()),
            E::AuthenticationFailure(m) => {
                RegistryError::Response(format!("authentication failed: {}", clip(&m)))
            }
            E::ImageManifestNotFoundError(m) => RegistryError::Response(clip(&m)),
            E::DigestError(e) => RegistryError::Response(clip(&e.to_string())),
            E::RequestError(e) => {
                let (registry, reason) = (registry.to_string(), root_cause(&e));
                // rustls's verdict on the chain does not change on retry.
                if reason.starts_with("invalid peer certificate") {
                    RegistryError::Certificate { registry, reason }
                } else {
                    RegistryError::Unreachable { registry, reason }
                }
            }
            E::IoError(e) => RegistryError::Response(clip(&e.to_string())),
            other => RegistryError::Response(clip(&other.to_string())),
        }
    }
}

/// A reqwest client set up as oci-client sets up its own from `config`
/// (before the proxy is added to it: `rd.iguana.proxy` is read here).
fn manifest_client(config: &ClientConfig) -> Result<reqwest::Client, RegistryError> {
    let client_err = |e: reqwest::Error| RegistryError::Client(root_cause(&e));
    let mut builder = reqwest::Client::builder().user_agent(config.user_agent);
    let roots = config
        .extra_root_certificates
        .iter()
        .map(|c| reqwest::Certificate::from_pem(&c.data))
        .collect::<Result<Vec<_>, _>>()
        .map_err(client_err)?;
    builder = builder.tls_certs_merge(roots);
    if let Some(timeout) = config.read_timeout {
        builder = builder.read_timeout(timeout);
    }
    if let Some(timeout) = config.connect_timeout {
        builder = builder.connect_timeout(timeout);
    }
    // As oci-client: only rd.iguana.proxy, never the host's *_PROXY.
    builder = builder.no_proxy();
    if let Some(proxy) = crate::proxy::Proxy::from_env() {
        let no_proxy = reqwest::NoProxy::from_string(&proxy.no_proxy.join(","));
        builder = builder.proxy(reqwest::Proxy::all(&proxy.url).map_err(client_err)?.no_proxy(no_proxy));
    }
    builder.build().map_err(client_err)
}

/// The innermost cause of an error chain, which is the one that says what
/// happened ("Connection refused (os error 111)", "invalid peer certificate").
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if let Some(io) = cause.downcast_ref::<io::Error>() {
        match io.kind() {
            io::ErrorKind::ConnectionRefused => return "connection refused".into(),
            io::ErrorKind::TimedOut => return "timed out".into(),
            _ => {}
        }
    }
    let text = cause.to_string();
    if text.contains("InvalidContentType") {
        // rustls reading a plain-HTTP answer to its ClientHello.
        return "TLS handshake failed (plain-HTTP registry? list it as insecure)".into();
    }
    if text.contains("operation timed out") {
        return "timed out".into();
    }
    clip(&text)
}

fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// Picks the manifest for linux on the architecture we run on.
fn linux_this_arch(entries: &[ImageIndexEntry]) -> Option<String> {
    entries
        .iter()
        .find(|e| {
            e.platform
                .as_ref()
                .is_some_and(|p| p.os == Os::Linux && p.architecture == Arch::default())
        })
        .map(|e| e.digest.clone())
}

/// How to connect to a registry, beyond its name.
#[derive(Debug, Clone, Default)]
pub struct Connect {
    /// Registries (`HOST:PORT`) spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Extra trust roots for HTTPS, one PEM certificate each.
    pub extra_roots: Vec<Vec<u8>>,
    /// Basic credentials for this registry; anonymous when `None`.
    /// oci-client does the bearer-token flow with them when the registry
    /// asks for it (`WWW-Authenticate: Bearer realm=...`).
    pub credentials: Option<Credentials>,
    pub retry: Retry,
}

/// One image on one registry.
pub struct Registry {
    client: Client,
    reference: oci_client::Reference,
    registry: String,
    auth: RegistryAuth,
    retry: Retry,
    /// Manifests are fetched with a size bound (oci-client reads them whole).
    manifests: super::manifest_get::ManifestGet,
}

impl Registry {
    /// HTTPS with verified certificates, except plain HTTP for the
    /// registries listed (HOST:PORT exactly as in the image reference).
    pub fn new(image: &ImageRef, connect: &Connect) -> Result<Registry, RegistryError> {
        let mut config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(connect.insecure_registries.clone()),
            platform_resolver: Some(Box::new(linux_this_arch)),
            connect_timeout: Some(CONNECT_TIMEOUT),
            // Per read: a manifest or config request that stalls fails.
            read_timeout: Some(connect.retry.stall),
            extra_root_certificates: connect
                .extra_roots
                .iter()
                .map(|pem| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            ..Default::default()
        };
        // reqwest is built without a crypto provider of its own (one in the
        // binary: ring, Cargo.toml); an earlier call already installed it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let plain_http = connect.insecure_registries.iter().any(|r| r == &image.registry);
        let manifests = super::manifest_get::ManifestGet::new(manifest_client(&config)?, plain_http);
        // rd.iguana.proxy: plain HTTP to the proxy, HTTPS through CONNECT.
        if let Some(proxy) = crate::proxy::Proxy::from_env() {
            config.http_proxy = Some(proxy.url.clone());
            config.https_proxy = Some(proxy.url);
            config.no_proxy = Some(proxy.no_proxy.join(",")).filter(|n| !n.is_empty());
        }
        let client = Client::try_from(config).map_err(|e| RegistryError::Client(root_cause(&e)))?;
        let auth = match &connect.credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        Ok(Registry {
            client,
            reference: image.to_oci(),
            registry: image.registry.clone(),
            auth,
            retry: connect.retry,
            manifests,
        })
    }

    /// Body and digest of `manifests/REF` on this registry, at most `max`
    /// bytes read: what oci-client's `pull_manifest_raw` gives, bounded.
    pub(super) async fn manifest_get(
        &self,
        reference: &oci_client::Reference,
        accept: &[&str],
        max: usize,
    ) -> Result<(Vec<u8>, String), super::manifest_get::GetError> {
        self.manifests.get(&self.client, reference, &self.auth, accept, max).await
    }

    /// The referrers index of `reference`'s digest of `artifact_type`, at
    /// most `max` bytes read (oci-client's `pull_referrers`, bounded).
    pub(super) async fn referrers_get(
        &self,
        reference: &oci_client::Reference,
        artifact_type: &str,
        max: usize,
    ) -> Result<oci_client::manifest::OciImageIndex, super::manifest_get::GetError> {
        self.manifests.referrers(&self.client, reference, &self.auth, artifact_type, max).await
    }

    /// `HOST:PORT` of this registry.
    pub fn host(&self) -> &str {
        &self.registry
    }

    /// The image manifest and its digest; an index resolves to the entry
    /// for linux on this architecture. Bodies are parsed by the pure
    /// [`super::manifest::parse`]. The third value is the sha256 of the
    /// first body pulled (the index when there is one): what cosign signs.
    pub async fn manifest(&self) -> Result<(OciImageManifest, String, String), RegistryError> {
        use super::manifest::{parse, Manifest};
        let (body, digest) = self.manifest_raw(&self.reference).await?;
        let pulled = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        let entries = match parse(&body).map_err(RegistryError::Manifest)? {
            Manifest::Image(manifest) => return Ok((*manifest, digest, pulled)),
            Manifest::Index(entries) => entries,
        };
        let Some(chosen) = linux_this_arch(&entries) else {
            return Err(RegistryError::Response("no linux manifest for this architecture in the image index".into()));
        };
        let (body, digest) = self.manifest_raw(&self.reference.clone_with_digest(chosen)).await?;
        match parse(&body).map_err(RegistryError::Manifest)? {
            Manifest::Image(manifest) => Ok((*manifest, digest, pulled)),
            Manifest::Index(_) => Err(RegistryError::Response("an image index entry is another index".into())),
        }
    }

    /// The oci-client, reference and credentials, for the signature
    /// lookups of [`super::signatures`].
    pub(super) fn oci(&self) -> (&Client, &oci_client::Reference, &RegistryAuth) {
        (&self.client, &self.reference, &self.auth)
    }

    pub(super) fn retry(&self) -> Retry {
        self.retry
    }

    /// The body and digest of `manifests/REF`, with retries.
    async fn manifest_raw(&self, reference: &oci_client::Reference) -> Result<(Vec<u8>, String), RegistryError> {
        let what = format!("{}: fetch manifest", self.registry);
        self.retry
            .run(&what, || async {
                self.manifest_get(reference, super::manifest::MEDIA_TYPES, super::manifest::MAX_MANIFEST_SIZE)
                    .await
                    .map_err(|e| match e {
                        super::manifest_get::GetError::Oci(e) => RegistryError::from_oci(&self.registry, e),
                        too_large => RegistryError::Response(format!("manifest is {too_large}")),
                    })
            })
            .await
    }

    /// The config blob, verified against its descriptor.
    pub async fn config(&self, desc: &OciDescriptor) -> Result<Vec<u8>, RegistryError> {
        let (hex, size) = check_descriptor(desc)?;
        if size > MAX_CONFIG_SIZE {
            return Err(RegistryError::ConfigTooLarge { size });
        }
        let what = format!("{}: fetch config", self.registry);
        self.retry
            .run(&what, || async {
                let mut out = Verifying::new(Vec::new(), size);
                let result = self.client.pull_blob(&self.reference, desc, &mut out).await;
                out.verdict(
                    result.map_err(|e| RegistryError::from_oci(&self.registry, e)),
                    hex,
                )?;
                Ok(out.inner)
            })
            .await
    }

    /// Downloads the rest of `download`'s blob (all of it, or what an
    /// earlier attempt or source left), with retries, and verifies it.
    pub async fn download(&self, desc: &OciDescriptor, download: &mut Download) -> Result<(), RegistryError> {
        let what = format!("{}: download {}", self.registry, desc.digest);
        let size = download.size;
        let out = &mut download.out;
        let mut attempt = 1;
        let result = loop {
            match self.stream_blob(desc, out, &download.partial).await {
                Err(err) if out.written < size && self.retry.again(attempt, &err) => {
                    self.retry.pause(attempt, &what, &err).await;
                    attempt += 1;
                }
                // With every byte in hand, our own digest check decides,
                // whatever the connection did after the last byte. (A write
                // error is ours: the bytes may not be in the file.)
                Err(err) if out.written == size && !matches!(err, RegistryError::Store { .. }) => {
                    tracing::debug!("{what}: {err} after the last byte");
                    break Ok(());
                }
                result => break result,
            }
        };
        out.verdict(result, &download.hex)
    }

    /// One attempt: appends the rest of the blob to `out`, asking for the
    /// bytes after those it already has.
    async fn stream_blob(
        &self,
        desc: &OciDescriptor,
        out: &mut Verifying<Spool>,
        path: &Path,
    ) -> Result<(), RegistryError> {
        let oci_err = |e| RegistryError::from_oci(&self.registry, e);
        let write_err = |source| RegistryError::Store {
            step: "write",
            path: path.to_path_buf(),
            source,
        };
        let stall = self.retry.stall;
        let stalled = |what: &str| RegistryError::Interrupted {
            registry: self.registry.clone(),
            reason: format!("no {what} for {} s", stall.as_secs()),
        };
        let written = out.written;
        let start = async {
            if written == 0 {
                // Make sure the (blocking) auth store knows the credentials
                // even when the manifest came from elsewhere.
                self.client
                    .store_auth_if_needed(self.reference.resolve_registry(), &self.auth)
                    .await;
                self.client.pull_blob_stream(&self.reference, desc).await.map(BlobResponse::Full)
            } else {
                self.client
                    .pull_blob_stream_partial(&self.reference, desc, written, None)
                    .await
            }
        };
        let response = tokio::time::timeout(stall, start)
            .await
            .map_err(|_| stalled("response"))?
            .map_err(oci_err)?;
        // A registry that ignores the Range sends the whole blob again: the
        // bytes we have are skipped (the unpacker has read them already);
        // the digest of what we kept still decides.
        let (mut stream, mut skip) = match response {
            BlobResponse::Partial(stream) => (stream, 0),
            BlobResponse::Full(stream) => (stream, usize::try_from(written).unwrap_or(usize::MAX)),
        };
        while let Some(chunk) = tokio::time::timeout(stall, stream.next())
            .await
            .map_err(|_| stalled("data"))?
        {
            let chunk = chunk.map_err(|e| RegistryError::Interrupted {
                registry: self.registry.clone(),
                reason: root_cause(&e),
            })?;
            let drop = skip.min(chunk.len());
            skip -= drop;
            out.write_all(chunk.get(drop..).unwrap_or_default()).await.map_err(write_err)?;
        }
        Ok(())
    }
}

/// A layer blob being downloaded into `DEST.partial-PID` (a per-process
/// name: concurrent pulls sharing a store never write into each other's
/// partial file), its bytes handed to its [`Feed`] as they are written.
/// One download may be continued by another source (the origin behind a
/// mirror) from where the first left off.
pub struct Download {
    out: Verifying<Spool>,
    partial: PathBuf,
    dest: PathBuf,
    hex: String,
    size: u64,
    feed: Arc<Feed>,
}

impl Download {
    /// Starts downloading `desc` to `dest`; `None` when a verified copy is
    /// already there, which `feed` then reads. `release`: the feed's reader
    /// may free the bytes it has read (the blob is not kept).
    pub async fn begin(desc: &OciDescriptor, dest: &Path, feed: &Arc<Feed>, release: bool) -> Result<Option<Download>, RegistryError> {
        let (hex, size) = check_descriptor(desc)?;
        let store_err = |step, path: &Path| {
            let path = path.to_path_buf();
            move |source| RegistryError::Store { step, path, source }
        };
        if file_matches(dest, hex, size)
            .await
            .map_err(store_err("read cached blob", dest))?
        {
            let file = std::fs::File::open(dest).map_err(store_err("open cached blob", dest))?;
            feed.open(file, size, false);
            feed.end(true);
            return Ok(None);
        }
        let partial = dest.with_extension(format!("partial-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&partial)
            .map_err(store_err("create", &partial))?;
        let reader = file.try_clone().map_err(store_err("open", &partial))?;
        feed.open(reader, 0, release);
        let spool = Spool { file, len: 0, feed: Arc::clone(feed) };
        Ok(Some(Download {
            out: Verifying::new(spool, size),
            partial,
            dest: dest.to_path_buf(),
            hex: hex.to_string(),
            size,
            feed: Arc::clone(feed),
        }))
    }

    /// Whether what came is wrong rather than incomplete (too many bytes,
    /// or all of them with another digest): continuing cannot mend it.
    pub fn wrong_content(&self) -> bool {
        self.out.overflow || (self.out.written == self.size && self.out.digest_hex() != self.hex)
    }

    /// Publishes a verified blob under its name and lets the reader reach
    /// the end; a failed one is removed and its reader fails.
    pub fn finish(self, verified: Result<(), RegistryError>) -> Result<(), RegistryError> {
        let published = verified.and_then(|()| {
            // No fsync: the store is a cache whose blobs are hashed again
            // before reuse (`file_matches`), so one torn by a crash is just
            // downloaded again; syncing ~100 MiB layers cost seconds.
            std::fs::rename(&self.partial, &self.dest).map_err(|source| RegistryError::Store {
                step: "rename",
                path: self.partial.clone(),
                source,
            })
        });
        if published.is_err() {
            std::fs::remove_file(&self.partial).ok();
        }
        self.feed.end(published.is_ok());
        published
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        // Unfinished (cancelled): the reader must not wait for more.
        self.feed.end(false);
    }
}

/// The blob's partial file: written as the bytes come (a tmpfs or page
/// cache write does not block for long), each write announced to the feed.
struct Spool {
    file: std::fs::File,
    len: u64,
    feed: Arc<Feed>,
}

impl AsyncWrite for Spool {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        use std::io::Write;
        let this = self.get_mut();
        this.file.write_all(buf)?;
        this.len += buf.len() as u64;
        this.feed.advance(this.len);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The descriptor's sha256 hex (safe as a file name) and size.
fn check_descriptor(desc: &OciDescriptor) -> Result<(&str, u64), RegistryError> {
    let hex =
        sha256_hex(&desc.digest).ok_or_else(|| RegistryError::BadDigest(desc.digest.clone()))?;
    let size = u64::try_from(desc.size).map_err(|_| RegistryError::BadSize(desc.size))?;
    Ok((hex, size))
}

/// Whether `path` exists with exactly `size` bytes hashing to `hex`.
async fn file_matches(path: &Path, hex: &str, size: u64) -> io::Result<bool> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if file.metadata().await?.len() != size {
        return Ok(false);
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    Ok(hex::encode(hasher.finalize()) == hex)
}

/// A writer that hashes what passes and refuses more than `limit` bytes,
/// so a hostile registry cannot fill the disk past the descriptor's size.
struct Verifying<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
    limit: u64,
    overflow: bool,
}

impl<W> Verifying<W> {
    fn new(inner: W, limit: u64) -> Verifying<W> {
        Verifying {
            inner,
            hasher: Sha256::new(),
            written: 0,
            limit,
            overflow: false,
        }
    }

    /// The sha256 hex of what was written so far.
    fn digest_hex(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }

    /// [`Self::check`] that leaves the writer as it is (a download may be
    /// continued by another source after a failed verdict).
    fn verdict(&self, transfer: Result<(), RegistryError>, hex: &str) -> Result<(), RegistryError> {
        if self.overflow {
            return Err(RegistryError::Size { expected: self.limit, actual: self.written + 1 });
        }
        if self.written == self.limit {
            let actual = self.digest_hex();
            if actual != hex {
                return Err(RegistryError::Digest {
                    expected: format!("sha256:{hex}"),
                    actual: format!("sha256:{actual}"),
                });
            }
        }
        transfer?;
        if self.written != self.limit {
            return Err(RegistryError::Size { expected: self.limit, actual: self.written });
        }
        Ok(())
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Verifying<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = buf.len() as u64;
        if this.written.saturating_add(len) > this.limit {
            this.overflow = true;
            return Poll::Ready(Err(io::Error::other(
                "blob larger than its descriptor says",
            )));
        }
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            this.hasher.update(buf.get(..n).unwrap_or_default());
            this.written += n as u64;
        }
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::errors::{OciEnvelope, OciError};

    fn check(err: OciDistributionError, expected: &str) {
        assert_eq!(
            RegistryError::from_oci("127.0.0.1:5000", err).to_string(),
            expected
        );
    }

    #[test]
    fn registry_errors_are_short() {
        let envelope = |code, message: &str| OciDistributionError::RegistryError {
            envelope: OciEnvelope {
                errors: vec![OciError {
                    code,
                    message: message.into(),
                    detail: serde_json::Value::Null,
                }],
            },
            url: "http://127.0.0.1:5000/v2/x/manifests/latest".into(),
        };
        check(
            envelope(OciErrorCode::ManifestUnknown, "manifest unknown"),
            "manifest unknown",
        );
        check(
            envelope(
                OciErrorCode::NameUnknown,
                "repository name not known to registry",
            ),
            "repository unknown",
        );
        check(
            envelope(
                OciErrorCode::Denied,
                "requested access to the resource is denied",
            ),
            "requested access to the resource is denied",
        );
        check(
            OciDistributionError::ServerError {
                code: 500,
                url: "u".into(),
                message: "boom\n".into(),
            },
            "HTTP 500: boom",
        );
        check(
            OciDistributionError::UnauthorizedError { url: "u".into() },
            "unauthorized",
        );
        check(
            OciDistributionError::IoError(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "refused",
            )),
            "refused",
        );
        assert_eq!(clip(&"x".repeat(300)).chars().count(), MAX_MESSAGE + 1);
    }

    #[tokio::test]
    async fn verifying_writer_limits_and_hashes() {
        use tokio::io::AsyncWriteExt;
        let hex_ok = hex::encode(Sha256::digest(b"abc"));
        let mut w = Verifying::new(Vec::new(), 3);
        w.write_all(b"abc").await.unwrap();
        assert!(w.verdict(Ok(()), &hex_ok).is_ok());

        let mut w = Verifying::new(Vec::new(), 2);
        assert!(w.write_all(b"abc").await.is_err());
        assert!(matches!(
            w.verdict(Ok(()), &hex_ok),
            Err(RegistryError::Size { .. })
        ));

        let mut w = Verifying::new(Vec::new(), 3);
        w.write_all(b"abd").await.unwrap();
        assert!(matches!(
            w.verdict(Ok(()), &hex_ok),
            Err(RegistryError::Digest { .. })
        ));
    }
}
