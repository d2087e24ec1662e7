//! The claims protocol between worker pods and the operator (see the operator's README, "Claims"):
//! a worker pod lives for a whole pass and asks the operator for shards as it has room, over HTTP
//! (`POST` [`PATH`] on the operator's service port), authenticated by a service-account token
//! bound to the pod (audience [`TOKEN_AUDIENCE`]). Each message is a [`ClaimRequest`]: what the
//! worker holds, what it finished (with each shard's result), how many more it can take, its
//! progress. The answer is a [`ClaimResponse`]: shards to take, and whether to go on, wait, or
//! exit. The state machine behind it is `ingest_job::Pass`; this module is only the wire format,
//! and the checkpoint the operator keeps in the IngestJob status.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::job::{MAX_LISTED_FAILURES, VerificationCounts};
use crate::report::{PodProgress, PodResult};

/// The claims endpoint.
pub const PATH: &str = "/claims/v1";
/// Where the scan pod sends its plan, a piece per request, authenticated as a worker's claims are
/// (the message is the operator's `plan_store::PlanPart`; the operator stores the pieces).
pub const PLAN_PATH: &str = "/claims/v1/plan";
/// Audience of the token a worker sends (`Authorization: Bearer`): a token for the API server
/// is not accepted, and this one is good for nothing else.
pub const TOKEN_AUDIENCE: &str = "ingest.vfxt.dev/claims";
/// Where the worker pod finds its token (a projected volume the kubelet refreshes).
pub const TOKEN_DIR: &str = "/var/run/secrets/ingest.vfxt.dev";
/// The token file inside [`TOKEN_DIR`].
pub const TOKEN_FILE: &str = "token";
/// Workers send a message at least this often (with nothing else to say, as a heartbeat that
/// renews their claims).
pub const HEARTBEAT_SECONDS: u64 = 5;
/// A claim not renewed for this long goes back to the queue.
pub const LEASE_SECONDS: u64 = 45;

/// One message from a worker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRequest {
    /// The IngestJob's namespace.
    pub namespace: String,
    /// The IngestJob's name.
    pub job: String,
    /// The IngestJob's uid (a job deleted and created again under the same name is another job).
    pub uid: String,
    /// `spec.run` the worker was started for.
    pub run: i64,
    /// `copy` or `verify`.
    pub role: String,
    /// The worker's pod name; must match the pod its token is bound to.
    pub worker: String,
    /// Shards it is working on.
    #[serde(default)]
    pub holding: Vec<u32>,
    /// Shards finished since the last answered message, with their results.
    #[serde(default)]
    pub done: Vec<ShardDone>,
    /// How many more shards it can take now.
    #[serde(default)]
    pub room: u32,
    /// Progress on the shards it holds (not on those in `done`).
    #[serde(default)]
    pub progress: PodProgress,
    /// Set when the worker cannot work at all (unusable input): stops the run, with this message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unusable: Option<String>,
    /// Set when a destination mount stopped answering: the worker's last message. It hands back
    /// what it holds (without cost to the shards' retries) and exits 4; no worker gets that mount
    /// again ([`ClaimResponse::avoid`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unresponsive: Option<UnresponsiveMount>,
    /// What went through each destination mount since the worker started (cumulative).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountFigures>,
    /// A copy worker: when it began writing, by the destination server's clock (its probe
    /// file's ctime, seconds since the epoch). The pass keeps the earliest, from which
    /// `verify.scope: Changed` tells what this pass wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_started: Option<i64>,
}

/// A destination mount on which tasks were running and none finished for the stall timeout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UnresponsiveMount {
    /// The destination as the worker was given it (`/ingest/dest-<i>[/subpath]`).
    pub mount: String,
    /// The worker's other destinations, not avoided: with none left, the pass stops.
    pub left: u32,
    /// What it saw, for the status ("4 operations waiting for 61 s").
    pub why: String,
}

/// One worker's figures for one destination mount, cumulative since the worker started.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MountFigures {
    /// The destination as the worker was given it.
    pub mount: String,
    /// Engine tasks finished (a directory listing, a batch of entries, a byte range).
    pub tasks: u64,
    /// Entries handled by those tasks.
    pub entries: u64,
    /// Bytes written through it.
    #[serde(default)]
    pub bytes: u64,
    /// Task durations in `ingest_job::latency` buckets (power-of-two microseconds).
    #[serde(default)]
    pub latency: Vec<u64>,
}

/// A finished shard and its result.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ShardDone {
    pub shard: u32,
    pub result: PodResult,
}

impl MountFigures {
    /// Adds another worker's figures for the same mount (or for the same server).
    pub fn add(&mut self, o: &MountFigures) {
        self.tasks += o.tasks;
        self.entries += o.entries;
        self.bytes += o.bytes;
        ingest_job::latency::add(&mut self.latency, &o.latency);
    }
}

/// Each destination server's status from the per-mount figures of every worker that wrote
/// through it (`figures[i]`, summed), over `secs` (since the run started): what it moved, its
/// rates, task latency and health beside the others'. `unresponsive[i]` says why server `i` was
/// found not answering (it then counts no workers). Shared by the operator and `vfxt-ingest run`,
/// so the two describe a server alike.
pub fn server_statuses(
    servers: &[String],
    figures: &[MountFigures],
    unresponsive: &[Option<String>],
    workers: u32,
    secs: f64,
) -> Vec<crate::job::ServerStatus> {
    use crate::job::{ServerState, ServerStatus};
    use ingest_job::latency::{self, Health};
    let none = MountFigures::default();
    let figures_of = |i: usize| figures.get(i).unwrap_or(&none);
    let gone = |i: usize| unresponsive.get(i).is_some_and(Option::is_some);
    let p50: Vec<Option<(u64, u64)>> = (0..servers.len())
        .map(|i| {
            let f = figures_of(i);
            latency::percentile(&f.latency, 0.5).map(|p| (p, f.tasks))
        })
        .collect();
    let flags: Vec<bool> = (0..servers.len()).map(gone).collect();
    let health = latency::classify(&p50, &flags);
    let per_second = |x: u64| {
        if secs >= 1.0 {
            (x as f64 / secs) as u64
        } else {
            0
        }
    };
    servers
        .iter()
        .enumerate()
        .map(|(i, server)| {
            let f = figures_of(i);
            ServerStatus {
                server: server.clone(),
                workers: if flags[i] { 0 } else { workers },
                files: f.entries,
                bytes: f.bytes,
                files_per_second: per_second(f.entries),
                bytes_per_second: per_second(f.bytes),
                task_p50_micros: p50[i].map(|(p, _)| p),
                task_p99_micros: latency::percentile(&f.latency, 0.99),
                state: Some(match health[i] {
                    Health::Healthy => ServerState::Healthy,
                    Health::Slow => ServerState::Slow,
                    Health::Unresponsive => ServerState::Unresponsive,
                }),
                message: unresponsive.get(i).cloned().flatten(),
            }
        })
        .collect()
}

/// What the worker should do next.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum PassState {
    /// Work on what you hold and were given.
    #[default]
    Work,
    /// Nothing to hand out now; ask again (other workers' claims may come back).
    Wait,
    /// The pass is over: exit 0.
    Finished,
    /// The run was stopped (unusable input, the failure policy, a new run): exit 0 without
    /// taking more work.
    Stopped,
}

impl From<ingest_job::State> for PassState {
    fn from(s: ingest_job::State) -> Self {
        match s {
            ingest_job::State::Work => PassState::Work,
            ingest_job::State::Wait => PassState::Wait,
            ingest_job::State::Finished => PassState::Finished,
            ingest_job::State::Stopped => PassState::Stopped,
        }
    }
}

/// The operator's answer. Errors come as HTTP status codes with a text body: 400 malformed,
/// 401/403 token refused (the worker exits 2: unusable input), 404 no such job or pass (exit 0:
/// the run moved on), 503 not ready or not the leader (ask again).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClaimResponse {
    /// Shards to take, in addition to those held.
    #[serde(default)]
    pub shards: Vec<u32>,
    pub state: PassState,
    /// Destination mounts found unresponsive: write through none of them (from the next shard).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub avoid: Vec<String>,
    /// This worker's share of the job's rate limits now (`spec.limits` at this time of the week,
    /// divided among the workers that report): it replaces the worker's limits, so a change to
    /// the spec, a window that opens or closes and workers that come and go all take effect
    /// within a message. `None`: the job has no limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ingest_job::schedule::Rates>,
    /// The prune pass (`spec.mode: Mirror`): how many entries each shard given may delete, at
    /// most (what its copy found). A shard not listed may delete nothing.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub deletes: std::collections::BTreeMap<u32, u64>,
    /// The pass is made ahead of its turn and not open yet (the verify pass while the copy's last
    /// shards run): ask again, and touch no destination before it opens (the pass before may
    /// still find one unresponsive, and the answer that opens it says to avoid it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closed: bool,
}

impl ingest_job::Tally for PodResult {
    fn add(&mut self, o: &Self) {
        self.files += o.files;
        self.up_to_date += o.up_to_date;
        self.bytes += o.bytes;
        self.failed += o.failed;
        if let Some(v) = &o.verification {
            self.verification
                .get_or_insert_with(Default::default)
                .add(v);
        }
        if let Some(m) = &o.mirror {
            self.mirror.get_or_insert_with(Default::default).add(m);
        }
        let room = MAX_LISTED_FAILURES.saturating_sub(self.failures.len());
        self.failures.extend(o.failures.iter().take(room).cloned());
        self.failures_omitted += o.failures_omitted + o.failures.len().saturating_sub(room) as u64;
    }
}

/// A pass's checkpoint in the IngestJob status (`status.checkpoint`): what a restarted operator
/// starts from. The failure list is the status's own (`status.failures`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PassCheckpoint {
    /// Completed shard ids, as `"0-41,43"`.
    #[serde(default)]
    pub completed: String,
    /// Shards lost after their retries, same form.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lost: String,
    /// Files done by the completed shards.
    #[serde(default)]
    pub files: u64,
    /// Of `files`, those found already up to date.
    #[serde(default, skip_serializing_if = "crate::report::is_zero")]
    pub up_to_date: u64,
    /// Bytes done by the completed shards.
    #[serde(default)]
    pub bytes: u64,
    /// Entries that failed in the completed shards.
    #[serde(default)]
    pub failed: u64,
    /// Verify pass: comparison counts of the completed shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationCounts>,
    /// `spec.mode: Mirror`: what the completed shards found only in the destination (copy
    /// pass) or deleted (prune pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<crate::report::MirrorResult>,
    /// Why a worker stopped the pass (unusable input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Destination mounts found unresponsive (`/ingest/dest-<i>...`): no worker writes through
    /// them again in this run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub avoided: Vec<String>,
    /// The copy pass: the earliest time a worker began writing, by the destination's clock
    /// (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_started: Option<i64>,
}

/// Checkpoints of the current run's passes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunCheckpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<PassCheckpoint>,
    /// `spec.mode: Mirror`: the pass that deletes what the copy pass found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<PassCheckpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<PassCheckpoint>,
}

impl From<&ingest_job::Checkpoint<PodResult>> for PassCheckpoint {
    fn from(c: &ingest_job::Checkpoint<PodResult>) -> Self {
        PassCheckpoint {
            completed: c.completed.clone(),
            lost: c.lost.clone(),
            files: c.sum.files,
            up_to_date: c.sum.up_to_date,
            bytes: c.sum.bytes,
            failed: c.sum.failed,
            verification: c.sum.verification.clone(),
            mirror: c.sum.mirror.clone(),
            stopped: c.stopped.clone(),
            avoided: c.avoided.iter().cloned().collect(),
            // The registry's, not the pass's: see `Registry::view`.
            write_started: None,
        }
    }
}

impl From<&PassCheckpoint> for ingest_job::Checkpoint<PodResult> {
    fn from(c: &PassCheckpoint) -> Self {
        ingest_job::Checkpoint {
            completed: c.completed.clone(),
            lost: c.lost.clone(),
            sum: PodResult {
                files: c.files,
                up_to_date: c.up_to_date,
                bytes: c.bytes,
                failed: c.failed,
                verification: c.verification.clone(),
                mirror: c.mirror.clone(),
                ..PodResult::default()
            },
            stopped: c.stopped.clone(),
            avoided: c.avoided.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingest_job::Tally;

    #[test]
    fn results_add_up_and_the_failure_list_stays_bounded() {
        let f = |p: &str| crate::job::FileFailure {
            path: p.into(),
            reason: "EACCES".into(),
        };
        let mut sum = PodResult::default();
        let shard = PodResult {
            files: 3,
            bytes: 30,
            failed: 15,
            failures: (0..15).map(|i| f(&format!("d/{i}"))).collect(),
            verification: Some(VerificationCounts {
                checked: 3,
                ..Default::default()
            }),
            ..PodResult::default()
        };
        sum.add(&shard);
        sum.add(&shard);
        assert_eq!((sum.files, sum.bytes, sum.failed), (6, 60, 30));
        assert_eq!(sum.failures.len(), MAX_LISTED_FAILURES);
        assert_eq!(sum.failures_omitted, 30 - MAX_LISTED_FAILURES as u64);
        assert_eq!(sum.verification.as_ref().unwrap().checked, 6);
    }

    #[test]
    fn a_checkpoint_round_trips_through_the_status_form() {
        let cp = ingest_job::Checkpoint {
            completed: "0-3".into(),
            lost: "5".into(),
            sum: PodResult {
                files: 9,
                bytes: 90,
                failed: 1,
                ..PodResult::default()
            },
            stopped: None,
            avoided: ["/ingest/dest-1".to_owned()].into(),
        };
        let status = PassCheckpoint::from(&cp);
        let text = serde_json::to_string(&status).unwrap();
        let back: PassCheckpoint = serde_json::from_str(&text).unwrap();
        assert_eq!(ingest_job::Checkpoint::<PodResult>::from(&back), cp);
    }

    #[test]
    fn a_request_reads_with_only_its_identity_given() {
        let r: ClaimRequest = serde_json::from_str(
            r#"{"namespace":"n","job":"j","uid":"u","run":1,"role":"copy","worker":"p",
                "progress":{"files":0,"bytes":0,"at":0}}"#,
        )
        .unwrap();
        assert_eq!((r.room, r.holding.len(), r.done.len()), (0, 0, 0));
    }
}
