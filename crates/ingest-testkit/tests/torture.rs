//! The torture inputs: deterministic from the seed, every kind present, and the comparison's
//! hard-link checks that the torture test relies on.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use ingest_testkit::compare::{join_bytes, path_bytes};
use ingest_testkit::torture::{
    Mutation, mutate, random_faults, random_tree, snapshot, snapshot_diff,
};
use ingest_testkit::{Aspect, CompareOptions, compare};

/// The trees have unreadable files (mode 000), read-only directories and other owners: only
/// root can read and change them all, as the torture test does.
fn root_only(test: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        eprintln!("{test}: skipped, needs root");
    }
    root
}

fn opts() -> CompareOptions {
    CompareOptions {
        owner: rustix::process::geteuid().is_root(),
        ..CompareOptions::all()
    }
}

#[test]
fn same_seed_same_tree_and_faults() {
    if !root_only("same_seed_same_tree_and_faults") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    for d in ["oa", "ob"] {
        fs::create_dir(t.join(d)).unwrap();
    }
    let a = random_tree(7, &t.join("a"), &t.join("oa")).unwrap();
    let b = random_tree(7, &t.join("b"), &t.join("ob")).unwrap();
    assert_eq!(a.files, b.files);
    assert_eq!(random_faults(7, &a), random_faults(7, &b));
    assert!(!random_faults(7, &a).is_empty());
    // Equal but for the links out of the tree, which the comparison must flag on the side it
    // takes for the destination: a copy never links to a path outside its tree.
    let diffs = compare(&t.join("a"), &t.join("b"), &opts());
    assert!(!diffs.is_empty());
    for d in &diffs {
        assert_eq!(d.aspect, Aspect::HardLink, "{d}");
        assert!(d.detail.contains("outside the copy"), "{d}");
        let rel = path_bytes(&d.path);
        let ino = fs::symlink_metadata(join_bytes(&t.join("b"), &rel))
            .unwrap()
            .ino();
        let outside_names = fs::read_dir(t.join("ob"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().metadata().unwrap().ino() == ino)
            .count();
        assert!(outside_names > 0, "{d}");
    }
    // A different seed gives a different tree.
    let c = random_tree(8, &t.join("c"), &t.join("oa")).unwrap();
    assert_ne!(a.files, c.files);
}

#[test]
fn trees_hold_every_kind_over_a_few_seeds() {
    if !root_only("trees_hold_every_kind_over_a_few_seeds") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (mut sockets, mut fifos, mut devices, mut dangling, mut before_1970) = (0, 0, 0, 0, 0);
    let (mut setuid, mut sticky, mut xattrs, mut long, mut newline, mut bad_utf8) =
        (0, 0, 0, 0, 0, 0);
    let (mut linked_non_files, mut outside, mut big, mut sparse) = (0, 0, 0, 0);
    for seed in 1..=4 {
        let (r, o) = (
            tmp.path().join(format!("t{seed}")),
            tmp.path().join(format!("o{seed}")),
        );
        fs::create_dir(&o).unwrap();
        let info = random_tree(seed, &r, &o).unwrap();
        assert!((250..=360).contains(&info.entries), "{}", info.entries);
        linked_non_files += info.linked_non_files.len();
        outside += info.linked_outside.len();
        big += info.big_files.len();
        sparse += info.sparse_files.len();
        for (rel, e) in snapshot(&r).unwrap() {
            let p = join_bytes(&r, &rel);
            let m = fs::symlink_metadata(&p).unwrap();
            let t = m.file_type();
            sockets += t.is_socket() as u32;
            fifos += t.is_fifo() as u32;
            devices += (t.is_char_device() || t.is_block_device()) as u32;
            dangling += (t.is_symlink() && fs::metadata(&p).is_err()) as u32;
            before_1970 += (e.mtime.0 < 0) as u32;
            setuid += (t.is_file() && e.mode & 0o4000 != 0) as u32;
            sticky += (t.is_dir() && e.mode & 0o1000 != 0) as u32;
            xattrs += !e.xattrs.is_empty() as u32;
            let name = p
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_default();
            long += (name.len() >= 240) as u32;
            newline += name.contains(&b'\n') as u32;
            bad_utf8 += std::str::from_utf8(&name).is_err() as u32;
        }
    }
    for (what, n) in [
        ("sockets", sockets),
        ("fifos", fifos),
        ("dangling symlinks", dangling),
        ("mtimes before 1970", before_1970),
        ("sticky directories", sticky),
        ("xattrs", xattrs),
        ("names of 240+ bytes", long),
        ("names with a newline", newline),
        ("names that are not UTF-8", bad_utf8),
        ("hard-linked symlinks or fifos", linked_non_files as u32),
        ("links out of the tree", outside as u32),
        ("files over 64 KiB", big as u32),
        ("sparse files", sparse as u32),
    ] {
        assert!(n > 0, "no {what} in seeds 1-4");
    }
    assert!(
        devices > 0 && setuid > 0,
        "devices {devices}, setuid {setuid}"
    );
}

/// Two fifos that are one inode in the source and two in the destination: the comparison must
/// say so (it used to check regular files only).
#[test]
fn compare_checks_hard_links_of_every_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("s"), tmp.path().join("d"));
    for d in [&src, &dst] {
        fs::create_dir(d).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            d.join("a"),
            rustix::fs::Mode::from_raw_mode(0o644),
        )
        .unwrap();
    }
    fs::hard_link(src.join("a"), src.join("b")).unwrap();
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        dst.join("b"),
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .unwrap();
    let o = CompareOptions::content_only();
    let o = CompareOptions {
        hard_links: true,
        ..o
    };
    let diffs = compare(&src, &dst, &o);
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert_eq!(
        (diffs[0].path.as_str(), diffs[0].aspect),
        ("b", Aspect::HardLink)
    );
}

/// A destination name linked to a file outside the destination tree is flagged; a link between
/// an extra destination name and a compared one is not taken for one.
#[test]
fn compare_flags_links_out_of_the_destination_only() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("s"), tmp.path().join("d"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    fs::write(src.join("g"), b"y").unwrap();
    fs::write(dst.join("f"), b"x").unwrap();
    fs::write(dst.join("g"), b"y").unwrap();
    fs::hard_link(dst.join("f"), tmp.path().join("elsewhere")).unwrap();
    fs::hard_link(dst.join("g"), dst.join("extra")).unwrap();
    let o = CompareOptions {
        hard_links: true,
        ..CompareOptions::content_only()
    };
    let diffs = compare(&src, &dst, &o);
    let got: Vec<(&str, Aspect)> = diffs.iter().map(|d| (d.path.as_str(), d.aspect)).collect();
    assert_eq!(
        got,
        vec![("extra", Aspect::Extra), ("f", Aspect::HardLink)],
        "{diffs:?}"
    );
}

#[test]
fn mutations_are_deterministic_and_snapshots_see_them() {
    if !root_only("mutations_are_deterministic_and_snapshots_see_them") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mut made = Vec::new();
    for side in ["x", "y"] {
        let (src, dst, out) = (
            t.join(format!("{side}s")),
            t.join(format!("{side}d")),
            t.join(format!("{side}o")),
        );
        fs::create_dir(&out).unwrap();
        let info = random_tree(3, &src, &out).unwrap();
        copy_tree(&src, &dst);
        let before = snapshot(&src).unwrap();
        let m = mutate(3, &info, &src, &dst).unwrap();
        assert!(!m.is_empty());
        let after = snapshot(&src).unwrap();
        let changed = snapshot_diff(&before, &after);
        let touches_source = m.iter().any(|m| {
            matches!(
                m,
                Mutation::SrcAppend(_)
                    | Mutation::SrcDelete(_)
                    | Mutation::SrcAddHardLink(..)
                    | Mutation::SrcRewriteSameSizeMtime(_)
            )
        });
        assert_eq!(touches_source, !changed.is_empty(), "{m:?}: {changed:?}");
        made.push(m);
    }
    assert_eq!(made[0], made[1]);
}

/// A plain recursive copy (names and contents only) to mutate.
fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let (s, d) = (e.path(), dst.join(e.file_name()));
        let m = fs::symlink_metadata(&s).unwrap();
        if m.is_dir() {
            copy_tree(&s, &d);
        } else if m.is_file() {
            fs::copy(&s, &d).unwrap();
        }
    }
}
