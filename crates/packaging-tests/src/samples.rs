//! IngestJobs in the states a GitOps tool meets, each with the status the operator computes for it
//! (`ingest_operator::status`) and the verdicts expected from Argo CD (`deploy/argocd/health.lua`) and from
//! kstatus (Flux's health checks). The Lua test and `tests/packaging/check.sh` (kstatus, in Go) judge the same
//! objects.

use ingest_api::validate::validate_spec;
use ingest_api::{FailureAction, IngestJob, IngestJobSpec, Totals};
use ingest_operator::observe::Observed;
use ingest_operator::plan_store::PlanSummary;
use ingest_operator::stage::{Stage, layout};
use ingest_operator::status::{compute, invalid};
use k8s_openapi::jiff::Timestamp;

use crate::repo_root;

/// One object and what each tool should say about it.
pub struct Sample {
    /// Short name of the situation.
    pub name: &'static str,
    /// The IngestJob, status included.
    pub object: IngestJob,
    /// Argo CD health status from health.lua.
    pub argo: &'static str,
    /// Text health.lua's message must contain.
    pub argo_message: &'static str,
    /// kstatus status (`Current`, `InProgress`, `Failed`).
    pub kstatus: &'static str,
}

fn job() -> IngestJob {
    let text = std::fs::read_to_string(repo_root().join("examples/vfxt-3-nodes.yaml"))
        .expect("examples/vfxt-3-nodes.yaml");
    let mut ij: IngestJob = serde_yaml::from_str(&text).expect("the example is an IngestJob");
    ij.metadata.uid = Some("0b6f1c2e-uid".into());
    ij.metadata.generation = Some(3);
    ij
}

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("a valid time")
}

fn plan(spec: &IngestJobSpec) -> PlanSummary {
    let n = spec.destination.nfs.servers.len() as u64;
    PlanSummary {
        chunks: 1,
        shards: 4 * n,
        shards_per_server: vec![4; n as usize],
        totals: Totals {
            files: 1200,
            directories: 40,
            bytes: 5 << 30,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn with_status(mut ij: IngestJob, stage: &Stage) -> IngestJob {
    ij.status = Some(compute(
        &ij,
        &Observed::default(),
        stage,
        &ingest_operator::claims::Views::default(),
        now(),
    ));
    ij
}

fn done(ij: &IngestJob, failed_shards: u64) -> Stage {
    let plan = plan(&ij.spec);
    Stage::Done {
        layout: layout(&ij.spec, &plan),
        plan,
        failed_shards,
    }
}

/// Every sample.
pub fn samples() -> Vec<Sample> {
    let mut out = Vec::new();
    let mut add = |name, object, argo, argo_message, kstatus| {
        out.push(Sample {
            name,
            object,
            argo,
            argo_message,
            kstatus,
        })
    };

    add(
        "unseen",
        job(),
        "Progressing",
        "Waiting for the vfxt-ingest operator",
        "Current",
    );
    add(
        "scanning",
        with_status(job(), &Stage::Scan),
        "Progressing",
        "",
        "InProgress",
    );
    let ij = job();
    let p = plan(&ij.spec);
    let copying = with_status(ij.clone(), &Stage::Copy(p.clone(), layout(&ij.spec, &p)));
    add("copying", copying, "Progressing", "Copying", "InProgress");
    let mut ij = job();
    ij.spec.suspend = true;
    let p = plan(&ij.spec);
    let suspended = with_status(ij.clone(), &Stage::Copy(p.clone(), layout(&ij.spec, &p)));
    add(
        "suspended",
        suspended,
        "Suspended",
        "suspended (spec.suspend)",
        // Ready=False: not done, so a Flux health check keeps waiting (until its timeout).
        "InProgress",
    );
    let ij = job();
    let stage = done(&ij, 0);
    add(
        "succeeded",
        with_status(ij, &stage),
        "Healthy",
        "",
        "Current",
    );
    let mut ij = job();
    ij.spec.failure_policy.action = FailureAction::FailJob;
    let stage = done(&ij, 1);
    add(
        "shard-failed",
        with_status(ij, &stage),
        "Degraded",
        "ShardFailed",
        "Failed",
    );
    let scan_failed = with_status(
        job(),
        &Stage::ScanFailed("scan pod exited 2: source not mounted".into()),
    );
    add(
        "scan-failed",
        scan_failed,
        "Degraded",
        "source not mounted",
        "Failed",
    );
    let mut ij = job();
    ij.spec.destination.nfs.path = "relative/path".into();
    let errors = validate_spec(&ij.spec).expect_err("a relative export path is invalid");
    ij.status = Some(invalid(&ij, &errors, now()));
    add(
        "invalid-spec",
        ij,
        "Degraded",
        "spec.destination.nfs.path",
        "Failed",
    );
    let ij = job();
    let stage = done(&ij, 0);
    let mut ij = with_status(ij, &stage);
    // The user bumped spec.run; the operator has not looked yet.
    ij.metadata.generation = Some(4);
    add(
        "older-generation",
        ij,
        "Progressing",
        "generation 4",
        "InProgress",
    );
    out
}
