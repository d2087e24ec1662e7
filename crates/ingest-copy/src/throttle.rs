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
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Limits on a copy's rate; `None` is unlimited. The job's schedule speaks the same type, so
/// a share of it is handed to the throttle as is.
pub use ingest_job::schedule::Rates as RateLimit;

/// The limits of one process, shared by its threads. They may change while it runs (a schedule,
/// a user's edit, workers coming and going): [`Throttle::set`].
#[derive(Debug)]
pub struct Throttle {
    limit: Mutex<RateLimit>,
    /// Some limit is set: the unlimited case costs one relaxed load per call.
    active: AtomicBool,
    origin: Instant,
    bytes: Mutex<Option<Bucket>>,
    files: Mutex<Option<Bucket>>,
}

/// Two throttles are equal when they limit alike (options compare by value).
impl PartialEq for Throttle {
    fn eq(&self, other: &Self) -> bool {
        self.limit() == other.limit()
    }
}

impl Eq for Throttle {}

impl Throttle {
    /// `None` when nothing is limited.
    pub fn new(limit: RateLimit) -> Option<Throttle> {
        (!limit.is_unlimited()).then(|| Throttle::adjustable(limit))
    }

    /// A throttle whose limits may change later, unlimited ones included.
    pub fn adjustable(limit: RateLimit) -> Throttle {
        let t = Throttle {
            limit: Mutex::new(RateLimit::default()),
            active: AtomicBool::new(false),
            origin: Instant::now(),
            bytes: Mutex::new(None),
            files: Mutex::new(None),
        };
        t.set(limit);
        t
    }

    /// The limits in force.
    pub fn limit(&self) -> RateLimit {
        *self.limit.lock().unwrap()
    }

    /// New limits from now on. A rate that stays keeps its bucket (no burst from the change).
    pub fn set(&self, limit: RateLimit) {
        let mut now = self.limit.lock().unwrap();
        if *now == limit {
            return;
        }
        let renew = |b: &Mutex<Option<Bucket>>, rate: Option<u64>| {
            let mut b = b.lock().unwrap();
            match (b.as_mut(), rate) {
                (_, None) => *b = None,
                (Some(old), Some(r)) => old.rerate(r as f64),
                (None, Some(r)) => *b = Some(Bucket::new(r as f64)),
            }
        };
        renew(&self.bytes, limit.bytes_per_second);
        renew(&self.files, limit.files_per_second);
        *now = limit;
        self.active.store(!limit.is_unlimited(), Relaxed);
    }

    /// The largest piece of data to copy in one call: about a tenth of a second's worth.
    pub fn piece(&self) -> Option<u64> {
        if !self.active.load(Relaxed) {
            return None;
        }
        self.limit()
            .bytes_per_second
            .map(|r| (r / 10).clamp(64 << 10, 64 << 20))
    }

    /// Waits until `n` more bytes may be written.
    pub fn bytes(&self, n: u64) {
        self.take(&self.bytes, n as f64);
    }

    /// Waits until one more entry may be copied.
    pub fn entry(&self) {
        self.take(&self.files, 1.0);
    }

    fn take(&self, bucket: &Mutex<Option<Bucket>>, n: f64) {
        if !self.active.load(Relaxed) {
            return;
        }
        let now = self.origin.elapsed().as_secs_f64();
        let (mut wait, mut rate) = match bucket.lock().unwrap().as_mut() {
            Some(b) => (b.take(now, n), b.rate),
            None => return,
        };
        // In slices: a wait computed at one rate is stretched (or shrunk) to a new one, and ends
        // when the limit is lifted.
        while wait > 0.0 {
            let step = wait.min(WAIT_SLICE);
            std::thread::sleep(Duration::from_secs_f64(step));
            wait -= step;
            match bucket.lock().unwrap().as_ref().map(|b| b.rate) {
                None => return,
                Some(r) if r != rate => {
                    wait = stretch(wait, rate, r);
                    rate = r;
                }
                Some(_) => {}
            }
        }
    }
}

/// How long a waiting caller sleeps before it looks whether the rate changed.
const WAIT_SLICE: f64 = 0.1;

/// What is left of a wait computed at rate `from` (it waits off a debt in bytes), at rate `to`.
fn stretch(wait: f64, from: f64, to: f64) -> f64 {
    wait * from / to
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

    /// A new rate. A debt is kept (what was taken was taken): the callers waiting it off stretch
    /// what is left of their waits to the new rate (see `Throttle::take`), so the debt drains
    /// at the new rate and later callers queue after it. Credit: no more than a burst of it.
    fn rerate(&mut self, rate: f64) {
        self.rate = rate;
        self.burst = rate * 0.25;
        self.tokens = self.tokens.min(self.burst);
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
    fn a_changed_rate_holds_from_the_change_on() {
        // 32 callers taking a tenth of a second's worth each (deep in debt, as a worker's threads
        // are): 10 s at 1000/s, then 10 s at 250/s. A piece counts when its wait ends, and the
        // waits still running at the change stretch to the new rate. Each half at its own rate.
        let mut b = Bucket::new(1000.0);
        // Per caller: when its wait ends, and the piece it then writes.
        let mut callers = vec![(0.0f64, 0.0f64); 32];
        let (mut first, mut second) = (0.0f64, 0.0f64);
        loop {
            let i = (0..callers.len())
                .min_by(|&x, &y| callers[x].0.total_cmp(&callers[y].0))
                .unwrap();
            let (now, piece) = callers[i];
            if now >= 20.0 {
                break;
            }
            if now >= 10.0 && b.rate == 1000.0 {
                for c in callers.iter_mut().filter(|c| c.0 > now) {
                    c.0 = now + stretch(c.0 - now, 1000.0, 250.0);
                }
                b.rerate(250.0);
                continue; // the earliest may have moved
            }
            if now < 10.0 {
                first += piece;
            } else {
                second += piece;
            }
            let n = b.rate / 10.0;
            callers[i] = (now + b.take(now, n), n);
        }
        assert!((first / 10.0 / 1000.0 - 1.0).abs() < 0.05, "{first}");
        assert!((second / 10.0 / 250.0 - 1.0).abs() < 0.05, "{second}");
    }

    #[test]
    fn an_adjustable_throttle_starts_unlimited_and_takes_new_limits() {
        let t = Throttle::adjustable(RateLimit::default());
        assert_eq!(t.piece(), None);
        t.entry(); // unlimited: returns at once
        t.set(RateLimit {
            bytes_per_second: Some(10 << 20),
            files_per_second: Some(5),
        });
        assert_eq!(t.piece(), Some(1 << 20));
        assert_eq!(t.limit().files_per_second, Some(5));
        t.set(RateLimit::default());
        assert_eq!((t.piece(), t.limit()), (None, RateLimit::default()));
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
