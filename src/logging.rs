//! Logging for every phase: one `tracing` subscriber, set up here only.
//!
//! As PID 1 each event becomes one line on the console, stamped with the time
//! since boot (`[   1.234567] iguana: ...`), and one record in /dev/kmsg so
//! that `dmesg` keeps it. kmsg records are written at debug priority so the
//! kernel does not echo them to the console a second time. As a command-line
//! tool (or a child of PID 1), lines go to stderr with the same stamp.
//! libcontainer logs through `tracing` too, so its events arrive here.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

struct Sinks {
    console: Option<File>,
    kmsg: Option<File>,
}

static SINKS: OnceLock<Mutex<Sinks>> = OnceLock::new();

/// Logging for PID 1: console plus /dev/kmsg. Call after /dev is mounted.
pub fn init_pid1(debug: bool) {
    let console = OpenOptions::new().write(true).open("/dev/console").ok();
    let kmsg = OpenOptions::new().write(true).open("/dev/kmsg").ok();
    install(Sinks { console, kmsg }, debug);
}

/// Logging for the command-line tool and for PID 1's helper children.
pub fn init_cli(debug: bool) {
    install(Sinks { console: None, kmsg: None }, debug);
}

fn install(sinks: Sinks, debug: bool) {
    let _ = SINKS.set(Mutex::new(sinks));
    let max = if debug { Level::DEBUG } else { Level::INFO };
    let layer = LineLayer { max };
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// Seconds since boot, the clock the kernel stamps its own messages with.
pub fn uptime() -> f64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() as f64 + ts.tv_nsec() as f64 / 1e9,
        Err(_) => 0.0,
    }
}

/// Writes one already formatted line (no stamp) to the console, as-is. Used
/// for container output, which carries its own `[job]` prefix.
pub fn console_line(line: &str) {
    let mut text = String::with_capacity(line.len() + 1);
    text.push_str(line);
    text.push('\n');
    write_console(text.as_bytes());
}

fn write_console(bytes: &[u8]) {
    let mut guard = match SINKS.get().map(Mutex::lock) {
        Some(Ok(g)) => g,
        _ => {
            let _ = std::io::stderr().write_all(bytes);
            return;
        }
    };
    match guard.console.as_mut() {
        Some(console) => {
            let _ = console.write_all(bytes);
        }
        None => {
            let _ = std::io::stderr().write_all(bytes);
        }
    }
}

fn write_kmsg(message: &str) {
    if let Some(Ok(mut guard)) = SINKS.get().map(Mutex::lock) {
        if let Some(kmsg) = guard.kmsg.as_mut() {
            // One write() is one record; <7> keeps it off the console.
            let _ = kmsg.write_all(format!("<7>iguana: {message}\n").as_bytes());
        }
    }
}

struct LineLayer {
    max: Level,
}

impl<S: Subscriber> Layer<S> for LineLayer {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        // Libraries (libcontainer, libcgroups) warn about things that are
        // normal here (no seccomp, unknown cgroup controllers), and their
        // errors reach us again as the cause in our own error line: show
        // them in debug mode only.
        let ours = metadata.target().starts_with("iguana");
        let level = *metadata.level();
        level <= self.max && (ours || self.max == Level::DEBUG)
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut visitor = LineVisitor::default();
        event.record(&mut visitor);
        let level = *event.metadata().level();
        let tag = match level {
            Level::ERROR => "error: ",
            Level::WARN => "warning: ",
            Level::DEBUG | Level::TRACE => "debug: ",
            Level::INFO => "",
        };
        let target = event.metadata().target();
        let origin = if target.starts_with("iguana") { String::new() } else { format!("{target}: ") };
        let message = format!("{tag}{origin}{}{}", visitor.message, visitor.fields);
        let stamp = uptime();
        write_console(format!("[{stamp:12.6}] iguana: {message}\n").as_bytes());
        write_kmsg(&message);
    }
}

#[derive(Default)]
struct LineVisitor {
    message: String,
    fields: String,
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}

/// Formats an error with its whole chain of sources on one line.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer {0}")]
    struct Outer(&'static str, #[source] std::io::Error);

    #[test]
    fn chain_prints_every_cause_once() {
        let err = Outer("step", std::io::Error::other("inner"));
        assert_eq!(chain(&err), "outer step: inner");
    }
}
