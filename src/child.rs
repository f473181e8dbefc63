//! Helper children of PID 1: the same binary re-executed with a subcommand.
//!
//! Async code (tokio, for oci-client and rtnetlink) and parsing of untrusted
//! registry data run in a child, so PID 1 stays single-threaded (libcontainer
//! needs that) and a panic there fails one step instead of the kernel.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};

/// Runs `iguana ARGS...` with the console as stdio and waits for it.
pub fn run(args: &[String]) -> std::io::Result<ExitStatus> {
    tracing::debug!("run child: iguana {}", args.join(" "));
    Command::new("/proc/self/exe").args(args).env("IGUANA_CHILD", "1").status()
}

/// "exit status 1" / "killed by signal 9".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => "unknown status".to_string(),
    }
}
