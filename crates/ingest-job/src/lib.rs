//! The rules of an ingest job that do not depend on where it runs. `vfxt-ingest run` (worker
//! processes on one machine) and the operator (pods) both call these, so the two cannot give
//! different verdicts for the same facts. No Kubernetes types, no I/O: pure and quickly tested.

pub mod exit;
pub mod indexes;
pub mod latency;
pub mod mirror;
pub mod pass;
pub mod queue;
pub mod scan_failed;
pub mod schedule;
pub mod units;
pub mod verdict;

/// The fewest shards a worker runs at once (and holds claims on): while one ends (its last
/// directory, its largest file, a slow mount's last operations) or starts (the lookups down to
/// its root), the other keeps the threads busy.
pub const MIN_SHARDS_AT_ONCE: usize = 2;
/// The most shards a worker runs at once.
pub const MAX_SHARDS_AT_ONCE: usize = 8;
/// Threads a worker's shards in flight start together, at most: each shard starts a fixed
/// count's threads (so that a lone shard at the pass's end still has them all); the mounts'
/// permits, shared by all of them, keep what works at once to the count. Threads that never
/// copy data cost a stack and a 64 KiB listing buffer; those that do, a 1 MiB buffer more.
pub const SHARD_THREADS: usize = 128;

/// Shards a worker runs at once for `threads` copy threads per worker (`None`: `auto`, whose
/// shards each start a share of its threads, see [`auto_threads_per_shard`]).
///
/// Small shards need more of them: each one's start and tail leave its threads idle. Measured
/// over three emulated nodes, one at a quarter of the others' capacity, 85 shards of about 60
/// files and 3 workers of 4 threads (`crates/ingest-latencyfs/results`): 2 at once gave 381
/// files/s, 4 gave 450 and 8 gave 467, against 473 for one `copy` with all 12 threads; one
/// worker of 12 threads, 301 / 406 / 454. Large shards lose nothing by it.
pub fn shards_at_once(threads: Option<usize>) -> usize {
    match threads {
        Some(t) => (SHARD_THREADS / t.max(1)).clamp(MIN_SHARDS_AT_ONCE, MAX_SHARDS_AT_ONCE),
        None => MAX_SHARDS_AT_ONCE,
    }
}

/// With `auto`, the threads per mount each of `shards` shards in flight starts, out of
/// `max_per_mount` (the most the worker's limit per mount can reach): all of the shards
/// together start twice the most, so that the limit can be reached with half of them ending.
pub fn auto_threads_per_shard(max_per_mount: usize, shards: usize) -> usize {
    (max_per_mount * MIN_SHARDS_AT_ONCE)
        .div_ceil(shards.max(1))
        .clamp(1, max_per_mount.max(1))
}

/// Workers a pass starts: `requested` (at least one), never more than there are shards to
/// claim (a worker with nothing to claim would only start and stop).
pub fn workers_for(requested: u32, shards: usize) -> u32 {
    requested
        .max(1)
        .min(u32::try_from(shards.max(1)).unwrap_or(u32::MAX))
}

pub use exit::WorkerExit;
pub use pass::{Checkpoint, Pace, Pass, Report, State, Tally, Unresponsive};
pub use queue::{Completion, ShardId, ShardQueue};
pub use scan_failed::ScanFailed;
pub use verdict::{DryRun, Facts, Policy, Reason, Verdict, decide};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_never_more_than_the_shards() {
        assert_eq!(workers_for(100_000, 1), 1);
        assert_eq!(workers_for(3, 85), 3);
        assert_eq!(workers_for(0, 85), 1);
        assert_eq!(workers_for(4, 0), 1);
        assert_eq!(workers_for(u32::MAX, usize::MAX), u32::MAX);
    }

    #[test]
    fn shards_at_once_grow_as_threads_shrink_within_bounds() {
        assert_eq!(shards_at_once(Some(4)), 8);
        assert_eq!(shards_at_once(Some(16)), 8);
        assert_eq!(shards_at_once(Some(32)), 4);
        assert_eq!(shards_at_once(Some(64)), 2);
        assert_eq!(shards_at_once(Some(1024)), 2);
        assert_eq!(shards_at_once(Some(0)), 8);
        assert_eq!(shards_at_once(None), 8);
        // Fixed counts: never more than SHARD_THREADS threads started, beyond the minimum.
        for t in 1..=1024 {
            let s = shards_at_once(Some(t));
            assert!((MIN_SHARDS_AT_ONCE..=MAX_SHARDS_AT_ONCE).contains(&s));
            assert!(
                s * t <= SHARD_THREADS.max(MIN_SHARDS_AT_ONCE * t),
                "{t}: {s}"
            );
        }
    }

    #[test]
    fn auto_shards_together_start_twice_the_limit_at_most() {
        assert_eq!(auto_threads_per_shard(64, 8), 16);
        assert_eq!(auto_threads_per_shard(64, 2), 64);
        assert_eq!(auto_threads_per_shard(64, 1), 64);
        assert_eq!(auto_threads_per_shard(5, 8), 2);
        assert_eq!(auto_threads_per_shard(1, 8), 1);
    }
}
