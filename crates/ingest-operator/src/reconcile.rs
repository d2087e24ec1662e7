//! The reconcile function and its error policy: the pipeline's steps in order, plus the decisions that keep the
//! API server calm (status at most every few seconds, no requeue for an invalid spec, backoff by error category).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ingest_api::constants::conditions as ct;
use ingest_api::validate::validate_spec;
use ingest_api::{IngestJob, IngestJobStatus, Phase};
use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};

use crate::claims::{Opening, Registry, Views};
use crate::desired::{Child, Settings, desired};
use crate::error::{Category, Error, Result};
use crate::metrics::{JobSample, Metrics};
use crate::{apply, observe, stage, status};
use ingest_api::constants::labels;

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
    /// Minimum time between two reconciles of one IngestJob ([`throttle`]).
    pub reconcile_gap: Duration,
    /// The copy and verify passes this operator coordinates (the claims endpoint serves them).
    pub claims: Arc<Registry>,
    /// The watch caches of the children the reconcile reads (each controller adds its own).
    pub caches: observe::WatchCaches,
    /// The pods' RBAC objects last applied per IngestJob: unchanged ones are not applied on every pass.
    pub rbac: apply::RbacApplied,
    last_write: Mutex<HashMap<String, Instant>>,
    last_reconcile: Mutex<HashMap<String, Instant>>,
    /// IngestJobs whose next reconcile waits [`PROMPT_GAP`] at most, not the whole gap
    /// ([`Context::prompt`]).
    prompted: Mutex<std::collections::HashSet<String>>,
    failures: Mutex<HashMap<String, u32>>,
}

/// Default [`Context::reconcile_gap`]: pod events of one IngestJob (hundreds a second when many short pods
/// churn) cost at most one observe pass per second.
pub const RECONCILE_GAP: Duration = Duration::from_secs(1);

/// The gap before a reconcile that may move a run on ([`Context::prompt`]): a pass ended or is
/// near its end, a child ended. The end of each step of a run (the scan's pod, a pass's
/// workers) used to wait out [`RECONCILE_GAP`], up to a second per step, then 100 ms: the last
/// pod of a wave to end usually comes a few ms after another, so each step still waited most of
/// it. These events are few (one per pod and pass, a reconcile reads watch caches), so a short
/// gap still bounds them when 500 workers end at once: 50 reconciles a second while it lasts.
pub const PROMPT_GAP: Duration = Duration::from_millis(20);

/// Whether a reconcile triggered `since_last` after the previous one runs now (None) or is requeued to the end
/// of the gap (pure). Unlike a debounce, a steady stream of triggers cannot postpone it further.
pub fn throttle(since_last: Option<Duration>, gap: Duration) -> Option<Duration> {
    match since_last {
        Some(d) if d < gap => Some(gap - d),
        _ => None,
    }
}

/// The gap a reconcile keeps since the last one of its IngestJob (pure): at most [`PROMPT_GAP`]
/// when something may have moved its run on ([`Context::prompt`]), else `gap`.
pub fn gap_for(prompted: bool, gap: Duration) -> Duration {
    if prompted { gap.min(PROMPT_GAP) } else { gap }
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
            reconcile_gap: RECONCILE_GAP,
            claims: Arc::new(Registry::default()),
            caches: observe::WatchCaches::default(),
            rbac: apply::RbacApplied::default(),
            last_write: Mutex::default(),
            last_reconcile: Mutex::default(),
            prompted: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    /// The same context coordinating the passes of `claims` (the one the HTTP endpoint serves).
    pub fn with_claims(mut self, claims: Arc<Registry>) -> Self {
        self.claims = claims;
        self
    }

    /// The same context reading the children of IngestJobs in `scope` (None: every namespace) from
    /// `caches` (a running controller adds its own instead).
    pub fn with_caches(self, scope: Option<String>, caches: observe::Caches) -> Self {
        self.caches.insert(scope, caches);
        self
    }

    /// The same context with another [`Context::reconcile_gap`] (tests use zero).
    pub fn with_reconcile_gap(mut self, gap: Duration) -> Self {
        self.reconcile_gap = gap;
        self
    }

    /// Something happened that may move `job`'s run on (a pass ended, a child ended): its next
    /// reconcile waits [`PROMPT_GAP`] since the last at most, not [`Context::reconcile_gap`].
    /// Called by the watches before the reconcile they trigger.
    pub fn prompt(&self, job: &ObjectRef<IngestJob>) {
        self.prompted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key_of(
                job.namespace.as_deref().unwrap_or_default(),
                &job.name,
            ));
    }
}

fn key(ij: &IngestJob) -> String {
    key_of(&ij.namespace().unwrap_or_default(), &ij.name_any())
}

/// The key of the IngestJob `name` in `namespace` in the context's per-job maps.
fn key_of(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
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
    let mut events = server_events(prev, new);
    events.extend(run_events(prev, new));
    events
}

/// A Warning for each destination server newly found unresponsive in this run.
fn server_events(prev: Option<&IngestJobStatus>, new: &IngestJobStatus) -> Vec<Event> {
    let hung =
        |s: &ingest_api::ServerStatus| s.state == Some(ingest_api::ServerState::Unresponsive);
    let was_hung = |server: &str| {
        prev.filter(|p| p.run == new.run)
            .is_some_and(|p| p.servers.iter().any(|s| s.server == server && hung(s)))
    };
    new.servers
        .iter()
        .filter(|s| hung(s) && !was_hung(&s.server))
        .map(|s| Event {
            type_: EventType::Warning,
            reason: ingest_api::constants::reasons::SERVER_UNRESPONSIVE.into(),
            note: Some(
                format!(
                    "destination server {} stopped answering ({}); its shards went back to the queue and the other servers take the work",
                    s.server,
                    s.message.as_deref().unwrap_or("no detail")
                )
                .chars()
                .take(1000)
                .collect(),
            ),
            action: "Reconcile".into(),
            secondary: None,
        })
        .collect()
}

fn run_events(prev: Option<&IngestJobStatus>, new: &IngestJobStatus) -> Vec<Event> {
    // A run that stops moving (or moves again) without a phase change: one Event each way.
    let no_progress = |s: Option<&IngestJobStatus>| {
        s.and_then(|s| ingest_api::conditions::find(&s.conditions, ct::STALLED))
            .is_some_and(|c| {
                c.status == "True" && c.reason == ingest_api::constants::reasons::NO_PROGRESS
            })
    };
    if no_progress(Some(new)) != no_progress(prev) && prev.and_then(|p| p.phase) == new.phase {
        let stalled = no_progress(Some(new));
        let c = ingest_api::conditions::find(&new.conditions, ct::STALLED);
        return vec![Event {
            type_: if stalled {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: if stalled {
                ingest_api::constants::reasons::NO_PROGRESS.into()
            } else {
                "ProgressResumed".into()
            },
            note: Some(if stalled {
                c.map(|c| c.message.clone()).unwrap_or_default()
            } else {
                "files are being copied or checked again".into()
            }),
            action: "Reconcile".into(),
            secondary: None,
        }];
    }
    let before = prev.and_then(|p| p.phase);
    let (Some(after), true) = (
        new.phase,
        prev.and_then(|p| p.phase) != new.phase || prev.and_then(|p| p.run) != new.run,
    ) else {
        return Vec::new();
    };
    let failed = after == Phase::Failed;
    // Each phase has its own reason (the Ready condition's: `Scanning`, `Copying`, `Succeeded`,
    // `TooManyFailures`, ...): Events with one reason would be merged into one series ("PhaseChanged (x4)").
    let reason = ingest_api::conditions::find(&new.conditions, ct::READY).map_or(
        ingest_api::constants::reasons::PHASE_CHANGED.to_owned(),
        |c| c.reason.clone(),
    );
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

/// What [`write_status`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
enum StatusWrite {
    /// The status already said it.
    Unchanged,
    Written,
    /// Postponed by the status interval: requeue after this.
    Later(Duration),
}

/// Writes `st` if [`decide_write`] says so.
async fn write_status(
    ctx: &Context,
    ij: &IngestJob,
    st: &IngestJobStatus,
    urgent: bool,
) -> Result<StatusWrite> {
    let k = key(ij);
    let since = ctx
        .last_write
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&k)
        .map(|t| t.elapsed());
    match decide_write(ij.status.as_ref(), st, since, ctx.status_interval) {
        WriteDecision::Skip => Ok(StatusWrite::Unchanged),
        WriteDecision::Later(d) if !urgent => Ok(StatusWrite::Later(d)),
        WriteDecision::Later(_) | WriteDecision::Now => {
            apply::patch_status(&ctx.client, ij, st).await?;
            ctx.metrics.status_written();
            ctx.last_write
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(k, Instant::now());
            publish(ctx, ij, events_for(ij.status.as_ref(), st)).await;
            Ok(StatusWrite::Written)
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

/// The message refusing `ij` for the admin policy's `violations` (pure); None when there are none.
fn policy_denial(ij: &IngestJob, violations: &[ingest_api::policy::Violation]) -> Option<String> {
    if violations.is_empty() {
        return None;
    }
    let mut msg = violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    // A policy tightened under a running job: nothing new starts; what runs is not killed.
    let running = ij.status.as_ref().is_some_and(|s| {
        s.run == Some(ij.spec.run)
            && s.phase
                .is_some_and(|p| !p.is_finished() && p != Phase::Pending)
    });
    if running {
        msg.push_str(
            "; this run creates no more pods (those already running finish the shards they hold)",
        );
    }
    Some(msg)
}

/// Runs the pipeline for one IngestJob.
pub async fn reconcile(ij: Arc<IngestJob>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    {
        let mut last = ctx.last_reconcile.lock().unwrap_or_else(|e| e.into_inner());
        let mut prompted = ctx.prompted.lock().unwrap_or_else(|e| e.into_inner());
        let k = key(&ij);
        let gap = gap_for(prompted.contains(&k), ctx.reconcile_gap);
        if let Some(wait) = throttle(last.get(&k).map(|t| t.elapsed()), gap) {
            tracing::debug!(ingestjob = %k, wait_ms = wait.as_millis() as u64, "reconcile held to the gap");
            return Ok(Action::requeue(wait));
        }
        prompted.remove(&k);
        last.insert(k, started);
    }
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
    if let Err(e) = &result
        && reports_api_error(e)
    {
        report_api_error(&ij, &ctx, e).await;
    }
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
        ctx.claims
            .forget(&ij.namespace().unwrap_or_default(), &ij.name_any());
        ctx.rbac.forget(&key(ij));
        return Ok(Action::await_change());
    }
    let ns = ij
        .namespace()
        .ok_or(Error::MissingField("IngestJob has no namespace"))?;
    let now = Timestamp::now();
    if let Err(errors) = validate_spec(&ij.spec) {
        write_status(ctx, ij, &status::invalid(ij, &errors, now), false).await?;
        return Err(Error::InvalidSpec(errors));
    }
    // A run whose verdict is written keeps it, whatever the policy says now.
    let recorded = status::recorded(ij.status.as_ref(), ij.spec.run);
    if let Some(msg) = (!recorded)
        .then(|| policy_denial(ij, &ctx.settings.policy_violations(ij)))
        .flatten()
    {
        let reason = ingest_api::constants::reasons::POLICY_DENIED;
        let st = status::refused(ij, reason, msg.clone(), now);
        write_status(ctx, ij, &st, false).await?;
        return Err(Error::PolicyDenied(msg));
    }
    let obs = observe::observe(&ctx.client, &ctx.caches, ij).await?;
    let passes = if recorded {
        Views::default()
    } else {
        set_up_passes(ij, &obs, &ctx.claims)?
    };
    let stage = stage::stage(ij, &obs, &passes);
    // A run whose record is written creates nothing more (Jobs deleted by hand are not run again).
    if !recorded {
        let children = desired(ij, &stage, &ctx.settings)?;
        apply_children(ctx, ij, &ns, &obs, children).await?;
    }
    apply::prune(&ctx.client, ij, &obs).await?;
    let st = status::compute(ij, &obs, &stage, &passes, now);
    ctx.metrics.job(
        &ns,
        &ij.name_any(),
        JobSample {
            phase: st.phase,
            files: st.progress.as_ref().map_or(0, |p| p.files),
            bytes: st.progress.as_ref().map_or(0, |p| p.bytes),
            servers: st.servers.clone(),
        },
    );
    // A finished pass whose checkpoint is not in the status yet holds its workers back: write now.
    let release = crate::claims::ROLES.into_iter().any(|role| {
        passes.of(role).is_some_and(|p| p.finished) && !ctx.claims.is_persisted(ij, role)
    });
    let wrote = write_status(ctx, ij, &st, release).await?;
    let later = match wrote {
        StatusWrite::Later(d) => Some(d),
        StatusWrite::Unchanged | StatusWrite::Written => None,
    };
    if later.is_none() {
        // The status holds the checkpoint just computed: a pass it shows finished may let its
        // workers go.
        for role in crate::claims::ROLES {
            if passes.of(role).is_some_and(|p| p.finished) {
                ctx.claims.mark_persisted(ij, role);
            }
        }
    }
    tracing::debug!(
        ingestjob = %key(ij),
        phase = ?st.phase,
        status = ?wrote,
        "reconciled"
    );
    let finished = st.phase.is_some_and(Phase::is_finished);
    if finished {
        // Nothing of a finished run may work on: workers still asking (FailJob stopped the run while
        // they copied) are told to stop, and exit with their reports written.
        ctx.claims.end_run(ij);
    }
    Ok(match later {
        Some(d) => Action::requeue(d),
        // Watches on Jobs and pods wake us on every change; the periodic requeue only catches missed events.
        None if finished => Action::await_change(),
        // Workers report to the claims endpoint, not through pod events: look again every status
        // interval while a pass runs, so progress reaches the status.
        None if matches!(
            stage,
            stage::Stage::Copy(..) | stage::Stage::Prune(..) | stage::Stage::Verify(..)
        ) =>
        {
            Action::requeue(ctx.status_interval.max(Duration::from_secs(1)))
        }
        // Soon enough to see a stall when no pod event comes (a hung mount sends none).
        None => Action::requeue(Duration::from_secs(
            ij.spec.stall_timeout_seconds().div_ceil(2).clamp(5, 60),
        )),
    })
}

/// Applies `children`, but the pods' RBAC objects only when they changed or were last applied long ago
/// ([`apply::rbac_due`]): they are the same on every pass of a job. An error forgets them, so the next
/// pass applies them again.
async fn apply_children(
    ctx: &Context,
    ij: &IngestJob,
    ns: &str,
    obs: &observe::Observed,
    children: Vec<Child>,
) -> Result<()> {
    let k = key(ij);
    let rbac = apply::rbac_hash(&children).filter(|h| ctx.rbac.due(&k, *h));
    let children: Vec<Child> = if rbac.is_some() {
        children
    } else {
        children
            .into_iter()
            .filter(|c| !apply::is_rbac(c))
            .collect()
    };
    match apply::apply(&ctx.client, ns, obs, &children).await {
        Ok(_) => {
            if let Some(h) = rbac {
                ctx.rbac.applied(k, h);
            }
            Ok(())
        }
        Err(e) => {
            ctx.rbac.forget(&k);
            Err(e)
        }
    }
}

/// Makes sure the current run's passes exist in `claims` (the copy pass once the plan is stored,
/// the verify pass once the copy pass ended), restored from the status checkpoint after an
/// operator restart; tells them which worker pods ended (their claims go back to the queue);
/// returns what they say.
pub fn set_up_passes(ij: &IngestJob, obs: &observe::Observed, claims: &Registry) -> Result<Views> {
    let run = ij.spec.run;
    let Some(plan) = obs.plan(ij, run) else {
        return Ok(Views::default());
    };
    let checkpoint = ij
        .status
        .as_ref()
        .filter(|s| s.run == Some(run))
        .and_then(|s| s.checkpoint.clone())
        .unwrap_or_default();
    let plan_error = |message: String| Error::Plan {
        prefix: crate::names::plan_prefix(ij, run),
        message,
    };
    let ended = |role: &'static str| {
        obs.pods_of(role, run)
            .filter(|p| {
                matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            })
            .filter_map(|p| p.metadata.name.as_deref())
            .collect::<Vec<_>>()
    };
    let verify_pass = |opening: Opening| -> Result<()> {
        claims
            .ensure(
                ij,
                labels::ROLE_VERIFY,
                plan.shards,
                checkpoint.verify.as_ref(),
                None,
                opening,
            )
            .map_err(plan_error)?;
        claims.workers_ended(ij, labels::ROLE_VERIFY, ended(labels::ROLE_VERIFY));
        Ok(())
    };
    if stage::frozen_spec(ij, obs).dry_run {
        // No copy pass: the verify pass compares from the start.
        verify_pass(Opening::Now)?;
        return Ok(claims.views(ij));
    }
    claims
        .ensure(
            ij,
            labels::ROLE_COPY,
            plan.shards,
            checkpoint.copy.as_ref(),
            None,
            Opening::Now,
        )
        .map_err(plan_error)?;
    claims.workers_ended(ij, labels::ROLE_COPY, ended(labels::ROLE_COPY));
    // As in `stage::stage`: a pass also ends when its Job finished (every worker gone) with
    // shards left; the verify pass then re-copies them, so its workers need a pass too.
    let ended_pass = |role: &'static str| -> bool {
        let views = claims.views(ij);
        let avoided = stage::Avoided::from_views(&views, ij.spec.destination.nfs.servers.len());
        let job_ended = stage::role_state(ij, obs, role, &avoided)
            .is_some_and(|s| s.finished && !s.failed_whole());
        views
            .of(role)
            .is_some_and(|v| (v.finished || job_ended) && v.stopped.is_none())
    };
    if !ended_pass(labels::ROLE_COPY) {
        // The verify workers start ahead (`stage::verify_ahead`); once made, the pass stays,
        // and a restarted operator makes it again for the verify Job it finds.
        let ahead = claims.has(ij, labels::ROLE_VERIFY)
            || obs.has_job_of(labels::ROLE_VERIFY, run)
            || stage::verify_ahead(
                &stage::frozen_spec(ij, obs),
                claims.view(ij, labels::ROLE_COPY).as_ref(),
            );
        if ahead {
            verify_pass(Opening::Ahead)?;
        }
        return Ok(claims.views(ij));
    }
    // A mirror whose copy pass found what it may delete runs its prune pass first.
    let frozen = stage::frozen_spec(ij, obs);
    let mut layout = stage::layout(&frozen, &plan);
    layout.deletes = stage::mirror_decision(
        &layout,
        &frozen,
        &plan,
        claims.view(ij, labels::ROLE_COPY).as_ref(),
        true,
    );
    if let Some(ingest_job::mirror::Decision::Prune { budgets, .. }) = &layout.deletes {
        claims
            .ensure(
                ij,
                labels::ROLE_PRUNE,
                plan.shards,
                checkpoint.prune.as_ref(),
                Some(budgets),
                Opening::Now,
            )
            .map_err(plan_error)?;
        claims.workers_ended(ij, labels::ROLE_PRUNE, ended(labels::ROLE_PRUNE));
        if !ended_pass(labels::ROLE_PRUNE) {
            return Ok(claims.views(ij));
        }
    }
    verify_pass(Opening::Now)?;
    Ok(claims.views(ij))
}

/// Errors that reach the status as a `Degraded` condition and an Event: failed API calls and our own
/// inconsistencies. Not an invalid spec (it has its own status) nor a conflict (an optimistic-concurrency
/// retry is routine).
fn reports_api_error(e: &Error) -> bool {
    !matches!(e.category(), Category::Invalid | Category::Conflict)
}

/// The status `ij` had, with `Degraded` True naming the failed call (pure). None when it already says so.
pub fn with_api_error(ij: &IngestJob, message: &str, now: Timestamp) -> Option<IngestJobStatus> {
    let mut st = ij.status.clone().unwrap_or_default();
    let message: String = message.chars().take(1000).collect();
    if ingest_api::conditions::find(&st.conditions, ct::DEGRADED)
        .is_some_and(|c| c.status == ct::TRUE && c.message == message)
    {
        return None;
    }
    let c = ingest_api::conditions::condition(
        ct::DEGRADED,
        true,
        ingest_api::constants::reasons::API_ERROR,
        message,
        ij.metadata.generation,
        Time(now),
    );
    let kept = ingest_api::conditions::merge_conditions(&st.conditions, vec![c.clone()]);
    st.conditions.retain(|c| c.type_ != ct::DEGRADED);
    st.conditions.extend(kept);
    Some(st)
}

/// Best effort: the error goes to the status (with the same resourceVersion precondition as every status
/// write, so it never overwrites a newer status) and to an Event.
async fn report_api_error(ij: &IngestJob, ctx: &Context, e: &Error) {
    let message = e.to_string();
    if let Some(st) = with_api_error(ij, &message, Timestamp::now())
        && let Err(err) = apply::patch_status(&ctx.client, ij, &st).await
    {
        tracing::debug!(error = %err, "reporting an API error in status failed");
    }
    publish(
        ctx,
        ij,
        vec![Event {
            type_: EventType::Warning,
            reason: ingest_api::constants::reasons::API_ERROR.into(),
            note: Some(message.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        }],
    )
    .await;
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
    fn a_server_found_unresponsive_gets_one_warning_event_in_its_run() {
        let server = |name: &str, state| ingest_api::ServerStatus {
            server: name.into(),
            state: Some(state),
            message: Some("3 operation(s) waiting 61 s with none finishing".into()),
            ..Default::default()
        };
        use ingest_api::ServerState::{Healthy, Unresponsive};
        let mut before = st(Phase::Copying, 9, false);
        before.servers = vec![server("10.0.0.1", Healthy), server("10.0.0.2", Healthy)];
        let mut after = before.clone();
        after.servers[1].state = Some(Unresponsive);
        let e = events_for(Some(&before), &after);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].type_, EventType::Warning);
        assert_eq!(e[0].reason, "ServerUnresponsive");
        let note = e[0].note.as_deref().unwrap();
        assert!(note.contains("10.0.0.2") && note.contains("61 s"), "{note}");
        // Said once: the next status with the same state adds nothing.
        assert!(events_for(Some(&after), &after.clone()).is_empty());
        // A new run that finds it hung again says so again.
        let mut next_run = after.clone();
        next_run.run = Some(1);
        assert_eq!(
            events_for(Some(&after), &next_run).len(),
            2,
            "the run's phase event too"
        );
    }

    #[test]
    fn one_event_per_phase_change_each_with_its_own_reason_warning_on_failure() {
        let with_reason = |phase: Phase, reason: &str| {
            let mut s = st(phase, 9, phase == Phase::Succeeded);
            s.conditions[0].reason = reason.into();
            s
        };
        let a = with_reason(Phase::Copying, "Copying");
        assert!(events_for(Some(&a), &with_reason(Phase::Copying, "Copying")).is_empty());
        let mut prev = with_reason(Phase::Pending, "Pending");
        let mut reasons = Vec::new();
        for (phase, reason) in [
            (Phase::Scanning, "Scanning"),
            (Phase::Copying, "Copying"),
            (Phase::Verifying, "Verifying"),
            (Phase::Succeeded, "SucceededWithFailures"),
        ] {
            let next = with_reason(phase, reason);
            let e = events_for(Some(&prev), &next);
            assert_eq!(e.len(), 1);
            assert_eq!(e[0].type_, EventType::Normal);
            assert!(
                e[0].note
                    .as_deref()
                    .unwrap()
                    .contains(&format!("{} → {phase}", prev.phase.unwrap())),
                "{:?}",
                e[0].note
            );
            reasons.push(e[0].reason.clone());
            prev = next;
        }
        assert_eq!(
            reasons,
            ["Scanning", "Copying", "Verifying", "SucceededWithFailures"],
            "distinct reasons: Kubernetes does not merge them into one series"
        );
        let failed = with_reason(Phase::Failed, "ShardFailed");
        let e = events_for(Some(&a), &failed);
        assert_eq!(
            (e[0].type_, e[0].reason.as_str()),
            (EventType::Warning, "ShardFailed")
        );
    }

    #[test]
    fn reconciles_are_throttled_not_debounced() {
        let gap = Duration::from_secs(1);
        assert_eq!(throttle(None, gap), None);
        assert_eq!(
            throttle(Some(Duration::from_millis(300)), gap),
            Some(Duration::from_millis(700))
        );
        assert_eq!(throttle(Some(Duration::from_millis(1000)), gap), None);
        // However many triggers arrive, the wait is bounded by the gap since the last pass.
        for ms in (0..1000).step_by(37) {
            assert!(throttle(Some(Duration::from_millis(ms)), gap).unwrap() <= gap);
        }
    }

    #[test]
    fn a_run_that_may_have_moved_on_is_reconciled_promptly() {
        let gap = RECONCILE_GAP;
        let since = |ms| Some(Duration::from_millis(ms));
        // A pass ended 150 ms after the last reconcile: its run goes on now, not 850 ms later.
        assert_eq!(throttle(since(150), gap_for(true, gap)), None);
        assert_eq!(
            throttle(since(150), gap_for(false, gap)),
            Some(Duration::from_millis(850))
        );
        // Many ends at once (a pass's workers exiting) still cost one reconcile per PROMPT_GAP.
        assert_eq!(
            throttle(since(5), gap_for(true, gap)),
            Some(PROMPT_GAP - Duration::from_millis(5))
        );
        assert_eq!(
            gap_for(true, Duration::ZERO),
            Duration::ZERO,
            "tests' zero gap stays"
        );
    }

    #[test]
    fn an_api_error_sets_degraded_once() {
        let mut ij: IngestJob = serde_json::from_value(serde_json::json!({
            "apiVersion": "ingest.vfxt.dev/v1alpha1", "kind": "IngestJob",
            "metadata": {"name": "x", "namespace": "n", "generation": 3},
            "spec": {"source": {"pvc": {"claimName": "c"}}, "destination": {"nfs": {"servers": ["10.0.0.1"], "path": "/n"}}},
        }))
        .unwrap();
        ij.status = Some(st(Phase::Copying, 1, false));
        let t = Timestamp::from_second(100).unwrap();
        let st1 = with_api_error(&ij, "list Pods: 503 Service Unavailable", t).unwrap();
        let d = ingest_api::conditions::find(&st1.conditions, ct::DEGRADED).unwrap();
        assert_eq!(
            (d.status.as_str(), d.reason.as_str(), d.message.as_str()),
            ("True", "ApiError", "list Pods: 503 Service Unavailable")
        );
        assert_eq!(st1.phase, Some(Phase::Copying), "nothing else changes");
        ij.status = Some(st1);
        assert!(with_api_error(&ij, "list Pods: 503 Service Unavailable", t).is_none());
    }
}
