//! Builders shared by the pure pipeline tests and the mock-API tests: fixtures and the cluster objects the
//! operator observes (Jobs with status, pods with progress annotations and termination messages).
#![allow(dead_code)] // each test binary uses a different subset

pub mod selectors;

use std::collections::BTreeMap;
use std::path::PathBuf;

use ingest_api::constants::{annotations, labels};
use ingest_api::report::{PodProgress, PodResult};
use ingest_api::{IngestJob, Totals};
use ingest_operator::desired::{Child, Settings, desired};
use ingest_operator::names;
use ingest_operator::observe::Observed;
use ingest_operator::plan_store::{self, Owner, PlanSummary};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
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

/// A worker pod of `role` for (server, index), running with a progress annotation or finished with a result.
pub fn worker_pod(
    ij: &IngestJob,
    role: &str,
    server: usize,
    index: u64,
    created: i64,
    progress: Option<PodProgress>,
    result: Option<PodResult>,
) -> Pod {
    let mut l = names::child_labels(ij, role, Some(ij.spec.run));
    l.insert(labels::SERVER_INDEX.into(), server.to_string());
    let mut a = BTreeMap::from([
        (
            "batch.kubernetes.io/job-completion-index".to_owned(),
            index.to_string(),
        ),
        (annotations::INGEST_JOB.to_owned(), ij.name_any()),
    ]);
    if let Some(p) = &progress {
        a.insert(
            annotations::PROGRESS.into(),
            serde_json::to_string(p).unwrap(),
        );
    }
    // As the worker exits: 1 when some entry failed (its result says which), else 0.
    let exit_code = result.as_ref().map_or(0, |r| i32::from(r.failed > 0));
    let terminated = result.as_ref().map(|r| ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code,
            message: Some(r.to_termination_message()),
            ..Default::default()
        }),
        ..Default::default()
    });
    Pod {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}-{role}-{server}-{index}-{created}",
                ij.name_any()
            )),
            namespace: ij.namespace(),
            labels: Some(l),
            annotations: Some(a),
            creation_timestamp: Some(Time(at(created))),
            ..Default::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some(
                match (&result, exit_code) {
                    (None, _) => "Running",
                    (Some(_), 0) => "Succeeded",
                    (Some(_), _) => "Failed",
                }
                .into(),
            ),
            container_statuses: Some(vec![ContainerStatus {
                name: role.into(),
                state: terminated,
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

/// A worker pod killed before it wrote a result (OOM kill: exit 137, no termination message).
pub fn crashed_pod(ij: &IngestJob, role: &str, server: usize, index: u64, created: i64) -> Pod {
    let mut p = worker_pod(ij, role, server, index, created, None, None);
    let st = p.status.as_mut().unwrap();
    st.phase = Some("Failed".into());
    st.container_statuses.as_mut().unwrap()[0].state = Some(ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: 137,
            reason: Some("OOMKilled".into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    p
}

pub fn progress(files: u64, bytes: u64) -> Option<PodProgress> {
    Some(PodProgress {
        files,
        bytes,
        failed: 0,
        directories: 0,
        checked: 0,
        at: 0,
    })
}

pub fn empty() -> Observed {
    Observed::default()
}

/// The scan Job as built, finished (or failed), plus the plan it stored.
pub fn scanned(ij: &IngestJob, shards: u64, totals: Totals, failed: bool) -> Observed {
    let children = desired(ij, &ingest_operator::stage::Stage::Scan, &settings()).unwrap();
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

/// Adds the Jobs of `role` as `desired` builds them for the current stage, each with `complete`.
pub fn add_role_jobs(
    ij: &IngestJob,
    obs: &mut Observed,
    role: &str,
    status: impl Fn(usize, &Job) -> Job,
) {
    let stage = ingest_operator::stage::stage(ij, obs);
    let children = desired(ij, &stage, &settings()).unwrap();
    for (i, j) in jobs_of(&children)
        .into_iter()
        .filter(|j| j.labels().get(labels::ROLE).map(String::as_str) == Some(role))
        .enumerate()
    {
        obs.jobs.push(status(i, j));
    }
}
