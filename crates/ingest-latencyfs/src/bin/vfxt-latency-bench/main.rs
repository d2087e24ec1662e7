//! `vfxt-latency-bench`: the copy engine and its peers into emulated cluster nodes.
//!
//! Every run gets fresh nodes over a fresh, empty backing directory; the tool copies the source
//! into the nodes' mount points; the nodes are unmounted and the backing directory is compared
//! with the source by `ingest-testkit` (a run whose copy differs gets no files/s figure). The
//! scenarios follow issue 7: per-operation latencies, 1 and 3 mounts, the engine's scaling over
//! threads and mounts, `--threads auto` against the best fixed setting, and one slow node.

mod plan;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::run::{Bench, Record};

#[derive(Debug, Parser)]
#[command(
    name = "vfxt-latency-bench",
    about = "Times vfxt-ingest copy and peer tools into emulated NFS cluster nodes (FUSE mounts with per-operation latency and a concurrency capacity), verifying every copy"
)]
pub struct Args {
    /// Working directory (dataset, runs); its runs/ subdirectory is emptied.
    #[arg(long, default_value = "/tmp/vfxt-latency-bench")]
    pub work: PathBuf,
    /// Scale of the `small` dataset (1.0 = 100,000 files; 0.1 = 10,000).
    #[arg(long, default_value_t = 0.1)]
    pub scale: f64,
    /// Per-operation latencies to run, in milliseconds (metadata and data ops alike).
    #[arg(long, value_delimiter = ',', default_value = "0.5,2")]
    pub latency_ms: Vec<f64>,
    /// Operations one node serves at once.
    #[arg(long, default_value_t = 16)]
    pub capacity: usize,
    /// Capacity of the slow node in the uneven-cluster scenario.
    #[arg(long, default_value_t = 4)]
    pub slow_capacity: usize,
    /// Thread counts for the engine's scaling curve.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64,256")]
    pub threads: Vec<usize>,
    /// Mount counts for the engine's scaling curve.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub mounts: Vec<usize>,
    /// Parts to run: peers, curve, auto, slow.
    #[arg(long, value_delimiter = ',', default_value = "peers,curve,auto,slow")]
    pub parts: Vec<String>,
    /// Peers to run: cp, rsync-inplace, parallel16, parallel64, fpsync.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "cp,rsync-inplace,parallel16,parallel64,fpsync"
    )]
    pub peers: Vec<String>,
    /// The vfxt-ingest binary (a release build).
    #[arg(long, default_value = "target/release/vfxt-ingest")]
    pub vfxt_bin: PathBuf,
    /// With `--threads auto`: the most threads per mount.
    #[arg(long, default_value_t = 64)]
    pub max_per_mount: usize,
    /// A run taking longer is stopped and reported as timed out.
    #[arg(long, default_value_t = 900)]
    pub timeout_s: u64,
    /// Also write the records as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Runs of every scenario; the findings take each setting's median (runs of one setting
    /// differ by up to about 10% on a 2-core machine).
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// The emulated cluster's storage, under every node of a run.
    #[arg(long, value_enum, default_value_t = Backing::Tmpfs)]
    pub backing: Backing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backing {
    /// A fresh tmpfs per run: the cluster's own storage work stays small on the client's
    /// cores, and a run does not inherit the previous run's deletes (as with a real cluster).
    Tmpfs,
    /// A directory under --work, on whatever file system holds it.
    Disk,
}

fn main() -> ExitCode {
    // First, before any thread exists: Ctrl-C must unmount the nodes, not strand them.
    ingest_latencyfs::unmount_all_on_signal();
    let args = Args::parse();
    let scenarios = match plan::scenarios(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut bench = match Bench::prepare(&args) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let timeout = Duration::from_secs(args.timeout_s);
    let mut records: Vec<Record> = Vec::new();
    for (i, sc) in scenarios.iter().enumerate() {
        eprintln!("[{}/{}] {}", i + 1, scenarios.len(), sc.describe());
        let rec = bench.run(sc, timeout);
        eprintln!("    {}", rec.line());
        records.push(rec);
        // Written after every run, so an interrupted benchmark keeps what it measured.
        if let Some(p) = &args.json {
            let doc = run::json(&bench, &records);
            if let Err(e) = std::fs::write(p, serde_json::to_string_pretty(&doc).unwrap()) {
                eprintln!("error: --json {}: {e}", p.display());
                return ExitCode::from(2);
            }
        }
    }
    print!("{}", run::table(&records, bench.files));
    // Exit 1 when any copy failed or differs: its number was left out of the findings.
    if records.iter().all(|r| r.identical) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
