//! test-node-agent: test support only. A stand-in kubelet and scheduler for the
//! e2e control plane: registers one Node, binds every pending pod to it, and
//! runs each container's command as a local process in a private mount
//! namespace where the pod's volumes are bind-mounted at their mountPaths.

mod agent;
mod config;
mod env;
mod exec;
mod node;
mod pod;
mod status;
mod volumes;

use std::path::PathBuf;

use clap::Parser;
use thiserror::Error;

use crate::config::{ExecOverride, NfsMap};

#[derive(Debug, Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Kube(&'static str, #[source] kube::Error),
    #[error("kubeconfig {0}: {1}")]
    Kubeconfig(PathBuf, String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Test node agent: registers a node, schedules pods to it, runs them as local processes"
)]
pub struct Args {
    /// Kubeconfig to use (default: $KUBECONFIG, then in-cluster/~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Name of the Node to register.
    #[arg(long, default_value = "e2e-node")]
    node_name: String,
    /// Directory for pod dirs (volumes, logs, termination messages).
    #[arg(long)]
    work_dir: PathBuf,
    /// SERVER:/EXPORT=/local/dir: NFS volumes (inline or via PV) of that export
    /// use the local dir. Repeatable; several servers may map to one dir.
    #[arg(long = "nfs-map")]
    nfs_maps: Vec<NfsMap>,
    /// IMAGE_PREFIX=/path/to/binary: containers of matching images run this
    /// binary as their entrypoint. Repeatable; the longest prefix wins.
    #[arg(long = "exec-override")]
    exec_overrides: Vec<ExecOverride>,
    /// The pods capacity the node advertises.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
}

fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    // The launcher must stay single-threaded (see exec.rs), so it is handled
    // before clap and long before any runtime starts.
    if argv.get(1).map(String::as_str) == Some(agent::EXEC_SUBCOMMAND) {
        let msg = match exec::parse_args(&argv[2..]) {
            Ok(launch) => exec::exec(launch),
            Err(e) => format!("{}: {e}", agent::EXEC_SUBCOMMAND),
        };
        eprintln!("test-node-agent: {msg}");
        // 127 like a shell's "command not found": the container never started.
        return std::process::ExitCode::from(127);
    }
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Logs usually land in a file (up.sh): colours only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("test-node-agent: cannot start the tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(agent::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "test-node-agent failed");
            std::process::ExitCode::FAILURE
        }
    }
}
