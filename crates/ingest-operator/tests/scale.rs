//! Scale check: a 10,000-shard, 500-worker job keeps every object the operator and its pods write under the
//! 1 MiB object limit, the status small, and status writes bounded. Run with `--nocapture` to see the figures.

mod common;

use std::time::Duration;

use common::*;
use ingest_api::report::{PodProgress, PodResult};
use ingest_api::{FileFailure, IngestJobStatus, Totals, VerificationCounts};
use ingest_operator::claims::Registry;
use ingest_operator::desired::desired;
use ingest_operator::plan_store::{self, Owner};
use ingest_operator::reconcile::{WriteDecision, decide_write};
use ingest_operator::stage::{Stage, stage};
use ingest_operator::status::compute;
use ingest_path::RelPath;
use ingest_plan::format::{
    CostModel, PLAN_API_VERSION, PLAN_KIND, Plan, Prediction, Shard, ShardScope,
};
use kube::ResourceExt;

const MIB: usize = 1024 * 1024;
const SHARDS: u64 = 10_000;
const WORKERS: u32 = 500;

fn rel(s: &str) -> RelPath {
    RelPath::from_bytes(s.as_bytes().to_vec()).unwrap()
}

/// A plan shaped like the planner's: each shard a name range of a deep directory plus a subtree.
fn big_plan(servers: &[String]) -> Plan {
    let shards = (0..SHARDS as u32)
        .map(|i| Shard {
            id: i,
            cost: 1.0 + f64::from(i),
            files: 10_000,
            bytes: 1 << 30,
            server: i % servers.len() as u32,
            worker: i % WORKERS,
            scopes: vec![
                ShardScope::Entries {
                    dir: rel(&format!(
                        "projects/genomics/2019/sequencer-{:03}/run-{i:06}",
                        i % 97
                    )),
                    from: Some(rel(&format!("sample-{:08}.fastq.gz", i * 7))),
                    to: Some(rel(&format!("sample-{:08}.fastq.gz", i * 7 + 7))),
                    subtrees: true,
                },
                ShardScope::Tree {
                    dir: rel(&format!(
                        "projects/genomics/2019/reference/chr{:02}/part-{i:06}",
                        i % 23
                    )),
                },
            ],
        })
        .collect();
    Plan {
        api_version: PLAN_API_VERSION.into(),
        kind: PLAN_KIND.into(),
        requested_shards: SHARDS as u32,
        cost_model: CostModel::default(),
        servers: servers.to_vec(),
        workers: WORKERS,
        totals: Default::default(),
        prediction: Prediction::default(),
        scan_errors: Vec::new(),
        filter: Default::default(),
        shards,
    }
}

#[test]
fn ten_thousand_shards_five_hundred_workers_stay_under_the_object_limit() {
    for n_servers in [3usize, 10] {
        let mut ij = fixture("three-ips.yaml");
        let servers: Vec<String> = (0..n_servers)
            .map(|i| format!("10.1.1.{}", 101 + i))
            .collect();
        ij.spec.destination.nfs.servers = servers.clone();
        ij.spec.destination.nfs.mount_options = Some(vec![
            "hard".into(),
            "proto=tcp".into(),
            "nconnect=16".into(),
            "vers=3".into(),
        ]);
        ij.spec.workers = Some(WORKERS);
        ij.spec.shards.target = Some(SHARDS as u32);

        // The plan the scan pod stores.
        let plan = big_plan(&servers);
        let json_len = plan.to_json().len();
        // What the scan CLI stores: the plan's JSON in pieces, and per-server shard counts.
        let chunks = plan.to_chunks(plan_store::MAX_CHUNK_BYTES).unwrap();
        let owner = Owner {
            namespace: "ingest".into(),
            name: ij.name_any(),
            uid: ij.uid().unwrap(),
            run: 0,
        };
        let totals = Totals {
            files: SHARDS * 10_000,
            directories: 1_000_000,
            bytes: SHARDS << 30,
            ..Default::default()
        };
        let shards_per_server = (0..n_servers as u32)
            .map(|s| plan.shards_of_server(s).count() as u64)
            .collect();
        let summary = plan_store::PlanSummary {
            chunks: chunks.len() as u32,
            shards: SHARDS,
            shards_per_server,
            totals: totals.clone(),
            ..Default::default()
        };
        let maps = plan_store::chunk_objects(&owner, "media-r0-plan", &chunks, &summary).unwrap();
        let sizes: Vec<usize> = maps
            .iter()
            .map(|m| serde_json::to_vec(m).unwrap().len())
            .collect();
        let biggest_map = *sizes.iter().max().unwrap();
        assert!(biggest_map < MIB, "plan ConfigMap of {biggest_map} bytes");
        let summary_len = serde_json::to_string(&summary).unwrap().len();
        assert!(
            summary_len < 32 * 1024,
            "summary annotation of {summary_len} bytes (annotations total <= 256 KiB)"
        );
        // Mounted pieces join back into the same plan (what `worker --plan DIR` does).
        assert_eq!(Plan::from_chunks(&chunks).unwrap(), plan);

        // Every child the operator applies, in the stage with the most children (both passes'
        // Jobs). The passes: the copy completed; the verify too, its first shards (one per server)
        // with a full failure list of long paths each.
        let mut obs = scanned(&ij, SHARDS, totals, false);
        let done = |j: &k8s_openapi::api::batch::v1::Job| observed_job(j, true, false, "", "", 0);
        add_pass_job(&ij, &mut obs, "copy", done);
        add_pass_job(&ij, &mut obs, "verify", done);
        let mut verify = PassScript::all_done(
            SHARDS,
            PodResult {
                files: 5,
                bytes: 1,
                verification: Some(VerificationCounts {
                    checked: 1,
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        for server in 0..n_servers as u32 {
            verify = verify.with(
                server,
                PodResult {
                    files: 5,
                    bytes: 1,
                    failed: 1000,
                    verification: Some(VerificationCounts {
                        checked: 1,
                        ..Default::default()
                    }),
                    failures: (0..1000)
                        .map(|i| FileFailure {
                            path: format!("{}/{i}", "deep/".repeat(300)),
                            reason: "x".repeat(600),
                        })
                        .collect(),
                    ..Default::default()
                },
            );
        }
        let v = views(
            &ij,
            SHARDS,
            Some(&PassScript::all_done(SHARDS, PodResult::default())),
            Some(&verify),
        );
        let s = stage(&ij, &obs, &v);
        assert!(matches!(s, Stage::Done { .. }), "{s:?}");
        let children = desired(&ij, &s, &settings()).unwrap();
        let biggest_child = children.iter().map(|c| c.encoded_len()).max().unwrap();
        assert!(
            biggest_child < 64 * 1024,
            "children stay small: {biggest_child} bytes"
        );
        for role in ["copy", "verify"] {
            let jobs: Vec<_> = jobs_of(&children)
                .into_iter()
                .filter(|j| j.labels()["ingest.vfxt.dev/role"] == role)
                .collect();
            assert_eq!(jobs.len(), 1, "one Job per pass");
            let spec = jobs[0].spec.as_ref().unwrap();
            // One index per worker: the 10,000 shards are claimed, not dealt to indexes.
            assert_eq!(
                (spec.parallelism, spec.completions),
                (Some(WORKERS as i32), Some(WORKERS as i32))
            );
        }

        // The status at its largest: every server, a full failure list with long paths, verification.
        let st: IngestJobStatus = compute(&ij, &obs, &s, &v, at(100));
        let status_len = serde_json::to_vec(&st).unwrap().len();
        assert!(status_len < 64 * 1024, "status of {status_len} bytes");
        assert_eq!(st.servers.len(), n_servers);
        // The pass keeps as many failures as the status lists (20), and counts the rest.
        assert!(
            !st.failures.is_empty() && st.failures.len() <= ingest_api::MAX_LISTED_FAILURES,
            "{}",
            st.failures.len()
        );
        assert_eq!(
            st.failed_files,
            1000 * n_servers as u64,
            "every failure is counted even when not listed"
        );

        let progress_len = serde_json::to_string(&PodProgress {
            files: u64::MAX,
            bytes: u64::MAX,
            failed: u64::MAX,
            directories: 0,
            checked: 0,
            at: i64::MAX,
        })
        .unwrap()
        .len();
        println!(
            "servers={n_servers} shards={SHARDS} workers={WORKERS}: plan JSON {json_len} B in {} ConfigMaps (largest {biggest_map} B, \
             summary annotation {summary_len} B); {} children (largest {biggest_child} B); \
             status {status_len} B; progress in a claims message <= {progress_len} B",
            maps.len(),
            children.len()
        );
    }
}

#[test]
fn a_fragmented_pass_checkpoint_of_ten_thousand_shards_keeps_the_status_small() {
    // The worst case for `status.checkpoint`: every other shard completed and the rest lost, so
    // neither id list compresses into ranges.
    let mut ij = fixture("three-ips.yaml");
    ij.spec.workers = Some(WORKERS);
    ij.spec.failure_policy.retries_per_shard = 0;
    let totals = Totals {
        files: SHARDS * 10_000,
        directories: 1_000_000,
        bytes: SHARDS << 30,
        ..Default::default()
    };
    let mut obs = scanned(&ij, SHARDS, totals, false);
    add_pass_job(&ij, &mut obs, "copy", |j| {
        observed_job(j, false, false, "", "", WORKERS as i32)
    });
    let reg = Registry::default();
    let script = PassScript::done((0..SHARDS as u32).step_by(2), PodResult::default())
        .lost((1..SHARDS as u32).step_by(2).filter(|s| s % 1000 != 1));
    drive(&reg, &ij, "copy", SHARDS, &script);
    let v = reg.views(&ij);
    let s = stage(&ij, &obs, &v);
    assert!(matches!(s, Stage::Copy(..)), "{s:?}");
    let st = compute(&ij, &obs, &s, &v, at(100));
    let cp = st.checkpoint.as_ref().unwrap().copy.as_ref().unwrap();
    assert_eq!(
        ingest_job::indexes::count(&cp.completed),
        SHARDS / 2,
        "every completed shard is in the checkpoint"
    );
    let status_len = serde_json::to_vec(&st).unwrap().len();
    println!(
        "checkpoint of {SHARDS} alternating shards: completed {} B, lost {} B; status {status_len} B",
        cp.completed.len(),
        cp.lost.len()
    );
    assert!(status_len < 64 * 1024, "status of {status_len} bytes");
}

#[test]
fn status_writes_per_job_are_bounded_by_the_interval() {
    // One hour of copying with a reconcile every 2 s (the controller's debounce) and counters moving on every
    // reconcile: writes are bounded by interval, not by pod count or event rate.
    let interval = Duration::from_secs(5);
    let mut written: Option<IngestJobStatus> = None;
    let mut last_write: Option<u64> = None;
    let mut writes = 0;
    for t in (0..3600u64).step_by(2) {
        let mut st = IngestJobStatus {
            phase: Some(ingest_api::Phase::Copying),
            ..Default::default()
        };
        st.progress = Some(ingest_api::Progress {
            files: t * 1000,
            ..Default::default()
        });
        let since = last_write.map(|w| Duration::from_secs(t - w));
        if decide_write(written.as_ref(), &st, since, interval) == WriteDecision::Now {
            writes += 1;
            written = Some(st);
            last_write = Some(t);
        }
    }
    println!(
        "status writes in one hour of copying: {writes} (bound {})",
        3600 / 5 + 1
    );
    assert!(writes <= 3600 / 5 + 1, "{writes} writes");
    assert!(
        writes >= 3600 / 6,
        "progress still reaches the status: {writes} writes"
    );
}
