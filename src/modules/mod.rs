//! Phase "modules": coldplug kernel modules from `/lib/modules/$(uname -r)`
//! by modalias, the job udev does on a normal system.
//!
//! Runs inside PID 1, single-threaded and synchronous. Assumes `/sys` and
//! `/proc` are mounted and the initramfs carries the kernel's modules together
//! with the `modules.alias`, `modules.dep` and `modules.builtin` that `depmod`
//! wrote for them. A module that fails to load is logged and recorded in the
//! [`Report`]; only an unreadable module index is an error.

pub mod args;
mod fnmatch;
pub mod hotplug;
mod index;
mod load;
mod sysfs;
pub mod uevent;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use tracing::{debug, info, warn};

pub use self::args::Policy;
use self::index::{normalize, Index};
pub use self::load::KernelLoader;

/// Loading a bus driver (virtio_pci) makes its devices appear, which then ask
/// for their own drivers (virtio_net, virtio_blk); real machines settle in two
/// or three passes. A pass starts right after the previous one: a driver's
/// probe adds its devices before `finit_module` returns, and a device a
/// driver adds later (asynchronous probes, SCSI scans) reaches the hotplug
/// child through the uevent socket PID 1 opened before coldplug.
const MAX_PASSES: u32 = 6;

/// Where modules.dep puts network drivers: loaded first in their pass, so
/// DHCP can start on their links while the other drivers load.
const NET_DRIVERS: &str = "kernel/drivers/net/";

/// What DHCP needs besides the NIC drivers (mozim's AF_PACKET socket):
/// loaded, when modular, before the network is announced ready.
const NETWORK_NEEDS: &[&str] = &["af_packet"];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read module index {path}")]
    ReadIndex {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read kernel release from {path}")]
    KernelRelease {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Why one module did not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("decompress {path}")]
    Decompress {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parameters {params:?} contain a NUL byte")]
    Params { params: String },
    #[error("{call}({path}, {params:?}): {errno}")]
    Init {
        call: &'static str,
        path: PathBuf,
        params: String,
        errno: Errno,
    },
    #[error("not in modules.dep")]
    NotFound,
    #[error("needs {dependency}, which did not load")]
    Dependency { dependency: String },
}

/// Whether a successful load call did anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    New,
    Already,
}

/// The one side effect of this phase, behind a seam so the resolution logic
/// can be tested by recording calls instead of loading modules.
pub trait Loader {
    /// Inserts the module at `path` with the `finit_module` parameter
    /// string `params` (empty for none).
    fn load(&mut self, name: &str, path: &Path, params: &str) -> Result<Loaded, LoadError>;
}

#[derive(Debug)]
pub struct Failure {
    pub module: String,
    pub error: LoadError,
}

/// What a coldplug or [`load_named`] call did.
#[derive(Debug, Default)]
pub struct Report {
    /// Modules this call inserted, in load order.
    pub loaded: Vec<String>,
    pub failed: Vec<Failure>,
    /// Modules a device or a name asked for that the blacklist held back.
    pub blacklisted: Vec<String>,
    /// Passes of coldplug (0 for [`load_named`]).
    pub passes: u32,
    /// Passes that scanned sysfs: the first, and any later one whose new
    /// devices the uevents did not tell (no socket, or events lost).
    pub scans: u32,
    /// What the sysfs scans took, all passes together (the rest of
    /// `duration` is the kernel's: `finit_module` and the probes it runs).
    pub scanning: Duration,
    /// Reading and parsing the module index.
    pub indexing: Duration,
    pub duration: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "loaded {} modules", self.loaded.len())?;
        if !self.loaded.is_empty() {
            write!(f, " ({})", self.loaded.join(" "))?;
        }
        write!(f, ", {} failed", self.failed.len())?;
        if !self.blacklisted.is_empty() {
            write!(f, ", blacklisted ({})", self.blacklisted.join(" "))?;
        }
        for failure in &self.failed {
            write!(f, " [{}: {}]", failure.module, failure.error)?;
        }
        write!(
            f,
            ", {} passes, {} ms (index {} ms, {} sysfs scans {} ms)",
            self.passes,
            self.duration.as_millis(),
            self.indexing.as_millis(),
            self.scans,
            self.scanning.as_millis()
        )
    }
}

/// `/lib/modules/<release>` for the running kernel.
pub fn kernel_modules_dir() -> Result<PathBuf, Error> {
    let path = PathBuf::from("/proc/sys/kernel/osrelease");
    let release =
        fs::read_to_string(&path).map_err(|source| Error::KernelRelease { path, source })?;
    Ok(Path::new("/lib/modules").join(release.trim()))
}

/// Loads the driver of every device in `sys_dir` (normally `/sys`), then of
/// the devices loading drivers made appear, pass after pass while a pass
/// loads something, then the modules in `named` that no device asks for
/// (as [`load_named`]), reading the index once. The first pass scans sysfs;
/// a later one takes the devices from `announced` (the `add` uevents queued
/// since its last call, see [`hotplug::Listener::drain`]) and scans again
/// only when that returns `None` (no socket, or events were lost). With
/// the uevents a boot scans sysfs once instead of three times.
/// `network_ready` is called once, as soon as the first pass
/// that loads network drivers has loaded them all (their links exist) and
/// what DHCP needs besides (`af_packet` when modular), before
/// the rest of that pass, or at the end when no pass loaded one (built-in
/// drivers, or no NIC); it gets the modules loaded so far.
pub fn coldplug(
    modules_dir: &Path,
    sys_dir: &Path,
    policy: &Policy,
    named: &[&str],
    announced: &mut dyn FnMut() -> Option<BTreeSet<String>>,
    network_ready: &mut dyn FnMut(&[String]),
) -> Result<Report, Error> {
    let start = Instant::now();
    let index = read_index(modules_dir)?;
    let indexing = start.elapsed();
    let mut report = coldplug_with(&index, modules_dir, sys_dir, &mut KernelLoader, policy, announced, network_ready);
    report.indexing = indexing;
    report.duration += indexing;
    let extra = load_named_with(&index, modules_dir, named, &mut KernelLoader, policy);
    report.loaded.extend(extra.loaded);
    report.failed.extend(extra.failed);
    report.blacklisted.extend(extra.blacklisted);
    report.duration += extra.duration;
    Ok(report)
}

/// Loads modules that no device asks for (filesystems, protocols), with
/// their dependencies. Built-in and absent modules are skipped quietly.
pub fn load_named(modules_dir: &Path, names: &[&str], policy: &Policy) -> Result<Report, Error> {
    let index = read_index(modules_dir)?;
    Ok(load_named_with(
        &index,
        modules_dir,
        names,
        &mut KernelLoader,
        policy,
    ))
}

pub(crate) fn read_index(modules_dir: &Path) -> Result<Index, Error> {
    let read = |file: &str| {
        let path = modules_dir.join(file);
        fs::read_to_string(&path).map_err(|source| Error::ReadIndex { path, source })
    };
    let alias = read("modules.alias")?;
    let dep = read("modules.dep")?;
    // A kernel with everything modular has an empty modules.builtin, and
    // some initramfs builders leave it out; that is not worth failing for.
    let builtin = read("modules.builtin").unwrap_or_else(|err| {
        debug!(%err, "no modules.builtin, assuming nothing is built in");
        String::new()
    });
    Ok(Index::parse(&alias, &dep, &builtin))
}

fn coldplug_with(
    index: &Index,
    modules_dir: &Path,
    sys_dir: &Path,
    loader: &mut dyn Loader,
    policy: &Policy,
    announced: &mut dyn FnMut() -> Option<BTreeSet<String>>,
    network_ready: &mut dyn FnMut(&[String]),
) -> Report {
    let start = Instant::now();
    let mut session = Session::new(index, modules_dir, loader, policy);
    let mut seen = BTreeSet::new();
    let mut notified = false;
    let mut announce = |session: &mut Session| {
        for name in NETWORK_NEEDS {
            session.ensure(name, true);
        }
        network_ready(&session.report.loaded);
    };
    for pass in 1..=MAX_PASSES {
        session.report.passes = pass;
        let before = session.report.loaded.len();
        let mut wanted: Vec<&str> = Vec::new();
        // Read before the first scan too: what was queued then, the scan
        // sees; what comes after it, the next pass reads.
        let modaliases = match announced() {
            Some(devices) if pass > 1 => devices,
            _ => {
                let scan = Instant::now();
                let found = sysfs::modaliases(sys_dir);
                session.report.scanning += scan.elapsed();
                session.report.scans += 1;
                found
            }
        };
        for modalias in modaliases {
            if seen.contains(&modalias) {
                continue;
            }
            wanted.extend(index.modules_for(&modalias));
            seen.insert(modalias);
        }
        // Network drivers first (a stable sort keeps the sysfs order).
        wanted.sort_by_key(|module| !index.is_in(module, NET_DRIVERS));
        let mut net_loaded = false;
        for module in wanted {
            let net = index.is_in(module, NET_DRIVERS);
            if !net && net_loaded && !notified {
                announce(&mut session);
                notified = true;
            }
            let loaded = session.report.loaded.len();
            session.ensure(module, false);
            net_loaded |= net && session.report.loaded.len() > loaded;
        }
        if net_loaded && !notified {
            announce(&mut session);
            notified = true;
        }
        if session.report.loaded.len() == before {
            break;
        }
    }
    if !notified {
        announce(&mut session);
    }
    let mut report = session.report;
    report.duration = start.elapsed();
    report
}

fn load_named_with(
    index: &Index,
    modules_dir: &Path,
    names: &[&str],
    loader: &mut dyn Loader,
    policy: &Policy,
) -> Report {
    let start = Instant::now();
    let mut session = Session::new(index, modules_dir, loader, policy);
    for name in names {
        session.ensure(name, true);
    }
    let mut report = session.report;
    report.duration = start.elapsed();
    report
}

/// What became of a module during one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Usable,
    Missing,
    Failed,
}

struct Session<'a> {
    index: &'a Index,
    modules_dir: &'a Path,
    loader: &'a mut dyn Loader,
    policy: &'a Policy,
    states: HashMap<String, State>,
    report: Report,
}

impl<'a> Session<'a> {
    fn new(
        index: &'a Index,
        modules_dir: &'a Path,
        loader: &'a mut dyn Loader,
        policy: &'a Policy,
    ) -> Self {
        Session {
            index,
            modules_dir,
            loader,
            policy,
            states: HashMap::new(),
            report: Report::default(),
        }
    }

    /// Loads `name` after its dependencies. `quiet_missing` is for modules
    /// asked for by name, which may simply not exist in this kernel.
    ///
    /// A blacklisted `name` is not loaded, but a blacklisted dependency of
    /// another module is, as modprobe does: the blacklist only stops a
    /// module from being chosen for a device or by name.
    fn ensure(&mut self, name: &str, quiet_missing: bool) {
        let name = normalize(name);
        if self.policy.is_blacklisted(&name) {
            if !self.report.blacklisted.contains(&name) {
                info!(module = %name, "module blacklisted on the command line, not loaded");
                self.report.blacklisted.push(name);
            }
            return;
        }
        for module in self.index.load_order(&name) {
            if self.states.contains_key(&module) {
                continue;
            }
            let state = match self.failed_dependency(&module) {
                Some(dependency) => {
                    let error = LoadError::Dependency { dependency };
                    warn!(%module, %error, "module not loaded");
                    self.report.failed.push(Failure {
                        module: module.clone(),
                        error,
                    });
                    State::Failed
                }
                None => self.load_one(&module, quiet_missing && module == name),
            };
            self.states.insert(module, state);
        }
    }

    /// The first direct dependency of `module` that is known not to be usable.
    /// Dependencies come earlier in the load order, so they have a state by
    /// now (except inside a cycle, which the kernel will complain about).
    fn failed_dependency(&self, module: &str) -> Option<String> {
        let entry = self.index.deps.get(module)?;
        entry
            .deps
            .iter()
            .find(|dep| matches!(self.states.get(*dep), Some(s) if *s != State::Usable))
            .cloned()
    }

    fn load_one(&mut self, module: &str, quiet_missing: bool) -> State {
        if self.index.builtin.contains(module) {
            debug!(module, "built into the kernel");
            return State::Usable;
        }
        let Some(entry) = self.index.deps.get(module) else {
            if quiet_missing {
                debug!(module, "no such module, skipped");
            } else {
                warn!(module, "module not loaded: not in modules.dep");
                self.report.failed.push(Failure {
                    module: module.to_owned(),
                    error: LoadError::NotFound,
                });
            }
            return State::Missing;
        };
        let params = self.policy.params_for(module);
        match self
            .loader
            .load(module, &self.modules_dir.join(&entry.path), &params)
        {
            Ok(Loaded::New) => {
                if params.is_empty() {
                    info!(module, "module loaded");
                } else {
                    info!(module, %params, "module loaded");
                }
                self.report.loaded.push(module.to_owned());
                State::Usable
            }
            Ok(Loaded::Already) => State::Usable,
            Err(error) => {
                warn!(module, %error, "module not loaded");
                self.report.failed.push(Failure {
                    module: module.to_owned(),
                    error,
                });
                State::Failed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    // Real lines from Debian's 6.1.0-56-cloud-amd64 modules.alias/modules.dep,
    // plus one alias whose module is missing (a stale index).
    const ALIAS: &str = "\
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000002v* virtio_blk
alias virtio:d00000001v* virtio_net
alias fs-overlay overlay
alias cpu:type:x86,ven*fam*mod*:feature:*0099* aesni_intel
alias platform:serial8250 8250-ghost
";
    const DEP: &str = "\
kernel/fs/overlayfs/overlay.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/arch/x86/crypto/aesni-intel.ko: kernel/crypto/crypto_simd.ko kernel/crypto/cryptd.ko
kernel/crypto/crypto_simd.ko: kernel/crypto/cryptd.ko
kernel/crypto/cryptd.ko:
";
    const BUILTIN: &str = "kernel/net/packet/af_packet.ko\nkernel/fs/ext4/ext4.ko\n";

    /// Stands in for the kernel: records each load, fails or reports
    /// "already loaded" on request, and makes virtio devices appear in the
    /// fake sysfs when virtio_pci loads, as the real driver's probe does.
    struct Recorder {
        sys: PathBuf,
        modules_dir: PathBuf,
        calls: Vec<(String, PathBuf)>,
        /// The parameter string of each call with one.
        params: Vec<(String, String)>,
        fail: &'static [&'static str],
        already: &'static [&'static str],
    }

    impl Loader for Recorder {
        fn load(&mut self, name: &str, path: &Path, params: &str) -> Result<Loaded, LoadError> {
            let relative = path.strip_prefix(&self.modules_dir).unwrap_or(path);
            self.calls.push((name.to_owned(), relative.to_owned()));
            if !params.is_empty() {
                self.params.push((name.to_owned(), params.to_owned()));
            }
            if self.fail.contains(&name) {
                return Err(LoadError::Init {
                    call: "finit_module",
                    path: path.to_owned(),
                    params: params.to_owned(),
                    errno: Errno::ENOEXEC,
                });
            }
            if name == "virtio_pci" {
                device(&self.sys, "virtio", "pci0000:00/0000:00:02.0/virtio0", "virtio:d00000001v00001AF4");
                device(&self.sys, "virtio", "pci0000:00/0000:00:03.0/virtio1", "virtio:d00000002v00001AF4");
            }
            Ok(if self.already.contains(&name) {
                Loaded::Already
            } else {
                Loaded::New
            })
        }
    }

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    /// A device at `sys/devices/DEVPATH` as the kernel shows it: its
    /// `uevent` with the bus's `MODALIAS=` (none when empty), and its link in
    /// `sys/bus/BUS/devices/`.
    fn device(sys: &Path, bus: &str, devpath: &str, modalias: &str) {
        let dir = sys.join("devices").join(devpath);
        let uevent = if modalias.is_empty() { String::new() } else { format!("MODALIAS={modalias}\n") };
        write(&dir.join("uevent"), &uevent);
        let link = sys.join("bus").join(bus).join("devices").join(devpath.rsplit('/').next().unwrap());
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        symlink(&dir, link).unwrap();
    }

    fn setup(
        fail: &'static [&'static str],
        already: &'static [&'static str],
    ) -> (tempfile::TempDir, Index, Recorder) {
        let tmp = tempfile::tempdir().unwrap();
        let modules_dir = tmp.path().join("lib/modules/6.1.0-56-cloud-amd64");
        write(&modules_dir.join("modules.alias"), ALIAS);
        write(&modules_dir.join("modules.dep"), DEP);
        write(&modules_dir.join("modules.builtin"), BUILTIN);
        // Modaliases as a QEMU q35 guest shows them.
        let sys = tmp.path().join("sys");
        device(&sys, "pci", "pci0000:00/0000:00:00.0", "pci:v00008086d000029C0sv00001AF4sd00001100bc06sc00i00");
        device(&sys, "pci", "pci0000:00/0000:00:02.0", "pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00");
        device(&sys, "pci", "pci0000:00/0000:00:03.0", "pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00");
        device(&sys, "cpu", "system/cpu/cpu0", "cpu:type:x86,ven0000fam0006mod0055:feature:,0000,0001,0099");
        device(&sys, "platform", "platform/serial8250", "platform:serial8250");
        device(&sys, "platform", "platform/empty", "");
        let index = read_index(&modules_dir).unwrap();
        let recorder = Recorder {
            sys,
            modules_dir,
            calls: Vec::new(),
            params: Vec::new(),
            fail,
            already,
        };
        (tmp, index, recorder)
    }

    fn names(list: &[String]) -> Vec<&str> {
        list.iter().map(String::as_str).collect()
    }

    fn failures(report: &Report) -> Vec<String> {
        report
            .failed
            .iter()
            .map(|f| format!("{}: {}", f.module, f.error))
            .collect()
    }

    /// Coldplug over the recorder's fake sysfs and modules directory.
    fn plug(
        index: &Index,
        rec: &mut Recorder,
        policy: &Policy,
        announced: &mut dyn FnMut() -> Option<BTreeSet<String>>,
        network_ready: &mut dyn FnMut(&[String]),
    ) -> Report {
        let (modules_dir, sys) = (rec.modules_dir.clone(), rec.sys.clone());
        coldplug_with(index, &modules_dir, &sys, rec, policy, announced, network_ready)
    }

    #[test]
    fn coldplug_loads_drivers_of_devices_that_appear() {
        let (_tmp, index, mut rec) = setup(&["virtio_blk"], &["cryptd"]);
        let report = plug(&index, &mut rec, &Policy::default(), &mut || None, &mut |_| {});
        let calls: Vec<&str> = rec.calls.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            calls,
            [
                "cryptd",
                "crypto_simd",
                "aesni_intel",
                "virtio_ring",
                "virtio",
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio_pci",
                "failover",
                "net_failover",
                "virtio_net",
                "virtio_blk",
            ]
        );
        assert_eq!(rec.calls[1].1, Path::new("kernel/crypto/crypto_simd.ko"));
        assert_eq!(
            names(&report.loaded),
            [
                "crypto_simd",
                "aesni_intel",
                "virtio_ring",
                "virtio",
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio_pci",
                "failover",
                "net_failover",
                "virtio_net",
            ]
        );
        let modules_dir = rec.modules_dir.display();
        assert_eq!(
            failures(&report),
            [
                "8250_ghost: not in modules.dep".to_owned(),
                format!("virtio_blk: finit_module({modules_dir}/kernel/drivers/block/virtio_blk.ko, \"\"): ENOEXEC: Exec format error"),
            ]
        );
        assert_eq!(report.passes, 3);
    }

    /// Passes after the first read the devices the kernel announced (the
    /// uevents queued meanwhile) instead of scanning sysfs again; lost
    /// events or no socket (`None`) mean a scan. The same modules load.
    #[test]
    fn later_passes_take_the_announced_devices_and_scan_only_without_them() {
        let virtio = || Some(BTreeSet::from(["virtio:d00000001v00001AF4".to_string(), "virtio:d00000002v00001AF4".to_string()]));
        let empty = || Some(BTreeSet::new());
        // What each call of `announced` returns, then sysfs scans, passes.
        type Case = (Vec<Option<BTreeSet<String>>>, u32, u32);
        let cases: [Case; 4] = [
            // Pass 1 scans (the queue's early events are covered by it),
            // pass 2 reads the two virtio devices, pass 3 an empty queue.
            (vec![empty(), virtio(), empty()], 1, 3),
            // Events lost after pass 1: pass 2 scans.
            (vec![empty(), None, empty()], 2, 3),
            // Pass 1 always scans, whatever the queue said.
            (vec![virtio(), virtio(), empty()], 1, 3),
            // No socket: every pass scans, as before.
            (vec![None, None, None], 3, 3),
        ];
        for (answers, scans, passes) in cases {
            let (_tmp, index, mut rec) = setup(&["virtio_blk"], &["cryptd"]);
            let mut answers = answers.into_iter();
            let report = plug(&index, &mut rec, &Policy::default(), &mut || answers.next().flatten(), &mut |_| {});
            let calls: Vec<&str> = rec.calls.iter().map(|(name, _)| name.as_str()).collect();
            assert_eq!(calls[calls.len() - 4..], ["failover", "net_failover", "virtio_net", "virtio_blk"], "{calls:?}");
            assert_eq!(names(&report.loaded).len(), 10, "{:?}", report.loaded);
            assert_eq!((report.scans, report.passes), (scans, passes), "{:?}", report.loaded);
        }
    }

    #[test]
    fn network_drivers_load_first_and_are_announced_before_the_rest_of_their_pass() {
        // Aliases swapped so the disk's device sorts first in pass 2: the
        // network driver must still load before it.
        let (_tmp, _, mut rec) = setup(&[], &[]);
        let alias = ALIAS
            .replace("d00000002v* virtio_blk", "d00000001v* virtio_blk")
            .replace("d00000001v* virtio_net", "d00000002v* virtio_net");
        let index = Index::parse(&alias, DEP, BUILTIN);
        let mut announced = Vec::new();
        let report = plug(&index, &mut rec, &Policy::default(), &mut || None, &mut |loaded| announced.push(loaded.to_vec()));
        assert_eq!(
            names(&report.loaded)[report.loaded.len() - 4..],
            ["failover", "net_failover", "virtio_net", "virtio_blk"]
        );
        assert_eq!(announced.len(), 1, "{announced:?}");
        assert_eq!(announced[0].last().map(String::as_str), Some("virtio_net"));
        assert!(!announced[0].contains(&"virtio_blk".to_owned()));

        // No network driver at all (built in, or no NIC): announced at the end.
        let (_tmp, index, mut rec) = setup(&[], &[]);
        let policy = args::parse("rd.driver.blacklist=virtio_net").unwrap();
        let mut announced = Vec::new();
        let report = plug(&index, &mut rec, &policy, &mut || None, &mut |loaded| announced.push(loaded.len()));
        assert_eq!(announced, [report.loaded.len()]);
    }

    #[test]
    fn coldplug_honours_blacklist_and_passes_params() {
        let (_tmp, index, mut rec) = setup(&[], &[]);
        let policy = args::parse(
            "rd.driver.blacklist=virtio-blk,virtio_ring modprobe.blacklist=aesni_intel virtio-net.napi_tx=0 virtio_net.csum=1 virtio_ring.x=\"a b\"",
        )
        .unwrap();
        let report = plug(&index, &mut rec, &policy, &mut || None, &mut |_| {});
        // aesni_intel and its own needs are skipped; virtio_ring is only
        // blacklisted, so it still loads as a dependency, like modprobe.
        let calls: Vec<&str> = rec.calls.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            calls,
            [
                "virtio_ring",
                "virtio",
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio_pci",
                "failover",
                "net_failover",
                "virtio_net",
            ]
        );
        assert_eq!(names(&report.blacklisted), ["aesni_intel", "virtio_blk"]);
        assert_eq!(
            rec.params,
            [
                ("virtio_ring".to_owned(), "x=\"a b\"".to_owned()),
                ("virtio_net".to_owned(), "napi_tx=0 csum=1".to_owned()),
            ]
        );
        let report = load_named_with(
            &index,
            &rec.modules_dir.clone(),
            &["virtio_blk", "overlay"],
            &mut rec,
            &policy,
        );
        assert_eq!(names(&report.loaded), ["overlay"]);
        assert_eq!(names(&report.blacklisted), ["virtio_blk"]);
    }

    #[test]
    fn load_named_skips_builtin_and_missing_and_stops_at_failed_dependency() {
        let (_tmp, index, mut rec) = setup(&["failover"], &[]);
        let names_wanted = [
            "overlay",
            "af_packet",
            "no_such_module",
            "virtio-net",
            "virtio_net",
        ];
        let report = load_named_with(
            &index,
            &rec.modules_dir.clone(),
            &names_wanted,
            &mut rec,
            &Policy::default(),
        );
        assert_eq!(names(&report.loaded), ["overlay", "virtio_ring", "virtio"]);
        let failed = failures(&report);
        assert!(
            failed[0].starts_with("failover: finit_module("),
            "{failed:?}"
        );
        assert_eq!(
            failed[1..],
            [
                "net_failover: needs failover, which did not load",
                "virtio_net: needs net_failover, which did not load"
            ]
        );
        assert_eq!(rec.calls.len(), 4, "{:?}", rec.calls);
    }

    #[test]
    fn missing_index_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = coldplug(tmp.path(), tmp.path(), &Policy::default(), &[], &mut || None, &mut |_| {}).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("read module index {}/modules.alias", tmp.path().display())
        );
    }

    #[test]
    fn report_line() {
        let report = Report {
            loaded: vec!["virtio_pci".into(), "virtio_net".into()],
            failed: vec![Failure {
                module: "x".into(),
                error: LoadError::NotFound,
            }],
            passes: 2,
            scans: 1,
            duration: Duration::from_millis(42),
            indexing: Duration::from_millis(3),
            scanning: Duration::from_millis(30),
            ..Report::default()
        };
        assert_eq!(
            report.to_string(),
            "loaded 2 modules (virtio_pci virtio_net), 1 failed [x: not in modules.dep], 2 passes, 42 ms (index 3 ms, 1 sysfs scans 30 ms)"
        );
    }
}
