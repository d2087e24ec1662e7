//! `vfxt-ingest operator`: the IngestJob controller, run in the cluster (see crates/ingest-operator/README.md).
//! Exit codes: 0 stopped by SIGTERM/Ctrl-C; 1 stopped by an error (lost leadership, API unreachable at start);
//! 2 unusable flags or no cluster configuration.

use std::net::SocketAddr;
use std::time::Duration;

use clap::ValueEnum;
use ingest_operator::controller::{self, Options};
use ingest_operator::leader::LeaseConfig;

use crate::Outcome;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

#[derive(clap::Args)]
pub struct Args {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Image of the scan and worker pods when an IngestJob names none (normally the operator's own image).
    #[arg(long, env = "VFXT_INGEST_IMAGE", value_name = "IMAGE")]
    pub image: String,
    /// Minimum seconds between two status writes of one IngestJob (phase changes are written at once).
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    pub status_interval: f64,
    /// Elect a leader through a coordination.k8s.io Lease, so several replicas are safe.
    #[arg(long)]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "vfxt-ingest-operator", value_name = "NAME")]
    pub lease_name: String,
    /// Namespace of the Lease (the operator's own).
    #[arg(
        long,
        env = "POD_NAMESPACE",
        default_value = "default",
        value_name = "NAMESPACE"
    )]
    pub lease_namespace: String,
    /// This replica's name in the Lease and in Events. Default: the pod name, else the host name.
    #[arg(long, env = "POD_NAME", value_name = "NAME")]
    pub identity: Option<String>,
    /// Log format. The level comes from RUST_LOG (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

fn init_logs(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: in a pod, escape codes would litter the collected logs.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // try_init: a second initialisation (tests) is not an error worth stopping for.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

pub fn run(args: Args) -> Outcome {
    init_logs(args.log_format);
    if !(args.status_interval.is_finite() && args.status_interval >= 0.5) {
        eprintln!(
            "error: --status-interval: must be at least 0.5 seconds (got {})",
            args.status_interval
        );
        return Outcome::UnusableInput;
    }
    if args.image.trim().is_empty() {
        eprintln!(
            "error: --image (or VFXT_INGEST_IMAGE): must name the image of the scan and worker pods"
        );
        return Outcome::UnusableInput;
    }
    let identity = args
        .identity
        .clone()
        .or_else(host_name)
        .unwrap_or_else(|| "vfxt-ingest-operator".into());
    let opts = Options {
        listen: args.listen,
        default_image: args.image.clone(),
        status_interval: Duration::from_secs_f64(args.status_interval),
        lease: args.leader_elect.then(|| LeaseConfig {
            name: args.lease_name.clone(),
            namespace: args.lease_namespace.clone(),
            identity: identity.clone(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }),
        instance: Some(identity),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return Outcome::PartialFailure;
        }
    };
    runtime.block_on(async {
        let client = match controller::connect().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return Outcome::UnusableInput;
            }
        };
        match controller::run(client, opts, controller::shutdown_signal()).await {
            Ok(()) => {
                tracing::info!("stopped");
                Outcome::Success
            }
            Err(e) => {
                tracing::error!(error = %e, "operator stopped");
                Outcome::PartialFailure
            }
        }
    })
}
