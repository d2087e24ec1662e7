//! The `IngestJob` custom resource: what to copy where (spec) and what happened (status).
//!
//! Validation lives in the CRD schema (OpenAPI bounds + CEL `x-kubernetes-validations`), so the API server rejects
//! a bad object with a message naming the field before the operator ever sees it. [`crate::validate`] repeats the
//! same rules in Rust for paths that do not pass an API server (`vfxt-ingest run`, objects created before a CRD
//! upgrade); a test keeps the two in agreement.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// CEL: an absolute path without a `..` segment. `[.]` instead of `\.` keeps the rule free of escapes in YAML.
macro_rules! abs_path_rule {
    ($field:literal) => {
        Rule::new("self.startsWith('/') && !self.matches('(^|/)[.][.](/|$)')").message(concat!(
            $field,
            " must be an absolute path (start with '/') without a '..' segment"
        ))
    };
}

/// CEL: a relative path without a `..` segment.
macro_rules! sub_path_rule {
    ($field:literal) => {
        Rule::new("!self.startsWith('/') && !self.matches('(^|/)[.][.](/|$)')").message(concat!(
            $field,
            " must be a relative path (no leading '/') without a '..' segment"
        ))
    };
}

/// CEL fragment: `s` is an IP address, or a DNS-1123 subdomain that is not all digits and dots (so a typo such
/// as `10.0.0.300` is rejected instead of being taken as a host name).
macro_rules! host_expr {
    ($var:literal) => {
        concat!(
            "isIP(",
            $var,
            ") || (",
            $var,
            ".matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$') && !",
            $var,
            ".matches('^[0-9.]+$'))"
        )
    };
}

/// One migration: copy `source` into `destination` through every destination server at once.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new(REPORT_OUTSIDE_COPY_RULE).message("spec.report.destinationPath must be outside the copied tree: set spec.destination.subPath and name a directory beside it (not inside it, not containing it), or use spec.report.pvc"))]
#[x_kube(validation = Rule::new(REPORT_PER_RUN_RULE).message("spec.report can change only together with spec.run: every pod of a run writes where the run started; bump spec.run to put the next run's reports elsewhere"))]
#[kube(
    group = "ingest.vfxt.dev",
    version = "v1alpha1",
    kind = "IngestJob",
    plural = "ingestjobs",
    shortname = "ij",
    category = "vfxt",
    namespaced,
    status = "IngestJobStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress.percentText"}"#,
    printcolumn = r#"{"name":"Files","type":"integer","jsonPath":".status.progress.files"}"#,
    printcolumn = r#"{"name":"Bytes","type":"string","jsonPath":".status.progress.bytesText"}"#,
    printcolumn = r#"{"name":"Verified","type":"integer","jsonPath":".status.verification.verified"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IngestJobSpec {
    /// Where the files come from. Mounted read-only. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.source is immutable; create a new IngestJob to copy from another source"))]
    pub source: Source,
    /// The cluster the files go to, through each of its node addresses. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.destination is immutable; create a new IngestJob to copy elsewhere"))]
    pub destination: Destination,
    /// Number of copy pods running at once, spread round-robin over the destination servers.
    /// Default: one per destination server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub workers: Option<u32>,
    /// Copy threads in each worker pod (files in flight per pod), 1..1024; or `auto`: each pod adapts the
    /// operations in flight per destination mount while it copies, raising them while throughput rises, backing
    /// off at the latency knee (where more in flight only slows every operation) and shifting work away from a
    /// slow mount. Default: 16.
    // The value is int-or-string (CEL type dyn). `string(self) == self` holds exactly for strings (CEL's `==`
    // across types is false); the usual `type(self) == int` means the same to the API server, but kube's
    // client-side CEL (tests/crd.rs) has no `type()`.
    #[serde(default)]
    #[schemars(schema_with = "threads_per_worker_schema")]
    #[x_kube(validation = Rule::new("string(self) == self ? self == 'auto' : (self >= 1 && self <= 1024)").message("spec.threadsPerWorker must be an integer 1..1024 or \"auto\""))]
    pub threads_per_worker: ThreadsPerWorker,
    /// How the scan splits the tree into shards (units of work a pod copies and retries).
    #[serde(default)]
    pub shards: ShardSizing,
    /// The checking pass after the copy.
    #[serde(default)]
    pub verify: Verify,
    /// Which file attributes are carried over.
    #[serde(default)]
    pub preserve: Preserve,
    /// What a failed file or shard does to the job.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// Seconds without a file copied or checked, while the run copies or verifies, after which
    /// the IngestJob says `Stalled` (reason `NoProgress`, a Warning Event) until work moves
    /// again: a node that stopped answering shows instead of a frozen percentage. Default 60.
    /// Also per destination server: a worker whose operations on one server wait this long with
    /// none finishing reports it `Unresponsive`, hands its shards back and exits; the pass goes
    /// on in a new Job whose pods do not mount that server. One operation can be a whole 64 MiB
    /// range of a large file (one copy_file_range call), so this must exceed the time one thread
    /// takes to write 64 MiB through a mount: the default assumes at least about 1.1 MB/s per
    /// thread; raise it for slower links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 86400))]
    pub stall_timeout_seconds: Option<u32>,
    /// Bump to request a new pass (scan, copy, verify). Files that already match are skipped, so a re-run costs
    /// only the delta.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub run: i64,
    /// Compare only: the run scans, then checks every shard without copying (no copy pass, no
    /// repairs, nothing written to the destination, not even a directory's times) and says what
    /// a pass would do: `status.verification` counts what it would create (`missing`), update
    /// (`mismatched`) and write (`differingBytes`), and what is only in the destination;
    /// `status.failures` lists the first of those paths; every path is in the reports
    /// (`spec.report`). Ends Succeeded when everything could be compared. Fixed when the run's
    /// scan starts: set it to false and bump `spec.run` to copy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// `Copy` (the default) adds and updates, and deletes nothing. `Mirror` also deletes what is
    /// only in the destination, safely: only names in the job's scope that the filter keeps, only
    /// in directories whose source listing succeeded in this pass, and only when the whole copy
    /// pass found no more than `maxDeletes` and failed no more entries than the failure policy
    /// allows (else nothing at all is deleted, and the status says why). A dry run with `Mirror`
    /// shows what would be deleted. Fixed when the run's scan starts.
    #[serde(default, skip_serializing_if = "Mode::is_copy")]
    pub mode: Mode,
    /// With `mode: Mirror`: the most entries one pass may delete (a directory counts with
    /// everything below it), as a count (`1000`) or a percentage of the destination's entries in
    /// scope (`"5%"`). Above it, the pass deletes nothing. Default `"1%"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deletes: Option<IntOrString>,
    /// Pauses the run: workers finish the shards they are running (each counted) and take no new
    /// ones until it is set back to false; the IngestJob says `Ready=False`, reason `Suspended`.
    /// The scan, when running, goes on to its end. Nothing is lost: the run resumes where it
    /// stopped, in the same pods.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// Which entries of the source the job copies: include/exclude patterns and age limits,
    /// applied alike by the scan, the copy and the verify pass. Excluded entries are counted
    /// (`status.progress.excluded`), never copied and never reported missing. Takes effect at
    /// the next scan (a run in progress keeps the filter its scan applied).
    #[serde(default, skip_serializing_if = "EntryFilter::is_empty")]
    pub filter: EntryFilter,
    /// How fast the whole job may write, divided evenly among its worker pods: bytes per second
    /// of file data and entries per second handled. Unset: as fast as it goes. Takes effect with
    /// the next run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Pod settings for the scan and worker pods.
    #[serde(default)]
    pub worker: WorkerTemplate,
    /// Where every copy and verify pod writes its full per-file report (every failed, repaired or
    /// mismatched path, JSON Lines, gzip-compressed), beyond the first failures the status lists.
    /// Default: no report files (the status keeps the first failures only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ReportTarget>,
}

impl IngestJobSpec {
    /// `stallTimeoutSeconds`, or its default.
    pub fn stall_timeout_seconds(&self) -> u64 {
        u64::from(
            self.stall_timeout_seconds
                .unwrap_or(DEFAULT_STALL_TIMEOUT_SECONDS),
        )
    }
}

/// CEL on the spec: a report written into the destination export stays out of the copied tree, so the verify
/// pass never finds it (as extraneous entries). [`crate::validate`] checks the same on normalized paths.
const REPORT_OUTSIDE_COPY_RULE: &str = "!has(self.report) || !has(self.report.destinationPath) || \
     (has(self.destination.subPath) && self.destination.subPath != '' && \
      self.report.destinationPath != self.destination.subPath && \
      !self.report.destinationPath.startsWith(self.destination.subPath + '/') && \
      !self.destination.subPath.startsWith(self.report.destinationPath + '/'))";

/// CEL transition rule on the spec: the report location is the run's, like its Jobs (a changed location mid-run
/// would split one run's reports over two places while the status names one).
const REPORT_PER_RUN_RULE: &str = "self.run != oldSelf.run || \
     (has(self.report) ? (has(oldSelf.report) && self.report == oldSelf.report) : !has(oldSelf.report))";

/// `spec.report`: exactly one of `pvc` or `destinationPath`. The files of run `n` are
/// `<location>/<IngestJob name>/run-<n>/<role>[-x<k>]-<worker index>.jsonl.gz` (`-x<k>`: the
/// pass's k-th new Job, made when a server stopped answering).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.pvc) != has(self.destinationPath)").message("spec.report: set exactly one of pvc or destinationPath"))]
#[serde(rename_all = "camelCase")]
pub struct ReportTarget {
    /// An existing PersistentVolumeClaim in the IngestJob's namespace (ReadWriteMany: every worker pod
    /// mounts it), mounted read-write at `/ingest/report`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<ReportPvc>,
    /// A directory of the destination export (relative to the export root, `spec.destination.nfs.path`),
    /// written through each pod's own destination mount. It must be outside the copied tree: set
    /// `spec.destination.subPath` and name a directory beside it, e.g. `vfxt-ingest-reports`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = sub_path_rule!("spec.report.destinationPath"))]
    pub destination_path: Option<String>,
}

/// A claim for the reports.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReportPvc {
    /// Claim name in the IngestJob's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
    /// Directory inside the claim (relative). Default: the claim's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    #[x_kube(validation = sub_path_rule!("spec.report.pvc.subPath"))]
    pub sub_path: Option<String>,
}

/// A relative path's segments without empty and `.` ones (`a//./b/` is `a/b`).
pub fn path_segments(p: &str) -> Vec<&str> {
    p.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect()
}

impl ReportTarget {
    /// The directory of run `run`'s report files, relative to the report location's root (the claim's root, or
    /// the destination export's): `[<subPath>/|<destinationPath>/]<name>/run-<run>`.
    pub fn run_dir(&self, name: &str, run: i64) -> String {
        let base = match (&self.pvc, &self.destination_path) {
            (Some(p), _) => p.sub_path.as_deref().unwrap_or(""),
            (None, Some(d)) => d.as_str(),
            (None, None) => "",
        };
        let mut parts = path_segments(base);
        let run_part = format!("run-{run}");
        parts.push(name);
        parts.push(&run_part);
        parts.join("/")
    }

    /// Where run `run`'s report files are, for humans: `pvc <claim>:/<dir>/` or
    /// `<server>:<export>/<dir>/` (the export is the same through every destination server).
    pub fn location(&self, spec: &IngestJobSpec, name: &str, run: i64) -> String {
        let dir = self.run_dir(name, run);
        match &self.pvc {
            Some(p) => format!("pvc {}:/{dir}/", p.claim_name),
            None => {
                let server = spec
                    .destination
                    .nfs
                    .servers
                    .first()
                    .map(String::as_str)
                    .unwrap_or("?");
                let export = spec.destination.nfs.path.trim_end_matches('/');
                format!("{server}:{export}/{dir}/")
            }
        }
    }
}

/// The name of one worker pod's report file in the run's report directory (see
/// [`ReportTarget::run_dir`]): `<role>-<worker index>.jsonl.gz`. `index` may be a variable
/// Kubernetes expands (`$(JOB_COMPLETION_INDEX)`).
pub fn report_file_name(role: &str, index: &str) -> String {
    format!("{role}-{index}.jsonl.gz")
}

/// `spec.threadsPerWorker`: a fixed number of copy threads per worker pod, or `auto` (the engine's adaptive
/// concurrency, `vfxt-ingest worker --threads auto`). In YAML and JSON an integer or the string `"auto"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadsPerWorker {
    /// This many copy threads in each pod, dealt over its destination mounts (valid: 1..=1024).
    Fixed(u32),
    /// A limit per destination mount, found while copying.
    Auto,
}

impl ThreadsPerWorker {
    /// What `threadsPerWorker` is when the spec does not say: existing objects keep meaning 16 threads.
    pub const DEFAULT: ThreadsPerWorker = ThreadsPerWorker::Fixed(16);
    /// The valid fixed counts.
    pub const RANGE: std::ops::RangeInclusive<u32> = 1..=1024;
}

impl Default for ThreadsPerWorker {
    fn default() -> Self {
        ThreadsPerWorker::DEFAULT
    }
}

/// `16` or `auto`: the YAML form, and the value of `vfxt-ingest worker --threads`.
impl std::fmt::Display for ThreadsPerWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ThreadsPerWorker::Fixed(n) => write!(f, "{n}"),
            ThreadsPerWorker::Auto => f.write_str("auto"),
        }
    }
}

impl Serialize for ThreadsPerWorker {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ThreadsPerWorker::Fixed(n) => s.serialize_u32(*n),
            ThreadsPerWorker::Auto => s.serialize_str("auto"),
        }
    }
}

/// Any integer that fits a `u32` is read (the range is [`crate::validate`]'s to report, naming the field, as the
/// CRD's rule does); of strings, only `auto`.
impl<'de> Deserialize<'de> for ThreadsPerWorker {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ThreadsPerWorker;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer 1..1024 or \"auto\"")
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                u32::try_from(v)
                    .map(ThreadsPerWorker::Fixed)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u32::try_from(v)
                    .map(ThreadsPerWorker::Fixed)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                if v == "auto" {
                    Ok(ThreadsPerWorker::Auto)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The schema of `threadsPerWorker`: int-or-string, so the API server keeps `16` an integer and `auto` a string
/// (a plain `type: integer` would refuse `auto`). Structural schemas allow no `type` here, and OpenAPI bounds do
/// not apply to a string, so the range is the CEL rule's on the field.
fn threads_per_worker_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-int-or-string": true })
}

/// Source tree: exactly one of `nfs` or `pvc`, plus an optional sub-directory.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.nfs) != has(self.pvc)").message("spec.source: set exactly one of nfs or pvc"))]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// An NFS export, mounted read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs: Option<NfsSource>,
    /// An existing PersistentVolumeClaim in the IngestJob's namespace, mounted read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcSource>,
    /// Directory inside the source to copy (relative). Default: the whole source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    #[x_kube(validation = sub_path_rule!("spec.source.subPath"))]
    pub sub_path: Option<String>,
}

/// An NFS export.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NfsSource {
    /// Server IP address or DNS name.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(host_expr!("self")).message("spec.source.nfs.server must be an IP address or a DNS-1123 host name"))]
    pub server: String,
    /// Exported path (absolute).
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = abs_path_rule!("spec.source.nfs.path"))]
    pub path: String,
}

/// A PersistentVolumeClaim.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PvcSource {
    /// Claim name in the IngestJob's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
}

/// Destination: one NFS export served at several addresses (the cache cluster's nodes).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// The export and the addresses that serve it.
    pub nfs: DestinationNfs,
    /// Directory under the export to copy into (relative). Default: the export root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    #[x_kube(validation = sub_path_rule!("spec.destination.subPath"))]
    pub sub_path: Option<String>,
}

/// The destination export.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DestinationNfs {
    /// Addresses of the cluster nodes that serve the same export (IP addresses or DNS names), each used by its own
    /// copy Job. Unique.
    #[schemars(length(min = 1, max = 256), inner(length(min = 1, max = 253)), extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new(concat!("self.all(s, ", host_expr!("s"), ")")).message("spec.destination.nfs.servers: every entry must be an IP address or a DNS-1123 host name"))]
    pub servers: Vec<String>,
    /// Exported path (absolute), the same on every server.
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = abs_path_rule!("spec.destination.nfs.path"))]
    pub path: String,
    /// NFS mount options (for example `hard`, `nconnect=8`, `vers=3`). When given, each server is mounted through
    /// a PersistentVolume + claim, because inline pod NFS volumes cannot carry options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    pub mount_options: Option<Vec<String>>,
}

/// Shard sizing. The planner balances files and bytes; these are targets, not exact counts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ShardSizing {
    /// Number of shards to aim for. Default: chosen by the planner from the tree and the worker count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub target: Option<u32>,
    /// Upper bound on files per shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_files: Option<u64>,
    /// Upper bound on bytes per shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_bytes: Option<u64>,
}

/// Which entries of the source tree are in a job's scope.
///
/// Patterns match paths relative to the source root (after `subPath`), as `.gitignore` reads
/// them: a pattern without `/` matches a name at any depth (`*.tmp`, `~$*`); one with a `/` is
/// anchored at the root (`/scratch`, `projects/*/cache`); a trailing `/` matches directories only
/// (`.snapshot/`); `*` stays within a name, `**` spans names. Excludes win, and an excluded
/// directory is left out whole.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EntryFilter {
    /// Leave out entries matching any of these patterns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub exclude: Vec<String>,
    /// When set, only files (and other non-directories) matching one of these patterns, or
    /// below a directory matching one, are in scope. Directories are still walked and created,
    /// so that the included files have their parents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub include: Vec<String>,
    /// Leave out files modified less than this long before the pass's scan started (still
    /// being written): a whole number and a unit, s, m, h, d or w (`10m`, `2h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+[smhdw]$')").message("spec.filter.minAge must be a whole number and a unit s, m, h, d or w (for example 10m, 12h, 7d)"))]
    pub min_age: Option<String>,
    /// Leave out files modified more than this long before the pass's scan started: a whole
    /// number and a unit, s, m, h, d or w (`365d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+[smhdw]$')").message("spec.filter.maxAge must be a whole number and a unit s, m, h, d or w (for example 10m, 12h, 7d)"))]
    pub max_age: Option<String>,
}

impl EntryFilter {
    pub fn is_empty(&self) -> bool {
        *self == EntryFilter::default()
    }

    /// The filter as the engine takes it (ages not yet fixed to a time), or what is wrong, by
    /// field (`spec.filter.exclude[2]`, `spec.filter.minAge`).
    pub fn to_spec(&self) -> Result<ingest_filter::FilterSpec, (String, String)> {
        let age = |field: &str, v: &Option<String>| {
            v.as_deref()
                .map(ingest_filter::parse_age)
                .transpose()
                .map_err(|m| (format!("spec.filter.{field}"), m))
        };
        let spec = ingest_filter::FilterSpec {
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            min_age_seconds: age("minAge", &self.min_age)?,
            max_age_seconds: age("maxAge", &self.max_age)?,
            reference_time: None,
        };
        // Compiled once here so that a bad pattern is refused before any pod starts.
        match ingest_filter::Filter::new(&spec.clone().fixed_at(0)) {
            Ok(_) => Ok(spec),
            Err(ingest_filter::FilterError::Pattern {
                field,
                index,
                pattern,
                why,
            }) => Err((
                format!("spec.filter.{field}[{index}]"),
                format!("{pattern:?}: {why}"),
            )),
            Err(e) => Err(("spec.filter".into(), e.to_string())),
        }
    }
}

/// Rates for a whole job.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// File data written per second, all pods together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub bytes_per_second: Option<u64>,
    /// Entries (files, symlinks, ...) handled per second, all pods together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub files_per_second: Option<u64>,
    /// A weekly schedule: inside the first window that holds the time (in `timeZone`), its limits
    /// apply (one it leaves out is none); outside every window, the two above. Followed while the
    /// job runs, as are changes to any of these fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<LimitWindow>,
    /// The IANA time zone of the windows (`Europe/Berlin`). Default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// A window of the week in which other limits apply.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LimitWindow {
    /// `Mon`..`Sun`, `Weekdays`, `Weekends` or `All`: the days the window starts on.
    pub days: Vec<String>,
    /// `HH:MM`, local time.
    pub start: String,
    /// `HH:MM`; not after `start`: the window runs past midnight into the next day.
    pub end: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub bytes_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub files_per_second: Option<u64>,
}

impl Limits {
    /// The schedule these limits describe, or the first field that is wrong and why.
    pub fn schedule(&self) -> Result<ingest_job::schedule::Schedule, (String, String)> {
        use ingest_job::schedule::{Rates, Schedule, Window, parse_days, parse_time, parse_zone};
        let zone = parse_zone(self.time_zone.as_deref().unwrap_or("UTC"))
            .map_err(|m| ("spec.limits.timeZone".to_owned(), m))?;
        let mut windows = Vec::new();
        for (i, w) in self.windows.iter().enumerate() {
            let field = |f: &str| format!("spec.limits.windows[{i}].{f}");
            if w.days.is_empty() {
                return Err((
                    field("days"),
                    "list at least one day (Mon..Sun, Weekdays, Weekends, All)".into(),
                ));
            }
            let mut days = Vec::new();
            for (j, d) in w.days.iter().enumerate() {
                days.extend(parse_days(d).map_err(|m| (field(&format!("days[{j}]")), m))?);
            }
            windows.push(Window {
                days,
                start: parse_time(&w.start).map_err(|m| (field("start"), m))?,
                end: parse_time(&w.end).map_err(|m| (field("end"), m))?,
                rates: Rates {
                    bytes_per_second: w.bytes_per_second,
                    files_per_second: w.files_per_second,
                },
            });
        }
        Ok(Schedule {
            base: self.base(),
            zone,
            windows,
        })
    }

    /// One of `workers` workers' share of these limits at `at` (a spec the API server accepted
    /// always has a schedule; one that does not is read as its base limits).
    pub fn share_at(
        &self,
        at: k8s_openapi::jiff::Timestamp,
        workers: u64,
    ) -> ingest_job::schedule::Rates {
        let rates = self.schedule().map_or_else(|_| self.base(), |s| s.at(at));
        ingest_job::schedule::share(rates, workers)
    }

    /// Each of `workers` worker processes' flags (`--bytes-per-second`, `--files-per-second`):
    /// its share of the limits outside the windows, rounded up (the claims answers then follow
    /// the schedule).
    pub fn worker_args(&self, workers: u32) -> Vec<String> {
        ingest_job::schedule::share(self.base(), u64::from(workers)).worker_args()
    }

    /// The limits outside every window.
    fn base(&self) -> ingest_job::schedule::Rates {
        ingest_job::schedule::Rates {
            bytes_per_second: self.bytes_per_second,
            files_per_second: self.files_per_second,
        }
    }
}

/// The checking pass.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Verify {
    /// How files are compared.
    #[serde(default)]
    pub mode: VerifyMode,
    /// Fix what differs (re-copy data or set metadata) and check again. False: report only;
    /// the verify pass writes nothing but the directory times a sharded copy leaves to it, and
    /// every difference fails the job. Entries only in the destination are never deleted.
    #[serde(default = "yes")]
    pub repair: bool,
    /// Flush each file to the destination's stable storage (fsync) before it gets its final
    /// mtime, so that a file that looks finished is on the server's disks, not only in a
    /// cache node's memory. Costs a round trip per file.
    #[serde(default)]
    pub fsync: bool,
    /// With `mode: Checksum`: `All` (the default) reads the content of every file on both sides;
    /// `Changed` reads it only for files this pass wrote or changed (a destination ctime from
    /// after the copy began, by the destination's clock, with 5 minutes' margin) and compares the
    /// others by metadata, as the copy did. Every entry is still listed on both sides: what is
    /// missing, different in metadata or only in the destination is found either way. A final
    /// pass after a bulk copy verified with `All` reads only its delta.
    #[serde(default, skip_serializing_if = "VerifyScope::is_all")]
    pub scope: VerifyScope,
}

impl Default for Verify {
    fn default() -> Self {
        Verify {
            mode: VerifyMode::default(),
            repair: true,
            fsync: false,
            scope: VerifyScope::All,
        }
    }
}

/// Which files a checksum verify reads (`spec.verify.scope`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VerifyScope {
    /// Every file.
    #[default]
    All,
    /// The files this pass wrote or changed.
    Changed,
}

impl VerifyScope {
    pub fn is_all(&self) -> bool {
        *self == VerifyScope::All
    }
}

/// How long before the earliest copy worker's start (by the destination's clock) a file's ctime
/// must be for `verify.scope: Changed` to take it as not written by this pass: covers a worker
/// that wrote before it first reported its start, and clocks of cluster nodes that differ.
pub const CHANGED_SCOPE_MARGIN_SECONDS: i64 = 300;

/// [`CHANGED_SCOPE_MARGIN_SECONDS`], or for tests `VFXT_INGEST_CHANGED_SCOPE_MARGIN` (seconds):
/// a test that copies and verifies within a few seconds needs no margin to see what its pass did
/// not write.
pub fn changed_scope_margin() -> i64 {
    std::env::var("VFXT_INGEST_CHANGED_SCOPE_MARGIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CHANGED_SCOPE_MARGIN_SECONDS)
}

/// How the verify pass compares a destination file with its source.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VerifyMode {
    /// No verify pass; the last phase only sets directory metadata (shards share
    /// directories, so their times are final only once every shard's copy is done).
    None,
    /// Size, modification time and mode.
    #[default]
    Metadata,
    /// Full content checksum (reads both sides).
    Checksum,
}

/// File attributes to carry over.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Preserve {
    /// uid/gid (needs CAP_CHOWN in the worker pods).
    #[serde(default = "yes")]
    pub owner: bool,
    /// Permission bits.
    #[serde(default = "yes")]
    pub mode: bool,
    /// Modification and access times.
    #[serde(default = "yes")]
    pub times: bool,
    /// Extended attributes.
    #[serde(default)]
    pub xattrs: bool,
    /// Copy symlinks as symlinks (instead of following them).
    #[serde(default = "yes")]
    pub symlinks: bool,
    /// Recreate hard links within a shard.
    #[serde(default = "yes")]
    pub hardlinks: bool,
    /// POSIX ACLs (`system.posix_acl_access`, `system.posix_acl_default`) and NFSv4 ACLs
    /// (`system.nfs4_acl`, where both sides expose it), whatever `xattrs` says.
    #[serde(default = "yes")]
    pub acls: bool,
}

impl Preserve {
    /// The worker's `--preserve` list: the names of the fields that are true, or `none`.
    pub fn worker_arg(&self) -> String {
        let on: Vec<&str> = [
            ("owner", self.owner),
            ("mode", self.mode),
            ("times", self.times),
            ("xattrs", self.xattrs),
            ("acls", self.acls),
            ("symlinks", self.symlinks),
            ("hardlinks", self.hardlinks),
        ]
        .into_iter()
        .filter_map(|(n, on)| on.then_some(n))
        .collect();
        if on.is_empty() {
            "none".into()
        } else {
            on.join(",")
        }
    }
}

fn yes() -> bool {
    true
}

impl Default for Preserve {
    fn default() -> Self {
        Preserve {
            owner: true,
            mode: true,
            times: true,
            xattrs: false,
            symlinks: true,
            hardlinks: true,
            acls: true,
        }
    }
}

/// What failures do to the job.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    /// `FailJob`: any file that still fails after the verify pass fails the job. `Continue`: the job succeeds
    /// and lists the failures, unless more than `maxFailedFiles` failed.
    #[serde(default)]
    pub action: FailureAction,
    /// With `Continue`: the number of failed files above which the job fails anyway. Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_failed_files: Option<u64>,
    /// Retries of a failed shard pod (Kubernetes `backoffLimitPerIndex`) before the shard counts as failed.
    #[serde(default = "default_retries")]
    #[schemars(range(min = 0, max = 100))]
    pub retries_per_shard: u32,
}

fn default_retries() -> u32 {
    3
}

impl Default for FailurePolicy {
    fn default() -> Self {
        FailurePolicy {
            action: FailureAction::default(),
            max_failed_files: None,
            retries_per_shard: default_retries(),
        }
    }
}

/// See [`FailurePolicy::action`].
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FailureAction {
    /// Fail the job on any failed file or shard.
    FailJob,
    /// Finish and report failures.
    #[default]
    Continue,
}

/// Settings of the pods the operator creates.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkerTemplate {
    /// Image with the `vfxt-ingest` binary. Default: the operator's own image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `Always`, `IfNotPresent` or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Requests and limits of each worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node selector of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Service account of every pod of the job. Default: one the operator creates, with no API access
    /// and no API token mounted: the scan sends its plan and the workers claim through the operator's
    /// endpoint, with a token bound to their pod. One named here needs no rights either (for a cloud
    /// identity bound to it, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Identity of the copy processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<WorkerSecurity>,
    /// Secrets for pulling `image` from a private registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    /// Priority class of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Node affinity and pod (anti-)affinity of the pods: for example, keep worker pods on nodes
    /// near the cache cluster, or one per node (worker pods carry `ingest.vfxt.dev/job` and
    /// `ingest.vfxt.dev/role` labels to select on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// How the pods spread over zones or nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// Extra labels of the pods (cost allocation, policy selectors). Keys under `ingest.vfxt.dev/`
    /// and `app.kubernetes.io/managed-by` are the operator's and are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Extra annotations of the pods. Keys under `ingest.vfxt.dev/` are the operator's and are
    /// refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Image pull policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Always pull.
    Always,
    /// Pull when missing.
    IfNotPresent,
    /// Never pull.
    Never,
}

/// Identity hints for the worker processes. Preserving owners needs uid 0 with CAP_CHOWN, the default; NFS
/// exports with root squash need a uid that can read the source.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSecurity {
    /// uid of the copy processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub run_as_user: Option<i64>,
    /// gid of the copy processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub run_as_group: Option<i64>,
    /// Extra groups (for group-readable sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplemental_groups: Option<Vec<i64>>,
}

/// What happened. Written only by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IngestJobStatus {
    /// Where the current run is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `spec.run` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<i64>,
    /// Ready / Reconciling / Stalled (kstatus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// One line for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What the scan found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<Totals>,
    /// Copy progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Shards by state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<ShardCounts>,
    /// Per destination server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<ServerStatus>,
    /// What `mode: Mirror` deleted after the copy pass, or why it deleted nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorStatus>,
    /// Verify pass counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationCounts>,
    /// Number of files that failed (all of them, not only the ones listed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_files: u64,
    /// The first failures (bounded, see [`MAX_LISTED_FAILURES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<FileFailure>,
    /// When the current run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the current run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Where the pods of this run write their full per-file reports (`spec.report`); read them with
    /// `vfxt-ingest report <dir>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ReportStatus>,
    /// Where the current run's passes stand, for an operator that restarts: completed and lost
    /// shards and their summed results (see the operator's README, "Claims").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<crate::claims::RunCheckpoint>,
    /// The job's finished runs, newest last (at most [`MAX_PASSES`]): a migration's passes (the
    /// bulk copy, the deltas, dry runs, the final pass) side by side. A run's record is written
    /// when it finishes and stays when the next run starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passes: Vec<PassRecord>,
}

/// Finished runs kept in `status.passes`.
pub const MAX_PASSES: usize = 10;

/// Whether a pass may delete (`spec.mode`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Add and update only.
    #[default]
    Copy,
    /// Also delete what is only in the destination (within `maxDeletes`).
    Mirror,
}

impl Mode {
    pub fn is_copy(&self) -> bool {
        *self == Mode::Copy
    }
}

impl IngestJobSpec {
    /// The mirror's limit: `Some` with `mode: Mirror` (`maxDeletes`, default 1%), or why
    /// `maxDeletes` is not one (naming the field).
    pub fn mirror_limit(&self) -> Result<Option<ingest_job::mirror::MaxDeletes>, (String, String)> {
        use ingest_job::mirror::MaxDeletes;
        let field = || "spec.maxDeletes".to_owned();
        let limit = match &self.max_deletes {
            None => MaxDeletes::default(),
            Some(IntOrString::Int(n)) => u64::try_from(*n).map(MaxDeletes::Count).map_err(|_| {
                (field(), format!("{n} is negative: give a count of entries (1000) or a percentage (\"5%\")"))
            })?,
            Some(IntOrString::String(t)) => MaxDeletes::parse(t).map_err(|m| (field(), m))?,
        };
        match self.mode {
            Mode::Mirror => Ok(Some(limit)),
            Mode::Copy if self.max_deletes.is_some() => Err((
                field(),
                "applies only with mode: Mirror (a Copy pass deletes nothing)".into(),
            )),
            Mode::Copy => Ok(None),
        }
    }
}

/// What a mirror pass deleted, or why it deleted nothing.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MirrorStatus {
    /// Entries the copy pass found only in the destination (a directory with everything below
    /// it): what `maxDeletes` weighs.
    pub found: u64,
    /// Entries deleted.
    pub deleted: u64,
    /// Entries found by the copy pass that were gone when the prune pass came to them: deleted
    /// by an earlier attempt at their shard whose worker stopped before it could tell (killed,
    /// or it left a destination that stopped answering), or by someone else.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub gone: u64,
    /// Names kept because the source had them again when they were to be deleted.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub kept: u64,
    /// Deletions that failed (listed in failures and the reports).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub failed: u64,
    /// Why nothing was deleted, when the pass refused to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// What kind of run a pass was.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PassMode {
    /// Copied (and verified, unless `verify.mode: None`).
    #[default]
    Copy,
    /// Compared only (`spec.dryRun`).
    DryRun,
    /// Copied, deleted what was only in the destination, and verified (`mode: Mirror`).
    Mirror,
}

/// One finished run of the job.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PassRecord {
    /// `spec.run` of the pass.
    pub run: i64,
    pub mode: PassMode,
    /// Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The Ready condition's reason: Succeeded, SucceededWithFailures, DryRun, DestinationDiffers...
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Non-directory entries at the destination at the end, copied or found up to date.
    #[serde(default)]
    pub files: u64,
    /// Of `files`, those found already up to date: the rest the pass wrote (a delta pass's
    /// changes since the pass before).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub up_to_date: u64,
    /// Bytes the pass wrote.
    #[serde(default)]
    pub bytes: u64,
    /// Entries that ended failed.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub failed_files: u64,
    /// Entries `spec.filter` left out.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub excluded: u64,
    /// What its verify pass found (for a dry run: what a pass would change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationCounts>,
    /// Entries a Mirror pass deleted.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub deleted: u64,
}

impl IngestJobStatus {
    /// `passes` with this status's finished run recorded (replacing an earlier record of the
    /// same run and mode), the oldest dropped beyond [`MAX_PASSES`]. Unchanged while the run is not
    /// finished.
    pub fn with_pass_recorded(&self, mode: PassMode, reason: &str) -> Vec<PassRecord> {
        let mut passes = self.passes.clone();
        let (Some(run), Some(phase)) = (self.run, self.phase) else {
            return passes;
        };
        if !phase.is_finished() {
            return passes;
        }
        // A dry run and the copy after it may share a run number: both are kept.
        passes.retain(|p| (p.run, p.mode) != (run, mode));
        passes.push(PassRecord {
            run,
            mode,
            phase: Some(phase),
            reason: reason.to_owned(),
            start_time: self.start_time.clone(),
            completion_time: self.completion_time.clone(),
            files: self.progress.as_ref().map_or(0, |p| p.files),
            up_to_date: self.progress.as_ref().map_or(0, |p| p.up_to_date),
            bytes: self.progress.as_ref().map_or(0, |p| p.bytes),
            failed_files: self.failed_files,
            excluded: self.totals.as_ref().map_or(0, |t| t.excluded),
            verification: self.verification.clone(),
            deleted: self.mirror.as_ref().map_or(0, |m| m.deleted),
        });
        let extra = passes.len().saturating_sub(MAX_PASSES);
        passes.drain(..extra);
        passes
    }
}

/// Where the full reports of a run are.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReportStatus {
    /// `pvc <claim>:/<dir>/` or `<server>:<export>/<dir>/`: the directory holding one
    /// `<role>[-x<k>]-<worker index>.jsonl.gz` per copy, prune and verify worker pod.
    pub location: String,
}

/// At most this many failures are listed in status, so the object stays small whatever happens.
pub const MAX_LISTED_FAILURES: usize = 20;
/// Failure reasons are cut to this many bytes in status.
pub const MAX_FAILURE_REASON: usize = 256;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Phase of the current run.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum Phase {
    /// Accepted, children not running yet.
    Pending,
    /// The scan pod walks the source.
    Scanning,
    /// Workers copy.
    Copying,
    /// Workers compare and repair.
    Verifying,
    /// Done; see `failures` for files that could not be copied under a `Continue` policy.
    Succeeded,
    /// Stopped; see conditions and `failures`.
    Failed,
}

impl Phase {
    /// True for Succeeded and Failed: nothing more happens until `spec.run` changes.
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }

    /// The name used in YAML and Events.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Scanning => "Scanning",
            Phase::Copying => "Copying",
            Phase::Verifying => "Verifying",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the scan found.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Regular files, symlinks and other non-directories.
    pub files: u64,
    /// Directories.
    pub directories: u64,
    /// Bytes of regular files.
    pub bytes: u64,
    /// Entries `spec.filter` left out (an excluded directory once, not what is below it): not
    /// in the counts above, not copied, not reported missing.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub excluded: u64,
    /// Regular files by size, smallest first: non-empty rows only, each a factor of 16 wide
    /// (`vfxt-ingest scan` shows rows a factor of 2 wide, worded alike).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub size_histogram: Vec<HistogramRow>,
    /// Regular files by the age of their mtime when the scan started, youngest first: non-empty
    /// rows only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub age_histogram: Vec<HistogramRow>,
    /// The directories with the most entries of their own, most first (at most 5).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub largest_directories: Vec<DirectoryTotals>,
    /// Files with more than one link: each inode is copied once, with all its paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_links: Option<HardLinks>,
    /// Seconds a run over the whole tree would take (scan, copy and verify) at the files and
    /// bytes per second measured by the job's earlier Copy pass that wrote the most bytes (see
    /// `status.passes`): the larger of `files` over the one rate and `bytes` over the other. A
    /// pass that finds much already at the destination takes less. Absent until a Copy pass has
    /// been measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_seconds: Option<u64>,
}

/// One row of a histogram.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HistogramRow {
    /// The row's range: `[1.0 KiB, 16.0 KiB)`, `under 1 day`.
    pub bucket: String,
    /// Regular files in it.
    pub files: u64,
}

/// One directory's own entries (not what is below its subdirectories).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryTotals {
    /// Relative to the source root (`.` for the root), cut to 128 bytes (ending in `…` then).
    pub path: String,
    /// Non-directory entries directly in it.
    pub entries: u64,
    /// Bytes of the regular files directly in it.
    pub bytes: u64,
}

/// Hard-linked files in the tree.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HardLinks {
    /// Inodes with more than one link.
    pub inodes: u64,
    /// Their paths in the tree.
    pub paths: u64,
}

/// Copy progress of the current run.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Files done (copied or found already up to date).
    pub files: u64,
    /// Of `files`, those the copy found already up to date and left alone (the completed shards'):
    /// in a later pass of a migration, what did not change since the one before.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub up_to_date: u64,
    /// Bytes done.
    pub bytes: u64,
    /// Done share of the bytes (of files when the tree has no bytes), 0..=100.
    pub percent: f64,
    /// `percent` for humans (`42.0%`), the printer column.
    pub percent_text: String,
    /// `bytes` for humans (`1.5 TiB`), the printer column.
    pub bytes_text: String,
    /// Current aggregate rate.
    pub bytes_per_second: u64,
    /// Current aggregate rate.
    pub files_per_second: u64,
    /// Expected completion of the copy phase, when a rate is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<Time>,
    /// Entries the verify pass has checked so far (its pods' live counts).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub checked: u64,
    /// When a file was last copied or checked (or the phase last changed): what `Stalled` is
    /// measured from. Pods that are alive but move nothing do not move it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress_time: Option<Time>,
}

/// Shards by state.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ShardCounts {
    /// All shards of the plan.
    pub total: u64,
    /// Not started.
    pub pending: u64,
    /// A pod works on it.
    pub running: u64,
    /// Done.
    pub succeeded: u64,
    /// Failed after its retries.
    pub failed: u64,
}

/// Progress through one destination server (every worker mounts every server; these are the
/// engine's per-mount figures, summed over the workers).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServerStatus {
    /// The address from the spec.
    pub server: String,
    /// Worker pods writing through it.
    pub workers: u32,
    /// Entries handled through it, copy and verify passes of this run.
    pub files: u64,
    /// Bytes written through it.
    pub bytes: u64,
    /// `files` per second since the run started.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub files_per_second: u64,
    /// `bytes` per second since the run started.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub bytes_per_second: u64,
    /// Median time of one engine task (a listing, a batch of entries, a byte range), in
    /// microseconds (the upper bound of its power-of-two bucket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_p50_micros: Option<u64>,
    /// 99th percentile of the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_p99_micros: Option<u64>,
    /// `Healthy`; `Slow` (median task time surely 4x the best server's or more);
    /// `Unresponsive` (tasks waited `stallTimeoutSeconds` with none finishing: no worker writes
    /// through it again in this run, and its work went to the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ServerState>,
    /// Why it is Unresponsive (what the worker saw).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How a destination server answers.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    Healthy,
    Slow,
    Unresponsive,
}

/// Verify pass counts.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VerificationCounts {
    /// Entries compared: `matched + missing + mismatched + extraneous`.
    pub checked: u64,
    /// Equal on the first look.
    pub matched: u64,
    /// Missing at the destination (then re-copied: counted in `repaired` too when that worked).
    pub missing: u64,
    /// Different at the destination (then re-copied).
    pub mismatched: u64,
    /// Only at the destination (never deleted; the destination differs).
    #[serde(default)]
    pub extraneous: u64,
    /// Re-copied successfully.
    pub repaired: u64,
    /// Could not be compared or repaired.
    pub errors: u64,
    /// Known equal at the end: `matched + repaired` (the printer column).
    pub verified: u64,
    /// Source bytes of the files found missing or with data to copy again: what a copy of the
    /// differences writes (a dry run's estimate).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub differing_bytes: u64,
    /// `verify.scope: Changed`: matched files whose content was not read (this pass did not
    /// write them; compared by metadata).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub content_unchanged: u64,
    /// `mode: Mirror`: the entries the ones only in the destination hold (each with everything
    /// below it): what a mirror deletes.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub extraneous_entries: u64,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// Default of `spec.stallTimeoutSeconds`.
pub const DEFAULT_STALL_TIMEOUT_SECONDS: u32 = 60;

impl VerificationCounts {
    /// What a dry run (a report-only verify) found a pass would do, for the verdict; with
    /// `mirror` (the job's `maxDeletes`), what a Mirror pass would delete and whether it may.
    pub fn dry_run(&self, mirror: Option<ingest_job::mirror::MaxDeletes>) -> ingest_job::DryRun {
        ingest_job::DryRun {
            create: self.missing,
            update: self.mismatched,
            bytes: self.differing_bytes,
            only_in_destination: self.extraneous,
            mirror: mirror.map(|limit| {
                let entries = self.extraneous_entries;
                // The destination's entries in scope: those that match or differ, and these.
                let kept = self.checked.saturating_sub(self.extraneous + self.missing);
                ingest_job::verdict::MirrorPreview {
                    entries,
                    limit,
                    allowed: limit.allows(entries, kept + entries),
                }
            }),
        }
    }

    /// Adds another part's counts (`verified` included).
    pub fn add(&mut self, o: &VerificationCounts) {
        self.checked += o.checked;
        self.matched += o.matched;
        self.missing += o.missing;
        self.mismatched += o.mismatched;
        self.extraneous += o.extraneous;
        self.repaired += o.repaired;
        self.errors += o.errors;
        self.verified += o.verified;
        self.differing_bytes += o.differing_bytes;
        self.content_unchanged += o.content_unchanged;
        self.extraneous_entries += o.extraneous_entries;
    }
}

/// One failed file.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FileFailure {
    /// Path relative to the source root (lossless text form), or the shard for shard-level failures.
    pub path: String,
    /// What went wrong.
    pub reason: String,
}
