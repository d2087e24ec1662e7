//! `vfxt-ingest`: one binary, several roles (see `--help`).
//!
//! Exit codes, for every subcommand: 0 success; 1 finished, but some entries failed (the report
//! lists each); 2 unusable input (the message names the argument or field). `worker --claims-url`
//! also exits 3 when the operator stayed unreachable (a crash: its pod is started again).

mod cmd;
mod progress_view;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "vfxt-ingest",
    version,
    about = "Parallel ingest into multi-node NFS cache clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Copy SRC into one export reached through one or more mounts (DEST...), then verify.
    Copy(cmd::copy::Args),
    /// Generate a demo tree and run a local IngestJob on it into three "mounts" (start here).
    Demo(cmd::demo::Args),
    /// Walk SRC in parallel, plan shards, print a summary (files, sizes, largest directories, balance).
    Scan(cmd::scan::Args),
    /// Copy and/or verify some shards of a plan (JSON lines on stdout; used by `run` and the cluster).
    Worker(cmd::worker::Args),
    /// One IngestJob on this machine: scan, plan, W worker processes, verify, status.
    Run(cmd::run::Args),
    /// Read and merge report files (`.jsonl`, `.jsonl.gz`; directories recursively): counts by outcome and
    /// operation, the first entries, or every entry with --json/--jsonl.
    Report(cmd::report::Args),
    /// Print the IngestJob CustomResourceDefinition (YAML) generated from the API types.
    Crd(cmd::crd::Args),
    /// Run the IngestJob controller (in the cluster; see crates/ingest-operator/README.md).
    Operator(cmd::operator::Args),
}

/// The outcomes a run can have; each maps to one exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    PartialFailure,
    UnusableInput,
    /// Neither a result nor a verdict on the input (`worker --claims-url` that never reached the
    /// operator): what `ingest_job::WorkerExit` calls a crash, so its shards are run again.
    Crashed,
}

impl Outcome {
    pub fn code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::PartialFailure => ingest_job::exit::FILES_FAILED as u8,
            Outcome::UnusableInput => ingest_job::exit::UNUSABLE_INPUT as u8,
            // WorkerExit has no constant for a crash (any other code is one); 3 is the first
            // code no other outcome uses.
            Outcome::Crashed => 3,
        }
    }
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> ExitCode {
        ExitCode::from(o.code())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Copy(args) => cmd::copy::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Scan(args) => cmd::scan::run(args),
        Command::Worker(args) => cmd::worker::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Report(args) => cmd::report::run(args),
        Command::Crd(args) => cmd::crd::run(args),
        Command::Operator(args) => cmd::operator::run(args),
    };
    outcome.into()
}
