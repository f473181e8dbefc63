//! `iguana verify IMAGE [--key KEY.pub]... [--insecure-registry HOST:PORT]...`:
//! the same check `iguana pull` makes before fetching anything, on its own.
//! `iguana verify --file F [--sig S | --bundle B] [--key KEY.pub]...`: the
//! check PID 1 makes on a control_url's workflow ([`super::blob`]); without
//! `--sig`/`--bundle`, the `F.sig` or `F.sigstore.json` beside it.
//! Keys come from `--key` or, without it, from [`super::TRUST_DIR`].

use super::keys::Keys;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

const USAGE: &str = "usage: iguana verify IMAGE [--key KEY.pub]... [--insecure-registry HOST:PORT]...";

/// The parsed command line.
#[derive(Debug, Default, PartialEq, Eq)]
struct Args {
    image: Option<String>,
    keys: Vec<PathBuf>,
    insecure_registries: Vec<String>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut out = Args::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = crate::flags::split(arg);
        let mut value = || crate::flags::value(flag, inline, &mut it);
        match flag {
            "--key" => out.keys.push(PathBuf::from(value()?)),
            "--insecure-registry" => out.insecure_registries.push(value()?),
            f if f.starts_with('-') => return Err(format!("unknown option {f}")),
            _ if out.image.is_some() => return Err(format!("unexpected argument {arg:?}")),
            _ => out.image = Some(arg.clone()),
        }
    }
    Ok(out)
}

/// The keys named by `--key`, else those of the trust directory (which
/// must hold one).
fn load_keys(paths: &[PathBuf], dir: &Path) -> anyhow::Result<Keys> {
    let keys = super::keys_given_or_in(paths, dir)?;
    if paths.is_empty() && keys.is_empty() {
        bail!("no trusted keys: pass --key KEY.pub or put keys in {}", dir.display());
    }
    Ok(keys)
}

const FILE_USAGE: &str = "usage: iguana verify --file FILE [--sig FILE.sig | --bundle FILE.sigstore.json] [--key KEY.pub]...";

/// `iguana verify --file ...`: the parsed command line.
#[derive(Debug, Default, PartialEq, Eq)]
struct FileArgs {
    file: PathBuf,
    signature: Option<(&'static str, PathBuf)>,
    keys: Vec<PathBuf>,
}

fn parse_file(args: &[String]) -> Result<FileArgs, String> {
    let mut file = None;
    let mut out = FileArgs::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().filter(|v| !v.is_empty()).map(PathBuf::from).ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--file" => file = Some(value()?),
            "--key" => out.keys.push(value()?),
            "--sig" | "--bundle" if out.signature.is_some() => return Err("--sig and --bundle: one signature".into()),
            "--sig" => out.signature = Some((super::blob::SUFFIXES[0], value()?)),
            "--bundle" => out.signature = Some((super::blob::SUFFIXES[1], value()?)),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    out.file = file.ok_or("--file needs a value")?;
    Ok(out)
}

/// Checks a file's signature as PID 1 checks a control_url's.
fn verify_file(args: &[String]) -> anyhow::Result<()> {
    use super::blob::{self, Signature};
    let args = parse_file(args).map_err(|e| anyhow::anyhow!("{e}\n{FILE_USAGE}"))?;
    let keys = load_keys(&args.keys, Path::new(super::TRUST_DIR))?;
    let bytes = std::fs::read(&args.file).with_context(|| format!("read {}", args.file.display()))?;
    let (path, signature) = match args.signature {
        Some((suffix, path)) => {
            let limit = if suffix == blob::SUFFIXES[0] { blob::SIG_LIMIT } else { blob::BUNDLE_LIMIT };
            let sig = crate::fsutil::read_bounded(&path, limit).with_context(|| format!("read signature {}", path.display()))?;
            (path, Signature::for_suffix(suffix, sig))
        }
        None => blob::beside(&args.file)?.with_context(|| {
            let shown = args.file.display();
            format!("{shown}: no signature: neither {shown}.sig nor {shown}.sigstore.json")
        })?,
    };
    let key = blob::verify(&keys, &bytes, &signature).with_context(|| format!("{}: {}", args.file.display(), path.display()))?;
    println!("{}: signed by {} ({})", args.file.display(), key.name, path.display());
    Ok(())
}

/// Runs `iguana verify ...`; `args` are the arguments after `verify`.
pub fn verify(args: &[String]) -> anyhow::Result<()> {
    if args.iter().any(|a| a == "--file") {
        return verify_file(args);
    }
    let args = parse(args).map_err(|e| anyhow::anyhow!("{e}\n{USAGE}"))?;
    let Some(image) = args.image else { bail!("missing IMAGE\n{USAGE}") };
    let opts = crate::image::PullOptions {
        insecure_registries: args.insecure_registries,
        keys: load_keys(&args.keys, Path::new(super::TRUST_DIR))?,
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start tokio runtime")?;
    let (digest, accepted) = runtime.block_on(crate::image::signatures::verify_image(&opts, &image))?;
    println!("{image}: {digest} signed by {} (found at {})", accepted.key, accepted.place.describe(&digest));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: &[&str], expected: Result<Args, &str>) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        assert_eq!(parse(&args), expected.map_err(String::from), "args {args:?}");
    }

    #[test]
    fn command_lines() {
        let image = |keys: &[&str], insecure: &[&str]| Args {
            image: Some("r:5000/app:v1".into()),
            keys: keys.iter().map(PathBuf::from).collect(),
            insecure_registries: insecure.iter().map(|s| s.to_string()).collect(),
        };
        check(&["r:5000/app:v1"], Ok(image(&[], &[])));
        check(&["r:5000/app:v1", "--key", "a.pub", "--key=b.pub"], Ok(image(&["a.pub", "b.pub"], &[])));
        check(&["--insecure-registry=r:5000", "r:5000/app:v1"], Ok(image(&[], &["r:5000"])));
        check(&["r:5000/app:v1", "--key"], Err("--key needs a value"));
        check(&["a", "b"], Err("unexpected argument \"b\""));
        check(&["a", "--force"], Err("unknown option --force"));
        check(&[], Ok(Args::default()));
    }

    #[test]
    fn file_command_lines() {
        let args = |list: &[&str]| parse_file(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let want = |sig: Option<(&'static str, &str)>, keys: &[&str]| FileArgs {
            file: "w.yaml".into(),
            signature: sig.map(|(s, p)| (s, PathBuf::from(p))),
            keys: keys.iter().map(PathBuf::from).collect(),
        };
        assert_eq!(args(&["--file", "w.yaml"]), Ok(want(None, &[])));
        assert_eq!(args(&["--file", "w.yaml", "--sig", "s", "--key", "k.pub"]), Ok(want(Some((".sig", "s")), &["k.pub"])));
        assert_eq!(args(&["--bundle", "b", "--file", "w.yaml"]), Ok(want(Some((".sigstore.json", "b")), &[])));
        assert_eq!(args(&["--file", "w.yaml", "--sig", "s", "--bundle", "b"]), Err("--sig and --bundle: one signature".into()));
        assert_eq!(args(&["--file"]), Err("--file needs a value".into()));
        assert_eq!(args(&["--file", "w.yaml", "x"]), Err("unexpected argument \"x\"".into()));
    }

    #[test]
    fn keys_from_an_empty_directory_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_keys(&[], dir.path()).unwrap_err();
        assert!(err.to_string().starts_with("no trusted keys"), "{err}");
    }
}
