//! One pass (copy or verify) of a run as the coordinator sees it: the shard queue, the summed
//! results of completed shards, and what each worker last said. Workers talk to it through
//! [`Pass::report`], one call per message: "I hold these, I finished these (with results), I have
//! room for N more, here is my progress". The answer is the shards to take and the pass's state.
//!
//! Exactly once: a shard's result is added to the sum only on its first completion (a second
//! worker that finished it after a lease ran out is a duplicate). Restart: [`Pass::checkpoint`]
//! is what the coordinator persists (completed and lost ids, the sum); [`Pass::restore`] starts
//! from it, and workers that report shards they still hold get them back as claims
//! ([`ShardQueue::adopt`]), so no second worker is sent to them. Completions after the last
//! checkpoint are lost with the coordinator: their shards run again, and find their files up to
//! date.
//!
//! Pure: time is an argument, results are any [`Tally`].

use std::collections::{BTreeMap, BTreeSet};

use crate::indexes;
use crate::queue::{Completion, ShardId, ShardQueue, WorkerId};

/// A result that adds up across shards.
pub trait Tally: Default + Clone {
    /// Adds another shard's result.
    fn add(&mut self, other: &Self);
}

/// What a worker says in one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Report<R, P> {
    /// Shards it is working on.
    pub holding: Vec<ShardId>,
    /// Shards it finished since its last acknowledged message, with their results.
    pub done: Vec<(ShardId, R)>,
    /// How many more shards it can take now.
    pub room: u32,
    /// Its progress on the shards it holds.
    pub progress: P,
    /// It cannot work at all (unusable input: a destination it cannot write, a plan it cannot
    /// read): the pass stops, and this says why.
    pub unusable: Option<String>,
    /// A destination mount it writes through stopped answering: the worker hands its claims
    /// back (without cost to their retries) and exits; no worker gets work for that mount again.
    pub unresponsive: Option<Unresponsive>,
}

/// A destination mount on which nothing completed for the stall timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresponsive {
    /// The mount, as workers name it (the operator: `/ingest/dest-<i>`).
    pub mount: String,
    /// The worker's other destination mounts not avoided: with none left, the pass stops
    /// (nothing could write).
    pub left: usize,
    /// What the worker saw (for the status message).
    pub why: String,
}

/// Where the pass stands, as told to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Work on what you hold and were given.
    Work,
    /// Nothing to hand out now, but the pass is not over (other workers' claims may come back):
    /// ask again.
    Wait,
    /// Every shard ended: exit.
    Finished,
    /// A worker reported unusable input: stop taking work and exit.
    Stopped,
}

/// Shard counts of a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub total: u64,
    pub pending: u64,
    pub running: u64,
    pub completed: u64,
    pub lost: u64,
}

/// A pass's pace as its coordinator saw it, for deciding when the next pass's workers should
/// start ([`Pace::ends_soon`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pace {
    /// From the pass's opening to the first word of its slowest worker: about what the next
    /// pass's wave of workers takes to start (the same image, nodes and mounts; seconds on a real
    /// cluster).
    pub startup_ms: u64,
    /// Since the first shard handed out.
    pub busy_ms: u64,
    /// Shards that ended (completed or lost) in `busy_ms`, not those restored from a checkpoint.
    pub ended: u64,
}

impl Pace {
    /// How many start-ups' worth of time ahead the next wave starts: a margin for the slowest
    /// pod of the wave and for a pace that slows at the pass's tail.
    pub const MARGIN: u64 = 2;

    /// Whether the pass is near its end (pure): every shard handed out, or what is left (pending
    /// and running shards, at the pace so far) takes no longer than [`Pace::MARGIN`] start-ups.
    /// Then the next pass's workers, started now, are ready when it ends, and held until then
    /// for no longer than about their own start-up. Without a pace (nothing handed out yet, or a
    /// pass restored after a restart that has ended nothing since), only the first rule. Cheap
    /// ([`Pass::pending`], [`Pass::running`]): asked on worker messages.
    pub fn ends_soon(pace: Option<&Pace>, pending: u64, running: u64) -> bool {
        if pending == 0 {
            return true;
        }
        let Some(p) = pace.filter(|p| p.ended > 0) else {
            return false;
        };
        let left = u128::from(pending + running);
        left * u128::from(p.busy_ms)
            <= u128::from(Self::MARGIN) * u128::from(p.startup_ms) * u128::from(p.ended)
    }
}

/// What a coordinator persists to survive its own restart.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checkpoint<R> {
    /// Completed shard ids ([`indexes::format`]).
    pub completed: String,
    /// Shards lost after their retries.
    pub lost: String,
    /// Sum of the completed shards' results.
    pub sum: R,
    /// First reason a worker gave for unusable input.
    pub stopped: Option<String>,
    /// Destination mounts that stopped answering: no worker writes through them again.
    pub avoided: BTreeSet<String>,
}

#[derive(Debug, Clone)]
struct Seen<P> {
    progress: P,
    at_ms: u64,
}

/// One pass's coordinator state.
#[derive(Debug, Clone)]
pub struct Pass<R, P> {
    queue: ShardQueue,
    total: ShardId,
    sum: R,
    workers: BTreeMap<WorkerId, Seen<P>>,
    stopped: Option<String>,
    /// The coordinator ended the run (its failure policy stopped it): no more work for anyone.
    halted: bool,
    /// Destination mounts reported unresponsive, with what the worker saw.
    avoided: BTreeMap<String, String>,
    /// Workers that reported one and left: their process may never end (threads stuck on a
    /// hung mount), and nothing waits for it.
    gave_up: BTreeSet<WorkerId>,
    /// Paused by the user: no shard is handed out; held ones run to their end.
    paused: bool,
}

impl<R: Tally, P: Clone> Pass<R, P> {
    /// A fresh pass over shards `0..total`; a shard whose claim is lost more than `retries` times
    /// is lost.
    pub fn new(total: ShardId, retries: u32, lease_ms: u64) -> Self {
        Pass {
            queue: ShardQueue::new(0..total, retries, lease_ms),
            total,
            sum: R::default(),
            workers: BTreeMap::new(),
            stopped: None,
            halted: false,
            avoided: BTreeMap::new(),
            gave_up: BTreeSet::new(),
            paused: false,
        }
    }

    /// Mounts an earlier pass of the run found unresponsive stay avoided in this one.
    pub fn avoiding(mut self, earlier: &BTreeMap<String, String>) -> Self {
        self.avoid(earlier);
        self
    }

    /// [`Pass::avoiding`] on a pass that exists: mounts found unresponsive since are avoided too.
    pub fn avoid(&mut self, earlier: &BTreeMap<String, String>) {
        for (m, w) in earlier {
            self.avoided.entry(m.clone()).or_insert_with(|| w.clone());
        }
    }

    /// Only `shards` are handed out; every other shard counts as completed, with no result (the
    /// prune pass of a mirror runs only the shards whose copy found something to delete). Also
    /// applied to a pass restored from a checkpoint that predates it.
    pub fn only(mut self, shards: &BTreeSet<ShardId>) -> Self {
        self.queue.keep_only(shards);
        self
    }

    /// How many workers hold shards now (one waiting for work holds none).
    pub fn holders(&self) -> usize {
        self.queue.holders()
    }

    /// Destination mounts no worker may write through, with why.
    pub fn avoided(&self) -> &BTreeMap<String, String> {
        &self.avoided
    }

    /// Pauses (or resumes) handing out shards. Shards already claimed run to their end, with
    /// their leases renewed as usual.
    pub fn pause(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// Handing out shards is paused ([`Pass::pause`]).
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Workers that found a mount unresponsive and left (their process may not end).
    pub fn gave_up(&self) -> &BTreeSet<WorkerId> {
        &self.gave_up
    }

    /// The pass a [`Checkpoint`] describes. A malformed id list is an error (a checkpoint written
    /// by this code never is one).
    pub fn restore(
        total: ShardId,
        cp: &Checkpoint<R>,
        retries: u32,
        lease_ms: u64,
    ) -> Result<Self, String> {
        let completed: BTreeSet<ShardId> = indexes::parse(&cp.completed)?
            .into_iter()
            .filter(|s| *s < total)
            .collect();
        let lost: BTreeSet<ShardId> = indexes::parse(&cp.lost)?
            .into_iter()
            .filter(|s| *s < total && !completed.contains(s))
            .collect();
        Ok(Pass {
            queue: ShardQueue::restore(total, &completed, &lost, retries, lease_ms),
            total,
            sum: cp.sum.clone(),
            workers: BTreeMap::new(),
            stopped: cp.stopped.clone(),
            halted: false,
            avoided: cp
                .avoided
                .iter()
                .map(|m| (m.clone(), "found unresponsive before a restart".to_owned()))
                .collect(),
            gave_up: BTreeSet::new(),
            paused: false,
        })
    }

    /// One message from `worker`; returns the shards it should take and the pass's state.
    pub fn report(
        &mut self,
        worker: &str,
        report: Report<R, P>,
        now_ms: u64,
    ) -> (Vec<ShardId>, State) {
        self.queue.expire(now_ms);
        if let Some(why) = report.unusable {
            self.stopped.get_or_insert(why);
        }
        for (shard, result) in &report.done {
            if *shard < self.total && self.queue.complete(*shard) == Completion::Counted {
                self.sum.add(result);
            }
        }
        if let Some(u) = report.unresponsive {
            // The worker exits: what it held goes to others at once, not after its lease.
            self.queue.release(worker);
            self.workers.remove(worker);
            self.gave_up.insert(worker.to_owned());
            if self.queue.finished() {
                // Nothing is left to hand out: the pass's record (and the Jobs named after
                // what it avoided) no longer changes.
                return (Vec::new(), State::Finished);
            }
            self.avoided.entry(u.mount).or_insert(u.why);
            if u.left == 0 {
                self.stopped.get_or_insert_with(|| {
                    format!(
                        "every destination mount stopped answering: {}",
                        self.avoided
                            .iter()
                            .map(|(m, w)| format!("{m} ({w})"))
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                });
            }
            return (Vec::new(), State::Stopped);
        }
        let mine = self.queue.claims_of(worker);
        for s in &report.holding {
            if !mine.contains(s) {
                self.queue.adopt(*s, worker, now_ms);
            }
        }
        self.queue.renew_shards(worker, &report.holding, now_ms);
        self.workers.insert(
            worker.to_owned(),
            Seen {
                progress: report.progress,
                at_ms: now_ms,
            },
        );
        if self.stopped.is_some() || self.halted {
            return (Vec::new(), State::Stopped);
        }
        if self.paused && !self.queue.finished() {
            // Held shards go on (the worker keeps them: `Work`); idle workers wait.
            let state = if self.queue.claims_of(worker).is_empty() {
                State::Wait
            } else {
                State::Work
            };
            return (Vec::new(), state);
        }
        let mut given = Vec::new();
        while given.len() < report.room as usize {
            match self.queue.claim(worker, now_ms) {
                Some(s) => given.push(s),
                None => break,
            }
        }
        let state = if self.queue.finished() {
            State::Finished
        } else if given.is_empty() && self.queue.claims_of(worker).is_empty() {
            State::Wait
        } else {
            State::Work
        };
        (given, state)
    }

    /// The run ended without this pass (the failure policy stopped it): every worker is told
    /// `Stopped` from its next message on, and finishes cleanly (its report written) instead of
    /// being killed.
    pub fn halt(&mut self) {
        self.halted = true;
    }

    /// The worker is gone (its pod or process ended): its claims go back to the queue (or are
    /// lost after their retries) and its in-flight progress no longer counts.
    pub fn worker_gone(&mut self, worker: &str) -> Vec<ShardId> {
        self.workers.remove(worker);
        self.queue.worker_gone(worker)
    }

    /// Claims whose lease ran out go back to the queue.
    pub fn expire(&mut self, now_ms: u64) -> Vec<ShardId> {
        self.queue.expire(now_ms)
    }

    /// Every shard ended (completed or lost), or a worker reported unusable input and nothing is
    /// claimed any more.
    pub fn finished(&self) -> bool {
        self.queue.finished()
    }

    /// Why the pass stopped, if a worker reported unusable input.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// Sum of the completed shards' results.
    pub fn sum(&self) -> &R {
        &self.sum
    }

    /// Each worker's last progress on the shards it holds, and when it was reported.
    pub fn in_flight(&self) -> impl Iterator<Item = (&str, &P, u64)> {
        self.workers
            .iter()
            .map(|(w, s)| (w.as_str(), &s.progress, s.at_ms))
    }

    /// Shards `worker` holds.
    pub fn claims_of(&self, worker: &str) -> Vec<ShardId> {
        self.queue.claims_of(worker)
    }

    /// Ids of shards lost after their retries.
    pub fn lost(&self) -> Vec<ShardId> {
        self.queue.lost()
    }

    /// Shards waiting to be handed out (what [`Pass::counts`] says, without the lists it
    /// builds: asked on every worker message).
    pub fn pending(&self) -> u64 {
        self.queue.pending() as u64
    }

    /// Whether `worker` has spoken to this pass (and not left it since).
    pub fn knows(&self, worker: &str) -> bool {
        self.workers.contains_key(worker)
    }

    /// Shards held by workers (cheap, as [`Pass::pending`]).
    pub fn running(&self) -> u64 {
        self.queue.claimed() as u64
    }

    /// Shards that ended, completed or lost (cheap, as [`Pass::pending`]).
    pub fn ended(&self) -> u64 {
        self.queue.ended() as u64
    }

    pub fn counts(&self) -> Counts {
        let completed = self.queue.completed() as u64;
        let lost = self.queue.lost().len() as u64;
        Counts {
            total: u64::from(self.total),
            pending: self.pending(),
            running: self.queue.claimed() as u64,
            completed,
            lost,
        }
    }

    /// What to persist to survive a restart.
    pub fn checkpoint(&self) -> Checkpoint<R> {
        Checkpoint {
            completed: indexes::format(&self.queue.completed_ids()),
            lost: indexes::format(&self.queue.lost().into_iter().collect()),
            sum: self.sum.clone(),
            stopped: self.stopped.clone(),
            avoided: self.avoided.keys().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files done, as a shard's result.
    #[derive(Debug, Clone, Default, PartialEq)]
    struct Files(u64);
    impl Tally for Files {
        fn add(&mut self, o: &Self) {
            self.0 += o.0;
        }
    }
    type P = Pass<Files, u64>;

    #[test]
    fn a_pass_ends_soon_once_what_is_left_takes_no_longer_than_two_start_ups_at_its_pace() {
        // 100 shards completed in 1 s after a 0.5 s start-up: 10 ms a shard, so up to 100 left.
        let pace = Pace {
            startup_ms: 500,
            busy_ms: 1000,
            ended: 100,
        };
        assert!(Pace::ends_soon(Some(&pace), 94, 6));
        assert!(!Pace::ends_soon(Some(&pace), 95, 6));
        // Every shard handed out: near the end, whatever the pace says (or with none).
        assert!(Pace::ends_soon(Some(&pace), 0, 500));
        assert!(Pace::ends_soon(None, 0, 3));
        // No pace yet, or nothing ended since it was measured (a restored pass): not yet.
        assert!(!Pace::ends_soon(None, 1, 3));
        let restored = Pace { ended: 0, ..pace };
        assert!(!Pace::ends_soon(Some(&restored), 1, 0));
        // A wave that starts at once (no start-up measured) waits for the last shard handed out.
        let instant = Pace {
            startup_ms: 0,
            ..pace
        };
        assert!(!Pace::ends_soon(Some(&instant), 1, 0));
    }

    fn ask(room: u32) -> Report<Files, u64> {
        Report {
            holding: vec![],
            done: vec![],
            room,
            progress: 0,
            unusable: None,
            unresponsive: None,
        }
    }
    fn done(holding: Vec<ShardId>, done: Vec<(ShardId, u64)>, room: u32) -> Report<Files, u64> {
        Report {
            holding,
            done: done.into_iter().map(|(s, f)| (s, Files(f))).collect(),
            ..ask(room)
        }
    }

    #[test]
    fn workers_take_what_they_have_room_for_and_the_pass_finishes_once_all_completed() {
        let mut p = P::new(5, 1, 1000);
        assert_eq!(p.report("a", ask(2), 0), (vec![0, 1], State::Work));
        assert_eq!(p.report("b", ask(2), 0), (vec![2, 3], State::Work));
        assert_eq!(
            p.report("a", done(vec![1], vec![(0, 10)], 1), 1),
            (vec![4], State::Work)
        );
        // Nothing left to hand out, and b holds nothing: it waits (a's shards may come back).
        assert_eq!(
            p.report("b", done(vec![], vec![(2, 1), (3, 1)], 2), 2),
            (vec![], State::Wait)
        );
        assert_eq!(
            p.report("a", done(vec![], vec![(1, 5), (4, 5)], 2), 3),
            (vec![], State::Finished)
        );
        assert_eq!(p.sum(), &Files(22));
        assert_eq!(p.report("b", ask(2), 4).1, State::Finished);
        assert_eq!(
            p.counts(),
            Counts {
                total: 5,
                completed: 5,
                ..Counts::default()
            }
        );
    }

    #[test]
    fn a_completion_counts_once_even_when_two_workers_finish_a_shard() {
        let mut p = P::new(1, 3, 100);
        assert_eq!(p.report("slow", ask(1), 0).0, vec![0]);
        // slow's lease runs out; fast gets the shard and finishes it.
        assert_eq!(p.report("fast", ask(1), 150).0, vec![0]);
        p.report("fast", done(vec![], vec![(0, 7)], 1), 160);
        // slow finishes too, late: a duplicate, not added.
        let (_, state) = p.report("slow", done(vec![], vec![(0, 7)], 1), 170);
        assert_eq!(state, State::Finished);
        assert_eq!(p.sum(), &Files(7));
    }

    #[test]
    fn a_gone_workers_shards_go_to_others_until_their_retries_are_used_up() {
        let mut p = P::new(2, 1, 1000);
        assert_eq!(p.report("w1", ask(2), 0).0, vec![0, 1]);
        p.worker_gone("w1");
        assert_eq!(p.report("w2", ask(1), 1).0, vec![0]);
        assert_eq!(p.report("w3", ask(1), 1).0, vec![1]);
        p.worker_gone("w3"); // shard 1's second loss: retries (1) used up
        assert_eq!(p.lost(), vec![1]);
        let (_, state) = p.report("w2", done(vec![], vec![(0, 1)], 1), 2);
        assert_eq!(state, State::Finished);
        assert_eq!(p.counts().lost, 1);
        assert_eq!(p.counts().completed, 1);
    }

    fn unresponsive(mount: &str, left: usize) -> Report<Files, u64> {
        Report {
            unresponsive: Some(Unresponsive {
                mount: mount.into(),
                left,
                why: "nothing completed for 60 s".into(),
            }),
            ..ask(0)
        }
    }

    #[test]
    fn an_unresponsive_mount_frees_its_workers_claims_at_once_and_is_avoided_from_then_on() {
        // No retries: had the claims been lost (lease, pod gone), the shards would end Lost.
        let mut p = P::new(4, 0, 1000);
        assert_eq!(p.report("a", ask(2), 0), (vec![0, 1], State::Work));
        assert_eq!(p.report("b", ask(1), 0), (vec![2], State::Work));
        assert_eq!(
            p.report("a", unresponsive("/ingest/dest-2", 2), 5),
            (vec![], State::Stopped)
        );
        assert!(p.claims_of("a").is_empty());
        assert!(p.gave_up().contains("a"));
        assert_eq!(p.avoided().keys().collect::<Vec<_>>(), ["/ingest/dest-2"]);
        assert_eq!(p.stopped(), None, "two mounts still answer");
        // a's shards go to the next worker first, without any lease running out.
        assert_eq!(p.report("c", ask(2), 6), (vec![0, 1], State::Work));
        assert_eq!(p.counts().lost, 0);
        // It survives a restart, and a later pass of the run inherits it.
        let cp = p.checkpoint();
        assert!(cp.avoided.contains("/ingest/dest-2"));
        let back = P::restore(4, &cp, 0, 1000).unwrap();
        assert!(back.avoided().contains_key("/ingest/dest-2"));
        let verify = P::new(4, 0, 1000).avoiding(p.avoided());
        assert!(verify.avoided().contains_key("/ingest/dest-2"));
    }

    #[test]
    fn a_paused_pass_hands_out_nothing_lets_held_shards_finish_and_resumes() {
        let mut p = P::new(4, 1, 1000);
        assert_eq!(p.report("a", ask(1), 0), (vec![0], State::Work));
        p.pause(true);
        // a keeps its shard and finishes it; b gets nothing and waits.
        assert_eq!(
            p.report("a", done(vec![0], vec![], 0), 1),
            (vec![], State::Work)
        );
        assert_eq!(p.report("b", ask(2), 1), (vec![], State::Wait));
        assert_eq!(
            p.report("a", done(vec![], vec![(0, 5)], 1), 2),
            (vec![], State::Wait)
        );
        assert_eq!(p.counts().completed, 1);
        // Long after the lease: nothing was lost while paused (a held shard's lease was renewed
        // by its worker's messages; nothing else was claimed).
        assert_eq!(p.counts().lost, 0);
        p.pause(false);
        assert_eq!(p.report("b", ask(2), 3), (vec![1, 2], State::Work));
    }

    #[test]
    fn when_every_mount_is_unresponsive_the_pass_stops_and_names_them() {
        let mut p = P::new(3, 1, 1000);
        p.report("a", ask(1), 0);
        p.report("b", ask(1), 0);
        p.report("a", unresponsive("/ingest/dest-0", 1), 1);
        assert_eq!(p.report("c", ask(1), 2).1, State::Work);
        p.report("b", unresponsive("/ingest/dest-1", 0), 3);
        let why = p.stopped().expect("stopped").to_owned();
        assert!(
            why.contains("/ingest/dest-0") && why.contains("/ingest/dest-1"),
            "{why}"
        );
        assert_eq!(p.report("c", ask(1), 4).1, State::Stopped);
    }

    #[test]
    fn a_restarted_coordinator_keeps_completions_and_gives_held_shards_back_to_their_workers() {
        let mut p = P::new(6, 2, 1000);
        assert_eq!(p.report("a", ask(3), 0).0, vec![0, 1, 2]);
        assert_eq!(p.report("b", ask(2), 0).0, vec![3, 4]);
        p.report("a", done(vec![1, 2], vec![(0, 4)], 0), 1);
        let cp = p.checkpoint();
        assert_eq!(cp.completed, "0");

        // A new coordinator from the checkpoint; a's and b's claims are unknown to it.
        let mut q = P::restore(6, &cp, 2, 1000).unwrap();
        assert_eq!(q.sum(), &Files(4));
        // b reports first and holds 3 and 4: they stay b's, not handed to a.
        assert_eq!(q.report("b", done(vec![3, 4], vec![], 0), 5).0, vec![]);
        // a holds 1 and 2, and asks for one more: it gets 5, not 3 or 4.
        assert_eq!(q.report("a", done(vec![1, 2], vec![], 1), 5).0, vec![5]);
        assert_eq!(q.counts().pending, 0);
        assert_eq!(q.counts().running, 5);
        // A completion the old coordinator counted is a duplicate for the new one too.
        q.report(
            "a",
            done(vec![], vec![(0, 4), (1, 1), (2, 1), (5, 1)], 0),
            6,
        );
        q.report("b", done(vec![], vec![(3, 1), (4, 1)], 0), 6);
        assert!(q.finished());
        assert_eq!(q.sum(), &Files(4 + 5));
    }

    #[test]
    fn unusable_input_stops_the_pass_for_every_worker() {
        let mut p = P::new(4, 1, 1000);
        p.report("a", ask(1), 0);
        let (given, state) = p.report(
            "b",
            Report {
                unusable: Some("--dest /ingest/dest-1: read-only file system".into()),
                ..ask(1)
            },
            0,
        );
        assert_eq!((given, state), (vec![], State::Stopped));
        assert_eq!(p.report("a", ask(1), 1), (vec![], State::Stopped));
        assert_eq!(
            p.stopped(),
            Some("--dest /ingest/dest-1: read-only file system")
        );
        let cp = p.checkpoint();
        assert!(P::restore(4, &cp, 1, 1000).unwrap().stopped().is_some());
    }

    #[test]
    fn a_shard_whose_hand_out_was_lost_comes_back_when_its_lease_runs_out() {
        let mut p = P::new(2, 2, 100);
        // The answer giving shard 0 never reached the worker: it keeps asking, holding nothing.
        assert_eq!(p.report("w", ask(1), 0).0, vec![0]);
        for t in [40, 80] {
            p.report("w", done(vec![], vec![], 0), t);
        }
        // Its messages did not renew a claim it does not know about: shard 0 is handed out again.
        assert_eq!(
            p.report("w", ask(2), 120).0,
            vec![0, 1],
            "a shard that came back goes first"
        );
        // A shard the worker lists is renewed.
        assert_eq!(
            p.report("w", done(vec![0, 1], vec![], 0), 200).1,
            State::Work
        );
        assert_eq!(
            p.report("w", done(vec![0, 1], vec![], 0), 290).1,
            State::Work
        );
        assert_eq!(p.counts().running, 2);
    }

    #[test]
    fn a_halted_pass_hands_out_nothing_more_and_tells_every_worker_to_stop() {
        let mut p = P::new(3, 1, 1000);
        assert_eq!(p.report("a", ask(1), 0).0, vec![0]);
        p.halt();
        assert_eq!(
            p.report("a", done(vec![], vec![(0, 2)], 1), 1),
            (vec![], State::Stopped)
        );
        assert_eq!(p.report("b", ask(1), 1), (vec![], State::Stopped));
        assert_eq!(p.sum(), &Files(2), "what was finished still counts");
        assert_eq!(p.stopped(), None, "not a worker's unusable input");
    }

    #[test]
    fn a_pass_over_some_shards_hands_out_only_those_and_adds_nothing_for_the_rest() {
        let mut p = P::new(6, 1, 1000).only(&BTreeSet::from([1, 4]));
        assert_eq!(p.report("a", ask(8), 0), (vec![1, 4], State::Work));
        assert_eq!(
            p.report("a", done(vec![], vec![(1, 2), (4, 3)], 8), 1),
            (vec![], State::Finished)
        );
        assert_eq!(p.sum(), &Files(5));
        assert_eq!(p.counts().completed, 6);
        // Restored from a checkpoint taken before any of them ended: still only those two.
        let fresh = P::new(6, 1, 1000)
            .only(&BTreeSet::from([1, 4]))
            .checkpoint();
        let mut q = P::restore(6, &fresh, 1, 1000)
            .unwrap()
            .only(&BTreeSet::from([1, 4]));
        assert_eq!(q.report("b", ask(8), 0).0, vec![1, 4]);
        // Nothing to run at all: finished from the start.
        assert!(P::new(3, 1, 1000).only(&BTreeSet::new()).finished());
    }

    #[test]
    fn a_checkpoint_with_a_bad_id_list_is_refused() {
        let cp = Checkpoint {
            completed: "0-x".into(),
            ..Checkpoint::<Files>::default()
        };
        assert!(P::restore(3, &cp, 1, 10).is_err());
    }
}
