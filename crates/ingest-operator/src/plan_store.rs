//! Where the plan is left for the workers: ConfigMaps `<prefix>-0..n`, owned by the IngestJob (deleted
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
//!
//! The scan pod has no API rights: it sends the pieces ([`PlanPart`]) to the operator's claims
//! endpoint, as a worker sends its claims, and the operator writes them ([`store_part`]). So no
//! IngestJob needs a Role or RoleBinding of its own (the operator would need rights to grant them,
//! and the API server's escalation check made the binding the slowest write of a job's start), and
//! a scan pod can write only its own run's plan, where a Role could not narrow `create` by name.

use ingest_api::Totals;
use ingest_api::constants::labels;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Annotation on chunk 0 with the [`PlanSummary`] JSON.
pub const SUMMARY_ANNOTATION: &str = "ingest.vfxt.dev/plan-summary";
/// Where worker pods find the plan's pieces.
pub const PLAN_MOUNT: &str = "/ingest/plan";
/// Largest piece of plan text. Objects are limited to 1 MiB, and the text travels JSON-escaped (about 12% larger
/// for plan JSON), so 768 KiB keeps even the escaped request under 1 MiB with metadata.
pub const MAX_CHUNK_BYTES: usize = 768 * 1024;
/// Field manager of the plan's writes: the operator's, on the scan pod's behalf (distinct from the
/// one of the objects it builds, so that the plan's fields are never taken for those).
pub const PLAN_FIELD_MANAGER: &str = "vfxt-ingest-scan";

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

/// One piece of a plan, as the scan pod sends it to the operator (`POST`
/// [`ingest_api::claims::PLAN_PATH`], authenticated as a claims message is): the operator stores
/// it ([`store_part`]). The scan sends its pieces in the order [`parts`] gives, chunk 0 (with the
/// summary: the commit) last.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PlanPart {
    /// The IngestJob's namespace.
    pub namespace: String,
    /// The IngestJob's name.
    pub job: String,
    /// The IngestJob's uid: the pieces' owner.
    pub uid: String,
    /// `spec.run` the scan was started for.
    pub run: i64,
    /// The scan's pod name; must match the pod its token is bound to.
    pub worker: String,
    /// Which piece: data key [`chunk_key`] of ConfigMap `<prefix>-<part>`.
    pub part: u32,
    /// How many pieces the plan has.
    pub parts: u32,
    /// The piece of the plan's JSON text.
    pub text: String,
    /// Chunk 0 only: what the operator reads of the plan; its arrival commits the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<PlanSummary>,
}

impl PlanPart {
    /// The IngestJob the piece says it belongs to.
    pub fn owner(&self) -> Owner {
        Owner {
            namespace: self.namespace.clone(),
            name: self.job.clone(),
            uid: self.uid.clone(),
            run: self.run,
        }
    }

    /// The sender, for the claims endpoint's authentication: a pod of the run's scan Job.
    pub fn sender(&self) -> crate::token::Sender<'_> {
        crate::token::Sender {
            namespace: &self.namespace,
            job: &self.job,
            run: self.run,
            role: ingest_api::constants::labels::ROLE_SCAN,
            worker: &self.worker,
        }
    }
}

/// The pieces the scan pod `worker` sends for `chunks` (pure): chunk 0, with `summary`, LAST.
pub fn parts(
    owner: &Owner,
    worker: &str,
    chunks: &[String],
    summary: &PlanSummary,
) -> Vec<PlanPart> {
    let mut out: Vec<PlanPart> = chunks
        .iter()
        .enumerate()
        .map(|(k, text)| PlanPart {
            namespace: owner.namespace.clone(),
            job: owner.name.clone(),
            uid: owner.uid.clone(),
            run: owner.run,
            worker: worker.to_owned(),
            part: k as u32,
            parts: chunks.len() as u32,
            text: text.clone(),
            summary: (k == 0).then(|| summary.clone()),
        })
        .collect();
    out.rotate_left(1);
    out
}

/// The ConfigMaps that store `chunks` (pure), chunk 0 LAST: [`chunk_object`] of each of [`parts`].
pub fn chunk_objects(
    owner: &Owner,
    prefix: &str,
    chunks: &[String],
    summary: &PlanSummary,
) -> Result<Vec<ConfigMap>> {
    if chunks.is_empty() {
        return Err(Error::Plan {
            prefix: prefix.to_owned(),
            message: "no chunks given".into(),
        });
    }
    parts(owner, "", chunks, summary)
        .iter()
        .map(|p| chunk_object(owner, prefix, p))
        .collect()
}

/// The ConfigMap that stores `part` under `prefix` (pure; [`store_part`] writes it). Refuses a
/// piece that does not fit one, or that disagrees with itself (a number past `parts`, a summary
/// on any piece but chunk 0, none on chunk 0, one that counts other than `parts` pieces).
pub fn chunk_object(owner: &Owner, prefix: &str, part: &PlanPart) -> Result<ConfigMap> {
    let plan_err = |message: String| Error::Plan {
        prefix: prefix.to_owned(),
        message,
    };
    let k = part.part;
    if k >= part.parts {
        return Err(plan_err(format!(
            "chunk {k} given of a plan of {} chunks",
            part.parts
        )));
    }
    if part.text.len() > MAX_CHUNK_BYTES {
        return Err(plan_err(format!(
            "chunk {k} has {} bytes; at most {MAX_CHUNK_BYTES} fit a ConfigMap",
            part.text.len()
        )));
    }
    let summary = match (&part.summary, k) {
        (Some(s), 0) if s.chunks == part.parts => Some(s),
        (Some(s), 0) => {
            return Err(plan_err(format!(
                "{} chunks given, summary says {}",
                part.parts, s.chunks
            )));
        }
        (None, 0) => return Err(plan_err("chunk 0 comes without the summary".into())),
        (Some(_), _) => return Err(plan_err(format!("chunk {k} carries a summary"))),
        (None, _) => None,
    };
    let summary_json = summary
        .map(serde_json::to_string)
        .transpose()
        .map_err(|source| Error::Serde {
            what: "plan summary",
            source,
        })?;
    Ok(ConfigMap {
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
            annotations: summary_json
                .map(|json| BTreeMap::from([(SUMMARY_ANNOTATION.to_owned(), json)])),
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
        data: Some(BTreeMap::from([(chunk_key(k as usize), part.text.clone())])),
        ..Default::default()
    })
}

/// What [`store_part`] did: the scan pod's answer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum Saved {
    /// The piece given is stored.
    Stored,
    /// An earlier attempt of this run's scan committed its plan (its pod ended before its exit
    /// reached the Job): that plan stands, with this summary. The run moves on from a committed
    /// plan at once, so workers may copy from it already; a second plan (the tree rescanned,
    /// other shards) under the same names would give their shard numbers other meanings.
    Kept(Box<PlanSummary>),
}

/// Why [`store_part`] did not store a piece.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The piece names no IngestJob of the operator's (gone, another uid) or not its current
    /// run: nothing the scan can do about it.
    #[error("{0}")]
    NotThisRun(String),
    /// The piece itself is wrong ([`chunk_object`]).
    #[error(transparent)]
    Bad(Error),
    /// The API server failed: the scan asks again.
    #[error(transparent)]
    Api(Error),
}

/// Stores one piece of a scan pod's plan (the operator, on the scan's behalf), unless this run's
/// plan is committed already ([`Saved::Kept`]). The piece must belong to the current run of an
/// IngestJob with the uid it names. Server-side apply makes a retried scan overwrite what an
/// earlier attempt left uncommitted (chunks without chunk 0), and a plan of an older IngestJob
/// of the same name.
pub async fn store_part(client: kube::Client, part: &PlanPart) -> Result<Saved, Refused> {
    let owner = part.owner();
    let prefix = crate::names::plan_prefix_of(&owner.name, owner.run);
    let cm = chunk_object(&owner, &prefix, part).map_err(Refused::Bad)?;
    let jobs: Api<ingest_api::IngestJob> = Api::namespaced(client.clone(), &owner.namespace);
    let ij = jobs
        .get_opt(&owner.name)
        .await
        .map_err(|e| Refused::Api(Error::kube(format!("read IngestJob {}", owner.name), e)))?;
    match ij {
        Some(ij) if ij.metadata.uid.as_deref() == Some(&owner.uid) && ij.spec.run == owner.run => {}
        Some(ij) if ij.metadata.uid.as_deref() == Some(&owner.uid) => {
            return Err(Refused::NotThisRun(format!(
                "IngestJob {}/{} is at run {}, not {}",
                owner.namespace, owner.name, ij.spec.run, owner.run
            )));
        }
        _ => {
            return Err(Refused::NotThisRun(format!(
                "no IngestJob {}/{} with uid {}",
                owner.namespace, owner.name, owner.uid
            )));
        }
    }
    let api: Api<ConfigMap> = Api::namespaced(client, &owner.namespace);
    let first = format!("{prefix}-0");
    let committed = api
        .get_metadata_opt(&first)
        .await
        .map_err(|e| Refused::Api(Error::kube(format!("read plan chunk {first}"), e)))?;
    if let Some(m) = committed
        && crate::observe::owned_by(&m.metadata, &owner.uid)
        && let Some(kept) = summary_of(&m.metadata)
    {
        return Ok(Saved::Kept(Box::new(kept)));
    }
    let name = cm.metadata.name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(PLAN_FIELD_MANAGER).force(),
        &Patch::Apply(&cm),
    )
    .await
    .map_err(|e| Refused::Api(Error::kube(format!("store plan chunk {name}"), e)))?;
    Ok(Saved::Stored)
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
