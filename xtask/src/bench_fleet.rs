//! `cargo xtask bench fleet [--machines N] [--image-mb M]`: many machines
//! pulling one image at once through a pull-through cache, as a fleet
//! booted by PXE would (`rd.iguana.registry_mirror=`).
//!
//! An origin docker-registry holds the bench image (`bench pull`'s three
//! layers, at M MiB); a counting proxy in front of it (testkit's
//! `BlobProxy`, watching every blob) tells what the origin served. N
//! `iguana pull` processes run at once, each with its own store and rootfs
//! on tmpfs (/dev/shm), as separate machines would; the binary is the
//! initrd's (static, musl). Three rounds:
//!
//! - `no mirror` (the peer): every machine pulls from the origin;
//! - `mirror (cold)`: a docker-registry in proxy mode (`proxy: remoteurl:`)
//!   in front of the origin, empty, is each machine's mirror;
//! - `mirror warmed by 1 pull`: a fresh mirror, one pull through it to the
//!   end (its origin bytes counted, its time not), then the fleet;
//! - `mirror killed`: the same with a fresh mirror killed 5 s in; every
//!   pull must still complete, from the origin.
//!
//! Printed per round: wall time, per-machine p50/p95, bytes the origin
//! served (and how often each blob), machines that fell back from the
//! mirror, failures. Any failure fails the task.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use testkit::{BlobFault, BlobProxy, Registry, RegistryOptions};

use crate::bench_pull::{bench_image_of, check_rootfs_of};
use crate::flag_value;

const MACHINES: usize = 20;
const IMAGE_MB: u64 = 60;
/// When the third round kills its mirror.
const KILL_AFTER: Duration = Duration::from_secs(5);
/// A machine still pulling after this is killed and counted as failed.
const PULL_LIMIT: Duration = Duration::from_secs(900);
const REPOSITORY: &str = "bench/fleet";

/// How a round reaches the registry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    NoMirror,
    Mirror,
    /// The mirror first warmed by one pull, then the fleet.
    MirrorWarmed,
    MirrorKilled,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::NoMirror => "no mirror (peer)",
            Mode::Mirror => "mirror (cold)",
            Mode::MirrorWarmed => "mirror warmed by 1 pull",
            Mode::MirrorKilled => "mirror killed at 5 s",
        }
    }
}

/// What one round measured.
struct Round {
    wall: f64,
    /// Seconds of each machine that completed, sorted.
    times: Vec<f64>,
    failures: Vec<String>,
    /// Machines whose pull reported a mirror failure and went to the origin.
    fell_back: usize,
    /// Machines done when the mirror was killed.
    done_at_kill: Option<usize>,
    origin_bytes: u64,
    /// Blob GETs the origin answered, and for how many distinct blobs.
    origin_downloads: usize,
    distinct_blobs: usize,
}

pub fn main(args: &[String]) -> Result<()> {
    let (mut machines, mut image_mb) = (MACHINES, IMAGE_MB);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--machines" => machines = flag_value(&mut args, arg)?.parse().context("--machines N")?,
            "--image-mb" => image_mb = flag_value(&mut args, arg)?.parse().context("--image-mb M")?,
            other => bail!("bench fleet: unknown argument {other:?}"),
        }
    }
    if machines == 0 || image_mb < 20 {
        bail!("bench fleet: --machines must be at least 1 and --image-mb at least 20");
    }
    crate::tools::ensure_tools()?;
    // The static binary the initrd carries: what each machine runs.
    let iguana = crate::initrd::build_iguana()?;
    // Half the image incompressible (10 MiB files), half real host files.
    let random_files = (image_mb / 20).max(1) as usize;
    let real_bytes = (image_mb - random_files as u64 * 10) << 20;
    let (image, removed) = bench_image_of(real_bytes, random_files)?;
    let origin = Registry::start().context("start the origin docker-registry")?;
    image.build_and_push(&origin, &format!("{REPOSITORY}:v1"))?;
    let image_bytes = image_bytes(&origin)?;
    let counter = BlobProxy::start(origin.port(), "sha256:", BlobFault::None)?;
    let scratch = PathBuf::from(format!("/dev/shm/iguana-bench-fleet-{}", std::process::id()));
    let env = Env { iguana: &iguana, counter: &counter, scratch: &scratch, removed: &removed, random_files, machines };

    let mut rounds = Vec::new();
    for mode in [Mode::NoMirror, Mode::Mirror, Mode::MirrorWarmed, Mode::MirrorKilled] {
        eprintln!("xtask: bench fleet: {machines} machines, {}", mode.label());
        let round = run_round(&env, mode);
        fs::remove_dir_all(&scratch).ok();
        rounds.push((mode, round?));
    }
    print_report(machines, &counter.host(), image_bytes, &rounds);
    let failed: usize = rounds.iter().map(|(_, r)| r.failures.len()).sum();
    if failed > 0 {
        for (mode, round) in &rounds {
            for failure in &round.failures {
                eprintln!("xtask: {}: {failure}", mode.label());
            }
        }
        bail!("bench fleet: {failed} pulls failed");
    }
    Ok(())
}

/// What every round shares.
struct Env<'a> {
    iguana: &'a Path,
    counter: &'a BlobProxy,
    scratch: &'a Path,
    removed: &'a str,
    random_files: usize,
    machines: usize,
}

fn run_round(env: &Env, mode: Mode) -> Result<Round> {
    let origin = env.counter.host();
    let mut mirror = match mode {
        Mode::NoMirror => None,
        _ => Some(
            Registry::start_with(RegistryOptions {
                proxy_remote: Some(format!("http://{origin}")),
                ..RegistryOptions::default()
            })
            .context("start the docker-registry in proxy mode")?,
        ),
    };
    let mirror_host = mirror.as_ref().map(Registry::host);
    let served_before = env.counter.served().len();
    let reference = format!("{origin}/{REPOSITORY}:v1");
    let pull = |dir: &Path| -> Result<Child> {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let log = fs::File::create(dir.join("pull.log"))?;
        let mut cmd = Command::new(env.iguana);
        cmd.arg("pull").arg(&reference).arg("--rootfs").arg(dir.join("rootfs")).arg("--store").arg(dir.join("store"));
        match &mirror_host {
            Some(m) => cmd.args(["--mirror", &format!("{origin}={m}"), "--insecure-registry", &format!("{origin},{m}")]),
            None => cmd.args(["--insecure-registry", &origin]),
        };
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn().context("spawn iguana pull")
    };
    if mode == Mode::MirrorWarmed {
        let dir = env.scratch.join("warm");
        let status = pull(&dir)?.wait()?;
        if !status.success() {
            bail!("the warming pull failed: {status}: {}", last_line(&fs::read_to_string(dir.join("pull.log")).unwrap_or_default()));
        }
        fs::remove_dir_all(&dir).ok();
    }

    let mut children: Vec<(Child, PathBuf, Option<f64>)> = Vec::new();
    let started = Instant::now();
    for n in 0..env.machines {
        let dir = env.scratch.join(format!("machine{n:02}"));
        children.push((pull(&dir)?, dir, None));
    }
    let mut done_at_kill = None;
    let mut failures = Vec::new();
    while children.iter().any(|(_, _, t)| t.is_none()) {
        let now = started.elapsed();
        for (child, dir, time) in children.iter_mut().filter(|(_, _, t)| t.is_none()) {
            if let Some(status) = child.try_wait()? {
                *time = Some(now.as_secs_f64());
                if !status.success() {
                    let log = fs::read_to_string(dir.join("pull.log")).unwrap_or_default();
                    failures.push(format!("{}: {status}: {}", dir.display(), last_line(&log)));
                }
            } else if now > PULL_LIMIT {
                child.kill().ok();
                child.wait().ok();
                *time = Some(now.as_secs_f64());
                failures.push(format!("{}: still pulling after {PULL_LIMIT:?}", dir.display()));
            }
        }
        if mode == Mode::MirrorKilled && done_at_kill.is_none() && now >= KILL_AFTER {
            if let Some(m) = mirror.as_mut() {
                m.stop()?;
            }
            done_at_kill = Some(children.iter().filter(|(_, _, t)| t.is_some()).count());
            eprintln!("xtask:   mirror killed at {:.1} s", now.as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = started.elapsed().as_secs_f64();

    let mut times = Vec::new();
    let mut fell_back = 0;
    for (_, dir, time) in &children {
        let log = fs::read_to_string(dir.join("pull.log")).unwrap_or_default();
        if mirror_host.as_ref().is_some_and(|m| log.contains(&format!("mirror {m}:"))) {
            fell_back += 1;
        }
        let rootfs = dir.join("rootfs");
        if rootfs.exists() {
            match check_rootfs_of(&rootfs, env.removed, env.random_files) {
                Ok(()) => times.extend(*time),
                Err(err) => failures.push(format!("{err:#}")),
            }
        }
    }
    times.sort_by(f64::total_cmp);
    let served = env.counter.served();
    let served = served.get(served_before..).unwrap_or_default();
    let mut blobs: Vec<&str> = served.iter().map(|s| s.path.rsplit('/').next().unwrap_or("")).collect();
    blobs.sort_unstable();
    blobs.dedup();
    Ok(Round {
        wall,
        times,
        failures,
        fell_back,
        done_at_kill,
        origin_bytes: served.iter().map(|s| s.bytes).sum(),
        origin_downloads: served.len(),
        distinct_blobs: blobs.len(),
    })
}

fn last_line(log: &str) -> &str {
    log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("")
}

/// The image's blobs (config and layers) in bytes, from its manifest.
fn image_bytes(origin: &Registry) -> Result<u64> {
    let accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
    let resp = origin.request("GET", &format!("/v2/{REPOSITORY}/manifests/v1"), &[("Accept", accept.into())], b"")?;
    if resp.status != 200 {
        bail!("GET the bench image's manifest: HTTP {}", resp.status);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&resp.body).context("parse the manifest")?;
    let size = |v: &serde_json::Value| v["size"].as_u64().unwrap_or(0);
    let layers = manifest["layers"].as_array().map(|l| l.iter().map(size).sum()).unwrap_or(0);
    Ok(size(&manifest["config"]) + layers)
}

/// Nearest-rank percentile of sorted `values`.
fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let rank = (q * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

fn print_report(machines: usize, origin: &str, image_bytes: u64, rounds: &[(Mode, Round)]) {
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    println!(
        "bench fleet: {machines} machines at once, each `iguana pull` with its own store on tmpfs; image {origin}/{REPOSITORY}:v1, {:.1} MiB of blobs",
        mib(image_bytes)
    );
    let peer = rounds.first().map(|(_, r)| r);
    println!("  {:<22} {:>8} {:>8} {:>8} {:>14} {:>9} {:>10} {:>8}", "round", "wall s", "p50 s", "p95 s", "origin MiB", "x image", "fell back", "failed");
    for (mode, r) in rounds {
        println!(
            "  {:<22} {:>8.1} {:>8.1} {:>8.1} {:>14.1} {:>9.2} {:>10} {:>8}",
            mode.label(),
            r.wall,
            percentile(&r.times, 0.5),
            percentile(&r.times, 0.95),
            mib(r.origin_bytes),
            r.origin_bytes as f64 / image_bytes.max(1) as f64,
            r.fell_back,
            r.failures.len()
        );
    }
    for (mode, r) in rounds {
        println!(
            "  {}: the origin answered {} blob GETs for {} distinct blobs{}",
            mode.label(),
            r.origin_downloads,
            r.distinct_blobs,
            r.done_at_kill.map_or(String::new(), |d| format!("; {d} machines were done when the mirror died"))
        );
    }
    for (mode, r) in rounds.iter().skip(1) {
        if let Some(peer) = peer {
            println!(
                "  ratio {}/peer: wall {:.2}, p95 {:.2}, origin bytes {:.2}",
                mode.label(),
                r.wall / peer.wall,
                percentile(&r.times, 0.95) / percentile(&peer.times, 0.95),
                r.origin_bytes as f64 / peer.origin_bytes.max(1) as f64
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        for (q, expected) in [(0.5, 10.0), (0.95, 19.0), (1.0, 20.0), (0.0, 1.0)] {
            assert_eq!(percentile(&values, q), expected, "q={q}");
        }
        assert!(percentile(&[], 0.5).is_nan());
    }
}
