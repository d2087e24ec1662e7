//! Where a run stands (pure): which Jobs exist and how they ended decide the stage; the layout says which shards
//! and how many workers each destination server gets.

use std::collections::{BTreeMap, BTreeSet};

use ingest_api::constants::labels;
use ingest_api::{FailureAction, IngestJob, IngestJobSpec};
use ingest_job::mirror::{Decision, MaxDeletes};
use k8s_openapi::api::batch::v1::Job;

use crate::claims::Views;
use crate::names;
use crate::observe::Observed;
use crate::plan_store::PlanSummary;

/// Who works on a run's passes: every worker pod mounts every destination server (but those
/// found unresponsive) and claims shards from the pass's queue, so no server is dealt a fixed
/// share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The destination servers, in `spec.destination.nfs.servers` order (`/ingest/dest-<i>`).
    pub servers: Vec<String>,
    /// Worker pods of each pass: `spec.workers` (default: one per server), never more than there
    /// are shards.
    pub workers: u32,
    /// Servers (by index) each pass found unresponsive: its newest Job's pods do not mount them.
    pub avoided: Avoided,
    /// `spec.dryRun` when the run's scan started: no copy pass; the verify pass compares only.
    pub dry_run: bool,
    /// `spec.mode: Mirror` (with `maxDeletes`) when the run's scan started: the copy pass weighs
    /// what only the destination has.
    pub mirror: Option<MaxDeletes>,
    /// Once the copy pass ended, what the mirror does: a prune pass runs only for
    /// [`Decision::Prune`].
    pub deletes: Option<Decision>,
    /// `verify.scope: Changed`: the verify pass reads the content of files whose destination
    /// ctime is at or after this (the copy pass's earliest write, less the margin).
    pub content_changed_since: Option<i64>,
    /// The verify pass exists while the copy pass runs ([`verify_ahead`]): its workers start
    /// during the copy's last shards.
    pub verify_ahead: bool,
    /// Each server's time per entry (µs, by index) in the copy pass so far: the passes after it
    /// start knowing which server is slow (`worker --mount-pace`), as they do in local `run`.
    pub paces: BTreeMap<usize, u64>,
}

/// Whether the verify pass's workers start before the copy pass ends (pure): once the copy is
/// near its end ([`ingest_job::Pace::ends_soon`]: every shard handed out, or what is left takes
/// no longer than two of its own wave's start-ups at its pace so far), when the verify pass is
/// sure to come next and its Job depends on nothing the copy has yet to say. They start, ask,
/// and are held until the copy ends: the pod start-up of the verify wave (seconds on a real
/// cluster: scheduling, NFS mounts) is spent during the copy's tail instead of after it, and
/// they wait about one start-up at most, not the whole copy. Not for a mirror (a prune pass
/// may come first), `failurePolicy.action: FailJob` (a failure stops the run before verify),
/// nor `verify.scope: Changed` (its Job carries the copy's earliest write).
pub fn verify_ahead(spec: &IngestJobSpec, copy: Option<&crate::claims::PassView>) -> bool {
    let Some(copy) = copy else { return false };
    !spec.dry_run
        && spec.mode.is_copy()
        && spec.failure_policy.action != FailureAction::FailJob
        && spec.verify.scope != ingest_api::job::VerifyScope::Changed
        && !copy.finished
        && copy.stopped.is_none()
        && copy.counts.running > 0
        && ingest_job::Pace::ends_soon(copy.pace.as_ref(), copy.counts.pending, copy.counts.running)
}

impl Layout {
    /// The worker passes of the run, in order.
    pub fn passes(&self) -> &'static [&'static str] {
        if self.dry_run {
            &[labels::ROLE_VERIFY]
        } else if self.prunes() {
            &[labels::ROLE_COPY, labels::ROLE_PRUNE, labels::ROLE_VERIFY]
        } else {
            &[labels::ROLE_COPY, labels::ROLE_VERIFY]
        }
    }

    /// The run has a prune pass (its copy pass found what it may delete).
    pub fn prunes(&self) -> bool {
        matches!(self.deletes, Some(Decision::Prune { .. }))
    }
}

/// What a mirror does after its copy pass (`None`: not a mirror, a dry run, or the copy pass not
/// ended yet). `copy_ended`: its Job finished with shards left (lost). Pure, so every reconcile
/// and a restarted operator decide alike from the same checkpoint.
pub fn mirror_decision(
    layout: &Layout,
    spec: &IngestJobSpec,
    plan: &PlanSummary,
    copy: Option<&crate::claims::PassView>,
    copy_ended: bool,
) -> Option<Decision> {
    let limit = layout.mirror.filter(|_| !layout.dry_run)?;
    let copy = copy.filter(|c| c.finished || copy_ended)?;
    Some(ingest_api::report::mirror_decision(
        limit,
        ingest_job::Policy {
            fail_job: spec.failure_policy.action == FailureAction::FailJob,
            max_failed_files: spec.failure_policy.max_failed_files,
        },
        plan.failed,
        &copy.sum,
        copy.counts.total.saturating_sub(copy.counts.completed),
    ))
}

/// Servers found unresponsive, per pass (later passes start with the copy pass's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Avoided {
    pub copy: BTreeSet<usize>,
    pub prune: BTreeSet<usize>,
    pub verify: BTreeSet<usize>,
}

impl Avoided {
    pub fn of(&self, role: &str) -> &BTreeSet<usize> {
        match role {
            labels::ROLE_VERIFY => &self.verify,
            labels::ROLE_PRUNE => &self.prune,
            _ => &self.copy,
        }
    }

    /// From what the passes say (mounts as workers name them).
    pub fn from_views(passes: &Views, servers: usize) -> Avoided {
        let of = |v: Option<&crate::claims::PassView>| {
            v.into_iter()
                .flat_map(|v| v.avoided.keys())
                .filter_map(|m| crate::desired::server_of_mount(m, servers))
                .collect()
        };
        Avoided {
            copy: of(passes.copy.as_ref()),
            prune: of(passes.prune.as_ref()),
            verify: of(passes.verify.as_ref()),
        }
    }
}

/// Each server's time per entry (µs, by index) from what a pass's workers measured (mounts as
/// workers name them, every worker's figures summed); servers with no finished task are left out.
pub fn paces(pass: Option<&crate::claims::PassView>, servers: usize) -> BTreeMap<usize, u64> {
    let mut by_server: BTreeMap<usize, ingest_api::claims::MountFigures> = BTreeMap::new();
    for (mount, figures) in pass.into_iter().flat_map(|p| &p.mounts) {
        if let Some(i) = crate::desired::server_of_mount(mount, servers) {
            by_server.entry(i).or_default().add(figures);
        }
    }
    by_server
        .into_iter()
        .filter_map(|(i, f)| {
            Some((
                i,
                ingest_job::latency::time_per_entry(&f.latency, f.entries)?,
            ))
        })
        .collect()
}

impl Layout {
    /// The name of `role`'s newest worker Job in `run`.
    pub fn job_name(&self, ij: &IngestJob, run: i64, role: &str) -> String {
        names::worker_job(ij, run, role, self.avoided.of(role).len())
    }

    /// Servers the pods of `role`'s newest Job mount, by index.
    pub fn mounted(&self, role: &str) -> impl Iterator<Item = (usize, &String)> {
        let avoided = self.avoided.of(role);
        self.servers
            .iter()
            .enumerate()
            .filter(move |(i, _)| !avoided.contains(i))
    }
}

/// The run's layout from the (frozen) spec and the plan.
pub fn layout(spec: &IngestJobSpec, plan: &PlanSummary) -> Layout {
    let servers = spec.destination.nfs.servers.clone();
    let w = spec.workers.unwrap_or(servers.len() as u32).max(1);
    Layout {
        workers: ingest_job::workers_for(w, usize::try_from(plan.shards).unwrap_or(usize::MAX)),
        servers,
        avoided: Avoided::default(),
        dry_run: spec.dry_run,
        // Checked with the spec: a refused maxDeletes never gets this far.
        mirror: spec.mirror_limit().ok().flatten(),
        deletes: None,
        content_changed_since: None,
        verify_ahead: false,
        paces: BTreeMap::new(),
    }
}

/// How a Job stands, from its status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobState {
    /// Finished (Complete or Failed condition).
    pub finished: bool,
    /// Failed condition true.
    pub failed: bool,
    /// Indexes (or completions) that succeeded.
    pub succeeded: u64,
    /// Indexes that failed after their retries.
    pub failed_indexes: u64,
    /// Pods running.
    pub active: u64,
    /// The Failed condition's reason and message (e.g. `PodFailurePolicy`, `FailedIndexes`).
    pub failure: Option<(String, String)>,
}

impl JobState {
    /// Failed as a whole, not merely with failed indexes: a `FailJob` rule matched (exit 2), or the Job's own
    /// limits (deadline, backoff limit) ended it. The rest of its shards were never done.
    pub fn failed_whole(&self) -> bool {
        self.failed
            && match self.failure.as_ref().map_or("", |(r, _)| r.as_str()) {
                "FailedIndexes" | "MaxFailedIndexesExceeded" => false,
                // No reason given: failed indexes explain it.
                "" => self.failed_indexes == 0,
                _ => true,
            }
    }
}

/// Reads a Job's status.
pub fn job_state(job: &Job) -> JobState {
    let Some(st) = &job.status else {
        return JobState::default();
    };
    let cond = |t: &str| {
        st.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == t && c.status == "True")
    };
    let failed = cond("Failed");
    let failure = st
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Failed" && c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        });
    JobState {
        failure,
        finished: cond("Complete") || failed,
        failed,
        succeeded: st
            .completed_indexes
            .as_deref()
            .map(count_indexes)
            .unwrap_or(st.succeeded.unwrap_or(0) as u64),
        failed_indexes: st.failed_indexes.as_deref().map(count_indexes).unwrap_or(0),
        active: st.active.unwrap_or(0) as u64,
    }
}

/// Counts the indexes in Kubernetes' compressed form `"1,3-5,7"`.
pub use ingest_job::indexes::count as count_indexes;

/// The stage of the current run.
#[derive(Clone, Debug, PartialEq)]
pub enum Stage {
    /// The scan Job is missing or running.
    Scan,
    /// The scan failed after its retries, or finished without a plan.
    ScanFailed(String),
    /// Copy Jobs are missing or running.
    Copy(PlanSummary, Layout),
    /// `mode: Mirror`: prune Jobs are missing or running.
    Prune(PlanSummary, Layout),
    /// Verify Jobs are missing or running.
    Verify(PlanSummary, Layout),
    /// All Jobs of the run finished. `failed_shards` counts indexes that failed after their retries.
    Done {
        plan: PlanSummary,
        layout: Layout,
        failed_shards: u64,
    },
    /// A Job of the `role` pass failed as a whole (exit 2, unusable input: `FailJob` rule of the pod failure
    /// policy), or `failurePolicy.action: FailJob` and a shard failed: the run ends here. No later pass starts,
    /// and workers of the run still asking for work are told to stop. `cause` says which and why.
    Stopped {
        plan: PlanSummary,
        layout: Layout,
        failed_shards: u64,
        role: &'static str,
        cause: String,
    },
}

impl Stage {
    /// Roles whose Jobs must exist in this stage.
    pub fn roles(&self) -> &'static [&'static str] {
        match self {
            Stage::Scan | Stage::ScanFailed(_) => &[labels::ROLE_SCAN],
            Stage::Copy(_, l) if l.verify_ahead => {
                &[labels::ROLE_SCAN, labels::ROLE_COPY, labels::ROLE_VERIFY]
            }
            Stage::Copy(..) => &[labels::ROLE_SCAN, labels::ROLE_COPY],
            Stage::Prune(..) => &[labels::ROLE_SCAN, labels::ROLE_COPY, labels::ROLE_PRUNE],
            Stage::Verify(_, l) | Stage::Done { layout: l, .. } if l.prunes() => &[
                labels::ROLE_SCAN,
                labels::ROLE_COPY,
                labels::ROLE_PRUNE,
                labels::ROLE_VERIFY,
            ],
            // A dry run has no copy pass.
            Stage::Verify(_, l) | Stage::Done { layout: l, .. } if l.dry_run => {
                &[labels::ROLE_SCAN, labels::ROLE_VERIFY]
            }
            Stage::Verify(..) | Stage::Done { .. } => {
                &[labels::ROLE_SCAN, labels::ROLE_COPY, labels::ROLE_VERIFY]
            }
            // Nothing new is created once FailJob stopped the run.
            Stage::Stopped { .. } => &[],
        }
    }

    /// The plan and layout, once the scan stored a plan.
    pub fn plan(&self) -> Option<(&PlanSummary, &Layout)> {
        match self {
            Stage::Scan | Stage::ScanFailed(_) => None,
            Stage::Copy(p, l)
            | Stage::Prune(p, l)
            | Stage::Verify(p, l)
            | Stage::Done {
                plan: p, layout: l, ..
            }
            | Stage::Stopped {
                plan: p, layout: l, ..
            } => Some((p, l)),
        }
    }
}

/// The state of `role`'s newest Job of the current run, if it exists (`avoided`: the servers
/// the pass found unresponsive, which name it).
pub fn role_state(
    ij: &IngestJob,
    obs: &Observed,
    role: &str,
    avoided: &Avoided,
) -> Option<JobState> {
    obs.job(&names::worker_job(
        ij,
        ij.spec.run,
        role,
        avoided.of(role).len(),
    ))
    .map(job_state)
}

/// Jobs of the current run that have not finished (their workers are told to stop when the run is).
pub fn unfinished_jobs<'a>(ij: &IngestJob, obs: &'a Observed) -> Vec<&'a Job> {
    obs.jobs
        .iter()
        .filter(|j| crate::observe::run_of(&j.metadata.labels) == Some(ij.spec.run))
        .filter(|j| !job_state(j).finished)
        .filter(|j| j.spec.as_ref().and_then(|s| s.suspend) != Some(true))
        .collect()
}

/// Annotation on every Job: `metadata.generation` of the IngestJob the Job was built from.
pub const GENERATION_ANNOTATION: &str = "ingest.vfxt.dev/generation";
/// Annotation on every Job: [`spec_hash`] of the spec it was built from.
pub const SPEC_HASH_ANNOTATION: &str = "ingest.vfxt.dev/spec-hash";

/// A stable hash of what a run's Jobs take from the spec: all of it but `failurePolicy.maxFailedFiles`, which
/// is read when the verdict is made, and `suspend`, which the claims endpoint applies; neither is built
/// into a Job.
pub fn spec_hash(spec: &IngestJobSpec) -> String {
    let mut s = spec.clone();
    s.failure_policy.max_failed_files = None;
    s.suspend = false;
    let json = serde_json::to_vec(&s).unwrap_or_default();
    let h = json.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    });
    format!("{h:016x}")
}

/// The generation whose spec the current run actually uses (pure): the IngestJob's own, unless a Job of the
/// run was built from a spec that differs from today's in something the Job holds (threads, preserve,
/// workers, verify mode, ...), which applies only from the next run; then the oldest such Job's generation.
/// GitOps tools then see `observedGeneration < generation` and do not report a change as applied.
pub fn applied_generation(ij: &IngestJob, obs: &Observed) -> Option<i64> {
    let hash = spec_hash(&ij.spec);
    obs.jobs
        .iter()
        .filter(|j| crate::observe::run_of(&j.metadata.labels) == Some(ij.spec.run))
        .filter_map(|j| {
            let a = j.metadata.annotations.as_ref()?;
            (a.get(SPEC_HASH_ANNOTATION)? != &hash)
                .then(|| a.get(GENERATION_ANNOTATION)?.parse().ok())?
        })
        .min()
        .or(ij.metadata.generation)
}

/// Annotation on the scan Job recording `spec.workers` when the run started. Jobs cannot change their
/// completions, so the layout of a run is frozen: a changed worker count applies from the next run.
pub const WORKERS_ANNOTATION: &str = "ingest.vfxt.dev/workers";

/// Annotation on the scan Job recording `spec.dryRun` when the run started: a run that began as
/// a dry run stays one (and a copy stays a copy) whatever the spec says meanwhile.
pub const DRY_RUN_ANNOTATION: &str = "ingest.vfxt.dev/dry-run";

/// Annotation on the scan Job recording `spec.mode` when the run started: a run deletes (or not)
/// as its scan was told, whatever the spec says meanwhile.
pub const MODE_ANNOTATION: &str = "ingest.vfxt.dev/mode";

/// The spec with the worker count, the dry-run switch and the mode the run started with.
pub fn frozen_spec(ij: &IngestJob, obs: &Observed) -> IngestJobSpec {
    let mut spec = ij.spec.clone();
    let scan = obs.job(&names::scan_job(ij, ij.spec.run));
    let frozen = |key: &str| scan?.metadata.annotations.as_ref()?.get(key).cloned();
    if let Some(w) = frozen(WORKERS_ANNOTATION).and_then(|w| w.parse().ok()) {
        spec.workers = Some(w);
    }
    if let Some(d) = frozen(DRY_RUN_ANNOTATION).and_then(|d| d.parse().ok()) {
        spec.dry_run = d;
    }
    if let Some(m) = frozen(MODE_ANNOTATION)
        .and_then(|m| serde_json::from_value(serde_json::Value::String(m)).ok())
    {
        spec.mode = m;
        if m == ingest_api::job::Mode::Copy {
            // A limit without Mirror would be refused; it applies to no run that started as a copy.
            spec.max_deletes = None;
        }
    }
    spec
}

/// The state of run `run`'s scan Job, finished as soon as its pod succeeded: the Job's Complete
/// condition follows the pod by the Job controller's batching of pod updates (about a second),
/// which every run would otherwise wait before its copy starts. A scan pod that exits 0 has stored
/// the plan (a plan the cache still lacks is read from the API server, see
/// [`crate::observe::plan_to_confirm`]).
pub fn scan_state(ij: &IngestJob, obs: &Observed, run: i64) -> Option<JobState> {
    let mut scan = job_state(obs.job(&names::scan_job(ij, run))?);
    let succeeded = |p: &k8s_openapi::api::core::v1::Pod| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
    };
    if !scan.failed && obs.pods_of(labels::ROLE_SCAN, run).any(succeeded) {
        scan.finished = true;
    }
    Some(scan)
}

/// Decides the stage of `ij.spec.run` from what exists and what the passes say.
pub fn stage(ij: &IngestJob, obs: &Observed, passes: &Views) -> Stage {
    let run = ij.spec.run;
    let Some(scan) = scan_state(ij, obs, run) else {
        return Stage::Scan;
    };
    // The plan's chunk 0 is its commit marker: the scan stores it last, and a later attempt of
    // the scan never replaces it (`plan_store::save`). The run moves on as soon as it is there,
    // not when the scan pod's exit reaches the API server (a kubelet reports it a second or so
    // later); whatever befalls the scan pod after that changes no plan.
    let plan = obs.plan(ij, run);
    if scan.failed && plan.is_none() {
        let why = match &scan.failure {
            Some((r, m)) if r == "PodFailurePolicy" => {
                format!("the scan stopped on unusable input (exit 2): {m}; see its pod logs")
            }
            Some((r, m)) if !r.is_empty() => {
                format!("the scan Job failed after its retries ({r}: {m}); see its pod logs")
            }
            _ => "the scan Job failed after its retries; see its pod logs".to_owned(),
        };
        return Stage::ScanFailed(why);
    }
    let Some(plan) = plan else {
        if !scan.finished {
            return Stage::Scan;
        }
        return Stage::ScanFailed("the scan finished without storing a plan".into());
    };
    let frozen = frozen_spec(ij, obs);
    let mut layout = layout(&frozen, &plan);
    layout.avoided = Avoided::from_views(passes, layout.servers.len());
    layout.paces = paces(passes.copy.as_ref(), layout.servers.len());
    let copy_ended = role_state(ij, obs, labels::ROLE_COPY, &layout.avoided)
        .is_some_and(|s| s.finished && !s.failed_whole());
    layout.deletes = mirror_decision(&layout, &frozen, &plan, passes.copy.as_ref(), copy_ended);
    // Made by `reconcile::set_up_passes` by the rule of `verify_ahead`.
    layout.verify_ahead = passes.verify.is_some();
    if frozen.verify.scope == ingest_api::job::VerifyScope::Changed {
        // Unknown (no copy worker said when it began): every file's content is read.
        layout.content_changed_since = passes
            .copy
            .as_ref()
            .and_then(|c| c.checkpoint.write_started)
            .map(|t| t - ingest_api::job::changed_scope_margin());
    }
    let fail_fast = ij.spec.failure_policy.action == FailureAction::FailJob;
    if fail_fast && plan.failed > 0 {
        // Entries the scan could not read count like files that failed to copy.
        return Stage::Stopped {
            cause: format!(
                "the scan could not read {} entr{} and the failure policy is FailJob",
                plan.failed,
                if plan.failed == 1 { "y" } else { "ies" }
            ),
            failed_shards: 0,
            plan,
            layout,
            role: labels::ROLE_SCAN,
        };
    }
    let mut failed_shards = 0;
    // The verify role runs even with `verify.mode: None`: its workers then only set directory
    // metadata, which other shards' copies change until every shard is done.
    for &role in layout.passes() {
        let job = role_state(ij, obs, role, &layout.avoided);
        let pass = passes.of(role);
        let lost = pass.map_or(0, |p| p.counts.lost);
        let cause = if let Some(why) = pass.and_then(|p| p.stopped.as_deref()) {
            Some(format!("a {role} worker stopped on unusable input: {why}"))
        } else if let Some((reason, message)) = job
            .as_ref()
            .filter(|s| s.failed_whole())
            .map(|s| s.failure.clone().unwrap_or_default())
        {
            Some(format!(
                "the {role} Job {} failed ({reason}: {message})",
                layout.job_name(ij, run, role)
            ))
        } else if fail_fast && lost > 0 {
            Some(format!(
                "{lost} shard(s) of the {role} pass were lost (their workers ended through all retries) and the failure policy is FailJob"
            ))
        } else {
            // FailJob stops at the first shard that finished with failed entries, as it always did.
            pass.map(|p| p.sum.failed)
                .filter(|f| fail_fast && *f > 0)
                .map(|failed| {
                    format!(
                        "{failed} entr{} failed in the {role} pass and the failure policy is FailJob",
                        if failed == 1 { "y" } else { "ies" }
                    )
                })
        };
        if let Some(cause) = cause {
            return Stage::Stopped {
                failed_shards: lost,
                plan,
                layout,
                role,
                cause,
            };
        }
        let finished = pass.is_some_and(|p| p.finished);
        // Every worker pod ended (through its retries) while shards were left: nobody will claim
        // them, so they are lost.
        let abandoned = !finished && pass.is_some() && job.as_ref().is_some_and(|s| s.finished);
        // The last pass's workers write their full reports when they exit, after the pass is
        // finished: the run's record waits for them, so the reports it points at
        // (`status.report`, from `spec.report`) are complete. With none to point at, nothing
        // waits: every figure of the verdict is in the pass already. Pods not yet started do
        // not hold it up (they will be told the pass is over), nor do workers that found a
        // server hung and left (their exit may never finish).
        let gave_up =
            |name: Option<&str>| pass.zip(name).is_some_and(|(p, n)| p.gave_up.contains(n));
        let draining = finished
            && role == labels::ROLE_VERIFY
            && ij.spec.report.is_some()
            && obs.pods_of(role, run).any(|p| {
                p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    && !gave_up(p.metadata.name.as_deref())
            });
        if (!finished && !abandoned) || draining {
            return match role {
                labels::ROLE_COPY => Stage::Copy(plan, layout),
                labels::ROLE_PRUNE => Stage::Prune(plan, layout),
                _ => Stage::Verify(plan, layout),
            };
        }
        // Verify re-copies what the copy pass missed, so the verify pass's lost shards are the
        // final word (the status adds the copy's when verify is None).
        failed_shards = pass.map_or(0, |p| p.counts.total.saturating_sub(p.counts.completed));
        if fail_fast && failed_shards > 0 {
            return Stage::Stopped {
                cause: format!(
                    "{failed_shards} shard(s) of the {role} pass were lost (every worker ended) and the failure policy is FailJob"
                ),
                failed_shards,
                plan,
                layout,
                role,
            };
        }
    }
    Stage::Done {
        plan,
        layout,
        failed_shards,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(servers: usize, workers: Option<u32>) -> IngestJobSpec {
        let mut s: IngestJobSpec = serde_json::from_value(serde_json::json!({
            "source": {"pvc": {"claimName": "x"}},
            "destination": {"nfs": {"servers": (0..servers).map(|i| format!("10.0.0.{}", i + 1)).collect::<Vec<_>>(), "path": "/nfs"}},
        }))
        .unwrap();
        s.workers = workers;
        s
    }

    fn plan(per_server: &[u64]) -> PlanSummary {
        PlanSummary {
            chunks: 1,
            shards: per_server.iter().sum(),
            shards_per_server: per_server.to_vec(),
            totals: Default::default(),
            ..Default::default()
        }
    }

    #[test]
    fn every_worker_gets_every_server_and_workers_never_exceed_shards() {
        let l = layout(&spec(3, Some(7)), &plan(&[4, 3, 3]));
        assert_eq!((l.servers.len(), l.workers), (3, 7));
        let l = layout(&spec(3, None), &plan(&[1, 1]));
        assert_eq!(
            l.workers, 2,
            "one per server by default, capped by the 2 shards"
        );
        let l = layout(&spec(1, Some(50)), &plan(&[3]));
        assert_eq!(l.workers, 3);
    }

    #[test]
    fn verify_workers_start_ahead_only_when_the_verify_pass_surely_comes_next() {
        use crate::claims::PassView;
        let tail = |pending, running, finished| PassView {
            counts: ingest_job::pass::Counts {
                total: 4,
                pending,
                running,
                completed: 4 - pending - running,
                lost: 0,
            },
            finished,
            ..PassView::default()
        };
        let s = spec(3, None);
        assert!(
            verify_ahead(&s, Some(&tail(0, 2, false))),
            "every shard handed out"
        );
        assert!(
            !verify_ahead(&s, Some(&tail(1, 2, false))),
            "one still to hand out"
        );
        assert!(
            !verify_ahead(&s, Some(&tail(0, 0, true))),
            "ended: no longer ahead"
        );
        assert!(!verify_ahead(&s, None));
        // Shards still to hand out, but what is left takes less than two of the copy wave's
        // start-ups at its pace (3 completed in 30 ms, 10 ms each; 3 left; 20 ms to start).
        let paced = |startup_ms| PassView {
            pace: Some(ingest_job::Pace {
                startup_ms,
                busy_ms: 30,
                ended: 3,
            }),
            counts: ingest_job::pass::Counts {
                total: 6,
                pending: 1,
                running: 2,
                completed: 3,
                lost: 0,
            },
            ..PassView::default()
        };
        assert!(verify_ahead(&s, Some(&paced(20))), "near its end");
        assert!(!verify_ahead(&s, Some(&paced(10))), "not yet: 30 ms left");
        let stopped = PassView {
            stopped: Some("unusable".into()),
            ..tail(0, 2, false)
        };
        assert!(!verify_ahead(&s, Some(&stopped)), "the run stops there");
        let with = |f: &dyn Fn(&mut IngestJobSpec)| {
            let mut s = spec(3, None);
            f(&mut s);
            verify_ahead(&s, Some(&tail(0, 2, false)))
        };
        assert!(!with(&|s| s.failure_policy.action = FailureAction::FailJob));
        assert!(!with(&|s| s.mode = ingest_api::job::Mode::Mirror));
        assert!(!with(
            &|s| s.verify.scope = ingest_api::job::VerifyScope::Changed
        ));
        assert!(!with(&|s| s.dry_run = true));
    }

    #[test]
    fn index_ranges_count() {
        assert_eq!(count_indexes(""), 0);
        assert_eq!(count_indexes("0"), 1);
        assert_eq!(count_indexes("1,3-5,7"), 5);
    }
}
