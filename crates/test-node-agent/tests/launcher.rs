//! The container launcher (`test-node-agent __exec`) on the real kernel:
//! bind mounts appear at their targets inside the private mount namespace,
//! read-only ones refuse writes, and nothing leaks to the caller's namespace.

use std::process::Command;

fn launcher() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_test-node-agent"));
    c.arg("__exec");
    c
}

#[test]
fn binds_volumes_privately_and_honours_read_only() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst, out, mnt_src, mnt_out) = (
        d.path().join("src"),
        d.path().join("dst"),
        d.path().join("out"),
        d.path().join("mnt/src"),
        d.path().join("mnt/out"),
    );
    for p in [&src, &dst, &out] {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(src.join("f"), "hello").unwrap();
    let script = format!(
        "cat {s}/f > {o}/copy && if touch {s}/new 2>/dev/null; then exit 9; fi",
        s = mnt_src.display(),
        o = mnt_out.display()
    );
    let res = launcher()
        .args([
            "--bind-ro",
            &format!("{}={}", src.display(), mnt_src.display()),
        ])
        .args([
            "--bind",
            &format!("{}={}", out.display(), mnt_out.display()),
        ])
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    if !rustix::process::geteuid().is_root() {
        // Without CAP_SYS_ADMIN the launcher must say why, not run unmounted.
        assert_eq!(res.status.code(), Some(127), "{stderr}");
        assert!(stderr.contains("CAP_SYS_ADMIN"), "{stderr}");
        return;
    }
    assert!(
        res.status.success(),
        "launcher failed: {:?} {stderr}",
        res.status
    );
    assert_eq!(std::fs::read_to_string(out.join("copy")).unwrap(), "hello");
    assert!(
        !src.join("new").exists(),
        "read-only bind was written through"
    );
    // The mount points exist (created by the launcher) but the mounts stayed private.
    assert!(mnt_src.is_dir());
    assert_eq!(std::fs::read_dir(&mnt_src).unwrap().count(), 0);
}

#[test]
fn sources_and_program_hidden_by_an_earlier_mount_still_work() {
    if !rustix::process::geteuid().is_root() {
        // Covered by the CAP_SYS_ADMIN check above; nothing to mount here.
        assert!(launcher().args(["--", "true"]).status().unwrap().success());
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    // A pod dir under /tmp with an emptyDir mounted at /tmp: the volume
    // sources and an --exec-override binary there are shadowed once /tmp is.
    let (shadowed, empty, out, mnt) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let src = shadowed.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), "hidden hello").unwrap();
    let prog = shadowed.path().join("prog");
    std::fs::write(&prog, "#!/bin/sh\ncat \"$1/f\" > \"$2/copy\"\n").unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let target = mnt.path().join("data");
    let res = launcher()
        .args([
            "--bind",
            &format!("{}={}", empty.path().display(), shadowed.path().display()),
        ])
        .args([
            "--bind-ro",
            &format!("{}={}", src.display(), target.display()),
        ])
        .arg("--")
        .arg(&prog)
        .arg(&target)
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{:?} {}",
        res.status,
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("copy")).unwrap(),
        "hidden hello"
    );
}

#[test]
fn missing_program_fails_with_127_and_says_so() {
    let res = launcher()
        .args(["--", "/nonexistent/program"])
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(127));
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(
        stderr.contains("/nonexistent/program") && stderr.contains("PATH"),
        "{stderr}"
    );
}

#[test]
fn bad_arguments_are_rejected_with_the_reason() {
    let res = launcher()
        .args(["--bind", "relative=/x", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&res.stderr).contains("expected /SOURCE=/TARGET"));
}
