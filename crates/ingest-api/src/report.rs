//! What scan and worker pods tell the operator. The pods write, the operator reads; these types are the whole
//! contract (see `crates/ingest-operator/README.md`).
//!
//! - While running, a pod patches [`PodProgress`] as JSON into its own annotation
//!   [`crate::constants::annotations::PROGRESS`] (at least every 10 s, at most every 2 s).
//! - At exit, it writes [`PodResult`] as JSON to its termination message file (`/dev/termination-log`),
//!   bounded by [`PodResult::to_termination_message`] to the kubelet's 4096-byte limit.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::job::{FileFailure, Totals, VerificationCounts};

/// Kubernetes keeps at most this many bytes of a termination message.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// Running counts of one pod, for its current shard (`JOB_COMPLETION_INDEX`) or for the scan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodProgress {
    /// Files done so far (copied, or already up to date and skipped).
    pub files: u64,
    /// Bytes done so far.
    pub bytes: u64,
    /// Files that failed so far.
    #[serde(default)]
    pub failed: u64,
    /// Scan only: directories walked so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub directories: u64,
    /// Verify pass: entries checked so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub checked: u64,
    /// Unix seconds of this sample; the operator derives rates from successive samples.
    pub at: i64,
}

/// Final result of one pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodResult {
    /// Files done (copied or already up to date).
    pub files: u64,
    /// Of `files`, those found already up to date and left alone (the copy pass).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub up_to_date: u64,
    /// Bytes done.
    pub bytes: u64,
    /// Files that failed.
    #[serde(default)]
    pub failed: u64,
    /// Verify pods: comparison counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationCounts>,
    /// Scan pod: what the tree holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<Totals>,
    /// Scan pod: number of shards in the stored plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<u64>,
    /// The first failures, as many as fit the termination message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<FileFailure>,
    /// Failures left out to fit the limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures_omitted: u64,
    /// `spec.mode: Mirror`: what the copy pass found only in the destination, or what the prune
    /// pass deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorResult>,
}

/// A mirror's findings and deletions in a worker's shards (`spec.mode: Mirror`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MirrorResult {
    /// Copy pass: entries only in the destination (a directory with everything below it), per
    /// shard id, for shards that found some. Kept per shard so that the prune pass lets each
    /// shard delete no more than it found.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "counts_by_shard_schema")]
    pub found: BTreeMap<u32, u64>,
    /// Copy pass: destination directories that could not be listed, and entries that could not
    /// be weighed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unweighed: u64,
    /// Prune pass: entries deleted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deleted: u64,
    /// Prune pass: entries the copy pass found that were gone when the prune weighed them again
    /// (deleted by an earlier attempt whose worker stopped before it could tell, or by someone
    /// else).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gone: u64,
    /// Prune pass: names kept because the source had them again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub kept: u64,
    /// Prune pass: deletions that failed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed: u64,
    /// Prune pass: why a shard deleted nothing (the first shard's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// Whether a mirror's copy pass may be followed by deletions, and each shard's budget (see
/// `ingest_job::mirror`), from the copy pass's summed result (`copy`), the entries the scan could
/// not read and the shards that ended without a result. Shared by the operator and `run`.
pub fn mirror_decision(
    limit: ingest_job::mirror::MaxDeletes,
    policy: ingest_job::Policy,
    scan_failed: u64,
    copy: &PodResult,
    lost_shards: u64,
) -> ingest_job::mirror::Decision {
    let weighed = copy.mirror.clone().unwrap_or_default().weighed();
    ingest_job::mirror::decide(
        limit,
        policy,
        ingest_job::mirror::CopyOutcome {
            failed: scan_failed + copy.failed,
            lost_shards,
            // Entries at the destination, copied or up to date, plus those to delete.
            in_scope: copy.files + weighed.entries(),
        },
        &weighed,
    )
}

/// What a mirror did, for `status.mirror`: what its copy pass found (`found`), what
/// `ingest_job::mirror::decide` made of it, and what the prune pass deleted (`pruned`, with the
/// failures it listed). Shared by the operator and `vfxt-ingest run`.
pub fn mirror_status(
    found: &MirrorResult,
    decision: &ingest_job::mirror::Decision,
    pruned: Option<&MirrorResult>,
) -> crate::job::MirrorStatus {
    use ingest_job::mirror::Decision;
    let p = pruned.cloned().unwrap_or_default();
    crate::job::MirrorStatus {
        found: found.weighed().entries(),
        deleted: p.deleted,
        gone: p.gone,
        kept: p.kept,
        failed: p.failed,
        refused: match decision {
            Decision::Refused(why) => Some(why.clone()),
            // A shard that refused (its destination grew, or its walk failed) deleted nothing.
            _ => p
                .refused
                .map(|why| format!("a shard deleted nothing: {why}")),
        },
    }
}

impl crate::job::MirrorStatus {
    /// What the verdict needs.
    pub fn facts(&self) -> ingest_job::verdict::Mirrored {
        ingest_job::verdict::Mirrored {
            deleted: self.deleted,
            gone: self.gone,
            refused: self.refused.clone(),
        }
    }
}

/// A map from shard id to a count. schemars writes integer keys as `patternProperties`, which the
/// API server refuses in a CRD: an object of integers says the same in the structural form.
fn counts_by_shard_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "additionalProperties": {"type": "integer", "minimum": 0}
    })
}

impl MirrorResult {
    pub fn add(&mut self, o: &MirrorResult) {
        for (shard, n) in &o.found {
            *self.found.entry(*shard).or_default() += n;
        }
        self.unweighed += o.unweighed;
        self.deleted += o.deleted;
        self.gone += o.gone;
        self.kept += o.kept;
        self.failed += o.failed;
        if self.refused.is_none() {
            self.refused.clone_from(&o.refused);
        }
    }

    /// What the copy pass weighed, for `ingest_job::mirror::decide`.
    pub fn weighed(&self) -> ingest_job::mirror::Weighed {
        ingest_job::mirror::Weighed {
            per_shard: self
                .found
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(s, n)| (*s, *n))
                .collect(),
            unweighed: self.unweighed,
        }
    }
}

pub(crate) fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl PodResult {
    /// JSON no longer than [`TERMINATION_MESSAGE_LIMIT`]: failures are dropped from the end (and counted in
    /// `failuresOmitted`) and long reasons cut, so the counts always arrive even when the failure list does not.
    pub fn to_termination_message(&self) -> String {
        let mut r = self.clone();
        for f in &mut r.failures {
            truncate_utf8(&mut f.reason, crate::job::MAX_FAILURE_REASON);
            truncate_utf8(&mut f.path, 1024);
        }
        loop {
            let text = serde_json::to_string(&r).expect("PodResult serializes");
            if text.len() <= TERMINATION_MESSAGE_LIMIT || r.failures.is_empty() {
                return text;
            }
            // Halving keeps this O(log n) even for a result carrying thousands of failures.
            let keep = r.failures.len() / 2;
            r.failures_omitted += (r.failures.len() - keep) as u64;
            r.failures.truncate(keep);
        }
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn termination_message_fits_limit_and_keeps_counts() {
        let r = PodResult {
            files: 10,
            bytes: 20,
            failed: 5000,
            failures: (0..5000)
                .map(|i| FileFailure {
                    path: format!("dir/file-{i:05}"),
                    reason: "EIO: ".repeat(100),
                })
                .collect(),
            ..Default::default()
        };
        let msg = r.to_termination_message();
        assert!(
            msg.len() <= TERMINATION_MESSAGE_LIMIT,
            "{} bytes",
            msg.len()
        );
        let back: PodResult = serde_json::from_str(&msg).unwrap();
        assert_eq!(back.failed, 5000);
        assert!(!back.failures.is_empty());
        assert_eq!(back.failures.len() as u64 + back.failures_omitted, 5000);
        assert!(back.failures[0].reason.len() <= crate::job::MAX_FAILURE_REASON);
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        let mut s = "ééé".to_owned(); // 6 bytes
        truncate_utf8(&mut s, 3);
        assert_eq!(s, "é");
    }
}
