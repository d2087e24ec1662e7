//! The one mapping from plan scopes to the copy engine's scopes.
//!
//! The cluster (and `run`) copies every shard first, then verifies every shard. A file cut into
//! byte ranges is written by several shards; its metadata is set, and the whole file checked, by
//! a `Finalize` in the verify phase of the shard holding its first range, when all ranges are done.

use std::collections::BTreeSet;
use std::sync::Arc;

use ingest_copy::{MultiLinked, Options, RelPath, Scope};

use crate::format::{Plan, Shard, ShardScope};

/// Which pass a shard is run for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Copy,
    Verify,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Copy => "copy",
            Phase::Verify => "verify",
        }
    }
}

/// The engine scopes of one shard in one phase (may be empty: later ranges of a split file have
/// nothing to verify on their own).
pub fn engine_scopes(shard: &Shard, phase: Phase) -> Vec<Scope> {
    shard
        .scopes
        .iter()
        .filter_map(|s| engine_scope(s, phase))
        .collect()
}

fn engine_scope(s: &ShardScope, phase: Phase) -> Option<Scope> {
    Some(match (s, phase) {
        (ShardScope::Tree { dir }, _) => Scope::Tree(dir.clone()),
        (
            ShardScope::Entries {
                dir,
                from,
                to,
                subtrees,
            },
            _,
        ) => Scope::Entries {
            dir: dir.clone(),
            from: from.clone(),
            to: to.clone(),
            subtrees: *subtrees,
        },
        (ShardScope::FileRange { file, offset, len }, Phase::Copy) => Scope::FileRange {
            file: file.clone(),
            offset: *offset,
            len: *len,
        },
        (
            ShardScope::FileRange {
                file, offset: 0, ..
            },
            Phase::Verify,
        ) => Scope::Finalize(file.clone()),
        (ShardScope::FileRange { .. }, Phase::Verify) => return None,
        (ShardScope::LinkGroup { paths }, _) => Scope::LinkGroup(paths.clone()),
    })
}

/// Which paths the plan's `LinkGroup` scopes copy, so that trees and ranges leave exactly those
/// alone (a multi-linked file the scan did not group is still copied where it is met). Set it
/// once per worker as `Options::multilinked`: every shard of the plan shares it.
pub fn linked_elsewhere(plan: &Plan) -> MultiLinked {
    let paths: BTreeSet<RelPath> = plan
        .shards
        .iter()
        .flat_map(|s| &s.scopes)
        .filter_map(|sc| match sc {
            ShardScope::LinkGroup { paths } => Some(paths),
            _ => None,
        })
        .flatten()
        .cloned()
        .collect();
    MultiLinked::Elsewhere(Arc::new(paths))
}

/// Engine options for running plan shards (with `base.multilinked` from [`linked_elsewhere`]):
/// directory times are set by the verify phase.
pub fn engine_options(mut base: Options, phase: Phase) -> Options {
    // Shards share directories: their times become final in the verify phase.
    base.dir_times_in_verify = true;
    // Verify workers start together; their probes would race with the root's times.
    base.probe_destinations = phase == Phase::Copy;
    base.passes = match phase {
        Phase::Copy => ingest_copy::Passes::CopyOnly,
        Phase::Verify => ingest_copy::Passes::VerifyOnly,
    };
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_copy_phase_probes_the_destinations() {
        // Verify workers start together: a probe in one would move the root's times after
        // another had set them (seen as a root dir_mtime difference after `run` with 4 workers).
        let copy = engine_options(Options::default(), Phase::Copy);
        let verify = engine_options(Options::default(), Phase::Verify);
        assert!(copy.probe_destinations);
        assert!(!verify.probe_destinations);
        assert!(copy.dir_times_in_verify && verify.dir_times_in_verify);
        assert_eq!(copy.passes, ingest_copy::Passes::CopyOnly);
        assert_eq!(verify.passes, ingest_copy::Passes::VerifyOnly);
    }
}
