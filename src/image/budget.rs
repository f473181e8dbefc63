//! A cap on what one pull may unpack (`iguana pull --max-unpacked BYTES`,
//! for PID 1's `oci:` extensions on /run's tmpfs): the uncompressed layer
//! streams, which hold every byte a layer writes, are counted as the
//! unpacker reads them, and the read past the cap fails, so the unpack
//! stops there and never writes more than the cap.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes left to unpack, shared by the layers of one pull.
#[derive(Debug)]
pub struct Budget {
    max: u64,
    used: AtomicU64,
    exceeded: AtomicBool,
}

impl Budget {
    pub fn new(max: u64) -> Arc<Budget> {
        Arc::new(Budget { max, used: AtomicU64::new(0), exceeded: AtomicBool::new(false) })
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// Whether a read went past the cap.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// Counts `n` bytes; an error once the total is past the cap.
    fn take(&self, n: usize) -> io::Result<()> {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        let used = self.used.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        if used > self.max {
            self.exceeded.store(true, Ordering::Relaxed);
            return Err(io::Error::other(format!("more than {} bytes to unpack (--max-unpacked)", self.max)));
        }
        Ok(())
    }
}

/// `inner`, counted against a budget.
pub struct Bounded<R> {
    inner: R,
    budget: Option<Arc<Budget>>,
}

impl<R: Read> Bounded<R> {
    pub fn new(inner: R, budget: Option<Arc<Budget>>) -> Bounded<R> {
        Bounded { inner, budget }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(budget) = &self.budget {
            budget.take(n)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_cap_fail() {
        let cases: &[(usize, u64, Result<usize, ()>)] = &[(10, 10, Ok(10)), (10, 100, Ok(10)), (11, 10, Err(())), (0, 0, Ok(0))];
        for (len, max, want) in cases {
            let budget = Budget::new(*max);
            let mut reader = Bounded::new(io::Cursor::new(vec![0u8; *len]), Some(Arc::clone(&budget)));
            let got = io::copy(&mut reader, &mut io::sink()).map(|n| usize::try_from(n).unwrap()).map_err(|_| ());
            assert_eq!(got, *want, "{len} bytes, cap {max}");
            assert_eq!(budget.exceeded(), want.is_err());
        }
    }
}
