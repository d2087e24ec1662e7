//! The comparison must catch each kind of damage a copier can do, name the right path and
//! aspect, and report nothing else. The two trees are made by the generator from one seed,
//! which is itself checked to give identical trees.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ingest_testkit::compare::join_bytes;
use ingest_testkit::{Aspect, CompareOptions, Dataset, Difference, GenOptions, compare, generate};
use rustix::fs::{AtFlags, CWD, Timespec, Timestamps};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn full() -> CompareOptions {
    CompareOptions {
        owner: is_root(),
        atime: true,
        ..CompareOptions::all()
    }
}

/// Two byte-identical `kinds` trees.
fn pair() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    generate(Dataset::Kinds, &src, &GenOptions::default()).unwrap();
    generate(Dataset::Kinds, &dst, &GenOptions::default()).unwrap();
    (tmp, src, dst)
}

/// Keeps the times of `path` across `f`, so that a test of one entry's damage is
/// not also a change of its parent directory.
fn keeping_times<T>(path: &Path, f: impl FnOnce() -> T) -> T {
    let m = fs::symlink_metadata(path).unwrap();
    let r = f();
    set_times(path, m_atime(&m), m_mtime(&m));
    r
}

fn m_mtime(m: &fs::Metadata) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    (m.mtime(), m.mtime_nsec())
}

fn m_atime(m: &fs::Metadata) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    (m.atime(), m.atime_nsec())
}

fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) {
    let ts = |(s, ns): (i64, i64)| Timespec {
        tv_sec: s,
        tv_nsec: ns as _,
    };
    let times = Timestamps {
        last_access: ts(atime),
        last_modification: ts(mtime),
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

/// The differences must be exactly `expected` (path, aspect), in any order.
fn assert_exactly(diffs: &[Difference], expected: &[(&str, Aspect)]) {
    let mut got: Vec<(String, Aspect)> = diffs.iter().map(|d| (d.path.clone(), d.aspect)).collect();
    let mut want: Vec<(String, Aspect)> =
        expected.iter().map(|(p, a)| (p.to_string(), *a)).collect();
    got.sort();
    want.sort();
    assert_eq!(
        got,
        want,
        "differences were:\n{}",
        diffs.iter().map(|d| format!("  {d}\n")).collect::<String>()
    );
}

#[test]
fn identical_trees_have_no_differences() {
    let (_t, src, dst) = pair();
    assert_exactly(&compare(&src, &dst, &full()), &[]);
}

#[test]
fn flipped_byte_is_content_with_offset() {
    let (_t, src, dst) = pair();
    let p = dst.join("regular/multi-buffer.bin");
    keeping_times(&p, || {
        let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 2_000_000).unwrap();
        f.write_all_at(&[b[0] ^ 0x01], 2_000_000).unwrap();
    });
    let d = compare(&src, &dst, &full());
    assert_exactly(&d, &[("regular/multi-buffer.bin", Aspect::Content)]);
    assert!(d[0].detail.contains("2000000"), "{}", d[0]);
}

#[test]
fn truncated_file_is_size() {
    let (_t, src, dst) = pair();
    let p = dst.join("regular/plain.txt");
    keeping_times(&p, || {
        OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(50)
            .unwrap()
    });
    let d = compare(&src, &dst, &full());
    assert_exactly(&d, &[("regular/plain.txt", Aspect::Size)]);
    assert!(
        d[0].detail
            .contains("source 100 bytes, destination 50 bytes"),
        "{}",
        d[0]
    );
}

#[test]
fn deleted_and_extra_entries_are_named_escaped() {
    let (_t, src, dst) = pair();
    let names = dst.join("names");
    keeping_times(&names, || {
        fs::remove_file(join_bytes(&dst, b"names/non-utf8-\xff\xfe")).unwrap();
        fs::write(join_bytes(&dst, b"names/new\nfile"), b"x").unwrap();
    });
    let d = compare(&src, &dst, &full());
    assert_exactly(
        &d,
        &[
            ("names/non-utf8-\\xff\\xfe", Aspect::Missing),
            ("names/new\\nfile", Aspect::Extra),
        ],
    );
}

#[test]
fn deleted_directory_is_one_missing_entry() {
    let (_t, src, dst) = pair();
    keeping_times(&dst, || fs::remove_dir_all(dst.join("deep")).unwrap());
    assert_exactly(&compare(&src, &dst, &full()), &[("deep", Aspect::Missing)]);
}

#[test]
fn chmod_is_mode_and_ignored_when_not_asked() {
    let (_t, src, dst) = pair();
    fs::set_permissions(dst.join("modes/exec"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(
        dst.join("modes/setgid-dir"),
        fs::Permissions::from_mode(0o775),
    )
    .unwrap();
    let d = compare(&src, &dst, &full());
    assert_exactly(
        &d,
        &[
            ("modes/exec", Aspect::Mode),
            ("modes/setgid-dir", Aspect::Mode),
        ],
    );
    assert!(
        d.iter()
            .any(|d| d.detail == "source 0755, destination 0644"),
        "{d:?}"
    );
    assert_exactly(&compare(&src, &dst, &CompareOptions::content_only()), &[]);
}

#[test]
fn mtime_off_by_one_nanosecond_is_found_per_kind() {
    let (_t, src, dst) = pair();
    for rel in ["regular/empty", "links/relative", "hard", "special/fifo"] {
        let p = dst.join(rel);
        let m = fs::symlink_metadata(&p).unwrap();
        let (s, ns) = m_mtime(&m);
        set_times(&p, m_atime(&m), (s, (ns + 1) % 1_000_000_000));
    }
    let d = compare(&src, &dst, &full());
    assert_exactly(
        &d,
        &[
            ("regular/empty", Aspect::Mtime),
            ("links/relative", Aspect::SymlinkMtime),
            ("hard", Aspect::DirMtime),
            ("special/fifo", Aspect::Mtime),
        ],
    );
    let no_times = CompareOptions {
        mtime: false,
        dir_mtime: false,
        symlink_mtime: false,
        ..full()
    };
    assert_exactly(&compare(&src, &dst, &no_times), &[]);
}

#[test]
fn atime_is_checked_only_when_asked() {
    let (_t, src, dst) = pair();
    let p = dst.join("regular/plain.txt");
    let m = fs::symlink_metadata(&p).unwrap();
    set_times(&p, (1, 0), m_mtime(&m));
    assert_exactly(
        &compare(&src, &dst, &full()),
        &[("regular/plain.txt", Aspect::Atime)],
    );
    assert_exactly(
        &compare(
            &src,
            &dst,
            &CompareOptions {
                owner: is_root(),
                ..CompareOptions::all()
            },
        ),
        &[],
    );
}

#[test]
fn changed_symlink_target_is_found() {
    let (_t, src, dst) = pair();
    let links = dst.join("links");
    keeping_times(&links, || {
        fs::remove_file(dst.join("links/dangling")).unwrap();
        std::os::unix::fs::symlink("does/not/exist2", dst.join("links/dangling")).unwrap();
    });
    let m = fs::symlink_metadata(src.join("links/dangling")).unwrap();
    set_times(&dst.join("links/dangling"), m_atime(&m), m_mtime(&m));
    let d = compare(&src, &dst, &full());
    assert_exactly(&d, &[("links/dangling", Aspect::SymlinkTarget)]);
    assert_eq!(
        d[0].detail,
        "source -> does/not/exist, destination -> does/not/exist2"
    );
}

#[test]
fn file_replaced_by_symlink_is_type() {
    let (_t, src, dst) = pair();
    let dir = dst.join("regular");
    keeping_times(&dir, || {
        fs::remove_file(dst.join("regular/one-byte")).unwrap();
        std::os::unix::fs::symlink("plain.txt", dst.join("regular/one-byte")).unwrap();
    });
    let d = compare(&src, &dst, &full());
    assert_exactly(&d, &[("regular/one-byte", Aspect::Type)]);
    assert_eq!(
        d[0].detail,
        "source is a regular file, destination a symlink"
    );
}

#[test]
fn broken_hard_link_is_found_even_with_equal_content() {
    let (_t, src, dst) = pair();
    let p = dst.join("hard/b/pair-link");
    let m = fs::symlink_metadata(&p).unwrap();
    // Reading moves the shared inode's atime: put it back on the name that keeps it.
    let data = keeping_times(&dst.join("hard/a/pair"), || fs::read(&p).unwrap());
    keeping_times(&dst.join("hard/b"), || {
        fs::remove_file(&p).unwrap();
        fs::File::create(&p).unwrap().write_all(&data).unwrap();
    });
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    set_times(&p, m_atime(&m), m_mtime(&m));
    let d = compare(&src, &dst, &full());
    assert_exactly(&d, &[("hard/b/pair-link", Aspect::HardLink)]);
    assert!(
        d[0].detail.contains("linked to hard/a/pair in source"),
        "{}",
        d[0]
    );
}

#[test]
fn names_linked_only_in_destination_are_found() {
    let (_t, src, dst) = pair();
    // A copier that links two separate files (say, by equal content) joins inodes the source
    // keeps apart; this is reported on the second name, whatever its content.
    let (a, b) = (dst.join("regular/plain.txt"), dst.join("regular/one-byte"));
    fs::remove_file(&b).unwrap();
    fs::hard_link(&a, &b).unwrap();
    let opts = CompareOptions {
        hard_links: true,
        ..CompareOptions::content_only()
    };
    let d = compare(&src, &dst, &opts);
    assert!(
        d.iter().any(|x| x.aspect == Aspect::HardLink
            && x.path == "regular/plain.txt"
            && x.detail == "linked to regular/one-byte in destination, a separate file in source"),
        "{d:?}"
    );
    let without = CompareOptions {
        hard_links: false,
        ..opts
    };
    assert!(
        compare(&src, &dst, &without)
            .iter()
            .all(|x| x.aspect != Aspect::HardLink)
    );
}

#[test]
fn changed_xattr_is_found() {
    let (_t, src, dst) = pair();
    rustix::fs::lsetxattr(
        dst.join("xattr/file"),
        "user.alpha",
        b"two",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::lremovexattr(dst.join("xattr"), "user.on-dir").unwrap();
    let d = compare(&src, &dst, &full());
    assert_exactly(
        &d,
        &[("xattr/file", Aspect::Xattr), ("xattr", Aspect::Xattr)],
    );
    assert!(d.iter().any(|d| d.detail == "user.alpha differs"), "{d:?}");
    assert!(d.iter().any(|d| d.detail == "user.on-dir missing"), "{d:?}");
}

#[test]
fn filled_holes_are_sparse_difference() {
    let (_t, src, dst) = pair();
    let p = dst.join("sparse/holes.img");
    keeping_times(&p, || {
        let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        let mut data = vec![0u8; 16 << 20];
        use std::io::Read;
        (&f).read_exact(&mut data).unwrap();
        f.write_all_at(&data, 0).unwrap();
        f.sync_all().unwrap();
    });
    assert_exactly(
        &compare(&src, &dst, &full()),
        &[("sparse/holes.img", Aspect::Sparse)],
    );
}

#[test]
fn changed_owner_is_found_when_root() {
    if !is_root() {
        // Only root can give a file to another owner; the check itself is plain field equality.
        assert!(!full().owner);
        return;
    }
    let (_t, src, dst) = pair();
    std::os::unix::fs::lchown(dst.join("regular/plain.txt"), Some(1), Some(2)).unwrap();
    let d = compare(&src, &dst, &full());
    assert_exactly(&d, &[("regular/plain.txt", Aspect::Owner)]);
    assert_eq!(d[0].detail, "source 0:0, destination 1:2");
}

#[test]
fn unreadable_destination_root_is_an_error_value() {
    let (_t, src, dst) = pair();
    let d = compare(&src, &dst.join("nope"), &full());
    assert_exactly(&d, &[(".", Aspect::Error)]);
    assert!(d[0].detail.contains("destination"), "{}", d[0]);
}

#[test]
fn a_faithful_real_copier_passes() {
    // `cp -a` keeps everything compare checks except atime (it reads the source without
    // O_NOATIME, which moves the source's atimes): no false alarms on a real copy.
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    generate(Dataset::Kinds, &src, &GenOptions::default()).unwrap();
    fs::create_dir(&dst).unwrap();
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(src.join("."))
        .arg(&dst)
        .status()
        .unwrap();
    assert!(st.success());
    assert_exactly(
        &compare(
            &src,
            &dst,
            &CompareOptions {
                owner: is_root(),
                ..CompareOptions::all()
            },
        ),
        &[],
    );
    // And a copier that keeps nothing but contents is caught on every kind of metadata.
    let lossy = tmp.path().join("lossy");
    fs::create_dir(&lossy).unwrap();
    let st = std::process::Command::new("cp")
        .args(["-R", "--no-preserve=all"])
        .arg(src.join("regular/."))
        .arg(&lossy)
        .status()
        .unwrap();
    assert!(st.success());
    let d = compare(&src.join("regular"), &lossy, &full());
    assert!(d.iter().any(|d| d.aspect == Aspect::Mtime), "{d:?}");
    assert!(d.iter().all(|d| d.aspect != Aspect::Content), "{d:?}");
}
