//! Test images: layers described as lists of entries, written as tar files,
//! assembled into an OCI layout by `umoci` and pushed by `skopeo`.
//!
//! Layers are built here with the `tar` crate and added verbatim with
//! `umoci raw add-layer`, rather than by editing an unpacked bundle and
//! `umoci repack`: that is the only way to get exact whiteouts, opaque
//! directories, owners and hard links into a layer.

use crate::{run, Registry};
use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::Path;
use std::process::Command;

/// Fixed mtime of every entry, so layers are reproducible.
const MTIME: u64 = 1_700_000_000;
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &["cat", "echo", "grep", "wget", "ls", "mkdir"];

/// One entry of a layer. Paths are relative to the image root ("etc/hosts").
#[derive(Clone, Debug)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
        uid: u64,
        gid: u64,
    },
    File {
        path: String,
        content: Vec<u8>,
        mode: u32,
        uid: u64,
        gid: u64,
    },
    Symlink {
        path: String,
        target: String,
    },
    /// A hard link at `path` to the earlier entry `target`.
    Hardlink {
        path: String,
        target: String,
    },
    /// `.wh.NAME`: deletes `path` from lower layers.
    Whiteout {
        path: String,
    },
    /// `.wh..wh..opq`: hides the lower layers' contents of `dir`.
    Opaque {
        dir: String,
    },
    /// A character device (`Some((major, minor))`) or a fifo (`None`).
    Node {
        path: String,
        dev: Option<(u32, u32)>,
        mode: u32,
    },
}

/// A layer: entries in archive order.
#[derive(Clone, Debug, Default)]
pub struct Layer {
    pub entries: Vec<Entry>,
}

impl Layer {
    pub fn new() -> Layer {
        Layer::default()
    }

    pub fn dir(mut self, path: &str, mode: u32) -> Layer {
        self.entries.push(Entry::Dir {
            path: path.into(),
            mode,
            uid: 0,
            gid: 0,
        });
        self
    }

    pub fn file(mut self, path: &str, content: impl AsRef<[u8]>, mode: u32) -> Layer {
        let content = content.as_ref().to_vec();
        self.entries.push(Entry::File {
            path: path.into(),
            content,
            mode,
            uid: 0,
            gid: 0,
        });
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Layer {
        self.entries.push(Entry::Symlink {
            path: path.into(),
            target: target.into(),
        });
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Layer {
        self.entries.push(Entry::Hardlink {
            path: path.into(),
            target: target.into(),
        });
        self
    }

    pub fn whiteout(mut self, path: &str) -> Layer {
        self.entries.push(Entry::Whiteout { path: path.into() });
        self
    }

    pub fn opaque(mut self, dir: &str) -> Layer {
        self.entries.push(Entry::Opaque { dir: dir.into() });
        self
    }

    pub fn fifo(mut self, path: &str, mode: u32) -> Layer {
        self.entries.push(Entry::Node { path: path.into(), dev: None, mode });
        self
    }

    pub fn char_device(mut self, path: &str, major: u32, minor: u32, mode: u32) -> Layer {
        self.entries.push(Entry::Node { path: path.into(), dev: Some((major, minor)), mode });
        self
    }

    /// Sets the owner of the last dir or file entry.
    pub fn owned(mut self, owner: u64, group: u64) -> Layer {
        if let Some(Entry::Dir { uid, gid, .. } | Entry::File { uid, gid, .. }) =
            self.entries.last_mut()
        {
            (*uid, *gid) = (owner, group);
        }
        self
    }

    /// The layer as an uncompressed tar archive.
    pub fn tar(&self) -> anyhow::Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        for entry in &self.entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(MTIME);
            match entry {
                Entry::Dir {
                    path,
                    mode,
                    uid,
                    gid,
                } => {
                    h.set_entry_type(tar::EntryType::Directory);
                    set_owner_mode(&mut h, *mode, *uid, *gid);
                    h.set_size(0);
                    b.append_data(&mut h, path, &[][..])?;
                }
                Entry::File {
                    path,
                    content,
                    mode,
                    uid,
                    gid,
                } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    set_owner_mode(&mut h, *mode, *uid, *gid);
                    h.set_size(content.len() as u64);
                    b.append_data(&mut h, path, content.as_slice())?;
                }
                Entry::Symlink { path, target } => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    set_owner_mode(&mut h, 0o777, 0, 0);
                    h.set_size(0);
                    b.append_link(&mut h, path, target)?;
                }
                Entry::Hardlink { path, target } => {
                    h.set_entry_type(tar::EntryType::Link);
                    set_owner_mode(&mut h, 0o644, 0, 0);
                    h.set_size(0);
                    b.append_link(&mut h, path, target)?;
                }
                Entry::Whiteout { path } => {
                    let (dir, name) = split(path);
                    empty_file(&mut b, &mut h, &format!("{dir}.wh.{name}"))?;
                }
                Entry::Opaque { dir } => {
                    let dir = dir.trim_end_matches('/');
                    empty_file(&mut b, &mut h, &format!("{dir}/.wh..wh..opq"))?;
                }
                Entry::Node { path, dev, mode } => {
                    match dev {
                        Some((major, minor)) => {
                            h.set_entry_type(tar::EntryType::Char);
                            h.set_device_major(*major)?;
                            h.set_device_minor(*minor)?;
                        }
                        None => h.set_entry_type(tar::EntryType::Fifo),
                    }
                    set_owner_mode(&mut h, *mode, 0, 0);
                    h.set_size(0);
                    b.append_data(&mut h, path, &[][..])?;
                }
            }
        }
        Ok(b.into_inner()?)
    }
}

fn set_owner_mode(h: &mut tar::Header, mode: u32, uid: u64, gid: u64) {
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
}

fn empty_file(
    b: &mut tar::Builder<Vec<u8>>,
    h: &mut tar::Header,
    path: &str,
) -> anyhow::Result<()> {
    h.set_entry_type(tar::EntryType::Regular);
    set_owner_mode(h, 0o644, 0, 0);
    h.set_size(0);
    b.append_data(h, path, &[][..])?;
    Ok(())
}

/// "a/b/c" -> ("a/b/", "c"); "c" -> ("", "c").
fn split(path: &str) -> (&str, &str) {
    let path = path.trim_end_matches('/');
    match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    }
}

/// An image to build: layers bottom-up plus the config fields iguana reads.
#[derive(Clone, Debug, Default)]
pub struct Image {
    pub layers: Vec<Layer>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// GOARCH-style architecture for the config ("amd64" when unset).
    pub architecture: Option<String>,
}

impl Image {
    pub fn new() -> Image {
        Image::default()
    }

    /// One layer with a static busybox as /bin/sh (and a few applets) and
    /// `/run.sh` holding `script`; the entrypoint runs the script.
    pub fn busybox_script(script: &str) -> anyhow::Result<Image> {
        let busybox = fs::read(BUSYBOX)
            .with_context(|| format!("read {BUSYBOX}: apt-get install busybox-static"))?;
        let mut layer = Layer::new().dir("bin", 0o755);
        for dir in ["dev", "etc", "proc", "sys", "tmp"] {
            layer = layer.dir(dir, if dir == "tmp" { 0o1777 } else { 0o755 });
        }
        layer = layer
            .file("bin/busybox", busybox, 0o755)
            .symlink("bin/sh", "busybox");
        for applet in APPLETS {
            layer = layer.symlink(&format!("bin/{applet}"), "busybox");
        }
        layer = layer.file("run.sh", script, 0o755);
        Ok(Image::new()
            .layer(layer)
            .entrypoint(&["/bin/sh", "/run.sh"]))
    }

    pub fn layer(mut self, layer: Layer) -> Image {
        self.layers.push(layer);
        self
    }

    pub fn entrypoint(mut self, args: &[&str]) -> Image {
        self.entrypoint = args.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn cmd(mut self, args: &[&str]) -> Image {
        self.cmd = args.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn env(mut self, var: &str) -> Image {
        self.env.push(var.into());
        self
    }

    pub fn working_dir(mut self, dir: &str) -> Image {
        self.working_dir = Some(dir.into());
        self
    }

    pub fn user(mut self, user: &str) -> Image {
        self.user = Some(user.into());
        self
    }

    pub fn architecture(mut self, arch: &str) -> Image {
        self.architecture = Some(arch.into());
        self
    }

    /// Builds the image as an OCI layout in `layout` (created) under `tag`.
    pub fn build(&self, layout: &Path, tag: &str) -> anyhow::Result<()> {
        let image = format!("{}:{tag}", layout.display());
        run(Command::new("umoci")
            .arg("init")
            .arg("--layout")
            .arg(layout))?;
        run(Command::new("umoci").args(["new", "--image", &image]))?;
        let scratch = tempfile::tempdir()?;
        for (i, layer) in self.layers.iter().enumerate() {
            let path = scratch.path().join(format!("layer{i}.tar"));
            fs::write(&path, layer.tar()?)?;
            run(Command::new("umoci")
                .args(["raw", "add-layer", "--image", &image])
                .arg(&path))?;
        }
        let mut config = Command::new("umoci");
        config.args(["config", "--image", &image]);
        for arg in &self.entrypoint {
            config.arg(format!("--config.entrypoint={arg}"));
        }
        for arg in &self.cmd {
            config.arg(format!("--config.cmd={arg}"));
        }
        for var in &self.env {
            config.arg(format!("--config.env={var}"));
        }
        if let Some(dir) = &self.working_dir {
            config.arg(format!("--config.workingdir={dir}"));
        }
        if let Some(user) = &self.user {
            config.arg(format!("--config.user={user}"));
        }
        if let Some(arch) = &self.architecture {
            config.arg(format!("--architecture={arch}"));
        }
        run(&mut config)
    }

    /// Builds and pushes to `registry` as `name:tag`; returns the full
    /// reference `127.0.0.1:PORT/name:tag`.
    pub fn build_and_push(&self, registry: &Registry, name_tag: &str) -> anyhow::Result<String> {
        let Some((name, tag)) = name_tag.rsplit_once(':') else {
            bail!("image {name_tag:?} needs a tag (name:tag)");
        };
        let scratch = tempfile::tempdir()?;
        let layout = scratch.path().join("layout");
        self.build(&layout, tag)?;
        let reference = format!("{}/{name}:{tag}", registry.host());
        let mut copy = Command::new("skopeo");
        copy.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
        ]);
        if let Some((user, password)) = registry.basic_auth() {
            copy.arg(format!("--dest-creds={user}:{password}"));
        }
        copy.arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{reference}"));
        run(&mut copy)?;
        Ok(reference)
    }
}

/// The manifest descriptor of an image already in the registry.
struct Pushed {
    digest: String,
    size: usize,
    media_type: String,
}

impl Registry {
    /// Pushes an image index `name:tag` whose entries are the manifests of
    /// `name:TAG` for each `(TAG, architecture)`, all with os linux, in the
    /// order given.
    pub fn push_index(&self, name_tag: &str, entries: &[(&str, &str)]) -> anyhow::Result<String> {
        let Some((name, tag)) = name_tag.rsplit_once(':') else {
            bail!("index {name_tag:?} needs a tag (name:tag)");
        };
        let mut manifests = Vec::new();
        for (entry_tag, arch) in entries {
            let m = self.manifest(name, entry_tag)?;
            manifests.push(serde_json::json!({
                "mediaType": m.media_type,
                "digest": m.digest,
                "size": m.size,
                "platform": { "os": "linux", "architecture": arch },
            }));
        }
        let media_type = "application/vnd.oci.image.index.v1+json";
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": manifests,
        });
        self.put_manifest(name, tag, media_type, &serde_json::to_vec(&index)?)
    }

    /// Uploads `data` as a blob of repository `name`; returns its digest.
    pub fn push_blob(&self, name: &str, data: &[u8]) -> anyhow::Result<String> {
        let digest = format!("sha256:{}", hex(&Sha256::digest(data)));
        let start = format!("/v2/{name}/blobs/uploads/");
        let resp = self.request("POST", &start, &[], b"")?;
        let location = resp.header("location").unwrap_or_default();
        if resp.status != 202 || location.is_empty() {
            bail!(
                "POST {start}: {} {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            );
        }
        // The Location may be absolute; the request wants the path.
        let path = location.find("/v2/").map_or(location, |i| &location[i..]);
        let sep = if path.contains('?') { '&' } else { '?' };
        let put = format!("{path}{sep}digest={digest}");
        let octets = ("Content-Type", "application/octet-stream".to_string());
        let resp = self.request("PUT", &put, &[octets], data)?;
        if resp.status != 201 {
            bail!(
                "PUT {put}: {} {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            );
        }
        Ok(digest)
    }

    /// Pushes an image made of raw parts, bypassing umoci: layer blobs
    /// exactly as given (any bytes, any compression, with their media
    /// types) and a config document. For testing what tools refuse to
    /// build: wrong diff_ids, hostile archives, zstd layers.
    pub fn push_raw_image(
        &self,
        name_tag: &str,
        layers: &[(Vec<u8>, &str)],
        config: &serde_json::Value,
    ) -> anyhow::Result<String> {
        let Some((name, tag)) = name_tag.rsplit_once(':') else {
            bail!("image {name_tag:?} needs a tag (name:tag)");
        };
        let config = serde_json::to_vec(config)?;
        let config_digest = self.push_blob(name, &config)?;
        let mut descriptors = Vec::new();
        for (data, media_type) in layers {
            let digest = self.push_blob(name, data)?;
            descriptors.push(serde_json::json!({
                "mediaType": media_type, "digest": digest, "size": data.len(),
            }));
        }
        let media_type = "application/vnd.oci.image.manifest.v1+json";
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": descriptors,
        });
        self.put_manifest(name, tag, media_type, &serde_json::to_vec(&manifest)?)
    }

    /// PUTs a manifest or index as `name:tag`; returns the reference.
    pub fn put_manifest(&self, name: &str, tag: &str, media_type: &str, body: &[u8]) -> anyhow::Result<String> {
        let path = format!("/v2/{name}/manifests/{tag}");
        let resp = self.request("PUT", &path, &[("Content-Type", media_type.into())], body)?;
        if resp.status != 201 {
            bail!("PUT {path}: {} {}", resp.status, String::from_utf8_lossy(&resp.body));
        }
        Ok(format!("{}/{name}:{tag}", self.host()))
    }

    fn manifest(&self, name: &str, tag: &str) -> anyhow::Result<Pushed> {
        let path = format!("/v2/{name}/manifests/{tag}");
        let accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
        let resp = self.request("GET", &path, &[("Accept", accept.into())], b"")?;
        if resp.status != 200 {
            bail!(
                "GET {path}: {} {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            );
        }
        Ok(Pushed {
            digest: format!("sha256:{}", hex(&Sha256::digest(&resp.body))),
            size: resp.body.len(),
            media_type: resp.header("content-type").unwrap_or_default().to_string(),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_paths() {
        for (input, expected) in [
            ("a/b/c", ("a/b/", "c")),
            ("c", ("", "c")),
            ("a/b/", ("a/", "b")),
        ] {
            assert_eq!(split(input), expected, "{input}");
        }
    }

    #[test]
    fn layer_tar_names() {
        let tar = Layer::new()
            .dir("etc", 0o755)
            .file("etc/a", "x", 0o600)
            .owned(1000, 100)
            .whiteout("etc/b")
            .opaque("var/")
            .symlink("bin/sh", "busybox")
            .tar()
            .unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            ["etc", "etc/a", "etc/.wh.b", "var/.wh..wh..opq", "bin/sh"]
        );
    }
}
