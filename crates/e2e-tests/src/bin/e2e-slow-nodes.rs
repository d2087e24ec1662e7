//! `e2e-slow-nodes --backing DIR --latency-ms MS MOUNTPOINT...`: mounts one emulated NFS node (a FUSE
//! passthrough of DIR with MS of latency per operation) at each MOUNTPOINT, prints `ready` once all are
//! mounted, and keeps them until SIGTERM/SIGINT/SIGHUP, which unmounts them all.
//!
//! The operator e2e test maps the cluster IPs of a slow destination to these mount points, so copy pods
//! write through a node that answers like a distant NFS server rather than a local disk in microseconds.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ingest_latencyfs::{Node, NodeConfig, unmount_all_on_signal};

#[derive(Parser)]
#[command(
    name = "e2e-slow-nodes",
    about = "Mounts slow emulated NFS nodes over one directory until signalled"
)]
struct Args {
    /// The directory every node serves (one export reached through several node IPs).
    #[arg(long)]
    backing: PathBuf,
    /// Latency added to every metadata and data operation, in milliseconds.
    #[arg(long, default_value_t = 5.0)]
    latency_ms: f64,
    /// Operations one node serves at once.
    #[arg(long, default_value_t = 4)]
    capacity: usize,
    /// Fault hook: every node stops answering at its N-th operation (counting from 1), as an NFS
    /// server that hangs behind a hard mount; its requests wait until the node is unmounted.
    #[arg(long, value_name = "N")]
    stop_answering_at: Option<u64>,
    /// Where to mount the nodes (created if missing).
    #[arg(required = true)]
    mountpoints: Vec<PathBuf>,
}

fn main() -> ExitCode {
    // First, before any thread exists: the signal thread unmounts whatever is mounted.
    unmount_all_on_signal();
    let args = Args::parse();
    if !(args.latency_ms.is_finite() && args.latency_ms >= 0.0) {
        eprintln!(
            "error: --latency-ms: must be a number >= 0 (got {})",
            args.latency_ms
        );
        return ExitCode::from(2);
    }
    let latency = Duration::from_secs_f64(args.latency_ms / 1000.0);
    let config = NodeConfig {
        meta_latency: latency,
        data_latency: latency,
        capacity: args.capacity,
        stop_answering_at: args.stop_answering_at,
        ..NodeConfig::default()
    };
    let mut nodes = Vec::new();
    for mp in &args.mountpoints {
        match Node::mount(&args.backing, mp, config) {
            Ok(node) => nodes.push(node),
            Err(e) => {
                eprintln!("error: {e}");
                // Dropping the nodes mounted so far unmounts them.
                return ExitCode::FAILURE;
            }
        }
    }
    println!("ready");
    if let Some(at) = args.stop_answering_at {
        // Tells the test that the fault happened (a test whose node never stopped tested nothing).
        let stats: Vec<_> = nodes
            .iter()
            .map(|n| (n.mountpoint().to_owned(), n.stats_handle()))
            .collect();
        std::thread::spawn(move || {
            let mut told = vec![false; stats.len()];
            loop {
                for (i, (mp, s)) in stats.iter().enumerate() {
                    if !told[i] && s.unanswered.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                        told[i] = true;
                        println!("stopped answering at operation {at}: {}", mp.display());
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }
    // The signal thread exits the process after unmounting; until then there is nothing to do.
    loop {
        std::thread::park();
    }
}
