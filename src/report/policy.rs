//! The sender's policy, pure: what an HTTP answer means for an event, how
//! long to wait before the next try, and the bounded queue.

use std::collections::VecDeque;
use std::time::Duration;

/// What to do with an item after one try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: delivered.
    Delivered,
    /// Try again later: no answer, 408, 429, 5xx (and anything odd).
    Retry,
    /// A 4xx other than 408/429: the sink will never take it.
    Drop,
}

/// `status` is `None` when there was no answer (refused, reset, timeout).
pub fn verdict(status: Option<u16>) -> Verdict {
    match status {
        Some(200..=299) => Verdict::Delivered,
        Some(408 | 429) => Verdict::Retry,
        Some(400..=499) => Verdict::Drop,
        _ => Verdict::Retry,
    }
}

/// Wait before retry `n` (1-based): 250 ms doubling, capped at 8 s, so a
/// sink that comes back is reached again soon.
pub fn backoff(n: u32) -> Duration {
    Duration::from_millis(250u64 << n.saturating_sub(1).min(5))
}

/// A FIFO that holds at most `cap` items; past that, new items are
/// dropped and counted (the oldest undelivered event is the most telling).
#[derive(Debug)]
pub struct Queue<T> {
    items: VecDeque<T>,
    cap: usize,
    pub dropped: u64,
}

impl<T> Queue<T> {
    pub fn new(cap: usize) -> Self {
        Queue { items: VecDeque::new(), cap, dropped: 0 }
    }

    /// False (and counted) when the queue was full.
    pub fn push(&mut self, item: T) -> bool {
        if self.items.len() >= self.cap {
            self.dropped += 1;
            return false;
        }
        self.items.push_back(item);
        true
    }

    pub fn front(&self) -> Option<&T> {
        self.items.front()
    }

    pub fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let cases = [
            (Some(200), Verdict::Delivered),
            (Some(202), Verdict::Delivered),
            (Some(204), Verdict::Delivered),
            (Some(400), Verdict::Drop),
            (Some(401), Verdict::Drop),
            (Some(404), Verdict::Drop),
            (Some(408), Verdict::Retry),
            (Some(429), Verdict::Retry),
            (Some(500), Verdict::Retry),
            (Some(503), Verdict::Retry),
            (Some(301), Verdict::Retry),
            (None, Verdict::Retry),
        ];
        for (status, want) in cases {
            assert_eq!(verdict(status), want, "{status:?}");
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let got: Vec<u64> = (1..=8).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(got, [250, 500, 1000, 2000, 4000, 8000, 8000, 8000]);
    }

    #[test]
    fn a_full_queue_drops_and_counts_the_newest() {
        let mut q = Queue::new(2);
        assert_eq!([q.push(1), q.push(2), q.push(3), q.push(4)], [true, true, false, false]);
        assert_eq!((q.len(), q.dropped), (2, 2));
        assert_eq!((q.pop(), q.pop(), q.pop()), (Some(1), Some(2), None));
        assert!(q.push(5));
        assert_eq!(q.front(), Some(&5));
    }
}
