//! `cargo xtask ci`: every check, in order, each run even when an earlier
//! one failed; the failed ones are named at the end. This is the project's
//! one test command (`.ci/run` calls it on a fresh Debian 12 machine).
//!
//! The closing `ci: N passed, N failed` line counts tests: the host tests'
//! results as cargo prints them, plus the e2e scenarios and the rows of
//! the fault matrix.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::initrd::Options;
use crate::{cargo, e2e, tools, workspace_root};

pub fn main(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("ci: unknown argument {arg:?}");
    }
    tools::ensure_tools()?;
    let mut passed = 0;
    let mut failed = 0;
    let mut failed_checks = Vec::new();

    println!("ci: host tests (cargo test --workspace --no-fail-fast)");
    match host_tests() {
        Ok((p, f, ok)) => {
            passed += p;
            failed += f;
            if !ok {
                failed_checks.push("host tests".to_owned());
            }
        }
        Err(err) => {
            println!("ci: host tests: {err:#}");
            failed_checks.push("host tests".to_owned());
        }
    }

    println!("ci: e2e (QEMU guests)");
    let all: Vec<&e2e::Scenario> = e2e::SCENARIOS.iter().collect();
    let handover = || crate::e2e_handover::run_all(None);
    match e2e::run(&Options::default(), &all, 2, false).and_then(|(p, mut names)| {
        let (hp, hnames) = handover()?;
        names.extend(hnames);
        let (dp, dnames) = crate::e2e_dracut::run_all()?;
        names.extend(dnames);
        let (up, unames) = crate::e2e_uki::run_all()?;
        names.extend(unames);
        let dp = dp + up;
        let (mp, mnames) = crate::e2e_modules::run_all(&Options::default())?;
        names.extend(mnames);
        let (tp, tnames) = crate::e2e_metal::run_all(&[])?;
        names.extend(tnames);
        // Each row of the fault matrix counts as one test.
        let (fp, fnames) = crate::e2e_faults::run_all(&Options::default())?;
        names.extend(fnames);
        let (xp, xnames) = crate::e2e_pxe::run_all()?;
        names.extend(xnames);
        let (dp2, dnames2) = crate::demo::run_all()?;
        names.extend(dnames2);
        let (ep, enames) = crate::e2e_extensions::run_all()?;
        names.extend(enames);
        let (sp, snames) = crate::e2e_trust::run_all()?;
        names.extend(snames);
        let mp = mp + tp + fp + xp + dp2 + ep + sp;
        Ok((p + hp + dp + mp, names))
    }) {
        Ok((p, names)) => {
            passed += p;
            failed += names.len();
            println!("e2e: {} passed, {} failed", p, names.len());
            failed_checks.extend(names.into_iter().map(|name| format!("e2e {name}")));
        }
        Err(err) => {
            println!("ci: e2e: {err:#}");
            failed_checks.push("e2e setup".to_owned());
        }
    }

    println!("ci: {passed} passed, {failed} failed");
    if !failed_checks.is_empty() {
        bail!("ci failed: {}", failed_checks.join(", "));
    }
    Ok(())
}

/// Runs `cargo test --workspace --no-fail-fast` (every suite runs and counts), echoing its output, and adds up its
/// `test result:` lines. Returns (passed, failed, exit status ok).
fn host_tests() -> Result<(usize, usize, bool)> {
    let mut child = Command::new(cargo())
        .args(["test", "--workspace", "--no-fail-fast"])
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("spawn cargo test")?;
    let (mut passed, mut failed) = (0, 0);
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            if let Some((p, f)) = parse_test_result(&line) {
                passed += p;
                failed += f;
            }
        }
    }
    let ok = child.wait()?.success();
    Ok((passed, failed, ok))
}

/// `test result: ok. 5 passed; 0 failed; ...` -> (5, 0).
fn parse_test_result(line: &str) -> Option<(usize, usize)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let count = |label: &str| -> Option<usize> {
        rest.split(';')
            .find_map(|part| {
                part.trim()
                    .trim_start_matches("ok. ")
                    .trim_start_matches("FAILED. ")
                    .strip_suffix(label)
            })
            .and_then(|n| n.trim().parse().ok())
    };
    Some((count(" passed")?, count(" failed")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_result_lines() {
        for (line, expected) in [
            ("test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s", Some((5, 0))),
            ("test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out", Some((3, 2))),
            ("running 5 tests", None),
        ] {
            assert_eq!(parse_test_result(line), expected, "{line}");
        }
    }
}
