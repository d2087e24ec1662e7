//! The shard plan as stored: versioned serde types, no I/O, no Kubernetes types.
//!
//! A plan never lists files: a shard is a handful of scopes (a directory subtree, a name range of
//! one directory, a byte range of one file, or the paths of one hard-linked inode), so the plan for
//! a tree of any size stays a few hundred bytes per shard. [`Plan::to_chunks`] cuts the JSON into
//! pieces under a size limit (a ConfigMap holds at most 1 MiB) and [`Plan::from_chunks`] joins them.

use serde::{Deserialize, Serialize};

use ingest_filter::FilterSpec;
use ingest_path::RelPath;

/// `apiVersion` of the plan document; bump on any incompatible change.
pub const PLAN_API_VERSION: &str = "ingest.vfxt.dev/v1alpha1";
pub const PLAN_KIND: &str = "ShardPlan";

/// Number of size-histogram buckets: bucket 0 holds empty files, bucket `b` sizes in `[2^(b-1), 2^b)`.
pub const HISTOGRAM_BUCKETS: usize = 65;

/// Directories listed in [`Totals::largest_directories`]: enough to point at the hot spots,
/// few enough for the IngestJob's status.
pub const LARGEST_DIRECTORIES: usize = 5;

/// Predicted time of a piece of work, in seconds of one worker:
/// `entries * seconds_per_entry + bytes / bytes_per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CostModel {
    /// Fixed cost of one entry (create, open, set metadata): dominates for small files.
    pub seconds_per_entry: f64,
    /// Throughput of one worker for file data.
    pub bytes_per_second: f64,
}

impl Default for CostModel {
    /// One NFS round trip chain per entry (~1 ms shared by a worker's threads) and a few hundred
    /// MB/s per worker: the guide's observation that below ~10 MiB files count, above it bytes.
    fn default() -> Self {
        CostModel {
            seconds_per_entry: 0.000_5,
            bytes_per_second: 250e6,
        }
    }
}

impl CostModel {
    pub fn cost(&self, entries: u64, bytes: u64) -> f64 {
        entries as f64 * self.seconds_per_entry + bytes as f64 / self.bytes_per_second
    }
}

/// One piece of a shard. Mirrors the copy engine's scopes (the mapping lives in `ingest-plan`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ShardScope {
    /// A directory and everything below it.
    Tree { dir: RelPath },
    /// Entries of `dir` with names in `[from, to)` (absent = unbounded). With `subtrees`, the
    /// subdirectories in the range are copied whole; without, they are only created (they are
    /// covered by scopes of their own).
    Entries {
        dir: RelPath,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<RelPath>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<RelPath>,
        subtrees: bool,
    },
    /// Bytes `[offset, offset + len)` of one regular file much larger than a shard.
    FileRange {
        file: RelPath,
        offset: u64,
        len: u64,
    },
    /// All the paths (in this tree) of one inode with more than one link.
    LinkGroup { paths: Vec<RelPath> },
}

/// A unit of work, handed to one worker at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Shard {
    /// Position in the plan: the order shards are handed out in, by predicted cost, largest
    /// first, but the name ranges of a crowded directory spread over the first half (see
    /// `planner::dispatch_order`).
    pub id: u32,
    /// Predicted seconds (see [`CostModel`]).
    pub cost: f64,
    /// Estimated regular files and bytes (exact for trees, estimated for name ranges).
    pub files: u64,
    pub bytes: u64,
    /// Index into [`Plan::servers`] the shard is dealt to, and the worker (global index) that runs it.
    pub server: u32,
    pub worker: u32,
    pub scopes: Vec<ShardScope>,
}

/// What the scan found, for status and summaries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub files: u64,
    pub directories: u64,
    pub bytes: u64,
    /// Symlinks, fifos, sockets, device nodes.
    pub others: u64,
    /// Inodes with more than one link, and the paths they have in the tree.
    pub linked_inodes: u64,
    pub linked_paths: u64,
    /// Directories that could not be read (listed in [`Plan::scan_errors`]).
    pub unreadable: u64,
    /// Entries that vanished or failed `stat` during the scan.
    pub errors: u64,
    /// Regular files by size: see [`HISTOGRAM_BUCKETS`].
    pub size_histogram: Vec<u64>,
    /// Entries the job's filters left out (an excluded directory once, not its contents).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub excluded: u64,
    /// Regular files by the age of their mtime at the scan's start (`scan::AGE_BUCKETS`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub age_histogram: Vec<u64>,
    /// The directories with the most entries of their own, most first (at most
    /// [`LARGEST_DIRECTORIES`]). Kept here rather than recomputed from the scan, so that whoever
    /// reads the plan (the scan pod's summary for the status, `run`) has them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub largest_directories: Vec<DirectoryTotals>,
}

/// One directory's own entries (not what is below its subdirectories).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryTotals {
    pub path: RelPath,
    /// Non-directory entries directly in it.
    pub entries: u64,
    /// Bytes of the regular files directly in it.
    pub bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A path the scan could not read (the first few; [`Totals::unreadable`] + [`Totals::errors`] count all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanErrorEntry {
    pub path: RelPath,
    pub error: String,
}

/// Predicted balance of the dealing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prediction {
    /// Predicted seconds of the busiest worker.
    pub makespan: f64,
    /// Mean predicted seconds per worker.
    pub mean: f64,
    /// `makespan / mean` (1.0 = perfect).
    pub imbalance: f64,
    /// Largest shard over mean shard.
    pub shard_imbalance: f64,
}

/// The whole plan document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub api_version: String,
    pub kind: String,
    /// Shards asked for; the planner may make a few more (ranges cut at the target) or fewer (a
    /// tree cannot be cut finer than one file).
    pub requested_shards: u32,
    pub cost_model: CostModel,
    /// Destination servers (NFS server addresses, or mount names in local mode), in dealing order.
    pub servers: Vec<String>,
    /// Workers in all; worker `w` writes through server `w % servers.len()`.
    pub workers: u32,
    pub totals: Totals,
    pub prediction: Prediction,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scan_errors: Vec<ScanErrorEntry>,
    /// The include/exclude patterns and age limits (with their reference time) the scan
    /// applied: every worker of the pass applies the same.
    #[serde(default, skip_serializing_if = "FilterSpec::is_empty")]
    pub filter: FilterSpec,
    pub shards: Vec<Shard>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanFormatError {
    #[error("plan is not valid JSON for apiVersion {PLAN_API_VERSION}: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "plan has apiVersion {found:?} kind {kind:?}; this program reads apiVersion {PLAN_API_VERSION:?} kind {PLAN_KIND:?}"
    )]
    Version { found: String, kind: String },
    #[error("plan chunk limit {0} bytes is too small: it must hold at least one 4-byte character")]
    ChunkLimit(usize),
}

impl Plan {
    /// Parses and checks the version.
    pub fn from_json(text: &str) -> Result<Plan, PlanFormatError> {
        // Read the header first, so that a plan from another version says so instead of failing
        // on whichever field changed.
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Header {
            #[serde(default)]
            api_version: String,
            #[serde(default)]
            kind: String,
        }
        let h: Header = serde_json::from_str(text)?;
        if h.api_version != PLAN_API_VERSION || h.kind != PLAN_KIND {
            return Err(PlanFormatError::Version {
                found: h.api_version,
                kind: h.kind,
            });
        }
        Ok(serde_json::from_str(text)?)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plans serialize")
    }

    /// The compact JSON cut into pieces of at most `max_bytes` bytes each, at character boundaries.
    pub fn to_chunks(&self, max_bytes: usize) -> Result<Vec<String>, PlanFormatError> {
        if max_bytes < 4 {
            return Err(PlanFormatError::ChunkLimit(max_bytes));
        }
        let json = self.to_json();
        let mut chunks = Vec::new();
        let mut rest = json.as_str();
        while !rest.is_empty() {
            let mut end = rest.len().min(max_bytes);
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            chunks.push(rest[..end].to_string());
            rest = &rest[end..];
        }
        Ok(chunks)
    }

    pub fn from_chunks<S: AsRef<str>>(chunks: &[S]) -> Result<Plan, PlanFormatError> {
        let json: String = chunks.iter().map(|c| c.as_ref()).collect();
        Plan::from_json(&json)
    }

    /// The shards dealt to destination server `server`, in plan order (in the cluster, index `k`
    /// of that server's Indexed Job runs the `k`-th of these).
    pub fn shards_of_server(&self, server: u32) -> impl Iterator<Item = &Shard> {
        self.shards.iter().filter(move |s| s.server == server)
    }

    /// The shards dealt to `worker` (of [`Plan::workers`]), in plan order.
    pub fn shards_of_worker(&self, worker: u32) -> impl Iterator<Item = &Shard> {
        self.shards.iter().filter(move |s| s.worker == worker)
    }
}
