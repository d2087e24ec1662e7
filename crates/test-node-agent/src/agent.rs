//! The agent's main loop: one watch on all pods; pending pods without a node
//! are bound to ours (the agent is the scheduler), pods bound to ours get a
//! runner each, and every later event for a pod goes to its runner.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::sync::watch;

use crate::config::{ExecOverride, NfsMap};
use crate::node::{self, Capacity};
use crate::{Args, Error, pod};

/// The hidden subcommand that launches one container (see exec.rs).
pub const EXEC_SUBCOMMAND: &str = "__exec";

/// What every pod runner shares.
pub struct Ctx {
    pub client: kube::Client,
    pub node: String,
    pub nfs_maps: Vec<NfsMap>,
    pub overrides: Vec<ExecOverride>,
    pub work_dir: PathBuf,
    /// The API server as pods reach it (KUBERNETES_SERVICE_HOST/PORT).
    pub api_host: String,
    pub api_port: u16,
    pub self_exe: PathBuf,
    /// Process groups of running containers, to stop them all at shutdown.
    pub groups: Mutex<HashSet<i32>>,
    /// The agent is shutting down: no container starts or restarts, and one that started
    /// meanwhile is killed as it is tracked (a container that exited on the shutdown's SIGTERM
    /// was restarted per its restartPolicy, and outlived the agent).
    pub shutting_down: AtomicBool,
}

impl Ctx {
    pub fn track(&self, pgid: i32, running: bool) {
        let mut g = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if running {
            g.insert(pgid);
            // Checked under the lock `stop_all` takes after setting the flag: a group tracked
            // after its snapshot is killed here.
            if self.shutting_down()
                && let Some(pid) = Pid::from_raw(pgid)
            {
                let _ = kill_process_group(pid, Signal::KILL);
            }
        } else {
            g.remove(&pgid);
        }
    }

    /// The agent is shutting down (see [`Ctx::shutting_down`]).
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Stops every container still running: SIGTERM, then SIGKILL after `grace`.
    async fn stop_all(&self, grace: Duration) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let groups: Vec<i32> = self
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        for sig in [Signal::TERM, Signal::KILL] {
            for &g in &groups {
                if let Some(pid) = Pid::from_raw(g) {
                    let _ = kill_process_group(pid, sig);
                }
            }
            if sig == Signal::TERM && !groups.is_empty() {
                tokio::time::sleep(grace).await;
            }
        }
    }
}

/// The latest version of a pod for its runner; `None` once it is gone.
pub type PodUpdates = watch::Receiver<Option<Arc<Pod>>>;

async fn config(kubeconfig: Option<&PathBuf>) -> Result<kube::Config, Error> {
    match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| Error::Kubeconfig(path.clone(), e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Kubeconfig(path.clone(), e.to_string()))
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| Error::Kubeconfig("(inferred)".into(), e.to_string())),
    }
}

pub async fn run(args: Args) -> Result<(), Error> {
    let config = config(args.kubeconfig.as_ref()).await?;
    let cluster_url = config.cluster_url.clone();
    let client = kube::Client::try_from(config).map_err(|e| Error::Kube("build client", e))?;
    std::fs::create_dir_all(&args.work_dir)
        .map_err(|e| Error::Io(format!("create work dir {}", args.work_dir.display()), e))?;
    let work_dir = std::fs::canonicalize(&args.work_dir)
        .map_err(|e| Error::Io(format!("resolve work dir {}", args.work_dir.display()), e))?;
    let self_exe =
        std::env::current_exe().map_err(|e| Error::Io("find own executable".into(), e))?;
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        node: args.node_name.clone(),
        nfs_maps: args.nfs_maps,
        overrides: args.exec_overrides,
        work_dir,
        api_host: cluster_url
            .host()
            .unwrap_or("127.0.0.1")
            .trim_matches(['[', ']'])
            .to_string(),
        api_port: cluster_url.port_u16().unwrap_or(443),
        self_exe,
        groups: Mutex::new(HashSet::new()),
        shutting_down: AtomicBool::new(false),
    });

    let cap = Capacity::of_host(args.max_pods);
    node::register(&client, &ctx.node, &cap).await?;
    let beats = tokio::spawn(node::heartbeat_loop(client.clone(), ctx.node.clone(), cap));

    let pods: Api<Pod> = Api::all(client.clone());
    let mut stream =
        std::pin::pin!(watcher::watcher(pods, watcher::Config::default()).default_backoff());
    let mut runners: HashMap<String, watch::Sender<Option<Arc<Pod>>>> = HashMap::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    tracing::info!(node = %ctx.node, "watching pods");
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            ev = stream.try_next() => match ev {
                Ok(Some(Event::Apply(p) | Event::InitApply(p))) => on_pod(&ctx, &mut runners, p).await,
                Ok(Some(Event::Delete(p))) => {
                    if let Some(tx) = p.metadata.uid.as_ref().and_then(|u| runners.remove(u)) {
                        let _ = tx.send(None);
                    }
                }
                Ok(Some(Event::Init | Event::InitDone)) => {}
                Ok(None) => break,
                // The backoff retries; a dropped watch is not fatal.
                Err(e) => tracing::warn!(error = %e, "pod watch error"),
            }
        }
    }
    tracing::info!("shutting down: stopping containers");
    beats.abort();
    ctx.stop_all(Duration::from_secs(3)).await;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the agent");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn on_pod(
    ctx: &Arc<Ctx>,
    runners: &mut HashMap<String, watch::Sender<Option<Arc<Pod>>>>,
    p: Pod,
) {
    let Some(uid) = p.metadata.uid.clone() else {
        return;
    };
    let spec = p.spec.as_ref();
    let node = spec.and_then(|s| s.node_name.as_deref());
    match node {
        None => {
            let ours = matches!(
                spec.and_then(|s| s.scheduler_name.as_deref()),
                None | Some("default-scheduler")
            );
            if ours && p.metadata.deletion_timestamp.is_none() {
                bind(ctx, &p).await;
            }
        }
        Some(n) if n == ctx.node => {
            if let Some(tx) = runners.get(&uid) {
                let _ = tx.send(Some(Arc::new(p)));
                return;
            }
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            if matches!(phase, Some("Succeeded" | "Failed")) {
                // Finished before this agent started: nothing to run, but a
                // deletion still needs the kubelet's final delete.
                if p.metadata.deletion_timestamp.is_some() {
                    pod::delete_now(ctx, &p).await;
                }
                return;
            }
            let (tx, rx) = watch::channel(Some(Arc::new(p)));
            runners.insert(uid, tx);
            tokio::spawn(pod::run(ctx.clone(), rx));
        }
        Some(_) => {}
    }
}

/// Schedules a pod onto our node with a Binding, as kube-scheduler would.
async fn bind(ctx: &Ctx, p: &Pod) {
    let (Some(name), Some(ns)) = (p.metadata.name.as_deref(), p.metadata.namespace.as_deref())
    else {
        return;
    };
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            uid: p.metadata.uid.clone(),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(ctx.node.clone()),
            ..Default::default()
        },
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    match api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), node = %ctx.node, "bound"),
        // Already bound or gone since the event: the next event tells.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
        Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "binding failed"),
    }
}
