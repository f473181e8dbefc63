//! The host command line, run as a user would: exit codes and messages.

// An integration test file is a test crate of its own: no test module needed.
#![allow(clippy::tests_outside_test_module)]

use std::process::Command;

fn iguana(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_iguana")).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn validate_accepts_upstream_files_and_locates_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(&dir, "bad.yaml", "jobs:\n  a:\n    container: {image: r/a}\n    needz: b\n");
    let cases: &[(&[&str], i32, &str)] = &[
        (&["validate", "examples/agama.yaml", "examples/control.yaml"], 0, "examples/control.yaml: ok (2 jobs)"),
        (&["validate", &bad], 1, "unknown field `needz`, expected one of `container`, `services`, `needs`, `continue_on_error`, `steps`, `timeout` at line 4 column 5"),
        (&["validate", "/nonexistent.yaml"], 1, "/nonexistent.yaml: No such file or directory"),
        (&["validate"], 1, "usage: iguana validate [--key KEY.pub]... FILE..."),
    ];
    for (args, code, text) in cases {
        let (got_code, got) = iguana(args);
        assert_eq!(got_code, *code, "{args:?}: {got}");
        assert!(got.contains(text), "{args:?}: {got}");
    }
}

/// A job id, service id or volume name of `.`/`..` (or hidden) would become a
/// path under /run/iguana: `validate` refuses it with the key.
#[test]
fn validate_refuses_dot_names() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("job.yaml", "jobs:\n  \"..\":\n    container: {image: r/a}\n", "jobs...: job id \"..\" must be 1-128 characters"),
        ("svc.yaml", "jobs:\n  a:\n    container: {image: r/a}\n    services: {.s: {image: r/s}}\n", "jobs.a.services..s: service id \".s\""),
        ("vol.yaml", "jobs:\n  a:\n    container: {image: r/a, volumes: [\"..:/data\"]}\n", "jobs.a.container.volumes[0]: \"..:/data\": volume name \"..\""),
    ];
    for (file, yaml, message) in cases {
        let path = write(&dir, file, yaml);
        let (code, out) = iguana(&["validate", &path]);
        assert_eq!(code, 1, "{file}: {out}");
        assert!(out.contains(message), "{file}: {out}");
    }
}

#[test]
fn dry_run_prints_the_plan() {
    let (code, out) = iguana(&["run", "--dry-run", "--newroot", "/mnt/new", "examples/control.yaml"]);
    assert_eq!(code, 0, "{out}");
    for line in [
        "job dinstaller:",
        "  env: GLOBAL=test_global_env TEST=test_env iguana=true",
        "  service backend (background, stopped after the job):",
        "  needs: dinstaller (skipped unless all succeed)",
        "new root: /mnt/new (where the handover mounts the installed system)",
    ] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in:\n{out}");
    }
}

#[test]
fn cmdline_shows_how_arguments_are_understood() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(&dir, "good", "console=ttyS0 rd.iguana.containers=r/a,r/b rd.iguana.debug\n");
    let bad = write(&dir, "bad", "rd.iguana.containers=,,\n");
    let (code, out) = iguana(&["cmdline", "--file", &good]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("containers:          r/a, r/b") && out.contains("debug:               true"), "{out}");
    let (code, out) = iguana(&["cmdline", "--file", &bad]);
    assert_eq!(code, 1);
    assert!(out.contains("rd.iguana.containers: item 1 is empty in \",,\""), "{out}");
}

/// Secrets in URLs (userinfo, query) never reach the output: not from
/// `iguana cmdline`, not from a failing `iguana fetch` (its message is what
/// PID 1 logs), whether the secret is in the control_url or the proxy.
#[test]
fn url_secrets_never_reach_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let line = write(
        &dir,
        "cmdline",
        "rd.iguana.control_url=https://alice:hunter2@boot.lan/w.yaml?token=s3cr3t rd.iguana.proxy=http://bob:pr0xyPW@proxy.lan:3128\n",
    );
    let (code, out) = iguana(&["cmdline", "--file", &line]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("control_url:         https://***@boot.lan/w.yaml?***"), "{out}");
    assert!(out.contains("proxy:               http://***@proxy.lan:3128"), "{out}");
    let bad = write(&dir, "bad", "rd.iguana.proxy=http://bob:pr0xyPW@proxy.lan:99999\n");
    let (code, out) = iguana(&["cmdline", "--file", &bad]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("http://***@proxy.lan:99999"), "{out}");
    assert!(!out.contains("pr0xyPW"), "{out}");

    // Nothing listens on a port just closed: the fetch fails, with messages.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://alice:hunter2@127.0.0.1:{closed}/w.yaml?token=s3cr3t#frag");
    let out_file = dir.path().join("w.yaml");
    let (code, out) = iguana(&["fetch", &url, "--out", out_file.to_str().unwrap(), "--tries", "2"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("http://***@127.0.0.1:{closed}/w.yaml?***")), "{out}");
    for secret in ["hunter2", "s3cr3t", "frag"] {
        assert!(!out.contains(secret), "{secret} in: {out}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iguana"))
        .args(["fetch", &format!("http://127.0.0.1:{closed}/w.yaml"), "--out", out_file.to_str().unwrap(), "--tries", "1"])
        .env("IGUANA_PROXY_FILE", {
            let file = dir.path().join("proxy");
            std::fs::write(&file, format!("http://bob:pr0xyPW@127.0.0.1:{closed}\n\n")).unwrap();
            file
        })
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(!text.contains("pr0xyPW"), "{text}");
}

#[test]
fn unknown_command_is_named() {
    let (code, out) = iguana(&["frobnicate"]);
    assert_eq!(code, 1);
    assert!(out.contains("unknown command \"frobnicate\" (see iguana --help)"), "{out}");
}

/// A cpio to append, as a site would make it: two trees, one with a
/// symlink where its trust keys would be. No root needed (no image).
#[test]
fn inspect_lists_the_extensions_of_an_appended_cpio() {
    let dir = tempfile::tempdir().unwrap();
    let os_release = write(&dir, "os-release", "ID=iguana\nIGUANA_LEVEL=1\n");
    let trust = dir.path().join("trust");
    std::fs::create_dir(&trust).unwrap();
    let mut bytes = Vec::new();
    for (name, mode, data) in [
        ("extensions", 0o40755, &b""[..]),
        ("extensions/site/usr/lib/extension-release.d/extension-release.site", 0o100644, b"ID=iguana\nIGUANA_LEVEL=1\n"),
        ("extensions/site/etc/iguana/control.yaml", 0o100644, b"jobs: {}\n"),
        ("extensions/keys/etc/extension-release.d/extension-release.keys", 0o100644, b"ID=_any\n"),
        ("extensions/keys/etc/iguana", 0o120777, b"/run/elsewhere"),
        ("extensions/../../escape", 0o100644, b"x"),
        ("init", 0o100755, b"not an extension"),
        ("TRAILER!!!", 0, b""),
    ] {
        bytes.extend(testkit::newc::entry(name, mode, data));
    }
    let cpio = dir.path().join("site.cpio");
    std::fs::write(&cpio, &bytes).unwrap();
    let (code, out) = iguana(&["extension", "inspect", cpio.to_str().unwrap(), "--os-release", &os_release, "--trust", trust.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let want = format!(
        "cpio: {} (7 entries, 2 extensions)\n\n\
         extension: /extensions/keys\nname: keys\nformat: directory\nrelease: ID=_any\nfits: yes\n\
         etc: etc/extension-release.d/extension-release.keys\nsymlink: etc/iguana -> /run/elsewhere\n\
         verified: no trust keys in {}\n\
         boot: refused: it carries etc/iguana/trust but is not itself verified by a trusted key\n\n\
         extension: /extensions/site\nname: site\nformat: directory\nrelease: ID=iguana\nrelease: IGUANA_LEVEL=1\nfits: yes\n\
         etc: etc/iguana/control.yaml\nfile: usr/lib/extension-release.d/extension-release.site\n\
         verified: no trust keys in {}\nboot: admitted\n",
        cpio.display(),
        trust.display(),
        trust.display()
    );
    assert_eq!(out, want);
    assert!(!dir.path().join("escape").exists());
    // Compressed, as a whole initrd is: said plainly.
    std::fs::write(&cpio, [0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]).unwrap();
    let (code, out) = iguana(&["extension", "inspect", cpio.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(out.contains("not a newc cpio header (compressed?"), "{out}");
}

/// A cpio whose later entries run through a symlink an earlier one made
/// must not touch anything outside inspect's own directory (it runs as
/// root): here a file beside the test's temp dir stays as it was.
#[test]
fn inspect_of_a_cpio_never_writes_through_its_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "keep me").unwrap();
    let mut bytes = Vec::new();
    for (name, mode, data) in [
        ("extensions", 0o40755, &b""[..]),
        ("extensions/a", 0o120777, outside.path().to_str().unwrap().as_bytes()),
        ("extensions/a/victim", 0o120777, b"replaced"),
        ("TRAILER!!!", 0, b""),
    ] {
        bytes.extend(testkit::newc::entry(name, mode, data));
    }
    let cpio = dir.path().join("evil.cpio");
    std::fs::write(&cpio, &bytes).unwrap();
    let (_code, out) = iguana(&["extension", "inspect", cpio.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&victim).ok().as_deref(), Some("keep me"), "{out}");
    assert!(std::fs::symlink_metadata(&victim).is_ok_and(|m| m.is_file()), "{out}");
}

/// inspect's working directory is its own: one that is already there (made
/// by someone else) is not used, and not removed.
#[test]
fn inspect_of_a_cpio_does_not_use_or_remove_a_directory_it_did_not_make() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let mut bytes = Vec::new();
    for (name, mode, data) in [("extensions", 0o40755, &b""[..]), ("TRAILER!!!", 0, b"")] {
        bytes.extend(testkit::newc::entry(name, mode, data));
    }
    let cpio = dir.path().join("x.cpio");
    std::fs::write(&cpio, &bytes).unwrap();
    // The name inspect would pick for the child below: every pid from here on.
    let first = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid").ok().and_then(|s| s.trim().parse::<u32>().ok());
    let Some(first) = first else { return eprintln!("SKIP: /proc/sys/kernel/ns_last_pid unreadable") };
    for pid in first + 1..first + 200 {
        let d = tmp.join(format!("iguana-inspect-cpio-{pid}"));
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("someone-elses"), "x").unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_iguana")).args(["extension", "inspect", cpio.to_str().unwrap()]).env("TMPDIR", &tmp).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    for pid in first + 1..first + 200 {
        assert!(tmp.join(format!("iguana-inspect-cpio-{pid}/someone-elses")).exists(), "removed {pid}: {text}");
    }
}

fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A `NAME.raw` at `.extra/sysext/` of a cpio, signed by openssl: mounted
/// through a loop device (root), listed, verified with --trust.
#[test]
fn inspect_mounts_and_verifies_an_image_in_a_cpio() {
    let root = nix::unistd::geteuid().is_root();
    let mkfs = Command::new("mkfs.erofs").arg("--help").output().is_ok();
    if !root || !mkfs || !std::path::Path::new("/dev/loop-control").exists() {
        eprintln!("skipped: needs root, mkfs.erofs and loop devices (root={root}, mkfs.erofs={mkfs})");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("usr/lib/extension-release.d")).unwrap();
    std::fs::create_dir_all(tree.join("usr/lib/firmware")).unwrap();
    std::fs::write(tree.join("usr/lib/extension-release.d/extension-release.fw"), "ID=iguana\nIGUANA_LEVEL=1\n").unwrap();
    std::fs::write(tree.join("usr/lib/firmware/x.bin"), "fw").unwrap();
    let image = dir.path().join("fw.raw");
    run_ok(Command::new("mkfs.erofs").args(["--quiet", "--all-root", "-T0"]).arg(&image).arg(&tree));
    let trust = dir.path().join("trust");
    std::fs::create_dir(&trust).unwrap();
    let key = dir.path().join("site.key");
    run_ok(Command::new("openssl").args(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out"]).arg(&key));
    run_ok(Command::new("openssl").args(["ec", "-pubout", "-in"]).arg(&key).arg("-out").arg(trust.join("site.pub")));
    let der = run_ok(Command::new("openssl").args(["dgst", "-sha256", "-sign"]).arg(&key).arg(&image));
    let sig = dir.path().join("fw.raw.sig");
    std::fs::write(&sig, base64(&der)).unwrap();
    let mut bytes = Vec::new();
    for (name, mode, data) in [
        (".extra", 0o40755, Vec::new()),
        (".extra/sysext", 0o40755, Vec::new()),
        (".extra/sysext/fw.raw", 0o100644, std::fs::read(&image).unwrap()),
        (".extra/sysext/fw.raw.sig", 0o100644, std::fs::read(&sig).unwrap()),
        ("TRAILER!!!", 0, Vec::new()),
    ] {
        bytes.extend(testkit::newc::entry(name, mode, &data));
    }
    let cpio = dir.path().join("fw.cpio");
    std::fs::write(&cpio, &bytes).unwrap();
    let os_release = write(&dir, "os-release", "ID=iguana\nIGUANA_LEVEL=1\n");
    let (code, out) = iguana(&["extension", "inspect", cpio.to_str().unwrap(), "--os-release", &os_release, "--trust", trust.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let want = format!(
        "cpio: {} (4 entries, 1 extensions)\n\n\
         extension: /.extra/sysext/fw.raw\nname: fw\nformat: erofs\nrelease: ID=iguana\nrelease: IGUANA_LEVEL=1\nfits: yes\n\
         file: usr/lib/extension-release.d/extension-release.fw\nfirmware: usr/lib/firmware/x.bin\n\
         verified: yes, by site.pub\nboot: admitted\n",
        cpio.display()
    );
    assert_eq!(out, want);
    // Another key: the same image does not verify.
    std::fs::remove_file(trust.join("site.pub")).unwrap();
    run_ok(Command::new("openssl").args(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out"]).arg(&key));
    run_ok(Command::new("openssl").args(["ec", "-pubout", "-in"]).arg(&key).arg("-out").arg(trust.join("other.pub")));
    let (code, out) = iguana(&["extension", "inspect", cpio.to_str().unwrap(), "--os-release", &os_release, "--trust", trust.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verified: no: "), "{out}");
}

fn base64(bytes: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["base64", "-A"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), bytes).unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
}
