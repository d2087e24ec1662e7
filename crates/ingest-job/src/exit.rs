//! What a worker's exit code means for its shards: the contract between the worker binary and the
//! two drivers (the operator turns it into the Jobs' podFailurePolicy; `run` applies it directly).

/// Exit code of a worker whose every shard finished but some entries failed (each in its report).
pub const FILES_FAILED: i32 = 1;
/// Exit code of a worker given input it cannot use (bad arguments, unreadable plan, bad paths).
pub const UNUSABLE_INPUT: i32 = 2;

/// Exit code of a worker that found a destination mount unresponsive (nothing completed on it
/// for the stall timeout): it handed its claims back and told the coordinator which mount, and
/// exits so that its threads stuck in the kernel go with it. A new worker takes its place.
pub const MOUNT_UNRESPONSIVE: i32 = 4;

/// A worker's end, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerExit {
    /// Exit 0: every entry of its shards copied, up to date or excluded.
    Clean,
    /// Exit 1: its shards finished; the failed entries are in its result. Running it again walks
    /// the same entries to the same errors, so it is not retried.
    FilesFailed,
    /// Exit 2: nothing it could do; the run cannot go on with this input.
    UnusableInput,
    /// Exit 4: a destination mount stopped answering; its claims went back to the queue
    /// without cost to their retries (the shards did nothing wrong), and it is replaced.
    MountUnresponsive,
    /// Anything else (a signal, an OOM kill, a panic, an unknown code): its shards' state is
    /// unknown and they are run again, up to the retry limit.
    Crashed,
}

impl WorkerExit {
    /// From the exit code, `None` when the process was killed by a signal.
    pub fn from_code(code: Option<i32>) -> WorkerExit {
        match code {
            Some(0) => WorkerExit::Clean,
            Some(FILES_FAILED) => WorkerExit::FilesFailed,
            Some(UNUSABLE_INPUT) => WorkerExit::UnusableInput,
            Some(MOUNT_UNRESPONSIVE) => WorkerExit::MountUnresponsive,
            _ => WorkerExit::Crashed,
        }
    }

    /// Whether the worker's result accounts for every entry of its shards.
    pub fn accounted(self) -> bool {
        matches!(self, WorkerExit::Clean | WorkerExit::FilesFailed)
    }

    /// Whether its shards are run again (while retries last).
    pub fn retried(self) -> bool {
        self == WorkerExit::Crashed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_crashes_are_retried_and_only_results_account() {
        let cases = [
            (Some(0), WorkerExit::Clean, false, true),
            (Some(1), WorkerExit::FilesFailed, false, true),
            (Some(2), WorkerExit::UnusableInput, false, false),
            (Some(4), WorkerExit::MountUnresponsive, false, false),
            (Some(101), WorkerExit::Crashed, true, false),
            (Some(137), WorkerExit::Crashed, true, false),
            (None, WorkerExit::Crashed, true, false),
        ];
        for (code, class, retried, accounted) in cases {
            let c = WorkerExit::from_code(code);
            assert_eq!(c, class, "{code:?}");
            assert_eq!(c.retried(), retried, "{code:?}");
            assert_eq!(c.accounted(), accounted, "{code:?}");
        }
    }
}
