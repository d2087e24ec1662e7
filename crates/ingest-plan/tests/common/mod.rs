//! Random trees on disk and an independent check of plan coverage, shared by the tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use ingest_path::RelPath;
use ingest_plan::format::{Plan, ShardScope};
use ingest_plan::scan::SplitMix;

/// Builds a random tree under `root`: nested directories, files of mixed sizes (some sparse and
/// large), symlinks, and hard links between files. Returns nothing: tests walk it independently.
pub fn random_tree(root: &Path, seed: u64, max_files: usize) {
    let mut rng = SplitMix(seed);
    let mut dirs = vec![root.to_path_buf()];
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    let n = 1 + (rng.next_u64() % max_files as u64) as usize;
    for i in 0..n {
        let r = rng.next_u64();
        match r % 10 {
            0 | 1 => {
                let parent = dirs[(rng.next_u64() % dirs.len() as u64) as usize].clone();
                let d = parent.join(format!("d{i}"));
                fs::create_dir(&d).unwrap();
                dirs.push(d);
            }
            2 if !files.is_empty() => {
                let target = files[(rng.next_u64() % files.len() as u64) as usize].clone();
                let parent = &dirs[(rng.next_u64() % dirs.len() as u64) as usize];
                fs::hard_link(&target, parent.join(format!("h{i}"))).unwrap();
            }
            3 => {
                let parent = &dirs[(rng.next_u64() % dirs.len() as u64) as usize];
                std::os::unix::fs::symlink("nowhere", parent.join(format!("s{i}"))).unwrap();
            }
            _ => {
                // Mostly many files in few directories, so that some directories are "large".
                let parent = &dirs[(rng.next_u64() % dirs.len().min(3) as u64) as usize];
                let p = parent.join(format!("f{:x}", rng.next_u64() % 100_000));
                if p.exists() {
                    continue;
                }
                let size = match rng.next_u64() % 20 {
                    0 => 64 << 20, // sparse: cheap to make, big enough to be cut into ranges
                    1..=5 => 0,
                    _ => rng.next_u64() % 5000,
                };
                let f = fs::File::create(&p).unwrap();
                f.set_len(size).unwrap();
                files.push(p);
            }
        }
    }
}

/// A file found by a plain `std::fs` walk (not the scanner).
#[derive(Debug, Clone)]
pub struct Found {
    pub path: RelPath,
    pub size: u64,
    pub ino: (u64, u64),
    pub nlink: u64,
}

pub fn walk(root: &Path) -> (Vec<Found>, Vec<RelPath>) {
    let mut files = Vec::new();
    let mut dirs = vec![RelPath::root()];
    let mut stack = vec![RelPath::root()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(root.join(d.as_os_str())).unwrap() {
            let e = e.unwrap();
            let p = d.join(e.file_name().as_bytes());
            let md = fs::symlink_metadata(e.path()).unwrap();
            if md.is_dir() {
                dirs.push(p.clone());
                stack.push(p);
            } else if md.is_file() {
                files.push(Found {
                    path: p,
                    size: md.len(),
                    ino: (md.dev(), md.ino()),
                    nlink: md.nlink(),
                });
            }
        }
    }
    (files, dirs)
}

fn in_range(name: &[u8], from: &Option<RelPath>, to: &Option<RelPath>) -> bool {
    from.as_ref().is_none_or(|f| name >= f.as_bytes())
        && to.as_ref().is_none_or(|t| name < t.as_bytes())
}

/// Does `scope` copy the whole of `path` (a non-directory entry, single-linked)?
fn covers_entry(scope: &ShardScope, path: &RelPath) -> bool {
    match scope {
        ShardScope::Tree { dir } => path.starts_with(dir) && path != dir,
        ShardScope::Entries {
            dir,
            from,
            to,
            subtrees,
        } => {
            if !path.starts_with(dir) || path == dir {
                return false;
            }
            let rest = &path.as_bytes()[if dir.is_root() {
                0
            } else {
                dir.as_bytes().len() + 1
            }..];
            let first = rest.split(|&b| b == b'/').next().unwrap();
            let deeper = first.len() < rest.len();
            in_range(first, from, to) && (!deeper || *subtrees)
        }
        ShardScope::FileRange { .. } | ShardScope::LinkGroup { .. } => false,
    }
}

/// Checks the plan against an independent walk; panics with a description on the first problem.
pub fn check_coverage(plan: &Plan, root: &Path) {
    let (files, dirs) = walk(root);
    let mut groups: BTreeMap<(u64, u64), Vec<&RelPath>> = BTreeMap::new();
    for f in &files {
        if f.nlink > 1 {
            groups.entry(f.ino).or_default().push(&f.path);
        }
    }
    // Link groups: each inode's paths all in one group, each group in one shard.
    let mut grouped: BTreeMap<RelPath, u32> = BTreeMap::new();
    for s in &plan.shards {
        for sc in &s.scopes {
            if let ShardScope::LinkGroup { paths } = sc {
                for p in paths {
                    assert!(
                        grouped.insert(p.clone(), s.id).is_none(),
                        "{p} in two link groups"
                    );
                }
            }
        }
    }
    for paths in groups.values() {
        let shards: Vec<u32> = paths
            .iter()
            .map(|p| {
                *grouped
                    .get(*p)
                    .unwrap_or_else(|| panic!("{p} in no link group"))
            })
            .collect();
        assert!(
            shards.windows(2).all(|w| w[0] == w[1]),
            "links {paths:?} split over shards {shards:?}"
        );
    }
    assert_eq!(
        grouped.len(),
        groups.values().map(|g| g.len()).sum::<usize>(),
        "link groups hold extra paths"
    );
    for f in files.iter().filter(|f| f.nlink == 1) {
        let whole: Vec<u32> = plan
            .shards
            .iter()
            .flat_map(|s| {
                s.scopes
                    .iter()
                    .filter(|sc| covers_entry(sc, &f.path))
                    .map(move |_| s.id)
            })
            .collect();
        let mut ranges: Vec<(u64, u64)> = plan
            .shards
            .iter()
            .flat_map(|s| s.scopes.iter())
            .filter_map(|sc| match sc {
                ShardScope::FileRange { file, offset, len } if *file == f.path => {
                    Some((*offset, *len))
                }
                _ => None,
            })
            .collect();
        if ranges.is_empty() {
            assert_eq!(
                whole.len(),
                1,
                "{} is in shards {whole:?}; exactly one expected",
                f.path
            );
        } else {
            assert!(
                whole.is_empty(),
                "{} is cut into ranges and also whole in {whole:?}",
                f.path
            );
            ranges.sort();
            let mut next = 0;
            for (o, l) in ranges {
                assert_eq!(o, next, "ranges of {} leave a gap or overlap", f.path);
                next = o + l;
            }
            assert_eq!(next, f.size, "ranges of {} do not end at its size", f.path);
        }
    }
    // Every directory is reached: created by a scope over it or over its parent.
    for d in dirs.iter().filter(|d| !d.is_root()) {
        let reached = plan.shards.iter().flat_map(|s| s.scopes.iter()).any(|sc| match sc {
            ShardScope::Tree { dir } => d.starts_with(dir),
            ShardScope::Entries { dir, .. } if dir == d => true,
            sc => covers_entry(sc, d) || matches!(sc, ShardScope::Entries { subtrees: false, dir, .. } if *dir == d.parent()),
        });
        assert!(reached, "directory {d} is in no shard");
    }
}
