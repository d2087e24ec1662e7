//! The operator's side of the claims protocol (`ingest_api::claims`): one [`ingest_job::Pass`] per
//! (IngestJob, run, role), kept in memory and checkpointed into the IngestJob status with every
//! status write. Worker pods talk to it over HTTP ([`crate::http`]); the reconcile creates passes,
//! tells them about pods that ended, and reads them ([`PassView`]) to decide the stage and status.
//! A pass that ends, or hands out its last shard, wakes its IngestJob's reconcile
//! ([`Registry::with_trigger`]).
//!
//! A worker that holds nothing and is told to wait is answered when something it could act on
//! changes, within [`HOLD`] ([`Registry::handle_held`]): the pass's end reaching the status lets
//! its workers exit at once, and a shard back in the queue goes to an idle worker at once, instead
//! of at the worker's next ask, a second later.
//!
//! Why HTTP to the operator and not Kubernetes objects (Leases, ConfigMaps or pod annotations per
//! claim): see the README, "Claims". In short: a claim costs no API server write, the queue has
//! one owner (no optimistic-concurrency storms at 500 workers), and workers need no RBAC at all.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::channel::mpsc::UnboundedSender;
use ingest_api::IngestJob;
use ingest_api::claims::{
    ClaimRequest, ClaimResponse, LEASE_SECONDS, MountFigures, PassCheckpoint, PassState,
};
use ingest_api::report::{PodProgress, PodResult};
use ingest_job::{Checkpoint, Pass, Report, Unresponsive};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

/// A pass's identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub run: i64,
    pub role: String,
}

impl Key {
    pub fn of(ij: &IngestJob, role: &str) -> Key {
        Key {
            namespace: ij.namespace().unwrap_or_default(),
            name: ij.name_any(),
            uid: ij.uid().unwrap_or_default(),
            run: ij.spec.run,
            role: role.to_owned(),
        }
    }

    fn of_request(r: &ClaimRequest) -> Key {
        Key {
            namespace: r.namespace.clone(),
            name: r.job.clone(),
            uid: r.uid.clone(),
            run: r.run,
            role: r.role.clone(),
        }
    }
}

/// What the pure steps read from a pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PassView {
    pub counts: ingest_job::pass::Counts,
    /// Its pace so far (None before its first shard was handed out).
    pub pace: Option<ingest_job::Pace>,
    /// Every shard ended.
    pub finished: bool,
    /// A worker reported unusable input.
    pub stopped: Option<String>,
    /// Sum of the completed shards' results.
    pub sum: PodResult,
    /// Progress of shards still being worked on (live workers' last reports).
    pub in_flight: PodProgress,
    /// Workers that reported in the last lease period.
    pub live_workers: u64,
    /// For the status.
    pub checkpoint: PassCheckpoint,
    /// Destination mounts found unresponsive, with what the worker saw.
    pub avoided: BTreeMap<String, String>,
    /// Per destination mount (as workers name it), every worker's figures summed.
    pub mounts: BTreeMap<String, MountFigures>,
    /// Worker pods that found a destination unresponsive and left: their process may never end
    /// (threads stuck on a hung hard mount), so nothing waits for them.
    pub gave_up: std::collections::BTreeSet<String>,
}

/// The passes of a run, as far as they exist.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Views {
    pub copy: Option<PassView>,
    /// `spec.mode: Mirror`, when the copy pass found something it may delete.
    pub prune: Option<PassView>,
    pub verify: Option<PassView>,
}

/// The worker passes a run may have, in order.
pub const ROLES: [&str; 3] = [
    ingest_api::constants::labels::ROLE_COPY,
    ingest_api::constants::labels::ROLE_PRUNE,
    ingest_api::constants::labels::ROLE_VERIFY,
];

impl Views {
    pub fn of(&self, role: &str) -> Option<&PassView> {
        match role {
            ingest_api::constants::labels::ROLE_COPY => self.copy.as_ref(),
            ingest_api::constants::labels::ROLE_PRUNE => self.prune.as_ref(),
            ingest_api::constants::labels::ROLE_VERIFY => self.verify.as_ref(),
            _ => None,
        }
    }
}

/// Why a message was refused, as the HTTP status the worker acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 404: no such pass (the run moved on, or the IngestJob is gone): the worker exits 0.
    NoPass,
    /// 503: this operator has not set up the pass yet (it just started): ask again.
    NotReady,
}

type P = Pass<PodResult, PodProgress>;

/// The longest the endpoint holds a `wait` answer to a worker that holds nothing (well inside
/// the worker's 30 s request timeout and a standby's 20 s to pass a message on).
pub const HOLD: Duration = Duration::from_secs(5);

/// Whether the answer to a message may wait ([`Registry::handle_held`]) (pure): it gives
/// nothing and says to go on or wait, to a worker that holds nothing and asks for work, or that
/// waits for a closed pass to open (its first message). A worker holding shards is answered at
/// once: its messages renew their leases.
pub fn may_hold(req: &ClaimRequest, answer: &ClaimResponse) -> bool {
    req.holding.is_empty()
        && req.unusable.is_none()
        && req.unresponsive.is_none()
        && (req.room > 0 || answer.closed)
        && answer.shards.is_empty()
        && matches!(answer.state, PassState::Wait | PassState::Work)
}

/// When a pass hands out shards ([`Registry::ensure`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// Now (unless `spec.suspend`): its turn has come.
    Now,
    /// Made ahead of its turn, closed: its workers can start and ask, and are told to wait
    /// (held, [`Registry::handle_held`]) until it is made again with [`Opening::Now`], when the
    /// pass before it ended. What their pod start-up costs is spent while that pass's last
    /// shards run.
    Ahead,
}

/// A pass and whether the status holds it finished.
struct Entry {
    pass: P,
    /// The pass is finished and its checkpoint (every completion) is in the IngestJob status.
    /// Until then its workers are told to wait rather than to exit: a completion that reached
    /// only this operator's memory must not be the last copy of it when the workers are gone.
    persisted: bool,
    /// Each worker's last figures per destination mount (cumulative for the worker, kept after
    /// it is gone so that the sums never go down).
    mounts: BTreeMap<String, Vec<MountFigures>>,
    /// The prune pass: how many entries each of its shards may delete.
    budgets: BTreeMap<u32, u64>,
    /// The copy pass: the earliest a worker said it began writing (destination clock).
    write_started: Option<i64>,
    /// `spec.limits` as the IngestJob says now (changes apply to a running pass).
    limits: Option<ingest_api::Limits>,
    /// Made ahead of its turn ([`Opening::Ahead`]) and not opened yet: it hands out
    /// nothing, whatever `spec.suspend` says.
    closed: bool,
    /// When the pass began handing out shards: made or opened (or resumed) with none handed
    /// out yet. The start of its wave's start-up ([`ingest_job::Pace`]).
    opened_ms: Option<u64>,
    /// From `opened_ms` to the first word of the last worker heard from the first time (until
    /// the reconcile is told the pass is near its end): how long its wave of pods took to start,
    /// the slowest pod included.
    wave_ms: Option<u64>,
    /// When the first shard was handed out, and how many had ended then (a restored pass has
    /// some): the start of its pace.
    first_work: Option<(u64, u64)>,
    /// The reconcile was told the pass is near its end ([`ingest_job::Pace::ends_soon`]).
    near_end_told: bool,
}

impl Entry {
    /// The pace so far, once a shard has been handed out.
    fn pace(&self, now: u64) -> Option<ingest_job::Pace> {
        let (first, ended_then) = self.first_work?;
        Some(ingest_job::Pace {
            startup_ms: self.wave_ms?,
            busy_ms: now.saturating_sub(first),
            ended: self.pass.ended().saturating_sub(ended_then),
        })
    }
}

#[derive(Default)]
struct Inner {
    /// A request for an IngestJob with no pass here is "not yet" (503: this operator just started
    /// and has not reconciled it); for one with passes of another run or role, "no such pass" (404).
    passes: HashMap<Key, Entry>,
    /// Per IngestJob (namespace, name): the (uid, run) whose record is written. Its workers, if
    /// any are left, are told the run moved on (404) even by an operator that never had its passes.
    ended: HashMap<(String, String), (String, i64)>,
}

/// Where the registry's milliseconds come from.
enum Clock {
    /// Since this instant.
    Real(Instant),
    /// Moved by a test.
    #[cfg(test)]
    Manual(std::sync::Arc<std::sync::atomic::AtomicU64>),
}

/// All passes this operator coordinates.
pub struct Registry {
    inner: Mutex<Inner>,
    /// The clock of leases and paces.
    clock: Clock,
    /// Told the IngestJob whose pass just ended, so its run moves on at once instead of at the
    /// next periodic reconcile.
    passes_ended: Option<UnboundedSender<ObjectRef<IngestJob>>>,
    /// Bumped when an idle worker may now get another answer: shards went back to the queue, a
    /// pass ended, reached the status, was halted, resumed or forgotten.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            inner: Mutex::default(),
            clock: Clock::Real(Instant::now()),
            passes_ended: None,
            changed: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Registry {
    /// A registry that sends the IngestJob of every pass that ends (finished, or stopped by a
    /// worker) to `tx` (the controller's `reconcile_on` stream).
    pub fn with_trigger(tx: UnboundedSender<ObjectRef<IngestJob>>) -> Registry {
        Registry {
            passes_ended: Some(tx),
            ..Registry::default()
        }
    }

    fn now_ms(&self) -> u64 {
        match &self.clock {
            Clock::Real(started) => started.elapsed().as_millis() as u64,
            #[cfg(test)]
            Clock::Manual(ms) => ms.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The same registry on a clock the test moves by hand (milliseconds).
    #[cfg(test)]
    fn with_manual_clock(mut self) -> (Registry, std::sync::Arc<std::sync::atomic::AtomicU64>) {
        let ms = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        self.clock = Clock::Manual(ms.clone());
        (self, ms)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the held answers ([`Registry::handle_held`]): they ask their pass again.
    fn wake_idle(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Makes sure the pass of `role` exists for `ij`'s current run: from the status checkpoint
    /// when this operator did not have it (a restart), else fresh over `shards` shards. Passes of
    /// other runs of the same IngestJob are dropped. An open pass hands out shards unless
    /// `spec.suspend` says otherwise; one made [`Opening::Ahead`] stays closed until made again
    /// with [`Opening::Now`]. `budgets` (the prune pass): only those shards run, each deleting no
    /// more than its budget.
    pub fn ensure(
        &self,
        ij: &IngestJob,
        role: &str,
        shards: u64,
        checkpoint: Option<&PassCheckpoint>,
        budgets: Option<&BTreeMap<u32, u64>>,
        opening: Opening,
    ) -> Result<(), String> {
        let open = opening == Opening::Now;
        let key = Key::of(ij, role);
        let now = self.now_ms();
        let mut inner = self.lock();
        inner.passes.retain(|k, _| {
            !(k.namespace == key.namespace && k.name == key.name)
                || (k.uid == key.uid && k.run == key.run)
        });
        // A mount found unresponsive in an earlier pass of the run (the copy, the prune) stays
        // avoided in the later ones: read when this pass is made or opened.
        let opens = |e: &Entry| open && e.closed;
        let mut earlier = BTreeMap::new();
        if inner.passes.get(&key).is_none_or(opens) {
            use ingest_api::constants::labels::{ROLE_COPY, ROLE_PRUNE};
            for role in [ROLE_COPY, ROLE_PRUNE]
                .into_iter()
                .take_while(|r| *r != key.role)
            {
                let k = Key {
                    role: role.to_owned(),
                    ..key.clone()
                };
                if let Some(e) = inner.passes.get(&k) {
                    for (m, why) in e.pass.avoided() {
                        earlier.entry(m.clone()).or_insert_with(|| why.clone());
                    }
                }
            }
        }
        if let Some(e) = inner.passes.get_mut(&key) {
            if open && std::mem::take(&mut e.closed) {
                // Opened: what the copy pass found unresponsive since it was made, too.
                e.pass.avoid(&earlier);
            }
            let paused = ij.spec.suspend || e.closed;
            let resumed = e.pass.paused() && !paused;
            e.pass.pause(paused);
            if resumed && e.first_work.is_none() {
                // Its wave's start-up is counted from when it could first get work.
                e.opened_ms = Some(now);
            }
            e.limits.clone_from(&ij.spec.limits);
            drop(inner);
            if resumed {
                self.wake_idle();
            }
            return Ok(());
        }
        let total = u32::try_from(shards).map_err(|_| format!("{shards} shards: too many"))?;
        let retries = ij.spec.failure_policy.retries_per_shard;
        let lease = LEASE_SECONDS * 1000;
        let pass = match checkpoint {
            Some(cp) => P::restore(total, &Checkpoint::from(cp), retries, lease)
                .map_err(|e| format!("status.checkpoint.{role}: {e}"))?,
            None => P::new(total, retries, lease),
        }
        .avoiding(&earlier);
        let mut pass = match budgets {
            Some(b) => pass.only(&b.keys().copied().collect()),
            None => pass,
        };
        pass.pause(ij.spec.suspend || !open);
        // A pass restored finished came from the status: it is there already.
        let persisted = pass.finished() && checkpoint.is_some();
        inner.passes.insert(
            key,
            Entry {
                pass,
                persisted,
                mounts: BTreeMap::new(),
                budgets: budgets.cloned().unwrap_or_default(),
                write_started: checkpoint.and_then(|c| c.write_started),
                limits: ij.spec.limits.clone(),
                closed: !open,
                opened_ms: (open && !ij.spec.suspend).then_some(now),
                first_work: None,
                wave_ms: None,
                near_end_told: false,
            },
        );
        Ok(())
    }

    /// Forgets every pass of the IngestJob (it was deleted).
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut inner = self.lock();
        inner
            .passes
            .retain(|k, _| !(k.namespace == namespace && k.name == name));
        inner.ended.remove(&(namespace.to_owned(), name.to_owned()));
        drop(inner);
        self.wake_idle();
    }

    /// The current run of `ij` is over (its record is written, or its failure policy stopped it):
    /// workers still asking are told to stop (`stopped` while this operator has the passes, 404
    /// otherwise), so they exit cleanly with their reports written.
    pub fn end_run(&self, ij: &IngestJob) {
        let mut inner = self.lock();
        for role in ROLES {
            if let Some(e) = inner.passes.get_mut(&Key::of(ij, role))
                && !e.pass.finished()
            {
                e.pass.halt();
            }
        }
        inner.ended.insert(
            (ij.namespace().unwrap_or_default(), ij.name_any()),
            (ij.uid().unwrap_or_default(), ij.spec.run),
        );
        drop(inner);
        self.wake_idle();
    }

    /// Pods of the pass that ended (their process is gone): their claims go back to the queue.
    pub fn workers_ended<'a>(
        &self,
        ij: &IngestJob,
        role: &str,
        pods: impl IntoIterator<Item = &'a str>,
    ) {
        let now = self.now_ms();
        let mut inner = self.lock();
        let mut back = 0;
        if let Some(Entry { pass: p, .. }) = inner.passes.get_mut(&Key::of(ij, role)) {
            for pod in pods {
                if !p.claims_of(pod).is_empty() {
                    tracing::info!(pod, role, "worker ended holding claims: back to the queue");
                }
                back += p.worker_gone(pod).len();
            }
            back += p.expire(now).len();
        }
        drop(inner);
        if back > 0 {
            self.wake_idle();
        }
    }

    /// The pass as the pure steps see it.
    pub fn view(&self, ij: &IngestJob, role: &str) -> Option<PassView> {
        let now = self.now_ms();
        let mut inner = self.lock();
        let entry = inner.passes.get_mut(&Key::of(ij, role))?;
        let mut mounts: BTreeMap<String, MountFigures> = BTreeMap::new();
        for f in entry.mounts.values().flatten() {
            mounts
                .entry(f.mount.clone())
                .or_insert_with(|| MountFigures {
                    mount: f.mount.clone(),
                    ..MountFigures::default()
                })
                .add(f);
        }
        let write_started = entry.write_started;
        let p = &mut entry.pass;
        if !p.expire(now).is_empty() {
            self.wake_idle();
        }
        let mut in_flight = PodProgress::default();
        let mut live = 0;
        for (_, pr, at) in p.in_flight() {
            if now.saturating_sub(at) <= LEASE_SECONDS * 1000 {
                live += 1;
                in_flight.files += pr.files;
                in_flight.bytes += pr.bytes;
                in_flight.failed += pr.failed;
                in_flight.checked += pr.checked;
            }
        }
        let pace = entry.pace(now);
        let p = &entry.pass;
        Some(PassView {
            pace,
            counts: p.counts(),
            finished: p.finished(),
            stopped: p.stopped().map(str::to_owned),
            sum: p.sum().clone(),
            in_flight,
            live_workers: live,
            checkpoint: PassCheckpoint {
                write_started,
                ..PassCheckpoint::from(&p.checkpoint())
            },
            avoided: p.avoided().clone(),
            mounts,
            gave_up: p.gave_up().clone(),
        })
    }

    /// The passes of `ij`'s current run.
    pub fn views(&self, ij: &IngestJob) -> Views {
        Views {
            copy: self.view(ij, ingest_api::constants::labels::ROLE_COPY),
            prune: self.view(ij, ingest_api::constants::labels::ROLE_PRUNE),
            verify: self.view(ij, ingest_api::constants::labels::ROLE_VERIFY),
        }
    }

    /// One worker message (already authenticated as `req.worker` of this IngestJob).
    pub fn handle(&self, req: ClaimRequest) -> Result<ClaimResponse, Refusal> {
        let key = Key::of_request(&req);
        let now = self.now_ms();
        let mut inner = self.lock();
        let Some(entry) = inner.passes.get_mut(&key) else {
            let same_job = |ns: &str, name: &str| ns == key.namespace && name == key.name;
            let known = inner.passes.keys().any(|k| same_job(&k.namespace, &k.name));
            let ended = inner
                .ended
                .get(&(key.namespace.clone(), key.name.clone()))
                .is_some_and(|(uid, run)| *uid == key.uid && *run == key.run);
            return Err(if known || ended {
                Refusal::NoPass
            } else {
                Refusal::NotReady
            });
        };
        let report = Report {
            holding: req.holding,
            done: req.done.into_iter().map(|d| (d.shard, d.result)).collect(),
            room: req.room,
            progress: req.progress,
            unusable: req.unusable,
            unresponsive: req.unresponsive.map(|u| Unresponsive {
                mount: u.mount,
                left: u.left as usize,
                why: u.why,
            }),
        };
        if !req.mounts.is_empty() {
            entry.mounts.insert(req.worker.clone(), req.mounts);
        }
        if let Some(t) = req.write_started {
            entry.write_started = Some(entry.write_started.map_or(t, |w| w.min(t)));
        }
        if !entry.near_end_told
            && !entry.pass.knows(&req.worker)
            && let Some(opened) = entry.opened_ms
        {
            entry.wave_ms = Some(now.saturating_sub(opened));
        }
        let over = |p: &P| p.finished() || p.stopped().is_some();
        let was_over = over(&entry.pass);
        let avoided_before = entry.pass.avoided().len();
        let pending = entry.pass.pending();
        let (shards, mut state) = entry.pass.report(&req.worker, report, now);
        let (pending_now, is_over) = (entry.pass.pending(), over(&entry.pass));
        if !shards.is_empty() && entry.first_work.is_none() {
            entry.first_work = Some((now, entry.pass.ended()));
        }
        // Shards back in the queue (a lease ran out, a failed shard to retry, a worker that
        // left), or the pass over: the idle workers held may act on it.
        if pending_now + shards.len() as u64 > pending || is_over != was_over {
            self.wake_idle();
        }
        // Every shard handed out, or the pass near its end at its pace: the next pass's workers
        // may start (`stage::verify_ahead`). Told once each way (the pace's first).
        let handed_out = pending > 0 && pending_now == 0 && !is_over;
        let near_end = !entry.near_end_told
            && !is_over
            && !entry.closed
            && ingest_job::Pace::ends_soon(
                entry.pace(now).as_ref(),
                pending_now,
                entry.pass.running(),
            );
        entry.near_end_told |= near_end;
        // A pass that ended, or a mount newly found unresponsive (the status names it, with an
        // Event), wakes the IngestJob's reconcile; so does the pass near its end.
        if (!was_over && is_over
            || entry.pass.avoided().len() > avoided_before
            || handed_out
            || near_end)
            && let Some(tx) = &self.passes_ended
        {
            let _ = tx.unbounded_send(ObjectRef::new(&key.name).within(&key.namespace));
        }
        if state == ingest_job::State::Finished && !entry.persisted {
            state = ingest_job::State::Wait;
        }
        // The job's limits now, shared by the workers that hold shards (one waiting for work,
        // at the pass's tail, leaves its share to the others).
        let limits = entry.limits.as_ref().map(|l| {
            // Holders renew their claims, so they are live; with none, whoever reported lately.
            let n = match entry.pass.holders() {
                0 => entry
                    .pass
                    .in_flight()
                    .filter(|(_, _, at)| now.saturating_sub(*at) <= LEASE_SECONDS * 1000)
                    .count(),
                n => n,
            };
            l.share_at(k8s_openapi::jiff::Timestamp::now(), n.max(1) as u64)
        });
        Ok(ClaimResponse {
            limits,
            state: state.into(),
            avoid: entry.pass.avoided().keys().cloned().collect(),
            deletes: shards
                .iter()
                .filter_map(|s| entry.budgets.get(s).map(|b| (*s, *b)))
                .collect(),
            shards,
            closed: entry.closed,
        })
    }

    /// Whether `role`'s pass of `ij`'s current run exists here.
    pub fn has(&self, ij: &IngestJob, role: &str) -> bool {
        self.lock().passes.contains_key(&Key::of(ij, role))
    }

    /// Whether `role`'s finished pass is in the status already.
    pub fn is_persisted(&self, ij: &IngestJob, role: &str) -> bool {
        self.lock()
            .passes
            .get(&Key::of(ij, role))
            .is_some_and(|e| e.persisted)
    }

    /// The status now holds `role`'s checkpoint as a finished pass (it was written, or already
    /// said so): its workers may exit.
    pub fn mark_persisted(&self, ij: &IngestJob, role: &str) {
        let newly = match self.lock().passes.get_mut(&Key::of(ij, role)) {
            Some(e) => !std::mem::replace(&mut e.persisted, true),
            None => false,
        };
        if newly {
            self.wake_idle();
        }
    }

    /// [`Registry::handle`], but a worker that holds nothing and is told to wait
    /// ([`may_hold`]) gets its answer when something it could act on changed (a shard back in
    /// the queue, the pass finished and in the status, opened, the run stopped or resumed), or
    /// after `hold`: it asks again then. The message is asked again as it was (a worker holding
    /// nothing asks the same every time), less the completions it carried, counted already.
    pub async fn handle_held(
        &self,
        req: ClaimRequest,
        hold: Duration,
    ) -> Result<ClaimResponse, Refusal> {
        let mut changed = self.changed.subscribe();
        let again = ClaimRequest {
            done: Vec::new(),
            ..req.clone()
        };
        let mut answer = self.handle(req)?;
        let until = tokio::time::Instant::now() + hold;
        while may_hold(&again, &answer) {
            match tokio::time::timeout_at(until, changed.changed()).await {
                Ok(Ok(())) => answer = self.handle(again.clone())?,
                // The hold ran out (or the registry is gone): the worker asks again.
                _ => break,
            }
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingest_api::claims::{PassState, ShardDone};

    fn ij(run: i64) -> IngestJob {
        let mut ij: IngestJob = serde_json::from_value(serde_json::json!({
            "apiVersion": "ingest.vfxt.dev/v1alpha1", "kind": "IngestJob",
            "metadata": {"name": "j", "namespace": "n", "uid": "u1"},
            "spec": {
                "source": {"pvc": {"claimName": "x"}},
                "destination": {"nfs": {"servers": ["10.0.0.1"], "path": "/nfs"}},
            }
        }))
        .unwrap();
        ij.spec.run = run;
        ij
    }

    fn req(worker: &str, run: i64, room: u32, done: &[(u32, u64)]) -> ClaimRequest {
        ClaimRequest {
            namespace: "n".into(),
            job: "j".into(),
            uid: "u1".into(),
            run,
            role: "copy".into(),
            worker: worker.into(),
            room,
            done: done
                .iter()
                .map(|(s, f)| ShardDone {
                    shard: *s,
                    result: PodResult {
                        files: *f,
                        ..Default::default()
                    },
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_pass_is_served_once_the_reconcile_made_it_and_finishes() {
        let reg = Registry::default();
        assert_eq!(reg.handle(req("w0", 1, 1, &[])), Err(Refusal::NotReady));
        reg.ensure(&ij(1), "copy", 2, None, None, Opening::Now)
            .unwrap();
        let r = reg.handle(req("w0", 1, 2, &[])).unwrap();
        assert_eq!((r.shards, r.state), (vec![0, 1], PassState::Work));
        let r = reg.handle(req("w0", 1, 1, &[(0, 3), (1, 4)])).unwrap();
        // Every shard is done, but the completions are only in this operator's memory: the
        // worker waits until the status holds them.
        assert_eq!(r.state, PassState::Wait);
        let v = reg.view(&ij(1), "copy").unwrap();
        assert!(v.finished);
        assert_eq!((v.sum.files, v.checkpoint.completed.as_str()), (7, "0-1"));
        reg.mark_persisted(&ij(1), "copy");
        assert_eq!(
            reg.handle(req("w0", 1, 1, &[])).unwrap().state,
            PassState::Finished
        );
        // An operator restarted from that checkpoint lets the workers go at once.
        let again = Registry::default();
        again
            .ensure(&ij(1), "copy", 2, Some(&v.checkpoint), None, Opening::Now)
            .unwrap();
        assert_eq!(
            again.handle(req("w0", 1, 1, &[])).unwrap().state,
            PassState::Finished
        );
        // A worker of an older run gets "no such pass" once the new run's pass exists.
        reg.ensure(&ij(2), "copy", 1, None, None, Opening::Now)
            .unwrap();
        assert_eq!(reg.handle(req("w0", 1, 1, &[])), Err(Refusal::NoPass));
        assert!(reg.view(&ij(1), "copy").is_none(), "old run dropped");
    }

    #[test]
    fn the_reconcile_is_woken_once_when_a_pass_hands_out_its_last_shard_and_once_when_it_ends() {
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let reg = Registry::with_trigger(tx);
        reg.ensure(&ij(1), "copy", 3, None, None, Opening::Now)
            .unwrap();
        reg.handle(req("w0", 1, 2, &[])).unwrap();
        assert!(
            rx.try_recv().is_err(),
            "not while shards are left to hand out"
        );
        reg.handle(req("w1", 1, 1, &[])).unwrap();
        rx.try_recv().expect("woken: every shard is handed out");
        reg.handle(req("w1", 1, 0, &[(2, 1)])).unwrap();
        assert!(rx.try_recv().is_err(), "not while work goes on");
        reg.handle(req("w0", 1, 0, &[(0, 1), (1, 1)])).unwrap();
        let woken = rx.try_recv().expect("woken when the pass finished");
        assert_eq!(
            (woken.name.as_str(), woken.namespace.as_deref()),
            ("j", Some("n"))
        );
        reg.handle(req("w0", 1, 0, &[])).unwrap();
        assert!(rx.try_recv().is_err(), "once");
    }

    #[test]
    fn the_reconcile_is_woken_when_the_pass_is_near_its_end_at_its_pace() {
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let (reg, clock) = Registry::with_trigger(tx).with_manual_clock();
        let at = |ms| clock.store(ms, std::sync::atomic::Ordering::Relaxed);
        reg.ensure(&ij(1), "copy", 10, None, None, Opening::Now)
            .unwrap();
        // Its wave took 150 ms to start (w0 first, at 100 ms); then two shards each 100 ms.
        at(100);
        assert_eq!(reg.handle(req("w0", 1, 2, &[])).unwrap().shards, [0, 1]);
        at(150);
        reg.handle(req("w1", 1, 0, &[])).unwrap();
        let mut woken = vec![];
        for (t, done) in [(200, [0, 1]), (300, [2, 3]), (400, [4, 5])] {
            at(t);
            reg.handle(req("w0", 1, 2, &[(done[0], 1), (done[1], 1)]))
                .unwrap();
            woken.push(rx.try_recv().is_ok());
        }
        // At 300 ms: 6 left (4 pending, 2 running) at 50 ms each, within two start-ups (of the
        // slowest pod, w1's).
        assert_eq!(woken, [false, true, false]);
        let pace = reg.view(&ij(1), "copy").unwrap().pace.unwrap();
        assert_eq!((pace.startup_ms, pace.busy_ms, pace.ended), (150, 300, 6));
        at(500);
        reg.handle(req("w0", 1, 2, &[(6, 1), (7, 1)])).unwrap();
        rx.try_recv()
            .expect("woken again when the last shard is handed out");
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_restarted_operator_resumes_from_the_checkpoint() {
        let reg = Registry::default();
        reg.ensure(&ij(1), "copy", 3, None, None, Opening::Now)
            .unwrap();
        reg.handle(req("w0", 1, 2, &[])).unwrap();
        reg.handle(req("w0", 1, 0, &[(0, 5)])).unwrap();
        let cp = reg.view(&ij(1), "copy").unwrap().checkpoint;

        let again = Registry::default();
        again
            .ensure(&ij(1), "copy", 3, Some(&cp), None, Opening::Now)
            .unwrap();
        let mut holding = req("w0", 1, 1, &[]);
        holding.holding = vec![1];
        // w0 keeps shard 1 and gets 2; shard 0 is not handed out again.
        assert_eq!(again.handle(holding).unwrap().shards, vec![2]);
        let v = again.view(&ij(1), "copy").unwrap();
        assert_eq!((v.sum.files, v.counts.running, v.counts.pending), (5, 2, 0));
    }

    #[test]
    fn the_workers_of_an_ended_run_are_told_to_stop_even_after_a_restart() {
        let reg = Registry::default();
        reg.ensure(&ij(1), "copy", 3, None, None, Opening::Now)
            .unwrap();
        assert_eq!(reg.handle(req("w0", 1, 1, &[])).unwrap().shards, vec![0]);
        reg.end_run(&ij(1));
        let r = reg.handle(req("w0", 1, 1, &[(0, 1)])).unwrap();
        assert_eq!((r.shards, r.state), (vec![], PassState::Stopped));
        // A restarted operator never had the passes: the recorded run's workers get 404, not 503.
        let again = Registry::default();
        assert_eq!(again.handle(req("w1", 1, 1, &[])), Err(Refusal::NotReady));
        again.end_run(&ij(1));
        assert_eq!(again.handle(req("w1", 1, 1, &[])), Err(Refusal::NoPass));
    }

    #[tokio::test(start_paused = true)]
    async fn a_workers_last_wait_is_answered_once_the_pass_is_in_the_status() {
        let reg = Registry::default();
        reg.ensure(&ij(1), "copy", 2, None, None, Opening::Now)
            .unwrap();
        assert_eq!(reg.handle(req("w0", 1, 2, &[])).unwrap().shards, vec![0, 1]);
        // w0 ends both and holds nothing: told to wait (the completions are only in memory),
        // and the answer is held.
        let held = reg.handle_held(req("w0", 1, 2, &[(0, 3), (1, 4)]), HOLD);
        tokio::pin!(held);
        assert!(futures::poll!(&mut held).is_pending(), "held");
        assert!(
            reg.view(&ij(1), "copy").unwrap().finished,
            "counted meanwhile"
        );
        let t0 = tokio::time::Instant::now();
        reg.mark_persisted(&ij(1), "copy");
        let r = held.await.unwrap();
        assert_eq!(r.state, PassState::Finished);
        assert_eq!(
            t0.elapsed(),
            Duration::ZERO,
            "answered at once, not at the hold's end"
        );
        let v = reg.view(&ij(1), "copy").unwrap();
        assert_eq!(
            v.sum.files, 7,
            "each completion counted once, the message asked twice"
        );
    }

    /// A copy pass of one shard, which w0 took.
    fn one_shard_held_by_w0() -> Registry {
        let reg = Registry::default();
        reg.ensure(&ij(1), "copy", 1, None, None, Opening::Now)
            .unwrap();
        assert_eq!(reg.handle(req("w0", 1, 1, &[])).unwrap().shards, vec![0]);
        reg
    }

    #[tokio::test(start_paused = true)]
    async fn a_shard_back_in_the_queue_goes_to_a_held_worker_at_once() {
        let reg = one_shard_held_by_w0();
        let held = reg.handle_held(req("w1", 1, 1, &[]), HOLD);
        tokio::pin!(held);
        assert!(
            futures::poll!(&mut held).is_pending(),
            "nothing to give w1 yet"
        );
        reg.workers_ended(&ij(1), "copy", ["w0"]);
        let r = held.await.unwrap();
        assert_eq!((r.shards, r.state), (vec![0], PassState::Work));
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_wait_ends_after_the_hold_and_a_worker_holding_shards_is_never_held() {
        let reg = one_shard_held_by_w0();
        // w0 holds shard 0 and has room: answered at once (its heartbeats must go on).
        let mut beat = req("w0", 1, 1, &[]);
        beat.holding = vec![0];
        let r = futures::poll!(Box::pin(reg.handle_held(beat, HOLD)));
        assert!(r.is_ready(), "a worker holding shards is not held");
        // w1 holds nothing and nothing changes: it is told to wait when the hold ends.
        let t0 = tokio::time::Instant::now();
        let r = reg.handle_held(req("w1", 1, 1, &[]), HOLD).await.unwrap();
        assert_eq!((r.shards, r.state), (vec![], PassState::Wait));
        assert_eq!(t0.elapsed(), HOLD);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pass_made_ahead_hands_out_nothing_and_holds_its_workers_first_words_until_it_opens()
    {
        let reg = Registry::default();
        reg.ensure(&ij(1), "copy", 2, None, None, Opening::Now)
            .unwrap();
        reg.ensure(&ij(1), "verify", 2, None, None, Opening::Ahead)
            .unwrap();
        let mut hello = req("v0", 1, 0, &[]);
        hello.role = "verify".into();
        let held = reg.handle_held(hello.clone(), HOLD);
        tokio::pin!(held);
        assert!(
            futures::poll!(&mut held).is_pending(),
            "a first message waits for the opening"
        );
        // Made again ahead (the next reconcile): still closed, still nothing handed out.
        reg.ensure(&ij(1), "verify", 2, None, None, Opening::Ahead)
            .unwrap();
        let mut ask = hello.clone();
        ask.room = 2;
        let r = reg.handle(ask.clone()).unwrap();
        assert_eq!(
            (r.shards, r.state, r.closed),
            (vec![], PassState::Wait, true)
        );
        // Suspended, then resumed: that does not open it either.
        let mut suspended = ij(1);
        suspended.spec.suspend = true;
        reg.ensure(&suspended, "verify", 2, None, None, Opening::Ahead)
            .unwrap();
        reg.ensure(&ij(1), "verify", 2, None, None, Opening::Ahead)
            .unwrap();
        let r = reg.handle(ask.clone()).unwrap();
        assert_eq!((r.shards.len(), r.closed), (0, true));
        // The copy pass ended: the reconcile opens it.
        reg.ensure(&ij(1), "verify", 2, None, None, Opening::Now)
            .unwrap();
        let r = held.await.unwrap();
        assert!(!r.closed);
        assert_eq!(reg.handle(ask).unwrap().shards, vec![0, 1]);
    }

    #[test]
    fn an_ended_pods_claims_go_back_to_the_queue() {
        let reg = Registry::default();
        reg.ensure(&ij(1), "copy", 1, None, None, Opening::Now)
            .unwrap();
        assert_eq!(reg.handle(req("w0", 1, 1, &[])).unwrap().shards, vec![0]);
        reg.workers_ended(&ij(1), "copy", ["w0"]);
        assert_eq!(reg.handle(req("w1", 1, 1, &[])).unwrap().shards, vec![0]);
    }
}
