//! The copy and verify engine.
//!
//! One source tree, one destination export reached through one or more mounts (one per cluster
//! node IP). Worker threads are bound to mounts round robin; each file is written through exactly
//! one of them. Files are written in place (final name, no temp file + rename) and get their
//! mtime only once their data is complete, so a half-written file never looks finished and a
//! re-run skips exactly the files that are done.
//!
//! Entry point: [`run`]. Inputs: [`CopyJob`] and [`Options`]. Outputs: a [`Summary`], live
//! [`Progress`] counters, and per-path [`ReportEntry`]s sent to a [`ReportSink`].

pub mod concurrency;
mod engine;
pub mod fault;
pub mod job;
pub mod progress;
mod repair;
pub mod report;
mod setup;
mod sys;
mod verify;

use std::time::Instant;

pub use concurrency::{AutoConfig, Concurrency};
pub use ingest_path::{RelPath, escape};
pub use job::{CopyJob, MultiLinked, Options, Passes, Preserve, Scope, VerifyMode};
pub use progress::{MountMeter, MountSnapshot, Progress, Snapshot};
pub use report::{
    CopyCounts, FirstN, JsonLines, Mismatch, Outcome, ReportEntry, ReportSink, Summary, Tee,
    VerifyCounts,
};
pub use setup::{SetupError, Target, resolve_target};

use engine::{Pass, Walk};

/// Checks a job as [`run`] does before it creates anything: the options, the source, and every
/// destination against the source (one that does not exist yet by where it would be). Creates and
/// changes nothing. What only writing can show (a destination that cannot be written, DESTs that
/// are not the same export) is left to [`run`], which undoes what it created when it refuses.
pub fn check(job: &CopyJob, opts: &Options) -> Result<(), SetupError> {
    setup::check_options(job, opts)?;
    setup::check_paths(job).map(drop)
}

/// Checks the job, then runs its passes. Per-entry problems are counted in the summary and sent
/// to `sink`; only unusable input is an `Err`.
pub fn run(
    job: &CopyJob,
    opts: &Options,
    progress: &Progress,
    sink: &dyn ReportSink,
) -> Result<Summary, SetupError> {
    let started = Instant::now();
    setup::check_options(job, opts)?;
    sys::raise_fd_limit();
    let roots = setup::open_roots(job, opts, progress)?;
    let mut summary = Summary::default();
    if opts.passes != Passes::VerifyOnly {
        let walk = Walk::new(Pass::Copy, opts, &roots, progress, sink);
        summary.copy = walk.run(&job.scopes);
        summary.stopped = walk.stopped();
        if summary.stopped.is_some() {
            // The destination takes no more work: a verify pass would only list what the
            // copy did not reach.
            summary.elapsed_seconds = started.elapsed().as_secs_f64();
            return Ok(summary);
        }
    }
    if opts.passes == Passes::CopyOnly
        || (opts.passes == Passes::CopyThenVerify && opts.verify == VerifyMode::None)
    {
        summary.elapsed_seconds = started.elapsed().as_secs_f64();
        return Ok(summary);
    }
    // After a sharded copy, directory times (set while other shards still wrote into them) and
    // files copied in ranges get their final metadata now that every shard is done: the copy's
    // last step, before anything is compared. What it cannot set is reported and counted.
    let finalize = job.scopes.iter().any(|s| matches!(s, Scope::Finalize(_)));
    if opts.dir_times_in_verify || finalize || opts.verify == VerifyMode::None {
        let settled = Walk::new(Pass::Settle, opts, &roots, progress, sink).run(&job.scopes);
        summary.metadata_failed += settled.failed;
        // A file copied in ranges gets its outcome here, when it is finalized: it is one of the
        // copy's entries (copied, found finished, or gone from the source).
        let c = &mut summary.copy;
        let finalized = settled.files_copied + settled.files_skipped + settled.vanished;
        c.entries += finalized;
        c.files_copied += settled.files_copied;
        c.files_skipped += settled.files_skipped;
        c.vanished += settled.vanished;
        c.bytes_copied += settled.bytes_copied;
    }
    if opts.verify != VerifyMode::None {
        let repairer = repair::EngineRepair::new(opts, &roots, progress, sink);
        let repairer: Option<&dyn verify::Repair> = opts.repair.then_some(&repairer);
        let counts = verify::verify(&job.scopes, opts, &roots, progress, sink, repairer);
        summary.verify = Some(counts);
    }
    summary.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}
