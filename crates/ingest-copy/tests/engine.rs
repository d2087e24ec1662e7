//! The engine on real files in temp dirs, judged by `ingest-testkit`'s independent tree walk.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use ingest_copy::{
    AutoConfig, Concurrency, CopyJob, FirstN, Mismatch, Options, Outcome, Passes, Progress,
    RelPath, Scope, Summary, VerifyMode,
};
use ingest_testkit::{CompareOptions, Dataset, GenOptions, compare, generate};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn compare_opts() -> CompareOptions {
    CompareOptions {
        owner: is_root(),
        ..CompareOptions::all()
    }
}

/// A destination reached through three "mounts": the directory and two symlinks to it.
fn three_mounts(base: &Path) -> Vec<PathBuf> {
    let d = base.join("dest");
    fs::create_dir(&d).unwrap();
    for i in 1..3 {
        symlink(&d, base.join(format!("mount{i}"))).unwrap();
    }
    vec![d, base.join("mount1"), base.join("mount2")]
}

fn run(
    src: &Path,
    dests: &[PathBuf],
    opts: &Options,
    scopes: Vec<Scope>,
) -> (Summary, Vec<ingest_copy::ReportEntry>) {
    let job = CopyJob {
        source: src.to_path_buf(),
        destinations: dests.to_vec(),
        scopes,
    };
    let sink = FirstN::new(1000);
    let summary = ingest_copy::run(&job, opts, &Progress::default(), &sink).expect("usable job");
    (summary, sink.take().0)
}

fn whole() -> Vec<Scope> {
    vec![Scope::Tree(RelPath::root())]
}

fn assert_identical(src: &Path, dst: &Path) {
    let diffs = compare(src, dst, &compare_opts());
    assert!(
        diffs.is_empty(),
        "differences:\n{}",
        diffs
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn copies_every_kind_and_metadata_item_serial_and_parallel() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    generate(Dataset::Kinds, &src, &GenOptions::default()).unwrap();
    for threads in [1, 8] {
        let base = tmp.path().join(format!("t{threads}"));
        fs::create_dir(&base).unwrap();
        let dests = three_mounts(&base);
        let opts = Options {
            threads,
            verify: VerifyMode::Checksum,
            ..Options::default()
        };
        let (s, report) = run(&src, &dests, &opts, whole());
        let unsupported: Vec<_> = report
            .iter()
            .filter(|e| e.outcome == Outcome::Unsupported)
            .collect();
        assert_eq!(s.copy.failed, 0, "{report:?}");
        if is_root() {
            assert!(unsupported.is_empty(), "{unsupported:?}");
        }
        let v = s.verify.unwrap();
        assert!(v.is_clean() && v.missing + v.mismatched == 0, "{v:?}");
        assert!(s.copy.symlinks > 0 && s.copy.hardlinks > 0 && s.copy.files_copied > 0);
        let mut opts = compare_opts();
        if !is_root() {
            // Device nodes cannot be made without root; they are reported as unsupported instead.
            opts.hard_links = true;
        }
        let diffs: Vec<_> = compare(&src, &dests[0], &opts)
            .into_iter()
            .filter(|d| is_root() || !unsupported.iter().any(|u| u.path.to_escaped() == d.path))
            .collect();
        assert!(diffs.is_empty(), "{threads} threads: {diffs:#?}");
    }
}

#[test]
fn rerun_writes_no_data_and_counts_everything_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let g = generate(
        Dataset::Mixed,
        &src,
        &GenOptions {
            scale: 0.01,
            ..GenOptions::default()
        },
    )
    .unwrap();
    let dests = three_mounts(tmp.path());
    let opts = Options {
        threads: 6,
        split_threshold: 1 << 20,
        ..Options::default()
    };
    let (first, _) = run(&src, &dests, &opts, whole());
    assert!(first.is_success(), "{first:?}");
    assert!(first.copy.bytes_copied > 0);
    let (again, _) = run(&src, &dests, &opts, whole());
    assert_eq!(again.copy.bytes_copied, 0, "{again:?}");
    assert_eq!(again.copy.files_copied, 0);
    assert_eq!(
        again.copy.files_skipped,
        g.non_dirs() - again.copy.unsupported
    );
    assert_identical(&src, &dests[0]);
}

/// One corruption of the destination, the mismatch kind verify must report, and whether only
/// the checksum mode can see it.
struct Case {
    name: &'static str,
    corrupt: fn(&Path),
    kind: Mismatch,
    checksum_only: bool,
}

fn flip_byte_keep_mtime(p: &Path) {
    let before = fs::metadata(p).unwrap();
    let mut data = fs::read(p).unwrap();
    data[0] ^= 0xff;
    fs::write(p, data).unwrap();
    let times = fs::FileTimes::new()
        .set_modified(before.modified().unwrap())
        .set_accessed(before.accessed().unwrap());
    fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_times(times)
        .unwrap();
}

#[test]
fn each_corruption_is_detected_with_its_kind_and_repaired() {
    let cases = [
        Case {
            name: "flip a byte",
            corrupt: flip_byte_keep_mtime,
            kind: Mismatch::Content,
            checksum_only: true,
        },
        Case {
            name: "truncate",
            corrupt: |p| {
                fs::File::options()
                    .write(true)
                    .open(p)
                    .unwrap()
                    .set_len(1)
                    .unwrap()
            },
            kind: Mismatch::Size,
            checksum_only: false,
        },
        Case {
            name: "delete",
            corrupt: |p| fs::remove_file(p).unwrap(),
            kind: Mismatch::Missing,
            checksum_only: false,
        },
        Case {
            name: "chmod",
            corrupt: |p| fs::set_permissions(p, fs::Permissions::from_mode(0o600)).unwrap(),
            kind: Mismatch::Mode,
            checksum_only: false,
        },
        Case {
            name: "replace by a symlink",
            corrupt: |p| {
                fs::remove_file(p).unwrap();
                symlink("elsewhere", p).unwrap();
            },
            kind: Mismatch::Type,
            checksum_only: false,
        },
        Case {
            name: "touch",
            corrupt: |p| {
                let f = fs::File::options().write(true).open(p).unwrap();
                f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
            },
            kind: Mismatch::Mtime,
            checksum_only: false,
        },
    ];
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/victim"), b"the data that must arrive intact").unwrap();
    fs::set_permissions(src.join("d/victim"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(src.join("d/bystander"), b"unchanged").unwrap();
    let dests = three_mounts(tmp.path());
    let copy = Options {
        threads: 4,
        verify: VerifyMode::None,
        ..Options::default()
    };
    run(&src, &dests, &copy, whole());
    for case in &cases {
        for mode in [VerifyMode::Metadata, VerifyMode::Checksum] {
            // A corruption only a checksum sees is made once and looked at by both modes.
            if !(case.checksum_only && mode == VerifyMode::Checksum) {
                (case.corrupt)(&dests[0].join("d/victim"));
            }
            let verify = Options {
                threads: 4,
                verify: mode,
                passes: Passes::VerifyOnly,
                ..Options::default()
            };
            let (s, report) = run(&src, &dests, &verify, whole());
            let v = s.verify.unwrap();
            if mode == VerifyMode::Metadata && case.checksum_only {
                // Same size and mtime: only a content check sees it. Leave it for the checksum run.
                assert_eq!(v.matched, v.checked, "{}: {v:?}", case.name);
                assert!(!compare(&src, &dests[0], &compare_opts()).is_empty());
                continue;
            }
            assert_eq!(
                v.by_kind.get(&case.kind),
                Some(&1),
                "{} ({mode:?}): {v:?}",
                case.name
            );
            assert_eq!(v.errors, 0, "{} ({mode:?}): {v:?}", case.name);
            assert_eq!(
                v.repaired,
                v.missing + v.mismatched,
                "{} ({mode:?}): {v:?}",
                case.name
            );
            let line = report
                .iter()
                .find(|e| e.path.as_bytes() == b"d/victim")
                .expect("a report line for the victim");
            assert_eq!(line.outcome, Outcome::Repaired);
            assert!(line.mismatches.contains(&case.kind), "{line:?}");
            // Removing or replacing the victim changed its directory's mtime: that, and only
            // that, is the one other repair allowed.
            for other in report.iter().filter(|e| e.path.as_bytes() != b"d/victim") {
                assert_eq!(
                    (other.path.as_bytes(), &other.mismatches[..]),
                    (&b"d"[..], &[Mismatch::Mtime][..]),
                    "{}",
                    case.name
                );
            }
            assert_identical(&src, &dests[0]);
        }
    }
}

#[test]
fn a_non_empty_directory_in_the_way_is_a_reported_failure_not_an_abort() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("blocked"), b"x").unwrap();
    fs::write(src.join("fine"), b"y").unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir_all(dest.join("blocked/keep")).unwrap();
    let (s, report) = run(
        &src,
        std::slice::from_ref(&dest),
        &Options::default(),
        whole(),
    );
    assert_eq!(s.copy.failed, 1, "{report:?}");
    assert!(!s.is_success());
    let e = report
        .iter()
        .find(|e| e.outcome == Outcome::Failed)
        .unwrap();
    assert_eq!(e.path.as_bytes(), b"blocked");
    assert!(e.errno.is_some(), "{e:?}");
    assert_eq!(fs::read(dest.join("fine")).unwrap(), b"y");
    assert!(
        dest.join("blocked/keep").is_dir(),
        "nothing in the destination is deleted wholesale"
    );
}

#[test]
fn ranges_written_by_separate_runs_are_finalized_by_verify_not_counted_as_repairs() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("big")).unwrap();
    let data: Vec<u8> = (0..(3 << 20) + 12345)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    fs::write(src.join("big/file"), &data).unwrap();
    let dests = three_mounts(tmp.path());
    let file = RelPath::from_bytes(b"big/file".to_vec()).unwrap();
    let opts = Options {
        threads: 2,
        passes: Passes::CopyOnly,
        split_threshold: 1 << 20,
        ..Options::default()
    };
    // Three "workers", each with one range, through different mounts.
    let chunk = 1u64 << 20;
    for (i, off) in [0, chunk, 2 * chunk].into_iter().enumerate() {
        let len = if i == 2 {
            data.len() as u64 - off
        } else {
            chunk
        };
        let scopes = vec![Scope::FileRange {
            file: file.clone(),
            offset: off,
            len,
        }];
        let (s, r) = run(&src, &dests[i..i + 1], &opts, scopes);
        assert_eq!(s.copy.failed, 0, "{r:?}");
        let dm = fs::metadata(dests[0].join("big/file")).unwrap();
        assert_ne!(
            dm.mtime(),
            fs::metadata(src.join("big/file")).unwrap().mtime() + 1_000_000,
            "sanity"
        );
    }
    let not_final = fs::metadata(dests[0].join("big/file")).unwrap();
    let src_meta = fs::metadata(src.join("big/file")).unwrap();
    assert_ne!(
        (not_final.mtime(), not_final.mtime_nsec()),
        (src_meta.mtime(), src_meta.mtime_nsec()),
        "a file written in ranges must not look finished before Finalize"
    );
    let verify = Options {
        threads: 2,
        passes: Passes::VerifyOnly,
        verify: VerifyMode::Metadata,
        ..Options::default()
    };
    let (s, r) = run(&src, &dests, &verify, vec![Scope::Finalize(file)]);
    let v = s.verify.unwrap();
    assert_eq!((v.checked, v.matched, v.repaired), (1, 1, 0), "{v:?} {r:?}");
    assert_eq!(fs::read(dests[0].join("big/file")).unwrap(), data);
    let done = fs::metadata(dests[0].join("big/file")).unwrap();
    assert_eq!(
        (done.mtime(), done.mtime_nsec()),
        (src_meta.mtime(), src_meta.mtime_nsec())
    );
}

#[test]
fn name_ranges_and_subtrees_together_cover_the_tree_once() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    generate(
        Dataset::Demo,
        &src,
        &GenOptions {
            scale: 0.2,
            ..GenOptions::default()
        },
    )
    .unwrap();
    let dests = three_mounts(tmp.path());
    let top: Vec<_> = fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut scopes: Vec<Scope> = Vec::new();
    // The root's own entries in two name ranges (subdirectories only created), and each top-level
    // directory as its own tree: the shapes the planner emits.
    let mid = RelPath::from_bytes(b"m".to_vec()).unwrap();
    scopes.push(Scope::Entries {
        dir: RelPath::root(),
        from: None,
        to: Some(mid.clone()),
        subtrees: false,
    });
    scopes.push(Scope::Entries {
        dir: RelPath::root(),
        from: Some(mid),
        to: None,
        subtrees: false,
    });
    for name in &top {
        if src.join(name).is_dir() {
            let rel = RelPath::from_bytes(
                std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str()).to_vec(),
            )
            .unwrap();
            scopes.push(Scope::Tree(rel));
        }
    }
    let copy = Options {
        threads: 4,
        passes: Passes::CopyOnly,
        ..Options::default()
    };
    let (s, _) = run(&src, &dests, &copy, scopes.clone());
    assert_eq!(s.copy.failed, 0);
    let verify = Options {
        threads: 4,
        passes: Passes::VerifyOnly,
        ..Options::default()
    };
    let (s, r) = run(&src, &dests, &verify, scopes);
    let v = s.verify.unwrap();
    assert!(v.is_clean(), "{v:?} {r:?}");
    assert_eq!(
        v.missing, 0,
        "every entry was copied by exactly one scope: {v:?}"
    );
    assert_identical(&src, &dests[0]);
}

/// A multi-linked file whose other link is outside the tree (or was made after the plan's scan)
/// is not in any `LinkGroup`: a sharded copy must copy and count it where it is met, not skip it
/// as "copied elsewhere" (it used to vanish from the destination with the run saying identical).
#[test]
fn a_multi_linked_file_the_plan_did_not_group_is_copied_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/linked"), b"shared inode").unwrap();
    fs::hard_link(src.join("d/linked"), tmp.path().join("outside")).unwrap();
    fs::write(src.join("d/a"), b"a").unwrap();
    fs::hard_link(src.join("d/a"), src.join("b")).unwrap();
    // The plan grouped `d/a` and `b` (both links it saw); `d/linked` it could not group.
    let grouped: std::collections::BTreeSet<RelPath> = [b"d/a".as_slice(), b"b"]
        .into_iter()
        .map(|p| RelPath::from_bytes(p).unwrap())
        .collect();
    let opts = Options {
        multilinked: ingest_copy::MultiLinked::Elsewhere(std::sync::Arc::new(grouped.clone())),
        ..Options::default()
    };
    let mut scopes = whole();
    scopes.push(Scope::LinkGroup(grouped.into_iter().collect()));
    let (s, report) = run(&src, std::slice::from_ref(&dst), &opts, scopes);
    assert!(s.is_success(), "{s:?} {report:?}");
    assert_eq!(fs::read(dst.join("d/linked")).unwrap(), b"shared inode");
    assert_eq!(s.copy.outcomes(), s.copy.entries, "{:?}", s.copy);
    // Root, d, d/linked, and the group's two paths: each once.
    assert_eq!(s.copy.entries, 5, "{:?}", s.copy);
    assert_eq!(
        fs::metadata(dst.join("d/a")).unwrap().ino(),
        fs::metadata(dst.join("b")).unwrap().ino()
    );
    assert_identical(&src, &dst);
}

/// POSIX ACLs are copied (as root, where the file system takes them), and a re-run with the
/// destination's ACL removed puts it back.
#[test]
fn posix_acls_are_copied() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    // system.posix_acl_access, version 2: user::rw-, user:1234:r--, group::r--, mask::r--, other::---
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, 1234),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        acl.extend(tag.to_le_bytes());
        acl.extend(perm.to_le_bytes());
        acl.extend(id.to_le_bytes());
    }
    let set = rustix::fs::setxattr(
        src.join("f"),
        "system.posix_acl_access",
        &acl,
        rustix::fs::XattrFlags::empty(),
    );
    set.expect("the temp dir's file system takes POSIX ACLs (ext4, xfs and tmpfs do)");
    let (s, report) = run(
        &src,
        std::slice::from_ref(&dst),
        &Options::default(),
        whole(),
    );
    assert!(s.is_success(), "{s:?} {report:?}");
    let get = |p: &Path| {
        let mut buf = vec![0u8; 256];
        let n = rustix::fs::getxattr(p, "system.posix_acl_access", &mut buf).unwrap();
        buf.truncate(n);
        buf
    };
    assert_eq!(get(&dst.join("f")), get(&src.join("f")));
    // The checksum verify compares ACLs, and puts a lost one back.
    rustix::fs::removexattr(dst.join("f"), "system.posix_acl_access").unwrap();
    let opts = Options {
        verify: VerifyMode::Checksum,
        passes: Passes::VerifyOnly,
        ..Options::default()
    };
    let (s, report) = run(&src, std::slice::from_ref(&dst), &opts, whole());
    let v = s.verify.clone().unwrap();
    assert_eq!((v.mismatched, v.repaired), (1, 1), "{v:?} {report:?}");
    assert_eq!(v.by_kind.get(&Mismatch::Xattrs), Some(&1), "{v:?}");
    assert_eq!(get(&dst.join("f")), get(&src.join("f")));
}

/// Linux lets symlinks, fifos and sockets have several links too (link(2) does not follow a
/// symlink): they stay links of one inode, and a re-run leaves them alone.
#[test]
fn hard_linked_symlinks_and_fifos_stay_linked() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(src.join("a")).unwrap();
    symlink("target/elsewhere", src.join("a/l1")).unwrap();
    rustix::fs::linkat(
        rustix::fs::CWD,
        src.join("a/l1"),
        rustix::fs::CWD,
        src.join("l2"),
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("a/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    fs::hard_link(src.join("a/fifo"), src.join("fifo2")).unwrap();
    for _ in 0..2 {
        let (s, report) = run(
            &src,
            std::slice::from_ref(&dst),
            &Options::default(),
            whole(),
        );
        assert!(s.is_success(), "{s:?} {report:?}");
        let ino = |p: &str| fs::symlink_metadata(dst.join(p)).unwrap().ino();
        assert_eq!(ino("a/l1"), ino("l2"));
        assert_eq!(ino("a/fifo"), ino("fifo2"));
        assert_identical(&src, &dst);
    }
}

/// A directory the copy did not create (another shard's, an earlier run's) is written with
/// exclusive creates until a name is found taken there; from then on each file is looked at
/// first. Either way a file already done is skipped, one that differs is rewritten, and
/// whatever is in the way of a file is replaced: the same outcomes as a look first for all.
#[test]
fn files_in_a_directory_made_before_get_the_same_outcomes_with_exclusive_creates() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let d = src.join("d");
    fs::create_dir_all(&d).unwrap();
    for (name, data) in [("a", "new"), ("b", "same"), ("c", "changed"), ("e", "file")] {
        fs::write(d.join(name), data).unwrap();
    }
    let dst = t.path().join("dst");
    // The first run makes `dst/d`; the second finds it made and `b` done, `c` stale, a symlink
    // where `e` goes and `a` missing.
    run(
        &src,
        std::slice::from_ref(&dst),
        &Options::default(),
        whole(),
    );
    fs::remove_file(dst.join("d/a")).unwrap();
    fs::write(dst.join("d/c"), "stale!").unwrap();
    let c_mtime = fs::metadata(d.join("c")).unwrap().modified().unwrap();
    let f = fs::File::options()
        .write(true)
        .open(dst.join("d/c"))
        .unwrap();
    f.set_modified(c_mtime - std::time::Duration::from_secs(60))
        .unwrap();
    drop(f);
    fs::remove_file(dst.join("d/e")).unwrap();
    symlink("a", dst.join("d/e")).unwrap();
    let (summary, entries) = run(
        &src,
        std::slice::from_ref(&dst),
        &Options::default(),
        whole(),
    );
    assert_eq!(summary.copy.failed, 0, "{entries:?}");
    // a, c and e written; b found done.
    assert_eq!(summary.copy.files_copied, 3, "{:?}", summary.copy);
    assert_eq!(summary.copy.files_skipped, 1, "{:?}", summary.copy);
    assert_identical(&src, &dst);
}

/// The destination probe (a file made and removed in the root) puts the root's times back to
/// the source root's, whatever they were when it looked: workers probing the same root at once
/// each read them at another moment (one after another's probe file was made), and the last to
/// put them back would otherwise leave that moment's mtime on a root no later step settles (a
/// resumed run that finds every shard done). Here the root's mtime is wrong before the probe,
/// as another worker's probe would have left it.
#[test]
fn a_probe_leaves_the_destination_root_with_the_source_roots_times() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
    fs::File::open(&src).unwrap().set_modified(old).unwrap();
    fs::create_dir_all(&dst).unwrap();
    let job = ingest_copy::CopyJob {
        source: src.clone(),
        destinations: vec![dst.clone()],
        scopes: whole(),
    };
    let opts = Options {
        probe_destinations: true,
        ..Options::default()
    };
    let opened = ingest_copy::open(&job, &opts, &ingest_copy::Progress::default()).unwrap();
    assert!(opened.probed_at().is_some(), "a probe was made");
    assert_eq!(
        fs::metadata(&dst).unwrap().modified().unwrap(),
        old,
        "the root has the source root's mtime, not the moment of the probe"
    );
}

/// Writes `n` files of a few lines into each directory `dir` under `src`; returns the files.
fn write_dirs(src: &Path, dirs: &[(&str, usize)]) -> u64 {
    let mut files = 0;
    for &(dir, n) in dirs {
        let d = src.join(dir);
        fs::create_dir_all(&d).unwrap();
        for i in 0..n {
            fs::write(
                d.join(format!("f{i:03}")),
                format!("{dir} {i}\n").repeat(i + 1),
            )
            .unwrap();
            files += 1;
        }
    }
    files
}

/// The walks of the scheduling tests: one thread per mount or one in all, many, and `auto`.
fn schedules(threads: usize, auto: AutoConfig) -> [(&'static str, usize, Concurrency); 3] {
    [
        ("few", threads, Concurrency::Fixed),
        ("parallel", 12, Concurrency::Fixed),
        ("auto", 1, Concurrency::Auto(auto)),
    ]
}

/// Copies `src` into `dests` with `opts` (the destination root there already) and checks that
/// every entry ended once: `files` files and `dirs` directories (the root included) copied, an
/// identical copy, and a rerun that skips every file.
fn copies_each_entry_once(
    name: &str,
    src: &Path,
    dests: &[PathBuf],
    opts: &Options,
    files: u64,
    dirs: u64,
) {
    let (s, report) = run(src, dests, opts, whole());
    assert!(s.is_success(), "{name}: {s:?} {report:?}");
    assert_eq!(s.copy.files_copied, files, "{name}: {s:?}");
    // The root existed (the destination), so it is up to date; the others are made.
    assert_eq!(
        (s.copy.directories, s.copy.dirs_up_to_date),
        (dirs - 1, 1),
        "{name}: {s:?}"
    );
    assert_eq!(s.copy.entries, files + dirs, "{name}: {s:?}");
    assert_identical(src, &dests[0]);
    let (again, _) = run(src, dests, opts, whole());
    assert_eq!(
        (again.copy.files_skipped, again.copy.bytes_copied),
        (files, 0),
        "{name}: {again:?}"
    );
    assert_identical(src, &dests[0]);
}

#[test]
fn wide_directories_are_copied_beside_the_rest_with_each_entry_once() {
    // Batches of 2 entries: a directory of more than 16 files is wide (more batches than one
    // mount takes at once) and goes to the wide lane; two of them, one nested under a wide one,
    // beside a tree of narrow directories.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let tree = [
        ("wide", 60),
        ("wide/inner", 40),
        ("a/b/c", 5),
        ("a/d", 3),
        ("e", 1),
    ];
    let files = write_dirs(&src, &tree);
    let dirs = 8; // the root, wide, wide/inner, a, a/b, a/b/c, a/d, e
    let auto = AutoConfig {
        max_per_mount: 6,
        initial: 2,
        interval_ms: 5,
    };
    for (name, threads, concurrency) in schedules(1, auto) {
        let base = tmp.path().join(name);
        fs::create_dir(&base).unwrap();
        let dests = three_mounts(&base);
        let opts = Options {
            threads,
            concurrency,
            batch_files: 2,
            ..Options::default()
        };
        copies_each_entry_once(name, &src, &dests, &opts, files, dirs);
    }
}

#[test]
fn a_mount_known_to_be_slow_is_left_the_last_tasks_and_every_walk_still_ends() {
    // The third mount starts known as slow (a second per entry, as an earlier pass would have
    // measured it): while few tasks are left and the others have free threads, its threads wait
    // for work instead of taking it. Each configuration must still end, with every entry once,
    // in the copy, in a rerun, and in the pass that sets directory times after a sharded copy.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let tree = [("wide", 40), ("a/b/c", 5), ("a/d", 3), ("e", 1), ("f/g", 0)];
    let files = write_dirs(&src, &tree);
    let dirs = 9; // the root, wide, a, a/b, a/b/c, a/d, e, f, f/g
    let auto = AutoConfig {
        max_per_mount: 4,
        initial: 2,
        interval_ms: 5,
    };
    for (name, threads, concurrency) in schedules(3, auto) {
        let base = tmp.path().join(name);
        fs::create_dir(&base).unwrap();
        let dests = three_mounts(&base);
        let opts = Options {
            threads,
            concurrency,
            batch_files: 2,
            mount_pace: vec![Some(100), Some(100), Some(1_000_000)],
            ..Options::default()
        };
        copies_each_entry_once(name, &src, &dests, &opts, files, dirs);
        // Directory times set as after a sharded copy (the verify phase with verify none: only
        // the settle pass runs).
        let settle = Options {
            dir_times_in_verify: true,
            passes: ingest_copy::Passes::VerifyOnly,
            verify: ingest_copy::VerifyMode::None,
            probe_destinations: false,
            ..opts.clone()
        };
        let (settled, report) = run(&src, &dests, &settle, whole());
        assert!(settled.is_success(), "{name}: {settled:?} {report:?}");
        assert_identical(&src, &dests[0]);
    }
}
