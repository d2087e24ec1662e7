//! Full reports: `worker --report FILE.jsonl.gz` (what the cluster's pods run) writes every failure,
//! compressed and atomically, and `vfxt-ingest report` reads and merges such files.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vfxt-ingest"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const FILES: usize = 30;

/// A flat tree of `FILES` small files, its one-shard plan, and an empty destination.
fn setup(t: &Path) {
    let src = t.join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::create_dir_all(t.join("dst")).unwrap();
    for i in 0..FILES {
        fs::write(src.join("d").join(format!("f{i:02}")), format!("data {i}")).unwrap();
    }
    let o = bin()
        .arg("scan")
        .arg(&src)
        .args(["--shards", "1", "--workers", "1", "--out"])
        .arg(t.join("plan.json"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

fn worker(t: &Path, phase: &str, report: &Path, faults: Option<&str>) -> Output {
    let mut c = bin();
    c.args(["worker", "--plan"])
        .arg(t.join("plan.json"))
        .arg("--source")
        .arg(t.join("src"))
        .arg("--dest")
        .arg(t.join("dst"))
        .args([
            "--shards",
            "0",
            "--phase",
            phase,
            "--threads",
            "1",
            "--no-owner",
        ])
        .arg("--report")
        .arg(report);
    match faults {
        Some(f) => c.env("VFXT_INGEST_FAULTS", f),
        None => c.env_remove("VFXT_INGEST_FAULTS"),
    };
    c.output().unwrap()
}

fn report(args: &[&Path], flags: &[&str]) -> Output {
    bin().arg("report").args(flags).args(args).output().unwrap()
}

#[test]
fn worker_report_is_gzip_whole_and_read_back_with_every_failure() {
    let t = tempfile::tempdir().unwrap();
    let t = t.path();
    setup(t);
    // The layout the operator gives pods: <location>/<ij>/run-<n>/<role>-<server>-<index>.jsonl.gz;
    // the worker creates the directories.
    let run_dir = t.join("reports").join("ij").join("run-0");
    let copy_report = run_dir.join("copy-0-0.jsonl.gz");
    // The destination probe is create #1, the first file #2: every later file fails with EACCES.
    let o = worker(t, "copy", &copy_report, Some("create@3..=eacces"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let failed = FILES - 1;
    let last = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let r: serde_json::Value = serde_json::from_str(&last).unwrap();
    // The result (the pod's termination message) lists 20 and counts the rest; the report has all.
    assert_eq!(
        r["result"]["failed"].as_u64(),
        Some(failed as u64),
        "{last}"
    );
    assert_eq!(r["result"]["failures"].as_array().unwrap().len(), 20);
    assert_eq!(
        r["result"]["failuresOmitted"].as_u64(),
        Some(failed as u64 - 20),
        "{last}"
    );

    let raw = fs::read(&copy_report).unwrap();
    assert_eq!(&raw[..2], &[0x1f, 0x8b], "a gzip stream");
    let names: Vec<String> = fs::read_dir(&run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["copy-0-0.jsonl.gz"], "no temporary file left");

    let o = report(&[&copy_report], &["--jsonl"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), failed);
    for l in &lines {
        assert_eq!(l["outcome"], "failed", "{l}");
        assert_eq!(l["op"], "open-dest", "{l}");
        assert_eq!(l["errno"].as_i64(), Some(13), "{l}");
        assert!(l["path"].as_str().unwrap().starts_with("d/f"), "{l}");
        assert!(l["file"].as_str().unwrap().ends_with("copy-0-0.jsonl.gz"));
    }

    // The verify pass repairs them; its report goes beside the copy's. A local run's plain
    // JSON Lines and a killed pod's temporary file lie there too.
    let o = worker(t, "verify", &run_dir.join("verify-0-0.jsonl.gz"), None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    fs::write(
        run_dir.join("report-0-copy.jsonl"),
        "{\"path\":\"local/x\",\"outcome\":\"failed\",\"op\":\"open-source\",\"error\":\"Permission denied (os error 13)\",\"errno\":13}\n",
    )
    .unwrap();
    fs::write(run_dir.join(".copy-0-1.jsonl.gz.tmp-77"), b"\x1f\x8b torn").unwrap();

    // The verify pass's audit trail: a `matched` line for every entry it found equal.
    let o = report(&[&t.join("reports")], &["--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let matched = doc["byOutcome"]["matched"].as_u64().unwrap() as usize;
    assert!(matched > 0, "{doc}");
    let o = report(&[&t.join("reports")], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let listed = failed * 2 + 1;
    let total = listed + matched;
    assert!(
        out.contains(&format!("{total} entries from 3 report file(s) (2 gzip)")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "by outcome: failed {}, matched {matched}, repaired {failed}",
            failed + 1
        )),
        "{out}"
    );
    assert!(out.contains(&format!("first 20 of {listed}:")), "{out}");
    assert!(
        out.contains("failed open-dest d/f") && out.contains("[copy-0-0.jsonl.gz]"),
        "{out}"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(".copy-0-1.jsonl.gz.tmp-77") && err.contains("unfinished"),
        "{err}"
    );

    let o = report(&[&t.join("reports")], &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["entries"].as_u64(), Some(total as u64));
    assert_eq!(doc["list"].as_array().unwrap().len(), total);
    assert_eq!(doc["byOp"]["open-dest"].as_u64(), Some(failed as u64));
    assert_eq!(doc["files"].as_array().unwrap().len(), 3);
}

#[test]
fn unreadable_report_input_exits_2_naming_the_path() {
    let t = tempfile::tempdir().unwrap();
    let t = t.path();
    let good = t.join("a.jsonl");
    fs::write(
        &good,
        "{\"path\":\"x\",\"outcome\":\"vanished\",\"op\":\"stat-source\"}\n",
    )
    .unwrap();
    let bad = t.join("b.jsonl.gz");
    fs::write(&bad, b"\x1f\x8b\x08 not really gzip").unwrap();
    let missing = t.join("nope");

    let o = report(&[&good, &bad, &missing], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&bad.display().to_string()), "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");
    // What could be read is still summed up.
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("1 entries from 1 report file(s)"),
        "{}",
        text(&o)
    );

    let garbage = t.join("c.jsonl");
    fs::write(&garbage, "{\"path\":\"x\"}\nnot json\n").unwrap();
    let o = report(&[&garbage], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("c.jsonl: line 1: not a report entry"),
        "{}",
        text(&o)
    );
}

#[test]
fn local_run_points_at_its_full_report_and_report_reads_the_state_dir() {
    let t = tempfile::tempdir().unwrap();
    let t = t.path();
    setup(t);
    let job = t.join("job.yaml");
    fs::write(
        &job,
        format!(
            "apiVersion: ingest.vfxt.dev/v1alpha1\nkind: IngestJob\nmetadata: {{name: t}}\nspec:\n  source: {{local: \"{}\"}}\n  destination: {{local: [\"{}\"]}}\n  workers: 1\n  threadsPerWorker: 1\n  shards: {{target: 1}}\n  preserve: {{owner: false}}\n",
            t.join("src").display(),
            t.join("dst").display()
        ),
    )
    .unwrap();
    let state = t.join("state");
    // Every worker process counts its own creates (one shard: one destination probe): all files but
    // one fail in the copy, and all but two again in the verify pass's repairs, more than the 20 the
    // status lists.
    let o = bin()
        .args(["run", "-q", "-f"])
        .arg(&job)
        .arg("--state")
        .arg(&state)
        .env("VFXT_INGEST_FAULTS", "create@3..=eacces")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let status: serde_yaml::Value =
        serde_yaml::from_str(&fs::read_to_string(state.join("status.yaml")).unwrap()).unwrap();
    let failed = status["failedFiles"].as_u64().unwrap();
    assert!(failed > 20, "{status:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!(
            "… {} more; every entry: vfxt-ingest report {}",
            failed - 20,
            state.join("logs/run-0").display()
        )),
        "{out}"
    );

    let o = report(&[&state], &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let files: Vec<&str> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        !files.is_empty() && files.iter().all(|f| f.ends_with(".jsonl.gz")),
        "{files:?}"
    );
    // The verify pass's failures are the final ones: each is in its report.
    let verify_failed = doc["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["file"].as_str().unwrap().ends_with("-verify.jsonl.gz")
                && e["outcome"] != "repaired"
                && e["outcome"] != "matched"
        })
        .count() as u64;
    assert_eq!(verify_failed, failed, "{doc}");
}

#[test]
fn local_run_checks_spec_report_and_says_where_its_reports_go() {
    let t = tempfile::tempdir().unwrap();
    let t = t.path();
    setup(t);
    let job = |dest: &str, report: &str| {
        let p = t.join("job.yaml");
        fs::write(
            &p,
            format!(
                "apiVersion: ingest.vfxt.dev/v1alpha1\nkind: IngestJob\nmetadata: {{name: t}}\nspec:\n  source: {{local: \"{}\"}}\n  destination: {{local: [\"{}\"]{dest}}}\n  preserve: {{owner: false}}\n  report: {report}\n",
                t.join("src").display(),
                t.join("dst").display()
            ),
        )
        .unwrap();
        p
    };
    let run = |f: &Path| {
        bin()
            .args(["run", "-q", "-f"])
            .arg(f)
            .arg("--state")
            .arg(t.join("state"))
            .env_remove("VFXT_INGEST_FAULTS")
            .output()
            .unwrap()
    };
    // In the copied tree (no destination.subPath: the whole export is copied): refused, naming the field.
    let o = run(&job("", "{destinationPath: reports}"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("spec.report.destinationPath")
            && text(&o).contains("spec.destination.subPath is not set"),
        "{}",
        text(&o)
    );
    assert!(!t.join("state").exists(), "a refused run creates nothing");

    let o = run(&job(", subPath: copied", "{destinationPath: reports}"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!(
            "this local run writes them to {}",
            t.join("state").join("logs/run-0").display()
        )),
        "{}",
        text(&o)
    );
}
