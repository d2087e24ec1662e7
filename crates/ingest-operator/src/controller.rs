//! The running operator: the kube-runtime Controller (IngestJobs; owned Jobs and plan ConfigMaps; pods by label),
//! the probe/metrics listener, leader election and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use ingest_api::IngestJob;
use ingest_api::constants::{annotations, labels};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use crate::desired::Settings;
use crate::error::Result;
use crate::http::{self, Health};
use crate::leader::{self, LeaseConfig};
use crate::metrics::Metrics;
use crate::reconcile::{Context, error_policy, reconcile};

/// Operator settings (the `vfxt-ingest operator` flags).
#[derive(Clone, Debug)]
pub struct Options {
    /// Where `/metrics`, `/healthz`, `/readyz` listen.
    pub listen: SocketAddr,
    /// Pod image when the spec names none.
    pub default_image: String,
    /// Minimum time between status writes of one IngestJob.
    pub status_interval: Duration,
    /// Leader election; None runs without (one replica only).
    pub lease: Option<LeaseConfig>,
    /// Instance name in Events (the pod name).
    pub instance: Option<String>,
}

/// A client from the in-cluster service account, else the local kubeconfig. The error says which were tried.
pub async fn connect() -> Result<Client> {
    Client::try_default().await.map_err(|e| {
        crate::Error::kube("connect to the Kubernetes API (in-cluster service account, then KUBECONFIG / ~/.kube/config)", e)
    })
}

/// Maps a pod to its IngestJob: the full-name annotation, else the `job` label.
pub fn pod_owner(pod: &Pod) -> Option<ObjectRef<IngestJob>> {
    let name = pod
        .annotations()
        .get(annotations::INGEST_JOB)
        .or_else(|| pod.labels().get(labels::JOB))?;
    Some(ObjectRef::new(name).within(&pod.namespace()?))
}

/// Runs the controller until `shutdown` completes.
pub async fn run_controller(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let managed = watcher::Config::default().labels(&crate::apply::managed_selector());
    Controller::new(
        Api::<IngestJob>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .owns(Api::<Job>::all(client.clone()), managed.clone())
    .owns(Api::<ConfigMap>::all(client.clone()), managed.clone())
    .watches(Api::<Pod>::all(client), managed, |pod| pod_owner(&pod))
    // Pods report every ~10 s; coalescing their events keeps one reconcile per job per couple of seconds.
    .with_config(controller::Config::default().debounce(Duration::from_secs(2)))
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "controller event");
        }
    })
    .await;
}

/// The whole operator: listener, optional leader election, controller; returns on `shutdown` or when the
/// Lease is lost (an error, so the process exits and its restart re-enters the election).
pub async fn run(
    client: Client,
    opts: Options,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let listener = http::bind(opts.listen).await?;
    let shutdown = shutdown.shared();
    let server = tokio::spawn(http::serve(
        listener,
        metrics.clone(),
        health.clone(),
        shutdown.clone(),
    ));
    // Ready = able to serve probes and take over; a standby replica is ready too.
    health.ready.store(true, Ordering::Relaxed);

    let reporter = Reporter {
        controller: "vfxt-ingest".into(),
        instance: opts.instance.clone(),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        Settings {
            default_image: opts.default_image.clone(),
        },
        metrics,
        Some(Recorder::new(client.clone(), reporter)),
        opts.status_interval,
    ));

    let result = match &opts.lease {
        None => {
            run_controller(ctx, shutdown.clone()).await;
            Ok(())
        }
        Some(cfg) => {
            tokio::select! {
                _ = shutdown.clone() => { let _ = server.await; return Ok(()); }
                r = leader::acquire(&client, cfg) => r?,
            }
            tracing::info!(lease = %cfg.name, identity = %cfg.identity, "leading");
            let (lost_tx, lost_rx) = tokio::sync::oneshot::channel();
            let holder = {
                let (client, cfg) = (client.clone(), cfg.clone());
                tokio::spawn(async move {
                    let _ = lost_tx.send(leader::hold(&client, &cfg).await);
                })
            };
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let stop = async move {
                let _ = stop_rx.await;
            };
            let controller = tokio::spawn(run_controller(
                ctx,
                futures::future::select(Box::pin(stop), Box::pin(shutdown.clone())).map(|_| ()),
            ));
            let outcome = tokio::select! {
                _ = shutdown.clone() => Ok(()),
                lost = lost_rx => Err(lost.unwrap_or_else(|_| crate::Error::LostLease(cfg.name.clone()))),
            };
            let _ = stop_tx.send(());
            let _ = controller.await;
            holder.abort();
            if outcome.is_ok() {
                leader::release(&client, cfg).await;
            }
            outcome
        }
    };
    let _ = server.await;
    result
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c().map(|_| ());
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await,
            };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    ctrl_c.await
}
