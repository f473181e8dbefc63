//! `cargo xtask e2e --only pxe`: a real network boot, two machines at once.
//!
//! No `-kernel`: QEMU's iPXE ROM (Debian's ipxe-qemu) gets DHCP from the
//! user network, which names `site.ipxe` in a TFTP directory as the boot
//! file. That site script sets `base-url`, `registry`, `image` and
//! `extra-args` as README's "PXE and reservation systems" tells a site to,
//! and chains `ipxe.script` of `cargo xtask dist`, unchanged, from a static
//! file server on loopback, which also serves vmlinuz and the initrd. The
//! served files are checked against `SHA256SUMS` (downloaded and run through
//! `sha256sum -c`, as a site would) before anything boots.
//!
//! Both guests boot at once against the same pull-through cache (a
//! docker-registry in proxy mode in front of the origin registry,
//! `rd.iguana.registry_mirror=`); each runs the container, which checks that
//! its command line is ipxe.script's, its machine id, network.json and the
//! network, and both power off by themselves. The mirror must then hold the
//! image's blobs, and no guest may have fallen back to the origin. Both
//! report to one event sink (rd.iguana.report_url, testkit's
//! `EventReceiver`): each machine's events, told apart by their `source`,
//! must run from `boot.started` to `handover` in order.
//! Consoles: `target/iguana-e2e/pxe-<n>.log`.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use testkit::{EventReceiver, FileServer, Image, Registry, RegistryOptions};

use crate::dist::SUMMED;
use crate::qemu::{Pxe, Vm, VmConfig};
use crate::{cmd_output, target_dir, tools};

pub const NAME: &str = "pxe";
const GUESTS: usize = 2;
/// iPXE, the downloads, then the boot; two TCG guests at once.
const TIMEOUT: Duration = Duration::from_secs(300);
const MARK: &str = "IGUANA-PXE";

/// The site's script, fetched by TFTP: `{HTTP}`, `{ORIGIN}`, `{MIRROR}` are
/// the host ports of the file server, the registry and its mirror.
const SITE_SCRIPT: &str = "#!ipxe
# The site's part: where the files, the registry and the image are.
set base-url http://10.0.2.2:{HTTP}
set registry 10.0.2.2:{ORIGIN}
set image ${registry}/pxe
set extra-args rd.iguana.insecure_registries=${registry},10.0.2.2:{MIRROR} rd.iguana.registry_mirror=${registry}=10.0.2.2:{MIRROR} rd.iguana.report_url=http://10.0.2.2:{EVENTS} rd.iguana.reboot_timeout=0
chain ${base-url}/ipxe.script
";

/// The container: one marker line per fact.
const SCRIPT: &str = r#"if grep -q 'initrd=iguana-initrd' /proc/cmdline; then echo "IGUANA-PXE cmdline from ipxe.script"; else echo "IGUANA-PXE cmdline bad: $(cat /proc/cmdline)"; fi
echo "IGUANA-PXE machine-id $(cat /iguana/machine-id)"
if grep -q '"10.0.2.15/24"' /iguana/network.json; then echo "IGUANA-PXE network.json ok"; else echo "IGUANA-PXE network.json bad"; fi
if wget -q -O /dev/null "http://$REGISTRY/v2/"; then echo "IGUANA-PXE network ok"; else echo "IGUANA-PXE network bad"; fi
"#;

/// The events each machine must send, in this order (others may come between).
const EVENTS: &[&str] = &["boot.started", "network.up", "job.started", "job.finished", "workflow.finished", "handover"];

/// Lines every guest's console must show.
const EXPECT: &[&str] = &[
    "IGUANA-PXE cmdline from ipxe.script",
    "IGUANA-PXE machine-id ",
    "IGUANA-PXE network.json ok",
    "IGUANA-PXE network ok",
];

/// Runs the scenario; (passed, failed names) as the other e2e groups.
pub fn run_all() -> Result<(usize, Vec<String>)> {
    Ok(crate::e2e::one_test(NAME, run))
}

fn run() -> Result<()> {
    tools::ensure_tools()?;
    let dist = crate::dist::build(false)?;
    let out = target_dir().join("iguana-e2e");
    fs::create_dir_all(&out)?;

    let origin = Registry::start().context("start the origin docker-registry")?;
    let mirror = Registry::start_with(RegistryOptions {
        proxy_remote: Some(format!("http://{}", origin.host())),
        ..RegistryOptions::default()
    })
    .context("start the docker-registry in proxy mode")?;
    let script = format!("REGISTRY=10.0.2.2:{}\n{SCRIPT}", origin.port());
    Image::busybox_script(&script)?.build_and_push(&origin, "pxe:latest")?;

    let files = FileServer::start()?;
    for name in SUMMED.iter().chain(&["SHA256SUMS"]) {
        let body = fs::read(dist.join(name)).with_context(|| format!("read {}", dist.join(name).display()))?;
        files.add(&format!("/{name}"), body);
    }
    check_served(files.port(), &out.join("pxe-served"))?;

    let sink = EventReceiver::start(0)?;
    let tftp = out.join("pxe-tftp");
    fs::create_dir_all(&tftp)?;
    let site = SITE_SCRIPT
        .replace("{HTTP}", &files.port().to_string())
        .replace("{ORIGIN}", &origin.port().to_string())
        .replace("{MIRROR}", &mirror.port().to_string())
        .replace("{EVENTS}", &sink.port().to_string());
    fs::write(tftp.join("site.ipxe"), site)?;

    let mut config = VmConfig::new(dist.join("vmlinuz"), dist.join("iguana-initrd"), "");
    config.pxe = Some(Pxe { tftp, bootfile: "site.ipxe".into() });
    let vms = (0..GUESTS).map(|_| Vm::start(&config)).collect::<Result<Vec<_>>>()?;
    let mut errors = Vec::new();
    let mut machine_ids = Vec::new();
    for (n, vm) in vms.into_iter().enumerate() {
        let outcome = vm.wait(TIMEOUT);
        let log = out.join(format!("pxe-{}.log", n + 1));
        fs::write(&log, outcome.transcript())?;
        let mirror_fallback = format!("mirror 10.0.2.2:{}:", mirror.port());
        let problems: Vec<String> = EXPECT
            .iter()
            .filter(|want| outcome.find(&[want]).is_none())
            .map(|want| format!("no line {want:?}"))
            .chain(outcome.find(&[&mirror_fallback]).map(|l| format!("fell back to the origin: {}", l.text)))
            .chain(outcome.find(&[MARK, "bad"]).map(|l| l.text.clone()))
            .chain(outcome.kernel_panicked().then(|| "kernel panic".to_owned()))
            .chain((!outcome.exited_by_itself()).then(|| format!("still running after {TIMEOUT:?}")))
            .collect();
        if problems.is_empty() {
            eprintln!("xtask:   pxe guest {} done in {:.1?}", n + 1, outcome.elapsed);
        } else {
            errors.push(format!("guest {}: {} (console {})", n + 1, problems.join("; "), log.display()));
        }
        machine_ids.extend(outcome.find(&["IGUANA-PXE machine-id "]).map(|l| l.text.clone()));
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n  "));
    }
    if machine_ids.len() == GUESTS && machine_ids[0] == machine_ids[1] {
        bail!("both guests have the same machine id: {}", machine_ids[0]);
    }
    check_events(&sink.events())?;
    let cached = blobs_in(&mirror.storage_dir())?;
    if cached < 2 {
        bail!("the mirror holds {cached} blobs after both boots: the pulls did not go through it");
    }
    Ok(())
}

/// Two machines (two `source`s) reported, each from boot to handover.
fn check_events(events: &[serde_json::Value]) -> Result<()> {
    let mut sources: Vec<&str> = events.iter().filter_map(|e| e["source"].as_str()).collect();
    sources.sort_unstable();
    sources.dedup();
    if sources.len() != GUESTS {
        bail!("events came from {} sources, not {GUESTS}: {sources:?}", sources.len());
    }
    for source in sources {
        let types: Vec<&str> = events.iter().filter(|e| e["source"] == source).filter_map(|e| e["type"].as_str()).collect();
        let mut rest = types.iter();
        if let Some(missing) = EVENTS.iter().find(|want| !rest.any(|t| t == *want)) {
            bail!("{source} sent {types:?}: no {missing:?} in the order {EVENTS:?}");
        }
        eprintln!("xtask:   events of {source}: {}", types.join(", "));
    }
    Ok(())
}

/// Downloads every served file into `dir` and runs `sha256sum -c SHA256SUMS`.
fn check_served(port: u16, dir: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir)?;
    for name in SUMMED.iter().chain(&["SHA256SUMS"]) {
        fs::write(dir.join(name), http_get(port, &format!("/{name}"))?)?;
    }
    let checked = cmd_output(Command::new("sha256sum").args(["-c", "SHA256SUMS"]).current_dir(dir))
        .context("the served files do not match SHA256SUMS")?;
    eprintln!("xtask:   served files: {}", checked.trim().replace('\n', ", "));
    Ok(())
}

/// `GET path` on 127.0.0.1:port (HTTP/1.0): the body of a 200.
fn http_get(port: u16, path: &str) -> Result<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).with_context(|| format!("connect 127.0.0.1:{port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    // One write: the file server reads the request with one read.
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).with_context(|| format!("GET {path}"))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).with_context(|| format!("GET {path}"))?;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").with_context(|| format!("GET {path}: no header end"))?;
    let status = String::from_utf8_lossy(&raw[..end]).lines().next().unwrap_or_default().to_owned();
    if !status.contains(" 200 ") {
        bail!("GET {path}: {status}");
    }
    Ok(raw[end + 4..].to_vec())
}

/// How many blobs a registry's filesystem storage holds.
fn blobs_in(storage: &Path) -> Result<usize> {
    let root = storage.join("docker/registry/v2/blobs/sha256");
    let mut count = 0;
    for prefix in fs::read_dir(&root).with_context(|| format!("read {}", root.display()))? {
        count += fs::read_dir(prefix?.path())?.count();
    }
    Ok(count)
}
