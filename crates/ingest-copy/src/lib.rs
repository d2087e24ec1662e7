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
mod crew;
mod engine;
pub mod fault;
pub mod job;
pub mod mirror;
mod pool;
pub mod progress;
mod repair;
pub mod report;
mod setup;
mod sys;
pub mod throttle;
mod verify;

use std::time::Instant;

pub use concurrency::{AutoConfig, Concurrency, MountLimits};
pub use ingest_filter::{Filter, FilterSpec, parse_age as filter_age};
pub use ingest_path::{RelPath, escape};
pub use job::{CopyJob, MultiLinked, Options, Passes, Preserve, Scope, SettleDirs, VerifyMode};
pub use mirror::{MaxDeletes, MirrorCounts};
pub use progress::{MountMeter, MountSnapshot, Progress, Snapshot};
pub use report::{
    CopyCounts, EntryMeta, FirstN, JsonLines, Mismatch, Outcome, ReportEntry, ReportSink, Summary,
    Tee, VerifyCounts,
};
pub use setup::{SetupError, Target, resolve_target};
pub use throttle::{RateLimit, Throttle};

use engine::{Pass, Walk};

/// The name of each destination in [`Progress::mount`] and [`MountLimits`]: its path, and for a
/// path given more than once (one directory standing for several mounts, as in the demo) the
/// path followed by ` #2`, ` #3`… for its later entries, so that each entry keeps its own meter
/// and permits.
pub fn mount_names(destinations: &[std::path::PathBuf]) -> Vec<String> {
    let mut names: Vec<String> = Vec::with_capacity(destinations.len());
    for d in destinations {
        let path = d.display().to_string();
        let seen = destinations
            .iter()
            .take(names.len())
            .filter(|e| e.display().to_string() == path)
            .count();
        names.push(if seen == 0 {
            path
        } else {
            format!("{path} #{}", seen + 1)
        });
    }
    names
}

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
    let limits = MountLimits::new(&job.destinations, opts);
    limits.governing(|| run_sharing(job, opts, progress, sink, &limits))
}

/// A job's source and destinations, checked and opened as [`run`] does before it copies, to run
/// many sets of scopes through ([`run_opened`]). A worker opens them once for all its shards:
/// checking every path and opening every mount's root again for each shard cost a few round
/// trips per mount and shard, and a slow server answers those last.
pub struct Opened {
    roots: engine::Roots,
}

impl Opened {
    /// The destination server's clock when the probe proved it writable (`None` without a
    /// probe): every entry this copy writes afterwards has a ctime at or after it.
    pub fn probed_at(&self) -> Option<(i64, i64)> {
        self.roots.probed_at
    }
}

/// Checks the job (options, paths), creates what is missing of each destination path, opens the
/// source and every destination and, with `opts.probe_destinations`, proves with a probe file
/// that every mount is writable and shows the same export. Copies nothing.
pub fn open(job: &CopyJob, opts: &Options, progress: &Progress) -> Result<Opened, SetupError> {
    setup::check_options(job, opts)?;
    sys::raise_fd_limit();
    Ok(Opened {
        roots: setup::open_roots(job, opts, progress)?,
    })
}

/// [`run`], taking every mount's permits from `limits`, which runs going on at the same time
/// share (the caller runs [`MountLimits::governing`] around them with `--threads auto`).
pub fn run_sharing(
    job: &CopyJob,
    opts: &Options,
    progress: &Progress,
    sink: &dyn ReportSink,
    limits: &MountLimits,
) -> Result<Summary, SetupError> {
    let started = Instant::now();
    let opened = open(job, opts, progress)?;
    let mut summary = run_opened(&opened, &job.scopes, opts, progress, sink, limits)?;
    summary.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Runs the passes over `scopes` through what [`open`] opened (`opts` as for [`run`]; its probe
/// setting is [`open`]'s alone), taking every mount's permits from `limits`.
pub fn run_opened(
    opened: &Opened,
    scopes: &[Scope],
    opts: &Options,
    progress: &Progress,
    sink: &dyn ReportSink,
    limits: &MountLimits,
) -> Result<Summary, SetupError> {
    if opts.threads == 0 {
        return Err(SetupError::NoThreads);
    }
    let roots = &opened.roots;
    let started = Instant::now();
    let mut summary = Summary::default();
    if opts.passes != Passes::VerifyOnly {
        let walk = Walk::new(Pass::Copy, opts, roots, progress, sink);
        summary.copy = walk.run(scopes, limits);
        summary.stopped = walk.stopped();
        if summary.stopped.is_some() {
            // The destination takes no more work: a verify pass would only list what the
            // copy did not reach.
            summary.elapsed_seconds = started.elapsed().as_secs_f64();
            return Ok(summary);
        }
        if opts.mirror.is_some() {
            let (extras, found) = walk.take_extras();
            summary.mirror = Some(mirror::prune(
                roots,
                opts,
                extras,
                &summary.copy,
                found,
                progress,
                sink,
            ));
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
    let finalize = scopes.iter().any(|s| matches!(s, Scope::Finalize(_)));
    // Not even started where no scope has anything to settle (most shards of a sharded copy).
    let settles = scopes.iter().any(|s| engine::settles(s, &opts.settle_dirs));
    if !opts.dry_run
        && settles
        && (opts.dir_times_in_verify || finalize || opts.verify == VerifyMode::None)
    {
        let settled = Walk::new(Pass::Settle, opts, roots, progress, sink).run(scopes, limits);
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
        let repairer = repair::EngineRepair::new(opts, roots, progress, sink);
        let repairer: Option<&dyn verify::Repair> = opts.repair.then_some(&repairer);
        let counts = verify::verify(scopes, opts, roots, progress, sink, repairer, limits);
        summary.verify = Some(counts);
    }
    summary.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    #[test]
    fn a_destination_given_twice_gets_a_name_of_its_own_each_time() {
        let d = |p: &str| PathBuf::from(p);
        assert_eq!(
            super::mount_names(&[d("/m/a"), d("/m/b"), d("/m/a"), d("/m/a")]),
            ["/m/a", "/m/b", "/m/a #2", "/m/a #3"]
        );
        assert_eq!(super::mount_names(&[d("/x")]), ["/x"]);
    }
}
