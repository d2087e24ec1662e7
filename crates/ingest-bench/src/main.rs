//! `vfxt-bench copy`: generates (or reuses) deterministic datasets and, in one run, times
//! `vfxt-ingest copy` and the peer tools copying each into a fresh destination, checking every
//! copy against the source with `ingest_testkit::compare`.

mod measure;
mod report;
mod throttle;
mod tools;
mod verify;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ingest_testkit::{
    CompareOptions, Dataset, GENERATOR_VERSION, GenError, GenOptions, GenSummary, compare, generate,
};

use report::{BenchReport, DatasetReport, Machine, RunReport};
use tools::{Tool, VfxtArgs};

#[derive(Parser)]
#[command(
    name = "vfxt-bench",
    about = "Benchmarks vfxt-ingest against peer copy tools"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Times each tool copying each dataset and checks every copy.
    Copy(CopyArgs),
    /// Times each verifier checking an identical copy of each dataset, then checks that each
    /// one that reads contents finds one flipped byte.
    Verify(verify::VerifyArgs),
    /// Checks `vfxt-ingest copy --bytes-per-second` and `--files-per-second` hold their limits
    /// (within ±10% over the middle of a run of about --seconds) and still copy identically.
    Throttle(throttle::ThrottleArgs),
}

#[derive(clap::Args)]
struct CopyArgs {
    /// small, large, mixed, demo, kinds, or all (= small, large, mixed); comma-separated.
    #[arg(long, default_value = "all")]
    dataset: String,
    /// Multiplies file counts and large-file sizes (e.g. 0.01 for CI).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Comma-separated: vfxt, vfxt-run, cp, rsync, rsync-inplace, parallel, fpsync, fpsync4,
    /// manifest, rclone (the default leaves out issue 3's vfxt-run, fpsync4 and manifest).
    #[arg(
        long,
        default_value = "vfxt,cp,rsync,rsync-inplace,parallel,fpsync,rclone"
    )]
    tools: String,
    /// Where datasets are cached and copies are made (default: $TMPDIR/vfxt-bench).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The vfxt-ingest binary.
    #[arg(long, default_value = "target/release/vfxt-ingest")]
    vfxt: PathBuf,
    /// An extra argument for `vfxt-ingest copy` (repeat for several), e.g. --vfxt-arg=--threads=16.
    #[arg(long = "vfxt-arg", allow_hyphen_values = true)]
    vfxt_args: Vec<String>,
    /// Another vfxt-ingest build, run as the row `vfxt-base` beside `vfxt` (same arguments), so
    /// old and new are timed on the same machine at the same time.
    #[arg(long, value_name = "BIN")]
    baseline: Option<PathBuf>,
    /// What the baseline is called in the table, e.g. a commit.
    #[arg(long, default_value = "baseline", value_name = "LABEL")]
    baseline_label: String,
    #[arg(long, default_value_t = GenOptions::default().seed)]
    seed: u64,
    /// Do not try to drop the page cache between runs.
    #[arg(long)]
    no_drop_caches: bool,
    /// Do not apt-get install missing peer tools.
    #[arg(long)]
    no_install: bool,
    /// Keep each copy (under WORK/out) instead of deleting it after the check.
    #[arg(long)]
    keep: bool,
    /// Seconds after which a tool is killed (at most 60 on `kinds`, which is tiny: a tool
    /// slower than that there is stuck, as `cp -P` is reading a fifo).
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
    /// How many differences to show per flagged tool.
    #[arg(long, default_value_t = 5)]
    show: usize,
}

#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("--{field}: {message}")]
    BadArg {
        field: &'static str,
        message: String,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("generating the dataset: {0}")]
    Gen(#[from] GenError),
    /// The verify benchmark could not set up its identical copy.
    #[error("{0}")]
    Setup(String),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BenchError + 'a {
    move |source| BenchError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == measure::LAUNCHER_ARG) {
        // Before anything else, so the launcher stays small (see measure's docs).
        return measure::launcher_main(&args[2..]);
    }
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Copy(args) => exit(copy(&args)),
        Cmd::Verify(args) => exit(verify::verify(&args)),
        Cmd::Throttle(args) => exit(throttle::throttle(&args)),
    }
}

fn exit(r: Result<bool, BenchError>) -> ExitCode {
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("vfxt-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn parse_datasets(s: &str) -> Result<Vec<Dataset>, BenchError> {
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim) {
        if name == "all" {
            out.extend([Dataset::Small, Dataset::Large, Dataset::Mixed]);
        } else {
            out.push(name.parse().map_err(|_| BenchError::BadArg {
                field: "dataset",
                message: format!(
                    "unknown dataset {name:?}: valid are small, large, mixed, demo, kinds, all"
                ),
            })?);
        }
    }
    out.dedup();
    Ok(out)
}

/// Runs the benchmark; Ok(false) when vfxt-ingest ran and made a copy that is not identical.
fn copy(args: &CopyArgs) -> Result<bool, BenchError> {
    measure::install_interrupt_handler();
    let datasets = parse_datasets(&args.dataset)?;
    let mut tools = tools::parse_tools(&args.tools).map_err(|e| BenchError::BadArg {
        field: "tools",
        message: e.to_string(),
    })?;
    if args.baseline.is_some() && !tools.contains(&Tool::VfxtBase) {
        tools.push(Tool::VfxtBase);
        tools.sort();
    }
    check_scale_and_timeout(args.scale, args.timeout)?;
    let work = work_dir(args.work.as_deref())?;
    let root = rustix::process::geteuid().is_root();
    let vfxt = VfxtArgs {
        bin: std::path::absolute(&args.vfxt).map_err(io_err("resolve", &args.vfxt))?,
        extra: args.vfxt_args.clone(),
        baseline: args
            .baseline
            .as_ref()
            .map(|b| std::path::absolute(b).map_err(io_err("resolve", b)))
            .transpose()?,
    };

    let mut cache = if args.no_drop_caches {
        CacheDrop::Off
    } else {
        CacheDrop::Try
    };
    let mut installer = Installer {
        allowed: !args.no_install && root,
        updated: false,
        log: work.join("install.log"),
    };
    let compare_opts = CompareOptions {
        owner: root,
        ..CompareOptions::all()
    };
    let mut report = BenchReport {
        generator_version: GENERATOR_VERSION,
        machine: machine(root),
        page_cache_dropped: String::new(),
        datasets: Vec::new(),
    };
    for ds in datasets {
        let opts = GenOptions {
            seed: args.seed,
            scale: args.scale,
        };
        let (src, summary, generated_s) = cached_dataset(&work, ds, &opts)?;
        let mut d = DatasetReport {
            name: ds.name().into(),
            scale: args.scale,
            seed: args.seed,
            path: src.display().to_string(),
            summary,
            generated_s,
            runs: Vec::new(),
            targets: Vec::new(),
        };
        for &tool in &tools {
            let run = match available(tool, &vfxt, &mut installer) {
                Err(why) => RunReport::unavailable(tool.name(), &row_label(tool, args), why),
                Ok(()) => run_tool(
                    tool,
                    ds,
                    &src,
                    &d.summary,
                    &work,
                    &vfxt,
                    &mut cache,
                    &compare_opts,
                    args,
                    root,
                )?,
            };
            eprintln!(
                "vfxt-bench: {} {}: {}",
                ds,
                row_label(tool, args),
                run.unavailable.clone().unwrap_or_else(|| format!(
                    "{:.2} s, identical: {}",
                    run.wall_s, run.identical
                ))
            );
            d.runs.push(run);
        }
        report::finish_dataset(&mut d);
        report.page_cache_dropped = cache.note();
        print!("{}", report::table(&d, &cache.note()));
        println!();
        report.datasets.push(d);
    }
    report.page_cache_dropped = cache.note();
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).expect("the report is plain data");
        fs::write(path, text + "\n").map_err(io_err("write", path))?;
    }
    let vfxt_bad = report
        .datasets
        .iter()
        .flat_map(|d| &d.runs)
        .any(|r| r.tool == "vfxt" && r.available && !r.identical);
    Ok(!vfxt_bad)
}

/// The row's label: the baseline's carries `--baseline-label`.
fn row_label(tool: Tool, args: &CopyArgs) -> String {
    match tool {
        Tool::VfxtBase => format!("vfxt-ingest copy ({})", args.baseline_label),
        _ => tool.label().to_owned(),
    }
}

fn check_scale_and_timeout(scale: f64, timeout: u64) -> Result<(), BenchError> {
    if !(scale.is_finite() && scale > 0.0) {
        return Err(BenchError::BadArg {
            field: "scale",
            message: format!("{scale} is not a number above 0"),
        });
    }
    if timeout == 0 {
        return Err(BenchError::BadArg {
            field: "timeout",
            message: "must be at least 1 second".into(),
        });
    }
    Ok(())
}

/// `--work`, or $TMPDIR/vfxt-bench: created, and made absolute (fpsync requires it and the
/// parallel peer changes directory).
fn work_dir(work: Option<&Path>) -> Result<PathBuf, BenchError> {
    let work = work
        .map(Path::to_path_buf)
        .unwrap_or_else(|| std::env::temp_dir().join("vfxt-bench"));
    fs::create_dir_all(&work).map_err(io_err("create work directory", &work))?;
    work.canonicalize().map_err(io_err("resolve", &work))
}

#[allow(clippy::too_many_arguments)]
fn run_tool(
    tool: Tool,
    ds: Dataset,
    src: &Path,
    summary: &GenSummary,
    work: &Path,
    vfxt: &VfxtArgs,
    cache: &mut CacheDrop,
    compare_opts: &CompareOptions,
    args: &CopyArgs,
    root: bool,
) -> Result<RunReport, BenchError> {
    let dst = work.join("out").join(tool.name());
    let scratch = work.join("scratch").join(tool.name());
    let logs = work.join("logs");
    for d in [&dst, &scratch] {
        remove_tree(d)?;
        fs::create_dir_all(d).map_err(io_err("create", d))?;
    }
    fs::create_dir_all(&logs).map_err(io_err("create", &logs))?;
    let (out_path, err_path) = (
        logs.join(format!("{ds}-{}.stdout", tool.name())),
        logs.join(format!("{ds}-{}.stderr", tool.name())),
    );
    let cmd = tool.command(src, &dst, &scratch, vfxt);
    let command = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let stdout = fs::File::create(&out_path).map_err(io_err("create", &out_path))?;
    let stderr = fs::File::create(&err_path).map_err(io_err("create", &err_path))?;
    let launcher = std::env::current_exe().map_err(io_err("find", Path::new("/proc/self/exe")))?;
    let usage_file = work.join("scratch").join(format!("{}.usage", tool.name()));
    let limit = if ds == Dataset::Kinds {
        args.timeout.min(60)
    } else {
        args.timeout
    };
    let cache_dropped = cache.drop_now();
    let set_stdio = |c: &mut Command| {
        c.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    };
    let m = measure::run(
        &cmd,
        Some(&launcher),
        &usage_file,
        set_stdio,
        Duration::from_secs(limit),
    )
    .map_err(io_err("run", Path::new(&command)))?;
    let t = Instant::now();
    rustix::fs::sync();
    let sync_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let diffs = compare(src, &dst, compare_opts);
    let compare_s = t.elapsed().as_secs_f64();
    let promised = tool.promises(root);
    let (broken, not_promised): (Vec<_>, Vec<_>) = diffs.into_iter().partition(|d| {
        d.aspect.is_basic()
            || d.aspect == ingest_testkit::Aspect::SymlinkTarget
            || promised.contains(&d.aspect)
    });
    let not_kept = ingest_testkit::count_by_aspect(&not_promised);
    if !args.keep {
        remove_tree(&dst)?;
    }
    let identical = broken.is_empty() && m.outcome.success();
    let stderr_tail = (!identical).then(|| tail(&err_path, 5)).flatten();
    let cpu_s = m.usage.user_s + m.usage.sys_s;
    Ok(RunReport {
        tool: tool.name().into(),
        label: row_label(tool, args),
        command,
        available: true,
        unavailable: None,
        cache_dropped,
        outcome: m.outcome.to_string(),
        wall_s: m.wall_s,
        files_per_s: summary.non_dirs() as f64 / m.wall_s,
        mib_per_s: summary.bytes as f64 / 1048576.0 / m.wall_s,
        user_s: m.usage.user_s,
        sys_s: m.usage.sys_s,
        cpu_s,
        max_rss_mib: m.usage.max_rss_kib as f64 / 1024.0,
        sync_s,
        compare_s,
        identical,
        differences: broken.len(),
        first_differences: broken.into_iter().take(args.show).collect(),
        not_kept,
        vfxt_speedup: None,
        flagged: !identical,
        stderr_tail,
        tool_summary: matches!(tool, Tool::Vfxt | Tool::VfxtBase)
            .then(|| {
                fs::read(&out_path)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
            })
            .flatten(),
    })
}

/// The dataset under WORK/datasets, keyed by name, scale, seed and generator version; a
/// marker written after generation finishes tells a complete tree from an interrupted one.
fn cached_dataset(
    work: &Path,
    ds: Dataset,
    opts: &GenOptions,
) -> Result<(PathBuf, GenSummary, Option<f64>), BenchError> {
    let key = format!(
        "{ds}-scale{}-seed{:x}-gen{GENERATOR_VERSION}",
        opts.scale, opts.seed
    );
    let base = work.join("datasets");
    let (dir, marker) = (base.join(&key), base.join(format!("{key}.json")));
    if let Ok(text) = fs::read_to_string(&marker)
        && let Ok(summary) = serde_json::from_str::<GenSummary>(&text)
        && dir.is_dir()
    {
        return Ok((dir, summary, None));
    }
    remove_tree(&dir)?;
    eprintln!(
        "vfxt-bench: generating {ds} (scale {}) in {}",
        opts.scale,
        dir.display()
    );
    let t = Instant::now();
    let summary = generate(ds, &dir, opts)?;
    let secs = t.elapsed().as_secs_f64();
    rustix::fs::sync();
    let text = serde_json::to_string(&summary).expect("plain data");
    fs::write(&marker, text).map_err(io_err("write", &marker))?;
    Ok((dir, summary, Some(secs)))
}

/// Removes a tree, making read-only directories writable first (the kinds dataset has one).
fn remove_tree(p: &Path) -> Result<(), BenchError> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            let _ = Command::new("chmod").args(["-R", "u+rwx"]).arg(p).status();
            fs::remove_dir_all(p).map_err(io_err("remove", p))
        }
    }
}

fn tail(p: &Path, n: usize) -> Option<String> {
    let text = fs::read_to_string(p).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let t = lines[lines.len().saturating_sub(n)..].join("\n");
    (!t.is_empty()).then_some(t)
}

enum CacheDrop {
    Off,
    Try,
    Works,
    Denied(String),
}

impl CacheDrop {
    /// Writes back dirty pages and drops the page cache, so each tool starts cold.
    fn drop_now(&mut self) -> bool {
        if matches!(self, CacheDrop::Off | CacheDrop::Denied(_)) {
            return false;
        }
        rustix::fs::sync();
        match fs::write("/proc/sys/vm/drop_caches", "3") {
            Ok(()) => {
                *self = CacheDrop::Works;
                true
            }
            Err(e) => {
                *self = CacheDrop::Denied(e.to_string());
                false
            }
        }
    }

    fn note(&self) -> String {
        match self {
            CacheDrop::Off => "no (--no-drop-caches)".into(),
            CacheDrop::Try => "no (nothing ran)".into(),
            CacheDrop::Works => "yes".into(),
            CacheDrop::Denied(e) => format!("no (not permitted: {e})"),
        }
    }
}

struct Installer {
    allowed: bool,
    updated: bool,
    log: PathBuf,
}

impl Installer {
    fn install(&mut self, package: &str) -> bool {
        let run = |args: &[&str], log: &Path| {
            let Ok(out) = fs::OpenOptions::new().create(true).append(true).open(log) else {
                return false;
            };
            let Ok(err) = out.try_clone() else {
                return false;
            };
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .status()
                .is_ok_and(|s| s.success())
        };
        if run(
            &["install", "-y", "--no-install-recommends", package],
            &self.log,
        ) {
            return true;
        }
        if !self.updated {
            self.updated = true;
            run(&["update"], &self.log);
            return run(
                &["install", "-y", "--no-install-recommends", package],
                &self.log,
            );
        }
        false
    }
}

/// Ok when the tool can run; otherwise the "not available" reason for the table.
fn available(tool: Tool, vfxt: &VfxtArgs, installer: &mut Installer) -> Result<(), String> {
    let Some((program, package)) = tool.program() else {
        return match (tool, &vfxt.baseline) {
            (Tool::VfxtBase, None) => Err("not available: needs --baseline BIN".into()),
            (Tool::VfxtBase, Some(b)) => binary_available(b),
            _ => binary_available(&vfxt.bin),
        };
    };
    program_available(program, package, installer)
}

/// Ok when `bin` (a vfxt-ingest build) is an executable file.
fn binary_available(bin: &Path) -> Result<(), String> {
    if tools::is_executable(bin) {
        Ok(())
    } else {
        Err(format!(
            "not available: {} not found (build it: cargo build --release)",
            bin.display()
        ))
    }
}

/// Ok when `program` is on PATH, after installing its Debian `package` when allowed (root and
/// no --no-install); otherwise why not.
fn program_available(
    program: &str,
    package: &str,
    installer: &mut Installer,
) -> Result<(), String> {
    if tools::on_path(program).is_some() {
        return Ok(());
    }
    if !installer.allowed {
        return Err(format!(
            "not available: {program} is not installed (Debian package {package})"
        ));
    }
    eprintln!("vfxt-bench: installing {package} for {program}");
    if installer.install(package) && tools::on_path(program).is_some() {
        Ok(())
    } else {
        Err(format!(
            "not available: apt-get install {package} failed (see {})",
            installer.log.display()
        ))
    }
}

fn machine(root: bool) -> Machine {
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Machine {
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        mem_total_mib: mem_kib / 1024,
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        root,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_list_expands_all_and_names_the_bad_one() {
        assert_eq!(
            parse_datasets("all").unwrap(),
            vec![Dataset::Small, Dataset::Large, Dataset::Mixed]
        );
        assert_eq!(
            parse_datasets("demo,kinds").unwrap(),
            vec![Dataset::Demo, Dataset::Kinds]
        );
        let e = parse_datasets("small,huge").unwrap_err().to_string();
        assert_eq!(
            e,
            "--dataset: unknown dataset \"huge\": valid are small, large, mixed, demo, kinds, all"
        );
    }

    #[test]
    fn dataset_is_generated_once_then_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = GenOptions {
            scale: 0.01,
            ..GenOptions::default()
        };
        let (a, s1, g1) = cached_dataset(tmp.path(), Dataset::Demo, &opts).unwrap();
        assert!(g1.is_some());
        let (b, s2, g2) = cached_dataset(tmp.path(), Dataset::Demo, &opts).unwrap();
        assert_eq!((a, s1), (b, s2));
        assert_eq!(g2, None);
        // Another scale is another dataset.
        let (c, _, g3) = cached_dataset(
            tmp.path(),
            Dataset::Demo,
            &GenOptions {
                scale: 0.02,
                ..opts
            },
        )
        .unwrap();
        assert!(g3.is_some() && c.to_string_lossy().contains("scale0.02"));
    }
}
