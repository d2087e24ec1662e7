//! The pod side of the contract (see README.md): what scan and worker pods read from their environment and how
//! they report. The CLI's `scan`/`worker` commands call these; nothing here runs in the operator.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ingest_api::constants::annotations;
use ingest_api::report::{PodProgress, PodResult};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};

use crate::error::{Error, Result};
use crate::plan_store::Owner;

/// Environment variables the operator sets on every scan/worker container.
pub mod env {
    /// Pod name (downward API).
    pub const POD_NAME: &str = "POD_NAME";
    /// Pod namespace (downward API) = the IngestJob's namespace.
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
    /// IngestJob name.
    pub const JOB_NAME: &str = "INGEST_JOB_NAME";
    /// IngestJob uid (owner of the plan ConfigMaps).
    pub const JOB_UID: &str = "INGEST_JOB_UID";
    /// `spec.run` of this pod.
    pub const RUN: &str = "INGEST_RUN";
    /// Name prefix of the plan ConfigMaps.
    pub const PLAN_PREFIX: &str = "INGEST_PLAN_PREFIX";
    /// Set by Kubernetes on Indexed Job pods; worker args refer to it as `$(JOB_COMPLETION_INDEX)`.
    pub const COMPLETION_INDEX: &str = "JOB_COMPLETION_INDEX";
}

/// Where the kubelet reads the termination message from (the default `terminationMessagePath`).
pub const TERMINATION_LOG: &str = "/dev/termination-log";

/// The pod's view of its assignment, read from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEnv {
    /// Own pod name.
    pub pod: String,
    /// IngestJob, namespace and run.
    pub owner: Owner,
    /// Plan ConfigMap prefix.
    pub plan_prefix: String,
}

impl PodEnv {
    /// Reads [`env`] through `get` (the process environment in production, a map in tests). Errors name the
    /// missing or malformed variable.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<PodEnv, String> {
        let req = |k: &'static str| {
            get(k)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("environment variable {k} is not set"))
        };
        let run_text = req(env::RUN)?;
        let run = run_text.parse().map_err(|_| {
            format!(
                "environment variable {}={run_text:?} is not an integer",
                env::RUN
            )
        })?;
        Ok(PodEnv {
            pod: req(env::POD_NAME)?,
            owner: Owner {
                namespace: req(env::POD_NAMESPACE)?,
                name: req(env::JOB_NAME)?,
                uid: req(env::JOB_UID)?,
                run,
            },
            plan_prefix: req(env::PLAN_PREFIX)?,
        })
    }

    /// [`PodEnv::from_lookup`] on the process environment.
    pub fn from_env() -> Result<PodEnv, String> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }
}

/// Patches the progress annotation on the pod's own object (merge patch: touches only that key).
pub async fn report_progress(
    client: kube::Client,
    pod: &PodEnv,
    progress: &PodProgress,
) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client, &pod.owner.namespace);
    let value = serde_json::to_string(progress).map_err(|source| Error::Serde {
        what: "pod progress",
        source,
    })?;
    let patch = serde_json::json!({"metadata": {"annotations": {annotations::PROGRESS: value}}});
    api.patch(&pod.pod, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::kube(format!("report progress on pod {}", pod.pod), e))?;
    Ok(())
}

/// When a [`ProgressReporter`] looks at the latest sample.
pub enum Ticks {
    /// Every interval.
    Every(Duration),
    /// At each message (a test's hand on the clock); never once the sender is gone.
    Told(tokio::sync::mpsc::Receiver<()>),
}

impl Ticks {
    async fn next(&mut self) {
        match self {
            Ticks::Every(every) => tokio::time::sleep(*every).await,
            Ticks::Told(rx) => {
                if rx.recv().await.is_none() {
                    std::future::pending::<()>().await
                }
            }
        }
    }
}

/// Sends the latest progress sample of a synchronous program (the worker CLI) to its pod from a background
/// thread: `update` only stores the sample; the thread patches the annotation every `every` when it changed,
/// and once more on `finish`. API errors are logged and retried at the next tick: progress reporting never
/// stops or slows the copy.
pub struct ProgressReporter {
    latest: Arc<Mutex<Option<PodProgress>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressReporter {
    /// Connects with the pod's service account (or kubeconfig) and starts reporting.
    pub fn start(pod: PodEnv, every: Duration) -> Result<Self> {
        let runtime = runtime()?;
        let client = runtime.block_on(crate::controller::connect(Default::default()))?;
        Ok(Self::start_with(runtime, client, pod, Ticks::Every(every)))
    }

    /// [`ProgressReporter::start`] with a given runtime, client and ticks (tests use a scripted API
    /// server and tell each tick).
    pub fn start_with(
        runtime: tokio::runtime::Runtime,
        client: kube::Client,
        pod: PodEnv,
        mut ticks: Ticks,
    ) -> Self {
        let latest: Arc<Mutex<Option<PodProgress>>> = Arc::default();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let shared = latest.clone();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let mut sent: Option<PodProgress> = None;
                loop {
                    let stopping = tokio::select! {
                        _ = ticks.next() => false,
                        _ = &mut stop_rx => true,
                    };
                    let current = shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    if let Some(p) = current.filter(|p| sent.as_ref() != Some(p)) {
                        match report_progress(client.clone(), &pod, &p).await {
                            Ok(()) => sent = Some(p),
                            Err(e) => tracing::warn!(error = %e, "progress report failed; retrying at the next tick"),
                        }
                    }
                    if stopping {
                        return;
                    }
                }
            })
        });
        ProgressReporter {
            latest,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Records the newest sample (cheap; called as often as the program likes).
    pub fn update(&self, progress: PodProgress) {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(progress);
    }

    /// Sends the last sample and stops the thread.
    pub fn finish(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ProgressReporter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            what: "start the async runtime for API calls".into(),
            source,
        })
}

/// Writes the final result where the kubelet picks it up as the termination message.
pub fn write_result(path: &Path, result: &PodResult) -> Result<()> {
    std::fs::write(path, result.to_termination_message()).map_err(|source| Error::Io {
        what: format!("write termination message {}", path.display()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    const BASE: [(&str, &str); 6] = [
        (env::POD_NAME, "p"),
        (env::POD_NAMESPACE, "ns"),
        (env::JOB_NAME, "ij"),
        (env::JOB_UID, "u"),
        (env::RUN, "3"),
        (env::PLAN_PREFIX, "ij-r3-plan"),
    ];

    #[test]
    fn reads_the_assignment_and_names_missing_or_bad_variables() {
        let e = PodEnv::from_lookup(lookup(&BASE)).unwrap();
        assert_eq!(
            (e.owner.run, e.owner.uid.as_str(), e.plan_prefix.as_str()),
            (3, "u", "ij-r3-plan")
        );
        let err = PodEnv::from_lookup(lookup(&BASE[1..])).unwrap_err();
        assert!(err.contains("POD_NAME"), "{err}");
        let mut v = BASE.to_vec();
        v[4] = (env::RUN, "x");
        assert!(
            PodEnv::from_lookup(lookup(&v))
                .unwrap_err()
                .contains("INGEST_RUN")
        );
    }

    #[test]
    fn result_file_holds_bounded_json() {
        let dir = std::env::temp_dir().join(format!("ingest-op-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("termination-log");
        write_result(
            &path,
            &PodResult {
                files: 3,
                ..Default::default()
            },
        )
        .unwrap();
        let back: PodResult =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back.files, 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
