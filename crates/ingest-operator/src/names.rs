//! Names and labels of child objects: deterministic (an operator restart finds and reuses the same children, so
//! nothing is duplicated) and short enough for every Kubernetes limit.

use std::collections::BTreeMap;

use ingest_api::IngestJob;
use ingest_api::constants::labels;
use kube::ResourceExt;

/// Job names must leave room for `-<index>` in the pods' host names (63 characters) for up to 10^6 indexes.
pub const MAX_JOB_NAME: usize = 52;

/// `<ingestjob>-<suffix>`, shortened with a stable hash of the full name when it would exceed `MAX_JOB_NAME`.
pub fn child_name(ij: &str, suffix: &str) -> String {
    let full = format!("{ij}-{suffix}");
    if full.len() <= MAX_JOB_NAME {
        return full;
    }
    let hash = format!("{:08x}", fnv1a(full.as_bytes()) as u32);
    // Names are DNS labels (ASCII), so byte slicing is on a character boundary.
    let keep = MAX_JOB_NAME - suffix.len() - hash.len() - 2;
    let head = ij[..keep.min(ij.len())].trim_end_matches(['-', '.']);
    format!("{head}-{hash}-{suffix}")
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// Name of the scan Job of `run`.
pub fn scan_job(ij: &IngestJob, run: i64) -> String {
    child_name(&ij.name_any(), &format!("r{run}-scan"))
}

/// Name of the copy (or verify) Job of `run`: its pods are the pass's workers.
///
/// `generation` counts the destination servers found unresponsive in the pass: each one found
/// makes a new Job (`-x<generation>`) whose pods do not mount it (a pod that mounts a hung NFS
/// server never starts). Its pods' names still start with the pass's Job name (see
/// [`pass_job`]); the suffix keeps their host names (`<job>-<index>`) within 63 characters for
/// up to 99 generations.
pub fn worker_job(ij: &IngestJob, run: i64, role: &str, generation: usize) -> String {
    let base = pass_job(&ij.name_any(), run, role);
    match generation_mark(generation) {
        None => base,
        Some(m) => format!("{base}-{m}"),
    }
}

/// What tells a pass's Jobs apart (`generation`: the servers found unresponsive in the pass when
/// the Job was made): `x<n>`, nothing for the first Job.
pub fn generation_mark(generation: usize) -> Option<String> {
    (generation > 0).then(|| format!("x{}", generation.min(99)))
}

/// Name of the Job whose pods are the workers of a claims pass (`role` of `run`), from the
/// IngestJob's name (the claims endpoint has only the message).
pub fn pass_job(ij: &str, run: i64, role: &str) -> String {
    child_name(ij, &format!("r{run}-{role}"))
}

/// Name prefix of the plan ConfigMaps of `run` (chunk `k` is `<prefix>-<k>`).
pub fn plan_prefix(ij: &IngestJob, run: i64) -> String {
    plan_prefix_of(&ij.name_any(), run)
}

/// [`plan_prefix`] of the IngestJob named `ij`.
pub fn plan_prefix_of(ij: &str, run: i64) -> String {
    child_name(ij, &format!("r{run}-plan"))
}

/// Service account of the scan, copy, verify and prune pods: no Role, no API token.
pub fn worker_identity(ij: &IngestJob) -> String {
    child_name(&ij.name_any(), "workers")
}

/// PersistentVolumeClaim of destination server `i` (only with mount options).
pub fn dest_claim(ij: &IngestJob, i: usize) -> String {
    child_name(&ij.name_any(), &format!("dst-{i}"))
}

/// Cluster-wide PersistentVolume of destination server `i`: `<namespace>.<name>-dst-<i>`. A
/// namespace name holds no '.', so the first '.' ends it and no two IngestJobs share a volume name
/// (`a-b/c` and `a/b-c` did, when a '-' joined them); a name too long keeps a hash of the whole.
pub fn dest_volume(ij: &IngestJob, i: usize) -> String {
    volume_name(&ij.namespace().unwrap_or_default(), &ij.name_any(), i)
}

fn volume_name(ns: &str, ij: &str, i: usize) -> String {
    child_name(&format!("{ns}.{ij}"), &format!("dst-{i}"))
}

/// Labels every child of `ij` carries; `role` and `run` narrow them.
pub fn child_labels(ij: &IngestJob, role: &str, run: Option<i64>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        (labels::JOB.to_owned(), label_value(&ij.name_any())),
        (labels::ROLE.to_owned(), role.to_owned()),
        (
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_VALUE.to_owned(),
        ),
    ]);
    if let Some(run) = run {
        l.insert(labels::RUN.to_owned(), run.to_string());
    }
    l
}

/// Label values are limited to 63 characters; IngestJob names may have up to 253.
pub fn label_value(name: &str) -> String {
    if name.len() <= 63 {
        name.to_owned()
    } else {
        format!(
            "{}-{:08x}",
            &name[..54].trim_end_matches(['-', '.']),
            fnv1a(name.as_bytes()) as u32
        )
    }
}

/// Label selector of all children of the IngestJob named `name`.
pub fn selector(name: &str) -> String {
    format!("{}={}", labels::JOB, label_value(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_plain_and_long_ones_bounded_and_distinct() {
        assert_eq!(child_name("genomics", "r0-copy-2"), "genomics-r0-copy-2");
        let long = "a".repeat(80);
        let a = child_name(&long, "r0-copy-1");
        let b = child_name(&format!("{long}b"), "r0-copy-1");
        assert!(
            a.len() <= MAX_JOB_NAME && b.len() <= MAX_JOB_NAME,
            "{a} {b}"
        );
        assert_ne!(a, b, "truncated names keep a hash of the full name");
        assert!(a.ends_with("-r0-copy-1"));
    }

    #[test]
    fn volume_names_are_distinct_across_namespaces_and_valid() {
        assert_eq!(volume_name("team-a", "move", 0), "team-a.move-dst-0");
        assert_ne!(volume_name("a-b", "c", 0), volume_name("a", "b-c", 0));
        let long = volume_name("ns", &format!("x.{}", "y".repeat(46)), 2);
        assert!(long.len() <= MAX_JOB_NAME, "{long}");
        // Truncated at a '.': a DNS label never ends in '.' or '-'.
        for cut in 40..52 {
            let name = format!("{}.{}", "a".repeat(cut - 3), "b".repeat(60));
            let v = volume_name("n", &name, 0);
            assert!(ingest_api::validate::is_dns_subdomain(&v), "{v}");
        }
    }

    #[test]
    fn label_values_are_bounded() {
        assert_eq!(label_value("x"), "x");
        assert!(label_value(&"y".repeat(200)).len() <= 63);
    }
}
