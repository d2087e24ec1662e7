//! `vfxt-bench throttle`: `vfxt-ingest copy` under `--bytes-per-second` and under
//! `--files-per-second`, each on a tree sized for about `--seconds` at the limit. The destination
//! is sampled every 200 ms (bytes of its files, and files present); the rate is measured over the
//! middle of the run (the first and last tenth left out: start-up and the last files' tail), and
//! the copy must end identical to its source or the figure does not count.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ingest_testkit::{CompareOptions, compare};

use crate::{BenchError, io_err};

#[derive(clap::Args)]
pub struct ThrottleArgs {
    /// The byte limit to check, bytes per second.
    #[arg(long, default_value_t = 20 << 20)]
    bytes_per_second: u64,
    /// The entry limit to check, entries per second.
    #[arg(long, default_value_t = 200)]
    files_per_second: u64,
    /// About how long each copy runs at its limit.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Copy threads.
    #[arg(long, default_value_t = 16)]
    threads: usize,
    /// The vfxt-ingest binary.
    #[arg(long, default_value = "target/release/vfxt-ingest")]
    vfxt: PathBuf,
    /// Where the trees are made (default: $TMPDIR/vfxt-bench-throttle).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct Row {
    limit: &'static str,
    /// Per second.
    target: f64,
    /// Over the middle of the run, per second.
    achieved: f64,
    ratio: f64,
    seconds: f64,
    identical: bool,
}

/// Sum of file sizes and number of files under `dir` (a sample of a copy in progress).
fn sample(dir: &Path) -> (u64, u64) {
    let (mut bytes, mut files) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => {
                    bytes += m.len();
                    files += 1;
                }
                Err(_) => {}
            }
        }
    }
    (bytes, files)
}

/// Runs one throttled copy of `src` and returns (rate over the middle of the run, seconds,
/// identical), the rate taken from `pick` of each sample.
fn timed_copy(
    args: &ThrottleArgs,
    src: &Path,
    dst: &Path,
    flags: &[String],
    pick: fn((u64, u64)) -> u64,
) -> Result<(f64, f64, bool), BenchError> {
    let _ = fs::remove_dir_all(dst);
    let started = Instant::now();
    let mut child = Command::new(&args.vfxt)
        .args(["copy", "--quiet", "--verify", "metadata", "--threads"])
        .arg(args.threads.to_string())
        .args(flags)
        .arg(src)
        .arg(dst)
        .stdout(Stdio::null())
        .spawn()
        .map_err(io_err("run", &args.vfxt))?;
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(io_err("wait for", &args.vfxt))? {
            break s;
        }
        samples.push((started.elapsed().as_secs_f64(), pick(sample(dst))));
        std::thread::sleep(Duration::from_millis(200));
    };
    let total = started.elapsed().as_secs_f64();
    samples.push((total, pick(sample(dst))));
    let (from, to) = (total * 0.1, total * 0.9);
    let at = |t: f64| {
        samples
            .iter()
            .min_by(|a, b| (a.0 - t).abs().total_cmp(&(b.0 - t).abs()))
            .copied()
            .unwrap_or((t, 0))
    };
    let (t0, v0) = at(from);
    let (t1, v1) = at(to);
    let rate = (v1.saturating_sub(v0)) as f64 / (t1 - t0).max(1e-3);
    let identical =
        status.success() && compare(src, dst, &CompareOptions::content_only()).is_empty();
    Ok((rate, total, identical))
}

pub fn throttle(args: &ThrottleArgs) -> Result<bool, BenchError> {
    let work = args
        .work
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("vfxt-bench-throttle"));
    let (big, small, dst) = (work.join("bytes"), work.join("files"), work.join("dst"));
    // Bytes: 1 MiB files, enough for `seconds` at the limit (plus a tenth).
    let mib = (args.bytes_per_second * args.seconds * 11 / 10).div_ceil(1 << 20);
    let files = args.files_per_second * args.seconds * 11 / 10;
    fs::create_dir_all(&work).map_err(io_err("create", &work))?;
    for (dir, count, size) in [(&big, mib, 1usize << 20), (&small, files, 64)] {
        if fs::read_dir(dir).map(|d| d.count() as u64).unwrap_or(0) == count.div_ceil(100) {
            continue; // made by an earlier run with the same sizes
        }
        let _ = fs::remove_dir_all(dir);
        for i in 0..count {
            let d = dir.join(format!("d{:04}", i / 100));
            fs::create_dir_all(&d).map_err(io_err("create", &d))?;
            // Not sparse and not all alike: every byte is copied.
            let data: Vec<u8> = (0..size).map(|k| (k as u64 * 31 + i) as u8).collect();
            let f = d.join(format!("f{i:06}"));
            fs::write(&f, data).map_err(io_err("write", &f))?;
        }
    }
    // (what, tree, flag, limit, the sample's figure it limits: bytes or files)
    type Case<'a> = (
        &'static str,
        &'a Path,
        &'static str,
        u64,
        fn((u64, u64)) -> u64,
    );
    let cases: [Case; 2] = [
        (
            "bytes/s",
            &big,
            "--bytes-per-second",
            args.bytes_per_second,
            |s| s.0,
        ),
        (
            "files/s",
            &small,
            "--files-per-second",
            args.files_per_second,
            |s| s.1,
        ),
    ];
    let mut rows = Vec::new();
    for (limit, tree, flag, target, pick) in cases {
        let (rate, secs, ok) =
            timed_copy(args, tree, &dst, &[flag.into(), target.to_string()], pick)?;
        rows.push(Row {
            limit,
            target: target as f64,
            achieved: rate,
            ratio: rate / target as f64,
            seconds: secs,
            identical: ok,
        });
    }
    let _ = fs::remove_dir_all(&dst);
    println!(
        "{:<8} {:>14} {:>14} {:>7} {:>8} {:>9}",
        "limit", "target/s", "achieved/s", "ratio", "seconds", "identical"
    );
    for r in &rows {
        println!(
            "{:<8} {:>14.0} {:>14.0} {:>7.3} {:>8.1} {:>9}",
            r.limit, r.target, r.achieved, r.ratio, r.seconds, r.identical
        );
    }
    let json = serde_json::json!({
        "threads": args.threads,
        "rows": rows,
    });
    println!("{json}");
    if let Some(p) = &args.json {
        fs::write(p, serde_json::to_vec_pretty(&json).expect("json"))
            .map_err(io_err("write", p))?;
    }
    // Within ±10% of the limit, and the copy identical, or the check fails.
    Ok(rows
        .iter()
        .all(|r| r.identical && (r.ratio - 1.0).abs() <= 0.10))
}
