//! A fuzz smoke test that runs in every `cargo test`: thousands of
//! deterministic mutations of real inputs (upstream workflow files, whole
//! kernel command lines, mountlists) through every parser of untrusted
//! input. Each must return a value or an error, never panic. The libFuzzer
//! targets in `fuzz/` explore further (`cargo fuzz run workflow`).

use iguana::{cmdline, handover::mountlist, workflow::schema};

/// xorshift64*: a fixed seed, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that matter to the parsers.
const INTERESTING: &[u8] = b" \t\n\r\"'=,:/#-[]{}&*!|>%@\\.\x00\xff";

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(data.len() + 1);
        match rng.below(5) {
            0 if !data.is_empty() => {
                let end = (at + rng.below(16)).min(data.len());
                data.drain(at.min(end)..end);
            }
            1 => data.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            2 => data.insert(at, rng.next() as u8),
            3 if !data.is_empty() => {
                // Duplicate a slice: repeats keys, nests deeper.
                let start = rng.below(data.len());
                let end = (start + rng.below(64)).min(data.len());
                let piece = data[start..end].to_vec();
                data.splice(at..at, piece);
            }
            _ if !data.is_empty() => {
                let i = at.min(data.len() - 1);
                data[i] ^= 1 << rng.below(8);
            }
            _ => {}
        }
    }
    data
}

fn seeds(files: &[&str], extra: &[&str]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    out.extend(extra.iter().map(|s| s.as_bytes().to_vec()));
    out
}

fn run(name: &str, seeds: &[Vec<u8>], rounds: usize, parse: impl Fn(&[u8])) {
    let mut rng = Rng(0x1234_5678_9abc_def0 ^ name.len() as u64);
    for round in 0..rounds {
        let seed = &seeds[round % seeds.len()];
        let input = mutate(&mut rng, seed);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(&input)));
        assert!(result.is_ok(), "{name}: panicked on input {:?}", String::from_utf8_lossy(&input));
    }
}

#[test]
fn workflow_parser_never_panics() {
    let seeds = seeds(&["examples/agama.yaml", "examples/control.yaml", "examples/partitioner.yaml"], &[]);
    run("workflow", &seeds, 20_000, |data| {
        let _ = schema::parse(data);
    });
}

#[test]
fn cmdline_parser_never_panics() {
    let lines = [
        "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet console=ttyS0,115200",
        "console=ttyS0 rd.iguana.containers=10.0.2.2:5000/a,10.0.2.2:5000/b rd.iguana.insecure_registries=10.0.2.2:5000",
        r#"rd.iguana.control_url="https://example.org/w.yaml" rd.iguana.debug rd.iguana.net_timeout=5s"#,
        "ip=192.168.1.10::192.168.1.1:255.255.255.0:node1:eth0:none:192.168.1.2 ip=[2001:db8::2]::[2001:db8::1]:64::eth0:none vlan=eth0.5:eth0 bond=bond0:eth0,eth1:mode=802.3ad rd.route=10.1.0.0/16:10.0.0.1:eth0 ifname=lan0:52:54:00:12:34:56",
        r#"rd.driver.blacklist=virtio_blk,nouveau modprobe.blacklist=e1000e virtio-net.napi_tx=0 dummy.names="a b" e1000e.debug"#,
    ];
    run("cmdline", &seeds(&[], &lines), 20_000, |data| {
        let text = String::from_utf8_lossy(data);
        let _ = cmdline::parse(&text);
        let _ = cmdline::failsafe(&text);
        let _ = iguana::net::args::parse(&text);
        let _ = iguana::modules::args::parse(&text);
    });
}

#[test]
fn sntp_reply_parser_never_panics() {
    let nonce = [7u8; 8];
    let mut good = vec![0x24, 2, 6, 0xec];
    good.resize(48, 0);
    good[12..16].copy_from_slice(b"GPS\0");
    good[24..32].copy_from_slice(&nonce);
    good[40..44].copy_from_slice(&0xed00_0000u32.to_be_bytes());
    let mut kod = good.clone();
    kod[1] = 0;
    run("sntp", &[good, kod], 20_000, |data| {
        let _ = iguana::clock::parse_reply(data, nonce);
    });
    for item in ["[::1]:123", "ntp.example:1", "a:b:c", "[", "]:1"] {
        let _ = iguana::clock::parse_server(item);
    }
}

#[test]
fn mountlist_parser_never_panics() {
    let lists = ["LABEL=root / noatime\ntmpfs /mnt/scratch size=8m\n# comment\n\nUUID=1234 /boot ro,fstype=vfat\n"];
    run("mountlist", &seeds(&[], &lists), 20_000, |data| {
        let _ = mountlist::parse(&String::from_utf8_lossy(data));
    });
}

#[test]
fn uevent_parser_never_panics() {
    let messages = [
        "add@/devices/pci0000:00/0000:00:05.0/virtio3\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:05.0/virtio3\0SUBSYSTEM=virtio\0MODALIAS=virtio:d00000008v00001AF4\0SEQNUM=1234\0",
        "bind@/devices/virtual/x\0ACTION=bind\0DEVPATH=/devices/virtual/x\0DRIVER=y\0",
    ];
    run("uevent", &seeds(&[], &messages), 20_000, |data| {
        if let Ok(event) = iguana::modules::uevent::parse(data) {
            let _ = event.wants_driver();
        }
    });
}

#[test]
fn pstore_and_report_parsers_never_panic() {
    let dumps = [
        "Shutdown#1 Part1\n<7>[   30.1] iguana-failure: begin\n<7>[   30.2] iguana-failure: step: job nope\n<7>[   30.3] iguana-failure: error: é boom\n<7>[   30.4] iguana-failure: end\n",
        "<6>[ 1.0] iguana: x\niguana-failure: begin\niguana-failure:",
    ];
    run("pstore", &seeds(&[], &dumps), 20_000, |data| {
        let text = String::from_utf8_lossy(data);
        let _ = iguana::report::pstore::parse(&text);
        let _ = iguana::report::redact_cmdline(&text);
        let _ = iguana::report::machine::mem_total(&text);
        let _ = iguana::report::pstore::summary("job é", &text, Some(&text), &text);
    });
}

#[test]
fn signature_parsers_never_panic() {
    use iguana::trust::image::{check, check_statement, Candidate};
    use iguana::trust::{bundle, simple, Keys};
    let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let files = [
        "src/trust/fixtures/cosign-oci-attestation.sigstore.json",
        "fuzz/corpus/signature/simple-signing.json",
        "fuzz/corpus/signature/statement.json",
    ];
    let keys = Keys::default();
    run("signature", &seeds(&files, &[]), 20_000, |data| {
        let _ = bundle::parse(data);
        let _ = simple::check(data, d);
        let _ = check_statement(data, d);
        // Without a trusted key nothing is ever accepted.
        assert!(check(&keys, d, &Candidate::Bundle(data.to_vec())).is_err());
    });
}

#[test]
fn cpio_and_modinfo_parsers_never_panic() {
    use iguana::extension::{modinfo, newc};
    let mut archive = testkit::newc::entry("extensions/site/etc/a", 0o100644, b"hello");
    archive.extend(testkit::newc::entry("extensions/l", 0o120777, b"/etc"));
    archive.extend(testkit::newc::entry("TRAILER!!!", 0, b""));
    run("newc", &[archive], 20_000, |data| {
        if let Ok(entries) = newc::parse(data, 1000) {
            assert!(entries.len() <= 1000);
            assert!(entries.iter().all(|e| e.data.len() <= data.len()));
        }
    });
    let mut seeds = Vec::new();
    let kernel = std::path::Path::new("target/iguana-kernel/root/lib/modules");
    if let Some(release) = std::fs::read_dir(kernel).ok().and_then(|mut d| d.next()).and_then(|e| e.ok()) {
        // A small real module; the mutations mostly hit its headers.
        if let Ok(bytes) = std::fs::read(release.path().join("kernel/drivers/virtio/virtio_rng.ko")) {
            seeds.push(bytes);
        }
    }
    seeds.push(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec());
    run("modinfo", &seeds, 2_000, |data| {
        let _ = modinfo::vermagic(data);
    });
}
