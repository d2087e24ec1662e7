//! The shard queue of one pass: workers claim shards when they have room, each claim holds a
//! lease, and each shard's completion counts exactly once.
//!
//! Pure: time is an argument (milliseconds on any monotonic clock), so expiry, retries and
//! duplicate completions are tested without waiting. The local driver (`vfxt-ingest run`) keeps
//! one queue per pass; a worker process that dies gives its claims back at once, a worker that
//! stops renewing loses them when the lease runs out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Shard ids, as in the plan.
pub type ShardId = u32;
/// A worker's name (a process slot locally, a pod name in a cluster).
pub type WorkerId = String;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Claim {
    worker: WorkerId,
    expires_ms: u64,
}

/// What [`ShardQueue::complete`] made of a completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The first completion of the shard: count it.
    Counted,
    /// The shard was completed before (a worker whose lease had run out finished it too):
    /// already counted, do not count again.
    Duplicate,
}

/// Where a shard ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardEnd {
    /// Completed (with or without failed entries: the result accounts for each).
    Completed,
    /// Its claims were lost (worker died, lease expired) more often than the retries allow.
    Lost,
}

/// The queue of one pass.
#[derive(Debug, Clone)]
pub struct ShardQueue {
    pending: VecDeque<ShardId>,
    claims: BTreeMap<ShardId, Claim>,
    ended: BTreeMap<ShardId, ShardEnd>,
    /// Claims lost per shard (worker gone, lease expired).
    lost_claims: BTreeMap<ShardId, u32>,
    retries: u32,
    lease_ms: u64,
}

impl ShardQueue {
    /// `shards` in the order to hand them out (largest first keeps the tail short); a shard
    /// whose claim is lost more than `retries` times ends [`ShardEnd::Lost`].
    pub fn new(shards: impl IntoIterator<Item = ShardId>, retries: u32, lease_ms: u64) -> Self {
        let mut seen = BTreeSet::new();
        ShardQueue {
            pending: shards.into_iter().filter(|s| seen.insert(*s)).collect(),
            claims: BTreeMap::new(),
            ended: BTreeMap::new(),
            lost_claims: BTreeMap::new(),
            retries,
            lease_ms,
        }
    }

    /// The next shard for `worker`, leased until `now_ms + lease`; `None` when nothing is
    /// pending (claims of others may still be out).
    pub fn claim(&mut self, worker: &str, now_ms: u64) -> Option<ShardId> {
        self.expire(now_ms);
        let shard = self.pending.pop_front()?;
        self.claims.insert(
            shard,
            Claim {
                worker: worker.to_owned(),
                expires_ms: now_ms + self.lease_ms,
            },
        );
        Some(shard)
    }

    /// A queue restored from a checkpoint: `ended` shards (completed or lost) are not handed out
    /// again; the rest are pending, in id order. Claims held when the checkpoint was taken are not
    /// known: their workers [`adopt`](Self::adopt) them back when they next report.
    pub fn restore(
        total: ShardId,
        completed: &BTreeSet<ShardId>,
        lost: &BTreeSet<ShardId>,
        retries: u32,
        lease_ms: u64,
    ) -> Self {
        let mut q = ShardQueue::new(
            (0..total).filter(|s| !completed.contains(s) && !lost.contains(s)),
            retries,
            lease_ms,
        );
        q.ended
            .extend(completed.iter().map(|s| (*s, ShardEnd::Completed)));
        q.ended.extend(lost.iter().map(|s| (*s, ShardEnd::Lost)));
        q
    }

    /// A worker says it holds `shard` (after a restart of whoever keeps this queue, which lost the
    /// claim): a pending shard becomes its claim again, so it is not handed to a second worker.
    /// A shard claimed by another worker or already ended stays as it is.
    pub fn adopt(&mut self, shard: ShardId, worker: &str, now_ms: u64) -> bool {
        let Some(pos) = self.pending.iter().position(|s| *s == shard) else {
            return false;
        };
        self.pending.remove(pos);
        self.claims.insert(
            shard,
            Claim {
                worker: worker.to_owned(),
                expires_ms: now_ms + self.lease_ms,
            },
        );
        true
    }

    /// `worker` is alive: its leases run from `now_ms` again.
    pub fn renew(&mut self, worker: &str, now_ms: u64) {
        for c in self.claims.values_mut().filter(|c| c.worker == worker) {
            c.expires_ms = now_ms + self.lease_ms;
        }
    }

    /// Renews `worker`'s claims on `shards` only. A claim the worker does not list is not
    /// renewed, so a shard whose hand-out never reached the worker (the answer was lost) comes
    /// back when its lease runs out, instead of being renewed forever by a worker that does not
    /// know it holds it.
    pub fn renew_shards(&mut self, worker: &str, shards: &[ShardId], now_ms: u64) {
        for (s, c) in self.claims.iter_mut() {
            if c.worker == worker && shards.contains(s) {
                c.expires_ms = now_ms + self.lease_ms;
            }
        }
    }

    /// `shard` finished. Counted once, whoever finishes it: a worker whose lease
    /// expired may still finish the shard it was on, and the copy it made is as good.
    pub fn complete(&mut self, shard: ShardId) -> Completion {
        // Whoever holds it now: done is done (a second holder's completion is a Duplicate).
        let was_claimed = self.claims.remove(&shard).is_some();
        if self.ended.get(&shard) == Some(&ShardEnd::Completed) {
            return Completion::Duplicate;
        }
        // Requeued after an expiry and not claimed again yet: done now, so not handed out. A
        // claimed shard is never also pending, so the usual completion skips this scan of the
        // queue (a pass of 100,000 shards would otherwise scan it once per completion).
        if !was_claimed {
            self.pending.retain(|s| *s != shard);
        }
        // A lost shard finished after all (its worker was only slow): completed after all.
        self.ended.insert(shard, ShardEnd::Completed);
        Completion::Counted
    }

    /// `worker` is gone (its process exited, its pod was deleted): its claims go back to the
    /// queue, each losing one retry. Returns the shards requeued.
    pub fn worker_gone(&mut self, worker: &str) -> Vec<ShardId> {
        let held: Vec<ShardId> = self
            .claims
            .iter()
            .filter(|(_, c)| c.worker == worker)
            .map(|(s, _)| *s)
            .collect();
        self.lose_all(held)
    }

    /// Claims whose lease ran out go back to the queue (each losing one retry). Returns the
    /// shards requeued.
    pub fn expire(&mut self, now_ms: u64) -> Vec<ShardId> {
        let expired: Vec<ShardId> = self
            .claims
            .iter()
            .filter(|(_, c)| c.expires_ms <= now_ms)
            .map(|(s, _)| *s)
            .collect();
        self.lose_all(expired)
    }

    /// `worker` hands its claims back without fault of the shards (a destination mount it
    /// writes through stopped answering): they go back to the front of the queue without losing
    /// a retry. Returns them.
    pub fn release(&mut self, worker: &str) -> Vec<ShardId> {
        let held = self.claims_of(worker);
        for s in &held {
            self.claims.remove(s);
        }
        for s in held.iter().rev() {
            self.pending.push_front(*s);
        }
        held
    }

    /// Takes the claims of `shards` away: each goes back to the front of the queue (the tail of
    /// a pass is where a requeued shard costs the most), in order, or ends Lost when its retries
    /// are used up. Returns the shards queued again.
    fn lose_all(&mut self, shards: Vec<ShardId>) -> Vec<ShardId> {
        let mut again = Vec::new();
        for shard in shards {
            self.claims.remove(&shard);
            let n = self.lost_claims.entry(shard).or_default();
            *n += 1;
            if *n > self.retries {
                self.ended.insert(shard, ShardEnd::Lost);
            } else {
                again.push(shard);
            }
        }
        for s in again.iter().rev() {
            self.pending.push_front(*s);
        }
        again
    }

    /// Ends every pending shard not in `keep` as completed (with no result), in one pass over
    /// the queue: completing them one by one would scan it once each.
    pub fn keep_only(&mut self, keep: &BTreeSet<ShardId>) {
        let ended = &mut self.ended;
        self.pending.retain(|s| {
            let kept = keep.contains(s);
            if !kept {
                ended.insert(*s, ShardEnd::Completed);
            }
            kept
        });
    }

    /// How many workers hold claims now.
    pub fn holders(&self) -> usize {
        self.claims
            .values()
            .map(|c| c.worker.as_str())
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Shards claimed by `worker` now.
    pub fn claims_of(&self, worker: &str) -> Vec<ShardId> {
        self.claims
            .iter()
            .filter(|(_, c)| c.worker == worker)
            .map(|(s, _)| *s)
            .collect()
    }

    /// Nothing pending and nothing claimed: every shard ended.
    pub fn finished(&self) -> bool {
        self.pending.is_empty() && self.claims.is_empty()
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn claimed(&self) -> usize {
        self.claims.len()
    }

    /// Shards that ended, completed or lost (without the walk of [`ShardQueue::completed`]).
    pub fn ended(&self) -> usize {
        self.ended.len()
    }

    /// Shards that ended Lost.
    pub fn lost(&self) -> Vec<ShardId> {
        self.ended
            .iter()
            .filter(|(_, e)| **e == ShardEnd::Lost)
            .map(|(s, _)| *s)
            .collect()
    }

    /// Ids of the completed shards.
    pub fn completed_ids(&self) -> BTreeSet<ShardId> {
        self.ended
            .iter()
            .filter(|(_, e)| **e == ShardEnd::Completed)
            .map(|(s, _)| *s)
            .collect()
    }

    pub fn completed(&self) -> usize {
        self.ended
            .values()
            .filter(|e| **e == ShardEnd::Completed)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_claims_go_back_first_without_losing_a_retry() {
        let mut q = ShardQueue::new(0..4, 0, 1000);
        assert_eq!(q.claim("a", 0), Some(0));
        assert_eq!(q.claim("a", 0), Some(1));
        assert_eq!(q.claim("b", 0), Some(2));
        assert_eq!(q.release("a"), vec![0, 1]);
        assert!(q.claims_of("a").is_empty());
        // With no retries, a lost claim would have ended the shard Lost; a release does not.
        assert_eq!(q.claim("b", 1), Some(0));
        assert_eq!(q.claim("b", 1), Some(1));
        assert!(q.lost().is_empty());
        assert_eq!(q.claims_of("b"), vec![0, 1, 2]);
    }

    #[test]
    fn keeping_only_some_shards_ends_the_rest_and_holders_count_workers_once() {
        let mut q = ShardQueue::new(0..100_000, 0, 1000);
        q.keep_only(&BTreeSet::from([7, 99_999]));
        assert_eq!((q.pending(), q.completed()), (2, 99_998));
        assert_eq!(q.claim("a", 0), Some(7));
        assert_eq!(q.claim("a", 0), Some(99_999));
        assert_eq!(q.holders(), 1);
        q.release("a");
        assert_eq!(q.holders(), 0);
    }

    #[test]
    fn claims_are_unique_and_the_queue_finishes_when_every_shard_completed() {
        let mut q = ShardQueue::new([3, 1, 2, 1], 2, 1000);
        let a = q.claim("a", 0).unwrap();
        let b = q.claim("b", 0).unwrap();
        let c = q.claim("a", 0).unwrap();
        assert_eq!(
            (a, b, c),
            (3, 1, 2),
            "in the given order, duplicates dropped"
        );
        assert_eq!(q.claim("b", 0), None);
        assert!(!q.finished());
        assert_eq!(q.claims_of("a"), vec![2, 3]);
        for s in [3, 1, 2] {
            assert_eq!(q.complete(s), Completion::Counted);
        }
        assert!(q.finished());
        assert_eq!((q.completed(), q.lost()), (3, vec![]));
    }

    #[test]
    fn a_dead_workers_claims_go_to_another_worker() {
        let mut q = ShardQueue::new(0..3, 1, 1000);
        assert_eq!(q.claim("dies", 0), Some(0));
        assert_eq!(q.claim("dies", 0), Some(1));
        assert_eq!(q.worker_gone("dies"), vec![0, 1]);
        // Requeued to the front, before the shard never claimed.
        assert_eq!(q.claim("ok", 1), Some(0));
        assert_eq!(q.claim("ok", 1), Some(1));
        assert_eq!(q.claim("ok", 1), Some(2));
        for s in 0..3 {
            assert_eq!(q.complete(s), Completion::Counted);
        }
        assert!(q.finished() && q.lost().is_empty());
    }

    #[test]
    fn leases_expire_unless_renewed() {
        let mut q = ShardQueue::new([7, 8], 3, 100);
        assert_eq!(q.claim("slow", 0), Some(7));
        assert_eq!(q.claim("live", 0), Some(8));
        q.renew("live", 90);
        // At 100 the slow worker's lease ran out; the renewed one holds until 190.
        assert_eq!(q.expire(100), vec![7]);
        assert_eq!(q.claims_of("live"), vec![8]);
        assert_eq!(q.claim("live", 101), Some(7));
        assert_eq!(q.expire(189), Vec::<ShardId>::new());
    }

    #[test]
    fn a_completion_counts_once_even_from_a_worker_whose_lease_ran_out() {
        let mut q = ShardQueue::new([5], 3, 10);
        q.claim("first", 0);
        q.expire(10);
        assert_eq!(q.claim("second", 11), Some(5));
        // The first worker was only slow: it finishes, then the second does too.
        assert_eq!(q.complete(5), Completion::Counted);
        assert_eq!(q.complete(5), Completion::Duplicate);
        assert!(q.finished());
        assert_eq!(q.completed(), 1);

        // Expired and requeued but not claimed again: a late completion takes it off the queue.
        let mut q = ShardQueue::new([6], 3, 10);
        q.claim("w", 0);
        q.expire(10);
        assert_eq!(q.pending(), 1);
        assert_eq!(q.complete(6), Completion::Counted);
        assert_eq!((q.pending(), q.claim("x", 11)), (0, None));
        assert!(q.finished());
    }

    #[test]
    fn a_shard_lost_more_often_than_its_retries_ends_lost() {
        let mut q = ShardQueue::new([1, 2], 1, 1000);
        for round in 0..2 {
            assert_eq!(q.claim("w", 0), Some(1), "round {round}");
            q.worker_gone("w");
        }
        assert_eq!(q.lost(), vec![1]);
        assert_eq!(q.claim("w", 0), Some(2));
        assert_eq!(q.complete(2), Completion::Counted);
        assert!(q.finished());
        assert_eq!((q.completed(), q.lost()), (1, vec![1]));
    }
}
