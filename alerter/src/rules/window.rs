//! A sliding window of counts in time buckets: memory bounded by the
//! number of buckets, whatever the number of probes.
//!
//! The window is cut in at most [`MAX_BUCKETS`] buckets (at least one
//! second wide), each counting probes and the "bad" ones among them: for
//! the error rate the failing probes, for a latency quantile the probes
//! slower than the threshold. "p95 above 1 s" is exactly "more than 5 % of
//! the probes slower than 1 s", so the quantile needs no histogram and no
//! sample is kept. A bucket is 16 bytes: a group's window is at most
//! about 1 KiB.

use std::collections::VecDeque;

/// Buckets per window (the window's resolution is window / 60).
pub const MAX_BUCKETS: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    index: u64,
    total: u32,
    bad: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    width_ms: u64,
    slots: u64,
    /// The newest bucket index seen or evaluated at: the window ends there.
    current: u64,
    buckets: VecDeque<Bucket>,
}

impl Window {
    pub fn new(window_ms: u64) -> Self {
        let width_ms = (window_ms / MAX_BUCKETS).max(1000);
        Window {
            width_ms,
            slots: window_ms.div_ceil(width_ms).max(1),
            current: 0,
            buckets: VecDeque::new(),
        }
    }

    /// Counts one probe at `ts_ms`; probes older than the window (behind
    /// the newest one seen) are ignored.
    pub fn add(&mut self, ts_ms: u64, bad: bool) {
        let index = ts_ms / self.width_ms;
        self.current = self.current.max(index);
        if index + self.slots <= self.current {
            return;
        }
        let at = self.buckets.iter().rposition(|b| b.index <= index);
        let bucket = match at {
            Some(at) if self.buckets[at].index == index => &mut self.buckets[at],
            other => {
                let at = other.map_or(0, |at| at + 1);
                self.buckets.insert(
                    at,
                    Bucket {
                        index,
                        total: 0,
                        bad: 0,
                    },
                );
                &mut self.buckets[at]
            }
        };
        bucket.total = bucket.total.saturating_add(1);
        bucket.bad = bucket.bad.saturating_add(u32::from(bad));
        self.expire_before();
    }

    /// Drops what fell out of the window at `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        self.current = self.current.max(now_ms / self.width_ms);
        self.expire_before();
    }

    fn expire_before(&mut self) {
        while self
            .buckets
            .front()
            .is_some_and(|b| b.index + self.slots <= self.current)
        {
            self.buckets.pop_front();
        }
    }

    /// (probes, bad probes) in the window.
    pub fn counts(&self) -> (u64, u64) {
        self.buckets.iter().fold((0, 0), |(t, b), bucket| {
            (t + u64::from(bucket.total), b + u64::from(bucket.bad))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_the_window_holds_and_forgets_the_rest() {
        let mut w = Window::new(60_000); // 1 s buckets, 60 of them
        w.add(1_000, true);
        w.add(1_500, false);
        w.add(30_000, false);
        assert_eq!(w.counts(), (3, 1));
        w.expire(61_000);
        assert_eq!(w.counts(), (1, 0), "the probes of second 1 left the window");
        w.add(1_200, true); // older than the window: ignored
        assert_eq!(w.counts(), (1, 0));
        w.add(29_000, true); // out of order but inside: counted
        assert_eq!(w.counts(), (2, 1));
        w.expire(200_000);
        assert!(w.is_empty());
    }

    #[test]
    fn memory_is_bounded_by_the_bucket_count() {
        let mut w = Window::new(300_000);
        for ts in (0..3_000_000).step_by(100) {
            w.add(ts, ts % 2 == 0);
        }
        assert!(w.buckets.len() as u64 <= MAX_BUCKETS);
    }
}
