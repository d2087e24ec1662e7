//! `vfxt-ingest copy` as a user runs it: exit codes, messages that name the argument, the
//! report file, and a copy killed with SIGKILL then run again.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

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
    let lines: Vec<serde_json::Value> = fs::read_to_string(&report)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
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
    assert!(stdout.contains("copied 0 files"), "no copy pass: {stdout}");
    let mut lines: Vec<(String, String, serde_json::Value)> = fs::read_to_string(&report)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
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

trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr;
}

impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}

/// Kill the copy part-way with SIGKILL, run it again, and the destination must end identical:
/// a file cut off mid-write has the wrong mtime, so it cannot be taken for finished.
#[test]
fn killed_copy_rerun_ends_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    generate(
        Dataset::Mixed,
        &src,
        &GenOptions {
            scale: 0.05,
            ..GenOptions::default()
        },
    )
    .unwrap();
    let dest = tmp.path().join("dest");
    let mut killed_midway = false;
    for delay_ms in [30u64, 80, 200] {
        let _ = fs::remove_dir_all(&dest);
        let mut child = bin()
            .args([
                "copy",
                "--quiet",
                "--threads",
                "4",
                "--split-threshold",
                "1048576",
            ])
            .arg(&src)
            .arg(&dest)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        let _ = child.wait();
        if !finished && !compare(&src, &dest, &compare_opts()).is_empty() {
            killed_midway = true;
            break;
        }
    }
    assert!(
        killed_midway,
        "the copy was never caught part-way; the dataset is too small for this machine"
    );
    let out = copy(&[&src, &dest], &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["copy"]["filesSkipped"].as_u64().unwrap() > 0,
        "the re-run reused finished files: {v}"
    );
    let diffs = compare(&src, &dest, &compare_opts());
    assert!(diffs.is_empty(), "{diffs:#?}");
}
