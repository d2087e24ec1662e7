//! Real FUSE mounts over temp dirs (needs /dev/fuse, root, and fusermount3 from Debian's fuse3).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::sync::Barrier;
use std::time::Duration;

use ingest_latencyfs::{Node, NodeConfig};
use ingest_testkit::{CompareOptions, Dataset, GenOptions, compare, generate};

fn config(capacity: usize) -> NodeConfig {
    NodeConfig {
        meta_latency: Duration::from_millis(2),
        data_latency: Duration::from_millis(1),
        capacity,
        ttl: Duration::from_secs(1),
        stop_answering_at: None,
        stop_answering_on: None,
    }
}

fn set_times(p: &Path, sec: i64, nsec: i64) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
    ];
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat {}", p.display());
}

#[test]
fn file_operations_pass_through_and_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let backing = tmp.path().join("backing");
    fs::create_dir(&backing).unwrap();
    let node = Node::mount(&backing, &tmp.path().join("node0"), config(4)).unwrap();
    let m = node.mountpoint().to_path_buf();

    fs::create_dir(m.join("d")).unwrap();
    fs::write(m.join("d/f"), b"hello through fuse").unwrap();
    fs::set_permissions(m.join("d/f"), fs::Permissions::from_mode(0o640)).unwrap();
    set_times(&m.join("d/f"), 1_600_000_000, 123_456_789);
    symlink("f", m.join("d/link")).unwrap();
    fs::hard_link(m.join("d/f"), m.join("d/hard")).unwrap();
    let fifo = std::ffi::CString::new(m.join("d/fifo").as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    fs::write(m.join("d/gone"), b"x").unwrap();
    fs::rename(m.join("d/gone"), m.join("d/moved")).unwrap();
    fs::remove_file(m.join("d/moved")).unwrap();
    fs::create_dir(m.join("d/sub")).unwrap();
    fs::create_dir(m.join("empty")).unwrap();
    fs::remove_dir(m.join("empty")).unwrap();
    fs::rename(m.join("d/sub"), m.join("sub2")).unwrap();
    fs::write(m.join("sub2/inner"), b"renamed dir still reachable").unwrap();

    // What the backing directory holds is exactly what was done through the mount.
    let b = |p: &str| backing.join(p);
    assert_eq!(fs::read(b("d/f")).unwrap(), b"hello through fuse");
    let meta = fs::metadata(b("d/f")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_600_000_000, 123_456_789)
    );
    assert_eq!(meta.nlink(), 2);
    assert_eq!(fs::read_link(b("d/link")).unwrap(), Path::new("f"));
    assert!(
        fs::symlink_metadata(b("d/fifo"))
            .unwrap()
            .file_type()
            .is_fifo_like()
    );
    assert!(!b("d/moved").exists() && !b("empty").exists() && !b("d/sub").exists());
    assert_eq!(
        fs::read(b("sub2/inner")).unwrap(),
        b"renamed dir still reachable"
    );

    // And reads through the mount see it, with types in the listing.
    let mut names: Vec<_> = fs::read_dir(m.join("d"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                e.file_type().unwrap().is_symlink(),
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("f".to_string(), false),
            ("fifo".to_string(), false),
            ("hard".to_string(), false),
            ("link".to_string(), true)
        ]
    );
    assert_eq!(fs::read(m.join("d/hard")).unwrap(), b"hello through fuse");
    let through = fs::metadata(m.join("d/f")).unwrap();
    assert_eq!(through.mtime_nsec(), 123_456_789);

    let s = node.stats();
    assert!(s.meta_ops >= 20, "{s:?}");
    assert!(s.data_ops >= 3, "writes and a read went through: {s:?}");
    for op in [
        "lookup", "create", "mkdir", "setattr", "symlink", "link", "rename", "write",
    ] {
        assert!(
            s.by_op.get(op).is_some_and(|n| *n > 0),
            "{op} counted: {s:?}"
        );
    }
    assert_eq!(s.by_op.values().sum::<u64>(), s.meta_ops + s.data_ops);
    node.unmount().unwrap();
    assert!(
        fs::read_dir(tmp.path().join("node0"))
            .unwrap()
            .next()
            .is_none(),
        "unmounted: the mount point is an empty directory again"
    );
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}

impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_fifo(self)
    }
}

#[test]
fn requests_beyond_capacity_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let backing = tmp.path().join("backing");
    fs::create_dir(&backing).unwrap();
    let node = Node::mount(&backing, &tmp.path().join("node0"), config(2)).unwrap();
    let m = node.mountpoint().to_path_buf();
    let threads = 8;
    let start = Barrier::new(threads);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (m, start) = (&m, &start);
            s.spawn(move || {
                start.wait();
                // Names that do not exist: every stat is a lookup round trip (no negative cache).
                for i in 0..25 {
                    assert!(fs::metadata(m.join(format!("missing-{t}-{i}"))).is_err());
                }
            });
        }
    });
    let s = node.stats();
    assert!(s.meta_ops >= (threads * 25) as u64, "{s:?}");
    assert_eq!(s.peak_in_service, 2, "never more than the capacity: {s:?}");
    assert!(
        s.queued_ops > 0 && s.peak_queued >= 1,
        "8 callers on 2 slots queue: {s:?}"
    );
}

#[test]
fn engine_copy_through_two_nodes_is_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    generate(Dataset::Kinds, &src, &GenOptions::default()).unwrap();
    let backing = tmp.path().join("backing");
    fs::create_dir(&backing).unwrap();
    let nodes: Vec<Node> = (0..2)
        .map(|i| {
            let cfg = NodeConfig {
                meta_latency: Duration::from_micros(200),
                data_latency: Duration::from_micros(200),
                ..config(8)
            };
            Node::mount(&backing, &tmp.path().join(format!("node{i}")), cfg).unwrap()
        })
        .collect();
    let job = ingest_copy::CopyJob {
        source: src.clone(),
        destinations: nodes.iter().map(|n| n.mountpoint().to_path_buf()).collect(),
        scopes: vec![ingest_copy::Scope::Tree(ingest_copy::RelPath::root())],
    };
    let opts = ingest_copy::Options {
        threads: 8,
        verify: ingest_copy::VerifyMode::None,
        ..ingest_copy::Options::default()
    };
    let sink = ingest_copy::FirstN::new(20);
    let summary = ingest_copy::run(&job, &opts, &ingest_copy::Progress::default(), &sink).unwrap();
    let (entries, _) = sink.take();
    assert_eq!(summary.copy.failed, 0, "{entries:?}");
    let cmp = CompareOptions {
        owner: rustix_is_root(),
        ..CompareOptions::all()
    };
    let diffs = compare(&src, &backing, &cmp);
    assert!(
        diffs.is_empty(),
        "{}",
        diffs
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    for n in &nodes {
        assert!(n.stats().meta_ops > 0, "both nodes were written through");
    }
}

fn rustix_is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn auto_threads_copy_through_uneven_nodes_favours_the_fast_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    generate(
        Dataset::Small,
        &src,
        &GenOptions {
            scale: 0.005,
            ..GenOptions::default()
        },
    )
    .unwrap();
    let backing = tmp.path().join("backing");
    fs::create_dir(&backing).unwrap();
    let fast = NodeConfig {
        meta_latency: Duration::from_micros(200),
        data_latency: Duration::from_micros(200),
        ..config(8)
    };
    let slow = NodeConfig {
        meta_latency: Duration::from_millis(2),
        data_latency: Duration::from_millis(2),
        ..config(1)
    };
    let nodes: Vec<Node> = [fast, fast, slow]
        .iter()
        .enumerate()
        .map(|(i, c)| Node::mount(&backing, &tmp.path().join(format!("node{i}")), *c).unwrap())
        .collect();
    let job = ingest_copy::CopyJob {
        source: src.clone(),
        destinations: nodes.iter().map(|n| n.mountpoint().to_path_buf()).collect(),
        scopes: vec![ingest_copy::Scope::Tree(ingest_copy::RelPath::root())],
    };
    let opts = ingest_copy::Options {
        verify: ingest_copy::VerifyMode::None,
        concurrency: ingest_copy::Concurrency::Auto(ingest_copy::AutoConfig {
            max_per_mount: 16,
            initial: 1,
            interval_ms: 20,
        }),
        ..ingest_copy::Options::default()
    };
    let sink = ingest_copy::FirstN::new(20);
    let summary = ingest_copy::run(&job, &opts, &ingest_copy::Progress::default(), &sink).unwrap();
    assert_eq!(summary.copy.failed, 0, "{:?}", sink.take().0);
    let cmp = CompareOptions {
        owner: rustix_is_root(),
        ..CompareOptions::all()
    };
    assert!(compare(&src, &backing, &cmp).is_empty());
    let ops: Vec<u64> = nodes.iter().map(|n| n.stats().meta_ops).collect();
    // The slow node (one slot, ten times the latency) gets the least of the work.
    assert!(ops[2] < ops[0] && ops[2] < ops[1], "ops per node {ops:?}");
    for n in &nodes {
        let s = n.stats();
        assert!(s.peak_in_service <= n.config().capacity, "{s:?}");
    }
}

/// The fault hook: a node that stops answering at its N-th operation holds that request and every
/// later one (a hung server behind a hard mount), and unmounting it still ends cleanly.
#[test]
fn a_node_stops_answering_at_its_nth_operation_and_still_unmounts() {
    let tmp = tempfile::tempdir().unwrap();
    let backing = tmp.path().join("backing");
    fs::create_dir(&backing).unwrap();
    for i in 0..50 {
        fs::write(backing.join(format!("f{i}")), b"x").unwrap();
    }
    let cfg = NodeConfig {
        stop_answering_at: Some(20),
        ttl: Duration::ZERO,
        ..config(4)
    };
    let node = Node::mount(&backing, &tmp.path().join("node"), cfg).unwrap();
    let mp = node.mountpoint().to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    // Detached: its last request never returns while the node is mounted.
    std::thread::spawn(move || {
        for i in 0..50 {
            let r = fs::read(mp.join(format!("f{i}")));
            if tx.send(r.is_ok()).is_err() {
                return;
            }
        }
    });
    // Some reads answer, then one is held.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while node.stats().unanswered == 0 {
        assert!(std::time::Instant::now() < deadline, "no request was held");
        std::thread::sleep(Duration::from_millis(5));
    }
    let held = node.stats();
    let answered: Vec<bool> = rx.try_iter().collect();
    assert!(
        !answered.is_empty() && answered.len() < 50 && answered.iter().all(|ok| *ok),
        "reads answered before the hold: {answered:?}"
    );
    let received = held.meta_ops + held.data_ops + held.unanswered;
    assert!(
        received >= 20,
        "stopped before its 20th operation: {held:?}"
    );
    // As on a hard NFS mount, a process waiting on the hung node can still be killed.
    let mut cat = std::process::Command::new("cat")
        .arg(node.mountpoint().join("f49"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while node.stats().unanswered <= held.unanswered {
        assert!(
            std::time::Instant::now() < deadline,
            "cat's request was not held"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    cat.kill().unwrap();
    assert!(!cat.wait().unwrap().success());
    node.unmount().unwrap();
}

/// The fault hook by kind: a node told to stop at its first unlink answers everything before it,
/// holds that unlink (the file stays) and every request after it.
#[test]
fn a_node_stops_answering_at_its_first_request_of_a_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let backing = tmp.path().join("backing");
    fs::create_dir(&backing).unwrap();
    for i in 0..3 {
        fs::write(backing.join(format!("f{i}")), b"x").unwrap();
    }
    let cfg = NodeConfig {
        stop_answering_on: Some("unlink"),
        ttl: Duration::ZERO,
        ..config(4)
    };
    let node = Node::mount(&backing, &tmp.path().join("node"), cfg).unwrap();
    let mp = node.mountpoint().to_path_buf();
    assert_eq!(fs::read(mp.join("f0")).unwrap(), b"x", "answered before");
    let before = node.stats().unanswered;
    assert_eq!(before, 0);
    // Detached: their requests never return while the node is mounted.
    let (tx, rx) = std::sync::mpsc::channel();
    let (m1, m2) = (mp.clone(), mp.clone());
    std::thread::spawn(move || {
        let _ = fs::remove_file(m1.join("f1"));
        let _ = tx.send(());
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while node.stats().unanswered == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the unlink was not held"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::spawn(move || {
        let _ = fs::metadata(m2.join("f2"));
    });
    while node.stats().unanswered < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "a later stat was answered"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(rx.try_recv().is_err(), "the unlink returned");
    assert!(backing.join("f1").exists(), "the held unlink was done");
    node.unmount().unwrap();
}
