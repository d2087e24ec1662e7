//! The verifier: proves that the destination equals the source, in both directions, with code
//! of its own.
//!
//! It shares nothing with the copy's walk but the system-call wrappers (`sys.rs`) and the mounts'
//! permits (how many operations go at once, nothing of what is done), so that a bug in the copy
//! (a skip rule, a missed entry) cannot hide itself from the check meant to catch it:
//!
//! - Its own parallel walk: up to `opts.threads` threads (at least one; started as tasks queue
//!   up, by the same rule as the copy's, [`crate::crew`]), thread `i` reading the
//!   destination through mount `i % mounts`, sharing one LIFO queue so the walk stays depth
//!   first. Memory is bounded by the directories in progress (each holds its descriptors and,
//!   while it is being listed, its two listings), never by the size of the tree. The one map
//!   that grows is that of multi-linked source inodes seen (as in the copy).
//! - Both directions: each directory is listed on both sides and the byte-sorted listings are
//!   merged. A name only in the source is [`Mismatch::Missing`]; a name only in the destination
//!   is [`Mismatch::Extraneous`], reported and never deleted (nor walked into: one entry says it).
//! - No skip rules: multi-linked files are checked wherever they are met (`opts.multilinked` is
//!   ignored); a path in both a `LinkGroup` and a `Tree` is simply checked twice. The one thing
//!   not expected in the destination is what the copy never makes by design (sockets, device
//!   nodes without root, special files when not preserved): the copy reports those as
//!   unsupported, so the verifier says nothing of them unless the destination has the name.
//! - What is compared: type (and device numbers), size of regular files, mtime (`preserve.times`;
//!   every kind), mode (`preserve.mode`; not symlinks), owner (`preserve.owner`, only as root),
//!   symlink targets and hard links (every path of one multi-linked source inode must be one
//!   destination inode, and a destination file must not share its inode when its source does
//!   not): what a stat shows, so a metadata verify costs one stat per entry and side. In
//!   [`VerifyMode::Checksum`], which opens every file anyway, also the extended attributes the
//!   copy keeps (regular files and directories): `user.*` (`preserve.xattrs`), ACLs
//!   (`preserve.acls`), `security.*` (`preserve.xattrs`, as root). (Comparing them in metadata
//!   mode cost an open, a listxattr and a close per file and side: 17% of a small-file copy.)
//!   In [`VerifyMode::Checksum`], and for every `Finalize` scope whatever
//!   the mode (nothing else proves that all of a split file's ranges were written), both sides'
//!   contents are read in full and compared by BLAKE3 digest; the destination is read with
//!   `O_DIRECT` (or after `POSIX_FADV_DONTNEED` where the file system refuses it), so that this
//!   client's page cache cannot answer for the server.
//! - A directory's own metadata is checked after its contents (post-order), so that repairs
//!   inside it come first; each repair puts its directory's times back.
//!
//! The verifier itself never writes. Differences go to a [`Repair`] (the engine's, in
//! `repair.rs`), after which the entry is compared again here: equal is `Outcome::Repaired`,
//! still different `Outcome::Mismatched`, a failed repair `Outcome::Failed`. Without a repairer
//! (report-only) every difference is an `Outcome::Mismatched` entry.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use ingest_path::RelPath;

use crate::concurrency::{Gate, MountLimits};
use crate::crew::{self, Crew};
use crate::engine::Roots;
use crate::job::{Options, Scope, VerifyMode};
use crate::progress::Progress;
use crate::report::{EntryMeta, Mismatch, Outcome, ReportEntry, ReportSink, VerifyCounts};
use crate::sys::{self, Kind, Meta, Op, OpResult, cstr};

/// Fixes one destination entry the verifier found different. The verifier stays read-only:
/// every write of the verify pass goes through this.
pub(crate) trait Repair: Sync {
    /// Make `rel` in the destination equal to the source: re-copy its data (anything but
    /// mode/owner/xattrs/dir-mtime differing) or fix metadata only; then put the parent
    /// directory's times back. `link_to`: for a file with several links, a path already checked
    /// whose destination inode `rel` must share. `mount`: the mount this thread writes through.
    fn repair(
        &self,
        rel: &RelPath,
        diffs: &[Mismatch],
        link_to: Option<&RelPath>,
        mount: usize,
    ) -> Result<(), (&'static str, io::Error)>;
}

/// Checks `scopes` of the destination against the source; with a repairer, fixes what differs.
pub(crate) fn verify(
    scopes: &[Scope],
    opts: &Options,
    roots: &Roots,
    progress: &Progress,
    sink: &dyn ReportSink,
    repair: Option<&dyn Repair>,
    limits: &MountLimits,
) -> VerifyCounts {
    let v = Verifier {
        opts,
        roots,
        progress,
        sink,
        repair,
        checksum: opts.verify == VerifyMode::Checksum,
        owner: opts.preserve.owner && sys::is_root(),
        xattrs: AtomicBool::new(
            opts.verify == VerifyMode::Checksum && (opts.preserve.xattrs || opts.preserve.acls),
        ),
        noatime: AtomicBool::new(true),
        direct: AtomicBool::new(true),
        links: Mutex::new(HashMap::new()),
        counts: Counts::default(),
        queue: Queue {
            state: Mutex::new(QueueState {
                tasks: Vec::new(),
                busy: 0,
                crew: Crew::new(opts.threads.max(1)),
            }),
            cv: Condvar::new(),
        },
    };
    v.run(scopes, limits);
    v.totals()
}

/// Bytes per read when hashing; direct reads also need the buffer and offsets aligned.
const CHUNK: usize = 1 << 20;
const ALIGN: usize = 4096;

/// The first checked path of a multi-linked source inode and its destination inode.
struct Anchor {
    rel: RelPath,
    dst_ino: u64,
}

/// One multi-linked source inode. Its paths are checked (and repaired) one at a time under this
/// lock, so that which path is the anchor never changes under a comparison or a repair.
type LinkSlot = Arc<Mutex<Option<Anchor>>>;

struct Verifier<'a> {
    opts: &'a Options,
    roots: &'a Roots,
    progress: &'a Progress,
    sink: &'a dyn ReportSink,
    repair: Option<&'a dyn Repair>,
    checksum: bool,
    owner: bool,
    /// Xattrs are compared (preserved, and the destination has them).
    xattrs: AtomicBool,
    noatime: AtomicBool,
    /// The destination accepts `O_DIRECT` (so far).
    direct: AtomicBool,
    /// Source (dev, inode) → its slot, for inodes with more than one link.
    links: Mutex<HashMap<(u64, u64), LinkSlot>>,
    counts: Counts,
    queue: Queue<'a>,
}

#[derive(Default)]
struct Counts {
    checked: AtomicU64,
    matched: AtomicU64,
    missing: AtomicU64,
    mismatched: AtomicU64,
    extraneous: AtomicU64,
    repaired: AtomicU64,
    errors: AtomicU64,
    unrepaired: AtomicU64,
    differing_bytes: AtomicU64,
    extraneous_entries: AtomicU64,
    content_unchanged: AtomicU64,
    by_kind: Mutex<BTreeMap<Mismatch, u64>>,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

enum Task<'a> {
    Scope(&'a Scope),
    /// A subdirectory to walk. `in_dst`: its parent's destination listing has the name.
    Dir {
        parent: Arc<Node>,
        name: CString,
        in_dst: bool,
    },
    /// Non-directory entries (and, when not recursing, directories) to compare, each with
    /// whether the destination listing has it.
    Batch {
        dir: Arc<Node>,
        items: Vec<(CString, bool)>,
    },
}

/// A directory in progress. Every task holds an `Arc` to it; the last one released checks the
/// directory's own metadata (post-order) and releases its parent.
struct Node {
    parent: Option<Arc<Node>>,
    rel: RelPath,
    name: CString,
    src: OwnedFd,
    meta: Meta,
    /// The destination directory through each mount, opened when a thread on that mount needs it.
    dst: Vec<OnceLock<OwnedFd>>,
    /// This walk checks the directory's own metadata (not so for a scope's name range that does
    /// not start at the beginning, nor for the parent of a path a scope names).
    own: bool,
    /// Subdirectories are walked; otherwise only checked to exist as directories (their own
    /// `Tree` scopes walk them).
    recurse: bool,
    /// What the first look found wrong with the directory itself (`Missing` or `Type`): found
    /// before its contents, so that a repair can make it before they are repaired into it.
    first: Vec<Mismatch>,
    /// That repair failed.
    make_failed: Option<(&'static str, io::Error)>,
}

/// Whether an error opening a path means it is not there as a directory.
fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
    )
}

impl Node {
    /// This directory in the destination through `mount`; `None` when it is not there (yet:
    /// a repair may make it, so absence is not remembered).
    fn dst_fd(&self, roots: &Roots, mount: usize) -> io::Result<Option<BorrowedFd<'_>>> {
        if let Some(fd) = self.dst[mount].get() {
            return Ok(Some(fd.as_fd()));
        }
        let opened = match &self.parent {
            Some(p) => match p.dst_fd(roots, mount)? {
                Some(pfd) => sys::open_dir_at(pfd, &self.name),
                None => return Ok(None),
            },
            None => (|| {
                let mut fd = sys::reopen_dir(roots.dsts[mount].as_fd())?;
                for c in self.rel.components() {
                    fd = sys::open_dir_at(fd.as_fd(), &cstr(c))?;
                }
                Ok(fd)
            })(),
        };
        match opened {
            Ok(fd) => {
                // Another thread may have raced us here; either descriptor is as good.
                let _ = self.dst[mount].set(fd);
                Ok(self.dst[mount].get().map(|fd| fd.as_fd()))
            }
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Per-thread state: the mount this thread reads through and its buffers.
struct Local {
    mount: usize,
    /// The mount's meter: long reads through it say it still answers.
    meter: Arc<crate::MountMeter>,
    buf: Vec<u8>,
    /// The largest direct read so far and `ALIGN` more, of which an aligned part is read into.
    dbuf: Vec<u8>,
    dirbuf: Vec<MaybeUninit<u8>>,
}

impl Local {
    fn direct_buf(&mut self, len: usize) -> &mut [u8] {
        if self.dbuf.len() < len + ALIGN {
            self.dbuf.resize(len + ALIGN, 0);
        }
        let start = self.dbuf.as_ptr().align_offset(ALIGN);
        &mut self.dbuf[start..start + len]
    }
}

/// A LIFO of tasks (depth first).
struct Queue<'a> {
    state: Mutex<QueueState<'a>>,
    cv: Condvar,
}

struct QueueState<'a> {
    tasks: Vec<Task<'a>>,
    /// Tasks running.
    busy: usize,
    /// The threads, started as tasks queue up (see [`crate::crew`]); its `waiting` are those
    /// waiting in [`Queue::pop`].
    crew: Crew,
}

impl<'a> Queue<'a> {
    fn push_all(&self, tasks: impl IntoIterator<Item = Task<'a>>) {
        let mut st = self.state.lock().unwrap();
        let before = st.tasks.len();
        st.tasks.extend(tasks);
        let added = st.tasks.len() - before;
        drop(st);
        match added {
            0 => {}
            1 => self.cv.notify_one(),
            _ => self.cv.notify_all(),
        }
    }

    /// The newest task, with the index of one more thread to start if the crew wants one (see
    /// [`Crew::grow`]), or `None` once the queue is empty and no task is running (none can add
    /// more).
    fn pop(&self) -> Option<(Task<'a>, Option<usize>)> {
        let mut st = self.state.lock().unwrap();
        loop {
            if let Some(t) = st.tasks.pop() {
                st.busy += 1;
                let queued = st.tasks.len();
                return Some((t, st.crew.grow(queued)));
            }
            if st.busy == 0 {
                self.cv.notify_all();
                return None;
            }
            st.crew.waiting += 1;
            st = self.cv.wait(st).unwrap();
            st.crew.waiting -= 1;
        }
    }

    /// A thread started: it no longer counts as about to take a task (see [`Crew::begun`]).
    fn started(&self) {
        self.state.lock().unwrap().crew.begun();
    }

    fn done(&self) {
        let mut st = self.state.lock().unwrap();
        st.busy -= 1;
        if st.busy == 0 && st.tasks.is_empty() {
            self.cv.notify_all();
        }
    }
}

/// What one look at an entry found.
#[derive(Default)]
struct Look {
    diffs: Vec<Mismatch>,
    /// BLAKE3 of the source's and the destination's content, when both were read.
    digest: Option<String>,
    dst_digest: Option<String>,
    /// The source entry's type, size and mtime (the audit trail's record).
    meta: Option<EntryMeta>,
}

impl Look {
    fn of(diffs: Vec<Mismatch>) -> Self {
        Look {
            diffs,
            ..Look::default()
        }
    }
}

impl<'a> Verifier<'a> {
    /// Before each task a thread takes a permit from its mount's gate in `limits`, which runs
    /// going on beside this one share (a worker checks two shards at a time).
    fn run(&self, scopes: &'a [Scope], limits: &MountLimits) {
        // Reversed so that the LIFO queue starts with the first (largest) scope.
        self.queue.push_all(scopes.iter().rev().map(Task::Scope));
        let mounts = self.roots.dsts.len();
        // One thread per mount to begin with (thread `i` reads through mount `i mod mounts`),
        // more as tasks queue up.
        let first: Vec<usize> = {
            let mut st = self.queue.state.lock().unwrap();
            (0..self.opts.threads.max(1).min(mounts))
                .map(|_| st.crew.add())
                .collect()
        };
        crew::run(first, &|i, start: &dyn Fn(usize)| {
            self.queue.started();
            let mount = i % mounts;
            let meter = self.progress.mount(&self.roots.names[mount]);
            let mut local = Local {
                mount,
                meter: meter.clone(),
                buf: Vec::new(),
                dbuf: Vec::new(),
                dirbuf: vec![MaybeUninit::uninit(); 64 << 10],
            };
            let gate = limits.gate(&self.roots.names[mount]);
            while let Some((task, more)) = self.queue.pop() {
                if let Some(j) = more {
                    start(j);
                }
                let _permit = gate.map(Gate::acquire);
                Gate::measure(gate, &meter, || self.handle(task, &mut local));
                self.queue.done();
            }
        });
    }

    fn totals(&self) -> VerifyCounts {
        let c = &self.counts;
        let g = |a: &AtomicU64| a.load(Relaxed);
        VerifyCounts {
            checked: g(&c.checked),
            matched: g(&c.matched),
            missing: g(&c.missing),
            mismatched: g(&c.mismatched),
            extraneous: g(&c.extraneous),
            repaired: g(&c.repaired),
            errors: g(&c.errors),
            unrepaired: g(&c.unrepaired),
            differing_bytes: g(&c.differing_bytes),
            content_unchanged: g(&c.content_unchanged),
            extraneous_entries: g(&c.extraneous_entries),
            by_kind: c.by_kind.lock().unwrap().clone(),
        }
    }

    /// Runs one task; returns the entries it handled, as the engine counts them (a directory
    /// listing counts one): the mount meters and the concurrency controller count in them.
    fn handle(&self, task: Task<'a>, local: &mut Local) -> u64 {
        match task {
            Task::Scope(scope) => self.scope(scope, local),
            Task::Dir {
                parent,
                name,
                in_dst,
            } => {
                let rel = parent.rel.join(name.to_bytes());
                let src = match sys::open_dir_at(parent.src.as_fd(), &name) {
                    Ok(fd) => fd,
                    // Gone from the source since it was listed.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        self.release(parent, local);
                        return 1;
                    }
                    Err(e) => {
                        self.fail(rel, "open-source-dir", &e);
                        self.release(parent, local);
                        return 1;
                    }
                };
                let dm = if in_dst {
                    parent
                        .dst_fd(self.roots, local.mount)
                        .op("open-dest-dir")
                        .and_then(|p| match p {
                            Some(p) => sys::stat_at(p, &name).op("stat-dest"),
                            None => Ok(None),
                        })
                } else {
                    Ok(None)
                };
                let made = sys::fstat(src.as_fd())
                    .op("stat-source")
                    .and_then(|meta| Ok((meta, dm?)));
                match made {
                    Ok((meta, dm)) => {
                        let node = self.node(Some(parent), rel, name, src, meta, dm, true, local);
                        self.list(Arc::new(node), None, local);
                    }
                    Err((op, e)) => {
                        self.fail(rel, op, &e);
                        self.release(parent, local);
                    }
                }
            }
            Task::Batch { dir, items } => {
                for (name, in_dst) in &items {
                    self.entry(&dir, name, *in_dst, local);
                }
                self.release(dir, local);
                return items.len().max(1) as u64;
            }
        }
        1
    }

    // ---- reporting -------------------------------------------------------------------------

    fn record(
        &self,
        path: RelPath,
        outcome: Outcome,
        error: Option<String>,
        mismatches: Vec<Mismatch>,
        (digest, meta): (Option<String>, Option<EntryMeta>),
    ) {
        self.sink.record(ReportEntry {
            path,
            outcome,
            op: "verify".into(),
            error,
            errno: None,
            mismatches,
            digest,
            meta,
        });
    }

    /// An entry that could not be compared (it is not counted as checked).
    fn fail(&self, path: RelPath, op: &str, e: &io::Error) {
        inc(&self.counts.errors);
        inc(&self.progress.failed);
        self.sink.record(ReportEntry::failed(path, op, e));
    }

    fn found(&self, diffs: &[Mismatch]) {
        if diffs.contains(&Mismatch::Missing) {
            inc(&self.counts.missing);
        } else {
            inc(&self.counts.mismatched);
        }
        let mut k = self.counts.by_kind.lock().unwrap();
        for d in diffs {
            *k.entry(*d).or_default() += 1;
        }
    }

    fn extraneous(&self, node: &Node, name: &CString, local: &mut Local) {
        let path = node.rel.join(name.to_bytes());
        // Another process's destination probe, there for a moment (see `setup::probe`): not
        // part of the tree. A source entry of that name is compared like any other.
        if path.parent().is_root() && crate::setup::is_probe_name(path.as_bytes()) {
            return;
        }
        if self.opts.mirror.is_some() {
            // What a mirror would delete with it (a dry run's figure): counted, read only.
            let n = node
                .dst_fd(self.roots, local.mount)
                .ok()
                .flatten()
                .and_then(|fd| {
                    let dir = sys::stat_at(fd, name).ok()??.kind == Kind::Dir;
                    crate::mirror::count_tree(fd, name, dir, &local.meter).ok()
                })
                .unwrap_or(1);
            self.counts.extraneous_entries.fetch_add(n, Relaxed);
        }
        inc(&self.progress.verified);
        inc(&self.counts.checked);
        inc(&self.counts.extraneous);
        *self
            .counts
            .by_kind
            .lock()
            .unwrap()
            .entry(Mismatch::Extraneous)
            .or_default() += 1;
        self.record(
            path,
            Outcome::Mismatched,
            Some(match self.opts.mirror {
                None => "in the destination only (never deleted)".into(),
                Some(_) => "in the destination only (not deleted by the mirror)".into(),
            }),
            vec![Mismatch::Extraneous],
            (None, None),
        );
    }

    /// Counts and reports one checked entry, repairing it when there is a repairer.
    /// `reported`: all the first look found (what is counted and listed); `now`: what still
    /// differs at this point (less than `reported` when the directory itself was made before its
    /// contents); `link_to`: for the repair of a multi-linked file; `again`: the second look.
    fn verdict(
        &self,
        rel: &RelPath,
        reported: Vec<Mismatch>,
        now: Look,
        link_to: Option<&RelPath>,
        local: &mut Local,
        again: &mut dyn FnMut(&mut Local) -> OpResult<Look>,
    ) {
        inc(&self.counts.checked);
        if reported.is_empty() {
            inc(&self.counts.matched);
            // The audit trail: every entry compared, with what it was (and, in a checksum
            // verify, what its content was proven to be).
            self.record(
                rel.clone(),
                Outcome::Matched,
                None,
                Vec::new(),
                (now.digest, now.meta),
            );
            return;
        }
        self.found(&reported);
        let Some(repairer) = self.repair else {
            inc(&self.counts.unrepaired);
            inc(&self.progress.failed);
            let mut why = "different; not repaired (report only)".to_string();
            if let Some(d) = &now.dst_digest
                && now.diffs.contains(&Mismatch::Content)
            {
                why.push_str(&format!("; the destination's content has BLAKE3 {d}"));
            }
            return self.record(
                rel.clone(),
                Outcome::Mismatched,
                Some(why),
                reported,
                (now.digest, now.meta),
            );
        };
        let after = if now.diffs.is_empty() {
            Ok(now)
        } else {
            repairer
                .repair(rel, &now.diffs, link_to, local.mount)
                .and_then(|()| again(local))
        };
        match after {
            Ok(l) if l.diffs.is_empty() => {
                inc(&self.counts.repaired);
                self.record(
                    rel.clone(),
                    Outcome::Repaired,
                    None,
                    reported,
                    (l.digest, l.meta),
                );
            }
            Ok(l) => {
                inc(&self.counts.errors);
                inc(&self.progress.failed);
                let why = format!("still different after the repair: {:?}", l.diffs);
                self.record(
                    rel.clone(),
                    Outcome::Mismatched,
                    Some(why),
                    reported,
                    (l.digest, l.meta),
                );
            }
            Err((op, e)) => {
                inc(&self.counts.errors);
                inc(&self.progress.failed);
                let mut entry = ReportEntry::failed(rel.clone(), op, &e);
                entry.mismatches = reported;
                self.sink.record(entry);
            }
        }
    }

    // ---- scopes and directories ------------------------------------------------------------

    fn scope(&self, scope: &'a Scope, local: &mut Local) {
        match scope {
            Scope::Tree(rel) => {
                if let Some(node) = self.open_scope(rel, true, true, local) {
                    self.list(node, None, local);
                }
            }
            // Several name ranges of one directory: the first one owns the directory's metadata.
            Scope::Entries {
                dir,
                from,
                to,
                subtrees,
            } => {
                if let Some(node) = self.open_scope(dir, from.is_none(), *subtrees, local) {
                    self.list(node, Some((from.as_ref(), to.as_ref())), local);
                }
            }
            // Its file's `Finalize` scope checks the whole file.
            Scope::FileRange { .. } => {}
            Scope::Finalize(file) => self.single(file, true, local),
            Scope::LinkGroup(paths) => {
                for path in paths {
                    self.single(path, false, local);
                }
            }
        }
    }

    /// A path named by a scope: compared on its own (`full`: its content whatever the mode).
    fn single(&self, rel: &RelPath, full: bool, local: &mut Local) {
        if rel.is_root() {
            return; // a file scope never names the root
        }
        let Some(dir) = self.open_scope(&rel.parent(), false, false, local) else {
            return;
        };
        let name = cstr(rel.file_name());
        match sys::stat_at(dir.src.as_fd(), &name) {
            // A file scope's path was in scope at the scan; its age may have moved since (the
            // copy then left it out too).
            Ok(Some(sm))
                if !self
                    .opts
                    .filter
                    .keeps(rel, sm.kind == Kind::Dir, sm.mtime.0) => {}
            Ok(Some(sm)) => self.check(&dir, &name, rel, &sm, true, full, local),
            Ok(None) => {} // gone from the source since it was planned
            Err(e) => self.fail(rel.clone(), "stat-source", &e),
        }
        self.release(dir, local);
    }

    /// Opens the directory `rel` of a scope. `own`: the scope checks its metadata (and so makes
    /// it first if it is missing).
    fn open_scope(
        &self,
        rel: &RelPath,
        own: bool,
        recurse: bool,
        local: &mut Local,
    ) -> Option<Arc<Node>> {
        let mut walked = RelPath::root();
        let opened = (|| -> OpResult<(OwnedFd, Meta)> {
            let mut src = sys::reopen_dir(self.roots.src.as_fd()).op("open-source-dir")?;
            for comp in rel.components() {
                walked = walked.join(comp);
                src = sys::open_dir_at(src.as_fd(), &cstr(comp)).op("open-source-dir")?;
            }
            let meta = sys::fstat(src.as_fd()).op("stat-source")?;
            Ok((src, meta))
        })();
        let (src, meta) = match opened {
            Ok(x) => x,
            Err((op, e)) => {
                self.fail(walked, op, &e);
                return None;
            }
        };
        // The directory's own state in the destination matters only to the scope that owns it.
        let dm = if !own {
            Ok(None)
        } else if rel.is_root() {
            sys::fstat(self.roots.dsts[local.mount].as_fd())
                .op("stat-dest")
                .map(Some)
        } else {
            (|| -> OpResult<Option<Meta>> {
                let mut fd =
                    sys::reopen_dir(self.roots.dsts[local.mount].as_fd()).op("open-dest-dir")?;
                for c in rel.parent().components() {
                    fd = match sys::open_dir_at(fd.as_fd(), &cstr(c)) {
                        Ok(fd) => fd,
                        Err(e) if is_absent(&e) => return Ok(None),
                        Err(e) => return Err(("open-dest-dir", e)),
                    };
                }
                sys::stat_at(fd.as_fd(), &cstr(rel.file_name())).op("stat-dest")
            })()
        };
        match dm {
            Ok(dm) => {
                let name = cstr(rel.file_name());
                let node = self.node(None, rel.clone(), name, src, meta, dm, own, local);
                Some(Arc::new(Node { recurse, ..node }))
            }
            Err((op, e)) => {
                self.fail(rel.clone(), op, &e);
                None
            }
        }
    }

    /// A directory about to be walked (whole: `recurse` set; a scope root may change that).
    /// `dm`: what the destination has under its name. When the walk owns it and it is not a
    /// directory there, the repairer makes it one first, so that its contents can be repaired
    /// into it.
    #[allow(clippy::too_many_arguments)]
    fn node(
        &self,
        parent: Option<Arc<Node>>,
        rel: RelPath,
        name: CString,
        src: OwnedFd,
        meta: Meta,
        dm: Option<Meta>,
        own: bool,
        local: &Local,
    ) -> Node {
        let first = match dm {
            _ if !own => Vec::new(),
            Some(m) if m.kind == Kind::Dir => Vec::new(),
            Some(_) => vec![Mismatch::Type],
            None => vec![Mismatch::Missing],
        };
        let mut make_failed = None;
        if let Some(r) = self.repair
            && !first.is_empty()
        {
            make_failed = r.repair(&rel, &first, None, local.mount).err();
        }
        Node {
            parent,
            rel,
            name,
            src,
            meta,
            dst: self.roots.dsts.iter().map(|_| OnceLock::new()).collect(),
            own,
            recurse: true,
            first,
            make_failed,
        }
    }

    /// Lists `node` on both sides (the names in `range`, if given), reports what only the
    /// destination has and queues the rest.
    fn list(
        &self,
        node: Arc<Node>,
        range: Option<(Option<&RelPath>, Option<&RelPath>)>,
        local: &mut Local,
    ) {
        let in_range = |name: &[u8]| match range {
            None => true,
            Some((from, to)) => {
                from.is_none_or(|f| name >= f.as_bytes()) && to.is_none_or(|t| name < t.as_bytes())
            }
        };
        // The user's filters, asked here on their own: a name they leave out is neither missing
        // nor extraneous, and an excluded directory is not walked. An entry of unknown type
        // is asked again in `entry`, where its type is known.
        let filter = &self.opts.filter;
        let keeps = |name: &CStr, kind: Option<Kind>| {
            filter.is_empty() || {
                let rel = node.rel.join(name.to_bytes());
                match kind {
                    Some(Kind::Dir) => filter.keeps_dir(&rel),
                    Some(_) => filter.keeps_path(&rel),
                    None => filter.keeps_dir(&rel) && filter.keeps_path(&rel),
                }
            }
        };
        let mut src: Vec<(CString, Option<Kind>, bool)> = Vec::new();
        let mut dst: Vec<CString> = Vec::new();
        let listed = (|| -> OpResult<()> {
            sys::list_dir(node.src.as_fd(), &mut local.dirbuf, |name, kind| {
                if in_range(name.to_bytes()) {
                    let kept = kind.is_none() || keeps(name, kind);
                    src.push((name.to_owned(), kind, kept));
                }
            })
            .op("list-dir")?;
            if let Some(fd) = node.dst_fd(self.roots, local.mount).op("open-dest-dir")? {
                sys::list_dir(fd, &mut local.dirbuf, |name, kind| {
                    if in_range(name.to_bytes()) && keeps(name, kind) {
                        dst.push(name.to_owned());
                    }
                })
                .op("list-dest-dir")?;
            }
            Ok(())
        })();
        if let Err((op, e)) = listed {
            self.fail(node.rel.clone(), op, &e);
            return self.release(node, local);
        }
        src.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        dst.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));

        let mut tasks: Vec<Task<'a>> = Vec::new();
        let mut items: Vec<(CString, bool)> = Vec::new();
        let mut d = dst.into_iter().peekable();
        for (name, kind, kept) in src {
            while let Some(extra) = d.next_if(|x| x.as_bytes() < name.as_bytes()) {
                self.extraneous(&node, &extra, local);
            }
            let in_dst = d.next_if(|x| x.as_bytes() == name.as_bytes()).is_some();
            if !kept {
                continue; // the destination's entry of that name is left out with it
            }
            if kind == Some(Kind::Dir) && node.recurse {
                tasks.push(Task::Dir {
                    parent: node.clone(),
                    name,
                    in_dst,
                });
            } else {
                // Entries of unknown type (no d_type) are sorted out by the batch's stat.
                items.push((name, in_dst));
            }
        }
        for extra in d {
            self.extraneous(&node, &extra, local);
        }
        let batch = self.opts.batch_files.max(1);
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            tasks.push(Task::Batch {
                dir: node.clone(),
                items: items.by_ref().take(batch).collect(),
            });
        }
        self.queue.push_all(tasks);
        self.release(node, local);
    }

    /// Drops a reference to a directory; the last one checks its own metadata, then releases
    /// its parent. Every `Arc<Node>` ends here, so exactly one caller finishes each directory.
    fn release(&self, node: Arc<Node>, local: &mut Local) {
        let mut next = Some(node);
        while let Some(arc) = next.take() {
            if let Some(mut node) = Arc::into_inner(arc) {
                if node.own {
                    self.finish(&mut node, local);
                }
                next = node.parent.take();
            }
        }
    }

    /// A directory's own metadata, once its contents are done.
    fn finish(&self, node: &mut Node, local: &mut Local) {
        inc(&self.progress.verified);
        let rel = node.rel.clone();
        if let Some((op, e)) = node.make_failed.take() {
            // Counted by what was found; the failed repair is the report line.
            inc(&self.counts.checked);
            self.found(&node.first);
            inc(&self.counts.errors);
            inc(&self.progress.failed);
            let mut entry = ReportEntry::failed(rel, op, &e);
            entry.mismatches = node.first.clone();
            return self.sink.record(entry);
        }
        if !node.first.is_empty() && self.repair.is_none() {
            // Report only: the directory is not there to look at; what was found stands.
            let first = node.first.clone();
            let mut same = |_: &mut Local| Ok(Look::of(node.first.clone()));
            return self.verdict(&rel, first.clone(), Look::of(first), None, local, &mut same);
        }
        let node = &*node;
        let mut look = |local: &mut Local| self.look_dir(node, local);
        match look(local) {
            Ok(now) => {
                // A directory made by a repair before its contents is reported as what was
                // found (missing, or not a directory); its metadata, set now, is part of that.
                let reported = match node.first.is_empty() {
                    true => now.diffs.clone(),
                    false => node.first.clone(),
                };
                self.verdict(&rel, reported, now, None, local, &mut look);
            }
            Err((op, e)) => self.fail(rel, op, &e),
        }
    }

    fn look_dir(&self, node: &Node, local: &mut Local) -> OpResult<Look> {
        let meta = Some(EntryMeta::of(&node.meta));
        let Some(fd) = node.dst_fd(self.roots, local.mount).op("open-dest-dir")? else {
            return Ok(Look {
                meta,
                ..Look::of(vec![Mismatch::Missing])
            });
        };
        let dm = sys::fstat(fd).op("stat-dest")?;
        let mut diffs = self.meta_diffs(&node.meta, &dm);
        if !diffs.contains(&Mismatch::Type) && self.xattrs_differ(node.src.as_fd(), fd)? {
            diffs.push(Mismatch::Xattrs);
        }
        Ok(Look {
            meta,
            ..Look::of(diffs)
        })
    }

    // ---- entries -----------------------------------------------------------------------------

    /// One listed entry that the source has.
    fn entry(&self, dir: &Arc<Node>, name: &CStr, in_dst: bool, local: &mut Local) {
        let rel = dir.rel.join(name.to_bytes());
        let sm = match sys::stat_at(dir.src.as_fd(), name) {
            Ok(Some(m)) => m,
            Ok(None) => return, // gone from the source since it was listed
            Err(e) => return self.fail(rel, "stat-source", &e),
        };
        let filter = &self.opts.filter;
        if !filter.is_empty() && !filter.keeps(&rel, sm.kind == Kind::Dir, sm.mtime.0) {
            return; // left out by the user's filters: the copy counted it as excluded
        }
        if sm.kind == Kind::Dir && dir.recurse {
            return self.queue.push_all([Task::Dir {
                parent: dir.clone(),
                name: name.to_owned(),
                in_dst,
            }]);
        }
        if !in_dst && !self.copied_by_design(&sm) {
            return; // the copy reported it as unsupported
        }
        self.check(dir, name, &rel, &sm, in_dst, false, local);
    }

    /// Whether the copy makes this kind of entry at all (see `copy_entry` in the engine).
    fn copied_by_design(&self, sm: &Meta) -> bool {
        let p = &self.opts.preserve;
        match sm.kind {
            Kind::Socket => false,
            Kind::Fifo => p.specials,
            Kind::CharDev | Kind::BlockDev => p.specials && sys::is_root(),
            _ => true,
        }
    }

    /// Compares one entry (a directory only as to its existence) and settles it. `in_dst`:
    /// the destination may have it (false: its listing does not, so it is missing without a
    /// look). `full`: compare the content whatever the mode.
    #[allow(clippy::too_many_arguments)]
    fn check(
        &self,
        dir: &Node,
        name: &CStr,
        rel: &RelPath,
        sm: &Meta,
        in_dst: bool,
        full: bool,
        local: &mut Local,
    ) {
        inc(&self.progress.verified);
        let slot = self.link_slot(sm);
        let mut anchor = slot.as_ref().map(|s| s.lock().unwrap());
        let first = if in_dst {
            self.look(dir, name, rel, sm, full, anchor.as_deref_mut(), local)
        } else {
            Ok(Look {
                meta: Some(EntryMeta::of(sm)),
                ..Look::of(vec![Mismatch::Missing])
            })
        };
        let now = match first {
            Ok(l) => l,
            Err((op, e)) => return self.fail(rel.clone(), op, &e),
        };
        // Another path of the same inode, already checked: a repair links to it.
        let link_to = anchor
            .as_deref()
            .and_then(Option::as_ref)
            .filter(|a| a.rel != *rel)
            .map(|a| a.rel.clone());
        let reported = now.diffs.clone();
        if sm.kind == Kind::File
            && link_to.is_none()
            && crate::repair::needs_data(sm.kind, &reported)
        {
            // What a copy of this entry would write (a dry run's estimate).
            self.counts.differing_bytes.fetch_add(sm.size, Relaxed);
        }
        let mut again =
            |local: &mut Local| self.look(dir, name, rel, sm, full, anchor.as_deref_mut(), local);
        self.verdict(rel, reported, now, link_to.as_ref(), local, &mut again);
    }

    /// The lock of a multi-linked source inode, when hard links are kept.
    fn link_slot(&self, sm: &Meta) -> Option<LinkSlot> {
        if sm.kind != Kind::File || sm.nlink < 2 || !self.opts.preserve.hardlinks {
            return None;
        }
        let mut map = self.links.lock().unwrap();
        Some(map.entry((sm.dev, sm.ino)).or_default().clone())
    }

    /// Everything that differs between a source entry and its destination.
    #[allow(clippy::too_many_arguments)]
    fn look(
        &self,
        dir: &Node,
        name: &CStr,
        rel: &RelPath,
        sm: &Meta,
        full: bool,
        anchor: Option<&mut Option<Anchor>>,
        local: &mut Local,
    ) -> OpResult<Look> {
        let mut look = self.look_at(dir, name, rel, sm, full, anchor, local)?;
        look.meta = Some(EntryMeta::of(sm));
        Ok(look)
    }

    #[allow(clippy::too_many_arguments)]
    fn look_at(
        &self,
        dir: &Node,
        name: &CStr,
        rel: &RelPath,
        sm: &Meta,
        full: bool,
        anchor: Option<&mut Option<Anchor>>,
        local: &mut Local,
    ) -> OpResult<Look> {
        let Some(dst) = dir.dst_fd(self.roots, local.mount).op("open-dest-dir")? else {
            return Ok(Look::of(vec![Mismatch::Missing]));
        };
        let Some(dm) = sys::stat_at(dst, name).op("stat-dest")? else {
            return Ok(Look::of(vec![Mismatch::Missing]));
        };
        if sm.kind == Kind::Dir {
            // Met by a name range that does not walk it: its own scope checks the rest.
            let d = if dm.kind == Kind::Dir {
                Vec::new()
            } else {
                vec![Mismatch::Type]
            };
            return Ok(Look::of(d));
        }
        let mut look = Look::of(self.meta_diffs(sm, &dm));
        if look.diffs.contains(&Mismatch::Type) {
            return Ok(look);
        }
        match sm.kind {
            Kind::Symlink => {
                let want = sys::read_link_at(dir.src.as_fd(), name).op("read-link")?;
                if sys::read_link_at(dst, name).op("read-dest-link")? != want {
                    look.diffs.push(Mismatch::LinkTarget);
                }
            }
            Kind::File => {
                self.look_file(dir, dst, name, rel, sm, &dm, full, anchor, &mut look, local)?
            }
            _ => {}
        }
        Ok(look)
    }

    /// The regular-file part of [`Self::look`]: hard links, xattrs and content.
    #[allow(clippy::too_many_arguments)]
    fn look_file(
        &self,
        dir: &Node,
        dst: BorrowedFd<'_>,
        name: &CStr,
        rel: &RelPath,
        sm: &Meta,
        dm: &Meta,
        full: bool,
        anchor: Option<&mut Option<Anchor>>,
        look: &mut Look,
        local: &mut Local,
    ) -> OpResult<()> {
        if self.opts.preserve.hardlinks {
            let split = match anchor {
                // The first path checked of a source inode anchors it; the others must be its
                // destination inode. A later look at the anchor itself follows a repair.
                Some(slot) => match slot {
                    Some(a) if a.rel == *rel => {
                        a.dst_ino = dm.ino;
                        false
                    }
                    Some(a) => a.dst_ino != dm.ino,
                    None => {
                        *slot = Some(Anchor {
                            rel: rel.clone(),
                            dst_ino: dm.ino,
                        });
                        false
                    }
                },
                // One link in the source: writing one destination path must not change another.
                None => dm.nlink > 1,
            };
            if split {
                look.diffs.push(Mismatch::HardLink);
            }
        }
        let mut content = (self.checksum || full) && sm.size == dm.size;
        // `verify.scope: Changed`: a file this pass did not write (its destination ctime is
        // older than the copy's start) and whose metadata matches is taken as the copy took it.
        if content
            && !full
            && look.diffs.is_empty()
            && self
                .opts
                .content_changed_since
                .is_some_and(|t| dm.ctime < t)
        {
            inc(&self.counts.content_unchanged);
            content = false;
        }
        let xattrs = self.xattrs.load(Relaxed);
        if !content && !xattrs {
            return Ok(());
        }
        let src = sys::open_source_file(dir.src.as_fd(), name, &self.noatime).op("open-source")?;
        let mut dfd = if content {
            self.open_dest_for_content(dst, name)?
        } else {
            (sys::open_read(dst, name).op("open-dest")?, false)
        };
        if xattrs && self.xattrs_differ(src.as_fd(), dfd.0.as_fd())? {
            look.diffs.push(Mismatch::Xattrs);
        }
        if content {
            let size = sm.size;
            let want = hash_buffered(src.as_fd(), &mut local.buf, size, None).op("read-source")?;
            let meter = local.meter.clone();
            let have = match dfd.1 {
                true => match hash_direct(dfd.0.as_fd(), local, size, &meter) {
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        // Opened with O_DIRECT but refused on read: read through the cache,
                        // emptied first, from now on.
                        self.direct.store(false, Relaxed);
                        dfd = self.open_dest_for_content(dst, name)?;
                        hash_buffered(dfd.0.as_fd(), &mut local.buf, size, Some(&meter))
                    }
                    r => r,
                },
                false => hash_buffered(dfd.0.as_fd(), &mut local.buf, size, Some(&meter)),
            }
            .op("read-dest")?;
            self.progress.verified_bytes.fetch_add(sm.size, Relaxed);
            if want != have {
                look.diffs.push(Mismatch::Content);
            }
            look.digest = Some(want.to_hex().to_string());
            look.dst_digest = Some(have.to_hex().to_string());
        }
        Ok(())
    }

    /// The destination file for a content read: `O_DIRECT` (true) while the file system takes
    /// it, else read through the cache after dropping what the cache holds of the file.
    fn open_dest_for_content(&self, dst: BorrowedFd<'_>, name: &CStr) -> OpResult<(OwnedFd, bool)> {
        if self.direct.load(Relaxed) {
            match sys::open_read_direct(dst, name) {
                Ok(fd) => return Ok((fd, true)),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.direct.store(false, Relaxed)
                }
                Err(e) => return Err(("open-dest", e)),
            }
        }
        let fd = sys::open_read(dst, name).op("open-dest")?;
        sys::drop_cached(fd.as_fd()).op("drop-dest-cache")?;
        Ok((fd, false))
    }

    /// Differences in the metadata the options preserve (not content, links or xattrs).
    fn meta_diffs(&self, sm: &Meta, dm: &Meta) -> Vec<Mismatch> {
        let p = &self.opts.preserve;
        if sm.kind != dm.kind
            || (matches!(sm.kind, Kind::CharDev | Kind::BlockDev) && sm.rdev != dm.rdev)
        {
            return vec![Mismatch::Type];
        }
        let mut d = Vec::new();
        if sm.kind == Kind::File && sm.size != dm.size {
            d.push(Mismatch::Size);
        }
        if p.times && sm.mtime != dm.mtime {
            d.push(Mismatch::Mtime);
        }
        // Symlinks have no mode of their own on Linux.
        if p.mode && sm.kind != Kind::Symlink && sm.perm != dm.perm {
            d.push(Mismatch::Mode);
        }
        if self.owner && (sm.uid, sm.gid) != (dm.uid, dm.gid) {
            d.push(Mismatch::Owner);
        }
        d
    }

    /// Whether the kept extended attributes differ (false when they are not compared). A
    /// destination without xattrs at all is said once, as the copy does, and they are not
    /// compared from then on.
    fn xattrs_differ(&self, src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> OpResult<bool> {
        if !self.xattrs.load(Relaxed) {
            return Ok(false);
        }
        let p = &self.opts.preserve;
        let kept = |name: &[u8]| match sys::XattrClass::of(name) {
            Some(sys::XattrClass::User) => p.xattrs,
            Some(sys::XattrClass::Acl) => p.acls,
            Some(sys::XattrClass::Security) => p.xattrs && sys::is_root(),
            None => false,
        };
        let want = sys::xattrs(src, kept).op("read-xattrs")?;
        match sys::xattrs_if_supported(dst, kept).op("read-dest-xattrs")? {
            Some(have) => Ok(have != want),
            None => {
                if self.xattrs.swap(false, Relaxed) {
                    self.sink.record(ReportEntry {
                        path: RelPath::root(),
                        outcome: Outcome::Unsupported,
                        op: "verify-xattrs".into(),
                        error: Some(
                            "the destination does not support extended attributes; they are not compared"
                                .into(),
                        ),
                        errno: Some(libc::EOPNOTSUPP),
                        mismatches: Vec::new(),
                        digest: None,
                        meta: None,
                    });
                }
                Ok(false)
            }
        }
    }
}

/// How much to read at a time from a file of `size` bytes (as its metadata said): all of it and
/// the end (a short read) in one read, up to [`CHUNK`], in whole [`ALIGN`] blocks. A thread's
/// buffer grows to the largest it needed and is zeroed only as it grows. With a whole `CHUNK`
/// for each file, a walk of small files spent more time filling and faulting in a fresh
/// megabyte per thread than hashing. The size only sizes the reads: both hashes read to the end
/// of the file, whatever its size now.
fn read_size(size: u64) -> usize {
    let whole = (size.min(CHUNK as u64) as usize + 1).next_multiple_of(ALIGN);
    whole.min(CHUNK)
}

/// BLAKE3 of a whole file read through the page cache (`size`: see [`read_size`]); each chunk
/// read is told to `answered` (the destination mount's meter).
fn hash_buffered(
    fd: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    size: u64,
    answered: Option<&crate::MountMeter>,
) -> io::Result<blake3::Hash> {
    let want = read_size(size);
    if buf.len() < want {
        buf.resize(want, 0);
    }
    let mut h = blake3::Hasher::new();
    let mut off = 0u64;
    loop {
        let n = sys::pread_full(fd, buf, off)?;
        if let Some(m) = answered {
            m.touch();
        }
        h.update(&buf[..n]);
        off += n as u64;
        if n < buf.len() {
            return Ok(h.finalize());
        }
    }
}

/// BLAKE3 of a whole file opened with `O_DIRECT`: aligned buffer, aligned offsets, whole
/// chunks; the last read comes back short (not a multiple of the alignment) or empty at the end.
fn hash_direct(
    fd: BorrowedFd<'_>,
    local: &mut Local,
    size: u64,
    answered: &crate::MountMeter,
) -> io::Result<blake3::Hash> {
    let buf = local.direct_buf(read_size(size));
    let mut h = blake3::Hasher::new();
    let mut off = 0u64;
    loop {
        let n = sys::pread_once(fd, buf, off)?;
        answered.touch();
        h.update(&buf[..n]);
        off += n as u64;
        if n == 0 || n % ALIGN != 0 {
            return Ok(h.finalize());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn a_read_takes_a_small_file_and_its_end_in_whole_blocks_up_to_a_chunk() {
        assert_eq!(read_size(0), ALIGN);
        assert_eq!(read_size(ALIGN as u64 - 1), ALIGN);
        // A file of whole blocks: one more, so that the read comes back short.
        assert_eq!(read_size(ALIGN as u64), 2 * ALIGN);
        assert_eq!(read_size(CHUNK as u64 - 1), CHUNK);
        assert_eq!(read_size(CHUNK as u64), CHUNK);
        assert_eq!(read_size(u64::MAX), CHUNK);
    }

    /// Whatever the size given (the file's, or stale: it grew or shrank since), both hashes
    /// read the whole file, with buffers left larger by an earlier file or not.
    #[test]
    fn both_hashes_read_to_the_end_whatever_the_size_said() {
        let dir = tempfile::tempdir().unwrap();
        let mut local = Local {
            mount: 0,
            meter: Arc::new(crate::MountMeter::default()),
            buf: Vec::new(),
            dbuf: Vec::new(),
            dirbuf: Vec::new(),
        };
        let meter = local.meter.clone();
        let sizes = [
            0,
            1,
            ALIGN - 1,
            ALIGN,
            ALIGN + 1,
            CHUNK - 1,
            CHUNK,
            CHUNK + ALIGN + 7,
        ];
        let mut direct_checked = 0;
        for (i, &len) in sizes.iter().enumerate() {
            let data: Vec<u8> = (0..len).map(|b| (b * 31 + i) as u8).collect();
            let path = dir.path().join(format!("f{i}"));
            std::fs::write(&path, &data).unwrap();
            let want = blake3::hash(&data);
            let dir_fd = std::fs::File::open(dir.path()).unwrap();
            let name = std::ffi::CString::new(format!("f{i}")).unwrap();
            for hint in [len as u64, 0, len as u64 / 2, len as u64 * 2 + 1] {
                let f = std::fs::File::open(&path).unwrap();
                let got = hash_buffered(f.as_fd(), &mut local.buf, hint, None).unwrap();
                assert_eq!(got, want, "buffered, {len} bytes, told {hint}");
                // O_DIRECT where the file system takes it (tmpfs does not).
                match sys::open_read_direct(dir_fd.as_fd(), &name) {
                    Ok(d) => {
                        let got = hash_direct(d.as_fd(), &mut local, hint, &meter).unwrap();
                        assert_eq!(got, want, "direct, {len} bytes, told {hint}");
                        direct_checked += 1;
                    }
                    Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EINVAL)),
                }
            }
        }
        eprintln!("direct reads checked: {direct_checked}");
    }
}
