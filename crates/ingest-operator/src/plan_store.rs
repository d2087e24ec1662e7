//! Where the scan pod leaves the plan for the workers: ConfigMaps `<prefix>-0..n`, owned by the IngestJob (deleted
//! with it), each holding one piece of the plan's JSON text (`ingest_plan::Plan::to_chunks`) under the key
//! `part-<k>` (zero-padded). The operator mounts all of them into every worker pod as one projected volume at
//! [`PLAN_MOUNT`], where the pieces are files that `vfxt-ingest worker --plan DIR` joins in numeric order.
//!
//! Mounting rather than reading through the API: the kubelet fetches and caches each ConfigMap once per node,
//! so thousands of worker pods do not each pull the plan from the API server, and workers need no API access
//! to read it.
//!
//! Chunk 0 is written last and carries [`SUMMARY_ANNOTATION`] (chunk count, shard counts, totals): its presence
//! is the commit marker, and the operator reads the summary from object metadata alone, never the plan data.

use std::collections::BTreeMap;
use std::time::Duration;

use ingest_api::Totals;
use ingest_api::constants::labels;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Annotation on chunk 0 with the [`PlanSummary`] JSON.
pub const SUMMARY_ANNOTATION: &str = "ingest.vfxt.dev/plan-summary";
/// Where worker pods find the plan's pieces.
pub const PLAN_MOUNT: &str = "/ingest/plan";
/// Largest piece of plan text. Objects are limited to 1 MiB, and the text travels JSON-escaped (about 12% larger
/// for plan JSON), so 768 KiB keeps even the escaped request under 1 MiB with metadata.
pub const MAX_CHUNK_BYTES: usize = 768 * 1024;
/// Field manager the scan pod uses (distinct from the operator's, which never writes plan data).
pub const SCAN_FIELD_MANAGER: &str = "vfxt-ingest-scan";

/// Data key of piece `k`: the digits order the files when mounted.
pub fn chunk_key(k: usize) -> String {
    format!("part-{k:05}")
}

/// What the operator needs to know about a stored plan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    /// Number of chunk ConfigMaps.
    pub chunks: u32,
    /// Number of shards in the plan.
    pub shards: u64,
    /// Shards the plan deals to each destination server, in `spec.destination.nfs.servers` order: the
    /// completions of that server's Indexed Jobs.
    pub shards_per_server: Vec<u64>,
    /// What the scan found.
    pub totals: Totals,
    /// Entries the scan could not read (unreadable directories, entries that vanished or failed `stat`):
    /// per-entry outcomes, counted against the failure policy like copy failures.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed: u64,
    /// The first of them (at most [`ingest_api::MAX_LISTED_FAILURES`]); the plan holds more.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<ingest_api::FileFailure>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The IngestJob the plan belongs to (from the pod's environment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Namespace of the IngestJob and its children.
    pub namespace: String,
    /// IngestJob name.
    pub name: String,
    /// IngestJob uid, for the owner reference.
    pub uid: String,
    /// `spec.run` the plan belongs to.
    pub run: i64,
}

/// The ConfigMaps that store `chunks` (pure; [`save`] writes them). Chunk 0 comes LAST in the returned list.
pub fn chunk_objects(
    owner: &Owner,
    prefix: &str,
    chunks: &[String],
    summary: &PlanSummary,
) -> Result<Vec<ConfigMap>> {
    let plan_err = |message: String| Error::Plan {
        prefix: prefix.to_owned(),
        message,
    };
    if chunks.is_empty() || summary.chunks as usize != chunks.len() {
        return Err(plan_err(format!(
            "{} chunks given, summary says {}",
            chunks.len(),
            summary.chunks
        )));
    }
    if let Some((k, big)) = chunks
        .iter()
        .enumerate()
        .find(|(_, c)| c.len() > MAX_CHUNK_BYTES)
    {
        return Err(plan_err(format!(
            "chunk {k} has {} bytes; at most {MAX_CHUNK_BYTES} fit a ConfigMap",
            big.len()
        )));
    }
    let summary_json = serde_json::to_string(summary).map_err(|source| Error::Serde {
        what: "plan summary",
        source,
    })?;
    let mut out: Vec<ConfigMap> = chunks
        .iter()
        .enumerate()
        .map(|(k, text)| ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("{prefix}-{k}")),
                namespace: Some(owner.namespace.clone()),
                labels: Some(BTreeMap::from([
                    (
                        labels::JOB.to_owned(),
                        crate::names::label_value(&owner.name),
                    ),
                    (labels::ROLE.to_owned(), labels::ROLE_PLAN.to_owned()),
                    (labels::RUN.to_owned(), owner.run.to_string()),
                    (
                        labels::MANAGED_BY.to_owned(),
                        labels::MANAGED_BY_VALUE.to_owned(),
                    ),
                ])),
                annotations: (k == 0).then(|| {
                    BTreeMap::from([(SUMMARY_ANNOTATION.to_owned(), summary_json.clone())])
                }),
                owner_references: Some(vec![OwnerReference {
                    api_version: format!(
                        "{}/{}",
                        ingest_api::constants::GROUP,
                        ingest_api::constants::VERSION
                    ),
                    kind: ingest_api::constants::KIND.to_owned(),
                    name: owner.name.clone(),
                    uid: owner.uid.clone(),
                    // The controller reference lets the operator's ConfigMap watch map a chunk back to its job.
                    controller: Some(true),
                    block_owner_deletion: Some(false),
                }]),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(chunk_key(k), text.clone())])),
            ..Default::default()
        })
        .collect();
    out.rotate_left(1);
    Ok(out)
}

/// What [`save`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Saved {
    /// The plan given is stored.
    Stored,
    /// An earlier attempt of this run's scan committed its plan (its pod ended before its exit
    /// reached the Job): that plan stands, with this summary. The run moves on from a committed
    /// plan at once, so workers may copy from it already; a second plan (the tree rescanned,
    /// other shards) under the same names would give their shard numbers other meanings.
    Kept(Box<PlanSummary>),
}

/// Writes the plan (scan pod), unless this run's plan is committed already ([`Saved::Kept`]).
/// Server-side apply makes a retried scan overwrite what an earlier attempt left uncommitted
/// (chunks without chunk 0), and a plan of an older IngestJob of the same name. Until
/// `rbac_wait` has passed, a 403 is taken for a RoleBinding that has not taken effect yet and the
/// call is made again: the operator applies the scan's binding together with its Job.
pub async fn save(
    client: kube::Client,
    owner: &Owner,
    prefix: &str,
    chunks: &[String],
    summary: &PlanSummary,
    rbac_wait: Duration,
) -> Result<Saved> {
    let api: Api<ConfigMap> = Api::namespaced(client, &owner.namespace);
    let first = format!("{prefix}-0");
    let deadline = tokio::time::Instant::now() + rbac_wait;
    match once_bound(deadline, || api.get_metadata_opt(&first)).await {
        Ok(Some(m)) if crate::observe::owned_by(&m.metadata, &owner.uid) => {
            if let Some(kept) = summary_of(&m.metadata) {
                return Ok(Saved::Kept(Box::new(kept)));
            }
        }
        Ok(_) => {}
        // A service account of the user's (`spec.worker.serviceAccountName`) without `get`: the
        // plan is stored as it was before this check existed.
        Err(kube::Error::Api(e)) if e.code == 403 => tracing::warn!(
            chunk = first,
            "cannot read the plan's chunk 0 (forbidden: the scan's service account lacks get on configmaps); storing the plan without checking for an earlier attempt's"
        ),
        Err(e) => return Err(Error::kube(format!("read plan chunk {first}"), e)),
    }
    let pp = PatchParams::apply(SCAN_FIELD_MANAGER).force();
    for cm in chunk_objects(owner, prefix, chunks, summary)? {
        let name = cm.metadata.name.clone().unwrap_or_default();
        let body = Patch::Apply(&cm);
        once_bound(deadline, || api.patch(&name, &pp, &body))
            .await
            .map_err(|e| Error::kube(format!("store plan chunk {name}"), e))?;
    }
    Ok(Saved::Stored)
}

/// `call`, made again while the API server answers 403 and `deadline` is ahead (pausing 20 ms,
/// then twice as long each time, up to a second): the pod's RoleBinding may not have taken effect
/// yet. At the deadline (at once for a past one) a 403 is the answer.
async fn once_bound<T, F, Fut>(deadline: tokio::time::Instant, mut call: F) -> kube::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = kube::Result<T>>,
{
    let mut pause = Duration::from_millis(20);
    loop {
        match call().await {
            Err(kube::Error::Api(e))
                if e.code == 403 && tokio::time::Instant::now() + pause <= deadline =>
            {
                tracing::debug!(error = %e, "forbidden: waiting for the scan's RoleBinding to take effect");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            r => return r,
        }
    }
}

/// The summary on chunk 0's metadata, if the plan is committed.
pub fn summary_of(meta: &ObjectMeta) -> Option<PlanSummary> {
    meta.annotations
        .as_ref()?
        .get(SUMMARY_ANNOTATION)
        .and_then(|s| serde_json::from_str(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            namespace: "ns".into(),
            name: "ij".into(),
            uid: "u-1".into(),
            run: 2,
        }
    }

    fn summary(chunks: u32) -> PlanSummary {
        PlanSummary {
            chunks,
            shards: 10,
            shards_per_server: vec![5, 5],
            totals: Totals {
                files: 5,
                directories: 1,
                bytes: 9,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn chunk_zero_is_last_and_carries_the_summary() {
        let chunks = vec!["{\"a\":".to_owned(), "1}".to_owned(), " ".to_owned()];
        let cms = chunk_objects(&owner(), "ij-r2-plan", &chunks, &summary(3)).unwrap();
        let names: Vec<_> = cms
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["ij-r2-plan-1", "ij-r2-plan-2", "ij-r2-plan-0"]);
        assert_eq!(summary_of(&cms[2].metadata), Some(summary(3)));
        assert_eq!(summary_of(&cms[0].metadata), None);
        assert_eq!(cms[2].data.as_ref().unwrap()["part-00000"], "{\"a\":");
        assert_eq!(cms[1].data.as_ref().unwrap()["part-00002"], " ");
        assert_eq!(
            cms[0].metadata.owner_references.as_ref().unwrap()[0].uid,
            "u-1"
        );
    }

    #[test]
    fn oversized_or_miscounted_chunks_are_refused() {
        let err = chunk_objects(
            &owner(),
            "p",
            &["x".repeat(MAX_CHUNK_BYTES + 1)],
            &summary(1),
        )
        .unwrap_err();
        assert!(err.to_string().contains("chunk 0 has"), "{err}");
        let err = chunk_objects(&owner(), "p", &["x".into()], &summary(2)).unwrap_err();
        assert!(err.to_string().contains("summary says 2"), "{err}");
    }
}
