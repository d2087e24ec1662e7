//! `vfxt-ingest worker`: copies and/or verifies some shards of a plan with the engine.
//!
//! Output is for machines: JSON lines on stdout, `{"event":"progress",…}` at least every 2 s,
//! `{"event":"shard",…}` as each shard ends (with `--claims`, its own `result`: counts and the
//! failures it listed, so that what a worker found survives it) and `{"event":"result",…}` last.
//! With `--markers DIR`,
//! a shard whose pass finished cleanly gets a marker file (written durably), and a shard that has
//! one is skipped: a re-run after a crash redoes only unfinished shards. The result's `summary`
//! counts skipped shards too (from their markers: the job's totals), `ran` only what this
//! invocation did.
//!
//! Which shards: given (`--shards`, `--worker W --of N`, `--server-index S --index K`), read from
//! stdin as they are handed out (`--claims`, how `run` deals them), or claimed from the operator's
//! endpoint (`--claims-url`, see [`crate::cmd::claims_client`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use ingest_api::job::{FileFailure, VerificationCounts};
use ingest_api::report::{PodProgress, PodResult};
use ingest_copy::{
    AutoConfig, CopyJob, FirstN, MaxDeletes, MirrorCounts, MountLimits, Opened, Options,
    Outcome as EntryOutcome, Progress, ReportSink, Snapshot, Summary, Tee, VerifyMode,
};
use ingest_job::{ScanFailed, Tally};
use ingest_operator::pod::{self, PodEnv, ProgressReporter};
use ingest_plan::format::{Plan, Shard};
use ingest_plan::planner::deal;
use ingest_plan::{Phase, engine_options, engine_scopes, linked_elsewhere, settled_dirs};

use crate::Outcome;
use crate::cmd::claims_client::{End, Session};
use crate::cmd::copy::{Threads, Verify};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PhaseArg {
    /// Copy only (the cluster's copy phase).
    Copy,
    /// Verify and repair only (after every shard was copied).
    Verify,
    /// Copy all the given shards, then verify them.
    Both,
    /// `mode: Mirror`, after the copy phase: walk each shard's directories again and delete
    /// what only the destination has, no more than the shard's budget (with `--claims`, given
    /// after each shard id; from the operator, with each shard).
    Prune,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The plan written by `scan --out` (or by `run` in its state directory).
    #[arg(long, value_name = "FILE")]
    pub plan: PathBuf,
    /// The source root the plan was made from.
    #[arg(long, value_name = "DIR")]
    pub source: PathBuf,
    /// Destination mounts (the same export through different servers); repeat the flag.
    #[arg(long = "dest", value_name = "DIR", required = true)]
    pub destinations: Vec<PathBuf>,
    /// Shards to run, by id (comma separated).
    #[arg(long, value_delimiter = ',', value_name = "I[,J..]", conflicts_with_all = ["worker", "of"])]
    pub shards: Vec<u32>,
    /// Run the shards dealt to worker W of N (the plan's dealing when N is its worker count,
    /// otherwise the plan's shards dealt again over N).
    #[arg(long, value_name = "W", requires = "of")]
    pub worker: Option<u32>,
    #[arg(long, value_name = "N", requires = "worker")]
    pub of: Option<u32>,
    /// Run the `--index`-th shard dealt to destination server S (the cluster: one Indexed Job per
    /// server, index from `JOB_COMPLETION_INDEX`).
    #[arg(long, value_name = "S", requires = "index", conflicts_with_all = ["worker", "shards"])]
    pub server_index: Option<u32>,
    #[arg(
        long,
        value_name = "K",
        env = "JOB_COMPLETION_INDEX",
        requires = "server_index"
    )]
    pub index: Option<u32>,
    /// Take shards as they are handed out: one shard id per line on standard input, the next read
    /// when a slot is free (see --shards-at-once; a `shard` event on stdout tells each end),
    /// until end of input. How `run` deals
    /// shards on demand, so a worker on a slow mount takes fewer. One phase only.
    #[arg(long, conflicts_with_all = ["worker", "shards", "server_index"])]
    pub claims: bool,
    /// Take shards from the operator's claims endpoint at URL (e.g. `http://10.0.0.9:8080`; the
    /// messages go to URL/claims/v1), --shards-at-once at a time, for one --phase (copy or verify), until it
    /// says the pass is finished (exit 0) or stopped (exit 0). Identity from POD_NAMESPACE,
    /// INGEST_JOB_NAME, INGEST_JOB_UID, INGEST_RUN and POD_NAME. A refused token exits 2; an
    /// operator unreachable for 10 minutes exits 3.
    #[arg(
        long,
        value_name = "URL",
        // Not `index`: it also comes from JOB_COMPLETION_INDEX, which an Indexed Job sets on
        // every pod (clap counts that as given); `claims_session` refuses the flag itself.
        conflicts_with_all = ["claims", "shards", "worker", "of", "server_index"]
    )]
    pub claims_url: Option<String>,
    /// With --claims-url: the service-account token sent as `Authorization: Bearer` (read again
    /// before every request: the kubelet rotates it).
    #[arg(
        long,
        value_name = "FILE",
        requires = "claims_url",
        default_value_os_t = crate::cmd::claims_client::default_token_file()
    )]
    pub token_file: PathBuf,
    /// With --claims-url: seconds between heartbeats while a shard runs (tests shorten it).
    #[arg(
        long,
        hide = true,
        requires = "claims_url",
        default_value_t = ingest_api::claims::HEARTBEAT_SECONDS as f64,
        value_name = "SECONDS"
    )]
    pub heartbeat_seconds: f64,
    /// With --claims-url or --claims: a destination with operations waiting this long and none
    /// finishing has stopped answering (a hung server behind a hard NFS mount blocks without an
    /// error). The worker says which (to the operator, or as an `unresponsive` event on stdout),
    /// hands its shards back and exits 4; workers after it keep away from that destination. The
    /// operator and `run` pass `spec.stallTimeoutSeconds`.
    #[arg(
        long,
        default_value_t = ingest_api::job::DEFAULT_STALL_TIMEOUT_SECONDS as f64,
        value_name = "SECONDS"
    )]
    pub stall_timeout: f64,
    /// Each destination's time per entry in microseconds, as an earlier pass of the job measured
    /// it: one value per --dest, in the same order, `-` where not known. A pass that starts
    /// knowing which destination is slow leaves it the least work when little is left (`run`
    /// passes the copy pass's figures to the pass that sets directory times, and to verify).
    #[arg(long, value_name = "US,US,...", value_delimiter = ',', value_parser = pace)]
    pub mount_pace: Vec<Option<u64>>,
    #[arg(long, alias = "mode", value_enum, default_value_t = PhaseArg::Both)]
    pub phase: PhaseArg,
    /// Copy threads, dealt round robin over the destinations; or `auto`: a limit per destination,
    /// raised while throughput rises and lowered when operations only queue (up to --max-per-mount).
    #[arg(long, default_value = "16", value_name = "N|auto")]
    pub threads: Threads,
    /// With `--threads auto`: the most threads per destination.
    #[arg(long, default_value_t = AutoConfig::default().max_per_mount, value_name = "N")]
    pub max_per_mount: usize,
    /// How the verify phase compares files.
    #[arg(long, value_enum, default_value_t = Verify::Metadata)]
    pub verify: Verify,
    /// Report what the verify phase finds different instead of repairing it (the spec's
    /// `verify.repair: false`).
    #[arg(long)]
    pub no_repair: bool,
    /// Compare only (`spec.dryRun`; with `--phase verify`): no repairs, no directory times, no
    /// probe, no markers. Differences are what a pass would do, not failures: only what could
    /// not be compared counts as failed.
    #[arg(long)]
    pub dry_run: bool,
    /// `verify.scope: Changed` (with --verify checksum): read the content only of files whose
    /// destination ctime is at or after SECS (seconds since the epoch, the destination's clock:
    /// when this pass's copy began, less a margin); compare the others by metadata.
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub content_changed_since: Option<i64>,
    /// The job is a mirror (`spec.mode: Mirror`): the copy phase finds and weighs what only the
    /// destination has and deletes nothing (each shard's result says how much, and `run` or the
    /// operator weighs all shards together before the prune phase deletes any); the verify
    /// phase says what is left. Implied by `--phase prune`.
    #[arg(long)]
    pub mirror: bool,
    /// This worker's share of the job's rate limits (`spec.limits`), for all its shards.
    #[command(flatten)]
    pub rate: crate::cmd::copy::RateArgs,
    /// Flush each file to stable storage before it gets its final mtime (`spec.verify.fsync`).
    #[arg(long)]
    pub fsync: bool,
    /// Directory of per-shard completion markers (created if missing).
    #[arg(long, value_name = "DIR")]
    pub markers: Option<PathBuf>,
    /// Attributes to carry over, comma separated, from owner, mode, times, xattrs, symlinks,
    /// hardlinks (or `none`). Default: all but xattrs.
    #[arg(long, value_name = "LIST")]
    pub preserve: Option<String>,
    /// Do not copy owners.
    #[arg(long)]
    pub no_owner: bool,
    /// Do not copy user extended attributes.
    #[arg(long)]
    pub no_xattrs: bool,
    /// Write every failed, repaired or deleted path, and the audit trail (every entry the verify
    /// phase compared, with its type, size, mtime and digest), as JSON Lines to FILE (gzip-compressed when FILE ends
    /// in `.gz`; parent directories are created). Written under a hidden temporary name and
    /// renamed to FILE at the end, so FILE, once there, is whole.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write the final result, bounded to 4096 bytes, to FILE (a pod's termination message).
    #[arg(long, value_name = "FILE")]
    pub result_file: Option<PathBuf>,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
    pub progress_every: f64,
    /// Shards run at once, each by all the threads (they share each mount's permits, so the
    /// mounts see --threads, not N times it): at one shard's start and tail the threads it leaves
    /// idle take up the other shards' work. 1 runs one shard after another. Default: 128 / threads,
    /// from 2 to 8 (8 with auto, each shard starting a share of --max-per-mount).
    #[arg(long, value_name = "N", value_parser = shards_at_once)]
    pub shards_at_once: Option<usize>,
}

impl Args {
    /// Shards run at once: `--shards-at-once`, or what suits `--threads`.
    pub fn slots(&self) -> usize {
        self.shards_at_once
            .unwrap_or_else(|| ingest_job::shards_at_once(self.threads.count()))
            .max(1)
    }
}

/// The watchdog of a `--claims` worker (how `run` deals shards): a destination with operations
/// waiting `stall` and none finishing has stopped answering; its threads are stuck in the kernel.
/// The worker says which on stdout (an `unresponsive` event, with what went through each
/// destination) and exits 4: the stuck threads go with the process, and `run` starts the worker
/// again without that destination; the shards it held go back to the queue.
fn watch_mounts(
    progress: &Progress,
    stop: &AtomicBool,
    stall: Duration,
    report: Option<&crate::cmd::report::ReportFile>,
) {
    while !stop.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        let figures = progress.mounts();
        if let Some((mount, why)) = crate::cmd::claims_client::stalled(&figures, stall) {
            emit(&serde_json::json!({
                "event": "unresponsive",
                "mount": mount,
                "why": why,
                "mounts": figures
                    .iter()
                    .map(crate::cmd::claims_client::mount_figures)
                    .collect::<Vec<_>>(),
            }));
            eprintln!(
                "error: destination {mount} stopped answering ({why}); the shards held go back to \
                 the queue and this worker exits {}",
                ingest_job::exit::MOUNT_UNRESPONSIVE
            );
            // What the shards it ended recorded stays in the report; the shards it gives back
            // are recorded by whoever runs them next.
            if let Some(Err(e)) = report.map(crate::cmd::report::ReportFile::finish) {
                eprintln!("warning: --report: could not be written completely ({e})");
            }
            std::process::exit(ingest_job::exit::MOUNT_UNRESPONSIVE);
        }
    }
}

/// `--threads auto`'s starting limit per mount for one of `workers` workers: every worker writes
/// through every server, so each starts at its share of the engine's initial limit (at least 2)
/// and the controller grows it from there. Starting every worker at the full limit put `workers`
/// times as many operations on each server at once, and each controller then measured the
/// others' queueing as its own.
fn shared_initial(initial: usize, workers: u32) -> usize {
    (initial / workers.max(1) as usize).max(2)
}

/// The worker's destinations, and their paces with them, starting at the `k`-th.
fn start_at(args: &mut Args, k: usize) {
    // Each pace belongs to its destination (a list of the wrong length is refused later).
    if args.mount_pace.len() == args.destinations.len() {
        args.mount_pace = turned(&args.mount_pace, k);
    }
    args.destinations = turned(&args.destinations, k);
}

/// `list` starting at its `k`-th entry (modulo its length), the ones before it at the end.
pub fn turned<T: Clone>(list: &[T], k: usize) -> Vec<T> {
    if list.is_empty() {
        return Vec::new();
    }
    let k = k % list.len();
    list[k..].iter().chain(&list[..k]).cloned().collect()
}

/// One `--mount-pace` value: microseconds per entry, at least 1, or `-` (not known).
fn pace(s: &str) -> Result<Option<u64>, String> {
    match s.trim() {
        "-" => Ok(None),
        v => match v.parse::<u64>() {
            Ok(us) if us >= 1 => Ok(Some(us)),
            _ => Err(format!(
                "{v:?}: expected microseconds per entry (a whole number, at least 1) or `-`"
            )),
        },
    }
}

/// `--shards-at-once`: 1 to 16.
fn shards_at_once(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n @ 1..=16) => Ok(n),
        _ => Err(format!("expected a number from 1 to 16, got {s:?}")),
    }
}

/// What a marker file holds: the pass's summary, so a resumed run still reports complete totals.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Marker {
    pub shard: u32,
    pub phase: String,
    pub summary: Summary,
}

pub fn marker_path(dir: &Path, phase: Phase, shard: u32) -> PathBuf {
    dir.join(format!("{}-{shard:06}.done", phase.as_str()))
}

pub fn read_marker(dir: &Path, phase: Phase, shard: u32) -> Option<Marker> {
    let text = std::fs::read_to_string(marker_path(dir, phase, shard)).ok()?;
    // A marker that cannot be read back (torn by a crash before rename, edited) means "not done".
    serde_json::from_str::<Marker>(&text)
        .ok()
        .filter(|m| m.shard == shard && m.phase == phase.as_str())
}

/// One line on stdout, whole (lines from several threads never interleave).
fn emit(v: &serde_json::Value) {
    let mut line = serde_json::to_vec(v).expect("events serialize");
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&line);
    let _ = out.flush();
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Loads and checks a plan file.
/// Loads and checks a plan: a JSON file, or a directory of its chunks (`Plan::to_chunks`, e.g.
/// ConfigMaps mounted as files), joined in the numeric order of the numbers in their names.
pub fn load_plan(path: &Path) -> Result<Plan, String> {
    let bad =
        |e: &dyn std::fmt::Display| format!("--plan {}: cannot be read ({e})", path.display());
    let text = if path.is_dir() {
        let mut parts: Vec<(u64, PathBuf)> = Vec::new();
        for e in std::fs::read_dir(path).map_err(|e| bad(&e))? {
            let p = e.map_err(|e| bad(&e))?.path();
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // Mounted ConfigMaps bring `..data` links and dot files along; chunks are numbered.
            let digits: String = name.chars().filter(char::is_ascii_digit).collect();
            if p.is_file() && !name.starts_with('.') && !digits.is_empty() {
                parts.push((digits.parse().map_err(|e| bad(&e))?, p));
            }
        }
        parts.sort();
        let mut text = String::new();
        for (_, p) in &parts {
            text.push_str(&std::fs::read_to_string(p).map_err(|e| bad(&e))?);
        }
        text
    } else {
        std::fs::read_to_string(path).map_err(|e| bad(&e))?
    };
    Plan::from_json(&text).map_err(|e| format!("--plan {}: {e}", path.display()))
}

fn select<'p>(plan: &'p Plan, args: &Args) -> Result<Vec<&'p Shard>, String> {
    if args.claims_url.is_some() {
        // Checked before: `claims_session`.
        return Ok(Vec::new());
    }
    if args.claims {
        if args.phase == PhaseArg::Both {
            return Err("--claims: give one --phase (copy or verify)".into());
        }
        return Ok(Vec::new());
    }
    if let (Some(s), Some(k)) = (args.server_index, args.index) {
        let n = plan.shards_of_server(s).count();
        return match plan.shards_of_server(s).nth(k as usize) {
            Some(shard) => Ok(vec![shard]),
            None => Err(format!(
                "--index: shard {k} of server {s} is not in the plan (server {s} has {n} shards; servers: 0..{})",
                plan.servers.len()
            )),
        };
    }
    match (&args.shards[..], args.worker, args.of) {
        ([], None, None) => {
            Err("give the shards to run: --shards I[,J..], --worker W --of N, or --server-index S --index K".into())
        }
        (ids, None, None) => ids
            .iter()
            .map(|&i| {
                plan.shards.get(i as usize).ok_or_else(|| {
                    format!(
                        "--shards: shard {i} is not in the plan (valid: 0..{})",
                        plan.shards.len()
                    )
                })
            })
            .collect(),
        (_, Some(_), Some(0)) => Err("--of: must be at least 1 (got 0)".into()),
        (_, Some(w), Some(n)) if w >= n => {
            Err(format!("--worker: {w} is out of range 0..{n} (--of {n})"))
        }
        (_, Some(w), Some(n)) if n == plan.workers => Ok(plan.shards_of_worker(w).collect()),
        (_, Some(w), Some(n)) => {
            let costs: Vec<f64> = plan.shards.iter().map(|s| s.cost).collect();
            Ok(plan
                .shards
                .iter()
                .zip(deal(&costs, n))
                .filter(|(_, d)| *d == w)
                .map(|(s, _)| s)
                .collect())
        }
        _ => Err("--worker and --of go together".into()),
    }
}

/// Counts over all shards of this worker, for the progress lines.
#[derive(Default)]
struct Base {
    /// Files and bytes of shards skipped thanks to a marker (they are done).
    files: AtomicU64,
    bytes: AtomicU64,
    done: AtomicU64,
}

/// In a pod the operator created (its environment names the IngestJob), progress also goes to the
/// pod's `ingest.vfxt.dev/progress` annotation, from a background thread that never blocks the copy.
/// Progress is best effort: without API access the worker still copies and reports its result.
fn pod_progress_reporter() -> Option<ProgressReporter> {
    std::env::var_os(pod::env::JOB_NAME)?;
    let started = PodEnv::from_env().and_then(|env| {
        ProgressReporter::start(env, Duration::from_secs(5)).map_err(|e| e.to_string())
    });
    match started {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("warning: progress will not be shown on the pod: {e}");
            None
        }
    }
}

/// Why a worker stopped before its shards ran out.
enum Halt {
    /// Unusable input (exit 2).
    Unusable(String),
    /// `--claims-url`: the operator or the connection ended the pass for this worker.
    Claims(End),
}

impl From<String> for Halt {
    fn from(e: String) -> Self {
        Halt::Unusable(e)
    }
}

impl std::fmt::Display for Halt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Halt::Unusable(e) => f.write_str(e),
            Halt::Claims(e) => e.fmt(f),
        }
    }
}

/// `--claims-url`: checks the arguments and the pod's identity, and connects nothing yet.
fn claims_session(args: &Args) -> Result<Option<Session>, String> {
    let Some(url) = &args.claims_url else {
        return Ok(None);
    };
    if args.index.is_some() && std::env::var_os(pod::env::COMPLETION_INDEX).is_none() {
        return Err(
            "--index cannot be used with --claims-url (the operator hands out the shards)".into(),
        );
    }
    let phase = match args.phase {
        PhaseArg::Copy => Phase::Copy,
        PhaseArg::Verify => Phase::Verify,
        PhaseArg::Prune => Phase::Prune,
        PhaseArg::Both => {
            return Err("--claims-url: give one --phase (copy, prune or verify), not both".into());
        }
    };
    if !(args.heartbeat_seconds > 0.0
        && args.heartbeat_seconds < ingest_api::claims::LEASE_SECONDS as f64)
    {
        return Err(format!(
            "--heartbeat-seconds: {} must be above 0 and below the lease ({} s)",
            args.heartbeat_seconds,
            ingest_api::claims::LEASE_SECONDS
        ));
    }
    Session::new(
        url,
        &args.token_file,
        phase,
        Duration::from_secs_f64(args.heartbeat_seconds),
    )
    .map(Some)
}

pub fn run(mut args: Args) -> Outcome {
    // A claims worker in the cluster starts its list of destinations at its own index: with
    // --threads N not a multiple of the servers, the servers that get one thread more differ
    // from pod to pod, so that each server gets an equal share in all (`run` hands each local
    // worker its list turned the same way).
    if args.claims_url.is_some()
        && let Some(k) = std::env::var("JOB_COMPLETION_INDEX")
            .ok()
            .and_then(|k| k.parse::<usize>().ok())
    {
        start_at(&mut args, k);
    }
    let claims = match claims_session(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::UnusableInput;
        }
    };
    if !(args.stall_timeout.is_finite() && args.stall_timeout >= 1.0) {
        eprintln!(
            "error: --stall-timeout: {} must be at least 1 (seconds)",
            args.stall_timeout
        );
        return Outcome::UnusableInput;
    }
    if !args.mount_pace.is_empty() && args.mount_pace.len() != args.destinations.len() {
        eprintln!(
            "error: --mount-pace: {} values for {} --dest; give one per destination, in their order (`-` where not known)",
            args.mount_pace.len(),
            args.destinations.len()
        );
        return Outcome::UnusableInput;
    }
    // Unusable input: said on stderr, and to the operator by a claims worker (it stops the run).
    let refuse = |e: String| {
        eprintln!("error: {e}");
        if let Some(c) = &claims {
            c.unusable(&e);
        }
        Outcome::UnusableInput
    };
    let plan = match load_plan(&args.plan) {
        Ok(p) => p,
        Err(e) => return refuse(e),
    };
    let shards = match select(&plan, &args) {
        Ok(s) => s,
        Err(e) => return refuse(e),
    };
    if args.threads == Threads::Fixed(0) {
        return refuse("--threads: must be at least 1 (got 0)".into());
    }
    let mut verify: VerifyMode = args.verify.into();
    if args.dry_run && verify == VerifyMode::None {
        // A dry run compares: by metadata, what the copy's up-to-date rule looks at too.
        verify = VerifyMode::Metadata;
    }
    let phases: Vec<Phase> = match args.phase {
        PhaseArg::Copy => vec![Phase::Copy],
        PhaseArg::Verify => vec![Phase::Verify],
        PhaseArg::Both => vec![Phase::Copy, Phase::Verify],
        PhaseArg::Prune => vec![Phase::Prune],
    };
    if args.phase == PhaseArg::Prune && !(args.claims || claims.is_some()) {
        return refuse(
            "--phase prune: only with --claims or --claims-url (each shard comes with how much it may delete)"
                .into(),
        );
    }
    // With --verify none the verify phase still runs: it only sets directory metadata, which
    // other shards' copies change until every shard is done.

    if args.dry_run && args.phase != PhaseArg::Verify {
        return refuse("--dry-run: only with --phase verify (a dry run copies nothing)".into());
    }
    let filter = match ingest_copy::Filter::new(&plan.filter) {
        Ok(f) => f,
        Err(e) => return refuse(format!("--plan {}: filter: {e}", args.plan.display())),
    };
    let mut base_opts = Options {
        verify,
        filter,
        multilinked: linked_elsewhere(&plan),
        settle_dirs: settled_dirs(&plan),
        repair: !args.no_repair && !args.dry_run,
        dry_run: args.dry_run,
        fsync: args.fsync,
        // A worker handed its shards takes its limits from who hands them (the operator's
        // answers, `run`'s `rate` lines): they change with the job's schedule and spec.
        throttle: if args.claims || claims.is_some() {
            Some(Arc::new(args.rate.adjustable()))
        } else {
            args.rate.throttle()
        },
        // The limit of each phase's own (see `ShardRun::shard`): the copy weighs only.
        mirror: (args.mirror || args.phase == PhaseArg::Prune).then_some(MaxDeletes::Count(0)),
        mirror_weigh_only: true,
        content_changed_since: args.content_changed_since.map(|s| (s, 0)),
        mount_pace: args.mount_pace.clone(),
        ..Options::default()
    };
    args.threads.apply(&mut base_opts, args.max_per_mount);
    if let (Some(c), Some(t)) = (&claims, &base_opts.throttle) {
        c.follow_limits(t.clone());
    }
    if let ingest_copy::Concurrency::Auto(cfg) = &mut base_opts.concurrency {
        cfg.initial = shared_initial(cfg.initial, plan.workers);
    }
    if let Some(list) = &args.preserve {
        match parse_preserve(list, base_opts.preserve) {
            Ok(p) => base_opts.preserve = p,
            Err(e) => return refuse(format!("--preserve: {e}")),
        }
    } else {
        base_opts.preserve.xattrs = false;
    }
    base_opts.preserve.owner &= !args.no_owner;
    base_opts.preserve.xattrs &= !args.no_xattrs;

    // A claims worker asks first which destinations to keep away from (one found hung by a
    // worker before it): checking a hung mount would hang this worker too.
    if let Some(c) = &claims
        && let Err(end) = c.hello()
    {
        eprintln!("{}", end.message());
        return end.outcome();
    }
    let destinations = || -> Vec<PathBuf> {
        let avoid = claims.as_ref().map(Session::avoid).unwrap_or_default();
        args.destinations
            .iter()
            .filter(|d| !avoid.iter().any(|a| Path::new(a) == d.as_path()))
            .cloned()
            .collect()
    };

    // Every argument is checked before anything is created: a refused worker changes nothing.
    let whole = CopyJob {
        source: args.source.clone(),
        destinations: destinations(),
        scopes: Vec::new(),
    };
    if let Err(e) = ingest_copy::check(&whole, &base_opts) {
        return refuse(e.to_string());
    }
    for (flag, path) in [
        ("--markers", &args.markers),
        ("--report", &args.report),
        ("--result-file", &args.result_file),
    ] {
        if let Some(p) = path
            && let Err(e) = crate::cmd::copy::outside_source(p, &args.source)
        {
            return refuse(format!("{flag} {}: {e}", p.display()));
        }
    }
    if let Some(dir) = &args.markers
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        return refuse(format!(
            "--markers {}: cannot be created ({e})",
            dir.display()
        ));
    }

    let report = match args
        .report
        .as_deref()
        .map(crate::cmd::report::ReportFile::create)
        .transpose()
    {
        Ok(f) => f,
        Err(e) => {
            return refuse(format!(
                "--report {}: cannot be created ({e})",
                args.report.as_ref().unwrap().display()
            ));
        }
    };
    // Entries the scan could not read are failed entries of the run already (the plan lists
    // them): meeting them again here is the same entry, kept in the full report but not counted
    // or listed a second time.
    let known = ScanFailed::new(plan.scan_errors.iter().map(|e| e.path.clone()));
    let phase_now = Mutex::new(phases.first().copied().unwrap_or(Phase::Copy));
    // Shards run `--shards-at-once` at a time, each in a slot of its own: its own counters (a
    // claims worker reports each shard's progress and result apart) and failure list, the
    // mounts' meters and permits shared (see `ingest_copy::MountLimits`).
    let progress = Progress::default();
    let slots = args.slots();
    let progresses: Vec<Progress> = (0..slots).map(|_| progress.sharing_meters()).collect();
    let firsts: Vec<FirstN> = (0..slots)
        .map(|_| FirstN::new(ingest_api::job::MAX_LISTED_FAILURES))
        .collect();
    let agains: Vec<AgainAtScan> = firsts
        .iter()
        .map(|first| AgainAtScan {
            known: &known,
            inner: first,
            phase: &phase_now,
            entries: AtomicU64::new(0),
            verify_errors: AtomicU64::new(0),
        })
        .collect();
    let sinks: Vec<Tee> = agains
        .iter()
        .map(|again| {
            let mut to: Vec<&dyn ReportSink> = vec![again];
            if let Some(r) = &report {
                to.push(r);
            }
            Tee(to)
        })
        .collect();
    let limits = MountLimits::new(&args.destinations, &base_opts);
    let snapshot = || -> Snapshot { progresses.iter().map(Progress::snapshot).sum() };

    let base = Base::default();
    let stop = AtomicBool::new(false);
    let total_shards = if args.claims || claims.is_some() {
        plan.shards.len() as u64
    } else {
        (shards.len() * phases.len()) as u64
    };
    let worker = args.worker;
    let every = Duration::from_secs_f64(args.progress_every.clamp(0.05, 2.0));
    // A claims worker's progress goes with its messages to the operator.
    let pod_reporter = if claims.is_some() {
        None
    } else {
        pod_progress_reporter()
    };
    let progress_line = || {
        let s = snapshot();
        if let Some(r) = &pod_reporter {
            r.update(PodProgress {
                files: s.files + base.files.load(Relaxed),
                bytes: s.bytes + base.bytes.load(Relaxed),
                failed: s.failed,
                directories: 0,
                checked: s.verified,
                at: unix_now(),
            });
        }
        let phase = *phase_now.lock().unwrap();
        emit(&serde_json::json!({
            "event": "progress",
            "worker": worker,
            "phase": phase.as_str(),
            "files": s.files + base.files.load(Relaxed),
            "bytes": s.bytes + base.bytes.load(Relaxed),
            "failed": s.failed,
            "verified": s.verified,
            "verifiedBytes": s.verified_bytes,
            "shardsDone": base.done.load(Relaxed),
            "shardsTotal": total_shards,
            "at": unix_now(),
        }));
    };

    // What the slots found, added up as each shard ends.
    let tally = Mutex::new(Ran::default());
    let budgets = Budgets::default();
    // The source and destinations as the engine opened them (the first time with the probe),
    // for every shard; opened again only when the destinations change (a claims worker told to
    // keep away from one).
    let opened: Mutex<Option<(Vec<PathBuf>, Arc<Opened>)>> = Mutex::new(None);
    let started = Instant::now();
    let halt = std::thread::scope(|s| {
        s.spawn(|| {
            let mut last = Instant::now();
            while !stop.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                if last.elapsed() >= every {
                    last = Instant::now();
                    progress_line();
                }
            }
        });
        let stall = Duration::from_secs_f64(args.stall_timeout);
        if let Some(c) = &claims {
            let (progresses, stop, dests) = (&progresses, &stop, &args.destinations);
            s.spawn(move || c.heartbeats(progresses, stop, stall, dests));
        } else if args.claims {
            let (progress, stop, report) = (&progress, &stop, report.as_ref());
            s.spawn(move || watch_mounts(progress, stop, stall, report));
        }
        let r = limits.governing(|| {
            // One probe per worker process, before any shard writes: it proves the mounts
            // writable and showing one export, and every shard goes through the same mounts.
            // (A probe per shard cost a create, a read per mount and a remove for each shard of
            // small files.)
            if phases.contains(&Phase::Copy) {
                let opts = engine_options(base_opts.clone(), Phase::Copy);
                let dests = destinations();
                let job = CopyJob {
                    source: args.source.clone(),
                    destinations: dests.clone(),
                    scopes: Vec::new(),
                };
                if opts.probe_destinations {
                    let o = ingest_copy::open(&job, &opts, &progress)
                        .map_err(|e| Halt::Unusable(e.to_string()))?;
                    // Everything this worker writes from now on has a later ctime: said before
                    // the first shard (`verify.scope: Changed` measures from the earliest).
                    if let Some((secs, _)) = o.probed_at() {
                        match &claims {
                            Some(c) => c.began_writing(secs),
                            None => emit(&serde_json::json!({
                                "event": "probed",
                                "worker": worker,
                                "ctime": secs,
                            })),
                        }
                    }
                    *opened.lock().unwrap() = Some((dests, Arc::new(o)));
                }
            }
            for &phase in &phases {
                *phase_now.lock().unwrap() = phase;
                let todo: Box<dyn Iterator<Item = Result<&Shard, Halt>> + Send> =
                    if let Some(c) = &claims {
                        Box::new(claimed_shards(c, &plan, slots))
                    } else if args.claims {
                        Box::new(
                            self::claims(&plan, &budgets, base_opts.throttle.clone())
                                .map(|r| r.map_err(Halt::from)),
                        )
                    } else {
                        Box::new(shards.clone().into_iter().map(Ok))
                    };
                let todo = Mutex::new(todo);
                let halted: Mutex<Option<Halt>> = Mutex::new(None);
                let run = ShardRun {
                    args: &args,
                    phase,
                    base_opts: &base_opts,
                    destinations: &destinations,
                    limits: &limits,
                    opened: &opened,
                    claims: claims.as_ref(),
                    budgets: &budgets,
                    base: &base,
                    tally: &tally,
                    worker,
                };
                std::thread::scope(|s| {
                    for (slot, (again, sink)) in agains.iter().zip(&sinks).enumerate() {
                        let (todo, halted, run) = (&todo, &halted, &run);
                        let progress = &progresses[slot];
                        s.spawn(move || {
                            let mut recorded_before = 0;
                            loop {
                                if halted.lock().unwrap().is_some() {
                                    return;
                                }
                                // Asked under the lock: one question to the operator at a time.
                                let next = todo.lock().unwrap().next();
                                let outcome = match next {
                                    None => return,
                                    Some(Ok(shard)) => run.shard(
                                        shard,
                                        (slot, progress),
                                        again,
                                        sink,
                                        &mut recorded_before,
                                    ),
                                    Some(Err(h)) => Err(h),
                                };
                                if let Err(h) = outcome {
                                    halted.lock().unwrap().get_or_insert(h);
                                    return;
                                }
                            }
                        });
                    }
                });
                if let Some(h) = halted.into_inner().unwrap() {
                    return Err(h);
                }
            }
            Ok::<(), Halt>(())
        });
        stop.store(true, Relaxed);
        r.err()
    });
    progress_line();
    let Ran {
        mut total,
        mut ran,
        claimed,
        done,
        skipped,
        failed,
    } = tally.into_inner().unwrap();
    if let Some(r) = report
        && let Err(e) = r.finish()
    {
        eprintln!("warning: --report: could not be written completely ({e})");
    }
    total.elapsed_seconds = started.elapsed().as_secs_f64();
    ran.elapsed_seconds = total.elapsed_seconds;
    let result = if claims.is_some() || args.claims {
        // The sum of the results each shard's event carried.
        claimed
    } else {
        let (mut entries, mut recorded) = (Vec::new(), 0);
        for first in &firsts {
            let (e, r) = first.take();
            entries.extend(e);
            recorded += r;
        }
        entries.truncate(ingest_api::job::MAX_LISTED_FAILURES);
        let mut result = pod_result(&total, &entries, recorded, args.dry_run);
        for again in &agains {
            again.discount(&mut result);
        }
        result
    };
    emit(&serde_json::json!({
        "event": "result",
        "worker": worker,
        "shards": {"done": done, "skipped": skipped, "failed": failed},
        "summary": total,
        "ran": ran,
        "result": result,
        // What went through each destination (`run` sums them per server for its status).
        "mounts": progress
            .mounts()
            .iter()
            .map(crate::cmd::claims_client::mount_figures)
            .collect::<Vec<_>>(),
        "error": halt.as_ref().map(Halt::to_string),
    }));
    if let Some(r) = pod_reporter {
        r.finish();
    }
    if let Some(f) = &args.result_file
        && let Err(e) = std::fs::write(f, result.to_termination_message())
    {
        eprintln!("warning: --result-file {}: not written ({e})", f.display());
    }
    match halt {
        Some(Halt::Unusable(e)) => return refuse(e),
        Some(Halt::Claims(end)) => {
            eprintln!("{}", end.message());
            return end.outcome();
        }
        None => {}
    }
    if claims.is_some() {
        // The pass is finished: every shard's result, failures included, went to the operator.
        Outcome::Success
    } else if failed.is_empty() && (total.is_success() || (args.dry_run && result.failed == 0)) {
        // A dry run's differences are its answer; it failed only where it could not compare.
        Outcome::Success
    } else {
        Outcome::PartialFailure
    }
}

/// What a worker's shards added up to.
#[derive(Default)]
struct Ran {
    /// Every shard's summary, those done by an earlier invocation (their markers') too, so
    /// that a resumed job still reports complete totals.
    total: Summary,
    /// What this invocation did.
    ran: Summary,
    /// A claims worker's result: the sum of the results it sent for each shard.
    claimed: PodResult,
    done: Vec<u32>,
    skipped: Vec<u32>,
    failed: Vec<u32>,
}

/// What every shard of one phase runs with.
struct ShardRun<'a> {
    args: &'a Args,
    phase: Phase,
    base_opts: &'a Options,
    /// The destinations to write through now (a claims worker leaves out those the operator
    /// says to avoid).
    destinations: &'a (dyn Fn() -> Vec<PathBuf> + Sync),
    limits: &'a MountLimits,
    opened: &'a Mutex<Option<(Vec<PathBuf>, Arc<Opened>)>>,
    claims: Option<&'a Session>,
    /// The prune phase: how many entries a shard may delete (what its copy found).
    budgets: &'a Budgets,
    base: &'a Base,
    tally: &'a Mutex<Ran>,
    worker: Option<u32>,
}

impl ShardRun<'_> {
    /// The job's source and destinations as opened for an earlier shard, or opened now when
    /// there is none or its destinations were others.
    fn opened(
        &self,
        job: &CopyJob,
        opts: &Options,
        progress: &Progress,
    ) -> Result<Arc<Opened>, Halt> {
        let mut cached = self.opened.lock().unwrap();
        if let Some((dests, o)) = cached.as_ref()
            && *dests == job.destinations
        {
            return Ok(o.clone());
        }
        let o = Arc::new(ingest_copy::open(job, opts, progress).map_err(|e| e.to_string())?);
        *cached = Some((job.destinations.clone(), o.clone()));
        Ok(o)
    }

    /// Runs one shard in `slot` (its index and counters), or skips it by its marker; tells the
    /// operator (a claims worker) and stdout how it ended. `recorded_before` is the slot's
    /// failure count when the shard started; only unusable input is an `Err`.
    fn shard(
        &self,
        shard: &Shard,
        (slot, progress): (usize, &Progress),
        again: &AgainAtScan,
        sink: &dyn ReportSink,
        recorded_before: &mut u64,
    ) -> Result<(), Halt> {
        let (args, phase) = (self.args, self.phase);
        let t0 = Instant::now();
        let again_before = again.counts();
        if let Some(c) = self.claims {
            c.start(shard.id, slot, progress.snapshot());
        }
        let marker = args
            .markers
            .as_deref()
            .and_then(|d| read_marker(d, phase, shard.id));
        // The prune phase: what the copy phase found in this shard.
        let budget = (phase == Phase::Prune).then(|| match self.claims {
            Some(c) => c.budget(shard.id),
            None => self.budgets.get(shard.id),
        });
        let (status, summary) = if let Some(m) = marker {
            if phase == Phase::Copy {
                self.base.files.fetch_add(shard.files, Relaxed);
                self.base.bytes.fetch_add(shard.bytes, Relaxed);
            }
            ("skipped", m.summary)
        } else {
            let job = CopyJob {
                source: args.source.clone(),
                destinations: (self.destinations)(),
                // Without hard links kept, trees and ranges copy every path as its own file,
                // so the link groups would only copy them again.
                scopes: engine_scopes(shard, phase)
                    .into_iter()
                    .filter(|sc| {
                        self.base_opts.preserve.hardlinks
                            || !matches!(sc, ingest_copy::Scope::LinkGroup(_))
                    })
                    .collect(),
            };
            let summary = if job.scopes.is_empty() {
                Summary::default()
            } else {
                let mut opts = engine_options(self.base_opts.clone(), phase);
                if let Some(budget) = budget {
                    // Never more than the copy phase found in this shard: a shard whose
                    // destination grew since deletes nothing, and the verify reports it.
                    opts.mirror = Some(MaxDeletes::Count(budget));
                    opts.mirror_weigh_only = false;
                }
                // Proved once for the worker, before its first shard.
                opts.probe_destinations = false;
                // With auto each shard in flight starts a share of the threads; the limits (up
                // to --max-per-mount per mount) are the worker's, shared by all of them.
                if let ingest_copy::Concurrency::Auto(cfg) = &mut opts.concurrency {
                    cfg.max_per_mount =
                        ingest_job::auto_threads_per_shard(cfg.max_per_mount, args.slots());
                }
                let opened = self.opened(&job, &opts, progress)?;
                ingest_copy::run_opened(&opened, &job.scopes, &opts, progress, sink, self.limits)
                    .map_err(|e| e.to_string())?
            };
            if summary.is_success()
                && !args.dry_run
                && let Some(dir) = &args.markers
            {
                let m = Marker {
                    shard: shard.id,
                    phase: phase.as_str().into(),
                    summary: summary.clone(),
                };
                let data = serde_json::to_vec(&m).expect("markers serialize");
                if let Err(e) =
                    crate::cmd::scan::write_durably(&marker_path(dir, phase, shard.id), &data)
                {
                    // The shard is done; without its marker it is only redone (cheaply) next time.
                    eprintln!(
                        "warning: --markers: marker for shard {} not written ({e})",
                        shard.id
                    );
                }
            }
            let status = if summary.is_success() {
                "done"
            } else {
                "failed"
            };
            (status, summary)
        };
        {
            let mut t = self.tally.lock().unwrap();
            let ids = match status {
                "skipped" => &mut t.skipped,
                "done" => &mut t.done,
                _ => &mut t.failed,
            };
            ids.push(shard.id);
            if status != "skipped" {
                add_summary(&mut t.ran, &summary);
            }
            add_summary(&mut t.total, &summary);
        }
        self.base.done.fetch_add(1, Relaxed);
        // A worker whose shards are handed to it one by one (by the operator, or by `run`)
        // reports each shard's own result as it ends: its summary, the failures its slot listed
        // since it started, and only its entries met again after the scan. So what a shard found
        // is delivered even if the worker never gets to its last word (it dies, or leaves a hung
        // destination with its threads stuck).
        let result = (self.claims.is_some() || args.claims).then(|| {
            let (entries, recorded) = again.inner.take();
            let mut result = pod_result(
                &summary,
                &entries,
                recorded - *recorded_before,
                args.dry_run,
            );
            *recorded_before = recorded;
            again.discount_since(&mut result, again_before);
            result.mirror = summary
                .mirror
                .as_ref()
                .map(|m| mirror_result(shard.id, phase, m, budget));
            self.tally.lock().unwrap().claimed.add(&result);
            result
        });
        if let (Some(c), Some(result)) = (self.claims, &result) {
            c.finish(shard.id, result.clone());
        }
        emit(&serde_json::json!({
            "event": "shard",
            "worker": self.worker,
            "phase": phase.as_str(),
            "shard": shard.id,
            "status": status,
            "files": shard.files,
            "bytes": shard.bytes,
            "seconds": t0.elapsed().as_secs_f64(),
            "summary": summary,
            "result": result,
        }));
        Ok(())
    }
}

/// The shards of `--claims-url`, as the operator hands them out.
fn claimed_shards<'p>(
    session: &'p Session,
    plan: &'p Plan,
    slots: usize,
) -> impl Iterator<Item = Result<&'p Shard, Halt>> + Send + 'p {
    let unknown = |id: u32| {
        Halt::Unusable(format!(
            "--claims-url: the operator handed out shard {id}, which is not in --plan \
             (valid: 0..{}); is it this run's plan?",
            plan.shards.len()
        ))
    };
    std::iter::from_fn(move || match session.next_shard(slots) {
        Ok(None) => None,
        Ok(Some(id)) => Some(plan.shards.get(id as usize).ok_or_else(|| unknown(id))),
        Err(end) => Some(Err(Halt::Claims(end))),
    })
}

/// A shard's mirror counts as its result carries them: the copy phase's finding under the
/// shard's id (the prune phase's budget), the prune phase's deletions. Of what the copy phase
/// found (`budget`), what the prune phase no longer found when it weighed again is gone: deleted
/// by an earlier attempt at the shard whose worker was stopped before it could tell (killed, or
/// left a hung destination), or by someone else.
fn mirror_result(
    shard: u32,
    phase: Phase,
    m: &MirrorCounts,
    budget: Option<u64>,
) -> ingest_api::report::MirrorResult {
    match phase {
        Phase::Prune => ingest_api::report::MirrorResult {
            deleted: m.deleted,
            gone: match (&m.refused, budget) {
                (None, Some(found)) => found.saturating_sub(m.entries),
                _ => 0,
            },
            kept: m.kept,
            failed: m.failed,
            refused: m.refused.clone(),
            ..Default::default()
        },
        _ => ingest_api::report::MirrorResult {
            found: (m.entries > 0)
                .then_some((shard, m.entries))
                .into_iter()
                .collect(),
            unweighed: m.failed,
            ..Default::default()
        },
    }
}

/// The prune phase's budgets given with the shard ids of `--claims` (`ID BUDGET` lines).
#[derive(Default)]
pub struct Budgets(Mutex<std::collections::HashMap<u32, u64>>);

impl Budgets {
    /// A shard given without one may delete nothing.
    fn get(&self, shard: u32) -> u64 {
        self.0.lock().unwrap().get(&shard).copied().unwrap_or(0)
    }
}

/// The shards of `--claims`: ids read from standard input, one per line (`ID`, or `ID BUDGET`
/// for the prune phase), until its end. A line `rate BYTES FILES` (each a number or `-`, no
/// limit) sets this worker's limits: `run` sends one when its share of the job's changes.
fn claims<'p>(
    plan: &'p Plan,
    budgets: &'p Budgets,
    throttle: Option<Arc<ingest_copy::Throttle>>,
) -> impl Iterator<Item = Result<&'p Shard, String>> + Send + 'p {
    use std::io::BufRead;
    // One reader: a `rate` line takes effect when it comes, not when a slot next asks for a
    // shard (all of them may be busy with long ones). Shard ids wait in the channel.
    let (tx, rx) = std::sync::mpsc::channel::<Result<(String, Option<u64>), String>>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let sent = match line {
                Err(e) => tx.send(Err(format!("--claims: reading standard input: {e}"))),
                Ok(line) => match claims_line(&line) {
                    Ok(ClaimsLine::Rate(limit)) => {
                        if let Some(t) = &throttle {
                            t.set(limit);
                        }
                        Ok(())
                    }
                    Ok(ClaimsLine::Shard(id, budget)) => tx.send(Ok((id, budget))),
                    Ok(ClaimsLine::Empty) => Ok(()),
                    Err(e) => tx.send(Err(e)),
                },
            };
            if sent.is_err() {
                return; // the worker stopped taking shards
            }
        }
    });
    rx.into_iter().map(move |got| {
        let (id, budget) = got?;
        let shard = id
            .parse::<usize>()
            .ok()
            .and_then(|i| plan.shards.get(i))
            .ok_or_else(|| {
                format!(
                    "--claims: {id:?} is not a shard of the plan (valid: 0..{})",
                    plan.shards.len()
                )
            })?;
        if let Some(b) = budget {
            budgets.0.lock().unwrap().insert(shard.id, b);
        }
        Ok(shard)
    })
}

/// One line of `--claims` input.
#[derive(Debug, PartialEq)]
enum ClaimsLine {
    Empty,
    /// A shard id, with its delete budget in the prune phase.
    Shard(String, Option<u64>),
    /// `rate BYTES FILES`.
    Rate(ingest_copy::RateLimit),
}

fn claims_line(line: &str) -> Result<ClaimsLine, String> {
    let mut fields = line.split_whitespace();
    let Some(first) = fields.next() else {
        return Ok(ClaimsLine::Empty);
    };
    if first == "rate" {
        let bad =
            || format!("--claims: {line:?} is not `rate BYTES FILES` (numbers, or - for none)");
        let mut rate = || match fields.next() {
            Some("-") => Ok(None),
            Some(v) => v.parse::<u64>().map(Some).map_err(|_| bad()),
            None => Err(bad()),
        };
        return Ok(ClaimsLine::Rate(ingest_copy::RateLimit {
            bytes_per_second: rate()?,
            files_per_second: rate()?,
        }));
    }
    let budget = match fields.next() {
        None => None,
        Some(b) => Some(
            b.parse::<u64>()
                .map_err(|_| format!("--claims: {line:?} is not a shard id and a budget"))?,
        ),
    };
    Ok(ClaimsLine::Shard(first.to_owned(), budget))
}

/// Feeds the status's failure list (`inner`): passes entries on except repaired ones and the
/// failures of entries the scan already failed on, which it counts instead (see [`ScanFailed`]).
struct AgainAtScan<'a> {
    known: &'a ScanFailed,
    inner: &'a FirstN,
    phase: &'a Mutex<Phase>,
    /// Failed entries met again (any pass).
    entries: AtomicU64,
    /// Of those, the verify pass's (each one of its `errors`).
    verify_errors: AtomicU64,
}

impl ReportSink for AgainAtScan<'_> {
    fn record(&self, entry: ingest_copy::ReportEntry) {
        // The list is of what is still wrong: a repaired entry would only take a place in it
        // (the full report has it).
        if matches!(entry.outcome, EntryOutcome::Repaired) {
            return;
        }
        let failure = matches!(
            entry.outcome,
            EntryOutcome::Failed | EntryOutcome::Mismatched
        );
        if failure && self.known.covers(&entry.path) {
            self.entries.fetch_add(1, Relaxed);
            if *self.phase.lock().unwrap() == Phase::Verify {
                self.verify_errors.fetch_add(1, Relaxed);
            }
            return;
        }
        self.inner.record(entry);
    }
}

impl AgainAtScan<'_> {
    /// Takes the entries met again out of the result's counts.
    fn discount(&self, r: &mut PodResult) {
        self.discount_since(r, (0, 0));
    }

    /// Entries met again, and of those the verify pass's, so far.
    fn counts(&self) -> (u64, u64) {
        (self.entries.load(Relaxed), self.verify_errors.load(Relaxed))
    }

    /// Takes the entries met again since [`Self::counts`] returned `since` out of the result's
    /// counts (one shard's result: only that shard's entries).
    fn discount_since(&self, r: &mut PodResult, since: (u64, u64)) {
        let (entries, verify_errors) = self.counts();
        r.failed = r.failed.saturating_sub(entries - since.0);
        if let Some(v) = &mut r.verification {
            v.errors = v.errors.saturating_sub(verify_errors - since.1);
        }
    }
}

/// The names of `--preserve` (the spec's `preserve` fields that are true).
pub const PRESERVE_NAMES: [&str; 7] = [
    "owner",
    "mode",
    "times",
    "xattrs",
    "acls",
    "symlinks",
    "hardlinks",
];

/// Parses `--preserve`: listed attributes on, the others off (special files keep `base`'s setting).
pub fn parse_preserve(
    list: &str,
    base: ingest_copy::Preserve,
) -> Result<ingest_copy::Preserve, String> {
    let mut p = ingest_copy::Preserve {
        owner: false,
        mode: false,
        times: false,
        xattrs: false,
        acls: false,
        hardlinks: false,
        ..base
    };
    if list == "none" {
        return Ok(p);
    }
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match name {
            "owner" => p.owner = true,
            "mode" => p.mode = true,
            "times" => p.times = true,
            "xattrs" => p.xattrs = true,
            "acls" => p.acls = true,
            "hardlinks" => p.hardlinks = true,
            // The engine always copies symlinks as symlinks; there is nothing to switch.
            "symlinks" => {}
            other => {
                return Err(format!(
                    "{other:?} is not an attribute; valid: {}, or none",
                    PRESERVE_NAMES.join(", ")
                ));
            }
        }
    }
    Ok(p)
}

pub fn add_summary(total: &mut Summary, s: &Summary) {
    total.add(s);
}

/// The engine's counts in the shape the operator reads (also what `run` aggregates).
/// `dry_run`: the differences a report-only verify found are what a pass would do, listed as
/// such, and not failed entries.
pub fn pod_result(
    s: &Summary,
    entries: &[ingest_copy::ReportEntry],
    recorded: u64,
    dry_run: bool,
) -> PodResult {
    let failures: Vec<FileFailure> = entries
        .iter()
        .filter(|e| !matches!(e.outcome, EntryOutcome::Repaired | EntryOutcome::Matched))
        .map(|e| FileFailure {
            // The root as `.`: an empty path is a shard-level failure's.
            path: match e.path.is_root() {
                true => ".".into(),
                false => e.path.to_escaped(),
            },
            reason: match &e.error {
                _ if dry_run => e.dry_run_reason(),
                Some(err) => format!("{}: {err}", e.op),
                None => format!("{} {:?}", e.op, e.mismatches),
            },
        })
        .collect();
    let unrepaired = s.verify.as_ref().map_or(0, |v| v.unrepaired);
    PodResult {
        files: s.copy.entries_done(),
        up_to_date: s.copy.files_skipped,
        bytes: s.copy.bytes_copied,
        failed: s.failed_entries() - if dry_run { unrepaired } else { 0 },
        verification: s.verify.as_ref().map(verification),
        failures,
        failures_omitted: recorded.saturating_sub(entries.len() as u64),
        ..PodResult::default()
    }
}

pub fn verification(v: &ingest_copy::VerifyCounts) -> VerificationCounts {
    VerificationCounts {
        checked: v.checked,
        matched: v.matched,
        missing: v.missing,
        mismatched: v.mismatched,
        extraneous: v.extraneous,
        repaired: v.repaired,
        errors: v.errors,
        verified: v.matched + v.repaired,
        differing_bytes: v.differing_bytes,
        content_unchanged: v.content_unchanged,
        extraneous_entries: v.extraneous_entries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_lines_are_shards_budgets_or_rates() {
        assert_eq!(claims_line("  "), Ok(ClaimsLine::Empty));
        assert_eq!(claims_line("7"), Ok(ClaimsLine::Shard("7".into(), None)));
        assert_eq!(
            claims_line("7 40"),
            Ok(ClaimsLine::Shard("7".into(), Some(40)))
        );
        assert_eq!(
            claims_line("rate 1048576 -"),
            Ok(ClaimsLine::Rate(ingest_copy::RateLimit {
                bytes_per_second: Some(1 << 20),
                files_per_second: None
            }))
        );
        for bad in ["rate 5", "rate x -", "7 many"] {
            assert!(claims_line(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_worker_starts_its_destinations_at_its_own_index() {
        let d = ["a", "b", "c"];
        assert_eq!(turned(&d, 0), ["a", "b", "c"]);
        assert_eq!(turned(&d, 1), ["b", "c", "a"]);
        assert_eq!(turned(&d, 5), ["c", "a", "b"]);
        assert!(turned::<&str>(&[], 3).is_empty());
        // Four threads over three destinations, dealt round robin by three workers so turned:
        // every destination gets four threads in all.
        let mut per_dest = [0; 3];
        for w in 0..3 {
            let order = turned(&[0, 1, 2], w);
            for t in 0..4 {
                per_dest[order[t % 3]] += 1;
            }
        }
        assert_eq!(per_dest, [4, 4, 4]);
    }

    /// A cluster worker turns its destinations by its index; each pace must stay with its own.
    #[test]
    fn a_worker_turns_its_paces_with_its_destinations() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            worker: Args,
        }
        let parse = |extra: &[&str]| {
            let argv = ["worker", "--plan", "p", "--source", "s"]
                .iter()
                .chain(&["--dest", "a", "--dest", "b", "--dest", "c"])
                .chain(extra);
            <Cli as clap::Parser>::try_parse_from(argv).unwrap().worker
        };
        let mut args = parse(&["--mount-pace=10,-,30"]);
        start_at(&mut args, 1);
        let dests: Vec<String> = args
            .destinations
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        assert_eq!(dests, ["b", "c", "a"]);
        assert_eq!(args.mount_pace, [None, Some(30), Some(10)]);
        // None given: none made up.
        let mut args = parse(&[]);
        start_at(&mut args, 2);
        assert!(args.mount_pace.is_empty());
    }

    #[test]
    fn auto_workers_start_at_their_share_of_the_initial_limit() {
        assert_eq!(shared_initial(16, 1), 16);
        assert_eq!(shared_initial(16, 3), 5);
        assert_eq!(shared_initial(16, 0), 16);
        assert_eq!(shared_initial(16, 100), 2);
    }

    #[test]
    fn mount_pace_is_microseconds_or_a_dash() {
        assert_eq!(pace("2000"), Ok(Some(2000)));
        assert_eq!(pace("-"), Ok(None));
        for bad in ["0", "", "1.5", "fast", "-3"] {
            let e = pace(bad).unwrap_err();
            assert!(e.contains("microseconds per entry"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn shards_at_once_is_1_to_16() {
        assert_eq!(shards_at_once("2"), Ok(2));
        assert_eq!(shards_at_once("16"), Ok(16));
        for bad in ["0", "17", "two", ""] {
            let e = shards_at_once(bad).unwrap_err();
            assert!(e.contains("1 to 16") && e.contains(bad), "{e}");
        }
    }
}
