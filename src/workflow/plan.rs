//! `iguana run --dry-run`: the plan of a workflow, as text.
//!
//! Pure: shows each job in order with its image, merged environment,
//! volumes, services, needs, timeout and steps, and which jobs would be
//! skipped if a job they need failed.

use std::fmt::Write as _;

use super::schema::{Container, Workflow};
use super::volumes::Source;

pub fn describe(wf: &Workflow) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "workflow: {}", wf.name.as_deref().unwrap_or("(unnamed)"));
    if let Some(d) = &wf.description {
        let _ = writeln!(out, "description: {d}");
    }
    for (id, job) in &wf.jobs.0 {
        let _ = writeln!(out, "job {id}:");
        container(&mut out, "  ", wf, &job.container);
        for (sid, svc) in &job.services.0 {
            let _ = writeln!(out, "  service {sid} (background, stopped after the job):");
            container(&mut out, "    ", wf, svc);
        }
        if !job.needs.0.is_empty() {
            let _ = writeln!(out, "  needs: {} (skipped unless all succeed)", job.needs.0.join(", "));
        }
        let on_error = if job.continue_on_error { "continue the workflow" } else { "stop the workflow" };
        let _ = writeln!(out, "  on failure: {on_error}");
        if let Some(t) = job.timeout() {
            let _ = writeln!(out, "  timeout: {}s", t.as_secs());
        }
        if !job.steps.is_empty() {
            let _ = writeln!(out, "  steps: {} (validated, not executed)", job.steps.len());
        }
    }
    out
}

fn container(out: &mut String, indent: &str, wf: &Workflow, c: &Container) {
    let _ = writeln!(out, "{indent}image: {}", c.image);
    let mut env = crate::container::merge_env(&[&wf.env.entries(), &c.env.entries()]);
    env.retain(|e| !e.starts_with("PATH="));
    let _ = writeln!(out, "{indent}env: {}", env.join(" "));
    for v in c.volumes() {
        let mode = if v.read_only { "ro" } else { "rw" };
        let source = match &v.source {
            Source::Named(n) => format!("named volume {n}"),
            Source::Anonymous => "anonymous volume".to_string(),
            Source::Host(h) => format!("host {h}"),
        };
        let _ = writeln!(out, "{indent}volume: {} <- {source} ({mode})", v.target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_upstream_control_file() {
        let wf = crate::workflow::schema::parse(&std::fs::read("examples/control.yaml").unwrap()).unwrap();
        let want = "\
workflow: Test installation control YAML
job dinstaller:
  image: registry.opensuse.org/yast/head/containers/containers_tumbleweed/opensuse/dinstaller-web
  env: GLOBAL=test_global_env TEST=test_env iguana=true
  volume: /var/run/dbus <- named volume dbus_run (rw)
  service backend (background, stopped after the job):
    image: registry.opensuse.org/yast/head/containers/containers_tumbleweed/opensuse/dinstaller-backend
    env: GLOBAL=test_global_env SERVICE=test_service_env iguana=true
    volume: /var/run/dbus <- named volume dbus_run (rw)
  on failure: stop the workflow
job busybox:
  image: registry.opensuse.org/opensuse/busybox:latest
  env: GLOBAL=test_global_env iguana=true
  needs: dinstaller (skipped unless all succeed)
  on failure: stop the workflow
  steps: 1 (validated, not executed)
";
        assert_eq!(describe(&wf), want);
    }
}
