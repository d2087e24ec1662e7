//! The worker side of the claims protocol: `vfxt-ingest worker --claims-url URL --phase copy|verify`
//! (the wire format is `ingest_api::claims`; the state machine behind the endpoint is
//! `ingest_job::Pass`).
//!
//! A claims worker lives for a whole pass (one phase) and asks the operator for its shards, as
//! many as it has slots free (`--shards-at-once`, 2 to 8 by default, more for fewer threads: while
//! one shard starts or its last files finish, the threads it leaves idle work on the others), and
//! a few ahead while shards are short:
//!
//! - Identity: namespace, IngestJob name and uid, run and worker (pod) name come from the pod's
//!   environment (`POD_NAMESPACE`, `INGEST_JOB_NAME`, `INGEST_JOB_UID`, `INGEST_RUN`, `POD_NAME`);
//!   the role is `--phase`. Every message is a `POST` of a [`ClaimRequest`] to URL +
//!   [`claims::PATH`] with `Authorization: Bearer <token>`, the token read from `--token-file`
//!   (default [`claims::TOKEN_DIR`]/[`claims::TOKEN_FILE`]) before every request, since the
//!   kubelet rotates it. One request is in flight at a time; each has a 30 s timeout.
//! - The loop: ask with `room` = free slots, plus, while this worker's shards are short (their
//!   moving average under [`SHORT_SHARD`]), the shards its slots run in about [`AHEAD`], to hold
//!   given and not started (see [`ahead`]): a slot that ends a shard starts the next at once
//!   instead of waiting for a round trip to the operator. Run each shard given exactly as
//!   `--claims` runs one (markers, report, failure list); the next message carries
//!   `done: [{shard, result}]` with that shard's own result. A slot with a shard given waiting
//!   starts it and leaves the telling to the heartbeat thread, which it wakes: the end goes out at
//!   once, with room for more. A `done` is kept, and sent again with the next message, until a
//!   message carrying it got a 2xx answer (the operator counts a shard's completion once, so
//!   sending it twice is safe). Answers: `work` with shards: run them, in order; `wait` (or `work`
//!   with nothing given): ask again after 1 s (once per worker, however many slots are free).
//!   To a worker that holds nothing the operator answers when there is something for it (a
//!   shard back in the queue, the pass over), or after 5 s, so such a wait costs no second;
//!   `finished`: exit 0 (every slot, without asking again); `stopped`: exit 0, saying on stderr
//!   that the operator stopped the run.
//! - Heartbeat: while shards run, a thread sends `holding: [shards]`, the room left and those
//!   shards' own progress (each from its own start) every [`claims::HEARTBEAT_SECONDS`] (it renews
//!   the claim's lease), and at once when a shard ended or there is room while shards run. After
//!   a `stopped` answer no shard is started; those running end and are told, and the worker exits
//!   0 with its report whole. A shard still running [`STOP_GRACE`] later is cut short (exit 0 at
//!   once): the engine writes files in place and gives each its mtime last, so a file cut short
//!   never looks finished to the next run.
//! - HTTP errors: 401/403: the token is refused: exit 2 (unusable input), naming the URL and the
//!   answer. 404/409: the run moved on: exit 0. 408, 429, 5xx, connection errors and timeouts:
//!   asked again after 0.5 s, doubling to 5 s (heartbeats: at the next beat); after
//!   [`GIVE_UP`] without an answer, exit 3 (a crash: Kubernetes starts the pod again and the
//!   shards it held go to other workers). Any other status: exit 2 (the worker and the operator do
//!   not understand each other; asking again cannot help). An end the heartbeat thread meets is
//!   met as `stopped` is: no shard started, those running given [`STOP_GRACE`] to end, the report
//!   whole.
//! - Unusable input found by the worker (bad paths, an unreadable plan, a destination it cannot
//!   write): one message with `unusable` set, so the operator stops the run and says why (best
//!   effort: one attempt), then exit 2.
//! - Progress goes with the messages, not to the pod's progress annotation.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ingest_api::claims::{
    self, ClaimRequest, ClaimResponse, MountFigures, PassState, ShardDone, UnresponsiveMount,
};
use ingest_api::report::{PodProgress, PodResult};
use ingest_copy::{MountSnapshot, Progress, Snapshot};
use ingest_operator::pod::{self, PodEnv};
use ingest_plan::Phase;

use crate::Outcome;

/// Longest wait for one answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause before asking again after a `wait` answer.
pub const WAIT: Duration = Duration::from_secs(1);
/// First pause before asking again after a failed request; it doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_FIRST: Duration = Duration::from_millis(500);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Without a single answer for this long, the worker gives up (exit 3).
pub const GIVE_UP: Duration = Duration::from_secs(600);
/// After a `stopped` answer, how long the shards running may take to end before the worker
/// cuts them short and exits.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// The most of an error answer's body repeated in a message.
const BODY_SHOWN: usize = 512;
/// Shards short enough that the round trip to the operator between two of them shows (in the
/// operator benchmark, with shards of ~0.1 s, each pod's slots were busy 38–43% of the pass):
/// a worker whose shards take less than this on average claims some ahead.
pub const SHORT_SHARD: Duration = Duration::from_secs(2);
/// About how long the shards a worker holds given and not started last, its slots running them,
/// while its shards are short: enough that a slot that ends a shard starts the next at once,
/// little enough that at the end of the pass no idle worker waits long for shards another holds
/// (and under `spec.suspend`, little more than the running shards still runs).
pub const AHEAD: Duration = Duration::from_secs(1);
/// Weight of the newest shard in the moving average of shard times.
const PACE_WEIGHT: f64 = 0.2;

/// Shards to hold beyond the `slots`, given `pace`, the moving average of this worker's shard
/// times: while shards are short, what the slots run in about [`AHEAD`], at least 1 and at most
/// `slots`; none before the first shard ended (nothing known) or once shards are long (the round
/// trip is a small part of them, and a shard held is one no idle worker can take).
pub fn ahead(pace: Option<Duration>, slots: usize) -> usize {
    match pace {
        Some(p) if p < SHORT_SHARD && slots > 0 => {
            let n = AHEAD.as_secs_f64() * slots as f64 / p.as_secs_f64().max(1e-3);
            (n as usize).clamp(1, slots)
        }
        _ => 0,
    }
}

/// `--token-file`'s default.
pub fn default_token_file() -> PathBuf {
    Path::new(claims::TOKEN_DIR).join(claims::TOKEN_FILE)
}

/// How a claims worker ends, other than by a `finished` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The operator answered `stopped`.
    Stopped,
    /// 404 or 409: the run moved on (a new run, the job deleted).
    MovedOn(String),
    /// The worker cannot talk to the operator at all: token refused or unreadable, an answer
    /// neither side can do anything about.
    Unusable(String),
    /// No answer for [`GIVE_UP`].
    GaveUp(String),
}

impl End {
    pub fn outcome(&self) -> Outcome {
        match self {
            End::Stopped | End::MovedOn(_) => Outcome::Success,
            End::Unusable(_) => Outcome::UnusableInput,
            End::GaveUp(_) => Outcome::Crashed,
        }
    }

    /// The line for stderr.
    pub fn message(&self) -> String {
        match self {
            End::Stopped => {
                "note: the operator stopped the run (see the IngestJob's status); exiting".into()
            }
            End::MovedOn(m) => format!("note: the run moved on ({m}); exiting"),
            End::Unusable(m) => format!("error: {m}"),
            End::GaveUp(m) => format!("error: {m}"),
        }
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

/// Ends the process now (from the heartbeat thread, while the engine runs a shard).
fn end_now(end: End) -> ! {
    eprintln!("{}", end.message());
    std::process::exit(end.outcome().code().into())
}

/// Why one request got no usable answer.
#[derive(Debug)]
enum Failure {
    /// Worth asking again (5xx, connection, timeout).
    Retry(String),
    /// Not worth it.
    End(End),
}

/// Who is asking.
#[derive(Debug, Clone)]
struct Identity {
    namespace: String,
    job: String,
    uid: String,
    run: i64,
    role: &'static str,
    worker: String,
}

/// A shard the engine runs.
#[derive(Debug)]
struct Running {
    shard: u32,
    /// The index of its counters among those given to [`Session::heartbeats`] (`usize::MAX`
    /// from when a slot took it until it started).
    slot: usize,
    /// Those counters when it started.
    base: Snapshot,
    since: Instant,
}

impl Running {
    fn taken(shard: u32) -> Running {
        Running {
            shard,
            slot: usize::MAX,
            base: Snapshot::default(),
            since: Instant::now(),
        }
    }
}

#[derive(Debug)]
struct State {
    /// The shards the engine runs now.
    running: Vec<Running>,
    /// Given and not started.
    queued: VecDeque<u32>,
    /// Finished, not yet acknowledged by a 2xx answer.
    done: Vec<ShardDone>,
    /// When the last request was sent.
    last_sent: Instant,
    /// Since when every request failed (`None` after an answer).
    failing_since: Option<Instant>,
    /// Destination mounts the operator says no worker may use (from the last answer).
    avoid: Vec<String>,
    /// The prune pass: how many entries each shard given may delete.
    budgets: std::collections::HashMap<u32, u64>,
    /// A copy worker: when it began writing, by the destination's clock (sent with every
    /// message: the operator keeps the pass's earliest).
    write_started: Option<i64>,
    /// The engine's rate limits, set to each answer's share of the job's.
    throttle: Option<std::sync::Arc<ingest_copy::Throttle>>,
    /// This worker's figures per destination mount (sent with every message).
    mounts: Vec<MountFigures>,
    /// When the last `wait` (or empty `work`) answer came.
    waited: Option<Instant>,
    /// [`WAIT`] (tests lengthen it).
    wait: Duration,
    /// A request is on the wire (the state is unlocked meanwhile; see [`Session::send`]).
    in_flight: bool,
    /// The engine's slots (`--shards-at-once`; 0 until a slot asked).
    slots: usize,
    /// The moving average of this worker's shard times.
    pace: Option<Duration>,
    /// The pass is over: an answer said `finished` (or `stopped`), for every slot that asks next.
    over: Option<PassState>,
    /// How the heartbeat thread found the worker must end (the run moved on, the token refused):
    /// every slot that asks next ends so.
    ending: Option<End>,
}

impl State {
    /// Shards to ask for: the slots and those to hold ahead, less the shards held; none once
    /// the pass is over.
    fn room(&self) -> u32 {
        if self.over.is_some() || self.ending.is_some() {
            return 0;
        }
        (self.slots + ahead(self.pace, self.slots))
            .saturating_sub(self.running.len() + self.queued.len()) as u32
    }

    /// The operator had nothing for us a moment ago.
    fn waited_recently(&self) -> bool {
        self.waited.is_some_and(|at| at.elapsed() < self.wait)
    }

    /// Something to tell the operator now rather than at the next beat: a shard's end, or room
    /// while shards run (unless the operator had nothing a moment ago). Not while requests
    /// fail (those go at the beat, or with a slot's own backoff), nor once the worker is ending.
    fn to_tell(&self) -> bool {
        self.failing_since.is_none()
            && self.ending.is_none()
            && !self.in_flight
            && (!self.done.is_empty()
                || (!self.running.is_empty() && !self.waited_recently() && self.room() > 0))
    }

    /// `shard` ended after `took` (`None`: not known to have started; the pace stays).
    fn ended(&mut self, shard: u32, took: Option<Duration>, result: PodResult) {
        self.running.retain(|r| r.shard != shard);
        if let Some(took) = took {
            self.pace = Some(match self.pace {
                None => took,
                Some(p) => p.mul_f64(1.0 - PACE_WEIGHT) + took.mul_f64(PACE_WEIGHT),
            });
        }
        self.done.push(ShardDone { shard, result });
    }
}

/// A claims worker's connection to the operator. One request is in flight at a time; the state
/// is not locked while it is (see [`Session::send`]).
pub struct Session {
    endpoint: Endpoint,
    who: Identity,
    heartbeat: Duration,
    /// [`GIVE_UP`] (tests shorten it).
    give_up: Duration,
    /// [`STOP_GRACE`] (tests shorten it).
    stop_grace: Duration,
    state: Mutex<State>,
    /// Signalled when a request comes back: the next one may go.
    wire: Condvar,
    /// Wakes the heartbeat thread: there is something to tell ([`State::to_tell`]).
    kick: Condvar,
}

impl Session {
    /// Checks what a claims worker needs before it asks anything: the URL, its identity (from
    /// the environment) and a readable token. Errors are unusable input, naming the flag, the
    /// variable or the path.
    pub fn new(
        base_url: &str,
        token_file: &Path,
        phase: Phase,
        heartbeat: Duration,
    ) -> Result<Session, String> {
        let url = endpoint(base_url, claims::PATH)?;
        // The claims worker reads its plan from --plan: the plan ConfigMaps' prefix, which the
        // operator also sets, is not needed here.
        let env = PodEnv::from_lookup(|k| {
            std::env::var(k)
                .ok()
                .or_else(|| (k == pod::env::PLAN_PREFIX).then(|| "-".to_owned()))
        })?;
        let who = Identity {
            namespace: env.owner.namespace,
            job: env.owner.name,
            uid: env.owner.uid,
            run: env.owner.run,
            role: phase.as_str(),
            worker: env.pod,
        };
        Session::with_identity(url, token_file, who, heartbeat)
    }

    fn with_identity(
        url: String,
        token_file: &Path,
        who: Identity,
        heartbeat: Duration,
    ) -> Result<Session, String> {
        Ok(Session {
            endpoint: Endpoint::new(url, token_file)?,
            who,
            heartbeat,
            give_up: GIVE_UP,
            stop_grace: STOP_GRACE,
            state: Mutex::new(State {
                running: Vec::new(),
                queued: VecDeque::new(),
                waited: None,
                done: Vec::new(),
                last_sent: Instant::now(),
                failing_since: None,
                avoid: Vec::new(),
                budgets: Default::default(),
                write_started: None,
                throttle: None,
                mounts: Vec::new(),
                in_flight: false,
                wait: WAIT,
                slots: 0,
                pace: None,
                over: None,
                ending: None,
            }),
            wire: Condvar::new(),
            kick: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state once no request is on the wire (its answer taken).
    fn off_the_wire<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        while st.in_flight {
            st = self.wire.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st
    }

    /// The first message, before the worker touches any destination: it proves the token and
    /// the endpoint, and learns which destination mounts to keep away from ([`Session::avoid`]):
    /// a worker that replaces one that found a mount hung must not hang on it too.
    ///
    /// A pass made ahead of its turn (`closed`: the verify pass while the copy's last shards
    /// run) is asked again until it opens (the operator holds each answer until it does, or for
    /// a few seconds): the answer that opens it says which mounts the pass before found
    /// unresponsive meanwhile.
    pub fn hello(&self) -> Result<(), End> {
        loop {
            let answer = self.exchange(self.lock(), |_| 0)?.1;
            match answer.state {
                PassState::Stopped => return Err(End::Stopped),
                _ if answer.closed => continue,
                _ => return Ok(()),
            }
        }
    }

    /// Destination mounts no worker may use, as the operator last said.
    pub fn avoid(&self) -> Vec<String> {
        self.lock().avoid.clone()
    }

    /// The next shard to run, asking the operator when none is left of those given. `None`: the
    /// pass is finished. A shard given is taken at once, even with ends not yet told: the
    /// heartbeat thread, woken, tells them (with room for more) while the slot works. `slots`
    /// is `--shards-at-once`: the worker asks for that many less those running or given, plus
    /// those to hold ahead while shards are short ([`ahead`]).
    pub fn next_shard(&self, slots: usize) -> Result<Option<u32>, End> {
        let mut st = self.lock();
        st.slots = slots;
        loop {
            if let Some(end) = &st.ending {
                return Err(end.clone());
            }
            // Told already (the other slots must not each ask, nor wait `WAIT` to). Stopped:
            // no shard given is started; the ends not yet told are told first.
            match st.over {
                Some(PassState::Stopped) if st.done.is_empty() => return Err(End::Stopped),
                Some(PassState::Finished) if st.queued.is_empty() && st.done.is_empty() => {
                    return Ok(None);
                }
                _ => {}
            }
            if st.over != Some(PassState::Stopped)
                && let Some(s) = st.queued.pop_front()
            {
                // Held from now on (its slot and counters come with `start`): the next slot
                // to ask must not count it as room.
                st.running.push(Running::taken(s));
                if st.to_tell() {
                    self.kick.notify_all();
                }
                return Ok(Some(s));
            }
            // Nothing for us a moment ago: ask again only after `WAIT` (once a second per
            // worker, however many of its slots are free), unless there is a result to tell.
            if st.waited_recently() && st.done.is_empty() {
                let left = st
                    .waited
                    .map_or(st.wait, |at| st.wait.saturating_sub(at.elapsed()));
                // Woken early by an answer to the heartbeat thread's message: it may give
                // shards or say the pass is over.
                st = self
                    .wire
                    .wait_timeout(st, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                continue;
            }
            // A request on the wire (the heartbeat thread's, another slot's) may give shards, say
            // the pass is over, or carry the ends this one would tell: its answer first.
            if st.in_flight {
                st = self.off_the_wire(st);
                continue;
            }
            // Room as it is when the request goes (other slots may start or end shards while
            // an earlier request is on the wire).
            let answer;
            (st, answer) = self.exchange(st, State::room)?;
            match answer.state {
                PassState::Stopped => return Err(End::Stopped),
                PassState::Finished => return Ok(None),
                // Given shards are queued; nothing for us now: other workers' claims may come
                // back.
                PassState::Work | PassState::Wait => {}
            }
        }
    }

    /// The engine's throttle, which every answer sets to this worker's share of the job's limits.
    pub fn follow_limits(&self, throttle: std::sync::Arc<ingest_copy::Throttle>) {
        self.lock().throttle = Some(throttle);
    }

    /// This copy worker began writing at `secs` (its probe's ctime): said with every message.
    pub fn began_writing(&self, secs: i64) {
        self.lock().write_started = Some(secs);
    }

    /// How many entries `shard` may delete (the prune pass; 0 when the operator gave none).
    pub fn budget(&self, shard: u32) -> u64 {
        self.lock().budgets.get(&shard).copied().unwrap_or(0)
    }

    /// The engine starts `shard` in `slot`; `base` is the slot's counters now (heartbeats send
    /// the difference).
    pub fn start(&self, shard: u32, slot: usize, base: Snapshot) {
        let mut st = self.lock();
        st.queued.retain(|s| *s != shard);
        let since = st
            .running
            .iter()
            .find(|r| r.shard == shard)
            .map_or_else(Instant::now, |r| r.since);
        st.running.retain(|r| r.shard != shard);
        st.running.push(Running {
            shard,
            slot,
            base,
            since,
        });
    }

    /// `shard` ended with `result`: told at once by the heartbeat thread (or with the slot's
    /// next question, whichever goes first), and again until acknowledged.
    pub fn finish(&self, shard: u32, result: PodResult) {
        let mut st = self.lock();
        let took = st
            .running
            .iter()
            .find(|r| r.shard == shard)
            .map(|r| r.since.elapsed());
        st.ended(shard, took, result);
        self.kick.notify_all();
    }

    /// Tells the operator this worker cannot work at all (one attempt: the worker exits 2
    /// whether or not it got through).
    pub fn unusable(&self, why: &str) {
        let (st, answer) = self.send(self.lock(), |st| {
            let mut req = self.request(st, 0, idle_progress(), Some(why.to_owned()));
            req.holding.clear();
            req
        });
        drop(st);
        if let Err(f) = answer {
            let why = match f {
                Failure::Retry(m) | Failure::End(End::Unusable(m) | End::MovedOn(m)) => m,
                Failure::End(e) => e.message(),
            };
            eprintln!("warning: could not tell the operator the input is unusable ({why})");
        }
    }

    /// The heartbeat thread's body: while shards run, one message every heartbeat period
    /// (counted from the last message of any kind) until `stop`, with the progress of the
    /// shards running (`slots`: each slot's counters, sharing the mounts' meters). It is also
    /// the worker's watchdog: a destination mount with tasks waiting `stall` and none finishing
    /// has stopped answering (see [`Session::give_back`]); `dests` are the worker's
    /// destinations.
    pub fn heartbeats(
        &self,
        slots: &[Progress],
        stop: &AtomicBool,
        stall: Duration,
        dests: &[PathBuf],
    ) {
        let Some(progress) = slots.first() else {
            return;
        };
        // When a `stopped` answer came.
        let mut stopped_at: Option<Instant> = None;
        while !stop.load(Relaxed) {
            {
                let st = self.lock();
                if !st.to_tell() {
                    drop(self.kick.wait_timeout(st, Duration::from_millis(50)));
                }
            }
            if stopped_at.is_some_and(|at| at.elapsed() >= self.stop_grace) {
                end_now(self.lock().ending.clone().unwrap_or(End::Stopped));
            }
            let figures = progress.mounts();
            if let Some((mount, why)) = stalled(&figures, stall) {
                let avoid = self.avoid();
                let left = dests
                    .iter()
                    .map(|d| d.display().to_string())
                    .filter(|d| *d != mount && !avoid.contains(d))
                    .count();
                self.give_back(&mount, &why, left, progress);
            }
            let mut st = self.lock();
            st.mounts = figures.iter().map(mount_figures).collect();
            // Decided on the state the message is built from: a slot's request on the wire may
            // carry the ends this would have told (and the pass may be over when it comes back).
            st = self.off_the_wire(st);
            let beat = !st.running.is_empty()
                && st.ending.is_none()
                && st.last_sent.elapsed() >= self.heartbeat;
            if !beat && !st.to_tell() {
                continue;
            }
            let answer;
            (st, answer) = self.send(st, |st| {
                let running = st
                    .running
                    .iter()
                    .filter_map(|r| Some(shard_progress(&slots.get(r.slot)?.snapshot(), &r.base)));
                // Room only if the operator may have shards for us; but a message that leaves
                // the worker holding nothing (its last shard's end) asks with all of it: the
                // operator holds its answer until there is something for the worker.
                let room = if st.waited_recently() && !st.running.is_empty() {
                    0
                } else {
                    st.room()
                };
                self.request(st, room, sum_progress(running), None)
            });
            match answer {
                // The slots take no more shards (see `next_shard`) and the worker ends cleanly,
                // its report whole, once those running have; one still running after the grace
                // is cut short.
                Ok(ClaimResponse {
                    state: PassState::Stopped,
                    ..
                }) => {
                    stopped_at.get_or_insert_with(Instant::now);
                }
                Ok(_) => {}
                // The same for an end the answer means (the run moved on, the token refused).
                Err(Failure::End(e)) => {
                    st.ending.get_or_insert(e);
                    stopped_at.get_or_insert_with(Instant::now);
                }
                Err(Failure::Retry(why)) => {
                    if let Some(end) = self.given_up(&st, &why) {
                        end_now(end);
                    }
                    eprintln!(
                        "warning: heartbeat: {why}; next one in {:?}",
                        self.heartbeat
                    );
                }
            }
        }
    }

    /// A destination mount stopped answering: its threads are stuck in the kernel (a hung NFS
    /// server behind a hard mount gives no error), and every shard this worker holds has work
    /// waiting on them. The worker tells the operator which mount and hands its shards back (one
    /// attempt; if it fails they come back when the pod ends), then exits 4 so that the stuck
    /// threads go with the process. Its replacement keeps away from the mount.
    fn give_back(&self, mount: &str, why: &str, left: usize, progress: &Progress) -> ! {
        let mut st = self.lock();
        st.mounts = progress.mounts().iter().map(mount_figures).collect();
        let (st, answer) = self.send(st, |st| {
            let mut req = self.request(st, 0, idle_progress(), None);
            req.holding.clear();
            req.unresponsive = Some(UnresponsiveMount {
                mount: mount.to_owned(),
                left: left as u32,
                why: why.to_owned(),
            });
            req
        });
        drop(st);
        let told = match answer {
            Ok(_) => "the operator was told".to_owned(),
            Err(
                Failure::Retry(m)
                | Failure::End(End::Unusable(m) | End::MovedOn(m) | End::GaveUp(m)),
            ) => {
                format!("the operator could not be told: {m}")
            }
            Err(Failure::End(End::Stopped)) => "the operator was told".to_owned(),
        };
        eprintln!(
            "error: destination {mount} stopped answering ({why}); the shards held go back to the \
             queue and this worker exits {} ({told})",
            ingest_job::exit::MOUNT_UNRESPONSIVE
        );
        std::process::exit(ingest_job::exit::MOUNT_UNRESPONSIVE)
    }

    /// One message, asked again with backoff while the failure is worth it.
    /// `room` is asked of the state as each attempt goes out.
    fn exchange<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        room: impl Fn(&State) -> u32,
    ) -> Result<(MutexGuard<'a, State>, ClaimResponse), End> {
        let mut pause = BACKOFF_FIRST;
        loop {
            let answer;
            (st, answer) = self.send(st, |st| self.request(st, room(st), idle_progress(), None));
            match answer {
                Ok(answer) => return Ok((st, answer)),
                Err(Failure::End(e)) => return Err(e),
                Err(Failure::Retry(why)) => {
                    if let Some(end) = self.given_up(&st, &why) {
                        return Err(end);
                    }
                    eprintln!("warning: {why}; asking again in {pause:?}");
                    drop(st);
                    std::thread::sleep(pause);
                    st = self.lock();
                    pause = (pause * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    fn given_up(&self, st: &State, why: &str) -> Option<End> {
        let since = st.failing_since?;
        (since.elapsed() >= self.give_up).then(|| self.endpoint.gave_up(since, why))
    }

    fn request(
        &self,
        st: &State,
        room: u32,
        progress: PodProgress,
        unusable: Option<String>,
    ) -> ClaimRequest {
        ClaimRequest {
            namespace: self.who.namespace.clone(),
            job: self.who.job.clone(),
            uid: self.who.uid.clone(),
            run: self.who.run,
            role: self.who.role.to_owned(),
            worker: self.who.worker.clone(),
            holding: st
                .running
                .iter()
                .map(|r| r.shard)
                .chain(st.queued.iter().copied())
                .collect(),
            done: st.done.clone(),
            room,
            progress,
            unusable,
            unresponsive: None,
            mounts: st.mounts.clone(),
            write_started: st.write_started,
        }
    }

    /// One request, the one `build` makes of the state once no other is on the wire. The state
    /// is unlocked while it is, so that the engine's slots start and end shards meanwhile
    /// instead of waiting for the network (they did, a round trip each: a quarter of the copy's
    /// slot time in the operator benchmark), and locked again for the answer. A 2xx answer
    /// acknowledges the `done` it carried (shards that ended meanwhile go with the next one);
    /// shards given are queued.
    fn send<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        build: impl FnOnce(&State) -> ClaimRequest,
    ) -> (MutexGuard<'a, State>, Result<ClaimResponse, Failure>) {
        st = self.off_the_wire(st);
        let req = build(&st);
        st.in_flight = true;
        st.last_sent = Instant::now();
        drop(st);
        let sent = self.endpoint.post(&req).unwrap_or_else(|f| (false, Err(f)));
        let mut st = self.lock();
        st.in_flight = false;
        self.wire.notify_all();
        let answer = Self::take_answer(&mut st, &req, sent);
        // What ended while this was on the wire can go now.
        self.kick.notify_all();
        (st, answer)
    }

    fn take_answer(
        st: &mut State,
        req: &ClaimRequest,
        (acknowledged, answer): (bool, Result<ClaimResponse, Failure>),
    ) -> Result<ClaimResponse, Failure> {
        if acknowledged {
            st.done
                .retain(|d| !req.done.iter().any(|sent| sent.shard == d.shard));
        }
        match &answer {
            Err(Failure::Retry(_)) => {
                st.failing_since.get_or_insert_with(Instant::now);
            }
            _ => st.failing_since = None,
        }
        let answer = answer?;
        st.avoid = answer.avoid.clone();
        st.budgets.extend(&answer.deletes);
        if let Some(t) = &st.throttle {
            t.set(answer.limits.unwrap_or_default());
        }
        for s in &answer.shards {
            if !st.queued.contains(s) && !st.running.iter().any(|r| r.shard == *s) {
                st.queued.push_back(*s);
            }
        }
        match answer.state {
            // Asked for shards and got none: ask again only after `WAIT`.
            PassState::Work | PassState::Wait if req.room > 0 => {
                st.waited = answer.shards.is_empty().then(Instant::now);
            }
            PassState::Work | PassState::Wait => {}
            PassState::Finished | PassState::Stopped => st.over = Some(answer.state),
        }
        Ok(answer)
    }
}

/// The operator's endpoint as a pod talks to it: one URL, the token read from its file before
/// every request (the kubelet rotates it), a fresh connection each time. Claims workers and the
/// scan pod (which sends its plan) share it.
pub struct Endpoint {
    url: String,
    token_file: PathBuf,
    agent: ureq::Agent,
}

impl Endpoint {
    /// `url`: the endpoint's whole URL ([`endpoint`]). The token must be readable now.
    fn new(url: String, token_file: &Path) -> Result<Endpoint, String> {
        read_token(token_file)?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(REQUEST_TIMEOUT))
            .http_status_as_error(false)
            // The endpoint is the operator's Service, inside the cluster: never through a proxy
            // set for the outside world.
            .proxy(None)
            // A fresh connection per message (a few seconds apart): a message never goes out on
            // a pooled connection that an operator since restarted or moved has closed.
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .build()
            .into();
        Ok(Endpoint {
            url,
            token_file: token_file.to_owned(),
            agent,
        })
    }

    /// `path` on the operator at `--claims-url` `base`, with the token in `token_file`. Errors
    /// name the flag or the path.
    pub fn at(base: &str, path: &str, token_file: &Path) -> Result<Endpoint, String> {
        Endpoint::new(endpoint(base, path)?, token_file)
    }

    /// Sends `req` until it is answered: what [`Endpoint::post`] would ask again (408, 429, 5xx,
    /// no connection) is asked again after [`BACKOFF_FIRST`], doubling to [`BACKOFF_MAX`], for at
    /// most `give_up`; any other failure ends it.
    pub fn ask<T: serde::de::DeserializeOwned>(
        &self,
        req: &impl serde::Serialize,
        give_up: Duration,
    ) -> Result<T, End> {
        let since = Instant::now();
        let mut pause = BACKOFF_FIRST;
        loop {
            let why = match self.post(req) {
                Ok((_, Ok(answer))) => return Ok(answer),
                Ok((_, Err(Failure::End(e)))) | Err(Failure::End(e)) => return Err(e),
                Ok((_, Err(Failure::Retry(why)))) | Err(Failure::Retry(why)) => why,
            };
            if since.elapsed() + pause > give_up {
                return Err(self.gave_up(since, &why));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(BACKOFF_MAX);
        }
    }

    /// The end of asking since `since` without an answer (`why`: the last failure).
    fn gave_up(&self, since: Instant, why: &str) -> End {
        End::GaveUp(format!(
            "{}: no answer for {} s, giving up (last: {why})",
            self.url,
            since.elapsed().as_secs()
        ))
    }

    /// One request: whether the answer was a 2xx, and what it said.
    #[allow(clippy::type_complexity)]
    fn post<T: serde::de::DeserializeOwned>(
        &self,
        req: &impl serde::Serialize,
    ) -> Result<(bool, Result<T, Failure>), Failure> {
        let token = read_token(&self.token_file).map_err(|e| Failure::End(End::Unusable(e)))?;
        let mut answer = self
            .agent
            .post(&self.url)
            .header("Authorization", &format!("Bearer {token}"))
            .send_json(req)
            .map_err(|e| self.transport_failure(e))?;
        let status = answer.status().as_u16();
        if (200..300).contains(&status) {
            let parsed = answer.body_mut().read_json::<T>().map_err(|e| {
                Failure::Retry(format!(
                    "{}: answer {status} not understood ({e})",
                    self.url
                ))
            });
            return Ok((true, parsed));
        }
        let body = answer
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        let mut body = body.trim().to_owned();
        ingest_api::report::truncate_utf8(&mut body, BODY_SHOWN);
        let what = format!("{} answered {status}: {body:?}", self.url);
        Err(match status {
            401 | 403 => Failure::End(End::Unusable(format!(
                "{what} (the token from {} was refused)",
                self.token_file.display()
            ))),
            404 | 409 => Failure::End(End::MovedOn(what)),
            408 | 429 | 500..=599 => Failure::Retry(what),
            _ => Failure::End(End::Unusable(what)),
        })
    }

    fn transport_failure(&self, e: ureq::Error) -> Failure {
        match e {
            // What the URL or this build cannot do: asking again cannot help.
            ureq::Error::BadUri(_)
            | ureq::Error::Http(_)
            | ureq::Error::InvalidProxyUrl
            | ureq::Error::RedirectFailed
            | ureq::Error::TooManyRedirects => {
                Failure::End(End::Unusable(format!("--claims-url {}: {e}", self.url)))
            }
            // Refused, reset, timed out, a name not (yet) resolved, a torn answer: the operator
            // may be restarting or moving.
            e => Failure::Retry(format!("{}: {e}", self.url)),
        }
    }
}

/// `path` on the operator at `--claims-url` (`http://HOST[:PORT][/PREFIX]` + `path`: [`claims::PATH`],
/// [`claims::PLAN_PATH`]).
fn endpoint(base: &str, path: &str) -> Result<String, String> {
    let bad = |why: &str| format!("--claims-url {base:?}: {why}");
    let rest = base.strip_prefix("http://").ok_or_else(|| {
        bad("must be an http:// URL (the endpoint is inside the cluster; this build has no TLS)")
    })?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(bad("has no host"));
    }
    if rest.contains(['?', '#']) {
        return Err(bad("must not have a query or fragment"));
    }
    Ok(format!("{}{path}", base.trim_end_matches('/')))
}

/// The token, read fresh (the kubelet rotates the file).
fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "--token-file {}: cannot be read ({e}); the operator's endpoint needs the pod's service-account token",
            path.display()
        )
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("--token-file {}: is empty", path.display()));
    }
    Ok(token.to_owned())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The destination with operations waiting `stall` and none finishing (it has stopped answering)
/// the longest, and why it looks so. The longest: a hung server's callers can hold others up (a
/// lock one of them took), whose own mounts then look waiting too, only later; a watchdog that
/// looked late (a busy machine) must still name the one that stopped first.
pub fn stalled(figures: &[(String, MountSnapshot)], stall: Duration) -> Option<(String, String)> {
    let (mount, snap) = figures
        .iter()
        .filter(|(_, m)| m.waiting >= stall)
        .max_by_key(|(_, m)| m.waiting)?;
    Some((
        mount.clone(),
        format!(
            "{} operation(s) waiting {} s with none finishing",
            snap.running,
            snap.waiting.as_secs()
        ),
    ))
}

/// One destination's meter as the operator (and `run`) take it.
pub fn mount_figures((mount, m): &(String, MountSnapshot)) -> MountFigures {
    MountFigures {
        mount: mount.clone(),
        tasks: m.tasks,
        entries: m.entries,
        bytes: m.bytes,
        latency: m.latency.clone(),
    }
}

/// Progress of a worker holding nothing.
fn idle_progress() -> PodProgress {
    PodProgress {
        at: unix_now(),
        ..PodProgress::default()
    }
}

/// The progress of several shards together.
fn sum_progress(shards: impl Iterator<Item = PodProgress>) -> PodProgress {
    shards.fold(idle_progress(), |mut sum, p| {
        sum.files += p.files;
        sum.bytes += p.bytes;
        sum.failed += p.failed;
        sum.directories += p.directories;
        sum.checked += p.checked;
        sum
    })
}

/// The engine's counters since `base`: the progress of the shard that started then.
fn shard_progress(now: &Snapshot, base: &Snapshot) -> PodProgress {
    PodProgress {
        files: now.files.saturating_sub(base.files),
        bytes: now.bytes.saturating_sub(base.bytes),
        failed: now.failed.saturating_sub(base.failed),
        directories: 0,
        checked: now.verified.saturating_sub(base.verified),
        at: unix_now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Condvar};

    #[test]
    fn the_mount_waiting_longest_is_named() {
        let snap = |running, secs| MountSnapshot {
            running,
            waiting: Duration::from_secs(secs),
            ..Default::default()
        };
        let figures = vec![
            ("/d0".to_owned(), snap(0, 0)),
            ("/d1".to_owned(), snap(3, 61)),
            ("/d2".to_owned(), snap(1, 75)),
            ("/d3".to_owned(), snap(2, 30)),
        ];
        let stall = Duration::from_secs(60);
        assert_eq!(
            stalled(&figures, stall),
            Some((
                "/d2".into(),
                "1 operation(s) waiting 75 s with none finishing".into()
            ))
        );
        assert_eq!(stalled(&figures[..1], stall), None);
        assert_eq!(stalled(&figures[3..], stall), None);
    }

    /// Requests an endpoint received: the Authorization header and the message.
    type Seen = Arc<(Mutex<Vec<(String, ClaimRequest)>>, Condvar)>;

    /// An endpoint that answers with `answers` in order (the last one again when they run out)
    /// and records every request.
    fn scripted(answers: Vec<(u16, &str)>) -> (String, Seen) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Seen = Arc::default();
        let log = seen.clone();
        let answers: Vec<(u16, String)> = answers
            .into_iter()
            .map(|(c, b)| (c, b.to_owned()))
            .collect();
        std::thread::spawn(move || {
            for (i, conn) in listener.incoming().enumerate() {
                let mut conn = conn.unwrap();
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let (mut auth, mut length) = (String::new(), 0);
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    if line == "\r\n" {
                        break;
                    }
                    let (k, v) = line.split_once(':').unwrap_or_default();
                    match k.to_ascii_lowercase().as_str() {
                        "authorization" => auth = v.trim().to_owned(),
                        "content-length" => length = v.trim().parse().unwrap(),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                r.read_exact(&mut body).unwrap();
                let (code, text) = &answers[i.min(answers.len() - 1)];
                write!(
                    conn,
                    "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                )
                .unwrap();
                drop(conn);
                log.0
                    .lock()
                    .unwrap()
                    .push((auth, serde_json::from_slice(&body).unwrap()));
                log.1.notify_all();
            }
        });
        (url, seen)
    }

    /// Waits for the `n`-th request.
    fn wait_for(seen: &Seen, n: usize) -> Vec<(String, ClaimRequest)> {
        let mut log = seen.0.lock().unwrap();
        while log.len() < n {
            log = seen.1.wait_timeout(log, Duration::from_secs(60)).unwrap().0;
        }
        log.clone()
    }

    fn session(url: &str, token: &Path, heartbeat: Duration) -> Session {
        let who = Identity {
            namespace: "ns".into(),
            job: "ij".into(),
            uid: "u".into(),
            run: 4,
            role: "copy",
            worker: "ij-copy-x".into(),
        };
        Session::with_identity(endpoint(url, claims::PATH).unwrap(), token, who, heartbeat).unwrap()
    }

    fn token(t: &tempfile::TempDir, value: &str) -> PathBuf {
        let p = t.path().join("token");
        std::fs::write(&p, value).unwrap();
        p
    }

    const FINISHED: &str = r#"{"shards":[],"state":"finished"}"#;

    /// An endpoint that holds each answer until the test releases it: `requests` yields each
    /// request body as it arrives, and each value sent on the returned sender is the next answer
    /// (200) to go out.
    fn held() -> (
        String,
        std::sync::mpsc::Receiver<serde_json::Value>,
        std::sync::mpsc::Sender<&'static str>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (got, requests) = std::sync::mpsc::channel();
        let (release, answers) = std::sync::mpsc::channel::<&'static str>();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let mut conn = conn.unwrap();
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    if line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                r.read_exact(&mut body).unwrap();
                got.send(serde_json::from_slice(&body).unwrap()).unwrap();
                let Ok(text) = answers.recv() else { return };
                write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                )
                .unwrap();
            }
        });
        (url, requests, release)
    }

    #[test]
    fn slots_start_and_end_shards_while_a_request_is_on_the_wire() {
        let t = tempfile::tempdir().unwrap();
        let (url, requests, release) = held();
        let s = session(&url, &token(&t, "tok"), Duration::from_secs(3600));
        s.start(5, 0, Snapshot::default());
        std::thread::scope(|sc| {
            let asking = sc.spawn(|| s.next_shard(2));
            // The question is on the wire, its answer held.
            let first = requests.recv().unwrap();
            assert_eq!(first["room"], 1, "{first}");
            // Meanwhile a slot ends its shard: it must not wait for the network. (A bound on
            // the wait, not a pace: the answer is held until this returns.)
            let (ended, ok) = std::sync::mpsc::channel();
            let s = &s;
            sc.spawn(move || {
                s.finish(5, PodResult::default());
                ended.send(()).unwrap();
            });
            ok.recv_timeout(Duration::from_secs(60))
                .expect("finish waited for the request on the wire");
            release.send(r#"{"shards":[8],"state":"work"}"#).unwrap();
            // The shard given starts at once: the end of 5 is not told first.
            assert_eq!(asking.join().unwrap().unwrap(), Some(8));
        });
        // The shard that ended while the first request was out goes with the next message.
        std::thread::scope(|sc| {
            let asking = sc.spawn(|| s.next_shard(2));
            let second = requests.recv().unwrap();
            assert_eq!(second["done"][0]["shard"], 5, "{second}");
            assert_eq!(second["holding"], serde_json::json!([8]), "{second}");
            release.send(r#"{"shards":[9],"state":"work"}"#).unwrap();
            assert_eq!(asking.join().unwrap().unwrap(), Some(9));
        });
        // Acknowledged: not sent again.
        std::thread::scope(|sc| {
            let asking = sc.spawn(|| s.next_shard(2));
            let third = requests.recv().unwrap();
            assert_eq!(third["done"], serde_json::json!([]), "{third}");
            release.send(FINISHED).unwrap();
            assert_eq!(asking.join().unwrap().unwrap(), None);
        });
    }

    #[test]
    fn a_done_is_sent_again_until_an_answer_acknowledges_it() {
        let t = tempfile::tempdir().unwrap();
        let (url, seen) = scripted(vec![(503, "not yet"), (200, FINISHED)]);
        let s = session(&url, &token(&t, "tok"), Duration::from_secs(5));
        let result = PodResult {
            files: 2,
            ..PodResult::default()
        };
        s.finish(3, result.clone());
        assert_eq!(s.next_shard(1), Ok(None));
        let log = wait_for(&seen, 2);
        let done = |i: usize| log[i].1.done.clone();
        let three = vec![ShardDone { shard: 3, result }];
        assert_eq!((done(0), done(1)), (three.clone(), three));
        // The pass is over: the worker's other slots are told without asking again (nor
        // waiting a second each to).
        assert_eq!(s.next_shard(1), Ok(None));
        assert_eq!(seen.0.lock().unwrap().len(), 2);
        assert!(log.iter().all(|(auth, r)| auth == "Bearer tok"
            && r.room == 1
            && r.holding.is_empty()
            && (
                r.namespace.as_str(),
                r.job.as_str(),
                r.uid.as_str(),
                r.run,
                r.role.as_str()
            ) == ("ns", "ij", "u", 4, "copy")));
    }

    #[test]
    fn heartbeats_hold_the_running_shard_and_send_its_own_progress() {
        let t = tempfile::tempdir().unwrap();
        let (url, seen) = scripted(vec![(200, r#"{"shards":[],"state":"work"}"#)]);
        let s = session(&url, &token(&t, "tok"), Duration::from_millis(50));
        let progress = Progress::default();
        // An earlier shard's counts, then this one's.
        progress.files.fetch_add(10, Relaxed);
        s.start(7, 0, progress.snapshot());
        progress.files.fetch_add(4, Relaxed);
        progress.bytes.fetch_add(100, Relaxed);
        let stop = AtomicBool::new(false);
        let log = std::thread::scope(|sc| {
            let slots = std::slice::from_ref(&progress);
            sc.spawn(|| s.heartbeats(slots, &stop, Duration::from_secs(3600), &[]));
            let log = wait_for(&seen, 1);
            stop.store(true, Relaxed);
            log
        });
        let r = &log[0].1;
        assert_eq!((r.holding.clone(), r.room, r.done.len()), (vec![7], 0, 0));
        assert_eq!((r.progress.files, r.progress.bytes), (4, 100));
        // Once the shard ended, its end is what the next message says, not a heartbeat.
        s.finish(7, PodResult::default());
        assert!(s.lock().running.is_empty());
    }

    #[test]
    fn two_shards_at_once_are_both_held_and_their_progress_is_summed_from_each_start() {
        let t = tempfile::tempdir().unwrap();
        let (url, seen) = scripted(vec![
            (200, r#"{"shards":[5,6],"state":"work"}"#),
            (200, r#"{"shards":[8],"state":"work"}"#),
            // Heartbeats, as many as come.
            (200, r#"{"shards":[],"state":"work"}"#),
        ]);
        let s = session(&url, &token(&t, "tok"), Duration::from_millis(50));
        let slots = [Progress::default(), Progress::default()];
        assert_eq!(s.next_shard(2), Ok(Some(5)));
        // Given together: the second slot starts 6 without asking.
        assert_eq!(s.next_shard(2), Ok(Some(6)));
        s.start(5, 0, slots[0].snapshot());
        s.start(6, 1, slots[1].snapshot());
        slots[0].files.fetch_add(3, Relaxed);
        // 5 ends, after 3 s (long shards: none held ahead), while 6 runs: one slot is free, so
        // the worker asks for one shard, holding 6.
        s.lock()
            .ended(5, Some(Duration::from_secs(3)), PodResult::default());
        assert_eq!(s.next_shard(2), Ok(Some(8)));
        // Slot 0 ran 5 before: its counts until now are not 8's.
        s.start(8, 0, slots[0].snapshot());
        slots[0].files.fetch_add(4, Relaxed);
        slots[1].files.fetch_add(2, Relaxed);
        let stop = AtomicBool::new(false);
        std::thread::scope(|sc| {
            sc.spawn(|| s.heartbeats(&slots, &stop, Duration::from_secs(3600), &[]));
            wait_for(&seen, 3);
            stop.store(true, Relaxed);
        });
        let log = wait_for(&seen, 3);
        let r = |i: usize| {
            let r = &log[i].1;
            let mut holding = r.holding.clone();
            holding.sort();
            (
                r.room,
                holding,
                r.done.iter().map(|d| d.shard).collect::<Vec<_>>(),
            )
        };
        assert_eq!(r(0), (2, vec![], vec![]));
        assert_eq!(r(1), (1, vec![6], vec![5]));
        // The heartbeat: both shards held, each one's progress since its own start.
        assert_eq!(r(2), (0, vec![6, 8], vec![]));
        assert_eq!(log[2].1.progress.files, 4 + 2);
    }

    #[test]
    fn refusals_end_the_worker_as_the_protocol_says() {
        let t = tempfile::tempdir().unwrap();
        let tok = token(&t, "tok");
        for (code, want) in [
            (401, Outcome::UnusableInput),
            (403, Outcome::UnusableInput),
            (400, Outcome::UnusableInput),
            (404, Outcome::Success),
            (409, Outcome::Success),
        ] {
            let (url, _) = scripted(vec![(code, "the reason")]);
            let end = session(&url, &tok, Duration::from_secs(5))
                .next_shard(1)
                .unwrap_err();
            assert_eq!(end.outcome(), want, "{code}: {end}");
            let m = end.message();
            assert!(
                m.contains(&url) && m.contains(&code.to_string()) && m.contains("the reason"),
                "{m}"
            );
            if code == 401 || code == 403 {
                assert!(m.contains(&tok.display().to_string()), "{m}");
            }
        }
    }

    #[test]
    fn wait_means_ask_again_and_stopped_ends_the_pass() {
        let t = tempfile::tempdir().unwrap();
        let (url, seen) = scripted(vec![
            (200, r#"{"shards":[],"state":"wait"}"#),
            (200, r#"{"shards":[5,6],"state":"work"}"#),
            (200, r#"{"shards":[],"state":"work"}"#),
            (200, r#"{"shards":[],"state":"stopped"}"#),
        ]);
        let s = session(&url, &token(&t, "tok"), Duration::from_secs(5));
        assert_eq!(s.next_shard(1), Ok(Some(5)));
        s.start(5, 0, Snapshot::default());
        // A shard of 3 s: none held ahead.
        s.lock()
            .ended(5, Some(Duration::from_secs(3)), PodResult::default());
        // Shard 6 was given too: it starts at once (the end of 5 is told by the heartbeat
        // thread, none here, or with the next question).
        assert_eq!(s.next_shard(1), Ok(Some(6)));
        s.start(6, 0, Snapshot::default());
        s.lock()
            .ended(6, Some(Duration::from_secs(3)), PodResult::default());
        // Both ends told; the answer gives nothing, so the next question waits `WAIT`.
        assert_eq!(s.next_shard(1), Err(End::Stopped));
        let log = wait_for(&seen, 4);
        let r = |i: usize| {
            let r = &log[i].1;
            (
                r.room,
                r.holding.clone(),
                r.done.iter().map(|d| d.shard).collect::<Vec<_>>(),
            )
        };
        assert_eq!(r(0), (1, vec![], vec![]));
        assert_eq!(r(1), (1, vec![], vec![]));
        assert_eq!(r(2), (1, vec![], vec![5, 6]));
        assert_eq!(r(3), (1, vec![], vec![]));
    }

    #[test]
    fn short_shards_are_claimed_ahead_and_their_ends_told_by_the_heartbeat_thread() {
        let t = tempfile::tempdir().unwrap();
        let (url, requests, release) = held();
        // Beats an hour apart: every message below is the heartbeat thread woken.
        let s = session(&url, &token(&t, "tok"), Duration::from_secs(3600));
        let slots = [Progress::default(), Progress::default()];
        let stop = AtomicBool::new(false);
        std::thread::scope(|sc| {
            let asking = sc.spawn(|| s.next_shard(2));
            let first = requests.recv().unwrap();
            assert_eq!(first["room"], 2, "nothing known: no shard ahead: {first}");
            release.send(r#"{"shards":[5,6],"state":"work"}"#).unwrap();
            assert_eq!(asking.join().unwrap().unwrap(), Some(5));
            assert_eq!(s.next_shard(2), Ok(Some(6)));
            s.start(5, 0, slots[0].snapshot());
            s.start(6, 1, slots[1].snapshot());
            sc.spawn(|| s.heartbeats(&slots, &stop, Duration::from_secs(3600), &[]));
            // 5 ends after 0.1 s: the 2 slots run 20 such shards a second, so the worker holds
            // ahead as many as it has slots (2).
            {
                let mut st = s.lock();
                st.ended(5, Some(Duration::from_millis(100)), PodResult::default());
                assert_eq!(st.room(), 2 + 2 - 1);
            }
            s.kick.notify_all();
            let second = requests.recv().unwrap();
            assert_eq!(second["done"][0]["shard"], 5, "{second}");
            assert_eq!(second["holding"], serde_json::json!([6]), "{second}");
            assert_eq!(second["room"], 3, "{second}");
            release
                .send(r#"{"shards":[7,8,9],"state":"work"}"#)
                .unwrap();
            // The slot that ended 5 starts 7 without a question of its own; two stay given.
            while s.lock().queued.len() < 3 {
                std::thread::yield_now();
                let st = s.lock();
                drop(s.wire.wait_timeout(st, Duration::from_millis(10)));
            }
            assert_eq!(s.next_shard(2), Ok(Some(7)));
            assert_eq!(s.lock().queued, [8, 9]);
            assert_eq!(s.lock().room(), 0);
            stop.store(true, Relaxed);
        });
        drop(release);
        // Nothing else was said: no room, nothing ended.
        assert!(requests.try_recv().is_err());
    }

    #[test]
    fn a_workers_last_end_asks_for_work_and_a_slot_told_to_wait_goes_with_the_answer() {
        let t = tempfile::tempdir().unwrap();
        let (url, requests, release) = held();
        // Beats an hour apart, and a `wait` answer holds a slot back an hour: only the answers
        // below move the worker on.
        let s = session(&url, &token(&t, "tok"), Duration::from_secs(3600));
        s.lock().wait = Duration::from_secs(3600);
        let slots = [Progress::default(), Progress::default()];
        let stop = AtomicBool::new(false);
        std::thread::scope(|sc| {
            let asking = sc.spawn(|| s.next_shard(2));
            requests.recv().unwrap();
            release.send(r#"{"shards":[5],"state":"work"}"#).unwrap();
            assert_eq!(asking.join().unwrap(), Ok(Some(5)));
            s.start(5, 0, slots[0].snapshot());
            // The other slot asks, is told to wait, and waits.
            let (tx, ended) = std::sync::mpsc::channel();
            let s = &s;
            sc.spawn(move || tx.send(s.next_shard(2)).unwrap());
            let second = requests.recv().unwrap();
            assert_eq!(
                (second["room"].as_u64(), &second["holding"]),
                (Some(1), &serde_json::json!([5]))
            );
            release.send(r#"{"shards":[],"state":"wait"}"#).unwrap();
            sc.spawn(|| s.heartbeats(&slots, &stop, Duration::from_secs(3600), &[]));
            // 5 ends: the worker holds nothing now, so its end asks for work with all its room
            // (the operator holds such a question until there is something for it).
            s.finish(5, PodResult::default());
            let last = requests.recv().unwrap();
            assert_eq!(last["done"][0]["shard"], 5, "{last}");
            assert_eq!(last["holding"], serde_json::json!([]), "{last}");
            assert!(last["room"].as_u64() > Some(0), "{last}");
            release.send(FINISHED).unwrap();
            // The waiting slot goes with that answer, not after its wait.
            let r = ended.recv_timeout(Duration::from_secs(60));
            assert_eq!(r, Ok(Ok(None)), "the waiting slot ends with the pass");
            stop.store(true, Relaxed);
        });
    }

    #[test]
    fn hello_asks_again_until_a_pass_made_ahead_opens_and_takes_its_avoid_list() {
        let t = tempfile::tempdir().unwrap();
        let closed = r#"{"shards":[],"state":"wait","closed":true}"#;
        let opened = r#"{"shards":[],"state":"wait","avoid":["/ingest/dest-2"]}"#;
        let (url, seen) = scripted(vec![(200, closed), (200, closed), (200, opened)]);
        let s = session(&url, &token(&t, "tok"), Duration::from_secs(3600));
        assert_eq!(s.hello(), Ok(()));
        let log = wait_for(&seen, 3);
        assert_eq!(log.len(), 3, "asked until it opened");
        assert!(log.iter().all(|(_, r)| r.room == 0 && r.holding.is_empty()));
        assert_eq!(s.avoid(), ["/ingest/dest-2"]);
    }

    #[test]
    fn shards_held_ahead_last_the_slots_about_a_second_while_shards_are_short() {
        let ms = |m| Some(Duration::from_millis(m));
        assert_eq!(ahead(None, 8), 0, "nothing known yet");
        assert_eq!(ahead(ms(100), 8), 8, "80 a second: as many as the slots");
        assert_eq!(ahead(ms(1000), 8), 8);
        assert_eq!(ahead(ms(1500), 8), 5, "8 slots run 5.3 in a second");
        assert_eq!(ahead(ms(1900), 4), 2);
        assert_eq!(ahead(ms(1500), 1), 1, "at least one while short");
        assert_eq!(ahead(ms(2000), 8), 0, "long shards: none");
        assert_eq!(ahead(ms(0), 2), 2);
        assert_eq!(ahead(ms(100), 0), 0, "no slots: nothing to run them");
    }

    #[test]
    fn the_pace_is_a_moving_average_of_shard_times() {
        let t = tempfile::tempdir().unwrap();
        let s = session(
            "http://127.0.0.1:9",
            &token(&t, "tok"),
            Duration::from_secs(5),
        );
        let mut st = s.lock();
        st.ended(1, Some(Duration::from_secs(1)), PodResult::default());
        assert_eq!(st.pace, Some(Duration::from_secs(1)));
        st.ended(2, Some(Duration::from_secs(6)), PodResult::default());
        assert_eq!(st.pace, Some(Duration::from_secs(2)));
        assert_eq!(st.done.iter().map(|d| d.shard).collect::<Vec<_>>(), [1, 2]);
    }

    /// A worker given shards 5 and 6 that started 5, its heartbeat thread beating every 50 ms
    /// and answered `second`: once `met` holds of the state, `then` runs with the session. The
    /// worker must end by itself (its report whole), never be cut short. Returns the session and
    /// what the endpoint saw.
    fn a_beat_answered(
        second: (u16, &str),
        met: fn(&State) -> bool,
        then: impl FnOnce(&Session),
    ) -> (Session, Seen) {
        let t = tempfile::tempdir().unwrap();
        let (url, seen) = scripted(vec![(200, r#"{"shards":[5,6],"state":"work"}"#), second]);
        let mut s = session(&url, &token(&t, "tok"), Duration::from_millis(50));
        s.stop_grace = Duration::from_secs(3600);
        let progress = [Progress::default(), Progress::default()];
        assert_eq!(s.next_shard(2), Ok(Some(5)));
        s.start(5, 0, Snapshot::default());
        let stop = AtomicBool::new(false);
        std::thread::scope(|sc| {
            sc.spawn(|| s.heartbeats(&progress, &stop, Duration::from_secs(3600), &[]));
            let mut st = s.lock();
            while !met(&st) {
                st = s.wire.wait_timeout(st, Duration::from_secs(60)).unwrap().0;
            }
            drop(st);
            then(&s);
            stop.store(true, Relaxed);
        });
        (s, seen)
    }

    #[test]
    fn stopped_to_a_heartbeat_starts_nothing_more_and_tells_the_running_shards_end() {
        // A beat holding 5 (and 6, given) is answered `stopped`.
        let stopped = (200, r#"{"shards":[],"state":"stopped"}"#);
        let (s, seen) = a_beat_answered(
            stopped,
            |st| st.over.is_some(),
            |s| {
                // 5 ends: told; 6 is never started.
                s.finish(5, PodResult::default());
                assert_eq!(s.next_shard(2), Err(End::Stopped));
                assert_eq!(s.next_shard(2), Err(End::Stopped));
                assert!(s.lock().running.is_empty());
            },
        );
        let log = seen.0.lock().unwrap().clone();
        assert!(
            log.iter()
                .any(|(_, r)| r.done.iter().any(|d| d.shard == 5) && r.room == 0),
            "{log:?}"
        );
        assert!(s.lock().done.is_empty(), "the end of 5 was acknowledged");
    }

    #[test]
    fn the_run_moving_on_under_a_heartbeat_starts_nothing_more_and_ends_cleanly() {
        let moved_on = (404, "no such pass");
        let (_, seen) = a_beat_answered(
            moved_on,
            |st| st.ending.is_some(),
            |s| {
                s.finish(5, PodResult::default());
                let end = s.next_shard(2).unwrap_err();
                assert!(
                    matches!(&end, End::MovedOn(m) if m.contains("404")),
                    "{end:?}"
                );
                assert_eq!(end.outcome(), Outcome::Success);
                assert!(s.lock().running.is_empty(), "6 was never started");
            },
        );
        // Nothing more was sent after the 404 (no message every 50 ms to an answer of 404).
        assert_eq!(seen.0.lock().unwrap().len(), 2);
    }

    #[test]
    fn an_unreachable_operator_is_given_up_on() {
        let t = tempfile::tempdir().unwrap();
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let url = format!("http://{addr}");
        let mut s = session(&url, &token(&t, "tok"), Duration::from_secs(5));
        s.give_up = Duration::from_millis(600);
        let end = s.next_shard(1).unwrap_err();
        assert!(
            matches!(&end, End::GaveUp(m) if m.contains(&url)),
            "{end:?}"
        );
        assert_eq!(end.outcome(), Outcome::Crashed);
    }

    #[test]
    fn unusable_input_is_told_once_and_the_token_is_read_for_every_request() {
        let t = tempfile::tempdir().unwrap();
        let (url, seen) = scripted(vec![(200, r#"{"shards":[],"state":"work"}"#)]);
        let tok = token(&t, "first\n");
        let s = session(&url, &tok, Duration::from_secs(5));
        s.unusable("--dest /x: read-only file system");
        std::fs::write(&tok, "second").unwrap();
        s.unusable("again");
        let log = wait_for(&seen, 2);
        assert_eq!(
            (log[0].0.as_str(), log[1].0.as_str()),
            ("Bearer first", "Bearer second")
        );
        let r = &log[0].1;
        assert_eq!(
            r.unusable.as_deref(),
            Some("--dest /x: read-only file system")
        );
        assert_eq!((r.room, r.holding.len()), (0, 0));
        // A token file that went away is unusable input, naming the file.
        std::fs::remove_file(&tok).unwrap();
        let end = s.next_shard(1).unwrap_err();
        assert!(
            matches!(&end, End::Unusable(m) if m.contains(&tok.display().to_string())),
            "{end:?}"
        );
    }

    #[test]
    fn the_endpoint_is_the_url_and_the_claims_path() {
        assert_eq!(
            endpoint("http://10.0.0.9:8080", claims::PATH).unwrap(),
            "http://10.0.0.9:8080/claims/v1"
        );
        assert_eq!(
            endpoint("http://op.ns.svc:8080/", claims::PATH).unwrap(),
            "http://op.ns.svc:8080/claims/v1"
        );
        // The chart's default: the Service's fully qualified name, final dot and all.
        assert_eq!(
            endpoint("http://op-claims.ns.svc.cluster.local.:8080", claims::PATH).unwrap(),
            "http://op-claims.ns.svc.cluster.local.:8080/claims/v1"
        );
        for bad in [
            "https://op:8080",
            "10.0.0.9:8080",
            "http://",
            "http://:80",
            "http://h/?x",
        ] {
            let e = endpoint(bad, claims::PATH).unwrap_err();
            assert!(e.starts_with("--claims-url"), "{e}");
        }
    }

    #[test]
    fn the_default_token_file_is_the_projected_volumes() {
        assert_eq!(
            default_token_file(),
            Path::new("/var/run/secrets/ingest.vfxt.dev/token")
        );
    }

    #[test]
    fn a_missing_or_empty_token_names_the_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("token");
        assert!(
            read_token(&p)
                .unwrap_err()
                .contains(&p.display().to_string())
        );
        std::fs::write(&p, "\n").unwrap();
        assert!(read_token(&p).unwrap_err().contains("empty"));
        std::fs::write(&p, "abc\n").unwrap();
        assert_eq!(read_token(&p).unwrap(), "abc");
    }

    #[test]
    fn heartbeat_progress_is_the_current_shards_only() {
        let base = Snapshot {
            files: 10,
            bytes: 100,
            failed: 1,
            verified: 4,
            ..Snapshot::default()
        };
        let now = Snapshot {
            files: 15,
            bytes: 160,
            failed: 1,
            verified: 9,
            ..Snapshot::default()
        };
        let p = shard_progress(&now, &base);
        assert_eq!((p.files, p.bytes, p.failed, p.checked), (5, 60, 0, 5));
        assert!(p.at > 0);
    }

    #[test]
    fn ends_map_to_exit_codes() {
        assert_eq!(End::Stopped.outcome(), Outcome::Success);
        assert_eq!(End::MovedOn("x".into()).outcome(), Outcome::Success);
        assert_eq!(End::Unusable("x".into()).outcome(), Outcome::UnusableInput);
        assert_eq!(End::GaveUp("x".into()).outcome(), Outcome::Crashed);
        assert!(End::Stopped.message().contains("operator stopped the run"));
    }
}
