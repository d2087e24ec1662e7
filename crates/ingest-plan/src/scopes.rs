//! The one mapping from plan scopes to the copy engine's scopes.
//!
//! The cluster (and `run`) copies every shard first, then verifies every shard. A file cut into
//! byte ranges is written by several shards; its metadata is set, and the whole file checked, by
//! a `Finalize` in the verify phase of the shard holding its first range, when all ranges are done.

use std::collections::BTreeSet;
use std::sync::Arc;

use ingest_copy::{MultiLinked, Options, RelPath, Scope, SettleDirs};

use crate::format::{Plan, Shard, ShardScope};

/// Which pass a shard is run for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Copy,
    /// `mode: Mirror`, between copy and verify: each shard's directories are walked again and
    /// what only the destination has is deleted, within the shard's budget (`ingest_job::mirror`).
    Prune,
    Verify,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Copy => "copy",
            Phase::Prune => "prune",
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
        // Only directory listings find what to delete: a range of a file or a link group's
        // paths have none, and are not copied again.
        (ShardScope::FileRange { .. } | ShardScope::LinkGroup { .. }, Phase::Prune) => {
            return None;
        }
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

/// The directories that shards other than their own write into, with all their ancestors: the
/// only ones whose times a sharded copy's last (settle) step must set. A tree scope's directories
/// are written by that scope alone, so its copy sets them for good; but a scope creates its root
/// (and missing ancestors) in its parent, name ranges of one directory and the pieces of a split
/// file write into a directory together, and a link group adds names anywhere. Set it once per
/// worker as `Options::settle_dirs`, beside [`linked_elsewhere`].
pub fn settled_dirs(plan: &Plan) -> SettleDirs {
    let mut dirs = BTreeSet::new();
    let mut with_ancestors = |mut dir: RelPath| {
        // Inserting stops at the first ancestor already in: its own ancestors are too.
        while dirs.insert(dir.clone()) && !dir.is_root() {
            dir = dir.parent();
        }
    };
    for scope in plan.shards.iter().flat_map(|s| &s.scopes) {
        match scope {
            ShardScope::Tree { dir } if !dir.is_root() => with_ancestors(dir.parent()),
            ShardScope::Tree { .. } => {}
            ShardScope::Entries { dir, .. } => with_ancestors(dir.clone()),
            ShardScope::FileRange { file, .. } => with_ancestors(file.parent()),
            ShardScope::LinkGroup { paths } => {
                for p in paths {
                    with_ancestors(p.parent());
                }
            }
        }
    }
    SettleDirs::Only(Arc::new(dirs))
}

/// Engine options for running plan shards (with `base.multilinked` from [`linked_elsewhere`]):
/// directory times are set by the verify phase.
pub fn engine_options(mut base: Options, phase: Phase) -> Options {
    // Shards share directories: their times become final in the verify phase.
    base.dir_times_in_verify = true;
    // Verify workers start together; their probes would race with the root's times.
    base.probe_destinations = phase == Phase::Copy;
    base.passes = match phase {
        Phase::Copy | Phase::Prune => ingest_copy::Passes::CopyOnly,
        Phase::Verify => ingest_copy::Passes::VerifyOnly,
    };
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{CostModel, PLAN_API_VERSION, PLAN_KIND, Prediction, Totals};

    fn rel(p: &str) -> RelPath {
        RelPath::from_bytes(p).unwrap()
    }

    fn plan_of(scopes: Vec<ShardScope>) -> Plan {
        Plan {
            api_version: PLAN_API_VERSION.into(),
            kind: PLAN_KIND.into(),
            requested_shards: 1,
            cost_model: CostModel::default(),
            servers: vec!["a".into()],
            workers: 1,
            totals: Totals::default(),
            prediction: Prediction::default(),
            scan_errors: Vec::new(),
            filter: Default::default(),
            shards: scopes
                .into_iter()
                .enumerate()
                .map(|(id, s)| Shard {
                    id: id as u32,
                    cost: 1.0,
                    files: 1,
                    bytes: 0,
                    server: 0,
                    worker: 0,
                    scopes: vec![s],
                })
                .collect(),
        }
    }

    #[test]
    fn settled_dirs_are_where_other_shards_write_and_their_ancestors() {
        let entries = |dir: &str, from: Option<&str>| ShardScope::Entries {
            dir: rel(dir),
            from: from.map(rel),
            to: None,
            subtrees: true,
        };
        let plan = plan_of(vec![
            // Split directories: their ranges and the trees cut out of them.
            entries("", None),
            entries("", Some("m")),
            entries("big", None),
            ShardScope::Tree { dir: rel("big/a") },
            ShardScope::Tree {
                dir: rel("big/b/deep"),
            },
            // A split file's pieces write into its directory; a link group into each path's.
            ShardScope::FileRange {
                file: rel("media/raw/huge.bin"),
                offset: 0,
                len: 8,
            },
            ShardScope::LinkGroup {
                paths: vec![rel("big/a/x/l1"), rel("l2")],
            },
        ]);
        let SettleDirs::Only(dirs) = settled_dirs(&plan) else {
            panic!("a plan names its settled directories");
        };
        let got: Vec<String> = dirs.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            got,
            [
                ".",
                "big",
                "big/a",
                "big/a/x",
                "big/b",
                "media",
                "media/raw"
            ],
            "a tree's own root is not settled (its copy set it), its parent is"
        );
        for d in dirs.iter() {
            assert!(
                d.is_root() || dirs.contains(&d.parent()),
                "{d}: ancestors are in"
            );
        }
        // A plan that is one whole tree has nothing to settle.
        let whole = plan_of(vec![ShardScope::Tree { dir: rel("") }]);
        assert_eq!(settled_dirs(&whole), SettleDirs::Only(Arc::default()));
    }

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
