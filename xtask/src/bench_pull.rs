//! `cargo xtask bench pull`: how fast `iguana pull` fetches and unpacks a
//! ~300 MB, 3-layer image from a local registry, against the usual pair
//! `skopeo copy` + `umoci unpack`. Runs alternate (iguana, peer, iguana, ...)
//! so that page-cache and CPU-frequency drift hit both alike.
//!
//! The image: layer 1 is real files copied from the host's /usr/share (up to
//! ~100 MB), layer 2 is ~150 MB of pseudo-random files (incompressible),
//! layer 3 is a few small files and a whiteout of a layer-1 file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use testkit::{Image, Layer, Registry};

const RUNS: usize = 3;
const REAL_FILES_BYTES: u64 = 100 << 20;
const RANDOM_FILE_BYTES: usize = 10 << 20;
const RANDOM_FILES: usize = 15;

pub fn main() -> Result<()> {
    crate::tools::ensure_tools()?;
    let iguana = build_iguana()?;
    eprintln!("xtask: building the 3-layer image (umoci compresses ~300 MB, be patient)");
    let registry = Registry::start()?;
    let (image, removed) = bench_image()?;
    let reference = image.build_and_push(&registry, "bench/pull:v1")?;
    let host = registry.host();
    let scratch = crate::target_dir().join("bench-pull");
    fs::remove_dir_all(&scratch).ok();

    let (mut ours, mut peers, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..RUNS {
        let dir = scratch.join(format!("run{i}"));
        fs::create_dir_all(&dir)?;
        let (secs, kib) = time_iguana(&iguana, &reference, &host, &dir.join("rootfs"))?;
        check_rootfs(&dir.join("rootfs"), &removed)?;
        let peer = time_peer(&reference, &dir)?;
        check_rootfs(&dir.join("bundle/rootfs"), &removed)?;
        eprintln!("xtask: run {}: iguana {secs:.2} s ({} KiB peak RSS), skopeo+umoci {peer:.2} s", i + 1, kib.map_or("?".into(), |k| k.to_string()));
        ours.push(secs);
        peers.push(peer);
        rss.extend(kib);
        fs::remove_dir_all(&dir)?;
    }
    fs::remove_dir_all(&scratch).ok();
    let (ours, peer) = (median(ours), median(peers));
    println!("bench pull: {RUNS} runs each, image {reference}, ~{} MB in 3 layers", image_mb());
    println!("  iguana pull (release)        median {ours:>7.2} s");
    println!("  skopeo copy + umoci unpack   median {peer:>7.2} s");
    println!("  ratio iguana/peer                   {:>7.2}", ours / peer);
    match rss.iter().max() {
        Some(kib) => println!("  iguana peak RSS                     {:>7.1} MiB", *kib as f64 / 1024.0),
        None => println!("  iguana peak RSS                     n/a (no /usr/bin/time)"),
    }
    Ok(())
}

fn image_mb() -> u64 {
    (REAL_FILES_BYTES + (RANDOM_FILE_BYTES * RANDOM_FILES) as u64) >> 20
}

/// `cargo build --release -p iguana` for the host; the binary's path.
fn build_iguana() -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "iguana", "--bin", "iguana"])
        .status()
        .context("run cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p iguana failed");
    }
    Ok(crate::target_dir().join("release/iguana"))
}

/// The image, and the layer-1 path that layer 3 whites out.
fn bench_image() -> Result<(Image, String)> {
    bench_image_of(REAL_FILES_BYTES, RANDOM_FILES)
}

/// The bench image at another size: up to `real_bytes` of host files in
/// layer 1, `random_files` files of 10 MiB in layer 2 (`bench fleet`).
pub fn bench_image_of(real_bytes: u64, random_files: usize) -> Result<(Image, String)> {
    let mut real = Layer::new();
    let mut total = 0;
    let mut first = None;
    collect(Path::new("/usr/share"), &mut real, &mut total, &mut first, real_bytes)?;
    let removed = first.context("no regular files in /usr/share")?;
    let mut random = Layer::new().dir("random", 0o755);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..random_files {
        random = random.file(&format!("random/{i:02}.bin"), noise(&mut seed, RANDOM_FILE_BYTES), 0o644);
    }
    let small = Layer::new()
        .dir("etc", 0o755)
        .file("etc/hostname", "bench\n", 0o644)
        .file("etc/motd", "pulled by iguana\n", 0o644)
        .whiteout(&removed);
    let image = Image::new().layer(real).layer(random).layer(small).entrypoint(&["/bin/true"]);
    Ok((image, removed))
}

/// Adds regular files under `dir` (sorted, depth first) until `total`
/// reaches `limit`; directories are created implicitly.
fn collect(dir: &Path, layer: &mut Layer, total: &mut u64, first: &mut Option<String>, limit: u64) -> Result<()> {
    let mut entries: Vec<_> = match fs::read_dir(dir) {
        Ok(e) => e.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => return Ok(()),
    };
    entries.sort();
    for path in entries {
        if *total >= limit {
            break;
        }
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        let rel = path.strip_prefix("/").unwrap_or(&path).to_string_lossy().into_owned();
        if meta.is_dir() {
            *layer = std::mem::take(layer).dir(&rel, 0o755);
            collect(&path, layer, total, first, limit)?;
        } else if meta.is_file() {
            let Ok(content) = fs::read(&path) else { continue };
            *total += content.len() as u64;
            first.get_or_insert_with(|| rel.clone());
            *layer = std::mem::take(layer).file(&rel, content, 0o644);
        }
    }
    Ok(())
}

/// xorshift64 bytes: not cryptographic, but gzip cannot shrink them.
fn noise(state: &mut u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Wall seconds and, with /usr/bin/time, peak RSS in KiB.
fn time_iguana(iguana: &Path, reference: &str, host: &str, rootfs: &Path) -> Result<(f64, Option<u64>)> {
    let time = Path::new("/usr/bin/time");
    let mut cmd = if time.exists() {
        let mut c = Command::new(time);
        c.arg("-v").arg(iguana);
        c
    } else {
        Command::new(iguana)
    };
    cmd.arg("pull").arg(reference).arg("--rootfs").arg(rootfs);
    cmd.args(["--insecure-registry", host]);
    let start = Instant::now();
    let out = cmd.output().context("run iguana pull")?;
    let secs = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("iguana pull failed: {stderr}");
    }
    let rss = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok());
    Ok((secs, rss))
}

/// skopeo copy to an OCI layout, then umoci unpack into DIR/bundle.
fn time_peer(reference: &str, dir: &Path) -> Result<f64> {
    let layout = dir.join("oci");
    let start = Instant::now();
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:bench", layout.display())))?;
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:bench", layout.display()))
        .arg(dir.join("bundle")))?;
    Ok(start.elapsed().as_secs_f64())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Both results must hold the same tree: layer 3 applied on top.
fn check_rootfs(rootfs: &Path, removed: &str) -> Result<()> {
    check_rootfs_of(rootfs, removed, RANDOM_FILES)
}

/// [`check_rootfs`] for an image of [`bench_image_of`] with `random_files`.
pub fn check_rootfs_of(rootfs: &Path, removed: &str, random_files: usize) -> Result<()> {
    let motd = fs::read_to_string(rootfs.join("etc/motd")).with_context(|| format!("{}: etc/motd", rootfs.display()))?;
    if motd != "pulled by iguana\n" || rootfs.join(removed).exists() {
        bail!("{}: layers not applied as expected", rootfs.display());
    }
    let last = format!("random/{:02}.bin", random_files.saturating_sub(1));
    let size = fs::metadata(rootfs.join(&last)).with_context(|| format!("{}: {last}", rootfs.display()))?.len();
    if size != RANDOM_FILE_BYTES as u64 {
        bail!("{}: {last} has {size} bytes", rootfs.display());
    }
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}
