//! Status (pure): aggregates what the pods reported into the IngestJob status. Counts never go backwards within
//! a run (a restarted operator or a retried pod does not reset progress), lists are bounded, and the result
//! depends only on its inputs, so the same observation always gives the same status.

use std::collections::BTreeMap;

use ingest_api::conditions::{condition, merge_conditions};
use ingest_api::constants::{annotations, conditions as ct, labels, reasons};
use ingest_api::report::{PodProgress, PodResult};
use ingest_api::validate::SpecErrors;
use ingest_api::{
    FailureAction, FileFailure, IngestJob, IngestJobStatus, MAX_LISTED_FAILURES, Phase, Progress,
    ReportStatus, ServerStatus, ShardCounts, VerificationCounts, VerifyMode,
};
use ingest_job::WorkerExit;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use crate::observe::Observed;
use crate::stage::{Layout, Stage, role_states};

/// Pod annotation Kubernetes sets on Indexed Job pods.
const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";

/// What one shard's latest pod says.
#[derive(Clone, Debug, Default, PartialEq)]
struct ShardReport {
    server: usize,
    files: u64,
    bytes: u64,
    failed: u64,
    failures: Vec<FileFailure>,
    verification: Option<VerificationCounts>,
    /// It ended with a result and exit 1: its shard finished with failed entries, each counted.
    files_failed: bool,
    /// Verify pass: entries checked (final or so far).
    checked: u64,
}

/// The pod's final result (termination message) if it finished, else its progress annotation.
fn pod_report(pod: &Pod) -> Option<ShardReport> {
    let server = pod
        .metadata
        .labels
        .as_ref()?
        .get(labels::SERVER_INDEX)?
        .parse()
        .ok()?;
    let terminated = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    if let Some(result) = terminated
        .and_then(|t| t.message.as_deref())
        .and_then(|m| serde_json::from_str::<PodResult>(m).ok())
    {
        return Some(ShardReport {
            server,
            files: result.files,
            bytes: result.bytes,
            failed: result.failed,
            failures: result.failures,
            checked: result.verification.as_ref().map_or(0, |v| v.checked),
            verification: result.verification,
            files_failed: terminated.is_some_and(|t| {
                WorkerExit::from_code(Some(t.exit_code)) == WorkerExit::FilesFailed
            }),
        });
    }
    let progress: PodProgress = pod
        .metadata
        .annotations
        .as_ref()?
        .get(annotations::PROGRESS)
        .and_then(|a| serde_json::from_str(a).ok())?;
    Some(ShardReport {
        server,
        files: progress.files,
        bytes: progress.bytes,
        failed: progress.failed,
        checked: progress.checked,
        ..Default::default()
    })
}

/// The latest pod of each (server, index): retries replace earlier attempts instead of adding to them.
fn latest_per_shard<'a>(pods: impl Iterator<Item = &'a Pod>) -> Vec<&'a Pod> {
    let mut latest: BTreeMap<(String, String), &Pod> = BTreeMap::new();
    for p in pods {
        let l = p.metadata.labels.as_ref();
        let key = (
            l.and_then(|l| l.get(labels::SERVER_INDEX))
                .cloned()
                .unwrap_or_default(),
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(INDEX_ANNOTATION))
                .cloned()
                .unwrap_or_default(),
        );
        let newer = |old: &Pod| {
            old.metadata.creation_timestamp.as_ref().map(|t| t.0)
                < p.metadata.creation_timestamp.as_ref().map(|t| t.0)
        };
        if latest.get(&key).is_none_or(|old| newer(old)) {
            latest.insert(key, p);
        }
    }
    latest.into_values().collect()
}

/// Sum of the reports of one role's latest pods.
#[derive(Default)]
struct Sum {
    files: u64,
    bytes: u64,
    failed: u64,
    failures: Vec<FileFailure>,
    per_server: BTreeMap<usize, (u64, u64)>,
    verification: VerificationCounts,
    /// Shards whose latest pod ended with a result and exit 1 (a failed index, but accounted).
    files_failed_shards: u64,
    /// Entries checked by the verify pass (final or so far).
    checked: u64,
}

fn sum_role(obs: &Observed, role: &str, run: i64) -> Sum {
    let mut s = Sum::default();
    for r in latest_per_shard(obs.pods_of(role, run))
        .into_iter()
        .filter_map(pod_report)
    {
        s.files += r.files;
        s.bytes += r.bytes;
        s.failed += r.failed;
        s.files_failed_shards += u64::from(r.files_failed);
        s.checked += r.checked;
        let e = s.per_server.entry(r.server).or_default();
        e.0 += r.files;
        e.1 += r.bytes;
        for f in r.failures {
            if s.failures.len() < MAX_LISTED_FAILURES {
                s.failures.push(f);
            }
        }
        if let Some(v) = r.verification {
            s.verification.add(&v);
        }
    }
    s.verification.verified = s.verification.matched + s.verification.repaired;
    s
}

pub use ingest_api::units::human_bytes;

/// Rates are averages since the run started (stable between samples); ETA extrapolates the bytes rate
/// (the files rate when the tree holds no bytes).
pub fn rates_and_eta(
    done_bytes: u64,
    total_bytes: u64,
    done_files: u64,
    total_files: u64,
    started: Timestamp,
    now: Timestamp,
) -> (u64, u64, Option<Time>) {
    let secs = now.duration_since(started).as_secs_f64();
    if secs < 1.0 {
        return (0, 0, None);
    }
    let bps = done_bytes as f64 / secs;
    let fps = done_files as f64 / secs;
    let remaining = if total_bytes > 0 && bps > 0.0 {
        Some(total_bytes.saturating_sub(done_bytes) as f64 / bps)
    } else if fps > 0.0 {
        Some(total_files.saturating_sub(done_files) as f64 / fps)
    } else {
        None
    };
    let eta = remaining
        .and_then(|r| {
            now.checked_add(SignedDuration::from_secs_f64(r.min(1e9)))
                .ok()
        })
        .map(Time);
    (bps as u64, fps as u64, eta)
}

fn shard_counts(
    ij: &IngestJob,
    obs: &Observed,
    layout: &Layout,
    role: &str,
    total: u64,
) -> ShardCounts {
    let mut c = ShardCounts {
        total,
        ..Default::default()
    };
    for (_, state) in role_states(ij, obs, layout, role) {
        if let Some(s) = state {
            c.succeeded += s.succeeded;
            c.failed += s.failed_indexes;
            c.running += s.active;
        }
    }
    c.pending = total.saturating_sub(c.succeeded + c.failed + c.running);
    c
}

/// True when `status` holds the finished record of `run`: its verdict, counts and failure list were written
/// once, when the run finished, and are never recomputed (pods are garbage-collected or deleted, the
/// failure policy may be edited afterwards). A new `spec.run` starts a new record.
pub fn recorded(status: Option<&IngestJobStatus>, run: i64) -> bool {
    status.is_some_and(|s| {
        s.run == Some(run) && s.phase.is_some_and(Phase::is_finished) && s.completion_time.is_some()
    })
}

/// Where this run's pods write their full reports (`spec.report`), for `status.report`.
pub fn report_status(ij: &IngestJob) -> Option<ReportStatus> {
    let r = ij.spec.report.as_ref()?;
    Some(ReportStatus {
        location: r.location(&ij.spec, &ij.name_any(), ij.spec.run),
    })
}

/// Whose failures the status shows: the verify pass replaces the copy pass's (it re-copies what the copy
/// got wrong), so counts are kept from going backwards only while the basis stays the same.
fn failure_basis(phase: Option<Phase>, verify: VerifyMode) -> Option<&'static str> {
    match phase? {
        Phase::Copying => Some(labels::ROLE_COPY),
        Phase::Verifying if verify == VerifyMode::None => Some(labels::ROLE_COPY),
        Phase::Verifying => Some(labels::ROLE_VERIFY),
        _ => None,
    }
}

/// `now`'s failures, never fewer than `prev`'s (pods that reported them may be gone): the larger count,
/// `now`'s list completed by `prev`'s entries it lacks, bounded.
fn keep_failures(prev: &IngestJobStatus, st: &mut IngestJobStatus) {
    st.failed_files = st.failed_files.max(prev.failed_files);
    for f in &prev.failures {
        if st.failures.len() >= MAX_LISTED_FAILURES {
            break;
        }
        if !st.failures.contains(f) {
            st.failures.push(f.clone());
        }
    }
    if let (Some(v), Some(p)) = (st.verification.as_mut(), prev.verification.as_ref()) {
        v.checked = v.checked.max(p.checked);
        v.matched = v.matched.max(p.matched);
        v.missing = v.missing.max(p.missing);
        v.mismatched = v.mismatched.max(p.mismatched);
        v.repaired = v.repaired.max(p.repaired);
        v.errors = v.errors.max(p.errors);
        v.verified = v.matched + v.repaired;
    }
}

/// The status for `stage` of `ij`, observed at `now`. Once the run's record is written ([`recorded`]), it is
/// returned unchanged.
pub fn compute(ij: &IngestJob, obs: &Observed, stage: &Stage, now: Timestamp) -> IngestJobStatus {
    let spec = &ij.spec;
    let run = spec.run;
    if recorded(ij.status.as_ref(), run) {
        let mut record = ij.status.clone().unwrap_or_default();
        // The only thing that moves on a record: an API error reported since, and now gone.
        record.conditions.retain(|c| c.type_ != ct::DEGRADED);
        return record;
    }
    let prev = ij.status.clone().unwrap_or_default();
    let same_run = prev.run == Some(run);
    let mut st = IngestJobStatus {
        observed_generation: crate::stage::applied_generation(ij, obs),
        run: Some(run),
        report: report_status(ij),
        start_time: prev
            .start_time
            .clone()
            .filter(|_| same_run)
            .or(Some(Time(now))),
        ..Default::default()
    };
    let started = st.start_time.as_ref().map_or(now, |t| t.0);

    let (phase, outcome): (Phase, Option<(bool, &str, String)>) = match stage {
        Stage::Scan => {
            let scanning = obs
                .pods_of(labels::ROLE_SCAN, run)
                .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
            (
                if scanning {
                    Phase::Scanning
                } else {
                    Phase::Pending
                },
                None,
            )
        }
        Stage::ScanFailed(m) => (
            Phase::Failed,
            Some((false, reasons::SCAN_FAILED, m.clone())),
        ),
        Stage::Copy(..) => (Phase::Copying, None),
        Stage::Verify(..) => (Phase::Verifying, None),
        Stage::Done { .. } => (Phase::Succeeded, None),
        Stage::Stopped { role, cause, .. } => {
            let running = crate::stage::unfinished_jobs(ij, obs).len();
            (
                Phase::Failed,
                Some((
                    false,
                    if *role == labels::ROLE_SCAN {
                        reasons::TOO_MANY_FAILURES
                    } else {
                        reasons::SHARD_FAILED
                    },
                    format!(
                        "{cause}; the run was stopped: {}{running} running Job(s) suspended",
                        match *role {
                            labels::ROLE_SCAN => "no copy or verify pass, ",
                            labels::ROLE_COPY => "no verify pass, ",
                            _ => "",
                        }
                    ),
                )),
            )
        }
    };
    st.phase = Some(phase);

    let mut outcome = outcome;
    if let Some((plan, layout)) = stage.plan() {
        st.totals = Some(plan.totals.clone());
        let copy = sum_role(obs, labels::ROLE_COPY, run);
        // Until the verify pass ran (a run stopped after the scan or the copy never gets one).
        let in_copy = match stage {
            Stage::Copy(..) => true,
            Stage::Stopped { role, .. } => *role != labels::ROLE_VERIFY,
            _ => false,
        };
        let verify_ran = spec.verify.mode != VerifyMode::None && !in_copy;
        let verify = verify_ran.then(|| sum_role(obs, labels::ROLE_VERIFY, run));
        // With verify None the verify role only set directory metadata: what it could not set
        // adds to the copy's failures.
        let settled = (spec.verify.mode == VerifyMode::None && !in_copy)
            .then(|| sum_role(obs, labels::ROLE_VERIFY, run));

        // Never backwards within a run: pods may be gone after a restart or node loss.
        let prev_p = prev
            .progress
            .clone()
            .filter(|_| same_run)
            .unwrap_or_default();
        // Files copied in ranges get their outcome in the last pass, when they are finalized.
        let finalized = verify.as_ref().or(settled.as_ref()).map_or(0, |s| s.files);
        let files = (copy.files + finalized).max(prev_p.files);
        let bytes = copy.bytes.max(prev_p.bytes);
        let t = &plan.totals;
        let done = matches!(stage, Stage::Done { .. } | Stage::Stopped { .. });
        let percent = if done {
            100.0
        } else if t.bytes > 0 {
            (bytes as f64 * 100.0 / t.bytes as f64).min(100.0)
        } else if t.files > 0 {
            (files as f64 * 100.0 / t.files as f64).min(100.0)
        } else {
            0.0
        };
        // A finished run keeps the rates it ended with, so its status stops changing (and being written).
        let rate_now = match (&prev.completion_time, done && same_run) {
            (Some(t), true) => t.0,
            _ => now,
        };
        let (bps, fps, eta) = rates_and_eta(bytes, t.bytes, files, t.files, started, rate_now);
        let percent = (percent * 10.0).round() / 10.0;
        st.progress = Some(Progress {
            files,
            bytes,
            percent,
            percent_text: format!("{percent:.1}%"),
            bytes_text: human_bytes(bytes),
            bytes_per_second: bps,
            files_per_second: fps,
            eta: if matches!(stage, Stage::Copy(..)) {
                eta
            } else {
                None
            },
            checked: verify.as_ref().map_or(0, |v| v.checked).max(prev_p.checked),
            last_progress_time: None,
        });
        st.servers = layout
            .slots
            .iter()
            .map(|s| {
                let (f, b) = copy.per_server.get(&s.index).copied().unwrap_or_default();
                ServerStatus {
                    server: s.server.clone(),
                    workers: s.workers,
                    files: f,
                    bytes: b,
                }
            })
            .collect();
        let role = if verify_ran {
            labels::ROLE_VERIFY
        } else {
            labels::ROLE_COPY
        };
        st.shards = Some(shard_counts(ij, obs, layout, role, plan.shards));

        // The verify pass re-copies what the copy pass got wrong, so its failures are the final ones.
        let last = verify.as_ref().unwrap_or(&copy);
        // Entries the scan could not read are failures of the run too, listed first (the plan keeps them).
        st.failed_files = plan.failed + last.failed + settled.as_ref().map_or(0, |s| s.failed);
        st.failures = plan.failures.clone();
        st.failures.extend(last.failures.iter().cloned());
        if let Some(s) = &settled {
            st.failures.extend(s.failures.iter().cloned());
        }
        st.failures.truncate(MAX_LISTED_FAILURES);
        st.verification = verify.as_ref().map(|v| v.verification.clone());
        // Never fewer failures within one basis: PodGC or a user may delete the pods that reported them.
        let basis = if in_copy || spec.verify.mode == VerifyMode::None {
            labels::ROLE_COPY
        } else {
            labels::ROLE_VERIFY
        };
        if same_run && failure_basis(prev.phase, spec.verify.mode) == Some(basis) {
            keep_failures(&prev, &mut st);
        }

        if let Stage::Done { failed_shards, .. } = stage {
            let fp = &spec.failure_policy;
            // A failed index whose latest pod left a result (exit 1: files failed) is accounted
            // for entry by entry; the others (crashed through their retries) are lost. With verify
            // None the copy pass is the last word on contents, so its lost shards count too.
            let last_pass = verify.as_ref().or(settled.as_ref());
            let mut lost_shards =
                failed_shards.saturating_sub(last_pass.map_or(0, |s| s.files_failed_shards));
            if spec.verify.mode == VerifyMode::None {
                let copy_failed: u64 = role_states(ij, obs, layout, labels::ROLE_COPY)
                    .iter()
                    .map(|(_, s)| s.as_ref().map_or(0, |s| s.failed_indexes))
                    .sum();
                lost_shards += copy_failed.saturating_sub(copy.files_failed_shards);
            }
            let v = ingest_job::decide(
                ingest_job::Policy {
                    fail_job: fp.action == FailureAction::FailJob,
                    max_failed_files: fp.max_failed_files,
                },
                &ingest_job::Facts {
                    scan_failed: plan.failed,
                    failed: st.failed_files.saturating_sub(plan.failed),
                    lost_shards,
                    broken: Vec::new(),
                    extraneous: verify.as_ref().map_or(0, |v| v.verification.extraneous),
                    verified: verify.is_some(),
                    files,
                    bytes,
                },
            );
            outcome = Some((v.succeeded, v.reason.as_str(), v.message));
        }
    }

    let stalled_for = track_progress(&mut st, &prev, same_run, now);
    let timeout = spec.stall_timeout_seconds();
    let stalled_for = stalled_for.filter(|s| *s >= timeout).filter(|_| {
        outcome.is_none() && matches!(st.phase, Some(Phase::Copying | Phase::Verifying))
    });

    let generation = ij.metadata.generation;
    let at = Time(now);
    let desired = match &outcome {
        Some((true, reason, msg)) => {
            st.phase = Some(Phase::Succeeded);
            vec![
                condition(ct::READY, true, reason, msg.clone(), generation, at.clone()),
                condition(ct::RECONCILING, false, reason, "", generation, at.clone()),
                condition(ct::STALLED, false, reason, "", generation, at),
            ]
        }
        Some((false, reason, msg)) => {
            st.phase = Some(Phase::Failed);
            vec![
                condition(
                    ct::READY,
                    false,
                    reason,
                    msg.clone(),
                    generation,
                    at.clone(),
                ),
                condition(ct::RECONCILING, false, reason, "", generation, at.clone()),
                condition(ct::STALLED, true, reason, msg.clone(), generation, at),
            ]
        }
        None => {
            let reason = phase_reason(st.phase.unwrap_or(Phase::Pending));
            let mut msg = format!("run {run}: {}", st.phase.unwrap_or(Phase::Pending));
            // Pods the Job controller cannot create (missing service account, quota, admission) show only as
            // Events on the Job; point there instead of looking merely slow.
            let scan_job = crate::names::scan_job(ij, run);
            if matches!(stage, Stage::Scan)
                && obs.job(&scan_job).is_some()
                && obs.pods_of(labels::ROLE_SCAN, run).next().is_none()
            {
                msg = format!(
                    "{msg}; no scan pod yet: if this lasts, see `kubectl describe job {scan_job}`"
                );
            }
            let stalled = match stalled_for {
                Some(s) => condition(
                    ct::STALLED,
                    true,
                    reasons::NO_PROGRESS,
                    format!(
                        "nothing copied or checked for {s} s (stallTimeoutSeconds {timeout}); the run goes on, its pods are alive but move nothing: a node that stopped answering?"
                    ),
                    generation,
                    at.clone(),
                ),
                None => condition(ct::STALLED, false, reason, "", generation, at.clone()),
            };
            vec![
                condition(
                    ct::READY,
                    false,
                    reason,
                    msg.clone(),
                    generation,
                    at.clone(),
                ),
                condition(ct::RECONCILING, true, reason, msg, generation, at),
                stalled,
            ]
        }
    };
    st.message = desired
        .first()
        .map(|c| c.message.clone())
        .filter(|m| !m.is_empty());
    st.conditions = merge_conditions(&prev.conditions, desired);
    if st.phase.is_some_and(Phase::is_finished) {
        st.completion_time = prev
            .completion_time
            .clone()
            .filter(|_| same_run && prev.phase == st.phase)
            .or(Some(Time(now)));
    }
    st
}

/// Sets `progress.lastProgressTime`: now when files, bytes or checked entries moved (or the phase
/// changed) since `prev`, else kept. Returns the seconds since then.
fn track_progress(
    st: &mut IngestJobStatus,
    prev: &IngestJobStatus,
    same_run: bool,
    now: Timestamp,
) -> Option<u64> {
    let p = st.progress.as_mut()?;
    let before = prev
        .progress
        .as_ref()
        .filter(|_| same_run && prev.phase == st.phase);
    let moved =
        before.is_none_or(|q| (q.files, q.bytes, q.checked) != (p.files, p.bytes, p.checked));
    let last = match before.and_then(|q| q.last_progress_time.clone()) {
        Some(t) if !moved => t,
        _ => Time(now),
    };
    let since = now.duration_since(last.0).as_secs_f64().max(0.0) as u64;
    p.last_progress_time = Some(last);
    Some(since)
}

fn phase_reason(p: Phase) -> &'static str {
    match p {
        Phase::Pending => reasons::PENDING,
        Phase::Scanning => reasons::SCANNING,
        Phase::Copying => reasons::COPYING,
        Phase::Verifying => reasons::VERIFYING,
        Phase::Succeeded => reasons::SUCCEEDED,
        Phase::Failed => reasons::SCAN_FAILED,
    }
}

/// Status for a spec that failed validation: Stalled, with every field error in the message.
pub fn invalid(ij: &IngestJob, errors: &SpecErrors, now: Timestamp) -> IngestJobStatus {
    let prev = ij.status.clone().unwrap_or_default();
    let g = ij.metadata.generation;
    let msg = errors.to_string();
    let at = Time(now);
    IngestJobStatus {
        phase: Some(Phase::Failed),
        observed_generation: g,
        run: Some(ij.spec.run),
        message: Some(msg.clone()),
        conditions: merge_conditions(
            &prev.conditions,
            vec![
                condition(
                    ct::READY,
                    false,
                    reasons::INVALID_SPEC,
                    msg.clone(),
                    g,
                    at.clone(),
                ),
                condition(
                    ct::RECONCILING,
                    false,
                    reasons::INVALID_SPEC,
                    "",
                    g,
                    at.clone(),
                ),
                condition(ct::STALLED, true, reasons::INVALID_SPEC, msg, g, at),
            ],
        ),
        ..prev
    }
}
