//! Threads kept between walks.
//!
//! A worker runs walk after walk: a walk per shard and pass, two shards at a time. Each walk starts
//! its threads as work shows up ([`crate::crew`]). When each of those was a new OS thread, `perf`
//! on a `run` of 20,000 small files into tmpfs put as much of the workers' CPU into starting and
//! ending threads as into copying. That cost covers clone, the stack's mapping and guard page, its
//! unmapping at exit and the TLB shootdowns this sends to the other core. Thread ids went up by
//! about 2,000 a second.
//!
//! So a thread whose work ended waits here for the next, and ends after [`KEEP`] with none. A
//! process that stops walking keeps no threads for long. A job goes to a waiting thread, or to a
//! new one when every waiting thread already has a job queued for it. So a job never waits for
//! a thread that is busy: a walk's threads may wait for each other's tasks, as they did when
//! each was a new thread.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

/// A thread with nothing to do waits this long for a job before it ends.
const KEEP: Duration = Duration::from_secs(2);

pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// Threads waiting for jobs. The process has one ([`execute`]); tests make their own.
pub(crate) struct Pool {
    state: Mutex<State>,
    queued: Condvar,
    keep: Duration,
}

#[derive(Default)]
struct State {
    /// Jobs handed to waiting threads and not yet taken. Never more than `waiting`.
    jobs: VecDeque<Job>,
    /// Threads waiting for a job.
    waiting: usize,
    /// Threads started so far.
    started: u64,
    /// Threads that ended, having waited `keep` for a job.
    ended: u64,
}

/// Runs `job` on a waiting thread of the process's pool, or on a new one. An error when the
/// system gives no new thread: the job is dropped, not run.
pub(crate) fn execute(job: Job) -> std::io::Result<()> {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool::new(KEEP)).execute(job)
}

impl Pool {
    pub(crate) fn new(keep: Duration) -> Self {
        Pool {
            state: Mutex::new(State::default()),
            queued: Condvar::new(),
            keep,
        }
    }

    /// See [`execute`].
    pub(crate) fn execute(&'static self, job: Job) -> std::io::Result<()> {
        let mut st = self.state.lock().unwrap();
        if st.waiting > st.jobs.len() {
            st.jobs.push_back(job);
            self.queued.notify_one();
            return Ok(());
        }
        st.started += 1;
        drop(st);
        std::thread::Builder::new()
            .name("walk".into())
            .spawn(move || {
                job();
                self.serve();
            })
            .map(drop)
    }

    /// Takes jobs until none comes for `keep`.
    fn serve(&self) {
        let mut st = self.state.lock().unwrap();
        loop {
            st.waiting += 1;
            let (mut s, _) = self
                .queued
                .wait_timeout_while(st, self.keep, |s| s.jobs.is_empty())
                .unwrap();
            s.waiting -= 1;
            let Some(job) = s.jobs.pop_front() else {
                s.ended += 1;
                return;
            };
            drop(s);
            job();
            st = self.state.lock().unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;

    fn pool(keep: Duration) -> &'static Pool {
        Box::leak(Box::new(Pool::new(keep)))
    }

    /// (waiting, started), once `until` holds of (waiting, started, ended); a test fails rather
    /// than hangs.
    fn when(p: &Pool, until: impl Fn(usize, u64, u64) -> bool) -> (usize, u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let st = p.state.lock().unwrap();
            if until(st.waiting, st.started, st.ended) {
                return (st.waiting, st.started);
            }
            drop(st);
            assert!(Instant::now() < deadline, "the pool never got there");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_thread_whose_job_ended_takes_the_next() {
        let p = pool(Duration::from_secs(3600));
        let (tx, rx) = mpsc::channel();
        for round in 0..3 {
            let tx = tx.clone();
            p.execute(Box::new(move || tx.send(round).unwrap()))
                .unwrap();
            assert_eq!(rx.recv_timeout(Duration::from_secs(60)), Ok(round));
            // Back to waiting before the next job comes, so that one needs no new thread.
            assert_eq!(when(p, |waiting, _, _| waiting == 1), (1, 1));
        }
    }

    #[test]
    fn a_job_never_waits_for_a_busy_thread() {
        // One thread waiting; the first job takes it and waits for the second, which must
        // then get a thread of its own.
        let p = pool(Duration::from_secs(3600));
        p.execute(Box::new(|| {})).unwrap();
        when(p, |waiting, _, _| waiting == 1);
        let (tx, rx) = mpsc::channel::<()>();
        let (done, finished) = mpsc::channel();
        p.execute(Box::new(move || {
            rx.recv_timeout(Duration::from_secs(60)).unwrap();
            done.send("first").unwrap();
        }))
        .unwrap();
        p.execute(Box::new(move || tx.send(()).unwrap())).unwrap();
        assert_eq!(finished.recv_timeout(Duration::from_secs(60)), Ok("first"));
        assert_eq!(when(p, |waiting, _, _| waiting == 2), (2, 2));
    }

    #[test]
    fn a_thread_with_nothing_to_do_ends() {
        let p = pool(Duration::from_millis(1));
        p.execute(Box::new(|| {})).unwrap();
        // It waited its while and ended: the next job starts a new thread.
        assert_eq!(when(p, |_, _, ended| ended == 1), (0, 1));
        let (tx, rx) = mpsc::channel();
        p.execute(Box::new(move || tx.send(()).unwrap())).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(60)), Ok(()));
        assert_eq!(p.state.lock().unwrap().started, 2);
    }
}
