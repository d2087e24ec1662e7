//! `vfxt-ingest copy SRC DEST [DEST...]`: the engine on one machine, no plan, no cluster.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::ValueEnum;
use ingest_copy::{
    AutoConfig, Concurrency, CopyJob, FirstN, JsonLines, MaxDeletes, Options, Passes, Progress,
    ReportSink, Scope, Summary, Tee, VerifyMode,
};

use crate::Outcome;
use crate::progress_view::{self, bytes};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Verify {
    /// No verify pass.
    None,
    /// Type, size, mtime, mode, owner and link targets.
    Metadata,
    /// Metadata, and both sides' contents read in full and compared.
    Checksum,
}

/// `--threads N` or `--threads auto`, of `copy` and `worker` (which `run` and the cluster's pods start with
/// `spec.threadsPerWorker`, an integer or `auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    Fixed(usize),
    Auto,
}

impl Threads {
    /// The fixed count; `None` for `auto`.
    pub fn count(self) -> Option<usize> {
        match self {
            Threads::Fixed(n) => Some(n),
            Threads::Auto => None,
        }
    }

    /// The engine options for it: `N` threads dealt over the mounts, or `auto`: a limit per mount found while
    /// copying, up to `max_per_mount` threads each.
    pub fn apply(self, opts: &mut Options, max_per_mount: usize) {
        match self {
            Threads::Fixed(n) => {
                opts.threads = n;
                opts.concurrency = Concurrency::Fixed;
            }
            Threads::Auto => {
                opts.concurrency = Concurrency::Auto(AutoConfig {
                    max_per_mount,
                    ..AutoConfig::default()
                })
            }
        }
    }
}

impl std::str::FromStr for Threads {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(Threads::Auto);
        }
        // 0 parses here and is refused by the engine's own check, with the same message as
        // for every other caller.
        s.parse()
            .map(Threads::Fixed)
            .map_err(|_| format!("expected a number of threads or `auto`, got {s:?}"))
    }
}

impl From<Verify> for VerifyMode {
    fn from(v: Verify) -> VerifyMode {
        match v {
            Verify::None => VerifyMode::None,
            Verify::Metadata => VerifyMode::Metadata,
            Verify::Checksum => VerifyMode::Checksum,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory whose contents are copied (never modified).
    #[arg(value_name = "SRC")]
    pub source: PathBuf,
    /// The destination: one or more mounts of the same export through different cluster IPs.
    #[arg(value_name = "DEST", required = true)]
    pub destinations: Vec<PathBuf>,
    /// Copy threads in all, dealt round robin over the DESTs; or `auto`: a limit per DEST, raised
    /// while throughput rises and lowered when operations only queue (up to --max-per-mount).
    #[arg(long, default_value = "16", value_name = "N|auto")]
    pub threads: Threads,
    /// With `--threads auto`: the most threads per DEST.
    #[arg(long, default_value_t = AutoConfig::default().max_per_mount, value_name = "N")]
    pub max_per_mount: usize,
    /// How the destination is checked after the copy: both sides listed, so entries only in the
    /// destination are reported too (never deleted); differences are repaired and checked again.
    #[arg(long, value_enum, default_value_t = Verify::Metadata)]
    pub verify: Verify,
    /// Copy nothing and repair nothing: only compare DEST with SRC (as --verify says) and report
    /// every difference; nothing is written into DEST. Exit status 1 when they differ.
    #[arg(long)]
    pub verify_only: bool,
    /// Write every failed, unsupported, repaired, deleted or different path as JSON Lines to FILE,
    /// and the audit trail: every entry the verify found equal, with its type, size and mtime
    /// (with --verify checksum also its BLAKE3 digest).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Do not copy owners (the default when not running as root, where it is not possible).
    #[arg(long)]
    pub no_owner: bool,
    /// Do not copy user extended attributes.
    #[arg(long)]
    pub no_xattrs: bool,
    /// Files larger than this many bytes are split into ranges of this size across threads.
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    pub split_threshold: u64,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
    /// Flush each file to the destination's stable storage before it gets its final mtime.
    #[arg(long)]
    pub fsync: bool,
    #[command(flatten)]
    pub filter: crate::cmd::scan::FilterArgs,
    /// Compare only and write nothing (not even a probe file or a directory time): say what a
    /// copy would create, update and write, and what is only in the destination. With
    /// `--verify checksum` contents are compared too; `--report FILE` lists every path.
    #[arg(long)]
    pub dry_run: bool,
    /// Also delete what is only in the DESTs (within the filters), after the copy pass and before
    /// the verify pass: never after a copy pass with failed entries, and never more than
    /// --max-deletes (then nothing at all). With --dry-run: say what would be deleted.
    #[arg(long)]
    pub mirror: bool,
    /// The most a --mirror may delete: a count of entries (a directory counts with everything
    /// below it) or a percentage of the destination's entries in scope.
    #[arg(long, value_name = "N|P%", requires = "mirror", value_parser = MaxDeletes::parse, default_value = "1%")]
    pub max_deletes: MaxDeletes,
    #[command(flatten)]
    pub rate: RateArgs,
}

/// How fast a copy may write; shared by `copy` and `worker` (the operator and `run` give each
/// worker its share of `spec.limits`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RateArgs {
    /// Write at most this many bytes of file data per second (all threads together).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub bytes_per_second: Option<u64>,
    /// Handle at most this many entries per second (all threads together).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub files_per_second: Option<u64>,
}

impl RateArgs {
    /// The engine's throttle, shared by every run that gets a clone of it; `None`: no limit.
    pub fn throttle(&self) -> Option<std::sync::Arc<ingest_copy::Throttle>> {
        ingest_copy::Throttle::new(self.limit()).map(std::sync::Arc::new)
    }

    /// A throttle that starts at these limits (none, perhaps) and may be changed later.
    pub fn adjustable(&self) -> ingest_copy::Throttle {
        ingest_copy::Throttle::adjustable(self.limit())
    }

    fn limit(&self) -> ingest_copy::RateLimit {
        ingest_copy::RateLimit {
            bytes_per_second: self.bytes_per_second,
            files_per_second: self.files_per_second,
        }
    }
}

pub fn run(args: Args) -> Outcome {
    let filter = match crate::cmd::scan::filter_now(&args.filter.spec()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::UnusableInput;
        }
    };
    let mut opts = Options {
        verify: args.verify.into(),
        filter,
        mirror: args.mirror.then_some(args.max_deletes),
        dry_run: args.dry_run,
        throttle: args.rate.throttle(),
        ..Options::default()
    };
    if args.verify_only || args.dry_run {
        if opts.verify == VerifyMode::None {
            let flag = if args.dry_run {
                "--dry-run"
            } else {
                "--verify-only"
            };
            eprintln!("error: {flag}: needs --verify metadata or checksum (got none)");
            return Outcome::UnusableInput;
        }
        opts.passes = Passes::VerifyOnly;
        opts.repair = false;
    }
    args.threads.apply(&mut opts, args.max_per_mount);
    opts.preserve.owner = !args.no_owner;
    opts.preserve.xattrs = !args.no_xattrs;
    opts.split_threshold = args.split_threshold;
    opts.fsync = args.fsync;
    let job = CopyJob {
        source: args.source.clone(),
        destinations: args.destinations.clone(),
        scopes: vec![Scope::Tree(ingest_copy::RelPath::root())],
    };
    // Everything is checked before anything is created: a refused copy changes nothing.
    if let Err(e) = ingest_copy::check(&job, &opts) {
        eprintln!("error: {e}");
        return Outcome::UnusableInput;
    }
    if let Some(r) = &args.report
        && let Err(e) = outside_source(r, &args.source)
    {
        eprintln!("error: --report {}: {e}", r.display());
        return Outcome::UnusableInput;
    }
    let report = match args.report.as_ref().map(File::create).transpose() {
        Ok(f) => f.map(|f| JsonLines::new(BufWriter::new(f))),
        Err(e) => {
            eprintln!(
                "error: --report {}: cannot be created ({e})",
                args.report.as_ref().unwrap().display()
            );
            return Outcome::UnusableInput;
        }
    };
    let first = FirstN::new(20);
    let mut sinks: Vec<&dyn ReportSink> = vec![&first];
    if let Some(r) = &report {
        sinks.push(r);
    }
    let sink = Tee(sinks);
    let progress = Progress::default();
    let stop = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        if !args.quiet {
            let label = match (args.dry_run, args.verify_only) {
                (true, _) => "dry run",
                (false, true) => "verify",
                (false, false) => "copy",
            };
            s.spawn(|| progress_view::report_until(&stop, label, None, || progress.snapshot()));
        }
        let r = ingest_copy::run(&job, &opts, &progress, &sink);
        stop.store(true, Ordering::Relaxed);
        r
    });
    if let Some(r) = report
        && let Err(e) = r.into_inner().flush()
    {
        eprintln!("warning: --report: could not be written completely ({e})");
    }
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::UnusableInput;
        }
    };
    let (entries, total) = first.take();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).expect("summary serializes")
        );
    } else if args.dry_run {
        for line in dry_run_lines(&summary, opts.mirror) {
            println!("{line}");
        }
        for e in &entries {
            eprintln!("  {}: {}", e.dry_run_reason(), e.path);
        }
        if total > entries.len() as u64 {
            eprintln!(
                "  … and {} more (use --report FILE for all)",
                total - entries.len() as u64
            );
        }
    } else {
        print_summary(&summary);
        for e in &entries {
            // Repairs are counted in the summary; files found equal are only in --report.
            if !matches!(
                e.outcome,
                ingest_copy::Outcome::Repaired | ingest_copy::Outcome::Matched
            ) {
                let err = e.error.as_deref().unwrap_or("");
                eprintln!("  {:?} {} ({}): {err}", e.outcome, e.path, e.op);
            }
        }
        if total > entries.len() as u64 {
            eprintln!(
                "  … and {} more (use --report FILE for all)",
                total - entries.len() as u64
            );
        }
    }
    // A dry run succeeds when it could compare everything: differences are its answer.
    let compared = summary.verify.as_ref().is_some_and(|v| v.errors == 0);
    if (args.dry_run && compared) || (!args.dry_run && summary.is_success()) {
        Outcome::Success
    } else {
        Outcome::PartialFailure
    }
}

/// What a copy would do, from a report-only comparison.
pub fn dry_run_lines(s: &Summary, mirror: Option<MaxDeletes>) -> Vec<String> {
    let Some(v) = &s.verify else {
        return vec!["dry run: nothing compared".into()];
    };
    vec![
        format!(
            "dry run, nothing written: {} entries compared; a copy would create {}, update {} and write {}",
            v.checked,
            v.missing,
            v.mismatched,
            bytes(v.differing_bytes)
        ),
        format!(
            "  {} up to date; {} only in the destination ({}); {} could not be compared",
            v.matched,
            v.extraneous,
            match mirror {
                None => "a copy keeps them".to_string(),
                Some(limit)
                    if limit.allows(
                        v.extraneous_entries,
                        v.checked - v.extraneous + v.extraneous_entries
                    ) =>
                {
                    format!(
                        "a mirror would delete them: {} entries",
                        v.extraneous_entries
                    )
                }
                Some(limit) => format!(
                    "a mirror would delete NOTHING: their {} entries are over the limit of {limit}",
                    v.extraneous_entries
                ),
            },
            v.errors
        ),
    ]
}

/// `Ok` when `path` is not (and would not be, once created) inside the directory `source`: the
/// source is never written to. What cannot be resolved is left to the code that opens it.
pub fn outside_source(path: &std::path::Path, source: &std::path::Path) -> Result<(), String> {
    let (Ok(p), Ok(src)) = (
        ingest_copy::resolve_target(path),
        std::fs::canonicalize(source),
    ) else {
        return Ok(());
    };
    if p.path().starts_with(&src) {
        return Err(format!(
            "is inside the source {}, which is never written to; give a path outside it",
            source.display()
        ));
    }
    Ok(())
}

pub fn print_summary(s: &Summary) {
    for line in summary_lines(s) {
        println!("{line}");
    }
}

/// The summary as lines: every entry's outcome, adding up to the entries in scope, then the
/// verification and its verdict. "destination identical" only when nothing is left undone and
/// the verify pass found (or left) no difference.
pub fn summary_lines(s: &Summary) -> Vec<String> {
    let c = &s.copy;
    let secs = s.elapsed_seconds.max(1e-3);
    let mut out = vec![
        format!(
            "{} entries in scope: {} copied, {} up to date, {} failed, {} vanished from the source, {} changed while read, {} not copyable, {} not attempted{}",
            c.entries,
            c.files_copied + c.directories + c.symlinks + c.hardlinks + c.specials,
            c.files_skipped + c.dirs_up_to_date,
            c.failed,
            c.vanished,
            c.changed,
            c.unsupported,
            c.not_attempted,
            match c.excluded {
                0 => String::new(),
                n => format!(", {n} excluded by the filter"),
            }
        ),
        format!(
            "  copied: {} files ({}), {} directories, {} symlinks, {} hard links, {} special files",
            c.files_copied,
            bytes(c.bytes_copied),
            c.directories,
            c.symlinks,
            c.hardlinks,
            c.specials
        ),
    ];
    if c.outcomes() != c.entries {
        out.push(format!(
            "WARNING: the outcomes add up to {}, not {}: this is a bug in vfxt-ingest, please report it",
            c.outcomes(),
            c.entries
        ));
    }
    if let Some(why) = &s.stopped {
        out.push(format!("STOPPED: {why}"));
    }
    if let Some(m) = &s.mirror {
        out.push(match &m.refused {
            Some(why) => format!(
                "MIRROR: {} names only in the destination; {why}",
                m.found
            ),
            None => format!(
                "mirror: {} names only in the destination ({} entries): {} entries deleted, {} kept (in the source again), {} failed",
                m.found, m.entries, m.deleted, m.kept, m.failed
            ),
        });
    }
    if s.metadata_failed > 0 {
        out.push(format!(
            "FAILED: final metadata of {} entries (see the report)",
            s.metadata_failed
        ));
    }
    if c.not_done() > 0 {
        out.push("not everything was copied: each entry is in the report".to_string());
    }
    match &s.verify {
        Some(v) => {
            let kinds: Vec<String> = v
                .by_kind
                .iter()
                .map(|(k, n)| format!("{k:?}={n}"))
                .collect();
            out.push(format!(
                "verified {} entries: {} matched, {} missing, {} mismatched, {} only in the destination{}, {} repaired, {} errors — {}",
                v.checked,
                v.matched,
                v.missing,
                v.mismatched,
                v.extraneous,
                if kinds.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", kinds.join(", "))
                },
                v.repaired,
                v.errors,
                if s.is_success() {
                    "destination identical"
                } else {
                    "DESTINATION DIFFERS"
                }
            ));
        }
        None if s.stopped.is_some() => out.push("not verified: the copy stopped".to_string()),
        None => out.push("not verified (--verify none)".to_string()),
    }
    out.push(format!(
        "{:.2} s, {} files/s, {}/s",
        s.elapsed_seconds,
        (c.entries_done() as f64 / secs).round() as u64,
        bytes((c.bytes_copied as f64 / secs) as u64)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_parse_a_count_or_auto_and_set_the_engine_options() {
        let parse = |s: &str| s.parse::<Threads>();
        assert_eq!(parse("8"), Ok(Threads::Fixed(8)));
        assert_eq!(parse("auto"), Ok(Threads::Auto));
        for bad in ["fast", "Auto", "-1", ""] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("a number of threads or `auto`"), "{bad}: {e}");
        }

        let mut opts = Options::default();
        Threads::Auto.apply(&mut opts, 12);
        assert_eq!(
            opts.concurrency,
            Concurrency::Auto(AutoConfig {
                max_per_mount: 12,
                ..AutoConfig::default()
            })
        );
        Threads::Fixed(5).apply(&mut opts, 12);
        assert_eq!((opts.threads, opts.concurrency), (5, Concurrency::Fixed));
    }
}
