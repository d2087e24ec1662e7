//! The copy's outcomes are true under faults and source changes (issue 11): every entry ends in
//! exactly one outcome and the counts add up; a file that changed while read, vanished, or
//! could not be written back is reported and never left looking finished; a destination that
//! stops taking writes stops the run with one message. Faults come from the engine's hook
//! (`VFXT_INGEST_FAULTS`), at an exact operation, never after a delay.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

use ingest_testkit::{CompareOptions, Dataset, GenOptions, compare, generate};

fn copy(
    src: &Path,
    dst: &Path,
    faults: Option<&str>,
    extra: &[&str],
) -> (Output, serde_json::Value, Vec<serde_json::Value>) {
    let report = dst.with_extension("report.jsonl");
    let mut c = Command::new(env!("CARGO_BIN_EXE_vfxt-ingest"));
    c.arg("copy")
        .arg(src)
        .arg(dst)
        .args(["--quiet", "--json", "--report"])
        .arg(&report)
        .args(extra);
    match faults {
        Some(f) => c.env("VFXT_INGEST_FAULTS", f),
        None => c.env_remove("VFXT_INGEST_FAULTS"),
    };
    let out = c.output().unwrap();
    let summary = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    let lines = fs::read_to_string(&report)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out, summary, lines)
}

fn counts_add_up(summary: &serde_json::Value) {
    let c = &summary["copy"];
    let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{k} in {c}"));
    let outcomes = [
        "filesCopied",
        "filesSkipped",
        "symlinks",
        "hardlinks",
        "specials",
        "directories",
        "dirsUpToDate",
        "failed",
        "unsupported",
        "vanished",
        "changed",
        "notAttempted",
    ]
    .iter()
    .map(|k| n(k))
    .sum::<u64>();
    assert_eq!(
        outcomes,
        n("entries"),
        "every entry has exactly one outcome: {c}"
    );
}

fn identical(src: &Path, dst: &Path) {
    let opts = CompareOptions {
        owner: rustix::process::geteuid().is_root(),
        ..CompareOptions::all()
    };
    let diffs = compare(src, dst, &opts);
    assert!(diffs.is_empty(), "differences: {diffs:#?}");
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or_else(|| panic!("killed: {o:?}"))
}

fn tree(root: &Path) -> u64 {
    // Every kind of entry (fifos, devices, hard links, sparse and split-size files), twice.
    let mut n = 0;
    for (i, d) in [Dataset::Kinds, Dataset::Small].into_iter().enumerate() {
        let s = generate(
            d,
            &root.join(format!("d{i}")),
            &GenOptions {
                seed: 11,
                scale: 0.05,
            },
        )
        .unwrap();
        // The generator does not count the directory it fills.
        n += s.non_dirs() + s.dirs + 1;
    }
    n
}

#[test]
fn every_entry_in_scope_has_one_outcome_and_the_counts_add_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let entries = tree(&src);
    let (out, s, _) = copy(&src, &dst, None, &[]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    counts_add_up(&s);
    // The root directory counts too.
    assert_eq!(s["copy"]["entries"].as_u64(), Some(entries + 1));
    // A second run: every entry up to date.
    let (out, s, _) = copy(&src, &dst, None, &[]);
    assert_eq!(code(&out), 0);
    counts_add_up(&s);
    assert_eq!(s["copy"]["filesCopied"].as_u64(), Some(0));
}

#[test]
fn a_file_changing_while_read_is_reported_and_never_left_looking_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::write(src.join("busy.log"), vec![7u8; 100_000]).unwrap();
    // The source changes at the first and the second read: the retry sees it change again.
    let (out, s, report) = copy(
        &src,
        &dst,
        Some("read@1..=change-source"),
        &["--threads", "1", "--verify", "none"],
    );
    assert_eq!(code(&out), 1, "{}", String::from_utf8_lossy(&out.stderr));
    counts_add_up(&s);
    assert_eq!(s["copy"]["changed"].as_u64(), Some(1), "{s}");
    assert!(
        report
            .iter()
            .any(|e| e["path"] == "busy.log" && e["outcome"] == "changed"),
        "{report:?}"
    );
    let (sm, dm) = (
        fs::metadata(src.join("busy.log")).unwrap(),
        fs::metadata(dst.join("busy.log")).unwrap(),
    );
    assert_ne!(
        (sm.mtime(), sm.mtime_nsec()),
        (dm.mtime(), dm.mtime_nsec()),
        "an unfinished file must not carry the source's mtime"
    );
    // Quiet now: the next pass copies it and ends identical.
    let (out, s, _) = copy(&src, &dst, None, &[]);
    assert_eq!(code(&out), 0);
    assert_eq!(s["copy"]["filesCopied"].as_u64(), Some(1));
    identical(&src, &dst);
}

#[test]
fn a_file_changing_once_is_copied_again_from_its_new_version() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), vec![1u8; 50_000]).unwrap();
    let (out, s, _) = copy(
        &src,
        &dst,
        Some("read@1=change-source"),
        &["--threads", "1"],
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    counts_add_up(&s);
    assert_eq!(s["copy"]["filesCopied"].as_u64(), Some(1));
    assert_eq!(fs::metadata(dst.join("f")).unwrap().len(), 50_001);
    identical(&src, &dst);
}

#[test]
fn an_entry_vanishing_before_its_turn_is_reported_as_vanished() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    for i in 0..5 {
        fs::write(src.join(format!("f{i}")), b"data").unwrap();
    }
    let (out, s, report) = copy(
        &src,
        &dst,
        Some("open-source@2=vanish-source"),
        &["--threads", "1"],
    );
    counts_add_up(&s);
    assert_eq!(s["copy"]["vanished"].as_u64(), Some(1), "{s}");
    assert_eq!(
        report.iter().filter(|e| e["outcome"] == "vanished").count(),
        1
    );
    // Gone from the source is not a failure: the rest is copied and verified identical.
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
    identical(&src, &dst);
}

#[test]
fn a_failed_close_leaves_the_file_unfinished_and_a_rerun_repairs_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), vec![3u8; 10_000]).unwrap();
    // The first close is the destination probe's (see `setup::probe`), the second the file's.
    let (out, s, report) = copy(
        &src,
        &dst,
        Some("close@2=eio"),
        &["--threads", "1", "--verify", "none"],
    );
    assert_eq!(code(&out), 1);
    counts_add_up(&s);
    assert!(
        report.iter().any(|e| e["path"] == "a"
            && e["op"] == "close"
            && e["errno"] == rustix::io::Errno::IO.raw_os_error()),
        "{report:?}"
    );
    let (sm, dm) = (
        fs::metadata(src.join("a")).unwrap(),
        fs::metadata(dst.join("a")).unwrap(),
    );
    assert_ne!((sm.mtime(), sm.mtime_nsec()), (dm.mtime(), dm.mtime_nsec()));
    let (out, s, _) = copy(&src, &dst, None, &[]);
    assert_eq!(code(&out), 0);
    assert_eq!(
        s["copy"]["filesCopied"].as_u64(),
        Some(1),
        "re-copied, not skipped"
    );
    identical(&src, &dst);
}

#[test]
fn a_full_destination_stops_the_run_with_one_message_and_a_rerun_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let entries = tree(&src);
    // Full from the 20th data write on.
    let (out, s, report) = copy(&src, &dst, Some("write@20..=enospc"), &["--threads", "4"]);
    assert_eq!(code(&out), 1, "{}", String::from_utf8_lossy(&out.stderr));
    counts_add_up(&s);
    assert!(
        s["stopped"].as_str().unwrap().contains("No space left"),
        "{s}"
    );
    assert!(s["verify"].is_null(), "no verify after a stop: {s}");
    // Only the files in progress are listed (at most one per thread), not every remaining one.
    let failed = report
        .iter()
        .filter(|e| e["outcome"] == "failed" && e["op"] != "stop")
        .count();
    let stops: Vec<_> = report.iter().filter(|e| e["op"] == "stop").collect();
    assert_eq!(stops.len(), 1, "one line for the stop: {report:?}");
    assert_eq!(stops[0]["path"], "", "{stops:?}");
    assert!((1..=4).contains(&failed), "{failed} failures: {report:?}");
    assert!(s["copy"]["notAttempted"].as_u64().unwrap() > 0, "{s}");
    assert!(s["copy"]["entries"].as_u64().unwrap() <= entries + 1);
    let (out, _, _) = copy(&src, &dst, None, &[]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
    identical(&src, &dst);
}

#[test]
fn sockets_are_recreated() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    drop(std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap());
    let (out, s, _) = copy(&src, &dst, None, &[]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(s["copy"]["specials"].as_u64(), Some(1));
    use std::os::unix::fs::FileTypeExt;
    assert!(
        fs::symlink_metadata(dst.join("sock"))
            .unwrap()
            .file_type()
            .is_socket()
    );
    identical(&src, &dst);
}

#[test]
fn refused_fault_spec_is_unusable_input_naming_the_variable() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    let (out, _, _) = copy(&src, &dst, Some("wrte@1=eio"), &[]);
    assert_eq!(code(&out), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("VFXT_INGEST_FAULTS"));
}
