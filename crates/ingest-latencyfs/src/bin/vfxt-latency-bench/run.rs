//! Making the runs: tools installed, dataset generated once, fresh nodes per run, every copy
//! compared with the source; then the table and the JSON document.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ingest_latencyfs::{Node, NodeConfig, StatsSnapshot, Tmpfs};
use ingest_testkit::{CompareOptions, Dataset, GenOptions, compare, generate};
use serde::Serialize;
use serde_json::json;

use crate::plan::{Scenario, Threads, Tool};
use crate::{Args, Backing};

/// A prepared benchmark: the source tree and how to run the engine.
pub struct Bench {
    src: PathBuf,
    runs: PathBuf,
    vfxt_bin: PathBuf,
    max_per_mount: usize,
    backing: Backing,
    repeat: usize,
    pub files: u64,
    pub dirs: u64,
    pub scale: f64,
    root: bool,
    counter: usize,
}

/// The result of one run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub scenario: Scenario,
    pub label: String,
    pub wall_s: f64,
    /// Only for a run that succeeded and whose copy is identical.
    pub files_per_s: Option<f64>,
    pub identical: bool,
    pub differences: usize,
    pub first_differences: Vec<String>,
    pub timed_out: bool,
    pub error: Option<String>,
    /// What each node served (counted by the node, one per mount).
    pub nodes: Vec<StatsSnapshot>,
    /// Per node, the seconds from its last operation to the tool's exit (to 20 ms): a fast node
    /// idle at the end while a slow one finishes is work that was given to the wrong node.
    pub idle_at_end_s: Vec<f64>,
    /// Per node, how busy it was in each tenth of the run (as the busy share of the whole run):
    /// where in the run its idle time lies.
    pub busy_by_tenth: Vec<Vec<f64>>,
}

impl Record {
    pub fn line(&self) -> String {
        match (&self.error, self.files_per_s) {
            (Some(e), _) => format!("FAILED after {:.1} s: {e}", self.wall_s),
            (None, Some(r)) => format!("{:.1} s, {:.0} files/s, identical", self.wall_s, r),
            (None, None) => format!(
                "{:.1} s, NOT identical ({} differences, e.g. {})",
                self.wall_s,
                self.differences,
                self.first_differences.first().map_or("", |s| s.as_str())
            ),
        }
    }
}

fn which(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// Installs the Debian packages whose programs are missing (running `apt-get update` once).
fn install_missing(programs: &[(&str, &str)]) -> Result<(), String> {
    let missing: Vec<&str> = programs
        .iter()
        .filter(|(prog, _)| !which(prog))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {} (apt-get)", missing.join(", "));
    let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
    if !ok(Command::new("apt-get").args(["update", "-qq"]))
        || !ok(Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    {
        return Err(format!(
            "could not install {} with apt-get; install them and run again",
            missing.join(", ")
        ));
    }
    Ok(())
}

impl Bench {
    pub fn prepare(a: &Args) -> Result<Bench, String> {
        if !Path::new("/dev/fuse").exists() {
            return Err("/dev/fuse is missing: the emulated nodes need FUSE".into());
        }
        let mut programs = vec![("fusermount3", "fuse3")];
        for p in &a.peers {
            programs.push(match p.as_str() {
                "rsync-inplace" => ("rsync", "rsync"),
                "parallel16" | "parallel64" => ("parallel", "parallel"),
                "fpsync" => ("fpsync", "fpart"),
                _ => ("cp", "coreutils"),
            });
        }
        if a.peers.iter().any(|p| p == "fpsync") {
            // fpsync runs rsync for each part.
            programs.push(("rsync", "rsync"));
        }
        install_missing(&programs)?;
        if !a.vfxt_bin.is_file() {
            return Err(format!(
                "--vfxt-bin {}: not found; build it with `cargo build --release -p vfxt-ingest`",
                a.vfxt_bin.display()
            ));
        }
        let vfxt_bin = a.vfxt_bin.canonicalize().map_err(|e| e.to_string())?;
        fs::create_dir_all(&a.work).map_err(|e| format!("--work {}: {e}", a.work.display()))?;
        let src = a.work.join(format!("small-{}", a.scale));
        let done = a.work.join(format!("small-{}.done", a.scale));
        if !done.exists() {
            let _ = fs::remove_dir_all(&src);
            eprintln!(
                "generating the small dataset at scale {} in {}",
                a.scale,
                src.display()
            );
            let s = generate(
                Dataset::Small,
                &src,
                &GenOptions {
                    scale: a.scale,
                    ..GenOptions::default()
                },
            )
            .map_err(|e| format!("generating {}: {e}", src.display()))?;
            fs::write(&done, format!("{} {}\n", s.non_dirs(), s.dirs))
                .map_err(|e| e.to_string())?;
        }
        let counts = fs::read_to_string(&done).map_err(|e| e.to_string())?;
        let mut it = counts
            .split_whitespace()
            .map(|n| n.parse::<u64>().unwrap_or(0));
        let (files, dirs) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        let runs = a.work.join("runs");
        let _ = fs::remove_dir_all(&runs);
        fs::create_dir_all(&runs).map_err(|e| e.to_string())?;
        Ok(Bench {
            src,
            runs,
            vfxt_bin,
            max_per_mount: a.max_per_mount,
            backing: a.backing,
            repeat: a.repeat,
            files,
            dirs,
            scale: a.scale,
            // SAFETY: geteuid has no preconditions.
            root: unsafe { libc::geteuid() } == 0,
            counter: 0,
        })
    }

    fn command(&self, tool: Tool, mounts: &[PathBuf], base: &Path, scratch: &Path) -> Command {
        let slash = |p: &Path| format!("{}/", p.display());
        match tool {
            Tool::Vfxt(t) => {
                let mut c = Command::new(&self.vfxt_bin);
                c.arg("copy").arg(&self.src).args(mounts);
                match t {
                    Threads::Fixed(n) => c.args(["--threads", &n.to_string()]),
                    Threads::Auto => c.args([
                        "--threads",
                        "auto",
                        "--max-per-mount",
                        &self.max_per_mount.to_string(),
                    ]),
                };
                // Timed like the peers, which do not verify; the comparison below checks all.
                c.args(["--verify", "none", "--quiet"]);
                c
            }
            Tool::VfxtRun(threads) => {
                // The local form of an IngestJob, one worker per mount. JSON strings are YAML.
                let q = |p: &Path| serde_json::to_string(&p.display().to_string()).unwrap();
                let dests: Vec<String> = mounts.iter().map(|m| q(m)).collect();
                let job = format!(
                    "apiVersion: ingest.vfxt.dev/v1alpha1\nkind: IngestJob\nmetadata: {{name: latency-bench}}\n\
                     spec:\n  source: {{local: {}}}\n  destination: {{local: [{}]}}\n  workers: {}\n  \
                     threadsPerWorker: {}\n  verify: {{mode: None}}\n",
                    q(&self.src),
                    dests.join(", "),
                    mounts.len(),
                    match threads {
                        Threads::Fixed(n) => n.to_string(),
                        Threads::Auto => "auto".into(),
                    }
                );
                let file = scratch.join("job.yaml");
                // A failure to write shows as the run's own error (no such file).
                let _ = fs::write(&file, job);
                let mut c = Command::new(&self.vfxt_bin);
                c.arg("run")
                    .arg("-q")
                    .arg("-f")
                    .arg(file)
                    .arg("--state")
                    .arg(scratch.join("state"));
                c
            }
            Tool::Cp => {
                let mut c = Command::new("cp");
                c.arg("-a").arg(self.src.join(".")).arg(&mounts[0]);
                c
            }
            Tool::RsyncInplace => {
                let mut c = Command::new("rsync");
                c.args(["-a", "--inplace"])
                    .arg(slash(&self.src))
                    .arg(slash(&mounts[0]));
                c
            }
            Tool::Parallel(jobs) => {
                // The field guide's parallel cp: every directory first (through the first mount),
                // then one `cp -P` per entry, job slot k writing through mount k mod M.
                let m = mounts.len();
                let script = format!(
                    "set -eu -o pipefail\ncd \"$SRC\"\n\
                     find . -mindepth 1 -type d -print0 | parallel --will-cite -0 -j{jobs} mkdir -p -- \"$BASE\"/node0/{{}}\n\
                     find . -mindepth 1 ! -type d -print0 | parallel --will-cite -0 -j{jobs} cp -P -- {{}} \"$BASE\"/node'$(( {{%}} % {m} ))'/{{}}\n"
                );
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(script)
                    .env("SRC", &self.src)
                    .env("BASE", base);
                c
            }
            Tool::Fpsync => {
                let mut c = Command::new("fpsync");
                c.args(["-n", "16", "-t"])
                    .arg(scratch)
                    .arg(slash(&self.src))
                    .arg(slash(&mounts[0]));
                c
            }
        }
    }

    /// What the tool, run as above, promises to keep: a copy is judged on that.
    fn compare_options(&self, tool: Tool) -> CompareOptions {
        let owner = self.root;
        match tool {
            Tool::Vfxt(_) => CompareOptions {
                owner,
                ..CompareOptions::all()
            },
            // The IngestJob's default preserve: no xattrs.
            Tool::VfxtRun(_) => CompareOptions {
                owner,
                xattrs: false,
                ..CompareOptions::all()
            },
            Tool::Cp => CompareOptions {
                owner,
                root_metadata: false,
                ..CompareOptions::all()
            },
            // -a = -rlptgoD: no -H, -X, -S.
            Tool::RsyncInplace => CompareOptions {
                mode: true,
                owner,
                mtime: true,
                dir_mtime: true,
                symlink_mtime: true,
                ..CompareOptions::content_only()
            },
            // rsync -lptgoD per part; directories written by several parts lose their times.
            Tool::Fpsync => CompareOptions {
                mode: true,
                owner,
                mtime: true,
                symlink_mtime: true,
                ..CompareOptions::content_only()
            },
            // cp -P without -p: contents and symlinks only.
            Tool::Parallel(_) => CompareOptions::content_only(),
        }
    }

    pub fn run(&mut self, sc: &Scenario, timeout: Duration) -> Record {
        self.counter += 1;
        let base = self.runs.join(self.counter.to_string());
        let backing = base.join("backing");
        let scratch = base.join("scratch");
        let mut rec = Record {
            scenario: sc.clone(),
            label: sc.tool.label(),
            wall_s: 0.0,
            files_per_s: None,
            identical: false,
            differences: 0,
            first_differences: Vec::new(),
            timed_out: false,
            error: None,
            nodes: Vec::new(),
            idle_at_end_s: Vec::new(),
            busy_by_tenth: Vec::new(),
        };
        if let Err(e) = fs::create_dir_all(&backing).and_then(|_| fs::create_dir_all(&scratch)) {
            rec.error = Some(format!("{}: {e}", base.display()));
            return rec;
        }
        // Kept until the comparison is done; dropped (unmounted) before the run's directory is.
        let storage = match self.backing {
            Backing::Disk => None,
            Backing::Tmpfs => match Tmpfs::mount(&backing) {
                Ok(t) => Some(t),
                Err(e) => {
                    rec.error = Some(format!("{e} (--backing disk needs no mount)"));
                    return rec;
                }
            },
        };
        let mut nodes = Vec::new();
        for (i, cfg) in sc.nodes.iter().enumerate() {
            match Node::mount(&backing, &base.join(format!("node{i}")), *cfg) {
                Ok(n) => nodes.push(n),
                Err(e) => {
                    rec.error = Some(e.to_string());
                    return rec;
                }
            }
        }
        let mounts: Vec<PathBuf> = nodes.iter().map(|n| n.mountpoint().to_path_buf()).collect();
        let mut cmd = self.command(sc.tool, &mounts, &base, &scratch);
        let err_path = scratch.join("stderr");
        let handles: Vec<_> = nodes.iter().map(Node::stats_handle).collect();
        // Every poll's busy times: (seconds since the start, per node µs).
        let mut polls: Vec<(f64, Vec<u64>)> = Vec::new();
        let out = (|| -> std::io::Result<(f64, Option<std::process::ExitStatus>)> {
            cmd.stdin(Stdio::null())
                .stdout(fs::File::create(scratch.join("stdout"))?)
                .stderr(fs::File::create(&err_path)?);
            // A group of its own: a timeout or Ctrl-C stops the whole tool (parallel's jobs,
            // fpsync's rsyncs), not only the process started here.
            cmd.process_group(0);
            let started = Instant::now();
            let mut child = cmd.spawn()?;
            let group = child.id() as i32;
            ingest_latencyfs::set_running_group(group);
            let stop_group = || {
                // SAFETY: kill takes plain integers; a group already gone gives ESRCH.
                unsafe { libc::kill(-group, libc::SIGKILL) };
            };
            let ended = loop {
                let busy = handles
                    .iter()
                    .map(|h| h.busy_us.load(std::sync::atomic::Ordering::Relaxed))
                    .collect();
                polls.push((started.elapsed().as_secs_f64(), busy));
                if let Some(st) = child.try_wait()? {
                    break (started.elapsed().as_secs_f64(), Some(st));
                }
                if started.elapsed() > timeout {
                    stop_group();
                    let _ = child.wait();
                    break (started.elapsed().as_secs_f64(), None);
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            ingest_latencyfs::set_running_group(0);
            Ok(ended)
        })();
        rec.nodes = nodes.iter().map(Node::stats).collect();
        if let Ok((wall, _)) = &out {
            rec.idle_at_end_s = idle_at_end(&polls, *wall, nodes.len());
            rec.busy_by_tenth = by_tenth(&polls, *wall, &sc.nodes);
        }
        for n in nodes {
            if let Err(e) = n.unmount() {
                eprintln!("warning: unmount: {e}");
            }
        }
        match out {
            Err(e) => rec.error = Some(format!("could not run {}: {e}", rec.label)),
            Ok((wall, None)) => {
                rec.wall_s = wall;
                rec.timed_out = true;
                rec.error = Some(format!("timed out after {} s", timeout.as_secs()));
            }
            Ok((wall, Some(st))) => {
                rec.wall_s = wall;
                if !st.success() {
                    let tail = fs::read_to_string(&err_path).unwrap_or_default();
                    let tail: Vec<&str> = tail.lines().rev().take(3).collect();
                    rec.error = Some(format!("{st}: {}", tail.join(" | ")));
                }
            }
        }
        if rec.error.is_none() {
            let diffs = compare(&self.src, &backing, &self.compare_options(sc.tool));
            rec.differences = diffs.len();
            rec.first_differences = diffs.iter().take(5).map(|d| d.to_string()).collect();
            rec.identical = diffs.is_empty();
            if rec.identical && rec.wall_s > 0.0 {
                rec.files_per_s = Some(self.files as f64 / rec.wall_s);
            }
        }
        // The tool's stderr outlives the run (e.g. the controller's steps with
        // VFXT_INGEST_AUTO_TRACE=1): runs/N.stderr, N as in the progress lines.
        let _ = fs::rename(
            &err_path,
            self.runs.join(format!("{}.stderr", self.counter)),
        );
        drop(storage);
        let _ = fs::remove_dir_all(&base);
        rec
    }
}

fn fmt_rate(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.0}"))
}

/// Best identical files/s among records matching `f`.
fn best<'a>(recs: impl Iterator<Item = &'a Record>) -> Option<&'a Record> {
    recs.filter(|r| r.files_per_s.is_some())
        .max_by(|a, b| a.files_per_s.partial_cmp(&b.files_per_s).unwrap())
}

fn lat_key(l: f64) -> String {
    format!("{l}")
}

/// The headline comparisons of issue 7, per latency.
/// One record per setting: the runs of a repeated scenario (`--repeat`) as one, with the
/// median files/s. A setting with any run that failed or differed gets no figure.
fn medians(recs: &[Record]) -> Vec<Record> {
    let mut groups: Vec<Vec<&Record>> = Vec::new();
    for r in recs {
        match groups.iter_mut().find(|g| g[0].scenario == r.scenario) {
            Some(g) => g.push(r),
            None => groups.push(vec![r]),
        }
    }
    groups
        .into_iter()
        .map(|g| {
            let mut rated: Vec<(f64, &Record)> = g
                .iter()
                .filter_map(|r| Some((r.files_per_s?, *r)))
                .collect();
            rated.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
            let n = rated.len();
            // The median run's own record (its node counters), its rate the median; the wall
            // time follows, so that rate × wall time stays the files it copied (the ideal rate
            // divides its operations by them). The first run's record with the median's rate
            // put another run's time beside it: 3% off the ideal when the two differed by 3%.
            let mut m = match n {
                0 => g[0].clone(),
                _ => rated[n / 2].1.clone(),
            };
            if n == g.len() && n > 0 {
                let median = (rated[(n - 1) / 2].0 + rated[n / 2].0) / 2.0;
                m.wall_s *= rated[n / 2].0 / median;
                m.files_per_s = Some(median);
            } else {
                m.files_per_s = None;
            }
            m.identical = g.iter().all(|r| r.identical);
            m
        })
        .collect()
}

/// What the runs show, per latency; a repeated setting counts by its median.
fn findings(recs: &[Record]) -> Vec<serde_json::Value> {
    let recs = &medians(recs)[..];
    let mut lats: Vec<f64> = recs.iter().map(|r| r.scenario.latency_ms).collect();
    lats.sort_by(|a, b| a.partial_cmp(b).unwrap());
    lats.dedup();
    let mut out = Vec::new();
    for lat in lats {
        let at: Vec<&Record> = recs
            .iter()
            .filter(|r| r.scenario.latency_ms == lat)
            .collect();
        let even = |r: &&Record| {
            r.scenario.nodes.iter().all(|n| {
                n.capacity == r.scenario.nodes[0].capacity
                    && n.meta_latency == r.scenario.nodes[0].meta_latency
            })
        };
        let best_peer =
            best(at.iter().copied().filter(|r| {
                r.scenario.part == "peers" && !matches!(r.scenario.tool, Tool::Vfxt(_))
            }));
        let vfxt_at = |m: usize, auto: Option<bool>| {
            best(at.iter().copied().filter(move |r| {
                matches!(r.scenario.tool, Tool::Vfxt(t) if auto.is_none_or(|a| a == (t == Threads::Auto)))
                    && r.scenario.mounts() == m
                    && r.scenario.part != "slow"
                    && even(r)
            }))
        };
        let ratio = |a: Option<&Record>, b: Option<&Record>| match (
            a.and_then(|r| r.files_per_s),
            b.and_then(|r| r.files_per_s),
        ) {
            (Some(x), Some(y)) if y > 0.0 => Some(x / y),
            _ => None,
        };
        let best3 = vfxt_at(3, None);
        let best1 = vfxt_at(1, None);
        let mut autos = Vec::new();
        let mut mounts: Vec<usize> = at.iter().map(|r| r.scenario.mounts()).collect();
        mounts.sort();
        mounts.dedup();
        for m in mounts {
            let auto = vfxt_at(m, Some(true));
            let fixed = vfxt_at(m, Some(false));
            if auto.is_some() || fixed.is_some() {
                autos.push(json!({
                    "mounts": m,
                    "autoFilesPerS": auto.and_then(|r| r.files_per_s),
                    "bestFixed": fixed.map(|r| r.label.clone()),
                    "bestFixedFilesPerS": fixed.and_then(|r| r.files_per_s),
                    "autoOverBestFixed": ratio(auto, fixed),
                }));
            }
        }
        let slow: Vec<&Record> = at
            .iter()
            .copied()
            .filter(|r| r.scenario.part == "slow")
            .collect();
        let slow_auto = slow
            .iter()
            .copied()
            .find(|r| r.scenario.tool == Tool::Vfxt(Threads::Auto));
        // The better of the even splits of threads (one queue), and the split of the work.
        let slow_even = best(
            slow.iter()
                .copied()
                .filter(|r| matches!(r.scenario.tool, Tool::Vfxt(Threads::Fixed(_)))),
        );
        // `run` with the slow node: the better of its thread settings.
        let slow_static = best(
            slow.iter()
                .copied()
                .filter(|r| matches!(r.scenario.tool, Tool::VfxtRun(_))),
        );
        // `run` over even mounts beside the best single `copy` over as many.
        let run_even = best(at.iter().copied().filter(|r| {
            matches!(r.scenario.tool, Tool::VfxtRun(_)) && r.scenario.part != "slow" && even(r)
        }));
        let copy_same = run_even.and_then(|r| vfxt_at(r.scenario.mounts(), None));
        out.push(json!({
            "latencyMs": lat,
            "runEven": run_even.map(|r| format!("{} ({} mounts)", r.label, r.scenario.mounts())),
            "runEvenFilesPerS": run_even.and_then(|r| r.files_per_s),
            "runEvenOverBestCopy": ratio(run_even, copy_same),
            "bestPeer": best_peer.map(|r| format!("{} ({} mount(s))", r.label, r.scenario.mounts())),
            "bestPeerFilesPerS": best_peer.and_then(|r| r.files_per_s),
            "vfxtBest3Mounts": best3.map(|r| r.label.clone()),
            "vfxtBest3MountsFilesPerS": best3.and_then(|r| r.files_per_s),
            "vfxt3MountsOverBestPeer": ratio(best3, best_peer),
            "vfxt3MountsOver1Mount": ratio(best3, best1),
            "autoVsBestFixed": autos,
            "slowNode": {
                "evenSplit": slow_even.map(|r| r.label.clone()),
                "evenSplitFilesPerS": slow_even.and_then(|r| r.files_per_s),
                "autoFilesPerS": slow_auto.and_then(|r| r.files_per_s),
                "autoOverEvenSplit": ratio(slow_auto, slow_even),
                "staticSplit": slow_static.map(|r| r.label.clone()),
                "staticSplitFilesPerS": slow_static.and_then(|r| r.files_per_s),
                "autoOverStaticSplit": ratio(slow_auto, slow_static),
                // The ideal in the engine's own operations per file (one `copy --threads
                // auto`): `run`'s extra operations count against it.
                "idealFilesPerS": slow_auto.and_then(ideal_files_per_s),
                "runOverIdeal": ratio_to(slow_static, slow_auto.and_then(ideal_files_per_s)),
                "autoOverIdeal": ratio_to(slow_auto, slow_auto.and_then(ideal_files_per_s)),
                // How busy each node was over the whole run, and in each tenth of it (the
                // first sets the ramp-up, the last ones the tail).
                "runNodesBusy": slow_static.map(busy),
                "autoNodesBusy": slow_auto.map(busy),
                "runNodesBusyByTenth": slow_static.map(|r| r.busy_by_tenth.clone()),
                "autoNodesBusyByTenth": slow_auto.map(|r| r.busy_by_tenth.clone()),
            },
        }));
    }
    out
}

/// The ideal rate of a run: the operations it made, served by every node at its full capacity
/// (capacity / latency operations per second each, summed), per file. "The work divided by the
/// total capacity", in the run's own operations per file.
fn ideal_files_per_s(r: &Record) -> Option<f64> {
    let files = r.files_per_s? * r.wall_s;
    let ops: u64 = r.nodes.iter().map(|n| n.meta_ops + n.data_ops).sum();
    if files <= 0.0 || ops == 0 {
        return None;
    }
    let capacity: f64 = r
        .scenario
        .nodes
        .iter()
        .map(|cfg| cfg.capacity as f64 / cfg.meta_latency.as_secs_f64().max(1e-6))
        .sum();
    Some(capacity / (ops as f64 / files))
}

/// How busy each node of a run was: its slots' held time over its capacity × the run's wall time.
fn busy(r: &Record) -> Vec<f64> {
    r.nodes
        .iter()
        .zip(&r.scenario.nodes)
        .map(|(n, cfg)| {
            let round = |x: f64| (x * 1000.0).round() / 1000.0;
            round(n.busy_us as f64 / 1e6 / (cfg.capacity as f64 * r.wall_s).max(1e-9))
        })
        .collect()
}

/// From polls of the nodes' busy times (seconds since the start, µs per node): each node's busy
/// share in each tenth of a run of `wall` seconds (by the last poll at or before each tenth's
/// end: to the poll interval).
fn by_tenth(polls: &[(f64, Vec<u64>)], wall: f64, nodes: &[NodeConfig]) -> Vec<Vec<f64>> {
    let at = |t: f64, node: usize| match polls.partition_point(|(s, _)| *s <= t) {
        0 => 0,
        n => polls[n - 1].1[node],
    };
    nodes
        .iter()
        .enumerate()
        .map(|(i, cfg)| {
            (0..10)
                .map(|k| {
                    let (from, to) = (wall * k as f64 / 10.0, wall * (k + 1) as f64 / 10.0);
                    let used = at(to, i).saturating_sub(at(from, i)) as f64 / 1e6;
                    let share = used / (cfg.capacity as f64 * (to - from)).max(1e-9);
                    (share * 100.0).round() / 100.0
                })
                .collect()
        })
        .collect()
}

/// From the same polls: per node, the seconds from the first poll that saw its final busy time
/// (its last operation had ended) to the end of a run of `wall` seconds.
fn idle_at_end(polls: &[(f64, Vec<u64>)], wall: f64, nodes: usize) -> Vec<f64> {
    (0..nodes)
        .map(|i| {
            let last = polls.last().map_or(0, |(_, b)| b[i]);
            let since = polls
                .iter()
                .find(|(_, b)| b[i] == last)
                .map_or(wall, |(t, _)| *t);
            ((wall - since).max(0.0) * 100.0).round() / 100.0
        })
        .collect()
}

/// A run's rate over `rate`.
fn ratio_to(r: Option<&Record>, rate: Option<f64>) -> Option<f64> {
    match (r.and_then(|r| r.files_per_s), rate) {
        (Some(x), Some(y)) if y > 0.0 => Some(x / y),
        _ => None,
    }
}

pub fn json(b: &Bench, recs: &[Record]) -> serde_json::Value {
    json!({
        "dataset": {"name": "small", "scale": b.scale, "files": b.files, "directories": b.dirs},
        "machine": {"cores": std::thread::available_parallelism().map_or(0, |n| n.get())},
        "backing": b.backing,
        "repeat": b.repeat,
        "findings": findings(recs),
        "opsPerFile": ops_per_file(recs, b.files),
        "records": recs,
    })
}

/// Round trips per file by operation, for each tool (from its first run): where time goes.
fn ops_per_file(recs: &[Record], files: u64) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for r in recs {
        if out.contains_key(&r.label) || r.nodes.is_empty() {
            continue;
        }
        let mut by: BTreeMap<String, f64> = BTreeMap::new();
        for n in &r.nodes {
            for (op, c) in &n.by_op {
                *by.entry(op.clone()).or_default() += *c as f64 / files.max(1) as f64;
            }
        }
        by.values_mut()
            .for_each(|v| *v = (*v * 100.0).round() / 100.0);
        out.insert(r.label.clone(), by);
    }
    out
}

pub fn table(recs: &[Record], files: u64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{:<6} {:>6} {:>6} {:<12} {:<30} {:>8} {:>9} {:>9} {:>7} {:<12} {:<14}",
        "part",
        "lat ms",
        "mounts",
        "capacity",
        "tool",
        "wall s",
        "files/s",
        "ops/file",
        "queued",
        "busy %",
        "idle at end s"
    );
    for r in recs {
        let caps: Vec<String> = r
            .scenario
            .nodes
            .iter()
            .map(|n| n.capacity.to_string())
            .collect();
        let ops: u64 = r.nodes.iter().map(|n| n.meta_ops + n.data_ops).sum();
        let ops = format!("{:.1}", ops as f64 / files.max(1) as f64);
        let queued: u64 = r.nodes.iter().map(|n| n.queued_ops).sum();
        let rate = match (&r.error, r.files_per_s) {
            (Some(_), _) => "failed".into(),
            (None, None) => "DIFFERS".into(),
            (None, rate) => fmt_rate(rate),
        };
        let busy: Vec<String> = busy(r)
            .iter()
            .map(|b| format!("{:.0}", b * 100.0))
            .collect();
        let idle: Vec<String> = r.idle_at_end_s.iter().map(|t| format!("{t:.2}")).collect();
        let _ = writeln!(
            s,
            "{:<6} {:>6} {:>6} {:<12} {:<30} {:>8.1} {:>9} {:>9} {:>7} {:<12} {:<14}",
            r.scenario.part,
            r.scenario.latency_ms,
            r.scenario.mounts(),
            caps.join("/"),
            r.label,
            r.wall_s,
            rate,
            ops,
            queued,
            busy.join("/"),
            idle.join("/")
        );
    }
    // The scaling curve: files/s by threads (columns) and mounts (rows), per latency (medians).
    let mut curve: BTreeMap<(String, usize), BTreeMap<usize, String>> = BTreeMap::new();
    let mut cols = std::collections::BTreeSet::new();
    for r in medians(recs).iter().filter(|r| r.scenario.part == "curve") {
        if let Tool::Vfxt(Threads::Fixed(t)) = r.scenario.tool {
            cols.insert(t);
            curve
                .entry((lat_key(r.scenario.latency_ms), r.scenario.mounts()))
                .or_default()
                .insert(t, fmt_rate(r.files_per_s));
        }
    }
    if !curve.is_empty() {
        let _ = write!(s, "\nengine files/s by threads\n{:<16}", "latency, mounts");
        for c in &cols {
            let _ = write!(s, "{c:>9}");
        }
        let _ = writeln!(s);
        for ((lat, m), row) in &curve {
            let _ = write!(s, "{:<16}", format!("{lat} ms, {m}"));
            for c in &cols {
                let _ = write!(s, "{:>9}", row.get(c).map_or("", |v| v.as_str()));
            }
            let _ = writeln!(s);
        }
    }
    let _ = writeln!(
        s,
        "\nround trips per file by operation\n{}",
        serde_json::to_string_pretty(&ops_per_file(recs, files)).unwrap()
    );
    let _ = writeln!(
        s,
        "\nfindings\n{}",
        serde_json::to_string_pretty(&findings(recs)).unwrap()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Scenario, Threads, Tool};
    use ingest_latencyfs::NodeConfig;

    fn rec(threads: usize, rate: Option<f64>) -> Record {
        Record {
            scenario: Scenario {
                part: "curve",
                tool: Tool::Vfxt(Threads::Fixed(threads)),
                latency_ms: 1.0,
                nodes: vec![NodeConfig::default()],
            },
            label: Tool::Vfxt(Threads::Fixed(threads)).label(),
            wall_s: 1.0,
            files_per_s: rate,
            identical: rate.is_some(),
            differences: 0,
            first_differences: Vec::new(),
            timed_out: false,
            error: None,
            nodes: Vec::new(),
            idle_at_end_s: Vec::new(),
            busy_by_tenth: Vec::new(),
        }
    }

    #[test]
    fn repeated_settings_count_by_their_median_and_a_bad_run_voids_the_setting() {
        let recs = [
            rec(16, Some(300.0)),
            rec(16, Some(100.0)),
            rec(64, Some(500.0)),
            rec(16, Some(200.0)),
            rec(64, None),
            rec(4, Some(10.0)),
            rec(4, Some(30.0)),
        ];
        let m = medians(&recs);
        let rate = |t: usize| {
            m.iter()
                .find(|r| r.scenario.tool == Tool::Vfxt(Threads::Fixed(t)))
                .unwrap()
                .files_per_s
        };
        assert_eq!(m.len(), 3);
        assert_eq!(rate(16), Some(200.0));
        assert_eq!(rate(64), None);
        assert_eq!(rate(4), Some(20.0));
    }

    #[test]
    fn a_median_record_is_one_run_whose_rate_times_time_is_the_files_it_copied() {
        // 1,000 files each time, the first run the fastest.
        let run = |threads: usize, wall_s: f64| Record {
            wall_s,
            ..rec(threads, Some(1000.0 / wall_s))
        };
        let recs = [
            run(8, 5.0),
            run(8, 10.0),
            run(8, 8.0),
            run(2, 100.0),
            run(2, 50.0),
        ];
        let m = medians(&recs);
        for r in &m {
            let files = r.files_per_s.unwrap() * r.wall_s;
            assert!((files - 1000.0).abs() < 1e-6, "{}: {files}", r.label);
        }
        assert_eq!(m[0].wall_s, 8.0, "the median run's own time");
        // An even count: the two middle rates (10 and 20 files/s) averaged, the time to match.
        assert_eq!(m[1].files_per_s, Some(15.0));
    }

    #[test]
    fn busy_by_tenth_is_each_tenths_slot_time_over_its_capacity() {
        // A node of capacity 2 over a 1 s run: fully busy in the first half (2 slots × 0.5 s),
        // idle after; polled every 0.1 s.
        let polls: Vec<(f64, Vec<u64>)> = (0..=10)
            .map(|k| {
                let t = k as f64 / 10.0;
                (t, vec![(t.min(0.5) * 2.0 * 1e6).round() as u64])
            })
            .collect();
        let node = NodeConfig {
            capacity: 2,
            ..NodeConfig::default()
        };
        let tenths = by_tenth(&polls, 1.0, &[node]);
        assert_eq!(
            tenths,
            vec![vec![1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
        );
        // Its last operation ended by the poll at 0.5 s: idle the last half.
        assert_eq!(idle_at_end(&polls, 1.0, 1), vec![0.5]);
    }
}
