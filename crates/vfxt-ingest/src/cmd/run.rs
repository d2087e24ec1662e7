//! `vfxt-ingest run -f ingestjob.yaml`: one IngestJob, end to end, on this machine.
//!
//! The same stages as the cluster, with processes instead of pods: scan → plan → W `worker`
//! processes for the copy phase (each writing through every destination mount, taking shards as
//! it has room) → the same workers for the verify phase → a status document shaped like the CRD's.
//! The state directory keeps the plan and per-shard markers, so a re-run after a crash skips
//! the shards that finished without scanning again.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use ingest_api::claims::MountFigures;
use ingest_api::job::MirrorStatus;
use ingest_api::job::{
    Destination, DestinationNfs, EntryFilter, FailureAction, FailurePolicy, FileFailure,
    IngestJobSpec, IngestJobStatus, Limits, NfsSource, Phase as JobPhase, Preserve,
    Progress as JobProgress, PvcSource, ReportTarget, ServerState, ServerStatus, ShardCounts,
    ShardSizing, Source, ThreadsPerWorker, VerificationCounts, Verify, VerifyMode as JobVerifyMode,
    WorkerTemplate,
};
use ingest_api::report::{MirrorResult, PodResult};
use ingest_copy::{FilterSpec, Snapshot, Summary};
use ingest_job::{ShardQueue, WorkerExit};
use ingest_plan::Phase;
use ingest_plan::format::Plan;
use ingest_plan::planner::PlanOptions;

use crate::Outcome;
use crate::cmd::scan::{CostArgs, scan_and_plan, status_totals, write_durably, write_plan};
use crate::cmd::worker::{add_summary, verification};
use crate::progress_view::{self, Expected, bytes};

const LOCAL_HELP: &str = "\
The file is an IngestJob as for the cluster (apiVersion ingest.vfxt.dev/v1alpha1, kind IngestJob), and
says where the source and destination are on this machine in one of two ways:

1. Local paths instead of NFS:
     spec:
       source:      {local: /data/projects}
       destination: {local: [/mnt/destination1, /mnt/destination2, /mnt/destination3]}
   Each destination entry is a mount of the same export (through a different cluster node IP);
   every worker writes through all of them.

2. The cluster form (source.nfs {server, path}, destination.nfs {servers, path}) plus a top-level
   map from each \"SERVER:/EXPORT\" to where it is mounted here:
     mounts:
       \"10.0.0.5:/export/genomics\": /mnt/source
       \"10.1.1.101:/nfs\": /mnt/destination1
       \"10.1.1.102:/nfs\": /mnt/destination2

source.subPath and destination.subPath apply below either form. Workers default to spec.workers,
else one per destination; shards to spec.shards.target, else 16 per worker (at least 64).

State (plan, per-shard markers, worker logs and reports, status.yaml) goes to --state DIR,
default ./.vfxt-ingest/NAME. Re-running the same file resumes: finished shards are skipped and
files that already match are left alone. To copy what changed in the source since (a delta pass),
bump spec.run: the source is scanned again and every shard re-run, skipping files that match. Exit codes: 0 succeeded; 1 finished with failures (see
status.yaml); 2 unusable input (the message names the field).";

#[derive(Debug, clap::Args)]
#[command(after_long_help = LOCAL_HELP)]
pub struct Args {
    /// The IngestJob YAML (see --help for the local forms).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// State directory (plan, markers, logs, status.yaml).
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Worker processes (overrides spec.workers).
    #[arg(long, value_name = "W")]
    pub workers: Option<u32>,
    /// Shards to aim for (overrides spec.shards.target).
    #[arg(long, value_name = "K")]
    pub shards: Option<u32>,
    /// Scan threads.
    #[arg(long, default_value_t = 16)]
    pub scan_threads: usize,
    #[command(flatten)]
    pub cost: CostArgs,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print the final status as JSON on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Compare only, as `spec.dryRun: true`: scan, then check every shard without copying or
    /// writing anything; say what a pass would create, update, write and find only in the
    /// destination.
    #[arg(long)]
    pub dry_run: bool,
}

// ---- the document ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RunDoc {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: Meta,
    spec: RunSpec,
    /// "SERVER:/EXPORT" → local mount point.
    #[serde(default)]
    mounts: BTreeMap<String, PathBuf>,
    /// Ignored: a status copied along with the object.
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
struct Meta {
    #[serde(default)]
    name: Option<String>,
}

/// `IngestJobSpec` with the local forms of source and destination; the other fields are the
/// API's own types, so defaults and field names are the CRD's.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RunSpec {
    source: RunSource,
    destination: RunDestination,
    #[serde(default)]
    workers: Option<u32>,
    #[serde(default)]
    threads_per_worker: ThreadsPerWorker,
    #[serde(default)]
    shards: ShardSizing,
    #[serde(default)]
    verify: Verify,
    #[serde(default)]
    preserve: Preserve,
    #[serde(default)]
    failure_policy: FailurePolicy,
    /// As in the cluster, per destination: a worker whose operations on one destination wait
    /// this long with none finishing gives it up (a local run shows its progress live instead
    /// of a Stalled condition).
    #[serde(default)]
    stall_timeout_seconds: Option<u32>,
    #[serde(default)]
    run: i64,
    #[serde(default)]
    filter: EntryFilter,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    mode: ingest_api::job::Mode,
    #[serde(default)]
    max_deletes: Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    #[serde(default)]
    limits: Option<Limits>,
    #[serde(default)]
    worker: WorkerTemplate,
    /// Checked as in the cluster; a local run writes its reports to its state directory.
    #[serde(default)]
    report: Option<ReportTarget>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RunSource {
    #[serde(default)]
    nfs: Option<NfsSource>,
    #[serde(default)]
    pvc: Option<PvcSource>,
    #[serde(default)]
    local: Option<PathBuf>,
    #[serde(default)]
    sub_path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RunDestination {
    #[serde(default)]
    nfs: Option<DestinationNfs>,
    #[serde(default)]
    local: Option<Vec<PathBuf>>,
    #[serde(default)]
    sub_path: Option<String>,
}

fn yes() -> bool {
    true
}

/// Everything `run` needs, resolved to local paths and checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Resolved {
    name: String,
    /// The job file names a cluster report location (`spec.report`), which a local run does not use.
    cluster_report: bool,
    source: PathBuf,
    /// Destination directories (mount + subPath), one per server.
    destinations: Vec<PathBuf>,
    /// Names for status: the NFS servers, or the local mount paths.
    servers: Vec<String>,
    workers: u32,
    shards: u32,
    /// `spec.threadsPerWorker`, each worker's `--threads` (a count or `auto`).
    threads: ThreadsPerWorker,
    /// `spec.stallTimeoutSeconds` (or its default): each worker's `--stall-timeout`.
    #[serde(default)]
    stall_timeout: u64,
    verify: String,
    /// `spec.verify.repair`.
    #[serde(default = "yes")]
    repair: bool,
    owner: bool,
    mode: bool,
    times: bool,
    xattrs: bool,
    #[serde(default = "yes")]
    acls: bool,
    hardlinks: bool,
    /// `spec.verify.fsync`.
    #[serde(default)]
    fsync: bool,
    fail_job: bool,
    max_failed_files: Option<u64>,
    /// `spec.failurePolicy.retriesPerShard`: how often a shard is handed out again after the
    /// worker that held it died.
    #[serde(default)]
    retries: u32,
    max_files: Option<u64>,
    max_bytes: Option<u64>,
    run: i64,
    seconds_per_entry: f64,
    bytes_per_second: f64,
    /// `spec.filter`, ages not yet fixed: each scan fixes them to its start (the plan keeps that).
    #[serde(default)]
    filter: FilterSpec,
    /// `spec.dryRun` or `--dry-run`: compare only.
    #[serde(default)]
    dry_run: bool,
    /// `spec.limits`, for the whole job: each worker gets its share.
    #[serde(default)]
    limits: Option<Limits>,
    /// `spec.mode: Mirror`, with `spec.maxDeletes` (or its default).
    #[serde(default)]
    mirror: Option<ingest_copy::MaxDeletes>,
    /// `spec.verify.scope: Changed`.
    #[serde(default)]
    verify_changed: bool,
}

/// What a run's phases share.
struct RunShared {
    /// Destinations found unresponsive, with why: no worker after uses them, in either phase.
    avoided: Mutex<Vec<(String, String)>>,
    /// When the run's copy workers began writing: `verify.scope: Changed`.
    write_start: WriteStart,
    /// Each destination's time per entry (µs) in the copy phase, by its path, set when it ends:
    /// the phases after it start knowing which destination is slow (`worker --mount-pace`).
    paces: OnceLock<BTreeMap<String, u64>>,
}

/// The earliest a copy worker of the run began writing, by the destination's clock (its probe
/// file's ctime), kept in the state directory as soon as a worker says it: a run resumed after a
/// crash measures from its first invocation, whose files its verify must still read.
struct WriteStart {
    earliest: Mutex<Option<i64>>,
    file: PathBuf,
}

impl WriteStart {
    fn load(state: &Path, run: i64) -> WriteStart {
        let file = state.join(format!("write-started-run-{run}"));
        let earliest = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        WriteStart {
            earliest: Mutex::new(earliest),
            file,
        }
    }

    fn saw(&self, secs: i64) {
        let mut e = self.earliest.lock().unwrap();
        if e.is_some_and(|e| e <= secs) {
            return;
        }
        *e = Some(secs);
        if let Err(err) = write_durably(&self.file, secs.to_string().as_bytes()) {
            // Without it a resumed run's verify may read less than it must: it then reads all.
            eprintln!(
                "warning: --state: {} not written ({err})",
                self.file.display()
            );
            let _ = std::fs::remove_file(&self.file);
        }
    }

    /// `--content-changed-since`: the earliest start less the margin (`None`: no copy worker
    /// said when it began, so everything is read).
    fn changed_since(&self) -> Option<i64> {
        let e = (*self.earliest.lock().unwrap())?;
        Some(e - ingest_api::job::changed_scope_margin())
    }
}

/// Where the workers of run `run` write their reports: a directory per pass (`spec.run`), so that
/// each pass keeps its own audit trail (`vfxt-ingest report --against` compares two).
fn reports_dir(state: &Path, run: i64) -> PathBuf {
    state.join("logs").join(format!("run-{run}"))
}

impl Resolved {
    fn policy(&self) -> ingest_job::Policy {
        ingest_job::Policy {
            fail_job: self.fail_job,
            max_failed_files: self.max_failed_files,
        }
    }
}

/// The CRD's schema of an IngestJob with the local forms `run` adds: `spec.source.local`,
/// `spec.destination.local` and the top-level `mounts`; a `status` copied along is not looked at.
fn local_schema() -> JSONSchemaProps {
    let mut schema = ingest_api::strict::object_schema();
    let of = |t: &str| JSONSchemaProps {
        type_: Some(t.into()),
        ..JSONSchemaProps::default()
    };
    let props = schema.properties.get_or_insert_with(Default::default);
    props.insert(
        "mounts".into(),
        JSONSchemaProps {
            additional_properties: Some(JSONSchemaPropsOrBool::Schema(Box::new(of("string")))),
            ..of("object")
        },
    );
    props.insert(
        "status".into(),
        JSONSchemaProps {
            x_kubernetes_preserve_unknown_fields: Some(true),
            ..of("object")
        },
    );
    if let Some(spec) = props.get_mut("spec").and_then(|s| s.properties.as_mut()) {
        for (side, local) in [
            ("source", of("string")),
            (
                "destination",
                JSONSchemaProps {
                    items: Some(JSONSchemaPropsOrArray::Schema(Box::new(of("string")))),
                    ..of("array")
                },
            ),
        ] {
            if let Some(p) = spec.get_mut(side).and_then(|s| s.properties.as_mut()) {
                p.insert("local".into(), local);
            }
        }
    }
    schema
}

/// Parses the YAML; errors name the field path and line, and say what is valid. A field the
/// CRD does not know is refused at any depth (the API server prunes or rejects it; silently
/// ignoring `verify: {mod: Checksum}` would copy with the default instead).
fn parse(text: &str) -> Result<RunDoc, String> {
    ingest_api::strict::check_yaml(text, &local_schema())?;
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, RunDoc>(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let at = inner
            .location()
            .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
            .unwrap_or_default();
        // serde_yaml's message already lists the expected fields or variants.
        let msg = inner.to_string();
        let msg = match msg.find(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        if path == "." {
            format!("{msg}{at}")
        } else {
            format!("{path}: {msg}{at}")
        }
    })
}

fn mount_key(server: &str, path: &str) -> String {
    format!("{server}:{path}")
}

/// Joins a validated relative subPath.
fn under(base: &Path, sub: &Option<String>) -> PathBuf {
    match sub {
        Some(s) if !s.is_empty() => base.join(s),
        _ => base.to_path_buf(),
    }
}

/// The local mount point of `server:path`, or an error saying how to give it.
fn lookup(
    mounts: &BTreeMap<String, PathBuf>,
    errs: &mut Vec<String>,
    field: &str,
    server: &str,
    path: &str,
) -> Option<PathBuf> {
    let key = mount_key(server, path);
    let found = mounts.get(&key).cloned();
    if found.is_none() {
        errs.push(format!(
            "mounts: no local path for {key:?} ({field}); add it, e.g. mounts: {{\"{key}\": /mnt/...}}, or use the local form (see --help)"
        ));
    }
    found
}

fn resolve(doc: RunDoc, args: &Args, file: &Path) -> Result<Resolved, Vec<String>> {
    let mut errs: Vec<String> = Vec::new();
    let api_version = format!(
        "{}/{}",
        ingest_api::constants::GROUP,
        ingest_api::constants::VERSION
    );
    if doc.api_version != api_version {
        errs.push(format!(
            "apiVersion: {:?} is not supported; use {api_version:?}",
            doc.api_version
        ));
    }
    if doc.kind != ingest_api::constants::KIND {
        errs.push(format!(
            "kind: {:?} is not supported; use {:?}",
            doc.kind,
            ingest_api::constants::KIND
        ));
    }
    let spec = doc.spec;
    let mounts = &doc.mounts;

    // The source, as a local path and as a spec the API's validation understands.
    let (source_root, api_source) = match (&spec.source.local, &spec.source.nfs, &spec.source.pvc) {
        (Some(p), None, None) => {
            let abs = std::path::absolute(p).unwrap_or_else(|_| p.clone());
            let nfs = NfsSource {
                server: "localhost".into(),
                path: abs.to_string_lossy().into_owned(),
            };
            (
                Some(abs),
                Source {
                    nfs: Some(nfs),
                    pvc: None,
                    sub_path: spec.source.sub_path.clone(),
                },
            )
        }
        (None, Some(nfs), None) => {
            let root = lookup(mounts, &mut errs, "spec.source.nfs", &nfs.server, &nfs.path);
            (
                root,
                Source {
                    nfs: Some(nfs.clone()),
                    pvc: None,
                    sub_path: spec.source.sub_path.clone(),
                },
            )
        }
        (None, None, Some(_)) => {
            errs.push("spec.source.pvc: a PersistentVolumeClaim cannot be used by run; use source.local or source.nfs with mounts".into());
            (None, Source::default())
        }
        _ => {
            errs.push("spec.source: set exactly one of local, nfs (with mounts) or pvc".into());
            (None, Source::default())
        }
    };
    let (dest_roots, servers, api_dest) = match (&spec.destination.local, &spec.destination.nfs) {
        (Some(list), None) => {
            if list.is_empty() {
                errs.push("spec.destination.local: list at least one directory (a mount of the destination export)".into());
            }
            let abs: Vec<PathBuf> = list
                .iter()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
                .collect();
            let names: Vec<String> = abs.iter().map(|p| p.display().to_string()).collect();
            // Valid stand-ins, so that the API's checks of the other fields apply unchanged.
            let stand_in: Vec<String> = (1..=abs.len().max(1))
                .map(|i| format!("local-{i}"))
                .collect();
            let dest = DestinationNfs {
                servers: stand_in,
                path: "/".into(),
                mount_options: None,
            };
            (
                abs,
                names,
                Destination {
                    nfs: dest,
                    sub_path: spec.destination.sub_path.clone(),
                },
            )
        }
        (None, Some(nfs)) => {
            let roots: Vec<PathBuf> = nfs
                .servers
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    lookup(
                        mounts,
                        &mut errs,
                        &format!("spec.destination.nfs.servers[{i}]"),
                        s,
                        &nfs.path,
                    )
                })
                .collect();
            (
                roots,
                nfs.servers.clone(),
                Destination {
                    nfs: nfs.clone(),
                    sub_path: spec.destination.sub_path.clone(),
                },
            )
        }
        _ => {
            errs.push("spec.destination: set exactly one of local or nfs (with mounts)".into());
            (Vec::new(), Vec::new(), Destination::default())
        }
    };
    let api_spec = IngestJobSpec {
        source: api_source,
        destination: api_dest,
        workers: spec.workers,
        threads_per_worker: spec.threads_per_worker,
        shards: spec.shards.clone(),
        verify: spec.verify.clone(),
        preserve: spec.preserve.clone(),
        failure_policy: spec.failure_policy.clone(),
        stall_timeout_seconds: spec.stall_timeout_seconds,
        run: spec.run,
        // Pausing is a cluster matter (the claims endpoint holds the shards); a local run is
        // paused with Ctrl-Z.
        suspend: false,
        dry_run: spec.dry_run,
        mode: spec.mode,
        max_deletes: spec.max_deletes.clone(),
        limits: spec.limits.clone(),
        filter: spec.filter.clone(),
        worker: spec.worker.clone(),
        report: spec.report.clone(),
    };
    if let Err(e) = ingest_api::validate::validate_spec(&api_spec) {
        errs.extend(e.0.iter().map(|f| f.to_string()));
    }
    let workers = args
        .workers
        .or(spec.workers)
        .unwrap_or(servers.len().max(1) as u32);
    if args.workers == Some(0) {
        errs.push("--workers: must be at least 1 (got 0)".into());
    }
    let shards = args
        .shards
        .or(spec.shards.target)
        .unwrap_or((16 * workers).max(64));
    if args.shards == Some(0) {
        errs.push("--shards: must be at least 1 (got 0)".into());
    }
    let cost = match args.cost.model() {
        Ok(c) => c,
        Err(e) => {
            errs.push(e);
            Default::default()
        }
    };
    if !errs.is_empty() {
        return Err(errs);
    }
    let source = under(&source_root.expect("checked"), &spec.source.sub_path);
    match std::fs::metadata(&source) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => errs.push(format!(
            "spec.source: {} is not a directory",
            source.display()
        )),
        Err(e) => errs.push(format!(
            "spec.source: {} cannot be read ({e})",
            source.display()
        )),
    }
    let mut destinations = Vec::new();
    for (root, server) in dest_roots.iter().zip(&servers) {
        match std::fs::metadata(root) {
            Ok(m) if m.is_dir() => {}
            _ => errs.push(format!(
                "spec.destination: mount {} (for {server}) is not an existing directory",
                root.display()
            )),
        }
        destinations.push(under(root, &spec.destination.sub_path));
    }
    if errs.is_empty() {
        // The source against every destination (inside one another, the same directory), before
        // anything is created.
        let whole = ingest_copy::CopyJob {
            source: source.clone(),
            destinations: destinations.clone(),
            scopes: Vec::new(),
        };
        if let Err(e) = ingest_copy::check(&whole, &ingest_copy::Options::default()) {
            use ingest_copy::SetupError as E;
            let field = match e {
                E::SourceUnreadable(..) | E::SourceNotDirectory(..) | E::SourceInsideDest(..) => {
                    "spec.source"
                }
                E::FaultSpec(_) => "environment",
                _ => "spec.destination",
            };
            errs.push(format!("{field}: {e}"));
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    // The default state directory is named after the job: a name must not reach outside it.
    let name = match &doc.metadata.name {
        Some(n) => n.clone(),
        None => file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    ingest_api::validate::check_object_name(&name).map_err(|e| {
        vec![match doc.metadata.name {
            Some(_) => format!("metadata.name: {e}"),
            None => format!(
                "metadata.name: not set, and the file's name {name:?} cannot stand in for it: \
                 {e}; set metadata.name"
            ),
        }]
    })?;
    let verify = match spec.verify.mode {
        JobVerifyMode::None => "none",
        JobVerifyMode::Metadata => "metadata",
        JobVerifyMode::Checksum => "checksum",
    };
    Ok(Resolved {
        name,
        cluster_report: spec.report.is_some(),
        source,
        destinations,
        servers,
        workers,
        shards,
        threads: spec.threads_per_worker,
        stall_timeout: spec
            .stall_timeout_seconds
            .unwrap_or(ingest_api::job::DEFAULT_STALL_TIMEOUT_SECONDS)
            .into(),
        verify: verify.into(),
        repair: spec.verify.repair,
        // Owners can only be set by root; elsewhere asking for them would fail every file.
        owner: spec.preserve.owner && rustix::process::geteuid().is_root(),
        mode: spec.preserve.mode,
        times: spec.preserve.times,
        xattrs: spec.preserve.xattrs,
        acls: spec.preserve.acls,
        hardlinks: spec.preserve.hardlinks,
        fsync: spec.verify.fsync,
        fail_job: spec.failure_policy.action == FailureAction::FailJob,
        max_failed_files: spec.failure_policy.max_failed_files,
        retries: spec.failure_policy.retries_per_shard,
        max_files: spec.shards.max_files,
        max_bytes: spec.shards.max_bytes,
        run: spec.run,
        seconds_per_entry: cost.seconds_per_entry,
        bytes_per_second: cost.bytes_per_second,
        // Checked with the rest of the spec above.
        filter: spec.filter.to_spec().unwrap_or_default(),
        dry_run: spec.dry_run || args.dry_run,
        limits: spec.limits,
        // Checked with the rest of the spec above.
        mirror: api_spec.mirror_limit().ok().flatten(),
        verify_changed: spec.verify.scope == ingest_api::job::VerifyScope::Changed,
    })
}

// ---- the run --------------------------------------------------------------------------------

/// What one worker process reported.
#[derive(Debug, Default, Clone)]
struct WorkerState {
    snapshot: Snapshot,
    result: Option<serde_json::Value>,
    /// Each ended shard's summary, whether an earlier run had done it, and its own result (its
    /// `shard` events): what a worker that ends without its last word found.
    shards: Vec<(Summary, bool, Option<PodResult>)>,
    /// What went through each destination (from its result, or from the message of a worker
    /// that found a destination unresponsive).
    mounts: Vec<MountFigures>,
}

#[derive(Default)]
struct PhaseOutcome {
    /// The job's totals: this invocation's work and the shards done before (their markers).
    summary: Summary,
    /// What this invocation did.
    ran: Summary,
    /// Shards skipped because an earlier invocation finished them.
    shards_before: u64,
    /// How long the phase took, in this invocation.
    seconds: f64,
    failures: Vec<FileFailure>,
    /// Failed entries the workers' results count (without those the scan already counted).
    failed_files: u64,
    /// Shards the workers' results account for (done now, done before, or ended with failed
    /// entries); the rest of the plan's shards ended without a result.
    accounted_shards: u64,
    /// The workers' verification counts (verify phase).
    verification: Option<VerificationCounts>,
    /// `mode: Mirror`: what the shards found only in the destination (copy phase) or deleted
    /// (prune phase).
    mirror: Option<MirrorResult>,
    /// What went through each destination, by its path: the workers' per-mount figures summed
    /// (for the per-server status).
    mounts: Vec<MountFigures>,
    /// Workers that could not start or could not use their input, with why.
    broken: Vec<String>,
    /// Workers that died before their result, with why (their unfinished shards went to the
    /// others while any was left).
    died: Vec<String>,
    unusable: bool,
    /// Some shard was run (not skipped by its marker), or a worker broke.
    worked: bool,
}

impl PhaseOutcome {
    /// A phase that did not run (a dry run's copy): nothing done, every shard accounted for.
    fn skipped(shards: u64) -> PhaseOutcome {
        PhaseOutcome {
            accounted_shards: shards,
            ..PhaseOutcome::default()
        }
    }

    /// A worker's result, or one shard's: its failed entries, the failures it listed and what
    /// it verified.
    fn add_result(&mut self, pr: &PodResult) {
        self.failed_files += pr.failed;
        self.failures.extend(pr.failures.iter().cloned());
        if let Some(v) = &pr.verification {
            self.verification.get_or_insert_default().add(v);
        }
        if let Some(m) = &pr.mirror {
            self.mirror.get_or_insert_default().add(m);
        }
    }
}

pub fn run(args: Args) -> Outcome {
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: -f {}: cannot be read ({e})", args.file.display());
            return Outcome::UnusableInput;
        }
    };
    let doc = match parse(&text) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {}: {e}", args.file.display());
            return Outcome::UnusableInput;
        }
    };
    let job = match resolve(doc, &args, &args.file) {
        Ok(j) => j,
        Err(errs) => {
            for e in errs {
                eprintln!("error: {}: {e}", args.file.display());
            }
            return Outcome::UnusableInput;
        }
    };
    let state = args
        .state
        .clone()
        .unwrap_or_else(|| PathBuf::from(".vfxt-ingest").join(&job.name));
    if let Err(e) = crate::cmd::copy::outside_source(&state, &job.source) {
        let how = if args.state.is_none() {
            " (the default, under the current directory); give --state DIR or run from elsewhere"
        } else {
            ""
        };
        eprintln!("error: --state {}: {e}{how}", state.display());
        return Outcome::UnusableInput;
    }
    if job.cluster_report {
        eprintln!(
            "note: spec.report is where the cluster's pods write their reports; this local run writes them to {} (read them with: vfxt-ingest report {0})",
            reports_dir(&state, job.run).display()
        );
    }
    match execute(&job, &state, &args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            Outcome::UnusableInput
        }
    }
}

fn execute(job: &Resolved, state: &Path, args: &Args) -> Result<Outcome, String> {
    let started = Timestamp::now();
    let t0 = Instant::now();
    let markers = state.join("markers");
    for d in [state.to_path_buf(), markers.clone(), state.join("logs")] {
        std::fs::create_dir_all(&d)
            .map_err(|e| format!("--state {}: cannot be created ({e})", d.display()))?;
    }
    for d in &job.destinations {
        if job.dry_run {
            // A dry run writes nothing to the destination, not even its missing directories.
            if !d.is_dir() {
                return Err(format!(
                    "spec.destination: {} does not exist, and a dry run creates nothing; a pass would copy all of the source (`vfxt-ingest scan` says how much)",
                    d.display()
                ));
            }
            continue;
        }
        std::fs::create_dir_all(d)
            .map_err(|e| format!("spec.destination: {} cannot be created ({e})", d.display()))?;
    }
    let plan_path = state.join("plan.json");
    let job_path = state.join("job.json");
    let plan = match reusable_plan(job, &job_path, &plan_path) {
        Some(p) => {
            say(
                args,
                &format!(
                    "resuming: plan of {} shards from {}",
                    p.shards.len(),
                    plan_path.display()
                ),
            );
            p
        }
        None => {
            say(args, &format!("scanning {}", job.source.display()));
            interim_status(state, job, None, JobPhase::Scanning, started);
            let opts = PlanOptions {
                shards: job.shards,
                workers: job.workers,
                servers: job.servers.clone(),
                cost: ingest_plan::CostModel {
                    seconds_per_entry: job.seconds_per_entry,
                    bytes_per_second: job.bytes_per_second,
                },
                max_files: job.max_files,
                max_bytes: job.max_bytes,
                ..PlanOptions::default()
            };
            let filter = crate::cmd::scan::filter_now(&job.filter)?;
            let (_, p, secs) = scan_and_plan(&job.source, args.scan_threads, &filter, &opts)?;
            // A new plan invalidates the old markers (shard ids mean other things now).
            clear_markers(&markers, None).map_err(|e| format!("--state: {e}"))?;
            write_plan(&plan_path, &p).map_err(|e| format!("--state: plan not written ({e})"))?;
            write_durably(
                &job_path,
                &serde_json::to_vec_pretty(job).expect("job serializes"),
            )
            .map_err(|e| format!("--state: job not written ({e})"))?;
            let t = &p.totals;
            say(
                args,
                &format!(
                    "scanned {} files, {} directories, {} in {secs:.2} s; {} shards over {} workers on {} destinations, predicted imbalance {:.3}",
                    t.files,
                    t.directories,
                    bytes(t.bytes),
                    p.shards.len(),
                    ingest_job::workers_for(p.workers, p.shards.len()),
                    p.servers.len(),
                    p.prediction.imbalance
                ),
            );
            for e in &p.scan_errors {
                say(args, &format!("  unreadable: {}: {}", e.path, e.error));
            }
            p
        }
    };
    let t = &plan.totals;
    // Destinations found unresponsive, with why: no worker after uses them, in either phase.
    let shared = RunShared {
        avoided: Mutex::new(Vec::new()),
        write_start: WriteStart::load(state, job.run),
        paces: OnceLock::new(),
    };
    let mut copy = if job.dry_run {
        // Nothing is copied: the verify phase compares, report only.
        PhaseOutcome::skipped(plan.shards.len() as u64)
    } else {
        interim_status(state, job, Some(&plan), JobPhase::Copying, started);
        run_phase(
            job,
            state,
            &plan,
            &plan_path,
            Phase::Copy,
            Expected {
                files: t.files,
                bytes: t.bytes,
            },
            args,
            &shared,
            None,
        )
    };
    let _ = shared.paces.set(
        copy.mounts
            .iter()
            .filter_map(|m| {
                let pace = ingest_job::latency::time_per_entry(&m.latency, m.entries)?;
                Some((m.mount.clone(), pace))
            })
            .collect(),
    );
    // Mirror: the copy phase weighed what only the destination has; all of it is weighed
    // together before anything is deleted.
    let mirror = match job.mirror {
        Some(limit) if !job.dry_run && !copy.unusable => {
            let found = copy.mirror.clone().unwrap_or_default();
            let decision = ingest_api::report::mirror_decision(
                limit,
                job.policy(),
                t.errors,
                // The copy phase as the operator sums it.
                &PodResult {
                    files: copy.summary.copy.entries_done(),
                    failed: copy.failed_files,
                    mirror: Some(found.clone()),
                    ..PodResult::default()
                },
                (plan.shards.len() as u64).saturating_sub(copy.accounted_shards),
            );
            let pruned = match &decision {
                ingest_job::mirror::Decision::Prune { budgets, .. } => {
                    interim_status(state, job, Some(&plan), JobPhase::Copying, started);
                    let files = budgets
                        .keys()
                        .filter_map(|id| plan.shards.get(*id as usize))
                        .map(|s| s.files)
                        .sum();
                    let pruned = run_phase(
                        job,
                        state,
                        &plan,
                        &plan_path,
                        Phase::Prune,
                        Expected { files, bytes: 0 },
                        args,
                        &shared,
                        Some(budgets),
                    );
                    copy.broken.extend(pruned.broken.iter().cloned());
                    copy.unusable |= pruned.unusable;
                    copy.worked = true;
                    Some(pruned)
                }
                _ => None,
            };
            if let Some(p) = &pruned {
                // Deletions that failed are the run's failures, listed with the rest.
                copy.failures.extend(p.failures.iter().cloned());
            }
            Some(ingest_api::report::mirror_status(
                &found,
                &decision,
                pruned.as_ref().and_then(|p| p.mirror.as_ref()),
            ))
        }
        _ => None,
    };
    if copy.worked {
        // Copying touches directories other shards share (their times are set by verify), so a
        // verify marker from before this copy no longer proves anything: verify every shard.
        clear_markers(&markers, Some(Phase::Verify)).map_err(|e| format!("--state: {e}"))?;
    }
    let verify = if !copy.unusable {
        let expected = Expected {
            files: t.files + t.others + t.directories,
            bytes: t.bytes,
        };
        interim_status(state, job, Some(&plan), JobPhase::Verifying, started);
        Some(run_phase(
            job,
            state,
            &plan,
            &plan_path,
            Phase::Verify,
            expected,
            args,
            &shared,
            None,
        ))
    } else {
        None
    };
    // A file copied in ranges by several shards is finalized in the last phase, once every
    // shard's range is written: that outcome (copied, or found finished) is the copy's.
    if let Some(l) = &verify {
        copy.summary.copy.add(&l.summary.copy);
        copy.ran.copy.add(&l.ran.copy);
    }
    // With verify none the phase only set directory metadata (shards share directories, so
    // their times are final only now): it verified nothing, and what it could not set is a
    // failure of the copy.
    let verify = match verify {
        Some(settle) if job.verify == "none" => {
            copy.failed_files += settle.failed_files;
            // A shard whose directory metadata was never set is not finished either.
            copy.accounted_shards = copy.accounted_shards.min(settle.accounted_shards);
            copy.failures.extend(settle.failures);
            copy.broken.extend(settle.broken);
            copy.died.extend(settle.died);
            copy.unusable |= settle.unusable;
            None
        }
        v => v,
    };
    let avoided = shared.avoided.into_inner().unwrap();
    let mut status = build_status(
        job,
        &plan,
        &copy,
        verify.as_ref(),
        (&avoided, mirror.as_ref()),
        started,
    );
    // The passes before this one, from the status the last run left: the estimate rests on them.
    let earlier = earlier_passes(state);
    status.totals = status.totals.map(|t| t.with_estimate(&earlier));
    status.passes = earlier;
    let reason = status
        .conditions
        .first()
        .map(|c| c.reason.clone())
        .unwrap_or_default();
    status.passes = status.with_pass_recorded(
        match (job.dry_run, job.mirror) {
            (true, _) => ingest_api::job::PassMode::DryRun,
            (false, Some(_)) => ingest_api::job::PassMode::Mirror,
            (false, None) => ingest_api::job::PassMode::Copy,
        },
        &reason,
    );
    let yaml = serde_yaml::to_string(&status).expect("status serializes");
    write_durably(&state.join("status.yaml"), yaml.as_bytes())
        .map_err(|e| format!("--state: status not written ({e})"))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("status serializes")
        );
    } else {
        print_status(
            &status,
            &copy,
            verify.as_ref(),
            t0.elapsed().as_secs_f64(),
            state,
            job.dry_run,
        );
    }
    if copy.unusable || verify.as_ref().is_some_and(|v| v.unusable) {
        return Ok(Outcome::UnusableInput);
    }
    // Exit 1 for any failed entry, also when the failure policy let the run succeed.
    Ok(
        if status.phase == Some(JobPhase::Succeeded) && status.failed_files == 0 {
            Outcome::Success
        } else {
            Outcome::PartialFailure
        },
    )
}

/// Removes the markers of `phase` (all markers with `None`).
fn clear_markers(dir: &Path, phase: Option<Phase>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if phase.is_none_or(|ph| name.starts_with(&format!("{}-", ph.as_str()))) {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

/// Writes the phase being entered to `status.yaml`, so that whoever watches the state directory
/// sees where the run is (the final status replaces it).
fn interim_status(
    state: &Path,
    job: &Resolved,
    plan: Option<&Plan>,
    phase: JobPhase,
    started: Timestamp,
) {
    let passes = earlier_passes(state);
    let status = IngestJobStatus {
        phase: Some(phase),
        run: Some(job.run),
        message: Some(format!("{phase}")),
        totals: plan.map(|p| status_totals(&p.totals).with_estimate(&passes)),
        shards: plan.map(|p| ShardCounts {
            total: p.shards.len() as u64,
            pending: p.shards.len() as u64,
            ..ShardCounts::default()
        }),
        start_time: Some(now_time(started)),
        passes,
        ..IngestJobStatus::default()
    };
    let yaml = serde_yaml::to_string(&status).expect("status serializes");
    // Best effort: the final status is the one that must be written.
    let _ = write_durably(&state.join("status.yaml"), yaml.as_bytes());
}

/// The finished runs the status in `state` records (none when there is no status yet).
fn earlier_passes(state: &Path) -> Vec<ingest_api::job::PassRecord> {
    std::fs::read_to_string(state.join("status.yaml"))
        .ok()
        .and_then(|t| serde_yaml::from_str::<IngestJobStatus>(&t).ok())
        .map(|s| s.passes)
        .unwrap_or_default()
}

fn say(args: &Args, line: &str) {
    if !args.quiet && !args.json {
        eprintln!("{line}");
    }
}

/// The stored plan, if it was made for exactly this job (same paths, workers, shards, run).
fn reusable_plan(job: &Resolved, job_path: &Path, plan_path: &Path) -> Option<Plan> {
    let stored: Resolved = serde_json::from_slice(&std::fs::read(job_path).ok()?).ok()?;
    if stored != *job {
        return None;
    }
    crate::cmd::worker::load_plan(plan_path).ok()
}

/// Starts one worker process per worker slot for `phase`, shows aggregate progress, collects results.
///
/// A worker that finds a destination unresponsive (operations waiting `stallTimeoutSeconds`
/// with none finishing) says which and exits 4; its shards go back to the queue at no cost to
/// their retries, and its slot starts again without that destination, as does every worker
/// started after it (`avoided`, kept for the next phase). With no destination left the phase
/// ends with its shards unfinished.
#[allow(clippy::too_many_arguments)]
fn run_phase(
    job: &Resolved,
    state: &Path,
    plan: &Plan,
    plan_path: &Path,
    phase: Phase,
    expected: Expected,
    args: &Args,
    shared: &RunShared,
    budgets: Option<&BTreeMap<ingest_job::ShardId, u64>>,
) -> PhaseOutcome {
    let avoided = &shared.avoided;
    let phase_started = Instant::now();
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("vfxt-ingest"));
    let names = ingest_copy::mount_names(&job.destinations);
    let workers = ingest_job::workers_for(job.workers, plan.shards.len());
    let at_once = ingest_job::shards_at_once(match job.threads {
        ThreadsPerWorker::Fixed(n) => Some(n as usize),
        ThreadsPerWorker::Auto => None,
    });
    // One state per process: a slot starts again at most once per destination it gives up.
    let per_slot = job.destinations.len().max(1);
    let states: Vec<Mutex<WorkerState>> = (0..workers as usize * per_slot)
        .map(|_| Mutex::new(WorkerState::default()))
        .collect();
    // `k`: the slot's k-th process (it starts again after a destination stopped answering).
    let spawn = |w: u32, k: usize| -> Result<Child, String> {
        let avoid = avoided.lock().unwrap().clone();
        let dests: Vec<&PathBuf> = job
            .destinations
            .iter()
            .zip(&names)
            .filter(|(_, n)| !avoid.iter().any(|(a, _)| a == *n))
            .map(|(d, _)| d)
            .collect();
        if dests.is_empty() {
            return Err(format!(
                "worker {w}: no destination left to write through (every one stopped answering)"
            ));
        }
        let log = state
            .join("logs")
            .join(format!("worker-{w}-{}.log", phase.as_str()));
        let stderr = match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
        {
            Ok(f) => Stdio::from(f),
            Err(_) => Stdio::inherit(),
        };
        let dests = crate::cmd::worker::turned(&dests, w as usize);
        let pace: Vec<Option<u64>> = dests
            .iter()
            .map(|d| shared.paces.get()?.get(&d.display().to_string()).copied())
            .collect();
        let mut cmd = Command::new(&exe);
        cmd.arg("worker")
            .arg("--plan")
            .arg(plan_path)
            .arg("--source")
            .arg(&job.source)
            // Every destination, as every pod in the cluster has: the engine spreads each
            // worker's threads over them. Each worker's list starts at another one, so that the
            // destinations that get one thread more (threads not a multiple of them) differ.
            .args(
                dests
                    .iter()
                    .flat_map(|d| [OsStr::new("--dest"), d.as_os_str()]),
            )
            .args(ingest_job::latency::mount_pace_arg(&pace))
            // Shards are handed out on demand (see `Dispatch`).
            .arg("--claims")
            .args([
                "--phase",
                phase.as_str(),
                "--threads",
                &job.threads.to_string(),
                "--verify",
                &job.verify,
                "--stall-timeout",
                &job.stall_timeout.to_string(),
                "--shards-at-once",
                &at_once.to_string(),
            ])
            .args(match (job.dry_run, phase) {
                // A dry run compares every shard (an earlier run's markers prove nothing about
                // the destination now) and leaves none.
                (true, _) => vec![OsString::from("--dry-run")],
                // Deleting is decided anew in every run: no marker skips it.
                (false, Phase::Prune) => Vec::new(),
                (false, _) => vec![OsString::from("--markers"), state.join("markers").into()],
            })
            .args(job.mirror.is_some().then_some("--mirror"))
            .args(
                (phase == Phase::Verify && job.verify == "checksum" && job.verify_changed)
                    .then(|| shared.write_start.changed_since())
                    .flatten()
                    .map(|t| format!("--content-changed-since={t}")),
            )
            .arg("--report")
            .arg(
                reports_dir(state, job.run)
                    // Each process its own: a worker started again must not replace what the
                    // one before it reported.
                    .join(match k {
                        0 => format!("report-{w}-{}.jsonl.gz", phase.as_str()),
                        k => format!("report-{w}-{}-{k}.jsonl.gz", phase.as_str()),
                    }),
            )
            .args(["--progress-every", "1"])
            .stdout(Stdio::piped())
            .stderr(stderr)
            .stdin(Stdio::piped());
        let preserve = Preserve {
            owner: job.owner,
            mode: job.mode,
            times: job.times,
            xattrs: job.xattrs,
            acls: job.acls,
            symlinks: true,
            hardlinks: job.hardlinks,
        };
        cmd.arg("--preserve").arg(preserve.worker_arg());
        if !job.repair {
            cmd.arg("--no-repair");
        }
        if job.fsync {
            cmd.arg("--fsync");
        }
        if let Some(l) = &job.limits {
            let r = l.share_at(Timestamp::now(), u64::from(workers));
            cmd.args(r.worker_args());
        }
        // SAFETY: only an async-signal-safe prctl between fork and exec. A worker must not outlive
        // `run`: a re-run would otherwise race it on the same shards.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))
                .map_err(std::io::Error::from)
            });
        }
        // Tests: faults for one worker slot only (the others then take its shards).
        if std::env::var(ingest_copy::fault::WORKER_ENV).is_ok_and(|only| only != w.to_string()) {
            cmd.env_remove(ingest_copy::fault::ENV);
        }
        cmd.spawn()
            .map_err(|e| format!("worker {w}: cannot start {} ({e})", exe.display()))
    };
    let dispatch = Mutex::new(Dispatch {
        queue: ShardQueue::new(
            match budgets {
                // The prune phase runs only the shards whose copy found something to delete.
                Some(b) => b.keys().copied().collect::<Vec<_>>(),
                None => plan.shards.iter().map(|s| s.id).collect(),
            },
            job.retries,
            // Locally a worker's death is seen at once (its pipe closes): no lease runs out.
            u64::MAX / 2,
        ),
        stdins: (0..workers).map(|_| None).collect(),
        at_once,
        budgets,
        rates: None,
    });
    let dispatch = &dispatch;
    let stop = AtomicBool::new(false);
    // Per process that ran: its slot, its state's index, how it ended.
    let exits: Mutex<Vec<(u32, usize, std::io::Result<std::process::ExitStatus>)>> =
        Mutex::new(Vec::new());
    let broken = Mutex::new(Vec::new());
    let states = &states;
    std::thread::scope(|s| {
        let slots: Vec<_> = (0..workers)
            .map(|w| {
                let (spawn, exits, broken) = (&spawn, &exits, &broken);
                s.spawn(move || {
                    for k in 0..per_slot {
                        let idx = w as usize * per_slot + k;
                        let mut child = match spawn(w, k) {
                            Ok(c) => c,
                            Err(e) => {
                                broken.lock().unwrap().push(e);
                                break;
                            }
                        };
                        let out = child.stdout.take().expect("stdout piped");
                        {
                            let mut d = dispatch.lock().unwrap();
                            d.stdins[w as usize] = child.stdin.take();
                            d.feed();
                        }
                        let gave_up = read_worker(out, &states[idx], dispatch, &shared.write_start);
                        let exit = child.wait();
                        let class =
                            WorkerExit::from_code(exit.as_ref().ok().and_then(|e| e.code()));
                        // Its output ended: the worker is gone. What it held goes to the
                        // others (at no cost to the shards when a destination was to blame).
                        let again = {
                            let mut d = dispatch.lock().unwrap();
                            d.stdins[w as usize] = None;
                            let name = w.to_string();
                            if class == WorkerExit::MountUnresponsive {
                                d.queue.release(&name);
                            } else {
                                d.queue.worker_gone(&name);
                            }
                            d.feed();
                            !d.queue.finished()
                        };
                        exits.lock().unwrap().push((w, idx, exit));
                        match gave_up {
                            Some(m) if class == WorkerExit::MountUnresponsive => {
                                let mut a = avoided.lock().unwrap();
                                if !a.iter().any(|(n, _)| *n == m.0) {
                                    a.push(m);
                                }
                            }
                            _ => break,
                        }
                        if !again {
                            break;
                        }
                    }
                })
            })
            .collect();
        let label = phase.as_str();
        let stop = &stop;
        // The job's limits follow its schedule and the job file: each worker gets its share of
        // what they say now, whenever that changes (a window opens, the file is edited, a worker
        // ends).
        if job.limits.is_some() {
            s.spawn(move || follow_limits(job, &args.file, dispatch, stop));
        }
        let viewer = (!args.quiet && !args.json).then(|| {
            s.spawn(move || {
                progress_view::report_until(stop, label, Some(expected), || {
                    let mut sum: Snapshot =
                        states.iter().map(|st| st.lock().unwrap().snapshot).sum();
                    if phase == Phase::Verify {
                        // The bar follows what this phase moves.
                        sum.files = sum.verified;
                        sum.bytes = sum.verified_bytes;
                    }
                    sum
                })
            })
        });
        for slot in slots {
            let _ = slot.join();
        }
        stop.store(true, Relaxed);
        if let Some(v) = viewer {
            let _ = v.join();
        }
    });
    let exits = exits.into_inner().unwrap();
    let broken = broken.into_inner().unwrap();

    let mut out = PhaseOutcome {
        broken,
        ..PhaseOutcome::default()
    };
    out.worked = !out.broken.is_empty();
    // Shards count as done when their worker said so (a `shard` event), whoever ran them.
    out.accounted_shards = dispatch.lock().unwrap().queue.completed() as u64;
    for (w, idx, exit) in exits {
        let st = states[idx].lock().unwrap().clone();
        let class = WorkerExit::from_code(exit.as_ref().ok().and_then(|e| e.code()));
        if class == WorkerExit::UnusableInput {
            out.unusable = true;
        }
        for m in &st.mounts {
            match out.mounts.iter_mut().find(|o| o.mount == m.mount) {
                Some(o) => o.add(m),
                None => out.mounts.push(m.clone()),
            }
        }
        let skipped = st.shards.iter().filter(|(_, skipped, _)| *skipped).count();
        out.worked |= st.shards.len() > skipped;
        out.shards_before += skipped as u64;
        match &st.result {
            Some(r) if class.accounted() => {
                if let Ok(s) = serde_json::from_value::<Summary>(r["summary"].clone()) {
                    add_summary(&mut out.summary, &s);
                }
                if let Ok(s) = serde_json::from_value::<Summary>(r["ran"].clone()) {
                    add_summary(&mut out.ran, &s);
                }
                if let Ok(pr) = serde_json::from_value::<PodResult>(r["result"].clone()) {
                    out.add_result(&pr);
                }
            }
            _ => {
                // No result: the shards it ended still count, from their own events, with
                // the failures each one listed.
                for (sum, skipped, result) in &st.shards {
                    add_summary(&mut out.summary, sum);
                    if !skipped {
                        add_summary(&mut out.ran, sum);
                    }
                    match result {
                        Some(pr) => out.add_result(pr),
                        // An event without its result (`run`'s workers always send one): the
                        // number of failed entries at least.
                        None => {
                            out.failed_files += sum.failed_entries();
                            if let Some(v) = &sum.verify {
                                out.verification
                                    .get_or_insert_default()
                                    .add(&verification(v));
                            }
                        }
                    }
                }
                out.worked = true;
                if class == WorkerExit::MountUnresponsive {
                    // Not a death: it gave its shards back and its slot went on without the
                    // destination (the status names it).
                    continue;
                }
                let log = state
                    .join("logs")
                    .join(format!("worker-{w}-{}.log", phase.as_str()));
                let why = match &exit {
                    Ok(e) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let last = tail.lines().last().unwrap_or("").to_string();
                out.worked = true;
                let what = format!(
                    "worker {w} ({} phase): {why}; {last} (log: {})",
                    phase.as_str(),
                    log.display()
                );
                if class == WorkerExit::UnusableInput {
                    out.broken.push(what);
                } else {
                    out.died.push(what);
                }
            }
        }
    }
    out.failures.truncate(ingest_api::job::MAX_LISTED_FAILURES);
    out.seconds = phase_started.elapsed().as_secs_f64();
    out
}

/// Reads a worker's events until its output ends: progress and ended shards into `st` (each
/// ended shard also into the queue, which then deals the next), its result, and what went
/// through each destination. Returns the destination it found unresponsive, with why, if it
/// said so.
fn read_worker(
    out: std::process::ChildStdout,
    st: &Mutex<WorkerState>,
    dispatch: &Mutex<Dispatch>,
    write_start: &WriteStart,
) -> Option<(String, String)> {
    let mut gave_up = None;
    for line in BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let mut st = st.lock().unwrap();
        match v["event"].as_str() {
            Some("shard") => {
                if let Ok(sum) = serde_json::from_value::<Summary>(v["summary"].clone()) {
                    let result = serde_json::from_value::<PodResult>(v["result"].clone()).ok();
                    st.shards.push((sum, v["status"] == "skipped", result));
                }
                drop(st);
                if let Some(id) = v["shard"].as_u64() {
                    let mut d = dispatch.lock().unwrap();
                    d.queue.complete(id as u32);
                    d.feed();
                }
            }
            Some("probed") => {
                if let Some(secs) = v["ctime"].as_i64() {
                    write_start.saw(secs);
                }
            }
            Some("progress") => {
                let n = |k: &str| v[k].as_u64().unwrap_or(0);
                st.snapshot = Snapshot {
                    files: n("files"),
                    bytes: n("bytes"),
                    failed: n("failed"),
                    verified: n("verified"),
                    verified_bytes: n("verifiedBytes"),
                    ..Snapshot::default()
                };
            }
            Some("result") => {
                st.mounts = serde_json::from_value(v["mounts"].clone()).unwrap_or_default();
                st.result = Some(v);
            }
            Some("unresponsive") => {
                st.mounts = serde_json::from_value(v["mounts"].clone()).unwrap_or_default();
                let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                gave_up = Some((s("mount"), s("why")));
            }
            _ => {}
        }
    }
    gave_up
}

/// Sends the workers their share of the job's limits whenever it changes, until `stop`: the
/// limits as the job file says them now (an edit takes effect within a second; a file that no
/// longer reads keeps the last ones, said once), at this time of the week, divided among the
/// workers still running.
fn follow_limits(job: &Resolved, file: &Path, dispatch: &Mutex<Dispatch>, stop: &AtomicBool) {
    let mut limits = job.limits.clone();
    let mut warned = false;
    while !stop.load(Relaxed) {
        let read = std::fs::read_to_string(file)
            .map_err(|e| e.to_string())
            .and_then(|t| parse(&t))
            .and_then(|doc| match &doc.spec.limits {
                Some(l) => l
                    .schedule()
                    .map(|_| doc.spec.limits.clone())
                    .map_err(|(f, m)| format!("{f}: {m}")),
                None => Ok(None),
            });
        match read {
            Ok(l) => {
                limits = l;
                warned = false;
            }
            Err(e) if !warned => {
                eprintln!(
                    "warning: -f {}: limits not updated, the last ones stay ({e})",
                    file.display()
                );
                warned = true;
            }
            Err(_) => {}
        }
        dispatch.lock().unwrap().send_rates(limits.as_ref());
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// The shard queue of one phase and the pipes to the workers' standard input: a worker gets the
/// next shard id whenever one of its slots is free, so a worker on a slow mount takes fewer
/// shards; when every shard ended, the pipes close and the workers finish.
struct Dispatch<'b> {
    queue: ShardQueue,
    /// Per worker slot: its pipe while it runs and the phase is not over.
    stdins: Vec<Option<std::process::ChildStdin>>,
    /// Shards each worker runs at once (its `--shards-at-once`).
    at_once: usize,
    /// The prune phase: how many entries each shard may delete, sent with its id.
    budgets: Option<&'b BTreeMap<ingest_job::ShardId, u64>>,
    /// The share of the job's limits last sent to the workers.
    rates: Option<ingest_job::schedule::Rates>,
}

impl Dispatch<'_> {
    /// Sends each running worker its share of `limits` now, when it differs from the last sent.
    fn send_rates(&mut self, limits: Option<&Limits>) {
        use std::io::Write;
        // Divided among the workers that hold shards: one that waits for work (the pass's tail)
        // leaves its share to the others.
        let live = match self.queue.holders() {
            0 => self.stdins.iter().filter(|p| p.is_some()).count(),
            n => n,
        }
        .max(1) as u64;
        let share = limits.map_or_else(Default::default, |l| l.share_at(Timestamp::now(), live));
        if self.rates == Some(share) {
            return;
        }
        let n = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
        let line = format!(
            "rate {} {}",
            n(share.bytes_per_second),
            n(share.files_per_second)
        );
        for pipe in &mut self.stdins {
            if let Some(stdin) = pipe
                && writeln!(stdin, "{line}").is_err()
            {
                *pipe = None;
            }
        }
        self.rates = Some(share);
    }

    /// Tops every worker up to `at_once` shards (it runs that many at once), a shard to each in
    /// turn.
    fn feed(&mut self) {
        use std::io::Write;
        'deal: for holds in 0..self.at_once {
            for (w, pipe) in self.stdins.iter_mut().enumerate() {
                let name = w.to_string();
                let Some(stdin) = pipe else { continue };
                if self.queue.claims_of(&name).len() > holds {
                    continue;
                }
                let Some(shard) = self.queue.claim(&name, 0) else {
                    break 'deal;
                };
                let sent = match self.budgets {
                    Some(b) => writeln!(stdin, "{shard} {}", b.get(&shard).copied().unwrap_or(0)),
                    None => writeln!(stdin, "{shard}"),
                };
                if sent.is_err() {
                    // It is exiting; its reader gives the claim back when its output ends.
                    *pipe = None;
                }
            }
        }
        if self.queue.finished() {
            // End of input: each worker finishes and writes its result.
            self.stdins.iter_mut().for_each(|p| *p = None);
        }
    }
}

/// Files and bytes per second of the copy phase: what this invocation's workers did (copied, or
/// found up to date) over the phase's own time. Shards an earlier invocation finished are not
/// counted: a resumed run that had nothing to do moved nothing, at 0 files/s.
fn copy_rates(copy: &PhaseOutcome) -> (u64, u64) {
    let secs = copy.seconds.max(1e-3);
    let c = &copy.ran.copy;
    (
        (c.entries_done() as f64 / secs).round() as u64,
        (c.bytes_copied as f64 / secs).round() as u64,
    )
}

fn now_time(t: Timestamp) -> Time {
    Time(t)
}

fn build_status(
    job: &Resolved,
    plan: &Plan,
    copy: &PhaseOutcome,
    verify: Option<&PhaseOutcome>,
    (avoided, mirror): (&[(String, String)], Option<&MirrorStatus>),
    started: Timestamp,
) -> IngestJobStatus {
    let t = &plan.totals;
    let total = plan.shards.len() as u64;
    // The last pass decides: verify walks every shard again and re-copies what the copy missed.
    let last = verify.unwrap_or(copy);
    let lost_shards = total.saturating_sub(last.accounted_shards);
    let succeeded = total - lost_shards;
    let c = &copy.summary.copy;
    let files_done = c.entries_done();
    let (files_per_second, bytes_per_second) = copy_rates(copy);
    let percent = if t.bytes > 0 {
        (c.bytes_copied as f64 / t.bytes as f64 * 100.0).min(100.0)
    } else if t.files > 0 {
        (files_done as f64 / t.files as f64 * 100.0).min(100.0)
    } else {
        100.0
    };
    // A shard counted as done has all its bytes at the destination, copied now or before.
    let percent = if lost_shards == 0 { 100.0 } else { percent };
    // Each server's figures: every worker wrote through every destination, in both phases.
    let names = ingest_copy::mount_names(&job.destinations);
    let unresponsive: Vec<Option<String>> = names
        .iter()
        .map(|n| {
            avoided
                .iter()
                .find(|(a, _)| a == n)
                .map(|(_, why)| format!("{n} stopped answering: {why}"))
        })
        .collect();
    let figures: Vec<MountFigures> = names
        .into_iter()
        .map(|name| {
            let mut sum = MountFigures::default();
            for m in [Some(copy), verify]
                .into_iter()
                .flatten()
                .flat_map(|p| &p.mounts)
            {
                if m.mount == name {
                    sum.add(m);
                }
            }
            sum
        })
        .collect();
    let secs = copy.seconds + verify.map_or(0.0, |v| v.seconds);
    let servers: Vec<ServerStatus> = ingest_api::claims::server_statuses(
        &job.servers,
        &figures,
        &unresponsive,
        ingest_job::workers_for(job.workers, plan.shards.len()),
        secs,
    );
    let verification = verify.and_then(|v| v.verification.clone());
    let mut failures: Vec<FileFailure> = plan
        .scan_errors
        .iter()
        .map(|e| FileFailure {
            path: e.path.to_escaped(),
            reason: format!("scan: {}", e.error),
        })
        .collect();
    let mut broken: Vec<String> = copy
        .broken
        .iter()
        .chain(verify.iter().flat_map(|v| v.broken.iter()))
        .cloned()
        .collect();
    // A worker that died is a failure only when its shards were lost with it (no other worker
    // was left to take them): then it is the reason.
    if lost_shards > 0 {
        broken.extend(last.died.iter().cloned());
    }
    for b in &broken {
        failures.push(FileFailure {
            path: String::new(),
            reason: b.clone(),
        });
    }
    // Failures of the last pass only: what the verify repaired is not failed any more.
    failures.extend(last.failures.iter().cloned());
    failures.truncate(ingest_api::job::MAX_LISTED_FAILURES);
    let v = ingest_job::decide(
        job.policy(),
        &ingest_job::Facts {
            // Every entry the scan could not read (unreadable directories included).
            scan_failed: t.errors,
            failed: last.failed_files,
            lost_shards,
            broken,
            extraneous: verification.as_ref().map_or(0, |v| v.extraneous),
            verified: verify.is_some(),
            files: t.files + t.others,
            bytes: t.bytes,
            up_to_date: c.files_skipped,
            excluded: t.excluded,
            dry_run: job.dry_run.then(|| {
                verification
                    .as_ref()
                    .map(|v| v.dry_run(job.mirror))
                    .unwrap_or_default()
            }),
            mirror: mirror.map(MirrorStatus::facts),
            content_unchanged: verification.as_ref().map_or(0, |v| v.content_unchanged),
        },
    );
    let phase = if v.succeeded {
        JobPhase::Succeeded
    } else {
        JobPhase::Failed
    };
    let (message, failed_files) = (v.message, v.failed_files);
    let finished = now_time(Timestamp::now());
    IngestJobStatus {
        phase: Some(phase),
        run: Some(job.run),
        // The cluster's Ready condition, with the verdict's reason (DryRun, DestinationDiffers...).
        conditions: vec![ingest_api::conditions::condition(
            ingest_api::constants::conditions::READY,
            v.succeeded,
            v.reason.as_str(),
            message.clone(),
            None,
            finished.clone(),
        )],
        message: Some(message),
        totals: Some(status_totals(t)),
        progress: Some(JobProgress {
            files: files_done,
            up_to_date: c.files_skipped,
            bytes: c.bytes_copied,
            percent: (percent * 10.0).round() / 10.0,
            percent_text: format!("{percent:.1}%"),
            bytes_text: bytes(c.bytes_copied),
            bytes_per_second,
            files_per_second,
            eta: None,
            checked: verification.as_ref().map_or(0, |v| v.checked),
            last_progress_time: None,
        }),
        shards: Some(ShardCounts {
            total,
            pending: 0,
            running: 0,
            succeeded,
            failed: lost_shards,
        }),
        servers,
        verification,
        mirror: mirror.cloned(),
        failed_files,
        failures,
        start_time: Some(now_time(started)),
        completion_time: Some(finished),
        ..IngestJobStatus::default()
    }
}

fn print_status(
    s: &IngestJobStatus,
    copy: &PhaseOutcome,
    verify: Option<&PhaseOutcome>,
    secs: f64,
    state: &Path,
    dry_run: bool,
) {
    let phase = s.phase.map(|p| p.as_str()).unwrap_or("Unknown");
    println!("{phase}: {}", s.message.as_deref().unwrap_or(""));
    if dry_run {
        // Nothing was copied: the message says what a pass would do; the paths are listed.
        if let Some(v) = &s.verification {
            println!(
                "dry run: {} compared, {} up to date, {} to create, {} to update ({} to write), {} only in the destination, {} could not be compared",
                v.checked,
                v.matched,
                v.missing,
                v.mismatched,
                bytes(v.differing_bytes),
                v.extraneous,
                v.errors
            );
        }
        for f in &s.failures {
            println!("  {}: {}", f.reason, f.path);
        }
        println!(
            "state: {} (the reports list every path: vfxt-ingest report {})",
            state.display(),
            reports_dir(state, s.run.unwrap_or_default()).display()
        );
        return;
    }
    // What this invocation did, apart from the job's totals: a resumed run that found every shard
    // done copied nothing.
    let c = &copy.ran.copy;
    let before = copy
        .summary
        .copy
        .entries_done()
        .saturating_sub(c.entries_done());
    let (fps, bps) = copy_rates(copy);
    println!(
        "this run, copy: {} files copied ({}), {} already up to date{}, {} directories, {} symlinks, {} hard links, {} failed, {} vanished from the source, {} changed while read, {} not attempted{}; {fps} files/s, {}/s over {:.3} s",
        c.files_copied,
        bytes(c.bytes_copied),
        c.files_skipped + before,
        if copy.shards_before > 0 {
            format!(
                " ({before} in {} shards done by an earlier run)",
                copy.shards_before
            )
        } else {
            String::new()
        },
        c.directories,
        c.symlinks,
        c.hardlinks,
        c.failed,
        c.vanished,
        c.changed,
        c.not_attempted,
        match c.excluded {
            0 => String::new(),
            n => format!(", {n} excluded by the filter"),
        },
        bytes(bps),
        copy.seconds,
    );
    if let Some(m) = &s.mirror {
        println!(
            "mirror: {} entries found only in the destination, {} deleted{}{}{}{}",
            m.found,
            m.deleted,
            match m.gone {
                0 => String::new(),
                n => format!(
                    ", {n} gone before the prune came to them (an earlier attempt's, or someone else's)"
                ),
            },
            match m.kept {
                0 => String::new(),
                n => format!(", {n} kept (in the source again)"),
            },
            match m.failed {
                0 => String::new(),
                n => format!(", {n} could not be deleted"),
            },
            m.refused
                .as_deref()
                .map(|r| format!("; {r}"))
                .unwrap_or_default()
        );
    }
    if let Some(v) = verify {
        let earlier = if v.shards_before > 0 {
            format!(" ({} shards verified by an earlier run)", v.shards_before)
        } else {
            String::new()
        };
        match &v.ran.verify {
            Some(r) if r.checked > 0 => println!(
                "this run, verify: {} checked, {} matched, {} missing, {} mismatched, {} repaired, {} errors{earlier}",
                r.checked, r.matched, r.missing, r.mismatched, r.repaired, r.errors,
            ),
            _ => println!("this run, verify: nothing checked{earlier}"),
        }
    }
    if let Some(p) = &s.progress {
        println!(
            "job: {} files ({}) at the destination, copied or found up to date",
            p.files, p.bytes_text
        );
    }
    if let (Some(v), Some(_)) = (&s.verification, verify) {
        println!(
            "job, verify: {} checked, {} matched, {} missing, {} mismatched, {} only in the destination, {} repaired, {} errors — {}",
            v.checked,
            v.matched,
            v.missing,
            v.mismatched,
            v.extraneous,
            v.repaired,
            v.errors,
            // Identical only when the whole job succeeded too: nothing failed, changed while
            // read, or was left unattempted.
            match (s.phase == Some(JobPhase::Succeeded), s.failed_files) {
                (true, 0) => "destination identical".to_string(),
                (true, n) => format!("destination identical except the {n} failed entries listed"),
                (false, _) => "DESTINATION DIFFERS".to_string(),
            }
        );
    }
    if let Some(sh) = &s.shards {
        println!("shards: {} of {} finished", sh.succeeded, sh.total);
    }
    for sv in &s.servers {
        let state = match (sv.state, &sv.message) {
            (Some(ServerState::Healthy) | None, _) => String::new(),
            (Some(st), Some(m)) => format!(" ({st:?}: {m})"),
            (Some(st), None) => format!(" ({st:?})"),
        };
        // What went through it, both phases: entries copied or checked, and bytes written.
        println!(
            "  {}: {} workers, {} entries handled, {} written{state}",
            sv.server,
            sv.workers,
            sv.files,
            bytes(sv.bytes)
        );
    }
    for f in &s.failures {
        println!("  FAILED {}: {}", f.path, f.reason);
    }
    for d in copy
        .died
        .iter()
        .chain(verify.iter().flat_map(|v| v.died.iter()))
    {
        println!("  note: {d}; its unfinished shard was handed to another worker");
    }
    if s.failed_files > s.failures.len() as u64 {
        println!(
            "  … {} more; every entry: vfxt-ingest report {}",
            s.failed_files - s.failures.len() as u64,
            reports_dir(state, s.run.unwrap_or_default()).display()
        );
    }
    println!(
        "{secs:.2} s in all; status: {}",
        state.join("status.yaml").display()
    );
}
