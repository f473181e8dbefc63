//! Status events: what happened on this machine, sent to the operator's
//! CloudEvents sink (`rd.iguana.report_url=`, or `report:` in the workflow).
//!
//! PID 1 builds each event here (pure: data in, JSON out) and hands it to
//! the helper child `iguana report` (`sender.rs`) through a pipe it writes
//! without ever blocking (`pid1.rs`): a full pipe drops the event and
//! counts it. The child keeps a bounded queue, POSTs each event as
//! CloudEvents 1.0 structured JSON, retries with backoff (`policy.rs`),
//! PUTs a finished job's whole log to `{report_url}/logs/<machine-id>/<job>`,
//! and sends a heartbeat every 60 s while a job runs. Before a handover PID 1
//! closes the pipe and waits at most [`pid1::FLUSH_LIMIT`] for the child to
//! deliver the rest. A dead sink is a warning, never a failed boot.
//!
//! `pstore.rs` keeps the reason of a failed boot across the reboot, and
//! `machine.rs` reads what identifies the box in `boot.started`.

pub mod machine;
pub mod pid1;
pub mod policy;
pub mod pstore;
pub mod sender;

use serde_json::{json, Value};

/// A bearer token in the initrd, used when `rd.iguana.report_token=` is not given.
pub const TOKEN_FILE: &str = "/etc/iguana/report-token";
/// The CloudEvents content type of structured mode.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";
/// How much of a job's log `job.finished` carries (its end).
pub const LOG_TAIL: u64 = 64 << 10;

/// One event before it is stamped: type, subject (a job) and data.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: &'static str,
    pub subject: Option<String>,
    pub data: Value,
}

/// The CloudEvents 1.0 envelope. `id` is `<machine-id>-<seq>`: fixed when
/// PID 1 builds the event, so every retry repeats the same id and a sink
/// can drop duplicates.
pub fn cloudevent(machine_id: &str, seq: u64, time: &str, event: &Event) -> Value {
    let mut e = json!({
        "specversion": "1.0",
        "id": format!("{machine_id}-{seq}"),
        "source": format!("iguana://{machine_id}"),
        "type": event.kind,
        "time": time,
        "datacontenttype": "application/json",
        "data": event.data,
    });
    if let Some(subject) = &event.subject {
        e["subject"] = json!(subject);
    }
    e
}

/// What identifies the machine and its boot, for `boot.started`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Identity {
    pub kernel_release: String,
    pub cmdline: String,
    pub dmi_uuid: Option<String>,
    pub dmi_serial: Option<String>,
    pub vendor: Option<String>,
    pub product: Option<String>,
    /// `(interface, MAC)`, loopback left out.
    pub macs: Vec<(String, String)>,
    pub cpus: usize,
    pub memory_bytes: u64,
    /// `(name, bytes)` of the block devices (no loop or ram devices).
    pub disks: Vec<(String, u64)>,
}

pub fn boot_started(id: &Identity) -> Event {
    let macs: Vec<Value> = id.macs.iter().map(|(name, mac)| json!({"interface": name, "mac": mac})).collect();
    let disks: Vec<Value> = id.disks.iter().map(|(name, size)| json!({"name": name, "bytes": size})).collect();
    Event {
        kind: "boot.started",
        subject: None,
        data: json!({
            "iguana_version": env!("CARGO_PKG_VERSION"),
            "kernel_release": id.kernel_release,
            "cmdline": id.cmdline,
            "dmi": {"uuid": id.dmi_uuid, "serial": id.dmi_serial, "vendor": id.vendor, "product": id.product},
            "macs": macs,
            "cpus": id.cpus,
            "memory_bytes": id.memory_bytes,
            "disks": disks,
        }),
    }
}

/// `network`: the contents of /run/iguana/network.json.
pub fn network_up(network: Value) -> Event {
    Event { kind: "network.up", subject: None, data: json!({ "network": network }) }
}

pub fn job_started(job: &str, image: &str, digest: Option<&str>) -> Event {
    Event { kind: "job.started", subject: Some(job.into()), data: json!({"job": job, "image": image, "digest": digest}) }
}

/// How a job ended, for `job.finished`.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// `success`, `failed`, `timeout` or `skipped`.
    pub state: &'static str,
    pub exit_code: Option<i32>,
    pub duration_secs: f64,
    /// What iguana says went wrong (the error chain), when it failed.
    pub error: Option<String>,
    /// What the container wrote to /iguana/reason.
    pub reason: Option<String>,
}

/// The log tail is added by the sender, which reads it from the job's log.
pub fn job_finished(job: &str, f: &Finished) -> Event {
    Event {
        kind: "job.finished",
        subject: Some(job.into()),
        data: json!({
            "job": job,
            "state": f.state,
            "exit_code": f.exit_code,
            "duration_secs": (f.duration_secs * 1000.0).round() / 1000.0,
            "error": f.error,
            "reason": f.reason,
        }),
    }
}

/// `failure`: the error that stopped the boot, or none.
pub fn workflow_finished(failure: Option<&str>) -> Event {
    let state = if failure.is_some() { "failed" } else { "success" };
    Event { kind: "workflow.finished", subject: None, data: json!({"state": state, "error": failure}) }
}

/// `action`: switch_root, kexec, reboot, poweroff or shell.
pub fn handover(action: &str, reason: Option<&str>) -> Event {
    Event { kind: "handover", subject: None, data: json!({"action": action, "reason": reason}) }
}

pub fn heartbeat(job: &str, running_secs: u64) -> Event {
    Event { kind: "heartbeat", subject: Some(job.into()), data: json!({"job": job, "running_secs": running_secs}) }
}

pub fn previous_boot_failed(summary: &str) -> Event {
    Event { kind: "previous_boot.failed", subject: None, data: json!({"summary": summary}) }
}

/// The command line as it may be shown: URLs without their secrets
/// (`redact_url`) and the report token's value replaced.
pub fn redact_cmdline(line: &str) -> String {
    let shown: Vec<String> = crate::cmdline::split(line)
        .into_iter()
        .map(|(key, value)| match value {
            None => key,
            Some(_) if key == crate::cmdline::REPORT_TOKEN => format!("{key}=***"),
            // A list (rd.iguana.extensions=) may hold several URLs.
            Some(v) if v.contains("://") => {
                let items: Vec<String> = v
                    .split(',')
                    .map(|item| if item.contains("://") { crate::redact::redact_url(item) } else { item.to_owned() })
                    .collect();
                format!("{key}={}", items.join(","))
            }
            Some(v) => format!("{key}={v}"),
        })
        .collect();
    shown.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_are_cloudevents_with_stable_ids() {
        let event = job_started("install", "10.0.2.2:5000/installer", Some("sha256:ab"));
        let e = cloudevent("0123abcd", 7, "2026-11-27T14:00:00Z", &event);
        assert_eq!(
            e,
            json!({
                "specversion": "1.0", "id": "0123abcd-7", "source": "iguana://0123abcd", "type": "job.started",
                "time": "2026-11-27T14:00:00Z", "datacontenttype": "application/json", "subject": "install",
                "data": {"job": "install", "image": "10.0.2.2:5000/installer", "digest": "sha256:ab"},
            })
        );
        // The same event stamped again is the same document: repeats are idempotent.
        assert_eq!(e, cloudevent("0123abcd", 7, "2026-11-27T14:00:00Z", &event));
        assert_eq!(cloudevent("0123abcd", 8, "2026-11-27T14:00:00Z", &event)["id"], "0123abcd-8");
    }

    #[test]
    fn event_data() {
        let failed = Finished {
            state: "failed",
            exit_code: Some(3),
            duration_secs: 1.23456,
            error: Some("job broken failed: exit status 3".into()),
            reason: Some("disk too small".into()),
        };
        let cases: Vec<(Event, &str, Value)> = vec![
            (
                job_finished("broken", &failed),
                "job.finished",
                json!({"job": "broken", "state": "failed", "exit_code": 3, "duration_secs": 1.235,
                       "error": "job broken failed: exit status 3", "reason": "disk too small"}),
            ),
            (workflow_finished(None), "workflow.finished", json!({"state": "success", "error": null})),
            (workflow_finished(Some("job x: boom")), "workflow.finished", json!({"state": "failed", "error": "job x: boom"})),
            (handover("reboot", Some("job x: boom")), "handover", json!({"action": "reboot", "reason": "job x: boom"})),
            (heartbeat("install", 120), "heartbeat", json!({"job": "install", "running_secs": 120})),
            (previous_boot_failed("job x: boom"), "previous_boot.failed", json!({"summary": "job x: boom"})),
            (network_up(json!({"links": []})), "network.up", json!({"network": {"links": []}})),
        ];
        for (event, kind, data) in cases {
            assert_eq!((event.kind, &event.data), (kind, &data));
        }
    }

    #[test]
    fn boot_started_names_the_machine() {
        let id = Identity {
            kernel_release: "6.1.0-56-cloud-amd64".into(),
            cmdline: "console=ttyS0".into(),
            dmi_uuid: Some("4c4c4544-0042".into()),
            dmi_serial: Some("SN123".into()),
            vendor: Some("QEMU".into()),
            product: None,
            macs: vec![("eth0".into(), "52:54:00:12:34:56".into())],
            cpus: 2,
            memory_bytes: 268_435_456,
            disks: vec![("vda".into(), 1 << 30)],
        };
        let data = boot_started(&id).data;
        assert_eq!(data["dmi"], json!({"uuid": "4c4c4544-0042", "serial": "SN123", "vendor": "QEMU", "product": null}));
        assert_eq!(data["macs"], json!([{"interface": "eth0", "mac": "52:54:00:12:34:56"}]));
        assert_eq!(data["disks"], json!([{"name": "vda", "bytes": 1u64 << 30}]));
        assert_eq!((data["cpus"].clone(), data["memory_bytes"].clone()), (json!(2), json!(268_435_456)));
        assert_eq!(data["iguana_version"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn command_lines_lose_their_secrets() {
        let cases = [
            (
                "console=ttyS0 rd.iguana.report_url=http://u:p@10.0.2.2:9/e?k=v rd.iguana.report_token=s3cr3t quiet",
                "console=ttyS0 rd.iguana.report_url=http://***@10.0.2.2:9/e?*** rd.iguana.report_token=*** quiet",
            ),
            ("rd.iguana.control_url=\"https://h/w.yaml?token=x\"", "rd.iguana.control_url=https://h/w.yaml?***"),
            (
                "rd.iguana.extensions=https://u:p@h/a.raw,/dev/vdb,https://v:q@h/b.raw?t=1",
                "rd.iguana.extensions=https://***@h/a.raw,/dev/vdb,https://***@h/b.raw?***",
            ),
            ("", ""),
        ];
        for (line, want) in cases {
            assert_eq!(redact_cmdline(line), want, "{line}");
        }
    }
}
