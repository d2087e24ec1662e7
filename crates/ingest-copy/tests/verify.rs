//! The verifier on real files in temp dirs: each test makes a difference the copy's own walk
//! would not see (or that only a content read sees) and fails if the verifier were a no-op.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ingest_copy::{
    CopyJob, Mismatch, MultiLinked, Options, Outcome, Passes, Progress, RelPath, ReportEntry,
    ReportSink, Scope, Summary, VerifyCounts, VerifyMode,
};
use ingest_testkit::{CompareOptions, compare};

/// Keeps every entry, `Matched` ones included (`FirstN` drops those).
#[derive(Default)]
struct All(Mutex<Vec<ReportEntry>>);

impl ReportSink for All {
    fn record(&self, entry: ReportEntry) {
        self.0.lock().unwrap().push(entry);
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn rel(s: &str) -> RelPath {
    RelPath::from_bytes(s.as_bytes().to_vec()).unwrap()
}

fn whole() -> Vec<Scope> {
    vec![Scope::Tree(RelPath::root())]
}

/// A destination reached through two "mounts": the directory and a symlink to it.
fn two_mounts(base: &Path) -> Vec<PathBuf> {
    let d = base.join("dest");
    fs::create_dir(&d).unwrap();
    symlink(&d, base.join("mount1")).unwrap();
    vec![d, base.join("mount1")]
}

fn run(
    src: &Path,
    dests: &[PathBuf],
    opts: &Options,
    scopes: Vec<Scope>,
) -> (Summary, Vec<ReportEntry>) {
    let job = CopyJob {
        source: src.to_path_buf(),
        destinations: dests.to_vec(),
        scopes,
    };
    let sink = All::default();
    let summary = ingest_copy::run(&job, opts, &Progress::default(), &sink).expect("usable job");
    (summary, sink.0.into_inner().unwrap())
}

fn copy(src: &Path, dests: &[PathBuf]) {
    let opts = Options {
        threads: 4,
        passes: Passes::CopyOnly,
        ..Options::default()
    };
    let (s, r) = run(src, dests, &opts, whole());
    assert!(s.is_success(), "{s:?} {r:?}");
}

fn verify_opts(mode: VerifyMode, repair: bool) -> Options {
    Options {
        threads: 4,
        verify: mode,
        passes: Passes::VerifyOnly,
        repair,
        ..Options::default()
    }
}

fn verified(s: &Summary) -> VerifyCounts {
    let v = s.verify.clone().expect("a verify pass ran");
    assert_eq!(
        v.checked,
        v.matched + v.missing + v.mismatched + v.extraneous,
        "{v:?}"
    );
    v
}

/// The report's lines other than `Matched`, by path.
fn problems(report: &[ReportEntry]) -> BTreeMap<String, (Outcome, Vec<Mismatch>)> {
    report
        .iter()
        .filter(|e| e.outcome != Outcome::Matched)
        .map(|e| {
            let mut m = e.mismatches.clone();
            m.sort();
            (e.path.to_escaped(), (e.outcome, m))
        })
        .collect()
}

fn identical(src: &Path, dst: &Path) {
    let opts = CompareOptions {
        owner: is_root(),
        ..CompareOptions::all()
    };
    let diffs = compare(src, dst, &opts);
    assert!(diffs.is_empty(), "{diffs:#?}");
}

/// Gives `dst` the times of `like` (to undo what a test's own changes did to a directory).
fn same_times(dst: &Path, like: &Path) {
    let m = fs::metadata(like).unwrap();
    let times = fs::FileTimes::new()
        .set_modified(m.modified().unwrap())
        .set_accessed(m.accessed().unwrap());
    fs::File::open(dst).unwrap().set_times(times).unwrap();
}

/// Changes one byte in the middle and puts the size and mtime back as they were.
fn flip_byte_keep_mtime(p: &Path) {
    let before = fs::metadata(p).unwrap();
    let mut data = fs::read(p).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
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

/// Every path under `root` (itself included) → its ctime.
fn ctimes(root: &Path) -> BTreeMap<PathBuf, (i64, i64)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        out.insert(p.clone(), (m.ctime(), m.ctime_nsec()));
        if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    out
}

#[test]
fn extraneous_entries_are_found_once_each_and_never_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    for name in ["a", "k", "z"] {
        fs::write(src.join(name), name).unwrap();
    }
    fs::write(src.join("sub/file"), b"x").unwrap();
    let dests = two_mounts(tmp.path());
    copy(&src, &dests);
    let d = &dests[0];
    // On both sides of the name split used below, one of them a directory with contents (one
    // entry for the directory, not one for each thing in it), and one deeper down.
    fs::write(d.join("b-extra"), b"not in the source").unwrap();
    fs::create_dir_all(d.join("y-extra/inner")).unwrap();
    fs::write(d.join("y-extra/inner/f"), b"deep").unwrap();
    fs::write(d.join("sub/extra"), b"deeper").unwrap();
    same_times(d, &src);
    same_times(&d.join("sub"), &src.join("sub"));

    let split = [
        Scope::Entries {
            dir: RelPath::root(),
            from: None,
            to: Some(rel("m")),
            subtrees: false,
        },
        Scope::Entries {
            dir: RelPath::root(),
            from: Some(rel("m")),
            to: None,
            subtrees: false,
        },
        Scope::Tree(rel("sub")),
    ];
    for scopes in [whole(), split.to_vec()] {
        let (s, report) = run(
            &src,
            &dests,
            &verify_opts(VerifyMode::Metadata, true),
            scopes.clone(),
        );
        let v = verified(&s);
        assert_eq!(v.extraneous, 3, "{scopes:?}: {v:?} {report:?}");
        assert_eq!((v.missing, v.mismatched, v.errors), (0, 0, 0), "{v:?}");
        assert_eq!(v.by_kind.get(&Mismatch::Extraneous), Some(&3));
        assert!(
            !v.is_clean() && !s.is_success(),
            "extraneous entries make it differ"
        );
        let p = problems(&report);
        let extra = (Outcome::Mismatched, vec![Mismatch::Extraneous]);
        let want: BTreeMap<_, _> = ["b-extra", "y-extra", "sub/extra"]
            .into_iter()
            .map(|n| (n.to_string(), extra.clone()))
            .collect();
        assert_eq!(p, want, "{scopes:?}");
        assert!(d.join("b-extra").is_file());
        assert!(d.join("y-extra/inner/f").is_file());
        assert!(d.join("sub/extra").is_file());
    }
}

#[test]
fn a_missing_file_with_a_link_outside_the_tree_is_found_and_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/linked"), b"one inode, two names").unwrap();
    fs::write(src.join("d/plain"), b"plain").unwrap();
    // The other name is outside the copied tree: no LinkGroup would hold both.
    fs::hard_link(src.join("d/linked"), tmp.path().join("outside")).unwrap();
    let dests = two_mounts(tmp.path());
    copy(&src, &dests);
    fs::remove_file(dests[0].join("d/linked")).unwrap();
    same_times(&dests[0].join("d"), &src.join("d"));

    // The copy's sharded mode skips, in trees, the multi-linked files a LinkGroup copies; the
    // verifier must not skip them, whatever the copy was told.
    let grouped = [ingest_copy::RelPath::from_bytes("d/linked").unwrap()].into();
    let opts = Options {
        multilinked: MultiLinked::Elsewhere(std::sync::Arc::new(grouped)),
        ..verify_opts(VerifyMode::Metadata, true)
    };
    let (s, report) = run(&src, &dests, &opts, whole());
    let v = verified(&s);
    assert_eq!(
        (v.missing, v.repaired, v.errors),
        (1, 1, 0),
        "{v:?} {report:?}"
    );
    assert_eq!(
        problems(&report).get("d/linked"),
        Some(&(Outcome::Repaired, vec![Mismatch::Missing]))
    );
    assert!(v.is_clean());
    assert_eq!(
        fs::read(dests[0].join("d/linked")).unwrap(),
        b"one inode, two names"
    );
    identical(&src, &dests[0]);
}

#[test]
fn equal_size_and_mtime_corruption_is_seen_only_by_checksum_and_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    // Bigger than one read and not a multiple of the alignment: the short last direct read.
    let data: Vec<u8> = (0..(1 << 20) * 2 + 777)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    fs::write(src.join("d/victim"), &data).unwrap();
    fs::write(src.join("d/bystander"), b"unchanged").unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    let dests = two_mounts(tmp.path());
    copy(&src, &dests);
    flip_byte_keep_mtime(&dests[0].join("d/victim"));
    assert_ne!(fs::read(dests[0].join("d/victim")).unwrap(), data);

    let (s, report) = run(
        &src,
        &dests,
        &verify_opts(VerifyMode::Metadata, true),
        whole(),
    );
    let v = verified(&s);
    assert!(v.is_clean() && v.matched == v.checked, "{v:?} {report:?}");
    assert_ne!(
        fs::read(dests[0].join("d/victim")).unwrap(),
        data,
        "metadata cannot see it"
    );

    let (s, report) = run(
        &src,
        &dests,
        &verify_opts(VerifyMode::Checksum, true),
        whole(),
    );
    let v = verified(&s);
    assert_eq!(
        v.by_kind.get(&Mismatch::Content),
        Some(&1),
        "{v:?} {report:?}"
    );
    assert_eq!((v.mismatched, v.repaired, v.errors), (1, 1, 0), "{v:?}");
    let digest = blake3::hash(&data).to_hex().to_string();
    let line = report
        .iter()
        .find(|e| e.path.as_bytes() == b"d/victim")
        .unwrap();
    assert_eq!(line.outcome, Outcome::Repaired);
    assert_eq!(line.mismatches, [Mismatch::Content]);
    assert_eq!(line.digest.as_deref(), Some(digest.as_str()));
    // Every other file that was read is in the audit trail with its digest, type, size and
    // mtime (directories are in it too, compared by their metadata).
    let matched: BTreeMap<_, _> = report
        .iter()
        .filter(|e| e.outcome == Outcome::Matched)
        .filter(|e| e.meta.as_ref().expect("each record says what it was").kind == 'f')
        .map(|e| (e.path.to_escaped(), e.digest.clone().unwrap()))
        .collect();
    assert_eq!(
        matched,
        BTreeMap::from([
            (
                "d/bystander".to_string(),
                blake3::hash(b"unchanged").to_hex().to_string()
            ),
            ("empty".to_string(), blake3::hash(b"").to_hex().to_string()),
        ])
    );
    assert_eq!(fs::read(dests[0].join("d/victim")).unwrap(), data);
    identical(&src, &dests[0]);
}

#[test]
fn report_only_lists_every_difference_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("d/gone/deeper")).unwrap();
    fs::write(src.join("d/gone/one"), b"1").unwrap();
    fs::write(src.join("d/gone/deeper/two"), b"2").unwrap();
    fs::write(src.join("d/deleted"), b"deleted").unwrap();
    fs::write(src.join("d/chmodded"), b"mode").unwrap();
    fs::set_permissions(src.join("d/chmodded"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(src.join("d/truncated"), b"longer than one byte").unwrap();
    fs::write(src.join("d/flipped"), b"content only").unwrap();
    fs::write(src.join("d/fine"), b"fine").unwrap();
    symlink("target-a", src.join("d/link")).unwrap();
    let dests = two_mounts(tmp.path());
    copy(&src, &dests);
    let d = dests[0].join("d");
    fs::remove_dir_all(d.join("gone")).unwrap();
    fs::remove_file(d.join("deleted")).unwrap();
    fs::set_permissions(d.join("chmodded"), fs::Permissions::from_mode(0o600)).unwrap();
    let f = fs::File::options()
        .write(true)
        .open(d.join("truncated"))
        .unwrap();
    f.set_len(1).unwrap();
    drop(f);
    same_times(&d.join("truncated"), &src.join("d/truncated"));
    flip_byte_keep_mtime(&d.join("flipped"));
    fs::remove_file(d.join("link")).unwrap();
    symlink("target-b", d.join("link")).unwrap();
    let lt = fs::symlink_metadata(src.join("d/link")).unwrap();
    rustix::fs::utimensat(
        rustix::fs::CWD,
        d.join("link"),
        &rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: lt.atime(),
                tv_nsec: lt.atime_nsec() as _,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: lt.mtime(),
                tv_nsec: lt.mtime_nsec() as _,
            },
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
    fs::write(d.join("extra"), b"extra").unwrap();
    same_times(&d, &src.join("d"));

    let before = ctimes(&dests[0]);
    let (s, report) = run(
        &src,
        &dests,
        &verify_opts(VerifyMode::Checksum, false),
        whole(),
    );
    assert_eq!(
        ctimes(&dests[0]),
        before,
        "report-only must not change anything"
    );
    let v = verified(&s);
    assert_eq!(v.repaired, 0, "{v:?}");
    assert!(!v.is_clean() && !s.is_success());
    use Mismatch::*;
    let mism = |m: Vec<Mismatch>| (Outcome::Mismatched, m);
    let want: BTreeMap<String, _> = [
        ("d/gone", mism(vec![Missing])),
        ("d/gone/one", mism(vec![Missing])),
        ("d/gone/deeper", mism(vec![Missing])),
        ("d/gone/deeper/two", mism(vec![Missing])),
        ("d/deleted", mism(vec![Missing])),
        ("d/chmodded", mism(vec![Mode])),
        ("d/truncated", mism(vec![Size])),
        ("d/flipped", mism(vec![Content])),
        ("d/link", mism(vec![LinkTarget])),
        ("d/extra", mism(vec![Extraneous])),
    ]
    .into_iter()
    .map(|(p, o)| (p.to_string(), o))
    .collect();
    assert_eq!(problems(&report), want);
    assert_eq!(
        (v.missing, v.mismatched, v.extraneous, v.errors),
        (5, 4, 1, 0),
        "{v:?}"
    );
    let flipped = report
        .iter()
        .find(|e| e.path.as_bytes() == b"d/flipped")
        .unwrap();
    assert!(
        flipped.error.as_deref().unwrap().contains("BLAKE3"),
        "{flipped:?}"
    );

    // The same differences, repaired: all but the extraneous entry, which stays.
    let (s, report) = run(
        &src,
        &dests,
        &verify_opts(VerifyMode::Checksum, true),
        whole(),
    );
    let v = verified(&s);
    assert_eq!(
        (v.missing, v.mismatched, v.repaired, v.extraneous, v.errors),
        (5, 4, 9, 1, 0),
        "{v:?} {report:?}"
    );
    fs::remove_file(d.join("extra")).unwrap();
    same_times(&d, &src.join("d"));
    identical(&src, &dests[0]);
}

#[test]
fn a_hard_link_split_in_the_destination_is_found_and_relinked() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::create_dir_all(src.join("b")).unwrap();
    fs::write(src.join("a/first"), b"shared data").unwrap();
    fs::hard_link(src.join("a/first"), src.join("b/second")).unwrap();
    let dests = two_mounts(tmp.path());
    copy(&src, &dests);
    let (one, two) = (dests[0].join("a/first"), dests[0].join("b/second"));
    assert_eq!(
        fs::metadata(&one).unwrap().ino(),
        fs::metadata(&two).unwrap().ino()
    );
    // Split: `b/second` becomes its own inode with the same data, mode and times.
    fs::remove_file(&two).unwrap();
    fs::copy(&one, &two).unwrap();
    same_times(&two, &one);
    same_times(&dests[0].join("b"), &src.join("b"));
    if is_root() {
        let m = fs::metadata(&one).unwrap();
        std::os::unix::fs::chown(&two, Some(m.uid()), Some(m.gid())).unwrap();
    }

    for (repair, want) in [(false, Outcome::Mismatched), (true, Outcome::Repaired)] {
        let (s, report) = run(
            &src,
            &dests,
            &verify_opts(VerifyMode::Metadata, repair),
            whole(),
        );
        let v = verified(&s);
        assert_eq!(
            v.by_kind.get(&Mismatch::HardLink),
            Some(&1),
            "{v:?} {report:?}"
        );
        let p = problems(&report);
        assert_eq!(p.len(), 1, "{p:?}");
        // Whichever name was checked first anchors the inode; the other is the split one.
        assert_eq!(
            p.values().next().unwrap(),
            &(want, vec![Mismatch::HardLink])
        );
    }
    assert_eq!(
        fs::metadata(&one).unwrap().ino(),
        fs::metadata(&two).unwrap().ino()
    );
    identical(&src, &dests[0]);
}

#[test]
fn a_wrong_range_of_a_finalized_file_is_a_content_difference_in_any_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("big")).unwrap();
    let data: Vec<u8> = (0..(3 << 20) + 12345)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    fs::write(src.join("big/file"), &data).unwrap();
    let dests = two_mounts(tmp.path());
    let file = rel("big/file");
    let chunk = 1u64 << 20;
    let copy_opts = Options {
        threads: 2,
        passes: Passes::CopyOnly,
        split_threshold: chunk,
        ..Options::default()
    };
    // Three "workers", each with one range, as the cluster's copy phase does.
    for off in [0, chunk, 2 * chunk] {
        let len = if off == 2 * chunk {
            data.len() as u64 - off
        } else {
            chunk
        };
        let scopes = vec![Scope::FileRange {
            file: file.clone(),
            offset: off,
            len,
        }];
        let (s, r) = run(&src, &dests, &copy_opts, scopes);
        assert_eq!(s.copy.failed, 0, "{r:?}");
    }
    let opts = Options {
        dir_times_in_verify: true,
        ..verify_opts(VerifyMode::Metadata, true)
    };
    // The last phase finalizes it (the settle step compares the ranges with the source first).
    let (s, report) = run(&src, &dests, &opts, vec![Scope::Finalize(file.clone())]);
    assert!(s.is_success(), "{s:?} {report:?}");
    // Then its data goes bad under the source's size and mtime: only reading it can tell, and
    // the verifier reads a finalized file in full whatever the mode.
    flip_byte_keep_mtime(&dests[0].join("big/file"));
    let (s, report) = run(&src, &dests, &opts, vec![Scope::Finalize(file)]);
    let v = verified(&s);
    assert_eq!(
        (v.checked, v.mismatched, v.repaired, v.errors),
        (1, 1, 1, 0),
        "{v:?} {report:?}"
    );
    assert_eq!(v.by_kind.get(&Mismatch::Content), Some(&1), "{v:?}");
    assert_eq!(fs::read(dests[0].join("big/file")).unwrap(), data);
    let (sm, dm) = (
        fs::metadata(src.join("big/file")).unwrap(),
        fs::metadata(dests[0].join("big/file")).unwrap(),
    );
    assert_eq!((dm.mtime(), dm.mtime_nsec()), (sm.mtime(), sm.mtime_nsec()));
}

/// `verify.scope: Changed`: a checksum verify reads the content of files whose destination ctime
/// is at or after the given time (written by this pass) and compares the others by metadata,
/// counting them. A file corrupted with its size and mtime kept is found when its ctime is in
/// scope, and (by design) not when it is older: the threshold decides, nothing else.
#[test]
fn a_changed_scope_reads_only_the_content_of_files_written_since_its_threshold() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(src.join("d/victim"), &data).unwrap();
    fs::write(src.join("d/bystander"), b"unchanged").unwrap();
    let dests = two_mounts(tmp.path());
    copy(&src, &dests);
    flip_byte_keep_mtime(&dests[0].join("d/victim"));
    let ctime = fs::metadata(dests[0].join("d/victim")).unwrap().ctime();
    let scoped = |since: i64| Options {
        content_changed_since: Some((since, 0)),
        ..verify_opts(VerifyMode::Checksum, false)
    };

    // Its ctime is before the threshold: not read, compared by metadata, taken as equal.
    let (s, report) = run(&src, &dests, &scoped(ctime + 1), whole());
    let v = verified(&s);
    assert!(v.is_clean(), "{v:?} {report:?}");
    assert_eq!(v.content_unchanged, 2, "both files: {v:?}");
    assert!(
        report.iter().all(|e| e.digest.is_none()),
        "nothing was read: {report:?}"
    );

    // At the threshold: read, and found.
    let (s, report) = run(&src, &dests, &scoped(ctime), whole());
    let v = verified(&s);
    assert_eq!(
        v.by_kind.get(&Mismatch::Content),
        Some(&1),
        "{v:?} {report:?}"
    );
    assert_eq!(v.unrepaired, 1, "{v:?}");
    assert!(
        v.content_unchanged <= 1,
        "only the bystander may be older: {v:?}"
    );

    // `All` reads every file.
    let (s, report) = run(
        &src,
        &dests,
        &verify_opts(VerifyMode::Checksum, false),
        whole(),
    );
    let v = verified(&s);
    assert_eq!(
        (v.unrepaired, v.content_unchanged),
        (1, 0),
        "{v:?} {report:?}"
    );
}
