//! Checks that a job is usable before any data moves, and opens its roots.
//!
//! Everything here is an "unusable input" error (exit code 2 in the CLI): the message names the
//! argument, the path, and what would be valid. A refused job changes nothing: every path is
//! checked before anything is created (a destination that does not exist yet is judged by where
//! it would be), and what was created before a later refusal (a destination, the probe file) is
//! removed again, with the times of the directory it was made in put back.

use std::ffi::{CString, OsString};
use std::fs;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::engine::Roots;
use crate::job::{CopyJob, Options, Passes};
use crate::progress::{MountMeter, Progress};
use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("--threads: must be at least 1")]
    NoThreads,
    #[error("DEST: at least one destination directory is needed")]
    NoDestinations,
    #[error("SRC {}: cannot be opened ({}); give an existing, readable directory", .0.display(), .1)]
    SourceUnreadable(PathBuf, io::Error),
    #[error("SRC {}: is not a directory; give the directory whose contents are to be copied", .0.display())]
    SourceNotDirectory(PathBuf),
    #[error("DEST {}: cannot be created or opened as a directory ({})", .0.display(), .1)]
    DestUnusable(PathBuf, io::Error),
    #[error("DEST {}: is not writable ({}); give a directory this user can create files in", .0.display(), .1)]
    DestNotWritable(PathBuf, io::Error),
    #[error("DEST {}: is the source directory itself; give a different directory", .0.display())]
    DestIsSource(PathBuf),
    #[error("DEST {}: is inside SRC {}; the copy would copy itself. Give a directory outside the source", .0.display(), .1.display())]
    DestInsideSource(PathBuf, PathBuf),
    #[error("SRC {}: is inside DEST {}; the copy could overwrite its own source. Give a destination that does not contain the source", .1.display(), .0.display())]
    SourceInsideDest(PathBuf, PathBuf),
    #[error(
        "DEST {}: does not show the same tree as DEST {} (a probe file written through the first is not visible through this one); every DEST must be the same export reached through a different address",
        .1.display(), .0.display()
    )]
    DestsDiffer(PathBuf, PathBuf),
    #[error("{0}")]
    FaultSpec(String),
}

pub(crate) fn check_options(job: &CopyJob, opts: &Options) -> Result<(), SetupError> {
    crate::fault::init().map_err(SetupError::FaultSpec)?;
    if opts.threads == 0 {
        return Err(SetupError::NoThreads);
    }
    if job.destinations.is_empty() {
        return Err(SetupError::NoDestinations);
    }
    Ok(())
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(fs::File::open(path)?.into())
}

/// Where a path is, or would be once its missing directories are created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The nearest existing ancestor (the path itself when it exists), with symlinks resolved.
    pub existing: PathBuf,
    /// The directories still to create under `existing`, in order (plain names only).
    pub missing: Vec<OsString>,
}

impl Target {
    /// The canonical path the target has (or will have).
    pub fn path(&self) -> PathBuf {
        let mut p = self.existing.clone();
        p.extend(&self.missing);
        p
    }
}

/// Resolves `path` without creating anything: its nearest existing ancestor, canonicalized,
/// and the names below it that do not exist yet. `.` is dropped and `..` in the missing part
/// is taken lexically (which is what creating the directories and then following `..` would
/// do, since they are no symlinks). An existing non-directory on the way is an error (ENOTDIR).
pub fn resolve_target(path: &Path) -> io::Result<Target> {
    let mut path = std::path::absolute(path)?;
    loop {
        let comps: Vec<Component> = path.components().collect();
        let mut split = comps.len();
        for i in 1..=comps.len() {
            let prefix: PathBuf = comps[..i].iter().collect();
            match fs::symlink_metadata(&prefix) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    split = i - 1;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let existing: PathBuf = comps[..split].iter().collect();
        let existing = fs::canonicalize(&existing)?;
        if split == comps.len() {
            return Ok(Target {
                existing,
                missing: Vec::new(),
            });
        }
        if !fs::metadata(&existing)?.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        let rest = &comps[split..];
        if rest.iter().all(|c| matches!(c, Component::Normal(_))) {
            return Ok(Target {
                existing,
                missing: rest.iter().map(|c| c.as_os_str().to_owned()).collect(),
            });
        }
        // Take `.` and `..` out of the missing part, then look again: `..` may lead back into
        // directories that exist.
        let mut next = existing;
        for c in rest {
            match c {
                Component::Normal(n) => next.push(n),
                Component::ParentDir => {
                    next.pop();
                }
                _ => {}
            }
        }
        path = next;
    }
}

/// True when the directory `inner` (canonical) is `outer` (canonical, with `id` its inode) or
/// below it; the inode check catches the same directory reached through a bind mount under
/// another name.
fn within(inner: &Path, outer: &Path, id: Option<(u64, u64)>) -> bool {
    inner.starts_with(outer)
        || id.is_some_and(|id| {
            inner
                .ancestors()
                .any(|a| fs::metadata(a).is_ok_and(|m| (m.dev(), m.ino()) == id))
        })
}

/// The source, checked.
struct SourceInfo {
    canon: PathBuf,
    id: (u64, u64),
}

/// Checks the source and every destination against each other, creating and changing nothing.
pub(crate) fn check_paths(job: &CopyJob) -> Result<Vec<Target>, SetupError> {
    let src = check_source(job)?;
    let mut targets = Vec::with_capacity(job.destinations.len());
    for dest in &job.destinations {
        let unusable = |e| SetupError::DestUnusable(dest.clone(), e);
        let target = resolve_target(dest).map_err(unusable)?;
        let canon = target.path();
        let id = if target.missing.is_empty() {
            let meta = fs::metadata(&canon).map_err(unusable)?;
            if !meta.is_dir() {
                return Err(unusable(io::Error::from_raw_os_error(libc::ENOTDIR)));
            }
            Some((meta.dev(), meta.ino()))
        } else {
            None
        };
        if canon == src.canon || id == Some(src.id) {
            return Err(SetupError::DestIsSource(dest.clone()));
        }
        if within(&canon, &src.canon, Some(src.id)) {
            return Err(SetupError::DestInsideSource(
                dest.clone(),
                job.source.clone(),
            ));
        }
        if within(&src.canon, &canon, id) {
            return Err(SetupError::SourceInsideDest(
                dest.clone(),
                job.source.clone(),
            ));
        }
        targets.push(target);
    }
    Ok(targets)
}

fn check_source(job: &CopyJob) -> Result<SourceInfo, SetupError> {
    let unreadable = |e| SetupError::SourceUnreadable(job.source.clone(), e);
    let meta = fs::metadata(&job.source).map_err(unreadable)?;
    if !meta.is_dir() {
        return Err(SetupError::SourceNotDirectory(job.source.clone()));
    }
    Ok(SourceInfo {
        canon: fs::canonicalize(&job.source).map_err(unreadable)?,
        id: (meta.dev(), meta.ino()),
    })
}

/// Directories this run created, to remove again if the job is refused after all.
#[derive(Default)]
struct Created {
    dirs: Vec<Made>,
}

/// The directories made for one destination.
struct Made {
    /// The directory the first one was made in, and its attributes (times) before.
    parent: Option<(PathBuf, sys::Meta)>,
    /// In the order made.
    dirs: Vec<PathBuf>,
}

impl Created {
    fn make(&mut self, t: &Target) -> io::Result<()> {
        if t.missing.is_empty() {
            return Ok(());
        }
        let parent = open_dir(&t.existing).and_then(|fd| sys::fstat(fd.as_fd()));
        let mut made = Vec::new();
        let mut p = t.existing.clone();
        let mut r = Ok(());
        for name in &t.missing {
            p.push(name);
            match fs::DirBuilder::new().mode(0o777).create(&p) {
                Ok(()) => made.push(p.clone()),
                // Made by someone else meanwhile (another worker): theirs, not ours to remove.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && p.is_dir() => {}
                Err(e) => {
                    r = Err(e);
                    break;
                }
            }
        }
        self.dirs.push(Made {
            parent: parent.ok().map(|m| (t.existing.clone(), m)),
            dirs: made,
        });
        r
    }

    /// Removes what was made (only while empty) and puts the parents' times back.
    fn undo(self) {
        for Made { parent, dirs } in self.dirs.into_iter().rev() {
            let all_gone = dirs.iter().rev().all(|d| fs::remove_dir(d).is_ok());
            if let (true, false, Some((path, before))) = (all_gone, dirs.is_empty(), parent)
                && let Ok(fd) = open_dir(&path)
            {
                let _ = rustix::fs::futimens(fd.as_fd(), &before.timestamps());
            }
        }
    }
}

/// Opens and checks the source and every destination, creating missing destinations. Every
/// check that needs no writing is done before anything is created.
///
/// Each destination's calls are counted on its [`crate::MountMeter`] in `progress`, so that a
/// mount that stops answering here is seen as well as one that stops in the middle of a copy.
pub(crate) fn open_roots(
    job: &CopyJob,
    opts: &Options,
    progress: &Progress,
) -> Result<Roots, SetupError> {
    let targets = check_paths(job)?;
    let src =
        open_dir(&job.source).map_err(|e| SetupError::SourceUnreadable(job.source.clone(), e))?;
    let names = crate::mount_names(&job.destinations);
    let mut created = Created::default();
    let opened = (|| {
        let mut dsts = Vec::with_capacity(job.destinations.len());
        // A report-only verify (a dry run) writes nothing into the destination, not even a probe
        // or a missing directory of its path.
        let report_only = opts.dry_run || (opts.passes == Passes::VerifyOnly && !opts.repair);
        for ((dest, target), name) in job.destinations.iter().zip(&targets).zip(&names) {
            let unusable = |e| SetupError::DestUnusable(dest.clone(), e);
            let meter = progress.mount(name);
            let call = meter.begin();
            if report_only && !target.missing.is_empty() {
                return Err(unusable(io::Error::new(
                    io::ErrorKind::NotFound,
                    "does not exist, and a report-only check (a dry run) creates nothing; a copy would create it and everything in it",
                )));
            }
            created.make(target).map_err(unusable)?;
            dsts.push(open_dir(&target.path()).map_err(unusable)?);
            call.end(0);
        }
        let mut probed_at = None;
        if opts.probe_destinations && !report_only {
            let meters: Vec<_> = names.iter().map(|n| progress.mount(n)).collect();
            // Several workers probe the same root at once, each putting its times back: were each
            // to put back what it read before its own probe, one that read after another's
            // create would leave that moment's mtime (and a resumed run that finds every shard
            // done does not settle the root again). The source root's times, which the copy
            // gives the root anyway, are the same for all of them.
            let restore = opts
                .preserve
                .times
                .then(|| sys::fstat(src.as_fd()).ok().map(|m| m.timestamps()))
                .flatten();
            probed_at = probe(job, &dsts, &meters, restore)?;
        }
        Ok((dsts, probed_at))
    })();
    match opened {
        Ok((dsts, probed_at)) => Ok(Roots {
            src,
            dsts,
            names,
            probed_at,
        }),
        Err(e) => {
            created.undo();
            Err(e)
        }
    }
}

/// Probe files are named `PROBE_PREFIX` + `HOST.PID.NANOS`.
const PROBE_PREFIX: &str = ".vfxt-ingest-probe.";

/// Whether a name in a destination root is a probe file's (this or another vfxt-ingest's).
pub(crate) fn is_probe_name(name: &[u8]) -> bool {
    name.starts_with(PROBE_PREFIX.as_bytes())
}
/// A probe lives a few seconds; one this much older than ours (by the server's clock) was left by a
/// process that died in the middle of its probe.
const PROBE_STALE_AFTER: Duration = Duration::from_secs(600);

/// This machine's name as it goes into a probe file's name: letters, digits and `-` only, so the
/// name splits on dots.
fn probe_host() -> String {
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if host.is_empty() { "_".into() } else { host }
}

/// Proves that the first destination is writable and that every other one shows the same tree:
/// a probe file created through the first must be seen, with its contents, through each of the
/// others. Only a name written through one mount and read through another proves that: inode
/// numbers repeat across file systems (every ext4 root is inode 2), and comparing the roots'
/// attributes or listings races with other workers writing into the same root.
///
/// The probe leaves nothing behind, on every path: the file is removed whatever happened after
/// its create (and the root's atime and mtime are put back); files of earlier probes whose
/// process died mid-probe (SIGKILL, a crash, a node lost) are removed here, once per process and
/// root: those of this machine whose process is gone, those of other machines once older than
/// [`PROBE_STALE_AFTER`]. The create and close go through [`sys`], so the fault hook counts
/// them (as `create` and `close`, before the copy's own).
/// Returns the probe file's ctime: the destination server's clock when the run began writing.
fn probe(
    job: &CopyJob,
    dsts: &[OwnedFd],
    meters: &[Arc<MountMeter>],
    restore: Option<rustix::fs::Timestamps>,
) -> Result<Option<(i64, i64)>, SetupError> {
    let first = &job.destinations[0];
    let root = dsts[0].as_fd();
    let unusable = |e| SetupError::DestUnusable(first.clone(), e);
    // Every call on the destination is a task of its meter, so that a server that stops
    // answering in the middle of one is found by the watchdog, as in the copy.
    let before = {
        let _call = meters[0].begin();
        sys::fstat(root).map_err(unusable)?
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let host = probe_host();
    let name = format!("{PROBE_PREFIX}{host}.{}.{nanos}", std::process::id());
    let cname = CString::new(name.clone()).expect("no NUL in a probe name");
    let token = format!("vfxt-ingest probe {host} {nanos}\n");
    let result = probe_with(job, dsts, meters, &cname, token.as_bytes(), &host);
    // Whatever happened: the file goes (it may not exist; then this fails harmlessly), and the
    // root's times are put back (to the source root's when times are kept: see `open_roots`).
    let _call = meters[0].begin();
    let _ = sys::unlink_at(root, &cname, false);
    let _ = rustix::fs::futimens(root, &restore.unwrap_or_else(|| before.timestamps()));
    result
}

fn probe_with(
    job: &CopyJob,
    dsts: &[OwnedFd],
    meters: &[Arc<MountMeter>],
    name: &CString,
    token: &[u8],
    host: &str,
) -> Result<Option<(i64, i64)>, SetupError> {
    let first = &job.destinations[0];
    let root = dsts[0].as_fd();
    let call = meters[0].begin();
    let not_writable = |e| SetupError::DestNotWritable(first.clone(), e);
    let fd = sys::open_dest_file(root, name, true, 0o644).map_err(not_writable)?;
    let written = rustix::io::write(&fd, token).map_err(sys::to_io);
    let closed = sys::close_checked(fd);
    match written {
        Ok(n) if n == token.len() => closed.map_err(not_writable)?,
        Ok(_) => return Err(not_writable(io::Error::from_raw_os_error(libc::EIO))),
        Err(e) => return Err(not_writable(e)),
    }
    let ours = sys::stat_at(root, name).ok().flatten();
    if let Some(ours) = &ours {
        remove_stale_probes(root, name, host, ours);
    }
    call.end(0);
    for ((dest, fd), meter) in job.destinations[1..]
        .iter()
        .zip(&dsts[1..])
        .zip(&meters[1..])
    {
        let _call = meter.begin();
        // NFS clients cache lookups (also negative ones) for a moment: look a few times.
        let seen = (0..30).any(|i| {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            read_small(fd.as_fd(), name).is_ok_and(|got| got == token)
        });
        if !seen {
            return Err(SetupError::DestsDiffer(first.clone(), dest.clone()));
        }
    }
    Ok(ours.map(|m| m.ctime))
}

fn read_small(dir: BorrowedFd<'_>, name: &CString) -> io::Result<Vec<u8>> {
    let fd = sys::open_read(dir, name)?;
    let mut buf = vec![0u8; 256];
    let n = rustix::io::read(&fd, &mut buf).map_err(sys::to_io)?;
    buf.truncate(n);
    Ok(buf)
}

/// Roots (device, inode) already cleaned of stale probe files by this process.
static CLEANED: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

/// Removes probe files left by processes that died mid-probe (see [`probe`]). `ours` is our own
/// probe file's attributes: its mtime is "now" by the server's clock.
fn remove_stale_probes(root: BorrowedFd<'_>, own: &CString, host: &str, ours: &sys::Meta) {
    let Ok(root_meta) = sys::fstat(root) else {
        return;
    };
    {
        let mut done = CLEANED.lock().unwrap();
        let id = (root_meta.dev, root_meta.ino);
        if done.contains(&id) {
            return;
        }
        done.push(id);
    }
    let mut names: Vec<CString> = Vec::new();
    let mut buf = vec![MaybeUninit::<u8>::uninit(); 64 << 10];
    let _ = sys::list_dir(root, &mut buf, |n, _| {
        if n.to_bytes().starts_with(PROBE_PREFIX.as_bytes()) && n != own.as_c_str() {
            names.push(n.to_owned());
        }
    });
    for n in names {
        let Some((their_host, pid)) = parse_probe_name(n.as_bytes()) else {
            continue;
        };
        let stale = if their_host == Some(host) {
            !pid_alive(pid)
        } else {
            // Another machine's (or from before names carried the host): only by age.
            sys::stat_at(root, &n).is_ok_and(|m| {
                m.is_some_and(|m| {
                    m.mtime.0.saturating_add(PROBE_STALE_AFTER.as_secs() as i64) < ours.mtime.0
                })
            })
        };
        if stale {
            let _ = sys::unlink_at(root, &n, false);
        }
    }
}

/// `HOST.PID.NANOS` (or the older `PID.NANOS`) after the prefix, exactly: the host (if any) and pid.
fn parse_probe_name(name: &[u8]) -> Option<(Option<&str>, u32)> {
    let rest = std::str::from_utf8(name.strip_prefix(PROBE_PREFIX.as_bytes())?).ok()?;
    let parts: Vec<&str> = rest.split('.').collect();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (host, pid, nanos) = match parts[..] {
        [host, pid, nanos] => (Some(host), pid, nanos),
        [pid, nanos] => (None, pid, nanos),
        _ => return None,
    };
    if !digits(pid) || !digits(nanos) || host.is_some_and(str::is_empty) {
        return None;
    }
    Some((host, pid.parse().ok()?))
}

fn pid_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return true;
    };
    // EPERM: it exists, owned by someone else.
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_names_parse_exactly() {
        assert_eq!(
            parse_probe_name(b".vfxt-ingest-probe.node-1.42.1700000000000000000"),
            Some((Some("node-1"), 42))
        );
        assert_eq!(
            parse_probe_name(b".vfxt-ingest-probe.42.17"),
            Some((None, 42))
        );
        for other in [
            &b".vfxt-ingest-probe.node.42"[..],
            b".vfxt-ingest-probe.node.4x.17",
            b".vfxt-ingest-probe.a.b.42.17",
            b".vfxt-ingest-probe..42.17",
            b"vfxt-ingest-probe.node.42.17",
            b".vfxt-ingest-probe.node.42.17.bak",
        ] {
            assert_eq!(
                parse_probe_name(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn targets_resolve_through_the_nearest_existing_ancestor() {
        let tmp = tempfile::tempdir().unwrap();
        let t = fs::canonicalize(tmp.path()).unwrap();
        fs::create_dir(t.join("a")).unwrap();
        std::os::unix::fs::symlink(t.join("a"), t.join("link")).unwrap();
        fs::write(t.join("file"), b"x").unwrap();
        let r = |p: &Path| resolve_target(p).unwrap();
        assert_eq!(r(&t.join("a")).path(), t.join("a"));
        assert_eq!(r(&t.join("link/x/y")).path(), t.join("a/x/y"));
        assert_eq!(r(&t.join("link/x/y")).missing, ["x", "y"]);
        assert_eq!(r(&t.join("x/../a/./y")).path(), t.join("a/y"));
        assert_eq!(r(&t.join("x/../a/./y")).existing, t.join("a"));
        assert_eq!(
            resolve_target(&t.join("file/sub"))
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ENOTDIR)
        );
    }
}
