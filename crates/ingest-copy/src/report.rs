//! What a run found and did: counters, typed verification results, and per-path entries.
//!
//! Per-file failures are values: they go to a [`ReportSink`] as [`ReportEntry`]s and are counted,
//! and the run goes on. Memory stays flat however many there are: the sink decides what to keep.

use std::collections::BTreeMap;
use std::io;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::mirror::MirrorCounts;

use ingest_path::RelPath;

/// Ways in which a destination entry can differ from its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Mismatch {
    Missing,
    Type,
    Size,
    Mtime,
    Mode,
    Owner,
    LinkTarget,
    /// Linked to a different inode than the other links of its source inode.
    HardLink,
    Content,
    Xattrs,
    /// In the destination, not in the source. Never deleted or repaired: the verifier reports it
    /// and the destination counts as different.
    Extraneous,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Results of the verify pass.
///
/// Every entry compared counts once in `checked`, by what the first look found:
/// `checked = matched + missing + mismatched + extraneous`. Each missing or mismatched entry is
/// then either `repaired` (fixed and found equal on a second look) or listed in the report
/// (report-only mode, a repair that failed or did not hold). `errors` counts entries that could
/// not be compared (not in `checked`) and repairs that failed or did not hold (also in `missing`
/// or `mismatched`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyCounts {
    pub checked: u64,
    pub matched: u64,
    pub missing: u64,
    pub mismatched: u64,
    /// In the destination only (never deleted).
    #[serde(default)]
    pub extraneous: u64,
    pub repaired: u64,
    pub errors: u64,
    /// Found different and left so: report-only mode (`repair` off). Each is a failed entry of the
    /// pass (the destination does not hold the source's version), like `errors`.
    #[serde(default)]
    pub unrepaired: u64,
    /// Source bytes of the regular files found missing or with data to copy again (size,
    /// content, type or mtime different): what a copy pass would write.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub differing_bytes: u64,
    /// Mirror mode: the entries the extraneous ones hold (a directory with everything below
    /// it), what a mirror would delete.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub extraneous_entries: u64,
    /// `verify.scope: Changed`: files whose content was not read because this pass did not
    /// write them (compared by metadata only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub content_unchanged: u64,
    /// What was found different, by kind (an entry may count under several kinds).
    pub by_kind: BTreeMap<Mismatch, u64>,
}

impl VerifyCounts {
    pub fn add(&mut self, other: &VerifyCounts) {
        self.checked += other.checked;
        self.matched += other.matched;
        self.missing += other.missing;
        self.mismatched += other.mismatched;
        self.extraneous += other.extraneous;
        self.repaired += other.repaired;
        self.errors += other.errors;
        self.unrepaired += other.unrepaired;
        self.differing_bytes += other.differing_bytes;
        self.extraneous_entries += other.extraneous_entries;
        self.content_unchanged += other.content_unchanged;
        for (k, v) in &other.by_kind {
            *self.by_kind.entry(*k).or_default() += v;
        }
    }

    /// Everything checked is now equal: nothing extraneous, every difference repaired, no errors.
    pub fn is_clean(&self) -> bool {
        self.errors == 0 && self.extraneous == 0 && self.repaired == self.missing + self.mismatched
    }
}

/// Counters of the copy pass.
///
/// Every entry the pass meets in its scopes ends in exactly one outcome, so
/// `entries == outcomes()`: copied (`files_copied`, `symlinks`, `hardlinks`, `specials`,
/// `directories`), up to date (`files_skipped`, `dirs_up_to_date`), or not done and reported
/// (`failed`, `unsupported`, `vanished`, `changed`, `not_attempted`), or left out by the user's
/// filters (`excluded`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyCounts {
    /// Entries met in scope: every directory and non-directory the walk listed.
    #[serde(default)]
    pub entries: u64,
    /// Regular files whose data was written.
    pub files_copied: u64,
    /// Non-directory entries that already matched (type, size, mtime) and were left alone.
    pub files_skipped: u64,
    pub bytes_copied: u64,
    /// Directories created.
    pub directories: u64,
    /// Directories that existed already (their metadata is set all the same).
    #[serde(default)]
    pub dirs_up_to_date: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Fifos, sockets and device nodes recreated.
    pub specials: u64,
    /// Entries not copied by design (device nodes when not root); each is reported.
    pub unsupported: u64,
    /// Entries that failed; each is reported with the operation and the OS error.
    pub failed: u64,
    /// Entries listed in the source that were gone when their turn came; each is reported.
    #[serde(default)]
    pub vanished: u64,
    /// Regular files that changed in the source while they were read, again on the retry;
    /// each is reported, and left without the source's mtime so a later pass copies it again.
    #[serde(default)]
    pub changed: u64,
    /// Entries not started because the destination stopped taking work (full, over quota,
    /// read-only, stale): see [`Summary::stopped`]. Directories count once, not their contents.
    #[serde(default)]
    pub not_attempted: u64,
    /// Entries left out by the job's include/exclude patterns or age limits (a directory counts
    /// once; what is below it is not walked).
    #[serde(default)]
    pub excluded: u64,
}

impl CopyCounts {
    /// Non-directory entries the pass finished: written, linked, or found already up to date.
    /// What "files" means in progress and status, where every non-directory counts.
    pub fn entries_done(&self) -> u64 {
        self.files_copied + self.files_skipped + self.symlinks + self.hardlinks + self.specials
    }

    /// The sum of every outcome; equals `entries` (see the type's docs).
    pub fn outcomes(&self) -> u64 {
        self.entries_done()
            + self.directories
            + self.dirs_up_to_date
            + self.failed
            + self.unsupported
            + self.vanished
            + self.changed
            + self.not_attempted
            + self.excluded
    }

    /// Entries that did not end copied or up to date.
    pub fn not_done(&self) -> u64 {
        self.failed + self.unsupported + self.vanished + self.changed + self.not_attempted
    }

    pub fn add(&mut self, o: &CopyCounts) {
        self.entries += o.entries;
        self.files_copied += o.files_copied;
        self.files_skipped += o.files_skipped;
        self.bytes_copied += o.bytes_copied;
        self.directories += o.directories;
        self.dirs_up_to_date += o.dirs_up_to_date;
        self.symlinks += o.symlinks;
        self.hardlinks += o.hardlinks;
        self.specials += o.specials;
        self.unsupported += o.unsupported;
        self.failed += o.failed;
        self.vanished += o.vanished;
        self.changed += o.changed;
        self.not_attempted += o.not_attempted;
        self.excluded += o.excluded;
    }
}

/// The outcome of one engine run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub copy: CopyCounts,
    pub verify: Option<VerifyCounts>,
    pub elapsed_seconds: f64,
    /// Set when the destination stopped taking work part-way (ENOSPC, EDQUOT, EROFS, ESTALE):
    /// what happened, once, instead of one failure per remaining file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Directories and range-copied files of a sharded copy whose final metadata (or data
    /// check) failed in the last phase; each is reported.
    #[serde(default)]
    pub metadata_failed: u64,
    /// Mirror mode: what was found only in the destination and deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorCounts>,
}

impl Summary {
    /// Adds another run's summary (a worker's shards, a job's workers).
    pub fn add(&mut self, o: &Summary) {
        self.copy.add(&o.copy);
        if let Some(v) = &o.verify {
            self.verify.get_or_insert_with(Default::default).add(v);
        }
        if self.stopped.is_none() {
            self.stopped.clone_from(&o.stopped);
        }
        self.metadata_failed += o.metadata_failed;
        if let Some(m) = &o.mirror {
            self.mirror.get_or_insert_with(Default::default).add(m);
        }
    }

    /// Entries that ended not copied and not repaired (vanished ones left the scope and do not
    /// count): what a status calls failed.
    pub fn failed_entries(&self) -> u64 {
        let c = &self.copy;
        c.failed
            + c.unsupported
            + c.changed
            + c.not_attempted
            + self.metadata_failed
            + self.verify.as_ref().map_or(0, |v| v.errors + v.unrepaired)
            + self.mirror.as_ref().map_or(0, |m| m.failed)
    }

    /// Nothing failed and verification (if run) is clean.
    pub fn is_success(&self) -> bool {
        self.copy.not_done() == self.copy.vanished
            && self.stopped.is_none()
            && self.metadata_failed == 0
            && self.verify.as_ref().is_none_or(|v| v.is_clean())
            && self.mirror.as_ref().is_none_or(|m| m.is_clean())
    }
}

/// What a report line says happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// The operation failed; the entry is not (fully) copied.
    Failed,
    /// Deliberately not copied (e.g. a device node without root).
    Unsupported,
    /// Found different in the verify pass and fixed.
    Repaired,
    /// Found different in the verify pass and not fixed: still different after a repair, not
    /// repaired (report-only mode), or never repaired (extraneous).
    Mismatched,
    /// Listed in the source, gone when its turn came (deleted or renamed meanwhile).
    Vanished,
    /// A regular file that changed in the source while it was read, twice: not copied.
    Changed,
    /// Compared in full and found equal (one per file the checksum verify read, with its
    /// digest: the audit trail).
    Matched,
    /// Only in the destination, deleted by a mirror (a directory with what was below it).
    Deleted,
}

/// One line of the report (`--report FILE` writes them as JSON Lines).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportEntry {
    /// Relative to the copy root, in the lossless escaped form.
    pub path: RelPath,
    pub outcome: Outcome,
    /// The operation that failed or the pass that found the difference (`open-source`, `write`, `verify`…).
    pub op: String,
    /// The OS error or the explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mismatches: Vec<Mismatch>,
    /// The BLAKE3 digest (hex) of the source file's content, when the verify read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// What the verify pass found the entry to be at the source: the audit trail's record (the
    /// verify writes one for every entry it compared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<EntryMeta>,
}

/// An entry's type, size and mtime, as one record of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// `f` file, `d` directory, `l` symlink, `p` fifo, `s` socket, `c`/`b` device.
    pub kind: char,
    pub size: u64,
    /// Seconds and nanoseconds since the epoch, as `1700000000.123456789`.
    pub mtime: String,
}

impl EntryMeta {
    pub(crate) fn of(m: &crate::sys::Meta) -> EntryMeta {
        use crate::sys::Kind;
        EntryMeta {
            kind: match m.kind {
                Kind::File => 'f',
                Kind::Dir => 'd',
                Kind::Symlink => 'l',
                Kind::Fifo => 'p',
                Kind::Socket => 's',
                Kind::CharDev => 'c',
                Kind::BlockDev => 'b',
            },
            size: m.size,
            mtime: format!("{}.{:09}", m.mtime.0, m.mtime.1),
        }
    }
}

impl ReportEntry {
    pub fn failed(path: RelPath, op: &str, err: &io::Error) -> Self {
        ReportEntry {
            path,
            outcome: Outcome::Failed,
            op: op.to_string(),
            error: Some(err.to_string()),
            errno: err.raw_os_error(),
            mismatches: Vec::new(),
            digest: None,
            meta: None,
        }
    }
}

/// Receives report entries as they happen, from many threads.
pub trait ReportSink: Send + Sync {
    fn record(&self, entry: ReportEntry);
}

impl ReportEntry {
    /// What a copy would do with this entry, as a dry run (a report-only comparison) words it.
    pub fn dry_run_reason(&self) -> String {
        match self.outcome {
            Outcome::Failed => format!(
                "could not compare ({}): {}",
                self.op,
                self.error.as_deref().unwrap_or("")
            ),
            Outcome::Deleted => "deleted".into(),
            _ if self.mismatches.contains(&Mismatch::Extraneous) => {
                "only in the destination".into()
            }
            _ if self.mismatches.contains(&Mismatch::Missing) => "would create".into(),
            _ => format!("would update ({:?})", self.mismatches),
        }
    }
}

/// Keeps the first `limit` entries in memory and counts the rest. `Outcome::Matched` and
/// `Outcome::Deleted` entries (the audit trail) are neither kept nor counted: this sink is for
/// what went wrong.
#[derive(Debug, Default)]
pub struct FirstN {
    limit: usize,
    inner: Mutex<(Vec<ReportEntry>, u64)>,
}

impl FirstN {
    pub fn new(limit: usize) -> Self {
        FirstN {
            limit,
            inner: Mutex::new((Vec::new(), 0)),
        }
    }

    /// The kept entries and the total number recorded.
    pub fn take(&self) -> (Vec<ReportEntry>, u64) {
        let mut g = self.inner.lock().unwrap();
        (std::mem::take(&mut g.0), g.1)
    }
}

impl ReportSink for FirstN {
    fn record(&self, entry: ReportEntry) {
        // The audit trail (files proven equal, entries a mirror deleted) is for the report
        // file; the first entries are what went wrong or was repaired.
        if matches!(entry.outcome, Outcome::Matched | Outcome::Deleted) {
            return;
        }
        let mut g = self.inner.lock().unwrap();
        g.1 += 1;
        if g.0.len() < self.limit {
            g.0.push(entry);
        }
    }
}

/// Sends every entry to all the sinks.
pub struct Tee<'a>(pub Vec<&'a dyn ReportSink>);

impl ReportSink for Tee<'_> {
    fn record(&self, entry: ReportEntry) {
        if let Some((last, rest)) = self.0.split_last() {
            for s in rest {
                s.record(entry.clone());
            }
            last.record(entry);
        }
    }
}

/// Writes entries as JSON Lines.
pub struct JsonLines<W: io::Write + Send> {
    out: Mutex<W>,
}

impl<W: io::Write + Send> JsonLines<W> {
    pub fn new(out: W) -> Self {
        JsonLines {
            out: Mutex::new(out),
        }
    }

    pub fn into_inner(self) -> W {
        self.out.into_inner().unwrap()
    }

    /// Runs `f` on the writer, between two entries.
    pub fn with_writer<R>(&self, f: impl FnOnce(&mut W) -> R) -> R {
        f(&mut self.out.lock().unwrap())
    }
}

impl<W: io::Write + Send> ReportSink for JsonLines<W> {
    fn record(&self, entry: ReportEntry) {
        let mut line = serde_json::to_vec(&entry).expect("report entries serialize");
        line.push(b'\n');
        // A report that cannot be written must not stop the copy; the summary still counts it.
        let _ = self.out.lock().unwrap().write_all(&line);
    }
}
