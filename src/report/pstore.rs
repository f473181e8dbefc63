//! The last failure survives the reboot: pstore.
//!
//! Before a failed boot reboots, iguana writes a short summary (the failing
//! step, the error chain, the end of the failing job's log) to /dev/kmsg,
//! one record a line, each marked [`MARK`]. With a pstore backend (ramoops
//! with `ramoops.max_reason=4` so a reboot is dumped too, or efi-pstore)
//! the kernel keeps its log across the warm reboot. The next boot finds it
//! in /sys/fs/pstore (mounted in `early`), says `previous boot failed: …`,
//! copies the summary to /iguana/previous-boot.txt and removes the entry,
//! so it is told once. `parse` is pure; every read is bounded.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Marks iguana's summary lines in the kernel log.
pub const MARK: &str = "iguana-failure:";
pub const PSTORE: &str = "/sys/fs/pstore";
pub const COPY: &str = "/iguana/previous-boot.txt";
/// One pstore record is read up to this.
const RECORD_MAX: u64 = 1 << 20;
/// What a summary keeps, at most (a container can write to kmsg too).
/// (iguana writes at most 13 lines of at most LINE_MAX bytes).
pub const SUMMARY_LINES: usize = 32;
pub const SUMMARY_MAX: usize = 32 << 10;
/// Entries looked at, at most.
const ENTRIES_MAX: usize = 64;
/// Job log lines in the summary.
const LOG_LINES: usize = 10;
/// A kmsg record is cut here (the kernel's limit is about 1 KiB).
const LINE_MAX: usize = 900;

/// The summary: what failed, why, and the end of the failing job's log.
pub fn summary(step: &str, error: &str, reason: Option<&str>, job_log: &str) -> Vec<String> {
    let mut lines = vec![format!("step: {step}"), format!("error: {error}")];
    if let Some(reason) = reason {
        lines.push(format!("reason: {}", reason.lines().next().unwrap_or("")));
    }
    let tail: Vec<&str> = job_log.lines().filter(|l| !l.trim().is_empty()).collect();
    for line in &tail[tail.len().saturating_sub(LOG_LINES)..] {
        lines.push(format!("log: {line}"));
    }
    lines.into_iter().map(|l| cut(&l, LINE_MAX)).collect()
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Writes the summary to /dev/kmsg between `begin` and `end` marks.
pub fn write_summary(lines: &[String]) {
    let Ok(mut kmsg) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") else { return };
    let all = std::iter::once("begin".to_string()).chain(lines.iter().cloned()).chain(std::iter::once("end".to_string()));
    for line in all {
        // <7>: debug priority, as iguana's other kmsg records: kept, not shown twice.
        let _ = kmsg.write_all(format!("<7>{MARK} {line}\n").as_bytes());
    }
}

/// The last summary in a kernel log dump, its lines joined by newlines.
pub fn parse(dump: &str) -> Option<String> {
    let lines: Vec<&str> = dump.lines().collect();
    let begin = lines.iter().rposition(|l| l.contains(&format!("{MARK} begin")))?;
    let mut out = Vec::new();
    for line in &lines[begin + 1..] {
        let Some(at) = line.find(MARK) else { continue };
        let text = line[at + MARK.len()..].trim();
        if text == "end" || out.len() == SUMMARY_LINES {
            break;
        }
        out.push(cut(text, LINE_MAX));
    }
    Some(out.join("\n"))
}

/// Looks for a summary in the pstore entries under `dir`: returns it and
/// removes every entry that held one (which clears it from the backend).
pub fn take_previous(dir: &Path) -> Option<String> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .take(ENTRIES_MAX)
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("dmesg-")))
        .collect();
    entries.sort();
    let mut found = None;
    for path in entries {
        let Ok(bytes) = crate::fsutil::read_bounded(&path, RECORD_MAX) else { continue };
        if let Some(summary) = parse(&String::from_utf8_lossy(&bytes)) {
            found.get_or_insert(summary);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!("pstore: remove {}: {e}", path.display());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_summary_is_capped_whatever_a_container_wrote_to_kmsg() {
        let mut dump = format!("{MARK} begin\n");
        for _ in 0..10_000 {
            dump.push_str(&format!("{MARK} {}\n", "x".repeat(5000)));
        }
        let summary = super::parse(&dump).unwrap();
        assert!(summary.len() <= super::SUMMARY_MAX, "{} bytes", summary.len());
        assert!(summary.lines().count() <= super::SUMMARY_LINES);
    }

    use super::*;

    /// A ramoops record as /sys/fs/pstore/dmesg-ramoops-0 shows it after a reboot.
    const DUMP: &str = "Shutdown#1 Part1
<7>[   20.101010] iguana-failure: begin
<7>[   20.101020] iguana-failure: old
<7>[   20.101030] iguana-failure: end
<6>[   30.000000] iguana: [   30.000] iguana: job nope failed
<7>[   30.101010] iguana-failure: begin
<7>[   30.101020] iguana-failure: step: job nope
<7>[   30.101030] iguana-failure: error: workflow stopped: job nope: image 10.0.2.2:5000/nope: manifest unknown
<6>[   30.200000] virtio_net virtio0 eth0: something in between
<7>[   30.101040] iguana-failure: log: last line
<7>[   30.101050] iguana-failure: end
<0>[   30.300000] reboot: Restarting system
";

    #[test]
    fn parses_the_last_summary() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                DUMP,
                Some("step: job nope\nerror: workflow stopped: job nope: image 10.0.2.2:5000/nope: manifest unknown\nlog: last line"),
            ),
            ("Panic#1 Part1\n<0>[ 1.0] Kernel panic - not syncing\n", None),
            ("", None),
            // Cut short: what is there counts.
            ("<7>[ 1.0] iguana-failure: begin\n<7>[ 1.1] iguana-failure: step: boot\n", Some("step: boot")),
        ];
        for (dump, want) in cases {
            assert_eq!(parse(dump).as_deref(), *want, "{dump:?}");
        }
    }

    #[test]
    fn summaries_keep_the_end_of_the_log_and_short_lines() {
        let log: String = (1..=15).map(|n| format!("line {n}\n\n")).collect();
        let lines = summary("job install", "job install failed: exit status 3", Some("disk too small\nmore"), &log);
        assert_eq!(lines[..4], ["step: job install", "error: job install failed: exit status 3", "reason: disk too small", "log: line 6"]);
        assert_eq!(lines.len(), 3 + LOG_LINES);
        let long = summary("boot", &"é".repeat(1000), None, "");
        assert!(long[1].len() <= LINE_MAX + "…".len() && long[1].ends_with('…'), "{}", long[1].len());
    }

    #[test]
    fn takes_and_clears_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dmesg-ramoops-0"), DUMP).unwrap();
        std::fs::write(dir.path().join("dmesg-ramoops-1"), "Oops#1 Part1\nnothing of ours\n").unwrap();
        std::fs::write(dir.path().join("console-ramoops-0"), DUMP).unwrap();
        let got = take_previous(dir.path()).unwrap();
        assert!(got.starts_with("step: job nope\n"), "{got}");
        let mut left: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        left.sort();
        assert_eq!(left, ["console-ramoops-0", "dmesg-ramoops-1"]);
        assert_eq!(take_previous(dir.path()), None);
        assert_eq!(take_previous(&dir.path().join("missing")), None);
    }
}
