//! Builders shared by the pure pipeline tests and the mock-API tests: fixtures, the cluster objects the
//! operator observes (Jobs with status, worker pods), and passes driven through the real claims
//! [`Registry`] (worker messages and ended pods, as the endpoint and the reconcile feed it).
#![allow(dead_code)] // each test binary uses a different subset

pub mod selectors;

use std::collections::BTreeMap;
use std::path::PathBuf;

use ingest_api::claims::{ClaimRequest, ShardDone};
use ingest_api::constants::{annotations, labels};
use ingest_api::report::{PodProgress, PodResult};
use ingest_api::{FileFailure, IngestJob, Totals};
use ingest_operator::claims::{Opening, Registry, Views};
use ingest_operator::desired::{Child, Settings, desired};
use ingest_operator::names;
use ingest_operator::observe::Observed;
use ingest_operator::plan_store::{self, Owner, PlanSummary};
use ingest_operator::stage::{self, Stage};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::PartialObjectMeta;

pub fn fixture(name: &str) -> IngestJob {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_yaml::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

pub fn settings() -> Settings {
    Settings {
        default_image: "ghcr.example/vfxt-ingest:test".into(),
        worker_defaults: Default::default(),
        claims_url: "http://vfxt-ingest.vfxt-ingest-system.svc:8082".into(),
        // The fixtures name their images in registry.example (by default only the operator's own
        // image is allowed).
        policy: ingest_api::policy::AdmissionPolicy::from_json(
            r#"{"default": {"images": ["registry.example/*"]}}"#,
        )
        .unwrap(),
    }
}

pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap()
}

pub fn jobs_of(children: &[Child]) -> Vec<&Job> {
    children
        .iter()
        .filter_map(|c| {
            if let Child::Job(j) = c {
                Some(j.as_ref())
            } else {
                None
            }
        })
        .collect()
}

/// Takes the Job as `desired` builds it (so names and labels are the operator's) and gives it a status.
pub fn observed_job(
    built: &Job,
    complete: bool,
    failed: bool,
    completed: &str,
    failed_idx: &str,
    active: i32,
) -> Job {
    let mut j = built.clone();
    let mut conditions = Vec::new();
    for (t, on) in [("Complete", complete), ("Failed", failed)] {
        if on {
            conditions.push(JobCondition {
                type_: t.into(),
                status: "True".into(),
                ..Default::default()
            });
        }
    }
    j.status = Some(JobStatus {
        conditions: Some(conditions),
        completed_indexes: Some(completed.to_owned()).filter(|s| !s.is_empty()),
        failed_indexes: Some(failed_idx.to_owned()).filter(|s| !s.is_empty()),
        succeeded: Some(i32::from(complete)),
        active: Some(active),
        ..Default::default()
    });
    j
}

/// Metadata of the committed chunk 0 of the current run's plan.
pub fn plan_meta(ij: &IngestJob, shards: u64, totals: Totals) -> PartialObjectMeta<ConfigMap> {
    plan_meta_with(ij, shards, totals, Vec::new())
}

/// [`plan_meta`] of a scan that could not read the entries `failures`.
pub fn plan_meta_with(
    ij: &IngestJob,
    shards: u64,
    totals: Totals,
    failures: Vec<ingest_api::FileFailure>,
) -> PartialObjectMeta<ConfigMap> {
    let owner = Owner {
        namespace: ij.namespace().unwrap(),
        name: ij.name_any(),
        uid: ij.uid().unwrap(),
        run: ij.spec.run,
    };
    // Dealt like the planner: round robin over the servers that have workers.
    let n = ij.spec.destination.nfs.servers.len() as u64;
    let active = u64::from(ij.spec.workers.unwrap_or(n as u32)).min(n).max(1);
    let shards_per_server = (0..n)
        .map(|i| {
            if i < active && shards > i {
                (shards - i).div_ceil(active)
            } else {
                0
            }
        })
        .collect();
    let summary = PlanSummary {
        chunks: 2,
        shards,
        shards_per_server,
        totals,
        failed: failures.len() as u64,
        failures,
    };
    let chunks = ["{\"plan\":".to_owned(), "1}".to_owned()];
    let cms = plan_store::chunk_objects(
        &owner,
        &names::plan_prefix(ij, ij.spec.run),
        &chunks,
        &summary,
    )
    .unwrap();
    PartialObjectMeta::<ConfigMap> {
        metadata: cms.last().unwrap().metadata.clone(),
        ..Default::default()
    }
}

/// Name of a worker pod of the current run's `role` Job, as the Job controller names them
/// (`<job>-<completion index>-<suffix>`).
pub fn worker_pod_name(ij: &IngestJob, role: &str, index: u32, suffix: &str) -> String {
    format!(
        "{}-{index}-{suffix}",
        names::worker_job(ij, ij.spec.run, role, 0)
    )
}

/// A worker pod of the current run's `role` Job, index `index`, in pod `phase` (`Running`, or
/// `Succeeded`/`Failed` once its process ended). Workers report to the claims endpoint, not
/// through the pod: the reconcile only reads whether the pod ended.
pub fn worker_pod(ij: &IngestJob, role: &str, index: u32, suffix: &str, phase: &str) -> Pod {
    let a = BTreeMap::from([
        (
            "batch.kubernetes.io/job-completion-index".to_owned(),
            index.to_string(),
        ),
        (annotations::INGEST_JOB.to_owned(), ij.name_any()),
    ]);
    let terminated = (phase != "Running").then(|| ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: i32::from(phase == "Failed") * 137,
            ..Default::default()
        }),
        ..Default::default()
    });
    Pod {
        metadata: ObjectMeta {
            name: Some(worker_pod_name(ij, role, index, suffix)),
            namespace: ij.namespace(),
            labels: Some(names::child_labels(ij, role, Some(ij.spec.run))),
            annotations: Some(a),
            ..Default::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some(phase.into()),
            container_statuses: Some(vec![ContainerStatus {
                name: role.into(),
                state: terminated,
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

pub fn progress(files: u64, bytes: u64) -> PodProgress {
    PodProgress {
        files,
        bytes,
        failed: 0,
        directories: 0,
        checked: 0,
        at: 0,
    }
}

/// A shard's result: `failed` of its entries failed (each listed as `d/f<i>`).
pub fn result(files: u64, bytes: u64, failed: u64) -> PodResult {
    PodResult {
        files,
        bytes,
        failed,
        failures: (0..failed)
            .map(|i| FileFailure {
                path: format!("d/f{i}"),
                reason: "EIO".into(),
            })
            .collect(),
        ..Default::default()
    }
}

/// How a test wants one pass to stand. [`drive`] gets it there through the operator's real
/// [`Registry`]: worker pods send the [`ClaimRequest`]s they would send over HTTP, and pods that
/// end are reported to it as the reconcile reports them.
#[derive(Clone, Debug, Default)]
pub struct PassScript {
    /// Shards completed, each with the result its worker reported.
    pub completed: Vec<(u32, PodResult)>,
    /// Shards lost: a worker pod ended while holding it, once more than `retriesPerShard` allows.
    pub lost: Vec<u32>,
    /// Live workers: pod name, the shards it holds, its progress on them.
    pub running: Vec<(String, Vec<u32>, PodProgress)>,
    /// A worker's unusable input (it stops the pass).
    pub unusable: Option<String>,
}

impl PassScript {
    /// Shards `shards` completed, each with `r`.
    pub fn done(shards: impl IntoIterator<Item = u32>, r: PodResult) -> Self {
        PassScript {
            completed: shards.into_iter().map(|s| (s, r.clone())).collect(),
            ..Default::default()
        }
    }

    /// Every one of `total` shards completed with `r`.
    pub fn all_done(total: u64, r: PodResult) -> Self {
        Self::done(0..total as u32, r)
    }

    /// Shard `shard` completed with `r` (instead of the result it had, if any).
    pub fn with(mut self, shard: u32, r: PodResult) -> Self {
        self.completed.retain(|(s, _)| *s != shard);
        self.completed.push((shard, r));
        self
    }

    /// Shards `shards` lost through their retries.
    pub fn lost(mut self, shards: impl IntoIterator<Item = u32>) -> Self {
        self.lost.extend(shards);
        self
    }

    /// A live worker pod holding `holding`, with `p` done on them so far.
    pub fn running(mut self, pod: &str, holding: &[u32], p: PodProgress) -> Self {
        self.running.push((pod.to_owned(), holding.to_vec(), p));
        self
    }

    /// A worker that cannot work at all.
    pub fn unusable(mut self, why: &str) -> Self {
        self.unusable = Some(why.to_owned());
        self
    }
}

/// An empty message of worker pod `worker` of `ij`'s current run, pass `role`.
pub fn claim_request(ij: &IngestJob, role: &str, worker: &str) -> ClaimRequest {
    ClaimRequest {
        namespace: ij.namespace().unwrap(),
        job: ij.name_any(),
        uid: ij.uid().unwrap(),
        run: ij.spec.run,
        role: role.into(),
        worker: worker.into(),
        ..Default::default()
    }
}

/// Creates the pass of `role` over `shards` shards in `reg` (as the reconcile does) and drives it
/// to `script` through worker messages and ended pods. Panics when the pass does not end up as
/// scripted (a script that contradicts itself).
pub fn drive(reg: &Registry, ij: &IngestJob, role: &str, shards: u64, script: &PassScript) {
    reg.ensure(ij, role, shards, None, None, Opening::Now)
        .unwrap();
    let retries = ij.spec.failure_policy.retries_per_shard;
    // Each attempt at a lost shard: a pod takes it and ends (OOM kill, node lost) holding it.
    for &s in &script.lost {
        for attempt in 0..=retries {
            let pod = worker_pod_name(ij, role, 0, &format!("lost{s}a{attempt}"));
            let mut r = claim_request(ij, role, &pod);
            r.holding = vec![s];
            reg.handle(r).unwrap();
            reg.workers_ended(ij, role, [pod.as_str()]);
        }
    }
    if !script.completed.is_empty() {
        let pod = worker_pod_name(ij, role, 0, "done");
        let mut r = claim_request(ij, role, &pod);
        r.done = script
            .completed
            .iter()
            .map(|(shard, result)| ShardDone {
                shard: *shard,
                result: result.clone(),
            })
            .collect();
        reg.handle(r).unwrap();
        // It finished its shards and exited.
        reg.workers_ended(ij, role, [pod.as_str()]);
    }
    for (pod, holding, p) in &script.running {
        let mut r = claim_request(ij, role, pod);
        r.holding = holding.clone();
        r.progress = p.clone();
        reg.handle(r).unwrap();
    }
    if let Some(why) = &script.unusable {
        let pod = worker_pod_name(ij, role, 0, "unusable");
        let mut r = claim_request(ij, role, &pod);
        r.unusable = Some(why.clone());
        reg.handle(r).unwrap();
    }
    let c = reg.view(ij, role).unwrap().counts;
    let held: usize = script.running.iter().map(|(_, h, _)| h.len()).sum();
    assert_eq!(
        (c.completed, c.lost, c.running),
        (
            script.completed.len() as u64,
            script.lost.len() as u64,
            held as u64
        ),
        "the {role} pass is as scripted"
    );
}

/// The views of `ij`'s passes over `shards` shards, each driven to its script (None: the pass
/// does not exist yet).
pub fn views(
    ij: &IngestJob,
    shards: u64,
    copy: Option<&PassScript>,
    verify: Option<&PassScript>,
) -> Views {
    let reg = Registry::default();
    if let Some(s) = copy {
        drive(&reg, ij, labels::ROLE_COPY, shards, s);
    }
    if let Some(s) = verify {
        drive(&reg, ij, labels::ROLE_VERIFY, shards, s);
    }
    reg.views(ij)
}

/// No pass yet.
pub fn no_passes() -> Views {
    Views::default()
}

pub fn empty() -> Observed {
    Observed::default()
}

/// The scan Job as built, finished (or failed), plus the plan it stored.
pub fn scanned(ij: &IngestJob, shards: u64, totals: Totals, failed: bool) -> Observed {
    let children = desired(ij, &Stage::Scan, &settings()).unwrap();
    let scan = jobs_of(&children)[0].clone();
    let mut obs = Observed {
        jobs: vec![observed_job(&scan, !failed, failed, "", "", 0)],
        ..Default::default()
    };
    if !failed {
        obs.plans.push(plan_meta(ij, shards, totals));
    }
    obs
}

/// The current run's `role` Job as `desired` builds it once the scan stored its plan in `obs`.
pub fn pass_job(ij: &IngestJob, obs: &Observed, role: &str) -> Job {
    let plan = obs.plan(ij, ij.spec.run).expect("the plan is stored");
    let layout = stage::layout(&stage::frozen_spec(ij, obs), &plan);
    let children = desired(ij, &Stage::Verify(plan, layout), &settings()).unwrap();
    jobs_of(&children)
        .into_iter()
        .find(|j| j.labels().get(labels::ROLE).map(String::as_str) == Some(role))
        .unwrap()
        .clone()
}

/// Adds the current run's `role` Job as `desired` builds it, with the status `status` gives it.
pub fn add_pass_job(ij: &IngestJob, obs: &mut Observed, role: &str, status: impl Fn(&Job) -> Job) {
    let j = pass_job(ij, obs, role);
    obs.jobs.push(status(&j));
}
