//! The passthrough: every operation is done on the backing directory, after the emulated round
//! trip, inside the mount's capacity.
//!
//! A node IP of an NFS cache cluster answers each RPC after a network and server delay, and
//! serves a bounded number at once (nfsd threads); beyond that requests wait. Here each FUSE
//! request is given `meta_latency` (lookup, create, setattr, ...) or `data_latency` (read, write)
//! of one of `capacity` service slots, the one free soonest (see [`Slots`]), waits until that
//! time is up, then does the real operation. The FUSE session runs more threads than slots, so
//! excess requests queue on the slots, where they are counted.
//!
//! Inodes are the backing inodes (the root is FUSE inode 1); each remembers its parent and name,
//! so paths follow renames of directories. `forget` is ignored: the table grows with the files
//! seen, which is fine for a benchmark tool.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};
use serde::Serialize;

/// How one emulated node behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NodeConfig {
    /// Added to every metadata operation (lookup, getattr, setattr, create, mkdir, readdir, ...).
    pub meta_latency: Duration,
    /// Added to every read and write.
    pub data_latency: Duration,
    /// Operations served at once; more wait for a slot.
    pub capacity: usize,
    /// How long the kernel may cache names and attributes (an NFS client caches them too; zero
    /// would make every path component a round trip, which NFS clients avoid).
    pub ttl: Duration,
    /// Fault hook: from its N-th operation on (counting from 1), the node stops answering, as an
    /// NFS server that hangs behind a hard mount: every request waits until the node is
    /// unmounted. `None`: it always answers.
    pub stop_answering_at: Option<u64>,
    /// Fault hook: from its first request of this kind on (a FUSE request name, as in
    /// [`Stats::by_op`]: "unlink"), the node stops answering every request, as above. Stops a
    /// node at a step of a run (its first deletion) rather than at a count of operations.
    pub stop_answering_on: Option<&'static str>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            meta_latency: Duration::from_millis(1),
            data_latency: Duration::from_millis(1),
            capacity: 16,
            ttl: Duration::from_secs(1),
            stop_answering_at: None,
            stop_answering_on: None,
        }
    }
}

/// What a mount served, counted by the file system itself (not timed).
#[derive(Debug, Default)]
pub struct Stats {
    pub meta_ops: AtomicU64,
    pub data_ops: AtomicU64,
    /// Operations that found every slot busy and waited.
    pub queued_ops: AtomicU64,
    pub peak_in_service: AtomicUsize,
    pub peak_queued: AtomicUsize,
    /// Time operations held a service slot, summed (µs): each one's latency in the node's
    /// schedule. Over `capacity` × the run's wall time, how busy the node was.
    pub busy_us: AtomicU64,
    /// Operations by FUSE request name: where a tool's round trips go.
    pub by_op: Mutex<BTreeMap<&'static str, u64>>,
    /// Requests received so far (for [`NodeConfig::stop_answering_at`]).
    pub received: AtomicU64,
    /// Requests held unanswered because the node stopped answering.
    pub unanswered: AtomicU64,
    /// Set when the node is unmounted: held requests go on (to nowhere: the connection is gone).
    released: Mutex<bool>,
    release_cv: Condvar,
}

/// A copy of [`Stats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    pub meta_ops: u64,
    pub data_ops: u64,
    pub queued_ops: u64,
    pub peak_in_service: usize,
    pub peak_queued: usize,
    /// See [`Stats::busy_us`].
    pub busy_us: u64,
    pub by_op: BTreeMap<String, u64>,
    /// Requests held unanswered (see [`NodeConfig::stop_answering_at`]).
    pub unanswered: u64,
}

impl Stats {
    /// Lets requests held by a node that stopped answering go (called at unmount, so that the
    /// session's threads can end).
    pub fn release_held(&self) {
        *self.released.lock().unwrap() = true;
        self.release_cv.notify_all();
    }

    /// Holds a request of thread `tid` as a hung server would: until the node is unmounted
    /// (true: go on), or until the caller is killed (false). A hard NFS mount waits killably:
    /// SIGKILL ends the wait. A FUSE request already read by its daemon does not (the kernel
    /// waits for the answer uninterruptibly), so the node watches for the caller's kill itself.
    fn hold(&self, tid: u32) -> bool {
        self.unanswered.fetch_add(1, Relaxed);
        let mut released = self.released.lock().unwrap();
        while !*released {
            if being_killed(tid) {
                return false;
            }
            released = self
                .release_cv
                .wait_timeout(released, Duration::from_millis(50))
                .unwrap()
                .0;
        }
        true
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            meta_ops: self.meta_ops.load(Relaxed),
            data_ops: self.data_ops.load(Relaxed),
            queued_ops: self.queued_ops.load(Relaxed),
            peak_in_service: self.peak_in_service.load(Relaxed),
            peak_queued: self.peak_queued.load(Relaxed),
            busy_us: self.busy_us.load(Relaxed),
            unanswered: self.unanswered.load(Relaxed),
            by_op: self
                .by_op
                .lock()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
        }
    }
}

#[derive(Clone, Copy)]
enum Op {
    Meta,
    Data,
}

/// The service slots of one node, scheduled in the node's own time: a request takes the slot
/// free soonest, from then (or from now, if it is free) for its latency, and is answered when
/// that time is up. A slot serves its next request the moment the last one's time is up,
/// whenever the thread that served it gets the CPU back: handed over from thread to thread (a
/// condition variable's wake-up, on the 2 cores the copying client also runs on), the slots of
/// a node with a deep queue stood idle 10-15% of the time, a cost of the emulation that a
/// remote server does not have.
struct Slots {
    /// When each slot is free again.
    free_at: Mutex<Vec<Instant>>,
    /// Requests scheduled and not yet answered.
    in_flight: AtomicUsize,
    capacity: usize,
}

/// A request in service: its time in the node's schedule is counted, and it leaves the node,
/// when the operation is answered.
struct SlotGuard<'a>(&'a Slots, &'a Stats, Duration);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.1.busy_us.fetch_add(self.2.as_micros() as u64, Relaxed);
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

thread_local! {
    static SLACK_SET: Cell<bool> = const { Cell::new(false) };
}

/// Whether thread `tid` is gone, exiting, or has SIGKILL pending (its process was killed).
///
/// Exiting counts too: a killed thread's SIGKILL is consumed when it starts to exit, and the exit
/// then closes its files, whose FUSE flush would wait for ever. (On a real hard NFS mount a
/// process exiting with dirty pages for a hung server can stay stuck like that; the operator does
/// not wait for such a pod, see the operator's README, "A server that stops answering".)
fn being_killed(tid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return true;
    };
    // Field 9 of /proc/<tid>/stat, after the parenthesised name: the task's flags.
    const PF_EXITING: u64 = 0x4;
    let exiting = std::fs::read_to_string(format!("/proc/{tid}/stat"))
        .ok()
        .and_then(|st| {
            let after = &st[st.rfind(')')? + 1..];
            after.split_whitespace().nth(6)?.parse::<u64>().ok()
        })
        .is_none_or(|flags| flags & PF_EXITING != 0);
    if exiting {
        return true;
    }
    let sigkill = 1u64 << (libc::SIGKILL - 1);
    status.lines().any(|l| {
        l.strip_prefix("SigPnd:")
            .or_else(|| l.strip_prefix("ShdPnd:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .is_some_and(|mask| mask & sigkill != 0)
    }) || status
        .lines()
        .any(|l| l.starts_with("State:") && l.contains("zombie"))
}

/// Sleeps of half a millisecond would otherwise overshoot by the default 50 µs timer slack.
fn tight_timer() {
    SLACK_SET.with(|s| {
        if !s.get() {
            // SAFETY: prctl with PR_SET_TIMERSLACK takes an integer and touches no memory.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
            s.set(true);
        }
    });
}

struct Node {
    parent: u64,
    name: OsString,
}

/// One emulated node over the backing directory.
pub struct LatencyFs {
    backing: PathBuf,
    root_ino: u64,
    cfg: NodeConfig,
    nodes: Mutex<HashMap<u64, Node>>,
    files: Mutex<HashMap<u64, Arc<File>>>,
    dirs: Mutex<HashMap<u64, Arc<Listing>>>,
    next_fh: AtomicU64,
    slots: Slots,
    stats: Arc<Stats>,
    /// Set by the first request named [`NodeConfig::stop_answering_on`].
    stopped: AtomicBool,
}

type Res<T> = Result<T, Errno>;

/// A directory's entries as read at `opendir`: inode, type, name.
type Listing = Vec<(u64, FileType, OsString)>;

fn errno(e: io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn last_errno() -> Errno {
    errno(io::Error::last_os_error())
}

fn cpath(p: &Path) -> Res<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::from_i32(libc::EINVAL))
}

fn check(rc: libc::c_int) -> Res<()> {
    if rc < 0 { Err(last_errno()) } else { Ok(()) }
}

fn lstat(p: &Path) -> Res<libc::stat> {
    let c = cpath(p)?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `c` is a valid C string and `st` is written by the call before being read.
    check(unsafe { libc::lstat(c.as_ptr(), st.as_mut_ptr()) })?;
    Ok(unsafe { st.assume_init() })
}

fn fstat(f: &File) -> Res<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: the fd is open for the life of `f`; `st` is written before being read.
    check(unsafe { libc::fstat(f.as_raw_fd(), st.as_mut_ptr()) })?;
    Ok(unsafe { st.assume_init() })
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn timespec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => {
            let (sec, nsec) = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
                Err(e) => {
                    // Before 1970: whole seconds down, nanoseconds up, as in a timespec.
                    let d = e.duration();
                    let mut sec = -(d.as_secs() as i64);
                    let mut nsec = -(d.subsec_nanos() as i64);
                    if nsec < 0 {
                        sec -= 1;
                        nsec += 1_000_000_000;
                    }
                    (sec, nsec)
                }
            };
            libc::timespec {
                tv_sec: sec,
                tv_nsec: nsec,
            }
        }
    }
}

impl LatencyFs {
    pub fn new(backing: &Path, cfg: NodeConfig, stats: Arc<Stats>) -> io::Result<Self> {
        let backing = backing.canonicalize()?;
        let root_ino = std::fs::metadata(&backing)?.ino_of();
        Ok(LatencyFs {
            backing,
            root_ino,
            cfg,
            nodes: Mutex::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            slots: Slots {
                free_at: Mutex::new(vec![Instant::now(); cfg.capacity.max(1)]),
                in_flight: AtomicUsize::new(0),
                capacity: cfg.capacity.max(1),
            },
            stats,
            stopped: AtomicBool::new(false),
        })
    }

    /// Takes a slot (waiting if all are busy) and spends the emulated round trip in it.
    /// `None`: the node stopped answering and the caller was killed while it waited (the handler
    /// answers EINTR, which no one reads).
    fn serve(&self, req: &Request, op: Op, name: &'static str) -> Option<SlotGuard<'_>> {
        *self.stats.by_op.lock().unwrap().entry(name).or_default() += 1;
        let n = self.stats.received.fetch_add(1, Relaxed) + 1;
        if self.cfg.stop_answering_on == Some(name) {
            self.stopped.store(true, Relaxed);
        }
        let stop =
            self.cfg.stop_answering_at.is_some_and(|at| n >= at) || self.stopped.load(Relaxed);
        if stop && !self.stats.hold(req.pid()) {
            return None;
        }
        let s = &self.slots;
        let (counter, latency) = match op {
            Op::Meta => (&self.stats.meta_ops, self.cfg.meta_latency),
            Op::Data => (&self.stats.data_ops, self.cfg.data_latency),
        };
        let now = Instant::now();
        let end = {
            let mut free = s.free_at.lock().unwrap();
            let soonest = (0..free.len()).min_by_key(|&i| free[i]).unwrap_or(0);
            if free[soonest] > now {
                self.stats.queued_ops.fetch_add(1, Relaxed);
            }
            free[soonest] = free[soonest].max(now) + latency;
            free[soonest]
        };
        let in_flight = s.in_flight.fetch_add(1, Relaxed) + 1;
        self.stats
            .peak_in_service
            .fetch_max(in_flight.min(s.capacity), Relaxed);
        self.stats
            .peak_queued
            .fetch_max(in_flight.saturating_sub(s.capacity), Relaxed);
        counter.fetch_add(1, Relaxed);
        if !latency.is_zero() {
            tight_timer();
            loop {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                std::thread::sleep(left);
            }
        }
        Some(SlotGuard(s, &self.stats, latency))
    }

    /// FUSE inode for a backing inode: the root is 1 (and a backing inode 1, if any, takes the
    /// root's number, so the mapping stays one to one).
    fn fuse_ino(&self, ino: u64) -> u64 {
        if ino == self.root_ino {
            1
        } else if ino == 1 {
            self.root_ino
        } else {
            ino
        }
    }

    fn path(&self, ino: INodeNo) -> Res<PathBuf> {
        let nodes = self.nodes.lock().unwrap();
        let mut parts = Vec::new();
        let mut cur = ino.0;
        while cur != 1 {
            let n = nodes.get(&cur).ok_or(Errno::from_i32(libc::ESTALE))?;
            parts.push(n.name.clone());
            cur = n.parent;
            if parts.len() > 4096 {
                return Err(Errno::from_i32(libc::ELOOP));
            }
        }
        let mut p = self.backing.clone();
        p.extend(parts.iter().rev());
        Ok(p)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Res<PathBuf> {
        Ok(self.path(parent)?.join(name))
    }

    fn attr(&self, st: &libc::stat) -> FileAttr {
        FileAttr {
            ino: INodeNo(self.fuse_ino(st.st_ino)),
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: time(st.st_atime, st.st_atime_nsec),
            mtime: time(st.st_mtime, st.st_mtime_nsec),
            ctime: time(st.st_ctime, st.st_ctime_nsec),
            crtime: UNIX_EPOCH,
            kind: kind_of(st.st_mode),
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: st.st_blksize as u32,
            flags: 0,
        }
    }

    /// Stats `parent/name`, remembers where the inode is, and returns its attributes.
    fn enter(&self, parent: INodeNo, name: &OsStr) -> Res<FileAttr> {
        let st = lstat(&self.child(parent, name)?)?;
        let attr = self.attr(&st);
        if attr.ino.0 != 1 {
            self.nodes.lock().unwrap().insert(
                attr.ino.0,
                Node {
                    parent: parent.0,
                    name: name.to_owned(),
                },
            );
        }
        Ok(attr)
    }

    fn file(&self, fh: FileHandle) -> Res<Arc<File>> {
        self.files
            .lock()
            .unwrap()
            .get(&fh.0)
            .cloned()
            .ok_or(Errno::from_i32(libc::EBADF))
    }

    fn keep(&self, f: File) -> u64 {
        let fh = self.next_fh.fetch_add(1, Relaxed);
        self.files.lock().unwrap().insert(fh, Arc::new(f));
        fh
    }

    fn open_raw(path: &Path, flags: i32, mode: u32) -> Res<File> {
        let c = cpath(path)?;
        // SAFETY: valid C string; the returned fd is owned by the File.
        let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode) };
        if fd < 0 {
            return Err(last_errno());
        }
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Sets the exact permission bits asked for (the daemon's own umask must not narrow them).
    fn chmod_exact(path: &Path, mode: u32, umask: u32) -> Res<()> {
        let c = cpath(path)?;
        // SAFETY: valid C string.
        check(unsafe { libc::chmod(c.as_ptr(), (mode & !umask & 0o7777) as libc::mode_t) })
    }

    #[allow(clippy::too_many_arguments)]
    fn do_setattr(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> Res<FileAttr> {
        let path = self.path(ino)?;
        let c = cpath(&path)?;
        let file = fh.and_then(|fh| self.file(fh).ok());
        if let Some(m) = mode {
            // SAFETY: valid fd or C string.
            check(match &file {
                Some(f) => unsafe { libc::fchmod(f.as_raw_fd(), m & 0o7777) },
                None => unsafe { libc::chmod(c.as_ptr(), m & 0o7777) },
            })?;
        }
        if uid.is_some() || gid.is_some() {
            let u = uid.unwrap_or(u32::MAX);
            let g = gid.unwrap_or(u32::MAX);
            // SAFETY: as above; -1 leaves that id unchanged.
            check(unsafe { libc::lchown(c.as_ptr(), u, g) })?;
        }
        if let Some(len) = size {
            match &file {
                Some(f) => f.set_len(len).map_err(errno)?,
                // SAFETY: valid C string.
                None => check(unsafe { libc::truncate(c.as_ptr(), len as libc::off_t) })?,
            }
        }
        if atime.is_some() || mtime.is_some() {
            let ts = [timespec(atime), timespec(mtime)];
            // SAFETY: `ts` holds two timespecs as utimensat requires.
            check(unsafe {
                libc::utimensat(
                    libc::AT_FDCWD,
                    c.as_ptr(),
                    ts.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            })?;
        }
        Ok(self.attr(&lstat(&path)?))
    }
}

trait InoOf {
    fn ino_of(&self) -> u64;
}

impl InoOf for std::fs::Metadata {
    fn ino_of(&self) -> u64 {
        std::os::unix::fs::MetadataExt::ino(self)
    }
}

impl Filesystem for LatencyFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Without it the kernel serialises lookups and readdirs within one directory, which an
        // NFS client does not: many creates in one directory must be in flight at once.
        if config
            .add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS)
            .is_err()
        {
            eprintln!("warning: this kernel's FUSE lacks parallel directory operations");
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(_slot) = self.serve(req, Op::Meta, "lookup") else {
            return reply.error(Errno::from_i32(libc::EINTR));
        };
        match self.enter(parent, name) {
            Ok(a) => reply.entry(&self.cfg.ttl, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let Some(_slot) = self.serve(req, Op::Meta, "getattr") else {
            return reply.error(Errno::from_i32(libc::EINTR));
        };
        let st = match fh.and_then(|fh| self.file(fh).ok()) {
            Some(f) => fstat(&f),
            None => self.path(ino).and_then(|p| lstat(&p)),
        };
        match st {
            Ok(st) => reply.attr(&self.cfg.ttl, &self.attr(&st)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let Some(_slot) = self.serve(req, Op::Meta, "setattr") else {
            return reply.error(Errno::from_i32(libc::EINTR));
        };
        match self.do_setattr(ino, mode, uid, gid, size, atime, mtime, fh) {
            Ok(a) => reply.attr(&self.cfg.ttl, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let Some(_slot) = self.serve(req, Op::Meta, "readlink") else {
            return reply.error(Errno::from_i32(libc::EINTR));
        };
        match self
            .path(ino)
            .and_then(|p| std::fs::read_link(p).map_err(errno))
        {
            Ok(t) => reply.data(t.as_os_str().as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let Some(_slot) = self.serve(req, Op::Meta, "mknod") else {
            return reply.error(Errno::from_i32(libc::EINTR));
        };
        let r = self.child(parent, name).and_then(|p| {
            let c = cpath(&p)?;
            // SAFETY: valid C string.
            check(unsafe { libc::mknod(c.as_ptr(), mode & !umask, rdev as libc::dev_t) })?;
            Self::chmod_exact(&p, mode, umask)?;
            self.enter(parent, name)
        });
        match r {
            Ok(a) => reply.entry(&self.cfg.ttl, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let Some(_slot) = self.serve(req, Op::Meta, "mkdir") else {
            return reply.error(Errno::from_i32(libc::EINTR));
        };
        let r = self.child(parent, name).and_then(|p| {
            let c = cpath(&p)?;
            // SAFETY: valid C string.
            check(unsafe { libc::mkdir(c.as_ptr(), mode & !umask & 0o7777) })?;
            Self::chmod_exact(&p, mode, umask)?;
            self.enter(parent, name)
        });
        match r {
            Ok(a) => reply.entry(&self.cfg.ttl, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(_slot) = self.serve(req, Op::Meta, "unlink") else {
            return reply.error(Errno::from_i32(libc::EINTR));
        };
        let r = self.child(parent, name).and_then(|p| {
            let c = cpath(&p)?;
            // SAFETY: valid C string.
            check(unsafe { libc::unlink(c.as_ptr()) })
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(_slot) = self.serve(req, Op::Meta, "rmdir") else {
            return reply.error(Errno::from_i32(libc::EINTR));
        };
        let r = self.child(parent, name).and_then(|p| {
            let c = cpath(&p)?;
            // SAFETY: valid C string.
            check(unsafe { libc::rmdir(c.as_ptr()) })
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let Some(_slot) = self.serve(req, Op::Meta, "symlink") else {
            return reply.error(Errno::from_i32(libc::EINTR));
        };
        let r = self.child(parent, link_name).and_then(|p| {
            std::os::unix::fs::symlink(target, &p).map_err(errno)?;
            self.enter(parent, link_name)
        });
        match r {
            Ok(a) => reply.entry(&self.cfg.ttl, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let Some(_slot) = self.serve(req, Op::Meta, "rename") else {
            return reply.error(Errno::from_i32(libc::EINTR));
        };
        let r = (|| {
            let from = cpath(&self.child(parent, name)?)?;
            let to = cpath(&self.child(newparent, newname)?)?;
            // SAFETY: valid C strings.
            check(unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    from.as_ptr(),
                    libc::AT_FDCWD,
                    to.as_ptr(),
                    flags.bits(),
                )
            })?;
            self.enter(newparent, newname).map(|_| ())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let Some(_slot) = self.serve(req, Op::Meta, "link") else {
            return reply.error(Errno::from_i32(libc::EINTR));
        };
        let r = (|| {
            let from = self.path(ino)?;
            std::fs::hard_link(&from, self.child(newparent, newname)?).map_err(errno)?;
            // The inode keeps the name it was found under; both reach it.
            Ok(self.attr(&lstat(&from)?))
        })();
        match r {
            Ok(a) => reply.entry(&self.cfg.ttl, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(_slot) = self.serve(req, Op::Meta, "open") else {
            return reply.error(Errno::from_i32(libc::EINTR));
        };
        let f = flags.0 & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY);
        match self.path(ino).and_then(|p| Self::open_raw(&p, f, 0)) {
            Ok(file) => reply.opened(FileHandle(self.keep(file)), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(_slot) = self.serve(req, Op::Data, "read") else {
            return reply.error(Errno::from_i32(libc::EINTR));
        };
        let r = self.file(fh).and_then(|f| {
            let mut buf = vec![0u8; size as usize];
            let mut n = 0;
            while n < buf.len() {
                match f.read_at(&mut buf[n..], offset + n as u64) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(errno(e)),
                }
            }
            buf.truncate(n);
            Ok(buf)
        });
        match r {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(_slot) = self.serve(req, Op::Data, "write") else {
            return reply.error(Errno::from_i32(libc::EINTR));
        };
        match self
            .file(fh)
            .and_then(|f| f.write_all_at(data, offset).map_err(errno))
        {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() on NFS waits for the file's writes to be committed: one round trip.
        let Some(_slot) = self.serve(req, Op::Meta, "flush") else {
            return reply.error(Errno::from_i32(libc::EINTR));
        };
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Asynchronous in the kernel and no RPC of its own on NFSv3: no latency.
        self.files.lock().unwrap().remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let Some(_slot) = self.serve(req, Op::Data, "fsync") else {
            return reply.error(Errno::from_i32(libc::EINTR));
        };
        let r = self.file(fh).and_then(|f| {
            if datasync {
                f.sync_data()
            } else {
                f.sync_all()
            }
            .map_err(errno)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // NFS has no directory open; the listing is read here once and served from memory, so
        // that a 20,000-entry directory is not re-read for every readdir batch.
        let r = (|| {
            let path = self.path(ino)?;
            let parent_ino = if ino.0 == 1 {
                1
            } else {
                self.nodes
                    .lock()
                    .unwrap()
                    .get(&ino.0)
                    .map_or(1, |n| n.parent)
            };
            let mut list = vec![
                (ino.0, FileType::Directory, OsString::from(".")),
                (parent_ino, FileType::Directory, OsString::from("..")),
            ];
            for e in std::fs::read_dir(&path).map_err(errno)? {
                let e = e.map_err(errno)?;
                let t = e.file_type().map_err(errno)?;
                let kind = if t.is_dir() {
                    FileType::Directory
                } else if t.is_symlink() {
                    FileType::Symlink
                } else if t.is_fifo() {
                    FileType::NamedPipe
                } else if t.is_char_device() {
                    FileType::CharDevice
                } else if t.is_block_device() {
                    FileType::BlockDevice
                } else if t.is_socket() {
                    FileType::Socket
                } else {
                    FileType::RegularFile
                };
                list.push((self.fuse_ino(e.ino()), kind, e.file_name()));
            }
            let fh = self.next_fh.fetch_add(1, Relaxed);
            self.dirs.lock().unwrap().insert(fh, Arc::new(list));
            Ok(fh)
        })();
        match r {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(_slot) = self.serve(req, Op::Meta, "readdir") else {
            return reply.error(Errno::from_i32(libc::EINTR));
        };
        let Some(list) = self.dirs.lock().unwrap().get(&fh.0).cloned() else {
            return reply.error(Errno::from_i32(libc::EBADF));
        };
        for (i, (ino, kind, name)) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs.lock().unwrap().remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let Some(_slot) = self.serve(req, Op::Meta, "statfs") else {
            return reply.error(Errno::from_i32(libc::EINTR));
        };
        let r = cpath(&self.backing).and_then(|c| {
            let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
            // SAFETY: valid C string; `s` is written before being read.
            check(unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) })?;
            Ok(unsafe { s.assume_init() })
        });
        match r {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let Some(_slot) = self.serve(req, Op::Meta, "setxattr") else {
            return reply.error(Errno::from_i32(libc::EINTR));
        };
        let r = (|| {
            let p = cpath(&self.path(ino)?)?;
            let n = CString::new(name.as_bytes()).map_err(|_| Errno::from_i32(libc::EINVAL))?;
            // SAFETY: valid C strings and a value buffer of the given length.
            check(unsafe {
                libc::lsetxattr(
                    p.as_ptr(),
                    n.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    flags,
                )
            })
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(_slot) = self.serve(req, Op::Meta, "getxattr") else {
            return reply.error(Errno::from_i32(libc::EINTR));
        };
        let r = (|| {
            let p = cpath(&self.path(ino)?)?;
            let n = CString::new(name.as_bytes()).map_err(|_| Errno::from_i32(libc::EINVAL))?;
            let mut buf = vec![0u8; size as usize];
            // SAFETY: valid C strings; the buffer holds `size` bytes (0 asks for the length).
            let len = unsafe {
                libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            };
            if len < 0 {
                return Err(last_errno());
            }
            Ok((len as usize, buf))
        })();
        match r {
            Ok((len, _)) if size == 0 => reply.size(len as u32),
            Ok((len, b)) => reply.data(&b[..len]),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let Some(_slot) = self.serve(req, Op::Meta, "listxattr") else {
            return reply.error(Errno::from_i32(libc::EINTR));
        };
        let r = (|| {
            let p = cpath(&self.path(ino)?)?;
            let mut buf = vec![0u8; size as usize];
            // SAFETY: valid C string; the buffer holds `size` bytes (0 asks for the length).
            let len = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            if len < 0 {
                return Err(last_errno());
            }
            Ok((len as usize, buf))
        })();
        match r {
            Ok((len, _)) if size == 0 => reply.size(len as u32),
            Ok((len, b)) => reply.data(&b[..len]),
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(_slot) = self.serve(req, Op::Meta, "removexattr") else {
            return reply.error(Errno::from_i32(libc::EINTR));
        };
        let r = (|| {
            let p = cpath(&self.path(ino)?)?;
            let n = CString::new(name.as_bytes()).map_err(|_| Errno::from_i32(libc::EINVAL))?;
            // SAFETY: valid C strings.
            check(unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) })
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // The daemon and its callers are root here; the backing file system checks the rest.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let Some(_slot) = self.serve(req, Op::Meta, "create") else {
            return reply.error(Errno::from_i32(libc::EINTR));
        };
        let r = (|| {
            let p = self.child(parent, name)?;
            let f = Self::open_raw(&p, flags | libc::O_CREAT, mode & !umask & 0o7777)?;
            // SAFETY: the fd is open for the life of `f`.
            check(unsafe { libc::fchmod(f.as_raw_fd(), mode & !umask & 0o7777) })?;
            let attr = self.enter(parent, name)?;
            Ok((attr, self.keep(f)))
        })();
        match r {
            Ok((a, fh)) => reply.created(
                &self.cfg.ttl,
                &a,
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }
}
