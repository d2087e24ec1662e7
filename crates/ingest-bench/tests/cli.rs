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
