//! Live counters, shared by the engine's threads and whoever displays or reports progress.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Monotonic counters; read them at any time from another thread.
#[derive(Debug, Default)]
pub struct Progress {
    /// Entries (of every type) finished by the copy pass, copied or skipped.
    pub entries: AtomicU64,
    /// Non-directory entries finished by the copy pass: written, linked or already up to date.
    pub files: AtomicU64,
    /// Bytes of regular files finished or skipped (skipped files count their size: they are done).
    pub bytes: AtomicU64,
    /// Bytes actually written.
    pub bytes_written: AtomicU64,
    /// Entries that failed.
    pub failed: AtomicU64,
    /// Entries checked by the verify pass.
    pub verified: AtomicU64,
    /// Bytes of regular files checked by the verify pass.
    pub verified_bytes: AtomicU64,
    /// Directories listed so far, and directories found but not yet listed.
    pub dirs_listed: AtomicU64,
    pub dirs_queued: AtomicU64,
}

/// A plain copy of [`Progress`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    pub bytes_written: u64,
    pub failed: u64,
    pub verified: u64,
    pub verified_bytes: u64,
    pub dirs_listed: u64,
    pub dirs_queued: u64,
}

impl Progress {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            entries: self.entries.load(Relaxed),
            files: self.files.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
            failed: self.failed.load(Relaxed),
            verified: self.verified.load(Relaxed),
            verified_bytes: self.verified_bytes.load(Relaxed),
            dirs_listed: self.dirs_listed.load(Relaxed),
            dirs_queued: self.dirs_queued.load(Relaxed),
        }
    }
}
