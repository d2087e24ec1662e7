//! The Argo CD health check (`deploy/argocd/health.lua`) judges statuses the operator really writes: each case
//! builds the IngestJob status with `ingest_operator::status` (the code the operator runs), hands the object to
//! the Lua script the way Argo CD does (global `obj`) and checks the verdict. Runs Debian's `lua5.4`
//! (`apt-get install lua5.4`); Argo CD embeds Lua 5.1, and the script avoids everything 5.1 lacks.

use std::process::Command;

use ingest_api::validate::validate_spec;
use ingest_api::{FailureAction, IngestJob, IngestJobSpec, Phase, Totals};
use ingest_operator::observe::Observed;
use ingest_operator::plan_store::PlanSummary;
use ingest_operator::stage::{Stage, layout};
use ingest_operator::status::{compute, invalid};
use k8s_openapi::jiff::Timestamp;
use packaging_tests::{lua_literal, repo_root};

const LUA: &str = "lua5.4";

/// Runs health.lua on `obj`; returns (status, message).
fn health(obj: &IngestJob) -> (String, String) {
    let script = repo_root().join("deploy/argocd/health.lua");
    let json = serde_json::to_value(obj).unwrap();
    let driver = format!(
        "obj = {}\nlocal hs = assert(loadfile({:?}))()\nio.write(hs.status, \"\\n\", hs.message)\n",
        lua_literal(&json),
        script.to_str().unwrap()
    );
    let out = Command::new(LUA)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(driver.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap_or_else(|e| panic!("cannot run {LUA} ({e}); install it: apt-get install lua5.4"));
    assert!(
        out.status.success(),
        "health.lua failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (status, message) = text.split_once('\n').expect("status and message");
    (status.to_owned(), message.to_owned())
}

fn job() -> IngestJob {
    let text = std::fs::read_to_string(repo_root().join("examples/vfxt-3-nodes.yaml")).unwrap();
    let mut ij: IngestJob = serde_yaml::from_str(&text).unwrap();
    ij.metadata.uid = Some("0b6f1c2e-uid".into());
    ij.metadata.generation = Some(3);
    ij
}

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
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
        },
    }
}

fn with_status(mut ij: IngestJob, stage: &Stage) -> IngestJob {
    ij.status = Some(compute(&ij, &Observed::default(), stage, now()));
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

#[test]
fn not_yet_seen_by_the_operator_is_progressing() {
    let (status, message) = health(&job());
    assert_eq!(status, "Progressing");
    assert!(
        message.contains("Waiting for the vfxt-ingest operator"),
        "{message}"
    );
}

#[test]
fn scanning_is_progressing() {
    let ij = with_status(job(), &Stage::Scan);
    assert!(!ij.status.as_ref().unwrap().phase.unwrap().is_finished());
    assert_eq!(health(&ij).0, "Progressing");
}

#[test]
fn copying_is_progressing_with_the_phase_in_the_message() {
    let ij = job();
    let plan = plan(&ij.spec);
    let ij = with_status(
        ij.clone(),
        &Stage::Copy(plan.clone(), layout(&ij.spec, &plan)),
    );
    assert_eq!(ij.status.as_ref().unwrap().phase, Some(Phase::Copying));
    let (status, message) = health(&ij);
    assert_eq!(status, "Progressing");
    assert!(message.starts_with("Copying"), "{message}");
}

#[test]
fn a_finished_run_is_healthy() {
    let ij = job();
    let stage = done(&ij, 0);
    let ij = with_status(ij, &stage);
    assert_eq!(ij.status.as_ref().unwrap().phase, Some(Phase::Succeeded));
    assert_eq!(health(&ij).0, "Healthy");
}

#[test]
fn a_failed_shard_under_fail_job_is_degraded_with_the_reason() {
    let mut ij = job();
    ij.spec.failure_policy.action = FailureAction::FailJob;
    let stage = done(&ij, 1);
    let ij = with_status(ij, &stage);
    assert_eq!(ij.status.as_ref().unwrap().phase, Some(Phase::Failed));
    let (status, message) = health(&ij);
    assert_eq!(status, "Degraded");
    assert!(message.starts_with("ShardFailed"), "{message}");
}

#[test]
fn a_failed_scan_is_degraded() {
    let ij = with_status(
        job(),
        &Stage::ScanFailed("scan pod exited 2: source not mounted".into()),
    );
    let (status, message) = health(&ij);
    assert_eq!(status, "Degraded");
    assert!(message.contains("source not mounted"), "{message}");
}

#[test]
fn an_invalid_spec_is_degraded_and_names_the_field() {
    let mut ij = job();
    ij.spec.destination.nfs.path = "relative/path".into();
    let errors = validate_spec(&ij.spec).expect_err("a relative export path is invalid");
    ij.status = Some(invalid(&ij, &errors, now()));
    let (status, message) = health(&ij);
    assert_eq!(status, "Degraded");
    assert!(
        message.contains("InvalidSpec") && message.contains("spec.destination.nfs.path"),
        "{message}"
    );
}

#[test]
fn a_status_for_an_older_generation_is_progressing_even_when_it_said_succeeded() {
    let ij = job();
    let stage = done(&ij, 0);
    let mut ij = with_status(ij, &stage);
    ij.metadata.generation = Some(4); // the user bumped spec.run; the operator has not looked yet
    let (status, message) = health(&ij);
    assert_eq!(status, "Progressing");
    assert!(message.contains("generation 4"), "{message}");
}
