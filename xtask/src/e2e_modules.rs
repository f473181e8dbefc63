//! `cargo xtask e2e --only modules`: kernel modules in one QEMU boot.
//!
//! The initrd is built with `--compress-modules` (every module `.ko.xz` or
//! `.ko.zst`, in turn), so the network driver that the pull needs and the
//! drivers loaded later all come from compressed files. The guest gets a
//! virtio disk while `rd.driver.blacklist=virtio_blk` is given, and
//! `virtio-net.napi_tx=0` (spelled with `-`, as users do). Once the
//! container says it waits, a virtio-scsi controller and a disk on it are
//! hot-added through QEMU's monitor on a unix socket: only `iguana hotplug`
//! can load `virtio_scsi` and then `sd_mod` for them. The container reports
//! what it sees in sysfs; the console must show it all. Coldplug scans
//! sysfs once: its later passes read the uevents the first one caused.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use testkit::Image;

use crate::e2e::{self, Fixture, COMMON_APPEND};
use crate::initrd::Options;
use crate::qemu::Vm;
use crate::{target_dir, tools};

pub const NAME: &str = "modules";

const TIMEOUT: Duration = Duration::from_secs(150);
const MARK_WAITING: &str = "IGUANA-E2E waiting for hotplug";

/// The container: waits up to 90 s for the hot-added disk, then reports.
const SCRIPT: &str = r#"echo 'IGUANA-E2E waiting for hotplug'
i=0
while [ ! -e /sys/block/sda ] && [ $i -lt 90 ]; do sleep 1; i=$((i+1)); done
if [ -e /sys/block/sda ]; then
  echo "IGUANA-E2E hotplug sda driver=$(basename "$(readlink /sys/block/sda/device/driver)") after ${i}s"
else
  echo 'IGUANA-E2E hotplug no sda'
fi
if [ -e /sys/block/vda ]; then echo 'IGUANA-E2E vda present'; else echo 'IGUANA-E2E no vda'; fi
for d in /sys/bus/virtio/devices/*; do
  if [ "$(cat "$d/device")" = 0x0002 ]; then
    if [ -e "$d/driver" ]; then echo 'IGUANA-E2E virtio-blk bound'; else echo 'IGUANA-E2E virtio-blk present, no driver'; fi
  fi
done
if [ -d /sys/module/virtio_blk ]; then echo 'IGUANA-E2E virtio_blk loaded'; fi
echo "IGUANA-E2E param napi_tx=$(cat /sys/module/virtio_net/parameters/napi_tx)"
"#;

/// What the console must show, each a list of parts of one line.
const EXPECT: &[&[&str]] = &[
    &["module blacklisted on the command line, not loaded", "module=virtio_blk"],
    &["module loaded", "module=virtio_net", "params=napi_tx=0"],
    // virtio_net is in pass 2: its device came from the uevents queued
    // during pass 1, not from a second scan of sysfs.
    &["coldplug: loaded", "1 sysfs scans"],
    &["hotplug: listening for uevents"],
    // With its dependencies (scsi_common scsi_mod), on one line.
    &["hotplug: drivers loaded", "modalias=virtio:d00000008v", "virtio_scsi"],
    &["hotplug: drivers loaded", "modalias=scsi:t-0x00", "modules=sd_mod"],
    &["IGUANA-E2E hotplug sda driver=sd after"],
    &["IGUANA-E2E no vda"],
    &["IGUANA-E2E virtio-blk present, no driver"],
    &["IGUANA-E2E param napi_tx=N"],
];
const REJECT: &[&[&str]] = &[
    &["IGUANA-E2E virtio_blk loaded"],
    &["IGUANA-E2E virtio-blk bound"],
    &["module not loaded"],
    &["panicked"],
];

/// Runs the scenario (with `opts.init` as /init when given, like the other
/// scenarios); returns the pass count and failed names like `e2e::run`.
pub fn run_all(opts: &Options) -> Result<(usize, Vec<String>)> {
    Ok(crate::e2e::one_test(NAME, || run(opts)))
}

fn run(opts: &Options) -> Result<()> {
    tools::ensure_tools()?;
    let opts = Options { compress_modules: true, ..opts.clone() };
    let fixture = Fixture::new(&opts, |_| Ok(vec![("mods", Image::busybox_script(SCRIPT)?)]))?;
    let (xz, zst) = compressed_modules(&fixture.built.kernel.release)?;
    eprintln!("xtask: {NAME}: modules .ko.xz: {}; .ko.zst: {}", xz.join(" "), zst.join(" "));
    let out = target_dir().join("iguana-e2e");
    fs::create_dir_all(&out)?;
    let blk = out.join("modules-vda.img");
    let scsi = out.join("modules-sda.img");
    let monitor = out.join("modules-monitor.sock");
    for disk in [&blk, &scsi] {
        fs::File::create(disk)?.set_len(1 << 20)?;
    }
    let _ = fs::remove_file(&monitor);

    let reg = &fixture.guest_registry;
    let mut config = fixture.vm(&format!(
        "rd.iguana.containers={reg}/mods rd.iguana.insecure_registries={reg} rd.driver.blacklist=virtio_blk virtio-net.napi_tx=0 {COMMON_APPEND}"
    ));
    config.extra_args = [
        "-drive".to_owned(),
        format!("file={},if=none,id=blk,format=raw", blk.display()),
        "-device".to_owned(),
        "virtio-blk-pci,drive=blk".to_owned(),
        "-drive".to_owned(),
        format!("file={},if=none,id=hot,format=raw", scsi.display()),
        "-monitor".to_owned(),
        format!("unix:{},server=on,wait=off", monitor.display()),
    ]
    .into();
    let mut vm = Vm::start(&config)?;
    let waiting = vm.wait_for(MARK_WAITING, TIMEOUT);
    let monitor_log = match waiting {
        Some(_) => hot_add(&monitor),
        None => Ok(String::new()),
    };
    let outcome = vm.wait(TIMEOUT);
    let log = out.join(format!("{NAME}.log"));
    let monitor_text = monitor_log.as_deref().unwrap_or("");
    let _ = fs::write(&log, format!("{}\n--- monitor ---\n{monitor_text}", outcome.transcript()));
    let monitor_log = monitor_log.context("hot-add through the QEMU monitor")?;
    if monitor_log.to_lowercase().contains("error") {
        bail!("QEMU monitor: {monitor_log}");
    }
    let strings = |lines: &[&[&str]]| -> Vec<Vec<String>> {
        lines.iter().map(|parts| parts.iter().map(|p| (*p).to_owned()).collect()).collect()
    };
    let mut expect = strings(EXPECT);
    // Drivers from both kinds of file were loaded.
    for list in [&xz, &zst] {
        let loaded = list.iter().find(|m| {
            e2e::find_line(&outcome, &["module loaded".to_owned(), format!("module={m}")]).is_some()
        });
        match loaded {
            Some(module) => expect.push(vec!["module loaded".to_owned(), format!("module={module}")]),
            None => bail!("no module loaded from {list:?} (console: {})", log.display()),
        }
    }
    e2e::check(&outcome, &expect, &strings(REJECT), TIMEOUT)
        .with_context(|| format!("console: {}", log.display()))
}

/// The modules in the initrd's modules.dep by compression: (xz, zst).
fn compressed_modules(release: &str) -> Result<(Vec<String>, Vec<String>)> {
    let dep = target_dir().join("iguana-initrd/modules/lib/modules").join(release).join("modules.dep");
    let text = fs::read_to_string(&dep).with_context(|| format!("read {}", dep.display()))?;
    let (mut xz, mut zst) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let Some((path, _)) = line.split_once(':') else { continue };
        let file = Path::new(path).file_name().and_then(|f| f.to_str()).unwrap_or("");
        if let Some(stem) = file.strip_suffix(".ko.xz") {
            xz.push(stem.replace('-', "_"));
        } else if let Some(stem) = file.strip_suffix(".ko.zst") {
            zst.push(stem.replace('-', "_"));
        } else {
            bail!("{}: {path} is not compressed", dep.display());
        }
    }
    if xz.is_empty() || zst.is_empty() {
        bail!("{}: wanted both .ko.xz and .ko.zst modules", dep.display());
    }
    Ok((xz, zst))
}

/// Hot-adds a virtio-scsi controller and a disk on it with HMP commands;
/// returns what the monitor said.
fn hot_add(socket: &Path) -> Result<String> {
    let mut stream = UnixStream::connect(socket).with_context(|| format!("connect {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    // The banner and first prompt, so each answer below is only its own.
    let mut said = read_for(&mut stream, Duration::from_millis(500));
    for command in ["device_add virtio-scsi-pci,id=hotscsi", "device_add scsi-hd,drive=hot,bus=hotscsi.0"] {
        stream.write_all(format!("{command}\n").as_bytes())?;
        // The monitor echoes the line as typed, then answers after CRLF.
        let text = read_for(&mut stream, Duration::from_secs(2));
        let answer = text.split_once("\r\n").map_or("", |(_, answer)| answer);
        said.push_str(&format!("> {command}\n{answer}\n"));
    }
    Ok(said)
}

/// Whatever the monitor prints within `limit`.
fn read_for(stream: &mut UnixStream, limit: Duration) -> String {
    let until = std::time::Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < until {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
