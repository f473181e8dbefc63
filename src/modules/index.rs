//! The kernel's module index as written by `depmod`: `modules.alias`,
//! `modules.dep` and `modules.builtin` in `/lib/modules/$(uname -r)`.
//!
//! Parsing is pure and lenient: a malformed line is skipped, since one odd
//! entry must not keep the machine from finding its disk or network driver.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use super::fnmatch::fnmatch;

/// Suffixes a module file may carry; the compressed ones are passed to the
/// kernel as-is with `MODULE_INIT_COMPRESSED_FILE`.
const MODULE_SUFFIXES: &[&str] = &[".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

/// One `alias PATTERN MODULE` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub pattern: String,
    pub module: String,
}

/// One `path: dep dep` line of `modules.dep`, keyed by module name in [`Index`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepEntry {
    /// Path relative to the modules directory.
    pub path: PathBuf,
    /// Names of the modules this one needs, in depmod's order.
    pub deps: Vec<String>,
}

/// Everything coldplug needs to know about the modules on disk.
#[derive(Debug, Default)]
pub struct Index {
    pub aliases: Vec<Alias>,
    pub deps: HashMap<String, DepEntry>,
    pub builtin: HashSet<String>,
}

impl Index {
    pub fn parse(alias_text: &str, dep_text: &str, builtin_text: &str) -> Index {
        Index {
            aliases: parse_aliases(alias_text),
            deps: parse_deps(dep_text),
            builtin: parse_builtin(builtin_text),
        }
    }

    /// Module names whose alias pattern matches `modalias`, in file order,
    /// without duplicates.
    pub fn modules_for(&self, modalias: &str) -> Vec<&str> {
        let mut found: Vec<&str> = Vec::new();
        for alias in &self.aliases {
            if fnmatch(&alias.pattern, modalias) && !found.contains(&alias.module.as_str()) {
                found.push(&alias.module);
            }
        }
        found
    }

    /// Whether `module`'s file lies under `dir` of the modules directory
    /// (`kernel/drivers/net/` for network drivers).
    pub fn is_in(&self, module: &str, dir: &str) -> bool {
        self.deps.get(&normalize(module)).is_some_and(|entry| entry.path.starts_with(dir))
    }

    /// `name` and everything it depends on, dependencies first, so loading in
    /// this order never hits an unknown symbol. Names missing from
    /// `modules.dep` are kept (the caller reports them); cycles are cut.
    pub fn load_order(&self, name: &str) -> Vec<String> {
        let mut order = Vec::new();
        let mut visiting = HashSet::new();
        self.visit(&normalize(name), &mut visiting, &mut order);
        order
    }

    fn visit(&self, name: &str, visiting: &mut HashSet<String>, order: &mut Vec<String>) {
        if !visiting.insert(name.to_owned()) {
            return;
        }
        if let Some(entry) = self.deps.get(name) {
            // depmod lists a module's needs before their own needs; walking
            // from the back loads the deepest dependency first, like modprobe.
            for dep in entry.deps.iter().rev() {
                self.visit(dep, visiting, order);
            }
        }
        order.push(name.to_owned());
    }
}

/// Kernel module names treat `-` and `_` as the same character; the canonical
/// form (what `/sys/module` shows) uses `_`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a path like `kernel/drivers/net/virtio_net.ko.xz`.
pub fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = MODULE_SUFFIXES
        .iter()
        .find_map(|suffix| file.strip_suffix(suffix))?;
    (!stem.is_empty()).then(|| normalize(stem))
}

pub fn parse_aliases(text: &str) -> Vec<Alias> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next(), words.next()) {
                (Some("alias"), Some(pattern), Some(module), None) => Some(Alias {
                    pattern: pattern.to_owned(),
                    module: normalize(module),
                }),
                _ => None,
            }
        })
        .collect()
}

pub fn parse_deps(text: &str) -> HashMap<String, DepEntry> {
    text.lines()
        .filter_map(|line| {
            let (path, deps) = line.split_once(':')?;
            let path = path.trim();
            let name = module_name(path)?;
            let deps = deps.split_whitespace().filter_map(module_name).collect();
            Some((
                name,
                DepEntry {
                    path: PathBuf::from(path),
                    deps,
                },
            ))
        })
        .collect()
}

pub fn parse_builtin(text: &str) -> HashSet<String> {
    text.lines()
        .filter_map(|line| module_name(line.trim()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real lines from Debian's linux-image-6.1.0-56-cloud-amd64 after depmod.
    const ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias fs-overlay overlay
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000002v* virtio_blk
alias virtio:d00000001v* virtio_net
alias net-pf-16-proto-4-type-17 af_packet_diag
alias cpu:type:x86,ven0000fam0006mod0086:feature:* intel_uncore
alias cpu:type:x86,ven*fam*mod*:feature:*0099* aesni_intel
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
kernel/arch/x86/events/amd/amd-uncore.ko:
";
    const BUILTIN: &str = "\
kernel/arch/x86/crypto/libblake2s-x86_64.ko
kernel/fs/binfmt_script.ko
kernel/fs/ext4/ext4.ko
kernel/net/packet/af_packet.ko
";

    fn index() -> Index {
        Index::parse(ALIAS, DEP, BUILTIN)
    }

    fn check_name(path: &str, expected: Option<&str>) {
        assert_eq!(
            module_name(path).as_deref(),
            expected,
            "module_name({path:?})"
        );
    }

    #[test]
    fn module_names() {
        check_name("kernel/drivers/net/virtio_net.ko", Some("virtio_net"));
        check_name(
            "kernel/arch/x86/events/amd/amd-uncore.ko",
            Some("amd_uncore"),
        );
        check_name("kernel/drivers/net/virtio_net.ko.xz", Some("virtio_net"));
        check_name("kernel/drivers/net/virtio_net.ko.zst", Some("virtio_net"));
        check_name("virtio_net.ko", Some("virtio_net"));
        check_name("kernel/drivers/net/virtio_net", None);
        check_name("kernel/.ko", None);
        check_name("", None);
    }

    fn check_aliases(text: &str, expected: &[(&str, &str)]) {
        let aliases = parse_aliases(text);
        let got: Vec<(&str, &str)> = aliases
            .iter()
            .map(|a| (a.pattern.as_str(), a.module.as_str()))
            .collect();
        assert_eq!(got, expected, "parse_aliases({text:?})");
    }

    #[test]
    fn aliases() {
        check_aliases(
            "alias virtio:d00000001v* virtio_net\n",
            &[("virtio:d00000001v*", "virtio_net")],
        );
        check_aliases(
            "alias acpi*:PNP0A03:* some-mod",
            &[("acpi*:PNP0A03:*", "some_mod")],
        );
        check_aliases("# comment\n\nalias x\nalias a b c\nsoftdep x pre: y\n", &[]);
        check_aliases("alias\ta\tb\r\n", &[("a", "b")]);
        assert_eq!(parse_aliases(ALIAS).len(), 7);
    }

    fn check_deps(text: &str, name: &str, expected: Option<(&str, &[&str])>) {
        let deps = parse_deps(text);
        let got = deps.get(name).map(|e| {
            (
                e.path.to_str().unwrap_or("?"),
                e.deps.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        });
        let expected = expected.map(|(p, d)| (p, d.to_vec()));
        assert_eq!(got, expected, "parse_deps(..)[{name:?}]");
    }

    #[test]
    fn deps() {
        check_deps(
            DEP,
            "overlay",
            Some(("kernel/fs/overlayfs/overlay.ko", &[])),
        );
        check_deps(
            DEP,
            "virtio_net",
            Some((
                "kernel/drivers/net/virtio_net.ko",
                &["net_failover", "failover", "virtio", "virtio_ring"],
            )),
        );
        check_deps(
            DEP,
            "amd_uncore",
            Some(("kernel/arch/x86/events/amd/amd-uncore.ko", &[])),
        );
        check_deps("garbage line\nno_colon.ko\n: a.ko\n", "no_colon", None);
        check_deps(
            "a.ko.zst: b.ko.zst  c-d.ko.zst\n",
            "a",
            Some(("a.ko.zst", &["b", "c_d"])),
        );
    }

    #[test]
    fn builtin() {
        let builtin = parse_builtin(BUILTIN);
        assert!(builtin.contains("af_packet"));
        assert!(builtin.contains("libblake2s_x86_64"));
        assert!(!builtin.contains("virtio_net"));
    }

    fn check_match(modalias: &str, expected: &[&str]) {
        assert_eq!(
            index().modules_for(modalias),
            expected,
            "modules_for({modalias:?})"
        );
    }

    #[test]
    fn matching() {
        check_match(
            "pci:v00001AF4d00001041sv00001AF4sd00001041bc02sc00i00",
            &["virtio_pci"],
        );
        check_match("virtio:d00000001v00001AF4", &["virtio_net"]);
        check_match("virtio:d00000002v00001AF4", &["virtio_blk"]);
        check_match("pci:v00008086d00000D57sv00000000sd00000000bc06sc00i00", &[]);
        check_match(
            "cpu:type:x86,ven0000fam0006mod0086:feature:,0000,0099",
            &["intel_uncore", "aesni_intel"],
        );
    }

    fn check_order(name: &str, expected: &[&str]) {
        assert_eq!(index().load_order(name), expected, "load_order({name:?})");
    }

    #[test]
    fn order() {
        check_order("overlay", &["overlay"]);
        check_order(
            "virtio_pci",
            &[
                "virtio_ring",
                "virtio",
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio_pci",
            ],
        );
        check_order(
            "virtio-net",
            &[
                "virtio_ring",
                "virtio",
                "failover",
                "net_failover",
                "virtio_net",
            ],
        );
        check_order("not_there", &["not_there"]);
        let cyclic = Index::parse("", "a.ko: b.ko\nb.ko: a.ko\n", "");
        assert_eq!(cyclic.load_order("a"), ["b", "a"]);
    }
}
