//! The verifier's repairs, done by the copy engine.
//!
//! The verifier (`verify.rs`) only reads; when it finds a difference it asks a [`Repair`] to fix
//! that one path and then looks again with its own code. This is the repairer the engine
//! provides: one forced copy of one path (or its metadata only), through the engine's own
//! copy functions, so that a repaired entry is exactly what a copy would have made.

use std::io;

use ingest_path::RelPath;

use crate::Options;
use crate::engine::{Pass, Roots, Walk};
use crate::progress::Progress;
use crate::report::{Mismatch, ReportSink};
use crate::sys::Kind;
use crate::verify::Repair;

/// Repairs through a copy pass's machinery (its counters are not reported: the verifier counts
/// repairs).
pub(crate) struct EngineRepair<'a> {
    walk: Walk<'a>,
}

impl<'a> EngineRepair<'a> {
    pub(crate) fn new(
        opts: &'a Options,
        roots: &'a Roots,
        progress: &'a Progress,
        sink: &'a dyn ReportSink,
    ) -> Self {
        EngineRepair {
            walk: Walk::new(Pass::Copy, opts, roots, progress, sink),
        }
    }
}

impl Repair for EngineRepair<'_> {
    fn repair(
        &self,
        rel: &RelPath,
        diffs: &[Mismatch],
        link_to: Option<&RelPath>,
        mount: usize,
    ) -> Result<(), (&'static str, io::Error)> {
        self.walk.repair_path(rel, diffs, link_to, mount)
    }
}

/// Whether a repair must re-create the entry (re-copy a file's data, re-make a symlink or a
/// special file, create a directory) rather than set its metadata. Only mode, owner, xattrs and
/// a directory's mtime can be set in place: a regular file whose mtime differs may have data
/// that differs too (the copy skips files by size and mtime), so it is re-copied, split files
/// included.
pub(crate) fn needs_data(kind: Kind, diffs: &[Mismatch]) -> bool {
    diffs.iter().any(|d| match d {
        Mismatch::Mode | Mismatch::Owner | Mismatch::Xattrs => false,
        Mismatch::Mtime => kind != Kind::Dir,
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_metadata_differences_are_fixed_in_place() {
        use Mismatch::*;
        assert!(!needs_data(Kind::File, &[Mode, Owner, Xattrs]));
        assert!(needs_data(Kind::File, &[Mode, Mtime]));
        assert!(!needs_data(Kind::Dir, &[Mtime, Mode]));
        assert!(needs_data(Kind::Dir, &[Missing]));
        assert!(needs_data(Kind::Symlink, &[Mtime]));
        for d in [Size, Content, Type, LinkTarget, HardLink, Missing] {
            assert!(needs_data(Kind::File, &[d]), "{d:?}");
        }
    }
}
