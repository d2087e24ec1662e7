//! What the engine is asked to do: a source, the destination mounts, the scopes to copy, and how.
//!
//! These are plain values with no I/O, so that the planner (which decides scopes) and the CLI
//! (which parses options) can build them without touching the file system.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use ingest_filter::Filter;
use ingest_path::RelPath;

use crate::concurrency::Concurrency;
use crate::mirror::MaxDeletes;
use crate::throttle::Throttle;

/// One piece of the source tree. A whole copy is `Scope::Tree(RelPath::root())`; the shard
/// planner describes its shards with the other forms so that a plan never lists files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Scope {
    /// The directory `dir` (relative to the source root; empty = the root), everything below
    /// it, and the directory's own metadata once its contents are done.
    Tree(RelPath),
    /// The directory `dir` itself (created if needed) and those of its entries whose names fall
    /// in `[from, to)` (byte order; `None` = unbounded). Subdirectories in the range are copied
    /// as whole trees only when `subtrees` is true; otherwise they are only created.
    Entries {
        dir: RelPath,
        from: Option<RelPath>,
        to: Option<RelPath>,
        subtrees: bool,
    },
    /// Bytes `[offset, offset + len)` of one regular file. Data only: the file's size is set to the
    /// source's, but its metadata (mode, owner, times) is left to [`Scope::Finalize`], so that a
    /// file written by several workers never looks finished before all of them are done.
    FileRange {
        file: RelPath,
        offset: u64,
        len: u64,
    },
    /// Set the metadata of a file whose data was written by `FileRange` scopes (run after all of
    /// them). In a verify pass, compares and repairs the whole file.
    Finalize(RelPath),
    /// Paths that are hard links of one source inode: the first is copied, the others linked to it.
    /// Used when `Options::multilinked` is `MultiLinked::Elsewhere`.
    LinkGroup(Vec<RelPath>),
}

/// How the destination is compared with the source in the verify pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VerifyMode {
    /// No verify pass.
    None,
    /// Both sides listed; type, size, mtime, mode, owner, xattrs (when preserved), symlink
    /// targets and hard links compared.
    #[default]
    Metadata,
    /// Metadata, and both sides' contents read in full and compared by BLAKE3 digest (the
    /// destination bypassing the client's page cache).
    Checksum,
}

/// Which pieces of metadata are carried over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preserve {
    pub owner: bool,
    pub mode: bool,
    pub times: bool,
    pub xattrs: bool,
    /// Recreate fifos and device nodes (needs root for devices).
    pub specials: bool,
    /// Keep hard links as links (otherwise each link is copied as its own file).
    pub hardlinks: bool,
    /// POSIX ACLs (`system.posix_acl_access`, `system.posix_acl_default`) and NFSv4 ACLs
    /// (`system.nfs4_acl`, where both sides expose it), whether or not `xattrs` is on.
    /// (`security.*` attributes, capabilities and labels, go with `xattrs`, as root.)
    pub acls: bool,
}

impl Default for Preserve {
    fn default() -> Self {
        Preserve {
            owner: true,
            mode: true,
            times: true,
            xattrs: true,
            specials: true,
            hardlinks: true,
            acls: true,
        }
    }
}

/// Where files with more than one link are copied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MultiLinked {
    /// Wherever they are met; the engine keeps an inode map so later links become links.
    #[default]
    Here,
    /// These paths are copied by `LinkGroup` scopes (the planner grouped every path of each
    /// multi-linked inode it saw), so `Tree`/`Entries` scopes leave them alone. A multi-linked
    /// file not listed here (a link made after the scan, or one whose other links are outside
    /// the tree) is copied where it is met, like `Here`: never skipped unseen.
    Elsewhere(Arc<BTreeSet<RelPath>>),
}

impl MultiLinked {
    /// Whether `path` is left to a `LinkGroup` scope.
    pub fn grouped(&self, path: &RelPath) -> bool {
        match self {
            MultiLinked::Here => false,
            MultiLinked::Elsewhere(paths) => paths.contains(path),
        }
    }
}

/// Which directories get their metadata set by the settle pass (the last step of a sharded copy,
/// see [`Options::dir_times_in_verify`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SettleDirs {
    /// Every directory of the scopes.
    #[default]
    All,
    /// Only these, which hold every ancestor of each of their members: the directories that
    /// shards other than the one owning them write into (the planner's junctions, see
    /// `ingest_plan::settled_dirs`). Every other directory is written by its own shard alone,
    /// whose copy sets its times once its contents are done, so the settle pass walks and sets
    /// only these, and the copy pass leaves their metadata to it.
    Only(Arc<BTreeSet<RelPath>>),
}

impl SettleDirs {
    /// Whether the settle pass sets `dir`'s metadata (and walks into it).
    pub fn includes(&self, dir: &RelPath) -> bool {
        match self {
            SettleDirs::All => true,
            SettleDirs::Only(dirs) => dirs.contains(dir),
        }
    }
}

/// Which passes to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Passes {
    /// Copy, then verify (unless `VerifyMode::None`).
    #[default]
    CopyThenVerify,
    /// Copy only (the cluster runs verify as its own phase).
    CopyOnly,
    /// Verify (and repair) only; with `VerifyMode::None`, set directory metadata only (the
    /// last phase of a sharded copy).
    VerifyOnly,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Worker threads; each is bound to one destination mount (round robin).
    pub threads: usize,
    pub verify: VerifyMode,
    pub passes: Passes,
    pub preserve: Preserve,
    pub multilinked: MultiLinked,
    /// Regular files larger than this are split into ranges of this size across threads.
    pub split_threshold: u64,
    /// Files per queued batch from one directory (a batch goes through one mount).
    pub batch_files: usize,
    /// Fixed (`threads` in all) or adaptive per mount (`--threads auto`).
    pub concurrency: Concurrency,
    /// The copy pass ran as shards that share directories (name ranges of one directory, or
    /// ancestors created by several shards), so directory times could not be final when each
    /// shard ended. The verify pass then sets them, after every entry exists, and does not count
    /// a directory whose only difference is its times as a mismatch.
    pub dir_times_in_verify: bool,
    /// With `dir_times_in_verify`: which directories the settle pass sets.
    pub settle_dirs: SettleDirs,
    /// Prove at start, with a probe file, that every destination is writable and shows the
    /// same tree. Off for the verify phase of a sharded job: its workers start together, and
    /// one worker's probe (a create and a remove in the destination root) would move the root's
    /// times after another worker's verify pass has set them. The copy phase proved the same
    /// mounts already.
    pub probe_destinations: bool,
    /// Flush each file to stable storage (fsync) before giving it its final mtime, so that a
    /// file that looks finished is on the server's disk, not only in its cache.
    pub fsync: bool,
    /// The verify pass repairs what differs (re-copies data or fixes metadata). Off: report-only,
    /// nothing in the destination is written by the verify pass, and with `Passes::VerifyOnly`
    /// not even the destination probe. (It still sets directory times after a sharded copy when
    /// `dir_times_in_verify`: that is the copy's last step, not a repair.)
    pub repair: bool,
    /// The user's include/exclude patterns and age limits: entries they leave out are counted
    /// as excluded by the copy and not looked at by the verifier (nor walked into, for a
    /// directory).
    pub filter: Filter,
    /// Mirror mode: delete what the copy pass finds only in the destination, within this limit
    /// (see `mirror.rs`). `None`: a copy never deletes.
    pub mirror: Option<MaxDeletes>,
    /// With `mirror`: find and weigh what only the destination has, delete nothing (the copy
    /// pass of a sharded job, whose coordinator weighs all shards together before any deletes:
    /// `ingest_job::mirror`).
    pub mirror_weigh_only: bool,
    /// `verify.scope: Changed` (with a checksum verify): read the content only of files whose
    /// destination ctime is at or after this time (seconds, nanoseconds, the destination
    /// server's clock: the copy's probe time), that is, files this pass wrote or changed; the
    /// others are compared by metadata, as the copy compared them, and counted apart.
    pub content_changed_since: Option<(i64, i64)>,
    /// Compare only, and write nothing at all: with `Passes::VerifyOnly` and `repair` off, also
    /// no settle step (directory times, split files' metadata), which a sharded job's verify
    /// phase otherwise runs as the copy's last step.
    pub dry_run: bool,
    /// Bytes and entries per second the copy may write, shared by every run holding this
    /// `Arc` (a worker's shards); `None`: as fast as it goes.
    pub throttle: Option<Arc<Throttle>>,
    /// Each destination's time per entry (µs) as an earlier pass of the same job measured it,
    /// by position (`None`, or a shorter list: not known): the start of a short pass (setting
    /// directory times after a sharded copy) knows at once which mount is slow, instead of
    /// learning it from its own first tasks when it is nearly over (see `Gate::pace`).
    pub mount_pace: Vec<Option<u64>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            threads: 16,
            verify: VerifyMode::default(),
            passes: Passes::default(),
            preserve: Preserve::default(),
            multilinked: MultiLinked::default(),
            split_threshold: 64 << 20,
            batch_files: 16,
            concurrency: Concurrency::Fixed,
            dir_times_in_verify: false,
            settle_dirs: SettleDirs::All,
            probe_destinations: true,
            fsync: false,
            repair: true,
            filter: Filter::none(),
            mirror: None,
            mirror_weigh_only: false,
            content_changed_since: None,
            dry_run: false,
            throttle: None,
            mount_pace: Vec::new(),
        }
    }
}

/// A whole request to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyJob {
    pub source: PathBuf,
    /// The same export through different cluster IPs (or one local directory).
    pub destinations: Vec<PathBuf>,
    pub scopes: Vec<Scope>,
}
