//! The parallel walk that drives both passes.
//!
//! Worker threads share one LIFO queue of tasks: list a directory, handle a batch of entries
//! of one directory, copy a byte range of a large file, or open a scope. LIFO keeps the walk
//! depth-first, so the directories in progress (and their descriptors) stay few however large
//! the tree. Each thread is bound to one destination mount and does all its writes through it.
//! The batches of a wide directory (more than one mount takes at once) wait in a lane of their
//! own, taken before the LIFO queue (see [`QueueState::wide`]). Threads start as tasks queue up,
//! one per mount at first (see [`crate::crew`]): most walks of a sharded copy are small.
//!
//! A directory's metadata must be set after its contents are written (creating an entry changes
//! the directory's mtime). Every task holds an `Arc` to its directory's [`DirNode`]; when the
//! last one is dropped, the node's `Drop` finishes the directory and releases its parent. The
//! same trick finishes a large file split across threads ([`SplitFile`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use ingest_path::RelPath;

use crate::concurrency::{Concurrency, Gate, MountLimits};
use crate::crew::{self, Crew};
use crate::job::{Options, Scope, SettleDirs};
use crate::mirror::{Extra, MirrorCounts};
use crate::progress::Progress;
use crate::report::{CopyCounts, Mismatch, Outcome, ReportEntry, ReportSink};
use crate::sys::{self, Kind, Meta, Op, OpResult, XattrClass, cstr};

/// Whether the settle pass has anything to do in `scope`: a tree no other shard writes into was
/// finished by its own copy (see `Options::settle_dirs`).
pub(crate) fn settles(scope: &Scope, dirs: &SettleDirs) -> bool {
    match scope {
        Scope::Tree(rel) => dirs.includes(rel),
        _ => true,
    }
}

/// Which pass a walk performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    Copy,
    /// Checks nothing and only sets the metadata of directories and of files copied in ranges
    /// (`Finalize` scopes): after a sharded copy, whose shards write into directories other
    /// shards own, directory times are final only once every shard is done. Runs before the
    /// verifier (`verify.rs`), which does all the comparing.
    Settle,
}

/// The open roots, shared by both passes.
pub(crate) struct Roots {
    pub src: OwnedFd,
    pub dsts: Vec<OwnedFd>,
    /// Each destination's path as the job names it: the key of its [`crate::MountMeter`].
    pub names: Vec<String>,
    /// The probe file's ctime, when one was made: the destination server's clock as this
    /// copy began writing (what `verify.scope: Changed` measures "written by this pass" from).
    pub probed_at: Option<(i64, i64)>,
}

/// Everything one pass shares between its threads.
pub(crate) struct Walk<'a> {
    pass: Pass,
    opts: &'a Options,
    roots: &'a Roots,
    progress: &'a Progress,
    sink: &'a dyn ReportSink,
    owner: bool,
    noatime: AtomicBool,
    use_cfr: AtomicBool,
    xattrs_ok: AtomicBool,
    /// ACLs and `security.*` attributes: on while the options ask for them and the
    /// destination takes them (each class is switched off, and reported, on its own).
    acls_ok: AtomicBool,
    security_ok: AtomicBool,
    /// Set once when the destination stops taking work (see [`is_destination_gone`]): from
    /// then on no new task is started.
    stopped: OnceLock<String>,
    /// Source inode → where its first link went (only inodes with more than one link).
    links: Mutex<HashMap<(u64, u64), LinkSlot>>,
    counts: Counters,
    queue: Queue<'a>,
    /// Mirror mode: names only in the destination, found as directories are listed; deleted
    /// (or not) by `mirror::prune` once the pass is over.
    extras: Mutex<Vec<Extra>>,
    /// Mirror mode: destination directories that could not be listed, and the like: counted
    /// here, not as entries (the directory's own outcome is its copy).
    mirror: Mutex<MirrorCounts>,
}

/// Filled once by the first link's thread: where it went, or `None` if it could not be copied.
type LinkSlot = Arc<OnceLock<Option<FirstLink>>>;

#[derive(Debug, Clone)]
struct FirstLink {
    rel: RelPath,
    dst_ino: u64,
}

#[derive(Default)]
struct Counters {
    entries: AtomicU64,
    dirs_up_to_date: AtomicU64,
    vanished: AtomicU64,
    changed: AtomicU64,
    not_attempted: AtomicU64,
    excluded: AtomicU64,
    files_copied: AtomicU64,
    files_skipped: AtomicU64,
    bytes_copied: AtomicU64,
    directories: AtomicU64,
    symlinks: AtomicU64,
    hardlinks: AtomicU64,
    specials: AtomicU64,
    unsupported: AtomicU64,
    failed: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

/// Batches of one directory in progress at once through one mount (see [`Queue::try_pop`]).
/// A file costs about 8 round trips, one of them the create that holds the directory's lock:
/// 8 threads keep that lock about busy, and more would only wait on it. With 4, a directory
/// of 1,000 files copied alone kept emulated 2 ms nodes of capacity 4 half idle.
const MAX_BATCHES_PER_DIR: u32 = 8;

enum Task<'a> {
    Scope(&'a Scope),
    Dir {
        parent: Arc<DirNode>,
        name: CString,
        recurse: bool,
        own_meta: bool,
    },
    Batch {
        dir: Arc<DirNode>,
        entries: Vec<(CString, Option<Kind>)>,
    },
    Range {
        file: Arc<SplitFile>,
        off: u64,
        len: u64,
    },
}

impl Task<'_> {
    /// False for a batch whose directory is at its limit of batches through `mount`.
    fn admits(&self, mount: usize) -> bool {
        match self {
            Task::Batch { dir, .. } => dir.admits(mount),
            _ => true,
        }
    }
}

/// A directory in progress. Dropping the last reference finishes it.
struct DirNode {
    /// Its outcome is already counted (its listing failed): finishing it sets metadata only.
    failed: AtomicBool,
    parent: Option<Arc<DirNode>>,
    rel: RelPath,
    name: CString,
    src: OwnedFd,
    meta: Meta,
    /// The destination directory through each mount, opened when a thread on that mount needs it.
    dst: Vec<OnceLock<OwnedFd>>,
    own_meta: bool,
    /// Batches of this directory in progress, per mount.
    busy: Vec<AtomicU32>,
    /// Created by this copy pass: nothing can be in it yet, so entries need no look first.
    fresh: bool,
    /// Not created by this pass, and a file's exclusive create here found its name taken: from
    /// then on each file is looked at first (see `Walk::copy_file`).
    taken: AtomicBool,
}

/// A large regular file being copied by several threads.
struct SplitFile {
    dir: Arc<DirNode>,
    name: CString,
    meta: Meta,
    src: OwnedFd,
    dst: OwnedFd,
    failed: AtomicBool,
    /// Range copies set this only for the first failure, so the file is reported once.
    reported: AtomicBool,
    /// Data only, metadata left to a `Finalize` scope.
    data_only: bool,
}

/// Per-thread state: the mount this thread writes through and its buffers.
pub(crate) struct Local {
    mount: usize,
    /// The mount's meter (bytes written through it).
    meter: Arc<crate::MountMeter>,
    buf: Vec<u8>,
    dirbuf: Vec<MaybeUninit<u8>>,
}

struct Queue<'a> {
    state: Mutex<QueueState<'a>>,
    cv: Condvar,
    /// Threads waiting in `wait_for_work` for a task: read without the lock by batches deciding whether
    /// to hand work over.
    idle: AtomicUsize,
}

enum Popped<'a> {
    /// A task, and the mount of a thread to start beside this one (see [`QueueState::grow`]).
    Task(Task<'a>, Option<usize>),
    /// Nothing queued, but tasks still run.
    Empty,
    /// Nothing queued or running: the walk is over.
    Finished,
}

/// The entries of one batch: names and their types as listed.
type Entries = Vec<(CString, Option<Kind>)>;

struct QueueState<'a> {
    tasks: Vec<Task<'a>>,
    /// Directories with more batches than a mount takes at once (`MAX_BATCHES_PER_DIR`), oldest
    /// first, each with its batches not yet taken. Threads take these before the LIFO queue,
    /// as many per directory and mount as admitted: creates in one directory of one mount go
    /// one at a time, so a wide directory copies at a bounded rate per mount, and left at the
    /// bottom of the LIFO queue it was copied last, alone, at that rate (seen on emulated 2 ms
    /// nodes: a 1,000-file directory among 4,000 files in 320 others left the nodes half idle
    /// for the last 30% of the copy). Taken from the start, it goes on beside the rest. The
    /// lane stays short: a thread lists a new directory only when no wide one admits it.
    wide: VecDeque<(Arc<DirNode>, Vec<Entries>)>,
    busy: usize,
    /// Threads of each mount, and how many of them run a task: the others are free to take one
    /// (see [`defers`]), once their mount's limit gives them a permit.
    threads_on: Vec<usize>,
    running_on: Vec<usize>,
    /// The walk's threads: one per mount to begin with, more as tasks queue up (see
    /// [`crate::crew`]). Its `waiting` are the threads in [`Queue::wait_for_work`] that began
    /// waiting with nothing queued.
    crew: Crew,
}

/// Where the next task of a thread comes from.
enum Pick {
    /// From the wide directory at this index.
    Wide(usize),
    /// From the LIFO queue, at this index.
    Lifo(usize),
}

impl QueueState<'_> {
    fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.wide.is_empty()
    }

    /// Tasks queued, each batch of the wide lane one.
    fn queued(&self) -> usize {
        self.tasks.len() + self.wide.iter().map(|(_, b)| b.len()).sum::<usize>()
    }

    /// The mount of one more thread to start, if the crew wants one (see [`Crew::grow`]).
    fn grow(&mut self) -> Option<usize> {
        let k = self.crew.grow(self.queued())?;
        Some(self.on_mount(k))
    }

    /// Counts a thread about to start; returns its mount.
    fn add_thread(&mut self) -> usize {
        let k = self.crew.add();
        self.on_mount(k)
    }

    /// Thread `k` writes through mount `k mod mounts`, as when all started at once.
    fn on_mount(&mut self, k: usize) -> usize {
        let mount = k % self.threads_on.len();
        self.threads_on[mount] += 1;
        mount
    }
}

/// How much faster another mount must be, in time per unit of work, for a thread to leave it
/// the last tasks: twice, so that mounts alike in speed (whose paces wobble with the task mix
/// and the load) never hold work back from each other.
const FASTER: f64 = 2.0;

/// Another mount as a thread about to take a task sees it (see [`defers`]).
#[derive(Debug, Clone, Copy)]
struct OtherMount {
    /// Its threads running no task.
    idle: usize,
    /// Its permits free now.
    free: usize,
    /// Its recent time per unit of work; `None` before its first task ended.
    per_unit: Option<f64>,
    /// One of the queued tasks is one its threads may take (a directory's batch limit).
    may_take: bool,
}

/// Whether a thread on a mount taking `mine` (time per unit) should leave the `queued` tasks to
/// free threads of mounts at least [`FASTER`] times faster, and wait. Only while there are no
/// more tasks than those threads can start at once (free and with a permit): a slow node that
/// takes one of the last tasks holds it for several times what a fast one would, and the whole
/// copy waits for it at the end (seen on emulated nodes, one at a quarter of the others'
/// capacity: at the end of a pass, and all through the short pass that sets directory times, the
/// slow node was busy while the others idled). With more tasks than that, every mount works.
/// A mount whose pace is not known yet (nothing ended on it) is not compared.
fn defers(mine: Option<f64>, queued: usize, others: impl IntoIterator<Item = OtherMount>) -> bool {
    let Some(mine) = mine else {
        return false;
    };
    let takers: usize = others
        .into_iter()
        .filter(|o| o.may_take && o.per_unit.is_some_and(|p| p * FASTER <= mine))
        .map(|o| o.idle.min(o.free))
        .sum();
    takers > 0 && queued <= takers
}

impl<'a> Queue<'a> {
    fn push(&self, task: Task<'a>) {
        self.push_all([task]);
    }

    /// Queues `tasks` and wakes every idle thread for them: the one a single wake-up would reach
    /// could be on a mount that may not take a batch (see [`Queue::try_pop`]), or one that leaves
    /// it to a faster mount (see [`defers`]).
    fn push_all(&self, tasks: impl IntoIterator<Item = Task<'a>>) {
        let mut st = self.state.lock().unwrap();
        let before = st.tasks.len();
        st.tasks.extend(tasks);
        if st.tasks.len() == before {
            return;
        }
        drop(st);
        self.cv.notify_all();
    }

    /// Queues the batches of a wide directory (see [`QueueState::wide`]); each one takes its own
    /// reference to `dir`, as a queued batch task does.
    fn push_wide(&self, dir: &Arc<DirNode>, batches: Vec<Entries>) {
        if batches.is_empty() {
            return;
        }
        self.state
            .lock()
            .unwrap()
            .wide
            .push_back((dir.clone(), batches));
        self.cv.notify_all();
    }

    /// The next task for a thread on `mount`: [`Popped::Empty`] when there is none it may take
    /// now but tasks still run (they may add more, or end a batch and so admit another),
    /// [`Popped::Finished`] once none runs either.
    ///
    /// Mostly the newest task (depth first), but a batch is passed over while its directory
    /// already has `MAX_BATCHES_PER_DIR` batches in progress through this mount: the kernel
    /// serialises file creation in one directory of one mount (the VFS holds the directory's lock
    /// for the whole create, an NFS round trip, queueing at the server included), so more
    /// threads there would only wait on that lock, holding their entries where a thread on
    /// another mount could do them. They do better listing or copying another directory, or
    /// leaving the batch to another mount. Measured on emulated 2 ms nodes with `--threads auto`:
    /// when the newest batch was taken anyway, more copy threads waited on a directory's lock
    /// than on the nodes.
    ///
    /// `gates`: each mount's, to leave the last tasks to faster mounts (see [`defers`]).
    fn try_pop(&self, mount: usize, gates: &[Option<&Gate>]) -> Popped<'a> {
        let mut st = self.state.lock().unwrap();
        if st.is_empty() && st.busy == 0 {
            self.cv.notify_all();
            return Popped::Finished;
        }
        let t = match Self::pick(&st, mount, gates) {
            None => return Popped::Empty,
            Some(Pick::Lifo(i)) => st.tasks.remove(i),
            Some(Pick::Wide(i)) if st.wide[i].1.len() > 1 => {
                let (dir, batches) = &mut st.wide[i];
                let entries = batches.pop().unwrap_or_default();
                Task::Batch {
                    dir: dir.clone(),
                    entries,
                }
            }
            Some(Pick::Wide(i)) => {
                // The directory's last batch takes the lane's own reference.
                let Some((dir, mut batches)) = st.wide.remove(i) else {
                    unreachable!("`admitted` gives an index of the lane, under the same lock")
                };
                Task::Batch {
                    dir,
                    entries: batches.pop().unwrap_or_default(),
                }
            }
        };
        if let Task::Batch { dir, .. } = &t {
            dir.busy[mount].fetch_add(1, Relaxed);
        }
        st.busy += 1;
        st.running_on[mount] += 1;
        let grow = st.grow();
        Popped::Task(t, grow)
    }

    /// A thread started: it no longer counts as about to take a task (see [`Crew::begun`]).
    fn started(&self) {
        self.state.lock().unwrap().crew.begun();
    }

    /// What [`Queue::admitted`] gives, unless the thread leaves it to a faster mount (see
    /// [`defers`]). Never while nothing runs: then no wake-up would come to end the wait.
    fn pick(st: &QueueState<'a>, mount: usize, gates: &[Option<&Gate>]) -> Option<Pick> {
        let pick = Self::admitted(st, mount)?;
        let idle = |m: usize| st.threads_on[m] - st.running_on[m];
        let queued = st.queued();
        // More tasks than all other mounts' free threads could take: every mount works, and the
        // gates (one lock each) need not be asked. Most pops, in the thick of a pass, end here.
        let elsewhere: usize = (0..st.threads_on.len())
            .filter(|&m| m != mount)
            .map(idle)
            .sum();
        if st.busy == 0 || queued > elsewhere {
            return Some(pick);
        }
        let Some(Some(mine)) = gates.get(mount) else {
            return Some(pick);
        };
        let others = gates.iter().enumerate().filter_map(|(m, g)| {
            let g = g.as_ref()?;
            let idle = idle(m);
            if m == mount || idle == 0 {
                return None;
            }
            let (per_unit, free) = g.pace();
            Some(OtherMount {
                idle,
                free,
                per_unit,
                may_take: Self::admitted(st, m).is_some(),
            })
        });
        (!defers(mine.pace().0, queued, others)).then_some(pick)
    }

    /// The task a thread on `mount` may take: a batch of the oldest wide directory that admits
    /// it, else the newest task among the last `LOOK_DEEPER` of the LIFO queue that it may take.
    /// Deeper tasks are not looked at: the search is made under the queue's lock, and only
    /// batches of a directory at its limit are passed over, a few per directory.
    fn admitted(st: &QueueState<'a>, mount: usize) -> Option<Pick> {
        const LOOK_DEEPER: usize = 64;
        if let Some(i) = st.wide.iter().position(|(dir, _)| dir.admits(mount)) {
            return Some(Pick::Wide(i));
        }
        let n = st.tasks.len();
        (n.saturating_sub(LOOK_DEEPER)..n)
            .rev()
            .find(|&i| st.tasks[i].admits(mount))
            .map(Pick::Lifo)
    }

    /// Waits until there is a task a thread on `mount` may take (and does not leave to a faster
    /// mount), or none is running (the walk is over). The caller holds no permit meanwhile:
    /// another run sharing the mount's limits may use it.
    fn wait_for_work(&self, mount: usize, gates: &[Option<&Gate>]) {
        let mut st = self.state.lock().unwrap();
        while st.busy > 0 && Self::pick(&st, mount, gates).is_none() {
            // Waiting for a task to be queued, this thread will take one; waiting beside tasks
            // it may not take (a directory at its limit on this mount, or left to a faster
            // mount), it will not, and threads on other mounts must start for them.
            let for_a_task = st.is_empty();
            self.idle.fetch_add(1, Relaxed);
            st.crew.waiting += usize::from(for_a_task);
            st = self.cv.wait(st).unwrap();
            st.crew.waiting -= usize::from(for_a_task);
            self.idle.fetch_sub(1, Relaxed);
        }
    }

    /// A batch of `dir` through `mount` is over. Done under the queue's lock, so that a thread
    /// that found the directory at its limit in [`Queue::wait_for_work`] cannot miss the wake-up.
    fn batch_ended(&self, dir: &DirNode, mount: usize) {
        let _st = self.state.lock().unwrap();
        if dir.busy[mount].fetch_sub(1, Relaxed) == MAX_BATCHES_PER_DIR {
            self.cv.notify_all();
        }
    }

    /// Whether some thread is waiting for work.
    fn has_idle(&self) -> bool {
        self.idle.load(Relaxed) > 0
    }

    /// A task of a thread on `mount` is over.
    fn done(&self, mount: usize) {
        let mut st = self.state.lock().unwrap();
        st.busy -= 1;
        st.running_on[mount] -= 1;
        if st.busy == 0 && st.is_empty() {
            self.cv.notify_all();
        }
    }
}

impl<'a> Walk<'a> {
    pub(crate) fn new(
        pass: Pass,
        opts: &'a Options,
        roots: &'a Roots,
        progress: &'a Progress,
        sink: &'a dyn ReportSink,
    ) -> Self {
        Walk {
            pass,
            opts,
            roots,
            progress,
            sink,
            owner: opts.preserve.owner && sys::is_root(),
            noatime: AtomicBool::new(true),
            use_cfr: AtomicBool::new(true),
            xattrs_ok: AtomicBool::new(opts.preserve.xattrs),
            acls_ok: AtomicBool::new(opts.preserve.acls),
            security_ok: AtomicBool::new(opts.preserve.xattrs && sys::is_root()),
            stopped: OnceLock::new(),
            links: Mutex::new(HashMap::new()),
            counts: Counters::default(),
            queue: Queue {
                state: Mutex::new(QueueState {
                    tasks: Vec::new(),
                    wide: VecDeque::new(),
                    busy: 0,
                    threads_on: vec![0; roots.dsts.len()],
                    running_on: vec![0; roots.dsts.len()],
                    crew: Crew::default(),
                }),
                cv: Condvar::new(),
                idle: AtomicUsize::new(0),
            },
            extras: Mutex::new(Vec::new()),
            mirror: Mutex::new(MirrorCounts::default()),
        }
    }

    /// Mirror mode: what the pass found only in the destination, and what went wrong looking.
    pub(crate) fn take_extras(&self) -> (Vec<Extra>, MirrorCounts) {
        (
            std::mem::take(&mut *self.extras.lock().unwrap()),
            std::mem::take(&mut *self.mirror.lock().unwrap()),
        )
    }

    /// Runs the pass over `scopes` and returns its counters: `opts.threads` threads, or with
    /// `--threads auto` up to `max_per_mount` per mount; before each task a thread takes a
    /// permit from its mount's gate in `limits` (shared with any run going on beside this one).
    pub(crate) fn run(&self, scopes: &'a [Scope], limits: &MountLimits) -> CopyCounts {
        // Scopes are queued in reverse so that the LIFO queue starts with the first (largest) one.
        self.queue.push_all(scopes.iter().rev().map(Task::Scope));
        let mounts = self.roots.dsts.len();
        let threads = match self.opts.concurrency {
            Concurrency::Fixed => self.opts.threads,
            Concurrency::Auto(cfg) => cfg.max_per_mount.max(1) * mounts,
        };
        let gates: Vec<Option<&Gate>> = self.roots.names.iter().map(|n| limits.gate(n)).collect();
        let gates = &gates;
        // One thread per mount to begin with; more as tasks queue up (see `QueueState::grow`).
        let first: Vec<usize> = {
            let mut st = self.queue.state.lock().unwrap();
            st.crew = Crew::new(threads);
            (0..threads.min(mounts)).map(|_| st.add_thread()).collect()
        };
        crew::run(first, &|mount, start: &dyn Fn(usize)| {
            self.queue.started();
            self.thread(mount, gates, start);
        });
        self.totals()
    }

    /// One thread of the walk, on `mount`: takes tasks until the walk is over; `more` starts
    /// another thread (on the mount given) when the queue asks for one.
    fn thread(&self, mount: usize, gates: &[Option<&Gate>], more: &dyn Fn(usize)) {
        let meter = self.progress.mount(&self.roots.names[mount]);
        let mut local = Local {
            mount,
            meter: meter.clone(),
            buf: Vec::new(),
            dirbuf: vec![MaybeUninit::uninit(); 64 << 10],
        };
        let gate = gates[mount];
        loop {
            let permit = gate.map(Gate::acquire);
            let task = match self.queue.try_pop(mount, gates) {
                Popped::Task(t, grow) => {
                    if let Some(m) = grow {
                        more(m);
                    }
                    t
                }
                Popped::Finished => break,
                Popped::Empty => {
                    drop(permit);
                    self.queue.wait_for_work(mount, gates);
                    continue;
                }
            };
            if self.stopped.get().is_some() {
                self.not_started(task, mount);
                self.queue.done(mount);
                continue;
            }
            Gate::measure(gate, &meter, || self.handle(task, &mut local));
            self.queue.done(mount);
        }
    }

    /// Why the pass stopped taking new work, if it did, with what that left undone.
    pub(crate) fn stopped(&self) -> Option<String> {
        let why = self.stopped.get()?;
        Some(format!(
            "{why}; no new work was started after it: the entries in progress were cut short \
             and are reported as failed, {} more were not attempted. Fix the destination and run \
             again: what is finished is skipped",
            self.counts.not_attempted.load(Relaxed)
        ))
    }

    /// A task popped after the destination stopped taking work: count what it held as not
    /// attempted and let go of its directory (and file) references.
    fn not_started(&self, task: Task<'a>, mount: usize) {
        let na = &self.counts.not_attempted;
        match task {
            Task::Scope(scope) => {
                let n = match scope {
                    Scope::LinkGroup(paths) => paths.len() as u64,
                    Scope::FileRange { .. } => 0,
                    _ => 1,
                };
                if self.pass == Pass::Copy {
                    self.counts.entries.fetch_add(n, Relaxed);
                    na.fetch_add(n, Relaxed);
                }
            }
            Task::Dir { parent, .. } => {
                inc(na);
                self.release_dir(parent);
            }
            Task::Batch { dir, entries } => {
                na.fetch_add(entries.len() as u64, Relaxed);
                self.queue.batch_ended(&dir, mount);
                self.release_dir(dir);
            }
            Task::Range { file, .. } => {
                self.cut_short(&file);
                self.release_file(file);
            }
        }
    }

    /// Marks a split file failed, reporting it once, when one of its ranges will not be written.
    fn cut_short(&self, file: &SplitFile) {
        file.failed.store(true, Relaxed);
        if !file.reported.swap(true, Relaxed) {
            let why = io::Error::other("cut short: the destination stopped taking writes");
            self.fail(file.dir.rel.join(file.name.to_bytes()), "write", &why);
        }
    }

    fn totals(&self) -> CopyCounts {
        let c = &self.counts;
        let g = |a: &AtomicU64| a.load(Relaxed);
        CopyCounts {
            entries: g(&c.entries),
            dirs_up_to_date: g(&c.dirs_up_to_date),
            vanished: g(&c.vanished),
            changed: g(&c.changed),
            not_attempted: g(&c.not_attempted),
            excluded: g(&c.excluded),
            files_copied: g(&c.files_copied),
            files_skipped: g(&c.files_skipped),
            bytes_copied: g(&c.bytes_copied),
            directories: g(&c.directories),
            symlinks: g(&c.symlinks),
            hardlinks: g(&c.hardlinks),
            specials: g(&c.specials),
            unsupported: g(&c.unsupported),
            failed: g(&c.failed),
        }
    }

    /// Runs one task; returns the work it did as the concurrency controller counts it (entries
    /// handled; any other task is one).
    fn handle(&self, task: Task<'a>, local: &mut Local) -> u64 {
        match task {
            Task::Scope(scope) => self.start_scope(scope, local),
            Task::Dir {
                parent,
                name,
                recurse,
                own_meta,
            } => {
                let rel = parent.rel.join(name.to_bytes());
                match self.open_child_dir(&parent, &name, local.mount) {
                    Ok(Some((src, meta, created))) => {
                        let mut node =
                            DirNode::new(self.roots, Some(parent), rel, name, src, meta, own_meta);
                        node.fresh = created;
                        self.list(Arc::new(node), local, recurse, None);
                    }
                    Ok(None) => {
                        // Gone from the source since it was listed.
                        self.vanished(rel);
                        self.release_dir(parent);
                    }
                    Err((op, e)) => {
                        self.fail(rel, op, &e);
                        self.release_dir(parent);
                    }
                }
            }
            Task::Batch { dir, mut entries } => {
                // While a thread waits for work (the queue ran dry: the end of a copy, or a
                // slow mount still holding batches), the back half of what is left goes back
                // to the queue, so that no batch keeps a slow mount busy while others idle.
                let mut done = 0;
                while done < entries.len() {
                    let left = entries.len() - done;
                    if self.stopped.get().is_some() {
                        self.counts.not_attempted.fetch_add(left as u64, Relaxed);
                        break;
                    }
                    if left > 1 && self.queue.has_idle() {
                        let given = entries.split_off(done + left / 2);
                        self.queue.push(Task::Batch {
                            dir: dir.clone(),
                            entries: given,
                        });
                    }
                    self.entry(&dir, &entries[done].0, local, false);
                    done += 1;
                }
                self.queue.batch_ended(&dir, local.mount);
                self.release_dir(dir);
                return done.max(1) as u64;
            }
            Task::Range { file, off, len } => {
                self.copy_part(&file, off, len, local);
                self.release_file(file);
            }
        }
        1
    }

    /// Drops a reference to a directory; the last one finishes it, then releases its parent.
    /// Every `Arc<DirNode>` ends here, never in a plain drop, so exactly one caller finishes it.
    fn release_dir(&self, node: Arc<DirNode>) {
        let mut next = Some(node);
        while let Some(arc) = next.take() {
            if let Some(mut node) = Arc::into_inner(arc) {
                if node.own_meta {
                    self.finish_dir(&node);
                }
                next = node.parent.take();
            }
        }
    }

    /// Drops a reference to a split file; the last one sets its metadata (once all ranges are in).
    fn release_file(&self, file: Arc<SplitFile>) {
        let Some(f) = Arc::into_inner(file) else {
            return;
        };
        let rel = || f.dir.rel.join(f.name.to_bytes());
        if f.failed.load(Relaxed) {
            // Reported when it failed; the data is incomplete and the mtime not the source's.
            let _ = sys::close_checked(f.dst);
        } else if f.data_only {
            // One range of a file shared with other shards: its `Finalize` checks the whole.
            if let Err(e) = sys::close_checked(f.dst) {
                self.fail(rel(), "close", &e);
            }
        } else {
            // A file changed while its ranges were read is not finished: a later pass
            // copies it again (splitting it again, so there is no retry here).
            let done = match sys::fstat(f.src.as_fd()).op("stat-source") {
                Ok(now) if !same_version(&f.meta, &now) => Ok(false),
                Ok(_) => match f.dir.dst.iter().find_map(|d| d.get()) {
                    Some(dst) => {
                        self.write_finish_meta(dst.as_fd(), &f.name, &f.src, f.dst, &f.meta, None)
                    }
                    None => Err(("open-dest-dir", io::Error::other("no open destination"))),
                },
                Err(e) => Err(e),
            };
            match done {
                Ok(true) => {
                    inc(&self.counts.files_copied);
                    inc(&self.progress.files);
                }
                Ok(false) => self.changed(rel()),
                Err((op, e)) => self.fail(rel(), op, &e),
            }
        }
        self.release_dir(f.dir);
    }

    // ---- reporting -------------------------------------------------------------------------

    fn fail(&self, path: RelPath, op: &str, e: &io::Error) {
        inc(&self.counts.failed);
        inc(&self.progress.failed);
        if is_destination_gone(op, e) {
            let why = format!("the destination stopped taking writes at {path} ({op}: {e})");
            if self.stopped.set(why.clone()).is_ok() {
                // One line for everything not started, at the root: what a reader of the
                // report needs to know about the entries it does not list.
                self.sink.record(ReportEntry {
                    path: RelPath::root(),
                    outcome: Outcome::Failed,
                    op: "stop".into(),
                    error: Some(format!("{why}: no new work was started after it")),
                    errno: e.raw_os_error(),
                    mismatches: Vec::new(),
                    digest: None,
                    meta: None,
                });
            }
        }
        self.sink.record(ReportEntry::failed(path, op, e));
    }

    /// An entry listed in the source that was gone when its turn came.
    fn vanished(&self, path: RelPath) {
        if self.pass != Pass::Copy {
            return;
        }
        inc(&self.counts.vanished);
        self.sink.record(ReportEntry {
            path,
            outcome: Outcome::Vanished,
            op: "stat-source".into(),
            error: Some("gone from the source since it was listed (deleted or renamed)".into()),
            errno: Some(libc::ENOENT),
            mismatches: Vec::new(),
            digest: None,
            meta: None,
        });
    }

    /// A regular file that kept changing in the source while it was read.
    fn changed(&self, path: RelPath) {
        inc(&self.counts.changed);
        inc(&self.progress.failed);
        self.sink.record(ReportEntry {
            path,
            outcome: Outcome::Changed,
            op: "read".into(),
            error: Some(
                "the source file changed while it was read (size, mtime or ctime moved); \
                 not copied: a later pass copies it once it is quiet"
                    .into(),
            ),
            errno: None,
            mismatches: Vec::new(),
            digest: None,
            meta: None,
        });
    }

    fn unsupported(&self, path: RelPath, why: &str) {
        inc(&self.counts.unsupported);
        self.sink.record(ReportEntry {
            path,
            outcome: Outcome::Unsupported,
            op: "create-special".into(),
            error: Some(why.into()),
            errno: None,
            mismatches: Vec::new(),
            digest: None,
            meta: None,
        });
    }

    // ---- scopes and directories ------------------------------------------------------------

    fn start_scope(&self, scope: &'a Scope, local: &mut Local) {
        // The entries a scope names itself (its root directory, its files); what is below a
        // directory is counted when the directory is listed.
        if self.pass == Pass::Copy {
            let named = match scope {
                Scope::Tree(_) | Scope::Finalize(_) => 1,
                Scope::Entries { from, .. } => u64::from(from.is_none()),
                Scope::FileRange { .. } => 0,
                Scope::LinkGroup(paths) => paths.len() as u64,
            };
            self.counts.entries.fetch_add(named, Relaxed);
        }
        match scope {
            _ if self.pass == Pass::Settle && !settles(scope, &self.opts.settle_dirs) => {}
            Scope::Tree(rel) => {
                if let Some(node) = self.open_scope_dir(rel, local.mount, true) {
                    self.list(node, local, true, None);
                }
            }
            // Several name ranges of one directory: the first one owns the directory's metadata.
            Scope::Entries {
                dir,
                from,
                to,
                subtrees,
            } => {
                if let Some(node) = self.open_scope_dir(dir, local.mount, from.is_none()) {
                    let range = (from.as_ref(), to.as_ref());
                    self.list(node, local, *subtrees, Some(range));
                }
            }
            Scope::FileRange { file, offset, len } => {
                if let Some((dir, name)) = self.open_scope_parent(file, local.mount) {
                    self.file_range(&dir, &name, *offset, *len, local);
                    self.release_dir(dir);
                } else {
                    // One range's data is not this pass's entry, but its failure is.
                    inc(&self.counts.entries);
                }
            }
            Scope::Finalize(file) => {
                if let Some((dir, name)) = self.open_scope_parent(file, local.mount) {
                    // A sharded copy finalizes split files in its last phase.
                    self.finalize_split(&dir, &name, local);
                    self.release_dir(dir);
                }
            }
            Scope::LinkGroup(paths) => {
                for path in paths {
                    if let Some((dir, name)) = self.open_scope_parent(path, local.mount) {
                        self.entry(&dir, &name, local, true);
                        self.release_dir(dir);
                    }
                }
            }
        }
    }

    /// Opens the directory `rel` on both sides, creating the destination's missing ancestors.
    /// `own_meta`: the scope is responsible for this directory's metadata.
    fn open_scope_dir(&self, rel: &RelPath, mount: usize, own_meta: bool) -> Option<Arc<DirNode>> {
        let mut walked = RelPath::root();
        let mut created = false;
        let opened = (|| -> OpResult<(OwnedFd, Meta, OwnedFd)> {
            let mut src = sys::reopen_dir(self.roots.src.as_fd()).op("open-source-dir")?;
            let mut meta = sys::fstat(src.as_fd()).op("stat-source")?;
            let mut dst = sys::reopen_dir(self.roots.dsts[mount].as_fd()).op("open-dest-dir")?;
            for comp in rel.components() {
                walked = walked.join(comp);
                let name = cstr(comp);
                src = sys::open_dir_at(src.as_fd(), &name).op("open-source-dir")?;
                meta = sys::fstat(src.as_fd()).op("stat-source")?;
                // Ancestors made here get their own metadata from the scope that owns them (or
                // the verify pass); until then they are at least writable by us. They are that
                // scope's entries, so only the last one, if this scope owns it, is counted (when
                // finished).
                created =
                    sys::ensure_dir(dst.as_fd(), &name, meta.perm | 0o700).op("create-dir")?;
                dst = sys::open_dir_at(dst.as_fd(), &name).op("open-dest-dir")?;
            }
            Ok((src, meta, dst))
        })();
        match opened {
            Ok((src, meta, dst)) => {
                let name = cstr(rel.file_name());
                let mut node =
                    DirNode::new(self.roots, None, rel.clone(), name, src, meta, own_meta);
                node.fresh = created && self.pass == Pass::Copy;
                let _ = node.dst[mount].set(dst);
                Some(Arc::new(node))
            }
            Err((op, e)) => {
                self.fail(walked, op, &e);
                None
            }
        }
    }

    /// For a scope naming one file: its parent directory (not owned) and its name.
    fn open_scope_parent(&self, file: &RelPath, mount: usize) -> Option<(Arc<DirNode>, CString)> {
        let dir = self.open_scope_dir(&file.parent(), mount, false)?;
        Some((dir, cstr(file.file_name())))
    }

    /// Opens a child directory on the source and makes sure it exists on this thread's mount.
    fn open_child_dir(
        &self,
        parent: &DirNode,
        name: &CStr,
        mount: usize,
    ) -> OpResult<Option<(OwnedFd, Meta, bool)>> {
        let src = match sys::open_dir_at(parent.src.as_fd(), name) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(("open-source-dir", e)),
        };
        let meta = sys::fstat(src.as_fd()).op("stat-source")?;
        let pdst = parent.dst_fd(self.roots, mount).op("open-dest-dir")?;
        let mut created = false;
        match self.pass {
            Pass::Copy => {
                created = sys::ensure_dir(pdst, name, meta.perm | 0o700).op("create-dir")?;
            }
            Pass::Settle => {
                // A directory missing in the destination is recreated, so that its times can
                // be set; its contents are the verifier's business.
                if sys::stat_at(pdst, name).op("stat-dest")?.is_none() {
                    sys::ensure_dir(pdst, name, meta.perm | 0o700).op("create-dir")?;
                }
            }
        }
        Ok(Some((src, meta, created)))
    }

    /// Lists `node` on the source and queues its entries: subdirectories as directory tasks
    /// (or only created, when not `recurse`), everything else in batches.
    fn list(
        &self,
        node: Arc<DirNode>,
        local: &mut Local,
        recurse: bool,
        range: Option<(Option<&RelPath>, Option<&RelPath>)>,
    ) {
        inc(&self.progress.dirs_listed);
        let in_range = |name: &[u8]| match range {
            None => true,
            Some((from, to)) => {
                from.is_none_or(|f| name >= f.as_bytes()) && to.is_none_or(|t| name < t.as_bytes())
            }
        };
        let mut dirs = Vec::new();
        let mut others = Vec::new();
        // Left out by the user's filters, by name (by age: in `entry`). An excluded directory is
        // one entry: it is not walked, created or settled.
        let filter = &self.opts.filter;
        let keeps = |name: &CStr, dir: bool| {
            filter.is_empty() || {
                let rel = node.rel.join(name.to_bytes());
                if dir {
                    filter.keeps_dir(&rel)
                } else {
                    filter.keeps_path(&rel)
                }
            }
        };
        let mut excluded = 0u64;
        // Mirror mode: every name of the source listing in range, excluded ones too (a name the
        // source has is never deleted from the destination, whatever its type there).
        let mirror = self.pass == Pass::Copy && self.opts.mirror.is_some() && !node.fresh;
        let mut names: HashSet<Vec<u8>> = HashSet::new();
        let listed = sys::list_dir(node.src.as_fd(), &mut local.dirbuf, |name, kind| {
            if !in_range(name.to_bytes()) {
                return;
            }
            if mirror {
                names.insert(name.to_bytes().to_vec());
            }
            match kind {
                // An entry of unknown type is asked once its type is known, below.
                Some(k) if !keeps(name, k == Kind::Dir) => excluded += 1,
                Some(Kind::Dir) => dirs.push(name.to_owned()),
                _ => others.push((name.to_owned(), kind)),
            }
        });
        if let Err(e) = listed {
            // The directory's outcome: its contents could not be listed, so not copied.
            node.failed.store(true, Relaxed);
            self.fail(node.rel.clone(), "list-dir", &e);
            self.release_dir(node);
            return;
        }
        // Entries of unknown type (file systems without d_type) are sorted out here.
        others.retain(|(name, kind)| {
            if kind.is_some() {
                return true;
            }
            let dir =
                matches!(sys::stat_at(node.src.as_fd(), name), Ok(Some(m)) if m.kind == Kind::Dir);
            if !keeps(name, dir) {
                excluded += 1;
                return false;
            }
            if dir {
                dirs.push(name.clone());
            }
            !dir
        });
        if self.pass == Pass::Copy && excluded > 0 {
            self.counts.entries.fetch_add(excluded, Relaxed);
            self.counts.excluded.fetch_add(excluded, Relaxed);
        }
        if mirror {
            self.find_extras(&node, &names, &in_range, local);
        }
        self.progress
            .dirs_queued
            .fetch_add(dirs.len() as u64, Relaxed);
        if self.pass == Pass::Copy {
            // Each of these ends in one outcome: subdirectories when they are finished (those
            // not recursed into belong to another scope, which counts them), the others in
            // `entry`.
            let handled = others.len() + if recurse { dirs.len() } else { 0 };
            self.counts.entries.fetch_add(handled as u64, Relaxed);
        }
        if self.pass == Pass::Settle {
            // Only directories are settled (files of `Finalize` scopes come on their own), and
            // with `SettleDirs::Only` only those other shards wrote into. Subdirectories a range
            // does not recurse into are settled by their own scopes.
            let settle = &self.opts.settle_dirs;
            if matches!(settle, SettleDirs::All) && !recurse {
                for name in &dirs {
                    if let Err((op, e)) = self.open_child_dir(&node, name, local.mount) {
                        self.fail(node.rel.join(name.to_bytes()), op, &e);
                    }
                }
            }
            let tasks: Vec<Task<'a>> = dirs
                .into_iter()
                .filter(|name| recurse && settle.includes(&node.rel.join(name.to_bytes())))
                .map(|name| Task::Dir {
                    parent: node.clone(),
                    name,
                    recurse: true,
                    own_meta: true,
                })
                .collect();
            self.queue.push_all(tasks);
            self.release_dir(node);
            return;
        }
        let mut tasks: Vec<Task<'a>> =
            Vec::with_capacity(dirs.len() + others.len() / self.opts.batch_files + 1);
        if recurse {
            tasks.extend(dirs.into_iter().map(|name| Task::Dir {
                parent: node.clone(),
                name,
                recurse: true,
                own_meta: true,
            }));
        } else {
            // The range's subdirectories are other shards' business: create them and move on.
            for name in dirs {
                if let Err((op, e)) = self.open_child_dir(&node, &name, local.mount) {
                    self.fail(node.rel.join(name.to_bytes()), op, &e);
                }
            }
        }
        let batch = self.opts.batch_files.max(1);
        let mut others = others.into_iter().peekable();
        let mut batches: Vec<Entries> = Vec::new();
        while others.peek().is_some() {
            batches.push(others.by_ref().take(batch).collect());
        }
        if batches.len() > MAX_BATCHES_PER_DIR as usize {
            // Reversed: the lane gives out its last batch first, so the listing's order holds.
            batches.reverse();
            self.queue.push_wide(&node, batches);
        } else {
            tasks.extend(batches.into_iter().map(|entries| Task::Batch {
                dir: node.clone(),
                entries,
            }));
        }
        self.queue.push_all(tasks);
        self.release_dir(node);
    }

    /// Mirror mode: the destination's names in range that the source listing (complete: this
    /// runs only after it succeeded) does not have and the filters keep. Found, not deleted.
    fn find_extras(
        &self,
        node: &DirNode,
        names: &HashSet<Vec<u8>>,
        in_range: &dyn Fn(&[u8]) -> bool,
        local: &mut Local,
    ) {
        let filter = &self.opts.filter;
        let mut found: Vec<(CString, Option<Kind>)> = Vec::new();
        let listed = node.dst_fd(self.roots, local.mount).and_then(|fd| {
            sys::list_dir(fd, &mut local.dirbuf, |name, kind| {
                let b = name.to_bytes();
                if in_range(b) && !names.contains(b) {
                    found.push((name.to_owned(), kind));
                }
            })
            .map(|()| fd)
        });
        let fd = match listed {
            Ok(fd) => fd,
            Err(e) => {
                self.mirror.lock().unwrap().failed += 1;
                self.sink
                    .record(ReportEntry::failed(node.rel.clone(), "list-dest-dir", &e));
                return;
            }
        };
        let mut extras = Vec::new();
        for (name, kind) in found {
            let rel = node.rel.join(name.to_bytes());
            // Another worker's probe file, there for a moment (see `setup::probe`).
            if node.rel.is_root() && crate::setup::is_probe_name(name.to_bytes()) {
                continue;
            }
            let dir = match kind {
                Some(k) => k == Kind::Dir,
                None => matches!(sys::stat_at(fd, &name), Ok(Some(m)) if m.kind == Kind::Dir),
            };
            let kept = if dir {
                filter.keeps_dir(&rel)
            } else {
                filter.keeps_path(&rel)
            };
            // What the filters leave out is not the job's to delete.
            if kept {
                extras.push(Extra { path: rel, dir });
            }
        }
        if !extras.is_empty() {
            self.extras.lock().unwrap().append(&mut extras);
        }
    }

    /// Sets a finished directory's metadata (copy and settle passes).
    fn finish_dir(&self, node: &DirNode) {
        // An empty directory was never opened on the destination: open it now, on any mount.
        let fd = match node.dst.iter().find_map(|d| d.get()) {
            Some(fd) => fd.as_fd(),
            None => match node.dst_fd(self.roots, 0) {
                Ok(fd) => fd,
                Err(e) => return self.fail(node.rel.clone(), "open-dest-dir", &e),
            },
        };
        let p = &self.opts.preserve;
        let set = || -> io::Result<()> {
            if self.any_xattrs() {
                self.copy_xattrs(node.src.as_fd(), fd, false)
                    .map_err(|(_, e)| e)?;
            }
            sys::set_meta_fd(fd, &node.meta, self.owner, p.mode, p.times)
        };
        // Shards other than its own write into this directory: the settle pass sets it, once.
        let settled_later = self.pass == Pass::Copy
            && matches!(&self.opts.settle_dirs, SettleDirs::Only(dirs) if dirs.contains(&node.rel));
        let set = || if settled_later { Ok(()) } else { set() };
        match self.pass {
            Pass::Copy => match set() {
                _ if node.failed.load(Relaxed) => {} // its outcome is counted already
                Ok(()) if node.fresh => inc(&self.counts.directories),
                Ok(()) => inc(&self.counts.dirs_up_to_date),
                Err(e) => self.fail(node.rel.clone(), "set-dir-metadata", &e),
            },
            Pass::Settle => {
                if let Err(e) = set() {
                    self.fail(node.rel.clone(), "set-dir-metadata", &e);
                }
            }
        }
    }

    // ---- entries -----------------------------------------------------------------------------

    /// One non-directory entry (or a directory met by a scope naming it): copy it.
    /// `grouped`: the entry comes from a `LinkGroup` scope, so multi-linked files are handled here.
    fn entry(&self, dir: &Arc<DirNode>, name: &CStr, local: &mut Local, grouped: bool) {
        if self.pass == Pass::Settle {
            return; // only directories (and `Finalize` scopes) are settled: no stat needed
        }
        let rel = || dir.rel.join(name.to_bytes());
        let sm = match sys::stat_at(dir.src.as_fd(), name) {
            Ok(Some(m)) => m,
            Ok(None) => return self.vanished(rel()),
            Err(e) => return self.fail(rel(), "stat-source", &e),
        };
        if sm.kind == Kind::Dir {
            self.queue.push(Task::Dir {
                parent: dir.clone(),
                name: name.to_owned(),
                recurse: true,
                own_meta: true,
            });
            return;
        }
        if sm.kind == Kind::File
            && sm.nlink > 1
            && self.opts.preserve.hardlinks
            && !grouped
            && self.opts.multilinked.grouped(&rel())
        {
            // Its `LinkGroup` scope copies (and counts) it; in this pass it is not an entry.
            if self.pass == Pass::Copy {
                self.counts.entries.fetch_sub(1, Relaxed);
            }
            return;
        }
        if sm.kind != Kind::Dir
            && self.opts.filter.has_age()
            && !self.opts.filter.keeps_mtime(sm.mtime.0)
        {
            // Out of the job's age limits: an entry of this pass, not copied.
            if self.pass == Pass::Copy {
                inc(&self.counts.excluded);
            }
            return;
        }
        match self.pass {
            Pass::Copy => {
                if let Some(t) = &self.opts.throttle {
                    t.entry();
                }
                match self.copy_entry(dir, name, &sm, local, false) {
                    Ok(()) => {}
                    // Listed and stat'ed, then gone before it could be opened.
                    Err(("open-source" | "read-link", e))
                        if e.raw_os_error() == Some(libc::ENOENT) =>
                    {
                        self.vanished(rel())
                    }
                    Err((op, e)) => self.fail(rel(), op, &e),
                }
                inc(&self.progress.entries);
                // Regular files count themselves when their data is done (split files at the end).
                if sm.kind != Kind::File {
                    inc(&self.progress.files);
                }
            }
            Pass::Settle => {}
        }
    }

    /// Copies one entry unless the destination already matches (or `force`).
    fn copy_entry(
        &self,
        dir: &Arc<DirNode>,
        name: &CStr,
        sm: &Meta,
        local: &mut Local,
        force: bool,
    ) -> OpResult<()> {
        if sm.kind == Kind::File {
            return self.copy_file(dir, name, sm, local, force);
        }
        let dst = dir.dst_fd(self.roots, local.mount).op("open-dest-dir")?;
        // Symlinks, fifos, sockets and device nodes can have several links too (link(2) does
        // not follow a symlink): the first one met is made, the others linked to it.
        if sm.nlink > 1 && self.opts.preserve.hardlinks {
            let (slot, first) = self.claim(sm);
            if !first {
                let target = slot.wait().clone();
                return self.link_to(dst, name, target, local);
            }
            let made = self.copy_other(dst, dir, name, sm, force);
            let ino = match &made {
                Ok(()) => sys::stat_at(dst, name).ok().flatten().map(|m| m.ino),
                Err(_) => None,
            };
            let _ = slot.set(ino.map(|dst_ino| FirstLink {
                rel: dir.rel.join(name.to_bytes()),
                dst_ino,
            }));
            return made;
        }
        self.copy_other(dst, dir, name, sm, force)
    }

    /// Copies a symlink or a special file.
    fn copy_other(
        &self,
        dst: BorrowedFd<'_>,
        dir: &Arc<DirNode>,
        name: &CStr,
        sm: &Meta,
        force: bool,
    ) -> OpResult<()> {
        match sm.kind {
            Kind::File | Kind::Dir => unreachable!("handled by copy_file and directory tasks"),
            Kind::Symlink => {
                let target = sys::read_link_at(dir.src.as_fd(), name).op("read-link")?;
                if !force
                    && let Some(dm) = sys::stat_at(dst, name).op("stat-dest")?
                    && dm.kind == Kind::Symlink
                    && sys::read_link_at(dst, name).op("read-dest-link")? == target
                {
                    inc(&self.counts.files_skipped);
                    return Ok(());
                }
                self.clear_way(dst, name)?;
                sys::symlink_at(&target, dst, name).op("create-symlink")?;
                let p = &self.opts.preserve;
                sys::set_meta_at(dst, name, sm, self.owner, false, p.times).op("set-metadata")?;
                inc(&self.counts.symlinks);
                Ok(())
            }
            Kind::Fifo | Kind::Socket | Kind::CharDev | Kind::BlockDev => {
                let is_dev = matches!(sm.kind, Kind::CharDev | Kind::BlockDev);
                if !self.opts.preserve.specials {
                    self.unsupported(
                        dir.rel.join(name.to_bytes()),
                        "not copied: preserve.specials is off (fifos, sockets, device nodes)",
                    );
                    return Ok(());
                }
                if is_dev && !sys::is_root() {
                    self.unsupported(
                        dir.rel.join(name.to_bytes()),
                        "device nodes are recreated only when running as root",
                    );
                    return Ok(());
                }
                if !force
                    && let Some(dm) = sys::stat_at(dst, name).op("stat-dest")?
                    && dm.kind == sm.kind
                    && dm.rdev == sm.rdev
                {
                    inc(&self.counts.files_skipped);
                    return Ok(());
                }
                self.clear_way(dst, name)?;
                sys::mknod_at(dst, name, sm).op("create-special")?;
                let p = &self.opts.preserve;
                sys::set_meta_at(dst, name, sm, self.owner, p.mode, p.times).op("set-metadata")?;
                inc(&self.counts.specials);
                Ok(())
            }
        }
    }

    /// Removes a non-directory (or empty directory) where a new entry must go. Non-empty
    /// directories are never removed: that is reported instead.
    fn clear_way(&self, dst: BorrowedFd<'_>, name: &CStr) -> OpResult<()> {
        match sys::stat_at(dst, name).op("stat-dest")? {
            None => Ok(()),
            Some(m) => sys::unlink_at(dst, name, m.kind == Kind::Dir).op("replace-dest"),
        }
    }

    /// Opens the source file and creates its destination exclusively: `None` when the name is
    /// taken (nothing was changed). The source is opened first, so that a source that cannot be
    /// read leaves no new file behind.
    fn create_new(
        &self,
        dir: &DirNode,
        dst: BorrowedFd<'_>,
        name: &CStr,
        sm: &Meta,
    ) -> OpResult<Option<(OwnedFd, OwnedFd)>> {
        let src = sys::open_source_file(dir.src.as_fd(), name, &self.noatime).op("open-source")?;
        match sys::create_new_file(dst, name, self.create_mode(sm)) {
            Ok(d) => Ok(Some((src, d))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(("open-dest", e)),
        }
    }

    /// The hard-link slot for a multi-linked source inode: `(slot, true)` for the first claimant.
    fn claim(&self, sm: &Meta) -> (LinkSlot, bool) {
        let mut map = self.links.lock().unwrap();
        match map.get(&(sm.dev, sm.ino)) {
            Some(slot) => (slot.clone(), false),
            None => {
                let slot = Arc::new(OnceLock::new());
                map.insert((sm.dev, sm.ino), slot.clone());
                (slot, true)
            }
        }
    }

    fn copy_file(
        &self,
        dir: &Arc<DirNode>,
        name: &CStr,
        sm: &Meta,
        local: &mut Local,
        force: bool,
    ) -> OpResult<()> {
        let dst = dir.dst_fd(self.roots, local.mount).op("open-dest-dir")?;
        let linked = sm.nlink > 1 && self.opts.preserve.hardlinks;
        let mut slot = None;
        if linked {
            let (s, first) = self.claim(sm);
            if !first {
                // The first link's thread sets the slot right after creating the file, with no
                // waiting in between, so this wait is short.
                let target = s.wait().clone();
                return self.link_to(dst, name, target, local);
            }
            slot = Some(s);
        }
        // Whatever happens below, later links must not wait forever.
        let publish = |first: Option<FirstLink>| {
            if let Some(s) = &slot {
                let _ = s.set(first);
            }
        };
        let rel = || dir.rel.join(name.to_bytes());
        // A directory this pass did not create may still be one this run made (a sharded copy:
        // another shard's, or its parent's); until a name is found taken in it, a file is
        // created exclusively rather than looked at first: one round trip instead of two, and
        // a name that exists sends it (and every later file here) the usual way.
        let mut made = None;
        if !dir.fresh && !force && self.pass == Pass::Copy && !dir.taken.load(Relaxed) {
            match self.create_new(dir, dst, name, sm) {
                Ok(Some(pair)) => made = Some(pair),
                Ok(None) => dir.taken.store(true, Relaxed),
                Err(e) => {
                    publish(None);
                    return Err(e);
                }
            }
        }
        let existing = if (dir.fresh && !force) || made.is_some() {
            Ok(None)
        } else {
            sys::stat_at(dst, name).op("stat-dest")
        };
        let existing = match existing {
            Ok(e) => e,
            Err(e) => {
                publish(None);
                return Err(e);
            }
        };
        if !force
            && let Some(dm) = existing
            && dm.kind == Kind::File
            && dm.size == sm.size
            && dm.mtime == sm.mtime
        {
            publish(Some(FirstLink {
                rel: rel(),
                dst_ino: dm.ino,
            }));
            inc(&self.counts.files_skipped);
            inc(&self.progress.files);
            self.progress.bytes.fetch_add(sm.size, Relaxed);
            return Ok(());
        }
        let opened = (|| -> OpResult<(OwnedFd, OwnedFd)> {
            if let Some(pair) = made {
                return Ok(pair);
            }
            let src =
                sys::open_source_file(dir.src.as_fd(), name, &self.noatime).op("open-source")?;
            if let Some(dm) = existing
                && (dm.kind != Kind::File || dm.nlink > 1 && !linked)
            {
                // Something else is in the way, or a link shared with another path: writing in
                // place would change that other path too.
                self.clear_way(dst, name)?;
            }
            let mode = self.create_mode(sm);
            let d = match sys::open_dest_file(dst, name, true, mode) {
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    // A read-only file left by an earlier run (we are not root): replace it.
                    self.clear_way(dst, name)?;
                    sys::open_dest_file(dst, name, true, mode)
                }
                r => r,
            }
            .op("open-dest")?;
            Ok((src, d))
        })();
        let (src, dfd) = match opened {
            Ok(x) => x,
            Err(e) => {
                publish(None);
                return Err(e);
            }
        };
        // The new file's attributes came back with the create (NFS post-op attributes, FUSE's
        // entry reply), so a stat now is answered from the client's cache; after the write it
        // would be a round trip (the write invalidates them).
        let created = match existing {
            None => match sys::fstat(dfd.as_fd()) {
                Ok(m) => Some(m),
                Err(e) => {
                    publish(None);
                    return Err(("stat-dest", e));
                }
            },
            Some(_) => None,
        };
        if linked {
            let ino = match created {
                Some(m) => m.ino,
                None => sys::fstat(dfd.as_fd()).map(|m| m.ino).unwrap_or(0),
            };
            publish(Some(FirstLink {
                rel: rel(),
                dst_ino: ino,
            }));
        }
        let split = self.opts.threads > 1
            && sm.size > self.opts.split_threshold
            && self.opts.split_threshold > 0;
        if !split {
            if self.write_finish(dst, name, &src, dfd, sm, created.as_ref(), local)? {
                inc(&self.counts.files_copied);
                inc(&self.progress.files);
            } else {
                self.changed(rel());
            }
            return Ok(());
        }
        sys::set_len(dfd.as_fd(), sm.size).op("set-size")?;
        let file = Arc::new(SplitFile {
            dir: dir.clone(),
            name: name.to_owned(),
            meta: *sm,
            src,
            dst: dfd,
            failed: AtomicBool::new(false),
            reported: AtomicBool::new(false),
            data_only: false,
        });
        self.queue_ranges(&file, 0, sm.size, local);
        self.release_file(file);
        Ok(())
    }

    /// Writes a whole regular file into `dfd` (created or truncated) and finishes it: data, then
    /// fsync (when asked), metadata with the mtime last, then a checked close. The source is
    /// looked at again after it is read: if it changed meanwhile (size, mtime or ctime), it is
    /// written once more from its new version; if it changed again, the file is left without
    /// the source's mtime (so no pass takes it as finished) and `false` is returned.
    #[allow(clippy::too_many_arguments)]
    fn write_finish(
        &self,
        dst: BorrowedFd<'_>,
        name: &CStr,
        src: &OwnedFd,
        dfd: OwnedFd,
        sm: &Meta,
        created: Option<&Meta>,
        local: &mut Local,
    ) -> OpResult<bool> {
        let mut sm = *sm;
        for attempt in 0..2 {
            if attempt > 0 {
                sys::set_len(dfd.as_fd(), 0).op("truncate")?;
            }
            match self.write_whole(src, &dfd, &sm, local) {
                Ok(()) => {}
                // It shrank while read: a change, which the look below sees.
                Err((_, e)) if e.kind() == io::ErrorKind::UnexpectedEof => {}
                Err(e) => return Err(e),
            }
            let now = sys::fstat(src.as_fd()).op("stat-source")?;
            if !same_version(&sm, &now) {
                sm = now;
                continue;
            }
            return self.write_finish_meta(dst, name, src, dfd, &sm, created);
        }
        Ok(false)
    }

    /// Queues all but the first chunk of `[off, end)` and copies the first here.
    fn queue_ranges(&self, file: &Arc<SplitFile>, off: u64, end: u64, local: &mut Local) {
        let chunk = self.opts.split_threshold.max(1 << 20);
        let mut tasks = Vec::new();
        let mut pos = off + chunk.min(end - off);
        while pos < end {
            let len = chunk.min(end - pos);
            tasks.push(Task::Range {
                file: file.clone(),
                off: pos,
                len,
            });
            pos += len;
        }
        self.queue.push_all(tasks);
        self.copy_part(file, off, chunk.min(end - off), local);
    }

    fn copy_part(&self, file: &SplitFile, off: u64, len: u64, local: &mut Local) {
        if file.failed.load(Relaxed) {
            return;
        }
        match self.write_range(&file.src, &file.dst, &file.meta, off, len, local) {
            Ok(()) => {}
            // It shrank while read: `release_file` sees the change and reports it as such.
            Err((_, e)) if e.kind() == io::ErrorKind::UnexpectedEof => {}
            Err((op, e)) => {
                file.failed.store(true, Relaxed);
                if !file.reported.swap(true, Relaxed) {
                    self.fail(file.dir.rel.join(file.name.to_bytes()), op, &e);
                }
            }
        }
    }

    /// A `FileRange` scope: write one range of a file shared with other workers; no metadata.
    fn file_range(&self, dir: &Arc<DirNode>, name: &CStr, off: u64, len: u64, local: &mut Local) {
        let rel = || dir.rel.join(name.to_bytes());
        let mut run = || -> OpResult<()> {
            let sm = match sys::stat_at(dir.src.as_fd(), name).op("stat-source")? {
                Some(m) if m.kind == Kind::File => m,
                _ => {
                    return Err((
                        "stat-source",
                        io::Error::new(io::ErrorKind::NotFound, "not a regular file any more"),
                    ));
                }
            };
            let dst = dir.dst_fd(self.roots, local.mount).op("open-dest-dir")?;
            if let Some(dm) = sys::stat_at(dst, name).op("stat-dest")?
                && dm.kind == Kind::File
                && dm.size == sm.size
                && dm.mtime == sm.mtime
            {
                inc(&self.counts.files_skipped);
                return Ok(()); // finalized by an earlier run: the whole file is done
            }
            let src =
                sys::open_source_file(dir.src.as_fd(), name, &self.noatime).op("open-source")?;
            let dfd =
                sys::open_dest_file(dst, name, false, self.create_mode(&sm)).op("open-dest")?;
            if sys::fstat(dfd.as_fd()).op("stat-dest")?.size != sm.size {
                sys::set_len(dfd.as_fd(), sm.size).op("set-size")?;
            }
            let end = (off + len).min(sm.size);
            if off < end {
                let file = Arc::new(SplitFile {
                    dir: dir.clone(),
                    name: name.to_owned(),
                    meta: sm,
                    src,
                    dst: dfd,
                    failed: AtomicBool::new(false),
                    reported: AtomicBool::new(false),
                    data_only: true,
                });
                self.queue_ranges(&file, off, end, local);
                self.release_file(file);
            }
            Ok(())
        };
        if let Err((op, e)) = run() {
            self.fail(rel(), op, &e);
        }
    }

    /// A `Finalize` scope in the copy pass: the data is complete, set the metadata.
    ///
    /// The ranges were written by other workers, from the source as it was then; it may have
    /// changed since. So the data is compared in full before the file gets the source's mtime
    /// (which would make it look finished to every later pass), and written again if it differs.
    fn finalize_split(&self, dir: &Arc<DirNode>, name: &CStr, local: &mut Local) {
        let rel = || dir.rel.join(name.to_bytes());
        let mut run = || -> OpResult<Option<bool>> {
            let Some(sm) = sys::stat_at(dir.src.as_fd(), name).op("stat-source")? else {
                return Ok(None);
            };
            let dst = dir.dst_fd(self.roots, local.mount).op("open-dest-dir")?;
            let src =
                sys::open_source_file(dir.src.as_fd(), name, &self.noatime).op("open-source")?;
            let same = match sys::stat_at(dst, name).op("stat-dest")? {
                // Finalized already (an earlier run, or this phase run again): finished, like
                // any file with the source's size and mtime; the verifier reads it in full.
                Some(dm) if dm.kind == Kind::File && (dm.size, dm.mtime) == (sm.size, sm.mtime) => {
                    return Ok(Some(false));
                }
                Some(dm) if dm.kind == Kind::File && dm.size == sm.size => {
                    let dfd = sys::open_read(dst, name).op("open-dest")?;
                    same_content(&src, &dfd, sm.size, local).op("compare")?
                        && same_version(&sm, &sys::fstat(src.as_fd()).op("stat-source")?)
                }
                _ => false,
            };
            if !same {
                return self
                    .copy_entry_now(dir, name, &sm, local)
                    .map(|()| Some(true));
            }
            let dfd =
                sys::open_dest_file(dst, name, false, self.create_mode(&sm)).op("open-dest")?;
            Ok(Some(
                self.write_finish_meta(dst, name, &src, dfd, &sm, None)?,
            ))
        };
        match run() {
            Ok(Some(true)) => {
                inc(&self.counts.files_copied);
                inc(&self.progress.files);
            }
            Ok(Some(false)) => {
                inc(&self.counts.files_skipped);
                inc(&self.progress.files);
            }
            Ok(None) => self.vanished(rel()),
            Err((op, e)) => self.fail(rel(), op, &e),
        }
    }

    /// Finishes a file whose data is in place: fsync (when asked), metadata with the mtime
    /// last, then a checked close.
    fn write_finish_meta(
        &self,
        dst: BorrowedFd<'_>,
        name: &CStr,
        src: &OwnedFd,
        dfd: OwnedFd,
        sm: &Meta,
        created: Option<&Meta>,
    ) -> OpResult<bool> {
        if self.opts.fsync {
            sys::fsync(dfd.as_fd()).op("fsync")?;
        }
        self.set_file_meta(src, &dfd, sm, created)?;
        if let Err(e) = sys::close_checked(dfd) {
            // The write-back failed after the mtime was set: do not look finished.
            let _ = sys::touch_now_at(dst, name);
            return Err(("close", e));
        }
        Ok(true)
    }

    fn link_to(
        &self,
        dst: BorrowedFd<'_>,
        name: &CStr,
        first: Option<FirstLink>,
        local: &Local,
    ) -> OpResult<()> {
        let Some(first) = first else {
            return Err((
                "link",
                io::Error::other("the first link of this inode could not be copied"),
            ));
        };
        if let Some(dm) = sys::stat_at(dst, name).op("stat-dest")? {
            if dm.ino == first.dst_ino {
                inc(&self.counts.files_skipped);
                inc(&self.progress.files);
                return Ok(());
            }
            self.clear_way(dst, name)?;
        }
        let root = self.roots.dsts[local.mount].as_fd();
        sys::link_at(root, first.rel.as_bytes(), dst, name).op("link")?;
        inc(&self.counts.hardlinks);
        inc(&self.progress.files);
        Ok(())
    }

    /// Writes the whole data of a regular file (holes kept) into a freshly truncated destination.
    fn write_whole(
        &self,
        src: &OwnedFd,
        dst: &OwnedFd,
        sm: &Meta,
        local: &mut Local,
    ) -> OpResult<()> {
        if sm.looks_sparse() {
            sys::set_len(dst.as_fd(), sm.size).op("set-size")?;
        }
        self.write_range(src, dst, sm, 0, sm.size, local)
    }

    /// Copies `[off, off+len)`; for sparse sources only the data regions, leaving holes.
    /// Copies bytes `[off, off + len)`, within the job's byte rate when it has one (in pieces of
    /// a tenth of a second's worth, each waited for before it is written).
    fn copy_data(
        &self,
        src: &OwnedFd,
        dst: &OwnedFd,
        off: u64,
        len: u64,
        local: &mut Local,
    ) -> io::Result<u64> {
        let copy = |off, len, local: &mut Local| {
            sys::copy_range(
                src.as_fd(),
                dst.as_fd(),
                off,
                len,
                &mut local.buf,
                &self.use_cfr,
            )
        };
        let Some((t, piece)) = self
            .opts
            .throttle
            .as_deref()
            .and_then(|t| Some((t, t.piece()?)))
        else {
            return copy(off, len, local);
        };
        let mut done = 0;
        while done < len {
            let want = piece.min(len - done);
            t.bytes(want);
            let n = copy(off + done, want, local)?;
            done += n;
            if n < want {
                break; // the source shrank: the caller sees a short copy
            }
        }
        Ok(done)
    }

    fn write_range(
        &self,
        src: &OwnedFd,
        dst: &OwnedFd,
        sm: &Meta,
        off: u64,
        len: u64,
        local: &mut Local,
    ) -> OpResult<()> {
        let end = off + len;
        let mut written = 0u64;
        if sm.looks_sparse() {
            let mut pos = off;
            while pos < end {
                let Some((start, stop)) = sys::next_data(src.as_fd(), pos).op("seek-data")? else {
                    break;
                };
                if start >= end {
                    break;
                }
                let stop = stop.min(end);
                let n = self
                    .copy_data(src, dst, start, stop - start, local)
                    .op("write")?;
                written += n;
                if n < stop - start {
                    return Err((
                        "read",
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the source file shrank while being copied",
                        ),
                    ));
                }
                pos = stop;
            }
        } else {
            written = self.copy_data(src, dst, off, len, local).op("write")?;
            if written < len {
                return Err((
                    "read",
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the source file shrank while being copied",
                    ),
                ));
            }
        }
        self.counts.bytes_copied.fetch_add(written, Relaxed);
        self.progress.bytes_written.fetch_add(written, Relaxed);
        local.meter.add_bytes(written);
        self.progress.bytes.fetch_add(len, Relaxed);
        Ok(())
    }

    /// xattrs, owner, mode, then times last: once the mtime is set the file counts as done.
    /// The mode a new destination file is created with: its final permissions when they are
    /// preserved (so no separate chmod is needed), else the usual 0666 less the umask.
    fn create_mode(&self, sm: &Meta) -> u32 {
        if self.opts.preserve.mode {
            sm.perm & 0o777
        } else {
            0o666
        }
    }

    /// xattrs, owner, mode, then times last: once the mtime is set the file counts as done.
    /// `created`: this pass created the file and these are its attributes as created, so it
    /// has no xattrs yet and only the owner and mode that differ are set (on NFS each set is a
    /// round trip).
    fn set_file_meta(
        &self,
        src: &OwnedFd,
        dst: &OwnedFd,
        sm: &Meta,
        created: Option<&Meta>,
    ) -> OpResult<()> {
        if self.any_xattrs() {
            self.copy_xattrs(src.as_fd(), dst.as_fd(), created.is_some())?;
        }
        let p = &self.opts.preserve;
        let (mut owner, mut mode) = (self.owner, p.mode);
        if let Some(dm) = created {
            owner &= (dm.uid, dm.gid) != (sm.uid, sm.gid);
            // chown clears setuid and setgid, so those need the chmod after it.
            mode &= dm.perm != sm.perm || (owner && sm.perm & 0o6000 != 0);
        }
        sys::set_meta_fd(dst.as_fd(), sm, owner, mode, p.times).op("set-metadata")
    }

    /// Whether any class of extended attributes is still being copied.
    fn any_xattrs(&self) -> bool {
        [&self.xattrs_ok, &self.acls_ok, &self.security_ok]
            .iter()
            .any(|f| f.load(Relaxed))
    }

    /// The switch of the class `name` belongs to (`None`: a class never copied).
    fn xattr_switch(&self, name: &[u8]) -> Option<&AtomicBool> {
        match XattrClass::of(name)? {
            XattrClass::User => Some(&self.xattrs_ok),
            XattrClass::Acl => Some(&self.acls_ok),
            XattrClass::Security => Some(&self.security_ok),
        }
    }

    fn copy_xattrs(&self, src: BorrowedFd<'_>, dst: BorrowedFd<'_>, created: bool) -> OpResult<()> {
        let wanted = |n: &[u8]| self.xattr_switch(n).is_some_and(|f| f.load(Relaxed));
        let want = sys::xattrs(src, wanted).op("read-xattrs")?;
        let have = if created {
            Vec::new()
        } else {
            sys::xattrs(dst, wanted).op("read-dest-xattrs")?
        };
        for (k, _) in &have {
            if !want.iter().any(|(w, _)| w == k) {
                sys::remove_xattr(dst, k).op("remove-xattr")?;
            }
        }
        for (k, v) in &want {
            if have.iter().any(|(hk, hv)| hk == k && hv == v) {
                continue;
            }
            let Err(e) = sys::set_xattr(dst, k, v) else {
                continue;
            };
            // The destination (NFSv3, say) does not take this class of attribute: say so once,
            // then stop trying that class. Security labels may also be refused by policy.
            let unsupported = match sys::errno(&e) {
                Some(rustix::io::Errno::OPNOTSUPP) => true,
                Some(rustix::io::Errno::PERM | rustix::io::Errno::INVAL) => {
                    XattrClass::of(k) != Some(XattrClass::User)
                }
                _ => false,
            };
            if !unsupported {
                return Err(("set-xattr", e));
            }
            if let Some(switch) = self.xattr_switch(k)
                && switch.swap(false, Relaxed)
            {
                self.sink.record(ReportEntry {
                    path: RelPath::root(),
                    outcome: Outcome::Unsupported,
                    op: "set-xattr".into(),
                    error: Some(format!(
                        "the destination does not take {} ({e}); attributes of this kind are not copied",
                        String::from_utf8_lossy(k)
                    )),
                    errno: e.raw_os_error(),
                    mismatches: Vec::new(),
                    digest: None,
                    meta: None,
                });
            }
        }
        Ok(())
    }

    /// A forced copy that completes before returning (no split), for repairs.
    fn copy_entry_now(
        &self,
        dir: &Arc<DirNode>,
        name: &CStr,
        sm: &Meta,
        local: &mut Local,
    ) -> OpResult<()> {
        if sm.kind != Kind::File {
            return self.copy_entry(dir, name, sm, local, true);
        }
        let dst = dir.dst_fd(self.roots, local.mount).op("open-dest-dir")?;
        let src = sys::open_source_file(dir.src.as_fd(), name, &self.noatime).op("open-source")?;
        if let Some(dm) = sys::stat_at(dst, name).op("stat-dest")?
            && (dm.kind != Kind::File || (dm.nlink > 1 && sm.nlink == 1))
        {
            self.clear_way(dst, name)?;
        }
        let dfd = sys::open_dest_file(dst, name, true, self.create_mode(sm)).op("open-dest")?;
        if self.write_finish(dst, name, &src, dfd, sm, None, local)? {
            Ok(())
        } else {
            Err((
                "read",
                io::Error::other("the source file changed while it was read, twice"),
            ))
        }
    }

    // ---- repairs, for the verifier (`verify.rs`, through `repair.rs`) ----------------------

    /// Makes `rel` in the destination equal to the source through `mount`, before returning
    /// (nothing queued, never split). `diffs` (what the verifier found) decide between
    /// re-creating the entry and setting its metadata only (`repair::needs_data`). `link_to`: for
    /// a file with several links, a path whose destination inode this one must share.
    /// Creating or replacing an entry moves its directory's times: they are put back, so that a
    /// repair never spoils a directory that was verified (or settled) before it.
    pub(crate) fn repair_path(
        &self,
        rel: &RelPath,
        diffs: &[Mismatch],
        link_to: Option<&RelPath>,
        mount: usize,
    ) -> OpResult<()> {
        if rel.is_root() {
            // Only the root's metadata can differ: it exists (setup made it).
            let src = self.roots.src.as_fd();
            let sm = sys::fstat(src).op("stat-source")?;
            return self.repair_dir_meta(src, self.roots.dsts[mount].as_fd(), &sm);
        }
        let dir = self.open_repair_parent(rel, mount)?;
        let done = self.repair_entry(&dir, rel, diffs, link_to, mount);
        self.release_dir(dir);
        done
    }

    fn repair_entry(
        &self,
        dir: &Arc<DirNode>,
        rel: &RelPath,
        diffs: &[Mismatch],
        link_to: Option<&RelPath>,
        mount: usize,
    ) -> OpResult<()> {
        let name = cstr(rel.file_name());
        let Some(sm) = sys::stat_at(dir.src.as_fd(), &name).op("stat-source")? else {
            let gone = io::Error::new(io::ErrorKind::NotFound, "gone from the source");
            return Err(("stat-source", gone));
        };
        let dst = dir.dst_fd(self.roots, mount).op("open-dest-dir")?;
        let p = &self.opts.preserve;
        if !crate::repair::needs_data(sm.kind, diffs) {
            return match sm.kind {
                Kind::Dir => {
                    let src = sys::open_dir_at(dir.src.as_fd(), &name).op("open-source-dir")?;
                    let dfd = sys::open_dir_at(dst, &name).op("open-dest-dir")?;
                    self.repair_dir_meta(src.as_fd(), dfd.as_fd(), &sm)
                }
                Kind::File => {
                    let src = sys::open_source_file(dir.src.as_fd(), &name, &self.noatime)
                        .op("open-source")?;
                    // Read-only is enough for fchmod, fchown, futimens and xattrs, and never
                    // creates the file.
                    let dfd = sys::open_read(dst, &name).op("open-dest")?;
                    self.set_file_meta(&src, &dfd, &sm, None)
                }
                _ => sys::set_meta_at(dst, &name, &sm, self.owner, p.mode, p.times)
                    .op("set-metadata"),
            };
        }
        let is_dev = matches!(sm.kind, Kind::CharDev | Kind::BlockDev);
        if sm.kind == Kind::Socket
            || ((sm.kind == Kind::Fifo || is_dev) && !p.specials)
            || (is_dev && !sys::is_root())
        {
            let why = "not copied by design (sockets; special files when not preserved; device nodes without root)";
            return Err((
                "create-special",
                io::Error::new(io::ErrorKind::Unsupported, why),
            ));
        }
        let before = sys::fstat(dst).op("stat-dest-dir")?;
        let mut local = Local {
            mount,
            meter: self.progress.mount(&self.roots.names[mount]),
            buf: Vec::new(),
            dirbuf: Vec::new(),
        };
        match sm.kind {
            Kind::Dir => {
                // Its contents and then its metadata are the verifier's next steps.
                if sys::stat_at(dst, &name)
                    .op("stat-dest")?
                    .is_some_and(|m| m.kind != Kind::Dir)
                {
                    self.clear_way(dst, &name)?;
                }
                sys::ensure_dir(dst, &name, sm.perm | 0o700).op("create-dir")?;
            }
            Kind::File => {
                let root = self.roots.dsts[mount].as_fd();
                let first = match link_to {
                    Some(l) => sys::stat_at(root, &cstr(l.as_bytes()))
                        .op("stat-dest")?
                        .filter(|m| m.kind == Kind::File),
                    None => None,
                };
                let here = sys::stat_at(dst, &name).op("stat-dest")?;
                match (first, link_to) {
                    (Some(f), Some(l)) if here.is_none_or(|h| h.ino != f.ino) => {
                        self.clear_way(dst, &name)?;
                        sys::link_at(root, l.as_bytes(), dst, &name).op("link")?;
                    }
                    // Rewritten in place: every link of a shared inode gets the data.
                    _ => self.copy_entry_now(dir, &name, &sm, &mut local)?,
                }
            }
            _ => self.copy_entry(dir, &name, &sm, &mut local, true)?,
        }
        if p.times {
            sys::set_meta_fd(dst, &before, false, false, true).op("set-dir-metadata")?;
        }
        Ok(())
    }

    /// A directory's xattrs, owner, mode and times, from the source's.
    fn repair_dir_meta(&self, src: BorrowedFd<'_>, dst: BorrowedFd<'_>, sm: &Meta) -> OpResult<()> {
        if self.any_xattrs() {
            self.copy_xattrs(src, dst, false)?;
        }
        let p = &self.opts.preserve;
        sys::set_meta_fd(dst, sm, self.owner, p.mode, p.times).op("set-dir-metadata")
    }

    /// The parent directory of `rel` on both sides (not owned: its metadata is left alone),
    /// creating missing destination ancestors, which get their metadata from their own checks.
    fn open_repair_parent(&self, rel: &RelPath, mount: usize) -> OpResult<Arc<DirNode>> {
        let parent = rel.parent();
        let mut src = sys::reopen_dir(self.roots.src.as_fd()).op("open-source-dir")?;
        let mut meta = sys::fstat(src.as_fd()).op("stat-source")?;
        let mut dst = sys::reopen_dir(self.roots.dsts[mount].as_fd()).op("open-dest-dir")?;
        for comp in parent.components() {
            let name = cstr(comp);
            src = sys::open_dir_at(src.as_fd(), &name).op("open-source-dir")?;
            meta = sys::fstat(src.as_fd()).op("stat-source")?;
            sys::ensure_dir(dst.as_fd(), &name, meta.perm | 0o700).op("create-dir")?;
            dst = sys::open_dir_at(dst.as_fd(), &name).op("open-dest-dir")?;
        }
        let name = cstr(parent.file_name());
        let node = DirNode::new(self.roots, None, parent, name, src, meta, false);
        let _ = node.dst[mount].set(dst);
        Ok(Arc::new(node))
    }
}

/// Errors after which a destination takes no more work: full, over quota, read-only, or its
/// handles gone stale (the export was replaced). Going on would only turn every remaining file
/// into the same failure. Source-side operations do not count: ESTALE there is one entry's.
/// Reads both files in full and compares them (the settle step's check of a file written in
/// ranges by several workers, before it gets its final mtime).
fn same_content(a: &OwnedFd, b: &OwnedFd, size: u64, local: &mut Local) -> io::Result<bool> {
    const CHUNK: usize = 1 << 20;
    local.buf.resize(2 * CHUNK, 0);
    let (x, y) = local.buf.split_at_mut(CHUNK);
    let mut off = 0u64;
    loop {
        let n = sys::pread_full(a.as_fd(), x, off)?;
        let m = sys::pread_full(b.as_fd(), &mut y[..n.clamp(1, CHUNK)], off)?;
        if n != m || x[..n] != y[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(off == size);
        }
        off += n as u64;
    }
}

fn is_destination_gone(op: &str, e: &io::Error) -> bool {
    let source_side = matches!(
        op,
        "open-source"
            | "stat-source"
            | "open-source-dir"
            | "list-dir"
            | "read-link"
            | "read-xattrs"
            | "read"
    );
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT | libc::EROFS) => true,
        Some(libc::ESTALE) => !source_side,
        _ => false,
    }
}

/// The same version of a source file: size, mtime and ctime unchanged (ctime cannot be set by
/// a user, so a rewrite that put the size and mtime back still shows).
fn same_version(before: &Meta, after: &Meta) -> bool {
    (before.size, before.mtime, before.ctime, before.ino)
        == (after.size, after.mtime, after.ctime, after.ino)
}

impl DirNode {
    /// Whether a thread on `mount` may start another batch here (`MAX_BATCHES_PER_DIR`).
    fn admits(&self, mount: usize) -> bool {
        self.busy[mount].load(Relaxed) < MAX_BATCHES_PER_DIR
    }

    fn new(
        roots: &Roots,
        parent: Option<Arc<DirNode>>,
        rel: RelPath,
        name: CString,
        src: OwnedFd,
        meta: Meta,
        own_meta: bool,
    ) -> Self {
        let dst = (0..roots.dsts.len()).map(|_| OnceLock::new()).collect();
        DirNode {
            parent,
            rel,
            name,
            src,
            meta,
            busy: (0..roots.dsts.len()).map(|_| AtomicU32::new(0)).collect(),
            dst,
            own_meta,
            fresh: false,
            taken: AtomicBool::new(false),
            failed: AtomicBool::new(false),
        }
    }

    /// This directory in the destination, through `mount`; opened on first use.
    fn dst_fd(&self, roots: &Roots, mount: usize) -> io::Result<BorrowedFd<'_>> {
        if let Some(fd) = self.dst[mount].get() {
            return Ok(fd.as_fd());
        }
        let fd = match &self.parent {
            Some(p) => sys::open_dir_at(p.dst_fd(roots, mount)?, &self.name)?,
            None => {
                let mut fd = sys::reopen_dir(roots.dsts[mount].as_fd())?;
                for c in self.rel.components() {
                    fd = sys::open_dir_at(fd.as_fd(), &cstr(c))?;
                }
                fd
            }
        };
        // Another thread may have raced us here; either descriptor is as good.
        let _ = self.dst[mount].set(fd);
        Ok(self.dst[mount].get().expect("just set").as_fd())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Condvar, Mutex};

    use super::{Crew, FASTER, OtherMount, Popped, Queue, QueueState, Task, defers};
    use crate::job::Scope;

    /// A queue over `mounts` mounts that may run `max` threads, its first thread per mount
    /// started.
    fn queue<'a>(mounts: usize, max: usize) -> Queue<'a> {
        let mut st = QueueState {
            tasks: Vec::new(),
            wide: Default::default(),
            busy: 0,
            threads_on: vec![0; mounts],
            running_on: vec![0; mounts],
            crew: Crew::new(max),
        };
        for _ in 0..mounts {
            st.add_thread();
            st.crew.begun();
        }
        Queue {
            state: Mutex::new(st),
            cv: Condvar::new(),
            idle: AtomicUsize::new(0),
        }
    }

    /// Pops a task on mount 0; returns the mount of the thread to start, if one.
    fn pop(q: &Queue<'_>) -> Option<usize> {
        match q.try_pop(0, &[None, None, None]) {
            Popped::Task(_, grow) => grow,
            _ => panic!("a task is queued"),
        }
    }

    #[test]
    fn threads_start_as_tasks_queue_up_in_turn_over_the_mounts_and_never_beyond_the_limit() {
        let scope = Scope::Tree(ingest_path::RelPath::root());
        let q = queue(3, 7);
        // The last task queued: nothing left for another thread.
        q.push(Task::Scope(&scope));
        assert_eq!(pop(&q), None);
        // Twenty queued: each pop that leaves more than the threads about to take one (none
        // yet) starts one, the mounts in turn, until the walk has its seven.
        q.push_all((0..20).map(|_| Task::Scope(&scope)));
        let started: Vec<_> = (0..6).map(|_| pop(&q)).collect();
        assert_eq!(
            started,
            [Some(0), Some(1), Some(2), Some(0), None, None],
            "threads 4 to 7, then the limit"
        );
        let st = q.state.lock().unwrap();
        assert_eq!(
            (st.crew.started(), st.threads_on.clone()),
            (7, vec![3, 2, 2])
        );
    }

    fn other(idle: usize, free: usize, per_unit: Option<f64>) -> OtherMount {
        OtherMount {
            idle,
            free,
            per_unit,
            may_take: true,
        }
    }

    #[test]
    fn a_slow_mount_leaves_the_last_tasks_to_free_threads_of_a_faster_one() {
        let fast = Some(0.002);
        let slow = Some(0.002 * FASTER);
        // As many tasks as the faster mount's free threads with permits can start: leave them.
        assert!(defers(slow, 2, [other(3, 2, fast)]));
        assert!(defers(slow, 3, [other(2, 5, fast), other(1, 1, fast)]));
        // More than that: every mount works.
        assert!(!defers(slow, 3, [other(3, 2, fast)]));
        assert!(!defers(slow, 3, [other(2, 5, fast)]));
    }

    #[test]
    fn nothing_is_left_to_a_mount_that_cannot_start_it_now_or_is_not_known_faster() {
        let fast = Some(0.002);
        let slow = Some(0.01);
        // No free thread, no permit, or no task it may take (a directory at its limit there).
        assert!(!defers(slow, 1, [other(0, 4, fast)]));
        assert!(!defers(slow, 1, [other(4, 0, fast)]));
        assert!(!defers(
            slow,
            1,
            [OtherMount {
                may_take: false,
                ..other(4, 4, fast)
            }]
        ));
        // Alike in speed (paces wobble with the task mix): never.
        assert!(!defers(Some(0.003), 1, [other(4, 4, Some(0.002))]));
        // A pace not known, on either side: no comparison.
        assert!(!defers(None, 1, [other(4, 4, fast)]));
        assert!(!defers(slow, 1, [other(4, 4, None)]));
        // No other mount at all.
        assert!(!defers(slow, 1, []));
    }
}
