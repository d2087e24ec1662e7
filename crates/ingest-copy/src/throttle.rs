//! Rate limits on what a copy writes: bytes and entries per second, shared by every thread of a
//! process (all the shards it runs at once), so that a pass leaves the source, the network and
//! the cache cluster room for the users still working on them.
//!
//! A token bucket that lends: a caller takes what it needs and then waits off the debt, outside
//! the lock, so the average holds whatever the sizes of the pieces; the bucket holds at most a
//! quarter of a second's worth, so an idle spell is not followed by a burst. Data is copied in
//! pieces of about a tenth of a second's worth when a byte limit is set, so the rate stays even
//! within a large file too.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits on a copy's rate; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimit {
    pub bytes_per_second: Option<u64>,
    pub files_per_second: Option<u64>,
}

impl RateLimit {
    pub fn is_unlimited(&self) -> bool {
        self.bytes_per_second.is_none() && self.files_per_second.is_none()
    }
}

/// The limits of one process, shared by its threads.
#[derive(Debug)]
pub struct Throttle {
    limit: RateLimit,
    origin: Instant,
    bytes: Option<Mutex<Bucket>>,
    files: Option<Mutex<Bucket>>,
}

/// Two throttles are equal when they limit alike (options compare by value).
impl PartialEq for Throttle {
    fn eq(&self, other: &Self) -> bool {
        self.limit == other.limit
    }
}

impl Eq for Throttle {}

impl Throttle {
    /// `None` when nothing is limited.
    pub fn new(limit: RateLimit) -> Option<Throttle> {
        if limit.is_unlimited() {
            return None;
        }
        let bucket = |rate: Option<u64>| rate.map(|r| Mutex::new(Bucket::new(r as f64)));
        Some(Throttle {
            limit,
            origin: Instant::now(),
            bytes: bucket(limit.bytes_per_second),
            files: bucket(limit.files_per_second),
        })
    }

    /// The largest piece of data to copy in one call: about a tenth of a second's worth.
    pub fn piece(&self) -> Option<u64> {
        self.limit
            .bytes_per_second
            .map(|r| (r / 10).clamp(64 << 10, 64 << 20))
    }

    /// Waits until `n` more bytes may be written.
    pub fn bytes(&self, n: u64) {
        self.take(self.bytes.as_ref(), n as f64);
    }

    /// Waits until one more entry may be copied.
    pub fn entry(&self) {
        self.take(self.files.as_ref(), 1.0);
    }

    fn take(&self, bucket: Option<&Mutex<Bucket>>, n: f64) {
        let Some(b) = bucket else { return };
        let now = self.origin.elapsed().as_secs_f64();
        let wait = b.lock().unwrap().take(now, n);
        if wait > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
    }
}

/// The bucket's arithmetic (pure, so that tests drive its clock).
#[derive(Debug, Clone, PartialEq)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<f64>,
}

impl Bucket {
    fn new(rate: f64) -> Bucket {
        let burst = rate * 0.25;
        Bucket {
            rate,
            burst,
            tokens: burst,
            last: None,
        }
    }

    /// Takes `n` at `now` (seconds on any fixed clock) and returns the seconds to wait before
    /// using them.
    fn take(&mut self, now: f64, n: f64) -> f64 {
        let elapsed = self.last.map_or(0.0, |l| (now - l).max(0.0));
        self.last = Some(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= n;
        if self.tokens >= 0.0 {
            0.0
        } else {
            -self.tokens / self.rate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Callers that write as fast as they can, each waiting what it is told before it writes:
    /// the clock advances by the waits, and what is written by the end is counted.
    fn achieved(rate: f64, pieces: &[f64], callers: usize, seconds: f64) -> f64 {
        let mut b = Bucket::new(rate);
        // Each caller's own clock: when it asks for its next piece.
        let mut ready = vec![0.0f64; callers];
        let mut written = 0.0;
        let mut k = 0;
        loop {
            let (i, &now) = ready
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .unwrap();
            if now >= seconds {
                break;
            }
            let n = pieces[k % pieces.len()];
            k += 1;
            ready[i] = now + b.take(now, n);
            if ready[i] <= seconds {
                written += n;
            }
        }
        written / seconds
    }

    #[test]
    fn the_rate_holds_whatever_the_pieces_and_the_callers() {
        let rate = 1000.0;
        for (pieces, callers) in [
            (&[1.0][..], 1),
            (&[1.0, 100.0, 5.0][..], 8),
            (&[100.0][..], 4),
            (&[0.5, 20.0][..], 32),
        ] {
            let got = achieved(rate, pieces, callers, 20.0);
            assert!(
                (got / rate - 1.0).abs() < 0.05,
                "{pieces:?} x{callers}: {got} for {rate}"
            );
        }
    }

    #[test]
    fn an_idle_spell_buys_at_most_a_quarter_second_of_burst() {
        let mut b = Bucket::new(1000.0);
        assert_eq!(b.take(0.0, 250.0), 0.0);
        // Ten idle seconds: still only a quarter second's worth is free.
        assert_eq!(b.take(10.0, 250.0), 0.0);
        assert!((b.take(10.0, 100.0) - 0.1).abs() < 1e-9);
    }

    #[test]
    fn no_limit_makes_no_throttle_and_pieces_are_a_tenth_of_a_second() {
        assert!(Throttle::new(RateLimit::default()).is_none());
        let t = |b| {
            Throttle::new(RateLimit {
                bytes_per_second: Some(b),
                files_per_second: None,
            })
            .unwrap()
        };
        assert_eq!(t(100).piece(), Some(64 << 10), "at least 64 KiB");
        assert_eq!(t(100 << 20).piece(), Some(10 << 20));
    }
}
