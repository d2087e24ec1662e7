//! `vfxt-ingest scan SRC`: walk the source in parallel, plan shards, print what was found.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ingest_copy::{Filter, FilterSpec};
use ingest_plan::CostModel;
use ingest_plan::format::Plan;
use ingest_plan::planner::{PlanOptions, plan};
use ingest_plan::scan::{Scan, ScanOptions, scan};

use crate::Outcome;
use crate::progress_view::bytes;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory to scan (never modified).
    #[arg(value_name = "SRC")]
    pub source: PathBuf,
    /// Shards to aim for (at least 1).
    #[arg(long, short = 'k', default_value_t = 256)]
    pub shards: u32,
    /// Scan threads (at least 1). On NFS, more threads hide round trips.
    #[arg(long, default_value_t = 16)]
    pub threads: usize,
    /// Workers the shards are dealt to (at least 1), spread round robin over the servers.
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Destination server names, in dealing order (repeat the flag). Default: one, "local".
    #[arg(long = "server", value_name = "NAME")]
    pub servers: Vec<String>,
    /// Upper bound on files per shard (lowers the target shard cost).
    #[arg(long, value_name = "N")]
    pub max_files: Option<u64>,
    /// Upper bound on bytes per shard (lowers the target shard cost).
    #[arg(long, value_name = "BYTES")]
    pub max_bytes: Option<u64>,
    #[command(flatten)]
    pub cost: CostArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Write the plan (JSON) to FILE.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Running as the operator's scan pod: store the plan in the IngestJob's plan ConfigMaps and
    /// write the result as the termination message (the contract in crates/ingest-operator/README.md).
    #[arg(long)]
    pub cluster: bool,
}

/// The cost model's constants; shared by `scan` and `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct CostArgs {
    /// Predicted seconds per entry for one worker (creates, opens and metadata dominate small files).
    #[arg(long, default_value_t = CostModel::default().seconds_per_entry, value_name = "SECONDS")]
    pub seconds_per_entry: f64,
    /// Predicted bytes per second of one worker (dominates files over ~10 MiB).
    #[arg(long, default_value_t = CostModel::default().bytes_per_second, value_name = "BYTES")]
    pub bytes_per_second: f64,
}

impl CostArgs {
    pub fn model(&self) -> Result<CostModel, String> {
        if !(self.seconds_per_entry.is_finite() && self.seconds_per_entry > 0.0) {
            return Err(format!(
                "--seconds-per-entry: {} must be a positive number",
                self.seconds_per_entry
            ));
        }
        if !(self.bytes_per_second.is_finite() && self.bytes_per_second > 0.0) {
            return Err(format!(
                "--bytes-per-second: {} must be a positive number",
                self.bytes_per_second
            ));
        }
        Ok(CostModel {
            seconds_per_entry: self.seconds_per_entry,
            bytes_per_second: self.bytes_per_second,
        })
    }
}

/// What a plan's scan found, as the IngestJob's `status.totals` says it (the cluster's scan pod
/// and `run`).
pub fn status_totals(t: &ingest_plan::format::Totals) -> ingest_api::job::Totals {
    ingest_api::job::Totals {
        // The status counts every non-directory as a file.
        files: t.files + t.others,
        directories: t.directories,
        bytes: t.bytes,
        excluded: t.excluded,
    }
}

/// Which entries are in scope; shared by `scan`, `copy` and the operator's scan pod (`run` and the
/// cluster take the same from `spec.filter`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Leave out entries matching GLOB (repeat the flag). Without `/` a pattern matches a name at
    /// any depth (`*.tmp`); with one it is anchored at the root (`projects/*/cache`); a trailing
    /// `/` matches directories only (`.snapshot/`), which are then left out whole.
    #[arg(long = "exclude", value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Only files matching GLOB, or below a directory matching it, are in scope (repeat the flag).
    #[arg(long = "include", value_name = "GLOB")]
    pub include: Vec<String>,
    /// Leave out files modified less than AGE ago (10m, 2h, 7d, 1w): still being written.
    #[arg(long, value_name = "AGE", value_parser = ingest_copy::filter_age)]
    pub min_age: Option<u64>,
    /// Leave out files modified more than AGE ago.
    #[arg(long, value_name = "AGE", value_parser = ingest_copy::filter_age)]
    pub max_age: Option<u64>,
}

impl FilterArgs {
    pub fn spec(&self) -> FilterSpec {
        FilterSpec {
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            min_age_seconds: self.min_age,
            max_age_seconds: self.max_age,
            reference_time: None,
        }
    }
}

/// The filter with its ages measured from now (a scan's start), compiled; errors name the flag
/// or pattern.
pub fn filter_now(spec: &FilterSpec) -> Result<Filter, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Filter::new(&spec.clone().fixed_at(now)).map_err(|e| format!("filter: {e}"))
}

/// Scans `source` and plans it; errors are unusable input, worded for the command line.
pub fn scan_and_plan(
    source: &Path,
    threads: usize,
    filter: &Filter,
    opts: &PlanOptions,
) -> Result<(Scan, Plan, f64), String> {
    if threads == 0 {
        return Err("--threads: must be at least 1 (got 0)".into());
    }
    if opts.shards == 0 {
        return Err("--shards: must be at least 1 (got 0)".into());
    }
    if opts.workers == 0 {
        return Err("--workers: must be at least 1 (got 0)".into());
    }
    let started = Instant::now();
    let s = scan(
        source,
        &ScanOptions {
            threads,
            filter: filter.clone(),
            ..ScanOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let p = plan(&s, opts).map_err(|e| e.to_string())?;
    Ok((s, p, started.elapsed().as_secs_f64()))
}

pub fn run(args: Args) -> Outcome {
    let cost = match args.cost.model() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::UnusableInput;
        }
    };
    let servers = if args.servers.is_empty() {
        vec!["local".to_string()]
    } else {
        args.servers.clone()
    };
    let opts = PlanOptions {
        shards: args.shards,
        workers: args.workers,
        servers,
        cost,
        max_files: args.max_files,
        max_bytes: args.max_bytes,
        ..PlanOptions::default()
    };
    let scanned = filter_now(&args.filter.spec())
        .and_then(|filter| scan_and_plan(&args.source, args.threads, &filter, &opts));
    let (s, p, secs) = match scanned {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::UnusableInput;
        }
    };
    if let Some(out) = &args.out
        && let Err(e) = write_plan(out, &p)
    {
        eprintln!("error: --out {}: {e}", out.display());
        return Outcome::UnusableInput;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary_json(&s, &p, secs)).expect("summary serializes")
        );
    } else {
        print_summary(&s, &p, secs);
    }
    if args.cluster {
        return match store_in_cluster(&p, opts.servers.len()) {
            // The scan pod's exit code says whether the plan is stored. Entries it could not read are
            // per-entry outcomes, like a copy's failed files: counted and listed in the termination
            // message and the plan summary, for the operator to weigh against the failure policy.
            Ok(()) => Outcome::Success,
            Err(e) => {
                // Not unusable input: the API may come back; Kubernetes retries the scan pod (exit 1).
                // Nothing is written to the termination log, so its message is this error (from the log).
                eprintln!("error: storing the plan in the cluster: {e}");
                Outcome::PartialFailure
            }
        };
    }
    if p.totals.errors > 0 {
        Outcome::PartialFailure
    } else {
        Outcome::Success
    }
}

/// The scan pod's side of the operator contract: the plan's chunks into ConfigMaps (chunk 0, with
/// the summary, last: the commit marker), then the result as the termination message.
fn store_in_cluster(p: &Plan, servers: usize) -> Result<(), String> {
    use ingest_api::report::PodResult;
    use ingest_operator::plan_store::{MAX_CHUNK_BYTES, PlanSummary};
    use ingest_operator::pod::{self, PodEnv};

    let env = PodEnv::from_env()?;
    let chunks = p.to_chunks(MAX_CHUNK_BYTES).map_err(|e| e.to_string())?;
    let totals = status_totals(&p.totals);
    let failures = scan_failures(p);
    let summary = PlanSummary {
        chunks: chunks.len() as u32,
        shards: p.shards.len() as u64,
        shards_per_server: (0..servers)
            .map(|i| p.shards_of_server(i as u32).count() as u64)
            .collect(),
        totals: totals.clone(),
        failed: p.totals.errors,
        failures: failures
            .iter()
            .take(ingest_api::MAX_LISTED_FAILURES)
            .cloned()
            .collect(),
    };
    pod::save_plan_blocking(&env, &chunks, &summary).map_err(|e| e.to_string())?;
    let result = PodResult {
        files: totals.files,
        bytes: totals.bytes,
        totals: Some(totals),
        shards: Some(p.shards.len() as u64),
        failed: p.totals.errors,
        failures,
        ..PodResult::default()
    };
    pod::write_result(Path::new(pod::TERMINATION_LOG), &result).map_err(|e| e.to_string())
}

/// The entries the scan could not read, as the status and reports list failures (reasons cut to the status'
/// limit). `Plan::scan_errors` keeps the first of them; all are counted in `totals.errors`.
pub fn scan_failures(p: &Plan) -> Vec<ingest_api::FileFailure> {
    p.scan_errors
        .iter()
        .map(|e| {
            let mut reason = format!("scan: {}", e.error);
            ingest_api::report::truncate_utf8(&mut reason, ingest_api::job::MAX_FAILURE_REASON);
            ingest_api::FileFailure {
                path: e.path.to_string(),
                reason,
            }
        })
        .collect()
}

/// Writes the plan durably: a temp file, fsync, rename (a crash never leaves half a plan).
pub fn write_plan(path: &Path, p: &Plan) -> std::io::Result<()> {
    write_durably(path, p.to_json().as_bytes())
}

pub fn write_durably(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

fn bucket_label(b: usize) -> String {
    if b == 0 {
        "0 B".to_string()
    } else {
        format!(
            "[{}, {})",
            bytes(1u64 << (b - 1)),
            bytes(1u64.checked_shl(b as u32).unwrap_or(u64::MAX))
        )
    }
}

pub fn print_summary(s: &Scan, p: &Plan, secs: f64) {
    let t = &p.totals;
    println!(
        "scanned {} files, {} directories, {} other entries, {} in {:.2} s ({} entries/s)",
        t.files,
        t.directories,
        t.others,
        bytes(t.bytes),
        secs,
        ((t.files + t.directories + t.others) as f64 / secs.max(1e-3)).round() as u64
    );
    if t.excluded > 0 {
        println!(
            "excluded by the filter: {} entries (a directory once, not what is below it)",
            t.excluded
        );
    }
    if t.linked_inodes > 0 {
        println!(
            "hard links: {} inodes with {} paths (each inode kept in one shard)",
            t.linked_inodes, t.linked_paths
        );
    }
    if t.unreadable > 0 || t.errors > 0 {
        println!(
            "UNREADABLE: {} directories skipped, {} entries failed in all:",
            t.unreadable, t.errors
        );
        for e in &p.scan_errors {
            println!("  {}: {}", e.path, e.error);
        }
    }
    println!("file sizes:");
    for (b, n) in t.size_histogram.iter().enumerate().filter(|(_, n)| **n > 0) {
        println!("  {:>24} {n}", bucket_label(b));
    }
    if t.age_histogram.iter().any(|n| *n > 0) {
        println!("file ages (mtime, from the scan's start):");
        for (n, (label, _)) in t.age_histogram.iter().zip(ingest_plan::scan::AGE_BUCKETS) {
            if *n > 0 {
                println!("  {label:>24} {n}");
            }
        }
    }
    println!("largest directories (own entries):");
    for d in s.largest_dirs(5) {
        let path = if d.path.is_root() {
            ".".to_string()
        } else {
            d.path.to_string()
        };
        println!(
            "  {:>10} entries {:>10}  {path}",
            d.own_entries(),
            bytes(d.bytes)
        );
    }
    let pr = &p.prediction;
    println!(
        "plan: {} shards (asked {}), {} workers on {} servers; predicted {:.1} s per worker, busiest {:.1} s, imbalance {:.3} (max/mean), largest shard {:.2}× the mean",
        p.shards.len(),
        p.requested_shards,
        p.workers,
        p.servers.len(),
        pr.mean,
        pr.makespan,
        pr.imbalance,
        pr.shard_imbalance
    );
}

pub fn summary_json(s: &Scan, p: &Plan, secs: f64) -> serde_json::Value {
    let largest: Vec<serde_json::Value> = s
        .largest_dirs(5)
        .into_iter()
        .map(|d| serde_json::json!({"path": d.path, "entries": d.own_entries(), "bytes": d.bytes}))
        .collect();
    let hist: Vec<serde_json::Value> = p
        .totals
        .size_histogram
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(b, n)| serde_json::json!({"bucket": bucket_label(b), "minBytes": if b == 0 { 0 } else { 1u64 << (b - 1) }, "files": n}))
        .collect();
    let ages: Vec<serde_json::Value> = p
        .totals
        .age_histogram
        .iter()
        .zip(ingest_plan::scan::AGE_BUCKETS)
        .filter(|(n, _)| **n > 0)
        .map(|(n, (label, below))| {
            serde_json::json!({"bucket": label, "belowSeconds": (below < i64::MAX).then_some(below), "files": n})
        })
        .collect();
    serde_json::json!({
        "totals": p.totals,
        "sizeHistogram": hist,
        "ageHistogram": ages,
        "largestDirectories": largest,
        "shards": p.shards.len(),
        "prediction": p.prediction,
        "scanErrors": p.scan_errors,
        "seconds": secs,
    })
}

#[cfg(test)]
mod filter_flags {
    use super::*;
    use clap::Parser;

    /// The operator hands `spec.filter` to its scan pod as flags (`FilterSpec::to_args`): they
    /// must read back as the same filter, patterns that start with `-` included.
    #[test]
    fn a_filter_given_as_flags_reads_back_the_same() {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            filter: FilterArgs,
        }
        let spec = FilterSpec {
            exclude: vec!["-odd".into(), "*.tmp".into(), ".snapshot/".into()],
            include: vec!["a/**".into()],
            min_age_seconds: Some(600),
            max_age_seconds: Some(86_400),
            reference_time: None,
        };
        let argv = std::iter::once("scan".to_string()).chain(spec.to_args());
        assert_eq!(Cli::try_parse_from(argv).unwrap().filter.spec(), spec);
        let bad = Cli::try_parse_from(["scan", "--min-age", "10x"])
            .err()
            .unwrap();
        assert!(bad.to_string().contains("--min-age"), "{bad}");
    }
}
