//! The OCI runtime spec of a job's container: pure, so every field is
//! unit-tested without a container.

use serde_json::{json, Value};

use super::{Error, Job};

/// Every capability the kernel knows of (up to Linux 6.x), all granted.
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment: image env, then the job's, then `iguana=true`; a later
/// `KEY=` replaces an earlier one in place.
pub fn merge_env(layers: &[&[String]]) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let mut set = |entry: &str| {
        let key = entry.split_once('=').map_or(entry, |(k, _)| k);
        match env.iter_mut().find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key) {
            Some(existing) => *existing = entry.to_string(),
            None => env.push(entry.to_string()),
        }
    };
    set(DEFAULT_PATH);
    for layer in layers {
        for entry in layer.iter() {
            set(entry);
        }
    }
    set("iguana=true");
    env
}

/// Parses the image's `User`: numeric `uid[:gid]`, or root by name.
fn user(job: &Job) -> Result<(u32, u32), Error> {
    let raw = job.image.user.as_deref().unwrap_or("").trim();
    let err = || Error::User { job: job.name.clone(), user: raw.to_string() };
    if raw.is_empty() || raw == "root" || raw == "root:root" {
        return Ok((0, 0));
    }
    let (u, g) = raw.split_once(':').unwrap_or((raw, ""));
    let uid = u.parse::<u32>().map_err(|_| err())?;
    let gid = if g.is_empty() { uid } else { g.parse::<u32>().map_err(|_| err())? };
    Ok((uid, gid))
}

/// iguana keeps for itself the larger of an eighth of the machine's memory
/// and this much; every container may use the rest.
pub const MEMORY_RESERVE_MIN: u64 = 32 * 1024 * 1024;
/// Likewise for tasks (processes and threads, bounded by the lower of
/// kernel.pid_max and kernel.threads-max): an eighth, at least this many.
pub const TASKS_RESERVE_MIN: u64 = 128;

/// The cgroup limits of every container (`pids.max`, `memory.max`), so that
/// a fork bomb or a memory hog hits its own limit while PID 1 can still
/// fork its helpers, log and reboot. `None`: no such controller, no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory: Option<u64>,
    pub pids: Option<u64>,
}

impl Limits {
    /// The limits on a machine with `mem_total` bytes of memory and room
    /// for `tasks` tasks: all but iguana's reserve, and never less than half.
    pub fn leaving_reserve(mem_total: Option<u64>, tasks: Option<u64>) -> Limits {
        let rest = |total: u64, floor: u64| total - (total / 8).max(floor).min(total / 2);
        Limits {
            memory: mem_total.map(|total| rest(total, MEMORY_RESERVE_MIN)),
            pids: tasks.map(|total| rest(total, TASKS_RESERVE_MIN)),
        }
    }
}

/// `MemTotal` of a /proc/meminfo text, in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kib = line.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
    kib.checked_mul(1024)
}

/// The OCI runtime spec of a job's container.
pub fn spec(job: &Job, limits: &Limits) -> Result<Value, Error> {
    let args: Vec<String> = job.image.entrypoint.iter().chain(&job.image.cmd).cloned().collect();
    if args.is_empty() {
        return Err(Error::NoCommand { job: job.name.clone() });
    }
    let (uid, gid) = user(job)?;
    let cwd = job.image.working_dir.clone().filter(|d| d.starts_with('/')).unwrap_or_else(|| "/".into());
    let env = merge_env(&[&job.image.env, &job.env]);
    let mut s = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": uid, "gid": gid },
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": CAPABILITIES, "effective": CAPABILITIES, "permitted": CAPABILITIES,
                "inheritable": CAPABILITIES, "ambient": CAPABILITIES,
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1048576u64, "soft": 1048576u64 }],
            "noNewPrivileges": false,
        },
        "root": { "path": job.rootfs, "readonly": false },
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"] },
            // libcontainer populates a tmpfs /dev; `HostDev` then mounts the
            // host's devtmpfs over it just before exec (see there).
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "rw"] },
            { "destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755"] },
            { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"] },
            { "destination": "/iguana", "type": "bind", "source": "/iguana", "options": ["rbind", "rw", "rshared"] },
            { "destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf", "options": ["bind", "ro"] },
            { "destination": "/etc/hosts", "type": "bind", "source": "/etc/hosts", "options": ["bind", "ro"] },
        ],
        "linux": {
            // No network (host network) and no UTS namespace (host name).
            "namespaces": [{ "type": "pid" }, { "type": "mount" }, { "type": "ipc" }],
            "cgroupsPath": format!("/iguana/{}", job.name),
            "resources": { "devices": [{ "allow": true, "access": "rwm" }] },
            "rootfsPropagation": "slave",
        },
    });
    if let Some(resources) = s["linux"]["resources"].as_object_mut() {
        if let Some(bytes) = limits.memory {
            resources.insert("memory".into(), json!({ "limit": bytes }));
        }
        if let Some(tasks) = limits.pids {
            resources.insert("pids".into(), json!({ "limit": tasks }));
        }
    }
    if let Some(mounts) = s["mounts"].as_array_mut() {
        for bind in &job.mounts {
            let mode = if bind.read_only { "ro" } else { "rw" };
            mounts.push(json!({ "destination": bind.target, "type": "bind", "source": bind.source, "options": ["rbind", mode] }));
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::{Bind, ImageConfig};
    use std::path::Path;

    fn job(image: ImageConfig) -> Job {
        Job {
            name: "a".into(),
            image,
            env: vec!["FROM_JOB=1".into()],
            rootfs: "/run/iguana/a/rootfs".into(),
            mounts: vec![Bind { source: "/run/iguana/volumes/data".into(), target: "/data".into(), read_only: true }],
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn env_merges_in_order_and_sets_iguana() {
        let cases: &[(&[&str], &[&str], &[&str])] = &[
            (&[], &[], &[DEFAULT_PATH, "iguana=true"]),
            (&["PATH=/x", "A=1"], &["A=2", "B"], &["PATH=/x", "A=2", "B", "iguana=true"]),
            (&["iguana=false"], &[], &[DEFAULT_PATH, "iguana=true"]),
        ];
        for (image, job, want) in cases {
            assert_eq!(merge_env(&[&strings(image), &strings(job)]), strings(want));
        }
    }

    #[test]
    fn spec_is_privileged_with_host_network() {
        let image = ImageConfig { entrypoint: strings(&["/bin/sh"]), cmd: strings(&["/run.sh"]), ..Default::default() };
        let s = spec(&job(image), &Limits::default()).unwrap();
        assert_eq!(s["process"]["args"], json!(["/bin/sh", "/run.sh"]));
        assert_eq!(s["process"]["cwd"], "/");
        assert_eq!(s["process"]["capabilities"]["bounding"].as_array().unwrap().len(), CAPABILITIES.len());
        let namespaces: Vec<&str> =
            s["linux"]["namespaces"].as_array().unwrap().iter().map(|n| n["type"].as_str().unwrap()).collect();
        assert!(!namespaces.contains(&"network"), "host network: {namespaces:?}");
        let iguana = s["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/iguana").unwrap();
        assert_eq!(iguana["options"], json!(["rbind", "rw", "rshared"]));
        assert!(s["process"]["env"].as_array().unwrap().contains(&json!("iguana=true")));
        let data = s["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/data").unwrap();
        assert_eq!(data["source"], "/run/iguana/volumes/data");
        assert_eq!(data["options"], json!(["rbind", "ro"]));
        // libcontainer accepts it.
        let parsed: oci_spec::runtime::Spec = serde_json::from_value(s).unwrap();
        assert_eq!(parsed.root().as_ref().unwrap().path(), Path::new("/run/iguana/a/rootfs"));
    }

    #[test]
    fn spec_errors_name_the_job() {
        let cases: &[(ImageConfig, &str)] = &[
            (ImageConfig::default(), "job a: the image has no command (no Entrypoint or Cmd)"),
            (
                ImageConfig { cmd: strings(&["x"]), user: Some("nobody".into()), ..Default::default() },
                "job a: user \"nobody\" is not numeric uid[:gid]",
            ),
        ];
        for (image, message) in cases {
            assert_eq!(spec(&job(image.clone()), &Limits::default()).unwrap_err().to_string(), *message);
        }
    }

    #[test]
    fn users_parse() {
        let cases: &[(Option<&str>, (u32, u32))] =
            &[(None, (0, 0)), (Some("root"), (0, 0)), (Some("1000"), (1000, 1000)), (Some("1:2"), (1, 2))];
        for (raw, want) in cases {
            let j = job(ImageConfig { user: raw.map(str::to_string), ..Default::default() });
            assert_eq!(user(&j).unwrap(), *want);
        }
    }

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn limits_leave_a_reserve() {
        let cases: &[(Option<u64>, Option<u64>, Limits)] = &[
            // A server: an eighth is kept.
            (Some(4096 * MIB), Some(32768), Limits { memory: Some(3584 * MIB), pids: Some(28672) }),
            // The e2e VM: the floors are kept.
            (Some(192 * MIB), Some(1000), Limits { memory: Some(160 * MIB), pids: Some(872) }),
            // Tiny: never less than half.
            (Some(48 * MIB), Some(100), Limits { memory: Some(24 * MIB), pids: Some(50) }),
            (None, None, Limits { memory: None, pids: None }),
        ];
        for (mem, tasks, want) in cases {
            assert_eq!(Limits::leaving_reserve(*mem, *tasks), *want, "{mem:?} {tasks:?}");
        }
    }

    #[test]
    fn meminfo_total() {
        let cases: &[(&str, Option<u64>)] = &[
            ("MemTotal:        8037564 kB\nMemFree:         1209604 kB\n", Some(8_037_564 * 1024)),
            ("MemFree: 1 kB\nMemTotal: 2 kB\n", Some(2048)),
            ("MemTotal: lots\n", None),
            ("MemTotal: 5 MB\n", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(mem_total(text), *want, "{text:?}");
        }
    }

    #[test]
    fn spec_carries_the_limits() {
        let image = ImageConfig { cmd: strings(&["x"]), ..Default::default() };
        let limits = Limits { memory: Some(160 * MIB), pids: Some(872) };
        let s = spec(&job(image.clone()), &limits).unwrap();
        assert_eq!(s["linux"]["resources"]["memory"], json!({ "limit": 160 * MIB }));
        assert_eq!(s["linux"]["resources"]["pids"], json!({ "limit": 872 }));
        // As libcontainer reads them.
        let parsed: oci_spec::runtime::Spec = serde_json::from_value(s).unwrap();
        let resources = parsed.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert_eq!(resources.memory().as_ref().unwrap().limit(), Some(160 * MIB as i64));
        assert_eq!(resources.pids().as_ref().unwrap().limit(), 872);
        // Without a controller, no limit.
        let s = spec(&job(image), &Limits::default()).unwrap();
        assert!(s["linux"]["resources"].get("memory").is_none() && s["linux"]["resources"].get("pids").is_none());
    }
}
