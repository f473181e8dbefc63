//! The `examples/metal-image-install/` example in QEMU: a container
//! partitions and formats the VM's disk, downloads a metal-stack style image
//! (`rootfs.tar.lz4` and its `.md5`) from a loopback HTTP server, checks it,
//! unpacks it, runs the image's `install.sh` in a chroot and writes the
//! mountlist; iguana switch_roots into the installed system, whose init
//! reports what it sees.
//!
//! - `metal-install`: the happy path, proven by the installed init's line.
//! - `metal-md5-mismatch`: the tarball is corrupted in transit (one byte
//!   flipped, md5 file intact); the install must refuse and no handover may
//!   happen.
//!
//! The container image is built with the testkit (umoci, skopeo): static
//! busybox for the shell and the small tools, and Debian's `lz4`, `sfdisk`
//! and `mke2fs` copied with the shared libraries `ldd` names. The OS image
//! is a busybox rootfs made here, compressed with `lz4`. Both boots are
//! driven by a workflow file from the same HTTP server, as a site would.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use testkit::{FileServer, Image, Layer, Registry};

use crate::e2e;
use crate::initrd::{self, Built, Options};
use crate::qemu::{Vm, VmConfig};
use crate::{cmd_output, target_dir, tools, workspace_root};

pub const NAMES: &[&str] = &["metal-install", "metal-md5-mismatch"];

const HOSTNAME: &str = "metal-e2e-host";
const TIMEOUT: Duration = Duration::from_secs(240);
const DISK_BYTES: u64 = 128 << 20;

/// Debian's dynamically linked tools the install script needs.
const HOST_TOOLS: &[&str] = &["/usr/bin/lz4", "/usr/sbin/sfdisk", "/usr/sbin/mke2fs"];
/// busybox applets the install script calls by name.
const APPLETS: &[&str] = &[
    "awk", "sed", "tr", "date", "usleep", "mount", "umount", "chroot", "md5sum", "tar", "rm",
    "sync", "head",
];

/// The installed system's /sbin/init: one line with everything it checks.
const OS_INIT: &str = r#"#!/bin/sh
hostname -F /etc/hostname
while read dev mp fs rest; do
  [ "$mp" = / ] && root="$dev $fs"
done < /proc/mounts
fstab_dev=$(findfs "$(awk '$2 == "/" {print $1}' /etc/fstab)")
echo "METAL-E2E init pid=$$ root=$root fstab-root=$fstab_dev hostname=$(hostname) $(cat /etc/metal/install.log)"
sed 's/^/METAL-E2E yaml: /' /etc/metal/install.yaml
poweroff -f
"#;

/// The image's install.sh, run by the installer in a chroot: what a
/// metal-images install.sh does with install.yaml, in a busybox subset.
const OS_INSTALL_SH: &str = r#"#!/bin/sh
set -e
y=/etc/metal/install.yaml
val() { sed -n "s/^$1: *\"\(.*\)\"$/\1/p" "$y"; }
val hostname > /etc/hostname
echo "UUID=$(val root_uuid) / ext4 defaults 0 1" > /etc/fstab
addr=$(grep -o '"addresses": *\["[^"]*"' "$y" | grep -o '[0-9.]*/[0-9]*')
echo "install.sh: hostname=$(val hostname) console=$(val console) nics=$(grep -c '^  - name:' "$y") addr=$addr proc=$(test -e /proc/self/status && echo yes)" > /etc/metal/install.log
echo "install.sh done"
"#;

struct Scenario {
    name: &'static str,
    /// Path of the tarball on the HTTP server.
    image: &'static str,
    expect: Vec<Vec<String>>,
    reject: Vec<Vec<String>>,
    /// The installed init prints install.yaml; check what it holds.
    check_yaml: bool,
}

fn scenarios() -> Vec<Scenario> {
    let lines = |l: &[&[&str]]| -> Vec<Vec<String>> {
        l.iter()
            .map(|parts| parts.iter().map(|p| (*p).to_owned()).collect())
            .collect()
    };
    vec![
        Scenario {
            name: "metal-install",
            image: "/good/rootfs.tar.lz4",
            expect: lines(&[
                &["progress: md5 ok"],
                &["[install]", "install.sh done"],
                &["progress: installed http://", "on /dev/vda, root UUID="],
                &["switch_root /sysroot /sbin/init"],
                &[
                    "METAL-E2E init pid=1 root=/dev/vda1 ext4 fstab-root=/dev/vda1",
                    &format!("hostname={HOSTNAME} install.sh: hostname={HOSTNAME}"),
                    "console=ttyS0,115200n8 nics=1 addr=10.0.2.15/24 proc=yes",
                ],
            ]),
            reject: lines(&[&["error"]]),
            check_yaml: true,
        },
        Scenario {
            name: "metal-md5-mismatch",
            image: "/corrupt/rootfs.tar.lz4",
            expect: lines(&[
                &[
                    "[install]",
                    "md5 mismatch for http://",
                    "/corrupt/rootfs.tar.lz4",
                    "refusing to install",
                ],
                &["job install failed: exit status 1"],
                &["rebooting"],
            ]),
            reject: lines(&[&["switch_root"], &["METAL-E2E"], &["unpacking"]]),
            check_yaml: false,
        },
    ]
}

pub fn main(args: &[String]) -> Result<()> {
    let only: Vec<String> = match args {
        [] => Vec::new(),
        [flag, names] if flag == "--only" => names.split(',').map(str::to_owned).collect(),
        _ => bail!("usage: cargo xtask e2e-metal [--only NAME,..]"),
    };
    let (passed, failed) = run_all(&only)?;
    println!("e2e-metal: {passed} passed, {} failed", failed.len());
    if !failed.is_empty() {
        bail!("e2e-metal failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Runs the scenarios (all when `only` is empty, else those named); returns
/// the pass count and the names of the failed ones, as `e2e::run` does.
pub fn run_all(only: &[String]) -> Result<(usize, Vec<String>)> {
    if let Some(name) = only.iter().find(|n| !NAMES.contains(&n.as_str())) {
        bail!(
            "e2e-metal: no scenario {name:?} (have {})",
            NAMES.join(", ")
        );
    }
    tools::ensure_tools()?;
    let built = initrd::build(&Options::default())?;
    let registry = Registry::start().context("start docker-registry")?;
    installer_image()?
        .build_and_push(&registry, "metal-image-install:latest")
        .context("build and push the metal-image-install image")?;
    let out = target_dir().join("iguana-e2e");
    fs::create_dir_all(&out)?;

    let server = FileServer::start().context("start the image server")?;
    add_files(&server, registry.port())?;
    let port = server.port();

    let mut passed = 0;
    let mut failed = Vec::new();
    for scenario in scenarios() {
        if !only.is_empty() && !only.iter().any(|o| o == scenario.name) {
            continue;
        }
        let started = Instant::now();
        match run(&built, port, registry.port(), &out, &scenario) {
            Ok(()) => {
                println!("PASS {} ({:.1?})", scenario.name, started.elapsed());
                passed += 1;
            }
            Err(e) => {
                println!("FAIL {} ({:.1?}): {e:#}", scenario.name, started.elapsed());
                failed.push(scenario.name.to_owned());
            }
        }
    }
    Ok((passed, failed))
}

fn run(built: &Built, port: u16, registry_port: u16, out: &Path, s: &Scenario) -> Result<()> {
    let append = format!(
        "rd.iguana.control_url=http://10.0.2.2:{port}/{}.yaml rd.iguana.insecure_registries=10.0.2.2:{registry_port} {}",
        s.name,
        e2e::COMMON_APPEND
    );
    let mut config = VmConfig::new(built.kernel.vmlinuz.clone(), built.initrd.clone(), append);
    let disk = out.join(format!("{}.disk", s.name));
    sparse_disk(&disk)?;
    config.extra_args = vec![
        "-drive".into(),
        format!("file={},if=virtio,format=raw", disk.display()),
    ];
    let outcome = Vm::start(&config).map(|vm| vm.wait(TIMEOUT));
    let _ = fs::remove_file(&disk);
    let outcome = outcome?;
    let log = out.join(format!("{}.log", s.name));
    fs::write(&log, outcome.transcript()).with_context(|| format!("write {}", log.display()))?;
    e2e::check(&outcome, &s.expect, &s.reject, TIMEOUT)
        .and_then(|()| match s.check_yaml {
            true => check_install_yaml(&printed_yaml(&outcome.transcript())),
            false => Ok(()),
        })
        .with_context(|| format!("console in {}", log.display()))
}

/// The install.yaml the installed init printed, from the console.
fn printed_yaml(console: &str) -> String {
    let lines: Vec<&str> = console
        .lines()
        .filter_map(|line| line.split_once("METAL-E2E yaml: ").map(|(_, rest)| rest))
        .collect();
    lines.join("\n")
}

/// install.yaml parses as YAML and describes this VM: the host name from
/// the workflow, the root's UUID, QEMU's NIC, iguana's lease.
fn check_install_yaml(text: &str) -> Result<()> {
    let y: serde_yaml::Value =
        serde_yaml::from_str(text).with_context(|| format!("install.yaml {text:?}"))?;
    let get = |path: &[&str]| -> String {
        let mut v = &y;
        for key in path {
            v = match key.parse::<usize>() {
                Ok(i) => &v[i],
                Err(_) => &v[*key],
            };
        }
        match v {
            serde_yaml::Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_owned(),
        }
    };
    let mut wrong = Vec::new();
    let mut want = |path: &[&str], ok: &dyn Fn(&str) -> bool| {
        let value = get(path);
        if !ok(&value) {
            wrong.push(format!("{} = {value:?}", path.join(".")));
        }
    };
    want(&["hostname"], &|v| v == HOSTNAME);
    want(&["console"], &|v| v == "ttyS0,115200n8");
    want(&["role"], &|v| v == "machine");
    want(&["raidenabled"], &|v| v == "false");
    want(&["disk"], &|v| v == "/dev/vda");
    want(&["root_uuid"], &|v| {
        v.len() == 36 && v.matches('-').count() == 4
    });
    want(&["timestamp"], &|v| v.len() == 20 && v.ends_with('Z'));
    want(&["nics", "0", "name"], &|v| v == "eth0");
    want(&["nics", "0", "mac"], &|v| v.starts_with("52:54:00:"));
    want(&["network", "interfaces", "0", "addresses", "0"], &|v| {
        v == "10.0.2.15/24"
    });
    if !wrong.is_empty() {
        bail!("install.yaml has {}:\n{text}", wrong.join(", "));
    }
    Ok(())
}

/// A sparse raw disk of `DISK_BYTES`, all zeros.
fn sparse_disk(path: &Path) -> Result<()> {
    let _ = fs::remove_file(path);
    let file = fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    file.set_len(DISK_BYTES)
        .with_context(|| format!("size {}", path.display()))
}

/// The installer: busybox, the Debian tools with their libraries, the
/// example's script as the entrypoint.
fn installer_image() -> Result<Image> {
    let script = workspace_root().join("examples/metal-image-install/install-image.sh");
    let script =
        fs::read_to_string(&script).with_context(|| format!("read {}", script.display()))?;
    let mut layer = Layer::new();
    for applet in APPLETS {
        layer = layer.symlink(&format!("bin/{applet}"), "busybox");
    }
    layer = with_libraries(layer, HOST_TOOLS)?;
    layer = layer.file(
        "etc/mke2fs.conf",
        fs::read("/etc/mke2fs.conf").context("read /etc/mke2fs.conf")?,
        0o644,
    );
    Ok(Image::busybox_script(&script)?.layer(layer))
}

/// Adds each binary and every shared library `ldd` names for it, at the
/// paths `ldd` gives, as real directories (the image has no merged /usr).
fn with_libraries(mut layer: Layer, binaries: &[&str]) -> Result<Layer> {
    let mut files = BTreeMap::new();
    let mut dirs = std::collections::BTreeSet::new();
    for binary in binaries {
        files.insert(binary.to_string(), 0o755);
        let ldd =
            cmd_output(Command::new("ldd").arg(binary)).with_context(|| format!("ldd {binary}"))?;
        for path in ldd_paths(&ldd).with_context(|| format!("ldd {binary}"))? {
            files.entry(path).or_insert(0o755);
        }
    }
    for path in files.keys() {
        let mut dir = Path::new(path).parent();
        while let Some(d) = dir.filter(|d| *d != Path::new("/")) {
            dirs.insert(d.display().to_string());
            dir = d.parent();
        }
    }
    for dir in &dirs {
        layer = layer.dir(dir.trim_start_matches('/'), 0o755);
    }
    for (path, mode) in &files {
        let data = fs::read(path).with_context(|| format!("read {path}"))?;
        layer = layer.file(path.trim_start_matches('/'), data, *mode);
    }
    Ok(layer)
}

/// The absolute library paths in `ldd` output (`libc.so.6 => /lib/... (0x..)`
/// and `/lib64/ld-linux-x86-64.so.2 (0x...)`); the vDSO has none. A library
/// `ldd` could not find is an error naming it.
fn ldd_paths(output: &str) -> Result<Vec<String>> {
    let mut paths = Vec::new();
    for line in output.lines() {
        if line.contains("not found") {
            bail!("missing library: {}", line.trim());
        }
        let path = line
            .split("=>")
            .last()
            .and_then(|p| p.split_whitespace().next());
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            paths.push(path.to_owned());
        }
    }
    Ok(paths)
}

/// The OS image as a tar: busybox, the init and install.sh above.
fn os_tar() -> Result<Vec<u8>> {
    let mut layer = Layer::new();
    for dir in [
        "bin",
        "sbin",
        "etc",
        "etc/metal",
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "root",
    ] {
        layer = layer.dir(dir, 0o755);
    }
    layer = layer.file(
        "bin/busybox",
        fs::read("/bin/busybox").context("read /bin/busybox")?,
        0o755,
    );
    for applet in [
        "sh", "sed", "grep", "awk", "cat", "echo", "test", "hostname", "findfs", "poweroff",
    ] {
        layer = layer.symlink(&format!("bin/{applet}"), "busybox");
    }
    layer = layer
        .file("sbin/init", OS_INIT, 0o755)
        .file("install.sh", OS_INSTALL_SH, 0o755);
    layer.tar()
}

/// Puts on `server` the good image, a corrupted copy beside the good md5,
/// and one workflow file per scenario.
fn add_files(server: &FileServer, registry_port: u16) -> Result<()> {
    let lz4 = lz4(&os_tar()?)?;
    let md5 = format!("{}  rootfs.tar.lz4\n", md5_hex(&lz4)?);
    let mut corrupt = lz4.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    server.add("/good/rootfs.tar.lz4", lz4);
    server.add("/good/rootfs.tar.lz4.md5", md5.clone());
    server.add("/corrupt/rootfs.tar.lz4", corrupt);
    server.add("/corrupt/rootfs.tar.lz4.md5", md5);
    for s in scenarios() {
        let workflow = workflow(server.port(), registry_port, s.image);
        server.add(&format!("/{}.yaml", s.name), workflow);
    }
    Ok(())
}

/// The workflow a site would serve: one job, the installer, its env.
fn workflow(port: u16, registry_port: u16, image: &str) -> String {
    format!(
        r#"name: metal image install
jobs:
  install:
    container:
      image: 10.0.2.2:{registry_port}/metal-image-install
      env:
        IMAGE_URL: http://10.0.2.2:{port}{image}
        INSTALL_HOSTNAME: {HOSTNAME}
        CONSOLE: ttyS0,115200n8
    timeout: 3m
"#
    )
}

fn lz4(data: &[u8]) -> Result<Vec<u8>> {
    filter(Command::new("lz4").args(["-q", "-c", "-"]), data)
}

fn md5_hex(data: &[u8]) -> Result<String> {
    let out = filter(&mut Command::new("md5sum"), data)?;
    let text = String::from_utf8(out)?;
    match text.split_whitespace().next() {
        Some(hex) if hex.len() == 32 => Ok(hex.to_owned()),
        _ => bail!("md5sum printed {text:?}"),
    }
}

/// Runs `cmd` with `input` on stdin; its stdout.
fn filter(cmd: &mut Command, input: &[u8]) -> Result<Vec<u8>> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {cmd:?}"))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child
        .wait_with_output()
        .with_context(|| format!("run {cmd:?}"))?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    if !out.status.success() {
        bail!("{cmd:?} failed with {}", out.status);
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f10)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f10)\n";
        assert_eq!(
            ldd_paths(ldd).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        let err = ldd_paths("\tlibgone.so.1 => not found\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing library: libgone.so.1 => not found"
        );
    }

    #[test]
    fn install_yaml_checks() {
        let console = "METAL-E2E yaml: ---\n\
            METAL-E2E yaml: hostname: \"metal-e2e-host\"\n\
            METAL-E2E yaml: console: \"ttyS0,115200n8\"\n\
            METAL-E2E yaml: root_uuid: \"e9a5cc84-2ad2-4241-b4c9-66bc83547b00\"\n\
            METAL-E2E yaml: timestamp: \"2026-11-22T03:10:00Z\"\n\
            METAL-E2E yaml: role: \"machine\"\n\
            METAL-E2E yaml: raidenabled: false\n\
            [    9.1] some kernel line\n\
            METAL-E2E yaml: nics:\n\
            METAL-E2E yaml:   - name: \"eth0\"\n\
            METAL-E2E yaml:     mac: \"52:54:00:12:34:56\"\n\
            METAL-E2E yaml: network: {\"interfaces\": [{\"name\": \"eth0\",\"addresses\": [\"10.0.2.15/24\"]}]}\n\
            METAL-E2E yaml: disk: \"/dev/vda\"\n";
        check_install_yaml(&printed_yaml(console)).unwrap();
        let bad = console
            .replace("metal-e2e-host", "other")
            .replace("eth0\"\n", "eth1\"\n");
        let err = check_install_yaml(&printed_yaml(&bad))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("install.yaml has hostname = \"other\", nics.0.name = \"eth1\""),
            "{err}"
        );
        assert!(check_install_yaml("hostname: [unclosed").is_err());
    }
}
