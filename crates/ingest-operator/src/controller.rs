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
use ingest_api::job::WorkerTemplate;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::PartialObjectMeta;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use crate::claims::Registry;
use crate::desired::Settings;
use crate::error::Result;
use crate::http::{self, Health};
use crate::leader::{self, Leadership, LeaseConfig};
use crate::metrics::Metrics;
use crate::observe::Caches;
use crate::reconcile::{Context, error_policy, reconcile};
use crate::token::TokenReviewer;

/// Operator settings (the `vfxt-ingest operator` flags).
#[derive(Clone, Debug)]
pub struct Options {
    /// Where `/metrics`, `/healthz`, `/readyz` listen.
    pub listen: SocketAddr,
    /// Pod image when neither the spec nor `worker_defaults` names one.
    pub default_image: String,
    /// `spec.worker` defaults for every IngestJob; the IngestJob's own fields win
    /// ([`crate::defaults::merge_worker`]).
    pub worker_defaults: WorkerTemplate,
    /// The admin policy (`--policy`): what IngestJobs may reach and run.
    pub policy: ingest_api::policy::AdmissionPolicy,
    /// Namespaces whose IngestJobs (and children) are watched; empty: all namespaces.
    pub namespaces: Vec<String>,
    /// Minimum time between status writes of one IngestJob.
    pub status_interval: Duration,
    /// Leader election; None runs without (one replica only).
    pub lease: Option<LeaseConfig>,
    /// Instance name in Events (the pod name).
    pub instance: Option<String>,
    /// Where worker pods reach this operator's claims endpoint (the chart's Service).
    pub claims_url: String,
}

/// A client from the in-cluster service account, else the local kubeconfig, counting its
/// requests into `counts` (`/metrics`). The error says which were tried.
pub async fn connect(counts: Arc<crate::api_count::ApiCounts>) -> Result<Client> {
    let what = "connect to the Kubernetes API (in-cluster service account, then KUBECONFIG / ~/.kube/config)";
    let config = kube::Config::infer()
        .await
        .map_err(|e| crate::Error::kube(what, kube::Error::InferConfig(e)))?;
    Ok(kube::client::ClientBuilder::try_from(config)
        .map_err(|e| crate::Error::kube(what, e))?
        .with_layer(&crate::api_count::CountLayer(counts))
        .build())
}

/// Maps a pod to its IngestJob: the full-name annotation, else the `job` label.
pub fn pod_owner(pod: &Pod) -> Option<ObjectRef<IngestJob>> {
    let name = pod
        .annotations()
        .get(annotations::INGEST_JOB)
        .or_else(|| pod.labels().get(labels::JOB))?;
    Some(ObjectRef::new(name).within(&pod.namespace()?))
}

/// The IngestJob of a pod that just ended (succeeded or failed), if any (pure). Its end may
/// move the run on (the scan done, a pass's last workers gone): see [`Context::prompt`].
pub fn ended_pod_owner(pod: &Pod) -> Option<ObjectRef<IngestJob>> {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
        .then(|| pod_owner(pod))
        .flatten()
}

/// The IngestJob of a Job that just finished (a Complete or Failed condition), by its controller
/// owner reference (pure). See [`ended_pod_owner`].
pub fn ended_job_owner(job: &Job) -> Option<ObjectRef<IngestJob>> {
    crate::stage::job_state(job)
        .finished
        .then(|| controller_owner(job))
        .flatten()
}

/// The IngestJob of a plan ConfigMap that holds a committed plan (chunk 0, with the summary: the
/// scan stores it last), by its controller owner reference (pure). The run's copy starts from it,
/// without waiting for the scan pod's exit to be reported. See [`ended_pod_owner`].
pub fn committed_plan_owner(cm: &PartialObjectMeta<ConfigMap>) -> Option<ObjectRef<IngestJob>> {
    crate::plan_store::summary_of(&cm.metadata)?;
    controller_owner(cm)
}

/// The IngestJob an object's controller owner reference names (pure).
fn controller_owner<K: Resource>(o: &K) -> Option<ObjectRef<IngestJob>> {
    let owner = o
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true) && r.kind == "IngestJob")?;
    Some(ObjectRef::new(&owner.name).within(&o.namespace()?))
}

/// For a watch's `inspect`: marks prompted ([`Context::prompt`]) the IngestJob `owner` names
/// for an object, if any.
fn prompting<K>(
    ctx: &Arc<Context>,
    owner: fn(&K) -> Option<ObjectRef<IngestJob>>,
) -> impl FnMut(&std::result::Result<K, watcher::Error>) + use<K> {
    let ctx = ctx.clone();
    move |o| {
        if let Some(job) = o.as_ref().ok().and_then(owner) {
            ctx.prompt(&job);
        }
    }
}

/// Parses `--namespaces`: comma-separated namespace names (spaces around them ignored, repeats dropped, order
/// kept); an empty or blank list means all namespaces. Each name must be a DNS-1123 label, as Kubernetes
/// requires of namespaces; the error names the offending entry.
pub fn parse_namespaces(list: &str) -> std::result::Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    if list.trim().is_empty() {
        return Ok(out);
    }
    for (i, raw) in list.split(',').enumerate() {
        let ns = raw.trim();
        let valid = !ns.is_empty()
            && ns.len() <= 63
            && ns
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !ns.starts_with('-')
            && !ns.ends_with('-');
        if !valid {
            return Err(format!(
                "entry {} ({ns:?}) is not a namespace name: lowercase letters, digits and '-', at most 63, \
                 starting and ending with a letter or digit (e.g. \"team-a,team-b\"; empty for all namespaces)",
                i + 1
            ));
        }
        if !out.iter().any(|n| n == ns) {
            out.push(ns.to_owned());
        }
    }
    Ok(out)
}

/// The APIs one controller watches: every namespace (`None`) or one.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match namespace {
        None => Api::all(client.clone()),
        Some(ns) => Api::namespaced(client.clone(), ns),
    }
}

/// One kube-runtime Controller over IngestJobs, their Jobs and plan ConfigMaps and their pods, in `namespace`
/// (None: cluster-wide). The watches of the children fill the watch caches the reconcile reads them from
/// (`observe`), and then trigger the reconcile: a reconcile triggered by a change sees it in the cache.
async fn run_one(
    ctx: Arc<Context>,
    namespace: Option<String>,
    passes_ended: impl futures::Stream<Item = ObjectRef<IngestJob>> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let managed = watcher::Config::default().labels(&crate::apply::managed_selector());
    let (jobs, jobs_writer) = reflector::store();
    let (pods, pods_writer) = reflector::store();
    let (plans, plans_writer) = reflector::store();
    ctx.caches
        .insert(namespace.clone(), Caches { jobs, pods, plans });
    // Full Jobs and pods (their status is what the reconcile reads); managed fields are dropped before they
    // are cached, nothing reads them. ConfigMaps metadata only: the plans' data is never streamed.
    // Each watch backs off on errors (as `Controller::owns` does): a failing watch must not
    // become a tight loop of requests to the API server.
    // A child that ended, or a pass that ended, may move its run on: its reconcile comes
    // promptly (`Context::prompt`, marked before the reconcile it triggers).
    let jobs = watcher(scoped::<Job>(&client, ns), managed.clone())
        .default_backoff()
        .modify(|o| o.managed_fields_mut().clear())
        .reflect(jobs_writer)
        .touched_objects()
        .inspect(prompting(&ctx, ended_job_owner));
    let plans = watcher(
        scoped::<PartialObjectMeta<ConfigMap>>(&client, ns),
        managed.clone(),
    )
    .default_backoff()
    .modify(|o| o.managed_fields_mut().clear())
    .reflect(plans_writer)
    .touched_objects()
    .inspect(prompting(&ctx, committed_plan_owner));
    let pods = watcher(scoped::<Pod>(&client, ns), managed)
        .default_backoff()
        .modify(|o| o.managed_fields_mut().clear())
        .reflect(pods_writer)
        .touched_objects()
        .inspect(prompting(&ctx, ended_pod_owner));
    let passes_ended = passes_ended.inspect({
        let ctx = ctx.clone();
        move |o| ctx.prompt(o)
    });
    Controller::new(
        scoped::<IngestJob>(&client, ns),
        watcher::Config::default().any_semantic(),
    )
    .owns_stream(jobs)
    .owns_stream(plans)
    .watches_stream(pods, |pod| pod_owner(&pod))
    // A pass that ended (told by the claims endpoint) moves its run on at once.
    .reconcile_on(passes_ended)
    // No debounce: kube-runtime's debounce is pushed back by every new event, so hundreds of short pods
    // churning kept an IngestJob from being reconciled for a whole phase (issue 12). The reconcile
    // throttles itself instead (`reconcile::throttle`): at most one pass per job per `RECONCILE_GAP`,
    // and a trigger inside the gap is requeued to its end, never dropped.
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "controller event");
        }
    })
    .await;
}

/// Runs the controller until `shutdown` completes: one over all namespaces when `namespaces` is empty, else
/// one per namespace (namespaced watches, so a Role in each namespace is enough), sharing the context (status
/// clock, backoff, metrics) and the shutdown. PersistentVolumes are cluster-scoped and never watched; the
/// reconcile creates and deletes them by name and label.
pub async fn run_controller(
    ctx: Arc<Context>,
    namespaces: &[String],
    passes_ended: futures::channel::mpsc::UnboundedReceiver<ObjectRef<IngestJob>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = shutdown.shared();
    if namespaces.is_empty() {
        return run_one(ctx, None, passes_ended, shutdown).await;
    }
    tracing::info!(namespaces = %namespaces.join(","), "watching namespaces");
    // One trigger stream per namespace's controller, fed from the registry's one.
    let mut senders = std::collections::HashMap::new();
    let mut controllers = Vec::new();
    for ns in namespaces {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        senders.insert(ns.clone(), tx);
        controllers.push(run_one(ctx.clone(), Some(ns.clone()), rx, shutdown.clone()));
    }
    let fan_out = tokio::spawn(passes_ended.for_each(move |r| {
        if let Some(tx) = r.namespace.as_ref().and_then(|ns| senders.get(ns)) {
            let _ = tx.unbounded_send(r);
        }
        futures::future::ready(())
    }));
    futures::future::join_all(controllers).await;
    fan_out.abort();
}

/// The whole operator: listener, optional leader election, controller; returns on `shutdown` or when the
/// Lease is lost (an error, so the process exits and its restart re-enters the election).
pub async fn run(
    client: Client,
    opts: Options,
    api_counts: Arc<crate::api_count::ApiCounts>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    let metrics = Arc::new(Metrics::with_api_counts(api_counts));
    let health = Arc::new(Health::default());
    let listener = http::bind(opts.listen).await?;
    let shutdown = shutdown.shared();
    let (passes_ended, passes_ended_rx) = futures::channel::mpsc::unbounded();
    let registry = Arc::new(Registry::with_trigger(passes_ended));
    let leadership = Arc::new(if opts.lease.is_some() {
        Leadership::default()
    } else {
        Leadership::alone()
    });
    let server = tokio::spawn(http::serve(
        listener,
        metrics.clone(),
        health.clone(),
        Some(Arc::new(http::Claims {
            registry: registry.clone(),
            auth: Arc::new(TokenReviewer::new(client.clone())),
            plans: Arc::new(client.clone()),
            leadership: leadership.clone(),
        })),
        shutdown.clone(),
    ));
    // Ready = able to serve probes and take over; a standby replica is ready too.
    health.ready.store(true, Ordering::Relaxed);

    let reporter = Reporter {
        controller: "vfxt-ingest".into(),
        instance: opts.instance.clone(),
    };
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            Settings {
                default_image: opts.default_image.clone(),
                worker_defaults: opts.worker_defaults.clone(),
                claims_url: opts.claims_url.clone(),
                policy: opts.policy.clone(),
            },
            metrics,
            Some(Recorder::new(client.clone(), reporter)),
            opts.status_interval,
        )
        .with_claims(registry),
    );

    let result = match &opts.lease {
        None => {
            run_controller(ctx, &opts.namespaces, passes_ended_rx, shutdown.clone()).await;
            Ok(())
        }
        Some(cfg) => {
            tokio::select! {
                _ = shutdown.clone() => { let _ = server.await; return Ok(()); }
                r = leader::acquire(&client, cfg, &leadership) => r?,
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
            let namespaces = opts.namespaces.clone();
            let stop =
                futures::future::select(Box::pin(stop), Box::pin(shutdown.clone())).map(|_| ());
            let controller = tokio::spawn(async move {
                run_controller(ctx, &namespaces, passes_ended_rx, stop).await
            });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_parse_as_the_chart_joins_them() {
        assert_eq!(
            parse_namespaces("team-a,team-b").unwrap(),
            ["team-a", "team-b"]
        );
        assert_eq!(
            parse_namespaces(" team-a , team-b,team-a ").unwrap(),
            ["team-a", "team-b"],
            "spaces trimmed, repeats dropped, order kept"
        );
        assert!(parse_namespaces("").unwrap().is_empty(), "empty: all");
        assert!(parse_namespaces("  ").unwrap().is_empty(), "blank: all");
        assert_eq!(parse_namespaces("a1").unwrap(), ["a1"]);
    }

    #[test]
    fn bad_namespace_entries_are_named() {
        for (input, entry) in [
            ("team-a,,team-b", "entry 2 (\"\")"),
            ("Team-A", "entry 1 (\"Team-A\")"),
            ("a,-b", "entry 2 (\"-b\")"),
            ("a,b-", "entry 2 (\"b-\")"),
            ("ns/x", "entry 1"),
            ("team_a", "entry 1"),
        ] {
            let e = parse_namespaces(input).unwrap_err();
            assert!(e.starts_with(entry), "{input}: {e}");
            assert!(e.contains("lowercase letters"), "{e}");
        }
        assert!(parse_namespaces(&"a".repeat(64)).is_err());
        assert!(parse_namespaces(&"a".repeat(63)).is_ok());
    }
}
