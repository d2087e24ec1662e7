//! `vfxt-bench throttle`: `vfxt-ingest copy` under `--bytes-per-second` and under
//! `--files-per-second`, each on a tree sized for about `--seconds` at the limit; then
//! `vfxt-ingest run` with `spec.limits.bytesPerSecond` edited in its job file halfway (to a
//! quarter of it), each half measured against its own limit. The destination
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

/// Rate between the samples nearest `from` and `to` seconds.
fn rate_between(samples: &[(f64, u64)], from: f64, to: f64) -> f64 {
    let at = |t: f64| {
        samples
            .iter()
            .min_by(|a, b| (a.0 - t).abs().total_cmp(&(b.0 - t).abs()))
            .copied()
            .unwrap_or((t, 0))
    };
    let (t0, v0) = at(from);
    let (t1, v1) = at(to);
    (v1.saturating_sub(v0)) as f64 / (t1 - t0).max(1e-3)
}

/// `vfxt-ingest run` of `src` limited to `first` bytes/s, its job file edited to `second` once
/// half of `first`'s share of the tree is copied. Returns each half's rate (the middle four
/// fifths of each, by time), the seconds and whether the copy is identical.
fn run_with_change(
    args: &ThrottleArgs,
    src: &Path,
    work: &Path,
    (first, second): (u64, u64),
    half_bytes: u64,
) -> Result<(f64, f64, f64, bool), BenchError> {
    let dst = work.join("dst");
    let state = work.join("state");
    let _ = fs::remove_dir_all(&dst);
    let _ = fs::remove_dir_all(&state);
    fs::create_dir_all(&dst).map_err(io_err("create", &dst))?;
    let job = work.join("job.yaml");
    let yaml = |limit: u64| {
        format!(
            "apiVersion: ingest.vfxt.dev/v1alpha1\nkind: IngestJob\nmetadata: {{name: bench}}\nspec:\n  source: {{local: \"{}\"}}\n  destination: {{local: [\"{}\"]}}\n  workers: 2\n  threadsPerWorker: {}\n  preserve: {{owner: false}}\n  limits: {{bytesPerSecond: {limit}}}\n",
            src.display(),
            dst.display(),
            args.threads
        )
    };
    fs::write(&job, yaml(first)).map_err(io_err("write", &job))?;
    let started = Instant::now();
    let mut child = Command::new(&args.vfxt)
        .args(["run", "--quiet", "-f"])
        .arg(&job)
        .arg("--state")
        .arg(&state)
        .stdout(Stdio::null())
        .spawn()
        .map_err(io_err("run", &args.vfxt))?;
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let mut changed_at = None;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(io_err("wait for", &args.vfxt))? {
            break s;
        }
        let now = started.elapsed().as_secs_f64();
        let (bytes, _) = sample(&dst);
        samples.push((now, bytes));
        if changed_at.is_none() && bytes >= half_bytes {
            fs::write(&job, yaml(second)).map_err(io_err("write", &job))?;
            changed_at = Some(now);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let total = started.elapsed().as_secs_f64();
    samples.push((total, sample(&dst).0));
    let c = changed_at.unwrap_or(total);
    // Each half's middle: the first tenth of the run and a second after the edit (the file is
    // read every half second) left out, and the tail.
    let before = rate_between(&samples, total * 0.1, c);
    let after = rate_between(&samples, c + 1.0, c + (total - c) * 0.9);
    let identical =
        status.success() && compare(src, &dst, &CompareOptions::content_only()).is_empty();
    Ok((before, after, total, identical))
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
    let rate = rate_between(&samples, total * 0.1, total * 0.9);
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
    // A limit edited while `run` runs: a quarter of it from halfway on. The tree: half the time
    // at each rate.
    let (a, b) = (args.bytes_per_second, args.bytes_per_second / 4);
    let changing = work.join("changing");
    let mib = ((a + b) * args.seconds / 2 * 11 / 10).div_ceil(1 << 20);
    if fs::read_dir(&changing)
        .map(|d| d.count() as u64)
        .unwrap_or(0)
        != mib
    {
        let _ = fs::remove_dir_all(&changing);
        for i in 0..mib {
            let d = changing.join(format!("d{i:04}"));
            fs::create_dir_all(&d).map_err(io_err("create", &d))?;
            let data: Vec<u8> = (0..1usize << 20)
                .map(|k| (k as u64 * 17 + i) as u8)
                .collect();
            let f = d.join("f");
            fs::write(&f, data).map_err(io_err("write", &f))?;
        }
    }
    let (before, after, secs, ok) =
        run_with_change(args, &changing, &work, (a, b), a * args.seconds / 2)?;
    for (limit, target, achieved) in [
        ("run: bytes/s, before the edit", a, before),
        ("run: bytes/s, after the edit", b, after),
    ] {
        rows.push(Row {
            limit,
            target: target as f64,
            achieved,
            ratio: achieved / target as f64,
            seconds: secs,
            identical: ok,
        });
    }
    let _ = fs::remove_dir_all(&dst);
    let _ = fs::remove_dir_all(work.join("state"));
    println!(
        "{:<30} {:>14} {:>14} {:>7} {:>8} {:>9}",
        "limit", "target/s", "achieved/s", "ratio", "seconds", "identical"
    );
    for r in &rows {
        println!(
            "{:<30} {:>14.0} {:>14.0} {:>7.3} {:>8.1} {:>9}",
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
