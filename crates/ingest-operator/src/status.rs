//! Status (pure): aggregates what the pods reported into the IngestJob status. Counts never go backwards within
//! a run (a restarted operator or a retried pod does not reset progress), lists are bounded, and the result
//! depends only on its inputs, so the same observation always gives the same status.

use ingest_api::claims::{MountFigures, RunCheckpoint};
use ingest_api::conditions::{condition, merge_conditions};
use ingest_api::constants::{conditions as ct, labels, reasons};
use ingest_api::validate::SpecErrors;
use ingest_api::{
    FailureAction, FileFailure, IngestJob, IngestJobStatus, MAX_LISTED_FAILURES, PassMode, Phase,
    Progress, ReportStatus, ServerState, ServerStatus, ShardCounts, VerificationCounts, VerifyMode,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use crate::claims::{PassView, Views};
use crate::desired::server_of_mount;
use crate::observe::Observed;
use crate::stage::{Layout, Stage};

/// What a pass's completed shards and its live workers add up to.
#[derive(Default)]
struct Sum {
    files: u64,
    /// Of `files`, found up to date (completed shards').
    up_to_date: u64,
    bytes: u64,
    failed: u64,
    failures: Vec<FileFailure>,
    verification: VerificationCounts,
    /// Entries checked by the verify pass (final or so far).
    checked: u64,
}

/// The completed shards' results plus the progress live workers reported on the shards they hold.
fn sum_pass(pass: Option<&PassView>) -> Sum {
    let Some(p) = pass else {
        return Sum::default();
    };
    let mut verification = p.sum.verification.clone().unwrap_or_default();
    verification.verified = verification.matched + verification.repaired;
    Sum {
        files: p.sum.files + p.in_flight.files,
        up_to_date: p.sum.up_to_date,
        bytes: p.sum.bytes + p.in_flight.bytes,
        failed: p.sum.failed + p.in_flight.failed,
        failures: p.sum.failures.clone(),
        checked: verification.checked + p.in_flight.checked,
        verification,
    }
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

/// Per destination server: the engine's per-mount figures summed over both passes' workers,
/// rates over `secs` (since the run started), and its health beside the others'. Counts never go
/// down within a run (`prev`: an operator restarted since keeps no figures of gone workers).
pub fn server_statuses(
    layout: &Layout,
    passes: &Views,
    prev: &[ServerStatus],
    secs: f64,
) -> Vec<ServerStatus> {
    let n = layout.servers.len();
    let mut figures = vec![MountFigures::default(); n];
    let mut avoided: Vec<Option<String>> = vec![None; n];
    for pass in [
        passes.copy.as_ref(),
        passes.prune.as_ref(),
        passes.verify.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        for (mount, f) in &pass.mounts {
            if let Some(i) = server_of_mount(mount, n) {
                figures[i].add(f);
            }
        }
        for (mount, why) in &pass.avoided {
            if let Some(i) = server_of_mount(mount, n) {
                avoided[i].get_or_insert_with(|| why.clone());
            }
        }
    }
    for (i, p) in prev.iter().enumerate().take(n) {
        if p.state == Some(ServerState::Unresponsive) && avoided[i].is_none() {
            avoided[i] = Some(p.message.clone().unwrap_or_default());
        }
    }
    // Counts never go down: an operator restarted since has no figures of gone workers.
    let before = |i: usize| prev.get(i).filter(|p| p.server == layout.servers[i]);
    for (i, f) in figures.iter_mut().enumerate() {
        if let Some(p) = before(i) {
            f.entries = f.entries.max(p.files);
            f.bytes = f.bytes.max(p.bytes);
        }
    }
    let mut statuses = ingest_api::claims::server_statuses(
        &layout.servers,
        &figures,
        &avoided,
        layout.workers,
        secs,
    );
    for (i, st) in statuses.iter_mut().enumerate() {
        // The last figures stand until this operator has some of its own.
        if let Some(p) = before(i) {
            st.task_p50_micros = st.task_p50_micros.or(p.task_p50_micros);
            st.task_p99_micros = st.task_p99_micros.or(p.task_p99_micros);
        }
    }
    statuses
}

/// `ServersResponding`: False naming every server found unresponsive, else True.
fn servers_condition(
    servers: &[ServerStatus],
    generation: Option<i64>,
    at: Time,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    let hung: Vec<String> = servers
        .iter()
        .filter(|s| s.state == Some(ServerState::Unresponsive))
        .map(|s| match &s.message {
            Some(m) if !m.is_empty() => format!("{} ({m})", s.server),
            _ => s.server.clone(),
        })
        .collect();
    if hung.is_empty() {
        condition(
            ct::SERVERS_RESPONDING,
            true,
            reasons::ALL_RESPONDING,
            "",
            generation,
            at,
        )
    } else {
        condition(
            ct::SERVERS_RESPONDING,
            false,
            reasons::SERVER_UNRESPONSIVE,
            format!(
                "stopped answering: {}; its work went to the other servers, and no worker uses it again in this run",
                hung.join("; ")
            ),
            generation,
            at,
        )
    }
}

fn shard_counts(pass: Option<&PassView>, total: u64) -> ShardCounts {
    let c = pass.map(|p| p.counts).unwrap_or_default();
    ShardCounts {
        total,
        pending: total.saturating_sub(c.completed + c.lost + c.running),
        running: c.running,
        succeeded: c.completed,
        failed: c.lost,
    }
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
pub fn compute(
    ij: &IngestJob,
    obs: &Observed,
    stage: &Stage,
    passes: &Views,
    now: Timestamp,
) -> IngestJobStatus {
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
        passes: prev.passes.clone(),
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
        // Deleting what only the destination has is the copy's last step.
        Stage::Copy(..) | Stage::Prune(..) => (Phase::Copying, None),
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
                        "{cause}; the run was stopped: {}the workers of {running} running Job(s) take no more work",
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
        // The estimate rests on the job's earlier runs: this run's record is not written yet.
        st.totals = Some(plan.totals.clone().with_estimate(&st.passes));
        let copy = sum_pass(passes.copy.as_ref());
        // Until the verify pass ran (a run stopped after the scan or the copy never gets one).
        let in_copy = match stage {
            Stage::Copy(..) | Stage::Prune(..) => true,
            Stage::Stopped { role, .. } => *role != labels::ROLE_VERIFY,
            _ => false,
        };
        // A dry run's verify pass compares whatever `verify.mode` says (by metadata for None).
        let dry_run = layout.dry_run;
        let no_verify = spec.verify.mode == VerifyMode::None && !dry_run;
        let verify_ran = !no_verify && !in_copy;
        let verify = verify_ran.then(|| sum_pass(passes.verify.as_ref()));
        // With verify None the verify role only set directory metadata: what it could not set
        // adds to the copy's failures.
        let settled = (no_verify && !in_copy).then(|| sum_pass(passes.verify.as_ref()));

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
            up_to_date: copy.up_to_date.max(prev_p.up_to_date),
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
        let prev_servers = if same_run { &prev.servers[..] } else { &[] };
        let secs = rate_now.duration_since(started).as_secs_f64();
        st.servers = server_statuses(layout, passes, prev_servers, secs);
        let role = if verify_ran {
            labels::ROLE_VERIFY
        } else {
            labels::ROLE_COPY
        };
        st.shards = Some(shard_counts(passes.of(role), plan.shards));
        st.checkpoint = Some(RunCheckpoint {
            copy: passes.copy.as_ref().map(|p| p.checkpoint.clone()),
            verify: passes.verify.as_ref().map(|p| p.checkpoint.clone()),
            prune: passes.prune.as_ref().map(|p| p.checkpoint.clone()),
        });
        st.mirror = layout.deletes.as_ref().map(|d| {
            ingest_api::report::mirror_status(
                passes
                    .copy
                    .as_ref()
                    .and_then(|p| p.sum.mirror.as_ref())
                    .unwrap_or(&Default::default()),
                d,
                passes.prune.as_ref().and_then(|p| p.sum.mirror.as_ref()),
            )
        });

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
        let basis = if in_copy || no_verify {
            labels::ROLE_COPY
        } else {
            labels::ROLE_VERIFY
        };
        if same_run && failure_basis(prev.phase, spec.verify.mode) == Some(basis) {
            keep_failures(&prev, &mut st);
        }

        if let Stage::Done { failed_shards, .. } = stage {
            let fp = &spec.failure_policy;
            // Shards no worker finished after their retries; with verify None the copy pass is the
            // last word on contents, so its lost shards count too.
            let mut lost_shards = *failed_shards;
            if no_verify {
                lost_shards += passes
                    .copy
                    .as_ref()
                    .map_or(0, |p| p.counts.total.saturating_sub(p.counts.completed));
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
                    // What the destination holds in scope (as `run` says it): the scan's totals,
                    // not what this pass wrote (a delta pass writes little of an identical tree).
                    files: plan.totals.files,
                    bytes: plan.totals.bytes,
                    up_to_date: st.progress.as_ref().map_or(0, |p| p.up_to_date),
                    excluded: plan.totals.excluded,
                    dry_run: dry_run.then(|| {
                        verify
                            .as_ref()
                            .map(|v| v.verification.dry_run(layout.mirror))
                            .unwrap_or_default()
                    }),
                    mirror: st.mirror.as_ref().map(|m| m.facts()),
                    content_unchanged: verify
                        .as_ref()
                        .map_or(0, |v| v.verification.content_unchanged),
                },
            );
            outcome = Some((v.succeeded, v.reason.as_str(), v.message));
        }
    }

    let stalled_for = track_progress(&mut st, &prev, same_run, now);
    let timeout = spec.stall_timeout_seconds();
    let working = outcome.is_none() && matches!(st.phase, Some(Phase::Copying | Phase::Verifying));
    // A suspended run moves nothing on purpose: it is not stalled.
    let suspended = working && spec.suspend;
    let stalled_for = stalled_for
        .filter(|s| *s >= timeout)
        .filter(|_| working && !suspended);

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
        None if suspended => {
            let msg = format!(
                "run {run}: {}, suspended (spec.suspend): workers finish the shards they run and take no new ones; set spec.suspend to false to resume",
                st.phase.unwrap_or(Phase::Pending)
            );
            let r = reasons::SUSPENDED;
            vec![
                condition(ct::READY, false, r, msg.clone(), generation, at.clone()),
                condition(ct::RECONCILING, false, r, msg, generation, at.clone()),
                condition(ct::STALLED, false, r, "", generation, at),
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
    let mut desired = desired;
    if !st.servers.is_empty() {
        desired.push(servers_condition(&st.servers, generation, Time(now)));
    }
    st.conditions = merge_conditions(&prev.conditions, desired);
    if st.phase.is_some_and(Phase::is_finished) {
        st.completion_time = prev
            .completion_time
            .clone()
            .filter(|_| same_run && prev.phase == st.phase)
            .or(Some(Time(now)));
        let mode = match stage.plan().map(|(_, l)| (l.dry_run, l.mirror.is_some())) {
            Some((true, _)) => PassMode::DryRun,
            Some((false, true)) => PassMode::Mirror,
            Some((false, false)) => PassMode::Copy,
            None if spec.dry_run => PassMode::DryRun,
            None => PassMode::Copy,
        };
        let reason = ingest_api::conditions::find(&st.conditions, ct::READY)
            .map(|c| c.reason.clone())
            .unwrap_or_default();
        st.passes = st.with_pass_recorded(mode, &reason);
    }
    st
}

/// Sets `progress.lastProgressTime`: now when files, bytes, checked entries or the entries through
/// the destination servers moved (or the phase changed) since `prev`, else kept. Returns the
/// seconds since then.
fn track_progress(
    st: &mut IngestJobStatus,
    prev: &IngestJobStatus,
    same_run: bool,
    now: Timestamp,
) -> Option<u64> {
    let before = prev
        .progress
        .as_ref()
        .filter(|_| same_run && prev.phase == st.phase);
    // Entries through the destination servers move with every operation that finished, the
    // prune pass's listings and deletions too (which move no files or bytes).
    let through = |s: &IngestJobStatus| s.servers.iter().map(|s| s.files).sum::<u64>();
    let (through_now, through_before) = (through(st), through(prev));
    let p = st.progress.as_mut()?;
    let moved = before.is_none_or(|q| {
        (q.files, q.bytes, q.checked, through_before) != (p.files, p.bytes, p.checked, through_now)
    });
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
    refused(ij, reasons::INVALID_SPEC, errors.to_string(), now)
}

/// The status of an IngestJob that will not run as it is (`reason`: an invalid spec, or the admin
/// policy's `PolicyDenied`): Failed, Ready False and Stalled True with `msg`.
pub fn refused(ij: &IngestJob, reason: &str, msg: String, now: Timestamp) -> IngestJobStatus {
    let prev = ij.status.clone().unwrap_or_default();
    let g = ij.metadata.generation;
    let at = Time(now);
    IngestJobStatus {
        phase: Some(Phase::Failed),
        observed_generation: g,
        run: Some(ij.spec.run),
        message: Some(msg.clone()),
        conditions: merge_conditions(
            &prev.conditions,
            vec![
                condition(ct::READY, false, reason, msg.clone(), g, at.clone()),
                condition(ct::RECONCILING, false, reason, "", g, at.clone()),
                condition(ct::STALLED, true, reason, msg, g, at),
            ],
        ),
        ..prev
    }
}

#[cfg(test)]
mod server_tests {
    use super::*;
    use crate::claims::PassView;
    use std::collections::BTreeMap;

    fn figures(mount: &str, tasks: u64, micros: u64) -> (String, MountFigures) {
        let mut latency = vec![0; ingest_job::latency::BUCKETS];
        latency[ingest_job::latency::bucket_of(micros)] = tasks;
        (
            mount.to_owned(),
            MountFigures {
                mount: mount.to_owned(),
                tasks,
                entries: tasks * 10,
                bytes: tasks * 1000,
                latency,
            },
        )
    }

    #[test]
    fn a_mount_path_names_its_server_and_no_other() {
        assert_eq!(server_of_mount("/ingest/dest-1", 12), Some(1));
        assert_eq!(server_of_mount("/ingest/dest-1/projects/a", 12), Some(1));
        assert_eq!(server_of_mount("/ingest/dest-10/x", 12), Some(10));
        assert_eq!(server_of_mount("/ingest/dest-10", 3), None);
        assert_eq!(server_of_mount("/elsewhere", 3), None);
    }

    #[test]
    fn servers_sum_both_passes_name_the_unresponsive_one_and_never_go_down() {
        let layout = Layout {
            servers: vec!["10.0.0.1".into(), "10.0.0.2".into(), "10.0.0.3".into()],
            workers: 3,
            avoided: Default::default(),
            dry_run: false,
            mirror: None,
            deletes: None,
            content_changed_since: None,
            verify_ahead: false,
            paces: Default::default(),
        };
        let copy = PassView {
            mounts: BTreeMap::from([
                figures("/ingest/dest-0/sub", 100, 1_000),
                figures("/ingest/dest-1/sub", 100, 8_000),
                figures("/ingest/dest-2/sub", 10, 1_000),
            ]),
            avoided: BTreeMap::from([(
                "/ingest/dest-2/sub".to_owned(),
                "2 operation(s) waiting 60 s with none finishing".to_owned(),
            )]),
            ..Default::default()
        };
        let verify = PassView {
            mounts: BTreeMap::from([figures("/ingest/dest-0/sub", 50, 1_000)]),
            ..Default::default()
        };
        let views = Views {
            copy: Some(copy),
            verify: Some(verify),
            prune: None,
        };
        let s = server_statuses(&layout, &views, &[], 10.0);
        let states: Vec<_> = s.iter().map(|x| x.state.unwrap()).collect();
        assert_eq!(
            states,
            [
                ServerState::Healthy,
                ServerState::Slow,
                ServerState::Unresponsive
            ]
        );
        assert_eq!((s[0].files, s[0].bytes), (1500, 150_000));
        assert_eq!(
            (s[0].files_per_second, s[0].bytes_per_second),
            (150, 15_000)
        );
        assert_eq!(s[0].task_p50_micros, Some(1024));
        assert_eq!(s[1].task_p99_micros, Some(8192));
        assert_eq!(s[2].workers, 0);
        assert!(s[2].message.as_deref().unwrap().contains("60 s"));
        // An operator restarted since has no figures: the last status's stand, and so does the
        // unresponsive server.
        let again = server_statuses(&layout, &Views::default(), &s, 20.0);
        assert_eq!((again[0].files, again[0].bytes), (1500, 150_000));
        assert_eq!(again[0].task_p50_micros, Some(1024));
        assert_eq!(again[2].state, Some(ServerState::Unresponsive));
    }
}
