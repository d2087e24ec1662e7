//! Observe: everything the pure steps need, read from the operator's watch caches of its children (Jobs, pods,
//! plan ConfigMaps' metadata) instead of listed on every reconcile. The caches are fed by the very watches that
//! trigger reconciles, so a reconcile triggered by a child's change sees that change. The reconcile itself
//! remembers nothing between passes, so an operator restart (whose caches list everything afresh) resumes
//! from exactly what is in the cluster.
//!
//! Why a cache that lags the cluster is safe. Each cache holds what its watch has seen up to some moment: what
//! a list taken a little earlier would have returned (the lists were never taken at one instant either, and
//! the reconcile acted on them later). What differs: the three caches may stand at different moments.
//! - A reconcile never reads a cache before its first full list ([`Caches::ready`]): an empty cache that
//!   has not listed yet would look like "no children" and start the run over.
//! - What is *present* in a cache was true, and stays true: Jobs do not un-finish and pods do not leave
//!   `Succeeded` or `Failed`, so "the Job finished", "the pod ended, its claims go back to the queue" and "a
//!   Job of an older run, delete it" are never made up by lag (a deletion the cache missed is a 404, which
//!   is fine).
//! - What is *absent* may merely not have arrived yet. Most decisions from absence are creations with fixed
//!   names: a Job missing from the cache is created again and the API server answers 409, which apply
//!   treats as done; server-side applies are idempotent. A run's stage only moves on from what is present
//!   (a finished Job, a stored plan), so a missing object holds it back, it never skips ahead. A verify
//!   worker the pod cache has not seen is taken for one not started yet, as a list taken before its
//!   creation did.
//! - The one verdict drawn from absence, "the scan finished without storing a plan" (a failed run, and
//!   recorded), is confirmed with the API server first ([`plan_to_confirm`]): the scan stores its plan
//!   before it exits, but the ConfigMap watch may deliver the plan after the Job watch delivers the
//!   finished scan.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use ingest_api::IngestJob;
use ingest_api::constants::labels;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PartialObjectMeta};
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

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

    /// Whether a Job of `role` in `run` exists (whichever servers it mounts).
    pub fn has_job_of(&self, role: &str, run: i64) -> bool {
        self.jobs.iter().any(|j| {
            has_label(&j.metadata.labels, labels::ROLE, role)
                && run_of(&j.metadata.labels) == Some(run)
        })
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

/// How long a reconcile waits for a cache's first full list (it is started with the controller, so this
/// is only ever waited for just after start-up) before it fails with a retryable error.
pub const READY_WAIT: Duration = Duration::from_secs(10);

/// The operator's watch caches of one controller's scope (all namespaces or one): what its watches of Jobs,
/// pods and plan ConfigMaps (metadata only: plan data is never streamed) have seen, all filtered by the
/// managed-by label.
#[derive(Clone)]
pub struct Caches {
    /// Jobs.
    pub jobs: Store<Job>,
    /// Pods (scan and workers).
    pub pods: Store<Pod>,
    /// Metadata of ConfigMaps (the plans).
    pub plans: Store<PartialObjectMeta<ConfigMap>>,
}

/// A cache that has listed exactly `items` and is ready, as its watch would have filled it.
fn listed<K>(items: Vec<K>) -> Store<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, mut writer) = kube::runtime::reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for o in items {
        writer.apply_watcher_event(&watcher::Event::InitApply(o));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    store
}

/// Waits until `store` has had its first full list, at most until `deadline`.
async fn ready_by<K>(store: &Store<K>, what: &str, deadline: tokio::time::Instant) -> Result<()>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    match tokio::time::timeout_at(deadline, store.wait_until_ready()).await {
        Ok(Ok(())) => Ok(()),
        // The watch stream was dropped (the controller is stopping) or has not listed yet.
        Ok(Err(_)) | Err(_) => Err(Error::CacheNotReady(what.to_owned())),
    }
}

impl Caches {
    /// Caches that have listed exactly these objects (tests, and anything that is given its children
    /// instead of watching them).
    pub fn listed(
        jobs: Vec<Job>,
        pods: Vec<Pod>,
        plans: Vec<PartialObjectMeta<ConfigMap>>,
    ) -> Self {
        Caches {
            jobs: listed(jobs),
            pods: listed(pods),
            plans: listed(plans),
        }
    }

    /// Waits (at most `within`) until every cache has had its first full list; else a retryable error
    /// naming the first that has not.
    pub async fn ready(&self, within: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        ready_by(&self.jobs, "Jobs", deadline).await?;
        ready_by(&self.pods, "Pods", deadline).await?;
        ready_by(&self.plans, "plan ConfigMaps", deadline).await
    }
}

/// The watch caches of every controller of the operator, by scope: `None` for the one over all namespaces,
/// else one per watched namespace. Each controller adds its own when it starts.
#[derive(Default)]
pub struct WatchCaches(RwLock<Vec<(Option<String>, Caches)>>);

impl WatchCaches {
    /// Adds (or replaces) the caches of `scope`.
    pub fn insert(&self, scope: Option<String>, caches: Caches) {
        let mut all = self.0.write().unwrap_or_else(|e| e.into_inner());
        all.retain(|(s, _)| *s != scope);
        all.push((scope, caches));
    }

    /// The caches that hold the children of IngestJobs in `ns`.
    pub fn of(&self, ns: &str) -> Option<Caches> {
        let all = self.0.read().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .find(|(s, _)| s.as_deref() == Some(ns))
            .or_else(|| all.iter().find(|(s, _)| s.is_none()))
            .map(|(_, c)| c.clone())
    }
}

/// The label selector of all children of `ij`: the job's own label, as [`names::selector`] says.
pub fn children_selector(ij: &IngestJob) -> Selector {
    Selector::from_iter([(labels::JOB.to_owned(), names::label_value(&ij.name_any()))])
}

/// The label selector of `ij`'s plan ConfigMaps: the job's own label and the plan role, as
/// [`role_selector`] says.
pub fn plans_selector(ij: &IngestJob) -> Selector {
    let mut s = children_selector(ij);
    s.extend(Selector::from_iter([(
        labels::ROLE.to_owned(),
        labels::ROLE_PLAN.to_owned(),
    )]));
    s
}

/// The objects of `items` in `ns` whose labels match `selector` (as a list by that selector in that
/// namespace returns them: sorted by name).
fn pick<K: Resource + Clone>(items: Vec<Arc<K>>, ns: &str, selector: &Selector) -> Vec<K> {
    let mut out: Vec<K> = items
        .into_iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(ns) && selector.matches(o.labels()))
        .map(|o| K::clone(&o))
        .collect();
    out.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
    out
}

/// The children of `ij` among the caches' contents (pure): those in its namespace with its labels (what the
/// lists by label used to return), of which [`keep_owned`] keeps what it owns.
pub fn select(
    ij: &IngestJob,
    jobs: Vec<Arc<Job>>,
    pods: Vec<Arc<Pod>>,
    plans: Vec<Arc<PartialObjectMeta<ConfigMap>>>,
) -> Result<Observed> {
    let ns = ij
        .namespace()
        .ok_or(Error::MissingField("IngestJob has no namespace"))?;
    let uid = ij
        .uid()
        .ok_or(Error::MissingField("IngestJob has no uid yet"))?;
    let children = children_selector(ij);
    Ok(keep_owned(
        &uid,
        Observed {
            jobs: pick(jobs, &ns, &children),
            pods: pick(pods, &ns, &children),
            plans: pick(plans, &ns, &plans_selector(ij)),
        },
    ))
}

/// The plan ConfigMap to read from the API server before believing the cache (pure): chunk 0 of the current
/// run's plan when the run's scan Job finished (not failed) and the cache has no plan. Only then would its
/// absence decide something that cannot be taken back (the run fails: "the scan finished without storing a
/// plan"); the cache may merely not have it yet. Not once the run's record is written: it decides nothing
/// more.
pub fn plan_to_confirm(ij: &IngestJob, obs: &Observed) -> Option<String> {
    let run = ij.spec.run;
    if crate::status::recorded(ij.status.as_ref(), run) {
        return None;
    }
    let scan = crate::stage::scan_state(ij, obs, run)?;
    (scan.finished && !scan.failed && obs.plan(ij, run).is_none())
        .then(|| format!("{}-0", names::plan_prefix(ij, run)))
}

/// The children of `ij` from the watch caches of its namespace ([`select`]), once they have listed; a plan
/// the cache lacks is confirmed with one read ([`plan_to_confirm`]).
pub async fn observe(client: &Client, caches: &WatchCaches, ij: &IngestJob) -> Result<Observed> {
    let ns = ij
        .namespace()
        .ok_or(Error::MissingField("IngestJob has no namespace"))?;
    let caches = caches
        .of(&ns)
        .ok_or_else(|| Error::CacheNotReady(format!("namespace {ns} (not watched)")))?;
    caches.ready(READY_WAIT).await?;
    let mut obs = select(
        ij,
        caches.jobs.state(),
        caches.pods.state(),
        caches.plans.state(),
    )?;
    if let Some(name) = plan_to_confirm(ij, &obs) {
        let found = Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get_metadata_opt(&name)
            .await
            .map_err(|e| Error::kube(format!("get plan ConfigMap {name}"), e))?;
        let uid = ij.uid().unwrap_or_default();
        obs.plans
            .extend(found.filter(|m| owned_by(&m.metadata, &uid)));
    }
    Ok(obs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    const UID: &str = "uid-a";

    fn ij(name: &str, ns: &str) -> IngestJob {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ingest.vfxt.dev/v1alpha1", "kind": "IngestJob",
            "metadata": {"name": name, "namespace": ns, "uid": UID},
            "spec": {"source": {"pvc": {"claimName": "c"}}, "destination": {"nfs": {"servers": ["10.0.0.1"], "path": "/n"}}},
        }))
        .unwrap()
    }

    fn owner(kind: &str, uid: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            kind: kind.into(),
            uid: uid.into(),
            controller: Some(controller),
            ..Default::default()
        }
    }

    /// Metadata of a child of the IngestJob `job` (by its labels) named `name` in `ns`, owned by `owner`.
    fn meta(name: &str, ns: &str, job: &str, role: &str, owner: OwnerReference) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            uid: Some(format!("uid-{name}")),
            labels: Some(names::child_labels(&ij(job, ns), role, Some(0))),
            owner_references: Some(vec![owner]),
            ..Default::default()
        }
    }

    fn job(name: &str, ns: &str, ij_name: &str, owner_uid: &str) -> Arc<Job> {
        Arc::new(Job {
            metadata: meta(
                name,
                ns,
                ij_name,
                "scan",
                owner(ingest_api::constants::KIND, owner_uid, true),
            ),
            ..Default::default()
        })
    }

    fn pod(name: &str, ns: &str, ij_name: &str, job_uid: &str) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: meta(name, ns, ij_name, "copy", owner("Job", job_uid, true)),
            ..Default::default()
        })
    }

    fn plan(name: &str, ns: &str, ij_name: &str, role: &str) -> Arc<PartialObjectMeta<ConfigMap>> {
        Arc::new(PartialObjectMeta {
            metadata: meta(
                name,
                ns,
                ij_name,
                role,
                owner(ingest_api::constants::KIND, UID, true),
            ),
            ..Default::default()
        })
    }

    fn names_of<K: Resource>(v: &[K]) -> Vec<String> {
        v.iter()
            .map(|o| o.meta().name.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn the_cache_selectors_are_the_ones_the_lists_used() {
        let a = ij("genomics", "ns");
        assert_eq!(
            children_selector(&a).to_string(),
            names::selector("genomics")
        );
        assert_eq!(
            plans_selector(&a).to_string(),
            role_selector(&a, labels::ROLE_PLAN)
        );
        // Long names are labelled by their shortened form, and selected by it too.
        let long = ij(&"x".repeat(100), "ns");
        assert_eq!(
            children_selector(&long).to_string(),
            names::selector(&"x".repeat(100))
        );
    }

    #[test]
    fn select_keeps_only_this_ingestjobs_children_in_its_namespace_sorted_by_name() {
        let a = ij("genomics", "ns");
        let jobs = vec![
            job("genomics-r0-scan", "ns", "genomics", UID),
            job("genomics-r0-copy", "ns", "genomics", UID),
            job("genomics-r0-scan", "other-ns", "genomics", UID), // same name, another namespace
            job("media-r0-scan", "ns", "media", UID),             // another job's label
            job("impostor-r0-scan", "ns", "genomics", "uid-b"),   // labels say ours, owner does not
        ];
        let pods = vec![
            pod(
                "genomics-r0-copy-0-x",
                "ns",
                "genomics",
                "uid-genomics-r0-copy",
            ),
            pod(
                "genomics-r0-copy-1-y",
                "other-ns",
                "genomics",
                "uid-genomics-r0-copy",
            ),
            pod("media-r0-copy-0-x", "ns", "media", "uid-media-r0-scan"),
            // Our labels, but its Job is not one of ours.
            pod(
                "genomics-r0-copy-2-z",
                "ns",
                "genomics",
                "uid-impostor-r0-scan",
            ),
        ];
        let plans = vec![
            plan("genomics-r0-plan-1", "ns", "genomics", labels::ROLE_PLAN),
            plan("genomics-r0-plan-0", "ns", "genomics", labels::ROLE_PLAN),
            plan(
                "genomics-r0-plan-0",
                "other-ns",
                "genomics",
                labels::ROLE_PLAN,
            ),
            plan("media-r0-plan-0", "ns", "media", labels::ROLE_PLAN),
            // Ours, but not a plan (the plans selector has the role).
            plan("genomics-something", "ns", "genomics", "identity"),
        ];
        let obs = select(&a, jobs, pods, plans).unwrap();
        assert_eq!(
            names_of(&obs.jobs),
            ["genomics-r0-copy", "genomics-r0-scan"]
        );
        assert!(
            obs.jobs
                .iter()
                .all(|j| j.metadata.namespace.as_deref() == Some("ns"))
        );
        assert_eq!(names_of(&obs.pods), ["genomics-r0-copy-0-x"]);
        assert_eq!(
            names_of(&obs.plans),
            ["genomics-r0-plan-0", "genomics-r0-plan-1"]
        );
        assert!(
            obs.plans
                .iter()
                .all(|p| p.metadata.namespace.as_deref() == Some("ns"))
        );
    }

    #[test]
    fn select_needs_a_namespace_and_a_uid() {
        let mut a = ij("genomics", "ns");
        a.metadata.uid = None;
        assert!(matches!(
            select(&a, vec![], vec![], vec![]),
            Err(Error::MissingField(_))
        ));
        a.metadata.namespace = None;
        assert!(matches!(
            select(&a, vec![], vec![], vec![]),
            Err(Error::MissingField(_))
        ));
    }

    #[test]
    fn only_a_missing_plan_after_a_finished_scan_is_confirmed() {
        let a = ij("genomics", "ns");
        let done = |failed: bool| {
            let mut j = (*job("genomics-r0-scan", "ns", "genomics", UID)).clone();
            j.status = Some(JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: if failed { "Failed" } else { "Complete" }.into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            });
            j
        };
        let obs = |jobs: Vec<Job>| Observed {
            jobs,
            ..Default::default()
        };
        assert_eq!(
            plan_to_confirm(&a, &obs(vec![done(false)])).as_deref(),
            Some("genomics-r0-plan-0")
        );
        assert_eq!(
            plan_to_confirm(&a, &obs(vec![])),
            None,
            "no scan: nothing decided"
        );
        assert_eq!(
            plan_to_confirm(&a, &obs(vec![done(true)])),
            None,
            "a failed scan fails anyway"
        );
        let running = (*job("genomics-r0-scan", "ns", "genomics", UID)).clone();
        assert_eq!(plan_to_confirm(&a, &obs(vec![running])), None);
        let mut recorded = a.clone();
        recorded.status = Some(ingest_api::IngestJobStatus {
            run: Some(0),
            phase: Some(ingest_api::Phase::Failed),
            completion_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(1).unwrap(),
            )),
            ..Default::default()
        });
        assert_eq!(
            plan_to_confirm(&recorded, &obs(vec![done(false)])),
            None,
            "the run's record is written: nothing more is decided"
        );
    }

    #[tokio::test]
    async fn caches_are_found_by_namespace_and_read_only_once_listed() {
        let all = WatchCaches::default();
        assert!(all.of("a").is_none(), "no controller watches it");
        let listed = Caches::listed(vec![], vec![], vec![]);
        all.insert(Some("a".into()), listed.clone());
        assert!(all.of("a").is_some() && all.of("b").is_none());
        all.insert(None, listed.clone());
        assert!(all.of("b").is_some(), "the cluster-wide one");
        listed.ready(Duration::ZERO).await.unwrap();

        // A cache whose watch has not listed yet: the wait ends in a retryable error naming it.
        let (jobs, _writer) = kube::runtime::reflector::store::<Job>();
        let unlisted = Caches { jobs, ..listed };
        let e = unlisted.ready(Duration::ZERO).await.unwrap_err();
        assert!(matches!(&e, Error::CacheNotReady(w) if w == "Jobs"), "{e}");
    }
}
