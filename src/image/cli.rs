//! `iguana pull`: the child-process entry that PID 1 runs for each image.
//!
//! `iguana pull IMAGE --rootfs DIR [--insecure-registry HOST:PORT]...
//! [--config-out FILE] [--store DIR]`. Without `--store`, blobs go to a
//! temporary `.NAME.blobs` directory beside the rootfs (same filesystem),
//! removed afterwards. Exit status and the error chain tell PID 1 what
//! happened; progress lines go to stderr.

use super::{pull, PullOptions};
use anyhow::Context;
use std::path::{Path, PathBuf};

const USAGE: &str =
    "usage: iguana pull IMAGE --rootfs DIR [--insecure-registry HOST:PORT]... [--config-out FILE] [--store DIR]";

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
}

/// Parses the arguments that follow `pull`.
fn parse(args: &[String]) -> Result<Args, UsageError> {
    let usage = |m: String| UsageError(m);
    let (mut image, mut rootfs, mut config_out, mut store) = (None, None, None, None);
    let mut insecure_registries = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if arg.starts_with("--") => (flag, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| usage(format!("{flag} needs a value")))
        };
        match flag {
            "--rootfs" => rootfs = Some(PathBuf::from(value()?)),
            "--config-out" => config_out = Some(PathBuf::from(value()?)),
            "--store" => store = Some(PathBuf::from(value()?)),
            "--insecure-registry" => {
                let v = value()?;
                insecure_registries
                    .extend(v.split(',').filter(|s| !s.is_empty()).map(String::from));
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
    })
}

/// Runs `iguana pull ...`; `args` are the arguments after `pull`.
pub fn cli_pull(args: &[String]) -> anyhow::Result<()> {
    let args = parse(args)?;
    let (store, temporary) = match &args.store {
        Some(store) => (store.clone(), false),
        None => (temporary_store(&args.rootfs)?, true),
    };
    let opts = PullOptions {
        insecure_registries: args.insecure_registries.clone(),
        store: store.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start tokio runtime")?;
    let result = runtime.block_on(pull(&opts, &args.image, &args.rootfs));
    if temporary {
        if let Err(err) = std::fs::remove_dir_all(&store) {
            eprintln!(
                "pull {}: temporary blob store {} not removed: {err}",
                args.image,
                store.display()
            );
        }
    }
    let config = result?;
    if let Some(path) = &args.config_out {
        write_atomic(path, &serde_json::to_vec_pretty(&config)?)
            .with_context(|| format!("write image config to {}", path.display()))?;
    }
    Ok(())
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
