//! The parallel scanner: walks the source once and keeps per-directory aggregates, never a list
//! of files.
//!
//! Threads share one LIFO stack of directories still to list (depth first keeps the stack, and the
//! parent descriptors it holds open, small). Each thread has its own buffers and results and
//! merges them only at the end. Every lookup is relative to the parent directory's descriptor
//! (`openat`, `fstatat`): on NFS a full path lookup costs a round trip per component.
//!
//! What is kept per directory: counts and bytes of its own entries, the few files large enough to
//! be split into byte ranges, and — for directories with many entries — a deterministic sample of
//! names, so that the planner can cut name ranges without listing the directory again. Files
//! with more than one link are kept in a side list (rare), so that all links of an inode go to
//! the same shard. Unreadable directories are counted, reported and skipped; the walk goes on.

use std::cmp::Ordering;
use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir};

use ingest_filter::{Filter, FilterSpec};
use ingest_path::RelPath;

use crate::format::{HISTOGRAM_BUCKETS, ScanErrorEntry};

#[derive(Debug, Clone)]
pub struct ScanOptions {
    pub threads: usize,
    /// Directories with more non-directory entries than this keep a sample of names.
    pub sample_threshold: u64,
    /// Names sampled per directory (a reservoir sample: bounded memory however large the directory).
    pub samples: usize,
    /// At most one kept name per this many entries, so that the names kept over the whole tree stay
    /// a small fraction of its entries (memory ∝ directories, not files).
    pub entries_per_sample: u64,
    /// Regular files at least this large are recorded by name, as candidates for byte-range shards.
    pub big_file_min: u64,
    /// Scan errors kept with their path (all are counted).
    pub max_errors: usize,
    /// The user's include/exclude patterns and age limits: what they leave out is counted, not
    /// planned (and an excluded directory is not walked).
    pub filter: Filter,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            threads: 8,
            sample_threshold: 512,
            samples: 1024,
            entries_per_sample: 64,
            // The engine's own split size: smaller files are never worth cutting across workers.
            big_file_min: 64 << 20,
            max_errors: 100,
            filter: Filter::none(),
        }
    }
}

/// Sums over a directory and everything below it (filled in after the walk).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Aggregate {
    pub files: u64,
    pub bytes: u64,
    pub linked_files: u64,
    pub linked_bytes: u64,
    pub others: u64,
    /// Directories, this one included.
    pub dirs: u64,
    /// Size of the largest recorded big file.
    pub max_big: u64,
}

impl Aggregate {
    fn add(&mut self, o: &Aggregate) {
        self.files += o.files;
        self.bytes += o.bytes;
        self.linked_files += o.linked_files;
        self.linked_bytes += o.linked_bytes;
        self.others += o.others;
        self.dirs += o.dirs;
        self.max_big = self.max_big.max(o.max_big);
    }
}

/// One directory's own entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirStats {
    pub path: RelPath,
    /// Regular files directly in this directory (all of them, linked ones included) and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Of those, files with more than one link (copied by link-group scopes).
    pub linked_files: u64,
    pub linked_bytes: u64,
    /// Symlinks, fifos, sockets, devices.
    pub others: u64,
    pub subdirs: u64,
    /// The directory could not be opened or listed in full.
    pub unreadable: bool,
    /// Sorted distinct names of non-directory entries, when there are more than the sample threshold.
    pub samples: Vec<Vec<u8>>,
    /// Single-link regular files of at least `big_file_min` bytes, sorted by name.
    pub big_files: Vec<(Vec<u8>, u64)>,
    /// Index one past this directory's last descendant in [`Scan::dirs`].
    pub subtree_end: usize,
    pub tree: Aggregate,
}

impl DirStats {
    pub fn new(path: RelPath) -> Self {
        DirStats {
            path,
            files: 0,
            bytes: 0,
            linked_files: 0,
            linked_bytes: 0,
            others: 0,
            subdirs: 0,
            unreadable: false,
            samples: Vec::new(),
            big_files: Vec::new(),
            subtree_end: 0,
            tree: Aggregate::default(),
        }
    }

    /// Non-directory entries (what name ranges of this directory divide).
    pub fn own_entries(&self) -> u64 {
        self.files + self.others
    }
}

/// A path of an inode with more than one link.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LinkEntry {
    pub dev: u64,
    pub ino: u64,
    pub path: RelPath,
    pub size: u64,
}

/// Everything the scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Depth-first pre-order, children in byte order of their names; `dirs[0]` is the root.
    pub dirs: Vec<DirStats>,
    /// Sorted by (dev, ino, path).
    pub links: Vec<LinkEntry>,
    pub histogram: Vec<u64>,
    /// Regular files by the age of their mtime at the scan's start: see [`AGE_BUCKETS`].
    pub age_histogram: Vec<u64>,
    /// The first `max_errors` errors, sorted by path.
    pub errors: Vec<ScanErrorEntry>,
    /// Entries that failed `stat` (vanished, permission), and directories that could not be read.
    pub error_count: u64,
    pub unreadable: u64,
    /// Entries the filter left out (an excluded directory once, not what is below it).
    pub excluded: u64,
    /// The filter the scan applied: the plan carries it to every phase of the pass.
    pub filter: FilterSpec,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot open the source directory {path}: {source}")]
    Root { path: String, source: io::Error },
    #[error("scan threads must be at least 1 (got 0)")]
    Threads,
}

struct Work {
    parent: Arc<OwnedFd>,
    path: RelPath,
}

struct Queue {
    stack: Vec<Work>,
    /// Threads blocked waiting for work: only that many are woken (waking all on every push
    /// makes a thundering herd when threads outnumber cores).
    waiting: usize,
    /// Threads listing a directory right now (they may push more work).
    active: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    opts: ScanOptions,
    /// Unix seconds ages are measured from: the filter's reference time, or the scan's start.
    started: i64,
}

/// What one thread found; merged at the end.
#[derive(Default)]
struct Local {
    dirs: Vec<DirStats>,
    links: Vec<LinkEntry>,
    histogram: Vec<u64>,
    ages: Vec<u64>,
    errors: Vec<ScanErrorEntry>,
    error_count: u64,
    unreadable: u64,
    excluded: u64,
}

impl Local {
    fn error(&mut self, max: usize, path: RelPath, err: &io::Error) {
        self.error_count += 1;
        if self.errors.len() < max {
            self.errors.push(ScanErrorEntry {
                path,
                error: err.to_string(),
            });
        }
    }
}

/// Walks `root` with `opts.threads` threads.
pub fn scan(root: &Path, opts: &ScanOptions) -> Result<Scan, ScanError> {
    if opts.threads == 0 {
        return Err(ScanError::Threads);
    }
    let root_fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ScanError::Root {
        path: root.display().to_string(),
        source: e.into(),
    })?;
    let shared = Shared {
        queue: Mutex::new(Queue {
            stack: Vec::new(),
            waiting: 0,
            active: 1,
        }),
        ready: Condvar::new(),
        opts: opts.clone(),
        started: opts.filter.spec().reference_time.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        }),
    };
    let mut locals: Vec<Local> = Vec::new();
    std::thread::scope(|s| {
        let shared = &shared;
        let handles: Vec<_> = (0..opts.threads)
            .map(|i| {
                let root_fd = if i == 0 {
                    Some(Arc::new(
                        root_fd.try_clone().expect("dup of the root descriptor"),
                    ))
                } else {
                    None
                };
                s.spawn(move || {
                    let mut t = Thread::new(shared);
                    if let Some(fd) = root_fd {
                        // The root is listed by thread 0 before it takes work from the stack;
                        // `active` started at 1 on its behalf.
                        t.list(fd, RelPath::root());
                        t.finish_one();
                    }
                    t.run();
                    t.local
                })
            })
            .collect();
        locals = handles
            .into_iter()
            .map(|h| h.join().expect("scan thread panicked"))
            .collect();
    });
    let mut scan = merge(locals, opts.max_errors);
    scan.filter = opts.filter.spec().clone();
    Ok(scan)
}

struct Thread<'a> {
    shared: &'a Shared,
    local: Local,
    buf: Vec<MaybeUninit<u8>>,
    /// Reservoir slots, reused from directory to directory so that sampling allocates nothing
    /// once warm.
    slots: Vec<Vec<u8>>,
}

impl<'a> Thread<'a> {
    fn new(shared: &'a Shared) -> Self {
        Thread {
            shared,
            local: Local {
                histogram: vec![0; HISTOGRAM_BUCKETS],
                ages: vec![0; AGE_BUCKETS.len()],
                ..Local::default()
            },
            buf: vec![MaybeUninit::uninit(); 64 * 1024],
            slots: Vec::new(),
        }
    }

    fn run(&mut self) {
        loop {
            let work = {
                let mut q = self.shared.queue.lock().unwrap();
                loop {
                    if let Some(w) = q.stack.pop() {
                        q.active += 1;
                        break Some(w);
                    }
                    if q.active == 0 {
                        break None;
                    }
                    q.waiting += 1;
                    q = self.shared.ready.wait(q).unwrap();
                    q.waiting -= 1;
                }
            };
            let Some(work) = work else {
                self.shared.ready.notify_all();
                return;
            };
            let name = work.path.file_name().to_vec();
            match rustix::fs::openat(
                &*work.parent,
                name.as_slice(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => {
                    drop(work.parent);
                    self.list(Arc::new(fd), work.path);
                }
                Err(e) => {
                    let mut d = DirStats::new(work.path.clone());
                    d.unreadable = true;
                    self.local.unreadable += 1;
                    self.local
                        .error(self.shared.opts.max_errors, work.path, &e.into());
                    self.local.dirs.push(d);
                }
            }
            self.finish_one();
        }
    }

    fn finish_one(&mut self) {
        let mut q = self.shared.queue.lock().unwrap();
        q.active -= 1;
        if q.active == 0 && q.stack.is_empty() {
            self.shared.ready.notify_all();
        }
    }

    /// Lists one directory, accounts its entries and queues its subdirectories.
    fn list(&mut self, fd: Arc<OwnedFd>, path: RelPath) {
        let opts = &self.shared.opts;
        let mut d = DirStats::new(path.clone());
        let mut children: Vec<Work> = Vec::new();
        let mut rng = SplitMix(fnv1a(path.as_bytes()));
        let mut sampled: u64 = 0;
        let mut dir = RawDir::new(&*fd, &mut self.buf);
        loop {
            let entry = match dir.next() {
                None => break,
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    d.unreadable = true;
                    self.local.unreadable += 1;
                    self.local.error(opts.max_errors, path.clone(), &e.into());
                    break;
                }
            };
            let name: &CStr = entry.file_name();
            let name = name.to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let mut ftype = entry.file_type();
            let mut stat = None;
            let filter = &opts.filter;
            if ftype == FileType::RegularFile
                || ftype == FileType::Unknown
                || (filter.has_age() && ftype != FileType::Directory)
            {
                match rustix::fs::statat(&*fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => {
                        ftype = FileType::from_raw_mode(st.st_mode);
                        stat = Some(st);
                    }
                    Err(e) => {
                        // Vanished or forbidden: counted and reported, the listing goes on.
                        self.local
                            .error(opts.max_errors, path.join(name), &e.into());
                        continue;
                    }
                }
            }
            if !filter.is_empty() {
                let rel = path.join(name);
                let kept = match (ftype, stat) {
                    (FileType::Directory, _) => filter.keeps_dir(&rel),
                    // `st_mtime`'s type differs between architectures.
                    #[allow(clippy::unnecessary_cast)]
                    (_, Some(st)) => filter.keeps(&rel, false, st.st_mtime as i64),
                    (_, None) => filter.keeps_path(&rel),
                };
                if !kept {
                    self.local.excluded += 1;
                    continue;
                }
            }
            if ftype == FileType::Directory {
                d.subdirs += 1;
                children.push(Work {
                    parent: fd.clone(),
                    path: path.join(name),
                });
                continue;
            }
            let mut big = false;
            if let (FileType::RegularFile, Some(st)) = (ftype, stat) {
                let size = st.st_size as u64;
                d.files += 1;
                d.bytes += size;
                self.local.histogram[size_bucket(size)] += 1;
                // `st_mtime`'s type differs between architectures.
                #[allow(clippy::unnecessary_cast)]
                let age = self.shared.started - st.st_mtime as i64;
                self.local.ages[age_bucket(age)] += 1;
                if st.st_nlink > 1 {
                    d.linked_files += 1;
                    d.linked_bytes += size;
                    self.local.links.push(LinkEntry {
                        dev: st.st_dev,
                        ino: st.st_ino,
                        path: path.join(name),
                        size,
                    });
                } else if size >= opts.big_file_min {
                    d.big_files.push((name.to_vec(), size));
                    big = true;
                }
            } else {
                d.others += 1;
            }
            if !big {
                // Reservoir sample (algorithm R) with a generator seeded by the path: the same
                // directory gives the same sample whichever thread lists it.
                let slot = if (sampled as usize) < opts.samples {
                    if self.slots.len() <= sampled as usize {
                        self.slots.push(Vec::new());
                    }
                    Some(sampled as usize)
                } else {
                    let j = rng.next_u64() % (sampled + 1);
                    (j < opts.samples as u64).then_some(j as usize)
                };
                if let Some(i) = slot {
                    self.slots[i].clear();
                    self.slots[i].extend_from_slice(name);
                }
                sampled += 1;
            }
        }
        if d.own_entries() > opts.sample_threshold {
            let n = (sampled as usize).min(opts.samples);
            let mut s: Vec<&Vec<u8>> = self.slots[..n].iter().collect();
            s.sort_unstable();
            s.dedup();
            // Thin evenly to the kept count: every k-th of the sorted sample is still a uniform
            // set of quantiles.
            let keep = ((d.own_entries() / opts.entries_per_sample.max(1)) as usize)
                .clamp(1, s.len().max(1));
            d.samples = (0..keep.min(s.len()))
                .map(|i| s[i * s.len() / keep].clone())
                .collect();
        }
        d.big_files.sort_unstable();
        self.local.dirs.push(d);
        if !children.is_empty() {
            let mut q = self.shared.queue.lock().unwrap();
            let wake = q.waiting.min(children.len());
            q.stack.append(&mut children);
            drop(q);
            for _ in 0..wake {
                self.shared.ready.notify_one();
            }
        }
    }
}

/// Age buckets of files (by mtime, in seconds before the scan's start): a file is in the first
/// bucket whose upper bound exceeds its age; the first holds mtimes in the future (clock skew).
pub const AGE_BUCKETS: [(&str, i64); 9] = [
    ("in the future", 0),
    ("under 1 hour", 3600),
    ("under 1 day", 86_400),
    ("under 1 week", 7 * 86_400),
    ("under 30 days", 30 * 86_400),
    ("under 90 days", 90 * 86_400),
    ("under 1 year", 365 * 86_400),
    ("under 3 years", 3 * 365 * 86_400),
    ("3 years or more", i64::MAX),
];

/// The [`AGE_BUCKETS`] index of a file `age` seconds old.
pub fn age_bucket(age: i64) -> usize {
    AGE_BUCKETS
        .iter()
        .position(|&(_, below)| age < below)
        .unwrap_or(AGE_BUCKETS.len() - 1)
}

pub fn size_bucket(size: u64) -> usize {
    if size == 0 {
        0
    } else {
        64 - size.leading_zeros() as usize
    }
}

/// Orders paths component by component, which is depth-first pre-order with siblings in byte
/// order (plain byte order would put `a.b` between `a` and `a/b`).
pub fn tree_order(a: &RelPath, b: &RelPath) -> Ordering {
    a.components().cmp(b.components())
}

fn merge(locals: Vec<Local>, max_errors: usize) -> Scan {
    let mut dirs = Vec::new();
    let mut links = Vec::new();
    let mut histogram = vec![0u64; HISTOGRAM_BUCKETS];
    let mut age_histogram = vec![0u64; AGE_BUCKETS.len()];
    let mut errors = Vec::new();
    let (mut error_count, mut unreadable, mut excluded) = (0, 0, 0);
    for l in locals {
        dirs.extend(l.dirs);
        links.extend(l.links);
        for (h, v) in age_histogram.iter_mut().zip(l.ages) {
            *h += v;
        }
        for (h, v) in histogram.iter_mut().zip(l.histogram) {
            *h += v;
        }
        errors.extend(l.errors);
        error_count += l.error_count;
        unreadable += l.unreadable;
        excluded += l.excluded;
    }
    dirs.sort_by(|a, b| tree_order(&a.path, &b.path));
    links.sort_unstable();
    errors.sort_by(|a, b| tree_order(&a.path, &b.path).then_with(|| a.error.cmp(&b.error)));
    errors.truncate(max_errors);
    let mut scan = Scan {
        dirs,
        links,
        histogram,
        age_histogram,
        errors,
        error_count,
        unreadable,
        excluded,
        filter: FilterSpec::default(),
    };
    scan.aggregate();
    scan
}

impl Scan {
    /// Fills `subtree_end` and `tree` from the directories' own counts. `dirs` must be in
    /// [`tree_order`] with every directory's parent present (the walk guarantees both).
    pub fn aggregate(&mut self) {
        let n = self.dirs.len();
        for d in &mut self.dirs {
            d.tree = Aggregate {
                files: d.files,
                bytes: d.bytes,
                linked_files: d.linked_files,
                linked_bytes: d.linked_bytes,
                others: d.others,
                dirs: 1,
                max_big: d.big_files.iter().map(|b| b.1).max().unwrap_or(0),
            };
        }
        let mut stack: Vec<usize> = Vec::new();
        for i in 0..=n {
            while let Some(&top) = stack.last() {
                if i < n && self.dirs[i].path.starts_with(&self.dirs[top].path) {
                    break;
                }
                stack.pop();
                self.dirs[top].subtree_end = i;
                if let Some(&parent) = stack.last() {
                    let t = self.dirs[top].tree;
                    self.dirs[parent].tree.add(&t);
                }
            }
            if i < n {
                stack.push(i);
            }
        }
    }

    pub fn root(&self) -> &DirStats {
        &self.dirs[0]
    }

    /// Indices of the direct children of directory `i`, in name order.
    pub fn children(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        let end = self.dirs[i].subtree_end;
        let mut j = i + 1;
        std::iter::from_fn(move || {
            if j >= end {
                return None;
            }
            let c = j;
            j = self.dirs[c].subtree_end;
            Some(c)
        })
    }

    /// The largest directories by own entries, for summaries.
    pub fn largest_dirs(&self, n: usize) -> Vec<&DirStats> {
        let mut v: Vec<&DirStats> = self.dirs.iter().collect();
        v.sort_by(|a, b| {
            b.own_entries()
                .cmp(&a.own_entries())
                .then_with(|| tree_order(&a.path, &b.path))
        });
        v.truncate(n);
        v
    }

    /// The paths of each multi-linked inode (tree order) with its size; groups in order of their
    /// first path.
    pub fn link_groups(&self) -> Vec<(Vec<RelPath>, u64)> {
        let mut groups: Vec<(Vec<RelPath>, u64)> = Vec::new();
        let mut last = None;
        for l in &self.links {
            if last == Some((l.dev, l.ino)) {
                groups
                    .last_mut()
                    .expect("group started")
                    .0
                    .push(l.path.clone());
            } else {
                groups.push((vec![l.path.clone()], l.size));
                last = Some((l.dev, l.ino));
            }
        }
        for g in &mut groups {
            g.0.sort_by(tree_order);
        }
        groups.sort_by(|a, b| tree_order(&a.0[0], &b.0[0]));
        groups
    }

    /// The `n` inodes with the most paths in the tree, most first (ties in tree order), for
    /// summaries.
    pub fn largest_link_groups(&self, n: usize) -> Vec<(Vec<RelPath>, u64)> {
        let mut groups = self.link_groups();
        // Stable: equal groups stay in the order of their first path.
        groups.sort_by_key(|g| std::cmp::Reverse(g.0.len()));
        groups.truncate(n);
        groups
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A small, fast, seedable generator; statistical quality is ample for sampling names.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod age_tests {
    use super::*;

    #[test]
    fn ages_fall_in_the_first_bucket_whose_bound_exceeds_them() {
        assert_eq!(AGE_BUCKETS[age_bucket(-5)].0, "in the future");
        assert_eq!(AGE_BUCKETS[age_bucket(0)].0, "under 1 hour");
        assert_eq!(AGE_BUCKETS[age_bucket(3599)].0, "under 1 hour");
        assert_eq!(AGE_BUCKETS[age_bucket(3600)].0, "under 1 day");
        assert_eq!(AGE_BUCKETS[age_bucket(400 * 86_400)].0, "under 3 years");
        assert_eq!(AGE_BUCKETS[age_bucket(i64::MAX)].0, "3 years or more");
    }
}
