//! The threads of a parallel walk (the copy's and the verifier's), started as work shows up.
//!
//! A walk may run up to its limit of threads (with `--threads auto`, up to 16 a mount: 48 over
//! three mounts), but a shard often has little to do: most shards of the pass that sets directory
//! times have nothing at all, and a small shard a few tasks at a time. Starting every thread for
//! each such walk was most of what it cost: with `perf`, thread creation and the mapping and
//! unmapping of their stacks were most of the workers' time in that pass, and a local `run` of
//! 2,500 small files into tmpfs took 0.92 s, 0.32 s with threads started as here.
//!
//! So a walk starts one thread (a mount) and each thread, when it takes a task and leaves more
//! queued than threads about to take one, starts another, up to the limit. This module holds that
//! rule ([`Crew`], pure) and the starting and joining ([`run`]); which tasks there are, and what a
//! thread does with one, is the walk's own business. The threads themselves are kept from walk to
//! walk ([`crate::pool`]).

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, Condvar, Mutex};

use crate::pool;

/// How many threads a walk has started and may start, and how many are about to take a task.
/// Kept under the walk's queue lock, beside the tasks it counts against.
#[derive(Debug, Clone, Default)]
pub(crate) struct Crew {
    /// Threads started so far (each has an index: 0, 1, ... in the order they start).
    started: usize,
    max: usize,
    /// Started and not yet at their first task.
    starting: usize,
    /// Waiting for a task to be queued (not those waiting beside tasks they may not take: they
    /// will not take these).
    pub(crate) waiting: usize,
}

impl Crew {
    /// A crew of at most `max` threads, none started.
    pub(crate) fn new(max: usize) -> Self {
        Crew {
            max,
            ..Crew::default()
        }
    }

    /// Counts one more thread; returns its index. The caller starts it (see [`run`]).
    pub(crate) fn add(&mut self) -> usize {
        self.started += 1;
        self.starting += 1;
        self.started - 1
    }

    /// A thread just took a task and leaves `queued` tasks queued: the index of one more thread
    /// to start, when they outnumber the threads about to take one (starting, or waiting) and
    /// the crew is not full.
    pub(crate) fn grow(&mut self, queued: usize) -> Option<usize> {
        (self.started < self.max && queued > self.starting + self.waiting).then(|| self.add())
    }

    /// A started thread is at its first task: no longer about to take one.
    pub(crate) fn begun(&mut self) {
        self.starting -= 1;
    }

    #[cfg(test)]
    pub(crate) fn started(&self) -> usize {
        self.started
    }
}

/// A running crew: how many of its threads have not ended, and what the first to panic
/// panicked with. Shared with the threads (not borrowed from [`run`]'s frame): a thread still
/// holds it after it counted itself ended.
#[derive(Default)]
struct Running {
    state: Mutex<Ended>,
    ended: Condvar,
}

#[derive(Default)]
struct Ended {
    running: usize,
    panicked: Option<Box<dyn Any + Send>>,
}

impl Running {
    /// One thread ended (or will never run), having panicked with `panic` or not.
    fn end(&self, panic: Option<Box<dyn Any + Send>>) {
        let mut st = self.state.lock().unwrap();
        if let Some(p) = panic {
            st.panicked.get_or_insert(p);
        }
        st.running -= 1;
        if st.running == 0 {
            self.ended.notify_all();
        }
    }
}

/// Runs `body(i, start)` on a thread for each index `i` of `first`; a thread starts thread `j`
/// with `start(j)`. Returns once every thread has ended; a thread's panic (a bug) is raised
/// again then, rather than a partial walk reported as done. The threads come from
/// [`crate::pool`]: kept from earlier walks, or new.
pub(crate) fn run<F>(first: impl IntoIterator<Item = usize>, body: &F)
where
    F: Fn(usize, &dyn Fn(usize)) + Sync,
{
    let crew = Arc::new(Running::default());
    for i in first {
        start(&crew, i, body);
    }
    let mut st = crew.state.lock().unwrap();
    while st.running > 0 {
        st = crew.ended.wait(st).unwrap();
    }
    if let Some(p) = st.panicked.take() {
        drop(st);
        resume_unwind(p);
    }
}

fn start<F>(crew: &Arc<Running>, i: usize, body: &F)
where
    F: Fn(usize, &dyn Fn(usize)) + Sync,
{
    // Counted before it is handed over, and by a thread that has not ended when one thread
    // starts another: `run` cannot see none running while any is still to run.
    crew.state.lock().unwrap().running += 1;
    let ours = crew.clone();
    let thread = move || {
        let outcome = {
            let start = |j| start(&ours, j, body);
            catch_unwind(AssertUnwindSafe(|| body(i, &start)))
        };
        // The last use of `body`: from here the thread touches only `ours`, which it owns.
        ours.end(outcome.err());
    };
    let thread: Box<dyn FnOnce() + Send + '_> = Box::new(thread);
    // SAFETY: the job borrows `body`, which is borrowed for the whole of `run`'s call. `run`
    // returns only once `running` is back to 0, and each job counts itself ended after its last
    // use of `body` (above; a panic in `body` is caught before that). A job that never runs is
    // counted ended below. Nothing here unwinds between the count and the hand-over, so `run`
    // never leaves early. `std::thread::scope` rests on the same argument.
    let thread: pool::Job =
        unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + '_>, pool::Job>(thread) };
    if let Err(e) = pool::execute(thread) {
        // No thread to be had (the job was dropped unrun): raised once the others end, as
        // `std::thread::scope` does with its failed spawn.
        crew.end(Some(Box::new(format!(
            "failed to spawn a walk thread: {e}"
        ))));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    use super::*;

    #[test]
    fn a_thread_starts_when_a_pop_leaves_more_queued_than_threads_about_to_take_one() {
        let mut c = Crew::new(4);
        assert_eq!((c.add(), c.add()), (0, 1));
        // Both still starting: two queued wait for them.
        assert_eq!(c.grow(2), None);
        assert_eq!(c.grow(3), Some(2));
        c.begun();
        c.begun();
        c.begun();
        // Two waiting for work take two; a third queued starts one more, the last.
        c.waiting = 2;
        assert_eq!(c.grow(2), None);
        assert_eq!(c.grow(3), Some(3));
        assert_eq!(c.grow(100), None, "never beyond the limit");
        assert_eq!(c.started(), 4);
    }

    #[test]
    fn threads_started_by_threads_all_run_and_are_joined() {
        // Each thread starts the next, up to 10: all run before `run` returns.
        let ran = AtomicUsize::new(0);
        run([0], &|i, start: &dyn Fn(usize)| {
            ran.fetch_add(1, Relaxed);
            if i < 9 {
                start(i + 1);
            }
        });
        assert_eq!(ran.load(Relaxed), 10);
    }

    #[test]
    fn a_panic_in_a_thread_started_by_another_is_raised_once_all_ended() {
        let ran = AtomicUsize::new(0);
        let r = catch_unwind(AssertUnwindSafe(|| {
            run([0, 1], &|i, start: &dyn Fn(usize)| {
                if i == 1 {
                    start(2);
                }
                if i == 2 {
                    panic!("thread 2");
                }
                ran.fetch_add(1, Relaxed);
            })
        }));
        let p = r.expect_err("the panic is raised");
        assert_eq!(p.downcast_ref::<&str>(), Some(&"thread 2"));
        assert_eq!(ran.load(Relaxed), 2, "the others ran to their end");
    }
}
