//! `iguana pull`: the child-process entry that PID 1 runs for each image.
//!
//! `iguana pull IMAGE --rootfs DIR [--insecure-registry HOST:PORT]...
//! [--config-out FILE] [--store DIR] [--keep-blobs] [--auth-file FILE]
//! [--mirror REGISTRY=MIRROR]... [--ca PEM]...`. Without `--store`, blobs
//! go to a temporary `.NAME.blobs` directory beside the rootfs (same
//! filesystem), removed afterwards; with it, each of this image's blobs is
//! removed as soon as its layer is unpacked, unless `--keep-blobs`. Credentials come from `--auth-file`
//! or, if it exists, `/etc/iguana/auth.json`. With `--layers DIR` (PID 1
//! passes it), each layer is unpacked once into its own directory under DIR
//! and the rootfs is an overlay of them; without it the rootfs is a
//! flattened copy. Exit status and the error chain tell PID 1 what
//! happened; progress lines go to stderr.

use super::auth::{AuthFile, DEFAULT_AUTH_FILE};
use super::{PullOptions, Retry};
use anyhow::Context;
use std::path::{Path, PathBuf};

const USAGE: &str = "usage: iguana pull IMAGE --rootfs DIR [--insecure-registry HOST:PORT]... \
[--config-out FILE] [--store DIR] [--keep-blobs] [--auth-file FILE] [--mirror REGISTRY=MIRROR]... [--ca PEM]... \
[--layers DIR] [--trust-dir DIR] [--pinned-by-verified-workflow] [--max-unpacked BYTES] [--signer-out FILE]";

/// A command line that does not make sense.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}\n{USAGE}")]
pub struct UsageError(String);

/// The parsed command line.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    image: String,
    rootfs: PathBuf,
    insecure_registries: Vec<String>,
    config_out: Option<PathBuf>,
    store: Option<PathBuf>,
    keep_blobs: bool,
    auth_file: Option<PathBuf>,
    mirrors: Vec<(String, String)>,
    ca: Vec<PathBuf>,
    layers: Option<PathBuf>,
    trust_dir: Option<PathBuf>,
    pinned_by_verified_workflow: bool,
    max_unpacked: Option<u64>,
    signer_out: Option<PathBuf>,
}

/// Parses the arguments that follow `pull`.
fn parse(args: &[String]) -> Result<Args, UsageError> {
    let usage = |m: String| UsageError(m);
    let (mut image, mut rootfs, mut config_out, mut store) = (None, None, None, None);
    let mut insecure_registries = Vec::new();
    let (mut keep_blobs, mut auth_file, mut mirrors, mut ca) = (false, None, Vec::new(), Vec::new());
    let mut layers = None;
    let (mut trust_dir, mut pinned_by_verified_workflow) = (None, false);
    let (mut max_unpacked, mut signer_out) = (None, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = crate::flags::split(arg);
        let mut value = || crate::flags::value(flag, inline, &mut it).map_err(usage);
        match flag {
            "--rootfs" => rootfs = Some(PathBuf::from(value()?)),
            "--config-out" => config_out = Some(PathBuf::from(value()?)),
            "--store" => store = Some(PathBuf::from(value()?)),
            "--insecure-registry" => {
                let v = value()?;
                insecure_registries
                    .extend(v.split(',').filter(|s| !s.is_empty()).map(String::from));
            }
            "--keep-blobs" if inline.is_none() => keep_blobs = true,
            "--auth-file" => auth_file = Some(PathBuf::from(value()?)),
            "--ca" => ca.push(PathBuf::from(value()?)),
            "--layers" => layers = Some(PathBuf::from(value()?)),
            "--trust-dir" => trust_dir = Some(PathBuf::from(value()?)),
            "--pinned-by-verified-workflow" if inline.is_none() => pinned_by_verified_workflow = true,
            "--max-unpacked" => {
                let v = value()?;
                max_unpacked = Some(v.parse().map_err(|_| usage(format!("--max-unpacked {v:?} is not a number of bytes")))?);
            }
            "--signer-out" => signer_out = Some(PathBuf::from(value()?)),
            "--mirror" => {
                for item in value()?.split(',').filter(|s| !s.is_empty()) {
                    match item.split_once('=') {
                        Some((registry, mirror)) if !registry.is_empty() && !mirror.is_empty() => {
                            mirrors.push((registry.to_string(), mirror.to_string()));
                        }
                        _ => return Err(usage(format!("--mirror {item:?} is not REGISTRY=MIRROR"))),
                    }
                }
            }
            "-h" | "--help" => return Err(usage("help".into())),
            f if f.starts_with('-') => return Err(usage(format!("unknown option {f}"))),
            _ if image.is_some() => return Err(usage(format!("unexpected argument {arg:?}"))),
            _ => image = Some(arg.clone()),
        }
    }
    Ok(Args {
        image: image.ok_or_else(|| usage("missing IMAGE".into()))?,
        rootfs: rootfs.ok_or_else(|| usage("missing --rootfs DIR".into()))?,
        insecure_registries,
        config_out,
        store,
        keep_blobs,
        auth_file,
        mirrors,
        ca,
        layers,
        trust_dir,
        pinned_by_verified_workflow,
        max_unpacked,
        signer_out,
    })
}

/// The certificates of a PEM file, one PEM block each (a file may be a
/// bundle; the HTTP client takes one certificate per entry).
fn pem_certificates(text: &str) -> Vec<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut certs = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        certs.push(format!("{}\n", &rest[start..end]).into_bytes());
        rest = &rest[end..];
    }
    certs
}

/// Reads the extra trust roots named by `--ca`.
fn load_roots(paths: &[PathBuf]) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut roots = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read CA file {}", path.display()))?;
        let certs = pem_certificates(&text);
        if certs.is_empty() {
            anyhow::bail!("CA file {}: no PEM certificate in it", path.display());
        }
        roots.extend(certs);
    }
    Ok(roots)
}

/// Runs `iguana pull ...`; `args` are the arguments after `pull`.
pub fn cli_pull(args: &[String]) -> anyhow::Result<()> {
    let args = parse(args)?;
    let (store, temporary) = match &args.store {
        Some(store) => (store.clone(), false),
        None => (temporary_store(&args.rootfs)?, true),
    };
    let auth = match &args.auth_file {
        Some(path) => AuthFile::load(path, true)?,
        None => AuthFile::load(Path::new(DEFAULT_AUTH_FILE), false)?,
    };
    let opts = PullOptions {
        insecure_registries: args.insecure_registries.clone(),
        store: store.clone(),
        auth,
        mirrors: args.mirrors.clone(),
        extra_roots: load_roots(&args.ca)?,
        keep_blobs: args.keep_blobs,
        layers: args.layers.clone(),
        retry: Retry::default(),
        keys: load_keys(args.trust_dir.as_deref())?,
        pinned_by_verified_workflow: args.pinned_by_verified_workflow,
        max_unpacked: args.max_unpacked,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start tokio runtime")?;
    let result = runtime.block_on(crate::image::pull_resolved(&opts, &args.image, &args.rootfs));
    if temporary {
        // A pull that failed before its first blob never created the store.
        let removed = std::fs::remove_dir_all(&store)
            .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) });
        if let Err(err) = removed {
            eprintln!(
                "pull {}: temporary blob store {} not removed: {err}",
                args.image,
                store.display()
            );
        }
    }
    let (config, digest, signer) = result?;
    if let Some(path) = &args.signer_out {
        // Empty: not checked (no keys, or pinned by a verified workflow).
        write_atomic(path, signer.unwrap_or_default().as_bytes()).with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = &args.config_out {
        write_atomic(path, &serde_json::to_vec_pretty(&config)?)
            .with_context(|| format!("write image config to {}", path.display()))?;
        // The manifest digest the reference resolved to, for the job.started event.
        let digest_path = digest_file(path);
        write_atomic(&digest_path, digest.as_bytes()).with_context(|| format!("write {}", digest_path.display()))?;
    }
    Ok(())
}

/// `FILE.digest` beside `--config-out FILE`: the resolved manifest digest.
pub fn digest_file(config_out: &Path) -> PathBuf {
    let mut name = config_out.as_os_str().to_owned();
    name.push(".digest");
    PathBuf::from(name)
}

/// The trusted keys of `--trust-dir`, default the initrd's
/// [`crate::trust::TRUST_DIR`]; a missing directory is no keys.
fn load_keys(dir: Option<&Path>) -> anyhow::Result<crate::trust::Keys> {
    let dir = dir.unwrap_or(Path::new(crate::trust::TRUST_DIR));
    Ok(crate::trust::Keys::load_dir(dir)?)
}

/// `.NAME.blobs` beside the rootfs, on the same filesystem.
fn temporary_store(rootfs: &Path) -> anyhow::Result<PathBuf> {
    let name = rootfs
        .file_name()
        .with_context(|| format!("rootfs {} has no directory name", rootfs.display()))?;
    Ok(rootfs.with_file_name(format!(".{}.blobs", name.to_string_lossy())))
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: &[&str], expected: Result<Args, &str>) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let got = parse(&args).map_err(|e| e.0);
        assert_eq!(got, expected.map_err(String::from), "args {args:?}");
    }

    fn args(image: &str, rootfs: &str) -> Args {
        Args {
            image: image.into(),
            rootfs: rootfs.into(),
            insecure_registries: vec![],
            config_out: None,
            store: None,
            keep_blobs: false,
            auth_file: None,
            mirrors: vec![],
            ca: vec![],
            layers: None,
            trust_dir: None,
            pinned_by_verified_workflow: false,
            max_unpacked: None,
            signer_out: None,
        }
    }

    #[test]
    fn command_lines() {
        check(&["busybox", "--rootfs", "/r"], Ok(args("busybox", "/r")));
        check(&["--rootfs=/r", "busybox"], Ok(args("busybox", "/r")));
        check(
            &[
                "10.0.2.2:5000/app:v1",
                "--rootfs",
                "/r",
                "--insecure-registry",
                "10.0.2.2:5000",
                "--insecure-registry=a:1,b:2",
                "--config-out",
                "/c.json",
                "--store",
                "/s",
            ],
            Ok(Args {
                insecure_registries: vec!["10.0.2.2:5000".into(), "a:1".into(), "b:2".into()],
                config_out: Some("/c.json".into()),
                store: Some("/s".into()),
                ..args("10.0.2.2:5000/app:v1", "/r")
            }),
        );
        check(&[], Err("missing IMAGE"));
        check(&["busybox"], Err("missing --rootfs DIR"));
        check(&["busybox", "--rootfs"], Err("--rootfs needs a value"));
        check(&["busybox", "--rootfs="], Err("--rootfs needs a value"));
        check(
            &["busybox", "--rootfs", "/r", "--force"],
            Err("unknown option --force"),
        );
        check(
            &["a", "b", "--rootfs", "/r"],
            Err("unexpected argument \"b\""),
        );
        check(&["--help"], Err("help"));
        check(
            &[
                "r.example/app",
                "--rootfs=/r",
                "--keep-blobs",
                "--auth-file",
                "/a.json",
                "--mirror",
                "r.example=m1:5000",
                "--mirror=docker.io=m2,quay.io=m3",
                "--ca",
                "/ca.pem",
                "--ca=/ca2.pem",
                "--layers",
                "/run/iguana/layers",
                "--trust-dir=/k",
                "--pinned-by-verified-workflow",
            ],
            Ok(Args {
                keep_blobs: true,
                auth_file: Some("/a.json".into()),
                mirrors: vec![
                    ("r.example".into(), "m1:5000".into()),
                    ("docker.io".into(), "m2".into()),
                    ("quay.io".into(), "m3".into()),
                ],
                ca: vec!["/ca.pem".into(), "/ca2.pem".into()],
                layers: Some("/run/iguana/layers".into()),
                trust_dir: Some("/k".into()),
                pinned_by_verified_workflow: true,
                ..args("r.example/app", "/r")
            }),
        );
        check(
            &["a", "--rootfs=/r", "--mirror", "nomirror"],
            Err("--mirror \"nomirror\" is not REGISTRY=MIRROR"),
        );
        check(
            &["a", "--rootfs=/r", "--mirror", "x="],
            Err("--mirror \"x=\" is not REGISTRY=MIRROR"),
        );
        check(&["a", "--rootfs=/r", "--ca"], Err("--ca needs a value"));
        check(
            &["a", "--rootfs=/r", "--max-unpacked", "67108864", "--signer-out=/s"],
            Ok(Args { max_unpacked: Some(64 << 20), signer_out: Some("/s".into()), ..args("a", "/r") }),
        );
        check(&["a", "--rootfs=/r", "--max-unpacked=64M"], Err("--max-unpacked \"64M\" is not a number of bytes"));
        check(
            &["a", "--rootfs=/r", "--keep-blobs=yes"],
            Err("unknown option --keep-blobs"),
        );
    }

    #[test]
    fn pem_bundles_split_into_certificates() {
        let a = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----";
        let b = "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----";
        let bundle = format!("# comment\n{a}\njunk\n{b}\n");
        let certs = pem_certificates(&bundle);
        assert_eq!(certs, [format!("{a}\n").into_bytes(), format!("{b}\n").into_bytes()]);
        assert!(pem_certificates("no certificate").is_empty());
        assert!(pem_certificates("-----BEGIN CERTIFICATE-----\ncut").is_empty());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, &bundle).unwrap();
        assert_eq!(load_roots(std::slice::from_ref(&path)).unwrap().len(), 2);
        std::fs::write(&path, "nothing").unwrap();
        let err = load_roots(std::slice::from_ref(&path)).unwrap_err();
        assert_eq!(err.to_string(), format!("CA file {}: no PEM certificate in it", path.display()));
    }

    #[test]
    fn temporary_store_is_beside_the_rootfs() {
        assert_eq!(
            temporary_store(Path::new("/run/c/rootfs")).unwrap(),
            Path::new("/run/c/.rootfs.blobs")
        );
        assert!(temporary_store(Path::new("/")).is_err());
    }
}
