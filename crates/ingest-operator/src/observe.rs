//! Observe (I/O): everything the pure steps need, listed by the children's labels. Nothing is remembered between
//! reconciles, so an operator restart mid-job resumes from exactly what is in the cluster.

use ingest_api::IngestJob;
use ingest_api::constants::labels;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PartialObjectMeta};
use kube::{Client, ResourceExt};

use crate::error::{Error, Result};
use crate::names;
use crate::plan_store::{PlanSummary, summary_of};

/// The children of one IngestJob as they are now.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Jobs of every run.
    pub jobs: Vec<Job>,
    /// Pods of every run (scan and workers).
    pub pods: Vec<Pod>,
    /// Metadata of the plan ConfigMaps of every run (never their data).
    pub plans: Vec<PartialObjectMeta<ConfigMap>>,
}

impl Observed {
    /// The Job called `name`.
    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs
            .iter()
            .find(|j| j.metadata.name.as_deref() == Some(name))
    }

    /// The committed plan summary of `run`, if its chunk 0 exists.
    pub fn plan(&self, ij: &IngestJob, run: i64) -> Option<PlanSummary> {
        let first = format!("{}-0", names::plan_prefix(ij, run));
        self.plans
            .iter()
            .find(|m| m.metadata.name.as_deref() == Some(first.as_str()))
            .and_then(|m| summary_of(&m.metadata))
    }

    /// Pods of `role` in `run`.
    pub fn pods_of<'a>(&'a self, role: &'a str, run: i64) -> impl Iterator<Item = &'a Pod> + 'a {
        self.pods.iter().filter(move |p| {
            has_label(&p.metadata.labels, labels::ROLE, role)
                && run_of(&p.metadata.labels) == Some(run)
        })
    }
}

/// The `run` label of an object.
pub fn run_of(l: &Option<std::collections::BTreeMap<String, String>>) -> Option<i64> {
    l.as_ref()?.get(labels::RUN)?.parse().ok()
}

fn has_label(
    l: &Option<std::collections::BTreeMap<String, String>>,
    key: &str,
    value: &str,
) -> bool {
    l.as_ref()
        .and_then(|l| l.get(key))
        .is_some_and(|v| v == value)
}

/// Whether `meta` names the IngestJob with `uid` among its owners. Children are found by label, but labels are
/// not unique (another IngestJob, an older object of the same name, or a user may set them): only ownership
/// makes an object ours to count or delete.
pub fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.kind == ingest_api::constants::KIND)
}

/// The label selector of `ij`'s children of `role`: the job's own label plus the role (both must hold).
pub fn role_selector(ij: &IngestJob, role: &str) -> String {
    format!(
        "{},{}={role}",
        names::selector(&ij.name_any()),
        labels::ROLE
    )
}

/// Keeps what belongs to the IngestJob with `uid` (pure): Jobs and plans it owns, and pods whose controlling
/// Job is one of those (pods without a Job owner are kept: their labels are all there is).
pub fn keep_owned(uid: &str, obs: Observed) -> Observed {
    let jobs: Vec<Job> = obs
        .jobs
        .into_iter()
        .filter(|j| owned_by(&j.metadata, uid))
        .collect();
    let job_uids: Vec<&str> = jobs
        .iter()
        .filter_map(|j| j.metadata.uid.as_deref())
        .collect();
    let pods = obs
        .pods
        .into_iter()
        .filter(|p| {
            let job_owner = p
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.kind == "Job" && o.controller == Some(true));
            job_owner.is_none_or(|o| job_uids.contains(&o.uid.as_str()))
        })
        .collect();
    let plans = obs
        .plans
        .into_iter()
        .filter(|m| owned_by(&m.metadata, uid))
        .collect();
    Observed { jobs, pods, plans }
}

/// Lists the children of `ij` (three calls, each filtered by label on the server), keeping only what it owns.
pub async fn observe(client: &Client, ij: &IngestJob) -> Result<Observed> {
    let ns = ij
        .namespace()
        .ok_or(Error::MissingField("IngestJob has no namespace"))?;
    let uid = ij
        .uid()
        .ok_or(Error::MissingField("IngestJob has no uid yet"))?;
    // `ListParams::labels` replaces the selector: every list gets its whole selector here.
    let lp = ListParams::default().labels(&names::selector(&ij.name_any()));
    let jobs = Api::<Job>::namespaced(client.clone(), &ns)
        .list(&lp)
        .await
        .map_err(|e| Error::kube("list Jobs", e))?;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&lp)
        .await
        .map_err(|e| Error::kube("list Pods", e))?;
    let plan_lp = ListParams::default().labels(&role_selector(ij, labels::ROLE_PLAN));
    let plans = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .list_metadata(&plan_lp)
        .await
        .map_err(|e| Error::kube("list plan ConfigMaps", e))?;
    Ok(keep_owned(
        &uid,
        Observed {
            jobs: jobs.items,
            pods: pods.items,
            plans: plans.items,
        },
    ))
}
