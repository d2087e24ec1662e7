//! What a benchmark run found: the JSON document, the printed table, and the issue-2 targets.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ingest_testkit::{Aspect, Difference, GenSummary};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub generator_version: u32,
    pub machine: Machine,
    /// "yes", or why the page cache could not be dropped between runs.
    pub page_cache_dropped: String,
    pub datasets: Vec<DatasetReport>,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub mem_total_mib: u64,
    pub kernel: String,
    pub root: bool,
}

#[derive(Debug, Serialize)]
pub struct DatasetReport {
    pub name: String,
    pub scale: f64,
    pub seed: u64,
    pub path: String,
    pub summary: GenSummary,
    /// Seconds to generate it now, or None when it came from the cache.
    pub generated_s: Option<f64>,
    pub runs: Vec<RunReport>,
    pub targets: Vec<Target>,
}

#[derive(Debug, Default, Serialize)]
pub struct RunReport {
    pub tool: String,
    pub label: String,
    pub command: String,
    pub available: bool,
    /// Why the tool did not run ("not available: ...").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    pub cache_dropped: bool,
    pub outcome: String,
    pub wall_s: f64,
    pub files_per_s: f64,
    pub mib_per_s: f64,
    pub user_s: f64,
    pub sys_s: f64,
    pub cpu_s: f64,
    pub max_rss_mib: f64,
    /// `sync` after the tool exited: data it left dirty in the page cache.
    pub sync_s: f64,
    pub compare_s: f64,
    /// Exited 0 and no difference in anything the tool promises to keep.
    pub identical: bool,
    /// Count of differences in what the tool promises to keep.
    pub differences: usize,
    pub first_differences: Vec<Difference>,
    /// Differences in what the tool does not promise, by aspect: what it does not keep.
    pub not_kept: BTreeMap<Aspect, usize>,
    /// This tool's wall time over vfxt-ingest's: how many times faster vfxt-ingest was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vfxt_speedup: Option<f64>,
    /// The numbers are from a copy that failed or is not identical.
    pub flagged: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr_tail: Option<String>,
    /// vfxt-ingest's own `--json` summary (copied, skipped, verify counts), when it printed one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_summary: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Target {
    pub target: String,
    pub measured: String,
    /// "pass", "fail", or "n/a" (something needed did not run or is not identical).
    pub result: String,
}

impl RunReport {
    pub fn unavailable(tool: &str, label: &str, why: String) -> Self {
        RunReport {
            tool: tool.into(),
            label: label.into(),
            unavailable: Some(why),
            outcome: "not run".into(),
            flagged: true,
            ..Default::default()
        }
    }

    fn ran_identical(&self) -> bool {
        self.available && self.identical
    }
}

/// Fills in each run's ratio to vfxt-ingest and evaluates the targets of issue 2.
pub fn finish_dataset(d: &mut DatasetReport) {
    let vfxt_wall = d
        .runs
        .iter()
        .find(|r| r.tool == "vfxt" && r.available)
        .map(|r| r.wall_s);
    for r in d.runs.iter_mut().filter(|r| r.available) {
        r.vfxt_speedup = vfxt_wall.filter(|v| *v > 0.0).map(|v| r.wall_s / v);
    }
    d.targets = targets(&d.name, &d.runs);
}

fn targets(dataset: &str, runs: &[RunReport]) -> Vec<Target> {
    let run = |tool: &str| runs.iter().find(|r| r.tool == tool);
    let peers: Vec<&RunReport> = runs
        .iter()
        .filter(|r| !r.tool.starts_with("vfxt") && r.ran_identical())
        .collect();
    let mut out = Vec::new();
    // Issue 2: `copy` against every peer.
    let vfxt = run("vfxt");
    match dataset {
        "small" => out.extend(ratio_target(dataset, vfxt, &peers, "files/s", 3.0, |r| {
            r.files_per_s
        })),
        "large" => out.extend(ratio_target(dataset, vfxt, &peers, "MiB/s", 1.0, |r| {
            r.mib_per_s
        })),
        _ => {}
    }
    // Issue 3: `run` with 4 workers against the same peers, on small and mixed.
    if matches!(dataset, "small" | "mixed") {
        out.extend(ratio_target(
            dataset,
            run("vfxt-run"),
            &peers,
            "files/s",
            3.0,
            |r| r.files_per_s,
        ));
    }
    for v in [vfxt, run("vfxt-run")].into_iter().flatten() {
        if v.available {
            let ok = v.max_rss_mib <= 64.0;
            out.push(Target {
                target: format!("{dataset}: {} max RSS <= 64 MiB", v.label),
                measured: format!("{:.1} MiB", v.max_rss_mib),
                result: if ok { "pass" } else { "fail" }.into(),
            });
        }
    }
    out
}

/// `subject`'s figure against `factor` times the best identical peer's; None when the subject
/// was not asked for.
fn ratio_target(
    dataset: &str,
    subject: Option<&RunReport>,
    peers: &[&RunReport],
    unit: &str,
    factor: f64,
    f: fn(&RunReport) -> f64,
) -> Option<Target> {
    let subject = subject?;
    let target = format!(
        "{dataset}: {} {unit} >= {factor}x the best identical peer's",
        subject.label
    );
    let best = peers.iter().max_by(|a, b| f(a).total_cmp(&f(b)));
    let (measured, result) = match (subject.ran_identical(), best) {
        (true, Some(p)) => {
            let ok = f(subject) >= factor * f(p);
            (
                format!(
                    "{:.1} vs {} {:.1} ({:.2}x)",
                    f(subject),
                    p.label,
                    f(p),
                    f(subject) / f(p)
                ),
                if ok { "pass" } else { "fail" },
            )
        }
        (false, _) => (
            format!("{} did not run or its copy is not identical", subject.label),
            "n/a",
        ),
        (_, None) => ("no peer made an identical copy".to_owned(), "n/a"),
    };
    Some(Target {
        target,
        measured,
        result: result.into(),
    })
}

/// The table for one dataset, with the differences of every flagged run under it.
pub fn table(d: &DatasetReport, cache_note: &str) -> String {
    let mut s = String::new();
    let origin = match d.generated_s {
        Some(t) => format!("generated in {t:.1} s"),
        None => "cached".to_owned(),
    };
    let _ = writeln!(
        s,
        "dataset {} (scale {}): {} files, {} dirs, {:.1} MiB ({origin}); page cache dropped before each run: {cache_note}",
        d.name,
        d.scale,
        d.summary.non_dirs(),
        d.summary.dirs,
        d.summary.bytes as f64 / 1048576.0
    );
    let _ = writeln!(
        s,
        "{:<30} {:>8} {:>9} {:>8} {:>7} {:>8} {:>9} {:>7} {:>7}  not kept",
        "tool", "wall s", "files/s", "MiB/s", "CPU s", "RSS MiB", "identical", "vfxt x", "sync s"
    );
    for r in &d.runs {
        if !r.available {
            let _ = writeln!(
                s,
                "{:<30} {}",
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
        let identical = if r.identical {
            "yes".to_owned()
        } else if r.outcome != "exit 0" {
            format!("no: {}", r.outcome)
        } else {
            format!("no ({})", r.differences)
        };
        let speed = r
            .vfxt_speedup
            .map(|x| format!("{x:.2}"))
            .unwrap_or_else(|| "-".into());
        let not_kept = if r.not_kept.is_empty() {
            "-".to_owned()
        } else {
            r.not_kept
                .iter()
                .map(|(a, n)| format!("{a} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            s,
            "{label:<30} {:>8.2} {:>9.0} {:>8.1} {:>7.2} {:>8.1} {identical:>9} {speed:>7} {:>7.2}  {not_kept}",
            r.wall_s, r.files_per_s, r.mib_per_s, r.cpu_s, r.max_rss_mib, r.sync_s
        );
    }
    for r in d.runs.iter().filter(|r| r.available && r.flagged) {
        let _ = writeln!(
            s,
            "  (!) {}: {}, {} differences in what it promises to keep",
            r.label, r.outcome, r.differences
        );
        for diff in &r.first_differences {
            let _ = writeln!(s, "        {diff}");
        }
        if let Some(t) = &r.stderr_tail {
            for line in t.lines() {
                let _ = writeln!(s, "        stderr: {line}");
            }
        }
    }
    for t in &d.targets {
        let _ = writeln!(s, "  target {}: {} -> {}", t.target, t.measured, t.result);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tool: &str, wall: f64, files: f64, identical: bool) -> RunReport {
        RunReport {
            tool: tool.into(),
            label: tool.into(),
            available: true,
            identical,
            flagged: !identical,
            outcome: "exit 0".into(),
            wall_s: wall,
            files_per_s: files,
            mib_per_s: files / 100.0,
            max_rss_mib: 20.0,
            ..Default::default()
        }
    }

    fn dataset(name: &str, runs: Vec<RunReport>) -> DatasetReport {
        DatasetReport {
            name: name.into(),
            scale: 1.0,
            seed: 1,
            path: "/x".into(),
            summary: GenSummary::default(),
            generated_s: None,
            runs,
            targets: vec![],
        }
    }

    #[test]
    fn ratios_and_targets_use_only_identical_peers() {
        let mut d = dataset(
            "small",
            vec![
                run("vfxt", 1.0, 3000.0, true),
                run("cp", 4.0, 900.0, true),
                run("rclone", 0.5, 5000.0, false),
            ],
        );
        finish_dataset(&mut d);
        assert_eq!(d.runs[1].vfxt_speedup, Some(4.0));
        assert_eq!(d.runs[0].vfxt_speedup, Some(1.0));
        // rclone is faster but not identical, so cp is the best peer: 3000 >= 3 * 900.
        assert_eq!(d.targets[0].result, "pass", "{:?}", d.targets);
        assert!(d.targets[0].measured.contains("vs cp 900.0"));
        assert_eq!(d.targets[1].target, "small: vfxt max RSS <= 64 MiB");
        let t = table(&d, "yes");
        assert!(t.contains("rclone (!)"), "{t}");
        assert!(t.contains("-> pass"), "{t}");
    }

    #[test]
    fn run_is_held_to_three_times_the_best_peer_and_is_no_peer_itself() {
        let mut d = dataset(
            "mixed",
            vec![
                run("vfxt", 1.0, 9000.0, true),
                run("vfxt-run", 1.0, 3000.0, true),
                run("fpsync4", 4.0, 900.0, true),
                run("manifest", 4.0, 1200.0, true),
            ],
        );
        finish_dataset(&mut d);
        // No copy target on mixed; the run target compares with manifest (not with vfxt).
        assert_eq!(
            d.targets[0].target,
            "mixed: vfxt-run files/s >= 3x the best identical peer's"
        );
        assert!(
            d.targets[0].measured.contains("vs manifest 1200.0 (2.50x)"),
            "{:?}",
            d.targets
        );
        assert_eq!(d.targets[0].result, "fail");
        assert_eq!(
            d.targets.len(),
            3,
            "run target and two RSS targets: {:?}",
            d.targets
        );
    }

    #[test]
    fn a_non_identical_vfxt_copy_cannot_pass_a_target() {
        let mut d = dataset(
            "large",
            vec![run("vfxt", 1.0, 3000.0, false), run("cp", 4.0, 900.0, true)],
        );
        finish_dataset(&mut d);
        assert_eq!(d.targets[0].result, "n/a");
        let mut d = dataset(
            "large",
            vec![run("vfxt", 1.0, 3000.0, true), run("cp", 0.1, 9000.0, true)],
        );
        finish_dataset(&mut d);
        assert_eq!(d.targets[0].result, "fail");
    }

    #[test]
    fn unavailable_tools_are_listed_not_measured() {
        let mut d = dataset(
            "mixed",
            vec![RunReport::unavailable(
                "fpsync",
                "fpsync -n 16",
                "not available: x".into(),
            )],
        );
        finish_dataset(&mut d);
        assert!(d.targets.is_empty());
        assert!(table(&d, "no").contains("fpsync -n 16                   not available: x"));
    }
}
