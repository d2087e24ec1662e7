//! Unreadable subtrees are counted, reported and skipped; the walk goes on.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use ingest_plan::scan::{ScanOptions, scan};

#[test]
fn unreadable_directory_is_reported_and_the_rest_is_scanned() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    for d in ["a", "b", "b/locked", "c"] {
        fs::create_dir(root.join(d)).unwrap();
    }
    for f in ["a/1", "b/2", "b/locked/hidden", "c/3", "c/4"] {
        fs::write(root.join(f), b"data").unwrap();
    }
    fs::set_permissions(root.join("b/locked"), fs::Permissions::from_mode(0o000)).unwrap();

    // Root reads everything whatever the mode; scan from a thread whose credentials are those of
    // `nobody` (set per thread with the raw syscall; the scan's threads inherit them).
    let root_path = root.to_path_buf();
    let s = std::thread::spawn(move || {
        if rustix::process::geteuid().is_root() {
            // SAFETY: a raw setresuid changes only this thread's credentials, which is the point.
            let rc = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
            assert_eq!(rc, 0, "setresuid");
        }
        scan(
            &root_path,
            &ScanOptions {
                threads: 3,
                ..ScanOptions::default()
            },
        )
        .unwrap()
    })
    .join()
    .unwrap();

    assert_eq!(s.unreadable, 1);
    assert_eq!(s.error_count, 1);
    assert_eq!(s.errors.len(), 1);
    assert_eq!(s.errors[0].path.to_escaped(), "b/locked");
    assert!(
        s.errors[0].error.contains("denied"),
        "{}",
        s.errors[0].error
    );
    assert_eq!(s.root().tree.files, 4, "the readable files are all counted");
    assert_eq!(
        s.root().tree.dirs,
        5,
        "the unreadable directory is still a directory of the tree"
    );
}

#[test]
fn missing_root_is_an_error_naming_the_path() {
    let e = scan(
        std::path::Path::new("/nonexistent/src"),
        &ScanOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/src"), "{e}");
    let e = scan(
        std::path::Path::new("/"),
        &ScanOptions {
            threads: 0,
            ..ScanOptions::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "scan threads must be at least 1 (got 0)");
}
