//! `vfxt-ingest worker --claims-url`: real worker processes against an in-test claims endpoint
//! (plain HTTP on 127.0.0.1) that runs the real coordinator, `ingest_job::Pass`, as the operator
//! does; real trees, judged by the test kit's comparison (which shares no code with the engine).
//! Every wait is for an event (a process exit, a request received), never a fixed time.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ingest_api::claims::{ClaimRequest, ClaimResponse, PATH};
use ingest_api::report::{PodProgress, PodResult};
use ingest_job::{Pass, Report, Unresponsive};
use ingest_testkit::assert_identical;

const TOKEN: &str = "the-pods-token";
const NAMESPACE: &str = "ns";
const JOB: &str = "ij";
const UID: &str = "uid-1";
const RUN: i64 = 3;
/// Longest any single event may take before the test gives up (a safety net, not a pause).
const PATIENCE: Duration = Duration::from_secs(300);

type P = Pass<PodResult, PodProgress>;

/// One request the endpoint received.
#[derive(Debug, Clone)]
struct Logged {
    status: u16,
    request: Option<ClaimRequest>,
    answer: Option<ClaimResponse>,
}

struct Shared {
    pass: Mutex<P>,
    log: Mutex<Vec<Logged>>,
    arrived: Condvar,
    started: Instant,
}

/// The claims endpoint of one pass, as the operator serves it: the bearer token checked, the
/// message handed to the pass, its answer returned.
struct Endpoint {
    url: String,
    shared: Arc<Shared>,
}

impl Endpoint {
    fn start(shards: u32) -> Endpoint {
        Endpoint::serving(P::new(shards, 2, ingest_api::claims::LEASE_SECONDS * 1000))
    }

    /// Serves `pass` on a loopback port.
    fn serving(pass: P) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            pass: Mutex::new(pass),
            log: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            started: Instant::now(),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(&s, conn));
            }
        });
        Endpoint { url, shared }
    }

    /// The operator saw the worker's pod end.
    fn worker_gone(&self, worker: &str) {
        self.shared.pass.lock().unwrap().worker_gone(worker);
    }

    fn log(&self) -> Vec<Logged> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Waits until the log satisfies `what`.
    fn wait_for(&self, why: &str, what: impl Fn(&[Logged]) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        let mut log = self.shared.log.lock().unwrap();
        while !what(&log) {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("waited {PATIENCE:?} for {why}: {log:#?}"));
            log = self.shared.arrived.wait_timeout(log, left).unwrap().0;
        }
    }
}

fn serve(s: &Shared, mut conn: TcpStream) {
    let Some((head, body)) = read_request(&mut conn) else {
        return;
    };
    let auth = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_owned());
    let request: Option<ClaimRequest> = serde_json::from_slice(&body).ok();
    let (status, answer) = if !head.starts_with(&format!("POST {PATH} HTTP/1.1\r\n")) {
        (404, None)
    } else if auth.is_none() {
        (401, None)
    } else if auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        (403, None)
    } else if let Some(r) = &request {
        let now = s.started.elapsed().as_millis() as u64;
        let mut pass = s.pass.lock().unwrap();
        let (shards, state) = pass.report(
            &r.worker,
            Report {
                holding: r.holding.clone(),
                done: r.done.iter().map(|d| (d.shard, d.result.clone())).collect(),
                room: r.room,
                progress: r.progress.clone(),
                unusable: r.unusable.clone(),
                unresponsive: r.unresponsive.clone().map(|u| Unresponsive {
                    mount: u.mount,
                    left: u.left as usize,
                    why: u.why,
                }),
            },
            now,
        );
        (
            200,
            Some(ClaimResponse {
                shards,
                state: state.into(),
                avoid: pass.avoided().keys().cloned().collect(),
                deletes: Default::default(),
                limits: None,
                closed: false,
            }),
        )
    } else {
        (400, None)
    };
    let text = match &answer {
        Some(a) => serde_json::to_string(a).unwrap(),
        None => format!("refused with {status}\n"),
    };
    // Logged before the worker can read the answer, so the log is in the order the worker saw.
    s.log.lock().unwrap().push(Logged {
        status,
        request,
        answer,
    });
    s.arrived.notify_all();
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = conn.flush();
}

/// The head (up to the blank line) and the body of one request (`content-length` bytes).
fn read_request(conn: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut r = BufReader::new(conn.try_clone().ok()?);
    let mut head = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().ok()?;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// A scanned source tree, an empty destination, token files.
struct Setup {
    _t: tempfile::TempDir,
    dir: PathBuf,
    src: PathBuf,
    dst: PathBuf,
    plan: PathBuf,
    /// Shards in the plan, and the files of each.
    shard_files: Vec<u64>,
}

fn setup() -> Setup {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().to_owned();
    let (src, dst) = (dir.join("src"), dir.join("dst"));
    ingest_testkit::generate(
        ingest_testkit::Dataset::Demo,
        &src,
        &ingest_testkit::GenOptions {
            scale: 0.4,
            ..Default::default()
        },
    )
    .unwrap();
    // Kinds the demo tree lacks: a symlink, a hard link, an odd mode, a name that is not UTF-8,
    // an empty directory.
    let some_file = first_file(&src);
    std::os::unix::fs::symlink("no/such/target", src.join("dangling")).unwrap();
    fs::hard_link(&some_file, src.join("hard-link")).unwrap();
    fs::write(src.join("exec.sh"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("exec.sh"), fs::Permissions::from_mode(0o751)).unwrap();
    fs::write(
        src.join(std::ffi::OsStr::from_bytes(b"bad\xffname")),
        b"bytes",
    )
    .unwrap();
    fs::create_dir(src.join("empty")).unwrap();
    fs::create_dir(&dst).unwrap();
    fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
    fs::write(dir.join("wrong-token"), "not-the-pods-token\n").unwrap();

    let plan = dir.join("plan.json");
    let o = bin()
        .arg("scan")
        .arg(&src)
        .args(["--shards", "12", "--threads", "2", "--out"])
        .arg(&plan)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout, &o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&plan).unwrap()).unwrap();
    let shard_files: Vec<u64> = v["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["files"].as_u64().unwrap())
        .collect();
    assert!(shard_files.len() >= 4, "{} shards", shard_files.len());
    Setup {
        _t: t,
        dir,
        src,
        dst,
        plan,
        shard_files,
    }
}

fn first_file(dir: &Path) -> PathBuf {
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in &names {
        if p.is_file() {
            return p.clone();
        }
    }
    for p in &names {
        if p.is_dir() {
            return first_file(p);
        }
    }
    panic!("no file under {}", dir.display())
}

/// Entries that are not directories (each name of a hard link): what a pass's `files` counts.
fn non_dirs(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                non_dirs(&e.path())
            } else {
                1
            }
        })
        .sum()
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vfxt-ingest"))
}

fn text(out: &[u8], err: &[u8]) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(out),
        String::from_utf8_lossy(err)
    )
}

/// A worker's end: its exit and its stderr.
struct Ended {
    name: String,
    status: ExitStatus,
    stderr: String,
}

/// `vfxt-ingest worker --claims-url` as the pod `name` runs it, its stdout and stderr to files.
fn spawn_worker(
    s: &Setup,
    e: &Endpoint,
    name: &str,
    phase: &str,
    token: &str,
    faults: Option<&str>,
) -> Child {
    let mut c = worker_command(s, e, name, phase, token, &[&s.dst]);
    match faults {
        Some(f) => c.env("VFXT_INGEST_FAULTS", f),
        None => c.env_remove("VFXT_INGEST_FAULTS"),
    };
    c.spawn().unwrap()
}

/// The worker's command line and environment, writing through `dests`.
fn worker_command(
    s: &Setup,
    e: &Endpoint,
    name: &str,
    phase: &str,
    token: &str,
    dests: &[&Path],
) -> Command {
    let mut c = bin();
    c.args(["worker", "--plan"])
        .arg(&s.plan)
        .arg("--source")
        .arg(&s.src);
    for d in dests {
        c.arg("--dest").arg(d);
    }
    c.args(["--claims-url", &e.url, "--phase", phase, "--threads", "2"])
        // Beats as often as the worker looks (every 50 ms), so that they meet shards that run.
        .args(["--heartbeat-seconds", "0.01", "--token-file"])
        .arg(s.dir.join(token))
        .env("POD_NAME", name)
        .env("POD_NAMESPACE", NAMESPACE)
        .env("INGEST_JOB_NAME", JOB)
        .env("INGEST_JOB_UID", UID)
        .env("INGEST_RUN", RUN.to_string())
        .env_remove("INGEST_PLAN_PREFIX")
        .env_remove("JOB_COMPLETION_INDEX")
        .stdin(Stdio::null())
        .stdout(fs::File::create(s.dir.join(format!("{name}-{phase}.out"))).unwrap())
        .stderr(fs::File::create(s.dir.join(format!("{name}-{phase}.err"))).unwrap());
    c
}

/// Waits for every worker to exit; each one's end is told to the pass as soon as it is seen (as
/// the operator does when a pod ends), while the others may still run.
fn wait_all(s: &Setup, e: &Endpoint, phase: &str, children: Vec<(String, Child)>) -> Vec<Ended> {
    std::thread::scope(|scope| {
        let waiters: Vec<_> = children
            .into_iter()
            .map(|(name, mut child)| {
                scope.spawn(move || {
                    let status = child.wait().unwrap();
                    e.worker_gone(&name);
                    let stderr =
                        fs::read_to_string(s.dir.join(format!("{name}-{phase}.err"))).unwrap();
                    Ended {
                        name,
                        status,
                        stderr,
                    }
                })
            })
            .collect();
        waiters.into_iter().map(|w| w.join().unwrap()).collect()
    })
}

/// Two workers `w0` and `w1` over one pass.
fn run_pass(s: &Setup, e: &Endpoint, phase: &str, token: &str) -> Vec<Ended> {
    let children = ["w0", "w1"]
        .into_iter()
        .map(|n| (n.to_owned(), spawn_worker(s, e, n, phase, token, None)))
        .collect();
    wait_all(s, e, phase, children)
}

fn assert_exit(ended: &[Ended], code: i32) {
    for w in ended {
        assert_eq!(
            w.status.code(),
            Some(code),
            "{}: {:?}\n{}",
            w.name,
            w.status,
            w.stderr
        );
    }
}

/// What every message of a pass must be: this pod's identity and role; a heartbeat holds the
/// shards the worker runs (at most two) and asks for nothing; a worker asks for no more than
/// its free slots and holds only shards it was given; each shard's `done` is sent once (every
/// answer here is a 200), by the worker that was given it, and only after it was given.
/// Returns who completed each shard.
fn check_messages(e: &Endpoint, phase: &str, shards: usize) -> BTreeMap<u32, String> {
    let mut given: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut completed: BTreeMap<u32, String> = BTreeMap::new();
    for l in e.log() {
        assert_eq!(l.status, 200, "{l:?}");
        let r = l.request.as_ref().unwrap();
        assert_eq!(
            (
                r.namespace.as_str(),
                r.job.as_str(),
                r.uid.as_str(),
                r.run,
                r.role.as_str()
            ),
            (NAMESPACE, JOB, UID, RUN, phase),
            "{r:?}"
        );
        assert!(r.unusable.is_none(), "{r:?}");
        if r.room == 0 && r.done.is_empty() && r.holding.is_empty() {
            // The worker's first message (it learns which destinations to avoid).
            assert!(!given.contains_key(&r.worker), "{r:?}");
        } else if r.room == 0 && r.done.is_empty() {
            // A heartbeat: the shards running (as many at once as 2 threads call for at most)
            // and those held ahead (short shards: as many again at most), and their own
            // progress.
            assert!(
                (1..=2 * ingest_job::shards_at_once(Some(2))).contains(&r.holding.len()),
                "{r:?}"
            );
            assert!(r.progress.at > 0, "{r:?}");
        } else {
            // Room for as many as it has slots free and as many again held ahead while shards
            // are short, never more.
            assert!(
                r.room as usize + r.holding.len() <= 2 * ingest_job::shards_at_once(Some(2)),
                "{r:?}"
            );
        }
        for h in &r.holding {
            assert!(given[&r.worker].contains(h), "{r:?}");
        }
        for d in &r.done {
            assert!(
                given.get(&r.worker).is_some_and(|g| g.contains(&d.shard)),
                "{} sent done for shard {} it was not given",
                r.worker,
                d.shard
            );
            if let Some(first) = completed.insert(d.shard, r.worker.clone()) {
                assert_ne!(
                    &first, &r.worker,
                    "{} sent shard {} twice",
                    r.worker, d.shard
                );
            }
        }
        let a = l.answer.unwrap();
        given.entry(r.worker.clone()).or_default().extend(a.shards);
    }
    assert_eq!(completed.len(), shards, "{completed:?}");
    completed
}

/// The pass ended with every shard completed once and nothing lost.
fn assert_pass_complete(e: &Endpoint, shards: usize) -> PodResult {
    let p = e.shared.pass.lock().unwrap();
    assert!(p.finished());
    let c = p.counts();
    assert_eq!(
        (c.total, c.completed, c.lost, c.pending, c.running),
        (shards as u64, shards as u64, 0, 0, 0),
        "{c:?}"
    );
    assert_eq!(p.stopped(), None);
    p.sum().clone()
}

#[test]
fn two_claims_workers_copy_then_verify_every_shard_once() {
    let s = setup();
    let shards = s.shard_files.len();
    let files = non_dirs(&s.src);

    // A token the endpoint refuses: both exit 2 (unusable input), saying so, and copy nothing.
    let refused = Endpoint::start(shards as u32);
    let ended = run_pass(&s, &refused, "copy", "wrong-token");
    assert_exit(&ended, 2);
    for w in &ended {
        assert!(
            w.stderr.contains(&refused.url) && w.stderr.contains("403"),
            "{}",
            w.stderr
        );
    }
    assert_eq!(fs::read_dir(&s.dst).unwrap().count(), 0);
    assert_eq!(refused.shared.pass.lock().unwrap().counts().running, 0);
    assert!(refused.log().iter().all(|l| l.status == 403));

    // The copy pass.
    let copy = Endpoint::start(shards as u32);
    let ended = run_pass(&s, &copy, "copy", "token");
    assert_exit(&ended, 0);
    check_messages(&copy, "copy", shards);
    let sum = assert_pass_complete(&copy, shards);
    assert_eq!((sum.files, sum.failed), (files, 0), "{sum:?}");
    assert_eq!(sum.bytes, bytes_of(&s.plan), "{sum:?}");

    // The verify pass: every entry checked, nothing to repair; directories get their times.
    let verify = Endpoint::start(shards as u32);
    let ended = run_pass(&s, &verify, "verify", "token");
    assert_exit(&ended, 0);
    check_messages(&verify, "verify", shards);
    let sum = assert_pass_complete(&verify, shards);
    let v = sum.verification.clone().expect("a verify pass counts");
    assert_eq!(
        (v.missing, v.mismatched, v.errors, sum.failed),
        (0, 0, 0, 0),
        "{sum:?}"
    );
    assert!(v.checked >= files, "{v:?}");
    assert_identical(&s.src, &s.dst);
}

/// Bytes of the plan's shards (what a copy pass into an empty destination moves).
fn bytes_of(plan: &Path) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(plan).unwrap()).unwrap();
    v["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["bytes"].as_u64().unwrap())
        .sum()
}

/// A worker killed in the middle of its first shard (the fault hook: at an exact create, not at
/// a moment): when its exit is seen, its claim goes back to the queue, the other worker finishes
/// that shard too, and the pass counts every shard once: exact totals, an identical tree.
#[test]
fn a_killed_workers_shard_is_finished_by_the_other_and_counted_once() {
    let s = setup();
    let shards = s.shard_files.len();
    let files = non_dirs(&s.src);
    // The pass hands shard 0 out first: w1, started alone, gets it, and dies half-way through
    // it (create 1 is the destination probe, then one create per file).
    let kill_at = 1 + s.shard_files[0] / 2;
    assert!(kill_at >= 3, "shard 0 has {} files", s.shard_files[0]);

    let copy = Endpoint::start(shards as u32);
    let w1 = spawn_worker(
        &s,
        &copy,
        "w1",
        "copy",
        "token",
        Some(&format!("create@{kill_at}=kill")),
    );
    copy.wait_for("w1 to be given shard 0", |log| {
        log.iter().any(|l| {
            l.request.as_ref().is_some_and(|r| r.worker == "w1")
                && l.answer.as_ref().is_some_and(|a| a.shards.contains(&0))
        })
    });
    let w0 = spawn_worker(&s, &copy, "w0", "copy", "token", None);
    let ended = wait_all(
        &s,
        &copy,
        "copy",
        vec![("w1".into(), w1), ("w0".into(), w0)],
    );
    let (w1, w0) = (&ended[0], &ended[1]);
    assert_eq!(
        w1.status.signal(),
        Some(9),
        "w1: {:?}\n{}",
        w1.status,
        w1.stderr
    );
    assert_eq!(
        w0.status.code(),
        Some(0),
        "w0: {:?}\n{}",
        w0.status,
        w0.stderr
    );

    let by = check_messages(&copy, "copy", shards);
    assert_eq!(by[&0], "w0", "{by:?}");
    let sum = assert_pass_complete(&copy, shards);
    assert_eq!((sum.files, sum.failed), (files, 0), "{sum:?}");

    let verify = Endpoint::start(shards as u32);
    let ended = run_pass(&s, &verify, "verify", "token");
    assert_exit(&ended, 0);
    check_messages(&verify, "verify", shards);
    let sum = assert_pass_complete(&verify, shards);
    let v = sum.verification.clone().unwrap();
    assert_eq!((v.errors, sum.failed), (0, 0), "{sum:?}");
    assert_identical(&s.src, &s.dst);
}

/// A worker that cannot use its input tells the operator (exit 2), which stops the pass: the
/// other worker is told so at its next message and exits 0, having copied nothing.
#[test]
fn unusable_input_stops_the_pass_for_every_worker() {
    let mut s = setup();
    let shards = s.shard_files.len();
    let good_plan = s.plan.clone();
    s.plan = s.dir.join("no-such-plan.json");
    let copy = Endpoint::start(shards as u32);
    let bad = spawn_worker(&s, &copy, "w0", "copy", "token", None);
    let ended = wait_all(&s, &copy, "copy", vec![("w0".into(), bad)]);
    assert_exit(&ended, 2);
    assert!(
        ended[0].stderr.contains("no-such-plan.json"),
        "{}",
        ended[0].stderr
    );
    let log = copy.log();
    assert_eq!(log.len(), 1, "{log:?}");
    let told = log[0].request.as_ref().unwrap().unusable.clone().unwrap();
    assert!(
        told.contains("--plan") && told.contains("no-such-plan.json"),
        "{told}"
    );

    s.plan = good_plan;
    let ended = run_pass(&s, &copy, "copy", "token");
    assert_exit(&ended, 0);
    for w in &ended {
        assert!(
            w.stderr.contains("the operator stopped the run"),
            "{}",
            w.stderr
        );
    }
    assert_eq!(
        copy.shared.pass.lock().unwrap().stopped(),
        Some(told.as_str())
    );
    assert_eq!(copy.shared.pass.lock().unwrap().counts().completed, 0);
    assert_eq!(fs::read_dir(&s.dst).unwrap().count(), 0);
}

/// A destination that stops answering mid-copy (an emulated node that holds every request from
/// its N-th on, as a hung NFS server behind a hard mount): the worker sees operations waiting
/// `--stall-timeout` with none finishing, tells the endpoint which destination, hands back every
/// shard it holds (without cost to their retries: the pass allows none here) and exits 4, its
/// stuck threads killed with it. The worker started after it learns to avoid that destination in
/// its first message, never touches it, and finishes the pass: every shard once, identical tree.
#[test]
fn a_destination_that_stops_answering_is_given_back_and_avoided() {
    let s = setup();
    let shards = s.shard_files.len();
    let files = non_dirs(&s.src);
    // The same export as `dst`, through a node that stops answering at its 60th operation.
    let hung = s.dir.join("hung-node");
    let node = ingest_latencyfs::Node::mount(
        &s.dst,
        &hung,
        ingest_latencyfs::NodeConfig {
            meta_latency: Duration::ZERO,
            data_latency: Duration::ZERO,
            stop_answering_at: Some(60),
            ..Default::default()
        },
    )
    .unwrap();
    // No retries: a claim lost (rather than handed back) would end its shard Lost.
    let copy = Endpoint::serving(P::new(
        shards as u32,
        0,
        ingest_api::claims::LEASE_SECONDS * 1000,
    ));
    let dests = [s.dst.as_path(), hung.as_path()];
    let first = worker_command(&s, &copy, "w0", "copy", "token", &dests)
        .args(["--stall-timeout", "5"])
        .env_remove("VFXT_INGEST_FAULTS")
        .spawn()
        .unwrap();
    let ended = wait_all(&s, &copy, "copy", vec![("w0".into(), first)]);
    assert_exit(&ended, ingest_job::exit::MOUNT_UNRESPONSIVE);
    let hung_name = hung.display().to_string();
    assert!(ended[0].stderr.contains(&hung_name), "{}", ended[0].stderr);
    let told = copy
        .log()
        .into_iter()
        .filter_map(|l| l.request)
        .filter_map(|r| r.unresponsive)
        .collect::<Vec<_>>();
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(
        (told[0].mount.as_str(), told[0].left),
        (hung_name.as_str(), 1)
    );
    {
        let p = copy.shared.pass.lock().unwrap();
        let c = p.counts();
        assert_eq!((c.running, c.lost), (0, 0), "w0's shards went back: {c:?}");
        assert!(p.avoided().contains_key(&hung_name));
    }
    let held = node.stats();
    assert!(held.unanswered >= 1, "{held:?}");

    let second = worker_command(&s, &copy, "w1", "copy", "token", &dests)
        .args(["--stall-timeout", "5"])
        .env_remove("VFXT_INGEST_FAULTS")
        .spawn()
        .unwrap();
    let ended = wait_all(&s, &copy, "copy", vec![("w1".into(), second)]);
    assert_exit(&ended, 0);
    let after = node.stats();
    assert_eq!(
        after.meta_ops + after.data_ops + after.unanswered,
        held.meta_ops + held.data_ops + held.unanswered,
        "w1 touched the destination it was told to avoid"
    );
    let first_answer = copy
        .log()
        .into_iter()
        .find(|l| l.request.as_ref().is_some_and(|r| r.worker == "w1"))
        .and_then(|l| l.answer)
        .unwrap();
    assert_eq!(first_answer.avoid, std::slice::from_ref(&hung_name));
    let sum = assert_pass_complete(&copy, shards);
    assert_eq!((sum.files, sum.failed), (files, 0), "{sum:?}");
    // Per-destination figures came with the messages: w1 wrote only through `dst`.
    let w1_mounts = copy
        .log()
        .into_iter()
        .filter_map(|l| l.request)
        .rfind(|r| r.worker == "w1")
        .unwrap()
        .mounts;
    assert!(
        w1_mounts.iter().all(|m| m.mount != hung_name),
        "{w1_mounts:?}"
    );
    assert!(w1_mounts.iter().any(|m| m.tasks > 0), "{w1_mounts:?}");

    // The verify pass inherits the avoided destination (as the operator's does): it checks
    // and settles everything through `dst` alone.
    let avoided = copy.shared.pass.lock().unwrap().avoided().clone();
    let verify = Endpoint::serving(
        P::new(shards as u32, 0, ingest_api::claims::LEASE_SECONDS * 1000).avoiding(&avoided),
    );
    let checker = worker_command(&s, &verify, "w2", "verify", "token", &dests)
        .args(["--stall-timeout", "5"])
        .env_remove("VFXT_INGEST_FAULTS")
        .spawn()
        .unwrap();
    let ended = wait_all(&s, &verify, "verify", vec![("w2".into(), checker)]);
    assert_exit(&ended, 0);
    let sum = assert_pass_complete(&verify, shards);
    let v = sum.verification.clone().unwrap();
    assert_eq!((v.errors, sum.failed), (0, 0), "{sum:?}");
    let last = node.stats();
    assert_eq!(
        last.meta_ops + last.data_ops + last.unanswered,
        held.meta_ops + held.data_ops + held.unanswered,
        "the verify pass touched the avoided destination"
    );
    drop(node);
    assert_identical(&s.src, &s.dst);
}
