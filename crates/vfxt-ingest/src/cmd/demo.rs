//! `vfxt-ingest demo`: the first thing to run. Generates a demo source tree, a destination
//! reached through three "mounts" (symlinks to one directory, standing for one export served at
//! three cluster node IPs), writes the IngestJob for them, and runs it with `run`, so a newcomer
//! sees scan, plan, workers, progress and the verification summary on one machine.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use ingest_testkit::{Dataset, GenOptions, generate};

use clap::Parser;

use crate::Outcome;
use crate::cmd::run;

/// `run`'s own argument parser, so the demo gets exactly its defaults.
#[derive(Parser)]
struct RunArgs {
    #[command(flatten)]
    args: run::Args,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the demo keeps its source, destination, job file and state.
    #[arg(long, env = "VFXT_DEMO_DIR", default_value = "/tmp/vfxt-ingest-demo")]
    pub dir: PathBuf,
    /// Size of the demo tree (1.0 = 3,000 files; the default takes some seconds, enough to watch).
    #[arg(long, default_value_t = 5.0)]
    pub scale: f64,
    /// Worker processes.
    #[arg(long, default_value_t = 3)]
    pub workers: u32,
    /// Start over: remove the destination and state of an earlier demo first.
    #[arg(long)]
    pub fresh: bool,
}

/// The job the demo runs: the same YAML a user writes for `run`, in its local form.
fn job_yaml(dir: &Path, workers: u32) -> String {
    let d = dir.display();
    format!(
        "apiVersion: ingest.vfxt.dev/v1alpha1
kind: IngestJob
metadata:
  name: demo
spec:
  source:
    local: {d}/source
  destination:
    # One export, reached through three cluster node IPs (here: three symlinks to one directory).
    local: [{d}/mnt/destination1, {d}/mnt/destination2, {d}/mnt/destination3]
  workers: {workers}
  threadsPerWorker: 8
  shards: {{target: 48}}
  verify: {{mode: Checksum}}
"
    )
}

pub fn run(args: Args) -> Outcome {
    match prepare(&args) {
        Ok(job) => {
            println!("demo: job file {}", job.display());
            let state = args.dir.join("state");
            let argv = [
                OsStr::new("run"),
                OsStr::new("-f"),
                job.as_os_str(),
                OsStr::new("--state"),
                state.as_os_str(),
            ];
            run::run(RunArgs::parse_from(argv).args)
        }
        Err(e) => {
            eprintln!("error: demo in {}: {e}", args.dir.display());
            Outcome::UnusableInput
        }
    }
}

fn prepare(args: &Args) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let dir = &args.dir;
    fs::create_dir_all(dir)?;
    if args.fresh {
        for sub in ["cluster", "state"] {
            match fs::remove_dir_all(dir.join(sub)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
    }
    let source = dir.join("source");
    if !source.exists() {
        let g = generate(
            Dataset::Demo,
            &source,
            &GenOptions {
                scale: args.scale,
                ..GenOptions::default()
            },
        )?;
        println!(
            "demo: generated {} files, {} directories, {} symlinks in {}",
            g.files,
            g.dirs,
            g.symlinks,
            source.display()
        );
    } else {
        println!(
            "demo: reusing the source tree in {} (--fresh starts the copy over)",
            source.display()
        );
    }
    fs::create_dir_all(dir.join("cluster"))?;
    fs::create_dir_all(dir.join("mnt"))?;
    for i in 1..=3 {
        let mount = dir.join(format!("mnt/destination{i}"));
        if fs::symlink_metadata(&mount).is_err() {
            symlink(dir.join("cluster"), &mount)?;
        }
    }
    let job = dir.join("ingestjob.yaml");
    fs::write(&job, job_yaml(dir, args.workers))?;
    Ok(job)
}
