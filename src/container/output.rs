//! Bounded by construction: everything PID 1 holds of a container's output.
//!
//! A container can write anything, forever: gigabytes without a newline,
//! binary data, terminal escapes. PID 1 is never OOM-killed, so a buffer
//! that grows with that output ends in a kernel panic. Each type here has
//! its cap in its own code, not in a caller's promise: a line is cut at
//! `LINE_MAX`, a job's log keeps its first `LOG_HEAD` and last `LOG_TAIL`
//! bytes, and at most `CONSOLE_BUDGET` bytes of a job's lines reach the
//! console, which can be a slow serial port.

use std::collections::VecDeque;
use std::io::Write;

/// A run of output without a newline is shown as a line of this many bytes.
pub const LINE_MAX: usize = 64 * 1024;
/// The log file keeps the first and the last this many bytes of a job's output.
pub const LOG_HEAD: usize = 1024 * 1024;
pub const LOG_TAIL: usize = 1024 * 1024;
/// Bytes of a job's lines (as shown, with the `[job] ` prefix) for the console.
pub const CONSOLE_BUDGET: usize = 256 * 1024;

/// Splits a byte stream into lines of at most `LINE_MAX` bytes.
pub struct LineAssembler {
    /// The incomplete line so far; never longer than `LINE_MAX`.
    partial: Vec<u8>,
}

impl Default for LineAssembler {
    fn default() -> Self {
        // Allocated once at its cap, so growing it never rounds past the cap.
        LineAssembler { partial: Vec::with_capacity(LINE_MAX) }
    }
}

impl LineAssembler {
    /// Calls `emit` with every line `bytes` completes (without its newline),
    /// and with every `LINE_MAX` bytes that came without one.
    pub fn feed(&mut self, mut bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        while !bytes.is_empty() {
            let room = LINE_MAX - self.partial.len();
            // A newline right after `room` bytes still ends a line of LINE_MAX.
            let window = bytes.get(..room + 1).unwrap_or(bytes);
            match window.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    let (line, rest) = bytes.split_at(end);
                    self.complete(line, &mut emit);
                    bytes = rest.get(1..).unwrap_or_default();
                }
                // Up to full: a newline may still come to end it.
                None if bytes.len() <= room => {
                    self.partial.extend_from_slice(bytes);
                    return;
                }
                None => {
                    let (line, rest) = bytes.split_at(room);
                    self.complete(line, &mut emit);
                    bytes = rest;
                }
            }
        }
    }

    /// Emits what is left of an unfinished line, at the end of the output.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            emit(&self.partial);
            self.partial.clear();
        }
    }

    /// Bytes held (for the tests: never more than `LINE_MAX`).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.partial.capacity()
    }

    fn complete(&mut self, tail: &[u8], emit: &mut impl FnMut(&[u8])) {
        if self.partial.is_empty() {
            emit(tail);
        } else {
            self.partial.extend_from_slice(tail);
            emit(&self.partial);
            self.partial.clear();
        }
    }
}

/// A job's log: its output as it came, the first `LOG_HEAD` bytes written
/// through at once, the last `LOG_TAIL` kept in memory and written after a
/// line `[iguana: N bytes omitted]` when the job ends.
pub struct JobLog<W: Write> {
    out: W,
    head_left: usize,
    /// Whether the head written so far ends a line (the marker gets its own).
    head_ends_line: bool,
    tail: VecDeque<u8>,
    omitted: u64,
    /// A write failed (the disk or tmpfs is full): the log stops there.
    broken: bool,
}

impl<W: Write> JobLog<W> {
    pub fn new(out: W) -> Self {
        JobLog { out, head_left: LOG_HEAD, head_ends_line: true, tail: VecDeque::new(), omitted: 0, broken: false }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        let (head, rest) = bytes.split_at(self.head_left.min(bytes.len()));
        if !head.is_empty() {
            self.head_left -= head.len();
            self.head_ends_line = head.ends_with(b"\n");
            self.put(head);
        }
        if rest.is_empty() {
            return;
        }
        if self.tail.capacity() == 0 {
            // Only a job that outgrows the head pays for the ring, once.
            self.tail.reserve_exact(LOG_TAIL);
        }
        if rest.len() >= LOG_TAIL {
            self.omitted += (self.tail.len() + rest.len() - LOG_TAIL) as u64;
            self.tail.clear();
            self.tail.extend(&rest[rest.len() - LOG_TAIL..]);
            return;
        }
        let overflow = (self.tail.len() + rest.len()).saturating_sub(LOG_TAIL);
        self.tail.drain(..overflow);
        self.omitted += overflow as u64;
        self.tail.extend(rest);
    }

    /// Writes the tail, after the marker when bytes were dropped.
    pub fn finish(&mut self) {
        if self.omitted > 0 {
            let newline = if self.head_ends_line { "" } else { "\n" };
            let marker = format!("{newline}[iguana: {} bytes omitted]\n", self.omitted);
            self.put(marker.as_bytes());
            self.omitted = 0;
        }
        let tail = std::mem::take(&mut self.tail);
        let (a, b) = tail.as_slices();
        self.put(a);
        self.put(b);
        let _ = self.out.flush();
    }

    /// Bytes held in memory (for the tests: never more than `LOG_TAIL`).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.tail.capacity()
    }

    fn put(&mut self, bytes: &[u8]) {
        if !self.broken && self.out.write_all(bytes).is_err() {
            self.broken = true;
        }
    }
}

/// How much of one job's output still goes to the console.
pub struct ConsoleBudget {
    left: usize,
    /// Shown once, when the budget runs out.
    notice: Option<String>,
}

impl ConsoleBudget {
    /// A budget of `CONSOLE_BUDGET` bytes; `log` is named in the notice.
    pub fn new(job: &str, log: &str) -> Self {
        ConsoleBudget::with(CONSOLE_BUDGET, job, log)
    }

    fn with(budget: usize, job: &str, log: &str) -> Self {
        let kib = CONSOLE_BUDGET / 1024;
        let notice = format!("[{job}] console output limit reached ({kib} KiB): the rest is only in {log}");
        ConsoleBudget { left: budget, notice: Some(notice) }
    }

    /// Whether the notice was shown: nothing more goes to the console.
    pub fn spent(&self) -> bool {
        self.notice.is_none()
    }

    /// What to print for one line of output `raw` (without its newline):
    /// `[job] text`, cut to what is left of the budget, followed by the
    /// notice when it runs out; nothing after that.
    pub fn line(&mut self, job: &str, raw: &[u8]) -> Vec<String> {
        let mut shown = format!("[{job}] ");
        render(raw, &mut shown);
        // The newline the console adds counts too.
        if shown.len() < self.left {
            self.left -= shown.len() + 1;
            return vec![shown];
        }
        let Some(notice) = self.notice.take() else { return Vec::new() };
        let mut out = Vec::new();
        let mut cut = self.left.saturating_sub(1);
        while !shown.is_char_boundary(cut) {
            cut -= 1;
        }
        shown.truncate(cut);
        if cut > job.len() + 3 {
            out.push(shown);
        }
        self.left = 0;
        out.push(notice);
        out
    }
}

/// Appends `raw` as console text: UTF-8 as it is, a tab as it is, a
/// trailing CR (CRLF output) dropped, every other control character (C0,
/// DEL, C1: escapes that would drive the terminal) and every byte that is
/// not UTF-8 as `\xNN` (C1 as `\u{NN}`).
pub fn render(raw: &[u8], out: &mut String) {
    use std::fmt::Write as _;
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\t' => out.push(c),
                c if (c as u32) < 0x80 && c.is_control() => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` and returns the lines, `finish` included.
    fn lines(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut a = LineAssembler::default();
        let mut got = Vec::new();
        for chunk in chunks {
            a.feed(chunk, |l| got.push(l.to_vec()));
            assert!(a.held() <= LINE_MAX, "assembler holds {}", a.held());
        }
        a.finish(|l| got.push(l.to_vec()));
        got
    }

    #[test]
    fn lines_are_assembled_and_cut_at_the_cap() {
        let max = vec![b'x'; LINE_MAX];
        let mut max_nl = max.clone();
        max_nl.push(b'\n');
        type Case<'a> = (Vec<&'a [u8]>, Vec<Vec<u8>>);
        let cases: Vec<Case> = vec![
            (vec![b"a\nb\n"], vec![b"a".to_vec(), b"b".to_vec()]),
            (vec![b"a", b"b\nc"], vec![b"ab".to_vec(), b"c".to_vec()]),
            (vec![b"\n\n"], vec![vec![], vec![]]),
            (vec![b""], vec![]),
            // Exactly the cap then a newline: one line, no empty one after.
            (vec![&max_nl, b"z\n"], vec![max.clone(), b"z".to_vec()]),
            (vec![&max[..10], &max_nl[10..]], vec![max.clone()]),
            (vec![&max, b"\n", b"z"], vec![max.clone(), b"z".to_vec()]),
            // One byte over the cap: cut, the rest is the next line.
            (vec![&max, b"yz\n"], vec![max.clone(), b"yz".to_vec()]),
        ];
        for (chunks, want) in cases {
            let got = lines(&chunks);
            let show = |v: &Vec<Vec<u8>>| v.iter().map(Vec::len).collect::<Vec<_>>();
            assert_eq!(got, want, "{:?} -> {:?}", show(&got), show(&want));
        }
    }

    #[test]
    fn a_mebibyte_without_newline_is_cut_into_capped_lines() {
        let zeros = vec![0u8; 1024 * 1024];
        // In pipe-sized reads and in one piece.
        for chunks in [zeros.chunks(4096).collect::<Vec<_>>(), vec![&zeros[..]]] {
            let got = lines(&chunks);
            assert_eq!(got.len(), 16);
            assert!(got.iter().all(|l| l.len() == LINE_MAX));
        }
    }

    fn log_of(chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut log = JobLog::new(&mut out);
        for chunk in chunks {
            log.write(chunk);
            assert!(log.held() <= LOG_TAIL, "log holds {}", log.held());
        }
        log.finish();
        out
    }

    #[test]
    fn log_keeps_head_and_tail() {
        let head = vec![b'h'; LOG_HEAD];
        let tail = vec![b't'; LOG_TAIL];
        let middle = vec![b'm'; 3 * LOG_TAIL + 5];
        let mut head_line = vec![b'h'; LOG_HEAD - 1];
        head_line.push(b'\n');
        let marker = |n: usize, newline: bool| format!("{}[iguana: {n} bytes omitted]\n", if newline { "\n" } else { "" }).into_bytes();
        let cat = |parts: &[&[u8]]| parts.concat();
        type Case<'a> = (Vec<&'a [u8]>, Vec<u8>);
        let cases: Vec<Case> = vec![
            (vec![b"small\n", b"log"], b"small\nlog".to_vec()),
            // Everything fits: no marker.
            (vec![&head, &tail], cat(&[&head, &tail])),
            (vec![&head, &middle, &tail], cat(&[&head, &marker(middle.len(), true), &tail])),
            (vec![&head_line, &middle, &tail], cat(&[&head_line, &marker(middle.len(), false), &tail])),
            // Small writes roll through the ring.
            (
                std::iter::once(&head[..]).chain(middle.chunks(1000)).chain(tail.chunks(777)).collect(),
                cat(&[&head, &marker(middle.len(), true), &tail]),
            ),
        ];
        for (chunks, want) in cases {
            let got = log_of(&chunks);
            assert_eq!(got.len(), want.len());
            assert!(got == want, "log differs");
        }
    }

    #[test]
    fn console_budget_ends_with_one_notice() {
        let log = "/run/iguana/logs/chatty.log";
        let notice = "[chatty] console output limit reached (256 KiB): the rest is only in /run/iguana/logs/chatty.log";
        // Budget 40: "[chatty] hello" is 14 bytes + newline.
        let mut b = ConsoleBudget::with(40, "chatty", log);
        assert_eq!(b.line("chatty", b"hello"), ["[chatty] hello"]);
        assert_eq!(b.line("chatty", b"hello"), ["[chatty] hello"]);
        assert_eq!(b.line("chatty", b"hello"), [notice]);
        assert!(b.line("chatty", b"hello").is_empty());

        // A line larger than what is left is shown cut, then the notice.
        let mut b = ConsoleBudget::with(20, "chatty", log);
        assert_eq!(b.line("chatty", b"abcdefghijklmnopqrstuvwxyz"), ["[chatty] abcdefghij", notice]);
    }

    #[test]
    fn console_budget_bounds_a_flood() {
        let mut b = ConsoleBudget::new("chatty", "/run/iguana/logs/chatty.log");
        let zeros = vec![0u8; LINE_MAX];
        let mut shown = 0;
        let mut notices = 0;
        for _ in 0..100 {
            for line in b.line("chatty", &zeros) {
                shown += line.len() + 1;
                notices += usize::from(line.contains("console output limit reached"));
            }
        }
        assert_eq!(notices, 1);
        assert!(shown <= CONSOLE_BUDGET + 200, "{shown}");
    }

    #[test]
    fn console_text_escapes_control_characters() {
        let cases: &[(&[u8], &str)] = &[
            (b"plain text", "plain text"),
            (b"crlf\r", "crlf"),
            (b"a\tb", "a\tb"),
            (b"\0\x1b[31mred", "\\x00\\x1b[31mred"),
            (b"mid\rcr", "mid\\x0dcr"),
            (b"del\x7f", "del\\x7f"),
            ("ünïcödé ✓".as_bytes(), "ünïcödé ✓"),
            (b"bad \xff\xfe utf8", "bad \\xff\\xfe utf8"),
            ("c1 \u{9b}".as_bytes(), "c1 \\u{9b}"),
        ];
        for (raw, want) in cases {
            let mut got = String::new();
            render(raw, &mut got);
            assert_eq!(got, *want, "{raw:?}");
        }
    }
}
