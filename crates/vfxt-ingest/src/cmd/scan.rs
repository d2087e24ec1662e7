//! `vfxt-ingest scan SRC`: walk the source in parallel, plan shards, print what was found.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ingest_api::estimate::{Rates, rate_pass};
use ingest_api::job::{IngestJobStatus, PassRecord};
use ingest_copy::{Filter, FilterSpec};
use ingest_plan::CostModel;
use ingest_plan::format::{DirectoryTotals, Plan};
use ingest_plan::planner::{PlanOptions, plan};
use ingest_plan::scan::{Scan, ScanOptions, scan};
use ingest_plan::summary::{age_rows, size_rows};

use crate::Outcome;
use crate::cmd::claims_client::{End, Endpoint, GIVE_UP};
use crate::progress_view::{bytes, duration};

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
    /// Estimate how long a run over this tree takes from the rates an earlier Copy pass measured:
    /// PATH is a `vfxt-ingest run` state directory (or its status.yaml), or an IngestJob's YAML
    /// (`kubectl get ingestjob NAME -o yaml`).
    #[arg(long, value_name = "PATH")]
    pub rates_from: Option<PathBuf>,
    /// Running as the operator's scan pod: send the plan to the operator (at --claims-url), which
    /// stores it in the IngestJob's plan ConfigMaps, and write the result as the termination
    /// message (the contract in crates/ingest-operator/README.md).
    #[arg(long, requires = "claims_url")]
    pub cluster: bool,
    /// With --cluster: the operator's endpoint (`http://HOST[:PORT]`), as a claims worker is given it.
    #[arg(long, value_name = "URL", requires = "cluster")]
    pub claims_url: Option<String>,
    /// With --cluster: the pod's service-account token for the endpoint, sent as
    /// `Authorization: Bearer`.
    #[arg(
        long,
        value_name = "FILE",
        requires = "cluster",
        default_value_os_t = crate::cmd::claims_client::default_token_file()
    )]
    pub token_file: PathBuf,
    /// With --cluster: where the result goes (the kubelet reads the termination message there).
    #[arg(
        long,
        value_name = "FILE",
        requires = "cluster",
        default_value = ingest_operator::pod::TERMINATION_LOG
    )]
    pub result_file: PathBuf,
    /// The destination's tree on its servers (`--server`): its export path and subPath. A source
    /// that is an NFS mount of one of those servers whose tree holds, or lies in, this one is
    /// refused (exit 2) before anything is read: a copy would write over the source.
    #[arg(long, value_name = "PATH", requires = "servers")]
    pub destination_tree: Option<String>,
}

/// `--destination-tree`: the source's NFS server and tree (from the mount table), checked apart
/// from the destination's.
fn check_source_apart(source: &Path, servers: &[String], dest: &str) -> Result<(), String> {
    let Ok(resolved) = source.canonicalize() else {
        // The scan says why it cannot read it.
        return Ok(());
    };
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Ok(());
    };
    let Some(tree) = crate::cmd::source_mount::nfs_tree(&mountinfo, &resolved) else {
        return Ok(());
    };
    for server in &tree.servers {
        ingest_api::validate::check_source_apart((server, &tree.path, None), (servers, dest, None))
            .map_err(|m| {
                format!(
                    "the source {} (NFS {server}:{}): spec.destination {m}",
                    source.display(),
                    tree.path
                )
            })?;
    }
    Ok(())
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

/// Rows of the status's size histogram: four power-of-two buckets each (sizes 16 times apart), so
/// that it stays a few hundred bytes in every status write.
const STATUS_SIZE_BUCKETS_PER_ROW: usize = 4;
/// Directory paths in the status are cut to this many bytes: deep trees have long paths.
const STATUS_PATH_BYTES: usize = 128;

/// What a plan's scan found, as the IngestJob's `status.totals` says it (the cluster's scan pod
/// and `run`). The estimate comes from the job's passes: [`ingest_api::job::Totals::with_estimate`].
pub fn status_totals(t: &ingest_plan::format::Totals) -> ingest_api::job::Totals {
    use ingest_api::job::{HardLinks, HistogramRow};
    ingest_api::job::Totals {
        // The status counts every non-directory as a file.
        files: t.files + t.others,
        directories: t.directories,
        bytes: t.bytes,
        excluded: t.excluded,
        size_histogram: size_rows(&t.size_histogram, STATUS_SIZE_BUCKETS_PER_ROW)
            .into_iter()
            .map(|r| HistogramRow {
                bucket: r.label,
                files: r.files,
            })
            .collect(),
        age_histogram: age_rows(&t.age_histogram)
            .into_iter()
            .map(|r| HistogramRow {
                bucket: r.label.to_string(),
                files: r.files,
            })
            .collect(),
        largest_directories: t.largest_directories.iter().map(status_directory).collect(),
        hard_links: (t.linked_inodes > 0).then_some(HardLinks {
            inodes: t.linked_inodes,
            paths: t.linked_paths,
        }),
        estimated_seconds: None,
    }
}

fn status_directory(d: &DirectoryTotals) -> ingest_api::job::DirectoryTotals {
    let mut path = d.path.to_string();
    if path.len() > STATUS_PATH_BYTES {
        // Marked, so that a cut path is not taken for a real one.
        ingest_api::report::truncate_utf8(&mut path, STATUS_PATH_BYTES - '…'.len_utf8());
        path.push('…');
    }
    ingest_api::job::DirectoryTotals {
        path,
        entries: d.entries,
        bytes: d.bytes,
    }
}

/// The passes recorded at `path`: a `vfxt-ingest run` state directory, its status.yaml, or an
/// IngestJob's YAML (whose `status` holds them).
pub fn recorded_passes(path: &Path) -> Result<Vec<PassRecord>, String> {
    let file = if path.is_dir() {
        path.join("status.yaml")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    passes_of(&text).map_err(|e| format!("{}: {e}", file.display()))
}

/// The passes in the YAML of a status or of a whole IngestJob.
fn passes_of(text: &str) -> Result<Vec<PassRecord>, String> {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let status = doc.get("status").cloned().unwrap_or(doc);
    serde_yaml::from_value::<IngestJobStatus>(status)
        .map(|s| s.passes)
        .map_err(|e| format!("not an IngestJob or its status: {e}"))
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
    if let Some(dest) = &args.destination_tree
        && let Err(e) = check_source_apart(&args.source, &args.servers, dest)
    {
        eprintln!("error: {e}");
        return Outcome::UnusableInput;
    }
    // The scan pod checks where its plan goes before it reads the tree: a URL or token it cannot
    // use is unusable input now, not after hours of scanning.
    let to_operator = match args.claims_url.as_deref().filter(|_| args.cluster) {
        None => None,
        Some(url) => match Endpoint::at(url, ingest_api::claims::PLAN_PATH, &args.token_file) {
            Ok(e) => Some(e),
            Err(e) => {
                eprintln!("error: {e}");
                return Outcome::UnusableInput;
            }
        },
    };
    // Read before the scan, which may take hours, so that a wrong path fails at once.
    let passes = match args.rates_from.as_deref().map(recorded_passes) {
        None => Ok(Vec::new()),
        Some(read) => read.map_err(|e| format!("--rates-from {e}")),
    };
    let scanned = passes.and_then(|passes| {
        let filter = filter_now(&args.filter.spec())?;
        let (s, p, secs) = scan_and_plan(&args.source, args.threads, &filter, &opts)?;
        Ok((s, p, secs, passes))
    });
    let (s, p, secs, passes) = match scanned {
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
    let estimate = Estimate::new(args.rates_from.is_some(), &passes, &p);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary_json(&s, &p, secs, &estimate))
                .expect("summary serializes")
        );
    } else {
        print_summary(&s, &p, secs, &estimate);
    }
    if let Some(endpoint) = &to_operator {
        return match store_in_cluster(endpoint, &p, opts.servers.len(), &args.result_file) {
            // The scan pod's exit code says whether the plan is stored. Entries it could not read are
            // per-entry outcomes, like a copy's failed files: counted and listed in the termination
            // message and the plan summary, for the operator to weigh against the failure policy.
            Ok(()) => Outcome::Success,
            // The run moved on, or the IngestJob is gone: nothing to store it for.
            Err(e @ End::MovedOn(_)) => {
                eprintln!("{e}");
                Outcome::Success
            }
            // The operator refused the token or the plan: asking again cannot help (exit 2).
            Err(e @ End::Unusable(_)) => {
                eprintln!("{e}");
                Outcome::UnusableInput
            }
            Err(e) => {
                // Not unusable input: the operator may come back; Kubernetes retries the scan pod
                // (exit 1). Nothing is written to the termination log, so its message is this
                // error (from the log).
                eprintln!("{e}");
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

/// The scan pod's side of the operator contract: the plan's chunks to the operator, a piece per
/// request (chunk 0, with the summary, last: the commit marker), which stores them in ConfigMaps;
/// then the result as the termination message.
fn store_in_cluster(
    endpoint: &Endpoint,
    p: &Plan,
    servers: usize,
    result_file: &Path,
) -> Result<(), End> {
    use ingest_api::report::PodResult;
    use ingest_operator::plan_store::{self, MAX_CHUNK_BYTES, PlanSummary, Saved};
    use ingest_operator::pod::{self, PodEnv};

    let env = PodEnv::from_env().map_err(End::Unusable)?;
    let chunks = p
        .to_chunks(MAX_CHUNK_BYTES)
        .map_err(|e| End::Unusable(e.to_string()))?;
    let totals = status_totals(&p.totals);
    // The termination message holds 4 KiB, failures included: it gets the counts, and the
    // histograms and directories reach the status through the plan summary, which the operator reads.
    let counts = ingest_api::job::Totals {
        files: totals.files,
        directories: totals.directories,
        bytes: totals.bytes,
        excluded: totals.excluded,
        ..Default::default()
    };
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
    for part in plan_store::parts(&env.owner, &env.pod, &chunks, &summary) {
        if let Saved::Kept(kept) = endpoint.ask(&part, GIVE_UP)? {
            println!(
                "this run's plan was stored by an earlier attempt of its scan ({} shards, {} files): it stands, and this scan's is dropped",
                kept.shards, kept.totals.files
            );
            break;
        }
    }
    let result = PodResult {
        files: totals.files,
        bytes: totals.bytes,
        totals: Some(counts),
        shards: Some(p.shards.len() as u64),
        failed: p.totals.errors,
        failures,
        ..PodResult::default()
    };
    pod::write_result(result_file, &result).map_err(|e| End::GaveUp(e.to_string()))
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

/// Hard-link groups `scan` lists, and paths shown of each.
const LINK_GROUPS_SHOWN: usize = 3;
const LINK_PATHS_SHOWN: usize = 3;

/// How long a run over the scanned tree would take, from the passes `--rates-from` gave.
pub struct Estimate {
    /// `--rates-from` was given.
    asked: bool,
    /// The run whose rates were taken, with them.
    from: Option<(i64, Rates)>,
    seconds: Option<u64>,
}

impl Estimate {
    pub fn new(asked: bool, passes: &[PassRecord], p: &Plan) -> Estimate {
        Estimate {
            asked,
            from: rate_pass(passes).and_then(|r| Some((r.run, r.rates()?))),
            // As the status says it, from the same totals.
            seconds: status_totals(&p.totals)
                .with_estimate(passes)
                .estimated_seconds,
        }
    }

    /// One line for the summary; says when there is nothing to estimate from rather than guess.
    fn line(&self) -> String {
        match (self.from, self.seconds) {
            (Some((run, r)), Some(secs)) => format!(
                "estimated run time: {} (scan, copy and verify of the whole tree at run {run}'s {} files/s and {}/s; less where files are already at the destination)",
                duration(secs as f64),
                r.files_per_second.round() as u64,
                bytes(r.bytes_per_second as u64)
            ),
            (Some((run, r)), None) => format!(
                "estimated run time: unknown (run {run}, the Copy pass that wrote the most, measured {} files/s and {}/s: a rate of 0 estimates nothing)",
                r.files_per_second.round() as u64,
                bytes(r.bytes_per_second as u64)
            ),
            (None, _) if self.asked => {
                "estimated run time: unknown (no Copy pass in --rates-from measured its rates)".into()
            }
            (None, _) => "estimated run time: unknown (--rates-from a run's state directory or an IngestJob's YAML gives the rates a Copy pass measured)".into(),
        }
    }
}

pub fn print_summary(s: &Scan, p: &Plan, secs: f64, estimate: &Estimate) {
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
            "hard links: {} inodes with {} paths (each inode kept in one shard); the most linked:",
            t.linked_inodes, t.linked_paths
        );
        for (paths, size) in s.largest_link_groups(LINK_GROUPS_SHOWN) {
            println!(
                "  {:>10} paths {:>10}  {}",
                paths.len(),
                bytes(size),
                shown_paths(&paths)
            );
        }
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
    for r in size_rows(&t.size_histogram, 1) {
        println!("  {:>24} {}", r.label, r.files);
    }
    let ages = age_rows(&t.age_histogram);
    if !ages.is_empty() {
        println!("file ages (mtime, from the scan's start):");
        for r in ages {
            println!("  {:>24} {}", r.label, r.files);
        }
    }
    println!("largest directories (own entries):");
    for d in &t.largest_directories {
        println!(
            "  {:>10} entries {:>10}  {}",
            d.entries,
            bytes(d.bytes),
            d.path
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
    println!("{}", estimate.line());
}

/// The first paths of a link group, `…` for the rest.
fn shown_paths(paths: &[impl std::fmt::Display]) -> String {
    let mut shown: Vec<String> = paths
        .iter()
        .take(LINK_PATHS_SHOWN)
        .map(|p| p.to_string())
        .collect();
    if paths.len() > LINK_PATHS_SHOWN {
        shown.push("…".into());
    }
    shown.join(", ")
}

pub fn summary_json(s: &Scan, p: &Plan, secs: f64, estimate: &Estimate) -> serde_json::Value {
    let t = &p.totals;
    let largest: Vec<serde_json::Value> = t
        .largest_directories
        .iter()
        .map(|d| serde_json::json!({"path": d.path, "entries": d.entries, "bytes": d.bytes}))
        .collect();
    let hist: Vec<serde_json::Value> = size_rows(&t.size_histogram, 1)
        .into_iter()
        .map(|r| serde_json::json!({"bucket": r.label, "minBytes": r.min_bytes, "files": r.files}))
        .collect();
    let ages: Vec<serde_json::Value> = age_rows(&t.age_histogram)
        .into_iter()
        .map(|r| serde_json::json!({"bucket": r.label, "belowSeconds": r.below_seconds, "files": r.files}))
        .collect();
    let links: Vec<serde_json::Value> = s
        .largest_link_groups(LINK_GROUPS_SHOWN)
        .into_iter()
        .map(|(paths, size)| {
            let shown = &paths[..paths.len().min(LINK_PATHS_SHOWN)];
            serde_json::json!({"paths": paths.len(), "bytes": size, "firstPaths": shown})
        })
        .collect();
    serde_json::json!({
        "totals": p.totals,
        "sizeHistogram": hist,
        "ageHistogram": ages,
        "largestDirectories": largest,
        "hardLinkGroups": links,
        "shards": p.shards.len(),
        "prediction": p.prediction,
        "scanErrors": p.scan_errors,
        "seconds": secs,
        "estimatedSeconds": estimate.seconds,
        "ratesFromRun": estimate.from.map(|(run, _)| run),
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

#[cfg(test)]
mod analytics {
    use super::*;
    use ingest_plan::format::{HISTOGRAM_BUCKETS, Totals as PlanTotals};
    use ingest_plan::scan::AGE_BUCKETS;
    use ingest_plan::scan::size_bucket;

    fn dir(path: &str, entries: u64, bytes: u64) -> DirectoryTotals {
        DirectoryTotals {
            path: ingest_copy::RelPath::from_bytes(path.as_bytes().to_vec()).unwrap(),
            entries,
            bytes,
        }
    }

    #[test]
    fn status_totals_word_the_rows_like_the_cli_coarser_and_cut_long_paths() {
        let mut sizes = vec![0; HISTOGRAM_BUCKETS];
        for (size, n) in [(0, 2), (100, 3), (200, 4), (5 << 20, 1)] {
            sizes[size_bucket(size)] += n;
        }
        let mut ages = vec![0; AGE_BUCKETS.len()];
        ages[2] = 10;
        let deep = "é".repeat(200);
        let t = PlanTotals {
            files: 10,
            others: 2,
            directories: 3,
            bytes: 123,
            linked_inodes: 1,
            linked_paths: 3,
            size_histogram: sizes,
            age_histogram: ages,
            largest_directories: vec![dir("shots", 7, 70), dir(&deep, 1, 1)],
            ..PlanTotals::default()
        };
        let s = status_totals(&t);
        assert_eq!((s.files, s.directories, s.bytes), (12, 3, 123));
        let rows: Vec<(&str, u64)> = s
            .size_histogram
            .iter()
            .map(|r| (r.bucket.as_str(), r.files))
            .collect();
        // 100 and 200 bytes share a row 16 times wide; the CLI's own rows split them.
        assert_eq!(
            rows,
            [("0 B", 2), ("[16 B, 256 B)", 7), ("[1.0 MiB, 16.0 MiB)", 1)]
        );
        assert!(size_rows(&t.size_histogram, 1).len() > rows.len());
        assert_eq!(s.age_histogram.len(), 1);
        assert_eq!(
            (s.age_histogram[0].bucket.as_str(), s.age_histogram[0].files),
            (AGE_BUCKETS[2].0, 10)
        );
        assert_eq!(
            (
                s.largest_directories[0].path.as_str(),
                s.largest_directories[0].entries
            ),
            ("shots", 7)
        );
        let cut = &s.largest_directories[1].path;
        assert!(
            cut.len() <= STATUS_PATH_BYTES && cut.ends_with('…'),
            "{cut}"
        );
        assert!(deep.starts_with(cut.trim_end_matches('…')));
        assert_eq!(
            s.hard_links,
            Some(ingest_api::job::HardLinks {
                inodes: 1,
                paths: 3
            })
        );
        assert_eq!(s.estimated_seconds, None);
    }

    #[test]
    fn status_totals_omit_what_the_scan_did_not_find_and_stay_small_when_it_found_everything() {
        let bare = serde_json::to_value(status_totals(&PlanTotals::default())).unwrap();
        assert_eq!(
            bare,
            serde_json::json!({"files": 0, "directories": 0, "bytes": 0})
        );
        // Every size and age bucket holding a billion files, five directories with paths past
        // the cut.
        let full = PlanTotals {
            size_histogram: vec![1_000_000_000; HISTOGRAM_BUCKETS],
            age_histogram: vec![1_000_000_000; AGE_BUCKETS.len()],
            largest_directories: (0..5)
                .map(|i| dir(&format!("{i}").repeat(400), 1, 1))
                .collect(),
            linked_inodes: 1,
            linked_paths: 2,
            ..PlanTotals::default()
        };
        let s = status_totals(&full);
        let (sizes, ages, all) = (
            serde_json::to_string(&s.size_histogram).unwrap().len(),
            serde_json::to_string(&s.age_histogram).unwrap().len(),
            serde_json::to_string(&s).unwrap().len(),
        );
        eprintln!("status totals: sizes {sizes} B, ages {ages} B, all {all} B");
        assert!(
            sizes < 1024 && ages < 512 && all < 2560,
            "{sizes} {ages} {all}"
        );
    }

    #[test]
    fn passes_come_from_a_run_status_or_a_whole_ingestjob() {
        let status = "run: 2\npasses:\n- run: 1\n  mode: Copy\n  files: 7\n  bytes: 9\n";
        let job = format!(
            "apiVersion: ingest.vfxt.dev/v1alpha1\nkind: IngestJob\nstatus:\n{}",
            status
                .lines()
                .map(|l| format!("  {l}\n"))
                .collect::<String>()
        );
        for text in [status, job.as_str()] {
            let passes = passes_of(text).unwrap();
            assert_eq!(
                passes.iter().map(|p| (p.run, p.files)).collect::<Vec<_>>(),
                [(1, 7)]
            );
        }
        assert!(passes_of("{}").unwrap().is_empty());
        assert!(
            passes_of("passes: 3")
                .unwrap_err()
                .contains("not an IngestJob")
        );
        assert!(passes_of("[1").unwrap_err().contains("not YAML"));
    }

    #[test]
    fn the_estimate_line_says_what_it_rests_on_or_why_there_is_none() {
        let rates = Rates {
            files_per_second: 7.0,
            bytes_per_second: 2048.0,
        };
        let line = |asked, from, seconds| {
            Estimate {
                asked,
                from,
                seconds,
            }
            .line()
        };
        let known = line(true, Some((3, rates)), Some(3725));
        assert!(
            known.starts_with("estimated run time: 1:02:05 (")
                && known.contains("run 3's 7 files/s and 2.0 KiB/s"),
            "{known}"
        );
        assert!(line(true, Some((3, rates)), None).contains("unknown (run 3"));
        assert!(line(true, None, None).contains("unknown (no Copy pass in --rates-from"));
        assert!(line(false, None, None).contains("unknown (--rates-from"));
    }
}
