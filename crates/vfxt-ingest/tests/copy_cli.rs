//! `vfxt-ingest copy` as a user runs it: exit codes, messages that name the argument, the
//! report file, and a copy killed with SIGKILL then run again.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use ingest_testkit::{CompareOptions, Dataset, GenOptions, compare, generate};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vfxt-ingest"))
}

fn copy(args: &[&Path], extra: &[&str]) -> Output {
    let mut c = bin();
    c.arg("copy").args(args).args(extra).arg("--quiet");
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn compare_opts() -> CompareOptions {
    CompareOptions {
        owner: rustix::process::geteuid().is_root(),
        ..CompareOptions::all()
    }
}

#[test]
fn unusable_input_exits_2_naming_the_argument() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = t.join("src");
    fs::create_dir_all(src.join("inner")).unwrap();
    fs::write(t.join("file"), b"x").unwrap();
    fs::create_dir_all(t.join("other")).unwrap();
    fs::create_dir_all(t.join("a")).unwrap();
    fs::create_dir_all(t.join("b")).unwrap();
    let cases: Vec<(Vec<std::path::PathBuf>, Vec<&str>, &str)> = vec![
        (vec![t.join("missing"), t.join("d")], vec![], "SRC"),
        (
            vec![t.join("file"), t.join("d")],
            vec![],
            "is not a directory",
        ),
        (
            vec![src.clone(), src.clone()],
            vec![],
            "is the source directory itself",
        ),
        (
            vec![src.clone(), src.join("inner")],
            vec![],
            "is inside SRC",
        ),
        (
            vec![src.join("inner"), src.clone()],
            vec![],
            "is inside DEST",
        ),
        (
            vec![src.clone(), t.join("file").join("sub")],
            vec![],
            "DEST",
        ),
        (
            vec![src.clone(), t.join("a"), t.join("b")],
            vec![],
            "does not show the same tree",
        ),
        (
            vec![src.clone(), t.join("other")],
            vec!["--threads", "0"],
            "--threads",
        ),
    ];
    for (paths, extra, needle) in cases {
        let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
        let out = copy(&refs, &extra);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{paths:?} {extra:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(needle),
            "{paths:?}: expected {needle:?} in {}",
            stderr(&out)
        );
    }
    assert_eq!(
        fs::read_dir(&src).unwrap().count(),
        1,
        "the source is never modified"
    );
}

#[test]
fn per_file_failure_exits_1_and_is_in_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("ok"), b"fine").unwrap();
    fs::write(src.join("blocked"), b"cannot land").unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir_all(dest.join("blocked/precious")).unwrap();
    let report = tmp.path().join("report.jsonl");
    let out = copy(&[&src, &dest], &["--report", report.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let lines = problems(&report);
    // One line from the copy pass, one from the verify pass's attempt to repair it: the same
    // operation fails the same way.
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1]["mismatches"], serde_json::json!(["type"]));
    for (line, op) in lines.iter().zip(["replace-dest", "replace-dest"]) {
        assert_eq!(
            (
                line["path"].as_str(),
                line["outcome"].as_str(),
                line["op"].as_str()
            ),
            (Some("blocked"), Some("failed"), Some(op))
        );
        assert_eq!(line["errno"], 39, "ENOTEMPTY: {line}");
    }
    assert_eq!(fs::read(dest.join("ok")).unwrap(), b"fine");
}

#[test]
fn json_summary_and_names_shown_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let odd = std::ffi::OsStr::from_bytes_compat(b"new\nline\xff");
    fs::write(src.join(odd), b"x").unwrap();
    let dests = [tmp.path().join("d"), tmp.path().join("m2")];
    fs::create_dir_all(&dests[0]).unwrap();
    symlink(&dests[0], &dests[1]).unwrap();
    let out = copy(
        &[&src, &dests[0], &dests[1]],
        &["--json", "--verify", "checksum"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["copy"]["filesCopied"], 1);
    assert_eq!(v["verify"]["matched"], v["verify"]["checked"]);
    assert_eq!(fs::read(dests[0].join(odd)).unwrap(), b"x");
}

#[test]
fn verify_only_reports_every_difference_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/kept"), b"kept").unwrap();
    fs::write(src.join("d/lost"), b"lost").unwrap();
    let dest = tmp.path().join("dest");
    let out = copy(&[&src, &dest], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    fs::remove_file(dest.join("d/lost")).unwrap();
    fs::write(dest.join("d/stray"), b"only here").unwrap();

    let report = tmp.path().join("report.jsonl");
    let out = copy(
        &[&src, &dest],
        &["--verify-only", "--report", report.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("DESTINATION DIFFERS"), "{stdout}");
    assert!(
        stdout.contains("0 entries in scope"),
        "no copy pass: {stdout}"
    );
    let mut lines: Vec<(String, String, serde_json::Value)> = problems(&report)
        .into_iter()
        .map(|v| {
            (
                v["path"].as_str().unwrap().to_string(),
                v["outcome"].as_str().unwrap().to_string(),
                v["mismatches"].clone(),
            )
        })
        .collect();
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    let m = |p: &str, k: &str| {
        (
            p.to_string(),
            "mismatched".to_string(),
            serde_json::json!([k]),
        )
    };
    // `d`'s mtime moved with the test's own changes; the verifier says so and leaves it.
    assert_eq!(
        lines,
        [
            m("d", "mtime"),
            m("d/lost", "missing"),
            m("d/stray", "extraneous")
        ]
    );
    assert!(!dest.join("d/lost").exists(), "nothing repaired");
    assert!(dest.join("d/stray").exists(), "nothing deleted");

    let out = copy(&[&src, &dest], &["--verify-only", "--verify", "none"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--verify-only"), "{}", stderr(&out));
    let help = bin().args(["copy", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--verify-only"));
}

/// Every entry under `root` with its ctime and mtime: a write of any kind (data, metadata, a
/// create or remove in a directory) moves at least one of them.
fn stamps(root: &Path) -> Vec<(String, i64, i64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        out.push((
            p.display().to_string(),
            m.ctime(),
            m.ctime_nsec(),
            m.mtime(),
            m.mtime_nsec(),
        ));
        if m.is_dir() {
            stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out.sort();
    out
}

/// Fails naming the entries whose stamps differ (not the whole tree).
fn assert_same_stamps(
    now: &[(String, i64, i64, i64, i64)],
    before: &[(String, i64, i64, i64, i64)],
    why: &str,
) {
    let changed: Vec<_> = now.iter().filter(|s| !before.contains(s)).collect();
    let gone: Vec<_> = before.iter().filter(|s| !now.contains(s)).collect();
    assert!(
        changed.is_empty() && gone.is_empty(),
        "{why}: now {changed:?}, before {gone:?}"
    );
}

/// A dry run compares and says what a copy would do, and writes nothing at all: every ctime
/// in the destination stays. After the copy it finds nothing to do.
#[test]
fn a_dry_run_says_what_a_copy_would_do_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("d/sub")).unwrap();
    fs::write(src.join("d/kept"), b"kept").unwrap();
    fs::write(src.join("d/lost"), b"lost!").unwrap();
    fs::write(src.join("d/sub/new"), b"0123456789").unwrap();
    fs::write(src.join("d/x.tmp"), b"scratch").unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir_all(dest.join("d")).unwrap();
    fs::write(dest.join("d/kept"), b"kept").unwrap();
    fs::write(dest.join("d/lost"), b"old").unwrap();
    fs::write(dest.join("d/stray"), b"only here").unwrap();
    // Every time the same on both sides, so what differs is only what the test made differ.
    let at = |p: &Path| {
        fs::File::open(p)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000))
            .unwrap()
    };
    for p in ["d/kept", "d/lost", "d/sub/new", "d/x.tmp", "d/sub", "d", ""] {
        at(&src.join(p));
    }
    for p in ["d/kept", "d/lost", "d/stray", "d", ""] {
        at(&dest.join(p));
    }
    let before = stamps(&dest);

    let report = tmp.path().join("report.jsonl");
    let out = copy(
        &[&src, &dest],
        &[
            "--dry-run",
            "--exclude",
            "*.tmp",
            "--report",
            report.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_same_stamps(
        &stamps(&dest),
        &before,
        "a dry run wrote to the destination",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Create d/sub and d/sub/new, update d/lost (its size): write 5 + 10 bytes.
    assert!(
        stdout.contains("a copy would create 2, update 1 and write 15 B"),
        "{stdout}"
    );
    assert!(stdout.contains("1 only in the destination"), "{stdout}");
    let err = stderr(&out);
    for line in [
        "would create: d/sub/new",
        "would update ([Size]): d/lost",
        "only in the destination: d/stray",
    ] {
        assert!(err.contains(line), "{line}: {err}");
    }
    assert!(!err.contains("x.tmp"), "excluded: {err}");
    assert_eq!(problems(&report).len(), 4);

    // (A copy never deletes, and its verify counts an entry only in the destination as a
    // difference: the user removes it.)
    fs::remove_file(dest.join("d/stray")).unwrap();
    let out = copy(&[&src, &dest], &["--exclude", "*.tmp"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before = stamps(&dest);
    let out = copy(
        &[&src, &dest],
        &["--dry-run", "--verify", "checksum", "--exclude", "*.tmp"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("a copy would create 0, update 0 and write 0 B"),
        "{stdout}"
    );
    assert_same_stamps(
        &stamps(&dest),
        &before,
        "a dry run wrote to the destination",
    );

    let out = copy(&[&src, &dest], &["--dry-run", "--verify", "none"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--dry-run"), "{}", stderr(&out));
}

trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr;
}

impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}

/// A generated tree with a few hundred files (some split into ranges), under `tmp/src`.
fn mixed_source(tmp: &Path) -> std::path::PathBuf {
    let src = tmp.join("src");
    generate(
        Dataset::Mixed,
        &src,
        &GenOptions {
            scale: 0.05,
            ..GenOptions::default()
        },
    )
    .unwrap();
    src
}

/// `copy SRC DEST` with `VFXT_INGEST_FAULTS=faults`, 4 threads, files over 1 MiB split in ranges.
fn copy_with_faults(src: &Path, dest: &Path, faults: &str) -> Output {
    bin()
        .args([
            "copy",
            "--quiet",
            "--threads",
            "4",
            "--split-threshold",
            "1048576",
        ])
        .arg(src)
        .arg(dest)
        .env("VFXT_INGEST_FAULTS", faults)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The copy is killed with SIGKILL at an exact operation (the fault hook, no timing), is found
/// part-way, and a run without faults makes the destination identical: a file cut off mid-write
/// has the wrong mtime, so it cannot be taken for finished.
#[test]
fn killed_copy_rerun_ends_identical() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let src = mixed_source(tmp.path());
    for faults in ["write@40=kill", "create@30=kill"] {
        let dest = tmp
            .path()
            .join(format!("dest-{}", faults.replace(['@', '='], "-")));
        let out = copy_with_faults(&src, &dest, faults);
        assert_eq!(
            out.status.signal(),
            Some(libc_sigkill()),
            "{faults}: the copy was not killed by the fault: {:?} {}",
            out.status,
            stderr(&out)
        );
        assert!(
            !compare(&src, &dest, &compare_opts()).is_empty(),
            "{faults}: the kill left a complete copy; nothing to resume"
        );
        let out = copy(&[&src, &dest], &["--json"]);
        assert_eq!(out.status.code(), Some(0), "{faults}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            v["copy"]["filesSkipped"].as_u64().unwrap() > 0,
            "{faults}: the re-run reused finished files: {v}"
        );
        let diffs = compare(&src, &dest, &compare_opts());
        assert!(diffs.is_empty(), "{faults}: {diffs:#?}");
    }
}

fn libc_sigkill() -> i32 {
    rustix::process::Signal::KILL.as_raw()
}

/// A disk that stays full from the 40th data write: the run finishes (no panic), exits 1 with
/// the failures counted, and a run once there is room again makes the destination identical.
#[test]
fn disk_full_exits_1_and_a_rerun_ends_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let src = mixed_source(tmp.path());
    let dest = tmp.path().join("dest");
    let out = copy_with_faults(&src, &dest, "write@40..=enospc");
    assert_eq!(
        out.status.code(),
        Some(1),
        "a full disk is a partial failure (exit 1): {:?} {}",
        out.status,
        stderr(&out)
    );
    // One message for the whole destination, not one failure per remaining file.
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("STOPPED: the destination stopped taking writes"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = copy(&[&src, &dest], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let diffs = compare(&src, &dest, &compare_opts());
    assert!(diffs.is_empty(), "{diffs:#?}");
}

/// Every entry under `root` (the root too), with everything a change to it would move (the
/// test kit's snapshot: type, inode, mode, size, links, times to the nanosecond, contents).
/// Equal snapshots: the tree was not touched.
fn tree_snapshot(
    root: &Path,
) -> std::collections::BTreeMap<Vec<u8>, ingest_testkit::torture::EntrySnap> {
    ingest_testkit::torture::snapshot(root).unwrap()
}

/// A refused copy changes nothing: the source (every entry's mtime and ctime, the listing) is as
/// before, and no destination directory is left where none was.
#[test]
fn refused_copy_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = t.join("src");
    fs::create_dir_all(src.join("sub/deeper")).unwrap();
    fs::write(src.join("sub/f"), b"data").unwrap();
    fs::write(src.join("top"), b"top").unwrap();
    symlink(src.join("sub"), t.join("into-src")).unwrap();
    let before = tree_snapshot(&src);
    let p = |p: &Path| p.to_str().unwrap().to_string();
    // (arguments, environment, what the message says)
    type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        // A destination that does not exist yet is judged by where it would be.
        (
            vec![p(&src), p(&src.join("sub/dst"))],
            vec![],
            "is inside SRC",
        ),
        (
            vec![p(&src), p(&src.join("new/deeper/dst"))],
            vec![],
            "is inside SRC",
        ),
        (
            vec![p(&src), p(&t.join("into-src/dst"))],
            vec![],
            "is inside SRC",
        ),
        (vec![p(&src.join("sub")), p(&src)], vec![], "is inside DEST"),
        (
            vec![p(&src), p(&src)],
            vec![],
            "is the source directory itself",
        ),
        (
            vec![p(&src), format!("{}/missing/..", p(&src))],
            vec![],
            "is the source directory itself",
        ),
        (
            vec![
                p(&src),
                p(&src.join("sub/dst")),
                "--threads".into(),
                "0".into(),
            ],
            vec![],
            "--threads",
        ),
        (
            vec![
                p(&src),
                p(&src.join("sub/dst")),
                "--threads".into(),
                "fast".into(),
            ],
            vec![],
            "--threads",
        ),
        (
            vec![
                p(&src),
                p(&src.join("sub/dst")),
                "--verify".into(),
                "sometimes".into(),
            ],
            vec![],
            "--verify",
        ),
        (
            vec![
                p(&src),
                p(&t.join("out/dst")),
                "--report".into(),
                p(&src.join("report.jsonl")),
            ],
            vec![],
            "--report",
        ),
        // The probe's create fails: the destination cannot be written. What was created for
        // it (out/dst) is removed again.
        (
            vec![p(&src), p(&t.join("out/dst"))],
            vec![("VFXT_INGEST_FAULTS", "create@1=eacces")],
            "is not writable",
        ),
    ];
    for (args, env, needle) in cases {
        let out = bin()
            .arg("copy")
            .args(&args)
            .arg("--quiet")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} {env:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(needle),
            "{args:?}: expected {needle:?} in {}",
            stderr(&out)
        );
        assert_eq!(
            tree_snapshot(&src),
            before,
            "{args:?} {env:?} changed the source"
        );
        assert!(
            !t.join("out").exists(),
            "{args:?} {env:?} left a destination behind"
        );
    }
}

/// The probe files (`.vfxt-ingest-probe.*`) in `dir`.
fn probe_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".vfxt-ingest-probe."))
        .collect()
}

/// The probe's create or close fails (a full or read-only destination): the copy is refused
/// naming DEST, and the probe file is not left behind.
#[test]
fn failed_probe_leaves_no_probe_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    for faults in ["create@1=enospc", "close@1=enospc", "close@1=eio"] {
        let dest = tmp.path().join(faults.replace(['@', '='], "-"));
        fs::create_dir(&dest).unwrap();
        let out = bin()
            .arg("copy")
            .arg(&src)
            .arg(&dest)
            .arg("--quiet")
            .env("VFXT_INGEST_FAULTS", faults)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{faults}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("DEST {}: is not writable", dest.display())),
            "{faults}: {}",
            stderr(&out)
        );
        assert_eq!(probe_files(&dest), Vec::<String>::new(), "{faults}");
        assert_eq!(
            fs::read_dir(&dest).unwrap().count(),
            0,
            "{faults}: nothing copied"
        );
    }
}

/// Killed in the middle of the probe (after its file was written), then run again: the re-run
/// removes the dead run's probe file, and the destination ends identical.
#[test]
fn killed_probe_then_rerun_leaves_no_probe_file() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/f"), b"x").unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let out = bin()
        .arg("copy")
        .arg(&src)
        .arg(&dest)
        .arg("--quiet")
        .env("VFXT_INGEST_FAULTS", "close@1=kill")
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(libc_sigkill()),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        probe_files(&dest).len(),
        1,
        "the kill landed in the probe, after its file was written"
    );
    let out = copy(&[&src, &dest], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(probe_files(&dest), Vec::<String>::new());
    let diffs = compare(&src, &dest, &compare_opts());
    assert!(diffs.is_empty(), "{diffs:#?}");
}

/// Stale probe files are removed by exact name: this machine's whose process is gone, and
/// anyone's (also the older `PID.NANOS` form) older than ten minutes. A probe in flight (a live
/// process of this machine, or a recent one of another machine) and look-alike names are kept.
#[test]
fn stale_probe_files_are_removed_live_ones_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let host: String = fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let me = std::process::id();
    let stale = [
        format!(".vfxt-ingest-probe.{host}.{dead_pid}.1700000000000000000"),
        format!(".vfxt-ingest-probe.another-host.{me}.1700000000000000000"),
        ".vfxt-ingest-probe.4242.1700000000000000000".to_string(),
    ];
    let kept = [
        format!(".vfxt-ingest-probe.{host}.{me}.1700000000000000000"),
        format!(".vfxt-ingest-probe.another-host.{dead_pid}.1700000000000000001"),
        ".vfxt-ingest-probe.notes.txt".to_string(),
    ];
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for n in &stale {
        let f = fs::File::create(dest.join(n)).unwrap();
        if !n.contains(&host) {
            f.set_modified(hour_ago).unwrap();
        }
    }
    for n in &kept {
        fs::write(dest.join(n), b"").unwrap();
    }
    let out = copy(&[&src, &dest], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut left = probe_files(&dest);
    left.sort();
    let mut want = kept.to_vec();
    want.sort();
    assert_eq!(left, want);
}

/// A tree to mirror: the source, a destination copied from it, then changed as users would
/// change the old share after the bulk copy: files and a directory tree only in the destination,
/// and a scratch file the filters leave out.
fn mirror_case(tmp: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let src = tmp.join("src");
    for d in ["a/b", "c"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    for i in 0..200 {
        fs::write(src.join(format!("a/b/f{i}")), format!("{i}")).unwrap();
    }
    fs::write(src.join("c/keep"), b"keep").unwrap();
    let dest = tmp.join("dest");
    let out = copy(&[&src, &dest], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    fs::create_dir_all(dest.join("a/old/deeper")).unwrap();
    fs::write(dest.join("a/old/deeper/x"), b"x").unwrap();
    fs::write(dest.join("a/old/y"), b"y").unwrap();
    fs::write(dest.join("c/removed"), b"r").unwrap();
    fs::write(dest.join("c/scratch.tmp"), b"t").unwrap();
    (src, dest)
}

/// A report's lines but the audit trail's (`matched`: an entry the verify found equal), which
/// every compared entry has; at least one must be there.
fn problems(report: &Path) -> Vec<serde_json::Value> {
    let all: Vec<serde_json::Value> = fs::read_to_string(report)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        all.iter()
            .any(|v| v["outcome"] == "matched" && v["meta"].is_object()),
        "no audit trail in {}",
        report.display()
    );
    all.into_iter()
        .filter(|v| v["outcome"] != "matched")
        .collect()
}

fn report_lines(report: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = problems(report)
        .into_iter()
        .map(|v| {
            (
                v["outcome"].as_str().unwrap().into(),
                v["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    v.sort();
    v
}

/// `--mirror` deletes what is only in the destination (a directory with what is below it) and
/// nothing the filters leave out, puts the directories' times back, and ends identical; the
/// source is never touched. A dry run said the same beforehand and wrote nothing.
#[test]
fn a_mirror_deletes_only_what_is_only_in_the_destination() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dest) = mirror_case(tmp.path());
    let src_before = stamps(&src);
    let dest_before = stamps(&dest);
    let args = ["--mirror", "--max-deletes", "10", "--exclude", "*.tmp"];

    let out = copy(&[&src, &dest], &[&args[..], &["--dry-run"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("2 only in the destination (a mirror would delete them: 5 entries)"),
        "{stdout}"
    );
    assert_same_stamps(&stamps(&dest), &dest_before, "the dry run wrote");

    let report = tmp.path().join("report.jsonl");
    let out = copy(
        &[&src, &dest],
        &[&args[..], &["--report", report.to_str().unwrap()]].concat(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("mirror: 2 names only in the destination (5 entries): 5 entries deleted, 0 kept (in the source again), 0 failed"),
        "{stdout}"
    );
    // Nothing left to repair: the deletions put their directories' times back.
    assert!(
        stdout.contains("0 repaired, 0 errors — destination identical"),
        "{stdout}"
    );
    assert_eq!(
        report_lines(&report),
        [
            ("deleted".into(), "a/old".into()),
            ("deleted".into(), "c/removed".into())
        ]
    );
    assert!(
        dest.join("c/scratch.tmp").exists(),
        "excluded: not the mirror's to delete"
    );
    fs::remove_file(dest.join("c/scratch.tmp")).unwrap();
    let diffs = compare(&src, &dest, &compare_opts());
    assert!(
        diffs
            .iter()
            .all(|d| d.path == "c" && d.aspect.name() == "dir_mtime"),
        "{diffs:?}"
    );
    assert_same_stamps(&stamps(&src), &src_before, "the source was touched");
}

/// The guards: above --max-deletes, or after a copy pass with a failed entry, a mirror deletes
/// nothing at all and says why (exit 1: the destination is not identical).
#[test]
fn a_mirror_over_its_limit_or_after_a_failure_deletes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dest) = mirror_case(tmp.path());
    // 6 entries to delete (the scratch file too: no filter here) of 209 in scope: over 2%.
    let out = copy(&[&src, &dest], &["--mirror", "--max-deletes", "2%"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("MIRROR: 3 names only in the destination; nothing deleted: 6 entries"),
        "{stdout}"
    );
    assert!(
        stdout.contains("limit of 2% of the destination's entries"),
        "{stdout}"
    );
    for p in ["a/old/deeper/x", "a/old/y", "c/removed", "c/scratch.tmp"] {
        assert!(dest.join(p).exists(), "{p} deleted over the limit");
    }

    // A copy pass with a failed entry (its first create is the destination probe): its picture
    // of the source may be incomplete.
    fs::write(src.join("c/new"), b"new").unwrap();
    let out = bin()
        .args(["copy", "--quiet", "--mirror", "--max-deletes", "100%"])
        .arg(&src)
        .arg(&dest)
        .env("VFXT_INGEST_FAULTS", "create@2=eio")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("nothing deleted: the copy pass left 1 entries failed"),
        "{stdout}"
    );
    for p in ["a/old/deeper/x", "a/old/y", "c/removed", "c/scratch.tmp"] {
        assert!(dest.join(p).exists(), "{p} deleted after a failed pass");
    }
}

/// Killed at its second deletion, a mirror leaves the rest in place; run again, it finishes and
/// the destination ends identical.
#[test]
fn a_mirror_killed_mid_deletion_finishes_when_run_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dest) = mirror_case(tmp.path());
    fs::remove_file(dest.join("c/scratch.tmp")).unwrap();
    let out = bin()
        .args(["copy", "--quiet", "--mirror", "--max-deletes", "10"])
        .arg(&src)
        .arg(&dest)
        .env("VFXT_INGEST_FAULTS", "delete@2=kill")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), None, "killed: {}", stderr(&out));
    let left = ["a/old/deeper/x", "a/old/deeper", "a/old/y"]
        .iter()
        .filter(|p| dest.join(p).exists())
        .count();
    assert_eq!(left, 2, "one entry deleted before the kill");
    assert!(dest.join("c/removed").exists(), "not reached");
    let out = copy(&[&src, &dest], &["--mirror", "--max-deletes", "10"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let diffs = compare(&src, &dest, &compare_opts());
    assert!(diffs.is_empty(), "{diffs:?}");
}

/// A deletion that fails below a directory (the second of its entries) counts the entry it
/// deleted before, and its report line says where it stopped; the other candidates are still
/// deleted, and the run is not identical (exit 1).
#[test]
fn a_mirror_deletion_that_fails_part_way_counts_what_it_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dest) = mirror_case(tmp.path());
    let report = tmp.path().join("report.jsonl");
    let out = bin()
        .args([
            "copy",
            "--quiet",
            "--mirror",
            "--max-deletes",
            "10",
            "--report",
        ])
        .arg(&report)
        .arg(&src)
        .arg(&dest)
        .env("VFXT_INGEST_FAULTS", "delete@2=eio")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // a/old: one of its 4 entries deleted, then EIO; c/removed and c/scratch.tmp: 1 each.
    assert!(
        stdout.contains("mirror: 3 names only in the destination (6 entries): 3 entries deleted, 0 kept (in the source again), 1 failed"),
        "{stdout}"
    );
    let failed: Vec<serde_json::Value> = problems(&report)
        .into_iter()
        .filter(|v| v["outcome"] == "failed" && v["op"] == "delete")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["path"], "a/old");
    let error = failed[0]["error"].as_str().unwrap();
    assert!(
        error.contains("at a/old/") && error.contains("after deleting 1 entry below it"),
        "{error}"
    );
    for p in ["c/removed", "c/scratch.tmp"] {
        assert!(!dest.join(p).exists(), "{p} left");
    }
}

/// A rate-limited copy is a copy like any other (the limit's accuracy is `vfxt-bench throttle`'s
/// business, not a timed test's); a limit of 0 is refused naming the flag.
#[test]
fn a_rate_limited_copy_is_identical_and_a_zero_limit_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = mixed_source(tmp.path());
    let dest = tmp.path().join("dest");
    let out = copy(
        &[&src, &dest],
        &[
            "--bytes-per-second",
            "1073741824",
            "--files-per-second",
            "100000",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let diffs = compare(&src, &dest, &compare_opts());
    assert!(diffs.is_empty(), "{diffs:?}");
    for flag in ["--bytes-per-second", "--files-per-second"] {
        let out = copy(&[&src, &tmp.path().join("d2")], &[flag, "0"]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(flag), "{}", stderr(&out));
        assert!(
            !tmp.path().join("d2").exists(),
            "a refused copy creates nothing"
        );
    }
}
