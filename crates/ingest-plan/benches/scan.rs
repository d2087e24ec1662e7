//! Scan benchmark (a command, not a timed test):
//!
//!     cargo bench -p ingest-plan --bench scan -- SRC [THREADS...]
//!
//! Times `ingest_plan::scan` at each thread count (best of 3, warm cache) against
//! `find SRC -printf '%s\n'` and `fpart -n 64 SRC` (when installed), and prints the peak resident
//! memory of the scan, which should follow the number of directories, not of files.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use ingest_plan::planner::{PlanOptions, plan};
use ingest_plan::scan::{ScanOptions, scan};

fn best_of<F: FnMut()>(n: usize, mut f: F) -> f64 {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn tool(args: &[&str]) -> Option<f64> {
    let ok = Command::new(args[0])
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    ok.then(|| {
        best_of(3, || {
            let st = Command::new(args[0])
                .args(&args[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            assert!(st.is_ok_and(|s| s.success()), "{args:?} failed");
        })
    })
}

fn peak_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes `--bench`; keep only our arguments.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let Some(src) = args.first() else {
        eprintln!("usage: cargo bench -p ingest-plan --bench scan -- SRC [THREADS...]");
        return;
    };
    let threads: Vec<usize> = if args.len() > 1 {
        args[1..]
            .iter()
            .map(|t| t.parse().expect("THREADS is a number"))
            .collect()
    } else {
        vec![1, 4, 16]
    };
    let rss_before = peak_rss_kib();
    let first = scan(
        Path::new(src),
        &ScanOptions {
            threads: threads[0],
            ..ScanOptions::default()
        },
    )
    .expect("scan");
    let rss_after = peak_rss_kib();
    let root = first.root().tree;
    let entries = root.files + root.others + root.dirs;
    println!(
        "tree: {} files, {} directories, {} bytes",
        root.files, root.dirs, root.bytes
    );
    println!(
        "scan peak RSS growth: {} KiB ({:.0} bytes per directory)",
        rss_after.saturating_sub(rss_before),
        (rss_after.saturating_sub(rss_before) * 1024) as f64 / root.dirs as f64
    );
    for &t in &threads {
        let secs = best_of(3, || {
            scan(
                Path::new(src),
                &ScanOptions {
                    threads: t,
                    ..ScanOptions::default()
                },
            )
            .expect("scan");
        });
        println!(
            "ingest-plan scan, {t:>2} threads: {secs:.3} s ({:.0} entries/s)",
            entries as f64 / secs
        );
    }
    let secs = best_of(3, || {
        plan(
            &first,
            &PlanOptions {
                shards: 64,
                ..PlanOptions::default()
            },
        )
        .expect("plan");
    });
    println!("plan of 64 shards: {secs:.3} s");
    if let Some(s) = tool(&["find", src, "-printf", "%s\\n"]) {
        println!(
            "find -printf '%s\\n':        {s:.3} s ({:.0} entries/s)",
            entries as f64 / s
        );
    }
    let out = std::env::temp_dir().join(format!("fpart-bench-{}", std::process::id()));
    if let Some(s) = tool(&["fpart", "-n", "64", "-o", out.to_str().unwrap(), src]) {
        println!(
            "fpart -n 64:                 {s:.3} s ({:.0} entries/s)",
            entries as f64 / s
        );
    }
    for i in 0..64 {
        let _ = std::fs::remove_file(format!("{}.{i}", out.display()));
    }
}
