//! Embeds iguana's build date as `IGUANA_BUILD_EPOCH` (seconds since 1970).
//!
//! The clock phase treats any time before it as certainly wrong. It is
//! `SOURCE_DATE_EPOCH` when set (reproducible-builds.org), else the date of
//! the commit being built, so the same commit always builds the same
//! binary; outside a git checkout it is a fixed floor.

use std::process::Command;

/// 2025-01-01T00:00:00Z: older than any commit of iguana.
const FLOOR: u64 = 1_735_689_600;

fn main() {
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or_else(commit_date)
        .unwrap_or(FLOOR);
    println!("cargo:rustc-env=IGUANA_BUILD_EPOCH={epoch}");
}

/// The committer date of HEAD; rebuilt when HEAD moves.
fn commit_date() -> Option<u64> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let git_dir = git(&["rev-parse", "--absolute-git-dir"])?;
    println!("cargo:rerun-if-changed={git_dir}/HEAD");
    println!("cargo:rerun-if-changed={git_dir}/logs/HEAD");
    git(&["log", "-1", "--format=%ct", "HEAD"])?.parse().ok()
}
