//! The reconcile function and its error policy: the pipeline's steps in order, plus the decisions that keep the
//! API server calm (status at most every few seconds, no requeue for an invalid spec, backoff by error category).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ingest_api::constants::conditions as ct;
use ingest_api::validate::validate_spec;
use ingest_api::{IngestJob, IngestJobStatus, Phase};
use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Client, Resource, ResourceExt};

use crate::desired::{Settings, desired};
use crate::error::{Error, Result};
use crate::metrics::{JobSample, Metrics};
use crate::{apply, observe, stage, status};

/// Everything reconcile needs.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Shapes children.
    pub settings: Settings,
    /// Operator metrics.
    pub metrics: Arc<Metrics>,
    /// Publishes Events (None in tests that do not script Event calls).
    pub recorder: Option<Recorder>,
    /// Minimum time between two status writes of one IngestJob (phase changes go out at once).
    pub status_interval: Duration,
    last_write: Mutex<HashMap<String, Instant>>,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context with empty rate-limit and backoff memory.
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        recorder: Option<Recorder>,
        status_interval: Duration,
    ) -> Self {
        Context {
            client,
            settings,
            metrics,
            recorder,
            status_interval,
            last_write: Mutex::default(),
            failures: Mutex::default(),
        }
    }
}

fn key(ij: &IngestJob) -> String {
    format!("{}/{}", ij.namespace().unwrap_or_default(), ij.name_any())
}

/// When to write a new status (pure).
#[derive(Debug, PartialEq, Eq)]
pub enum WriteDecision {
    /// Write now.
    Now,
    /// Only counters moved and the last write is recent: write after this delay.
    Later(Duration),
    /// Nothing changed.
    Skip,
}

/// Phase and condition changes are written at once; counter updates at most once per `interval`.
pub fn decide_write(
    prev: Option<&IngestJobStatus>,
    new: &IngestJobStatus,
    since_last: Option<Duration>,
    interval: Duration,
) -> WriteDecision {
    let Some(prev) = prev else {
        return WriteDecision::Now;
    };
    if prev == new {
        return WriteDecision::Skip;
    }
    let statuses = |s: &IngestJobStatus| {
        s.conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect::<Vec<_>>()
    };
    if prev.phase != new.phase
        || statuses(prev) != statuses(new)
        || prev.observed_generation != new.observed_generation
    {
        return WriteDecision::Now;
    }
    match since_last {
        Some(d) if d < interval => WriteDecision::Later(interval - d),
        _ => WriteDecision::Now,
    }
}

/// Events to publish for a status change (pure): one per phase change, Warning when the run failed.
pub fn events_for(prev: Option<&IngestJobStatus>, new: &IngestJobStatus) -> Vec<Event> {
    let before = prev.and_then(|p| p.phase);
    let (Some(after), true) = (
        new.phase,
        prev.and_then(|p| p.phase) != new.phase || prev.and_then(|p| p.run) != new.run,
    ) else {
        return Vec::new();
    };
    let failed = after == Phase::Failed;
    let reason = if failed {
        ingest_api::conditions::find(&new.conditions, ct::STALLED).map_or(
            ingest_api::constants::reasons::PHASE_CHANGED.to_owned(),
            |c| c.reason.clone(),
        )
    } else {
        ingest_api::constants::reasons::PHASE_CHANGED.to_owned()
    };
    let note = match before {
        Some(b) => format!("{b} → {after}"),
        None => format!("→ {after}"),
    };
    let note = match &new.message {
        Some(m) => format!("{note}: {m}"),
        None => note,
    };
    vec![Event {
        type_: if failed {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason,
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    }]
}

async fn publish(ctx: &Context, ij: &IngestJob, events: Vec<Event>) {
    let Some(rec) = &ctx.recorder else { return };
    let reference = ij.object_ref(&());
    for e in events {
        // Events are best effort: a failure to record one must not fail or repeat the reconcile.
        if let Err(err) = rec.publish(&e, &reference).await {
            tracing::warn!(error = %err, "publishing Event failed");
        }
    }
}

/// Writes `st` if [`decide_write`] says so; returns the requeue delay a postponed write needs.
async fn write_status(
    ctx: &Context,
    ij: &IngestJob,
    st: &IngestJobStatus,
) -> Result<Option<Duration>> {
    let k = key(ij);
    let since = ctx
        .last_write
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&k)
        .map(|t| t.elapsed());
    match decide_write(ij.status.as_ref(), st, since, ctx.status_interval) {
        WriteDecision::Skip => Ok(None),
        WriteDecision::Later(d) => Ok(Some(d)),
        WriteDecision::Now => {
            apply::patch_status(&ctx.client, ij, st).await?;
            ctx.metrics.status_written();
            ctx.last_write
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(k, Instant::now());
            publish(ctx, ij, events_for(ij.status.as_ref(), st)).await;
            Ok(None)
        }
    }
}

/// Finalizer on IngestJobs with destination mount options: their per-server PersistentVolumes are
/// cluster-scoped, cannot be owned by the namespaced IngestJob, and are deleted by the operator instead.
pub const FINALIZER: &str = "ingest.vfxt.dev/volumes";

fn needs_finalizer(ij: &IngestJob) -> bool {
    ij.spec
        .destination
        .nfs
        .mount_options
        .as_ref()
        .is_some_and(|o| !o.is_empty())
        || ij.finalizers().iter().any(|f| f == FINALIZER)
}

/// Deletes the IngestJob's PersistentVolumes (found by labels). Their reclaim policy is `Retain`, so this removes
/// the Kubernetes objects only, never data; a PV still bound goes once its claim is garbage-collected.
async fn cleanup(ij: &IngestJob, ctx: &Context) -> Result<Action> {
    let ns = ij.namespace().unwrap_or_default();
    ctx.metrics.forget(&ns, &ij.name_any());
    let selector = format!(
        "{},{}={ns}",
        crate::names::selector(&ij.name_any()),
        crate::desired::NAMESPACE_LABEL
    );
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let pvs = api
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::kube("list the IngestJob's PersistentVolumes", e))?;
    for pv in pvs.items {
        let name = pv.name_any();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::kube(format!("delete PersistentVolume {name}"), e)),
        }
    }
    Ok(Action::await_change())
}

/// Runs the pipeline for one IngestJob.
pub async fn reconcile(ij: Arc<IngestJob>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = if needs_finalizer(&ij) {
        let api: Api<IngestJob> =
            Api::namespaced(ctx.client.clone(), &ij.namespace().unwrap_or_default());
        finalizer(&api, FINALIZER, ij.clone(), |event| async {
            match event {
                FinalizerEvent::Apply(ij) => reconcile_steps(&ij, &ctx).await,
                FinalizerEvent::Cleanup(ij) => cleanup(&ij, &ctx).await,
            }
        })
        .await
        .map_err(Error::from)
    } else {
        reconcile_steps(&ij, &ctx).await
    };
    ctx.metrics.reconciled(started.elapsed());
    if result.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key(&ij));
    }
    result
}

async fn reconcile_steps(ij: &IngestJob, ctx: &Context) -> Result<Action> {
    if ij.meta().deletion_timestamp.is_some() {
        // Children go with their owner references; nothing to do but forget the job.
        ctx.metrics
            .forget(&ij.namespace().unwrap_or_default(), &ij.name_any());
        return Ok(Action::await_change());
    }
    let ns = ij
        .namespace()
        .ok_or(Error::MissingField("IngestJob has no namespace"))?;
    let now = Timestamp::now();
    if let Err(errors) = validate_spec(&ij.spec) {
        write_status(ctx, ij, &status::invalid(ij, &errors, now)).await?;
        return Err(Error::InvalidSpec(errors));
    }
    let obs = observe::observe(&ctx.client, ij).await?;
    let recorded = status::recorded(ij.status.as_ref(), ij.spec.run);
    let stage = stage::stage(ij, &obs);
    // A run whose record is written creates nothing more (Jobs deleted by hand are not run again).
    if !recorded {
        let children = desired(ij, &stage, &ctx.settings)?;
        apply::apply(&ctx.client, &ns, &obs, &children).await?;
    }
    apply::prune(&ctx.client, ij, &obs).await?;
    let st = status::compute(ij, &obs, &stage, now);
    ctx.metrics.job(
        &ns,
        &ij.name_any(),
        JobSample {
            phase: st.phase,
            files: st.progress.as_ref().map_or(0, |p| p.files),
            bytes: st.progress.as_ref().map_or(0, |p| p.bytes),
        },
    );
    let later = write_status(ctx, ij, &st).await?;
    let finished = st.phase.is_some_and(Phase::is_finished);
    if finished && later.is_none() {
        // The record is written (or was already): nothing of the run may work on. Only FailJob stops a run
        // with Jobs still running; suspending is idempotent and keeps the pods' objects for inspection.
        apply::suspend(&ctx.client, &ns, &stage::unfinished_jobs(ij, &obs)).await?;
    }
    Ok(match later {
        Some(d) => Action::requeue(d),
        // Watches on Jobs and pods wake us on every change; the periodic requeue only catches missed events.
        None if finished => Action::await_change(),
        None => Action::requeue(Duration::from_secs(60)),
    })
}

/// Backoff by error category; an invalid spec waits for the user (no requeue storm).
pub fn error_policy(ij: Arc<IngestJob>, err: &Error, ctx: Arc<Context>) -> Action {
    let category = err.category();
    ctx.metrics.error(category);
    let attempt = {
        let mut f = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(key(&ij)).or_default();
        *n += 1;
        *n
    };
    tracing::warn!(ingestjob = %key(&ij), category = category.as_str(), attempt, error = %err, "reconcile failed");
    category
        .backoff(attempt)
        .map_or_else(Action::await_change, Action::requeue)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingest_api::conditions::condition;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn st(phase: Phase, files: u64, ready: bool) -> IngestJobStatus {
        let t = Time(Timestamp::from_second(1).unwrap());
        IngestJobStatus {
            phase: Some(phase),
            run: Some(0),
            conditions: vec![condition(ct::READY, ready, "R", "", Some(1), t)],
            progress: Some(ingest_api::Progress {
                files,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn counters_are_rate_limited_but_phase_changes_are_not() {
        let i = Duration::from_secs(5);
        let a = st(Phase::Copying, 1, false);
        assert_eq!(decide_write(None, &a, None, i), WriteDecision::Now);
        assert_eq!(
            decide_write(Some(&a), &a.clone(), Some(Duration::ZERO), i),
            WriteDecision::Skip
        );
        assert_eq!(
            decide_write(
                Some(&a),
                &st(Phase::Copying, 2, false),
                Some(Duration::from_secs(2)),
                i
            ),
            WriteDecision::Later(Duration::from_secs(3))
        );
        assert_eq!(
            decide_write(
                Some(&a),
                &st(Phase::Copying, 2, false),
                Some(Duration::from_secs(6)),
                i
            ),
            WriteDecision::Now
        );
        assert_eq!(
            decide_write(
                Some(&a),
                &st(Phase::Succeeded, 2, true),
                Some(Duration::ZERO),
                i
            ),
            WriteDecision::Now
        );
    }

    #[test]
    fn one_event_per_phase_change_warning_on_failure() {
        let a = st(Phase::Copying, 1, false);
        assert!(events_for(Some(&a), &st(Phase::Copying, 9, false)).is_empty());
        let e = events_for(Some(&a), &st(Phase::Verifying, 9, false));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].type_, EventType::Normal);
        assert!(
            e[0].note
                .as_deref()
                .unwrap()
                .contains("Copying → Verifying")
        );
        let mut failed = st(Phase::Failed, 9, false);
        failed.conditions.push(condition(
            ct::STALLED,
            true,
            "ShardFailed",
            "x",
            Some(1),
            Time(Timestamp::from_second(1).unwrap()),
        ));
        let e = events_for(Some(&a), &failed);
        assert_eq!(
            (e[0].type_, e[0].reason.as_str()),
            (EventType::Warning, "ShardFailed")
        );
    }
}
