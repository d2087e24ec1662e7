//! Where the scan pod leaves the plan for the workers: ConfigMaps `<prefix>-0..n` owned by the IngestJob (deleted
//! with it). Chunk 0 holds the plan header (the plan without its shards) under [`HEADER_KEY`]; chunks 1..n hold
//! consecutive shard ranges as a JSON array under [`SHARDS_KEY`], about [`TARGET_CHUNK_BYTES`] each.
//!
//! Shard-aligned chunks let a worker pod, which copies exactly one shard, read two small objects instead of the
//! whole plan: with 10,000 pods over a run, that is the difference between megabytes and gigabytes read from
//! the API server. Chunk 0 is written last and carries [`SUMMARY_ANNOTATION`] (chunk count, shard count,
//! totals, first shard of each chunk): its presence is the commit marker, and the operator reads the summary
//! from object metadata alone, never the plan data.

use std::collections::BTreeMap;

use ingest_api::Totals;
use ingest_api::constants::labels;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Data key of the plan header in chunk 0.
pub const HEADER_KEY: &str = "header.json";
/// Data key of a shard range (a JSON array) in chunks 1..n.
pub const SHARDS_KEY: &str = "shards.json";
/// Annotation on chunk 0 with the [`PlanSummary`] JSON.
pub const SUMMARY_ANNOTATION: &str = "ingest.vfxt.dev/plan-summary";
/// Shards are packed into chunks of about this size: small enough that a pod reading its shard's chunk costs
/// little, large enough that a 10,000-shard plan needs only tens of objects.
pub const TARGET_CHUNK_BYTES: usize = 64 * 1024;
/// Hard limit of one chunk's text. Objects are limited to 1 MiB, and the text travels JSON-escaped (about 12%
/// larger for plan JSON), so 768 KiB keeps even the escaped request under 1 MiB with metadata.
pub const MAX_CHUNK_BYTES: usize = 768 * 1024;
/// Field manager the scan pod uses (distinct from the operator's, which never writes plan data).
pub const SCAN_FIELD_MANAGER: &str = "vfxt-ingest-scan";

/// What the operator and workers need to know about a stored plan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    /// Number of ConfigMaps, header chunk included.
    pub chunks: u32,
    /// Number of shards in the plan.
    pub shards: u64,
    /// What the scan found.
    pub totals: Totals,
    /// Index of the first shard in each shard chunk (chunk `k + 1` starts at `chunk_starts[k]`).
    #[serde(default)]
    pub chunk_starts: Vec<u64>,
}

impl PlanSummary {
    /// The chunk (1-based ConfigMap number) holding `shard`, and the shard's position in it.
    pub fn locate(&self, shard: u64) -> Option<(u32, usize)> {
        if shard >= self.shards {
            return None;
        }
        let k = self
            .chunk_starts
            .partition_point(|s| *s <= shard)
            .checked_sub(1)?;
        Some((k as u32 + 1, (shard - self.chunk_starts[k]) as usize))
    }
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

/// Packs shard JSON texts into consecutive ranges of about `target` bytes (pure). Returns each range's JSON
/// array text and first shard index. A shard larger than [`MAX_CHUNK_BYTES`] is an error naming it.
pub fn pack(shards: &[String], target: usize) -> Result<(Vec<String>, Vec<u64>), String> {
    let mut texts = Vec::new();
    let mut starts = Vec::new();
    let mut cur = String::new();
    for (i, s) in shards.iter().enumerate() {
        if s.len() + 2 > MAX_CHUNK_BYTES {
            return Err(format!(
                "shard {i} is {} bytes of JSON; one shard must fit {MAX_CHUNK_BYTES} bytes",
                s.len()
            ));
        }
        if !cur.is_empty() && cur.len() + s.len() + 2 > target.min(MAX_CHUNK_BYTES) {
            cur.push(']');
            texts.push(std::mem::take(&mut cur));
        }
        if cur.is_empty() {
            cur.push('[');
            starts.push(i as u64);
        } else {
            cur.push(',');
        }
        cur.push_str(s);
    }
    if !cur.is_empty() {
        cur.push(']');
        texts.push(cur);
    }
    Ok((texts, starts))
}

/// The ConfigMaps that store a plan (pure; [`save`] writes them). Chunk 0 comes LAST in the returned list.
pub fn chunk_objects(
    owner: &Owner,
    prefix: &str,
    header: &str,
    shards: &[String],
    totals: &Totals,
) -> Result<(Vec<ConfigMap>, PlanSummary)> {
    let plan_err = |message: String| Error::Plan {
        prefix: prefix.to_owned(),
        message,
    };
    if header.len() > MAX_CHUNK_BYTES {
        return Err(plan_err(format!(
            "the plan header has {} bytes; at most {MAX_CHUNK_BYTES} fit a ConfigMap",
            header.len()
        )));
    }
    let (texts, chunk_starts) = pack(shards, TARGET_CHUNK_BYTES).map_err(plan_err)?;
    let summary = PlanSummary {
        chunks: texts.len() as u32 + 1,
        shards: shards.len() as u64,
        totals: totals.clone(),
        chunk_starts,
    };
    let summary_json = serde_json::to_string(&summary).map_err(|source| Error::Serde {
        what: "plan summary",
        source,
    })?;
    let cm = |k: usize, key: &str, text: String| ConfigMap {
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
            annotations: (k == 0)
                .then(|| BTreeMap::from([(SUMMARY_ANNOTATION.to_owned(), summary_json.clone())])),
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
        data: Some(BTreeMap::from([(key.to_owned(), text)])),
        ..Default::default()
    };
    let mut out: Vec<ConfigMap> = texts
        .into_iter()
        .enumerate()
        .map(|(i, t)| cm(i + 1, SHARDS_KEY, t))
        .collect();
    out.push(cm(0, HEADER_KEY, header.to_owned()));
    Ok((out, summary))
}

/// Writes the plan (scan pod): `header` is the plan without shards, `shards` one JSON text per shard in plan
/// order. Server-side apply makes a retried scan overwrite its earlier attempt.
pub async fn save(
    client: kube::Client,
    owner: &Owner,
    prefix: &str,
    header: &str,
    shards: &[String],
    totals: &Totals,
) -> Result<PlanSummary> {
    let api: Api<ConfigMap> = Api::namespaced(client, &owner.namespace);
    let pp = PatchParams::apply(SCAN_FIELD_MANAGER).force();
    let (maps, summary) = chunk_objects(owner, prefix, header, shards, totals)?;
    for cm in maps {
        let name = cm.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &pp, &Patch::Apply(&cm))
            .await
            .map_err(|e| Error::kube(format!("store plan chunk {name}"), e))?;
    }
    Ok(summary)
}

/// The summary on chunk 0's metadata, if the plan is committed.
pub fn summary_of(meta: &ObjectMeta) -> Option<PlanSummary> {
    meta.annotations
        .as_ref()?
        .get(SUMMARY_ANNOTATION)
        .and_then(|s| serde_json::from_str(s).ok())
}

async fn get_text(api: &Api<ConfigMap>, prefix: &str, k: u32, key: &str) -> Result<ConfigMap> {
    let cm = api
        .get(&format!("{prefix}-{k}"))
        .await
        .map_err(|e| Error::kube(format!("read plan {prefix}-{k}"), e))?;
    if cm.data.as_ref().and_then(|d| d.get(key)).is_none() {
        return Err(Error::Plan {
            prefix: prefix.to_owned(),
            message: format!("{prefix}-{k} has no {key}"),
        });
    }
    Ok(cm)
}

/// Reads the header and the JSON text of one shard (worker pods): two GETs whatever the plan size.
pub async fn load_shard(
    client: kube::Client,
    namespace: &str,
    prefix: &str,
    shard: u64,
) -> Result<(PlanSummary, String, String)> {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let first = get_text(&api, prefix, 0, HEADER_KEY).await?;
    let summary = summary_of(&first.metadata).ok_or_else(|| Error::Plan {
        prefix: prefix.to_owned(),
        message: "chunk 0 has no summary; the scan did not finish".into(),
    })?;
    let header = first
        .data
        .and_then(|mut d| d.remove(HEADER_KEY))
        .unwrap_or_default();
    let (k, pos) = summary.locate(shard).ok_or_else(|| Error::Plan {
        prefix: prefix.to_owned(),
        message: format!(
            "shard {shard} is not in the plan ({} shards)",
            summary.shards
        ),
    })?;
    let cm = get_text(&api, prefix, k, SHARDS_KEY).await?;
    let text = cm
        .data
        .and_then(|mut d| d.remove(SHARDS_KEY))
        .unwrap_or_default();
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&text).map_err(|source| Error::Serde {
            what: "plan shard chunk",
            source,
        })?;
    let one = list.get(pos).ok_or_else(|| Error::Plan {
        prefix: prefix.to_owned(),
        message: format!("{prefix}-{k} is shorter than its summary says"),
    })?;
    let shard_json = serde_json::to_string(one).map_err(|source| Error::Serde {
        what: "plan shard",
        source,
    })?;
    Ok((summary, header, shard_json))
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

    fn totals() -> Totals {
        Totals {
            files: 5,
            directories: 1,
            bytes: 9,
        }
    }

    #[test]
    fn header_chunk_is_last_and_its_summary_locates_every_shard() {
        let shards: Vec<String> = (0..1000)
            .map(|i| format!("{{\"id\":{i},\"pad\":\"{}\"}}", "x".repeat(200)))
            .collect();
        let (cms, summary) =
            chunk_objects(&owner(), "ij-r2-plan", "{\"h\":1}", &shards, &totals()).unwrap();
        assert_eq!(
            cms.last().unwrap().metadata.name.as_deref(),
            Some("ij-r2-plan-0")
        );
        assert_eq!(
            summary_of(&cms.last().unwrap().metadata),
            Some(summary.clone())
        );
        assert!(summary_of(&cms[0].metadata).is_none());
        assert!(
            summary.chunks > 2,
            "1000 × 220 B spans several {TARGET_CHUNK_BYTES} B chunks"
        );
        for (i, s) in shards.iter().enumerate() {
            let (k, pos) = summary.locate(i as u64).unwrap();
            let text = &cms[k as usize - 1].data.as_ref().unwrap()[SHARDS_KEY];
            let list: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
            assert_eq!(
                list[pos],
                serde_json::from_str::<serde_json::Value>(s).unwrap()
            );
        }
        assert!(summary.locate(1000).is_none());
        assert!(cms.iter().all(|c| {
            c.data
                .as_ref()
                .unwrap()
                .values()
                .all(|t| t.len() <= TARGET_CHUNK_BYTES)
        }));
    }

    #[test]
    fn oversized_shard_is_refused_naming_it() {
        let err = chunk_objects(
            &owner(),
            "p",
            "{}",
            &["1".into(), "x".repeat(MAX_CHUNK_BYTES)],
            &totals(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("shard 1"), "{err}");
    }

    #[test]
    fn empty_plan_has_only_the_header() {
        let (cms, summary) = chunk_objects(&owner(), "p", "{}", &[], &totals()).unwrap();
        assert_eq!((cms.len(), summary.chunks, summary.shards), (1, 1, 0));
    }
}
