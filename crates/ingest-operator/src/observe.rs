//! Observe (I/O): everything the pure steps need, listed by the children's labels. Nothing is remembered between
//! reconciles, so an operator restart mid-job resumes from exactly what is in the cluster.

use ingest_api::IngestJob;
use ingest_api::constants::labels;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
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

/// Lists the children of `ij` (three calls, each filtered by label on the server).
pub async fn observe(client: &Client, ij: &IngestJob) -> Result<Observed> {
    let ns = ij
        .namespace()
        .ok_or(Error::MissingField("IngestJob has no namespace"))?;
    let lp = ListParams::default().labels(&names::selector(&ij.name_any()));
    let jobs = Api::<Job>::namespaced(client.clone(), &ns)
        .list(&lp)
        .await
        .map_err(|e| Error::kube("list Jobs", e))?;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&lp)
        .await
        .map_err(|e| Error::kube("list Pods", e))?;
    let plan_lp = lp
        .clone()
        .labels(&format!("{}={}", labels::ROLE, labels::ROLE_PLAN));
    let plans = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .list_metadata(&plan_lp)
        .await
        .map_err(|e| Error::kube("list plan ConfigMaps", e))?;
    Ok(Observed {
        jobs: jobs.items,
        pods: pods.items,
        plans: plans.items,
    })
}
