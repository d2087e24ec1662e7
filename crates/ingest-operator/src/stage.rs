//! Where a run stands (pure): which Jobs exist and how they ended decide the stage; the layout says which shards
//! and how many workers each destination server gets.

use ingest_api::constants::labels;
use ingest_api::{FailureAction, IngestJob, IngestJobSpec, VerifyMode};
use k8s_openapi::api::batch::v1::Job;

use crate::names;
use crate::observe::Observed;
use crate::plan_store::PlanSummary;

/// One destination server's share of the work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Position in `spec.destination.nfs.servers`.
    pub index: usize,
    /// The address.
    pub server: String,
    /// Shards this server copies: `index, index + stride, index + 2·stride, …`.
    pub shards: u64,
    /// Pods running at once for this server.
    pub workers: u32,
}

/// How shards and workers are spread over the servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Servers that get work (those with at least one worker and one shard).
    pub slots: Vec<Slot>,
    /// Distance between the shards of one server (= number of servers in use).
    pub stride: u64,
}

/// Workers default to one per server; with fewer workers than servers only the first `workers` servers are used
/// (each active server needs a pod). Shards are dealt round-robin, so every server gets a similar mix.
pub fn layout(spec: &IngestJobSpec, shards: u64) -> Layout {
    let servers = &spec.destination.nfs.servers;
    let n = servers.len().max(1) as u32;
    let w = spec.workers.unwrap_or(n).max(1);
    let active = w.min(n) as u64;
    let slots = (0..active)
        .filter_map(|i| {
            let count = if shards > i {
                (shards - i).div_ceil(active)
            } else {
                0
            };
            let workers = w / active as u32 + u32::from((i as u32) < w % active as u32);
            (count > 0).then(|| Slot {
                index: i as usize,
                server: servers.get(i as usize).cloned().unwrap_or_default(),
                shards: count,
                workers: workers.min(u32::try_from(count).unwrap_or(u32::MAX)),
            })
        })
        .collect();
    Layout {
        slots,
        stride: active,
    }
}

/// How a Job stands, from its status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobState {
    /// Finished (Complete or Failed condition).
    pub finished: bool,
    /// Failed condition true.
    pub failed: bool,
    /// Indexes (or completions) that succeeded.
    pub succeeded: u64,
    /// Indexes that failed after their retries.
    pub failed_indexes: u64,
    /// Pods running.
    pub active: u64,
}

/// Reads a Job's status.
pub fn job_state(job: &Job) -> JobState {
    let Some(st) = &job.status else {
        return JobState::default();
    };
    let cond = |t: &str| {
        st.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == t && c.status == "True")
    };
    let failed = cond("Failed");
    JobState {
        finished: cond("Complete") || failed,
        failed,
        succeeded: st
            .completed_indexes
            .as_deref()
            .map(count_indexes)
            .unwrap_or(st.succeeded.unwrap_or(0) as u64),
        failed_indexes: st.failed_indexes.as_deref().map(count_indexes).unwrap_or(0),
        active: st.active.unwrap_or(0) as u64,
    }
}

/// Counts the indexes in Kubernetes' compressed form `"1,3-5,7"`.
pub fn count_indexes(s: &str) -> u64 {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('-') {
            Some((a, b)) => match (a.parse::<u64>(), b.parse::<u64>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 0,
            },
            None => u64::from(p.parse::<u64>().is_ok()),
        })
        .sum()
}

/// The stage of the current run.
#[derive(Clone, Debug, PartialEq)]
pub enum Stage {
    /// The scan Job is missing or running.
    Scan,
    /// The scan failed after its retries, or finished without a plan.
    ScanFailed(String),
    /// Copy Jobs are missing or running.
    Copy(PlanSummary, Layout),
    /// Verify Jobs are missing or running.
    Verify(PlanSummary, Layout),
    /// All Jobs of the run finished. `failed_shards` counts indexes that failed after their retries.
    Done {
        plan: PlanSummary,
        layout: Layout,
        failed_shards: u64,
    },
}

impl Stage {
    /// Roles whose Jobs must exist in this stage.
    pub fn roles(&self) -> &'static [&'static str] {
        match self {
            Stage::Scan | Stage::ScanFailed(_) => &[labels::ROLE_SCAN],
            Stage::Copy(..) => &[labels::ROLE_SCAN, labels::ROLE_COPY],
            Stage::Verify(..) | Stage::Done { .. } => {
                &[labels::ROLE_SCAN, labels::ROLE_COPY, labels::ROLE_VERIFY]
            }
        }
    }
}

/// Per-role Job states of a layout; a missing Job counts as not finished.
pub fn role_states(
    ij: &IngestJob,
    obs: &Observed,
    layout: &Layout,
    role: &str,
) -> Vec<(usize, Option<JobState>)> {
    layout
        .slots
        .iter()
        .map(|s| {
            (
                s.index,
                obs.job(&names::worker_job(ij, ij.spec.run, role, s.index))
                    .map(job_state),
            )
        })
        .collect()
}

/// Annotation on the scan Job recording `spec.workers` when the run started. Jobs cannot change their
/// completions, so the layout of a run is frozen: a changed worker count applies from the next run.
pub const WORKERS_ANNOTATION: &str = "ingest.vfxt.dev/workers";

/// The spec with the worker count the run started with.
pub fn frozen_spec(ij: &IngestJob, obs: &Observed) -> IngestJobSpec {
    let mut spec = ij.spec.clone();
    let frozen = obs.job(&names::scan_job(ij, ij.spec.run)).and_then(|j| {
        j.metadata
            .annotations
            .as_ref()?
            .get(WORKERS_ANNOTATION)?
            .parse()
            .ok()
    });
    if let Some(w) = frozen {
        spec.workers = Some(w);
    }
    spec
}

/// Decides the stage of `ij.spec.run` from what exists.
pub fn stage(ij: &IngestJob, obs: &Observed) -> Stage {
    let run = ij.spec.run;
    let Some(scan) = obs.job(&names::scan_job(ij, run)).map(job_state) else {
        return Stage::Scan;
    };
    if scan.failed {
        return Stage::ScanFailed("the scan Job failed after its retries; see its pod logs".into());
    }
    if !scan.finished {
        return Stage::Scan;
    }
    let Some(plan) = obs.plan(ij, run) else {
        return Stage::ScanFailed("the scan finished without storing a plan".into());
    };
    let layout = layout(&frozen_spec(ij, obs), plan.shards);
    let fail_fast = ij.spec.failure_policy.action == FailureAction::FailJob;
    let mut failed_shards = 0;
    let mut roles = vec![labels::ROLE_COPY];
    if ij.spec.verify.mode != VerifyMode::None {
        roles.push(labels::ROLE_VERIFY);
    }
    for role in roles {
        let states = role_states(ij, obs, &layout, role);
        if !states
            .iter()
            .all(|(_, s)| s.as_ref().is_some_and(|s| s.finished))
        {
            return if role == labels::ROLE_COPY {
                Stage::Copy(plan, layout)
            } else {
                Stage::Verify(plan, layout)
            };
        }
        // Verify re-copies what the copy pass missed, so the verify pass's failures are the final word.
        failed_shards = states
            .iter()
            .map(|(_, s)| s.as_ref().map_or(0, |s| s.failed_indexes))
            .sum();
        if fail_fast && failed_shards > 0 {
            break;
        }
    }
    Stage::Done {
        plan,
        layout,
        failed_shards,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(servers: usize, workers: Option<u32>) -> IngestJobSpec {
        let mut s: IngestJobSpec = serde_json::from_value(serde_json::json!({
            "source": {"pvc": {"claimName": "x"}},
            "destination": {"nfs": {"servers": (0..servers).map(|i| format!("10.0.0.{}", i + 1)).collect::<Vec<_>>(), "path": "/nfs"}},
        }))
        .unwrap();
        s.workers = workers;
        s
    }

    #[test]
    fn shards_and_workers_spread_round_robin() {
        let l = layout(&spec(3, Some(7)), 10);
        assert_eq!(l.stride, 3);
        let got: Vec<_> = l
            .slots
            .iter()
            .map(|s| (s.server.as_str(), s.shards, s.workers))
            .collect();
        assert_eq!(
            got,
            [("10.0.0.1", 4, 3), ("10.0.0.2", 3, 2), ("10.0.0.3", 3, 2)]
        );
        assert_eq!(l.slots.iter().map(|s| s.shards).sum::<u64>(), 10);
    }

    #[test]
    fn fewer_workers_than_servers_uses_first_servers_and_few_shards_skip_empty_servers() {
        let l = layout(&spec(4, Some(2)), 100);
        assert_eq!((l.stride, l.slots.len()), (2, 2));
        let l = layout(&spec(3, None), 2);
        assert_eq!(l.slots.len(), 2, "a server without shards gets no Job");
        assert!(l.slots.iter().all(|s| s.workers == 1));
    }

    #[test]
    fn workers_never_exceed_shards_of_their_server() {
        let l = layout(&spec(1, Some(50)), 3);
        assert_eq!(l.slots[0].workers, 3);
    }

    #[test]
    fn index_ranges_count() {
        assert_eq!(count_indexes(""), 0);
        assert_eq!(count_indexes("0"), 1);
        assert_eq!(count_indexes("1,3-5,7"), 5);
    }
}
