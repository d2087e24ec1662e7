//! Property tests over random trees: coverage, link groups, determinism, thread independence.

mod common;

use ingest_plan::format::{CostModel, Plan, ShardScope};
use ingest_plan::planner::{PlanOptions, plan};
use ingest_plan::scan::{ScanOptions, scan};

fn scan_opts(threads: usize) -> ScanOptions {
    // Low thresholds, so that small trees exercise sampled name ranges and split files.
    ScanOptions {
        threads,
        sample_threshold: 6,
        samples: 5,
        entries_per_sample: 1,
        big_file_min: 4 << 20,
        max_errors: 10,
        ..ScanOptions::default()
    }
}

fn plan_opts(shards: u32, workers: u32) -> PlanOptions {
    PlanOptions {
        shards,
        workers,
        servers: vec!["a".into(), "b".into(), "c".into()],
        // Bytes matter: a 64 MiB file costs as much as ~500 entries.
        cost: CostModel {
            seconds_per_entry: 0.001,
            bytes_per_second: 128e6,
        },
        split_factor: 2.0,
        range_align: 1 << 20,
        max_files: None,
        max_bytes: None,
    }
}

#[test]
fn random_trees_every_file_in_one_shard_links_together_and_deterministic() {
    // Kinds of scopes seen over all cases: the trees must exercise every kind.
    let (mut ranged, mut pieces, mut groups) = (0, 0, 0);
    for seed in 1..=24u64 {
        let dir = tempfile::tempdir().unwrap();
        common::random_tree(dir.path(), seed, 300);
        let s1 = scan(dir.path(), &scan_opts(1)).unwrap();
        let s4 = scan(dir.path(), &scan_opts(4)).unwrap();
        assert_eq!(s1, s4, "seed {seed}: scans with 1 and 4 threads differ");
        for k in [1u32, 3, 8, 40] {
            let p = plan(&s1, &plan_opts(k, 1 + (seed % 5) as u32)).unwrap();
            common::check_coverage(&p, dir.path());
            let again = plan(&s4, &plan_opts(k, 1 + (seed % 5) as u32)).unwrap();
            assert_eq!(
                p.to_json(),
                again.to_json(),
                "seed {seed} k {k}: plan not deterministic"
            );
            // Estimated files add up to the total: nothing is counted twice or lost.
            assert_eq!(
                p.shards.iter().map(|s| s.files).sum::<u64>(),
                p.totals.files,
                "seed {seed} k {k}"
            );
            assert_eq!(
                p.shards.iter().map(|s| s.bytes).sum::<u64>(),
                p.totals.bytes,
                "seed {seed} k {k}"
            );
            // Handed out largest first, but for the name ranges of crowded directories (see
            // `dispatch_order`): every other shard keeps that order.
            let kept: Vec<f64> = p
                .shards
                .iter()
                .filter(|s| {
                    !s.scopes
                        .iter()
                        .any(|sc| matches!(sc, ShardScope::Entries { .. }))
                })
                .map(|s| s.cost)
                .collect();
            assert!(
                kept.windows(2).all(|w| w[0] >= w[1]),
                "seed {seed}: shards not largest first"
            );
            assert!(
                p.shards
                    .iter()
                    .all(|s| s.worker < p.workers && s.server == s.worker % 3)
            );
            for sc in p.shards.iter().flat_map(|s| &s.scopes) {
                match sc {
                    ShardScope::Entries { from: Some(_), .. } => ranged += 1,
                    ShardScope::FileRange { .. } => pieces += 1,
                    ShardScope::LinkGroup { .. } => groups += 1,
                    _ => {}
                }
            }
        }
    }
    assert!(
        ranged > 0 && pieces > 0 && groups > 0,
        "ranges {ranged} pieces {pieces} groups {groups}"
    );
}

#[test]
fn scan_counts_match_an_independent_walk() {
    let dir = tempfile::tempdir().unwrap();
    common::random_tree(dir.path(), 99, 500);
    let s = scan(dir.path(), &scan_opts(3)).unwrap();
    let (files, dirs) = common::walk(dir.path());
    let root = s.root().tree;
    assert_eq!(root.files, files.len() as u64);
    assert_eq!(root.bytes, files.iter().map(|f| f.size).sum::<u64>());
    assert_eq!(root.dirs, dirs.len() as u64);
    assert_eq!(s.dirs.len(), dirs.len());
    assert_eq!(s.histogram.iter().sum::<u64>(), files.len() as u64);
    // Every file has an age; the generator's files are new.
    assert_eq!(s.age_histogram.iter().sum::<u64>(), files.len() as u64);
    assert_eq!(
        s.age_histogram[ingest_plan::scan::age_bucket(0)],
        files.len() as u64
    );
    assert_eq!(s.links.len(), files.iter().filter(|f| f.nlink > 1).count());
    assert_eq!(s.error_count, 0);
}

#[test]
fn big_flat_directory_is_cut_into_name_ranges_and_big_files_into_byte_ranges() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..400 {
        std::fs::write(dir.path().join(format!("n{i:04}")), b"x").unwrap();
    }
    let big = std::fs::File::create(dir.path().join("n0200-big")).unwrap();
    big.set_len(64 << 20).unwrap();
    let opts = ScanOptions {
        sample_threshold: 100,
        samples: 64,
        ..scan_opts(2)
    };
    let s = scan(dir.path(), &opts).unwrap();
    assert_eq!(s.root().samples.len(), 64);
    let p = plan(&s, &plan_opts(10, 2)).unwrap();
    common::check_coverage(&p, dir.path());
    let scopes: Vec<&ShardScope> = p.shards.iter().flat_map(|s| &s.scopes).collect();
    let ranges = scopes
        .iter()
        .filter(|s| matches!(s, ShardScope::Entries { from: Some(_), .. }))
        .count();
    let pieces = scopes
        .iter()
        .filter(|s| matches!(s, ShardScope::FileRange { .. }))
        .count();
    assert!(
        ranges >= 3,
        "expected the flat directory cut into several name ranges: {scopes:?}"
    );
    assert!(
        pieces >= 2,
        "expected the big file cut into byte ranges: {scopes:?}"
    );
    assert!(
        p.prediction.imbalance < 1.5,
        "imbalance {}",
        p.prediction.imbalance
    );
}

#[test]
fn a_crowded_directorys_ranges_are_spread_over_the_first_half_and_ranges_of_subtrees_are_not() {
    // A root of 40 small subtrees (cut into ranges of whole subtrees) and, sorting last, a
    // directory of 600 files of its own (cut into ranges of its own files).
    let dir = tempfile::tempdir().unwrap();
    for d in 0..40 {
        let sub = dir.path().join(format!("d{d:02}"));
        std::fs::create_dir(&sub).unwrap();
        for f in 0..15 {
            std::fs::write(sub.join(format!("f{f}")), b"x").unwrap();
        }
    }
    let flat = dir.path().join("zz-flat");
    std::fs::create_dir(&flat).unwrap();
    for f in 0..600 {
        std::fs::write(flat.join(format!("f{f:04}")), b"x").unwrap();
    }
    let s = scan(dir.path(), &scan_opts(2)).unwrap();
    let p = plan(&s, &plan_opts(24, 3)).unwrap();
    common::check_coverage(&p, dir.path());
    let in_dir = |s: &ingest_plan::Shard, name: &str| {
        s.scopes.iter().any(|sc| match sc {
            ShardScope::Entries { dir, .. } => dir.as_bytes() == name.as_bytes(),
            _ => false,
        })
    };
    let flat_at: Vec<usize> = (0..p.shards.len())
        .filter(|&i| in_dir(&p.shards[i], "zz-flat"))
        .collect();
    let n = p.shards.len();
    assert!(
        flat_at.len() >= 4,
        "the directory cut into ranges: {flat_at:?} of {n}"
    );
    // Spread over the first half: none at the very front (the largest shards go first), the
    // last within the first half, the gaps between them alike.
    assert!(flat_at[0] > 0, "{flat_at:?} of {n}");
    assert!(*flat_at.last().unwrap() <= n / 2 + 1, "{flat_at:?} of {n}");
    let gaps: Vec<usize> = flat_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().max().unwrap() - gaps.iter().min().unwrap() <= 2,
        "evenly: {flat_at:?} of {n}"
    );
    // The root's ranges hold whole subtrees: not crowded, they stay where their size puts them.
    let rest: Vec<f64> = p
        .shards
        .iter()
        .filter(|s| !in_dir(s, "zz-flat"))
        .map(|s| s.cost)
        .collect();
    assert!(rest.len() >= 4, "the root cut into ranges too");
    assert!(
        rest.windows(2).all(|w| w[0] >= w[1]),
        "largest first: {rest:?}"
    );
    // Ids are the order.
    assert!(p.shards.iter().enumerate().all(|(i, s)| s.id == i as u32));
}

#[test]
fn max_files_and_max_bytes_bound_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    common::random_tree(dir.path(), 7, 600);
    let s = scan(dir.path(), &scan_opts(2)).unwrap();
    let opts = PlanOptions {
        max_files: Some(20),
        max_bytes: Some(8 << 20),
        ..plan_opts(1, 2)
    };
    let p = plan(&s, &opts).unwrap();
    common::check_coverage(&p, dir.path());
    assert!(
        p.shards.len() > 5,
        "one shard asked, but the bounds need more: {}",
        p.shards.len()
    );
    for sh in &p.shards {
        assert!(
            sh.files <= 20 || sh.scopes.len() == 1,
            "shard {} has {} files",
            sh.id,
            sh.files
        );
        assert!(
            sh.bytes <= 8 << 20 || sh.scopes.len() == 1,
            "shard {} has {} bytes",
            sh.id,
            sh.bytes
        );
    }
    let per_server: usize = (0..3).map(|i| p.shards_of_server(i).count()).sum();
    assert_eq!(per_server, p.shards.len());
}

#[test]
fn zero_shards_or_workers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = scan(dir.path(), &scan_opts(1)).unwrap();
    assert_eq!(
        plan(&s, &plan_opts(0, 1)).unwrap_err().to_string(),
        "shards must be at least 1 (got 0)"
    );
    assert_eq!(
        plan(&s, &plan_opts(1, 0)).unwrap_err().to_string(),
        "workers must be at least 1 (got 0)"
    );
    let p = plan(&s, &plan_opts(5, 2)).unwrap();
    assert_eq!(
        p.shards.len(),
        1,
        "an empty tree is one shard: {:?}",
        p.shards
    );
    assert_eq!(Plan::from_json(&p.to_json()).unwrap(), p);
}

/// A filtered scan: the same with 1 and 4 threads, and what it counts and plans is what a plain
/// walk keeps under the same patterns (an excluded directory's contents are not walked, so not
/// counted; the directory itself is one excluded entry).
#[test]
fn a_filtered_scan_plans_only_what_the_filter_keeps() {
    use ingest_filter::{Filter, FilterSpec};
    let filter = Filter::new(&FilterSpec {
        exclude: vec!["d1*/".into(), "h*".into(), "*7".into()],
        ..FilterSpec::default()
    })
    .unwrap();
    for seed in [5u64, 17, 99] {
        let dir = tempfile::tempdir().unwrap();
        common::random_tree(dir.path(), seed, 400);
        let opts = |threads| ScanOptions {
            filter: filter.clone(),
            ..scan_opts(threads)
        };
        let s1 = scan(dir.path(), &opts(1)).unwrap();
        assert_eq!(s1, scan(dir.path(), &opts(4)).unwrap(), "seed {seed}");
        assert_eq!(&s1.filter, filter.spec());

        // The plain walk, pruned by hand.
        let (all_files, all_dirs) = common::walk(dir.path());
        let under_excluded = |p: &ingest_path::RelPath| {
            let mut a = p.parent();
            while !a.is_root() {
                if !filter.keeps_dir(&a) {
                    return true;
                }
                a = a.parent();
            }
            false
        };
        let files: Vec<_> = all_files
            .iter()
            .filter(|f| !under_excluded(&f.path) && filter.keeps_path(&f.path))
            .collect();
        let dirs = all_dirs
            .iter()
            .filter(|d| !under_excluded(d) && filter.keeps_dir(d))
            .count();
        let root = s1.root().tree;
        assert_eq!(root.files, files.len() as u64, "seed {seed}");
        assert_eq!(root.dirs, dirs as u64, "seed {seed}");
        assert!(
            s1.excluded > 0,
            "seed {seed}: the patterns must leave something out"
        );
        let p = plan(&s1, &plan_opts(8, 3)).unwrap();
        assert_eq!(p.totals.excluded, s1.excluded);
        assert_eq!(&p.filter, filter.spec());
        assert_eq!(
            p.shards.iter().map(|s| s.files).sum::<u64>(),
            p.totals.files
        );
    }
}

/// Every name a directory could hold belongs to one scope: the name ranges of a directory the
/// plan cut up, with the names split out between them (subdirectories and big files planned on
/// their own), leave no gap from the first name to the last. A gap would hide an entry created
/// there after the scan, or one only in the destination, from the copy, the verifier and a mirror.
#[test]
fn the_name_ranges_of_a_directory_leave_no_gap() {
    use ingest_plan::format::ShardScope;
    use std::collections::BTreeMap;
    for seed in 1..=24u64 {
        let dir = tempfile::tempdir().unwrap();
        common::random_tree(dir.path(), seed, 300);
        let s = scan(dir.path(), &scan_opts(2)).unwrap();
        for k in [3u32, 8, 40] {
            let p = plan(&s, &plan_opts(k, 3)).unwrap();
            // Directory -> its ranges (from, to), as bytes.
            type Bound = Option<Vec<u8>>;
            let mut ranges: BTreeMap<Vec<u8>, Vec<(Bound, Bound)>> = BTreeMap::new();
            for sc in p.shards.iter().flat_map(|sh| &sh.scopes) {
                if let ShardScope::Entries { dir, from, to, .. } = sc {
                    ranges.entry(dir.as_bytes().to_vec()).or_default().push((
                        from.as_ref().map(|f| f.as_bytes().to_vec()),
                        to.as_ref().map(|t| t.as_bytes().to_vec()),
                    ));
                }
            }
            for (d, mut rs) in ranges {
                rs.sort();
                let why = format!("seed {seed} k {k} dir {d:?}: {rs:?}");
                assert_eq!(
                    rs[0].0, None,
                    "the first range starts at the first name: {why}"
                );
                assert_eq!(rs[rs.len() - 1].1, None, "the last range has no end: {why}");
                for w in rs.windows(2) {
                    let to = w[0].1.clone().expect("only the last range is open");
                    let from = w[1].0.clone().expect("only the first range starts at None");
                    // Next to each other, or around one name planned on its own.
                    let mut after = to.clone();
                    after.push(0);
                    assert!(
                        from == to || from == after,
                        "a gap between {to:?} and {from:?}: {why}"
                    );
                }
            }
        }
    }
}

#[test]
fn totals_name_the_largest_directories_and_the_scan_its_largest_link_groups() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Files of their own: root 1, a 3 (its subdirectory b 2), c 4, d none, e 1; the links below
    // add one each to a/b, d and e.
    std::fs::write(root.join("top"), b"1").unwrap();
    for (d, n) in [("a", 3), ("a/b", 2), ("c", 4), ("d", 0), ("e", 1)] {
        std::fs::create_dir_all(root.join(d)).unwrap();
        for i in 0..n {
            std::fs::write(root.join(d).join(format!("f{i}")), b"12345").unwrap();
        }
    }
    // Hard links: c/f0 has three paths, a/f0 two.
    std::fs::hard_link(root.join("c/f0"), root.join("e/link-c")).unwrap();
    std::fs::hard_link(root.join("c/f0"), root.join("d/link-c")).unwrap();
    std::fs::hard_link(root.join("a/f0"), root.join("a/b/link-a")).unwrap();
    let s = scan(root, &scan_opts(2)).unwrap();
    let p = plan(&s, &plan_opts(4, 1)).unwrap();
    let largest: Vec<(String, u64, u64)> = p
        .totals
        .largest_directories
        .iter()
        .map(|d| (d.path.to_string(), d.entries, d.bytes))
        .collect();
    assert_eq!(
        largest,
        [
            ("c".to_string(), 4, 20),
            ("a".to_string(), 3, 15),
            ("a/b".to_string(), 3, 15),
            ("e".to_string(), 2, 10),
            (".".to_string(), 1, 1),
        ]
    );
    let groups: Vec<Vec<String>> = s
        .largest_link_groups(5)
        .into_iter()
        .map(|(paths, size)| {
            assert_eq!(size, 5);
            paths.iter().map(|p| p.to_string()).collect()
        })
        .collect();
    assert_eq!(
        groups,
        [
            vec!["c/f0", "d/link-c", "e/link-c"],
            vec!["a/b/link-a", "a/f0"]
        ]
    );
    assert_eq!(s.largest_link_groups(1).len(), 1);
    assert_eq!((p.totals.linked_inodes, p.totals.linked_paths), (2, 5));
    // The plan carries them: whoever reads it back has the same.
    assert_eq!(Plan::from_json(&p.to_json()).unwrap().totals, p.totals);
}
