//! One pod's runner: materialise volumes, run init containers in order, then
//! the main containers side by side (restarting per restartPolicy), publish
//! status at every transition, and honour deletion like the kubelet: SIGTERM,
//! SIGKILL after the grace period, then delete the object with grace 0.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use rustix::process::{Pid, Signal, kill_process_group};
use serde_json::json;
use tokio::sync::Mutex;

use crate::agent::{Ctx, EXEC_SUBCOMMAND, PodUpdates};
use crate::config::container_argv;
use crate::env::{Sources, container_env};
use crate::exec::Bind;
use crate::status::{self, PodState, State, Terminated};
use crate::volumes::{self, LocalVolume};

/// The kubelet's cap on a termination message.
const MAX_MESSAGE: u64 = 4096;
/// How much log tail FallbackToLogsOnError reports.
const LOG_TAIL: u64 = 2048;
/// A container that cannot be configured (missing ConfigMap, ...) is retried at this pace.
const CONFIG_RETRY: Duration = Duration::from_secs(3);
const DEFAULT_GRACE: i64 = 30;

struct Runner {
    ctx: Arc<Ctx>,
    ns: String,
    name: String,
    uid: String,
    dir: PathBuf,
    state: Mutex<PodState>,
}

/// Runs the pod until it is gone or deleted.
pub async fn run(ctx: Arc<Ctx>, mut rx: PodUpdates) {
    let Some(pod) = rx.borrow().clone() else {
        return;
    };
    let (Some(ns), Some(name), Some(uid)) = (
        pod.metadata.namespace.clone(),
        pod.metadata.name.clone(),
        pod.metadata.uid.clone(),
    ) else {
        return;
    };
    let spec = pod.spec.clone().unwrap_or_default();
    let init_reason = if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
        "PodInitializing"
    } else {
        "ContainerCreating"
    };
    let state = PodState {
        init: spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| new_container(c, "PodInitializing"))
            .collect(),
        main: spec
            .containers
            .iter()
            .map(|c| new_container(c, init_reason))
            .collect(),
        start_time: Timestamp::now(),
        ip: "127.0.0.1".into(),
    };
    let dir = ctx.work_dir.join("pods").join(format!("{ns}_{name}_{uid}"));
    let r = Arc::new(Runner {
        ctx,
        ns,
        name,
        uid,
        dir,
        state: Mutex::new(state),
    });
    tracing::info!(pod = %r.id(), dir = %r.dir.display(), "starting pod");
    r.publish().await;

    let Some(volumes) = r.prepare(&pod, &mut rx).await else {
        return r.finish(&mut rx).await;
    };
    // Dropped (aborted) when the runner returns.
    let _refresher = volumes::token_refresh_interval(&pod).map(|every| {
        let (client, pod, dir) = (r.ctx.client.clone(), pod.clone(), r.dir.clone());
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = volumes::refresh_tokens(&client, &pod, &dir).await {
                    tracing::warn!(error = %e, "service-account token refresh failed");
                }
            }
        }))
    });
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        r.run_container(true, i, c, &volumes, rx.clone()).await;
        let failed = {
            let st = r.state.lock().await;
            !st.init[i].done || st.phase() == "Failed"
        };
        if failed {
            return r.finish(&mut rx).await;
        }
    }
    let mains = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| r.run_container(false, i, c, &volumes, rx.clone()));
    futures::future::join_all(mains).await;
    r.finish(&mut rx).await;
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn new_container(c: &Container, reason: &str) -> status::Container {
    let mut s = status::Container::new(&c.name, c.image.as_deref().unwrap_or(""));
    s.state = State::Waiting {
        reason: reason.into(),
        message: None,
    };
    s
}

/// Deleted (graceful) or gone: the runner should stop its containers.
fn stopping(rx: &PodUpdates) -> bool {
    rx.borrow()
        .as_ref()
        .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
}

/// The grace period of a deletion, as the kubelet reads it.
fn grace(rx: &PodUpdates) -> Duration {
    let secs = rx.borrow().as_ref().map_or(0, |p| {
        p.metadata.deletion_grace_period_seconds.unwrap_or_else(|| {
            p.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(DEFAULT_GRACE)
        })
    });
    Duration::from_secs(secs.max(0) as u64)
}

/// Waits until the pod is being deleted or gone.
async fn until_stopping(mut rx: PodUpdates) {
    while !stopping(&rx) {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Deletes the pod object with grace 0, as the kubelet does once its
/// containers are gone. Guarded by uid, so a new pod of the same name is safe.
pub async fn delete_now(ctx: &Ctx, pod: &Pod) {
    let (Some(ns), Some(name)) = (
        pod.metadata.namespace.as_deref(),
        pod.metadata.name.as_deref(),
    ) else {
        return;
    };
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .delete(name, &dp)
        .await
    {
        Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), "deleted"),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "final delete failed"),
    }
}

impl Runner {
    fn id(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }

    /// Posts the current status (full, computed under the lock so that two
    /// containers' updates cannot land out of order).
    async fn publish(&self) {
        let state = self.state.lock().await;
        let st = status::pod_status(&state, Timestamp::now());
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let patch = json!({ "metadata": { "uid": self.uid }, "status": st });
        match api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => tracing::warn!(pod = %self.id(), error = %e, "status update failed"),
        }
    }

    /// Sets every not-yet-done container to waiting with `reason`/`message`.
    async fn set_waiting(&self, reason: &str, message: &str) {
        let mut guard = self.state.lock().await;
        let st = &mut *guard;
        for c in st
            .init
            .iter_mut()
            .chain(st.main.iter_mut())
            .filter(|c| !c.done)
        {
            c.state = State::Waiting {
                reason: reason.into(),
                message: Some(message.into()),
            };
        }
    }

    /// Materialises the volumes, retrying while a referenced object is missing
    /// (like the kubelet); `None` when the pod went away meanwhile.
    async fn prepare(
        &self,
        pod: &Pod,
        rx: &mut PodUpdates,
    ) -> Option<HashMap<String, LocalVolume>> {
        loop {
            if stopping(rx) {
                return None;
            }
            let pod = rx.borrow().clone().unwrap_or_else(|| Arc::new(pod.clone()));
            let res = async {
                let sources = volumes::fetch_sources(&self.ctx.client, &pod).await?;
                volumes::materialise(
                    &self.ctx.client,
                    &self.ctx.nfs_maps,
                    &pod,
                    &sources,
                    &self.dir,
                )
                .await
            }
            .await;
            match res {
                Ok(v) => return Some(v),
                Err(msg) => {
                    tracing::warn!(pod = %self.id(), error = %msg, "volume setup failed; retrying");
                    self.set_waiting(
                        "ContainerCreating",
                        &format!("MountVolume.SetUp failed: {msg}"),
                    )
                    .await;
                    self.publish().await;
                    tokio::select! {
                        _ = tokio::time::sleep(CONFIG_RETRY) => {}
                        _ = until_stopping(rx.clone()) => {}
                    }
                }
            }
        }
    }

    /// After the containers: report the final state, then wait for the
    /// deletion and do the kubelet's final delete.
    async fn finish(&self, rx: &mut PodUpdates) {
        self.publish().await;
        until_stopping(rx.clone()).await;
        let pod = rx.borrow().clone();
        if let Some(pod) = pod {
            delete_now(&self.ctx, &pod).await;
        }
    }

    /// Everything a start of container `c` needs, or why it cannot start.
    async fn start_spec(
        &self,
        c: &Container,
        volumes: &HashMap<String, LocalVolume>,
        pod: &Pod,
        term_file: &Path,
    ) -> Result<(Vec<String>, HashMap<String, String>, Vec<Bind>), String> {
        let argv = container_argv(
            &self.ctx.overrides,
            c.image.as_deref().unwrap_or(""),
            c.command.as_deref().unwrap_or(&[]),
            c.args.as_deref().unwrap_or(&[]),
        )?;
        // ConfigMaps/Secrets are read at each start, as the kubelet does.
        let sources: Sources = volumes::fetch_sources(&self.ctx.client, pod).await?;
        let env = container_env(pod, c, &sources, self.base_env(pod))?;
        // command/args may refer to env as $(NAME).
        let argv = argv.iter().map(|a| crate::env::expand(a, &env)).collect();
        let mut binds = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let v = volumes.get(&m.name).ok_or_else(|| {
                format!(
                    "volumeMount \"{}\": no volume of that name in the pod",
                    m.name
                )
            })?;
            let mut source = v.dir.clone();
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                if Path::new(sub)
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
                {
                    return Err(format!(
                        "volumeMount \"{}\": subPath \"{sub}\" must be relative without '..'",
                        m.name
                    ));
                }
                source = source.join(sub);
                std::fs::create_dir_all(&source)
                    .map_err(|e| format!("create subPath {}: {e}", source.display()))?;
            }
            binds.push(Bind {
                source,
                target: PathBuf::from(&m.mount_path),
                read_only: m.read_only.unwrap_or(false) || v.read_only,
            });
        }
        let term_path = c
            .termination_message_path
            .as_deref()
            .unwrap_or("/dev/termination-log");
        binds.push(Bind {
            source: term_file.to_path_buf(),
            target: term_path.into(),
            read_only: false,
        });
        Ok((argv, env, binds))
    }

    /// The variables every container gets before its own: PATH from the agent
    /// (there is no image to supply it), HOME in the pod dir (so a client in
    /// the pod cannot pick up the host's ~/.kube/config instead of its service
    /// account), the pod's hostname, and the API server's service variables
    /// that in-cluster clients read.
    fn base_env(&self, pod: &Pod) -> Vec<(String, String)> {
        let hostname = pod
            .spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .unwrap_or_else(|| self.name.clone());
        let (host, port) = (&self.ctx.api_host, self.ctx.api_port);
        let mut v = vec![
            (
                "PATH".to_string(),
                std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
            ),
            ("HOSTNAME".into(), hostname),
            ("KUBERNETES_SERVICE_HOST".into(), host.clone()),
            ("KUBERNETES_SERVICE_PORT".into(), port.to_string()),
            ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.to_string()),
            ("KUBERNETES_PORT".into(), format!("tcp://{host}:{port}")),
        ];
        v.push(("HOME".into(), self.dir.join("home").display().to_string()));
        v
    }

    /// Runs container `i` (restarting it per restartPolicy) until it is done
    /// for good or the pod is stopping.
    async fn run_container(
        &self,
        init: bool,
        i: usize,
        c: &Container,
        volumes: &HashMap<String, LocalVolume>,
        rx: PodUpdates,
    ) {
        let policy = rx
            .borrow()
            .as_ref()
            .and_then(|p| p.spec.as_ref().and_then(|s| s.restart_policy.clone()))
            .unwrap_or_else(|| "Always".into());
        let cdir = self.dir.join("containers").join(&c.name);
        let log_path = cdir.join("log");
        let term_file = cdir.join("termination-log");
        let mut attempt: u32 = 0;
        loop {
            if stopping(&rx) || self.ctx.shutting_down() {
                self.state.lock().await.container_mut(init, i).done = true;
                return;
            }
            let Some(pod) = rx.borrow().clone() else {
                return;
            };
            let setup = async {
                std::fs::create_dir_all(&cdir)
                    .map_err(|e| format!("create {}: {e}", cdir.display()))?;
                // Fresh each start: a message belongs to one run of the container.
                // World-writable, as the kubelet makes it: the container may run as any uid.
                std::fs::write(&term_file, b"")
                    .and_then(|()| {
                        std::fs::set_permissions(&term_file, std::fs::Permissions::from_mode(0o666))
                    })
                    .map_err(|e| format!("write {}: {e}", term_file.display()))?;
                self.start_spec(c, volumes, &pod, &term_file).await
            };
            let (argv, env, binds) = match setup.await {
                Ok(s) => s,
                Err(msg) => {
                    tracing::warn!(pod = %self.id(), container = %c.name, error = %msg, "cannot start container");
                    self.state.lock().await.container_mut(init, i).state = State::Waiting {
                        reason: "CreateContainerConfigError".into(),
                        message: Some(msg),
                    };
                    self.publish().await;
                    tokio::select! {
                        _ = tokio::time::sleep(CONFIG_RETRY) => {}
                        _ = until_stopping(rx.clone()) => {}
                    }
                    continue;
                }
            };
            let started = Timestamp::now();
            let outcome = self
                .spawn_and_wait(init, i, c, argv, env, binds, &log_path, &rx)
                .await;
            let (exit_code, signal, pid) = match outcome {
                Ok(x) => x,
                Err(msg) => {
                    tracing::warn!(pod = %self.id(), container = %c.name, error = %msg, "start failed");
                    (128, None, None)
                }
            };
            let message = termination_message(
                &term_file,
                &log_path,
                exit_code != 0
                    && c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError"),
            );
            let t = Terminated {
                exit_code,
                signal,
                reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
                message,
                started: Some(started),
                finished: Timestamp::now(),
                pid,
            };
            tracing::info!(pod = %self.id(), container = %c.name, exit_code, "container exited");
            // Init containers treat Always as OnFailure: they must finish.
            let restart = !stopping(&rx)
                && !self.ctx.shutting_down()
                && match policy.as_str() {
                    "Always" if !init => true,
                    "Never" => false,
                    _ => exit_code != 0,
                };
            {
                let mut st = self.state.lock().await;
                let cs = st.container_mut(init, i);
                if restart {
                    cs.last = Some(t);
                    cs.restarts += 1;
                    cs.state = State::Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: None,
                    };
                } else {
                    cs.state = State::Terminated(t);
                    cs.done = true;
                }
            }
            self.publish().await;
            if !restart {
                return;
            }
            // Back off like the kubelet, but faster (tests wait on it): 1 s doubling to 20 s.
            let backoff = Duration::from_secs(1 << attempt.min(4)).min(Duration::from_secs(20));
            attempt += 1;
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = until_stopping(rx.clone()) => {}
            }
        }
    }

    /// Starts the container through the `__exec` launcher and waits for it,
    /// stopping it if the pod is deleted meanwhile. Returns (exit code,
    /// signal, pid).
    #[allow(clippy::too_many_arguments)]
    async fn spawn_and_wait(
        &self,
        init: bool,
        i: usize,
        c: &Container,
        argv: Vec<String>,
        env: HashMap<String, String>,
        binds: Vec<Bind>,
        log_path: &Path,
        rx: &PodUpdates,
    ) -> Result<(i32, Option<i32>, Option<u32>), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|e| format!("open log {}: {e}", log_path.display()))?;
        let log2 = log.try_clone().map_err(|e| format!("dup log: {e}"))?;
        let mut cmd = tokio::process::Command::new(&self.ctx.self_exe);
        cmd.arg(EXEC_SUBCOMMAND);
        for b in &binds {
            cmd.args(b.to_args());
        }
        if let Some(wd) = c.working_dir.as_deref().filter(|w| !w.is_empty()) {
            cmd.args(["--workdir", wd]);
        }
        let identity = rx
            .borrow()
            .as_ref()
            .and_then(|pod| crate::exec::container_identity(pod, c));
        if let Some(id) = identity {
            cmd.args(id.to_args());
        }
        cmd.arg("--")
            .args(&argv)
            .env_clear()
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group, so a stop reaches the whole container
            // (a shell and its children), not just the first process.
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.ctx.self_exe.display()))?;
        let pid = child
            .id()
            .ok_or("container exited before its pid was read")?;
        let pgid = pid as i32;
        self.ctx.track(pgid, true);
        self.state.lock().await.container_mut(init, i).state = State::Running {
            started: Timestamp::now(),
            pid,
        };
        self.publish().await;
        tracing::info!(pod = %self.id(), container = %c.name, pid, argv = ?argv, "container started");

        let status = tokio::select! {
            s = child.wait() => s,
            _ = until_stopping(rx.clone()) => {
                let grace = grace(rx);
                tracing::info!(pod = %self.id(), container = %c.name, ?grace, "stopping container");
                signal_group(pgid, Signal::TERM);
                match tokio::time::timeout(grace, child.wait()).await {
                    Ok(s) => s,
                    Err(_) => {
                        signal_group(pgid, Signal::KILL);
                        child.wait().await
                    }
                }
            }
        };
        // Anything the container left behind in its group goes with it.
        signal_group(pgid, Signal::KILL);
        self.ctx.track(pgid, false);
        let status = status.map_err(|e| format!("wait for container: {e}"))?;
        Ok(match (status.code(), status.signal()) {
            (Some(code), _) => (code, None, Some(pid)),
            (None, Some(sig)) => (128 + sig, Some(sig), Some(pid)),
            (None, None) => (128, None, Some(pid)),
        })
    }
}

fn signal_group(pgid: i32, sig: Signal) {
    if let Some(pid) = Pid::from_raw(pgid) {
        let _ = kill_process_group(pid, sig);
    }
}

/// The termination message: the file the container wrote (first 4 KiB), or
/// with `fallback_to_log` and an empty file, the tail of its log.
fn termination_message(term_file: &Path, log: &Path, fallback_to_log: bool) -> Option<String> {
    let read = |path: &Path, tail: bool, max: u64| -> Option<String> {
        let mut f = std::fs::File::open(path).ok()?;
        if tail {
            let len = f.metadata().ok()?.len();
            f.seek(SeekFrom::Start(len.saturating_sub(max))).ok()?;
        }
        let mut buf = Vec::new();
        f.take(max).read_to_end(&mut buf).ok()?;
        let s = String::from_utf8_lossy(&buf).into_owned();
        (!s.is_empty()).then_some(s)
    };
    read(term_file, false, MAX_MESSAGE).or_else(|| {
        if fallback_to_log {
            read(log, true, LOG_TAIL)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn termination_message_prefers_file_then_log_tail() {
        let d = tempfile::tempdir().unwrap();
        let (term, log) = (d.path().join("t"), d.path().join("log"));
        std::fs::write(&log, format!("{}END", "x".repeat(5000))).unwrap();
        std::fs::write(&term, b"").unwrap();
        assert_eq!(termination_message(&term, &log, false), None);
        let tail = termination_message(&term, &log, true).unwrap();
        assert_eq!(tail.len(), LOG_TAIL as usize);
        assert!(tail.ends_with("END"));
        std::fs::write(&term, "y".repeat(5000)).unwrap();
        assert_eq!(
            termination_message(&term, &log, true).unwrap().len(),
            MAX_MESSAGE as usize
        );
    }
}
