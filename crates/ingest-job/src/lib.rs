//! The rules of an ingest job that do not depend on where it runs. `vfxt-ingest run` (worker
//! processes on one machine) and the operator (pods) both call these, so the two cannot give
//! different verdicts for the same facts. No Kubernetes types, no I/O: pure and quickly tested.

pub mod exit;
pub mod indexes;
pub mod latency;
pub mod pass;
pub mod queue;
pub mod scan_failed;
pub mod units;
pub mod verdict;

/// Shards a worker runs at once (and holds claims on): two, so that its threads never idle at
/// a shard's tail (a shard's last directory, its largest file) while the next is asked for and
/// started. Both share the worker's threads' permits per mount (`ingest_copy::MountLimits`).
pub const SHARDS_AT_ONCE: usize = 2;

pub use exit::WorkerExit;
pub use pass::{Checkpoint, Pass, Report, State, Tally, Unresponsive};
pub use queue::{Completion, ShardId, ShardQueue};
pub use scan_failed::ScanFailed;
pub use verdict::{Facts, Policy, Reason, Verdict, decide};
