//! `scan`, `worker` and `run` as a user runs them: the real binary on temp trees, checked against
//! the test kit's tree comparison, which shares no code with the engine.

use ingest_testkit::assert_identical;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vfxt-ingest"))
}

/// `vfxt-ingest run -q -f JOB --state STATE`.
fn run_cmd(job: &Path, state: &Path) -> Command {
    let mut c = bin();
    c.args(["run", "-q", "-f"])
        .arg(job)
        .arg("--state")
        .arg(state);
    c
}

/// The status document a run left in its state directory.
fn read_status(state: &Path) -> serde_yaml::Value {
    serde_yaml::from_str(&fs::read_to_string(state.join("status.yaml")).unwrap()).unwrap()
}

/// `src` with a generated tree and an empty `dst`, under `t`.
fn src_and_dst(t: &Path, dirs: usize, files_per_dir: usize) -> (PathBuf, PathBuf) {
    let (src, dst) = (t.join("src"), t.join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    make_tree(&src, dirs, files_per_dir);
    (src, dst)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A deterministic tree: nested directories with small files, one flat directory, a big sparse
/// file, a symlink, a hard link, odd modes and a non-UTF-8 name.
fn make_tree(root: &Path, dirs: usize, files_per_dir: usize) {
    let mut x: u64 = 42;
    let mut next = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x >> 33
    };
    for a in 0..dirs {
        let d = root
            .join(format!("proj{a:02}"))
            .join(format!("run{}", a % 3));
        fs::create_dir_all(&d).unwrap();
        for f in 0..files_per_dir {
            let len = (next() % 3000) as usize;
            let data: Vec<u8> = (0..len).map(|i| (i as u64 ^ next()) as u8).collect();
            fs::write(d.join(format!("f{f:03}.dat")), data).unwrap();
        }
    }
    let flat = root.join("flat");
    fs::create_dir(&flat).unwrap();
    for i in 0..400 {
        fs::write(flat.join(format!("img{i:04}")), format!("{i}")).unwrap();
    }
    let big = fs::File::create(root.join("big.bin")).unwrap();
    big.set_len(100 << 20).unwrap();
    fs::write(root.join("exec.sh"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("exec.sh"), fs::Permissions::from_mode(0o751)).unwrap();
    std::os::unix::fs::symlink("proj00", root.join("link")).unwrap();
    fs::hard_link(root.join("flat/img0001"), root.join("proj01/hard")).unwrap();
    use std::os::unix::ffi::OsStrExt;
    fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"bad\xffname")),
        b"bytes",
    )
    .unwrap();
}

fn job_yaml(dir: &Path, src: &Path, dests: &[PathBuf], extra: &str) -> PathBuf {
    let list: Vec<String> = dests
        .iter()
        .map(|d| format!("\"{}\"", d.display()))
        .collect();
    let y = format!(
        "apiVersion: ingest.vfxt.dev/v1alpha1\nkind: IngestJob\nmetadata: {{name: t}}\nspec:\n  source: {{local: \"{}\"}}\n  destination: {{local: [{}]}}\n{extra}",
        src.display(),
        list.join(", ")
    );
    let p = dir.join("job.yaml");
    fs::write(&p, y).unwrap();
    p
}

#[test]
fn run_with_several_workers_gives_an_identical_tree_and_a_status() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = src_and_dst(t.path(), 12, 30);
    // Three "mounts" of one export: the same directory three times, as in the README demo.
    let dests = vec![dst.clone(), dst.clone(), dst.clone()];
    let f = job_yaml(
        t.path(),
        &src,
        &dests,
        "  workers: 4\n  threadsPerWorker: 3\n  shards: {target: 40}\n",
    );
    let state = t.path().join("state");
    let o = run_cmd(&f, &state).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_identical(&src, &dst);
    let status = read_status(&state);
    assert_eq!(status["phase"].as_str(), Some("Succeeded"), "{status:?}");
    assert_eq!(status["shards"]["failed"].as_u64(), Some(0));
    assert_eq!(status["shards"]["succeeded"], status["shards"]["total"]);
    assert_eq!(status["verification"]["errors"].as_u64(), Some(0));
    // The copy and its last step (directory times, set once where shards share a directory)
    // left nothing for the verifier to repair: every entry matched on the first look.
    assert_eq!(
        status["verification"]["repaired"].as_u64(),
        Some(0),
        "{status:?}"
    );
    assert_eq!(
        status["verification"]["mismatched"].as_u64(),
        Some(0),
        "{status:?}"
    );
    assert_eq!(
        status["verification"]["missing"].as_u64(),
        Some(0),
        "{status:?}"
    );
    // Every worker writes through every destination, and each counts what went through it
    // (the same directory given three times is still three mounts).
    let servers = status["servers"].as_sequence().unwrap();
    assert_eq!(servers.len(), 3);
    for s in servers {
        assert_eq!(s["workers"].as_u64(), Some(4), "{s:?}");
        assert!(s["files"].as_u64().unwrap() > 0, "{s:?}");
        assert!(s["taskP50Micros"].as_u64().is_some(), "{s:?}");
    }
    // Each entry is handled through one mount per pass: copy and verify, at least once each.
    let through: u64 = servers.iter().map(|s| s["files"].as_u64().unwrap()).sum();
    assert!(through >= 2 * 765, "{through}: {servers:?}");
    // 12*30 + 400 + big + exec + hard + badname = 764 regular files, plus one symlink.
    assert_eq!(status["totals"]["files"].as_u64(), Some(765), "{status:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("destination identical"), "{out}");
}

#[test]
fn run_with_verify_none_still_sets_directory_times_after_every_shard() {
    // Shards write into directories that other shards own (each shard's root is created in its
    // parent), so directory times are right only once every shard is done: the last phase sets
    // them even when nothing is verified.
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = src_and_dst(t.path(), 12, 30);
    let dests = vec![dst.clone(), dst.clone(), dst.clone()];
    let f = job_yaml(
        t.path(),
        &src,
        &dests,
        "  workers: 3\n  threadsPerWorker: 4\n  shards: {target: 40}\n  verify: {mode: None}\n",
    );
    let state = t.path().join("state");
    let o = run_cmd(&f, &state).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_identical(&src, &dst);
    let status = read_status(&state);
    assert_eq!(status["phase"].as_str(), Some("Succeeded"), "{status:?}");
    // Nothing was verified, and the status does not say otherwise.
    assert!(status["verification"].is_null(), "{status:?}");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(message.contains("not verified"), "{message}");
}

#[test]
fn run_with_threads_per_worker_auto_gives_an_identical_tree() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = src_and_dst(t.path(), 4, 20);
    let dests = vec![dst.clone(), dst.clone()];
    let f = job_yaml(
        t.path(),
        &src,
        &dests,
        "  workers: 2\n  threadsPerWorker: auto\n  shards: {target: 8}\n",
    );
    let state = t.path().join("state");
    let o = run_cmd(&f, &state).output().unwrap();
    // A worker that refused `--threads auto` would exit 2 and fail the run.
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_identical(&src, &dst);
    let status = read_status(&state);
    assert_eq!(status["phase"].as_str(), Some("Succeeded"), "{status:?}");
    assert_eq!(status["verification"]["errors"].as_u64(), Some(0));
    // What the workers were started with (`--threads` is this value).
    let job: serde_json::Value =
        serde_json::from_slice(&fs::read(state.join("job.json")).unwrap()).unwrap();
    assert_eq!(job["threads"], "auto", "{job}");
}

#[test]
fn crash_of_the_run_then_rerun_resumes_without_redoing_finished_shards() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = src_and_dst(t.path(), 40, 60);
    let f = job_yaml(
        t.path(),
        &src,
        std::slice::from_ref(&dst),
        "  workers: 2\n  threadsPerWorker: 1\n  shards: {target: 150}\n",
    );
    let state = t.path().join("state");
    let markers = state.join("markers");
    let mut child = run_cmd(&f, &state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Finished markers only: a kill during a marker's write leaves its temp file, which is not one.
    let done = |dir: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "done"))
            .collect();
        v.sort();
        v
    };
    // Kill -9 as soon as the first shard is durably done: the workers die with it (parent-death
    // signal), mid-copy.
    let t0 = Instant::now();
    loop {
        let n = if markers.exists() {
            done(&markers).len()
        } else {
            0
        };
        if n > 0 || t0.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let workers = children(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    // The workers die with it (their parent-death signal), but asynchronously: wait until they
    // are gone, so that none writes while the re-run below works.
    let t0 = Instant::now();
    while workers
        .iter()
        .any(|w| Path::new(&format!("/proc/{w}")).exists())
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "workers {workers:?} outlived the run"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let plan: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(state.join("plan.json")).unwrap()).unwrap();
    let shards = plan["shards"].as_array().unwrap().len();
    let before: BTreeMap<PathBuf, (Vec<u8>, i64, i64)> = done(&markers)
        .into_iter()
        .map(|p| {
            let md = fs::metadata(&p).unwrap();
            (
                p.clone(),
                (fs::read(&p).unwrap(), md.mtime(), md.mtime_nsec()),
            )
        })
        .collect();
    assert!(!before.is_empty(), "no shard finished before the kill");
    assert!(
        before.len() < shards,
        "the run finished all {shards} shards before it was killed; nothing to resume"
    );

    let o = run_cmd(&f, &state).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_identical(&src, &dst);
    for (p, (data, s, ns)) in &before {
        let md = fs::metadata(p).unwrap();
        assert_eq!(
            (&fs::read(p).unwrap(), md.mtime(), md.mtime_nsec()),
            (data, *s, *ns),
            "{p:?} was redone"
        );
    }
    // Every shard has its copy and verify marker now.
    assert_eq!(done(&markers).len(), 2 * shards);
}

/// Pids of the direct children of `pid` (Linux: every thread's `children` list).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for t in fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let list = fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    out
}

#[test]
fn killed_worker_fails_the_run_and_a_rerun_completes_it() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = src_and_dst(t.path(), 40, 60);
    let f = job_yaml(
        t.path(),
        &src,
        std::slice::from_ref(&dst),
        "  workers: 2\n  threadsPerWorker: 1\n  shards: {target: 150}\n",
    );
    let state = t.path().join("state");
    // Each worker kills itself at its 30th destination create, part-way through its shards
    // (the fault hook: an exact operation, not a moment).
    let o = run_cmd(&f, &state)
        .env("VFXT_INGEST_FAULTS", "create@30=kill")
        .output()
        .unwrap();
    let status = read_status(&state);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(status["phase"].as_str(), Some("Failed"), "{status:?}");
    let reasons = format!("{:?}", status["failures"]);
    assert!(reasons.contains("signal: 9"), "{reasons}");
    let o = run_cmd(&f, &state).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_identical(&src, &dst);
}

#[test]
fn bad_job_files_exit_2_naming_the_field_line_and_what_is_valid() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let dests = vec![t.path().join("dst")];
    fs::create_dir_all(&dests[0]).unwrap();
    let run = |extra: &str, args: &[&str]| {
        let f = job_yaml(t.path(), &src, &dests, extra);
        let o = bin()
            .args(["run", "-q", "-f"])
            .arg(&f)
            .arg("--state")
            .arg(t.path().join("s"))
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, err) = run("  threadsPerWorker: many\n", &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("spec.threadsPerWorker")
            && err.contains("line 7")
            && err.contains("an integer 1..1024 or \"auto\""),
        "{err}"
    );
    let (code, err) = run("  threadsPerWorker: 2000\n", &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("spec.threadsPerWorker: must be an integer 1..1024 or \"auto\" (got 2000)"),
        "{err}"
    );
    let (code, err) = run("  wrokers: 3\n", &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("wrokers") && err.contains("workers") && err.contains("line 7"),
        "{err}"
    );
    let (code, err) = run("  workers: 0\n", &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("spec.workers: must be at least 1"), "{err}");
    let (code, err) = run("", &["--workers", "0"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--workers: must be at least 1"), "{err}");
    let (code, err) = run("  shards: {target: 0}\n", &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("spec.shards.target: must be at least 1"),
        "{err}"
    );
    let (code, err) = run("  verify: {mode: Sometimes}\n", &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("spec.verify.mode") && err.contains("Metadata"),
        "{err}"
    );

    // The cluster form needs a mount for each SERVER:/EXPORT.
    let f = t.path().join("nfs.yaml");
    fs::write(
        &f,
        format!(
            "apiVersion: ingest.vfxt.dev/v1alpha1\nkind: IngestJob\nspec:\n  source: {{nfs: {{server: 10.0.0.5, path: /export}}}}\n  destination: {{nfs: {{servers: [10.1.1.1, 10.1.1.2], path: /nfs}}}}\nmounts:\n  \"10.0.0.5:/export\": \"{}\"\n  \"10.1.1.1:/nfs\": \"{}\"\n",
            src.display(),
            dests[0].display()
        ),
    )
    .unwrap();
    let o = bin().args(["run", "-q", "-f"]).arg(&f).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("\"10.1.1.2:/nfs\"") && err.contains("spec.destination.nfs.servers[1]"),
        "{err}"
    );

    let f = t.path().join("wrong.yaml");
    fs::write(
        &f,
        "apiVersion: v1\nkind: Pod\nspec: {source: {local: /}, destination: {local: [/tmp]}}\n",
    )
    .unwrap();
    let o = bin().args(["run", "-q", "-f"]).arg(&f).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("apiVersion")
            && err.contains("ingest.vfxt.dev/v1alpha1")
            && err.contains("kind"),
        "{err}"
    );
}

/// `scan --destination-tree` (the operator's scan pod): a source on no NFS mount is not the
/// destination's, and is scanned; the tree means nothing without the servers it is on.
#[test]
fn a_scan_checks_its_source_apart_from_the_destination_tree() {
    let t = tempfile::tempdir().unwrap();
    let (src, _) = src_and_dst(t.path(), 2, 3);
    let scan = |extra: &[&str]| {
        bin()
            .arg("scan")
            .arg(&src)
            .args(["--json"])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = scan(&["--server", "10.1.1.101", "--destination-tree", "/"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = scan(&["--destination-tree", "/"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--server"), "{}", text(&o));
}

#[test]
fn scan_and_worker_commands() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = src_and_dst(t.path(), 5, 10);
    let plan = t.path().join("plan.json");
    let o = bin()
        .arg("scan")
        .arg(&src)
        .args(["--shards", "6", "--workers", "2", "--json", "--out"])
        .arg(&plan)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["totals"]["files"].as_u64(), Some(5 * 10 + 400 + 4));
    assert_eq!(v["totals"]["directories"].as_u64(), Some(1 + 5 + 5 + 1));
    assert!(v["prediction"]["imbalance"].as_f64().unwrap() >= 1.0);

    let o = bin()
        .arg("scan")
        .arg(&src)
        .args(["--shards", "0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("--shards: must be at least 1"),
        "{}",
        text(&o)
    );

    // Worker 0 (2 threads) and worker 1 (adaptive) of 2 copy; then one worker (0 of 1: every shard)
    // verifies.
    for (w, threads) in [("0", "2"), ("1", "auto")] {
        let o = bin()
            .args(["worker", "--plan"])
            .arg(&plan)
            .arg("--source")
            .arg(&src)
            .arg("--dest")
            .arg(&dst)
            .args([
                "--worker",
                w,
                "--of",
                "2",
                "--phase",
                "copy",
                "--threads",
                threads,
                "--no-owner",
            ])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let last = String::from_utf8_lossy(&o.stdout)
            .lines()
            .last()
            .unwrap()
            .to_string();
        let r: serde_json::Value = serde_json::from_str(&last).unwrap();
        assert_eq!(r["event"], "result");
        assert!(r["shards"]["failed"].as_array().unwrap().is_empty());
    }
    let o = bin()
        .args(["worker", "--plan"])
        .arg(&plan)
        .arg("--source")
        .arg(&src)
        .arg("--dest")
        .arg(&dst)
        .args([
            "--worker",
            "0",
            "--of",
            "1",
            "--phase",
            "verify",
            "--no-owner",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_identical(&src, &dst);

    let o = bin()
        .args(["worker", "--plan"])
        .arg(&plan)
        .arg("--source")
        .arg(&src)
        .arg("--dest")
        .arg(&dst)
        .args(["--shards", "999"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("shard 999 is not in the plan"),
        "{}",
        text(&o)
    );
    for (threads, says) in [
        ("fast", "expected a number of threads or `auto`"),
        ("0", "--threads: must be at least 1"),
    ] {
        let o = bin()
            .args(["worker", "--plan"])
            .arg(&plan)
            .arg("--source")
            .arg(&src)
            .arg("--dest")
            .arg(&dst)
            .args(["--shards", "0", "--threads", threads])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(says), "{threads}: {}", text(&o));
    }

    // The cluster's way: the plan as chunk files, one shard by server and completion index.
    let chunks = t.path().join("chunks");
    fs::create_dir(&chunks).unwrap();
    let json = fs::read_to_string(&plan).unwrap();
    let parts: Vec<&str> = json
        .as_bytes()
        .chunks(700)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    for (i, part) in parts.iter().enumerate() {
        fs::write(chunks.join(format!("plan-{i}.json.part")), part).unwrap();
    }
    assert!(parts.len() > 2, "test plan should need several chunks");
    let o = bin()
        .args(["worker", "--plan"])
        .arg(&chunks)
        .arg("--source")
        .arg(&src)
        .arg("--dest")
        .arg(&dst)
        .args(["--server-index", "0", "--phase", "verify", "--no-owner"])
        .env("JOB_COMPLETION_INDEX", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let shard_lines: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("\"event\":\"shard\""))
        .collect();
    assert_eq!(shard_lines.len(), 1, "{out}");
    let pv: serde_json::Value = serde_json::from_str(&json).unwrap();
    let second_of_server0 = pv["shards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["server"] == 0)
        .nth(1)
        .unwrap()["id"]
        .clone();
    let ev: serde_json::Value = serde_json::from_str(shard_lines[0]).unwrap();
    assert_eq!(ev["shard"], second_of_server0);

    let o = bin()
        .args(["worker", "--plan"])
        .arg(&plan)
        .arg("--source")
        .arg(&src)
        .arg("--dest")
        .arg(&dst)
        .args(["--shards", "0", "--preserve", "owner,colour"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("\"colour\" is not an attribute; valid: owner, mode"),
        "{}",
        text(&o)
    );
}

/// Every entry under `root` (the root too), with everything a change to it would move (the
/// test kit's snapshot: type, inode, mode, size, links, times to the nanosecond, contents).
/// Equal snapshots: the tree was not touched.
fn tree_snapshot(
    root: &Path,
) -> std::collections::BTreeMap<Vec<u8>, ingest_testkit::torture::EntrySnap> {
    ingest_testkit::torture::snapshot(root).unwrap()
}

/// A refused `run` changes nothing: not the source, and no state or destination directory is
/// made, whatever is wrong (destination inside the source, source inside the destination, the
/// same directory, a bad field, state inside the source).
#[test]
fn refused_run_changes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (src, _) = src_and_dst(t.path(), 2, 3);
    let before = tree_snapshot(&src);
    let state = t.path().join("state");
    let q = |p: &Path| format!("\"{}\"", p.display());
    let cases: Vec<(String, Vec<String>, &str)> = vec![
        (
            format!(
                "  source: {{local: {}}}\n  destination: {{local: [{}], subPath: new/dst}}\n",
                q(&src),
                q(&src.join("proj00"))
            ),
            vec![],
            "is inside SRC",
        ),
        (
            format!(
                "  source: {{local: {}}}\n  destination: {{local: [{}]}}\n",
                q(&src.join("proj00")),
                q(&src)
            ),
            vec![],
            "is inside DEST",
        ),
        (
            format!(
                "  source: {{local: {}}}\n  destination: {{local: [{}]}}\n",
                q(&src),
                q(&src)
            ),
            vec![],
            "is the source directory itself",
        ),
        (
            format!(
                "  source: {{local: {}}}\n  destination: {{local: [{}], subPath: new}}\n  threadsPerWorker: 0\n",
                q(&src),
                q(&src)
            ),
            vec![],
            "spec.threadsPerWorker",
        ),
        (
            format!(
                "  source: {{local: {}}}\n  destination: {{local: [{}], subPath: new}}\n  verify: {{mode: Sometimes}}\n",
                q(&src),
                q(&src)
            ),
            vec![],
            "spec.verify.mode",
        ),
        (
            format!(
                "  source: {{local: {}}}\n  destination: {{local: [{}], subPath: new}}\n",
                q(&src),
                q(t.path())
            ),
            vec!["--state".into(), src.join("state").display().to_string()],
            "--state",
        ),
    ];
    for (spec, args, needle) in cases {
        let f = t.path().join("job.yaml");
        fs::write(
            &f,
            format!("apiVersion: ingest.vfxt.dev/v1alpha1\nkind: IngestJob\nmetadata: {{name: t}}\nspec:\n{spec}"),
        )
        .unwrap();
        let mut c = bin();
        c.args(["run", "-q", "-f"]).arg(&f);
        if args.is_empty() {
            c.arg("--state").arg(&state);
        }
        let o = c.args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{spec}: {}", text(&o));
        assert!(
            text(&o).contains(needle),
            "{spec}: expected {needle:?} in {}",
            text(&o)
        );
        assert_eq!(
            tree_snapshot(&src),
            before,
            "{spec} {args:?} changed the source"
        );
        assert!(!state.exists(), "{spec}: state created");
        assert!(
            !t.path().join("new").exists(),
            "{spec}: destination created"
        );
    }
}

/// A refused `worker` changes nothing either: not the source, and no markers directory.
#[test]
fn refused_worker_changes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = src_and_dst(t.path(), 2, 3);
    let plan = t.path().join("plan.json");
    let o = bin()
        .arg("scan")
        .arg(&src)
        .args(["--shards", "2", "--out"])
        .arg(&plan)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let before = tree_snapshot(&src);
    let markers = t.path().join("markers");
    let cases: Vec<(PathBuf, Vec<String>, &str)> = vec![
        (src.join("proj00/dst"), vec![], "is inside SRC"),
        (src.clone(), vec![], "is the source directory itself"),
        (t.path().to_path_buf(), vec![], "is inside DEST"),
        (
            dst.clone(),
            vec!["--threads".into(), "0".into()],
            "--threads",
        ),
        (
            dst.clone(),
            vec!["--verify".into(), "sometimes".into()],
            "--verify",
        ),
        (
            dst.clone(),
            vec!["--preserve".into(), "colour".into()],
            "--preserve",
        ),
        (
            dst.clone(),
            vec!["--report".into(), src.join("r.jsonl").display().to_string()],
            "--report",
        ),
    ];
    for (dest, extra, needle) in cases {
        let o = bin()
            .args(["worker", "--plan"])
            .arg(&plan)
            .arg("--source")
            .arg(&src)
            .arg("--dest")
            .arg(&dest)
            .args(["--shards", "0,1", "--markers"])
            .arg(&markers)
            .args(&extra)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{dest:?} {extra:?}: {}", text(&o));
        assert!(
            text(&o).contains(needle),
            "{dest:?} {extra:?}: expected {needle:?} in {}",
            text(&o)
        );
        assert_eq!(
            tree_snapshot(&src),
            before,
            "{dest:?} {extra:?} changed the source"
        );
        assert!(!markers.exists(), "{dest:?} {extra:?}: markers created");
        assert_eq!(
            fs::read_dir(&dst).unwrap().count(),
            0,
            "{dest:?} {extra:?}: copied"
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

/// A destination whose probe cannot be closed (the disk is full) refuses the run and keeps no
/// probe file; workers killed in the middle of their probe leave theirs, and the resumed run
/// removes them and ends identical.
#[test]
fn run_leaves_no_probe_file_after_a_full_disk_or_a_kill() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = src_and_dst(t.path(), 3, 5);
    let f = job_yaml(
        t.path(),
        &src,
        std::slice::from_ref(&dst),
        "  workers: 2\n  threadsPerWorker: 2\n  shards: {target: 4}\n",
    );
    let state = t.path().join("state");
    let o = run_cmd(&f, &state)
        .env("VFXT_INGEST_FAULTS", "close@1=enospc")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(probe_files(&dst), Vec::<String>::new());

    let o = run_cmd(&f, &state)
        .env("VFXT_INGEST_FAULTS", "close@1=kill")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(
        probe_files(&dst).len(),
        2,
        "each worker was killed in its probe, after writing its file"
    );
    let o = run_cmd(&f, &state).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(probe_files(&dst), Vec::<String>::new());
    assert_identical(&src, &dst);
}

/// A field the CRD does not know is refused at every depth of a local job file, naming its path,
/// the valid names and the line; a file using every field is still accepted.
#[test]
fn job_files_refuse_unknown_fields_at_every_depth() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = src_and_dst(t.path(), 2, 2);
    let (s, d) = (src.display(), dst.display());
    let head = "apiVersion: ingest.vfxt.dev/v1alpha1\nkind: IngestJob\nmetadata: {name: t, labels: {a: b}}\nspec:\n";
    let local = format!("  source: {{local: \"{s}\"}}\n  destination: {{local: [\"{d}\"]}}\n");
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{local}  verify: {{mod: Checksum}}\n"),
            "spec.verify.mod: unknown field; expected one of fsync, mode, repair, scope (line 7",
        ),
        (
            format!("{local}  preserve: {{ownr: true}}\n"),
            "spec.preserve.ownr: unknown field; expected one of acls, hardlinks, mode, owner, symlinks, times, xattrs (line 7",
        ),
        (
            format!("{local}  failurePolicy: {{actoin: Continue}}\n"),
            "spec.failurePolicy.actoin: unknown field; expected one of action, maxFailedFiles, retriesPerShard (line 7",
        ),
        (
            format!("{local}  worker: {{imag: x}}\n"),
            "spec.worker.imag: unknown field; expected one of affinity, annotations, image, imagePullPolicy, imagePullSecrets, labels, nodeSelector, priorityClassName, resources, securityContext, serviceAccountName, tolerations, topologySpreadConstraints (line 7",
        ),
        (
            format!("{local}  shards: {{targte: 4}}\n"),
            "spec.shards.targte: unknown field; expected one of maxBytes, maxFiles, target (line 7",
        ),
        (
            format!("{local}  worker: {{securityContext: {{runAs: 0}}}}\n"),
            "spec.worker.securityContext.runAs: unknown field; expected one of runAsGroup, runAsUser, supplementalGroups",
        ),
        (
            format!("{local}  worker: {{resources: {{limit: {{cpu: 1}}}}}}\n"),
            "spec.worker.resources.limit: unknown field; expected one of claims, limits, requests",
        ),
        (
            format!("{local}  worker:\n    tolerations:\n    - operater: Exists\n"),
            "spec.worker.tolerations[0].operater: unknown field; expected one of effect, key, operator, tolerationSeconds, value (line 9",
        ),
        (
            format!(
                "  source: {{local: \"{s}\", subpath: a}}\n  destination: {{local: [\"{d}\"]}}\n"
            ),
            "spec.source.subpath: unknown field; expected one of local, nfs, pvc, subPath (line 5",
        ),
        (
            format!(
                "  source: {{local: \"{s}\"}}\n  destination: {{local: [\"{d}\"], sub_path: a}}\n"
            ),
            "spec.destination.sub_path: unknown field; expected one of local, nfs, subPath (line 6",
        ),
        (
            format!(
                "  source: {{nfs: {{sever: h, path: /x}}}}\n  destination: {{local: [\"{d}\"]}}\n"
            ),
            "spec.source.nfs.sever: unknown field; expected one of path, server (line 5",
        ),
        (
            format!(
                "  source: {{local: \"{s}\"}}\n  destination: {{nfs: {{servers: [h], path: /x, mountOption: [hard]}}}}\n"
            ),
            "spec.destination.nfs.mountOption: unknown field; expected one of mountOptions, path, servers (line 6",
        ),
        (
            format!("{local}mount: {{}}\n"),
            "mount: unknown field; expected one of apiVersion, kind, metadata, mounts, spec, status (line 7",
        ),
    ];
    let f = t.path().join("job.yaml");
    let state = t.path().join("state");
    for (spec, says) in cases {
        fs::write(&f, format!("{head}{spec}")).unwrap();
        let o = run_cmd(&f, &state).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{spec}: {}", text(&o));
        assert!(
            text(&o).contains(says),
            "{spec}: expected {says:?} in {}",
            text(&o)
        );
        assert!(!state.exists(), "{spec}: state created");
    }
    // Every field of the spec (and a status copied along, and metadata's own fields).
    fs::write(
        &f,
        format!(
            "{head}{local}  workers: 1\n  threadsPerWorker: 2\n  shards: {{target: 2, maxFiles: 1000, maxBytes: 1000000000}}\n  verify: {{mode: Checksum}}\n  preserve: {{owner: true, mode: true, times: true, xattrs: false, symlinks: true, hardlinks: true}}\n  failurePolicy: {{action: FailJob, maxFailedFiles: 0, retriesPerShard: 1}}\n  run: 1\n  worker:\n    image: x\n    imagePullPolicy: Never\n    resources: {{limits: {{cpu: 1}}}}\n    nodeSelector: {{any: thing}}\n    tolerations: [{{key: k, operator: Exists}}]\n    serviceAccountName: sa\n    securityContext: {{runAsUser: 0, supplementalGroups: [1]}}\nmounts: {{}}\nstatus: {{phase: Succeeded, whatever: 1}}\n"
        ),
    )
    .unwrap();
    let o = run_cmd(&f, &state).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_identical(&src, &dst);
}

/// The numbers of a `this run, copy:` line: (copied, up to date, symlinks, hard links, files/s,
/// seconds).
fn this_run_copy(out: &str) -> (u64, u64, u64, u64, u64, f64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("this run, copy: "))
        .unwrap_or_else(|| panic!("no 'this run, copy' line in {out}"));
    let num_before = |word: &str| -> f64 {
        let i = line
            .find(word)
            .unwrap_or_else(|| panic!("{word:?} in {line}"));
        line[..i]
            .trim_end()
            .rsplit([' ', '(', ','])
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|e| panic!("{word:?} in {line}: {e}"))
    };
    (
        num_before(" files copied") as u64,
        num_before(" already up to date") as u64,
        num_before(" symlinks") as u64,
        num_before(" hard links") as u64,
        num_before(" files/s") as u64,
        line.rsplit("over ")
            .next()
            .unwrap()
            .trim_end_matches(" s")
            .parse()
            .unwrap(),
    )
}

/// The printed rate and the status's are the same figure: the files this run finished over the
/// copy phase's own time.
#[test]
fn run_rates_are_this_runs_files_over_the_copy_phase() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = src_and_dst(t.path(), 6, 20);
    let f = job_yaml(t.path(), &src, std::slice::from_ref(&dst), "  workers: 2\n");
    let state = t.path().join("state");
    let o = run_cmd(&f, &state).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let (copied, up_to_date, symlinks, hardlinks, fps, secs) = this_run_copy(&out);
    let done = copied + up_to_date + symlinks + hardlinks;
    let status = read_status(&state);
    assert_eq!(status["progress"]["files"].as_u64(), Some(done), "{out}");
    assert_eq!(
        status["progress"]["filesPerSecond"].as_u64(),
        Some(fps),
        "{out}"
    );
    let expect = done as f64 / secs;
    assert!(
        (fps as f64 - expect).abs() <= 1.0 + 0.01 * expect,
        "{fps} files/s printed, {done} files over {secs} s is {expect:.0}: {out}"
    );
    assert!(out.contains("destination identical"), "{out}");
}

/// A resumed run after a finished one copied nothing, and says so (the job's totals are a line
/// of their own), at 0 files/s in the status.
#[test]
fn resumed_finished_run_says_it_copied_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = src_and_dst(t.path(), 4, 10);
    let f = job_yaml(t.path(), &src, std::slice::from_ref(&dst), "  workers: 2\n");
    let state = t.path().join("state");
    let o = run_cmd(&f, &state).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let files = read_status(&state)["progress"]["files"].as_u64().unwrap();
    let shards = read_status(&state)["shards"]["total"].as_u64().unwrap();

    let o = run_cmd(&f, &state).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!(
            "this run, copy: 0 files copied (0 B), {files} already up to date ({files} in {shards} shards done by an earlier run), 0 directories, 0 symlinks, 0 hard links, 0 failed, 0 vanished from the source, 0 changed while read, 0 not attempted; 0 files/s, 0 B/s"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "this run, verify: nothing checked ({shards} shards verified by an earlier run)"
        )),
        "{out}"
    );
    assert!(out.contains(&format!("job: {files} files")), "{out}");
    let status = read_status(&state);
    assert_eq!(status["progress"]["files"].as_u64(), Some(files));
    assert_eq!(status["progress"]["filesPerSecond"].as_u64(), Some(0));
    assert_eq!(status["progress"]["bytesPerSecond"].as_u64(), Some(0));
    assert_identical(&src, &dst);
}

/// `status.totals` carries what the scan found (histograms, largest directories, hard links);
/// a run after a recorded Copy pass estimates its time from that pass's rates.
#[test]
fn a_runs_totals_carry_the_scans_analytics_and_an_estimate_from_the_recorded_copy_pass() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = src_and_dst(t.path(), 4, 10);
    let f = job_yaml(t.path(), &src, std::slice::from_ref(&dst), "  workers: 2\n");
    let state = t.path().join("state");
    let o = run_cmd(&f, &state).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let mut status = read_status(&state);
    let totals = &status["totals"];
    for rows in ["sizeHistogram", "ageHistogram", "largestDirectories"] {
        assert!(
            !totals[rows].as_sequence().unwrap().is_empty(),
            "{rows}: {totals:?}"
        );
    }
    assert_eq!(
        totals["ageHistogram"][0]["bucket"].as_str(),
        Some("under 1 hour")
    );
    assert_eq!(totals["hardLinks"]["paths"].as_u64(), Some(2), "{totals:?}");
    assert!(
        totals.get("estimatedSeconds").is_none(),
        "nothing measured yet"
    );

    // The recorded pass took 100 s (a real one here takes less than the 1 s a rate needs).
    let pass = &mut status["passes"][0];
    pass["startTime"] = "2000-01-01T00:00:00Z".into();
    pass["completionTime"] = "2000-01-01T00:01:40Z".into();
    let (files, bytes) = (
        pass["files"].as_u64().unwrap() as f64,
        pass["bytes"].as_u64().unwrap() as f64,
    );
    fs::write(
        state.join("status.yaml"),
        serde_yaml::to_string(&status).unwrap(),
    )
    .unwrap();
    let o = run_cmd(&f, &state).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let totals = &read_status(&state)["totals"];
    let tree = |k: &str| totals[k].as_u64().unwrap() as f64;
    let expect = (tree("files") / (files / 100.0))
        .max(tree("bytes") / (bytes / 100.0))
        .ceil();
    assert_eq!(
        totals["estimatedSeconds"].as_u64(),
        Some(expect as u64),
        "{totals:?}"
    );
}

/// A directory the workers cannot read is one failed entry of the run, counted once (the scan,
/// the copy and the verify all meet it) and weighed by the failure policy, as the operator does.
#[test]
fn an_unreadable_directory_is_one_failed_entry_weighed_by_the_policy() {
    use std::os::unix::process::CommandExt;
    // As root, the run drops to an ordinary uid (root reads a mode-000 directory anyway).
    let root = rustix::process::geteuid().is_root();
    let uid = if root {
        1000
    } else {
        rustix::process::geteuid().as_raw()
    };
    let t = tempfile::tempdir().unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("ok/deep")).unwrap();
    fs::create_dir_all(src.join("locked/inner")).unwrap();
    fs::write(src.join("ok/deep/a"), b"a").unwrap();
    fs::write(src.join("locked/inner/b"), b"b").unwrap();
    fs::write(src.join("top"), b"top").unwrap();
    fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
    // The build's binary may lie under a directory that uid cannot enter (a CI checkout in a
    // mode-0700 temporary directory): run a link to it (or a copy) from here.
    let exe = t.path().join("vfxt-ingest");
    let built = env!("CARGO_BIN_EXE_vfxt-ingest");
    fs::hard_link(built, &exe)
        .or_else(|_| fs::copy(built, &exe).map(drop))
        .unwrap();
    let cases = [
        ("maxFailedFiles: 5", "Succeeded"),
        ("maxFailedFiles: 0", "Failed"),
        ("action: FailJob", "Failed"),
    ];
    for (i, (policy, phase)) in cases.into_iter().enumerate() {
        let case = t.path().join(format!("case{i}"));
        let (dst, state) = (case.join("dst"), case.join("state"));
        for d in [&case, &dst, &state] {
            fs::create_dir_all(d).unwrap();
            std::os::unix::fs::chown(d, Some(uid), Some(uid)).unwrap();
        }
        let f = job_yaml(
            &case,
            &src,
            std::slice::from_ref(&dst),
            &format!(
                "  workers: 2\n  shards: {{target: 4}}\n  preserve: {{owner: false}}\n  failurePolicy: {{{policy}}}\n"
            ),
        );
        let mut c = Command::new(&exe);
        c.args(["run", "-q", "-f"])
            .arg(&f)
            .arg("--state")
            .arg(&state);
        if root {
            c.uid(uid).gid(uid);
        }
        let o = c.output().unwrap();
        let st = read_status(&state);
        let why = format!("{policy}: {}\n{st:?}", text(&o));
        // Exit 1 whatever the verdict: an entry failed.
        assert_eq!(o.status.code(), Some(1), "{why}");
        assert_eq!(st["phase"].as_str(), Some(phase), "{why}");
        assert_eq!(st["failedFiles"].as_u64(), Some(1), "{why}");
        let listed: Vec<&str> = st["failures"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|f| f["path"].as_str())
            .collect();
        assert_eq!(listed, ["locked"], "{why}");
        let message = st["message"].as_str().unwrap();
        assert!(message.contains("1 entry failed"), "{why}");
        assert!(!message.contains("identical"), "{why}");
        // Everything readable is there.
        assert_eq!(fs::read(dst.join("ok/deep/a")).unwrap(), b"a", "{why}");
        assert_eq!(fs::read(dst.join("top")).unwrap(), b"top", "{why}");
        assert!(!dst.join("locked/inner").exists(), "{why}");
    }
    fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
}

/// Shards are handed out on demand: a worker that dies (killed at its first create) gives its
/// shard back and the others finish the job, identical, with each shard counted once.
#[test]
fn a_dead_workers_shard_goes_to_another_worker_and_the_job_still_succeeds() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = src_and_dst(t.path(), 12, 30);
    let f = job_yaml(
        t.path(),
        &src,
        &[dst.clone(), dst.clone()],
        "  workers: 3\n  shards: {target: 30}\n  verify: {mode: Checksum}\n",
    );
    let state = t.path().join("state");
    // At its first create: how many files a worker creates depends on the shards it claims, so
    // a later one might never come.
    let o = run_cmd(&f, &state)
        .env("VFXT_INGEST_FAULTS", "create@1=kill")
        .env("VFXT_INGEST_FAULTS_WORKER", "1")
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert_identical(&src, &dst);
    assert!(
        out.contains("note: worker 1 (copy phase): signal: 9"),
        "the death is reported: {out}"
    );
    let st = read_status(&state);
    assert_eq!(st["phase"].as_str(), Some("Succeeded"), "{st:?}");
    assert_eq!(st["shards"]["succeeded"], st["shards"]["total"], "{st:?}");
    // Copied by the dead worker or again by another: every file once at the destination, and the
    // job's count of them is the tree's.
    assert_eq!(st["progress"]["files"], st["totals"]["files"], "{st:?}");
}

/// With nobody left to take them, a dead worker's shards are lost: with verify None (no pass
/// after the copy re-copies them) that fails the run, and says why.
#[test]
fn shards_nobody_could_finish_fail_the_run() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = src_and_dst(t.path(), 6, 30);
    let f = job_yaml(
        t.path(),
        &src,
        std::slice::from_ref(&dst),
        "  workers: 1\n  shards: {target: 10}\n  verify: {mode: None}\n",
    );
    let state = t.path().join("state");
    let o = run_cmd(&f, &state)
        .env("VFXT_INGEST_FAULTS", "create@25=kill")
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let st = read_status(&state);
    assert_eq!(st["phase"].as_str(), Some("Failed"), "{st:?}");
    let message = st["message"].as_str().unwrap();
    assert!(
        message.contains("ended without a result") && message.contains("signal: 9"),
        "{message}"
    );
    assert!(st["shards"]["failed"].as_u64().unwrap() > 0, "{st:?}");
}

/// `backing` served at `at` by a node with no added latency that stops answering as `stop`
/// says (its fault hooks).
fn hanging_node(
    backing: &Path,
    at: &Path,
    stop: ingest_latencyfs::NodeConfig,
) -> ingest_latencyfs::Node {
    let cfg = ingest_latencyfs::NodeConfig {
        meta_latency: Duration::ZERO,
        data_latency: Duration::ZERO,
        ..stop
    };
    ingest_latencyfs::Node::mount(backing, at, cfg).unwrap()
}

/// A destination that stops answering mid-copy (a hung NFS server behind a hard mount: no error,
/// its callers wait in the kernel): each worker that meets it says which and exits 4, its shards
/// go back at no cost to their retries, and its slot starts again without it. The run ends
/// Succeeded and identical through the other destination, the status naming the hung one.
#[test]
fn a_destination_that_stops_answering_is_given_up_and_the_run_still_succeeds() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = src_and_dst(t.path(), 12, 30);
    // The same export as `dst`, through a node that stops answering at its 200th operation.
    let hung = t.path().join("hung-node");
    let node = hanging_node(
        &dst,
        &hung,
        ingest_latencyfs::NodeConfig {
            stop_answering_at: Some(200),
            ..Default::default()
        },
    );
    let f = job_yaml(
        t.path(),
        &src,
        &[dst.clone(), hung.clone()],
        // No retries: a shard whose claim were lost (rather than handed back) would fail the run.
        "  workers: 2\n  threadsPerWorker: 4\n  shards: {target: 40}\n  stallTimeoutSeconds: 10\n  \
         failurePolicy: {retriesPerShard: 0}\n",
    );
    let state = t.path().join("state");
    let o = run_cmd(&f, &state).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let held = node.stats();
    assert!(
        held.unanswered >= 1,
        "the node never stopped answering: {held:?}"
    );
    drop(node);
    assert_identical(&src, &dst);
    let status = read_status(&state);
    assert_eq!(status["phase"].as_str(), Some("Succeeded"), "{status:?}");
    assert_eq!(status["shards"]["succeeded"], status["shards"]["total"]);
    let servers = status["servers"].as_sequence().unwrap();
    let hung_name = hung.display().to_string();
    let gone = servers
        .iter()
        .find(|s| s["server"].as_str() == Some(hung_name.as_str()))
        .unwrap();
    assert_eq!(gone["state"].as_str(), Some("Unresponsive"), "{gone:?}");
    assert_eq!(gone["workers"].as_u64(), Some(0), "{gone:?}");
    let why = gone["message"].as_str().unwrap();
    assert!(why.contains(&hung_name) && why.contains("waiting"), "{why}");
    let other = servers
        .iter()
        .find(|s| s["server"].as_str() == Some(dst.display().to_string().as_str()))
        .unwrap();
    assert_eq!(other["state"].as_str(), Some("Healthy"), "{other:?}");
    // Every worker that met the hung node said so in its log.
    let logs: String = fs::read_dir(state.join("logs"))
        .unwrap()
        .filter_map(|e| fs::read_to_string(e.unwrap().path()).ok())
        .collect();
    assert!(logs.contains("stopped answering"), "{logs}");
    // Each worker process published its own report, those that left the hung node too (no
    // temporary file left behind, none replaced by the worker started after it).
    let names: Vec<String> = fs::read_dir(state.join("logs/run-0"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with('.')), "{names:?}");
    for w in 0..2 {
        assert!(
            names.contains(&format!("report-{w}-copy.jsonl.gz")),
            "{names:?}"
        );
    }
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("report-") && n.ends_with("-copy-1.jsonl.gz")),
        "a worker started again without the hung node reports apart: {names:?}"
    );
}

/// The default state directory is `.vfxt-ingest/<metadata.name>`: a name that is not one
/// Kubernetes would take (a '/', a '..', capitals) is refused before anything is made, and so is
/// a file name that cannot stand in for a missing one.
#[test]
fn a_job_name_that_could_reach_outside_its_state_directory_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = src_and_dst(t.path(), 2, 2);
    let cwd = t.path().join("cwd");
    fs::create_dir(&cwd).unwrap();
    let spec = format!(
        "spec:\n  source: {{local: \"{}\"}}\n  destination: {{local: [\"{}\"], subPath: new}}\n",
        src.display(),
        dst.display()
    );
    for (file, metadata) in [
        ("job.yaml", "metadata: {name: ../../escape}\n"),
        ("job.yaml", "metadata: {name: a/b}\n"),
        ("job.yaml", "metadata: {name: ..}\n"),
        ("job.yaml", "metadata: {name: Nightly}\n"),
        ("Bad Name.yaml", ""),
    ] {
        let f = cwd.join(file);
        fs::write(
            &f,
            format!("apiVersion: ingest.vfxt.dev/v1alpha1\nkind: IngestJob\n{metadata}{spec}"),
        )
        .unwrap();
        // No --state: the default, under the current directory, is what a bad name would escape.
        let o = bin()
            .current_dir(&cwd)
            .args(["run", "-q", "-f"])
            .arg(&f)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{metadata}{file}: {}", text(&o));
        assert!(
            text(&o).contains("metadata.name") && text(&o).contains("DNS-1123 subdomain"),
            "{metadata}{file}: {}",
            text(&o)
        );
        let made: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(!dst.join("new").exists(), "{metadata}: destination made");
        assert!(!t.path().join("escape").exists(), "{metadata}: {made:?}");
        assert!(!cwd.join(".vfxt-ingest").exists(), "{metadata}: state made");
        fs::remove_file(&f).unwrap();
    }
}

/// `workers` above the plan's shards starts only as many workers as there are shards.
#[test]
fn more_workers_than_shards_start_one_per_shard() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    fs::write(src.join("only"), b"one file").unwrap();
    let f = job_yaml(
        t.path(),
        &src,
        std::slice::from_ref(&dst),
        "  workers: 100000\n",
    );
    let state = t.path().join("state");
    let o = run_cmd(&f, &state).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_identical(&src, &dst);
    let status = read_status(&state);
    let shards = status["shards"]["total"].as_u64().unwrap();
    assert!(shards >= 1, "{status:?}");
    assert_eq!(
        status["servers"][0]["workers"].as_u64(),
        Some(shards),
        "{status:?}"
    );
    // One worker log per worker that ran, per phase.
    let logs = fs::read_dir(state.join("logs"))
        .unwrap()
        .filter(|e| {
            let n = e.as_ref().unwrap().file_name();
            let n = n.to_string_lossy();
            n.starts_with("worker-") && n.ends_with("-copy.log")
        })
        .count() as u64;
    assert_eq!(logs, shards, "{}", text(&o));
}

/// A worker that ends without its last word (killed here; one leaving a hung destination is the
/// same) has already delivered what each shard it ended found: a failed entry of a shard it
/// finished is listed in the status with its path and error, not only counted.
#[test]
fn a_dead_workers_finished_shards_keep_their_listed_failures() {
    let t = tempfile::tempdir().unwrap();
    // 60 directories of 8 small files: a shard is a directory or less.
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    for d in 0..60 {
        fs::create_dir_all(src.join(format!("d{d:02}"))).unwrap();
        for f in 0..8 {
            fs::write(src.join(format!("d{d:02}/f{f}")), format!("{d}/{f}")).unwrap();
        }
    }
    fs::create_dir_all(&dst).unwrap();
    let f = job_yaml(
        t.path(),
        &src,
        std::slice::from_ref(&dst),
        // Small shards, two at once (64 threads): the shard of the 3rd create has long ended
        // when the worker is killed at its 150th.
        "  workers: 2\n  threadsPerWorker: 64\n  shards: {target: 60}\n  verify: {mode: None}\n  \
         failurePolicy: {maxFailedFiles: 10}\n",
    );
    let state = t.path().join("state");
    let o = run_cmd(&f, &state)
        .env("VFXT_INGEST_FAULTS", "create@3=eio,create@150=kill")
        .env("VFXT_INGEST_FAULTS_WORKER", "0")
        .output()
        .unwrap();
    let out = text(&o);
    assert!(
        out.contains("note: worker 0 (copy phase): signal: 9"),
        "the death is reported: {out}"
    );
    // Exit 1: an entry failed (the policy lets the run succeed).
    assert_eq!(o.status.code(), Some(1), "{out}");
    let st = read_status(&state);
    assert_eq!(st["failedFiles"].as_u64(), Some(1), "{st:?}");
    let failures = st["failures"].as_sequence().expect("failures listed");
    assert_eq!(failures.len(), 1, "{st:?}");
    let error = failures[0]["reason"].as_str().unwrap_or_default();
    assert!(error.contains("Input/output error"), "{:?}", failures[0]);
    let path = failures[0]["path"].as_str().unwrap();
    assert!(src.join(path).is_file(), "names a source file: {path}");
}

/// `spec.filter` as a user writes it: excluded names, an excluded directory (left out whole),
/// an anchored pattern and an age limit, in a run sharded fine enough to cut directories into
/// name ranges. The scan, the copy and the verify pass agree: what is left out is counted once,
/// not copied, never reported missing, and a destination entry that the patterns cover is
/// neither reported as only in the destination nor touched.
#[test]
fn a_filter_leaves_out_the_same_entries_in_every_phase() {
    use std::os::unix::fs::symlink;
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = src_and_dst(t.path(), 12, 30);
    fs::create_dir_all(src.join("proj00/run0/.snapshot/hourly.0")).unwrap();
    fs::write(src.join("proj00/run0/.snapshot/hourly.0/f"), b"snap").unwrap();
    fs::write(src.join("flat/x.tmp"), b"scratch").unwrap();
    fs::write(src.join("proj03/run0/y.tmp"), b"scratch").unwrap();
    fs::create_dir_all(src.join("proj05/run2/cache/deep")).unwrap();
    fs::write(src.join("proj05/run2/cache/deep/c"), b"cache").unwrap();
    // An old file and a symlink named like an excluded file.
    let old = src.join("proj04/run1/old.dat");
    fs::write(&old, b"old").unwrap();
    let f = fs::File::options().write(true).open(&old).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(631_152_000))
        .unwrap(); // 1990
    drop(f);
    symlink("nowhere", src.join("proj06/run0/link.tmp")).unwrap();
    // The destination already has a scratch file of its own.
    fs::create_dir_all(dst.join("flat")).unwrap();
    fs::write(dst.join("flat/junk.tmp"), b"theirs").unwrap();

    let excluded = [
        "flat/x.tmp",
        "proj00/run0/.snapshot",
        "proj03/run0/y.tmp",
        "proj04/run1/old.dat",
        "proj05/run2/cache",
        "proj06/run0/link.tmp",
    ];
    let f = job_yaml(
        t.path(),
        &src,
        &[dst.clone(), dst.clone()],
        "  workers: 3\n  shards: {target: 40}\n  filter:\n    exclude: ['*.tmp', '.snapshot/', 'proj*/*/cache']\n    maxAge: 3650d\n",
    );
    let state = t.path().join("state");
    let o = run_cmd(&f, &state).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let st = read_status(&state);
    let why = format!("{}\n{st:?}", text(&o));
    assert_eq!(st["phase"].as_str(), Some("Succeeded"), "{why}");
    assert_eq!(
        st["totals"]["excluded"].as_u64(),
        Some(excluded.len() as u64),
        "{why}"
    );
    for field in ["missing", "mismatched", "extraneous", "repaired", "errors"] {
        assert_eq!(
            st["verification"][field].as_u64(),
            Some(0),
            "{field}: {why}"
        );
    }
    let message = st["message"].as_str().unwrap();
    assert!(
        message.contains("destination identical")
            && message.contains("6 entries left out by the filter"),
        "{why}"
    );
    // The trees differ by exactly what the filter left out, and the destination's own file.
    let diffs = ingest_testkit::compare::compare(&src, &dst, &Default::default());
    let mut got: Vec<String> = diffs
        .iter()
        .map(|d| format!("{} {}", d.aspect.name(), d.path))
        .collect();
    got.sort();
    let mut want: Vec<String> = excluded.iter().map(|p| format!("missing {p}")).collect();
    want.push("extra flat/junk.tmp".into());
    want.sort();
    assert_eq!(got, want, "{diffs:#?}");
    assert_eq!(fs::read(dst.join("flat/junk.tmp")).unwrap(), b"theirs");

    // A checksum pass over the same destination agrees: nothing to copy, nothing different.
    let f = job_yaml(
        t.path(),
        &src,
        &[dst.clone(), dst.clone()],
        "  workers: 3\n  shards: {target: 40}\n  run: 1\n  verify: {mode: Checksum, repair: false}\n  filter:\n    exclude: ['*.tmp', '.snapshot/', 'proj*/*/cache']\n    maxAge: 3650d\n",
    );
    let o = run_cmd(&f, &state).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let st = read_status(&state);
    assert_eq!(st["verification"]["mismatched"].as_u64(), Some(0), "{st:?}");
    assert_eq!(st["verification"]["extraneous"].as_u64(), Some(0), "{st:?}");
}

/// Includes select files (and everything below a matching directory); bad patterns and ages are
/// refused naming the field, before anything is created.
#[test]
fn includes_select_files_and_bad_filters_are_refused_naming_the_field() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("a/keep/deep")).unwrap();
    fs::create_dir_all(src.join("b")).unwrap();
    for (p, d) in [
        ("a/x.csv", "1"),
        ("a/x.txt", "2"),
        ("a/keep/deep/y.bin", "3"),
        ("b/z.csv", "4"),
        ("top.txt", "5"),
    ] {
        fs::write(src.join(p), d).unwrap();
    }
    let dst = t.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let o = bin()
        .args(["copy", "-q", "--include", "*.csv", "--include", "keep/"])
        .arg(&src)
        .arg(&dst)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for p in ["a/x.csv", "a/keep/deep/y.bin", "b/z.csv"] {
        assert!(dst.join(p).is_file(), "{p} should be copied");
    }
    for p in ["a/x.txt", "top.txt"] {
        assert!(!dst.join(p).exists(), "{p} should be left out");
    }
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("2 excluded by the filter"), "{out}");

    for (filter, field) in [
        ("{exclude: ['ok', '[a']}", "spec.filter.exclude[1]"),
        ("{include: ['a/../b']}", "spec.filter.include[0]"),
        ("{minAge: 10x}", "spec.filter.minAge"),
        ("{minAge: 2d, maxAge: 1d}", "spec.filter"),
    ] {
        let case = t.path().join("refused");
        let d = case.join("dst");
        fs::create_dir_all(&d).unwrap();
        let f = job_yaml(
            &case,
            &src,
            std::slice::from_ref(&d),
            &format!("  filter: {filter}\n"),
        );
        let state = case.join("state");
        let o = run_cmd(&f, &state).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{filter}: {}", text(&o));
        assert!(text(&o).contains(field), "{filter}: {}", text(&o));
        assert!(!state.exists(), "{filter}: nothing is created");
        assert_eq!(fs::read_dir(&d).unwrap().count(), 0, "{filter}");
        fs::remove_dir_all(&case).unwrap();
    }
}

/// Every entry under `root` with its ctime and mtime (nanoseconds): any write moves one.
fn stamps(root: &Path) -> BTreeMap<PathBuf, (i64, i64, i64, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        out.insert(
            p.clone(),
            (m.ctime(), m.ctime_nsec(), m.mtime(), m.mtime_nsec()),
        );
        if m.is_dir() {
            stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out
}

/// `spec.dryRun` (and `run --dry-run`): the run scans and compares every shard, writes nothing
/// to the destination (every ctime stays), leaves no marker, and says what a pass would do; it
/// never says "identical". The real run after it copies as usual. A destination that does not
/// exist is refused, not created.
#[test]
fn a_dry_run_says_what_a_pass_would_do_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = src_and_dst(t.path(), 6, 20);
    // Half the tree already there (as a bulk pass left it), and a file of the destination's own.
    let o = bin()
        .args(["copy", "-q"])
        .arg(src.join("proj00"))
        .arg(dst.join("proj00"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    fs::write(dst.join("theirs.txt"), b"not in the source").unwrap();
    let before = stamps(&dst);
    let state = t.path().join("state");
    for (how, extra, flag) in [
        (
            "spec.dryRun",
            "  workers: 2\n  shards: {target: 12}\n  dryRun: true\n",
            None,
        ),
        (
            "--dry-run",
            "  workers: 2\n  shards: {target: 12}\n",
            Some("--dry-run"),
        ),
    ] {
        let f = job_yaml(t.path(), &src, &[dst.clone(), dst.clone()], extra);
        let o = run_cmd(&f, &state).args(flag).output().unwrap();
        let st = read_status(&state);
        let why = format!("{how}: {}\n{st:?}", text(&o));
        assert_eq!(o.status.code(), Some(0), "{why}");
        assert_eq!(st["phase"].as_str(), Some("Succeeded"), "{why}");
        let message = st["message"].as_str().unwrap();
        assert!(
            message.starts_with("dry run, nothing written: a pass would create"),
            "{why}"
        );
        assert!(message.contains("1 entry only in the destination"), "{why}");
        assert!(!message.contains("identical"), "{why}");
        let v = &st["verification"];
        assert!(v["missing"].as_u64().unwrap() > 100, "{why}");
        assert!(
            v["differingBytes"].as_u64().unwrap() > 100 << 20,
            "the big file: {why}"
        );
        assert_eq!(v["errors"].as_u64(), Some(0), "{why}");
        assert_eq!(st["failedFiles"].as_u64().unwrap_or(0), 0, "{why}");
        let reasons: Vec<&str> = st["failures"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|f| f["reason"].as_str())
            .collect();
        // The first paths (the list is capped): what a pass would do with them.
        assert_eq!(reasons.len(), 20, "{why}");
        assert!(
            reasons
                .iter()
                .all(|r| r.starts_with("would ") || *r == "only in the destination"),
            "{why}"
        );
        // Every path is in the reports.
        let r = bin()
            .args(["report", "--jsonl"])
            .arg(state.join("logs"))
            .output()
            .unwrap();
        let all = String::from_utf8_lossy(&r.stdout);
        assert!(
            all.lines()
                .any(|l| l.contains("\"theirs.txt\"") && l.contains("extraneous")),
            "{why}\n{all}"
        );
        assert!(
            all.lines().filter(|l| l.contains("\"missing\"")).count() > 100,
            "{why}"
        );
        assert_eq!(stamps(&dst), before, "{how} wrote to the destination");
        assert_eq!(
            fs::read_dir(state.join("markers")).unwrap().count(),
            0,
            "{why}"
        );
    }

    // The real pass, once the destination's own file is dealt with.
    fs::remove_file(dst.join("theirs.txt")).unwrap();
    let f = job_yaml(
        t.path(),
        &src,
        &[dst.clone(), dst.clone()],
        "  workers: 2\n  shards: {target: 12}\n",
    );
    let o = run_cmd(&f, &state).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_identical(&src, &dst);
    assert!(
        read_status(&state)["message"]
            .as_str()
            .unwrap()
            .contains("destination identical")
    );

    // Nothing to compare with (a subPath not made yet): refused naming the field, and nothing
    // is created.
    let f = job_yaml(
        t.path(),
        &src,
        std::slice::from_ref(&dst),
        "  dryRun: true\n",
    );
    let y = fs::read_to_string(&f).unwrap().replace(
        "destination: {local: [",
        "destination: {subPath: next, local: [",
    );
    fs::write(&f, y).unwrap();
    let o = run_cmd(&f, &t.path().join("state2")).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("spec.destination") && text(&o).contains("a dry run creates nothing"),
        "{}",
        text(&o)
    );
    assert!(!dst.join("next").exists());
}

/// A directory that holds only subdirectories, each big enough to be planned on its own, has no
/// entries of its own at the scan: the names between its subdirectories still belong to a shard.
/// So an entry only in the destination there is found (the run is not "identical"), and a file
/// created in the source there after the scan is copied or reported, never silently missed.
#[test]
fn names_between_split_subdirectories_are_still_checked() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let dst = t.path().join("dst");
    // As the e2e tests' tree: big subdirectories around a small one, no files of its own.
    for (d, n) in [("a", 150), ("d", 150), ("empty", 0), ("sp ace", 150)] {
        let dir = src.join("top").join(d);
        fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            fs::write(dir.join(format!("{i}")), b"x").unwrap();
        }
    }
    fs::create_dir_all(&dst).unwrap();
    let f = job_yaml(
        t.path(),
        &src,
        std::slice::from_ref(&dst),
        "  workers: 2\n  shards: {target: 12}\n",
    );
    let state = t.path().join("state");
    let o = run_cmd(&f, &state).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let plan = fs::read_to_string(state.join("plan.json")).unwrap();
    assert!(
        plan.contains("\"dir\":\"top/a\""),
        "top is split by subdirectory: {plan}"
    );
    // Names before, between and after the split subdirectories, only in the destination.
    for n in ["0-theirs", "b-theirs", "z-theirs"] {
        fs::write(dst.join("top").join(n), b"theirs").unwrap();
    }
    let f = job_yaml(
        t.path(),
        &src,
        std::slice::from_ref(&dst),
        "  workers: 2\n  shards: {target: 12}\n  run: 1\n",
    );
    let o = run_cmd(&f, &state).output().unwrap();
    let st = read_status(&state);
    assert_eq!(o.status.code(), Some(1), "{}\n{st:?}", text(&o));
    assert_eq!(st["verification"]["extraneous"].as_u64(), Some(3), "{st:?}");
    assert!(
        !st["message"]
            .as_str()
            .unwrap()
            .contains("destination identical"),
        "{st:?}"
    );
}

/// `mode: Mirror`: after the copy phase weighed what only the destination has, the run deletes
/// it, but only within the job's scope (the destination's subPath), never what the filter leaves
/// out, never more than `maxDeletes` (above it nothing at all), and never after failures beyond
/// the failure policy. Each refusal leaves every entry in place and says why; the verify pass
/// then finds them, so the run is not "identical".
#[test]
fn a_mirror_deletes_only_what_the_source_lacks_in_scope_and_within_its_limits() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst_root) = src_and_dst(t.path(), 8, 20);
    let dst = dst_root.join("mirror");
    let state = t.path().join("state");
    let job = |extra: &str| {
        job_yaml(
            t.path(),
            &src,
            &[dst_root.clone(), dst_root.clone()],
            &format!(
                "  workers: 2\n  shards: {{target: 12}}\n  filter: {{exclude: [\"*.keep\"]}}\n{extra}"
            ),
        )
    };
    let y = |f: PathBuf| {
        let y = fs::read_to_string(&f).unwrap().replace(
            "destination: {local: [",
            "destination: {subPath: mirror, local: [",
        );
        fs::write(&f, y).unwrap();
        f
    };
    let o = run_cmd(&y(job("")), &state).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // Users removed things from the source; the destination has things of its own.
    fs::remove_dir_all(src.join("proj03")).unwrap();
    fs::remove_file(src.join("flat/img0007")).unwrap();
    fs::create_dir_all(dst.join("proj01/run1/old/deeper")).unwrap();
    fs::write(dst.join("proj01/run1/old/deeper/x"), b"x").unwrap();
    fs::write(dst.join("flat/stale"), b"s").unwrap();
    // Outside the job's scope, and left out by its filter: never deleted.
    fs::write(dst_root.join("outside"), b"o").unwrap();
    fs::write(dst.join("flat/notes.keep"), b"k").unwrap();
    let extras = [
        dst.join("proj03"),
        dst.join("flat/img0007"),
        dst.join("proj01/run1/old"),
        dst.join("flat/stale"),
    ];
    // proj03 (its run0 directory and 20 files) + img0007 + old, deeper, x + stale.
    let weight = 22 + 1 + 3 + 1;
    let everything_there = |why: &str| {
        for p in extras
            .iter()
            .chain([&dst_root.join("outside"), &dst.join("flat/notes.keep")])
        {
            assert!(p.exists(), "{} deleted: {why}", p.display());
        }
    };
    let refused = |st: &serde_yaml::Value, o: &Output, what: &str, verdict: &str| {
        let why = format!("{what}: {}\n{st:?}", text(o));
        assert_eq!(o.status.code(), Some(1), "{why}");
        assert_eq!(st["phase"].as_str(), Some("Failed"), "{why}");
        let message = st["message"].as_str().unwrap();
        assert!(message.contains(verdict), "{why}");
        assert!(!message.contains("destination identical"), "{why}");
        assert_eq!(st["mirror"]["deleted"].as_u64(), Some(0), "{why}");
        assert!(
            st["mirror"]["refused"].as_str().unwrap().contains(what),
            "{why}"
        );
        everything_there(&why);
    };

    // Over the limit: nothing at all.
    let o = run_cmd(
        &y(job("  run: 1\n  mode: Mirror\n  maxDeletes: 26\n")),
        &state,
    )
    .output()
    .unwrap();
    let st = read_status(&state);
    refused(&st, &o, "more than maxDeletes", "the mirror refused");
    assert_eq!(st["mirror"]["found"].as_u64(), Some(weight), "{st:?}");
    assert_eq!(
        st["verification"]["extraneous"].as_u64(),
        Some(extras.len() as u64),
        "{st:?}"
    );

    // A dry run says beforehand what a mirror would delete, and that this limit lets it.
    let o = run_cmd(
        &y(job(
            "  run: 1\n  mode: Mirror\n  maxDeletes: 100\n  dryRun: true\n",
        )),
        &state,
    )
    .output()
    .unwrap();
    let st = read_status(&state);
    assert_eq!(o.status.code(), Some(0), "{}\n{st:?}", text(&o));
    assert!(
        st["message"].as_str().unwrap().contains(&format!(
            "a Mirror pass would delete {weight} entries, within maxDeletes: 100 entries"
        )),
        "{st:?}"
    );
    everything_there("the dry run");

    // A failed entry (a changed file whose source cannot be opened) under FailJob: nothing.
    fs::write(src.join("flat/img0001"), b"changed").unwrap();
    let o = run_cmd(
        &y(job(
            "  run: 2\n  mode: Mirror\n  maxDeletes: 100\n  failurePolicy: {action: FailJob}\n",
        )),
        &state,
    )
    .env("VFXT_INGEST_FAULTS", "open-source@1=eacces")
    .output()
    .unwrap();
    refused(
        &read_status(&state),
        &o,
        "beyond the failure policy",
        "the failure policy is FailJob",
    );

    // Within the limit and without failures: exactly the extras go.
    let o = run_cmd(
        &y(job("  run: 3\n  mode: Mirror\n  maxDeletes: \"5%\"\n")),
        &state,
    )
    .output()
    .unwrap();
    let st = read_status(&state);
    let why = format!("{}\n{st:?}", text(&o));
    assert_eq!(o.status.code(), Some(0), "{why}");
    assert_eq!(st["phase"].as_str(), Some("Succeeded"), "{why}");
    assert_eq!(st["mirror"]["found"].as_u64(), Some(weight), "{why}");
    assert_eq!(st["mirror"]["deleted"].as_u64(), Some(weight), "{why}");
    assert!(st["mirror"]["refused"].is_null(), "{why}");
    let message = st["message"].as_str().unwrap();
    assert!(
        message.contains("destination identical")
            && message.contains(&format!("{weight} entries only in the destination deleted")),
        "{why}"
    );
    for p in &extras {
        assert!(!p.exists(), "{} left: {why}", p.display());
    }
    assert!(dst_root.join("outside").exists(), "{why}");
    // Once the filter's file is gone (and its directory's mtime put back), the rest is the source.
    let flat_mtime = fs::metadata(dst.join("flat")).unwrap().modified().unwrap();
    fs::remove_file(dst.join("flat/notes.keep")).unwrap();
    fs::File::open(dst.join("flat"))
        .unwrap()
        .set_modified(flat_mtime)
        .unwrap();
    assert_identical(&src, &dst);
    let modes: Vec<&str> = st["passes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|p| p["mode"].as_str())
        .collect();
    assert_eq!(
        modes,
        ["Copy", "Mirror", "DryRun", "Mirror", "Mirror"],
        "{why}"
    );
    assert_eq!(st["passes"][4]["deleted"].as_u64(), Some(weight), "{why}");

    // A Copy job with a limit is a mistake worth naming.
    let o = run_cmd(&y(job("  maxDeletes: 10\n")), &t.path().join("state2"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("spec.maxDeletes") && text(&o).contains("mode: Mirror"),
        "{}",
        text(&o)
    );
}

/// Each pass keeps its audit trail in its own directory (`logs/run-N`): a record per entry its
/// verify pass compared, with type, size and mtime (and the digest under Checksum). `report
/// --against` says what changed between two passes; `--csv` exports a trail.
#[test]
fn each_pass_keeps_an_audit_trail_and_two_passes_compare() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = src_and_dst(t.path(), 4, 10);
    let state = t.path().join("state");
    let job = |extra: &str| {
        job_yaml(
            t.path(),
            &src,
            &[dst.clone(), dst.clone()],
            &format!("  workers: 2\n  shards: {{target: 8}}\n{extra}"),
        )
    };
    let o = run_cmd(&job(""), &state).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    fs::write(src.join("flat/new"), b"new").unwrap();
    fs::remove_file(src.join("flat/img0003")).unwrap();
    fs::write(src.join("proj00/run0/f000.dat"), b"rewritten").unwrap();
    let o = run_cmd(
        &job("  run: 1\n  mode: Mirror\n  verify: {mode: Checksum}\n"),
        &state,
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let report = |args: &[&str]| {
        let o = bin().arg("report").args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let (r0, r1) = (state.join("logs/run-0"), state.join("logs/run-1"));
    let (r0, r1) = (r0.to_str().unwrap(), r1.to_str().unwrap());
    let diff: serde_json::Value =
        serde_json::from_str(&report(&[r1, "--against", r0, "--json"])).unwrap();
    assert_eq!(diff["added"], serde_json::json!(["flat/new"]), "{diff}");
    assert_eq!(
        diff["removed"],
        serde_json::json!(["flat/img0003"]),
        "{diff}"
    );
    let changed: Vec<&str> = diff["changed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["path"].as_str())
        .collect();
    // The rewritten file, and the directories whose entries changed (their mtime).
    assert!(changed.contains(&"proj00/run0/f000.dat"), "{diff}");
    assert!(changed.contains(&"flat"), "{diff}");
    assert!(
        changed
            .iter()
            .all(|p| ["proj00/run0/f000.dat", "flat", "proj00/run0"].contains(p)),
        "{diff}"
    );

    // The later trail as CSV: one line per entry compared (every path of the source, hard links
    // by each path), each with its type, size and mtime; files with their digest.
    let csv = report(&[r1, "--csv"]);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("path,outcome,op,type,size,mtime,digest,error")
    );
    let rows: Vec<Vec<&str>> = lines
        .map(|l| l.split(',').collect())
        .filter(|r: &Vec<&str>| r[1] == "matched")
        .collect();
    // A hard link's paths are checked where each scope meets them: once or twice each.
    let paths: std::collections::BTreeSet<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(paths.len() as u64, walkdir_count(&src), "{csv}");
    for r in &rows {
        assert!(!r[3].is_empty() && !r[5].is_empty(), "{r:?}");
        if r[3] == "f" {
            assert_eq!(r[6].len(), 64, "a BLAKE3 digest: {r:?}");
        }
    }
}

/// Entries below `root`, itself included.
fn walkdir_count(root: &Path) -> u64 {
    let mut n = 1;
    for e in fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        n += if e.file_type().unwrap().is_dir() {
            walkdir_count(&e.path())
        } else {
            1
        };
    }
    n
}

/// `verify.scope: Changed` through `run`: the copy workers say when they began writing, the
/// verify workers read the content only of files written since (here with no margin), and the
/// verdict says the rest were compared by metadata. A file this pass rewrote is always read.
#[test]
fn a_changed_scope_verify_reads_what_the_pass_wrote() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = src_and_dst(t.path(), 4, 10);
    let state = t.path().join("state");
    let job = |extra: &str| {
        job_yaml(
            t.path(),
            &src,
            &[dst.clone(), dst.clone()],
            &format!(
                "  workers: 2\n  shards: {{target: 8}}\n  preserve: {{owner: false}}\n{extra}"
            ),
        )
    };
    let o = run_cmd(&job(""), &state).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Scope Changed needs Checksum: refused naming the field.
    let o = run_cmd(&job("  run: 1\n  verify: {scope: Changed}\n"), &state)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("spec.verify.scope"), "{}", text(&o));

    fs::write(src.join("proj02/run2/f003.dat"), b"rewritten by a user").unwrap();
    let o = run_cmd(
        &job("  run: 1\n  verify: {mode: Checksum, scope: Changed}\n"),
        &state,
    )
    .env("VFXT_INGEST_CHANGED_SCOPE_MARGIN", "0")
    .output()
    .unwrap();
    let st = read_status(&state);
    let why = format!("{}\n{st:?}", text(&o));
    assert_eq!(o.status.code(), Some(0), "{why}");
    // The second pass found everything but the rewritten file up to date, and says so.
    let pass = &st["passes"][1];
    let (files, up_to_date) = (pass["files"].as_u64(), pass["upToDate"].as_u64());
    assert_eq!(
        (pass["run"].as_i64(), up_to_date.map(|u| u + 1)),
        (Some(1), files),
        "{why}"
    );
    assert_eq!(st["progress"]["upToDate"].as_u64(), up_to_date, "{why}");
    let said = format!("{} of them found already up to date", up_to_date.unwrap());
    assert!(st["message"].as_str().unwrap().contains(&said), "{why}");
    assert!(
        fs::read_to_string(state.join("write-started-run-1"))
            .unwrap()
            .trim()
            .parse::<i64>()
            .is_ok(),
        "{why}"
    );
    // Every matched file of the trail was either read (a digest) or counted as not written.
    let trail = bin()
        .args(["report", "--jsonl"])
        .arg(state.join("logs/run-1"))
        .output()
        .unwrap();
    let entries: Vec<serde_json::Value> = String::from_utf8_lossy(&trail.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let files = |digest: bool| {
        entries
            .iter()
            .filter(|e| e["outcome"] == "matched" && e["meta"]["kind"] == "f")
            .filter(|e| e["digest"].is_string() == digest)
            .map(|e| e["path"].as_str().unwrap().to_owned())
            // A hard link's paths are checked where each scope meets them, each counted.
            .collect::<Vec<_>>()
    };
    let (read, unread) = (files(true), files(false));
    assert!(
        read.iter().any(|p| p == "proj02/run2/f003.dat"),
        "{why}\n{read:?}"
    );
    let unchanged = st["verification"]["contentUnchanged"].as_u64().unwrap_or(0);
    assert_eq!(unread.len() as u64, unchanged, "{why}");
    let message = st["message"].as_str().unwrap();
    assert!(message.contains("destination identical"), "{why}");
    assert_eq!(
        message.contains("compared by metadata (verify.scope Changed)"),
        unchanged > 0,
        "{why}"
    );
}

/// `spec.limits` can change while `run` runs: the job file is read again, and each worker gets
/// its share of what it says now. A run limited to 10 entries a second (300 files: half a
/// minute) finishes soon after its limit is removed from the file.
#[test]
fn limits_edited_in_the_job_file_apply_to_the_running_workers() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let dst = t.path().join("dst");
    for d in 0..3 {
        fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for f in 0..100 {
            fs::write(src.join(format!("d{d}/f{f}")), b"x").unwrap();
        }
    }
    fs::create_dir_all(&dst).unwrap();
    let state = t.path().join("state");
    let f = job_yaml(
        t.path(),
        &src,
        std::slice::from_ref(&dst),
        "  workers: 2\n  shards: {target: 4}\n  limits: {filesPerSecond: 10}\n",
    );
    let mut child = run_cmd(&f, &state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Copying has begun under the limit.
    let copied = || {
        fs::read_dir(&dst)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|d| fs::read_dir(d.path()).map_or(0, Iterator::count))
                    .sum::<usize>()
            })
            .unwrap_or(0)
    };
    let t0 = Instant::now();
    while copied() < 5 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "nothing copied in a minute"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Still running (under the limit the rest takes half a minute): the edit is what ends it.
    assert!(
        child.try_wait().unwrap().is_none(),
        "finished before the limit was removed: the limit did not hold"
    );
    fs::write(
        &f,
        fs::read_to_string(&f)
            .unwrap()
            .replace("  limits: {filesPerSecond: 10}\n", ""),
    )
    .unwrap();
    // Under the old limit what is left takes about 30 s more; without it, a moment.
    let t1 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t1.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!(
                "still running 20 s after the limit was removed ({} of 300 copied)",
                copied()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(0), "{}", text(&out));
    assert_identical(&src, &dst);
}

/// A destination that stops answering at a step outside the copy's walk is found the same way:
/// in a mirror's deletions (its first rmdir) and in a worker's destination probe (its first
/// unlink, the probe file's removal). Each time the worker says which destination and exits 4,
/// its slot starts again without it, and the run ends Succeeded and identical, the status naming
/// the hung destination.
#[test]
fn a_destination_that_stops_answering_in_a_mirrors_deletions_or_its_probe_is_given_up() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = src_and_dst(t.path(), 4, 10);
    let f = job_yaml(t.path(), &src, std::slice::from_ref(&dst), "");
    let o = run_cmd(&f, &t.path().join("state-0")).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // What the mirror is to delete: a directory with files in it.
    fs::create_dir_all(dst.join("proj01/old/deeper")).unwrap();
    for p in ["proj01/old/deeper/x", "proj01/old/y"] {
        fs::write(dst.join(p), p).unwrap();
    }
    for (op, run) in [("rmdir", 1), ("unlink", 2)] {
        // The same export as `dst`, through a node that stops answering at its first `op`; it
        // comes first, so the worker's first destination (probe, deletions) is the hung one.
        let hung = t.path().join(format!("hung-at-{op}"));
        let node = hanging_node(
            &dst,
            &hung,
            ingest_latencyfs::NodeConfig {
                stop_answering_on: Some(op),
                ..Default::default()
            },
        );
        let f = job_yaml(
            t.path(),
            &src,
            &[hung.clone(), dst.clone()],
            &format!(
                "  run: {run}\n  workers: 1\n  mode: Mirror\n  maxDeletes: 100\n  stallTimeoutSeconds: 5\n"
            ),
        );
        let state = t.path().join(format!("state-{run}"));
        let o = run_cmd(&f, &state).output().unwrap();
        let status = read_status(&state);
        let why = format!("{op}: {}\n{status:?}", text(&o));
        assert_eq!(o.status.code(), Some(0), "{why}");
        assert!(
            node.stats().unanswered >= 1,
            "never stopped answering: {why}"
        );
        drop(node);
        assert_identical(&src, &dst);
        assert_eq!(status["phase"].as_str(), Some("Succeeded"), "{why}");
        let hung_name = hung.display().to_string();
        let gone = status["servers"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|s| s["server"].as_str() == Some(hung_name.as_str()))
            .unwrap();
        assert_eq!(gone["state"].as_str(), Some("Unresponsive"), "{why}");
        if op == "rmdir" {
            // The stopped worker deleted a file or two (as the listing's order had it), then its
            // rmdir hung; it never told. The shard's next attempt deleted the rest and found
            // those gone: each of the four is counted once.
            let m = &status["mirror"];
            let (deleted, gone) = (m["deleted"].as_u64().unwrap(), m["gone"].as_u64().unwrap());
            assert_eq!(m["found"].as_u64(), Some(4), "{why}");
            assert!(gone >= 1 && deleted + gone == 4, "{why}");
            let message = status["message"].as_str().unwrap();
            assert!(
                message.contains(&format!(
                    "{deleted} entries only in the destination deleted (Mirror), {gone} entr"
                )) && message.contains("more gone before the prune came to them"),
                "{why}"
            );
            let summary = String::from_utf8_lossy(&o.stdout);
            assert!(
                summary.contains(&format!(
                    "mirror: 4 entries found only in the destination, {deleted} deleted, {gone} gone before the prune came to them"
                )),
                "{why}"
            );
        }
    }
}
