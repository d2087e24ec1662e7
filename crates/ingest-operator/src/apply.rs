//! Apply (I/O): server-side apply of the desired children, pruning of older runs, and the `/status` write.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use ingest_api::constants::{FIELD_MANAGER, labels};
use ingest_api::{IngestJob, IngestJobStatus};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, ServiceAccount,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::desired::Child;
use crate::error::{Error, Result};
use crate::observe::{Observed, owned_by, run_of};

async fn ssa<K>(api: Api<K>, obj: &K) -> Result<()>
where
    K: kube::Resource + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
    K::DynamicType: Default,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|e| Error::kube(format!("apply {} {name}", K::kind(&Default::default())), e))?;
    Ok(())
}

/// How many of a tier's writes are in flight at once: a job has a handful of children (a volume and a
/// claim per destination server at most), so this only bounds a long list of servers.
const APPLY_AT_ONCE: usize = 8;

/// Applies every child, tier by tier ([`Child::tier`]): the children of a tier at once, since each
/// write is a round trip to the API server and the scan Job waits behind all of them. Jobs that
/// already exist (in `obs`) are left alone: their pod template and completions are immutable, and the
/// run's layout is frozen when its Jobs are created. Returns how many were written; the first error
/// stops the apply (the next reconcile applies all again).
pub async fn apply(client: &Client, ns: &str, obs: &Observed, children: &[Child]) -> Result<usize> {
    let mut written = 0;
    let last = children.iter().map(Child::tier).max().unwrap_or(0);
    for tier in 0..=last {
        // Collected first: a lazy iterator's closures held across the await would make the reconcile's
        // future too general for the Controller's `Send` bound (rust-lang/rust#102211).
        let mut writes = Vec::new();
        for child in children.iter().filter(|c| c.tier() == tier) {
            if let Child::Job(j) = child
                && obs
                    .job(j.metadata.name.as_deref().unwrap_or_default())
                    .is_some()
            {
                continue;
            }
            writes.push(apply_one(client, ns, child));
        }
        let done: Vec<()> = futures::stream::iter(writes)
            .buffered(APPLY_AT_ONCE)
            .try_collect()
            .await?;
        written += done.len();
    }
    Ok(written)
}

async fn apply_one(client: &Client, ns: &str, child: &Child) -> Result<()> {
    match child {
        Child::ServiceAccount(o) => {
            ssa(Api::<ServiceAccount>::namespaced(client.clone(), ns), o).await
        }
        Child::Volume(o) => ssa(Api::<PersistentVolume>::all(client.clone()), o).await,
        Child::Claim(o) => {
            ssa(
                Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns),
                o,
            )
            .await
        }
        Child::Job(j) => Api::<Job>::namespaced(client.clone(), ns)
            .create(
                &PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                },
                j,
            )
            .await
            .map(drop)
            .or_else(|e| match e {
                // Created by a concurrent reconcile, or earlier and not yet in the watch cache the
                // reconcile read (a cache lags the cluster): fine, the Job is there.
                kube::Error::Api(s) if s.code == 409 => Ok(()),
                e => Err(Error::kube(format!("create Job {}", j.name_any()), e)),
            }),
    }
}

/// What prune deletes (pure): Jobs and plan ConfigMaps of runs other than the current one that name this
/// IngestJob's uid as owner. Anything else the label selector returned (another IngestJob's objects, a
/// same-named predecessor's) is never touched.
pub fn prunable<'a>(
    ij: &IngestJob,
    obs: &'a Observed,
) -> (
    Vec<&'a Job>,
    Vec<&'a kube::api::PartialObjectMeta<ConfigMap>>,
) {
    let run = Some(ij.spec.run);
    let uid = ij.uid().unwrap_or_default();
    let old = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        let r = run_of(&m.labels);
        r.is_some() && r != run && owned_by(m, &uid)
    };
    (
        obs.jobs.iter().filter(|j| old(&j.metadata)).collect(),
        obs.plans.iter().filter(|m| old(&m.metadata)).collect(),
    )
}

/// Deletes Jobs (with their pods) and plan ConfigMaps of runs other than the current one ([`prunable`]).
pub async fn prune(client: &Client, ij: &IngestJob, obs: &Observed) -> Result<usize> {
    let ns = ij
        .namespace()
        .ok_or(Error::MissingField("IngestJob has no namespace"))?;
    let bg = DeleteParams::background();
    let mut n = 0;
    let (jobs, plans) = prunable(ij, obs);
    for j in jobs {
        delete(
            Api::<Job>::namespaced(client.clone(), &ns),
            &j.name_any(),
            &bg,
        )
        .await?;
        n += 1;
    }
    for m in plans {
        delete(
            Api::<ConfigMap>::namespaced(client.clone(), &ns),
            m.metadata.name.as_deref().unwrap_or_default(),
            &bg,
        )
        .await?;
        n += 1;
    }
    Ok(n)
}

async fn delete<K>(api: Api<K>, name: &str, dp: &DeleteParams) -> Result<()>
where
    K: kube::Resource + DeserializeOwned + Clone + std::fmt::Debug,
{
    match api.delete(name, dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(format!("delete {name}"), e)),
    }
}

/// Writes `/status` with server-side apply (the operator is its only writer), on the condition that the
/// IngestJob is still the version `ij` was read from (`metadata.resourceVersion` is a precondition): a
/// reconcile working from a stale copy gets a conflict and is retried, and can never overwrite a run's
/// record with a verdict recomputed from fewer pods.
pub async fn patch_status(client: &Client, ij: &IngestJob, status: &IngestJobStatus) -> Result<()> {
    let ns = ij
        .namespace()
        .ok_or(Error::MissingField("IngestJob has no namespace"))?;
    let mut body = serde_json::json!({
        "apiVersion": format!("{}/{}", ingest_api::constants::GROUP, ingest_api::constants::VERSION),
        "kind": ingest_api::constants::KIND,
        "status": status,
    });
    if let Some(rv) = ij.resource_version() {
        body["metadata"] = serde_json::json!({ "resourceVersion": rv });
    }
    Api::<IngestJob>::namespaced(client.clone(), &ns)
        .patch_status(
            &ij.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| Error::kube("patch IngestJob status", e))?;
    Ok(())
}

/// Label selector of the operator's own objects (for the controller's watches).
pub fn managed_selector() -> String {
    format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE)
}

/// How long the pods' identity (their ServiceAccount), once applied, is not applied again while
/// unchanged. Then it is, to repair drift (one deleted by hand).
pub const RBAC_REAPPLY_AFTER: Duration = Duration::from_secs(600);

/// Whether a child is one of the pods' RBAC objects (their ServiceAccount: they have no Role).
pub fn is_rbac(child: &Child) -> bool {
    matches!(child, Child::ServiceAccount(_))
}

/// A hash of the RBAC objects among `children` as they would be applied (their JSON, owner reference
/// included, so a re-created IngestJob of the same name applies its own); None when there are none (the
/// pods run as the user's service account).
pub fn rbac_hash(children: &[Child]) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut any = false;
    for c in children.iter().filter(|c| is_rbac(c)) {
        let Child::ServiceAccount(o) = c else {
            continue;
        };
        let json = serde_json::to_vec(o);
        json.unwrap_or_default().hash(&mut h);
        any = true;
    }
    any.then(|| h.finish())
}

/// Whether RBAC objects hashing to `hash` are applied now (pure), given the hash and age of the last
/// apply: unless the same objects were applied less than `max_age` ago.
pub fn rbac_due(last: Option<(u64, Duration)>, hash: u64, max_age: Duration) -> bool {
    !last.is_some_and(|(h, age)| h == hash && age < max_age)
}

/// The RBAC objects last applied for each IngestJob (`namespace/name`): their [`rbac_hash`] and when. Each
/// IngestJob has its own ServiceAccount (`<name>-workers`), so that is the key.
#[derive(Default)]
pub struct RbacApplied(Mutex<HashMap<String, (u64, Instant)>>);

impl RbacApplied {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Instant)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `key`'s RBAC objects hashing to `hash` are applied now ([`rbac_due`]).
    pub fn due(&self, key: &str, hash: u64) -> bool {
        let last = self.lock().get(key).map(|(h, at)| (*h, at.elapsed()));
        rbac_due(last, hash, RBAC_REAPPLY_AFTER)
    }

    /// Notes that `key`'s RBAC objects hashing to `hash` were just applied.
    pub fn applied(&self, key: String, hash: u64) {
        self.lock().insert(key, (hash, Instant::now()));
    }

    /// Forgets `key` (its apply failed, or the IngestJob is gone): the next reconcile applies them.
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_rbac_is_applied_again_only_after_a_while() {
        let max = Duration::from_secs(600);
        let minute = Duration::from_secs(60);
        assert!(rbac_due(None, 7, max), "never applied (or forgotten)");
        assert!(!rbac_due(Some((7, minute)), 7, max), "same, recent: skip");
        assert!(rbac_due(Some((8, minute)), 7, max), "changed: apply");
        assert!(
            rbac_due(Some((7, max)), 7, max),
            "same, but old: repair drift"
        );
        assert!(rbac_due(Some((7, 2 * max)), 7, max));
    }

    #[test]
    fn the_memory_skips_until_forgotten() {
        let m = RbacApplied::default();
        assert!(m.due("ns/a", 1));
        m.applied("ns/a".into(), 1);
        assert!(!m.due("ns/a", 1));
        assert!(m.due("ns/a", 2), "another desired form");
        assert!(m.due("ns/b", 1), "another IngestJob");
        m.forget("ns/a");
        assert!(m.due("ns/a", 1), "an apply error forgets");
    }

    #[test]
    fn the_rbac_hash_covers_only_the_rbac_objects_and_follows_them() {
        let sa = |name: &str| {
            Child::ServiceAccount(Box::new(ServiceAccount {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                ..Default::default()
            }))
        };
        let job = Child::Job(Box::default());
        assert_eq!(rbac_hash(&[]), None);
        assert_eq!(
            rbac_hash(std::slice::from_ref(&job)),
            None,
            "no RBAC objects"
        );
        let a = rbac_hash(&[sa("x-pods"), job.clone()]).unwrap();
        assert_eq!(rbac_hash(&[sa("x-pods")]), Some(a), "Jobs do not count");
        assert_ne!(rbac_hash(&[sa("y-pods"), job]), Some(a));
        assert!(is_rbac(&sa("x")));
    }
}
