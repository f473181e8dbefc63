//! `cargo xtask demo [--check]`: the whole job in one boot, about a minute
//! under TCG, the guest's console live.
//!
//! The guest fetches `examples/demo/workflow.yaml` (rd.iguana.control_url,
//! from a file server on the host); its `hello` job shows what a container
//! sees (`examples/hello/run.sh`), its `install` job
//! (`examples/demo/install.sh`) puts an ext2 root filesystem with busybox
//! and `examples/demo/init` on a blank virtio disk and writes
//! `/iguana/mountlist`; iguana switch_roots into it and the installed
//! system greets. Meanwhile iguana reports to a local event sink
//! (rd.iguana.report_url, testkit's `EventReceiver`), and when the VM ends
//! the demo prints what the sink received as a timeline.
//!
//! `--check` (run by `ci` and `cargo xtask e2e --only demo`) boots the same
//! without the live console and fails unless the installed system greeted,
//! the VM powered off by itself, and the events came from boot to handover.

use std::fs;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use testkit::{EventReceiver, FileServer, Image, Layer, Registry};

use crate::initrd::{self, Options};
use crate::qemu::{Outcome, Vm, VmConfig, KERNEL_PANIC};
use crate::{flag_value, target_dir, tools, workspace_root};

pub const NAME: &str = "demo";
/// PID 1's log prefix for the error that ends a boot.
const FAILED: &str = "iguana: error:";
const TIMEOUT: Duration = Duration::from_secs(240);
const DISK_BYTES: u64 = 64 << 20;
/// The installed system's greeting (examples/demo/init).
const GREETING: &str = "DEMO: hello from the installed system";
const SWITCH_ROOT: &str = "switch_root /sysroot /sbin/init";
/// The events `--check` wants, in this order (others may come between).
const EVENTS: &[&str] = &["boot.started", "job.started", "job.finished", "workflow.finished", "handover"];

/// What a demo boot left.
struct Demo {
    outcome: Outcome,
    events: Vec<serde_json::Value>,
    console: std::path::PathBuf,
}

pub fn main(args: &[String]) -> Result<()> {
    let mut memory_mib = 256;
    let mut check_only = false;
    let mut opts = Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--memory" => memory_mib = flag_value(&mut args, arg)?.parse()?,
            "--init" => opts.init = Some(flag_value(&mut args, arg)?.into()),
            "--check" => check_only = true,
            other => bail!("demo: unknown argument {other:?}"),
        }
    }
    if check_only {
        return check(&opts);
    }
    let demo = boot(&opts, memory_mib, true)?;
    println!();
    print!("{}", timeline(&demo.events));
    verdict(&demo)?;
    eprintln!("xtask: the installed system greeted and powered off; QEMU exited after {:.1?}", demo.outcome.elapsed);
    Ok(())
}

/// The demo without the live console; fails unless it did the whole job.
pub fn check(opts: &Options) -> Result<()> {
    let demo = boot(opts, 256, false)?;
    verdict(&demo).with_context(|| format!("console in {}", demo.console.display()))?;
    let types: Vec<&str> = demo.events.iter().filter_map(|e| e["type"].as_str()).collect();
    let mut rest = types.iter();
    for want in EVENTS {
        if !rest.any(|t| t == want) {
            bail!("the event sink got {types:?}: no {want:?} in order {EVENTS:?}");
        }
    }
    eprintln!("xtask:   demo: {} events, timeline:\n{}", demo.events.len(), timeline(&demo.events));
    Ok(())
}

/// `cargo xtask e2e --only demo` and `ci`: the check as one test.
pub fn run_all() -> Result<(usize, Vec<String>)> {
    Ok(crate::e2e::one_test(NAME, || check(&Options::default())))
}

fn boot(opts: &Options, memory_mib: u32, live: bool) -> Result<Demo> {
    tools::ensure_tools()?;
    let built = initrd::build(opts)?;
    let root = workspace_root();
    let read = |path: &str| fs::read_to_string(root.join(path)).with_context(|| format!("read {path}"));
    let registry = Registry::start().context("start docker-registry")?;
    let reg = format!("10.0.2.2:{}", registry.port());
    Image::busybox_script(&read("examples/hello/run.sh")?)?.build_and_push(&registry, "demo-hello:latest")?;
    let system = Layer::new()
        .dir("os", 0o755)
        .dir("os/sbin", 0o755)
        .file("os/sbin/init", read("examples/demo/init")?, 0o755);
    Image::busybox_script(&read("examples/demo/install.sh")?)?
        .layer(system)
        .build_and_push(&registry, "demo-installer:latest")?;
    let files = FileServer::start()?;
    files.add("/demo.yaml", read("examples/demo/workflow.yaml")?.replace("{REG}", &reg));
    let sink = EventReceiver::start(0)?;

    let dir = target_dir().join("iguana-demo");
    fs::create_dir_all(&dir)?;
    let disk = dir.join("disk.img");
    let _ = fs::remove_file(&disk);
    fs::File::create(&disk)
        .and_then(|f| f.set_len(DISK_BYTES))
        .with_context(|| format!("create {}", disk.display()))?;
    let append = format!(
        "rd.iguana.control_url=http://10.0.2.2:{}/demo.yaml rd.iguana.insecure_registries={reg} rd.iguana.report_url={} rd.iguana.reboot_timeout=0",
        files.port(),
        sink.url("10.0.2.2")
    );
    let mut config = VmConfig::new(built.kernel.vmlinuz.clone(), built.initrd.clone(), append);
    config.memory_mib = memory_mib;
    config.extra_args = vec!["-drive".into(), format!("file={},if=virtio,format=raw", disk.display())];
    if live {
        config.echo = Some(String::new());
        eprintln!("xtask: booting {} with {}", config.kernel.display(), config.initrd.display());
    }
    let outcome = Vm::start(&config)?.wait(TIMEOUT);
    let console = dir.join("console.log");
    fs::write(&console, outcome.transcript())?;
    Ok(Demo { outcome, events: sink.events(), console })
}

/// The boot did the whole job: no error, no panic, the greeting after the
/// switch_root, QEMU ended by the guest.
fn verdict(demo: &Demo) -> Result<()> {
    let outcome = &demo.outcome;
    if let Some(line) = outcome.find(&[FAILED]).or_else(|| outcome.find(&[KERNEL_PANIC])) {
        bail!("the boot failed: {}", line.text);
    }
    for want in [SWITCH_ROOT, GREETING] {
        if outcome.find(&[want]).is_none() {
            bail!("no console line with {want:?}");
        }
    }
    if !outcome.exited_by_itself() {
        bail!("the guest was still running after {TIMEOUT:?}; killed it");
    }
    Ok(())
}

/// The events as lines `+S.SS s  TYPE  SUBJECT  key=value ...`, times
/// relative to the first event (guest clock), sorted by time.
fn timeline(events: &[serde_json::Value]) -> String {
    if events.is_empty() {
        return "timeline: the event sink received no events\n".to_owned();
    }
    let mut rows: Vec<(f64, &serde_json::Value)> = events
        .iter()
        .map(|e| (e["time"].as_str().and_then(seconds_of_day).unwrap_or(f64::NAN), e))
        .collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let start = rows.first().map_or(0.0, |r| r.0);
    let mut text = format!("timeline: {} events received by the local sink (guest clock)\n", events.len());
    for (at, event) in rows {
        let kind = event["type"].as_str().unwrap_or("?");
        let subject = event["subject"].as_str().unwrap_or("");
        text.push_str(&format!("  {:>+7.2} s  {kind:<18} {subject:<10} {}\n", at - start, summary(&event["data"])));
    }
    text
}

/// A few telling fields of an event's data, where present.
fn summary(data: &serde_json::Value) -> String {
    const KEYS: &[&str] = &["kernel_release", "iguana_version", "image", "state", "exit_code", "duration_secs", "reason", "error", "action"];
    KEYS.iter()
        .filter_map(|key| {
            let value = &data[*key];
            match value {
                serde_json::Value::String(s) => Some(format!("{key}={}", s.chars().take(60).collect::<String>())),
                serde_json::Value::Number(n) => Some(format!("{key}={n}")),
                serde_json::Value::Bool(b) => Some(format!("{key}={b}")),
                _ => None,
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Seconds since midnight of an RFC 3339 time (`2026-11-27T14:30:01.5Z`),
/// enough to order events of one boot and take their differences.
fn seconds_of_day(time: &str) -> Option<f64> {
    let clock = time.split_once('T')?.1;
    let end = clock.find(['Z', 'z', '+', '-']).unwrap_or(clock.len());
    let mut parts = clock[..end].split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_of_rfc3339_times() {
        for (time, expected) in [
            ("2026-11-27T14:30:01.5Z", Some(52201.5)),
            ("2026-11-27T00:00:02+00:00", Some(2.0)),
            ("2026-11-27T01:00:00.25-05:00", Some(3600.25)),
            ("2026-11-27", None),
            ("2026-11-27Tnoon", None),
        ] {
            assert_eq!(seconds_of_day(time), expected, "{time}");
        }
    }

    #[test]
    fn timeline_orders_by_time_and_summarises() {
        let events: Vec<serde_json::Value> = vec![
            serde_json::json!({"type": "job.finished", "subject": "install", "time": "2026-11-27T10:00:05.5Z", "data": {"state": "success", "exit_code": 0}}),
            serde_json::json!({"type": "boot.started", "time": "2026-11-27T10:00:01Z", "data": {"kernel_release": "6.1.0"}}),
        ];
        let text = timeline(&events);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].contains("+0.00 s") && lines[1].contains("boot.started") && lines[1].contains("kernel_release=6.1.0"), "{text}");
        assert!(lines[2].contains("+4.50 s") && lines[2].contains("install") && lines[2].contains("state=success exit_code=0"), "{text}");
        assert!(timeline(&[]).contains("no events"));
    }
}
