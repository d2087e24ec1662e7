//! `vfxt-ingest operator`: the IngestJob controller, run in the cluster (see crates/ingest-operator/README.md).
//! Exit codes: 0 stopped by SIGTERM/Ctrl-C; 1 stopped by an error (lost leadership, API unreachable at start);
//! 2 unusable flags or no cluster configuration.

use std::net::SocketAddr;
use std::time::Duration;

use clap::ValueEnum;
use ingest_api::job::WorkerTemplate;
use ingest_api::policy::AdmissionPolicy;
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
    /// Where worker pods reach this operator's claims endpoint (POST /claims/v1 on --listen's port),
    /// through the operator's Service: the chart sets http://<release>.<namespace>.svc:<port>.
    #[arg(long, env = "VFXT_INGEST_CLAIMS_URL", value_name = "http://HOST:PORT")]
    pub claims_url: String,
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
    /// This replica's IP (the pod IP): with --listen's port, where it serves claims, written on the
    /// Lease while it leads, so a standby replica passes the claims messages it gets on to it.
    /// Unset: a standby answers them "ask again" (workers retry).
    #[arg(long, env = "POD_IP", value_name = "IP")]
    pub advertise_ip: Option<std::net::IpAddr>,
    /// Namespaces whose IngestJobs to handle, comma-separated; empty: all namespaces. With a list, the
    /// operator watches each namespace on its own (namespaced Roles suffice; the chart's watchNamespaces).
    #[arg(
        long,
        env = "VFXT_INGEST_NAMESPACES",
        default_value = "",
        value_name = "NS[,NS...]"
    )]
    pub namespaces: String,
    /// Defaults for every IngestJob's spec.worker, as JSON of the same shape (image, imagePullPolicy,
    /// resources, nodeSelector, tolerations, serviceAccountName, securityContext). A field the IngestJob sets
    /// replaces the default whole (nodeSelector and tolerations are not combined).
    #[arg(long, env = "VFXT_INGEST_WORKER_DEFAULTS", value_name = "JSON")]
    pub worker_defaults: Option<String>,
    /// The admin policy: what IngestJobs may reach and run, per namespace (JSON: {"default": RULES,
    /// "namespaces": {NS: RULES}}; RULES: servers, exportPaths, images, allowServiceAccount,
    /// allowRoot, allowDacCapabilities, maxWorkers, maxThreadsPerWorker). A job that breaks a rule
    /// does not run: Ready False, reason PolicyDenied, naming the rule. See the chart's `policy`.
    #[arg(long, env = "VFXT_INGEST_POLICY", value_name = "JSON")]
    pub policy: Option<String>,
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

/// Parses `--worker-defaults`: JSON shaped like `spec.worker`. Errors name the JSON path; a field that is not
/// part of `spec.worker` (a typo such as `nodeselector`) is an error too, rather than a silently ignored default.
fn parse_worker_defaults(json: &str) -> Result<WorkerTemplate, String> {
    if json.trim().is_empty() {
        return Ok(WorkerTemplate::default());
    }
    let mut de = serde_json::Deserializer::from_str(json);
    let parsed: WorkerTemplate = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            format!("{inner}")
        } else {
            format!("{path}: {inner}")
        }
    })?;
    de.end().map_err(|e| format!("{e}"))?;
    // Serde skips unknown fields; a field given with a value that does not come back out was not understood.
    let given: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let understood = serde_json::to_value(&parsed).map_err(|e| e.to_string())?;
    if let Some(path) = unknown_field(&given, &understood, String::new()) {
        let known = if path.contains(['.', '[']) {
            "not a field of the Kubernetes type at this path"
        } else {
            "spec.worker has image, imagePullPolicy, resources, nodeSelector, tolerations, \
             serviceAccountName, securityContext"
        };
        return Err(format!("{path}: unknown field ({known})"));
    }
    Ok(parsed)
}

/// The first key path present (not null) in `given` but missing from `understood`.
fn unknown_field(
    given: &serde_json::Value,
    understood: &serde_json::Value,
    at: String,
) -> Option<String> {
    use serde_json::Value;
    let dot = |k: &str| {
        if at.is_empty() {
            k.to_owned()
        } else {
            format!("{at}.{k}")
        }
    };
    match (given, understood) {
        (Value::Object(g), Value::Object(u)) => g.iter().find_map(|(k, v)| match u.get(k) {
            None if !v.is_null() => Some(dot(k)),
            None => None,
            Some(uv) => unknown_field(v, uv, dot(k)),
        }),
        (Value::Array(g), Value::Array(u)) => g
            .iter()
            .zip(u)
            .enumerate()
            .find_map(|(i, (gv, uv))| unknown_field(gv, uv, format!("{at}[{i}]"))),
        _ => None,
    }
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
    if !args.claims_url.starts_with("http://") || args.claims_url.len() <= "http://".len() {
        eprintln!(
            "error: --claims-url (or VFXT_INGEST_CLAIMS_URL): {:?} is not an http:// URL (e.g. http://vfxt-ingest-claims.vfxt-system.svc.cluster.local.:8080, the chart's claims Service)",
            args.claims_url
        );
        return Outcome::UnusableInput;
    }
    let namespaces = match ingest_operator::controller::parse_namespaces(&args.namespaces) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: --namespaces (or VFXT_INGEST_NAMESPACES): {e}");
            return Outcome::UnusableInput;
        }
    };
    let worker_defaults = match parse_worker_defaults(args.worker_defaults.as_deref().unwrap_or(""))
    {
        Ok(w) => w,
        Err(e) => {
            eprintln!(
                "error: --worker-defaults (or VFXT_INGEST_WORKER_DEFAULTS): {e} (expected JSON shaped like \
                 an IngestJob's spec.worker, e.g. '{{\"nodeSelector\":{{\"agentpool\":\"ingest\"}}}}')"
            );
            return Outcome::UnusableInput;
        }
    };
    let policy = match AdmissionPolicy::from_json(args.policy.as_deref().unwrap_or("")) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "error: --policy (or VFXT_INGEST_POLICY): {e} (expected JSON shaped like \
                 '{{\"default\":{{\"servers\":[\"10.1.0.0/16\"],\"allowRoot\":false}}}}')"
            );
            return Outcome::UnusableInput;
        }
    };
    let identity = args
        .identity
        .clone()
        .or_else(host_name)
        .unwrap_or_else(|| "vfxt-ingest-operator".into());
    let opts = Options {
        listen: args.listen,
        default_image: args.image.clone(),
        worker_defaults,
        policy,
        namespaces,
        status_interval: Duration::from_secs_f64(args.status_interval),
        lease: args.leader_elect.then(|| LeaseConfig {
            name: args.lease_name.clone(),
            namespace: args.lease_namespace.clone(),
            identity: identity.clone(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            address: args
                .advertise_ip
                .map(|ip| SocketAddr::new(ip, args.listen.port()).to_string()),
        }),
        instance: Some(identity),
        claims_url: args.claims_url.trim_end_matches('/').to_owned(),
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
        let api_counts = std::sync::Arc::new(ingest_operator::api_count::ApiCounts::default());
        let client = match controller::connect(api_counts.clone()).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return Outcome::UnusableInput;
            }
        };
        match controller::run(client, opts, api_counts, controller::shutdown_signal()).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use ingest_api::job::PullPolicy;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn chart_style_worker_defaults_parse_into_the_spec_worker_type() {
        // What the chart's vfxt-ingest.workerDefaults helper renders (toJson of the worker values).
        let w = parse_worker_defaults(
            r#"{"image":"acr.example/ingest:1","imagePullPolicy":"Always","nodeSelector":{"agentpool":"ingest"},"resources":{"requests":{"cpu":"2"}},"tolerations":[{"effect":"NoSchedule","key":"workload","value":"ingest"}]}"#,
        )
        .unwrap();
        assert_eq!(w.image.as_deref(), Some("acr.example/ingest:1"));
        assert_eq!(w.image_pull_policy, Some(PullPolicy::Always));
        assert_eq!(w.node_selector.unwrap()["agentpool"], "ingest");
        assert_eq!(w.tolerations.unwrap()[0].key.as_deref(), Some("workload"));
        assert_eq!(
            w.resources.unwrap().requests.unwrap()["cpu"].0,
            "2".to_owned()
        );
        // The pod settings (worker.podLabels and worker.podAnnotations become labels/annotations).
        let w = parse_worker_defaults(
            r#"{"affinity":{"podAntiAffinity":{"preferredDuringSchedulingIgnoredDuringExecution":[{"weight":1,"podAffinityTerm":{"topologyKey":"kubernetes.io/hostname"}}]}},"annotations":{"note":"x"},"imagePullSecrets":[{"name":"acr"}],"labels":{"team":"a"},"priorityClassName":"low","topologySpreadConstraints":[{"maxSkew":1,"topologyKey":"zone","whenUnsatisfiable":"DoNotSchedule"}]}"#,
        )
        .unwrap();
        assert_eq!(w.image_pull_secrets.unwrap()[0].name, "acr");
        assert_eq!(w.priority_class_name.as_deref(), Some("low"));
        assert!(w.affinity.unwrap().pod_anti_affinity.is_some());
        assert_eq!(w.topology_spread_constraints.unwrap()[0].max_skew, 1);
        assert_eq!(w.labels.unwrap()["team"], "a");
        assert_eq!(w.annotations.unwrap()["note"], "x");
        // Helm's toJson writes `cpu: 1` from values.yaml as a number; Kubernetes accepts numeric quantities.
        let w = parse_worker_defaults(r#"{"resources":{"requests":{"cpu":1,"memory":"1Gi"}}}"#)
            .unwrap();
        assert_eq!(w.resources.unwrap().requests.unwrap()["cpu"].0, "1");
        assert_eq!(
            parse_worker_defaults("").unwrap(),
            WorkerTemplate::default()
        );
        assert_eq!(
            parse_worker_defaults("{}").unwrap(),
            WorkerTemplate::default()
        );
    }

    #[test]
    fn bad_worker_defaults_name_the_json_path() {
        let e = parse_worker_defaults(r#"{"nodeSelector":{"zone":1}}"#).unwrap_err();
        assert!(e.starts_with("nodeSelector.zone: invalid type"), "{e}");
        let e = parse_worker_defaults(r#"{"imagePullPolicy":"Sometimes"}"#).unwrap_err();
        assert!(
            e.starts_with("imagePullPolicy: unknown variant `Sometimes`"),
            "{e}"
        );
        let e = parse_worker_defaults(r#"{"tolerations":[{"key":"a"},{"key":7}]}"#).unwrap_err();
        assert!(e.starts_with("tolerations[1].key:"), "{e}");
        let e = parse_worker_defaults("{\"image\": \"x\"").unwrap_err();
        assert!(e.contains("EOF"), "{e}");
        let e = parse_worker_defaults("{} {}").unwrap_err();
        assert!(e.contains("trailing"), "{e}");
    }

    #[test]
    fn unknown_worker_default_fields_are_errors_not_silently_ignored() {
        let e = parse_worker_defaults(r#"{"nodeselector":{"a":"b"}}"#).unwrap_err();
        assert!(e.starts_with("nodeselector: unknown field"), "{e}");
        let e = parse_worker_defaults(r#"{"resources":{"limitz":{"memory":"1Gi"}}}"#).unwrap_err();
        assert!(e.starts_with("resources.limitz: unknown field"), "{e}");
        let e = parse_worker_defaults(r#"{"tolerations":[{"key":"a","efect":"NoSchedule"}]}"#)
            .unwrap_err();
        assert!(e.starts_with("tolerations[0].efect: unknown field"), "{e}");
        // null means "not set", as for an IngestJob.
        assert_eq!(
            parse_worker_defaults(r#"{"image":null}"#).unwrap(),
            WorkerTemplate::default()
        );
    }

    #[test]
    fn flags_reach_the_args() {
        let cli = Cli::try_parse_from([
            "operator",
            "--image",
            "i",
            "--namespaces",
            "team-a,team-b",
            "--worker-defaults",
            r#"{"image":"w"}"#,
            "--claims-url",
            "http://vfxt-ingest-claims.ops.svc:8080",
        ])
        .unwrap();
        assert_eq!(cli.args.namespaces, "team-a,team-b");
        assert_eq!(
            cli.args.claims_url,
            "http://vfxt-ingest-claims.ops.svc:8080"
        );
        assert_eq!(
            cli.args.worker_defaults.as_deref(),
            Some(r#"{"image":"w"}"#)
        );
    }
}
