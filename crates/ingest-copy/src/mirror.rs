//! Mirror mode: entries only in the destination are deleted after the copy pass, safely.
//!
//! The copy pass lists each directory's destination beside its source ([`Extra`]: a name that a
//! complete source listing of this pass does not have, that the user's filters keep, and that is
//! in the scope's name range). Nothing is deleted while the copy runs: [`prune`] then decides
//! for the pass as a whole, and deletes nothing at all when
//! - the copy pass left any entry failed (a listing that failed is the case that matters: a
//!   directory whose source could not be read in full must not lose its destination's files), or
//!   a destination directory could not be listed;
//! - the entries the candidates hold (a directory counts with everything below it, counted
//!   before anything is deleted) exceed [`MaxDeletes`].
//!
//! Otherwise each candidate is deleted after one more look at the source (a name that appeared
//! there since the listing is kept), its directory's times put back to the source's, and each
//! deletion is a report line ([`Outcome::Deleted`]). The verify pass that follows checks the
//! result with its own walk, both ways: a mirror ends identical or says what is left.

use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::{Deserialize, Serialize};

use ingest_path::RelPath;

pub use ingest_job::mirror::MaxDeletes;

use crate::engine::Roots;
use crate::fault::{self, Point, Target};
use crate::job::Options;
use crate::progress::{MountMeter, Progress};
use crate::report::{CopyCounts, Outcome, ReportEntry, ReportSink};
use crate::sys::{self, Kind, cstr};

/// A destination entry the copy pass found absent from its directory's complete source listing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Extra {
    pub path: RelPath,
    pub dir: bool,
}

/// What a mirror did after the copy pass.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorCounts {
    /// Names only in the destination that the copy pass found.
    pub found: u64,
    /// Entries they hold (a directory with everything below it): what the limit weighs.
    pub entries: u64,
    /// Entries deleted.
    pub deleted: u64,
    /// Names kept because the source has them again (created since it was listed).
    pub kept: u64,
    /// Deletions that failed, and destination directories that could not be listed; each is
    /// reported.
    pub failed: u64,
    /// Why nothing was deleted, when the pass refused to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl MirrorCounts {
    pub fn add(&mut self, o: &MirrorCounts) {
        self.found += o.found;
        self.entries += o.entries;
        self.deleted += o.deleted;
        self.kept += o.kept;
        self.failed += o.failed;
        if self.refused.is_none() {
            self.refused.clone_from(&o.refused);
        }
    }

    /// Everything found was deleted (or is in the source again).
    pub fn is_clean(&self) -> bool {
        self.refused.is_none() && self.failed == 0
    }
}

/// One operation on the destination, as a task of its mount's meter (an open, a listing, a stat,
/// an unlink) that handles `entries` entries when it succeeds (the meters count a listing or a
/// deletion as one, an open or a stat as none): a hung server behind a hard mount shows as an
/// operation waiting with none finishing, which the worker's watchdog gives up on as in the copy,
/// and each one that finishes is progress (a deletion of a million entries is not a stall).
fn op<T>(meter: &MountMeter, entries: u64, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let task = meter.begin();
    let r = f();
    if r.is_ok() {
        task.end(entries);
    }
    r
}

/// Entries in the destination subtree `name` of `dir`, itself included. Read only; each
/// listing and stat through `meter`.
pub(crate) fn count_tree(
    dir: BorrowedFd<'_>,
    name: &CString,
    is_dir: bool,
    meter: &MountMeter,
) -> io::Result<u64> {
    if !is_dir {
        return Ok(1);
    }
    let fd = op(meter, 0, || sys::open_dir_at(dir, name))?;
    let mut buf = vec![MaybeUninit::uninit(); 64 * 1024];
    let mut subdirs = Vec::new();
    let mut n = 1;
    op(meter, 1, || {
        sys::list_dir(fd.as_fd(), &mut buf, |child, kind| {
            n += 1;
            if kind != Some(Kind::Dir) && kind.is_some() {
                return;
            }
            subdirs.push((child.to_owned(), kind));
        })
    })?;
    for (child, kind) in subdirs {
        let is_dir = match kind {
            Some(k) => k == Kind::Dir,
            None => op(meter, 0, || sys::stat_at(fd.as_fd(), &child))?
                .is_some_and(|m| m.kind == Kind::Dir),
        };
        if is_dir {
            // Counted once already as a name of this directory.
            n += count_tree(fd.as_fd(), &child, true, meter)? - 1;
        }
    }
    Ok(n)
}

/// The entry is not there (deleted by someone else since it was listed).
fn gone<T>(r: &io::Result<T>) -> bool {
    matches!(r, Err(e) if e.kind() == io::ErrorKind::NotFound)
}

/// Where a deletion stopped: the names from the candidate down to the entry that could not be
/// listed or deleted (innermost first), and why.
type Stopped = (Vec<Vec<u8>>, io::Error);

/// Deletes the destination subtree `name` of `dir`, depth first, each operation through
/// `meter`; `deleted` counts each entry as it goes (and `progress`'s entries with it), so that
/// entries deleted before an error are counted too. An entry already gone (deleted by someone
/// else since it was listed) is passed over. Stops at the first error (what is left is
/// reported by the caller and found by the verifier).
fn delete_tree(
    dir: BorrowedFd<'_>,
    name: &CString,
    is_dir: bool,
    meter: &MountMeter,
    progress: &Progress,
    deleted: &mut u64,
) -> Result<(), Stopped> {
    let stopped = |e: io::Error| (vec![name.as_bytes().to_vec()], e);
    if is_dir {
        let fd = op(meter, 0, || sys::open_dir_at(dir, name));
        if gone(&fd) {
            return Ok(());
        }
        let fd = fd.map_err(stopped)?;
        let mut buf = vec![MaybeUninit::uninit(); 64 * 1024];
        let mut children = Vec::new();
        op(meter, 1, || {
            sys::list_dir(fd.as_fd(), &mut buf, |child, kind| {
                children.push((child.to_owned(), kind))
            })
        })
        .map_err(stopped)?;
        for (child, kind) in children {
            let child_dir = match kind {
                Some(k) => k == Kind::Dir,
                None => match op(meter, 0, || sys::stat_at(fd.as_fd(), &child)) {
                    Ok(None) => continue,
                    Ok(Some(m)) => m.kind == Kind::Dir,
                    Err(e) => {
                        return Err((vec![child.as_bytes().to_vec(), name.as_bytes().to_vec()], e));
                    }
                },
            };
            delete_tree(fd.as_fd(), &child, child_dir, meter, progress, deleted).map_err(
                |(mut below, e)| {
                    below.push(name.as_bytes().to_vec());
                    (below, e)
                },
            )?;
        }
    }
    let unlinked = op(meter, 1, || {
        fault::hit(Point::Delete, Target::default())?;
        sys::unlink_at(dir, name, is_dir)
    });
    if gone(&unlinked) {
        return Ok(());
    }
    unlinked.map_err(stopped)?;
    *deleted += 1;
    progress
        .entries
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Opens directory `rel` below `root`, one name at a time (no path resolution by the kernel:
/// a symlink on the way is an error, not a detour).
fn open_rel(root: BorrowedFd<'_>, rel: &RelPath) -> io::Result<OwnedFd> {
    let mut fd = sys::reopen_dir(root)?;
    for comp in rel.components() {
        fd = sys::open_dir_at(fd.as_fd(), &cstr(comp))?;
    }
    Ok(fd)
}

/// Weighs and deletes what the copy pass found only in the destination (see the module).
pub(crate) fn prune(
    roots: &Roots,
    opts: &Options,
    mut extras: Vec<Extra>,
    copy: &CopyCounts,
    mut m: MirrorCounts,
    progress: &Progress,
    sink: &dyn ReportSink,
) -> MirrorCounts {
    let Some(limit) = opts.mirror else {
        return m;
    };
    extras.sort();
    m.found = extras.len() as u64;
    // Failed entries (a listing among them) and entries not attempted (the destination stopped)
    // leave the pass's picture incomplete; vanished, changed and not-copyable ones do not.
    let failed = copy.failed + copy.not_attempted;
    if (failed > 0 || m.failed > 0) && !opts.mirror_weigh_only {
        m.refused = Some(format!(
            "nothing deleted: the copy pass left {} entries failed and {} destination directories unlisted, so some listings may be incomplete; a mirror deletes only after a pass without failures",
            failed, m.failed
        ));
        return m;
    }
    let dst = roots.dsts[0].as_fd();
    let meter = progress.mount(&roots.names[0]);
    let meter = &*meter;
    // Weigh everything before deleting anything.
    for e in &extras {
        let counted = op(meter, 0, || open_rel(dst, &e.path.parent()))
            .and_then(|p| count_tree(p.as_fd(), &cstr(e.path.file_name()), e.dir, meter));
        match counted {
            Ok(n) => m.entries += n,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                m.failed += 1;
                sink.record(ReportEntry::failed(
                    e.path.clone(),
                    "count-extraneous",
                    &err,
                ));
            }
        }
    }
    if opts.mirror_weigh_only {
        // The coordinator decides for all shards together (`ingest_job::mirror::decide`).
        return m;
    }
    if m.failed > 0 {
        m.refused = Some(format!(
            "nothing deleted: {} entries only in the destination could not be counted",
            m.failed
        ));
        return m;
    }
    let in_scope = copy.entries - copy.excluded + m.entries;
    if !limit.allows(m.entries, in_scope) {
        m.refused = Some(format!(
            "nothing deleted: {} entries are only in the destination ({} names), more than the limit of {limit} ({in_scope} in scope); check the source is the right one, then raise the limit (maxDeletes) or delete them yourself",
            m.entries, m.found
        ));
        return m;
    }
    // One directory at a time, so that its times are put back once, after its last deletion.
    let mut i = 0;
    while i < extras.len() {
        let parent = extras[i].path.parent();
        let end = i + extras[i..]
            .iter()
            .take_while(|e| e.path.parent() == parent)
            .count();
        let dirs = open_rel(roots.src.as_fd(), &parent)
            .and_then(|s| Ok((s, op(meter, 0, || open_rel(dst, &parent))?)));
        let (src, dst_dir) = match dirs {
            Ok(d) => d,
            Err(err) => {
                for e in &extras[i..end] {
                    m.failed += 1;
                    sink.record(ReportEntry::failed(e.path.clone(), "open-dest-dir", &err));
                }
                i = end;
                continue;
            }
        };
        let mut changed = false;
        for e in &extras[i..end] {
            let name = cstr(e.path.file_name());
            // The source has it again (created since it was listed): the next pass copies it.
            match sys::stat_at(src.as_fd(), &name) {
                Ok(None) => {}
                Ok(Some(_)) => {
                    m.kept += 1;
                    continue;
                }
                Err(err) => {
                    m.failed += 1;
                    sink.record(ReportEntry::failed(e.path.clone(), "stat-source", &err));
                    continue;
                }
            }
            let mut n = 0;
            let deleted = delete_tree(dst_dir.as_fd(), &name, e.dir, meter, progress, &mut n);
            m.deleted += n;
            changed |= n > 0;
            match deleted {
                // Gone already (deleted by someone else since it was listed): nothing to say.
                Ok(()) if n == 0 => {}
                Ok(()) => {
                    sink.record(ReportEntry {
                        path: e.path.clone(),
                        outcome: Outcome::Deleted,
                        op: "delete".into(),
                        error: (n > 1).then(|| format!("with the {} entries below it", n - 1)),
                        errno: None,
                        mismatches: Vec::new(),
                        digest: None,
                        meta: None,
                    });
                }
                Err((names, err)) => {
                    changed = true;
                    m.failed += 1;
                    let mut failed = ReportEntry::failed(e.path.clone(), "delete", &err);
                    // Where below it the deletion stopped, and what it had deleted by then (those
                    // are counted; what is left, the verify pass finds).
                    if names.len() > 1 || n > 0 {
                        let at = names.iter().rev().fold(e.path.parent(), |p, c| p.join(c));
                        failed.error = Some(format!(
                            "{err} (at {at}, after deleting {n} entr{} below it)",
                            if n == 1 { "y" } else { "ies" }
                        ));
                    }
                    sink.record(failed);
                }
            }
        }
        // Deleting moved the directory's times; the copy had set them to the source's.
        if changed
            && opts.preserve.times
            && !opts.dir_times_in_verify
            && let Err(err) = sys::fstat(src.as_fd()).and_then(|sm| {
                op(meter, 0, || {
                    sys::set_meta_fd(dst_dir.as_fd(), &sm, false, false, true)
                })
            })
        {
            m.failed += 1;
            sink.record(ReportEntry::failed(
                parent.clone(),
                "set-dir-metadata",
                &err,
            ));
        }
        i = end;
    }
    m
}
