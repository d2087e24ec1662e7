//! Live counters, shared by the engine's threads and whoever displays or reports progress.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ingest_job::latency;

/// Monotonic counters; read them at any time from another thread.
#[derive(Debug, Default)]
pub struct Progress {
    /// Entries (of every type) finished by the copy pass, copied or skipped.
    pub entries: AtomicU64,
    /// Non-directory entries finished by the copy pass: written, linked or already up to date.
    pub files: AtomicU64,
    /// Bytes of regular files finished or skipped (skipped files count their size: they are done).
    pub bytes: AtomicU64,
    /// Bytes actually written.
    pub bytes_written: AtomicU64,
    /// Entries that failed.
    pub failed: AtomicU64,
    /// Entries checked by the verify pass.
    pub verified: AtomicU64,
    /// Bytes of regular files checked by the verify pass.
    pub verified_bytes: AtomicU64,
    /// Directories listed so far, and directories found but not yet listed.
    pub dirs_listed: AtomicU64,
    pub dirs_queued: AtomicU64,
    /// Per destination, by its path as the job names it: what went through it (see
    /// [`MountMeter`]). Keyed by path, not position, so that a caller that drops a destination
    /// between runs keeps each one's figures apart. Shared with the progress of runs going on
    /// beside this one ([`Progress::sharing_meters`]): a mount is one whoever writes through it.
    mounts: Arc<Mutex<Meters>>,
}

/// The meter of each destination, by its path.
type Meters = Vec<(String, Arc<MountMeter>)>;

/// What one destination mount did, counted by the engine's threads around each task (a listing,
/// a batch of entries, a byte range): how many ran and finished, how long they took, when one last
/// finished. A mount with tasks running and none finishing for a while has stopped answering
/// (a hung NFS server behind a hard mount blocks its callers in the kernel, with no error).
#[derive(Debug)]
pub struct MountMeter {
    running: AtomicU64,
    tasks: AtomicU64,
    /// Entries handled by finished tasks (a directory listing counts one).
    entries: AtomicU64,
    bytes: AtomicU64,
    /// Milliseconds since [`epoch`] of the last change that proves the mount answers: a task
    /// finished, or work started after it was idle.
    last_answer_ms: AtomicU64,
    latency: [AtomicU64; latency::BUCKETS],
}

/// A plain copy of a [`MountMeter`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountSnapshot {
    pub running: u64,
    pub tasks: u64,
    pub entries: u64,
    /// Bytes written through it.
    pub bytes: u64,
    /// Time since the mount last answered while it had work; zero when idle.
    pub waiting: Duration,
    /// Task durations ([`ingest_job::latency`] buckets).
    pub latency: Vec<u64>,
}

/// The meters' clock: milliseconds since the first use in this process.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Default for MountMeter {
    fn default() -> Self {
        MountMeter {
            running: AtomicU64::new(0),
            tasks: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            last_answer_ms: AtomicU64::new(now_ms()),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// One task on a mount, from [`MountMeter::begin`]; [`MountTask::end`] counts it. Dropped
/// without `end` (a panic), it still counts as finished so the mount does not look hung.
pub struct MountTask<'a> {
    meter: &'a MountMeter,
    started: Instant,
    entries: u64,
}

impl MountMeter {
    pub fn begin(&self) -> MountTask<'_> {
        if self.running.fetch_add(1, Relaxed) == 0 {
            // Idle until now: the wait for an answer starts here, not at the last answer.
            self.last_answer_ms.store(now_ms(), Relaxed);
        }
        MountTask {
            meter: self,
            started: Instant::now(),
            entries: 0,
        }
    }

    /// One operation of a long task finished (a chunk of a large file read back): the mount
    /// answers, though the task goes on. A checksum verify of a file of 100 GB is one task of
    /// minutes; without this its mount would look hung.
    pub fn touch(&self) {
        self.last_answer_ms.store(now_ms(), Relaxed);
    }

    /// Bytes written through the mount.
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Relaxed);
    }

    pub fn snapshot(&self) -> MountSnapshot {
        let running = self.running.load(Relaxed);
        let since = now_ms().saturating_sub(self.last_answer_ms.load(Relaxed));
        MountSnapshot {
            running,
            tasks: self.tasks.load(Relaxed),
            entries: self.entries.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            waiting: if running > 0 {
                Duration::from_millis(since)
            } else {
                Duration::ZERO
            },
            latency: self.latency.iter().map(|b| b.load(Relaxed)).collect(),
        }
    }
}

impl MountTask<'_> {
    /// Finishes the task, which handled `entries` entries.
    pub fn end(mut self, entries: u64) {
        self.entries = entries;
    }
}

impl Drop for MountTask<'_> {
    fn drop(&mut self) {
        let m = self.meter;
        let us = self.started.elapsed().as_micros().min(u64::MAX as u128) as u64;
        m.latency[latency::bucket_of(us)].fetch_add(1, Relaxed);
        m.tasks.fetch_add(1, Relaxed);
        m.entries.fetch_add(self.entries, Relaxed);
        m.last_answer_ms.store(now_ms(), Relaxed);
        m.running.fetch_sub(1, Relaxed);
    }
}

/// A plain copy of [`Progress`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    pub bytes_written: u64,
    pub failed: u64,
    pub verified: u64,
    pub verified_bytes: u64,
    pub dirs_listed: u64,
    pub dirs_queued: u64,
}

impl std::ops::Add for Snapshot {
    type Output = Snapshot;

    /// The counters of two runs together.
    fn add(self, o: Snapshot) -> Snapshot {
        Snapshot {
            entries: self.entries + o.entries,
            files: self.files + o.files,
            bytes: self.bytes + o.bytes,
            bytes_written: self.bytes_written + o.bytes_written,
            failed: self.failed + o.failed,
            verified: self.verified + o.verified,
            verified_bytes: self.verified_bytes + o.verified_bytes,
            dirs_listed: self.dirs_listed + o.dirs_listed,
            dirs_queued: self.dirs_queued + o.dirs_queued,
        }
    }
}

impl std::iter::Sum for Snapshot {
    fn sum<I: Iterator<Item = Snapshot>>(iter: I) -> Snapshot {
        iter.fold(Snapshot::default(), |a, b| a + b)
    }
}

impl Progress {
    /// New counters, at zero, that share this progress's mount meters: the progress of another
    /// run going on at the same time through the same mounts. Each run's counters stay its own
    /// (a worker reports each shard's progress); the mounts' figures are the process's.
    pub fn sharing_meters(&self) -> Progress {
        Progress {
            mounts: self.mounts.clone(),
            ..Progress::default()
        }
    }

    /// The meter of the destination `name` (its path as the job gives it).
    pub fn mount(&self, name: &str) -> Arc<MountMeter> {
        let mut m = self.mounts.lock().unwrap();
        if let Some((_, meter)) = m.iter().find(|(n, _)| n == name) {
            return meter.clone();
        }
        let meter = Arc::new(MountMeter::default());
        m.push((name.to_owned(), meter.clone()));
        meter
    }

    /// Every destination's meter, in the order first used.
    pub fn mounts(&self) -> Vec<(String, MountSnapshot)> {
        self.mounts
            .lock()
            .unwrap()
            .iter()
            .map(|(n, m)| (n.clone(), m.snapshot()))
            .collect()
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            entries: self.entries.load(Relaxed),
            files: self.files.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
            failed: self.failed.load(Relaxed),
            verified: self.verified.load(Relaxed),
            verified_bytes: self.verified_bytes.load(Relaxed),
            dirs_listed: self.dirs_listed.load(Relaxed),
            dirs_queued: self.dirs_queued.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mount_waits_only_while_it_has_work_and_tasks_are_counted_with_their_entries() {
        let p = Progress::default();
        let m = p.mount("/d/2");
        p.mount("/d/0");
        assert_eq!(p.mounts().len(), 2);
        let idle = m.snapshot();
        assert_eq!((idle.running, idle.waiting), (0, Duration::ZERO));
        let t = m.begin();
        assert_eq!(m.snapshot().running, 1);
        t.end(7);
        let after = m.snapshot();
        assert_eq!((after.running, after.tasks, after.entries), (0, 1, 7));
        assert_eq!(after.latency.iter().sum::<u64>(), 1);
        assert_eq!(after.waiting, Duration::ZERO);
        // The same meter whoever asks.
        assert!(Arc::ptr_eq(&m, &p.mount("/d/2")));
        assert_eq!(p.mounts()[0].0, "/d/2");
    }

    #[test]
    fn progress_sharing_meters_has_its_own_counters_and_the_same_mounts() {
        let p = Progress::default();
        p.files.fetch_add(3, Relaxed);
        let m = p.mount("/d/0");
        let q = p.sharing_meters();
        assert_eq!(q.snapshot(), Snapshot::default());
        q.files.fetch_add(2, Relaxed);
        assert!(Arc::ptr_eq(&m, &q.mount("/d/0")));
        // A mount first used by the other run is the same meter here.
        assert!(Arc::ptr_eq(&q.mount("/d/1"), &p.mount("/d/1")));
        assert_eq!(p.mounts().len(), 2);
        assert_eq!((p.snapshot() + q.snapshot()).files, 5);
        assert_eq!(
            [p.snapshot(), q.snapshot()]
                .into_iter()
                .sum::<Snapshot>()
                .files,
            5
        );
    }
}
