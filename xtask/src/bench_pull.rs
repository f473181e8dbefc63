//! `cargo xtask bench pull`: how fast `iguana pull` fetches and unpacks a
//! ~250 MB, 3-layer image from a local registry, in both its forms, against
//! the usual tools side by side: the flattened rootfs (`iguana pull
//! --rootfs`) against `skopeo copy` + `umoci unpack`, and the per-layer
//! directories PID 1 uses at boot (`iguana pull --layers`) against `podman
//! pull` (overlay driver). Runs alternate (iguana, peer, iguana, ...) so
//! that page-cache and CPU-frequency drift hit all alike; every output is
//! on a tmpfs, as at boot. Also: iguana's peak RSS, and the machine's limit
//! (one core's inflate + SHA-256 of the layer bytes, measured here) with
//! how close each pull comes to it.
//!
//! `--baseline FILE` runs another iguana binary (an older build) in the
//! same alternation, so before/after are measured back to back. `--big`
//! also pulls a ~1 GiB image (per-layer form) and reports its peak RSS and
//! how much memory the tmpfs needed at its peak against the unpacked size.
//!
//! The image: layer 1 is real files copied from the host's /usr/share (up to
//! ~100 MB), layer 2 is ~150 MB of pseudo-random files (incompressible),
//! layer 3 is a few small files and a whiteout of a layer-1 file.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use testkit::{Image, Layer, Registry};

const RUNS: usize = 3;
const REAL_FILES_BYTES: u64 = 100 << 20;
const RANDOM_FILE_BYTES: usize = 10 << 20;
const RANDOM_FILES: usize = 15;
/// `--big`: layers of random files of this many MiB (the last also has
/// the whiteout layer's files).
const BIG_LAYERS_MIB: &[usize] = &[384, 256, 256, 128];
const USAGE: &str = "usage: cargo xtask bench pull [--runs N (0: only --big)] [--baseline FILE] [--big]";

/// A pull that was timed: wall seconds and peak RSS (KiB).
struct Timed {
    secs: f64,
    rss_kib: Option<u64>,
}

/// The contenders' results, by name, in run order.
#[derive(Default)]
struct Results(Vec<(String, Vec<Timed>)>);

impl Results {
    fn push(&mut self, name: &str, timed: Timed) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => v.push(timed),
            None => self.0.push((name.to_string(), vec![timed])),
        }
    }

    fn median(&self, name: &str) -> f64 {
        let secs = self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.iter().map(|t| t.secs).collect());
        median(secs.unwrap_or_default())
    }

    fn peak_rss_mib(&self, name: &str) -> Option<f64> {
        let rss = self.0.iter().find(|(n, _)| n == name)?.1.iter().filter_map(|t| t.rss_kib).max()?;
        Some(rss as f64 / 1024.0)
    }
}

pub fn main(args: &[String]) -> Result<()> {
    let (mut runs, mut baseline, mut big) = (RUNS, None, false);
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        match flag.as_str() {
            "--runs" => runs = rest.next().and_then(|n| n.parse().ok()).context(USAGE)?,
            "--baseline" => baseline = Some(PathBuf::from(rest.next().context(USAGE)?)),
            "--big" => big = true,
            _ => bail!(USAGE),
        }
    }
    crate::tools::ensure_tools()?;
    let iguana = build_iguana()?;
    let mut binaries = vec![("iguana", iguana)];
    if let Some(path) = baseline {
        binaries.push(("baseline", fs::canonicalize(&path).with_context(|| format!("{}", path.display()))?));
    }
    let registry = Registry::start()?;
    if runs == 0 {
        // `--runs 0 --big`: only the big image.
        let scratch = Tmpfs::mount(&crate::target_dir().join("bench-pull"))?;
        return if big { big_image(&registry, &binaries, &registry.host(), &scratch.path) } else { Ok(()) };
    }
    eprintln!("xtask: building the 3-layer image (umoci compresses ~250 MB, be patient)");
    let (image, removed) = bench_image()?;
    let reference = image.build_and_push(&registry, "bench/pull:v1")?;
    let host = registry.host();
    let scratch = Tmpfs::mount(&crate::target_dir().join("bench-pull"))?;
    let limit = machine_limit(&registry, "bench/pull", "v1")?;

    let mut results = Results::default();
    for i in 0..runs {
        let dir = scratch.path.join(format!("run{i}"));
        for (name, bin) in &binaries {
            fs::create_dir_all(&dir)?;
            let t = time_iguana(bin, &reference, &host, &dir.join("rootfs"), None)?;
            check_rootfs(&dir.join("rootfs"), &removed)?;
            eprintln!("xtask: run {}: {name} flat {:.2} s, {} KiB peak RSS", i + 1, t.secs, t.rss_kib.unwrap_or(0));
            results.push(&format!("{name} flat"), t);
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        let peer = time_skopeo_umoci(&reference, &dir)?;
        check_rootfs(&dir.join("bundle/rootfs"), &removed)?;
        eprintln!("xtask: run {}: skopeo+umoci {peer:.2} s", i + 1);
        results.push("skopeo+umoci", Timed { secs: peer, rss_kib: None });
        fs::remove_dir_all(&dir)?;
        for (name, bin) in &binaries {
            fs::create_dir_all(&dir)?;
            let rootfs = dir.join("rootfs");
            let t = time_iguana(bin, &reference, &host, &rootfs, Some(&dir.join("layers")));
            let checked = t.as_ref().map_err(|e| anyhow::anyhow!("{e:#}")).and_then(|_| check_rootfs(&rootfs, &removed));
            umount(&rootfs);
            let t = t?;
            checked?;
            eprintln!("xtask: run {}: {name} layers {:.2} s, {} KiB peak RSS", i + 1, t.secs, t.rss_kib.unwrap_or(0));
            results.push(&format!("{name} layers"), t);
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        let peer = time_podman(&reference, &dir)?;
        eprintln!("xtask: run {}: podman pull {peer:.2} s", i + 1);
        results.push("podman pull", Timed { secs: peer, rss_kib: None });
        fs::remove_dir_all(&dir)?;
    }

    let size = limit.compressed as f64 / 1e6;
    println!("bench pull: {runs} runs each, alternated, outputs on a tmpfs; image {reference}, 3 layers, {size:.0} MB compressed, {:.0} MB unpacked", limit.uncompressed as f64 / 1e6);
    let (flat_peer, layers_peer) = (results.median("skopeo+umoci"), results.median("podman pull"));
    println!("  skopeo copy + umoci unpack        median {flat_peer:>6.2} s");
    println!("  podman pull (overlay)             median {layers_peer:>6.2} s");
    for (name, _) in &binaries {
        for (form, peer, peer_name) in [("flat", flat_peer, "skopeo+umoci"), ("layers", layers_peer, "podman")] {
            let ours = results.median(&format!("{name} {form}"));
            let rss = results.peak_rss_mib(&format!("{name} {form}")).map_or("?".into(), |m| format!("{m:.1}"));
            println!(
                "  {:<32}  median {ours:>6.2} s  {:>5.2}x faster than {peer_name}  {:>3.0}% of the machine's limit  peak RSS {rss} MiB",
                format!("{name} pull ({form})"),
                peer / ours,
                100.0 * limit.floor(form == "layers") / ours
            );
        }
    }
    println!(
        "  machine's limit: one core inflates + SHA-256s (blob and tar) the layers in {:.2} s ({:.0} MB/s of blob); largest layer {:.2} s; with {} cores the floor is {:.2} s per layer in order (flat) and {:.2} s in parallel (layers)",
        limit.one_core_secs,
        size / limit.one_core_secs,
        limit.largest_secs,
        limit.cores,
        limit.floor(false),
        limit.floor(true),
    );
    if big {
        big_image(&registry, &binaries, &host, &scratch.path)?;
    }
    Ok(())
}

/// One core's inflate + SHA-256 throughput on an image's layer blobs: the
/// work a pull cannot avoid (hash the blob, inflate it, hash the tar).
struct Limit {
    compressed: u64,
    uncompressed: u64,
    one_core_secs: f64,
    largest_secs: f64,
    cores: usize,
}

impl Limit {
    /// The shortest time the pull's own CPU work can take: flat applies in
    /// order but inflates on one core while the other unpacks, so the sum;
    /// per-layer runs the layers side by side, on all cores.
    fn floor(&self, parallel: bool) -> f64 {
        if parallel {
            (self.one_core_secs / self.cores as f64).max(self.largest_secs)
        } else {
            self.one_core_secs
        }
    }
}

fn machine_limit(registry: &Registry, name: &str, tag: &str) -> Result<Limit> {
    use sha2::{Digest, Sha256};
    let manifest = registry_json(registry, &format!("/v2/{name}/manifests/{tag}"))?;
    let layers = manifest["layers"].as_sequence().context("manifest without layers")?;
    let (mut limit, mut largest) = (Limit { compressed: 0, uncompressed: 0, one_core_secs: 0.0, largest_secs: 0.0, cores: 1 }, 0);
    limit.cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for layer in layers {
        let digest = layer["digest"].as_str().context("layer without digest")?;
        let blob = fs::read(registry.blob_path(digest)?)?;
        // Best of three, to keep the noise of a shared machine out.
        let mut best = f64::MAX;
        let mut tar_len = 0;
        for _ in 0..3 {
            let start = Instant::now();
            let blob_sha = Sha256::digest(&blob);
            let mut gz = flate2::read::MultiGzDecoder::new(&blob[..]);
            let (mut tar_sha, mut buf, mut n_total) = (Sha256::new(), vec![0u8; 256 << 10], 0u64);
            loop {
                let n = gz.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                tar_sha.update(&buf[..n]);
                n_total += n as u64;
            }
            std::hint::black_box((blob_sha, tar_sha.finalize()));
            best = best.min(start.elapsed().as_secs_f64());
            tar_len = n_total;
        }
        limit.compressed += blob.len() as u64;
        limit.uncompressed += tar_len;
        limit.one_core_secs += best;
        if blob.len() > largest {
            largest = blob.len();
            limit.largest_secs = best;
        }
    }
    Ok(limit)
}

/// GET `path` on the registry as JSON (a manifest).
fn registry_json(registry: &Registry, path: &str) -> Result<serde_yaml::Value> {
    let accept = ("Accept", "application/vnd.oci.image.manifest.v1+json".to_string());
    let response = registry.request("GET", path, &[accept], b"")?;
    // JSON is YAML: no JSON crate needed in the xtask.
    Ok(serde_yaml::from_slice(&response.body)?)
}

/// A tmpfs of our own (we are root), or /dev/shm's: the bench's outputs
/// live in RAM, as at boot.
struct Tmpfs {
    path: PathBuf,
    mounted: bool,
}

impl Tmpfs {
    fn mount(path: &Path) -> Result<Tmpfs> {
        umount(path);
        fs::remove_dir_all(path).ok();
        fs::create_dir_all(path)?;
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", "size=80%", "bench-pull"]).arg(path).status().is_ok_and(|s| s.success());
        if ok {
            return Ok(Tmpfs { path: path.to_path_buf(), mounted: true });
        }
        let shm = PathBuf::from(format!("/dev/shm/iguana-bench-pull-{}", std::process::id()));
        fs::create_dir_all(&shm)?;
        Ok(Tmpfs { path: shm, mounted: false })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if self.mounted {
            umount(&self.path);
        }
        fs::remove_dir_all(&self.path).ok();
    }
}

fn umount(path: &Path) {
    Command::new("umount").arg(path).stderr(std::process::Stdio::null()).status().ok();
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
pub fn noise(state: &mut u64, len: usize) -> Vec<u8> {
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

/// Wall seconds and, with /usr/bin/time, peak RSS in KiB. With `layers`,
/// the boot's form: per-layer directories there, the rootfs an overlay.
fn time_iguana(iguana: &Path, reference: &str, host: &str, rootfs: &Path, layers: Option<&Path>) -> Result<Timed> {
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-v").arg(iguana);
    cmd.arg("pull").arg(reference).arg("--rootfs").arg(rootfs);
    cmd.args(["--insecure-registry", host]);
    if let Some(layers) = layers {
        cmd.arg("--layers").arg(layers);
    }
    let start = Instant::now();
    let out = cmd.output().context("run iguana pull")?;
    let secs = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("iguana pull failed: {stderr}");
    }
    if layers.is_some() && !stderr.contains("rootfs is an overlay of") {
        bail!("iguana pull --layers did not make an overlay: {stderr}");
    }
    let rss_kib = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok());
    Ok(Timed { secs, rss_kib })
}

/// skopeo copy to an OCI layout, then umoci unpack into DIR/bundle.
fn time_skopeo_umoci(reference: &str, dir: &Path) -> Result<f64> {
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

/// `podman pull` into storage of its own under DIR (overlay driver, its
/// temporary files there too), never the host's.
fn time_podman(reference: &str, dir: &Path) -> Result<f64> {
    let tmp = dir.join("tmp");
    fs::create_dir_all(&tmp)?;
    let podman = |args: &[&str]| {
        let mut cmd = Command::new("podman");
        cmd.arg("--root").arg(dir.join("root")).arg("--runroot").arg(dir.join("run"));
        cmd.args(["--storage-driver", "overlay", "--events-backend", "none", "--cgroup-manager", "cgroupfs"]);
        cmd.args(args).env("TMPDIR", &tmp);
        cmd
    };
    let start = Instant::now();
    run(&mut podman(&["pull", "--quiet", "--tls-verify=false", &format!("docker://{reference}")]))?;
    let secs = start.elapsed().as_secs_f64();
    // Its overlay storage may hold mounts: let podman take it down.
    run(&mut podman(&["system", "reset", "--force"])).ok();
    Ok(secs)
}

/// `--big`: a ~1 GiB image through the boot's form: peak RSS, and the
/// tmpfs's peak use (blobs and layers) against the unpacked layers alone.
fn big_image(registry: &Registry, binaries: &[(&str, PathBuf)], host: &str, scratch: &Path) -> Result<()> {
    let total: usize = BIG_LAYERS_MIB.iter().sum();
    eprintln!("xtask: building the {total} MiB image (umoci compresses it, be patient)");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut image = Image::new().entrypoint(&["/bin/true"]);
    for (l, mib) in BIG_LAYERS_MIB.iter().enumerate() {
        let mut layer = Layer::new().dir(&format!("l{l}"), 0o755);
        for f in 0..(mib / 16) {
            layer = layer.file(&format!("l{l}/{f:03}.bin"), noise(&mut seed, 16 << 20), 0o644);
        }
        image = image.layer(layer);
    }
    let reference = image.build_and_push(registry, "bench/big:v1")?;
    println!("bench pull --big: image {reference}, {} layers, {total} MiB of incompressible files, per-layer form on a tmpfs", BIG_LAYERS_MIB.len());
    for (name, bin) in binaries {
        let dir = scratch.join("big");
        fs::create_dir_all(&dir)?;
        let base = used_bytes(scratch)?;
        let (peak, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let sampler = {
            let (peak, stop, scratch) = (Arc::clone(&peak), Arc::clone(&stop), scratch.to_path_buf());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(used) = used_bytes(&scratch) {
                        peak.fetch_max(used, Ordering::Relaxed);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            })
        };
        let rootfs = dir.join("rootfs");
        let t = time_iguana(bin, &reference, host, &rootfs, Some(&dir.join("layers")));
        stop.store(true, Ordering::Relaxed);
        sampler.join().ok();
        let unpacked = used_bytes(scratch)?.saturating_sub(base);
        umount(&rootfs);
        let t = t?;
        let peak = peak.load(Ordering::Relaxed).saturating_sub(base);
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        println!(
            "  {name:<9} {:.2} s  peak RSS {:.1} MiB  tmpfs peak {:.0} MiB for {:.0} MiB unpacked (+{:.0} MiB)  => needs ~{:.0} MiB",
            t.secs,
            t.rss_kib.unwrap_or(0) as f64 / 1024.0,
            mib(peak),
            mib(unpacked),
            mib(peak.saturating_sub(unpacked)),
            mib(peak) + t.rss_kib.unwrap_or(0) as f64 / 1024.0,
        );
        fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

/// Bytes in use on the filesystem holding `path`.
fn used_bytes(path: &Path) -> Result<u64> {
    let out = Command::new("stat").args(["-f", "-c", "%b %f %S"]).arg(path).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u64> = text.split_whitespace().filter_map(|n| n.parse().ok()).collect();
    match v[..] {
        [blocks, free, size] => Ok((blocks - free) * size),
        _ => bail!("stat -f {}: {text}", path.display()),
    }
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
