//! A real `docker-registry` (Debian's build of the CNCF distribution server)
//! listening on 127.0.0.1, with its storage in a temporary directory.

use crate::http;
use anyhow::{bail, Context};
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = "/usr/bin/docker-registry";
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How to start a [`Registry`].
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Listen on this port instead of a free one picked by the kernel.
    pub port: Option<u16>,
    /// Require HTTP basic auth with this user and password (htpasswd, bcrypt).
    pub basic_auth: Option<(String, String)>,
    /// Serve HTTPS with this certificate and key (PEM files), e.g. from
    /// [`self_signed_cert`].
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Require bearer tokens from this token server (`auth: token:`); the
    /// user and password are what the token server wants.
    pub token: Option<TokenAuth>,
    /// Run as a pull-through cache (distribution's proxy mode) of the
    /// registry at this URL (`http://127.0.0.1:PORT`): a site's mirror.
    pub proxy_remote: Option<String>,
}

/// The registry's side of the bearer-token flow.
#[derive(Clone, Debug)]
pub struct TokenAuth {
    pub realm: String,
    pub cert: PathBuf,
    pub user: String,
    pub password: String,
}

/// A running registry; the process is killed when this is dropped.
pub struct Registry {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    opts: RegistryOptions,
}

impl Registry {
    /// Starts an anonymous registry on a free port.
    pub fn start() -> anyhow::Result<Registry> {
        Self::start_with(RegistryOptions::default())
    }

    /// Starts a registry as `opts` say and waits until `GET /v2/` answers.
    pub fn start_with(opts: RegistryOptions) -> anyhow::Result<Registry> {
        if !Path::new(BINARY).exists() {
            bail!("{BINARY} not found: apt-get install docker-registry");
        }
        let port = match opts.port {
            Some(p) => p,
            None => free_port()?,
        };
        let dir = tempfile::Builder::new()
            .prefix("iguana-registry-")
            .tempdir()?;
        fs::create_dir(dir.path().join("storage"))?;
        let mut auth = String::new();
        if let Some((user, password)) = &opts.basic_auth {
            let hash = bcrypt::hash(password, 5).context("bcrypt the registry password")?;
            let htpasswd = dir.path().join("htpasswd");
            fs::write(&htpasswd, format!("{user}:{hash}\n"))?;
            auth = format!(
                "auth:\n  htpasswd:\n    realm: iguana-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        if let Some(token) = &opts.token {
            auth = format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                token.realm,
                crate::token::SERVICE,
                crate::token::ISSUER,
                token.cert.display()
            );
        }
        let tls = match &opts.tls {
            Some((cert, key)) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ),
            None => String::new(),
        };
        let proxy = match &opts.proxy_remote {
            Some(url) => format!("proxy:\n  remoteurl: {url}\n"),
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  redirect:\n    disable: true\n\
             http:\n  addr: 127.0.0.1:{port}\n{tls}\
             {auth}{proxy}",
            storage = dir.path().join("storage").display(),
        );
        fs::write(dir.path().join("config.yml"), config)?;
        let mut registry = Registry {
            child: None,
            port,
            dir,
            opts,
        };
        registry.spawn()?;
        Ok(registry)
    }

    /// The port it listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The user and password it requires (directly, or through its token
    /// server), if any.
    pub fn basic_auth(&self) -> Option<(&str, &str)> {
        let token = self.opts.token.as_ref().map(|t| (t.user.as_str(), t.password.as_str()));
        self.opts
            .basic_auth
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
            .or(token)
    }

    /// The filesystem storage root of the registry.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the registry keeps the blob `sha256:HEX` (to corrupt it in tests).
    pub fn blob_path(&self, digest: &str) -> anyhow::Result<PathBuf> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64)
            .with_context(|| format!("not a sha256 digest: {digest}"))?;
        Ok(self
            .storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data"))
    }

    /// The registry's own log (stdout and stderr of the process).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Stops the process; storage and port stay reserved for [`Registry::restart`].
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().context("wait for docker-registry")?;
        }
        Ok(())
    }

    /// Stops (if running) and starts again on the same port and storage.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.spawn()
    }

    /// Sends one HTTP request to the registry, with basic auth if it needs it.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> anyhow::Result<http::Response> {
        let mut all: Vec<(&str, String)> = headers.to_vec();
        if let Some((user, password)) = self.basic_auth() {
            let token = http::base64(format!("{user}:{password}").as_bytes());
            all.push(("Authorization", format!("Basic {token}")));
        }
        http::request(self.port, method, path, &all, body)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = fs::File::create(self.dir.path().join("registry.log"))?;
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {BINARY}"))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!("docker-registry exited with {status}: {}", self.log());
                }
            }
            // 200 when anonymous, 401 with auth: either way it is serving.
            // Over TLS, Go answers a plain HTTP request with 400.
            let serving = |status| match self.opts.tls {
                None => status == 200 || status == 401,
                Some(_) => status == 400,
            };
            if let Ok(resp) = http::request(self.port, "GET", "/v2/", &[], b"") {
                if serving(resp.status) {
                    return Ok(());
                }
            }
            if start.elapsed() > READY_TIMEOUT {
                self.stop()?;
                bail!(
                    "docker-registry on port {} not ready after {READY_TIMEOUT:?}: {}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop().ok();
    }
}

/// Writes a self-signed certificate for `127.0.0.1` (an end-entity
/// certificate, not a CA, so rustls accepts it as the server's own when it
/// is also the trust root) and its key into `dir`, with `openssl`.
/// Returns `(cert.pem, key.pem)`.
pub fn self_signed_cert(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cfg, cert, key) = (dir.join("openssl.cnf"), dir.join("cert.pem"), dir.join("key.pem"));
    fs::write(
        &cfg,
        "[req]\ndistinguished_name = dn\nx509_extensions = ext\nprompt = no\n\
         [dn]\nCN = 127.0.0.1\n\
         [ext]\nbasicConstraints = critical,CA:FALSE\nsubjectAltName = IP:127.0.0.1\n\
         keyUsage = critical,digitalSignature,keyEncipherment\nextendedKeyUsage = serverAuth\n",
    )?;
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-nodes", "-days", "2", "-config"])
        .arg(&cfg)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("run openssl (apt-get install openssl)")?;
    if !out.status.success() {
        bail!("openssl req -x509: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok((cert, key))
}

/// A certificate for 127.0.0.1 valid only from `start` to `end`
/// (`YYYYMMDDHHMMSSZ`), self-signed with `openssl ca -selfsign` (OpenSSL 3.0's
/// `req -x509` cannot set dates): for clock tests, an expired or a
/// not-yet-valid certificate.
pub fn cert_valid_between(dir: &Path, start: &str, end: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cfg, csr, cert, key) = (dir.join("ca.cnf"), dir.join("csr.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    fs::write(
        &cfg,
        "[ca]\ndefault_ca = c\n\
         [c]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\ndefault_md = sha256\n\
         policy = p\ncopy_extensions = copy\nx509_extensions = ext\n\
         [p]\ncommonName = supplied\n\
         [req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = 127.0.0.1\n\
         [ext]\nbasicConstraints = critical,CA:FALSE\nsubjectAltName = IP:127.0.0.1\n\
         keyUsage = critical,digitalSignature,keyEncipherment\nextendedKeyUsage = serverAuth\n",
    )?;
    fs::write(dir.join("index.txt"), "")?;
    fs::write(dir.join("serial"), "01\n")?;
    let openssl = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .context("run openssl (apt-get install openssl)")?;
        if !out.status.success() {
            bail!("openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    };
    let path = |p: &PathBuf| p.to_string_lossy().into_owned();
    openssl(&["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-config", &path(&cfg), "-keyout", &path(&key), "-out", &path(&csr)])?;
    openssl(&["ca", "-batch", "-notext", "-selfsign", "-config", &path(&cfg), "-keyfile", &path(&key), "-in", &path(&csr), "-out", &path(&cert), "-startdate", start, "-enddate", end])?;
    Ok((cert, key))
}

/// Asks the kernel for a free port on 127.0.0.1. The listener is closed
/// before the registry binds it; the race with other processes is harmless
/// in tests (the start fails loudly).
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
