//! The generators: reproducible, the promised shapes, clear errors.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use ingest_testkit::compare::join_bytes;
use ingest_testkit::{Aspect, CompareOptions, Dataset, GenError, GenOptions, compare, generate};

fn tiny(scale: f64) -> GenOptions {
    GenOptions {
        scale,
        ..GenOptions::default()
    }
}

/// Every non-directory entry: path -> (size, depth).
fn files(root: &Path) -> BTreeMap<String, (u64, usize)> {
    fn walk(dir: &Path, depth: usize, out: &mut BTreeMap<String, (u64, usize)>, root: &Path) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                walk(&e.path(), depth + 1, out, root);
            } else {
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, (m.len(), depth));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, 0, &mut out, root);
    out
}

#[test]
fn same_seed_gives_identical_trees_and_another_seed_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let everything = CompareOptions {
        atime: true,
        owner: true,
        ..CompareOptions::all()
    };
    for dataset in [Dataset::Kinds, Dataset::Mixed, Dataset::Demo] {
        let (a, b, c) = (
            tmp.path().join(format!("{dataset}-a")),
            tmp.path().join(format!("{dataset}-b")),
            tmp.path().join(format!("{dataset}-c")),
        );
        let sa = generate(dataset, &a, &tiny(0.01)).unwrap();
        let sb = generate(dataset, &b, &tiny(0.01)).unwrap();
        assert_eq!(sa, sb);
        assert_eq!(compare(&a, &b, &everything), vec![], "{dataset}");
        generate(
            dataset,
            &c,
            &GenOptions {
                seed: 99,
                scale: 0.01,
            },
        )
        .unwrap();
        let d = compare(&a, &c, &everything);
        assert!(
            d.iter()
                .any(|d| d.aspect == Aspect::Content || d.aspect == Aspect::Size),
            "{dataset}: {d:?}"
        );
        assert!(
            d.iter().any(|d| d.aspect == Aspect::Mtime),
            "{dataset}: {d:?}"
        );
    }
}

#[test]
fn small_has_depth_four_a_flat_directory_and_4_to_16_kib_files() {
    let tmp = tempfile::tempdir().unwrap();
    let s = generate(Dataset::Small, tmp.path(), &tiny(0.02)).unwrap();
    assert_eq!(s.files, 2000);
    assert_eq!(s.non_dirs(), 2000);
    let f = files(tmp.path());
    assert_eq!(f.len(), 2000);
    assert_eq!(f.keys().filter(|k| k.starts_with("flat/")).count(), 400);
    assert!(f.values().all(|&(size, _)| (4096..=16384).contains(&size)));
    assert_eq!(
        f.values().map(|&(_, d)| d).max(),
        Some(5),
        "tree/ plus four levels"
    );
    assert_eq!(s.bytes, f.values().map(|&(size, _)| size).sum::<u64>());
    // Uneven: directories at one depth do not all hold the same number of files.
    let mut per_dir: BTreeMap<String, usize> = BTreeMap::new();
    for k in f.keys().filter(|k| k.starts_with("tree/")) {
        *per_dir
            .entry(k.rsplit_once('/').unwrap().0.to_owned())
            .or_default() += 1;
    }
    let (min, max) = (
        per_dir.values().min().unwrap(),
        per_dir.values().max().unwrap(),
    );
    assert!(max > &(min * 3), "{min}..{max}");
}

#[test]
fn large_is_sixteen_equal_files_scaled() {
    let tmp = tempfile::tempdir().unwrap();
    let s = generate(Dataset::Large, tmp.path(), &tiny(1.0 / 4096.0)).unwrap();
    let f = files(tmp.path());
    assert_eq!(f.len(), 16);
    assert!(f.values().all(|&(size, _)| size == 64 * 1024));
    assert_eq!(s.bytes, 16 * 64 * 1024);
}

#[test]
fn mixed_has_small_medium_large_and_a_sparse_file() {
    let tmp = tempfile::tempdir().unwrap();
    generate(Dataset::Mixed, tmp.path(), &tiny(0.01)).unwrap();
    let f = files(tmp.path());
    assert_eq!(f.keys().filter(|k| k.starts_with("small/")).count(), 200);
    assert_eq!(f.keys().filter(|k| k.starts_with("medium/")).count(), 2);
    assert_eq!(f.keys().filter(|k| k.starts_with("large/")).count(), 3);
    let m = fs::metadata(tmp.path().join("sparse/disk.img")).unwrap();
    assert_eq!(m.len(), (1024.0 * 1024.0 * 1024.0 * 0.01f64).round() as u64);
    assert!(
        m.blocks() * 512 < m.len() / 2,
        "holes kept: {} of {}",
        m.blocks() * 512,
        m.len()
    );
}

#[test]
fn kinds_has_every_kind_and_metadata_item() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let s = generate(Dataset::Kinds, root, &GenOptions::default()).unwrap();
    let meta = |rel: &[u8]| fs::symlink_metadata(join_bytes(root, rel)).unwrap();
    assert_eq!(
        fs::read_link(root.join("links/relative")).unwrap().to_str(),
        Some("../regular/plain.txt")
    );
    assert!(
        !root.join("links/dangling").exists() && meta(b"links/dangling").file_type().is_symlink()
    );
    assert_eq!(meta(b"hard/a/triple").ino(), meta(b"hard/triple-3").ino());
    assert_eq!(meta(b"hard/a/triple").nlink(), 3);
    assert!(meta(b"special/fifo").file_type().is_fifo());
    assert_eq!(meta(b"modes/setgid-dir").mode() & 0o7777, 0o2775);
    assert_eq!(meta(b"modes/sticky-dir").mode() & 0o7777, 0o1777);
    assert_eq!(meta(b"modes/read-only-dir").mode() & 0o7777, 0o555);
    let holes = meta(b"sparse/holes.img");
    assert_eq!(holes.len(), 16 << 20);
    assert!(holes.blocks() * 512 < 1 << 20);
    assert_eq!(meta(b"times/max-ns").mtime_nsec(), 999_999_999);
    assert_eq!(
        (
            meta(b"times/epoch-plus-1ns").mtime(),
            meta(b"times/epoch-plus-1ns").mtime_nsec()
        ),
        (1, 1)
    );
    assert_eq!(meta(b"names/non-utf8-\xff\xfe").len(), 20);
    assert!(meta(b"names/dir \xff\n/inside \xfe").is_file());
    assert_eq!(
        rustix::fs::lgetxattr_query(root.join("xattr/file"), "user.binary").unwrap(),
        10
    );
    if rustix::process::geteuid().is_root() {
        assert!(meta(b"special/char-null").file_type().is_char_device());
        assert_eq!(
            (meta(b"owners/odd").uid(), meta(b"owners/odd").gid()),
            (12345, 54321)
        );
        assert_eq!(meta(b"modes/setuid-file").mode() & 0o7777, 0o4755);
        assert_eq!(meta(b"owners/odd-link").uid(), 777);
        assert_eq!(s.special, 3);
    } else {
        assert_eq!(s.special, 1);
    }
    assert_eq!(s.hard_links, 3);
    assert_eq!(
        s.symlinks,
        if rustix::process::geteuid().is_root() {
            6
        } else {
            5
        }
    );
    // Directory times are set after their contents, so they are the generated ones.
    assert!(meta(b"names").mtime() < 1_700_000_000);
}

#[test]
fn bad_input_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let e = "huge".parse::<Dataset>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown dataset \"huge\": valid are demo, small, large, mixed, kinds"
    );
    let e = generate(Dataset::Demo, &tmp.path().join("x"), &tiny(0.0)).unwrap_err();
    assert!(matches!(e, GenError::BadScale(_)), "{e}");
    fs::write(tmp.path().join("occupied"), b"").unwrap();
    let e = generate(Dataset::Demo, tmp.path(), &tiny(0.01)).unwrap_err();
    assert!(e.to_string().contains("is not an empty directory"), "{e}");
    assert_eq!("mixed".parse::<Dataset>().unwrap(), Dataset::Mixed);
}
