//! Apply (I/O): server-side apply of the desired children, pruning of older runs, and the `/status` write.

use ingest_api::constants::{FIELD_MANAGER, labels};
use ingest_api::{IngestJob, IngestJobStatus};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
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

/// Applies every child. Jobs that already exist are left alone: their pod template and completions are
/// immutable, and the run's layout is frozen when its Jobs are created.
pub async fn apply(client: &Client, ns: &str, obs: &Observed, children: &[Child]) -> Result<usize> {
    let mut written = 0;
    for child in children {
        match child {
            Child::ServiceAccount(o) => {
                ssa(Api::<ServiceAccount>::namespaced(client.clone(), ns), o).await?
            }
            Child::Role(o) => ssa(Api::<Role>::namespaced(client.clone(), ns), o).await?,
            Child::RoleBinding(o) => {
                ssa(Api::<RoleBinding>::namespaced(client.clone(), ns), o).await?
            }
            Child::Volume(o) => ssa(Api::<PersistentVolume>::all(client.clone()), o).await?,
            Child::Claim(o) => {
                ssa(
                    Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns),
                    o,
                )
                .await?
            }
            Child::Job(j) => {
                if obs
                    .job(j.metadata.name.as_deref().unwrap_or_default())
                    .is_some()
                {
                    continue;
                }
                Api::<Job>::namespaced(client.clone(), ns)
                    .create(
                        &PostParams {
                            field_manager: Some(FIELD_MANAGER.into()),
                            ..Default::default()
                        },
                        j,
                    )
                    .await
                    .or_else(|e| match e {
                        // Created by a concurrent reconcile (or before a restart and not yet in our list): fine.
                        kube::Error::Api(s) if s.code == 409 => Ok((**j).clone()),
                        e => Err(Error::kube(format!("create Job {}", j.name_any()), e)),
                    })?;
            }
        }
        written += 1;
    }
    Ok(written)
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
