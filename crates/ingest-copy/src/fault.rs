//! Fault injection, for tests: make the N-th operation of a kind fail, kill the process, or
//! change the source under the copy, so that "killed part-way" and "disk full at the N-th
//! write" are exact instead of timed.
//!
//! Off unless `VFXT_INGEST_FAULTS` is set. It is read once, by [`init`] (called when a run
//! starts); a spec that does not parse is unusable input. The form is a comma-separated list
//! of `POINT@N=ACTION` (the N-th operation only, counting from 1, over all threads) or
//! `POINT@N..=ACTION` (the N-th and every later one: a disk that stays full):
//!
//! ```text
//! VFXT_INGEST_FAULTS='write@3=enospc'            # the third data write fails with ENOSPC
//! VFXT_INGEST_FAULTS='create@10=kill'             # SIGKILL at the tenth destination create
//! VFXT_INGEST_FAULTS='read@2=change-source,close@5..=eio'
//! ```
//!
//! Points: see [`Point`]. Actions: `kill` (SIGKILL to this process), an errno (`enospc`, `eio`,
//! `edquot`, `erofs`, `estale`, `eacces`, `enoent`), `change-source` (appends a byte to the
//! source file being read and moves its mtime, as a user writing to it would), and
//! `vanish-source` (removes the source entry being opened). The last two modify the source:
//! tests only.
//!
//! Counting: the destination probe at the start of a run (it proves the destinations writable and
//! the same export, see `setup.rs`) creates and closes one file through the first destination, so
//! when probing is on (`copy`, and every shard of a worker's copy phase) it is a run's first
//! `create` and first `close`: `create@1=enospc` is a destination that cannot be written at all,
//! `close@1=kill` dies in the middle of the probe.
//!
//! The cost when off is one relaxed atomic load per operation.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// The environment variable read by [`init`].
pub const ENV: &str = "VFXT_INGEST_FAULTS";
/// With `vfxt-ingest run`: only the worker process of this slot (0, 1, …) gets [`ENV`], so one
/// worker dies and the others take its shards.
pub const WORKER_ENV: &str = "VFXT_INGEST_FAULTS_WORKER";

/// Where a fault can strike. The names are the ones used in the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Opening a source file for reading (`open-source`).
    OpenSource,
    /// Creating or opening a destination file for writing (`create`).
    Create,
    /// One data transfer into a destination file: a `copy_file_range` or `pwrite` call (`write`).
    Write,
    /// One read of a source file's data (`read`).
    Read,
    /// Closing a destination file after writing (`close`).
    Close,
    /// Creating a destination directory (`mkdir`).
    Mkdir,
    /// Setting metadata (owner, mode, times) on a destination entry (`set-meta`).
    SetMeta,
    /// Deleting a destination entry only in the destination, in mirror mode (`delete`).
    Delete,
}

const POINTS: [(Point, &str); 8] = [
    (Point::OpenSource, "open-source"),
    (Point::Create, "create"),
    (Point::Write, "write"),
    (Point::Read, "read"),
    (Point::Close, "close"),
    (Point::Mkdir, "mkdir"),
    (Point::SetMeta, "set-meta"),
    (Point::Delete, "delete"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Kill,
    Errno(i32),
    ChangeSource,
    VanishSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    point: Point,
    at: u64,
    onwards: bool,
    action: Action,
}

struct Faults {
    rules: Vec<Rule>,
    counts: [AtomicU64; POINTS.len()],
}

static ACTIVE: AtomicBool = AtomicBool::new(false);
static FAULTS: OnceLock<Faults> = OnceLock::new();

/// Reads [`ENV`] once. Later calls return the first result.
pub fn init() -> Result<(), String> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        let Ok(spec) = std::env::var(ENV) else {
            return Ok(());
        };
        let rules = parse(&spec).map_err(|e| format!("{ENV}={spec:?}: {e}"))?;
        if rules.is_empty() {
            return Ok(());
        }
        eprintln!("warning: {ENV} is set: faults are injected ({spec}); for tests only");
        let _ = FAULTS.set(Faults {
            rules,
            counts: Default::default(),
        });
        ACTIVE.store(true, Relaxed);
        Ok(())
    })
    .clone()
}

fn parse(spec: &str) -> Result<Vec<Rule>, String> {
    let mut rules = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lhs, action) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected POINT@N=ACTION"))?;
        let (point, n) = lhs
            .split_once('@')
            .ok_or_else(|| format!("{part:?}: expected POINT@N=ACTION"))?;
        let point = POINTS
            .iter()
            .find(|(_, name)| *name == point)
            .map(|(p, _)| *p)
            .ok_or_else(|| {
                let names: Vec<_> = POINTS.iter().map(|(_, n)| *n).collect();
                format!(
                    "{point:?} is not a fault point; one of {}",
                    names.join(", ")
                )
            })?;
        let (n, onwards) = match n.strip_suffix("..") {
            Some(n) => (n, true),
            None => (n, false),
        };
        let at: u64 = n
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{part:?}: N must be a whole number from 1"))?;
        let action = match action {
            "kill" => Action::Kill,
            "change-source" => Action::ChangeSource,
            "vanish-source" => Action::VanishSource,
            "enospc" => Action::Errno(libc::ENOSPC),
            "eio" => Action::Errno(libc::EIO),
            "edquot" => Action::Errno(libc::EDQUOT),
            "erofs" => Action::Errno(libc::EROFS),
            "estale" => Action::Errno(libc::ESTALE),
            "eacces" => Action::Errno(libc::EACCES),
            "enoent" => Action::Errno(libc::ENOENT),
            other => {
                return Err(format!(
                    "{other:?} is not a fault action; one of kill, change-source, vanish-source, enospc, eio, edquot, erofs, estale, eacces, enoent"
                ));
            }
        };
        rules.push(Rule {
            point,
            at,
            onwards,
            action,
        });
    }
    Ok(rules)
}

/// What the operation is working on, for the actions that change the source.
#[derive(Clone, Copy, Default)]
pub struct Target<'a> {
    /// The source file being read.
    pub source_fd: Option<BorrowedFd<'a>>,
    /// The source entry being opened: its directory and name.
    pub source_entry: Option<(BorrowedFd<'a>, &'a std::ffi::CStr)>,
}

/// Counts one operation at `point` and applies the fault that falls on it, if any: an error to
/// return instead of doing the operation, or a change to the source before it is done.
#[inline]
pub fn hit(point: Point, target: Target<'_>) -> io::Result<()> {
    if !ACTIVE.load(Relaxed) {
        return Ok(());
    }
    strike(point, target)
}

#[cold]
fn strike(point: Point, target: Target<'_>) -> io::Result<()> {
    let Some(f) = FAULTS.get() else {
        return Ok(());
    };
    let idx = POINTS.iter().position(|(p, _)| *p == point).unwrap_or(0);
    let n = f.counts[idx].fetch_add(1, Relaxed) + 1;
    for r in f.rules.iter().filter(|r| r.point == point) {
        if n != r.at && !(r.onwards && n > r.at) {
            continue;
        }
        match r.action {
            Action::Kill => {
                // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            }
            Action::Errno(e) => return Err(io::Error::from_raw_os_error(e)),
            Action::ChangeSource => {
                if let Some(fd) = target.source_fd {
                    change_source(fd);
                }
            }
            Action::VanishSource => {
                if let Some((dir, name)) = target.source_entry {
                    let _ = rustix::fs::unlinkat(dir, name, rustix::fs::AtFlags::empty());
                }
            }
        }
    }
    Ok(())
}

/// Appends a byte to the file open on `fd` (through /proc, since `fd` is read-only) and moves
/// its mtime a second forward, so the change is visible to size, mtime and ctime checks.
fn change_source(fd: BorrowedFd<'_>) {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    if let Ok(f) = std::fs::OpenOptions::new().append(true).open(&path) {
        use std::io::Write;
        let mut f = f;
        let _ = f.write_all(b"+");
        if let Ok(m) = f.metadata()
            && let Ok(t) = m.modified()
        {
            let _ = f.set_modified(t + std::time::Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_points_counts_and_actions() {
        let r = parse("write@3=enospc, create@1..=kill,read@2=change-source").unwrap();
        assert_eq!(
            r,
            vec![
                Rule {
                    point: Point::Write,
                    at: 3,
                    onwards: false,
                    action: Action::Errno(libc::ENOSPC)
                },
                Rule {
                    point: Point::Create,
                    at: 1,
                    onwards: true,
                    action: Action::Kill
                },
                Rule {
                    point: Point::Read,
                    at: 2,
                    onwards: false,
                    action: Action::ChangeSource
                },
            ]
        );
    }

    #[test]
    fn refuses_what_it_does_not_know_naming_it() {
        assert!(parse("wrte@1=eio").unwrap_err().contains("\"wrte\""));
        assert!(parse("write@0=eio").unwrap_err().contains("from 1"));
        assert!(parse("write@1=boom").unwrap_err().contains("\"boom\""));
        assert!(parse("write=eio").unwrap_err().contains("POINT@N=ACTION"));
    }
}
