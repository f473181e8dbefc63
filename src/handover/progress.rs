//! `/iguana/progress`: a FIFO where containers write status lines, each
//! shown on the console as `progress: LINE`.
//!
//! PID 1 blocks in the container pump loop and stays single-threaded, so the
//! FIFO is read by a child, `iguana progress-relay PATH`, started at boot.
//! It opens the FIFO read-write, so it never sees end-of-file between two
//! writers, and it dies with every other process before the handover.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::bail;

pub const FIFO: &str = "/iguana/progress";

/// Creates the FIFO and starts the relay; failures are only logged.
pub fn start() {
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o622);
    match nix::unistd::mkfifo(FIFO, mode) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => {
            tracing::warn!("mkfifo {FIFO}: {e}");
            return;
        }
    }
    let spawned = crate::child::spawn_background(
        std::process::Command::new("/proc/self/exe")
            .args(["progress-relay", FIFO])
            .env("IGUANA_CHILD", "1")
            .stdin(std::process::Stdio::null()),
    );
    if let Err(e) = spawned {
        // With no reader, a container opening the FIFO would wait forever:
        // take it away, so a write makes a plain file instead.
        tracing::warn!("start iguana progress-relay: {e}; removing {FIFO}");
        let _ = std::fs::remove_file(FIFO);
    }
}

/// `iguana progress-relay FIFO`: copies lines to stderr, forever. It never
/// exits (a FIFO without a reader blocks every writer's open) and keeps
/// reading whatever comes, holding at most `LINE_CAP` bytes.
pub fn cli(args: &[String]) -> anyhow::Result<()> {
    let [path] = args else { bail!("usage: iguana progress-relay FIFO") };
    // Started at nice 19, off the boot's path; a container's lines are not.
    crate::child::normal_priority();
    let mut lines = Lines::new(LINE_CAP);
    let mut buf = vec![0u8; 16 * 1024];
    let mut warned = false;
    loop {
        let mut fifo = match std::fs::OpenOptions::new().read(true).write(true).open(Path::new(path)) {
            Ok(fifo) => fifo,
            Err(e) => {
                if !std::mem::replace(&mut warned, true) {
                    eprintln!("progress-relay: open {path}: {e}; retrying");
                }
                std::thread::sleep(std::time::Duration::from_secs(5));
                continue;
            }
        };
        loop {
            match fifo.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => lines.feed(buf.get(..n).unwrap_or_default(), show),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
}

/// Writes one line to the console, in one write so it does not interleave
/// with PID 1's.
fn show(line: Line<'_>) {
    let mut text = format!("progress: {}", String::from_utf8_lossy(line.text).trim_end_matches('\r'));
    if line.cut {
        text.push_str(&format!(" [line cut at {LINE_CAP} bytes]"));
    }
    text.push('\n');
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// The longest progress line shown; the rest of a longer one is dropped.
pub const LINE_CAP: usize = 4096;

/// Splits a byte stream into lines and never holds more than `cap` bytes:
/// a line that reaches the cap is given out cut, and what follows it up to
/// its newline is dropped as it arrives.
pub struct Lines {
    cap: usize,
    partial: Vec<u8>,
    /// The current line was given out cut: drop bytes up to its newline.
    dropping: bool,
}

/// One line out of `Lines`: its bytes, and whether it was cut.
#[derive(Debug, PartialEq, Eq)]
pub struct Line<'a> {
    pub text: &'a [u8],
    pub cut: bool,
}

impl Lines {
    pub fn new(cap: usize) -> Lines {
        Lines { cap, partial: Vec::new(), dropping: false }
    }

    /// Takes the next bytes read; `emit` gets each line they complete.
    pub fn feed(&mut self, mut bytes: &[u8], mut emit: impl FnMut(Line<'_>)) {
        while !bytes.is_empty() {
            let newline = bytes.iter().position(|&b| b == b'\n');
            let (piece, rest) = match newline {
                Some(at) => (&bytes[..at], Some(&bytes[at + 1..])),
                None => (bytes, None),
            };
            if !self.dropping {
                let room = self.cap.saturating_sub(self.partial.len());
                if piece.len() > room {
                    self.partial.extend_from_slice(&piece[..room]);
                    emit(Line { text: &self.partial, cut: true });
                    self.partial.clear();
                    self.dropping = true;
                } else {
                    self.partial.extend_from_slice(piece);
                }
            }
            match rest {
                Some(rest) => {
                    if !std::mem::take(&mut self.dropping) {
                        emit(Line { text: &self.partial, cut: false });
                        self.partial.clear();
                    }
                    bytes = rest;
                }
                None => bytes = &[],
            }
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.partial.len()
    }
}

/// `iguana kexec-load KERNEL INITRD|- CMDLINE` (not in --help): loads a
/// kernel for `kernelAction kexec` with our own kexec_file_load, so a test
/// image needs no kexec-tools, only this static binary.
pub fn cli_kexec_load(args: &[String]) -> anyhow::Result<()> {
    let [kernel, initrd, cmdline] = args else { bail!("usage: iguana kexec-load KERNEL INITRD|- CMDLINE") };
    let initrd = (initrd != "-").then(|| Path::new(initrd.as_str()));
    crate::sys::kexec_file_load(Path::new(kernel), initrd, cmdline)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` to a `Lines` of cap 8; returns the lines (cut ones
    /// marked with a trailing `~`) and the most bytes held at any time.
    fn lines(chunks: &[&[u8]]) -> (Vec<String>, usize) {
        let mut lines = Lines::new(8);
        let mut out = Vec::new();
        let mut most = 0;
        for chunk in chunks {
            lines.feed(chunk, |l| out.push(format!("{}{}", String::from_utf8_lossy(l.text), if l.cut { "~" } else { "" })));
            most = most.max(lines.held());
        }
        (out, most)
    }

    #[test]
    fn lines_are_capped() {
        let cases: Vec<(Vec<&[u8]>, Vec<&str>)> = vec![
            (vec![b"a\nbc\n"], vec!["a", "bc"]),
            (vec![b"ab", b"c\nd", b"\n"], vec!["abc", "d"]),
            (vec![b"\n\n"], vec!["", ""]),
            // Exactly the cap, then its newline: one whole line.
            (vec![b"12345678\n"], vec!["12345678"]),
            // Over the cap: cut at 8, the rest of that line dropped, across reads.
            (vec![b"1234567890", b"abc", b"def\nnext\n"], vec!["12345678~", "next"]),
            (vec![b"123456789\n"], vec!["12345678~"]),
            // No newline yet: held, not given out.
            (vec![b"1234"], vec![]),
        ];
        for (chunks, want) in cases {
            let (got, most) = lines(&chunks);
            assert_eq!(got, want, "{chunks:?}");
            assert!(most <= 8, "{chunks:?}: held {most} bytes");
        }
    }

    #[test]
    fn a_huge_line_without_newline_holds_only_the_cap() {
        let mut lines = Lines::new(LINE_CAP);
        let chunk = vec![b'x'; 64 * 1024];
        let mut cut = 0;
        for _ in 0..256 {
            // 16 MiB in all, no newline.
            lines.feed(&chunk, |l| {
                assert!(l.cut && l.text.len() == LINE_CAP);
                cut += 1;
            });
            assert!(lines.held() <= LINE_CAP);
        }
        assert_eq!(cut, 1);
    }
}
