//! `e2e-slow-nodes` as the operator e2e test uses it: several mounts over one directory (one export through
//! several node IPs), each operation slowed down, all unmounted on SIGTERM. Needs /dev/fuse and fusermount3
//! (root in CI and here), like the e2e tests themselves.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn mounted(p: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let p = p.to_str().unwrap();
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(p))
}

fn start(backing: &Path, latency_ms: &str, mountpoints: &[&Path]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_e2e-slow-nodes"))
        .arg("--backing")
        .arg(backing)
        .args(["--latency-ms", latency_ms])
        .args(mountpoints)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "e2e-slow-nodes did not report ready");
    child
}

#[test]
fn nodes_share_one_directory_are_slow_and_unmount_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let backing = tmp.path().join("backing");
    std::fs::create_dir(&backing).unwrap();
    let (n1, n2) = (tmp.path().join("node1"), tmp.path().join("node2"));
    let mut child = start(&backing, "20", &[&n1, &n2]);
    assert!(mounted(&n1) && mounted(&n2), "both nodes are mount points");

    // Written through one node, seen in the backing directory and through the other node.
    let t0 = Instant::now();
    for i in 0..5 {
        std::fs::write(n1.join(format!("f{i}")), format!("data {i}")).unwrap();
    }
    let took = t0.elapsed();
    assert_eq!(
        std::fs::read_to_string(backing.join("f3")).unwrap(),
        "data 3"
    );
    assert_eq!(std::fs::read_to_string(n2.join("f4")).unwrap(), "data 4");
    // Each file write is several operations (lookup, create, write, flush, release) at 20 ms each.
    assert!(
        took >= Duration::from_millis(5 * 3 * 20),
        "5 files written in {took:?}: not slowed down"
    );

    // SIGTERM unmounts both nodes and exits; the data stays in the backing directory.
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "exit status after SIGTERM");
    assert!(
        !mounted(&n1) && !mounted(&n2),
        "nodes still mounted after SIGTERM"
    );
    assert_eq!(std::fs::read_dir(&backing).unwrap().count(), 5);
}

#[test]
fn a_bad_latency_is_refused_naming_the_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_e2e-slow-nodes"))
        .args([
            "--backing",
            "/nonexistent",
            "--latency-ms=-1",
            "/nonexistent/m",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--latency-ms"), "stderr: {err}");
}
