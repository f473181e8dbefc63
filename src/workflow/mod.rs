//! Phase "workflow": which jobs run, in which order, and running them.
//!
//! For now the plan comes from `rd.iguana.containers` (one job per image, in
//! order); a failed job stops the workflow, so nothing after it runs on a
//! half-prepared machine. Each job's image is pulled by a child process
//! (`iguana pull`), so that async code and untrusted registry data never run
//! inside PID 1; the container is then run by PID 1 itself.

pub mod schema;
pub mod volumes;

use std::path::{Path, PathBuf};

use crate::cmdline::Cmdline;
use crate::container::{self, Exit, ImageConfig, Job};

/// A job before its image is pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub name: String,
    pub image: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("nothing to run: no rd.iguana.control_url, no rd.iguana.containers and no /etc/iguana/control.yaml")]
    Nothing,
    #[error("rd.iguana.control_url and /etc/iguana/control.yaml are not supported yet (the workflow engine is coming); use rd.iguana.containers")]
    WorkflowUnsupported,
    #[error("job {job}: pull {image}: {status}")]
    Pull { job: String, image: String, status: String },
    #[error("job {job}: read image config {path}")]
    Config { job: String, path: PathBuf, #[source] source: std::io::Error },
    #[error("job {job}: image config {path}")]
    ConfigJson { job: String, path: PathBuf, #[source] source: serde_json::Error },
    #[error(transparent)]
    Container(#[from] container::Error),
    #[error("job {job} failed: {exit}")]
    Failed { job: String, exit: Exit },
}

/// Where the workflow comes from, in upstream's fallback order.
pub fn plan(args: &Cmdline, builtin: &Path) -> Result<Vec<Planned>, Error> {
    if args.control_url.is_some() {
        return Err(Error::WorkflowUnsupported);
    }
    if !args.containers.is_empty() {
        return Ok(jobs_from_images(&args.containers));
    }
    if builtin.exists() {
        return Err(Error::WorkflowUnsupported);
    }
    Err(Error::Nothing)
}

/// One job per image, named after the image's last path component; a name
/// that repeats gets a `-2`, `-3`... suffix.
pub fn jobs_from_images(images: &[String]) -> Vec<Planned> {
    let mut out: Vec<Planned> = Vec::new();
    for image in images {
        let base = job_name(image);
        let mut name = base.clone();
        let mut n = 1;
        while out.iter().any(|p| p.name == name) {
            n += 1;
            name = format!("{base}-{n}");
        }
        out.push(Planned { name, image: image.clone() });
    }
    out
}

fn job_name(image: &str) -> String {
    let path = image.split('@').next().unwrap_or(image);
    let last = path.rsplit('/').next().unwrap_or(path);
    let last = last.split(':').next().unwrap_or(last);
    let clean: String = last
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '-' })
        .take(64)
        .collect();
    if clean.is_empty() { "job".to_string() } else { clean }
}

/// Everything a job run needs from the boot.
pub struct Context<'a> {
    pub insecure_registries: &'a [String],
    pub work: &'a Path,
    pub debug: bool,
}

/// Runs the jobs in order; the first failure stops the workflow.
pub fn run(ctx: &Context<'_>, jobs: &[Planned]) -> Result<(), Error> {
    for planned in jobs {
        let job = pull(ctx, planned)?;
        let exit = container::run(
            &job,
            &ctx.work.join("state"),
            &ctx.work.join("bundles").join(&job.name),
            &ctx.work.join("logs").join(format!("{}.log", job.name)),
        )?;
        if !exit.success() {
            return Err(Error::Failed { job: job.name, exit });
        }
        tracing::info!("job {} done: {exit}", job.name);
        if !ctx.debug {
            let _ = std::fs::remove_dir_all(ctx.work.join("images").join(&job.name));
        }
    }
    Ok(())
}

/// Pulls and unpacks a job's image in a child process.
fn pull(ctx: &Context<'_>, planned: &Planned) -> Result<Job, Error> {
    let dir = ctx.work.join("images").join(&planned.name);
    let rootfs = dir.join("rootfs");
    let config_path = dir.join("config.json");
    let mut args: Vec<String> = vec![
        "pull".into(),
        planned.image.clone(),
        "--rootfs".into(),
        rootfs.display().to_string(),
        "--config-out".into(),
        config_path.display().to_string(),
        "--store".into(),
        ctx.work.join("blobs").display().to_string(),
    ];
    for registry in ctx.insecure_registries {
        args.push("--insecure-registry".into());
        args.push(registry.clone());
    }
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::create_dir_all(ctx.work.join("logs"));
    let pull_err = |status: String| Error::Pull { job: planned.name.clone(), image: planned.image.clone(), status };
    let status = crate::child::run(&args).map_err(|e| pull_err(e.to_string()))?;
    if !status.success() {
        return Err(pull_err(crate::child::describe(status)));
    }
    tracing::info!("phase image-pulled job={} image={}", planned.name, planned.image);
    let text = std::fs::read_to_string(&config_path)
        .map_err(|source| Error::Config { job: planned.name.clone(), path: config_path.clone(), source })?;
    let image: ImageConfig = serde_json::from_str(&text)
        .map_err(|source| Error::ConfigJson { job: planned.name.clone(), path: config_path.clone(), source })?;
    Ok(Job { name: planned.name.clone(), image, env: Vec::new(), rootfs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_named_after_images() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["10.0.2.2:5000/a", "10.0.2.2:5000/b"], &["a", "b"]),
            (&["registry.opensuse.org/agama/installer:latest"], &["installer"]),
            (&["busybox@sha256:abc"], &["busybox"]),
            (&["x/a", "y/a", "z/a:1"], &["a", "a-2", "a-3"]),
            (&["host:5000/ns/img+x:tag"], &["img-x"]),
        ];
        for (images, names) in cases {
            let images: Vec<String> = images.iter().map(|s| s.to_string()).collect();
            let got: Vec<String> = jobs_from_images(&images).into_iter().map(|p| p.name).collect();
            assert_eq!(got, *names, "{images:?}");
        }
    }

    #[test]
    fn plan_follows_the_fallback_order() {
        let missing = Path::new("/nonexistent/control.yaml");
        let mut args = Cmdline::default();
        assert_eq!(plan(&args, missing).unwrap_err().to_string(), Error::Nothing.to_string());
        args.containers = vec!["r/a".into()];
        assert_eq!(plan(&args, missing).unwrap(), vec![Planned { name: "a".into(), image: "r/a".into() }]);
        args.control_url = Some("http://x/w.yaml".into());
        assert!(matches!(plan(&args, missing), Err(Error::WorkflowUnsupported)));
    }
}
