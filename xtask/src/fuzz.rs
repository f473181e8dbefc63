//! `cargo xtask fuzz [--seconds N] [--only NAME,..]`: runs every libFuzzer
//! target of `fuzz/` for a bounded time (60 s each by default), one after
//! the other, and prints executions, speed, new inputs and crashes per
//! target as a table. Fails when a target crashed.
//!
//! cargo-fuzz needs nightly compiler flags (`-Zsanitizer`); this project
//! builds with stable, so they are unlocked with `RUSTC_BOOTSTRAP=1` for
//! the fuzz build only. cargo-fuzz is installed from crates.io when missing.
//!
//! The committed seeds in `fuzz/corpus/<target>/` (real tar layers, real
//! manifests, real workflow files) are read, never written: what a run
//! finds goes to `target/fuzz/corpus/<target>/`, so the worktree stays
//! clean and later runs start from it. Crash inputs land in
//! `fuzz/artifacts/<target>/`, named in the table; a crash becomes a
//! regression test (`tests/parsers_never_panic.rs` or a unit test).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::{cmd_output, flag_value, run_cmd, target_dir, workspace_root};

const DEFAULT_SECONDS: u64 = 60;
/// One input running longer than this is a hang, reported as a crash.
const INPUT_TIMEOUT_SECONDS: u64 = 10;

/// What one target's run gave, from libFuzzer's final statistics.
#[derive(Debug, Default, PartialEq, Eq)]
struct Stats {
    executions: u64,
    per_second: u64,
    new_inputs: u64,
}

struct Outcome {
    target: String,
    stats: Stats,
    /// Crash (or hang, or leak) inputs this run wrote.
    crashes: Vec<PathBuf>,
}

pub fn main(args: &[String]) -> Result<()> {
    let mut seconds = DEFAULT_SECONDS;
    let mut only: Option<Vec<String>> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = flag_value(&mut it, "--seconds")?;
                seconds = value.parse().with_context(|| format!("--seconds {value:?}"))?;
            }
            "--only" => {
                let value = flag_value(&mut it, "--only")?;
                only = Some(value.split(',').map(String::from).collect());
            }
            other => bail!("unknown argument {other:?}\nusage: cargo xtask fuzz [--seconds N] [--only NAME,..]"),
        }
    }
    ensure_cargo_fuzz()?;
    let root = workspace_root();
    let all = list_targets(&root)?;
    let targets: Vec<String> = match only {
        Some(names) => {
            if let Some(unknown) = names.iter().find(|n| !all.contains(n)) {
                bail!("no fuzz target {unknown:?}; there are {}", all.join(", "));
            }
            names
        }
        None => all,
    };
    eprintln!("xtask: building {} fuzz targets", targets.len());
    run_cmd(cargo_fuzz(&root).arg("build").args(build_flags()))?;
    let mut outcomes = Vec::new();
    for target in &targets {
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        outcomes.push(run_target(&root, target, seconds)?);
    }
    print_table(&outcomes, seconds);
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.crashes.is_empty())
        .map(|o| o.target.as_str())
        .collect();
    if !crashed.is_empty() {
        bail!("crashes in {}", crashed.join(", "));
    }
    Ok(())
}

/// Installs cargo-fuzz from crates.io when `cargo fuzz` is not there.
fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new(crate::cargo())
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    eprintln!("xtask: cargo install cargo-fuzz --locked");
    run_cmd(
        Command::new(crate::cargo())
            .args(["install", "cargo-fuzz", "--locked"])
            .env("RUSTC_BOOTSTRAP", "1"),
    )
}

/// `cargo fuzz` in the workspace, with nightly flags unlocked on stable.
fn cargo_fuzz(root: &Path) -> Command {
    let mut cmd = Command::new(crate::cargo());
    cmd.arg("fuzz").current_dir(root).env("RUSTC_BOOTSTRAP", "1");
    cmd
}

/// Shared by `build` and `run`, so `run` finds what `build` made.
fn build_flags() -> Vec<String> {
    let dir = target_dir().join("fuzz");
    vec!["--target-dir".into(), dir.display().to_string()]
}

fn list_targets(root: &Path) -> Result<Vec<String>> {
    let out = cmd_output(cargo_fuzz(root).arg("list"))?;
    Ok(out.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
}

fn run_target(root: &Path, target: &str, seconds: u64) -> Result<Outcome> {
    let work = target_dir().join("fuzz/corpus").join(target);
    fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    let seeds = root.join("fuzz/corpus").join(target);
    let artifacts = root.join("fuzz/artifacts").join(target);
    let before = list_files(&artifacts);
    let mut cmd = cargo_fuzz(root);
    cmd.args(["run", target]).args(build_flags()).arg(&work);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
        .arg("-print_final_stats=1")
        .stdin(Stdio::null());
    let out = cmd.output().with_context(|| format!("spawn {cmd:?}"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    let log_path = target_dir().join("fuzz").join(format!("{target}.log"));
    fs::write(&log_path, log.as_bytes()).with_context(|| format!("write {}", log_path.display()))?;
    let crashes: Vec<PathBuf> = list_files(&artifacts)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    let stats = parse_stats(&log);
    if !out.status.success() && crashes.is_empty() {
        bail!("fuzz target {target} failed without a crash input ({}); see {}", out.status, log_path.display());
    }
    Ok(Outcome { target: target.to_string(), stats, crashes })
}

fn list_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries.filter_map(|e| e.ok().map(|e| e.path())).collect()
}

/// libFuzzer's `-print_final_stats=1` lines: `stat::NAME: VALUE`.
fn parse_stats(log: &str) -> Stats {
    let mut stats = Stats::default();
    for line in log.lines() {
        let Some((name, value)) = line.strip_prefix("stat::").and_then(|l| l.split_once(':')) else {
            continue;
        };
        let Ok(value) = value.trim().parse::<u64>() else {
            continue;
        };
        match name {
            "number_of_executed_units" => stats.executions = value,
            "average_exec_per_sec" => stats.per_second = value,
            "new_units_added" => stats.new_inputs = value,
            _ => {}
        }
    }
    stats
}

fn print_table(outcomes: &[Outcome], seconds: u64) {
    println!("\nfuzz: {seconds} s per target");
    println!("{:<10} {:>12} {:>9} {:>6} {:>8}  crash inputs", "target", "executions", "execs/s", "new", "crashes");
    for o in outcomes {
        let inputs: Vec<String> = o.crashes.iter().map(|p| p.display().to_string()).collect();
        println!(
            "{:<10} {:>12} {:>9} {:>6} {:>8}  {}",
            o.target,
            o.stats.executions,
            o.stats.per_second,
            o.stats.new_inputs,
            o.crashes.len(),
            inputs.join(" ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_stats() {
        let log = "#2097152\tpulse  cov: 412 ft: 1203 corp: 88/9Kb exec/s: 69905 rss: 61Mb\n\
                   Done 4194304 runs in 61 second(s)\n\
                   stat::number_of_executed_units: 4194304\n\
                   stat::average_exec_per_sec:     68759\n\
                   stat::new_units_added:          97\n\
                   stat::slowest_unit_time_sec:    0\n\
                   stat::peak_rss_mb:              61\n";
        assert_eq!(parse_stats(log), Stats { executions: 4_194_304, per_second: 68_759, new_inputs: 97 });
        assert_eq!(parse_stats("==1== ERROR: libFuzzer: deadly signal\n"), Stats::default());
    }
}
