//! `vfxt-bench verify`: what checking a copy costs, and whether each checker would notice a
//! wrong byte. For each dataset a reference copy is made once with `cp -a` and checked
//! identical with `ingest_testkit::compare`; then, with the page cache dropped before each run
//! when permitted, each verifier is timed over that same pair of trees: vfxt-ingest's checksum
//! and metadata verify (report-only `copy --verify-only` when the build has it, otherwise
//! `copy --verify X` over the identical destination: the copy pass skips everything, then
//! verifies), `rclone check --download` and an `rsync -a -c` second pass (`--dry-run
//! --itemize-changes`). Each must call the identical copy identical. Afterwards one byte in
//! the middle of one destination file is flipped, keeping its size and times, and every
//! verifier runs again: each that reads contents must report that path, or its row is flagged
//! and its time does not count.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ingest_testkit::{CompareOptions, GENERATOR_VERSION, GenOptions, GenSummary, compare};
use serde::Serialize;

use crate::measure::{self, Outcome};
use crate::report::Machine;
use crate::{
    BenchError, CacheDrop, Installer, binary_available, cached_dataset, check_scale_and_timeout,
    io_err, machine, parse_datasets, program_available, remove_tree, tail, work_dir,
};

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// small, large, mixed, demo, kinds, or all (= small, large, mixed); comma-separated.
    #[arg(long, default_value = "mixed,large")]
    dataset: String,
    /// Multiplies file counts and large-file sizes (e.g. 0.01 for CI).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Comma-separated: vfxt-checksum, vfxt-metadata, rclone, rsync (with --baseline also
    /// base-checksum and base-metadata, added by default).
    #[arg(long, default_value = "vfxt-checksum,vfxt-metadata,rclone,rsync")]
    tools: String,
    /// Where datasets are cached and the copy is made (default: $TMPDIR/vfxt-bench).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The vfxt-ingest binary.
    #[arg(long, default_value = "target/release/vfxt-ingest")]
    vfxt: PathBuf,
    /// An extra argument for the vfxt-ingest runs (repeat for several), e.g. --vfxt-arg=--threads=8.
    #[arg(long = "vfxt-arg", allow_hyphen_values = true)]
    vfxt_args: Vec<String>,
    /// Another vfxt-ingest build, timed as the rows base-checksum and base-metadata.
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
    /// Keep the copy (under WORK/out/verify, with the flipped byte put back).
    #[arg(long)]
    keep: bool,
    /// Seconds after which a verifier is killed.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VerifyTool {
    VfxtChecksum,
    VfxtMetadata,
    BaseChecksum,
    BaseMetadata,
    Rclone,
    Rsync,
}

impl VerifyTool {
    pub const ALL: [VerifyTool; 6] = [
        VerifyTool::VfxtChecksum,
        VerifyTool::VfxtMetadata,
        VerifyTool::BaseChecksum,
        VerifyTool::BaseMetadata,
        VerifyTool::Rclone,
        VerifyTool::Rsync,
    ];

    pub fn name(self) -> &'static str {
        match self {
            VerifyTool::VfxtChecksum => "vfxt-checksum",
            VerifyTool::VfxtMetadata => "vfxt-metadata",
            VerifyTool::BaseChecksum => "base-checksum",
            VerifyTool::BaseMetadata => "base-metadata",
            VerifyTool::Rclone => "rclone",
            VerifyTool::Rsync => "rsync",
        }
    }

    /// Whether it reads file contents, so that it must find the flipped byte.
    pub fn reads_contents(self) -> bool {
        !matches!(self, VerifyTool::VfxtMetadata | VerifyTool::BaseMetadata)
    }

    fn vfxt_verify(self) -> Option<&'static str> {
        match self {
            VerifyTool::VfxtChecksum | VerifyTool::BaseChecksum => Some("checksum"),
            VerifyTool::VfxtMetadata | VerifyTool::BaseMetadata => Some("metadata"),
            VerifyTool::Rclone | VerifyTool::Rsync => None,
        }
    }

    fn is_baseline(self) -> bool {
        matches!(self, VerifyTool::BaseChecksum | VerifyTool::BaseMetadata)
    }

    /// The program that must be on PATH and its Debian package (None for vfxt-ingest builds).
    fn program(self) -> Option<(&'static str, &'static str)> {
        match self {
            VerifyTool::Rclone => Some(("rclone", "rclone")),
            VerifyTool::Rsync => Some(("rsync", "rsync")),
            _ => None,
        }
    }

    /// The row's label; a vfxt-ingest build's says how it was run.
    pub fn label(self, bins: &Bins) -> String {
        match (self.vfxt_verify(), self.vfxt(bins)) {
            (Some(v), Some(b)) => {
                let who = if self.is_baseline() {
                    format!("vfxt-ingest ({})", b.label)
                } else {
                    "vfxt-ingest".to_owned()
                };
                match b.mode {
                    VfxtMode::VerifyOnly => format!("{who} --verify-only {v}"),
                    VfxtMode::StandIn => format!("{who} copy --verify {v} (stand-in)"),
                }
            }
            (Some(v), None) => format!("vfxt-ingest (baseline) --verify {v}"),
            (None, _) if self == VerifyTool::Rclone => "rclone check --download".to_owned(),
            (None, _) => "rsync -a -c --dry-run".to_owned(),
        }
    }

    fn vfxt(self, bins: &Bins) -> Option<&Build> {
        match self {
            VerifyTool::VfxtChecksum | VerifyTool::VfxtMetadata => Some(&bins.vfxt),
            VerifyTool::BaseChecksum | VerifyTool::BaseMetadata => bins.baseline.as_ref(),
            VerifyTool::Rclone | VerifyTool::Rsync => None,
        }
    }

    /// The command that checks `dst` against `src`. `named` is where a tool that can write the
    /// paths it found different writes them (for the detection run; the timed runs write none).
    /// `scratch` is a private directory for the tool's own files.
    pub fn command(
        self,
        src: &Path,
        dst: &Path,
        scratch: &Path,
        bins: &Bins,
        named: Option<&Path>,
    ) -> Command {
        let slash = |p: &Path| format!("{}/", p.display());
        if let (Some(verify), Some(build)) = (self.vfxt_verify(), self.vfxt(bins)) {
            let mut c = Command::new(&build.bin);
            c.arg("copy");
            if build.mode == VfxtMode::VerifyOnly {
                c.arg("--verify-only");
            }
            c.args(["--verify", verify])
                .arg(src)
                .arg(dst)
                .arg("--json")
                .args(&bins.extra);
            if let Some(f) = named {
                c.arg("--report").arg(f);
            }
            return c;
        }
        match self {
            VerifyTool::Rclone => {
                let mut c = Command::new("rclone");
                c.args(["check", "--download"]).arg(src).arg(dst);
                if let Some(f) = named {
                    c.arg("--differ").arg(f);
                }
                c.env("RCLONE_CONFIG", scratch.join("rclone.conf"));
                c
            }
            _ => {
                let mut c = Command::new("rsync");
                c.args(["-a", "-c", "--dry-run", "--itemize-changes"])
                    .arg(slash(src))
                    .arg(slash(dst));
                c
            }
        }
    }

    /// Ok when the verifier called the identical copy identical; otherwise what it said.
    fn judge_identical(self, mode: Option<VfxtMode>, seen: &Seen) -> Result<(), String> {
        let exited0 = *seen.outcome == Outcome::Exited(0);
        match self {
            VerifyTool::Rclone if exited0 => Ok(()),
            VerifyTool::Rsync if exited0 => match itemized(seen.stdout).first() {
                None => Ok(()),
                Some(first) => Err(format!(
                    "itemized {} changes on an identical copy, the first: {first}",
                    itemized(seen.stdout).len()
                )),
            },
            VerifyTool::Rclone | VerifyTool::Rsync => {
                Err(format!("{} on an identical copy", seen.outcome))
            }
            _ => {
                if !exited0 {
                    return Err(format!("{} on an identical copy", seen.outcome));
                }
                let Some(s) = seen.summary else {
                    return Err("printed no --json summary".into());
                };
                let v = &s["verify"];
                if !v.is_object() {
                    return Err("its summary has no verify counts".into());
                }
                let n = |k: &str| v[k].as_u64().unwrap_or(0);
                let found = n("missing") + n("mismatched") + n("extraneous") + n("errors");
                if found > 0 {
                    return Err(format!(
                        "reported {found} differences or errors on an identical copy"
                    ));
                }
                let copied = s["copy"]["filesCopied"].as_u64().unwrap_or(0);
                if mode == Some(VfxtMode::StandIn) && copied > 0 {
                    return Err(format!(
                        "its copy pass copied {copied} files over an identical copy"
                    ));
                }
                Ok(())
            }
        }
    }

    /// Whether the verifier reported the flipped file `rel`, and the evidence either way.
    fn judge_detection(self, mode: Option<VfxtMode>, seen: &Seen, rel: &str) -> (bool, String) {
        match self {
            VerifyTool::Rsync => {
                let line = itemized(seen.stdout).into_iter().find(|l| {
                    l.split_once(' ').is_some_and(|(flags, name)| {
                        name == rel
                            && flags.starts_with('>')
                            && flags.as_bytes().get(2) == Some(&b'c')
                    })
                });
                match (seen.outcome, line) {
                    (Outcome::Exited(0), Some(l)) => (true, format!("itemized `{l}`")),
                    (o, l) => (
                        false,
                        format!(
                            "{o}, itemized {} lines, none `>fc... {rel}`{}",
                            itemized(seen.stdout).len(),
                            l.map(|l| format!(" ({l})")).unwrap_or_default()
                        ),
                    ),
                }
            }
            VerifyTool::Rclone => {
                let named = seen
                    .named
                    .is_some_and(|t| t.lines().any(|l| l.trim_end() == rel));
                let failed = matches!(seen.outcome, Outcome::Exited(c) if *c != 0);
                let why = format!(
                    "{}, --differ {} the path",
                    seen.outcome,
                    if named { "names" } else { "does not name" }
                );
                (failed && named, why)
            }
            _ => {
                // The report's entries for the flipped path, other than "matched".
                let entries: Vec<String> = seen
                    .named
                    .unwrap_or("")
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter(|e| {
                        e["path"]
                            .as_str()
                            .is_some_and(|p| p.trim_start_matches("./").trim_matches('/') == rel)
                    })
                    .map(|e| e["outcome"].as_str().unwrap_or("?").to_owned())
                    .filter(|o| o != "matched")
                    .collect();
                let mismatched = seen
                    .summary
                    .and_then(|s| s["verify"]["mismatched"].as_u64())
                    .unwrap_or(0);
                let reported = match mode {
                    // Report-only: a difference is the exit status 1.
                    Some(VfxtMode::VerifyOnly) => *seen.outcome == Outcome::Exited(1),
                    // The stand-in repairs what it finds and may exit 0: its counts tell.
                    _ => mismatched > 0,
                };
                let why = format!(
                    "{}, {mismatched} mismatched, --report {}",
                    seen.outcome,
                    if entries.is_empty() {
                        "does not name the path".to_owned()
                    } else {
                        format!("names it ({})", entries.join(", "))
                    }
                );
                (reported && !entries.is_empty(), why)
            }
        }
    }
}

/// What one run printed and wrote.
struct Seen<'a> {
    outcome: &'a Outcome,
    stdout: &'a str,
    /// vfxt-ingest's `--json` summary.
    summary: Option<&'a serde_json::Value>,
    /// The `--report` (vfxt-ingest) or `--differ` (rclone) file.
    named: Option<&'a str>,
}

/// rsync's `--itemize-changes` lines.
fn itemized(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| !l.trim().is_empty()).collect()
}

/// How a vfxt-ingest build is run: with `copy --verify-only` when it has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VfxtMode {
    /// `copy --verify-only --verify X`: report only, exit 1 on a difference.
    VerifyOnly,
    /// `copy --verify X` over the identical destination: the copy pass skips everything, then
    /// the verify pass runs (and repairs what it finds).
    StandIn,
}

#[derive(Clone, Debug, Serialize)]
pub struct Build {
    pub bin: PathBuf,
    pub label: String,
    pub mode: VfxtMode,
}

impl Build {
    fn new(bin: PathBuf, label: &str) -> Build {
        let help = Command::new(&bin)
            .args(["copy", "--help"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        let mode = match help {
            Ok(o) if String::from_utf8_lossy(&o.stdout).contains("--verify-only") => {
                VfxtMode::VerifyOnly
            }
            _ => VfxtMode::StandIn,
        };
        Build {
            bin,
            label: label.to_owned(),
            mode,
        }
    }
}

pub struct Bins {
    pub vfxt: Build,
    pub baseline: Option<Build>,
    pub extra: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub generator_version: u32,
    pub machine: Machine,
    /// "yes", or why the page cache could not be dropped between runs.
    pub page_cache_dropped: String,
    pub vfxt: Build,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Build>,
    pub datasets: Vec<VerifyDataset>,
}

#[derive(Debug, Serialize)]
pub struct VerifyDataset {
    pub name: String,
    pub scale: f64,
    pub seed: u64,
    pub path: String,
    pub summary: GenSummary,
    pub generated_s: Option<f64>,
    /// The copy every verifier checks.
    pub reference_copy: ReferenceCopy,
    /// The byte flipped for the detection runs.
    pub flipped: Flipped,
    /// `ingest_testkit::compare` found the copy still identical after the timed runs.
    pub unchanged_by_timed_runs: bool,
    pub runs: Vec<VerifyRun>,
}

#[derive(Debug, Serialize)]
pub struct ReferenceCopy {
    pub command: String,
    pub wall_s: f64,
    pub compare_s: f64,
    pub identical: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Flipped {
    pub path: String,
    pub offset: u64,
    pub size: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct VerifyRun {
    pub tool: String,
    pub label: String,
    pub command: String,
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    pub reads_contents: bool,
    pub cache_dropped: bool,
    pub outcome: String,
    pub wall_s: f64,
    pub files_per_s: f64,
    /// Apparent bytes of regular files / wall s.
    pub mib_per_s: f64,
    pub user_s: f64,
    pub sys_s: f64,
    pub cpu_s: f64,
    pub max_rss_mib: f64,
    /// Wall s over vfxt-ingest's checksum verify's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_vfxt: Option<f64>,
    /// It called the identical copy identical.
    pub clean_on_identical: bool,
    pub identical_verdict: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detection: Option<Detection>,
    /// The numbers do not count: it failed, called the identical copy different, or (reading
    /// contents) missed the flipped byte.
    pub flagged: bool,
    pub flag_reasons: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr_tail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_summary: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct Detection {
    pub command: String,
    /// It reads contents, so it must find the flipped byte.
    pub expected: bool,
    pub detected: bool,
    pub outcome: String,
    pub wall_s: f64,
    pub evidence: String,
}

fn parse_tools(list: &str, baseline: bool) -> Result<Vec<VerifyTool>, BenchError> {
    let mut set = BTreeSet::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let t = VerifyTool::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| BenchError::BadArg {
                field: "tools",
                message: format!(
                    "unknown verifier {name:?}: valid are {}",
                    VerifyTool::ALL.map(VerifyTool::name).join(", ")
                ),
            })?;
        set.insert(t);
    }
    if set.is_empty() {
        return Err(BenchError::BadArg {
            field: "tools",
            message: "no verifier named".into(),
        });
    }
    if baseline {
        set.extend([VerifyTool::BaseChecksum, VerifyTool::BaseMetadata]);
    }
    Ok(set.into_iter().collect())
}

/// Runs the verify benchmark; Ok(false) when vfxt-ingest's checksum verify is flagged or a
/// timed run changed the copy.
pub fn verify(args: &VerifyArgs) -> Result<bool, BenchError> {
    measure::install_interrupt_handler();
    let datasets = parse_datasets(&args.dataset)?;
    let tools = parse_tools(&args.tools, args.baseline.is_some())?;
    check_scale_and_timeout(args.scale, args.timeout)?;
    let work = work_dir(args.work.as_deref())?;
    let root = rustix::process::geteuid().is_root();
    let abs = |p: &Path| std::path::absolute(p).map_err(io_err("resolve", p));
    let bins = Bins {
        vfxt: Build::new(abs(&args.vfxt)?, "vfxt"),
        baseline: args
            .baseline
            .as_deref()
            .map(|b| Ok::<_, BenchError>(Build::new(abs(b)?, &args.baseline_label)))
            .transpose()?,
        extra: args.vfxt_args.clone(),
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
    let mut report = VerifyReport {
        generator_version: GENERATOR_VERSION,
        machine: machine(root),
        page_cache_dropped: String::new(),
        vfxt: bins.vfxt.clone(),
        baseline: bins.baseline.clone(),
        datasets: Vec::new(),
    };
    let mut ok = true;
    for ds in datasets {
        let opts = GenOptions {
            seed: args.seed,
            scale: args.scale,
        };
        let (src, summary, generated_s) = cached_dataset(&work, ds, &opts)?;
        let dst = work.join("out").join("verify");
        let (reference_copy, flip) = reference_copy(&src, &dst, &compare_opts)?;
        eprintln!(
            "vfxt-bench: {ds}: reference copy by cp -a in {:.2} s, identical; flipped byte: {} @ {}",
            reference_copy.wall_s, flip.rel, flip.offset
        );
        let logs = work.join("logs");
        fs::create_dir_all(&logs).map_err(io_err("create", &logs))?;
        let ctx = Ctx {
            src: &src,
            dst: &dst,
            work: &work,
            logs: &logs,
            bins: &bins,
            summary: &summary,
            limit: Duration::from_secs(args.timeout),
            ds: ds.name(),
        };
        // Timed runs over the identical copy.
        let mut runs = Vec::new();
        for &tool in &tools {
            let ready = match tool.program() {
                Some((program, package)) => program_available(program, package, &mut installer),
                None => match tool.vfxt(&bins) {
                    Some(b) => binary_available(&b.bin),
                    None => Err("not available: needs --baseline BIN".into()),
                },
            };
            let run = match ready {
                Err(why) => VerifyRun {
                    tool: tool.name().into(),
                    label: tool.label(&bins),
                    unavailable: Some(why),
                    reads_contents: tool.reads_contents(),
                    outcome: "not run".into(),
                    flagged: true,
                    ..Default::default()
                },
                Ok(()) => ctx.timed(tool, &mut cache)?,
            };
            eprintln!(
                "vfxt-bench: {ds} {}: {}",
                run.label,
                run.unavailable
                    .clone()
                    .unwrap_or_else(|| format!("{:.2} s, {}", run.wall_s, run.identical_verdict))
            );
            runs.push(run);
        }
        // Nothing above may have written into the copy.
        let unchanged = compare(&src, &dst, &compare_opts).is_empty();
        ok &= unchanged;
        // Detection runs: one byte flipped, size and times kept.
        for run in runs.iter_mut().filter(|r| r.available) {
            let tool = *tools.iter().find(|t| t.name() == run.tool).expect("listed");
            flip.apply(&dst, flip.original ^ 0xff)
                .map_err(io_err("flip a byte in", &dst.join(&flip.rel)))?;
            let d = ctx.detect(tool, &flip.rel)?;
            eprintln!(
                "vfxt-bench: {ds} {}: flipped byte {}: {}",
                run.label,
                if d.detected { "found" } else { "not found" },
                d.evidence
            );
            if d.expected && !d.detected {
                run.flagged = true;
                run.flag_reasons.push(format!(
                    "missed the flipped byte in {}: {}",
                    flip.rel, d.evidence
                ));
            }
            run.detection = Some(d);
        }
        flip.apply(&dst, flip.original)
            .map_err(io_err("restore a byte in", &dst.join(&flip.rel)))?;
        if !args.keep {
            remove_tree(&dst)?;
        }
        let vfxt_wall = runs
            .iter()
            .find(|r| r.tool == VerifyTool::VfxtChecksum.name() && r.available)
            .map(|r| r.wall_s)
            .filter(|w| *w > 0.0);
        for r in runs.iter_mut().filter(|r| r.available) {
            r.vs_vfxt = vfxt_wall.map(|v| r.wall_s / v);
        }
        ok &= !runs
            .iter()
            .any(|r| r.tool == VerifyTool::VfxtChecksum.name() && r.available && r.flagged);
        let d = VerifyDataset {
            name: ds.name().into(),
            scale: args.scale,
            seed: args.seed,
            path: src.display().to_string(),
            summary,
            generated_s,
            reference_copy,
            flipped: Flipped {
                path: flip.rel.clone(),
                offset: flip.offset,
                size: flip.size,
            },
            unchanged_by_timed_runs: unchanged,
            runs,
        };
        report.page_cache_dropped = cache.note();
        print!("{}", table(&d, &cache.note()));
        println!();
        report.datasets.push(d);
    }
    report.page_cache_dropped = cache.note();
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).expect("the report is plain data");
        fs::write(path, text + "\n").map_err(io_err("write", path))?;
    }
    Ok(ok)
}

/// What every run of one dataset shares.
struct Ctx<'a> {
    src: &'a Path,
    dst: &'a Path,
    work: &'a Path,
    logs: &'a Path,
    bins: &'a Bins,
    summary: &'a GenSummary,
    limit: Duration,
    ds: &'a str,
}

/// One run's measurements and what it printed.
struct Ran {
    command: String,
    m: measure::Measured,
    stdout: String,
    err_path: PathBuf,
    named: Option<String>,
    summary: Option<serde_json::Value>,
}

impl Ctx<'_> {
    fn run(&self, tool: VerifyTool, detect: bool) -> Result<Ran, BenchError> {
        let scratch = self
            .work
            .join("scratch")
            .join(format!("verify-{}", tool.name()));
        remove_tree(&scratch)?;
        fs::create_dir_all(&scratch).map_err(io_err("create", &scratch))?;
        let stem = format!(
            "verify-{}-{}{}",
            self.ds,
            tool.name(),
            if detect { "-detect" } else { "" }
        );
        let (out_path, err_path) = (
            self.logs.join(format!("{stem}.stdout")),
            self.logs.join(format!("{stem}.stderr")),
        );
        let named_path = scratch.join("named.txt");
        let cmd = tool.command(
            self.src,
            self.dst,
            &scratch,
            self.bins,
            detect.then_some(named_path.as_path()),
        );
        let command = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let stdout = fs::File::create(&out_path).map_err(io_err("create", &out_path))?;
        let stderr = fs::File::create(&err_path).map_err(io_err("create", &err_path))?;
        let launcher =
            std::env::current_exe().map_err(io_err("find", Path::new("/proc/self/exe")))?;
        let usage_file = scratch.join("usage");
        let m = measure::run(
            &cmd,
            Some(&launcher),
            &usage_file,
            |c: &mut Command| {
                c.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
            },
            self.limit,
        )
        .map_err(io_err("run", Path::new(&command)))?;
        let stdout = fs::read_to_string(&out_path).unwrap_or_default();
        let summary = tool
            .vfxt_verify()
            .and_then(|_| serde_json::from_str(&stdout).ok());
        Ok(Ran {
            command,
            m,
            stdout,
            err_path,
            named: fs::read_to_string(&named_path).ok(),
            summary,
        })
    }

    /// Times `tool` over the identical copy, from a dropped page cache when permitted.
    fn timed(&self, tool: VerifyTool, cache: &mut CacheDrop) -> Result<VerifyRun, BenchError> {
        let cache_dropped = cache.drop_now();
        let r = self.run(tool, false)?;
        let mode = tool.vfxt(self.bins).map(|b| b.mode);
        let seen = Seen {
            outcome: &r.m.outcome,
            stdout: &r.stdout,
            summary: r.summary.as_ref(),
            named: None,
        };
        let verdict = tool.judge_identical(mode, &seen);
        let clean = verdict.is_ok();
        let cpu_s = r.m.usage.user_s + r.m.usage.sys_s;
        Ok(VerifyRun {
            tool: tool.name().into(),
            label: tool.label(self.bins),
            command: r.command,
            available: true,
            unavailable: None,
            reads_contents: tool.reads_contents(),
            cache_dropped,
            outcome: r.m.outcome.to_string(),
            wall_s: r.m.wall_s,
            files_per_s: self.summary.non_dirs() as f64 / r.m.wall_s,
            mib_per_s: self.summary.bytes as f64 / 1048576.0 / r.m.wall_s,
            user_s: r.m.usage.user_s,
            sys_s: r.m.usage.sys_s,
            cpu_s,
            max_rss_mib: r.m.usage.max_rss_kib as f64 / 1024.0,
            vs_vfxt: None,
            clean_on_identical: clean,
            identical_verdict: match &verdict {
                Ok(()) => "identical".into(),
                Err(e) => e.clone(),
            },
            detection: None,
            flagged: !clean,
            flag_reasons: verdict.err().into_iter().collect(),
            stderr_tail: (!clean).then(|| tail(&r.err_path, 5)).flatten(),
            tool_summary: r.summary,
        })
    }

    /// Runs `tool` over the copy with one byte flipped in `rel`.
    fn detect(&self, tool: VerifyTool, rel: &str) -> Result<Detection, BenchError> {
        let r = self.run(tool, true)?;
        let mode = tool.vfxt(self.bins).map(|b| b.mode);
        let seen = Seen {
            outcome: &r.m.outcome,
            stdout: &r.stdout,
            summary: r.summary.as_ref(),
            named: r.named.as_deref(),
        };
        let (detected, evidence) = tool.judge_detection(mode, &seen, rel);
        Ok(Detection {
            command: r.command,
            expected: tool.reads_contents(),
            detected,
            outcome: r.m.outcome.to_string(),
            wall_s: r.m.wall_s,
            evidence,
        })
    }
}

/// The byte the detection runs flip: in the middle of the largest regular file of the source
/// that is not sparse, has one link and a plain name.
struct Flip {
    rel: String,
    offset: u64,
    size: u64,
    original: u8,
}

impl Flip {
    fn choose(src: &Path) -> io::Result<Option<(String, u64)>> {
        let mut best: Option<(String, u64)> = None;
        let mut stack = vec![String::new()];
        while let Some(dir) = stack.pop() {
            let mut names: Vec<String> = fs::read_dir(src.join(&dir))?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect();
            names.sort();
            // Depth first, in name order, so the choice is the same every time.
            for name in names.into_iter().rev() {
                let rel = if dir.is_empty() {
                    name
                } else {
                    format!("{dir}/{name}")
                };
                let m = fs::symlink_metadata(src.join(&rel))?;
                if m.is_dir() {
                    stack.push(rel);
                } else if m.is_file()
                    && m.nlink() == 1
                    && m.len() > 0
                    && m.blocks() * 512 >= m.len()
                    && rel
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
                    && best
                        .as_ref()
                        .is_none_or(|(r, s)| m.len() > *s || (m.len() == *s && rel < *r))
                {
                    best = Some((rel, m.len()));
                }
            }
        }
        Ok(best)
    }

    /// Writes `value` at the offset, then puts the file's access and modification times back.
    fn apply(&self, root: &Path, value: u8) -> io::Result<()> {
        let path = root.join(&self.rel);
        let m = fs::metadata(&path)?;
        let f = fs::OpenOptions::new().write(true).open(&path)?;
        f.write_all_at(&[value], self.offset)?;
        f.set_times(
            fs::FileTimes::new()
                .set_accessed(m.accessed()?)
                .set_modified(m.modified()?),
        )?;
        Ok(())
    }
}

/// Makes the copy every verifier checks with `cp -a` (an engine-independent copier), checks it
/// identical, and picks the byte to flip.
fn reference_copy(
    src: &Path,
    dst: &Path,
    opts: &CompareOptions,
) -> Result<(ReferenceCopy, Flip), BenchError> {
    remove_tree(dst)?;
    fs::create_dir_all(dst).map_err(io_err("create", dst))?;
    let t = Instant::now();
    let st = Command::new("cp")
        .arg("-a")
        .arg(src.join("."))
        .arg(dst)
        .stdin(Stdio::null())
        .status()
        .map_err(io_err("run cp -a into", dst))?;
    rustix::fs::sync();
    let wall_s = t.elapsed().as_secs_f64();
    if !st.success() {
        return Err(BenchError::Setup(format!(
            "cp -a {} {}: {st}",
            src.display(),
            dst.display()
        )));
    }
    let t = Instant::now();
    let diffs = compare(src, dst, opts);
    let compare_s = t.elapsed().as_secs_f64();
    if let Some(first) = diffs.first() {
        return Err(BenchError::Setup(format!(
            "the reference copy made by cp -a differs from the source in {} ways, the first: {first}",
            diffs.len()
        )));
    }
    let Some((rel, size)) = Flip::choose(src).map_err(io_err("walk", src))? else {
        return Err(BenchError::Setup(format!(
            "{} has no plain, non-sparse regular file to flip a byte in",
            src.display()
        )));
    };
    let offset = size / 2;
    let mut b = [0u8];
    fs::File::open(dst.join(&rel))
        .and_then(|f| f.read_exact_at(&mut b, offset))
        .map_err(io_err("read", &dst.join(&rel)))?;
    Ok((
        ReferenceCopy {
            command: format!("cp -a {}/. {}", src.display(), dst.display()),
            wall_s,
            compare_s,
            identical: true,
        },
        Flip {
            rel,
            offset,
            size,
            original: b[0],
        },
    ))
}

/// The table for one dataset, with the reasons of every flagged run under it.
pub fn table(d: &VerifyDataset, cache_note: &str) -> String {
    let mut s = String::new();
    let origin = match d.generated_s {
        Some(t) => format!("generated in {t:.1} s"),
        None => "cached".to_owned(),
    };
    let _ = writeln!(
        s,
        "verify, dataset {} (scale {}): {} files, {} dirs, {:.1} MiB ({origin}); copy by cp -a in {:.1} s, identical; page cache dropped before each run: {cache_note}",
        d.name,
        d.scale,
        d.summary.non_dirs(),
        d.summary.dirs,
        d.summary.bytes as f64 / 1048576.0,
        d.reference_copy.wall_s,
    );
    let _ = writeln!(
        s,
        "flipped for the detection runs: byte {} of {} ({} bytes), size and times kept",
        d.flipped.offset, d.flipped.path, d.flipped.size
    );
    // The label column fits the longest label and its "(!)".
    let w = d
        .runs
        .iter()
        .map(|r| r.label.len() + 4)
        .max()
        .unwrap_or(0)
        .max(30);
    let _ = writeln!(
        s,
        "{:<w$} {:>8} {:>8} {:>9} {:>7} {:>8} {:>9} {:>12} {:>7}",
        "verifier",
        "wall s",
        "MiB/s",
        "files/s",
        "CPU s",
        "RSS MiB",
        "identical",
        "flipped byte",
        "vs vfxt"
    );
    for r in &d.runs {
        if !r.available {
            let _ = writeln!(
                s,
                "{:<w$} {}",
                r.label,
                r.unavailable.as_deref().unwrap_or("not available")
            );
            continue;
        }
        let label = if r.flagged {
            format!("{} (!)", r.label)
        } else {
            r.label.clone()
        };
        let identical = if r.clean_on_identical { "yes" } else { "NO" };
        let found = match &r.detection {
            None => "-",
            Some(d) if d.detected => "found",
            Some(d) if d.expected => "MISSED",
            Some(_) => "not read",
        };
        let vs = r
            .vs_vfxt
            .map(|x| format!("{x:.2}"))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "{label:<w$} {:>8.2} {:>8.1} {:>9.0} {:>7.2} {:>8.1} {identical:>9} {found:>12} {vs:>7}",
            r.wall_s, r.mib_per_s, r.files_per_s, r.cpu_s, r.max_rss_mib
        );
    }
    if !d.unchanged_by_timed_runs {
        let _ = writeln!(
            s,
            "  (!) the copy differed from the source after the timed runs: a verifier wrote into it"
        );
    }
    for r in d.runs.iter().filter(|r| r.available && r.flagged) {
        for why in &r.flag_reasons {
            let _ = writeln!(s, "  (!) {}: {why}", r.label);
        }
        if let Some(t) = &r.stderr_tail {
            for line in t.lines() {
                let _ = writeln!(s, "        stderr: {line}");
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bins(mode: VfxtMode) -> Bins {
        Bins {
            vfxt: Build {
                bin: "/x/vfxt-ingest".into(),
                label: "vfxt".into(),
                mode,
            },
            baseline: None,
            extra: vec![],
        }
    }

    fn argv(c: &Command) -> Vec<String> {
        std::iter::once(c.get_program())
            .chain(c.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn commands_follow_the_builds_mode() {
        let (s, d, t) = (Path::new("/s"), Path::new("/d"), Path::new("/t"));
        let c = VerifyTool::VfxtChecksum.command(s, d, t, &bins(VfxtMode::VerifyOnly), None);
        assert_eq!(
            argv(&c),
            [
                "/x/vfxt-ingest",
                "copy",
                "--verify-only",
                "--verify",
                "checksum",
                "/s",
                "/d",
                "--json"
            ]
        );
        let c = VerifyTool::VfxtMetadata.command(
            s,
            d,
            t,
            &bins(VfxtMode::StandIn),
            Some(Path::new("/r")),
        );
        assert_eq!(
            argv(&c)[1..],
            [
                "copy", "--verify", "metadata", "/s", "/d", "--json", "--report", "/r"
            ]
        );
        let b = bins(VfxtMode::StandIn);
        assert_eq!(
            argv(&VerifyTool::Rclone.command(s, d, t, &b, None)),
            ["rclone", "check", "--download", "/s", "/d"]
        );
        assert_eq!(
            argv(&VerifyTool::Rsync.command(s, d, t, &b, None)),
            [
                "rsync",
                "-a",
                "-c",
                "--dry-run",
                "--itemize-changes",
                "/s/",
                "/d/"
            ]
        );
        assert_eq!(
            VerifyTool::VfxtChecksum.label(&bins(VfxtMode::StandIn)),
            "vfxt-ingest copy --verify checksum (stand-in)"
        );
    }

    #[test]
    fn tools_parse_and_the_baseline_adds_its_rows() {
        assert_eq!(
            parse_tools("rsync,vfxt-checksum", false).unwrap(),
            [VerifyTool::VfxtChecksum, VerifyTool::Rsync]
        );
        assert_eq!(parse_tools("rclone", true).unwrap().len(), 3);
        let e = parse_tools("md5sum", false).unwrap_err().to_string();
        assert!(e.contains("unknown verifier \"md5sum\""), "{e}");
    }

    #[test]
    fn verdicts_need_the_path_named_and_the_difference_reported() {
        let rel = "tree/a/f1";
        let exit = |c| Outcome::Exited(c);
        let (o0, o1) = (exit(0), exit(1));
        let seen = |outcome, stdout, named| Seen {
            outcome,
            stdout,
            summary: None,
            named,
        };
        // rsync: only a content line for that very path counts.
        let t = VerifyTool::Rsync;
        assert!(
            t.judge_detection(None, &seen(&o0, ">fc........ tree/a/f1\n", None), rel)
                .0
        );
        assert!(
            !t.judge_detection(None, &seen(&o0, ">fc........ tree/a/f10\n", None), rel)
                .0
        );
        assert!(
            !t.judge_detection(None, &seen(&o0, ".f..t...... tree/a/f1\n", None), rel)
                .0
        );
        assert!(t.judge_identical(None, &seen(&o0, "", None)).is_ok());
        assert!(
            t.judge_identical(None, &seen(&o0, ".d..t...... tree/\n", None))
                .is_err()
        );
        // rclone: a failed exit and the path in --differ.
        let t = VerifyTool::Rclone;
        assert!(
            t.judge_detection(None, &seen(&o1, "", Some("tree/a/f1\n")), rel)
                .0
        );
        assert!(
            !t.judge_detection(None, &seen(&o0, "", Some("tree/a/f1\n")), rel)
                .0
        );
        assert!(!t.judge_detection(None, &seen(&o1, "", Some("")), rel).0);
        // vfxt-ingest, report-only: exit 1 and a report entry other than "matched".
        let t = VerifyTool::VfxtChecksum;
        let m = Some(VfxtMode::VerifyOnly);
        let report = "{\"path\":\"tree/a/f10\",\"outcome\":\"matched\"}\n{\"path\":\"tree/a/f1\",\"outcome\":\"mismatched\"}\n";
        assert!(t.judge_detection(m, &seen(&o1, "", Some(report)), rel).0);
        assert!(!t.judge_detection(m, &seen(&o0, "", Some(report)), rel).0);
        let only_matched = "{\"path\":\"tree/a/f1\",\"outcome\":\"matched\"}\n";
        assert!(
            !t.judge_detection(m, &seen(&o1, "", Some(only_matched)), rel)
                .0
        );
        // The stand-in repairs and exits 0: its mismatched count tells.
        let summary = serde_json::json!({"copy": {"filesCopied": 0}, "verify": {"mismatched": 1, "repaired": 1}});
        let s = Seen {
            outcome: &o0,
            stdout: "",
            summary: Some(&summary),
            named: Some("{\"path\":\"tree/a/f1\",\"outcome\":\"repaired\"}\n"),
        };
        assert!(t.judge_detection(Some(VfxtMode::StandIn), &s, rel).0);
        assert!(t.judge_identical(Some(VfxtMode::StandIn), &s).is_err());
        let clean = serde_json::json!({"copy": {"filesCopied": 0}, "verify": {"mismatched": 0}});
        let s = Seen {
            summary: Some(&clean),
            ..s
        };
        assert!(t.judge_identical(Some(VfxtMode::StandIn), &s).is_ok());
    }

    #[test]
    fn the_flipped_byte_is_in_the_largest_plain_file_and_keeps_its_times() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        fs::create_dir_all(r.join("a/b")).unwrap();
        fs::write(r.join("a/small"), vec![1u8; 10]).unwrap();
        fs::write(r.join("a/b/big"), vec![2u8; 1000]).unwrap();
        fs::write(r.join("a/b/odd name"), vec![3u8; 5000]).unwrap();
        let (rel, size) = Flip::choose(r).unwrap().unwrap();
        assert_eq!((rel.as_str(), size), ("a/b/big", 1000));
        let before = fs::metadata(r.join(&rel)).unwrap();
        let f = Flip {
            rel,
            offset: 500,
            size,
            original: 2,
        };
        f.apply(r, 2 ^ 0xff).unwrap();
        let after = fs::metadata(r.join("a/b/big")).unwrap();
        assert_eq!(after.len(), 1000);
        assert_eq!(after.modified().unwrap(), before.modified().unwrap());
        assert_eq!(fs::read(r.join("a/b/big")).unwrap()[500], 2 ^ 0xff);
        f.apply(r, 2).unwrap();
        assert_eq!(fs::read(r.join("a/b/big")).unwrap(), vec![2u8; 1000]);
    }
}
