//! Checks that a job is usable before any data moves, and opens its roots.
//!
//! Everything here is an "unusable input" error (exit code 2 in the CLI): the message names the
//! argument, the path, and what would be valid.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::engine::Roots;
use crate::job::{CopyJob, Options, Passes};
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
}

pub(crate) fn check_options(job: &CopyJob, opts: &Options) -> Result<(), SetupError> {
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

/// Opens and checks the source and every destination, creating missing destinations.
pub(crate) fn open_roots(job: &CopyJob, opts: &Options) -> Result<Roots, SetupError> {
    let src_meta = fs::metadata(&job.source)
        .map_err(|e| SetupError::SourceUnreadable(job.source.clone(), e))?;
    if !src_meta.is_dir() {
        return Err(SetupError::SourceNotDirectory(job.source.clone()));
    }
    let src =
        open_dir(&job.source).map_err(|e| SetupError::SourceUnreadable(job.source.clone(), e))?;
    let src_canon = fs::canonicalize(&job.source)
        .map_err(|e| SetupError::SourceUnreadable(job.source.clone(), e))?;

    let mut dsts = Vec::with_capacity(job.destinations.len());
    for dest in &job.destinations {
        fs::create_dir_all(dest).map_err(|e| SetupError::DestUnusable(dest.clone(), e))?;
        let meta = fs::metadata(dest).map_err(|e| SetupError::DestUnusable(dest.clone(), e))?;
        if (meta.dev(), meta.ino()) == (src_meta.dev(), src_meta.ino()) {
            return Err(SetupError::DestIsSource(dest.clone()));
        }
        let canon =
            fs::canonicalize(dest).map_err(|e| SetupError::DestUnusable(dest.clone(), e))?;
        if canon == src_canon {
            return Err(SetupError::DestIsSource(dest.clone()));
        }
        if canon.starts_with(&src_canon) || has_ancestor(&canon, (src_meta.dev(), src_meta.ino())) {
            return Err(SetupError::DestInsideSource(
                dest.clone(),
                job.source.clone(),
            ));
        }
        if src_canon.starts_with(&canon) || has_ancestor(&src_canon, (meta.dev(), meta.ino())) {
            return Err(SetupError::SourceInsideDest(
                dest.clone(),
                job.source.clone(),
            ));
        }
        dsts.push(open_dir(dest).map_err(|e| SetupError::DestUnusable(dest.clone(), e))?);
    }
    // A report-only verify writes nothing into the destination, not even a probe.
    let report_only = opts.passes == Passes::VerifyOnly && !opts.repair;
    if opts.probe_destinations && !report_only {
        probe(job, &dsts)?;
    }
    Ok(Roots { src, dsts })
}

/// True when a directory above `path` (after symlinks are resolved) is the inode `id`: catches
/// the same directory reached through a bind mount under another name.
fn has_ancestor(path: &Path, id: (u64, u64)) -> bool {
    path.ancestors()
        .skip(1)
        .any(|a| fs::metadata(a).is_ok_and(|m| (m.dev(), m.ino()) == id))
}

/// Writes a probe file through the first destination and reads it back through each of the
/// others. Then removes it and puts the root's times back, so the probe leaves no trace.
fn probe(job: &CopyJob, dsts: &[OwnedFd]) -> Result<(), SetupError> {
    let first = &job.destinations[0];
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let name = format!(".vfxt-ingest-probe.{}.{nanos}", std::process::id());
    let token = format!("vfxt-ingest probe {nanos}\n");
    let root_before =
        sys::fstat(dsts[0].as_fd()).map_err(|e| SetupError::DestUnusable(first.clone(), e))?;
    let path0 = first.join(&name);
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path0)
        .and_then(|mut f| f.write_all(token.as_bytes()));
    if let Err(e) = written {
        return Err(SetupError::DestNotWritable(first.clone(), e));
    }
    let mut result = Ok(());
    for dest in &job.destinations[1..] {
        // NFS clients cache lookups (also negative ones) for a moment: look a few times.
        let seen = (0..30).any(|i| {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            let mut got = String::new();
            fs::File::open(dest.join(&name))
                .and_then(|mut f| f.read_to_string(&mut got))
                .is_ok()
                && got == token
        });
        if !seen {
            result = Err(SetupError::DestsDiffer(first.clone(), dest.clone()));
            break;
        }
    }
    let _ = fs::remove_file(&path0);
    let _ = rustix::fs::futimens(dsts[0].as_fd(), &root_before.timestamps());
    result
}
