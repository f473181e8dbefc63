//! `cargo xtask e2e --only faults`: the fault matrix. QEMU boots that each
//! inject faults and check what the README promises, ending with a table
//! `fault | expected | seen`, one row per fault; every row must match.
//!
//! Two boots, run side by side, each at 192 MiB of RAM:
//!
//! - `faults-containers`: one workflow whose jobs are the faults, each with
//!   `continue_on_error`: a fork bomb, a memory hog, a chatty container
//!   (300 MB of `\0`, no newline), an image bigger than the RAM, a job that
//!   only says it ran, and last an install that writes a mountlist and then
//!   fills its disk (it fails, so nothing may be handed over).
//! - `faults-network`: images pulled through a [`testkit::FaultProxy`] in
//!   front of the registry: the registry is killed 3 MiB into a layer and
//!   restarted; then the guest's link is cut (QEMU monitor `set_link`)
//!   3 MiB into the next image's layer.
//!
//! Each row is judged on its part of its boot's console: from its job's
//! first line to the first line of a later job (which proves PID 1 lived
//! through it), or to the end (then the boot must end by itself). Every
//! part must be free of a kernel panic and of an OOM kill of an iguana
//! process. Consoles are saved in `target/iguana-e2e/faults-*.log`.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use testkit::{FaultProxy, Image, Layer, Registry};

use crate::e2e::COMMON_APPEND;
use crate::initrd::{self, Built, Options};
use crate::qemu::{Line, Outcome, Vm, VmConfig, KERNEL_PANIC};
use crate::{e2e_workflow, target_dir, tools};

pub const NAME: &str = "faults";

const MEMORY_MIB: u32 = 192;
/// The oversize image's random layer: bigger than the VM's RAM.
const OVERSIZE_BYTES: usize = 300 << 20;
/// The random layer of the images the network faults hit, and where in it
/// the fault lands.
const PULL_LAYER_BYTES: usize = 8 << 20;
const FAULT_AT: u64 = 3 << 20;
/// How long the registry stays dead: longer than the first retries.
const REGISTRY_DOWN: Duration = Duration::from_secs(2);
/// The chatty job's console budget is 256 KiB; this leaves room for the
/// line prefixes and the notice.
const CHATTY_MAX: usize = 320 << 10;
/// The `linkcut` job's timeout, and the slack a TCG guest gets on it (the
/// kill, the report; its first line comes after the pull started).
const LINKCUT_TIMEOUT: Duration = Duration::from_secs(30);
const LINKCUT_SLACK: Duration = Duration::from_secs(10);
/// The install job's disk, small so it fills at once.
const DISK_BYTES: u64 = 16 << 20;

/// In every row's part of the console: PID 1 died, or the OOM killer took
/// an iguana process (PID 1 is exempt; its helpers are not).
const ALWAYS_REJECT: &[&[&str]] = &[&[KERNEL_PANIC], &["Killed process", "(iguana)"]];

#[derive(Clone, Copy, PartialEq, Eq)]
enum BootId {
    Containers,
    Network,
}

impl BootId {
    fn name(self) -> &'static str {
        match self {
            BootId::Containers => "faults-containers",
            BootId::Network => "faults-network",
        }
    }

    fn timeout(self) -> Duration {
        match self {
            BootId::Containers => Duration::from_secs(360),
            BootId::Network => Duration::from_secs(240),
        }
    }
}

/// A check of a row's evidence: Ok says what it saw, Err why it fails.
type Check = fn(&Evidence) -> Result<String, String>;

/// One fault and the outcome the README promises.
struct Row {
    fault: &'static str,
    expected: &'static str,
    boot: BootId,
    /// The row's part of the console starts at the first line with all of
    /// `from` (None: the first line) and ends before the first later line
    /// with all of `until`, a later job's (None: the end of the console, and
    /// the boot must end by itself).
    from: Option<&'static [&'static str]>,
    until: Option<&'static [&'static str]>,
    /// Lines the part must hold (all parts on one line, any case).
    expect: &'static [&'static [&'static str]],
    /// Lines it must not hold, besides `ALWAYS_REJECT`.
    reject: &'static [&'static [&'static str]],
    /// A check beyond lines.
    extra: Option<Check>,
    /// Console lines shown when the row fails: those with any of these.
    about: &'static [&'static str],
}

const ROWS: &[Row] = &[
    Row {
        fault: "registry killed mid-layer, restarted",
        expected: "pull resumes, digest verified, job runs",
        boot: BootId::Network,
        from: None,
        until: Some(&["/linkcut"]),
        expect: &[&["[resume] FAULTS resume ran"]],
        reject: &[],
        extra: Some(registry_came_back),
        about: &["resume", "retrying", "error"],
    },
    Row {
        fault: "link cut during a pull (set_link off)",
        expected: "job fails within its timeout, boot ends",
        boot: BootId::Network,
        from: Some(&["/linkcut"]),
        until: None,
        expect: &[&["job linkcut failed"], &["rebooting"]],
        reject: &[&["FAULTS linkcut ran"]],
        extra: Some(failed_in_time),
        about: &["linkcut", "retrying", "error", "rebooting"],
    },
    Row {
        fault: "disk full in the middle of an install",
        expected: "job fails, no handover, reboot",
        boot: BootId::Containers,
        from: Some(&["FAULTS install start"]),
        until: None,
        expect: &[&["job install failed"], &["[install]", "No space left on device"], &["rebooting"]],
        reject: &[&["switch_root"], &["kexec"], &["FAULTS install finished"]],
        extra: None,
        about: &["install", "mount", "switch_root", "rebooting"],
    },
    Row {
        fault: "fork bomb",
        expected: "container dies, a later job runs",
        boot: BootId::Containers,
        from: Some(&["FAULTS forkbomb start"]),
        until: Some(&["FAULTS memhog start"]),
        expect: &[&["job forkbomb failed"]],
        reject: &[],
        extra: None,
        about: &["forkbomb", "oom", "out of memory", "fork"],
    },
    Row {
        fault: "container allocates all memory",
        expected: "OOM-killed (signal 9), a later job runs",
        boot: BootId::Containers,
        from: Some(&["FAULTS memhog start"]),
        until: Some(&["FAULTS chatty start"]),
        expect: &[&["job memhog failed: killed by signal 9"]],
        reject: &[],
        extra: None,
        about: &["memhog", "oom", "out of memory", "killed"],
    },
    Row {
        fault: "chatty: 300 MB of \\0, no newline",
        expected: "<= 320 KiB shown, limit noted, later job runs",
        boot: BootId::Containers,
        from: Some(&["FAULTS chatty start"]),
        until: Some(&["/oversize"]),
        expect: &[&["console output limit reached"]],
        reject: &[],
        extra: Some(chatty_bounded),
        about: &["chatty", "limit", "oom", "out of memory"],
    },
    Row {
        fault: "image bigger than the RAM (300 MiB)",
        expected: "job fails: needs ~N MiB, M MiB free; reboots",
        boot: BootId::Containers,
        from: Some(&["/oversize"]),
        until: None,
        expect: &[&["needs ~", "MiB free"], &["job oversize failed"], &["[alive] FAULTS alive"], &["rebooting"]],
        reject: &[],
        extra: None,
        about: &["oversize", "alive", "space", "oom", "out of memory", "rebooting"],
    },
];

/// The containers boot's workflow: the jobs run in this order.
fn containers_workflow(reg: &str) -> String {
    format!(
        r#"name: fault matrix, containers
jobs:
  forkbomb:
    container:
      image: {reg}/faults
      env:
        # stderr to /dev/null: "can't fork" floods are the chatty row's business.
        SCRIPT: |
          echo "FAULTS forkbomb start"
          bomb() {{ bomb | bomb & }}
          bomb 2>/dev/null
          exec busybox sleep 600
    timeout: 20s
    continue_on_error: true
  memhog:
    container:
      image: {reg}/faults
      env:
        # tail keeps the last line, and /dev/zero has no newline: it grows
        # its buffer 8 KiB at a time until the OOM killer ends it.
        SCRIPT: |
          echo "FAULTS memhog start"
          exec busybox tail /dev/zero
    timeout: 90s
    continue_on_error: true
  chatty:
    container:
      image: {reg}/faults
      env:
        SCRIPT: |
          echo "FAULTS chatty start"
          busybox head -c 300000000 /dev/zero
          echo
          echo "FAULTS chatty done"
    timeout: 150s
    continue_on_error: true
  oversize:
    container:
      image: {reg}/oversize
    timeout: 150s
    continue_on_error: true
  alive:
    container:
      image: {reg}/faults
      env:
        SCRIPT: echo "FAULTS alive"
  install:
    container:
      image: {reg}/faults
      env:
        # A root with an init, so a wrong handover would show switch_root.
        SCRIPT: |
          set -e
          echo "FAULTS install start"
          busybox mke2fs -q -F /dev/vda
          mkdir -p /mnt
          busybox mount -t ext4 /dev/vda /mnt
          mkdir -p /mnt/sbin
          busybox cp /bin/busybox /mnt/sbin/init
          echo "/dev/vda /" > /iguana/mountlist
          echo "FAULTS install writing the image"
          busybox dd if=/dev/zero of=/mnt/image bs=1M
          echo "FAULTS install finished"
    timeout: 120s
"#
    )
}

/// The network boot's workflow: a pull the registry's death interrupts,
/// then one the link cut interrupts.
fn network_workflow(reg: &str) -> String {
    format!(
        r#"name: fault matrix, network
jobs:
  resume:
    container:
      image: {reg}/resume
    timeout: 120s
    continue_on_error: true
  linkcut:
    container:
      image: {reg}/linkcut
    timeout: {}s
    continue_on_error: true
"#,
        LINKCUT_TIMEOUT.as_secs()
    )
}

/// A boot's console and what the host saw and did meanwhile.
struct BootRun {
    id: BootId,
    outcome: Outcome,
    log: PathBuf,
    /// The fault proxy's log (network boot).
    proxy: Vec<String>,
    /// When the link was cut, since QEMU started.
    cut_at: Option<Duration>,
}

/// What a row's check looks at.
struct Evidence<'a> {
    part: &'a [Line],
    boot: &'a BootRun,
}

/// Runs both boots and judges every row; returns the rows that match and
/// the names of those that do not, as `e2e::run` does for scenarios.
pub fn run_all(opts: &Options) -> Result<(usize, Vec<String>)> {
    tools::ensure_tools()?;
    let built = initrd::build(opts)?;
    let out = target_dir().join("iguana-e2e");
    fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let started = Instant::now();
    let (containers, network) = std::thread::scope(|scope| {
        let containers = scope.spawn(|| containers_boot(&built, &out));
        let network = scope.spawn(|| network_boot(&built, &out));
        (join(containers), join(network))
    });
    let boots = [containers, network];
    let verdicts: Vec<(&Row, Result<String, String>)> = ROWS
        .iter()
        .map(|row| {
            let verdict = match boots.iter().find(|b| b.as_ref().is_ok_and(|b| b.id == row.boot)) {
                Some(Ok(boot)) => judge(row, boot),
                _ => Err(format!("{} did not run", row.boot.name())),
            };
            (row, verdict)
        })
        .collect();
    for boot in boots.iter().filter_map(|b| b.as_ref().err()) {
        println!("faults: {boot:#}");
    }
    print_table(&verdicts);
    for (row, verdict) in &verdicts {
        if verdict.is_err() {
            print_evidence(row, boots.iter().flatten().find(|b| b.id == row.boot));
        }
    }
    let failed: Vec<String> = verdicts
        .iter()
        .filter(|(_, v)| v.is_err())
        .map(|(row, _)| format!("{NAME}: {}", row.fault))
        .collect();
    println!(
        "faults: {} of {} rows match, {:.1?}",
        ROWS.len() - failed.len(),
        ROWS.len(),
        started.elapsed()
    );
    Ok((ROWS.len() - failed.len(), failed))
}

fn join(handle: std::thread::ScopedJoinHandle<'_, Result<BootRun>>) -> Result<BootRun> {
    handle.join().unwrap_or_else(|_| Err(anyhow::anyhow!("boot thread panicked")))
}

/// The containers boot: its registry, images, workflow server and disk.
fn containers_boot(built: &Built, out: &Path) -> Result<BootRun> {
    let id = BootId::Containers;
    let registry = Registry::start().context("start docker-registry")?;
    let reg = format!("10.0.2.2:{}", registry.port());
    Image::busybox_script("eval \"$SCRIPT\"\n")?
        .build_and_push(&registry, "faults:latest")
        .context("build and push the faults image")?;
    let oversize = oversize_layer(out)?;
    testkit::push_plain_image(&registry, "oversize:latest", vec![busybox_layer("echo FAULTS oversize ran")?, oversize], &ENTRYPOINT)?;
    let workflow = e2e_workflow::serve(containers_workflow(&reg))?;
    let disk = out.join("faults-disk.img");
    let _ = fs::remove_file(&disk);
    fs::File::create(&disk)
        .and_then(|f| f.set_len(DISK_BYTES))
        .with_context(|| format!("create {}", disk.display()))?;
    let mut config = vm_config(built, &reg, workflow);
    config.extra_args = vec!["-drive".into(), format!("file={},if=virtio,format=raw", disk.display())];
    let outcome = Vm::start(&config).map(|vm| vm.wait(id.timeout()));
    let _ = fs::remove_file(&disk);
    save(id, outcome?, out, Vec::new(), None)
}

/// The network boot: the registry behind the fault proxy, which kills it
/// mid-layer of `resume` and cuts the link mid-layer of `linkcut`.
fn network_boot(built: &Built, out: &Path) -> Result<BootRun> {
    let id = BootId::Network;
    let registry = Registry::start().context("start docker-registry")?;
    let mut digests = Vec::new();
    for name in ["resume", "linkcut"] {
        let layers = vec![busybox_layer(&format!("echo FAULTS {name} ran"))?, random_layer(PULL_LAYER_BYTES)?];
        let pushed = testkit::push_plain_image(&registry, &format!("{name}:latest"), layers, &ENTRYPOINT)?;
        digests.push(pushed.last().cloned().context("no layer pushed")?);
    }
    let proxy = FaultProxy::start(registry.port())?;
    let registry = Arc::new(Mutex::new(registry));
    let reg = format!("10.0.2.2:{}", proxy.port());
    let monitor = out.join("faults-monitor.sock");
    let _ = fs::remove_file(&monitor);

    let dying = Arc::clone(&registry);
    proxy.on_bytes(&format!("GET /v2/resume/blobs/{}", digests[0]), FAULT_AT, move || {
        kill_and_restart(&dying)
    });
    let cut_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (socket, cut) = (monitor.clone(), Arc::clone(&cut_at));
    proxy.on_bytes(&format!("GET /v2/linkcut/blobs/{}", digests[1]), FAULT_AT, move || {
        if let Ok(mut cut) = cut.lock() {
            *cut = Some(Instant::now());
        }
        monitor_command(&socket, "set_link n0 off")
    });

    let workflow = e2e_workflow::serve(network_workflow(&reg))?;
    let mut config = vm_config(built, &reg, workflow);
    config.extra_args = vec!["-monitor".into(), format!("unix:{},server=on,wait=off", monitor.display())];
    let started = Instant::now();
    let outcome = Vm::start(&config)?.wait(id.timeout());
    let cut_at = cut_at.lock().ok().and_then(|c| *c).map(|at| at.saturating_duration_since(started));
    let _ = fs::remove_file(&monitor);
    proxy.disarm();
    save(id, outcome, out, proxy.log(), cut_at)
}

fn vm_config(built: &Built, reg: &str, workflow_port: u16) -> VmConfig {
    let append = format!(
        "rd.iguana.control_url=http://10.0.2.2:{workflow_port}/workflow.yaml rd.iguana.insecure_registries={reg} {COMMON_APPEND}"
    );
    let mut config = VmConfig::new(built.kernel.vmlinuz.clone(), built.initrd.clone(), append);
    config.memory_mib = MEMORY_MIB;
    config
}

/// Writes the console (and the proxy's log) to `faults-<boot>.log`.
fn save(id: BootId, outcome: Outcome, out: &Path, proxy: Vec<String>, cut_at: Option<Duration>) -> Result<BootRun> {
    let log = out.join(format!("{}.log", id.name()));
    let mut text = outcome.transcript();
    if !proxy.is_empty() {
        text.push_str("--- fault proxy ---\n");
        text.push_str(&proxy.join("\n"));
        text.push('\n');
    }
    fs::write(&log, text).with_context(|| format!("write {}", log.display()))?;
    Ok(BootRun { id, outcome, log, proxy, cut_at })
}

const ENTRYPOINT: [&str; 2] = ["/bin/sh", "/run.sh"];

/// The busybox layer of the test images, running `script`, as a plain tar.
fn busybox_layer(script: &str) -> Result<Vec<u8>> {
    let image = Image::busybox_script(script)?;
    image.layers.first().context("busybox image without a layer")?.tar()
}

/// A layer holding one file of `bytes` random bytes, which no compression
/// shrinks.
fn random_layer(bytes: usize) -> Result<Vec<u8>> {
    let mut data = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut data))
        .context("read /dev/urandom")?;
    Layer::new().file("random.bin", data, 0o644).tar()
}

/// The oversize image's random layer, made once and kept in `out`.
fn oversize_layer(out: &Path) -> Result<Vec<u8>> {
    let path = out.join("faults-oversize-layer.tar");
    if let Ok(tar) = fs::read(&path) {
        if tar.len() > OVERSIZE_BYTES {
            return Ok(tar);
        }
    }
    let tar = random_layer(OVERSIZE_BYTES)?;
    let partial = path.with_extension("partial");
    fs::write(&partial, &tar)
        .and_then(|()| fs::rename(&partial, &path))
        .with_context(|| format!("write {}", path.display()))?;
    Ok(tar)
}

/// Kills the registry, waits, starts it again on the same port and storage.
fn kill_and_restart(registry: &Mutex<Registry>) -> String {
    let Ok(mut registry) = registry.lock() else {
        return "registry lock poisoned".into();
    };
    if let Err(err) = registry.stop() {
        return format!("kill docker-registry: {err:#}");
    }
    std::thread::sleep(REGISTRY_DOWN);
    match registry.restart() {
        Ok(()) => format!("docker-registry killed, restarted {REGISTRY_DOWN:?} later"),
        Err(err) => format!("docker-registry killed; restart failed: {err:#}"),
    }
}

/// Sends one HMP command to QEMU's monitor; returns the command and its answer.
fn monitor_command(socket: &Path, command: &str) -> String {
    let talk = || -> std::io::Result<String> {
        let mut stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(Duration::from_millis(300)))?;
        // The banner and first prompt, so the answer below is only its own.
        read_for(&mut stream, Duration::from_millis(500));
        stream.write_all(format!("{command}\n").as_bytes())?;
        let text = read_for(&mut stream, Duration::from_secs(1));
        // The monitor echoes the line as typed, then answers after CRLF.
        let answer = text.split_once("\r\n").map_or("", |(_, answer)| answer);
        Ok(answer.replace("(qemu)", "").trim().to_owned())
    };
    match talk() {
        Ok(answer) if answer.is_empty() => format!("monitor: {command}: ok"),
        Ok(answer) => format!("monitor: {command}: {answer}"),
        Err(err) => format!("monitor: {command}: error: {err}"),
    }
}

fn read_for(stream: &mut UnixStream, limit: Duration) -> String {
    let until = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(buf.get(..n).unwrap_or_default()),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------
// Verdicts

/// Whether the row's part of its boot's console shows what it promises;
/// Ok says what was seen, Err every way it falls short.
fn judge(row: &Row, boot: &BootRun) -> Result<String, String> {
    let lines = &boot.outcome.lines;
    let mut problems = Vec::new();
    // Without a later job the part runs to the end: still judged, for why.
    let part = match part(lines, row.from, row.until) {
        Ok(part) => part,
        Err(why) => {
            problems.push(why);
            part(lines, row.from, None).map_err(|_| problems.join("; "))?
        }
    };
    let mut seen = Vec::new();
    for parts in row.expect {
        match find(part, parts) {
            Some(line) => seen.push(clip(from_part(&line.text, parts), 60)),
            None => problems.push(format!("lacks {}", show(parts))),
        }
    }
    for parts in row.reject.iter().chain(ALWAYS_REJECT) {
        if let Some(line) = find(part, parts) {
            problems.push(format!("shows {:?}", clip(&line.text, 100)));
        }
    }
    if row.until.is_none() && !boot.outcome.exited_by_itself() {
        problems.push(format!("QEMU killed at the {:?} timeout", boot.id.timeout()));
    }
    match row.extra.map(|extra| extra(&Evidence { part, boot })) {
        Some(Ok(note)) => seen.push(note),
        Some(Err(why)) => problems.push(why),
        None => {}
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    // The first expected line and the extra check say the most; the rest
    // is in the log.
    let extra = if row.extra.is_some() { seen.pop() } else { None };
    seen.truncate(1);
    seen.extend(extra);
    Ok(seen.join("; "))
}

/// The lines from the first with all of `from` to before the first later
/// one with all of `until`.
fn part<'a>(lines: &'a [Line], from: Option<&[&str]>, until: Option<&[&str]>) -> Result<&'a [Line], String> {
    let start = match from {
        Some(parts) => lines
            .iter()
            .position(|l| has(&l.text, parts))
            .ok_or_else(|| format!("never started: lacks {}", show(parts)))?,
        None => 0,
    };
    let rest = lines.get(start..).unwrap_or_default();
    let end = match until {
        Some(parts) => rest
            .iter()
            .skip(1)
            .position(|l| has(&l.text, parts))
            .map(|i| i + 1)
            .ok_or_else(|| format!("no later job ran: lacks {}", show(parts)))?,
        None => rest.len(),
    };
    Ok(rest.get(..end).unwrap_or_default())
}

fn has(text: &str, parts: &[&str]) -> bool {
    let text = text.to_lowercase();
    parts.iter().all(|p| text.contains(&p.to_lowercase()))
}

fn find<'a>(lines: &'a [Line], parts: &[&str]) -> Option<&'a Line> {
    lines.iter().find(|l| has(&l.text, parts))
}

fn show(parts: &[&str]) -> String {
    format!("{:?}", parts.join(" … "))
}

/// `text` from where the first of `parts` starts.
fn from_part<'a>(text: &'a str, parts: &[&str]) -> &'a str {
    let first = parts.first().map(|p| p.to_lowercase()).unwrap_or_default();
    text.to_lowercase()
        .find(&first)
        .and_then(|i| text.get(i..))
        .unwrap_or(text)
}

fn clip(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", text.get(..i).unwrap_or(text)),
        None => text.to_owned(),
    }
}

/// A console line as a reader wants it: a pull's live status lines
/// (`\r\x1b[K...`) down to the last, and a long line cut, with its length.
fn readable(text: &str) -> String {
    let last = text.rsplit('\r').find(|s| !s.trim().is_empty()).unwrap_or(text);
    let last = last.replace("\x1b[K", "");
    // Long enough for an error chain, short enough for a line of \0.
    match last.len() {
        n if n > 320 => format!("{} ({n} bytes)", clip(&last, 320)),
        _ => last,
    }
}

/// The chatty job's lines on the console add up to at most `CHATTY_MAX`.
fn chatty_bounded(ev: &Evidence) -> Result<String, String> {
    let bytes: usize = ev
        .part
        .iter()
        .filter(|l| l.text.trim_start().starts_with("[chatty]"))
        .map(|l| l.text.len() + 1)
        .sum();
    let kib = bytes.div_ceil(1024);
    if bytes > CHATTY_MAX {
        return Err(format!("{kib} KiB of [chatty] lines, more than {} KiB", CHATTY_MAX >> 10));
    }
    Ok(format!("{kib} KiB of [chatty] lines"))
}

/// The registry really died mid-layer, and the layer was asked for again
/// and served after it came back.
fn registry_came_back(ev: &Evidence) -> Result<String, String> {
    let proxy = &ev.boot.proxy;
    let fault = proxy
        .iter()
        .position(|l| l.contains("fault after") && l.contains("killed"))
        .ok_or("the proxy never killed the registry mid-layer")?;
    if let Some(bad) = proxy.get(fault).filter(|l| l.contains("restart failed")) {
        return Err(bad.clone());
    }
    // The request the fault cut: the last one on its connection before it.
    let cut_conn = proxy.get(fault).and_then(|l| connection(l));
    let blob = proxy
        .get(..fault)
        .unwrap_or_default()
        .iter()
        .rev()
        .find(|l| connection(l) == cut_conn && l.contains(" GET "))
        .and_then(|l| l.split(" GET ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or("no request before the fault")?;
    let after = proxy.get(fault + 1..).unwrap_or_default();
    let gets: Vec<&String> = after.iter().filter(|l| l.contains(&format!(" GET {blob}"))).collect();
    // A status line of a connection that asked for the layer after the fault.
    let served = after
        .iter()
        .filter(|l| l.contains("-> HTTP/1.1 20"))
        .filter(|status| gets.iter().any(|get| connection(get) == connection(status)))
        .filter_map(|status| status.split("-> ").nth(1))
        .next_back()
        .ok_or("the layer was not served again after the restart")?;
    let ranged = gets.iter().any(|l| l.contains("Range:"));
    let again = gets.len();
    Ok(format!(
        "killed at {} MiB; {again} GET(s) later{}, last {served}",
        FAULT_AT >> 20,
        if ranged { " with Range" } else { " without Range" }
    ))
}

/// The `#N` connection tag of a proxy log line.
fn connection(line: &str) -> Option<&str> {
    line.split_whitespace().nth(1).filter(|tag| tag.starts_with('#'))
}

/// The link really went down mid-layer of the job's pull, and the job
/// failed within its timeout of its start (its first line: the pull's
/// manifest), plus slack for killing it on a slow TCG guest. A pull that
/// the job timeout does not cover fails later, when the client gives up.
fn failed_in_time(ev: &Evidence) -> Result<String, String> {
    let said = ev
        .boot
        .proxy
        .iter()
        .find(|l| l.contains("fault after") && l.contains("set_link"))
        .ok_or("the link was never cut mid-layer")?;
    if !said.contains("set_link n0 off: ok") {
        return Err(format!("QEMU monitor: {said}"));
    }
    let start = ev.part.first().map(|l| l.at).ok_or("the job has no lines")?;
    let cut = ev.boot.cut_at.ok_or("no time recorded for the cut")?;
    let failed = find(ev.part, &["job linkcut failed"]).ok_or("lacks \"job linkcut failed\"")?;
    let (took, cut) = (failed.at.saturating_sub(start), cut.saturating_sub(start));
    let limit = LINKCUT_TIMEOUT + LINKCUT_SLACK;
    let seen = format!(
        "link cut at {:.1}s, job failed at {:.1}s (timeout {}s)",
        cut.as_secs_f64(),
        took.as_secs_f64(),
        LINKCUT_TIMEOUT.as_secs()
    );
    if took > limit {
        return Err(format!("{seen}: later than {}s", limit.as_secs()));
    }
    Ok(seen)
}

// ---------------------------------------------------------------------------
// Report

fn print_table(verdicts: &[(&Row, Result<String, String>)]) {
    let seen: Vec<String> = verdicts
        .iter()
        .map(|(_, v)| match v {
            Ok(seen) => format!("ok: {seen}"),
            Err(why) => format!("FAIL: {}", clip(why, 90)),
        })
        .collect();
    let width = |f: &dyn Fn(&Row) -> usize, title: &str| {
        verdicts.iter().map(|(r, _)| f(r)).max().unwrap_or(0).max(title.len())
    };
    let (wf, we) = (width(&|r| r.fault.len(), "fault"), width(&|r| r.expected.len(), "expected"));
    println!();
    println!("{:wf$} | {:we$} | seen", "fault", "expected");
    println!("{}-+-{}-+-{}", "-".repeat(wf), "-".repeat(we), "-".repeat(40));
    for ((row, _), seen) in verdicts.iter().zip(seen) {
        println!("{:wf$} | {:we$} | {seen}", row.fault, row.expected);
    }
    println!();
}

/// The console lines a lead needs to judge a failed row.
fn print_evidence(row: &Row, boot: Option<&BootRun>) {
    println!("evidence for {:?}:", row.fault);
    let Some(boot) = boot else {
        println!("  (boot {} did not run)", row.boot.name());
        return;
    };
    println!("  console: {}", boot.log.display());
    let lines = &boot.outcome.lines;
    let part = part(lines, row.from, None).unwrap_or(lines);
    let mut shown: Vec<&Line> = part
        .iter()
        .filter(|l| row.about.iter().chain(&[KERNEL_PANIC, "Killed process"]).any(|a| has(&l.text, &[*a])))
        .collect();
    if shown.is_empty() {
        shown = lines.iter().rev().take(15).rev().collect();
    }
    let skipped = shown.len().saturating_sub(25);
    if skipped > 0 {
        println!("  ({skipped} matching lines before these)");
    }
    for line in shown.iter().skip(skipped) {
        println!("  {:7.1}s {}", line.at.as_secs_f64(), readable(&line.text));
    }
    if row.boot == BootId::Network {
        for line in &boot.proxy {
            println!("  proxy {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(texts: &[&str]) -> Vec<Line> {
        texts.iter().map(|t| Line { at: Duration::ZERO, text: (*t).to_owned() }).collect()
    }

    fn texts(part: &[Line]) -> Vec<&str> {
        part.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn parts_of_the_console() {
        let console = lines(&["boot", "[a] FAULTS a start", "job a failed", "[b] FAULTS b start", "end"]);
        let check = |from: Option<&[&str]>, until: Option<&[&str]>, expected: Result<&[&str], &str>| {
            let got = part(&console, from, until);
            match (got, expected) {
                (Ok(got), Ok(want)) => assert_eq!(texts(got), want),
                (Err(got), Err(want)) => assert!(got.contains(want), "{got}"),
                (got, want) => panic!("{:?} vs {want:?}", got.map(texts)),
            }
        };
        check(Some(&["FAULTS a start"]), Some(&["FAULTS b start"]), Ok(&["[a] FAULTS a start", "job a failed"]));
        check(Some(&["faults b START"]), None, Ok(&["[b] FAULTS b start", "end"]));
        check(None, Some(&["job a"]), Ok(&["boot", "[a] FAULTS a start"]));
        check(Some(&["FAULTS c start"]), None, Err("never started"));
        check(Some(&["FAULTS b start"]), Some(&["FAULTS a start"]), Err("no later job ran"));
    }

    fn boot(console: &[&str], exited: bool, proxy: &[&str], cut_at: Option<Duration>) -> BootRun {
        use std::os::unix::process::ExitStatusExt;
        BootRun {
            id: BootId::Containers,
            outcome: Outcome {
                lines: lines(console),
                exited: exited.then(|| std::process::ExitStatus::from_raw(0)),
                elapsed: Duration::ZERO,
            },
            log: PathBuf::new(),
            proxy: proxy.iter().map(|l| (*l).to_owned()).collect(),
            cut_at,
        }
    }

    fn row(name: &str) -> &'static Row {
        ROWS.iter().find(|r| r.fault.starts_with(name)).unwrap()
    }

    /// (row, console, QEMU exited by itself, expected: Ok(seen) or Err(part of why)).
    #[test]
    fn verdicts() {
        let memhog = ["[memhog] FAULTS memhog start", "iguana: job memhog failed: killed by signal 9", "[chatty] FAULTS chatty start"];
        let flood = format!("[chatty] {}", "x".repeat(400 << 10));
        let chatty_flood = ["[chatty] FAULTS chatty start", flood.as_str(), "console output limit reached", "pull 10.0.2.2:5/oversize: manifest"];
        let install = ["[install] FAULTS install start", "[install] dd: error writing '/mnt/image': No space left on device", "job install failed: exit status 1", "rebooting in 0s: job install failed"];
        type Case<'a> = (&'a str, &'a [&'a str], bool, Result<&'a str, &'a str>);
        let cases: &[Case] = &[
            ("container allocates", &memhog, true, Ok("job memhog failed: killed by signal 9")),
            ("container allocates", &memhog[..2], true, Err("no later job ran")),
            ("container allocates", &["[memhog] FAULTS memhog start", "Out of memory: Killed process 1 (iguana)", "job memhog failed: killed by signal 9", "[chatty] FAULTS chatty start"], true, Err("shows")),
            ("chatty", &chatty_flood, true, Err("more than 320 KiB")),
            ("chatty", &[chatty_flood[0], chatty_flood[1]], true, Err("no later job ran: lacks \"/oversize\"; lacks \"console output limit reached\"; 401 KiB of [chatty] lines")),
            ("chatty", &[chatty_flood[0], "[chatty] short", chatty_flood[2], chatty_flood[3]], true, Ok("console output limit reached; 1 KiB of [chatty] lines")),
            ("disk full", &install, true, Ok("job install failed: exit status 1")),
            ("disk full", &install, false, Err("QEMU killed")),
            ("disk full", &[install[0], install[1], install[2], "switch_root /sysroot /sbin/init", install[3]], true, Err("shows")),
            ("disk full", &[install[0], install[1], install[2], "Kernel panic - not syncing: Attempted to kill init!"], true, Err("lacks \"rebooting\"")),
        ];
        for (name, console, exited, expected) in cases {
            let got = judge(row(name), &boot(console, *exited, &[], None));
            match (&got, expected) {
                (Ok(seen), Ok(want)) => assert!(seen.contains(want), "{name}: {seen}"),
                (Err(why), Err(want)) => assert!(why.contains(want), "{name}: {why}"),
                _ => panic!("{name}: {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn readable_lines() {
        assert_eq!(readable("\r\x1b[Kpull x: 1 MiB\r\x1b[Kpull x: 2 MiB\r"), "pull x: 2 MiB");
        assert_eq!(readable("plain"), "plain");
        let long = format!("[chatty] {}", "\0".repeat(400));
        assert!(readable(&long).ends_with("… (409 bytes)"), "{}", readable(&long));
    }

    #[test]
    fn network_evidence() {
        let resumed = [
            "  0.1s #1 GET /v2/resume/blobs/sha256:bb",
            "  0.1s #1 -> HTTP/1.1 200 OK",
            "  2.0s #1 fault after 100 bytes of this response: docker-registry killed, restarted 2s later",
            "  2.6s #2 upstream 127.0.0.1:5000: Connection refused; connection closed",
            "  4.1s #3 GET /v2/resume/blobs/sha256:bb (Range: bytes=3145000-)",
            "  4.1s #4 GET /v2/resume/blobs/sha256:aa",
            "  4.1s #4 -> HTTP/1.1 200 OK",
            "  4.2s #3 -> HTTP/1.1 206 Partial Content",
        ];
        let b = boot(&[], true, &resumed, None);
        let seen = registry_came_back(&Evidence { part: &[], boot: &b }).unwrap();
        assert_eq!(seen, "killed at 3 MiB; 1 GET(s) later with Range, last HTTP/1.1 206 Partial Content");
        let b = boot(&[], true, &resumed[..4], None);
        assert!(registry_came_back(&Evidence { part: &[], boot: &b }).is_err());

        let cut = ["  9.0s #7 fault after 10 bytes of this response: monitor: set_link n0 off: ok"];
        let mut console = lines(&["pull 10.0.2.2:5/linkcut: manifest", "job linkcut failed; continuing"]);
        console[0].at = Duration::from_secs(30);
        console[1].at = Duration::from_secs(65);
        let b = boot(&[], true, &cut, Some(Duration::from_secs(32)));
        let seen = failed_in_time(&Evidence { part: &console, boot: &b });
        assert_eq!(seen.unwrap(), "link cut at 2.0s, job failed at 35.0s (timeout 30s)");
        console[1].at = Duration::from_secs(90);
        let late = failed_in_time(&Evidence { part: &console, boot: &b }).unwrap_err();
        assert_eq!(late, "link cut at 2.0s, job failed at 60.0s (timeout 30s): later than 40s");
        let monitor_error = ["  9.0s #7 fault after 10 bytes of this response: monitor: set_link n0 off: Error: no such device"];
        let b = boot(&[], true, &monitor_error, Some(Duration::from_secs(32)));
        assert!(failed_in_time(&Evidence { part: &console, boot: &b }).unwrap_err().starts_with("QEMU monitor"));
    }
}
