//! What the status events and pstore scenarios check beyond the console.
//!
//! `workflow` boots with `rd.iguana.report_url=` pointing at testkit's
//! EventReceiver, which answers 500 to the first [`FAIL_FIRST`] requests:
//! the receiver must still get the whole event sequence of the workflow,
//! in order, each event once by id, the failing job's exit code and
//! `/iguana/reason`, its log by PUT, and the token in every request while
//! the console never shows it (but in the kernel's own command line echo).
//!
//! `previous-boot` boots with ramoops in a `memmap=` hole and without
//! `-no-reboot`: boot 1 fails (missing image) and reboots warm, boot 2
//! must say `previous boot failed:` with the reason; then the VM is stopped.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use testkit::EventReceiver;

use crate::qemu::{Outcome, Vm, VmConfig};

/// The bearer token of the `workflow` boot.
pub const TOKEN: &str = "e2e-report-tok-5c1f";
/// Requests the receiver refuses (500) before it takes any.
pub const FAIL_FIRST: usize = 3;
/// The pstore scenario's name.
pub const PREVIOUS_BOOT: &str = "previous-boot";
/// Kernel arguments: 1 MiB at 112 MiB kept from the kernel (`memmap=`)
/// for ramoops, which dumps the log on a reboot too (`max_reason=4`,
/// KMSG_DUMP_SHUTDOWN).
pub const RAMOOPS: &str = "memmap=1M$0x7000000 ramoops.mem_address=0x7000000 ramoops.mem_size=0x100000 \
                           ramoops.record_size=0x40000 ramoops.max_reason=4";

/// The workflow's events in order (heartbeats left out): type and subject.
const SEQUENCE: &[(&str, &str)] = &[
    ("boot.started", ""),
    ("network.up", ""),
    ("job.started", "serve"),
    ("job.finished", "serve"),
    ("job.started", "broken"),
    ("job.finished", "broken"),
    ("job.finished", "dependent"),
    ("job.started", "final"),
    ("job.finished", "final"),
    ("workflow.finished", ""),
    ("handover", ""),
];

/// Checks the receiver's record of the `workflow` boot and the console.
pub fn check_workflow(sink: &EventReceiver, outcome: &Outcome) -> Result<()> {
    // The kernel echoes its command line (`Command line:`, `Kernel command line:`).
    let kernel_echo = |text: &str| text.to_lowercase().contains("command line:");
    if let Some(line) = outcome.lines.iter().find(|l| l.text.contains(TOKEN) && !kernel_echo(&l.text)) {
        bail!("the report token shows on the console: {:?}", line.text);
    }
    let requests = sink.requests();
    let refused = requests.iter().filter(|r| r.status == 500).count();
    if refused != FAIL_FIRST {
        bail!("the receiver refused {refused} requests, not {FAIL_FIRST}");
    }
    let bearer = format!("Bearer {TOKEN}");
    if let Some(r) = requests.iter().find(|r| r.header("authorization") != Some(bearer.as_str())) {
        bail!("{} {} came without the token", r.method, r.path);
    }
    let events: Vec<Value> = sink.events().into_iter().filter(|e| e["type"] != "heartbeat").collect();
    let got: Vec<(String, String)> = events
        .iter()
        .map(|e| (e["type"].as_str().unwrap_or("").to_string(), e["subject"].as_str().unwrap_or("").to_string()))
        .collect();
    let want: Vec<(String, String)> = SEQUENCE.iter().map(|(t, s)| (t.to_string(), s.to_string())).collect();
    if got != want {
        bail!("events out of sequence:\n  got  {got:?}\n  want {want:?}");
    }
    let mut ids: Vec<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != events.len() {
        bail!("an event was delivered twice: {} ids for {} events", ids.len(), events.len());
    }
    let machine = events[0]["source"].as_str().and_then(|s| s.strip_prefix("iguana://")).context("boot.started has no iguana:// source")?;
    let broken = &events[5]["data"];
    let expected = (Some(3), Some("failed"), Some("disk too small"));
    let seen = (broken["exit_code"].as_i64(), broken["state"].as_str(), broken["reason"].as_str());
    if seen != expected {
        bail!("job.finished of broken says {seen:?}, want {expected:?}");
    }
    if !broken["log"].as_str().unwrap_or("").contains("IGUANA-E2E broken runs") {
        bail!("job.finished of broken lacks its log's end: {:?}", broken["log"]);
    }
    if events[6]["data"]["state"] != "skipped" {
        bail!("job.finished of dependent is not skipped: {}", events[6]["data"]);
    }
    let log = sink.log(&format!("/events/logs/{machine}/broken")).context("no log PUT for job broken")?;
    if !String::from_utf8_lossy(&log).contains("IGUANA-E2E broken runs") {
        bail!("the PUT log of broken lacks its output");
    }
    let boot = &events[0]["data"];
    if boot["kernel_release"].as_str().unwrap_or("").is_empty() || boot["macs"][0]["mac"] != "52:54:00:12:34:56" {
        bail!("boot.started lacks the kernel release or the MAC: {boot}");
    }
    if boot["cmdline"].as_str().unwrap_or("").contains(TOKEN) {
        bail!("boot.started shows the token in the command line");
    }
    Ok(())
}

/// Boots twice (warm reboot between) and checks the second boot reports
/// the first one's failure; the VM is stopped once it did.
pub fn run_previous_boot(mut config: VmConfig, log: &Path, timeout: Duration) -> Result<()> {
    config.reboot = true;
    let mut vm = Vm::start(&config)?;
    let said = vm.wait_for("previous boot failed:", timeout);
    // The container of boot 2 reads the copy in /iguana (its first line).
    let copied = said.as_ref().and_then(|_| vm.wait_for("IGUANA-E2E prev: step: job nope", Duration::from_secs(120)));
    let outcome = vm.stop();
    let _ = std::fs::write(log, outcome.transcript());
    let Some(said) = said else {
        bail!("no \"previous boot failed:\" within {timeout:?} (console: {})", log.display());
    };
    let starts: Vec<usize> =
        outcome.lines.iter().enumerate().filter(|(_, l)| l.text.contains("Linux version")).map(|(i, _)| i).collect();
    let at = outcome.lines.iter().position(|l| l.text == said.text).unwrap_or(0);
    if starts.len() < 2 || at < starts[1] {
        bail!("\"previous boot failed:\" came before the second boot (console: {})", log.display());
    }
    for part in ["step: job nope", "manifest unknown"] {
        if !said.text.contains(part) {
            bail!("{:?} lacks {part:?}", said.text);
        }
    }
    let Some(copied) = copied else {
        bail!("no container of the second boot printed /iguana/previous-boot.txt (console: {})", log.display());
    };
    let boot1_prev = outcome.lines[..starts[1]].iter().any(|l| l.text.contains("IGUANA-E2E prev: none"));
    if !boot1_prev || !outcome.lines[starts[1]..].iter().any(|l| l.text == copied.text) {
        bail!("boot 1 should see no previous-boot.txt and boot 2 its copy (console: {})", log.display());
    }
    if outcome.kernel_panicked() {
        bail!("kernel panicked (console: {})", log.display());
    }
    Ok(())
}
