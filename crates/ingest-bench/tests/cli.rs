//! The benchmark command end to end on a tiny dataset: real `cp -a` as the peer and, in place
//! of vfxt-ingest, a script that copies without keeping metadata, which must be caught.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vfxt-bench"))
}

#[test]
fn a_lossy_copier_is_flagged_and_a_faithful_one_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("lossy-copier");
    // Same argument shape as `vfxt-ingest copy SRC DEST --json`; plain cp -R keeps no times.
    let script = "#!/bin/sh\ncp -R \"$2\"/. \"$3\" && echo '{\"copy\": {\"filesCopied\": 60}}'\n";
    std::fs::write(&fake, script).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let json = tmp.path().join("report.json");
    let out = bench()
        .args([
            "copy",
            "--dataset",
            "demo",
            "--scale",
            "0.02",
            "--tools",
            "vfxt,cp",
            "--no-drop-caches",
            "--no-install",
        ])
        .arg("--work")
        .arg(tmp.path().join("work"))
        .arg("--json")
        .arg(&json)
        .arg("--vfxt")
        .arg(&fake)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "vfxt row not identical => exit 1\n{stdout}"
    );
    assert!(stdout.contains("vfxt-ingest copy (!)"), "{stdout}");
    assert!(
        stdout.contains("page cache dropped before each run: no (--no-drop-caches)"),
        "{stdout}"
    );

    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let d = &r["datasets"][0];
    assert_eq!(d["name"], "demo");
    assert_eq!(d["summary"]["files"], 60);
    let runs = d["runs"].as_array().unwrap();
    let (v, cp) = (&runs[0], &runs[1]);
    assert_eq!(v["tool"], "vfxt");
    assert_eq!(v["identical"], false);
    assert_eq!(v["flagged"], true);
    assert_eq!(v["first_differences"][0]["aspect"], "dir_mtime", "{v}");
    assert_eq!(
        v["tool_summary"]["copy"]["filesCopied"], 60,
        "the fake's --json output is kept: {v}"
    );
    assert!(
        v["differences"].as_u64().unwrap() > 60,
        "every file's mtime: {v}"
    );
    assert_eq!(cp["tool"], "cp");
    assert_eq!(cp["identical"], true, "{cp}");
    assert_eq!(cp["flagged"], false);
    assert!(cp["wall_s"].as_f64().unwrap() > 0.0);
    assert!(cp["max_rss_mib"].as_f64().unwrap() > 0.0);
    assert!(
        (cp["files_per_s"].as_f64().unwrap() - 60.0 / cp["wall_s"].as_f64().unwrap()).abs() < 1e-6
    );
    assert!(cp["vfxt_speedup"].as_f64().is_some());
    // Copies are removed after the check; the dataset stays cached.
    assert!(!tmp.path().join("work/out/cp").exists());
    assert!(
        std::fs::read_dir(tmp.path().join("work/datasets"))
            .unwrap()
            .count()
            == 2
    );
}

#[test]
fn missing_vfxt_binary_is_reported_not_available() {
    let tmp = tempfile::tempdir().unwrap();
    let out = bench()
        .args([
            "copy",
            "--dataset",
            "demo",
            "--scale",
            "0.01",
            "--tools",
            "vfxt",
            "--no-drop-caches",
            "--no-install",
        ])
        .arg("--work")
        .arg(tmp.path())
        .args(["--vfxt", "/nonexistent/vfxt-ingest"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(
            "vfxt-ingest copy               not available: /nonexistent/vfxt-ingest not found"
        ),
        "{stdout}"
    );
}

#[test]
fn bad_arguments_exit_2_naming_the_argument() {
    for (args, msg) in [
        (
            &["--tools", "cp,robocopy"][..],
            "--tools: unknown tool \"robocopy\"",
        ),
        (
            &["--dataset", "huge"][..],
            "--dataset: unknown dataset \"huge\"",
        ),
        (&["--scale", "0"][..], "--scale: 0 is not a number above 0"),
    ] {
        let out = bench()
            .arg("copy")
            .args(args)
            .args(["--work", "/tmp"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(msg), "{err}");
    }
}

#[test]
fn launcher_reports_the_tools_own_peak_rss_and_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let usage = tmp.path().join("usage");
    let st = bench()
        .args(["__measure"])
        .arg(&usage)
        .args([
            "--",
            "sh",
            "-c",
            "dd if=/dev/zero of=/dev/null bs=32M count=1 2>/dev/null; exit 4",
        ])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(4));
    let text = std::fs::read_to_string(&usage).unwrap();
    let f: Vec<&str> = text.split_whitespace().collect();
    let rss: u64 = f[2].parse().unwrap();
    assert!(
        (32 * 1024..48 * 1024).contains(&rss),
        "peak RSS {rss} KiB: dd's 32 MiB plus a small floor"
    );
    assert_eq!(&f[3..], ["exit", "4"]);
    // The floor: a trivial command reports only a few MiB.
    bench()
        .args(["__measure"])
        .arg(&usage)
        .args(["--", "true"])
        .status()
        .unwrap();
    let rss: u64 = std::fs::read_to_string(&usage)
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(rss < 8 * 1024, "floor {rss} KiB");
}

#[test]
fn interrupting_the_benchmark_stops_the_running_tool() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("slow-copier");
    let marker = tmp.path().join("still-running");
    // Sleeps, then would leave a marker: it must be killed with the benchmark.
    let script = format!("#!/bin/sh\nsleep 3\ntouch {}\n", marker.display());
    std::fs::write(&fake, script).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = bench()
        .args([
            "copy",
            "--dataset",
            "demo",
            "--scale",
            "0.01",
            "--tools",
            "vfxt",
            "--no-drop-caches",
            "--no-install",
        ])
        .arg("--work")
        .arg(tmp.path().join("work"))
        .arg("--vfxt")
        .arg(&fake)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(130));
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(!marker.exists(), "the tool outlived the benchmark");
}

/// A stand-in for vfxt-ingest's report-only verify: `copy [--verify-only] --verify MODE SRC DST
/// --json [--report FILE]`. With `checksum` it compares every file with cmp, names each that
/// differs in the report and exits 1; `metadata` reads nothing. The blind variant finds nothing
/// and does not offer --verify-only, so it is run as the stand-in (`copy --verify X`).
fn fake_verifier(dir: &std::path::Path, blind: bool) -> std::path::PathBuf {
    let path = dir.join(if blind {
        "blind-verifier"
    } else {
        "cmp-verifier"
    });
    let script = format!(
        r#"#!/bin/sh
set -u
if [ "${{2:-}}" = --help ]; then {help}; exit 0; fi
shift
[ "$1" = --verify-only ] && shift
mode=$2 src=$3 dst=$4
shift 5
report=$(mktemp) own=1
[ "${{1:-}}" = --report ] && report=$2 own=0
: > "$report"
if [ "$mode" = checksum ] && [ {blind} = 0 ]; then
  cd "$src" && find . -type f | sed 's|^\./||' | while IFS= read -r f; do
    cmp -s "$f" "$dst/$f" || echo "{{\"path\":\"$f\",\"outcome\":\"mismatched\"}}"
  done > "$report"
fi
bad=$(wc -l < "$report")
[ $own = 1 ] && rm -f "$report"
echo "{{\"copy\":{{\"filesCopied\":0}},\"verify\":{{\"checked\":1,\"mismatched\":$bad,\"missing\":0,\"errors\":0}}}}"
[ "$bad" -eq 0 ]
"#,
        help = if blind {
            "echo plain"
        } else {
            "echo '  --verify-only'"
        },
        blind = u8::from(blind),
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Runs `vfxt-bench verify` at a tiny scale and returns its exit code, stdout and JSON report.
/// Peers are installed as the copy benchmark does (as root, unless it cannot).
fn run_verify(
    tmp: &std::path::Path,
    dataset: &str,
    vfxt: &std::path::Path,
    extra: &[&std::ffi::OsStr],
) -> (Option<i32>, String, serde_json::Value) {
    let json = tmp.join("verify.json");
    let out = bench()
        .args([
            "verify",
            "--dataset",
            dataset,
            "--scale",
            "0.01",
            "--no-drop-caches",
        ])
        .arg("--work")
        .arg(tmp.join("work"))
        .arg("--json")
        .arg(&json)
        .arg("--vfxt")
        .arg(vfxt)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = std::fs::read(&json)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("no JSON report\n{stdout}\n{stderr}"));
    (out.status.code(), stdout, report)
}

/// Every row is there; each peer either ran, called the copy identical and found the flipped
/// byte, or is "not available" (the benchmark's policy for a peer it could not install).
fn check_peer_rows(runs: &[serde_json::Value], stdout: &str) {
    for tool in ["rclone", "rsync"] {
        let r = runs
            .iter()
            .find(|r| r["tool"] == tool)
            .unwrap_or_else(|| panic!("no {tool} row\n{stdout}"));
        if r["available"] == false {
            let why = r["unavailable"].as_str().unwrap();
            assert!(why.starts_with("not available: "), "{r}");
            eprintln!("{tool}: {why}");
            continue;
        }
        assert_eq!(r["clean_on_identical"], true, "{r}\n{stdout}");
        assert_eq!(r["detection"]["expected"], true, "{r}");
        assert_eq!(r["detection"]["detected"], true, "{r}\n{stdout}");
        assert_eq!(r["flagged"], false, "{r}");
        assert!(r["mib_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["vs_vfxt"].as_f64().is_some(), "{r}");
    }
}

#[test]
fn verify_benchmark_times_each_checker_and_flags_one_that_misses_a_flipped_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let good = fake_verifier(tmp.path(), false);
    let blind = fake_verifier(tmp.path(), true);
    let (code, stdout, r) = run_verify(
        tmp.path(),
        "demo",
        &good,
        &["--baseline".as_ref(), blind.as_os_str()],
    );
    // Only a flagged vfxt-ingest checksum row fails the run; the blind baseline is flagged.
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(r["vfxt"]["mode"], "verify-only");
    assert_eq!(r["baseline"]["mode"], "stand-in");
    let d = &r["datasets"][0];
    assert_eq!(d["reference_copy"]["identical"], true);
    assert_eq!(d["unchanged_by_timed_runs"], true);
    let flipped = d["flipped"]["path"].as_str().unwrap();
    let runs = d["runs"].as_array().unwrap();
    let names: Vec<&str> = runs.iter().map(|r| r["tool"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "vfxt-checksum",
            "vfxt-metadata",
            "base-checksum",
            "base-metadata",
            "rclone",
            "rsync"
        ]
    );
    let row = |t: &str| runs.iter().find(|r| r["tool"] == t).unwrap();
    let v = row("vfxt-checksum");
    assert_eq!(v["label"], "vfxt-ingest --verify-only checksum");
    assert_eq!(v["clean_on_identical"], true, "{v}");
    assert_eq!(v["detection"]["detected"], true, "{v}");
    assert!(
        v["detection"]["evidence"]
            .as_str()
            .unwrap()
            .contains("exit 1"),
        "{v}"
    );
    assert!(
        v["detection"]["command"]
            .as_str()
            .unwrap()
            .contains("--verify-only --verify checksum"),
        "{v}"
    );
    assert_eq!(v["vs_vfxt"], 1.0);
    assert_eq!(v["flagged"], false);
    // Metadata verify is not expected to see a byte whose size and times are kept.
    let m = row("vfxt-metadata");
    assert_eq!(m["detection"]["expected"], false, "{m}");
    assert_eq!(m["detection"]["detected"], false, "{m}");
    assert_eq!(m["flagged"], false, "{m}");
    let b = row("base-checksum");
    assert_eq!(
        b["label"],
        "vfxt-ingest (baseline) copy --verify checksum (stand-in)"
    );
    assert_eq!(b["clean_on_identical"], true, "{b}");
    assert_eq!(b["detection"]["detected"], false, "{b}");
    assert_eq!(b["flagged"], true, "{b}");
    assert!(
        b["flag_reasons"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("missed the flipped byte in {flipped}")),
        "{b}"
    );
    assert!(
        stdout.contains("copy --verify checksum (stand-in) (!)"),
        "{stdout}"
    );
    assert!(stdout.contains("MISSED"), "{stdout}");
    check_peer_rows(runs, &stdout);
    // The copy is removed afterwards.
    assert!(!tmp.path().join("work/out/verify").exists());
}

#[test]
fn verify_benchmark_with_the_real_engine_at_a_tiny_scale() {
    // cargo test --workspace builds vfxt-ingest beside vfxt-bench.
    let engine =
        std::path::Path::new(env!("CARGO_BIN_EXE_vfxt-bench")).with_file_name("vfxt-ingest");
    if !engine.exists() {
        eprintln!(
            "skipped: {} is not built (cargo build -p vfxt-ingest, or cargo test --workspace)",
            engine.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (code, stdout, r) = run_verify(tmp.path(), "mixed", &engine, &[]);
    assert_eq!(code, Some(0), "{stdout}");
    let d = &r["datasets"][0];
    assert_eq!(d["name"], "mixed");
    assert_eq!(d["unchanged_by_timed_runs"], true, "{stdout}");
    let runs = d["runs"].as_array().unwrap();
    let names: Vec<&str> = runs.iter().map(|r| r["tool"].as_str().unwrap()).collect();
    assert_eq!(names, ["vfxt-checksum", "vfxt-metadata", "rclone", "rsync"]);
    for t in ["vfxt-checksum", "vfxt-metadata"] {
        let v = runs.iter().find(|r| r["tool"] == t).unwrap();
        assert_eq!(v["available"], true, "{v}");
        assert_eq!(v["clean_on_identical"], true, "{v}\n{stdout}");
        assert_eq!(v["flagged"], false, "{v}\n{stdout}");
        assert!(v["tool_summary"]["verify"].is_object(), "{v}");
    }
    let v = &runs[0];
    assert_eq!(v["detection"]["detected"], true, "{v}\n{stdout}");
    assert_eq!(runs[1]["detection"]["expected"], false);
    check_peer_rows(runs, &stdout);
}
